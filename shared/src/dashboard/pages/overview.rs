//! The overview: what waits for the person, and the agents they own.

use super::approvals::asks;
use super::{PageState, error_page, page, person_of};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;

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
    // Frozen agents whose fate waits on security (from the pending approvals' index).
    let freezes: Vec<_> = pending
        .iter()
        .filter(|r| r.request.action == "unfreeze")
        .collect();
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
            section aria-labelledby="freezes" {
                h2 id="freezes" { "Open freezes" }
                @if freezes.is_empty() { p { "No agent is frozen awaiting a decision." } }
                @else {
                    ul {
                        @for r in &freezes {
                            li {
                                a href={"/agents/" (form_urlencoded::byte_serialize(r.request.agent_id.as_bytes()).collect::<String>())} { (r.request.agent_name) }
                                " (" (r.request.environment) ") frozen: " (r.request.justification.lines().next().unwrap_or(""))
                                " · decide by " (r.request.expires_at.format("%Y-%m-%d %H:%M UTC"))
                            }
                        }
                    }
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
                                    td { a href={"/agents/" (form_urlencoded::byte_serialize(a.id.as_bytes()).collect::<String>())} { (a.name) } }
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
