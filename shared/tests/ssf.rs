//! The Shared Signals push receiver (RFC 8935 delivery of RFC 8417 SETs) on the embedded stack:
//! SETs built from the specifications' claim sets (tests/fixtures/ssf, README there), signed
//! with keys generated here. Valid SETs are accepted once and mapped; every forgery is refused
//! with its RFC 8935 error code, audited, and leaves no event behind.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shared::embedded::Durability;
use shared::inbound::Reply;
use shared::inbound::ssf::{
    self, JwksSource, Rejected, SetErr, SsfConfigError, SsfReceiver, SsfSettings,
};
use shared::intake;
use shared::ports::Clock;
use shared::signal::{RiskKind, Signal};
use shared::wiring::embedded::{Embedded, EmbeddedConfig};
use shared::{Engine, EngineConfig, Secret};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const POLICY: &str = include_str!("../../policy.example.toml");
const ISSUER: &str = "https://transmitter.example.com/";
const AUDIENCE: &str = "https://steward.example.com/ssf";
const KID: &str = "transmitter-key-1";

const SESSION_REVOKED: &str = include_str!("../../tests/fixtures/ssf/caep-session-revoked.json");
const SESSION_REVOKED_COMPLEX: &str =
    include_str!("../../tests/fixtures/ssf/caep-session-revoked-complex.json");
const CREDENTIAL_CHANGE: &str =
    include_str!("../../tests/fixtures/ssf/caep-credential-change.json");
const CREDENTIAL_COMPROMISE: &str =
    include_str!("../../tests/fixtures/ssf/risc-credential-compromise.json");
const ACCOUNT_DISABLED: &str = include_str!("../../tests/fixtures/ssf/risc-account-disabled.json");
const VERIFICATION: &str = include_str!("../../tests/fixtures/ssf/ssf-verification.json");

struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// The clock every test starts at.
fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_760_000_000, 0).unwrap()
}

struct Stack {
    engine: Engine,
    clock: Arc<TestClock>,
    _dir: tempfile::TempDir,
}

fn stack() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people.toml");
    std::fs::write(
        &people,
        "[[person]]\nemail = \"alice@example.com\"\nname = \"Alice Ng\"\n",
    )
    .unwrap();
    let s = Embedded::open(EmbeddedConfig {
        data_dir: dir.path().join("data"),
        policy: shared::policy_file::parse(POLICY, "policy.example.toml").unwrap(),
        people,
        issuer: "http://127.0.0.1:1".into(),
        durability: Durability::Wal,
        engine: EngineConfig {
            max_attempts: 3,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            applied_window: 64,
            visibility: Duration::from_secs(10),
            crash_after: None,
            ..EngineConfig::default()
        },
        slack: None,
        okta: None,
        okta_hook_secret: None,
        oauth: None,
        ssf: None,
        okta_directory: false,
        people_issuer: None,
    })
    .unwrap();
    let mut engine = Arc::try_unwrap(s.engine)
        .ok()
        .expect("the stack is the engine's only owner");
    let clock = Arc::new(TestClock(Mutex::new(start())));
    engine.clock = clock.clone();
    Stack {
        engine,
        clock,
        _dir: dir,
    }
}

/// An Ed25519 signing key and its public JWK.
struct Key {
    encoding: EncodingKey,
    public: [u8; 32],
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Self {
        let signing = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let der = signing.to_pkcs8_der().unwrap();
        Self {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            public: signing.verifying_key().to_bytes(),
            kid: kid.into(),
        }
    }

    fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": B64URL.encode(self.public), "kid": self.kid, "alg": "EdDSA", "use": "sig"})
    }

    /// A SET signed with this key under `kid`.
    fn sign(&self, claims: &Value) -> String {
        self.sign_as(claims, &self.kid)
    }

    fn sign_as(&self, claims: &Value, kid: &str) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("secevent+jwt".into());
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// An EC P-256 public key (RFC 7515 Appendix A.3) in the JWKS, to show a key of the wrong type
/// for an `alg` is refused.
fn ec_jwk() -> Value {
    json!({"kty": "EC", "crv": "P-256", "kid": "ec-key",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
}

fn settings(keys: &[&Key]) -> SsfSettings {
    let mut jwks: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
    jwks.push(ec_jwk());
    SsfSettings::new(ISSUER, AUDIENCE, JwksSource::Json(json!({ "keys": jwks })))
}

fn receiver(keys: &[&Key]) -> SsfReceiver {
    SsfReceiver::new(settings(keys)).unwrap()
}

/// A fixture's claim set as the test transmitter sends it: our `iss`, `aud`, `iat` = now.
fn claims(fixture: &str, now: DateTime<Utc>) -> Value {
    let mut c: Value = serde_json::from_str(fixture).unwrap();
    c["iss"] = json!(ISSUER);
    c["aud"] = json!(AUDIENCE);
    c["iat"] = json!(now.timestamp());
    c
}

fn b64(v: &Value) -> String {
    B64URL.encode(serde_json::to_vec(v).unwrap())
}

/// A JWS put together by hand (for headers jsonwebtoken will not write).
fn raw_jws(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header),
        b64(claims),
        B64URL.encode(signature)
    )
}

const SET_HEADERS: &[(&str, &str)] = &[("content-type", "application/secevent+jwt")];

async fn push(st: &Stack, rx: &SsfReceiver, token: &str) -> Reply {
    ssf::handle(&st.engine, rx, SET_HEADERS, token.as_bytes())
        .await
        .unwrap()
}

async fn audit(engine: &Engine) -> Vec<Value> {
    engine
        .store
        .audit(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.record.body)
        .collect()
}

fn steward_event(v: &Value) -> &str {
    v["unmapped"]["steward_event"].as_str().unwrap_or_default()
}

async fn received(engine: &Engine) -> Vec<Value> {
    audit(engine)
        .await
        .into_iter()
        .filter(|v| steward_event(v) == "idp_event_received")
        .collect()
}

async fn refusals(engine: &Engine) -> Vec<String> {
    audit(engine)
        .await
        .into_iter()
        .filter(|v| {
            steward_event(v) == "refused" && v["unmapped"]["refused"] == "Shared Signals SET"
        })
        .map(|v| {
            v["unmapped"]["reasons"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn err_of(reply: &Reply) -> &str {
    reply
        .body
        .as_ref()
        .and_then(|b| b["err"].as_str())
        .unwrap_or("(no err)")
}

fn description_of(reply: &Reply) -> &str {
    reply
        .body
        .as_ref()
        .and_then(|b| b["description"].as_str())
        .unwrap_or("")
}

/// The mapped events of a SET that must verify.
async fn mapped(rx: &SsfReceiver, token: &str) -> Vec<intake::Received> {
    rx.verify(SET_HEADERS, token.as_bytes(), start())
        .await
        .unwrap_or_else(|e| panic!("the SET should verify: {e}"))
        .events
}

#[tokio::test]
async fn each_mapped_event_type_is_accepted_recorded_once_and_mapped() {
    let key = Key::new(KID);
    let cases: [(&str, RiskKind, &[&str], &str); 5] = [
        (
            SESSION_REVOKED,
            RiskKind::SessionRevoked,
            &["dMTlD|1600802906337.16|16008.16"],
            "event_timestamp=2021-03-09T15:49:51+00:00, txn=8675309",
        ),
        (
            SESSION_REVOKED_COMPLEX,
            RiskKind::SessionRevoked,
            &[
                "jane.smith@example.com",
                "e9297990-14d2-42ec-a4a9-4036db86509a",
                "123456789",
            ],
            "initiating_entity=policy, reason_admin=\"Policy Violation: C076E822\", event_timestamp=2021-03-09T15:49:51+00:00, txn=8675309",
        ),
        (
            CREDENTIAL_CHANGE,
            RiskKind::CredentialChange,
            &["jane.smith@example.com"],
            "change_type=create, credential_type=fido2-roaming, friendly_name=\"Jane's USB authenticator\", fido2_aaguid=accced6a-63f5-490a-9eea-e59bc1896cfc, initiating_entity=user, reason_admin=\"User self-enrollment\", event_timestamp=2021-03-09T15:49:51+00:00, txn=8675309",
        ),
        (
            CREDENTIAL_COMPROMISE,
            RiskKind::CredentialCompromise,
            &["joe.smith@example.com"],
            "credential_type=password",
        ),
        (
            ACCOUNT_DISABLED,
            RiskKind::AccountDisabled,
            &["7375626A656374"],
            "reason=hijacking",
        ),
    ];
    for (fixture, kind, subjects, detail) in cases {
        let st = stack();
        let rx = receiver(&[&key]);
        let set = claims(fixture, start());
        let jti = set["jti"].as_str().unwrap().to_string();
        let event_type = set["events"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        let token = key.sign(&set);

        let reply = push(&st, &rx, &token).await;
        assert_eq!(reply, Reply::empty(202), "{event_type}: {reply:?}");

        let events = mapped(&rx, &token).await;
        assert_eq!(events.len(), 1);
        let ev = &events[0];
        assert_eq!((ev.source, ev.event_id.as_str()), ("ssf", jti.as_str()));
        assert_eq!(ev.event_type, event_type);
        assert_eq!(ev.published, Some(start()));
        let signal = Signal::Risk {
            kind,
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            level: None,
            detail: detail.into(),
            ip: None,
        };
        assert_eq!(ev.signal.as_ref(), Some(&signal), "{event_type}");

        let recorded = received(&st.engine).await;
        assert_eq!(recorded.len(), 1, "{event_type}: one event recorded");
        assert_eq!(recorded[0]["unmapped"]["source"], "ssf");
        assert_eq!(recorded[0]["unmapped"]["event_uid"], jti.as_str());
        assert_eq!(recorded[0]["unmapped"]["event_type"], event_type.as_str());
        assert_eq!(
            recorded[0]["unmapped"]["signal"],
            serde_json::to_value(&signal).unwrap(),
            "{event_type}: the mapped signal is what is recorded"
        );
        assert!(refusals(&st.engine).await.is_empty());

        // The same SET again is a replay: refused, audited, and still recorded once.
        let again = push(&st, &rx, &token).await;
        assert_eq!((again.status, err_of(&again)), (400, "invalid_request"));
        assert!(description_of(&again).contains("replay"), "{again:?}");
        assert_eq!(
            received(&st.engine).await.len(),
            1,
            "{event_type}: recorded once"
        );
        assert_eq!(refusals(&st.engine).await.len(), 1);
    }
}

#[tokio::test]
async fn unknown_event_types_are_recorded_without_a_signal() {
    let key = Key::new(KID);
    let st = stack();
    let rx = receiver(&[&key]);
    let token = key.sign(&claims(VERIFICATION, start()));
    assert_eq!(push(&st, &rx, &token).await, Reply::empty(202));
    let events = mapped(&rx, &token).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].signal, None);
    assert_eq!(events[0].subject, "f67e39a0a4d34d56b3aa1bc4cff0069f");
    let recorded = received(&st.engine).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0]["unmapped"]["event_type"],
        "https://schemas.openid.net/secevent/ssf/event-type/verification"
    );
    assert_eq!(recorded[0]["unmapped"]["signal"], Value::Null);
}

#[tokio::test]
async fn a_set_with_several_events_records_each_under_its_own_id() {
    let key = Key::new(KID);
    let st = stack();
    let rx = receiver(&[&key]);
    let mut set = claims(CREDENTIAL_COMPROMISE, start());
    set["events"][ssf::ACCOUNT_DISABLED] = json!({"reason": "bulk-account"});
    let token = key.sign(&set);
    assert_eq!(push(&st, &rx, &token).await, Reply::empty(202));
    let mut ids: Vec<String> = received(&st.engine)
        .await
        .iter()
        .map(|v| v["unmapped"]["event_uid"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let jti = set["jti"].as_str().unwrap();
    assert_eq!(
        ids,
        [
            format!("{jti}#{}", ssf::ACCOUNT_DISABLED),
            format!("{jti}#{}", ssf::CREDENTIAL_COMPROMISE)
        ]
    );
}

#[tokio::test]
async fn lenient_where_the_specifications_allow() {
    let key = Key::new(KID);
    let st = stack();
    let rx = receiver(&[&key]);
    let now = start();
    // aud as an array, iat at the edges of the window, typ with the media-type prefix,
    // Content-Type with a parameter, no exp (SETs usually have none).
    let mut a = claims(SESSION_REVOKED, now - chrono::Duration::seconds(300));
    a["jti"] = json!("edge-old");
    a["aud"] = json!(["https://other.example.com", AUDIENCE]);
    let mut b = claims(SESSION_REVOKED, now + chrono::Duration::seconds(60));
    b["jti"] = json!("edge-future");
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("application/secevent+jwt".into());
    header.kid = Some(KID.into());
    let mut c = claims(SESSION_REVOKED, now);
    c["jti"] = json!("typ-prefixed");
    let prefixed = jsonwebtoken::encode(&header, &c, &key.encoding).unwrap();
    for token in [key.sign(&a), key.sign(&b), prefixed] {
        assert_eq!(push(&st, &rx, &token).await, Reply::empty(202));
    }
    let mut d = claims(SESSION_REVOKED, now);
    d["jti"] = json!("content-type-param");
    let headers: &[(&str, &str)] = &[("Content-Type", "application/secevent+jwt; charset=utf-8")];
    let reply = ssf::handle(&st.engine, &rx, headers, key.sign(&d).as_bytes())
        .await
        .unwrap();
    assert_eq!(reply, Reply::empty(202));
    assert_eq!(received(&st.engine).await.len(), 4);
}

/// One forged or broken request and the error it must get.
struct Forgery {
    name: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    err: SetErr,
}

fn forgeries(key: &Key, other: &Key) -> Vec<Forgery> {
    let now = start();
    let good = || claims(SESSION_REVOKED, now);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good();
        f(&mut c);
        c
    };
    let set_type = || vec![("content-type", "application/secevent+jwt".to_string())];
    let forgery = |name, body: String, err| Forgery {
        name,
        headers: set_type(),
        body: body.into_bytes(),
        err,
    };
    let header = |alg: &str| json!({"alg": alg, "typ": "secevent+jwt", "kid": KID});
    // The key-confusion attack: HS256 keyed with the transmitter's public key.
    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some("secevent+jwt".into());
    hs.kid = Some(KID.into());
    let hs_raw =
        jsonwebtoken::encode(&hs, &good(), &EncodingKey::from_secret(&key.public)).unwrap();
    let hs_x = jsonwebtoken::encode(
        &hs,
        &good(),
        &EncodingKey::from_secret(B64URL.encode(key.public).as_bytes()),
    )
    .unwrap();
    let valid = key.sign(&good());
    let (h, _, s) = {
        let p: Vec<&str> = valid.split('.').collect();
        (p[0].to_string(), p[1].to_string(), p[2].to_string())
    };
    let tampered = format!(
        "{h}.{}.{s}",
        b64(&with(
            &|c| c["aud"] = json!([AUDIENCE, "https://evil.example.com"])
        ))
    );
    let typed = |typ: Option<&str>| {
        let mut hd = Header::new(Algorithm::EdDSA);
        hd.typ = typ.map(str::to_string);
        hd.kid = Some(KID.into());
        jsonwebtoken::encode(&hd, &good(), &key.encoding).unwrap()
    };
    let mut crit = Header::new(Algorithm::EdDSA);
    crit.typ = Some("secevent+jwt".into());
    crit.kid = Some(KID.into());
    crit.crit = Some(vec!["exp".into()]);
    use SetErr::*;
    vec![
        forgery(
            "alg none",
            raw_jws(&header("none"), &good(), b""),
            AuthenticationFailed,
        ),
        forgery(
            "alg None, signed",
            raw_jws(&header("None"), &good(), b"x"),
            AuthenticationFailed,
        ),
        forgery("HS256 keyed with the public key bytes", hs_raw, InvalidKey),
        forgery("HS256 keyed with the JWK's x", hs_x, InvalidKey),
        forgery(
            "HS512 header",
            raw_jws(&header("HS512"), &good(), &[0; 64]),
            InvalidKey,
        ),
        forgery(
            "an algorithm Steward does not accept",
            raw_jws(&header("RS1"), &good(), &[0; 64]),
            InvalidKey,
        ),
        forgery(
            "signed by another key under the transmitter's kid",
            other.sign_as(&good(), KID),
            AuthenticationFailed,
        ),
        forgery(
            "claims changed after signing",
            tampered,
            AuthenticationFailed,
        ),
        forgery(
            "unknown kid",
            other.sign_as(&good(), "rotated-away"),
            InvalidKey,
        ),
        forgery(
            "EdDSA under an EC key's kid",
            key.sign_as(&good(), "ec-key"),
            InvalidKey,
        ),
        forgery(
            "ES256 claimed for an Ed25519 key",
            raw_jws(
                &json!({"alg": "ES256", "typ": "secevent+jwt", "kid": KID}),
                &good(),
                &[0; 64],
            ),
            InvalidKey,
        ),
        forgery(
            "wrong iss",
            key.sign(&with(&|c| c["iss"] = json!("https://evil.example.com/"))),
            InvalidIssuer,
        ),
        forgery(
            "no iss",
            key.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            })),
            InvalidIssuer,
        ),
        forgery(
            "wrong aud",
            key.sign(&with(&|c| c["aud"] = json!("https://sp.example.com/caep"))),
            InvalidAudience,
        ),
        forgery(
            "aud array without Steward",
            key.sign(&with(&|c| c["aud"] = json!(["a", "b"]))),
            InvalidAudience,
        ),
        forgery(
            "no aud",
            key.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            })),
            InvalidAudience,
        ),
        forgery(
            "stale iat",
            key.sign(&with(&|c| c["iat"] = json!((now.timestamp()) - 301))),
            InvalidRequest,
        ),
        forgery(
            "iat in the future",
            key.sign(&with(&|c| c["iat"] = json!((now.timestamp()) + 61))),
            InvalidRequest,
        ),
        forgery(
            "no iat",
            key.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            })),
            InvalidRequest,
        ),
        forgery(
            "expired exp",
            key.sign(&with(&|c| c["exp"] = json!((now.timestamp()) - 3600))),
            InvalidRequest,
        ),
        forgery(
            "no jti",
            key.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            })),
            InvalidRequest,
        ),
        forgery(
            "empty jti",
            key.sign(&with(&|c| c["jti"] = json!(""))),
            InvalidRequest,
        ),
        forgery(
            "no events",
            key.sign(&with(&|c| c["events"] = json!({}))),
            InvalidRequest,
        ),
        forgery(
            "events not an object",
            key.sign(&with(&|c| c["events"] = json!([ssf::SESSION_REVOKED]))),
            InvalidRequest,
        ),
        forgery("typ JWT", typed(Some("JWT")), InvalidRequest),
        forgery("no typ", typed(None), InvalidRequest),
        forgery(
            "critical header extension",
            jsonwebtoken::encode(&crit, &good(), &key.encoding).unwrap(),
            InvalidRequest,
        ),
        Forgery {
            name: "Content-Type application/json",
            headers: vec![("content-type", "application/json".into())],
            body: valid.clone().into_bytes(),
            err: InvalidRequest,
        },
        Forgery {
            name: "no Content-Type",
            headers: vec![],
            body: valid.clone().into_bytes(),
            err: InvalidRequest,
        },
        forgery("malformed body", "not a jwt".into(), InvalidRequest),
        forgery("JSON instead of a JWS", good().to_string(), InvalidRequest),
        forgery(
            "header not base64url JSON",
            format!("!!!.{}.{s}", b64(&good())),
            InvalidRequest,
        ),
        forgery(
            "a JWE",
            "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d".into(),
            InvalidRequest,
        ),
        Forgery {
            name: "oversized body",
            headers: set_type(),
            body: format!("{valid}{}", " ".repeat(ssf::MAX_BODY_BYTES)).into_bytes(),
            err: InvalidRequest,
        },
        Forgery {
            name: "binary body",
            headers: set_type(),
            body: vec![0xff, 0xfe, 0x00, 0x2e],
            err: InvalidRequest,
        },
    ]
}

#[tokio::test]
async fn each_forgery_is_refused_with_its_error_audited_and_leaves_nothing() {
    let key = Key::new(KID);
    let other = Key::new("other");
    let st = stack();
    let rx = receiver(&[&key]);
    let cases = forgeries(&key, &other);
    for (n, f) in cases.iter().enumerate() {
        let headers: Vec<(&str, &str)> = f.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = ssf::handle(&st.engine, &rx, headers.as_slice(), &f.body)
            .await
            .unwrap();
        assert_eq!(reply.status, 400, "{}: {reply:?}", f.name);
        assert_eq!(err_of(&reply), f.err.code(), "{}: {reply:?}", f.name);
        let description = description_of(&reply);
        assert!(!description.is_empty(), "{}", f.name);
        let reasons = refusals(&st.engine).await;
        assert_eq!(reasons.len(), n + 1, "{}: audited", f.name);
        let reason = reasons.last().unwrap();
        assert!(reason.starts_with(f.err.code()), "{}: {reason}", f.name);
        // Neither the answer nor the audit repeats the token.
        let text = String::from_utf8_lossy(&f.body);
        for part in text.split('.').filter(|p| p.trim().len() > 16) {
            assert!(
                !description.contains(part.trim()),
                "{}: echoes the token",
                f.name
            );
            assert!(
                !reason.contains(part.trim()),
                "{}: audit echoes the token",
                f.name
            );
        }
    }
    assert!(
        received(&st.engine).await.is_empty(),
        "no forgery is recorded"
    );
    // Nothing was remembered either: the genuine SET with the same jti is still accepted.
    let genuine = key.sign(&claims(SESSION_REVOKED, start()));
    assert_eq!(push(&st, &rx, &genuine).await, Reply::empty(202));
    assert_eq!(received(&st.engine).await.len(), 1);
}

#[tokio::test]
async fn the_engine_clock_decides_the_age_window() {
    let key = Key::new(KID);
    let st = stack();
    let rx = receiver(&[&key]);
    let token = key.sign(&claims(CREDENTIAL_COMPROMISE, start()));
    *st.clock.0.lock().unwrap() = start() + chrono::Duration::seconds(301);
    let reply = push(&st, &rx, &token).await;
    assert_eq!((reply.status, err_of(&reply)), (400, "invalid_request"));
    assert!(description_of(&reply).contains("301 s ago"), "{reply:?}");
    *st.clock.0.lock().unwrap() = start() + chrono::Duration::seconds(299);
    assert_eq!(push(&st, &rx, &token).await, Reply::empty(202));
}

#[tokio::test]
async fn authorization_is_required_when_configured() {
    let key = Key::new(KID);
    let st = stack();
    let mut s = settings(&[&key]);
    s.authorization = Some(Secret::new("Bearer s3cr3t-value"));
    let rx = SsfReceiver::new(s).unwrap();
    let token = key.sign(&claims(SESSION_REVOKED, start()));
    let ct = ("content-type", "application/secevent+jwt");
    for (headers, what) in [
        (vec![ct], "missing Authorization header"),
        (
            vec![ct, ("authorization", "Bearer wrong")],
            "wrong Authorization header",
        ),
        (
            vec![ct, ("authorization", "Bearer s3cr3t-value-and-more")],
            "wrong Authorization header",
        ),
    ] {
        let reply = ssf::handle(&st.engine, &rx, headers.as_slice(), token.as_bytes())
            .await
            .unwrap();
        assert_eq!(
            (reply.status, err_of(&reply)),
            (400, "authentication_failed")
        );
        assert_eq!(description_of(&reply), what);
        assert!(!description_of(&reply).contains("s3cr3t"));
    }
    assert_eq!(refusals(&st.engine).await.len(), 3);
    assert!(received(&st.engine).await.is_empty());
    let headers = [ct, ("Authorization", "Bearer s3cr3t-value")];
    let reply = ssf::handle(&st.engine, &rx, headers.as_slice(), token.as_bytes())
        .await
        .unwrap();
    assert_eq!(reply, Reply::empty(202));
}

#[tokio::test]
async fn a_crash_between_accepting_and_remembering_the_jti_loses_nothing() {
    let key = Key::new(KID);
    let st = stack();
    let rx = receiver(&[&key]);
    let token = key.sign(&claims(CREDENTIAL_CHANGE, start()));
    // The first delivery got as far as intake, then the process died before answering.
    intake::accept(&st.engine, mapped(&rx, &token).await)
        .await
        .unwrap();
    // The transmitter's retry is accepted (not called a replay) and recorded once.
    assert_eq!(push(&st, &rx, &token).await, Reply::empty(202));
    assert_eq!(received(&st.engine).await.len(), 1);
    assert!(refusals(&st.engine).await.is_empty());
}

#[test]
fn settings_from_the_environment() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    assert!(SsfSettings::from_lookup(vars(&[])).unwrap().is_none());
    let s = SsfSettings::from_lookup(vars(&[
        (ssf::ISSUER_ENV, ISSUER),
        (ssf::AUDIENCE_ENV, AUDIENCE),
        (ssf::JWKS_URL_ENV, "https://transmitter.example.com/jwks"),
        (ssf::AUTHORIZATION_ENV, "Bearer abc"),
        (ssf::MAX_AGE_ENV, "10m"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!((s.issuer.as_str(), s.audience.as_str()), (ISSUER, AUDIENCE));
    assert_eq!(s.max_age, Duration::from_secs(600));
    assert_eq!(s.authorization, Some(Secret::new("Bearer abc")));
    assert!(
        !format!("{s:?}").contains("abc"),
        "Debug hides the Authorization value"
    );
    assert!(matches!(s.jwks, JwksSource::Url(_)));

    let err = |pairs| SsfSettings::from_lookup(vars(pairs)).unwrap_err();
    assert_eq!(
        err(&[(ssf::ISSUER_ENV, ISSUER)]),
        SsfConfigError::Missing {
            missing: ssf::AUDIENCE_ENV
        }
    );
    assert_eq!(
        err(&[(ssf::ISSUER_ENV, ISSUER), (ssf::AUDIENCE_ENV, AUDIENCE)]),
        SsfConfigError::Missing {
            missing: ssf::JWKS_URL_ENV
        }
    );
    assert_eq!(
        err(&[
            (ssf::ISSUER_ENV, ISSUER),
            (ssf::AUDIENCE_ENV, AUDIENCE),
            (ssf::JWKS_URL_ENV, "https://t.example.com/jwks"),
            (ssf::JWKS_FILE_ENV, "/etc/jwks.json"),
        ]),
        SsfConfigError::TwoJwksSources
    );
    assert!(matches!(
        err(&[
            (ssf::ISSUER_ENV, ISSUER),
            (ssf::AUDIENCE_ENV, AUDIENCE),
            (ssf::JWKS_URL_ENV, "http://transmitter.example.com/jwks"),
        ]),
        SsfConfigError::InsecureJwksUrl { .. }
    ));
    assert!(matches!(
        err(&[
            (ssf::ISSUER_ENV, ISSUER),
            (ssf::AUDIENCE_ENV, AUDIENCE),
            (ssf::JWKS_URL_ENV, "https://t.example.com/jwks"),
            (ssf::MAX_AGE_ENV, "3 days"),
        ]),
        SsfConfigError::BadMaxAge { .. }
    ));
    // Plain http is for a transmitter on this machine only.
    assert!(
        SsfSettings::from_lookup(vars(&[
            (ssf::ISSUER_ENV, ISSUER),
            (ssf::AUDIENCE_ENV, AUDIENCE),
            (ssf::JWKS_URL_ENV, "http://127.0.0.1:9999/jwks"),
        ]))
        .is_ok()
    );
}

#[test]
fn unusable_key_sets_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let only = |jwk: Value| {
        std::fs::write(&path, json!({ "keys": [jwk] }).to_string()).unwrap();
        SsfReceiver::new(SsfSettings::new(
            ISSUER,
            AUDIENCE,
            JwksSource::File(path.clone()),
        ))
    };
    let refused =
        |r: Result<SsfReceiver, SsfConfigError>| matches!(r, Err(SsfConfigError::Keys { .. }));
    assert!(refused(only(
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"})
    )));
    assert!(
        refused(only(
            json!({"kty": "RSA", "n": B64URL.encode([0xc3; 128]), "e": "AQAB"})
        )),
        "a 1024-bit RSA key is refused"
    );
    let key = Key::new(KID);
    let mut enc = key.jwk();
    enc["use"] = json!("enc");
    assert!(refused(only(enc)));
    let mut short = key.jwk();
    short["x"] = json!(B64URL.encode([1u8; 16]));
    assert!(
        refused(only(short)),
        "a short Ed25519 key never reaches the verifier"
    );
    assert!(only(key.jwk()).is_ok());
    assert!(matches!(
        SsfReceiver::new(SsfSettings::new(
            ISSUER,
            AUDIENCE,
            JwksSource::File(dir.path().join("missing.json"))
        )),
        Err(SsfConfigError::Keys { .. })
    ));
}

/// A JWKS endpoint on 127.0.0.1 that counts its requests.
struct JwksServer {
    url: String,
    jwks: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks_server(initial: Value) -> JwksServer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let jwks = Arc::new(Mutex::new(initial));
    let hits = Arc::new(AtomicUsize::new(0));
    let (doc, count) = (jwks.clone(), hits.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            count.fetch_add(1, Ordering::SeqCst);
            let body = doc.lock().unwrap().to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
    });
    JwksServer { url, jwks, hits }
}

#[tokio::test]
async fn keys_are_fetched_once_and_again_for_a_new_kid() {
    let first = Key::new("k1");
    let second = Key::new("k2");
    let server = jwks_server(json!({"keys": [first.jwk()]})).await;
    let mut s = SsfSettings::new(ISSUER, AUDIENCE, JwksSource::Url(server.url.clone()));
    s.jwks_min_refresh = Duration::ZERO;
    let rx = SsfReceiver::new(s).unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 0, "fetched lazily");
    let st = stack();
    let mut set = claims(SESSION_REVOKED, start());
    for (n, jti) in ["a", "b"].into_iter().enumerate() {
        set["jti"] = json!(jti);
        assert_eq!(
            push(&st, &rx, &first.sign(&set)).await,
            Reply::empty(202),
            "{n}"
        );
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "cached");
    // The transmitter rotates: the first SET under the new kid makes Steward look again.
    *server.jwks.lock().unwrap() = json!({"keys": [second.jwk()]});
    set["jti"] = json!("c");
    assert_eq!(push(&st, &rx, &second.sign(&set)).await, Reply::empty(202));
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn forged_kids_cannot_make_steward_hammer_the_transmitter() {
    let key = Key::new("k1");
    let forger = Key::new("forger");
    let server = jwks_server(json!({"keys": [key.jwk()]})).await;
    let rx = SsfReceiver::new(SsfSettings::new(
        ISSUER,
        AUDIENCE,
        JwksSource::Url(server.url.clone()),
    ))
    .unwrap();
    let st = stack();
    let set = claims(SESSION_REVOKED, start());
    // The first unknown kid: the keys are loaded now, so it is refused for good.
    let reply = push(&st, &rx, &forger.sign_as(&set, "forged-0")).await;
    assert_eq!((reply.status, err_of(&reply)), (400, "invalid_key"));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    // More unknown kids within the minimum interval: no fetch; "retry later", since a key
    // published meanwhile would be genuine.
    for n in 1..20 {
        let reply = push(&st, &rx, &forger.sign_as(&set, &format!("forged-{n}"))).await;
        assert_eq!(reply.status, 503, "{reply:?}");
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "one fetch for 20 forged kids"
    );
    assert_eq!(refusals(&st.engine).await.len(), 20, "each one audited");
    // The genuine key still works.
    assert_eq!(push(&st, &rx, &key.sign(&set)).await, Reply::empty(202));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unreachable_transmitter_is_retry_later_not_a_refusal() {
    let key = Key::new(KID);
    // Bind and drop a listener: nothing answers on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rx = SsfReceiver::new(SsfSettings::new(
        ISSUER,
        AUDIENCE,
        JwksSource::Url(format!("http://127.0.0.1:{port}/jwks")),
    ))
    .unwrap();
    let st = stack();
    let token = key.sign(&claims(SESSION_REVOKED, start()));
    let reply = push(&st, &rx, &token).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(matches!(
        rx.verify(SET_HEADERS, token.as_bytes(), start()).await,
        Err(Rejected::Unavailable(_))
    ));
    assert_eq!(refusals(&st.engine).await.len(), 1);
    assert!(received(&st.engine).await.is_empty());
}
