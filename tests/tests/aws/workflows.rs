//! Every workflow through the Lambda handlers against moto, each function on the stack its
//! `main` builds: `api`, `scheduler` and `idp-hook` hold no identity provider and queue what
//! needs one; the `worker` runs it. Onboarding, rotation and decommission are in
//! `functions.rs`; here: scope change, review campaign, freeze and unfreeze, shadow claim and
//! owner loss.

use crate::functions::{
    AGENT, HOOK_SECRET, agent, aws, call, call_as, drain, hook_event, onboard, pending_approval,
};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde_json::{Value, json};
use shared::Secret;
use shared::ports::IdentityProvider;
use shared::ports::idp::ClientSpec;

const ALICE: &str = "alice@example.com";
const SAM: &str = "sam.security@example.com";
const PRIYA: &str = "priya.secops@example.com";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn job(name: &str) -> EventBridgeEvent<scheduler::Job> {
    let mut event: EventBridgeEvent<scheduler::Job> =
        serde_json::from_str(include_str!("../../fixtures/aws/eventbridge-schedule.json")).unwrap();
    event.detail.job = name.into();
    event
}

async fn approve(a: &crate::functions::Aws, who: &str) {
    let id = pending_approval(a).await;
    let (status, body) = call_as(
        a,
        who,
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    drain(a).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scope_change_is_approved_and_granted_at_the_identity_provider() {
    let a = aws(5).await;
    let before = onboard(&a).await;
    let client_id = before["client_id"].as_str().unwrap().to_string();
    let (status, change) = call_as(
        &a,
        ALICE,
        "POST",
        &format!("/api/agents/{AGENT}/scopes"),
        Some(&json!({"add": ["datadog:incidents:write"], "reason": "open incidents on call"})),
    )
    .await;
    assert_eq!(status, 202, "{change}");
    drain(&a).await;
    // Nothing is granted before the approval.
    let held = a.idp.client(&client_id).await.unwrap().unwrap();
    assert!(!held.scopes.contains(&"datadog:incidents:write".to_string()));
    // The requester cannot approve her own change.
    let id = pending_approval(&a).await;
    let (status, body) = call_as(
        &a,
        ALICE,
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("cannot approve"), "{body}");
    approve(&a, PRIYA).await;
    let wf = change["workflow_id"].as_str().unwrap();
    let (_, w) = call(&a, "GET", &format!("/api/workflows/{wf}"), None).await;
    assert_eq!(w["workflow"]["state_name"], "Applied", "{w}");
    let after = agent(&a).await;
    assert!(
        strings(&after["scopes"]).contains(&"datadog:incidents:write".to_string()),
        "{after}"
    );
    let held = a.idp.client(&client_id).await.unwrap().unwrap();
    assert!(
        held.scopes.contains(&"datadog:incidents:write".to_string()),
        "granted at the IdP: {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_review_campaign_asks_the_owner_and_applies_the_answer() {
    let a = aws(5).await;
    let onboarded = onboard(&a).await;
    let agent_id = onboarded["id"].as_str().unwrap();
    let deadline = chrono::Utc::now() + chrono::Duration::days(7);
    let (status, started) = call_as(
        &a,
        SAM,
        "POST",
        "/api/campaigns",
        Some(&json!({"id": "2026-q4-aws", "deadline": deadline, "unanswered": "revoke"})),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    drain(&a).await;
    let (_, progress) = call(&a, "GET", "/api/campaigns/2026-q4-aws", None).await;
    assert_eq!(progress["items"], 1, "{progress}");
    assert_eq!(progress["open"], 1, "{progress}");
    // The owner answers Reduce: the dropped scope leaves the grant.
    let item = format!("review-2026-q4-aws-{agent_id}");
    let (status, body) = call_as(
        &a,
        "bob@example.com",
        "POST",
        &format!("/api/reviews/{item}/decision"),
        Some(&json!({"decision": "keep"})),
    )
    .await;
    assert_eq!(status, 403, "only the owner or security answers: {body}");
    let (status, body) = call_as(
        &a,
        ALICE,
        "POST",
        &format!("/api/reviews/{item}/decision"),
        Some(&json!({"decision": "reduce", "drop": ["datadog:monitors:write"]})),
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    drain(&a).await;
    let (_, progress) = call(&a, "GET", "/api/campaigns/2026-q4-aws", None).await;
    assert_eq!(progress["decided"], 1, "{progress}");
    assert_eq!(progress["reduce"], 1, "{progress}");
    let after = agent(&a).await;
    assert_eq!(
        strings(&after["scopes"]),
        ["datadog:metrics:read"],
        "{after}"
    );
    let held = a
        .idp
        .client(onboarded["client_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.scopes, ["datadog:metrics:read"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn freeze_deactivates_the_client_and_an_approved_unfreeze_restores_it() {
    let a = aws(5).await;
    let onboarded = onboard(&a).await;
    let client_id = onboarded["client_id"].as_str().unwrap().to_string();
    let (status, body) = call_as(
        &a,
        ALICE,
        "POST",
        &format!("/api/agents/{AGENT}/freeze"),
        Some(&json!({"reason": "it paged the CEO at 3am"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    drain(&a).await;
    let frozen = agent(&a).await;
    assert_eq!(frozen["status"], "frozen", "{frozen}");
    let held = a.idp.client(&client_id).await.unwrap().unwrap();
    assert!(!held.active, "the kill switch reached the IdP: {held:?}");
    // Security decides: Unfreeze (the owner who froze it may not approve alone).
    approve(&a, SAM).await;
    let back = agent(&a).await;
    assert_eq!(back["status"], "active", "{back}");
    let held = a.idp.client(&client_id).await.unwrap().unwrap();
    assert!(held.active, "{held:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_runs_in_the_worker_and_a_shadow_agent_is_claimed() {
    let a = aws(5).await;
    // Someone made a client at the IdP behind Steward's back.
    let spec = ClientSpec {
        agent_id: String::new(),
        name: "Inventory Sync".into(),
        scopes: vec!["erp:inventory:read".into()],
        token_lifetime_secs: 3600,
    };
    let created = a
        .idp
        .create_client(&spec, "console-inventory-sync")
        .await
        .unwrap();
    let client_id = created.client_id;
    // The scheduler (no identity provider) only queues the sweep; the worker runs it.
    let out = scheduler::handle(&a.edge.engine, &crate::sealer(), job("discovery"))
        .await
        .unwrap();
    assert_eq!(out["queued"], true, "{out}");
    let (_, shadows) = call(&a, "GET", "/api/shadow-agents", None).await;
    assert_eq!(shadows, json!([]), "nothing found before the worker ran");
    drain(&a).await;
    let (_, shadows) = call(&a, "GET", "/api/shadow-agents", None).await;
    assert_eq!(shadows.as_array().unwrap().len(), 1, "{shadows}");
    assert_eq!(shadows[0]["client_id"], client_id.as_str());
    assert_eq!(shadows[0]["status"], "unregistered");
    // The same hour's sweep again is one message, and finds nothing new.
    scheduler::handle(&a.edge.engine, &crate::sealer(), job("discovery"))
        .await
        .unwrap();
    drain(&a).await;
    let (_, again) = call(&a, "GET", "/api/shadow-agents", None).await;
    assert_eq!(again.as_array().unwrap().len(), 1);

    let (status, started) = call_as(
        &a,
        ALICE,
        "POST",
        &format!("/api/shadow-agents/{client_id}/claim"),
        Some(
            &json!({"owner": ALICE, "team": "supply", "environment": "prod",
                     "purpose": "syncs inventory counts to the ERP",
                     "name": "inventory-sync-agent-prod"}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    drain(&a).await;
    // Taking over the client replaces its secrets: a security approver decides first.
    let (_, pending) = call(&a, "GET", "/api/approvals", None).await;
    let claim = pending
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["request"]["action"] == "claim")
        .unwrap_or_else(|| panic!("the claim waits for a decision: {pending}"))
        .clone();
    let (status, decided) = call_as(
        &a,
        SAM,
        "POST",
        &format!(
            "/api/approvals/{}/approve",
            claim["request"]["id"].as_str().unwrap()
        ),
        Some(&json!({"reason": "the inventory team owns it"})),
    )
    .await;
    assert_eq!(status, 202, "{decided}");
    drain(&a).await;
    let (_, claimed) = call(&a, "GET", "/api/agents/inventory-sync-agent-prod", None).await;
    assert_eq!(claimed["agent"]["status"], "active", "{claimed}");
    assert_eq!(claimed["agent"]["owner"], ALICE);
    assert_eq!(
        claimed["agent"]["client_id"],
        client_id.as_str(),
        "the same client, adopted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_deactivated_in_okta_flags_the_agent_and_the_manager_reassigns_it() {
    let a = aws(5).await;
    onboard(&a).await;
    let mut ev: Value = serde_json::from_str(include_str!(
        "../../fixtures/okta/events/user.lifecycle.deactivate.json"
    ))
    .unwrap();
    ev["uuid"] = json!("deact-alice-aws-1");
    ev["target"][0]["alternateId"] = json!(ALICE);
    let mut delivery: Value = serde_json::from_str(include_str!(
        "../../fixtures/okta/event-hook-delivery-sample.json"
    ))
    .unwrap();
    delivery["data"]["events"] = json!([ev]);
    let secret = Secret::new(HOOK_SECRET);
    for _ in 0..2 {
        let r = idp_hook::handle(
            &a.edge.engine,
            &secret,
            hook_event(
                "POST",
                json!({"authorization": HOOK_SECRET, "content-type": "application/json"}),
                Some(&delivery.to_string()),
            ),
        )
        .await
        .unwrap();
        assert_eq!(r.status_code, 200);
    }
    drain(&a).await;
    let flagged = agent(&a).await;
    assert_eq!(flagged["flags"][0]["flag"], "owner_lost", "{flagged}");
    assert_eq!(flagged["status"], "active");
    let (status, body) = call_as(
        &a,
        "maria@example.com",
        "POST",
        &format!("/api/agents/{AGENT}/owner"),
        Some(&json!({"owner": SAM})),
    )
    .await;
    assert_eq!(status, 202, "the lost owner's manager reassigns: {body}");
    drain(&a).await;
    let reassigned = agent(&a).await;
    assert_eq!(reassigned["owner"], SAM, "{reassigned}");
    assert!(reassigned["flags"].is_null(), "{reassigned}");
}
