//! Commands: side effects a machine asks for, as data. The engine performs them; results come
//! back as events.

use crate::agent::Agent;
use crate::approval::{ApprovalOutcome, ApprovalRequest, FollowUp};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who caused something: every audit record names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "id")]
pub enum Actor {
    /// A person, by directory email.
    Person(String),
    /// A schedule or timer, by name.
    Schedule(String),
    /// An identity-provider event, by its event id.
    IdpEvent(String),
    /// Steward itself (an executor reporting a result).
    System,
}

impl Actor {
    pub fn describe(&self) -> String {
        match self {
            Actor::Person(p) => p.clone(),
            Actor::Schedule(s) => format!("schedule:{s}"),
            Actor::IdpEvent(e) => format!("idp-event:{e}"),
            Actor::System => "steward".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum IdpCommand {
    /// Create a service client with these scopes and token lifetime. The executor stores the
    /// issued secret straight into the vault: a secret never travels through events or state.
    CreateClient {
        agent_id: String,
        name: String,
        scopes: Vec<String>,
        token_lifetime_secs: u32,
    },
    /// Set the client's granted scopes and token lifetime to exactly these (idempotent).
    SetGrants {
        client_id: String,
        scopes: Vec<String>,
        token_lifetime_secs: u32,
    },
}

impl IdpCommand {
    pub fn name(&self) -> &'static str {
        match self {
            IdpCommand::CreateClient { .. } => "idp.create_client",
            IdpCommand::SetGrants { .. } => "idp.set_grants",
        }
    }
    /// Scopes this command would grant.
    pub fn granted_scopes(&self) -> &[String] {
        match self {
            IdpCommand::CreateClient { scopes, .. } | IdpCommand::SetGrants { scopes, .. } => {
                scopes
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    AgentRequested,
    AgentRegistered,
    ApprovalRequested,
    ApprovalDecided,
    ApprovalVoted,
    ApprovalExpired,
    ScopeChangeRequested,
    ScopesGranted,
    ScopesRevoked,
    RequestCancelled,
    ProvisioningFailed,
    OwnerLost,
    OwnerReassigned,
    FreezeRequested,
}

/// An audit record as the machine knows it; the engine adds time, workflow and ids, and the
/// audit sink shapes it after OCSF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub kind: AuditKind,
    pub actor: Actor,
    pub agent_id: String,
    pub agent_name: String,
    pub approval_id: Option<String>,
    pub scopes: Vec<String>,
    pub success: bool,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
#[allow(clippy::large_enum_variant)] // commands are short-lived data, stored as JSON
pub enum Command {
    /// Call the identity provider (external, retried, idempotent by key).
    Idp(IdpCommand),
    /// Record an approval request and ask its approvers (record: local; asking: external).
    RequestApproval(ApprovalRequest),
    /// Record the outcome of an approval (local) and tell the requester (external).
    CloseApproval {
        approval_id: String,
        outcome: ApprovalOutcome,
    },
    /// Show what happened to an open approval (a vote, a reminder, the escalation) where it was
    /// asked (external).
    FollowUpApproval {
        approval_id: String,
        follow_up: FollowUp,
    },
    /// Arm a named timer; `TimerFired { name }` arrives at or after `at`. Re-arming replaces it.
    SetTimer {
        name: String,
        at: DateTime<Utc>,
    },
    CancelTimer {
        name: String,
    },
    /// Write the agent's registry record (local, in the same commit as the state).
    SaveAgent(Box<Agent>),
    /// Tell a person something (external, best effort with retries).
    Notify {
        to: String,
        subject: String,
        body: String,
    },
    /// Append to the audit trail (local, in the same commit as the state).
    Audit(AuditEvent),
}

impl Command {
    /// Local commands are applied by the store in the same atomic write as the new state;
    /// external ones become pending commands run by an executor.
    pub fn is_external(&self) -> bool {
        matches!(
            self,
            Command::Idp(_)
                | Command::RequestApproval(_)
                | Command::CloseApproval { .. }
                | Command::FollowUpApproval { .. }
                | Command::Notify { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Idp(c) => c.name(),
            Command::RequestApproval(_) => "approval.request",
            Command::CloseApproval { .. } => "approval.close",
            Command::FollowUpApproval { .. } => "approval.follow_up",
            Command::SetTimer { .. } => "timer.set",
            Command::CancelTimer { .. } => "timer.cancel",
            Command::SaveAgent(_) => "agent.save",
            Command::Notify { .. } => "notify",
            Command::Audit(_) => "audit",
        }
    }
}
