//! Rotation: Scheduled → Issuing → Verifying → Promoting → Grace → RevokingOld → Done.
//!
//! The steps are Secrets Manager's rotation protocol (ADR 16): `Issuing` is createSecret (+ the
//! setSecret check: the IdP generates the value), `Verifying` is testSecret (a real
//! client_credentials token with the AWSPENDING version), `Promoting` is finishSecret (AWSCURRENT
//! moves, the old version becomes AWSPREVIOUS). The old secret keeps working through the grace
//! period, then it is removed at the IdP. A failure before promotion leaves the old secret
//! current: the owner is told, the rotation retries with backoff under a new version token, and
//! after the policy's attempts it gives up and raises to the security channel. A cancel (a
//! freeze or a decommission superseding it) wins at any step.

use crate::agent::{Agent, AgentChange, AgentStatus};
use crate::command::{
    Actor, AuditEvent, AuditKind, Command, IdpCommand, SECURITY_CHANNEL, VaultCommand, audit,
};
use crate::event::Event;
use crate::receipt::{CredentialReceipt, SecretRef};
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, not_before, states, t,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Fires when a scheduled rotation's slot comes (the sweep spreads rotations out).
pub const START_TIMER: &str = "rotation-start";
/// Ends the grace period of the outgoing secret.
pub const GRACE_TIMER: &str = "rotation-grace";
/// Starts the next attempt after a failure.
pub const RETRY_TIMER: &str = "rotation-retry";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "why")]
pub enum RotationReason {
    /// The sweep found the secret older than the policy allows.
    Scheduled { age_days: i64, max_age_days: u32 },
    /// A person asked for it.
    OnDemand { by: String },
    /// A detection rule asked for it (e.g. a credential used from several sources).
    Detection { rule: String },
}

impl RotationReason {
    pub fn describe(&self) -> String {
        match self {
            Self::Scheduled {
                age_days,
                max_age_days,
            } => format!("scheduled: the secret is {age_days} days old (policy: {max_age_days})"),
            Self::OnDemand { by } => format!("on demand by {by}"),
            Self::Detection { rule } => format!("requested by detection rule `{rule}`"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationInput {
    /// The registry record now.
    pub agent: Agent,
    pub reason: RotationReason,
    pub requested_by: Actor,
    /// When the rotation starts: now, or a sweep's slot.
    pub start_at: DateTime<Utc>,
}

/// What every state carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub agent: Agent,
    pub reason: RotationReason,
    pub requested_by: Actor,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// This attempt's vault version id (the Secrets Manager ClientRequestToken).
    pub version: String,
}

impl Run {
    fn client_id(&self) -> &str {
        self.agent.client_id.as_deref().unwrap_or_default()
    }
}

/// The secret this rotation issued and the one it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub new: SecretRef,
    pub old: SecretRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum RotationState {
    Scheduled {
        run: Run,
        at: DateTime<Utc>,
    },
    Issuing {
        run: Run,
    },
    Verifying {
        run: Run,
        issued: Issued,
    },
    Promoting {
        run: Run,
        issued: Issued,
        verified_at: DateTime<Utc>,
    },
    Grace {
        run: Run,
        issued: Issued,
        until: DateTime<Utc>,
    },
    RevokingOld {
        run: Run,
        issued: Issued,
    },
    RetryWait {
        run: Run,
        last_error: String,
        at: DateTime<Utc>,
    },
    Done {
        run: Run,
        issued: Issued,
        old_removed: bool,
    },
    Failed {
        run: Run,
        reason: String,
    },
    Cancelled {
        run: Run,
        by: Actor,
        reason: String,
        /// Set when the new secret had been promoted before the cancel.
        promoted: bool,
        /// The secret issued before the cancel, if any (late results are recorded against it).
        #[serde(default)]
        issued: Option<Issued>,
    },
}

impl RotationState {
    pub fn run(&self) -> &Run {
        match self {
            Self::Scheduled { run, .. }
            | Self::Issuing { run }
            | Self::Verifying { run, .. }
            | Self::Promoting { run, .. }
            | Self::Grace { run, .. }
            | Self::RevokingOld { run, .. }
            | Self::RetryWait { run, .. }
            | Self::Done { run, .. }
            | Self::Failed { run, .. }
            | Self::Cancelled { run, .. } => run,
        }
    }
}

/// The vault version id of attempt `attempt` of rotation `workflow_id`: 32 hex characters,
/// stable across replays, a valid Secrets Manager ClientRequestToken.
pub fn version_token(workflow_id: &str, attempt: u32) -> String {
    // FNV-1a, twice with different offsets: no crypto needed, only stability and spread.
    let fnv = |offset: u64| {
        let mut h = offset;
        for b in workflow_id.bytes().chain(attempt.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

pub struct Rotation;

states! {
    RotationState {
        Scheduled,
        Issuing,
        Verifying,
        Promoting,
        Grace,
        RevokingOld,
        RetryWait,
        Done: terminal,
        Failed: terminal,
        Cancelled: terminal,
    }
}

impl Workflow for Rotation {
    type State = RotationState;
    type Input = RotationInput;
    const KIND: &'static str = "rotation";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "Scheduled"),
        t(START, "start", "Issuing"),
        t("Scheduled", "TimerFired", "Issuing"),
        t("Issuing", "SecretIssued", "Verifying"),
        t("Verifying", "SecretVerified", "Promoting"),
        t("Promoting", "SecretPromoted", "Grace"),
        t("Grace", "TimerFired", "RevokingOld"),
        t("Grace", "TimerFired", "Done"),
        t("RevokingOld", "SecretRemoved", "Done"),
        t("RevokingOld", "CommandFailed", "Done"),
        t("Issuing", "CommandFailed", "RetryWait"),
        t("Verifying", "CommandFailed", "RetryWait"),
        t("Promoting", "CommandFailed", "RetryWait"),
        t("Issuing", "CommandFailed", "Failed"),
        t("Verifying", "CommandFailed", "Failed"),
        t("Promoting", "CommandFailed", "Failed"),
        t("RetryWait", "TimerFired", "Issuing"),
        t("Scheduled", "Cancel", "Cancelled"),
        t("Issuing", "Cancel", "Cancelled"),
        t("Verifying", "Cancel", "Cancelled"),
        t("Promoting", "Cancel", "Cancelled"),
        t("Grace", "Cancel", "Cancelled"),
        t("RevokingOld", "Cancel", "Cancelled"),
        t("RetryWait", "Cancel", "Cancelled"),
        // Results of commands already out when the cancel came: recorded, nothing more runs.
        t("Cancelled", "SecretIssued", "Cancelled"),
        t("Cancelled", "SecretVerified", "Cancelled"),
        t("Cancelled", "SecretPromoted", "Cancelled"),
        t("Cancelled", "SecretRemoved", "Cancelled"),
        t("Cancelled", "CommandFailed", "Cancelled"),
    ];

    fn start(input: RotationInput, ctx: &Ctx) -> Result<Step<RotationState>, Rejected> {
        let RotationInput {
            agent,
            reason,
            requested_by,
            start_at,
        } = input;
        if agent.status != AgentStatus::Active {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} is {}; only active agents have their secret rotated",
                    agent.name,
                    agent.status.as_str()
                ),
            ));
        }
        if !agent.vaulted_credential() {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} authenticates with its own key ({}); there is no secret to rotate",
                    agent.name,
                    agent.credential_kind.as_str()
                ),
            ));
        }
        if agent.client_id.is_none() || agent.secret_version.is_none() {
            return Err(Rejected::new(
                "agent",
                format!("{} has no client secret to rotate yet", agent.name),
            ));
        }
        let run = Run {
            agent,
            reason,
            requested_by: requested_by.clone(),
            attempt: 1,
            version: version_token(ctx.workflow_id, 1),
        };
        let requested = audit(
            &run.agent,
            AuditKind::RotationRequested,
            requested_by,
            None,
            vec![],
            format!(
                "rotation of the secret of {} ({}), starting {}",
                run.agent.name,
                run.reason.describe(),
                start_at.format("%Y-%m-%d %H:%M UTC")
            ),
        );
        if start_at > ctx.now {
            return Ok(Step {
                commands: vec![
                    requested,
                    Command::SetTimer {
                        name: START_TIMER.into(),
                        at: start_at,
                    },
                ],
                state: RotationState::Scheduled { run, at: start_at },
            });
        }
        Ok(Step {
            commands: vec![requested, issue(&run)],
            state: RotationState::Issuing { run },
        })
    }

    fn on(state: &RotationState, event: Event, ctx: &Ctx) -> Result<Step<RotationState>, Rejected> {
        use RotationState as S;
        // One handler per state; a state without one refuses every event.
        match state {
            S::Scheduled { .. } => on_scheduled(state, event, ctx),
            S::RetryWait { .. } => on_retry_wait(state, event, ctx),
            S::Issuing { .. } => on_issuing(state, event, ctx),
            S::Verifying { .. } => on_verifying(state, event, ctx),
            S::Promoting { .. } => on_promoting(state, event, ctx),
            S::Grace { .. } => on_grace(state, event, ctx),
            S::RevokingOld { .. } => on_revoking_old(state, event, ctx),
            S::Cancelled { .. } => on_cancelled(state, event, ctx),
            _ => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}

/// Events in Scheduled.
fn on_scheduled(
    state: &RotationState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<RotationState>, Rejected> {
    use RotationState as S;
    match (state, event) {
        (S::Scheduled { run, at }, Event::TimerFired { name }) if name == START_TIMER => {
            not_before(at, ctx)?;
            Ok(Step {
                commands: vec![issue(run)],
                state: S::Issuing { run: run.clone() },
            })
        }
        (_, event @ Event::Cancel { .. }) => cancel(state, event, ctx),
        (state, event) => Err(not_applicable(
            Rotation::KIND,
            Rotation::state_name(state),
            &event,
        )),
    }
}

/// Events in RetryWait.
fn on_retry_wait(
    state: &RotationState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<RotationState>, Rejected> {
    use RotationState as S;
    match (state, event) {
        (S::RetryWait { run, at, .. }, Event::TimerFired { name }) if name == RETRY_TIMER => {
            not_before(at, ctx)?;
            Ok(Step {
                commands: vec![issue(run)],
                state: S::Issuing { run: run.clone() },
            })
        }
        (_, event @ Event::Cancel { .. }) => cancel(state, event, ctx),
        (state, event) => Err(not_applicable(
            Rotation::KIND,
            Rotation::state_name(state),
            &event,
        )),
    }
}

/// Events in Issuing.
fn on_issuing(
    state: &RotationState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<RotationState>, Rejected> {
    use RotationState as S;
    match (state, event) {
        (
            S::Issuing { run },
            Event::SecretIssued {
                version,
                secret_id,
                previous_version,
                previous_secret_id,
            },
        ) => {
            same_version(run, &version)?;
            let issued = Issued {
                new: SecretRef {
                    version: Some(version.clone()),
                    secret_id: Some(secret_id.clone()),
                },
                old: SecretRef {
                    version: previous_version,
                    secret_id: previous_secret_id,
                },
            };
            Ok(Step {
                commands: vec![
                    audit(
                        &run.agent,
                        AuditKind::SecretIssued,
                        Actor::System,
                        None,
                        vec![],
                        format!(
                            "new secret {secret_id} issued for client {} and stored as AWSPENDING version {version}; the current secret still works",
                            run.client_id()
                        ),
                    ),
                    Command::Idp(IdpCommand::TestSecret {
                        agent_id: run.agent.id.clone(),
                        version,
                    }),
                ],
                state: S::Verifying {
                    run: run.clone(),
                    issued,
                },
            })
        }
        (_, event @ Event::CommandFailed { .. }) => retry_or_fail(state, event, ctx),
        (_, event @ Event::Cancel { .. }) => cancel(state, event, ctx),
        (state, event) => Err(not_applicable(
            Rotation::KIND,
            Rotation::state_name(state),
            &event,
        )),
    }
}

/// Events in Verifying.
fn on_verifying(
    state: &RotationState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<RotationState>, Rejected> {
    use RotationState as S;
    match (state, event) {
        (S::Verifying { run, issued }, Event::SecretVerified { version }) => {
            same_version(run, &version)?;
            Ok(Step {
                commands: vec![Command::Vault(VaultCommand::Promote {
                    agent_id: run.agent.id.clone(),
                    version,
                })],
                state: S::Promoting {
                    run: run.clone(),
                    issued: issued.clone(),
                    verified_at: ctx.now,
                },
            })
        }
        (_, event @ Event::CommandFailed { .. }) => retry_or_fail(state, event, ctx),
        (_, event @ Event::Cancel { .. }) => cancel(state, event, ctx),
        (state, event) => Err(not_applicable(
            Rotation::KIND,
            Rotation::state_name(state),
            &event,
        )),
    }
}

/// Events in Promoting.
fn on_promoting(
    state: &RotationState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<RotationState>, Rejected> {
    use RotationState as S;
    match (state, event) {
        (
            S::Promoting {
                run,
                issued,
                verified_at,
            },
            Event::SecretPromoted { version },
        ) => {
            same_version(run, &version)?;
            let until =
                ctx.now + Duration::seconds(ctx.policy.lifecycle.rotation_grace_secs as i64);
            let receipt = CredentialReceipt {
                rotation: ctx.workflow_id.to_string(),
                reason: run.reason.describe(),
                old: issued.old.clone(),
                old_valid_from: run.agent.credential_issued_at,
                old_valid_until: None,
                old_revocation: None,
                new: issued.new.clone(),
                new_valid_from: ctx.now,
                verified_at: *verified_at,
                verification: format!(
                    "a client_credentials token was obtained with the new secret at {}",
                    verified_at.to_rfc3339()
                ),
            };
            Ok(Step {
                commands: vec![
                    Command::UpdateAgent {
                        agent_id: run.agent.id.clone(),
                        change: AgentChange::CredentialRotated { receipt },
                    },
                    audit(
                        &run.agent,
                        AuditKind::SecretRotated,
                        Actor::System,
                        None,
                        vec![],
                        format!(
                            "secret {} (version {version}) is current; the old secret {} keeps working until {}",
                            issued.new.secret_id.as_deref().unwrap_or("?"),
                            issued.old.secret_id.as_deref().unwrap_or("?"),
                            until.to_rfc3339()
                        ),
                    ),
                    Command::SetTimer {
                        name: GRACE_TIMER.into(),
                        at: until,
                    },
                ],
                state: S::Grace {
                    run: run.clone(),
                    issued: issued.clone(),
                    until,
                },
            })
        }
        (_, event @ Event::CommandFailed { .. }) => retry_or_fail(state, event, ctx),
        (_, event @ Event::Cancel { .. }) => cancel(state, event, ctx),
        (state, event) => Err(not_applicable(
            Rotation::KIND,
            Rotation::state_name(state),
            &event,
        )),
    }
}

/// Events in Grace.
fn on_grace(
    state: &RotationState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<RotationState>, Rejected> {
    use RotationState as S;
    match (state, event) {
        (S::Grace { run, issued, until }, Event::TimerFired { name }) if name == GRACE_TIMER => {
            not_before(until, ctx)?;
            let commands = match &issued.old.secret_id {
                Some(old) => vec![Command::Idp(IdpCommand::RemoveSecret {
                    client_id: run.client_id().to_string(),
                    secret_id: old.clone(),
                    key: run.agent.steward_holds_key(),
                })],
                None => vec![],
            };
            if commands.is_empty() {
                // Nothing known to remove: the vault held no previous credential document.
                return Ok(done(
                    run,
                    issued,
                    false,
                    "no previous secret id was recorded".into(),
                    ctx,
                ));
            }
            Ok(Step {
                commands,
                state: S::RevokingOld {
                    run: run.clone(),
                    issued: issued.clone(),
                },
            })
        }
        (_, event @ Event::Cancel { .. }) => cancel(state, event, ctx),
        (state, event) => Err(not_applicable(
            Rotation::KIND,
            Rotation::state_name(state),
            &event,
        )),
    }
}

/// Events in RevokingOld.
fn on_revoking_old(
    state: &RotationState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<RotationState>, Rejected> {
    use RotationState as S;
    match (state, event) {
        (S::RevokingOld { run, issued }, Event::SecretRemoved { secret_id }) => {
            if issued.old.secret_id.as_deref() != Some(secret_id.as_str()) {
                return Err(Rejected::new(
                    "secret_id",
                    format!("secret {secret_id} is not the one this rotation replaces"),
                ));
            }
            Ok(done(
                run,
                issued,
                true,
                format!("secret {secret_id} removed at the identity provider"),
                ctx,
            ))
        }
        (
            S::RevokingOld { run, issued },
            Event::CommandFailed {
                command, reason, ..
            },
        ) if command == "idp.remove_secret" => {
            let why = format!(
                "the old secret {} could not be removed ({command}: {reason}); the next rotation removes it, or remove it at the identity provider",
                issued.old.secret_id.as_deref().unwrap_or("?")
            );
            let mut step = done(run, issued, false, why.clone(), ctx);
            step.commands.push(Command::Notify {
                to: SECURITY_CHANNEL.into(),
                subject: format!("{}: old secret still valid", run.agent.name),
                body: why,
            });
            Ok(step)
        }
        (_, event @ Event::Cancel { .. }) => cancel(state, event, ctx),
        (state, event) => Err(not_applicable(
            Rotation::KIND,
            Rotation::state_name(state),
            &event,
        )),
    }
}

/// Events in Cancelled.
fn on_cancelled(
    state: &RotationState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<RotationState>, Rejected> {
    use RotationState as S;
    match (state, event) {
        (
            S::Cancelled {
                run,
                by,
                reason,
                issued,
                ..
            },
            Event::SecretPromoted { version },
        ) => {
            // The promotion was out when the cancel came: the vault's current secret is the
            // new one now, so the registry must say so.
            same_version(run, &version)?;
            let issued = issued.clone().unwrap_or(Issued {
                new: SecretRef {
                    version: Some(version.clone()),
                    secret_id: None,
                },
                old: SecretRef {
                    version: run.agent.secret_version.clone(),
                    secret_id: None,
                },
            });
            let receipt = CredentialReceipt {
                rotation: ctx.workflow_id.to_string(),
                reason: format!(
                    "{} (cancelled after promotion: {reason})",
                    run.reason.describe()
                ),
                old: issued.old.clone(),
                old_valid_from: run.agent.credential_issued_at,
                old_valid_until: None,
                old_revocation: Some(
                    "not removed by this rotation (cancelled); the next rotation removes it".into(),
                ),
                new: issued.new.clone(),
                new_valid_from: ctx.now,
                verified_at: ctx.now,
                verification: "a token was obtained with the new secret before promotion".into(),
            };
            Ok(Step {
                commands: vec![Command::UpdateAgent {
                    agent_id: run.agent.id.clone(),
                    change: AgentChange::CredentialRotated { receipt },
                }],
                state: S::Cancelled {
                    run: run.clone(),
                    by: by.clone(),
                    reason: reason.clone(),
                    promoted: true,
                    issued: Some(issued),
                },
            })
        }
        (
            S::Cancelled {
                run,
                issued: Some(issued),
                ..
            },
            Event::SecretRemoved { secret_id },
        ) if issued.old.secret_id.as_deref() == Some(secret_id.as_str()) => Ok(Step {
            // The removal was out when the cancel came: record when the old secret stopped.
            commands: vec![Command::UpdateAgent {
                agent_id: run.agent.id.clone(),
                change: AgentChange::OldSecretRevoked {
                    rotation: ctx.workflow_id.to_string(),
                    at: ctx.now,
                    removed: true,
                    detail: format!("secret {secret_id} removed at the identity provider"),
                },
            }],
            state: state.clone(),
        }),
        (
            S::Cancelled { .. },
            Event::SecretIssued { .. }
            | Event::SecretVerified { .. }
            | Event::SecretRemoved { .. }
            | Event::CommandFailed { .. },
        ) => Ok(Step {
            commands: vec![],
            state: state.clone(),
        }),
        (state, event) => Err(not_applicable(
            Rotation::KIND,
            Rotation::state_name(state),
            &event,
        )),
    }
}

/// CommandFailed in any of Issuing, Verifying, Promoting.
fn retry_or_fail(
    state: &RotationState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<RotationState>, Rejected> {
    use RotationState as S;
    match (state, event) {
        (
            S::Issuing { run } | S::Verifying { run, .. } | S::Promoting { run, .. },
            Event::CommandFailed {
                command, reason, ..
            },
        ) if command
            == match state {
                S::Issuing { .. } => "idp.issue_secret",
                S::Verifying { .. } => "idp.test_secret",
                _ => "vault.promote",
            } =>
        {
            Ok(failed(run, &command, &reason, ctx))
        }
        (state, event) => Err(not_applicable(
            Rotation::KIND,
            Rotation::state_name(state),
            &event,
        )),
    }
}

/// Cancel in any of Scheduled, Issuing, Verifying, Promoting, Grace, RevokingOld, RetryWait.
/// Who may stop a rotation: anyone the role table lets cancel, except that a rotation a
/// detection rule started (a credential seen from several places) is security's to stop: a
/// security approver or Steward itself, not the owner of the agent whose secret leaked.
pub fn check_canceller(run: &Run, by: &Actor, policy: &crate::Policy) -> Result<(), Rejected> {
    let RotationReason::Detection { rule } = &run.reason else {
        return Ok(());
    };
    match by {
        Actor::System => Ok(()),
        Actor::Person(p)
            if policy
                .approvers
                .iter()
                .any(|a| a.trim().eq_ignore_ascii_case(p.trim())) =>
        {
            Ok(())
        }
        other => Err(Rejected::new(
            "by",
            format!(
                "{} may not stop the rotation of {}: detection rule `{rule}` started it, and only a security approver may stop it",
                other.describe(),
                run.agent.name
            ),
        )),
    }
}

fn cancel(state: &RotationState, event: Event, ctx: &Ctx) -> Result<Step<RotationState>, Rejected> {
    use RotationState as S;
    if let Event::Cancel { by, .. } = &event {
        check_canceller(state.run(), by, ctx.policy)?;
    }
    match (state, event) {
        (
            S::Scheduled { run, .. }
            | S::Issuing { run }
            | S::Verifying { run, .. }
            | S::Promoting { run, .. }
            | S::Grace { run, .. }
            | S::RevokingOld { run, .. }
            | S::RetryWait { run, .. },
            Event::Cancel { by, reason },
        ) => {
            let commands = vec![
                Command::CancelTimer {
                    name: START_TIMER.into(),
                },
                Command::CancelTimer {
                    name: GRACE_TIMER.into(),
                },
                Command::CancelTimer {
                    name: RETRY_TIMER.into(),
                },
                audit(
                    &run.agent,
                    AuditKind::RotationCancelled,
                    by.clone(),
                    None,
                    vec![],
                    format!(
                        "rotation cancelled in {}: {reason}",
                        Rotation::state_name(state)
                    ),
                ),
            ];
            let promoted = matches!(state, S::Grace { .. } | S::RevokingOld { .. });
            let issued = match state {
                S::Verifying { issued, .. }
                | S::Promoting { issued, .. }
                | S::Grace { issued, .. }
                | S::RevokingOld { issued, .. } => Some(issued.clone()),
                _ => None,
            };
            Ok(Step {
                commands,
                state: S::Cancelled {
                    run: run.clone(),
                    by,
                    reason,
                    promoted,
                    issued,
                },
            })
        }
        (state, event) => Err(not_applicable(
            Rotation::KIND,
            Rotation::state_name(state),
            &event,
        )),
    }
}

fn issue(run: &Run) -> Command {
    Command::Idp(IdpCommand::IssueSecret {
        agent_id: run.agent.id.clone(),
        client_id: run.client_id().to_string(),
        version: run.version.clone(),
    })
}

fn same_version(run: &Run, version: &str) -> Result<(), Rejected> {
    if version != run.version {
        return Err(Rejected::new(
            "version",
            format!(
                "version {version} is not this attempt's version {} (a result of an earlier attempt)",
                run.version
            ),
        ));
    }
    Ok(())
}

fn done(
    run: &Run,
    issued: &Issued,
    removed: bool,
    detail: String,
    ctx: &Ctx,
) -> Step<RotationState> {
    let commands = vec![
        Command::UpdateAgent {
            agent_id: run.agent.id.clone(),
            change: AgentChange::OldSecretRevoked {
                rotation: ctx.workflow_id.to_string(),
                at: ctx.now,
                removed,
                detail: detail.clone(),
            },
        },
        Command::Audit(AuditEvent {
            kind: AuditKind::SecretRevoked,
            actor: Actor::System,
            agent_id: run.agent.id.clone(),
            agent_name: run.agent.name.clone(),
            approval_id: None,
            scopes: vec![],
            success: removed,
            message: detail,
        }),
    ];
    Step {
        commands,
        state: RotationState::Done {
            run: run.clone(),
            issued: issued.clone(),
            old_removed: removed,
        },
    }
}

/// A step before promotion failed for good: the old secret is still current and working.
fn failed(run: &Run, command: &str, reason: &str, ctx: &Ctx) -> Step<RotationState> {
    let lifecycle = &ctx.policy.lifecycle;
    let why = format!("{command} failed: {reason}");
    let mut commands = vec![Command::Audit(AuditEvent {
        kind: AuditKind::RotationFailed,
        actor: Actor::System,
        agent_id: run.agent.id.clone(),
        agent_name: run.agent.name.clone(),
        approval_id: None,
        scopes: vec![],
        success: false,
        message: format!(
            "attempt {} of {} failed ({why}); AWSCURRENT is unchanged (it still works where the IdP holds two secrets, e.g. Okta)",
            run.attempt, lifecycle.rotation_attempts
        ),
    })];
    if run.attempt < lifecycle.rotation_attempts {
        let wait = lifecycle
            .rotation_retry_secs
            .saturating_mul(1u64 << (run.attempt - 1).min(16));
        let at = ctx.now + Duration::seconds(wait as i64);
        commands.extend([
            Command::Notify {
                to: run.agent.owner.clone(),
                subject: format!("{}: secret rotation failed, retrying", run.agent.name),
                body: format!(
                    "Attempt {} to rotate the secret of {} failed: {why}. The current secret is unchanged and keeps working (an IdP holding one secret per client, RFC 7592, replaced it: use AWSPENDING there). Steward retries at {}.",
                    run.attempt,
                    run.agent.name,
                    at.format("%Y-%m-%d %H:%M UTC")
                ),
            },
            Command::SetTimer {
                name: RETRY_TIMER.into(),
                at,
            },
        ]);
        let next = Run {
            attempt: run.attempt + 1,
            version: version_token(ctx.workflow_id, run.attempt + 1),
            ..run.clone()
        };
        return Step {
            commands,
            state: RotationState::RetryWait {
                run: next,
                last_error: why,
                at,
            },
        };
    }
    let body = format!(
        "Rotating the secret of {} failed {} times; the last error: {why}. The current secret is unchanged and still works (except on an IdP holding one secret per client, where AWSPENDING holds the working one), but it is past its rotation age. Look at the identity provider, then rotate on demand with `steward agents rotate {}`.",
        run.agent.name, run.attempt, run.agent.name
    );
    commands.extend([
        Command::Notify {
            to: run.agent.owner.clone(),
            subject: format!("{}: secret rotation failed", run.agent.name),
            body: body.clone(),
        },
        Command::Notify {
            to: SECURITY_CHANNEL.into(),
            subject: format!(
                "{}: secret rotation failed {} times",
                run.agent.name, run.attempt
            ),
            body,
        },
    ]);
    Step {
        commands,
        state: RotationState::Failed {
            run: run.clone(),
            reason: why,
        },
    }
}
