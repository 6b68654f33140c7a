//! Detection rules, one at a time, over event sequences: each fires on the traffic it is about
//! and stays quiet on an agent's normal traffic.

use crate::common::*;
use chrono::{DateTime, Duration, TimeZone, Utc};
use statemachines::credential::TokenBinding;
use statemachines::detection::{
    Action, BASELINE_IPS, Baseline, Condition, Finding, RECENT_REQUESTS, Severity, TokenRequest,
    signal_finding, valid_range,
};
use statemachines::{Agent, Policy};

/// Monday 2026-11-02 00:00 UTC: the start of the learned history.
fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap()
}

fn request(at: DateTime<Utc>, ip: &str, scopes: &[&str]) -> TokenRequest {
    TokenRequest {
        at,
        ip: Some(ip.into()),
        requested: strings(scopes),
        granted: strings(scopes),
        success: true,
        binding: None,
    }
}

/// The agent's normal week: from two office IPs, 09:00 to 17:00 UTC on weekdays, four token
/// requests an hour, reading metrics and orders.
fn normal_traffic(days: i64) -> Vec<TokenRequest> {
    let mut out = Vec::new();
    for d in 0..days {
        let day = day0() + Duration::days(d);
        for h in 9..17 {
            for q in 0..4 {
                let at = day + Duration::hours(h) + Duration::minutes(q * 15);
                let ip = if q % 2 == 0 { "10.1.0.5" } else { "10.1.0.6" };
                out.push(request(at, ip, &[METRICS_READ, ORDERS_READ]));
            }
        }
    }
    out
}

/// Feeds `traffic` and returns every finding, with the baseline learned.
fn run(
    baseline: &mut Baseline,
    agent: &Agent,
    policy: &Policy,
    traffic: &[TokenRequest],
) -> Vec<Finding> {
    traffic
        .iter()
        .flat_map(|r| baseline.check(agent, r, policy))
        .collect()
}

/// A baseline learned over a normal week, and the moment after it.
fn learned(policy: &Policy) -> (Baseline, DateTime<Utc>) {
    let mut b = Baseline::default();
    let findings = run(&mut b, &active_agent(), policy, &normal_traffic(7));
    assert_eq!(findings, vec![], "normal traffic raises nothing");
    (b, day0() + Duration::days(7))
}

fn rules_fired(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.rule.as_str()).collect()
}

fn policy_with(edit: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = policy().clone();
    edit(&mut p);
    p
}

#[test]
fn normal_traffic_is_quiet_for_every_rule() {
    let p = policy_with(|p| {
        p.detection
            .approved_ranges
            .insert("prod".into(), strings(&["10.1.0.0/16"]));
    });
    let mut b = Baseline::default();
    // Four weeks, every rule active (including approved ranges).
    assert_eq!(
        run(&mut b, &active_agent(), &p, &normal_traffic(28)),
        vec![]
    );
    assert_eq!(b.requests, 28 * 8 * 4);
    assert_eq!(b.ips.len(), 2);
    assert!(
        (b.hourly_rate - 4.0).abs() < 3.0,
        "usual rate is learned: {}",
        b.hourly_rate
    );
}

#[test]
fn scope_outside_grant_is_critical_and_freezes_even_before_learning() {
    let agent = active_agent();
    let mut b = Baseline::default();
    // The very first request: a banking scope the agent was never approved for, refused.
    let mut r = request(day0() + Duration::hours(10), "10.1.0.5", &[PAYMENTS_WRITE]);
    r.success = false;
    r.granted = vec![];
    let found = b.check(&agent, &r, policy());
    assert_eq!(rules_fired(&found), ["scope-outside-grant"]);
    assert_eq!(found[0].severity, Severity::Critical);
    assert_eq!(found[0].action, [Action::Freeze]);
    assert!(
        found[0].summary.contains(PAYMENTS_WRITE),
        "{}",
        found[0].summary
    );
    assert!(
        found[0]
            .evidence
            .iter()
            .any(|e| e == "granted by the IdP: nothing (refused)")
    );

    // Its approved scopes (or a subset) raise nothing.
    let (mut b, t) = learned(policy());
    let quiet = b.check(
        &agent,
        &request(t + Duration::hours(10), "10.1.0.5", &[METRICS_READ]),
        policy(),
    );
    assert_eq!(quiet, vec![]);
}

#[test]
fn ip_outside_approved_ranges_is_high_and_freezes() {
    let p = policy_with(|p| {
        p.detection
            .approved_ranges
            .insert("prod".into(), strings(&["10.1.0.0/16", "192.0.2.0/24"]));
    });
    let agent = active_agent();
    let mut b = Baseline::default();
    let inside = b.check(
        &agent,
        &request(day0() + Duration::hours(9), "192.0.2.44", &[METRICS_READ]),
        &p,
    );
    assert_eq!(inside, vec![]);
    let outside = b.check(
        &agent,
        &request(day0() + Duration::hours(10), "203.0.113.9", &[METRICS_READ]),
        &p,
    );
    assert_eq!(rules_fired(&outside), ["ip-outside-approved-ranges"]);
    assert_eq!(outside[0].severity, Severity::High);
    assert_eq!(outside[0].action, [Action::Freeze, Action::Alert]);

    // An environment without ranges is not checked.
    let mut dev = active_agent();
    dev.environment = "dev".into();
    assert_eq!(
        Baseline::default().check(&dev, &request(day0(), "203.0.113.9", &[METRICS_READ]), &p),
        vec![]
    );
}

#[test]
fn a_never_seen_ip_fires_only_once_the_baseline_is_learned() {
    let agent = active_agent();
    // While learning, new IPs are simply learned.
    let mut b = Baseline::default();
    let early = b.check(
        &agent,
        &request(day0() + Duration::hours(9), "198.51.100.7", &[METRICS_READ]),
        policy(),
    );
    assert_eq!(early, vec![]);

    let (mut b, t) = learned(policy());
    let known = b.check(
        &agent,
        &request(t + Duration::hours(9), "10.1.0.6", &[METRICS_READ]),
        policy(),
    );
    assert_eq!(known, vec![]);
    let new = b.check(
        &agent,
        &request(
            t + Duration::hours(9) + Duration::minutes(1),
            "198.51.100.7",
            &[METRICS_READ],
        ),
        policy(),
    );
    assert_eq!(rules_fired(&new), ["new-source-ip"]);
    assert_eq!(new[0].severity, Severity::High);
    assert!(new[0].evidence.iter().any(|e| e.contains("10.1.0.5")));
    // A refused request from an unknown IP proves nothing about the credential.
    let (mut b, t) = learned(policy());
    let mut refused = request(t + Duration::hours(9), "198.51.100.8", &[METRICS_READ]);
    refused.success = false;
    assert_eq!(b.check(&agent, &refused, policy()), vec![]);
}

#[test]
fn one_credential_from_several_sources_within_the_window_is_sharing() {
    let agent = active_agent();
    let (mut b, t) = learned(policy());
    let t = t + Duration::hours(9);
    // The two usual IPs alternate all day: two sources, never three.
    assert_eq!(
        run(
            &mut b,
            &agent,
            policy(),
            &[
                request(t, "10.1.0.5", &[METRICS_READ]),
                request(t + Duration::minutes(1), "10.1.0.6", &[METRICS_READ]),
            ]
        ),
        vec![]
    );
    // A third source within ten minutes: shared. (It is also a new IP: both rules fire.)
    let found = b.check(
        &agent,
        &request(t + Duration::minutes(3), "198.51.100.20", &[METRICS_READ]),
        policy(),
    );
    let shared = found
        .iter()
        .find(|f| f.rule == "credential-shared")
        .expect("sharing fires");
    assert_eq!(shared.severity, Severity::High);
    assert_eq!(shared.action, [Action::Alert, Action::Rotate]);
    assert!(shared.evidence[0].contains("198.51.100.20"));

    // The same three sources spread over hours are not sharing.
    let p = policy_with(|p| {
        p.detection
            .rules
            .retain(|r| r.condition != Condition::NewIp)
    });
    let (mut b, t) = learned(&p);
    let t = t + Duration::hours(9);
    let spread = run(
        &mut b,
        &agent,
        &p,
        &[
            request(t, "10.1.0.5", &[METRICS_READ]),
            request(t + Duration::hours(1), "198.51.100.20", &[METRICS_READ]),
            request(t + Duration::hours(2), "10.1.0.6", &[METRICS_READ]),
        ],
    );
    assert_eq!(spread, vec![]);
}

/// The test policy with `[credentials] binding = { <env> = "dpop" }`.
fn dpop_required_in(env: &str) -> Policy {
    policy_with(|p| {
        p.credentials.binding.insert(env.into(), TokenBinding::Dpop);
    })
}

/// A granted token request whose token the source reports bound to `binding`.
fn granted_bound(binding: Option<TokenBinding>) -> TokenRequest {
    let mut r = request(day0() + Duration::hours(10), "10.1.0.5", &[METRICS_READ]);
    r.binding = binding;
    r
}

#[test]
fn a_bearer_token_where_the_policy_requires_binding_is_a_high_alert() {
    let agent = active_agent();
    assert_eq!(agent.environment, "prod");
    let p = dpop_required_in("prod");
    // The very first request: no baseline is needed.
    let found = Baseline::default().check(&agent, &granted_bound(Some(TokenBinding::None)), &p);
    assert_eq!(rules_fired(&found), ["unbound-token"]);
    assert_eq!(found[0].severity, Severity::High);
    assert_eq!(found[0].action, [Action::Alert]);
    assert!(!found[0].freezes());
    assert!(
        found[0].summary.contains("bearer token") && found[0].summary.contains("dpop"),
        "{}",
        found[0].summary
    );
    assert!(
        found[0]
            .evidence
            .iter()
            .any(|e| e == "required in prod: dpop ([credentials] binding)"),
        "{:?}",
        found[0].evidence
    );
    assert!(
        found[0].evidence.iter().any(|e| e == "source: 10.1.0.5"),
        "{:?}",
        found[0].evidence
    );

    // A refused request got no token: nothing unbound was granted.
    let mut refused = granted_bound(Some(TokenBinding::None));
    refused.success = false;
    refused.granted = vec![];
    assert_eq!(Baseline::default().check(&agent, &refused, &p), vec![]);
}

#[test]
fn a_bearer_token_is_no_finding_where_no_binding_is_required() {
    let agent = active_agent();
    let bearer = granted_bound(Some(TokenBinding::None));
    // The test policy requires no binding anywhere.
    assert_eq!(policy().credentials.binding_in("prod"), TokenBinding::None);
    assert_eq!(Baseline::default().check(&agent, &bearer, policy()), vec![]);
    // Another environment's requirement is not the agent's.
    assert_eq!(
        Baseline::default().check(&agent, &bearer, &dpop_required_in("staging")),
        vec![]
    );
}

#[test]
fn a_bound_token_is_what_the_policy_requires() {
    let agent = active_agent();
    let p = dpop_required_in("prod");
    assert_eq!(
        Baseline::default().check(&agent, &granted_bound(Some(TokenBinding::Dpop)), &p),
        vec![]
    );
    // A certificate-bound token is bound too.
    assert_eq!(
        Baseline::default().check(&agent, &granted_bound(Some(TokenBinding::Certificate)), &p),
        vec![]
    );
}

#[test]
fn a_grant_whose_binding_the_source_does_not_report_is_not_judged() {
    let agent = active_agent();
    let p = dpop_required_in("prod");
    // Okta's System Log does not say whether a token is bound.
    assert_eq!(
        Baseline::default().check(&agent, &granted_bound(None), &p),
        vec![]
    );
}

#[test]
fn a_burst_outside_usual_hours_is_medium_and_asks_first() {
    let agent = active_agent();
    // At 03:00, far from 09:00-17:00, twenty requests in the hour: more than 3x its usual 4.
    let (mut b, t) = learned(policy());
    let night = t + Duration::hours(3);
    let burst: Vec<_> = (0..20)
        .map(|i| {
            request(
                night + Duration::minutes(i * 2),
                "10.1.0.5",
                &[METRICS_READ],
            )
        })
        .collect();
    let found = run(&mut b, &agent, policy(), &burst);
    assert_eq!(rules_fired(&found), ["off-hours-burst"], "fires once");
    assert_eq!(found[0].severity, Severity::Medium);
    assert!(!found[0].severity.contains_first(), "MEDIUM asks first");
    assert!(found[0].evidence[0].contains("09 10 11"));

    // Two requests at night: off hours, but no burst.
    let (mut b, t) = learned(policy());
    let night = t + Duration::hours(3);
    let quiet: Vec<_> = (0..2)
        .map(|i| request(night + Duration::minutes(i), "10.1.0.5", &[METRICS_READ]))
        .collect();
    assert_eq!(run(&mut b, &agent, policy(), &quiet), vec![]);

    // Twenty in a working hour: a busy hour, not off hours (and under the volume limit).
    let (mut b, t) = learned(policy());
    let busy: Vec<_> = (0..20)
        .map(|i| {
            request(
                t + Duration::hours(10) + Duration::minutes(i * 2),
                "10.1.0.5",
                &[METRICS_READ],
            )
        })
        .collect();
    assert_eq!(run(&mut b, &agent, policy(), &busy), vec![]);
}

/// A new agent that is busy from its first hour is not a spike: before `learning_hours` of its
/// working hours have ended there is no usual rate to exceed. Once there is, ten times it is.
#[test]
fn a_busy_new_agent_is_not_a_spike_before_its_usual_rate_is_known() {
    let agent = active_agent();
    let p = policy();
    let mut b = Baseline::default();
    // 60 requests an hour from its first hour, for its first seven working hours.
    let busy = |from: i64, hours: i64, per_hour: i64| -> Vec<TokenRequest> {
        (from..from + hours)
            .flat_map(|h| {
                (0..per_hour).map(move |i| {
                    request(
                        day0() + Duration::hours(9 + h) + Duration::seconds(i * 3600 / per_hour),
                        "10.1.0.5",
                        &[METRICS_READ],
                    )
                })
            })
            .collect()
    };
    assert_eq!(run(&mut b, &agent, p, &busy(0, 7, 60)), vec![], "learning");
    assert_eq!(p.detection.learning_hours, 8);
    // Its eighth hour ends; the next morning at 09:00 (a usual hour), 700 requests are more
    // than ten times its usual 60.
    assert_eq!(run(&mut b, &agent, p, &busy(7, 1, 60)), vec![]);
    let found = run(&mut b, &agent, p, &busy(24, 1, 700));
    assert_eq!(rules_fired(&found), ["volume-spike"]);
}

#[test]
fn bulk_reads_far_above_the_usual_rate_are_a_volume_spike() {
    let agent = active_agent();
    let (mut b, t) = learned(policy());
    let hour = t + Duration::hours(11);
    let bulk: Vec<_> = (0..120)
        .map(|i| request(hour + Duration::seconds(i * 20), "10.1.0.5", &[ORDERS_READ]))
        .collect();
    let found = run(&mut b, &agent, policy(), &bulk);
    assert_eq!(
        rules_fired(&found),
        ["volume-spike"],
        "fires once per quiet period"
    );
    assert_eq!(found[0].severity, Severity::High);
    assert!(
        found[0].summary.contains("more than 10"),
        "{}",
        found[0].summary
    );

    // The usual four an hour for another day: quiet.
    let (mut b, t) = learned(policy());
    let day: Vec<_> = normal_traffic(1)
        .into_iter()
        .map(|mut r| {
            r.at += t - day0();
            r
        })
        .collect();
    assert_eq!(run(&mut b, &agent, policy(), &day), vec![]);
}

#[test]
fn a_rule_stays_quiet_for_its_quiet_period_then_fires_again() {
    let agent = active_agent();
    let mut b = Baseline::default();
    let t = day0() + Duration::hours(9);
    let bad = |at| request(at, "10.1.0.5", &[PAYMENTS_WRITE]);
    assert_eq!(b.check(&agent, &bad(t), policy()).len(), 1);
    assert_eq!(
        b.check(&agent, &bad(t + Duration::minutes(5)), policy()),
        vec![]
    );
    assert_eq!(
        b.check(&agent, &bad(t + Duration::hours(2)), policy())
            .len(),
        1
    );
}

/// The quiet period ends exactly `quiet_secs` after a rule fired: at that instant it may fire
/// again, a moment before it may not.
#[test]
fn a_rule_may_fire_again_exactly_when_its_quiet_period_ends() {
    let agent = active_agent();
    let quiet = Duration::seconds(policy().detection.quiet_secs as i64);
    let t = day0() + Duration::hours(9);
    let bad = |at| request(at, "10.1.0.5", &[PAYMENTS_WRITE]);
    let mut b = Baseline::default();
    assert_eq!(b.check(&agent, &bad(t), policy()).len(), 1);
    let mut before = b.clone();
    assert_eq!(
        before.check(&agent, &bad(t + quiet - Duration::seconds(1)), policy()),
        vec![]
    );
    assert_eq!(b.check(&agent, &bad(t + quiet), policy()).len(), 1);
}

/// The usual hourly rate: the plain average of the working hours seen over the first week,
/// then a moving average over about a week (168 hours), so one busy hour moves it by 1/168 of
/// the difference.
#[test]
fn the_usual_rate_averages_working_hours_then_moves_a_week_at_a_time() {
    let agent = active_agent();
    let mut b = Baseline::default();
    let hour = |b: &mut Baseline, h: i64, n: i64| {
        for i in 0..n {
            let at = day0() + Duration::hours(h) + Duration::seconds(i);
            b.check(&agent, &request(at, "10.1.0.5", &[METRICS_READ]), policy());
        }
    };
    hour(&mut b, 9, 4);
    hour(&mut b, 10, 8);
    hour(&mut b, 12, 1); // 11 was idle: not a working hour
    assert_eq!(b.hours_observed, 2);
    assert!((b.hourly_rate - 6.0).abs() < 1e-9, "{}", b.hourly_rate);

    let mut settled = Baseline {
        hourly_rate: 10.0,
        hours_observed: 500,
        current_hour: Some(day0()),
        current_count: 178,
        ..Baseline::default()
    };
    settled.check(
        &agent,
        &request(day0() + Duration::hours(1), "10.1.0.5", &[METRICS_READ]),
        policy(),
    );
    assert_eq!(settled.hours_observed, 501);
    assert!(
        (settled.hourly_rate - 11.0).abs() < 1e-9,
        "{}",
        settled.hourly_rate
    );
}

/// A learned baseline at `at`'s hour, with `count_before` requests already in it, `requests`
/// in all and `in_hour` of them at that hour of the day (its usual source IP known).
fn learned_at(
    at: DateTime<Utc>,
    rate: f64,
    count_before: u32,
    requests: u64,
    in_hour: u64,
) -> Baseline {
    use chrono::{DurationRound, Timelike};
    let mut hours = [0u64; 24];
    hours[at.hour() as usize] = in_hour;
    let mut b = Baseline {
        requests,
        hours,
        hourly_rate: rate,
        hours_observed: 500,
        current_hour: Some(at.duration_trunc(Duration::hours(1)).unwrap()),
        current_count: count_before,
        ..Baseline::default()
    };
    b.ips.insert("10.1.0.5".into(), at - Duration::hours(1));
    b
}

fn fires(mut b: Baseline, at: DateTime<Utc>, rule: &str) -> bool {
    b.check(
        &active_agent(),
        &request(at, "10.1.0.5", &[METRICS_READ]),
        policy(),
    )
    .iter()
    .any(|f| f.rule == rule)
}

/// A volume spike is more than `volume_factor` times the usual hourly rate, not as many.
#[test]
fn a_volume_spike_is_more_than_the_factor_times_the_usual_rate() {
    let d = &policy().detection;
    let rate = 2.0;
    let limit = (d.volume_factor * rate) as u32;
    assert!(limit >= d.min_burst && f64::from(limit) == d.volume_factor * rate);
    let at = day0() + Duration::days(3) + Duration::hours(10);
    // Spread over every hour of the day, so the hour is a usual one.
    let usual = |count_before| learned_at(at, rate, count_before, 24_000, 1_000);
    assert!(
        !fires(usual(limit - 1), at, "volume-spike"),
        "exactly the limit"
    );
    assert!(fires(usual(limit), at, "volume-spike"), "one more");
}

/// An off-hours burst: more than `rate_factor` times the usual rate in an hour of the day that
/// holds less than `usual_hour_share` of the agent's requests (this hour's own not counted).
#[test]
fn an_off_hours_burst_is_a_rate_above_the_factor_in_a_rarely_used_hour() {
    let d = &policy().detection;
    let rate = 4.0;
    let limit = (d.rate_factor * rate) as u32;
    assert!(limit >= d.min_burst && f64::from(limit) == d.rate_factor * rate);
    let at = day0() + Duration::days(3) + Duration::hours(3);
    // Before this hour's requests, the hour held `before` of 10,000 requests.
    let rare = |count_before: u32, before: u64| {
        let c = u64::from(count_before);
        learned_at(at, rate, count_before, 10_000 + c, before + c)
    };
    let share_of = |n: f64| (n * 10_000.0).round() as u64;
    let at_share = share_of(d.usual_hour_share);
    assert_eq!(at_share as f64 / 10_000.0, d.usual_hour_share);
    let below = at_share / 2;
    assert!(
        !fires(rare(limit - 1, below), at, "off-hours-burst"),
        "exactly the limit"
    );
    assert!(fires(rare(limit, below), at, "off-hours-burst"), "one more");
    // The people deciding are shown the agent's usual hours: those holding the usual share.
    let mut b = rare(limit, below);
    b.hours[9] = 5_000;
    let found = b.check(
        &active_agent(),
        &request(at, "10.1.0.5", &[METRICS_READ]),
        policy(),
    );
    let burst = found
        .iter()
        .find(|f| f.rule == "off-hours-burst")
        .expect("fires");
    assert!(
        burst.evidence.iter().any(|e| e == "usual hours (UTC): 09"),
        "{:?}",
        burst.evidence
    );
    assert!(
        !fires(rare(limit, at_share), at, "off-hours-burst"),
        "an hour at the usual share is a usual hour"
    );
}

/// An approved range must be a CIDR range, IPv4 or IPv6; anything else is refused.
#[test]
fn approved_ranges_are_cidr_ranges() {
    for ok in ["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"] {
        assert!(valid_range(ok), "{ok}");
    }
    for bad in ["10.0.0.0", "10.0.0.0/33", "office", "", "2001:db8::/129"] {
        assert!(!valid_range(bad), "{bad}");
    }
}

/// The baseline keeps the latest `BASELINE_IPS` source IPs and `RECENT_REQUESTS` requests: the
/// one past the bound evicts the oldest, the bound itself does not.
#[test]
fn the_baseline_keeps_its_bounded_memory() {
    let agent = active_agent();
    let mut b = Baseline::default();
    let t = day0() + Duration::hours(9);
    for i in 0..BASELINE_IPS {
        let at = t + Duration::seconds(i as i64);
        b.check(
            &agent,
            &request(at, &format!("10.2.0.{i}"), &[METRICS_READ]),
            policy(),
        );
    }
    assert_eq!(b.ips.len(), BASELINE_IPS);
    assert!(b.ips.contains_key("10.2.0.0"));
    let at = t + Duration::seconds(BASELINE_IPS as i64);
    b.check(&agent, &request(at, "10.3.0.1", &[METRICS_READ]), policy());
    assert_eq!(b.ips.len(), BASELINE_IPS);
    assert!(
        !b.ips.contains_key("10.2.0.0"),
        "the oldest IP is forgotten"
    );
    assert!(b.ips.contains_key("10.3.0.1"));

    let mut r = Baseline::default();
    for i in 0..RECENT_REQUESTS {
        let at = t + Duration::seconds(i as i64);
        r.check(&agent, &request(at, "10.1.0.5", &[METRICS_READ]), policy());
    }
    assert_eq!(r.recent.len(), RECENT_REQUESTS);
    assert_eq!(r.recent.front().unwrap().0, t);
    let at = t + Duration::seconds(RECENT_REQUESTS as i64);
    r.check(&agent, &request(at, "10.1.0.5", &[METRICS_READ]), policy());
    assert_eq!(r.recent.len(), RECENT_REQUESTS);
    assert_eq!(r.recent.front().unwrap().0, t + Duration::seconds(1));
}

/// The baseline remembers the token events it counted, the latest 256 of them, so an event
/// delivered again is recognised and an old one is eventually forgotten.
#[test]
fn the_baseline_remembers_the_latest_counted_events() {
    let mut b = Baseline::default();
    assert!(!b.has_counted("ev-0"));
    b.mark_counted("ev-0");
    assert!(b.has_counted("ev-0"));
    assert!(!b.has_counted("ev-1"));
    for i in 1..256 {
        b.mark_counted(&format!("ev-{i}"));
    }
    assert_eq!(b.counted.len(), 256);
    assert!(b.has_counted("ev-0"), "256 are kept");
    b.mark_counted("ev-256");
    assert_eq!(b.counted.len(), 256);
    assert!(!b.has_counted("ev-0"), "the oldest is forgotten past 256");
    assert!(b.has_counted("ev-1") && b.has_counted("ev-256"));
}

#[test]
fn policy_rules_replace_builtins_and_detection_can_be_switched_off() {
    let agent = active_agent();
    let strict = policy_with(|p| {
        for r in &mut p.detection.rules {
            if r.name == "scope-outside-grant" {
                r.severity = Severity::High;
                r.action = vec![Action::Alert];
            }
        }
    });
    let found = Baseline::default().check(
        &agent,
        &request(day0(), "10.1.0.5", &[PAYMENTS_WRITE]),
        &strict,
    );
    assert_eq!(found[0].severity, Severity::High);
    assert!(!found[0].freezes());

    let off = policy_with(|p| p.detection.enabled = false);
    assert_eq!(
        Baseline::default().check(
            &agent,
            &request(day0(), "10.1.0.5", &[PAYMENTS_WRITE]),
            &off
        ),
        vec![]
    );
}

#[test]
fn outside_signals_take_the_severity_the_policy_maps() {
    let agent = active_agent();
    let compromise = signal_finding(
        policy(),
        "credential_compromise",
        &agent,
        "leaked in a repo",
    )
    .expect("mapped by default");
    assert_eq!(compromise.severity, Severity::Critical);
    assert!(compromise.freezes());
    assert_eq!(compromise.rule, "signal:credential_compromise");
    let change =
        signal_finding(policy(), "credential_change", &agent, "rotated elsewhere").unwrap();
    assert_eq!(change.severity, Severity::Medium);
    assert!(!change.severity.contains_first());
    assert_eq!(
        signal_finding(policy(), "sessions_cleared", &agent, "x"),
        None,
        "unmapped kinds are recorded only"
    );
    let low = policy_with(|p| {
        p.detection
            .signals
            .insert("sessions_cleared".into(), Severity::Low);
    });
    let f = signal_finding(&low, "sessions_cleared", &agent, "x").unwrap();
    assert_eq!(f.action, [Action::Alert], "LOW alerts only");
}
