//! The governance dashboard: server-rendered pages for the people who sign in with the
//! organisation's OpenID Connect issuer (the dev IdP on the embedded default), served by the
//! same router as the admin API, locally and in the `api` Lambda function.
//!
//! A page reads through the engine after the same role check the API's read makes. An action
//! (approve, deny, …) is not a second implementation: after the session, the anti-forgery token
//! and the origin are checked, the form becomes a call to the admin API's own route, run in
//! process with the signed-in person as its caller ([`DashboardCall`]), so the role table, the
//! engine's rules and the audit record (source `dashboard`) are the API's.
//! docs/adr/0027-dashboard.md says why.

mod pages;
pub mod session;
mod sign_in;

use crate::http::App;
use crate::ports::Sessions;
use crate::sign_in::PersonTokens;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;

pub use session::DashboardCall;

/// The public client the dashboard signs people in as (PKCE, no secret).
pub const CLIENT_ID: &str = "steward-dashboard";
/// Where the issuer sends the browser back with the authorization code.
pub const CALLBACK_PATH: &str = "/auth/callback";
/// Largest form read (a reason of 500 characters and three tokens).
const FORM_BYTES: usize = 16 * 1024;
/// Deadline of each call to the issuer (discovery, token exchange).
const ISSUER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the dashboard needs besides the engine: where it is reached, who signs people in, and
/// where sessions are kept.
pub struct Dashboard {
    /// The dashboard's origin as browsers reach it (`https://steward.example.com`, or
    /// `http://127.0.0.1:8080` locally): the redirect URI and the origin every form must come
    /// from.
    pub public_url: String,
    /// The people's issuer and the verifier of its tokens (the API's own).
    pub people: Arc<PersonTokens>,
    /// The client id registered at the issuer for the dashboard.
    pub client_id: String,
    pub sessions: Arc<dyn Sessions>,
    http: reqwest::Client,
    /// The issuer's authorization and token endpoints, read from its discovery document once.
    endpoints: tokio::sync::OnceCell<(String, String)>,
}

impl Dashboard {
    pub fn new(
        public_url: &str,
        people: Arc<PersonTokens>,
        client_id: impl Into<String>,
        sessions: Arc<dyn Sessions>,
    ) -> Result<Self, String> {
        let url: url::Url = public_url
            .parse()
            .map_err(|e| format!("the dashboard's public URL `{public_url}` is not a URL: {e}"))?;
        let loopback = crate::jwks::is_loopback(&url);
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(format!(
                "the dashboard's public URL `{public_url}` must be https (http only on a loopback address)"
            ));
        }
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(ISSUER_TIMEOUT)
            .connect_timeout(ISSUER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("steward-dashboard")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            public_url: public_url.trim_end_matches('/').to_string(),
            people,
            client_id: client_id.into(),
            sessions,
            http,
            endpoints: tokio::sync::OnceCell::new(),
        })
    }

    /// Cookies are `Secure` except when the dashboard is reached over http on loopback.
    pub fn secure(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    fn redirect_uri(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.public_url)
    }
}

/// The dashboard's pages and forms. `api` is the admin API's router: every action is a call to
/// it.
pub fn router(app: App, api: Router) -> Router {
    let state = pages::PageState { app, api };
    Router::new()
        .route("/", get(pages::overview))
        .route("/agents", get(pages::inventory))
        .route("/agents.csv", get(pages::inventory_csv))
        .route("/agents/{agent}", get(pages::agent))
        .route("/act/{*path}", post(pages::act))
        .route("/approvals", get(pages::approvals))
        .route("/campaigns", get(pages::campaigns))
        .route("/campaigns/{id}", get(pages::campaign))
        .route("/campaigns/{id}/{file}", get(pages::evidence))
        .route("/audit", get(pages::audit))
        .route("/approvals/{id}/approve", post(pages::approve))
        .route("/approvals/{id}/deny", post(pages::deny))
        .route("/sign-in", get(sign_in::start))
        .route(CALLBACK_PATH, get(sign_in::callback))
        .route("/sign-out", post(sign_in::sign_out))
        .route("/signed-out", get(pages::signed_out))
        .route("/assets/steward.css", get(pages::stylesheet))
        .route("/assets/htmx.min.js", get(pages::htmx))
        .route("/assets/steward.svg", get(pages::icon))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(FORM_BYTES))
        .with_state(state)
}

/// htmx's response header that says whether (and where) the address changes.
const HX_PUSH_URL: header::HeaderName = header::HeaderName::from_static("hx-push-url");

/// The headers every page carries: script only from this origin's files (no inline script, no
/// `eval`), nothing framed, nothing cached.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
         img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    // A refusal's page is shown where the form was, and the address stays the page's: htmx
    // would otherwise put the form's POST-only address in the history.
    if response.status().is_client_error() || response.status().is_server_error() {
        set(response.headers_mut(), HX_PUSH_URL, "false");
    }
    response
}
