//! The workflow machines, one file each. A machine may use the vocabulary modules (agent,
//! approval, command, event, policy, receipt, review, workflow, ...) but never another machine:
//! what two machines share belongs in the vocabulary (`tests/transitions/imports.rs` checks this).

pub mod certificate_expiry;
pub mod certificate_rotation;
pub mod decommission;
pub mod discovery;
pub mod expiry;
pub mod freeze;
pub mod key_expiry;
pub mod key_rotation;
pub mod onboarding;
pub mod owner_loss;
pub mod review_campaign;
pub mod review_item;
pub mod rotation;
pub mod scope_change;

use crate::workflow::Machine;

/// Every machine, declared once: tests and tools walk this list instead of naming each machine.
pub const ALL: &[Machine] = &[
    Machine::of::<certificate_expiry::CertificateExpiry>(),
    Machine::of::<certificate_rotation::CertificateRotation>(),
    Machine::of::<decommission::Decommission>(),
    Machine::of::<discovery::ShadowAgent>(),
    Machine::of::<expiry::Expiry>(),
    Machine::of::<freeze::Freeze>(),
    Machine::of::<key_expiry::KeyExpiry>(),
    Machine::of::<key_rotation::KeyRotation>(),
    Machine::of::<onboarding::Onboarding>(),
    Machine::of::<owner_loss::OwnerLoss>(),
    Machine::of::<review_campaign::ReviewCampaign>(),
    Machine::of::<review_item::ReviewItemMachine>(),
    Machine::of::<rotation::Rotation>(),
    Machine::of::<scope_change::ScopeChange>(),
];
