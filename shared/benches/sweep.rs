//! Planning a rotation sweep over a large registry on the embedded default: reading every
//! agent record from SQLite, then the pure plan (which secrets are past their age, when each
//! rotation starts). Time, and the peak resident memory each part adds.
//!
//!     cargo bench -p shared --bench sweep                              # 100,000 agents
//!     STEWARD_BENCH_AGENTS=20000 cargo bench -p shared --bench sweep

use chrono::{Duration, Utc};
use shared::embedded::{Db, Durability};
use shared::ports::store::{Commit, HistoryEntry, Instance};
use shared::ports::store::{StoreRead, StoreWrite};
use statemachines::{Actor, Agent, AgentStatus};
use std::time::Instant;

/// Peak resident memory since the last reset, measured by the kernel (Linux): writing 5 to
/// /proc/self/clear_refs resets VmHWM to the current RSS, so each phase's peak is its own.
fn reset_peak() -> usize {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS (Linux only)");
    rss("VmRSS")
}

fn peak() -> usize {
    rss("VmHWM")
}

fn rss(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map(|kb| kb * 1024)
        .expect("a memory figure in /proc/self/status")
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn agent(i: usize, now: chrono::DateTime<Utc>) -> Agent {
    let env = ["dev", "staging", "prod"][i % 3];
    // Ages spread over 0..180 days: about half are past the 90-day default.
    let age = Duration::days((i * 7 % 180) as i64) + Duration::minutes((i % 1440) as i64);
    Agent {
        id: format!("agt-{i:08}"),
        name: format!("bench-{i}-agent-{env}"),
        owner: format!("owner{}@example.com", i % 500),
        team: format!("team-{}", i % 40),
        environment: env.into(),
        purpose: "sweep benchmark".into(),
        scopes: vec!["erp:orders:read".into(), "datadog:metrics:read".into()],
        token_lifetime_secs: 900,
        expires_on: None,
        status: if i.is_multiple_of(50) {
            AgentStatus::Denied
        } else {
            AgentStatus::Active
        },
        client_id: Some(format!("0oa{i:010}")),
        secret_version: Some(format!("{:032x}", i)),
        credential_issued_at: Some(now - age),
        requested_by: "bench@example.com".into(),
        created_at: now - age,
        updated_at: now - age,
        flags: vec![],
        credentials: vec![],
        decommission: None,
        last_review: None,
    }
}

/// Writes the agents in commits of 1,000 (each with a seed workflow instance, as the store's
/// only write path is a workflow commit).
async fn seed(db: &Db, agents: Vec<Agent>) {
    let now = Utc::now();
    for (n, chunk) in agents.chunks(1000).enumerate() {
        let id = format!("bench-seed-{n}");
        let instance = Instance {
            id: id.clone(),
            kind: "bench".into(),
            agent_id: None,
            state: serde_json::Value::Null,
            state_name: "Seeded".into(),
            terminal: true,
            version: 1,
            pending: vec![],
            applied: vec![],
            request_hash: id.clone(),
            created_at: now,
            updated_at: now,
            group: None,
        };
        db.commit(Commit {
            instance,
            expected_version: 0,
            history: HistoryEntry {
                seq: 1,
                at: now,
                event_id: "seed".into(),
                event: serde_json::Value::Null,
                actor: Actor::System,
                from: "[*]".into(),
                to: "Seeded".into(),
                commands: vec![],
                rejected: None,
            },
            timers: vec![],
            agents: chunk.to_vec(),
            approvals: vec![],
            audit: vec![],
        })
        .await
        .expect("seeding the registry");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("STEWARD_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let policy = shared::policy::parse(
        include_str!("../../policy.example.toml"),
        "policy.example.toml",
    )
    .expect("the example policy is valid");
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Db::open(&dir.path().join("steward.db"), Durability::Wal).expect("database");
    let now = Utc::now();
    seed(&db, (0..n).map(|i| agent(i, now)).collect()).await;

    let runs = 3;
    println!("sweep planning over {n} agents (embedded default, {runs} runs, best shown)");
    let (mut load_best, mut plan_best) = (f64::MAX, f64::MAX);
    let (mut load_peak, mut plan_peak, mut due, mut span) = (0usize, 0usize, 0usize, 0i64);
    for _ in 0..runs {
        let base = reset_peak();
        let t = Instant::now();
        let agents = db.agents().await.expect("reading the registry");
        load_best = load_best.min(t.elapsed().as_secs_f64());
        load_peak = load_peak.max(peak().saturating_sub(base));
        assert_eq!(agents.len(), n);

        let base = reset_peak();
        let t = Instant::now();
        let plan = statemachines::sweep::plan(&agents, now, &policy);
        plan_best = plan_best.min(t.elapsed().as_secs_f64());
        plan_peak = plan_peak.max(peak().saturating_sub(base));
        due = plan.len();
        span = plan
            .last()
            .map(|p| (p.start_at - now).num_minutes())
            .unwrap_or(0);
        std::hint::black_box(plan);
    }
    println!("| phase | time ms | peak RSS added MiB |");
    println!("|---|---:|---:|");
    println!(
        "| read {n} agent records from SQLite | {:.0} | {:.1} |",
        load_best * 1000.0,
        mib(load_peak)
    );
    println!(
        "| plan (due: {due}, starts spread over {span} min) | {:.1} | {:.1} |",
        plan_best * 1000.0,
        mib(plan_peak)
    );
    println!(
        "rate limit: {} starts/min → {:.0} min for {due} rotations (policy window {} h)",
        policy.lifecycle.rotation_starts_per_minute,
        due as f64 / f64::from(policy.lifecycle.rotation_starts_per_minute),
        policy.lifecycle.rotation_window_secs / 3600
    );
}
