//! Certificate expiry: Watching → Removing → Expired (→ Cancelled when the agent is
//! decommissioned first: its certificates are revoked and its client deleted anyway).
//!
//! A `tls_client_auth` agent's certificate lives `[credentials] certificate_lifetime_days`. The
//! sweep starts this watch `certificate_remind_days` before the certificate's end: the owner is
//! asked to renew it (`steward agents rotate-certificate` with the agent's next CSR). At its end
//! the certificate is removed at the identity provider, never left accepted there (the mTLS
//! token endpoint refuses an expired certificate anyway); the owner and security are told. A
//! certificate a rotation replaced first is gone already, and removing it again changes
//! nothing.

use crate::agent::Agent;
use crate::command::{Actor, AuditKind, Command, IdpCommand, SECURITY_CHANNEL, audit};
use crate::credential::{CertificateRecord, CredentialKind};
use crate::event::Event;
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, not_before, states, t,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Fires at the certificate's end (its `notAfter`).
pub const EXPIRY_TIMER: &str = "certificate-expiry";

/// Who acts in the audit: the schedule, not a person.
const SCHEDULE: &str = "certificate-expiry";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateExpiryInput {
    pub agent: Agent,
    /// The certificate watched, as the registry holds it.
    pub certificate: CertificateRecord,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub agent: Agent,
    pub certificate: CertificateRecord,
}

impl Watch {
    fn remove(&self) -> Command {
        Command::Idp(IdpCommand::RemoveCertificate {
            client_id: self.agent.client_id.clone().unwrap_or_default(),
            x5t_s256: self.certificate.x5t_s256.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum CertificateExpiryState {
    Watching { watch: Watch },
    Removing { watch: Watch },
    Expired { watch: Watch, at: DateTime<Utc> },
    Failed { watch: Watch, reason: String },
    Cancelled { watch: Watch, reason: String },
}

pub struct CertificateExpiry;

states! {
    CertificateExpiryState {
        Watching,
        Removing,
        Expired: terminal,
        Failed: terminal,
        Cancelled: terminal,
    }
}

impl Workflow for CertificateExpiry {
    type State = CertificateExpiryState;
    type Input = CertificateExpiryInput;
    const KIND: &'static str = "certificate_expiry";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "Watching"),
        t(START, "start", "Removing"),
        t("Watching", "TimerFired", "Removing"),
        t("Removing", "CertificateRemoved", "Expired"),
        t("Removing", "CommandFailed", "Failed"),
        t("Watching", "Cancel", "Cancelled"),
        t("Removing", "Cancel", "Cancelled"),
        t("Cancelled", "CertificateRemoved", "Cancelled"),
        t("Cancelled", "CommandFailed", "Cancelled"),
    ];

    fn start(
        input: CertificateExpiryInput,
        ctx: &Ctx,
    ) -> Result<Step<CertificateExpiryState>, Rejected> {
        let CertificateExpiryInput { agent, certificate } = input;
        if agent.credential_kind != CredentialKind::TlsClientAuth || agent.client_id.is_none() {
            return Err(Rejected::new(
                "agent",
                format!("{} does not authenticate with a certificate", agent.name),
            ));
        }
        if !agent
            .certificates
            .iter()
            .any(|c| c.serial == certificate.serial && !c.revoked_for_good())
        {
            return Err(Rejected::new(
                "certificate",
                format!(
                    "{} holds no valid certificate {}",
                    agent.name, certificate.serial
                ),
            ));
        }
        let watch = Watch { agent, certificate };
        if watch.certificate.not_after <= ctx.now {
            return Ok(Step {
                commands: vec![watch.remove()],
                state: CertificateExpiryState::Removing { watch },
            });
        }
        let when = watch.certificate.not_after.format("%Y-%m-%d %H:%M UTC");
        let (serial, name) = (&watch.certificate.serial, &watch.agent.name);
        Ok(Step {
            commands: vec![
                audit(
                    &watch.agent,
                    AuditKind::RotationRequested,
                    Actor::Schedule(SCHEDULE.into()),
                    None,
                    vec![],
                    format!(
                        "certificate {serial} of {name} ends at {when}; its owner is asked to renew it"
                    ),
                ),
                Command::Notify {
                    to: watch.agent.owner.clone(),
                    subject: format!("{name}: its certificate ends at {when}"),
                    body: format!(
                        "Certificate {serial} of {name} ends at {when} and is then no longer accepted. Have the agent make a new key and CSR, and renew before: steward agents rotate-certificate {name} --csr <file> (POST /api/agents/{name}/certificates)."
                    ),
                },
                Command::SetTimer {
                    name: EXPIRY_TIMER.into(),
                    at: watch.certificate.not_after,
                },
            ],
            state: CertificateExpiryState::Watching { watch },
        })
    }

    fn on(
        state: &CertificateExpiryState,
        event: Event,
        ctx: &Ctx,
    ) -> Result<Step<CertificateExpiryState>, Rejected> {
        use CertificateExpiryState as S;
        match (state, event) {
            (S::Watching { watch }, Event::TimerFired { name }) if name == EXPIRY_TIMER => {
                not_before(&watch.certificate.not_after, ctx)?;
                Ok(Step {
                    commands: vec![watch.remove()],
                    state: S::Removing {
                        watch: watch.clone(),
                    },
                })
            }
            (S::Removing { watch }, Event::CertificateRemoved { x5t_s256 })
                if x5t_s256 == watch.certificate.x5t_s256 =>
            {
                let why = format!(
                    "certificate {} of {} reached its end and was removed at the identity provider",
                    watch.certificate.serial, watch.agent.name
                );
                Ok(Step {
                    commands: vec![
                        audit(
                            &watch.agent,
                            AuditKind::SecretRevoked,
                            Actor::Schedule(SCHEDULE.into()),
                            None,
                            vec![],
                            why.clone(),
                        ),
                        Command::Notify {
                            to: watch.agent.owner.clone(),
                            subject: format!("{}: its certificate expired", watch.agent.name),
                            body: format!(
                                "{why}. Unless it was renewed, it obtains no token until a new certificate is issued (steward agents rotate-certificate)."
                            ),
                        },
                        Command::Notify {
                            to: SECURITY_CHANNEL.into(),
                            subject: format!("{}: certificate expired", watch.agent.name),
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
                    "certificate {} of {} reached its end but could not be removed at the identity provider: {reason}; the mTLS token endpoint refuses it as expired, but an identity provider that does not check dates may still accept it",
                    watch.certificate.serial, watch.agent.name
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
                            subject: format!(
                                "{}: expired certificate still registered",
                                watch.agent.name
                            ),
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
            (
                S::Cancelled { .. },
                Event::CertificateRemoved { .. } | Event::CommandFailed { .. },
            ) => Ok(Step {
                commands: vec![],
                state: state.clone(),
            }),
            (state, event) => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}
