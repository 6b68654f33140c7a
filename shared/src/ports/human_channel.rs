//! The human channel: ask approvers, report outcomes, tell people things. The console
//! implementation records messages locally; Slack replaces it when configured. Decisions come
//! back through the engine (`Engine::decide`), never through this port, so the rules are
//! enforced in one place.

use async_trait::async_trait;
use statemachines::review_item::ReviewNotice;
use statemachines::{ApprovalOutcome, ApprovalRequest, FollowUp};

#[derive(Debug, thiserror::Error)]
#[error("could not reach people: {message}")]
pub struct NotifyError {
    pub message: String,
    pub retryable: bool,
    /// A rate limit's wait: try again after this long (not counted as a failed attempt).
    pub retry_after: Option<std::time::Duration>,
}

#[async_trait]
pub trait HumanChannel: Send + Sync {
    /// Ask the approvers. `key` is the command's idempotency key: a repeat must not ask twice.
    async fn ask(&self, approval: &ApprovalRequest, key: &str) -> Result<(), NotifyError>;
    /// Tell the requester (and update the ask) once the approval is closed.
    async fn closed(
        &self,
        approval_id: &str,
        outcome: &ApprovalOutcome,
        key: &str,
    ) -> Result<(), NotifyError>;
    /// Show a vote, a reminder or the escalation of an open approval.
    async fn follow_up(
        &self,
        approval_id: &str,
        follow_up: &FollowUp,
        key: &str,
    ) -> Result<(), NotifyError>;
    /// Show an access-review item: ask its owner, remind, escalate, show the outcome.
    /// `key` is the command's idempotency key: a repeat must not send twice.
    async fn review(&self, notice: &ReviewNotice, key: &str) -> Result<(), NotifyError>;
    /// A plain message to a person.
    async fn notify(
        &self,
        to: &str,
        subject: &str,
        body: &str,
        key: &str,
    ) -> Result<(), NotifyError>;
}
