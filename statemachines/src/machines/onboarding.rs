//! Onboarding: Requested → policy checked → (AwaitingApproval) → Provisioning → Active.
//!
//! The owner must be an active person in the directory (the engine looks them up and passes the
//! answer in); the name, environment, scopes and token lifetime must satisfy the policy. Sensitive
//! scopes wait for a security approval that expires; the requester may cancel until provisioning
//! starts.

use crate::agent::{Agent, AgentRequest, AgentStatus};
use crate::approval::{ApprovalRequest, Ask, Ballot, Deadline, Decision};
use crate::command::{Actor, AuditKind, Command, IdpCommand, audit, audit_failure};
use crate::credential::{KeyRecord, KeyStatus};
use crate::event::Event;
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use serde::{Deserialize, Serialize};

pub use crate::approval::{APPROVAL_EXPIRY_TIMER, RecordedApproval};

/// What the directory said about the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerStatus {
    Active,
    Inactive,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardingInput {
    pub agent_id: String,
    pub request: AgentRequest,
    pub requester: String,
    pub owner_status: OwnerStatus,
    /// A claimed shadow agent's existing client: onboarding takes it over instead of creating
    /// a new one.
    pub adopt_client: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
#[allow(clippy::large_enum_variant)] // states are stored as JSON; boxing buys nothing here
pub enum OnboardingState {
    AwaitingApproval {
        agent: Agent,
        approval: ApprovalRequest,
    },
    Provisioning {
        agent: Agent,
        approval: Option<RecordedApproval>,
    },
    Active {
        agent: Agent,
        approval: Option<RecordedApproval>,
    },
    Denied {
        agent: Agent,
        approval_id: String,
        by: String,
        reason: Option<String>,
    },
    Expired {
        agent: Agent,
        approval_id: String,
    },
    Cancelled {
        agent: Agent,
        by: Actor,
        reason: String,
    },
    Failed {
        agent: Agent,
        reason: String,
    },
}

impl OnboardingState {
    pub fn agent(&self) -> &Agent {
        match self {
            Self::AwaitingApproval { agent, .. }
            | Self::Provisioning { agent, .. }
            | Self::Active { agent, .. }
            | Self::Denied { agent, .. }
            | Self::Expired { agent, .. }
            | Self::Cancelled { agent, .. }
            | Self::Failed { agent, .. } => agent,
        }
    }
}

pub struct Onboarding;

states! {
    OnboardingState {
        AwaitingApproval,
        Provisioning,
        Active: terminal,
        Denied: terminal,
        Expired: terminal,
        Cancelled: terminal,
        Failed: terminal,
    }
}

impl Workflow for Onboarding {
    type State = OnboardingState;
    type Input = OnboardingInput;
    const KIND: &'static str = "onboarding";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "AwaitingApproval"),
        t(START, "start", "Provisioning"),
        t(
            "AwaitingApproval",
            "ApprovalDecided(approve)",
            "Provisioning",
        ),
        t("AwaitingApproval", "ApprovalDecided(deny)", "Denied"),
        t(
            "AwaitingApproval",
            "ApprovalDecided(approve)",
            "AwaitingApproval",
        ),
        t("AwaitingApproval", "TimerFired", "AwaitingApproval"),
        t("AwaitingApproval", "TimerFired", "Expired"),
        t("AwaitingApproval", "Cancel", "Cancelled"),
        t("Provisioning", "ClientCreated", "Active"),
        t("Provisioning", "KeyClientCreated", "Active"),
        t("Provisioning", "CertificateClientCreated", "Active"),
        t("Provisioning", "CommandFailed", "Failed"),
    ];

    fn start(input: OnboardingInput, ctx: &Ctx) -> Result<Step<OnboardingState>, Rejected> {
        let OnboardingInput {
            agent_id,
            request,
            requester,
            owner_status,
            adopt_client,
        } = input;
        let mut reasons = match request.check(ctx.policy, ctx.now.date_naive()) {
            Ok(()) => Vec::new(),
            Err(r) => r.reasons,
        };
        match owner_status {
            OwnerStatus::Active => {}
            OwnerStatus::Inactive => reasons.push(crate::policy::reason(
                "owner",
                format!(
                    "owner {} is not an active person in the directory; choose an active owner",
                    request.owner
                ),
            )),
            OwnerStatus::Unknown => reasons.push(crate::policy::reason(
                "owner",
                format!(
                    "owner {} is not a person in the directory; agents need a named human owner",
                    request.owner
                ),
            )),
        }
        Rejected::from_reasons(reasons)?;

        let sensitive = request.sensitive_scopes(ctx.policy);
        let mut agent = Agent {
            id: agent_id,
            name: request.name.clone(),
            owner: request.owner.clone(),
            team: request.team.clone(),
            environment: request.environment.clone(),
            purpose: request.purpose.clone(),
            scopes: request.scopes.clone(),
            token_lifetime_secs: request.token_lifetime(ctx.policy),
            expires_on: request.expires_on,
            status: AgentStatus::PendingApproval,
            client_id: adopt_client,
            secret_version: None,
            credential_issued_at: None,
            requested_by: requester.clone(),
            created_at: ctx.now,
            updated_at: ctx.now,
            flags: vec![],
            credentials: vec![],
            decommission: None,
            last_review: None,
            credential_kind: request.credential,
            key_custody: request.key_custody,
            token_binding: ctx.policy.credentials.binding_in(&request.environment),
            keys: request
                .public_key
                .iter()
                .map(|k| KeyRecord {
                    key: k.clone(),
                    added_at: ctx.now,
                    status: KeyStatus::Active,
                })
                .collect(),
            csr: request.csr.clone(),
            certificates: vec![],
        };
        let requested = audit(
            &agent,
            AuditKind::AgentRequested,
            Actor::Person(requester.clone()),
            None,
            agent.scopes.clone(),
            format!(
                "{} requested agent {} ({}) owned by {}",
                requester, agent.name, agent.environment, agent.owner
            ),
        );

        // Taking over a client Steward did not create (a shadow claim) sets its grants and
        // replaces its secrets, so whatever uses them stops working: a security approver
        // decides, whatever the scopes.
        let claim = agent.client_id.is_some();
        if sensitive.is_empty() && !claim {
            agent.status = AgentStatus::Provisioning;
            let create = create_client(&agent, ctx);
            return Ok(Step {
                commands: vec![
                    requested,
                    Command::SaveAgent(Box::new(agent.clone())),
                    create,
                ],
                state: OnboardingState::Provisioning {
                    agent,
                    approval: None,
                },
            });
        }

        let approval = ApprovalRequest::open(
            ctx,
            &agent,
            &requester,
            Ask {
                action: if claim { "claim" } else { "onboard" },
                scopes_added: agent.scopes.clone(),
                scopes_removed: vec![],
                sensitive_scopes: sensitive,
                token_lifetime_secs: agent.token_lifetime_secs,
                justification: agent.purpose.clone(),
            },
        );
        approval.check_quorum_reachable()?;
        Ok(Step {
            commands: [
                vec![requested, Command::SaveAgent(Box::new(agent.clone()))],
                approval.opening_commands(&agent),
            ]
            .concat(),
            state: OnboardingState::AwaitingApproval { agent, approval },
        })
    }

    fn on(
        state: &OnboardingState,
        event: Event,
        ctx: &Ctx,
    ) -> Result<Step<OnboardingState>, Rejected> {
        use OnboardingState as S;
        // One handler per state; a state without one refuses every event.
        match state {
            S::AwaitingApproval { .. } => on_awaiting_approval(state, event, ctx),
            S::Provisioning { .. } => on_provisioning(state, event, ctx),
            _ => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}

/// Events in AwaitingApproval.
fn on_awaiting_approval(
    state: &OnboardingState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<OnboardingState>, Rejected> {
    use OnboardingState as S;
    match (state, event) {
        (
            S::AwaitingApproval { agent, approval },
            Event::ApprovalDecided {
                approval_id,
                decision,
                approver,
                reason,
            },
        ) => {
            let ballot =
                approval.ballot(agent, &approval_id, decision, &approver, reason, ctx.now)?;
            let mut agent = agent.clone();
            match ballot {
                Ballot::Pending { approval, commands } => Ok(Step {
                    commands,
                    state: S::AwaitingApproval { agent, approval },
                }),
                Ballot::Decided {
                    decision: Decision::Approve,
                    approver,
                    approvers,
                    mut commands,
                    ..
                } => {
                    agent.status = AgentStatus::Provisioning;
                    agent.updated_at = ctx.now;
                    let recorded = RecordedApproval {
                        approval_id: approval.id.clone(),
                        approver,
                        approvers,
                        at: ctx.now,
                        scopes: approval.sensitive_scopes.clone(),
                    };
                    commands.extend([
                        Command::SaveAgent(Box::new(agent.clone())),
                        create_client(&agent, ctx),
                    ]);
                    Ok(Step {
                        commands,
                        state: S::Provisioning {
                            agent,
                            approval: Some(recorded),
                        },
                    })
                }
                Ballot::Decided {
                    approver,
                    reason,
                    mut commands,
                    ..
                } => {
                    agent.status = AgentStatus::Denied;
                    agent.updated_at = ctx.now;
                    commands.push(Command::SaveAgent(Box::new(agent.clone())));
                    commands.extend(settle_claim(
                        &agent,
                        ctx,
                        false,
                        format!(
                            "denied by {approver}{}",
                            reason
                                .as_deref()
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        ),
                    ));
                    Ok(Step {
                        commands,
                        state: S::Denied {
                            agent,
                            approval_id: approval.id.clone(),
                            by: approver,
                            reason,
                        },
                    })
                }
            }
        }
        (S::AwaitingApproval { agent, approval }, Event::TimerFired { name })
            if ApprovalRequest::is_timer(&name) =>
        {
            match approval.deadline(agent, &name, ctx.now, "nothing was provisioned")? {
                Deadline::Reminded(commands) => Ok(Step {
                    commands,
                    state: state.clone(),
                }),
                Deadline::Expired(mut commands) => {
                    let mut agent = agent.clone();
                    agent.status = AgentStatus::Expired;
                    agent.updated_at = ctx.now;
                    commands.push(Command::SaveAgent(Box::new(agent.clone())));
                    commands.extend(settle_claim(
                        &agent,
                        ctx,
                        false,
                        "nobody decided before the approval expired".into(),
                    ));
                    Ok(Step {
                        commands,
                        state: S::Expired {
                            agent,
                            approval_id: approval.id.clone(),
                        },
                    })
                }
            }
        }
        (S::AwaitingApproval { agent, approval }, Event::Cancel { by, reason }) => {
            approval.check_canceller(&by)?;
            let mut agent = agent.clone();
            agent.status = AgentStatus::Cancelled;
            agent.updated_at = ctx.now;
            let mut commands = approval.cancelled_commands(ctx.now);
            commands.extend([
                audit(
                    &agent,
                    AuditKind::RequestCancelled,
                    by.clone(),
                    Some(&approval.id),
                    vec![],
                    format!("request cancelled: {reason}"),
                ),
                Command::SaveAgent(Box::new(agent.clone())),
            ]);
            commands.extend(settle_claim(
                &agent,
                ctx,
                false,
                format!("withdrawn by {}: {reason}", by.describe()),
            ));
            Ok(Step {
                commands,
                state: S::Cancelled { agent, by, reason },
            })
        }
        (state, event) => Err(not_applicable(
            Onboarding::KIND,
            Onboarding::state_name(state),
            &event,
        )),
    }
}

/// Events in Provisioning.
fn on_provisioning(
    state: &OnboardingState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<OnboardingState>, Rejected> {
    use OnboardingState as S;
    match (state, event) {
        (
            S::Provisioning { agent, approval },
            event @ (Event::ClientCreated { .. }
            | Event::KeyClientCreated { .. }
            | Event::CertificateClientCreated { .. }),
        ) => {
            // A secret client's secret is in the vault; a key client's key is the agent's own,
            // and so is a certificate client's (Steward keeps the public certificate).
            let mut certificate = None;
            let (client_id, secret_version, holds) = match event {
                Event::ClientCreated {
                    client_id,
                    secret_version,
                } => (
                    client_id,
                    Some(secret_version),
                    if agent.steward_holds_key() {
                        format!(
                            "Steward generated its key pair (private_key_jwt): the identity provider has the public key, and the private key is in the vault, handed out with `steward agents credentials {}` and rotated like a secret.",
                            agent.name
                        )
                    } else {
                        "Its secret is in the vault.".to_string()
                    },
                ),
                Event::KeyClientCreated { client_id, kid } => (
                    client_id,
                    None,
                    format!(
                        "It authenticates with its own key {kid} (private_key_jwt); Steward holds no secret for it."
                    ),
                ),
                Event::CertificateClientCreated {
                    client_id,
                    certificate: issued,
                } => {
                    let holds = format!(
                        "It authenticates with its client certificate over mutual TLS (tls_client_auth): {}, serial {}, valid until {}; fetch it with `steward agents certificate {}` (GET /api/agents/{}/certificate). Its key stays with the agent; Steward holds no secret for it.",
                        issued.spiffe_id,
                        issued.serial,
                        issued.not_after.to_rfc3339(),
                        agent.name,
                        agent.name
                    );
                    certificate = Some(issued);
                    (client_id, None, holds)
                }
                other => {
                    return Err(not_applicable(
                        Onboarding::KIND,
                        Onboarding::state_name(state),
                        &other,
                    ));
                }
            };
            let settled = settle_claim(agent, ctx, true, "adopted".into());
            let mut agent = agent.clone();
            agent.status = AgentStatus::Active;
            agent.client_id = Some(client_id.clone());
            agent.secret_version = secret_version;
            agent.credential_issued_at = Some(ctx.now);
            agent.updated_at = ctx.now;
            agent.certificates.extend(certificate);
            let approver = approval
                .as_ref()
                .map(|a| Actor::Person(a.approver.clone()))
                .unwrap_or(Actor::System);
            let approval_id = approval.as_ref().map(|a| a.approval_id.as_str());
            let mut commands = vec![
                Command::SaveAgent(Box::new(agent.clone())),
                audit(
                    &agent,
                    AuditKind::AgentRegistered,
                    Actor::Person(agent.requested_by.clone()),
                    approval_id,
                    vec![],
                    format!("agent {} registered as client {client_id}", agent.name),
                ),
                audit(
                    &agent,
                    AuditKind::ScopesGranted,
                    approver,
                    approval_id,
                    agent.scopes.clone(),
                    format!(
                        "granted {} with {}-second tokens",
                        agent.scopes.join(", "),
                        agent.token_lifetime_secs
                    ),
                ),
                Command::Notify {
                    to: agent.owner.clone(),
                    subject: format!("{} is active", agent.name),
                    body: format!(
                        "Client {client_id} is provisioned with {}. {holds}",
                        agent.scopes.join(", ")
                    ),
                },
            ];
            commands.extend(settled);
            Ok(Step {
                commands,
                state: S::Active {
                    agent,
                    approval: approval.clone(),
                },
            })
        }
        (
            S::Provisioning { agent, .. },
            Event::CommandFailed {
                command, reason, ..
            },
        ) if command.starts_with("idp.") => {
            let mut agent = agent.clone();
            agent.status = AgentStatus::Failed;
            agent.updated_at = ctx.now;
            let why = format!("{command} failed: {reason}");
            let mut commands = vec![
                Command::SaveAgent(Box::new(agent.clone())),
                audit_failure(&agent, AuditKind::ProvisioningFailed, &why),
                Command::Notify {
                    to: agent.owner.clone(),
                    subject: format!("{} could not be provisioned", agent.name),
                    body: why.clone(),
                },
            ];
            commands.extend(settle_claim(&agent, ctx, false, why.clone()));
            Ok(Step {
                commands,
                state: S::Failed { agent, reason: why },
            })
        }
        (S::Provisioning { agent, .. }, Event::Cancel { .. }) => Err(Rejected::new(
            "state",
            format!(
                "provisioning of {} has started and cannot be cancelled; decommission the agent instead",
                agent.name
            ),
        )),
        (state, event) => Err(not_applicable(
            Onboarding::KIND,
            Onboarding::state_name(state),
            &event,
        )),
    }
}

/// For the onboarding of a claimed shadow agent (its client exists before it starts), the word
/// to the shadow workflow about how the claim ended; nothing for an ordinary onboarding.
fn settle_claim(agent: &Agent, ctx: &Ctx, adopted: bool, reason: String) -> Option<Command> {
    agent
        .client_id
        .clone()
        .map(|client_id| Command::SettleShadowClaim {
            client_id,
            onboarding: ctx.workflow_id.to_string(),
            adopted,
            reason,
        })
}

fn create_client(agent: &Agent, ctx: &Ctx) -> Command {
    // A key-bound agent's client is made with the key it proved it holds (its only key now).
    let key = agent
        .keys
        .iter()
        .find(|k| k.status == KeyStatus::Active)
        .map(|k| k.key.clone());
    Command::Idp(IdpCommand::CreateClient {
        agent_id: agent.id.clone(),
        name: agent.name.clone(),
        scopes: agent.scopes.clone(),
        token_lifetime_secs: agent.token_lifetime_secs,
        adopt: agent.client_id.clone(),
        key,
        binding: agent.token_binding,
        // A tls_client_auth agent's certificate is issued from its CSR with the client, under
        // the policy's trust domain and lifetime.
        certificate: agent
            .csr
            .as_deref()
            .filter(|_| agent.credential_kind == crate::credential::CredentialKind::TlsClientAuth)
            .map(|csr| ctx.policy.credentials.certificate_order(csr)),
        generate_key: agent.steward_holds_key(),
    })
}
