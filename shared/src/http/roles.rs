//! Who may do what on the admin API: one table ([`who_may`]) for every operation of the route
//! table, and one check ([`authorize`]) the router runs before every admin handler. A caller's
//! roles come from the policy (security approvers, operators), the registry (the agent's
//! owner) and the directory (the owner's manager); nothing the caller typed counts.
//!
//! The table decides who may *ask*; the engine still decides whether the ask is allowed (an
//! approver must be listed on the approval and may not be its requester, a reviewer must be
//! the item's, an owner must be active).

use super::routes::{Op, Route};
use super::{ApiError, App, Caller, Principal};
use axum::extract::{RawPathParams, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A role a caller holds for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The automation token (or an IAM principal on AWS): CI and schedulers.
    Automation,
    /// Any person signed in and active in the directory.
    Person,
    /// The owner of the agent the request is about.
    Owner,
    /// The manager (in the directory) of that agent's owner.
    Manager,
    /// Listed in the policy's `approvals.approvers`: the security group.
    SecurityApprover,
    /// Listed in the policy's `access.operators`: who runs Steward.
    Operator,
}

impl Role {
    pub fn describe(self) -> &'static str {
        match self {
            Role::Automation => "the automation token",
            Role::Person => "any signed-in person",
            Role::Owner => "the agent's owner",
            Role::Manager => "the owner's manager",
            Role::SecurityApprover => "a security approver",
            Role::Operator => "an operator",
        }
    }
}

use Role::*;

/// Every read anyone authenticated may do.
const ANYONE: &[Role] = &[Automation, Person];
/// The kill switch and the credential: the agent's owner or security (the engine asks the same).
const OWNER_OR_SECURITY: &[Role] = &[Owner, SecurityApprover];
/// Running Steward itself.
const RUNNING: &[Role] = &[SecurityApprover, Operator, Automation];
/// Decisions, answers and claims: a person, always (the engine checks which one: an approver
/// listed on the approval, the item's reviewer, whoever claims a shadow agent).
const A_PERSON: &[Role] = &[Person];

/// Who may call each admin operation. Public routes check their own credential (Slack's
/// signature, Okta's secret, the transmitter's keys) and are not in this table's scope.
pub fn who_may(op: Op) -> &'static [Role] {
    match op {
        Op::Health
        | Op::SlackInteractions
        | Op::OktaHookVerification
        | Op::OktaHookDelivery
        | Op::SharedSignals => &[],
        Op::Whoami
        | Op::ListAgents
        | Op::ShowAgent
        // A certificate is public (the agent, or its deployment, fetches it).
        | Op::AgentCertificate
        | Op::AgentHistory
        | Op::ListShadowAgents
        | Op::ListCampaigns
        | Op::CampaignProgress
        | Op::ShowWorkflow
        | Op::ListApprovals
        | Op::Notifications
        | Op::HealthCounts => ANYONE,
        // Submitting a manifest: any person (the requester; the owner it names must be active),
        // or CI.
        Op::RequestAgent | Op::KeyNonce => &[Person, Automation],
        Op::ChangeScopes => &[Owner, Manager, SecurityApprover, Automation],
        Op::Rotate
        | Op::RotateKey
        | Op::ConfirmKey
        | Op::RotateCertificate
        | Op::ConfirmCertificate
        | Op::Freeze
        | Op::Unfreeze
        | Op::Renew => OWNER_OR_SECURITY,
        Op::Decommission => &[Owner, Manager, SecurityApprover],
        Op::ReassignOwner => &[Manager, SecurityApprover],
        Op::CancelWorkflow => &[Owner, Manager, SecurityApprover, Operator],
        Op::LaunchCampaign => &[SecurityApprover, Operator],
        Op::Discover | Op::Sweep => RUNNING,
        Op::CampaignReport | Op::ExportAudit | Op::AuditSeal | Op::DeadLetters | Op::IdpClients => {
            RUNNING
        }
        // Where and when its tokens were used (IP addresses): its owners and the people who
        // run the service.
        Op::AgentGrants => &[Owner, Manager, SecurityApprover, Operator, Automation],
        Op::AnswerReview | Op::Approve | Op::Deny => A_PERSON,
        Op::ClaimShadowAgent => A_PERSON,
        // Letting a client Steward did not create go (deactivated, then deleted): security
        // only, never a creator an IdP event names.
        Op::ReleaseShadowAgent => &[SecurityApprover],
        Op::CreateToken | Op::ListTokens | Op::RevokeToken => A_PERSON,
    }
}

/// What a request is about, as far as roles go.
enum Subject {
    /// Nothing in particular (a list, a launch, an approval: the engine checks those).
    None,
    /// An agent or workflow the path names that does not exist: the handler answers 404.
    Unknown,
    /// An agent (directly, or through its workflow) owned by this person.
    OwnedBy(String),
}

async fn subject(app: &App, op: Op, params: &RawPathParams) -> Result<Subject, ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let engine = &app.engine;
    if let Some(agent) = param("agent") {
        return Ok(match engine.find_agent(&agent).await? {
            Some(a) => Subject::OwnedBy(a.owner),
            None => Subject::Unknown,
        });
    }
    if matches!(op, Op::ShowWorkflow | Op::CancelWorkflow)
        && let Some(id) = param("id")
    {
        let Some(instance) = engine.store.instance(&id).await? else {
            return Ok(Subject::Unknown);
        };
        if let Some(agent_id) = instance.agent_id
            && let Some(agent) = engine.store.agent(&agent_id).await?
        {
            return Ok(Subject::OwnedBy(agent.owner));
        }
    }
    Ok(Subject::None)
}

/// The roles `caller` holds for a request about the agent owned by `owner`.
pub async fn roles_of(
    app: &App,
    caller: &Caller,
    owner: Option<&str>,
) -> Result<Vec<Role>, ApiError> {
    let id = match &caller.principal {
        Principal::Automation { .. } => return Ok(vec![Automation]),
        Principal::Person { id, .. } => id,
    };
    let policy = &app.engine.policy;
    let listed = |list: &[String]| list.iter().any(|p| p.trim().eq_ignore_ascii_case(id));
    let mut roles = vec![Person];
    if listed(&policy.approvers) {
        roles.push(SecurityApprover);
    }
    if listed(&policy.operators) {
        roles.push(Operator);
    }
    if let Some(owner) = owner {
        if owner.trim().eq_ignore_ascii_case(id) {
            roles.push(Owner);
        }
        let manager = app
            .engine
            .directory
            .person(owner)
            .await
            .map_err(ApiError::unavailable)?
            .and_then(|p| p.manager);
        if manager.is_some_and(|m| m.trim().eq_ignore_ascii_case(id)) {
            roles.push(Manager);
        }
    }
    Ok(roles)
}

/// The roles in the order people read them: the closest to the agent first.
fn in_reading_order(allowed: &[Role]) -> Vec<&'static str> {
    const ORDER: [Role; 6] = [
        Owner,
        Manager,
        SecurityApprover,
        Operator,
        Person,
        Automation,
    ];
    ORDER
        .iter()
        .filter(|r| allowed.contains(r))
        .map(|r| r.describe())
        .collect()
}

/// Why `caller` may not do `op`: names who may.
fn refusal(route: &Route, caller: &Caller, allowed: &[Role]) -> String {
    let hint = match caller.principal {
        Principal::Automation { .. } if !allowed.contains(&Automation) => {
            " (a person signs in with `steward login`)"
        }
        _ => "",
    };
    format!(
        "{} may be done only by {}; you are {}{hint}",
        route.name(),
        in_reading_order(allowed).join(", "),
        caller.principal
    )
}

/// Runs before every admin handler: refuses (403, counted, audited, nothing changed) a caller
/// without a role the table allows; audits every change a caller makes (principal, source,
/// operation, outcome).
pub async fn authorize(
    State((app, route)): State<(App, Route)>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this route has no authenticated caller",
        )
        .into_response();
    };
    let source = super::source_of(request.headers(), request.extensions());
    let subject = match subject(&app, route.op, &params).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let owner = match &subject {
        Subject::OwnedBy(o) => Some(o.as_str()),
        _ => None,
    };
    let roles = match roles_of(&app, &caller, owner).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let allowed = who_may(route.op);
    // About an agent or workflow that does not exist: the handler says so (404), and nothing
    // changes either way.
    let unknown = matches!(subject, Subject::Unknown);
    if !unknown && !roles.iter().any(|r| allowed.contains(r)) {
        let why = refusal(&route, &caller, allowed);
        app.refuse_call(&route, &caller, source, &why).await;
        return ApiError::new(StatusCode::FORBIDDEN, why).into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() {
        // Refused by the handler (an unknown agent or approval, a malformed body, a rule of
        // the engine): counted and audited like every refusal, with what the answer said.
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, REFUSAL_BYTES)
            .await
            .unwrap_or_default();
        let why = refusal_text(&bytes, status);
        app.refuse_answered(&route, &caller, source, status, &why)
            .await;
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    if route.verb.as_str() == Method::POST.as_str() {
        app.audit_call(&route, &caller, source, status).await;
    }
    response
}

/// Largest refusal answer read back for its audit record (an `ApiError` is far smaller).
const REFUSAL_BYTES: usize = 64 * 1024;
/// Longest reason an audit record keeps of a refusal answer.
const REFUSAL_REASON_CHARS: usize = 500;

/// What a refusal answer says (`error: reason; reason`), at most [`REFUSAL_REASON_CHARS`].
fn refusal_text(body: &[u8], status: StatusCode) -> String {
    let text = crate::admin::ErrorBody::sentence_of(body)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_string());
    text.chars().take(REFUSAL_REASON_CHARS).collect()
}

/// The role table as docs/api.md shows it (a test keeps the two equal).
pub fn markdown_table() -> String {
    use super::routes::{Access, ROUTES};
    let mut out = String::from("| Operation | Who may call it |\n|---|---|\n");
    for route in ROUTES.iter().filter(|r| r.access == Access::Admin) {
        let who = in_reading_order(who_may(route.op)).join(", ");
        out.push_str(&format!("| `{}` | {who} |\n", route.name()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::routes::{Access, ROUTES};

    #[test]
    fn every_admin_operation_names_who_may_do_it_and_no_decision_is_automations() {
        for r in ROUTES {
            let who = who_may(r.op);
            match r.access {
                Access::Admin => assert!(!who.is_empty(), "{} has nobody", r.name()),
                Access::Public => assert!(who.is_empty(), "{} is public", r.name()),
            }
        }
        for op in [
            Op::Approve,
            Op::Deny,
            Op::AnswerReview,
            Op::Unfreeze,
            Op::ClaimShadowAgent,
            Op::CreateToken,
        ] {
            assert!(!who_may(op).contains(&Automation), "{op:?}");
        }
    }
}
