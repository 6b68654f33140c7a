//! Posting a message once, across crashes. A command that posts may run again (its result was
//! lost to a crash, or its delivery came back): what it already posted must not be posted twice.
//! Before posting, a marker (a record with an empty `ts`) says a post is about to be made; the
//! message carries Slack message metadata naming it (`<subject>/<route>`); after the post, the
//! record gets the message's `ts`. A repeat that finds a marker without a `ts` searches the
//! conversation from the marker's time before it posts.

use super::client::SlackWeb;
use crate::ports::Store;
use crate::ports::human_channel::NotifyError;
use crate::ports::store::PostedMessage;
use chrono::Utc;
use slack_morphism::prelude::SlackBlock;

/// A store failure while posting: worth retrying.
pub(super) fn store_error(e: crate::ports::store::StoreError) -> NotifyError {
    NotifyError {
        message: e.to_string(),
        retryable: true,
        retry_after: None,
    }
}

/// Posts one message of `subject` under `route` to `to`, once; returns where it is (channel,
/// ts), whether this call posted it or an earlier one did. `posted` is what the store holds for
/// `subject`. `crash_point` names this post for the crash tests: with
/// `STEWARD_CRASH_AFTER=<crash_point>` the process aborts right after Slack accepted the
/// message, before it is recorded.
#[allow(clippy::too_many_arguments)]
pub async fn post(
    web: &SlackWeb,
    store: &dyn Store,
    posted: &[PostedMessage],
    subject: &str,
    route: &str,
    to: &str,
    text: &str,
    blocks: Vec<SlackBlock>,
    thread_ts: Option<&str>,
    crash_point: &str,
) -> Result<(String, String), NotifyError> {
    if let Some(m) = posted.iter().find(|m| m.route == route && !m.ts.is_empty()) {
        return Ok((m.channel.clone(), m.ts.clone()));
    }
    let tag = format!("{subject}/{route}");
    let record = |channel: String, ts: String| PostedMessage {
        channel,
        ts,
        route: route.into(),
        at: Some(Utc::now()),
    };
    if let Some(marker) = posted.iter().find(|m| m.route == route) {
        // A post was about to be made: maybe it was, and the process died before recording it.
        let since = marker.at.unwrap_or_else(Utc::now) - chrono::Duration::minutes(1);
        if let Some((channel, ts)) = web
            .find_tagged(&marker.channel, &tag, since)
            .await
            .map_err(NotifyError::from)?
        {
            tracing::info!(
                subject,
                route,
                "found the message posted before a crash; not posting again"
            );
            store
                .put_message(subject, record(channel.clone(), ts.clone()))
                .await
                .map_err(store_error)?;
            return Ok((channel, ts));
        }
    }
    web.admit("chat.postMessage", Some(to))
        .await
        .map_err(NotifyError::from)?;
    store
        .put_message(subject, record(to.into(), String::new()))
        .await
        .map_err(store_error)?;
    let (channel, ts) = web
        .post_admitted(to, text, blocks, thread_ts, Some(&tag))
        .await
        .map_err(NotifyError::from)?;
    if std::env::var("STEWARD_CRASH_AFTER").is_ok_and(|v| v == crash_point) {
        eprintln!(
            "STEWARD_CRASH_AFTER={crash_point}: aborting after Slack accepted the message, before recording it"
        );
        std::process::abort();
    }
    store
        .put_message(subject, record(channel.clone(), ts.clone()))
        .await
        .map_err(store_error)?;
    Ok((channel, ts))
}
