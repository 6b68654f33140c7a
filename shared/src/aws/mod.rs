//! The AWS adapters: DynamoDB store (single table), SQS FIFO queue, Secrets Manager vault, and
//! the wiring that builds them once per Lambda container. Compiled only with the `aws` feature.

pub mod dynamodb;
pub mod secrets_manager;
pub mod sqs;
pub mod stack;

use aws_config::{BehaviorVersion, SdkConfig};

/// Environment variable naming a local AWS endpoint (the moto server in tests).
pub const ENDPOINT_ENV: &str = "STEWARD_AWS_ENDPOINT";

/// Loads the SDK configuration the usual way (Lambda's role credentials and region). With an
/// endpoint (a local emulator), requests go there, with throwaway credentials when none are set.
pub async fn sdk_config(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        loader = loader.region(aws_config::Region::new("us-east-1"));
    }
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "static",
            ));
        }
    }
    loader.load().await
}

/// The text of an SDK error with its service cause (the SDK's `Display` says only "service error").
pub(crate) fn describe<E: std::error::Error>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
