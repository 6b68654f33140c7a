//! The `worker` function: SQS FIFO event source → the engine. Applies events and runs commands
//! in one group commit per batch, and reports partial batch failures, so one bad message is
//! retried (and finally dead-lettered by the queue's redrive policy) without redelivering the
//! rest of the batch.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::Engine;
use shared::aws::EdgeError;
use shared::aws::sqs::{Admission, Admit, NOT_BEFORE};
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
    let mut admission = Admission::default();
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
        let admit = admission.admit(
            record
                .attributes
                .get("MessageGroupId")
                .map(String::as_str)
                .unwrap_or_default(),
            record
                .message_attributes
                .get(NOT_BEFORE)
                .and_then(|a| a.string_value.as_deref())
                .and_then(|v| v.parse::<i64>().ok()),
            attribute("ApproximateReceiveCount").unwrap_or(1) as u32,
            attribute("ApproximateFirstReceiveTimestamp"),
        );
        match admit {
            // A retry whose backoff has not passed (or one queued behind it): hidden until
            // then and reported as not done, it comes back when due.
            Admit::Hold(wait) => {
                queue
                    .nack(&receipt, wait)
                    .await
                    .map_err(|e| EdgeError::Retryable(e.to_string()))?;
                response.add_failure(id);
            }
            Admit::Process { receive_count } => {
                ids.insert(receipt.clone(), id);
                deliveries.push(Delivery {
                    receipt,
                    body: record.body.unwrap_or_default(),
                    receive_count,
                });
            }
        }
    }
    let failed = engine.work(&deliveries).await?;
    for receipt in failed {
        if let Some(id) = ids.remove(&receipt) {
            response.add_failure(id);
        }
    }
    Ok(response)
}
