//! One HTTP exchange with Okta, done right: authentication, the shared rate limiter, retries
//! only where a repeat cannot do harm, and Okta's error answers turned into `IdpError`s.

use super::rate_limit::{self, Limiter};
use super::settings::{OktaAuth, OktaSettings, OktaSettingsError};
use crate::ports::idp::IdpError;
use crate::secret::Secret;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, LINK};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};
use tracing::Instrument as _;
use url::Url;

/// 429 answers in a row before a call gives up (each one waited for its window's reset).
const MAX_RATE_LIMITED: u32 = 5;
/// Renew Steward's own OAuth for Okta token this long before it expires.
const TOKEN_EARLY_RENEWAL: Duration = Duration::from_secs(60);
/// Lifetime of a client assertion (Okta accepts at most one hour).
const ASSERTION_LIFETIME_SECS: i64 = 300;
const USER_AGENT: &str = concat!("steward/", env!("CARGO_PKG_VERSION"), " okta-adapter");

/// What a call carries.
pub(crate) enum Body {
    None,
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

/// Whom a call authenticates as.
pub(crate) enum As<'a> {
    /// Steward, to the Management API.
    Steward,
    /// An agent's client, with HTTP Basic (`client_secret_basic`).
    Client { id: &'a str, secret: &'a Secret },
    /// Nobody in a header (the client assertion is in the form).
    Nobody,
}

pub(crate) struct Call<'a> {
    pub method: Method,
    pub url: Url,
    pub body: Body,
    pub auth: As<'a>,
    /// Whether repeating the call after a 5xx or a lost answer does no harm (GET, PUT, DELETE,
    /// lifecycle POSTs, token requests). Only a 429 (not processed) repeats any call.
    pub idempotent: bool,
    /// An RFC 9449 DPoP proof for the `DPoP` header (a token request of a DPoP-bound client).
    pub dpop: Option<String>,
}

/// Why a call failed, with the headers of a refusal (a 4xx other than 429) for callers that
/// read them: a DPoP nonce comes in the `DPoP-Nonce` header of a `use_dpop_nonce` refusal.
pub(crate) struct Failure {
    pub error: IdpError,
    pub headers: Option<HeaderMap>,
}

impl From<IdpError> for Failure {
    fn from(error: IdpError) -> Self {
        Self {
            error,
            headers: None,
        }
    }
}

/// A successful answer.
pub(crate) struct Answer {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, IdpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            IdpError::Unavailable(format!("Okta answered with an unexpected body: {e}"))
        })
    }

    /// The `rel="next"` target of the `Link` headers, if any.
    pub fn next_link(&self) -> Option<String> {
        next_link(&self.headers)
    }
}

/// Okta's error body (`errorCode`, `errorSummary`, `errorCauses`) or OAuth's (`error`,
/// `error_description`).
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    #[serde(rename = "errorSummary")]
    error_summary: Option<String>,
    #[serde(rename = "errorCauses", default)]
    error_causes: Vec<ErrorCause>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorCause {
    #[serde(rename = "errorSummary")]
    error_summary: Option<String>,
}

/// Turns an error answer into `Provider { status, code, summary }`; the summary includes the
/// causes Okta lists (which field failed validation, and why).
pub(crate) fn provider_error(status: StatusCode, body: &[u8]) -> IdpError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let (code, mut summary) = match (parsed.error_code, parsed.error) {
        (Some(code), _) => (code, parsed.error_summary.unwrap_or_default()),
        (None, Some(error)) => (error, parsed.error_description.unwrap_or_default()),
        (None, None) => (
            status.as_u16().to_string(),
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        ),
    };
    let causes: Vec<String> = parsed
        .error_causes
        .into_iter()
        .filter_map(|c| c.error_summary)
        .filter(|c| !c.is_empty())
        .collect();
    if !causes.is_empty() {
        summary = format!("{summary} ({})", causes.join("; "));
    }
    IdpError::Provider {
        status: status.as_u16(),
        code,
        summary,
    }
}

/// Steward's cached OAuth for Okta access token.
pub(crate) struct CachedToken {
    value: Secret,
    renew_at: Instant,
}

pub(crate) struct Transport {
    pub settings: OktaSettings,
    client: reqwest::Client,
    limiter: Limiter,
    /// Held across a renewal so concurrent calls wait for one token request.
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

impl Transport {
    pub fn new(settings: OktaSettings) -> Result<Self, OktaSettingsError> {
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.connect_timeout)
            // A redirect could carry Steward's credentials elsewhere: Okta's API never needs one.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| OktaSettingsError::HttpClient(e.to_string()))?;
        Ok(Self {
            settings,
            client,
            limiter: Limiter::default(),
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The org URL made of path `segments` (each percent-encoded) and `query` pairs.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.settings.org_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// A `Link` target to follow, refused unless it points at the org itself (Steward's
    /// credentials go with it).
    pub fn same_org(&self, link: &str) -> Result<Url, IdpError> {
        let url = Url::parse(link)
            .map_err(|e| IdpError::Unavailable(format!("Okta sent an unusable next link: {e}")))?;
        if url.origin() != self.settings.org_url.origin() {
            return Err(IdpError::Unavailable(format!(
                "Okta's next link points outside the org ({}): not followed",
                url.origin().ascii_serialization()
            )));
        }
        Ok(url)
    }

    /// Sends `call`, waiting for the rate limit and retrying as the call allows.
    pub async fn send(&self, call: Call<'_>) -> Result<Answer, IdpError> {
        self.send_keeping_refusal(call).await.map_err(|f| f.error)
    }

    /// [`send`](Self::send), keeping a refusal's headers.
    pub async fn send_keeping_refusal(&self, call: Call<'_>) -> Result<Answer, Failure> {
        let span = tracing::debug_span!(
            "okta",
            method = %call.method,
            path = %call.url.path(),
            status = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        self.send_inner(call).instrument(span).await
    }

    async fn send_inner(&self, call: Call<'_>) -> Result<Answer, Failure> {
        let bucket = rate_limit::bucket_of(call.url.path());
        let mut attempts = 0u32;
        let mut rate_limited = 0u32;
        let mut renewed_token = false;
        loop {
            // Before the permit: Steward's own token may take a request of its own.
            let request = self.request(&call).await?;
            let permit = self
                .limiter
                .acquire(&bucket, self.settings.max_rate_limit_wait)
                .await
                .map_err(|t| {
                    IdpError::Unavailable(format!(
                        "Okta's rate limit for {} allows the next request in {} s, longer than Steward waits",
                        t.bucket,
                        t.wait.as_secs()
                    ))
                })?;
            attempts += 1;
            let span = tracing::Span::current();
            span.record("attempts", attempts);
            let outcome = request.send().await;
            let failure = match outcome {
                Err(e) => {
                    drop(permit);
                    // A connection never made carried nothing: any call may go again.
                    let retry = call.idempotent || e.is_connect();
                    (retry, format!("Okta could not be reached: {}", describe(e)))
                }
                Ok(response) => {
                    let status = response.status();
                    span.record("status", status.as_u16());
                    permit.observe(response.headers());
                    let headers = response.headers().clone();
                    let body = response.bytes().await;
                    drop(permit);
                    let body = match body {
                        Ok(b) => b.to_vec(),
                        Err(e) => {
                            if call.idempotent && attempts < self.settings.max_attempts {
                                self.backoff(attempts).await;
                                continue;
                            }
                            return Err(IdpError::Unavailable(format!(
                                "Okta's answer was cut short: {}",
                                describe(e)
                            ))
                            .into());
                        }
                    };
                    if status.is_success() {
                        tracing::debug!(status = status.as_u16(), "okta answered");
                        return Ok(Answer { headers, body });
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        // Okta did not process the request: any call may be repeated.
                        rate_limited += 1;
                        tracing::info!(bucket, rate_limited, "okta answered 429");
                        if rate_limited > MAX_RATE_LIMITED {
                            return Err(IdpError::Unavailable(format!(
                                "Okta kept refusing calls to {bucket} for the rate limit ({})",
                                provider_error(status, &body)
                            ))
                            .into());
                        }
                        attempts -= 1;
                        if rate_limit::until_reset(&headers).is_none() {
                            // No window to wait for: back off instead.
                            self.backoff(rate_limited).await;
                        }
                        continue;
                    }
                    if status == StatusCode::UNAUTHORIZED
                        && matches!(call.auth, As::Steward)
                        && matches!(self.settings.auth, OktaAuth::PrivateKeyJwt { .. })
                        && !renewed_token
                    {
                        // The cached token may have been revoked: one fresh try.
                        renewed_token = true;
                        *self.token.lock().await = None;
                        attempts -= 1;
                        continue;
                    }
                    if status.is_server_error() {
                        (call.idempotent, provider_error(status, &body).to_string())
                    } else {
                        let err = provider_error(status, &body);
                        tracing::debug!(status = status.as_u16(), error = %err, "okta refused");
                        return Err(Failure {
                            error: self.explain(err, &call),
                            headers: Some(headers),
                        });
                    }
                }
            };
            let (retry, why) = failure;
            if retry && attempts < self.settings.max_attempts {
                tracing::info!(attempts, why, "okta call failed, retrying");
                self.backoff(attempts).await;
                continue;
            }
            return Err(IdpError::Unavailable(if attempts > 1 {
                format!("{why} (after {attempts} attempts)")
            } else {
                why
            })
            .into());
        }
    }

    /// Says what to do about Okta refusing Steward's own credentials.
    fn explain(&self, err: IdpError, call: &Call<'_>) -> IdpError {
        match err {
            IdpError::Provider {
                status: 401,
                code,
                summary,
            } if matches!(call.auth, As::Steward) => {
                let hint = match self.settings.auth {
                    OktaAuth::ApiToken(_) => {
                        "Okta did not accept Steward's API token: check STEWARD_OKTA_API_TOKEN (it may be revoked or expired)"
                    }
                    OktaAuth::PrivateKeyJwt { .. } => {
                        "Okta did not accept Steward's access token: check the service app, its key and granted scopes"
                    }
                };
                IdpError::Provider {
                    status: 401,
                    code,
                    summary: format!("{summary}: {hint}"),
                }
            }
            other => other,
        }
    }

    async fn backoff(&self, attempt: u32) {
        let base = self.settings.backoff_base * 2u32.saturating_pow(attempt.saturating_sub(1));
        let jitter = base.mul_f64(rand::random::<f64>());
        tokio::time::sleep(base + jitter).await;
    }

    async fn request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, IdpError> {
        let mut rb = self
            .client
            .request(call.method.clone(), call.url.clone())
            .header(ACCEPT, "application/json");
        match &call.auth {
            As::Steward => {
                rb = rb.header(AUTHORIZATION, self.steward_authorization().await?);
            }
            As::Client { id, secret } => {
                // RFC 6749 §2.3.1: both parts form-encoded before Basic.
                let user: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
                let pass: String =
                    form_urlencoded::byte_serialize(secret.expose().as_bytes()).collect();
                let mut value = HeaderValue::try_from(format!(
                    "Basic {}",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        format!("{user}:{pass}")
                    )
                ))
                .map_err(|_| IdpError::Refused("the client id is not usable in a header".into()))?;
                value.set_sensitive(true);
                rb = rb.header(AUTHORIZATION, value);
            }
            As::Nobody => {}
        }
        if let Some(proof) = &call.dpop {
            let mut value = HeaderValue::try_from(proof.as_str()).map_err(|_| {
                IdpError::Refused("the DPoP proof is not usable in a header".into())
            })?;
            value.set_sensitive(true);
            rb = rb.header("DPoP", value);
        }
        rb = match &call.body {
            Body::None => rb,
            Body::Json(v) => rb.header(CONTENT_TYPE, "application/json").json(v),
            Body::Form(pairs) => rb.form(pairs),
        };
        Ok(rb)
    }

    /// The `Authorization` value for the Management API, marked sensitive so no debug output
    /// shows it.
    async fn steward_authorization(&self) -> Result<HeaderValue, IdpError> {
        let value = match &self.settings.auth {
            OktaAuth::ApiToken(token) => format!("SSWS {}", token.expose()),
            OktaAuth::PrivateKeyJwt { .. } => {
                format!("Bearer {}", self.access_token().await?.expose())
            }
        };
        let mut value = HeaderValue::try_from(value).map_err(|_| {
            IdpError::Refused(
                "Steward's Okta credential has characters a header cannot carry".into(),
            )
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Steward's OAuth for Okta access token, from the cache or the org authorization server.
    async fn access_token(&self) -> Result<Secret, IdpError> {
        let OktaAuth::PrivateKeyJwt {
            client_id,
            key,
            key_id,
            scopes,
        } = &self.settings.auth
        else {
            return Err(IdpError::Refused("no OAuth for Okta configured".into()));
        };
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(t.value.clone());
        }
        let endpoint = self.settings.org_token_endpoint();
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": client_id, "sub": client_id, "aud": endpoint.as_str(),
            "iat": now, "exp": now + ASSERTION_LIFETIME_SECS,
            "jti": hex::encode(rand::random::<[u8; 16]>()),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &key.0).map_err(|e| {
            IdpError::Refused(format!("the client assertion could not be signed: {e}"))
        })?;
        let call = Call {
            method: Method::POST,
            url: endpoint,
            body: Body::Form(vec![
                ("grant_type", "client_credentials".into()),
                ("scope", scopes.join(" ")),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ),
                ("client_assertion", assertion),
            ]),
            auth: As::Nobody,
            idempotent: true,
            dpop: None,
        };
        // `send` calls back into `access_token` only for `As::Steward`, never for this call.
        let answer = Box::pin(self.send(call)).await.map_err(|e| match e {
            IdpError::Provider {
                status,
                code,
                summary,
            } => IdpError::Provider {
                status,
                code,
                summary: format!(
                    "{summary}: Okta refused Steward's own token request (check STEWARD_OKTA_CLIENT_ID, its key and granted scopes)"
                ),
            },
            other => other,
        })?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: String,
            token_type: String,
            expires_in: u64,
        }
        let token: TokenAnswer = answer.json()?;
        if !token.token_type.eq_ignore_ascii_case("bearer") {
            return Err(IdpError::Refused(format!(
                "Okta issued a {} token to Steward's service app; Steward sends Bearer tokens only: turn off \"Require DPoP\" on the service app",
                token.token_type
            )));
        }
        let value = Secret::new(token.access_token);
        *cached = Some(CachedToken {
            value: value.clone(),
            renew_at: Instant::now()
                + Duration::from_secs(token.expires_in).saturating_sub(TOKEN_EARLY_RENEWAL),
        });
        Ok(value)
    }
}

fn describe(e: reqwest::Error) -> String {
    // Without the URL: its query may hold a cursor or a search, and the message stays short.
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The target of the `rel="next"` link among `Link` headers (RFC 8288), Okta's pagination.
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let Ok(value) = value.to_str() else { continue };
        for link in value.split(',') {
            let mut parts = link.split(';');
            let Some(target) = parts.next() else { continue };
            let target = target.trim();
            let is_next = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=")
                    .map(|r| r.trim_matches('"').split_whitespace().any(|r| r == "next"))
                    .unwrap_or(false)
            });
            if is_next && target.starts_with('<') && target.ends_with('>') {
                return Some(target[1..target.len() - 1].to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found_among_links() {
        let mut h = HeaderMap::new();
        h.append(
            LINK,
            HeaderValue::from_static("<https://x.okta.com/api/v1/apps?limit=2>; rel=\"self\""),
        );
        h.append(
            LINK,
            HeaderValue::from_static(
                "<https://x.okta.com/api/v1/apps?after=0oa2&limit=2>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://x.okta.com/api/v1/apps?after=0oa2&limit=2")
        );
        let mut one = HeaderMap::new();
        one.insert(
            LINK,
            HeaderValue::from_static("<https://a/1>; rel=\"self\", <https://a/2>; rel=next"),
        );
        assert_eq!(next_link(&one).as_deref(), Some("https://a/2"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn okta_errors_keep_code_summary_and_causes() {
        let body = br#"{"errorCode":"E0000001","errorSummary":"Api validation failed: label","errorLink":"E0000001","errorId":"x","errorCauses":[{"errorSummary":"label: The field cannot be left blank"}]}"#;
        match provider_error(StatusCode::BAD_REQUEST, body) {
            IdpError::Provider {
                status,
                code,
                summary,
            } => {
                assert_eq!((status, code.as_str()), (400, "E0000001"));
                assert!(summary.contains("Api validation failed: label"));
                assert!(summary.contains("cannot be left blank"));
            }
            other => panic!("{other:?}"),
        }
        match provider_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_client","error_description":"Client authentication failed."}"#,
        ) {
            IdpError::Provider { code, .. } => assert_eq!(code, "invalid_client"),
            other => panic!("{other:?}"),
        }
    }
}
