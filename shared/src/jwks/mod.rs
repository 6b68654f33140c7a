//! JSON Web Key Sets: the public keys an issuer publishes, which of them may verify which `alg`,
//! and a cache ([`Keys`]) that loads them lazily, loads them again when they are old or when a
//! token names an unknown `kid` (at most once per interval, so forged `kid`s cannot set the
//! fetch rate), and keeps the last good set through an outage. The Shared Signals receiver and
//! person sign-in verify with it.

mod cache;
mod keys;

pub use cache::{KeyError, Keys, KeysError};
pub use keys::{KeyKind, Lookup, VerifyKey, lookup, parse_jwk, parse_jwks, parse_jwks_text};

use jsonwebtoken::Algorithm;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Keys are fetched again after this, on the next token.
pub const JWKS_TTL: Duration = Duration::from_secs(3600);
/// At most one JWKS fetch per this interval, however many unknown `kid`s arrive.
pub const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(60);
/// A JWKS fetch gets this long.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// JWKS documents above this are refused.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The algorithms a token may be signed with: asymmetric only, so an issuer's public key can
/// never double as an HMAC secret, and never `none`.
pub const ACCEPTED_ALGS: [Algorithm; 9] = [
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

/// Where an issuer's public keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// The issuer's `jwks_uri`: https (plain http only on loopback), fetched lazily, cached for
    /// [`JWKS_TTL`], fetched again when a token names an unknown `kid`.
    Url(String),
    /// A JWKS file, read at start and read again when a token names an unknown `kid`.
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

/// A value from a token or a key, safe to put in a message: at most 80 characters, control
/// characters replaced.
pub fn shown(value: &str) -> String {
    crate::audit::bounded(value, crate::audit::REFUSAL_ID_CHARS)
}

/// Whether `url` names this machine (a loopback address or `localhost`), where plain http is
/// acceptable for local issuers and tests.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether `url` is https (`Ok(true)`) or plain http on a loopback address (`Ok(false)`, for
/// local issuers and tests); anything else is refused, because tokens and keys travel there.
pub fn url_is_https(url: &str) -> Result<bool, String> {
    let parsed: url::Url = url.parse().map_err(|e: url::ParseError| e.to_string())?;
    match parsed.scheme() {
        "https" => Ok(true),
        "http" if is_loopback(&parsed) => Ok(false),
        _ => Err("must be https (plain http only on a loopback address)".into()),
    }
}

/// One part of a compact JWS (header or payload): base64url without padding, a JSON object.
pub fn json_object(part: &str) -> Option<serde_json::Map<String, Value>> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    match serde_json::from_slice(&raw).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}
