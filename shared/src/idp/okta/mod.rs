//! The Okta adapter of the identity provider port, over Okta's Management API:
//! - a client is a service app (`OPENID_CONNECT`, `client_credentials`, `client_secret_basic`);
//!   its client id is the app id;
//! - secrets are the app's client secrets (`/credentials/secrets`, at most two, only an
//!   inactive one can be deleted);
//! - a key client is a service app with `private_key_jwt` and no secret; its keys are the app's
//!   JSON Web Keys (`/credentials/jwks`: Okta names each by an `id` of its own, Steward by the
//!   JWK's `kid`; only an inactive key can be deleted, and the only active key of a
//!   `private_key_jwt` app cannot be deactivated); `dpop_bound_access_tokens` binds its tokens;
//! - scopes are the app's scope consent grants (`/grants`);
//! - the token lifetime and the idempotency records live in the app's `profile` (Okta sets
//!   lifetimes on authorization-server policy rules, not on apps: see ADR 0012);
//! - lifecycle is `/lifecycle/activate|deactivate`, token revocation `DELETE /tokens`.
//!
//! Every call goes through one rate limiter per [`Okta`] (clones share it) that honours
//! `X-Rate-Limit-*` and 429, and retries 5xx only where a repeat does no harm.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use shared::idp::okta::{Okta, OktaSettings};
//! let okta = Okta::new(OktaSettings::from_env()?)?;
//! let page = okta.system_log(None, None, 100).await?;
//! # Ok(()) }
//! ```

mod directory;
mod http;
mod rate_limit;
mod settings;

pub use directory::OktaDirectory;
pub use settings::{
    AuthServer, ENV_API_TOKEN, ENV_AUTH_SERVER, ENV_CLIENT_ID, ENV_KEY_ID, ENV_ORG_URL,
    ENV_PRIVATE_KEY_FILE, ENV_TEST_SCOPE, MANAGEMENT_SCOPES, OKTA_DEFAULT_TOKEN_LIFETIME_SECS,
    OktaAuth, OktaSettings, OktaSettingsError, SigningKey,
};

use crate::agent_key::{AgentKeyPair, CLIENT_ASSERTION_TYPE};
use crate::ports::idp::{
    AgentKey, ClientInfo, ClientKey, ClientSpec, CreatedClient, IdentityProvider, IdpError,
    NewSecret, TokenBinding, TokenRevocation,
};
use crate::secret::Secret;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{Answer, As, Body, Call, Transport};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use url::Url;

/// Page size of list calls (Okta's maximum for apps).
const PAGE_SIZE: &str = "200";
/// Okta's `name` of custom OIDC app instances.
const OIDC_APP_NAME: &str = "oidc_client";
/// The client authentication method of key clients (RFC 7523).
const PRIVATE_KEY_JWT: &str = "private_key_jwt";
/// Okta's System Log returns at most this many events per page.
const MAX_LOG_PAGE: u32 = 1000;

/// Keys of Steward's records in an app's `profile`.
mod profile_keys {
    pub const AGENT_ID: &str = "stewardAgentId";
    pub const IDEMPOTENCY_KEY: &str = "stewardIdempotencyKey";
    pub const TOKEN_LIFETIME: &str = "stewardTokenLifetimeSecs";
    /// The key of the latest `add_secret`, the secret it made, and when it started: a repeat
    /// of that key discards what the lost first attempt made.
    pub const SECRET_KEY: &str = "stewardSecretKey";
    pub const SECRET_ID: &str = "stewardSecretId";
    pub const SECRET_SINCE: &str = "stewardSecretSince";
}
use profile_keys as pk;

/// The Okta adapter. Cheap to clone; clones share the HTTP connections, the rate limiter and
/// Steward's cached OAuth for Okta token.
#[derive(Clone)]
pub struct Okta {
    t: Arc<Transport>,
}

impl std::fmt::Debug for Okta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Okta")
            .field("org_url", &self.t.settings.org_url.as_str())
            .finish_non_exhaustive()
    }
}

/// One page of System Log events, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub events: Vec<Value>,
    /// The cursor for the next poll (`after` of Okta's `rel="next"` link).
    pub after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct App {
    id: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    status: String,
    created: Option<String>,
    #[serde(default)]
    settings: AppSettings,
    #[serde(default)]
    credentials: AppCredentials,
    #[serde(default)]
    profile: Option<Map<String, Value>>,
}

impl App {
    fn auth_method(&self) -> Option<&str> {
        self.credentials
            .oauth_client
            .as_ref()?
            .token_endpoint_auth_method
            .as_deref()
    }

    fn dpop_bound(&self) -> bool {
        self.settings
            .oauth_client
            .as_ref()
            .is_some_and(|o| o.dpop_bound_access_tokens)
    }
}

#[derive(Debug, Default, Deserialize)]
struct AppSettings {
    #[serde(rename = "oauthClient", default)]
    oauth_client: Option<OAuthClientSettings>,
}

#[derive(Debug, Default, Deserialize)]
struct OAuthClientSettings {
    #[serde(default)]
    grant_types: Vec<String>,
    #[serde(default)]
    dpop_bound_access_tokens: bool,
}

#[derive(Debug, Default, Deserialize)]
struct AppCredentials {
    #[serde(rename = "oauthClient", default)]
    oauth_client: Option<OAuthClientCredentials>,
}

#[derive(Debug, Default, Deserialize)]
struct OAuthClientCredentials {
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// One of an app's JSON Web Keys as Okta lists it: `id` is Okta's name for it (the path of its
/// lifecycle calls), `kid` the JWK's own.
#[derive(Debug, Clone, Deserialize)]
struct JwkObject {
    id: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(rename = "use", default)]
    key_use: Option<String>,
    #[serde(default)]
    created: Option<String>,
    /// The key's other members (`kty`, `crv`, `x`, `y`, `n`, `e`, ...).
    #[serde(flatten)]
    members: Map<String, Value>,
}

impl JwkObject {
    /// The key's `kid`; for a key added without one (Okta allows a single such key), its RFC 7638
    /// thumbprint, which is what Steward calls every key.
    fn kid(&self) -> String {
        match &self.kid {
            Some(kid) if !kid.is_empty() => kid.clone(),
            _ => crate::agent_key::thumbprint(&Value::Object(self.members.clone()))
                .unwrap_or_default(),
        }
    }

    fn signs(&self) -> bool {
        self.key_use.as_deref().is_none_or(|u| u == "sig")
    }
}

/// The keys of a `GET /credentials/jwks` answer. Okta documents it as a list of keys; its
/// published examples also show `{"jwks": {"keys": [...]}}` and `{"keys": [...]}`, so all three
/// are read.
fn jwk_list(body: Value) -> Result<Vec<JwkObject>, IdpError> {
    let keys = match body {
        Value::Array(keys) => keys,
        Value::Object(mut o) => {
            let set = o.remove("jwks").unwrap_or(Value::Object(o));
            match set.get("keys") {
                Some(Value::Array(keys)) => keys.clone(),
                _ => return Err(unexpected("the JSON Web Keys", "no list of keys")),
            }
        }
        _ => return Err(unexpected("the JSON Web Keys", "no list of keys")),
    };
    keys.into_iter()
        .map(|k| serde_json::from_value(k).map_err(|e| unexpected("a JSON Web Key", e)))
        .collect()
}

/// The JWK Okta is given for `key`: only the public members Okta's signing-key schema names
/// (an RSA or EC key), `kid` the key's thumbprint, `use: sig` and the `alg` that fits the key.
/// Anything else in the stored JWK is dropped, so no private member can reach Okta; a key Okta
/// cannot hold is refused before Okta is asked. Errors name the key by its `kid` only.
fn okta_jwk(key: &AgentKey) -> Result<Map<String, Value>, IdpError> {
    let refused = |why: &str| IdpError::Refused(format!("key {}: {why}", key.kid));
    let jwk: Value =
        serde_json::from_str(&key.jwk).map_err(|_| refused("its public JWK is not JSON"))?;
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let (members, alg): (&[&str], &str) = match (text("kty"), text("crv")) {
        (Some("EC"), Some("P-256")) => (&["kty", "crv", "x", "y"], "ES256"),
        (Some("EC"), Some("P-384")) => (&["kty", "crv", "x", "y"], "ES384"),
        (Some("EC"), Some("P-521")) => (&["kty", "crv", "x", "y"], "ES512"),
        (Some("RSA"), _) => (&["kty", "n", "e"], text("alg").unwrap_or("RS256")),
        _ => {
            return Err(refused(
                "Okta verifies client assertions with RSA and EC (P-256, P-384, P-521) keys only",
            ));
        }
    };
    if !matches!(
        alg,
        "RS256" | "RS384" | "RS512" | "ES256" | "ES384" | "ES512"
    ) || text("alg").is_some_and(|a| a != alg)
    {
        return Err(refused("its `alg` is not one Okta accepts for this key"));
    }
    let mut out = Map::new();
    for m in members {
        let v = text(m).ok_or_else(|| refused(&format!("its `{m}` is missing")))?;
        out.insert((*m).into(), json!(v));
    }
    out.insert("kid".into(), json!(key.kid));
    out.insert("use".into(), json!("sig"));
    out.insert("alg".into(), json!(alg));
    Ok(out)
}

/// A client secret object as listed: the secret value is deliberately not read.
#[derive(Debug, Clone, Deserialize)]
struct SecretObject {
    id: String,
    status: String,
    created: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Grant {
    id: String,
    #[serde(rename = "scopeId")]
    scope_id: String,
    #[serde(default)]
    status: Option<String>,
}

fn profile_str<'a>(profile: &'a Option<Map<String, Value>>, key: &str) -> Option<&'a str> {
    profile.as_ref()?.get(key)?.as_str()
}

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn is_active(status: &str) -> bool {
    status.eq_ignore_ascii_case("ACTIVE")
}

/// A 404 about an app means the client does not exist.
fn unknown_if_missing(client_id: &str) -> impl Fn(IdpError) -> IdpError + '_ {
    move |e| match e {
        IdpError::Provider { status: 404, .. } => IdpError::UnknownClient(client_id.into()),
        other => other,
    }
}

fn is_missing(e: &IdpError) -> bool {
    matches!(
        e,
        IdpError::Provider { status: 404, .. } | IdpError::UnknownClient(_)
    )
}

fn unexpected(what: &str, e: impl std::fmt::Display) -> IdpError {
    IdpError::Unavailable(format!("Okta answered {what} with an unexpected body: {e}"))
}

impl Okta {
    /// An adapter for the org in `settings`; fails only when the HTTP client cannot be built.
    pub fn new(settings: OktaSettings) -> Result<Self, OktaSettingsError> {
        Ok(Self {
            t: Arc::new(Transport::new(settings)?),
        })
    }

    /// [`Okta::new`] with [`OktaSettings::from_env`].
    pub fn from_env() -> Result<Self, OktaSettingsError> {
        Self::new(OktaSettings::from_env()?)
    }

    pub fn settings(&self) -> &OktaSettings {
        &self.t.settings
    }

    /// One page of the System Log, oldest first, for a poller: pass the `after` of the previous
    /// page, or on the first poll `since` (Okta's default is 7 days back). `limit` is capped at
    /// Okta's 1000. Uses the `logs` rate-limit bucket, apart from the app calls.
    pub async fn system_log(
        &self,
        after: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<LogPage, IdpError> {
        let limit = limit.clamp(1, MAX_LOG_PAGE).to_string();
        let since = since.map(|s| s.to_rfc3339_opts(SecondsFormat::Millis, true));
        let mut query = vec![("sortOrder", "ASCENDING"), ("limit", limit.as_str())];
        match (after, &since) {
            (Some(a), _) => query.push(("after", a)),
            (None, Some(s)) => query.push(("since", s.as_str())),
            (None, None) => {}
        }
        let answer = self.get(self.t.url(&["api", "v1", "logs"], &query)).await?;
        let events: Vec<Value> = answer.json()?;
        let next = answer
            .next_link()
            .and_then(|link| Url::parse(&link).ok())
            .and_then(|url| {
                url.query_pairs()
                    .find(|(k, _)| k == "after")
                    .map(|(_, v)| v.into_owned())
            });
        Ok(LogPage {
            events,
            after: next.or_else(|| after.map(str::to_string)),
        })
    }

    async fn get(&self, url: Url) -> Result<Answer, IdpError> {
        self.t
            .send(Call {
                method: Method::GET,
                url,
                body: Body::None,
                auth: As::Steward,
                idempotent: true,
                dpop: None,
            })
            .await
    }

    async fn steward(
        &self,
        method: Method,
        url: Url,
        body: Body,
        idempotent: bool,
    ) -> Result<Answer, IdpError> {
        self.t
            .send(Call {
                method,
                url,
                body,
                auth: As::Steward,
                idempotent,
                dpop: None,
            })
            .await
    }

    fn app_url(&self, id: &str, rest: &[&str]) -> Url {
        let mut segments = vec!["api", "v1", "apps", id];
        segments.extend_from_slice(rest);
        self.t.url(&segments, &[])
    }

    /// Every element of a list that Okta pages with `Link: <…>; rel="next"`.
    async fn all_pages<T: serde::de::DeserializeOwned>(
        &self,
        first: Url,
    ) -> Result<Vec<T>, IdpError> {
        let mut out = Vec::new();
        let mut url = first;
        loop {
            let answer = self.get(url).await?;
            let page: Vec<T> = answer.json()?;
            let empty = page.is_empty();
            out.extend(page);
            match answer.next_link() {
                // An empty page with a next link would loop forever.
                Some(link) if !empty => url = self.t.same_org(&link)?,
                _ => return Ok(out),
            }
        }
    }

    /// The app as Okta stores it (for a PUT), or `None` when it does not exist.
    async fn app_value(&self, id: &str) -> Result<Option<Value>, IdpError> {
        match self.get(self.app_url(id, &[])).await {
            Ok(answer) => {
                let mut value: Value = answer.json()?;
                // Never hold a secret value longer than needed (GET may include the first one).
                if let Some(s) = value.pointer_mut("/credentials/oauthClient/client_secret") {
                    *s = Value::Null;
                }
                Ok(Some(value))
            }
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the app's profile entries in `changes` (PUT takes the whole app).
    async fn update_profile(
        &self,
        id: &str,
        app: &mut Value,
        changes: &[(&str, Value)],
    ) -> Result<(), IdpError> {
        if !app.get("profile").is_some_and(Value::is_object) {
            app["profile"] = json!({});
        }
        for (key, value) in changes {
            app["profile"][*key] = value.clone();
        }
        let mut body = app.clone();
        if let Some(oauth) = body
            .pointer_mut("/credentials/oauthClient")
            .and_then(Value::as_object_mut)
        {
            // Secrets are managed through /credentials/secrets only.
            oauth.remove("client_secret");
        }
        self.steward(Method::PUT, self.app_url(id, &[]), Body::Json(body), true)
            .await
            .map_err(unknown_if_missing(id))?;
        Ok(())
    }

    /// The app whose profile records `idempotency_key`. Okta has no search by profile, so the
    /// search is by label (`q` matches names and labels by prefix).
    async fn find_created(
        &self,
        label: &str,
        idempotency_key: &str,
    ) -> Result<Option<App>, IdpError> {
        let url = self.t.url(
            &["api", "v1", "apps"],
            &[("q", label), ("limit", PAGE_SIZE)],
        );
        let apps: Vec<App> = self.all_pages(url).await?;
        Ok(apps
            .into_iter()
            .find(|a| profile_str(&a.profile, pk::IDEMPOTENCY_KEY) == Some(idempotency_key)))
    }

    async fn grants(&self, id: &str) -> Result<Vec<Grant>, IdpError> {
        let answer = self
            .get(self.app_url(id, &["grants"]))
            .await
            .map_err(unknown_if_missing(id))?;
        let grants: Vec<Grant> = answer.json()?;
        Ok(grants
            .into_iter()
            .filter(|g| g.status.as_deref().is_none_or(is_active))
            .collect())
    }

    /// Grants exactly `scopes` (in that order for new ones), revoking the rest.
    async fn sync_grants(&self, id: &str, scopes: &[String]) -> Result<(), IdpError> {
        let current = self.grants(id).await?;
        let mut wanted: Vec<&String> = Vec::new();
        for s in scopes {
            if !wanted.contains(&s) {
                wanted.push(s);
            }
        }
        for scope in &wanted {
            if current.iter().any(|g| &g.scope_id == *scope) {
                continue;
            }
            let body = json!({"issuer": self.t.settings.issuer(), "scopeId": scope});
            // Not repeated after a 5xx: a lost answer may have granted it (the next
            // set_grants sees it and does nothing).
            self.steward(
                Method::POST,
                self.app_url(id, &["grants"]),
                Body::Json(body),
                false,
            )
            .await
            .map_err(unknown_if_missing(id))?;
        }
        for g in current.iter().filter(|g| !wanted.contains(&&g.scope_id)) {
            match self
                .steward(
                    Method::DELETE,
                    self.app_url(id, &["grants", &g.id]),
                    Body::None,
                    true,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The app's client secrets, oldest first.
    async fn secrets(&self, id: &str) -> Result<Vec<SecretObject>, IdpError> {
        let answer = self
            .get(self.app_url(id, &["credentials", "secrets"]))
            .await
            .map_err(unknown_if_missing(id))?;
        let mut secrets: Vec<SecretObject> = answer.json()?;
        // Stable: secrets created in the same second keep Okta's (creation) order.
        secrets.sort_by_key(|s| parse_time(s.created.as_deref()));
        Ok(secrets)
    }

    /// A new system-generated secret. Never repeated after a 5xx: a lost answer may have made
    /// one (the port's idempotency key repairs that).
    async fn create_secret(&self, id: &str) -> Result<NewSecret, IdpError> {
        let answer = self
            .steward(
                Method::POST,
                self.app_url(id, &["credentials", "secrets"]),
                Body::Json(json!({})),
                false,
            )
            .await
            .map_err(unknown_if_missing(id))?;
        let mut value: Value = answer.json()?;
        let secret = value
            .get_mut("client_secret")
            .map(Value::take)
            .and_then(|v| v.as_str().map(Secret::new))
            .ok_or_else(|| unexpected("a new client secret", "no client_secret"))?;
        let object: SecretObject =
            serde_json::from_value(value).map_err(|e| unexpected("a new client secret", e))?;
        Ok(NewSecret {
            secret_id: object.id,
            secret,
        })
    }

    /// Deactivates (if needed) and deletes one secret; one already gone is fine.
    async fn discard_secret(&self, id: &str, secret: &SecretObject) -> Result<(), IdpError> {
        let gone_ok = |r: Result<Answer, IdpError>| match r {
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(e),
        };
        if is_active(&secret.status) {
            gone_ok(
                self.steward(
                    Method::POST,
                    self.app_url(
                        id,
                        &[
                            "credentials",
                            "secrets",
                            &secret.id,
                            "lifecycle",
                            "deactivate",
                        ],
                    ),
                    Body::None,
                    true,
                )
                .await,
            )?;
        }
        gone_ok(
            self.steward(
                Method::DELETE,
                self.app_url(id, &["credentials", "secrets", &secret.id]),
                Body::None,
                true,
            )
            .await,
        )
    }

    /// A fresh secret replacing every other one (a repeated create: nobody holds the old ones).
    async fn replace_all_secrets(&self, id: &str) -> Result<NewSecret, IdpError> {
        let mut old = self.secrets(id).await?;
        // Make room for the new one: inactive ones first, then the oldest.
        old.sort_by_key(|s| is_active(&s.status));
        while old.len() >= 2 {
            let s = old.remove(0);
            self.discard_secret(id, &s).await?;
        }
        let new = self.create_secret(id).await?;
        for s in old.iter().filter(|s| s.id != new.secret_id) {
            self.discard_secret(id, s).await?;
        }
        Ok(new)
    }

    fn info(&self, app: App, grants: Vec<Grant>) -> ClientInfo {
        let lifetime = app
            .profile
            .as_ref()
            .and_then(|p| p.get(pk::TOKEN_LIFETIME))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(self.t.settings.default_token_lifetime_secs);
        // The create writes the key into the profile in the same call that makes the app, so
        // every app Steward made carries it from its first moment.
        let steward_key = profile_str(&app.profile, pk::IDEMPOTENCY_KEY)
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        ClientInfo {
            client_id: app.id,
            name: app.label,
            scopes: grants.into_iter().map(|g| g.scope_id).collect(),
            token_lifetime_secs: lifetime,
            active: is_active(&app.status),
            created_at: parse_time(app.created.as_deref()).unwrap_or_default(),
            steward_key,
        }
    }

    fn lifetime_of(&self, app: &Value) -> u32 {
        app.pointer(&format!("/profile/{}", pk::TOKEN_LIFETIME))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(self.t.settings.default_token_lifetime_secs)
    }

    /// On a repeated `add_secret` key: discards the secret the lost first attempt made.
    async fn discard_repeat(
        &self,
        id: &str,
        profile: &Value,
        secrets: &mut Vec<SecretObject>,
    ) -> Result<(), IdpError> {
        let made = match profile.get(pk::SECRET_ID).and_then(Value::as_str) {
            Some(sid) => secrets.iter().position(|s| s.id == sid),
            // Started but never recorded: the newest secret created since then, if any.
            None => {
                let since = parse_time(profile.get(pk::SECRET_SINCE).and_then(Value::as_str))
                    .map(|t| t.timestamp());
                secrets.iter().rposition(|s| {
                    let created = parse_time(s.created.as_deref()).map(|t| t.timestamp());
                    matches!((created, since), (Some(c), Some(t)) if c >= t)
                })
            }
        };
        // Never the last one: the client would be locked out.
        if let Some(i) = made.filter(|_| secrets.len() > 1) {
            let s = secrets.remove(i);
            self.discard_secret(id, &s).await?;
        }
        Ok(())
    }

    /// The scope a credential test asks for: the configured one, or the client's grants.
    async fn test_scope(&self, client_id: &str) -> Result<String, IdpError> {
        Ok(match &self.t.settings.test_scope {
            Some(s) => s.clone(),
            None => self
                .grants(client_id)
                .await?
                .into_iter()
                .map(|g| g.scope_id)
                .collect::<Vec<_>>()
                .join(" "),
        })
    }

    /// The app's JSON Web Keys, oldest first.
    async fn jwks(&self, id: &str) -> Result<Vec<JwkObject>, IdpError> {
        let answer = self
            .get(self.app_url(id, &["credentials", "jwks"]))
            .await
            .map_err(unknown_if_missing(id))?;
        let mut keys = jwk_list(answer.json()?)?;
        // Stable: keys added in the same second keep Okta's (creation) order.
        keys.sort_by_key(|k| parse_time(k.created.as_deref()));
        Ok(keys)
    }

    /// `POST /credentials/jwks/{keyId}/lifecycle/activate|deactivate` (Okta's key id, not the
    /// `kid`). A 404 stays a `Provider` error: it may be the key that is gone, not the app.
    async fn key_lifecycle(&self, id: &str, key_id: &str, active: bool) -> Result<(), IdpError> {
        let action = if active { "activate" } else { "deactivate" };
        self.steward(
            Method::POST,
            self.app_url(id, &["credentials", "jwks", key_id, "lifecycle", action]),
            Body::None,
            true,
        )
        .await?;
        Ok(())
    }

    /// Sets `settings.oauthClient.dpop_bound_access_tokens` (PUT takes the whole app).
    async fn set_dpop(&self, id: &str, dpop: bool) -> Result<(), IdpError> {
        let mut app = self
            .app_value(id)
            .await?
            .ok_or_else(|| IdpError::UnknownClient(id.into()))?;
        if !app
            .pointer("/settings/oauthClient")
            .is_some_and(Value::is_object)
        {
            return Err(unexpected("an app", "no settings.oauthClient"));
        }
        app["settings"]["oauthClient"]["dpop_bound_access_tokens"] = json!(dpop);
        self.update_profile(id, &mut app, &[]).await
    }

    /// A DPoP proof (RFC 9449) for the token request, with the authorization server's nonce
    /// once it asked for one (Okta does, on the first request). Signed in memory with the
    /// agent's key; the proof is sent in a sensitive header and never logged.
    fn dpop_proof(
        key: &AgentKeyPair,
        url: &Url,
        nonce: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<String, IdpError> {
        let unusable =
            |_| IdpError::Refused("the agent's private key cannot sign a DPoP proof".into());
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.pem().expose().as_bytes())
            .map_err(unusable)?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = serde_json::from_value(key.public_jwk()).ok();
        let mut htu = url.clone();
        htu.set_query(None);
        htu.set_fragment(None);
        let mut claims = json!({"htm": "POST", "htu": htu.as_str(), "iat": now.timestamp(),
                                "jti": hex::encode(rand::random::<[u8; 16]>())});
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        jsonwebtoken::encode(&header, &claims, &encoding).map_err(unusable)
    }
}

#[async_trait]
impl IdentityProvider for Okta {
    async fn create_client(
        &self,
        spec: &ClientSpec,
        idempotency_key: &str,
    ) -> Result<CreatedClient, IdpError> {
        let (id, first_secret) = match self.find_created(&spec.name, idempotency_key).await? {
            Some(app) => {
                // A repeat: bring it to the spec (the first attempt may have stopped halfway).
                self.set_grants(&app.id, &spec.scopes, spec.token_lifetime_secs)
                    .await?;
                (app.id, None)
            }
            None => {
                let body = json!({
                    "name": OIDC_APP_NAME,
                    "label": spec.name,
                    "signOnMode": "OPENID_CONNECT",
                    "credentials": {"oauthClient": {
                        "token_endpoint_auth_method": "client_secret_basic",
                        "autoKeyRotation": true,
                    }},
                    "settings": {"oauthClient": {
                        "grant_types": ["client_credentials"],
                        "response_types": ["token"],
                        "application_type": "service",
                    }},
                    "profile": {
                        pk::AGENT_ID: spec.agent_id,
                        pk::IDEMPOTENCY_KEY: idempotency_key,
                        pk::TOKEN_LIFETIME: spec.token_lifetime_secs,
                    },
                });
                let url = self.t.url(&["api", "v1", "apps"], &[("activate", "true")]);
                // Never repeated after a 5xx: a lost answer may have created it, and the
                // caller's repeat with the same key finds it instead.
                let answer = self
                    .steward(Method::POST, url, Body::Json(body), false)
                    .await?;
                let mut value: Value = answer.json()?;
                let secret = value
                    .pointer_mut("/credentials/oauthClient/client_secret")
                    .map(Value::take)
                    .and_then(|v| v.as_str().map(Secret::new));
                let app: App =
                    serde_json::from_value(value).map_err(|e| unexpected("a new app", e))?;
                self.sync_grants(&app.id, &spec.scopes).await?;
                (app.id, secret)
            }
        };
        let new = match first_secret {
            Some(secret) => match self.secrets(&id).await?.as_slice() {
                [only] => NewSecret {
                    secret_id: only.id.clone(),
                    secret,
                },
                _ => self.replace_all_secrets(&id).await?,
            },
            None => self.replace_all_secrets(&id).await?,
        };
        tracing::info!(client_id = %id, agent_id = %spec.agent_id, "okta service app ready");
        Ok(CreatedClient {
            client_id: id,
            secret_id: new.secret_id,
            secret: new.secret,
        })
    }

    async fn set_grants(
        &self,
        client_id: &str,
        scopes: &[String],
        token_lifetime_secs: u32,
    ) -> Result<(), IdpError> {
        let mut app = self
            .app_value(client_id)
            .await?
            .ok_or_else(|| IdpError::UnknownClient(client_id.into()))?;
        let recorded = app
            .pointer(&format!("/profile/{}", pk::TOKEN_LIFETIME))
            .and_then(Value::as_u64);
        if recorded != Some(u64::from(token_lifetime_secs)) {
            self.update_profile(
                client_id,
                &mut app,
                &[(pk::TOKEN_LIFETIME, json!(token_lifetime_secs))],
            )
            .await?;
        }
        self.sync_grants(client_id, scopes).await
    }

    async fn set_active(&self, client_id: &str, active: bool) -> Result<(), IdpError> {
        let action = if active { "activate" } else { "deactivate" };
        self.steward(
            Method::POST,
            self.app_url(client_id, &["lifecycle", action]),
            Body::None,
            true,
        )
        .await
        .map_err(unknown_if_missing(client_id))?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientInfo>, IdpError> {
        let Some(value) = self.app_value(client_id).await? else {
            return Ok(None);
        };
        let app: App = serde_json::from_value(value).map_err(|e| unexpected("an app", e))?;
        // People's SSO apps are not agents' clients: never a shadow agent, never taken over.
        if !is_service_app(&app) {
            return Ok(None);
        }
        match self.grants(client_id).await {
            Ok(grants) => Ok(Some(self.info(app, grants))),
            Err(IdpError::UnknownClient(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        let filter = format!("name eq \"{OIDC_APP_NAME}\"");
        let url = self.t.url(
            &["api", "v1", "apps"],
            &[("filter", filter.as_str()), ("limit", PAGE_SIZE)],
        );
        let apps: Vec<App> = self.all_pages(url).await?;
        let mut out = Vec::new();
        for app in apps {
            if !is_service_app(&app) {
                continue;
            }
            // One call per app: the discovery sweep is rare, and the limiter paces it.
            match self.grants(&app.id).await {
                Ok(grants) => out.push(self.info(app, grants)),
                Err(IdpError::UnknownClient(_)) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn add_secret(
        &self,
        client_id: &str,
        idempotency_key: &str,
    ) -> Result<NewSecret, IdpError> {
        let mut app = self
            .app_value(client_id)
            .await?
            .ok_or_else(|| IdpError::UnknownClient(client_id.into()))?;
        let profile = app.get("profile").cloned().unwrap_or(Value::Null);
        if profile.get(pk::SECRET_KEY).and_then(Value::as_str) == Some(idempotency_key) {
            let mut secrets = self.secrets(client_id).await?;
            self.discard_repeat(client_id, &profile, &mut secrets)
                .await?;
        }
        let since = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        self.update_profile(
            client_id,
            &mut app,
            &[
                (pk::SECRET_KEY, json!(idempotency_key)),
                (pk::SECRET_ID, Value::Null),
                (pk::SECRET_SINCE, json!(since)),
            ],
        )
        .await?;
        // Okta refuses a third secret itself (E0000001): its answer says why.
        let new = self.create_secret(client_id).await?;
        if let Err(e) = self
            .update_profile(
                client_id,
                &mut app,
                &[(pk::SECRET_ID, json!(new.secret_id))],
            )
            .await
        {
            // The secret works; a repeat of the key finds it by its creation time instead.
            tracing::warn!(client_id, error = %e, "okta: recording the new secret's id failed");
        }
        Ok(new)
    }

    async fn remove_secret(&self, client_id: &str, secret_id: &str) -> Result<(), IdpError> {
        let secrets = match self.secrets(client_id).await {
            Ok(s) => s,
            Err(IdpError::UnknownClient(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(target) = secrets.iter().find(|s| s.id == secret_id) else {
            return Ok(());
        };
        let another_active = secrets
            .iter()
            .any(|s| s.id != secret_id && is_active(&s.status));
        if is_active(&target.status) && !another_active {
            return Err(IdpError::Refused(format!(
                "secret {secret_id} is the only active secret of client {client_id}; add its successor first"
            )));
        }
        self.discard_secret(client_id, target).await
    }

    async fn secret_ids(&self, client_id: &str) -> Result<Vec<String>, IdpError> {
        Ok(self
            .secrets(client_id)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    async fn test_secret(&self, client_id: &str, secret: &Secret) -> Result<(), IdpError> {
        let scope = self.test_scope(client_id).await?;
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        self.t
            .send(Call {
                method: Method::POST,
                url: self.t.settings.token_endpoint(),
                body: Body::Form(form),
                auth: As::Client {
                    id: client_id,
                    secret,
                },
                // Asking for a token changes nothing at Okta.
                idempotent: true,
                dpop: None,
            })
            .await?;
        Ok(())
    }

    async fn revoke_tokens(&self, client_id: &str) -> Result<TokenRevocation, IdpError> {
        let app = self
            .app_value(client_id)
            .await?
            .ok_or_else(|| IdpError::UnknownClient(client_id.into()))?;
        self.steward(
            Method::DELETE,
            self.app_url(client_id, &["tokens"]),
            Body::None,
            true,
        )
        .await
        .map_err(unknown_if_missing(client_id))?;
        let lifetime = self.lifetime_of(&app);
        Ok(TokenRevocation {
            revoked: format!(
                "all refresh tokens of Okta app {client_id}, and the access tokens issued with them"
            ),
            outstanding: Some(format!(
                "client_credentials access tokens already issued cannot be revoked by an admin and stay valid until they expire, at most {lifetime} s after issue (the lifetime recorded for this client, enforced by the authorization server's access policy); deactivate the app to stop new ones"
            )),
        })
    }

    async fn delete_client(&self, client_id: &str) -> Result<(), IdpError> {
        // Okta deletes only inactive apps.
        for (method, rest) in [
            (Method::POST, &["lifecycle", "deactivate"][..]),
            (Method::DELETE, &[][..]),
        ] {
            match self
                .steward(method, self.app_url(client_id, rest), Body::None, true)
                .await
            {
                Ok(_) => {}
                Err(e) if is_missing(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn create_key_client(
        &self,
        spec: &ClientSpec,
        key: &AgentKey,
        binding: TokenBinding,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        let jwk = okta_jwk(key)?;
        let dpop = match binding {
            TokenBinding::None => false,
            TokenBinding::Dpop => true,
            TokenBinding::Certificate => {
                return Err(IdpError::Refused(
                    "Okta does not bind client_credentials tokens to a client certificate (RFC 8705): use token binding `dpop` or `none` with Okta".into(),
                ));
            }
        };
        if let Some(app) = self.find_created(&spec.name, idempotency_key).await? {
            if app.auth_method() != Some(PRIVATE_KEY_JWT) {
                return Err(IdpError::Refused(format!(
                    "idempotency key {idempotency_key} already made Okta app {}, a client with a secret, not a key client",
                    app.id
                )));
            }
            // A repeat: bring it to the spec (the first attempt may have stopped halfway).
            self.set_grants(&app.id, &spec.scopes, spec.token_lifetime_secs)
                .await?;
            if app.dpop_bound() != dpop {
                self.set_dpop(&app.id, dpop).await?;
            }
            // The key is there unless the first attempt never made the app with it; a key a
            // rotation retired since is not made active again.
            if !self.jwks(&app.id).await?.iter().any(|k| k.kid() == key.kid) {
                self.add_key(&app.id, key).await?;
            }
            tracing::info!(client_id = %app.id, agent_id = %spec.agent_id, "okta key client ready (repeat)");
            return Ok(app.id);
        }
        let mut oauth_settings = json!({
            "grant_types": ["client_credentials"],
            "response_types": ["token"],
            "application_type": "service",
            "jwks": {"keys": [Value::Object(jwk)]},
        });
        if dpop {
            oauth_settings["dpop_bound_access_tokens"] = json!(true);
        }
        let body = json!({
            "name": OIDC_APP_NAME,
            "label": spec.name,
            "signOnMode": "OPENID_CONNECT",
            "credentials": {"oauthClient": {
                "token_endpoint_auth_method": PRIVATE_KEY_JWT,
                "autoKeyRotation": true,
            }},
            "settings": {"oauthClient": oauth_settings},
            "profile": {
                pk::AGENT_ID: spec.agent_id,
                pk::IDEMPOTENCY_KEY: idempotency_key,
                pk::TOKEN_LIFETIME: spec.token_lifetime_secs,
            },
        });
        let url = self.t.url(&["api", "v1", "apps"], &[("activate", "true")]);
        // Never repeated after a 5xx: a lost answer may have created it, and the caller's
        // repeat with the same key finds it instead.
        let answer = self
            .steward(Method::POST, url, Body::Json(body), false)
            .await?;
        let mut value: Value = answer.json()?;
        // A private_key_jwt app has no secret; drop one if an org ever sends it.
        if let Some(s) = value.pointer_mut("/credentials/oauthClient/client_secret") {
            *s = Value::Null;
        }
        let app: App = serde_json::from_value(value).map_err(|e| unexpected("a new app", e))?;
        self.sync_grants(&app.id, &spec.scopes).await?;
        tracing::info!(client_id = %app.id, agent_id = %spec.agent_id, kid = %key.kid, dpop, "okta key client ready");
        Ok(app.id)
    }

    async fn add_key(&self, client_id: &str, key: &AgentKey) -> Result<(), IdpError> {
        let mut body = okta_jwk(key)?;
        let keys = self.jwks(client_id).await?;
        if let Some(k) = keys.iter().find(|k| k.kid() == key.kid) {
            if !is_active(&k.status) {
                self.key_lifecycle(client_id, &k.id, true).await?;
            }
            return Ok(());
        }
        body.insert("status".into(), json!("ACTIVE"));
        // Not repeated after a 5xx: a lost answer may have added it, and a repeat of add_key
        // finds it by its kid.
        let answer = self
            .steward(
                Method::POST,
                self.app_url(client_id, &["credentials", "jwks"]),
                Body::Json(Value::Object(body)),
                false,
            )
            .await
            .map_err(unknown_if_missing(client_id))?;
        let added: JwkObject = answer.json()?;
        if !is_active(&added.status) {
            self.key_lifecycle(client_id, &added.id, true).await?;
        }
        tracing::info!(client_id, kid = %key.kid, "okta: key added");
        Ok(())
    }

    async fn set_key_active(
        &self,
        client_id: &str,
        kid: &str,
        active: bool,
    ) -> Result<(), IdpError> {
        let keys = self.jwks(client_id).await?;
        match keys.iter().find(|k| k.kid() == kid) {
            // A key that is gone signs nothing: deactivating it is done.
            None if !active => Ok(()),
            None => Err(IdpError::Refused(format!(
                "client {client_id} holds no key {kid}: add it first"
            ))),
            Some(k) if is_active(&k.status) == active => Ok(()),
            // Okta refuses to deactivate the only active key of a private_key_jwt app
            // (E0000001): its answer says so.
            Some(k) => self.key_lifecycle(client_id, &k.id, active).await,
        }
    }

    async fn remove_key(&self, client_id: &str, kid: &str) -> Result<(), IdpError> {
        let keys = match self.jwks(client_id).await {
            Ok(k) => k,
            Err(IdpError::UnknownClient(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(target) = keys.iter().find(|k| k.kid() == kid) else {
            return Ok(());
        };
        if is_active(&target.status) {
            let another_active = keys
                .iter()
                .any(|k| k.id != target.id && k.signs() && is_active(&k.status));
            if !another_active {
                return Err(IdpError::Refused(format!(
                    "key {kid} is the only active key of client {client_id}; add its successor first"
                )));
            }
            match self.key_lifecycle(client_id, &target.id, false).await {
                Err(e) if !is_missing(&e) => return Err(e),
                _ => {}
            }
        }
        // Okta deletes only inactive keys.
        match self
            .steward(
                Method::DELETE,
                self.app_url(client_id, &["credentials", "jwks", &target.id]),
                Body::None,
                true,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(client_id, kid, "okta: key removed");
        Ok(())
    }

    async fn keys(&self, client_id: &str) -> Result<Vec<ClientKey>, IdpError> {
        Ok(self
            .jwks(client_id)
            .await?
            .into_iter()
            .filter(JwkObject::signs)
            .map(|k| ClientKey {
                kid: k.kid(),
                active: is_active(&k.status),
            })
            .collect())
    }

    async fn test_key(&self, client_id: &str, key: &AgentKeyPair) -> Result<(), IdpError> {
        let app: App = match self.app_value(client_id).await? {
            Some(v) => serde_json::from_value(v).map_err(|e| unexpected("an app", e))?,
            None => return Err(IdpError::UnknownClient(client_id.into())),
        };
        let scope = self.test_scope(client_id).await?;
        let endpoint = self.t.settings.token_endpoint();
        let mut nonce: Option<String> = None;
        loop {
            let now = Utc::now();
            // RFC 7523: `aud` is the token endpoint called. A fresh assertion (and `jti`) for
            // every request: Okta accepts an assertion with a `jti` once, and one that lives
            // at most an hour (these live five minutes).
            let assertion = key.client_assertion(client_id, endpoint.as_str(), now);
            let mut form = vec![
                ("grant_type", "client_credentials".to_string()),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_string()),
                ("client_assertion", assertion),
            ];
            if !scope.is_empty() {
                form.push(("scope", scope.clone()));
            }
            let dpop = if app.dpop_bound() {
                Some(Self::dpop_proof(key, &endpoint, nonce.as_deref(), now)?)
            } else {
                None
            };
            let call = Call {
                method: Method::POST,
                url: endpoint.clone(),
                body: Body::Form(form),
                auth: As::Nobody,
                // Not repeated after a 5xx: Okta may have used the assertion's `jti` up, and a
                // repeat of test_key signs a fresh one.
                idempotent: false,
                dpop,
            };
            let failure = match self.t.send_keeping_refusal(call).await {
                Ok(_) => return Ok(()),
                Err(f) => f,
            };
            // Okta asks a DPoP client for its nonce first (400 `use_dpop_nonce` with a
            // `DPoP-Nonce` header): once, then the refusal stands.
            let asked = match (&failure.error, &failure.headers) {
                (IdpError::Provider { code, .. }, Some(h)) if code == "use_dpop_nonce" => h
                    .get("dpop-nonce")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                _ => None,
            };
            match asked {
                Some(n) if app.dpop_bound() && nonce.is_none() => nonce = Some(n),
                _ => return Err(failure.error),
            }
        }
    }
}

/// A service app: an OpenID Connect client that takes `client_credentials` (what an agent
/// holds). Anything else (a web or SPA app people sign in to) is not Steward's to govern.
fn is_service_app(app: &App) -> bool {
    app.settings
        .oauth_client
        .as_ref()
        .is_some_and(|o| o.grant_types.iter().any(|g| g == "client_credentials"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_are_read_in_each_documented_shape() {
        let key = json!({"id": "pks1", "kid": "k1", "kty": "EC", "crv": "P-256", "x": "AA",
                         "y": "AA", "use": "sig", "status": "ACTIVE",
                         "created": "2024-01-01T00:00:00.000Z"});
        for body in [
            json!([key]),
            json!({"jwks": {"keys": [key]}}),
            json!({"keys": [key]}),
        ] {
            let keys = jwk_list(body).unwrap();
            assert_eq!(
                (keys[0].id.as_str(), keys[0].kid().as_str()),
                ("pks1", "k1")
            );
        }
        assert!(jwk_list(json!({"errorCode": "E0000007"})).is_err());
    }

    #[test]
    fn a_key_without_kid_is_named_by_its_thumbprint() {
        let pair = AgentKeyPair::generate().unwrap();
        let mut jwk = pair.public_jwk();
        jwk.as_object_mut().unwrap().remove("kid");
        jwk["id"] = json!("pks2");
        jwk["status"] = json!("INACTIVE");
        let keys = jwk_list(json!([jwk])).unwrap();
        assert_eq!(keys[0].kid(), pair.public().kid);
    }

    #[test]
    fn okta_is_given_only_public_members() {
        let pair = AgentKeyPair::generate().unwrap();
        let mut jwk = pair.public_jwk();
        jwk["d"] = json!("c2VjcmV0");
        jwk["x5c"] = json!(["whatever"]);
        let key = AgentKey {
            kid: pair.public().kid.clone(),
            jwk: jwk.to_string(),
        };
        let sent = okta_jwk(&key).unwrap();
        let mut names: Vec<&str> = sent.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(sent["alg"], "ES256");
        let okp = AgentKey {
            kid: "k".into(),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"}).to_string(),
        };
        assert!(matches!(okta_jwk(&okp), Err(IdpError::Refused(_))));
    }
}
