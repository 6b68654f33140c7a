//! The adapter's settings: issuer, initial access token, resource, token-lifetime field and
//! certificate clients, from the environment, with the transport rule (https, or http on
//! loopback only).

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
        "`{0}` is not a way to register certificate clients; set {CERTIFICATE_CLIENTS_ENV} to `self_signed_tls_client_auth` (the server accepts exactly the registered certificates), `tls_client_auth` (the server trusts Steward's CA and matches the SPIFFE id), or `off`"
    )]
    BadCertificateClients(String),
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
    /// How `tls_client_auth` agents' clients are registered (RFC 8705); `None` (the default):
    /// they are refused, and Steward issues them no certificate.
    pub certificate_clients: Option<CertificateClients>,
}

/// The RFC 8705 client authentication method certificate clients are registered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateClients {
    /// `self_signed_tls_client_auth` (§2.2): the agent's certificate itself is registered, in
    /// the client's `jwks` (a JWK with `x5c`), and the server accepts exactly the registered
    /// certificates. Removing one at the server stops it at once.
    SelfSigned,
    /// `tls_client_auth` (§2.1): the server trusts Steward's CA (`GET /ca/certificate`) and
    /// matches the certificate's SPIFFE id (`tls_client_auth_san_uri`). Any unexpired
    /// certificate of the CA for that id authenticates the client, unless the server reads
    /// Steward's CRL (`GET /ca/crl`).
    TlsClientAuth,
}

impl CertificateClients {
    /// The `token_endpoint_auth_method` value.
    pub fn method(self) -> &'static str {
        match self {
            Self::SelfSigned => SELF_SIGNED_TLS_CLIENT_AUTH,
            Self::TlsClientAuth => TLS_CLIENT_AUTH,
        }
    }

    /// `self_signed_tls_client_auth`, `tls_client_auth`, or `off` / empty (`None`).
    pub fn parse(value: &str) -> Result<Option<Self>, OAuthSettingsError> {
        match value.trim() {
            "" | "off" => Ok(None),
            SELF_SIGNED_TLS_CLIENT_AUTH => Ok(Some(Self::SelfSigned)),
            TLS_CLIENT_AUTH => Ok(Some(Self::TlsClientAuth)),
            other => Err(OAuthSettingsError::BadCertificateClients(
                other.chars().take(64).collect(),
            )),
        }
    }
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
            certificate_clients: None,
        })
    }

    /// Reads `STEWARD_OAUTH_ISSUER`, `STEWARD_OAUTH_INITIAL_ACCESS_TOKEN`,
    /// `STEWARD_OAUTH_RESOURCE`, `STEWARD_OAUTH_TOKEN_LIFETIME_FIELD` and
    /// `STEWARD_OAUTH_CERTIFICATE_CLIENTS`.
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
        if let Some(c) = var(CERTIFICATE_CLIENTS_ENV) {
            s = s.with_certificate_clients(CertificateClients::parse(&c)?);
        }
        Ok(s)
    }

    /// Registers `tls_client_auth` agents' clients with `method` (RFC 8705); `None` refuses
    /// them.
    pub fn with_certificate_clients(mut self, method: Option<CertificateClients>) -> Self {
        self.certificate_clients = method;
        self
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
