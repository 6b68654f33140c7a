//! The dev IdP's token endpoint under abuse and upkeep: failed client authentications held back
//! per client id and per address (never a right secret), and the signing key rotated with the
//! server stopped while tokens signed before keep verifying.

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

/// The ids of the keys in the server's JWKS, current first.
fn kids(s: &Server) -> Vec<String> {
    s.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

fn header_kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Verifies `token` with the key of the server's JWKS its header names, as a resource server
/// does; `issuer` is the server's URL when it was issued (each start is on a new port).
fn verify(s: &Server, token: &str, issuer: &str) -> Result<Value, String> {
    let kid = header_kid(token);
    let jwks = s.jwks();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("no key {kid} in the JWKS"))?;
    let key = jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["api://steward-agents"]);
    validation.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

fn rotate(s: &Server, force: bool) -> (bool, String, String) {
    let mut cmd = steward();
    cmd.args(["idp", "rotate-signing-key", "--data-dir"])
        .arg(&s.data_dir);
    if force {
        cmd.arg("--force");
    }
    let (out, stdout, stderr) = run(&mut cmd);
    let private = std::fs::read_to_string(s.data_dir.join("idp-signing-key.pem")).unwrap();
    let body = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    for text in [&stdout, &stderr] {
        assert!(!text.contains("BEGIN") && !text.contains(&body), "{text}");
    }
    (out.status.success(), stdout, stderr)
}

/// `steward idp rotate-signing-key` with the server stopped: a token issued before still
/// verifies with the JWKS after the restart, new tokens name the new key, and after a second
/// rotation the oldest key is gone. The command refuses while the server runs, and refuses a
/// second rotation within the longest token lifetime unless forced.
#[test]
fn the_signing_key_rotates_with_the_server_stopped() {
    let mut s = Server::start();
    let agent = s.active_dev_agent("keyturn-agent-dev");
    let client = agent["client_id"].as_str().unwrap().to_string();
    let (_, secret) = s.vault_secret(agent["id"].as_str().unwrap());
    let first_issuer = s.base.clone();
    let (_, before) = s.token_ok(&client, &secret, None);
    let before = before["access_token"].as_str().unwrap().to_string();
    let first = kids(&s);
    assert_eq!(first.len(), 1);
    assert_eq!(header_kid(&before), first[0]);

    let (ok, _, stderr) = rotate(&s, false);
    assert!(!ok, "a rotation while the server runs is refused");
    assert!(
        stderr.contains("in use by a running `steward serve`"),
        "{stderr}"
    );

    s.kill();
    let (ok, stdout, stderr) = rotate(&s, false);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("signing key rotated"), "{stdout}");
    s.spawn(&Options::default());
    let second = kids(&s);
    assert_eq!(second.len(), 2, "{second:?}");
    assert_eq!(second[1], first[0], "the previous key is still served");
    assert!(stdout.contains(&second[0]), "{stdout}");
    verify(&s, &before, &first_issuer).expect("a token issued before the rotation verifies");
    let second_issuer = s.base.clone();
    let (_, after) = s.token_ok(&client, &secret, None);
    let after = after["access_token"].as_str().unwrap().to_string();
    assert_eq!(header_kid(&after), second[0]);
    verify(&s, &after, &second_issuer).unwrap();

    // Tokens the first key signed may live on (people's for an hour): it stays unless forced.
    s.kill();
    let (ok, _, stderr) = rotate(&s, false);
    assert!(!ok);
    assert!(stderr.contains("--force"), "{stderr}");
    let (ok, stdout, stderr) = rotate(&s, true);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("key {} is no longer served", first[0])),
        "{stdout}"
    );
    s.spawn(&Options::default());
    let third = kids(&s);
    assert_eq!(third.len(), 2);
    assert_eq!(third[1], second[0]);
    assert!(
        !third.contains(&first[0]),
        "the oldest key is gone: {third:?}"
    );
    let gone = verify(&s, &before, &first_issuer).unwrap_err();
    assert!(gone.contains("no key"), "{gone}");
    verify(&s, &after, &second_issuer).expect("the previous key still verifies");
    let (_, newest) = s.token_ok(&client, &secret, None);
    assert_eq!(
        header_kid(newest["access_token"].as_str().unwrap()),
        third[0]
    );
    #[cfg(unix)]
    for file in ["idp-signing-key.pem", "idp-signing-key.previous.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.data_dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}
