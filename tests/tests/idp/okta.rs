//! The Okta adapter against the local fake Okta: the port's contract, then what only Okta has
//! (rate limits, pagination, its error codes, its two ways of authenticating Steward), and
//! discovery on Okta while Steward creates an app (Okta reports Steward's own apps too).

use super::conformance::{self, Caps};
use super::fake_okta::{API_TOKEN, FakeOkta, Fault};
use serde_json::{Value, json};
use shared::Secret;
use shared::agent_key::AgentKeyPair;
use shared::embedded::Durability;
use shared::idp::okta::{
    MANAGEMENT_SCOPES, Okta, OktaAuth, OktaSettings, OktaSettingsError, SigningKey,
};
use shared::inbound::okta_events::received;
use shared::intake;
use shared::ports::idp::{
    ClientInfo, ClientKey, ClientSpec, IdentityProvider, IdpError, TokenBinding,
};
use shared::wiring::embedded::{Embedded, EmbeddedConfig};
use shared::{Engine, EngineConfig};
use statemachines::{AgentRequest, AgentStatus};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// A throwaway RSA key pair for the OAuth for Okta tests (generated for these tests only).
const SERVICE_APP_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDIqa+DS9YyHhTu\n\
y/sxkX/mzhtyMhQLrD3oX7JmfLUsYE451Ctl8zK5lS1d49rWFujjWBN7DeBqk8mP\n\
d5/tn3Sj7Q1g4xQqQOdMZ4Gp2oDbvM294ixsDwsksRf45wMmUegAce0H0xpM+d5H\n\
eWKKyAChjzMXL9oI4mlcouHgj+/IIuXz4lIuu40q1xzMhOGR421j3wLhcrfuZTva\n\
Gxuytd1fO1PSXTt+Ffy6AjaAy+Q+4btB4pjy33O2wUHyZdd+UDErHxdUNrQ6auMb\n\
sb0iciRKaPkvEcrVXQx8YGqRofG1B4ff3IkmcU0U4/iiEpX/yHtgAHERKj3sNxi2\n\
0XWVBRNVAgMBAAECggEAMehiStmV0KlCs5HwTAfQM+uXT/O8oJqaWy1SBcOGnB7n\n\
1eI7WQP/3cCIpA2D5DOWgNTrI3P0GQ3g19n84PED5bGT3kEcRtYVsR8dVM2Ptxdi\n\
ZJPYUJf9QYb6W2G5mtJMTbAIMCYFKJgM/OHn7HSKE6S2JFI2fHczlWK9o0ipbrEu\n\
DChvSrNoKCZ0vwPgaW72EEpvSPmdyRrCimjbco/PeJcvlJlA3IDkXmHGLO4jVkRW\n\
FWcgo49maJaIrphzkAh1TclvTfUOq99ecKNN0oAsbXRjY5aYNEam9Dak1dZjmou8\n\
ria43L0037Xdx2GseRihExsOLzSj/d5dWsWqPFGFEQKBgQD6Q0dhzIXaPUa9qWBD\n\
HyDjw1jHUT4FIJlbpdza6TjTCNGfRuq2/1/EhtvW9fF00pIaCgnpMEB+92eg9V0Z\n\
H9Ry4R7YqcWR/PcYoIR6ky8KOUFBkwq391UdxsJDtTQ4kfG/Ld9MT01HY7Ll4+7h\n\
/PM3PKF2x63gPaNnt1Z37NJE1wKBgQDNQ1GSSitZ6oHokaMm0IAUaaw/J0dgRpg9\n\
2nrY43IT0UBNhRbWUxXyWmFKpJr7Efpf6y85LDlnlh+/8SSaTTT8Ehvuo9cFc/Mo\n\
ZmsJzYzfLVl1hWFqRUQAoa2W7ZdaAn2kGmitzY8r36MSaLXETSJgqd79JDAcz2VX\n\
RSpf0Rl3swKBgC/pn4nuwRWWM6vt+HsBQ6e3Z5DJUgljQ1kTeSQEEJf+kTtgNWGR\n\
pMEYXJBcB70o70XC9EDLtx1XumRLdWZw/Jh91wz9+9BGUPxLBvH8qb3YVlD6mMu9\n\
s3L+8YRK9dN6xYCnhJ+0cwQe50oyCDMF3X6Owg7ejcBnrJgXtptBIMSDAoGASFJG\n\
xGdznMu+l+XweTWPWyHceafqQya8b1ayYAbLY+YfZPDWmg9ONUTY8MbMgFfWQsOH\n\
sPo/A5tmdmeNgPxhBcuPoeaCVT6EVyC26A5Pazb8RScIqrva+On+UqZF5IXqJM7V\n\
QR+jKU8zksHoAVE4IpzXn5OHjC8awsPw6S+wbHcCgYAbtWXqM6Tu9hLsZym2Uy16\n\
OO2Hl82w1rkuClXeMoNKDv7dlJwd5xygbx7SR006kCjPLC2el8145NQAEXJtizlh\n\
tLrkGin+MTQ2C8lkSqlsghPdDalhmqY9u1OoowyxD/0IEhL356FDOoTbRyYAumnc\n\
lLi+xGgtGqwEmoHBCyxAKQ==\n\
-----END PRIVATE KEY-----\n";
const SERVICE_APP_PUBLIC_KEY: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAyKmvg0vWMh4U7sv7MZF/\n\
5s4bcjIUC6w96F+yZny1LGBOOdQrZfMyuZUtXePa1hbo41gTew3gapPJj3ef7Z90\n\
o+0NYOMUKkDnTGeBqdqA27zNveIsbA8LJLEX+OcDJlHoAHHtB9MaTPneR3liisgA\n\
oY8zFy/aCOJpXKLh4I/vyCLl8+JSLruNKtcczIThkeNtY98C4XK37mU72hsbsrXd\n\
XztT0l07fhX8ugI2gMvkPuG7QeKY8t9ztsFB8mXXflAxKx8XVDa0OmrjG7G9InIk\n\
Smj5LxHK1V0MfGBqkaHxtQeH39yJJnFNFOP4ohKV/8h7YABxESo97DcYttF1lQUT\n\
VQIDAQAB\n\
-----END PUBLIC KEY-----\n";

fn settings(fake: &FakeOkta) -> OktaSettings {
    let mut s = OktaSettings::new(&fake.base, OktaAuth::ApiToken(Secret::new(API_TOKEN))).unwrap();
    // Short, so the retry tests stay fast.
    s.backoff_base = Duration::from_millis(20);
    s.max_attempts = 3;
    s.max_rate_limit_wait = Duration::from_secs(10);
    s
}

pub fn okta(fake: &FakeOkta) -> Okta {
    Okta::new(settings(fake)).unwrap()
}

fn spec(name: &str, scopes: &[&str]) -> ClientSpec {
    ClientSpec {
        agent_id: format!("agent-{name}"),
        name: format!("okta-test {name}"),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        token_lifetime_secs: 900,
    }
}

fn provider_code(e: &IdpError) -> (u16, &str, &str) {
    match e {
        IdpError::Provider {
            status,
            code,
            summary,
        } => (*status, code.as_str(), summary.as_str()),
        other => panic!("expected Okta's error answer, got {other:?}"),
    }
}

#[tokio::test]
async fn okta_follows_the_identity_provider_contract() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let caps = Caps {
        max_secrets: 2,
        lifecycle: true,
    };
    conformance::run(&okta, caps, "okta", ["agents.read", "agents.write"]).await;
    fake.assert_well_formed();
    // Steward's SSWS token on every Management API call; agents' Basic auth at the token
    // endpoint (the custom `default` authorization server).
    let calls = fake.calls();
    assert!(calls.len() > 30, "{} calls", calls.len());
    for c in &calls {
        let auth = c.authorization.as_deref().unwrap_or("");
        if c.path.starts_with("/api/") {
            assert_eq!(auth, format!("SSWS {API_TOKEN}"), "{} {}", c.method, c.path);
        } else {
            assert_eq!(c.path, "/oauth2/default/v1/token");
            assert!(auth.starts_with("Basic "), "{auth}");
        }
    }
}

#[tokio::test]
async fn create_client_makes_a_service_app_with_its_grants() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let created = okta
        .create_client(
            &spec("inventory", &["inventory.read", "inventory.write"]),
            "k-1",
        )
        .await
        .unwrap();
    let app = fake
        .app(&created.client_id)
        .expect("the app exists at Okta");
    assert_eq!(app["signOnMode"], "OPENID_CONNECT");
    assert_eq!(app["label"], "okta-test inventory");
    assert_eq!(app["status"], "ACTIVE");
    assert_eq!(
        app["settings"]["oauthClient"]["grant_types"],
        json!(["client_credentials"])
    );
    assert_eq!(
        app["settings"]["oauthClient"]["application_type"],
        "service"
    );
    assert_eq!(
        app["credentials"]["oauthClient"]["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    assert_eq!(app["profile"]["stewardAgentId"], "agent-inventory");
    assert_eq!(app["profile"]["stewardTokenLifetimeSecs"], 900);
    // The first secret is the one Okta made with the app.
    assert_eq!(
        fake.secret_values(&created.client_id),
        vec![created.secret.expose().to_string()]
    );
    assert_eq!(
        okta.secret_ids(&created.client_id).await.unwrap(),
        vec![created.secret_id.clone()]
    );
    let info = okta.client(&created.client_id).await.unwrap().unwrap();
    assert_eq!(info.scopes, vec!["inventory.read", "inventory.write"]);
    assert_eq!(info.token_lifetime_secs, 900);
    assert_eq!(info.name, "okta-test inventory");
    // Steward's mark, in the profile from the create on.
    assert_eq!(app["profile"]["stewardIdempotencyKey"], "k-1");
    assert_eq!(info.steward_key.as_deref(), Some("k-1"));
    let grants = fake.calls_to(
        "POST",
        &format!("/api/v1/apps/{}/grants", created.client_id),
    );
    assert_eq!(grants.len(), 2);
    fake.assert_well_formed();
}

#[tokio::test]
async fn a_repeated_create_finds_the_app_and_replaces_its_secret() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let s = spec("repeat", &["a.read"]);
    let first = okta.create_client(&s, "k-repeat").await.unwrap();
    let again = okta.create_client(&s, "k-repeat").await.unwrap();
    assert_eq!(first.client_id, again.client_id);
    assert_eq!(fake.app_count(), 1, "a second app was created");
    assert_ne!(first.secret.expose(), again.secret.expose());
    assert_eq!(
        fake.secret_values(&again.client_id),
        vec![again.secret.expose().to_string()],
        "the lost first secret must not stay valid"
    );
    // A different key is a different client.
    let other = okta.create_client(&s, "k-other").await.unwrap();
    assert_ne!(other.client_id, first.client_id);
}

#[tokio::test]
async fn app_creation_is_not_retried_after_a_server_error() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    fake.inject(Fault {
        method: Some("POST".into()),
        path_prefix: "/api/v1/apps".into(),
        status: 500,
        times: 1,
        ..Fault::default()
    });
    let s = spec("no-retry", &["a.read"]);
    let err = okta.create_client(&s, "k-5xx").await.unwrap_err();
    assert!(matches!(err, IdpError::Unavailable(_)), "{err:?}");
    assert_eq!(
        fake.calls_to("POST", "/api/v1/apps").len(),
        1,
        "create was repeated"
    );
    // The caller's repeat with the same key creates it once.
    let created = okta.create_client(&s, "k-5xx").await.unwrap();
    okta.test_secret(&created.client_id, &created.secret)
        .await
        .unwrap();
    assert_eq!(fake.app_count(), 1);
}

#[tokio::test]
async fn secret_creation_is_not_retried_after_a_server_error() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let created = okta
        .create_client(&spec("sec5xx", &["a.read"]), "k")
        .await
        .unwrap();
    let path = format!("/api/v1/apps/{}/credentials/secrets", created.client_id);
    fake.inject(Fault {
        method: Some("POST".into()),
        path_prefix: path.clone(),
        status: 500,
        times: 1,
        ..Fault::default()
    });
    let err = okta
        .add_secret(&created.client_id, "rot-1")
        .await
        .unwrap_err();
    assert!(matches!(err, IdpError::Unavailable(_)), "{err:?}");
    assert_eq!(fake.calls_to("POST", &path).len(), 1);
}

#[tokio::test]
async fn reads_are_retried_after_server_errors_then_unavailable() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let id = fake.seed_app("retry", &["client_credentials"]);
    let path = format!("/api/v1/apps/{id}/credentials/secrets");

    fake.fail_next(2);
    assert_eq!(okta.secret_ids(&id).await.unwrap().len(), 1);
    let statuses: Vec<u16> = fake
        .calls_to("GET", &path)
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, vec![500, 500, 200], "two failures, then success");

    fake.fail_next(10);
    let err = okta.secret_ids(&id).await.unwrap_err();
    match &err {
        IdpError::Unavailable(why) => {
            assert!(why.contains("E0000009"), "{why}");
            assert!(why.contains("3 attempts"), "{why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(err.retryable());
    assert_eq!(fake.calls_to("GET", &path).len(), 6);
}

#[tokio::test]
async fn a_429_waits_until_the_reset_then_succeeds() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let id = fake.seed_app("429", &["client_credentials"]);
    let path = format!("/api/v1/apps/{id}/credentials/secrets");
    fake.throttle_next(1, 2);
    let started = Instant::now();
    assert_eq!(okta.secret_ids(&id).await.unwrap().len(), 1);
    let calls = fake.calls_to("GET", &path);
    assert_eq!(calls.len(), 2, "the refused call, then its repeat");
    assert_eq!(calls[0].status, 429);
    assert_eq!(calls[1].status, 200);
    let refused_at = calls[0].at.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let reset = UNIX_EPOCH + Duration::from_secs(refused_at + 2);
    assert!(
        calls[1].at >= reset,
        "the repeat came {:?} before the reset",
        reset.duration_since(calls[1].at).unwrap_or_default()
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_reset_further_away_than_steward_waits_is_unavailable_at_once() {
    let fake = FakeOkta::start();
    let mut s = settings(&fake);
    s.max_rate_limit_wait = Duration::from_secs(1);
    let okta = Okta::new(s).unwrap();
    fake.throttle_next(1, 60);
    let started = Instant::now();
    let err = okta.client("0oawhatever").await.unwrap_err();
    assert!(
        matches!(&err, IdpError::Unavailable(why) if why.contains("rate limit")),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn concurrent_calls_never_exceed_the_rate_limit() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    const LIMIT: u32 = 10;
    fake.set_rate_limit("apps", LIMIT, 1);
    let id = fake.seed_app("burst", &["client_credentials"]);
    let mut tasks = Vec::new();
    for _ in 0..24 {
        // Clones share one limiter.
        let okta = okta.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move { okta.secret_ids(&id).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 1);
    }
    let windows = fake.arrivals("apps");
    let busiest = windows.iter().map(|(_, n)| *n).max().unwrap();
    assert!(
        busiest <= LIMIT,
        "{busiest} requests arrived in one window of {LIMIT}: {windows:?}"
    );
    assert_eq!(
        fake.rate_limited(),
        0,
        "Okta had to refuse calls: {windows:?}"
    );
    assert!(windows.len() >= 3, "24 calls fit in {windows:?}?");
}

/// An app people sign in to (no `client_credentials`) is not a client Steward governs: looked
/// up by id (as an `application.lifecycle.create` event makes discovery do), it is not found,
/// so it never becomes a shadow agent to be deactivated and deleted.
#[tokio::test]
async fn a_web_app_is_not_a_client() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let web = fake.seed_app("Payroll SSO", &["authorization_code"]);
    let service = fake.seed_app("billing bot", &["client_credentials"]);
    assert!(okta.client(&web).await.unwrap().is_none());
    assert_eq!(
        okta.client(&service).await.unwrap().unwrap().client_id,
        service
    );
}

#[tokio::test]
async fn list_clients_follows_every_page_and_keeps_service_apps() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    fake.set_max_page(2);
    let mut service = Vec::new();
    for i in 0..5 {
        service.push(fake.seed_app(&format!("svc {i}"), &["client_credentials"]));
        if i % 2 == 0 {
            fake.seed_app(&format!("web {i}"), &["authorization_code"]);
        }
    }
    let listed = okta.list_clients().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(ids, service.iter().map(String::as_str).collect::<Vec<_>>());
    let pages = fake.calls_to("GET", "/api/v1/apps");
    assert_eq!(pages.len(), 4, "8 apps in pages of 2");
    assert!(
        pages[0].query.contains("filter=name+eq"),
        "{}",
        pages[0].query
    );
    assert!(pages[1..].iter().all(|p| p.query.contains("after=")));
    // Apps Steward did not create report Okta's default lifetime, and carry no mark.
    assert!(
        listed
            .iter()
            .all(|c| c.token_lifetime_secs == 3600 && c.active && c.steward_key.is_none())
    );
}

#[tokio::test]
async fn a_third_secret_is_okta_e0000001() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let created = okta
        .create_client(&spec("three", &["a.read"]), "k")
        .await
        .unwrap();
    okta.add_secret(&created.client_id, "rot-1").await.unwrap();
    let err = okta
        .add_secret(&created.client_id, "rot-2")
        .await
        .unwrap_err();
    let (status, code, summary) = provider_code(&err);
    assert_eq!((status, code), (400, "E0000001"));
    assert!(
        summary.contains("maximum number of client secrets"),
        "{summary}"
    );
    assert!(!err.retryable());
}

#[tokio::test]
async fn a_repeated_rotation_key_replaces_the_secret_nobody_kept() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let created = okta
        .create_client(&spec("rot", &["a.read"]), "k")
        .await
        .unwrap();
    let id = created.client_id.clone();
    let lost = okta.add_secret(&id, "rot-1").await.unwrap();
    let kept = okta.add_secret(&id, "rot-1").await.unwrap();
    assert_ne!(lost.secret_id, kept.secret_id);
    assert_eq!(
        okta.secret_ids(&id).await.unwrap(),
        vec![created.secret_id.clone(), kept.secret_id.clone()]
    );
    assert!(okta.test_secret(&id, &lost.secret).await.is_err());
    okta.test_secret(&id, &kept.secret).await.unwrap();
    okta.test_secret(&id, &created.secret).await.unwrap();

    // The first attempt made its secret but could not record it (every PUT after the first
    // fails): the repeat finds it by its creation time.
    okta.remove_secret(&id, &created.secret_id).await.unwrap();
    fake.inject(Fault {
        method: Some("PUT".into()),
        path_prefix: format!("/api/v1/apps/{id}"),
        skip: 1,
        status: 500,
        times: 3,
        ..Fault::default()
    });
    let unrecorded = okta.add_secret(&id, "rot-2").await.unwrap();
    let app = fake.app(&id).unwrap();
    assert_eq!(app["profile"]["stewardSecretKey"], "rot-2");
    assert_eq!(app["profile"]["stewardSecretId"], Value::Null);
    let repeat = okta.add_secret(&id, "rot-2").await.unwrap();
    assert_eq!(
        okta.secret_ids(&id).await.unwrap(),
        vec![kept.secret_id.clone(), repeat.secret_id.clone()]
    );
    assert!(okta.test_secret(&id, &unrecorded.secret).await.is_err());
}

#[tokio::test]
async fn removing_a_secret_deactivates_then_deletes_it() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let created = okta
        .create_client(&spec("remove", &["a.read"]), "k")
        .await
        .unwrap();
    let id = created.client_id.clone();
    let refused = okta
        .remove_secret(&id, &created.secret_id)
        .await
        .unwrap_err();
    assert!(matches!(refused, IdpError::Refused(_)), "{refused:?}");
    okta.add_secret(&id, "rot").await.unwrap();
    okta.remove_secret(&id, &created.secret_id).await.unwrap();
    let secret_calls: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.path.contains(&created.secret_id))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    let base = format!(
        "/api/v1/apps/{id}/credentials/secrets/{}",
        created.secret_id
    );
    assert_eq!(
        secret_calls,
        vec![
            format!("POST {base}/lifecycle/deactivate"),
            format!("DELETE {base}")
        ]
    );
    assert_eq!(fake.secret_values(&id).len(), 1);
}

#[tokio::test]
async fn an_unknown_app_is_an_unknown_client() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let nope = "0oaDoesNotExist00000";
    let unknown = |r: Result<(), IdpError>| {
        assert!(
            matches!(r, Err(IdpError::UnknownClient(ref id)) if id == nope),
            "{r:?}"
        );
    };
    unknown(okta.set_active(nope, false).await);
    unknown(okta.set_grants(nope, &["a".into()], 60).await);
    unknown(okta.secret_ids(nope).await.map(|_| ()));
    unknown(okta.add_secret(nope, "k").await.map(|_| ()));
    unknown(okta.revoke_tokens(nope).await.map(|_| ()));
    assert!(okta.client(nope).await.unwrap().is_none());
    okta.remove_secret(nope, "ocsGone").await.unwrap();
    okta.delete_client(nope).await.unwrap();
    // Okta's own answer: 404 E0000007.
    let get = fake.calls_to("GET", &format!("/api/v1/apps/{nope}"));
    assert_eq!(get[0].status, 404);
}

#[tokio::test]
async fn a_validation_error_carries_okta_code_summary_and_causes() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let mut s = spec("blank", &["a.read"]);
    s.name = "   ".into();
    let err = okta.create_client(&s, "k-blank").await.unwrap_err();
    let (status, code, summary) = provider_code(&err);
    assert_eq!((status, code), (400, "E0000001"));
    assert!(
        summary.contains("Api validation failed: label"),
        "{summary}"
    );
    assert!(
        summary.contains("The field cannot be left blank"),
        "{summary}"
    );
    assert!(err.to_string().contains("E0000001"));
}

#[tokio::test]
async fn a_wrong_api_token_is_a_clear_error() {
    let fake = FakeOkta::start();
    let mut s = settings(&fake);
    s.auth = OktaAuth::ApiToken(Secret::new("00wrong-token-value"));
    let okta = Okta::new(s).unwrap();
    let err = okta.list_clients().await.unwrap_err();
    let (status, code, summary) = provider_code(&err);
    assert_eq!((status, code), (401, "E0000011"));
    assert!(summary.contains("STEWARD_OKTA_API_TOKEN"), "{summary}");
    assert!(!err.to_string().contains("00wrong-token-value"));
    assert!(!err.retryable());
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "a refused token is not retried");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some("SSWS 00wrong-token-value")
    );
}

#[tokio::test]
async fn scopes_and_token_lifetime_are_reported_consistently() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let created = okta
        .create_client(&spec("grants", &["a.read"]), "k")
        .await
        .unwrap();
    let id = created.client_id.clone();
    okta.set_grants(&id, &["b.read".into(), "c.write".into()], 300)
        .await
        .unwrap();
    let info = okta.client(&id).await.unwrap().unwrap();
    assert_eq!(info.scopes, vec!["b.read", "c.write"]);
    assert_eq!(info.token_lifetime_secs, 300);
    let listed = okta.list_clients().await.unwrap();
    assert_eq!(listed.iter().find(|c| c.client_id == id), Some(&info));
    // The grants are what the token endpoint allows.
    okta.test_secret(&id, &created.secret).await.unwrap();
    let issued = fake.issued();
    let last = issued.last().unwrap();
    assert_eq!(last.scopes, vec!["b.read", "c.write"]);
    assert_eq!(last.expires_in, 300);
    // Setting the same grants again changes nothing at Okta.
    let before = fake.calls().len();
    okta.set_grants(&id, &["b.read".into(), "c.write".into()], 300)
        .await
        .unwrap();
    let writes = fake.calls()[before..]
        .iter()
        .filter(|c| c.method != "GET")
        .count();
    assert_eq!(writes, 0);
}

#[tokio::test]
async fn a_secret_test_asks_for_the_configured_scope() {
    let fake = FakeOkta::start();
    let mut s = settings(&fake);
    s.test_scope = Some("a.read".into());
    let okta = Okta::new(s.clone()).unwrap();
    let created = okta
        .create_client(&spec("scope", &["a.read", "b.read"]), "k")
        .await
        .unwrap();
    okta.test_secret(&created.client_id, &created.secret)
        .await
        .unwrap();
    assert_eq!(fake.issued().last().unwrap().scopes, vec!["a.read"]);
    // A scope outside the grant: Okta's OAuth error, not an outage.
    s.test_scope = Some("not.granted".into());
    let err = Okta::new(s)
        .unwrap()
        .test_secret(&created.client_id, &created.secret)
        .await
        .unwrap_err();
    assert_eq!(provider_code(&err).1, "invalid_scope");
}

#[tokio::test]
async fn revoking_tokens_states_what_stays_valid() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let created = okta
        .create_client(&spec("revoke", &["a.read"]), "k")
        .await
        .unwrap();
    let receipt = okta.revoke_tokens(&created.client_id).await.unwrap();
    assert_eq!(fake.refresh_revocations(&created.client_id), 1);
    assert!(
        receipt.revoked.contains("refresh tokens"),
        "{}",
        receipt.revoked
    );
    let outstanding = receipt.outstanding.expect("access tokens stay valid");
    assert!(outstanding.contains("900 s"), "{outstanding}");
}

#[tokio::test]
async fn deleting_deactivates_first() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let created = okta
        .create_client(&spec("delete", &["a.read"]), "k")
        .await
        .unwrap();
    okta.delete_client(&created.client_id).await.unwrap();
    let path = format!("/api/v1/apps/{}", created.client_id);
    let calls: Vec<(String, String)> = fake
        .calls()
        .into_iter()
        .filter(|c| c.path.starts_with(&path) && c.method != "GET")
        .map(|c| (c.method, c.path))
        .collect();
    assert_eq!(calls.last().unwrap(), &("DELETE".to_string(), path.clone()));
    assert_eq!(
        calls[calls.len() - 2],
        ("POST".to_string(), format!("{path}/lifecycle/deactivate"))
    );
    assert!(fake.app(&created.client_id).is_none());
}

fn log_event(uuid: &str, published: &str) -> Value {
    let mut e: Value = serde_json::from_str(include_str!(
        "../../fixtures/okta/events/app.oauth2.as.token.grant.access_token.json"
    ))
    .unwrap();
    e["uuid"] = json!(uuid);
    e["published"] = json!(published);
    e
}

#[tokio::test]
async fn system_log_pages_with_the_after_cursor() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    fake.push_log_events([
        log_event("old", "2024-07-01T00:00:00.000Z"),
        log_event("e1", "2024-07-02T16:20:11.912Z"),
        log_event("e2", "2024-07-02T16:21:00.000Z"),
        log_event("e3", "2024-07-02T16:22:00.000Z"),
    ]);
    let since = "2024-07-02T00:00:00Z".parse().unwrap();
    let first = okta.system_log(None, Some(since), 2).await.unwrap();
    let uuids = |p: &shared::idp::okta::LogPage| -> Vec<String> {
        p.events
            .iter()
            .map(|e| e["uuid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(uuids(&first), vec!["e1", "e2"]);
    let second = okta
        .system_log(first.after.as_deref(), Some(since), 2)
        .await
        .unwrap();
    assert_eq!(uuids(&second), vec!["e3"]);
    // Nothing new: the cursor stays where it is.
    let third = okta
        .system_log(second.after.as_deref(), None, 2)
        .await
        .unwrap();
    assert!(third.events.is_empty());
    assert_eq!(third.after, second.after);
    fake.push_log_events([log_event("e4", "2024-07-03T00:00:00.000Z")]);
    let fourth = okta
        .system_log(third.after.as_deref(), None, 2)
        .await
        .unwrap();
    assert_eq!(uuids(&fourth), vec!["e4"]);

    let calls = fake.calls_to("GET", "/api/v1/logs");
    assert!(
        calls
            .iter()
            .all(|c| c.query.contains("sortOrder=ASCENDING"))
    );
    assert!(
        calls[0]
            .query
            .contains("since=2024-07-02T00%3A00%3A00.000Z"),
        "{}",
        calls[0].query
    );
    assert!(
        calls[1..]
            .iter()
            .all(|c| c.query.contains("after=") && !c.query.contains("since="))
    );
    assert!(calls.iter().all(|c| c.bucket == "logs"));
    fake.assert_well_formed();
}

fn service_app_settings(fake: &FakeOkta, client_id: &str) -> OktaSettings {
    let mut s = settings(fake);
    s.auth = OktaAuth::PrivateKeyJwt {
        client_id: client_id.into(),
        key: SigningKey::from_pem(SERVICE_APP_KEY.as_bytes()).unwrap(),
        key_id: Some("steward-1".into()),
        scopes: MANAGEMENT_SCOPES.iter().map(|s| s.to_string()).collect(),
    };
    s
}

#[tokio::test]
async fn oauth_for_okta_uses_a_signed_assertion_and_caches_the_token() {
    let fake = FakeOkta::start();
    fake.trust_service_app("0oaStewardService001", SERVICE_APP_PUBLIC_KEY);
    let okta = Okta::new(service_app_settings(&fake, "0oaStewardService001")).unwrap();
    let created = okta
        .create_client(&spec("oauth", &["a.read"]), "k")
        .await
        .unwrap();
    okta.client(&created.client_id).await.unwrap().unwrap();
    okta.list_clients().await.unwrap();
    let token_calls = fake.calls_to("POST", "/oauth2/v1/token");
    assert_eq!(token_calls.len(), 1, "the access token is cached");
    let issued = &fake.issued()[0];
    assert_eq!(issued.client_id, "0oaStewardService001");
    assert!(issued.scopes.iter().any(|s| s == "okta.apps.manage"));
    for c in fake.calls().iter().filter(|c| c.path.starts_with("/api/")) {
        let auth = c.authorization.as_deref().unwrap_or("");
        assert!(
            auth.starts_with("Bearer fake-okta-at-"),
            "{} {}: {auth}",
            c.method,
            c.path
        );
    }
    fake.assert_well_formed();
}

#[tokio::test]
async fn oauth_for_okta_renews_the_token_before_it_expires() {
    let fake = FakeOkta::start();
    fake.trust_service_app("0oaStewardService001", SERVICE_APP_PUBLIC_KEY);
    // Within the renewal margin: every call needs a new token.
    fake.set_management_token_lifetime(30);
    let okta = Okta::new(service_app_settings(&fake, "0oaStewardService001")).unwrap();
    okta.client("0oaAny").await.unwrap();
    okta.client("0oaAny").await.unwrap();
    assert_eq!(fake.calls_to("POST", "/oauth2/v1/token").len(), 2);
}

#[tokio::test]
async fn an_untrusted_service_app_is_a_clear_error() {
    let fake = FakeOkta::start();
    let okta = Okta::new(service_app_settings(&fake, "0oaNotRegistered0001")).unwrap();
    let err = okta.list_clients().await.unwrap_err();
    let (status, code, summary) = provider_code(&err);
    assert_eq!((status, code), (401, "invalid_client"));
    assert!(summary.contains("STEWARD_OKTA_CLIENT_ID"), "{summary}");
}

#[test]
fn settings_refuse_plain_http_on_a_non_loopback_host() {
    let token = || OktaAuth::ApiToken(Secret::new("t"));
    let err = OktaSettings::new("http://example.okta.com", token()).unwrap_err();
    assert!(matches!(err, OktaSettingsError::InsecureOrgUrl(_)), "{err}");
    assert!(err.to_string().contains("use https"), "{err}");
    OktaSettings::new("http://127.0.0.1:9999", token()).unwrap();
    OktaSettings::new("https://example.okta.com", token()).unwrap();
    let env = |k: &str| match k {
        "STEWARD_OKTA_ORG_URL" => Some("http://192.0.2.10".to_string()),
        "STEWARD_OKTA_API_TOKEN" => Some("t".to_string()),
        _ => None,
    };
    assert!(matches!(
        OktaSettings::from_lookup(env),
        Err(OktaSettingsError::InsecureOrgUrl(_))
    ));
}

#[tokio::test]
async fn secrets_never_show_in_debug_output_errors_or_urls() {
    let fake = FakeOkta::start();
    let s = settings(&fake);
    assert!(!format!("{s:?}").contains(API_TOKEN));
    let jwt = service_app_settings(&fake, "0oaX");
    assert!(!format!("{jwt:?}").contains("PRIVATE KEY"));
    let okta = Okta::new(s).unwrap();
    assert!(!format!("{okta:?}").contains(API_TOKEN));
    let created = okta
        .create_client(&spec("leak", &["a.read"]), "k")
        .await
        .unwrap();
    let rotated = okta.add_secret(&created.client_id, "r").await.unwrap();
    let values = fake.secret_values(&created.client_id);
    assert_eq!(values.len(), 2);
    let debug = format!("{created:?} {rotated:?}");
    let wrong = Secret::new("wrong-secret-value-123456");
    let err = okta
        .test_secret(&created.client_id, &wrong)
        .await
        .unwrap_err();
    let shown = format!("{debug} {err} {err:?}");
    for v in values
        .iter()
        .map(String::as_str)
        .chain(["wrong-secret-value-123456"])
    {
        assert!(!shown.contains(v), "a secret shows in {shown}");
    }
    for c in fake.calls() {
        for v in &values {
            assert!(!c.path.contains(v.as_str()) && !c.query.contains(v.as_str()));
        }
    }
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused_not_unavailable() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let created = okta
        .create_client(&spec("wrong", &["a.read"]), "k")
        .await
        .unwrap();
    let err = okta
        .test_secret(&created.client_id, &Secret::new("not-it"))
        .await
        .unwrap_err();
    assert_eq!(provider_code(&err).1, "invalid_client");
    okta.set_active(&created.client_id, false).await.unwrap();
    let err = okta
        .test_secret(&created.client_id, &created.secret)
        .await
        .unwrap_err();
    assert_eq!(provider_code(&err).1, "invalid_client");
}

// --- key credentials: private_key_jwt service apps and their JWKS ----------------------------

/// The token endpoint agents' tokens come from in these tests (the `default` server).
const TOKEN_PATH: &str = "/oauth2/default/v1/token";

fn form(body: &str) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn json_body(c: &super::fake_okta::Call) -> Value {
    serde_json::from_str(&c.body).unwrap_or(Value::Null)
}

fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The public JWK Okta must be given for `pair`: exactly these members.
fn okta_jwk(pair: &AgentKeyPair) -> Value {
    let j = pair.public_jwk();
    json!({"kty": "EC", "crv": "P-256", "x": j["x"], "y": j["y"],
           "kid": pair.public().kid, "use": "sig", "alg": "ES256"})
}

async fn key_client(okta: &Okta, name: &str, pair: &AgentKeyPair, binding: TokenBinding) -> String {
    okta.create_key_client(
        &spec(name, &["a.read"]),
        pair.public(),
        binding,
        &format!("k-{name}"),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn okta_key_clients_follow_the_identity_provider_contract() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    conformance::run_keys(&okta, "okta", ["agents.read", "agents.write"]).await;
    fake.assert_well_formed();
    // Agents' tokens came with a client assertion, never with Basic credentials.
    let token_calls = fake.calls_to("POST", TOKEN_PATH);
    assert!(token_calls.len() >= 10, "{} token calls", token_calls.len());
    for c in &token_calls {
        assert_eq!(c.authorization, None);
        let f = form(&c.body);
        assert_eq!(
            f["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert_eq!(f["grant_type"], "client_credentials");
    }
}

#[tokio::test]
async fn a_key_client_is_a_private_key_jwt_service_app_holding_the_public_jwk() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let pair = AgentKeyPair::generate().unwrap();
    let id = okta
        .create_key_client(
            &spec("keyed", &["inventory.read", "inventory.write"]),
            pair.public(),
            TokenBinding::None,
            "k-keyed",
        )
        .await
        .unwrap();
    // The exact create request.
    let creates = fake.calls_to("POST", "/api/v1/apps");
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].query, "activate=true");
    let body = json_body(&creates[0]);
    assert_eq!(body["name"], "oidc_client");
    assert_eq!(body["label"], "okta-test keyed");
    assert_eq!(body["signOnMode"], "OPENID_CONNECT");
    assert_eq!(
        body["credentials"]["oauthClient"]["token_endpoint_auth_method"],
        "private_key_jwt"
    );
    let oauth = &body["settings"]["oauthClient"];
    assert_eq!(oauth["grant_types"], json!(["client_credentials"]));
    assert_eq!(oauth["response_types"], json!(["token"]));
    assert_eq!(oauth["application_type"], "service");
    assert_eq!(oauth["jwks"], json!({"keys": [okta_jwk(&pair)]}));
    assert!(
        oauth.get("dpop_bound_access_tokens").is_none(),
        "no DPoP unless asked: {oauth}"
    );
    assert_eq!(body["profile"]["stewardIdempotencyKey"], "k-keyed");
    assert_eq!(body["profile"]["stewardAgentId"], "agent-keyed");
    assert_eq!(body["profile"]["stewardTokenLifetimeSecs"], 900);
    // No secret was made or asked for.
    assert!(fake.secret_values(&id).is_empty());
    assert!(
        fake.calls()
            .iter()
            .all(|c| !c.path.contains("/credentials/secrets") || c.method == "GET")
    );
    // Okta names the key by an id of its own; Steward by its kid.
    let jwks = fake.jwks(&id);
    assert_eq!(jwks.len(), 1);
    assert_eq!(jwks[0]["kid"], pair.public().kid.as_str());
    assert_eq!(jwks[0]["status"], "ACTIVE");
    assert!(jwks[0]["id"].as_str().unwrap().starts_with("pks"));
    assert_ne!(jwks[0]["id"], jwks[0]["kid"]);
    let info = okta.client(&id).await.unwrap().unwrap();
    assert_eq!(info.scopes, vec!["inventory.read", "inventory.write"]);
    assert_eq!(info.steward_key.as_deref(), Some("k-keyed"));
    // The key test: an assertion for this client at the token endpoint it is sent to.
    okta.test_key(&id, &pair).await.unwrap();
    let token = fake.calls_to("POST", TOKEN_PATH);
    assert_eq!(token.len(), 1);
    let f = form(&token[0].body);
    assert_eq!(f["scope"], "inventory.read inventory.write");
    let claims = jwt_claims(&f["client_assertion"]);
    assert_eq!(claims["iss"], id.as_str());
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["aud"], format!("{}{TOKEN_PATH}", fake.base));
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    fake.assert_well_formed();
}

#[tokio::test]
async fn the_key_lifecycle_calls_okta_by_its_key_id_not_the_kid() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let first = AgentKeyPair::generate().unwrap();
    let second = AgentKeyPair::generate().unwrap();
    let id = key_client(&okta, "lifecycle", &first, TokenBinding::None).await;
    let jwks_path = format!("/api/v1/apps/{id}/credentials/jwks");

    okta.add_key(&id, second.public()).await.unwrap();
    let adds = fake.calls_to("POST", &jwks_path);
    assert_eq!(adds.len(), 1);
    let mut want = okta_jwk(&second);
    want["status"] = json!("ACTIVE");
    assert_eq!(json_body(&adds[0]), want, "the add request");
    let ids: std::collections::HashMap<String, String> = fake
        .jwks(&id)
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_string(),
                k["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let first_id = &ids[&first.public().kid];

    // Deactivating, then removing an active key: deactivate first, then delete, by Okta's id.
    okta.set_key_active(&id, &first.public().kid, false)
        .await
        .unwrap();
    okta.set_key_active(&id, &first.public().kid, true)
        .await
        .unwrap();
    let before = fake.calls().len();
    okta.remove_key(&id, &first.public().kid).await.unwrap();
    let calls: Vec<(String, String)> = fake.calls()[before..]
        .iter()
        .map(|c| (c.method.clone(), c.path.clone()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("GET".to_string(), jwks_path.clone()),
            (
                "POST".to_string(),
                format!("{jwks_path}/{first_id}/lifecycle/deactivate")
            ),
            ("DELETE".to_string(), format!("{jwks_path}/{first_id}")),
        ]
    );
    let lifecycle: Vec<String> = fake
        .calls()
        .iter()
        .filter(|c| c.path.contains("/lifecycle/"))
        .map(|c| c.path.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(lifecycle, ["deactivate", "activate", "deactivate"]);
    assert_eq!(
        okta.keys(&id).await.unwrap(),
        vec![ClientKey {
            kid: second.public().kid.clone(),
            active: true
        }]
    );
    // A repeated add of a held key asks Okta for nothing but the list.
    let before = fake.calls().len();
    okta.add_key(&id, second.public()).await.unwrap();
    assert_eq!(fake.calls().len(), before + 1);
    fake.assert_well_formed();
}

#[tokio::test]
async fn the_only_active_key_is_never_deactivated_or_removed() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let only = AgentKeyPair::generate().unwrap();
    let id = key_client(&okta, "only", &only, TokenBinding::None).await;
    // Okta's own rule, in its own words.
    let err = okta
        .set_key_active(&id, &only.public().kid, false)
        .await
        .unwrap_err();
    let (status, code, summary) = provider_code(&err);
    assert_eq!((status, code), (400, "E0000001"));
    assert!(summary.contains("only active JSON Web Key"), "{summary}");
    // Steward refuses before asking Okta to delete anything.
    let err = okta.remove_key(&id, &only.public().kid).await.unwrap_err();
    assert!(matches!(err, IdpError::Refused(_)), "{err:?}");
    assert!(fake.calls().iter().all(|c| c.method != "DELETE"));
    okta.test_key(&id, &only).await.unwrap();
    // Keys of a client that does not exist.
    assert!(matches!(
        okta.keys("0oaNoSuchApp").await,
        Err(IdpError::UnknownClient(_))
    ));
    assert!(matches!(
        okta.add_key("0oaNoSuchApp", only.public()).await,
        Err(IdpError::UnknownClient(_))
    ));
    okta.remove_key("0oaNoSuchApp", &only.public().kid)
        .await
        .unwrap();
    // Activating a key the client does not hold is refused, deactivating it is done.
    let stranger = AgentKeyPair::generate().unwrap();
    assert!(matches!(
        okta.set_key_active(&id, &stranger.public().kid, true).await,
        Err(IdpError::Refused(_))
    ));
    okta.set_key_active(&id, &stranger.public().kid, false)
        .await
        .unwrap();
}

#[tokio::test]
async fn dpop_binding_sets_dpop_bound_tokens_and_the_key_test_sends_a_proof_with_the_nonce() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let pair = AgentKeyPair::generate().unwrap();
    let s = spec("bound", &["a.read"]);
    let id = okta
        .create_key_client(&s, pair.public(), TokenBinding::Dpop, "k-bound")
        .await
        .unwrap();
    let body = json_body(&fake.calls_to("POST", "/api/v1/apps")[0]);
    assert_eq!(
        body["settings"]["oauthClient"]["dpop_bound_access_tokens"],
        true
    );
    okta.test_key(&id, &pair).await.unwrap();
    // Okta asks for its nonce first; the second request carries it.
    let statuses: Vec<u16> = fake
        .calls_to("POST", TOKEN_PATH)
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [400, 200]);
    // A stranger's key is refused, not retried past the nonce.
    let stranger = AgentKeyPair::generate().unwrap();
    let err = okta.test_key(&id, &stranger).await.unwrap_err();
    assert_eq!(provider_code(&err).1, "invalid_client");
    // A repeat without binding turns DPoP off again.
    let again = okta
        .create_key_client(&s, pair.public(), TokenBinding::None, "k-bound")
        .await
        .unwrap();
    assert_eq!(again, id);
    assert_eq!(
        fake.app(&id).unwrap()["settings"]["oauthClient"]["dpop_bound_access_tokens"],
        false
    );
    let before = fake.calls_to("POST", TOKEN_PATH).len();
    okta.test_key(&id, &pair).await.unwrap();
    assert_eq!(fake.calls_to("POST", TOKEN_PATH).len(), before + 1);
    // Certificate-bound tokens: Okta has none, and nothing is created.
    let apps = fake.app_count();
    let err = okta
        .create_key_client(
            &spec("mtls", &["a.read"]),
            pair.public(),
            TokenBinding::Certificate,
            "k-mtls",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, IdpError::Refused(_)), "{err:?}");
    assert_eq!(fake.app_count(), apps);
    fake.assert_well_formed();
}

#[tokio::test]
async fn a_key_test_is_not_repeated_after_a_server_error() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let pair = AgentKeyPair::generate().unwrap();
    let id = key_client(&okta, "flaky", &pair, TokenBinding::None).await;
    fake.inject(Fault {
        method: Some("POST".into()),
        path_prefix: TOKEN_PATH.into(),
        status: 500,
        times: 1,
        ..Fault::default()
    });
    // Okta may have used the assertion's jti up: the caller's repeat signs a fresh one.
    let err = okta.test_key(&id, &pair).await.unwrap_err();
    assert!(err.retryable(), "{err:?}");
    assert_eq!(fake.calls_to("POST", TOKEN_PATH).len(), 1);
    okta.test_key(&id, &pair).await.unwrap();
}

#[tokio::test]
async fn the_fake_token_endpoint_checks_assertions_as_okta_documents() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let pair = AgentKeyPair::generate().unwrap();
    let id = key_client(&okta, "checks", &pair, TokenBinding::None).await;
    let url = format!("{}{TOKEN_PATH}", fake.base);
    let http = reqwest::Client::new();
    let ask = |assertion: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(&url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", "a.read"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["error"].as_str().unwrap_or("").to_string())
        }
    };
    let now = chrono::Utc::now();
    let key = EncodingKey::from_ec_pem(pair.pem().expose().as_bytes()).unwrap();
    let sign = |claims: Value, kid: Option<&str>| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    };
    let kid = pair.public().kid.as_str();
    let t = now.timestamp();
    let good =
        |jti: &str| json!({"iss": id, "sub": id, "aud": url, "iat": t, "exp": t + 300, "jti": jti});

    // A good one works once: its jti cannot be used again.
    let once = sign(good("j-1"), Some(kid));
    assert_eq!(ask(once.clone()).await.0, 200);
    assert_eq!(ask(once).await, (401, "invalid_client".to_string()));
    // Without a kid, the app's only key is used.
    assert_eq!(ask(sign(good("j-2"), None)).await.0, 200);
    // Each broken claim is refused.
    let mut c = good("j-3");
    c["aud"] = json!(format!("{}/oauth2/v1/token", fake.base));
    assert_eq!(ask(sign(c, Some(kid))).await.0, 401, "another audience");
    let mut c = good("j-4");
    c["sub"] = json!("0oaSomeoneElse");
    assert_eq!(ask(sign(c, Some(kid))).await.0, 401, "sub is not iss");
    let mut c = good("j-5");
    c["exp"] = json!(t + 7200);
    assert_eq!(
        ask(sign(c, Some(kid))).await.0,
        401,
        "exp more than an hour ahead"
    );
    let mut c = good("j-6");
    c["exp"] = json!(t - 600);
    assert_eq!(ask(sign(c, Some(kid))).await.0, 401, "expired");
    assert_eq!(
        ask(sign(good("j-7"), Some("not-a-kid"))).await.0,
        401,
        "unknown kid"
    );
    let stranger = AgentKeyPair::generate().unwrap();
    let forged = stranger.client_assertion(&id, &url, now);
    assert_eq!(ask(forged).await.0, 401, "another key's signature");
    // An inactive key signs nothing.
    let second = AgentKeyPair::generate().unwrap();
    okta.add_key(&id, second.public()).await.unwrap();
    okta.set_key_active(&id, kid, false).await.unwrap();
    assert_eq!(
        ask(sign(good("j-8"), Some(kid))).await.0,
        401,
        "an inactive key"
    );
    assert_eq!(ask(second.client_assertion(&id, &url, now)).await.0, 200);
}

#[tokio::test]
async fn no_private_key_or_assertion_reaches_the_management_api_or_errors() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let first = AgentKeyPair::generate().unwrap();
    let second = AgentKeyPair::generate().unwrap();
    let id = key_client(&okta, "secretive", &first, TokenBinding::Dpop).await;
    okta.add_key(&id, second.public()).await.unwrap();
    okta.test_key(&id, &first).await.unwrap();
    okta.test_key(&id, &second).await.unwrap();
    okta.set_key_active(&id, &first.public().kid, false)
        .await
        .unwrap();
    let refused = okta.test_key(&id, &first).await.unwrap_err();
    okta.remove_key(&id, &first.public().kid).await.unwrap();
    let stranger = AgentKeyPair::generate().unwrap();
    let unheld = okta.test_key(&id, &stranger).await.unwrap_err();
    okta.delete_client(&id).await.unwrap();

    // What must never leave the agent's side: the PEMs, and any line of them.
    let mut private: Vec<String> = Vec::new();
    for pair in [&first, &second, &stranger] {
        let pem = pair.pem().expose().to_string();
        private.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_string),
        );
        private.push(pem);
    }
    // The assertions and DPoP proofs went to the token endpoint, and only there.
    let token_calls = fake.calls_to("POST", TOKEN_PATH);
    let assertions: Vec<String> = token_calls
        .iter()
        .map(|c| form(&c.body)["client_assertion"].clone())
        .collect();
    assert!(assertions.len() >= 5);
    for c in fake.calls().iter().filter(|c| c.path.starts_with("/api/")) {
        let sent = format!("{} {} {}", c.path, c.query, c.body);
        assert!(!sent.contains("PRIVATE KEY"), "{} {}", c.method, c.path);
        for p in private.iter().chain(&assertions) {
            assert!(
                !sent.contains(p.as_str()),
                "{} {} carried a private value",
                c.method,
                c.path
            );
        }
        assert!(
            !sent.contains("eyJ"),
            "{} {} carried a JWT",
            c.method,
            c.path
        );
    }
    // A JWK with a private member never reached Okta (the fake records any as a problem).
    fake.assert_well_formed();
    // Errors and Debug output name keys by their kid only.
    let shown = format!("{refused} {refused:?} {unheld} {unheld:?} {first:?} {okta:?}");
    for p in private.iter().chain(&assertions) {
        assert!(
            !shown.contains(p.as_str()),
            "a private value shows in {shown}"
        );
    }
    assert!(!shown.contains("eyJ"), "an assertion shows in {shown}");
}

// --- discovery on Okta while Steward creates an app -----------------------------------------

const POLICY: &str = include_str!("../../../policy.example.toml");
const AGENT: &str = "orders-agent-prod";

/// The embedded stack with the fake Okta as the identity provider.
struct OktaStack {
    engine: std::sync::Arc<Engine>,
    okta: Okta,
    _dir: tempfile::TempDir,
}

fn okta_stack(fake: &FakeOkta) -> OktaStack {
    okta_stack_with(fake, false)
}

fn okta_stack_with(fake: &FakeOkta, okta_directory: bool) -> OktaStack {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people.toml");
    std::fs::write(
        &people,
        "[[person]]\nemail = \"alice@example.com\"\nname = \"Alice Ng\"\n\n\
         [[person]]\nemail = \"bob@example.com\"\nname = \"Bob Okafor\"\n",
    )
    .unwrap();
    let s = Embedded::open(EmbeddedConfig {
        data_dir: dir.path().join("data"),
        policy: shared::policy_file::parse(POLICY, "policy.example.toml").unwrap(),
        people,
        issuer: "http://127.0.0.1:1".into(),
        durability: Durability::Wal,
        engine: EngineConfig {
            max_attempts: 2,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..EngineConfig::default()
        },
        slack: None,
        okta: Some(settings(fake)),
        okta_hook_secret: None,
        oauth: None,
        ssf: None,
        okta_directory,
        people_issuer: None,
    })
    .unwrap();
    OktaStack {
        engine: s.engine,
        okta: s.okta.expect("Okta is the identity provider"),
        _dir: dir,
    }
}

fn orders_agent() -> AgentRequest {
    // From JSON, as the admin API reads it: fields added later take their defaults (a secret).
    serde_json::from_value(json!({
        "name": AGENT,
        "owner": "alice@example.com",
        "team": "sre",
        "environment": "prod",
        "purpose": "reads orders",
        "scopes": ["erp:orders:read"],
        "token_lifetime_secs": 600,
    }))
    .expect("an agent request")
}

/// Requests the agent and works the queue one message at a time until its app exists at Okta:
/// the create ran, and its result waits in the queue, not yet applied.
async fn onboarding_until_created(st: &OktaStack) -> ClientInfo {
    let e = &st.engine;
    e.request_agent(orders_agent(), "bob@example.com")
        .await
        .unwrap();
    for _ in 0..20 {
        if let Some(c) = st
            .okta
            .list_clients()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name == AGENT)
        {
            let agent = e.store.agent_by_name(AGENT).await.unwrap().unwrap();
            assert_eq!(agent.client_id, None, "not recorded yet");
            return c;
        }
        e.work_once(1).await.unwrap();
    }
    panic!("the onboarding created no app")
}

async fn settle(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        engine.run_until_idle().await.unwrap();
        if engine.queue.depth().await.unwrap() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Okta's `application.lifecycle.create` about `app_id`, as its event hook delivers it.
fn app_created(app_id: &str, label: &str, by: &str) -> intake::Received {
    let path = format!(
        "{}/../tests/fixtures/okta/events/application.lifecycle.create.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut ev: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    ev["uuid"] = json!(format!("create-{app_id}"));
    ev["actor"]["alternateId"] = json!(by);
    ev["target"][0]["id"] = json!(app_id);
    ev["target"][0]["displayName"] = json!(label);
    ev["target"][0]["alternateId"] = json!(label);
    received(&ev).unwrap()
}

async fn active_without_shadows(engine: &Engine, app_id: &str) {
    let agent = engine.store.agent_by_name(AGENT).await.unwrap().unwrap();
    assert_eq!(agent.status, AgentStatus::Active);
    assert_eq!(agent.client_id.as_deref(), Some(app_id));
    assert_eq!(engine.shadow_agents().await.unwrap(), vec![]);
}

/// Okta's app-created event for the app Steward is creating arrives before the onboarding
/// records it, and the record lands while the engine reads the app at Okta: the app is
/// Steward's by the mark its create put in the profile, so no shadow agent, and the
/// onboarding completes with its app.
#[tokio::test]
async fn an_app_created_event_before_the_onboarding_records_its_app_starts_no_shadow() {
    let fake = FakeOkta::start();
    let st = okta_stack(&fake);
    let e = &st.engine;
    let app = onboarding_until_created(&st).await;
    assert!(
        app.steward_key
            .as_deref()
            .is_some_and(|k| k.starts_with("onboarding-")),
        "{app:?}"
    );

    let read = fake.hold_next("GET", &format!("/api/v1/apps/{}", app.client_id));
    // What the worker does with the event (`Message::ClientCreated`), while the onboarding's
    // record is applied between its read of the app and its decision.
    let event = async {
        e.client_created(&app.client_id, Some("svc@example.com"), "create-racing")
            .await
            .unwrap()
    };
    let record = async {
        read.arrived().await;
        settle(e).await;
        let agent = e.store.agent_by_name(AGENT).await.unwrap().unwrap();
        assert_eq!(agent.client_id.as_deref(), Some(app.client_id.as_str()));
        read.release();
    };
    let (started, ()) = tokio::join!(event, record);
    assert_eq!(started, None, "no shadow started");
    settle(e).await;
    active_without_shadows(e, &app.client_id).await;
    fake.assert_well_formed();
}

/// A sweep between Okta's create and the onboarding's record takes nothing; an app made in
/// Okta's console meanwhile is still a shadow agent, found by the sweep and by its event.
#[tokio::test]
async fn a_sweep_while_steward_creates_an_app_finds_only_console_apps() {
    let fake = FakeOkta::start();
    let st = okta_stack(&fake);
    let e = &st.engine;
    let app = onboarding_until_created(&st).await;
    let console = fake.seed_app("Inventory Sync", &["client_credentials"]);

    let report = e.discover().await.unwrap();
    assert_eq!(report.clients, 2, "{report:?}");
    assert_eq!(report.unrecorded, 1, "Steward's own app, being created");
    assert_eq!(report.shadows.len(), 1, "{report:?}");
    assert_eq!(report.shadows[0].workflow_id, format!("shadow-{console}"));
    let accepted = intake::accept(
        e,
        vec![
            app_created(&app.client_id, AGENT, "svc@example.com"),
            app_created(&console, "Inventory Sync", "admin@example.com"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(accepted.new, 2);

    settle(e).await;
    let agent = e.store.agent_by_name(AGENT).await.unwrap().unwrap();
    assert_eq!(agent.status, AgentStatus::Active);
    assert_eq!(agent.client_id, Some(app.client_id));
    let shadows = e.shadow_agents().await.unwrap();
    assert_eq!(shadows.len(), 1);
    assert_eq!(shadows[0].name, "inventory-sync");
    assert_eq!(shadows[0].client_id.as_deref(), Some(console.as_str()));
    let report = e.discover().await.unwrap();
    assert_eq!((report.registered, report.unrecorded), (1, 0));
}

/// With `STEWARD_DIRECTORY=okta`, whether an owner is a real, active person is Okta's answer,
/// not the people file's: someone deprovisioned in Okta cannot own an agent, even while the
/// people file still lists them.
#[tokio::test]
async fn okta_users_are_the_directory_when_asked() {
    let fake = FakeOkta::start();
    fake.seed_user("alice@example.com", "Alice", "Ng", "DEPROVISIONED", None);
    fake.seed_user("carol@example.com", "Carol", "Diaz", "ACTIVE", None);
    let st = okta_stack_with(&fake, true);
    let refused = st
        .engine
        .request_agent(orders_agent(), "carol@example.com")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("alice@example.com"),
        "{refused}"
    );
    let mut carols = orders_agent();
    carols.owner = "carol@example.com".into();
    st.engine
        .request_agent(carols, "carol@example.com")
        .await
        .unwrap();
    assert!(
        fake.calls()
            .iter()
            .any(|c| c.method == "GET" && c.path.starts_with("/api/v1/users/")),
        "Okta was asked: {:?}",
        fake.calls()
    );
}

/// Okta has no RFC 8705 client authentication Steward can manage: every certificate call is
/// refused, clearly, and nothing is registered.
#[tokio::test]
async fn okta_refuses_certificate_clients_clearly() {
    let fake = FakeOkta::start();
    let okta = okta(&fake);
    let ca = conformance::TestCa::new("okta.test").await;
    conformance::refuses_certificates(&okta, &ca, "okta").await;
    let changes: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET")
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(changes.is_empty(), "nothing was asked of Okta: {changes:?}");
}
