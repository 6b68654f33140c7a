//! Slack interactivity requests (a person clicking Approve / Deny). slack-morphism verifies the
//! request signature (`v0=` HMAC-SHA256 of `v0:{timestamp}:{raw body}` with the signing secret,
//! compared in constant time) and parses the `block_actions` payload; the timestamp window
//! (5 minutes) is checked here against the engine's clock. The clicking Slack user is mapped to
//! a person, and the engine checks the decision and queues it: Slack needs its answer within
//! 3 seconds, so nothing here waits for the workflow. The person gets an ephemeral answer.

use super::{Headers, Reply};
use crate::Engine;
use crate::audit;
use crate::engine::EngineError;
use crate::secret::Secret;
use crate::slack::SlackWeb;
use crate::slack::message::{
    APPROVE_ACTION, DENY_ACTION, REASON_ACTION, REASON_BLOCK, parse_button_value,
};
use crate::slack::review;
use chrono::{DateTime, Utc};
use serde_json::json;
use slack_morphism::prelude::{SlackInteractionActionInfo, SlackInteractionBlockActionsEvent};
use slack_morphism::prelude::{SlackInteractionEvent, SlackSigningSecret};
use slack_morphism::signature_verifier::{
    SlackEventSignatureVerifier, SlackEventSignatureVerifierError,
};
use statemachines::review_item::ReviewDecision;
use statemachines::{Actor, Decision};
use std::time::Duration;

/// Requests older (or newer) than this are refused as possible replays (Slack's rule).
pub const MAX_SKEW_SECS: i64 = SlackEventSignatureVerifier::MAX_TIMESTAMP_AGE_SECONDS;
/// A click is remembered this long, so Slack's retries of the same delivery count once.
pub const ACTION_DEDUPE_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Slack waits 3 s for the acknowledgement (api.slack.com/interactivity/handling#acknowledgment_response).
/// Finding the clicker in Slack gets at most this long, and so does the ephemeral answer; the
/// rest (store, queue) takes milliseconds.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(1000);
pub const EPHEMERAL_TIMEOUT: Duration = Duration::from_millis(1000);

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

/// The reason the clicker typed in the message's reason field, trimmed; `None` when empty.
pub fn typed_reason(click: &SlackInteractionBlockActionsEvent) -> Option<String> {
    click
        .state
        .as_ref()
        .and_then(|s| s.values.get(&REASON_BLOCK.into()))
        .and_then(|b| b.get(&REASON_ACTION.into()))
        .and_then(|v| v.value.clone())
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
}

/// The scopes a reviewer picked to drop in a review item's scope picker.
pub fn picked_scopes(click: &SlackInteractionBlockActionsEvent) -> Vec<String> {
    click
        .state
        .as_ref()
        .and_then(|s| s.values.get(&review::DROP_BLOCK.into()))
        .and_then(|b| b.get(&review::DROP_ACTION.into()))
        .and_then(|v| v.selected_options.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.value)
        .collect()
}

/// Why a request's signature does not hold, or `None` when it does. A caller with its own
/// bounded refusal recorder checks this first and answers [`unauthenticated_reply`], so a
/// flood of forged clicks does not write one audit record each.
pub fn unauthenticated(
    secret: &Secret,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
    now: DateTime<Utc>,
) -> Option<String> {
    verify(
        secret,
        headers.get("x-slack-request-timestamp"),
        headers.get("x-slack-signature"),
        body,
        now,
    )
    .err()
    .map(|e| e.to_string())
}

/// The answer to a request whose signature does not hold.
pub fn unauthenticated_reply(why: &str) -> Reply {
    Reply::json(401, json!({"error": why}))
}

/// What an audit record of a refused interaction names as refused.
pub const REFUSED: &str = "Slack interaction";

/// Checks a request's signature headers against its raw body at time `now`.
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
    let ts = ts.trim();
    let at: i64 = ts.parse().map_err(|_| SignatureError::BadTimestamp)?;
    // Slack bodies are form-encoded ASCII; anything else cannot carry a valid signature.
    let body = std::str::from_utf8(body).map_err(|_| SignatureError::Mismatch)?;
    let verifier =
        SlackEventSignatureVerifier::new(&SlackSigningSecret::new(secret.expose().to_string()));
    match verifier.verify(presented.trim(), body, ts) {
        // slack-morphism checks the age against the system clock after the signature matched;
        // the window below uses the engine's clock instead (testable, and the same rule).
        Ok(()) | Err(SlackEventSignatureVerifierError::IncorrectOrExpiredTimestampError(_)) => {}
        Err(_) => return Err(SignatureError::Mismatch),
    }
    if (now.timestamp() - at).abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// Handles one interactivity request. `slack` answers the clicker on the response_url and maps
/// Slack users to people by email when the people file has no Slack ids. `Err` only when
/// storage or the queue is unreachable.
pub async fn handle(
    engine: &Engine,
    signing_secret: &Secret,
    slack: Option<&SlackWeb>,
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
    let event: SlackInteractionEvent = match serde_json::from_str(&payload) {
        Ok(e) => e,
        Err(e) => {
            let why = format!("malformed interaction payload: {e}");
            return refuse(engine, 400, &Actor::System, &why).await;
        }
    };
    let SlackInteractionEvent::BlockActions(click) = event else {
        let kind = serde_json::from_str::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_string))
            .unwrap_or_default();
        let why =
            format!("interaction type `{kind}` is not handled; Steward only takes button clicks");
        return refuse(engine, 400, &Actor::System, &why).await;
    };
    let Some(user) = click.user.as_ref().map(|u| u.id.to_string()) else {
        return refuse(
            engine,
            400,
            &Actor::System,
            "block_actions payload names no user",
        )
        .await;
    };
    let slack_actor = Actor::Person(format!("slack:{user}"));
    let Some(action) = click.actions.as_ref().and_then(|a| a.first()) else {
        return refuse(
            engine,
            400,
            &slack_actor,
            "block_actions payload without actions",
        )
        .await;
    };
    let action_id = action.action_id.to_string();
    if action_id == review::DROP_ACTION {
        // Picking scopes is not an answer yet: the Reduce button reads the picker's state.
        return Ok(Reply::json(200, json!({})));
    }
    if [
        review::KEEP_ACTION,
        review::REDUCE_ACTION,
        review::REVOKE_ACTION,
    ]
    .contains(&action_id.as_str())
    {
        return review_click(engine, slack, &click, action, &user, &slack_actor).await;
    }
    let decision = match action_id.as_str() {
        APPROVE_ACTION => Decision::Approve,
        DENY_ACTION => Decision::Deny,
        other => {
            let why = format!("unknown action `{other}`");
            return refuse(engine, 400, &slack_actor, &why).await;
        }
    };
    let Some((approval_id, shown)) = action.value.as_deref().and_then(parse_button_value) else {
        let why = "the button carries no `<approval id>:<request hash>` value";
        return refuse(engine, 400, &slack_actor, why).await;
    };
    let response_url = click.response_url.as_ref().map(|u| u.0.to_string());
    let answer = |text: String| answer_clicker(slack, response_url.as_deref(), text);

    let candidates = match engine.store.approval(approval_id).await? {
        Some(record) => {
            let r = &record.request;
            r.approvers
                .iter()
                .chain([&r.requester, &r.owner])
                .filter(|e| !e.is_empty())
                .cloned()
                .collect()
        }
        None => vec![],
    };
    let Ok(found) = tokio::time::timeout(
        LOOKUP_TIMEOUT,
        clicker_email(engine, slack, &user, &candidates),
    )
    .await
    else {
        tracing::warn!(user, "finding the clicker in Slack took too long");
        return answer(
            "Slack was too slow to tell Steward who you are; nothing was decided. Please click again."
                .into(),
        )
        .await;
    };
    let email = match found? {
        Clicker::Known(email) => email,
        Clicker::SlackUnreachable(e) => {
            tracing::warn!(error = %e, "Slack lookup failed while identifying a clicker");
            return answer(format!(
                "Steward could not ask Slack who you are ({e}); nothing was decided. Please click again."
            ))
            .await;
        }
        Clicker::Unknown => {
            let why = format!(
                "Slack user {user} is not one of the allowed approvers of {approval_id} (nor in the people directory with this Slack id); nothing was decided"
            );
            refuse(engine, 200, &slack_actor, &why).await?;
            return answer(why).await;
        }
    };
    let reason = typed_reason(&click);
    let decided = engine
        .decide(approval_id, &email, decision, reason, Some(shown))
        .await;
    slack_call(
        engine,
        &email,
        &user,
        &format!("{decision:?} {approval_id}"),
        &decided,
    )
    .await;
    match decided {
        Ok(_) => {
            let word = match decision {
                Decision::Approve => "Approve",
                Decision::Deny => "Deny",
            };
            // Slack retries a delivery it saw no answer for: the engine applies the decision
            // once (its event id is the approval, the person and the decision), and the retry
            // is told so. Remembered only once acted on, so a failed attempt can be retried.
            let action_ts = action
                .action_ts
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| click.trigger_id.to_string());
            if !engine
                .store
                .remember_inbound(
                    "slack-action",
                    &format!("{user}/{action_ts}"),
                    ACTION_DEDUPE_WINDOW,
                )
                .await?
            {
                return answer(format!(
                    "This click was already received; your {word} counts once."
                ))
                .await;
            }
            answer(format!(
                "Received your {word} on {approval_id}. The first valid decision applies; the message updates when the request is decided."
            ))
            .await
        }
        // The engine audited the refusal already; tell the clicker why, change nothing.
        Err(EngineError::Rejected(r)) => answer(r.to_string()).await,
        Err(EngineError::NotFound(m)) => answer(m).await,
        Err(e) => Err(e),
    }
}

/// Who clicked, as far as Steward can tell.
enum Clicker {
    Known(String),
    Unknown,
    /// Slack could not be asked, so "unknown" would be a guess.
    SlackUnreachable(crate::slack::SlackError),
}

/// The person behind a Slack user: the people file's Slack id first, else the approval's
/// people looked up by email in Slack (so a requester clicking is recognised as the requester).
async fn clicker_email(
    engine: &Engine,
    slack: Option<&SlackWeb>,
    user: &str,
    candidates: &[String],
) -> Result<Clicker, EngineError> {
    if let Some(person) = engine.directory.person_by_chat(user).await? {
        return Ok(Clicker::Known(person.email));
    }
    let Some(web) = slack else {
        return Ok(Clicker::Unknown);
    };
    let mut failed = None;
    for email in candidates {
        match web.user_id(email).await {
            Ok(Some(id)) if id == user => return Ok(Clicker::Known(email.clone())),
            Ok(_) => {}
            Err(e) => failed = Some(e),
        }
    }
    Ok(failed.map_or(Clicker::Unknown, Clicker::SlackUnreachable))
}

/// A click on an access-review item: Keep, Reduce (with the scopes picked in the message) or
/// Revoke. The engine checks the reviewer and queues the answer.
async fn review_click(
    engine: &Engine,
    slack: Option<&SlackWeb>,
    click: &SlackInteractionBlockActionsEvent,
    action: &SlackInteractionActionInfo,
    user: &str,
    slack_actor: &Actor,
) -> Result<Reply, EngineError> {
    let Some(item_id) = action.value.as_deref().filter(|v| !v.is_empty()) else {
        return refuse(
            engine,
            400,
            slack_actor,
            "the button carries no review item id",
        )
        .await;
    };
    let response_url = click.response_url.as_ref().map(|u| u.0.to_string());
    let answer = |text: String| answer_clicker(slack, response_url.as_deref(), text);
    let candidates = engine.review_people(item_id).await?;
    let email = match tokio::time::timeout(
        LOOKUP_TIMEOUT,
        clicker_email(engine, slack, user, &candidates),
    )
    .await
    {
        Err(_) => {
            return answer("Slack was too slow to tell Steward who you are; nothing was decided. Please click again.".into()).await;
        }
        Ok(found) => match found? {
            Clicker::Known(email) => email,
            Clicker::SlackUnreachable(e) => {
                return answer(format!("Steward could not ask Slack who you are ({e}); nothing was decided. Please click again.")).await;
            }
            Clicker::Unknown => {
                let why = format!(
                    "Slack user {user} may not answer review {item_id} (not its owner, the owner's manager or a security approver); nothing was decided"
                );
                refuse(engine, 200, slack_actor, &why).await?;
                return answer(why).await;
            }
        },
    };
    let picked = picked_scopes(click);
    let reason = typed_reason(click);
    let decision = match action.action_id.to_string().as_str() {
        review::KEEP_ACTION => ReviewDecision::Keep,
        review::REDUCE_ACTION => ReviewDecision::Reduce { drop: picked },
        _ => ReviewDecision::Revoke,
    };
    let word = decision.as_str();
    let decided = engine
        .decide_review(item_id, &email, decision, reason)
        .await;
    slack_call(
        engine,
        &email,
        user,
        &format!("review {word} {item_id}"),
        &decided,
    )
    .await;
    match decided {
        Ok(()) => {
            answer(format!(
                "Received your {word} on {item_id}. The message updates when it is applied."
            ))
            .await
        }
        Err(EngineError::Rejected(r)) => answer(r.to_string()).await,
        Err(EngineError::NotFound(m)) => answer(m).await,
        Err(e) => Err(e),
    }
}

/// Tells the clicker `text` on the interaction's response_url (best effort, bounded) and as
/// the reply itself.
async fn answer_clicker(
    slack: Option<&SlackWeb>,
    response_url: Option<&str>,
    text: String,
) -> Result<Reply, EngineError> {
    if let (Some(web), Some(url)) = (slack, response_url) {
        match tokio::time::timeout(EPHEMERAL_TIMEOUT, web.respond_ephemeral(url, &text)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not answer the clicker"),
            Err(_) => tracing::warn!("answering the clicker took too long; skipped"),
        }
    }
    Ok(ephemeral(&text))
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

/// A decision a person made by clicking in Slack, audited like an API call: the person the
/// directory maps the Slack user to, the Slack user id, and the source `slack`.
async fn slack_call<T>(
    engine: &Engine,
    person: &str,
    slack_user: &str,
    operation: &str,
    outcome: &Result<T, EngineError>,
) {
    let status = match outcome {
        Ok(_) => 202,
        Err(EngineError::Rejected(_)) => 422,
        Err(EngineError::NotFound(_)) => 404,
        Err(_) => 503,
    };
    let token = format!("slack:{slack_user}");
    let record = audit::call(
        audit::Caller {
            kind: "person",
            id: person,
            token_id: Some(&token),
            via: Some("slack-signature"),
        },
        "slack",
        operation,
        status,
        None,
        engine.clock.now(),
    );
    if let Err(e) = engine.store.append_audit(vec![record]).await {
        tracing::error!(error = %e, "could not audit a Slack decision");
    }
}
