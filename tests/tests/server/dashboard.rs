//! The dashboard against a real `steward serve`, over HTTP as a browser speaks it (cookies,
//! forms, redirects): signing in at the dev IdP with the authorization code and PKCE, the
//! session cookie's attributes, the page headers, the approvals inbox, and the refusals of a
//! requester's forged decision, a form without its anti-forgery token and a cross-site form.

use crate::support::*;
use reqwest::blocking::Client;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;
use std::time::Duration;

const NAME: &str = "datadog-triage-agent-prod";

fn browser() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookies(r: &reqwest::blocking::Response) -> Vec<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn location(r: &reqwest::blocking::Response) -> String {
    r.headers()[LOCATION].to_str().unwrap().to_string()
}

/// Signs `person` in through the dashboard as a browser does; returns the session cookie
/// (`name=value`).
fn sign_in(s: &Server, person: &str) -> String {
    s.set_password(person);
    let b = browser();
    let start = b
        .get(s.url("/sign-in?return_to=%2Fapprovals"))
        .send()
        .unwrap();
    assert_eq!(start.status().as_u16(), 303);
    let pending = set_cookies(&start)
        .into_iter()
        .find(|c| c.starts_with("steward_sign_in="))
        .expect("the sign-in is bound to this browser");
    assert!(
        pending.contains("HttpOnly") && pending.contains("SameSite=Lax"),
        "{pending}"
    );
    let pending = pending.split(';').next().unwrap().to_string();
    let authorize = reqwest::Url::parse(&location(&start)).unwrap();
    assert!(
        authorize
            .as_str()
            .starts_with(&s.url("/oauth2/v1/authorize"))
    );
    let params: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("code_challenge_method"), "S256");
    assert_eq!(get("client_id"), "steward-dashboard");
    let mut form = params.clone();
    form.push(("email".into(), person.into()));
    form.push(("password".into(), Server::password_of(person)));
    let back = b
        .post(s.url("/oauth2/v1/authorize"))
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(back.status().as_u16(), 303, "{}", back.text().unwrap());
    let callback = location(&back);
    assert!(callback.starts_with(&s.url("/auth/callback")), "{callback}");
    // The issuer's answer in another browser (without the sign-in cookie) opens nothing.
    let stolen = b.get(&callback).send().unwrap();
    assert_eq!(stolen.status().as_u16(), 400);
    assert!(
        set_cookies(&stolen)
            .iter()
            .all(|c| !c.starts_with("steward_session="))
    );
    let done = b.get(&callback).header(COOKIE, &pending).send().unwrap();
    assert_eq!(done.status().as_u16(), 303);
    assert_eq!(location(&done), "/approvals");
    let session = set_cookies(&done)
        .into_iter()
        .find(|c| c.starts_with("steward_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attribute), "{session} lacks {attribute}");
    }
    assert!(
        !session.contains("Secure"),
        "on loopback http the cookie cannot be Secure: {session}"
    );
    session.split(';').next().unwrap().to_string()
}

fn page(s: &Server, cookie: &str, path: &str) -> (u16, String) {
    let r = browser()
        .get(s.url(path))
        .header(COOKIE, cookie)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    (status, r.text().unwrap())
}

/// The value of the hidden input `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no hidden {name} in the page"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn post(
    s: &Server,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
    site: Option<&str>,
) -> (u16, String) {
    let mut r = browser()
        .post(s.url(path))
        .header(COOKIE, cookie)
        .form(form);
    if let Some(site) = site {
        r = r.header("sec-fetch-site", site);
    }
    let r = r.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

#[test]
fn an_approver_decides_in_the_inbox_and_the_requester_cannot() {
    let s = Server::start();
    // A page without a session sends the browser to sign in, and back.
    let r = browser().get(s.url("/approvals")).send().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(location(&r), "/sign-in?return_to=%2Fapprovals");

    let mut body = agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    );
    body["token_lifetime_secs"] = json!(900);
    let started = s.request_ok(&body);
    let approval = s.pending_approval(started["workflow_id"].as_str().unwrap());
    let id = approval["request"]["id"].as_str().unwrap().to_string();
    let action = format!("/approvals/{id}/approve");

    // The requester sees the request but no Approve button, and a forged POST is refused by
    // the engine's rule (requester ≠ approver), audited with source `dashboard`.
    let alice = sign_in(&s, ALICE);
    let (status, html) = page(&s, &alice, "/approvals");
    assert_eq!(status, 200);
    assert!(html.contains(NAME), "the request is listed");
    assert!(!html.contains(&action), "no Approve form for the requester");
    let csrf = hidden(&html, "csrf");
    let (status, html) = post(
        &s,
        &alice,
        &action,
        &[("csrf", &csrf), ("reason", "mine")],
        Some("same-origin"),
    );
    assert!(
        status >= 400,
        "the requester's own approval is refused: {status} {html}"
    );
    assert!(
        html.contains("requester") || html.contains("approver"),
        "the page says why: {html}"
    );
    assert_eq!(s.pending_approval_by_id(&id)["status"], "pending");
    let audited = s.audit().into_iter().find(|r| {
        r["unmapped"]["source"] == "dashboard"
            && r["unmapped"]["principal"]["id"] == ALICE
            && r["api"]["operation"] == "POST /api/approvals/{id}/approve"
    });
    let audited =
        audited.unwrap_or_else(|| panic!("the forged decision is audited: {:?}", s.audit()));
    assert_eq!(
        audited["unmapped"]["principal"]["via"], "dashboard-session",
        "{audited}"
    );
    assert!(
        audited["unmapped"]["status"].as_u64().unwrap() >= 400,
        "{audited}"
    );

    // Sam, an approver: the inbox asks him, with the scope diff; a form without the token and
    // a cross-site form are refused and change nothing.
    let sam = sign_in(&s, SAM);
    let (_, html) = page(&s, &sam, "/approvals");
    assert!(html.contains(&action), "the approver gets the Approve form");
    assert!(html.contains("datadog:monitors:write"));
    let csrf = hidden(&html, "csrf");
    let hash = hidden(&html, "action_hash");
    let (status, _) = post(&s, &sam, &action, &[("reason", "no token")], None);
    assert_eq!(status, 403);
    let refused = s.audit().into_iter().any(|r| {
        r["unmapped"]["steward_event"] == "refused"
            && r["message"]
                .as_str()
                .unwrap_or("")
                .contains("no anti-forgery token")
            && r.to_string().contains(SAM)
    });
    assert!(
        refused,
        "the refused form is audited with the person: {:?}",
        s.audit_failures()
    );
    let (status, _) = post(
        &s,
        &sam,
        &action,
        &[("csrf", "forged"), ("reason", "x")],
        None,
    );
    assert_eq!(status, 403);
    let (status, _) = post(
        &s,
        &sam,
        &action,
        &[("csrf", &csrf), ("reason", "x")],
        Some("cross-site"),
    );
    assert_eq!(status, 403);
    let (status, _) = post(
        &s,
        &alice,
        &action,
        &[("csrf", &csrf), ("reason", "x")],
        None,
    );
    assert_eq!(status, 403, "one session's token does not serve another");
    assert_eq!(
        s.pending_approval_by_id(&id)["status"],
        "pending",
        "nothing changed"
    );

    let (status, html) = post(
        &s,
        &sam,
        &action,
        &[
            ("csrf", &csrf),
            ("action_hash", &hash),
            ("reason", "needed for on-call"),
        ],
        Some("same-origin"),
    );
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("is recorded"), "{html}");
    let agent = s.wait_agent_status(NAME, "active");
    assert!(agent["client_id"].is_string(), "{agent}");

    // Signing out ends the session on the server: the old cookie opens nothing.
    let (status, _) = post(
        &s,
        &sam,
        "/sign-out",
        &[("csrf", &csrf)],
        Some("same-origin"),
    );
    assert_eq!(status, 303);
    let r = browser()
        .get(s.url("/approvals"))
        .header(COOKIE, &sam)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "signed out");
}

#[test]
fn agent_pages_offer_what_the_role_table_allows_and_the_api_decides() {
    let s = Server::start();
    let name = "metrics-reader-agent-dev";
    let agent = s.active_dev_agent(name);
    let id = agent["id"].as_str().unwrap().to_string();

    // The owner: the inventory lists the agent, the CSV export has it, the page offers actions.
    let alice = sign_in(&s, ALICE);
    let (status, html) = page(&s, &alice, "/agents?owner=alice%40example.com");
    assert_eq!(status, 200);
    assert!(html.contains(name), "{html}");
    // Sorted by name, a page at a time: a second agent of Alice's comes first.
    s.active_dev_agent("aaa-metrics-agent-dev");
    let (status, html) = page(&s, &alice, "/agents?sort=name");
    assert_eq!(status, 200);
    let (first, second) = (
        html.find("aaa-metrics-agent-dev").expect("listed"),
        html.find(name).expect("listed"),
    );
    assert!(first < second, "sorted by name");
    let csv = browser()
        .get(s.url("/agents.csv?owner=alice%40example.com"))
        .header(COOKIE, &alice)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(csv.starts_with("id,name,owner"), "{csv}");
    assert!(csv.contains(name), "{csv}");
    let (status, html) = page(&s, &alice, &format!("/agents/{id}"));
    assert_eq!(status, 200);
    for action in ["/rotate", "/freeze", "/decommission"] {
        assert!(
            html.contains(&format!("/act/api/agents/{id}{action}")),
            "owner lacks {action}"
        );
    }
    let alice_csrf = hidden(&html, "csrf");

    // Bob, unrelated: the page shows no action, and a forged freeze is refused by the role table.
    let bob = sign_in(&s, BOB);
    let (_, html) = page(&s, &bob, &format!("/agents/{id}"));
    assert!(!html.contains("/act/api/agents/"), "Bob is offered actions");
    let bob_csrf = hidden(&html, "csrf");
    let (status, html) = post(
        &s,
        &bob,
        &format!("/act/api/agents/{id}/freeze"),
        &[("csrf", &bob_csrf), ("reason", "not mine")],
        Some("same-origin"),
    );
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("owner"), "the refusal says who may: {html}");
    assert_eq!(s.agent(name)["status"], "active");
    // Only the admin API is reachable through the action form, and a path that is not one is
    // refused with a page, not a dropped connection.
    let (status, _) = post(
        &s,
        &bob,
        "/act/sign-out",
        &[("csrf", &bob_csrf)],
        Some("same-origin"),
    );
    assert_eq!(status, 404);
    let r = browser()
        .post(s.url("/act/api/agents/a%20b%0A/freeze"))
        .header(COOKIE, &bob)
        .header("sec-fetch-site", "same-origin")
        .header("hx-request", "true")
        .form(&[("csrf", bob_csrf.as_str()), ("reason", "x")])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Sent by htmx, the refusal's page keeps the address of the page it replaces.
    assert_eq!(r.headers()["hx-push-url"], "false");

    // The owner freezes from the page: back on the page with the notice, the agent frozen.
    let r = browser()
        .post(s.url(&format!("/act/api/agents/{id}/freeze")))
        .header(COOKIE, &alice)
        .form(&[
            ("csrf", alice_csrf.as_str()),
            ("reason", "investigating"),
            ("return_to", &format!("/agents/{id}")),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(location(&r), format!("/agents/{id}?done=freeze"));
    s.wait_agent_status(name, "frozen");
    let (_, html) = page(&s, &alice, &format!("/agents/{id}?done=freeze"));
    assert!(html.contains("The freeze is requested."), "{html}");
    assert!(
        html.contains("investigating"),
        "the freeze and its reason show: {html}"
    );

    // The audit trail is for security: Alice is refused, Sam sees the chain verified.
    let (status, _) = page(&s, &alice, "/audit");
    assert_eq!(status, 403);
    let sam = sign_in(&s, SAM);
    let (status, html) = page(&s, &sam, "/audit?q=freeze");
    assert_eq!(status, 200);
    assert!(html.contains("Hash chain verified"), "{html}");
    assert!(html.contains("freeze"), "{html}");
    let (status, html) = page(&s, &sam, "/campaigns");
    assert_eq!(status, 200, "{html}");

    // The agent's page holds the records its workflows wrote, for readers of the trail only.
    let (_, html) = page(&s, &sam, &format!("/agents/{id}"));
    assert!(html.contains("Audit records"), "{html}");
    assert!(
        html.contains("freeze_requested") || html.contains("frozen"),
        "the freeze's records show: {html}"
    );
    let (_, html) = page(&s, &alice, &format!("/agents/{id}"));
    assert!(!html.contains("Audit records"), "Alice reads no trail");

    // An access review: Sam launches a campaign, Alice keeps her other agent; its page shows the
    // review with the decision, who made it and why.
    let other = s.agent("aaa-metrics-agent-dev")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, html) = page(&s, &alice, &format!("/agents/{other}"));
    assert!(html.contains("Never reviewed."), "{html}");
    let (status, body) = s.post_as(SAM, "/api/campaigns", &json!({"id": "dash-q4"}));
    assert!(status < 300, "{status} {body}");
    // The item waits in Alice's inbox; she answers it there.
    let action = format!("/act/api/reviews/review-dash-q4-{other}/decision");
    let inbox = wait_until(
        "the review item is in the inbox",
        Duration::from_secs(30),
        || {
            let (_, html) = page(&s, &alice, "/approvals");
            html.contains(&action).then_some(html)
        },
    );
    assert!(inbox.contains("aaa-metrics-agent-dev"), "{inbox}");
    let (_, html) = page(&s, &bob, "/approvals");
    assert!(
        !html.contains(&action),
        "Bob is offered Alice's review: {html}"
    );
    let (status, html) = post(
        &s,
        &alice,
        &action,
        &[
            ("csrf", &hidden(&inbox, "csrf")),
            ("return_to", "/approvals"),
            ("decision", "keep"),
            ("drop[]", ""),
            ("reason", "still feeds the on-call dashboards"),
        ],
        Some("same-origin"),
    );
    assert!(status < 400, "{status} {html}");
    let (_, html) = page(&s, &alice, "/approvals");
    assert!(!html.contains(&action), "the answered item is gone: {html}");
    let (_, html) = page(&s, &alice, &format!("/agents/{other}"));
    assert!(html.contains("Access reviews"), "{html}");
    assert!(
        html.contains("still feeds the on-call dashboards"),
        "{html}"
    );
    assert!(html.contains("dash-q4"), "{html}");
    assert!(html.contains(&format!("{ALICE}, ")), "who decided: {html}");

    // Alice rotates it from its page: the rotation's receipt shows there once the new secret
    // is current.
    let (_, html) = page(&s, &alice, &format!("/agents/{other}"));
    let (status, _) = post(
        &s,
        &alice,
        &format!("/act/api/agents/{other}/rotate"),
        &[
            ("csrf", &hidden(&html, "csrf")),
            ("return_to", &format!("/agents/{other}")),
        ],
        Some("same-origin"),
    );
    assert_eq!(status, 303);
    s.wait("the rotation's receipt", Duration::from_secs(20), || {
        let a = s.agent("aaa-metrics-agent-dev");
        (a["credentials"].as_array().is_some_and(|c| !c.is_empty())).then_some(())
    });
    let (_, html) = page(&s, &alice, &format!("/agents/{other}"));
    assert!(
        html.contains("Receipts of the completed rotations"),
        "{html}"
    );
    assert!(html.contains("in its grace period"), "{html}");

    // The overview follows the campaign's progress and counts failing rotations.
    let (_, html) = page(&s, &sam, "/");
    assert!(html.contains("dash-q4"), "{html}");
    assert!(html.contains(" answered"), "{html}");
    assert!(
        html.contains("0</strong> rotations failed for good"),
        "{html}"
    );

    // The inventory sorts by owner (an indexed order) and shows when each agent last got a token.
    let (status, html) = page(&s, &alice, "/agents?sort=owner");
    assert_eq!(status, 200);
    assert!(html.contains("Last token"), "{html}");
}

#[test]
fn the_overview_counts_and_links_bearer_only_agents() {
    // A sweep every second keeps the posture summary current.
    let s = Server::start_with(Options::default().env("STEWARD_SWEEP", "1s"));
    let name = "bearer-metrics-agent-dev";
    let agent = s.active_dev_agent(name);
    assert_eq!(agent["credential_kind"], "secret", "{agent}");
    assert_eq!(agent["token_binding"], "none", "{agent}");
    let id = agent["id"].as_str().unwrap();
    // Sam owns no agent: the name shows only where the overview names bearer-only agents.
    let sam = sign_in(&s, SAM);
    let html = wait_until(
        "the posture summary to count the agent",
        Duration::from_secs(30),
        || {
            let (_, html) = page(&s, &sam, "/");
            html.contains(name).then_some(html)
        },
    );
    assert!(html.contains("Bearer-only agents"), "{html}");
    assert!(
        html.contains("<strong>1</strong> of 1 active agents get bearer tokens"),
        "{html}"
    );
    assert!(
        html.contains("0 have tokens bound to their key or certificate, and 0 hold their own key"),
        "{html}"
    );
    assert!(
        html.contains(&format!("<a href=\"/agents/{id}\">{name}</a> (dev)")),
        "{html}"
    );
}
