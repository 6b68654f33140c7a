//! Slack interactivity requests (`POST /slack/interactions`): the `v0=` signature headers and
//! the form body with its `payload` JSON (shared/src/inbound/slack.rs).

use crate::support::keep;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use shared::Secret;
use shared::inbound::slack::verify;
use shared::slack::message::parse_button_value;
use shared::slack::review;
use slack_morphism::prelude::SlackInteractionEvent;

/// The signing secret of Slack's documented worked example ("Verifying requests from Slack").
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// That example's `X-Slack-Request-Timestamp`; the targets' clock reads the same instant.
pub const TIMESTAMP: &str = "1531420618";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_531_420_618, 0).expect("a valid instant")
}

/// Slack's `v0=` signature of `body` at [`TIMESTAMP`].
fn signature(body: &str) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).expect("any key length");
    mac.update(format!("v0:{TIMESTAMP}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Input: `<X-Slack-Request-Timestamp>\n<X-Slack-Signature>\n<body>`, checked with the
/// signing secret at the example's instant.
pub fn slack_signature(data: &[u8]) {
    let (timestamp, rest) = crate::support::split_line(data);
    let (presented, body) = crate::support::split_line(rest);
    let secret = Secret::new(SIGNING_SECRET);
    let timestamp = crate::support::header_value(timestamp);
    let presented = crate::support::header_value(presented);
    keep(verify(&secret, timestamp, presented, body, now()).map_err(|e| e.to_string()));
}

/// Input: the form body Slack posts. The target signs it (so the signature check passes, as
/// it must for any text body) and then reads it as `inbound::slack::handle` does before it
/// asks the engine anything: the `payload` field, the interaction event, the clicking user,
/// the first action, the button value and the message's inputs.
pub fn slack_interaction(body: &[u8]) {
    let secret = Secret::new(SIGNING_SECRET);
    if let Ok(text) = std::str::from_utf8(body) {
        let signed = signature(text);
        let verified = verify(&secret, Some(TIMESTAMP), Some(&signed), body, now());
        assert_eq!(
            verified,
            Ok(()),
            "a body signed with the signing secret must verify"
        );
    }
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned());
    let Some(payload) = payload else {
        return;
    };
    let event: SlackInteractionEvent = match serde_json::from_str(&payload) {
        Ok(e) => e,
        Err(e) => {
            keep(format!("malformed interaction payload: {e}"));
            return;
        }
    };
    let SlackInteractionEvent::BlockActions(click) = event else {
        let kind = serde_json::from_str::<Value>(&payload)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_string))
            .unwrap_or_default();
        keep(kind);
        return;
    };
    keep(click.user.as_ref().map(|u| u.id.to_string()));
    keep(click.response_url.as_ref().map(|u| u.0.to_string()));
    if let Some(action) = click.actions.as_ref().and_then(|a| a.first()) {
        let action_id = action.action_id.to_string();
        keep(action.value.as_deref().and_then(parse_button_value));
        keep(
            [
                review::KEEP_ACTION,
                review::REDUCE_ACTION,
                review::REVOKE_ACTION,
                review::DROP_ACTION,
            ]
            .contains(&action_id.as_str()),
        );
        keep(
            action
                .action_ts
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| click.trigger_id.to_string()),
        );
    }
    let reason = shared::inbound::slack::typed_reason(&click);
    let picked = shared::inbound::slack::picked_scopes(&click);
    keep((reason, picked));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example verifies with the targets' secret and clock.
    #[test]
    fn the_worked_example_verifies() {
        let data = crate::support::seed("slack_signature", "slack-worked-example.txt");
        let (ts, rest) = crate::support::split_line(&data);
        let (sig, body) = crate::support::split_line(rest);
        let secret = Secret::new(SIGNING_SECRET);
        let (ts, sig) = (std::str::from_utf8(ts).ok(), std::str::from_utf8(sig).ok());
        assert_eq!(verify(&secret, ts, sig, body, now()), Ok(()));
    }
}
