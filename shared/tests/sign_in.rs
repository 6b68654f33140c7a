//! Person tokens: what `PersonTokens` accepts and each forgery it refuses. The issuer here is an
//! Ed25519 key made by the test with its JWKS given as a document; the checks against a running
//! OpenID provider are in the end-to-end tests.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shared::jwks::JwksSource;
use shared::sign_in::{IssuerSettings, PersonTokens, TokenRefused};

const ISSUER: &str = "https://id.example.com";
const AUDIENCE: &str = "api://steward";

struct Issuer {
    key: SigningKey,
    kid: &'static str,
}

impl Issuer {
    fn new(seed: u8, kid: &'static str) -> Self {
        Issuer {
            key: SigningKey::from_bytes(&[seed; 32]),
            kid,
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
            "x": B64URL.encode(self.key.verifying_key().as_bytes()),
        })
    }

    fn sign(&self, claims: &Value) -> String {
        let der = self.key.to_pkcs8_der().unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "00u1alice", "email": " Alice@Example.com ",
        "iat": now(), "exp": now() + 600, "jti": "tok-1",
    })
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn verifier(issuer: &Issuer) -> PersonTokens {
    let mut s = IssuerSettings::new(ISSUER, AUDIENCE);
    s.jwks = Some(JwksSource::Json(json!({"keys": [issuer.jwk()]})));
    PersonTokens::new(s).unwrap()
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    )
}

#[tokio::test]
async fn a_valid_token_names_the_person_normalised_and_its_token_id() {
    let issuer = Issuer::new(1, "k1");
    let person = verifier(&issuer)
        .verify(&issuer.sign(&claims()))
        .await
        .unwrap();
    assert_eq!(person.id, "alice@example.com");
    assert_eq!(person.subject, "00u1alice");
    assert_eq!(person.token_id, "tok-1");

    // Without a jti, a digest names the token; the token itself never appears.
    let token = issuer.sign(&with(claims(), "jti", Value::Null));
    let person = verifier(&issuer).verify(&token).await.unwrap();
    assert!(
        person.token_id.starts_with("sha256:"),
        "{}",
        person.token_id
    );
    assert!(!person.token_id.contains(&token));

    // `aud` may be an array that contains Steward's audience.
    let token = issuer.sign(&with(claims(), "aud", json!(["other", AUDIENCE])));
    assert!(verifier(&issuer).verify(&token).await.is_ok());
}

#[tokio::test]
async fn the_person_claim_is_configurable() {
    let issuer = Issuer::new(1, "k1");
    let mut s = IssuerSettings::new(ISSUER, AUDIENCE);
    s.jwks = Some(JwksSource::Json(json!({"keys": [issuer.jwk()]})));
    s.person_claim = "sub".into();
    let person = PersonTokens::new(s)
        .unwrap()
        .verify(&issuer.sign(&claims()))
        .await
        .unwrap();
    assert_eq!(
        person.id, "00u1alice",
        "sub is compared as the issuer wrote it"
    );
}

/// What a refusal must be.
type Expect = fn(&TokenRefused) -> bool;

/// Every forgery is refused with a message that says what was wrong and never the token.
#[tokio::test]
async fn forgeries_are_refused_each_with_its_reason() {
    let issuer = Issuer::new(1, "k1");
    let stranger = Issuer::new(2, "k1");
    let unknown_kid = Issuer::new(1, "k9");
    let v = verifier(&issuer);
    let public_key = issuer.key.verifying_key().to_bytes();
    let hmac_with_public_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&public_key),
    )
    .unwrap();

    let cases: Vec<(&str, String, Expect)> = vec![
        ("not a JWT", "not-a-token".into(), |e| {
            matches!(e, TokenRefused::Malformed(_))
        }),
        (
            "alg none",
            unsigned(json!({"alg": "none", "kid": "k1"}), &claims()),
            |e| matches!(e, TokenRefused::Algorithm(m) if m.contains("none")),
        ),
        (
            "HMAC signed with the public key",
            hmac_with_public_key,
            |e| matches!(e, TokenRefused::Algorithm(m) if m.contains("HS256")),
        ),
        ("signed by another key", stranger.sign(&claims()), |e| {
            *e == TokenRefused::Signature
        }),
        (
            "unknown kid",
            unknown_kid.sign(&claims()),
            |e| matches!(e, TokenRefused::Key(m) if m.contains("k9")),
        ),
        (
            "expired beyond the skew",
            issuer.sign(&with(claims(), "exp", json!(now() - 120))),
            |e| *e == TokenRefused::Expired,
        ),
        (
            "not valid yet beyond the skew",
            issuer.sign(&with(claims(), "nbf", json!(now() + 300))),
            |e| *e == TokenRefused::NotYetValid,
        ),
        (
            "wrong issuer",
            issuer.sign(&with(claims(), "iss", json!("https://evil.example.com"))),
            |e| matches!(e, TokenRefused::Issuer(i) if i == "https://evil.example.com"),
        ),
        (
            "wrong audience",
            issuer.sign(&with(claims(), "aud", json!("api://other"))),
            |e| matches!(e, TokenRefused::Audience(_)),
        ),
        (
            "no exp",
            issuer.sign(&with(claims(), "exp", Value::Null)),
            |e| matches!(e, TokenRefused::Malformed(_)),
        ),
        (
            "no person claim",
            issuer.sign(&with(claims(), "email", Value::Null)),
            |e| matches!(e, TokenRefused::NoPerson(c) if c == "email"),
        ),
        (
            "unverified e-mail",
            issuer.sign(&with(claims(), "email_verified", json!(false))),
            |e| *e == TokenRefused::EmailNotVerified,
        ),
    ];
    for (what, token, expected) in cases {
        let refused = v
            .verify(&token)
            .await
            .expect_err(&format!("{what} must be refused"));
        assert!(expected(&refused), "{what}: refused as {refused:?}");
        assert_eq!(refused.status(), 401, "{what}");
        assert!(
            !refused.to_string().contains(&token) || token.len() < 12,
            "{what}: the message shows the token"
        );
    }

    // Within the skew, an expired token still passes (clocks differ by seconds).
    let token = issuer.sign(&with(claims(), "exp", json!(now() - 20)));
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_a_forgery() {
    // Discovery on a port nothing listens on: 503, try again later.
    let s = IssuerSettings::new("http://127.0.0.1:9", AUDIENCE);
    let v = PersonTokens::new(s).unwrap();
    let issuer = Issuer::new(1, "k1");
    let refused = v.verify(&issuer.sign(&claims())).await.unwrap_err();
    assert!(
        matches!(&refused, TokenRefused::Unavailable(m) if m.contains("discovery")),
        "{refused:?}"
    );
    assert_eq!(refused.status(), 503);
}

#[test]
fn settings_refuse_what_cannot_work() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    assert!(IssuerSettings::from_lookup(env(&[])).unwrap().is_none());
    let e = IssuerSettings::from_lookup(env(&[("STEWARD_OIDC_ISSUER", ISSUER)])).unwrap_err();
    assert!(e.to_string().contains("STEWARD_OIDC_AUDIENCE"), "{e}");
    let e = IssuerSettings::from_lookup(env(&[
        ("STEWARD_OIDC_ISSUER", "http://id.example.com"),
        ("STEWARD_OIDC_AUDIENCE", AUDIENCE),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("https"), "{e}");
    let s = IssuerSettings::from_lookup(env(&[
        ("STEWARD_OIDC_ISSUER", ISSUER),
        ("STEWARD_OIDC_AUDIENCE", AUDIENCE),
        ("STEWARD_OIDC_PERSON_CLAIM", "preferred_username"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(s.person_claim, "preferred_username");
}

mod admin_api {
    //! Who the admin API lets in, and as whom: `BearerTokens`, personal tokens, `Caller::acting`.

    use super::*;
    use axum::http::{Request, StatusCode, header::AUTHORIZATION};
    use shared::Secret;
    use shared::http::{Authenticate, BearerTokens, Caller, Principal};
    use shared::people_file::PeopleFileDirectory;
    use std::sync::Arc;

    const PEOPLE: &str = r#"
[[person]]
email = "alice@example.com"
name = "Alice Ng"

[[person]]
email = "carol@example.com"
name = "Carol Left"
active = false
"#;

    fn tokens(issuer: &Issuer) -> BearerTokens {
        BearerTokens {
            admin: Secret::new("stw_admin"),
            people: Some(Arc::new(verifier(issuer))),
            directory: Arc::new(PeopleFileDirectory::parse(PEOPLE).unwrap()),
            tokens: Arc::new(NoTokens),
        }
    }

    /// A token store with nothing in it.
    struct NoTokens;

    #[async_trait::async_trait]
    impl shared::ports::PersonalTokens for NoTokens {
        async fn put_token(
            &self,
            _: &shared::ports::personal_tokens::PersonalToken,
        ) -> Result<(), shared::ports::store::StoreError> {
            Err(shared::ports::store::StoreError::Backend(
                "read-only".into(),
            ))
        }
        async fn token(
            &self,
            _: &str,
        ) -> Result<
            Option<shared::ports::personal_tokens::PersonalToken>,
            shared::ports::store::StoreError,
        > {
            Ok(None)
        }
        async fn tokens_of(
            &self,
            _: &str,
        ) -> Result<
            Vec<shared::ports::personal_tokens::PersonalToken>,
            shared::ports::store::StoreError,
        > {
            Ok(vec![])
        }
        async fn revoke_token(
            &self,
            _: &str,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<bool, shared::ports::store::StoreError> {
            Ok(false)
        }
    }

    async fn call(
        auth: &BearerTokens,
        bearer: Option<&str>,
    ) -> Result<Caller, (StatusCode, String)> {
        let mut req = Request::builder().uri("/api/agents");
        if let Some(b) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {b}"));
        }
        let (parts, ()) = req.body(()).unwrap().into_parts();
        auth.authenticate(&parts)
            .await
            .map_err(|e| (e.status, e.why))
    }

    #[tokio::test]
    async fn people_sign_in_and_the_admin_token_is_automation() {
        let issuer = Issuer::new(1, "k1");
        let auth = tokens(&issuer);

        let caller = call(&auth, Some(&issuer.sign(&claims()))).await.unwrap();
        assert_eq!(
            caller.principal,
            Principal::Person {
                id: "alice@example.com".into(),
                token_id: "tok-1".into(),
                via: shared::http::Credential::SignIn,
            }
        );
        let caller = call(&auth, Some("stw_admin")).await.unwrap();
        assert_eq!(caller, Caller::automation("admin-token holder"));

        let refusals = [
            (None, StatusCode::UNAUTHORIZED, "missing bearer token"),
            (
                Some("stw_wrong".to_string()),
                StatusCode::UNAUTHORIZED,
                "wrong bearer token",
            ),
            (
                Some(issuer.sign(&with(claims(), "exp", json!(now() - 600)))),
                StatusCode::UNAUTHORIZED,
                "expired",
            ),
            (
                Some(Issuer::new(2, "k1").sign(&claims())),
                StatusCode::UNAUTHORIZED,
                "signature",
            ),
            (
                Some(issuer.sign(&with(claims(), "email", json!("carol@example.com")))),
                StatusCode::FORBIDDEN,
                "carol@example.com is no longer active",
            ),
            (
                Some(issuer.sign(&with(claims(), "email", json!("mallory@example.com")))),
                StatusCode::FORBIDDEN,
                "mallory@example.com is not in the directory",
            ),
        ];
        for (bearer, status, why) in refusals {
            let (got, message) = call(&auth, bearer.as_deref()).await.unwrap_err();
            assert_eq!(got, status, "{why}: {message}");
            assert!(message.contains(why), "{message} should say {why}");
        }
    }

    #[tokio::test]
    async fn personal_tokens_act_as_their_person_until_revoked_or_expired() {
        use shared::http::Credential;
        use shared::personal_token::mint;
        let issuer = Issuer::new(1, "k1");
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(
            shared::embedded::Db::open(
                &dir.path().join("steward.db"),
                shared::embedded::Durability::Wal,
            )
            .unwrap(),
        );
        let auth = BearerTokens {
            tokens: db.clone(),
            ..tokens(&issuer)
        };
        let now = chrono::Utc::now();
        let (record, token) = mint(db.as_ref(), "alice@example.com", "ci", Some("30d"), now)
            .await
            .unwrap();
        let caller = call(&auth, Some(token.expose())).await.unwrap();
        assert_eq!(
            caller.principal,
            Principal::Person {
                id: "alice@example.com".into(),
                token_id: record.id.clone(),
                via: Credential::PersonalToken,
            }
        );
        assert_eq!(caller.acting(), "alice@example.com");
        assert_eq!(
            Caller::automation("admin-token holder").acting(),
            "automation:admin-token holder",
            "automation never passes for a person"
        );

        // The same id with another secret is no token at all.
        let forged = format!("{}{}", &token.expose()[..21], "A".repeat(43));
        let (status, why) = call(&auth, Some(&forged)).await.unwrap_err();
        assert_eq!(
            (status, why.as_str()),
            (StatusCode::UNAUTHORIZED, "unknown personal token")
        );

        let (_, old) = mint(
            db.as_ref(),
            "alice@example.com",
            "old",
            Some("1day"),
            now - chrono::Duration::days(2),
        )
        .await
        .unwrap();
        let (status, why) = call(&auth, Some(old.expose())).await.unwrap_err();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(why.contains("expired"), "{why}");

        let (_, carols) = mint(db.as_ref(), "carol@example.com", "ci", None, now)
            .await
            .unwrap();
        let (status, why) = call(&auth, Some(carols.expose())).await.unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN, "{why}");

        shared::ports::PersonalTokens::revoke_token(db.as_ref(), &record.id, now)
            .await
            .unwrap();
        let (status, why) = call(&auth, Some(token.expose())).await.unwrap_err();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(why.contains("revoked"), "{why}");

        mint(db.as_ref(), "bob@example.com", "ci", None, now)
            .await
            .unwrap();
        for (name, ttl, wrong) in [
            ("bad name!", None, "token name"),
            ("long", Some("400days"), "365 days"),
            ("ci", None, "live token named `ci`"),
        ] {
            let e = mint(db.as_ref(), "bob@example.com", name, ttl, now)
                .await
                .unwrap_err();
            assert!(e.to_string().contains(wrong), "{e}");
        }
    }
}
