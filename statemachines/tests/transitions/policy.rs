//! What a policy means when it says nothing (the defaults a policy file or a stored policy
//! falls back on) and which naming patterns the validator accepts.

use super::*;
use statemachines::Policy;
use statemachines::policy::{
    DEFAULT_MAX_TOKEN_LIFETIME_SECS, TOKEN_LIFETIME_CEILING_SECS, pattern_placeholders_ok,
};

/// The test policy as stored, without the fields named.
fn stored_without(fields: &[&str]) -> Policy {
    let mut stored = serde_json::to_value(policy()).unwrap();
    for field in fields {
        assert!(
            stored.as_object_mut().unwrap().remove(*field).is_some(),
            "{field} is a policy field"
        );
    }
    serde_json::from_value(stored).unwrap()
}

/// Tokens live 15 minutes unless the policy says otherwise: well inside the one-hour ceiling.
#[test]
fn tokens_live_fifteen_minutes_unless_the_policy_says_otherwise() {
    assert_eq!(DEFAULT_MAX_TOKEN_LIFETIME_SECS, 900);
    assert_eq!(TOKEN_LIFETIME_CEILING_SECS, 3600);
}

/// A policy that names no approval routes posts approval requests to the owner and the
/// security channel, nowhere else and nowhere unnamed.
#[test]
fn approval_requests_go_to_the_owner_and_the_security_channel_by_default() {
    let read = stored_without(&["approval_routes"]);
    assert_eq!(
        read.approval_routes,
        strings(&["owner", "security-channel"])
    );
    assert_eq!(
        statemachines::policy::default_routes(),
        strings(&["owner", "security-channel"])
    );
}

/// A policy that says nothing about it gives the manager and security a week to find a new
/// owner before a freeze is requested.
#[test]
fn a_new_owner_is_awaited_a_week_by_default() {
    let read = stored_without(&["owner_reassign_secs"]);
    assert_eq!(read.owner_reassign_secs, 7 * 86_400);
    assert_eq!(
        statemachines::policy::default_owner_reassign_secs(),
        604_800
    );
    let ctx = statemachines::Ctx {
        now: now(),
        policy: &read,
        workflow_id: WORKFLOW_ID,
    };
    let step =
        statemachines::workflow::start::<OwnerLoss>(owner_loss_input(Some(MANAGER)), &ctx).unwrap();
    let OwnerLossState::AwaitingOwner { deadline, .. } = &step.state else {
        panic!("expected AwaitingOwner, got {:?}", step.state)
    };
    assert_eq!(*deadline, now() + Duration::days(7));
    assert!(step.commands.contains(&Command::SetTimer {
        name: OWNER_DEADLINE_TIMER.into(),
        at: now() + Duration::days(7),
    }));
}

/// A naming pattern needs `{function}`, may have `{env}`, and nothing else in braces: not an
/// unknown placeholder, and not a lone brace either.
#[test]
fn a_naming_pattern_has_only_known_placeholders_and_no_stray_brace() {
    for ok in ["{function}-agent-{env}", "svc-{function}", "{function}"] {
        assert!(pattern_placeholders_ok(ok), "{ok}");
    }
    for bad in [
        "{env}-agent",
        "agent",
        "{function}-{team}",
        "{function}-{env",
        "{function}-env}",
        "{function}-agent}-{env}",
        "{{function}",
        "{function}}",
    ] {
        assert!(!pattern_placeholders_ok(bad), "{bad}");
    }
}
