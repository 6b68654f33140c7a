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
        /// Take over this existing client instead (a claimed shadow agent): set its grants,
        /// issue a new secret into the vault and remove the secrets Steward never held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adopt: Option<String>,
        /// A `private_key_jwt` agent's public key: the client authenticates with it alone and
        /// has no secret (nothing goes to the vault).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<crate::credential::AgentKey>,
        /// What the client's tokens must be bound to.
        #[serde(default)]
        binding: crate::credential::TokenBinding,
        /// A `tls_client_auth` agent's certificate to issue from its CSR: the client
        /// authenticates with that certificate alone (nothing goes to the vault but the
        /// certificate, which is public).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate: Option<crate::credential::CertificateOrder>,
        /// A `private_key_jwt` agent whose key Steward holds: the executor generates the key
        /// pair, registers the public key and keeps the private key in the vault as the
        /// agent's credential.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        generate_key: bool,
    },
    /// Add a public key to a key-bound client, active beside its others (a key rotation).
    AddKey {
        client_id: String,
        key: crate::credential::AgentKey,
    },
    /// Remove one key from a key-bound client (deactivated first where the IdP needs it).
    RemoveKey { client_id: String, kid: String },
    /// A certificate rotation: the internal CA issues a further certificate for the agent from
    /// its CSR (once per command key, as at onboarding) and the IdP accepts it for the client
    /// beside the current one.
    AddCertificate {
        agent_id: String,
        /// The agent's name: the certificate's SPIFFE id names it.
        name: String,
        client_id: String,
        order: crate::credential::CertificateOrder,
    },
    /// The IdP no longer accepts the certificate `x5t_s256` for the client.
    RemoveCertificate { client_id: String, x5t_s256: String },
    /// Set the client's granted scopes and token lifetime to exactly these (idempotent).
    SetGrants {
        client_id: String,
        scopes: Vec<String>,
        token_lifetime_secs: u32,
    },
    /// Rotation, Secrets Manager's `createSecret` (+ `setSecret`): make room at the IdP, add a
    /// new client secret and store it in the vault as AWSPENDING under `version` (the
    /// ClientRequestToken). The current secret keeps working.
    IssueSecret {
        agent_id: String,
        client_id: String,
        version: String,
    },
    /// Rotation, `testSecret`: obtain a real client_credentials token with the AWSPENDING
    /// version `version`.
    TestSecret { agent_id: String, version: String },
    /// Remove one client secret at the IdP (the rotation's outgoing secret after the grace).
    RemoveSecret {
        client_id: String,
        secret_id: String,
        /// The credential is a Steward-held key and `secret_id` its `kid`: the key is removed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        key: bool,
    },
    /// Revoke what the IdP lets us revoke of the client's issued tokens.
    RevokeTokens { client_id: String },
    /// Deactivate the client: no new tokens.
    DeactivateClient { client_id: String },
    /// Activate a deactivated client again (an unfreeze).
    ActivateClient { client_id: String },
    /// Delete the client at the IdP.
    DeleteClient { client_id: String },
}

impl IdpCommand {
    pub fn name(&self) -> &'static str {
        match self {
            IdpCommand::CreateClient { .. } => "idp.create_client",
            IdpCommand::SetGrants { .. } => "idp.set_grants",
            IdpCommand::AddKey { .. } => "idp.add_key",
            IdpCommand::RemoveKey { .. } => "idp.remove_key",
            IdpCommand::AddCertificate { .. } => "idp.add_certificate",
            IdpCommand::RemoveCertificate { .. } => "idp.remove_certificate",
            IdpCommand::IssueSecret { .. } => "idp.issue_secret",
            IdpCommand::TestSecret { .. } => "idp.test_secret",
            IdpCommand::RemoveSecret { .. } => "idp.remove_secret",
            IdpCommand::RevokeTokens { .. } => "idp.revoke_tokens",
            IdpCommand::DeactivateClient { .. } => "idp.deactivate_client",
            IdpCommand::ActivateClient { .. } => "idp.activate_client",
            IdpCommand::DeleteClient { .. } => "idp.delete_client",
        }
    }
    /// Scopes this command would grant (none for commands that grant nothing).
    pub fn granted_scopes(&self) -> &[String] {
        match self {
            IdpCommand::CreateClient { scopes, .. } | IdpCommand::SetGrants { scopes, .. } => {
                scopes
            }
            _ => &[],
        }
    }
}

/// Vault operations a machine asks for (the value never passes through the machine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum VaultCommand {
    /// Rotation, Secrets Manager's `finishSecret`: move AWSCURRENT to `version` (the old current
    /// becomes AWSPREVIOUS).
    Promote { agent_id: String, version: String },
    /// Schedule the agent's secret for deletion after a recovery window (decommission).
    ScheduleDeletion {
        agent_id: String,
        recovery_days: u32,
    },
}

impl VaultCommand {
    pub fn name(&self) -> &'static str {
        match self {
            VaultCommand::Promote { .. } => "vault.promote",
            VaultCommand::ScheduleDeletion { .. } => "vault.schedule_deletion",
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
    RotationRequested,
    SecretIssued,
    SecretRotated,
    SecretRevoked,
    RotationFailed,
    RotationCancelled,
    DecommissionRequested,
    ClientDisabled,
    Decommissioned,
    DecommissionKept,
    ExpiryReminded,
    RenewalRequested,
    Renewed,
    CampaignLaunched,
    CampaignClosed,
    ReviewRequested,
    ReviewReminded,
    ReviewEscalated,
    ReviewDecided,
    ReviewDefaulted,
    AgentFrozen,
    AnomalyDetected,
    FreezeDismissed,
    AgentUnfrozen,
    FreezeKept,
    ShadowAgentFound,
    ShadowAgentClaimed,
    ShadowAgentReleased,
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
    /// Operate on the agent's secret in the vault (external, retried, idempotent).
    Vault(VaultCommand),
    /// Change fields of the agent's registry record (local: the engine applies the change to
    /// the record as stored when it commits, so concurrent workflows do not overwrite each
    /// other's fields the way a whole-record `SaveAgent` from an old snapshot would).
    UpdateAgent {
        agent_id: String,
        change: crate::agent::AgentChange,
    },
    /// Start the decommission workflow of an agent (external: the engine starts it, once).
    StartDecommission {
        agent_id: String,
        reason: crate::lifecycle::DecommissionReason,
    },
    /// Cancel the agent's running rotations and its scope changes waiting for approval
    /// (external: the engine sends each a `Cancel`). A decommission or a freeze wins over them.
    #[serde(alias = "cancel_rotations")]
    Supersede {
        agent_id: String,
        reason: String,
        /// The agent is ending (a decommission): its key and certificate expiry watches are
        /// cancelled too. A freeze keeps them: a frozen agent's credentials still expire.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ending: bool,
    },
    /// Tell the shadow workflow of `client_id` how the claim `onboarding` ended (external: the
    /// engine sends it `ShadowClaimSettled`): adopted, or not (denied, expired, withdrawn,
    /// failed), when the client is a shadow agent again instead of nobody's.
    SettleShadowClaim {
        client_id: String,
        onboarding: String,
        adopted: bool,
        reason: String,
    },
    /// Create and send the next round of a campaign's review items (external: the engine
    /// starts the item workflows, a bounded number per round; `ReviewsLaunched` comes back).
    LaunchReviews {
        campaign_id: String,
        round: u32,
    },
    /// Show a review item to people: ask, remind, escalate, show the outcome (external).
    Review(crate::review::ReviewNotice),
    /// Carry out a review decision: a scope change or a decommission (external: the engine
    /// starts the workflow; `ReviewActionTaken` comes back).
    ApplyReview {
        agent_id: String,
        campaign_id: String,
        action: crate::review::ReviewAction,
        decided_by: String,
    },
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
                | Command::Vault(_)
                | Command::StartDecommission { .. }
                | Command::Supersede { .. }
                | Command::SettleShadowClaim { .. }
                | Command::LaunchReviews { .. }
                | Command::Review(_)
                | Command::ApplyReview { .. }
                | Command::RequestApproval(_)
                | Command::CloseApproval { .. }
                | Command::FollowUpApproval { .. }
                | Command::Notify { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Idp(c) => c.name(),
            Command::Vault(c) => c.name(),
            Command::UpdateAgent { .. } => "agent.update",
            Command::StartDecommission { .. } => "workflow.start_decommission",
            Command::Supersede { .. } => "workflow.supersede",
            Command::SettleShadowClaim { .. } => "workflow.settle_shadow_claim",
            Command::LaunchReviews { .. } => "workflow.launch_reviews",
            Command::Review(n) => n.name(),
            Command::ApplyReview { .. } => "workflow.apply_review",
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

/// Where notices for the security team go (the Slack security channel, or the console).
pub const SECURITY_CHANNEL: &str = "security-channel";

pub(crate) fn audit(
    agent: &Agent,
    kind: AuditKind,
    actor: Actor,
    approval_id: Option<&str>,
    scopes: Vec<String>,
    message: String,
) -> Command {
    Command::Audit(AuditEvent {
        kind,
        actor,
        agent_id: agent.id.clone(),
        agent_name: agent.name.clone(),
        approval_id: approval_id.map(str::to_string),
        scopes,
        success: true,
        message,
    })
}

pub(crate) fn audit_failure(agent: &Agent, kind: AuditKind, message: &str) -> Command {
    Command::Audit(AuditEvent {
        kind,
        actor: Actor::System,
        agent_id: agent.id.clone(),
        agent_name: agent.name.clone(),
        approval_id: None,
        scopes: vec![],
        success: false,
        message: message.to_string(),
    })
}
