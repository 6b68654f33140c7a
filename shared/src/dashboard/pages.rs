//! The pages and their forms. Every value is escaped by the templates (maud); no page has
//! script, so they read the same with JavaScript off.

use super::Dashboard;
use super::session::{self, NotSignedIn, SignedIn};
use crate::http::App;
use crate::http::roles::{roles_of, who_may};
use crate::http::routes::Op;
use crate::ports::store::ApprovalRecord;
use axum::Router;
use axum::body::Body;
use axum::extract::{Form, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use tower::ServiceExt;

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

const STYLESHEET: &str = include_str!("steward.css");

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

fn page(status: StatusCode, title: &str, who: Option<&SignedIn>, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Steward" }
                link rel="stylesheet" href="/assets/steward.css";
            }
            body {
                header class="top" {
                    a class="brand" href="/" { "Steward" }
                    @if let Some(who) = who {
                        nav aria-label="Main" {
                            a href="/" { "Overview" }
                            a href="/approvals" { "Approvals" }
                        }
                        form class="sign-out" method="post" action="/sign-out" {
                            input type="hidden" name="csrf" value=(who.session.csrf);
                            span class="person" { (who.person()) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
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
async fn person_of(s: &PageState, headers: &HeaderMap, path: &str) -> Result<SignedIn, Response> {
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
async fn may(s: &PageState, who: &SignedIn, op: Op, owner: Option<&str>) -> bool {
    match roles_of(&s.app, &who.caller, owner).await {
        Ok(roles) => roles.iter().any(|r| who_may(op).contains(r)),
        Err(_) => false,
    }
}

/// Whether the person is asked to decide this approval: listed, not the requester, no vote yet.
fn asks(record: &ApprovalRecord, person: &str) -> bool {
    let r = &record.request;
    let same = |a: &str| a.trim().eq_ignore_ascii_case(person);
    record.outcome.is_none()
        && r.approvers.iter().any(|a| same(a))
        && !same(&r.requester)
        && !r.votes.iter().any(|v| same(&v.by))
}

/// `GET /`: what is waiting for the person, and their agents.
pub async fn overview(State(s): State<PageState>, headers: HeaderMap) -> Response {
    let who = match person_of(&s, &headers, "/").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let engine = &s.app.engine;
    let pending = match engine.store.approvals(true).await {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Overview", &e.to_string()),
    };
    let mine = match engine.store.agents_owned_by(who.person()).await {
        Ok(a) => a,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Overview", &e.to_string()),
    };
    let waiting = pending.iter().filter(|r| asks(r, who.person())).count();
    page(
        StatusCode::OK,
        "Overview",
        Some(&who),
        html! {
            section aria-labelledby="waiting" {
                h2 id="waiting" { "Waiting for you" }
                p {
                    @if waiting == 0 { "Nothing to decide." }
                    @else { a href="/approvals" { (waiting) " approval" @if waiting != 1 { "s" } " to decide" } }
                    " · " (pending.len()) " open in all"
                }
            }
            section aria-labelledby="agents" {
                h2 id="agents" { "Agents you own" }
                @if mine.is_empty() { p { "You own no agents." } }
                @else {
                    table {
                        thead { tr { th scope="col" { "Agent" } th scope="col" { "Environment" } th scope="col" { "Status" } th scope="col" { "Scopes" } } }
                        tbody {
                            @for a in &mine {
                                tr {
                                    td { (a.name) }
                                    td { (a.environment) }
                                    td { span class={"status " (a.status.as_str())} { (a.status.as_str()) } }
                                    td { (a.scopes.join(", ")) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `GET /approvals`: the person's inbox.
pub async fn approvals(State(s): State<PageState>, headers: HeaderMap) -> Response {
    let who = match person_of(&s, &headers, "/approvals").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    inbox(&s, &who, StatusCode::OK, None).await
}

async fn inbox(
    s: &PageState,
    who: &SignedIn,
    status: StatusCode,
    notice: Option<(&str, String)>,
) -> Response {
    if !may(s, who, Op::ListApprovals, None).await {
        return error_page(
            StatusCode::FORBIDDEN,
            "Approvals",
            "you may not list approvals",
        );
    }
    let pending = match s.app.engine.store.approvals(true).await {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Approvals", &e.to_string()),
    };
    let (to_decide, others): (Vec<_>, Vec<_>) = pending.iter().partition(|r| asks(r, who.person()));
    page(
        status,
        "Approvals",
        Some(who),
        html! {
            @if let Some((class, text)) = &notice {
                p class=(class) role=(if *class == "error" { "alert" } else { "status" }) { (text) }
            }
            section aria-labelledby="decide" {
                h2 id="decide" { "For you to decide" }
                @if to_decide.is_empty() { p { "Nothing waits for your decision." } }
                @for r in &to_decide { (approval_card(r, Some(&who.session.csrf))) }
            }
            section aria-labelledby="others" {
                h2 id="others" { "Open, for others" }
                @if others.is_empty() { p { "None." } }
                @for r in &others { (approval_card(r, None)) }
            }
        },
    )
}

fn approval_card(record: &ApprovalRecord, csrf: Option<&str>) -> Markup {
    let r = &record.request;
    let votes = &r.votes;
    html! {
        article class="approval" aria-labelledby={"ap-" (r.id)} {
            h3 id={"ap-" (r.id)} { (r.action) " · " (r.agent_name) " (" (r.environment) ")" }
            dl {
                dt { "Requested by" } dd { (r.requester) }
                dt { "Owner" } dd { (r.owner) }
                dt { "Why" } dd { (r.justification) }
                @if !r.scopes_added.is_empty() {
                    dt { "Scopes added" } dd { @for sc in &r.scopes_added { code class="added" { "+ " (sc) } " " } }
                }
                @if !r.scopes_removed.is_empty() {
                    dt { "Scopes removed" } dd { @for sc in &r.scopes_removed { code class="removed" { "− " (sc) } " " } }
                }
                @if !r.sensitive_scopes.is_empty() {
                    dt { "Risk" } dd { "Sensitive: " (r.sensitive_scopes.join(", ")) }
                }
                dt { "Token lifetime" } dd { (r.token_lifetime_secs) " s" }
                dt { "Approvals" } dd { (votes.len()) " of " (r.quorum) " needed" }
                dt { "Expires" } dd { time datetime=(r.expires_at.to_rfc3339()) { (r.expires_at.format("%Y-%m-%d %H:%M UTC")) } }
            }
            @if let Some(csrf) = csrf {
                form class="decide" method="post" action={"/approvals/" (r.id) "/approve"} {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="action_hash" value=(record.action_hash);
                    label for={"reason-" (r.id)} { "Reason" }
                    input id={"reason-" (r.id)} type="text" name="reason" maxlength="500";
                    button type="submit" name="decision" value="approve" { "Approve" }
                    button type="submit" formaction={"/approvals/" (r.id) "/deny"} name="decision" value="deny" class="deny" { "Deny" }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: Option<String>,
    reason: Option<String>,
    action_hash: Option<String>,
}

pub async fn approve(
    State(s): State<PageState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    decide(s, id, "approve", request).await
}

pub async fn deny(
    State(s): State<PageState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    decide(s, id, "deny", request).await
}

/// An Approve or Deny: the form checked, then the API's own route called as the person.
async fn decide(s: PageState, id: String, verb: &str, request: Request) -> Response {
    let Some(d) = s.dashboard() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (parts, body) = request.into_parts();
    let what = format!("dashboard form POST {}", parts.uri.path());
    let who = match session::signed_in(&s.app, d, &parts.headers).await {
        Ok(w) => w,
        Err(no) => {
            s.app.refuse(&what, &no.to_string()).await;
            return error_page(
                session::status_of(&no),
                "Not signed in",
                &format!("{no}; sign in again"),
            );
        }
    };
    let form =
        match Form::<DecisionForm>::from_request(Request::from_parts(parts.clone(), body), &())
            .await
        {
            Ok(Form(f)) => f,
            Err(e) => {
                let why = format!("the form is malformed: {}", e.body_text());
                s.app.refuse(&what, &why).await;
                return error_page(StatusCode::BAD_REQUEST, "Refused", &why);
            }
        };
    if let Err(why) = session::check_form(d, &parts, &who.session, form.csrf.as_deref()) {
        s.app.refuse(&what, &why).await;
        return error_page(StatusCode::FORBIDDEN, "Refused", &why);
    }
    let body = serde_json::json!({
        "reason": form.reason.filter(|r| !r.trim().is_empty()),
        "action_hash": form.action_hash,
    });
    let path = format!(
        "/api/approvals/{}/{verb}",
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    let (status, answer) = call_api(&s, &who, &path, body).await;
    let notice = if status.is_success() {
        (
            "notice",
            format!("Your decision ({verb}) on {id} is recorded."),
        )
    } else {
        ("error", answer)
    };
    let shown = if status.is_success() {
        StatusCode::OK
    } else {
        status
    };
    inbox(&s, &who, shown, Some((notice.0, notice.1))).await
}

/// Calls an admin API route in process as the signed-in person; returns its status and, for
/// an error, the sentence it said.
async fn call_api(
    s: &PageState,
    who: &SignedIn,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request to a route of this server");
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
    let said: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let mut text = said["error"].as_str().unwrap_or("").to_string();
    if let Some(reasons) = said["reasons"].as_array().filter(|r| !r.is_empty()) {
        let reasons: Vec<String> = reasons
            .iter()
            .map(|r| {
                r.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| r.to_string())
            })
            .collect();
        text = format!("{text}: {}", reasons.join("; "));
    }
    (status, text)
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
