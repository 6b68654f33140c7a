//! `steward report`: the posture report, read from a running server's data directory.

use crate::support::*;
use serde_json::{Value, json};
use shared::agent_key::AgentKeyPair;

const GOVERNED: &str = "erp-reader-agent-dev";
const PENDING: &str = "datadog-remediation-agent-prod";
/// Holds its own key, with DPoP-bound tokens.
const KEYED: &str = "ledger-reader-agent-prod";

fn find<'v>(report: &'v Value, name: &str) -> &'v Value {
    report["agents"]
        .as_array()
        .expect("agents is an array")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the report: {report:#}"))
}

fn check<'v>(agent: &'v Value, item: &str) -> &'v Value {
    agent["checklist"]
        .as_array()
        .expect("checklist is an array")
        .iter()
        .find(|c| c["item"] == item)
        .unwrap_or_else(|| panic!("no {item} in {agent:#}"))
}

#[test]
fn report_scores_agents_and_names_the_maturity_level() {
    // Prod's tokens are DPoP-bound.
    let mut opts = Options::default();
    assert!(!opts.policy.contains("\n[credentials]"));
    opts.policy
        .push_str("\n[credentials]\nbinding = { prod = \"dpop\" }\n");
    let s = Server::start_with(opts);
    // No sensitive scope: provisioned without an approval. A client secret, bearer tokens.
    s.request_ok(&agent_request(GOVERNED, "dev", ALICE, &["erp:orders:read"]));
    s.wait_agent_status(GOVERNED, "active");
    // Its own key (proven over a nonce from Steward), DPoP-bound tokens.
    let pair = AgentKeyPair::generate().unwrap();
    let (status, v) = s.post_as(ALICE, "/api/key-nonces", &json!({}));
    assert_eq!(status, 200, "{v}");
    let mut keyed = agent_request(KEYED, "prod", ALICE, &["datadog:metrics:read"]);
    keyed["credential"] = json!("private_key_jwt");
    keyed["public_jwk"] = pair.public_jwk();
    keyed["key_proof"] =
        json!(pair.key_proof(KEYED, v["nonce"].as_str().unwrap(), chrono::Utc::now()));
    s.request_ok(&keyed);
    s.wait_agent_status(KEYED, "active");
    // A sensitive scope: waits for security (prod binds tokens, so it holds a key too).
    let pending_key = AgentKeyPair::generate().unwrap();
    let (status, v) = s.post_as(ALICE, "/api/key-nonces", &json!({}));
    assert_eq!(status, 200, "{v}");
    let mut pending = agent_request(
        PENDING,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    );
    pending["credential"] = json!("private_key_jwt");
    pending["public_jwk"] = pending_key.public_jwk();
    pending["key_proof"] =
        json!(pending_key.key_proof(PENDING, v["nonce"].as_str().unwrap(), chrono::Utc::now()));
    s.request_ok(&pending);
    s.wait_agent_status(PENDING, "pending_approval");

    let (out, stdout, stderr) = run(s
        .cli(["report", "--format", "json"])
        .arg("--policy")
        .arg(&s.policy_path)
        .env_remove("STEWARD_AUDIT_STREAM"));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"));

    let governed = find(&v, GOVERNED);
    assert_eq!(governed["status"], "active");
    assert_eq!(governed["owner"], ALICE);
    assert_eq!(governed["environment"], "dev");
    assert_eq!(governed["score"], 0, "{governed:#}");
    assert_eq!(governed["level"], "low");
    let items: Vec<&str> = governed["checklist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["item"].as_str().unwrap())
        .collect();
    assert_eq!(
        items,
        [
            "dedicated_client",
            "minimal_scopes",
            "short_lived_tokens",
            "rotation",
            "no_shared_secret",
            "bound_tokens",
            "owner_assigned",
            "reviewed",
            "audit_streaming"
        ]
    );
    // A client secret and bearer tokens fail their checks.
    let fails = ["no_shared_secret", "bound_tokens", "audit_streaming"];
    for c in governed["checklist"].as_array().unwrap() {
        let expect = !fails.contains(&c["item"].as_str().unwrap());
        assert_eq!(c["ok"], expect, "{c:#}");
    }
    assert!(
        check(governed, "bound_tokens")["detail"]
            .as_str()
            .unwrap()
            .starts_with("bearer tokens"),
        "{governed:#}"
    );
    let keyed = find(&v, KEYED);
    for c in keyed["checklist"].as_array().unwrap() {
        assert_eq!(c["ok"], c["item"] != "audit_streaming", "{c:#}");
    }
    assert!(
        check(governed, "rotation")["detail"]
            .as_str()
            .unwrap()
            .starts_with("secret is 0 days old"),
        "{governed:#}"
    );

    let pending = find(&v, PENDING);
    assert_eq!(pending["status"], "pending_approval");
    assert_eq!(pending["score"], 10, "{pending:#}");
    assert_eq!(pending["factors"][0]["name"], "sensitive_scopes");
    assert_eq!(check(pending, "dedicated_client")["ok"], false);

    let summary = &v["summary"];
    assert_eq!(summary["agents"], 3);
    assert_eq!(summary["live_agents"], 2, "a pending request is not live");
    assert_eq!(summary["by_level"]["low"], 3);
    assert_eq!(summary["active_agents"], 2);
    assert_eq!(summary["key_bound_agents"], 1);
    assert_eq!(summary["bound_token_agents"], 1);
    assert_eq!(summary["bearer_only_agents"], 1);
    assert_eq!(summary["bearer_only"][0]["name"], GOVERNED, "{summary:#}");
    assert_eq!(
        summary["bearer_only"].as_array().unwrap().len(),
        1,
        "{summary:#}"
    );
    assert_eq!(summary["maturity"], "governance", "{summary:#}");
    assert_eq!(summary["next_level"], "detection");
    assert_eq!(
        summary["next_level_missing"][0],
        "stream the audit trail out of Steward (e.g. to a SIEM)"
    );

    // With the audit trail streamed out, detection; full governance needs the bearer-only agent
    // on its own key with bound tokens. As a table, written to a file.
    let file = s.dir.path().join("posture.txt");
    let (out, stdout, stderr) = run(s
        .cli(["report"])
        .arg("--out")
        .arg(&file)
        .arg("--policy")
        .arg(&s.policy_path)
        .env("STEWARD_AUDIT_STREAM", "siem"));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("posture report written to"), "{stderr}");
    let table = std::fs::read_to_string(&file).unwrap();
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.ends_with("FAILED CHECKS"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(GOVERNED))
        .unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            GOVERNED,
            "dev",
            ALICE,
            "active",
            "0",
            "low",
            "no_shared_secret,",
            "bound_tokens"
        ]
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(KEYED))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.ends_with("  -"), "{table}");
    assert!(
        table.contains(
            "Credentials (2 active agents): 1 hold their own key (no shared secret), 1 have bound tokens, 1 bearer-only\n  bearer-only: erp-reader-agent-dev (dev)\n"
        ),
        "{table}"
    );
    assert!(table.contains("Maturity: detection (4 of 5"), "{table}");
    assert!(
        table
            .contains("failing: no_shared_secret 1, bound_tokens 1; not yet: erp-reader-agent-dev"),
        "{table}"
    );

    // No database in the data directory: a clear error.
    let empty = tempfile::tempdir().unwrap();
    let (out, _, stderr) = run(steward()
        .arg("report")
        .arg("--data-dir")
        .arg(empty.path())
        .arg("--policy")
        .arg(&s.policy_path));
    assert!(!out.status.success());
    assert!(stderr.contains("no Steward database at"), "{stderr}");
}
