//! The generic OAuth 2.0 adapter (RFC 7591/7592/7009/7662) end to end against the npm
//! `oidc-provider` on 127.0.0.1, which tests/run installs and starts
//! (tests/oidc-provider/provider.mjs). Every test registers its own clients, so they run in
//! parallel against one provider. Key clients (private_key_jwt, DPoP) too: their keys are
//! ES256 pairs made here, as agents make theirs. Certificate clients (RFC 8705) get their
//! certificates from an internal CA made here, and prove them over real mutual TLS at the
//! provider's mTLS listener (`mtls_endpoint_aliases`), trusting the server certificate it wrote
//! at start (STEWARD_TEST_OIDC_MTLS_SERVER_CERT); for `tls_client_auth` the test drops its CA
//! certificate into the directory the provider trusts (STEWARD_TEST_OIDC_MTLS_CA_DIR).

use super::conformance::{self, Caps, Removal, TestCa, TestCertificate};
use serde_json::Value;
use shared::Secret;
use shared::agent_key::AgentKeyPair;
use shared::embedded::vault::FileVault;
use shared::idp::oauth::{
    CertificateClients, ClientAuth, OAuthDcr, OAuthSettings, OAuthSettingsError,
};
use shared::ports::idp::{ClientKey, ClientSpec, IdentityProvider, IdpError, TokenBinding};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const READ: &str = "steward:test:read";
const WRITE: &str = "steward:test:write";
/// The resource the test peer knows (RFC 8707).
const RESOURCE: &str = "urn:steward:test-api";

const HOW: &str = "run tests/run, which installs and starts oidc-provider; or by hand: \
    mkdir -p target/oidc-provider && cp tests/oidc-provider/* target/oidc-provider/ && \
    cd target/oidc-provider && npm ci && \
    mkdir -p trusted-cas && \
    PORT=4455 OIDC_INITIAL_ACCESS_TOKEN=<32 or more random characters> MTLS_PORT=4456 \
    MTLS_SERVER_CERT_FILE=$PWD/mtls-server.pem MTLS_TRUSTED_CA_DIR=$PWD/trusted-cas \
    node provider.mjs, then set STEWARD_TEST_OIDC_ISSUER=http://127.0.0.1:4455, \
    STEWARD_TEST_OIDC_INITIAL_ACCESS_TOKEN=<the same token>, \
    STEWARD_TEST_OIDC_MTLS_SERVER_CERT=<that mtls-server.pem> and \
    STEWARD_TEST_OIDC_MTLS_CA_DIR=<that trusted-cas>";

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => panic!("{name} is not set: {HOW}"),
    }
}

fn settings() -> OAuthSettings {
    OAuthSettings::new(&env("STEWARD_TEST_OIDC_ISSUER"))
        .unwrap()
        .with_initial_access_token(Secret::new(env("STEWARD_TEST_OIDC_INITIAL_ACCESS_TOKEN")))
        .unwrap()
}

fn adapter_in(dir: &Path, settings: OAuthSettings) -> OAuthDcr {
    let vault = Arc::new(FileVault::open(&dir.join("vault")).unwrap());
    OAuthDcr::new(settings, vault).unwrap()
}

fn spec(name: &str, scopes: &[&str], lifetime: u32) -> ClientSpec {
    ClientSpec {
        agent_id: format!("oauth-{name}"),
        name: format!("oauth test {name}"),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        token_lifetime_secs: lifetime,
    }
}

fn scopes(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

/// The refusal must be the server's OAuth answer `code` (not a retryable failure).
fn assert_provider(r: Result<impl std::fmt::Debug, IdpError>, code: &str, what: &str) {
    match r {
        Err(IdpError::Provider { code: c, .. }) if c == code => {}
        other => panic!("{what}: expected the server's `{code}` error, got {other:?}"),
    }
}

#[tokio::test]
async fn oauth_registered_client_gets_a_token_rotation_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let idp = adapter_in(dir.path(), settings());

    // 1. A registered client gets a token.
    let c = idp
        .create_client(&spec("must-show", &[READ], 300), "must-show-1")
        .await
        .unwrap();
    let t = idp
        .token(&c.client_id, &c.secret, &scopes(&[READ]))
        .await
        .unwrap();
    assert_eq!(t.scope.as_deref(), Some(READ));
    assert_eq!(t.expires_in, Some(300), "the client's own token lifetime");
    assert!(!t.access_token.expose().is_empty());

    // 2. After rotation (an RFC 7592 update), the new secret works and the old one fails.
    let ids = idp.secret_ids(&c.client_id).await.unwrap();
    let next = idp.add_secret(&c.client_id, "must-show-rot").await.unwrap();
    assert_ne!(next.secret.expose(), c.secret.expose());
    assert_ne!(vec![next.secret_id.clone()], ids);
    assert_eq!(
        idp.secret_ids(&c.client_id).await.unwrap(),
        vec![next.secret_id.clone()]
    );
    idp.token(&c.client_id, &next.secret, &scopes(&[READ]))
        .await
        .unwrap();
    assert_provider(
        idp.token(&c.client_id, &c.secret, &scopes(&[READ])).await,
        "invalid_client",
        "the old secret after rotation",
    );

    // 3. After deletion no token is issued.
    idp.delete_client(&c.client_id).await.unwrap();
    assert_provider(
        idp.token(&c.client_id, &next.secret, &scopes(&[READ]))
            .await,
        "invalid_client",
        "a deleted client",
    );
    assert!(idp.client(&c.client_id).await.unwrap().is_none());

    // Secrets stay out of Debug output.
    let shown = format!("{c:?} {next:?} {t:?} {idp:?}");
    for s in [
        c.secret.expose(),
        next.secret.expose(),
        t.access_token.expose(),
    ] {
        assert!(!shown.contains(s), "a secret in Debug output: {shown}");
    }
}

#[tokio::test]
async fn oauth_dcr_follows_the_identity_provider_contract() {
    let dir = tempfile::tempdir().unwrap();
    let idp = adapter_in(dir.path(), settings());
    let caps = Caps {
        max_secrets: 1,
        lifecycle: true,
    };
    conformance::run(&idp, caps, "oauth", [READ, WRITE]).await;
}

#[tokio::test]
async fn oauth_introspection_and_revocation_of_an_issued_token() {
    let dir = tempfile::tempdir().unwrap();
    let idp = adapter_in(dir.path(), settings());
    let c = idp
        .create_client(&spec("introspect", &[READ, WRITE], 600), "introspect-1")
        .await
        .unwrap();
    let as_client = (c.client_id.as_str(), &c.secret);
    let t = idp
        .token(&c.client_id, &c.secret, &scopes(&[WRITE]))
        .await
        .unwrap();

    let i = idp.introspect(&t.access_token, as_client).await.unwrap();
    assert!(i.active, "a fresh token is active: {i:?}");
    assert_eq!(i.client_id.as_deref(), Some(c.client_id.as_str()));
    assert_eq!(i.scope.as_deref(), Some(WRITE));
    let exp = i.exp.expect("exp");
    let iat = i.iat.expect("iat");
    assert_eq!(exp - iat, 600, "the token lives the client's lifetime");

    // Another client's view: the test peer answers about one's own tokens only.
    let other = idp
        .create_client(&spec("introspect-other", &[READ], 600), "introspect-2")
        .await
        .unwrap();
    let seen = idp
        .introspect(&t.access_token, (other.client_id.as_str(), &other.secret))
        .await
        .unwrap();
    assert!(
        !seen.active,
        "another client learned about the token: {seen:?}"
    );

    idp.revoke(&t.access_token, as_client).await.unwrap();
    let i = idp.introspect(&t.access_token, as_client).await.unwrap();
    assert!(!i.active, "a revoked token is inactive: {i:?}");
    // Revoking again is fine (RFC 7009 §2.2).
    idp.revoke(&t.access_token, as_client).await.unwrap();

    // A token issued before a rotation stays active until revoked: what revoke_tokens says.
    let before = idp
        .token(&c.client_id, &c.secret, &scopes(&[READ]))
        .await
        .unwrap();
    let next = idp
        .add_secret(&c.client_id, "introspect-rot")
        .await
        .unwrap();
    let as_next = (c.client_id.as_str(), &next.secret);
    assert!(
        idp.introspect(&before.access_token, as_next)
            .await
            .unwrap()
            .active
    );
    let receipt = idp.revoke_tokens(&c.client_id).await.unwrap();
    assert!(
        receipt
            .outstanding
            .as_deref()
            .unwrap_or("")
            .contains("600 s"),
        "{receipt:?}"
    );
    idp.revoke(&before.access_token, as_next).await.unwrap();
    assert!(
        !idp.introspect(&before.access_token, as_next)
            .await
            .unwrap()
            .active
    );

    // A wrong client secret is the server's invalid_client, not a silent inactive answer.
    assert_provider(
        idp.introspect(&before.access_token, (c.client_id.as_str(), &c.secret))
            .await,
        "invalid_client",
        "introspection with a replaced secret",
    );

    for id in [&c.client_id, &other.client_id] {
        idp.delete_client(id).await.unwrap();
    }
}

#[tokio::test]
async fn oauth_tokens_for_a_resource_carry_its_audience() {
    let dir = tempfile::tempdir().unwrap();
    let idp = adapter_in(dir.path(), settings().with_resource(RESOURCE).unwrap());
    let c = idp
        .create_client(&spec("resource", &[READ], 600), "resource-1")
        .await
        .unwrap();
    idp.test_secret(&c.client_id, &c.secret).await.unwrap();
    let t = idp
        .token(&c.client_id, &c.secret, &scopes(&[READ]))
        .await
        .unwrap();
    let i = idp
        .introspect(&t.access_token, (c.client_id.as_str(), &c.secret))
        .await
        .unwrap();
    assert!(i.active);
    assert_eq!(i.aud, Some(serde_json::json!(RESOURCE)), "{i:?}");

    let wrong = adapter_in(
        dir.path(),
        settings().with_resource("urn:steward:unknown-api").unwrap(),
    );
    assert_provider(
        wrong.token(&c.client_id, &c.secret, &scopes(&[READ])).await,
        "invalid_target",
        "a resource the server does not know",
    );
    idp.delete_client(&c.client_id).await.unwrap();
}

#[tokio::test]
async fn oauth_grants_and_lifetime_are_registered_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = adapter_in(dir.path(), settings());
    let c = first
        .create_client(&spec("restart", &[READ], 900), "restart-1")
        .await
        .unwrap();
    first
        .set_grants(&c.client_id, &scopes(&[READ, WRITE]), 120)
        .await
        .unwrap();
    drop(first);

    // A new process with the same vault manages the same client (the registration access
    // token, rotated by every update, is in the vault).
    let idp = adapter_in(dir.path(), settings());
    let info = idp
        .client(&c.client_id)
        .await
        .unwrap()
        .expect("still managed");
    assert_eq!(info.token_lifetime_secs, 120);
    assert_eq!(info.name, "oauth test restart");
    let t = idp
        .token(&c.client_id, &c.secret, &scopes(&[READ, WRITE]))
        .await
        .unwrap();
    assert_eq!(
        t.expires_in,
        Some(120),
        "set_grants kept the secret and set the lifetime"
    );
    assert!(
        idp.list_clients()
            .await
            .unwrap()
            .iter()
            .any(|x| x.client_id == c.client_id)
    );

    // A scope outside the grant is the server's refusal.
    idp.set_grants(&c.client_id, &scopes(&[READ]), 120)
        .await
        .unwrap();
    assert_provider(
        idp.token(&c.client_id, &c.secret, &scopes(&[WRITE])).await,
        "invalid_scope",
        "a scope no longer granted",
    );
    // No scopes cannot be expressed in RFC 7591: refused before the server is asked.
    assert!(matches!(
        idp.set_grants(&c.client_id, &[], 120).await,
        Err(IdpError::Refused(_))
    ));
    idp.delete_client(&c.client_id).await.unwrap();
}

#[tokio::test]
async fn oauth_server_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let idp = adapter_in(dir.path(), settings());

    // Bad metadata: a scope the server does not support.
    assert_provider(
        idp.create_client(&spec("bad-scope", &["no:such:scope"], 600), "bad-1")
            .await,
        "invalid_client_metadata",
        "registering an unsupported scope",
    );
    // Bad metadata: a lifetime outside what the server accepts.
    assert_provider(
        idp.create_client(&spec("bad-lifetime", &[READ], 10_000_000), "bad-2")
            .await,
        "invalid_client_metadata",
        "registering an excessive token lifetime",
    );
    // A wrong initial access token.
    let wrong = adapter_in(
        dir.path(),
        OAuthSettings::new(&env("STEWARD_TEST_OIDC_ISSUER"))
            .unwrap()
            .with_initial_access_token(Secret::new("not-the-initial-access-token"))
            .unwrap(),
    );
    match wrong
        .create_client(&spec("bad-iat", &[READ], 600), "bad-3")
        .await
    {
        Err(IdpError::Provider {
            status: 401, code, ..
        }) if code == "invalid_token" => {}
        other => panic!("a wrong initial access token: {other:?}"),
    }
    assert!(
        idp.list_clients().await.unwrap().is_empty(),
        "nothing was registered"
    );

    // A client this adapter never registered cannot be managed, and says why.
    assert!(matches!(
        idp.delete_client("never-registered").await,
        Err(IdpError::Refused(_))
    ));
    assert!(matches!(
        idp.add_secret("never-registered", "k").await,
        Err(IdpError::UnknownClient(_))
    ));

    // The issuer must be the server's own name for itself (localhost is not 127.0.0.1).
    let issuer = env("STEWARD_TEST_OIDC_ISSUER");
    let alias = issuer.replace("127.0.0.1", "localhost");
    assert_ne!(alias, issuer, "the test peer's issuer is on 127.0.0.1");
    let aliased = adapter_in(dir.path(), OAuthSettings::new(&alias).unwrap());
    match aliased.endpoints().await {
        Err(IdpError::Refused(why)) => assert!(why.contains(&issuer), "{why}"),
        other => panic!("an issuer alias: {other:?}"),
    }

    // Nothing listening: retryable.
    let gone = adapter_in(
        dir.path(),
        OAuthSettings::new("http://127.0.0.1:9").unwrap(),
    );
    assert!(gone.endpoints().await.unwrap_err().retryable());
}

#[test]
fn oauth_settings_refuse_plain_http_off_loopback() {
    match OAuthSettings::new("http://auth.example.com") {
        Err(e @ OAuthSettingsError::InsecureUrl(_)) => {
            assert!(e.to_string().contains("use https"), "{e}")
        }
        other => panic!("plain http to a remote host: {other:?}"),
    }
    assert!(OAuthSettings::new("http://192.168.1.10:8080").is_err());
    assert!(OAuthSettings::new("https://auth.example.com").is_ok());
    assert!(OAuthSettings::new("http://127.0.0.1:4455").is_ok());
    assert!(OAuthSettings::new("http://[::1]:4455").is_ok());
}

fn pair() -> AgentKeyPair {
    AgentKeyPair::generate().unwrap()
}

fn active(kid: &str, active: bool) -> ClientKey {
    ClientKey {
        kid: kid.into(),
        active,
    }
}

/// A refusal, not a retryable failure.
fn assert_refused(r: Result<impl std::fmt::Debug, IdpError>, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected a refusal, got {v:?}"),
        Err(IdpError::Unavailable(e)) => panic!("{what}: a refusal must not look retryable: {e}"),
        Err(_) => {}
    }
}

#[tokio::test]
async fn oauth_dcr_key_clients_follow_the_identity_provider_contract() {
    let dir = tempfile::tempdir().unwrap();
    let idp = adapter_in(dir.path(), settings());
    conformance::run_keys(&idp, "oauth", [READ, WRITE]).await;
}

#[tokio::test]
async fn oauth_key_client_gets_tokens_by_client_assertion_bound_by_dpop() {
    let dir = tempfile::tempdir().unwrap();
    let idp = adapter_in(dir.path(), settings());
    let key = pair();
    let id = idp
        .create_key_client(
            &spec("key-dpop", &[READ, WRITE], 300),
            key.public(),
            TokenBinding::None,
            "key-dpop-1",
        )
        .await
        .unwrap();
    let as_key = ClientAuth::Key(&key);

    // A client assertion alone: a bearer token for the client's own lifetime.
    let bearer = idp
        .token_with(&id, as_key, &scopes(&[READ]), None)
        .await
        .unwrap();
    assert_eq!(bearer.token_type, "Bearer");
    assert_eq!(bearer.expires_in, Some(300));
    let i = idp
        .introspect_with(&bearer.access_token, &id, as_key)
        .await
        .unwrap();
    assert!(i.active, "{i:?}");
    assert_eq!(i.client_id.as_deref(), Some(id.as_str()));
    assert_eq!(i.jkt(), None, "a bearer token names no key: {i:?}");

    // With a DPoP proof by the agent key: the token is bound to that key's thumbprint.
    let bound = idp
        .token_with(&id, as_key, &scopes(&[WRITE]), Some(&key))
        .await
        .unwrap();
    assert_eq!(bound.token_type, "DPoP");
    let i = idp
        .introspect_with(&bound.access_token, &id, as_key)
        .await
        .unwrap();
    assert!(i.active, "{i:?}");
    assert_eq!(i.token_type.as_deref(), Some("DPoP"));
    assert_eq!(i.jkt(), Some(key.public().kid.as_str()), "{i:?}");
    assert_eq!(i.scope.as_deref(), Some(WRITE));
    // A proof by another key binds the token to that key instead.
    let other = pair();
    let t = idp
        .token_with(&id, as_key, &scopes(&[READ]), Some(&other))
        .await
        .unwrap();
    let i = idp
        .introspect_with(&t.access_token, &id, as_key)
        .await
        .unwrap();
    assert_eq!(i.jkt(), Some(other.public().kid.as_str()), "{i:?}");
    // The holder revokes with its key (RFC 7009 with a client assertion).
    idp.revoke_with(&bound.access_token, &id, as_key)
        .await
        .unwrap();
    assert!(
        !idp.introspect_with(&bound.access_token, &id, as_key)
            .await
            .unwrap()
            .active
    );

    // A client assertion signed by a key the client does not hold is refused.
    assert_provider(
        idp.token_with(&id, ClientAuth::Key(&other), &scopes(&[READ]), None)
            .await,
        "invalid_client",
        "an assertion signed by another key",
    );
    // A deactivated key's assertion is refused; the key is still listed, and comes back.
    let next = pair();
    idp.add_key(&id, next.public()).await.unwrap();
    idp.set_key_active(&id, &key.public().kid, false)
        .await
        .unwrap();
    assert_provider(
        idp.token_with(&id, as_key, &scopes(&[READ]), None).await,
        "invalid_client",
        "an assertion signed by a deactivated key",
    );
    idp.token_with(&id, ClientAuth::Key(&next), &scopes(&[READ]), None)
        .await
        .unwrap();
    assert_eq!(
        idp.keys(&id).await.unwrap(),
        vec![
            active(&key.public().kid, false),
            active(&next.public().kid, true)
        ]
    );
    // A new process with the same vault still knows the inactive key, and can put it back.
    let restarted = adapter_in(dir.path(), settings());
    restarted
        .set_key_active(&id, &key.public().kid, true)
        .await
        .unwrap();
    restarted
        .token_with(&id, as_key, &scopes(&[READ]), None)
        .await
        .unwrap();

    // A key the client never held cannot be switched either way.
    for on in [true, false] {
        assert_refused(
            idp.set_key_active(&id, &other.public().kid, on).await,
            "a key the client never held",
        );
    }
    // Deactivating the client stops its keys too (the grant is withdrawn).
    idp.set_active(&id, false).await.unwrap();
    assert_provider(
        idp.token_with(&id, as_key, &scopes(&[READ]), None).await,
        "invalid_request",
        "a deactivated key client (oidc-provider: grant type not allowed)",
    );
    idp.set_active(&id, true).await.unwrap();
    idp.test_key(&id, &key).await.unwrap();

    // A key client has no secret to authenticate with, and a secret client holds no keys.
    assert_refused(
        idp.add_secret(&id, "key-dpop-rot").await,
        "a key client's secret",
    );
    let c = idp
        .create_client(&spec("key-secret", &[READ], 300), "key-dpop-2")
        .await
        .unwrap();
    assert_refused(
        idp.add_key(&c.client_id, key.public()).await,
        "a key for a secret client",
    );
    // The idempotency keys of the two kinds do not mix.
    assert_refused(
        idp.create_key_client(
            &spec("key-secret", &[READ], 300),
            key.public(),
            TokenBinding::None,
            "key-dpop-2",
        )
        .await,
        "a secret client's idempotency key reused for a key client",
    );
    for c in [&id, &c.client_id] {
        idp.delete_client(c).await.unwrap();
    }
}

#[tokio::test]
async fn oauth_dpop_bound_key_client_gets_no_token_without_a_proof() {
    let dir = tempfile::tempdir().unwrap();
    let idp = adapter_in(dir.path(), settings());
    let key = pair();
    let id = idp
        .create_key_client(
            &spec("key-bound", &[READ], 600),
            key.public(),
            TokenBinding::Dpop,
            "key-bound-1",
        )
        .await
        .unwrap();
    let as_key = ClientAuth::Key(&key);
    assert_provider(
        idp.token_with(&id, as_key, &scopes(&[READ]), None).await,
        "invalid_grant",
        "a DPoP-bound client without a proof",
    );
    let t = idp
        .token_with(&id, as_key, &scopes(&[READ]), Some(&key))
        .await
        .unwrap();
    assert_eq!(t.token_type, "DPoP");
    let i = idp
        .introspect_with(&t.access_token, &id, as_key)
        .await
        .unwrap();
    assert_eq!(i.jkt(), Some(key.public().kid.as_str()), "{i:?}");
    // test_key knows the client is bound, and sends a proof by the key.
    idp.test_key(&id, &key).await.unwrap();
    // The binding survives metadata updates (grants, keys, lifecycle).
    idp.set_grants(&id, &scopes(&[READ, WRITE]), 120)
        .await
        .unwrap();
    idp.set_active(&id, false).await.unwrap();
    idp.set_active(&id, true).await.unwrap();
    let next = pair();
    idp.add_key(&id, next.public()).await.unwrap();
    assert_provider(
        idp.token_with(&id, ClientAuth::Key(&next), &scopes(&[WRITE]), None)
            .await,
        "invalid_grant",
        "a DPoP-bound client after updates, without a proof",
    );
    let t = idp
        .token_with(&id, ClientAuth::Key(&next), &scopes(&[WRITE]), Some(&next))
        .await
        .unwrap();
    assert_eq!(t.expires_in, Some(120));
    idp.test_key(&id, &next).await.unwrap();

    // Certificate binding needs mutual TLS, which this adapter does not do: refused before
    // anything is registered.
    assert_refused(
        idp.create_key_client(
            &spec("key-cert", &[READ], 600),
            key.public(),
            TokenBinding::Certificate,
            "key-bound-2",
        )
        .await,
        "certificate-bound tokens",
    );
    assert_eq!(
        idp.list_clients()
            .await
            .unwrap()
            .iter()
            .map(|c| c.client_id.as_str())
            .collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    idp.delete_client(&id).await.unwrap();
}

/// On the test peer's plain-http listener no request carries a client certificate: a
/// certificate-bound client registers, and gets no token there.
#[tokio::test]
async fn oidc_provider_registers_mtls_clients_but_issues_them_nothing_over_plain_http() {
    let issuer = env("STEWARD_TEST_OIDC_ISSUER");
    let iat = env("STEWARD_TEST_OIDC_INITIAL_ACCESS_TOKEN");
    let http = reqwest::Client::new();
    let meta: serde_json::Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    for m in [
        "private_key_jwt",
        "self_signed_tls_client_auth",
        "tls_client_auth",
    ] {
        assert!(
            meta["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(m)),
            "{m}: {meta}"
        );
    }
    let key = pair();
    let reg: serde_json::Value = http
        .post(meta["registration_endpoint"].as_str().unwrap())
        .bearer_auth(&iat)
        .json(&serde_json::json!({
            "client_name": "oauth test mtls",
            "grant_types": ["client_credentials"],
            "response_types": [],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.public_jwk()]},
            "tls_client_certificate_bound_access_tokens": true,
            "scope": READ,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        reg["tls_client_certificate_bound_access_tokens"], true,
        "{reg}"
    );
    let id = reg["client_id"].as_str().unwrap();
    let token = meta["token_endpoint"].as_str().unwrap();
    let resp = http
        .post(token)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            (
                "client_assertion_type",
                shared::agent_key::CLIENT_ASSERTION_TYPE,
            ),
            (
                "client_assertion",
                &key.client_assertion(id, token, chrono::Utc::now()),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");
    let deleted = http
        .delete(reg["registration_client_uri"].as_str().unwrap())
        .bearer_auth(reg["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
}

/// A client of the provider's mTLS listener, trusting the server certificate the provider
/// wrote at start, presenting `cert` (with the agent's key) when given.
fn mtls_http(cert: Option<&TestCertificate>) -> reqwest::Client {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    shared::tls::install_crypto_provider();
    let der = |pem: &str| {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents
    };
    let server = std::fs::read_to_string(env("STEWARD_TEST_OIDC_MTLS_SERVER_CERT")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der(&server))).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(der(&c.pem))],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A client_credentials token over mutual TLS as the agent asks for it (the client id and the
/// certificate, nothing else), then introspected over the same connection's kind: `Ok` only
/// for an active token bound to that certificate (`cnf.x5t#S256`, RFC 8705 §3.2).
async fn certificate_token(
    idp: &OAuthDcr,
    client_id: &str,
    cert: Option<&TestCertificate>,
) -> Result<(), String> {
    let endpoints = idp.endpoints().await.unwrap();
    let http = mtls_http(cert);
    let resp = http
        .post(endpoints.mtls_token_endpoint().clone())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
        ])
        .send()
        .await
        .map_err(|e| format!("the mTLS token endpoint: {e}"))?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    let token = body["access_token"].as_str().expect("access_token");
    let cert = cert.expect("a token was issued without a certificate");
    let seen: Value = http
        .post(endpoints.mtls_introspection_endpoint().unwrap().clone())
        .form(&[("token", token), ("client_id", client_id)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(
        seen["cnf"]["x5t#S256"],
        cert.record.x5t_s256.as_str(),
        "the token is bound to the certificate: {seen}"
    );
    Ok(())
}

/// A CA certificate in the directory the provider trusts for `tls_client_auth`, removed again
/// when dropped.
struct TrustedCa(PathBuf);

impl TrustedCa {
    fn add(ca: &TestCa) -> Self {
        let path = Path::new(&env("STEWARD_TEST_OIDC_MTLS_CA_DIR"))
            .join(format!("oauth-test-{:08x}.pem", rand::random::<u32>()));
        std::fs::write(&path, ca.ca.certificate_pem()).unwrap();
        Self(path)
    }
}

impl Drop for TrustedCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn oauth_dcr_self_signed_certificate_clients_follow_the_identity_provider_contract() {
    let dir = tempfile::tempdir().unwrap();
    let idp = adapter_in(
        dir.path(),
        settings().with_certificate_clients(Some(CertificateClients::SelfSigned)),
    );
    let e = idp.endpoints().await.unwrap();
    assert_eq!(
        e.mtls_token_endpoint().scheme(),
        "https",
        "discovery names the mTLS listener in mtls_endpoint_aliases: {e:?}"
    );
    assert_ne!(e.mtls_token_endpoint(), &e.token);
    // No CA of this test is trusted by the provider: the registered certificate alone counts.
    let ca = TestCa::new("oauth-self-signed.test").await;
    let agent = format!("self-signed-{:08x}-agent", rand::random::<u32>());
    conformance::run_certificates(
        &idp,
        &ca,
        &agent,
        Removal::Stops,
        "oauth-self-signed",
        [READ, WRITE],
        &async |id: &str, cert: Option<&TestCertificate>| certificate_token(&idp, id, cert).await,
    )
    .await;
}

#[tokio::test]
async fn oauth_dcr_tls_client_auth_certificate_clients_follow_the_identity_provider_contract() {
    let dir = tempfile::tempdir().unwrap();
    let idp = adapter_in(
        dir.path(),
        settings().with_certificate_clients(Some(CertificateClients::TlsClientAuth)),
    );
    let ca = TestCa::new(&format!("oauth-{:08x}.test", rand::random::<u32>())).await;
    let agent = format!("tls-client-auth-{:08x}-agent", rand::random::<u32>());
    let prove =
        async |id: &str, cert: Option<&TestCertificate>| certificate_token(&idp, id, cert).await;

    // Before the provider trusts the CA, its certificates authenticate nobody.
    let s = spec("tls-untrusted", &[READ], 600);
    let cert = ca.issue(&agent);
    let id = idp
        .create_certificate_client(&s, &cert.record, &cert.pem, "tls-untrusted-1")
        .await
        .unwrap();
    let e = prove(&id, Some(&cert)).await.unwrap_err();
    assert!(e.contains("invalid_client"), "{e}");
    let _trusted = TrustedCa::add(&ca);
    prove(&id, Some(&cert)).await.unwrap();
    idp.delete_client(&id).await.unwrap();

    conformance::run_certificates(
        &idp,
        &ca,
        &agent,
        Removal::AcceptedUntilExpiry,
        "oauth-tls-client-auth",
        [READ, WRITE],
        &prove,
    )
    .await;

    // A tls_client_auth client is registered for one SPIFFE id: another one is refused.
    let id = idp
        .create_certificate_client(&s, &cert.record, &cert.pem, "tls-untrusted-2")
        .await
        .unwrap();
    let other = ca.issue(&format!("{agent}-other"));
    assert_refused(
        idp.add_certificate(&id, &other.record, &other.pem).await,
        "another SPIFFE id for a tls_client_auth client",
    );
    prove(&id, Some(&other)).await.unwrap_err();
    idp.delete_client(&id).await.unwrap();
}

#[tokio::test]
async fn oauth_certificate_clients_are_refused_unless_turned_on_or_not_as_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("oauth-refusals.test").await;
    let cert = ca.issue("refused-agent");
    let s = spec("cert-refusals", &[READ], 600);

    // Off by default: refused before anything is registered, saying how to turn it on.
    let off = adapter_in(dir.path(), settings());
    assert!(!off.certificate_clients());
    match off
        .create_certificate_client(&s, &cert.record, &cert.pem, "cert-off-1")
        .await
    {
        Err(IdpError::Refused(why)) => {
            assert!(why.contains("STEWARD_OAUTH_CERTIFICATE_CLIENTS"), "{why}")
        }
        other => panic!("certificate clients while off: {other:?}"),
    }
    assert!(off.list_clients().await.unwrap().is_empty());

    // A PEM that is not the certificate the record describes is refused, unregistered.
    let idp = adapter_in(
        dir.path(),
        settings().with_certificate_clients(Some(CertificateClients::SelfSigned)),
    );
    let other = ca.issue("refused-agent");
    assert_refused(
        idp.create_certificate_client(&s, &cert.record, &other.pem, "cert-off-2")
            .await,
        "a PEM of another certificate",
    );
    assert!(idp.list_clients().await.unwrap().is_empty());

    // The kinds do not mix: a secret client's idempotency key, certificates for a key client,
    // keys and secrets for a certificate client.
    let c = idp.create_client(&s, "cert-mix-1").await.unwrap();
    assert_refused(
        idp.create_certificate_client(&s, &cert.record, &cert.pem, "cert-mix-1")
            .await,
        "a secret client's idempotency key reused for a certificate client",
    );
    assert_refused(
        idp.add_certificate(&c.client_id, &cert.record, &cert.pem)
            .await,
        "a certificate for a secret client",
    );
    let id = idp
        .create_certificate_client(&s, &cert.record, &cert.pem, "cert-mix-2")
        .await
        .unwrap();
    assert_refused(
        idp.add_key(&id, pair().public()).await,
        "a key for a certificate client",
    );
    assert_refused(
        idp.add_secret(&id, "cert-mix-rot").await,
        "a secret for a certificate client",
    );
    assert_refused(
        idp.create_client(&s, "cert-mix-2").await,
        "a certificate client's idempotency key reused for a secret client",
    );
    // The registration holds the certificate itself (public), never a private key.
    let (reg, _) = registration_of(&idp, dir.path(), &id).await;
    assert_eq!(
        reg["token_endpoint_auth_method"],
        "self_signed_tls_client_auth"
    );
    assert_eq!(reg["tls_client_certificate_bound_access_tokens"], true);
    let shown = reg.to_string();
    assert!(
        !shown.contains("PRIVATE KEY") && !shown.contains("\"d\""),
        "{shown}"
    );
    for c in [&id, &c.client_id] {
        idp.delete_client(c).await.unwrap();
    }
}

/// The client's registration as the provider holds it (RFC 7592 read with the registration
/// access token from the adapter's vault record, `steward/oauth/<issuer hash>/client/…`), and
/// that record.
async fn registration_of(idp: &OAuthDcr, dir: &Path, client_id: &str) -> (Value, Value) {
    use sha2::{Digest, Sha256};
    use shared::ports::Vault;
    let hash = |v: &str, n: usize| hex::encode(&Sha256::digest(v.as_bytes())[..n]);
    let name = format!(
        "steward/oauth/{}/client/{}",
        hash(idp.settings().issuer(), 6),
        hash(client_id, 16)
    );
    let vault = FileVault::open(&dir.join("vault")).unwrap();
    let (_, value) = vault
        .get(&name, shared::ports::vault::Stage::Current)
        .await
        .unwrap()
        .expect("the adapter's record");
    let record: Value = serde_json::from_str(value.expose()).unwrap();
    let reg = reqwest::Client::new()
        .get(record["registration_client_uri"].as_str().unwrap())
        .bearer_auth(record["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (reg, record)
}
