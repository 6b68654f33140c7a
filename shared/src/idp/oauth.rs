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
//!
//! Each client's `registration_access_token` and `registration_client_uri` live in the vault
//! (never in logs or errors); so do the idempotency keys and the list of registered clients.

use crate::ports::idp::{
    ClientInfo, ClientSpec, CreatedClient, IdentityProvider, IdpError, NewSecret, TokenRevocation,
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
use url::{Host, Url};

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

/// The grant this adapter registers clients for.
const GRANT: &str = "client_credentials";

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

/// A misconfiguration, said as what to change.
#[derive(Debug, thiserror::Error)]
pub enum OAuthSettingsError {
    #[error("set {ISSUER_ENV} to the OAuth server's issuer URL, e.g. https://auth.example.com")]
    MissingIssuer,
    #[error(
        "the OAuth issuer `{issuer}` is not a URL ({why}); set {ISSUER_ENV} to e.g. https://auth.example.com"
    )]
    BadIssuer { issuer: String, why: String },
    #[error(
        "the OAuth issuer `{0}` must not have a query or fragment (RFC 8414 §2); set {ISSUER_ENV} to the issuer exactly as the server names itself"
    )]
    IssuerWithQuery(String),
    #[error(
        "the OAuth URL `{0}` uses plain http on a host that is not loopback: client secrets would cross the network in clear; use https (http is accepted only for 127.0.0.0/8, ::1 and localhost)"
    )]
    InsecureUrl(String),
    #[error("the OAuth URL `{0}` must use https (or http on a loopback host)")]
    UnsupportedScheme(String),
    #[error(
        "the resource `{0}` must be an absolute URI without a fragment (RFC 8707 §2); fix {RESOURCE_ENV}"
    )]
    BadResource(String),
    #[error(
        "the token lifetime field `{0}` must be a client metadata name of letters, digits and `_` that is not a standard field; fix {TOKEN_LIFETIME_FIELD_ENV} (empty turns per-client lifetimes off)"
    )]
    BadLifetimeField(String),
    #[error(
        "{INITIAL_ACCESS_TOKEN_ENV} is set but empty; unset it when the server allows open registration"
    )]
    EmptyInitialAccessToken,
    #[error("cannot build the HTTP client for the OAuth server: {0}")]
    Http(String),
}

/// Where the authorization server is and how to register clients there.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    issuer: String,
    /// Sent as the bearer token of registration requests (RFC 7591 §3).
    pub initial_access_token: Option<Secret>,
    /// Sent as `resource` (RFC 8707) in token requests.
    pub resource: Option<String>,
    /// The client metadata field for a per-client token lifetime in seconds; `None`: the
    /// server's default lifetime applies and clients report `token_lifetime_secs` 0.
    pub token_lifetime_field: Option<String>,
}

impl OAuthSettings {
    /// Settings for `issuer` (https, or http on loopback), with no initial access token, no
    /// resource and the default token lifetime field.
    pub fn new(issuer: &str) -> Result<Self, OAuthSettingsError> {
        let issuer = issuer.trim();
        if issuer.is_empty() {
            return Err(OAuthSettingsError::MissingIssuer);
        }
        let url = Url::parse(issuer).map_err(|e| OAuthSettingsError::BadIssuer {
            issuer: issuer.into(),
            why: e.to_string(),
        })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(OAuthSettingsError::IssuerWithQuery(issuer.into()));
        }
        check_transport(&url)?;
        Ok(Self {
            issuer: issuer.into(),
            initial_access_token: None,
            resource: None,
            token_lifetime_field: Some(DEFAULT_TOKEN_LIFETIME_FIELD.into()),
        })
    }

    /// Reads `STEWARD_OAUTH_ISSUER`, `STEWARD_OAUTH_INITIAL_ACCESS_TOKEN`,
    /// `STEWARD_OAUTH_RESOURCE` and `STEWARD_OAUTH_TOKEN_LIFETIME_FIELD`.
    pub fn from_env() -> Result<Self, OAuthSettingsError> {
        let var = |k: &str| std::env::var(k).ok();
        let issuer = var(ISSUER_ENV).ok_or(OAuthSettingsError::MissingIssuer)?;
        let mut s = Self::new(&issuer)?;
        if let Some(t) = var(INITIAL_ACCESS_TOKEN_ENV) {
            s = s.with_initial_access_token(Secret::new(t.trim()))?;
        }
        if let Some(r) = var(RESOURCE_ENV).filter(|r| !r.trim().is_empty()) {
            s = s.with_resource(r.trim())?;
        }
        if let Some(f) = var(TOKEN_LIFETIME_FIELD_ENV) {
            let f = f.trim();
            s = s.with_token_lifetime_field((!f.is_empty()).then_some(f))?;
        }
        Ok(s)
    }

    pub fn with_initial_access_token(mut self, token: Secret) -> Result<Self, OAuthSettingsError> {
        if token.expose().is_empty() {
            return Err(OAuthSettingsError::EmptyInitialAccessToken);
        }
        self.initial_access_token = Some(token);
        Ok(self)
    }

    pub fn with_resource(mut self, resource: &str) -> Result<Self, OAuthSettingsError> {
        match Url::parse(resource) {
            Ok(u) if u.fragment().is_none() => {
                self.resource = Some(resource.into());
                Ok(self)
            }
            _ => Err(OAuthSettingsError::BadResource(resource.into())),
        }
    }

    pub fn with_token_lifetime_field(
        mut self,
        field: Option<&str>,
    ) -> Result<Self, OAuthSettingsError> {
        if let Some(f) = field {
            let ok = !f.is_empty()
                && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !RESERVED_FIELDS.contains(&f);
            if !ok {
                return Err(OAuthSettingsError::BadLifetimeField(f.into()));
            }
        }
        self.token_lifetime_field = field.map(str::to_string);
        Ok(self)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// https anywhere, plain http only on loopback: secrets and tokens travel in these requests.
fn check_transport(url: &Url) -> Result<(), OAuthSettingsError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(OAuthSettingsError::InsecureUrl(url.to_string())),
        _ => Err(OAuthSettingsError::UnsupportedScheme(url.to_string())),
    }
}

/// The server's endpoints, from its metadata (OpenID Discovery or RFC 8414).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub token: Url,
    pub registration: Url,
    pub revocation: Option<Url>,
    pub introspection: Option<Url>,
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
}

/// What the adapter keeps per registered client (in the vault: it holds the RFC 7592 token).
#[derive(Debug)]
struct Registration {
    client_id: String,
    uri: String,
    token: Secret,
    /// Counts the client's secrets: the current secret's id is `sec-<serial>`.
    secret_serial: u64,
    deleted: bool,
    /// The idempotency key of the `create_client` that registered it (Steward's mark).
    idempotency_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct RegistrationDoc {
    client_id: String,
    registration_client_uri: String,
    registration_access_token: String,
    secret_serial: u64,
    #[serde(default)]
    deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct IndexDoc {
    clients: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct IdempotencyDoc {
    client_id: String,
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

    /// Discovers the server's endpoints once: `<issuer>/.well-known/openid-configuration`, else
    /// RFC 8414's `/.well-known/oauth-authorization-server[/<issuer path>]`. The metadata's
    /// `issuer` must equal the configured one; every endpoint must be https (or loopback http).
    pub async fn endpoints(&self) -> Result<&Endpoints, IdpError> {
        self.endpoints.get_or_try_init(|| self.discover()).await
    }

    async fn discover(&self) -> Result<Endpoints, IdpError> {
        let issuer = &self.settings.issuer;
        let base = Url::parse(issuer).map_err(|e| IdpError::Refused(e.to_string()))?;
        let oidc = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let mut rfc8414 = base.clone();
        let path = base.path().trim_end_matches('/');
        rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        let mut tried = Vec::new();
        let mut meta = None;
        for url in [oidc, rfc8414.to_string()] {
            let resp = self
                .http
                .get(&url)
                .header("accept", "application/json")
                .send()
                .await
                .map_err(|e| unavailable("OAuth discovery", e))?;
            let status = resp.status();
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                return Err(IdpError::Unavailable(format!(
                    "OAuth discovery: {url} answered {status}"
                )));
            }
            if status.is_success() {
                let m: Map<String, Value> = resp.json().await.map_err(|e| {
                    IdpError::Refused(format!("OAuth discovery: {url} is not JSON metadata: {e}"))
                })?;
                meta = Some(m);
                break;
            }
            tried.push(format!("{url} ({status})"));
        }
        let Some(meta) = meta else {
            return Err(IdpError::Refused(format!(
                "no OAuth server metadata at {}; is {ISSUER_ENV} the server's issuer URL?",
                tried.join(" or ")
            )));
        };
        if str_field(&meta, "issuer") != Some(issuer.as_str()) {
            return Err(IdpError::Refused(format!(
                "the server names its issuer `{}`, not `{issuer}` (RFC 8414 §3.3 requires them \
                 equal); set {ISSUER_ENV} to the server's issuer",
                str_field(&meta, "issuer").unwrap_or("<none>")
            )));
        }
        let endpoint = |name: &str| -> Result<Option<Url>, IdpError> {
            let Some(v) = str_field(&meta, name) else {
                return Ok(None);
            };
            let url = Url::parse(v)
                .map_err(|e| IdpError::Refused(format!("the server's {name} `{v}`: {e}")))?;
            check_transport(&url).map_err(|e| IdpError::Refused(e.to_string()))?;
            Ok(Some(url))
        };
        let token = endpoint("token_endpoint")?.ok_or_else(|| {
            IdpError::Refused("the server's metadata has no token_endpoint".into())
        })?;
        let registration = endpoint("registration_endpoint")?.ok_or_else(|| {
            IdpError::Refused(
                "the server does not offer dynamic client registration (no \
                 registration_endpoint in its metadata): this adapter needs RFC 7591"
                    .into(),
            )
        })?;
        Ok(Endpoints {
            token,
            registration,
            revocation: endpoint("revocation_endpoint")?,
            introspection: endpoint("introspection_endpoint")?,
        })
    }

    /// A client_credentials token for `client_id` (client_secret_basic), for `scopes` (none:
    /// the server's default for the client), for the configured resource if any.
    pub async fn token(
        &self,
        client_id: &str,
        secret: &Secret,
        scopes: &[String],
    ) -> Result<AccessToken, IdpError> {
        let endpoint = self.endpoints().await?.token.clone();
        let mut form = vec![("grant_type", GRANT.to_string())];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        if let Some(r) = &self.settings.resource {
            form.push(("resource", r.clone()));
        }
        let req = client_auth(self.http.post(endpoint), client_id, secret).form(&form);
        let (status, body) = send(req, "token request").await?;
        if !status.is_success() {
            return Err(error_from(status, body, "token request"));
        }
        #[derive(Deserialize)]
        struct Wire {
            access_token: String,
            #[serde(default)]
            token_type: String,
            #[serde(default)]
            expires_in: Option<u64>,
            #[serde(default)]
            scope: Option<String>,
        }
        let w: Wire = parse(body, "token response")?;
        Ok(AccessToken {
            access_token: Secret::new(w.access_token),
            token_type: w.token_type,
            expires_in: w.expires_in,
            scope: w.scope,
        })
    }

    /// RFC 7662: asks the server about `token`, authenticating as `as_client` (client id and
    /// secret). Servers usually answer only about the caller's own tokens.
    pub async fn introspect(
        &self,
        token: &Secret,
        as_client: (&str, &Secret),
    ) -> Result<Introspection, IdpError> {
        let Some(endpoint) = self.endpoints().await?.introspection.clone() else {
            return Err(IdpError::Refused(
                "the server does not offer token introspection (no introspection_endpoint in \
                 its metadata)"
                    .into(),
            ));
        };
        let form = [
            ("token", token.expose()),
            ("token_type_hint", "access_token"),
        ];
        let req = client_auth(self.http.post(endpoint), as_client.0, as_client.1).form(&form);
        let (status, body) = send(req, "token introspection").await?;
        if !status.is_success() {
            return Err(error_from(status, body, "token introspection"));
        }
        parse(body, "introspection response")
    }

    /// RFC 7009: revokes `token`, authenticating as `as_client` (the client it was issued to).
    /// An unknown or already revoked token is success, as the RFC says.
    pub async fn revoke(&self, token: &Secret, as_client: (&str, &Secret)) -> Result<(), IdpError> {
        let Some(endpoint) = self.endpoints().await?.revocation.clone() else {
            return Err(IdpError::Refused(
                "the server does not offer token revocation (no revocation_endpoint in its \
                 metadata)"
                    .into(),
            ));
        };
        let form = [
            ("token", token.expose()),
            ("token_type_hint", "access_token"),
        ];
        let req = client_auth(self.http.post(endpoint), as_client.0, as_client.1).form(&form);
        let (status, body) = send(req, "token revocation").await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(error_from(status, body, "token revocation"))
        }
    }

    // --- vault records -----------------------------------------------------------------------

    fn client_name(&self, client_id: &str) -> String {
        format!("{}/client/{}", self.prefix, short_hash(client_id, 16))
    }
    fn index_name(&self) -> String {
        format!("{}/clients", self.prefix)
    }
    fn idempotency_name(&self, key: &str) -> String {
        format!("{}/idempotency/{}", self.prefix, short_hash(key, 16))
    }

    async fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, IdpError> {
        let Some((_, value)) = self
            .vault
            .get(name, Stage::Current)
            .await
            .map_err(|e| unavailable("vault", e))?
        else {
            return Ok(None);
        };
        serde_json::from_str(value.expose())
            .map(Some)
            .map_err(|e| IdpError::Unavailable(format!("vault record {name} is unreadable: {e}")))
    }

    async fn store<T: Serialize>(&self, name: &str, doc: &T) -> Result<(), IdpError> {
        let value =
            Secret::new(serde_json::to_string(doc).map_err(|e| unavailable("vault record", e))?);
        // A fresh version per write; the value may hold a token, so the id is not derived from it.
        let version = hex::encode(rand::random::<[u8; 16]>());
        self.vault
            .put(name, &version, &value, Stage::Current)
            .await
            .map_err(|e| unavailable("vault", e))
    }

    async fn registration(&self, client_id: &str) -> Result<Option<Registration>, IdpError> {
        let doc: Option<RegistrationDoc> = self.load(&self.client_name(client_id)).await?;
        Ok(doc.map(|d| Registration {
            client_id: d.client_id,
            uri: d.registration_client_uri,
            token: Secret::new(d.registration_access_token),
            secret_serial: d.secret_serial,
            deleted: d.deleted,
            idempotency_key: d.idempotency_key,
        }))
    }

    /// The live registration of `client_id`, or `UnknownClient`.
    async fn live_registration(&self, client_id: &str) -> Result<Registration, IdpError> {
        match self.registration(client_id).await? {
            Some(r) if !r.deleted => Ok(r),
            _ => Err(IdpError::UnknownClient(client_id.into())),
        }
    }

    async fn save_registration(&self, r: &Registration) -> Result<(), IdpError> {
        let doc = RegistrationDoc {
            client_id: r.client_id.clone(),
            registration_client_uri: r.uri.clone(),
            registration_access_token: r.token.expose().to_string(),
            secret_serial: r.secret_serial,
            deleted: r.deleted,
            idempotency_key: r.idempotency_key.clone(),
        };
        self.store(&self.client_name(&r.client_id), &doc).await
    }

    async fn index(&self) -> Result<IndexDoc, IdpError> {
        Ok(self.load(&self.index_name()).await?.unwrap_or_default())
    }

    async fn index_add(&self, client_id: &str) -> Result<(), IdpError> {
        let mut idx = self.index().await?;
        if !idx.clients.iter().any(|c| c == client_id) {
            idx.clients.push(client_id.into());
            self.store(&self.index_name(), &idx).await?;
        }
        Ok(())
    }

    async fn index_remove(&self, client_id: &str) -> Result<(), IdpError> {
        let mut idx = self.index().await?;
        let before = idx.clients.len();
        idx.clients.retain(|c| c != client_id);
        if idx.clients.len() != before {
            self.store(&self.index_name(), &idx).await?;
        }
        Ok(())
    }

    // --- RFC 7591 / 7592 ---------------------------------------------------------------------

    fn registration_url(&self, uri: &str) -> Result<Url, IdpError> {
        let url = Url::parse(uri).map_err(|e| {
            IdpError::Refused(format!("the server's registration_client_uri `{uri}`: {e}"))
        })?;
        check_transport(&url).map_err(|e| IdpError::Refused(e.to_string()))?;
        Ok(url)
    }

    /// RFC 7592 read. `None`: the server says the client is gone (§2.1 answers 401 then; some
    /// servers 404), or it no longer accepts the stored registration access token.
    async fn read(&self, r: &Registration) -> Result<Option<Map<String, Value>>, IdpError> {
        let url = self.registration_url(&r.uri)?;
        let req = self
            .http
            .get(url)
            .bearer_auth(r.token.expose())
            .header("accept", "application/json");
        let (status, body) = send(req, "reading a client registration").await?;
        match status {
            s if s.is_success() => parse(body, "client registration").map(Some),
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => Ok(None),
            s => Err(error_from(s, body, "reading a client registration")),
        }
    }

    async fn read_live(&self, r: &Registration) -> Result<Map<String, Value>, IdpError> {
        self.read(r)
            .await?
            .ok_or_else(|| IdpError::UnknownClient(r.client_id.clone()))
    }

    /// RFC 7592 update with `body` (a whole registration). Takes up a rotated registration
    /// access token or URI into `r` and saves it before anything else can fail.
    async fn update(
        &self,
        r: &mut Registration,
        body: Map<String, Value>,
    ) -> Result<Map<String, Value>, IdpError> {
        let url = self.registration_url(&r.uri)?;
        let req = self
            .http
            .put(url)
            .bearer_auth(r.token.expose())
            .header("accept", "application/json")
            .json(&Value::Object(body));
        let (status, resp) = send(req, "updating a client registration").await?;
        match status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => {
                return Err(IdpError::UnknownClient(r.client_id.clone()));
            }
            s => return Err(error_from(s, resp, "updating a client registration")),
        }
        let resp: Map<String, Value> = parse(resp, "client registration")?;
        let mut changed = false;
        if let Some(t) = str_field(&resp, "registration_access_token")
            && t != r.token.expose()
        {
            r.token = Secret::new(t);
            changed = true;
        }
        if let Some(u) = str_field(&resp, "registration_client_uri")
            && u != r.uri
        {
            self.registration_url(u)?;
            r.uri = u.to_string();
            changed = true;
        }
        if changed {
            self.save_registration(r).await?;
        }
        Ok(resp)
    }

    /// An update that must keep the client's secret: sends the current secret back (RFC 7592
    /// §2.2), and if the server replaced it anyway, records that and says so.
    async fn update_keeping_secret(
        &self,
        r: &mut Registration,
        body: Map<String, Value>,
    ) -> Result<Map<String, Value>, IdpError> {
        let sent = str_field(&body, "client_secret").map(str::to_string);
        let resp = self.update(r, body).await?;
        let got = str_field(&resp, "client_secret");
        if let (Some(sent), Some(got)) = (sent.as_deref(), got)
            && sent != got
        {
            r.secret_serial += 1;
            self.save_registration(r).await?;
            return Err(IdpError::Refused(format!(
                "the server replaced the secret of client {} on a metadata update; rotate it \
                 (add_secret) to hand the agent a working secret",
                r.client_id
            )));
        }
        Ok(resp)
    }

    /// Rotation: an RFC 7592 update without `client_secret` (§2.2: an omitted field is
    /// deleted), which the server answers with a new secret.
    async fn rotate(&self, r: &mut Registration) -> Result<NewSecret, IdpError> {
        let current = self.read_live(r).await?;
        let old = str_field(&current, "client_secret").map(str::to_string);
        let mut body = update_body(&current);
        body.remove("client_secret");
        let resp = self.update(r, body).await?;
        let new = str_field(&resp, "client_secret");
        match new {
            Some(n) if old.as_deref() != Some(n) => {
                r.secret_serial += 1;
                self.save_registration(r).await?;
                Ok(NewSecret {
                    secret_id: secret_id(r.secret_serial),
                    secret: Secret::new(n),
                })
            }
            _ => Err(IdpError::Refused(format!(
                "the server did not issue a new client_secret when client {} omitted it from an \
                 RFC 7592 update, so its secret cannot be rotated here (with oidc-provider, \
                 register through an initial access token carrying a rotation policy; see \
                 docs/adr/0013-oauth-dcr-adapter.md)",
                r.client_id
            ))),
        }
    }

    /// Checks that the server registered what was asked (RFC 7591 §3.2.1: it may replace
    /// values, and the response says what it registered).
    fn check_registered(
        &self,
        m: &Map<String, Value>,
        scopes: &[String],
        lifetime: u32,
    ) -> Result<(), IdpError> {
        let got = scopes_of(m);
        if !same_scopes(&got, scopes) {
            return Err(IdpError::Refused(format!(
                "the server registered scope `{}` instead of `{}`",
                got.join(" "),
                scopes.join(" ")
            )));
        }
        if let Some(f) = &self.settings.token_lifetime_field {
            let echoed = m.get(f).and_then(Value::as_u64);
            if echoed != Some(u64::from(lifetime)) {
                return Err(IdpError::Refused(format!(
                    "the server did not register a token lifetime of {lifetime} s in client \
                     metadata `{f}` (it answered {}), so tokens would live its default \
                     lifetime; set {TOKEN_LIFETIME_FIELD_ENV} to the field it supports, or to \
                     empty to accept its default",
                    m.get(f).map_or("nothing".to_string(), Value::to_string)
                )));
            }
        }
        Ok(())
    }

    fn info(&self, r: &Registration, m: &Map<String, Value>) -> ClientInfo {
        let lifetime = self
            .settings
            .token_lifetime_field
            .as_ref()
            .and_then(|f| m.get(f))
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let created_at = m
            .get("client_id_issued_at")
            .and_then(Value::as_i64)
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        ClientInfo {
            client_id: r.client_id.clone(),
            name: str_field(m, "client_name").unwrap_or_default().into(),
            scopes: scopes_of(m),
            token_lifetime_secs: lifetime,
            active: grants_token(m),
            created_at,
            steward_key: r.idempotency_key.clone(),
        }
    }

    /// RFC 7591 registration of a client_credentials client, recorded in the vault.
    async fn register(
        &self,
        spec: &ClientSpec,
        idempotency_key: &str,
    ) -> Result<(Registration, Secret), IdpError> {
        let scope = scope_value(&spec.scopes)?;
        let endpoint = self.endpoints().await?.registration.clone();
        let mut body = json!({
            "client_name": spec.name,
            "grant_types": [GRANT],
            "response_types": [],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": scope,
        });
        if let (Some(f), Some(obj)) = (&self.settings.token_lifetime_field, body.as_object_mut()) {
            obj.insert(f.clone(), json!(spec.token_lifetime_secs));
        }
        let mut req = self
            .http
            .post(endpoint)
            .header("accept", "application/json")
            .json(&body);
        if let Some(t) = &self.settings.initial_access_token {
            req = req.bearer_auth(t.expose());
        }
        let (status, resp) = send(req, "registering a client").await?;
        if !status.is_success() {
            return Err(error_from(status, resp, "registering a client"));
        }
        let m: Map<String, Value> = parse(resp, "registration response")?;
        let client_id = str_field(&m, "client_id")
            .ok_or_else(|| IdpError::Refused("the registration response has no client_id".into()))?
            .to_string();
        let (Some(uri), Some(token)) = (
            str_field(&m, "registration_client_uri"),
            str_field(&m, "registration_access_token"),
        ) else {
            return Err(IdpError::Refused(format!(
                "the server registered client {client_id} without RFC 7592 management \
                 (no registration_access_token or registration_client_uri), so Steward cannot \
                 rotate or delete it; delete it at the server, and enable RFC 7592 there"
            )));
        };
        let secret = str_field(&m, "client_secret").map(Secret::new);
        let mut reg = Registration {
            client_id: client_id.clone(),
            uri: uri.into(),
            token: Secret::new(token),
            secret_serial: 1,
            deleted: false,
            // Kept with the record from the start: the client is listed only once it is there.
            idempotency_key: Some(idempotency_key.into()),
        };
        // Recorded first: without the registration access token the client is unmanageable.
        self.save_registration(&reg).await?;
        self.index_add(&client_id).await?;
        let problem = match (&secret, self.registration_url(uri)) {
            (_, Err(e)) => Some(e),
            (None, _) => Some(IdpError::Refused(format!(
                "the server registered client {client_id} without a client_secret"
            ))),
            (Some(_), Ok(_)) => self
                .check_registered(&m, &spec.scopes, spec.token_lifetime_secs)
                .err(),
        };
        if let Some(problem) = problem {
            // Not what was asked: take it back rather than leave a client nobody wants.
            if let Err(e) = self.remove(&mut reg).await {
                tracing::warn!(client_id, error = %e, "could not delete a refused registration");
            }
            return Err(problem);
        }
        let secret = secret.ok_or_else(|| IdpError::Refused("no client_secret".into()))?;
        Ok((reg, secret))
    }

    /// RFC 7592 delete, then the record becomes a tombstone and leaves the index.
    async fn remove(&self, r: &mut Registration) -> Result<(), IdpError> {
        let url = self.registration_url(&r.uri)?;
        let req = self.http.delete(url).bearer_auth(r.token.expose());
        let (status, body) = send(req, "deleting a client").await?;
        match status {
            // §2.3: 401 for a client that does not exist (any more).
            s if s.is_success() || s == StatusCode::UNAUTHORIZED || s == StatusCode::NOT_FOUND => {}
            s => return Err(error_from(s, body, "deleting a client")),
        }
        r.deleted = true;
        r.token = Secret::new("");
        self.save_registration(r).await?;
        self.index_remove(&r.client_id).await
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

#[async_trait]
impl IdentityProvider for OAuthDcr {
    async fn create_client(
        &self,
        spec: &ClientSpec,
        idempotency_key: &str,
    ) -> Result<CreatedClient, IdpError> {
        let _g = self.lock.lock().await;
        let key_name = self.idempotency_name(idempotency_key);
        if let Some(IdempotencyDoc { client_id }) = self.load(&key_name).await?
            && let Some(mut reg) = self.registration(&client_id).await?
            && !reg.deleted
            && self.read(&reg).await?.is_some()
        {
            // A repeat whose first answer was lost: nobody holds that secret, replace it.
            let s = self.rotate(&mut reg).await?;
            return Ok(CreatedClient {
                client_id,
                secret_id: s.secret_id,
                secret: s.secret,
            });
        }
        let (reg, secret) = self.register(spec, idempotency_key).await?;
        self.store(
            &key_name,
            &IdempotencyDoc {
                client_id: reg.client_id.clone(),
            },
        )
        .await?;
        tracing::info!(client_id = %reg.client_id, "registered an OAuth client (RFC 7591)");
        Ok(CreatedClient {
            client_id: reg.client_id,
            secret_id: secret_id(reg.secret_serial),
            secret,
        })
    }

    async fn set_grants(
        &self,
        client_id: &str,
        scopes: &[String],
        token_lifetime_secs: u32,
    ) -> Result<(), IdpError> {
        let scope = scope_value(scopes)?;
        let _g = self.lock.lock().await;
        let mut reg = self.live_registration(client_id).await?;
        let current = self.read_live(&reg).await?;
        let mut body = update_body(&current);
        body.insert("scope".into(), json!(scope));
        if let Some(f) = &self.settings.token_lifetime_field {
            body.insert(f.clone(), json!(token_lifetime_secs));
        }
        let resp = self.update_keeping_secret(&mut reg, body).await?;
        self.check_registered(&resp, scopes, token_lifetime_secs)
    }

    async fn set_active(&self, client_id: &str, active: bool) -> Result<(), IdpError> {
        let _g = self.lock.lock().await;
        let mut reg = self.live_registration(client_id).await?;
        let current = self.read_live(&reg).await?;
        let mut body = update_body(&current);
        let mut grants: Vec<Value> = current
            .get("grant_types")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        grants.retain(|g| g.as_str() != Some(GRANT));
        if active {
            grants.push(json!(GRANT));
        }
        body.insert("grant_types".into(), Value::Array(grants));
        let resp = self.update_keeping_secret(&mut reg, body).await?;
        if grants_token(&resp) != active {
            return Err(IdpError::Refused(format!(
                "the server kept client {client_id}'s grant_types as they were, so it cannot be \
                 {} here (RFC 7592 has no lifecycle; this adapter emulates it with the \
                 client_credentials grant)",
                if active { "activated" } else { "deactivated" }
            )));
        }
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientInfo>, IdpError> {
        let _g = self.lock.lock().await;
        let Some(reg) = self.registration(client_id).await? else {
            return Ok(None);
        };
        if reg.deleted {
            return Ok(None);
        }
        Ok(self.read(&reg).await?.map(|m| self.info(&reg, &m)))
    }

    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        let _g = self.lock.lock().await;
        let mut out = Vec::new();
        for client_id in self.index().await?.clients {
            let Some(reg) = self.registration(&client_id).await? else {
                continue;
            };
            if reg.deleted {
                continue;
            }
            match self.read(&reg).await? {
                Some(m) => out.push(self.info(&reg, &m)),
                None => tracing::warn!(
                    client_id,
                    "a client this adapter registered is gone at the server, or no longer \
                     accepts its registration access token"
                ),
            }
        }
        Ok(out)
    }

    async fn add_secret(
        &self,
        client_id: &str,
        _idempotency_key: &str,
    ) -> Result<NewSecret, IdpError> {
        // One secret per client: every call replaces the current one, a repeat included
        // (the port's "a repeat replaces the secret the first call made").
        let _g = self.lock.lock().await;
        let mut reg = self.live_registration(client_id).await?;
        self.rotate(&mut reg).await
    }

    async fn remove_secret(&self, client_id: &str, secret_id_: &str) -> Result<(), IdpError> {
        let _g = self.lock.lock().await;
        let reg = self.live_registration(client_id).await?;
        if secret_id_ == secret_id(reg.secret_serial) {
            return Err(IdpError::Refused(format!(
                "{secret_id_} is the only secret of client {client_id} (RFC 7592 clients hold \
                 one); rotate it with add_secret instead"
            )));
        }
        // Any other id is a replaced secret: already gone.
        Ok(())
    }

    async fn secret_ids(&self, client_id: &str) -> Result<Vec<String>, IdpError> {
        let _g = self.lock.lock().await;
        let reg = self.live_registration(client_id).await?;
        self.read_live(&reg).await?;
        Ok(vec![secret_id(reg.secret_serial)])
    }

    async fn test_secret(&self, client_id: &str, secret: &Secret) -> Result<(), IdpError> {
        let scopes = {
            let _g = self.lock.lock().await;
            match self.registration(client_id).await? {
                Some(reg) if !reg.deleted => self
                    .read(&reg)
                    .await?
                    .map(|m| scopes_of(&m))
                    .unwrap_or_default(),
                // Not ours, or deleted: ask anyway, the server decides.
                _ => Vec::new(),
            }
        };
        self.token(client_id, secret, &scopes).await.map(|_| ())
    }

    async fn revoke_tokens(&self, client_id: &str) -> Result<TokenRevocation, IdpError> {
        let _g = self.lock.lock().await;
        let reg = self.live_registration(client_id).await?;
        let m = self.read_live(&reg).await?;
        let lifetime = self.info(&reg, &m).token_lifetime_secs;
        let until = if lifetime > 0 {
            format!("at most {lifetime} s, the client's token lifetime")
        } else {
            "the server's default token lifetime".to_string()
        };
        Ok(TokenRevocation {
            revoked: "nothing: RFC 7009 revokes one token at a time by its value, and Steward \
                      does not hold the tokens its agents obtain"
                .into(),
            outstanding: Some(format!(
                "access tokens already issued to {client_id} stay valid until they expire \
                 ({until}), unless their holder revokes them at the revocation endpoint; \
                 deactivate the client to stop new ones"
            )),
        })
    }

    async fn delete_client(&self, client_id: &str) -> Result<(), IdpError> {
        let _g = self.lock.lock().await;
        match self.registration(client_id).await? {
            Some(r) if r.deleted => Ok(()),
            Some(mut r) => {
                self.remove(&mut r).await?;
                tracing::info!(client_id, "deleted an OAuth client (RFC 7592)");
                Ok(())
            }
            None => Err(IdpError::Refused(format!(
                "no registration record for client {client_id}: this adapter did not register \
                 it (or its vault record is lost), so it holds no registration access token to \
                 delete it with; delete it at the server"
            ))),
        }
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
