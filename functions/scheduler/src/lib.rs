//! The `scheduler` function: EventBridge schedules. Each schedule names its job in the event's
//! `detail` (`{"job": "tick"}`); the template's schedules send exactly that.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::Engine;
use shared::audit::seal::{self, Sealer};
use shared::aws::EdgeError;
use shared::engine::EngineError;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Job {
    pub job: String,
}

/// Jobs this release runs:
/// - `tick`: one message per timer partition, whose worker turns its due timers into
///   `TimerFired` events; and a checkpoint seals the audit chains;
/// - `sweep`: rotations of secrets past their age, expiry watches, and what `reviews` and
///   `discovery` do; then the posture summary the dashboard's overview shows;
/// - `reviews`: launches the policy's scheduled access-review campaign when one is due;
/// - `discovery`: queues a discovery sweep for the worker, which holds the identity provider.
pub const JOBS: &[&str] = &["tick", "sweep", "reviews", "discovery"];

/// The environment variable naming the Secrets Manager secret the audit seal key is derived
/// from (only this function may read it).
pub const SEAL_KEY_ENV: &str = "STEWARD_AUDIT_SEAL_KEY_ARN";

pub async fn handle(
    engine: &Engine,
    sealer: &Sealer,
    event: EventBridgeEvent<Job>,
) -> Result<Value, EdgeError> {
    match event.detail.job.as_str() {
        "tick" => {
            // Each timer partition to a worker: 100,000 timers due at once fire in parallel.
            let partitions = engine.fan_out_timers().await?;
            // Seal the minute's audit records with a checkpoint over every shard chain, and
            // sign where the trail ends. A trail that no longer agrees with its last seal is
            // not signed (logged; `steward audit verify` reports it). Without any seal the
            // trail is adopted as it is: a table writer who removes the seal item gets a
            // new first seal, which the scheduler alone may write (docs/adr/0029).
            engine.store.seal_audit().await.map_err(EngineError::from)?;
            let sealed =
                match seal::seal(engine.store.as_ref(), sealer, engine.clock.now(), true).await {
                    Ok(s) => Some(s.through),
                    Err(e) => {
                        tracing::error!(error = %e, "audit trail not sealed");
                        None
                    }
                };
            // The approvals backlog and how long its oldest has waited (from the pending index).
            let pending = engine
                .store
                .approvals(true)
                .await
                .map_err(EngineError::from)?;
            let now = engine.clock.now();
            let oldest = pending
                .iter()
                .map(|a| (now - a.request.requested_at).num_seconds().max(0))
                .max()
                .unwrap_or(0);
            shared::metric!("ApprovalBacklog", pending.len(), "Count", "Kind" => "approval");
            shared::metric!("ApprovalOldestAge", oldest, "Seconds", "Kind" => "approval");
            tracing::info!(partitions, "timer tick");
            Ok(
                json!({"job": "tick", "timer_partitions": partitions, "audit_sealed_through": sealed}),
            )
        }
        "sweep" => {
            let report = engine.sweep().await?;
            // The dashboard overview's posture summary, rebuilt after the sweep. A failure
            // is logged, not retried: the sweep is done, and the next one rebuilds it.
            let posture = match engine.record_posture().await {
                Ok(p) => Some(p.generated_at),
                Err(e) => {
                    tracing::error!(error = %e, "the posture summary was not rebuilt; the next sweep tries again");
                    None
                }
            };
            Ok(json!({"job": "sweep", "report": report, "posture_summary_at": posture}))
        }
        "reviews" => {
            let launched = engine.launch_scheduled_campaign().await?;
            let launched = launched.filter(|s| !s.duplicate).map(|s| s.workflow_id);
            tracing::info!(?launched, "scheduled review");
            Ok(json!({"job": "reviews", "campaign_launched": launched}))
        }
        "discovery" => {
            let queued = engine.policy.discovery.enabled && engine.queue_discovery().await?;
            Ok(json!({"job": "discovery", "queued": queued}))
        }
        other => Err(EdgeError::NonRetryable(format!(
            "unknown scheduled job `{other}`; this release runs: {}",
            JOBS.join(", ")
        ))),
    }
}
