//! The real `steward serve` driven over HTTP as its users and peers drive it: one test binary,
//! one module per area, so a full `cargo test` links it once.

#[path = "../support/fake_slack.rs"]
mod fake_slack;
#[path = "../support/mod.rs"]
mod support;

mod anomaly;
mod audit_seal;
mod campaigns;
mod certificates;
mod certificates_oidc;
mod cli;
mod cli_output;
mod concurrent_decisions;
mod dashboard;
mod dashboard_browser;
mod dev_sign_in;
mod discovery;
mod durability;
mod key_credentials;
mod key_credentials_oidc;
mod okta_intake;
mod onboarding_http;
mod refusals_http;
mod report;
mod roles;
mod rotation;
mod sign_in;
mod slack;
mod token_endpoint;
