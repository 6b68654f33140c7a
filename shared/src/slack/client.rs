//! The Slack Web API calls Steward makes (chat.postMessage, chat.update, users.lookupByEmail,
//! and answers on an interaction's response_url), on slack-morphism's hyper client.
//!
//! The base URL is configurable so tests run against a local fake. slack-morphism's default
//! connector is HTTPS-only; a plain `http://` base URL is accepted only on loopback, so a bot
//! token never crosses a network in clear.

use super::SlackError;
use crate::secret::Secret;
use hyper_util::client::legacy::connect::HttpConnector;
use slack_morphism::errors::{SlackClientError, SlackClientSystemError};
use slack_morphism::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Slack message metadata `event_type` of Steward's tagged messages.
pub const METADATA_EVENT_TYPE: &str = "steward_message";

/// How long a users.lookupByEmail answer is reused (Slack tier 3: ~50 calls a minute).
pub const USER_CACHE_TTL: Duration = Duration::from_secs(15 * 60);

enum Transport {
    Https(SlackClient<SlackClientHyperHttpsConnector>),
    Http(SlackClient<SlackClientHyperConnector<HttpConnector>>),
}

/// Which transport a base URL needs (checked before any client is built).
pub(crate) fn transport_for(api_url: &str) -> Result<bool, SlackError> {
    let url: url::Url = api_url
        .parse()
        .map_err(|e| SlackError::Config(format!("Slack API URL `{api_url}` is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(true),
        "http" if matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) => Ok(false),
        _ => Err(SlackError::Config(format!(
            "Slack API URL `{api_url}` must be https:// (plain http:// only on 127.0.0.1, for a local fake)"
        ))),
    }
}

/// A Slack Web API client for one bot token.
pub struct SlackWeb {
    transport: Transport,
    /// Deadline of each call (connection and answer).
    call_timeout: Duration,
    token: SlackApiToken,
    users: Mutex<HashMap<String, (Option<String>, Instant)>>,
    rates: super::rate::SlackRates,
}

/// Waits up to this long in-line for a rate-limit slot; longer waits go back to the queue.
pub const INLINE_WAIT: Duration = Duration::from_secs(2);

/// Deadline of each Web API call by default: a Slack that takes the connection and never
/// answers costs one attempt of the command, which is retried with backoff, instead of
/// stopping the worker.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `$body` with `$c` bound to whichever client the transport holds, within the call's
/// deadline (past it: an `Unreachable` error, which is retried).
macro_rules! with_client {
    ($self:ident, $c:ident => $body:expr) => {
        match tokio::time::timeout($self.call_timeout, async {
            match &$self.transport {
                Transport::Https($c) => $body,
                Transport::Http($c) => $body,
            }
        })
        .await
        {
            Ok(answer) => answer,
            Err(_) => Err(SlackClientError::SystemError(
                SlackClientSystemError::new().with_message(format!(
                    "Slack did not answer within {} ms",
                    $self.call_timeout.as_millis()
                )),
            )),
        }
    };
}

impl SlackWeb {
    pub fn new(api_url: &str, bot_token: &Secret) -> Result<Self, SlackError> {
        let base = api_url.trim_end_matches('/');
        let transport = if transport_for(base)? {
            crate::tls::install_crypto_provider();
            let connector = SlackClientHyperConnector::new()
                .map_err(|e| SlackError::Config(format!("no TLS roots for Slack: {e}")))?
                .with_slack_api_url(base);
            Transport::Https(SlackClient::new(connector))
        } else {
            let connector = SlackClientHyperConnector::with_connector(HttpConnector::new())
                .with_slack_api_url(base);
            Transport::Http(SlackClient::new(connector))
        };
        Ok(Self {
            transport,
            token: SlackApiToken::new(SlackApiTokenValue::new(bot_token.expose().to_string())),
            users: Mutex::new(HashMap::new()),
            rates: super::rate::SlackRates::new(1.0),
            call_timeout: CALL_TIMEOUT,
        })
    }

    /// Sets the deadline of each call ([`CALL_TIMEOUT`] by default).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Scales Slack's rate limits (see [`super::rate`]); 1.0 is Slack's documented floor.
    pub fn with_rate_multiplier(mut self, multiplier: f64) -> Self {
        self.rates = super::rate::SlackRates::new(multiplier);
        self
    }

    /// Waits for a rate-limit slot of `method` (in `conversation`): sleeps through short
    /// waits, and refuses with the wait when it is longer than [`INLINE_WAIT`].
    pub async fn admit(
        &self,
        method: &'static str,
        conversation: Option<&str>,
    ) -> Result<(), SlackError> {
        let mut waited = Duration::ZERO;
        loop {
            match self.rates.check(method, conversation) {
                Ok(()) => return Ok(()),
                Err(wait) if waited + wait <= INLINE_WAIT => {
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
                Err(wait) => {
                    return Err(SlackError::RateLimited {
                        method,
                        retry_after: Some(wait),
                    });
                }
            }
        }
    }

    /// Maps a Slack error, pausing the method when Slack said "too many".
    fn failed(&self, method: &'static str, e: SlackClientError) -> SlackError {
        let e = error(method, e);
        if let SlackError::RateLimited { retry_after, .. } = &e {
            self.rates
                .pause(method, retry_after.unwrap_or(Duration::from_secs(30)));
        }
        e
    }

    /// Posts a message, after [`SlackWeb::admit`] gave the slot; returns its channel and ts (a
    /// user id as channel opens the bot's DM). With `key`, the message carries Slack message
    /// metadata `steward_message` naming it, so it can be found again in the conversation (see
    /// [`SlackWeb::find_tagged`]). Steward posts through [`crate::slack::once::post`], which
    /// posts each message once across crashes.
    pub async fn post_admitted(
        &self,
        channel: &str,
        text: &str,
        blocks: Vec<SlackBlock>,
        thread_ts: Option<&str>,
        key: Option<&str>,
    ) -> Result<(String, String), SlackError> {
        let method = "chat.postMessage";
        let mut content = SlackMessageContent::new().with_text(text.to_string());
        if !blocks.is_empty() {
            content = content.with_blocks(blocks);
        }
        if let Some(key) = key {
            content = content.with_metadata(SlackMessageMetadata {
                event_type: METADATA_EVENT_TYPE.into(),
                event_payload: Some(HashMap::from([("key".to_string(), key.to_string())])),
            });
        }
        let mut req = SlackApiChatPostMessageRequest::new(channel.into(), content);
        if let Some(ts) = thread_ts {
            req = req.with_thread_ts(ts.into());
        }
        let res =
            with_client!(self, c => c.open_session(&self.token).chat_post_message(&req).await)
                .map_err(|e| self.failed(method, e))?;
        Ok((res.channel.to_string(), res.ts.to_string()))
    }

    /// The conversation (DM) id of a user: what `chat.postMessage` to the user id posts into.
    pub async fn open_dm(&self, user: &str) -> Result<String, SlackError> {
        let method = "conversations.open";
        self.admit(method, None).await?;
        let req = SlackApiConversationsOpenRequest::new().with_users(vec![user.into()]);
        let res =
            with_client!(self, c => c.open_session(&self.token).conversations_open(&req).await)
                .map_err(|e| self.failed(method, e))?;
        Ok(res.channel.id.to_string())
    }

    /// Finds a message Steward posted with [`SlackWeb::post_admitted`] and `key`, in the
    /// conversation's messages since `since`: the (channel, ts) when it is there.
    pub async fn find_tagged(
        &self,
        channel: &str,
        key: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<(String, String)>, SlackError> {
        let method = "conversations.history";
        let channel = if channel.starts_with('U') || channel.starts_with('W') {
            self.open_dm(channel).await?
        } else {
            channel.to_string()
        };
        let oldest = format!("{}.000000", (since.timestamp() - 5).max(0));
        let mut cursor: Option<SlackCursorId> = None;
        loop {
            self.admit(method, None).await?;
            let mut req = SlackApiConversationsHistoryRequest::new()
                .with_channel(channel.clone().into())
                .with_oldest(oldest.clone().into())
                .with_limit(200)
                .with_include_all_metadata(true);
            if let Some(c) = cursor.take() {
                req = req.with_cursor(c);
            }
            let res = with_client!(self, c => c.open_session(&self.token).conversations_history(&req).await)
                .map_err(|e| self.failed(method, e))?;
            let found = res.messages.iter().find(|m| {
                m.content.metadata.as_ref().is_some_and(|md| {
                    md.event_type == METADATA_EVENT_TYPE
                        && md
                            .event_payload
                            .as_ref()
                            .and_then(|p| p.get("key"))
                            .is_some_and(|k| k == key)
                })
            });
            if let Some(m) = found {
                return Ok(Some((channel, m.origin.ts.to_string())));
            }
            match res
                .response_metadata
                .and_then(|r| r.next_cursor)
                .filter(|c| !c.0.is_empty())
            {
                Some(c) if res.has_more.unwrap_or(false) => cursor = Some(c),
                _ => return Ok(None),
            }
        }
    }

    /// Replaces a message's text and blocks.
    pub async fn update(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: Vec<SlackBlock>,
    ) -> Result<(), SlackError> {
        let method = "chat.update";
        self.admit(method, None).await?;
        let content = SlackMessageContent::new()
            .with_text(text.to_string())
            .with_blocks(blocks);
        let req = SlackApiChatUpdateRequest::new(channel.into(), content, ts.into());
        with_client!(self, c => c.open_session(&self.token).chat_update(&req).await)
            .map_err(|e| self.failed(method, e))?;
        Ok(())
    }

    /// The Slack user id of a directory email, or `None` when Slack has no such user.
    /// Answers (also "no such user") are cached for [`USER_CACHE_TTL`].
    pub async fn user_id(&self, email: &str) -> Result<Option<String>, SlackError> {
        let email = email.trim().to_ascii_lowercase();
        if let Some((id, at)) = self.users.lock().expect("cache lock").get(&email)
            && at.elapsed() < USER_CACHE_TTL
        {
            return Ok(id.clone());
        }
        let method = "users.lookupByEmail";
        self.admit(method, None).await?;
        let req = SlackApiUsersLookupByEmailRequest::new(EmailAddress(email.clone()));
        let found = match with_client!(self, c => c.open_session(&self.token).users_lookup_by_email(&req).await)
        {
            Ok(res) => Some(res.user.id.to_string()),
            Err(SlackClientError::ApiError(e)) if e.code == "users_not_found" => None,
            Err(e) => return Err(self.failed(method, e)),
        };
        self.users
            .lock()
            .expect("cache lock")
            .insert(email, (found.clone(), Instant::now()));
        Ok(found)
    }

    /// Answers the clicking person on the interaction's response_url, visible to them only.
    pub async fn respond_ephemeral(
        &self,
        response_url: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        let method = "response_url";
        let url: url::Url = response_url.parse().map_err(|e| SlackError::Api {
            method,
            code: format!("bad response_url: {e}"),
            hint: "",
        })?;
        // Slack's response_url message: `response_type: ephemeral` is not in slack-morphism's
        // webhook request type, so the body is sent as JSON through its connector.
        let body = serde_json::json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": text,
        });
        let span = tracing::debug_span!("Slack response_url");
        let context = |span| SlackClientApiCallContext {
            rate_control_params: None,
            token: None,
            tracing_span: span,
            is_sensitive_url: true,
        };
        with_client!(self, c => c
            .http_api
            .connector
            .http_post_uri::<_, SlackApiPostWebhookMessageResponse>(url.clone(), &body, context(&span))
            .await)
            .map_err(|e| error(method, e))?;
        Ok(())
    }
}

fn error(method: &'static str, e: SlackClientError) -> SlackError {
    match e {
        SlackClientError::ApiError(api) if api.code == "ratelimited" => SlackError::RateLimited {
            method,
            retry_after: None,
        },
        SlackClientError::ApiError(api) => SlackError::Api {
            method,
            hint: hint(&api.code),
            code: api.code,
        },
        SlackClientError::RateLimitError(r) => SlackError::RateLimited {
            method,
            retry_after: r.retry_after,
        },
        SlackClientError::HttpError(h) if h.status_code.as_u16() == 429 => {
            SlackError::RateLimited {
                method,
                retry_after: None,
            }
        }
        other => SlackError::Unreachable {
            method,
            message: other.to_string(),
        },
    }
}

/// What a person can do about Slack's common refusals.
fn hint(code: &str) -> &'static str {
    match code {
        "invalid_auth" | "not_authed" | "token_revoked" | "account_inactive" => {
            " (check the bot token: reinstall the app and set the new xoxb- token)"
        }
        "missing_scope" => " (the app lacks a scope: reinstall it from infra/slack/manifest.yaml)",
        "channel_not_found" | "not_in_channel" => {
            " (invite the Steward app to the channel, or fix the channel id)"
        }
        _ => "",
    }
}
