//! Durability: the server process dies between a side effect and its record, or simply stops;
//! after a restart on the same data directory the workflow completes, exactly once.

mod support;

use serde_json::json;
use shared::ports::vault::Stage;
use std::time::Duration;
use support::*;

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
