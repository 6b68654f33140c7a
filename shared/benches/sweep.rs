//! Planning a rotation sweep over a large registry on the embedded default: reading every
//! agent record from SQLite, then the pure plan (which secrets are past their age, when each
//! rotation starts); and what the sweep reads now: only active credentials older than the
//! shortest maximum age, at most a run's worth of starts, through the credential index. Time,
//! and the peak resident memory each part adds.
//!
//!     cargo bench -p shared --bench sweep                              # 100,000 agents
//!     STEWARD_BENCH_AGENTS=20000 cargo bench -p shared --bench sweep

mod common;

use chrono::Utc;
use common::registry::{agent, mib, peak, reset_peak, seed};
use shared::embedded::{Db, Durability};
use shared::ports::store::StoreRead;
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("STEWARD_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let policy = shared::policy_file::parse(
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
    // What the sweep reads: credentials at least the shortest maximum age old, oldest first,
    // at most a run's worth of starts (an hour at the policy's rate).
    let shortest = policy
        .lifecycle
        .rotation_max_age_days_by_env
        .values()
        .copied()
        .chain([policy.rotation_max_age_days])
        .min()
        .unwrap_or(policy.rotation_max_age_days);
    let cutoff = now - chrono::Duration::days(i64::from(shortest));
    let cap = policy.lifecycle.rotation_starts_per_minute as usize * 60;
    let (mut index_best, mut index_peak, mut read) = (f64::MAX, 0usize, 0usize);
    for _ in 0..runs {
        let base = reset_peak();
        let t = Instant::now();
        let candidates = db
            .agents_with_credentials_before(cutoff, cap)
            .await
            .expect("reading the credential index");
        let plan = statemachines::sweep::plan(&candidates, now, &policy);
        index_best = index_best.min(t.elapsed().as_secs_f64());
        index_peak = index_peak.max(peak().saturating_sub(base));
        read = candidates.len();
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
        "| read {read} candidates through the credential index, and plan (what the sweep does) | {:.0} | {:.1} |",
        index_best * 1000.0,
        mib(index_peak)
    );
    println!(
        "rate limit: {} starts/min → {:.0} min for {due} rotations (policy window {} h)",
        policy.lifecycle.rotation_starts_per_minute,
        due as f64 / f64::from(policy.lifecycle.rotation_starts_per_minute),
        policy.lifecycle.rotation_window_secs / 3600
    );
}
