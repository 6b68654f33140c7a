//! Shadow agents end to end on the real `steward serve`: clients created directly in the
//! identity provider, behind Steward's back. One is reported by the IdP's app-created event
//! (Okta's documented `application.lifecycle.create`) and claimed by its creator: onboarded
//! with a real owner, Steward takes over its credential. The creator the event names may not let
//! it go: anyone holding the hook secret can write that name. Others are found by the discovery
//! sweep and nobody claims them: after the grace period they are frozen, not deleted, and a
//! security approver decides whether each is decommissioned.

use crate::support::*;
use serde_json::{Value, json};
use shared::ports::IdentityProvider;
use shared::ports::idp::ClientSpec;
use std::sync::Arc;
use std::time::Duration;

const HOOK_SECRET: &str = "Bearer okta-hook-shared-secret-3c2b1a";
const GRACE_SECS: u64 = 20;

fn start() -> Server {
    // No periodic sweep: the one at start would race the test's own, finding a client before
    // the IdP event that names its creator, or before `POST /api/discovery`.
    let mut opts = Options::default()
        .env("STEWARD_OKTA_HOOK_SECRET", HOOK_SECRET)
        .env("STEWARD_SWEEP", "off");
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
fn a_client_an_idp_event_reports_is_claimed_by_its_creator_who_may_not_let_it_go() {
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

    // Letting it go deletes the client: only a security approver may. Not the creator the event
    // names (a name anyone holding the hook secret can write), not anyone else; nothing changes.
    for person in [BOB, ALICE] {
        let (status, v) = s.post_as(
            person,
            &format!("/api/shadow-agents/{claimed_client}/release"),
            &json!({"reason": "not mine"}),
        );
        assert_eq!(status, 403, "{person}: {v}");
        assert!(
            v.to_string().contains("a security approver"),
            "{person}: {v}"
        );
    }
    assert_eq!(
        s.workflow(&format!("shadow-{claimed_client}"))["workflow"]["state_name"],
        "Unclaimed"
    );
    assert_eq!(
        agent_of_client(&s, &claimed_client).unwrap()["status"],
        "unregistered"
    );
    s.token_ok(&claimed_client, &old_secret, None);
    // The creator may claim it, with a real owner (a security approver decides the claim).
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
    // Denied, the claim took nothing over: the client is a shadow agent again, not a client
    // nobody is asked about.
    let (status, v) = s.decide(claim["request"]["id"].as_str().unwrap(), "deny", SAM);
    assert_eq!(status, 202, "{v}");
    s.wait_workflow_state(&format!("shadow-{claimed_client}"), "Unclaimed");
    let again = wait_until("the shadow agent unregistered again", SETTLE, || {
        agent_of_client(&s, &claimed_client).filter(|a| a["status"] == "unregistered")
    });
    assert_eq!(again["owner"], "", "{again}");
    assert_eq!(array(s.get_ok("/api/shadow-agents")).len(), 1);
    let (status, _, _) = s.token(&claimed_client, &old_secret, None);
    assert_eq!(status, 200, "nothing was taken over");
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
    assert!(out.status.success(), "claimed again: {stdout}{stderr}");
    let claim = wait_until("the second claim's approval", SETTLE, || {
        s.approvals(false)
            .into_iter()
            .find(|a| a["request"]["action"] == "claim")
    });
    let (status, v) = s.decide(claim["request"]["id"].as_str().unwrap(), "approve", SAM);
    assert_eq!(status, 202, "{v}");

    let active = s.wait_agent_status("inventory-sync-agent-prod", "active");
    s.wait_workflow_state(&format!("shadow-{claimed_client}"), "Adopted");
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

    let kinds = audit_kinds(&s);
    for k in ["shadow_agent_found", "shadow_agent_claimed"] {
        assert!(kinds.iter().any(|x| x == k), "{k} audited: {kinds:?}");
    }
    assert!(
        !kinds.iter().any(|x| x == "shadow_agent_released"),
        "{kinds:?}"
    );
}

fn audit_kinds(s: &Server) -> Vec<String> {
    s.audit()
        .into_iter()
        .filter_map(|r| r["unmapped"]["steward_event"].as_str().map(str::to_string))
        .collect()
}

fn idp_client(s: &Server, client_id: &str) -> Option<Value> {
    s.idp_clients()
        .into_iter()
        .find(|c| c["client_id"] == client_id)
}

/// The open approval asking whether to decommission the shadow agent `name`.
fn deletion_question(s: &Server, name: &str) -> Value {
    s.wait(
        &format!("the decommission question for {name}"),
        SETTLE,
        || {
            s.approvals(false).into_iter().find(|a| {
                a["request"]["action"] == "decommission" && a["request"]["agent_name"] == name
            })
        },
    )
}

#[test]
fn clients_nobody_claims_are_frozen_after_the_grace_period_and_deleted_only_on_a_security_approval()
{
    let s = start();

    // The sweep finds three console clients; nobody claims them.
    let (lost_client, lost_secret) =
        create_behind_stewards_back(&s, "Old Report Bot", &["erp:orders:read"]);
    let (kept_client, kept_secret) =
        create_behind_stewards_back(&s, "Nightly Export", &["erp:orders:read"]);
    let (late_client, late_secret) =
        create_behind_stewards_back(&s, "Label Printer", &["erp:inventory:read"]);
    let report = s.post("/api/discovery", &json!({})).1;
    assert_eq!(report["registered"], 0, "{report}");
    let shadows = array(report["shadows"].clone());
    assert_eq!(shadows.len(), 3, "{report}");
    assert!(shadows.iter().all(|s| s["duplicate"] == false), "{report}");
    // A second sweep finds nothing new.
    let again = s.post("/api/discovery", &json!({})).1;
    assert!(
        array(again["shadows"].clone())
            .iter()
            .all(|s| s["duplicate"] == true),
        "{again}"
    );
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

    // After the grace period: frozen (client deactivated), never deleted without a decision.
    let grace = Duration::from_secs(GRACE_SECS) + SETTLE * 2;
    for name in ["old-report-bot", "nightly-export", "label-printer"] {
        s.wait_agent_status_for(name, "frozen", grace);
    }
    let lost_question = deletion_question(&s, "old-report-bot");
    let kept_question = deletion_question(&s, "nightly-export");
    let late_question = deletion_question(&s, "label-printer");
    assert_eq!(
        lost_question["request"]["requester"], "schedule:claim-grace",
        "{lost_question}"
    );
    for who in [SAM, PRIYA] {
        assert!(
            array(lost_question["request"]["approvers"].clone())
                .iter()
                .any(|a| a == who),
            "{lost_question}"
        );
    }
    for (client, secret) in [
        (&lost_client, &lost_secret),
        (&kept_client, &kept_secret),
        (&late_client, &late_secret),
    ] {
        let at_idp = idp_client(&s, client).expect("the client still exists at the IdP");
        assert_eq!(at_idp["active"], false, "{at_idp}");
        let (status, v, _) = s.token(client, secret, None);
        assert_ne!(status, 200, "a frozen client gets no token: {v}");
    }
    // Still listed: each can still be claimed, or let go by a security approver.
    let listed: Vec<Value> = array(s.get_ok("/api/shadow-agents"));
    assert_eq!(listed.len(), 3, "{listed:?}");

    // Only a security approver decides the deletion.
    let lost_id = lost_question["request"]["id"].as_str().unwrap();
    let (status, v) = s.decide(lost_id, "approve", BOB);
    assert_eq!(status, 422, "{v}");
    let (status, v) = s.decide(lost_id, "approve", SAM);
    assert_eq!(status, 202, "{v}");
    let gone = s.wait_agent_status("old-report-bot", "decommissioned");
    let why = gone["decommission"]["reason"].as_str().unwrap();
    assert!(
        why.contains("unclaimed shadow agent")
            && why.contains(&format!("decommission approved by {SAM}")),
        "{gone}"
    );
    assert!(idp_client(&s, &lost_client).is_none(), "deleted at the IdP");
    let (status, _, _) = s.token(&lost_client, &lost_secret, None);
    assert_eq!(status, 401);

    // Denied: it stays frozen, the client deactivated, not deleted.
    let kept_id = kept_question["request"]["id"].as_str().unwrap();
    let (status, v) = s.decide(kept_id, "deny", PRIYA);
    assert_eq!(status, 202, "{v}");
    s.wait_workflow_state(&format!("shadow-{kept_client}"), "Kept");
    assert_eq!(s.agent("nightly-export")["status"], "frozen");
    assert_eq!(idp_client(&s, &kept_client).unwrap()["active"], false);
    // Then a security approver may still let it go; nobody else may.
    let (status, v) = s.post_as(
        BOB,
        &format!("/api/shadow-agents/{kept_client}/release"),
        &json!({"reason": "unused"}),
    );
    assert_eq!(status, 403, "{v}");
    let (status, v) = s.post_as(
        SAM,
        &format!("/api/shadow-agents/{kept_client}/release"),
        &json!({"reason": "nobody answered for a month"}),
    );
    assert_eq!(status, 202, "{v}");
    s.wait_agent_status("nightly-export", "decommissioned");
    assert!(idp_client(&s, &kept_client).is_none());

    // Denied too, then claimed: once the claim is approved the client works again, with the
    // secret Steward issued.
    let late_id = late_question["request"]["id"].as_str().unwrap();
    let (status, v) = s.decide(late_id, "deny", SAM);
    assert_eq!(status, 202, "{v}");
    s.wait_workflow_state(&format!("shadow-{late_client}"), "Kept");
    let (status, v) = s.post_as(
        BOB,
        &format!("/api/shadow-agents/{late_client}/claim"),
        &json!({"owner": BOB, "team": "supply", "environment": "prod",
            "purpose": "prints shipping labels", "name": "label-printer-agent-prod"}),
    );
    assert_eq!(status, 202, "{v}");
    let claim = wait_until("the claim's approval", SETTLE, || {
        s.approvals(false)
            .into_iter()
            .find(|a| a["request"]["action"] == "claim")
    });
    let (status, v) = s.decide(claim["request"]["id"].as_str().unwrap(), "approve", PRIYA);
    assert_eq!(status, 202, "{v}");
    let active = s.wait_agent_status("label-printer-agent-prod", "active");
    assert_eq!(active["client_id"], late_client.as_str());
    assert_eq!(idp_client(&s, &late_client).unwrap()["active"], true);
    let (_, vaulted) = s.vault_secret(active["id"].as_str().unwrap());
    s.token_ok(&late_client, &vaulted, None);
    assert!(array(s.get_ok("/api/shadow-agents")).is_empty());

    let kinds = audit_kinds(&s);
    for k in [
        "shadow_agent_found",
        "agent_frozen",
        "approval_requested",
        "approval_decided",
        "decommission_kept",
        "shadow_agent_released",
        "shadow_agent_claimed",
        "decommissioned",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} audited: {kinds:?}");
    }
}
