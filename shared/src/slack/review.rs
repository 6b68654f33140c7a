//! Access-review items in Slack: the owner gets one message per item with the evidence (scopes
//! and their last use, credential age, anomalies, the suggestion) and Keep / Reduce / Revoke;
//! reminders go in its thread; the escalation goes to the owner's manager (or the security
//! channel) with the same buttons; the outcome replaces the buttons.
//!
//! Each message is sent once, even across a crash: before posting, a marker is recorded; the
//! post carries Slack message metadata naming the item and route; after posting, the message
//! is recorded. A retry that finds a marker without a message looks for the tagged message in
//! the conversation before posting again.

use super::client::SlackWeb;
use super::message::{
    REASON_ACTION, REASON_BLOCK, REASON_MAX_CHARS, context, escape, md, plain, section, when,
};
use super::once::store_error;
use crate::ports::Store;
use crate::ports::human_channel::NotifyError;
use chrono::{DateTime, Utc};
use slack_morphism::prelude::*;
use statemachines::review_item::{Resolution, ReviewItem, ReviewNotice};

pub const KEEP_ACTION: &str = "review_keep";
pub const REDUCE_ACTION: &str = "review_reduce";
pub const REVOKE_ACTION: &str = "review_revoke";
/// The scope picker (a multi-select): changing it sends an interaction Steward only acks.
pub const DROP_ACTION: &str = "review_drop";
pub const DROP_BLOCK: &str = "review_scopes";

/// Routes of an item's messages.
const OWNER_ROUTE: &str = "owner";
const ESCALATION_ROUTE: &str = "escalation";
const REMINDER_ROUTE: &str = "reminder";

/// Fault injection for the crash test: abort right after Slack accepted an item's message and
/// before it was recorded (`STEWARD_CRASH_AFTER=slack.review_posted`).
const CRASH_POINT: &str = "slack.review_posted";

/// "12 days ago", "never seen", "unknown".
fn last_used(at: Option<DateTime<Utc>>, known: bool, now: DateTime<Utc>) -> String {
    match at {
        Some(at) => {
            let days = (now - at).num_days();
            match days {
                0 => "used today".into(),
                1 => "used yesterday".into(),
                d => format!("last used {d} days ago"),
            }
        }
        None if known => "no token used it".into(),
        None => "use unknown (no token grants seen)".into(),
    }
}

/// What the reviewer needs to decide, shared by the ask and the escalation.
fn evidence_blocks(item: &ReviewItem, now: DateTime<Utc>) -> Vec<SlackBlock> {
    let a = &item.agent;
    let e = &item.evidence;
    let mut blocks: Vec<SlackBlock> = vec![
        SlackHeaderBlock::new(plain(
            format!("Access review: {}", a.name)
                .chars()
                .take(150)
                .collect::<String>(),
        ))
        .into(),
        SlackSectionBlock::new()
            .with_fields(vec![
                md(format!(
                    "*Agent*\n`{}` ({})",
                    escape(&a.name),
                    escape(&a.environment)
                )),
                md(format!("*Owner*\n{}", escape(&a.owner))),
                md(format!("*Team*\n{}", escape(&a.team))),
                md(format!(
                    "*Credential age*\n{}",
                    e.credential_age_days
                        .map(|d| format!("{d} days"))
                        .unwrap_or_else(|| "unknown".into())
                )),
                md(format!(
                    "*Last review*\n{}",
                    e.last_review
                        .as_ref()
                        .map(|r| format!("{} by {} ({})", r.decision, escape(&r.by), when(r.at)))
                        .unwrap_or_else(|| "never".into())
                )),
                md(format!("*Answer by*\n{}", when(item.deadline))),
            ])
            .into(),
        section(format!("*Purpose*: {}", escape(&a.purpose))),
    ];
    let scopes: Vec<String> = e
        .scopes
        .iter()
        .map(|s| {
            format!(
                "• `{}`{} — {}",
                escape(&s.scope),
                if s.sensitive {
                    " :warning: sensitive"
                } else {
                    ""
                },
                last_used(s.last_used, e.usage_known, now)
            )
        })
        .collect();
    blocks.push(section(format!("*Scopes*\n{}", scopes.join("\n"))));
    blocks.push(section(if e.anomalies.is_empty() {
        "*Anomalies since the last review*: none".to_string()
    } else {
        format!(
            "*Anomalies since the last review*\n{}",
            e.anomalies
                .iter()
                .map(|x| format!("• {}", escape(x)))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }));
    if !e.suggested_drop.is_empty() {
        blocks.push(section(format!(
            ":bulb: *Suggestion*: drop {} — no token used {} in the policy's period. They are preselected below; answer *Reduce* to drop them.",
            e.suggested_drop
                .iter()
                .map(|s| format!("`{}`", escape(s)))
                .collect::<Vec<_>>()
                .join(", "),
            if e.suggested_drop.len() == 1 { "it" } else { "them" }
        )));
    }
    blocks
}

fn choice(scope: &str) -> SlackBlockChoiceItem<SlackBlockPlainTextOnly> {
    SlackBlockChoiceItem::new(
        plain(scope.chars().take(75).collect::<String>()),
        scope.into(),
    )
}

/// The scope picker, the reason field and the three answers.
fn answer_blocks(item: &ReviewItem) -> Vec<SlackBlock> {
    let options: Vec<_> = item.agent.scopes.iter().map(|s| choice(s)).collect();
    let mut picker = SlackBlockMultiStaticSelectElement::new()
        .with_placeholder(plain("Scopes to drop"))
        .with_options(options)
        .with_action_id(DROP_ACTION.into());
    if !item.evidence.suggested_drop.is_empty() {
        picker = picker.with_initial_options(
            item.evidence
                .suggested_drop
                .iter()
                .map(|s| choice(s))
                .collect(),
        );
    }
    vec![
        SlackSectionBlock::new()
            .with_text(md("*Reduce*: pick the scopes to drop"))
            .with_accessory(picker.into())
            .with_block_id(DROP_BLOCK.into())
            .into(),
        SlackInputBlock::new(
            plain("Reason (optional, kept in the audit trail)"),
            SlackInputBlockElement::PlainTextInput(
                SlackBlockPlainTextInputElement::new()
                    .with_action_id(REASON_ACTION.into())
                    .with_max_length(REASON_MAX_CHARS)
                    .with_placeholder(plain("e.g. still runs the nightly reconciliation")),
            ),
        )
        .with_block_id(REASON_BLOCK.into())
        .with_optional(true)
        .into(),
        SlackActionsBlock::new(vec![
            SlackBlockButtonElement::new(plain("Keep"))
                .with_action_id(KEEP_ACTION.into())
                .with_value(item.id.clone())
                .with_style(SlackBlockButtonStyle::Primary)
                .into(),
            SlackBlockButtonElement::new(plain("Reduce"))
                .with_action_id(REDUCE_ACTION.into())
                .with_value(item.id.clone())
                .into(),
            SlackBlockButtonElement::new(plain("Revoke"))
                .with_action_id(REVOKE_ACTION.into())
                .with_value(item.id.clone())
                .with_style(SlackBlockButtonStyle::Danger)
                .with_confirm(SlackBlockConfirmItem::new(
                    plain("Revoke this agent?"),
                    md(format!(
                        "`{}` will be decommissioned: its tokens revoked, its client deleted, its secret scheduled for deletion.",
                        escape(&item.agent.name)
                    )),
                    plain("Revoke"),
                    plain("Cancel"),
                ))
                .into(),
        ])
        .with_block_id("review_decision".into())
        .into(),
        footer(item),
    ]
}

fn footer(item: &ReviewItem) -> SlackBlock {
    context(format!(
        "Campaign {} · item `{}` · unanswered items get: {}",
        escape(&item.campaign_name),
        item.id,
        item.unanswered.as_str()
    ))
}

/// The item as its owner first sees it.
pub fn ask(item: &ReviewItem, now: DateTime<Utc>) -> (String, Vec<SlackBlock>) {
    let mut blocks = evidence_blocks(item, now);
    blocks.extend(answer_blocks(item));
    (
        format!(
            "Access review: does {} still need its access? Answer by {}",
            item.agent.name,
            item.deadline.format("%Y-%m-%d %H:%M UTC")
        ),
        blocks,
    )
}

/// The escalation: the same item, to the owner's manager or the security channel.
pub fn escalation(item: &ReviewItem, now: DateTime<Utc>) -> (String, Vec<SlackBlock>) {
    let who = match &item.escalate_to {
        Some(m) => format!(
            "As {}'s manager ({}), you may answer for them.",
            item.agent.owner, m
        ),
        None => "The owner has no manager on record: security, please answer.".into(),
    };
    let mut blocks = vec![section(format!(
        ":rotating_light: *Escalated*: {} has not answered the access review of `{}`, due {}. {who}",
        escape(&item.agent.owner),
        escape(&item.agent.name),
        when(item.deadline)
    ))];
    blocks.extend(evidence_blocks(item, now));
    blocks.extend(answer_blocks(item));
    (
        format!(
            "Escalated access review: {} (owner {}) is unanswered",
            item.agent.name, item.agent.owner
        ),
        blocks,
    )
}

/// The outcome, replacing the buttons.
pub fn closed(item: &ReviewItem, r: &Resolution, now: DateTime<Utc>) -> (String, Vec<SlackBlock>) {
    let what = match (r.default_applied, r.decision.as_str()) {
        (Some(d), _) => format!(
            ":hourglass: *Unanswered* by the deadline: the default *{}* was applied",
            d.as_str()
        ),
        (None, "reduce") => format!(
            ":scissors: *Reduced* by {} at {}: dropping {}",
            escape(r.by.as_deref().unwrap_or("")),
            when(r.at),
            r.dropped
                .iter()
                .map(|s| format!("`{}`", escape(s)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, "revoke") => format!(
            ":no_entry: *Revoked* by {} at {}: the agent is being decommissioned",
            escape(r.by.as_deref().unwrap_or("")),
            when(r.at)
        ),
        (None, _) => format!(
            ":white_check_mark: *Kept* by {} at {}",
            escape(r.by.as_deref().unwrap_or("")),
            when(r.at)
        ),
    };
    let mut blocks = evidence_blocks(item, now);
    blocks.push(section(what));
    if let Some(a) = &r.action {
        blocks.push(context(format!(
            "{} {}",
            if a.ok { "Result:" } else { ":x: Failed:" },
            escape(&a.detail)
        )));
    }
    blocks.push(footer(item));
    (
        format!("Access review of {}: {}", item.agent.name, r.decision),
        blocks,
    )
}

/// Sends `notice` through Slack (see the module docs for "once").
pub async fn send(
    web: &SlackWeb,
    store: &dyn Store,
    directory: &dyn crate::ports::Directory,
    security_channel: Option<&str>,
    notice: &ReviewNotice,
    key: &str,
    now: DateTime<Utc>,
) -> Result<(), NotifyError> {
    let item = notice.item();
    let posted = store.messages(&item.id).await.map_err(store_error)?;
    let sent = |route: &str| {
        posted
            .iter()
            .find(|m| m.route == route && !m.ts.is_empty())
            .cloned()
    };
    let person = |email: String| async move {
        super::user_of(web, directory, &email)
            .await
            .map_err(NotifyError::from)
    };
    match notice {
        ReviewNotice::Ask { item } => {
            let to = match person(item.agent.owner.clone()).await? {
                Some(id) => id,
                None => security_channel.map(str::to_string).ok_or_else(|| NotifyError {
                    message: format!(
                        "the owner {} of {} has no Slack account and no security channel is configured; the review of {} was not sent",
                        item.agent.owner, item.agent.name, item.id
                    ),
                    retryable: false,
                    retry_after: None,
                })?,
            };
            let (text, blocks) = ask(item, now);
            super::once::post(
                web,
                store,
                &posted,
                &item.id,
                OWNER_ROUTE,
                &to,
                &text,
                blocks,
                None,
                CRASH_POINT,
            )
            .await
            .map(drop)
        }
        ReviewNotice::Remind { item } => {
            let Some(owner_msg) = sent(OWNER_ROUTE) else {
                return Err(NotifyError {
                    message: format!("the review {} was not sent yet; reminding later", item.id),
                    retryable: true,
                    retry_after: None,
                });
            };
            let text = format!(
                ":alarm_clock: Reminder: the access review of `{}` is still open. Answer by {}, or it gets: {}.",
                item.agent.name,
                when(item.deadline),
                item.unanswered.as_str()
            );
            // One reminder per reminder command: its key names it.
            let route = format!("{REMINDER_ROUTE}:{key}");
            super::once::post(
                web,
                store,
                &posted,
                &item.id,
                &route,
                &owner_msg.channel,
                &text,
                vec![],
                Some(&owner_msg.ts),
                CRASH_POINT,
            )
            .await
            .map(drop)
        }
        ReviewNotice::Escalate { item } => {
            let manager = match &item.escalate_to {
                Some(m) => person(m.clone()).await?,
                None => None,
            };
            let to = match manager.or_else(|| security_channel.map(str::to_string)) {
                Some(to) => to,
                None => {
                    return Err(NotifyError {
                        message: format!(
                            "the review {} is escalated but the owner's manager has no Slack account and no security channel is configured",
                            item.id
                        ),
                        retryable: false,
                        retry_after: None,
                    });
                }
            };
            let (text, blocks) = escalation(item, now);
            super::once::post(
                web,
                store,
                &posted,
                &item.id,
                ESCALATION_ROUTE,
                &to,
                &text,
                blocks,
                None,
                CRASH_POINT,
            )
            .await
            .map(drop)
        }
        ReviewNotice::Closed { item, resolution } => {
            let (text, blocks) = closed(item, resolution, now);
            for m in [sent(OWNER_ROUTE), sent(ESCALATION_ROUTE)]
                .into_iter()
                .flatten()
            {
                web.update(&m.channel, &m.ts, &text, blocks.clone())
                    .await
                    .map_err(NotifyError::from)?;
            }
            Ok(())
        }
    }
}
