//! The generic OAuth 2.0 adapter: manages service clients on any authorization server that
//! offers dynamic client registration (RFC 7591) and its management protocol (RFC 7592), and
//! obtains client_credentials tokens (RFC 6749 §4.4), with revocation (RFC 7009) and
//! introspection (RFC 7662) where the server offers them. See docs/adr/0013-oauth-dcr-adapter.md.
//!
//! ```no_run
//! # async fn f(vault: std::sync::Arc<dyn shared::ports::vault::Vault>) -> Result<(), Box<dyn std::error::Error>> {
//! use shared::idp::oauth::{OAuthDcr, OAuthSettings};
//! let idp = OAuthDcr::new(OAuthSettings::from_env()?, vault)?;
//! idp.endpoints().await?; // discovery now, so a wrong issuer fails at start
//! # Ok(()) }
//! ```
//!
//! What RFC 7591/7592 cannot express, and how this adapter answers the port anyway:
//! - One secret per client: `add_secret` rotates by an RFC 7592 update that omits
//!   `client_secret` (the server must then issue a new one; the old one stops working at once).
//! - No lifecycle: `set_active(false)` withdraws the `client_credentials` grant from the
//!   client's `grant_types`, and checks the server's echo; `set_active(true)` restores it.
//! - No listing: `list_clients` lists the clients this adapter registered (its vault records).
//!   Each record keeps the key of the `create_client` that registered it: Steward's mark on
//!   its own clients (`ClientInfo::steward_key`), which the server itself cannot carry.
//! - No per-client token lifetime: sent as the client metadata field named by
//!   [`OAuthSettings::token_lifetime_field`], and refused unless the server echoes it.
//! - No manager-side token revocation: RFC 7009 needs each token's value.
//! - No per-key activation: a key client (`create_key_client`: `private_key_jwt`, RFC 7523)
//!   registers its active keys as `jwks`; `set_key_active(false)` drops a key from the
//!   registered `jwks` by an RFC 7592 update, and the vault record keeps the public JWK so that
//!   `keys()` lists it as inactive and `set_key_active(true)` registers it again. DPoP binding
//!   (RFC 9449) is the client metadata `dpop_bound_access_tokens`. A key client's tokens are
//!   not bound to a certificate (`TokenBinding::Certificate` is refused for key clients).
//! - Certificate clients (`create_certificate_client`, RFC 8705), when
//!   [`OAuthSettings::certificate_clients`] names a method (off by default): registered with
//!   `tls_client_certificate_bound_access_tokens`, and either the agent's certificate in
//!   `jwks` (`self_signed_tls_client_auth`: the server accepts exactly the registered
//!   certificates; `add_certificate` / `remove_certificate` update that `jwks`) or its SPIFFE
//!   id as `tls_client_auth_san_uri` (`tls_client_auth`: the server trusts Steward's CA, and
//!   one certificate of the SPIFFE id cannot be taken away at the server; see
//!   `certificates.rs`). The adapter presents no certificate itself: agents do, at the
//!   server's mTLS endpoints (`mtls_endpoint_aliases`, [`Endpoints::mtls_token_endpoint`]).
//!
//! Each client's `registration_access_token` and `registration_client_uri` live in the vault
//! (never in logs or errors); so do the idempotency keys and the list of registered clients.

mod certificates;
mod keys;
mod provider;
mod registrations;
mod server;
mod settings;

use certificates::*;
use keys::*;
use registrations::*;
pub use settings::*;

use crate::agent_key::{AgentKeyPair, CLIENT_ASSERTION_TYPE};
use crate::ports::idp::{
    AgentKey, CertificateRecord, ClientInfo, ClientKey, ClientSpec, CreatedClient,
    IdentityProvider, IdpError, NewSecret, TokenBinding, TokenRevocation,
};
use crate::ports::vault::{Stage, Vault};
use crate::secret::Secret;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The authorization server's issuer URL (required).
pub const ISSUER_ENV: &str = "STEWARD_OAUTH_ISSUER";
/// An RFC 7591 initial access token, when the server requires one to register clients.
pub const INITIAL_ACCESS_TOKEN_ENV: &str = "STEWARD_OAUTH_INITIAL_ACCESS_TOKEN";
/// The RFC 8707 resource (audience) tokens are requested for, when the server needs one.
pub const RESOURCE_ENV: &str = "STEWARD_OAUTH_RESOURCE";
/// The client metadata field carrying a per-client access token lifetime; empty: none.
pub const TOKEN_LIFETIME_FIELD_ENV: &str = "STEWARD_OAUTH_TOKEN_LIFETIME_FIELD";
/// Janssen/Gluu's name for it, and the test peer's.
pub const DEFAULT_TOKEN_LIFETIME_FIELD: &str = "access_token_lifetime";
/// How certificate clients (RFC 8705) are registered: `self_signed_tls_client_auth`,
/// `tls_client_auth`, or `off` (the default).
pub const CERTIFICATE_CLIENTS_ENV: &str = "STEWARD_OAUTH_CERTIFICATE_CLIENTS";

/// The grant this adapter registers clients for.
const GRANT: &str = "client_credentials";
/// The token endpoint authentication method of key clients (RFC 7523, RFC 7591 §2).
const PRIVATE_KEY_JWT: &str = "private_key_jwt";
/// RFC 8705 §2.1: a certificate from a CA the server trusts, matched by a subject name.
const TLS_CLIENT_AUTH: &str = "tls_client_auth";
/// RFC 8705 §2.2: a certificate registered with the client (`jwks`), matched exactly.
const SELF_SIGNED_TLS_CLIENT_AUTH: &str = "self_signed_tls_client_auth";

/// RFC 7592 §2.2: fields a client must not send in an update (the server manages them).
const SERVER_MANAGED: [&str; 4] = [
    "registration_access_token",
    "registration_client_uri",
    "client_secret_expires_at",
    "client_id_issued_at",
];

/// Standard client metadata a lifetime field must not shadow.
const RESERVED_FIELDS: [&str; 10] = [
    "client_id",
    "client_secret",
    "client_name",
    "scope",
    "grant_types",
    "response_types",
    "redirect_uris",
    "token_endpoint_auth_method",
    "registration_access_token",
    "registration_client_uri",
];

/// The server's endpoints, from its metadata (OpenID Discovery or RFC 8414).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub token: Url,
    pub registration: Url,
    pub revocation: Option<Url>,
    pub introspection: Option<Url>,
    /// `token_endpoint_auth_methods_supported`, when the metadata lists them.
    pub auth_methods: Option<Vec<String>>,
    /// `dpop_signing_alg_values_supported` (RFC 9449 §5.1): present when the server does DPoP.
    pub dpop_algs: Option<Vec<String>>,
    /// `tls_client_certificate_bound_access_tokens` (RFC 8705 §3.3): the server binds tokens
    /// to the client certificate of the request.
    pub certificate_bound_tokens: bool,
    /// RFC 8705 §5 `mtls_endpoint_aliases`: the token, introspection and revocation endpoints
    /// a client presenting a certificate uses, where the server names other ones than above.
    pub mtls_token: Option<Url>,
    pub mtls_introspection: Option<Url>,
    pub mtls_revocation: Option<Url>,
}

impl Endpoints {
    /// Where a certificate client asks for tokens: the mTLS alias, else the token endpoint.
    pub fn mtls_token_endpoint(&self) -> &Url {
        self.mtls_token.as_ref().unwrap_or(&self.token)
    }

    /// Where a certificate client introspects its tokens: the mTLS alias, else the endpoint.
    pub fn mtls_introspection_endpoint(&self) -> Option<&Url> {
        self.mtls_introspection
            .as_ref()
            .or(self.introspection.as_ref())
    }
}

/// How a client authenticates at the server's token, introspection and revocation endpoints.
#[derive(Clone, Copy)]
pub enum ClientAuth<'a> {
    /// `client_secret_basic`.
    Secret(&'a Secret),
    /// `private_key_jwt`: an RFC 7523 client assertion signed with the key, for the token
    /// endpoint URL as audience (RFC 7523 §3), with a fresh `jti` each time.
    Key(&'a AgentKeyPair),
}

impl fmt::Debug for ClientAuth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(..)"),
            Self::Key(k) => write!(f, "Key({})", k.public().kid),
        }
    }
}

/// A client_credentials access token. The value is a bearer credential, hence a [`Secret`].
#[derive(Debug)]
pub struct AccessToken {
    pub access_token: Secret,
    pub token_type: String,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
}

/// An RFC 7662 introspection answer (the common members; `aud` is a string or an array).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub aud: Option<Value>,
    #[serde(default)]
    pub iss: Option<String>,
    /// RFC 7800 confirmation of a sender-constrained token: `{"jkt": …}` for DPoP (RFC 9449
    /// §6.2), `{"x5t#S256": …}` for mutual TLS (RFC 8705 §3.2).
    #[serde(default)]
    pub cnf: Option<Value>,
}

impl Introspection {
    /// The DPoP key thumbprint the token is bound to, if any.
    pub fn jkt(&self) -> Option<&str> {
        self.cnf.as_ref()?.get("jkt")?.as_str()
    }
}

fn secret_id(serial: u64) -> String {
    format!("sec-{serial}")
}

fn short_hash(s: &str, bytes: usize) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..bytes])
}

fn unavailable(what: &str, e: impl fmt::Display) -> IdpError {
    IdpError::Unavailable(format!("{what}: {e}"))
}

/// Metadata sent back in an RFC 7592 update: everything the server returned except the fields
/// it manages itself (§2.2: the update replaces the whole registration).
fn update_body(current: &Map<String, Value>) -> Map<String, Value> {
    let mut body = current.clone();
    for f in SERVER_MANAGED {
        body.remove(f);
    }
    body
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

fn scopes_of(m: &Map<String, Value>) -> Vec<String> {
    str_field(m, "scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn same_scopes(got: &[String], want: &[String]) -> bool {
    let mut g: Vec<&String> = got.iter().collect();
    let mut w: Vec<&String> = want.iter().collect();
    g.sort();
    g.dedup();
    w.sort();
    w.dedup();
    g == w
}

fn grants_token(m: &Map<String, Value>) -> bool {
    m.get("grant_types")
        .and_then(Value::as_array)
        .is_some_and(|g| g.iter().any(|v| v.as_str() == Some(GRANT)))
}

/// A scope list RFC 7591 can carry: space-separated tokens, and at least one (an omitted
/// `scope` means the server's default set, which is not "none").
fn scope_value(scopes: &[String]) -> Result<String, IdpError> {
    if scopes.is_empty() {
        return Err(IdpError::Refused(
            "RFC 7591 cannot register a client with no scopes (an omitted scope means the \
             server's default set); deactivate or delete the client instead"
                .into(),
        ));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| s.is_empty() || s.chars().any(|c| c == ' ' || c == '"' || c == '\\'))
    {
        return Err(IdpError::Refused(format!(
            "scope `{bad}` cannot be registered: scope tokens have no spaces, quotes or backslashes (RFC 6749 §3.3)"
        )));
    }
    Ok(scopes.join(" "))
}

/// The adapter. Construct once per process and share it: it serialises its own management
/// calls, because servers may rotate the registration access token on every update.
pub struct OAuthDcr {
    settings: OAuthSettings,
    vault: Arc<dyn Vault>,
    http: reqwest::Client,
    endpoints: tokio::sync::OnceCell<Endpoints>,
    /// Vault names start here: `steward/oauth/<issuer hash>`.
    prefix: String,
    /// Held across each read-modify-write of a registration (and the vault records).
    lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for OAuthDcr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthDcr")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl OAuthDcr {
    /// The adapter for `settings`, keeping its registration records in `vault`. Discovery
    /// happens on first use; call [`OAuthDcr::endpoints`] to do it now.
    pub fn new(settings: OAuthSettings, vault: Arc<dyn Vault>) -> Result<Self, OAuthSettingsError> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            // Credentials ride on these requests: never follow a redirect elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| OAuthSettingsError::Http(e.to_string()))?;
        let prefix = format!("steward/oauth/{}", short_hash(&settings.issuer, 6));
        Ok(Self {
            settings,
            vault,
            http,
            endpoints: tokio::sync::OnceCell::new(),
            prefix,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-urlencoded before HTTP Basic.
fn client_auth(req: RequestBuilder, client_id: &str, secret: &Secret) -> RequestBuilder {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    req.basic_auth(enc(client_id), Some(enc(secret.expose())))
}

/// Sends `req`; a transport failure is `Unavailable`. The body is JSON or `None`.
async fn send(req: RequestBuilder, what: &str) -> Result<(StatusCode, Option<Value>), IdpError> {
    let resp = req.send().await.map_err(|e| unavailable(what, e))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| unavailable(what, e))?;
    Ok((status, serde_json::from_slice(&bytes).ok()))
}

fn parse<T: DeserializeOwned>(body: Option<Value>, what: &str) -> Result<T, IdpError> {
    let body = body.ok_or_else(|| IdpError::Refused(format!("the {what} is not JSON")))?;
    serde_json::from_value(body)
        .map_err(|e| IdpError::Refused(format!("the {what} is not as expected: {e}")))
}

/// The server's error answer: OAuth's `error`/`error_description` as `Provider`; 5xx and 429
/// as `Unavailable` (retryable). Non-OAuth bodies are not quoted: they might echo a request.
fn error_from(status: StatusCode, body: Option<Value>, what: &str) -> IdpError {
    let code = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str);
    let summary = body
        .as_ref()
        .and_then(|b| b.get("error_description"))
        .and_then(Value::as_str);
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return IdpError::Unavailable(format!(
            "{what}: the server answered {status}{}",
            code.map(|c| format!(" {c}")).unwrap_or_default()
        ));
    }
    match code {
        Some(code) => IdpError::Provider {
            status: status.as_u16(),
            code: code.into(),
            summary: summary.unwrap_or(what).into(),
        },
        None => IdpError::Refused(format!(
            "{what}: the server answered {status} without an OAuth error"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_on_loopback() {
        for ok in [
            "https://auth.example.com",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:9000/issuer",
            "http://localhost:3000",
        ] {
            assert!(OAuthSettings::new(ok).is_ok(), "{ok} should be accepted");
        }
        assert!(matches!(
            OAuthSettings::new("http://auth.example.com"),
            Err(OAuthSettingsError::InsecureUrl(_))
        ));
        assert!(matches!(
            OAuthSettings::new("http://10.0.0.1"),
            Err(OAuthSettingsError::InsecureUrl(_))
        ));
        assert!(matches!(
            OAuthSettings::new("ftp://127.0.0.1"),
            Err(OAuthSettingsError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            OAuthSettings::new("https://a.example?x=1"),
            Err(OAuthSettingsError::IssuerWithQuery(_))
        ));
        assert!(matches!(
            OAuthSettings::new(" "),
            Err(OAuthSettingsError::MissingIssuer)
        ));
    }

    #[test]
    fn settings_debug_hides_the_initial_access_token() {
        let s = OAuthSettings::new("https://a.example")
            .unwrap()
            .with_initial_access_token(Secret::new("iat-value-123"))
            .unwrap();
        assert!(!format!("{s:?}").contains("iat-value-123"));
    }

    #[test]
    fn lifetime_field_and_resource_are_checked() {
        let s = OAuthSettings::new("https://a.example").unwrap();
        assert!(s.clone().with_token_lifetime_field(Some("scope")).is_err());
        assert!(s.clone().with_token_lifetime_field(Some("a b")).is_err());
        assert!(s.clone().with_token_lifetime_field(None).is_ok());
        assert!(s.clone().with_resource("not a uri").is_err());
        assert!(s.clone().with_resource("https://api.example#x").is_err());
        assert!(s.with_resource("urn:example:api").is_ok());
    }

    #[test]
    fn update_body_drops_server_managed_fields() {
        let m = json!({"client_id": "c", "registration_access_token": "t",
            "registration_client_uri": "u", "client_secret_expires_at": 0,
            "client_id_issued_at": 1, "scope": "a"});
        let b = update_body(m.as_object().unwrap());
        assert_eq!(Value::Object(b), json!({"client_id": "c", "scope": "a"}));
    }

    #[test]
    fn oauth_errors_map_to_provider_and_5xx_to_unavailable() {
        let body = Some(json!({"error": "invalid_client_metadata", "error_description": "bad"}));
        match error_from(StatusCode::BAD_REQUEST, body.clone(), "x") {
            IdpError::Provider {
                status,
                code,
                summary,
            } => {
                assert_eq!(
                    (status, code.as_str(), summary.as_str()),
                    (400, "invalid_client_metadata", "bad")
                );
            }
            e => panic!("{e:?}"),
        }
        assert!(error_from(StatusCode::BAD_GATEWAY, body, "x").retryable());
        assert!(matches!(
            error_from(StatusCode::FORBIDDEN, Some(json!("<html>")), "x"),
            IdpError::Refused(_)
        ));
    }

    #[test]
    fn no_scopes_cannot_be_registered() {
        assert!(matches!(scope_value(&[]), Err(IdpError::Refused(_))));
        assert!(scope_value(&["a b".into()]).is_err());
        assert_eq!(scope_value(&["a".into(), "b".into()]).unwrap(), "a b");
    }
}
