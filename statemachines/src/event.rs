//! Events: what happens to a workflow. Results of commands come back as events too.

use crate::approval::Decision;
use crate::command::Actor;
use chrono::{DateTime, NaiveDate, Utc};
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
    TimerFired {
        name: String,
    },
    /// The identity provider created the client; its secret is in the vault at `secret_version`.
    ClientCreated {
        client_id: String,
        secret_version: String,
    },
    /// The identity provider created a `private_key_jwt` client holding the agent's key `kid`;
    /// nothing is in the vault.
    KeyClientCreated {
        client_id: String,
        kid: String,
    },
    /// The internal CA certified a `tls_client_auth` agent's key and the identity provider
    /// created a client that authenticates with that certificate; nothing is in the vault.
    CertificateClientCreated {
        client_id: String,
        certificate: crate::credential::CertificateRecord,
    },
    /// The identity provider holds key `kid` for the client, active.
    KeyAdded {
        kid: String,
    },
    /// A token grant was signed with key `kid` (the agent switched to it), as the IdP reported
    /// it, or as the owner or a security approver (`confirmed_by`) confirmed it where the IdP
    /// does not report which key signed a grant.
    KeyUsed {
        kid: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirmed_by: Option<String>,
    },
    /// Key `kid` is gone from the client.
    KeyRemoved {
        kid: String,
    },
    /// The internal CA issued a further certificate for a `tls_client_auth` agent (a
    /// certificate rotation) and the identity provider accepts it beside the current one.
    CertificateAdded {
        certificate: crate::credential::CertificateRecord,
    },
    /// A token was granted over mutual TLS with the certificate `x5t#S256` (the agent switched
    /// to it), as the mTLS token endpoint reported it, or as the owner or a security approver
    /// (`confirmed_by`) confirmed it where the IdP does not report which certificate was used.
    CertificateUsed {
        #[serde(rename = "x5t#S256")]
        x5t_s256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirmed_by: Option<String>,
    },
    /// The certificate `x5t#S256` is no longer accepted for the client.
    CertificateRemoved {
        #[serde(rename = "x5t#S256")]
        x5t_s256: String,
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
    Cancel {
        by: Actor,
        reason: String,
    },
    /// A person (`by`) made `owner` the agent's owner; the engine checked `owner` is active.
    OwnerAssigned {
        owner: String,
        by: String,
    },
    /// Rotation: the IdP issued secret `secret_id`, stored as AWSPENDING `version`; the secret
    /// that was current then is `previous` (vault version and IdP secret id).
    SecretIssued {
        version: String,
        secret_id: String,
        previous_version: Option<String>,
        previous_secret_id: Option<String>,
    },
    /// Rotation: a client_credentials token was obtained with AWSPENDING `version`.
    SecretVerified {
        version: String,
    },
    /// Rotation: `version` is AWSCURRENT now.
    SecretPromoted {
        version: String,
    },
    /// The IdP no longer holds secret `secret_id`.
    SecretRemoved {
        secret_id: String,
    },
    /// The IdP revoked what it could of the client's tokens.
    TokensRevoked {
        revoked: String,
        outstanding: Option<String>,
    },
    ClientDeactivated {
        client_id: String,
    },
    ClientDeleted {
        client_id: String,
    },
    ClientActivated {
        client_id: String,
    },
    /// A person claimed a shadow agent: its onboarding (`workflow_id`) started with `owner`.
    ShadowClaimed {
        by: String,
        owner: String,
        workflow_id: String,
    },
    /// How the claim of a shadow agent ended: its onboarding `onboarding` took over the client
    /// (`adopted`), or ended without (denied, expired, withdrawn, failed: `reason`).
    ShadowClaimSettled {
        onboarding: String,
        adopted: bool,
        reason: String,
    },
    /// A person let a shadow agent go: it is frozen and decommissioned now.
    ShadowReleased {
        by: String,
        reason: String,
    },
    /// The agent's secret is scheduled for deletion on `delete_after` (recoverable until then).
    SecretDeletionScheduled {
        delete_after: DateTime<Utc>,
    },
    /// A campaign's launch round `round` created and queued `launched` review items; `more`
    /// when agents in scope are left for another round.
    ReviewsLaunched {
        round: u32,
        launched: u64,
        more: bool,
    },
    /// A reviewer answered a review item.
    ReviewDecided {
        decision: crate::review::ReviewDecision,
        by: String,
        reason: Option<String>,
    },
    /// A review decision's action: the workflow it started, or why none was.
    ReviewActionTaken {
        workflow_id: Option<String>,
        ok: bool,
        detail: String,
    },
    /// A person asked to keep a time-bound agent until `until` (renewal needs an approval).
    RenewalRequested {
        until: NaiveDate,
        by: String,
        reason: String,
    },
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
            Event::KeyClientCreated { .. } => "KeyClientCreated",
            Event::CertificateClientCreated { .. } => "CertificateClientCreated",
            Event::KeyAdded { .. } => "KeyAdded",
            Event::KeyUsed { .. } => "KeyUsed",
            Event::KeyRemoved { .. } => "KeyRemoved",
            Event::CertificateAdded { .. } => "CertificateAdded",
            Event::CertificateUsed { .. } => "CertificateUsed",
            Event::CertificateRemoved { .. } => "CertificateRemoved",
            Event::GrantsSet { .. } => "GrantsSet",
            Event::CommandFailed { .. } => "CommandFailed",
            Event::Cancel { .. } => "Cancel",
            Event::OwnerAssigned { .. } => "OwnerAssigned",
            Event::SecretIssued { .. } => "SecretIssued",
            Event::SecretVerified { .. } => "SecretVerified",
            Event::SecretPromoted { .. } => "SecretPromoted",
            Event::SecretRemoved { .. } => "SecretRemoved",
            Event::TokensRevoked { .. } => "TokensRevoked",
            Event::ClientDeactivated { .. } => "ClientDeactivated",
            Event::ClientDeleted { .. } => "ClientDeleted",
            Event::ClientActivated { .. } => "ClientActivated",
            Event::ShadowClaimed { .. } => "ShadowClaimed",
            Event::ShadowReleased { .. } => "ShadowReleased",
            Event::ShadowClaimSettled { .. } => "ShadowClaimSettled",
            Event::SecretDeletionScheduled { .. } => "SecretDeletionScheduled",
            Event::RenewalRequested { .. } => "RenewalRequested",
            Event::ReviewsLaunched { .. } => "ReviewsLaunched",
            Event::ReviewDecided { .. } => "ReviewDecided",
            Event::ReviewActionTaken { .. } => "ReviewActionTaken",
        }
    }

    /// Who caused this event.
    pub fn actor(&self) -> Actor {
        match self {
            Event::ApprovalDecided { approver, .. } => Actor::Person(approver.clone()),
            Event::TimerFired { name } => Actor::Schedule(name.clone()),
            Event::Cancel { by, .. } => by.clone(),
            Event::OwnerAssigned { by, .. }
            | Event::RenewalRequested { by, .. }
            | Event::ReviewDecided { by, .. }
            | Event::ShadowClaimed { by, .. }
            | Event::ShadowReleased { by, .. } => Actor::Person(by.clone()),
            _ => Actor::System,
        }
    }
}
