//! The access-review vocabulary: campaigns and their scope, the item a reviewer sees with its
//! evidence, the decisions and what they set in motion. The campaign machine and the item
//! machine both speak it, and so do the engine's commands and events.

use crate::agent::{Agent, AgentFlag};
use crate::command::Actor;
use crate::policy::Policy;
use crate::workflow::{Ctx, Rejected};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// What an unanswered item gets at the deadline: never silently kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unanswered {
    /// Decommission the agent (no second approval: the review is the decision).
    Revoke,
    /// Deactivate its client at the identity provider: no new tokens until someone acts.
    Freeze,
    /// Keep it, flag the agent and tell the security channel. Written `keep-and-flag` in the
    /// policy file, the CLI and the docs; the API takes both spellings.
    #[default]
    #[serde(alias = "keep-and-flag")]
    KeepAndFlag,
}

impl Unanswered {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Freeze => "freeze",
            Self::KeepAndFlag => "keep_and_flag",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().replace('-', "_").as_str() {
            "revoke" => Some(Self::Revoke),
            "freeze" => Some(Self::Freeze),
            "keep_and_flag" | "flag" => Some(Self::KeepAndFlag),
            _ => None,
        }
    }
}

/// How risky an agent is, for scoping a campaign: `high` holds a sensitive scope, `medium`
/// runs in production (an environment named `prod*`), `low` is the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn of(agent: &Agent, policy: &Policy) -> Self {
        if agent.scopes.iter().any(|s| policy.is_sensitive(s)) {
            Self::High
        } else if agent.environment.starts_with("prod") {
            Self::Medium
        } else {
            Self::Low
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" => Some(Self::High),
            _ => None,
        }
    }
}

/// Which agents a campaign reviews. Empty lists mean "any"; all empty is every active agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CampaignScope {
    pub environments: Vec<String>,
    pub teams: Vec<String>,
    /// Risk levels to include (`high`, `medium`, `low`).
    pub risk: Vec<Risk>,
}

impl CampaignScope {
    /// Whether the campaign reviews this agent (active agents only: nothing else holds access).
    pub fn covers(&self, agent: &Agent, policy: &Policy) -> bool {
        agent.status == crate::agent::AgentStatus::Active
            && (self.environments.is_empty() || self.environments.contains(&agent.environment))
            && (self.teams.is_empty() || self.teams.contains(&agent.team))
            && (self.risk.is_empty() || self.risk.contains(&Risk::of(agent, policy)))
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.environments.is_empty() {
            parts.push(format!("environment {}", self.environments.join("|")));
        }
        if !self.teams.is_empty() {
            parts.push(format!("team {}", self.teams.join("|")));
        }
        if !self.risk.is_empty() {
            let r: Vec<&str> = self.risk.iter().map(|r| r.as_str()).collect();
            parts.push(format!("risk {}", r.join("|")));
        }
        if parts.is_empty() {
            "all active agents".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A campaign as launched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    /// Short id (`2026-q4`, or what the person chose); the workflow is `campaign-<id>`.
    pub id: String,
    pub name: String,
    pub scope: CampaignScope,
    pub started_by: Actor,
    pub started_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub unanswered: Unanswered,
}

impl Campaign {
    pub fn workflow_id(id: &str) -> String {
        format!("campaign-{id}")
    }

    /// The id of the review item for one agent (also its workflow id).
    pub fn item_id(&self, agent_id: &str) -> String {
        format!("review-{}-{agent_id}", self.id)
    }
}

/// Checks a campaign id: it names a workflow and appears in Slack buttons and file names.
pub fn check_id(id: &str) -> Result<(), Rejected> {
    let ok = !id.is_empty()
        && id.len() <= 40
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Rejected::new(
            "id",
            format!(
                "campaign id `{id}` must be 1 to 40 lowercase letters, digits and dashes (e.g. 2026-q4)"
            ),
        ))
    }
}

/// What is known about one scope's use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeEvidence {
    pub scope: String,
    /// The last token grant that included it, when token grants are seen.
    pub last_used: Option<DateTime<Utc>>,
    pub sensitive: bool,
}

/// The agent's previous review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReview {
    pub campaign: String,
    /// `keep`, `reduce`, `revoke`, or `unanswered: <default>`.
    pub decision: String,
    /// Who decided (a person), or `deadline` for a default.
    pub by: String,
    pub at: DateTime<Utc>,
}

/// What a reviewer sees besides the agent itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub scopes: Vec<ScopeEvidence>,
    pub credential_age_days: Option<i64>,
    /// Anomalies and flags since the last review.
    pub anomalies: Vec<String>,
    pub last_review: Option<LastReview>,
    /// Scopes unused for the policy's period: the suggestion is to drop them.
    pub suggested_drop: Vec<String>,
    /// Whether any token grant of this agent was ever seen (without one, "unused" means
    /// "unknown", and nothing is suggested).
    pub usage_known: bool,
}

impl Evidence {
    /// Builds the evidence from the registry record and the recorded token-grant use
    /// (`usage`: scope → last grant). A scope is suggested for dropping when grants of the agent
    /// are seen but none included it within `unused_days` (and the agent is older than that).
    pub fn build(
        agent: &Agent,
        usage: &[(String, DateTime<Utc>)],
        now: DateTime<Utc>,
        ctx: &Ctx,
    ) -> Self {
        let unused_days = ctx.policy.reviews.unused_after_days;
        let cutoff = now - Duration::days(unused_days as i64);
        let usage_known = !usage.is_empty();
        let scopes: Vec<ScopeEvidence> = agent
            .scopes
            .iter()
            .map(|s| ScopeEvidence {
                scope: s.clone(),
                last_used: usage.iter().find(|(u, _)| u == s).map(|(_, at)| *at),
                sensitive: ctx.policy.is_sensitive(s),
            })
            .collect();
        let old_enough = agent.created_at <= cutoff;
        let suggested_drop = if usage_known && old_enough {
            scopes
                .iter()
                .filter(|e| e.last_used.is_none_or(|at| at < cutoff))
                .map(|e| e.scope.clone())
                .collect()
        } else {
            vec![]
        };
        let since = agent.last_review.as_ref().map(|r| r.at);
        let anomalies = agent
            .flags
            .iter()
            .map(|f| match f {
                AgentFlag::OwnerLost { owner, since: at } => {
                    (*at, format!("owner {owner} left ({})", at.date_naive()))
                }
                AgentFlag::FreezeRequested { reason, at } => (
                    *at,
                    format!("freeze requested: {reason} ({})", at.date_naive()),
                ),
                AgentFlag::Frozen { reason, at } => {
                    (*at, format!("frozen: {reason} ({})", at.date_naive()))
                }
                AgentFlag::ReviewUnanswered { campaign, at } => (
                    *at,
                    format!("review {campaign} went unanswered ({})", at.date_naive()),
                ),
                AgentFlag::Anomaly {
                    rule,
                    severity,
                    detail,
                    at,
                } => (
                    *at,
                    format!(
                        "{} anomaly {rule}: {detail} ({})",
                        severity.as_str().to_uppercase(),
                        at.date_naive()
                    ),
                ),
            })
            .filter(|(at, _)| since.is_none_or(|s| *at >= s))
            .map(|(_, text)| text)
            .collect();
        Self {
            scopes,
            credential_age_days: agent.credential_age_days(now),
            anomalies,
            last_review: agent.last_review.clone(),
            suggested_drop,
            usage_known,
        }
    }
}

/// One review item as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewItem {
    /// Also the item's workflow id: `review-<campaign>-<agent id>`.
    pub id: String,
    pub campaign_id: String,
    pub campaign_name: String,
    pub agent: Agent,
    pub evidence: Evidence,
    /// The owner's manager: where the item escalates (the security channel when none).
    pub escalate_to: Option<String>,
    pub sent_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub remind_at: Option<DateTime<Utc>>,
    pub escalate_at: Option<DateTime<Utc>>,
    pub unanswered: Unanswered,
}

/// A reviewer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum ReviewDecision {
    Keep,
    /// Drop these scopes (a scope change).
    Reduce {
        drop: Vec<String>,
    },
    /// Decommission the agent.
    Revoke,
}

impl ReviewDecision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Reduce { .. } => "reduce",
            Self::Revoke => "revoke",
        }
    }
}

/// What was decided, by whom, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// `keep`, `reduce`, `revoke`, or the default applied (`unanswered`).
    pub decision: String,
    /// Scopes dropped (reduce).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    /// The person who decided; `None` when the deadline applied the default.
    pub by: Option<String>,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    /// The default applied to an unanswered item.
    pub default_applied: Option<Unanswered>,
    /// Whether the item had been escalated before it was resolved.
    pub escalated: bool,
    /// What the decision set in motion, once known.
    pub action: Option<ActionResult>,
}

impl Resolution {
    pub(crate) fn label(&self) -> String {
        match self.default_applied {
            Some(d) => format!("unanswered: {}", d.as_str()),
            None => self.decision.clone(),
        }
    }
}

/// The outcome action of a decision: the workflow it started, or what refused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// `scope_change`, `decommission`, `freeze` or `flag`.
    pub kind: String,
    pub workflow_id: Option<String>,
    pub ok: bool,
    pub detail: String,
}

/// What the engine does for a decision (`Command::ApplyReview`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum ReviewAction {
    /// Start a scope change removing these scopes.
    Reduce { drop: Vec<String> },
    /// Start the decommission (reason: this review).
    Revoke,
}

/// What the people channel shows of an item (`Command::Review`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "notice")]
#[allow(clippy::large_enum_variant)]
pub enum ReviewNotice {
    /// Send the item to the owner.
    Ask { item: ReviewItem },
    /// Remind the owner (in the item's thread).
    Remind { item: ReviewItem },
    /// Send it to the owner's manager, or the security channel.
    Escalate { item: ReviewItem },
    /// Show the resolution on every message of the item.
    Closed {
        item: ReviewItem,
        resolution: Resolution,
    },
}

impl ReviewNotice {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ask { .. } => "review.ask",
            Self::Remind { .. } => "review.remind",
            Self::Escalate { .. } => "review.escalate",
            Self::Closed { .. } => "review.closed",
        }
    }

    pub fn item(&self) -> &ReviewItem {
        match self {
            Self::Ask { item }
            | Self::Remind { item }
            | Self::Escalate { item }
            | Self::Closed { item, .. } => item,
        }
    }
}
