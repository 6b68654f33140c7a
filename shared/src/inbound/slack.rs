//! Slack interactivity requests (an owner clicking Approve / Deny): verify the request signature
//! (https://api.slack.com/authentication/verifying-requests-from-slack: `v0=` HMAC-SHA256 of
//! `v0:{timestamp}:{raw body}` with the signing secret, compared in constant time, timestamp
//! within 5 minutes), parse the `block_actions` payload, map the clicking Slack user to a person
//! through the directory, and hand the decision to the engine, which checks it and queues it.
//! Slack needs the answer within 3 seconds; nothing here waits for the workflow.

use super::{Headers, Reply};
use crate::Engine;
use crate::audit;
use crate::engine::EngineError;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use statemachines::{Actor, Decision};
use subtle::ConstantTimeEq;

/// Requests older (or newer) than this are refused as possible replays.
pub const MAX_SKEW_SECS: i64 = 300;
/// Action ids of the approval message's buttons; their `value` is the approval id.
pub const APPROVE_ACTION: &str = "approve";
pub const DENY_ACTION: &str = "deny";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Request-Timestamp or X-Slack-Signature header")]
    MissingHeaders,
    #[error("X-Slack-Request-Timestamp is not a Unix time")]
    BadTimestamp,
    #[error("request timestamp is more than 5 minutes away from now (replay?)")]
    Stale,
    #[error("signature does not match the body (wrong signing secret or altered request)")]
    Mismatch,
}

/// The `v0=` signature Slack sends for `body` at `timestamp`.
pub fn signature(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a request's signature headers against its raw body.
pub fn verify(
    secret: &Secret,
    timestamp: Option<&str>,
    presented: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let (Some(ts), Some(presented)) = (timestamp, presented) else {
        return Err(SignatureError::MissingHeaders);
    };
    let at: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now.timestamp() - at).abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Stale);
    }
    let expected = signature(secret, ts.trim(), body);
    if bool::from(expected.as_bytes().ct_eq(presented.trim().as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: User,
    #[serde(default)]
    actions: Vec<Action>,
}

#[derive(Deserialize)]
struct User {
    id: String,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

/// Handles one interactivity request. `Err` only when storage or the queue is unreachable.
pub async fn handle(
    engine: &Engine,
    signing_secret: &Secret,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Reply, EngineError> {
    let now = engine.clock.now();
    if let Err(e) = verify(
        signing_secret,
        headers.get("x-slack-request-timestamp"),
        headers.get("x-slack-signature"),
        body,
        now,
    ) {
        return refuse(engine, 401, &Actor::System, &e.to_string()).await;
    }
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned());
    let Some(payload) = payload else {
        return refuse(
            engine,
            400,
            &Actor::System,
            "form body has no `payload` field",
        )
        .await;
    };
    let payload: Payload = match serde_json::from_str(&payload) {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                engine,
                400,
                &Actor::System,
                &format!("malformed payload: {e}"),
            )
            .await;
        }
    };
    if payload.kind != "block_actions" {
        return refuse(
            engine,
            400,
            &Actor::System,
            &format!("interaction type `{}` is not handled", payload.kind),
        )
        .await;
    }
    let Some(action) = payload.actions.first() else {
        return refuse(
            engine,
            400,
            &Actor::System,
            "block_actions payload without actions",
        )
        .await;
    };
    let decision = match action.action_id.as_str() {
        APPROVE_ACTION => Decision::Approve,
        DENY_ACTION => Decision::Deny,
        other => {
            return refuse(
                engine,
                400,
                &Actor::System,
                &format!("unknown action `{other}`"),
            )
            .await;
        }
    };
    let Some(approval_id) = action.value.as_deref().filter(|v| !v.is_empty()) else {
        return refuse(
            engine,
            400,
            &Actor::System,
            "the button carries no approval id",
        )
        .await;
    };
    let Some(person) = engine.directory.person_by_chat(&payload.user.id).await? else {
        let who = Actor::Person(format!("slack:{}", payload.user.id));
        let why = format!(
            "Slack user {} is not in the people directory, so Steward cannot tell who decided",
            payload.user.id
        );
        refuse(engine, 200, &who, &why).await?;
        return Ok(ephemeral(&why));
    };
    match engine
        .decide(approval_id, &person.email, decision, None)
        .await
    {
        Ok(_) => Ok(Reply::json(
            200,
            json!({"response_type": "ephemeral", "text": format!("Your decision ({decision:?}) is recorded; the workflow applies it.")}),
        )),
        // The engine audited the refusal already; tell the clicker why, change nothing.
        Err(EngineError::Rejected(r)) => Ok(ephemeral(&r.to_string())),
        Err(EngineError::NotFound(m)) => Ok(ephemeral(&m)),
        Err(e) => Err(e),
    }
}

/// An answer only the clicking person sees.
fn ephemeral(text: &str) -> Reply {
    Reply::json(
        200,
        json!({"response_type": "ephemeral", "replace_original": false, "text": text}),
    )
}

async fn refuse(
    engine: &Engine,
    status: u16,
    actor: &Actor,
    why: &str,
) -> Result<Reply, EngineError> {
    tracing::warn!(why, "Slack interaction refused");
    engine
        .store
        .append_audit(vec![audit::refusal(
            "Slack interaction",
            actor,
            None,
            None,
            why,
            engine.clock.now(),
        )])
        .await?;
    Ok(Reply::json(status, json!({"error": why})))
}
