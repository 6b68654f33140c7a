//! The kill switch: an anomaly freezes an agent first and asks afterwards.
//!
//! HIGH and CRITICAL findings contain at once, with no approval: running rotations and pending
//! scope changes are cancelled, the client is deactivated at the IdP (no new tokens) and its
//! tokens revoked, and the agent is marked frozen; the audit records the time from the signal
//! being accepted to containment. Then the owner and security get the evidence and decide:
//! Unfreeze (a security approval; two approvers after a CRITICAL finding) restores exactly the
//! grants the agent had, Decommission hands it to the decommission workflow. Unanswered, the
//! agent stays frozen. MEDIUM and LOW findings ask the owner or security before freezing: the
//! owner may confirm the freeze, only security may dismiss the finding.
//!
//! Asking --(approve)--> Containing --(deactivated + revoked)--> AwaitingDecision
//! --(approve)--> Restoring --(grants set + activated)--> Unfrozen; --(deny)--> Decommissioning.

use crate::agent::{Agent, AgentChange, AgentFlag};
use crate::approval::{ApprovalRequest, Ask, Ballot, Deadline, Decision};
use crate::command::{
    Actor, AuditKind, Command, IdpCommand, SECURITY_CHANNEL, audit, audit_failure,
};
use crate::detection::{Finding, Severity};
use crate::event::Event;
use crate::lifecycle::DecommissionReason;
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Who raises freezes: the detection rules. The name is Steward's own, not a person's: a person
/// using it neither decides nor withdraws a question (`approval::is_reserved_name`), and the
/// audit shows the ask as Steward's.
pub const DETECTION: &str = crate::approval::DETECTION_REQUESTER;

/// What starts a freeze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeInput {
    pub agent: Agent,
    pub finding: Finding,
    /// When the signal that raised the finding was accepted (time to contain starts here).
    pub accepted_at: DateTime<Utc>,
    /// The signal (IdP event id) or person that raised it.
    pub raised_by: Actor,
    /// The agent is frozen already (a review's freeze default, a freeze nobody decided in
    /// time): someone asks for the decision; nothing is contained again.
    pub decide_only: bool,
}

/// The rule name of a person's request to decide on an agent frozen earlier.
pub const UNFREEZE_REQUEST: &str = "unfreeze-request";

/// What the agent had when it was frozen: an unfreeze restores exactly this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub token_lifetime_secs: u32,
}

/// Containment's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Containment {
    pub accepted_at: DateTime<Utc>,
    pub deactivated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// What stays valid after the revocation (the IdP's own words).
    pub outstanding: Option<String>,
}

impl Containment {
    /// Milliseconds from the signal being accepted to the IdP revocation.
    pub fn time_to_contain_ms(&self) -> Option<i64> {
        self.revoked_at
            .map(|r| (r - self.accepted_at).num_milliseconds())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
#[allow(clippy::large_enum_variant)] // states are stored as JSON
pub enum FreezeState {
    /// MEDIUM/LOW: the owner or security is asked whether to freeze.
    Asking {
        agent: Agent,
        finding: Finding,
        previous: Grants,
        accepted_at: DateTime<Utc>,
        approval: ApprovalRequest,
    },
    Containing {
        agent: Agent,
        finding: Finding,
        previous: Grants,
        containment: Containment,
    },
    /// Contained; security decides Unfreeze (approve) or Decommission (deny).
    AwaitingDecision {
        agent: Agent,
        finding: Finding,
        previous: Grants,
        containment: Containment,
        approval: ApprovalRequest,
    },
    Restoring {
        agent: Agent,
        previous: Grants,
        by: String,
        grants_set: bool,
        activated: bool,
    },
    Unfrozen {
        agent: Agent,
        by: String,
    },
    Decommissioning {
        agent: Agent,
        by: String,
    },
    /// Nobody decided in time: the agent stays frozen (a person can still decommission it).
    Kept {
        agent: Agent,
    },
    /// MEDIUM/LOW: the people asked said no, or nobody answered: not frozen.
    Dismissed {
        agent: Agent,
        by: Option<String>,
    },
    /// The finding asks for no freeze (an alert, a rotation): recorded, flagged and told.
    Alerted {
        agent: Agent,
        finding: Finding,
    },
    /// A containment or restore call failed for good; security was told.
    Failed {
        agent: Agent,
        reason: String,
    },
}

pub struct Freeze;

fn grants_of(agent: &Agent) -> Option<Grants> {
    Some(Grants {
        client_id: agent.client_id.clone()?,
        scopes: agent.scopes.clone(),
        token_lifetime_secs: agent.token_lifetime_secs,
    })
}

fn evidence_text(finding: &Finding) -> String {
    let mut lines = vec![format!(
        "{} ({}): {}",
        finding.rule,
        finding.severity.as_str().to_uppercase(),
        finding.summary
    )];
    lines.extend(finding.evidence.iter().cloned());
    lines.join("\n")
}

/// The first containment commands: cancel what would undo the freeze, mark the agent frozen,
/// deactivate the client (no new tokens), revoke its tokens. Deactivation goes first: it is
/// what stops new tokens.
fn contain(agent: &Agent, finding: &Finding, previous: &Grants, by: Actor) -> Vec<Command> {
    let held: Vec<&str> = agent
        .certificates
        .iter()
        .filter(|c| c.revoked.is_none())
        .map(|c| c.serial.as_str())
        .collect();
    let held = if held.is_empty() {
        String::new()
    } else {
        format!(
            "; certificate(s) {} on hold (certificate_hold): the CRL lists them until an unfreeze",
            held.join(", ")
        )
    };
    vec![
        Command::Idp(IdpCommand::DeactivateClient {
            client_id: previous.client_id.clone(),
        }),
        Command::Idp(IdpCommand::RevokeTokens {
            client_id: previous.client_id.clone(),
        }),
        Command::Supersede {
            agent_id: agent.id.clone(),
            reason: format!("{} is being frozen ({})", agent.name, finding.rule),
            ending: false,
        },
        Command::UpdateAgent {
            agent_id: agent.id.clone(),
            change: AgentChange::Frozen {
                reason: format!("{}: {}", finding.rule, finding.summary),
            },
        },
        audit(
            agent,
            AuditKind::AgentFrozen,
            by,
            None,
            previous.scopes.clone(),
            format!(
                "{} frozen by rule {} ({}): client {} deactivation and token revocation requested{held}",
                agent.name,
                finding.rule,
                finding.severity.as_str(),
                previous.client_id
            ),
        ),
    ]
}

/// The decision asked after containment: approve = Unfreeze, deny = Decommission.
fn decision_ask(
    ctx: &Ctx,
    agent: &Agent,
    finding: &Finding,
    c: &Containment,
    requester: &str,
) -> ApprovalRequest {
    let contained = match c.time_to_contain_ms() {
        Some(ms) => format!(
            "contained in {ms} ms after the signal was accepted{}",
            c.outstanding
                .as_deref()
                .map(|o| format!("; still valid: {o}"))
                .unwrap_or_default()
        ),
        None => "frozen earlier; its client is deactivated".into(),
    };
    let mut approval = ApprovalRequest::open(
        ctx,
        agent,
        requester,
        Ask {
            action: "unfreeze",
            scopes_added: vec![],
            scopes_removed: vec![],
            sensitive_scopes: vec![],
            token_lifetime_secs: agent.token_lifetime_secs,
            justification: format!("{}\n{contained}", evidence_text(finding)),
        },
    );
    approval.id = format!("{}-decision", ctx.workflow_id);
    // Two people other than the requester unfreeze after CRITICAL, never fewer: a policy that
    // leaves fewer makes a person's unfreeze request refused up front (`check_quorum_reachable`)
    // and the decision after a containment a Decommission-only one (the justification says so).
    approval.quorum = if finding.severity == Severity::Critical {
        2
    } else {
        1
    };
    if approval.approvers.len() < usize::from(approval.quorum) {
        approval.justification.push_str(&format!(
            "\nthe policy leaves {} approver(s) and an unfreeze after a CRITICAL finding needs {}: it can only be decommissioned or stay frozen until approvers are added and an unfreeze is asked again",
            approval.approvers.len(),
            approval.quorum
        ));
    }
    approval.expires_at = ctx.now + Duration::seconds(ctx.policy.detection.decision_secs as i64);
    approval.remind_at = None;
    approval
}

fn contained(
    agent: &Agent,
    finding: &Finding,
    previous: &Grants,
    containment: Containment,
    ctx: &Ctx,
) -> Result<Step<FreezeState>, Rejected> {
    if containment.deactivated_at.is_none() || containment.revoked_at.is_none() {
        return Ok(Step {
            commands: vec![],
            state: FreezeState::Containing {
                agent: agent.clone(),
                finding: finding.clone(),
                previous: previous.clone(),
                containment,
            },
        });
    }
    let approval = decision_ask(ctx, agent, finding, &containment, DETECTION);
    // Unfreeze needs the quorum (two after CRITICAL); one "no" decommissions.
    let mut commands = vec![audit(
        agent,
        AuditKind::AgentFrozen,
        Actor::System,
        None,
        previous.scopes.clone(),
        format!(
            "{} contained: client {} deactivated and tokens revoked {} ms after the signal was accepted",
            agent.name,
            previous.client_id,
            containment.time_to_contain_ms().unwrap_or_default()
        ),
    )];
    commands.extend(approval.opening_commands(agent));
    Ok(Step {
        commands,
        state: FreezeState::AwaitingDecision {
            agent: agent.clone(),
            finding: finding.clone(),
            previous: previous.clone(),
            containment,
            approval,
        },
    })
}

fn restored(
    agent: &Agent,
    previous: &Grants,
    by: &str,
    grants_set: bool,
    activated: bool,
) -> Step<FreezeState> {
    if !(grants_set && activated) {
        return Step {
            commands: vec![],
            state: FreezeState::Restoring {
                agent: agent.clone(),
                previous: previous.clone(),
                by: by.to_string(),
                grants_set,
                activated,
            },
        };
    }
    Step {
        commands: vec![
            Command::UpdateAgent {
                agent_id: agent.id.clone(),
                change: AgentChange::Unfrozen {
                    scopes: previous.scopes.clone(),
                    token_lifetime_secs: previous.token_lifetime_secs,
                    by: by.to_string(),
                },
            },
            audit(
                agent,
                AuditKind::AgentUnfrozen,
                Actor::Person(by.to_string()),
                None,
                previous.scopes.clone(),
                format!(
                    "{} unfrozen: client {} active again with its previous grants ({}; tokens {} s)",
                    agent.name,
                    previous.client_id,
                    previous.scopes.join(" "),
                    previous.token_lifetime_secs
                ),
            ),
            Command::Notify {
                to: agent.owner.clone(),
                subject: format!("{} is unfrozen", agent.name),
                body: format!(
                    "{by} unfroze {}. Its client is active again with the grants it had before the freeze.",
                    agent.name
                ),
            },
        ],
        state: FreezeState::Unfrozen {
            agent: agent.clone(),
            by: by.to_string(),
        },
    }
}

fn failed(agent: &Agent, what: &str, reason: &str, now: DateTime<Utc>) -> Step<FreezeState> {
    let message = format!("freeze of {}: {what} failed: {reason}", agent.name);
    Step {
        commands: vec![
            Command::UpdateAgent {
                agent_id: agent.id.clone(),
                change: AgentChange::Flag {
                    flag: AgentFlag::FreezeRequested {
                        reason: message.clone(),
                        at: now,
                    },
                },
            },
            audit_failure(agent, AuditKind::AgentFrozen, &message),
            Command::Notify {
                to: SECURITY_CHANNEL.into(),
                subject: format!("Freeze of {} needs a person", agent.name),
                body: format!("{message}. Act at the identity provider directly."),
            },
        ],
        state: FreezeState::Failed {
            agent: agent.clone(),
            reason: message,
        },
    }
}

states! {
    FreezeState {
        Asking,
        Containing,
        AwaitingDecision,
        Restoring,
        Unfrozen: terminal,
        Decommissioning: terminal,
        Kept: terminal,
        Dismissed: terminal,
        Alerted: terminal,
        Failed: terminal,
    }
}

impl Workflow for Freeze {
    type State = FreezeState;
    type Input = FreezeInput;
    const KIND: &'static str = "freeze";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "Alerted"),
        t(START, "start", "Asking"),
        t(START, "start", "Containing"),
        t(START, "start", "AwaitingDecision"),
        t("Asking", "ApprovalDecided(approve)", "Containing"),
        t("Asking", "ApprovalDecided(deny)", "Dismissed"),
        t("Asking", "TimerFired", "Asking"),
        t("Asking", "TimerFired", "Dismissed"),
        t("Asking", "Cancel", "Dismissed"),
        t("Containing", "ClientDeactivated", "Containing"),
        t("Containing", "ClientDeactivated", "AwaitingDecision"),
        t("Containing", "TokensRevoked", "Containing"),
        t("Containing", "TokensRevoked", "AwaitingDecision"),
        t("Containing", "CommandFailed", "Failed"),
        t(
            "AwaitingDecision",
            "ApprovalDecided(approve)",
            "AwaitingDecision",
        ),
        t("AwaitingDecision", "ApprovalDecided(approve)", "Restoring"),
        t(
            "AwaitingDecision",
            "ApprovalDecided(deny)",
            "Decommissioning",
        ),
        t("AwaitingDecision", "TimerFired", "Kept"),
        t("Restoring", "GrantsSet", "Restoring"),
        t("Restoring", "GrantsSet", "Unfrozen"),
        t("Restoring", "ClientActivated", "Restoring"),
        t("Restoring", "ClientActivated", "Unfrozen"),
        t("Restoring", "CommandFailed", "Failed"),
    ];

    fn start(input: FreezeInput, ctx: &Ctx) -> Result<Step<FreezeState>, Rejected> {
        let FreezeInput {
            agent,
            finding,
            accepted_at,
            raised_by,
            decide_only,
        } = input;
        let Some(previous) = grants_of(&agent) else {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} has no client at the identity provider: there is nothing to freeze",
                    agent.name
                ),
            ));
        };
        if decide_only {
            if agent.status != crate::agent::AgentStatus::Frozen {
                return Err(Rejected::new(
                    "agent",
                    format!(
                        "{} is {}; only a frozen agent can be unfrozen",
                        agent.name,
                        agent.status.as_str()
                    ),
                ));
            }
            // The person asking cannot approve it: another approver decides.
            let requester = match &raised_by {
                Actor::Person(p) => p.clone(),
                other => other.describe(),
            };
            let containment = Containment {
                accepted_at,
                deactivated_at: None,
                revoked_at: None,
                outstanding: None,
            };
            let approval = decision_ask(ctx, &agent, &finding, &containment, &requester);
            approval.check_quorum_reachable().map_err(|mut r| {
                for reason in &mut r.reasons {
                    reason.message = format!(
                        "after a {} finding, {}",
                        finding.severity.as_str().to_uppercase(),
                        reason.message
                    );
                }
                r
            })?;
            return Ok(Step {
                commands: approval.opening_commands(&agent),
                state: FreezeState::AwaitingDecision {
                    agent,
                    finding,
                    previous,
                    containment,
                    approval,
                },
            });
        }
        if finding.freezes() && agent.status != crate::agent::AgentStatus::Active {
            return Err(Rejected::new(
                "agent",
                format!(
                    "{} is {}; only an active agent is frozen",
                    agent.name,
                    agent.status.as_str()
                ),
            ));
        }
        let detected = audit(
            &agent,
            AuditKind::AnomalyDetected,
            raised_by.clone(),
            None,
            vec![],
            format!(
                "{} ({}): {}",
                finding.rule,
                finding.severity.as_str(),
                finding.summary
            ),
        );
        let flagged = Command::UpdateAgent {
            agent_id: agent.id.clone(),
            change: AgentChange::Flag {
                flag: AgentFlag::Anomaly {
                    rule: finding.rule.clone(),
                    severity: finding.severity,
                    detail: finding.summary.clone(),
                    at: ctx.now,
                },
            },
        };
        if !finding.freezes() {
            let mut commands = vec![detected, flagged];
            for to in [agent.owner.clone(), SECURITY_CHANNEL.to_string()] {
                if to.is_empty() {
                    continue;
                }
                commands.push(Command::Notify {
                    to,
                    subject: format!(
                        "{} anomaly on {}: {}",
                        finding.severity.as_str().to_uppercase(),
                        agent.name,
                        finding.rule
                    ),
                    body: evidence_text(&finding),
                });
            }
            return Ok(Step {
                commands,
                state: FreezeState::Alerted { agent, finding },
            });
        }
        if finding.severity.contains_first() {
            let mut commands = vec![detected, flagged];
            commands.extend(contain(&agent, &finding, &previous, raised_by));
            return Ok(Step {
                commands,
                state: FreezeState::Containing {
                    agent,
                    finding,
                    previous,
                    containment: Containment {
                        accepted_at,
                        deactivated_at: None,
                        revoked_at: None,
                        outstanding: None,
                    },
                },
            });
        }
        let mut approval = ApprovalRequest::open(
            ctx,
            &agent,
            DETECTION,
            Ask {
                action: "freeze",
                scopes_added: vec![],
                scopes_removed: vec![],
                sensitive_scopes: vec![],
                token_lifetime_secs: agent.token_lifetime_secs,
                justification: evidence_text(&finding),
            },
        );
        // The owner knows the agent's work best: they may confirm a freeze too.
        if !agent.owner.is_empty()
            && !approval
                .approvers
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&agent.owner))
        {
            approval.approvers.insert(0, agent.owner.clone());
        }
        approval.quorum = 1;
        let mut commands = vec![detected, flagged];
        commands.extend(approval.opening_commands(&agent));
        Ok(Step {
            commands,
            state: FreezeState::Asking {
                agent,
                finding,
                previous,
                accepted_at,
                approval,
            },
        })
    }

    fn on(state: &FreezeState, event: Event, ctx: &Ctx) -> Result<Step<FreezeState>, Rejected> {
        use FreezeState as S;
        // One handler per state; a state without one refuses every event.
        match state {
            S::Asking { .. } => on_asking(state, event, ctx),
            S::Containing { .. } => on_containing(state, event, ctx),
            S::AwaitingDecision { .. } => on_awaiting_decision(state, event, ctx),
            S::Restoring { .. } => on_restoring(state, event, ctx),
            _ => Err(not_applicable(Self::KIND, Self::state_name(state), &event)),
        }
    }
}

/// Events in Asking.
fn on_asking(state: &FreezeState, event: Event, ctx: &Ctx) -> Result<Step<FreezeState>, Rejected> {
    use FreezeState as S;
    match (state, event) {
        (
            S::Asking {
                agent,
                finding,
                previous,
                accepted_at,
                approval,
            },
            Event::ApprovalDecided {
                approval_id,
                decision,
                approver,
                reason,
            },
        ) => {
            if approval_id == approval.id {
                check_question_answer(agent, &approver, decision)?;
            }
            match approval.ballot(agent, &approval_id, decision, &approver, reason, ctx.now)? {
                Ballot::Decided {
                    decision: Decision::Approve,
                    approver,
                    mut commands,
                    ..
                } => {
                    commands.extend(contain(agent, finding, previous, Actor::Person(approver)));
                    Ok(Step {
                        commands,
                        state: S::Containing {
                            agent: agent.clone(),
                            finding: finding.clone(),
                            previous: previous.clone(),
                            containment: Containment {
                                accepted_at: *accepted_at,
                                deactivated_at: None,
                                revoked_at: None,
                                outstanding: None,
                            },
                        },
                    })
                }
                Ballot::Decided {
                    approver,
                    mut commands,
                    ..
                } => {
                    commands.push(audit(
                        agent,
                        AuditKind::FreezeDismissed,
                        Actor::Person(approver.clone()),
                        Some(&approval.id),
                        vec![],
                        format!("{approver} decided not to freeze {}", agent.name),
                    ));
                    Ok(Step {
                        commands,
                        state: S::Dismissed {
                            agent: agent.clone(),
                            by: Some(approver),
                        },
                    })
                }
                Ballot::Pending { .. } => Err(Rejected::new(
                    "approval",
                    "a freeze needs one decision; this vote cannot be pending",
                )),
            }
        }
        (
            S::Asking {
                agent,
                finding,
                approval,
                ..
            },
            Event::TimerFired { name },
        ) if ApprovalRequest::is_timer(&name) => {
            match approval.deadline(agent, &name, ctx.now, "not frozen")? {
                Deadline::Reminded(commands) => Ok(Step {
                    commands,
                    state: state.clone(),
                }),
                Deadline::Expired(mut commands) => {
                    commands.push(audit(
                        agent,
                        AuditKind::FreezeDismissed,
                        Actor::Schedule(name),
                        Some(&approval.id),
                        vec![],
                        format!(
                            "nobody answered whether to freeze {}; not frozen (the anomaly stays flagged)",
                            agent.name
                        ),
                    ));
                    Ok(Step {
                        commands,
                        state: S::Dismissed {
                            agent: agent.clone(),
                            by: None,
                        },
                    })
                }
            }
        }
        // A stronger finding contained the agent meanwhile (its `Supersede`, by Steward): no
        // question. A person withdrawing it dismisses the finding: a security approver only.
        (
            S::Asking {
                agent, approval, ..
            },
            Event::Cancel { by, reason },
        ) => {
            check_question_withdrawal(agent, approval, &by)?;
            let mut commands = approval.cancelled_commands(ctx.now);
            commands.push(audit(
                agent,
                AuditKind::FreezeDismissed,
                by,
                Some(&approval.id),
                vec![],
                format!(
                    "the question whether to freeze {} is withdrawn: {reason}",
                    agent.name
                ),
            ));
            Ok(Step {
                commands,
                state: S::Dismissed {
                    agent: agent.clone(),
                    by: None,
                },
            })
        }
        (state, event) => Err(not_applicable(
            Freeze::KIND,
            Freeze::state_name(state),
            &event,
        )),
    }
}

/// Whether `person` is the agent's owner (spelled any way).
fn is_owner(agent: &Agent, person: &str) -> bool {
    !agent.owner.trim().is_empty() && person.trim().eq_ignore_ascii_case(agent.owner.trim())
}

/// Separation of duties on a "freeze?" question: the owner may confirm a freeze of their
/// agent, but only a security approver may dismiss a finding about it (the engine asks this
/// too, to answer the person at once).
pub fn check_question_answer(
    agent: &Agent,
    approver: &str,
    decision: Decision,
) -> Result<(), Rejected> {
    if decision == Decision::Deny && is_owner(agent, approver) {
        return Err(Rejected::new(
            "approver",
            format!(
                "{} owns {} and may confirm the freeze, but only a security approver may dismiss a finding about it; nothing was decided",
                approver.trim(),
                agent.name
            ),
        ));
    }
    Ok(())
}

/// Who may withdraw a "freeze?" question (which dismisses it): Steward itself (a stronger
/// finding froze the agent meanwhile) or a security approver of it, never the owner, never a
/// person under a name Steward acts under.
pub fn check_question_withdrawal(
    agent: &Agent,
    approval: &ApprovalRequest,
    by: &Actor,
) -> Result<(), Rejected> {
    match by {
        Actor::System => Ok(()),
        Actor::Person(p) if is_owner(agent, p) => Err(Rejected::new(
            "by",
            format!(
                "{} owns {} and may not withdraw the question whether to freeze it: only a security approver may dismiss a finding about it",
                p.trim(),
                agent.name
            ),
        )),
        // The question's approvers are security's besides the owner; `check_canceller` refuses
        // a person under a reserved name and anyone else who is not an approver.
        Actor::Person(p)
            if approval
                .approvers
                .iter()
                .any(|a| a.trim().eq_ignore_ascii_case(p.trim())) =>
        {
            approval.check_canceller(by)
        }
        other => Err(Rejected::new(
            "by",
            format!(
                "{} may not withdraw approval {}: only Steward or a security approver may",
                other.describe(),
                approval.id
            ),
        )),
    }
}

/// Events in Containing.
fn on_containing(
    state: &FreezeState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<FreezeState>, Rejected> {
    use FreezeState as S;
    match (state, event) {
        (
            S::Containing {
                agent,
                finding,
                previous,
                containment,
            },
            Event::ClientDeactivated { client_id },
        ) if client_id == previous.client_id => {
            let mut c = containment.clone();
            c.deactivated_at.get_or_insert(ctx.now);
            contained(agent, finding, previous, c, ctx)
        }
        (
            S::Containing {
                agent,
                finding,
                previous,
                containment,
            },
            Event::TokensRevoked { outstanding, .. },
        ) => {
            let mut c = containment.clone();
            c.revoked_at.get_or_insert(ctx.now);
            c.outstanding = outstanding;
            contained(agent, finding, previous, c, ctx)
        }
        (
            S::Containing { agent, .. },
            Event::CommandFailed {
                command, reason, ..
            },
        ) if command == "idp.deactivate_client" || command == "idp.revoke_tokens" => {
            Ok(failed(agent, &command, &reason, ctx.now))
        }
        (state, event) => Err(not_applicable(
            Freeze::KIND,
            Freeze::state_name(state),
            &event,
        )),
    }
}

/// Events in AwaitingDecision.
fn on_awaiting_decision(
    state: &FreezeState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<FreezeState>, Rejected> {
    use FreezeState as S;
    match (state, event) {
        (
            S::AwaitingDecision {
                agent,
                finding,
                previous,
                containment,
                approval,
            },
            Event::ApprovalDecided {
                approval_id,
                decision,
                approver,
                reason,
            },
        ) => match approval.ballot(agent, &approval_id, decision, &approver, reason, ctx.now)? {
            // Too few approvers for the quorum (a CRITICAL finding under a policy that leaves
            // fewer than two): a vote would wait for a second one that cannot come.
            Ballot::Pending { .. } if approval.check_quorum_reachable().is_err() => {
                Err(Rejected::new(
                    "approvers",
                    format!(
                        "an unfreeze of {} after a {} finding needs {} approvers and the policy leaves {}: it cannot be unfrozen by this decision; decommission it, or add approvers to the policy and ask for the unfreeze again once this decision has ended",
                        agent.name,
                        finding.severity.as_str().to_uppercase(),
                        approval.quorum,
                        approval.approvers.len()
                    ),
                ))
            }
            Ballot::Pending { approval, commands } => Ok(Step {
                commands,
                state: S::AwaitingDecision {
                    agent: agent.clone(),
                    finding: finding.clone(),
                    previous: previous.clone(),
                    containment: containment.clone(),
                    approval,
                },
            }),
            Ballot::Decided {
                decision: Decision::Approve,
                approver,
                mut commands,
                ..
            } => {
                commands.push(Command::Idp(IdpCommand::SetGrants {
                    client_id: previous.client_id.clone(),
                    scopes: previous.scopes.clone(),
                    token_lifetime_secs: previous.token_lifetime_secs,
                }));
                commands.push(Command::Idp(IdpCommand::ActivateClient {
                    client_id: previous.client_id.clone(),
                }));
                Ok(Step {
                    commands,
                    state: S::Restoring {
                        agent: agent.clone(),
                        previous: previous.clone(),
                        by: approver,
                        grants_set: false,
                        activated: false,
                    },
                })
            }
            Ballot::Decided {
                approver,
                mut commands,
                ..
            } => {
                commands.push(Command::StartDecommission {
                    agent_id: agent.id.clone(),
                    reason: DecommissionReason::Freeze {
                        decided_by: approver.clone(),
                    },
                });
                Ok(Step {
                    commands,
                    state: S::Decommissioning {
                        agent: agent.clone(),
                        by: approver,
                    },
                })
            }
        },
        (
            S::AwaitingDecision {
                agent, approval, ..
            },
            Event::TimerFired { name },
        ) if ApprovalRequest::is_timer(&name) => {
            match approval.deadline(agent, &name, ctx.now, "the agent stays frozen")? {
                Deadline::Reminded(commands) => Ok(Step {
                    commands,
                    state: state.clone(),
                }),
                Deadline::Expired(mut commands) => {
                    commands.push(audit(
                        agent,
                        AuditKind::FreezeKept,
                        Actor::Schedule(name),
                        Some(&approval.id),
                        vec![],
                        format!(
                            "nobody decided on frozen {}; it stays frozen until someone decommissions it",
                            agent.name
                        ),
                    ));
                    Ok(Step {
                        commands,
                        state: S::Kept {
                            agent: agent.clone(),
                        },
                    })
                }
            }
        }
        (state, event) => Err(not_applicable(
            Freeze::KIND,
            Freeze::state_name(state),
            &event,
        )),
    }
}

/// Events in Restoring.
fn on_restoring(
    state: &FreezeState,
    event: Event,
    ctx: &Ctx,
) -> Result<Step<FreezeState>, Rejected> {
    use FreezeState as S;
    match (state, event) {
        (
            S::Restoring {
                agent,
                previous,
                by,
                activated,
                ..
            },
            Event::GrantsSet { client_id, .. },
        ) if client_id == previous.client_id => Ok(restored(agent, previous, by, true, *activated)),
        (
            S::Restoring {
                agent,
                previous,
                by,
                grants_set,
                ..
            },
            Event::ClientActivated { client_id },
        ) if client_id == previous.client_id => {
            Ok(restored(agent, previous, by, *grants_set, true))
        }
        (
            S::Restoring { agent, .. },
            Event::CommandFailed {
                command, reason, ..
            },
        ) if command == "idp.set_grants" || command == "idp.activate_client" => {
            Ok(failed(agent, &command, &reason, ctx.now))
        }
        (state, event) => Err(not_applicable(
            Freeze::KIND,
            Freeze::state_name(state),
            &event,
        )),
    }
}
