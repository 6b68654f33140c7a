//! Steward's HTTP surface, defined once: the route table ([`routes`]), one handler per
//! operation (`operations`), the errors they answer with, and how admin callers are
//! authenticated. The local server mounts [`router`] with axum; the `api` Lambda function
//! serves the same router through `lambda_http`; the CLI calls it through [`client`].

pub mod auth;
pub mod client;
mod error;
mod operations;
pub mod roles;
pub mod routes;

pub use auth::{
    AdminToken, Authenticate, BearerTokens, Caller, Credential, Principal, Unauthenticated, bearer,
    person_caller, personal_caller,
};
pub use error::{ApiError, Body, Named, Params};

use crate::engine::Engine;
use crate::inbound::ssf::SsfReceiver;
use crate::secret::Secret;
use crate::slack::SlackEdge;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use routes::{Access, ROUTES, Route};
use statemachines::Actor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest admin request body read (agent requests are a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Larger than any Okta delivery; the hook refuses (413) above its own limit.
const OKTA_HOOK_BODY_BYTES: usize = 1024 * 1024;
/// Shared Signals pushes; the receiver refuses (RFC 8935 error JSON) above its own 64 KiB.
const SSF_BODY_BYTES: usize = 128 * 1024;

/// What only the embedded default can show: the console channel's notices.
pub trait LocalViews: Send + Sync {
    /// The notices the console channel recorded (approval requests, reminders, outcomes).
    fn notifications(&self) -> Result<serde_json::Value, String>;
}

/// What a deployment hands the router: the engine and each edge it has configured.
pub struct AppParts {
    pub engine: Arc<Engine>,
    pub auth: Arc<dyn Authenticate>,
    /// People's personal API tokens.
    pub tokens: Arc<dyn crate::ports::PersonalTokens>,
    /// Slack's interactivity requests are verified with its signing secret.
    pub slack: Option<SlackEdge>,
    /// The Authorization value Okta's event hook sends.
    pub okta_hook_secret: Option<Secret>,
    /// The Shared Signals transmitter whose pushes are received.
    pub ssf: Option<Arc<SsfReceiver>>,
    /// Only on the embedded default.
    pub local: Option<Arc<dyn LocalViews>>,
    /// The dashboard's pages, when people sign in through a browser (`crate::dashboard`).
    pub dashboard: Option<Arc<crate::dashboard::Dashboard>>,
}

/// The router's state: cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

pub struct AppInner {
    pub parts: AppParts,
    bad_requests: AtomicU64,
    /// Which unauthenticated refusals were recorded lately (see [`App::refusal_record_due`]).
    refusal_windows: std::sync::Mutex<RefusalWindow>,
}

pub use crate::audit::refusals::{REFUSAL_RECORDS, REFUSAL_WINDOW, RefusalWindow};

impl std::ops::Deref for App {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0.parts
    }
}

impl App {
    pub fn new(parts: AppParts) -> Self {
        App(Arc::new(AppInner {
            parts,
            bad_requests: AtomicU64::new(0),
            refusal_windows: Default::default(),
        }))
    }

    /// Requests refused as malformed or unauthenticated since start.
    pub fn bad_requests(&self) -> u64 {
        self.0.bad_requests.load(Ordering::Relaxed)
    }

    /// Counts a refused request that its own edge audits (the dev IdP's token endpoint).
    pub fn count_bad_request(&self) {
        self.0.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A refused request from an unknown sender: counted and logged; audited (never with the
    /// body) unless the same refusal was recorded within [`REFUSAL_WINDOW`] or the window's
    /// budget of records is spent, the next record saying how many went unrecorded.
    pub async fn refuse(&self, what: &str, why: &str) {
        match self.refusal_record_due(&format!("{what}|{why}"), why) {
            Some(why) => self.refuse_by(what, &Actor::System, &why).await,
            None => {
                self.0.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(what, why, "request refused (counted, not recorded again)");
            }
        }
    }

    /// Whether an unauthenticated refusal (`key`: what was refused and why) is recorded now,
    /// and then the reason its record gives (`why`, with how many like it went unrecorded
    /// since its last record); `None`: only counted. Each refusal is recorded at most once per
    /// [`REFUSAL_WINDOW`], and at most [`REFUSAL_RECORDS`] records are written per window in
    /// all.
    pub fn refusal_record_due(&self, key: &str, why: &str) -> Option<String> {
        self.0
            .refusal_windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_due(key, why)
    }

    /// A refused request whose sender is known (a signed-in person's dashboard form).
    pub async fn refuse_by(&self, what: &str, actor: &Actor, why: &str) {
        self.0.bad_requests.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(what, why, "request refused");
        let record = crate::audit::refusal(what, actor, None, None, why, self.engine.clock.now());
        if let Err(e) = self.engine.store.append_audit(vec![record]).await {
            tracing::error!(error = %e, "could not audit a refused request");
        }
    }
}

/// Every route of [`ROUTES`], each with its handler; admin routes behind `auth` and the role
/// table.
pub fn router(app: App) -> Router {
    let mut admin = Router::new();
    let mut public = Router::new();
    for route in ROUTES {
        let handler = operations::handler(route);
        match route.access {
            Access::Admin => {
                let checked = handler.route_layer(axum::middleware::from_fn_with_state(
                    (app.clone(), *route),
                    roles::authorize,
                ));
                admin = admin.route(route.path, checked)
            }
            Access::Public => public = public.route(route.path, handler),
        }
    }
    let admin = admin.route_layer(axum::middleware::from_fn_with_state(
        app.clone(),
        authenticate,
    ));
    let api = public
        .merge(admin)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app.clone());
    if app.dashboard.is_none() {
        return api;
    }
    api.clone().merge(crate::dashboard::router(app, api))
}

/// A path no route has: a JSON 404 like every other error, counted and audited (probes show).
async fn no_route(
    State(app): State<App>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    let why = format!("no route {method} {}", uri.path());
    app.refuse("HTTP request", &why).await;
    ApiError::not_found(why)
}

fn body_limit(route: &Route) -> Option<usize> {
    match route.op {
        routes::Op::OktaHookDelivery | routes::Op::OktaHookVerification => {
            Some(OKTA_HOOK_BODY_BYTES)
        }
        routes::Op::SharedSignals => Some(SSF_BODY_BYTES),
        _ => None,
    }
}

/// Where a request comes from, as the audit trail says: a dashboard action is marked so in
/// process; the CLI names itself in its user agent; everything else is the API.
pub fn source_of(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
) -> &'static str {
    if extensions
        .get::<crate::dashboard::DashboardCall>()
        .is_some()
    {
        return "dashboard";
    }
    let agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if agent.starts_with(client::USER_AGENT_PREFIX) {
        "cli"
    } else {
        "api"
    }
}

impl App {
    /// A call the role table refused: counted, logged and audited with the principal.
    pub async fn refuse_call(&self, route: &Route, caller: &Caller, source: &str, why: &str) {
        self.refuse_answered(
            route,
            caller,
            source,
            axum::http::StatusCode::FORBIDDEN,
            why,
        )
        .await
    }

    /// A refused call (the role table's 403, or a handler's 4xx after the role table allowed
    /// it): counted, logged and audited with the principal, the status and the reason.
    pub async fn refuse_answered(
        &self,
        route: &Route,
        caller: &Caller,
        source: &str,
        status: axum::http::StatusCode,
        why: &str,
    ) {
        self.0.bad_requests.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(principal = %caller.principal, route = %route.name(), status = status.as_u16(), why, "call refused");
        let record = crate::audit::call(
            (&caller.principal).into(),
            source,
            &route.name(),
            status.as_u16(),
            Some(why),
            self.engine.clock.now(),
        );
        if let Err(e) = self.engine.store.append_audit(vec![record]).await {
            tracing::error!(error = %e, "could not audit a refused call");
        }
    }

    /// A change a principal asked for, and how it was answered.
    pub async fn audit_call(
        &self,
        route: &Route,
        caller: &Caller,
        source: &str,
        status: axum::http::StatusCode,
    ) {
        let record = crate::audit::call(
            (&caller.principal).into(),
            source,
            &route.name(),
            status.as_u16(),
            None,
            self.engine.clock.now(),
        );
        if let Err(e) = self.engine.store.append_audit(vec![record]).await {
            tracing::error!(error = %e, "could not audit a call");
        }
    }
}

/// Establishes the caller of an admin route, or refuses (counted and audited).
async fn authenticate(State(app): State<App>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    // A dashboard action: the dashboard checked the session, its anti-forgery token and the
    // origin, and names the person (an in-process extension; no network request carries one).
    if let Some(crate::dashboard::DashboardCall(caller)) = parts
        .extensions
        .get::<crate::dashboard::DashboardCall>()
        .cloned()
    {
        tracing::info!(principal = %caller.principal, method = %parts.method, path = %parts.uri.path(), "dashboard action");
        parts.extensions.insert(caller);
        return next.run(Request::from_parts(parts, body)).await;
    }
    match app.auth.authenticate(&parts).await {
        Ok(caller) => {
            tracing::info!(principal = %caller.principal, method = %parts.method, path = %parts.uri.path(), "admin API call");
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(no) => {
            let what = format!("admin API call {} {}", parts.method, parts.uri.path());
            app.refuse(&what, &no.why).await;
            ApiError::new(no.status, format!("{}: {}", no.why, no.hint)).into_response()
        }
    }
}
