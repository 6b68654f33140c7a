//! The workflow machines, one file each. A machine may use the vocabulary modules (agent,
//! approval, command, event, policy, receipt, review, workflow, ...) but never another machine:
//! what two machines share belongs in the vocabulary (`tests/imports.rs` checks this).

pub mod decommission;
pub mod discovery;
pub mod expiry;
pub mod freeze;
pub mod onboarding;
pub mod owner_loss;
pub mod review_campaign;
pub mod review_item;
pub mod rotation;
pub mod scope_change;
