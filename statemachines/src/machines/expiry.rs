//! Time-bound agents: an agent whose manifest carries `expires_on` is reminded to its owner
//! before the date; a renewal is an approval by security; without one the agent is
//! decommissioned the day after its expiry date.
//!
//! Counting --(reminder timer)--> Counting --(renewal requested)--> AwaitingRenewal
//! --(approved)--> Counting (new date) ... --(deadline timer)--> Ended (decommission started).

use crate::agent::{Agent, AgentChange};
use crate::approval::{ApprovalRequest, Ask, Ballot, Deadline, Decision};
use crate::command::{Actor, AuditKind, Command, audit};
use crate::event::Event;
use crate::lifecycle::{DecommissionReason, expiry_deadline};
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub const REMINDER_TIMER: &str = "expiry-reminder";
pub const DEADLINE_TIMER: &str = "expiry-deadline";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryInput {
    pub agent: Agent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
#[allow(clippy::large_enum_variant)]
pub enum ExpiryState {
    Counting {
        agent: Agent,
        expires_on: NaiveDate,
        reminded: bool,
    },
    AwaitingRenewal {
        agent: Agent,
        expires_on: NaiveDate,
        until: NaiveDate,
        approval: ApprovalRequest,
        /// Whether the owner was reminded of `expires_on` already.
        #[serde(default)]
        reminded: bool,
    },
    /// The deadline passed: the decommission was started.
    Ended { agent: Agent, expires_on: NaiveDate },
}

pub struct Expiry;

states! {
    ExpiryState {
        Counting,
        AwaitingRenewal,
        Ended: terminal,
    }
}

impl Workflow for Expiry {
    type State = ExpiryState;
    type Input = ExpiryInput;
    const KIND: &'static str = "expiry";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "Counting"),
        t("Counting", "TimerFired", "Counting"),
        t("Counting", "TimerFired", "Ended"),
        t("Counting", "RenewalRequested", "AwaitingRenewal"),
        t("AwaitingRenewal", "ApprovalDecided(approve)", "Counting"),
        t("AwaitingRenewal", "ApprovalDecided(deny)", "Counting"),
        t("AwaitingRenewal", "TimerFired", "AwaitingRenewal"),
        t("AwaitingRenewal", "TimerFired", "Counting"),
        t("AwaitingRenewal", "TimerFired", "Ended"),
    ];

    fn start(input: ExpiryInput, ctx: &Ctx) -> Result<Step<ExpiryState>, Rejected> {
        let agent = input.agent;
        if agent.status != crate::agent::AgentStatus::Active {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} is {}; only active agents are watched for expiry",
                    agent.name,
                    agent.status.as_str()
                ),
            ));
        }
        let Some(expires_on) = agent.expires_on else {
            return Err(Rejected::new(
                "expires_on",
                format!("{} has no expiry date", agent.name),
            ));
        };
        let (commands, reminded) = arm(&agent, expires_on, ctx);
        Ok(Step {
            commands,
            state: ExpiryState::Counting {
                agent,
                expires_on,
                reminded,
            },
        })
    }

    fn on(state: &ExpiryState, event: Event, ctx: &Ctx) -> Result<Step<ExpiryState>, Rejected> {
        use ExpiryState as S;
        // One handler per state; a state without one refuses every event.
        match state {
            S::Counting { .. } => on_counting(state, event, ctx),
            S::AwaitingRenewal { .. } => on_awaiting_renewal(state, event, ctx),
            _ => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}

/// Events in Counting.
fn on_counting(
    state: &ExpiryState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<ExpiryState>, Rejected> {
    use ExpiryState as S;
    match (state, event) {
        (
            S::Counting {
                agent,
                expires_on,
                reminded,
            },
            Event::TimerFired { name },
        ) if name == REMINDER_TIMER => {
            if *reminded {
                return Err(Rejected::new("timer", "the owner was reminded already"));
            }
            let remind_at = expiry_deadline(*expires_on)
                - Duration::seconds(ctx.policy.lifecycle.expiry_reminder_secs as i64);
            if ctx.now < remind_at {
                return Err(Rejected::new(
                    "timer",
                    format!(
                        "the reminder fired before its time {}",
                        remind_at.to_rfc3339()
                    ),
                ));
            }
            Ok(Step {
                commands: remind(agent, *expires_on),
                state: S::Counting {
                    agent: agent.clone(),
                    expires_on: *expires_on,
                    reminded: true,
                },
            })
        }
        (
            S::Counting {
                agent, expires_on, ..
            },
            Event::TimerFired { name },
        ) if name == DEADLINE_TIMER => deadline(agent, *expires_on, ctx, vec![]),
        (
            S::Counting {
                agent,
                expires_on,
                reminded,
            },
            Event::RenewalRequested { until, by, reason },
        ) => {
            if until <= *expires_on {
                return Err(Rejected::new(
                    "until",
                    format!(
                        "a renewal must move the expiry date {expires_on} later; {until} does not"
                    ),
                ));
            }
            let mut reasons = Vec::new();
            if !by.eq_ignore_ascii_case(&agent.owner)
                && !ctx
                    .policy
                    .approvers
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&by))
            {
                reasons.push(crate::policy::reason(
                    "by",
                    format!(
                        "{by} is neither the owner of {} nor a security approver",
                        agent.name
                    ),
                ));
            }
            if reason.trim().is_empty() {
                reasons.push(crate::policy::reason(
                    "reason",
                    "say why the agent is still needed",
                ));
            }
            Rejected::from_reasons(reasons)?;
            let approval = ApprovalRequest::open(
                ctx,
                agent,
                &by,
                Ask {
                    action: "renew",
                    scopes_added: vec![],
                    scopes_removed: vec![],
                    sensitive_scopes: vec![],
                    token_lifetime_secs: agent.token_lifetime_secs,
                    justification: format!("keep until {until} (expires {expires_on}): {reason}"),
                },
            );
            approval.check_quorum_reachable()?;
            let mut commands = vec![audit(
                agent,
                AuditKind::RenewalRequested,
                Actor::Person(by.clone()),
                Some(&approval.id),
                vec![],
                format!("{by} asked to keep {} until {until}: {reason}", agent.name),
            )];
            commands.extend(approval.opening_commands(agent));
            Ok(Step {
                commands,
                state: S::AwaitingRenewal {
                    agent: agent.clone(),
                    expires_on: *expires_on,
                    until,
                    approval,
                    reminded: *reminded,
                },
            })
        }
        (state, event) => Err(not_applicable(
            Expiry::KIND,
            Expiry::state_name(state),
            &event,
        )),
    }
}

/// Events in AwaitingRenewal.
fn on_awaiting_renewal(
    state: &ExpiryState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<ExpiryState>, Rejected> {
    use ExpiryState as S;
    match (state, event) {
        (
            S::AwaitingRenewal {
                agent,
                expires_on,
                until,
                approval,
                reminded,
            },
            Event::ApprovalDecided {
                approval_id,
                decision,
                approver,
                reason,
            },
        ) => match approval.ballot(agent, &approval_id, decision, &approver, reason, ctx.now)? {
            Ballot::Pending { approval, commands } => Ok(Step {
                commands,
                state: S::AwaitingRenewal {
                    agent: agent.clone(),
                    expires_on: *expires_on,
                    until: *until,
                    approval,
                    reminded: *reminded,
                },
            }),
            Ballot::Decided {
                decision: Decision::Approve,
                approver,
                mut commands,
                ..
            } => {
                let mut agent = agent.clone();
                agent.expires_on = Some(*until);
                commands.extend([
                    Command::UpdateAgent {
                        agent_id: agent.id.clone(),
                        change: AgentChange::ExpiresOn { date: *until },
                    },
                    audit(
                        &agent,
                        AuditKind::Renewed,
                        Actor::Person(approver),
                        Some(&approval.id),
                        vec![],
                        format!("{} renewed until {until} (was {expires_on})", agent.name),
                    ),
                ]);
                let (arming, reminded) = arm(&agent, *until, ctx);
                commands.extend(arming);
                Ok(Step {
                    commands,
                    state: S::Counting {
                        agent,
                        expires_on: *until,
                        reminded,
                    },
                })
            }
            Ballot::Decided { commands, .. } => Ok(Step {
                commands,
                state: S::Counting {
                    agent: agent.clone(),
                    expires_on: *expires_on,
                    reminded: true,
                },
            }),
        },
        (
            S::AwaitingRenewal {
                agent,
                expires_on,
                approval,
                ..
            },
            Event::TimerFired { name },
        ) if name == DEADLINE_TIMER => {
            // The expiry date came before anyone decided the renewal: no renewal.
            deadline(
                agent,
                *expires_on,
                ctx,
                approval.cancelled_commands(ctx.now),
            )
        }
        (
            S::AwaitingRenewal {
                agent,
                expires_on,
                until,
                approval,
                reminded: false,
            },
            Event::TimerFired { name },
        ) if name == REMINDER_TIMER => Ok(Step {
            // The renewal may still be denied: the owner hears of the date either way.
            commands: remind(agent, *expires_on),
            state: S::AwaitingRenewal {
                agent: agent.clone(),
                expires_on: *expires_on,
                until: *until,
                approval: approval.clone(),
                reminded: true,
            },
        }),
        (
            S::AwaitingRenewal {
                agent,
                expires_on,
                approval,
                reminded,
                ..
            },
            Event::TimerFired { name },
        ) if ApprovalRequest::is_timer(&name) => {
            match approval.deadline(agent, &name, ctx.now, "the expiry date stays")? {
                Deadline::Reminded(commands) => Ok(Step {
                    commands,
                    state: state.clone(),
                }),
                Deadline::Expired(commands) => Ok(Step {
                    commands,
                    state: S::Counting {
                        agent: agent.clone(),
                        expires_on: *expires_on,
                        reminded: *reminded,
                    },
                }),
            }
        }
        (state, event) => Err(not_applicable(
            Expiry::KIND,
            Expiry::state_name(state),
            &event,
        )),
    }
}

/// Arms the reminder (unless its time has passed: then the owner is reminded now) and the
/// deadline for `expires_on`.
fn arm(agent: &Agent, expires_on: NaiveDate, ctx: &Ctx) -> (Vec<Command>, bool) {
    let deadline_at = expiry_deadline(expires_on);
    let remind_at =
        deadline_at - Duration::seconds(ctx.policy.lifecycle.expiry_reminder_secs as i64);
    let mut commands = vec![Command::SetTimer {
        name: DEADLINE_TIMER.into(),
        at: deadline_at,
    }];
    if remind_at <= ctx.now {
        commands.push(Command::CancelTimer {
            name: REMINDER_TIMER.into(),
        });
        commands.extend(remind(agent, expires_on));
        (commands, true)
    } else {
        commands.push(Command::SetTimer {
            name: REMINDER_TIMER.into(),
            at: remind_at,
        });
        (commands, false)
    }
}

fn remind(agent: &Agent, expires_on: NaiveDate) -> Vec<Command> {
    let deadline_at: DateTime<Utc> = expiry_deadline(expires_on);
    vec![
        Command::Notify {
            to: agent.owner.clone(),
            subject: format!("{} expires on {expires_on}", agent.name),
            body: format!(
                "Agent {} ({}) expires on {expires_on}. It is decommissioned at {} unless renewed: `steward agents renew {} --until <date> --reason <why>` (a security approver decides).",
                agent.name,
                agent.environment,
                deadline_at.format("%Y-%m-%d %H:%M UTC"),
                agent.name
            ),
        },
        audit(
            agent,
            AuditKind::ExpiryReminded,
            Actor::Schedule(REMINDER_TIMER.into()),
            None,
            vec![],
            format!(
                "owner {} reminded that {} expires on {expires_on}",
                agent.owner, agent.name
            ),
        ),
    ]
}

fn deadline(
    agent: &Agent,
    expires_on: NaiveDate,
    ctx: &Ctx,
    mut commands: Vec<Command>,
) -> Result<Step<ExpiryState>, Rejected> {
    if ctx.now < expiry_deadline(expires_on) {
        return Err(Rejected::new(
            "timer",
            format!("the deadline timer fired before {expires_on} ended"),
        ));
    }
    commands.extend([
        Command::CancelTimer {
            name: REMINDER_TIMER.into(),
        },
        Command::StartDecommission {
            agent_id: agent.id.clone(),
            reason: DecommissionReason::Expired { expires_on },
        },
    ]);
    Ok(Step {
        commands,
        state: ExpiryState::Ended {
            agent: agent.clone(),
            expires_on,
        },
    })
}
