//! The admin API's wire vocabulary: request bodies, query strings and replies. The router in
//! [`crate::http`] reads and writes them and the typed client sends and reads the same structs,
//! so the local server, the `api` Lambda function and the CLI agree by construction.
//!
//! No body names who is asking: the caller is the authenticated principal, and a body with an
//! `approver`, `requester` or `by` field is refused as an unknown field.

use serde::{Deserialize, Serialize};
use statemachines::AgentRequest;
use statemachines::scope_change::ScopeChangeRequest;

/// `POST /api/agents`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRequestBody {
    #[serde(flatten)]
    pub request: AgentRequest,
    /// For `credential: private_key_jwt`: the agent's public JWK (EC P-256/P-384, RSA 2048+
    /// or Ed25519; no private members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_jwk: Option<serde_json::Value>,
    /// A JWT signed by that key (header `typ: steward-key-proof+jwt`) with `aud:
    /// steward:key-proof`, `sub`: the agent's name, `nonce`: from `POST /api/key-nonces`,
    /// `iat` and `exp`: the proof that the requester holds the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_proof: Option<String>,
}

/// `POST /api/agents/{agent}/keys`: the agent's next key, with the proof of possession.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    pub public_jwk: serde_json::Value,
    /// As for `AgentRequestBody::key_proof`, naming the agent.
    pub key_proof: String,
}

/// `POST /api/agents/{agent}/certificates`: the agent's next CSR (PEM), made with its new key
/// (its signature is the proof of possession).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateBody {
    pub csr: String,
}

/// `POST /api/key-nonces`: what an agent key's proof of possession signs over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyNonce {
    pub nonce: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// `POST /api/agents/{agent}/scopes`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeChangeBody {
    #[serde(flatten)]
    pub request: ScopeChangeRequest,
}

/// `POST /api/agents/{agent}/owner`: a new owner for an agent whose owner left.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerBody {
    /// The new owner: an active person in the directory.
    pub owner: String,
}

/// `POST /api/workflows/{id}/cancel`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub reason: String,
}

/// `POST /api/approvals/{id}/approve` and `/deny`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub reason: Option<String>,
    /// The `action_hash` of the approval as the approver saw it (from `GET /approvals`): when
    /// given, a decision on a request that changed since is refused.
    #[serde(default)]
    pub action_hash: Option<String>,
}

/// `POST /api/agents/{agent}/rotate`: rotate the agent's secret now.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {}

/// `POST /api/agents/{agent}/decommission`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecommissionBody {
    pub reason: String,
}

/// `POST /api/agents/{agent}/renew`: keep a time-bound agent longer (a security approver decides).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// The new expiry date, `YYYY-MM-DD`.
    pub until: chrono::NaiveDate,
    pub reason: String,
}

/// `POST /api/campaigns`: launch an access-review campaign.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
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

/// `POST /api/reviews/{item}/decision`: answer a review item.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewAnswerBody {
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

/// `POST /api/agents/{agent}/freeze`: pull the kill switch now (owner or security approver).
/// `POST /api/agents/{agent}/unfreeze`: ask security to decide on an agent frozen earlier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    pub reason: String,
}

/// `POST /api/shadow-agents/{client}/claim`: take an unregistered client over with a real owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    #[serde(flatten)]
    pub claim: crate::engine::discovery::Claim,
}

/// `POST /api/shadow-agents/{client}/release`: let an unregistered client go (frozen, then
/// decommissioned). Its creator or a security approver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    pub reason: String,
}

/// `GET /api/approvals?all=true`: every approval, not only the pending ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    #[serde(default)]
    pub all: bool,
}

/// `GET /api/audit?after=&limit=`: audit rows after sequence `after`, at most `limit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    pub after: u64,
    /// Default and maximum: [`AUDIT_PAGE_MAX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `GET /api/agents/{agent}/grants?since=&limit=`: token grants from `since` (RFC 3339; default
/// 24 hours ago), at most `limit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Default and maximum: [`GRANTS_PAGE_MAX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The most grants one read returns (page with `since`).
pub const GRANTS_PAGE_MAX: usize = 5_000;

/// The most audit rows one export returns (page with `after`).
pub const AUDIT_PAGE_MAX: usize = 10_000;
/// The most dead letters one listing returns.
pub const DEAD_LETTERS_MAX: usize = 1_000;

/// `GET /api/campaigns/{id}/report?format=`: `json` (default), `csv` or `md`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Every error the API answers: what was wrong and, for a refused request, each reason with
/// the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<statemachines::workflow::Reason>,
}

impl ErrorBody {
    /// What the answer says in one sentence: `error: field: message; field: message`.
    pub fn sentence(&self) -> String {
        if self.reasons.is_empty() {
            return self.error.clone();
        }
        let reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|r| format!("{}: {}", r.field, r.message))
            .collect();
        format!("{}: {}", self.error, reasons.join("; "))
    }

    /// The sentence of an error answer's body, `None` when the body is not one.
    pub fn sentence_of(body: &[u8]) -> Option<String> {
        serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|b| b.sentence())
    }
}

/// `GET /api/whoami`: the principal the server took the caller to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// `person` or `automation`.
    pub kind: String,
    /// The person's normalised id (their e-mail by default), or the automation's name.
    pub id: String,
    /// For a person: the token's `jti` (or a digest of it), never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

/// `GET /health`: public, so it says only that the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

/// `GET /api/health`: the figures behind health, for signed-in callers only (they tell an
/// outsider how busy the queue is and how many of their probes were refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCounts {
    pub status: String,
    /// Messages waiting or in flight.
    pub queue_depth: usize,
    /// Messages the queue gave up on (all of them, not a page).
    pub dead_letters: usize,
    /// Requests refused as malformed or unauthenticated since this process started.
    pub bad_requests: u64,
}

/// One workflow of an agent, in `GET /api/agents/{agent}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSummary {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub terminal: bool,
    pub pending_commands: usize,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// `GET /api/agents/{agent}`: the agent and its workflows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub agent: statemachines::Agent,
    pub workflows: Vec<WorkflowSummary>,
}

/// One line of `GET /api/agents/{agent}/history`, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHistoryEntry {
    pub workflow_id: String,
    pub kind: String,
    pub entry: crate::ports::store::HistoryEntry,
}

/// `GET /api/workflows/{id}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowView {
    pub workflow: crate::ports::store::Instance,
    pub history: Vec<crate::ports::store::HistoryEntry>,
}

/// `POST /api/agents/{agent}/owner`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerAssigned {
    pub workflow_id: String,
    pub owner: String,
    pub status: String,
}

/// `POST /api/workflows/{id}/cancel`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequested {
    pub workflow_id: String,
    pub status: String,
}

/// One approval in `GET /api/approvals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalView {
    pub status: String,
    pub action_hash: String,
    pub request: statemachines::ApprovalRequest,
    pub outcome: Option<statemachines::ApprovalOutcome>,
}

/// `POST /api/approvals/{id}/approve` and `/deny`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionQueued {
    pub approval_id: String,
    pub workflow_id: String,
    pub decision: statemachines::Decision,
    pub status: String,
}

/// `POST /api/reviews/{item}/decision`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewAnswered {
    pub item: String,
    pub decision: String,
    pub by: String,
}

/// `POST /api/shadow-agents/{client}/release`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub workflow_id: String,
}

/// One client in `GET /api/idp/clients`: what the identity provider holds (as opposed to the
/// registry), with the ids of its secrets, never their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpClientView {
    #[serde(flatten)]
    pub client: crate::ports::idp::ClientInfo,
    pub secret_ids: Vec<String>,
}

/// `POST /api/tokens`: a personal API token for the signed-in person's scripts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateBody {
    /// What the person calls it (`ci`, `laptop-script`): 1 to 64 letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// How long it lives (`30d`, `12h`); default 30 days, at most 365.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// A personal token as listed: never the token or its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&crate::ports::personal_tokens::PersonalToken> for TokenView {
    fn from(t: &crate::ports::personal_tokens::PersonalToken) -> Self {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// `POST /api/tokens`: the token itself, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}
