//! The TOML files an operator is handed and loads: the policy (shared/src/policy_file.rs) and
//! agent manifests (shared/src/manifest.rs, `steward validate` and `steward agents request`).

use crate::support::keep;
use shared::{manifest, policy_file};
use statemachines::Policy;
use std::sync::OnceLock;

/// The repository's example policy, which the manifest target checks against.
pub(crate) fn example_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        policy_file::parse(
            include_str!("../../../policy.example.toml"),
            "policy.example.toml",
        )
        .expect("the example policy is valid")
    })
}

/// The repository's example manifest, which the policy target checks with the policy it read.
fn example_request() -> &'static statemachines::AgentRequest {
    static REQUEST: OnceLock<statemachines::AgentRequest> = OnceLock::new();
    REQUEST.get_or_init(|| {
        manifest::parse(
            include_str!("../../../docs/examples/agent.toml"),
            "agent.toml",
        )
        .expect("the example manifest is valid")
    })
}

/// Input: a policy file. A policy that parses then judges the example agent request.
pub fn policy_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match policy_file::parse(text, "fuzz.toml") {
        Ok(policy) => {
            keep(example_request().check(&policy, crate::support::today()));
        }
        Err(e) => {
            keep(e.to_string());
        }
    }
}

/// Input: an agent manifest. A manifest that parses is judged by the example policy.
pub fn manifest_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match manifest::parse(text, "fuzz.toml") {
        Ok(request) => {
            keep(request.check(example_policy(), crate::support::today()));
        }
        Err(e) => {
            keep(e.to_string());
        }
    }
}
