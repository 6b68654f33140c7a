//! Okta System Log events (`LogEvent`) mapped to what Steward acts on. Event hooks and the
//! System Log (polled, or streamed through EventBridge) deliver the same `LogEvent` shape, so
//! both intake paths use this one mapping:
//!
//! - service app created / updated / deactivated / deleted → discovery;
//! - owner user deactivated / suspended → owner-loss handling;
//! - threat detected, user risk change, entity-risk action, sessions cleared, universal logout →
//!   anomaly signals;
//! - OAuth token grants, successful and failed, with client, IP and scopes → behaviour evidence.
//!
//! Field notes (tests/fixtures/okta/events/README.md): `debugData` keys come in camelCase,
//! snake_case or PascalCase depending on the source, so they are matched case-insensitively
//! and without underscores; every `debugData` value is a string, lists included
//! (`"a, b"`, `"[0oa1, 0oa2]"`); `target` may be null; `ipChain` sits under `client` in hook
//! deliveries and under `request` in API results.

use serde_json::Value;

use crate::intake::Received;
pub use crate::signal::{AppChange, PersonChange, RiskKind, Signal};

/// A `LogEvent` Steward cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Okta event {uuid} ({event_type}) is malformed: {problem}")]
pub struct EventError {
    pub uuid: String,
    pub event_type: String,
    pub problem: String,
}

/// Maps one `LogEvent`. `Ok(None)`: a type Steward does not act on.
pub fn classify(event: &Value) -> Result<Option<Signal>, EventError> {
    let event_type = event["eventType"].as_str().unwrap_or_default();
    let err = |problem: &str| EventError {
        uuid: event["uuid"].as_str().unwrap_or("?").to_string(),
        event_type: event_type.to_string(),
        problem: problem.to_string(),
    };
    if event_type.is_empty() {
        return Err(err("it has no eventType"));
    }
    let actor_login = || {
        (event["actor"]["type"] == "User")
            .then(|| event["actor"]["alternateId"].as_str().map(str::to_string))
            .flatten()
    };
    let signal = match event_type {
        "application.lifecycle.create"
        | "application.lifecycle.update"
        | "application.lifecycle.deactivate"
        | "application.lifecycle.delete" => {
            let app = target(event, "AppInstance").ok_or_else(|| err("no AppInstance target"))?;
            let change = match event_type.rsplit('.').next() {
                Some("create") => AppChange::Created,
                Some("update") => AppChange::Updated,
                Some("deactivate") => AppChange::Deactivated,
                _ => AppChange::Deleted,
            };
            Signal::ServiceApp {
                app_id: text(app, "id").ok_or_else(|| err("the AppInstance has no id"))?,
                label: text(app, "displayName")
                    .or_else(|| text(app, "alternateId"))
                    .unwrap_or_default(),
                change,
                by: actor_login(),
            }
        }
        "user.lifecycle.deactivate" | "user.lifecycle.suspend" => {
            let user = target(event, "User").ok_or_else(|| err("no User target"))?;
            Signal::PersonLost {
                user_id: text(user, "id").ok_or_else(|| err("the User has no id"))?,
                login: text(user, "alternateId").unwrap_or_default(),
                change: if event_type.ends_with("suspend") {
                    PersonChange::Suspended
                } else {
                    PersonChange::Deactivated
                },
            }
        }
        "security.threat.detected" => Signal::Risk {
            kind: RiskKind::ThreatDetected,
            subjects: ip(event).into_iter().collect(),
            level: highest_level(&debug(event, "threatDetections").unwrap_or_default()),
            detail: event["outcome"]["reason"]
                .as_str()
                .map(str::to_string)
                .or_else(|| debug(event, "threatDetections"))
                .unwrap_or_default(),
            ip: ip(event),
        },
        "user.risk.change" | "user.risk.detect" | "policy.entity_risk.action" => {
            let risk = debug(event, "risk").unwrap_or_default();
            let mut detail = risk.clone();
            if let Some(action) = target(event, "PolicyAction")
                .and_then(|a| text(a, "displayName"))
                .filter(|a| a != "unknown")
            {
                detail = format!("{action}: {risk}");
            }
            Signal::Risk {
                kind: if event_type.starts_with("policy.") {
                    RiskKind::EntityRiskAction
                } else {
                    RiskKind::UserRisk
                },
                subjects: user_logins(event),
                level: braced_field(&risk, "level"),
                detail,
                ip: ip(event),
            }
        }
        "user.session.clear" => Signal::Risk {
            kind: RiskKind::SessionsCleared,
            subjects: user_logins(event),
            level: None,
            detail: format!("sessions cleared by {}", actor_login().unwrap_or_default()),
            ip: ip(event),
        },
        "user.authentication.universal_logout" => Signal::Risk {
            kind: RiskKind::UniversalLogout,
            subjects: list(&debug(event, "appInstanceIds").unwrap_or_default()),
            level: None,
            detail: format!("universal logout for {}", user_logins(event).join(", ")),
            ip: ip(event),
        },
        t if t.starts_with("app.oauth2.as.token.grant") => {
            let client_id = (event["actor"]["type"] == "PublicClientApp")
                .then(|| event["actor"]["id"].as_str())
                .flatten()
                .map(str::to_string)
                .or_else(|| debug(event, "clientId"))
                .ok_or_else(|| err("no client: the actor is not a PublicClientApp"))?;
            let success = event["outcome"]["result"] == "SUCCESS";
            Signal::TokenGrant {
                client_id,
                ip: ip(event),
                grant_type: debug(event, "grantType"),
                requested: list(&debug(event, "requestedScopes").unwrap_or_default()),
                granted: list(&debug(event, "grantedScopes").unwrap_or_default()),
                success,
                reason: (!success)
                    .then(|| {
                        event["outcome"]["reason"]
                            .as_str()
                            .map(str::to_string)
                            .or_else(|| debug(event, "error"))
                    })
                    .flatten(),
                // The System Log does not say whether the token is DPoP-bound: unknown.
                binding: None,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(signal))
}

/// One `LogEvent` as the intake receives it: its uuid (the dedupe key), type, a readable
/// subject, when Okta published it, and its mapping.
pub fn received(event: &Value) -> Result<Received, EventError> {
    let signal = classify(event)?;
    let uuid = event["uuid"]
        .as_str()
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| EventError {
            uuid: "?".into(),
            event_type: event["eventType"].as_str().unwrap_or("?").into(),
            problem: "it has no uuid".into(),
        })?;
    let subject = event["target"]
        .as_array()
        .and_then(|t| t.first())
        .or_else(|| event.get("actor"))
        .and_then(|t| {
            text(t, "displayName")
                .or_else(|| text(t, "alternateId"))
                .or_else(|| text(t, "id"))
        })
        .unwrap_or_default();
    Ok(Received {
        source: "okta",
        event_id: uuid.to_string(),
        event_type: event["eventType"].as_str().unwrap_or_default().to_string(),
        subject,
        published: event["published"]
            .as_str()
            .and_then(|p| chrono::DateTime::parse_from_rfc3339(p).ok())
            .map(|d| d.with_timezone(&chrono::Utc)),
        signal,
    })
}

fn text(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().map(str::to_string)
}

/// The first target of this type (`target` may be null).
fn target<'a>(event: &'a Value, kind: &str) -> Option<&'a Value> {
    event["target"]
        .as_array()?
        .iter()
        .find(|t| t["type"] == kind)
}

fn user_logins(event: &Value) -> Vec<String> {
    event["target"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["type"] == "User")
        .filter_map(|t| text(t, "alternateId"))
        .collect()
}

/// A `debugData` value by key, ignoring case and underscores (`grantType`, `grant_type`,
/// `GrantType` are one key).
pub fn debug(event: &Value, key: &str) -> Option<String> {
    let norm = |k: &str| k.replace('_', "").to_ascii_lowercase();
    let want = norm(key);
    event["debugContext"]["debugData"]
        .as_object()?
        .iter()
        .find(|(k, _)| norm(k) == want)
        .and_then(|(_, v)| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })
}

/// The caller's IP: `client.ipAddress`, else the first of `ipChain` (under `client` or
/// `request`).
pub fn ip(event: &Value) -> Option<String> {
    let usable = |v: &Value| {
        v.as_str()
            .filter(|s| !s.is_empty() && *s != "null")
            .map(str::to_string)
    };
    usable(&event["client"]["ipAddress"]).or_else(|| {
        [&event["client"]["ipChain"], &event["request"]["ipChain"]]
            .into_iter()
            .filter_map(|c| c.as_array()?.first())
            .find_map(|first| usable(&first["ip"]))
    })
}

/// A list as Okta writes one in a string: `"a, b"`, `"a b"` or `"[a, b]"`.
pub fn list(s: &str) -> Vec<String> {
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split([',', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// `level` from Okta's `{key=value, …}` rendering (`risk`).
fn braced_field(s: &str, field: &str) -> Option<String> {
    s.trim_matches(|c| c == '{' || c == '}')
        .split(", ")
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| k.trim() == field))
        .map(|(_, v)| v.trim().to_string())
}

/// The highest level in ThreatInsight's `{"detection": "LEVEL"}` JSON.
fn highest_level(detections: &str) -> Option<String> {
    let v: Value = serde_json::from_str(detections).ok()?;
    let rank = |l: &str| match l {
        "HIGH" => 3,
        "MEDIUM" => 2,
        "LOW" => 1,
        _ => 0,
    };
    v.as_object()?
        .values()
        .filter_map(Value::as_str)
        .max_by_key(|l| rank(l))
        .map(str::to_string)
}
