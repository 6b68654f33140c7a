//! Signals: what identity providers and Shared Signals transmitters tell Steward, in Steward's
//! terms. Every intake path (Okta event hooks, the System Log, EventBridge, SSF push) maps its
//! events to these, and one place routes them to workflows.

use serde::{Deserialize, Serialize};

/// What a service app change was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppChange {
    Created,
    Updated,
    Deactivated,
    Deleted,
}

/// What happened to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonChange {
    Deactivated,
    Suspended,
}

/// Which risk signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskKind {
    /// ThreatInsight flagged a request IP (`security.threat.detected`).
    ThreatDetected,
    /// A user's risk level changed (`user.risk.change`, `user.risk.detect`).
    UserRisk,
    /// An entity-risk policy acted (`policy.entity_risk.action`).
    EntityRiskAction,
    /// An admin cleared a user's sessions (`user.session.clear`).
    SessionsCleared,
    /// Universal Logout fired against app instances.
    UniversalLogout,
    /// Shared Signals (CAEP): a session was revoked by the transmitter.
    SessionRevoked,
    /// Shared Signals (CAEP): a credential was created, changed, revoked or deleted.
    CredentialChange,
    /// Shared Signals (RISC): a credential was compromised.
    CredentialCompromise,
    /// Shared Signals (RISC): an account was disabled.
    AccountDisabled,
}

/// What Steward takes from one event of an identity provider or a Shared Signals transmitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "signal")]
pub enum Signal {
    /// A service app (its id is the OAuth client_id) changed, maybe outside Steward.
    ServiceApp {
        app_id: String,
        label: String,
        change: AppChange,
        /// Who did it (the actor's login), when a person did.
        by: Option<String>,
    },
    /// A person left or was suspended: agents they own need a new owner.
    PersonLost {
        user_id: String,
        login: String,
        change: PersonChange,
    },
    /// A risk signal about an IP, a person or apps.
    Risk {
        kind: RiskKind,
        /// The IP (threats), the user login (user risk) or the app ids (logouts).
        subjects: Vec<String>,
        /// The level Okta gave, when it gave one (`HIGH`, `MEDIUM`, …).
        level: Option<String>,
        detail: String,
        ip: Option<String>,
    },
    /// A client asked for a token: granted (`success`) or refused (`reason`).
    TokenGrant {
        client_id: String,
        ip: Option<String>,
        grant_type: Option<String>,
        requested: Vec<String>,
        granted: Vec<String>,
        success: bool,
        reason: Option<String>,
    },
}
