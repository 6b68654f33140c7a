//! Anomaly detection: rules over an agent's token requests and outside signals, each with a
//! severity and the actions it takes. Pure: the engine loads the agent's [`Baseline`], calls
//! [`Baseline::check`] with one [`TokenRequest`], stores the baseline it returns and acts on the
//! findings (freeze, alert, rotate).
//!
//! A baseline is learned from the agent's own traffic: the IPs it comes from, the hours of the
//! day it works and its usual request rate. Rules that compare against the baseline stay quiet
//! until it has seen `learning_requests` requests, and the rate rules (off-hours burst, volume
//! spike) until it has also seen `learning_hours` working hours end (a busy first hour has no
//! usual rate to exceed); rules against policy (approved scopes, approved IP ranges, the token
//! binding an environment requires) fire from the first request.

use crate::agent::Agent;
use crate::credential::TokenBinding;
use crate::policy::Policy;
use chrono::{DateTime, Duration, DurationRound, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
    /// HIGH and CRITICAL freeze first; lower severities ask first.
    pub fn contains_first(self) -> bool {
        self >= Severity::High
    }
}

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The request came from an IP outside the approved ranges of the agent's environment.
    IpOutsideRanges,
    /// The request came from an IP the agent never used before (once the baseline is learned).
    NewIp,
    /// The agent asked for a scope it was not approved for.
    ScopeOutsideGrant,
    /// One credential used from `sharing_sources` or more IPs within `sharing_window`.
    SharedCredential,
    /// Activity in an hour the agent rarely works, at more than `rate_factor` × its usual rate.
    OffHoursBurst,
    /// More than `volume_factor` × the usual hourly requests (bulk reads).
    VolumeSpike,
    /// A token granted unbound (a bearer token) to an agent whose environment's policy requires
    /// a binding (`[credentials] binding`): a copy of it works for whoever holds it. A grant
    /// whose binding the source does not report is not judged.
    UnboundToken,
}

/// What a finding does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Start the freeze workflow (HIGH/CRITICAL contain first, lower severities ask first).
    Freeze,
    /// Tell the owner and the security channel.
    Alert,
    /// Rotate the agent's secret now.
    Rotate,
}

/// One detection rule, as the policy file names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub severity: Severity,
    pub condition: Condition,
    pub action: Vec<Action>,
}

fn rule(name: &str, severity: Severity, condition: Condition, action: &[Action]) -> Rule {
    Rule {
        name: name.into(),
        severity,
        condition,
        action: action.to_vec(),
    }
}

/// The built-in rules (used when the policy lists none).
pub fn builtin_rules() -> Vec<Rule> {
    use Action::*;
    use Condition::*;
    use Severity::*;
    vec![
        rule(
            "ip-outside-approved-ranges",
            High,
            IpOutsideRanges,
            &[Freeze, Alert],
        ),
        rule("new-source-ip", High, NewIp, &[Freeze, Alert]),
        rule(
            "scope-outside-grant",
            Critical,
            ScopeOutsideGrant,
            &[Freeze],
        ),
        rule(
            "credential-shared",
            High,
            SharedCredential,
            &[Alert, Rotate],
        ),
        rule("off-hours-burst", Medium, OffHoursBurst, &[Freeze]),
        rule("volume-spike", High, VolumeSpike, &[Freeze, Alert]),
        rule("unbound-token", High, UnboundToken, &[Alert]),
    ]
}

/// Detection settings (`[detection]` in the policy file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Detection {
    pub enabled: bool,
    pub rules: Vec<Rule>,
    /// Approved source ranges (CIDR) per environment; an environment without ranges is not
    /// checked by `ip_outside_ranges`.
    pub approved_ranges: BTreeMap<String, Vec<String>>,
    /// Requests a baseline must have seen before baseline rules fire.
    pub learning_requests: u64,
    /// Working hours (hours with requests) a baseline must have seen end before the rate rules
    /// fire: before that its usual rate is not known.
    pub learning_hours: u32,
    pub sharing_window_secs: u64,
    pub sharing_sources: usize,
    pub rate_factor: f64,
    pub volume_factor: f64,
    /// Fewest requests in the current hour before a rate rule may fire (a quiet agent's "3×"
    /// can be two requests).
    pub min_burst: u32,
    /// An hour of the day is "usual" when it holds at least this share of the agent's requests.
    pub usual_hour_share: f64,
    /// A rule fires at most once per agent within this time.
    pub quiet_secs: u64,
    /// Severity of outside signals, by kind (`threat_detected`, `credential_compromise`, …);
    /// kinds not listed are recorded only.
    pub signals: BTreeMap<String, Severity>,
    /// How long security has to decide Unfreeze or Decommission before the freeze is kept and
    /// the workflow ends (the agent stays frozen).
    pub decision_secs: u64,
}

impl Default for Detection {
    fn default() -> Self {
        Self {
            enabled: true,
            rules: builtin_rules(),
            approved_ranges: BTreeMap::new(),
            learning_requests: 50,
            learning_hours: 8,
            sharing_window_secs: 600,
            sharing_sources: 3,
            rate_factor: 3.0,
            volume_factor: 10.0,
            min_burst: 10,
            usual_hour_share: 0.02,
            quiet_secs: 3600,
            signals: [
                ("threat_detected", Severity::High),
                ("credential_compromise", Severity::Critical),
                ("credential_change", Severity::Medium),
                ("account_disabled", Severity::High),
                ("entity_risk_action", Severity::High),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            decision_secs: 7 * 86_400,
        }
    }
}

/// One token request of an agent, as the IdP reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub at: DateTime<Utc>,
    pub ip: Option<String>,
    pub requested: Vec<String>,
    pub granted: Vec<String>,
    pub success: bool,
    /// What the granted token is bound to, when the source says (`None`: not reported).
    #[serde(default)]
    pub binding: Option<TokenBinding>,
}

/// A rule that fired, with what it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: String,
    pub severity: Severity,
    pub action: Vec<Action>,
    /// One line: what happened.
    pub summary: String,
    /// What the rule compared, line by line (shown to the people deciding).
    pub evidence: Vec<String>,
}

impl Finding {
    pub fn freezes(&self) -> bool {
        self.action.contains(&Action::Freeze)
    }
}

/// IPs a baseline remembers (the most recently seen win).
pub const BASELINE_IPS: usize = 64;
/// Recent requests kept for the sharing window.
pub const RECENT_REQUESTS: usize = 256;

/// What an agent's traffic usually looks like, learned from its token requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Baseline {
    pub requests: u64,
    /// Source IPs with when each was last seen.
    pub ips: BTreeMap<String, DateTime<Utc>>,
    /// Requests per hour of the day (UTC).
    pub hours: [u64; 24],
    /// Usual requests per working hour (hours with requests): the average over the first
    /// week's, then a moving average.
    pub hourly_rate: f64,
    pub hours_observed: u32,
    /// The hour being counted and its requests so far.
    pub current_hour: Option<DateTime<Utc>>,
    pub current_count: u32,
    /// Recent requests with their source, for the sharing window.
    pub recent: VecDeque<(DateTime<Utc>, String)>,
    /// When each rule last fired (a rule fires once per `quiet_secs`).
    pub fired: BTreeMap<String, DateTime<Utc>>,
    /// The ids of the latest token events counted (at most [`RECENT_REQUESTS`]), so that an
    /// event delivered again is not counted again.
    #[serde(default)]
    pub counted: VecDeque<String>,
}

impl Baseline {
    /// Whether the token event `event_id` was already counted.
    pub fn has_counted(&self, event_id: &str) -> bool {
        self.counted.iter().any(|c| c == event_id)
    }

    /// Remembers that `event_id` was counted (the oldest id is forgotten past
    /// [`RECENT_REQUESTS`]).
    pub fn mark_counted(&mut self, event_id: &str) {
        self.counted.push_back(event_id.to_string());
        while self.counted.len() > RECENT_REQUESTS {
            self.counted.pop_front();
        }
    }

    fn learned(&self, d: &Detection) -> bool {
        self.requests >= d.learning_requests
    }

    /// Whether the usual hourly rate is known: enough requests, over enough finished hours.
    fn rate_learned(&self, d: &Detection) -> bool {
        self.learned(d) && self.hours_observed >= d.learning_hours
    }

    /// Evaluates every rule on `req`, then learns from it. Returns the findings (at most one
    /// per rule, and a rule stays quiet for `quiet_secs` after it fired).
    pub fn check(&mut self, agent: &Agent, req: &TokenRequest, policy: &Policy) -> Vec<Finding> {
        let d = &policy.detection;
        if !d.enabled {
            return vec![];
        }
        self.roll_hour(req.at);
        // The request counts towards the current hour before rate rules look at it.
        self.current_count += 1;
        let mut findings = Vec::new();
        for r in &d.rules {
            if self
                .fired
                .get(&r.name)
                .is_some_and(|t| req.at < *t + Duration::seconds(d.quiet_secs as i64))
            {
                continue;
            }
            if let Some((summary, evidence)) = self.evaluate(r.condition, agent, req, policy) {
                self.fired.insert(r.name.clone(), req.at);
                findings.push(Finding {
                    rule: r.name.clone(),
                    severity: r.severity,
                    action: r.action.clone(),
                    summary,
                    evidence,
                });
            }
        }
        self.learn(req);
        findings
    }

    fn evaluate(
        &self,
        condition: Condition,
        agent: &Agent,
        req: &TokenRequest,
        policy: &Policy,
    ) -> Option<(String, Vec<String>)> {
        let d = &policy.detection;
        match condition {
            Condition::ScopeOutsideGrant => {
                let outside: Vec<&String> = req
                    .requested
                    .iter()
                    .filter(|s| !agent.scopes.contains(s))
                    .collect();
                (!outside.is_empty()).then(|| {
                    (
                        format!(
                            "{} asked for {} outside its approved scopes",
                            agent.name,
                            list(&outside)
                        ),
                        vec![
                            format!("requested: {}", req.requested.join(" ")),
                            format!("approved: {}", agent.scopes.join(" ")),
                            format!("granted by the IdP: {}", granted(req)),
                        ],
                    )
                })
            }
            Condition::IpOutsideRanges => {
                let ip = req.ip.as_deref()?;
                let ranges = d.approved_ranges.get(&agent.environment)?;
                let addr: std::net::IpAddr = ip.parse().ok()?;
                let inside = ranges.iter().any(|r| {
                    r.parse::<ipnet::IpNet>()
                        .is_ok_and(|net| net.contains(&addr))
                });
                (!inside).then(|| {
                    (
                        format!(
                            "{} used its credential from {ip}, outside the approved ranges of {}",
                            agent.name, agent.environment
                        ),
                        vec![
                            format!("source: {ip}"),
                            format!("approved ranges: {}", ranges.join(", ")),
                        ],
                    )
                })
            }
            Condition::NewIp => {
                let ip = req.ip.as_deref()?;
                (req.success && self.learned(d) && !self.ips.contains_key(ip)).then(|| {
                    (
                        format!(
                            "{} used its credential from {ip}, never seen before",
                            agent.name
                        ),
                        vec![
                            format!("source: {ip}"),
                            format!("known sources: {}", self.known_ips()),
                            format!("requests learned: {}", self.requests),
                        ],
                    )
                })
            }
            Condition::SharedCredential => {
                let ip = req.ip.as_deref()?;
                let since = req.at - Duration::seconds(d.sharing_window_secs as i64);
                let mut sources: BTreeSet<&str> = self
                    .recent
                    .iter()
                    .filter(|(t, _)| *t >= since)
                    .map(|(_, s)| s.as_str())
                    .collect();
                sources.insert(ip);
                (req.success && sources.len() >= d.sharing_sources.max(2)).then(|| {
                    (
                        format!(
                            "{}'s credential was used from {} sources within {} min",
                            agent.name,
                            sources.len(),
                            d.sharing_window_secs / 60
                        ),
                        vec![format!(
                            "sources: {}",
                            sources.into_iter().collect::<Vec<_>>().join(", ")
                        )],
                    )
                })
            }
            Condition::OffHoursBurst => {
                if !self.rate_learned(d) {
                    return None;
                }
                let hour = req.at.hour() as usize;
                // This hour's own requests do not make it usual.
                let this_hour = u64::from(self.current_count.saturating_sub(1));
                let before = self.hours[hour].saturating_sub(this_hour);
                let share = before as f64 / self.requests.saturating_sub(this_hour).max(1) as f64;
                let limit = d.rate_factor * self.hourly_rate;
                (share < d.usual_hour_share
                    && self.current_count >= d.min_burst
                    && f64::from(self.current_count) > limit)
                    .then(|| {
                        (
                            format!(
                                "{} is active at {hour:02}:00 UTC, outside its usual hours, at {} requests this hour (usual {:.1})",
                                agent.name, self.current_count, self.hourly_rate
                            ),
                            vec![
                                format!("usual hours (UTC): {}", self.usual_hours(d)),
                                format!(
                                    "this hour: {} requests > {} × {:.1}",
                                    self.current_count, d.rate_factor, self.hourly_rate
                                ),
                            ],
                        )
                    })
            }
            Condition::VolumeSpike => {
                if !self.rate_learned(d) {
                    return None;
                }
                let limit = d.volume_factor * self.hourly_rate;
                (self.current_count >= d.min_burst && f64::from(self.current_count) > limit).then(
                    || {
                        (
                            format!(
                                "{} made {} token requests this hour, more than {} × its usual {:.1}",
                                agent.name, self.current_count, d.volume_factor, self.hourly_rate
                            ),
                            vec![format!(
                                "this hour: {} requests; usual: {:.1} per hour over {} hours",
                                self.current_count, self.hourly_rate, self.hours_observed
                            )],
                        )
                    },
                )
            }
            Condition::UnboundToken => {
                let required = policy.credentials.binding_in(&agent.environment);
                (req.success
                    && req.binding == Some(TokenBinding::None)
                    && required != TokenBinding::None)
                    .then(|| {
                        let mut evidence = vec![
                            "token: bearer (bound to no key or certificate)".to_string(),
                            format!(
                                "required in {}: {} ([credentials] binding)",
                                agent.environment,
                                required.as_str()
                            ),
                            format!(
                                "agent: credential {}, binding on record {}",
                                agent.credential_kind.as_str(),
                                agent.token_binding.as_str()
                            ),
                        ];
                        if let Some(ip) = &req.ip {
                            evidence.push(format!("source: {ip}"));
                        }
                        (
                            format!(
                                "{} was granted a bearer token; {} requires {}-bound tokens",
                                agent.name,
                                agent.environment,
                                required.as_str()
                            ),
                            evidence,
                        )
                    })
            }
        }
    }

    /// Starts a new hour when `at` is past the current one: the finished hour feeds the usual
    /// rate. Idle hours do not: the usual rate is the rate of the hours the agent works, so a
    /// nine-to-five agent's night is not averaged into its day.
    fn roll_hour(&mut self, at: DateTime<Utc>) {
        let hour = at.duration_trunc(Duration::hours(1)).unwrap_or(at);
        match self.current_hour {
            None => {
                self.current_hour = Some(hour);
                self.current_count = 0;
            }
            Some(h) if hour > h => {
                self.fold(f64::from(self.current_count));
                self.current_hour = Some(hour);
                self.current_count = 0;
            }
            // A late event counts in the current hour.
            Some(_) => {}
        }
    }

    fn fold(&mut self, count: f64) {
        self.hours_observed += 1;
        // The plain average over the first day, a moving average (about a week) after.
        let alpha = (1.0 / f64::from(self.hours_observed)).max(1.0 / 168.0);
        self.hourly_rate += alpha * (count - self.hourly_rate);
    }

    fn learn(&mut self, req: &TokenRequest) {
        self.requests += 1;
        self.hours[req.at.hour() as usize] += 1;
        if let Some(ip) = &req.ip {
            self.ips.insert(ip.clone(), req.at);
            if self.ips.len() > BASELINE_IPS
                && let Some(oldest) = self
                    .ips
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone())
            {
                self.ips.remove(&oldest);
            }
            self.recent.push_back((req.at, ip.clone()));
            while self.recent.len() > RECENT_REQUESTS {
                self.recent.pop_front();
            }
        }
    }

    fn known_ips(&self) -> String {
        if self.ips.is_empty() {
            "none".into()
        } else {
            self.ips.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    fn usual_hours(&self, d: &Detection) -> String {
        let total = self.requests.max(1) as f64;
        let hours: Vec<String> = (0..24)
            .filter(|h| self.hours[*h] as f64 / total >= d.usual_hour_share)
            .map(|h| format!("{h:02}"))
            .collect();
        if hours.is_empty() {
            "none yet".into()
        } else {
            hours.join(" ")
        }
    }
}

/// A finding for an outside signal (Okta threat detection, SSF credential compromise), by the
/// policy's mapping; `None` for kinds the policy does not map.
pub fn signal_finding(policy: &Policy, kind: &str, agent: &Agent, detail: &str) -> Option<Finding> {
    let d = &policy.detection;
    if !d.enabled {
        return None;
    }
    let severity = *d.signals.get(kind)?;
    Some(Finding {
        rule: format!("signal:{kind}"),
        severity,
        action: if severity >= Severity::Medium {
            vec![Action::Freeze, Action::Alert]
        } else {
            vec![Action::Alert]
        },
        summary: format!("{kind} reported for {}: {detail}", agent.name),
        evidence: vec![format!("signal: {kind}"), format!("detail: {detail}")],
    })
}

/// Whether `range` is a CIDR range (`10.0.0.0/8`, `2001:db8::/32`).
pub fn valid_range(range: &str) -> bool {
    range.parse::<ipnet::IpNet>().is_ok()
}

fn list(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn granted(req: &TokenRequest) -> String {
    if req.success {
        req.granted.join(" ")
    } else {
        "nothing (refused)".into()
    }
}
