//! What travels on the queue. Every message names its workflow (the FIFO group) and carries a
//! deterministic id, so a redelivery is recognised.

use serde::{Deserialize, Serialize};
use statemachines::Event;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Message {
    /// An event for a workflow (a decision, a timer, a cancel).
    Event {
        workflow_id: String,
        event_id: String,
        event: Event,
    },
    /// Run the pending command `key` of a workflow (attempt counts retries).
    Run {
        workflow_id: String,
        key: String,
        attempt: u32,
        /// Times the command was put back because a rate limit said to wait (no attempt used):
        /// each wait is a new message, or the queue would drop it as a duplicate.
        #[serde(default, skip_serializing_if = "is_zero")]
        waits: u32,
    },
    /// Command `key` finished; `event` is its result for the machine, if it has one.
    Completed {
        workflow_id: String,
        key: String,
        event: Option<Event>,
    },
}

impl Message {
    pub fn workflow_id(&self) -> &str {
        match self {
            Message::Event { workflow_id, .. }
            | Message::Run { workflow_id, .. }
            | Message::Completed { workflow_id, .. } => workflow_id,
        }
    }

    /// The queue deduplication id.
    pub fn dedupe_id(&self) -> String {
        match self {
            // Event ids are unique per workflow only (every item of a campaign has the same
            // deadline timer): the workflow is part of the id.
            Message::Event {
                workflow_id,
                event_id,
                ..
            } => format!("ev:{workflow_id}:{event_id}"),
            Message::Run {
                key,
                attempt,
                waits: 0,
                ..
            } => format!("run:{key}#{attempt}"),
            Message::Run {
                key,
                attempt,
                waits,
                ..
            } => format!("run:{key}#{attempt}.{waits}"),
            Message::Completed { key, .. } => format!("done:{key}"),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
