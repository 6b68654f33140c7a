//! The Okta adapter of the identity provider port, over Okta's Management API:
//! - a client is a service app (`OPENID_CONNECT`, `client_credentials`, `client_secret_basic`);
//!   its client id is the app id;
//! - secrets are the app's client secrets (`/credentials/secrets`, at most two, only an
//!   inactive one can be deleted);
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

use crate::ports::idp::{
    ClientInfo, ClientSpec, CreatedClient, IdentityProvider, IdpError, NewSecret, TokenRevocation,
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
    profile: Option<Map<String, Value>>,
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
        let scope = match &self.t.settings.test_scope {
            Some(s) => s.clone(),
            None => self
                .grants(client_id)
                .await?
                .into_iter()
                .map(|g| g.scope_id)
                .collect::<Vec<_>>()
                .join(" "),
        };
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
}

/// A service app: an OpenID Connect client that takes `client_credentials` (what an agent
/// holds). Anything else (a web or SPA app people sign in to) is not Steward's to govern.
fn is_service_app(app: &App) -> bool {
    app.settings
        .oauth_client
        .as_ref()
        .is_some_and(|o| o.grant_types.iter().any(|g| g == "client_credentials"))
}
