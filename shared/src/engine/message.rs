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
    /// An identity-provider event said a client was created: the worker, which holds the
    /// identity provider, looks whether it is a shadow agent. (The functions that receive IdP
    /// events have none; they only enqueue this.)
    ClientCreated {
        /// The FIFO group: `discovery-<client id>`.
        group: String,
        client_id: String,
        creator: Option<String>,
        event_id: String,
    },
    /// Run a discovery sweep (every IdP client without an agent becomes a shadow agent), in
    /// the worker, which holds the identity provider. `run` names the sweep that asked (its
    /// hour), so a repeated request within it is one message.
    Discover { run: String },
    /// Fire the due timers of one timer partition (`round`: the tick's minute and how many
    /// rounds before this one the partition needed). The tick sends one per partition, so
    /// workers fire partitions in parallel; a round that hit its limit queues the next.
    FireTimers {
        /// `timers-<partition>`.
        group: String,
        partition: u32,
        round: String,
    },
}

/// The FIFO group of discovery sweeps: one at a time.
pub const DISCOVERY_GROUP: &str = "discovery-sweep";
/// The FIFO group prefix of timer partitions (one group each, so partitions fire in parallel
/// and one partition's rounds in order).
pub const TIMERS_GROUP: &str = "timers";

impl Message {
    /// Fire the due timers of `partition`, round `round`.
    pub fn fire_timers(partition: u32, round: String) -> Self {
        Message::FireTimers {
            group: format!("{TIMERS_GROUP}-{partition}"),
            partition,
            round,
        }
    }

    pub fn workflow_id(&self) -> &str {
        match self {
            Message::Event { workflow_id, .. }
            | Message::Run { workflow_id, .. }
            | Message::Completed { workflow_id, .. } => workflow_id,
            Message::ClientCreated { group, .. } => group,
            Message::Discover { .. } => DISCOVERY_GROUP,
            Message::FireTimers { group, .. } => group,
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
            Message::ClientCreated { event_id, .. } => format!("client-created:{event_id}"),
            Message::Discover { run } => format!("discover:{run}"),
            Message::FireTimers {
                partition, round, ..
            } => format!("timers:{partition}:{round}"),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(attempt: u32, waits: u32) -> Message {
        Message::Run {
            workflow_id: "wf".into(),
            key: "wf/1/0".into(),
            attempt,
            waits,
        }
    }

    /// A command put back to wait out a rate limit replaces the message being processed: with
    /// that message's deduplication id, the queue would drop it and the command would be lost.
    #[test]
    fn each_wait_and_each_attempt_is_a_new_message() {
        let ids = [run(0, 0), run(0, 1), run(0, 2), run(1, 0), run(1, 1)].map(|m| m.dedupe_id());
        let mut unique = ids.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        // The first send keeps its id: a re-dispatch of the same command is recognised.
        assert_eq!(run(0, 0).dedupe_id(), "run:wf/1/0#0");
    }

    #[test]
    fn a_message_without_waits_reads_as_before() {
        let old = r#"{"msg":"run","workflow_id":"wf","key":"wf/1/0","attempt":2}"#;
        assert_eq!(serde_json::from_str::<Message>(old).unwrap(), run(2, 0));
        assert_eq!(serde_json::to_string(&run(2, 0)).unwrap(), old);
    }
}
