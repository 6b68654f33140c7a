//! [`Keys`]: one issuer's JWKS, loaded lazily and kept fresh.

use super::keys::{Lookup, VerifyKey, lookup, parse_jwks, parse_jwks_text};
use super::{JWKS_FETCH_TIMEOUT, JWKS_TTL, JwksSource, MAX_JWKS_BYTES, shown};
use jsonwebtoken::Algorithm;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The keys could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot build the HTTP client for the JWKS: {0}")]
    Client(String),
    #[error("the keys in {origin} are unusable: {reason}")]
    Keys { origin: String, reason: String },
}

/// Why no key verifies a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The keys cannot be loaded now, or a key may have been published since the last load:
    /// the caller may try again later.
    Unavailable(String),
    /// The token names a key that cannot verify it, or no key at all.
    Invalid(String),
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<Arc<VerifyKey>>,
    /// When the keys were last loaded.
    loaded: Option<Instant>,
    /// When a load was last tried, successful or not: the rate limit.
    attempted: Option<Instant>,
}

/// One issuer's keys. Build once per process and share: the cache is inside.
pub struct Keys {
    source: JwksSource,
    http: Option<reqwest::Client>,
    cache: tokio::sync::Mutex<KeyCache>,
    min_refresh: Duration,
    /// Whose keys, for messages ("the transmitter's", "the issuer's").
    whose: &'static str,
}

impl Keys {
    /// Reads a JWKS file or document now; a URL is fetched on the first token, so an issuer's
    /// outage does not stop Steward from starting. `https_only` refuses plain-http fetches;
    /// redirects are never followed (one could leave https or the issuer's host).
    pub fn new(
        source: JwksSource,
        min_refresh: Duration,
        https_only: bool,
        whose: &'static str,
    ) -> Result<Self, KeysError> {
        let mut cache = KeyCache::default();
        let http = match &source {
            JwksSource::Url(_) => {
                crate::tls::install_crypto_provider();
                let client = reqwest::Client::builder()
                    .timeout(JWKS_FETCH_TIMEOUT)
                    .connect_timeout(JWKS_FETCH_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .https_only(https_only)
                    .user_agent("steward")
                    .build()
                    .map_err(|e| KeysError::Client(e.to_string()))?;
                Some(client)
            }
            JwksSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| KeysError::Keys {
                    origin: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                cache.keys = parse_jwks_text(&text).map_err(|reason| KeysError::Keys {
                    origin: path.display().to_string(),
                    reason,
                })?;
                cache.loaded = Some(Instant::now());
                cache.attempted = cache.loaded;
                None
            }
            JwksSource::Json(doc) => {
                cache.keys = parse_jwks(doc).map_err(|reason| KeysError::Keys {
                    origin: source.to_string(),
                    reason,
                })?;
                cache.loaded = Some(Instant::now());
                None
            }
        };
        Ok(Self {
            source,
            http,
            cache: tokio::sync::Mutex::new(cache),
            min_refresh,
            whose,
        })
    }

    pub fn source(&self) -> &JwksSource {
        &self.source
    }

    /// The key for `kid` and `alg`, reloading the JWKS when it is old or the `kid` is unknown
    /// (at most once per `min_refresh`).
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, KeyError> {
        let whose = self.whose;
        let mut cache = self.cache.lock().await;
        let reloadable = !matches!(self.source, JwksSource::Json(_));
        let may_try = |c: &KeyCache| c.attempted.is_none_or(|t| t.elapsed() >= self.min_refresh);
        let old = cache.loaded.is_none_or(|t| t.elapsed() >= JWKS_TTL);
        // Whether this call loaded the keys (then loading again cannot help).
        let mut reloaded = false;
        let mut reload_error = None;
        if reloadable && old && may_try(&cache) {
            reload_error = self.reload(&mut cache).await.err();
            reloaded = true;
        }
        if cache.keys.is_empty() {
            return Err(KeyError::Unavailable(format!(
                "{whose} keys could not be loaded{}; retry later",
                reload_error.map(|e| format!(" ({e})")).unwrap_or_default()
            )));
        }
        let mut found = lookup(&cache.keys, kid, alg);
        if matches!(found, Lookup::Unknown) && reloadable && !reloaded {
            if !may_try(&cache) {
                // The issuer may have published a new key since the last load. Asking to retry
                // later loses no genuine token, and forged `kid`s cannot set the fetch rate.
                return Err(KeyError::Unavailable(format!(
                    "key `{}` is not in {whose} JWKS as loaded moments ago; retry later",
                    shown(kid.unwrap_or(""))
                )));
            }
            reload_error = self.reload(&mut cache).await.err();
            reloaded = true;
            found = lookup(&cache.keys, kid, alg);
        }
        if let (Lookup::Unknown, Some(e)) = (&found, &reload_error) {
            return Err(KeyError::Unavailable(format!(
                "key `{}` is not in {whose} JWKS and it could not be reloaded ({e}); retry later",
                shown(kid.unwrap_or(""))
            )));
        }
        let kid_shown = shown(kid.unwrap_or(""));
        match found {
            Lookup::Found(key) => Ok(key),
            Lookup::Unfit => Err(KeyError::Invalid(format!(
                "key `{kid_shown}` of {whose} JWKS cannot verify alg {alg:?}"
            ))),
            Lookup::Ambiguous => Err(KeyError::Invalid(format!(
                "the token names no kid and {whose} JWKS has several keys for {alg:?}"
            ))),
            Lookup::Unknown => Err(KeyError::Invalid(match kid {
                Some(_) => format!(
                    "key `{kid_shown}` is not in {whose} JWKS{}",
                    if reloaded { " (reloaded)" } else { "" }
                ),
                None => format!("{whose} JWKS has no key for {alg:?}"),
            })),
        }
    }

    /// Loads the JWKS again; on failure the keys loaded before stay in use.
    async fn reload(&self, cache: &mut KeyCache) -> Result<(), String> {
        cache.attempted = Some(Instant::now());
        let keys = match &self.source {
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
        tracing::info!(keys = keys.len(), source = %self.source, "{} keys loaded", self.whose);
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
