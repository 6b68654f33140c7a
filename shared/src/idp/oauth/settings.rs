//! The adapter's settings: issuer, initial access token, resource, token-lifetime field, from
//! the environment, with the transport rule (https, or http on loopback only).

use super::*;

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
    pub(super) issuer: String,
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

/// https anywhere, plain http only on loopback: secrets and tokens travel in these requests.
pub(super) fn check_transport(url: &Url) -> Result<(), OAuthSettingsError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if crate::jwks::is_loopback(url) => Ok(()),
        "http" => Err(OAuthSettingsError::InsecureUrl(url.to_string())),
        _ => Err(OAuthSettingsError::UnsupportedScheme(url.to_string())),
    }
}
