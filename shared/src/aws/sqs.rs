//! The queue on an SQS FIFO queue: `MessageGroupId` = workflow id (one workflow's messages apply
//! in order), `MessageDeduplicationId` = event id, and a dead-letter queue through the redrive
//! policy.
//!
//! FIFO queues have no per-message delay, so a delayed message (a command retry with backoff)
//! carries a `not_before` attribute: a receiver that gets it early hides it again until then
//! (which keeps its group waiting, as a FIFO retry should) and does not count that receive.

use crate::aws::describe;
use crate::ports::queue::{DeadLetter, Delivery, OutMessage, Queue, QueueError};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use chrono::{TimeZone, Utc};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Message attribute: epoch milliseconds before which the message must not be processed.
pub const NOT_BEFORE: &str = "not_before";
/// Message attribute: the group as given (SQS group ids allow only some characters).
pub const GROUP: &str = "group";
/// SQS caps visibility timeouts at 12 hours.
const MAX_VISIBILITY_SECS: u64 = 43_200;

pub struct SqsQueue {
    client: Client,
    url: String,
    dead_letter_url: String,
    max_receives: u32,
}

fn err(e: impl std::error::Error) -> QueueError {
    QueueError(describe(&e))
}

/// SQS ids (group, deduplication) are at most 128 characters of letters, digits and
/// punctuation; anything else is replaced by its SHA-256.
pub fn sqs_id(raw: &str) -> String {
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation());
    if ok {
        raw.to_string()
    } else {
        hex::encode(Sha256::digest(raw.as_bytes()))
    }
}

/// Whole seconds, rounded up (SQS counts visibility in seconds).
fn secs(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.min(MAX_VISIBILITY_SECS) as i32
}

/// When a received message may be processed: `None` now, or how long to hide it first.
fn hold_for(not_before_ms: Option<i64>) -> Option<Duration> {
    let due = not_before_ms?;
    let now = Utc::now().timestamp_millis();
    (due > now).then(|| Duration::from_millis((due - now) as u64))
}

/// The receive count a handler should see: SQS's count, less the early receive of a delayed
/// message, if its first receive came before it was due (then it was hidden, not processed).
fn effective_receive_count(
    approximate: u32,
    first_receive_ms: Option<i64>,
    not_before_ms: Option<i64>,
) -> u32 {
    let early = matches!((first_receive_ms, not_before_ms), (Some(f), Some(nb)) if f < nb);
    if early {
        approximate.saturating_sub(1).max(1)
    } else {
        approximate.max(1)
    }
}

/// What to do with one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Hide it this long (`nack`): it is not due, or an earlier message of its group is not.
    Hold(Duration),
    /// Process it; this is its receive count.
    Process { receive_count: u32 },
}

/// Decides, message by message in the order a batch was received, which messages are
/// processed now. Used by the adapter's `receive` and by the `worker` function, which gets
/// its batches from the Lambda event source instead.
#[derive(Debug, Default)]
pub struct Admission {
    /// Groups whose earlier message is not due yet: their later messages wait with it.
    held: std::collections::HashMap<String, Duration>,
}

impl Admission {
    pub fn admit(
        &mut self,
        group: &str,
        not_before_ms: Option<i64>,
        approximate_receive_count: u32,
        first_receive_ms: Option<i64>,
    ) -> Admit {
        if let Some(wait) = hold_for(not_before_ms).or_else(|| self.held.get(group).copied()) {
            self.held.insert(group.to_string(), wait);
            return Admit::Hold(wait);
        }
        Admit::Process {
            receive_count: effective_receive_count(
                approximate_receive_count,
                first_receive_ms,
                not_before_ms,
            ),
        }
    }
}

impl SqsQueue {
    /// The queue at `url`; its dead-letter queue and max receive count come from its redrive
    /// policy.
    pub async fn open(client: Client, url: impl Into<String>) -> Result<Self, QueueError> {
        let url = url.into();
        let attrs = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(err)?;
        let policy = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .ok_or_else(|| {
                QueueError(format!(
                    "queue {url} has no redrive policy; give it a dead-letter queue"
                ))
            })?;
        let policy: serde_json::Value = serde_json::from_str(policy)
            .map_err(|e| QueueError(format!("redrive policy of {url} is unreadable: {e}")))?;
        let max_receives = match &policy["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| QueueError(format!("redrive policy of {url} has no maxReceiveCount")))?
            as u32;
        let dlq_arn = policy["deadLetterTargetArn"].as_str().ok_or_else(|| {
            QueueError(format!(
                "redrive policy of {url} has no deadLetterTargetArn"
            ))
        })?;
        let dlq_name = dlq_arn.rsplit(':').next().unwrap_or_default();
        let dead_letter_url = client
            .get_queue_url()
            .queue_name(dlq_name)
            .send()
            .await
            .map_err(err)?
            .queue_url
            .ok_or_else(|| QueueError(format!("dead-letter queue {dlq_name} has no URL")))?;
        Ok(Self {
            client,
            url,
            dead_letter_url,
            max_receives,
        })
    }

    /// Creates a FIFO queue `name` (must end in `.fifo`) with its FIFO dead-letter queue, as
    /// infra/template.yaml declares them. For tests and local set-ups.
    pub async fn create(
        client: &Client,
        name: &str,
        max_receives: u32,
        visibility: Duration,
    ) -> Result<String, QueueError> {
        let base = name.strip_suffix(".fifo").unwrap_or(name);
        let dlq_url = client
            .create_queue()
            .queue_name(format!("{base}-dlq.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
            .send()
            .await
            .map_err(err)?
            .queue_url
            .unwrap_or_default();
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(err)?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .unwrap_or_default();
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": max_receives,
        });
        client
            .create_queue()
            .queue_name(format!("{base}.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                secs(visibility).to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .map_err(err)?
            .queue_url
            .ok_or_else(|| QueueError(format!("queue {name} was created without a URL")))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dead_letter_url(&self) -> &str {
        &self.dead_letter_url
    }

    /// The messages `url` holds, waiting, in flight or delayed, from its attributes (nothing
    /// is received).
    async fn approximate_count(&self, url: &str) -> Result<usize, QueueError> {
        let attrs = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(err)?;
        Ok(attrs
            .attributes()
            .map(|a| {
                a.values()
                    .filter_map(|v| v.parse::<usize>().ok())
                    .sum::<usize>()
            })
            .unwrap_or(0))
    }

    async fn receive_from(
        &self,
        url: &str,
        max: usize,
        visibility: i32,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, QueueError> {
        Ok(self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(visibility)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(err)?
            .messages
            .unwrap_or_default())
    }
}

fn attribute<'a>(m: &'a aws_sdk_sqs::types::Message, name: &str) -> Option<&'a str> {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
}

fn system(m: &aws_sdk_sqs::types::Message, name: MessageSystemAttributeName) -> Option<&str> {
    m.attributes()
        .and_then(|a| a.get(&name))
        .map(String::as_str)
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError> {
        let now = Utc::now().timestamp_millis();
        for chunk in messages.chunks(10) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, m) in chunk.iter().enumerate() {
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .message_group_id(sqs_id(&m.group))
                    .message_deduplication_id(sqs_id(&m.dedupe_id))
                    .message_attributes(
                        GROUP,
                        MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(&m.group)
                            .build()
                            .map_err(err)?,
                    );
                if !m.delay.is_zero() {
                    let due = now + m.delay.as_millis() as i64;
                    e = e.message_attributes(
                        NOT_BEFORE,
                        MessageAttributeValue::builder()
                            .data_type("Number")
                            .string_value(due.to_string())
                            .build()
                            .map_err(err)?,
                    );
                }
                entries.push(e.build().map_err(err)?);
            }
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(err)?;
            if let Some(f) = out.failed().first() {
                return Err(QueueError(format!(
                    "SQS refused a message: {} {}",
                    f.code(),
                    f.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        let messages = self.receive_from(&self.url, max, secs(visibility)).await?;
        let mut out = Vec::with_capacity(messages.len());
        let mut admission = Admission::default();
        for m in messages {
            let receipt = m.receipt_handle().unwrap_or_default().to_string();
            let number = |name| system(&m, name).and_then(|v| v.parse::<i64>().ok());
            let admit = admission.admit(
                system(&m, MessageSystemAttributeName::MessageGroupId).unwrap_or_default(),
                attribute(&m, NOT_BEFORE).and_then(|v| v.parse::<i64>().ok()),
                number(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or(1) as u32,
                number(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp),
            );
            match admit {
                Admit::Hold(wait) => self.nack(&receipt, wait).await?,
                Admit::Process { receive_count } => out.push(Delivery {
                    receipt,
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count,
                }),
            }
        }
        Ok(out)
    }

    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError> {
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .map_err(err)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(err)?;
            // A stale receipt (the message was received again since) deletes nothing; the new
            // receiver will finish it.
            for f in out.failed() {
                tracing::warn!(code = f.code(), "SQS did not delete a message");
            }
        }
        Ok(())
    }

    async fn nack(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(delay))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Peeks at the dead-letter queue (receives with a zero visibility timeout, so the messages
    /// stay there for an operator to inspect or redrive).
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut out: Vec<DeadLetter> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while out.len() < limit {
            let batch = self
                .receive_from(&self.dead_letter_url, limit - out.len(), 0)
                .await?;
            let mut new = 0;
            for m in batch {
                if !seen.insert(m.message_id().unwrap_or_default().to_string()) {
                    continue;
                }
                new += 1;
                let sent = system(&m, MessageSystemAttributeName::SentTimestamp)
                    .and_then(|v| v.parse::<i64>().ok())
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                    .unwrap_or_else(Utc::now);
                out.push(DeadLetter {
                    body: m.body().unwrap_or_default().to_string(),
                    group: attribute(&m, GROUP)
                        .or_else(|| system(&m, MessageSystemAttributeName::MessageGroupId))
                        .unwrap_or_default()
                        .to_string(),
                    // SQS moved it after exactly this many receives (the redrive policy).
                    receive_count: self.max_receives,
                    dead_at: sent,
                });
            }
            if new == 0 {
                break;
            }
        }
        Ok(out)
    }

    async fn dead_letter_count(&self) -> Result<usize, QueueError> {
        self.approximate_count(&self.dead_letter_url).await
    }

    async fn depth(&self) -> Result<usize, QueueError> {
        self.approximate_count(&self.url).await
    }

    fn max_receives(&self) -> u32 {
        self.max_receives
    }
}
