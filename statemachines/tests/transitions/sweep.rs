//! The rotation sweep's plan (`statemachines::sweep::plan`): which agents are due, in which
//! order, and how their starts are spread.

use crate::common::*;
use chrono::Duration;
use statemachines::sweep::{Planned, plan};
use statemachines::{Agent, AgentStatus, Policy};

/// An active agent `id` in `environment` whose secret is `age_days` old.
fn aged(id: &str, environment: &str, age_days: i64) -> Agent {
    let mut agent = active_agent();
    agent.id = id.into();
    agent.name = format!("{id}-agent-{environment}");
    agent.environment = environment.into();
    agent.credential_issued_at = Some(now() - Duration::days(age_days));
    agent
}

/// The test policy with dev secrets allowed 30 days (prod and staging: the default 90).
fn policy_with_dev_override() -> Policy {
    let mut policy = policy().clone();
    policy
        .lifecycle
        .rotation_max_age_days_by_env
        .insert("dev".into(), 30);
    policy
}

fn ids(planned: &[Planned]) -> Vec<&str> {
    planned.iter().map(|p| p.agent_id.as_str()).collect()
}

/// `n` agents, all due, the same age.
fn due_agents(n: usize) -> Vec<Agent> {
    (0..n)
        .map(|i| aged(&format!("agent-{i:04}"), "prod", 100))
        .collect()
}

fn min_spacing(policy: &Policy) -> Duration {
    Duration::milliseconds(60_000 / i64::from(policy.lifecycle.rotation_starts_per_minute))
}

#[test]
fn plans_only_active_agents_past_their_environments_max_age() {
    let dev_30 = policy_with_dev_override();
    assert_eq!(dev_30.rotation_max_age_days("prod"), 90);
    assert_eq!(dev_30.rotation_max_age_days("dev"), 30);
    let mut pending = aged("pending", "prod", 200);
    pending.status = AgentStatus::PendingApproval;
    let mut decommissioned = aged("decommissioned", "prod", 200);
    decommissioned.status = AgentStatus::Decommissioned;
    let mut failed = aged("failed", "prod", 200);
    failed.status = AgentStatus::Failed;
    let mut no_client = aged("no-client", "prod", 200);
    no_client.client_id = None;
    let mut never_issued = aged("never-issued", "prod", 200);
    never_issued.credential_issued_at = None;
    let agents = vec![
        aged("prod-fresh", "prod", 89),
        aged("prod-due", "prod", 90),
        aged("prod-old", "prod", 120),
        aged("staging-fresh", "staging", 60),
        aged("dev-due", "dev", 31),
        aged("dev-fresh", "dev", 29),
        pending,
        decommissioned,
        failed,
        no_client,
        never_issued,
    ];

    let planned = plan(&agents, now(), &dev_30);
    assert_eq!(ids(&planned), ["prod-old", "prod-due", "dev-due"]);
    let limits: Vec<(i64, u32)> = planned
        .iter()
        .map(|p| (p.age_days, p.max_age_days))
        .collect();
    assert_eq!(limits, [(120, 90), (90, 90), (31, 30)]);

    // without the override a 31-day-old dev secret is fine
    let planned = plan(&agents, now(), policy());
    assert_eq!(ids(&planned), ["prod-old", "prod-due"]);
}

#[test]
fn oldest_first_then_by_id() {
    let agents = vec![
        aged("b", "prod", 100),
        aged("c", "prod", 400),
        aged("a", "prod", 100),
        aged("d", "dev", 95),
    ];
    let planned = plan(&agents, now(), policy());
    assert_eq!(ids(&planned), ["c", "a", "b", "d"]);
    assert!(planned.windows(2).all(|w| w[0].start_at <= w[1].start_at));
}

#[test]
fn starts_are_spread_over_the_window_in_order() {
    let policy = policy();
    let window = Duration::seconds(policy.lifecycle.rotation_window_secs as i64);
    for n in [1, 2, 7, 50] {
        let planned = plan(&due_agents(n), now(), policy);
        assert_eq!(planned.len(), n);
        let slot = window / n as i32;
        for (i, p) in planned.iter().enumerate() {
            let slot_start = now() + slot * i as i32;
            assert!(
                p.start_at >= slot_start && p.start_at < slot_start + slot,
                "n={n}: start {i} at {} is outside its slot from {slot_start}",
                p.start_at
            );
            assert!(
                p.start_at < now() + window,
                "n={n}: {} ends past the window",
                p.start_at
            );
        }
    }
}

/// Where the window is too short for the rate limit, the rate limit wins: each start gets a slot
/// of at least 60 / starts-per-minute seconds, and the plan runs past the window.
#[test]
fn rate_limit_wins_over_a_short_window() {
    let mut policy = policy().clone();
    policy.lifecycle.rotation_window_secs = 60;
    let spacing = min_spacing(&policy);
    assert_eq!(spacing, Duration::seconds(6));
    let n = 40;
    let planned = plan(&due_agents(n), now(), &policy);
    for (i, p) in planned.iter().enumerate() {
        let slot_start = now() + spacing * i as i32;
        assert!(
            p.start_at >= slot_start && p.start_at < slot_start + spacing,
            "start {i} at {} is outside its slot from {slot_start}",
            p.start_at
        );
    }
    assert!(planned[n - 1].start_at >= now() + spacing * (n as i32 - 1));
}

/// Known bug in `sweep::plan`, kept ignored until it is fixed: the jitter moves each start
/// anywhere inside its slot, so two consecutive starts can be much closer than
/// 60 / `rotation_starts_per_minute` seconds (the end of one slot, the start of the next), and a
/// sliding 60-second window can hold `rotation_starts_per_minute + 1` starts (with 10 per minute
/// and 200 agents: 11 starts in 60 s, two starts 0.7 s apart). The doc says the plan "never [has]
/// more than `rotation_starts_per_minute`".
#[test]
fn consecutive_starts_respect_the_rate_limit() {
    let mut policy = policy().clone();
    policy.lifecycle.rotation_window_secs = 60;
    let spacing = min_spacing(&policy);
    let per_minute = policy.lifecycle.rotation_starts_per_minute as usize;
    let planned = plan(&due_agents(200), now(), &policy);
    let too_close: Vec<String> = planned
        .windows(2)
        .filter(|w| w[1].start_at - w[0].start_at < spacing)
        .map(|w| {
            format!(
                "{} at {} and {} at {}",
                w[0].agent_id,
                w[0].start_at.format("%H:%M:%S%.3f"),
                w[1].agent_id,
                w[1].start_at.format("%H:%M:%S%.3f")
            )
        })
        .collect();
    assert!(
        too_close.is_empty(),
        "starts closer than {spacing}: {too_close:#?}"
    );
    for (i, first) in planned.iter().enumerate() {
        let in_a_minute = planned[i..]
            .iter()
            .take_while(|p| p.start_at - first.start_at < Duration::seconds(60))
            .count();
        assert!(
            in_a_minute <= per_minute,
            "{in_a_minute} starts in the minute from {}",
            first.start_at
        );
    }
}

#[test]
fn the_same_registry_gets_the_same_plan() {
    let policy = policy_with_dev_override();
    let mut agents = due_agents(12);
    agents.push(aged("dev-due", "dev", 45));
    let first = plan(&agents, now(), &policy);
    assert_eq!(
        plan(&agents, now(), &policy),
        first,
        "jitter is deterministic"
    );
    agents.reverse();
    assert_eq!(
        plan(&agents, now(), &policy),
        first,
        "the registry's order does not matter"
    );
    // the jitter does spread starts inside their slots (not all at the slot start)
    let window = Duration::seconds(policy.lifecycle.rotation_window_secs as i64);
    let slot = window / first.len() as i32;
    assert!(
        first
            .iter()
            .enumerate()
            .any(|(i, p)| p.start_at != now() + slot * i as i32),
        "{first:?}"
    );
}

#[test]
fn nothing_due_plans_nothing() {
    assert_eq!(plan(&[], now(), policy()), []);
    let fresh = vec![aged("fresh", "prod", 10), aged("young", "dev", 1)];
    assert_eq!(plan(&fresh, now(), policy()), []);
}
