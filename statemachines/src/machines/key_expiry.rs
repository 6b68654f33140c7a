//! Key expiry: Watching → Removing → Expired (→ Cancelled when the agent is decommissioned
//! first: its client, and every key with it, is deleted anyway).
//!
//! An agent-held key lives at most `[credentials] key_max_age_days`. The sweep starts this watch
//! `key_remind_days` before the key's end: the owner is told to rotate it (`steward agents
//! rotate-key`). A key still held at its end is removed at the identity provider, never left
//! valid; the owner and security are told. A key a rotation retired first is gone already, and
//! removing it again changes nothing.

use crate::agent::{Agent, AgentChange};
use crate::command::{Actor, AuditKind, Command, IdpCommand, SECURITY_CHANNEL, audit};
use crate::credential::KeyStatus;
use crate::event::Event;
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Fires at the key's end.
pub const EXPIRY_TIMER: &str = "key-expiry";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExpiryInput {
    pub agent: Agent,
    pub kid: String,
    /// When the key ends: its addition + the policy's maximum age.
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub agent: Agent,
    pub kid: String,
    pub expires_at: DateTime<Utc>,
}

impl Watch {
    fn remove(&self) -> Command {
        Command::Idp(IdpCommand::RemoveKey {
            client_id: self.agent.client_id.clone().unwrap_or_default(),
            kid: self.kid.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum KeyExpiryState {
    Watching { watch: Watch },
    Removing { watch: Watch },
    Expired { watch: Watch, at: DateTime<Utc> },
    Failed { watch: Watch, reason: String },
    Cancelled { watch: Watch, reason: String },
}

pub struct KeyExpiry;

states! {
    KeyExpiryState {
        Watching,
        Removing,
        Expired: terminal,
        Failed: terminal,
        Cancelled: terminal,
    }
}

impl Workflow for KeyExpiry {
    type State = KeyExpiryState;
    type Input = KeyExpiryInput;
    const KIND: &'static str = "key_expiry";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "Watching"),
        t(START, "start", "Removing"),
        t("Watching", "TimerFired", "Removing"),
        t("Removing", "KeyRemoved", "Expired"),
        t("Removing", "CommandFailed", "Failed"),
        t("Watching", "Cancel", "Cancelled"),
        t("Removing", "Cancel", "Cancelled"),
        t("Cancelled", "KeyRemoved", "Cancelled"),
        t("Cancelled", "CommandFailed", "Cancelled"),
    ];

    fn start(input: KeyExpiryInput, ctx: &Ctx) -> Result<Step<KeyExpiryState>, Rejected> {
        let KeyExpiryInput {
            agent,
            kid,
            expires_at,
        } = input;
        if !agent.credential_kind.key_bound() || agent.client_id.is_none() {
            return Err(Rejected::new(
                "agent",
                format!("{} holds no key of its own", agent.name),
            ));
        }
        if !agent
            .keys
            .iter()
            .any(|k| k.key.kid == kid && k.status == KeyStatus::Active)
        {
            return Err(Rejected::new(
                "kid",
                format!("{} holds no active key {kid}", agent.name),
            ));
        }
        let watch = Watch {
            agent,
            kid,
            expires_at,
        };
        if expires_at <= ctx.now {
            return Ok(Step {
                commands: vec![watch.remove()],
                state: KeyExpiryState::Removing { watch },
            });
        }
        let when = expires_at.format("%Y-%m-%d %H:%M UTC");
        Ok(Step {
            commands: vec![
                audit(
                    &watch.agent,
                    AuditKind::RotationRequested,
                    Actor::Schedule("key-expiry".into()),
                    None,
                    vec![],
                    format!(
                        "key {} of {} ends at {when}; its owner is asked to rotate it",
                        watch.kid, watch.agent.name
                    ),
                ),
                Command::Notify {
                    to: watch.agent.owner.clone(),
                    subject: format!("{}: its key ends at {when}", watch.agent.name),
                    body: format!(
                        "Key {} of {} reaches the policy's maximum age at {when} and is then removed. Make a new key and rotate to it before: steward agents rotate-key {} --key <new key file>.",
                        watch.kid, watch.agent.name, watch.agent.name
                    ),
                },
                Command::SetTimer {
                    name: EXPIRY_TIMER.into(),
                    at: expires_at,
                },
            ],
            state: KeyExpiryState::Watching { watch },
        })
    }

    fn on(
        state: &KeyExpiryState,
        event: Event,
        ctx: &Ctx,
    ) -> Result<Step<KeyExpiryState>, Rejected> {
        use KeyExpiryState as S;
        match (state, event) {
            (S::Watching { watch }, Event::TimerFired { name }) if name == EXPIRY_TIMER => {
                if ctx.now < watch.expires_at {
                    return Err(Rejected::new(
                        "timer",
                        format!(
                            "the key ends at {}, not before",
                            watch.expires_at.to_rfc3339()
                        ),
                    ));
                }
                Ok(Step {
                    commands: vec![watch.remove()],
                    state: S::Removing {
                        watch: watch.clone(),
                    },
                })
            }
            (S::Removing { watch }, Event::KeyRemoved { kid }) if kid == watch.kid => {
                let why = format!(
                    "key {kid} of {} reached its maximum age and was removed at the identity provider",
                    watch.agent.name
                );
                Ok(Step {
                    commands: vec![
                        Command::UpdateAgent {
                            agent_id: watch.agent.id.clone(),
                            change: AgentChange::KeyRetired {
                                kid: kid.clone(),
                                at: ctx.now,
                            },
                        },
                        audit(
                            &watch.agent,
                            AuditKind::SecretRevoked,
                            Actor::Schedule("key-expiry".into()),
                            None,
                            vec![],
                            why.clone(),
                        ),
                        Command::Notify {
                            to: watch.agent.owner.clone(),
                            subject: format!("{}: its key expired", watch.agent.name),
                            body: format!(
                                "{why}. Unless it holds another key, it obtains no token until a new key is added (steward agents rotate-key)."
                            ),
                        },
                        Command::Notify {
                            to: SECURITY_CHANNEL.into(),
                            subject: format!("{}: key expired", watch.agent.name),
                            body: why,
                        },
                    ],
                    state: S::Expired {
                        watch: watch.clone(),
                        at: ctx.now,
                    },
                })
            }
            (S::Removing { watch }, Event::CommandFailed { reason, .. }) => {
                let reason = format!(
                    "key {} of {} reached its maximum age but could not be removed: {reason}; it still works",
                    watch.kid, watch.agent.name
                );
                Ok(Step {
                    commands: vec![
                        audit(
                            &watch.agent,
                            AuditKind::RotationFailed,
                            Actor::System,
                            None,
                            vec![],
                            reason.clone(),
                        ),
                        Command::Notify {
                            to: SECURITY_CHANNEL.into(),
                            subject: format!("{}: expired key still valid", watch.agent.name),
                            body: reason.clone(),
                        },
                    ],
                    state: S::Failed {
                        watch: watch.clone(),
                        reason,
                    },
                })
            }
            (S::Watching { watch } | S::Removing { watch }, Event::Cancel { reason, .. }) => {
                Ok(Step {
                    commands: vec![Command::CancelTimer {
                        name: EXPIRY_TIMER.into(),
                    }],
                    state: S::Cancelled {
                        watch: watch.clone(),
                        reason,
                    },
                })
            }
            // The removal already out when the cancel came: nothing more to do.
            (S::Cancelled { .. }, Event::KeyRemoved { .. } | Event::CommandFailed { .. }) => {
                Ok(Step {
                    commands: vec![],
                    state: state.clone(),
                })
            }
            (state, event) => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}
