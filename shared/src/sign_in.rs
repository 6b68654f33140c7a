//! People sign in with the organisation's OpenID Connect issuer (Okta, or any OIDC issuer): a
//! person's request to the admin API carries a JWT the issuer signed, and [`PersonTokens`] checks
//! it and says who the person is.
//!
//! A token is accepted when, in this order: it is a compact JWS; its `alg` is asymmetric (`none`
//! and the HMAC algorithms are refused before anything else, so the issuer's public key can never
//! serve as an HMAC secret); it verifies with a key of the issuer's JWKS (discovered from
//! `<issuer>/.well-known/openid-configuration`, cached, loaded again on an unknown `kid`); `iss`
//! is the issuer exactly; `aud` names Steward's audience; `exp` has not passed and `nbf` has,
//! with at most [`MAX_SKEW`] of clock skew; and the claim that names the person (default
//! `email`) is present. Whether that person is active in the directory is the caller's check.
//!
//! Settings come from `STEWARD_OIDC_ISSUER`, `STEWARD_OIDC_AUDIENCE`, `STEWARD_OIDC_PERSON_CLAIM`
//! and, to skip discovery, `STEWARD_OIDC_JWKS_URL`. No message ever contains the token.

use crate::jwks::{
    ACCEPTED_ALGS, DEFAULT_JWKS_MIN_REFRESH, JwksSource, KeyError, Keys, KeysError, json_object,
    shown, url_is_https,
};
use chrono::{DateTime, Utc};
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::str::FromStr;
use std::time::Duration;

pub const ISSUER_ENV: &str = "STEWARD_OIDC_ISSUER";
pub const AUDIENCE_ENV: &str = "STEWARD_OIDC_AUDIENCE";
pub const PERSON_CLAIM_ENV: &str = "STEWARD_OIDC_PERSON_CLAIM";
pub const JWKS_URL_ENV: &str = "STEWARD_OIDC_JWKS_URL";

/// The claim that names the person unless configured.
pub const DEFAULT_PERSON_CLAIM: &str = "email";
/// The most clock skew tolerated on `exp` and `nbf`.
pub const MAX_SKEW: Duration = Duration::from_secs(60);
/// Discovery (and the first JWKS fetch) gets this long.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Tokens above this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Which issuer Steward trusts to say who a person is.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// A token's `iss` must equal it exactly (a trailing `/` is not trimmed).
    pub issuer: String,
    /// A token's `aud` (string or array) must contain it.
    pub audience: String,
    /// The claim that names the person: `email` (compared trimmed and lower-cased) or `sub`
    /// (compared trimmed), or another string claim the directory keys people by.
    pub person_claim: String,
    /// The issuer's keys; `None`: the `jwks_uri` of its discovery document.
    pub jwks: Option<JwksSource>,
    /// Clock skew tolerated on `exp` and `nbf`; at most [`MAX_SKEW`].
    pub skew: Duration,
    /// At most one JWKS fetch per this interval.
    pub jwks_min_refresh: Duration,
}

/// A setting that cannot work, said as what to change.
#[derive(Debug, thiserror::Error)]
pub enum IssuerConfigError {
    #[error(
        "{ISSUER_ENV} is set but {AUDIENCE_ENV} is not: set it to the audience the issuer puts in Steward's tokens (e.g. api://steward)"
    )]
    MissingAudience,
    #[error("the issuer {url} {reason}")]
    Issuer { url: String, reason: String },
    #[error("{JWKS_URL_ENV} {url} {reason}")]
    JwksUrl { url: String, reason: String },
    #[error("{PERSON_CLAIM_ENV} must name one claim, e.g. email or sub")]
    EmptyPersonClaim,
    #[error("clock skew of {0:?} is more than the {MAX_SKEW:?} allowed")]
    Skew(Duration),
    #[error(transparent)]
    Keys(#[from] KeysError),
}

impl IssuerSettings {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            person_claim: DEFAULT_PERSON_CLAIM.into(),
            jwks: None,
            skew: MAX_SKEW,
            jwks_min_refresh: DEFAULT_JWKS_MIN_REFRESH,
        }
    }

    /// From the environment; `Ok(None)` when no issuer is configured.
    pub fn from_env() -> Result<Option<Self>, IssuerConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, IssuerConfigError> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(issuer) = get(ISSUER_ENV) else {
            return Ok(None);
        };
        let audience = get(AUDIENCE_ENV).ok_or(IssuerConfigError::MissingAudience)?;
        let mut settings = Self::new(issuer, audience);
        if let Some(claim) = get(PERSON_CLAIM_ENV) {
            settings.person_claim = claim;
        }
        settings.jwks = get(JWKS_URL_ENV).map(JwksSource::Url);
        settings.check()?;
        Ok(Some(settings))
    }

    pub fn check(&self) -> Result<(), IssuerConfigError> {
        // Discovery and the keys travel over this URL; with the keys given in process (the dev
        // IdP) or in a file, nothing is fetched and the issuer is only a name to compare.
        if matches!(self.jwks, None | Some(JwksSource::Url(_))) {
            url_is_https(&self.issuer).map_err(|reason| IssuerConfigError::Issuer {
                url: self.issuer.clone(),
                reason,
            })?;
        }
        if let Some(JwksSource::Url(url)) = &self.jwks {
            url_is_https(url).map_err(|reason| IssuerConfigError::JwksUrl {
                url: url.clone(),
                reason,
            })?;
        }
        if self.person_claim.trim().is_empty() {
            return Err(IssuerConfigError::EmptyPersonClaim);
        }
        if self.skew > MAX_SKEW {
            return Err(IssuerConfigError::Skew(self.skew));
        }
        Ok(())
    }
}

/// A person, as a verified token names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The person claim, normalised: trimmed, and lower-cased unless it is `sub`. This is what
    /// separation of duties compares and the directory is asked about.
    pub id: String,
    /// The issuer's `sub` for the person.
    pub subject: String,
    /// The token's `jti`, or a digest of the token when it has none: names the token in the
    /// audit trail without revealing it.
    pub token_id: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a token was refused. Every message says what was wrong; none contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("the bearer token is not a JWT: {0}")]
    Malformed(String),
    #[error("{0}")]
    Algorithm(String),
    #[error("{0}")]
    Key(String),
    #[error("the token's signature does not verify with the issuer's key")]
    Signature,
    #[error("the token has expired; sign in again")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token was issued by `{0}`, not by the issuer Steward trusts")]
    Issuer(String),
    #[error("the token is not meant for Steward (its aud does not name {0})")]
    Audience(String),
    #[error("the token has no `{0}` claim naming the person")]
    NoPerson(String),
    #[error("the token's e-mail address is not verified by the issuer")]
    EmailNotVerified,
    /// The issuer's discovery document or keys cannot be loaded now: 503, try again.
    #[error("{0}")]
    Unavailable(String),
}

impl TokenRefused {
    /// The HTTP status to answer with: 503 when the issuer is unreachable, 401 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            TokenRefused::Unavailable(_) => 503,
            _ => 401,
        }
    }
}

/// The verifier for one issuer. Build once per process and share: it caches the discovery
/// document and the keys.
pub struct PersonTokens {
    settings: IssuerSettings,
    http: reqwest::Client,
    keys: tokio::sync::OnceCell<Keys>,
}

impl PersonTokens {
    pub fn new(settings: IssuerSettings) -> Result<Self, IssuerConfigError> {
        settings.check()?;
        crate::tls::install_crypto_provider();
        let https = url_is_https(&settings.issuer).unwrap_or(true);
        let http = reqwest::Client::builder()
            .timeout(DISCOVERY_TIMEOUT)
            .connect_timeout(DISCOVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(https)
            .user_agent("steward")
            .build()
            .map_err(|e| KeysError::Client(e.to_string()))?;
        let keys = tokio::sync::OnceCell::new();
        if let Some(source) = &settings.jwks {
            let https_only = match source {
                JwksSource::Url(url) => url_is_https(url).unwrap_or(true),
                _ => false,
            };
            let _ = keys.set(Keys::new(
                source.clone(),
                settings.jwks_min_refresh,
                https_only,
                "the issuer's",
            )?);
        }
        Ok(Self {
            settings,
            http,
            keys,
        })
    }

    pub fn settings(&self) -> &IssuerSettings {
        &self.settings
    }

    /// Checks a bearer token and names the person.
    pub async fn verify(&self, token: &str) -> Result<Person, TokenRefused> {
        use TokenRefused::*;
        let token = token.trim();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Malformed(format!("longer than {MAX_TOKEN_BYTES} bytes")));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let &[header_b64, _, _] = parts.as_slice() else {
            return Err(Malformed("not header.payload.signature".into()));
        };
        let header = json_object(header_b64)
            .ok_or_else(|| Malformed("the header is not base64url JSON".into()))?;
        // The algorithm first: nothing of an unsigned or HMAC token is looked at further.
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| Malformed("the header has no `alg`".into()))?;
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(Algorithm("unsigned token (alg `none`) refused".into()));
        }
        if alg_name.to_ascii_uppercase().starts_with("HS") {
            return Err(Algorithm(format!(
                "symmetric alg `{}` refused: person tokens must be signed with the issuer's private key",
                shown(alg_name)
            )));
        }
        let alg = jsonwebtoken::Algorithm::from_str(alg_name)
            .ok()
            .filter(|a| ACCEPTED_ALGS.contains(a))
            .ok_or_else(|| {
                Algorithm(format!(
                    "alg `{}` is not accepted (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)",
                    shown(alg_name)
                ))
            })?;
        let kid = header.get("kid").and_then(Value::as_str);
        let key = self
            .keys()
            .await?
            .key_for(kid, alg)
            .await
            .map_err(|e| match e {
                KeyError::Unavailable(m) => Unavailable(m),
                KeyError::Invalid(m) => Key(m),
            })?;

        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.skew.as_secs();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => Signature,
                ErrorKind::ExpiredSignature => Expired,
                ErrorKind::ImmatureSignature => NotYetValid,
                ErrorKind::InvalidIssuer => Issuer(String::new()),
                ErrorKind::InvalidAudience => Audience(self.settings.audience.clone()),
                ErrorKind::MissingRequiredClaim(c) => Malformed(format!("no `{c}` claim")),
                other => Malformed(format!("{other:?}")),
            });
        let claims = match data {
            Ok(d) => d.claims,
            Err(Issuer(_)) => {
                let iss = json_object(parts[1])
                    .and_then(|c| c.get("iss").and_then(Value::as_str).map(shown))
                    .unwrap_or_default();
                return Err(Issuer(iss));
            }
            Err(e) => return Err(e),
        };

        let claim = self.settings.person_claim.as_str();
        let named = claims
            .get(claim)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| NoPerson(claim.to_string()))?;
        if claim == "email" && claims.get("email_verified") == Some(&Value::Bool(false)) {
            return Err(EmailNotVerified);
        }
        let id = if claim == "sub" {
            named.to_string()
        } else {
            named.to_lowercase()
        };
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let token_id = match claims.get("jti").and_then(Value::as_str) {
            Some(jti) if !jti.is_empty() => shown(jti),
            _ => format!(
                "sha256:{}",
                &hex::encode(Sha256::digest(token.as_bytes()))[..16]
            ),
        };
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .unwrap_or_default();
        Ok(Person {
            id,
            subject,
            token_id,
            expires_at,
        })
    }

    /// The issuer's keys: configured, or from its discovery document (loaded on first use; a
    /// failure is retried on the next token).
    async fn keys(&self) -> Result<&Keys, TokenRefused> {
        self.keys
            .get_or_try_init(|| async {
                let jwks_uri = self.discover().await.map_err(TokenRefused::Unavailable)?;
                let https_only = url_is_https(&jwks_uri).map_err(|reason| {
                    TokenRefused::Unavailable(format!(
                        "the issuer's jwks_uri {} {reason}",
                        shown(&jwks_uri)
                    ))
                })?;
                Keys::new(
                    JwksSource::Url(jwks_uri),
                    self.settings.jwks_min_refresh,
                    https_only,
                    "the issuer's",
                )
                .map_err(|e| TokenRefused::Unavailable(e.to_string()))
            })
            .await
    }

    /// The `jwks_uri` of the issuer's OpenID discovery document.
    async fn discover(&self) -> Result<String, String> {
        let doc = discovery_document(&self.http, &self.settings.issuer).await?;
        doc.get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "the issuer's discovery document has no jwks_uri".to_string())
    }
}

/// The issuer's OpenID discovery document (`<issuer>/.well-known/openid-configuration`), whose
/// `issuer` must be the configured one exactly. Errors say which address failed and how.
pub async fn discovery_document(http: &reqwest::Client, issuer: &str) -> Result<Value, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("the issuer's discovery document ({url}) cannot be read: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "the issuer's discovery document ({url}) answered HTTP {}",
            resp.status()
        ));
    }
    let doc: Value = resp
        .json()
        .await
        .map_err(|e| format!("the issuer's discovery document ({url}) is not JSON: {e}"))?;
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(format!(
            "the discovery document at {url} names another issuer than {issuer}"
        ));
    }
    Ok(doc)
}
