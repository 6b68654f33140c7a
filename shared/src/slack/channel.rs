//! Approvals in Slack: the `HumanChannel` port on the Web API. Requests are posted where the
//! policy routes them (the owner's DM, each approver's DM, the security channel) and every
//! posted message is recorded with the approval, so a repeated command posts nothing twice and
//! the messages can be updated when the approval is voted on, decided or expires.

use super::SlackError;
use super::client::SlackWeb;
use super::message;
use super::once::store_error;
use crate::ports::human_channel::{HumanChannel, NotifyError};
use crate::ports::store::{ApprovalRecord, PostedMessage};
use crate::ports::{Directory, Store};
use async_trait::async_trait;
use statemachines::{ApprovalOutcome, ApprovalRequest, FollowUp};
use std::sync::Arc;

pub struct SlackChannel {
    web: Arc<SlackWeb>,
    store: Arc<dyn Store>,
    /// Whose Slack user id the people file already gives (`chat`).
    directory: Arc<dyn Directory>,
    /// The policy's approval routes (`owner`, `approvers`, `security-channel`).
    routes: Vec<String>,
    security_channel: Option<String>,
}

/// Route names of the messages besides the request itself.
const REQUESTER_ROUTE: &str = "requester";
const ESCALATION_ROUTE: &str = "escalation";
const NOTICE_ROUTE: &str = "notice";

/// Fault injection for the crash test: abort right after Slack accepted an approval's message
/// and before it was recorded (`STEWARD_CRASH_AFTER=slack.approval_posted`).
const APPROVAL_CRASH_POINT: &str = "slack.approval_posted";
/// The same for a notice (`STEWARD_CRASH_AFTER=slack.notice_posted`).
const NOTICE_CRASH_POINT: &str = "slack.notice_posted";

impl SlackChannel {
    pub fn new(
        web: Arc<SlackWeb>,
        store: Arc<dyn Store>,
        directory: Arc<dyn Directory>,
        routes: Vec<String>,
        security_channel: Option<String>,
    ) -> Self {
        Self {
            web,
            store,
            directory,
            routes,
            security_channel,
        }
    }

    async fn record(&self, approval_id: &str) -> Result<ApprovalRecord, NotifyError> {
        self.store
            .approval(approval_id)
            .await
            .map_err(|e| NotifyError {
                message: e.to_string(),
                retryable: true,
                retry_after: None,
            })?
            .ok_or_else(|| NotifyError {
                message: format!("approval {approval_id} is not in the store"),
                retryable: false,
                retry_after: None,
            })
    }

    /// Where the request goes: (route, channel or user id). People Slack does not know are
    /// skipped with a warning; a request that reaches nobody is an error.
    async fn destinations(
        &self,
        r: &ApprovalRequest,
    ) -> Result<Vec<(String, String)>, NotifyError> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |route: String, channel: String| {
            if !out.iter().any(|(_, c)| *c == channel) {
                out.push((route, channel));
            }
        };
        for route in &self.routes {
            match route.as_str() {
                "security-channel" => match &self.security_channel {
                    Some(c) => push("security-channel".into(), c.clone()),
                    None => tracing::warn!(
                        approval_id = %r.id,
                        "the policy routes approvals to the security channel but none is configured (STEWARD_SLACK_SECURITY_CHANNEL)"
                    ),
                },
                "owner" if !r.owner.is_empty() => {
                    if let Some(id) = self.user(&r.owner).await? {
                        push("owner".into(), id);
                    }
                }
                "approvers" => {
                    for a in &r.approvers {
                        if let Some(id) = self.user(a).await? {
                            push(format!("approver:{}", a.to_ascii_lowercase()), id);
                        }
                    }
                }
                _ => {}
            }
        }
        if out.is_empty() {
            return Err(NotifyError {
                message: format!(
                    "approval {} reaches nobody in Slack: no security channel configured and none of its people ({}) has a Slack account",
                    r.id,
                    [vec![r.owner.clone()], r.approvers.clone()]
                        .concat()
                        .join(", ")
                ),
                retryable: false,
                retry_after: None,
            });
        }
        Ok(out)
    }

    async fn user(&self, email: &str) -> Result<Option<String>, NotifyError> {
        let found = super::user_of(&self.web, &*self.directory, email)
            .await
            .map_err(notify_error)?;
        if found.is_none() {
            tracing::warn!(email, "no Slack user with this email; skipped");
        }
        Ok(found)
    }

    async fn remember(
        &self,
        approval_id: &str,
        channel: String,
        ts: String,
        route: &str,
    ) -> Result<(), NotifyError> {
        self.store
            .add_approval_message(
                approval_id,
                PostedMessage {
                    channel,
                    ts,
                    route: route.to_string(),
                    at: None,
                },
            )
            .await
            .map_err(|e| NotifyError {
                message: e.to_string(),
                retryable: true,
                retry_after: None,
            })
    }

    /// Posts a message of the approval under `route` once, even when the command that posts it
    /// runs again after a crash (see [`super::once`]), and records it with the approval.
    async fn post_once(
        &self,
        approval_id: &str,
        route: &str,
        to: &str,
        text: &str,
        blocks: Vec<slack_morphism::prelude::SlackBlock>,
        thread_ts: Option<&str>,
    ) -> Result<(), NotifyError> {
        let subject = format!("approval/{approval_id}");
        let posted = self.store.messages(&subject).await.map_err(store_error)?;
        let (channel, ts) = super::once::post(
            &self.web,
            &*self.store,
            &posted,
            &subject,
            route,
            to,
            text,
            blocks,
            thread_ts,
            APPROVAL_CRASH_POINT,
        )
        .await?;
        self.remember(approval_id, channel, ts, route).await
    }

    /// Posts the notice of the command `key` once (see [`super::once`]).
    async fn notice_once(&self, key: &str, to: &str, text: &str) -> Result<(), NotifyError> {
        let subject = format!("notice/{key}");
        let posted = self.store.messages(&subject).await.map_err(store_error)?;
        super::once::post(
            &self.web,
            &*self.store,
            &posted,
            &subject,
            NOTICE_ROUTE,
            to,
            text,
            vec![],
            None,
            NOTICE_CRASH_POINT,
        )
        .await
        .map(drop)
    }

    /// Rewrites every message that shows the request.
    async fn update_all(
        &self,
        record: &ApprovalRecord,
        text: &str,
        blocks: &[slack_morphism::prelude::SlackBlock],
    ) -> Result<(), NotifyError> {
        for m in request_messages(record) {
            self.web
                .update(&m.channel, &m.ts, text, blocks.to_vec())
                .await
                .map_err(notify_error)?;
        }
        Ok(())
    }
}

/// The messages that show the request itself (not notices or escalations).
fn request_messages(record: &ApprovalRecord) -> impl Iterator<Item = &PostedMessage> {
    record.messages.iter().filter(|m| {
        !matches!(m.route.as_str(), REQUESTER_ROUTE | ESCALATION_ROUTE)
            && !m.route.starts_with("reminder")
    })
}

fn notify_error(e: SlackError) -> NotifyError {
    e.into()
}

#[async_trait]
impl HumanChannel for SlackChannel {
    async fn ask(&self, approval: &ApprovalRequest, _key: &str) -> Result<(), NotifyError> {
        let record = self.record(&approval.id).await?;
        let (text, blocks) = message::approval_request(&record);
        for (route, channel) in self.destinations(approval).await? {
            // Posted already (a repeated command)? A DM is recorded under its DM channel, not
            // the user id it was sent to, so compare routes: each names one destination.
            if record.messages.iter().any(|m| m.route == route) {
                continue;
            }
            self.post_once(&approval.id, &route, &channel, &text, blocks.clone(), None)
                .await?;
        }
        Ok(())
    }

    async fn closed(
        &self,
        approval_id: &str,
        outcome: &ApprovalOutcome,
        _key: &str,
    ) -> Result<(), NotifyError> {
        let record = self.record(approval_id).await?;
        let (text, blocks) = message::approval_closed(&record, outcome);
        self.update_all(&record, &text, &blocks).await?;
        if record.messages.iter().any(|m| m.route == REQUESTER_ROUTE) {
            return Ok(());
        }
        let Some(requester) = self.user(&record.request.requester).await? else {
            return Ok(());
        };
        let notice = message::requester_notice(&record, outcome);
        self.post_once(
            approval_id,
            REQUESTER_ROUTE,
            &requester,
            &notice,
            vec![],
            None,
        )
        .await
    }

    async fn follow_up(
        &self,
        approval_id: &str,
        follow_up: &FollowUp,
        _key: &str,
    ) -> Result<(), NotifyError> {
        let record = self.record(approval_id).await?;
        // A vote or reminder delivered late (after retries) must not reopen a decided message.
        if record.outcome.is_some() && !matches!(follow_up, FollowUp::Escalation { .. }) {
            return Ok(());
        }
        match follow_up {
            FollowUp::Vote { .. } => {
                // The stored record already holds the vote (same commit as the step).
                let (text, blocks) = message::approval_request(&record);
                self.update_all(&record, &text, &blocks).await
            }
            FollowUp::Reminder { .. } => {
                let text = message::reminder(&record, follow_up);
                let targets: Vec<PostedMessage> = request_messages(&record).cloned().collect();
                for m in targets {
                    let route = format!("reminder:{}", m.channel);
                    if record.messages.iter().any(|k| k.route == route) {
                        continue;
                    }
                    self.post_once(approval_id, &route, &m.channel, &text, vec![], Some(&m.ts))
                        .await?;
                }
                Ok(())
            }
            FollowUp::Escalation { expired_at } => {
                if record.messages.iter().any(|m| m.route == ESCALATION_ROUTE) {
                    return Ok(());
                }
                let (text, blocks) = message::escalation(&record, *expired_at);
                let channel = match &self.security_channel {
                    Some(c) => c.clone(),
                    None => {
                        tracing::warn!(
                            approval_id,
                            "no security channel configured (STEWARD_SLACK_SECURITY_CHANNEL): escalating to the approvers' DMs"
                        );
                        let mut first = None;
                        for a in &record.request.approvers {
                            if let Some(id) = self.user(a).await? {
                                first = Some(id);
                                break;
                            }
                        }
                        first.ok_or_else(|| NotifyError {
                            message: format!("approval {approval_id} expired and there is nobody in Slack to escalate to"),
                            retryable: false,
retry_after: None,
                        })?
                    }
                };
                self.post_once(approval_id, ESCALATION_ROUTE, &channel, &text, blocks, None)
                    .await
            }
        }
    }

    async fn review(
        &self,
        notice: &statemachines::review_item::ReviewNotice,
        key: &str,
    ) -> Result<(), NotifyError> {
        super::review::send(
            &self.web,
            &*self.store,
            &*self.directory,
            self.security_channel.as_deref(),
            notice,
            key,
            chrono::Utc::now(),
        )
        .await
    }

    async fn notify(
        &self,
        to: &str,
        subject: &str,
        body: &str,
        key: &str,
    ) -> Result<(), NotifyError> {
        let text = format!("*{subject}*\n{body}");
        if to == statemachines::owner_loss::SECURITY_CHANNEL {
            let Some(channel) = &self.security_channel else {
                return Err(NotifyError {
                    message: format!(
                        "no security channel is configured (STEWARD_SLACK_SECURITY_CHANNEL); the notice \"{subject}\" was not delivered"
                    ),
                    retryable: false,
                    retry_after: None,
                });
            };
            return self.notice_once(key, channel, &text).await;
        }
        let Some(user) = self.user(to).await? else {
            return Err(NotifyError {
                message: format!(
                    "{to} has no Slack account; the notice \"{subject}\" was not delivered"
                ),
                retryable: false,
                retry_after: None,
            });
        };
        self.notice_once(key, &user, &text).await
    }
}
