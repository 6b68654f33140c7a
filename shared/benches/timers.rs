//! Timers due at once on the embedded default (SQLite, fsync): how long the local server's tick
//! takes to turn 100,000 timers due in the same minute (a campaign's deadlines) into queued
//! `TimerFired` events, as `steward serve` drives it (a full batch fires on at once). Beside it,
//! for comparison, the tick as it was: 256 timers a tick, each sent and removed in writes of
//! its own, the next batch at the next 200 ms tick.
//!
//!     cargo bench -p shared --bench timers                          # 100,000 timers
//!     STEWARD_BENCH_TIMERS=20000 cargo bench -p shared --bench timers

mod common;

use common::{InstantIdp, NullChannel, NullVault};
use shared::embedded::queue::SqliteQueue;
use shared::embedded::{Db, Durability};
use shared::engine::executor::Executor;
use shared::people_file::PeopleFileDirectory;
use shared::ports::clock::SystemClock;
use shared::ports::queue::{OutMessage, Queue};
use shared::ports::store::{
    Commit, HistoryEntry, Instance, StoreRead, StoreWrite, Timer, TimerChange,
};
use shared::{Engine, EngineConfig};
use statemachines::Actor;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn engine(db: Arc<Db>) -> Engine {
    let queue = Arc::new(SqliteQueue::new(db.clone()));
    Engine {
        transitions: Default::default(),
        store: db,
        queue: queue.clone(),
        outbox: queue,
        directory: Arc::new(PeopleFileDirectory::parse("").expect("people")),
        clock: Arc::new(SystemClock),
        executor: Executor {
            idp: Arc::new(InstantIdp),
            vault: Arc::new(NullVault),
            people: Arc::new(NullChannel),
        },
        policy: Arc::new(
            shared::policy_file::parse(
                include_str!("../../policy.example.toml"),
                "policy.example.toml",
            )
            .expect("policy"),
        ),
        config: EngineConfig::default(),
    }
}

/// `n` timers due a minute ago, a thousand per workflow.
async fn seed(db: &Db, n: usize) {
    let now = chrono::Utc::now();
    let due = now - chrono::Duration::minutes(1);
    for w in 0..n.div_ceil(1000) {
        let id = format!("review-item-{w:06}");
        let timers = (0..1000.min(n - w * 1000))
            .map(|t| {
                TimerChange::Set(Timer {
                    workflow_id: id.clone(),
                    name: format!("deadline-{t}"),
                    due_at: due,
                })
            })
            .collect();
        db.commit(Commit {
            instance: Instance {
                id: id.clone(),
                kind: "bench".into(),
                agent_id: None,
                state: serde_json::Value::Null,
                state_name: "Waiting".into(),
                terminal: false,
                version: 1,
                pending: vec![],
                applied: vec![],
                request_hash: id.clone(),
                created_at: now,
                updated_at: now,
                group: None,
            },
            expected_version: 0,
            history: HistoryEntry {
                seq: 1,
                at: now,
                event_id: "seed".into(),
                event: serde_json::Value::Null,
                actor: Actor::System,
                from: "[*]".into(),
                to: "Waiting".into(),
                commands: vec![],
                rejected: None,
            },
            timers,
            agents: vec![],
            agent_reads: vec![],
            approvals: vec![],
            audit: vec![],
        })
        .await
        .expect("seeding timers");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("STEWARD_BENCH_TIMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    println!("{n} timers due at once (embedded default, fsync)");

    // Now: the tick fires 1,000 at a time, on at once while a batch is full.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(&dir.path().join("now.db"), Durability::Fsync).expect("db"));
    seed(&db, n).await;
    let e = engine(db.clone());
    let t = Instant::now();
    let mut fired = 0;
    loop {
        let k = e.tick().await.expect("tick");
        fired += k;
        if k < shared::engine::TICK_BATCH {
            break;
        }
    }
    let now = t.elapsed();
    assert_eq!(fired, n, "every timer fired once");
    assert!(
        db.due_timers(chrono::Utc::now(), 1)
            .await
            .unwrap()
            .is_empty()
    );

    // Before: 256 a tick, a send and a removal each, the next tick 200 ms later.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(&dir.path().join("before.db"), Durability::Fsync).expect("db"));
    seed(&db, n).await;
    let queue = SqliteQueue::new(db.clone());
    let t = Instant::now();
    let mut ticks = 0u32;
    let mut fired = 0;
    loop {
        let timers = db.due_timers(chrono::Utc::now(), 256).await.expect("due");
        if timers.is_empty() {
            break;
        }
        for timer in &timers {
            queue
                .send(vec![OutMessage {
                    group: timer.workflow_id.clone(),
                    dedupe_id: format!("timer/{}/{}", timer.name, timer.due_at.timestamp_millis()),
                    body: format!("{{\"timer\":\"{}\"}}", timer.name),
                    delay: Duration::ZERO,
                }])
                .await
                .expect("send");
            db.remove_timer(timer).await.expect("remove");
        }
        fired += timers.len();
        ticks += 1;
    }
    let work = t.elapsed();
    assert_eq!(fired, n);
    let before = work + Duration::from_millis(200) * ticks.saturating_sub(1);
    println!("| tick | seconds to fire all | timers/s |");
    println!("|---|---:|---:|");
    println!(
        "| before: 256 a tick, one write each (work {:.1} s + {} waits of 200 ms) | {:.1} | {:.0} |",
        work.as_secs_f64(),
        ticks.saturating_sub(1),
        before.as_secs_f64(),
        n as f64 / before.as_secs_f64()
    );
    println!(
        "| now: {} a tick in two writes, on at once while full | {:.1} | {:.0} |",
        shared::engine::TICK_BATCH,
        now.as_secs_f64(),
        n as f64 / now.as_secs_f64()
    );
}
