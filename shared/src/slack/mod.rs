//! Slack, the human channel when it is configured: approval requests as Block Kit messages,
//! updated when decided; reminders, escalations and notices; the Web API through
//! slack-morphism. Clicks come back through [`crate::inbound::slack`].

pub mod channel;
pub mod client;
pub mod message;
pub mod once;
pub mod rate;
pub mod review;

pub use channel::SlackChannel;
pub use client::SlackWeb;

use crate::secret::Secret;

/// The Slack user id to message a person at: the directory's `chat` when it is a Slack user id
/// (`U…` or `W…`, as the people file may give it), otherwise Slack's own lookup by e-mail.
/// `None` when Slack has no such user. A directory that cannot answer falls back to the lookup.
pub async fn user_of(
    web: &SlackWeb,
    directory: &dyn crate::ports::Directory,
    email: &str,
) -> Result<Option<String>, SlackError> {
    match directory.person(email).await {
        Ok(Some(p)) => {
            if let Some(chat) = p.chat.as_deref().map(str::trim).filter(|c| is_user_id(c)) {
                return Ok(Some(chat.to_string()));
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(email, error = %e, "directory unavailable; asking Slack"),
    }
    web.user_id(email).await
}

/// Whether `chat` is a Slack user id (`U…`/`W…`, upper-case letters and digits).
fn is_user_id(chat: &str) -> bool {
    chat.len() >= 9
        && chat.len() <= 21
        && (chat.starts_with('U') || chat.starts_with('W'))
        && chat
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Slack's Web API base URL.
pub const SLACK_API_URL: &str = "https://slack.com/api";

/// How Steward reaches Slack.
#[derive(Clone)]
pub struct SlackSettings {
    /// The bot token (`xoxb-…`), sent as `Authorization: Bearer`.
    pub bot_token: Secret,
    /// The app's signing secret, for verifying interaction requests.
    pub signing_secret: Secret,
    /// The Web API base URL (`https://slack.com/api`; a loopback `http://` URL for tests).
    pub api_url: String,
    /// The security team's channel id (`C…`): escalations go there, and approval requests
    /// when the policy routes them there.
    pub security_channel: Option<String>,
    /// Scales Slack's documented rate limits (1.0; more for a workspace with raised limits).
    pub rate_multiplier: f64,
    /// Deadline of each Web API call, connection and answer ([`client::CALL_TIMEOUT`]).
    pub call_timeout: std::time::Duration,
}

impl std::fmt::Debug for SlackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSettings")
            .field("api_url", &self.api_url)
            .field("security_channel", &self.security_channel)
            .finish_non_exhaustive()
    }
}

/// Environment variables of the embedded default (the Lambda functions read the two secrets
/// from Secrets Manager instead; see `aws::stack`).
pub const BOT_TOKEN_ENV: &str = "STEWARD_SLACK_BOT_TOKEN";
pub const SIGNING_SECRET_ENV: &str = "STEWARD_SLACK_SIGNING_SECRET";
pub const API_URL_ENV: &str = "STEWARD_SLACK_API_URL";
pub const SECURITY_CHANNEL_ENV: &str = "STEWARD_SLACK_SECURITY_CHANNEL";
pub const RATE_MULTIPLIER_ENV: &str = "STEWARD_SLACK_RATE_MULTIPLIER";
pub const TIMEOUT_ENV: &str = "STEWARD_SLACK_TIMEOUT";

impl SlackSettings {
    /// Slack settings from the environment: `None` when no bot token is set (the console
    /// approver stays in charge), an error when Slack is half configured.
    pub fn from_env() -> Result<Option<Self>, SlackError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let Some(token) = var(BOT_TOKEN_ENV) else {
            return Ok(None);
        };
        let signing = var(SIGNING_SECRET_ENV).ok_or_else(|| {
            SlackError::Config(format!(
                "{BOT_TOKEN_ENV} is set but {SIGNING_SECRET_ENV} is not: Slack clicks could not be verified; set the app's signing secret"
            ))
        })?;
        let settings = Self {
            bot_token: Secret::new(token.trim().to_string()),
            signing_secret: Secret::new(signing.trim().to_string()),
            api_url: var(API_URL_ENV).unwrap_or_else(|| SLACK_API_URL.into()),
            security_channel: var(SECURITY_CHANNEL_ENV),
            rate_multiplier: match var(RATE_MULTIPLIER_ENV) {
                None => 1.0,
                Some(m) => match m.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() && v > 0.0 => v,
                    _ => {
                        return Err(SlackError::Config(format!(
                            "{RATE_MULTIPLIER_ENV} must be a positive number (1 = Slack's documented limits), not `{m}`"
                        )));
                    }
                },
            },
            call_timeout: match var(TIMEOUT_ENV) {
                None => client::CALL_TIMEOUT,
                Some(t) => match humantime::parse_duration(t.trim()) {
                    Ok(d) if !d.is_zero() && d <= std::time::Duration::from_secs(60) => d,
                    _ => {
                        return Err(SlackError::Config(format!(
                            "{TIMEOUT_ENV} must be a duration from 1ms to 60s (e.g. `10s`), not `{t}`"
                        )));
                    }
                },
            },
        };
        settings.check()?;
        Ok(Some(settings))
    }

    /// Refuses settings that would leak the token or cannot work.
    pub fn check(&self) -> Result<(), SlackError> {
        check_bot_token(&self.bot_token)?;
        client::transport_for(&self.api_url).map(|_| ())
    }
}

/// Refuses anything but a bot token: user and app-level tokens carry other people's rights.
pub fn check_bot_token(token: &Secret) -> Result<(), SlackError> {
    if token.expose().trim().starts_with("xoxb-") {
        Ok(())
    } else {
        Err(SlackError::Config(
            "the Slack bot token must be a bot token (xoxb-…); user and app-level tokens are not accepted".into(),
        ))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SlackError {
    #[error("Slack is misconfigured: {0}")]
    Config(String),
    #[error("Slack refused {method}: {code}{hint}")]
    Api {
        method: &'static str,
        code: String,
        hint: &'static str,
    },
    #[error("Slack rate-limited {method}; retry later")]
    RateLimited {
        method: &'static str,
        /// How long Slack (or Steward's own limiter) says to wait.
        retry_after: Option<std::time::Duration>,
    },
    #[error("could not reach Slack for {method}: {message}")]
    Unreachable {
        method: &'static str,
        message: String,
    },
}

impl SlackError {
    /// Whether trying again later can help.
    pub fn retryable(&self) -> bool {
        match self {
            SlackError::RateLimited { .. } | SlackError::Unreachable { .. } => true,
            SlackError::Api { code, .. } => matches!(
                code.as_str(),
                "ratelimited"
                    | "internal_error"
                    | "fatal_error"
                    | "service_unavailable"
                    | "request_timeout"
            ),
            SlackError::Config(_) => false,
        }
    }
}

/// A Slack failure as the people port reports it: rate limits carry their wait (30 s when Slack
/// gave none), so the command goes back to the queue without using up an attempt.
impl From<SlackError> for crate::ports::human_channel::NotifyError {
    fn from(e: SlackError) -> Self {
        let retry_after = match &e {
            SlackError::RateLimited { retry_after, .. } => {
                Some(retry_after.unwrap_or(std::time::Duration::from_secs(30)))
            }
            _ => None,
        };
        Self {
            retryable: e.retryable(),
            message: e.to_string(),
            retry_after,
        }
    }
}

/// Slack's inbound edge: the Web API client (to update the message a click came from) and the
/// signing secret the interactions route verifies clicks with.
#[derive(Clone)]
pub struct SlackEdge {
    pub web: std::sync::Arc<SlackWeb>,
    pub signing_secret: crate::secret::Secret,
}
