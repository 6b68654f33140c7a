//! The dev IdP's token endpoint under abuse: failed client authentications held back per client
//! id and per address, never a right secret.

use crate::support::*;
use serde_json::Value;

/// A client_credentials request with Basic auth: (status, body, Retry-After, Cache-Control).
fn token_request(s: &Server, id: &str, secret: &str) -> (u16, Value, Option<u64>, String) {
    let resp = s
        .http()
        .post(s.url("/oauth2/v1/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .expect("POST /oauth2/v1/token");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let retry_after = header("retry-after").map(|v| v.parse().expect("whole seconds"));
    let cache = header("cache-control").unwrap_or_default();
    let status = resp.status().as_u16();
    (status, resp.json().expect("JSON"), retry_after, cache)
}

fn token_refusals(s: &Server) -> usize {
    s.audit()
        .iter()
        .filter(|r| r["unmapped"]["steward_event"] == "token_refused")
        .count()
}

/// A burst of wrong secrets for one client is answered 401 up to the per-client limit, then 429
/// `slow_down` with `Retry-After`; failures naming many client ids from one address hit the
/// per-address limit. Meanwhile every request with the right secret gets its token, the victim's
/// own included, every refusal is counted and the audit trail grows by a few records only.
#[test]
fn failed_client_authentications_are_held_back_but_right_secrets_never_are() {
    let s = Server::start_with(
        Options::default()
            .env("STEWARD_TOKEN_FAILURES_PER_CLIENT", "5")
            .env("STEWARD_TOKEN_FAILURES_PER_ADDRESS", "12"),
    );
    let secret_of = |agent: &Value| {
        let id = agent["client_id"].as_str().unwrap().to_string();
        (id, s.vault_secret(agent["id"].as_str().unwrap()).1)
    };
    let (victim, victim_secret) = secret_of(&s.active_dev_agent("victim-agent-dev"));
    let (bystander, bystander_secret) = secret_of(&s.active_dev_agent("bystander-agent-dev"));
    let bad_before = s.health()["bad_requests"].as_u64().unwrap();
    let records_before = token_refusals(&s);
    let mut refused = 0;

    for i in 0..5 {
        let (status, body, retry_after, _) = token_request(&s, &victim, "not-the-secret");
        assert_eq!((status, retry_after), (401, None), "failure {i}: {body}");
        assert_eq!(body["error"], "invalid_client");
        refused += 1;
    }
    let (status, body, retry_after, cache) = token_request(&s, &victim, "not-the-secret");
    refused += 1;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "slow_down");
    let why = body["error_description"].as_str().unwrap();
    assert!(why.contains("for this client id"), "{why}");
    let wait = retry_after.expect("a 429 says when to try again");
    assert!((1..=12).contains(&wait), "Retry-After {wait}");
    assert_eq!(cache, "no-store");

    // The right secret is never held back: not the victim's, not anyone else's.
    assert_eq!(token_request(&s, &victim, &victim_secret).0, 200);
    s.token_ok(&bystander, &bystander_secret, None);
    // Another client's failures have a bucket of their own.
    assert_eq!(token_request(&s, &bystander, "not-the-secret").0, 401);
    refused += 1;

    // Failures naming ever new client ids from this address: 401 until the address's limit
    // (12 a minute, 7 spent above), then 429.
    let mut answered: usize = 0;
    let held = loop {
        let (status, body, retry_after, _) =
            token_request(&s, &format!("dev_{answered:016x}"), "guess");
        refused += 1;
        if status == 429 {
            assert!(retry_after.is_some_and(|w| w >= 1), "{body}");
            break body;
        }
        assert_eq!(status, 401, "{body}");
        answered += 1;
        assert!(answered <= 12, "the address was never held back");
    };
    assert!(answered >= 5, "held back after {answered} new client ids");
    let why = held["error_description"].as_str().unwrap();
    assert!(why.contains("from this address"), "{why}");
    assert_eq!(token_request(&s, &bystander, &bystander_secret).0, 200);
    assert_eq!(token_request(&s, &victim, &victim_secret).0, 200);

    // A flood goes on being answered and counted, and recorded within the refusal budget. (A
    // slow machine may see a bucket refill in the middle: a 401 now and then.)
    let mut held_back = 0;
    for _ in 0..150 {
        let (status, body, _, _) = token_request(&s, &victim, "not-the-secret");
        assert!(status == 429 || status == 401, "{body}");
        held_back += usize::from(status == 429);
        refused += 1;
    }
    assert!(held_back >= 140, "{held_back} of 150 held back");
    assert_eq!(
        s.health()["bad_requests"].as_u64().unwrap(),
        bad_before + refused,
        "every refusal is counted"
    );
    let written = token_refusals(&s) - records_before;
    assert!(
        (1..=answered + 8).contains(&written),
        "{written} records for {refused} refusals"
    );
    let records = s.audit();
    let recorded: Vec<&Value> = records
        .iter()
        .filter(|r| r["unmapped"]["steward_event"] == "token_refused")
        .filter(|r| r["message"].as_str().unwrap_or("").contains("slow_down"))
        .collect();
    assert!(!recorded.is_empty(), "a held-back request is recorded");
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(&victim_secret) && !text.contains(&bystander_secret));
}
