//! The admin API's request bodies, shared by the local server (`steward serve`) and the `api`
//! Lambda function, so both accept exactly the same JSON.

use serde::Deserialize;
use statemachines::AgentRequest;
use statemachines::scope_change::ScopeChangeRequest;

/// `POST /agents`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRequestBody {
    #[serde(flatten)]
    pub request: AgentRequest,
    /// Who asks; the owner when absent.
    pub requester: Option<String>,
}

/// `POST /agents/{agent}/scopes`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeChangeBody {
    #[serde(flatten)]
    pub request: ScopeChangeRequest,
    pub requester: String,
}

/// `POST /agents/{agent}/owner`: a new owner for an agent whose owner left.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerBody {
    /// The new owner: an active person in the directory.
    pub owner: String,
    /// Who assigns: the former owner's manager or a security approver.
    pub by: String,
}

/// `POST /workflows/{id}/cancel`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub by: String,
    pub reason: String,
}

/// `POST /approvals/{id}/approve` and `/deny`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub approver: String,
    pub reason: Option<String>,
    /// The `action_hash` of the approval as the approver saw it (from `GET /approvals`): when
    /// given, a decision on a request that changed since is refused.
    #[serde(default)]
    pub action_hash: Option<String>,
}

/// `POST /agents/{agent}/rotate`: rotate the agent's secret now.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Who asks: the owner or a security approver.
    pub by: String,
}

/// `POST /agents/{agent}/decommission`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecommissionBody {
    /// Who asks: the owner, a security approver, or (owner lost) the former owner's manager.
    pub by: String,
    pub reason: String,
}

/// `POST /agents/{agent}/renew`: keep a time-bound agent longer (a security approver decides).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    pub by: String,
    /// The new expiry date, `YYYY-MM-DD`.
    pub until: chrono::NaiveDate,
    pub reason: String,
}

/// `POST /campaigns`: launch an access-review campaign.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    pub by: String,
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scope: statemachines::review_campaign::CampaignScope,
    /// RFC 3339; default: now + the policy's `reviews.answer_within`.
    #[serde(default)]
    pub deadline: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub unanswered: Option<statemachines::review_campaign::Unanswered>,
}

impl CampaignBody {
    pub fn request(&self) -> crate::engine::reviews::CampaignRequest {
        crate::engine::reviews::CampaignRequest {
            id: self.id.clone(),
            name: self.name.clone(),
            scope: self.scope.clone(),
            deadline: self.deadline,
            unanswered: self.unanswered,
        }
    }
}

/// `POST /reviews/{item}/decision`: answer a review item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewAnswerBody {
    /// The reviewer: the owner, the owner's manager after escalation, or a security approver.
    pub by: String,
    /// `keep`, `reduce` or `revoke`.
    pub decision: String,
    /// Scopes to drop (reduce).
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl ReviewAnswerBody {
    /// The decision, or what is wrong with it.
    pub fn decision(&self) -> Result<statemachines::review_item::ReviewDecision, String> {
        use statemachines::review_item::ReviewDecision;
        match self.decision.trim() {
            "keep" => Ok(ReviewDecision::Keep),
            "revoke" => Ok(ReviewDecision::Revoke),
            "reduce" => Ok(ReviewDecision::Reduce {
                drop: self.drop.clone(),
            }),
            other => Err(format!(
                "decision `{other}` is not one of keep, reduce, revoke"
            )),
        }
    }
}

/// `POST /agents/{agent}/freeze`: pull the kill switch now (owner or security approver).
/// `POST /agents/{agent}/unfreeze`: ask security to decide on an agent frozen earlier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    pub by: String,
    pub reason: String,
}

/// `POST /shadow-agents/{client}/claim`: take an unregistered client over with a real owner.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    #[serde(flatten)]
    pub claim: crate::engine::discovery::Claim,
    /// Who claims: an active person in the directory.
    pub by: String,
}

/// `POST /shadow-agents/{client}/release`: let an unregistered client go (frozen, then
/// decommissioned). Its creator or a security approver.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    pub by: String,
    pub reason: String,
}
