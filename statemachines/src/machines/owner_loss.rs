//! Owner loss: an agent whose owner left (deactivated) or was suspended is flagged, and the
//! owner's manager and the security channel are asked to assign a new owner. Nobody by the
//! policy's deadline → a freeze is requested (the freeze itself comes with anomaly detection;
//! until then the request is recorded on the agent and in the audit trail).

use crate::agent::{Agent, AgentFlag};
pub use crate::command::SECURITY_CHANNEL;
use crate::command::{Actor, AuditKind, Command, audit};
use crate::event::Event;
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The timer that ends the wait for a new owner.
pub const OWNER_DEADLINE_TIMER: &str = "owner-deadline";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLossInput {
    /// The agent as the registry holds it now.
    pub agent: Agent,
    /// What happened to the owner, in words (`deactivated`, `suspended`).
    pub change: String,
    /// The owner's manager, when the directory knows one.
    pub manager: Option<String>,
    /// The identity-provider event that reported it.
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum OwnerLossState {
    AwaitingOwner {
        agent: Agent,
        lost_owner: String,
        asked: Vec<String>,
        deadline: DateTime<Utc>,
    },
    Reassigned {
        agent: Agent,
        lost_owner: String,
        by: String,
    },
    FreezeRequested {
        agent: Agent,
        lost_owner: String,
    },
}

pub struct OwnerLoss;

states! {
    OwnerLossState {
        AwaitingOwner,
        Reassigned: terminal,
        FreezeRequested: terminal,
    }
}

impl Workflow for OwnerLoss {
    type State = OwnerLossState;
    type Input = OwnerLossInput;
    const KIND: &'static str = "owner_loss";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "AwaitingOwner"),
        t("AwaitingOwner", "OwnerAssigned", "Reassigned"),
        t("AwaitingOwner", "TimerFired", "FreezeRequested"),
    ];

    fn start(input: OwnerLossInput, ctx: &Ctx) -> Result<Step<OwnerLossState>, Rejected> {
        let OwnerLossInput {
            mut agent,
            change,
            manager,
            event_id,
        } = input;
        let lost_owner = agent.owner.clone();
        let deadline = ctx.now + chrono::Duration::seconds(ctx.policy.owner_reassign_secs as i64);
        agent
            .flags
            .retain(|f| !matches!(f, AgentFlag::OwnerLost { .. }));
        agent.flags.push(AgentFlag::OwnerLost {
            owner: lost_owner.clone(),
            since: ctx.now,
        });
        agent.updated_at = ctx.now;
        let asked: Vec<String> = manager
            .into_iter()
            .chain([SECURITY_CHANNEL.to_string()])
            .collect();
        let mut commands = vec![
            Command::SaveAgent(Box::new(agent.clone())),
            audit(
                &agent,
                AuditKind::OwnerLost,
                Actor::IdpEvent(event_id),
                None,
                vec![],
                format!(
                    "owner {lost_owner} of {} was {change}; a new owner is needed by {}",
                    agent.name,
                    deadline.to_rfc3339()
                ),
            ),
            Command::SetTimer {
                name: OWNER_DEADLINE_TIMER.into(),
                at: deadline,
            },
        ];
        commands.extend(asked.iter().map(|to| Command::Notify {
            to: to.clone(),
            subject: format!("{} needs a new owner", agent.name),
            body: format!(
                "{lost_owner}, the owner of agent {} ({}, scopes {}), was {change}. Assign an active person as its owner before {} with `steward agents reassign {} --owner <email>`; otherwise a freeze of the agent is requested.",
                agent.name,
                agent.environment,
                agent.scopes.join(", "),
                deadline.format("%Y-%m-%d %H:%M UTC"),
                agent.name
            ),
        }));
        Ok(Step {
            commands,
            state: OwnerLossState::AwaitingOwner {
                agent,
                lost_owner,
                asked,
                deadline,
            },
        })
    }

    fn on(
        state: &OwnerLossState,
        event: Event,
        ctx: &Ctx,
    ) -> Result<Step<OwnerLossState>, Rejected> {
        use OwnerLossState as S;
        match (state, event) {
            (
                S::AwaitingOwner {
                    agent, lost_owner, ..
                },
                Event::OwnerAssigned { owner, by },
            ) => {
                if owner.eq_ignore_ascii_case(lost_owner) {
                    return Err(Rejected::new(
                        "owner",
                        format!("{owner} is the owner who was lost; choose an active person"),
                    ));
                }
                let mut agent = agent.clone();
                agent.owner = owner.clone();
                agent
                    .flags
                    .retain(|f| !matches!(f, AgentFlag::OwnerLost { .. }));
                agent.updated_at = ctx.now;
                let commands = vec![
                    Command::SaveAgent(Box::new(agent.clone())),
                    Command::CancelTimer {
                        name: OWNER_DEADLINE_TIMER.into(),
                    },
                    audit(
                        &agent,
                        AuditKind::OwnerReassigned,
                        Actor::Person(by.clone()),
                        None,
                        vec![],
                        format!(
                            "{by} made {owner} the owner of {} (was {lost_owner})",
                            agent.name
                        ),
                    ),
                    Command::Notify {
                        to: owner.clone(),
                        subject: format!("You now own {}", agent.name),
                        body: format!(
                            "{by} made you the owner of agent {} ({}, scopes {}), previously owned by {lost_owner}. You will be asked to approve its sensitive changes and to review its access.",
                            agent.name,
                            agent.environment,
                            agent.scopes.join(", ")
                        ),
                    },
                ];
                Ok(Step {
                    commands,
                    state: S::Reassigned {
                        agent,
                        lost_owner: lost_owner.clone(),
                        by,
                    },
                })
            }
            (
                S::AwaitingOwner {
                    agent,
                    lost_owner,
                    deadline,
                    ..
                },
                Event::TimerFired { name },
            ) if name == OWNER_DEADLINE_TIMER && ctx.now >= *deadline => {
                let mut agent = agent.clone();
                let reason = format!(
                    "no new owner was assigned after {lost_owner} left, by {}",
                    deadline.to_rfc3339()
                );
                agent.flags.push(AgentFlag::FreezeRequested {
                    reason: reason.clone(),
                    at: ctx.now,
                });
                agent.updated_at = ctx.now;
                let commands = vec![
                    Command::SaveAgent(Box::new(agent.clone())),
                    audit(
                        &agent,
                        AuditKind::FreezeRequested,
                        Actor::Schedule(name),
                        None,
                        vec![],
                        format!("freeze of {} requested: {reason}", agent.name),
                    ),
                    Command::Notify {
                        to: SECURITY_CHANNEL.into(),
                        subject: format!("Freeze requested for {}", agent.name),
                        body: format!(
                            "{reason}. The agent keeps its access until it is frozen or reassigned."
                        ),
                    },
                ];
                Ok(Step {
                    commands,
                    state: S::FreezeRequested {
                        agent,
                        lost_owner: lost_owner.clone(),
                    },
                })
            }
            (state, event) => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}
