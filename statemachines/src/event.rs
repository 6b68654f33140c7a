//! Events: what happens to a workflow. Results of commands come back as events too.

use crate::approval::Decision;
use crate::command::Actor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Event {
    /// A person decided an approval.
    ApprovalDecided {
        approval_id: String,
        decision: Decision,
        approver: String,
        reason: Option<String>,
    },
    /// A named timer came due (may be stale: machines ignore timers they no longer wait for).
    TimerFired { name: String },
    /// The identity provider created the client; its secret is in the vault at `secret_version`.
    ClientCreated {
        client_id: String,
        secret_version: String,
    },
    /// The identity provider now grants exactly these scopes.
    GrantsSet {
        client_id: String,
        scopes: Vec<String>,
        token_lifetime_secs: u32,
    },
    /// A command failed for good (retries exhausted, or not retryable).
    CommandFailed {
        command: String,
        retryable: bool,
        reason: String,
    },
    /// Someone withdrew the request.
    Cancel { by: Actor, reason: String },
    /// A person (`by`) made `owner` the agent's owner; the engine checked `owner` is active.
    OwnerAssigned { owner: String, by: String },
}

impl Event {
    /// Label used in transition tables.
    pub fn label(&self) -> &'static str {
        match self {
            Event::ApprovalDecided {
                decision: Decision::Approve,
                ..
            } => "ApprovalDecided(approve)",
            Event::ApprovalDecided {
                decision: Decision::Deny,
                ..
            } => "ApprovalDecided(deny)",
            Event::TimerFired { .. } => "TimerFired",
            Event::ClientCreated { .. } => "ClientCreated",
            Event::GrantsSet { .. } => "GrantsSet",
            Event::CommandFailed { .. } => "CommandFailed",
            Event::Cancel { .. } => "Cancel",
            Event::OwnerAssigned { .. } => "OwnerAssigned",
        }
    }

    /// Who caused this event.
    pub fn actor(&self) -> Actor {
        match self {
            Event::ApprovalDecided { approver, .. } => Actor::Person(approver.clone()),
            Event::TimerFired { name } => Actor::Schedule(name.clone()),
            Event::Cancel { by, .. } => by.clone(),
            Event::OwnerAssigned { by, .. } => Actor::Person(by.clone()),
            _ => Actor::System,
        }
    }
}
