//! Decommission: (AwaitingApproval) → RevokingTokens → Deactivating → Deleting →
//! SchedulingSecretDeletion → Decommissioned, with a revocation receipt.
//!
//! Requests from the owner, or for an agent whose owner left, wait for a security approver.
//! Requests that carry a person's decision already (a review's Revoke, a freeze's Decommission)
//! and an agent's own expiry date (approved at onboarding, reminded before) go straight on.
//! Each IdP step that fails for good is written into the receipt with its reason and the
//! decommission goes on: the receipt says what was revoked, what could not be and why, and the
//! time after which no token issued to the agent can still be valid. The registry record is
//! archived (status `decommissioned`), never erased.

use crate::agent::{Agent, AgentChange, AgentStatus};
use crate::approval::{ApprovalRequest, Ask, Ballot, Deadline, Decision};
use crate::command::{Actor, AuditKind, Command, IdpCommand, VaultCommand, audit};
use crate::credential::CESSATION_OF_OPERATION;
use crate::event::Event;
pub use crate::lifecycle::{DecommissionReason, expiry_deadline};
use crate::receipt::{
    DEACTIVATE, DELETE, REVOKE, REVOKE_CERTIFICATE, RevocationReceipt, SCHEDULE_DELETION,
};
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use chrono::Duration;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecommissionInput {
    pub agent: Agent,
    pub reason: DecommissionReason,
    pub requested_by: Actor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
#[allow(clippy::large_enum_variant)] // states are stored as JSON
pub enum DecommissionState {
    AwaitingApproval {
        agent: Agent,
        reason: DecommissionReason,
        approval: ApprovalRequest,
        receipt: RevocationReceipt,
    },
    RevokingTokens {
        agent: Agent,
        receipt: RevocationReceipt,
    },
    Deactivating {
        agent: Agent,
        receipt: RevocationReceipt,
    },
    Deleting {
        agent: Agent,
        receipt: RevocationReceipt,
    },
    SchedulingSecretDeletion {
        agent: Agent,
        receipt: RevocationReceipt,
    },
    Decommissioned {
        agent: Agent,
        receipt: RevocationReceipt,
    },
    /// The approval was denied or expired: the agent stays as it is.
    Kept { agent: Agent, why: String },
    Cancelled {
        agent: Agent,
        by: Actor,
        reason: String,
    },
}

impl DecommissionState {
    pub fn agent(&self) -> &Agent {
        match self {
            Self::AwaitingApproval { agent, .. }
            | Self::RevokingTokens { agent, .. }
            | Self::Deactivating { agent, .. }
            | Self::Deleting { agent, .. }
            | Self::SchedulingSecretDeletion { agent, .. }
            | Self::Decommissioned { agent, .. }
            | Self::Kept { agent, .. }
            | Self::Cancelled { agent, .. } => agent,
        }
    }
}

pub struct Decommission;

states! {
    DecommissionState {
        AwaitingApproval,
        RevokingTokens,
        Deactivating,
        Deleting,
        SchedulingSecretDeletion,
        Decommissioned: terminal,
        Kept: terminal,
        Cancelled: terminal,
    }
}

impl Workflow for Decommission {
    type State = DecommissionState;
    type Input = DecommissionInput;
    const KIND: &'static str = "decommission";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "AwaitingApproval"),
        t(START, "start", "RevokingTokens"),
        t(START, "start", "SchedulingSecretDeletion"),
        t(
            "AwaitingApproval",
            "ApprovalDecided(approve)",
            "RevokingTokens",
        ),
        t(
            "AwaitingApproval",
            "ApprovalDecided(approve)",
            "SchedulingSecretDeletion",
        ),
        t("AwaitingApproval", "ApprovalDecided(deny)", "Kept"),
        t("AwaitingApproval", "TimerFired", "AwaitingApproval"),
        t("AwaitingApproval", "TimerFired", "Kept"),
        t("AwaitingApproval", "Cancel", "Cancelled"),
        t("RevokingTokens", "TokensRevoked", "Deactivating"),
        t("RevokingTokens", "CommandFailed", "Deactivating"),
        t("Deactivating", "ClientDeactivated", "Deleting"),
        t("Deactivating", "CommandFailed", "Deleting"),
        t("Deleting", "ClientDeleted", "SchedulingSecretDeletion"),
        t("Deleting", "CommandFailed", "SchedulingSecretDeletion"),
        t(
            "SchedulingSecretDeletion",
            "SecretDeletionScheduled",
            "Decommissioned",
        ),
        t(
            "SchedulingSecretDeletion",
            "CommandFailed",
            "Decommissioned",
        ),
    ];

    fn start(input: DecommissionInput, ctx: &Ctx) -> Result<Step<DecommissionState>, Rejected> {
        let DecommissionInput {
            agent,
            reason,
            requested_by,
        } = input;
        if agent.status == AgentStatus::Decommissioned {
            return Err(Rejected::new(
                "agent",
                format!("{} is decommissioned already", agent.name),
            ));
        }
        if !matches!(
            agent.status,
            AgentStatus::Active | AgentStatus::Failed | AgentStatus::Frozen
        ) {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} is {}; only active, frozen or failed agents are decommissioned; cancel a pending request instead",
                    agent.name,
                    agent.status.as_str()
                ),
            ));
        }
        let receipt = RevocationReceipt {
            workflow: ctx.workflow_id.to_string(),
            reason: reason.describe(),
            requested_by: requested_by.describe(),
            approved_by: reason
                .decided_by()
                .map(str::to_string)
                .into_iter()
                .collect(),
            client_id: agent.client_id.clone(),
            steps: vec![],
            token_lifetime_secs: agent.token_lifetime_secs,
            no_token_valid_after: None,
            secret_deleted_after: None,
            completed_at: None,
        };
        let requested = audit(
            &agent,
            AuditKind::DecommissionRequested,
            requested_by.clone(),
            None,
            agent.scopes.clone(),
            format!(
                "decommission of {} requested ({})",
                agent.name,
                reason.describe()
            ),
        );
        if reason.needs_approval() {
            let requester = match &requested_by {
                Actor::Person(p) => p.clone(),
                other => other.describe(),
            };
            let approval = ApprovalRequest::open(
                ctx,
                &agent,
                &requester,
                Ask {
                    action: "decommission",
                    scopes_added: vec![],
                    scopes_removed: agent.scopes.clone(),
                    sensitive_scopes: vec![],
                    token_lifetime_secs: agent.token_lifetime_secs,
                    justification: reason.describe(),
                },
            );
            approval.check_quorum_reachable()?;
            return Ok(Step {
                commands: [vec![requested], approval.opening_commands(&agent)].concat(),
                state: DecommissionState::AwaitingApproval {
                    agent,
                    reason,
                    approval,
                    receipt,
                },
            });
        }
        let mut step = begin(agent, receipt, ctx);
        step.commands.insert(0, requested);
        Ok(step)
    }

    fn on(
        state: &DecommissionState,
        event: Event,
        ctx: &Ctx,
    ) -> Result<Step<DecommissionState>, Rejected> {
        use DecommissionState as S;
        // One handler per state; a state without one refuses every event.
        match state {
            S::AwaitingApproval { .. } => on_awaiting_approval(state, event, ctx),
            S::RevokingTokens { .. } => on_revoking_tokens(state, event, ctx),
            S::Deactivating { .. } => on_deactivating(state, event, ctx),
            S::Deleting { .. } => on_deleting(state, event, ctx),
            S::SchedulingSecretDeletion { .. } => on_scheduling_secret_deletion(state, event, ctx),
            _ => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}

/// Events in AwaitingApproval.
fn on_awaiting_approval(
    state: &DecommissionState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<DecommissionState>, Rejected> {
    use DecommissionState as S;
    match (state, event) {
        (
            S::AwaitingApproval {
                agent,
                approval,
                receipt,
                ..
            },
            Event::ApprovalDecided {
                approval_id,
                decision,
                approver,
                reason,
            },
        ) => match approval.ballot(agent, &approval_id, decision, &approver, reason, ctx.now)? {
            Ballot::Pending { approval, commands } => {
                let mut next = state.clone();
                if let S::AwaitingApproval { approval: a, .. } = &mut next {
                    *a = approval;
                }
                Ok(Step {
                    commands,
                    state: next,
                })
            }
            Ballot::Decided {
                decision: Decision::Approve,
                approvers,
                commands,
                ..
            } => {
                let mut receipt = receipt.clone();
                receipt.approved_by = approvers;
                let mut step = begin(agent.clone(), receipt, ctx);
                step.commands.splice(0..0, commands);
                Ok(step)
            }
            Ballot::Decided {
                approver,
                reason,
                mut commands,
                ..
            } => {
                let why = format!(
                    "{approver} denied the decommission{}",
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                );
                commands.push(audit(
                    agent,
                    AuditKind::DecommissionKept,
                    Actor::Person(approver),
                    Some(&approval.id),
                    vec![],
                    format!("{} stays active: {why}", agent.name),
                ));
                Ok(Step {
                    commands,
                    state: S::Kept {
                        agent: agent.clone(),
                        why,
                    },
                })
            }
        },
        (
            S::AwaitingApproval {
                agent, approval, ..
            },
            Event::TimerFired { name },
        ) if ApprovalRequest::is_timer(&name) => {
            match approval.deadline(agent, &name, ctx.now, "the agent stays active")? {
                Deadline::Reminded(commands) => Ok(Step {
                    commands,
                    state: state.clone(),
                }),
                Deadline::Expired(commands) => Ok(Step {
                    commands,
                    state: S::Kept {
                        agent: agent.clone(),
                        why: format!("approval {} expired unanswered", approval.id),
                    },
                }),
            }
        }
        (
            S::AwaitingApproval {
                agent, approval, ..
            },
            Event::Cancel { by, reason },
        ) => {
            approval.check_canceller(&by)?;
            let mut commands = approval.cancelled_commands(ctx.now);
            commands.push(audit(
                agent,
                AuditKind::RequestCancelled,
                by.clone(),
                Some(&approval.id),
                vec![],
                format!("decommission request cancelled: {reason}"),
            ));
            Ok(Step {
                commands,
                state: S::Cancelled {
                    agent: agent.clone(),
                    by,
                    reason,
                },
            })
        }
        (state, event) => Err(not_applicable(
            Decommission::KIND,
            Decommission::state_name(state),
            &event,
        )),
    }
}

/// Events in RevokingTokens.
fn on_revoking_tokens(
    state: &DecommissionState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<DecommissionState>, Rejected> {
    use DecommissionState as S;
    match (state, event) {
        (S::RevokingTokens { agent, receipt }, event) => {
            let mut receipt = receipt.clone();
            match event {
                Event::TokensRevoked {
                    revoked,
                    outstanding,
                } => receipt.step(
                    REVOKE,
                    true,
                    match outstanding {
                        Some(o) => format!("revoked {revoked}; still valid: {o}"),
                        None => format!("revoked {revoked}; nothing issued stays valid"),
                    },
                    ctx.now,
                ),
                Event::CommandFailed {
                    command, reason, ..
                } if command == "idp.revoke_tokens" => receipt.step(
                    REVOKE,
                    false,
                    format!("could not revoke tokens: {reason}"),
                    ctx.now,
                ),
                other => return Err(not_applicable(Decommission::KIND, "RevokingTokens", &other)),
            }
            Ok(Step {
                commands: vec![Command::Idp(IdpCommand::DeactivateClient {
                    client_id: receipt.client_id.clone().unwrap_or_default(),
                })],
                state: S::Deactivating {
                    agent: agent.clone(),
                    receipt,
                },
            })
        }
        (state, event) => Err(not_applicable(
            Decommission::KIND,
            Decommission::state_name(state),
            &event,
        )),
    }
}

/// Events in Deactivating.
fn on_deactivating(
    state: &DecommissionState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<DecommissionState>, Rejected> {
    use DecommissionState as S;
    match (state, event) {
        (S::Deactivating { agent, receipt }, event) => {
            let mut receipt = receipt.clone();
            match event {
                Event::ClientDeactivated { client_id } => receipt.step(
                    DEACTIVATE,
                    true,
                    format!("client {client_id} deactivated: it can obtain no new token"),
                    ctx.now,
                ),
                Event::CommandFailed {
                    command, reason, ..
                } if command == "idp.deactivate_client" => receipt.step(
                    DEACTIVATE,
                    false,
                    format!("could not deactivate the client: {reason}"),
                    ctx.now,
                ),
                other => return Err(not_applicable(Decommission::KIND, "Deactivating", &other)),
            }
            let mut commands = vec![Command::Idp(IdpCommand::DeleteClient {
                client_id: receipt.client_id.clone().unwrap_or_default(),
            })];
            if let Some(at) = receipt.disabled_at() {
                commands.insert(
                    0,
                    audit(
                        agent,
                        AuditKind::ClientDisabled,
                        Actor::System,
                        None,
                        vec![],
                        format!(
                            "client {} disabled at {}",
                            receipt.client_id.as_deref().unwrap_or("?"),
                            at.to_rfc3339()
                        ),
                    ),
                );
            }
            Ok(Step {
                commands,
                state: S::Deleting {
                    agent: agent.clone(),
                    receipt,
                },
            })
        }
        (state, event) => Err(not_applicable(
            Decommission::KIND,
            Decommission::state_name(state),
            &event,
        )),
    }
}

/// Events in Deleting.
fn on_deleting(
    state: &DecommissionState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<DecommissionState>, Rejected> {
    use DecommissionState as S;
    match (state, event) {
        (S::Deleting { agent, receipt }, event) => {
            let mut receipt = receipt.clone();
            match event {
                Event::ClientDeleted { client_id } => receipt.step(
                    DELETE,
                    true,
                    format!("client {client_id} deleted at the identity provider"),
                    ctx.now,
                ),
                Event::CommandFailed {
                    command, reason, ..
                } if command == "idp.delete_client" => receipt.step(
                    DELETE,
                    false,
                    format!("could not delete the client: {reason}"),
                    ctx.now,
                ),
                other => return Err(not_applicable(Decommission::KIND, "Deleting", &other)),
            }
            Ok(schedule_deletion(agent.clone(), receipt, ctx))
        }
        (state, event) => Err(not_applicable(
            Decommission::KIND,
            Decommission::state_name(state),
            &event,
        )),
    }
}

/// Events in SchedulingSecretDeletion.
fn on_scheduling_secret_deletion(
    state: &DecommissionState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<DecommissionState>, Rejected> {
    use DecommissionState as S;
    match (state, event) {
        (S::SchedulingSecretDeletion { agent, receipt }, event) => {
            let mut receipt = receipt.clone();
            match event {
                Event::SecretDeletionScheduled { delete_after } => {
                    receipt.secret_deleted_after = Some(delete_after);
                    receipt.step(
                        SCHEDULE_DELETION,
                        true,
                        format!(
                            "the vault secret is deleted after {} (recoverable until then)",
                            delete_after.to_rfc3339()
                        ),
                        ctx.now,
                    );
                }
                Event::CommandFailed {
                    command, reason, ..
                } if command == "vault.schedule_deletion" => receipt.step(
                    SCHEDULE_DELETION,
                    false,
                    format!("could not schedule the vault secret's deletion: {reason}"),
                    ctx.now,
                ),
                other => {
                    return Err(not_applicable(
                        Decommission::KIND,
                        "SchedulingSecretDeletion",
                        &other,
                    ));
                }
            }
            Ok(finish(agent.clone(), receipt, ctx))
        }
        (state, event) => Err(not_applicable(
            Decommission::KIND,
            Decommission::state_name(state),
            &event,
        )),
    }
}

/// The approved (or pre-decided) decommission starts: at the IdP if the agent has a client.
/// Its certificates are revoked first, in this very step (the registry keeps the revocation,
/// which the CRL and the mTLS listener read): no handshake needs the IdP to be reached.
fn begin(agent: Agent, mut receipt: RevocationReceipt, ctx: &Ctx) -> Step<DecommissionState> {
    let supersede = Command::Supersede {
        agent_id: agent.id.clone(),
        reason: format!("superseded by decommission {}", ctx.workflow_id),
        ending: true,
    };
    let mut revocations = Vec::new();
    // A frozen agent's certificates are on hold: revoked for good now.
    for cert in agent.certificates.iter().filter(|c| !c.revoked_for_good()) {
        let detail = format!(
            "certificate {} ({}) revoked ({CESSATION_OF_OPERATION}): the CRL lists it and the mTLS token endpoint refuses it",
            cert.serial, cert.spiffe_id
        );
        revocations.extend([
            Command::UpdateAgent {
                agent_id: agent.id.clone(),
                change: AgentChange::CertificateRevoked {
                    serial: cert.serial.clone(),
                    at: ctx.now,
                    reason: CESSATION_OF_OPERATION.into(),
                },
            },
            audit(
                &agent,
                AuditKind::SecretRevoked,
                Actor::System,
                None,
                vec![],
                format!("{} of {}", detail, agent.name),
            ),
        ]);
        receipt.step(REVOKE_CERTIFICATE, true, detail, ctx.now);
    }
    let mut agent = agent;
    for c in &mut agent.certificates {
        if !c.revoked_for_good() {
            c.revoked = Some(crate::credential::CertificateRevocation {
                at: ctx.now,
                reason: CESSATION_OF_OPERATION.into(),
            });
        }
    }
    let mut step = match agent.client_id.clone() {
        Some(client_id) => Step {
            commands: vec![Command::Idp(IdpCommand::RevokeTokens { client_id })],
            state: DecommissionState::RevokingTokens { agent, receipt },
        },
        None => schedule_deletion(agent, receipt, ctx),
    };
    step.commands.insert(0, supersede);
    step.commands.splice(1..1, revocations);
    step
}

fn schedule_deletion(
    agent: Agent,
    receipt: RevocationReceipt,
    ctx: &Ctx,
) -> Step<DecommissionState> {
    Step {
        commands: vec![Command::Vault(VaultCommand::ScheduleDeletion {
            agent_id: agent.id.clone(),
            recovery_days: ctx.policy.lifecycle.secret_recovery_days,
        })],
        state: DecommissionState::SchedulingSecretDeletion { agent, receipt },
    }
}

fn finish(agent: Agent, mut receipt: RevocationReceipt, ctx: &Ctx) -> Step<DecommissionState> {
    let disabled = receipt.disabled_at();
    receipt.no_token_valid_after =
        disabled.map(|at| at + Duration::seconds(i64::from(receipt.token_lifetime_secs)));
    if agent.client_id.is_none() {
        // Never provisioned: no token was ever issued.
        receipt.no_token_valid_after = Some(ctx.now);
    }
    receipt.completed_at = Some(ctx.now);
    let failed: Vec<&str> = receipt
        .steps
        .iter()
        .filter(|s| !s.done)
        .map(|s| s.action.as_str())
        .collect();
    let summary = match receipt.no_token_valid_after {
        Some(t) => format!("no token issued to it is valid after {}", t.to_rfc3339()),
        None => "its client could not be disabled: tokens may still be issued; disable it at the identity provider".into(),
    };
    let not_done = if failed.is_empty() {
        String::new()
    } else {
        format!(" Not done: {}.", failed.join(", "))
    };
    let mut archived = agent.clone();
    archived.apply(
        &AgentChange::Decommissioned {
            receipt: receipt.clone(),
        },
        ctx.now,
    );
    let commands = vec![
        Command::UpdateAgent {
            agent_id: agent.id.clone(),
            change: AgentChange::Decommissioned {
                receipt: receipt.clone(),
            },
        },
        Command::Audit(crate::command::AuditEvent {
            kind: AuditKind::Decommissioned,
            actor: Actor::System,
            agent_id: agent.id.clone(),
            agent_name: agent.name.clone(),
            approval_id: None,
            scopes: agent.scopes.clone(),
            success: failed.is_empty(),
            message: format!("{} decommissioned; {summary}.{not_done}", agent.name),
        }),
        Command::Notify {
            to: agent.owner.clone(),
            subject: format!("{} is decommissioned", agent.name),
            body: format!(
                "{} ({}) is decommissioned: {summary}.{not_done} Its record and history stay readable with `steward agents show {}`.",
                agent.name, receipt.reason, agent.name
            ),
        },
    ];
    Step {
        commands,
        state: DecommissionState::Decommissioned {
            agent: archived,
            receipt,
        },
    }
}
