//! Engine transitions per second and per-transition latency on the embedded default (SQLite),
//! at both durability levels. External side effects are replaced by instant in-memory ports so
//! the numbers measure the engine: queue receive, load, pure step, conditional commit with
//! history and pending commands, dispatch, ack.
//!
//!     cargo bench -p shared --bench engine            # N=4000 agents per level
//!     STEWARD_BENCH_AGENTS=20000 cargo bench -p shared --bench engine

mod common;

use common::{InstantIdp, NullChannel, NullVault};
use shared::embedded::queue::SqliteQueue;
use shared::embedded::{Db, Durability};
use shared::engine::executor::Executor;
use shared::people_file::PeopleFileDirectory;
use shared::ports::clock::SystemClock;
use shared::{Engine, EngineConfig};
use statemachines::{AgentRequest, Decision};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Run {
    transitions: usize,
    wall: Duration,
    latencies: Vec<Duration>,
}

async fn run(durability: Durability, agents: usize, batch: usize) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(&dir.path().join("bench.db"), durability).expect("db"));
    let queue = Arc::new(SqliteQueue::new(db.clone()));
    let policy = shared::policy_file::parse(
        include_str!("../../policy.example.toml"),
        "policy.example.toml",
    )
    .expect("policy");
    let directory =
        PeopleFileDirectory::parse(
            "[[person]]\nemail = \"alice@example.com\"\nname = \"Alice\"\n\n[[person]]\nemail = \"sam.security@example.com\"\nname = \"Sam\"\n",
        )
        .expect("people");
    let engine = Engine {
        transitions: Default::default(),
        store: db.clone(),
        queue: queue.clone(),
        outbox: queue.clone(),
        directory: Arc::new(directory),
        clock: Arc::new(SystemClock),
        executor: Executor {
            idp: Arc::new(InstantIdp),
            vault: Arc::new(NullVault),
            people: Arc::new(NullChannel),
        },
        policy: Arc::new(policy),
        config: EngineConfig::default(),
    };
    // Setup (not timed): agents awaiting approval, their approval asks run, decisions queued.
    let mut approvals = Vec::with_capacity(agents);
    for i in 0..agents {
        let req = AgentRequest {
            credential: Default::default(),
            public_key: None,
            key_custody: Default::default(),
            csr: None,
            name: format!("bench{i}-agent-prod"),
            owner: "alice@example.com".into(),
            team: "sre".into(),
            environment: "prod".into(),
            purpose: "benchmark".into(),
            scopes: vec![
                "datadog:metrics:read".into(),
                "datadog:monitors:write".into(),
            ],
            token_lifetime_secs: None,
            expires_on: None,
        };
        let s = engine
            .request_agent(req, "alice@example.com")
            .await
            .expect("request");
        approvals.push(format!("{}-approval-1", s.workflow_id));
    }
    engine.run_until_idle().await.expect("setup drain");
    for a in &approvals {
        engine
            .decide(a, "sam.security@example.com", Decision::Approve, None, None)
            .await
            .expect("decide");
    }
    // Timed: every message until the queue is empty. Transitions = applied events and results.
    let mut latencies = Vec::new();
    let mut transitions = 0;
    let start = Instant::now();
    loop {
        let t0 = Instant::now();
        let before = engine.transitions.load(Ordering::Relaxed);
        let n = engine.work_once(batch).await.expect("work");
        if n == 0 {
            break;
        }
        let applied = (engine.transitions.load(Ordering::Relaxed) - before) as usize;
        let took = t0.elapsed();
        transitions += applied;
        latencies.extend(std::iter::repeat_n(took, applied));
    }
    let wall = start.elapsed();
    latencies.sort();
    Run {
        transitions,
        wall,
        latencies,
    }
}

fn main() {
    let agents: usize = std::env::var("STEWARD_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "engine benchmark: {agents} onboarding workflows approved and provisioned per run (release build recommended)"
    );
    println!(
        "{:<8} {:>6} {:>12} {:>14} {:>10} {:>10} {:>10}",
        "level", "batch", "transitions", "transitions/s", "p50 ms", "p99 ms", "max ms"
    );
    for (name, level) in [("fsync", Durability::Fsync), ("wal", Durability::Wal)] {
        for batch in [1usize, 16, 128] {
            let r = rt.block_on(run(level, agents, batch));
            println!(
                "{:<8} {:>6} {:>12} {:>14.0} {:>10.3} {:>10.3} {:>10.3}",
                name,
                batch,
                r.transitions,
                r.transitions as f64 / r.wall.as_secs_f64(),
                percentile(&r.latencies, 0.50).as_secs_f64() * 1e3,
                percentile(&r.latencies, 0.99).as_secs_f64() * 1e3,
                r.latencies
                    .last()
                    .copied()
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1e3,
            );
        }
    }
}
