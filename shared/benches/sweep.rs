//! Planning a rotation sweep over a large registry on the embedded default: reading every
//! agent record from SQLite, then the pure plan (which secrets are past their age, when each
//! rotation starts). Time and peak heap memory of each part.
//!
//!     cargo bench -p shared --bench sweep                              # 100,000 agents
//!     STEWARD_BENCH_AGENTS=20000 cargo bench -p shared --bench sweep

use chrono::{Duration, Utc};
use shared::embedded::{Db, Durability};
use shared::ports::Store;
use shared::ports::store::{Commit, HistoryEntry, Instance};
use statemachines::{Actor, Agent, AgentStatus};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Counts live heap bytes and their peak, so a phase's peak is measured, not guessed.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Resets the peak to what is live now; returns that baseline.
fn reset_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
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
        status: if i % 50 == 0 {
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
        load_peak = load_peak.max(PEAK.load(Ordering::Relaxed) - base);
        assert_eq!(agents.len(), n);

        let base = reset_peak();
        let t = Instant::now();
        let plan = statemachines::sweep::plan(&agents, now, &policy);
        plan_best = plan_best.min(t.elapsed().as_secs_f64());
        plan_peak = plan_peak.max(PEAK.load(Ordering::Relaxed) - base);
        due = plan.len();
        span = plan
            .last()
            .map(|p| (p.start_at - now).num_minutes())
            .unwrap_or(0);
        std::hint::black_box(plan);
    }
    println!("| phase | time ms | peak heap MiB |");
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
