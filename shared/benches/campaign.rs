//! Launching an access-review campaign over a large registry on the embedded default: every
//! round of `Command::LaunchReviews` (read the registry, create the review items in group
//! commits, queue each item's Slack message), timed end to end, with the peak resident memory
//! it adds. Slack itself is not in the measurement: the messages are queued, and Slack's rate
//! limits decide how fast they go out (docs/BENCHMARKS.md).
//!
//!     cargo bench -p shared --bench campaign                              # 100,000 agents
//!     STEWARD_BENCH_AGENTS=20000 cargo bench -p shared --bench campaign

mod common;

use chrono::Utc;
use common::registry::{agent, mib, peak, reset_peak, seed};
use common::{InstantIdp, NullChannel, NullVault};
use shared::embedded::queue::SqliteQueue;
use shared::embedded::{Db, Durability};
use shared::engine::executor::Executor;
use shared::engine::reviews::CampaignRequest;
use shared::people_file::PeopleFileDirectory;
use shared::ports::clock::SystemClock;
use shared::{Engine, EngineConfig};
use statemachines::Actor;
use std::sync::Arc;
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("STEWARD_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    // The default durability: every group commit is fsynced.
    let db = Arc::new(Db::open(&dir.path().join("steward.db"), Durability::Fsync).expect("db"));
    let now = Utc::now();
    seed(&db, (0..n).map(|i| agent(i, now)).collect()).await;
    let policy = shared::policy_file::parse(
        include_str!("../../policy.example.toml"),
        "policy.example.toml",
    )
    .expect("the example policy is valid");
    let people: String = (0..500)
        .map(|i| format!("[[person]]\nemail = \"owner{i}@example.com\"\nname = \"Owner {i}\"\nmanager = \"lead{}@example.com\"\n\n", i % 20))
        .collect();
    let queue = Arc::new(SqliteQueue::new(db.clone()));
    let engine = Engine {
        transitions: Default::default(),
        store: db.clone(),
        queue: queue.clone(),
        outbox: queue,
        directory: Arc::new(PeopleFileDirectory::parse(&people).expect("people")),
        clock: Arc::new(SystemClock),
        executor: Executor {
            idp: Arc::new(InstantIdp),
            vault: Arc::new(NullVault),
            people: Arc::new(NullChannel),
        },
        policy: Arc::new(policy),
        config: EngineConfig::default(),
    };
    let in_scope = n - n.div_ceil(50);
    println!(
        "campaign launch over {n} agents ({in_scope} active; embedded default, fsync per commit)"
    );

    let base = reset_peak();
    let t = Instant::now();
    engine
        .launch_campaign(
            CampaignRequest {
                id: "bench".into(),
                ..Default::default()
            },
            Actor::Person("sam.security@example.com".into()),
        )
        .await
        .expect("launching");
    // Run the campaign's rounds (and nothing else: the items' Slack messages stay queued).
    let mut rounds = 0;
    loop {
        let deliveries = engine
            .queue
            .receive(1000, std::time::Duration::from_secs(600))
            .await
            .expect("receive");
        let mine: Vec<_> = deliveries
            .iter()
            .filter(|d| d.body.contains("\"workflow_id\":\"campaign-bench\""))
            .cloned()
            .collect();
        if mine.is_empty() {
            // The campaign's own state, not its progress: counting 98,000 items after every
            // receive would measure the bench, not the launch.
            let campaign = engine
                .store
                .instance("campaign-bench")
                .await
                .expect("campaign")
                .expect("the campaign exists");
            if campaign.state_name == "Reviewing" {
                break;
            }
            continue;
        }
        rounds += mine
            .iter()
            .filter(|d| d.body.contains("\"msg\":\"run\""))
            .count();
        engine.work(&mine).await.expect("working");
    }
    let wall = t.elapsed();
    let added = peak().saturating_sub(base);
    let p = engine.campaign_progress("bench").await.expect("progress");
    assert_eq!(p.items as usize, in_scope, "every active agent has an item");
    println!("| what | value |");
    println!("|---|---:|");
    println!("| review items created and queued | {} |", p.items);
    println!("| launch rounds (2,000 items each) | {rounds} |");
    println!("| wall time | {:.1} s |", wall.as_secs_f64());
    println!(
        "| items per second | {:.0} |",
        p.items as f64 / wall.as_secs_f64()
    );
    println!("| peak RSS added | {:.1} MiB |", mib(added));
}
