//! Approvals: a person's decision on a sensitive step, and the rules a decision must satisfy.
//! The rules live here, in pure code, so the engine enforces them whatever the UI (console, Slack).

use crate::agent::Agent;
use crate::command::{Actor, AuditKind, Command};
use crate::workflow::{Ctx, Rejected};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ApprovalOutcome {
    Approved {
        by: String,
        at: DateTime<Utc>,
        reason: Option<String>,
    },
    Denied {
        by: String,
        at: DateTime<Utc>,
        reason: Option<String>,
    },
    Expired {
        at: DateTime<Utc>,
    },
    Cancelled {
        at: DateTime<Utc>,
    },
}

/// What a person is asked to approve. Stored with the workflow state and in the approvals table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub workflow_id: String,
    pub agent_id: String,
    pub agent_name: String,
    pub environment: String,
    /// `onboard` or `scope-change`.
    pub action: String,
    pub scopes_added: Vec<String>,
    pub scopes_removed: Vec<String>,
    /// The added scopes that made this approval necessary.
    pub sensitive_scopes: Vec<String>,
    pub token_lifetime_secs: u32,
    pub requester: String,
    pub justification: String,
    pub approvers: Vec<String>,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The agent's owner: told about the request (a DM in Slack) even when not an approver.
    #[serde(default)]
    pub owner: String,
    /// Distinct approvers needed before an approval takes effect (two-person rule).
    #[serde(default = "one")]
    pub quorum: u8,
    /// When the approvers are reminded, if the request is still open then.
    #[serde(default)]
    pub remind_at: Option<DateTime<Utc>>,
    /// Approvals given so far, while fewer than `quorum`.
    #[serde(default)]
    pub votes: Vec<Vote>,
}

fn one() -> u8 {
    1
}

/// One approver's "yes" towards a quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub by: String,
    pub at: DateTime<Utc>,
}

/// What happens around an open approval besides its ask and its close: the people channel
/// shows it (Slack updates the message, posts a reminder, escalates to the security channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FollowUp {
    /// One approver said yes; more are needed.
    Vote {
        by: String,
        at: DateTime<Utc>,
        votes: u8,
        quorum: u8,
    },
    /// The request is still open and expires soon.
    Reminder { expires_at: DateTime<Utc> },
    /// The request expired unanswered: the security channel hears about it.
    Escalation { expired_at: DateTime<Utc> },
}

/// The result of a decision on a waiting approval.
#[allow(clippy::large_enum_variant)] // returned once per step and matched at once
pub enum Ballot {
    /// A "yes" that does not reach the quorum yet: the approval with the vote added, and the
    /// commands that record it.
    Pending {
        approval: ApprovalRequest,
        commands: Vec<Command>,
    },
    /// The approval is decided: approved by a quorum, or denied.
    Decided {
        decision: Decision,
        /// Who decided last (canonical spelling), and everyone who approved.
        approver: String,
        approvers: Vec<String>,
        reason: Option<String>,
        commands: Vec<Command>,
    },
}

/// The result of a timer on a waiting approval.
pub enum Deadline {
    /// The reminder went out; still waiting.
    Reminded(Vec<Command>),
    /// The approval expired: it is closed, audited and escalated.
    Expired(Vec<Command>),
}

/// What a workflow asks approval for; `ApprovalRequest::open` adds who, until when and the ids.
pub struct Ask {
    pub action: &'static str,
    pub scopes_added: Vec<String>,
    pub scopes_removed: Vec<String>,
    pub sensitive_scopes: Vec<String>,
    pub token_lifetime_secs: u32,
    pub justification: String,
}

/// Name of the timer that ends an unanswered approval.
pub const APPROVAL_EXPIRY_TIMER: &str = "approval-expiry";
/// Name of the timer that reminds the approvers before the expiry.
pub const APPROVAL_REMINDER_TIMER: &str = "approval-reminder";

impl ApprovalRequest {
    /// The workflow's approval: asked of the policy's approvers except the requester, expiring
    /// after the policy's approval expiry. Its id derives from the workflow id (replay-stable).
    /// The requester is compared the way a decision's approver is (trimmed, any case), so a
    /// padded or differently spelled requester is never left among their own approvers.
    pub fn open(ctx: &Ctx, agent: &Agent, requester: &str, ask: Ask) -> Self {
        let requester = requester.trim();
        let expires_at = ctx.now + Duration::seconds(ctx.policy.approval_expiry_secs as i64);
        let quorum = ctx.policy.quorum_for(&ask.sensitive_scopes);
        Self {
            id: format!("{}-approval-1", ctx.workflow_id),
            workflow_id: ctx.workflow_id.to_string(),
            agent_id: agent.id.clone(),
            agent_name: agent.name.clone(),
            environment: agent.environment.clone(),
            action: ask.action.into(),
            scopes_added: ask.scopes_added,
            scopes_removed: ask.scopes_removed,
            sensitive_scopes: ask.sensitive_scopes,
            token_lifetime_secs: ask.token_lifetime_secs,
            requester: requester.to_string(),
            justification: ask.justification,
            approvers: ctx
                .policy
                .approvers
                .iter()
                .filter(|a| !a.trim().eq_ignore_ascii_case(requester))
                .cloned()
                .collect(),
            requested_at: ctx.now,
            expires_at,
            owner: agent.owner.clone(),
            quorum,
            remind_at: (ctx.policy.approval_reminder_secs > 0
                && ctx.policy.approval_reminder_secs < ctx.policy.approval_expiry_secs)
                .then(|| expires_at - Duration::seconds(ctx.policy.approval_reminder_secs as i64)),
            votes: vec![],
        }
    }

    /// Refuses a request whose quorum cannot be reached: too few approvers besides the
    /// requester (a two-person rule with an approver asking needs three approvers listed).
    pub fn check_quorum_reachable(&self) -> Result<(), Rejected> {
        if self.approvers.len() < usize::from(self.quorum) {
            let what = if self.sensitive_scopes.is_empty() {
                format!("{} of {}", self.action, self.agent_name)
            } else {
                self.sensitive_scopes.join(", ")
            };
            return Err(Rejected::new(
                "approvers",
                format!(
                    "{what} needs {} distinct approvers other than the requester, but the policy leaves only {}; add approvers to the policy",
                    self.quorum,
                    self.approvers.len()
                ),
            ));
        }
        Ok(())
    }

    /// The commands that open it: arm the expiry timer, record and ask it, audit the ask.
    pub fn opening_commands(&self, agent: &Agent) -> Vec<Command> {
        let remind = self.remind_at.map(|at| Command::SetTimer {
            name: APPROVAL_REMINDER_TIMER.into(),
            at,
        });
        let quorum = if self.quorum > 1 {
            format!(" ({} distinct approvers needed)", self.quorum)
        } else {
            String::new()
        };
        remind
            .into_iter()
            .chain([
                Command::SetTimer {
                    name: APPROVAL_EXPIRY_TIMER.into(),
                    at: self.expires_at,
                },
                Command::RequestApproval(self.clone()),
                crate::command::audit(
                    agent,
                    AuditKind::ApprovalRequested,
                    self.requested_by(),
                    Some(&self.id),
                    self.sensitive_scopes.clone(),
                    if self.sensitive_scopes.is_empty() {
                        format!(
                            "approval {} requested to {} {}{quorum}",
                            self.id, self.action, self.agent_name
                        )
                    } else {
                        format!(
                            "approval {} requested for sensitive scopes {}{quorum}",
                            self.id,
                            self.sensitive_scopes.join(", ")
                        )
                    },
                ),
            ])
            .collect()
    }

    /// Who asked, as an actor: Steward itself when the requester is one of its reserved names
    /// (a detection freeze's question), else the person.
    pub fn requested_by(&self) -> Actor {
        if is_reserved_name(&self.requester) {
            Actor::System
        } else {
            Actor::Person(self.requester.clone())
        }
    }

    /// The rules every decision must satisfy (besides "not decided yet", which the owning
    /// workflow's state enforces): the approver is allowed, is not the requester, the request has
    /// not expired, and they have not approved it already (a person counts once towards a
    /// quorum). Returns the approver as the approval lists them (canonical spelling).
    pub fn check_decision(&self, approver: &str, now: DateTime<Utc>) -> Result<String, Rejected> {
        let approver = approver.trim();
        if approver.eq_ignore_ascii_case(self.requester.trim()) {
            return Err(Rejected::new(
                "approver",
                format!(
                    "{approver} requested this change and cannot approve it: another approver must decide"
                ),
            ));
        }
        if is_reserved_name(approver) {
            return Err(Rejected::new(
                "approver",
                format!(
                    "{approver} is a name Steward acts under itself; a person cannot decide under it"
                ),
            ));
        }
        // The refusal goes back to whoever tried (a Slack clicker, an API caller): it says
        // they are not an approver, never who the approvers are.
        let Some(canonical) = self
            .approvers
            .iter()
            .find(|a| a.trim().eq_ignore_ascii_case(approver))
        else {
            return Err(Rejected::new(
                "approver",
                format!(
                    "{approver} is not an allowed approver for approval {}: only its approvers may decide it; nothing was decided",
                    self.id
                ),
            ));
        };
        if now > self.expires_at {
            return Err(Rejected::new(
                "approval",
                format!(
                    "approval {} expired at {}; request the change again",
                    self.id,
                    self.expires_at.to_rfc3339()
                ),
            ));
        }
        if self.votes.iter().any(|v| v.by == *canonical) {
            return Err(Rejected::new(
                "approver",
                format!(
                    "{canonical} already approved {}; it needs {} distinct approvers, so another approver must decide",
                    self.id, self.quorum
                ),
            ));
        }
        Ok(canonical.clone())
    }

    /// The commands that close it on a decision: disarm the expiry timer, record the outcome
    /// (which also tells the requester) and audit who decided. `approver` is the canonical
    /// spelling returned by `check_decision`.
    pub fn decided_commands(
        &self,
        agent: &Agent,
        decision: Decision,
        approver: &str,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Vec<Command> {
        let (outcome, message) = match decision {
            Decision::Approve => (
                ApprovalOutcome::Approved {
                    by: approver.to_string(),
                    at: now,
                    reason,
                },
                format!("{approver} approved {}", self.id),
            ),
            Decision::Deny => {
                let why = reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                (
                    ApprovalOutcome::Denied {
                        by: approver.to_string(),
                        at: now,
                        reason,
                    },
                    format!("{approver} denied {}{why}", self.id),
                )
            }
        };
        let mut commands = self.closing_commands(outcome);
        commands.push(crate::command::audit(
            agent,
            AuditKind::ApprovalDecided,
            Actor::Person(approver.to_string()),
            Some(&self.id),
            self.sensitive_scopes.clone(),
            message,
        ));
        commands
    }

    /// Applies a decision to this waiting approval: checks the approval id and the rules, counts
    /// a "yes" towards the quorum (a person counts once), and decides on the last "yes" needed
    /// or on any "no".
    pub fn ballot(
        &self,
        agent: &Agent,
        approval_id: &str,
        decision: Decision,
        approver: &str,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Ballot, Rejected> {
        if approval_id != self.id {
            return Err(Rejected::new(
                "approval_id",
                format!(
                    "{} is waiting for approval {}, not {approval_id}",
                    agent.name, self.id
                ),
            ));
        }
        let approver = self.check_decision(approver, now)?;
        let mut approvers: Vec<String> = self.votes.iter().map(|v| v.by.clone()).collect();
        if decision == Decision::Approve {
            approvers.push(approver.clone());
            if approvers.len() < usize::from(self.quorum.max(1)) {
                let mut approval = self.clone();
                approval.votes.push(Vote {
                    by: approver.clone(),
                    at: now,
                });
                let votes = approval.votes.len() as u8;
                let commands = vec![
                    Command::FollowUpApproval {
                        approval_id: self.id.clone(),
                        follow_up: FollowUp::Vote {
                            by: approver.clone(),
                            at: now,
                            votes,
                            quorum: self.quorum,
                        },
                    },
                    crate::command::audit(
                        agent,
                        AuditKind::ApprovalVoted,
                        Actor::Person(approver.clone()),
                        Some(&self.id),
                        self.sensitive_scopes.clone(),
                        format!(
                            "{approver} approved {} ({votes} of {} approvers); waiting for another approver",
                            self.id, self.quorum
                        ),
                    ),
                ];
                return Ok(Ballot::Pending { approval, commands });
            }
        }
        let commands = self.decided_commands(agent, decision, &approver, reason.clone(), now);
        Ok(Ballot::Decided {
            decision,
            approver,
            approvers,
            reason,
            commands,
        })
    }

    /// Applies one of this approval's timers: the reminder (still waiting) or the expiry
    /// (closed as expired, audited, escalated). A stale or early timer is refused.
    pub fn is_timer(name: &str) -> bool {
        name == APPROVAL_EXPIRY_TIMER || name == APPROVAL_REMINDER_TIMER
    }

    /// Applies one of this approval's timers (see [`ApprovalRequest::is_timer`]).
    pub fn deadline(
        &self,
        agent: &Agent,
        timer: &str,
        now: DateTime<Utc>,
        consequence: &str,
    ) -> Result<Deadline, Rejected> {
        match timer {
            APPROVAL_REMINDER_TIMER if self.remind_at.is_some_and(|at| now >= at) => {
                Ok(Deadline::Reminded(vec![Command::FollowUpApproval {
                    approval_id: self.id.clone(),
                    follow_up: FollowUp::Reminder {
                        expires_at: self.expires_at,
                    },
                }]))
            }
            APPROVAL_EXPIRY_TIMER if now >= self.expires_at => Ok(Deadline::Expired(vec![
                Command::CancelTimer {
                    name: APPROVAL_REMINDER_TIMER.into(),
                },
                Command::CloseApproval {
                    approval_id: self.id.clone(),
                    outcome: ApprovalOutcome::Expired { at: now },
                },
                Command::FollowUpApproval {
                    approval_id: self.id.clone(),
                    follow_up: FollowUp::Escalation { expired_at: now },
                },
                crate::command::audit(
                    agent,
                    AuditKind::ApprovalExpired,
                    Actor::Schedule(APPROVAL_EXPIRY_TIMER.into()),
                    Some(&self.id),
                    self.sensitive_scopes.clone(),
                    format!(
                        "approval {} expired unanswered; {consequence}; escalated to the security channel",
                        self.id
                    ),
                ),
            ])),
            APPROVAL_EXPIRY_TIMER => Err(Rejected::new(
                "timer",
                format!(
                    "approval {} does not expire until {}",
                    self.id,
                    self.expires_at.to_rfc3339()
                ),
            )),
            APPROVAL_REMINDER_TIMER => Err(Rejected::new(
                "timer",
                format!(
                    "approval {} has no reminder due now (reminder at {})",
                    self.id,
                    self.remind_at
                        .map(|at| at.to_rfc3339())
                        .unwrap_or_else(|| "none".into())
                ),
            )),
            other => Err(Rejected::new(
                "timer",
                format!("timer {other} does not apply to approval {}", self.id),
            )),
        }
    }

    /// The commands that withdraw it: disarm its timers and record it as cancelled.
    pub fn cancelled_commands(&self, now: DateTime<Utc>) -> Vec<Command> {
        self.closing_commands(ApprovalOutcome::Cancelled { at: now })
    }

    /// Disarm both timers and record the outcome (which also updates what was asked).
    fn closing_commands(&self, outcome: ApprovalOutcome) -> Vec<Command> {
        vec![
            Command::CancelTimer {
                name: APPROVAL_EXPIRY_TIMER.into(),
            },
            Command::CancelTimer {
                name: APPROVAL_REMINDER_TIMER.into(),
            },
            Command::CloseApproval {
                approval_id: self.id.clone(),
                outcome,
            },
        ]
    }

    /// Who may withdraw the request while it waits: the requester or one of its approvers.
    /// A person never stands for Steward: a name Steward acts under (a detection freeze's
    /// requester) withdraws nothing when a person uses it.
    pub fn check_canceller(&self, by: &crate::command::Actor) -> Result<(), Rejected> {
        match by {
            // Steward itself withdraws a question the agent's fate has overtaken (frozen or
            // decommissioned meanwhile); no caller can act as it.
            crate::command::Actor::System => Ok(()),
            crate::command::Actor::Person(p)
                if !is_reserved_name(p)
                    && (p.trim().eq_ignore_ascii_case(self.requester.trim())
                        || self
                            .approvers
                            .iter()
                            .any(|a| a.trim().eq_ignore_ascii_case(p.trim()))) =>
            {
                Ok(())
            }
            other => Err(Rejected::new(
                "by",
                if is_reserved_name(&self.requester) {
                    format!(
                        "{} may not cancel approval {}: Steward asked it, so only Steward or an approver may",
                        other.describe(),
                        self.id
                    )
                } else {
                    format!(
                        "{} may not cancel approval {}: only the requester ({}) or an approver may",
                        other.describe(),
                        self.id,
                        self.requester
                    )
                },
            )),
        }
    }
}

/// The requester Steward's anomaly detection asks under (a MEDIUM or LOW finding's "freeze?"
/// question, the decision after a containment). It is Steward, not a person.
pub const DETECTION_REQUESTER: &str = "steward-detection";

/// Whether `name` is one Steward acts under itself ([`DETECTION_REQUESTER`], `steward`, a
/// schedule's or an IdP event's name as the audit shows them): a person (a Slack clicker, an
/// API caller's `approver` or `by`) using it is never taken for Steward.
pub fn is_reserved_name(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    name == DETECTION_REQUESTER
        || name == Actor::System.describe()
        || name.starts_with("schedule:")
        || name.starts_with("idp-event:")
}

/// A decision that allowed a sensitive step, kept in the state that acts on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedApproval {
    pub approval_id: String,
    /// Who decided (the last approver needed).
    pub approver: String,
    /// Everyone who approved, in order (two under a two-person rule).
    #[serde(default)]
    pub approvers: Vec<String>,
    pub at: DateTime<Utc>,
    /// The sensitive scopes this approval covered.
    pub scopes: Vec<String>,
}
