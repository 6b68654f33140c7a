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

impl ApprovalRequest {
    /// The workflow's approval: asked of the policy's approvers except the requester, expiring
    /// after the policy's approval expiry. Its id derives from the workflow id (replay-stable).
    pub fn open(ctx: &Ctx, agent: &Agent, requester: &str, ask: Ask) -> Self {
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
                .filter(|a| !a.eq_ignore_ascii_case(requester))
                .cloned()
                .collect(),
            requested_at: ctx.now,
            expires_at: ctx.now + Duration::seconds(ctx.policy.approval_expiry_secs as i64),
        }
    }

    /// The commands that open it: arm the expiry timer, record and ask it, audit the ask.
    pub fn opening_commands(&self, agent: &Agent) -> Vec<Command> {
        vec![
            Command::SetTimer {
                name: APPROVAL_EXPIRY_TIMER.into(),
                at: self.expires_at,
            },
            Command::RequestApproval(self.clone()),
            crate::onboarding::audit(
                agent,
                AuditKind::ApprovalRequested,
                Actor::Person(self.requester.clone()),
                Some(&self.id),
                self.sensitive_scopes.clone(),
                format!(
                    "approval {} requested for sensitive scopes {}",
                    self.id,
                    self.sensitive_scopes.join(", ")
                ),
            ),
        ]
    }

    /// The rules every decision must satisfy (besides "not decided yet", which the owning
    /// workflow's state enforces): the approver is allowed, is not the requester, and the request
    /// has not expired. Returns the approver as the approval lists them (canonical spelling).
    pub fn check_decision(&self, approver: &str, now: DateTime<Utc>) -> Result<String, Rejected> {
        let approver = approver.trim();
        if approver.eq_ignore_ascii_case(&self.requester) {
            return Err(Rejected::new(
                "approver",
                format!(
                    "{approver} requested this change and cannot approve it: another approver must decide"
                ),
            ));
        }
        let Some(canonical) = self
            .approvers
            .iter()
            .find(|a| a.eq_ignore_ascii_case(approver))
        else {
            return Err(Rejected::new(
                "approver",
                format!(
                    "{approver} is not an allowed approver for approval {} (allowed: {})",
                    self.id,
                    self.approvers.join(", ")
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
        vec![
            Command::CancelTimer {
                name: APPROVAL_EXPIRY_TIMER.into(),
            },
            Command::CloseApproval {
                approval_id: self.id.clone(),
                outcome,
            },
            crate::onboarding::audit(
                agent,
                AuditKind::ApprovalDecided,
                Actor::Person(approver.to_string()),
                Some(&self.id),
                self.sensitive_scopes.clone(),
                message,
            ),
        ]
    }

    /// Who may withdraw the request while it waits: the requester or one of its approvers.
    pub fn check_canceller(&self, by: &crate::command::Actor) -> Result<(), Rejected> {
        match by {
            crate::command::Actor::Person(p)
                if p.trim().eq_ignore_ascii_case(&self.requester)
                    || self
                        .approvers
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(p.trim())) =>
            {
                Ok(())
            }
            other => Err(Rejected::new(
                "by",
                format!(
                    "{} may not cancel approval {}: only the requester ({}) or an approver may",
                    other.describe(),
                    self.id,
                    self.requester
                ),
            )),
        }
    }
}
