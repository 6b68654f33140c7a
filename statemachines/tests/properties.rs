//! Property tests: random requests (valid and invalid) and random event sequences for the
//! onboarding and scope-change machines, with named invariants checked after every step (each
//! invariant must hold in every reachable state, in the style of stateright's
//! `Property::always("name", ..)`).
//!
//! A failing case reports `invariant `<name>` violated: <detail>` and proptest prints the
//! minimal input and event sequence that breaks it.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::TestCaseError;
use statemachines::agent::AgentChange;
use statemachines::approval::{APPROVAL_REMINDER_TIMER, ApprovalRequest, Decision};
use statemachines::command::{Command, IdpCommand};
use statemachines::onboarding::{
    APPROVAL_EXPIRY_TIMER, Onboarding, OnboardingInput, OnboardingState, OwnerStatus,
    RecordedApproval,
};
use statemachines::scope_change::{
    ScopeChange, ScopeChangeInput, ScopeChangeRequest, ScopeChangeState,
};
use statemachines::workflow::{Step, Workflow};
use statemachines::{Agent, AgentRequest, AgentStatus, Event};
use std::collections::BTreeSet;

/// `prop_assert!` with the invariant's name first, stateright style.
macro_rules! invariant {
    ($name:literal, $cond:expr, $($detail:tt)+) => {
        prop_assert!($cond, "invariant `{}` violated: {}", $name, format!($($detail)+))
    };
}

/// What the tests need to see of a machine's state, beyond the `Workflow` trait.
trait Probe: Workflow<State: PartialEq> {
    fn agent(state: &Self::State) -> &Agent;
    fn awaiting_approval(state: &Self::State) -> bool;
    /// Provisioning / Granting: an identity-provider command is out.
    fn executing(state: &Self::State) -> bool;
    fn recorded_approval(state: &Self::State) -> Option<&RecordedApproval>;
    /// The open approval while awaiting one.
    fn open_approval(state: &Self::State) -> Option<&ApprovalRequest>;
    /// The registry status the agent must have in this state.
    fn expected_status(state: &Self::State) -> AgentStatus;
}

impl Probe for Onboarding {
    fn open_approval(state: &OnboardingState) -> Option<&ApprovalRequest> {
        match state {
            OnboardingState::AwaitingApproval { approval, .. } => Some(approval),
            _ => None,
        }
    }
    fn agent(state: &OnboardingState) -> &Agent {
        state.agent()
    }
    fn awaiting_approval(state: &OnboardingState) -> bool {
        matches!(state, OnboardingState::AwaitingApproval { .. })
    }
    fn executing(state: &OnboardingState) -> bool {
        matches!(state, OnboardingState::Provisioning { .. })
    }
    fn recorded_approval(state: &OnboardingState) -> Option<&RecordedApproval> {
        match state {
            OnboardingState::Provisioning { approval, .. }
            | OnboardingState::Active { approval, .. } => approval.as_ref(),
            _ => None,
        }
    }
    fn expected_status(state: &OnboardingState) -> AgentStatus {
        match state {
            OnboardingState::AwaitingApproval { .. } => AgentStatus::PendingApproval,
            OnboardingState::Provisioning { .. } => AgentStatus::Provisioning,
            OnboardingState::Active { .. } => AgentStatus::Active,
            OnboardingState::Denied { .. } => AgentStatus::Denied,
            OnboardingState::Expired { .. } => AgentStatus::Expired,
            OnboardingState::Cancelled { .. } => AgentStatus::Cancelled,
            OnboardingState::Failed { .. } => AgentStatus::Failed,
        }
    }
}

impl Probe for ScopeChange {
    fn open_approval(state: &ScopeChangeState) -> Option<&ApprovalRequest> {
        match state {
            ScopeChangeState::AwaitingApproval { approval, .. } => Some(approval),
            _ => None,
        }
    }
    fn agent(state: &ScopeChangeState) -> &Agent {
        match state {
            ScopeChangeState::AwaitingApproval { agent, .. }
            | ScopeChangeState::Granting { agent, .. }
            | ScopeChangeState::Applied { agent, .. }
            | ScopeChangeState::Denied { agent, .. }
            | ScopeChangeState::Expired { agent, .. }
            | ScopeChangeState::Cancelled { agent, .. }
            | ScopeChangeState::Failed { agent, .. } => agent,
        }
    }
    fn awaiting_approval(state: &ScopeChangeState) -> bool {
        matches!(state, ScopeChangeState::AwaitingApproval { .. })
    }
    fn executing(state: &ScopeChangeState) -> bool {
        matches!(state, ScopeChangeState::Granting { .. })
    }
    fn recorded_approval(state: &ScopeChangeState) -> Option<&RecordedApproval> {
        match state {
            ScopeChangeState::Granting { approval, .. }
            | ScopeChangeState::Applied { approval, .. } => approval.as_ref(),
            _ => None,
        }
    }
    fn expected_status(_: &ScopeChangeState) -> AgentStatus {
        // a scope change, whatever its outcome, leaves the agent active
        AgentStatus::Active
    }
}

/// Email comparison as the approval rules define it.
fn same_person(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn is_allowed_approver(who: &str) -> bool {
    policy().approvers.iter().any(|a| same_person(a, who))
}

// ---- random events --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Who {
    Requester,
    /// The requester's email in upper case with spaces around it.
    RequesterDisguised,
    Approver(usize),
    ApproverDisguised(usize),
    Outsider,
}

#[derive(Debug, Clone)]
enum Ev {
    Decide {
        who: Who,
        decision: Decision,
        wrong_id: bool,
    },
    Timer {
        expiry: bool,
    },
    ClientCreated,
    GrantsSet,
    CommandFailed,
    Cancel,
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        2 => Just(Who::Requester),
        1 => Just(Who::RequesterDisguised),
        4 => (0..APPROVERS.len()).prop_map(Who::Approver),
        1 => (0..APPROVERS.len()).prop_map(Who::ApproverDisguised),
        2 => Just(Who::Outsider),
    ]
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        5 => (who(), prop_oneof![Just(Decision::Approve), Just(Decision::Deny)], prop::bool::weighted(0.15))
            .prop_map(|(who, decision, wrong_id)| Ev::Decide { who, decision, wrong_id }),
        2 => prop::bool::weighted(0.85).prop_map(|expiry| Ev::Timer { expiry }),
        2 => Just(Ev::ClientCreated),
        2 => Just(Ev::GrantsSet),
        1 => Just(Ev::CommandFailed),
        1 => Just(Ev::Cancel),
    ]
}

/// When an event arrives, in seconds after the start: anywhere in the approval's life, close
/// around its expiry (86 400 s, where off-by-one mistakes live), or long after it.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0i64..86_400,
        1 => 86_390i64..=86_410,
        1 => Just(86_399i64),
        1 => Just(86_400i64),
        1 => Just(86_401i64),
        1 => 86_401i64..=400_000,
    ]
}

/// Events in the order they arrive (times never go backwards).
fn events() -> impl Strategy<Value = Vec<(i64, Ev)>> {
    prop::collection::vec((offset(), ev()), 0..12).prop_map(|mut events| {
        events.sort_by_key(|(offset, _)| *offset);
        events
    })
}

fn person() -> impl Strategy<Value = &'static str> {
    select(vec![OWNER, APPROVER, COLLEAGUE])
}

// ---- the run model --------------------------------------------------------------------------

/// What a run has asked of the world so far, rebuilt from the commands the machine emitted.
struct Run {
    requester: String,
    /// Scopes the agent held before this workflow (granting them again needs no approval).
    held: Vec<String>,
    /// The grant the identity provider must be asked for: scopes and token lifetime.
    grant: (BTreeSet<String>, u32),
    timer: Option<DateTime<Utc>>,
    pending_idp: Option<IdpCommand>,
    approvals_requested: Vec<String>,
    approvals_closed: usize,
    /// The registry record as last saved.
    saved: Option<Agent>,
}

impl Run {
    fn event(&self, ev: &Ev) -> Event {
        match *ev {
            Ev::Decide {
                who,
                decision,
                wrong_id,
            } => {
                let approver = match who {
                    Who::Requester => self.requester.clone(),
                    Who::RequesterDisguised => format!("  {} ", self.requester.to_uppercase()),
                    Who::Approver(i) => APPROVERS[i].to_string(),
                    Who::ApproverDisguised(i) => format!(" {}", APPROVERS[i].to_uppercase()),
                    Who::Outsider => OUTSIDER.to_string(),
                };
                let id = if wrong_id {
                    "wf-0001-approval-2"
                } else {
                    APPROVAL_ID
                };
                decided(id, &approver, decision, None)
            }
            Ev::Timer { expiry } => Event::TimerFired {
                name: if expiry {
                    APPROVAL_EXPIRY_TIMER
                } else {
                    APPROVAL_REMINDER_TIMER
                }
                .into(),
            },
            Ev::ClientCreated => match &self.pending_idp {
                Some(IdpCommand::CreateClient { key: Some(k), .. }) => Event::KeyClientCreated {
                    client_id: CLIENT_ID.into(),
                    kid: k.kid.clone(),
                },
                Some(IdpCommand::CreateClient {
                    certificate: Some(order),
                    name,
                    ..
                }) => Event::CertificateClientCreated {
                    client_id: CLIENT_ID.into(),
                    certificate: statemachines::credential::CertificateRecord {
                        serial: "7f01".into(),
                        spiffe_id: format!("spiffe://{}/agent/{name}", order.trust_domain),
                        x5t_s256: "thumbprint-of-the-certificate".into(),
                        not_before: chrono::DateTime::UNIX_EPOCH,
                        not_after: chrono::DateTime::UNIX_EPOCH
                            + chrono::Duration::days(i64::from(order.lifetime_days)),
                        revoked: None,
                    },
                },
                _ => client_created(),
            },
            Ev::GrantsSet => match &self.pending_idp {
                Some(IdpCommand::SetGrants {
                    scopes,
                    token_lifetime_secs,
                    ..
                }) => grants_set(scopes, *token_lifetime_secs),
                _ => grants_set(&self.held, 600),
            },
            Ev::CommandFailed => command_failed(
                self.pending_idp
                    .as_ref()
                    .map_or("approval.request", IdpCommand::name),
            ),
            Ev::Cancel => cancel(&self.requester),
        }
    }

    /// Takes in the commands of an accepted step and checks the per-command invariants.
    fn observe<W: Probe>(
        &mut self,
        commands: &[Command],
        state: &W::State,
    ) -> Result<(), TestCaseError> {
        for command in commands {
            match command {
                Command::SetTimer { name, at } => {
                    invariant!(
                        "approvals arm only their expiry and reminder timers",
                        name == APPROVAL_EXPIRY_TIMER || name == APPROVAL_REMINDER_TIMER,
                        "{name}"
                    );
                    if name == APPROVAL_EXPIRY_TIMER {
                        self.timer = Some(*at);
                    }
                }
                Command::CancelTimer { name } if name == APPROVAL_EXPIRY_TIMER => self.timer = None,
                Command::CancelTimer { .. } | Command::FollowUpApproval { .. } => {}
                Command::RequestApproval(request) => {
                    invariant!(
                        "requester never asked to approve",
                        request
                            .approvers
                            .iter()
                            .all(|a| is_allowed_approver(a) && !same_person(a, &self.requester)),
                        "approvers {:?} for a request by {}",
                        request.approvers,
                        self.requester
                    );
                    invariant!(
                        "the expiry timer matches the approval",
                        self.timer == Some(request.expires_at),
                        "timer {:?}, approval expires {}",
                        self.timer,
                        request.expires_at
                    );
                    self.approvals_requested.push(request.id.clone());
                }
                Command::CloseApproval { .. } => self.approvals_closed += 1,
                Command::SaveAgent(agent) => self.saved = Some(agent.as_ref().clone()),
                // The engine applies a field change to the record as stored.
                Command::UpdateAgent {
                    change: change @ AgentChange::GrantsSet { .. },
                    ..
                } => {
                    if let Some(saved) = &mut self.saved {
                        saved.apply(change, W::agent(state).updated_at);
                    }
                }
                Command::Idp(idp) => {
                    let unheld_sensitive: Vec<&String> = idp
                        .granted_scopes()
                        .iter()
                        .filter(|s| policy().is_sensitive(s) && !self.held.contains(s))
                        .collect();
                    if !unheld_sensitive.is_empty() {
                        let recorded = W::recorded_approval(state);
                        invariant!(
                            "sensitive command ⇒ recorded approval",
                            recorded.is_some_and(|r| unheld_sensitive
                                .iter()
                                .all(|s| r.scopes.contains(s))
                                && is_allowed_approver(&r.approver)
                                && !same_person(&r.approver, &self.requester)
                                && self.approvals_requested.contains(&r.approval_id)),
                            "{idp:?} grants {unheld_sensitive:?}; the state records {recorded:?}; requester {}",
                            self.requester
                        );
                    }
                    invariant!(
                        "no Idp command while awaiting approval",
                        !W::awaiting_approval(state),
                        "{idp:?} emitted into {}",
                        W::state_name(state)
                    );
                    let asked: BTreeSet<String> = idp.granted_scopes().iter().cloned().collect();
                    let lifetime = match idp {
                        IdpCommand::CreateClient {
                            token_lifetime_secs,
                            ..
                        }
                        | IdpCommand::SetGrants {
                            token_lifetime_secs,
                            ..
                        } => *token_lifetime_secs,
                        other => {
                            invariant!(
                                "onboarding and scope change only create clients and set grants",
                                false,
                                "{other:?} emitted into {}",
                                W::state_name(state)
                            );
                            unreachable!()
                        }
                    };
                    invariant!(
                        "the identity provider is asked for exactly the requested grant",
                        (&asked, lifetime) == (&self.grant.0, self.grant.1)
                            && asked.len() == idp.granted_scopes().len(),
                        "asked {idp:?}, expected {:?}",
                        self.grant
                    );
                    invariant!(
                        "one Idp command at a time",
                        self.pending_idp.is_none(),
                        "{idp:?} while {:?} is out",
                        self.pending_idp
                    );
                    self.pending_idp = Some(idp.clone());
                }
                // A claim's onboarding tells the shadow workflow how it ended.
                Command::Notify { .. } | Command::Audit(_) | Command::SettleShadowClaim { .. } => {}
                Command::Vault(_)
                | Command::UpdateAgent { .. }
                | Command::StartDecommission { .. }
                | Command::Supersede { .. }
                | Command::LaunchReviews { .. }
                | Command::Review(_)
                | Command::ApplyReview { .. } => {
                    invariant!(
                        "onboarding and scope change emit no lifecycle command",
                        false,
                        "{command:?} emitted into {}",
                        W::state_name(state)
                    );
                }
            }
        }
        Ok(())
    }

    /// Invariants of the state a run rests in, whatever happened last.
    fn check_state<W: Probe>(&self, state: &W::State) -> Result<(), TestCaseError> {
        let name = W::state_name(state);
        let terminal = W::is_terminal(state);
        let awaiting = W::awaiting_approval(state);
        if let Some(recorded) = W::recorded_approval(state) {
            let mut distinct: Vec<String> = recorded
                .approvers
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect();
            distinct.sort();
            distinct.dedup();
            invariant!(
                "an approval takes effect only with its quorum of distinct approvers",
                distinct.len() == recorded.approvers.len()
                    && distinct.len() >= usize::from(policy().quorum_for(&recorded.scopes)),
                "{name}: approvers {:?} for {:?}",
                recorded.approvers,
                recorded.scopes
            );
        }
        invariant!(
            "every run ends in a terminal or waiting state",
            terminal
                || (awaiting && self.timer.is_some())
                || (W::executing(state) && self.pending_idp.is_some()),
            "{name} with timer {:?} and pending {:?}",
            self.timer,
            self.pending_idp
        );
        invariant!(
            "terminal ⇒ nothing pending",
            !terminal || (self.timer.is_none() && self.pending_idp.is_none()),
            "{name} with timer {:?} and pending {:?}",
            self.timer,
            self.pending_idp
        );
        invariant!(
            "an approval closes exactly once",
            self.approvals_requested.len() <= 1
                && self.approvals_closed
                    == if awaiting {
                        0
                    } else {
                        self.approvals_requested.len()
                    },
            "{name}: requested {:?}, closed {}",
            self.approvals_requested,
            self.approvals_closed
        );
        invariant!(
            "registry record matches workflow state",
            self.saved.as_ref() == Some(W::agent(state)),
            "{name}: saved {:?}",
            self.saved
        );
        invariant!(
            "agent status mirrors workflow state",
            W::agent(state).status == W::expected_status(state),
            "{name} with agent {:?}",
            W::agent(state).status
        );
        let json = serde_json::to_string(state).expect("state serializes");
        let back: W::State = serde_json::from_str(&json).expect("state deserializes");
        invariant!("persisted state round-trips", back == *state, "{json}");
        Ok(())
    }
}

/// Drives a started machine through `events`, checking every invariant after every step.
fn drive<W: Probe>(
    mut run: Run,
    first: Step<W::State>,
    events: &[(i64, Ev)],
) -> Result<(), TestCaseError> {
    run.observe::<W>(&first.commands, &first.state)?;
    let mut state = first.state;
    run.check_state::<W>(&state)?;
    let expires_at = approval_expires_at();
    for (offset, ev) in events {
        let t = at(*offset);
        let event = run.event(ev);
        let before = state.clone();
        let before_json = serde_json::to_string(&state).expect("state serializes");
        let result = on::<W>(&state, event.clone(), t);
        let from = W::state_name(&before);
        let awaiting = W::awaiting_approval(&before);
        let outcome = result.as_ref().map(|step| W::state_name(&step.state));

        if W::is_terminal(&before) {
            invariant!(
                "terminal ⇒ every event rejected",
                result.is_err(),
                "{from} accepted {event:?}"
            );
        }
        match &event {
            Event::ApprovalDecided {
                approval_id,
                approver,
                ..
            } => {
                if !awaiting {
                    invariant!(
                        "no approval decided twice",
                        result.is_err(),
                        "{from} accepted {event:?}"
                    );
                }
                let voted_before = W::open_approval(&before)
                    .is_some_and(|a| a.votes.iter().any(|v| same_person(&v.by, approver)));
                let rules_hold = awaiting
                    && approval_id == APPROVAL_ID
                    && is_allowed_approver(approver)
                    && !same_person(approver, &run.requester)
                    && !voted_before
                    && t <= expires_at;
                invariant!(
                    "a decision counts ⇔ the approval rules hold",
                    result.is_ok() == rules_hold,
                    "{from} at {t} by {approver:?} (requester {}) → {outcome:?}",
                    run.requester
                );
            }
            Event::TimerFired { name } => {
                let due = awaiting && name == APPROVAL_EXPIRY_TIMER && t >= expires_at;
                let remind = W::open_approval(&before)
                    .and_then(|a| a.remind_at)
                    .is_some_and(|at| name == APPROVAL_REMINDER_TIMER && t >= at);
                invariant!(
                    "only a due timer of the open approval applies",
                    result.is_ok() == (due || remind),
                    "{from} at {t}: {event:?} → {outcome:?}"
                );
                invariant!(
                    "only the expiry timer ends an approval",
                    !remind || outcome.as_ref().is_ok_and(|o| *o == from),
                    "{from} at {t}: {event:?} → {outcome:?}"
                );
            }
            Event::Cancel { .. } => {
                invariant!(
                    "cancel ⇔ still awaiting approval",
                    result.is_ok() == awaiting,
                    "{from} → {outcome:?}"
                );
            }
            Event::OwnerAssigned { .. } => {
                invariant!(
                    "an owner assignment belongs to owner-loss handling only",
                    result.is_err(),
                    "{from} accepted {event:?}"
                );
            }
            Event::SecretIssued { .. }
            | Event::SecretVerified { .. }
            | Event::SecretPromoted { .. }
            | Event::SecretRemoved { .. }
            | Event::TokensRevoked { .. }
            | Event::ClientDeactivated { .. }
            | Event::ClientDeleted { .. }
            | Event::SecretDeletionScheduled { .. }
            | Event::RenewalRequested { .. }
            | Event::ReviewsLaunched { .. }
            | Event::ReviewDecided { .. }
            | Event::ReviewActionTaken { .. }
            | Event::ClientActivated { .. }
            | Event::ShadowClaimed { .. }
            | Event::ShadowClaimSettled { .. }
            | Event::ShadowReleased { .. }
            | Event::KeyAdded { .. }
            | Event::KeyUsed { .. }
            | Event::KeyRemoved { .. }
            | Event::CertificateAdded { .. }
            | Event::CertificateUsed { .. }
            | Event::CertificateRemoved { .. } => {
                invariant!(
                    "rotation, decommission and expiry events do not apply here",
                    result.is_err(),
                    "{from} accepted {event:?}"
                );
            }
            Event::ClientCreated { .. }
            | Event::KeyClientCreated { .. }
            | Event::CertificateClientCreated { .. }
            | Event::GrantsSet { .. }
            | Event::CommandFailed { .. } => {
                if result.is_ok() {
                    invariant!(
                        "a result answers a pending command",
                        run.pending_idp.is_some(),
                        "{from} accepted {event:?}"
                    );
                }
            }
        }

        match result {
            Err(rejected) => {
                invariant!(
                    "rejection changes nothing",
                    state == before
                        && serde_json::to_string(&state).expect("state serializes") == before_json,
                    "{from} changed by rejected {event:?}"
                );
                invariant!(
                    "rejection says why",
                    !rejected.reasons.is_empty()
                        && rejected
                            .reasons
                            .iter()
                            .all(|r| !r.field.is_empty() && !r.message.is_empty()),
                    "{rejected:?}"
                );
            }
            Ok(step) => {
                let replay = on::<W>(&before, event.clone(), t);
                invariant!(
                    "replay is deterministic",
                    replay.as_ref() == Ok(&step),
                    "{from} + {event:?}: {step:?} then {replay:?}"
                );
                match &event {
                    Event::ClientCreated { .. }
                    | Event::KeyClientCreated { .. }
                    | Event::CertificateClientCreated { .. }
                    | Event::GrantsSet { .. }
                    | Event::CommandFailed { .. } => run.pending_idp = None,
                    Event::TimerFired { name } if name == APPROVAL_EXPIRY_TIMER => run.timer = None,
                    _ => {}
                }
                run.observe::<W>(&step.commands, &step.state)?;
                state = step.state;
            }
        }
        run.check_state::<W>(&state)?;
    }
    Ok(())
}

// ---- onboarding -----------------------------------------------------------------------------

/// Names with the environment they spell (`None`: not a valid name at all).
const NAMES: [(&str, Option<&str>); 6] = [
    ("datadog-remediation-agent-prod", Some("prod")),
    ("erp-reader-agent-dev", Some("dev")),
    ("okta-sync-agent-staging", Some("staging")),
    ("ml-agent-qa", Some("qa")),
    ("Datadog-Agent-prod", None),
    ("datadog-bot-prod", None),
];
const ENVIRONMENTS: [&str; 4] = ["dev", "staging", "prod", "qa"];
const SCOPE_UNIVERSE: [&str; 8] = [
    METRICS_READ,
    MONITORS_WRITE,
    ORDERS_READ,
    PAYMENTS_WRITE,
    OKTA_APPS_READ,
    OKTA_USERS_MANAGE,
    API_KEYS_WRITE,
    UNLISTED,
];

fn lifetime_any() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        3 => Just(None),
        4 => (1u32..=900).prop_map(Some),
        1 => Just(Some(0)),
        1 => (901u32..=7_200).prop_map(Some),
    ]
}

fn input(
    name: &str,
    environment: &str,
    scopes: Vec<&str>,
    lifetime: Option<u32>,
    expires_in_days: Option<i64>,
    requester: &str,
) -> OnboardingInput {
    OnboardingInput {
        requester: requester.into(),
        ..onboarding_input(AgentRequest {
            name: name.into(),
            environment: environment.into(),
            scopes: scopes.into_iter().map(str::to_string).collect(),
            token_lifetime_secs: lifetime,
            expires_on: expires_in_days.map(|d| today() + Duration::days(d)),
            ..plain_request()
        })
    }
}

fn valid_onboarding() -> impl Strategy<Value = OnboardingInput> {
    (
        select(NAMES[..3].to_vec()),
        subsequence(APPROVED_SCOPES.to_vec(), 1..=3),
        prop_oneof![Just(None), (1u32..=900).prop_map(Some)],
        option::of(1i64..=400),
        person(),
        prop_oneof![6 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8)],
    )
        .prop_map(
            |((name, env), scopes, lifetime, expires, requester, kind)| {
                let mut i = input(name, env.unwrap(), scopes, lifetime, expires, requester);
                if kind == 1 {
                    // An agent-held key, as the admin API passes it on after the proof.
                    i.request.credential = statemachines::credential::CredentialKind::PrivateKeyJwt;
                    i.request.public_key = Some(statemachines::credential::AgentKey {
                        kid: "kid-of-the-agent-key".into(),
                        jwk: r#"{"kty":"EC"}"#.into(),
                    });
                } else if kind == 2 {
                    // A certificate from the internal CA, issued from the agent's CSR.
                    i.request.credential = statemachines::credential::CredentialKind::TlsClientAuth;
                    i.request.csr = Some(
                        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
                            .into(),
                    );
                }
                i
            },
        )
}

fn any_onboarding() -> impl Strategy<Value = OnboardingInput> {
    (
        select(NAMES.to_vec()),
        option::weighted(0.3, select(ENVIRONMENTS.to_vec())),
        prop::collection::vec(select(SCOPE_UNIVERSE.to_vec()), 0..=4),
        lifetime_any(),
        option::of(-3i64..=400),
        prop_oneof![8 => Just(OwnerStatus::Active), 1 => Just(OwnerStatus::Inactive), 1 => Just(OwnerStatus::Unknown)],
        (prop::bool::weighted(0.1), prop::bool::weighted(0.1)),
        person(),
    )
        .prop_map(|((name, name_env), env, scopes, lifetime, expires, owner_status, (blank_team, blank_purpose), requester)| {
            let mut i = input(name, env.or(name_env).unwrap_or("prod"), scopes, lifetime, expires, requester);
            i.owner_status = owner_status;
            if blank_team {
                i.request.team = " ".into();
            }
            if blank_purpose {
                i.request.purpose = String::new();
            }
            i
        })
}

/// The policy, restated independently of the machine.
/// A two-person scope needs two approvers besides the requester.
fn quorum_reachable(requester: &str, added: &[String]) -> bool {
    let needs_two = added.iter().any(|s| policy().two_person_scopes.contains(s));
    let others = APPROVERS
        .iter()
        .filter(|a| !same_person(a, requester))
        .count();
    !needs_two || others >= 2
}

fn onboarding_is_valid(i: &OnboardingInput) -> bool {
    let r = &i.request;
    let name_ok = NAMES
        .iter()
        .any(|(n, e)| *n == r.name && *e == Some(r.environment.as_str()));
    let unique = r.scopes.iter().collect::<BTreeSet<_>>().len() == r.scopes.len();
    let lifetime = r.token_lifetime_secs.unwrap_or(900);
    ["dev", "staging", "prod"].contains(&r.environment.as_str())
        && name_ok
        && i.owner_status == OwnerStatus::Active
        && !r.team.trim().is_empty()
        && !r.purpose.trim().is_empty()
        && !r.scopes.is_empty()
        && unique
        && r.scopes
            .iter()
            .all(|s| APPROVED_SCOPES.contains(&s.as_str()))
        && (1..=900).contains(&lifetime)
        && r.expires_on.is_none_or(|d| d > today())
        && quorum_reachable(&i.requester, &r.scopes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1600, ..ProptestConfig::default() })]

    #[test]
    fn onboarding_runs_keep_invariants(
        input in prop_oneof![3 => valid_onboarding(), 2 => any_onboarding()],
        events in events(),
    ) {
        let valid = onboarding_is_valid(&input);
        let requester = input.requester.clone();
        let sensitive = input.request.scopes.iter().any(|s| policy().is_sensitive(s));
        let grant = (input.request.scopes.iter().cloned().collect(), input.request.token_lifetime_secs.unwrap_or(900));
        let started = start::<Onboarding>(input.clone(), now());
        invariant!("start accepts exactly the valid requests", started.is_ok() == valid, "{input:?} → {started:?}");
        let first = match started {
            Ok(step) => step,
            Err(rejected) => {
                invariant!("rejection says why", !rejected.reasons.is_empty(), "{rejected:?}");
                return Ok(());
            }
        };
        invariant!(
            "sensitive request ⇔ awaits approval",
            Onboarding::awaiting_approval(&first.state) == sensitive,
            "{:?} for {:?}", Onboarding::state_name(&first.state), input.request.scopes
        );
        let run = Run {
            requester,
            held: vec![],
            grant,
            timer: None,
            pending_idp: None,
            approvals_requested: vec![],
            approvals_closed: 0,
            saved: None,
        };
        drive::<Onboarding>(run, first, &events)?;
    }
}

// ---- scope change ---------------------------------------------------------------------------

fn scope_change_case() -> impl Strategy<Value = ScopeChangeInput> {
    (
        subsequence(APPROVED_SCOPES.to_vec(), 1..=4),
        select(vec![300u32, 600, 900]),
        prop_oneof![9 => Just(AgentStatus::Active), 1 => select(vec![AgentStatus::Provisioning, AgentStatus::Failed, AgentStatus::Denied])],
        prop::bool::weighted(0.95),
        person(),
    )
        .prop_flat_map(|(held, current_lifetime, status, has_client, requester)| {
            let not_held: Vec<&'static str> = APPROVED_SCOPES.iter().copied().filter(|s| !held.contains(s)).collect();
            let n = not_held.len();
            (
                Just((held.clone(), current_lifetime, status, has_client, requester)),
                prop_oneof![4 => subsequence(not_held, 0..=n), 1 => subsequence(SCOPE_UNIVERSE.to_vec(), 0..=3)],
                subsequence(held.clone(), 0..=held.len()),
                option::weighted(0.1, select(SCOPE_UNIVERSE.to_vec())),
                lifetime_any(),
                prop::bool::weighted(0.05),
            )
        })
        .prop_map(|((held, current_lifetime, status, has_client, requester), add, mut remove, extra_remove, lifetime, blank_reason)| {
            if let Some(extra) = extra_remove
                && !remove.contains(&extra)
            {
                remove.push(extra);
            }
            let agent = Agent {
                scopes: strings(&held),
                token_lifetime_secs: current_lifetime,
                status,
                client_id: has_client.then(|| CLIENT_ID.to_string()),
                ..active_agent()
            };
            let request = ScopeChangeRequest {
                token_lifetime_secs: lifetime,
                reason: if blank_reason { " ".into() } else { "needed for INC-4711".into() },
                ..scope_change_request(&add, &remove)
            };
            ScopeChangeInput { agent, request, requester: requester.into() }
        })
}

/// The resulting grant: held − removed + added.
fn new_grant(i: &ScopeChangeInput) -> BTreeSet<String> {
    let held: BTreeSet<String> = i.agent.scopes.iter().cloned().collect();
    let removed: BTreeSet<String> = i.request.remove.iter().cloned().collect();
    held.difference(&removed)
        .cloned()
        .chain(i.request.add.iter().cloned())
        .collect()
}

/// The scope-change rules, restated independently of the machine.
fn scope_change_is_valid(i: &ScopeChangeInput) -> bool {
    let (agent, r) = (&i.agent, &i.request);
    let lifetime = r.token_lifetime_secs.unwrap_or(agent.token_lifetime_secs);
    agent.status == AgentStatus::Active
        && agent.client_id.is_some()
        && !r.reason.trim().is_empty()
        && r.add
            .iter()
            .all(|s| APPROVED_SCOPES.contains(&s.as_str()) && !agent.scopes.contains(s))
        && r.remove
            .iter()
            .all(|s| agent.scopes.contains(s) && !r.add.contains(s))
        && (1..=900).contains(&lifetime)
        && !new_grant(i).is_empty()
        && !(r.add.is_empty() && r.remove.is_empty() && lifetime == agent.token_lifetime_secs)
        && quorum_reachable(&i.requester, &r.add)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1600, ..ProptestConfig::default() })]

    #[test]
    fn scope_change_runs_keep_invariants(input in scope_change_case(), events in events()) {
        let valid = scope_change_is_valid(&input);
        let sensitive = input.request.add.iter().any(|s| policy().is_sensitive(s));
        let grant = (new_grant(&input), input.request.token_lifetime_secs.unwrap_or(input.agent.token_lifetime_secs));
        let started = start::<ScopeChange>(input.clone(), now());
        invariant!("start accepts exactly the valid requests", started.is_ok() == valid, "{input:?} → {started:?}");
        let first = match started {
            Ok(step) => step,
            Err(rejected) => {
                invariant!("rejection says why", !rejected.reasons.is_empty(), "{rejected:?}");
                return Ok(());
            }
        };
        invariant!(
            "sensitive request ⇔ awaits approval",
            ScopeChange::awaiting_approval(&first.state) == sensitive,
            "{:?} for adding {:?}", ScopeChange::state_name(&first.state), input.request.add
        );
        let run = Run {
            requester: input.requester.clone(),
            held: input.agent.scopes.clone(),
            grant,
            timer: None,
            pending_idp: None,
            approvals_requested: vec![],
            approvals_closed: 0,
            saved: Some(input.agent.clone()),
        };
        drive::<ScopeChange>(run, first, &events)?;
    }
}

/// The random runs must actually reach the interesting places, or the invariants above would hold
/// vacuously: every declared transition of both machines is taken by the generated runs.
#[test]
fn random_runs_reach_every_transition() {
    let taken = std::thread::spawn(|| {
        onboarding_runs_keep_invariants();
        scope_change_runs_keep_invariants();
        (
            statemachines::workflow::coverage::taken(Onboarding::KIND),
            statemachines::workflow::coverage::taken(ScopeChange::KIND),
        )
    })
    .join()
    .expect("property runs pass");
    let missing: Vec<String> = Onboarding::TRANSITIONS
        .iter()
        .filter(|t| !taken.0.contains(t))
        .chain(
            ScopeChange::TRANSITIONS
                .iter()
                .filter(|t| !taken.1.contains(t)),
        )
        .map(|t| format!("{} --{}--> {}", t.from, t.on, t.to))
        .collect();
    assert!(missing.is_empty(), "random runs never took: {missing:?}");
}
