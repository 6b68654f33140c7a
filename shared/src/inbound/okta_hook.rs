//! Okta event hooks (<https://developer.okta.com/docs/concepts/event-hooks/>): the one-time
//! verification GET (`X-Okta-Verification-Challenge` → `{"verification": ...}`), then POSTed
//! deliveries carrying the static `Authorization` value configured on the hook, checked in
//! constant time. Each event is mapped by [`okta_events`] and handed to [`intake::accept`],
//! which records and applies it once by its `uuid` (deliveries are at least once, maybe out of
//! order). The work an event starts runs on the queue, so the answer is back well within
//! Okta's 3-second timeout.

use super::{Headers, Reply, okta_events};
use crate::Engine;
use crate::audit;
use crate::intake;
use crate::secret::Secret;
use serde_json::{Value, json};
use statemachines::Actor;
use subtle::ConstantTimeEq;

/// Okta delivers a handful of events per request; a body this large is not an Okta delivery.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Handles one request to the hook endpoint. `Err` only when storage is unreachable (Okta then
/// retries once).
pub async fn handle(
    engine: &Engine,
    hook_secret: &Secret,
    method: &str,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Reply, crate::engine::EngineError> {
    if let Some(why) = unauthenticated(hook_secret, headers) {
        return refuse(engine, 401, why).await;
    }
    match method {
        "GET" => match headers.get("x-okta-verification-challenge") {
            Some(challenge) => Ok(Reply::json(200, json!({"verification": challenge}))),
            None => {
                refuse(
                    engine,
                    400,
                    "verification request without X-Okta-Verification-Challenge",
                )
                .await
            }
        },
        "POST" => {
            if body.len() > MAX_BODY_BYTES {
                return refuse(
                    engine,
                    413,
                    &format!(
                        "event hook delivery is {} bytes; the limit is {MAX_BODY_BYTES}",
                        body.len()
                    ),
                )
                .await;
            }
            let delivery: Value = match serde_json::from_slice(body) {
                Ok(d) => d,
                Err(e) => {
                    return refuse(engine, 400, &format!("malformed event hook delivery: {e}"))
                        .await;
                }
            };
            let Some(events) = delivery["data"]["events"].as_array() else {
                return refuse(
                    engine,
                    400,
                    "malformed event hook delivery: no data.events list",
                )
                .await;
            };
            // One unreadable event does not drop its neighbours: Okta does not redeliver after
            // a 4xx, so the readable ones are applied and the unreadable one is audited.
            // The unreadable ones are audited together, in one write per delivery.
            let mut received = Vec::with_capacity(events.len());
            let mut unreadable = Vec::new();
            for ev in events {
                match okta_events::received(ev) {
                    Ok(r) => received.push(r),
                    Err(e) => {
                        tracing::warn!(why = %e, "Okta event hook event refused");
                        unreadable.push(refusal(engine, &e.to_string()));
                    }
                }
            }
            engine.store.append_audit(unreadable).await?;
            intake::accept(engine, received).await?;
            Ok(Reply::empty(200))
        }
        other => {
            refuse(
                engine,
                405,
                &format!("method {other} is not used by Okta event hooks"),
            )
            .await
        }
    }
}

/// Why a request does not carry the hook's Authorization value, or `None` when it does. A
/// caller with its own bounded refusal recorder checks this first and answers
/// [`unauthenticated_reply`], so a flood of guesses does not write one audit record each.
pub fn unauthenticated(
    hook_secret: &Secret,
    headers: &(impl Headers + ?Sized),
) -> Option<&'static str> {
    let presented = headers.get("authorization").unwrap_or("");
    if authorized(presented, hook_secret) {
        None
    } else if presented.is_empty() {
        Some("missing Authorization header")
    } else {
        Some("wrong Authorization header")
    }
}

/// The answer to a request without the hook's Authorization value.
pub fn unauthenticated_reply(why: &str) -> Reply {
    Reply::json(401, json!({"error": why}))
}

/// What an audit record of a refused hook request names as refused.
pub const REFUSED: &str = "Okta event hook request";

async fn refuse(
    engine: &Engine,
    status: u16,
    why: &str,
) -> Result<Reply, crate::engine::EngineError> {
    tracing::warn!(why, "Okta event hook request refused");
    engine
        .store
        .append_audit(vec![refusal(engine, why)])
        .await?;
    Ok(Reply::json(status, json!({"error": why})))
}

fn refusal(engine: &Engine, why: &str) -> crate::ports::store::AuditRecord {
    audit::refusal(REFUSED, &Actor::System, None, None, why, engine.clock.now())
}

/// The presented Authorization value is the hook's secret. An empty secret authorizes nothing
/// (the settings refuse one at start; this holds even if one slipped through), so a request
/// without the header never matches it.
fn authorized(presented: &str, hook_secret: &Secret) -> bool {
    let expected = hook_secret.expose().as_bytes();
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_authorizes_and_an_empty_secret_authorizes_nothing() {
        let secret = Secret::new("hook value 0123456789");
        assert!(authorized("hook value 0123456789", &secret));
        assert!(!authorized("hook value 012345678", &secret));
        assert!(!authorized("", &secret));
        assert!(!authorized("", &Secret::new("")));
        assert!(!authorized("x", &Secret::new("")));
    }

    #[test]
    fn an_unauthenticated_request_is_told_apart_from_a_wrong_one() {
        let secret = Secret::new("hook value 0123456789");
        let with = |value: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(v) = value {
                headers.insert("authorization", v.parse().unwrap());
            }
            unauthenticated(&secret, &headers)
        };
        assert_eq!(with(Some("hook value 0123456789")), None);
        assert_eq!(with(None), Some("missing Authorization header"));
        assert_eq!(with(Some("guess")), Some("wrong Authorization header"));
    }
}
