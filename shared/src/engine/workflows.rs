//! Routes stored instances (kind + JSON state) to their typed machines.

use serde_json::Value;
use statemachines::certificate_expiry::{CertificateExpiry, CertificateExpiryInput};
use statemachines::certificate_rotation::{CertificateRotation, CertificateRotationInput};
use statemachines::decommission::{Decommission, DecommissionInput};
use statemachines::discovery::{ShadowAgent, ShadowInput};
use statemachines::expiry::{Expiry, ExpiryInput};
use statemachines::freeze::{Freeze, FreezeInput};
use statemachines::key_expiry::{KeyExpiry, KeyExpiryInput};
use statemachines::key_rotation::{KeyRotation, KeyRotationInput};
use statemachines::onboarding::{Onboarding, OnboardingInput};
use statemachines::owner_loss::{OwnerLoss, OwnerLossInput};
use statemachines::review_campaign::{CampaignInput, ReviewCampaign};
use statemachines::review_item::{ReviewItemInput, ReviewItemMachine};
use statemachines::rotation::{Rotation, RotationInput};
use statemachines::scope_change::{ScopeChange, ScopeChangeInput};
use statemachines::workflow::{self, Workflow};
use statemachines::{Command, Ctx, Event, Rejected};

/// The result of a step, type-erased for storage.
#[derive(Clone)]
pub struct Applied {
    pub state: Value,
    pub state_name: &'static str,
    pub terminal: bool,
    pub commands: Vec<Command>,
}

pub enum ApplyError {
    Rejected(Rejected),
    /// The stored state does not deserialize: a bug or a schema change, never bad input.
    Corrupt(String),
}

pub enum StartInput {
    Onboarding(OnboardingInput),
    ScopeChange(ScopeChangeInput),
    OwnerLoss(OwnerLossInput),
    Rotation(RotationInput),
    KeyRotation(KeyRotationInput),
    CertificateRotation(CertificateRotationInput),
    KeyExpiry(KeyExpiryInput),
    CertificateExpiry(CertificateExpiryInput),
    Decommission(DecommissionInput),
    Expiry(ExpiryInput),
    ReviewCampaign(CampaignInput),
    ReviewItem(ReviewItemInput),
    Freeze(FreezeInput),
    ShadowAgent(ShadowInput),
}

pub fn start(input: StartInput, ctx: &Ctx) -> Result<Applied, Rejected> {
    match input {
        StartInput::Onboarding(i) => erase::<Onboarding>(workflow::start::<Onboarding>(i, ctx)?),
        StartInput::ScopeChange(i) => erase::<ScopeChange>(workflow::start::<ScopeChange>(i, ctx)?),
        StartInput::OwnerLoss(i) => erase::<OwnerLoss>(workflow::start::<OwnerLoss>(i, ctx)?),
        StartInput::Rotation(i) => erase::<Rotation>(workflow::start::<Rotation>(i, ctx)?),
        StartInput::KeyExpiry(i) => erase::<KeyExpiry>(workflow::start::<KeyExpiry>(i, ctx)?),
        StartInput::CertificateExpiry(i) => {
            erase::<CertificateExpiry>(workflow::start::<CertificateExpiry>(i, ctx)?)
        }
        StartInput::KeyRotation(i) => erase::<KeyRotation>(workflow::start::<KeyRotation>(i, ctx)?),
        StartInput::CertificateRotation(i) => {
            erase::<CertificateRotation>(workflow::start::<CertificateRotation>(i, ctx)?)
        }
        StartInput::Decommission(i) => {
            erase::<Decommission>(workflow::start::<Decommission>(i, ctx)?)
        }
        StartInput::Expiry(i) => erase::<Expiry>(workflow::start::<Expiry>(i, ctx)?),
        StartInput::ReviewCampaign(i) => {
            erase::<ReviewCampaign>(workflow::start::<ReviewCampaign>(i, ctx)?)
        }
        StartInput::ReviewItem(i) => {
            erase::<ReviewItemMachine>(workflow::start::<ReviewItemMachine>(i, ctx)?)
        }
        StartInput::Freeze(i) => erase::<Freeze>(workflow::start::<Freeze>(i, ctx)?),
        StartInput::ShadowAgent(i) => erase::<ShadowAgent>(workflow::start::<ShadowAgent>(i, ctx)?),
    }
    .map_err(|e| Rejected::new("state", e))
}

pub fn apply(kind: &str, state: &Value, event: Event, ctx: &Ctx) -> Result<Applied, ApplyError> {
    match kind {
        Onboarding::KIND => apply_typed::<Onboarding>(state, event, ctx),
        ScopeChange::KIND => apply_typed::<ScopeChange>(state, event, ctx),
        OwnerLoss::KIND => apply_typed::<OwnerLoss>(state, event, ctx),
        Rotation::KIND => apply_typed::<Rotation>(state, event, ctx),
        KeyRotation::KIND => apply_typed::<KeyRotation>(state, event, ctx),
        CertificateRotation::KIND => apply_typed::<CertificateRotation>(state, event, ctx),
        KeyExpiry::KIND => apply_typed::<KeyExpiry>(state, event, ctx),
        CertificateExpiry::KIND => apply_typed::<CertificateExpiry>(state, event, ctx),
        Decommission::KIND => apply_typed::<Decommission>(state, event, ctx),
        Expiry::KIND => apply_typed::<Expiry>(state, event, ctx),
        ReviewCampaign::KIND => apply_typed::<ReviewCampaign>(state, event, ctx),
        ReviewItemMachine::KIND => apply_typed::<ReviewItemMachine>(state, event, ctx),
        Freeze::KIND => apply_typed::<Freeze>(state, event, ctx),
        ShadowAgent::KIND => apply_typed::<ShadowAgent>(state, event, ctx),
        other => Err(ApplyError::Corrupt(format!(
            "unknown workflow kind `{other}`"
        ))),
    }
}

fn apply_typed<W: Workflow>(state: &Value, event: Event, ctx: &Ctx) -> Result<Applied, ApplyError> {
    // Deserialize from the borrowed tree: no clone of the stored state.
    let typed = <W::State as serde::Deserialize>::deserialize(state)
        .map_err(|e| ApplyError::Corrupt(format!("{} state: {e}", W::KIND)))?;
    let step = workflow::on::<W>(&typed, event, ctx).map_err(ApplyError::Rejected)?;
    erase::<W>(step).map_err(ApplyError::Corrupt)
}

fn erase<W: Workflow>(step: statemachines::Step<W::State>) -> Result<Applied, String> {
    Ok(Applied {
        state_name: W::state_name(&step.state),
        terminal: W::is_terminal(&step.state),
        state: serde_json::to_value(&step.state).map_err(|e| e.to_string())?,
        commands: step.commands,
    })
}
