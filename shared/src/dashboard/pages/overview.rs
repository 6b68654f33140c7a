//! The overview: the organisation's agents, posture, rotations and campaigns at a glance, what
//! waits for the person, and the agents they own.

use super::approvals::asks;
use super::chart::{Bar, bars};
use super::{PageState, error_page, page, person_of};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Duration;
use maud::html;
use statemachines::Workflow;
use statemachines::rotation::Rotation;

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
    let now = engine.clock.now();
    let grants = engine
        .store
        .grants_per_hour(now - Duration::hours(24))
        .await
        .ok()
        .flatten();
    let posture = engine.recorded_posture().await.ok().flatten();
    // Counted now on the status index, or (a store without one) as of the last summary.
    let (counts, counted_at) = match engine.store.agent_counts().await.ok().flatten() {
        Some(c) => (c, None),
        None => match &posture {
            Some(p) => (p.statuses.clone(), Some(p.generated_at)),
            None => Default::default(),
        },
    };
    let count = |s: &str| counts.get(s).copied().unwrap_or(0);
    // Rotations retrying now, and those that failed for good in the last week (counted on the
    // workflows' index where the store has one).
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let retrying = engine
        .store
        .count_workflows(Rotation::KIND, "RetryWait", epoch)
        .await
        .ok()
        .flatten();
    let failed = engine
        .store
        .count_workflows(Rotation::KIND, "Failed", now - Duration::days(7))
        .await
        .ok()
        .flatten();
    // Running campaigns, with their items by state where the store counts them.
    let campaigns: Vec<_> = engine
        .campaigns()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| matches!(c.state.as_str(), "Launching" | "Reviewing"))
        .collect();
    page(
        StatusCode::OK,
        "Overview",
        Some(&who),
        html! {
            section aria-labelledby="counts" {
                h2 id="counts" { "Agents" }
                ul class="counts" {
                    li { a href="/agents?status=active" { strong { (count("active")) } " active" } }
                    li { a href="/agents?status=frozen" { strong { (count("frozen")) } " frozen" } }
                    li { a href="/agents?status=pending_approval" { strong { (count("pending_approval") + count("provisioning")) } " pending" } }
                    li { a href="/agents?status=unregistered" { strong { (count("unregistered")) } " unregistered (shadow)" } }
                    li { a href="/agents?status=decommissioned" { strong { (count("decommissioned")) } " decommissioned" } }
                }
                @if let Some(at) = counted_at {
                    p { "As of the posture summary of " (at.format("%Y-%m-%d %H:%M UTC")) "." }
                }
            }
            section aria-labelledby="maturity" {
                h2 id="maturity" { "Maturity" }
                @match &posture {
                    Some(p) => {
                        p { "Level " (p.summary.maturity.rank()) " of 5: " strong { (p.summary.maturity.label()) }
                            " (as of " (p.generated_at.format("%Y-%m-%d %H:%M UTC")) ")" }
                        @if let Some(next) = p.summary.next_level {
                            p { "Next, " (next.label()) ", needs:" }
                            ul { @for m in &p.summary.next_level_missing { li { (m) } } }
                        }
                        p { "Risk: " (p.summary.by_level.critical) " critical, " (p.summary.by_level.high) " high, "
                            (p.summary.by_level.medium) " medium, " (p.summary.by_level.low) " low" }
                    }
                    None => p { "The posture summary is built after each sweep; none has run yet." },
                }
            }
            section aria-labelledby="bearer-only" {
                h2 id="bearer-only" { "Bearer-only agents" }
                @match &posture {
                    Some(p) => {
                        @let c = &p.summary;
                        p { strong { (c.bearer_only_agents) } " of " (c.active_agents) " active agents get bearer tokens (whoever holds one can use it); "
                            (c.bound_token_agents) " have tokens bound to their key or certificate, and "
                            (c.key_bound_agents) " hold their own key (no shared secret)." }
                        @if !c.bearer_only.is_empty() {
                            ul { @for a in &c.bearer_only {
                                li {
                                    a href={"/agents/" (form_urlencoded::byte_serialize(a.agent_id.as_bytes()).collect::<String>())} { (a.name) }
                                    " (" (a.environment) ")"
                                }
                            } }
                            @if c.bearer_only_agents > c.bearer_only.len() {
                                p { "… and " (c.bearer_only_agents - c.bearer_only.len()) " more: " code { "steward report" } " lists every agent's " code { "bound_tokens" } " check." }
                            }
                        }
                    }
                    None => p { "Counted in the posture summary, built after each sweep; none has run yet." },
                }
            }
            section aria-labelledby="charts" {
                h2 id="charts" { "At a glance" }
                @if let Some(p) = &posture {
                    @let q = |n: u32| p.max_age_days * n / 4;
                    @let a = &p.credential_ages;
                    @let age_bars = vec![
                        Bar { label: format!("{}–{} days", q(0), q(1)), value: a[0], warning: false },
                        Bar { label: format!("{}–{} days", q(1), q(2)), value: a[1], warning: false },
                        Bar { label: format!("{}–{} days", q(2), q(3)), value: a[2], warning: false },
                        Bar { label: format!("{}–{} days", q(3), q(4)), value: a[3], warning: false },
                        Bar { label: format!("over {} days", q(4)), value: a[4], warning: true },
                    ];
                    (bars("ages", &format!("Active credentials by age (policy maximum {} days)", p.max_age_days), &age_bars))
                }
                @if let Some(p) = &posture {
                    @if p.findings.is_empty() { p { "No detection finding in the last 14 days." } }
                    @else {
                        @let finding_bars: Vec<Bar> = p.findings.iter().map(|(day, severity, n)| Bar {
                            label: format!("{} {severity}", day.format("%m-%d")),
                            value: *n,
                            warning: severity == "high" || severity == "critical",
                        }).collect();
                        (bars("findings", "Detection findings per day by severity, last 14 days", &finding_bars))
                    }
                }
                @match &grants {
                    Some(hours) => {
                        @let hour_bars: Vec<Bar> = hours.iter().flat_map(|(h, ok, no)| {
                            let granted = Bar { label: format!("{} granted", h.format("%H:00")), value: *ok, warning: false };
                            let refused = (*no > 0).then(|| Bar { label: format!("{} refused", h.format("%H:00")), value: *no, warning: true });
                            std::iter::once(granted).chain(refused)
                        }).collect();
                        @if hour_bars.is_empty() { p { "No token grants in the last 24 hours." } }
                        @else { (bars("grants", "Token grants per hour, last 24 hours (UTC)", &hour_bars)) }
                    }
                    None => p { "Token grants per hour are not counted on this store." },
                }
            }
            section aria-labelledby="rotations" {
                h2 id="rotations" { "Rotations" }
                ul {
                    @if let Some(p) = &posture {
                        li { strong { (p.credential_ages[4]) } " active credentials older than the policy's " (p.max_age_days) " days: due (a rotation that keeps failing leaves its credential here)" }
                    }
                    @match (retrying, failed) {
                        (Some(r), Some(f)) => {
                            li { strong { (r) } " rotations failed an attempt and wait to retry" }
                            li { strong { (f) } " rotations failed for good in the last 7 days" }
                        }
                        _ => li { "Failing rotations are not counted on this store; the audit page lists " code { "rotation_failed" } " records." },
                    }
                }
            }
            section aria-labelledby="campaigns" {
                h2 id="campaigns" { "Access reviews" }
                @if campaigns.is_empty() { p { "No campaign is running." } }
                @else {
                    ul { @for c in &campaigns {
                        li {
                            a href={"/campaigns/" (form_urlencoded::byte_serialize(c.id.as_bytes()).collect::<String>())} { (c.name) }
                            ": "
                            @if c.counted {
                                (c.items.saturating_sub(c.open + c.escalated)) " of " (c.items) " answered"
                                @if c.escalated > 0 { ", " (c.escalated) " escalated" }
                            } @else {
                                (c.items) " items"
                            }
                            @if let Some(d) = c.deadline { " · deadline " (d.format("%Y-%m-%d")) }
                        }
                    } }
                }
            }
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
