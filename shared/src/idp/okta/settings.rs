//! How Steward reaches an Okta org: the org URL, its own credentials (an SSWS API token or OAuth
//! for Okta with `private_key_jwt`), the authorization server that tests agent secrets, and the
//! patience of its HTTP client.

use crate::secret::Secret;
use jsonwebtoken::EncodingKey;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

pub const ENV_ORG_URL: &str = "STEWARD_OKTA_ORG_URL";
pub const ENV_API_TOKEN: &str = "STEWARD_OKTA_API_TOKEN";
pub const ENV_CLIENT_ID: &str = "STEWARD_OKTA_CLIENT_ID";
pub const ENV_PRIVATE_KEY_FILE: &str = "STEWARD_OKTA_PRIVATE_KEY_FILE";
pub const ENV_KEY_ID: &str = "STEWARD_OKTA_KEY_ID";
pub const ENV_AUTH_SERVER: &str = "STEWARD_OKTA_AUTH_SERVER";
pub const ENV_TEST_SCOPE: &str = "STEWARD_OKTA_TEST_SCOPE";

/// The Okta API scopes Steward's own service app asks for with OAuth for Okta: apps and their
/// secrets, scope consent grants, and the System Log.
pub const MANAGEMENT_SCOPES: [&str; 5] = [
    "okta.apps.read",
    "okta.apps.manage",
    "okta.appGrants.read",
    "okta.appGrants.manage",
    "okta.logs.read",
];

/// Okta's access token lifetime when no access policy rule says otherwise (1 hour; the org
/// authorization server's lifetime cannot be changed).
pub const OKTA_DEFAULT_TOKEN_LIFETIME_SECS: u32 = 3600;

/// How Steward authenticates to Okta's Management API.
#[derive(Debug, Clone)]
pub enum OktaAuth {
    /// `Authorization: SSWS <token>`: an API token, acting with its admin's permissions.
    ApiToken(Secret),
    /// OAuth for Okta: a service app authenticating to the org authorization server with a
    /// client assertion (RFC 7523) signed RS256, asking for `scopes`. The access token is cached
    /// until shortly before it expires.
    PrivateKeyJwt {
        client_id: String,
        key: SigningKey,
        /// The `kid` of the key registered with the service app, if it has several.
        key_id: Option<String>,
        scopes: Vec<String>,
    },
}

/// An RSA private key that signs client assertions. Its Debug output is redacted.
#[derive(Clone)]
pub struct SigningKey(pub(crate) EncodingKey);

impl SigningKey {
    /// Reads an RSA private key in PEM (PKCS#1 or PKCS#8).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        EncodingKey::from_rsa_pem(pem)
            .map(Self)
            .map_err(|e| e.to_string())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// The authorization server whose token endpoint proves an agent's secret works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthServer {
    /// The org authorization server, `/oauth2/v1/token`.
    Org,
    /// A custom authorization server, `/oauth2/{id}/v1/token` (`default` is Okta's default one).
    Custom(String),
}

/// Everything the Okta adapter needs. Build it with [`OktaSettings::from_env`] or
/// [`OktaSettings::new`] and adjust the public fields (timeouts, retries) before
/// `Okta::new`.
#[derive(Debug, Clone)]
pub struct OktaSettings {
    /// The org's base URL, e.g. `https://example.okta.com` (no path).
    pub org_url: Url,
    pub auth: OktaAuth,
    pub auth_server: AuthServer,
    /// The scope `test_secret` asks for; `None`: the client's granted scopes.
    pub test_scope: Option<String>,
    /// The whole of one HTTP exchange.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts of a safe or idempotent call that meets 5xx or a network error.
    pub max_attempts: u32,
    /// First backoff between such attempts; doubles each time, plus up to as much jitter.
    pub backoff_base: Duration,
    /// The longest a call waits for a rate-limit window to reset before it gives up as
    /// `Unavailable` (Okta's windows are one minute).
    pub max_rate_limit_wait: Duration,
    /// The token lifetime reported for apps Steward did not create (no recorded lifetime).
    pub default_token_lifetime_secs: u32,
}

/// Why Okta settings are unusable; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum OktaSettingsError {
    #[error(
        "{ENV_ORG_URL} is not set: set it to your Okta org's URL, e.g. https://example.okta.com"
    )]
    MissingOrgUrl,
    #[error("the Okta org URL {url:?} is not usable: {reason}")]
    InvalidOrgUrl { url: String, reason: String },
    #[error(
        "the Okta org URL {0} uses plain http on a host that is not loopback: use https, so Steward's Okta credentials never cross a network in clear"
    )]
    InsecureOrgUrl(String),
    #[error(
        "no Okta credentials: set {ENV_API_TOKEN} (an SSWS API token), or {ENV_CLIENT_ID} and {ENV_PRIVATE_KEY_FILE} (OAuth for Okta with private_key_jwt)"
    )]
    MissingCredentials,
    #[error(
        "both {ENV_API_TOKEN} and {ENV_CLIENT_ID} are set: choose one way for Steward to authenticate to Okta and unset the other"
    )]
    AmbiguousCredentials,
    #[error(
        "{ENV_CLIENT_ID} is set without {ENV_PRIVATE_KEY_FILE}: name the PEM file of the service app's RSA private key"
    )]
    MissingPrivateKey,
    #[error(
        "{ENV_PRIVATE_KEY_FILE} is set without {ENV_CLIENT_ID}: set the client id of Steward's Okta service app"
    )]
    MissingClientId,
    #[error("the Okta private key file {path} cannot be read: {source}")]
    UnreadableKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the Okta private key file {path} is not an RSA private key in PEM (PKCS#1 or PKCS#8): {reason}"
    )]
    InvalidKey { path: PathBuf, reason: String },
    #[error(
        "{ENV_AUTH_SERVER} {0:?} is not an authorization server id: use `org`, `default` or the id of a custom authorization server (letters and digits)"
    )]
    InvalidAuthServer(String),
    #[error("the HTTP client for Okta could not be built: {0}")]
    HttpClient(String),
}

impl OktaSettings {
    /// Settings for the org at `org_url` with Steward's default patience: 30 s per request,
    /// 4 attempts from 250 ms, up to 2 minutes of waiting for a rate-limit window, tests of
    /// secrets at Okta's `default` custom authorization server.
    pub fn new(org_url: &str, auth: OktaAuth) -> Result<Self, OktaSettingsError> {
        Ok(Self {
            org_url: parse_org_url(org_url)?,
            auth,
            auth_server: AuthServer::Custom("default".into()),
            test_scope: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_attempts: 4,
            backoff_base: Duration::from_millis(250),
            max_rate_limit_wait: Duration::from_secs(120),
            default_token_lifetime_secs: OKTA_DEFAULT_TOKEN_LIFETIME_SECS,
        })
    }

    /// Reads the settings from the environment:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `STEWARD_OKTA_ORG_URL` | the org, e.g. `https://example.okta.com` (required) |
    /// | `STEWARD_OKTA_API_TOKEN` | an SSWS API token, or else: |
    /// | `STEWARD_OKTA_CLIENT_ID` | Steward's service app (OAuth for Okta) |
    /// | `STEWARD_OKTA_PRIVATE_KEY_FILE` | its RSA private key in PEM |
    /// | `STEWARD_OKTA_KEY_ID` | the key's `kid` (optional) |
    /// | `STEWARD_OKTA_AUTH_SERVER` | `org`, or a custom authorization server id (default `default`) |
    /// | `STEWARD_OKTA_TEST_SCOPE` | the scope a secret test asks for (default: the client's grants) |
    pub fn from_env() -> Result<Self, OktaSettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`OktaSettings::from_env`] over any source of variables (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, OktaSettingsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let org_url = get(ENV_ORG_URL).ok_or(OktaSettingsError::MissingOrgUrl)?;
        let auth = match (
            get(ENV_API_TOKEN),
            get(ENV_CLIENT_ID),
            get(ENV_PRIVATE_KEY_FILE),
        ) {
            (Some(_), Some(_), _) => return Err(OktaSettingsError::AmbiguousCredentials),
            (Some(token), None, _) => OktaAuth::ApiToken(Secret::new(token.trim())),
            (None, Some(_), None) => return Err(OktaSettingsError::MissingPrivateKey),
            (None, None, Some(_)) => return Err(OktaSettingsError::MissingClientId),
            (None, None, None) => return Err(OktaSettingsError::MissingCredentials),
            (None, Some(client_id), Some(path)) => {
                let path = PathBuf::from(path);
                let pem =
                    std::fs::read(&path).map_err(|source| OktaSettingsError::UnreadableKey {
                        path: path.clone(),
                        source,
                    })?;
                let key = SigningKey::from_pem(&pem)
                    .map_err(|reason| OktaSettingsError::InvalidKey { path, reason })?;
                OktaAuth::PrivateKeyJwt {
                    client_id: client_id.trim().to_string(),
                    key,
                    key_id: get(ENV_KEY_ID),
                    scopes: MANAGEMENT_SCOPES.iter().map(|s| s.to_string()).collect(),
                }
            }
        };
        let mut settings = Self::new(&org_url, auth)?;
        if let Some(server) = get(ENV_AUTH_SERVER) {
            settings.auth_server = parse_auth_server(server.trim())?;
        }
        settings.test_scope = get(ENV_TEST_SCOPE).map(|s| s.trim().to_string());
        Ok(settings)
    }

    /// The URL of `path` (which starts with `/`) at the org.
    pub(crate) fn url(&self, path: &str) -> Url {
        let mut url = self.org_url.clone();
        url.set_path(path);
        url
    }

    /// Where agents' client_credentials tokens come from.
    pub fn token_endpoint(&self) -> Url {
        match &self.auth_server {
            AuthServer::Org => self.url("/oauth2/v1/token"),
            AuthServer::Custom(id) => self.url(&format!("/oauth2/{id}/v1/token")),
        }
    }

    /// The org authorization server's token endpoint: Steward's own OAuth for Okta tokens (the
    /// only server that issues tokens for Okta's APIs).
    pub fn org_token_endpoint(&self) -> Url {
        self.url("/oauth2/v1/token")
    }

    /// The org's origin (`scheme://host[:port]`), as Okta writes it in grants' `issuer`.
    pub fn issuer(&self) -> String {
        self.org_url.as_str().trim_end_matches('/').to_string()
    }
}

fn parse_auth_server(value: &str) -> Result<AuthServer, OktaSettingsError> {
    if value == "org" {
        return Ok(AuthServer::Org);
    }
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(OktaSettingsError::InvalidAuthServer(value.into()));
    }
    Ok(AuthServer::Custom(value.into()))
}

fn parse_org_url(raw: &str) -> Result<Url, OktaSettingsError> {
    let invalid = |reason: &str| OktaSettingsError::InvalidOrgUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| invalid("it has no host"))?
        .to_string();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => return Err(OktaSettingsError::InsecureOrgUrl(raw.trim().to_string())),
        _ => return Err(invalid("use an https:// URL")),
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "give the org's base URL only, without a path (e.g. https://example.okta.com)",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials do not belong in the URL: use STEWARD_OKTA_API_TOKEN",
        ));
    }
    Ok(url)
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn https_and_loopback_http_are_accepted() {
        let token = || OktaAuth::ApiToken(Secret::new("t"));
        assert!(OktaSettings::new("https://example.okta.com", token()).is_ok());
        assert!(OktaSettings::new("http://127.0.0.1:8080", token()).is_ok());
        assert!(OktaSettings::new("http://[::1]:8080", token()).is_ok());
        assert!(OktaSettings::new("http://localhost:1", token()).is_ok());
    }

    #[test]
    fn plain_http_elsewhere_is_refused() {
        let err = OktaSettings::new(
            "http://example.okta.com",
            OktaAuth::ApiToken(Secret::new("t")),
        )
        .unwrap_err();
        assert!(matches!(err, OktaSettingsError::InsecureOrgUrl(_)), "{err}");
        assert!(err.to_string().contains("use https"));
        let err =
            OktaSettings::new("http://10.0.0.1", OktaAuth::ApiToken(Secret::new("t"))).unwrap_err();
        assert!(matches!(err, OktaSettingsError::InsecureOrgUrl(_)));
    }

    #[test]
    fn an_org_url_with_a_path_is_refused() {
        let err = OktaSettings::new(
            "https://example.okta.com/api/v1",
            OktaAuth::ApiToken(Secret::new("t")),
        )
        .unwrap_err();
        assert!(matches!(err, OktaSettingsError::InvalidOrgUrl { .. }));
    }

    #[test]
    fn env_with_an_api_token() {
        let s = OktaSettings::from_lookup(lookup(&[
            (ENV_ORG_URL, "https://example.okta.com"),
            (ENV_API_TOKEN, "00abc-very-secret"),
            (ENV_AUTH_SERVER, "aus1a2b3c"),
            (ENV_TEST_SCOPE, "agents.test"),
        ]))
        .unwrap();
        assert!(matches!(s.auth, OktaAuth::ApiToken(_)));
        assert_eq!(
            s.token_endpoint().as_str(),
            "https://example.okta.com/oauth2/aus1a2b3c/v1/token"
        );
        assert_eq!(s.test_scope.as_deref(), Some("agents.test"));
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    #[test]
    fn env_mistakes_are_named() {
        let org = (ENV_ORG_URL, "https://example.okta.com");
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![], ENV_ORG_URL),
            (vec![org], ENV_API_TOKEN),
            (
                vec![org, (ENV_API_TOKEN, "t"), (ENV_CLIENT_ID, "c")],
                "both",
            ),
            (vec![org, (ENV_CLIENT_ID, "c")], ENV_PRIVATE_KEY_FILE),
            (vec![org, (ENV_PRIVATE_KEY_FILE, "/k.pem")], ENV_CLIENT_ID),
            (
                vec![
                    org,
                    (ENV_CLIENT_ID, "c"),
                    (ENV_PRIVATE_KEY_FILE, "/nonexistent/k.pem"),
                ],
                "cannot be read",
            ),
            (
                vec![org, (ENV_API_TOKEN, "t"), (ENV_AUTH_SERVER, "../admin")],
                "not an authorization server",
            ),
        ];
        for (vars, needle) in cases {
            let err = OktaSettings::from_lookup(lookup(&vars)).unwrap_err();
            assert!(err.to_string().contains(needle), "{vars:?}: {err}");
        }
    }

    #[test]
    fn org_auth_server_uses_the_org_token_endpoint() {
        let s = OktaSettings::from_lookup(lookup(&[
            (ENV_ORG_URL, "https://example.okta.com/"),
            (ENV_API_TOKEN, "t"),
            (ENV_AUTH_SERVER, "org"),
        ]))
        .unwrap();
        assert_eq!(
            s.token_endpoint().as_str(),
            "https://example.okta.com/oauth2/v1/token"
        );
        assert_eq!(s.issuer(), "https://example.okta.com");
    }
}
