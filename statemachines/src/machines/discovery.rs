//! Shadow agents: clients found at the identity provider that nobody registered.
//!
//! A found client becomes an *unregistered* agent. Its creator (from the IdP's log) or the
//! security channel is asked to claim it (the engine starts its onboarding with a real owner,
//! taking over the existing client) or to let it go. Let go, or unclaimed when the grace period
//! ends, it is frozen (client deactivated) and handed to the decommission workflow.
//!
//! Unclaimed --(ShadowClaimed)--> Claimed; --(ShadowReleased | grace timer)--> Releasing
//! --(ClientDeactivated)--> Released.

use crate::agent::{Agent, AgentChange};
use crate::command::{
    Actor, AuditKind, Command, IdpCommand, SECURITY_CHANNEL, audit, audit_failure,
};
use crate::event::Event;
use crate::lifecycle::DecommissionReason;
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub const GRACE_TIMER: &str = "claim-grace";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowInput {
    /// The unregistered agent record (status `unregistered`, the client's id, name and scopes).
    pub agent: Agent,
    /// Who created the client, when the IdP's log says.
    pub creator: Option<String>,
    /// The sweep or the IdP event that found it.
    pub found_by: Actor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
#[allow(clippy::large_enum_variant)] // states are stored as JSON
pub enum ShadowState {
    Unclaimed {
        agent: Agent,
        creator: Option<String>,
        grace_ends: DateTime<Utc>,
    },
    Claimed {
        agent: Agent,
        by: String,
        owner: String,
        onboarding: String,
    },
    Releasing {
        agent: Agent,
        why: String,
    },
    Released {
        agent: Agent,
        why: String,
    },
    Failed {
        agent: Agent,
        reason: String,
    },
}

pub struct ShadowAgent;

fn client(agent: &Agent) -> String {
    agent.client_id.clone().unwrap_or_default()
}

fn release(agent: &Agent, why: String, by: Actor) -> Step<ShadowState> {
    Step {
        commands: vec![
            Command::CancelTimer {
                name: GRACE_TIMER.into(),
            },
            Command::Idp(IdpCommand::DeactivateClient {
                client_id: client(agent),
            }),
            Command::UpdateAgent {
                agent_id: agent.id.clone(),
                change: AgentChange::Frozen {
                    reason: why.clone(),
                },
            },
            audit(
                agent,
                AuditKind::ShadowAgentReleased,
                by,
                None,
                agent.scopes.clone(),
                format!(
                    "shadow agent {} (client {}) {why}: freezing it, then decommission",
                    agent.name,
                    client(agent)
                ),
            ),
        ],
        state: ShadowState::Releasing {
            agent: agent.clone(),
            why,
        },
    }
}

states! {
    ShadowState {
        Unclaimed,
        Claimed: terminal,
        Releasing,
        Released: terminal,
        Failed: terminal,
    }
}

impl Workflow for ShadowAgent {
    type State = ShadowState;
    type Input = ShadowInput;
    const KIND: &'static str = "shadow_agent";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "Unclaimed"),
        t("Unclaimed", "ShadowClaimed", "Claimed"),
        t("Unclaimed", "ShadowReleased", "Releasing"),
        t("Unclaimed", "TimerFired", "Releasing"),
        t("Releasing", "ClientDeactivated", "Released"),
        t("Releasing", "CommandFailed", "Failed"),
    ];

    fn start(input: ShadowInput, ctx: &Ctx) -> Result<Step<ShadowState>, Rejected> {
        let ShadowInput {
            agent,
            creator,
            found_by,
        } = input;
        if agent.status != crate::agent::AgentStatus::Unregistered {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} is {}; only an unregistered client is a shadow agent",
                    agent.name,
                    agent.status.as_str()
                ),
            ));
        }
        let Some(client_id) = agent.client_id.clone() else {
            return Err(Rejected::new(
                "client_id",
                "a shadow agent is a client found at the identity provider; it needs its client id",
            ));
        };
        let grace_ends = ctx.now + Duration::seconds(ctx.policy.discovery.grace_secs as i64);
        let body = format!(
            "Client `{}` ({client_id}) exists at the identity provider but is not registered with Steward: no owner, no rotation, no review.\n\
             Scopes: {}. Created: {}{}.\n\
             Claim it (it is onboarded with you or the owner you name, and Steward takes over its credential): \
             `steward shadow claim {client_id} --owner <email> --team <team> --environment <env> --purpose \"<what it does>\"`.\n\
             Let it go: `steward shadow release {client_id}`.\n\
             Unclaimed after {}, it is frozen and decommissioned.",
            agent.name,
            if agent.scopes.is_empty() {
                "none".to_string()
            } else {
                agent.scopes.join(" ")
            },
            agent.created_at.format("%Y-%m-%d %H:%M UTC"),
            creator
                .as_deref()
                .map(|c| format!(" by {c}"))
                .unwrap_or_default(),
            grace_ends.format("%Y-%m-%d %H:%M UTC"),
        );
        let subject = format!("Unregistered agent found: {}", agent.name);
        let mut commands = vec![
            Command::SaveAgent(Box::new(agent.clone())),
            audit(
                &agent,
                AuditKind::ShadowAgentFound,
                found_by,
                None,
                agent.scopes.clone(),
                format!(
                    "client {client_id} ({}) found at the identity provider, not in the registry{}; asked {}the security channel to claim it",
                    agent.name,
                    creator
                        .as_deref()
                        .map(|c| format!(", created by {c}"))
                        .unwrap_or_default(),
                    creator
                        .as_deref()
                        .map(|c| format!("{c} and "))
                        .unwrap_or_default()
                ),
            ),
            Command::SetTimer {
                name: GRACE_TIMER.into(),
                at: grace_ends,
            },
        ];
        for to in creator
            .iter()
            .cloned()
            .chain([SECURITY_CHANNEL.to_string()])
        {
            commands.push(Command::Notify {
                to,
                subject: subject.clone(),
                body: body.clone(),
            });
        }
        Ok(Step {
            commands,
            state: ShadowState::Unclaimed {
                agent,
                creator,
                grace_ends,
            },
        })
    }

    fn on(state: &ShadowState, event: Event, ctx: &Ctx) -> Result<Step<ShadowState>, Rejected> {
        use ShadowState as S;
        match (state, event) {
            (
                S::Unclaimed { agent, .. },
                Event::ShadowClaimed {
                    by,
                    owner,
                    workflow_id,
                },
            ) => Ok(Step {
                commands: vec![
                    Command::CancelTimer {
                        name: GRACE_TIMER.into(),
                    },
                    audit(
                        agent,
                        AuditKind::ShadowAgentClaimed,
                        Actor::Person(by.clone()),
                        None,
                        agent.scopes.clone(),
                        format!(
                            "{by} claimed shadow agent {} (client {}) with owner {owner}; onboarding {workflow_id}",
                            agent.name,
                            client(agent)
                        ),
                    ),
                ],
                state: S::Claimed {
                    agent: agent.clone(),
                    by,
                    owner,
                    onboarding: workflow_id,
                },
            }),
            (S::Unclaimed { agent, .. }, Event::ShadowReleased { by, reason }) => Ok(release(
                agent,
                format!("let go by {by}: {reason}"),
                Actor::Person(by),
            )),
            (
                S::Unclaimed {
                    agent, grace_ends, ..
                },
                Event::TimerFired { name },
            ) if name == GRACE_TIMER && ctx.now >= *grace_ends => Ok(release(
                agent,
                format!(
                    "was not claimed within the grace period (ended {})",
                    grace_ends.format("%Y-%m-%d %H:%M UTC")
                ),
                Actor::Schedule(name),
            )),
            (S::Releasing { agent, why }, Event::ClientDeactivated { client_id })
                if Some(&client_id) == agent.client_id.as_ref() =>
            {
                Ok(Step {
                    commands: vec![Command::StartDecommission {
                        agent_id: agent.id.clone(),
                        reason: DecommissionReason::Unclaimed { why: why.clone() },
                    }],
                    state: S::Released {
                        agent: agent.clone(),
                        why: why.clone(),
                    },
                })
            }
            (
                S::Releasing { agent, .. },
                Event::CommandFailed {
                    command, reason, ..
                },
            ) if command == "idp.deactivate_client" => {
                let message = format!("shadow agent {}: {command} failed: {reason}", agent.name);
                Ok(Step {
                    commands: vec![
                        audit_failure(agent, AuditKind::ShadowAgentReleased, &message),
                        Command::Notify {
                            to: SECURITY_CHANNEL.into(),
                            subject: format!("Shadow agent {} could not be frozen", agent.name),
                            body: format!("{message}. Deactivate it at the identity provider."),
                        },
                    ],
                    state: S::Failed {
                        agent: agent.clone(),
                        reason: message,
                    },
                })
            }
            (s, e) => Err(not_applicable(Self::KIND, Self::state_name(s), &e)),
        }
    }
}
