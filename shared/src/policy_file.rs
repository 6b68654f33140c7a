//! The policy file (TOML): parsed, then validated with errors that name the field and the reason.

use serde::Deserialize;
use statemachines::Policy;
use statemachines::policy::{
    DEFAULT_MAX_TOKEN_LIFETIME_SECS, TOKEN_LIFETIME_CEILING_SECS, pattern_placeholders_ok,
};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("policy file {path} is invalid:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

/// The file as written. Durations are human strings (`15m`, `90d`, `72h`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    naming: Naming,
    environments: Vec<String>,
    scopes: Scopes,
    #[serde(default)]
    tokens: Tokens,
    #[serde(default)]
    rotation: Rotation,
    approvals: Approvals,
    #[serde(default)]
    owners: Owners,
    #[serde(default)]
    decommission: Decommissioning,
    #[serde(default)]
    expiry: ExpiryFile,
    #[serde(default)]
    reviews: ReviewsFile,
    #[serde(default)]
    detection: DetectionFile,
    #[serde(default)]
    discovery: DiscoveryFile,
    #[serde(default)]
    access: AccessFile,
    #[serde(default)]
    credentials: statemachines::policy::Credentials,
}

/// `[access]`: who runs Steward. The security approvers are `approvals.approvers`; owners and
/// managers come from the registry and the directory.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    #[serde(default)]
    operators: Vec<String>,
}

/// `[detection]`: thresholds, approved source ranges, outside-signal severities, and rules in
/// the shape `{ name, severity, condition, action }`. A listed rule replaces the built-in rule
/// of the same name (`enabled = false` switches it off); other listed rules are added.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DetectionFile {
    enabled: Option<bool>,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    approved_ranges: std::collections::BTreeMap<String, Vec<String>>,
    learning_requests: Option<u64>,
    learning_hours: Option<u32>,
    sharing_window: Option<String>,
    sharing_sources: Option<usize>,
    rate_factor: Option<f64>,
    volume_factor: Option<f64>,
    min_burst: Option<u32>,
    quiet: Option<String>,
    decide_within: Option<String>,
    #[serde(default)]
    signals: std::collections::BTreeMap<String, statemachines::detection::Severity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    severity: statemachines::detection::Severity,
    condition: statemachines::detection::Condition,
    #[serde(deserialize_with = "one_or_many")]
    action: Vec<statemachines::detection::Action>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(v) => v,
    })
}

/// `[discovery]`: the shadow-agent sweep and the claim grace period.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DiscoveryFile {
    enabled: Option<bool>,
    grace: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReviewsFile {
    /// Scheduled campaigns: "quarterly", "monthly", "semiannual", "annual" or "off" (default).
    every: Option<String>,
    /// Which agents a scheduled campaign covers (empty: all).
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    teams: Vec<String>,
    #[serde(default)]
    risk: Vec<String>,
    /// How long owners have to answer. Default 14 days.
    answer_within: Option<String>,
    /// Owners are reminded this long before the deadline ("off": never). Default 7 days.
    remind_before: Option<String>,
    /// Unanswered items go to the owner's manager (or the security channel) this long before the
    /// deadline ("off": never). Default 3 days.
    escalate_before: Option<String>,
    /// What an unanswered item gets: "revoke", "freeze" or "keep-and-flag" (default).
    unanswered: Option<String>,
    /// Scopes unused this long are suggested for dropping. Default 90 days.
    unused_after: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Owners {
    /// How long the manager and security have to assign a new owner after the owner left,
    /// before a freeze is requested. Default 7 days.
    reassign_within: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Naming {
    #[serde(default = "default_pattern")]
    pattern: String,
}
impl Default for Naming {
    fn default() -> Self {
        Self {
            pattern: default_pattern(),
        }
    }
}
fn default_pattern() -> String {
    "{function}-agent-{env}".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scopes {
    approved: Vec<String>,
    #[serde(default)]
    excluded: Vec<String>,
    #[serde(default)]
    sensitive: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Tokens {
    max_lifetime: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotation {
    max_age: Option<String>,
    /// Per-environment maximum age, e.g. `prod = "30days"`.
    #[serde(default)]
    max_age_by_environment: std::collections::BTreeMap<String, String>,
    /// How long the old secret keeps working after the new one is current. Default 24h.
    grace: Option<String>,
    /// A sweep spreads the rotations it finds over this window. Default 6h.
    spread_over: Option<String>,
    /// At most this many rotations start per minute. Default 10.
    starts_per_minute: Option<u32>,
    /// Attempts before a failing rotation raises to the security channel. Default 3.
    attempts: Option<u32>,
    /// Wait before the first retry; doubles each attempt. Default 1h.
    retry_after: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Decommissioning {
    /// How long a decommissioned agent's secret stays recoverable (7 to 30 days). Default 30.
    secret_recovery_window: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExpiryFile {
    /// How long before a time-bound agent's expiry date its owner is reminded. Default 14 days.
    remind_before: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Approvals {
    #[serde(default = "default_expiry")]
    expiry: String,
    approvers: Vec<String>,
    /// How long before the expiry the approvers are reminded, or "off". Default: a third of
    /// the expiry window, at most 24h.
    remind_before: Option<String>,
    /// Sensitive scopes that need two distinct approvers.
    #[serde(default)]
    two_person_scopes: Vec<String>,
    /// Where requests are posted: `owner`, `approvers`, `security-channel`.
    #[serde(default = "statemachines::policy::default_routes")]
    routes: Vec<String>,
}

fn default_expiry() -> String {
    "72h".into()
}

/// Reads and validates a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates policy text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Syntax {
        path: origin.into(),
        message: e.to_string(),
    })?;
    let mut problems = Vec::new();

    if !pattern_placeholders_ok(&file.naming.pattern) {
        problems.push(format!(
            "naming.pattern: `{}` must contain {{function}} and may use only {{function}} and {{env}}",
            file.naming.pattern
        ));
    }
    if file.environments.is_empty() {
        problems
            .push("environments: list at least one environment (e.g. [\"dev\", \"prod\"])".into());
    }
    for e in &file.environments {
        if e.is_empty()
            || !e
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            problems.push(format!("environments: `{e}` must be one lowercase word"));
        }
    }
    if file.scopes.approved.is_empty() {
        problems.push("scopes.approved: list the scopes agents may be granted".into());
    }
    for s in &file.scopes.excluded {
        if file.scopes.approved.contains(s) {
            problems.push(format!(
                "scopes.excluded: `{s}` is also in scopes.approved; a scope cannot be both"
            ));
        }
    }
    for s in &file.scopes.sensitive {
        if !file.scopes.approved.contains(s) {
            problems.push(format!("scopes.sensitive: `{s}` is not in scopes.approved; sensitive scopes must be approved scopes"));
        }
    }
    let max_lifetime = match &file.tokens.max_lifetime {
        None => Some(DEFAULT_MAX_TOKEN_LIFETIME_SECS as u64),
        Some(s) => duration("tokens.max_lifetime", s, &mut problems),
    };
    if let Some(secs) = max_lifetime
        && (secs == 0 || secs > TOKEN_LIFETIME_CEILING_SECS as u64)
    {
        problems.push(format!(
            "tokens.max_lifetime: must be between 1s and 60m (the hard ceiling), got {secs}s"
        ));
    }
    let max_age = match &file.rotation.max_age {
        None => Some(90 * 86_400),
        Some(s) => duration("rotation.max_age", s, &mut problems),
    };
    if let Some(secs) = max_age
        && secs < 86_400
    {
        problems.push("rotation.max_age: must be at least 1 day".into());
    }
    let mut lifecycle = statemachines::policy::Lifecycle::default();
    for (env, text) in &file.rotation.max_age_by_environment {
        let field = format!("rotation.max_age_by_environment.{env}");
        if !file.environments.contains(env) {
            problems.push(format!(
                "{field}: `{env}` is not one of the policy's environments"
            ));
        }
        match duration(&field, text, &mut problems) {
            Some(secs) if secs < 86_400 => {
                problems.push(format!("{field}: must be at least 1 day"))
            }
            Some(secs) => {
                lifecycle
                    .rotation_max_age_days_by_env
                    .insert(env.clone(), (secs / 86_400) as u32);
            }
            None => {}
        }
    }
    if let Some(text) = &file.rotation.grace
        && let Some(secs) = duration("rotation.grace", text, &mut problems)
    {
        lifecycle.rotation_grace_secs = secs;
    }
    if let Some(text) = &file.rotation.spread_over
        && let Some(secs) = duration("rotation.spread_over", text, &mut problems)
    {
        lifecycle.rotation_window_secs = secs;
    }
    if let Some(text) = &file.rotation.retry_after
        && let Some(secs) = duration("rotation.retry_after", text, &mut problems)
    {
        lifecycle.rotation_retry_secs = secs;
    }
    match file.rotation.starts_per_minute {
        Some(0) => problems.push("rotation.starts_per_minute: must be at least 1".into()),
        Some(n) => lifecycle.rotation_starts_per_minute = n,
        None => {}
    }
    match file.rotation.attempts {
        Some(0) => problems.push("rotation.attempts: must be at least 1".into()),
        Some(n) => lifecycle.rotation_attempts = n,
        None => {}
    }
    if let Some(text) = &file.decommission.secret_recovery_window
        && let Some(secs) = duration("decommission.secret_recovery_window", text, &mut problems)
    {
        let days = secs / 86_400;
        if !(7..=30).contains(&days) || secs % 86_400 != 0 {
            problems.push(format!(
                "decommission.secret_recovery_window: must be whole days from 7 to 30 (Secrets Manager's recovery window), got `{text}`"
            ));
        } else {
            lifecycle.secret_recovery_days = days as u32;
        }
    }
    if let Some(text) = &file.expiry.remind_before
        && let Some(secs) = duration("expiry.remind_before", text, &mut problems)
    {
        lifecycle.expiry_reminder_secs = secs;
    }
    let reviews = reviews(&file, &mut problems);
    let detection = detection(&file, &mut problems);
    let mut discovery = statemachines::policy::Discovery::default();
    if let Some(on) = file.discovery.enabled {
        discovery.enabled = on;
    }
    if let Some(t) = &file.discovery.grace
        && let Some(secs) = duration("discovery.grace", t, &mut problems)
    {
        discovery.grace_secs = secs;
    }
    let reassign_within = match &file.owners.reassign_within {
        None => Some(statemachines::policy::default_owner_reassign_secs()),
        Some(s) => duration("owners.reassign_within", s, &mut problems),
    };
    let expiry = duration("approvals.expiry", &file.approvals.expiry, &mut problems);
    if file.approvals.approvers.is_empty() {
        problems.push(
            "approvals.approvers: name at least one approver (the security group's emails)".into(),
        );
    }
    for o in &file.access.operators {
        if !o.contains('@') {
            problems.push(format!("access.operators: `{o}` is not an email address"));
        }
    }
    for a in &file.approvals.approvers {
        if !a.contains('@') {
            problems.push(format!(
                "approvals.approvers: `{a}` is not an email address"
            ));
        }
    }
    let remind_before = match file.approvals.remind_before.as_deref() {
        None => expiry.map(|e| (e / 3).min(24 * 3600)),
        Some("off") => Some(0),
        Some(text) => duration("approvals.remind_before", text, &mut problems),
    };
    if let (Some(remind), Some(expiry), Some(text)) =
        (remind_before, expiry, &file.approvals.remind_before)
        && remind >= expiry
    {
        problems.push(format!(
            "approvals.remind_before: `{text}` must be shorter than approvals.expiry `{}` (or \"off\")",
            file.approvals.expiry
        ));
    }
    for s in &file.approvals.two_person_scopes {
        if !file.scopes.sensitive.contains(s) {
            problems.push(format!(
                "approvals.two_person_scopes: `{s}` is not in scopes.sensitive; only sensitive scopes are approved at all"
            ));
        }
    }
    if !file.approvals.two_person_scopes.is_empty() && file.approvals.approvers.len() < 2 {
        problems.push(format!(
            "approvals.two_person_scopes: a two-person rule needs at least two approvers; approvals.approvers lists {}",
            file.approvals.approvers.len()
        ));
    }
    if file.approvals.routes.is_empty() {
        problems.push(
            "approvals.routes: name at least one of owner, approvers, security-channel".into(),
        );
    }
    for r in &file.approvals.routes {
        if !statemachines::policy::APPROVAL_ROUTES.contains(&r.as_str()) {
            problems.push(format!(
                "approvals.routes: `{r}` is not one of owner, approvers, security-channel"
            ));
        }
    }
    for env in file
        .credentials
        .kinds
        .keys()
        .chain(file.credentials.binding.keys())
        .chain(file.credentials.steward_keys.keys())
    {
        if !file.environments.contains(env) {
            problems.push(format!(
                "credentials: `{env}` is not one of the environments ({})",
                file.environments.join(", ")
            ));
        }
    }
    for (env, kinds) in &file.credentials.kinds {
        if kinds.is_empty() {
            problems.push(format!(
                "credentials.kinds.{env}: name at least one kind (secret, private_key_jwt, tls_client_auth)"
            ));
        }
    }
    for (env, binding) in &file.credentials.binding {
        if *binding == statemachines::credential::TokenBinding::Certificate
            && !file
                .credentials
                .kinds_in(env)
                .contains(&statemachines::credential::CredentialKind::TlsClientAuth)
        {
            problems.push(format!(
                "credentials.binding.{env}: certificate binding needs tls_client_auth among the environment's kinds"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(PolicyError::Invalid {
            path: origin.into(),
            problems,
        });
    }
    Ok(Policy {
        naming_pattern: file.naming.pattern,
        environments: file.environments,
        approved_scopes: file.scopes.approved,
        excluded_scopes: file.scopes.excluded,
        sensitive_scopes: file.scopes.sensitive,
        max_token_lifetime_secs: max_lifetime.unwrap_or_default() as u32,
        rotation_max_age_days: (max_age.unwrap_or_default() / 86_400) as u32,
        approval_expiry_secs: expiry.unwrap_or_default(),
        approvers: file.approvals.approvers,
        operators: file
            .access
            .operators
            .iter()
            .map(|o| o.trim().to_ascii_lowercase())
            .collect(),
        approval_reminder_secs: remind_before.unwrap_or_default(),
        two_person_scopes: file.approvals.two_person_scopes,
        approval_routes: file.approvals.routes,
        owner_reassign_secs: reassign_within.unwrap_or_default(),
        lifecycle,
        reviews,
        detection,
        discovery,
        credentials: file.credentials,
    })
}

/// Outside-signal kinds a severity can be mapped to (`Signal::Risk` kinds).
pub const SIGNAL_KINDS: [&str; 9] = [
    "threat_detected",
    "user_risk",
    "entity_risk_action",
    "sessions_cleared",
    "universal_logout",
    "session_revoked",
    "credential_change",
    "credential_compromise",
    "account_disabled",
];

/// The `[detection]` table, checked.
fn detection(file: &PolicyFile, problems: &mut Vec<String>) -> statemachines::detection::Detection {
    let d = &file.detection;
    let mut out = statemachines::detection::Detection::default();
    if let Some(on) = d.enabled {
        out.enabled = on;
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in &d.rules {
        if !seen.insert(r.name.as_str()) {
            problems.push(format!(
                "detection.rules: rule `{}` is listed twice",
                r.name
            ));
        }
        if r.name.trim().is_empty() {
            problems.push("detection.rules: every rule needs a name".into());
        }
        let rule = statemachines::detection::Rule {
            name: r.name.clone(),
            severity: r.severity,
            condition: r.condition,
            action: r.action.clone(),
        };
        // A built-in keeps its place when replaced; new rules come after.
        match out.rules.iter().position(|b| b.name == r.name) {
            Some(i) if r.enabled => out.rules[i] = rule,
            Some(i) => {
                out.rules.remove(i);
            }
            None if r.enabled => out.rules.push(rule),
            None => {}
        }
    }
    for (env, ranges) in &d.approved_ranges {
        if !file.environments.contains(env) {
            problems.push(format!(
                "detection.approved_ranges: `{env}` is not one of the policy's environments"
            ));
        }
        for r in ranges {
            if !statemachines::detection::valid_range(r) {
                problems.push(format!(
                    "detection.approved_ranges.{env}: `{r}` is not a CIDR range like `10.0.0.0/8`"
                ));
            }
        }
    }
    out.approved_ranges = d.approved_ranges.clone();
    if let Some(n) = d.learning_requests {
        out.learning_requests = n;
    }
    if let Some(n) = d.learning_hours {
        out.learning_hours = n;
    }
    if let Some(t) = &d.sharing_window
        && let Some(secs) = duration("detection.sharing_window", t, problems)
    {
        out.sharing_window_secs = secs;
    }
    if let Some(n) = d.sharing_sources {
        if n < 2 {
            problems.push("detection.sharing_sources: must be 2 or more".into());
        }
        out.sharing_sources = n;
    }
    for (field, value, target) in [
        ("detection.rate_factor", d.rate_factor, &mut out.rate_factor),
        (
            "detection.volume_factor",
            d.volume_factor,
            &mut out.volume_factor,
        ),
    ] {
        if let Some(v) = value {
            if v <= 1.0 || !v.is_finite() {
                problems.push(format!("{field}: must be a number above 1, got {v}"));
            }
            *target = v;
        }
    }
    if let Some(n) = d.min_burst {
        out.min_burst = n;
    }
    if let Some(t) = &d.quiet
        && let Some(secs) = duration("detection.quiet", t, problems)
    {
        out.quiet_secs = secs;
    }
    if let Some(t) = &d.decide_within
        && let Some(secs) = duration("detection.decide_within", t, problems)
    {
        out.decision_secs = secs;
    }
    for (kind, severity) in &d.signals {
        if !SIGNAL_KINDS.contains(&kind.as_str()) {
            problems.push(format!(
                "detection.signals: `{kind}` is not one of {}",
                SIGNAL_KINDS.join(", ")
            ));
        }
        out.signals.insert(kind.clone(), *severity);
    }
    out
}

/// The `[reviews]` table, checked.
fn reviews(file: &PolicyFile, problems: &mut Vec<String>) -> statemachines::policy::Reviews {
    use statemachines::review_campaign::{Risk, Unanswered};
    let r = &file.reviews;
    let every_months = match r.every.as_deref().map(str::trim) {
        None | Some("off") => 0,
        Some("monthly") => 1,
        Some("quarterly") => 3,
        Some("semiannual") => 6,
        Some("annual") => 12,
        Some(other) => {
            problems.push(format!(
                "reviews.every: `{other}` is not one of monthly, quarterly, semiannual, annual, off"
            ));
            0
        }
    };
    let mut out = statemachines::policy::Reviews {
        every_months,
        ..Default::default()
    };
    for e in &r.environments {
        if !file.environments.contains(e) {
            problems.push(format!(
                "reviews.environments: `{e}` is not one of the policy's environments"
            ));
        }
    }
    out.scope.environments = r.environments.clone();
    out.scope.teams = r.teams.clone();
    for level in &r.risk {
        match Risk::parse(level) {
            Some(l) => out.scope.risk.push(l),
            None => problems.push(format!(
                "reviews.risk: `{level}` is not one of high, medium, low"
            )),
        }
    }
    let optional =
        |field: &str, text: &Option<String>, problems: &mut Vec<String>| match text.as_deref() {
            None => None,
            Some("off") => Some(0),
            Some(t) => duration(field, t, problems),
        };
    if let Some(t) = &r.answer_within
        && let Some(secs) = duration("reviews.answer_within", t, problems)
    {
        out.duration_secs = secs;
    }
    if let Some(secs) = optional("reviews.remind_before", &r.remind_before, problems) {
        out.remind_before_secs = secs;
    }
    if let Some(secs) = optional("reviews.escalate_before", &r.escalate_before, problems) {
        out.escalate_before_secs = secs;
    }
    for (field, secs) in [
        ("reviews.remind_before", out.remind_before_secs),
        ("reviews.escalate_before", out.escalate_before_secs),
    ] {
        if secs >= out.duration_secs {
            problems.push(format!(
                "{field}: must be shorter than reviews.answer_within ({}s), or \"off\"",
                out.duration_secs
            ));
        }
    }
    if let Some(text) = &r.unanswered {
        match Unanswered::parse(text) {
            Some(u) => out.unanswered = u,
            None => problems.push(format!(
                "reviews.unanswered: `{text}` is not one of revoke, freeze, keep-and-flag"
            )),
        }
    }
    if let Some(t) = &r.unused_after
        && let Some(secs) = duration("reviews.unused_after", t, problems)
    {
        out.unused_after_days = (secs / 86_400).max(1) as u32;
    }
    out
}

fn duration(field: &str, text: &str, problems: &mut Vec<String>) -> Option<u64> {
    match humantime::parse_duration(text) {
        Ok(d) if d.as_secs() > 0 => Some(d.as_secs()),
        Ok(_) => {
            problems.push(format!("{field}: `{text}` must be longer than zero"));
            None
        }
        Err(e) => {
            problems.push(format!(
                "{field}: `{text}` is not a duration like `15m`, `72h` or `90days` ({e})"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../policy.example.toml");

    #[test]
    fn example_policy_loads_with_defaults() {
        let p = parse(EXAMPLE, "policy.example.toml").expect("example policy is valid");
        assert_eq!(p.max_token_lifetime_secs, 15 * 60);
        assert_eq!(p.rotation_max_age_days, 90);
        assert!(p.is_excluded("okta:users:manage"));
        assert!(p.is_excluded("datadog:api_keys:write"));
        assert_eq!(p.rotation_max_age_days("prod"), 60);
        assert_eq!(p.rotation_max_age_days("dev"), 90);
        assert_eq!(p.lifecycle.rotation_grace_secs, 24 * 3600);
        assert_eq!(p.lifecycle.secret_recovery_days, 30);
        assert_eq!(p.lifecycle.expiry_reminder_secs, 14 * 86_400);
    }

    #[test]
    fn lifecycle_settings_are_checked() {
        let text = EXAMPLE
            .replace(
                "secret_recovery_window = \"30days\"",
                "secret_recovery_window = \"90days\"",
            )
            .replace("prod = \"60days\"", "prod = \"60days\"\nqa = \"2h\"")
            .replace("starts_per_minute = 10", "starts_per_minute = 0");
        let err = parse(&text, "p.toml").unwrap_err().to_string();
        for needle in [
            "decommission.secret_recovery_window: must be whole days from 7 to 30",
            "rotation.max_age_by_environment.qa: `qa` is not one of the policy's environments",
            "rotation.max_age_by_environment.qa: must be at least 1 day",
            "rotation.starts_per_minute: must be at least 1",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    #[test]
    fn credentials_settings_name_known_environments() {
        let text = format!(
            "{EXAMPLE}\n[credentials]\nkinds = {{ prod = [\"private_key_jwt\"] }}\nsteward_keys = {{ prd = false }}\n"
        );
        let err = parse(&text, "p.toml").unwrap_err().to_string();
        assert!(
            err.contains("credentials: `prd` is not one of the environments"),
            "{err}"
        );
        let ok = format!(
            "{EXAMPLE}\n[credentials]\nsteward_keys = {{ prod = false }}\ncertificate_remind_days = 3\n"
        );
        let p = parse(&ok, "p.toml").unwrap();
        assert!(!p.credentials.steward_keys_in("prod"));
        assert!(p.credentials.steward_keys_in("dev"));
        assert_eq!(p.credentials.certificate_remind_days, 3);
    }

    #[test]
    fn errors_name_field_and_reason() {
        let bad = r#"
environments = ["prod", "Bad Env"]
[naming]
pattern = "{team}-agent"
[scopes]
approved = ["a:read"]
excluded = ["a:read"]
sensitive = ["b:write"]
[tokens]
max_lifetime = "2h"
[approvals]
expiry = "soon"
approvers = ["security"]
"#;
        let err = parse(bad, "bad.toml").unwrap_err().to_string();
        for needle in [
            "naming.pattern",
            "environments: `Bad Env`",
            "scopes.excluded: `a:read` is also in scopes.approved",
            "scopes.sensitive: `b:write`",
            "tokens.max_lifetime: must be between 1s and 60m",
            "approvals.expiry: `soon`",
            "approvals.approvers: `security` is not an email",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn approval_routing_reminder_and_two_person_rule() {
        let p = parse(EXAMPLE, "policy.example.toml").unwrap();
        assert_eq!(p.approval_routes, ["owner", "security-channel"]);
        assert_eq!(
            p.approval_reminder_secs,
            24 * 3600,
            "a third of 72h, at most 24h"
        );
        let short = EXAMPLE.replace("expiry = \"72h\"", "expiry = \"3h\"");
        assert_eq!(parse(&short, "x").unwrap().approval_reminder_secs, 3600);
        let off = EXAMPLE.replace("# remind_before = \"24h\"", "remind_before = \"off\"");
        assert_eq!(parse(&off, "x").unwrap().approval_reminder_secs, 0);

        let bad = EXAMPLE
            .replace("# remind_before = \"24h\"", "remind_before = \"80h\"")
            .replace(
                "two_person_scopes = []",
                "two_person_scopes = [\"erp:orders:read\"]",
            )
            .replace(
                "routes = [\"owner\", \"security-channel\"]",
                "routes = [\"owner\", \"email\"]",
            );
        let err = parse(&bad, "x").unwrap_err().to_string();
        for expected in [
            "approvals.remind_before: `80h` must be shorter than approvals.expiry",
            "approvals.two_person_scopes: `erp:orders:read` is not in scopes.sensitive",
            "approvals.routes: `email` is not one of owner, approvers, security-channel",
        ] {
            assert!(err.contains(expected), "{expected:?} missing from: {err}");
        }
        let two = EXAMPLE.replace(
            "two_person_scopes = []",
            "two_person_scopes = [\"banking:payments:write\"]",
        );
        let p = parse(&two, "x").unwrap();
        assert_eq!(p.quorum_for(&["banking:payments:write".into()]), 2);
        assert_eq!(p.quorum_for(&["datadog:monitors:write".into()]), 1);
    }

    #[test]
    fn detection_and_discovery_are_read_and_checked() {
        use statemachines::detection::{Action, Condition, Severity};
        let p = parse(EXAMPLE, "policy.example.toml").unwrap();
        assert!(p.detection.enabled);
        assert_eq!(
            p.detection.rules.len(),
            7,
            "the example lists the built-ins"
        );
        assert_eq!(
            p.detection.rules,
            statemachines::detection::Detection::default().rules
        );
        assert_eq!(
            p.detection.signals["credential_compromise"],
            Severity::Critical
        );
        assert_eq!(p.discovery.grace_secs, 7 * 86_400);
        // A listed rule replaces the built-in of its name, a new one is added, one is off.
        let tuned = EXAMPLE
            .replace("# prod = [\"10.20.0.0/16\"]", "prod = [\"10.20.0.0/16\"]")
            .replace(
                "name = \"new-source-ip\"\nseverity = \"high\"",
                "name = \"new-source-ip\"\nenabled = false\nseverity = \"high\"",
            )
            + "\n[[detection.rules]]\nname = \"payments-burst\"\nseverity = \"medium\"\ncondition = \"volume_spike\"\naction = \"alert\"\n";
        let p = parse(&tuned, "p.toml").unwrap();
        assert!(!p.detection.rules.iter().any(|r| r.name == "new-source-ip"));
        let added = p
            .detection
            .rules
            .iter()
            .find(|r| r.name == "payments-burst")
            .unwrap();
        assert_eq!(added.condition, Condition::VolumeSpike);
        assert_eq!(added.action, [Action::Alert]);
        let unbound = p
            .detection
            .rules
            .iter()
            .find(|r| r.name == "unbound-token")
            .unwrap();
        assert_eq!(
            (unbound.condition, unbound.severity, &unbound.action[..]),
            (
                Condition::UnboundToken,
                Severity::High,
                &[Action::Alert][..]
            )
        );
        assert_eq!(p.detection.approved_ranges["prod"], ["10.20.0.0/16"]);

        let bad = EXAMPLE
            .replace("# prod = [\"10.20.0.0/16\"]", "qa = [\"10.20.0.0/33\"]")
            .replace("threat_detected = \"high\"", "phishing = \"high\"")
            .replace("rate_factor = 3.0", "rate_factor = 0.5")
            .replace("grace = \"7days\"", "grace = \"soon\"");
        let err = parse(&bad, "p.toml").unwrap_err().to_string();
        for expected in [
            "detection.approved_ranges: `qa` is not one of the policy's environments",
            "detection.approved_ranges.qa: `10.20.0.0/33` is not a CIDR range",
            "detection.signals: `phishing` is not one of",
            "detection.rate_factor: must be a number above 1",
            "discovery.grace: `soon` is not a duration",
        ] {
            assert!(err.contains(expected), "{expected:?} missing from: {err}");
        }
        let unknown = EXAMPLE.replace("condition = \"new_ip\"", "condition = \"moon_phase\"");
        let err = parse(&unknown, "p.toml").unwrap_err().to_string();
        assert!(err.contains("moon_phase"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse("environments=[\"dev\"]\nmystery=1\n[scopes]\napproved=[\"a\"]\n[approvals]\napprovers=[\"a@b.c\"]", "x.toml").unwrap_err();
        assert!(err.to_string().contains("mystery"), "{err}");
    }
}
