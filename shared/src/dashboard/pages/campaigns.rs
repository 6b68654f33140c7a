//! Access-review campaigns: their progress, each owner's answers, and the evidence (JSON, CSV,
//! Markdown) for those the role table lets read it.

use super::{PageState, error_page, may, page, person_of};
use crate::http::routes::Op;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use std::collections::BTreeMap;

fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /campaigns`.
pub async fn campaigns(State(s): State<PageState>, headers: HeaderMap) -> Response {
    let who = match person_of(&s, &headers, "/campaigns").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !may(&s, &who, Op::ListCampaigns, None).await {
        return error_page(
            StatusCode::FORBIDDEN,
            "Campaigns",
            "you may not list campaigns",
        );
    }
    let all = match s.app.engine.campaigns().await {
        Ok(c) => c,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Campaigns", &e.to_string()),
    };
    page(
        StatusCode::OK,
        "Campaigns",
        Some(&who),
        html! {
            @if all.is_empty() { p { "No access-review campaign has been launched." } }
            @else {
                table {
                    thead { tr {
                        th scope="col" { "Campaign" } th scope="col" { "State" } th scope="col" { "Scope" }
                        th scope="col" { "Deadline" } th scope="col" { "Decided" } th scope="col" { "Open" }
                    } }
                    tbody { @for c in &all {
                        tr {
                            td { a href={"/campaigns/" (segment(&c.id))} { (c.name) } }
                            td { (c.state) }
                            td { (c.scope) }
                            td { @match c.deadline { Some(d) => { (d.format("%Y-%m-%d %H:%M UTC")) }, None => "—" } }
                            @if c.counted {
                                td { (c.decided) " of " (c.items) }
                                td { (c.open) }
                            } @else {
                                td { "see the campaign" } td { "—" }
                            }
                        }
                    } }
                }
            }
        },
    )
}

/// `GET /campaigns/{id}`: progress; each owner's answers and the evidence for those allowed.
pub async fn campaign(
    State(s): State<PageState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match person_of(&s, &headers, &format!("/campaigns/{}", segment(&id))).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !may(&s, &who, Op::CampaignProgress, None).await {
        return error_page(
            StatusCode::FORBIDDEN,
            "Campaign",
            "you may not see campaigns",
        );
    }
    let engine = &s.app.engine;
    let c = match engine.campaign_progress(&id).await {
        Ok(c) => c,
        Err(crate::engine::EngineError::NotFound(m)) => {
            return error_page(StatusCode::NOT_FOUND, "Campaign", &m);
        }
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Campaign", &e.to_string()),
    };
    let evidence = may(&s, &who, Op::CampaignReport, None).await;
    // Per owner: items, answered, open (from the report, for those who may read it).
    let mut owners: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    if evidence && let Ok(report) = engine.campaign_report(&id).await {
        for row in &report.items {
            let e = owners.entry(row.owner.clone()).or_default();
            e.0 += 1;
            if !row.decision.is_empty() {
                e.1 += 1;
            }
        }
    }
    let pct = (c.decided * 100).checked_div(c.items).unwrap_or(100);
    page(
        StatusCode::OK,
        &c.name,
        Some(&who),
        html! {
            p { (c.state) " · scope " (c.scope) " · unanswered items default to " (c.unanswered_default)
                @if let Some(d) = c.deadline { " · deadline " (d.format("%Y-%m-%d %H:%M UTC")) } }
            p {
                label for="progress" { "Decided: " (c.decided) " of " (c.items) " (" (pct) " %)" }
                " "
                progress id="progress" max=(c.items.max(1)) value=(c.decided) { (pct) " %" }
            }
            table {
                caption { "Outcomes" }
                thead { tr { th scope="col" { "Keep" } th scope="col" { "Reduce" } th scope="col" { "Revoke" } th scope="col" { "Defaulted" } th scope="col" { "Escalated" } th scope="col" { "Action failed" } } }
                tbody { tr { td { (c.keep) } td { (c.reduce) } td { (c.revoke) } td { (c.defaulted) } td { (c.escalated) } td { (c.action_failed) } } }
            }
            @if evidence {
                h2 { "By owner" }
                table {
                    thead { tr { th scope="col" { "Owner" } th scope="col" { "Items" } th scope="col" { "Answered" } th scope="col" { "Status" } } }
                    tbody { @for (owner, (items, answered)) in &owners {
                        tr { td { (owner) } td { (items) } td { (answered) } td { @if answered == items { "done" } @else { "waiting" } } }
                    } }
                }
                h2 { "Evidence" }
                p {
                    a href={"/campaigns/" (segment(&id)) "/evidence.json"} download { "JSON" } " · "
                    a href={"/campaigns/" (segment(&id)) "/evidence.csv"} download { "CSV" } " · "
                    a href={"/campaigns/" (segment(&id)) "/evidence.md"} download { "Markdown" }
                }
            }
        },
    )
}

/// `GET /campaigns/{id}/evidence.{json,csv,md}`: the campaign's evidence report.
pub async fn evidence(
    State(s): State<PageState>,
    headers: HeaderMap,
    Path(file): Path<(String, String)>,
) -> Response {
    let (id, kind) = file;
    let who = match person_of(&s, &headers, "/campaigns").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !may(&s, &who, Op::CampaignReport, None).await {
        return error_page(
            StatusCode::FORBIDDEN,
            "Evidence",
            "you may not read campaign evidence",
        );
    }
    let report = match s.app.engine.campaign_report(&id).await {
        Ok(r) => r,
        Err(crate::engine::EngineError::NotFound(m)) => {
            return error_page(StatusCode::NOT_FOUND, "Evidence", &m);
        }
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Evidence", &e.to_string()),
    };
    let (body, mime) = match kind.as_str() {
        "evidence.json" => (report.to_json(), "application/json"),
        // The report's own CSV writer neutralises formula cells.
        "evidence.csv" => (report.to_csv(), "text/csv; charset=utf-8"),
        "evidence.md" => (report.to_markdown(), "text/markdown; charset=utf-8"),
        _ => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Evidence",
                "evidence comes as evidence.json, evidence.csv or evidence.md",
            );
        }
    };
    let name = format!(
        "attachment; filename=\"campaign-{}.{}\"",
        id.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>(),
        kind.rsplit('.').next().unwrap_or("txt")
    );
    (
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        body,
    )
        .into_response()
}
