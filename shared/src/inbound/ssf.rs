//! Shared Signals push receiver: a transmitter POSTs one Security Event Token (SET, RFC 8417) per
//! request as `application/secevent+jwt` (RFC 8935 push delivery, as profiled by OpenID Shared
//! Signals 1.0). Steward answers 202 with an empty body when the SET is valid, or 400 with the
//! RFC 8935 §2.3 error object `{"err": ..., "description": ...}`.
//!
//! A SET is valid when, in this order: the configured `Authorization` value was presented; the
//! body is a compact JWS of at most [`MAX_BODY_BYTES`]; its `alg` is asymmetric (`none` and the
//! HMAC algorithms are refused before anything else); its `typ` is `secevent+jwt`; it verifies
//! with a key of the transmitter's JWKS fit for that `alg`; `iss` is the transmitter, `aud`
//! names Steward; `iat` is within [`SsfSettings::max_age`] (and not in the future beyond
//! [`SsfSettings::future_skew`]); it has a `jti` not accepted before and an `events` object.
//!
//! CAEP session-revoked and credential-change, RISC credential-compromise and account-disabled
//! become [`Signal::Risk`]; other event types of a valid SET are recorded without a signal.
//! Descriptions never contain the token.
//!
//! Wiring: [`SsfSettings::from_env`] (or [`SsfSettings::new`]) once, [`SsfReceiver::new`] once per
//! process (it caches the JWKS), then [`handle`] for each POST.

use super::{Headers, Reply};
use crate::Engine;
use crate::audit;
use crate::engine::EngineError;
use crate::intake::{self, Received};
use crate::secret::Secret;
use crate::signal::{RiskKind, Signal};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use statemachines::Actor;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The media type of a pushed SET (RFC 8417 §8.2, RFC 8935 §2.1).
pub const CONTENT_TYPE: &str = "application/secevent+jwt";
/// Bodies above this are refused unread: real SETs are a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The SET's age limit unless configured ([`SsfSettings::max_age`]).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// How far in the future an `iat` may be (the transmitter's clock runs ahead).
pub const DEFAULT_FUTURE_SKEW: Duration = Duration::from_secs(60);
/// Keys are fetched again after this, on the next SET.
pub const JWKS_TTL: Duration = Duration::from_secs(3600);
/// At most one JWKS fetch per this interval, however many unknown `kid`s arrive.
pub const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(60);
/// A JWKS fetch gets this long.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// JWKS documents above this are refused.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The `remember_inbound` source under which accepted `jti`s are kept.
pub const JTI_SOURCE: &str = "ssf-jti";
/// How long an accepted `jti` is remembered; far longer than any accepted age, so a replay is
/// refused as a replay rather than only as stale.
pub const JTI_WINDOW: Duration = intake::DEDUPE_WINDOW;
/// Longer `jti`s are refused (they become storage keys).
pub const MAX_JTI_LEN: usize = 256;

/// CAEP 1.0 §3.1.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP 1.0 §3.3.
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// RISC 1.0 §2.7.
pub const CREDENTIAL_COMPROMISE: &str =
    "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";
/// RISC 1.0 §2.3.
pub const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
/// RISC 1.0 §2.11, deprecated in favour of [`SESSION_REVOKED`] and read as the same signal.
pub const RISC_SESSIONS_REVOKED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked";

/// Environment variables of [`SsfSettings::from_env`].
pub const ISSUER_ENV: &str = "STEWARD_SSF_ISSUER";
pub const AUDIENCE_ENV: &str = "STEWARD_SSF_AUDIENCE";
pub const JWKS_URL_ENV: &str = "STEWARD_SSF_JWKS_URL";
pub const JWKS_FILE_ENV: &str = "STEWARD_SSF_JWKS_FILE";
pub const AUTHORIZATION_ENV: &str = "STEWARD_SSF_AUTHORIZATION";
pub const MAX_AGE_ENV: &str = "STEWARD_SSF_MAX_AGE";

/// The algorithms a SET may be signed with: asymmetric only, so a transmitter's public key can
/// never double as an HMAC secret.
const ACCEPTED_ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Where the transmitter's public keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// The transmitter's `jwks_uri`: https (plain http only on loopback), fetched lazily,
    /// cached for [`JWKS_TTL`], fetched again when a SET names an unknown `kid`.
    Url(String),
    /// A JWKS file, read at start and read again when a SET names an unknown `kid`.
    File(PathBuf),
    /// A JWKS document given directly (a secret store's value; tests).
    Json(Value),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::Url(u) => write!(f, "{u}"),
            JwksSource::File(p) => write!(f, "{}", p.display()),
            JwksSource::Json(_) => f.write_str("(configured JWKS)"),
        }
    }
}

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
fn jwks_url_is_https(url: &str) -> Result<bool, SsfConfigError> {
    let parsed: url::Url =
        url.parse()
            .map_err(|e: url::ParseError| SsfConfigError::BadJwksUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(true),
        "http" if loopback => Ok(false),
        _ => Err(SsfConfigError::InsecureJwksUrl {
            url: url.to_string(),
        }),
    }
}

/// The RFC 8935 §2.4 error codes (IANA "Security Event Token Error Codes") Steward answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetErr {
    /// The body is not a SET Steward accepts (media type, size, shape, `typ`, claims, age,
    /// replay).
    InvalidRequest,
    /// The signing key or algorithm is unacceptable (HMAC, unknown `kid`, wrong key type).
    InvalidKey,
    /// `iss` is not the configured transmitter.
    InvalidIssuer,
    /// `aud` does not name Steward.
    InvalidAudience,
    /// The transmitter could not be authenticated: no or wrong `Authorization`, an unsigned SET,
    /// a signature that does not verify.
    AuthenticationFailed,
}

impl SetErr {
    pub fn code(self) -> &'static str {
        match self {
            SetErr::InvalidRequest => "invalid_request",
            SetErr::InvalidKey => "invalid_key",
            SetErr::InvalidIssuer => "invalid_issuer",
            SetErr::InvalidAudience => "invalid_audience",
            SetErr::AuthenticationFailed => "authentication_failed",
        }
    }
}

impl std::fmt::Display for SetErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a pushed SET was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Refused for good: answered 400 with the RFC 8935 error object; the transmitter must not
    /// retry it.
    #[error("{err}: {description}")]
    Refused { err: SetErr, description: String },
    /// Could not be checked now (the transmitter's keys are unreachable, or a new `kid` arrived
    /// while reloads are rate-limited): answered 503 so the transmitter retries.
    #[error("SET not checked yet: {0}")]
    Unavailable(String),
}

fn refuse(err: SetErr, description: impl Into<String>) -> Rejected {
    Rejected::Refused {
        err,
        description: description.into(),
    }
}

impl Rejected {
    /// The answer for the transmitter.
    pub fn reply(&self) -> Reply {
        match self {
            Rejected::Refused { err, description } => {
                Reply::json(400, json!({"err": err.code(), "description": description}))
            }
            Rejected::Unavailable(why) => Reply::json(503, json!({"description": why})),
        }
    }
}

/// A SET that passed every check, mapped for [`intake::accept`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedSet {
    pub jti: String,
    pub issued_at: DateTime<Utc>,
    /// One per member of `events`; ids are the `jti`, or `jti#<event type>` when the SET carries
    /// several events.
    pub events: Vec<Received>,
}

/// One usable key of the transmitter's JWKS.
struct VerifyKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The key's own `alg`, when the JWK names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl VerifyKey {
    fn fits(&self, alg: Algorithm) -> bool {
        let kind_fits = match self.kind {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::P256 => alg == Algorithm::ES256,
            KeyKind::P384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        };
        kind_fits && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<Arc<VerifyKey>>,
    /// When the keys were last loaded.
    loaded: Option<Instant>,
    /// When a load was last tried, successful or not: the rate limit.
    attempted: Option<Instant>,
}

enum Lookup {
    Found(Arc<VerifyKey>),
    /// A key with that `kid` exists but cannot verify this `alg`.
    Unfit,
    /// No `kid` and several keys that could verify: Steward does not try them all.
    Ambiguous,
    Unknown,
}

/// The receiver for one transmitter: settings plus the cached JWKS. Build it once per process.
pub struct SsfReceiver {
    settings: SsfSettings,
    http: Option<reqwest::Client>,
    cache: tokio::sync::Mutex<KeyCache>,
}

impl SsfReceiver {
    /// Checks the settings; reads a JWKS file or document now (a URL is fetched on the first
    /// SET, so a transmitter outage does not stop Steward from starting).
    pub fn new(settings: SsfSettings) -> Result<Self, SsfConfigError> {
        settings.check()?;
        let mut cache = KeyCache::default();
        let http = match &settings.jwks {
            JwksSource::Url(url) => {
                let https = jwks_url_is_https(url)?;
                crate::tls::install_crypto_provider();
                let client = reqwest::Client::builder()
                    .timeout(JWKS_FETCH_TIMEOUT)
                    .connect_timeout(JWKS_FETCH_TIMEOUT)
                    // A redirect could leave https or the transmitter's host.
                    .redirect(reqwest::redirect::Policy::none())
                    .https_only(https)
                    .user_agent("steward-ssf-receiver")
                    .build()
                    .map_err(|e| SsfConfigError::Client(e.to_string()))?;
                Some(client)
            }
            JwksSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| SsfConfigError::Keys {
                    origin: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                cache.keys = parse_jwks_text(&text).map_err(|reason| SsfConfigError::Keys {
                    origin: path.display().to_string(),
                    reason,
                })?;
                cache.loaded = Some(Instant::now());
                cache.attempted = cache.loaded;
                None
            }
            JwksSource::Json(doc) => {
                cache.keys = parse_jwks(doc).map_err(|reason| SsfConfigError::Keys {
                    origin: settings.jwks.to_string(),
                    reason,
                })?;
                cache.loaded = Some(Instant::now());
                None
            }
        };
        Ok(Self {
            settings,
            http,
            cache: tokio::sync::Mutex::new(cache),
        })
    }

    pub fn settings(&self) -> &SsfSettings {
        &self.settings
    }

    /// Checks one push request at `now` (the engine's clock) and maps its events. Touches no
    /// storage: the replay check on `jti` is [`handle`]'s.
    pub async fn verify(
        &self,
        headers: &(impl Headers + ?Sized),
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<VerifiedSet, Rejected> {
        use SetErr::*;
        if let Some(expected) = &self.settings.authorization {
            let presented = headers.get("authorization").map(str::trim).unwrap_or("");
            if presented.is_empty() {
                return Err(refuse(AuthenticationFailed, "missing Authorization header"));
            }
            // Hashing first keeps the comparison constant-time whatever the lengths.
            let same: bool = Sha256::digest(presented.as_bytes())
                .ct_eq(&Sha256::digest(expected.expose().trim().as_bytes()))
                .into();
            if !same {
                return Err(refuse(AuthenticationFailed, "wrong Authorization header"));
            }
        }
        let content_type = headers.get("content-type").unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case(CONTENT_TYPE) {
            let why = if content_type.trim().is_empty() {
                format!("no Content-Type; a SET is sent as {CONTENT_TYPE}")
            } else {
                format!(
                    "Content-Type must be {CONTENT_TYPE}, not `{}`",
                    shown(content_type)
                )
            };
            return Err(refuse(InvalidRequest, why));
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(refuse(
                InvalidRequest,
                format!(
                    "the body is {} bytes; a SET may have at most {MAX_BODY_BYTES}",
                    body.len()
                ),
            ));
        }
        let token = std::str::from_utf8(body)
            .map_err(|_| refuse(InvalidRequest, "the body is not a compact JWS (not text)"))?
            .trim();
        let parts: Vec<&str> = token.split('.').collect();
        let &[header_b64, claims_b64, signature_b64] = parts.as_slice() else {
            let why = if parts.len() == 5 {
                "the body is a JWE; Steward accepts signed, unencrypted SETs only"
            } else {
                "the body is not a compact JWS (header.payload.signature)"
            };
            return Err(refuse(InvalidRequest, why));
        };
        let header = json_object(header_b64)
            .ok_or_else(|| refuse(InvalidRequest, "the JWS header is not base64url JSON"))?;

        // The algorithm first: nothing of an unsigned or HMAC token is looked at further.
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| refuse(InvalidRequest, "the JWS header has no `alg`"))?;
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(refuse(
                AuthenticationFailed,
                "unsigned SET (alg `none`) refused",
            ));
        }
        if alg_name.to_ascii_uppercase().starts_with("HS") {
            return Err(refuse(
                InvalidKey,
                format!(
                    "symmetric alg `{}` refused: SETs must be signed with the transmitter's private key",
                    shown(alg_name)
                ),
            ));
        }
        let alg = Algorithm::from_str(alg_name)
            .ok()
            .filter(|a| ACCEPTED_ALGS.contains(a))
            .ok_or_else(|| {
                refuse(
                    InvalidKey,
                    format!(
                        "alg `{}` is not accepted (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)",
                        shown(alg_name)
                    ),
                )
            })?;
        let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
        let typ_ok = typ.eq_ignore_ascii_case("secevent+jwt")
            || typ.eq_ignore_ascii_case("application/secevent+jwt");
        if !typ_ok {
            let why = if typ.is_empty() {
                "the JWS header has no typ; a SET's is `secevent+jwt` (RFC 8417 §2.3)".to_string()
            } else {
                format!(
                    "the JWS header's typ must be `secevent+jwt` (RFC 8417 §2.3), not `{}`",
                    shown(typ)
                )
            };
            return Err(refuse(InvalidRequest, why));
        }
        if header.contains_key("crit") {
            return Err(refuse(
                InvalidRequest,
                "the JWS header marks extensions critical (`crit`); Steward understands none",
            ));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => {
                return Err(refuse(
                    InvalidRequest,
                    "the JWS header's `kid` is not a string",
                ));
            }
        };

        let key = self.key_for(kid, alg).await?;
        let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
        let verified =
            jsonwebtoken::crypto::verify(signature_b64, signing_input.as_bytes(), &key.key, alg)
                .unwrap_or(false);
        if !verified {
            return Err(refuse(
                AuthenticationFailed,
                format!(
                    "the signature does not verify with the transmitter's key{}",
                    kid.map(|k| format!(" `{}`", shown(k))).unwrap_or_default()
                ),
            ));
        }

        let claims = json_object(claims_b64)
            .ok_or_else(|| refuse(InvalidRequest, "the SET's claims are not a JSON object"))?;
        self.check_claims(&claims, now)
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedSet, Rejected> {
        use SetErr::*;
        match claims.get("iss").and_then(Value::as_str) {
            Some(iss) if iss == self.settings.issuer => {}
            Some(iss) => {
                return Err(refuse(
                    InvalidIssuer,
                    format!(
                        "iss `{}` is not the configured transmitter `{}`",
                        shown(iss),
                        self.settings.issuer
                    ),
                ));
            }
            None => return Err(refuse(InvalidIssuer, "the SET has no `iss`")),
        }
        let ours = |v: &Value| v.as_str() == Some(self.settings.audience.as_str());
        let aud_ok = match claims.get("aud") {
            Some(Value::Array(items)) => items.iter().any(ours),
            Some(v) => ours(v),
            None => false,
        };
        if !aud_ok {
            return Err(refuse(
                InvalidAudience,
                format!("aud does not contain `{}`", self.settings.audience),
            ));
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite())
            .and_then(|t| DateTime::from_timestamp(t.floor() as i64, 0))
            .ok_or_else(|| refuse(InvalidRequest, "the SET has no numeric `iat`"))?;
        let age = now.signed_duration_since(iat);
        let max_age =
            chrono::Duration::from_std(self.settings.max_age).unwrap_or(chrono::Duration::MAX);
        let skew =
            chrono::Duration::from_std(self.settings.future_skew).unwrap_or(chrono::Duration::MAX);
        if age > max_age {
            return Err(refuse(
                InvalidRequest,
                format!(
                    "the SET was issued {} s ago; Steward accepts SETs up to {} s old",
                    age.num_seconds(),
                    max_age.num_seconds()
                ),
            ));
        }
        if -age > skew {
            return Err(refuse(
                InvalidRequest,
                format!(
                    "the SET's iat is {} s in the future (more than the {} s allowed for clock skew)",
                    (-age).num_seconds(),
                    skew.num_seconds()
                ),
            ));
        }
        if let Some(exp) = claims.get("exp") {
            let expired = exp
                .as_f64()
                .and_then(|t| DateTime::from_timestamp(t.floor() as i64, 0))
                .is_none_or(|exp| exp.checked_add_signed(skew).is_some_and(|e| e < now));
            if expired {
                return Err(refuse(InvalidRequest, "the SET has expired (`exp`)"));
            }
        }
        let jti = match claims.get("jti").and_then(Value::as_str) {
            Some(j) if !j.trim().is_empty() && j.len() <= MAX_JTI_LEN => j.to_string(),
            Some(j) if !j.trim().is_empty() => {
                return Err(refuse(
                    InvalidRequest,
                    format!("the SET's jti is longer than {MAX_JTI_LEN} characters"),
                ));
            }
            _ => return Err(refuse(InvalidRequest, "the SET has no `jti`")),
        };
        let events = match claims.get("events") {
            Some(Value::Object(events)) if !events.is_empty() => events,
            _ => {
                return Err(refuse(
                    InvalidRequest,
                    "the SET's `events` claim must be an object with at least one event",
                ));
            }
        };
        let mut subjects = Subjects::default();
        if let Some(sub_id) = claims.get("sub_id") {
            subjects.collect(sub_id, 0);
        }
        let txn = claims.get("txn").and_then(Value::as_str);
        let several = events.len() > 1;
        let mut received = Vec::with_capacity(events.len());
        for (event_type, payload) in events {
            let Value::Object(payload) = payload else {
                return Err(refuse(
                    InvalidRequest,
                    format!(
                        "the payload of event `{}` is not an object",
                        shown(event_type)
                    ),
                ));
            };
            // CAEP/RISC events defined before SSF may carry their subject inside the event.
            let mut subjects = subjects.clone();
            if let Some(subject) = payload.get("subject") {
                subjects.collect(subject, 0);
            }
            let event_id = if several {
                format!("{jti}#{event_type}")
            } else {
                jti.clone()
            };
            received.push(Received {
                source: "ssf",
                event_id,
                event_type: event_type.clone(),
                subject: if subjects.ids.is_empty() {
                    "no subject given".into()
                } else {
                    subjects.ids.join(", ")
                },
                published: Some(iat),
                signal: map_event(event_type, payload, &subjects, txn),
            });
        }
        Ok(VerifiedSet {
            jti,
            issued_at: iat,
            events: received,
        })
    }

    /// The key for `kid` and `alg`, reloading the JWKS when it is old or the `kid` is unknown
    /// (at most once per [`SsfSettings::jwks_min_refresh`]).
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<VerifyKey>, Rejected> {
        let mut cache = self.cache.lock().await;
        let reloadable = !matches!(self.settings.jwks, JwksSource::Json(_));
        let may_try = |c: &KeyCache| {
            c.attempted
                .is_none_or(|t| t.elapsed() >= self.settings.jwks_min_refresh)
        };
        let old = cache.loaded.is_none_or(|t| t.elapsed() >= JWKS_TTL);
        // Whether this call loaded the keys (then loading again cannot help).
        let mut reloaded = false;
        let mut reload_error = None;
        if reloadable && old && may_try(&cache) {
            reload_error = self.reload(&mut cache).await.err();
            reloaded = true;
        }
        if cache.keys.is_empty() {
            return Err(Rejected::Unavailable(format!(
                "the transmitter's keys could not be loaded{}; retry later",
                reload_error.map(|e| format!(" ({e})")).unwrap_or_default()
            )));
        }
        let mut found = lookup(&cache.keys, kid, alg);
        if matches!(found, Lookup::Unknown) && reloadable && !reloaded {
            if !may_try(&cache) {
                // The transmitter may have published a new key since the last load. Asking it
                // to retry later loses no genuine SET, and forged `kid`s cannot set the fetch
                // rate.
                return Err(Rejected::Unavailable(format!(
                    "key `{}` is not in the transmitter's JWKS as loaded moments ago; retry later",
                    shown(kid.unwrap_or(""))
                )));
            }
            reload_error = self.reload(&mut cache).await.err();
            reloaded = true;
            found = lookup(&cache.keys, kid, alg);
        }
        if let (Lookup::Unknown, Some(e)) = (&found, &reload_error) {
            return Err(Rejected::Unavailable(format!(
                "key `{}` is not in the transmitter's JWKS and it could not be reloaded ({e}); retry later",
                shown(kid.unwrap_or(""))
            )));
        }
        let kid_shown = shown(kid.unwrap_or(""));
        match found {
            Lookup::Found(key) => Ok(key),
            Lookup::Unfit => Err(refuse(
                SetErr::InvalidKey,
                format!("key `{kid_shown}` of the transmitter's JWKS cannot verify alg {alg:?}"),
            )),
            Lookup::Ambiguous => Err(refuse(
                SetErr::InvalidKey,
                format!(
                    "the SET names no kid and the transmitter's JWKS has several keys for {alg:?}"
                ),
            )),
            Lookup::Unknown => Err(refuse(
                SetErr::InvalidKey,
                match kid {
                    Some(_) => format!(
                        "key `{kid_shown}` is not in the transmitter's JWKS{}",
                        if reloaded { " (reloaded)" } else { "" }
                    ),
                    None => format!("the transmitter's JWKS has no key for {alg:?}"),
                },
            )),
        }
    }

    /// Loads the JWKS again; on failure the keys loaded before stay in use.
    async fn reload(&self, cache: &mut KeyCache) -> Result<(), String> {
        cache.attempted = Some(Instant::now());
        let keys = match &self.settings.jwks {
            JwksSource::Url(url) => {
                let text = self.fetch(url).await?;
                parse_jwks_text(&text)?
            }
            JwksSource::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                parse_jwks_text(&text)?
            }
            JwksSource::Json(doc) => parse_jwks(doc)?,
        };
        tracing::info!(keys = keys.len(), source = %self.settings.jwks, "Shared Signals transmitter keys loaded");
        cache.keys = keys;
        cache.loaded = cache.attempted;
        Ok(())
    }

    async fn fetch(&self, url: &str) -> Result<String, String> {
        let Some(http) = &self.http else {
            return Err("no HTTP client".into());
        };
        let mut resp = http
            .get(url)
            .header("accept", "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!(
                "GET {url}: the JWKS is larger than {MAX_JWKS_BYTES} bytes"
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!(
                    "GET {url}: the JWKS is larger than {MAX_JWKS_BYTES} bytes"
                ));
            }
        }
        String::from_utf8(body).map_err(|_| format!("GET {url}: the JWKS is not UTF-8"))
    }
}

fn lookup(keys: &[Arc<VerifyKey>], kid: Option<&str>, alg: Algorithm) -> Lookup {
    match kid {
        Some(kid) => {
            let named: Vec<_> = keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if named.is_empty() {
                return Lookup::Unknown;
            }
            named
                .into_iter()
                .find(|k| k.fits(alg))
                .map(|k| Lookup::Found(k.clone()))
                .unwrap_or(Lookup::Unfit)
        }
        None => {
            let fit: Vec<_> = keys.iter().filter(|k| k.fits(alg)).collect();
            match fit.as_slice() {
                [one] => Lookup::Found(Arc::clone(one)),
                [] => Lookup::Unknown,
                _ => Lookup::Ambiguous,
            }
        }
    }
}

fn parse_jwks_text(text: &str) -> Result<Vec<Arc<VerifyKey>>, String> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    parse_jwks(&doc)
}

/// The usable keys of a JWKS; keys Steward cannot use (encryption keys, symmetric keys, unknown
/// types, short RSA moduli) are skipped, and a set without any usable key is an error.
fn parse_jwks(doc: &Value) -> Result<Vec<Arc<VerifyKey>>, String> {
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err("the JWKS has no `keys` array".into());
    };
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        match parse_jwk(jwk) {
            Ok(k) => usable.push(Arc::new(k)),
            Err(why) => skipped.push(format!("key {i}: {why}")),
        }
    }
    if !skipped.is_empty() {
        tracing::info!(skipped = %skipped.join("; "), "JWKS keys Steward does not verify SETs with");
    }
    if usable.is_empty() {
        return Err(if skipped.is_empty() {
            "the JWKS has no keys".into()
        } else {
            skipped.join("; ")
        });
    }
    Ok(usable)
}

fn parse_jwk(jwk: &Value) -> Result<VerifyKey, String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bytes = |name: &str| {
        text(name)
            .and_then(|v| B64URL.decode(v.trim_end_matches('=')).ok())
            .ok_or_else(|| format!("`{name}` is missing or not base64url"))
    };
    if text("use").is_some_and(|u| u != "sig") {
        return Err("not a signing key (`use`)".into());
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array)
        && !ops.iter().any(|o| o == "verify")
    {
        return Err("`key_ops` does not allow verify".into());
    }
    let alg = match text("alg") {
        None => None,
        Some(a) => Some(
            Algorithm::from_str(a)
                .ok()
                .filter(|a| ACCEPTED_ALGS.contains(a))
                .ok_or_else(|| format!("alg `{}` is not an accepted signing alg", shown(a)))?,
        ),
    };
    let bad = |e: jsonwebtoken::errors::Error| format!("unreadable key: {e}");
    let (kind, key) = match (text("kty"), text("crv")) {
        (Some("RSA"), _) => {
            let n = bytes("n")?;
            bytes("e")?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!(
                    "RSA modulus of about {bits} bits; 2048 or more needed"
                ));
            }
            let key =
                DecodingKey::from_rsa_components(text("n").unwrap_or(""), text("e").unwrap_or(""))
                    .map_err(bad)?;
            (KeyKind::Rsa, key)
        }
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            let (kind, len) = if crv == "P-256" {
                (KeyKind::P256, 32)
            } else {
                (KeyKind::P384, 48)
            };
            if bytes("x")?.len() != len || bytes("y")?.len() != len {
                return Err(format!("{crv} coordinates must be {len} bytes"));
            }
            let key =
                DecodingKey::from_ec_components(text("x").unwrap_or(""), text("y").unwrap_or(""))
                    .map_err(bad)?;
            (kind, key)
        }
        (Some("OKP"), Some("Ed25519")) => {
            // jsonwebtoken slices the first 32 bytes: a shorter `x` must not reach it.
            if bytes("x")?.len() != 32 {
                return Err("an Ed25519 `x` must be 32 bytes".into());
            }
            let key = DecodingKey::from_ed_components(text("x").unwrap_or("")).map_err(bad)?;
            (KeyKind::Ed25519, key)
        }
        (kty, crv) => {
            return Err(format!(
                "key type {}{} is not used for SETs",
                shown(kty.unwrap_or("(none)")),
                crv.map(|c| format!("/{}", shown(c))).unwrap_or_default()
            ));
        }
    };
    let key = VerifyKey {
        kid: text("kid").map(str::to_string),
        kind,
        alg,
        key,
    };
    if let Some(a) = alg
        && !key.fits(a)
    {
        return Err(format!("alg {a:?} does not match the key type"));
    }
    Ok(key)
}

fn json_object(part: &str) -> Option<Map<String, Value>> {
    let raw = B64URL.decode(part).ok()?;
    match serde_json::from_slice(&raw).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// An untrusted value for a description or the audit: bounded, without control characters.
fn shown(value: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = value
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// What a SET says it is about, from SSF subject identifiers (RFC 9493 formats, SSF's
/// `jwt_id`, `saml_assertion_id`, `ip-addresses`, complex subjects).
#[derive(Debug, Clone, Default)]
struct Subjects {
    ids: Vec<String>,
    ips: Vec<String>,
}

impl Subjects {
    fn push(&mut self, value: Option<&Value>) {
        if let Some(v) = value.and_then(Value::as_str).map(str::trim)
            && !v.is_empty()
            && !self.ids.iter().any(|s| s == v)
        {
            self.ids.push(shown(v));
        }
    }

    fn collect(&mut self, id: &Value, depth: usize) {
        let Some(obj) = id.as_object() else {
            return;
        };
        if depth > 3 {
            return;
        }
        // Google's RISC transmitter still names the format `subject_type` (RISC 1.0 §3.1).
        let format = obj
            .get("format")
            .or_else(|| obj.get("subject_type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        match format {
            "email" => self.push(obj.get("email")),
            "phone_number" | "phone" => self.push(obj.get("phone_number")),
            "iss_sub" | "iss-sub" => self.push(obj.get("sub")),
            "opaque" => self.push(obj.get("id")),
            "account" | "uri" => self.push(obj.get("uri")),
            "did" => self.push(obj.get("url")),
            "jwt_id" => self.push(obj.get("jti")),
            "saml_assertion_id" => self.push(obj.get("assertion_id")),
            "ip-addresses" => {
                for ip in obj
                    .get("ip-addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.push(Some(ip));
                    if let Some(ip) = ip.as_str() {
                        self.ips.push(shown(ip));
                    }
                }
            }
            "aliases" => {
                for alias in obj
                    .get("identifiers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.collect(alias, depth + 1);
                }
            }
            "complex" => {
                // The principal first (user, application), then what narrows it.
                const ORDER: [&str; 7] = [
                    "user",
                    "application",
                    "session",
                    "device",
                    "tenant",
                    "org_unit",
                    "group",
                ];
                for member in ORDER {
                    if let Some(v) = obj.get(member) {
                        self.collect(v, depth + 1);
                    }
                }
                for (name, v) in obj {
                    if name != "format" && !ORDER.contains(&name.as_str()) {
                        self.collect(v, depth + 1);
                    }
                }
            }
            // A proprietary format agreed with the transmitter: its string members.
            _ => {
                for (name, v) in obj {
                    if name != "format" && name != "subject_type" {
                        self.push(Some(v));
                    }
                }
            }
        }
    }
}

/// The signal of one event, `None` for types Steward records without acting on.
fn map_event(
    event_type: &str,
    payload: &Map<String, Value>,
    subjects: &Subjects,
    txn: Option<&str>,
) -> Option<Signal> {
    let (kind, fields): (RiskKind, &[&str]) = match event_type {
        SESSION_REVOKED | RISC_SESSIONS_REVOKED => (RiskKind::SessionRevoked, &[]),
        CREDENTIAL_CHANGE => (
            RiskKind::CredentialChange,
            &[
                "change_type",
                "credential_type",
                "friendly_name",
                "x509_issuer",
                "x509_serial",
                "fido2_aaguid",
            ],
        ),
        CREDENTIAL_COMPROMISE => (RiskKind::CredentialCompromise, &["credential_type"]),
        ACCOUNT_DISABLED => (RiskKind::AccountDisabled, &["reason"]),
        _ => return None,
    };
    let mut detail = Vec::new();
    for field in fields {
        if let Some(v) = payload.get(*field).and_then(Value::as_str) {
            detail.push(format!("{field}={}", quoted(v)));
        }
    }
    if let Some(v) = payload.get("initiating_entity").and_then(Value::as_str) {
        detail.push(format!("initiating_entity={}", quoted(v)));
    }
    if let Some(reason) = payload.get("reason_admin").and_then(localized) {
        detail.push(format!("reason_admin={}", quoted(reason)));
    }
    if let Some(at) = payload
        .get("event_timestamp")
        .and_then(Value::as_f64)
        .and_then(|t| DateTime::from_timestamp(t.floor() as i64, 0))
    {
        detail.push(format!("event_timestamp={}", at.to_rfc3339()));
    }
    if let Some(txn) = txn {
        detail.push(format!("txn={}", quoted(txn)));
    }
    Some(Signal::Risk {
        kind,
        subjects: subjects.ids.clone(),
        // CAEP and RISC give no level for these events; Steward does not invent one.
        level: None,
        detail: detail.join(", "),
        ip: subjects.ips.first().cloned(),
    })
}

/// A CAEP localizable message (`{"en": "…", "de": "…"}`): English when given, else the first.
fn localized(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(m) => m
            .get("en")
            .or_else(|| m.iter().find(|(k, _)| k.starts_with("en-")).map(|(_, v)| v))
            .or_else(|| m.values().next())
            .and_then(Value::as_str),
        _ => None,
    }
}

/// A value for `key=value` detail: bare when it is one plain word, quoted otherwise.
fn quoted(v: &str) -> String {
    let v = shown(v);
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@'))
    {
        v
    } else {
        format!("{v:?}")
    }
}

/// Handles one push request: 202 with an empty body when the SET is valid and new, the RFC 8935
/// error object otherwise. Every refusal is audited and changes nothing else. `Err` only when
/// storage is unreachable (the transmitter retries).
pub async fn handle(
    engine: &Engine,
    receiver: &SsfReceiver,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Reply, EngineError> {
    let now = engine.clock.now();
    let set = match receiver.verify(headers, body, now).await {
        Ok(set) => set,
        Err(rejected) => return refused(engine, rejected).await,
    };
    // Accept first, then remember the jti: `accept` is idempotent per event id, so a crash in
    // between loses nothing (the transmitter's retry is accepted as new, recorded once), and a
    // SET redelivered after its 202 is the replay refused below, its events already recorded.
    intake::accept(engine, set.events).await?;
    if !engine
        .store
        .remember_inbound(JTI_SOURCE, &set.jti, JTI_WINDOW)
        .await?
    {
        let replay = refuse(
            SetErr::InvalidRequest,
            format!(
                "SET jti `{}` was already accepted (replay)",
                shown(&set.jti)
            ),
        );
        return refused(engine, replay).await;
    }
    Ok(Reply::empty(202))
}

async fn refused(engine: &Engine, rejected: Rejected) -> Result<Reply, EngineError> {
    let why = rejected.to_string();
    tracing::warn!(why, "Shared Signals push refused");
    engine
        .store
        .append_audit(vec![audit::refusal(
            "Shared Signals SET",
            &Actor::System,
            None,
            None,
            &why,
            engine.clock.now(),
        )])
        .await?;
    Ok(rejected.reply())
}
