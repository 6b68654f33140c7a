//! Posture (docs/lifecycle.md): a risk score per agent, the zero-trust checklist, and the organisation's
//! maturity level. Pure: the caller loads the registry and says what it knows about the
//! deployment; `steward report` prints the result as a table or JSON.
//!
//! **Which agents.** Every record that holds or may soon hold access: active, frozen, failed,
//! unregistered, pending approval and provisioning. Ended records (decommissioned, denied,
//! cancelled, expired) are left out. The checklist pass rates and the maturity level count the
//! *live* agents only (active, frozen, unregistered: the ones with a client at the identity
//! provider); a pending request has no client or secret yet. With no live agent a share counts
//! as met.
//!
//! # Risk score
//!
//! 0 to 100, higher is riskier: the sum of these factors, capped at 100.
//!
//! | factor | points |
//! |---|---|
//! | `scope_breadth` | 3 per scope beyond 2, at most 15 |
//! | `sensitive_scopes` | 10 per sensitive scope (`policy.is_sensitive`), at most 20 |
//! | `credential_age` | older than the environment's maximum age: 20; older than ¾ of it: 8; a client whose secret has no known issue time: 10 |
//! | `token_lifetime` | over 15 min (the default maximum): 5; over 60 min (the hard ceiling): 15 |
//! | `anomalies` | per anomaly flag by severity (low 5, medium 10, high 20, critical 30), 10 per frozen or freeze-requested flag; at most 40 |
//! | `no_owner` | no accountable owner (empty owner, owner left, or an unregistered shadow agent): 20 |
//! | `review_overdue` | never reviewed, or last reviewed before the review period: 10 |
//! | `review_unanswered` | nobody answered its last review (decision `unanswered: …`, or the flag): 10 |
//!
//! Levels: 0–24 low, 25–49 medium, 50–74 high, 75–100 critical.
//!
//! The review period is `reviews.every_months` months (3 when 0, i.e. campaigns only by hand)
//! plus the time owners have to answer (`reviews.duration_secs`). An agent registered within the
//! period that was never reviewed is not yet due.
//!
//! # Zero-trust checklist (per agent)
//!
//! | item | passes when |
//! |---|---|
//! | `dedicated_client` | it has a client at the identity provider that no other reported agent record uses |
//! | `minimal_scopes` | every scope is in the policy's approved scopes and none is excluded, and its last review (if any) was answered |
//! | `short_lived_tokens` | tokens live at most 60 min |
//! | `rotation` | its secret is at most min(90 days, the environment's maximum age) old |
//! | `no_shared_secret` | it authenticates with a key it holds (`private_key_jwt`, `tls_client_auth`), not a client secret anyone who copies it can use |
//! | `bound_tokens` | its tokens are bound to its key (DPoP) or certificate (mTLS), not bearer tokens |
//! | `owner_assigned` | it has an owner who has not left |
//! | `reviewed` | reviewed within the review period (or registered within it: not yet due) |
//! | `audit_streaming` | the audit trail leaves Steward as it is written (org-wide, from the caller) |
//!
//! # Maturity (each level requires the one before)
//!
//! 1. **ad-hoc**: where everyone starts.
//! 2. **discovery**: a discovery sweep has listed the identity provider's clients, or discovery
//!    is enabled in the policy and no unregistered agent is known.
//! 3. **governance**: at least 90% of live agents pass `owner_assigned`, `dedicated_client`,
//!    `rotation` and `short_lived_tokens` together.
//! 4. **detection**: anomaly detection is enabled with at least one rule, and the audit trail
//!    streams out.
//! 5. **full governance**: at least 95% of live agents pass every checklist item (so hold
//!    their own key and have bound tokens), and no unregistered agent is left.
//!
//! The report names what the next level still misses.
//!
//! # Key-bound and bearer-only agents
//!
//! The summary counts the *active* agents that hold their own key (`no_shared_secret`), those
//! whose tokens are bound (`bound_tokens`), and the bearer-only ones (tokens not bound), which
//! it names (the first [`BEARER_ONLY_LISTED`] by name).

mod agent;
mod maturity;
mod report;

use agent::*;
use maturity::*;

use chrono::{DateTime, Duration, Months, Utc};
use serde::{Deserialize, Serialize};
use statemachines::agent::{Agent, AgentFlag, AgentStatus};
use statemachines::credential::{CredentialKind, TokenBinding};
use statemachines::detection::Severity;
use statemachines::policy::{DEFAULT_MAX_TOKEN_LIFETIME_SECS, Policy, TOKEN_LIFETIME_CEILING_SECS};
use std::collections::BTreeMap;

/// The checklist's rotation bound, whatever the policy allows (the common 90-day baseline; the
/// policy's own maximum applies when it is shorter).
pub const ROTATION_CHECK_DAYS: u32 = 90;
/// The review period when the policy schedules no campaigns (`reviews.every_months = 0`): a
/// quarter.
pub const DEFAULT_REVIEW_MONTHS: u32 = 3;
/// Percent of live agents that must pass the governance items for the governance level.
pub const GOVERNANCE_PERCENT: usize = 90;
/// Percent of live agents that must pass every item for the full-governance level.
pub const FULL_GOVERNANCE_PERCENT: usize = 95;
/// How many agent names a missing criterion lists before "…".
const NAMES_SHOWN: usize = 5;
/// How many bearer-only agents the summary names (it counts them all).
pub const BEARER_ONLY_LISTED: usize = 20;

/// The checklist items, by name.
pub mod item {
    pub const DEDICATED_CLIENT: &str = "dedicated_client";
    pub const MINIMAL_SCOPES: &str = "minimal_scopes";
    pub const SHORT_LIVED_TOKENS: &str = "short_lived_tokens";
    pub const ROTATION: &str = "rotation";
    /// "No shared secret": the agent holds its own key.
    pub const NO_SHARED_SECRET: &str = "no_shared_secret";
    /// "mTLS / bound tokens": its tokens are bound to its key or certificate.
    pub const BOUND_TOKENS: &str = "bound_tokens";
    pub const OWNER_ASSIGNED: &str = "owner_assigned";
    pub const REVIEWED: &str = "reviewed";
    pub const AUDIT_STREAMING: &str = "audit_streaming";
    /// Every item, in report order.
    pub const ALL: [&str; 9] = [
        DEDICATED_CLIENT,
        MINIMAL_SCOPES,
        SHORT_LIVED_TOKENS,
        ROTATION,
        NO_SHARED_SECRET,
        BOUND_TOKENS,
        OWNER_ASSIGNED,
        REVIEWED,
        AUDIT_STREAMING,
    ];
    /// The items the governance level asks of each live agent.
    pub const GOVERNANCE: [&str; 4] = [
        OWNER_ASSIGNED,
        DEDICATED_CLIENT,
        ROTATION,
        SHORT_LIVED_TOKENS,
    ];
}

/// What the report is built from.
pub struct PostureInput<'a> {
    /// The registry, ended records included (they are left out here).
    pub agents: &'a [Agent],
    pub policy: &'a Policy,
    pub now: DateTime<Utc>,
    /// The audit trail leaves Steward as it is written (a SIEM export).
    pub audit_streaming: bool,
    /// A discovery sweep has listed the identity provider's clients at least once.
    pub discovery_ran: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    pub fn of(score: u8) -> Self {
        match score {
            0..=24 => Self::Low,
            25..=49 => Self::Medium,
            50..=74 => Self::High,
            _ => Self::Critical,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// One contribution to an agent's risk score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Factor {
    pub name: String,
    pub points: u8,
    pub detail: String,
}

/// One checklist item for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub item: String,
    pub ok: bool,
    /// What was checked, and what was found.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPosture {
    pub agent_id: String,
    pub name: String,
    pub owner: String,
    pub environment: String,
    pub status: AgentStatus,
    /// 0 to 100, higher is riskier.
    pub score: u8,
    pub level: RiskLevel,
    pub factors: Vec<Factor>,
    pub checklist: Vec<Check>,
}

impl AgentPosture {
    pub fn check(&self, item: &str) -> Option<&Check> {
        self.checklist.iter().find(|c| c.item == item)
    }

    pub fn passes(&self, item: &str) -> bool {
        self.check(item).is_some_and(|c| c.ok)
    }

    pub fn failed_checks(&self) -> Vec<&str> {
        self.checklist
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.item.as_str())
            .collect()
    }
}

/// The organisation's zero-trust maturity, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Maturity {
    AdHoc,
    Discovery,
    Governance,
    Detection,
    FullGovernance,
}

impl Maturity {
    pub const ALL: [Maturity; 5] = [
        Self::AdHoc,
        Self::Discovery,
        Self::Governance,
        Self::Detection,
        Self::FullGovernance,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::AdHoc => "ad-hoc",
            Self::Discovery => "discovery",
            Self::Governance => "governance",
            Self::Detection => "detection",
            Self::FullGovernance => "full governance",
        }
    }

    /// 1 (ad-hoc) to 5 (full governance).
    pub fn rank(self) -> usize {
        Self::ALL.iter().position(|m| *m == self).unwrap_or(0) + 1
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelCounts {
    pub low: usize,
    pub medium: usize,
    pub high: usize,
    pub critical: usize,
}

/// How many live agents pass one checklist item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassRate {
    pub item: String,
    pub passed: usize,
    pub total: usize,
    /// Rounded down; 100 when there is no live agent.
    pub percent: u8,
}

/// An agent a summary names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRef {
    pub agent_id: String,
    pub name: String,
    pub environment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Agents in the report.
    pub agents: usize,
    /// Of those, the live ones the pass rates and the maturity count.
    pub live_agents: usize,
    pub unregistered_agents: usize,
    /// Active agents (the key and binding counts below are of these).
    #[serde(default)]
    pub active_agents: usize,
    /// Active agents that authenticate with a key they hold: no shared secret.
    #[serde(default)]
    pub key_bound_agents: usize,
    /// Active agents whose tokens are bound to their key (DPoP) or certificate (mTLS).
    #[serde(default)]
    pub bound_token_agents: usize,
    /// Active agents whose tokens are bearer tokens (whoever holds one can use it).
    #[serde(default)]
    pub bearer_only_agents: usize,
    /// The first [`BEARER_ONLY_LISTED`] bearer-only agents, by name.
    #[serde(default)]
    pub bearer_only: Vec<AgentRef>,
    pub by_level: LevelCounts,
    pub checklist: Vec<PassRate>,
    pub maturity: Maturity,
    /// The level after `maturity`, none at full governance.
    pub next_level: Option<Maturity>,
    /// What `next_level` still misses.
    pub next_level_missing: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostureReport {
    pub generated_at: DateTime<Utc>,
    /// Riskiest first.
    pub agents: Vec<AgentPosture>,
    pub summary: Summary,
}

/// Ended records are not part of the posture.
fn reported(status: AgentStatus) -> bool {
    !matches!(
        status,
        AgentStatus::Decommissioned
            | AgentStatus::Denied
            | AgentStatus::Cancelled
            | AgentStatus::Expired
    )
}

/// Agents with a client at the identity provider.
fn live(status: AgentStatus) -> bool {
    matches!(
        status,
        AgentStatus::Active | AgentStatus::Frozen | AgentStatus::Unregistered
    )
}

fn severity_points(s: Severity) -> u32 {
    match s {
        Severity::Low => 5,
        Severity::Medium => 10,
        Severity::High => 20,
        Severity::Critical => 30,
    }
}

fn minutes(secs: u32) -> String {
    if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn percent(passed: usize, total: usize) -> u8 {
    (passed * 100).checked_div(total).unwrap_or(100) as u8
}

/// At least `percent`% of `total` passed (met when there is nothing to count).
fn share_met(passed: usize, total: usize, percent: usize) -> bool {
    passed * 100 >= percent * total
}

#[cfg(test)]
mod tests;

/// Each of `agents` assessed from its own record: a page of the dashboard's inventory, one
/// agent's page. A client id shared with an agent outside `agents` is not seen here (the
/// posture report, which reads the whole registry, sees it), and audit streaming counts as off.
pub fn assess(agents: &[Agent], policy: &Policy, now: DateTime<Utc>) -> Vec<AgentPosture> {
    let input = PostureInput {
        agents,
        policy,
        now,
        audit_streaming: false,
        discovery_ran: false,
    };
    let ctx = Ctx::new(&input);
    agents.iter().map(|a| ctx.assess(a)).collect()
}
