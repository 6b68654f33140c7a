//! The all-in-one local server: admin API, the dev IdP's token endpoint, health, and the worker
//! and timer tick in-process. Binds 127.0.0.1 by default; the admin API needs the bearer token
//! stored (0600) in the data directory.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::admin::{
    AgentRequestBody, CampaignBody, CancelBody, ClaimBody, DecisionBody, DecommissionBody,
    FreezeBody, OwnerBody, ReleaseBody, RenewBody, ReviewAnswerBody, RotateBody, ScopeChangeBody,
};
use shared::embedded::Embedded;
use shared::embedded::vault::write_private;
use shared::engine::EngineError;
use shared::ports::Queue;
use shared::signal::Signal;
use shared::{Engine, audit};
use statemachines::rotation::RotationReason;
use statemachines::{Actor, Decision};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Largest request body the API reads (agent requests are a few hundred bytes).
const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct AppState {
    pub stack: Embedded,
    admin_token: String,
    bad_requests: AtomicU64,
}

type Shared = Arc<AppState>;

/// Reads the admin token from `<data>/admin-token`, creating it (0600) on first start.
pub fn admin_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-token");
    if path.exists() {
        return Ok(std::fs::read_to_string(&path)?.trim().to_string());
    }
    let token = format!(
        "stw_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    write_private(&path, token.as_bytes())?;
    Ok(token)
}

pub fn router(state: Shared) -> Router {
    let admin = Router::new()
        .route("/agents", get(list_agents).post(request_agent))
        .route("/agents/{agent}", get(show_agent))
        .route("/agents/{agent}/history", get(agent_history))
        .route("/agents/{agent}/scopes", post(change_scopes))
        .route("/agents/{agent}/owner", post(reassign_owner))
        .route("/agents/{agent}/rotate", post(rotate))
        .route("/agents/{agent}/decommission", post(decommission))
        .route("/agents/{agent}/renew", post(renew))
        .route("/agents/{agent}/freeze", post(freeze))
        .route("/agents/{agent}/unfreeze", post(unfreeze))
        .route("/shadow-agents", get(list_shadow_agents))
        .route("/shadow-agents/{client}/claim", post(claim_shadow))
        .route("/shadow-agents/{client}/release", post(release_shadow))
        .route("/discovery", post(discover))
        .route("/sweep", post(sweep))
        .route("/campaigns", get(list_campaigns).post(launch_campaign))
        .route("/campaigns/{id}", get(campaign_progress))
        .route("/campaigns/{id}/report", get(campaign_report))
        .route("/reviews/{item}/decision", post(answer_review))
        .route("/workflows/{id}", get(show_workflow))
        .route("/workflows/{id}/cancel", post(cancel_workflow))
        .route("/approvals", get(list_approvals))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/deny", post(deny))
        .route("/audit", get(export_audit))
        .route("/notifications", get(notifications))
        .route("/dead-letters", get(dead_letters))
        .route("/idp/clients", get(idp_clients))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth2/v1/token", post(token))
        .route("/oauth2/v1/keys", get(jwks))
        .route("/slack/interactions", post(slack_interactions))
        // Larger than any Okta delivery; the handler refuses (413) above its own limit.
        .route(
            "/hooks/okta",
            get(okta_hook)
                .post(okta_hook)
                .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024)),
        )
        // RFC 8935 pushes; the receiver refuses (RFC error JSON) above its own 64 KiB limit.
        .route(
            "/ssf/events",
            post(ssf_events).layer(axum::extract::DefaultBodyLimit::max(128 * 1024)),
        )
        .nest("/api", admin)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// How often the server's background jobs run, every job on.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// Due timers become events.
    pub tick: Duration,
    /// The Okta System Log is read (when Okta is configured).
    pub okta_log: Duration,
    /// The rotation and expiry sweep runs.
    pub sweep: Duration,
}

/// How often the server's background jobs run; `None` turns a periodic job off. The timer
/// tick cannot be off: nothing due would ever happen.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub tick: Duration,
    /// `None`: the Okta System Log is not read.
    pub okta_log: Option<Duration>,
    /// `None`: the sweep runs only when asked (`POST /api/sweep`).
    pub sweep: Option<Duration>,
}

impl From<Intervals> for Schedule {
    fn from(i: Intervals) -> Self {
        Schedule {
            tick: i.tick,
            okta_log: Some(i.okta_log),
            sweep: Some(i.sweep),
        }
    }
}

/// A background job of the server: runs as long as the server does.
type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts the server on `listener` with the worker, the tick, the sweep and (with Okta) the
/// System Log poller; returns when `shutdown` fires, or with an error when a job stops.
pub async fn serve(
    stack: Embedded,
    listener: tokio::net::TcpListener,
    every: impl Into<Schedule>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let every = every.into();
    let admin_token = admin_token(&stack.data_dir)?;
    let state = Arc::new(AppState {
        stack,
        admin_token,
        bad_requests: AtomicU64::new(0),
    });
    let engine = &state.stack.engine;
    let mut jobs: Vec<(&'static str, Job)> = vec![
        ("worker", Box::pin(work(state.clone()))),
        ("timer tick", Box::pin(ticks(engine.clone(), every.tick))),
    ];
    if let Some(period) = every.sweep {
        jobs.push(("sweep", Box::pin(sweeps(engine.clone(), period))));
    }
    if let (Some(okta), Some(period)) = (state.stack.okta.clone(), every.okta_log) {
        jobs.push((
            "Okta System Log poller",
            Box::pin(poll_okta_log(engine.clone(), okta, period)),
        ));
    }
    let app = router(state.clone());
    // The peer address: the source IP detection rules compare with an agent's baseline.
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown);
    supervise(async { server.await.map_err(Into::into) }, jobs).await
}

/// Runs `jobs` beside `server` until `server` returns, then stops them. The jobs loop forever,
/// so one that ends has panicked or returned: the server is dropped and the error names the
/// job, rather than the server answering on without it.
async fn supervise(
    server: impl std::future::Future<Output = anyhow::Result<()>>,
    jobs: Vec<(&'static str, Job)>,
) -> anyhow::Result<()> {
    let mut running = tokio::task::JoinSet::new();
    let mut names = std::collections::HashMap::new();
    for (name, job) in jobs {
        names.insert(running.spawn(job).id(), name);
    }
    let outcome = tokio::select! {
        result = server => result,
        Some(ended) = running.join_next_with_id() => {
            let (id, why) = match ended {
                Ok((id, ())) => (id, "returned".to_string()),
                Err(e) if e.is_panic() => (e.id(), format!("panicked: {}", panic_text(e))),
                Err(e) => (e.id(), "was cancelled".to_string()),
            };
            let name = names.get(&id).copied().unwrap_or("background");
            tracing::error!(task = name, why = %why, "a background task stopped; stopping the server");
            Err(anyhow::anyhow!(
                "the {name} task {why}; the server cannot run without it and stopped"
            ))
        }
    };
    running.shutdown().await;
    outcome
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Slack's interactivity requests (signed by Slack, not by the admin token).
async fn slack_interactions(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(slack) = &state.stack.slack else {
        refuse(&state, "Slack interaction", "Slack is not configured on this server (set STEWARD_SLACK_BOT_TOKEN and STEWARD_SLACK_SIGNING_SECRET)").await;
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Slack is not configured on this server"})),
        )
            .into_response();
    };
    reply_response(
        shared::inbound::slack::handle(
            &state.stack.engine,
            &slack.signing_secret,
            Some(&slack.web),
            &headers,
            &body,
        )
        .await,
    )
}

async fn work(state: Shared) {
    let engine = state.stack.engine.clone();
    loop {
        match engine.work_once(32).await {
            Ok(0) => {
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    state.stack.queue.ready.notified(),
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "worker failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Reads the Okta System Log from the saved cursor, then waits. A failed poll is retried at
/// the next interval; the cursor has not moved past anything unapplied.
async fn poll_okta_log(engine: Arc<Engine>, okta: shared::idp::okta::Okta, every: Duration) {
    use shared::inbound::okta_log;
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match okta_log::poll(&engine, &okta, okta_log::PAGE_SIZE, 50).await {
            Ok(p) if p.accepted.new > 0 => {
                tracing::info!(
                    new = p.accepted.new,
                    pages = p.pages,
                    "Okta System Log read"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the Okta System Log failed; retrying later")
            }
        }
    }
}

/// Okta event hooks: the one-time verification GET and the deliveries (checked against the
/// hook's Authorization value, not the admin token).
async fn okta_hook(
    State(state): State<Shared>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(secret) = &state.stack.okta_hook_secret else {
        refuse(
            &state,
            "Okta event hook request",
            "the Okta event hook is not configured on this server (set STEWARD_OKTA_HOOK_SECRET)",
        )
        .await;
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "the Okta event hook is not configured on this server"})),
        )
            .into_response();
    };
    let reply = shared::inbound::okta_hook::handle(
        &state.stack.engine,
        secret,
        method.as_str(),
        &headers,
        &body,
    )
    .await;
    reply_response(reply)
}

/// Shared Signals pushes (RFC 8935), verified against the transmitter's keys.
async fn ssf_events(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(receiver) = &state.stack.ssf else {
        refuse(&state, "Shared Signals SET", "no Shared Signals transmitter is configured on this server (set STEWARD_SSF_ISSUER, STEWARD_SSF_AUDIENCE and STEWARD_SSF_JWKS_URL)").await;
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"err": "invalid_request", "description": "no Shared Signals transmitter is configured on this server"})),
        )
            .into_response();
    };
    reply_response(
        shared::inbound::ssf::handle(&state.stack.engine, receiver, &headers, &body).await,
    )
}

fn reply_response(reply: Result<shared::inbound::Reply, EngineError>) -> Response {
    match reply {
        Ok(reply) => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
            match reply.body {
                Some(b) => (status, Json(b)).into_response(),
                None => status.into_response(),
            }
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn ticks(engine: Arc<Engine>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        if let Err(e) = engine.tick().await {
            tracing::error!(error = %e, "timer tick failed");
        }
    }
}

/// The rotation and expiry sweep; the first one runs at start-up.
async fn sweeps(engine: Arc<Engine>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = engine.sweep().await {
            tracing::error!(error = %e, "sweep failed; it runs again at the next interval");
        }
    }
}

// ---------- errors ----------

pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Rejected(r) => ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": "request refused", "reasons": r.reasons}),
            ),
            EngineError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, json!({"error": m})),
            EngineError::Conflict(m) => ApiError(StatusCode::CONFLICT, json!({"error": m})),
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": other.to_string()}),
                )
            }
        }
    }
}

impl From<shared::ports::store::StoreError> for ApiError {
    fn from(e: shared::ports::store::StoreError) -> Self {
        EngineError::from(e).into()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Malformed bodies get a 400 that says what was wrong; they are counted and audited.
async fn body<T>(
    state: &AppState,
    what: &str,
    payload: Result<Json<T>, JsonRejection>,
) -> Result<T, ApiError> {
    match payload {
        Ok(Json(v)) => Ok(v),
        Err(rejection) => {
            let why = rejection.body_text();
            refuse(state, what, &why).await;
            Err(ApiError(
                rejection.status(),
                json!({"error": format!("malformed {what}: {why}")}),
            ))
        }
    }
}

async fn refuse(state: &AppState, what: &str, why: &str) {
    state.bad_requests.fetch_add(1, Ordering::Relaxed);
    let record = audit::refusal(
        what,
        &Actor::System,
        None,
        None,
        why,
        state.stack.engine.clock.now(),
    );
    if let Err(e) = state.stack.engine.store.append_audit(vec![record]).await {
        tracing::error!(error = %e, "could not audit a refused request");
    }
}

async fn require_admin(
    State(state): State<Shared>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok: bool = presented
        .as_bytes()
        .ct_eq(state.admin_token.as_bytes())
        .into();
    if !ok {
        let why = if presented.is_empty() {
            "missing bearer token"
        } else {
            "wrong bearer token"
        };
        refuse(
            &state,
            &format!("admin API call {} {}", req.method(), req.uri().path()),
            why,
        )
        .await;
        return ApiError(
            StatusCode::UNAUTHORIZED,
            json!({"error": format!("{why}: send `Authorization: Bearer <token>` with the token from <data-dir>/admin-token")}),
        )
        .into_response();
    }
    next.run(req).await
}

// ---------- public ----------

async fn health(State(state): State<Shared>) -> ApiResult {
    let q = &state.stack.queue;
    let depth = q.depth().await.map_err(EngineError::from)?;
    let dead = q.dead_letters(1000).await.map_err(EngineError::from)?.len();
    Ok(Json(json!({"status": "ok", "queue_depth": depth, "dead_letters": dead, "bad_requests": state.bad_requests.load(Ordering::Relaxed)})).into_response())
}

async fn metadata(State(state): State<Shared>) -> Json<Value> {
    Json(state.stack.idp.metadata())
}

async fn jwks(State(state): State<Shared>) -> Json<Value> {
    Json(state.stack.idp.jwks())
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// RFC 6749 §4.4 token endpoint; client_secret_basic or client_secret_post. Every refusal is
/// counted and audited (client id only, never the secret).
async fn token(
    State(state): State<Shared>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = state.stack.engine.clock.now();
    let requested = form
        .as_ref()
        .ok()
        .and_then(|f| f.scope.clone())
        .unwrap_or_default();
    let (client_id, result) = grant(&state, &headers, form, now);
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
                ip: Some(source_ip(peer, &headers)),
                grant_type: Some("client_credentials".into()),
                requested: if requested.trim().is_empty() {
                    words(&granted)
                } else {
                    words(&requested)
                },
                granted: words(&granted),
                success,
                reason,
            };
            let received = shared::intake::Received {
                source: "dev-idp",
                event_id: audit::random_id("grant"),
                event_type: "token.grant".into(),
                subject: id.clone(),
                published: Some(now),
                signal: Some(signal),
            };
            if let Err(e) = shared::intake::accept(&state.stack.engine, vec![received]).await {
                tracing::error!(error = %e, "could not record a token request for detection");
            }
        }
    }
    match result {
        Ok(t) => {
            let mut resp = Json(t).into_response();
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(e) => {
            state.bad_requests.fetch_add(1, Ordering::Relaxed);
            let record = audit::token_refused(
                client_id.as_deref().unwrap_or("(none)"),
                e.error,
                &e.error_description,
                now,
            );
            if let Err(err) = state.stack.engine.store.append_audit(vec![record]).await {
                tracing::error!(error = %err, "could not audit a refused token request");
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
    }
}

/// Parses and checks a client_credentials request; returns the client id it named, if any.
fn grant(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
    now: chrono::DateTime<chrono::Utc>,
) -> (
    Option<String>,
    Result<shared::idp::dev::TokenResponse, shared::idp::dev::OAuthError>,
) {
    use shared::idp::dev::OAuthError;
    let Ok(Form(form)) = form else {
        return (
            None,
            Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            )),
        );
    };
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(i, p)| (url_decode(i), url_decode(p)))
        });
    let (id, secret) = match (basic, form.client_id, form.client_secret) {
        (Some(pair), _, _) => pair,
        (None, Some(i), Some(s)) => (i, s),
        (None, id, _) => {
            return (
                id,
                Err(OAuthError {
                    error: "invalid_client",
                    error_description: "client authentication is required".into(),
                    status: 401,
                }),
            );
        }
    };
    if form.grant_type.as_deref() != Some("client_credentials") {
        return (
            Some(id),
            Err(OAuthError::unsupported_grant_type(
                "only grant_type=client_credentials is supported",
            )),
        );
    }
    let result = state
        .stack
        .idp
        .issue_token(&id, &secret, form.scope.as_deref(), now);
    (Some(id), result)
}

/// The caller's IP: the peer, or the first `X-Forwarded-For` hop when the peer is a proxy on
/// this host (a loopback peer).
fn source_ip(peer: std::net::SocketAddr, headers: &HeaderMap) -> String {
    if peer.ip().is_loopback()
        && let Some(first) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
    {
        return first.to_string();
    }
    peer.ip().to_string()
}

/// RFC 6749 §2.3.1: client credentials in Basic auth are form-urlencoded first.
fn url_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------- admin ----------

async fn request_agent(
    State(state): State<Shared>,
    payload: Result<Json<AgentRequestBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "agent request", payload).await?;
    let requester = b.requester.unwrap_or_else(|| b.request.owner.clone());
    let started = state
        .stack
        .engine
        .request_agent(b.request, &requester)
        .await?;
    Ok(started_response(started))
}

/// 202 for a new workflow, 200 when the identical request was already received.
fn started_response(started: shared::engine::Started) -> Response {
    let status = if started.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(started)).into_response()
}

async fn list_agents(State(state): State<Shared>) -> ApiResult {
    Ok(Json(state.stack.engine.store.agents().await?).into_response())
}

async fn find(state: &AppState, agent: &str) -> Result<statemachines::Agent, ApiError> {
    state.stack.engine.find_agent(agent).await?.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no agent with id or name `{agent}`")}),
        )
    })
}

async fn show_agent(State(state): State<Shared>, Path(agent): Path<String>) -> ApiResult {
    let a = find(&state, &agent).await?;
    let workflows: Vec<Value> = state
        .stack
        .engine
        .store
        .instances_for_agent(&a.id)
        .await?
        .into_iter()
        .map(|i| json!({"id": i.id, "kind": i.kind, "state": i.state_name, "terminal": i.terminal, "pending_commands": i.pending.len(), "updated_at": i.updated_at}))
        .collect();
    Ok(Json(json!({"agent": a, "workflows": workflows})).into_response())
}

async fn agent_history(State(state): State<Shared>, Path(agent): Path<String>) -> ApiResult {
    let a = find(&state, &agent).await?;
    let store = &state.stack.engine.store;
    let mut out = Vec::new();
    for i in store.instances_for_agent(&a.id).await? {
        for h in store.history(&i.id).await? {
            out.push(json!({"workflow_id": i.id, "kind": i.kind, "entry": h}));
        }
    }
    out.sort_by(|x, y| x["entry"]["at"].as_str().cmp(&y["entry"]["at"].as_str()));
    Ok(Json(out).into_response())
}

async fn change_scopes(
    State(state): State<Shared>,
    Path(agent): Path<String>,
    payload: Result<Json<ScopeChangeBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "scope change", payload).await?;
    let started = state
        .stack
        .engine
        .request_scope_change(&agent, b.request, &b.requester)
        .await?;
    Ok(started_response(started))
}

async fn show_workflow(State(state): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let store = &state.stack.engine.store;
    let Some(i) = store.instance(&id).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no workflow `{id}`")}),
        ));
    };
    let history = store.history(&id).await?;
    Ok(Json(json!({"workflow": i, "history": history})).into_response())
}

async fn reassign_owner(
    State(state): State<Shared>,
    Path(agent): Path<String>,
    payload: Result<Json<OwnerBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "owner reassignment", payload).await?;
    let workflow_id = state
        .stack
        .engine
        .reassign_owner(&agent, &b.owner, &b.by)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"workflow_id": workflow_id, "owner": b.owner, "status": "owner assignment queued"})),
    )
        .into_response())
}

async fn rotate(
    State(state): State<Shared>,
    Path(agent): Path<String>,
    payload: Result<Json<RotateBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "rotation request", payload).await?;
    let s = state
        .stack
        .engine
        .request_rotation(
            &agent,
            RotationReason::OnDemand { by: b.by.clone() },
            Actor::Person(b.by),
        )
        .await?;
    Ok(started_response(s))
}

async fn freeze(
    State(state): State<Shared>,
    Path(agent): Path<String>,
    payload: Result<Json<FreezeBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "freeze request", payload).await?;
    let d = state
        .stack
        .engine
        .freeze_now(&agent, &b.by, &b.reason)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!(d))).into_response())
}

async fn unfreeze(
    State(state): State<Shared>,
    Path(agent): Path<String>,
    payload: Result<Json<FreezeBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "unfreeze request", payload).await?;
    let s = state
        .stack
        .engine
        .request_unfreeze(&agent, &b.by, &b.reason)
        .await?;
    Ok(started_response(s))
}

async fn list_shadow_agents(State(state): State<Shared>) -> ApiResult {
    let agents = state.stack.engine.shadow_agents().await?;
    Ok(Json(json!(agents)).into_response())
}

async fn claim_shadow(
    State(state): State<Shared>,
    Path(client): Path<String>,
    payload: Result<Json<ClaimBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "shadow claim", payload).await?;
    let s = state
        .stack
        .engine
        .claim_shadow(&client, b.claim, &b.by)
        .await?;
    Ok(started_response(s))
}

async fn release_shadow(
    State(state): State<Shared>,
    Path(client): Path<String>,
    payload: Result<Json<ReleaseBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "shadow release", payload).await?;
    let id = state
        .stack
        .engine
        .release_shadow(&client, &b.by, &b.reason)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"workflow_id": id}))).into_response())
}

async fn discover(State(state): State<Shared>) -> ApiResult {
    let r = state.stack.engine.discover().await?;
    Ok(Json(json!(r)).into_response())
}

async fn decommission(
    State(state): State<Shared>,
    Path(agent): Path<String>,
    payload: Result<Json<DecommissionBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "decommission request", payload).await?;
    let s = state
        .stack
        .engine
        .request_decommission(&agent, &b.by, &b.reason)
        .await?;
    Ok(started_response(s))
}

async fn renew(
    State(state): State<Shared>,
    Path(agent): Path<String>,
    payload: Result<Json<RenewBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "renewal request", payload).await?;
    let s = state
        .stack
        .engine
        .request_renewal(&agent, b.until, &b.by, &b.reason)
        .await?;
    Ok(started_response(s))
}

async fn launch_campaign(
    State(state): State<Shared>,
    payload: Result<Json<CampaignBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "campaign launch", payload).await?;
    let s = state
        .stack
        .engine
        .launch_campaign(b.request(), Actor::Person(b.by))
        .await?;
    Ok(started_response(s))
}

async fn list_campaigns(State(state): State<Shared>) -> ApiResult {
    Ok(Json(state.stack.engine.campaigns().await?).into_response())
}

async fn campaign_progress(State(state): State<Shared>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(state.stack.engine.campaign_progress(&id).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct ReportQuery {
    #[serde(default)]
    format: Option<String>,
}

/// The evidence report: `?format=json` (default), `csv` or `md`.
async fn campaign_report(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> ApiResult {
    let report = state.stack.engine.campaign_report(&id).await?;
    let (kind, text) = match q.format.as_deref().unwrap_or("json") {
        "json" => ("application/json", report.to_json()),
        "csv" => ("text/csv; charset=utf-8", report.to_csv()),
        "md" | "markdown" => ("text/markdown; charset=utf-8", report.to_markdown()),
        other => {
            let why = format!("report format `{other}` is not one of json, csv, md");
            refuse(&state, "campaign report", &why).await;
            return Ok((StatusCode::BAD_REQUEST, Json(json!({"error": why}))).into_response());
        }
    };
    Ok(([(header::CONTENT_TYPE, kind)], text).into_response())
}

async fn answer_review(
    State(state): State<Shared>,
    Path(item): Path<String>,
    payload: Result<Json<ReviewAnswerBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "review decision", payload).await?;
    let decision = match b.decision() {
        Ok(d) => d,
        Err(why) => {
            refuse(&state, "review decision", &why).await;
            return Ok((StatusCode::BAD_REQUEST, Json(json!({"error": why}))).into_response());
        }
    };
    state
        .stack
        .engine
        .decide_review(&item, &b.by, decision, b.reason.clone())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"item": item, "decision": b.decision, "by": b.by})),
    )
        .into_response())
}

async fn sweep(State(state): State<Shared>) -> ApiResult {
    Ok(Json(state.stack.engine.sweep().await?).into_response())
}

async fn cancel_workflow(
    State(state): State<Shared>,
    Path(id): Path<String>,
    payload: Result<Json<CancelBody>, JsonRejection>,
) -> ApiResult {
    let b = body(&state, "cancel request", payload).await?;
    state.stack.engine.cancel(&id, &b.by, &b.reason).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"workflow_id": id, "status": "cancel requested"})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ApprovalsQuery {
    #[serde(default)]
    all: bool,
}

async fn list_approvals(State(state): State<Shared>, Query(q): Query<ApprovalsQuery>) -> ApiResult {
    let records = state.stack.engine.store.approvals(!q.all).await?;
    let out: Vec<Value> = records.into_iter().map(|r| json!({"status": r.status(), "action_hash": r.action_hash, "request": r.request, "outcome": r.outcome})).collect();
    Ok(Json(out).into_response())
}

async fn approve(
    State(state): State<Shared>,
    Path(id): Path<String>,
    payload: Result<Json<DecisionBody>, JsonRejection>,
) -> ApiResult {
    decide(state, id, payload, Decision::Approve).await
}

async fn deny(
    State(state): State<Shared>,
    Path(id): Path<String>,
    payload: Result<Json<DecisionBody>, JsonRejection>,
) -> ApiResult {
    decide(state, id, payload, Decision::Deny).await
}

async fn decide(
    state: Shared,
    id: String,
    payload: Result<Json<DecisionBody>, JsonRejection>,
    decision: Decision,
) -> ApiResult {
    let b = body(&state, "approval decision", payload).await?;
    let record = state
        .stack
        .engine
        .decide(
            &id,
            &b.approver,
            decision,
            b.reason,
            b.action_hash.as_deref(),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"approval_id": id, "workflow_id": record.request.workflow_id, "decision": decision, "status": "decision queued: the workflow applies it and records the outcome"}))).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn export_audit(State(state): State<Shared>, Query(q): Query<AuditQuery>) -> ApiResult {
    let rows = state
        .stack
        .engine
        .store
        .audit(q.after, q.limit.unwrap_or(10_000))
        .await?;
    let mut text = String::new();
    for r in &rows {
        text.push_str(&audit::export_line(r));
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response())
}

async fn notifications(State(state): State<Shared>) -> ApiResult {
    let n = state.stack.approvals.notices().map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        )
    })?;
    Ok(Json(n).into_response())
}

async fn dead_letters(State(state): State<Shared>) -> ApiResult {
    Ok(Json(
        state
            .stack
            .queue
            .dead_letters(1000)
            .await
            .map_err(EngineError::from)?,
    )
    .into_response())
}

/// The development IdP's clients (what the identity provider holds, as opposed to the registry).
/// The development IdP's clients, each with the ids of the secrets it holds (never values).
async fn idp_clients(State(state): State<Shared>) -> ApiResult {
    use shared::ports::IdentityProvider;
    let unavailable = |e: shared::ports::idp::IdpError| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        )
    };
    let idp = &state.stack.idp;
    let mut out = Vec::new();
    for c in idp.list_clients().await.map_err(unavailable)? {
        let secrets = idp.secret_ids(&c.client_id).await.map_err(unavailable)?;
        let mut v = json!(c);
        v["secret_ids"] = json!(secrets);
        out.push(v);
    }
    Ok(Json(out).into_response())
}

pub fn bound(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forever() -> Job {
        Box::pin(std::future::pending())
    }

    #[tokio::test]
    async fn a_panicking_job_stops_the_server_with_its_name() {
        let jobs: Vec<(&'static str, Job)> = vec![
            ("worker", forever()),
            (
                "sweep",
                Box::pin(async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    panic!("`period` must be non-zero.");
                }),
            ),
        ];
        let server = std::future::pending::<anyhow::Result<()>>();
        let e = tokio::time::timeout(Duration::from_secs(10), supervise(server, jobs))
            .await
            .expect("supervise returns when a job dies")
            .expect_err("a dead job is an error");
        assert_eq!(
            e.to_string(),
            "the sweep task panicked: `period` must be non-zero.; the server cannot run without it and stopped"
        );
    }

    #[tokio::test]
    async fn a_job_that_returns_stops_the_server() {
        let jobs: Vec<(&'static str, Job)> =
            vec![("worker", forever()), ("timer tick", Box::pin(async {}))];
        let server = std::future::pending::<anyhow::Result<()>>();
        let e = supervise(server, jobs).await.expect_err("a job returned");
        assert!(
            e.to_string().starts_with("the timer tick task returned;"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_server_returning_stops_the_jobs() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        // The job holds the sender: receiving fails once the job is dropped (aborted).
        let job: Job = Box::pin(async move {
            let _guard = dropped_tx;
            std::future::pending::<()>().await
        });
        let server = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        };
        supervise(server, vec![("worker", job)]).await.unwrap();
        assert!(dropped_rx.await.is_err(), "the job was dropped");
        // No jobs at all (everything off): the server alone decides.
        supervise(async { Ok(()) }, vec![]).await.unwrap();
    }
}
