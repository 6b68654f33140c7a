//! The outbox port: where a step's write and the queue messages that run its commands meet.
//!
//! A step records its pending commands in the workflow instance; the messages that run them go
//! to the queue. Where the store and the queue share one database (SQLite) both are one
//! transaction, together with the acknowledgement of what the step consumed, so no crash can
//! fall between them. Where they cannot (DynamoDB and SQS), [`SeparateOutbox`] writes the store
//! first and the queue second, and the engine covers the gap (docs/adr/0020).

use super::queue::{OutMessage, Queue, QueueError};
use super::store::{Commit, StoreError, StoreWrite};
use async_trait::async_trait;
use std::sync::Arc;

/// One step to write, the messages it sends and the delivery it consumed (acked only if the
/// step is written).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub commit: Commit,
    pub messages: Vec<OutMessage>,
    pub ack: Option<String>,
}

impl Step {
    pub fn new(commit: Commit, messages: Vec<OutMessage>) -> Self {
        Self {
            commit,
            messages,
            ack: None,
        }
    }
}

/// What the worker (or a request) hands over after preparing its work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub steps: Vec<Step>,
    /// Messages that belong to no step (a command's result, a re-dispatch).
    pub messages: Vec<OutMessage>,
    /// Deliveries done without a step of their own (a command run, a redelivery).
    pub acks: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

#[async_trait]
pub trait Outbox: Send + Sync {
    /// Writes every step (each conditional on its version, succeeding or conflicting alone);
    /// for each step written sends its messages and acks its delivery; then sends `messages`
    /// and acks `acks`. Returns each step's result, in order.
    async fn write(&self, batch: Batch) -> Result<Vec<Result<(), StoreError>>, OutboxError>;

    /// True when a step and its messages are one write: nothing can be lost between them. When
    /// false, a crash between the store write and the send can leave a step's commands without
    /// a message, and the engine arms a dispatch timer to send them again.
    fn atomic(&self) -> bool;
}

/// The outbox over a store and a queue that cannot commit together: the store write, then the
/// sends and acks.
pub struct SeparateOutbox {
    pub store: Arc<dyn StoreWrite>,
    pub queue: Arc<dyn Queue>,
}

#[async_trait]
impl Outbox for SeparateOutbox {
    async fn write(&self, batch: Batch) -> Result<Vec<Result<(), StoreError>>, OutboxError> {
        let Batch {
            steps,
            mut messages,
            mut acks,
        } = batch;
        let mut results = Vec::with_capacity(steps.len());
        if !steps.is_empty() {
            let mut sends = Vec::with_capacity(steps.len());
            let mut commits = Vec::with_capacity(steps.len());
            for s in steps {
                commits.push(s.commit);
                sends.push((s.messages, s.ack));
            }
            let written = self.store.commit_batch(commits).await?;
            fail::fail_point!("outbox::after_commit");
            for (r, (msgs, ack)) in written.into_iter().zip(sends) {
                if r.is_ok() {
                    messages.extend(msgs);
                    acks.extend(ack);
                }
                results.push(r);
            }
        }
        self.queue.send_and_ack(messages, &acks).await?;
        Ok(results)
    }

    fn atomic(&self) -> bool {
        false
    }
}
