//! One scenario per transition and per refusal of every workflow machine: onboarding, scope
//! change, owner loss, rotation, decommission, expiry, the access-review campaign and items, the
//! freeze after an anomaly and shadow-agent discovery.
//!
//! Every scenario is a plain function listed in its file's `scenarios!`; each becomes its own
//! `#[test]`, and `transition_coverage` runs them all on one thread and fails if a transition
//! declared in a machine's table was never taken (and if one taken was never declared): a
//! declared transition is a promise, and an untested promise is where bugs hide.

#[path = "../common/mod.rs"]
mod common;

// The checks beside the scenarios share this binary: one link instead of one per file.
mod detection;
mod diagrams;
mod imports;
mod policy;
mod states;
mod sweep;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use common::*;
use statemachines::approval::{
    APPROVAL_REMINDER_TIMER, ApprovalOutcome, ApprovalRequest, Decision, FollowUp,
};
use statemachines::command::{Actor, AuditKind, Command, IdpCommand, VaultCommand};
use statemachines::decommission::{
    self, Decommission, DecommissionInput, DecommissionReason, DecommissionState,
};
use statemachines::detection::{Action, Finding, Severity};
use statemachines::discovery::{self, ShadowAgent, ShadowInput, ShadowState};
use statemachines::expiry::{self, Expiry, ExpiryInput, ExpiryState};
use statemachines::freeze::{self, Freeze, FreezeInput, FreezeState, Grants};
use statemachines::machines::ALL;
use statemachines::onboarding::{
    APPROVAL_EXPIRY_TIMER, Onboarding, OnboardingInput, OnboardingState, OwnerStatus,
    RecordedApproval,
};
use statemachines::owner_loss::{
    OWNER_DEADLINE_TIMER, OwnerLoss, OwnerLossInput, OwnerLossState, SECURITY_CHANNEL,
};
use statemachines::receipt::{self, CredentialReceipt, RevocationReceipt};
use statemachines::review_campaign::{
    self, Campaign, CampaignInput, CampaignScope, CampaignState, ReviewCampaign, Unanswered,
};
use statemachines::review_item::{
    self, ActionResult, Evidence, LastReview, Resolution, ReviewAction, ReviewDecision,
    ReviewItemInput, ReviewItemMachine, ReviewItemState, ReviewNotice, ScopeEvidence,
};
use statemachines::rotation::{self, Rotation, RotationInput, RotationReason, RotationState};
use statemachines::scope_change::{ScopeChange, ScopeChangeRequest, ScopeChangeState};
use statemachines::workflow::{Machine, Rejected, Step, Transition, Workflow, coverage};
use statemachines::{Agent, AgentChange, AgentFlag, AgentRequest, AgentStatus, Event};
use std::collections::BTreeSet;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        pub(crate) const SCENARIOS: &[(&str, fn())] = &[$((stringify!($name), $name)),*];

        /// One test per scenario, so a failure names its scenario.
        mod scenario {
            $(#[test] fn $name() { super::$name() })*
        }
    };
}

// One file per machine (plus `rules.rs` for what onboarding and scope change share). The
// modules carry a suffix so they do not shadow the machine modules the scenarios name
// (`rotation::START_TIMER`).
#[path = "certificate_expiry.rs"]
mod certificate_expiry_scenarios;
#[path = "certificate_rotation.rs"]
mod certificate_rotation_scenarios;
#[path = "decommission.rs"]
mod decommission_scenarios;
#[path = "discovery.rs"]
mod discovery_scenarios;
#[path = "expiry.rs"]
mod expiry_scenarios;
#[path = "freeze.rs"]
mod freeze_scenarios;
#[path = "key_expiry.rs"]
mod key_expiry_scenarios;
#[path = "key_rotation.rs"]
mod key_rotation_scenarios;
#[path = "onboarding.rs"]
mod onboarding_scenarios;
#[path = "owner_loss.rs"]
mod owner_loss_scenarios;
#[path = "review_campaign.rs"]
mod review_campaign_scenarios;
#[path = "review_item.rs"]
mod review_item_scenarios;
#[path = "rotation.rs"]
mod rotation_scenarios;
#[path = "rules.rs"]
mod rules_scenarios;
#[path = "scope_change.rs"]
mod scope_change_scenarios;

// Fixtures of one machine serve others too (an active agent, a finished onboarding).
#[allow(unused_imports)]
use decommission_scenarios::*;
#[allow(unused_imports)]
use discovery_scenarios::*;
#[allow(unused_imports)]
use expiry_scenarios::*;
#[allow(unused_imports)]
use freeze_scenarios::*;
#[allow(unused_imports)]
use onboarding_scenarios::*;
#[allow(unused_imports)]
use owner_loss_scenarios::*;
#[allow(unused_imports)]
use review_campaign_scenarios::*;
#[allow(unused_imports)]
use review_item_scenarios::*;
#[allow(unused_imports)]
use rotation_scenarios::*;
#[allow(unused_imports)]
use rules_scenarios::*;
#[allow(unused_imports)]
use scope_change_scenarios::*;

// =============================================================================================
// Coverage
// =============================================================================================

/// Every scenario of every file.
fn all_scenarios() -> impl Iterator<Item = &'static (&'static str, fn())> {
    [
        certificate_expiry_scenarios::SCENARIOS,
        certificate_rotation_scenarios::SCENARIOS,
        decommission_scenarios::SCENARIOS,
        discovery_scenarios::SCENARIOS,
        expiry_scenarios::SCENARIOS,
        freeze_scenarios::SCENARIOS,
        key_expiry_scenarios::SCENARIOS,
        key_rotation_scenarios::SCENARIOS,
        onboarding_scenarios::SCENARIOS,
        owner_loss_scenarios::SCENARIOS,
        review_campaign_scenarios::SCENARIOS,
        review_item_scenarios::SCENARIOS,
        rotation_scenarios::SCENARIOS,
        rules_scenarios::SCENARIOS,
        scope_change_scenarios::SCENARIOS,
    ]
    .into_iter()
    .flatten()
}

/// Declared transitions never taken, and taken transitions never declared.
fn coverage_gaps(m: &Machine) -> (Vec<Transition>, Vec<Transition>) {
    let taken = coverage::taken(m.kind);
    let declared: BTreeSet<Transition> = m.transitions.iter().copied().collect();
    (
        declared.difference(&taken).copied().collect(),
        taken.difference(&declared).copied().collect(),
    )
}

fn describe(kind: &str, transitions: &[Transition]) -> String {
    transitions
        .iter()
        .map(|t| format!("\n  {kind}: {} --{}--> {}", t.from, t.on, t.to))
        .collect()
}

#[test]
fn transition_coverage() {
    // Coverage is recorded per thread: run every scenario on a fresh one.
    let report = std::thread::spawn(|| {
        for (name, scenario) in all_scenarios() {
            if std::panic::catch_unwind(scenario).is_err() {
                return Err(format!("scenario {name} failed; see its own test"));
            }
        }
        let gaps: Vec<_> = ALL.iter().map(|m| (m.kind, coverage_gaps(m))).collect();
        let missing: String = gaps
            .iter()
            .map(|(kind, (missing, _))| describe(kind, missing))
            .collect();
        let undeclared: String = gaps
            .iter()
            .map(|(kind, (_, undeclared))| describe(kind, undeclared))
            .collect();
        Ok((missing, undeclared))
    })
    .join()
    .expect("coverage thread");

    let (missing, undeclared) = report.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        undeclared.is_empty(),
        "transitions taken but not declared in the tables:{undeclared}"
    );
    assert!(
        missing.is_empty(),
        "declared transitions no scenario exercises (add a scenario to its file's `scenarios!` list):{missing}"
    );
}
