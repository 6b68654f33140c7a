//! Steward's fuzz targets: one function per parser that reads input from outside (peers,
//! callers, the files an operator is handed), each taking arbitrary bytes. They are written
//! once and run twice: by cargo-fuzz with libFuzzer (`fuzz/fuzz_targets/<name>.rs`, nightly,
//! see docs/FUZZING.md) and, over the seed corpus in `fuzz/corpus/<name>/` and deterministic
//! mutations of it, by `cargo test -p steward-fuzz-targets` on the stable toolchain.
//!
//! A target never catches a panic: a parser that panics on some input is a bug. Where the
//! input passes a signature check, the target signs it with a fixed test key (see
//! [`support`]) so that the code after the check is reached too; where a result must hold
//! for every input (a correctly signed body verifies), the target asserts it.

mod api;
mod config;
mod okta;
mod people;
mod slack;
mod ssf;
pub mod support;
mod token;

pub use api::{api_body, api_query};
pub use config::{manifest_toml, policy_toml};
pub use okta::{okta_hook, okta_system_log};
pub use people::{jwks, person_claims, person_token};
pub use slack::{slack_interaction, slack_signature};
pub use ssf::{ssf_claims, ssf_set};
pub use token::{release_fixture, token_request};

/// A fuzz target: any bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every target by name; the name is its cargo-fuzz binary and its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("slack_interaction", slack_interaction),
    ("slack_signature", slack_signature),
    ("okta_hook", okta_hook),
    ("okta_system_log", okta_system_log),
    ("ssf_set", ssf_set),
    ("ssf_claims", ssf_claims),
    ("person_token", person_token),
    ("person_claims", person_claims),
    ("jwks", jwks),
    ("token_request", token_request),
    ("policy_toml", policy_toml),
    ("manifest_toml", manifest_toml),
    ("api_body", api_body),
    ("api_query", api_query),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
