//! Every refusal over HTTP: a clear 4xx, nothing changed, and a Failure record in the audit trail.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

const NAME: &str = "datadog-remediation-agent-prod";

fn sensitive_request() -> Value {
    agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    )
}

/// Asserts the body is a 422 whose reasons include `field` with a message containing `needle`.
fn assert_reason(status: u16, body: &Value, field: &str, needle: &str) {
    assert_eq!(status, 422, "{body}");
    let reasons = body["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        reasons
            .iter()
            .any(|r| r["field"] == field && r["message"].as_str().unwrap_or("").contains(needle)),
        "expected a `{field}` reason mentioning `{needle}`: {body}"
    );
}

/// Asserts a Failure audit record (one more than `before`) whose message mentions `needle`.
fn assert_audited_refusal(s: &Server, before: usize, needle: &str) -> Value {
    let failures = s.audit_failures();
    assert!(
        failures.len() > before,
        "the refusal was not audited: {:?}",
        messages(&failures)
    );
    failures[before..]
        .iter()
        .find(|r| r["message"].as_str().unwrap_or("").contains(needle))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no Failure record mentions `{needle}`: {:?}",
                messages(&failures)
            )
        })
}

/// A refused agent request: the reason is given, nothing exists afterwards, and it is audited.
fn assert_request_refused(body: Value, field: &str, needle: &str) {
    let s = Server::start();
    let before = s.audit_failures().len();
    let (status, v) = s.request_agent(&body);
    assert_reason(status, &v, field, needle);
    assert_eq!(v["error"], "request refused");
    assert!(s.agents().is_empty(), "no agent recorded: {:?}", s.agents());
    assert!(s.idp_clients().is_empty(), "no client created");
    assert!(s.approvals(true).is_empty(), "no approval asked");
    let record = assert_audited_refusal(&s, before, needle);
    assert_eq!(record["unmapped"]["steward_event"], "refused");
    assert_eq!(record["actor"]["user"]["email_addr"], ALICE);
}

#[test]
fn excluded_scope_is_refused() {
    let body = agent_request(
        "okta-helper-agent-prod",
        "prod",
        ALICE,
        &["okta:apps:read", "okta:users:manage"],
    );
    assert_request_refused(body, "scopes", "okta:users:manage");
}

#[test]
fn unknown_owner_is_refused() {
    let mut body = sensitive_request();
    body["owner"] = json!("nobody@example.com");
    body["requester"] = json!(ALICE);
    assert_request_refused(body, "owner", "nobody@example.com is not a person");
}

#[test]
fn inactive_owner_is_refused() {
    let mut body = sensitive_request();
    body["owner"] = json!("carl.former@example.com");
    body["requester"] = json!(ALICE);
    assert_request_refused(
        body,
        "owner",
        "carl.former@example.com is not an active person",
    );
}

/// A purpose longer than approvers and Slack can be shown is refused before anything starts
/// (a 5,000-character purpose once made every Slack post of the request fail).
#[test]
fn an_overlong_purpose_is_refused() {
    let mut body = sensitive_request();
    body["purpose"] = json!("x".repeat(1001));
    assert_request_refused(body, "purpose", "at most 1000 are kept");
}

#[test]
fn bad_name_is_refused() {
    let mut body = sensitive_request();
    body["name"] = json!("DatadogBot");
    assert_request_refused(body, "name", "DatadogBot");
}

#[test]
fn token_lifetime_over_the_policy_maximum_is_refused() {
    let mut body = sensitive_request();
    body["token_lifetime_secs"] = json!(3600);
    assert_request_refused(
        body,
        "token_lifetime",
        "exceeds the policy maximum of 15 min",
    );
}

#[test]
fn the_requester_cannot_approve_their_own_request() {
    let s = Server::start();
    let mut body = sensitive_request();
    body["requester"] = json!(SAM);
    let started = s.request_ok(&body);
    let wf = started["workflow_id"].as_str().unwrap();
    let approval = s.pending_approval(wf);
    assert_eq!(approval["request"]["requester"], SAM);
    assert_eq!(
        strings(&approval["request"]["approvers"]),
        [PRIYA],
        "the requester is not asked to approve"
    );
    let id = approval["request"]["id"].as_str().unwrap();

    let before = s.audit_failures().len();
    let (status, v) = s.decide(id, "approve", SAM);
    assert_reason(status, &v, "approver", "cannot approve");
    assert_audited_refusal(&s, before, "cannot approve");
    // Case and spacing do not get around it.
    let (status, v) = s.decide(id, "approve", " Sam.Security@Example.com ");
    assert_reason(status, &v, "approver", "cannot approve");
    assert_eq!(s.agent(NAME)["status"], "pending_approval");
    assert!(s.idp_clients().is_empty());
    assert_eq!(s.pending_approval(wf)["status"], "pending");

    // Another approver can.
    let (status, v) = s.decide(id, "approve", PRIYA);
    assert_eq!(status, 202, "{v}");
    let agent = s.wait_agent_status(NAME, "active");

    // A requester named with spacing and capitals is stored normalised, so it still counts.
    let mut body = sensitive_request();
    body["name"] = json!("datadog-triage-agent-prod");
    body["requester"] = json!(" SAM.Security@Example.com ");
    let started = s.request_ok(&body);
    let approval = s.pending_approval(started["workflow_id"].as_str().unwrap());
    assert_eq!(approval["request"]["requester"], SAM);
    let (status, v) = s.decide(approval["request"]["id"].as_str().unwrap(), "approve", SAM);
    assert_reason(status, &v, "approver", "cannot approve");
    assert_eq!(s.idp_clients().len(), 1);
    assert_eq!(s.idp_clients()[0]["client_id"], agent["client_id"]);
}

#[test]
fn an_approver_outside_the_security_group_is_refused() {
    let s = Server::start();
    let started = s.request_ok(&sensitive_request());
    let wf = started["workflow_id"].as_str().unwrap();
    let id = s.pending_approval(wf)["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = s.audit_failures().len();
    for who in [BOB, "maria@example.com"] {
        let (status, v) = s.decide(&id, "approve", who);
        assert_reason(status, &v, "approver", "is not an allowed approver");
    }
    // Not even to deny, and not the requester either.
    let (status, v) = s.decide(&id, "deny", BOB);
    assert_reason(status, &v, "approver", "is not an allowed approver");
    let (status, v) = s.decide(&id, "approve", ALICE);
    assert_reason(status, &v, "approver", "cannot approve");
    assert_audited_refusal(&s, before, "is not an allowed approver");
    assert_eq!(s.audit_failures().len(), before + 4);
    assert_eq!(s.agent(NAME)["status"], "pending_approval");
    assert_eq!(s.pending_approval(wf)["status"], "pending");
    assert!(s.idp_clients().is_empty());
}

#[test]
fn an_expired_approval_cannot_be_approved_and_provisions_nothing() {
    let s = Server::start_with(Options::default().approval_expiry("2s"));
    let started = s.request_ok(&sensitive_request());
    let wf = started["workflow_id"].as_str().unwrap().to_string();
    let id = s.pending_approval(&wf)["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(2300));

    let before = s.audit_failures().len();
    let (status, v) = s.decide(&id, "approve", SAM);
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("expired"), "{v}");
    assert_audited_refusal(&s, before, "expired");

    // The timer ends the workflow: Expired, the agent is expired, nothing was provisioned.
    let w = s.wait_workflow_state(&wf, "Expired");
    assert_eq!(w["workflow"]["terminal"], true);
    let agent = s.wait_agent_status(NAME, "expired");
    assert!(agent["client_id"].is_null(), "{agent}");
    assert!(s.idp_clients().is_empty());
    let all = s.approvals(true);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"], "expired");
    assert!(s.approvals(false).is_empty());
    let audit = s.audit();
    let expired: Vec<&Value> = audit
        .iter()
        .filter(|r| r["unmapped"]["steward_event"] == "approval_expired")
        .collect();
    assert_eq!(expired.len(), 1, "{:?}", messages(&audit));
    assert_eq!(expired[0]["actor"]["app_name"], "steward-scheduler");
    let (status, v) = s.decide(&id, "approve", PRIYA);
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("expired"), "{v}");

    // The name is free again for a new request.
    let (status, v) = s.request_agent(&sensitive_request());
    assert_eq!(
        status, 200,
        "the identical request is still recognised: {v}"
    );
    assert_eq!(v["duplicate"], true);
    let mut again = sensitive_request();
    again["purpose"] = json!("Second try after the approval expired");
    let (status, v) = s.request_agent(&again);
    assert_eq!(status, 202, "{v}");
}

#[test]
fn a_duplicate_request_is_idempotent() {
    let s = Server::start();
    let first = s.request_ok(&sensitive_request());
    let (status, second) = s.request_agent(&sensitive_request());
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["workflow_id"], first["workflow_id"]);
    assert_eq!(second["agent_id"], first["agent_id"]);
    assert_eq!(second["state"], "AwaitingApproval");
    assert_eq!(s.agents().len(), 1);
    assert_eq!(s.approvals(true).len(), 1);

    // A different request for a name in use is a conflict, refused and audited.
    let before = s.audit_failures().len();
    let mut other = sensitive_request();
    other["purpose"] = json!("Something else entirely");
    let (status, v) = s.request_agent(&other);
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("already exists"),
        "{v}"
    );
    assert_audited_refusal(&s, before, "already exists");
    assert_eq!(s.agents().len(), 1);
    assert_eq!(s.approvals(true).len(), 1);

    // After provisioning the same request is still a duplicate: one client, ever.
    let id = s.pending_approval(first["workflow_id"].as_str().unwrap())["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.decide(&id, "approve", SAM).0, 202);
    s.wait_agent_status(NAME, "active");
    let (status, third) = s.request_agent(&sensitive_request());
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["duplicate"], true);
    assert_eq!(third["state"], "Active");
    s.wait_idle();
    assert_eq!(s.idp_clients().len(), 1);
    assert_eq!(s.agents().len(), 1);
}

#[test]
fn a_denied_request_provisions_nothing() {
    let s = Server::start();
    let started = s.request_ok(&sensitive_request());
    let wf = started["workflow_id"].as_str().unwrap();
    let id = s.pending_approval(wf)["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = s.post_as(
        PRIYA,
        &format!("/api/approvals/{id}/deny"),
        &json!({"reason": "monitor writes are not needed"}),
    );
    assert_eq!(status, 202, "{v}");
    let agent = s.wait_agent_status(NAME, "denied");
    assert!(agent["client_id"].is_null());
    s.wait_workflow_state(wf, "Denied");
    assert!(s.idp_clients().is_empty());
    let all = s.approvals(true);
    assert_eq!(all[0]["status"], "denied");
    assert_eq!(all[0]["outcome"]["by"], PRIYA);
    let audit = s.audit();
    assert!(
        messages(&audit)
            .iter()
            .any(|m| m.contains("denied") && m.contains("monitor writes are not needed")),
        "{:?}",
        messages(&audit)
    );
    // Decided once: an approval after the denial is refused.
    let before = s.audit_failures().len();
    let (status, v) = s.decide(&id, "approve", SAM);
    assert_reason(status, &v, "approval", "already denied");
    assert_audited_refusal(&s, before, "a decision is made once");
    s.wait_idle();
    assert_eq!(s.agent(NAME)["status"], "denied");
    assert!(s.idp_clients().is_empty());
}

#[test]
fn a_decision_is_made_once() {
    let s = Server::start();
    let started = s.request_ok(&sensitive_request());
    let wf = started["workflow_id"].as_str().unwrap();
    let id = s.pending_approval(wf)["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.decide(&id, "approve", SAM).0, 202);
    s.wait("the approval to be closed", SETTLE, || {
        (s.approvals(true)[0]["status"] == "approved").then_some(())
    });
    let before = s.audit_failures().len();
    for (verb, who) in [("approve", PRIYA), ("approve", SAM), ("deny", PRIYA)] {
        let (status, v) = s.decide(&id, verb, who);
        assert_reason(status, &v, "approval", "already approved");
    }
    assert_audited_refusal(&s, before, "a decision is made once");
    s.wait_agent_status(NAME, "active");
    assert_eq!(s.approvals(true)[0]["outcome"]["by"], SAM);
    assert_eq!(s.idp_clients().len(), 1);
}

#[test]
fn a_malformed_body_is_a_counted_and_audited_400() {
    let s = Server::start();
    let bad_before = s.health()["bad_requests"].as_u64().unwrap();
    let failures_before = s.audit_failures().len();
    let resp = s
        .http()
        .post(s.url("/api/agents"))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body("{\"name\": \"datadog-remediation-agent-prod\", ")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed agent request"),
        "{v}"
    );
    assert_eq!(s.health()["bad_requests"].as_u64().unwrap(), bad_before + 1);
    // Audited as the call it was: who, which operation, 400, and what was wrong.
    let call = s
        .audit()
        .into_iter()
        .find(|r| r["api"]["operation"] == "POST /api/agents")
        .expect("the refused call is audited");
    assert_eq!(call["status"], "Failure", "{call}");
    assert_eq!(call["api"]["response"]["code"], 400, "{call}");
    assert!(
        call["message"]
            .as_str()
            .unwrap()
            .contains("malformed agent request"),
        "{call}"
    );
    assert_eq!(s.audit_failures().len(), failures_before, "no other record");
    assert!(s.agents().is_empty());
    assert!(s.idp_clients().is_empty());
}

#[test]
fn the_admin_api_requires_the_bearer_token() {
    let s = Server::start();
    let bad_before = s.health()["bad_requests"].as_u64().unwrap();
    let failures_before = s.audit_failures().len();

    let resp = s.http().get(s.url("/api/agents")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let v: Value = resp.json().unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("missing bearer token"),
        "{v}"
    );
    let resp = s
        .http()
        .post(s.url("/api/agents"))
        .bearer_auth("stw_not-the-token")
        .json(&sensitive_request())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = s
        .http()
        .post(s.url("/api/approvals/x/approve"))
        .header("authorization", format!("Basic {}", s.token))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "only a Bearer token counts");

    assert_eq!(s.health()["bad_requests"].as_u64().unwrap(), bad_before + 3);
    assert_audited_refusal(&s, failures_before, "missing bearer token");
    assert_audited_refusal(&s, failures_before, "wrong bearer token");
    assert!(
        s.agents().is_empty(),
        "the unauthenticated request did nothing"
    );
    assert!(
        s.audit_failures()
            .iter()
            .all(|r| !r.to_string().contains(&s.token)),
        "the audit never holds the admin token"
    );

    // The token file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.data_dir.join("admin-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "admin-token mode {mode:o}");
    }
}

#[test]
fn unknown_ids_are_404() {
    let s = Server::start();
    let failures_before = s.audit_failures().len();
    let (status, v) = s.decide("onboarding-nope-approval-1", "approve", SAM);
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no approval"), "{v}");
    assert_audited_refusal(&s, failures_before, "onboarding-nope-approval-1");
    assert_eq!(s.get("/api/agents/nope-agent-prod").0, 404);
    assert_eq!(s.get("/api/agents/nope-agent-prod/history").0, 404);
    assert_eq!(s.get("/api/workflows/onboarding-nope").0, 404);
    let (status, _) = s.post_as(
        ALICE,
        "/api/agents/nope-agent-prod/scopes",
        &json!({"add": ["datadog:metrics:read"], "reason": "r"}),
    );
    assert_eq!(status, 404);
    let (status, _) = s.post_as(
        ALICE,
        "/api/workflows/onboarding-nope/cancel",
        &json!({"reason": "r"}),
    );
    assert_eq!(status, 404);
}

/// Every admin route, walked from the route table with ids that exist nowhere (and an empty
/// body for a POST): each refusal it answers, whatever it is (an unknown agent or approval, a
/// malformed body, a rule, the role table), is counted in `/api/health` and audited with the
/// operation, its status and the reason. An unknown agent's 404 and an unknown approval are
/// among them.
#[test]
fn every_admin_route_counts_and_audits_its_refusals() {
    use shared::http::routes::{Access, ROUTES, Verb};
    let s = Server::start();
    let mut refused: Vec<(String, u16)> = Vec::new();
    for route in ROUTES.iter().filter(|r| r.access == Access::Admin) {
        let params = route.path.matches('{').count();
        let args: Vec<&str> = vec!["nothing-here-0"; params];
        let path = route.url(&args);
        let bad = s.health()["bad_requests"].as_u64().unwrap();
        let audited = s.audit().len();
        let (status, body) = match route.verb {
            Verb::Get => s.get_as(SAM, &path),
            Verb::Post => s.post_as(SAM, &path, &json!({})),
        };
        if !(400..500).contains(&status) {
            continue;
        }
        let name = route.name();
        assert_eq!(
            s.health()["bad_requests"].as_u64().unwrap(),
            bad + 1,
            "{name} answered {status} and was not counted: {body}"
        );
        let records = s.audit();
        let record = records[audited..]
            .iter()
            .find(|r| r["api"]["operation"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} answered {status} and was not audited: {body}"));
        assert_eq!(record["api"]["response"]["code"], status, "{record}");
        assert_eq!(record["status"], "Failure", "{record}");
        assert_eq!(record["actor"]["user"]["uid"], SAM, "{record}");
        refused.push((name, status));
    }
    for needle in [
        ("GET /api/agents/{agent}", 404),
        ("POST /api/approvals/{id}/approve", 404),
    ] {
        assert!(
            refused
                .iter()
                .any(|(n, st)| n == needle.0 && *st == needle.1),
            "{needle:?} not among the refusals: {refused:?}"
        );
    }
    assert!(refused.len() >= 10, "{refused:?}");
}

/// A client that trickles its request head, or holds connections open saying nothing, cannot
/// exhaust the server: the head must arrive within the header deadline (the connection is
/// closed otherwise), and past the connection cap the next client waits until a slot frees.
#[test]
fn slow_and_idle_connections_are_cut_off_and_capped() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let s = Server::start_with(
        Options::default()
            .env("STEWARD_HEADER_TIMEOUT", "1s")
            .env("STEWARD_MAX_CONNECTIONS", "4"),
    );
    let addr = s.base.trim_start_matches("http://").to_string();

    // Half a request head, then nothing: closed after the deadline, without an answer.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let n = slow.read(&mut buf).unwrap_or(0);
    let said = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        n == 0 || said.starts_with("HTTP/1.1 408"),
        "a trickled head is not answered: {said}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed at the deadline"
    );

    // A kept-alive connection waiting for its next request is closed at the same deadline.
    let mut kept = TcpStream::connect(&addr).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = kept.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle = std::time::Instant::now();
    let closed = loop {
        match kept.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue, // the rest of the first answer
            Err(_) => break false,
        }
    };
    assert!(
        closed && idle.elapsed() < Duration::from_secs(4),
        "kept alive too long"
    );

    // Four silent connections fill the cap; a fifth client is answered only once the header
    // deadline has closed them.
    let silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = TcpStream::connect(&addr).unwrap();
    let asked = std::time::Instant::now();
    fifth
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    fifth.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        asked.elapsed() >= Duration::from_millis(600),
        "the fifth connection waited for a slot ({:?})",
        asked.elapsed()
    );
    drop(silent);
    // And the server answers as before.
    assert_eq!(s.health()["status"], "ok");
}

/// An unauthenticated caller decides what it sends, not how much the audit trail grows: a
/// refused token request with a 200 KB client id (in the form or in Basic auth) writes a record
/// of a few KB that names a shortened id.
#[test]
fn a_huge_client_id_makes_a_small_refusal_record() {
    use base64::Engine as _;
    let s = Server::start();
    let huge = format!("dev_{}", "A".repeat(200_000));
    let form = s
        .http()
        .post(s.url("/oauth2/v1/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", huge.as_str()),
            ("client_secret", "wrong"),
        ])
        .send()
        .unwrap();
    assert_eq!(form.status().as_u16(), 401);
    let other = format!("dev_{}", "B".repeat(60_000));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{other}:wrong"));
    let header = s
        .http()
        .post(s.url("/oauth2/v1/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap();
    assert_eq!(header.status().as_u16(), 401);
    let refused: Vec<Value> = s
        .audit()
        .into_iter()
        .filter(|r| r["unmapped"]["steward_event"] == "token_refused")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    for r in &refused {
        let size = r.to_string().len();
        assert!(size < 4_000, "a {size}-byte record");
        assert!(r["user"]["uid"].as_str().unwrap().ends_with('…'), "{r}");
    }
}

/// `/health` is public and says only that the server answers: no queue depth, no dead letters,
/// no count of refused requests. The figures are at `/api/health`, which refuses a caller
/// without a token (counted there) and answers any signed-in person and automation.
#[test]
fn public_health_says_only_ok_and_its_figures_need_a_signed_in_caller() {
    let s = Server::start();
    let (status, public) = s.send(s.http().get(s.url("/health")));
    assert_eq!(status, 200, "{public}");
    assert_eq!(public, json!({"status": "ok"}));
    let (status, body) = s.send(s.http().get(s.url("/api/health")));
    assert_eq!(status, 401, "{body}");
    let (status, counts) = s.get_as(BOB, "/api/health");
    assert_eq!(status, 200, "{counts}");
    assert_eq!(counts["status"], "ok");
    assert_eq!(counts["queue_depth"], 0, "{counts}");
    assert_eq!(counts["dead_letters"], 0, "{counts}");
    assert!(
        counts["bad_requests"].as_u64().unwrap() >= 1,
        "the refused call is counted: {counts}"
    );
    assert_eq!(s.health()["status"], "ok", "automation reads it too");
}

/// A flood of refused unauthenticated requests is counted one by one but recorded once per
/// window (the same refusal) and within the window's budget (whatever the flood varies): the
/// trail grows by a few records, and the next record of the same refusal says how many went
/// unrecorded.
#[test]
fn a_flood_of_refusals_is_counted_but_recorded_within_a_budget() {
    let s = Server::start();
    let bad = s.health()["bad_requests"].as_u64().unwrap();
    let records = s.audit().len();
    let send = |token: &str| {
        s.http()
            .get(s.url("/api/agents"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // The same wrong token 50 times, then 300 different ones.
    for _ in 0..50 {
        assert_eq!(send("not-a-token"), 401);
    }
    for i in 0..300 {
        assert_eq!(send(&format!("not-a-token-{i}")), 401);
    }
    assert_eq!(
        s.health()["bad_requests"].as_u64().unwrap(),
        bad + 350,
        "every refusal is counted"
    );
    let written = s.audit().len() - records;
    assert!(
        written <= shared::http::REFUSAL_RECORDS as usize,
        "{written} records for 350 refusals"
    );
    assert!(written >= 1, "the first refusal is recorded");
}

/// RFC 6749 §2.3: a client uses one authentication method per request. A token request with
/// HTTP Basic and a secret (or another client id) in the form is refused as malformed, even
/// with the right secret, and issues nothing.
#[test]
fn a_token_request_with_two_authentication_methods_is_refused() {
    let s = Server::start();
    let agent = s.active_dev_agent("twomethods-agent-dev");
    let id = agent["client_id"].as_str().unwrap().to_string();
    let (_, secret) = s.vault_secret(agent["id"].as_str().unwrap());
    let both = |form: &[(&str, &str)]| {
        let resp = s
            .http()
            .post(s.url("/oauth2/v1/token"))
            .basic_auth(&id, Some(&secret))
            .form(form)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap())
    };
    let (status, body) = both(&[
        ("grant_type", "client_credentials"),
        ("client_secret", secret.as_str()),
    ]);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("one client authentication method")
    );
    let (status, body) = both(&[
        ("grant_type", "client_credentials"),
        ("client_id", "dev_other"),
    ]);
    assert_eq!(status, 400, "{body}");
    // Basic with the same id in the form (as some clients send it) is one method.
    let (status, body) = both(&[
        ("grant_type", "client_credentials"),
        ("client_id", id.as_str()),
    ]);
    assert_eq!(status, 200, "{body}");
}
