//! The pages and their forms. Every value is escaped by the templates (maud). Every page reads
//! and every form works with JavaScript off; with it on, htmx (served from the binary) sends the
//! action forms in the background and puts the answer in place of the page's main content,
//! asks before a destructive action, and disables a form's buttons while it is sent.

use super::Dashboard;
use super::session::{self, NotSignedIn, SignedIn};
use crate::http::App;
use crate::http::roles::{roles_of, who_may};
use crate::http::routes::Op;
use axum::Router;
use axum::body::Body;
use axum::extract::{Form, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use tower::ServiceExt;

mod agents;
mod approvals;
mod audit;
mod campaigns;
mod chart;
mod overview;

pub use agents::{agent, inventory, inventory_csv};
pub use approvals::{approvals, approve, deny};
pub use audit::audit;
pub use campaigns::{campaign, campaigns, evidence};
pub use overview::overview;

#[derive(Clone)]
pub struct PageState {
    pub app: App,
    /// The admin API's router: actions are calls to it.
    pub api: Router,
}

impl PageState {
    pub fn dashboard(&self) -> Option<&Dashboard> {
        self.app.dashboard.as_deref()
    }
}

const STYLESHEET: &str = include_str!("../steward.css");
/// htmx 2.0.11 (0BSD), as published on npm (`dist/htmx.min.js`).
const HTMX: &str = include_str!("../htmx.min.js");
const ICON: &str = include_str!("../steward.svg");
/// htmx's settings: no script evaluated from attributes or answers, no inline style (the
/// Content-Security-Policy refuses both), requests to this origin only, no page kept in the
/// browser's storage for the back button (it reloads instead), and a refusal's page shown like
/// any other answer.
const HTMX_CONFIG: &str = r#"{"allowEval":false,"allowScriptTags":false,"includeIndicatorStyles":false,"selfRequestsOnly":true,"historyCacheSize":0,"refreshOnHistoryMiss":true,"responseHandling":[{"code":"204","swap":false},{"code":"...","swap":true}]}"#;

pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

pub async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

pub async fn htmx() -> Response {
    asset("text/javascript; charset=utf-8", HTMX)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub(super) fn page(
    status: StatusCode,
    title: &str,
    who: Option<&SignedIn>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Steward" }
                link rel="stylesheet" href="/assets/steward.css";
                link rel="icon" href="/assets/steward.svg" type="image/svg+xml";
                meta name="htmx-config" content=(HTMX_CONFIG);
                script src="/assets/htmx.min.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/" { "Steward" }
                    @if let Some(who) = who {
                        nav aria-label="Main" {
                            a href="/" { "Overview" }
                            a href="/agents" { "Agents" }
                            a href="/approvals" { "Approvals" }
                            a href="/campaigns" { "Campaigns" }
                            a href="/audit" { "Audit" }
                        }
                        form class="sign-out" method="post" action="/sign-out" {
                            input type="hidden" name="csrf" value=(who.session.csrf);
                            span class="person" { (who.person()) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                // What a boosted action form (`hx-boost` on the form) inherits: its answer's
                // main content replaces this one, the address follows the answer, and the form's
                // buttons are disabled while it is sent.
                main id="main" hx-target="this" hx-select="#main" hx-swap="outerHTML" hx-push-url="true" hx-disabled-elt="find button" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// A page that says what went wrong and what to do.
pub fn error_page(status: StatusCode, title: &str, why: &str) -> Response {
    page(
        status,
        title,
        None,
        html! {
            p class="error" role="alert" { (why) }
            p { a href="/" { "Back to the start page" } }
        },
    )
}

/// The signed-in person of a page request; otherwise the answer (to the sign-in, or why not).
pub(super) async fn person_of(
    s: &PageState,
    headers: &HeaderMap,
    path: &str,
) -> Result<SignedIn, Response> {
    let Some(d) = s.dashboard() else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    match session::signed_in(&s.app, d, headers).await {
        Ok(si) => Ok(si),
        Err(NotSignedIn::SignIn(_)) => {
            let to = format!(
                "/sign-in?return_to={}",
                form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
            );
            Err(Redirect::to(&to).into_response())
        }
        Err(refused @ NotSignedIn::Refused(_)) => Err(error_page(
            session::status_of(&refused),
            "Not allowed",
            &refused.to_string(),
        )),
    }
}

/// Whether the person may do `op` about an agent owned by `owner` (the API's role table).
pub(super) async fn may(s: &PageState, who: &SignedIn, op: Op, owner: Option<&str>) -> bool {
    match roles_of(&s.app, &who.caller, owner).await {
        Ok(roles) => roles.iter().any(|r| who_may(op).contains(r)),
        Err(_) => false,
    }
}

/// Calls an admin API route in process as the signed-in person; returns its status and, for
/// an error, the sentence it said.
pub(super) async fn call_api(
    s: &PageState,
    who: &SignedIn,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()));
    let Ok(mut request) = request else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{path} is not a path of the admin API"),
        );
    };
    request
        .extensions_mut()
        .insert(super::DashboardCall(who.caller.clone()));
    let response = match s.api.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = crate::admin::ErrorBody::sentence_of(&bytes).unwrap_or_default();
    (status, text)
}

/// What a successful action says when the browser is back on its page (a fixed sentence per
/// operation, so a link cannot make a page say anything else).
fn done_sentence(code: &str) -> Option<&'static str> {
    Some(match code {
        "scopes" => "The scope change is requested; it shows here once decided.",
        "rotate" => "A rotation has started.",
        "freeze" => "The freeze is requested.",
        "unfreeze" => "The unfreeze is requested; the approvers are asked.",
        "decommission" => "Decommissioning has started.",
        "renew" => "The renewal is requested.",
        "decision" => "Your review answer is recorded.",
        "claim" => "The claim is made; the agent is registered with its owner.",
        "release" => "The client is being let go: frozen, then decommissioned.",
        _ => return None,
    })
}

/// The notice of a page the browser came back to after an action (`?done=<operation>`).
pub(super) fn notice(query: Option<&str>) -> Option<&'static str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "done")
        .and_then(|(_, v)| done_sentence(v))
}

/// A form post checked before anything else reads it: a signed-in person, a well-formed form,
/// and the session's anti-forgery token (`csrf` finds it in the form) from a page of this
/// origin. A refusal is the page to answer with, counted and audited.
pub(super) async fn checked_form<T: serde::de::DeserializeOwned>(
    s: &PageState,
    request: Request,
    csrf: impl Fn(&T) -> Option<&str>,
) -> Result<(SignedIn, T), Response> {
    let Some(d) = s.dashboard() else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    let (parts, body) = request.into_parts();
    let what = format!("dashboard form POST {}", parts.uri.path());
    let who = match session::signed_in(&s.app, d, &parts.headers).await {
        Ok(w) => w,
        Err(no) => {
            s.app.refuse(&what, &no.to_string()).await;
            return Err(error_page(
                session::status_of(&no),
                "Not signed in",
                &format!("{no}; sign in again"),
            ));
        }
    };
    let form = match Form::<T>::from_request(Request::from_parts(parts.clone(), body), &()).await {
        Ok(Form(f)) => f,
        Err(e) => {
            let why = format!("the form is malformed: {}", e.body_text());
            s.app.refuse_by(&what, &who.caller_actor(), &why).await;
            return Err(error_page(StatusCode::BAD_REQUEST, "Refused", &why));
        }
    };
    if let Err(why) = session::check_form(d, &parts, &who.session, csrf(&form)) {
        s.app.refuse_by(&what, &who.caller_actor(), &why).await;
        return Err(error_page(StatusCode::FORBIDDEN, "Refused", &why));
    }
    Ok((who, form))
}

/// `POST /act/{*path}`: a form of a page, checked (session, anti-forgery token, origin), then
/// sent to the admin API's route `/{path}` as the signed-in person. The form's fields become the
/// JSON body: a name ending in `[]` is a list (commas or spaces between items), empty fields
/// are left out. The API answers as it would any caller; on success the browser goes back to
/// `return_to` (a path of this server).
pub async fn act(
    State(s): State<PageState>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let what = format!("dashboard form POST {}", request.uri().path());
    let (who, fields) = match checked_form::<Vec<(String, String)>>(&s, request, |f| {
        f.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str())
    })
    .await
    {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if !path.starts_with("api/") || axum::http::Uri::try_from(format!("/{path}")).is_err() {
        let why = format!("/{path} is not an operation of the admin API");
        s.app.refuse_by(&what, &who.caller_actor(), &why).await;
        let status = if path.starts_with("api/") {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::NOT_FOUND
        };
        return error_page(status, "Refused", &why);
    }
    let mut json = serde_json::Map::new();
    for (k, v) in &fields {
        if k == "csrf" || k == "return_to" {
            continue;
        }
        if let Some(list) = k.strip_suffix("[]") {
            let items: Vec<serde_json::Value> = v
                .split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .map(|i| serde_json::Value::String(i.to_string()))
                .collect();
            if !items.is_empty() {
                json.insert(list.to_string(), serde_json::Value::Array(items));
            }
        } else if !v.trim().is_empty() {
            json.insert(k.clone(), serde_json::Value::String(v.trim().to_string()));
        }
    }
    let (status, said) = call_api(
        &s,
        &who,
        &format!("/{path}"),
        serde_json::Value::Object(json),
    )
    .await;
    if !status.is_success() {
        return error_page(status, "Not done", &said);
    }
    let back = match field("return_to") {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_string(),
        _ => "/".into(),
    };
    let code = path.rsplit('/').next().unwrap_or("");
    let sep = if back.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{back}{sep}done={code}")).into_response()
}

/// `GET /signed-out`.
pub async fn signed_out() -> Response {
    page(
        StatusCode::OK,
        "Signed out",
        None,
        html! { p { "You are signed out. " a href="/sign-in" { "Sign in again" } } },
    )
}
