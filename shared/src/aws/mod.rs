//! The AWS adapters: DynamoDB store (single table), SQS FIFO queue, and two vaults: Secrets
//! Manager, or values sealed with a KMS key in DynamoDB (`envelope_vault`).
//! `crate::wiring::aws` builds them once per Lambda container. Compiled only with the `aws`
//! feature.

pub mod dynamodb;
pub mod envelope_vault;
pub mod http;
pub mod metrics;
pub mod secrets_manager;
pub mod sqs;
pub mod xray;

use crate::engine::EngineError;
use aws_config::{BehaviorVersion, SdkConfig};

/// How a Lambda handler's failure is reported at the edge: retryable failures return an error
/// (Lambda or the caller tries again); non-retryable ones are answered (4xx, batch item
/// failure that ends in the dead-letter queue) and never retried as they are.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("temporary failure, retry: {0}")]
    Retryable(String),
    #[error("cannot be processed as sent: {0}")]
    NonRetryable(String),
}

impl From<EngineError> for EdgeError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Rejected(_) | EngineError::NotFound(_) | EngineError::Conflict(_) => {
                EdgeError::NonRetryable(e.to_string())
            }
            other => EdgeError::Retryable(other.to_string()),
        }
    }
}

/// Environment variable naming a local AWS endpoint (the moto server in tests).
pub const ENDPOINT_ENV: &str = "STEWARD_AWS_ENDPOINT";

/// Deadline of one SDK operation, retries included: a stuck AWS call fails the handler (and
/// the message is redelivered) instead of hanging until Lambda's own timeout.
pub const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Deadline of one attempt; the SDK retries a timed-out attempt within [`OPERATION_TIMEOUT`].
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);
/// Deadline for a TCP and TLS connection to an AWS endpoint.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The SDK configuration of a Lambda function: region and credentials from the environment
/// Lambda sets for the function's role (`AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), HTTPS over rustls with ring, and deadlines on
/// every call. With an endpoint (a local emulator), requests go there, with throwaway
/// credentials when none are set.
///
/// Not `aws_config::defaults()`: its provider chain (profiles, SSO, web identity through STS,
/// ECS, IMDS) serves hosts other than Lambda and costs each binary about half a megabyte.
pub async fn sdk_config(endpoint: Option<&str>) -> SdkConfig {
    use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
    use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
    use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    crate::tls::install_crypto_provider();
    // The SDK's default client would link aws-lc-rs beside the ring every other client uses.
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".to_string());
    let credentials = match endpoint {
        Some(_) if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() => {
            SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "static"))
        }
        _ => SharedCredentialsProvider::new(EnvironmentVariableCredentialsProvider::new()),
    };
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(credentials)
        .http_client(https)
        .timeout_config(timeouts);
    if let Some(url) = endpoint {
        config = config.endpoint_url(url);
    }
    config.build()
}

/// JSON log lines for CloudWatch Logs at the level `STEWARD_LOG` names (`error` … `trace`,
/// default `info`), with the request and workflow ids at the top level, and the engine's
/// metrics as Embedded Metric Format lines (`metrics`). Secrets never reach the log: they are
/// [`crate::Secret`]s, which do not print.
pub fn init_logging() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = std::env::var("STEWARD_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let not_metrics =
        tracing_subscriber::filter::filter_fn(|m| m.target() != crate::engine::metrics::TARGET);
    // CloudWatch stamps each line; the spans' fields (request and workflow ids) are top level.
    let logs = metrics::JsonLines
        .with_filter(level)
        .with_filter(not_metrics);
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(metrics::EmfLayer::from_env())
        .with(xray::XrayLayer::from_env())
        .try_init();
}

/// Reads a secret's current value (the Slack signing secret, the Okta hook secret) once, at
/// start-up. `arn_env` names the environment variable holding the secret's ARN.
pub async fn secret_from_env(
    sdk: &SdkConfig,
    arn_env: &'static str,
) -> Result<crate::Secret, crate::wiring::aws::StackError> {
    let arn = std::env::var(arn_env)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(crate::wiring::aws::StackError::Missing(arn_env))?;
    secret_value(sdk, arn_env, &arn).await
}

/// The current value of the secret `arn` (named by the environment variable `arn_env`). An
/// empty value is refused: a function that started with it would refuse every signature, or
/// send an empty token, and say so only on the first request.
pub async fn secret_value(
    sdk: &SdkConfig,
    arn_env: &'static str,
    arn: &str,
) -> Result<crate::Secret, crate::wiring::aws::StackError> {
    let out = aws_sdk_secretsmanager::Client::new(sdk)
        .get_secret_value()
        .secret_id(arn)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .map_err(|e| crate::wiring::aws::StackError::Unreachable {
            what: format!("secret {arn}"),
            message: describe(&e),
        })?;
    match out.secret_string() {
        Some(value) if !value.trim().is_empty() => Ok(crate::Secret::new(value)),
        _ => Err(crate::wiring::aws::StackError::Invalid {
            name: arn_env,
            message: format!(
                "secret {arn} has no value (or a binary one); put the value in its SecretString"
            ),
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_sdk_call_has_a_deadline_and_the_emulator_gets_throwaway_credentials() {
        let config = sdk_config(Some("http://127.0.0.1:9")).await;
        let timeouts = config.timeout_config().expect("timeouts are set");
        assert_eq!(timeouts.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(timeouts.operation_timeout(), Some(OPERATION_TIMEOUT));
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:9"));
        assert!(
            config.http_client().is_some(),
            "the ring-based HTTPS client"
        );
        assert!(config.region().is_some());
    }
}
