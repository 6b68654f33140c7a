//! The local server's background jobs (worker, timer tick, sweep, Okta System Log poller) and
//! the supervisor that stops the server when one of them dies.

use shared::Engine;
use shared::embedded::queue::SqliteQueue;
use std::sync::Arc;
use std::time::Duration;

/// A background job of the server: runs as long as the server does.
pub type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs `jobs` beside `server` until `server` returns, then stops them. The jobs loop forever,
/// so one that ends has panicked or returned: the server is dropped and the error names the
/// job, rather than the server answering on without it.
pub async fn supervise(
    server: impl std::future::Future<Output = anyhow::Result<()>>,
    jobs: Vec<(&'static str, Job)>,
) -> anyhow::Result<()> {
    let mut running = tokio::task::JoinSet::new();
    let mut names = std::collections::HashMap::new();
    for (name, job) in jobs {
        names.insert(running.spawn(job).id(), name);
    }
    let outcome = tokio::select! {
        result = server => result,
        Some(ended) = running.join_next_with_id() => {
            let (id, why) = match ended {
                Ok((id, ())) => (id, "returned".to_string()),
                Err(e) if e.is_panic() => (e.id(), format!("panicked: {}", panic_text(e))),
                Err(e) => (e.id(), "was cancelled".to_string()),
            };
            let name = names.get(&id).copied().unwrap_or("background");
            tracing::error!(task = name, why = %why, "a background task stopped; stopping the server");
            Err(anyhow::anyhow!(
                "the {name} task {why}; the server cannot run without it and stopped"
            ))
        }
    };
    running.shutdown().await;
    outcome
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Worker lanes when `STEWARD_WORKERS` is unset: each takes its own batches, and the queue
/// never hands one workflow's messages to two lanes at once (a group in flight waits), so a
/// command stuck on a slow peer until its deadline holds up only its own batch while the
/// other lanes drain unrelated workflows.
pub const WORKER_LANES: usize = 4;
/// Names of the lanes (a background task is named in the error that stops the server).
pub const WORKER_NAMES: [&str; 16] = [
    "worker 1",
    "worker 2",
    "worker 3",
    "worker 4",
    "worker 5",
    "worker 6",
    "worker 7",
    "worker 8",
    "worker 9",
    "worker 10",
    "worker 11",
    "worker 12",
    "worker 13",
    "worker 14",
    "worker 15",
    "worker 16",
];
/// Messages a lane takes at once: small, so a stuck command delays few others.
const LANE_BATCH: usize = 8;

/// `STEWARD_WORKERS`: how many lanes drain the queue (1 to 16; [`WORKER_LANES`] when unset).
pub fn worker_lanes_from_env() -> Result<usize, String> {
    match std::env::var("STEWARD_WORKERS") {
        Err(_) => Ok(WORKER_LANES),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=WORKER_NAMES.len()).contains(&n) => Ok(n),
            _ => Err(format!(
                "STEWARD_WORKERS must be a number from 1 to {}, not `{v}`",
                WORKER_NAMES.len()
            )),
        },
    }
}

/// One worker lane: takes a batch, processes it, waits for more when the queue is empty.
pub async fn work(engine: Arc<Engine>, queue: Arc<SqliteQueue>) {
    loop {
        match engine.work_once(LANE_BATCH).await {
            Ok(0) => {
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), queue.ready.notified()).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "worker failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Reads the Okta System Log from the saved cursor, then waits. A failed poll is retried at
/// the next interval; the cursor has not moved past anything unapplied.
pub async fn poll_okta_log(engine: Arc<Engine>, okta: shared::idp::okta::Okta, every: Duration) {
    use shared::inbound::okta_log;
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match okta_log::poll(&engine, &okta, okta_log::PAGE_SIZE, 50).await {
            Ok(p) if p.accepted.new > 0 => {
                tracing::info!(
                    new = p.accepted.new,
                    pages = p.pages,
                    "Okta System Log read"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the Okta System Log failed; retrying later")
            }
        }
    }
}

pub async fn ticks(engine: Arc<Engine>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        // A full batch means more are due (a campaign's deadlines all at once): fire on
        // without waiting for the next tick.
        loop {
            match engine.tick().await {
                Ok(n) if n >= shared::engine::TICK_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "timer tick failed");
                    break;
                }
            }
        }
    }
}

/// Seals the audit trail at start-up and then every `every`. A trail that no longer agrees
/// with its last seal is not sealed again: the error is logged each time, and
/// `steward audit verify` reports the trail as rewritten (or the seal as stale).
pub async fn seals(
    engine: Arc<Engine>,
    sealer: Arc<shared::audit::seal::Sealer>,
    mut adopt: bool,
    every: Duration,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = engine.clock.now();
        match shared::audit::seal::seal(engine.store.as_ref(), &sealer, now, adopt).await {
            Ok(seal) => {
                adopt = false;
                tracing::debug!(through = seal.through, "audit trail sealed");
            }
            Err(e) => tracing::error!(error = %e, "audit trail not sealed"),
        }
    }
}

/// The rotation and expiry sweep; the first one runs at start-up.
pub async fn sweeps(engine: Arc<Engine>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = engine.sweep().await {
            tracing::error!(error = %e, "sweep failed; it runs again at the next interval");
        }
        // The overview's posture summary, rebuilt from the registry in the background.
        if let Err(e) = engine.record_posture().await {
            tracing::error!(error = %e, "the posture summary was not rebuilt; it is tried again at the next sweep");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forever() -> Job {
        Box::pin(std::future::pending())
    }

    #[tokio::test]
    async fn a_panicking_job_stops_the_server_with_its_name() {
        let jobs: Vec<(&'static str, Job)> = vec![
            ("worker", forever()),
            (
                "sweep",
                Box::pin(async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    panic!("`period` must be non-zero.");
                }),
            ),
        ];
        let server = std::future::pending::<anyhow::Result<()>>();
        let e = tokio::time::timeout(Duration::from_secs(10), supervise(server, jobs))
            .await
            .expect("supervise returns when a job dies")
            .expect_err("a dead job is an error");
        assert_eq!(
            e.to_string(),
            "the sweep task panicked: `period` must be non-zero.; the server cannot run without it and stopped"
        );
    }

    #[tokio::test]
    async fn a_job_that_returns_stops_the_server() {
        let jobs: Vec<(&'static str, Job)> =
            vec![("worker", forever()), ("timer tick", Box::pin(async {}))];
        let server = std::future::pending::<anyhow::Result<()>>();
        let e = supervise(server, jobs).await.expect_err("a job returned");
        assert!(
            e.to_string().starts_with("the timer tick task returned;"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_server_returning_stops_the_jobs() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        // The job holds the sender: receiving fails once the job is dropped (aborted).
        let job: Job = Box::pin(async move {
            let _guard = dropped_tx;
            std::future::pending::<()>().await
        });
        let server = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        };
        supervise(server, vec![("worker", job)]).await.unwrap();
        assert!(dropped_rx.await.is_err(), "the job was dropped");
        // No jobs at all (everything off): the server alone decides.
        supervise(async { Ok(()) }, vec![]).await.unwrap();
    }
}
