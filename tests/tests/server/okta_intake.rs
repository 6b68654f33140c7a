//! Okta event intake through the real `steward serve`: the event hook route (verification,
//! authorization, size and shape checks, at-least-once deliveries applied once) with Okta's
//! documented sample payloads, and owner-loss handling started by a user deactivation.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

const HOOK_SECRET: &str = "Bearer okta-hook-shared-secret-3c2b1a";
const EVENTS: &str = "../tests/fixtures/okta";

fn options() -> Options {
    Options::default().env("STEWARD_OKTA_HOOK_SECRET", HOOK_SECRET)
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/{EVENTS}/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A hook delivery (Okta's envelope) carrying these System Log events.
fn delivery(events: Vec<Value>) -> Value {
    let mut envelope = fixture("event-hook-delivery-sample.json");
    envelope["data"]["events"] = Value::Array(events);
    envelope
}

/// Okta's documented `user.lifecycle.deactivate` event, about `login`, with its own uuid.
fn deactivation(login: &str, uuid: &str) -> Value {
    let mut ev = fixture("events/user.lifecycle.deactivate.json");
    ev["uuid"] = json!(uuid);
    ev["target"][0]["alternateId"] = json!(login);
    ev
}

fn hook(s: &Server, auth: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut req = s
        .http()
        .post(s.url("/hooks/okta"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.text().unwrap_or_default())
}

fn refusals(s: &Server, fragment: &str) -> usize {
    s.audit_failures()
        .iter()
        .filter(|r| r["message"].as_str().unwrap_or_default().contains(fragment))
        .count()
}

fn received(s: &Server, uuid: &str) -> Vec<Value> {
    s.audit()
        .into_iter()
        .filter(|r| r["unmapped"]["event_uid"] == uuid)
        .collect()
}

#[test]
fn verification_challenge_is_echoed_only_with_the_hook_secret() {
    let s = Server::start_with(options());
    let get = |auth: Option<&str>| {
        let mut req = s
            .http()
            .get(s.url("/hooks/okta"))
            .header("x-okta-verification-challenge", "X1ZsjBQ2gHn9Ebr5");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or_default())
    };
    assert_eq!(
        get(Some(HOOK_SECRET)),
        (200, json!({"verification": "X1ZsjBQ2gHn9Ebr5"}))
    );
    let (status, body) = get(None);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing Authorization")
    );
    let (status, body) = get(Some("Bearer guessed"));
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("wrong Authorization")
    );
    assert_eq!(refusals(&s, "Authorization header"), 2);
}

#[test]
fn bad_deliveries_are_refused_with_a_clear_4xx_and_change_nothing() {
    let s = Server::start_with(options());
    let sample = serde_json::to_vec(&fixture("event-hook-delivery-sample.json")).unwrap();
    let before = s.audit().len();

    let (status, body) = hook(&s, None, &sample);
    assert_eq!(status, 401, "{body}");
    let (status, body) = hook(&s, Some("Bearer wrong"), &sample);
    assert_eq!(status, 401, "{body}");

    let (status, body) = hook(&s, Some(HOOK_SECRET), b"{\"data\": {\"events\": [");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed event hook delivery"), "{body}");
    let (status, body) = hook(&s, Some(HOOK_SECRET), b"{\"eventType\": \"x\"}");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no data.events list"), "{body}");

    let mut big = delivery(vec![]);
    big["padding"] = json!("x".repeat(300 * 1024));
    let (status, body) = hook(&s, Some(HOOK_SECRET), &serde_json::to_vec(&big).unwrap());
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("the limit is"), "{body}");

    // Each refusal is audited; no event was recorded.
    let after = s.audit();
    assert_eq!(after.len(), before + 5, "one refusal record each");
    assert!(
        after
            .iter()
            .all(|r| r["unmapped"]["steward_event"] != "idp_event_received")
    );
}

/// Anyone can post to the hook: a flood of requests with a wrong or missing Authorization is
/// answered 401 and counted one by one, but recorded only within the refusal window's budget
/// (once per window for each reason), so it cannot grow the audit trail.
#[test]
fn a_flood_of_unauthenticated_hook_requests_is_counted_but_recorded_within_a_budget() {
    let s = Server::start_with(options());
    let sample = serde_json::to_vec(&fixture("event-hook-delivery-sample.json")).unwrap();
    let bad = s.health()["bad_requests"].as_u64().unwrap();
    let started = std::time::Instant::now();
    let flood = 150;
    for i in 0..flood {
        let auth = match i % 3 {
            0 => None,
            1 => Some("Bearer wrong".to_string()),
            _ => Some(format!("Bearer guess-{i}")),
        };
        let (status, body) = hook(&s, auth.as_deref(), &sample);
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("Authorization header"), "{body}");
    }
    let windows = started.elapsed().as_secs() / shared::http::REFUSAL_WINDOW.as_secs() + 1;
    assert_eq!(
        s.health()["bad_requests"].as_u64().unwrap(),
        bad + flood,
        "every refusal is counted"
    );
    let recorded = refusals(&s, "Authorization header");
    // Two reasons (missing, wrong), each recorded at most once per window.
    assert!(
        (2..=2 * windows as usize).contains(&recorded),
        "{recorded} records for {flood} refusals in {windows} window(s)"
    );
    assert!(
        s.audit()
            .iter()
            .all(|r| r["unmapped"]["steward_event"] != "idp_event_received"),
        "no event of a refused delivery was taken in"
    );
}

#[test]
fn the_documented_sample_delivered_twice_is_recorded_once() {
    let s = Server::start_with(options());
    let sample = serde_json::to_vec(&fixture("event-hook-delivery-sample.json")).unwrap();
    for _ in 0..2 {
        let (status, body) = hook(&s, Some(HOOK_SECRET), &sample);
        assert_eq!(status, 200, "{body}");
    }
    let got = received(&s, "f790999f-fe87-467a-9880-6982a583986c");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["api"]["operation"], "user.session.start");
    // A type Steward does not act on is recorded without a mapping.
    assert!(got[0]["unmapped"]["signal"].is_null(), "{}", got[0]);
}

#[test]
fn mapped_events_carry_their_signal_and_one_unreadable_event_does_not_drop_the_rest() {
    let s = Server::start_with(options());
    let create = fixture("events/application.lifecycle.create.json");
    let mut broken = fixture("events/user.lifecycle.suspend.json");
    broken["uuid"] = json!("broken-1");
    broken["target"] = json!([]);
    let body = delivery(vec![broken, create.clone()]);
    let (status, text) = hook(&s, Some(HOOK_SECRET), &serde_json::to_vec(&body).unwrap());
    assert_eq!(status, 200, "{text}");
    let got = received(&s, create["uuid"].as_str().unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["unmapped"]["signal"]["signal"], "service_app");
    assert_eq!(got[0]["unmapped"]["signal"]["change"], "created");
    assert!(received(&s, "broken-1").is_empty());
    assert_eq!(
        refusals(&s, "broken-1"),
        1,
        "the unreadable event is audited"
    );
}

fn provisioned_agent(s: &Server, name: &str, owner: &str) -> Value {
    s.request_ok(&agent_request(
        name,
        "prod",
        owner,
        &["datadog:metrics:read"],
    ));
    s.wait_agent_status(name, "active")
}

fn notices_to(s: &Server, to: &str) -> Vec<Value> {
    array(s.get_ok("/api/notifications"))
        .into_iter()
        .filter(|n| n["recipient"] == to)
        .collect()
}

fn owner_loss_workflows(s: &Server, name: &str) -> Vec<Value> {
    array(s.get_ok(&format!("/api/agents/{name}"))["workflows"].clone())
        .into_iter()
        .filter(|w| w["kind"] == "owner_loss")
        .collect()
}

#[test]
fn a_deactivated_owner_flags_the_agent_and_the_manager_reassigns_it() {
    let s = Server::start_with(options());
    let name = "datadog-remediation-agent-prod";
    provisioned_agent(&s, name, ALICE);
    let other = provisioned_agent(&s, "erp-sync-agent-prod", BOB);

    // Okta delivers the deactivation twice (at least once): one owner-loss workflow.
    let body = serde_json::to_vec(&delivery(vec![deactivation(ALICE, "deact-alice-1")])).unwrap();
    for _ in 0..2 {
        assert_eq!(hook(&s, Some(HOOK_SECRET), &body).0, 200);
    }
    let flagged = s.wait("the agent to be flagged", SETTLE, || {
        let a = s.agent(name);
        (a["flags"][0]["flag"] == "owner_lost").then_some(a)
    });
    assert_eq!(
        flagged["owner"], ALICE,
        "the owner stays until a new one is assigned"
    );
    assert_eq!(flagged["status"], "active");
    assert_eq!(owner_loss_workflows(&s, name).len(), 1);
    assert!(s.agent("erp-sync-agent-prod")["flags"].is_null(), "{other}");
    s.wait_idle();
    let asked = notices_to(&s, "maria@example.com");
    assert_eq!(asked.len(), 1, "the manager is asked once: {asked:?}");
    assert!(
        asked[0]["body"]
            .as_str()
            .unwrap()
            .contains("steward agents reassign")
    );
    assert_eq!(notices_to(&s, "security-channel").len(), 1);

    // Only the manager or security may reassign, and only to an active person.
    let (status, v) = s.post_as(
        BOB,
        &format!("/api/agents/{name}/owner"),
        &json!({"owner": BOB}),
    );
    assert_eq!(status, 403, "{v}");
    assert!(v.to_string().contains("the owner's manager"), "{v}");
    let (status, v) = s.post_as(
        "maria@example.com",
        &format!("/api/agents/{name}/owner"),
        &json!({"owner": "carl.former@example.com"}),
    );
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("not an active person"), "{v}");

    let (status, v) = s.post_as(
        "maria@example.com",
        &format!("/api/agents/{name}/owner"),
        &json!({"owner": BOB}),
    );
    assert_eq!(status, 202, "{v}");
    let reassigned = s.wait("the new owner", SETTLE, || {
        let a = s.agent(name);
        (a["owner"] == BOB).then_some(a)
    });
    assert!(reassigned["flags"].is_null(), "{reassigned}");
    s.wait_idle();
    assert_eq!(
        notices_to(&s, BOB)
            .iter()
            .filter(|n| n["subject"].as_str().unwrap().contains("You now own"))
            .count(),
        1
    );
    // Not lost any more: a second reassignment is refused.
    let (status, v) = s.post_as(
        SAM,
        &format!("/api/agents/{name}/owner"),
        &json!({"owner": ALICE}),
    );
    assert_eq!(status, 409, "{v}");
}

#[test]
fn no_new_owner_by_the_deadline_requests_a_freeze() {
    let mut o = options();
    assert!(o.policy.contains("reassign_within = \"7days\""));
    o.policy = o
        .policy
        .replace("reassign_within = \"7days\"", "reassign_within = \"2s\"");
    let s = Server::start_with(o);
    let name = "datadog-remediation-agent-prod";
    provisioned_agent(&s, name, ALICE);
    let body = serde_json::to_vec(&delivery(vec![deactivation(ALICE, "deact-alice-2")])).unwrap();
    assert_eq!(hook(&s, Some(HOOK_SECRET), &body).0, 200);
    let agent = s.wait("the freeze request", Duration::from_secs(20), || {
        let a = s.agent(name);
        array(a["flags"].clone())
            .iter()
            .any(|f| f["flag"] == "freeze_requested")
            .then_some(a)
    });
    assert_eq!(
        agent["status"], "active",
        "the freeze itself comes with anomaly detection"
    );
    let wf = &owner_loss_workflows(&s, name)[0];
    assert_eq!(wf["state"], "FreezeRequested", "{wf}");
    s.wait_idle();
    assert!(notices_to(&s, "security-channel").iter().any(|n| {
        n["subject"]
            .as_str()
            .unwrap()
            .starts_with("Freeze requested")
    }));
}

/// A Shared Signals transmitter pushing to the real server: a signed SET is accepted (202) and
/// recorded with its signal; the same SET again is a replay (400, RFC 8935 error JSON).
#[test]
fn shared_signals_sets_are_received_at_the_ssf_route() {
    use base64::Engine as _;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let public =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": public, "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let s = Server::start_with(
        Options::default()
            .env("STEWARD_SSF_ISSUER", "https://transmitter.example.com")
            .env("STEWARD_SSF_AUDIENCE", "https://steward.example.com")
            .env("STEWARD_SSF_JWKS_FILE", jwks_file.to_str().unwrap()),
    );
    let mut claims = fixture("../ssf/risc-credential-compromise.json");
    claims["iss"] = json!("https://transmitter.example.com");
    claims["aud"] = json!("https://steward.example.com");
    claims["iat"] = json!(chrono::Utc::now().timestamp());
    claims["jti"] = json!("set-e2e-1");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.typ = Some("secevent+jwt".into());
    header.kid = Some("k1".into());
    let key = jsonwebtoken::EncodingKey::from_ed_der(signing.to_pkcs8_der().unwrap().as_bytes());
    let set = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let push = || {
        let r = s
            .http()
            .post(s.url("/ssf/events"))
            .header("content-type", "application/secevent+jwt")
            .body(set.clone())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    let (status, body) = push();
    assert_eq!(status, 202, "{body}");
    assert!(body.is_empty(), "{body}");
    let got: Vec<Value> = s
        .audit()
        .into_iter()
        .filter(|r| r["unmapped"]["source"] == "ssf")
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["unmapped"]["signal"]["kind"],
        "credential_compromise"
    );
    let (status, body) = push();
    assert_eq!(status, 400, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["err"], "invalid_request", "{err}");
    assert!(!body.contains(&set), "the token is never echoed");

    // Anyone can push a forged SET: a flood is counted in full and recorded within the refusal
    // window's budget, not one audit write each.
    let bad = s.health()["bad_requests"].as_u64().unwrap();
    let before = s.audit_failures().len();
    let started = std::time::Instant::now();
    let flood = 100u64;
    let forged = format!("{}.forged", &set[..set.rfind('.').unwrap()]);
    for _ in 0..flood {
        let r = s
            .http()
            .post(s.url("/ssf/events"))
            .header("content-type", "application/secevent+jwt")
            .body(forged.clone())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
    }
    let windows = started.elapsed().as_secs() / shared::http::REFUSAL_WINDOW.as_secs() + 1;
    assert_eq!(
        s.health()["bad_requests"].as_u64().unwrap(),
        bad + flood,
        "every forged SET is counted"
    );
    let written = s.audit_failures().len() - before;
    assert!(
        (1..=windows as usize).contains(&written),
        "{written} records for {flood} forged SETs in {windows} window(s)"
    );
}
