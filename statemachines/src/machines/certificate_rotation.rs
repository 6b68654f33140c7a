//! Certificate rotation: Issuing → AwaitingUse → Grace → RetiringOld → Done
//! (AwaitingUse → Abandoning → Failed when the new certificate is not used in time).
//!
//! For a `tls_client_auth` agent renewing its certificate before it expires. The owner (or a
//! security approver) brings the agent's new CSR (its signature is the proof of possession,
//! checked as at onboarding); the internal CA issues the new certificate (same CA, same SPIFFE
//! id, a new serial and `x5t#S256`) and the identity provider accepts it beside the current one,
//! so nothing stops working. The new certificate counts as verified on the first token grant
//! over mutual TLS with it (the agent switched), or when the owner or a security approver
//! confirms the switch where the IdP does not say which certificate a grant used. A new
//! certificate still unused at `[credentials] first_use_secs` is removed at the IdP and revoked
//! again, and the current one keeps working. The certificates it replaces keep working
//! through the grace period, then they are removed at the IdP and revoked (reason
//! `superseded`: the CRL lists them). A freeze or a decommission cancels the rotation at any
//! step.

use crate::agent::{Agent, AgentChange, AgentStatus};
use crate::command::{Actor, AuditKind, Command, IdpCommand, SECURITY_CHANNEL, audit};
use crate::credential::{
    CESSATION_OF_OPERATION, CertificateOrder, CertificateRecord, CredentialKind, SUPERSEDED,
};
use crate::event::Event;
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, not_before, states, t,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Ends the grace period of the certificates the new one replaces.
pub const GRACE_TIMER: &str = "certificate-rotation-grace";
/// Ends the wait for the new certificate's first use.
pub const FIRST_USE_TIMER: &str = "certificate-rotation-first-use";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRotationInput {
    /// The registry record now.
    pub agent: Agent,
    /// The agent's new CSR (checked before the rotation starts) and the policy's certificate
    /// settings now.
    pub order: CertificateOrder,
    pub requested_by: Actor,
}

/// What every state carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRun {
    pub agent: Agent,
    pub order: CertificateOrder,
    pub requested_by: Actor,
    /// The certificates valid when the rotation started: revoked after the grace period.
    pub old: Vec<CertificateRecord>,
    /// The new certificate, once issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<CertificateRecord>,
}

impl CertificateRun {
    fn client_id(&self) -> String {
        self.agent.client_id.clone().unwrap_or_default()
    }
    fn new_serial(&self) -> &str {
        self.new.as_ref().map(|c| c.serial.as_str()).unwrap_or("?")
    }
    fn old_serials(&self) -> String {
        self.old
            .iter()
            .map(|c| c.serial.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum CertificateRotationState {
    /// The CA issues the new certificate and the IdP gets it beside the current one.
    Issuing {
        run: CertificateRun,
    },
    AwaitingUse {
        run: CertificateRun,
        /// An unused new certificate is removed and revoked again at this time.
        deadline: DateTime<Utc>,
    },
    Grace {
        run: CertificateRun,
        used_at: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// Removing and revoking the old certificates one at a time; `remaining` still work.
    RetiringOld {
        run: CertificateRun,
        remaining: Vec<CertificateRecord>,
    },
    /// The new certificate was never used: removed at the IdP, then revoked.
    Abandoning {
        run: CertificateRun,
    },
    Done {
        run: CertificateRun,
    },
    Failed {
        run: CertificateRun,
        reason: String,
    },
    Cancelled {
        run: CertificateRun,
        by: Actor,
        reason: String,
    },
}

impl CertificateRotationState {
    pub fn run(&self) -> &CertificateRun {
        match self {
            Self::Issuing { run }
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

pub struct CertificateRotation;

states! {
    CertificateRotationState {
        Issuing,
        AwaitingUse,
        Grace,
        RetiringOld,
        Abandoning,
        Done: terminal,
        Failed: terminal,
        Cancelled: terminal,
    }
}

impl Workflow for CertificateRotation {
    type State = CertificateRotationState;
    type Input = CertificateRotationInput;
    const KIND: &'static str = "certificate_rotation";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "Issuing"),
        t("Issuing", "CertificateAdded", "AwaitingUse"),
        t("Issuing", "CommandFailed", "Failed"),
        t("AwaitingUse", "CertificateUsed", "Grace"),
        t("AwaitingUse", "TimerFired", "Abandoning"),
        t("Abandoning", "CertificateRemoved", "Failed"),
        t("Abandoning", "CommandFailed", "Failed"),
        t("Grace", "TimerFired", "RetiringOld"),
        t("RetiringOld", "CertificateRemoved", "RetiringOld"),
        t("RetiringOld", "CertificateRemoved", "Done"),
        t("RetiringOld", "CommandFailed", "Failed"),
        t("Issuing", "Cancel", "Cancelled"),
        t("AwaitingUse", "Cancel", "Cancelled"),
        t("Grace", "Cancel", "Cancelled"),
        t("RetiringOld", "Cancel", "Cancelled"),
        t("Abandoning", "Cancel", "Cancelled"),
        // Results of commands already out when the cancel came: recorded, nothing more runs.
        t("Cancelled", "CertificateAdded", "Cancelled"),
        t("Cancelled", "CertificateRemoved", "Cancelled"),
        t("Cancelled", "CertificateUsed", "Cancelled"),
        t("Cancelled", "CommandFailed", "Cancelled"),
    ];

    fn start(
        input: CertificateRotationInput,
        ctx: &Ctx,
    ) -> Result<Step<CertificateRotationState>, Rejected> {
        let CertificateRotationInput {
            agent,
            order,
            requested_by,
        } = input;
        if agent.status != AgentStatus::Active || agent.client_id.is_none() {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} is {}; only active agents have their certificate rotated",
                    agent.name,
                    agent.status.as_str()
                ),
            ));
        }
        if agent.credential_kind != CredentialKind::TlsClientAuth {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} does not authenticate with a certificate (tls_client_auth); rotate its {} instead",
                    agent.name,
                    if agent.credential_kind.key_bound() {
                        "key"
                    } else {
                        "secret"
                    }
                ),
            ));
        }
        let old: Vec<CertificateRecord> = agent
            .certificates
            .iter()
            .filter(|c| c.revoked.is_none())
            .cloned()
            .collect();
        if old.is_empty() {
            return Err(Rejected::new(
                "agent",
                format!("{} holds no valid certificate to rotate", agent.name),
            ));
        }
        let run = CertificateRun {
            agent,
            order,
            requested_by,
            old,
            new: None,
        };
        let requested = audit(
            &run.agent,
            AuditKind::RotationRequested,
            run.requested_by.clone(),
            None,
            vec![],
            format!(
                "rotation of the certificate of {}: a new certificate from its CSR replaces {}",
                run.agent.name,
                run.old_serials()
            ),
        );
        let add = Command::Idp(IdpCommand::AddCertificate {
            agent_id: run.agent.id.clone(),
            name: run.agent.name.clone(),
            client_id: run.client_id(),
            order: run.order.clone(),
        });
        let _ = ctx;
        Ok(Step {
            commands: vec![requested, add],
            state: CertificateRotationState::Issuing { run },
        })
    }

    fn on(
        state: &CertificateRotationState,
        event: Event,
        ctx: &Ctx,
    ) -> Result<Step<CertificateRotationState>, Rejected> {
        use CertificateRotationState as S;
        match (state, event) {
            (S::Issuing { run }, Event::CertificateAdded { certificate }) => {
                let deadline =
                    ctx.now + Duration::seconds(ctx.policy.credentials.first_use_secs as i64);
                let mut run = run.clone();
                run.new = Some(certificate.clone());
                Ok(Step {
                    commands: vec![
                        Command::UpdateAgent {
                            agent_id: run.agent.id.clone(),
                            change: AgentChange::CertificateAdded {
                                certificate: certificate.clone(),
                            },
                        },
                        audit(
                            &run.agent,
                            AuditKind::SecretIssued,
                            Actor::System,
                            None,
                            vec![],
                            format!(
                                "certificate {} ({}, x5t#S256 {}, valid until {}) accepted for client {} beside {}; both work until the agent has used the new one",
                                certificate.serial,
                                certificate.spiffe_id,
                                certificate.x5t_s256,
                                certificate.not_after.to_rfc3339(),
                                run.client_id(),
                                run.old_serials()
                            ),
                        ),
                        Command::Notify {
                            to: run.agent.owner.clone(),
                            subject: format!("{}: switch to the new certificate", run.agent.name),
                            body: format!(
                                "Certificate {} is issued for {}, valid until {}. Fetch it with `steward agents certificate {}` (GET /api/agents/{}/certificate) and switch the agent to it before {}; once it obtains a token with it, the old certificate is revoked after the grace period. Where the identity provider does not report which certificate a grant used, confirm the switch with `steward agents confirm-certificate {} {}`. A new certificate still unused at the deadline is revoked again.",
                                certificate.serial,
                                run.agent.name,
                                certificate.not_after.format("%Y-%m-%d %H:%M UTC"),
                                run.agent.name,
                                run.agent.name,
                                deadline.format("%Y-%m-%d %H:%M UTC"),
                                run.agent.name,
                                certificate.serial,
                            ),
                        },
                        Command::SetTimer {
                            name: FIRST_USE_TIMER.into(),
                            at: deadline,
                        },
                    ],
                    state: S::AwaitingUse { run, deadline },
                })
            }
            (
                S::AwaitingUse { run, .. },
                Event::CertificateUsed {
                    x5t_s256,
                    confirmed_by,
                },
            ) if run.new.as_ref().is_some_and(|c| c.x5t_s256 == x5t_s256) => {
                let (actor, how) = match confirmed_by {
                    Some(person) => (
                        Actor::Person(person.clone()),
                        format!(
                            "{person} confirmed the agent uses certificate {}",
                            run.new_serial()
                        ),
                    ),
                    None => (
                        Actor::System,
                        format!(
                            "the agent obtained a token with certificate {}",
                            run.new_serial()
                        ),
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
                                "{how}: verified; the old certificate is revoked at {}",
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
                let new = run.new.as_ref().map(|c| c.x5t_s256.clone());
                Ok(Step {
                    commands: vec![Command::Idp(IdpCommand::RemoveCertificate {
                        client_id: run.client_id(),
                        x5t_s256: new.unwrap_or_default(),
                    })],
                    state: S::Abandoning { run: run.clone() },
                })
            }
            (S::Abandoning { run }, Event::CertificateRemoved { x5t_s256 })
                if run.new.as_ref().is_some_and(|c| c.x5t_s256 == x5t_s256) =>
            {
                let reason = format!(
                    "certificate {} was never used before the deadline: removed at the identity provider and revoked ({CESSATION_OF_OPERATION}); the current certificate keeps working",
                    run.new_serial()
                );
                let mut step = fail(run, reason, false);
                step.commands.insert(
                    0,
                    Command::UpdateAgent {
                        agent_id: run.agent.id.clone(),
                        change: AgentChange::CertificateRevoked {
                            serial: run.new_serial().to_string(),
                            at: ctx.now,
                            reason: CESSATION_OF_OPERATION.into(),
                        },
                    },
                );
                Ok(step)
            }
            (S::Abandoning { run }, Event::CommandFailed { reason, .. }) => Ok(fail(
                run,
                format!(
                    "certificate {} was never used and could not be removed again: {reason}; it still works until it expires",
                    run.new_serial()
                ),
                true,
            )),
            (S::Grace { run, until, .. }, Event::TimerFired { name }) if name == GRACE_TIMER => {
                not_before(until, ctx)?;
                Ok(retire_next(run, run.old.clone()))
            }
            (S::RetiringOld { run, remaining }, Event::CertificateRemoved { x5t_s256 })
                if remaining.first().is_some_and(|c| c.x5t_s256 == x5t_s256) =>
            {
                let gone = &remaining[0];
                let mut step = retire_next(run, remaining[1..].to_vec());
                step.commands.splice(
                    0..0,
                    [
                        Command::UpdateAgent {
                            agent_id: run.agent.id.clone(),
                            change: AgentChange::CertificateRevoked {
                                serial: gone.serial.clone(),
                                at: ctx.now,
                                reason: SUPERSEDED.into(),
                            },
                        },
                        audit(
                            &run.agent,
                            AuditKind::SecretRevoked,
                            Actor::System,
                            None,
                            vec![],
                            format!(
                                "certificate {} ({}) of {} removed from client {} and revoked ({SUPERSEDED}): the CRL lists it and the mTLS token endpoint refuses it",
                                gone.serial,
                                gone.spiffe_id,
                                run.agent.name,
                                run.client_id()
                            ),
                        ),
                    ],
                );
                Ok(step)
            }
            (S::Issuing { run }, Event::CommandFailed { reason, .. }) => Ok(fail(
                run,
                format!("the new certificate could not be issued or registered: {reason}"),
                false,
            )),
            (S::RetiringOld { run, remaining }, Event::CommandFailed { reason, .. }) => Ok(fail(
                run,
                format!(
                    "the old certificate {} could not be removed: {reason}; it still works",
                    remaining.first().map(|c| c.serial.as_str()).unwrap_or("?")
                ),
                true,
            )),
            (
                S::Issuing { run }
                | S::AwaitingUse { run, .. }
                | S::Grace { run, .. }
                | S::RetiringOld { run, .. }
                | S::Abandoning { run },
                Event::Cancel { by, reason },
            ) => Ok(Step {
                commands: vec![audit(
                    &run.agent,
                    AuditKind::RotationFailed,
                    by.clone(),
                    None,
                    vec![],
                    format!(
                        "certificate rotation of {} cancelled: {reason}",
                        run.agent.name
                    ),
                )],
                state: S::Cancelled {
                    run: run.clone(),
                    by,
                    reason,
                },
            }),
            // A certificate issued after the cancel is still recorded, so the registry (and a
            // decommission's revocations) know every certificate the CA issued to the agent.
            (S::Cancelled { run, .. }, Event::CertificateAdded { certificate }) => Ok(Step {
                commands: vec![Command::UpdateAgent {
                    agent_id: run.agent.id.clone(),
                    change: AgentChange::CertificateAdded { certificate },
                }],
                state: state.clone(),
            }),
            (
                S::Cancelled { .. },
                Event::CertificateRemoved { .. }
                | Event::CertificateUsed { .. }
                | Event::CommandFailed { .. },
            ) => Ok(Step {
                commands: vec![],
                state: state.clone(),
            }),
            (state, event) => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}

/// Removes the next old certificate, or ends the rotation when none is left.
fn retire_next(
    run: &CertificateRun,
    remaining: Vec<CertificateRecord>,
) -> Step<CertificateRotationState> {
    match remaining.first() {
        Some(cert) => Step {
            commands: vec![Command::Idp(IdpCommand::RemoveCertificate {
                client_id: run.client_id(),
                x5t_s256: cert.x5t_s256.clone(),
            })],
            state: CertificateRotationState::RetiringOld {
                run: run.clone(),
                remaining,
            },
        },
        None => Step {
            commands: vec![
                audit(
                    &run.agent,
                    AuditKind::SecretRevoked,
                    Actor::System,
                    None,
                    vec![],
                    format!(
                        "certificate rotation of {} done: {} is its certificate; {} revoked",
                        run.agent.name,
                        run.new_serial(),
                        run.old_serials()
                    ),
                ),
                Command::Notify {
                    to: run.agent.owner.clone(),
                    subject: format!("{}: certificate rotated", run.agent.name),
                    body: format!(
                        "{} now authenticates with certificate {} only.",
                        run.agent.name,
                        run.new_serial()
                    ),
                },
            ],
            state: CertificateRotationState::Done { run: run.clone() },
        },
    }
}

/// Ends in Failed, telling the owner (and security when something is left to clean up).
fn fail(run: &CertificateRun, reason: String, raise: bool) -> Step<CertificateRotationState> {
    let mut commands = vec![
        audit(
            &run.agent,
            AuditKind::RotationFailed,
            Actor::System,
            None,
            vec![],
            format!(
                "certificate rotation of {} failed: {reason}",
                run.agent.name
            ),
        ),
        Command::Notify {
            to: run.agent.owner.clone(),
            subject: format!("{}: certificate rotation failed", run.agent.name),
            body: reason.clone(),
        },
    ];
    if raise {
        commands.push(Command::Notify {
            to: SECURITY_CHANNEL.into(),
            subject: format!("{}: certificate rotation needs a person", run.agent.name),
            body: reason.clone(),
        });
    }
    Step {
        commands,
        state: CertificateRotationState::Failed {
            run: run.clone(),
            reason,
        },
    }
}
