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
//! 5. **full governance**: at least 95% of live agents pass every checklist item, and no
//!    unregistered agent is left.
//!
//! The report names what the next level still misses.

use chrono::{DateTime, Duration, Months, Utc};
use serde::{Deserialize, Serialize};
use statemachines::agent::{Agent, AgentFlag, AgentStatus};
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

/// The checklist items, by name.
pub mod item {
    pub const DEDICATED_CLIENT: &str = "dedicated_client";
    pub const MINIMAL_SCOPES: &str = "minimal_scopes";
    pub const SHORT_LIVED_TOKENS: &str = "short_lived_tokens";
    pub const ROTATION: &str = "rotation";
    pub const OWNER_ASSIGNED: &str = "owner_assigned";
    pub const REVIEWED: &str = "reviewed";
    pub const AUDIT_STREAMING: &str = "audit_streaming";
    /// Every item, in report order.
    pub const ALL: [&str; 7] = [
        DEDICATED_CLIENT,
        MINIMAL_SCOPES,
        SHORT_LIVED_TOKENS,
        ROTATION,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Agents in the report.
    pub agents: usize,
    /// Of those, the live ones the pass rates and the maturity count.
    pub live_agents: usize,
    pub unregistered_agents: usize,
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

/// Where an agent stands with its access reviews.
enum Review {
    /// Reviewed within the period.
    Current(String),
    /// Registered within the period, never reviewed.
    NotYetDue(String),
    Overdue(String),
}

/// Everything one assessment needs besides the agent.
struct Ctx<'a> {
    policy: &'a Policy,
    now: DateTime<Utc>,
    audit_streaming: bool,
    /// Client id → how many reported agent records use it.
    clients: BTreeMap<&'a str, usize>,
    review_months: u32,
    /// Reviews at or after this are within the period.
    review_since: DateTime<Utc>,
}

impl<'a> Ctx<'a> {
    fn new(input: &PostureInput<'a>) -> Self {
        let mut clients = BTreeMap::new();
        for a in input.agents.iter().filter(|a| reported(a.status)) {
            if let Some(c) = a.client_id.as_deref() {
                *clients.entry(c).or_insert(0) += 1;
            }
        }
        let policy = input.policy;
        let review_months = match policy.reviews.every_months {
            0 => DEFAULT_REVIEW_MONTHS,
            n => n,
        };
        let answer_within = i64::try_from(policy.reviews.duration_secs)
            .ok()
            .and_then(Duration::try_seconds)
            .unwrap_or_else(Duration::zero);
        let review_since = input
            .now
            .checked_sub_months(Months::new(review_months))
            .unwrap_or(input.now)
            - answer_within;
        Self {
            policy,
            now: input.now,
            audit_streaming: input.audit_streaming,
            clients,
            review_months,
            review_since,
        }
    }

    fn review(&self, a: &Agent) -> Review {
        match &a.last_review {
            Some(r) if r.at >= self.review_since => Review::Current(format!(
                "reviewed {} in campaign {} ({})",
                r.at.date_naive(),
                r.campaign,
                r.decision
            )),
            Some(r) => Review::Overdue(format!(
                "last reviewed {} in campaign {}; reviews are due every {}",
                r.at.date_naive(),
                r.campaign,
                plural(self.review_months as usize, "month", "months")
            )),
            None if a.created_at >= self.review_since => Review::NotYetDue(format!(
                "not yet due: registered {}, reviews every {}",
                a.created_at.date_naive(),
                plural(self.review_months as usize, "month", "months")
            )),
            None => Review::Overdue(format!(
                "never reviewed since it was registered {}",
                a.created_at.date_naive()
            )),
        }
    }

    /// Why nobody re-certified its access at the last review, if so.
    fn unanswered(&self, a: &Agent) -> Option<String> {
        if let Some(r) = &a.last_review
            && r.decision.starts_with("unanswered")
        {
            return Some(format!(
                "nobody answered its review in campaign {} ({})",
                r.campaign, r.decision
            ));
        }
        a.flags.iter().find_map(|f| match f {
            AgentFlag::ReviewUnanswered { campaign, .. } => {
                Some(format!("nobody answered its review in campaign {campaign}"))
            }
            _ => None,
        })
    }

    /// Why it has no accountable owner, if so.
    fn no_owner(&self, a: &Agent) -> Option<String> {
        if a.status == AgentStatus::Unregistered {
            return Some("unregistered shadow agent: nobody has claimed it".into());
        }
        if a.owner.trim().is_empty() {
            return Some("no owner recorded".into());
        }
        a.flags.iter().find_map(|f| match f {
            AgentFlag::OwnerLost { owner, since } => Some(format!(
                "owner {owner} left on {}; no new owner yet",
                since.date_naive()
            )),
            _ => None,
        })
    }

    fn assess(&self, a: &Agent) -> AgentPosture {
        let factors = self.factors(a);
        let score = factors
            .iter()
            .map(|f| u32::from(f.points))
            .sum::<u32>()
            .min(100) as u8;
        AgentPosture {
            agent_id: a.id.clone(),
            name: a.name.clone(),
            owner: a.owner.clone(),
            environment: a.environment.clone(),
            status: a.status,
            score,
            level: RiskLevel::of(score),
            factors,
            checklist: self.checklist(a),
        }
    }

    fn factors(&self, a: &Agent) -> Vec<Factor> {
        let mut out = Vec::new();
        let mut add = |name: &str, points: u32, detail: String| {
            if points > 0 {
                out.push(Factor {
                    name: name.into(),
                    points: points.min(100) as u8,
                    detail,
                });
            }
        };

        let n = a.scopes.len();
        if n > 2 {
            add(
                "scope_breadth",
                (3 * (n as u32 - 2)).min(15),
                format!("{} (3 points each beyond 2)", plural(n, "scope", "scopes")),
            );
        }

        let sensitive: Vec<&str> = a
            .scopes
            .iter()
            .filter(|s| self.policy.is_sensitive(s))
            .map(String::as_str)
            .collect();
        if !sensitive.is_empty() {
            add(
                "sensitive_scopes",
                (10 * sensitive.len() as u32).min(20),
                format!("holds {}", sensitive.join(", ")),
            );
        }

        let max_age = self.policy.rotation_max_age_days(&a.environment);
        match a.credential_age_days(self.now) {
            Some(age) if age > i64::from(max_age) => add(
                "credential_age",
                20,
                format!(
                    "secret is {age} days old; the {} maximum is {max_age} days",
                    a.environment
                ),
            ),
            Some(age) if age * 4 > i64::from(max_age) * 3 => add(
                "credential_age",
                8,
                format!(
                    "secret is {age} days old, past ¾ of the {} maximum of {max_age} days",
                    a.environment
                ),
            ),
            Some(_) => {}
            None => {
                if let Some(c) = &a.client_id {
                    add(
                        "credential_age",
                        10,
                        format!("client {c} has a secret of unknown age"),
                    );
                }
            }
        }

        let life = a.token_lifetime_secs;
        if life > TOKEN_LIFETIME_CEILING_SECS {
            add(
                "token_lifetime",
                15,
                format!(
                    "tokens live {}, over the {} ceiling",
                    minutes(life),
                    minutes(TOKEN_LIFETIME_CEILING_SECS)
                ),
            );
        } else if life > DEFAULT_MAX_TOKEN_LIFETIME_SECS {
            add(
                "token_lifetime",
                5,
                format!(
                    "tokens live {}, over {}",
                    minutes(life),
                    minutes(DEFAULT_MAX_TOKEN_LIFETIME_SECS)
                ),
            );
        }

        let mut points = 0;
        let mut seen = Vec::new();
        for f in &a.flags {
            match f {
                AgentFlag::Anomaly {
                    rule,
                    severity,
                    detail,
                    ..
                } => {
                    points += severity_points(*severity);
                    seen.push(format!("{} {rule}: {detail}", severity.as_str()));
                }
                AgentFlag::Frozen { reason, .. } => {
                    points += 10;
                    seen.push(format!("frozen: {reason}"));
                }
                AgentFlag::FreezeRequested { reason, .. } => {
                    points += 10;
                    seen.push(format!("freeze requested: {reason}"));
                }
                _ => {}
            }
        }
        add("anomalies", points.min(40), seen.join("; "));

        if let Some(why) = self.no_owner(a) {
            add("no_owner", 20, why);
        }
        if let Review::Overdue(why) = self.review(a) {
            add("review_overdue", 10, why);
        }
        if let Some(why) = self.unanswered(a) {
            add("review_unanswered", 10, why);
        }
        out
    }

    fn checklist(&self, a: &Agent) -> Vec<Check> {
        let check = |item: &str, ok: bool, detail: String| Check {
            item: item.into(),
            ok,
            detail,
        };
        let mut out = Vec::with_capacity(item::ALL.len());

        out.push(match a.client_id.as_deref() {
            None => check(
                item::DEDICATED_CLIENT,
                false,
                format!("no client at the identity provider ({})", a.status.as_str()),
            ),
            Some(c) => match self.clients.get(c).copied().unwrap_or(1) {
                0 | 1 => check(
                    item::DEDICATED_CLIENT,
                    true,
                    format!("client {c} is used by this agent only"),
                ),
                n => check(
                    item::DEDICATED_CLIENT,
                    false,
                    format!(
                        "client {c} is shared with {}",
                        plural(n - 1, "other agent record", "other agent records")
                    ),
                ),
            },
        });

        let excluded: Vec<&str> = a
            .scopes
            .iter()
            .filter(|s| self.policy.is_excluded(s))
            .map(String::as_str)
            .collect();
        let unapproved: Vec<&str> = a
            .scopes
            .iter()
            .filter(|s| !self.policy.is_excluded(s) && !self.policy.is_approved(s))
            .map(String::as_str)
            .collect();
        let unanswered = self.unanswered(a);
        let mut problems = Vec::new();
        if !excluded.is_empty() {
            problems.push(format!("excluded by policy: {}", excluded.join(", ")));
        }
        if !unapproved.is_empty() {
            problems.push(format!(
                "not in the approved scopes: {}",
                unapproved.join(", ")
            ));
        }
        if let Some(why) = &unanswered {
            problems.push(format!("{why}: access not re-certified"));
        }
        out.push(if problems.is_empty() {
            let review = match &a.last_review {
                Some(r) => format!("its last review was answered ({})", r.decision),
                None => "no review yet".into(),
            };
            check(
                item::MINIMAL_SCOPES,
                true,
                format!(
                    "{}, all approved by policy and none excluded; {review}",
                    plural(a.scopes.len(), "scope", "scopes")
                ),
            )
        } else {
            check(item::MINIMAL_SCOPES, false, problems.join("; "))
        });

        let life = a.token_lifetime_secs;
        out.push(check(
            item::SHORT_LIVED_TOKENS,
            life <= TOKEN_LIFETIME_CEILING_SECS,
            format!(
                "tokens live {} (at most {})",
                minutes(life),
                minutes(TOKEN_LIFETIME_CEILING_SECS)
            ),
        ));

        let bound = ROTATION_CHECK_DAYS.min(self.policy.rotation_max_age_days(&a.environment));
        out.push(match a.credential_age_days(self.now) {
            Some(age) => check(
                item::ROTATION,
                age <= i64::from(bound),
                format!("secret is {age} days old (at most {bound})"),
            ),
            None if a.client_id.is_some() => check(
                item::ROTATION,
                false,
                format!("secret of unknown age (at most {bound} days)"),
            ),
            None => check(item::ROTATION, false, "no secret issued yet".into()),
        });

        out.push(match self.no_owner(a) {
            Some(why) => check(item::OWNER_ASSIGNED, false, why),
            None => check(item::OWNER_ASSIGNED, true, format!("owner {}", a.owner)),
        });

        out.push(match self.review(a) {
            Review::Current(d) | Review::NotYetDue(d) => check(item::REVIEWED, true, d),
            Review::Overdue(d) => check(item::REVIEWED, false, d),
        });

        out.push(check(
            item::AUDIT_STREAMING,
            self.audit_streaming,
            if self.audit_streaming {
                "the audit trail streams out of Steward as it is written".into()
            } else {
                "the audit trail stays in Steward's store (no export configured)".into()
            },
        ));
        out
    }
}

/// Names of `agents` for a message: the first few, then "…".
fn names(agents: &[&AgentPosture]) -> String {
    let mut s = agents
        .iter()
        .take(NAMES_SHOWN)
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if agents.len() > NAMES_SHOWN {
        s.push_str(", …");
    }
    s
}

/// What `level` still misses (empty: reached), given the levels below it are reached.
fn missing(level: Maturity, input: &PostureInput, live: &[&AgentPosture]) -> Vec<String> {
    let policy = input.policy;
    let unregistered = live
        .iter()
        .filter(|a| a.status == AgentStatus::Unregistered)
        .count();
    let mut out = Vec::new();
    match level {
        Maturity::AdHoc => {}
        Maturity::Discovery => {
            let discovered = input.discovery_ran || (policy.discovery.enabled && unregistered == 0);
            if !discovered {
                out.push(
                    "run shadow-agent discovery: no sweep has listed the identity provider's clients yet"
                        .into(),
                );
                if !policy.discovery.enabled {
                    out.push("enable discovery in the policy (`[discovery] enabled`)".into());
                }
            }
        }
        Maturity::Governance => {
            let failing: Vec<&AgentPosture> = live
                .iter()
                .copied()
                .filter(|a| !item::GOVERNANCE.iter().all(|i| a.passes(i)))
                .collect();
            let passed = live.len() - failing.len();
            if !share_met(passed, live.len(), GOVERNANCE_PERCENT) {
                let per_item = item::GOVERNANCE
                    .iter()
                    .map(|i| (i, failing.iter().filter(|a| !a.passes(i)).count()))
                    .filter(|(_, n)| *n > 0)
                    .map(|(i, n)| format!("{i} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                out.push(format!(
                    "{}% of live agents need an owner, a dedicated client, rotation within {ROTATION_CHECK_DAYS} days and tokens of at most {}: {passed} of {} do ({}%); failing: {per_item} ({})",
                    GOVERNANCE_PERCENT,
                    minutes(TOKEN_LIFETIME_CEILING_SECS),
                    live.len(),
                    percent(passed, live.len()),
                    names(&failing)
                ));
            }
        }
        Maturity::Detection => {
            if !policy.detection.enabled {
                out.push("enable anomaly detection in the policy (`[detection] enabled`)".into());
            } else if policy.detection.rules.is_empty() {
                out.push("add at least one anomaly detection rule to the policy".into());
            }
            if !input.audit_streaming {
                out.push("stream the audit trail out of Steward (e.g. to a SIEM)".into());
            }
        }
        Maturity::FullGovernance => {
            let failing: Vec<&AgentPosture> = live
                .iter()
                .copied()
                .filter(|a| a.checklist.iter().any(|c| !c.ok))
                .collect();
            let passed = live.len() - failing.len();
            if !share_met(passed, live.len(), FULL_GOVERNANCE_PERCENT) {
                out.push(format!(
                    "{}% of live agents must pass every checklist item: {passed} of {} do ({}%); not yet: {}",
                    FULL_GOVERNANCE_PERCENT,
                    live.len(),
                    percent(passed, live.len()),
                    names(&failing)
                ));
            }
            if unregistered > 0 {
                out.push(format!(
                    "claim or release {}",
                    plural(unregistered, "unregistered agent", "unregistered agents")
                ));
            }
        }
    }
    out
}

impl PostureReport {
    pub fn build(input: &PostureInput) -> Self {
        let ctx = Ctx::new(input);
        let mut agents: Vec<AgentPosture> = input
            .agents
            .iter()
            .filter(|a| reported(a.status))
            .map(|a| ctx.assess(a))
            .collect();
        agents.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.name.cmp(&b.name)));

        let live_agents: Vec<&AgentPosture> = agents.iter().filter(|a| live(a.status)).collect();
        let mut by_level = LevelCounts::default();
        for a in &agents {
            *match a.level {
                RiskLevel::Low => &mut by_level.low,
                RiskLevel::Medium => &mut by_level.medium,
                RiskLevel::High => &mut by_level.high,
                RiskLevel::Critical => &mut by_level.critical,
            } += 1;
        }
        let checklist = item::ALL
            .iter()
            .map(|i| {
                let passed = live_agents.iter().filter(|a| a.passes(i)).count();
                PassRate {
                    item: (*i).into(),
                    passed,
                    total: live_agents.len(),
                    percent: percent(passed, live_agents.len()),
                }
            })
            .collect();

        let mut maturity = Maturity::AdHoc;
        let mut next_level = None;
        let mut next_level_missing = Vec::new();
        for level in &Maturity::ALL[1..] {
            let m = missing(*level, input, &live_agents);
            if !m.is_empty() {
                next_level = Some(*level);
                next_level_missing = m;
                break;
            }
            maturity = *level;
        }

        let summary = Summary {
            agents: agents.len(),
            live_agents: live_agents.len(),
            unregistered_agents: agents
                .iter()
                .filter(|a| a.status == AgentStatus::Unregistered)
                .count(),
            by_level,
            checklist,
            maturity,
            next_level,
            next_level_missing,
        };
        Self {
            generated_at: input.now,
            agents,
            summary,
        }
    }

    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }

    /// An aligned plain-text table, then the checklist pass rates and the maturity level.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        if self.agents.is_empty() {
            out.push_str("no agents in the registry\n");
        } else {
            let header = [
                "NAME",
                "ENV",
                "OWNER",
                "STATUS",
                "SCORE",
                "LEVEL",
                "FAILED CHECKS",
            ];
            let rows: Vec<[String; 7]> = self
                .agents
                .iter()
                .map(|a| {
                    let failed = a.failed_checks();
                    [
                        a.name.clone(),
                        a.environment.clone(),
                        if a.owner.is_empty() {
                            "-".into()
                        } else {
                            a.owner.clone()
                        },
                        a.status.as_str().into(),
                        a.score.to_string(),
                        a.level.as_str().into(),
                        if failed.is_empty() {
                            "-".into()
                        } else {
                            failed.join(", ")
                        },
                    ]
                })
                .collect();
            let mut widths = header.map(|h| h.chars().count());
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: [&str; 7]| {
                let mut l = String::new();
                for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                    let pad = w.saturating_sub(cell.chars().count());
                    if i == 4 {
                        // SCORE: right-aligned
                        l.push_str(&" ".repeat(pad));
                        l.push_str(cell);
                    } else {
                        l.push_str(cell);
                        if i + 1 < cells.len() {
                            l.push_str(&" ".repeat(pad));
                        }
                    }
                    if i + 1 < cells.len() {
                        l.push_str("  ");
                    }
                }
                l.push('\n');
                l
            };
            out.push_str(&line(header));
            for row in &rows {
                out.push_str(&line(row.each_ref().map(String::as_str)));
            }
        }

        let s = &self.summary;
        out.push_str(&format!(
            "\nRisk: {} critical, {} high, {} medium, {} low\n",
            s.by_level.critical, s.by_level.high, s.by_level.medium, s.by_level.low
        ));
        out.push_str(&format!(
            "\nZero-trust checklist ({}):\n",
            plural(s.live_agents, "live agent", "live agents")
        ));
        let width = item::ALL.iter().map(|i| i.len()).max().unwrap_or(0);
        for r in &s.checklist {
            out.push_str(&format!(
                "  {:<width$}  {:>4}/{:<4} {:>4}%\n",
                r.item, r.passed, r.total, r.percent
            ));
        }
        out.push_str(&format!(
            "\nMaturity: {} ({} of {}: {})\n",
            s.maturity.label(),
            s.maturity.rank(),
            Maturity::ALL.len(),
            Maturity::ALL.map(Maturity::label).join(" → ")
        ));
        if let Some(next) = s.next_level {
            out.push_str(&format!("To reach {}:\n", next.label()));
            for m in &s.next_level_missing {
                out.push_str(&format!("  - {m}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statemachines::review_item::LastReview;

    const EXAMPLE: &str = include_str!("../../policy.example.toml");

    fn policy() -> Policy {
        crate::policy_file::parse(EXAMPLE, "policy.example.toml").expect("example policy is valid")
    }

    fn now() -> DateTime<Utc> {
        "2026-06-15T12:00:00Z".parse().unwrap()
    }

    fn days_ago(d: i64) -> DateTime<Utc> {
        now() - Duration::days(d)
    }

    /// A well-governed agent: dedicated client, two approved scopes, 15-minute tokens, a
    /// 10-day-old secret, an owner, reviewed last month.
    fn agent(name: &str, client: &str) -> Agent {
        Agent {
            id: format!("agt-{name}"),
            name: name.into(),
            owner: "alice@example.com".into(),
            team: "sre".into(),
            environment: "prod".into(),
            purpose: "reads metrics".into(),
            scopes: vec![
                "datadog:metrics:read".into(),
                "datadog:monitors:read".into(),
            ],
            token_lifetime_secs: 15 * 60,
            expires_on: None,
            status: AgentStatus::Active,
            client_id: Some(client.into()),
            secret_version: Some("v1".into()),
            credential_issued_at: Some(days_ago(10)),
            requested_by: "alice@example.com".into(),
            created_at: days_ago(400),
            updated_at: days_ago(10),
            flags: vec![],
            credentials: vec![],
            decommission: None,
            last_review: Some(LastReview {
                campaign: "2026-q2".into(),
                decision: "keep".into(),
                by: "alice@example.com".into(),
                at: days_ago(30),
            }),
        }
    }

    fn risky(name: &str, client: &str) -> Agent {
        let mut a = agent(name, client);
        a.scopes.push("datadog:monitors:write".into());
        a.credential_issued_at = Some(days_ago(200));
        a.token_lifetime_secs = 60 * 60;
        a.flags.push(AgentFlag::Anomaly {
            rule: "ip-outside-ranges".into(),
            severity: Severity::High,
            detail: "request from 203.0.113.9".into(),
            at: days_ago(1),
        });
        a.last_review = None;
        a
    }

    fn unregistered(name: &str, client: &str) -> Agent {
        let mut a = agent(name, client);
        a.status = AgentStatus::Unregistered;
        a.owner = String::new();
        a.last_review = None;
        a.created_at = days_ago(2);
        a.credential_issued_at = None;
        a
    }

    fn build(
        agents: &[Agent],
        policy: &Policy,
        audit_streaming: bool,
        discovery_ran: bool,
    ) -> PostureReport {
        PostureReport::build(&PostureInput {
            agents,
            policy,
            now: now(),
            audit_streaming,
            discovery_ran,
        })
    }

    fn find<'r>(r: &'r PostureReport, name: &str) -> &'r AgentPosture {
        r.agents
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("{name} not in the report"))
    }

    #[test]
    fn a_well_governed_agent_scores_low_and_passes_every_check() {
        let p = policy();
        let r = build(&[agent("good-agent-prod", "c1")], &p, true, true);
        let a = find(&r, "good-agent-prod");
        assert_eq!(a.score, 0, "{:?}", a.factors);
        assert_eq!(a.level, RiskLevel::Low);
        assert!(a.factors.is_empty(), "{:?}", a.factors);
        assert_eq!(a.checklist.len(), item::ALL.len());
        assert!(a.failed_checks().is_empty(), "{:?}", a.checklist);
        assert!(
            a.check(item::MINIMAL_SCOPES)
                .unwrap()
                .detail
                .contains("2 scopes, all approved by policy"),
            "{:?}",
            a.check(item::MINIMAL_SCOPES)
        );
    }

    #[test]
    fn a_risky_agent_scores_high_and_fails_the_right_checks() {
        let p = policy();
        let r = build(&[risky("risky-agent-prod", "c2")], &p, true, true);
        let a = find(&r, "risky-agent-prod");
        let points = |name: &str| {
            a.factors
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.points)
                .unwrap_or(0)
        };
        assert_eq!(points("scope_breadth"), 3);
        assert_eq!(points("sensitive_scopes"), 10);
        assert_eq!(points("credential_age"), 20, "{:?}", a.factors);
        assert_eq!(points("token_lifetime"), 5);
        assert_eq!(points("anomalies"), 20);
        assert_eq!(points("review_overdue"), 10);
        assert_eq!(points("no_owner"), 0);
        assert_eq!(a.score, 68);
        assert_eq!(a.level, RiskLevel::High);
        assert!(
            a.factors.iter().any(|f| f
                .detail
                .contains("200 days old; the prod maximum is 60 days")),
            "{:?}",
            a.factors
        );
        // 60-minute tokens are at the ceiling, not over it; the scopes are all approved.
        assert_eq!(a.failed_checks(), vec![item::ROTATION, item::REVIEWED]);

        // More anomalies, over-long tokens, an owner who left: critical, capped at 100.
        let mut worse = risky("worse-agent-prod", "c3");
        worse.token_lifetime_secs = 2 * 3600;
        worse.flags.push(AgentFlag::Anomaly {
            rule: "credential-sharing".into(),
            severity: Severity::Critical,
            detail: "4 sources".into(),
            at: days_ago(1),
        });
        worse.flags.push(AgentFlag::OwnerLost {
            owner: "alice@example.com".into(),
            since: days_ago(3),
        });
        worse.scopes.push("okta:users:manage".into());
        worse.last_review = Some(LastReview {
            campaign: "2026-q2".into(),
            decision: "unanswered: keep-and-flag".into(),
            by: "deadline".into(),
            at: days_ago(20),
        });
        let r = build(&[worse], &p, false, true);
        let a = find(&r, "worse-agent-prod");
        assert_eq!(a.level, RiskLevel::Critical, "{:?}", a.factors);
        assert!(a.score <= 100);
        assert_eq!(
            a.failed_checks(),
            vec![
                item::MINIMAL_SCOPES,
                item::SHORT_LIVED_TOKENS,
                item::ROTATION,
                item::OWNER_ASSIGNED,
                item::AUDIT_STREAMING
            ]
        );
        let minimal = a.check(item::MINIMAL_SCOPES).unwrap();
        assert!(
            minimal
                .detail
                .contains("excluded by policy: okta:users:manage")
                && minimal.detail.contains("access not re-certified"),
            "{}",
            minimal.detail
        );
    }

    #[test]
    fn a_client_used_by_two_records_is_not_dedicated() {
        let p = policy();
        let mut old = agent("old-agent-prod", "shared-client");
        old.status = AgentStatus::Decommissioned;
        let agents = [
            agent("one-agent-prod", "shared-client"),
            agent("two-agent-prod", "shared-client"),
            agent("three-agent-prod", "own-client"),
            old,
        ];
        let r = build(&agents, &p, true, true);
        assert_eq!(r.summary.agents, 3, "ended records are left out");
        for name in ["one-agent-prod", "two-agent-prod"] {
            let c = find(&r, name)
                .check(item::DEDICATED_CLIENT)
                .unwrap()
                .clone();
            assert!(!c.ok, "{name}: {c:?}");
            assert!(
                c.detail
                    .contains("shared-client is shared with 1 other agent record"),
                "{}",
                c.detail
            );
        }
        assert!(find(&r, "three-agent-prod").passes(item::DEDICATED_CLIENT));
        let rate = &r.summary.checklist[0];
        assert_eq!(
            (rate.item.as_str(), rate.passed, rate.total, rate.percent),
            (item::DEDICATED_CLIENT, 1, 3, 33)
        );
    }

    #[test]
    fn maturity_progresses_level_by_level() {
        let mut p = policy();
        p.discovery.enabled = false;

        // A shadow agent and no discovery: ad-hoc.
        let mut agents = vec![
            agent("a-agent-prod", "c1"),
            unregistered("shadow-agent-prod", "c2"),
        ];
        let r = build(&agents, &p, false, false);
        assert_eq!(r.summary.maturity, Maturity::AdHoc);
        assert_eq!(r.summary.next_level, Some(Maturity::Discovery));
        assert!(
            r.summary
                .next_level_missing
                .iter()
                .any(|m| m.contains("enable discovery")),
            "{:?}",
            r.summary.next_level_missing
        );
        let shadow = find(&r, "shadow-agent-prod");
        assert!(!shadow.passes(item::OWNER_ASSIGNED));
        assert!(shadow.factors.iter().any(|f| f.name == "no_owner"));

        // Discovery ran, but half the live agents lack an owner: discovery only.
        let r = build(&agents, &p, false, true);
        assert_eq!(r.summary.maturity, Maturity::Discovery);
        assert_eq!(r.summary.next_level, Some(Maturity::Governance));
        let missing = r.summary.next_level_missing.join("\n");
        assert!(
            missing.contains("1 of 2 do (50%)") && missing.contains("owner_assigned 1"),
            "{missing}"
        );

        // Nine governed agents and the shadow one: 90% are governed.
        agents.extend((0..8).map(|i| agent(&format!("n{i}-agent-prod"), &format!("cn{i}"))));
        let r = build(&agents, &p, false, true);
        assert_eq!(r.summary.maturity, Maturity::Governance);
        assert_eq!(r.summary.next_level, Some(Maturity::Detection));
        assert_eq!(
            r.summary.next_level_missing,
            vec!["stream the audit trail out of Steward (e.g. to a SIEM)".to_string()]
        );

        // Detection needs rules as well as the stream.
        let mut no_rules = p.clone();
        no_rules.detection.rules.clear();
        let r = build(&agents, &no_rules, true, true);
        assert_eq!(r.summary.maturity, Maturity::Governance);
        assert!(r.summary.next_level_missing[0].contains("at least one anomaly detection rule"));

        // Audit streams and detection has rules: detection; the shadow agent blocks the rest.
        let r = build(&agents, &p, true, true);
        assert_eq!(r.summary.maturity, Maturity::Detection);
        assert_eq!(r.summary.next_level, Some(Maturity::FullGovernance));
        assert!(
            r.summary
                .next_level_missing
                .contains(&"claim or release 1 unregistered agent".to_string()),
            "{:?}",
            r.summary.next_level_missing
        );

        // The shadow agent is claimed (its record now governed): full governance.
        agents[1] = agent("shadow-agent-prod", "c2");
        let r = build(&agents, &p, true, true);
        assert_eq!(r.summary.maturity, Maturity::FullGovernance);
        assert_eq!(r.summary.next_level, None);
        assert!(r.summary.next_level_missing.is_empty());
        assert!(r.summary.checklist.iter().all(|c| c.percent == 100));
    }

    #[test]
    fn discovery_enabled_with_no_shadow_agent_counts_as_discovery() {
        let p = policy();
        assert!(p.discovery.enabled);
        let r = build(&[agent("a-agent-prod", "c1")], &p, false, false);
        assert_eq!(r.summary.maturity, Maturity::Governance);
        let r = build(
            &[
                agent("a-agent-prod", "c1"),
                unregistered("s-agent-prod", "c2"),
            ],
            &p,
            false,
            false,
        );
        assert_eq!(r.summary.maturity, Maturity::AdHoc);
    }

    #[test]
    fn reviews_fall_due_after_the_period() {
        let p = policy();
        let mut fresh = agent("fresh-agent-prod", "c1");
        fresh.last_review = None;
        fresh.created_at = days_ago(5);
        let mut stale = agent("stale-agent-prod", "c2");
        stale.last_review.as_mut().unwrap().at = days_ago(200);
        let r = build(&[fresh, stale], &p, true, true);
        let fresh = find(&r, "fresh-agent-prod").check(item::REVIEWED).unwrap();
        assert!(
            fresh.ok && fresh.detail.starts_with("not yet due"),
            "{fresh:?}"
        );
        let stale = find(&r, "stale-agent-prod");
        assert!(!stale.passes(item::REVIEWED));
        assert!(stale.factors.iter().any(|f| f.name == "review_overdue"));
    }

    #[test]
    fn pending_agents_are_reported_but_not_counted_as_live() {
        let p = policy();
        let mut pending = agent("new-agent-prod", "unused");
        pending.status = AgentStatus::PendingApproval;
        pending.client_id = None;
        pending.credential_issued_at = None;
        let r = build(&[pending, agent("a-agent-prod", "c1")], &p, true, true);
        assert_eq!((r.summary.agents, r.summary.live_agents), (2, 1));
        let a = find(&r, "new-agent-prod");
        assert!(!a.passes(item::DEDICATED_CLIENT) && !a.passes(item::ROTATION));
        assert_eq!(r.summary.maturity, Maturity::FullGovernance);
    }

    #[test]
    fn table_and_json_show_the_report() {
        let p = policy();
        let r = build(
            &[
                agent("good-agent-prod", "c1"),
                risky("risky-agent-prod", "c2"),
            ],
            &p,
            false,
            true,
        );
        let table = r.to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME "), "{table}");
        assert!(lines[0].ends_with("FAILED CHECKS"), "{table}");
        assert!(
            lines[1].starts_with("risky-agent-prod"),
            "riskiest first:\n{table}"
        );
        assert!(
            lines[1].contains(" 68  high ")
                && lines[1].ends_with("rotation, reviewed, audit_streaming"),
            "{table}"
        );
        // Columns line up: LEVEL starts at the same offset on every row.
        let col = lines[0].find("LEVEL").unwrap();
        assert_eq!(&lines[1][col..col + 4], "high", "{table}");
        assert_eq!(&lines[2][col..col + 3], "low", "{table}");
        // The risky agent's old secret keeps half the live agents ungoverned.
        assert!(table.contains("Maturity: discovery (2 of 5"), "{table}");
        assert!(
            table.contains("To reach governance:\n  - 90% of live agents"),
            "{table}"
        );
        let rotation = lines
            .iter()
            .find(|l| l.trim_start().starts_with("rotation "))
            .unwrap_or_else(|| panic!("{table}"));
        assert_eq!(
            rotation.split_whitespace().collect::<Vec<_>>(),
            ["rotation", "1/2", "50%"]
        );

        let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(v["summary"]["maturity"], "discovery");
        assert_eq!(v["summary"]["next_level"], "governance");
        assert_eq!(v["agents"][0]["name"], "risky-agent-prod");
        assert_eq!(v["agents"][0]["level"], "high");
        assert_eq!(v["agents"][0]["status"], "active");
        assert_eq!(v["agents"][0]["checklist"][0]["item"], "dedicated_client");
        let back: PostureReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
