//! Approvals: a person's decision on a sensitive step, and the rules a decision must satisfy.
//! The rules live here, in pure code, so the engine enforces them whatever the UI (console, Slack).

use crate::workflow::Rejected;
use chrono::{DateTime, Utc};
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

impl ApprovalRequest {
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
