//! Receipts: what a rotation or a decommission did, kept on the agent's registry record (ids and
//! times, never secret values) so `steward agents show` can answer "which secret was valid when"
//! and "what was revoked" long after the workflow ended.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How many rotation receipts an agent record keeps (the audit trail keeps all of them).
pub const CREDENTIAL_HISTORY: usize = 20;

/// One secret as the receipt knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// The vault version id (Secrets Manager VersionId).
    pub version: Option<String>,
    /// The identity provider's id of the secret.
    pub secret_id: Option<String>,
}

/// One completed rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialReceipt {
    /// The rotation workflow.
    pub rotation: String,
    /// Why it ran: `scheduled (age 91 days)`, `on demand by …`, `detection rule …`.
    pub reason: String,
    pub old: SecretRef,
    /// When the old secret became current, if known.
    pub old_valid_from: Option<DateTime<Utc>>,
    /// When the IdP stopped accepting the old secret (None until the grace period ended).
    pub old_valid_until: Option<DateTime<Utc>>,
    /// What happened when the old secret was removed, in words.
    pub old_revocation: Option<String>,
    pub new: SecretRef,
    /// When the new secret became AWSCURRENT.
    pub new_valid_from: DateTime<Utc>,
    /// The verification: a real token obtained with the new secret before promotion.
    pub verified_at: DateTime<Utc>,
    pub verification: String,
}

/// One step of a decommission and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptStep {
    /// `revoke tokens`, `deactivate client`, `delete client`, `schedule secret deletion`.
    pub action: String,
    pub done: bool,
    /// What was done, or why it could not be.
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// What a decommission revoked, what it could not and why, and from when no token issued to the
/// agent can still be valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationReceipt {
    pub workflow: String,
    pub reason: String,
    pub requested_by: String,
    /// Who approved it (empty when the decision came with the request: review, freeze, expiry).
    #[serde(default)]
    pub approved_by: Vec<String>,
    pub client_id: Option<String>,
    pub steps: Vec<ReceiptStep>,
    /// Access tokens issued before the client was disabled may be valid for one more token
    /// lifetime; this is that lifetime.
    pub token_lifetime_secs: u32,
    /// Revocation time + token lifetime: after this no token issued to the agent is valid.
    /// None when the client could not be disabled at all (see `steps`).
    pub no_token_valid_after: Option<DateTime<Utc>>,
    /// The vault secret is deleted for good after this (recoverable until then).
    pub secret_deleted_after: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl RevocationReceipt {
    pub fn step(&mut self, action: &str, done: bool, detail: String, at: DateTime<Utc>) {
        self.steps.push(ReceiptStep {
            action: action.into(),
            done,
            detail,
            at,
        });
    }

    /// The first time the client stopped issuing tokens (deactivated, else deleted).
    pub fn disabled_at(&self) -> Option<DateTime<Utc>> {
        self.steps
            .iter()
            .find(|s| s.done && (s.action == DEACTIVATE || s.action == DELETE))
            .map(|s| s.at)
    }
}

pub const REVOKE: &str = "revoke tokens";
pub const DEACTIVATE: &str = "deactivate client";
pub const DELETE: &str = "delete client";
pub const SCHEDULE_DELETION: &str = "schedule secret deletion";
pub const REVOKE_CERTIFICATE: &str = "revoke certificate";
