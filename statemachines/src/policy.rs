//! The loaded, validated policy the machines decide with. Parsing and validation of the TOML
//! file live in `shared::policy_file`; this is the checked result.

use crate::workflow::Reason;
use serde::{Deserialize, Serialize};

/// Hard ceiling on access-token lifetime, whatever a policy says: a leaked token must die within
/// the hour, so no policy may allow more than 60 minutes.
pub const TOKEN_LIFETIME_CEILING_SECS: u32 = 60 * 60;
/// Default maximum token lifetime (15 minutes).
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECS: u32 = 15 * 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Naming template with `{function}` and `{env}` placeholders, e.g. `{function}-agent-{env}`.
    pub naming_pattern: String,
    pub environments: Vec<String>,
    pub approved_scopes: Vec<String>,
    pub excluded_scopes: Vec<String>,
    pub sensitive_scopes: Vec<String>,
    pub max_token_lifetime_secs: u32,
    pub rotation_max_age_days: u32,
    pub approval_expiry_secs: u64,
    /// People (directory emails) allowed to approve sensitive requests: the security group.
    pub approvers: Vec<String>,
    /// People (directory emails) who run Steward: sweep, discovery, campaigns, dead letters.
    #[serde(default)]
    pub operators: Vec<String>,
    /// How long before the expiry the approvers are reminded (0: no reminder).
    #[serde(default)]
    pub approval_reminder_secs: u64,
    /// Sensitive scopes whose approval needs two distinct approvers (two-person rule).
    #[serde(default)]
    pub two_person_scopes: Vec<String>,
    /// Where approval requests are posted: `owner` (a DM), `approvers` (a DM each),
    /// `security-channel`.
    #[serde(default = "default_routes")]
    pub approval_routes: Vec<String>,
    /// How long the owner's manager and security have to assign a new owner after the owner
    /// left, before a freeze is requested.
    #[serde(default = "default_owner_reassign_secs")]
    pub owner_reassign_secs: u64,
    /// Rotation, decommission and expiry settings.
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// Access-review campaign settings.
    #[serde(default)]
    pub reviews: Reviews,
    /// Anomaly detection rules and thresholds.
    #[serde(default)]
    pub detection: crate::detection::Detection,
    /// Shadow-agent discovery settings.
    #[serde(default)]
    pub discovery: Discovery,
    /// Which credential kinds and token bindings each environment allows.
    #[serde(default)]
    pub credentials: Credentials,
}

/// Credential kinds and token binding per environment (`[credentials]` in the policy file).
/// An environment not named allows every kind and bearer tokens, as before key credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Credentials {
    /// The kinds an agent in the environment may use, e.g. `prod = ["private_key_jwt"]`.
    pub kinds: std::collections::BTreeMap<String, Vec<crate::credential::CredentialKind>>,
    /// The binding every token of an agent in the environment must carry.
    pub binding: std::collections::BTreeMap<String, crate::credential::TokenBinding>,
    /// Lifetime of the client certificates the internal CA issues to `tls_client_auth`
    /// agents: 1 to 90 days (more is refused, never shortened).
    #[serde(deserialize_with = "certificate_lifetime_days")]
    pub certificate_lifetime_days: u32,
    /// The SPIFFE trust domain of agents' certificates (`spiffe://<trust_domain>/agent/<name>`).
    #[serde(deserialize_with = "trust_domain")]
    pub trust_domain: String,
    /// How long a key or certificate rotation waits for the agent's first token with the new
    /// key or certificate before it removes (and revokes) it again.
    pub first_use_secs: u64,
    /// An agent-held key is removed this many days after it was added.
    pub key_max_age_days: u32,
    /// The owner is asked to rotate a key this many days before its end.
    pub key_remind_days: u32,
    /// The owner is asked to renew a certificate this many days before its end.
    pub certificate_remind_days: u32,
    /// Whether an environment allows `private_key_jwt` agents whose key Steward generates and
    /// vaults (`key_custody = "steward"`), e.g. `steward_keys = { prod = false }`. Allowed where
    /// not named.
    pub steward_keys: std::collections::BTreeMap<String, bool>,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            kinds: Default::default(),
            binding: Default::default(),
            certificate_lifetime_days: DEFAULT_CERTIFICATE_LIFETIME_DAYS,
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            first_use_secs: 7 * 86_400,
            key_max_age_days: 90,
            key_remind_days: 14,
            certificate_remind_days: 7,
            steward_keys: Default::default(),
        }
    }
}

impl Credentials {
    /// The kinds allowed in `environment`.
    pub fn kinds_in(&self, environment: &str) -> Vec<crate::credential::CredentialKind> {
        self.kinds
            .get(environment)
            .cloned()
            .unwrap_or_else(|| crate::credential::CredentialKind::ALL.to_vec())
    }

    /// Whether `environment` allows Steward-held keys.
    pub fn steward_keys_in(&self, environment: &str) -> bool {
        self.steward_keys.get(environment).copied().unwrap_or(true)
    }

    /// The binding `environment` requires.
    pub fn binding_in(&self, environment: &str) -> crate::credential::TokenBinding {
        self.binding.get(environment).copied().unwrap_or_default()
    }

    /// What the internal CA is asked for to certify `csr` under this policy.
    pub fn certificate_order(&self, csr: &str) -> crate::credential::CertificateOrder {
        crate::credential::CertificateOrder {
            csr: csr.to_string(),
            trust_domain: self.trust_domain.clone(),
            lifetime_days: self.certificate_lifetime_days,
        }
    }
}

/// Agents' certificates live this long unless `[credentials] certificate_lifetime_days` says
/// otherwise.
pub const DEFAULT_CERTIFICATE_LIFETIME_DAYS: u32 = 30;
/// The longest certificate lifetime a policy may set (docs/adr/0033-internal-ca.md).
pub const MAX_CERTIFICATE_LIFETIME_DAYS: u32 = 90;
/// The trust domain when the policy names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "steward.local";

fn certificate_lifetime_days<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let days = u32::deserialize(d)?;
    if !(1..=MAX_CERTIFICATE_LIFETIME_DAYS).contains(&days) {
        return Err(serde::de::Error::custom(format!(
            "credentials.certificate_lifetime_days = {days} is out of range: agents' certificates live 1 to {MAX_CERTIFICATE_LIFETIME_DAYS} days ({DEFAULT_CERTIFICATE_LIFETIME_DAYS} by default); a short lifetime bounds what a lost key can do"
        )));
    }
    Ok(days)
}

fn trust_domain<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let td = String::deserialize(d)?;
    let ok = (1..=255).contains(&td.len())
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
        && !td.starts_with('.')
        && !td.ends_with('.');
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "credentials.trust_domain = `{}` is not a SPIFFE trust domain: use 1 to 255 lowercase letters, digits, `.`, `-` and `_`, such as `steward.example.com`",
            td.chars().take(80).collect::<String>()
        )));
    }
    Ok(td)
}

/// Shadow-agent discovery (`[discovery]` in the policy file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Discovery {
    /// The sweep lists the IdP's clients (with the rotation sweep); false: only IdP events.
    pub enabled: bool,
    /// How long a found client waits for a claim before it is frozen and decommissioned.
    pub grace_secs: u64,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_secs: 7 * 86_400,
        }
    }
}

/// How often access reviews run and how unanswered items end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reviews {
    /// Scheduled campaigns: every this many months (3: quarterly), starting on the first day of
    /// January, April, ...; 0: only campaigns started by a person.
    pub every_months: u32,
    /// Which agents a scheduled campaign covers.
    pub scope: crate::review::CampaignScope,
    /// How long owners have to answer (the deadline is launch + this).
    pub duration_secs: u64,
    /// The owner is reminded this long before the deadline (0: no reminder).
    pub remind_before_secs: u64,
    /// The item goes to the owner's manager (or the security channel) this long before the
    /// deadline (0: no escalation).
    pub escalate_before_secs: u64,
    /// What an unanswered item gets at the deadline.
    pub unanswered: crate::review::Unanswered,
    /// A scope not used in a token grant for this many days is suggested for dropping.
    pub unused_after_days: u32,
    /// Items created per launch round (bounded work per queue message).
    pub launch_batch: u32,
}

impl Default for Reviews {
    fn default() -> Self {
        Self {
            every_months: 0,
            scope: Default::default(),
            duration_secs: 14 * 86_400,
            remind_before_secs: 7 * 86_400,
            escalate_before_secs: 3 * 86_400,
            unanswered: Default::default(),
            unused_after_days: 90,
            launch_batch: 2_000,
        }
    }
}

/// How credentials age and agents end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lifecycle {
    /// Per-environment maximum secret age in days, overriding `rotation_max_age_days`.
    pub rotation_max_age_days_by_env: std::collections::BTreeMap<String, u32>,
    /// How long the outgoing secret keeps working after the new one is promoted, so every
    /// running copy of the agent picks up the new one.
    pub rotation_grace_secs: u64,
    /// A sweep spreads the rotations it finds over this window (with jitter).
    pub rotation_window_secs: u64,
    /// At most this many rotations start per minute (each costs about five IdP calls; Okta's
    /// apps bucket allows about 100 per minute per org).
    pub rotation_starts_per_minute: u32,
    /// Attempts before a failing rotation gives up and raises to the security channel.
    pub rotation_attempts: u32,
    /// Wait before the first retry of a failed rotation; doubles with each attempt.
    pub rotation_retry_secs: u64,
    /// Days a decommissioned agent's secret stays recoverable (Secrets Manager: 7 to 30).
    pub secret_recovery_days: u32,
    /// How long before a time-bound agent's expiry its owner is reminded.
    pub expiry_reminder_secs: u64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            rotation_max_age_days_by_env: Default::default(),
            rotation_grace_secs: 24 * 3600,
            rotation_window_secs: 6 * 3600,
            rotation_starts_per_minute: 10,
            rotation_attempts: 3,
            rotation_retry_secs: 3600,
            secret_recovery_days: 30,
            expiry_reminder_secs: 14 * 86_400,
        }
    }
}

/// A week to find a new owner.
pub const fn default_owner_reassign_secs() -> u64 {
    7 * 24 * 3600
}

/// Approval requests go to the owner and the security channel unless the policy says otherwise.
pub fn default_routes() -> Vec<String> {
    vec!["owner".into(), "security-channel".into()]
}

/// The places an approval request can be posted.
pub const APPROVAL_ROUTES: [&str; 3] = ["owner", "approvers", "security-channel"];

impl Policy {
    /// The maximum secret age for an environment, in days.
    pub fn rotation_max_age_days(&self, environment: &str) -> u32 {
        self.lifecycle
            .rotation_max_age_days_by_env
            .get(environment)
            .copied()
            .unwrap_or(self.rotation_max_age_days)
    }

    /// Distinct approvers an approval covering these sensitive scopes needs.
    pub fn quorum_for(&self, sensitive: &[String]) -> u8 {
        if sensitive.iter().any(|s| self.two_person_scopes.contains(s)) {
            2
        } else {
            1
        }
    }

    pub fn is_excluded(&self, scope: &str) -> bool {
        self.excluded_scopes.iter().any(|s| s == scope)
    }
    pub fn is_sensitive(&self, scope: &str) -> bool {
        self.sensitive_scopes.iter().any(|s| s == scope)
    }
    pub fn is_approved(&self, scope: &str) -> bool {
        self.approved_scopes.iter().any(|s| s == scope)
    }

    /// Checks requested scopes: excluded ones are never granted, others must be approved.
    pub fn check_scopes(&self, field: &str, scopes: &[String], reasons: &mut Vec<Reason>) {
        for scope in scopes {
            if self.is_excluded(scope) {
                reasons.push(reason(
                    field,
                    format!("scope `{scope}` is excluded by policy and is never granted"),
                ));
            } else if !self.is_approved(scope) {
                reasons.push(reason(
                    field,
                    format!("scope `{scope}` is not in the policy's approved scopes"),
                ));
            }
        }
    }

    pub fn check_token_lifetime(&self, secs: u32, reasons: &mut Vec<Reason>) {
        if secs == 0 {
            reasons.push(reason(
                "token_lifetime",
                "token lifetime must be greater than zero",
            ));
        } else if secs
            > self
                .max_token_lifetime_secs
                .min(TOKEN_LIFETIME_CEILING_SECS)
        {
            reasons.push(reason(
                "token_lifetime",
                format!(
                    "token lifetime {} exceeds the policy maximum of {}",
                    minutes(secs),
                    minutes(
                        self.max_token_lifetime_secs
                            .min(TOKEN_LIFETIME_CEILING_SECS)
                    )
                ),
            ));
        }
    }

    /// Checks an agent name against the naming template and the declared environment.
    pub fn check_name(&self, name: &str, env: &str, reasons: &mut Vec<Reason>) {
        match match_pattern(&self.naming_pattern, name) {
            Some(found_env) => {
                if let Some(found_env) = found_env
                    && found_env != env
                {
                    reasons.push(reason(
                        "name",
                        format!("name `{name}` says environment `{found_env}` but the request is for `{env}`"),
                    ));
                }
            }
            None => reasons.push(reason(
                "name",
                format!(
                    "name `{name}` does not follow the naming pattern `{}` (lowercase words joined by '-', e.g. `datadog-remediation-agent-prod`)",
                    self.naming_pattern
                ),
            )),
        }
    }

    pub fn check_environment(&self, env: &str, reasons: &mut Vec<Reason>) {
        if !self.environments.iter().any(|e| e == env) {
            reasons.push(reason(
                "environment",
                format!(
                    "environment `{env}` is not one of the policy's environments ({})",
                    self.environments.join(", ")
                ),
            ));
        }
    }
}

fn minutes(secs: u32) -> String {
    if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// A length of time in the largest whole unit (`3 days`, `30 s`).
pub(crate) fn describe_secs(secs: u64) -> String {
    match secs {
        s if s >= 86_400 && s.is_multiple_of(86_400) => format!("{} days", s / 86_400),
        s if s >= 3600 && s.is_multiple_of(3600) => format!("{} h", s / 3600),
        s if s >= 60 && s.is_multiple_of(60) => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

pub(crate) fn reason(field: &str, message: impl Into<String>) -> Reason {
    Reason {
        field: field.to_string(),
        message: message.into(),
    }
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Matches `name` against a template of literal text and `{function}` / `{env}` placeholders.
/// `{function}` is one or more lowercase words joined by '-'; `{env}` one lowercase word.
/// Returns `Some(env)` on a match (the `{env}` value if the template has one).
pub fn match_pattern(pattern: &str, name: &str) -> Option<Option<String>> {
    let tokens = tokenize(pattern);
    let mut env = None;
    if matches(&tokens, name, &mut env) {
        Some(env)
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token<'a> {
    Lit(&'a str),
    Function,
    Env,
}

fn tokenize(pattern: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{function}") {
            out.push(Token::Function);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{env}") {
            out.push(Token::Env);
            rest = r;
        } else {
            let end = rest[1..].find('{').map(|i| i + 1).unwrap_or(rest.len());
            out.push(Token::Lit(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

/// Placeholders the validator accepts in a naming pattern.
pub fn pattern_placeholders_ok(pattern: &str) -> bool {
    let tokens = tokenize(pattern);
    tokens.contains(&Token::Function)
        && tokens.iter().all(|t| match t {
            Token::Lit(l) => !l.contains('{') && !l.contains('}'),
            _ => true,
        })
}

fn matches(tokens: &[Token], s: &str, env: &mut Option<String>) -> bool {
    match tokens.first() {
        None => s.is_empty(),
        Some(Token::Lit(l)) => s
            .strip_prefix(l)
            .is_some_and(|r| matches(&tokens[1..], r, env)),
        Some(Token::Env) => {
            // one word: try every prefix made of [a-z0-9]
            let max = s
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                .count();
            (1..=max).rev().any(|n| {
                let mut e = Some(s[..n].to_string());
                if matches(&tokens[1..], &s[n..], &mut e) {
                    *env = e;
                    true
                } else {
                    false
                }
            })
        }
        Some(Token::Function) => {
            let max = s
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                .count();
            (1..=max).rev().any(|n| {
                let f = &s[..n];
                f.split('-').all(is_word) && matches(&tokens[1..], &s[n..], env)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pattern_matches_seed_names() {
        let p = "{function}-agent-{env}";
        assert_eq!(
            match_pattern(p, "datadog-remediation-agent-prod"),
            Some(Some("prod".into()))
        );
        assert_eq!(
            match_pattern(p, "erp-reader-agent-dev"),
            Some(Some("dev".into()))
        );
        assert_eq!(match_pattern(p, "Datadog-agent-prod"), None);
        assert_eq!(match_pattern(p, "datadog-bot-prod"), None);
        assert_eq!(match_pattern(p, "-agent-prod"), None);
        assert_eq!(match_pattern(p, "a--b-agent-prod"), None);
        assert_eq!(match_pattern(p, "datadog-agent-"), None);
    }

    #[test]
    fn placeholders_are_validated() {
        assert!(pattern_placeholders_ok("{function}-agent-{env}"));
        assert!(pattern_placeholders_ok("svc-{function}"));
        assert!(!pattern_placeholders_ok("{env}-agent"));
        assert!(!pattern_placeholders_ok("{function}-{team}"));
    }
}
