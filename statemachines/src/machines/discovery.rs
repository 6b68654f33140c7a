//! Shadow agents: clients found at the identity provider that nobody registered.
//!
//! A found client becomes an *unregistered* agent. Its creator (from the IdP's log) and the
//! security channel are asked to claim it: the engine starts its onboarding with a real owner,
//! taking over the existing client, and a security approver decides that claim. Deleting the
//! client is a security approver's decision, never that of a name an IdP event carries (anyone
//! holding the hook secret can write one): a security approver may let it go (frozen, then
//! decommissioned). Unclaimed when the grace period ends, it is only frozen (client
//! deactivated), and the security approvers are asked whether to decommission it. Denied,
//! withdrawn or unanswered, it stays frozen, and can still be claimed or let go.
//!
//! Unclaimed --(ShadowClaimed)--> Claimed --(ShadowClaimSettled: adopted)--> Adopted;
//! --(ShadowClaimSettled: not adopted)--> Unclaimed (Kept when it was claimed frozen).
//! Unclaimed --(ShadowReleased)--> Releasing
//! --(ClientDeactivated)--> Released; Unclaimed --(grace timer)--> Freezing
//! --(ClientDeactivated)--> AwaitingDeletion --(approve)--> Released; --(deny | expiry |
//! Cancel)--> Kept. AwaitingDeletion and Kept still take ShadowClaimed and ShadowReleased.

use crate::agent::{Agent, AgentChange};
use crate::approval::{ApprovalRequest, Ask, Ballot, Deadline, Decision, is_reserved_name};
use crate::command::{
    Actor, AuditKind, Command, IdpCommand, SECURITY_CHANNEL, audit, audit_failure,
};
use crate::event::Event;
use crate::lifecycle::DecommissionReason;
use crate::policy::Policy;
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub const GRACE_TIMER: &str = "claim-grace";

/// The states in which a shadow agent can still be claimed or let go: unclaimed, or frozen
/// with no decision to delete it.
pub const OPEN_STATES: &[&str] = &["Unclaimed", "AwaitingDeletion", "Kept"];

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
    /// Claimed: its onboarding `onboarding` waits for a security approver, then takes over
    /// the client. A claim that ends without (denied, expired, withdrawn, failed) makes it a
    /// shadow agent again, as it was.
    Claimed {
        agent: Agent,
        by: String,
        owner: String,
        onboarding: String,
        #[serde(default)]
        creator: Option<String>,
        /// Claimed while frozen (its client deactivated): a claim that ends without taking
        /// over leaves it frozen (Kept), not unclaimed.
        #[serde(default)]
        frozen: bool,
    },
    /// The claim took over the client: the agent is registered.
    Adopted {
        agent: Agent,
        onboarding: String,
    },
    /// A security approver let it go: its client is being deactivated, then it is
    /// decommissioned.
    Releasing {
        agent: Agent,
        why: String,
        /// Who let it go. `None` in a state stored before only a security approver could (the
        /// grace period's end, or a creator an IdP event named): the security approvers are
        /// asked instead, as after the grace period.
        #[serde(default)]
        approver: Option<String>,
    },
    /// The grace period ended unclaimed: its client is being deactivated. Nothing is deleted.
    Freezing {
        agent: Agent,
        why: String,
    },
    /// Frozen; the security approvers decide: approve = decommission (the client is deleted),
    /// deny = it stays frozen.
    AwaitingDeletion {
        agent: Agent,
        why: String,
        approval: ApprovalRequest,
    },
    /// Frozen, and nobody decided to delete it (denied, withdrawn, unanswered): it can still be
    /// claimed, or let go by a security approver.
    Kept {
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

/// Who may let a shadow agent go, which deletes its client: a security approver of the policy.
/// Never a creator an IdP event names (anyone holding the hook secret can write one), never a
/// person under a name Steward acts under. The engine asks this too, to answer at once.
pub fn check_releaser(agent: &Agent, by: &str, policy: &Policy) -> Result<(), Rejected> {
    let by = by.trim();
    if !is_reserved_name(by)
        && policy
            .approvers
            .iter()
            .any(|a| a.trim().eq_ignore_ascii_case(by))
    {
        return Ok(());
    }
    Err(Rejected::new(
        "by",
        format!(
            "{by} is not a security approver and may not let {} go: that deletes its client, so a security approver decides; claim it instead (`steward shadow claim {}`), which a security approver approves",
            agent.name,
            client(agent)
        ),
    ))
}

/// Deactivates the client (no new tokens) and marks the agent frozen; `then` says what follows.
fn freeze(agent: &Agent, why: &str, kind: AuditKind, by: Actor, then: &str) -> Vec<Command> {
    vec![
        Command::CancelTimer {
            name: GRACE_TIMER.into(),
        },
        Command::Idp(IdpCommand::DeactivateClient {
            client_id: client(agent),
        }),
        Command::UpdateAgent {
            agent_id: agent.id.clone(),
            change: AgentChange::Frozen {
                reason: why.to_string(),
            },
        },
        audit(
            agent,
            kind,
            by,
            None,
            agent.scopes.clone(),
            format!(
                "shadow agent {} (client {}) {why}: freezing it, then {then}",
                agent.name,
                client(agent)
            ),
        ),
    ]
}

/// The client is deactivated; the security approvers are asked whether to decommission it.
fn ask_deletion(agent: &Agent, why: &str, ctx: &Ctx) -> Step<ShadowState> {
    // Steward asks, under the grace timer's name: no person is the requester, so every
    // security approver may decide.
    let requester = Actor::Schedule(GRACE_TIMER.into()).describe();
    let approval = ApprovalRequest::open(
        ctx,
        agent,
        &requester,
        Ask {
            action: "decommission",
            scopes_added: vec![],
            scopes_removed: agent.scopes.clone(),
            sensitive_scopes: vec![],
            token_lifetime_secs: agent.token_lifetime_secs,
            justification: format!(
                "shadow agent {} (client {}) {why}. Its client is deactivated. Approve to decommission it (tokens revoked, the client deleted at the identity provider); deny to keep it deactivated: it can still be claimed, or let go by a security approver.",
                agent.name,
                client(agent)
            ),
        },
    );
    let mut commands = vec![audit(
        agent,
        AuditKind::AgentFrozen,
        Actor::System,
        None,
        agent.scopes.clone(),
        format!(
            "shadow agent {} frozen: client {} deactivated; the security approvers decide whether to decommission it",
            agent.name,
            client(agent)
        ),
    )];
    commands.extend(approval.opening_commands(agent));
    Step {
        commands,
        state: ShadowState::AwaitingDeletion {
            agent: agent.clone(),
            why: why.to_string(),
            approval,
        },
    }
}

/// Hands the agent (its client deactivated already) to the decommission workflow.
fn decommissioned(agent: &Agent, why: String, mut commands: Vec<Command>) -> Step<ShadowState> {
    commands.push(Command::StartDecommission {
        agent_id: agent.id.clone(),
        reason: DecommissionReason::Unclaimed { why: why.clone() },
    });
    Step {
        commands,
        state: ShadowState::Released {
            agent: agent.clone(),
            why,
        },
    }
}

/// A security approver lets go an agent whose client is deactivated already (`commands` close
/// a question still open).
fn let_go(
    agent: &Agent,
    by: String,
    reason: &str,
    ctx: &Ctx,
    mut commands: Vec<Command>,
) -> Result<Step<ShadowState>, Rejected> {
    check_releaser(agent, &by, ctx.policy)?;
    let why = format!("let go by {by}: {reason}");
    commands.push(audit(
        agent,
        AuditKind::ShadowAgentReleased,
        Actor::Person(by),
        None,
        agent.scopes.clone(),
        format!(
            "shadow agent {} (client {}) {why}: decommissioning it",
            agent.name,
            client(agent)
        ),
    ));
    Ok(decommissioned(agent, why, commands))
}

/// A person claimed it: its onboarding takes the client over (and activates it again once a
/// security approver approves the claim). `commands` close what was still open.
fn claimed(
    agent: &Agent,
    by: String,
    owner: String,
    onboarding: String,
    (creator, frozen): (Option<String>, bool),
    mut commands: Vec<Command>,
) -> Step<ShadowState> {
    commands.push(audit(
        agent,
        AuditKind::ShadowAgentClaimed,
        Actor::Person(by.clone()),
        None,
        agent.scopes.clone(),
        format!(
            "{by} claimed shadow agent {} (client {}) with owner {owner}; onboarding {onboarding}",
            agent.name,
            client(agent)
        ),
    ));
    Step {
        commands,
        state: ShadowState::Claimed {
            agent: agent.clone(),
            by,
            owner,
            onboarding,
            creator,
            frozen,
        },
    }
}

/// The grace period's timer, and the question to the creator (when known) and the security
/// channel: claim it.
fn ask_to_claim(
    creator: Option<&str>,
    grace_ends: DateTime<Utc>,
    subject: &str,
    body: &str,
) -> Vec<Command> {
    let mut commands = vec![Command::SetTimer {
        name: GRACE_TIMER.into(),
        at: grace_ends,
    }];
    for to in creator.into_iter().chain([SECURITY_CHANNEL]) {
        commands.push(Command::Notify {
            to: to.to_string(),
            subject: subject.to_string(),
            body: body.to_string(),
        });
    }
    commands
}

/// Events in Claimed: how the claim's onboarding ended.
fn on_claimed(state: &ShadowState, event: Event, ctx: &Ctx) -> Result<Step<ShadowState>, Rejected> {
    use ShadowState as S;
    let S::Claimed {
        agent,
        by,
        onboarding,
        creator,
        frozen,
        ..
    } = state
    else {
        return Err(not_applicable(
            ShadowAgent::KIND,
            ShadowAgent::state_name(state),
            &event,
        ));
    };
    match event {
        Event::ShadowClaimSettled {
            onboarding: settled,
            adopted,
            reason,
        } if settled == *onboarding => {
            if adopted {
                return Ok(Step {
                    commands: vec![],
                    state: S::Adopted {
                        agent: agent.clone(),
                        onboarding: settled,
                    },
                });
            }
            let why = format!("the claim by {by} ended without taking over the client: {reason}");
            if *frozen {
                let mut agent = agent.clone();
                agent.status = crate::agent::AgentStatus::Frozen;
                agent.updated_at = ctx.now;
                return Ok(kept(
                    &agent,
                    why,
                    Actor::System,
                    vec![Command::SaveAgent(Box::new(agent.clone()))],
                ));
            }
            // Unregistered again, as found: its record back, asked again, a new grace period.
            let mut agent = agent.clone();
            agent.status = crate::agent::AgentStatus::Unregistered;
            agent.updated_at = ctx.now;
            let grace_ends = ctx.now + Duration::seconds(ctx.policy.discovery.grace_secs as i64);
            let id = client(&agent).to_string();
            let body = format!(
                "Client `{}` ({id}) is a shadow agent again: {why}.\n\
                 Claim it: `steward shadow claim {id} --owner <email> --team <team> --environment <env> --purpose \"<what it does>\"`. \
                 A security approver may let it go: `steward shadow release {id} --reason \"<why>\"`. \
                 Unclaimed after {}, its client is deactivated and the security approvers decide whether to decommission it.",
                agent.name,
                grace_ends.format("%Y-%m-%d %H:%M UTC"),
            );
            let subject = format!("Unregistered agent again: {}", agent.name);
            let mut commands = vec![
                Command::SaveAgent(Box::new(agent.clone())),
                audit(
                    &agent,
                    AuditKind::ShadowAgentFound,
                    Actor::System,
                    None,
                    agent.scopes.clone(),
                    format!("{}: {why}; unclaimed again", agent.name),
                ),
            ];
            commands.extend(ask_to_claim(
                creator.as_deref(),
                grace_ends,
                &subject,
                &body,
            ));
            Ok(Step {
                commands,
                state: S::Unclaimed {
                    agent,
                    creator: creator.clone(),
                    grace_ends,
                },
            })
        }
        event => Err(not_applicable(
            ShadowAgent::KIND,
            ShadowAgent::state_name(state),
            &event,
        )),
    }
}

/// The deletion was not decided (denied, withdrawn, unanswered): the agent stays frozen.
fn kept(agent: &Agent, why: String, by: Actor, mut commands: Vec<Command>) -> Step<ShadowState> {
    commands.push(audit(
        agent,
        AuditKind::DecommissionKept,
        by,
        None,
        vec![],
        format!(
            "shadow agent {} stays frozen (client {} deactivated, not deleted): {why}; it can still be claimed, or let go by a security approver",
            agent.name,
            client(agent)
        ),
    ));
    Step {
        commands,
        state: ShadowState::Kept {
            agent: agent.clone(),
            why,
        },
    }
}

states! {
    ShadowState {
        Unclaimed,
        Claimed,
        Adopted: terminal,
        Releasing,
        Freezing,
        AwaitingDeletion,
        Kept,
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
        t("Unclaimed", "TimerFired", "Freezing"),
        t("Releasing", "ClientDeactivated", "Released"),
        t("Releasing", "ClientDeactivated", "AwaitingDeletion"),
        t("Releasing", "CommandFailed", "Failed"),
        t("Freezing", "ClientDeactivated", "AwaitingDeletion"),
        t("Freezing", "CommandFailed", "Failed"),
        t("AwaitingDeletion", "ApprovalDecided(approve)", "Released"),
        t("AwaitingDeletion", "ApprovalDecided(deny)", "Kept"),
        t("AwaitingDeletion", "TimerFired", "AwaitingDeletion"),
        t("AwaitingDeletion", "TimerFired", "Kept"),
        t("AwaitingDeletion", "Cancel", "Kept"),
        t("AwaitingDeletion", "ShadowClaimed", "Claimed"),
        t("AwaitingDeletion", "ShadowReleased", "Released"),
        t("Kept", "ShadowClaimed", "Claimed"),
        t("Kept", "ShadowReleased", "Released"),
        t("Claimed", "ShadowClaimSettled", "Adopted"),
        t("Claimed", "ShadowClaimSettled", "Unclaimed"),
        t("Claimed", "ShadowClaimSettled", "Kept"),
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
             Claim it (it is onboarded with you or the owner you name once a security approver approves, and Steward takes over its credential): \
             `steward shadow claim {client_id} --owner <email> --team <team> --environment <env> --purpose \"<what it does>\"`.\n\
             A security approver may let it go (its client is deactivated, then deleted): `steward shadow release {client_id} --reason \"<why>\"`.\n\
             Unclaimed after {}, its client is deactivated, not deleted: the security approvers then decide whether to decommission it, and it can still be claimed.",
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
        ];
        commands.extend(ask_to_claim(
            creator.as_deref(),
            grace_ends,
            &subject,
            &body,
        ));
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
        // One handler per state; a state without one refuses every event.
        match state {
            S::Unclaimed { .. } => on_unclaimed(state, event, ctx),
            S::Releasing { .. } | S::Freezing { .. } => on_deactivating(state, event, ctx),
            S::AwaitingDeletion { .. } => on_awaiting_deletion(state, event, ctx),
            S::Kept { .. } => on_kept(state, event, ctx),
            S::Claimed { .. } => on_claimed(state, event, ctx),
            _ => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}

/// Events in Unclaimed.
fn on_unclaimed(
    state: &ShadowState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<ShadowState>, Rejected> {
    use ShadowState as S;
    match (state, event) {
        (
            S::Unclaimed { agent, creator, .. },
            Event::ShadowClaimed {
                by,
                owner,
                workflow_id,
            },
        ) => Ok(claimed(
            agent,
            by,
            owner,
            workflow_id,
            (creator.clone(), false),
            vec![Command::CancelTimer {
                name: GRACE_TIMER.into(),
            }],
        )),
        (S::Unclaimed { agent, .. }, Event::ShadowReleased { by, reason }) => {
            check_releaser(agent, &by, ctx.policy)?;
            let why = format!("let go by {by}: {reason}");
            Ok(Step {
                commands: freeze(
                    agent,
                    &why,
                    AuditKind::ShadowAgentReleased,
                    Actor::Person(by.clone()),
                    "decommission",
                ),
                state: S::Releasing {
                    agent: agent.clone(),
                    why,
                    approver: Some(by),
                },
            })
        }
        // The grace period's end freezes and asks; it never deletes.
        (
            S::Unclaimed {
                agent,
                creator,
                grace_ends,
            },
            Event::TimerFired { name },
        ) if name == GRACE_TIMER && ctx.now >= *grace_ends => {
            let why = format!(
                "was not claimed within the grace period (ended {})",
                grace_ends.format("%Y-%m-%d %H:%M UTC")
            );
            let mut commands = freeze(
                agent,
                &why,
                AuditKind::AgentFrozen,
                Actor::Schedule(name),
                "the security approvers decide whether to decommission it",
            );
            if let Some(creator) = creator {
                commands.push(Command::Notify {
                    to: creator.clone(),
                    subject: format!("Unregistered agent {} is frozen", agent.name),
                    body: format!(
                        "Client `{}` ({}) {why}. Its client is deactivated now, not deleted: the security approvers decide whether to decommission it. \
                         To keep it, claim it: `steward shadow claim {} --owner <email> --team <team> --environment <env> --purpose \"<what it does>\"`.",
                        agent.name,
                        client(agent),
                        client(agent)
                    ),
                });
            }
            Ok(Step {
                commands,
                state: S::Freezing {
                    agent: agent.clone(),
                    why,
                },
            })
        }
        (state, event) => Err(not_applicable(
            ShadowAgent::KIND,
            ShadowAgent::state_name(state),
            &event,
        )),
    }
}

/// Events in Releasing and Freezing: the client's deactivation is under way.
fn on_deactivating(
    state: &ShadowState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<ShadowState>, Rejected> {
    use ShadowState as S;
    let (S::Releasing { agent, why, .. } | S::Freezing { agent, why }) = state else {
        return Err(not_applicable(
            ShadowAgent::KIND,
            ShadowAgent::state_name(state),
            &event,
        ));
    };
    match (state, event) {
        (
            S::Releasing {
                approver: Some(_), ..
            },
            Event::ClientDeactivated { client_id },
        ) if Some(&client_id) == agent.client_id.as_ref() => {
            Ok(decommissioned(agent, why.clone(), vec![]))
        }
        (_, Event::ClientDeactivated { client_id })
            if Some(&client_id) == agent.client_id.as_ref() =>
        {
            Ok(ask_deletion(agent, why, ctx))
        }
        (
            _,
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
        (state, event) => Err(not_applicable(
            ShadowAgent::KIND,
            ShadowAgent::state_name(state),
            &event,
        )),
    }
}

/// Events in AwaitingDeletion: the security approvers' decision, its timers, and a claim or a
/// release that overtakes it.
fn on_awaiting_deletion(
    state: &ShadowState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<ShadowState>, Rejected> {
    use ShadowState as S;
    let S::AwaitingDeletion {
        agent,
        why,
        approval,
    } = state
    else {
        return Err(not_applicable(
            ShadowAgent::KIND,
            ShadowAgent::state_name(state),
            &event,
        ));
    };
    match event {
        Event::ApprovalDecided {
            approval_id,
            decision,
            approver,
            reason,
        } => match approval.ballot(agent, &approval_id, decision, &approver, reason, ctx.now)? {
            Ballot::Decided {
                decision: Decision::Approve,
                approver,
                mut commands,
                ..
            } => {
                commands.push(audit(
                    agent,
                    AuditKind::ShadowAgentReleased,
                    Actor::Person(approver.clone()),
                    Some(&approval.id),
                    agent.scopes.clone(),
                    format!(
                        "{approver} approved decommissioning shadow agent {} (client {})",
                        agent.name,
                        client(agent)
                    ),
                ));
                Ok(decommissioned(
                    agent,
                    format!("{why}; decommission approved by {approver}"),
                    commands,
                ))
            }
            Ballot::Decided {
                approver,
                reason,
                commands,
                ..
            } => Ok(kept(
                agent,
                format!(
                    "{approver} denied its decommission{}",
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                ),
                Actor::Person(approver),
                commands,
            )),
            // One approver decides a deletion (no sensitive scope is added, so the quorum is one).
            Ballot::Pending { .. } => Err(Rejected::new(
                "approval",
                "a shadow agent's decommission needs one decision; this vote cannot be pending",
            )),
        },
        Event::TimerFired { name } if ApprovalRequest::is_timer(&name) => {
            match approval.deadline(agent, &name, ctx.now, "the client stays deactivated")? {
                Deadline::Reminded(commands) => Ok(Step {
                    commands,
                    state: state.clone(),
                }),
                Deadline::Expired(commands) => Ok(kept(
                    agent,
                    "nobody decided on its decommission in time".into(),
                    Actor::Schedule(name),
                    commands,
                )),
            }
        }
        Event::Cancel { by, reason } => {
            approval.check_canceller(&by)?;
            let why = format!(
                "{} withdrew the question of its decommission: {reason}",
                by.describe()
            );
            Ok(kept(agent, why, by, approval.cancelled_commands(ctx.now)))
        }
        Event::ShadowClaimed {
            by,
            owner,
            workflow_id,
        } => Ok(claimed(
            agent,
            by,
            owner,
            workflow_id,
            (None, true),
            approval.cancelled_commands(ctx.now),
        )),
        Event::ShadowReleased { by, reason } => let_go(
            agent,
            by,
            &reason,
            ctx,
            approval.cancelled_commands(ctx.now),
        ),
        event => Err(not_applicable(
            ShadowAgent::KIND,
            ShadowAgent::state_name(state),
            &event,
        )),
    }
}

/// Events in Kept: frozen with no decision to delete it; a claim or a security approver's
/// release still ends it.
fn on_kept(state: &ShadowState, event: Event, ctx: &Ctx) -> Result<Step<ShadowState>, Rejected> {
    use ShadowState as S;
    let S::Kept { agent, .. } = state else {
        return Err(not_applicable(
            ShadowAgent::KIND,
            ShadowAgent::state_name(state),
            &event,
        ));
    };
    match event {
        Event::ShadowClaimed {
            by,
            owner,
            workflow_id,
        } => Ok(claimed(agent, by, owner, workflow_id, (None, true), vec![])),
        Event::ShadowReleased { by, reason } => let_go(agent, by, &reason, ctx, vec![]),
        event => Err(not_applicable(
            ShadowAgent::KIND,
            ShadowAgent::state_name(state),
            &event,
        )),
    }
}
