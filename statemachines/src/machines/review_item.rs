//! One access-review item: an agent's access, shown to its owner with the evidence to decide
//! (scopes with last use, credential age, anomalies, what to drop), answered Keep, Reduce or
//! Revoke. Reminded before the deadline, escalated to the owner's manager (or the security
//! channel), and at the deadline an unanswered item gets the campaign's default.
//!
//! Open --(escalation timer)--> Escalated; Open/Escalated --(Keep, or keep-and-flag default)-->
//! Closed; --(Reduce, Revoke, or the revoke/freeze default)--> Applying --(result)--> Closed.

use crate::agent::{Agent, AgentChange, AgentFlag};
use crate::command::{Actor, AuditKind, Command, IdpCommand, SECURITY_CHANNEL, audit};
use crate::event::Event;
pub use crate::review::{
    ActionResult, Campaign, Evidence, LastReview, Resolution, ReviewAction, ReviewDecision,
    ReviewItem, ReviewNotice, ScopeEvidence, Unanswered,
};
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub const REMINDER_TIMER: &str = "review-reminder";
pub const ESCALATION_TIMER: &str = "review-escalation";
pub const DEADLINE_TIMER: &str = "review-deadline";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewItemInput {
    pub campaign: Campaign,
    pub agent: Agent,
    /// Recorded token-grant use of the agent's scopes.
    pub usage: Vec<(String, DateTime<Utc>)>,
    pub manager: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
#[allow(clippy::large_enum_variant)]
pub enum ReviewItemState {
    Open {
        item: ReviewItem,
    },
    Escalated {
        item: ReviewItem,
        at: DateTime<Utc>,
    },
    /// The decision's action is under way.
    Applying {
        item: ReviewItem,
        resolution: Resolution,
    },
    Closed {
        item: ReviewItem,
        resolution: Resolution,
    },
}

impl ReviewItemState {
    pub fn item(&self) -> &ReviewItem {
        match self {
            Self::Open { item }
            | Self::Escalated { item, .. }
            | Self::Applying { item, .. }
            | Self::Closed { item, .. } => item,
        }
    }

    pub fn resolution(&self) -> Option<&Resolution> {
        match self {
            Self::Applying { resolution, .. } | Self::Closed { resolution, .. } => Some(resolution),
            _ => None,
        }
    }
}

pub struct ReviewItemMachine;

/// Who may answer an item: its owner, a security approver, and after the escalation the
/// owner's manager. Returns the reviewer as the item names them.
pub fn check_reviewer(
    item: &ReviewItem,
    escalated: bool,
    by: &str,
    ctx: &Ctx,
) -> Result<String, Rejected> {
    let by = by.trim();
    if by.eq_ignore_ascii_case(&item.agent.owner) {
        return Ok(item.agent.owner.clone());
    }
    if let Some(a) = ctx
        .policy
        .approvers
        .iter()
        .find(|a| a.eq_ignore_ascii_case(by))
    {
        return Ok(a.clone());
    }
    if escalated
        && let Some(m) = item
            .escalate_to
            .as_ref()
            .filter(|m| m.eq_ignore_ascii_case(by))
    {
        return Ok(m.clone());
    }
    let manager = match (&item.escalate_to, escalated) {
        (Some(m), false) => format!("; the owner's manager {m} may answer once it is escalated"),
        (Some(m), true) => format!(", the owner's manager {m}"),
        (None, _) => String::new(),
    };
    Err(Rejected::new(
        "reviewer",
        format!(
            "{by} may not answer the review of {}: its owner {} or a security approver may{manager}",
            item.agent.name, item.agent.owner
        ),
    ))
}

/// Checks a Reduce: a non-empty set of the agent's own scopes, not all of them.
pub fn check_drop(agent: &Agent, drop: &[String]) -> Result<(), Rejected> {
    if drop.is_empty() {
        return Err(Rejected::new(
            "drop",
            "pick the scopes to drop (Reduce needs at least one)",
        ));
    }
    let unknown: Vec<&String> = drop.iter().filter(|s| !agent.scopes.contains(s)).collect();
    if !unknown.is_empty() {
        return Err(Rejected::new(
            "drop",
            format!(
                "{} does not hold {}",
                agent.name,
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if agent.scopes.iter().all(|s| drop.contains(s)) {
        return Err(Rejected::new(
            "drop",
            format!(
                "dropping every scope of {} leaves nothing: answer Revoke instead",
                agent.name
            ),
        ));
    }
    Ok(())
}

fn timers_off() -> Vec<Command> {
    [REMINDER_TIMER, ESCALATION_TIMER, DEADLINE_TIMER]
        .into_iter()
        .map(|n| Command::CancelTimer { name: n.into() })
        .collect()
}

/// The commands that close an item: timers off, the messages show the outcome, the agent
/// records its last review, and the audit says who decided what.
fn closing(item: &ReviewItem, resolution: &Resolution) -> Vec<Command> {
    let mut commands = timers_off();
    let by = resolution.by.clone().unwrap_or_else(|| "deadline".into());
    commands.push(Command::UpdateAgent {
        agent_id: item.agent.id.clone(),
        change: AgentChange::Reviewed {
            review: LastReview {
                campaign: item.campaign_id.clone(),
                decision: resolution.label(),
                by: by.clone(),
                at: resolution.at,
            },
        },
    });
    commands.push(Command::Review(ReviewNotice::Closed {
        item: item.clone(),
        resolution: resolution.clone(),
    }));
    commands
}

fn decision_audit(item: &ReviewItem, resolution: &Resolution) -> Command {
    let (kind, actor) = match &resolution.by {
        Some(p) => (AuditKind::ReviewDecided, Actor::Person(p.clone())),
        None => (
            AuditKind::ReviewDefaulted,
            Actor::Schedule(DEADLINE_TIMER.into()),
        ),
    };
    let why = resolution
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let dropped = if resolution.dropped.is_empty() {
        String::new()
    } else {
        format!(" (drop {})", resolution.dropped.join(", "))
    };
    let message = match &resolution.by {
        Some(p) => format!(
            "access review {} decision {} for {} by {p}{dropped}{why}",
            item.campaign_id,
            resolution.decision.to_uppercase(),
            item.agent.name
        ),
        None => format!(
            "access review {}: {} unanswered at the deadline; default {} applied",
            item.campaign_id,
            item.agent.name,
            resolution.default_applied.map(|d| d.as_str()).unwrap_or("")
        ),
    };
    audit(
        &item.agent,
        kind,
        actor,
        Some(&item.id),
        resolution.dropped.clone(),
        message,
    )
}

/// Closes an item whose action finished (or failed).
fn finish(item: &ReviewItem, resolution: &Resolution, action: ActionResult) -> Vec<Command> {
    let mut resolution = resolution.clone();
    let failed = !action.ok;
    let detail = action.detail.clone();
    resolution.action = Some(action);
    let mut commands = closing(item, &resolution);
    if failed {
        commands.push(Command::Notify {
            to: SECURITY_CHANNEL.into(),
            subject: format!("Access review action for {} failed", item.agent.name),
            body: format!(
                "The {} decision on {} in campaign {} could not be carried out: {detail}",
                resolution.label(),
                item.agent.name,
                item.campaign_id
            ),
        });
    }
    commands
}

impl ReviewItemMachine {
    /// Applies a person's decision, or refuses it.
    fn decide(
        item: &ReviewItem,
        escalated: bool,
        decision: ReviewDecision,
        by: &str,
        why: Option<String>,
        ctx: &Ctx,
    ) -> Result<Step<ReviewItemState>, Rejected> {
        if ctx.now > item.deadline {
            return Err(Rejected::new(
                "review",
                format!(
                    "the review of {} closed at {}; its default applies",
                    item.agent.name,
                    item.deadline.to_rfc3339()
                ),
            ));
        }
        let reviewer = check_reviewer(item, escalated, by, ctx)?;
        let dropped = match &decision {
            ReviewDecision::Reduce { drop } => {
                check_drop(&item.agent, drop)?;
                drop.clone()
            }
            _ => vec![],
        };
        let resolution = Resolution {
            decision: decision.as_str().into(),
            dropped,
            by: Some(reviewer.clone()),
            at: ctx.now,
            reason: why.filter(|r| !r.trim().is_empty()),
            default_applied: None,
            escalated,
            action: None,
        };
        let mut commands = vec![decision_audit(item, &resolution)];
        let action = match decision {
            ReviewDecision::Keep => {
                commands.extend(closing(item, &resolution));
                return Ok(Step {
                    commands,
                    state: ReviewItemState::Closed {
                        item: item.clone(),
                        resolution,
                    },
                });
            }
            ReviewDecision::Reduce { drop } => ReviewAction::Reduce { drop },
            ReviewDecision::Revoke => ReviewAction::Revoke,
        };
        commands.extend(timers_off());
        commands.push(Command::ApplyReview {
            agent_id: item.agent.id.clone(),
            campaign_id: item.campaign_id.clone(),
            action,
            decided_by: reviewer,
        });
        Ok(Step {
            commands,
            state: ReviewItemState::Applying {
                item: item.clone(),
                resolution,
            },
        })
    }

    /// The deadline passed unanswered: apply the campaign's default.
    fn deadline(
        item: &ReviewItem,
        escalated: bool,
        ctx: &Ctx,
    ) -> Result<Step<ReviewItemState>, Rejected> {
        if ctx.now < item.deadline {
            return Err(Rejected::new(
                "timer",
                format!(
                    "the review deadline is {}, not yet",
                    item.deadline.to_rfc3339()
                ),
            ));
        }
        let default = item.unanswered;
        let resolution = Resolution {
            decision: "unanswered".into(),
            dropped: vec![],
            by: None,
            at: ctx.now,
            reason: Some(format!(
                "no answer by the deadline {}",
                item.deadline.to_rfc3339()
            )),
            default_applied: Some(default),
            escalated,
            action: None,
        };
        let mut commands = vec![decision_audit(item, &resolution)];
        match default {
            Unanswered::KeepAndFlag => {
                commands.push(Command::UpdateAgent {
                    agent_id: item.agent.id.clone(),
                    change: AgentChange::Flag {
                        flag: AgentFlag::ReviewUnanswered {
                            campaign: item.campaign_id.clone(),
                            at: ctx.now,
                        },
                    },
                });
                commands.push(Command::Notify {
                    to: SECURITY_CHANNEL.into(),
                    subject: format!("Unanswered access review: {}", item.agent.name),
                    body: format!(
                        "Nobody answered the review of {} (owner {}) in campaign {}. It is kept and flagged; decide in the next review or decommission it.",
                        item.agent.name, item.agent.owner, item.campaign_id
                    ),
                });
                let action = ActionResult {
                    kind: "flag".into(),
                    workflow_id: None,
                    ok: true,
                    detail: "kept and flagged; the security channel was told".into(),
                };
                let mut resolution = resolution;
                resolution.action = Some(action);
                commands.extend(closing(item, &resolution));
                Ok(Step {
                    commands,
                    state: ReviewItemState::Closed {
                        item: item.clone(),
                        resolution,
                    },
                })
            }
            Unanswered::Revoke => {
                commands.extend(timers_off());
                commands.push(Command::ApplyReview {
                    agent_id: item.agent.id.clone(),
                    campaign_id: item.campaign_id.clone(),
                    action: ReviewAction::Revoke,
                    decided_by: format!("deadline of {}", item.campaign_id),
                });
                Ok(Step {
                    commands,
                    state: ReviewItemState::Applying {
                        item: item.clone(),
                        resolution,
                    },
                })
            }
            Unanswered::Freeze => match &item.agent.client_id {
                Some(client_id) => {
                    commands.extend(timers_off());
                    commands.push(Command::Supersede {
                        agent_id: item.agent.id.clone(),
                        reason: format!("frozen: review {} unanswered", item.campaign_id),
                        ending: false,
                    });
                    commands.push(Command::Idp(IdpCommand::DeactivateClient {
                        client_id: client_id.clone(),
                    }));
                    Ok(Step {
                        commands,
                        state: ReviewItemState::Applying {
                            item: item.clone(),
                            resolution,
                        },
                    })
                }
                None => {
                    let action = ActionResult {
                        kind: "freeze".into(),
                        workflow_id: None,
                        ok: false,
                        detail: "the agent has no client at the identity provider".into(),
                    };
                    commands.extend(finish(item, &resolution, action.clone()));
                    let mut resolution = resolution;
                    resolution.action = Some(action);
                    Ok(Step {
                        commands,
                        state: ReviewItemState::Closed {
                            item: item.clone(),
                            resolution,
                        },
                    })
                }
            },
        }
    }
}

fn action_kind(resolution: &Resolution) -> &'static str {
    match (resolution.default_applied, resolution.decision.as_str()) {
        (Some(Unanswered::Freeze), _) => "freeze",
        (Some(Unanswered::KeepAndFlag), _) => "flag",
        (_, "reduce") => "scope_change",
        _ => "decommission",
    }
}

states! {
    ReviewItemState {
        Open,
        Escalated,
        Applying,
        Closed: terminal,
    }
}

impl Workflow for ReviewItemMachine {
    type State = ReviewItemState;
    type Input = ReviewItemInput;
    const KIND: &'static str = "review_item";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "Open"),
        t("Open", "TimerFired", "Open"),
        t("Open", "TimerFired", "Escalated"),
        t("Open", "TimerFired", "Closed"),
        t("Open", "TimerFired", "Applying"),
        t("Open", "ReviewDecided", "Closed"),
        t("Open", "ReviewDecided", "Applying"),
        t("Escalated", "TimerFired", "Escalated"),
        t("Escalated", "TimerFired", "Closed"),
        t("Escalated", "TimerFired", "Applying"),
        t("Escalated", "ReviewDecided", "Closed"),
        t("Escalated", "ReviewDecided", "Applying"),
        t("Applying", "ReviewActionTaken", "Closed"),
        t("Applying", "ClientDeactivated", "Closed"),
        t("Applying", "CommandFailed", "Closed"),
    ];

    fn start(input: ReviewItemInput, ctx: &Ctx) -> Result<Step<ReviewItemState>, Rejected> {
        let ReviewItemInput {
            campaign,
            agent,
            usage,
            manager,
        } = input;
        if !campaign.scope.covers(&agent, ctx.policy) {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} ({}) is not in the campaign's scope ({})",
                    agent.name,
                    agent.status.as_str(),
                    campaign.scope.describe()
                ),
            ));
        }
        if campaign.deadline <= ctx.now {
            return Err(Rejected::new(
                "campaign",
                format!(
                    "campaign {} closed at {}; no new review items",
                    campaign.id,
                    campaign.deadline.to_rfc3339()
                ),
            ));
        }
        let r = &ctx.policy.reviews;
        let before = |secs: u64| {
            let at = campaign.deadline - Duration::seconds(secs as i64);
            (secs > 0 && at > ctx.now).then_some(at)
        };
        let item = ReviewItem {
            id: ctx.workflow_id.to_string(),
            campaign_id: campaign.id.clone(),
            campaign_name: campaign.name.clone(),
            evidence: Evidence::build(&agent, &usage, ctx.now, ctx),
            escalate_to: manager.filter(|m| !m.eq_ignore_ascii_case(&agent.owner)),
            sent_at: ctx.now,
            deadline: campaign.deadline,
            remind_at: before(r.remind_before_secs),
            escalate_at: before(r.escalate_before_secs),
            unanswered: campaign.unanswered,
            agent,
        };
        let mut commands: Vec<Command> = [
            (REMINDER_TIMER, item.remind_at),
            (ESCALATION_TIMER, item.escalate_at),
            (DEADLINE_TIMER, Some(item.deadline)),
        ]
        .into_iter()
        .filter_map(|(name, at)| {
            at.map(|at| Command::SetTimer {
                name: name.into(),
                at,
            })
        })
        .collect();
        commands.push(Command::Review(ReviewNotice::Ask { item: item.clone() }));
        commands.push(audit(
            &item.agent,
            AuditKind::ReviewRequested,
            campaign.started_by.clone(),
            Some(&item.id),
            item.agent.scopes.clone(),
            format!(
                "access review {}: {} sent to its owner {}, due {}",
                campaign.id,
                item.agent.name,
                item.agent.owner,
                item.deadline.to_rfc3339()
            ),
        ));
        Ok(Step {
            commands,
            state: ReviewItemState::Open { item },
        })
    }

    fn on(
        state: &ReviewItemState,
        event: Event,
        ctx: &Ctx,
    ) -> Result<Step<ReviewItemState>, Rejected> {
        use ReviewItemState as S;
        match (state, event) {
            (
                S::Open { item },
                Event::ReviewDecided {
                    decision,
                    by,
                    reason,
                },
            ) => Self::decide(item, false, decision, &by, reason, ctx),
            (
                S::Escalated { item, .. },
                Event::ReviewDecided {
                    decision,
                    by,
                    reason,
                },
            ) => Self::decide(item, true, decision, &by, reason, ctx),
            (S::Open { item }, Event::TimerFired { name }) if name == REMINDER_TIMER => {
                if item.remind_at.is_none_or(|at| ctx.now < at) {
                    return Err(Rejected::new("timer", "no reminder is due now"));
                }
                Ok(Step {
                    commands: vec![
                        Command::Review(ReviewNotice::Remind { item: item.clone() }),
                        audit(
                            &item.agent,
                            AuditKind::ReviewReminded,
                            Actor::Schedule(REMINDER_TIMER.into()),
                            Some(&item.id),
                            vec![],
                            format!(
                                "access review {}: {} reminded about {}",
                                item.campaign_id, item.agent.owner, item.agent.name
                            ),
                        ),
                    ],
                    state: S::Open { item: item.clone() },
                })
            }
            (S::Escalated { item, at }, Event::TimerFired { name }) if name == REMINDER_TIMER => {
                Ok(Step {
                    commands: vec![Command::Review(ReviewNotice::Remind { item: item.clone() })],
                    state: S::Escalated {
                        item: item.clone(),
                        at: *at,
                    },
                })
            }
            (S::Open { item }, Event::TimerFired { name }) if name == ESCALATION_TIMER => {
                if item.escalate_at.is_none_or(|at| ctx.now < at) {
                    return Err(Rejected::new("timer", "no escalation is due now"));
                }
                let to = item
                    .escalate_to
                    .clone()
                    .unwrap_or_else(|| "the security channel".into());
                Ok(Step {
                    commands: vec![
                        Command::Review(ReviewNotice::Escalate { item: item.clone() }),
                        audit(
                            &item.agent,
                            AuditKind::ReviewEscalated,
                            Actor::Schedule(ESCALATION_TIMER.into()),
                            Some(&item.id),
                            vec![],
                            format!(
                                "access review {}: {} unanswered by {}; escalated to {to}",
                                item.campaign_id, item.agent.name, item.agent.owner
                            ),
                        ),
                    ],
                    state: S::Escalated {
                        item: item.clone(),
                        at: ctx.now,
                    },
                })
            }
            (S::Open { item }, Event::TimerFired { name }) if name == DEADLINE_TIMER => {
                Self::deadline(item, false, ctx)
            }
            (S::Escalated { item, .. }, Event::TimerFired { name }) if name == DEADLINE_TIMER => {
                Self::deadline(item, true, ctx)
            }
            (
                S::Applying { item, resolution },
                Event::ReviewActionTaken {
                    workflow_id,
                    ok,
                    detail,
                },
            ) if resolution.default_applied != Some(Unanswered::Freeze) => {
                let action = ActionResult {
                    kind: action_kind(resolution).into(),
                    workflow_id,
                    ok,
                    detail,
                };
                let mut done = resolution.clone();
                done.action = Some(action.clone());
                Ok(Step {
                    commands: finish(item, resolution, action),
                    state: S::Closed {
                        item: item.clone(),
                        resolution: done,
                    },
                })
            }
            (S::Applying { item, resolution }, Event::ClientDeactivated { client_id })
                if resolution.default_applied == Some(Unanswered::Freeze)
                    && item.agent.client_id.as_deref() == Some(client_id.as_str()) =>
            {
                let action = ActionResult {
                    kind: "freeze".into(),
                    workflow_id: None,
                    ok: true,
                    detail: format!(
                        "client {client_id} deactivated: no new tokens; issued tokens expire within {} s",
                        item.agent.token_lifetime_secs
                    ),
                };
                let mut done = resolution.clone();
                done.action = Some(action.clone());
                let mut commands = vec![
                    Command::UpdateAgent {
                        agent_id: item.agent.id.clone(),
                        change: AgentChange::Frozen {
                            reason: format!("access review {} unanswered", item.campaign_id),
                        },
                    },
                    audit(
                        &item.agent,
                        AuditKind::AgentFrozen,
                        Actor::Schedule(DEADLINE_TIMER.into()),
                        Some(&item.id),
                        vec![],
                        format!(
                            "{} frozen: access review {} unanswered; client {client_id} deactivated",
                            item.agent.name, item.campaign_id
                        ),
                    ),
                    Command::Notify {
                        to: item.agent.owner.clone(),
                        subject: format!("{} is frozen", item.agent.name),
                        body: format!(
                            "Nobody answered the access review of {} in campaign {} by its deadline, so it was frozen: it gets no new tokens. Ask the security team to unfreeze or decommission it.",
                            item.agent.name, item.campaign_id
                        ),
                    },
                ];
                commands.extend(finish(item, resolution, action));
                Ok(Step {
                    commands,
                    state: S::Closed {
                        item: item.clone(),
                        resolution: done,
                    },
                })
            }
            (
                S::Applying { item, resolution },
                Event::CommandFailed {
                    command, reason, ..
                },
            ) if command == "workflow.apply_review" || command == "idp.deactivate_client" => {
                let action = ActionResult {
                    kind: action_kind(resolution).into(),
                    workflow_id: None,
                    ok: false,
                    detail: reason,
                };
                let mut done = resolution.clone();
                done.action = Some(action.clone());
                Ok(Step {
                    commands: finish(item, resolution, action),
                    state: S::Closed {
                        item: item.clone(),
                        resolution: done,
                    },
                })
            }
            (S::Applying { item, .. } | S::Closed { item, .. }, Event::ReviewDecided { .. }) => {
                Err(Rejected::new(
                    "review",
                    format!(
                        "the review of {} in campaign {} is decided already",
                        item.agent.name, item.campaign_id
                    ),
                ))
            }
            (s, e) => Err(not_applicable(Self::KIND, Self::state_name(s), &e)),
        }
    }
}
