//! The generic OAuth 2.0 adapter (RFC 7591/7592/7009/7662) end to end against the npm
//! `oidc-provider` on 127.0.0.1, which tests/run installs and starts
//! (tests/oidc-provider/provider.mjs). Every test registers its own clients, so they run in
//! parallel against one provider.

use super::conformance::{self, Caps};
use shared::Secret;
use shared::embedded::vault::FileVault;
use shared::idp::oauth::{OAuthDcr, OAuthSettings, OAuthSettingsError};
use shared::ports::idp::{ClientSpec, IdentityProvider, IdpError};
use std::path::Path;
use std::sync::Arc;

const READ: &str = "steward:test:read";
const WRITE: &str = "steward:test:write";
/// The resource the test peer knows (RFC 8707).
const RESOURCE: &str = "urn:steward:test-api";

const HOW: &str = "run tests/run, which installs and starts oidc-provider; or by hand: \
    mkdir -p target/oidc-provider && cp tests/oidc-provider/* target/oidc-provider/ && \
    cd target/oidc-provider && npm ci && \
    PORT=4455 OIDC_INITIAL_ACCESS_TOKEN=<32 or more random characters> node provider.mjs, \
    then set STEWARD_TEST_OIDC_ISSUER=http://127.0.0.1:4455 and \
    STEWARD_TEST_OIDC_INITIAL_ACCESS_TOKEN=<the same token>";

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
