//! The `scheduler` function: EventBridge schedules. Each schedule names its job in the event's
//! `detail` (`{"job": "tick"}`); the template's schedules send exactly that.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::Engine;
use shared::aws::EdgeError;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Job {
    pub job: String,
}

/// Jobs this release runs. The timer tick turns due timers into `TimerFired` events; the
/// sweep starts the rotations of secrets past their age and watches time-bound agents.
pub const JOBS: &[&str] = &["tick", "sweep"];

pub async fn handle(engine: &Engine, event: EventBridgeEvent<Job>) -> Result<Value, EdgeError> {
    match event.detail.job.as_str() {
        "tick" => {
            let fired = engine.tick().await?;
            tracing::info!(fired, "timer tick");
            Ok(json!({"job": "tick", "timers_fired": fired}))
        }
        "sweep" => {
            let report = engine.sweep().await?;
            Ok(json!({"job": "sweep", "report": report}))
        }
        other => Err(EdgeError::NonRetryable(format!(
            "unknown scheduled job `{other}`; this release runs: {}",
            JOBS.join(", ")
        ))),
    }
}
