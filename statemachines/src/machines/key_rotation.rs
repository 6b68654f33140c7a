//! Key rotation: AddingKey → AwaitingUse → Grace → RetiringOld → Done.
//!
//! For an agent that holds its own key (`private_key_jwt`). The owner (or a security approver)
//! brings the new public key with a proof of possession; the identity provider gets it beside
//! the current key, so nothing stops working. The new key counts as verified on the first token
//! grant signed with it (the agent switched); the keys it replaces keep working through the
//! grace period, then they are removed. A new key never used before the policy's deadline is
//! removed again and the owner told: the current key keeps working. A freeze or a decommission
//! cancels the rotation at any step.

use crate::agent::{Agent, AgentChange, AgentStatus};
use crate::command::{Actor, AuditKind, Command, IdpCommand, SECURITY_CHANNEL, audit};
use crate::credential::{AgentKey, KeyRecord, KeyStatus};
use crate::event::Event;
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, not_before, states, t,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Fires when the new key has had its time to be used.
pub const FIRST_USE_TIMER: &str = "key-rotation-first-use";
/// Ends the grace period of the keys the new one replaces.
pub const GRACE_TIMER: &str = "key-rotation-grace";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotationInput {
    /// The registry record now.
    pub agent: Agent,
    /// The new public key, whose possession the requester proved.
    pub new_key: AgentKey,
    pub requested_by: Actor,
}

/// What every state carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRun {
    pub agent: Agent,
    pub new_key: AgentKey,
    pub requested_by: Actor,
    /// The keys active when the rotation started: retired after the grace period.
    pub old_kids: Vec<String>,
}

impl KeyRun {
    fn client_id(&self) -> String {
        self.agent.client_id.clone().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum KeyRotationState {
    AddingKey {
        run: KeyRun,
    },
    AwaitingUse {
        run: KeyRun,
        deadline: DateTime<Utc>,
    },
    Grace {
        run: KeyRun,
        used_at: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// Removing the old keys one at a time; `remaining` still hold.
    RetiringOld {
        run: KeyRun,
        remaining: Vec<String>,
    },
    /// The new key was never used: removing it again.
    Abandoning {
        run: KeyRun,
    },
    Done {
        run: KeyRun,
    },
    Failed {
        run: KeyRun,
        reason: String,
    },
    Cancelled {
        run: KeyRun,
        by: Actor,
        reason: String,
    },
}

impl KeyRotationState {
    pub fn run(&self) -> &KeyRun {
        match self {
            Self::AddingKey { run }
            | Self::AwaitingUse { run, .. }
            | Self::Grace { run, .. }
            | Self::RetiringOld { run, .. }
            | Self::Abandoning { run }
            | Self::Done { run }
            | Self::Failed { run, .. }
            | Self::Cancelled { run, .. } => run,
        }
    }
}

pub struct KeyRotation;

states! {
    KeyRotationState {
        AddingKey,
        AwaitingUse,
        Grace,
        RetiringOld,
        Abandoning,
        Done: terminal,
        Failed: terminal,
        Cancelled: terminal,
    }
}

impl Workflow for KeyRotation {
    type State = KeyRotationState;
    type Input = KeyRotationInput;
    const KIND: &'static str = "key_rotation";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "AddingKey"),
        t("AddingKey", "KeyAdded", "AwaitingUse"),
        t("AddingKey", "CommandFailed", "Failed"),
        t("AwaitingUse", "KeyUsed", "Grace"),
        t("AwaitingUse", "TimerFired", "Abandoning"),
        t("Abandoning", "KeyRemoved", "Failed"),
        t("Abandoning", "CommandFailed", "Failed"),
        t("Grace", "TimerFired", "RetiringOld"),
        t("Grace", "TimerFired", "Done"),
        t("RetiringOld", "KeyRemoved", "RetiringOld"),
        t("RetiringOld", "KeyRemoved", "Done"),
        t("RetiringOld", "CommandFailed", "Failed"),
        t("AddingKey", "Cancel", "Cancelled"),
        t("AwaitingUse", "Cancel", "Cancelled"),
        t("Grace", "Cancel", "Cancelled"),
        t("RetiringOld", "Cancel", "Cancelled"),
        // Results of commands already out when the cancel came: recorded, nothing more runs.
        t("Cancelled", "KeyAdded", "Cancelled"),
        t("Cancelled", "KeyRemoved", "Cancelled"),
        t("Cancelled", "KeyUsed", "Cancelled"),
        t("Cancelled", "CommandFailed", "Cancelled"),
    ];

    fn start(input: KeyRotationInput, ctx: &Ctx) -> Result<Step<KeyRotationState>, Rejected> {
        let KeyRotationInput {
            agent,
            new_key,
            requested_by,
        } = input;
        if agent.status != AgentStatus::Active || agent.client_id.is_none() {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} is {}; only active agents have their key rotated",
                    agent.name,
                    agent.status.as_str()
                ),
            ));
        }
        if !agent.credential_kind.key_bound() {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} authenticates with a secret; rotate its secret instead",
                    agent.name
                ),
            ));
        }
        if agent.steward_holds_key() {
            return Err(Rejected::new(
                "agent",
                format!(
                    "Steward holds the key of {} (key_custody steward): it rotates like a secret, with `steward agents rotate {}`",
                    agent.name, agent.name
                ),
            ));
        }
        if agent.keys.iter().any(|k| k.key.kid == new_key.kid) {
            return Err(Rejected::new(
                "public_jwk",
                format!(
                    "{} already holds key {}: a rotation needs a new key",
                    agent.name, new_key.kid
                ),
            ));
        }
        let old_kids = agent
            .keys
            .iter()
            .filter(|k| k.status == KeyStatus::Active)
            .map(|k| k.key.kid.clone())
            .collect();
        let run = KeyRun {
            agent,
            new_key,
            requested_by,
            old_kids,
        };
        let requested = audit(
            &run.agent,
            AuditKind::RotationRequested,
            run.requested_by.clone(),
            None,
            vec![],
            format!(
                "rotation of the key of {}: new key {} replaces {}",
                run.agent.name,
                run.new_key.kid,
                run.old_kids.join(", ")
            ),
        );
        let add = Command::Idp(IdpCommand::AddKey {
            client_id: run.client_id(),
            key: run.new_key.clone(),
        });
        let _ = ctx;
        Ok(Step {
            commands: vec![requested, add],
            state: KeyRotationState::AddingKey { run },
        })
    }

    fn on(
        state: &KeyRotationState,
        event: Event,
        ctx: &Ctx,
    ) -> Result<Step<KeyRotationState>, Rejected> {
        use KeyRotationState as S;
        match (state, event) {
            (S::AddingKey { run }, Event::KeyAdded { kid }) if kid == run.new_key.kid => {
                let deadline =
                    ctx.now + Duration::seconds(ctx.policy.credentials.first_use_secs as i64);
                let record = KeyRecord {
                    key: run.new_key.clone(),
                    added_at: ctx.now,
                    status: KeyStatus::Active,
                };
                Ok(Step {
                    commands: vec![
                        Command::UpdateAgent {
                            agent_id: run.agent.id.clone(),
                            change: AgentChange::KeyAdded { key: record },
                        },
                        audit(
                            &run.agent,
                            AuditKind::SecretIssued,
                            Actor::System,
                            None,
                            vec![],
                            format!(
                                "key {kid} added to client {} beside {}; both work until the agent has used the new one",
                                run.client_id(),
                                run.old_kids.join(", ")
                            ),
                        ),
                        Command::SetTimer {
                            name: FIRST_USE_TIMER.into(),
                            at: deadline,
                        },
                        Command::Notify {
                            to: run.agent.owner.clone(),
                            subject: format!("{}: switch to the new key", run.agent.name),
                            body: format!(
                                "Key {kid} is registered for {}. Switch the agent to it before {}; once it obtains a token with it, the old key is retired after the grace period. An unused new key is removed again at that time.",
                                run.agent.name,
                                deadline.format("%Y-%m-%d %H:%M UTC")
                            ),
                        },
                    ],
                    state: S::AwaitingUse {
                        run: run.clone(),
                        deadline,
                    },
                })
            }
            (S::AwaitingUse { run, .. }, Event::KeyUsed { kid, confirmed_by })
                if kid == run.new_key.kid =>
            {
                let (actor, how) = match confirmed_by {
                    Some(person) => (
                        Actor::Person(person.clone()),
                        format!("{person} confirmed the agent uses key {kid}"),
                    ),
                    None => (
                        Actor::System,
                        format!("the agent obtained a token with key {kid}"),
                    ),
                };
                let until =
                    ctx.now + Duration::seconds(ctx.policy.lifecycle.rotation_grace_secs as i64);
                Ok(Step {
                    commands: vec![
                        audit(
                            &run.agent,
                            AuditKind::SecretRotated,
                            actor,
                            None,
                            vec![],
                            format!(
                                "{how}: verified; the old key retires at {}",
                                until.format("%Y-%m-%d %H:%M UTC")
                            ),
                        ),
                        Command::SetTimer {
                            name: GRACE_TIMER.into(),
                            at: until,
                        },
                    ],
                    state: S::Grace {
                        run: run.clone(),
                        used_at: ctx.now,
                        until,
                    },
                })
            }
            (S::AwaitingUse { run, deadline }, Event::TimerFired { name })
                if name == FIRST_USE_TIMER =>
            {
                not_before(deadline, ctx)?;
                Ok(Step {
                    commands: vec![remove(run, &run.new_key.kid)],
                    state: S::Abandoning { run: run.clone() },
                })
            }
            (S::Abandoning { run }, Event::KeyRemoved { kid }) if kid == run.new_key.kid => {
                let reason = format!(
                    "key {kid} was never used before the deadline: removed again; the current key keeps working"
                );
                let mut step = fail(run, reason, false);
                step.commands.insert(
                    0,
                    Command::UpdateAgent {
                        agent_id: run.agent.id.clone(),
                        change: AgentChange::KeyRetired { kid, at: ctx.now },
                    },
                );
                Ok(step)
            }
            (S::Abandoning { run }, Event::CommandFailed { reason, .. }) => Ok(fail(
                run,
                format!(
                    "key {} was never used and could not be removed again: {reason}",
                    run.new_key.kid
                ),
                true,
            )),
            (S::Grace { run, until, .. }, Event::TimerFired { name }) if name == GRACE_TIMER => {
                not_before(until, ctx)?;
                Ok(retire_next(run, run.old_kids.clone(), ctx))
            }
            (S::RetiringOld { run, remaining }, Event::KeyRemoved { kid })
                if remaining.first() == Some(&kid) =>
            {
                let mut step = retire_next(run, remaining[1..].to_vec(), ctx);
                step.commands.insert(
                    0,
                    Command::UpdateAgent {
                        agent_id: run.agent.id.clone(),
                        change: AgentChange::KeyRetired { kid, at: ctx.now },
                    },
                );
                Ok(step)
            }
            (S::AddingKey { run }, Event::CommandFailed { reason, .. }) => Ok(fail(
                run,
                format!("the new key could not be added: {reason}"),
                false,
            )),
            (S::RetiringOld { run, remaining }, Event::CommandFailed { reason, .. }) => Ok(fail(
                run,
                format!(
                    "the old key {} could not be removed: {reason}; it still works",
                    remaining.first().map(String::as_str).unwrap_or("?")
                ),
                true,
            )),
            (
                S::AddingKey { run }
                | S::AwaitingUse { run, .. }
                | S::Grace { run, .. }
                | S::RetiringOld { run, .. },
                Event::Cancel { by, reason },
            ) => Ok(Step {
                commands: vec![audit(
                    &run.agent,
                    AuditKind::RotationFailed,
                    by.clone(),
                    None,
                    vec![],
                    format!("key rotation of {} cancelled: {reason}", run.agent.name),
                )],
                state: S::Cancelled {
                    run: run.clone(),
                    by,
                    reason,
                },
            }),
            (
                S::Cancelled { .. },
                Event::KeyAdded { .. }
                | Event::KeyRemoved { .. }
                | Event::KeyUsed { .. }
                | Event::CommandFailed { .. },
            ) => Ok(Step {
                commands: vec![],
                state: state.clone(),
            }),
            (state, event) => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}

fn remove(run: &KeyRun, kid: &str) -> Command {
    Command::Idp(IdpCommand::RemoveKey {
        client_id: run.client_id(),
        kid: kid.to_string(),
    })
}

/// Removes the next old key, or ends the rotation when none is left.
fn retire_next(run: &KeyRun, remaining: Vec<String>, ctx: &Ctx) -> Step<KeyRotationState> {
    match remaining.first() {
        Some(kid) => Step {
            commands: vec![remove(run, kid)],
            state: KeyRotationState::RetiringOld {
                run: run.clone(),
                remaining,
            },
        },
        None => {
            let _ = ctx;
            Step {
                commands: vec![
                    audit(
                        &run.agent,
                        AuditKind::SecretRevoked,
                        Actor::System,
                        None,
                        vec![],
                        format!(
                            "key rotation of {} done: {} is its key; {} retired",
                            run.agent.name,
                            run.new_key.kid,
                            run.old_kids.join(", ")
                        ),
                    ),
                    Command::Notify {
                        to: run.agent.owner.clone(),
                        subject: format!("{}: key rotated", run.agent.name),
                        body: format!(
                            "{} now authenticates with key {} only.",
                            run.agent.name, run.new_key.kid
                        ),
                    },
                ],
                state: KeyRotationState::Done { run: run.clone() },
            }
        }
    }
}

/// Ends in Failed, telling the owner (and security when something is left to clean up).
fn fail(run: &KeyRun, reason: String, raise: bool) -> Step<KeyRotationState> {
    let mut commands = vec![
        audit(
            &run.agent,
            AuditKind::RotationFailed,
            Actor::System,
            None,
            vec![],
            format!("key rotation of {} failed: {reason}", run.agent.name),
        ),
        Command::Notify {
            to: run.agent.owner.clone(),
            subject: format!("{}: key rotation failed", run.agent.name),
            body: reason.clone(),
        },
    ];
    if raise {
        commands.push(Command::Notify {
            to: SECURITY_CHANNEL.into(),
            subject: format!("{}: key rotation needs a person", run.agent.name),
            body: reason.clone(),
        });
    }
    Step {
        commands,
        state: KeyRotationState::Failed {
            run: run.clone(),
            reason,
        },
    }
}
