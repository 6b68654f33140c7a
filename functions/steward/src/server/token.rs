//! The development identity provider's OAuth endpoints on the local server: metadata (also as
//! the OpenID Connect discovery document), keys, and the token endpoint: agents' client
//! credentials grant (RFC 6749 §4.4; every request is also a signal for detection) and people's
//! device code, authorization code and refresh token grants (the pages are in `sign_in`). Only
//! the embedded default has them. The token and introspection endpoints are served again on the
//! mTLS listener (`super::mtls`), where a `tls_client_auth` agent authenticates by its
//! certificate and gets tokens bound to it.

use super::mtls::ClientCertificate;
use super::sign_in;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};
use shared::audit;
use shared::ca::{InternalCa, VerifiedClient};
use shared::http::App;
use shared::idp::dev::failures::{FailedAuthentications, FailureLimits, Throttled};
use shared::idp::dev::keys::Introspection;
use shared::idp::dev::people;
use shared::idp::dev::token_request::{Authentication, TokenForm, client_authentication};
use shared::idp::dev::{ClientAuth, DevIdp, OAuthError};
use shared::signal::Signal;
use std::net::IpAddr;
use std::sync::Arc;

/// Where the dev IdP answers (its metadata names the same URLs).
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// The same document, where OpenID Connect clients look for it.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
pub const TOKEN_PATH: &str = shared::idp::dev::TOKEN_PATH;
pub const KEYS_PATH: &str = shared::idp::dev::KEYS_PATH;
pub const INTROSPECT_PATH: &str = shared::idp::dev::INTROSPECT_PATH;

#[derive(Clone)]
pub struct Edge {
    pub app: App,
    pub idp: Arc<DevIdp>,
    /// Whether people sign in at this IdP.
    pub people: bool,
    /// Whose `X-Forwarded-For` names the caller detection sees.
    pub proxies: TrustedProxies,
    /// Failed client authentications, per client id and per caller address.
    pub failures: Arc<FailedAuthentications>,
    /// The mTLS listener, when it runs: the CA its client certificates are verified against,
    /// and its base URL (`https://127.0.0.1:<port>`, named in the metadata's
    /// `mtls_endpoint_aliases`, RFC 8705 §5).
    pub mtls: Option<(Arc<InternalCa>, String)>,
    /// Where token requests go for scope use and detection: in group commits, so concurrent
    /// requests share one durable write.
    pub intake: shared::intake::GroupIntake,
}

/// At most this many token requests share one intake write.
const INTAKE_BATCH: usize = 256;

impl Edge {
    /// The state of the dev IdP's routes (starts the intake's writer: call it on the server's
    /// runtime); refusals count in `app`'s health figures and go to its audit trail. `people`: whether people sign in here (no outside issuer is
    /// configured); `limits`: how many failed client authentications are answered before the
    /// rest are held back (counted across both listeners).
    pub fn new(
        app: App,
        idp: Arc<DevIdp>,
        people: bool,
        proxies: TrustedProxies,
        limits: FailureLimits,
        mtls: Option<(Arc<InternalCa>, String)>,
    ) -> Self {
        let intake =
            shared::intake::GroupIntake::start(app.engine.clone(), INTAKE_BATCH, INTAKE_BATCH * 4);
        Edge {
            app,
            idp,
            people,
            proxies,
            failures: Arc::new(FailedAuthentications::new(limits)),
            mtls,
            intake,
        }
    }
}

/// Agents' endpoints: metadata, token, introspection, keys.
fn agent_routes() -> Router<Edge> {
    Router::new()
        .route(METADATA_PATH, get(metadata))
        .route(DISCOVERY_PATH, get(metadata))
        .route(TOKEN_PATH, post(token))
        .route(INTROSPECT_PATH, post(introspect))
        .route(KEYS_PATH, get(jwks))
}

/// What the mTLS listener serves: agents' endpoints only (people sign in on the main one).
pub fn mtls_router(edge: Edge) -> Router {
    agent_routes().with_state(edge)
}

/// The dev IdP's routes on the main listener: agents' endpoints and, when people sign in
/// here, the sign-in pages.
pub fn router(edge: Edge) -> Router {
    let agents = agent_routes();
    let sign_in = Router::new()
        .route(
            people::DEVICE_AUTHORIZATION_PATH,
            post(sign_in::device_authorization),
        )
        .route(
            people::VERIFICATION_PATH,
            get(sign_in::device_page).post(sign_in::device_entry),
        )
        .route(
            people::AUTHORIZE_PATH,
            get(sign_in::authorize_page).post(sign_in::authorize_entry),
        );
    let routes = if edge.people {
        agents.merge(sign_in)
    } else {
        agents
    };
    routes.with_state(edge)
}

async fn metadata(State(edge): State<Edge>) -> Json<Value> {
    let mut m = edge.idp.metadata();
    if !edge.people
        && let Some(o) = m.as_object_mut()
    {
        // Another issuer signs people in: this one offers agents' tokens only.
        for key in ["authorization_endpoint", "device_authorization_endpoint"] {
            o.remove(key);
        }
        o.insert(
            "grant_types_supported".into(),
            json!(["client_credentials"]),
        );
    }
    // RFC 8705 §5: where certificate clients reach the token and introspection endpoints.
    if let Some((_, base)) = &edge.mtls
        && let Some(o) = m.as_object_mut()
    {
        o.insert(
            "mtls_endpoint_aliases".into(),
            json!({
                "token_endpoint": format!("{base}{TOKEN_PATH}"),
                "introspection_endpoint": format!("{base}{INTROSPECT_PATH}"),
            }),
        );
    }
    Json(m)
}

/// The connection's client certificate, checked against the CA and the registry: `None` when
/// the connection presented none (or is not the mTLS listener's), else the verified
/// certificate or why it is refused.
async fn presented(
    edge: &Edge,
    certificate: Option<&ClientCertificate>,
    client_id: Option<&str>,
) -> Option<Result<VerifiedClient, String>> {
    let (ca, _) = edge.mtls.as_ref()?;
    let der = certificate?;
    Some(
        edge.app
            .engine
            .check_client_certificate(ca, &der.0, client_id)
            .await,
    )
}

async fn jwks(State(edge): State<Edge>) -> Json<Value> {
    Json(edge.idp.jwks())
}

impl Edge {
    /// An OAuth error answer (RFC 6749 §5.2), counted and audited for the client it names;
    /// the device grant's "keep polling" answers are neither.
    pub async fn oauth_refusal(&self, client_id: Option<&str>, e: OAuthError) -> Response {
        // The device grant's `slow_down` is a 400; a held-back client authentication's is a 429,
        // and counted and recorded like any refusal.
        let polling = e.status == 400 && matches!(e.error, "authorization_pending" | "slow_down");
        if !polling {
            self.app.count_bad_request();
            // The same refusal is recorded once per window, within the window's budget (a
            // flood of wrong secrets must not grow the trail), saying how many went unrecorded.
            let key = format!(
                "token request|{}|{}|{}",
                e.error,
                client_id.unwrap_or(""),
                e.error_description
            );
            if let Some(description) = self.app.refusal_record_due(&key, &e.error_description) {
                let record = audit::token_refused(
                    client_id.unwrap_or("(none)"),
                    e.error,
                    &description,
                    self.app.engine.clock.now(),
                );
                if let Err(err) = self.app.engine.store.append_audit(vec![record]).await {
                    tracing::error!(error = %err, "could not audit a refused token request");
                }
            }
        }
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = (
            status,
            Json(json!({"error": e.error, "error_description": e.error_description})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"steward\""),
            );
        }
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        resp
    }

    /// A failed client authentication past a limit: 429 `slow_down` with `Retry-After`,
    /// counted and recorded (within the refusal budget) like every refusal.
    async fn throttled(&self, client_id: Option<&str>, why: Throttled) -> Response {
        let e = OAuthError {
            error: "slow_down",
            error_description: why.to_string(),
            status: 429,
        };
        let mut resp = self.oauth_refusal(client_id, e).await;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, why.retry_after_secs().into());
        resp
    }
}

/// People's grants: public clients, no client secret.
fn person_grant(
    edge: &Edge,
    form: &TokenForm,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Result<people::PersonTokenResponse, OAuthError>> {
    let client = form.client_id.as_deref();
    Some(match form.grant_type.as_deref()? {
        people::DEVICE_CODE_GRANT => {
            edge.idp
                .device_token(client, form.device_code.as_deref(), now)
        }
        "authorization_code" => edge.idp.code_token(
            client,
            form.code.as_deref(),
            form.redirect_uri.as_deref(),
            form.code_verifier.as_deref(),
            now,
        ),
        "refresh_token" => edge.idp.refresh(client, form.refresh_token.as_deref(), now),
        _ => return None,
    })
}

/// RFC 6749 §4.4 token endpoint; client_secret_basic or client_secret_post. Every refusal is
/// counted and audited (client id only, never the secret).
async fn token(
    State(edge): State<Edge>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    certificate: Option<axum::Extension<ClientCertificate>>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = edge.app.engine.clock.now();
    if let Ok(Form(f)) = &form
        && edge.people
        && let Some(result) = person_grant(&edge, f, now)
    {
        return match result {
            Ok(t) => ([(header::CACHE_CONTROL, "no-store")], Json(t)).into_response(),
            Err(e) => edge.oauth_refusal(f.client_id.as_deref(), e).await,
        };
    }
    let requested = form
        .as_ref()
        .ok()
        .and_then(|f| f.scope.clone())
        .unwrap_or_default();
    let caller = edge.proxies.client_ip(peer.ip(), &headers);
    let named = form.as_ref().ok().and_then(|f| f.client_id.clone());
    let presented = presented(&edge, certificate.as_deref(), named.as_deref()).await;
    let presented_x5t = presented
        .as_ref()
        .and_then(|p| p.as_ref().ok())
        .map(|v| v.x5t_s256.clone());
    let (client_id, result) = grant(&edge, &headers, form, presented, now);
    // The secret is always checked first, so a right one is never held back: only failures
    // count, and only failures past a limit are answered 429.
    if let Err(e) = &result
        && e.failed_authentication()
        && let Err(why) = edge.failures.failed(client_id.as_deref(), caller)
    {
        return edge.throttled(client_id.as_deref(), why).await;
    }
    // Every authenticated request is a signal: scope use for reviews, and anomaly detection
    // (a refused out-of-grant scope is the strongest signal of all).
    if let Some(id) = &client_id {
        let outcome = match &result {
            Ok(t) => Some((true, t.scope.clone(), None)),
            Err(e) if e.error == "invalid_scope" => {
                Some((false, String::new(), Some(e.error.to_string())))
            }
            Err(_) => None,
        };
        if let Some((success, granted, reason)) = outcome {
            let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            let signal = Signal::TokenGrant {
                client_id: id.clone(),
                ip: Some(caller.to_string()),
                grant_type: Some("client_credentials".into()),
                requested: if requested.trim().is_empty() {
                    words(&granted)
                } else {
                    words(&requested)
                },
                granted: words(&granted),
                success,
                reason,
                // What the answer's token is bound to: a DPoP key (`cnf.jkt`), the client
                // certificate (`cnf.x5t#S256`), or nothing (Bearer).
                binding: result.as_ref().ok().map(|t| t.binding),
            };
            let received = shared::intake::Received {
                source: "dev-idp",
                event_id: audit::random_id("grant"),
                event_type: "token.grant".into(),
                subject: id.clone(),
                published: Some(now),
                signal: Some(signal),
            };
            if let Err(e) = edge.intake.accept(vec![received]).await {
                tracing::error!(error = %e, "could not record a token request for detection");
            }
        }
    }
    match result {
        Ok(t) => {
            // A grant signed with a key a rotation waits to see used completes that step.
            if let (Some(id), Some(kid)) = (&client_id, &t.kid)
                && let Err(e) = edge.app.engine.key_used(id, kid).await
            {
                tracing::error!(error = %e, "could not tell a key rotation its key was used");
            }
            // A grant over mutual TLS with the certificate a certificate rotation waits to see
            // used completes that step.
            if let (Some(id), Some(x5t), shared::ports::idp::TokenBinding::Certificate) =
                (&client_id, &presented_x5t, t.binding)
                && let Err(e) = edge.app.engine.certificate_used(id, x5t).await
            {
                tracing::error!(error = %e, "could not tell a certificate rotation its certificate was used");
            }
            let mut resp = Json(t).into_response();
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(e) => edge.oauth_refusal(client_id.as_deref(), e).await,
    }
}

/// Parses and checks a client_credentials request; returns the client id it named, if any.
/// `presented`: the mTLS connection's client certificate as checked; a request with no secret
/// and no assertion authenticates with it (`tls_client_auth`, RFC 8705 §2.1), naming its
/// `client_id`.
fn grant(
    edge: &Edge,
    headers: &HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
    presented: Option<Result<VerifiedClient, String>>,
    now: chrono::DateTime<chrono::Utc>,
) -> (
    Option<String>,
    Result<shared::idp::dev::TokenResponse, shared::idp::dev::OAuthError>,
) {
    let Ok(Form(form)) = form else {
        return (
            None,
            Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            )),
        );
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (named, authentication) = client_authentication(authorization, &form);
    let certificate_only = authorization.is_none()
        && form.client_secret.is_none()
        && form.client_assertion.is_none()
        && form.client_assertion_type.is_none();
    let verified;
    let auth = match (&authentication, presented) {
        (Ok(Authentication::Secret(client_id, secret)), _) => {
            ClientAuth::Secret { client_id, secret }
        }
        (
            Ok(Authentication::Assertion {
                client_id,
                assertion,
            }),
            _,
        ) => ClientAuth::Assertion {
            client_id,
            assertion,
        },
        (Err(_), Some(checked)) if certificate_only => {
            let Some(client_id) = form.client_id.as_deref() else {
                return (
                    None,
                    Err(OAuthError::invalid_request(
                        "name the client: tls_client_auth requests carry client_id (RFC 8705 §2)",
                    )),
                );
            };
            verified = match checked {
                Ok(v) => v,
                Err(why) => {
                    return (
                        Some(client_id.to_string()),
                        Err(OAuthError::invalid_client(format!(
                            "client certificate refused: {why}"
                        ))),
                    );
                }
            };
            ClientAuth::Certificate {
                client_id,
                certificate: &verified,
            }
        }
        (Err(e), _) => return (named, Err(e.clone())),
    };
    let id = auth.client_id().to_string();
    if form.grant_type.as_deref() != Some("client_credentials") {
        return (
            Some(id),
            Err(OAuthError::unsupported_grant_type(
                "grant_type must be client_credentials, authorization_code, refresh_token or the device code grant",
            )),
        );
    }
    let dpop = match dpop_header(headers) {
        Ok(d) => d,
        Err(e) => return (Some(id), Err(e)),
    };
    let result = edge.idp.grant(auth, form.scope.as_deref(), dpop, now);
    (Some(id), result)
}

/// The request's one `DPoP` header (RFC 9449 §4.1), if any; several are refused.
fn dpop_header(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    let mut all = headers.get_all("dpop").iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| OAuthError {
            error: "invalid_dpop_proof",
            error_description: "the DPoP header is not text".into(),
            status: 400,
        }),
        (Some(_), Some(_)) => Err(OAuthError {
            error: "invalid_dpop_proof",
            error_description: "send one DPoP header".into(),
            status: 400,
        }),
    }
}

#[derive(serde::Deserialize)]
struct IntrospectForm {
    token: Option<String>,
    #[allow(dead_code)] // RFC 7662 §2.1: a hint the IdP does not need (it issues one kind)
    token_type_hint: Option<String>,
}

/// RFC 7662 introspection, as a resource server would check a token it was handed: a
/// DPoP-bound token needs the caller's DPoP proof for this request. An inactive answer says
/// why; it is counted and audited like any refusal.
async fn introspect(
    State(edge): State<Edge>,
    certificate: Option<axum::Extension<ClientCertificate>>,
    headers: HeaderMap,
    form: Result<Form<IntrospectForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(IntrospectForm {
        token: Some(token), ..
    })) = form
    else {
        return edge
            .oauth_refusal(
                None,
                OAuthError::invalid_request(
                    "send the token to introspect as the form field `token`",
                ),
            )
            .await;
    };
    let dpop = match dpop_header(&headers) {
        Ok(d) => d,
        Err(e) => return edge.oauth_refusal(None, e).await,
    };
    let now = edge.app.engine.clock.now();
    // Over mutual TLS, the connection's certificate is what a certificate-bound token is
    // compared with; a certificate the CA or the registry refuses stands for nothing.
    let answer = match presented(&edge, certificate.as_deref(), None).await {
        Some(Err(why)) => Introspection {
            active: false,
            reason: Some(format!(
                "the connection's client certificate is refused: {why}"
            )),
            claims: None,
        },
        Some(Ok(verified)) => {
            edge.idp
                .introspect_with(&token, dpop, Some(&verified), now.timestamp())
        }
        None => edge.idp.introspect(&token, dpop, now.timestamp()),
    };
    if let Some(why) = &answer.reason {
        edge.app.count_bad_request();
        let key = format!("introspection|{why}");
        if let Some(description) = edge.app.refusal_record_due(&key, why) {
            let record =
                audit::token_refused("(introspection)", "inactive_token", &description, now);
            if let Err(err) = edge.app.engine.store.append_audit(vec![record]).await {
                tracing::error!(error = %err, "could not audit a refused introspection");
            }
        }
    }
    ([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response()
}

/// The proxies whose `X-Forwarded-For` is believed (`--trusted-proxy`), as address ranges.
/// None by default: then the connection's peer is the caller, whatever the header says.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The caller's address. A proxy appends the address it received from to
    /// `X-Forwarded-For`, so only the right end of the list is written by proxies we trust:
    /// from the peer leftwards, every trusted proxy is skipped and the first address that is not
    /// one is the caller (an unreadable entry stops the walk at the hop that passed it on).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut caller = peer;
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) => {
                    caller = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        caller
    }
}

#[cfg(test)]
mod proxies {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    /// Without a trusted proxy the header is ignored: anyone could write it.
    #[test]
    fn the_peer_is_the_caller_unless_it_is_a_trusted_proxy() {
        let forged = headers(&["198.51.100.7"]);
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("127.0.0.1"), &forged), ip("127.0.0.1"));
        let local = trusted(&["127.0.0.1/32"]);
        assert_eq!(local.client_ip(ip("10.0.0.9"), &forged), ip("10.0.0.9"));
        assert_eq!(
            local.client_ip(ip("127.0.0.1"), &forged),
            ip("198.51.100.7")
        );
        assert_eq!(
            local.client_ip(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    /// The client writes the left of the list and each proxy appends: the caller is the first
    /// address from the right that is not a trusted proxy, never a hop the client wrote.
    #[test]
    fn the_header_is_read_from_the_right() {
        let proxies = trusted(&["127.0.0.1/32", "10.0.0.0/8"]);
        // The client claims 203.0.113.1; the proxy saw it come from 198.51.100.7.
        let h = headers(&["203.0.113.1, 198.51.100.7"]);
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // Two proxies in a row, the list spread over two header lines.
        let h = headers(&["203.0.113.1, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // Every hop a trusted proxy: the leftmost is as far as we know.
        let h = headers(&["10.9.9.9, 10.1.2.3"]);
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), &h), ip("10.9.9.9"));
        // An unreadable hop stops the walk at the proxy that passed it on.
        let h = headers(&["198.51.100.7, not-an-ip, 10.1.2.3"]);
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), &h), ip("10.1.2.3"));
    }
}
