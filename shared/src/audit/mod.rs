//! The audit trail: every state change, decision and refusal as a JSON record shaped after
//! OCSF 1.8.0 (class choices: docs/adr/0007-ocsf-audit-chain.md), hash-chained by the store
//! and sealed with a signature ([`seal`]).

pub mod refusals;
pub mod seal;

use crate::ports::store::AuditRecord;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use statemachines::{Actor, AuditEvent, AuditKind};

pub const OCSF_VERSION: &str = "1.8.0";

struct Class {
    uid: u32,
    name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
}

const IAM: (u32, &str) = (3, "Identity & Access Management");

/// OCSF Entity Management (3004) with the given activity.
const fn entity_management(activity_id: u32, activity_name: &'static str) -> Class {
    Class {
        uid: 3004,
        name: "Entity Management",
        category_uid: IAM.0,
        category_name: IAM.1,
        activity_id,
        activity_name,
    }
}

/// OCSF API Activity (6003), activity Other: what Steward's edges did with a message.
const API_ACTIVITY_OTHER: Class = Class {
    uid: 6003,
    name: "API Activity",
    category_uid: 6,
    category_name: "Application Activity",
    activity_id: 99,
    activity_name: "Other",
};

fn class(kind: AuditKind) -> Class {
    let (entity_mgmt, user_access) = (
        (3004, "Entity Management"),
        (3005, "User Access Management"),
    );
    let (c, (activity_id, activity_name)) = match kind {
        AuditKind::AgentRequested
        | AuditKind::ScopeChangeRequested
        | AuditKind::ApprovalRequested => (entity_mgmt, (1, "Create")),
        AuditKind::AgentRegistered => (entity_mgmt, (1, "Create")),
        AuditKind::ApprovalDecided | AuditKind::ApprovalVoted | AuditKind::ApprovalExpired => {
            (entity_mgmt, (3, "Update"))
        }
        AuditKind::RequestCancelled => (entity_mgmt, (4, "Delete")),
        AuditKind::ProvisioningFailed => (entity_mgmt, (1, "Create")),
        AuditKind::ScopesGranted => (user_access, (1, "Assign Privileges")),
        AuditKind::ScopesRevoked => (user_access, (2, "Revoke Privileges")),
        AuditKind::OwnerLost | AuditKind::OwnerReassigned | AuditKind::FreezeRequested => {
            (entity_mgmt, (3, "Update"))
        }
        AuditKind::RotationRequested
        | AuditKind::SecretIssued
        | AuditKind::SecretRotated
        | AuditKind::RotationFailed
        | AuditKind::RotationCancelled
        | AuditKind::ExpiryReminded
        | AuditKind::RenewalRequested
        | AuditKind::Renewed
        | AuditKind::DecommissionRequested
        | AuditKind::DecommissionKept
        | AuditKind::ClientDisabled => (entity_mgmt, (3, "Update")),
        AuditKind::SecretRevoked => (user_access, (2, "Revoke Privileges")),
        AuditKind::Decommissioned => (entity_mgmt, (4, "Delete")),
        AuditKind::CampaignLaunched | AuditKind::ReviewRequested => (entity_mgmt, (1, "Create")),
        AuditKind::CampaignClosed
        | AuditKind::ReviewReminded
        | AuditKind::ReviewEscalated
        | AuditKind::ReviewDecided
        | AuditKind::ReviewDefaulted => (entity_mgmt, (3, "Update")),
        AuditKind::AgentFrozen | AuditKind::ShadowAgentReleased => {
            ((3001, "Account Change"), (5, "Disable"))
        }
        AuditKind::AgentUnfrozen => ((3001, "Account Change"), (2, "Enable")),
        AuditKind::ShadowAgentFound => (entity_mgmt, (1, "Create")),
        AuditKind::AnomalyDetected
        | AuditKind::FreezeDismissed
        | AuditKind::FreezeKept
        | AuditKind::ShadowAgentClaimed => (entity_mgmt, (3, "Update")),
    };
    Class {
        uid: c.0,
        name: c.1,
        category_uid: IAM.0,
        category_name: IAM.1,
        activity_id,
        activity_name,
    }
}

fn entity_type(kind: AuditKind) -> &'static str {
    match kind {
        AuditKind::AgentRequested => "Agent Request",
        AuditKind::ScopeChangeRequested => "Scope Change Request",
        AuditKind::ApprovalRequested
        | AuditKind::ApprovalDecided
        | AuditKind::ApprovalVoted
        | AuditKind::ApprovalExpired
        | AuditKind::RequestCancelled => "Access Request",
        AuditKind::CampaignLaunched | AuditKind::CampaignClosed => "Access Review Campaign",
        AuditKind::ReviewRequested
        | AuditKind::ReviewReminded
        | AuditKind::ReviewEscalated
        | AuditKind::ReviewDecided
        | AuditKind::ReviewDefaulted => "Access Review",
        _ => "AI Agent",
    }
}

/// OCSF `actor` for whoever caused the record.
pub fn actor_json(actor: &Actor) -> Value {
    match actor {
        Actor::Person(email) => {
            json!({"user": {"uid": email, "name": email, "email_addr": email, "type_id": 1, "type": "User"}})
        }
        Actor::Schedule(name) => {
            json!({"app_name": "steward-scheduler", "user": {"name": name, "type_id": 3, "type": "System"}})
        }
        Actor::IdpEvent(id) => {
            json!({"app_name": "identity-provider", "user": {"uid": id, "type_id": 3, "type": "System"}})
        }
        Actor::System => {
            json!({"app_name": "steward", "user": {"name": "steward", "type_id": 3, "type": "System"}})
        }
    }
}

fn base(
    c: &Class,
    time: DateTime<Utc>,
    id: &str,
    success: bool,
    message: &str,
    workflow_id: Option<&str>,
) -> Value {
    let mut v = json!({
        "class_uid": c.uid,
        "class_name": c.name,
        "category_uid": c.category_uid,
        "category_name": c.category_name,
        "activity_id": c.activity_id,
        "activity_name": c.activity_name,
        "type_uid": c.uid * 100 + c.activity_id,
        "type_name": format!("{}: {}", c.name, c.activity_name),
        "severity_id": if success { 1 } else { 3 },
        "severity": if success { "Informational" } else { "Medium" },
        "time": time.timestamp_millis(),
        "status_id": if success { 1 } else { 2 },
        "status": if success { "Success" } else { "Failure" },
        "message": message,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "Steward", "vendor_name": "Steward", "version": env!("CARGO_PKG_VERSION")},
            "uid": id,
            "log_name": "audit",
        },
    });
    if let Some(w) = workflow_id {
        v["metadata"]["correlation_uid"] = json!(w);
    }
    v
}

/// Shapes a machine's audit event.
pub fn from_event(
    ev: &AuditEvent,
    workflow_id: &str,
    time: DateTime<Utc>,
    id: String,
) -> AuditRecord {
    let c = class(ev.kind);
    let mut v = base(&c, time, &id, ev.success, &ev.message, Some(workflow_id));
    v["actor"] = actor_json(&ev.actor);
    let agent = json!({"uid": ev.agent_id, "name": ev.agent_name, "type_id": 4, "type": "Service"});
    if c.uid == 3005 {
        v["user"] = agent;
        v["privileges"] = json!(ev.scopes);
    } else if c.uid == 3001 {
        v["user"] = agent;
    } else if matches!(
        ev.kind,
        AuditKind::CampaignLaunched | AuditKind::CampaignClosed
    ) {
        let campaign = workflow_id.strip_prefix("campaign-").unwrap_or(workflow_id);
        v["entity"] = json!({"uid": campaign, "name": campaign, "type": entity_type(ev.kind)});
    } else {
        let uid = match (ev.kind, &ev.approval_id) {
            (
                AuditKind::ApprovalRequested
                | AuditKind::ApprovalDecided
                | AuditKind::ApprovalExpired
                | AuditKind::RequestCancelled
                | AuditKind::ReviewRequested
                | AuditKind::ReviewReminded
                | AuditKind::ReviewEscalated
                | AuditKind::ReviewDecided
                | AuditKind::ReviewDefaulted,
                Some(a),
            ) => a.clone(),
            _ => ev.agent_id.clone(),
        };
        v["entity"] = json!({"uid": uid, "name": ev.agent_name, "type": entity_type(ev.kind), "data": {"agent_id": ev.agent_id, "scopes": ev.scopes}});
    }
    v["unmapped"] = json!({"steward_event": ev.kind, "workflow_id": workflow_id, "approval_id": ev.approval_id, "agent_id": ev.agent_id});
    AuditRecord { id, time, body: v }
}

/// Longest outside text (a client id, a reason) a refusal's record keeps: an unauthenticated
/// caller decides what it sends, not how much the trail grows.
pub const REFUSAL_TEXT_CHARS: usize = 500;
/// Longest identifier (a client id, a name) a refusal's record keeps.
pub const REFUSAL_ID_CHARS: usize = 80;

/// `text` as a record keeps outside input: at most `max` characters (marked when cut), control
/// characters replaced.
pub fn bounded(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// A refused request or event: what was refused, by whom, and why. Nothing changed.
pub fn refusal(
    what: &str,
    actor: &Actor,
    agent: Option<(&str, &str)>,
    workflow_id: Option<&str>,
    reasons: &str,
    time: DateTime<Utc>,
) -> AuditRecord {
    let id = random_id("refusal");
    let c = entity_management(99, "Other");
    let what = bounded(what, REFUSAL_TEXT_CHARS);
    let what = what.as_str();
    let reasons = bounded(reasons, REFUSAL_TEXT_CHARS);
    let reasons = reasons.as_str();
    let agent = agent.map(|(uid, name)| {
        (
            bounded(uid, REFUSAL_ID_CHARS),
            bounded(name, REFUSAL_ID_CHARS),
        )
    });
    let agent = agent.as_ref().map(|(u, n)| (u.as_str(), n.as_str()));
    let mut v = base(
        &c,
        time,
        &id,
        false,
        &format!("refused {what}: {reasons}"),
        workflow_id,
    );
    v["actor"] = actor_json(actor);
    let (uid, name) = agent.unwrap_or(("unknown", "unknown"));
    v["entity"] = json!({"uid": uid, "name": name, "type": "AI Agent"});
    v["unmapped"] = json!({"steward_event": "refused", "refused": what, "reasons": reasons, "workflow_id": workflow_id});
    AuditRecord { id, time, body: v }
}

/// A refused client_credentials request at the dev IdP's token endpoint (OCSF Authentication,
/// Authentication Ticket, Failure). Names the client id, never the secret.
pub fn token_refused(
    client_id: &str,
    error: &str,
    description: &str,
    time: DateTime<Utc>,
) -> AuditRecord {
    let id = random_id("token-refused");
    let client_id = bounded(client_id, REFUSAL_ID_CHARS);
    let client_id = client_id.as_str();
    let description = bounded(description, REFUSAL_TEXT_CHARS);
    let description = description.as_str();
    let c = Class {
        uid: 3002,
        name: "Authentication",
        category_uid: IAM.0,
        category_name: IAM.1,
        activity_id: 3,
        activity_name: "Authentication Ticket",
    };
    let mut v = base(
        &c,
        time,
        &id,
        false,
        &format!("token refused for client {client_id}: {error}: {description}"),
        None,
    );
    v["user"] = json!({"uid": client_id, "type_id": 4, "type": "Service"});
    v["actor"] = json!({"app_uid": client_id});
    v["auth_protocol_id"] = json!(6);
    v["auth_protocol"] = json!("OAUTH 2.0");
    v["service"] = json!({"name": "steward-dev-idp"});
    v["unmapped"] = json!({"steward_event": "token_refused", "error": error});
    AuditRecord { id, time, body: v }
}

/// Who made a call, as the audit trail names them: never a token, only its id.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// `person` or `automation`.
    pub kind: &'a str,
    /// The person's normalised id, or the automation's name.
    pub id: &'a str,
    /// The token's id (`jti`, a digest, a personal token's id, or the Slack user id).
    pub token_id: Option<&'a str>,
    /// How the person proved who they are: `sign-in`, `personal-token`, `slack-signature`.
    pub via: Option<&'a str>,
}

#[cfg(feature = "http")]
impl<'a> From<&'a crate::http::Principal> for Caller<'a> {
    fn from(p: &'a crate::http::Principal) -> Self {
        use crate::http::{Credential, Principal};
        match p {
            Principal::Person { id, token_id, via } => Caller {
                kind: "person",
                id,
                token_id: Some(token_id),
                via: Some(match via {
                    Credential::SignIn => "sign-in",
                    Credential::PersonalToken => "personal-token",
                    Credential::Dashboard => "dashboard-session",
                }),
            },
            Principal::Automation { name } => Caller {
                kind: "automation",
                id: name,
                token_id: None,
                via: None,
            },
        }
    }
}

/// A call that asked for a change (or was refused by the role table): the principal, where it
/// came from (`cli`, `api`, `slack`, `dashboard`), the operation and the answer's status.
pub fn call(
    caller: Caller<'_>,
    source: &str,
    operation: &str,
    status: u16,
    refused: Option<&str>,
    time: DateTime<Utc>,
) -> AuditRecord {
    let id = random_id("call");
    let c = API_ACTIVITY_OTHER;
    let success = refused.is_none() && status < 400;
    let who = match caller.token_id {
        Some(t) => format!("{} {} ({t})", caller.kind, caller.id),
        None => format!("{} {}", caller.kind, caller.id),
    };
    let message = match refused {
        Some(why) => format!("refused {operation}: {why}"),
        None => format!("{who} called {operation} from the {source}: {status}"),
    };
    let mut v = base(&c, time, &id, success, &message, None);
    let decision = json!([{"decision": if success { "allowed" } else { "denied" }}]);
    v["actor"] = if caller.kind == "person" {
        json!({"user": {"uid": caller.id, "email_addr": caller.id, "type_id": 1, "type": "User"},
               "session": {"uid": caller.token_id, "credential_uid": caller.token_id},
               "authorizations": decision, "invoked_by": caller.via})
    } else {
        json!({"user": {"uid": caller.id, "name": caller.id, "type_id": 3, "type": "System"},
               "authorizations": decision})
    };
    v["api"] = json!({"operation": operation, "response": {"code": status}});
    v["src_endpoint"] = json!({"svc_name": source});
    v["unmapped"] = json!({
        // The role table's refusals stand apart; a call the handler refused (an unknown agent,
        // a malformed body) is an API call that failed, with its reason.
        "steward_event": if refused.is_some() && status == 403 { "call_refused" } else { "api_call" },
        "principal": {"kind": caller.kind, "id": caller.id, "token_id": caller.token_id, "via": caller.via},
        "source": source, "status": status, "reasons": refused,
    });
    AuditRecord { id, time, body: v }
}

/// A person's sign-in at the dev IdP (OCSF Authentication, Logon): who, through which client,
/// and why it was refused. Never the password.
pub fn sign_in(
    person: &str,
    client_id: &str,
    outcome: Result<(), &str>,
    time: DateTime<Utc>,
) -> AuditRecord {
    let id = random_id("sign-in");
    let c = Class {
        uid: 3002,
        name: "Authentication",
        category_uid: IAM.0,
        category_name: IAM.1,
        activity_id: 1,
        activity_name: "Logon",
    };
    let message = match outcome {
        Ok(()) => format!("{person} signed in through {client_id}"),
        Err(why) => format!(
            "sign-in refused for {} through {client_id}: {why}",
            if person.is_empty() {
                "(nobody named)"
            } else {
                person
            }
        ),
    };
    let mut v = base(&c, time, &id, outcome.is_ok(), &message, None);
    v["user"] = json!({"uid": person, "email_addr": person, "type_id": 1, "type": "User"});
    v["actor"] = json!({"app_uid": client_id});
    v["auth_protocol_id"] = json!(6);
    v["auth_protocol"] = json!("OAUTH 2.0");
    v["service"] = json!({"name": "steward-dev-idp"});
    v["unmapped"] =
        json!({"steward_event": if outcome.is_ok() { "signed_in" } else { "sign_in_refused" }});
    AuditRecord { id, time, body: v }
}

/// A message the engine gave up on (it is in the dead-letter queue now).
pub fn dead_letter(
    body_summary: &str,
    receive_count: u32,
    error: &str,
    time: DateTime<Utc>,
) -> AuditRecord {
    let id = random_id("dead-letter");
    let c = API_ACTIVITY_OTHER;
    let mut v = base(
        &c,
        time,
        &id,
        false,
        &format!("message dead-lettered after {receive_count} receives: {error}"),
        None,
    );
    v["actor"] = actor_json(&Actor::System);
    v["api"] = json!({"operation": "queue.process"});
    v["src_endpoint"] = json!({"svc_name": "steward-worker"});
    v["unmapped"] =
        json!({"steward_event": "dead_letter", "message": body_summary, "error": error});
    AuditRecord { id, time, body: v }
}

/// An agent's client secret was rotated (Secrets Manager rotation finished): the vault's
/// versions, never a value.
pub fn secret_rotated(
    id: &str,
    agent_id: &str,
    agent_name: &str,
    client_id: &str,
    old_version: Option<&str>,
    new_version: &str,
    time: DateTime<Utc>,
) -> AuditRecord {
    let id = id.to_string();
    let c = entity_management(3, "Update");
    let mut v = base(
        &c,
        time,
        &id,
        true,
        &format!("client secret of agent {agent_name} rotated"),
        None,
    );
    v["actor"] = actor_json(&Actor::Schedule("secret-rotation".into()));
    v["entity"] = json!({"uid": agent_id, "name": format!("{agent_name} client secret"), "type": "OAuth client credential", "data": {"client_id": client_id, "version_old": old_version, "version_new": new_version}});
    v["entity_result"] =
        json!({"uid": agent_id, "type": "OAuth client credential", "version": new_version});
    v["unmapped"] = json!({"steward_event": "secret_rotated", "agent_id": agent_id});
    AuditRecord { id, time, body: v }
}

/// An event the identity provider pushed (an Okta event hook delivery), as received. The record
/// id comes from the event's uuid, so a redelivery cannot be audited twice.
pub fn idp_event_received(
    source: &str,
    event_type: &str,
    event_uid: &str,
    subject: &str,
    signal: Option<&crate::signal::Signal>,
    time: DateTime<Utc>,
) -> AuditRecord {
    let id = format!("{source}-event-{event_uid}");
    let c = API_ACTIVITY_OTHER;
    let mut v = base(
        &c,
        time,
        &id,
        true,
        &format!("{source} event {event_type} received ({subject})"),
        None,
    );
    v["actor"] = actor_json(&Actor::IdpEvent(event_uid.to_string()));
    v["api"] = json!({"operation": event_type});
    v["src_endpoint"] = json!({"svc_name": source});
    v["unmapped"] = json!({"steward_event": "idp_event_received", "source": source, "event_type": event_type, "event_uid": event_uid, "subject": subject, "signal": signal});
    AuditRecord { id, time, body: v }
}

/// Chain hash: sha256(previous hash || canonical JSON of this record).
pub fn chain_hash(prev: &str, record: &AuditRecord) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(record.id.as_bytes());
    h.update(serde_json::to_vec(&record.body).unwrap_or_default());
    hex::encode(h.finalize())
}

/// Export line: the OCSF record plus its chain position.
pub fn export_line(c: &crate::ports::store::ChainedAudit) -> String {
    let mut v = c.record.body.clone();
    v["unmapped"]["audit_seq"] = json!(c.seq);
    v["unmapped"]["audit_chain"] = json!(c.chain);
    v["unmapped"]["prev_hash"] = json!(c.prev_hash);
    v["unmapped"]["hash"] = json!(c.hash);
    v.to_string()
}

pub fn random_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 8]>()))
}
