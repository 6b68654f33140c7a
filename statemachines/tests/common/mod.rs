//! Fixtures shared by the statemachines test binaries: the test policy, a fixed clock, request
//! builders, event builders, command inspectors, and thin wrappers over
//! `statemachines::workflow::{start, on}` (the wrappers record transition coverage on the current
//! thread and debug-assert that every transition taken is declared in the machine's table).

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use statemachines::approval::Decision;
use statemachines::command::{Actor, AuditEvent, AuditKind, Command, IdpCommand};
use statemachines::onboarding::{APPROVAL_EXPIRY_TIMER, OnboardingInput, OwnerStatus};
use statemachines::scope_change::{ScopeChangeInput, ScopeChangeRequest};
use statemachines::workflow::{self, Ctx, Rejected, Step, Workflow};
use statemachines::{Agent, AgentRequest, AgentStatus, Event, Policy};
use std::fmt::Debug;
use std::sync::LazyLock;

pub const WORKFLOW_ID: &str = "wf-0001";
/// Machines derive the approval id from the workflow id (`<workflow>-approval-1`).
pub const APPROVAL_ID: &str = "wf-0001-approval-1";
pub const AGENT_ID: &str = "agent-0001";
pub const AGENT_NAME: &str = "datadog-remediation-agent-prod";
pub const CLIENT_ID: &str = "0oa-client-0001";
pub const SECRET_VERSION: &str = "v-0001";

pub const OWNER: &str = "alice@example.com";
/// Owners usually request their own agents.
pub const REQUESTER: &str = OWNER;
pub const COLLEAGUE: &str = "bob@example.com";
pub const APPROVERS: [&str; 2] = ["sec-lead@example.com", "sec-oncall@example.com"];
pub const APPROVER: &str = APPROVERS[0];
pub const OTHER_APPROVER: &str = APPROVERS[1];
pub const OUTSIDER: &str = "mallory@example.com";

pub const METRICS_READ: &str = "datadog:metrics:read";
pub const MONITORS_WRITE: &str = "datadog:monitors:write";
pub const ORDERS_READ: &str = "erp:orders:read";
pub const PAYMENTS_WRITE: &str = "banking:payments:write";
pub const OKTA_APPS_READ: &str = "okta:apps:read";
pub const OKTA_USERS_MANAGE: &str = "okta:users:manage";
pub const API_KEYS_WRITE: &str = "datadog:api_keys:write";
/// In no list of the policy.
pub const UNLISTED: &str = "github:repo:admin";

pub const APPROVED_SCOPES: [&str; 5] = [
    METRICS_READ,
    MONITORS_WRITE,
    ORDERS_READ,
    PAYMENTS_WRITE,
    OKTA_APPS_READ,
];
pub const EXCLUDED_SCOPES: [&str; 2] = [OKTA_USERS_MANAGE, API_KEYS_WRITE];
pub const SENSITIVE_SCOPES: [&str; 2] = [MONITORS_WRITE, PAYMENTS_WRITE];

pub static POLICY: LazyLock<Policy> = LazyLock::new(|| Policy {
    naming_pattern: "{function}-agent-{env}".into(),
    environments: strings(&["dev", "staging", "prod"]),
    approved_scopes: strings(&APPROVED_SCOPES),
    excluded_scopes: strings(&EXCLUDED_SCOPES),
    sensitive_scopes: strings(&SENSITIVE_SCOPES),
    max_token_lifetime_secs: 900,
    rotation_max_age_days: 90,
    approval_expiry_secs: 86_400,
    approvers: strings(&APPROVERS),
    approval_reminder_secs: 3600,
    operators: vec![],
    two_person_scopes: strings(&[PAYMENTS_WRITE]),
    approval_routes: statemachines::policy::default_routes(),
    owner_reassign_secs: 7 * 86_400,
    lifecycle: statemachines::policy::Lifecycle::default(),
    reviews: statemachines::policy::Reviews::default(),
    detection: Default::default(),
    discovery: Default::default(),
    credentials: Default::default(),
});

pub fn policy() -> &'static Policy {
    &POLICY
}

/// The fixed "now" every scenario starts at.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 10, 9, 0, 0).unwrap()
}

/// `now()` plus `secs` seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    now() + Duration::seconds(secs)
}

pub fn today() -> NaiveDate {
    now().date_naive()
}

/// When an approval requested at `now()` expires under the test policy.
pub fn approval_expires_at() -> DateTime<Utc> {
    at(POLICY.approval_expiry_secs as i64)
}

pub fn ctx(at: DateTime<Utc>) -> Ctx<'static> {
    Ctx {
        now: at,
        policy: policy(),
        workflow_id: WORKFLOW_ID,
    }
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---- requests -------------------------------------------------------------------------------

/// A valid request that needs a security approval (it asks for `datadog:monitors:write`).
pub fn sensitive_request() -> AgentRequest {
    AgentRequest {
        credential: Default::default(),
        public_key: None,
        key_custody: Default::default(),
        csr: None,
        name: AGENT_NAME.into(),
        owner: OWNER.into(),
        team: "sre".into(),
        environment: "prod".into(),
        purpose: "restarts stuck monitors and reads metrics during incidents".into(),
        scopes: strings(&[METRICS_READ, MONITORS_WRITE]),
        token_lifetime_secs: Some(600),
        expires_on: Some(NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()),
    }
}

/// A valid request with no sensitive scope: provisioned without an approval.
pub fn plain_request() -> AgentRequest {
    AgentRequest {
        scopes: strings(&[METRICS_READ, ORDERS_READ]),
        ..sensitive_request()
    }
}

pub fn onboarding_input(request: AgentRequest) -> OnboardingInput {
    OnboardingInput {
        agent_id: AGENT_ID.into(),
        request,
        requester: REQUESTER.into(),
        owner_status: OwnerStatus::Active,
        adopt_client: None,
    }
}

/// The agent as the registry holds it after a successful onboarding of `plain_request()`.
pub fn active_agent() -> Agent {
    let r = plain_request();
    Agent {
        id: AGENT_ID.into(),
        name: r.name,
        owner: r.owner,
        team: r.team,
        environment: r.environment,
        purpose: r.purpose,
        scopes: r.scopes,
        token_lifetime_secs: 600,
        expires_on: r.expires_on,
        status: AgentStatus::Active,
        client_id: Some(CLIENT_ID.into()),
        secret_version: Some(SECRET_VERSION.into()),
        credential_issued_at: Some(at(-86_400)),
        requested_by: REQUESTER.into(),
        created_at: at(-86_400),
        updated_at: at(-86_400),
        flags: vec![],
        credentials: vec![],
        credential_kind: Default::default(),
        key_custody: Default::default(),
        token_binding: Default::default(),
        keys: vec![],
        csr: None,
        certificates: vec![],
        decommission: None,
        last_review: None,
    }
}

pub fn scope_change_request(add: &[&str], remove: &[&str]) -> ScopeChangeRequest {
    ScopeChangeRequest {
        add: strings(add),
        remove: strings(remove),
        token_lifetime_secs: None,
        reason: "auto-remediation needs it (INC-4711)".into(),
    }
}

pub fn scope_change_input(request: ScopeChangeRequest) -> ScopeChangeInput {
    ScopeChangeInput {
        agent: active_agent(),
        request,
        requester: REQUESTER.into(),
    }
}

// ---- driving machines -----------------------------------------------------------------------

/// `workflow::start::<W>` at time `at`.
pub fn start<W: Workflow>(input: W::Input, at: DateTime<Utc>) -> Result<Step<W::State>, Rejected> {
    workflow::start::<W>(input, &ctx(at))
}

/// `workflow::on::<W>` at time `at`.
pub fn on<W: Workflow>(
    state: &W::State,
    event: Event,
    at: DateTime<Utc>,
) -> Result<Step<W::State>, Rejected> {
    workflow::on::<W>(state, event, &ctx(at))
}

/// Starts at `now()` and expects acceptance.
pub fn started<W: Workflow>(input: W::Input) -> Step<W::State> {
    start::<W>(input, now()).unwrap_or_else(|r| panic!("{} start rejected: {r}", W::KIND))
}

/// Applies an event and expects acceptance.
pub fn accepted<W: Workflow>(state: &W::State, event: Event, at: DateTime<Utc>) -> Step<W::State> {
    let label = event.label();
    on::<W>(state, event, at).unwrap_or_else(|r| {
        panic!(
            "{} rejected {label} in {}: {r}",
            W::KIND,
            W::state_name(state)
        )
    })
}

/// Asserts a rejection that has a reason on `field` whose message contains `fragment`.
pub fn assert_rejected<S: Debug>(
    result: Result<Step<S>, Rejected>,
    field: &str,
    fragment: &str,
) -> Rejected {
    match result {
        Ok(step) => panic!(
            "expected a rejection on `{field}` containing {fragment:?}, but it was accepted: {:?}",
            step.state
        ),
        Err(rejected) => {
            assert!(
                rejected
                    .reasons
                    .iter()
                    .any(|r| r.field == field && r.message.contains(fragment)),
                "expected a reason on `{field}` containing {fragment:?}, got: {rejected}"
            );
            rejected
        }
    }
}

// ---- events ---------------------------------------------------------------------------------

pub fn decided(
    approval_id: &str,
    approver: &str,
    decision: Decision,
    reason: Option<&str>,
) -> Event {
    Event::ApprovalDecided {
        approval_id: approval_id.into(),
        decision,
        approver: approver.into(),
        reason: reason.map(str::to_string),
    }
}

pub fn approve(approver: &str) -> Event {
    decided(
        APPROVAL_ID,
        approver,
        Decision::Approve,
        Some("ok for INC-4711"),
    )
}

pub fn deny(approver: &str) -> Event {
    decided(
        APPROVAL_ID,
        approver,
        Decision::Deny,
        Some("use the read-only scope"),
    )
}

pub fn reminder_timer() -> Event {
    Event::TimerFired {
        name: statemachines::approval::APPROVAL_REMINDER_TIMER.into(),
    }
}

pub fn expiry_timer() -> Event {
    Event::TimerFired {
        name: APPROVAL_EXPIRY_TIMER.into(),
    }
}

pub fn client_created() -> Event {
    Event::ClientCreated {
        client_id: CLIENT_ID.into(),
        secret_version: SECRET_VERSION.into(),
    }
}

pub fn grants_set(scopes: &[String], token_lifetime_secs: u32) -> Event {
    Event::GrantsSet {
        client_id: CLIENT_ID.into(),
        scopes: scopes.to_vec(),
        token_lifetime_secs,
    }
}

pub fn command_failed(command: &str) -> Event {
    Event::CommandFailed {
        command: command.into(),
        retryable: false,
        reason: "403 Forbidden".into(),
    }
}

pub fn cancel(by: &str) -> Event {
    Event::Cancel {
        by: Actor::Person(by.into()),
        reason: "no longer needed".into(),
    }
}

/// One event of every kind, aimed at the current approval.
pub fn every_event() -> Vec<Event> {
    vec![
        approve(APPROVER),
        deny(APPROVER),
        expiry_timer(),
        client_created(),
        grants_set(&strings(&[METRICS_READ]), 600),
        command_failed("idp.create_client"),
        cancel(REQUESTER),
    ]
}

// ---- inspecting commands --------------------------------------------------------------------

pub fn idp_commands(commands: &[Command]) -> Vec<&IdpCommand> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Idp(i) => Some(i),
            _ => None,
        })
        .collect()
}

pub fn audits(commands: &[Command]) -> Vec<&AuditEvent> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Audit(a) => Some(a),
            _ => None,
        })
        .collect()
}

pub fn audit_kinds(commands: &[Command]) -> Vec<AuditKind> {
    audits(commands).iter().map(|a| a.kind).collect()
}

pub fn audit_of(commands: &[Command], kind: AuditKind) -> &AuditEvent {
    audits(commands)
        .into_iter()
        .find(|a| a.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} audit among {:?}", names(commands)))
}

pub fn saved_agents(commands: &[Command]) -> Vec<&Agent> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::SaveAgent(a) => Some(a.as_ref()),
            _ => None,
        })
        .collect()
}

/// `(to, subject, body)` of every notification.
pub fn notifications(commands: &[Command]) -> Vec<(&str, &str, &str)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Notify { to, subject, body } => {
                Some((to.as_str(), subject.as_str(), body.as_str()))
            }
            _ => None,
        })
        .collect()
}

pub fn names(commands: &[Command]) -> Vec<&'static str> {
    commands.iter().map(Command::name).collect()
}

// ---- rotation, decommission, expiry ---------------------------------------------------------

/// The IdP's id of the secret `active_agent()` holds now (the one a rotation replaces).
pub const OLD_SECRET_ID: &str = "ocs-old-0001";
/// The IdP's id of the secret a rotation issues.
pub const NEW_SECRET_ID: &str = "ocs-new-0002";

/// `active_agent()`'s expiry date (from `plain_request()`).
pub fn agent_expires_on() -> NaiveDate {
    active_agent()
        .expires_on
        .expect("active_agent() is time-bound")
}

/// A timer event by name.
pub fn timer(name: &str) -> Event {
    Event::TimerFired { name: name.into() }
}

/// The vault version (ClientRequestToken) of attempt `attempt` of the rotation `WORKFLOW_ID`.
pub fn rotation_version(attempt: u32) -> String {
    statemachines::rotation::version_token(WORKFLOW_ID, attempt)
}

/// The IdP issued `NEW_SECRET_ID` as AWSPENDING `version`, replacing `OLD_SECRET_ID`.
pub fn secret_issued(version: &str) -> Event {
    Event::SecretIssued {
        version: version.into(),
        secret_id: NEW_SECRET_ID.into(),
        previous_version: Some(SECRET_VERSION.into()),
        previous_secret_id: Some(OLD_SECRET_ID.into()),
    }
}

pub fn secret_verified(version: &str) -> Event {
    Event::SecretVerified {
        version: version.into(),
    }
}

pub fn secret_promoted(version: &str) -> Event {
    Event::SecretPromoted {
        version: version.into(),
    }
}

pub fn secret_removed(secret_id: &str) -> Event {
    Event::SecretRemoved {
        secret_id: secret_id.into(),
    }
}

pub fn tokens_revoked() -> Event {
    Event::TokensRevoked {
        revoked: "all refresh tokens".into(),
        outstanding: Some("access tokens until they expire".into()),
    }
}

pub fn client_deactivated() -> Event {
    Event::ClientDeactivated {
        client_id: CLIENT_ID.into(),
    }
}

pub fn client_deleted() -> Event {
    Event::ClientDeleted {
        client_id: CLIENT_ID.into(),
    }
}

pub fn secret_deletion_scheduled(delete_after: DateTime<Utc>) -> Event {
    Event::SecretDeletionScheduled { delete_after }
}

pub fn renewal_requested(until: NaiveDate, by: &str, reason: &str) -> Event {
    Event::RenewalRequested {
        until,
        by: by.into(),
        reason: reason.into(),
    }
}

/// One event of every kind the rotation, decommission and expiry machines take.
pub fn every_lifecycle_event() -> Vec<Event> {
    let mut events = every_event();
    events.extend([
        timer(statemachines::rotation::START_TIMER),
        timer(statemachines::rotation::GRACE_TIMER),
        timer(statemachines::rotation::RETRY_TIMER),
        timer(statemachines::expiry::REMINDER_TIMER),
        timer(statemachines::expiry::DEADLINE_TIMER),
        reminder_timer(),
        secret_issued(&rotation_version(1)),
        secret_verified(&rotation_version(1)),
        secret_promoted(&rotation_version(1)),
        secret_removed(OLD_SECRET_ID),
        tokens_revoked(),
        client_deactivated(),
        client_deleted(),
        secret_deletion_scheduled(now() + Duration::days(30)),
        renewal_requested(
            agent_expires_on() + chrono::Days::new(90),
            OWNER,
            "still needed for the incident tooling",
        ),
    ]);
    events
}

/// The `AgentChange`s of every `UpdateAgent`.
pub fn agent_changes(commands: &[Command]) -> Vec<&statemachines::AgentChange> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::UpdateAgent { agent_id, change } => {
                assert_eq!(agent_id, AGENT_ID, "an update of another agent");
                Some(change)
            }
            _ => None,
        })
        .collect()
}

/// `(name, at)` of every `SetTimer`.
pub fn timers_set(commands: &[Command]) -> Vec<(&str, DateTime<Utc>)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::SetTimer { name, at } => Some((name.as_str(), *at)),
            _ => None,
        })
        .collect()
}

/// Names of every `CancelTimer`.
pub fn timers_cancelled(commands: &[Command]) -> Vec<&str> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::CancelTimer { name } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

/// Recipients of every notification, in order.
pub fn notified(commands: &[Command]) -> Vec<&str> {
    notifications(commands)
        .iter()
        .map(|(to, _, _)| *to)
        .collect()
}

// ---- access reviews -------------------------------------------------------------------------

/// The owner's manager (where an unanswered review item escalates).
pub const MANAGER: &str = "carol.manager@example.com";

pub fn review_decided(
    decision: statemachines::review_item::ReviewDecision,
    by: &str,
    reason: Option<&str>,
) -> Event {
    Event::ReviewDecided {
        decision,
        by: by.into(),
        reason: reason.map(str::to_string),
    }
}

pub fn reviews_launched(round: u32, launched: u64, more: bool) -> Event {
    Event::ReviewsLaunched {
        round,
        launched,
        more,
    }
}

pub fn review_action_taken(workflow_id: Option<&str>, ok: bool, detail: &str) -> Event {
    Event::ReviewActionTaken {
        workflow_id: workflow_id.map(str::to_string),
        ok,
        detail: detail.into(),
    }
}

/// One event of every kind, the access-review ones included.
pub fn every_review_event() -> Vec<Event> {
    use statemachines::review_campaign::CLOSE_TIMER;
    use statemachines::review_item::{
        DEADLINE_TIMER, ESCALATION_TIMER, REMINDER_TIMER, ReviewDecision,
    };
    let mut events = every_lifecycle_event();
    events.extend([
        timer(CLOSE_TIMER),
        timer(REMINDER_TIMER),
        timer(ESCALATION_TIMER),
        timer(DEADLINE_TIMER),
        reviews_launched(1, 10, false),
        review_decided(ReviewDecision::Keep, OWNER, None),
        review_decided(ReviewDecision::Revoke, APPROVER, None),
        review_action_taken(Some("wf-0002"), true, "started"),
        command_failed("workflow.launch_reviews"),
        command_failed("workflow.apply_review"),
        command_failed("idp.deactivate_client"),
    ]);
    events
}

/// What every `Command::Review` shows people, in order.
pub fn review_notices(commands: &[Command]) -> Vec<&statemachines::review_item::ReviewNotice> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Review(n) => Some(n),
            _ => None,
        })
        .collect()
}
