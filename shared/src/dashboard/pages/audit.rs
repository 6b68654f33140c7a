//! The audit trail: OCSF records a page at a time in the order they were sealed, filtered,
//! and the hash chain of every record read for the page checked as it is shown.

use super::{PageState, error_page, may, page, person_of};
use crate::http::routes::Op;
use crate::ports::store::ChainedAudit;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use std::collections::HashMap;

/// Records shown on a page.
const PAGE: usize = 100;
/// Records read for one page while filtering.
const READ_LIMIT: usize = 5_000;

#[derive(Debug, Default, Deserialize)]
pub struct AuditFilter {
    /// Continue after this sequence number.
    #[serde(default)]
    after: u64,
    /// Text anywhere in the record (agent, person, event, message).
    #[serde(default)]
    q: String,
    /// Only refusals and failures.
    #[serde(default)]
    failures: Option<String>,
}

/// What the chain says about the records read: each record's hash recomputed, and each one
/// linked to the one before it on its chain when both were read.
pub struct Verified {
    pub records: usize,
    pub broken: Vec<String>,
}

pub fn verify(rows: &[ChainedAudit]) -> Verified {
    let mut last: HashMap<u32, &ChainedAudit> = HashMap::new();
    let mut broken = Vec::new();
    for r in rows {
        if crate::audit::chain_hash(&r.prev_hash, &r.record) != r.hash {
            broken.push(format!(
                "record {} (seq {}) does not match its hash",
                r.record.id, r.seq
            ));
        }
        if let Some(before) = last.get(&r.chain)
            && before.hash != r.prev_hash
        {
            broken.push(format!(
                "record {} (seq {}) does not follow record {} (seq {})",
                r.record.id, r.seq, before.record.id, before.seq
            ));
        }
        last.insert(r.chain, r);
    }
    Verified {
        records: rows.len(),
        broken,
    }
}

/// What a record is about: Steward's event name, else its OCSF class.
pub(super) fn event_of(body: &serde_json::Value) -> &str {
    body["unmapped"]["steward_event"]
        .as_str()
        .or(body["class_name"].as_str())
        .unwrap_or("")
}

/// Who a record names as its actor: a person's id, a schedule's or system's name, a client.
pub(super) fn actor_of(body: &serde_json::Value) -> &str {
    let a = &body["actor"];
    [&a["user"]["uid"], &a["user"]["name"], &a["app_uid"]]
        .into_iter()
        .find_map(|v| v.as_str())
        .unwrap_or("")
}

fn failed(r: &ChainedAudit) -> bool {
    r.record.body["status_id"].as_u64() == Some(2)
        || r.record.body["unmapped"]["steward_event"]
            .as_str()
            .is_some_and(|e| e.contains("refused") || e.contains("failed"))
}

/// `GET /audit`.
pub async fn audit(
    State(s): State<PageState>,
    headers: HeaderMap,
    Query(f): Query<AuditFilter>,
) -> Response {
    let who = match person_of(&s, &headers, "/audit").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !may(&s, &who, Op::ExportAudit, None).await {
        return error_page(
            StatusCode::FORBIDDEN,
            "Audit",
            "the audit trail is for security approvers and operators",
        );
    }
    let store = &s.app.engine.store;
    let q = f.q.trim().to_lowercase();
    let only_failures = f.failures.is_some();
    let mut read: Vec<ChainedAudit> = Vec::new();
    let mut shown: Vec<ChainedAudit> = Vec::new();
    let mut after = f.after;
    let mut more = false;
    while shown.len() < PAGE && read.len() < READ_LIMIT {
        let batch = match store.audit(after, 500).await {
            Ok(b) => b,
            Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Audit", &e.to_string()),
        };
        let done = batch.len() < 500;
        for r in batch {
            after = r.seq;
            let text = r.record.body.to_string().to_lowercase();
            let keep = (q.is_empty() || text.contains(&q)) && (!only_failures || failed(&r));
            if keep && shown.len() < PAGE {
                shown.push(r.clone());
            } else if keep {
                more = true;
            }
            read.push(r);
        }
        if done {
            break;
        }
        more = true;
    }
    let verified = verify(&read);
    let next = shown.last().map(|r| r.seq);
    page(
        StatusCode::OK,
        "Audit trail",
        Some(&who),
        html! {
            form class="filters" method="get" action="/audit" role="search" {
                label for="a-q" { "Search" }
                input id="a-q" type="text" name="q" value=(f.q);
                label for="a-failures" {
                    input id="a-failures" type="checkbox" name="failures" value="1" checked[only_failures];
                    " Only refusals and failures"
                }
                button type="submit" { "Filter" }
            }
            @if verified.broken.is_empty() {
                p class="notice" role="status" { "Hash chain verified over the " (verified.records) " records read for this page." }
            } @else {
                div class="error" role="alert" {
                    p { "The hash chain does not verify:" }
                    ul { @for b in &verified.broken { li { (b) } } }
                }
            }
            @if shown.is_empty() { p { "No record matches." } }
            @else {
                table {
                    thead { tr { th scope="col" { "Seq" } th scope="col" { "Time" } th scope="col" { "Event" } th scope="col" { "Who" } th scope="col" { "Outcome" } th scope="col" { "Message" } } }
                    tbody { @for r in &shown {
                        @let b = &r.record.body;
                        tr {
                            td { (r.seq) }
                            td { (r.record.time.format("%Y-%m-%d %H:%M:%S")) }
                            td { (event_of(b)) }
                            td { (actor_of(b)) }
                            td { @if failed(r) { "refused or failed" } @else { "ok" } }
                            td { (b["message"].as_str().unwrap_or("")) }
                        }
                    } }
                }
            }
            @if more && let Some(n) = next {
                p { a rel="next" href={"/audit?after=" (n) "&q=" (form_urlencoded::byte_serialize(f.q.as_bytes()).collect::<String>()) @if only_failures { "&failures=1" }} { "Next records" } }
            }
        },
    )
}
