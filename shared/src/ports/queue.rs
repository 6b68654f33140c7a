//! The queue port, with SQS FIFO semantics: per-group order, deduplication ids, visibility
//! timeouts, and redrive to a dead-letter queue after too many receives.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// Messages of one group are delivered in order, one in flight at a time (the workflow id).
    pub group: String,
    /// A second message with the same id within the dedupe window is dropped.
    pub dedupe_id: String,
    pub body: String,
    pub delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Handle to ack or nack this receive.
    pub receipt: String,
    pub body: String,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub body: String,
    pub group: String,
    pub receive_count: u32,
    pub dead_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
#[error("queue failed: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError>;
    /// Receives up to `max` visible messages and hides them for `visibility`. Messages received
    /// more than the queue's max receive count move to the dead-letter queue instead.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError>;
    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError>;
    /// Sends `messages`, then acks `receipts`: the bookkeeping after a batch was written to a
    /// store that cannot share a transaction with the queue ([`super::outbox::SeparateOutbox`]).
    /// Sending first means a crash in between causes a redelivery, never a lost message.
    async fn send_and_ack(
        &self,
        messages: Vec<OutMessage>,
        receipts: &[String],
    ) -> Result<(), QueueError> {
        self.send(messages).await?;
        fail::fail_point!("outbox::after_send");
        self.ack(receipts).await
    }
    /// Makes a received message visible again after `delay` (retry with backoff). Like SQS
    /// FIFO, its group stays blocked until then.
    async fn nack(&self, receipt: &str, delay: Duration) -> Result<(), QueueError>;
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// How many messages the dead-letter queue holds, counted without reading them (SQS's
    /// approximate counts).
    async fn dead_letter_count(&self) -> Result<usize, QueueError>;
    /// Messages waiting or in flight (not dead).
    async fn depth(&self) -> Result<usize, QueueError>;
    /// Receives after which a message moves to the dead-letter queue (SQS maxReceiveCount).
    fn max_receives(&self) -> u32;
}
