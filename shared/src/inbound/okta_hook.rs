//! Okta event hooks (https://developer.okta.com/docs/concepts/event-hooks/): the one-time
//! verification GET (`X-Okta-Verification-Challenge` → `{"verification": ...}`), then POSTed
//! deliveries carrying the static `Authorization` value configured on the hook, checked in
//! constant time. Deliveries are at least once: each event is recorded once, by its `uuid`
//! (the audit record's id), and remembered as seen for the workflows that will consume events.
//! Every new event is audited as received; routing events to workflows comes with the
//! workflows that consume them (owner loss, anomalies).

use super::{Headers, Reply};
use crate::Engine;
use crate::audit;
use crate::secret::Secret;
use serde::Deserialize;
use serde_json::json;
use statemachines::Actor;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Okta retries a delivery once; a day covers any redelivery.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
struct Delivery {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    events: Vec<Event>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    uuid: String,
    event_type: String,
    #[serde(default)]
    target: Vec<Target>,
    #[serde(default)]
    actor: Option<Target>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    #[serde(default)]
    id: String,
    #[serde(default)]
    display_name: Option<String>,
}

/// Handles one request to the hook endpoint. `Err` only when storage is unreachable (Okta then
/// retries once).
pub async fn handle(
    engine: &Engine,
    hook_secret: &Secret,
    method: &str,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Reply, crate::engine::EngineError> {
    let presented = headers.get("authorization").unwrap_or("");
    let authorized: bool = presented
        .as_bytes()
        .ct_eq(hook_secret.expose().as_bytes())
        .into();
    if !authorized {
        let why = if presented.is_empty() {
            "missing Authorization header"
        } else {
            "wrong Authorization header"
        };
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
            let delivery: Delivery = match serde_json::from_slice(body) {
                Ok(d) => d,
                Err(e) => {
                    return refuse(engine, 400, &format!("malformed event hook delivery: {e}"))
                        .await;
                }
            };
            let now = engine.clock.now();
            // The audit record's id comes from the event's uuid, and stores keep a record id
            // once: a redelivery (or a retry after a failure half-way) is recorded once. Only
            // then is the event remembered as seen.
            let records = delivery
                .data
                .events
                .iter()
                .map(|ev| {
                    let subject = ev
                        .target
                        .first()
                        .or(ev.actor.as_ref())
                        .map(|t| t.display_name.clone().unwrap_or_else(|| t.id.clone()))
                        .unwrap_or_default();
                    audit::idp_event_received("okta", &ev.event_type, &ev.uuid, &subject, now)
                })
                .collect();
            engine.store.append_audit(records).await?;
            for ev in &delivery.data.events {
                if !engine
                    .store
                    .remember_inbound("okta", &ev.uuid, DEDUPE_WINDOW)
                    .await?
                {
                    tracing::info!(uuid = %ev.uuid, "Okta event delivered again; already recorded");
                }
            }
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

async fn refuse(
    engine: &Engine,
    status: u16,
    why: &str,
) -> Result<Reply, crate::engine::EngineError> {
    tracing::warn!(why, "Okta event hook request refused");
    engine
        .store
        .append_audit(vec![audit::refusal(
            "Okta event hook request",
            &Actor::System,
            None,
            None,
            why,
            engine.clock.now(),
        )])
        .await?;
    Ok(Reply::json(status, json!({"error": why})))
}
