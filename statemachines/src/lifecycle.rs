//! Why an agent's life ends, and when a time-bound agent is due: the decommission machine acts
//! on these, and expiry, freeze, discovery and reviews start decommissions with them.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum DecommissionReason {
    /// The owner (or a security approver) asked.
    Requested { why: String },
    /// The owner left and nobody took the agent over.
    OwnerLost { why: String },
    /// An access review decided Revoke (the reviewer's decision is the approval).
    Review {
        campaign: String,
        decided_by: String,
    },
    /// A freeze ended in Decommission (security's decision is the approval).
    Freeze { decided_by: String },
    /// The agent's own expiry date passed without a renewal.
    Expired { expires_on: NaiveDate },
    /// A shadow agent nobody claimed: let go by a person, or its grace period ended.
    Unclaimed { why: String },
}

impl DecommissionReason {
    pub fn describe(&self) -> String {
        match self {
            Self::Requested { why } => format!("requested: {why}"),
            Self::OwnerLost { why } => format!("owner lost: {why}"),
            Self::Review {
                campaign,
                decided_by,
            } => format!("access review {campaign}: revoked by {decided_by}"),
            Self::Freeze { decided_by } => {
                format!("frozen agent: decommission decided by {decided_by}")
            }
            Self::Unclaimed { why } => format!("unclaimed shadow agent: {why}"),
            Self::Expired { expires_on } => {
                format!("the agent's expiry date {expires_on} passed without a renewal")
            }
        }
    }

    /// Who already decided, when the reason carries a person's decision.
    pub(crate) fn decided_by(&self) -> Option<&str> {
        match self {
            Self::Review { decided_by, .. } | Self::Freeze { decided_by } => Some(decided_by),
            _ => None,
        }
    }

    /// Whether a security approver must decide first (no person's decision came with it).
    pub(crate) fn needs_approval(&self) -> bool {
        matches!(self, Self::Requested { .. } | Self::OwnerLost { .. })
    }
}

/// When a time-bound agent's decommission is due: the day after its expiry date, 00:00 UTC.
pub fn expiry_deadline(expires_on: NaiveDate) -> DateTime<Utc> {
    (expires_on + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
