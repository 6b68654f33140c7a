//! The development identity provider: client creation (idempotent by key), grants, activation,
//! and the client_credentials token it issues (an EdDSA JWT verifiable with its JWKS).

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use shared::embedded::{Db, Durability};
use shared::idp::dev::{DEFAULT_AUDIENCE, DevIdp, OAuthError};
use shared::ports::IdentityProvider;
use shared::ports::idp::{ClientSpec, CreatedClient, IdpError};
use std::path::Path;
use std::sync::Arc;

const ISSUER: &str = "http://127.0.0.1:8787";
const LIFETIME: u32 = 600;

struct Fixture {
    idp: DevIdp,
    dir: tempfile::TempDir,
}

fn open_idp(dir: &Path) -> DevIdp {
    let db = Arc::new(Db::open(&dir.join("steward.db"), Durability::Wal).unwrap());
    DevIdp::open(db, &dir.join("idp-signing-key.pem"), ISSUER).unwrap()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        idp: open_idp(dir.path()),
        dir,
    }
}

fn spec() -> ClientSpec {
    ClientSpec {
        agent_id: "agt-1".into(),
        name: "orders-agent-prod".into(),
        scopes: vec![
            "erp:orders:read".into(),
            "erp:inventory:read".into(),
            "okta:logs:read".into(),
        ],
        token_lifetime_secs: LIFETIME,
    }
}

async fn client(idp: &DevIdp) -> CreatedClient {
    idp.create_client(&spec(), "onboarding-x/1/2")
        .await
        .unwrap()
}

fn decoding_key(idp: &DevIdp) -> DecodingKey {
    let jwks = idp.jwks();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap()
}

fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[DEFAULT_AUDIENCE]);
    v.set_issuer(&[ISSUER]);
    v
}

fn verify(idp: &DevIdp, token: &str) -> Value {
    jsonwebtoken::decode::<Value>(token, &decoding_key(idp), &validation())
        .unwrap()
        .claims
}

fn token_err(idp: &DevIdp, client_id: &str, secret: &str, scope: Option<&str>) -> OAuthError {
    idp.issue_token(client_id, secret, scope, Utc::now())
        .expect_err("the token request must be refused")
}

#[tokio::test]
async fn unknown_client_and_wrong_secret_get_the_same_answer() {
    let f = fixture();
    let c = client(&f.idp).await;
    let unknown = token_err(&f.idp, "dev_0000000000000000", c.secret.expose(), None);
    let wrong = token_err(&f.idp, &c.client_id, "not-the-secret", None);
    assert_eq!(unknown.error, "invalid_client");
    assert_eq!(unknown.status, 401);
    assert_eq!(
        (unknown.error, &unknown.error_description, unknown.status),
        (wrong.error, &wrong.error_description, wrong.status),
        "do not reveal which client ids exist"
    );
    assert_eq!(unknown.to_string(), wrong.to_string());
    let empty = token_err(&f.idp, &c.client_id, "", None);
    assert_eq!(empty.to_string(), wrong.to_string());
}

#[tokio::test]
async fn a_deactivated_client_gets_no_token() {
    let f = fixture();
    let c = client(&f.idp).await;
    f.idp.set_active(&c.client_id, false).await.unwrap();
    assert!(!f.idp.client(&c.client_id).await.unwrap().unwrap().active);
    let e = token_err(&f.idp, &c.client_id, c.secret.expose(), None);
    assert_eq!(e.error, "invalid_client");
    assert_eq!(e.status, 401);
    f.idp.set_active(&c.client_id, true).await.unwrap();
    assert!(
        f.idp
            .issue_token(&c.client_id, c.secret.expose(), None, Utc::now())
            .is_ok()
    );
}

#[tokio::test]
async fn scopes_outside_the_grant_are_refused() {
    let f = fixture();
    let c = client(&f.idp).await;
    for scope in [
        "banking:payments:write",
        "erp:orders:read banking:payments:write",
        "erp:orders:write",
    ] {
        let e = token_err(&f.idp, &c.client_id, c.secret.expose(), Some(scope));
        assert_eq!(e.error, "invalid_scope", "{scope}");
        assert_eq!(e.status, 400);
        let outside = scope.split(' ').next_back().unwrap();
        assert!(e.error_description.contains(outside), "{e}");
        assert!(!e.error_description.contains("erp:orders:read "), "{e}");
    }
}

#[tokio::test]
async fn a_subset_of_the_grant_is_issued_as_a_verifiable_jwt() {
    let f = fixture();
    let c = client(&f.idp).await;
    let t = f
        .idp
        .issue_token(
            &c.client_id,
            c.secret.expose(),
            Some("erp:orders:read  okta:logs:read"),
            Utc::now(),
        )
        .unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_in, LIFETIME);
    assert_eq!(t.scope, "erp:orders:read okta:logs:read");

    let header = jsonwebtoken::decode_header(&t.access_token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(
        header.kid.as_deref(),
        f.idp.jwks()["keys"][0]["kid"].as_str()
    );
    let claims = verify(&f.idp, &t.access_token);
    assert_eq!(
        claims["scp"],
        serde_json::json!(["erp:orders:read", "okta:logs:read"])
    );
    assert_eq!(claims["scope"], "erp:orders:read okta:logs:read");
    assert_eq!(claims["sub"], c.client_id);
    assert_eq!(claims["client_id"], c.client_id);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], DEFAULT_AUDIENCE);
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, i64::from(LIFETIME));
    assert_eq!(claims["nbf"].as_i64(), Some(iat));
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));

    // Without a scope parameter (or with a blank one) the whole grant is issued.
    for scope in [None, Some(""), Some("   ")] {
        let all = f
            .idp
            .issue_token(&c.client_id, c.secret.expose(), scope, Utc::now())
            .unwrap();
        assert_eq!(
            verify(&f.idp, &all.access_token)["scp"],
            serde_json::json!(spec().scopes)
        );
    }
}

#[tokio::test]
async fn another_key_does_not_verify_the_token() {
    let f = fixture();
    let c = client(&f.idp).await;
    let t = f
        .idp
        .issue_token(&c.client_id, c.secret.expose(), None, Utc::now())
        .unwrap();
    let other = fixture();
    assert_ne!(other.idp.jwks(), f.idp.jwks());
    assert!(
        jsonwebtoken::decode::<Value>(&t.access_token, &decoding_key(&other.idp), &validation())
            .is_err()
    );
    // A token issued long ago has expired.
    let old = f
        .idp
        .issue_token(
            &c.client_id,
            c.secret.expose(),
            None,
            Utc::now() - chrono::Duration::hours(2),
        )
        .unwrap();
    assert!(
        jsonwebtoken::decode::<Value>(&old.access_token, &decoding_key(&f.idp), &validation())
            .is_err()
    );
}

#[tokio::test]
async fn grants_change_what_is_issued() {
    let f = fixture();
    let c = client(&f.idp).await;
    f.idp
        .set_grants(&c.client_id, &["okta:logs:read".to_string()], 300)
        .await
        .unwrap();
    let info = f.idp.client(&c.client_id).await.unwrap().unwrap();
    assert_eq!(info.scopes, vec!["okta:logs:read"]);
    assert_eq!(info.token_lifetime_secs, 300);
    let e = token_err(
        &f.idp,
        &c.client_id,
        c.secret.expose(),
        Some("erp:orders:read"),
    );
    assert_eq!(e.error, "invalid_scope");
    let t = f
        .idp
        .issue_token(&c.client_id, c.secret.expose(), None, Utc::now())
        .unwrap();
    assert_eq!(t.expires_in, 300);
    let claims = verify(&f.idp, &t.access_token);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert!(matches!(
        f.idp.set_grants("dev_missing", &[], 300).await,
        Err(IdpError::UnknownClient(_))
    ));
    assert!(matches!(
        f.idp.set_active("dev_missing", false).await,
        Err(IdpError::UnknownClient(_))
    ));
    assert_eq!(f.idp.client("dev_missing").await.unwrap(), None);
}

/// Repeating a creation (its answer was lost) returns the same client with a new secret that
/// replaces the first one.
#[tokio::test]
async fn create_client_is_idempotent_by_key() {
    let f = fixture();
    let first = client(&f.idp).await;
    let second = client(&f.idp).await;
    assert_eq!(first.client_id, second.client_id);
    assert_ne!(first.secret_id, second.secret_id);
    assert_ne!(first.secret.expose(), second.secret.expose());
    assert_eq!(f.idp.list_clients().await.unwrap().len(), 1);
    let e = token_err(&f.idp, &first.client_id, first.secret.expose(), None);
    assert_eq!(e.error, "invalid_client", "the lost first secret is gone");
    assert!(
        f.idp
            .issue_token(&second.client_id, second.secret.expose(), None, Utc::now())
            .is_ok()
    );

    let other = f
        .idp
        .create_client(&spec(), "onboarding-y/1/2")
        .await
        .unwrap();
    assert_ne!(other.client_id, first.client_id);
    let clients = f.idp.list_clients().await.unwrap();
    assert_eq!(clients.len(), 2);
    let info = &clients[0];
    assert_eq!(info.client_id, first.client_id);
    assert_eq!(info.name, "orders-agent-prod");
    assert_eq!(info.scopes, spec().scopes);
    assert_eq!(info.token_lifetime_secs, LIFETIME);
    assert!(info.active);
    // Creating another client does not touch this one.
    assert!(
        f.idp
            .issue_token(&second.client_id, second.secret.expose(), None, Utc::now())
            .is_ok()
    );
}

/// The signing key is generated once (owner-only) and reused: tokens stay verifiable.
#[tokio::test]
async fn the_signing_key_persists() {
    let f = fixture();
    let c = client(&f.idp).await;
    let t = f
        .idp
        .issue_token(&c.client_id, c.secret.expose(), None, Utc::now())
        .unwrap();
    let again = open_idp(f.dir.path());
    assert_eq!(again.jwks(), f.idp.jwks());
    verify(&again, &t.access_token);
    assert_eq!(again.issuer(), ISSUER);
    assert_eq!(
        again.metadata()["token_endpoint"],
        format!("{ISSUER}/oauth2/v1/token")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f.dir.path().join("idp-signing-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// Rotation at the IdP: a second secret works beside the first; a third is refused (Okta's
/// limit); the repeat of an add replaces its own secret; the only secret cannot be removed.
#[tokio::test]
async fn secrets_rotate_two_at_a_time() {
    let f = fixture();
    let idp = &f.idp;
    let c = client(idp).await;
    let works = |s: &shared::Secret| {
        idp.issue_token(&c.client_id, s.expose(), None, Utc::now())
            .is_ok()
    };
    let second = idp.add_secret(&c.client_id, "rot-1").await.unwrap();
    assert!(works(&c.secret) && works(&second.secret));
    assert_eq!(
        idp.secret_ids(&c.client_id).await.unwrap(),
        vec![c.secret_id.clone(), second.secret_id.clone()]
    );
    let again = idp.add_secret(&c.client_id, "rot-1").await.unwrap();
    assert!(
        !works(&second.secret),
        "a repeated add replaces its own secret"
    );
    assert!(works(&again.secret));
    let third = idp.add_secret(&c.client_id, "rot-2").await.unwrap_err();
    assert!(matches!(third, IdpError::Refused(m) if m.contains("remove the outgoing one")));
    idp.remove_secret(&c.client_id, &c.secret_id).await.unwrap();
    idp.remove_secret(&c.client_id, &c.secret_id).await.unwrap();
    assert!(!works(&c.secret));
    idp.test_secret(&c.client_id, &again.secret).await.unwrap();
    assert!(idp.test_secret(&c.client_id, &c.secret).await.is_err());
    let only = idp
        .remove_secret(&c.client_id, &again.secret_id)
        .await
        .unwrap_err();
    assert!(matches!(only, IdpError::Refused(m) if m.contains("only secret")));
    assert!(matches!(
        idp.add_secret("dev_missing", "k").await,
        Err(IdpError::UnknownClient(_))
    ));
}

/// A new secret tested against a deactivated client (the agent was frozen mid-rotation) fails
/// for a reason no retry cures: the rotation is told at once instead of retrying for its whole
/// budget, holding up the freeze's cancel behind the retries.
#[tokio::test]
async fn testing_a_secret_of_a_deactivated_client_is_not_retried() {
    use shared::embedded::vault::FileVault;
    use shared::ports::Vault;
    use shared::ports::vault::Stage;
    use shared::ports::vault::version_id_for;
    use shared::secret_rotation::{RotationError, create_secret, test_secret};
    let (v1, v2) = (version_id_for("v1"), version_id_for("v2"));
    let f = fixture();
    let idp = &f.idp;
    let c = client(idp).await;
    let vault = FileVault::open(&f.dir.path().join("vault")).unwrap();
    let credential = shared::credential::Credential {
        client_id: c.client_id.clone(),
        secret_id: c.secret_id.clone(),
        client_secret: c.secret.clone(),
    };
    vault
        .put("agt-1", &v1, &credential.to_secret(), Stage::Current)
        .await
        .unwrap();
    create_secret(&vault, idp, "agt-1", &c.client_id, &v2)
        .await
        .unwrap();
    test_secret(&vault, idp, "agt-1", &v2).await.unwrap();

    idp.set_active(&c.client_id, false).await.unwrap();
    let e = test_secret(&vault, idp, "agt-1", &v2).await.unwrap_err();
    assert!(matches!(e, RotationError::Deactivated(_)), "{e}");
    assert!(!e.retryable(), "{e}");
    assert!(e.to_string().contains("deactivated"), "{e}");
    // Any other refusal still counts as a secret that has not reached every node yet.
    idp.set_active(&c.client_id, true).await.unwrap();
    idp.remove_secret(&c.client_id, &c.secret_id).await.unwrap();
    let e = test_secret(&vault, idp, "agt-1", &v1).await;
    assert!(e.is_err_and(|e| e.retryable()));
}

/// Verifies a token with the key of the IdP's JWKS its header names, as a resource server does.
fn verify_by_kid(idp: &DevIdp, token: &str) -> Result<Value, String> {
    let kid = jsonwebtoken::decode_header(token)
        .map_err(|e| e.to_string())?
        .kid
        .ok_or("the token names no key")?;
    let jwks = idp.jwks();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("no key {kid} in the JWKS"))?;
    let x = key["x"].as_str().unwrap();
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_ed_components(x).unwrap(),
        &validation(),
    )
    .map(|d| d.claims)
    .map_err(|e| e.to_string())
}

fn kids(idp: &DevIdp) -> Vec<String> {
    idp.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Rotating the signing key: tokens signed before keep verifying with the JWKS (which serves
/// the current key and the previous one), new tokens name the new key, and a second rotation
/// drops the oldest key. It is refused while the keys are open (a server runs), and within the
/// longest token lifetime of the last rotation unless forced.
#[tokio::test]
async fn the_signing_key_rotates_and_the_previous_key_stays_in_the_jwks() {
    use shared::idp::dev::signing::{self, KeyFiles, SigningKeyError};
    use std::time::{Duration, SystemTime};
    let Fixture { idp, dir } = fixture();
    let c = client(&idp).await;
    let issue = |idp: &DevIdp| {
        idp.issue_token(&c.client_id, c.secret.expose(), None, Utc::now())
            .unwrap()
            .access_token
    };
    let header_kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let lifetime = Some(Duration::from_secs(u64::from(LIFETIME)));
    let before = issue(&idp);
    let first = idp.kid().to_string();
    assert_eq!(header_kid(&before), first);
    assert_eq!(kids(&idp), vec![first.clone()]);
    let files = KeyFiles::beside(&dir.path().join("idp-signing-key.pem"));

    let e = signing::rotate(&files, lifetime, SystemTime::now()).unwrap_err();
    assert!(matches!(e, SigningKeyError::InUse { .. }), "{e}");
    assert!(e.to_string().contains("stop it"), "{e}");
    drop(idp);

    let once = signing::rotate(&files, lifetime, SystemTime::now()).unwrap();
    assert_eq!(
        (once.previous_kid.as_str(), once.dropped_kid),
        (first.as_str(), None)
    );
    assert_ne!(once.kid, first);
    let idp = open_idp(dir.path());
    assert_eq!(idp.kid(), once.kid);
    assert_eq!(kids(&idp), vec![once.kid.clone(), first.clone()]);
    verify_by_kid(&idp, &before).expect("a token signed before the rotation still verifies");
    let after = issue(&idp);
    assert_eq!(header_kid(&after), once.kid);
    verify_by_kid(&idp, &after).unwrap();
    drop(idp);

    // Within the longest token lifetime of the last rotation, tokens the first key signed may
    // still be in use: dropping it is refused, and allowed once they have expired.
    let e = signing::rotate(&files, lifetime, SystemTime::now()).unwrap_err();
    assert!(matches!(e, SigningKeyError::TooSoon { .. }), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    let later = SystemTime::now() + Duration::from_secs(u64::from(LIFETIME) + 1);
    let twice = signing::rotate(&files, lifetime, later).unwrap();
    assert_eq!(twice.previous_kid, once.kid);
    assert_eq!(twice.dropped_kid.as_deref(), Some(first.as_str()));
    let idp = open_idp(dir.path());
    assert_eq!(kids(&idp), vec![twice.kid.clone(), once.kid.clone()]);
    let gone = verify_by_kid(&idp, &before).unwrap_err();
    assert!(gone.contains(&first), "{gone}");
    verify_by_kid(&idp, &after).expect("the previous key still verifies");
    assert_eq!(header_kid(&issue(&idp)), twice.kid);

    // The previous key is kept as its public half only, owner-only like the current one.
    let previous = std::fs::read_to_string(&files.previous).unwrap();
    assert!(previous.contains("BEGIN PUBLIC KEY"), "{previous}");
    assert!(!previous.contains("PRIVATE"));
    #[cfg(unix)]
    for file in [&files.current, &files.previous, &files.lock] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    // Forced, a rotation within the lifetime goes ahead.
    drop(idp);
    let forced = signing::rotate(&files, None, SystemTime::now()).unwrap();
    assert_eq!(forced.dropped_kid, Some(once.kid));
}

/// A data directory without a signing key has nothing to rotate, and the rotation makes none.
#[test]
fn rotating_without_a_key_is_refused() {
    use shared::idp::dev::signing::{self, KeyFiles, SigningKeyError};
    let dir = tempfile::tempdir().unwrap();
    let files = KeyFiles::beside(&dir.path().join("idp-signing-key.pem"));
    let e = signing::rotate(&files, None, std::time::SystemTime::now()).unwrap_err();
    assert!(matches!(e, SigningKeyError::Missing { .. }), "{e}");
    assert!(!files.current.exists() && !files.previous.exists() && !files.lock.exists());
}

/// A key Steward holds rotates through the secret protocol: createSecret vaults a new key pair
/// (pending) and tells the IdP nothing; setSecret registers its public key (again after a
/// repeat, harmlessly); testSecret signs a real assertion with it; finishSecret makes it
/// current. The IdP never receives a private key.
#[tokio::test]
async fn a_steward_held_key_rotates_through_the_secret_protocol() {
    use shared::agent_key::AgentKeyPair;
    use shared::credential::{KeyCredential, VaultedCredential};
    use shared::embedded::vault::FileVault;
    use shared::ports::Vault;
    use shared::ports::vault::{Stage, version_id_for};
    use shared::secret_rotation::{create_secret, finish_secret, set_secret, test_secret};
    use statemachines::credential::TokenBinding;
    let (v1, v2) = (version_id_for("k1"), version_id_for("k2"));
    let f = fixture();
    let idp = &f.idp;
    let vault = FileVault::open(&f.dir.path().join("vault")).unwrap();
    let first = AgentKeyPair::generate().unwrap();
    let client_id = idp
        .create_key_client(&spec(), first.public(), TokenBinding::None, "onboard-1")
        .await
        .unwrap();
    let current = KeyCredential {
        client_id: client_id.clone(),
        kid: first.public().kid.clone(),
        private_key: first.pem().clone(),
    };
    vault
        .put("agt-1", &v1, &current.to_secret(), Stage::Current)
        .await
        .unwrap();

    let issued = create_secret(&vault, idp, "agt-1", &client_id, &v2)
        .await
        .unwrap();
    assert_eq!(
        issued.previous_secret_id.as_deref(),
        Some(current.kid.as_str())
    );
    async fn kids(idp: &DevIdp, client_id: &str) -> Vec<String> {
        idp.keys(client_id)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.kid)
            .collect()
    }
    assert_eq!(
        kids(idp, &client_id).await,
        [current.kid.as_str()],
        "createSecret tells the IdP nothing"
    );
    // A repeat of createSecret (a crash before setSecret) answers with the same key.
    let again = create_secret(&vault, idp, "agt-1", &client_id, &v2)
        .await
        .unwrap();
    assert_eq!(again.secret_id, issued.secret_id);
    set_secret(&vault, idp, "agt-1", &v2).await.unwrap();
    set_secret(&vault, idp, "agt-1", &v2).await.unwrap();
    assert_eq!(
        kids(idp, &client_id).await,
        [current.kid.clone(), issued.secret_id.clone()]
    );
    test_secret(&vault, idp, "agt-1", &v2).await.unwrap();
    finish_secret(&vault, "agt-1", &v2).await.unwrap();
    let (version, value) = vault.get("agt-1", Stage::Current).await.unwrap().unwrap();
    assert_eq!(version, v2);
    let VaultedCredential::Key(new) = VaultedCredential::from_secret(&value).unwrap() else {
        panic!("the current credential is a key")
    };
    assert_eq!(new.kid, issued.secret_id);
    let pair = AgentKeyPair::from_pem(new.private_key.expose()).unwrap();
    assert_eq!(pair.public().kid, new.kid);
    for client in idp.list_clients().await.unwrap() {
        assert!(!format!("{client:?}").contains("PRIVATE"));
    }
}
