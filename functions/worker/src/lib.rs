//! The `worker` function: SQS FIFO event source → the engine. Applies events and runs commands
//! in one group commit per batch, and reports partial batch failures, so one bad message is
//! retried (and finally dead-lettered by the queue's redrive policy) without redelivering the
//! rest of the batch.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::Engine;
use shared::aws::EdgeError;
use shared::aws::sqs::{NOT_BEFORE, effective_receive_count, hold_for};
use shared::ports::Queue;
use shared::ports::queue::Delivery;
use std::collections::HashMap;

/// Handles one batch. An `Err` (the store or queue is unreachable) fails the whole batch, which
/// Lambda retries; anything wrong with single messages is reported per message.
pub async fn handle(
    engine: &Engine,
    queue: &dyn Queue,
    event: SqsEvent,
) -> Result<SqsBatchResponse, EdgeError> {
    let mut response = SqsBatchResponse::default();
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut deliveries = Vec::with_capacity(event.records.len());
    // Groups whose earlier message is not due yet: their later messages wait with it.
    let mut held: HashMap<String, std::time::Duration> = HashMap::new();
    for record in event.records {
        let id = record.message_id.unwrap_or_default();
        let Some(receipt) = record.receipt_handle else {
            response.add_failure(id);
            continue;
        };
        let attribute = |name: &str| {
            record
                .attributes
                .get(name)
                .and_then(|v| v.parse::<i64>().ok())
        };
        let group = record
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_default();
        let not_before = record
            .message_attributes
            .get(NOT_BEFORE)
            .and_then(|a| a.string_value.as_deref())
            .and_then(|v| v.parse::<i64>().ok());
        // A retry whose backoff has not passed: hide it (and what follows it in its group)
        // until then; reported as not done, it comes back when due.
        if let Some(wait) = hold_for(not_before).or_else(|| held.get(&group).copied()) {
            queue
                .nack(&receipt, wait)
                .await
                .map_err(|e| EdgeError::Retryable(e.to_string()))?;
            held.insert(group, wait);
            response.add_failure(id);
            continue;
        }
        let count = attribute("ApproximateReceiveCount").unwrap_or(1) as u32;
        let first = attribute("ApproximateFirstReceiveTimestamp");
        ids.insert(receipt.clone(), id);
        deliveries.push(Delivery {
            receipt,
            body: record.body.unwrap_or_default(),
            receive_count: effective_receive_count(count, first, not_before),
        });
    }
    let failed = engine.work(&deliveries).await?;
    for receipt in failed {
        if let Some(id) = ids.remove(&receipt) {
            response.add_failure(id);
        }
    }
    Ok(response)
}
