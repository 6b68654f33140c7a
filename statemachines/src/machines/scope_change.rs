//! Scope change on an active agent: excluded scopes are denied at once, sensitive additions wait
//! for approval, then the identity provider is set to exactly the new grant.

use crate::agent::{Agent, AgentChange, AgentStatus};
use crate::approval::{ApprovalRequest, Ask, Ballot, Deadline, Decision, RecordedApproval};
use crate::command::{Actor, AuditKind, Command, IdpCommand, audit, audit_failure};
use crate::event::Event;
use crate::policy::reason;
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeChangeRequest {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub token_lifetime_secs: Option<u32>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeChangeInput {
    /// The agent as the registry holds it now.
    pub agent: Agent,
    pub request: ScopeChangeRequest,
    pub requester: String,
}

/// The change as accepted: the resulting grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub scopes: Vec<String>,
    pub token_lifetime_secs: u32,
    pub requester: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
#[allow(clippy::large_enum_variant)] // states are stored as JSON; boxing buys nothing here
pub enum ScopeChangeState {
    AwaitingApproval {
        agent: Agent,
        change: AcceptedChange,
        approval: ApprovalRequest,
    },
    Granting {
        agent: Agent,
        change: AcceptedChange,
        approval: Option<RecordedApproval>,
    },
    Applied {
        agent: Agent,
        change: AcceptedChange,
        approval: Option<RecordedApproval>,
    },
    Denied {
        agent: Agent,
        change: AcceptedChange,
        approval_id: String,
        by: String,
    },
    Expired {
        agent: Agent,
        change: AcceptedChange,
        approval_id: String,
    },
    Cancelled {
        agent: Agent,
        change: AcceptedChange,
        by: Actor,
    },
    Failed {
        agent: Agent,
        change: AcceptedChange,
        reason: String,
    },
}

pub struct ScopeChange;

states! {
    ScopeChangeState {
        AwaitingApproval,
        Granting,
        Applied: terminal,
        Denied: terminal,
        Expired: terminal,
        Cancelled: terminal,
        Failed: terminal,
    }
}

impl Workflow for ScopeChange {
    type State = ScopeChangeState;
    type Input = ScopeChangeInput;
    const KIND: &'static str = "scope_change";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "AwaitingApproval"),
        t(START, "start", "Granting"),
        t("AwaitingApproval", "ApprovalDecided(approve)", "Granting"),
        t("AwaitingApproval", "ApprovalDecided(deny)", "Denied"),
        t(
            "AwaitingApproval",
            "ApprovalDecided(approve)",
            "AwaitingApproval",
        ),
        t("AwaitingApproval", "TimerFired", "AwaitingApproval"),
        t("AwaitingApproval", "TimerFired", "Expired"),
        t("AwaitingApproval", "Cancel", "Cancelled"),
        t("Granting", "GrantsSet", "Applied"),
        t("Granting", "CommandFailed", "Failed"),
    ];

    fn start(input: ScopeChangeInput, ctx: &Ctx) -> Result<Step<ScopeChangeState>, Rejected> {
        let ScopeChangeInput {
            agent,
            request,
            requester,
        } = input;
        let mut reasons = Vec::new();
        if agent.status != AgentStatus::Active || agent.client_id.is_none() {
            reasons.push(reason(
                "agent",
                format!(
                    "{} is {}; scopes change only on active agents",
                    agent.name,
                    agent.status.as_str()
                ),
            ));
        }
        if request.reason.trim().is_empty() {
            reasons.push(reason("reason", "a reason is required for a scope change"));
        }
        ctx.policy.check_scopes("add", &request.add, &mut reasons);
        for (field, list) in [("add", &request.add), ("remove", &request.remove)] {
            let mut seen = std::collections::BTreeSet::new();
            for s in list {
                if !seen.insert(s) {
                    reasons.push(reason(field, format!("scope `{s}` is listed twice")));
                }
            }
        }
        // A scope the policy has excluded since it was granted cannot ride along in a new grant.
        for s in agent.scopes.iter().filter(|s| !request.remove.contains(s)) {
            if ctx.policy.is_excluded(s) {
                reasons.push(reason(
                    "remove",
                    format!(
                        "{} holds `{s}`, which the policy now excludes: remove it in this change",
                        agent.name
                    ),
                ));
            }
        }
        for s in &request.add {
            if agent.scopes.contains(s) {
                reasons.push(reason(
                    "add",
                    format!("{} already has scope `{s}`", agent.name),
                ));
            }
        }
        for s in &request.remove {
            if !agent.scopes.contains(s) {
                reasons.push(reason(
                    "remove",
                    format!("{} does not have scope `{s}`", agent.name),
                ));
            }
            if request.add.contains(s) {
                reasons.push(reason(
                    "remove",
                    format!("scope `{s}` is both added and removed"),
                ));
            }
        }
        let lifetime = request
            .token_lifetime_secs
            .unwrap_or(agent.token_lifetime_secs);
        ctx.policy.check_token_lifetime(lifetime, &mut reasons);
        let mut scopes: Vec<String> = agent
            .scopes
            .iter()
            .filter(|s| !request.remove.contains(s))
            .cloned()
            .collect();
        for s in &request.add {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        if scopes.is_empty() {
            reasons.push(reason(
                "remove",
                "removing every scope leaves nothing to grant; decommission the agent instead",
            ));
        }
        if request.add.is_empty()
            && request.remove.is_empty()
            && lifetime == agent.token_lifetime_secs
        {
            reasons.push(reason("request", "the request changes nothing"));
        }
        Rejected::from_reasons(reasons)?;

        let change = AcceptedChange {
            added: request.add.clone(),
            removed: request.remove.clone(),
            scopes,
            token_lifetime_secs: lifetime,
            requester: requester.clone(),
            reason: request.reason.clone(),
        };
        let requested = audit(
            &agent,
            AuditKind::ScopeChangeRequested,
            Actor::Person(requester.clone()),
            None,
            change.added.clone(),
            format!(
                "{requester} asked to add [{}] and remove [{}]: {}",
                change.added.join(", "),
                change.removed.join(", "),
                change.reason
            ),
        );
        let sensitive: Vec<String> = change
            .added
            .iter()
            .filter(|s| ctx.policy.is_sensitive(s))
            .cloned()
            .collect();
        if sensitive.is_empty() {
            let set = set_grants(&agent, &change);
            return Ok(Step {
                commands: vec![requested, set],
                state: ScopeChangeState::Granting {
                    agent,
                    change,
                    approval: None,
                },
            });
        }
        let approval = ApprovalRequest::open(
            ctx,
            &agent,
            &requester,
            Ask {
                action: "scope-change",
                scopes_added: change.added.clone(),
                scopes_removed: change.removed.clone(),
                sensitive_scopes: sensitive,
                token_lifetime_secs: change.token_lifetime_secs,
                justification: change.reason.clone(),
            },
        );
        approval.check_quorum_reachable()?;
        Ok(Step {
            commands: [vec![requested], approval.opening_commands(&agent)].concat(),
            state: ScopeChangeState::AwaitingApproval {
                agent,
                change,
                approval,
            },
        })
    }

    fn on(
        state: &ScopeChangeState,
        event: Event,
        ctx: &Ctx,
    ) -> Result<Step<ScopeChangeState>, Rejected> {
        use ScopeChangeState as S;
        // One handler per state; a state without one refuses every event.
        match state {
            S::AwaitingApproval { .. } => on_awaiting_approval(state, event, ctx),
            S::Granting { .. } => on_granting(state, event, ctx),
            _ => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}

/// Events in AwaitingApproval.
fn on_awaiting_approval(
    state: &ScopeChangeState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<ScopeChangeState>, Rejected> {
    use ScopeChangeState as S;
    match (state, event) {
        (
            S::AwaitingApproval {
                agent,
                change,
                approval,
            },
            Event::ApprovalDecided {
                approval_id,
                decision,
                approver,
                reason,
            },
        ) => match approval.ballot(agent, &approval_id, decision, &approver, reason, ctx.now)? {
            Ballot::Pending { approval, commands } => Ok(Step {
                commands,
                state: S::AwaitingApproval {
                    agent: agent.clone(),
                    change: change.clone(),
                    approval,
                },
            }),
            Ballot::Decided {
                decision: Decision::Approve,
                approver,
                approvers,
                mut commands,
                ..
            } => {
                let recorded = RecordedApproval {
                    approval_id: approval.id.clone(),
                    approver,
                    approvers,
                    at: ctx.now,
                    scopes: approval.sensitive_scopes.clone(),
                };
                commands.push(set_grants(agent, change));
                Ok(Step {
                    commands,
                    state: S::Granting {
                        agent: agent.clone(),
                        change: change.clone(),
                        approval: Some(recorded),
                    },
                })
            }
            Ballot::Decided {
                approver, commands, ..
            } => Ok(Step {
                commands,
                state: S::Denied {
                    agent: agent.clone(),
                    change: change.clone(),
                    approval_id: approval.id.clone(),
                    by: approver,
                },
            }),
        },
        (
            S::AwaitingApproval {
                agent,
                change,
                approval,
            },
            Event::TimerFired { name },
        ) if ApprovalRequest::is_timer(&name) => {
            match approval.deadline(agent, &name, ctx.now, "grants unchanged")? {
                Deadline::Reminded(commands) => Ok(Step {
                    commands,
                    state: state.clone(),
                }),
                Deadline::Expired(commands) => Ok(Step {
                    commands,
                    state: S::Expired {
                        agent: agent.clone(),
                        change: change.clone(),
                        approval_id: approval.id.clone(),
                    },
                }),
            }
        }
        (
            S::AwaitingApproval {
                agent,
                change,
                approval,
            },
            Event::Cancel { by, reason },
        ) => {
            approval.check_canceller(&by)?;
            let mut commands = approval.cancelled_commands(ctx.now);
            commands.extend([audit(
                agent,
                AuditKind::RequestCancelled,
                by.clone(),
                Some(&approval.id),
                vec![],
                format!("scope change cancelled: {reason}"),
            )]);
            Ok(Step {
                commands,
                state: S::Cancelled {
                    agent: agent.clone(),
                    change: change.clone(),
                    by,
                },
            })
        }
        (state, event) => Err(not_applicable(
            ScopeChange::KIND,
            ScopeChange::state_name(state),
            &event,
        )),
    }
}

/// Events in Granting.
fn on_granting(
    state: &ScopeChangeState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<ScopeChangeState>, Rejected> {
    use ScopeChangeState as S;
    match (state, event) {
        (
            S::Granting {
                agent,
                change,
                approval,
            },
            Event::GrantsSet {
                scopes,
                token_lifetime_secs,
                ..
            },
        ) => {
            let mut updated = agent.clone();
            updated.scopes = scopes;
            updated.token_lifetime_secs = token_lifetime_secs;
            updated.updated_at = ctx.now;
            let approver = approval
                .as_ref()
                .map(|a| Actor::Person(a.approver.clone()))
                .unwrap_or(Actor::Person(change.requester.clone()));
            let approval_id = approval.as_ref().map(|a| a.approval_id.as_str());
            // A field change, not the whole record: the agent may have been frozen (or its
            // secret rotated) since this workflow copied it.
            let mut commands = vec![Command::UpdateAgent {
                agent_id: updated.id.clone(),
                change: AgentChange::GrantsSet {
                    scopes: updated.scopes.clone(),
                    token_lifetime_secs: updated.token_lifetime_secs,
                },
            }];
            if !change.added.is_empty() {
                commands.push(audit(
                    &updated,
                    AuditKind::ScopesGranted,
                    approver.clone(),
                    approval_id,
                    change.added.clone(),
                    format!("granted {}", change.added.join(", ")),
                ));
            }
            if !change.removed.is_empty() {
                commands.push(audit(
                    &updated,
                    AuditKind::ScopesRevoked,
                    approver,
                    approval_id,
                    change.removed.clone(),
                    format!("revoked {}", change.removed.join(", ")),
                ));
            }
            commands.push(Command::Notify {
                to: change.requester.clone(),
                subject: format!("Scope change on {} applied", updated.name),
                body: format!("{} now holds {}", updated.name, updated.scopes.join(", ")),
            });
            Ok(Step {
                commands,
                state: S::Applied {
                    agent: updated,
                    change: change.clone(),
                    approval: approval.clone(),
                },
            })
        }
        (
            S::Granting { agent, change, .. },
            Event::CommandFailed {
                command, reason, ..
            },
        ) if command.starts_with("idp.") => {
            let why = format!("{command} failed: {reason}; grants unchanged");
            let commands = vec![
                audit_failure(agent, AuditKind::ProvisioningFailed, &why),
                Command::Notify {
                    to: change.requester.clone(),
                    subject: format!("Scope change on {} failed", agent.name),
                    body: why.clone(),
                },
            ];
            Ok(Step {
                commands,
                state: S::Failed {
                    agent: agent.clone(),
                    change: change.clone(),
                    reason: why,
                },
            })
        }
        (state, event) => Err(not_applicable(
            ScopeChange::KIND,
            ScopeChange::state_name(state),
            &event,
        )),
    }
}

fn set_grants(agent: &Agent, change: &AcceptedChange) -> Command {
    Command::Idp(IdpCommand::SetGrants {
        client_id: agent.client_id.clone().unwrap_or_default(),
        scopes: change.scopes.clone(),
        token_lifetime_secs: change.token_lifetime_secs,
    })
}
