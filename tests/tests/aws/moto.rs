//! The local AWS: the moto server `tests/run` starts, and fresh resources on it per test.

use aws_config::SdkConfig;
use shared::aws::dynamodb::DynamoStore;
use shared::aws::sqs::SqsQueue;
use std::time::Duration;

/// The moto endpoint; a clear failure when the server was not started.
pub fn endpoint() -> String {
    std::env::var(shared::aws::ENDPOINT_ENV).unwrap_or_else(|_| {
        panic!(
            "{} is not set: these tests need the moto server. Run `tests/run`, which installs \
             moto into target/aws-venv and starts it on 127.0.0.1 (or start `moto_server -H \
             127.0.0.1 -p 5055` and export {}=http://127.0.0.1:5055)",
            shared::aws::ENDPOINT_ENV,
            shared::aws::ENDPOINT_ENV
        )
    })
}

pub async fn sdk() -> SdkConfig {
    shared::aws::sdk_config(Some(&endpoint())).await
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 6]>()))
}

/// Runs async set-up from a synchronous opener (tests run on the multi-thread runtime).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

pub async fn fresh_table(sdk: &SdkConfig) -> String {
    let name = unique("steward");
    DynamoStore::create_table(&aws_sdk_dynamodb::Client::new(sdk), &name)
        .await
        .expect("create table on moto");
    name
}

/// A fresh FIFO queue (and its dead-letter queue) with `max_receives` and `visibility`.
pub async fn fresh_queue(sdk: &SdkConfig, max_receives: u32, visibility: Duration) -> SqsQueue {
    let client = aws_sdk_sqs::Client::new(sdk);
    let url = SqsQueue::create(&client, &unique("steward"), max_receives, visibility)
        .await
        .expect("create queue on moto");
    SqsQueue::open(client, url).await.expect("open queue")
}
