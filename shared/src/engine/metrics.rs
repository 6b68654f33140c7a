//! What the engine measures, as `tracing` events on the target [`TARGET`]: each names a metric,
//! its value and its dimensions. The engine stays free of any metrics backend; on AWS the log
//! layer writes each as a CloudWatch Embedded Metric Format line (`crate::aws::metrics`), and
//! elsewhere they are ordinary log lines.

use crate::ports::outbox::Step;
use statemachines::Workflow;

pub const TARGET: &str = "steward::metrics";

/// Emits one metric: `name` (CloudWatch metric name), `value` in `unit`, and one dimension.
#[macro_export]
macro_rules! metric {
    ($name:expr, $value:expr, $unit:expr, $dim:expr => $dim_value:expr) => {
        ::tracing::info!(
            target: $crate::engine::metrics::TARGET,
            metric = $name,
            value = $value as f64,
            unit = $unit,
            dimension = $dim,
            dimension_value = %$dim_value,
        )
    };
}

/// What a written step is worth measuring, taken before the step goes to the outbox.
#[derive(Debug, Clone, Default)]
pub struct StepFacts {
    kind: String,
    started: bool,
    finished: bool,
    failed: bool,
    time_to_contain_ms: Option<i64>,
    approvals_requested: usize,
    approvals_closed: usize,
    approvals_expired: usize,
}

impl StepFacts {
    pub fn of(step: &Step) -> Self {
        let c = &step.commit;
        let kind = c.instance.kind.clone();
        let moved = c.history.from != c.history.to;
        let finished = moved && c.instance.terminal;
        let contained = moved
            && kind == statemachines::freeze::Freeze::KIND
            && c.history.to == "AwaitingDecision";
        use crate::ports::store::ApprovalChange;
        let closed = |expired: bool| {
            c.approvals
                .iter()
                .filter(|a| match a {
                    ApprovalChange::Close { outcome, .. } => {
                        !expired
                            || matches!(outcome, statemachines::ApprovalOutcome::Expired { .. })
                    }
                    _ => false,
                })
                .count()
        };
        Self {
            approvals_requested: c
                .approvals
                .iter()
                .filter(|a| matches!(a, ApprovalChange::Open(_)))
                .count(),
            approvals_closed: closed(false),
            approvals_expired: closed(true),
            started: c.expected_version == 0,
            finished,
            failed: finished && c.instance.state_name.contains("Fail"),
            time_to_contain_ms: contained
                .then(|| {
                    serde_json::from_value::<statemachines::freeze::Containment>(
                        c.instance.state["containment"].clone(),
                    )
                    .ok()
                    .and_then(|x| x.time_to_contain_ms())
                })
                .flatten(),
            kind,
        }
    }

    /// Emits the step's metrics (once it was written).
    pub fn emit(&self) {
        let kind = self.kind.as_str();
        if self.started {
            metric!("WorkflowsStarted", 1, "Count", "Kind" => kind);
        }
        if self.finished {
            metric!("WorkflowsFinished", 1, "Count", "Kind" => kind);
        }
        if self.failed {
            metric!("WorkflowsFailed", 1, "Count", "Kind" => kind);
        }
        if let Some(ms) = self.time_to_contain_ms {
            metric!("TimeToContain", ms, "Milliseconds", "Kind" => kind);
        }
        // The backlog is requested minus closed; an expired approval waited past its expiry.
        if self.approvals_requested > 0 {
            metric!("ApprovalsRequested", self.approvals_requested, "Count", "Kind" => kind);
        }
        if self.approvals_closed > 0 {
            metric!("ApprovalsClosed", self.approvals_closed, "Count", "Kind" => kind);
        }
        if self.approvals_expired > 0 {
            metric!("ApprovalsExpired", self.approvals_expired, "Count", "Kind" => kind);
        }
    }
}
