//! Steward on AWS, against the moto server that `tests/run` starts on 127.0.0.1: the port
//! conformance suites on the DynamoDB, SQS and Secrets Manager adapters (the same code the
//! embedded adapters pass), each Lambda handler with real event payloads, every route of the
//! HTTP surface on the local server and through the `api` function's handler (same status, same
//! body shape), and the SAM template's IAM rules.

mod adapters;
mod config;
#[path = "../../../shared/tests/conformance/mod.rs"]
mod conformance;
#[path = "../support/fake_slack.rs"]
mod fake_slack;
mod functions;
mod identity_provider;
mod load;
mod moto;
mod parity;
mod scale;
#[path = "../support/mod.rs"]
mod support;
mod workflows;

/// The scheduler's seal key in the tests (the function derives it from its Secrets Manager
/// secret in the same way).
pub fn sealer() -> shared::audit::seal::Sealer {
    shared::audit::seal::Sealer::from_secret(&shared::Secret::new("test seal secret ".repeat(3)))
        .expect("a long enough secret")
}
