//! Console approvals: asks and notices are recorded in the local database (and logged) for the
//! CLI and the local API to show; people decide with `steward approvals approve|deny`.

use super::sqlite::Db;
use crate::ports::human_channel::{HumanChannel, NotifyError};
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::params;
use serde::Serialize;
use statemachines::review_item::{ReviewItem, ReviewNotice};
use statemachines::{ApprovalOutcome, ApprovalRequest, FollowUp};
use std::sync::Arc;

pub struct Console {
    db: Arc<Db>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub at: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

impl Console {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    /// Idempotent by key: a repeated command records nothing new.
    fn record(
        &self,
        key: &str,
        kind: &str,
        recipient: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), NotifyError> {
        let inserted = self
            .db
            .lock()
            .execute(
                "INSERT OR IGNORE INTO notifications (key, at, kind, recipient, subject, body) VALUES (?1,?2,?3,?4,?5,?6)",
                params![key, Utc::now().to_rfc3339(), kind, recipient, subject, body],
            )
            .map_err(|e| NotifyError { message: e.to_string(), retryable: true, retry_after: None })?;
        if inserted == 1 {
            tracing::info!(kind, recipient, subject, "notice");
        }
        Ok(())
    }

    pub fn notices(&self) -> Result<Vec<Notice>, NotifyError> {
        let conn = self.db.lock();
        let err = |e: rusqlite::Error| NotifyError {
            message: e.to_string(),
            retryable: true,
            retry_after: None,
        };
        let mut st = conn
            .prepare("SELECT at, kind, recipient, subject, body FROM notifications ORDER BY rowid")
            .map_err(err)?;
        let rows = st
            .query_map([], |r| {
                Ok(Notice {
                    at: r.get(0)?,
                    kind: r.get(1)?,
                    recipient: r.get(2)?,
                    subject: r.get(3)?,
                    body: r.get(4)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }
}

#[async_trait]
impl HumanChannel for Console {
    async fn ask(&self, a: &ApprovalRequest, key: &str) -> Result<(), NotifyError> {
        let subject = format!(
            "Approve {} for {} ({})? id {}",
            a.action, a.agent_name, a.environment, a.id
        );
        let body = format!(
            "{} asks for +[{}] -[{}] ({}s tokens). Sensitive: {}. Why: {}. Expires {}. Decide: steward approvals approve|deny {}",
            a.requester,
            a.scopes_added.join(", "),
            a.scopes_removed.join(", "),
            a.token_lifetime_secs,
            a.sensitive_scopes.join(", "),
            a.justification,
            a.expires_at.to_rfc3339(),
            a.id
        );
        self.record(
            key,
            "approval_request",
            &a.approvers.join(","),
            &subject,
            &body,
        )
    }

    async fn closed(
        &self,
        approval_id: &str,
        outcome: &ApprovalOutcome,
        key: &str,
    ) -> Result<(), NotifyError> {
        let (subject, who) = match outcome {
            ApprovalOutcome::Approved { by, .. } => {
                (format!("Approval {approval_id} approved"), by.clone())
            }
            ApprovalOutcome::Denied { by, .. } => {
                (format!("Approval {approval_id} denied"), by.clone())
            }
            ApprovalOutcome::Expired { .. } => {
                (format!("Approval {approval_id} expired"), "nobody".into())
            }
            ApprovalOutcome::Cancelled { .. } => (
                format!("Approval {approval_id} cancelled"),
                "requester".into(),
            ),
        };
        let body = serde_json::to_string(outcome).unwrap_or_default();
        self.record(key, "approval_closed", &who, &subject, &body)
    }

    async fn follow_up(
        &self,
        approval_id: &str,
        follow_up: &FollowUp,
        key: &str,
    ) -> Result<(), NotifyError> {
        let (kind, recipient, subject) = match follow_up {
            FollowUp::Vote {
                by, votes, quorum, ..
            } => (
                "approval_vote",
                by.clone(),
                format!(
                    "{by} approved {approval_id} ({votes} of {quorum}); another approver is needed"
                ),
            ),
            FollowUp::Reminder { expires_at } => (
                "approval_reminder",
                "approvers".to_string(),
                format!(
                    "Reminder: approval {approval_id} expires {}",
                    expires_at.to_rfc3339()
                ),
            ),
            FollowUp::Escalation { expired_at } => (
                "approval_escalation",
                "security".to_string(),
                format!(
                    "Escalation: approval {approval_id} expired unanswered at {}",
                    expired_at.to_rfc3339()
                ),
            ),
        };
        let body = serde_json::to_string(follow_up).unwrap_or_default();
        self.record(key, kind, &recipient, &subject, &body)
    }

    async fn review(&self, notice: &ReviewNotice, key: &str) -> Result<(), NotifyError> {
        let item = notice.item();
        let (kind, recipient, subject, body) = match notice {
            ReviewNotice::Ask { item } => (
                "review_request",
                item.agent.owner.clone(),
                format!(
                    "Access review {}: does {} still need its access? item {}",
                    item.campaign_id, item.agent.name, item.id
                ),
                review_body(item),
            ),
            ReviewNotice::Remind { item } => (
                "review_reminder",
                item.agent.owner.clone(),
                format!(
                    "Reminder: review {} by {} (item {})",
                    item.agent.name,
                    item.deadline.to_rfc3339(),
                    item.id
                ),
                review_body(item),
            ),
            ReviewNotice::Escalate { item } => (
                "review_escalation",
                item.escalate_to
                    .clone()
                    .unwrap_or_else(|| "security".to_string()),
                format!(
                    "Escalation: {} has not reviewed {} (item {})",
                    item.agent.owner, item.agent.name, item.id
                ),
                review_body(item),
            ),
            ReviewNotice::Closed { resolution, .. } => (
                "review_closed",
                item.agent.owner.clone(),
                format!(
                    "Review of {} closed: {} by {}",
                    item.agent.name,
                    resolution.decision,
                    resolution.by.as_deref().unwrap_or("the deadline")
                ),
                serde_json::to_string(resolution).unwrap_or_default(),
            ),
        };
        self.record(key, kind, &recipient, &subject, &body)
    }

    async fn notify(
        &self,
        to: &str,
        subject: &str,
        body: &str,
        key: &str,
    ) -> Result<(), NotifyError> {
        self.record(key, "notice", to, subject, body)
    }
}

/// What a console reviewer reads: the evidence and how to answer.
fn review_body(item: &ReviewItem) -> String {
    let e = &item.evidence;
    let scopes: Vec<String> = e
        .scopes
        .iter()
        .map(|s| match s.last_used {
            Some(at) => format!("{} (last used {})", s.scope, at.date_naive()),
            None if e.usage_known => format!("{} (not used)", s.scope),
            None => format!("{} (use unknown)", s.scope),
        })
        .collect();
    format!(
        "{} ({}, team {}): {}. Scopes: {}. Credential age: {}. Anomalies since last review: {}. Suggested to drop: {}. Due {}. Answer: steward campaigns decide {} keep|revoke|reduce --drop SCOPE",
        item.agent.name,
        item.agent.environment,
        item.agent.team,
        item.agent.purpose,
        scopes.join(", "),
        e.credential_age_days
            .map(|d| format!("{d} days"))
            .unwrap_or_else(|| "unknown".into()),
        if e.anomalies.is_empty() {
            "none".to_string()
        } else {
            e.anomalies.join("; ")
        },
        if e.suggested_drop.is_empty() {
            "nothing".to_string()
        } else {
            e.suggested_drop.join(", ")
        },
        item.deadline.to_rfc3339(),
        item.id
    )
}
