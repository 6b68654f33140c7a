//! The admin API's request bodies and query strings (shared/src/admin.rs), read by the same
//! axum extractors the router's `Body` and `Params` wrap (shared/src/http/error.rs), then put
//! through the checks that need no engine.

use crate::support::keep;
use axum::extract::{FromRequest as _, Query};
use serde::de::DeserializeOwned;
use shared::admin::*;

/// A JSON body of type `T`, as `Body<T>` reads it (`axum::Json`).
fn body<T: DeserializeOwned>(json: &[u8]) -> Option<T> {
    let request = http::Request::builder()
        .method("POST")
        .uri("/api/fuzz")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(json.to_vec()))
        .expect("a request");
    match crate::support::block_on(axum::Json::<T>::from_request(request, &())) {
        Ok(axum::Json(v)) => Some(v),
        Err(rejection) => {
            keep(rejection.body_text());
            None
        }
    }
}

/// Input: one selector byte (which body, in the order below), then the JSON body.
pub fn api_body(data: &[u8]) {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    let policy = crate::config::example_policy();
    let today = crate::support::today();
    match which % 14 {
        0 => {
            if let Some(b) = body::<AgentRequestBody>(json) {
                keep(b.request.check(policy, today));
            }
        }
        1 => {
            if let Some(b) = body::<TokenCreateBody>(json)
                && let Some(ttl) = b.ttl
            {
                // As `personal_token::mint` reads it.
                let d = humantime::parse_duration(ttl.trim()).ok();
                keep(d.map(chrono::Duration::from_std));
            }
        }
        2 => {
            if let Some(b) = body::<ScopeChangeBody>(json) {
                let mut reasons = Vec::new();
                policy.check_scopes("add", &b.request.add, &mut reasons);
                if let Some(secs) = b.request.token_lifetime_secs {
                    policy.check_token_lifetime(secs, &mut reasons);
                }
                keep(reasons);
            }
        }
        3 => keep(body::<OwnerBody>(json).map(|b| b.owner)),
        4 => keep(body::<CancelBody>(json).map(|b| b.reason)),
        5 => keep(body::<DecisionBody>(json).map(|b| (b.reason, b.action_hash))),
        6 => keep(body::<RotateBody>(json)),
        7 => keep(body::<DecommissionBody>(json).map(|b| b.reason)),
        8 => keep(body::<RenewBody>(json).map(|b| (b.until, b.reason))),
        9 => {
            if let Some(b) = body::<CampaignBody>(json) {
                keep(statemachines::review::check_id(&b.id).is_ok());
                keep(b.request());
            }
        }
        10 => {
            if let Some(b) = body::<ReviewAnswerBody>(json) {
                keep(b.decision());
            }
        }
        11 => keep(body::<FreezeBody>(json).map(|b| b.reason)),
        12 => keep(body::<ClaimBody>(json).map(|b| b.claim)),
        _ => keep(body::<ReleaseBody>(json).map(|b| b.reason)),
    }
}

/// A query string of type `T`, as `Params<T>` reads it (`axum::extract::Query`).
fn query<T: DeserializeOwned>(uri: &http::Uri) {
    match Query::<T>::try_from_uri(uri) {
        Ok(Query(v)) => {
            keep(v);
        }
        Err(rejection) => {
            keep(rejection.body_text());
        }
    }
}

/// Input: one selector byte (approvals, audit, grants, report), then the query string. Only
/// strings that make a valid request target are read, as only those reach the router.
pub fn api_query(data: &[u8]) {
    let Some((&which, raw)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(raw) else {
        return;
    };
    let Ok(uri) = format!("/api/fuzz?{text}").parse::<http::Uri>() else {
        return;
    };
    match which % 4 {
        0 => query::<ApprovalsQuery>(&uri),
        1 => query::<AuditQuery>(&uri),
        2 => query::<GrantsQuery>(&uri),
        _ => query::<ReportQuery>(&uri),
    }
}
