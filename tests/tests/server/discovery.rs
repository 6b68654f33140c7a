//! Shadow agents end to end on the real `steward serve`: clients created directly in the
//! identity provider, behind Steward's back. One is reported by the IdP's app-created event
//! (Okta's documented `application.lifecycle.create`) and claimed by its creator: onboarded
//! with a real owner, Steward takes over its credential. The other is found by the discovery
//! sweep, nobody claims it, and after the grace period it is frozen and decommissioned.

use crate::support::*;
use serde_json::{Value, json};
use shared::ports::IdentityProvider;
use shared::ports::idp::ClientSpec;
use std::sync::Arc;
use std::time::Duration;

const HOOK_SECRET: &str = "Bearer okta-hook-shared-secret-3c2b1a";
const GRACE_SECS: u64 = 20;

fn start() -> Server {
    let mut opts = Options::default().env("STEWARD_OKTA_HOOK_SECRET", HOOK_SECRET);
    assert!(opts.policy.contains("grace = \"7days\""));
    opts.policy = opts
        .policy
        .replace("grace = \"7days\"", &format!("grace = \"{GRACE_SECS}s\""));
    Server::start_with(opts)
}

/// Creates a client straight in the development IdP's database, as an admin would in the IdP's
/// console: Steward is not told. The dev IdP keeps the key it is given with the client, but this
/// one names no workflow of Steward's, so it is no mark of Steward's. Returns (client id, its
/// secret).
fn create_behind_stewards_back(s: &Server, label: &str, scopes: &[&str]) -> (String, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let db = shared::embedded::sqlite::Db::open(
        &s.data_dir.join("steward.db"),
        shared::embedded::Durability::Wal,
    )
    .expect("opening the IdP database");
    let idp = shared::idp::dev::DevIdp::open(
        Arc::new(db),
        &s.data_dir.join("idp-signing-key.pem"),
        &s.url(""),
    )
    .expect("opening the development IdP");
    let spec = ClientSpec {
        agent_id: String::new(),
        name: label.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        token_lifetime_secs: 3600,
    };
    // The running server writes to the same database: a deferred transaction that meets its
    // write is told "locked" at once (SQLite does not wait on an upgrade), so try again.
    let created = wait_until("creating a client in the IdP", SETTLE, || {
        rt.block_on(idp.create_client(&spec, &format!("console-{label}")))
            .ok()
    });
    (created.client_id, created.secret.expose().to_string())
}

fn okta_hook(s: &Server, event: Value) {
    let path = format!(
        "{}/../tests/fixtures/okta/event-hook-delivery-sample.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut envelope: Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    envelope["data"]["events"] = json!([event]);
    let r = s
        .http()
        .post(s.url("/hooks/okta"))
        .header("content-type", "application/json")
        .header("authorization", HOOK_SECRET)
        .body(serde_json::to_vec(&envelope).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Okta's documented app-created event, about `client_id`, created by `creator`.
fn app_created(client_id: &str, label: &str, creator: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/okta/events/application.lifecycle.create.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut ev: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    ev["uuid"] = json!(format!("create-{client_id}"));
    ev["actor"]["alternateId"] = json!(creator);
    ev["target"][0]["id"] = json!(client_id);
    ev["target"][0]["displayName"] = json!(label);
    ev["target"][0]["alternateId"] = json!(label);
    ev
}

fn agent_of_client(s: &Server, client_id: &str) -> Option<Value> {
    s.agents().into_iter().find(|a| a["client_id"] == client_id)
}

fn notifications_to(s: &Server, to: &str) -> Vec<Value> {
    array(s.get_ok("/api/notifications"))
        .into_iter()
        .filter(|n| n["recipient"] == to)
        .collect()
}

#[test]
fn a_client_created_in_the_idp_is_found_claimed_by_one_path_and_decommissioned_by_the_other() {
    let s = start();

    // Path 1: the IdP's app-created event names the creator, who is asked and claims it.
    let (claimed_client, old_secret) =
        create_behind_stewards_back(&s, "Inventory Sync", &["erp:inventory:read"]);
    s.token_ok(&claimed_client, &old_secret, None);
    okta_hook(&s, app_created(&claimed_client, "Inventory Sync", BOB));
    let shadow = wait_until("the shadow agent from the event", SETTLE, || {
        agent_of_client(&s, &claimed_client)
    });
    assert_eq!(shadow["status"], "unregistered", "{shadow}");
    assert_eq!(shadow["name"], "inventory-sync");
    assert_eq!(shadow["owner"], "");
    let asked = wait_until("the creator is asked", SETTLE, || {
        notifications_to(&s, BOB).into_iter().next()
    });
    let body = asked["body"].as_str().unwrap();
    assert!(
        body.contains(&format!("steward shadow claim {claimed_client}")),
        "{body}"
    );
    wait_until("security hears too", SETTLE, || {
        notifications_to(&s, "security-channel").into_iter().next()
    });
    let listed = s.get_ok("/api/shadow-agents");
    assert_eq!(array(listed).len(), 1);

    // Only its creator or security may let it go; anyone active may claim, with a real owner.
    let (status, v) = s.post_as(
        ALICE,
        &format!("/api/shadow-agents/{claimed_client}/release"),
        &json!({"reason": "not mine"}),
    );
    assert_eq!(status, 422, "{v}");
    let (status, v) = s.post_as(BOB, &format!("/api/shadow-agents/{claimed_client}/claim"),
        &json!({"owner": "nobody@example.com", "team": "supply", "environment": "prod", "purpose": "syncs inventory"}),
    );
    assert_eq!(
        status, 422,
        "an owner must be a person in the directory: {v}"
    );
    let (out, stdout, stderr) = run(&mut s.cli_as(
        BOB,
        [
            "shadow",
            "claim",
            &claimed_client,
            "--owner",
            BOB,
            "--team",
            "supply",
            "--environment",
            "prod",
            "--purpose",
            "syncs inventory counts to the ERP",
            "--name",
            "inventory-sync-agent-prod",
        ],
    ));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("claimed: onboarding"), "{stdout}");

    // Taking over the client replaces its secrets: nothing changes until security decides.
    let claim = wait_until("the claim's approval", SETTLE, || {
        s.approvals(false)
            .into_iter()
            .find(|a| a["request"]["action"] == "claim")
    });
    let (status, _, _) = s.token(&claimed_client, &old_secret, None);
    assert_eq!(
        status, 200,
        "the console secret works until the claim is approved"
    );
    let (status, v) = s.decide(claim["request"]["id"].as_str().unwrap(), "approve", SAM);
    assert_eq!(status, 202, "{v}");

    let active = s.wait_agent_status("inventory-sync-agent-prod", "active");
    assert_eq!(active["owner"], BOB);
    assert_eq!(
        active["client_id"],
        claimed_client.as_str(),
        "the same client, adopted"
    );
    assert_eq!(
        active["id"], shadow["id"],
        "the same record, now registered"
    );
    assert_eq!(
        active["token_lifetime_secs"], 900,
        "the policy's lifetime now applies"
    );
    // Steward holds the credential now: the console secret no longer works, the vaulted one does.
    let (status, _, _) = s.token(&claimed_client, &old_secret, None);
    assert_eq!(status, 401);
    let (_, vaulted) = s.vault_secret(active["id"].as_str().unwrap());
    let (claims, _) = s.token_ok(&claimed_client, &vaulted, None);
    assert_eq!(claims["scope"], "erp:inventory:read");
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 900);

    // Path 2: the sweep finds a second console client; nobody claims it.
    let (lost_client, lost_secret) =
        create_behind_stewards_back(&s, "Old Report Bot", &["erp:orders:read"]);
    let report = s.post("/api/discovery", &json!({})).1;
    assert_eq!(report["registered"], 1, "{report}");
    let shadows = array(report["shadows"].clone());
    assert_eq!(shadows.len(), 1, "{report}");
    assert_eq!(shadows[0]["duplicate"], false);
    // A second sweep finds nothing new.
    let again = s.post("/api/discovery", &json!({})).1;
    assert_eq!(again["registered"], 1, "{again}");
    assert_eq!(again["shadows"][0]["duplicate"], true, "{again}");
    wait_until("security is asked", SETTLE, || {
        notifications_to(&s, "security-channel")
            .into_iter()
            .find(|n| {
                n["subject"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("old-report-bot")
            })
    });

    // After the grace period: frozen, then decommissioned; the client is gone.
    let gone = s.wait_agent_status_for(
        "old-report-bot",
        "decommissioned",
        Duration::from_secs(GRACE_SECS) + SETTLE * 2,
    );
    assert!(
        gone["decommission"]["reason"]
            .as_str()
            .unwrap()
            .contains("unclaimed shadow agent"),
        "{gone}"
    );
    assert!(
        !s.idp_clients()
            .iter()
            .any(|c| c["client_id"] == lost_client.as_str())
    );
    let (status, _, _) = s.token(&lost_client, &lost_secret, None);
    assert_eq!(status, 401);
    // The claimed one is untouched.
    assert_eq!(s.agent("inventory-sync-agent-prod")["status"], "active");

    let kinds: Vec<String> = s
        .audit()
        .into_iter()
        .filter_map(|r| r["unmapped"]["steward_event"].as_str().map(str::to_string))
        .collect();
    for k in [
        "shadow_agent_found",
        "shadow_agent_claimed",
        "shadow_agent_released",
        "decommissioned",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} audited: {kinds:?}");
    }
}
