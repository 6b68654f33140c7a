//! The receiver's settings: transmitter, audience, where its keys come from, the shared
//! `Authorization` value and the age limits, from the environment or built in code.

use super::*;

/// How Steward receives Shared Signals from one transmitter.
#[derive(Clone)]
pub struct SsfSettings {
    /// The transmitter's issuer: a SET's `iss` must equal it exactly.
    pub issuer: String,
    /// How the transmitter addresses Steward: a SET's `aud` (string or array) must contain it.
    pub audience: String,
    pub jwks: JwksSource,
    /// SETs issued longer ago than this are refused as stale.
    pub max_age: Duration,
    /// How far ahead of Steward's clock an `iat` may be.
    pub future_skew: Duration,
    /// The exact `Authorization` header value the transmitter must send (RFC 8935 §2.2 lets the
    /// receiver require one; SSF stream configuration's `authorization_header`).
    pub authorization: Option<Secret>,
    /// At most one JWKS reload per this interval.
    pub jwks_min_refresh: Duration,
}

impl std::fmt::Debug for SsfSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsfSettings")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks", &self.jwks.to_string())
            .field("max_age", &self.max_age)
            .field("future_skew", &self.future_skew)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<set>"),
            )
            .finish_non_exhaustive()
    }
}

/// Shared Signals settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsfConfigError {
    #[error(
        "{missing} is not set but other STEWARD_SSF_* variables are: the Shared Signals receiver needs the transmitter's issuer ({ISSUER_ENV}), the audience it addresses Steward by ({AUDIENCE_ENV}) and its keys ({JWKS_URL_ENV} or {JWKS_FILE_ENV})"
    )]
    Missing { missing: &'static str },
    #[error(
        "both {JWKS_URL_ENV} and {JWKS_FILE_ENV} are set: keep the one the transmitter's keys come from"
    )]
    TwoJwksSources,
    #[error(
        "the JWKS URL `{url}` must be https:// (plain http:// only on 127.0.0.1, ::1 or localhost, for a local transmitter)"
    )]
    InsecureJwksUrl { url: String },
    #[error("the JWKS URL `{url}` is not a URL: {reason}")]
    BadJwksUrl { url: String, reason: String },
    #[error(
        "{MAX_AGE_ENV} `{value}` is not usable: give a duration between 10s and 24h, like `5m`"
    )]
    BadMaxAge { value: String },
    #[error(
        "the accepted age ({max_age:?}) must be between 10 s and 24 h and the future skew ({skew:?}) at most 5 min"
    )]
    BadWindow { max_age: Duration, skew: Duration },
    #[error("the issuer and the audience must not be empty")]
    Empty,
    #[error(
        "the transmitter's keys at {origin} are not usable: {reason}; give a JWKS with at least one RSA (2048 bits or more), EC P-256/P-384 or Ed25519 signing key"
    )]
    Keys { origin: String, reason: String },
    #[error("could not build the HTTP client that fetches the transmitter's keys: {0}")]
    Client(String),
}

impl SsfSettings {
    /// Settings with the default age window, no `Authorization` requirement.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, jwks: JwksSource) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks,
            max_age: DEFAULT_MAX_AGE,
            future_skew: DEFAULT_FUTURE_SKEW,
            authorization: None,
            jwks_min_refresh: DEFAULT_JWKS_MIN_REFRESH,
        }
    }

    /// Settings from the environment: `None` when no `STEWARD_SSF_*` variable is set (the
    /// receiver is off), an error when it is half configured.
    pub fn from_env() -> Result<Option<Self>, SsfConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] over any variable lookup.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, SsfConfigError> {
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let all = [
            ISSUER_ENV,
            AUDIENCE_ENV,
            JWKS_URL_ENV,
            JWKS_FILE_ENV,
            AUTHORIZATION_ENV,
            MAX_AGE_ENV,
        ];
        if all.iter().all(|n| var(n).is_none()) {
            return Ok(None);
        }
        let need = |name: &'static str| var(name).ok_or(SsfConfigError::Missing { missing: name });
        let issuer = need(ISSUER_ENV)?;
        let audience = need(AUDIENCE_ENV)?;
        let jwks = match (var(JWKS_URL_ENV), var(JWKS_FILE_ENV)) {
            (Some(_), Some(_)) => return Err(SsfConfigError::TwoJwksSources),
            (Some(url), None) => JwksSource::Url(url),
            (None, Some(path)) => JwksSource::File(path.into()),
            (None, None) => {
                return Err(SsfConfigError::Missing {
                    missing: JWKS_URL_ENV,
                });
            }
        };
        let mut settings = Self::new(issuer, audience, jwks);
        if let Some(value) = var(MAX_AGE_ENV) {
            settings.max_age = humantime::parse_duration(&value)
                .map_err(|_| SsfConfigError::BadMaxAge {
                    value: value.clone(),
                })
                .and_then(|d| {
                    if (Duration::from_secs(10)..=Duration::from_secs(24 * 3600)).contains(&d) {
                        Ok(d)
                    } else {
                        Err(SsfConfigError::BadMaxAge { value })
                    }
                })?;
        }
        settings.authorization = var(AUTHORIZATION_ENV).map(Secret::new);
        settings.check()?;
        Ok(Some(settings))
    }

    /// Refuses settings that cannot work or would fetch keys in the clear.
    pub fn check(&self) -> Result<(), SsfConfigError> {
        if self.issuer.trim().is_empty() || self.audience.trim().is_empty() {
            return Err(SsfConfigError::Empty);
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(24 * 3600)).contains(&self.max_age)
            || self.future_skew > Duration::from_secs(300)
        {
            return Err(SsfConfigError::BadWindow {
                max_age: self.max_age,
                skew: self.future_skew,
            });
        }
        if let JwksSource::Url(url) = &self.jwks {
            jwks_url_is_https(url)?;
        }
        Ok(())
    }
}

/// `Ok(true)` for https, `Ok(false)` for plain http on loopback, an error otherwise.
pub(super) fn jwks_url_is_https(url: &str) -> Result<bool, SsfConfigError> {
    if let Err(reason) = url.parse::<url::Url>() {
        return Err(SsfConfigError::BadJwksUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        });
    }
    crate::jwks::url_is_https(url).map_err(|_| SsfConfigError::InsecureJwksUrl {
        url: url.to_string(),
    })
}
