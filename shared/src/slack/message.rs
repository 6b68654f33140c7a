//! Block Kit messages for approvals, built from slack-morphism's block types. A person sees at
//! a glance what is asked (action, agent, environment), who asked and why, the exact scope
//! diff, the risk and policy notes, and when it expires; then Approve / Deny.
//!
//! Both buttons carry `<approval id>:<action hash>`: the click names what was shown, and the
//! engine refuses it when the request has changed since (see `Engine::decide`).

use crate::ports::store::ApprovalRecord;
use chrono::{DateTime, Utc};
use slack_morphism::prelude::*;
use statemachines::{ApprovalOutcome, ApprovalRequest, FollowUp};

/// Action ids of the buttons and of the reason field.
pub const APPROVE_ACTION: &str = "approve";
pub const DENY_ACTION: &str = "deny";
pub const REASON_BLOCK: &str = "reason";
pub const REASON_ACTION: &str = "reason";
/// Slack limits a plain-text input to 3000 characters; reasons are kept shorter.
pub const REASON_MAX_CHARS: u64 = 500;

/// A button value: which approval, and the hash of what the message shows.
pub fn button_value(record: &ApprovalRecord) -> String {
    format!("{}:{}", record.request.id, record.action_hash)
}

/// Splits a button value back into approval id and shown hash.
pub fn parse_button_value(value: &str) -> Option<(&str, &str)> {
    let (id, hash) = value.rsplit_once(':')?;
    (!id.is_empty() && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((id, hash))
}

pub(super) fn md(text: impl Into<String>) -> SlackBlockText {
    SlackBlockMarkDownText::new(text.into()).into()
}

pub(super) fn plain(text: impl Into<String>) -> SlackBlockPlainTextOnly {
    SlackBlockPlainText::new(text.into()).into()
}

/// Slack refuses a whole message whose section or context text is longer than this.
pub const TEXT_MAX_CHARS: usize = 3000;

/// `text` cut to what Slack takes, marked when cut: a long purpose or reason shortens the
/// message instead of stopping it from being posted (the full text is in the audit trail and on
/// the dashboard).
pub(super) fn fit(text: String) -> String {
    if text.chars().count() <= TEXT_MAX_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(TEXT_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

pub(super) fn section(text: impl Into<String>) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(md(fit(text.into())))
        .into()
}

pub(super) fn context(text: impl Into<String>) -> SlackBlock {
    SlackContextBlock::new(vec![SlackBlockMarkDownText::new(fit(text.into())).into()]).into()
}

/// A date every reader sees in their own time zone, with a UTC fallback.
pub fn when(at: DateTime<Utc>) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
        at.timestamp(),
        at.format("%Y-%m-%d %H:%M UTC")
    )
}

fn action_label(action: &str) -> &str {
    match action {
        "onboard" => "onboard a new agent",
        "claim" => "take over a client Steward did not create (its current secrets stop working)",
        "scope-change" => "change an agent's scopes",
        "unfreeze" => "unfreeze a frozen agent (or decommission it)",
        "freeze" => "freeze an agent after an anomaly",
        other => other,
    }
}

/// The two buttons' labels: approve and deny mean different things per action.
fn button_labels(action: &str) -> (&'static str, &'static str) {
    match action {
        "unfreeze" => ("Unfreeze", "Decommission"),
        "freeze" => ("Freeze", "Don't freeze"),
        _ => ("Approve", "Deny"),
    }
}

/// Slack escapes: `&`, `<`, `>` in text a requester wrote.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The request itself: what, who, why, scope diff, risk, expiry.
fn request_blocks(r: &ApprovalRequest, title: &str) -> Vec<SlackBlock> {
    let mut diff: Vec<String> = r.scopes_added.iter().map(|s| format!("+ {s}")).collect();
    diff.extend(r.scopes_removed.iter().map(|s| format!("− {s}")));
    let mut risk = vec![format!(
        "• Sensitive scopes: {}",
        if r.sensitive_scopes.is_empty() {
            "none".to_string()
        } else {
            r.sensitive_scopes
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    )];
    risk.push(format!(
        "• Access tokens live {} min",
        r.token_lifetime_secs.div_ceil(60)
    ));
    if r.quorum > 1 {
        risk.push(format!(
            "• Two-person rule: {} distinct approvers must approve",
            r.quorum
        ));
    }
    risk.push(format!(
        "• {} requested it and cannot approve it; approvers: {}",
        escape(&r.requester),
        escape(&r.approvers.join(", "))
    ));
    vec![
        SlackHeaderBlock::new(plain(title.chars().take(150).collect::<String>())).into(),
        SlackSectionBlock::new()
            .with_fields(vec![
                md(format!("*Action*\n{}", action_label(&r.action))),
                md(format!("*Agent*\n`{}`", r.agent_name)),
                md(format!("*Environment*\n{}", r.environment)),
                md(format!(
                    "*Owner*\n{}",
                    if r.owner.is_empty() {
                        "—".to_string()
                    } else {
                        escape(&r.owner)
                    }
                )),
                md(format!("*Requested by*\n{}", escape(&r.requester))),
                md(format!("*Expires*\n{}", when(r.expires_at))),
            ])
            .into(),
        section(format!(
            "*Why*\n>{}",
            escape(&r.justification).replace('\n', "\n>")
        )),
        section(format!(
            "*Scope change*\n```{}```",
            if diff.is_empty() {
                "(no scope change)".to_string()
            } else {
                diff.join("\n")
            }
        )),
        section(format!("*Risk and policy*\n{}", risk.join("\n"))),
    ]
}

fn id_context(record: &ApprovalRecord) -> SlackBlock {
    context(format!(
        "Approval `{}` · shows request `{}`",
        record.request.id,
        &record.action_hash[..record.action_hash.len().min(12)]
    ))
}

/// The approval request with its reason field and Approve / Deny buttons.
pub fn approval_request(record: &ApprovalRecord) -> (String, Vec<SlackBlock>) {
    let r = &record.request;
    let text = format!(
        "Approval needed: {} {} ({}) requested by {}",
        action_label(&r.action),
        escape(&r.agent_name),
        escape(&r.environment),
        escape(&r.requester)
    );
    let mut blocks = request_blocks(r, &format!("Approval needed: {}", r.agent_name));
    for vote in &r.votes {
        blocks.push(context(format!(
            ":white_check_mark: Approved by {} at {} ({} of {}); another approver is needed",
            escape(&vote.by),
            when(vote.at),
            r.votes.len(),
            r.quorum
        )));
    }
    blocks.push(id_context(record));
    blocks.push(
        SlackInputBlock::new(
            plain("Reason (optional, kept in the audit trail)"),
            SlackInputBlockElement::PlainTextInput(
                SlackBlockPlainTextInputElement::new()
                    .with_action_id(REASON_ACTION.into())
                    .with_max_length(REASON_MAX_CHARS)
                    .with_placeholder(plain("e.g. ok for INC-4711 / use the read-only scope")),
            ),
        )
        .with_block_id(REASON_BLOCK.into())
        .with_optional(true)
        .into(),
    );
    let value = button_value(record);
    let (yes, no) = button_labels(&r.action);
    let confirm_body = match r.action.as_str() {
        "unfreeze" => format!(
            "{} will be decommissioned: tokens revoked, client deleted, secret scheduled for deletion.",
            r.agent_name
        ),
        "freeze" => format!(
            "{} will not be frozen; the anomaly stays on record.",
            r.agent_name
        ),
        _ => format!(
            "{} will not get {}. Add a reason above so the requester knows what to change.",
            r.agent_name,
            if r.scopes_added.is_empty() {
                "this change".to_string()
            } else {
                r.scopes_added.join(", ")
            }
        ),
    };
    blocks.push(
        SlackActionsBlock::new(vec![
            SlackBlockButtonElement::new(plain(yes))
                .with_action_id(APPROVE_ACTION.into())
                .with_value(value.clone())
                .with_style(SlackBlockButtonStyle::Primary)
                .into(),
            SlackBlockButtonElement::new(plain(no))
                .with_action_id(DENY_ACTION.into())
                .with_value(value)
                .with_style(SlackBlockButtonStyle::Danger)
                .with_confirm(SlackBlockConfirmItem::new(
                    plain(format!("{no}?")),
                    md(confirm_body),
                    plain(no),
                    plain("Cancel"),
                ))
                .into(),
        ])
        .with_block_id("decision".into())
        .into(),
    );
    (text, blocks)
}

/// What an outcome says, in words.
pub fn outcome_line(outcome: &ApprovalOutcome) -> String {
    match outcome {
        ApprovalOutcome::Approved { by, at, reason } => format!(
            ":white_check_mark: *Approved* by {} at {}{}",
            escape(by),
            when(*at),
            reason
                .as_deref()
                .map(|r| format!(": {}", escape(r)))
                .unwrap_or_default()
        ),
        ApprovalOutcome::Denied { by, at, reason } => format!(
            ":no_entry: *Denied* by {} at {}{}",
            escape(by),
            when(*at),
            reason
                .as_deref()
                .map(|r| format!(": {}", escape(r)))
                .unwrap_or_default()
        ),
        ApprovalOutcome::Expired { at } => format!(
            ":hourglass: *Expired* unanswered at {}; nothing was changed",
            when(*at)
        ),
        ApprovalOutcome::Cancelled { at } => {
            format!(
                ":leftwards_arrow_with_hook: *Withdrawn* by the requester at {}",
                when(*at)
            )
        }
    }
}

/// The request once decided: no buttons, the outcome, who and when.
pub fn approval_closed(
    record: &ApprovalRecord,
    outcome: &ApprovalOutcome,
) -> (String, Vec<SlackBlock>) {
    let r = &record.request;
    let word = statemachines_status(outcome);
    let mut blocks = request_blocks(r, &format!("Approval {word}: {}", r.agent_name));
    if !r.votes.is_empty() {
        let names: Vec<&str> = r.votes.iter().map(|v| v.by.as_str()).collect();
        blocks.push(context(format!("Earlier approvals: {}", names.join(", "))));
    }
    blocks.push(section(outcome_line(outcome)));
    blocks.push(id_context(record));
    (
        format!(
            "Approval {word}: {} {}",
            action_label(&r.action),
            r.agent_name
        ),
        blocks,
    )
}

fn statemachines_status(outcome: &ApprovalOutcome) -> &'static str {
    match outcome {
        ApprovalOutcome::Approved { .. } => "approved",
        ApprovalOutcome::Denied { .. } => "denied",
        ApprovalOutcome::Expired { .. } => "expired",
        ApprovalOutcome::Cancelled { .. } => "withdrawn",
    }
}

/// What the requester is told once the approval is closed.
pub fn requester_notice(record: &ApprovalRecord, outcome: &ApprovalOutcome) -> String {
    let r = &record.request;
    let next = match outcome {
        ApprovalOutcome::Approved { .. } => "Steward is applying it now.",
        ApprovalOutcome::Denied { .. } => "Nothing was changed; adjust the request and ask again.",
        ApprovalOutcome::Expired { .. } => {
            "Nobody decided in time; nothing was changed. Ask again if it is still needed."
        }
        ApprovalOutcome::Cancelled { .. } => "Nothing was changed.",
    };
    format!(
        "Your request to {} `{}` ({}): {}. {next}",
        action_label(&r.action),
        r.agent_name,
        r.environment,
        outcome_line(outcome)
    )
}

/// A reminder, posted in the request's thread.
pub fn reminder(record: &ApprovalRecord, follow_up: &FollowUp) -> String {
    let expires = match follow_up {
        FollowUp::Reminder { expires_at } => *expires_at,
        _ => record.request.expires_at,
    };
    format!(
        ":alarm_clock: Reminder: this request is still open and expires {}. Approvers: {}",
        when(expires),
        escape(&record.request.approvers.join(", "))
    )
}

/// The escalation to the security channel when a request expired unanswered.
pub fn escalation(record: &ApprovalRecord, expired_at: DateTime<Utc>) -> (String, Vec<SlackBlock>) {
    let r = &record.request;
    let mut blocks = request_blocks(r, &format!("Unanswered approval expired: {}", r.agent_name));
    blocks.push(section(format!(
        ":warning: Nobody decided by {}. The request ended unapplied; {} has to ask again. Check whether the approvers ({}) are reachable.",
        when(expired_at),
        escape(&r.requester),
        escape(&r.approvers.join(", "))
    )));
    blocks.push(id_context(record));
    (
        format!(
            "Escalation: approval for {} expired unanswered",
            r.agent_name
        ),
        blocks,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_values_name_an_approval_and_a_full_hash() {
        let hash = "0f".repeat(32);
        let value = format!("onboarding-x-agent-prod-1a2b3c4d-approval-1:{hash}");
        assert_eq!(
            parse_button_value(&value),
            Some(("onboarding-x-agent-prod-1a2b3c4d-approval-1", hash.as_str()))
        );
        for bad in [
            "no-hash".to_string(),
            format!(":{hash}"),
            format!("id:{}", &hash[..63]),
            format!("id:{}zz", &hash[..62]),
        ] {
            assert_eq!(parse_button_value(&bad), None, "{bad}");
        }
    }

    /// A purpose or reason longer than Slack takes shortens its block; the message still posts.
    #[test]
    fn long_text_is_cut_to_what_slack_takes() {
        let long = format!("*Why*\n>{}", "ä".repeat(5000));
        for block in [section(long.clone()), context(long)] {
            let v = serde_json::to_value(&block).unwrap();
            let text = v["text"]["text"]
                .as_str()
                .or(v["elements"][0]["text"].as_str())
                .unwrap()
                .to_string();
            assert_eq!(text.chars().count(), TEXT_MAX_CHARS, "{v}");
            assert!(text.ends_with('…'));
        }
        let short = section("fits");
        assert_eq!(
            serde_json::to_value(&short).unwrap()["text"]["text"],
            "fits"
        );
    }

    /// Names a person typed (a requester, an approver in the policy) are shown as text, never
    /// as Slack markup: no `<!channel>` ping, no disguised link, in the request's fallback text,
    /// the reminder or the escalation.
    #[test]
    fn names_in_requests_reminders_and_escalations_are_escaped() {
        let record: ApprovalRecord = serde_json::from_value(serde_json::json!({
            "action_hash": "0f".repeat(32),
            "outcome": null,
            "messages": [],
            "request": {
                "action": "onboard", "agent_id": "agt-1", "agent_name": "x-agent-prod",
                "approvers": ["<!here>", "sam@example.com"], "environment": "prod",
                "expires_at": "2026-12-10T17:31:40Z", "id": "onboarding-x-approval-1",
                "justification": "j", "owner": "alice@example.com", "quorum": 1,
                "remind_at": null, "requested_at": "2026-12-07T17:31:40Z",
                "requester": "<!channel> <https://evil.example|click>",
                "scopes_added": [], "scopes_removed": [], "sensitive_scopes": [],
                "token_lifetime_secs": 900, "votes": [], "workflow_id": "onboarding-x"
            }
        }))
        .unwrap();
        let (text, _) = approval_request(&record);
        let reminder = reminder(
            &record,
            &FollowUp::Reminder {
                expires_at: record.request.expires_at,
            },
        );
        let (_, blocks) = escalation(&record, record.request.expires_at);
        let escalated = serde_json::to_string(&blocks).unwrap();
        // Steward's own markup (`<!date^…>`) stays; what the people typed does not become any.
        for shown in [&text, &reminder, &escalated] {
            for markup in ["<!channel", "<!here", "<https"] {
                assert!(!shown.contains(markup), "{markup} in {shown}");
            }
        }
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert!(reminder.contains("&lt;!here&gt;"), "{reminder}");
    }

    #[test]
    fn text_from_requesters_cannot_inject_slack_markup() {
        assert_eq!(
            escape("<!channel> & <https://x|click>"),
            "&lt;!channel&gt; &amp; &lt;https://x|click&gt;"
        );
    }
}
