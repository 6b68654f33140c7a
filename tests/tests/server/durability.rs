//! Durability: the server process dies between a side effect and its record, or simply stops;
//! after a restart on the same data directory the workflow completes, exactly once.

use crate::support::*;
use serde_json::json;
use shared::ports::vault::Stage;
use std::time::Duration;

const NAME: &str = "datadog-remediation-agent-prod";

/// The crashed delivery stays invisible for the engine's visibility timeout (30 s) before it is
/// redelivered, so recovery after the restart may take that long.
const RECOVERY: Duration = Duration::from_secs(60);

#[test]
fn a_crash_between_client_creation_and_its_record_creates_the_client_once() {
    let crash = Options::default().env("STEWARD_CRASH_AFTER", "idp.create_client");
    let mut s = Server::start_with(crash);
    let mut body = agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    );
    body["token_lifetime_secs"] = json!(600);
    let started = s.request_ok(&body);
    let wf = started["workflow_id"].as_str().unwrap().to_string();
    let agent_id = started["agent_id"].as_str().unwrap().to_string();
    let approval_id = s.pending_approval(&wf)["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = s.decide(&approval_id, "approve", SAM);
    assert_eq!(status, 202, "{v}");

    // The process aborts on its own right after the IdP created the client.
    let exit = s.wait_exit(Duration::from_secs(15));
    assert!(!exit.success(), "the fault injection aborts: {exit}");
    assert!(
        s.log().contains("STEWARD_CRASH_AFTER=idp.create_client"),
        "{}",
        s.log()
    );
    // The first secret reached the vault before the crash; its result was never recorded.
    let (first_version, first_secret) = s
        .vault_stage(&agent_id, Stage::Current)
        .expect("the crashed attempt stored its secret");

    // Restart without the fault: the workflow completes.
    s.spawn(&Options::default());
    let recovering = s.agent(NAME);
    assert!(
        recovering["status"] == "provisioning" || recovering["status"] == "active",
        "the approval survived the crash: {recovering}"
    );
    let agent = s.wait_agent_status_for(NAME, "active", RECOVERY);
    s.wait_workflow_state(&wf, "Active");
    s.wait_idle();

    // Exactly one client at the IdP, and it is the agent's.
    let clients = s.idp_clients();
    let mine: Vec<_> = clients.iter().filter(|c| c["name"] == NAME).collect();
    assert_eq!(mine.len(), 1, "one client, ever: {clients:?}");
    assert_eq!(clients.len(), 1, "{clients:?}");
    let client_id = agent["client_id"].as_str().expect("client_id");
    assert_eq!(mine[0]["client_id"], client_id);
    assert_eq!(mine[0]["token_lifetime_secs"], 600);

    // The secret that works is the vault's current one, and the registry names its version.
    let (version, secret) = s.vault_secret(&agent_id);
    assert_eq!(agent["secret_version"], version.as_str());
    let (claims, resp) = s.token_ok(client_id, &secret, Some("datadog:monitors:write"));
    assert_eq!(claims["sub"], client_id);
    assert_eq!(resp["expires_in"], 600);
    assert_eq!(
        claims["iss"],
        s.base.as_str(),
        "issued by the restarted server"
    );
    // The crashed attempt's secret, if it was replaced, no longer authenticates: no orphan
    // credential outlives the crash.
    if first_version != version {
        let (status, v, _) = s.token(client_id, &first_secret, None);
        assert_eq!(status, 401, "the lost secret must not work: {v}");
    }

    // The trail shows one approval and one provisioning.
    let audit = s.audit();
    let decided = audit
        .iter()
        .filter(|r| r["unmapped"]["steward_event"] == "approval_decided")
        .count();
    assert_eq!(decided, 1, "{:?}", messages(&audit));
    let dead = array(s.get_ok("/api/dead-letters"));
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
}

#[test]
fn state_survives_a_restart_while_awaiting_approval() {
    // `wal` durability promises to survive a process crash; SIGKILL is one.
    let wal = Options {
        durability: "wal".into(),
        ..Options::default()
    };
    let mut s = Server::start_with(wal.clone());
    let token = s.token.clone();
    let started = s.request_ok(&agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    ));
    let wf = started["workflow_id"].as_str().unwrap().to_string();
    s.wait_idle();

    s.kill();
    s.spawn(&wal);
    assert_eq!(s.token, token, "the admin token is kept across restarts");

    // Everything is where it was.
    assert_eq!(s.agent(NAME)["status"], "pending_approval");
    let approval = s.pending_approval(&wf);
    let (status, v) = s.request_agent(&agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    ));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["workflow_id"], wf.as_str());

    // The approval decided after the restart completes the workflow.
    let id = approval["request"]["id"].as_str().unwrap();
    let (status, v) = s.decide(id, "approve", PRIYA);
    assert_eq!(status, 202, "{v}");
    let agent = s.wait_agent_status(NAME, "active");
    s.wait_workflow_state(&wf, "Active");
    let client_id = agent["client_id"].as_str().unwrap();
    assert_eq!(s.idp_clients().len(), 1);
    let (_, secret) = s.vault_secret(agent["id"].as_str().unwrap());
    let (claims, _) = s.token_ok(client_id, &secret, None);
    assert_eq!(claims["sub"], client_id);

    // And once more: the active agent, its client and its secret survive a restart.
    s.kill();
    s.spawn(&wal);
    assert_eq!(s.agent(NAME)["status"], "active");
    assert_eq!(s.idp_clients().len(), 1);
    s.token_ok(client_id, &secret, Some("datadog:metrics:read"));
}

/// The process dies right after each rotation step's side effect (new secret issued and stored
/// as AWSPENDING, token obtained with it, AWSCURRENT moved, old secret removed) and is
/// restarted each time: the rotation finishes, exactly one new secret exists, and the old one
/// is revoked once.
#[test]
fn a_crash_after_each_rotation_step_still_rotates_exactly_once() {
    const ROTATING: &str = "orders-reader-agent-prod";
    let opts = |crash: Option<&str>| {
        let mut o = Options::default();
        o.policy = o.policy.replace("grace = \"24h\"", "grace = \"2s\"");
        assert!(o.policy.contains("grace = \"2s\""));
        match crash {
            Some(step) => o.env("STEWARD_CRASH_AFTER", step),
            None => o,
        }
    };
    let mut s = Server::start_with(opts(None));
    let started = s.request_ok(&agent_request(
        ROTATING,
        "prod",
        ALICE,
        &["erp:orders:read"],
    ));
    let agent_id = started["agent_id"].as_str().unwrap().to_string();
    let before = s.wait_agent_status(ROTATING, "active");
    let client_id = before["client_id"].as_str().unwrap().to_string();
    let (old_version, old_secret) = s.vault_secret(&agent_id);
    s.wait_idle();
    s.kill();

    let steps = [
        "idp.issue_secret",
        "idp.test_secret",
        "vault.promote",
        "idp.remove_secret",
    ];
    let mut workflow = String::new();
    for (i, step) in steps.iter().enumerate() {
        if i == 0 {
            s.spawn(&opts(Some(step)));
            let (status, v) =
                s.post_as(ALICE, &format!("/api/agents/{ROTATING}/rotate"), &json!({}));
            assert_eq!(status, 202, "{v}");
            workflow = v["workflow_id"].as_str().unwrap().to_string();
        } else {
            // The restart resumes the step in flight and aborts after the next one.
            s.spawn_may_abort(&opts(Some(step)));
        }
        let exit = s.wait_exit(RECOVERY);
        assert!(
            !exit.success(),
            "the fault injection aborts after {step}: {exit}"
        );
        assert!(
            s.log().contains(&format!("STEWARD_CRASH_AFTER={step}")),
            "crashed after {step}: {}",
            s.log()
        );
    }
    s.spawn(&opts(None));
    s.wait(&format!("rotation {workflow} to finish"), RECOVERY, || {
        (s.workflow(&workflow)["workflow"]["state_name"] == "Done").then_some(())
    });
    s.wait_idle();

    // Exactly one new secret: the vault holds the first and one new version, the IdP holds one
    // secret, and it is the new current one.
    let (new_version, new_secret) = s.vault_secret(&agent_id);
    assert_ne!(new_version, old_version);
    let clients = s.idp_clients();
    let client = clients
        .iter()
        .find(|c| c["client_id"] == client_id.as_str())
        .expect("the client");
    assert_eq!(
        client["secret_ids"].as_array().map(Vec::len),
        Some(1),
        "one secret at the IdP: {client}"
    );
    s.token_ok(&client_id, &new_secret, None);
    let (status, v, _) = s.token(&client_id, &old_secret, None);
    assert_eq!(status, 401, "the old secret is revoked: {v}");
    let agent = s.agent(ROTATING);
    assert_eq!(agent["secret_version"], new_version.as_str());
    let receipts = agent["credentials"].as_array().cloned().unwrap_or_default();
    assert_eq!(receipts.len(), 1, "one rotation receipt: {agent}");
    assert_eq!(receipts[0]["old"]["version"], old_version.as_str());
    assert_eq!(receipts[0]["new"]["version"], new_version.as_str());
    assert!(receipts[0]["old_valid_until"].is_string(), "{agent}");

    // The trail: one issue, one promotion, one revocation.
    let audit = s.audit();
    let count = |kind: &str| {
        audit
            .iter()
            .filter(|r| r["unmapped"]["steward_event"] == kind)
            .count()
    };
    assert_eq!(count("secret_issued"), 1, "{:?}", messages(&audit));
    assert_eq!(count("secret_rotated"), 1, "{:?}", messages(&audit));
    assert_eq!(count("secret_revoked"), 1, "{:?}", messages(&audit));
    let dead = array(s.get_ok("/api/dead-letters"));
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
}
