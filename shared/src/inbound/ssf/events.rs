//! What a verified SET means: its subjects and events mapped to signals.

use super::*;

/// What a SET says it is about, from SSF subject identifiers (RFC 9493 formats, SSF's
/// `jwt_id`, `saml_assertion_id`, `ip-addresses`, complex subjects).
#[derive(Debug, Clone, Default)]
pub(super) struct Subjects {
    pub(super) ids: Vec<String>,
    pub(super) ips: Vec<String>,
}

impl Subjects {
    pub(super) fn push(&mut self, value: Option<&Value>) {
        if let Some(v) = value.and_then(Value::as_str).map(str::trim)
            && !v.is_empty()
            && !self.ids.iter().any(|s| s == v)
        {
            self.ids.push(shown(v));
        }
    }

    pub(super) fn collect(&mut self, id: &Value, depth: usize) {
        let Some(obj) = id.as_object() else {
            return;
        };
        if depth > 3 {
            return;
        }
        // Google's RISC transmitter still names the format `subject_type` (RISC 1.0 §3.1).
        let format = obj
            .get("format")
            .or_else(|| obj.get("subject_type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        match format {
            "email" => self.push(obj.get("email")),
            "phone_number" | "phone" => self.push(obj.get("phone_number")),
            "iss_sub" | "iss-sub" => self.push(obj.get("sub")),
            "opaque" => self.push(obj.get("id")),
            "account" | "uri" => self.push(obj.get("uri")),
            "did" => self.push(obj.get("url")),
            "jwt_id" => self.push(obj.get("jti")),
            "saml_assertion_id" => self.push(obj.get("assertion_id")),
            "ip-addresses" => {
                for ip in obj
                    .get("ip-addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.push(Some(ip));
                    if let Some(ip) = ip.as_str() {
                        self.ips.push(shown(ip));
                    }
                }
            }
            "aliases" => {
                for alias in obj
                    .get("identifiers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.collect(alias, depth + 1);
                }
            }
            "complex" => {
                // The principal first (user, application), then what narrows it.
                const ORDER: [&str; 7] = [
                    "user",
                    "application",
                    "session",
                    "device",
                    "tenant",
                    "org_unit",
                    "group",
                ];
                for member in ORDER {
                    if let Some(v) = obj.get(member) {
                        self.collect(v, depth + 1);
                    }
                }
                for (name, v) in obj {
                    if name != "format" && !ORDER.contains(&name.as_str()) {
                        self.collect(v, depth + 1);
                    }
                }
            }
            // A proprietary format agreed with the transmitter: its string members.
            _ => {
                for (name, v) in obj {
                    if name != "format" && name != "subject_type" {
                        self.push(Some(v));
                    }
                }
            }
        }
    }
}

/// The signal of one event, `None` for types Steward records without acting on.
pub(super) fn map_event(
    event_type: &str,
    payload: &Map<String, Value>,
    subjects: &Subjects,
    txn: Option<&str>,
) -> Option<Signal> {
    let (kind, fields): (RiskKind, &[&str]) = match event_type {
        SESSION_REVOKED | RISC_SESSIONS_REVOKED => (RiskKind::SessionRevoked, &[]),
        CREDENTIAL_CHANGE => (
            RiskKind::CredentialChange,
            &[
                "change_type",
                "credential_type",
                "friendly_name",
                "x509_issuer",
                "x509_serial",
                "fido2_aaguid",
            ],
        ),
        CREDENTIAL_COMPROMISE => (RiskKind::CredentialCompromise, &["credential_type"]),
        ACCOUNT_DISABLED => (RiskKind::AccountDisabled, &["reason"]),
        _ => return None,
    };
    let mut detail = Vec::new();
    for field in fields {
        if let Some(v) = payload.get(*field).and_then(Value::as_str) {
            detail.push(format!("{field}={}", quoted(v)));
        }
    }
    if let Some(v) = payload.get("initiating_entity").and_then(Value::as_str) {
        detail.push(format!("initiating_entity={}", quoted(v)));
    }
    if let Some(reason) = payload.get("reason_admin").and_then(localized) {
        detail.push(format!("reason_admin={}", quoted(reason)));
    }
    if let Some(at) = payload
        .get("event_timestamp")
        .and_then(Value::as_f64)
        .and_then(|t| DateTime::from_timestamp(t.floor() as i64, 0))
    {
        detail.push(format!("event_timestamp={}", at.to_rfc3339()));
    }
    if let Some(txn) = txn {
        detail.push(format!("txn={}", quoted(txn)));
    }
    Some(Signal::Risk {
        kind,
        subjects: subjects.ids.clone(),
        // CAEP and RISC give no level for these events; Steward does not invent one.
        level: None,
        detail: detail.join(", "),
        ip: subjects.ips.first().cloned(),
    })
}

/// A CAEP localizable message (`{"en": "…", "de": "…"}`): English when given, else the first.
pub(super) fn localized(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(m) => m
            .get("en")
            .or_else(|| m.iter().find(|(k, _)| k.starts_with("en-")).map(|(_, v)| v))
            .or_else(|| m.values().next())
            .and_then(Value::as_str),
        _ => None,
    }
}

/// A value for `key=value` detail: bare when it is one plain word, quoted otherwise.
pub(super) fn quoted(v: &str) -> String {
    let v = shown(v);
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@'))
    {
        v
    } else {
        format!("{v:?}")
    }
}
