//! `steward report`: the posture report, read from a running server's data directory.

use crate::support::*;
use serde_json::Value;

const GOVERNED: &str = "erp-reader-agent-dev";
const PENDING: &str = "datadog-remediation-agent-prod";

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
    let s = Server::start();
    // No sensitive scope: provisioned without an approval.
    s.request_ok(&agent_request(GOVERNED, "dev", ALICE, &["erp:orders:read"]));
    s.wait_agent_status(GOVERNED, "active");
    // A sensitive scope: waits for security.
    s.request_ok(&agent_request(
        PENDING,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    ));
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
            "owner_assigned",
            "reviewed",
            "audit_streaming"
        ]
    );
    for c in governed["checklist"].as_array().unwrap() {
        let expect = c["item"] != "audit_streaming";
        assert_eq!(c["ok"], expect, "{c:#}");
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
    assert_eq!(summary["agents"], 2);
    assert_eq!(summary["live_agents"], 1, "a pending request is not live");
    assert_eq!(summary["by_level"]["low"], 2);
    assert_eq!(summary["maturity"], "governance", "{summary:#}");
    assert_eq!(summary["next_level"], "detection");
    assert_eq!(
        summary["next_level_missing"][0],
        "stream the audit trail out of Steward (e.g. to a SIEM)"
    );

    // With the audit trail streamed out, every item passes: full governance, as a table and
    // written to a file.
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
    assert_eq!(cols, [GOVERNED, "dev", ALICE, "active", "0", "low", "-"]);
    assert!(
        table.contains("Maturity: full governance (5 of 5"),
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
