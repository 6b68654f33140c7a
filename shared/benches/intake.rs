//! Token-grant intake with anomaly detection on the embedded default (SQLite, fsync): grants
//! per second through `intake::accept` in System Log pages, and the time to contain an agent
//! that asks for a scope outside its grant while the grants keep coming.
//!
//!     cargo bench -p shared --bench intake                                # 10,000 agents, 200,000 grants
//!     STEWARD_BENCH_AGENTS=2000 STEWARD_BENCH_GRANTS=50000 cargo bench -p shared --bench intake
//!     STEWARD_BENCH_PAGE=1 cargo bench -p shared --bench intake          # one event per call
//!
//! Each grant is what the Okta System Log reports for a client_credentials token: the client,
//! its usual address, one scope of its grant. Every grant is kept as evidence, its scope use
//! recorded, checked against the agent's baseline and the policy's rules, and its event id
//! remembered for deduplication. The worker runs beside the intake (as `steward serve` runs it),
//! so the freezes it contains compete with the grants for the two cores.

mod common;

use async_trait::async_trait;
use common::{InstantIdp, NullChannel, NullVault, registry};
use shared::Secret;
use shared::embedded::queue::SqliteQueue;
use shared::embedded::{Db, Durability};
use shared::engine::executor::Executor;
use shared::intake::{self, Received};
use shared::people_file::PeopleFileDirectory;
use shared::ports::clock::SystemClock;
use shared::ports::idp::{
    ClientInfo, ClientSpec, CreatedClient, IdentityProvider, IdpError, NewSecret, TokenRevocation,
};
use shared::signal::Signal;
use shared::{Engine, EngineConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The instant IdP, noting when each client was deactivated (what stops new tokens).
struct Noting {
    deactivated: Mutex<HashMap<String, Instant>>,
}

#[async_trait]
impl IdentityProvider for Noting {
    async fn create_client(&self, spec: &ClientSpec, key: &str) -> Result<CreatedClient, IdpError> {
        InstantIdp.create_client(spec, key).await
    }
    async fn set_grants(&self, c: &str, s: &[String], l: u32) -> Result<(), IdpError> {
        InstantIdp.set_grants(c, s, l).await
    }
    async fn set_active(&self, client_id: &str, active: bool) -> Result<(), IdpError> {
        if !active {
            self.deactivated
                .lock()
                .expect("deactivated")
                .insert(client_id.to_string(), Instant::now());
        }
        Ok(())
    }
    async fn client(&self, c: &str) -> Result<Option<ClientInfo>, IdpError> {
        InstantIdp.client(c).await
    }
    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        InstantIdp.list_clients().await
    }
    async fn add_secret(&self, c: &str, k: &str) -> Result<NewSecret, IdpError> {
        InstantIdp.add_secret(c, k).await
    }
    async fn remove_secret(&self, c: &str, s: &str) -> Result<(), IdpError> {
        InstantIdp.remove_secret(c, s).await
    }
    async fn secret_ids(&self, c: &str) -> Result<Vec<String>, IdpError> {
        InstantIdp.secret_ids(c).await
    }
    async fn test_secret(&self, c: &str, s: &Secret) -> Result<(), IdpError> {
        InstantIdp.test_secret(c, s).await
    }
    async fn revoke_tokens(&self, c: &str) -> Result<TokenRevocation, IdpError> {
        InstantIdp.revoke_tokens(c).await
    }
    async fn delete_client(&self, c: &str) -> Result<(), IdpError> {
        InstantIdp.delete_client(c).await
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A grant of agent `i`'s first scope from its usual address, or (`outside`) a refused request
/// for a scope it was never granted: the CRITICAL rule `scope-outside-grant`.
fn grant(i: usize, n: usize, outside: bool) -> Received {
    let client_id = format!("0oa{i:010}");
    let (requested, granted, success, reason) = if outside {
        (
            vec!["banking:payments:write".to_string()],
            vec![],
            false,
            Some("no_matching_scope".to_string()),
        )
    } else {
        (
            vec!["erp:orders:read".to_string()],
            vec!["erp:orders:read".to_string()],
            true,
            None,
        )
    };
    Received {
        source: "okta",
        event_id: format!("ev-{n:012}"),
        event_type: "app.oauth2.as.token.grant.access_token".into(),
        subject: client_id.clone(),
        published: Some(chrono::Utc::now()),
        signal: Some(Signal::TokenGrant {
            client_id,
            ip: Some(format!(
                "10.{}.{}.{}",
                i / 65536 % 256,
                i / 256 % 256,
                i % 256
            )),
            grant_type: Some("client_credentials".into()),
            requested,
            granted,
            success,
            reason,
            binding: None,
        }),
    }
}

/// Active agents only (the registry seed leaves every 50th denied).
fn active(i: usize) -> bool {
    !i.is_multiple_of(50)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let agents = env("STEWARD_BENCH_AGENTS", 10_000);
    let grants = env("STEWARD_BENCH_GRANTS", 200_000);
    let page = env("STEWARD_BENCH_PAGE", 100).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(&dir.path().join("bench.db"), Durability::Fsync).expect("db"));
    let queue = Arc::new(SqliteQueue::new(db.clone()));
    let policy = shared::policy_file::parse(
        include_str!("../../policy.example.toml"),
        "policy.example.toml",
    )
    .expect("policy");
    let idp = Arc::new(Noting {
        deactivated: Mutex::new(HashMap::new()),
    });
    let engine = Arc::new(Engine {
        transitions: Default::default(),
        store: db.clone(),
        queue: queue.clone(),
        outbox: queue.clone(),
        directory: Arc::new(
            PeopleFileDirectory::parse(
                "[[person]]\nemail = \"alice@example.com\"\nname = \"Alice\"\n",
            )
            .expect("people"),
        ),
        clock: Arc::new(SystemClock),
        executor: Executor {
            idp: idp.clone(),
            vault: Arc::new(NullVault),
            people: Arc::new(NullChannel),
        },
        policy: Arc::new(policy),
        config: EngineConfig::default(),
    });

    // Setup, not timed: the registry, and two grants per agent so baselines exist.
    let now = chrono::Utc::now();
    registry::seed(&db, (0..agents).map(|i| registry::agent(i, now)).collect()).await;
    let mut n = 0usize;
    let warm: Vec<Received> = (0..2)
        .flat_map(|_| 0..agents)
        .filter(|i| active(*i))
        .map(|i| {
            n += 1;
            grant(i, n, false)
        })
        .collect();
    for chunk in warm.chunks(500) {
        intake::accept(&engine, chunk.to_vec())
            .await
            .expect("warm-up");
    }

    // The worker, as the server runs it, beside the intake.
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match engine.work_once(32).await {
                    Ok(0) => tokio::time::sleep(Duration::from_millis(1)).await,
                    Ok(_) => tokio::task::yield_now().await,
                    Err(e) => panic!("worker: {e}"),
                }
            }
        })
    };

    // Timed: `grants` grants in pages; every 20th page also carries one request outside an
    // agent's grant (a different agent each time), whose containment is timed from the
    // moment its page was handed over.
    let mut offenders: Vec<(String, Instant)> = Vec::new();
    let mut next_offender = 1usize;
    let mut page_latencies = Vec::new();
    let started = Instant::now();
    let mut sent = 0usize;
    let mut i = 0usize;
    let mut pages = 0usize;
    while sent < grants {
        let mut events = Vec::with_capacity(page + 1);
        while events.len() < page && sent < grants {
            i = (i + 7919) % agents;
            if !active(i) {
                continue;
            }
            n += 1;
            sent += 1;
            events.push(grant(i, n, false));
        }
        pages += 1;
        let handed = Instant::now();
        if pages.is_multiple_of(20) {
            while !active(next_offender) {
                next_offender += 1;
            }
            n += 1;
            events.push(grant(next_offender, n, true));
            offenders.push((format!("0oa{next_offender:010}"), handed));
            next_offender += 1;
        }
        intake::accept(&engine, events).await.expect("accept");
        page_latencies.push(handed.elapsed());
        tokio::task::yield_now().await;
    }
    let wall = started.elapsed();
    // Every offender contained: wait for the last deactivations.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let d = idp.deactivated.lock().expect("deactivated");
            offenders.iter().all(|(c, _)| d.contains_key(c))
        };
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "offenders not contained in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    worker.await.expect("worker");

    let mut contain: Vec<Duration> = {
        let d = idp.deactivated.lock().expect("deactivated");
        offenders
            .iter()
            .map(|(c, handed)| d[c].duration_since(*handed))
            .collect()
    };
    contain.sort();
    page_latencies.sort();
    let frozen = {
        let d = idp.deactivated.lock().expect("deactivated");
        d.len()
    };
    println!("intake: {agents} agents, {sent} grants in pages of {page}, fsync, worker alongside");
    println!(
        "grants/s {:.0} (wall {:.2} s); page p50 {:.2} ms p99 {:.2} ms",
        sent as f64 / wall.as_secs_f64(),
        wall.as_secs_f64(),
        ms(percentile(&page_latencies, 0.5)),
        ms(percentile(&page_latencies, 0.99)),
    );
    println!(
        "time to contain (page handed over → client deactivated), {} samples: p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        contain.len(),
        ms(percentile(&contain, 0.5)),
        ms(percentile(&contain, 0.99)),
        ms(contain.last().copied().unwrap_or_default()),
    );
    assert_eq!(
        frozen,
        offenders.len(),
        "only the offenders are frozen: a normal grant raised a finding"
    );
}
