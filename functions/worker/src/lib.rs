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
    for record in event.records {
        let id = record.message_id.unwrap_or_default();
        let Some(receipt) = record.receipt_handle else {
            response.add_failure(id);
            continue;
        };
        let not_before = record
            .message_attributes
            .get(NOT_BEFORE)
            .and_then(|a| a.string_value.as_deref())
            .and_then(|v| v.parse::<i64>().ok());
        // A retry whose backoff has not passed: hide it until then; it is not a failure.
        if let Some(wait) = hold_for(not_before) {
            queue
                .nack(&receipt, wait)
                .await
                .map_err(|e| EdgeError::Retryable(e.to_string()))?;
            response.add_failure(id);
            continue;
        }
        let count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        ids.insert(receipt.clone(), id);
        deliveries.push(Delivery {
            receipt,
            body: record.body.unwrap_or_default(),
            receive_count: effective_receive_count(count, not_before.is_some()),
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
