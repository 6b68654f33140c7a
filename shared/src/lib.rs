//! Steward's shared core: policy and manifests, the ports (small traits) every adapter
//! implements, the durable engine that drives the pure state machines, the audit trail, and the
//! embedded default adapters (SQLite store and queue, encrypted file vault, development identity
//! provider, people file, console approvals).

pub mod admin;
pub mod audit;
#[cfg(feature = "aws")]
pub mod aws;
pub mod credential;
pub mod embedded;
pub mod engine;
#[cfg(feature = "http")]
pub mod http;
pub mod idp;
pub mod inbound;
pub mod intake;
pub mod manifest;
pub mod policy;
pub mod ports;
pub mod posture;
pub mod rotation;
pub mod secret;
pub mod signal;
pub mod slack;

pub use engine::{Engine, EngineConfig, EngineError};
pub use secret::Secret;
