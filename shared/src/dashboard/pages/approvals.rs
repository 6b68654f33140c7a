//! The approvals inbox: what waits for the signed-in person's decision, and Approve / Deny.

use super::super::session::SignedIn;
use super::{PageState, call_api, checked_form, error_page, may, page, person_of};
use crate::http::routes::Op;
use crate::ports::store::ApprovalRecord;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

/// Whether the person is asked to decide this approval: listed, not the requester, no vote yet.
pub(super) fn asks(record: &ApprovalRecord, person: &str) -> bool {
    let r = &record.request;
    let same = |a: &str| a.trim().eq_ignore_ascii_case(person);
    record.outcome.is_none()
        && r.approvers.iter().any(|a| same(a))
        && !same(&r.requester)
        && !r.votes.iter().any(|v| same(&v.by))
}

/// `GET /approvals`: the person's inbox.
pub async fn approvals(
    State(s): State<PageState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let who = match person_of(&s, &headers, "/approvals").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let notice = super::notice(raw.as_deref()).map(|n| ("notice", n.to_string()));
    inbox(&s, &who, StatusCode::OK, notice).await
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
            (reviews(s, who).await)
            (shadow_agents(s, who).await)
        },
    )
}

/// What Approve and Deny mean for an action: after a detection freeze, approving unfreezes and
/// denying decommissions (as the Slack buttons say).
fn labels(action: &str) -> (&'static str, &'static str) {
    match action {
        "unfreeze" => ("Unfreeze", "Decommission"),
        "freeze" => ("Freeze", "Keep running"),
        _ => ("Approve", "Deny"),
    }
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
                // The answer is the inbox itself at the form's address: nothing to put in history.
                form class="decide" method="post" hx-boost="true" hx-push-url="false" action={"/approvals/" (r.id) "/approve"} {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="action_hash" value=(record.action_hash);
                    label for={"reason-" (r.id)} { "Reason" }
                    input id={"reason-" (r.id)} type="text" name="reason" maxlength="500";
                    @let (yes, no) = labels(&r.action);
                    button type="submit" name="decision" value="approve" { (yes) }
                    button type="submit" formaction={"/approvals/" (r.id) "/deny"} name="decision" value="deny" class="deny" { (no) }
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
    let (who, form) = match checked_form::<DecisionForm>(&s, request, |f| f.csrf.as_deref()).await {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
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

fn segment(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// The access-review items the person owns in running campaigns: Keep, Reduce or Revoke.
async fn reviews(s: &PageState, who: &SignedIn) -> Markup {
    let items = s
        .app
        .engine
        .reviews_waiting_for(who.person())
        .await
        .unwrap_or_default();
    let csrf = &who.session.csrf;
    html! {
        section aria-labelledby="reviews" {
            h2 id="reviews" { "Access reviews for you" }
            @if items.is_empty() { p { "No review waits for your answer." } }
            @for (campaign, r) in &items {
                article class="approval" aria-labelledby={"rv-" (r.item_id)} {
                    h3 id={"rv-" (r.item_id)} { (r.agent) " (" (r.environment) ") · " (campaign) }
                    dl {
                        dt { "Scopes" } dd { (r.scopes.join(" ")) }
                        @if !r.suggested_drop.is_empty() { dt { "Unused, suggested to drop" } dd { (r.suggested_drop.join(" ")) } }
                    }
                    form class="decide" method="post" hx-boost="true" action={"/act/api/reviews/" (segment(&r.item_id)) "/decision"} {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="return_to" value="/approvals";
                        label for={"rd-" (r.item_id)} { "Decision" }
                        select id={"rd-" (r.item_id)} name="decision" {
                            option value="keep" { "Keep" }
                            option value="reduce" { "Reduce" }
                            option value="revoke" { "Revoke" }
                        }
                        label for={"rdrop-" (r.item_id)} { "Scopes to drop (Reduce)" }
                        input id={"rdrop-" (r.item_id)} type="text" name="drop[]" value=(r.suggested_drop.join(" "));
                        label for={"rr-" (r.item_id)} { "Reason" }
                        input id={"rr-" (r.item_id)} type="text" name="reason" maxlength="500";
                        button type="submit" { "Answer" }
                    }
                }
            }
        }
    }
}

/// Unregistered clients found at the identity provider, for security approvers: Claim (with a
/// real owner) or Let go.
async fn shadow_agents(s: &PageState, who: &SignedIn) -> Markup {
    let security = matches!(
        crate::http::roles::roles_of(&s.app, &who.caller, None).await,
        Ok(roles) if roles.contains(&crate::http::roles::Role::SecurityApprover)
    );
    if !security {
        return html! {};
    }
    let shadows = s.app.engine.shadow_agents().await.unwrap_or_default();
    let csrf = &who.session.csrf;
    html! {
        section aria-labelledby="shadow" {
            h2 id="shadow" { "Shadow agents" }
            @if shadows.is_empty() { p { "No unregistered client was found at the identity provider." } }
            @for a in &shadows {
                @let client = a.client_id.clone().unwrap_or_default();
                article class="approval" aria-labelledby={"sh-" (a.id)} {
                    h3 id={"sh-" (a.id)} { (a.name) " · client " code { (client) } }
                    p { "Scopes: " (a.scopes.join(" ")) " · found " (a.created_at.format("%Y-%m-%d")) }
                    form class="decide" method="post" hx-boost="true" action={"/act/api/shadow-agents/" (segment(&client)) "/claim"} {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="return_to" value="/approvals";
                        label for={"so-" (a.id)} { "Owner" } input id={"so-" (a.id)} type="email" name="owner" required;
                        label for={"st-" (a.id)} { "Team" } input id={"st-" (a.id)} type="text" name="team" required;
                        label for={"se-" (a.id)} { "Environment" } input id={"se-" (a.id)} type="text" name="environment" required;
                        label for={"sp-" (a.id)} { "Purpose" } input id={"sp-" (a.id)} type="text" name="purpose" required;
                        button type="submit" { "Claim" }
                    }
                    form class="decide" method="post" hx-boost="true" action={"/act/api/shadow-agents/" (segment(&client)) "/release"} {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="return_to" value="/approvals";
                        label for={"sr-" (a.id)} { "Reason" } input id={"sr-" (a.id)} type="text" name="reason" required;
                        button type="submit" class="deny" { "Let go" }
                    }
                }
            }
        }
    }
}
