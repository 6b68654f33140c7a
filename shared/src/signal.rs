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
        /// What the granted token is bound to, when the source says: `none` for a bearer
        /// token, `dpop` for a DPoP-bound one (RFC 9449). `None` when the source does not
        /// report it (Okta's System Log), and in signals kept before it was recorded.
        #[serde(default)]
        binding: Option<statemachines::credential::TokenBinding>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use statemachines::credential::TokenBinding;

    #[test]
    fn a_grant_kept_without_its_binding_reads_as_unknown() {
        let old = r#"{"signal":"token_grant","client_id":"c1","ip":null,"grant_type":"client_credentials","requested":["a"],"granted":["a"],"success":true,"reason":null}"#;
        let Signal::TokenGrant { binding, .. } = serde_json::from_str(old).unwrap() else {
            panic!("a token grant")
        };
        assert_eq!(binding, None);
        let bound = Signal::TokenGrant {
            client_id: "c1".into(),
            ip: None,
            grant_type: None,
            requested: vec![],
            granted: vec![],
            success: true,
            reason: None,
            binding: Some(TokenBinding::Dpop),
        };
        let text = serde_json::to_string(&bound).unwrap();
        assert!(text.contains(r#""binding":"dpop""#), "{text}");
        assert_eq!(serde_json::from_str::<Signal>(&text).unwrap(), bound);
    }
}
