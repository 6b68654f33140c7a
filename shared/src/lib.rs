//! Steward's shared core: policy and manifests, the ports (small traits) every adapter
//! implements, the durable engine that drives the pure state machines, the audit trail, the
//! adapters (the embedded default's SQLite store and queue, encrypted file vault, development
//! identity provider and console approvals with the `embedded` feature; DynamoDB, SQS and
//! Secrets Manager with `aws`), the composition roots that wire them ([`wiring`]), and the HTTP
//! surface (`http`).

pub mod admin;
pub mod agent_key;
pub mod audit;
#[cfg(feature = "aws")]
pub mod aws;
pub mod ca;
pub mod credential;
#[cfg(feature = "http")]
pub mod dashboard;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod engine;
#[cfg(feature = "http")]
pub mod http;
pub mod idp;
pub mod inbound;
pub mod intake;
pub mod jwks;
pub mod manifest;
pub mod people_file;
pub mod personal_token;
pub mod policy_file;
pub mod ports;
pub mod posture;
pub mod secret;
pub mod secret_rotation;
pub mod sign_in;
pub mod signal;
pub mod slack;
pub mod spreadsheet;
pub mod tls;
pub mod wiring;

pub use engine::{Engine, EngineConfig, EngineError};
pub use secret::Secret;
