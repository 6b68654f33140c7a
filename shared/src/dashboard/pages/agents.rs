//! The inventory (every agent, filtered and paged through the registry's indexes, exported as
//! CSV) and one agent's page with the actions the person may take on it.

use super::super::session::SignedIn;
use super::{PageState, error_page, may, page, person_of};
use crate::http::routes::Op;
use crate::ports::store::AgentOrder;
use crate::posture::{self, AgentPosture};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use statemachines::review_item::{ReviewItemMachine, ReviewItemState};
use statemachines::workflow::Workflow;
use statemachines::{Agent, AgentFlag, AgentStatus};

/// Rows on an inventory page.
const PAGE_ROWS: usize = 50;
/// Registry records read per store page while filtering.
const READ_PAGE: usize = 200;
/// At most this many records are read for one inventory page; a sparse filter continues from
/// where it stopped ("More") instead of reading the whole registry.
const READ_LIMIT: usize = 5_000;
/// Rows in one CSV export (filters narrow it; more is the posture report's job).
const CSV_ROWS: usize = 10_000;
/// Audit records shown on an agent's page.
const AUDIT_ROWS: usize = 50;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filter {
    #[serde(default)]
    q: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    team: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    risk: String,
    /// `name`, `status`, `owner`, or registration order (empty).
    #[serde(default)]
    sort: String,
    /// Continue after this agent (in the sort's order).
    #[serde(default)]
    after: String,
}

impl Filter {
    fn order(&self) -> AgentOrder {
        match self.sort.as_str() {
            "name" => AgentOrder::Name,
            "status" => AgentOrder::Status,
            "owner" => AgentOrder::Owner,
            _ => AgentOrder::Id,
        }
    }

    fn is(&self, want: &str, have: &str) -> bool {
        want.trim().is_empty() || want.trim().eq_ignore_ascii_case(have)
    }

    fn keeps(&self, a: &Agent, p: &AgentPosture) -> bool {
        let q = self.q.trim().to_lowercase();
        self.is(&self.owner, &a.owner)
            && self.is(&self.team, &a.team)
            && self.is(&self.env, &a.environment)
            && self.is(&self.status, a.status.as_str())
            && self.is(&self.risk, p.level.as_str())
            && (self.scope.trim().is_empty() || a.scopes.iter().any(|s| s == self.scope.trim()))
            && (q.is_empty()
                || [&a.name, &a.id, &a.owner, &a.team, &a.purpose]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&q))
                || a.client_id
                    .as_deref()
                    .is_some_and(|c| c.to_lowercase().contains(&q)))
    }

    /// The query string of this filter, continuing after `after`.
    fn query(&self, after: Option<&str>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("q", &self.q),
            ("owner", &self.owner),
            ("team", &self.team),
            ("env", &self.env),
            ("status", &self.status),
            ("scope", &self.scope),
            ("risk", &self.risk),
            ("sort", &self.sort),
        ] {
            if !v.trim().is_empty() {
                q.append_pair(k, v.trim());
            }
        }
        if let Some(a) = after {
            q.append_pair("after", a);
        }
        q.finish()
    }
}

/// A page of agents matching `f`, with their posture, and where the next page starts.
struct Found {
    rows: Vec<(Agent, AgentPosture)>,
    next: Option<String>,
    read: usize,
}

async fn find(s: &PageState, f: &Filter, rows: usize) -> Result<Found, String> {
    let engine = &s.app.engine;
    let now = engine.clock.now();
    let mut out = Vec::new();
    let mut read = 0;
    let order = f.order();
    // Where the page starts: after this agent, in the sort's order.
    let after: Option<(String, String)> = match Some(f.after.trim()).filter(|a| !a.is_empty()) {
        Some(id) => engine
            .store
            .agent(id)
            .await
            .map_err(|e| e.to_string())?
            .map(|a| (order.key(&a), a.id)),
        None => None,
    };
    let past = |a: &Agent| {
        after
            .as_ref()
            .is_none_or(|(k, id)| (order.key(a), &a.id) > (k.clone(), id))
    };
    // An owner filter reads that owner's index; everything else pages through the registry.
    if !f.owner.trim().is_empty() {
        let mut owned: Vec<Agent> = engine
            .store
            .agents_owned_by(f.owner.trim())
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|a| past(a))
            .collect();
        owned.sort_by(|a, b| (order.key(a), &a.id).cmp(&(order.key(b), &b.id)));
        read = owned.len();
        let assessed = posture::assess(&owned, &engine.policy, now);
        for (a, p) in owned.into_iter().zip(assessed) {
            if f.keeps(&a, &p) {
                out.push((a, p));
            }
        }
        let next = (out.len() > rows).then(|| out[rows - 1].0.id.clone());
        out.truncate(rows);
        return Ok(Found {
            rows: out,
            next,
            read,
        });
    }
    let mut cursor = after;
    loop {
        let page = engine
            .store
            .agents_ordered(
                order,
                cursor.as_ref().map(|(k, id)| (k.as_str(), id.as_str())),
                READ_PAGE,
            )
            .await
            .map_err(|e| e.to_string())?;
        let done = page.len() < READ_PAGE;
        read += page.len();
        cursor = page.last().map(|a| (order.key(a), a.id.clone())).or(cursor);
        let assessed = posture::assess(&page, &engine.policy, now);
        for (a, p) in page.into_iter().zip(assessed) {
            if out.len() == rows {
                // A full page: the next one starts after its last row.
                return Ok(Found {
                    next: out
                        .last()
                        .map(|(a, _): &(Agent, AgentPosture)| a.id.clone()),
                    rows: out,
                    read,
                });
            }
            if f.keeps(&a, &p) {
                out.push((a, p));
            }
        }
        if done {
            return Ok(Found {
                rows: out,
                next: None,
                read,
            });
        }
        if read >= READ_LIMIT {
            return Ok(Found {
                rows: out,
                next: cursor.map(|(_, id)| id),
                read,
            });
        }
    }
}

/// When each agent last got a token: its scopes' latest recorded use (one keyed read per
/// agent, a few at a time).
async fn last_tokens(s: &PageState, rows: &[(Agent, AgentPosture)]) -> Vec<Option<DateTime<Utc>>> {
    use futures_util::stream::{self, StreamExt};
    let clients: Vec<Option<String>> = rows.iter().map(|(a, _)| a.client_id.clone()).collect();
    let store = s.app.engine.store.clone();
    stream::iter(clients)
        .map(move |client| {
            let store = store.clone();
            async move {
                let usage = store.scope_usage(client.as_deref()?).await.ok()?;
                usage.into_iter().map(|(_, at)| at).max()
            }
        })
        .buffered(8)
        .collect()
        .await
}

fn age_days(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<i64> {
    at.map(|t| (now - t).num_days())
}

/// `GET /agents`: the inventory.
pub async fn inventory(
    State(s): State<PageState>,
    headers: HeaderMap,
    Query(f): Query<Filter>,
) -> Response {
    let query = f.query(Some(f.after.trim()).filter(|a| !a.is_empty()));
    let path = match query.as_str() {
        "" => "/agents".to_string(),
        q => format!("/agents?{q}"),
    };
    let who = match person_of(&s, &headers, &path).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !may(&s, &who, Op::ListAgents, None).await {
        return error_page(StatusCode::FORBIDDEN, "Agents", "you may not list agents");
    }
    let found = match find(&s, &f, PAGE_ROWS).await {
        Ok(found) => found,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Agents", &e),
    };
    let last_tokens = last_tokens(&s, &found.rows).await;
    let now = s.app.engine.clock.now();
    let statuses = [
        "active",
        "pending_approval",
        "provisioning",
        "frozen",
        "unregistered",
        "decommissioned",
        "expired",
        "denied",
        "cancelled",
        "failed",
    ];
    page(
        StatusCode::OK,
        "Agents",
        Some(&who),
        html! {
            form class="filters" method="get" action="/agents" role="search" {
                (field("q", "Search", &f.q))
                (field("owner", "Owner", &f.owner))
                (field("team", "Team", &f.team))
                (field("env", "Environment", &f.env))
                (field("scope", "Scope", &f.scope))
                label for="f-status" { "Status" }
                select id="f-status" name="status" {
                    option value="" { "any" }
                    @for st in statuses {
                        option value=(st) selected[f.status == st] { (st) }
                    }
                }
                label for="f-risk" { "Risk" }
                select id="f-risk" name="risk" {
                    option value="" { "any" }
                    @for r in ["low", "medium", "high", "critical"] {
                        option value=(r) selected[f.risk == r] { (r) }
                    }
                }
                label for="f-sort" { "Sort" }
                select id="f-sort" name="sort" {
                    option value="" selected[f.sort.is_empty()] { "registration" }
                    option value="name" selected[f.sort == "name"] { "name" }
                    option value="status" selected[f.sort == "status"] { "status" }
                    option value="owner" selected[f.sort == "owner"] { "owner" }
                }
                button type="submit" { "Filter" }
                a class="export" href={"/agents.csv?" (f.query(None))} { "Export CSV" }
            }
            @if found.rows.is_empty() { p { "No agent matches." } }
            @else {
                table {
                    caption { (found.rows.len()) " agents shown; " (found.read) " registry records read" }
                    thead { tr {
                        th scope="col" { "Agent" } th scope="col" { "Owner" } th scope="col" { "Team" }
                        th scope="col" { "Env" } th scope="col" { "Status" } th scope="col" { "Risk" }
                        th scope="col" { "Credential age" } th scope="col" { "Last token" } th scope="col" { "Last review" }
                    } }
                    tbody {
                        @for ((a, p), last) in found.rows.iter().zip(&last_tokens) {
                            tr {
                                td { a href={"/agents/" (url_segment(&a.id))} { (a.name) } }
                                td { (a.owner) }
                                td { (a.team) }
                                td { (a.environment) }
                                td { span class="status" { (a.status.as_str()) } }
                                td { (p.level.as_str()) " (" (p.score) ")" }
                                td { @match age_days(a.credential_issued_at, now) { Some(d) => { (d) " days" }, None => "—" } }
                                td { @match last { Some(t) => { (t.format("%Y-%m-%d %H:%M")) }, None => "—" } }
                                td { @match &a.last_review { Some(r) => { (r.decision) ", " (r.at.format("%Y-%m-%d")) }, None => "never" } }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = &found.next {
                p { a rel="next" href={"/agents?" (f.query(Some(next)))} { "More agents" } }
            }
        },
    )
}

fn field(name: &str, label: &str, value: &str) -> Markup {
    let id = format!("f-{name}");
    html! {
        label for=(id) { (label) }
        input id=(id) type="text" name=(name) value=(value);
    }
}

fn url_segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /agents.csv`: the filtered inventory as CSV.
pub async fn inventory_csv(
    State(s): State<PageState>,
    headers: HeaderMap,
    Query(f): Query<Filter>,
) -> Response {
    let who = match person_of(&s, &headers, "/agents").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !may(&s, &who, Op::ListAgents, None).await {
        return error_page(StatusCode::FORBIDDEN, "Agents", "you may not list agents");
    }
    let found = match find(&s, &f, CSV_ROWS).await {
        Ok(found) => found,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Agents", &e),
    };
    let now = s.app.engine.clock.now();
    let last_tokens = last_tokens(&s, &found.rows).await;
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record([
        "id",
        "name",
        "owner",
        "team",
        "environment",
        "status",
        "risk",
        "score",
        "scopes",
        "credential_age_days",
        "last_token",
        "last_review",
    ]);
    for ((a, p), last) in found.rows.iter().zip(&last_tokens) {
        let row = [
            a.id.clone(),
            a.name.clone(),
            a.owner.clone(),
            a.team.clone(),
            a.environment.clone(),
            a.status.as_str().to_string(),
            p.level.as_str().to_string(),
            p.score.to_string(),
            a.scopes.join(" "),
            age_days(a.credential_issued_at, now)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            last.map(|t| t.to_rfc3339()).unwrap_or_default(),
            a.last_review
                .as_ref()
                .map(|r| r.at.to_rfc3339())
                .unwrap_or_default(),
        ];
        let _ = w.write_record(row.iter().map(|c| crate::spreadsheet::cell(c).into_owned()));
    }
    let body = w.into_inner().unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"steward-agents.csv\"",
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /agents/{agent}`: one agent, what it did and what the person may do about it.
pub async fn agent(
    State(s): State<PageState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let who = match person_of(&s, &headers, &format!("/agents/{}", url_segment(&id))).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let engine = &s.app.engine;
    let a = match engine.find_agent(&id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Agent",
                &format!("no agent with id or name `{id}`"),
            );
        }
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Agent", &e.to_string()),
    };
    if !may(&s, &who, Op::ShowAgent, Some(&a.owner)).await {
        return error_page(StatusCode::FORBIDDEN, "Agent", "you may not see this agent");
    }
    let now = engine.clock.now();
    let p = posture::assess(std::slice::from_ref(&a), &engine.policy, now).remove(0);
    let manager = engine
        .directory
        .person(&a.owner)
        .await
        .ok()
        .flatten()
        .and_then(|p| p.manager);
    let grants = if may(&s, &who, Op::AgentGrants, Some(&a.owner)).await {
        match a.client_id.as_deref() {
            Some(c) => Some(
                engine
                    .store
                    .grants(c, now - chrono::Duration::hours(24), 1000)
                    .await
                    .unwrap_or_default(),
            ),
            None => Some(vec![]),
        }
    } else {
        None
    };
    let instances = engine
        .store
        .instances_for_agent(&a.id)
        .await
        .unwrap_or_default();
    let mut timeline = Vec::new();
    for i in &instances {
        if let Ok(h) = engine.store.history(&i.id).await {
            for e in h {
                timeline.push((i.kind.clone(), i.id.clone(), e));
            }
        }
    }
    timeline.sort_by_key(|(_, _, e)| e.at);
    let reviews: Vec<ReviewItemState> = instances
        .iter()
        .filter(|i| i.kind == ReviewItemMachine::KIND)
        .filter_map(|i| serde_json::from_value(i.state.clone()).ok())
        .collect();
    // The records the agent's workflows wrote, newest first (the trail's readers only).
    let records = if may(&s, &who, Op::ExportAudit, None).await {
        let mut records = Vec::new();
        for i in &instances {
            records.extend(
                engine
                    .store
                    .workflow_audit(&i.id, AUDIT_ROWS)
                    .await
                    .unwrap_or_default(),
            );
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.time));
        records.truncate(AUDIT_ROWS);
        Some(records)
    } else {
        None
    };
    let actions = actions(&s, &who, &a).await;
    page(
        StatusCode::OK,
        &a.name,
        Some(&who),
        html! {
            @if let Some(n) = super::notice(raw.as_deref()) { p class="notice" role="status" { (n) } }
            dl class="facts" {
                dt { "Status" } dd { span class="status" { (a.status.as_str()) } }
                dt { "Purpose" } dd { (a.purpose) }
                dt { "Owner" } dd { (a.owner) @if let Some(m) = &manager { " (manager " (m) ")" } }
                dt { "Team / environment" } dd { (a.team) " / " (a.environment) }
                dt { "Risk" } dd { (p.level.as_str()) " (" (p.score) " of 100)" }
                dt { "Client" } dd { @match &a.client_id { Some(c) => code { (c) }, None => "none" } }
                dt { "Credential age" } dd { @match age_days(a.credential_issued_at, now) { Some(d) => { (d) " days" }, None => "—" } }
                dt { "Token lifetime" } dd { (a.token_lifetime_secs) " s" }
                @if let Some(until) = a.expires_on { dt { "Expires on" } dd { (until) } }
                dt { "Last review" } dd { @match &a.last_review { Some(r) => { (r.decision) " by " (r.by) ", " (r.at.format("%Y-%m-%d")) " (" (r.campaign) ")" }, None => "never" } }
            }
            (actions)
            section aria-labelledby="scopes" {
                h2 id="scopes" { "Scopes" }
                @let used: Vec<&str> = grants.iter().flatten().filter(|g| g.success).flat_map(|g| g.granted.iter().map(String::as_str)).collect();
                ul { @for sc in &a.scopes {
                    li { code { (sc) } @if grants.is_some() { " · " @if used.contains(&sc.as_str()) { "used in the last 24 hours" } @else { "not used in the last 24 hours" } } }
                } }
            }
            @if let Some(grants) = &grants {
                section aria-labelledby="grants" {
                    h2 id="grants" { "Token grants, last 24 hours" }
                    @if grants.is_empty() { p { "None." } }
                    @else {
                        table {
                            thead { tr { th scope="col" { "When" } th scope="col" { "From" } th scope="col" { "Asked" } th scope="col" { "Granted" } th scope="col" { "Result" } } }
                            tbody { @for g in grants.iter().rev().take(100) {
                                tr {
                                    td { (g.at.format("%Y-%m-%d %H:%M:%S")) }
                                    td { (g.ip.as_deref().unwrap_or("—")) }
                                    td { (g.requested.join(" ")) }
                                    td { (g.granted.join(" ")) }
                                    td { @if g.success { "granted" } @else { "refused: " (g.reason.as_deref().unwrap_or("")) } }
                                }
                            } }
                        }
                    }
                }
            }
            section aria-labelledby="findings" {
                h2 id="findings" { "Findings and freezes" }
                @if a.flags.is_empty() { p { "None." } }
                ul { @for f in &a.flags { li { (flag(f)) } } }
            }
            section aria-labelledby="checklist" {
                h2 id="checklist" { "Zero-trust checklist" }
                ul { @for c in &p.checklist {
                    li { @if c.ok { "✓ passes: " } @else { "✗ fails: " } strong { (c.item) } " — " (c.detail) }
                } }
                @if !p.factors.is_empty() {
                    h3 { "Risk factors" }
                    ul { @for f in &p.factors { li { (f.name) " (+" (f.points) "): " (f.detail) } } }
                }
            }
            section aria-labelledby="rotations" {
                h2 id="rotations" { "Rotations" }
                @if a.credentials.is_empty() { p { "None yet." } }
                @else {
                    table {
                        caption { "Receipts of the completed rotations, newest first" }
                        thead { tr {
                            th scope="col" { "New secret current" } th scope="col" { "Why" } th scope="col" { "Verified" }
                            th scope="col" { "Old secret accepted until" } th scope="col" { "Workflow" }
                        } }
                        tbody { @for r in a.credentials.iter().rev() {
                            tr {
                                td { (r.new_valid_from.format("%Y-%m-%d %H:%M")) }
                                td { (r.reason) }
                                td { (r.verified_at.format("%Y-%m-%d %H:%M")) ": " (r.verification) }
                                td {
                                    @match r.old_valid_until { Some(t) => { (t.format("%Y-%m-%d %H:%M")) }, None => "in its grace period" }
                                    @if let Some(how) = &r.old_revocation { " (" (how) ")" }
                                }
                                td { code { (r.rotation) } }
                            }
                        } }
                    }
                }
            }
            @if let Some(d) = &a.decommission {
                section aria-labelledby="decommission" {
                    h2 id="decommission" { "Decommission receipt" }
                    dl class="facts" {
                        dt { "Why" } dd { (d.reason) }
                        dt { "Requested by" } dd { (d.requested_by) }
                        @if !d.approved_by.is_empty() { dt { "Approved by" } dd { (d.approved_by.join(", ")) } }
                        dt { "No token valid after" } dd { @match d.no_token_valid_after { Some(t) => { (t.format("%Y-%m-%d %H:%M UTC")) }, None => "unknown: the client could not be disabled (see the steps)" } }
                        dt { "Secret deleted after" } dd { @match d.secret_deleted_after { Some(t) => { (t.format("%Y-%m-%d %H:%M UTC")) }, None => "—" } }
                    }
                    ol { @for step in &d.steps {
                        li { (step.action) ": " @if step.done { "done" } @else { "not done" } " — " (step.detail) " (" (step.at.format("%Y-%m-%d %H:%M")) ")" }
                    } }
                }
            }
            section aria-labelledby="reviews" {
                h2 id="reviews" { "Access reviews" }
                @if reviews.is_empty() { p { "Never reviewed." } }
                @else {
                    table {
                        thead { tr {
                            th scope="col" { "Campaign" } th scope="col" { "Sent" } th scope="col" { "Deadline" }
                            th scope="col" { "Decision" } th scope="col" { "By" } th scope="col" { "Reason" } th scope="col" { "What followed" }
                        } }
                        tbody { @for r in reviews.iter().rev() {
                            @let item = r.item();
                            tr {
                                td { a href={"/campaigns/" (url_segment(&item.campaign_id))} { (item.campaign_name) } }
                                td { (item.sent_at.format("%Y-%m-%d")) }
                                td { (item.deadline.format("%Y-%m-%d")) }
                                @match r.resolution() {
                                    Some(res) => {
                                        td {
                                            (res.decision)
                                            @if let Some(d) = res.default_applied { " (unanswered: default " (d.as_str()) ")" }
                                            @if !res.dropped.is_empty() { " (drop " (res.dropped.join(", ")) ")" }
                                            @if res.escalated { ", after escalation" }
                                        }
                                        td { (res.by.as_deref().unwrap_or("deadline")) ", " (res.at.format("%Y-%m-%d")) }
                                        td { (res.reason.as_deref().unwrap_or("—")) }
                                        td { @match &res.action {
                                            Some(act) => { (act.kind) ": " (act.detail) @if let Some(w) = &act.workflow_id { " (" code { (w) } ")" } }
                                            None => "—",
                                        } }
                                    }
                                    None => {
                                        td { @if matches!(r, ReviewItemState::Escalated { .. }) { "waiting (escalated)" } @else { "waiting" } }
                                        td { "—" } td { "—" } td { "—" }
                                    }
                                }
                            }
                        } }
                    }
                }
            }
            section aria-labelledby="timeline" {
                h2 id="timeline" { "Workflow timeline" }
                @if timeline.is_empty() { p { "None." } }
                ol { @for (kind, wf, e) in &timeline {
                    li { (e.at.format("%Y-%m-%d %H:%M:%S")) " · " (kind) " " code { (wf) } ": " (e.from) " → " (e.to) " by " (e.actor.describe()) }
                } }
            }
            @if let Some(records) = &records {
                section aria-labelledby="records" {
                    h2 id="records" { "Audit records" }
                    @if records.is_empty() { p { "None." } }
                    @else {
                        table {
                            caption { "The latest " (records.len()) " records its workflows wrote, newest first" }
                            thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Actor" } th scope="col" { "Result" } th scope="col" { "Message" } } }
                            tbody { @for r in records {
                                @let b = &r.body;
                                tr {
                                    td { (r.time.format("%Y-%m-%d %H:%M:%S")) }
                                    td { (super::audit::event_of(b)) }
                                    td { (super::audit::actor_of(b)) }
                                    td { (b["status"].as_str().unwrap_or("")) }
                                    td { (b["message"].as_str().unwrap_or("")) }
                                }
                            } }
                        }
                    }
                }
            }
        },
    )
}

fn flag(f: &AgentFlag) -> Markup {
    match f {
        AgentFlag::OwnerLost { owner, since } => {
            html! { "Owner " (owner) " left (" (since.format("%Y-%m-%d")) "): a new owner is needed" }
        }
        AgentFlag::FreezeRequested { reason, at } => {
            html! { "Freeze requested " (at.format("%Y-%m-%d %H:%M")) ": " (reason) }
        }
        AgentFlag::Frozen { reason, at } => {
            html! { strong { "Frozen" } " " (at.format("%Y-%m-%d %H:%M")) ": " (reason) }
        }
        AgentFlag::ReviewUnanswered { campaign, at } => {
            html! { "Review unanswered in " (campaign) " (" (at.format("%Y-%m-%d")) ")" }
        }
        AgentFlag::Anomaly {
            rule,
            severity,
            detail,
            at,
        } => {
            html! { "Finding " strong { (rule) } " (" (format!("{severity:?}").to_lowercase()) ") " (at.format("%Y-%m-%d %H:%M")) ": " (detail) }
        }
        #[allow(unreachable_patterns)]
        other => html! { (format!("{other:?}")) },
    }
}

/// The forms of what the person may do about the agent (the API's role table decides; the API
/// decides again when the form is sent).
async fn actions(s: &PageState, who: &SignedIn, a: &Agent) -> Markup {
    let owner = Some(a.owner.as_str());
    let base = format!("/act/api/agents/{}", url_segment(&a.id));
    let back = format!("/agents/{}", url_segment(&a.id));
    let live = matches!(a.status, AgentStatus::Active);
    let frozen = matches!(a.status, AgentStatus::Frozen);
    let mut forms: Vec<Markup> = Vec::new();
    let csrf = &who.session.csrf;
    // `confirm`: what the browser asks before sending (with script; without, the form is sent).
    let form = |verb: &str, label: &str, confirm: Option<&str>, fields: Markup| {
        html! {
            form class="action" method="post" action={(base) "/" (verb)} hx-boost="true" hx-confirm=[confirm] {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="return_to" value=(back);
                (fields)
                button type="submit" { (label) }
            }
        }
    };
    let reason = |id: &str| {
        html! {
            label for=(id) { "Reason" }
            input id=(id) type="text" name="reason" required maxlength="500";
        }
    };
    if live && may(s, who, Op::ChangeScopes, owner).await {
        forms.push(form("scopes", "Request scope change", None, html! {
            label for="a-add" { "Add scopes" } input id="a-add" type="text" name="add[]";
            label for="a-remove" { "Remove scopes" } input id="a-remove" type="text" name="remove[]";
            (reason("a-scopes-reason"))
        }));
    }
    if live && may(s, who, Op::Rotate, owner).await {
        forms.push(form(
            "rotate",
            "Rotate now",
            Some("Rotate this agent's secret now?"),
            html! {},
        ));
    }
    if live && may(s, who, Op::Freeze, owner).await {
        forms.push(form(
            "freeze",
            "Freeze",
            Some(
                "Freeze this agent? Its client is deactivated at once and its tokens stop working.",
            ),
            reason("a-freeze-reason"),
        ));
    }
    if frozen && may(s, who, Op::Unfreeze, owner).await {
        forms.push(form(
            "unfreeze",
            "Ask to unfreeze",
            None,
            reason("a-unfreeze-reason"),
        ));
    }
    if (live || frozen) && may(s, who, Op::Decommission, owner).await {
        forms.push(form(
            "decommission",
            "Decommission",
            Some("Decommission this agent? Its client and secret are removed for good."),
            reason("a-decommission-reason"),
        ));
    }
    if live && a.expires_on.is_some() && may(s, who, Op::Renew, owner).await {
        forms.push(form("renew", "Renew", None, html! {
            label for="a-until" { "Until" } input id="a-until" type="date" name="until" required;
            (reason("a-renew-reason"))
        }));
    }
    html! {
        @if !forms.is_empty() {
            section aria-labelledby="actions" class="actions" {
                h2 id="actions" { "Actions" }
                @for f in forms { (f) }
            }
        }
    }
}
