//! One scenario per transition and per refusal of every workflow machine: onboarding, scope
//! change, owner loss, rotation, decommission, expiry, the access-review campaign and items, the
//! freeze after an anomaly and shadow-agent discovery.
//!
//! Every scenario is a plain function listed in `SCENARIOS`; each becomes its own `#[test]`, and
//! `transition_coverage` runs them all on one thread and fails if a transition declared in a
//! machine's table was never taken (ARCHITECTURE §9, after temporalio's `transition_coverage.rs`).

mod common;

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
use statemachines::workflow::{Rejected, Step, Transition, Workflow, coverage};
use statemachines::{Agent, AgentChange, AgentFlag, AgentRequest, AgentStatus, Event};
use std::collections::BTreeSet;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const SCENARIOS: &[(&str, fn())] = &[$((stringify!($name), $name)),*];

        /// One test per scenario, so a failure names its scenario.
        mod scenario {
            $(#[test] fn $name() { super::$name() })*
        }
    };
}

scenarios![
    // onboarding: transitions
    scenario_onboarding_without_sensitive_scope_provisions_at_once,
    scenario_onboarding_with_sensitive_scope_waits_for_approval,
    scenario_onboarding_token_lifetime_defaults_to_policy_max,
    scenario_onboarding_requester_in_security_group_is_not_asked_to_approve,
    scenario_onboarding_approve_creates_client_with_requested_grant,
    scenario_onboarding_deny_ends_without_provisioning,
    scenario_onboarding_expiry_ends_without_provisioning,
    scenario_onboarding_cancel_while_waiting_ends_without_provisioning,
    scenario_onboarding_client_created_activates_agent,
    scenario_onboarding_client_created_without_approval_is_granted_by_steward,
    scenario_onboarding_command_failed_marks_failed_and_tells_owner,
    // onboarding: refused requests
    scenario_onboarding_refuses_excluded_scope,
    scenario_onboarding_refuses_scope_not_approved,
    scenario_onboarding_refuses_unknown_owner,
    scenario_onboarding_refuses_inactive_owner,
    scenario_onboarding_refuses_bad_name,
    scenario_onboarding_refuses_env_mismatch_between_name_and_environment,
    scenario_onboarding_refuses_environment_outside_policy,
    scenario_onboarding_refuses_lifetime_over_max,
    scenario_onboarding_refuses_zero_lifetime,
    scenario_onboarding_refuses_expiry_date_not_in_future,
    scenario_onboarding_refuses_duplicate_scope,
    scenario_onboarding_reports_every_problem_at_once,
    // onboarding: refused events
    scenario_onboarding_refuses_self_approval,
    scenario_onboarding_refuses_self_approval_despite_case_and_spaces,
    scenario_onboarding_refuses_approver_outside_allowed_set,
    scenario_onboarding_refuses_decision_after_expiry,
    scenario_onboarding_refuses_wrong_approval_id,
    scenario_onboarding_refuses_early_expiry_timer,
    scenario_onboarding_refuses_unknown_timer,
    scenario_onboarding_refuses_results_before_approval,
    scenario_onboarding_refuses_cancel_during_provisioning,
    scenario_onboarding_refuses_second_decision_and_stale_timer_once_approved,
    scenario_onboarding_terminal_states_accept_no_event,
    // scope change: transitions
    scenario_scope_change_non_sensitive_add_sets_grants_at_once,
    scenario_scope_change_removal_and_lifetime_need_no_approval,
    scenario_scope_change_sensitive_add_waits_for_approval,
    scenario_scope_change_approve_sets_exact_new_grant,
    scenario_scope_change_deny_leaves_grants_unchanged,
    scenario_scope_change_expiry_leaves_grants_unchanged,
    scenario_scope_change_cancel_leaves_grants_unchanged,
    scenario_scope_change_grants_set_updates_registry_and_audits,
    scenario_scope_change_command_failed_tells_requester,
    // scope change: refused requests
    scenario_scope_change_refuses_non_active_agent,
    scenario_scope_change_refuses_agent_without_client,
    scenario_scope_change_refuses_adding_held_scope,
    scenario_scope_change_refuses_removing_scope_not_held,
    scenario_scope_change_refuses_scope_both_added_and_removed,
    scenario_scope_change_refuses_change_that_changes_nothing,
    scenario_scope_change_refuses_removing_every_scope,
    scenario_scope_change_refuses_excluded_and_unapproved_scopes,
    scenario_scope_change_refuses_lifetime_over_max_and_zero,
    scenario_scope_change_refuses_missing_reason,
    // scope change: refused events
    scenario_scope_change_refuses_self_approval,
    scenario_scope_change_refuses_approver_outside_allowed_set,
    scenario_scope_change_refuses_decision_after_expiry,
    scenario_scope_change_refuses_wrong_approval_id,
    scenario_scope_change_refuses_early_expiry_timer,
    scenario_scope_change_refuses_cancel_while_granting,
    scenario_scope_change_refuses_second_decision_once_approved,
    scenario_scope_change_terminal_states_accept_no_event,
    // review follow-ups
    scenario_onboarding_refuses_cancel_by_outsider,
    scenario_onboarding_records_approver_as_listed,
    scenario_scope_change_refuses_cancel_by_outsider,
    scenario_scope_change_refuses_duplicate_scopes,
    scenario_scope_change_refuses_keeping_a_newly_excluded_scope,
    scenario_lifetime_ceiling_holds_even_if_policy_allows_more,
    // Slack: quorum, reminder, escalation
    scenario_onboarding_two_person_rule_needs_two_distinct_approvers,
    scenario_onboarding_two_person_rule_deny_after_one_vote_denies,
    scenario_onboarding_reminder_keeps_waiting_and_expiry_escalates,
    scenario_scope_change_two_person_rule_needs_two_distinct_approvers,
    scenario_scope_change_reminder_keeps_waiting,
    scenario_two_person_rule_refuses_a_request_it_cannot_satisfy,
    scenario_people_channel_failures_do_not_fail_provisioning_or_granting,
    // owner loss
    scenario_owner_loss_flags_agent_and_asks_manager_and_security,
    scenario_owner_loss_without_manager_asks_security_only,
    scenario_owner_loss_reassigned_clears_flag_and_tells_new_owner,
    scenario_owner_loss_refuses_the_lost_owner_back,
    scenario_owner_loss_deadline_requests_freeze,
    scenario_owner_loss_refuses_early_or_foreign_timer,
    scenario_owner_loss_ended_accepts_no_event,
    // rotation: transitions
    scenario_rotation_scheduled_start_waits_for_its_slot,
    scenario_rotation_without_previous_secret_id_ends_after_grace,
    scenario_rotation_immediate_start_issues_a_pending_secret,
    scenario_rotation_issued_secret_is_tested_before_promotion,
    scenario_rotation_verified_secret_is_promoted,
    scenario_rotation_promotion_records_receipt_and_starts_grace,
    scenario_rotation_grace_end_removes_the_old_secret,
    scenario_rotation_old_secret_removed_completes,
    scenario_rotation_old_secret_removal_failure_completes_and_alerts_security,
    scenario_rotation_failure_before_promotion_retries_under_a_new_version,
    scenario_rotation_gives_up_after_the_policy_attempts,
    scenario_rotation_cancel_wins_in_every_waiting_state,
    scenario_rotation_late_results_after_cancel_are_recorded_only,
    // rotation: refusals
    scenario_rotation_refuses_results_of_another_version,
    scenario_rotation_refuses_early_and_foreign_timers,
    scenario_rotation_refuses_agents_it_cannot_rotate,
    scenario_rotation_ended_states_accept_no_new_work,
    // decommission: transitions
    scenario_decommission_on_request_waits_for_security_approval,
    scenario_decommission_with_a_decision_revokes_at_once,
    scenario_decommission_agent_without_client_schedules_secret_deletion,
    scenario_decommission_approval_starts_revocation,
    scenario_decommission_deny_keeps_the_agent,
    scenario_decommission_reminder_keeps_waiting_and_expiry_keeps_the_agent,
    scenario_decommission_requester_may_withdraw_while_waiting,
    scenario_decommission_walks_every_step_into_the_receipt,
    scenario_decommission_failed_steps_are_recorded_and_it_goes_on,
    // decommission: refusals
    scenario_decommission_refuses_agents_not_in_service,
    scenario_decommission_refuses_results_out_of_order,
    scenario_decommission_ended_states_accept_no_event,
    // expiry: transitions
    scenario_expiry_start_arms_deadline_and_reminder,
    scenario_expiry_start_within_reminder_lead_reminds_at_once,
    scenario_expiry_reminder_tells_the_owner_once,
    scenario_expiry_renewal_request_asks_security,
    scenario_expiry_approved_renewal_moves_the_date,
    scenario_expiry_denied_or_unanswered_renewal_keeps_the_date,
    scenario_expiry_deadline_starts_the_decommission,
    // expiry: refusals
    scenario_expiry_refuses_renewals_that_do_not_hold,
    scenario_expiry_refuses_early_deadline,
    scenario_expiry_ended_accepts_no_event,
    // access review campaign: transitions
    scenario_campaign_start_launches_round_one_and_arms_the_close_timer,
    scenario_campaign_launches_in_rounds_until_every_item_is_out,
    scenario_campaign_closes_at_its_deadline,
    scenario_campaign_deadline_during_launch_closes_after_the_last_round,
    scenario_campaign_launch_failure_fails_and_tells_security,
    // access review campaign: refusals
    scenario_campaign_refuses_a_deadline_not_in_the_future_or_a_bad_id,
    scenario_campaign_refuses_a_launch_report_of_another_round,
    scenario_campaign_refuses_an_early_close_timer_and_ended_campaigns_accept_no_event,
    // access review item: transitions
    scenario_review_item_start_asks_the_owner_and_arms_reminder_escalation_and_deadline,
    scenario_review_item_reminds_the_owner_before_escalating_to_the_manager,
    scenario_review_item_keep_closes_and_records_the_review,
    scenario_review_item_reduce_applies_a_scope_change_and_closes_on_its_result,
    scenario_review_item_revoke_applies_a_decommission,
    scenario_review_item_unanswered_keep_and_flag_closes_flagged_and_tells_security,
    scenario_review_item_unanswered_revoke_applies_a_decommission,
    scenario_review_item_unanswered_freeze_deactivates_the_client,
    scenario_review_item_failed_actions_close_with_the_failure_recorded,
    // access review item: refusals
    scenario_review_item_refuses_reviewers_who_may_not_answer,
    scenario_review_item_refuses_a_reduce_that_does_not_hold,
    scenario_review_item_refuses_decisions_after_the_deadline,
    scenario_review_item_refuses_a_second_decision,
    scenario_review_item_refuses_early_timers,
    // access review evidence
    scenario_review_evidence_suggests_scopes_unused_for_the_policy_period,
    // freeze: transitions
    scenario_freeze_high_finding_contains_at_once_without_asking,
    scenario_freeze_containment_in_either_order_asks_security_to_decide,
    scenario_freeze_unfreeze_needs_the_quorum_and_restores_the_previous_grants,
    scenario_freeze_deny_hands_the_agent_to_decommission,
    scenario_freeze_unanswered_decision_keeps_the_agent_frozen,
    scenario_freeze_failed_containment_or_restore_tells_security,
    scenario_freeze_medium_finding_asks_before_freezing,
    scenario_freeze_confirmed_medium_finding_contains,
    scenario_freeze_medium_finding_denied_or_unanswered_is_dismissed,
    scenario_freeze_medium_question_is_withdrawn_when_a_stronger_finding_contains,
    scenario_freeze_an_agent_frozen_earlier_goes_straight_to_the_decision,
    scenario_freeze_finding_without_freeze_action_alerts_only,
    // freeze: refusals
    scenario_freeze_only_security_may_decide_an_unfreeze,
    scenario_freeze_refuses_an_agent_without_client,
    scenario_freeze_refuses_events_that_do_not_apply,
    // shadow agents: transitions
    scenario_shadow_agent_found_asks_its_creator_and_security_to_claim_it,
    scenario_shadow_agent_claimed_ends_the_grace_period,
    scenario_shadow_agent_released_is_frozen_then_decommissioned,
    scenario_shadow_agent_unclaimed_after_the_grace_period_is_released,
    scenario_shadow_agent_release_failure_tells_security,
    // shadow agents: refusals
    scenario_shadow_agent_refuses_a_client_without_id,
    scenario_shadow_agent_refuses_events_that_do_not_apply,
];

// =============================================================================================
// Quorum, reminder, escalation
// =============================================================================================

fn payments_request() -> AgentRequest {
    let mut request = sensitive_request();
    request.scopes = strings(&[PAYMENTS_WRITE]);
    request
}

fn follow_ups(commands: &[Command]) -> Vec<&FollowUp> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::FollowUpApproval { follow_up, .. } => Some(follow_up),
            _ => None,
        })
        .collect()
}

fn scenario_onboarding_two_person_rule_needs_two_distinct_approvers() {
    let first = started::<Onboarding>(onboarding_input(payments_request()));
    let OnboardingState::AwaitingApproval { approval, .. } = &first.state else {
        panic!("expected AwaitingApproval, got {:?}", first.state)
    };
    assert_eq!(approval.quorum, 2, "payments:write is a two-person scope");

    let one = accepted::<Onboarding>(&first.state, approve(APPROVER), at(60));
    let OnboardingState::AwaitingApproval { approval, .. } = &one.state else {
        panic!("one approval of two must keep waiting, got {:?}", one.state)
    };
    assert_eq!(approval.votes.len(), 1);
    assert!(
        idp_commands(&one.commands).is_empty(),
        "nothing is provisioned on one vote"
    );
    assert!(matches!(
        follow_ups(&one.commands).as_slice(),
        [FollowUp::Vote {
            votes: 1,
            quorum: 2,
            ..
        }]
    ));
    assert_eq!(audit_kinds(&one.commands), [AuditKind::ApprovalVoted]);

    // the same person again (any spelling) does not count twice
    assert_rejected(
        on::<Onboarding>(&one.state, approve(&APPROVER.to_uppercase()), at(70)),
        "approver",
        "already approved",
    );

    let two = accepted::<Onboarding>(&one.state, approve(OTHER_APPROVER), at(120));
    let OnboardingState::Provisioning { approval, .. } = &two.state else {
        panic!("expected Provisioning, got {:?}", two.state)
    };
    let recorded = approval.as_ref().expect("recorded approval");
    assert_eq!(recorded.approvers, strings(&[APPROVER, OTHER_APPROVER]));
    assert_eq!(recorded.approver, OTHER_APPROVER);
    assert_eq!(idp_commands(&two.commands).len(), 1);
}

fn scenario_onboarding_two_person_rule_deny_after_one_vote_denies() {
    let first = started::<Onboarding>(onboarding_input(payments_request()));
    let one = accepted::<Onboarding>(&first.state, approve(APPROVER), at(60));
    let denied = accepted::<Onboarding>(&one.state, deny(OTHER_APPROVER), at(90));
    assert!(matches!(denied.state, OnboardingState::Denied { .. }));
    assert!(idp_commands(&denied.commands).is_empty());
}

fn scenario_onboarding_reminder_keeps_waiting_and_expiry_escalates() {
    let first = started::<Onboarding>(onboarding_input(sensitive_request()));
    let OnboardingState::AwaitingApproval { approval, .. } = &first.state else {
        panic!("expected AwaitingApproval")
    };
    let remind_at = approval
        .remind_at
        .expect("the policy reminds an hour before expiry");
    assert_eq!(remind_at, approval.expires_at - chrono::Duration::hours(1));
    assert!(first.commands.contains(&Command::SetTimer {
        name: APPROVAL_REMINDER_TIMER.into(),
        at: remind_at
    }));
    assert_rejected(
        on::<Onboarding>(
            &first.state,
            reminder_timer(),
            remind_at - chrono::Duration::seconds(1),
        ),
        "timer",
        "no reminder due",
    );

    let reminded = accepted::<Onboarding>(&first.state, reminder_timer(), remind_at);
    assert_eq!(reminded.state, first.state, "a reminder changes nothing");
    assert_eq!(
        follow_ups(&reminded.commands),
        [&FollowUp::Reminder {
            expires_at: approval.expires_at
        }]
    );

    let expired = accepted::<Onboarding>(&reminded.state, expiry_timer(), approval.expires_at);
    assert!(matches!(expired.state, OnboardingState::Expired { .. }));
    assert_eq!(
        follow_ups(&expired.commands),
        [&FollowUp::Escalation {
            expired_at: approval.expires_at
        }]
    );
}

fn scenario_scope_change_two_person_rule_needs_two_distinct_approvers() {
    let first = started::<ScopeChange>(scope_change_input(scope_change_request(
        &[PAYMENTS_WRITE],
        &[],
    )));
    let one = accepted::<ScopeChange>(&first.state, approve(APPROVER), at(60));
    assert!(matches!(
        one.state,
        ScopeChangeState::AwaitingApproval { .. }
    ));
    assert!(idp_commands(&one.commands).is_empty());
    assert_rejected(
        on::<ScopeChange>(&one.state, approve(APPROVER), at(61)),
        "approver",
        "already approved",
    );
    let two = accepted::<ScopeChange>(&one.state, approve(OTHER_APPROVER), at(120));
    let ScopeChangeState::Granting { approval, .. } = &two.state else {
        panic!("expected Granting, got {:?}", two.state)
    };
    assert_eq!(
        approval.as_ref().map(|a| a.approvers.clone()),
        Some(strings(&[APPROVER, OTHER_APPROVER]))
    );
}

fn scenario_two_person_rule_refuses_a_request_it_cannot_satisfy() {
    // An approver asking for a two-person scope leaves one other approver: never enough.
    let mut input = onboarding_input(payments_request());
    input.requester = APPROVER.into();
    assert_rejected(
        start::<Onboarding>(input, now()),
        "approvers",
        "needs 2 distinct approvers other than the requester",
    );
}

fn scenario_people_channel_failures_do_not_fail_provisioning_or_granting() {
    // Slack could not update the message (approval.close) or post a notice: the IdP step goes
    // on; only an IdP failure fails the step.
    let provisioning = approved_onboarding();
    for command in ["approval.close", "notify", "approval.follow_up"] {
        assert_rejected(
            on::<Onboarding>(&provisioning, command_failed(command), at(3700)),
            "event",
            "CommandFailed does not apply to onboarding in state Provisioning",
        );
    }
    let granting = approved_scope_change();
    assert_rejected(
        on::<ScopeChange>(&granting, command_failed("approval.close"), at(700)),
        "event",
        "CommandFailed does not apply to scope_change in state Granting",
    );
}

fn scenario_scope_change_reminder_keeps_waiting() {
    let first = awaiting_scope_change();
    let ScopeChangeState::AwaitingApproval { approval, .. } = &first else {
        panic!("expected AwaitingApproval")
    };
    let at_reminder = approval.remind_at.expect("reminder");
    let reminded = accepted::<ScopeChange>(&first, reminder_timer(), at_reminder);
    assert_eq!(reminded.state, first);
    assert_eq!(follow_ups(&reminded.commands).len(), 1);
}

// =============================================================================================
// Onboarding
// =============================================================================================

fn awaiting_onboarding() -> OnboardingState {
    started::<Onboarding>(onboarding_input(sensitive_request())).state
}

/// Provisioning after `APPROVER` approved one hour in.
fn approved_onboarding() -> OnboardingState {
    accepted::<Onboarding>(&awaiting_onboarding(), approve(APPROVER), at(3600)).state
}

fn create_client_of(commands: &[Command]) -> (&str, &str, &[String], u32) {
    match idp_commands(commands).as_slice() {
        [
            IdpCommand::CreateClient {
                agent_id,
                name,
                scopes,
                token_lifetime_secs,
                adopt: None,
            },
        ] => (agent_id, name, scopes, *token_lifetime_secs),
        other => panic!("expected exactly one CreateClient, got {other:?}"),
    }
}

fn scenario_onboarding_without_sensitive_scope_provisions_at_once() {
    let step = started::<Onboarding>(onboarding_input(plain_request()));

    let OnboardingState::Provisioning { agent, approval } = &step.state else {
        panic!("expected Provisioning, got {:?}", step.state)
    };
    assert_eq!(*approval, None, "no approval was needed, none is recorded");
    assert_eq!(agent.status, AgentStatus::Provisioning);
    assert_eq!(agent.requested_by, REQUESTER);
    assert_eq!(
        agent.client_id, None,
        "no client before the identity provider answers"
    );

    let (agent_id, name, scopes, lifetime) = create_client_of(&step.commands);
    assert_eq!((agent_id, name), (AGENT_ID, AGENT_NAME));
    assert_eq!(scopes, strings(&[METRICS_READ, ORDERS_READ]));
    assert_eq!(lifetime, 600);

    assert!(
        !step
            .commands
            .iter()
            .any(|c| matches!(c, Command::RequestApproval(_) | Command::SetTimer { .. })),
        "{:?}",
        names(&step.commands)
    );
    assert_eq!(audit_kinds(&step.commands), [AuditKind::AgentRequested]);
    assert_eq!(
        audit_of(&step.commands, AuditKind::AgentRequested).actor,
        Actor::Person(REQUESTER.into())
    );
    assert_eq!(
        saved_agents(&step.commands),
        [agent],
        "the registry record is saved with the state"
    );
}

fn scenario_onboarding_with_sensitive_scope_waits_for_approval() {
    let step = started::<Onboarding>(onboarding_input(sensitive_request()));

    let OnboardingState::AwaitingApproval { agent, approval } = &step.state else {
        panic!("expected AwaitingApproval, got {:?}", step.state)
    };
    assert_eq!(agent.status, AgentStatus::PendingApproval);
    assert!(
        idp_commands(&step.commands).is_empty(),
        "nothing reaches the identity provider before approval"
    );

    assert_eq!(approval.id, APPROVAL_ID);
    assert_eq!(approval.action, "onboard");
    assert_eq!(approval.sensitive_scopes, [MONITORS_WRITE]);
    assert_eq!(approval.scopes_added, [METRICS_READ, MONITORS_WRITE]);
    assert_eq!(approval.requester, REQUESTER);
    assert_eq!(approval.approvers, APPROVERS);
    assert_eq!(approval.token_lifetime_secs, 600);
    assert_eq!(approval.requested_at, now());
    assert_eq!(approval.expires_at, approval_expires_at());

    assert!(
        step.commands
            .contains(&Command::RequestApproval(approval.clone()))
    );
    assert!(step.commands.contains(&Command::SetTimer {
        name: APPROVAL_EXPIRY_TIMER.into(),
        at: approval_expires_at()
    }));
    assert_eq!(
        audit_kinds(&step.commands),
        [AuditKind::AgentRequested, AuditKind::ApprovalRequested]
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::ApprovalRequested).scopes,
        [MONITORS_WRITE]
    );
    assert_eq!(saved_agents(&step.commands), [agent]);
}

fn scenario_onboarding_token_lifetime_defaults_to_policy_max() {
    let step = started::<Onboarding>(onboarding_input(AgentRequest {
        token_lifetime_secs: None,
        ..plain_request()
    }));
    assert_eq!(step.state.agent().token_lifetime_secs, 900);
    assert_eq!(create_client_of(&step.commands).3, 900);
}

fn scenario_onboarding_requester_in_security_group_is_not_asked_to_approve() {
    let input = onboarding_input(sensitive_request());
    let step = started::<Onboarding>(OnboardingInput {
        requester: APPROVER.into(),
        ..input
    });
    let OnboardingState::AwaitingApproval { approval, .. } = &step.state else {
        panic!("expected AwaitingApproval")
    };
    assert_eq!(
        approval.approvers,
        [OTHER_APPROVER],
        "the requester is never among the approvers of their own request"
    );
}

fn scenario_onboarding_approve_creates_client_with_requested_grant() {
    let when = at(3600);
    let step = accepted::<Onboarding>(&awaiting_onboarding(), approve(APPROVER), when);

    let OnboardingState::Provisioning { agent, approval } = &step.state else {
        panic!("expected Provisioning, got {:?}", step.state)
    };
    assert_eq!(
        *approval,
        Some(RecordedApproval {
            approval_id: APPROVAL_ID.into(),
            approver: APPROVER.into(),
            approvers: strings(&[APPROVER]),
            at: when,
            scopes: strings(&[MONITORS_WRITE])
        })
    );
    assert_eq!(agent.status, AgentStatus::Provisioning);
    assert_eq!(agent.updated_at, when);

    assert!(step.commands.contains(&Command::CancelTimer {
        name: APPROVAL_EXPIRY_TIMER.into()
    }));
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Approved {
            by: APPROVER.into(),
            at: when,
            reason: Some("ok for INC-4711".into())
        },
    }));
    let (agent_id, name, scopes, lifetime) = create_client_of(&step.commands);
    assert_eq!((agent_id, name), (AGENT_ID, AGENT_NAME));
    assert_eq!(
        scopes,
        strings(&[METRICS_READ, MONITORS_WRITE]),
        "the client gets exactly the requested scopes"
    );
    assert_eq!(
        lifetime, 600,
        "the client gets the requested token lifetime"
    );

    let decided = audit_of(&step.commands, AuditKind::ApprovalDecided);
    assert_eq!(decided.actor, Actor::Person(APPROVER.into()));
    assert_eq!(decided.approval_id.as_deref(), Some(APPROVAL_ID));
    assert_eq!(saved_agents(&step.commands), [agent]);
}

fn scenario_onboarding_deny_ends_without_provisioning() {
    let when = at(60);
    let step = accepted::<Onboarding>(&awaiting_onboarding(), deny(OTHER_APPROVER), when);

    let OnboardingState::Denied {
        agent,
        approval_id,
        by,
        reason,
    } = &step.state
    else {
        panic!("expected Denied, got {:?}", step.state)
    };
    assert_eq!(
        (approval_id.as_str(), by.as_str(), reason.as_deref()),
        (APPROVAL_ID, OTHER_APPROVER, Some("use the read-only scope"))
    );
    assert_eq!(agent.status, AgentStatus::Denied);
    assert!(Onboarding::is_terminal(&step.state));

    assert!(idp_commands(&step.commands).is_empty());
    assert!(step.commands.contains(&Command::CancelTimer {
        name: APPROVAL_EXPIRY_TIMER.into()
    }));
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Denied {
            by: OTHER_APPROVER.into(),
            at: when,
            reason: Some("use the read-only scope".into())
        },
    }));
    let audit = audit_of(&step.commands, AuditKind::ApprovalDecided);
    assert!(
        audit.message.contains("denied") && audit.message.contains("use the read-only scope"),
        "{}",
        audit.message
    );
    assert_eq!(saved_agents(&step.commands), [agent]);
}

fn scenario_onboarding_expiry_ends_without_provisioning() {
    // the timer fires at its due time exactly
    let step = accepted::<Onboarding>(
        &awaiting_onboarding(),
        expiry_timer(),
        approval_expires_at(),
    );

    let OnboardingState::Expired { agent, approval_id } = &step.state else {
        panic!("expected Expired, got {:?}", step.state)
    };
    assert_eq!(approval_id, APPROVAL_ID);
    assert_eq!(agent.status, AgentStatus::Expired);
    assert!(idp_commands(&step.commands).is_empty());
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Expired {
            at: approval_expires_at()
        },
    }));
    assert_eq!(
        audit_of(&step.commands, AuditKind::ApprovalExpired).actor,
        Actor::Schedule(APPROVAL_EXPIRY_TIMER.into())
    );
    assert_eq!(saved_agents(&step.commands), [agent]);
}

fn scenario_onboarding_cancel_while_waiting_ends_without_provisioning() {
    let when = at(120);
    let step = accepted::<Onboarding>(&awaiting_onboarding(), cancel(REQUESTER), when);

    let OnboardingState::Cancelled { agent, by, reason } = &step.state else {
        panic!("expected Cancelled, got {:?}", step.state)
    };
    assert_eq!(*by, Actor::Person(REQUESTER.into()));
    assert_eq!(reason, "no longer needed");
    assert_eq!(agent.status, AgentStatus::Cancelled);
    assert!(idp_commands(&step.commands).is_empty());
    assert!(step.commands.contains(&Command::CancelTimer {
        name: APPROVAL_EXPIRY_TIMER.into()
    }));
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Cancelled { at: when }
    }));
    let audit = audit_of(&step.commands, AuditKind::RequestCancelled);
    assert_eq!(audit.actor, Actor::Person(REQUESTER.into()));
    assert!(
        audit.message.contains("no longer needed"),
        "{}",
        audit.message
    );
    assert_eq!(saved_agents(&step.commands), [agent]);
}

fn scenario_onboarding_client_created_activates_agent() {
    let when = at(3700);
    let step = accepted::<Onboarding>(&approved_onboarding(), client_created(), when);

    let OnboardingState::Active { agent, approval } = &step.state else {
        panic!("expected Active, got {:?}", step.state)
    };
    assert_eq!(agent.status, AgentStatus::Active);
    assert_eq!(agent.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(agent.secret_version.as_deref(), Some(SECRET_VERSION));
    assert_eq!(agent.credential_issued_at, Some(when));
    assert_eq!(agent.scopes, [METRICS_READ, MONITORS_WRITE]);
    assert_eq!(
        approval.as_ref().map(|a| a.approver.as_str()),
        Some(APPROVER),
        "the approval stays with the active agent"
    );
    assert!(Onboarding::is_terminal(&step.state));
    assert!(idp_commands(&step.commands).is_empty());

    assert_eq!(
        audit_kinds(&step.commands),
        [AuditKind::AgentRegistered, AuditKind::ScopesGranted]
    );
    let registered = audit_of(&step.commands, AuditKind::AgentRegistered);
    assert_eq!(registered.actor, Actor::Person(REQUESTER.into()));
    assert!(
        registered.message.contains(CLIENT_ID),
        "{}",
        registered.message
    );
    let granted = audit_of(&step.commands, AuditKind::ScopesGranted);
    assert_eq!(
        granted.actor,
        Actor::Person(APPROVER.into()),
        "the grant is attributed to the approver"
    );
    assert_eq!(granted.approval_id.as_deref(), Some(APPROVAL_ID));
    assert_eq!(granted.scopes, [METRICS_READ, MONITORS_WRITE]);

    assert_eq!(saved_agents(&step.commands), [agent]);
    let notes = notifications(&step.commands);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].0, OWNER);
    assert!(
        !notes[0].2.contains(SECRET_VERSION),
        "the notification does not carry secret material: {}",
        notes[0].2
    );
}

fn scenario_onboarding_client_created_without_approval_is_granted_by_steward() {
    let provisioning = started::<Onboarding>(onboarding_input(plain_request())).state;
    let step = accepted::<Onboarding>(&provisioning, client_created(), at(5));
    let OnboardingState::Active { approval, .. } = &step.state else {
        panic!("expected Active, got {:?}", step.state)
    };
    assert_eq!(*approval, None);
    let granted = audit_of(&step.commands, AuditKind::ScopesGranted);
    assert_eq!(granted.actor, Actor::System);
    assert_eq!(granted.approval_id, None);
}

fn scenario_onboarding_command_failed_marks_failed_and_tells_owner() {
    let step = accepted::<Onboarding>(
        &approved_onboarding(),
        command_failed("idp.create_client"),
        at(3700),
    );

    let OnboardingState::Failed { agent, reason } = &step.state else {
        panic!("expected Failed, got {:?}", step.state)
    };
    assert_eq!(reason, "idp.create_client failed: 403 Forbidden");
    assert_eq!(agent.status, AgentStatus::Failed);
    assert_eq!(agent.client_id, None);
    assert!(idp_commands(&step.commands).is_empty());

    let failed = audit_of(&step.commands, AuditKind::ProvisioningFailed);
    assert!(!failed.success, "a failure is audited as unsuccessful");
    assert_eq!(failed.message, *reason);
    let notes = notifications(&step.commands);
    assert_eq!(notes.len(), 1);
    assert_eq!((notes[0].0, notes[0].2), (OWNER, reason.as_str()));
    assert_eq!(saved_agents(&step.commands), [agent]);
}

// ---- refused requests ----------------------------------------------------------------------

fn start_onboarding(request: AgentRequest) -> Result<Step<OnboardingState>, Rejected> {
    start::<Onboarding>(onboarding_input(request), now())
}

fn scenario_onboarding_refuses_excluded_scope() {
    let r = AgentRequest {
        scopes: strings(&[METRICS_READ, OKTA_USERS_MANAGE]),
        ..plain_request()
    };
    let rejected = assert_rejected(
        start_onboarding(r),
        "scopes",
        "scope `okta:users:manage` is excluded by policy and is never granted",
    );
    assert_eq!(
        rejected.reasons.len(),
        1,
        "only the excluded scope is wrong: {rejected}"
    );
}

fn scenario_onboarding_refuses_scope_not_approved() {
    let r = AgentRequest {
        scopes: strings(&[UNLISTED]),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "scopes",
        "scope `github:repo:admin` is not in the policy's approved scopes",
    );
}

fn scenario_onboarding_refuses_unknown_owner() {
    let input = OnboardingInput {
        owner_status: OwnerStatus::Unknown,
        ..onboarding_input(plain_request())
    };
    assert_rejected(
        start::<Onboarding>(input, now()),
        "owner",
        "owner alice@example.com is not a person in the directory",
    );
}

fn scenario_onboarding_refuses_inactive_owner() {
    let input = OnboardingInput {
        owner_status: OwnerStatus::Inactive,
        ..onboarding_input(plain_request())
    };
    assert_rejected(
        start::<Onboarding>(input, now()),
        "owner",
        "owner alice@example.com is not an active person in the directory",
    );
}

fn scenario_onboarding_refuses_bad_name() {
    for name in [
        "Datadog-Remediation-Agent-prod",
        "datadog-remediation-bot-prod",
        "datadog--agent-prod",
        "-agent-prod",
    ] {
        let r = AgentRequest {
            name: name.into(),
            ..plain_request()
        };
        assert_rejected(
            start_onboarding(r),
            "name",
            &format!(
                "name `{name}` does not follow the naming pattern `{{function}}-agent-{{env}}`"
            ),
        );
    }
}

fn scenario_onboarding_refuses_env_mismatch_between_name_and_environment() {
    let r = AgentRequest {
        name: "datadog-remediation-agent-dev".into(),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "name",
        "name `datadog-remediation-agent-dev` says environment `dev` but the request is for `prod`",
    );
}

fn scenario_onboarding_refuses_environment_outside_policy() {
    let r = AgentRequest {
        name: "datadog-remediation-agent-qa".into(),
        environment: "qa".into(),
        ..plain_request()
    };
    let rejected = assert_rejected(
        start_onboarding(r),
        "environment",
        "environment `qa` is not one of the policy's environments (dev, staging, prod)",
    );
    assert_eq!(rejected.reasons.len(), 1, "{rejected}");
}

fn scenario_onboarding_refuses_lifetime_over_max() {
    let r = AgentRequest {
        token_lifetime_secs: Some(1800),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "token_lifetime",
        "token lifetime 30 min exceeds the policy maximum of 15 min",
    );
    // one second over is over
    let r = AgentRequest {
        token_lifetime_secs: Some(901),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "token_lifetime",
        "token lifetime 901 s exceeds the policy maximum of 15 min",
    );
    // the maximum itself is allowed
    let r = AgentRequest {
        token_lifetime_secs: Some(900),
        ..plain_request()
    };
    assert!(start_onboarding(r).is_ok());
}

fn scenario_onboarding_refuses_zero_lifetime() {
    let r = AgentRequest {
        token_lifetime_secs: Some(0),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "token_lifetime",
        "token lifetime must be greater than zero",
    );
}

fn scenario_onboarding_refuses_expiry_date_not_in_future() {
    let yesterday = today().pred_opt().unwrap();
    let r = AgentRequest {
        expires_on: Some(yesterday),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "expires_on",
        "expiry date 2025-03-09 is not in the future",
    );
    let r = AgentRequest {
        expires_on: Some(today()),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "expires_on",
        "expiry date 2025-03-10 is not in the future",
    );
    let r = AgentRequest {
        expires_on: today().succ_opt(),
        ..plain_request()
    };
    assert!(start_onboarding(r).is_ok(), "tomorrow is in the future");
}

fn scenario_onboarding_refuses_duplicate_scope() {
    let r = AgentRequest {
        scopes: strings(&[METRICS_READ, ORDERS_READ, METRICS_READ]),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "scopes",
        "scope `datadog:metrics:read` is listed twice",
    );
}

fn scenario_onboarding_reports_every_problem_at_once() {
    let r = AgentRequest {
        name: "Bad Name".into(),
        owner: " ".into(),
        team: "".into(),
        purpose: "".into(),
        scopes: vec![],
        token_lifetime_secs: Some(0),
        ..plain_request()
    };
    let input = OnboardingInput {
        owner_status: OwnerStatus::Unknown,
        ..onboarding_input(r)
    };
    let rejected = start::<Onboarding>(input, now()).expect_err("everything is wrong");
    let fields: BTreeSet<&str> = rejected.reasons.iter().map(|r| r.field.as_str()).collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "name",
            "owner",
            "team",
            "purpose",
            "scopes",
            "token_lifetime"
        ]),
        "{rejected}"
    );
    assert!(
        rejected.to_string().contains("a team is required; "),
        "reasons are joined for display: {rejected}"
    );
}

// ---- refused events ------------------------------------------------------------------------

fn scenario_onboarding_refuses_self_approval() {
    // the requester is the owner, not a security approver
    let awaiting = awaiting_onboarding();
    assert_rejected(
        on::<Onboarding>(&awaiting, approve(REQUESTER), at(60)),
        "approver",
        "alice@example.com requested this change and cannot approve it",
    );
    // a security approver who requested the agent themselves cannot approve it either
    let input = OnboardingInput {
        requester: APPROVER.into(),
        ..onboarding_input(sensitive_request())
    };
    let awaiting = started::<Onboarding>(input).state;
    let before = awaiting.clone();
    assert_rejected(
        on::<Onboarding>(&awaiting, approve(APPROVER), at(60)),
        "approver",
        "sec-lead@example.com requested this change and cannot approve it: another approver must decide",
    );
    assert_eq!(awaiting, before);
    // the other approver can
    assert!(matches!(
        accepted::<Onboarding>(&awaiting, approve(OTHER_APPROVER), at(60)).state,
        OnboardingState::Provisioning { .. }
    ));
}

fn scenario_onboarding_refuses_self_approval_despite_case_and_spaces() {
    let input = OnboardingInput {
        requester: APPROVER.into(),
        ..onboarding_input(sensitive_request())
    };
    let awaiting = started::<Onboarding>(input).state;
    for disguised in [
        "SEC-LEAD@example.com",
        "  sec-lead@example.com ",
        "Sec-Lead@Example.Com",
    ] {
        assert_rejected(
            on::<Onboarding>(&awaiting, approve(disguised), at(60)),
            "approver",
            "requested this change and cannot approve it",
        );
        assert_rejected(
            on::<Onboarding>(&awaiting, deny(disguised), at(60)),
            "approver",
            "requested this change and cannot approve it",
        );
    }
}

fn scenario_onboarding_refuses_approver_outside_allowed_set() {
    let awaiting = awaiting_onboarding();
    for event in [approve(OUTSIDER), deny(OUTSIDER), approve(COLLEAGUE)] {
        assert_rejected(
            on::<Onboarding>(&awaiting, event, at(60)),
            "approver",
            "is not an allowed approver for approval wf-0001-approval-1",
        );
    }
    let rejected = on::<Onboarding>(&awaiting, approve(OUTSIDER), at(60)).unwrap_err();
    assert!(
        rejected
            .to_string()
            .contains("(allowed: sec-lead@example.com, sec-oncall@example.com)"),
        "{rejected}"
    );
}

fn scenario_onboarding_refuses_decision_after_expiry() {
    let awaiting = awaiting_onboarding();
    let late = approval_expires_at() + chrono::Duration::seconds(1);
    for event in [approve(APPROVER), deny(APPROVER)] {
        assert_rejected(
            on::<Onboarding>(&awaiting, event, late),
            "approval",
            "approval wf-0001-approval-1 expired at 2025-03-11T09:00:00+00:00",
        );
    }
    // a decision at the expiry instant still counts
    assert!(on::<Onboarding>(&awaiting, approve(APPROVER), approval_expires_at()).is_ok());
}

fn scenario_onboarding_refuses_wrong_approval_id() {
    let awaiting = awaiting_onboarding();
    let event = decided("wf-0002-approval-1", APPROVER, Decision::Approve, None);
    assert_rejected(
        on::<Onboarding>(&awaiting, event, at(60)),
        "approval_id",
        "datadog-remediation-agent-prod is waiting for approval wf-0001-approval-1, not wf-0002-approval-1",
    );
}

fn scenario_onboarding_refuses_early_expiry_timer() {
    let awaiting = awaiting_onboarding();
    let early = approval_expires_at() - chrono::Duration::seconds(1);
    assert_rejected(
        on::<Onboarding>(&awaiting, expiry_timer(), early),
        "timer",
        "approval wf-0001-approval-1 does not expire until 2025-03-11T09:00:00+00:00",
    );
}

fn scenario_onboarding_refuses_unknown_timer() {
    let awaiting = awaiting_onboarding();
    let event = Event::TimerFired {
        name: "reminder".into(),
    };
    assert_rejected(
        on::<Onboarding>(&awaiting, event, approval_expires_at()),
        "event",
        "TimerFired does not apply to onboarding in state AwaitingApproval",
    );
}

fn scenario_onboarding_refuses_results_before_approval() {
    let awaiting = awaiting_onboarding();
    for event in [
        client_created(),
        grants_set(&strings(&[METRICS_READ]), 600),
        command_failed("approval.request"),
    ] {
        let label = event.label();
        assert_rejected(
            on::<Onboarding>(&awaiting, event, at(60)),
            "event",
            &format!("{label} does not apply to onboarding in state AwaitingApproval"),
        );
    }
}

fn scenario_onboarding_refuses_cancel_during_provisioning() {
    for provisioning in [
        approved_onboarding(),
        started::<Onboarding>(onboarding_input(plain_request())).state,
    ] {
        assert_rejected(
            on::<Onboarding>(&provisioning, cancel(REQUESTER), at(3700)),
            "state",
            "provisioning of datadog-remediation-agent-prod has started and cannot be cancelled; decommission the agent instead",
        );
    }
}

fn scenario_onboarding_refuses_second_decision_and_stale_timer_once_approved() {
    let provisioning = approved_onboarding();
    for event in [
        deny(OTHER_APPROVER),
        approve(OTHER_APPROVER),
        expiry_timer(),
    ] {
        let label = event.label();
        assert_rejected(
            on::<Onboarding>(&provisioning, event, approval_expires_at()),
            "event",
            &format!("{label} does not apply to onboarding in state Provisioning"),
        );
    }
}

fn terminal_onboardings() -> Vec<OnboardingState> {
    let awaiting = awaiting_onboarding();
    let provisioning = approved_onboarding();
    vec![
        accepted::<Onboarding>(&provisioning, client_created(), at(3700)).state,
        accepted::<Onboarding>(&provisioning, command_failed("idp.create_client"), at(3700)).state,
        accepted::<Onboarding>(&awaiting, deny(APPROVER), at(60)).state,
        accepted::<Onboarding>(&awaiting, expiry_timer(), approval_expires_at()).state,
        accepted::<Onboarding>(&awaiting, cancel(REQUESTER), at(60)).state,
    ]
}

fn scenario_onboarding_terminal_states_accept_no_event() {
    let terminals = terminal_onboardings();
    let names: BTreeSet<&str> = terminals.iter().map(Onboarding::state_name).collect();
    assert_eq!(
        names,
        BTreeSet::from(["Active", "Failed", "Denied", "Expired", "Cancelled"])
    );
    for state in &terminals {
        assert!(Onboarding::is_terminal(state));
        for event in every_event() {
            let expected = format!(
                "{} does not apply to onboarding in state {}",
                event.label(),
                Onboarding::state_name(state)
            );
            assert_rejected(
                on::<Onboarding>(state, event, approval_expires_at()),
                "event",
                &expected,
            );
        }
    }
}

// =============================================================================================
// Scope change
// =============================================================================================

fn start_scope_change(request: ScopeChangeRequest) -> Result<Step<ScopeChangeState>, Rejected> {
    start::<ScopeChange>(scope_change_input(request), now())
}

/// Adds `datadog:monitors:write` (sensitive) and removes `erp:orders:read`.
fn awaiting_scope_change() -> ScopeChangeState {
    started::<ScopeChange>(scope_change_input(scope_change_request(
        &[MONITORS_WRITE],
        &[ORDERS_READ],
    )))
    .state
}

fn approved_scope_change() -> ScopeChangeState {
    accepted::<ScopeChange>(&awaiting_scope_change(), approve(APPROVER), at(600)).state
}

fn set_grants_of(commands: &[Command]) -> (&str, &[String], u32) {
    match idp_commands(commands).as_slice() {
        [
            IdpCommand::SetGrants {
                client_id,
                scopes,
                token_lifetime_secs,
            },
        ] => (client_id, scopes, *token_lifetime_secs),
        other => panic!("expected exactly one SetGrants, got {other:?}"),
    }
}

fn scenario_scope_change_non_sensitive_add_sets_grants_at_once() {
    let step = started::<ScopeChange>(scope_change_input(scope_change_request(
        &[OKTA_APPS_READ],
        &[],
    )));

    let ScopeChangeState::Granting {
        agent,
        change,
        approval,
    } = &step.state
    else {
        panic!("expected Granting, got {:?}", step.state)
    };
    assert_eq!(*approval, None);
    assert_eq!(
        *agent,
        active_agent(),
        "the registry changes only once the identity provider confirms"
    );
    assert_eq!(change.scopes, [METRICS_READ, ORDERS_READ, OKTA_APPS_READ]);
    assert_eq!(
        set_grants_of(&step.commands),
        (CLIENT_ID, change.scopes.as_slice(), 600)
    );
    assert!(
        !step
            .commands
            .iter()
            .any(|c| matches!(c, Command::RequestApproval(_) | Command::SetTimer { .. }))
    );
    assert_eq!(
        audit_kinds(&step.commands),
        [AuditKind::ScopeChangeRequested]
    );
    let requested = audit_of(&step.commands, AuditKind::ScopeChangeRequested);
    assert_eq!(requested.actor, Actor::Person(REQUESTER.into()));
    assert!(
        requested.message.contains("auto-remediation needs it"),
        "{}",
        requested.message
    );
}

fn scenario_scope_change_removal_and_lifetime_need_no_approval() {
    let mut request = scope_change_request(&[], &[ORDERS_READ]);
    request.token_lifetime_secs = Some(300);
    let step = started::<ScopeChange>(scope_change_input(request));
    assert!(
        matches!(
            step.state,
            ScopeChangeState::Granting { approval: None, .. }
        ),
        "{:?}",
        step.state
    );
    assert_eq!(
        set_grants_of(&step.commands),
        (CLIENT_ID, strings(&[METRICS_READ]).as_slice(), 300)
    );

    // a lifetime change alone is a change
    let mut request = scope_change_request(&[], &[]);
    request.token_lifetime_secs = Some(900);
    let step = started::<ScopeChange>(scope_change_input(request));
    assert_eq!(
        set_grants_of(&step.commands),
        (
            CLIENT_ID,
            strings(&[METRICS_READ, ORDERS_READ]).as_slice(),
            900
        )
    );
}

fn scenario_scope_change_sensitive_add_waits_for_approval() {
    let step = started::<ScopeChange>(scope_change_input(scope_change_request(
        &[MONITORS_WRITE, OKTA_APPS_READ],
        &[ORDERS_READ],
    )));

    let ScopeChangeState::AwaitingApproval {
        agent,
        change,
        approval,
    } = &step.state
    else {
        panic!("expected AwaitingApproval, got {:?}", step.state)
    };
    assert_eq!(*agent, active_agent());
    assert_eq!(
        change.scopes,
        [METRICS_READ, MONITORS_WRITE, OKTA_APPS_READ]
    );
    assert!(
        idp_commands(&step.commands).is_empty(),
        "nothing reaches the identity provider before approval"
    );
    assert_eq!(approval.id, APPROVAL_ID);
    assert_eq!(approval.action, "scope-change");
    assert_eq!(approval.scopes_added, [MONITORS_WRITE, OKTA_APPS_READ]);
    assert_eq!(approval.scopes_removed, [ORDERS_READ]);
    assert_eq!(
        approval.sensitive_scopes,
        [MONITORS_WRITE],
        "only sensitive additions need the approval"
    );
    assert_eq!(approval.approvers, APPROVERS);
    assert_eq!(approval.expires_at, approval_expires_at());
    assert!(
        step.commands
            .contains(&Command::RequestApproval(approval.clone()))
    );
    assert!(step.commands.contains(&Command::SetTimer {
        name: APPROVAL_EXPIRY_TIMER.into(),
        at: approval_expires_at()
    }));
    assert_eq!(
        audit_kinds(&step.commands),
        [
            AuditKind::ScopeChangeRequested,
            AuditKind::ApprovalRequested
        ]
    );
}

fn scenario_scope_change_approve_sets_exact_new_grant() {
    let when = at(600);
    let step = accepted::<ScopeChange>(&awaiting_scope_change(), approve(OTHER_APPROVER), when);

    let ScopeChangeState::Granting { approval, .. } = &step.state else {
        panic!("expected Granting, got {:?}", step.state)
    };
    assert_eq!(
        *approval,
        Some(RecordedApproval {
            approval_id: APPROVAL_ID.into(),
            approver: OTHER_APPROVER.into(),
            approvers: strings(&[OTHER_APPROVER]),
            at: when,
            scopes: strings(&[MONITORS_WRITE])
        })
    );
    assert!(step.commands.contains(&Command::CancelTimer {
        name: APPROVAL_EXPIRY_TIMER.into()
    }));
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Approved {
            by: OTHER_APPROVER.into(),
            at: when,
            reason: Some("ok for INC-4711".into())
        },
    }));
    assert_eq!(
        set_grants_of(&step.commands),
        (
            CLIENT_ID,
            strings(&[METRICS_READ, MONITORS_WRITE]).as_slice(),
            600
        ),
        "held scopes minus removed plus added, nothing else"
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::ApprovalDecided).actor,
        Actor::Person(OTHER_APPROVER.into())
    );
}

fn scenario_scope_change_deny_leaves_grants_unchanged() {
    let when = at(600);
    let step = accepted::<ScopeChange>(&awaiting_scope_change(), deny(APPROVER), when);
    let ScopeChangeState::Denied {
        agent,
        approval_id,
        by,
        ..
    } = &step.state
    else {
        panic!("expected Denied, got {:?}", step.state)
    };
    assert_eq!((approval_id.as_str(), by.as_str()), (APPROVAL_ID, APPROVER));
    assert_eq!(*agent, active_agent());
    assert!(idp_commands(&step.commands).is_empty());
    assert!(
        saved_agents(&step.commands).is_empty(),
        "the registry record is untouched"
    );
    assert!(step.commands.contains(&Command::CancelTimer {
        name: APPROVAL_EXPIRY_TIMER.into()
    }));
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Denied {
            by: APPROVER.into(),
            at: when,
            reason: Some("use the read-only scope".into())
        },
    }));
}

fn scenario_scope_change_expiry_leaves_grants_unchanged() {
    let when = approval_expires_at() + chrono::Duration::seconds(30);
    let step = accepted::<ScopeChange>(&awaiting_scope_change(), expiry_timer(), when);
    assert!(
        matches!(&step.state, ScopeChangeState::Expired { approval_id, .. } if approval_id == APPROVAL_ID),
        "{:?}",
        step.state
    );
    assert!(idp_commands(&step.commands).is_empty());
    assert!(saved_agents(&step.commands).is_empty());
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Expired { at: when }
    }));
    assert_eq!(audit_kinds(&step.commands), [AuditKind::ApprovalExpired]);
}

fn scenario_scope_change_cancel_leaves_grants_unchanged() {
    let when = at(30);
    let step = accepted::<ScopeChange>(&awaiting_scope_change(), cancel(REQUESTER), when);
    assert!(
        matches!(&step.state, ScopeChangeState::Cancelled { by: Actor::Person(p), .. } if p == REQUESTER),
        "{:?}",
        step.state
    );
    assert!(idp_commands(&step.commands).is_empty());
    assert!(saved_agents(&step.commands).is_empty());
    assert!(step.commands.contains(&Command::CancelTimer {
        name: APPROVAL_EXPIRY_TIMER.into()
    }));
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Cancelled { at: when }
    }));
    assert_eq!(
        audit_of(&step.commands, AuditKind::RequestCancelled).actor,
        Actor::Person(REQUESTER.into())
    );
}

fn scenario_scope_change_grants_set_updates_registry_and_audits() {
    let when = at(700);
    let new_scopes = strings(&[METRICS_READ, MONITORS_WRITE]);
    let step =
        accepted::<ScopeChange>(&approved_scope_change(), grants_set(&new_scopes, 600), when);

    let ScopeChangeState::Applied {
        agent, approval, ..
    } = &step.state
    else {
        panic!("expected Applied, got {:?}", step.state)
    };
    assert_eq!(agent.scopes, new_scopes);
    assert_eq!(agent.token_lifetime_secs, 600);
    assert_eq!(agent.updated_at, when);
    assert_eq!(agent.status, AgentStatus::Active);
    assert!(approval.is_some());
    assert!(ScopeChange::is_terminal(&step.state));
    // Only the grants are written: a freeze recorded since the workflow copied the agent stays.
    assert!(saved_agents(&step.commands).is_empty());
    assert!(step.commands.iter().any(|c| matches!(
        c,
        Command::UpdateAgent {
            agent_id,
            change: AgentChange::GrantsSet { scopes, token_lifetime_secs: 600 },
        } if agent_id == &agent.id && scopes == &new_scopes
    )));
    let mut frozen = agent.clone();
    frozen.status = AgentStatus::Frozen;
    for c in &step.commands {
        if let Command::UpdateAgent { change, .. } = c {
            frozen.apply(change, when);
        }
    }
    assert_eq!(frozen.status, AgentStatus::Frozen);
    assert_eq!(frozen.scopes, new_scopes);

    assert_eq!(
        audit_kinds(&step.commands),
        [AuditKind::ScopesGranted, AuditKind::ScopesRevoked]
    );
    let granted = audit_of(&step.commands, AuditKind::ScopesGranted);
    assert_eq!(
        (&granted.actor, granted.scopes.as_slice()),
        (
            &Actor::Person(APPROVER.into()),
            strings(&[MONITORS_WRITE]).as_slice()
        )
    );
    assert_eq!(granted.approval_id.as_deref(), Some(APPROVAL_ID));
    assert_eq!(
        audit_of(&step.commands, AuditKind::ScopesRevoked).scopes,
        [ORDERS_READ]
    );
    let notes = notifications(&step.commands);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].0, REQUESTER);

    // without an approval, the requester is accountable for the grant; a pure removal audits no grant
    let granting = started::<ScopeChange>(scope_change_input(scope_change_request(
        &[],
        &[ORDERS_READ],
    )))
    .state;
    let step = accepted::<ScopeChange>(&granting, grants_set(&strings(&[METRICS_READ]), 600), when);
    assert_eq!(audit_kinds(&step.commands), [AuditKind::ScopesRevoked]);
    assert_eq!(
        audit_of(&step.commands, AuditKind::ScopesRevoked).actor,
        Actor::Person(REQUESTER.into())
    );
    assert_eq!(
        step.state,
        ScopeChangeState::Applied {
            agent: Agent {
                scopes: strings(&[METRICS_READ]),
                updated_at: when,
                flags: vec![],
                credentials: vec![],
                decommission: None,
                ..active_agent()
            },
            change: match &granting {
                ScopeChangeState::Granting { change, .. } => change.clone(),
                other => panic!("{other:?}"),
            },
            approval: None,
        }
    );
}

fn scenario_scope_change_command_failed_tells_requester() {
    let step = accepted::<ScopeChange>(
        &approved_scope_change(),
        command_failed("idp.set_grants"),
        at(700),
    );
    let ScopeChangeState::Failed { agent, reason, .. } = &step.state else {
        panic!("expected Failed, got {:?}", step.state)
    };
    assert_eq!(
        reason,
        "idp.set_grants failed: 403 Forbidden; grants unchanged"
    );
    assert_eq!(
        *agent,
        active_agent(),
        "a failed change leaves the registry as it was"
    );
    assert!(saved_agents(&step.commands).is_empty());
    assert!(idp_commands(&step.commands).is_empty());
    assert!(!audit_of(&step.commands, AuditKind::ProvisioningFailed).success);
    let notes = notifications(&step.commands);
    assert_eq!(notes.len(), 1);
    assert_eq!((notes[0].0, notes[0].2), (REQUESTER, reason.as_str()));
}

// ---- refused requests ----------------------------------------------------------------------

fn scenario_scope_change_refuses_non_active_agent() {
    for status in [
        AgentStatus::PendingApproval,
        AgentStatus::Provisioning,
        AgentStatus::Failed,
        AgentStatus::Cancelled,
    ] {
        let mut input = scope_change_input(scope_change_request(&[OKTA_APPS_READ], &[]));
        input.agent.status = status;
        assert_rejected(
            start::<ScopeChange>(input, now()),
            "agent",
            &format!(
                "datadog-remediation-agent-prod is {}; scopes change only on active agents",
                status.as_str()
            ),
        );
    }
}

fn scenario_scope_change_refuses_agent_without_client() {
    let mut input = scope_change_input(scope_change_request(&[OKTA_APPS_READ], &[]));
    input.agent.client_id = None;
    assert_rejected(
        start::<ScopeChange>(input, now()),
        "agent",
        "scopes change only on active agents",
    );
}

fn scenario_scope_change_refuses_adding_held_scope() {
    assert_rejected(
        start_scope_change(scope_change_request(&[METRICS_READ], &[])),
        "add",
        "datadog-remediation-agent-prod already has scope `datadog:metrics:read`",
    );
}

fn scenario_scope_change_refuses_removing_scope_not_held() {
    assert_rejected(
        start_scope_change(scope_change_request(&[], &[OKTA_APPS_READ])),
        "remove",
        "datadog-remediation-agent-prod does not have scope `okta:apps:read`",
    );
}

fn scenario_scope_change_refuses_scope_both_added_and_removed() {
    assert_rejected(
        start_scope_change(scope_change_request(&[OKTA_APPS_READ], &[OKTA_APPS_READ])),
        "remove",
        "scope `okta:apps:read` is both added and removed",
    );
}

fn scenario_scope_change_refuses_change_that_changes_nothing() {
    assert_rejected(
        start_scope_change(scope_change_request(&[], &[])),
        "request",
        "the request changes nothing",
    );
    let mut same_lifetime = scope_change_request(&[], &[]);
    same_lifetime.token_lifetime_secs = Some(600);
    assert_rejected(
        start_scope_change(same_lifetime),
        "request",
        "the request changes nothing",
    );
}

fn scenario_scope_change_refuses_removing_every_scope() {
    assert_rejected(
        start_scope_change(scope_change_request(&[], &[METRICS_READ, ORDERS_READ])),
        "remove",
        "removing every scope leaves nothing to grant; decommission the agent instead",
    );
}

fn scenario_scope_change_refuses_excluded_and_unapproved_scopes() {
    let rejected = start_scope_change(scope_change_request(
        &[API_KEYS_WRITE, UNLISTED, OKTA_APPS_READ],
        &[],
    ))
    .expect_err("bad scopes");
    let messages: Vec<&str> = rejected
        .reasons
        .iter()
        .map(|r| r.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "scope `datadog:api_keys:write` is excluded by policy and is never granted",
            "scope `github:repo:admin` is not in the policy's approved scopes"
        ],
        "{rejected}"
    );
    assert!(rejected.reasons.iter().all(|r| r.field == "add"));
}

fn scenario_scope_change_refuses_lifetime_over_max_and_zero() {
    let mut request = scope_change_request(&[OKTA_APPS_READ], &[]);
    request.token_lifetime_secs = Some(3600);
    assert_rejected(
        start_scope_change(request.clone()),
        "token_lifetime",
        "token lifetime 60 min exceeds the policy maximum of 15 min",
    );
    request.token_lifetime_secs = Some(0);
    assert_rejected(
        start_scope_change(request),
        "token_lifetime",
        "token lifetime must be greater than zero",
    );
}

fn scenario_scope_change_refuses_missing_reason() {
    let mut request = scope_change_request(&[OKTA_APPS_READ], &[]);
    request.reason = "  ".into();
    assert_rejected(
        start_scope_change(request),
        "reason",
        "a reason is required for a scope change",
    );
}

// ---- refused events ------------------------------------------------------------------------

fn scenario_scope_change_refuses_self_approval() {
    let awaiting = awaiting_scope_change();
    for approver in [REQUESTER, "ALICE@example.com", " alice@example.com"] {
        assert_rejected(
            on::<ScopeChange>(&awaiting, approve(approver), at(60)),
            "approver",
            "requested this change and cannot approve it",
        );
    }
    let mut input = scope_change_input(scope_change_request(&[MONITORS_WRITE], &[]));
    input.requester = OTHER_APPROVER.into();
    let awaiting = started::<ScopeChange>(input).state;
    let ScopeChangeState::AwaitingApproval { approval, .. } = &awaiting else {
        panic!("expected AwaitingApproval")
    };
    assert_eq!(approval.approvers, [APPROVER]);
    assert_rejected(
        on::<ScopeChange>(&awaiting, approve(OTHER_APPROVER), at(60)),
        "approver",
        "sec-oncall@example.com requested this change and cannot approve it: another approver must decide",
    );
}

fn scenario_scope_change_refuses_approver_outside_allowed_set() {
    let awaiting = awaiting_scope_change();
    assert_rejected(
        on::<ScopeChange>(&awaiting, approve(OUTSIDER), at(60)),
        "approver",
        "mallory@example.com is not an allowed approver for approval wf-0001-approval-1 (allowed: sec-lead@example.com, sec-oncall@example.com)",
    );
}

fn scenario_scope_change_refuses_decision_after_expiry() {
    let awaiting = awaiting_scope_change();
    let late = approval_expires_at() + chrono::Duration::seconds(1);
    assert_rejected(
        on::<ScopeChange>(&awaiting, approve(APPROVER), late),
        "approval",
        "approval wf-0001-approval-1 expired at",
    );
    assert_rejected(
        on::<ScopeChange>(&awaiting, deny(APPROVER), late),
        "approval",
        "request the change again",
    );
}

fn scenario_scope_change_refuses_wrong_approval_id() {
    let awaiting = awaiting_scope_change();
    let event = decided("wf-0001-approval-2", APPROVER, Decision::Approve, None);
    assert_rejected(
        on::<ScopeChange>(&awaiting, event, at(60)),
        "approval_id",
        "is waiting for approval wf-0001-approval-1, not wf-0001-approval-2",
    );
}

fn scenario_scope_change_refuses_early_expiry_timer() {
    let awaiting = awaiting_scope_change();
    for early in [at(60), approval_expires_at() - chrono::Duration::seconds(1)] {
        assert_rejected(
            on::<ScopeChange>(&awaiting, expiry_timer(), early),
            "timer",
            "approval wf-0001-approval-1 does not expire until 2025-03-11T09:00:00+00:00",
        );
    }
}

fn scenario_scope_change_refuses_cancel_while_granting() {
    assert_rejected(
        on::<ScopeChange>(&approved_scope_change(), cancel(REQUESTER), at(700)),
        "event",
        "Cancel does not apply to scope_change in state Granting",
    );
}

fn scenario_scope_change_refuses_second_decision_once_approved() {
    let granting = approved_scope_change();
    for event in [
        deny(OTHER_APPROVER),
        approve(OTHER_APPROVER),
        expiry_timer(),
        client_created(),
    ] {
        let expected = format!(
            "{} does not apply to scope_change in state Granting",
            event.label()
        );
        assert_rejected(
            on::<ScopeChange>(&granting, event, approval_expires_at()),
            "event",
            &expected,
        );
    }
}

fn scenario_scope_change_terminal_states_accept_no_event() {
    let awaiting = awaiting_scope_change();
    let granting = approved_scope_change();
    let terminals = [
        accepted::<ScopeChange>(
            &granting,
            grants_set(&strings(&[METRICS_READ, MONITORS_WRITE]), 600),
            at(700),
        )
        .state,
        accepted::<ScopeChange>(&granting, command_failed("idp.set_grants"), at(700)).state,
        accepted::<ScopeChange>(&awaiting, deny(APPROVER), at(60)).state,
        accepted::<ScopeChange>(&awaiting, expiry_timer(), approval_expires_at()).state,
        accepted::<ScopeChange>(&awaiting, cancel(REQUESTER), at(60)).state,
    ];
    let names: BTreeSet<&str> = terminals.iter().map(ScopeChange::state_name).collect();
    assert_eq!(
        names,
        BTreeSet::from(["Applied", "Failed", "Denied", "Expired", "Cancelled"])
    );
    for state in &terminals {
        assert!(ScopeChange::is_terminal(state));
        for event in every_event() {
            let expected = format!(
                "{} does not apply to scope_change in state {}",
                event.label(),
                ScopeChange::state_name(state)
            );
            assert_rejected(
                on::<ScopeChange>(state, event, approval_expires_at()),
                "event",
                &expected,
            );
        }
    }
}

// =============================================================================================
// Coverage
// =============================================================================================

/// Declared transitions never taken, and taken transitions never declared.
fn coverage_gaps<W: Workflow>() -> (Vec<Transition>, Vec<Transition>) {
    let taken = coverage::taken(W::KIND);
    let declared: BTreeSet<Transition> = W::TRANSITIONS.iter().copied().collect();
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
        for (name, scenario) in SCENARIOS {
            if std::panic::catch_unwind(scenario).is_err() {
                return Err(format!("scenario {name} failed; see its own test"));
            }
        }
        let gaps = [
            (Onboarding::KIND, coverage_gaps::<Onboarding>()),
            (ScopeChange::KIND, coverage_gaps::<ScopeChange>()),
            (OwnerLoss::KIND, coverage_gaps::<OwnerLoss>()),
            (Rotation::KIND, coverage_gaps::<Rotation>()),
            (Decommission::KIND, coverage_gaps::<Decommission>()),
            (Expiry::KIND, coverage_gaps::<Expiry>()),
            (ReviewCampaign::KIND, coverage_gaps::<ReviewCampaign>()),
            (
                ReviewItemMachine::KIND,
                coverage_gaps::<ReviewItemMachine>(),
            ),
            (Freeze::KIND, coverage_gaps::<Freeze>()),
            (ShadowAgent::KIND, coverage_gaps::<ShadowAgent>()),
        ];
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
        "declared transitions no scenario exercises (add a scenario to SCENARIOS):{missing}"
    );
}

// ---- review follow-ups ----------------------------------------------------------------------

fn scenario_onboarding_refuses_cancel_by_outsider() {
    assert_rejected(
        on::<Onboarding>(&awaiting_onboarding(), cancel(OUTSIDER), at(60)),
        "by",
        "may not cancel approval",
    );
    // an approver may withdraw it
    let step = accepted::<Onboarding>(&awaiting_onboarding(), cancel(APPROVER), at(60));
    assert!(matches!(step.state, OnboardingState::Cancelled { .. }));
}

fn scenario_onboarding_records_approver_as_listed() {
    let shouted = format!("  {}  ", APPROVER.to_uppercase());
    let step = accepted::<Onboarding>(&awaiting_onboarding(), approve(&shouted), at(60));
    let OnboardingState::Provisioning {
        approval: Some(recorded),
        ..
    } = &step.state
    else {
        panic!(
            "expected Provisioning with a recorded approval, got {:?}",
            step.state
        )
    };
    assert_eq!(
        recorded.approver, APPROVER,
        "the approver is stored as the policy lists them"
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::ApprovalDecided).actor,
        Actor::Person(APPROVER.into())
    );
}

fn scenario_scope_change_refuses_cancel_by_outsider() {
    assert_rejected(
        on::<ScopeChange>(&awaiting_scope_change(), cancel(OUTSIDER), at(60)),
        "by",
        "only the requester",
    );
}

fn scenario_scope_change_refuses_duplicate_scopes() {
    assert_rejected(
        start_scope_change(scope_change_request(&[OKTA_APPS_READ, OKTA_APPS_READ], &[])),
        "add",
        "scope `okta:apps:read` is listed twice",
    );
}

fn scenario_scope_change_refuses_keeping_a_newly_excluded_scope() {
    let mut agent = active_agent();
    agent.scopes.push(API_KEYS_WRITE.into()); // granted before the policy excluded it
    let input = statemachines::scope_change::ScopeChangeInput {
        agent,
        request: scope_change_request(&[OKTA_APPS_READ], &[]),
        requester: REQUESTER.into(),
    };
    assert_rejected(
        start::<ScopeChange>(input, now()),
        "remove",
        "which the policy now excludes",
    );
}

fn scenario_lifetime_ceiling_holds_even_if_policy_allows_more() {
    let mut lax = policy().clone();
    lax.max_token_lifetime_secs = 2 * 60 * 60;
    let mut request = plain_request();
    request.token_lifetime_secs = Some(61 * 60);
    let ctx = statemachines::Ctx {
        now: now(),
        policy: &lax,
        workflow_id: WORKFLOW_ID,
    };
    assert_rejected(
        statemachines::workflow::start::<Onboarding>(onboarding_input(request), &ctx),
        "token_lifetime",
        "exceeds the policy maximum of 60 min",
    );
}

// =============================================================================================
// Owner loss
// =============================================================================================

const NEW_OWNER: &str = "dave@example.com";

fn owner_loss_input(manager: Option<&str>) -> OwnerLossInput {
    OwnerLossInput {
        agent: active_agent(),
        change: "deactivated".into(),
        manager: manager.map(str::to_string),
        event_id: "okta-ev-1".into(),
    }
}

fn owner_deadline() -> chrono::DateTime<chrono::Utc> {
    now() + chrono::Duration::seconds(policy().owner_reassign_secs as i64)
}

fn deadline_timer() -> Event {
    Event::TimerFired {
        name: OWNER_DEADLINE_TIMER.into(),
    }
}

fn assigned(owner: &str, by: &str) -> Event {
    Event::OwnerAssigned {
        owner: owner.into(),
        by: by.into(),
    }
}

fn scenario_owner_loss_flags_agent_and_asks_manager_and_security() {
    let step = started::<OwnerLoss>(owner_loss_input(Some(MANAGER)));
    let OwnerLossState::AwaitingOwner {
        lost_owner,
        asked,
        deadline,
        ..
    } = &step.state
    else {
        panic!("expected AwaitingOwner, got {:?}", step.state);
    };
    assert_eq!(lost_owner, OWNER);
    assert_eq!(asked, &strings(&[MANAGER, SECURITY_CHANNEL]));
    assert_eq!(*deadline, owner_deadline());
    let saved = saved_agents(&step.commands);
    assert_eq!(saved.len(), 1);
    assert_eq!(
        saved[0].owner, OWNER,
        "the owner stays until a new one is assigned"
    );
    assert_eq!(saved[0].status, AgentStatus::Active, "flagged, not frozen");
    assert!(saved[0].flags.contains(&AgentFlag::OwnerLost {
        owner: OWNER.into(),
        since: now()
    }));
    let recipients: Vec<&str> = notifications(&step.commands)
        .iter()
        .map(|(to, _, _)| *to)
        .collect();
    assert_eq!(recipients, vec![MANAGER, SECURITY_CHANNEL]);
    assert!(
        notifications(&step.commands)[0]
            .2
            .contains("steward agents reassign")
    );
    assert!(step.commands.contains(&Command::SetTimer {
        name: OWNER_DEADLINE_TIMER.into(),
        at: owner_deadline()
    }));
    let lost = audit_of(&step.commands, AuditKind::OwnerLost);
    assert_eq!(lost.actor, Actor::IdpEvent("okta-ev-1".into()));
    assert!(
        idp_commands(&step.commands).is_empty(),
        "nothing changes at the IdP"
    );
}

fn scenario_owner_loss_without_manager_asks_security_only() {
    let step = started::<OwnerLoss>(owner_loss_input(None));
    let recipients: Vec<&str> = notifications(&step.commands)
        .iter()
        .map(|(to, _, _)| *to)
        .collect();
    assert_eq!(recipients, vec![SECURITY_CHANNEL]);
}

fn scenario_owner_loss_reassigned_clears_flag_and_tells_new_owner() {
    let waiting = started::<OwnerLoss>(owner_loss_input(Some(MANAGER))).state;
    let step = accepted::<OwnerLoss>(&waiting, assigned(NEW_OWNER, MANAGER), at(3600));
    assert!(matches!(step.state, OwnerLossState::Reassigned { ref by, .. } if by == MANAGER));
    let saved = saved_agents(&step.commands);
    assert_eq!(saved[0].owner, NEW_OWNER);
    assert!(saved[0].flags.is_empty(), "{:?}", saved[0].flags);
    assert!(step.commands.contains(&Command::CancelTimer {
        name: OWNER_DEADLINE_TIMER.into()
    }));
    assert_eq!(notifications(&step.commands)[0].0, NEW_OWNER);
    assert_eq!(
        audit_of(&step.commands, AuditKind::OwnerReassigned).actor,
        Actor::Person(MANAGER.into())
    );
}

fn scenario_owner_loss_refuses_the_lost_owner_back() {
    let waiting = started::<OwnerLoss>(owner_loss_input(Some(MANAGER))).state;
    assert_rejected(
        on::<OwnerLoss>(&waiting, assigned(&OWNER.to_uppercase(), MANAGER), at(60)),
        "owner",
        "the owner who was lost",
    );
}

fn scenario_owner_loss_deadline_requests_freeze() {
    let waiting = started::<OwnerLoss>(owner_loss_input(Some(MANAGER))).state;
    let step = accepted::<OwnerLoss>(&waiting, deadline_timer(), owner_deadline());
    assert!(matches!(step.state, OwnerLossState::FreezeRequested { .. }));
    let saved = saved_agents(&step.commands);
    assert!(
        saved[0]
            .flags
            .iter()
            .any(|f| matches!(f, AgentFlag::FreezeRequested { .. })),
        "{:?}",
        saved[0].flags
    );
    assert_eq!(
        saved[0].status,
        AgentStatus::Active,
        "the freeze itself comes later"
    );
    assert_eq!(notifications(&step.commands)[0].0, SECURITY_CHANNEL);
    assert!(audit_kinds(&step.commands).contains(&AuditKind::FreezeRequested));
}

fn scenario_owner_loss_refuses_early_or_foreign_timer() {
    let waiting = started::<OwnerLoss>(owner_loss_input(Some(MANAGER))).state;
    assert_rejected(
        on::<OwnerLoss>(
            &waiting,
            deadline_timer(),
            owner_deadline() - chrono::Duration::seconds(1),
        ),
        "event",
        "does not apply to owner_loss",
    );
    assert_rejected(
        on::<OwnerLoss>(&waiting, expiry_timer(), owner_deadline()),
        "event",
        "does not apply to owner_loss",
    );
}

fn scenario_owner_loss_ended_accepts_no_event() {
    let waiting = started::<OwnerLoss>(owner_loss_input(Some(MANAGER))).state;
    let reassigned = accepted::<OwnerLoss>(&waiting, assigned(NEW_OWNER, MANAGER), at(60)).state;
    let frozen = accepted::<OwnerLoss>(&waiting, deadline_timer(), owner_deadline()).state;
    for state in [reassigned, frozen] {
        assert!(OwnerLoss::is_terminal(&state));
        for event in [assigned(COLLEAGUE, MANAGER), deadline_timer()] {
            assert_rejected(
                on::<OwnerLoss>(&state, event, owner_deadline()),
                "event",
                "does not apply to owner_loss",
            );
        }
    }
}

// =============================================================================================
// Rotation
// =============================================================================================

const SWEEP: &str = "rotation-sweep";

fn grace() -> Duration {
    Duration::seconds(policy().lifecycle.rotation_grace_secs as i64)
}

fn retry_wait(attempt: u32) -> Duration {
    Duration::seconds((policy().lifecycle.rotation_retry_secs << (attempt - 1)) as i64)
}

fn rotation_input(start_at: DateTime<Utc>) -> RotationInput {
    RotationInput {
        agent: active_agent(),
        reason: RotationReason::Scheduled {
            age_days: 91,
            max_age_days: 90,
        },
        requested_by: Actor::Schedule(SWEEP.into()),
        start_at,
    }
}

fn issuing_rotation() -> RotationState {
    started::<Rotation>(rotation_input(now())).state
}

/// The first attempt's secret was issued ten seconds in.
fn verifying_rotation() -> RotationState {
    accepted::<Rotation>(
        &issuing_rotation(),
        secret_issued(&rotation_version(1)),
        at(10),
    )
    .state
}

/// Verified twenty seconds in.
fn promoting_rotation() -> RotationState {
    accepted::<Rotation>(
        &verifying_rotation(),
        secret_verified(&rotation_version(1)),
        at(20),
    )
    .state
}

/// When the new secret became current.
fn promoted_at() -> DateTime<Utc> {
    at(30)
}

fn grace_rotation() -> RotationState {
    accepted::<Rotation>(
        &promoting_rotation(),
        secret_promoted(&rotation_version(1)),
        promoted_at(),
    )
    .state
}

fn grace_ends() -> DateTime<Utc> {
    promoted_at() + grace()
}

fn revoking_rotation() -> RotationState {
    accepted::<Rotation>(
        &grace_rotation(),
        timer(rotation::GRACE_TIMER),
        grace_ends(),
    )
    .state
}

fn retry_timer() -> Event {
    timer(rotation::RETRY_TIMER)
}

/// The only IdP command of a step.
fn only_idp(commands: &[Command]) -> &IdpCommand {
    match idp_commands(commands).as_slice() {
        [one] => one,
        other => panic!("expected exactly one IdP command, got {other:?}"),
    }
}

fn issue_secret(version: &str) -> Command {
    Command::Idp(IdpCommand::IssueSecret {
        agent_id: AGENT_ID.into(),
        client_id: CLIENT_ID.into(),
        version: version.into(),
    })
}

fn credential_receipt(commands: &[Command]) -> &CredentialReceipt {
    match agent_changes(commands).as_slice() {
        [AgentChange::CredentialRotated { receipt }] => receipt,
        other => panic!("expected one CredentialRotated update, got {other:?}"),
    }
}

/// RetryWait, waiting to start attempt `attempt` (2 or more): every earlier attempt failed in
/// `Issuing`.
fn rotation_waiting_for_attempt(attempt: u32) -> (RotationState, DateTime<Utc>) {
    let mut state = issuing_rotation();
    let mut t = now();
    for failed in 1..attempt {
        state = accepted::<Rotation>(&state, command_failed("idp.issue_secret"), t).state;
        t += retry_wait(failed);
        if failed + 1 < attempt {
            state = accepted::<Rotation>(&state, retry_timer(), t).state;
        }
    }
    (state, t)
}

/// Attempt `attempt` in `Issuing`, `Verifying` or `Promoting` (named by `where_`), and when.
fn rotation_attempt_in(attempt: u32, where_: &str) -> (RotationState, DateTime<Utc>) {
    let (mut state, mut t) = if attempt == 1 {
        (issuing_rotation(), now())
    } else {
        let (waiting, due) = rotation_waiting_for_attempt(attempt);
        (
            accepted::<Rotation>(&waiting, retry_timer(), due).state,
            due,
        )
    };
    let version = rotation_version(attempt);
    if where_ != "Issuing" {
        t += Duration::seconds(10);
        state = accepted::<Rotation>(&state, secret_issued(&version), t).state;
    }
    if where_ == "Promoting" {
        t += Duration::seconds(10);
        state = accepted::<Rotation>(&state, secret_verified(&version), t).state;
    }
    assert_eq!(Rotation::state_name(&state), where_);
    assert_eq!(state.run().attempt, attempt);
    (state, t)
}

fn failing_command(state: &RotationState) -> &'static str {
    match Rotation::state_name(state) {
        "Issuing" => "idp.issue_secret",
        "Verifying" => "idp.test_secret",
        "Promoting" => "vault.promote",
        other => panic!("no command is out in {other}"),
    }
}

fn scenario_rotation_scheduled_start_waits_for_its_slot() {
    let slot = at(600);
    let step = started::<Rotation>(rotation_input(slot));
    let RotationState::Scheduled { run, at: when } = &step.state else {
        panic!("expected Scheduled, got {:?}", step.state)
    };
    assert_eq!(*when, slot);
    assert_eq!(
        (run.attempt, run.version.as_str()),
        (1, rotation_version(1).as_str())
    );
    assert_eq!(timers_set(&step.commands), [(rotation::START_TIMER, slot)]);
    assert!(
        idp_commands(&step.commands).is_empty(),
        "nothing is issued before the slot"
    );
    let requested = audit_of(&step.commands, AuditKind::RotationRequested);
    assert_eq!(requested.actor, Actor::Schedule(SWEEP.into()));
    assert!(requested.message.contains("90"), "{}", requested.message);

    assert_rejected(
        on::<Rotation>(
            &step.state,
            timer(rotation::START_TIMER),
            slot - Duration::seconds(1),
        ),
        "timer",
        "fired before its time",
    );
    let issuing = accepted::<Rotation>(&step.state, timer(rotation::START_TIMER), slot);
    assert!(matches!(issuing.state, RotationState::Issuing { .. }));
    assert_eq!(issuing.commands, [issue_secret(&rotation_version(1))]);
}

fn scenario_rotation_immediate_start_issues_a_pending_secret() {
    // a slot that has come (or passed) starts at once
    for start_at in [now(), at(-60)] {
        let step = started::<Rotation>(rotation_input(start_at));
        let RotationState::Issuing { run } = &step.state else {
            panic!("expected Issuing, got {:?}", step.state)
        };
        assert_eq!(run.attempt, 1);
        assert_eq!(run.version, rotation_version(1));
        assert_eq!(audit_kinds(&step.commands), [AuditKind::RotationRequested]);
        assert!(step.commands.contains(&issue_secret(&rotation_version(1))));
        assert!(timers_set(&step.commands).is_empty());
    }
    // the version is a valid, replay-stable Secrets Manager ClientRequestToken, new per attempt
    let v1 = rotation_version(1);
    assert_eq!(v1.len(), 32);
    assert!(v1.bytes().all(|b| b.is_ascii_hexdigit()), "{v1}");
    assert_eq!(v1, rotation::version_token(WORKFLOW_ID, 1));
    assert_ne!(v1, rotation_version(2));
    assert_ne!(v1, rotation::version_token("wf-0002", 1));
}

fn scenario_rotation_issued_secret_is_tested_before_promotion() {
    let step = accepted::<Rotation>(
        &issuing_rotation(),
        secret_issued(&rotation_version(1)),
        at(10),
    );
    let RotationState::Verifying { issued, .. } = &step.state else {
        panic!("expected Verifying, got {:?}", step.state)
    };
    assert_eq!(issued.new.secret_id.as_deref(), Some(NEW_SECRET_ID));
    assert_eq!(issued.new.version, Some(rotation_version(1)));
    assert_eq!(issued.old.secret_id.as_deref(), Some(OLD_SECRET_ID));
    assert_eq!(issued.old.version.as_deref(), Some(SECRET_VERSION));
    assert_eq!(
        *only_idp(&step.commands),
        IdpCommand::TestSecret {
            agent_id: AGENT_ID.into(),
            version: rotation_version(1),
        }
    );
    assert!(
        !step
            .commands
            .iter()
            .any(|c| matches!(c, Command::Vault(_) | Command::UpdateAgent { .. })),
        "an untested secret is neither promoted nor recorded: {:?}",
        names(&step.commands)
    );
    assert_eq!(audit_kinds(&step.commands), [AuditKind::SecretIssued]);
}

fn scenario_rotation_verified_secret_is_promoted() {
    let step = accepted::<Rotation>(
        &verifying_rotation(),
        secret_verified(&rotation_version(1)),
        at(20),
    );
    let RotationState::Promoting { verified_at, .. } = &step.state else {
        panic!("expected Promoting, got {:?}", step.state)
    };
    assert_eq!(*verified_at, at(20));
    assert_eq!(
        step.commands,
        [Command::Vault(VaultCommand::Promote {
            agent_id: AGENT_ID.into(),
            version: rotation_version(1),
        })]
    );
}

fn scenario_rotation_promotion_records_receipt_and_starts_grace() {
    let step = accepted::<Rotation>(
        &promoting_rotation(),
        secret_promoted(&rotation_version(1)),
        promoted_at(),
    );
    let RotationState::Grace { until, .. } = &step.state else {
        panic!("expected Grace, got {:?}", step.state)
    };
    assert_eq!(*until, promoted_at() + Duration::hours(24));
    assert_eq!(
        timers_set(&step.commands),
        [(rotation::GRACE_TIMER, grace_ends())]
    );
    assert!(
        idp_commands(&step.commands).is_empty(),
        "the old secret keeps working through the grace period"
    );

    let receipt = credential_receipt(&step.commands);
    assert_eq!(receipt.rotation, WORKFLOW_ID);
    assert_eq!(receipt.old.secret_id.as_deref(), Some(OLD_SECRET_ID));
    assert_eq!(receipt.old.version.as_deref(), Some(SECRET_VERSION));
    assert_eq!(receipt.new.secret_id.as_deref(), Some(NEW_SECRET_ID));
    assert_eq!(receipt.new.version, Some(rotation_version(1)));
    assert_eq!(receipt.old_valid_from, active_agent().credential_issued_at);
    assert_eq!(
        receipt.old_valid_until, None,
        "the old secret is still valid"
    );
    assert_eq!(receipt.new_valid_from, promoted_at());
    assert_eq!(receipt.verified_at, at(20));
    assert!(receipt.reason.contains("scheduled"), "{}", receipt.reason);
    assert_eq!(
        audit_of(&step.commands, AuditKind::SecretRotated).actor,
        Actor::System
    );

    // what the registry shows after the engine applies the change
    let mut agent = active_agent();
    agent.apply(
        &AgentChange::CredentialRotated {
            receipt: receipt.clone(),
        },
        promoted_at(),
    );
    assert_eq!(agent.secret_version, Some(rotation_version(1)));
    assert_eq!(agent.credential_issued_at, Some(promoted_at()));
    assert_eq!(agent.credentials, std::slice::from_ref(receipt));
    // a replayed change is applied once
    agent.apply(
        &AgentChange::CredentialRotated {
            receipt: receipt.clone(),
        },
        at(40),
    );
    assert_eq!(agent.credentials.len(), 1);
}

fn scenario_rotation_grace_end_removes_the_old_secret() {
    let grace = grace_rotation();
    assert_rejected(
        on::<Rotation>(
            &grace,
            timer(rotation::GRACE_TIMER),
            grace_ends() - Duration::seconds(1),
        ),
        "timer",
        "fired before its time",
    );
    let step = accepted::<Rotation>(&grace, timer(rotation::GRACE_TIMER), grace_ends());
    assert!(matches!(step.state, RotationState::RevokingOld { .. }));
    assert_eq!(
        *only_idp(&step.commands),
        IdpCommand::RemoveSecret {
            client_id: CLIENT_ID.into(),
            secret_id: OLD_SECRET_ID.into(),
        },
        "the OLD secret is removed, never the new one"
    );
}

fn scenario_rotation_old_secret_removed_completes() {
    let revoking = revoking_rotation();
    let done_at = grace_ends() + Duration::seconds(5);
    assert_rejected(
        on::<Rotation>(&revoking, secret_removed(NEW_SECRET_ID), done_at),
        "secret_id",
        "not the one this rotation replaces",
    );
    let step = accepted::<Rotation>(&revoking, secret_removed(OLD_SECRET_ID), done_at);
    assert!(matches!(
        step.state,
        RotationState::Done {
            old_removed: true,
            ..
        }
    ));
    assert!(Rotation::is_terminal(&step.state));
    let [
        AgentChange::OldSecretRevoked {
            rotation: rotation_id,
            at: revoked_at,
            removed: true,
            ..
        },
    ] = agent_changes(&step.commands).as_slice()
    else {
        panic!(
            "expected OldSecretRevoked{{removed: true}}, got {:?}",
            step.commands
        )
    };
    assert_eq!((rotation_id.as_str(), *revoked_at), (WORKFLOW_ID, done_at));
    assert!(audit_of(&step.commands, AuditKind::SecretRevoked).success);
    assert!(notifications(&step.commands).is_empty());

    // the receipt on the record now says until when the old secret worked
    let promoted = accepted::<Rotation>(
        &promoting_rotation(),
        secret_promoted(&rotation_version(1)),
        promoted_at(),
    );
    let mut agent = active_agent();
    for change in agent_changes(&promoted.commands)
        .into_iter()
        .chain(agent_changes(&step.commands))
    {
        agent.apply(change, done_at);
    }
    assert_eq!(agent.credentials[0].old_valid_until, Some(done_at));
    assert!(agent.credentials[0].old_revocation.is_some());
}

fn scenario_rotation_old_secret_removal_failure_completes_and_alerts_security() {
    let step = accepted::<Rotation>(
        &revoking_rotation(),
        command_failed("idp.remove_secret"),
        grace_ends() + Duration::seconds(5),
    );
    assert!(matches!(
        step.state,
        RotationState::Done {
            old_removed: false,
            ..
        }
    ));
    assert!(matches!(
        agent_changes(&step.commands).as_slice(),
        [AgentChange::OldSecretRevoked { removed: false, .. }]
    ));
    assert!(!audit_of(&step.commands, AuditKind::SecretRevoked).success);
    let notes = notifications(&step.commands);
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    assert!(
        notes[0].1.contains("old secret still valid"),
        "{}",
        notes[0].1
    );
    assert!(notes[0].2.contains(OLD_SECRET_ID), "{}", notes[0].2);
}

fn scenario_rotation_failure_before_promotion_retries_under_a_new_version() {
    for where_ in ["Issuing", "Verifying", "Promoting"] {
        let (state, t) = rotation_attempt_in(1, where_);
        let failed_at = t + Duration::seconds(5);
        let step = accepted::<Rotation>(&state, command_failed(failing_command(&state)), failed_at);
        let retry_at = failed_at + Duration::hours(1);
        let RotationState::RetryWait {
            run,
            at: when,
            last_error,
        } = &step.state
        else {
            panic!("{where_}: expected RetryWait, got {:?}", step.state)
        };
        assert_eq!(run.attempt, 2, "{where_}");
        assert_eq!(run.version, rotation_version(2), "{where_}");
        assert_eq!(*when, retry_at, "{where_}");
        assert!(last_error.contains("403 Forbidden"), "{last_error}");
        assert!(idp_commands(&step.commands).is_empty(), "{where_}");
        assert!(
            agent_changes(&step.commands).is_empty(),
            "{where_}: the registry is unchanged"
        );
        assert_eq!(
            timers_set(&step.commands),
            [(rotation::RETRY_TIMER, retry_at)]
        );
        assert_eq!(notified(&step.commands), [OWNER], "{where_}");
        assert!(notifications(&step.commands)[0].2.contains("keeps working"));
        assert!(!audit_of(&step.commands, AuditKind::RotationFailed).success);

        assert_rejected(
            on::<Rotation>(&step.state, retry_timer(), retry_at - Duration::seconds(1)),
            "timer",
            "fired before its time",
        );
        let retried = accepted::<Rotation>(&step.state, retry_timer(), retry_at);
        assert!(matches!(retried.state, RotationState::Issuing { .. }));
        assert_eq!(retried.commands, [issue_secret(&rotation_version(2))]);
        // a late result of the first attempt is not taken for the second
        assert_rejected(
            on::<Rotation>(
                &retried.state,
                secret_issued(&rotation_version(1)),
                retry_at,
            ),
            "version",
            "an earlier attempt",
        );
        accepted::<Rotation>(
            &retried.state,
            secret_issued(&rotation_version(2)),
            retry_at,
        );
    }
}

fn scenario_rotation_gives_up_after_the_policy_attempts() {
    let attempts = policy().lifecycle.rotation_attempts;
    assert_eq!(attempts, 3);
    // the waits double: 1 h after the first failure, 2 h after the second
    let (waiting, due) = rotation_waiting_for_attempt(3);
    assert_eq!(due, now() + Duration::hours(3));
    let RotationState::RetryWait { run, at: when, .. } = &waiting else {
        panic!("expected RetryWait, got {waiting:?}")
    };
    assert_eq!((run.attempt, *when), (3, due));

    for where_ in ["Issuing", "Verifying", "Promoting"] {
        let (state, t) = rotation_attempt_in(attempts, where_);
        let step = accepted::<Rotation>(&state, command_failed(failing_command(&state)), t);
        let RotationState::Failed { run, reason } = &step.state else {
            panic!("{where_}: expected Failed, got {:?}", step.state)
        };
        assert_eq!(run.attempt, attempts);
        assert!(reason.contains("403 Forbidden"), "{reason}");
        assert!(Rotation::is_terminal(&step.state));
        assert!(timers_set(&step.commands).is_empty(), "no further attempt");
        assert!(idp_commands(&step.commands).is_empty());
        assert!(agent_changes(&step.commands).is_empty());
        assert_eq!(
            notified(&step.commands),
            [OWNER, SECURITY_CHANNEL],
            "{where_}"
        );
        for (_, _, body) in notifications(&step.commands) {
            assert!(body.contains("still works"), "{body}");
            assert!(body.contains("steward agents rotate"), "{body}");
        }
    }
}

/// Every state a rotation waits in, each with the time it was reached.
fn waiting_rotations() -> Vec<(RotationState, DateTime<Utc>)> {
    let (retry, retry_t) = rotation_waiting_for_attempt(2);
    vec![
        (started::<Rotation>(rotation_input(at(600))).state, now()),
        (issuing_rotation(), now()),
        (verifying_rotation(), at(10)),
        (promoting_rotation(), at(20)),
        (grace_rotation(), promoted_at()),
        (revoking_rotation(), grace_ends()),
        (retry, retry_t - Duration::hours(1)),
    ]
}

fn scenario_rotation_cancel_wins_in_every_waiting_state() {
    let states = waiting_rotations();
    let names: BTreeSet<&str> = states
        .iter()
        .map(|(s, _)| Rotation::state_name(s))
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
    for (state, t) in &states {
        let name = Rotation::state_name(state);
        let freeze = Event::Cancel {
            by: Actor::Person(APPROVER.into()),
            reason: "agent frozen".into(),
        };
        let step = accepted::<Rotation>(state, freeze, *t);
        let RotationState::Cancelled { by, promoted, .. } = &step.state else {
            panic!("{name}: expected Cancelled, got {:?}", step.state)
        };
        assert_eq!(*by, Actor::Person(APPROVER.into()));
        assert_eq!(
            *promoted,
            matches!(name, "Grace" | "RevokingOld"),
            "{name}: promoted says whether the new secret is current"
        );
        assert!(Rotation::is_terminal(&step.state));
        assert!(
            idp_commands(&step.commands).is_empty(),
            "{name}: nothing new runs"
        );
        assert_eq!(
            BTreeSet::from_iter(timers_cancelled(&step.commands)),
            BTreeSet::from([
                rotation::START_TIMER,
                rotation::GRACE_TIMER,
                rotation::RETRY_TIMER
            ]),
            "{name}"
        );
        let cancelled = audit_of(&step.commands, AuditKind::RotationCancelled);
        assert_eq!(cancelled.actor, Actor::Person(APPROVER.into()));
        assert!(cancelled.message.contains(name), "{}", cancelled.message);
        // a second cancel is refused
        assert_rejected(
            on::<Rotation>(&step.state, cancel(APPROVER), *t),
            "event",
            "does not apply to rotation in state Cancelled",
        );
    }
}

fn scenario_rotation_late_results_after_cancel_are_recorded_only() {
    let cancelled = accepted::<Rotation>(&promoting_rotation(), cancel(APPROVER), at(25)).state;
    for event in [
        secret_issued(&rotation_version(1)),
        secret_verified(&rotation_version(1)),
        secret_removed("sec-unknown"),
        command_failed("vault.promote"),
    ] {
        let label = event.label();
        let step = accepted::<Rotation>(&cancelled, event, at(30));
        assert_eq!(step.state, cancelled, "{label} changes nothing");
        assert!(step.commands.is_empty(), "{label}: {:?}", step.commands);
    }
    // a removal of the old secret that was out when the cancel came is recorded on the agent
    let step = accepted::<Rotation>(&cancelled, secret_removed(OLD_SECRET_ID), at(30));
    assert_eq!(step.state, cancelled);
    assert_eq!(names(&step.commands), ["agent.update"]);
    assert!(matches!(
        &step.commands[0],
        Command::UpdateAgent {
            change: statemachines::AgentChange::OldSecretRevoked { removed: true, .. },
            ..
        }
    ));
    // the promotion was out when the cancel came: the registry must learn the new secret
    assert_rejected(
        on::<Rotation>(&cancelled, secret_promoted(&rotation_version(2)), at(30)),
        "version",
        "is not this attempt's version",
    );
    let step = accepted::<Rotation>(&cancelled, secret_promoted(&rotation_version(1)), at(30));
    assert!(matches!(
        step.state,
        RotationState::Cancelled { promoted: true, .. }
    ));
    assert_eq!(names(&step.commands), ["agent.update"]);
    let receipt = credential_receipt(&step.commands);
    assert_eq!(receipt.new.version, Some(rotation_version(1)));
    assert_eq!(receipt.old.version.as_deref(), Some(SECRET_VERSION));
    assert_eq!(receipt.new.secret_id.as_deref(), Some(NEW_SECRET_ID));
    assert_eq!(receipt.old.secret_id.as_deref(), Some(OLD_SECRET_ID));
    assert_eq!(receipt.new_valid_from, at(30));
    assert!(receipt.reason.contains("cancelled"), "{}", receipt.reason);
    assert!(
        timers_set(&step.commands).is_empty(),
        "no grace period is started"
    );
}

fn scenario_rotation_refuses_results_of_another_version() {
    let other = rotation_version(2);
    assert_rejected(
        on::<Rotation>(&issuing_rotation(), secret_issued(&other), at(10)),
        "version",
        "is not this attempt's version",
    );
    assert_rejected(
        on::<Rotation>(&verifying_rotation(), secret_verified(&other), at(20)),
        "version",
        "is not this attempt's version",
    );
    assert_rejected(
        on::<Rotation>(&promoting_rotation(), secret_promoted(&other), at(30)),
        "version",
        "is not this attempt's version",
    );
}

fn scenario_rotation_refuses_early_and_foreign_timers() {
    let scheduled = started::<Rotation>(rotation_input(at(600))).state;
    assert_rejected(
        on::<Rotation>(&scheduled, timer(rotation::START_TIMER), at(599)),
        "timer",
        "fired before its time",
    );
    assert_rejected(
        on::<Rotation>(&scheduled, timer(rotation::GRACE_TIMER), at(600)),
        "event",
        "does not apply to rotation in state Scheduled",
    );
    assert_rejected(
        on::<Rotation>(
            &grace_rotation(),
            timer(rotation::START_TIMER),
            grace_ends(),
        ),
        "event",
        "does not apply to rotation in state Grace",
    );
    assert_rejected(
        on::<Rotation>(&issuing_rotation(), timer(rotation::RETRY_TIMER), at(7200)),
        "event",
        "does not apply to rotation in state Issuing",
    );
}

fn scenario_rotation_refuses_agents_it_cannot_rotate() {
    for status in [
        AgentStatus::PendingApproval,
        AgentStatus::Provisioning,
        AgentStatus::Failed,
        AgentStatus::Decommissioned,
    ] {
        let mut input = rotation_input(now());
        input.agent.status = status;
        assert_rejected(
            start::<Rotation>(input, now()),
            "agent",
            &format!("is {}; only active agents", status.as_str()),
        );
    }
    let mut no_client = rotation_input(now());
    no_client.agent.client_id = None;
    let mut no_secret = rotation_input(now());
    no_secret.agent.secret_version = None;
    for input in [no_client, no_secret] {
        assert_rejected(
            start::<Rotation>(input, now()),
            "agent",
            "has no client secret to rotate",
        );
    }
}

fn scenario_rotation_ended_states_accept_no_new_work() {
    let done = accepted::<Rotation>(
        &revoking_rotation(),
        secret_removed(OLD_SECRET_ID),
        grace_ends(),
    )
    .state;
    let (last, t) = rotation_attempt_in(3, "Issuing");
    let failed = accepted::<Rotation>(&last, command_failed("idp.issue_secret"), t).state;
    for state in [done, failed] {
        assert!(Rotation::is_terminal(&state));
        for event in every_lifecycle_event() {
            let expected = format!(
                "{} does not apply to rotation in state {}",
                event.label(),
                Rotation::state_name(&state)
            );
            assert_rejected(
                on::<Rotation>(&state, event, grace_ends() + Duration::days(30)),
                "event",
                &expected,
            );
        }
    }
}

/// The vault held no previous credential document: the issued secret replaces nothing known.
fn grace_rotation_without_previous_secret_id() -> RotationState {
    let issued = Event::SecretIssued {
        version: rotation_version(1),
        secret_id: NEW_SECRET_ID.into(),
        previous_version: Some(SECRET_VERSION.into()),
        previous_secret_id: None,
    };
    let verifying = accepted::<Rotation>(&issuing_rotation(), issued, at(10)).state;
    let promoting =
        accepted::<Rotation>(&verifying, secret_verified(&rotation_version(1)), at(20)).state;
    accepted::<Rotation>(
        &promoting,
        secret_promoted(&rotation_version(1)),
        promoted_at(),
    )
    .state
}

/// With no previous secret id recorded there is nothing to remove: the grace timer ends it.
fn scenario_rotation_without_previous_secret_id_ends_after_grace() {
    let step = accepted::<Rotation>(
        &grace_rotation_without_previous_secret_id(),
        timer(rotation::GRACE_TIMER),
        grace_ends(),
    );
    assert!(matches!(
        step.state,
        RotationState::Done {
            old_removed: false,
            ..
        }
    ));
    assert!(idp_commands(&step.commands).is_empty());
}

// =============================================================================================
// Decommission
// =============================================================================================

fn decommission_input(reason: DecommissionReason, requested_by: Actor) -> DecommissionInput {
    DecommissionInput {
        agent: active_agent(),
        reason,
        requested_by,
    }
}

fn requested() -> DecommissionReason {
    DecommissionReason::Requested {
        why: "the incident tooling moved to another team".into(),
    }
}

fn by_owner() -> Actor {
    Actor::Person(OWNER.into())
}

fn awaiting_decommission() -> DecommissionState {
    started::<Decommission>(decommission_input(requested(), by_owner())).state
}

/// Approved one hour in: revoking tokens.
fn revoking_tokens() -> DecommissionState {
    accepted::<Decommission>(&awaiting_decommission(), approve(APPROVER), at(3600)).state
}

fn receipt_of(state: &DecommissionState) -> &RevocationReceipt {
    match state {
        DecommissionState::AwaitingApproval { receipt, .. }
        | DecommissionState::RevokingTokens { receipt, .. }
        | DecommissionState::Deactivating { receipt, .. }
        | DecommissionState::Deleting { receipt, .. }
        | DecommissionState::SchedulingSecretDeletion { receipt, .. }
        | DecommissionState::Decommissioned { receipt, .. } => receipt,
        other => panic!("no receipt in {other:?}"),
    }
}

fn supersede() -> Command {
    Command::Supersede {
        agent_id: AGENT_ID.into(),
        reason: format!("superseded by decommission {WORKFLOW_ID}"),
    }
}

fn revoke_tokens() -> Command {
    Command::Idp(IdpCommand::RevokeTokens {
        client_id: CLIENT_ID.into(),
    })
}

fn schedule_deletion() -> Command {
    Command::Vault(VaultCommand::ScheduleDeletion {
        agent_id: AGENT_ID.into(),
        recovery_days: policy().lifecycle.secret_recovery_days,
    })
}

fn delete_after(t: DateTime<Utc>) -> DateTime<Utc> {
    t + Duration::days(i64::from(policy().lifecycle.secret_recovery_days))
}

/// The receipt's steps as `(action, done)`.
fn steps_of(receipt: &RevocationReceipt) -> Vec<(&str, bool)> {
    receipt
        .steps
        .iter()
        .map(|s| (s.action.as_str(), s.done))
        .collect()
}

fn decommissioned_receipt(commands: &[Command]) -> &RevocationReceipt {
    match agent_changes(commands).as_slice() {
        [AgentChange::Decommissioned { receipt }] => receipt,
        other => panic!("expected one Decommissioned update, got {other:?}"),
    }
}

fn scenario_decommission_on_request_waits_for_security_approval() {
    for (reason, requested_by, requester) in [
        (requested(), by_owner(), OWNER),
        (
            DecommissionReason::OwnerLost {
                why: "alice left; nobody took the agent over".into(),
            },
            Actor::Person(APPROVER.into()),
            APPROVER,
        ),
    ] {
        let step = started::<Decommission>(decommission_input(reason, requested_by.clone()));
        let DecommissionState::AwaitingApproval {
            approval, receipt, ..
        } = &step.state
        else {
            panic!("expected AwaitingApproval, got {:?}", step.state)
        };
        assert_eq!(approval.action, "decommission");
        assert_eq!(approval.id, APPROVAL_ID);
        assert_eq!(approval.requester, requester);
        assert!(
            approval.approvers.iter().all(|a| a != requester) && !approval.approvers.is_empty(),
            "{:?}",
            approval.approvers
        );
        assert_eq!(approval.scopes_removed, active_agent().scopes);
        assert!(receipt.steps.is_empty() && receipt.approved_by.is_empty());
        assert_eq!(receipt.requested_by, requester);
        assert!(
            step.commands
                .contains(&Command::RequestApproval(approval.clone()))
        );
        assert!(
            timers_set(&step.commands).contains(&(APPROVAL_EXPIRY_TIMER, approval_expires_at()))
        );
        assert_eq!(
            audit_of(&step.commands, AuditKind::DecommissionRequested).actor,
            requested_by
        );
        assert!(
            idp_commands(&step.commands).is_empty(),
            "nothing is revoked before approval"
        );
        assert!(
            !step.commands.contains(&supersede()),
            "rotations go on until the decommission is approved"
        );
    }
}

fn scenario_decommission_with_a_decision_revokes_at_once() {
    let expires_on = agent_expires_on();
    for (reason, requested_by, approved_by) in [
        (
            DecommissionReason::Review {
                campaign: "2025-Q1".into(),
                decided_by: COLLEAGUE.into(),
            },
            Actor::Person(COLLEAGUE.into()),
            vec![COLLEAGUE.to_string()],
        ),
        (
            DecommissionReason::Freeze {
                decided_by: APPROVER.into(),
            },
            Actor::Person(APPROVER.into()),
            vec![APPROVER.to_string()],
        ),
        (
            DecommissionReason::Expired { expires_on },
            Actor::Schedule("expiry".into()),
            vec![],
        ),
    ] {
        let step = started::<Decommission>(decommission_input(reason.clone(), requested_by));
        let DecommissionState::RevokingTokens { receipt, .. } = &step.state else {
            panic!("{reason:?}: expected RevokingTokens, got {:?}", step.state)
        };
        assert_eq!(receipt.approved_by, approved_by, "{reason:?}");
        assert_eq!(receipt.reason, reason.describe());
        assert_eq!(receipt.client_id.as_deref(), Some(CLIENT_ID));
        assert_eq!(receipt.token_lifetime_secs, 600);
        assert_eq!(
            names(&step.commands),
            ["audit", "workflow.supersede", "idp.revoke_tokens"]
        );
        assert_eq!(
            step.commands[1..],
            [supersede(), revoke_tokens()],
            "{reason:?}"
        );
        assert!(
            !step
                .commands
                .iter()
                .any(|c| matches!(c, Command::RequestApproval(_))),
            "{reason:?} carries its decision"
        );
    }
}

fn scenario_decommission_agent_without_client_schedules_secret_deletion() {
    let mut input = decommission_input(
        DecommissionReason::Expired {
            expires_on: agent_expires_on(),
        },
        Actor::Schedule("expiry".into()),
    );
    input.agent.client_id = None;
    input.agent.status = AgentStatus::Failed;
    let step = started::<Decommission>(input);
    assert!(matches!(
        step.state,
        DecommissionState::SchedulingSecretDeletion { .. }
    ));
    assert_eq!(step.commands[1..], [supersede(), schedule_deletion()]);
    assert!(
        idp_commands(&step.commands).is_empty(),
        "no client to revoke"
    );

    let done = accepted::<Decommission>(
        &step.state,
        secret_deletion_scheduled(delete_after(at(5))),
        at(5),
    );
    let receipt = receipt_of(&done.state);
    assert!(matches!(
        done.state,
        DecommissionState::Decommissioned { .. }
    ));
    assert_eq!(steps_of(receipt), [(receipt::SCHEDULE_DELETION, true)]);
    assert_eq!(
        receipt.no_token_valid_after,
        Some(at(5)),
        "a never-provisioned agent was never issued a token"
    );
}

fn scenario_decommission_approval_starts_revocation() {
    let step = accepted::<Decommission>(&awaiting_decommission(), approve(APPROVER), at(3600));
    let DecommissionState::RevokingTokens { receipt, .. } = &step.state else {
        panic!("expected RevokingTokens, got {:?}", step.state)
    };
    assert_eq!(receipt.approved_by, [APPROVER]);
    assert!(step.commands.iter().any(|c| matches!(
        c,
        Command::CloseApproval {
            outcome: ApprovalOutcome::Approved { .. },
            ..
        }
    )));
    let cancel_at = step.commands.iter().position(|c| *c == supersede());
    let revoke_at = step.commands.iter().position(|c| *c == revoke_tokens());
    assert!(
        matches!((cancel_at, revoke_at), (Some(c), Some(r)) if c < r),
        "rotations are cancelled, then tokens revoked: {:?}",
        names(&step.commands)
    );

    // approved for an agent that has no client: straight to the vault
    let mut input = decommission_input(requested(), by_owner());
    input.agent.client_id = None;
    let awaiting = started::<Decommission>(input).state;
    let step = accepted::<Decommission>(&awaiting, approve(APPROVER), at(3600));
    assert!(matches!(
        step.state,
        DecommissionState::SchedulingSecretDeletion { .. }
    ));
    assert!(step.commands.contains(&schedule_deletion()));
    assert!(idp_commands(&step.commands).is_empty());
}

fn scenario_decommission_deny_keeps_the_agent() {
    let step = accepted::<Decommission>(&awaiting_decommission(), deny(APPROVER), at(3600));
    let DecommissionState::Kept { agent, why } = &step.state else {
        panic!("expected Kept, got {:?}", step.state)
    };
    assert_eq!(agent.status, AgentStatus::Active);
    assert!(
        why.contains(APPROVER) && why.contains("use the read-only scope"),
        "{why}"
    );
    assert!(Decommission::is_terminal(&step.state));
    assert!(idp_commands(&step.commands).is_empty());
    assert!(agent_changes(&step.commands).is_empty());
    assert!(!step.commands.contains(&supersede()));
    assert_eq!(
        audit_of(&step.commands, AuditKind::DecommissionKept).actor,
        Actor::Person(APPROVER.into())
    );
}

fn scenario_decommission_reminder_keeps_waiting_and_expiry_keeps_the_agent() {
    let awaiting = awaiting_decommission();
    let DecommissionState::AwaitingApproval { approval, .. } = &awaiting else {
        panic!("expected AwaitingApproval")
    };
    let reminded = accepted::<Decommission>(
        &awaiting,
        reminder_timer(),
        approval.remind_at.expect("the test policy reminds"),
    );
    assert_eq!(reminded.state, awaiting);
    assert!(idp_commands(&reminded.commands).is_empty());

    let expired = accepted::<Decommission>(&awaiting, expiry_timer(), approval_expires_at());
    let DecommissionState::Kept { why, .. } = &expired.state else {
        panic!("expected Kept, got {:?}", expired.state)
    };
    assert!(why.contains("expired"), "{why}");
    assert!(idp_commands(&expired.commands).is_empty());
    assert!(audit_kinds(&expired.commands).contains(&AuditKind::ApprovalExpired));
    assert_rejected(
        on::<Decommission>(
            &awaiting,
            expiry_timer(),
            approval_expires_at() - Duration::seconds(1),
        ),
        "timer",
        "does not expire until",
    );
}

fn scenario_decommission_requester_may_withdraw_while_waiting() {
    let awaiting = awaiting_decommission();
    assert_rejected(
        on::<Decommission>(&awaiting, cancel(OUTSIDER), at(60)),
        "by",
        "may not cancel approval",
    );
    let step = accepted::<Decommission>(&awaiting, cancel(OWNER), at(60));
    assert!(matches!(step.state, DecommissionState::Cancelled { .. }));
    assert!(Decommission::is_terminal(&step.state));
    assert!(idp_commands(&step.commands).is_empty());
    assert!(step.commands.iter().any(|c| matches!(
        c,
        Command::CloseApproval {
            outcome: ApprovalOutcome::Cancelled { .. },
            ..
        }
    )));
    assert_eq!(
        audit_of(&step.commands, AuditKind::RequestCancelled).actor,
        by_owner()
    );
    // once the IdP steps run there is nothing to withdraw
    assert_rejected(
        on::<Decommission>(&revoking_tokens(), cancel(OWNER), at(3700)),
        "event",
        "does not apply to decommission in state RevokingTokens",
    );
}

fn scenario_decommission_walks_every_step_into_the_receipt() {
    let revoked_at = at(3610);
    let deactivated_at = at(3620);
    let deleted_at = at(3630);
    let scheduled_at = at(3640);

    let deactivating = accepted::<Decommission>(&revoking_tokens(), tokens_revoked(), revoked_at);
    assert!(matches!(
        deactivating.state,
        DecommissionState::Deactivating { .. }
    ));
    assert_eq!(
        deactivating.commands,
        [Command::Idp(IdpCommand::DeactivateClient {
            client_id: CLIENT_ID.into()
        })]
    );

    let deleting =
        accepted::<Decommission>(&deactivating.state, client_deactivated(), deactivated_at);
    assert!(matches!(deleting.state, DecommissionState::Deleting { .. }));
    assert_eq!(
        *only_idp(&deleting.commands),
        IdpCommand::DeleteClient {
            client_id: CLIENT_ID.into()
        }
    );
    assert!(
        audit_of(&deleting.commands, AuditKind::ClientDisabled)
            .message
            .contains(&deactivated_at.to_rfc3339())
    );

    let scheduling = accepted::<Decommission>(&deleting.state, client_deleted(), deleted_at);
    assert!(matches!(
        scheduling.state,
        DecommissionState::SchedulingSecretDeletion { .. }
    ));
    assert_eq!(scheduling.commands, [schedule_deletion()]);

    let done = accepted::<Decommission>(
        &scheduling.state,
        secret_deletion_scheduled(delete_after(scheduled_at)),
        scheduled_at,
    );
    let DecommissionState::Decommissioned { agent, receipt } = &done.state else {
        panic!("expected Decommissioned, got {:?}", done.state)
    };
    assert!(Decommission::is_terminal(&done.state));
    assert_eq!(
        steps_of(receipt),
        [
            (receipt::REVOKE, true),
            (receipt::DEACTIVATE, true),
            (receipt::DELETE, true),
            (receipt::SCHEDULE_DELETION, true),
        ]
    );
    let times: Vec<_> = receipt.steps.iter().map(|s| s.at).collect();
    assert_eq!(
        times,
        [revoked_at, deactivated_at, deleted_at, scheduled_at]
    );
    assert!(
        receipt.steps[0]
            .detail
            .contains("access tokens until they expire")
    );
    assert_eq!(
        receipt.no_token_valid_after,
        Some(deactivated_at + Duration::seconds(600)),
        "tokens issued before the client was disabled live one token lifetime more"
    );
    assert_eq!(
        receipt.secret_deleted_after,
        Some(delete_after(scheduled_at))
    );
    assert_eq!(receipt.completed_at, Some(scheduled_at));
    assert_eq!(receipt.approved_by, [APPROVER]);

    // the registry archives the record with the same receipt
    assert_eq!(decommissioned_receipt(&done.commands), receipt);
    assert_eq!(agent.status, AgentStatus::Decommissioned);
    assert_eq!(agent.decommission.as_ref(), Some(receipt));
    let mut stored = active_agent();
    stored.apply(agent_changes(&done.commands)[0], scheduled_at);
    assert_eq!(stored.status, AgentStatus::Decommissioned);
    assert_eq!(
        stored.client_id.as_deref(),
        Some(CLIENT_ID),
        "archived, not erased"
    );

    let audit = audit_of(&done.commands, AuditKind::Decommissioned);
    assert!(audit.success);
    assert!(
        audit
            .message
            .contains("no token issued to it is valid after")
    );
    assert_eq!(notified(&done.commands), [OWNER]);
    assert!(idp_commands(&done.commands).is_empty());
}

fn scenario_decommission_failed_steps_are_recorded_and_it_goes_on() {
    let mut state = revoking_tokens();
    let mut t = at(3600);
    for (command, next) in [
        ("idp.revoke_tokens", "Deactivating"),
        ("idp.deactivate_client", "Deleting"),
        ("idp.delete_client", "SchedulingSecretDeletion"),
        ("vault.schedule_deletion", "Decommissioned"),
    ] {
        t += Duration::seconds(10);
        let step = accepted::<Decommission>(&state, command_failed(command), t);
        assert_eq!(
            Decommission::state_name(&step.state),
            next,
            "after {command} failed"
        );
        state = step.state;
        if next == "Deleting" {
            assert!(
                !audit_kinds(&step.commands).contains(&AuditKind::ClientDisabled),
                "the client was not disabled"
            );
        }
        if next == "Decommissioned" {
            assert!(!audit_of(&step.commands, AuditKind::Decommissioned).success);
            let (_, _, body) = notifications(&step.commands)[0];
            assert!(body.contains("could not be disabled"), "{body}");
            assert!(
                body.contains("Not done: revoke tokens, deactivate client"),
                "{body}"
            );
            assert_eq!(decommissioned_receipt(&step.commands), receipt_of(&state));
        }
    }
    let receipt = receipt_of(&state);
    assert_eq!(
        steps_of(receipt),
        [
            (receipt::REVOKE, false),
            (receipt::DEACTIVATE, false),
            (receipt::DELETE, false),
            (receipt::SCHEDULE_DELETION, false),
        ]
    );
    assert!(
        receipt
            .steps
            .iter()
            .all(|s| s.detail.contains("403 Forbidden"))
    );
    assert_eq!(
        receipt.no_token_valid_after, None,
        "the client was neither deactivated nor deleted"
    );
    assert_eq!(receipt.secret_deleted_after, None);
    assert_eq!(
        state.agent().status,
        AgentStatus::Decommissioned,
        "archived all the same"
    );

    // deactivation failed but the delete worked: tokens end one lifetime after the delete
    let deactivating =
        accepted::<Decommission>(&revoking_tokens(), tokens_revoked(), at(3610)).state;
    let deleting = accepted::<Decommission>(
        &deactivating,
        command_failed("idp.deactivate_client"),
        at(3620),
    )
    .state;
    let scheduling = accepted::<Decommission>(&deleting, client_deleted(), at(3630)).state;
    let done = accepted::<Decommission>(
        &scheduling,
        secret_deletion_scheduled(delete_after(at(3640))),
        at(3640),
    );
    let receipt = receipt_of(&done.state);
    assert_eq!(
        steps_of(receipt),
        [
            (receipt::REVOKE, true),
            (receipt::DEACTIVATE, false),
            (receipt::DELETE, true),
            (receipt::SCHEDULE_DELETION, true),
        ]
    );
    assert_eq!(
        receipt.no_token_valid_after,
        Some(at(3630) + Duration::seconds(600))
    );
}

fn scenario_decommission_refuses_agents_not_in_service() {
    let mut gone = decommission_input(requested(), by_owner());
    gone.agent.status = AgentStatus::Decommissioned;
    assert_rejected(
        start::<Decommission>(gone, now()),
        "agent",
        "is decommissioned already",
    );
    for status in [
        AgentStatus::PendingApproval,
        AgentStatus::Provisioning,
        AgentStatus::Denied,
        AgentStatus::Cancelled,
    ] {
        let mut input = decommission_input(
            DecommissionReason::Freeze {
                decided_by: APPROVER.into(),
            },
            Actor::Person(APPROVER.into()),
        );
        input.agent.status = status;
        assert_rejected(
            start::<Decommission>(input, now()),
            "agent",
            "cancel a pending request instead",
        );
    }
}

fn scenario_decommission_refuses_results_out_of_order() {
    assert_rejected(
        on::<Decommission>(&awaiting_decommission(), tokens_revoked(), at(60)),
        "event",
        "does not apply to decommission in state AwaitingApproval",
    );
    assert_rejected(
        on::<Decommission>(&revoking_tokens(), client_deleted(), at(3700)),
        "event",
        "does not apply to decommission in state RevokingTokens",
    );
    assert_rejected(
        on::<Decommission>(&revoking_tokens(), approve(OTHER_APPROVER), at(3700)),
        "event",
        "does not apply to decommission in state RevokingTokens",
    );
    // A failed notice (another command of the workflow) is not the revocation's failure.
    assert_rejected(
        on::<Decommission>(
            &revoking_tokens(),
            command_failed("approval.close"),
            at(3700),
        ),
        "event",
        "does not apply to decommission in state RevokingTokens",
    );
    assert_rejected(
        on::<Rotation>(&issuing_rotation(), command_failed("notify"), at(10)),
        "event",
        "does not apply to rotation in state Issuing",
    );
}

fn scenario_decommission_ended_states_accept_no_event() {
    let awaiting = awaiting_decommission();
    let mut state = revoking_tokens();
    for event in [
        tokens_revoked(),
        client_deactivated(),
        client_deleted(),
        secret_deletion_scheduled(delete_after(at(3700))),
    ] {
        state = accepted::<Decommission>(&state, event, at(3700)).state;
    }
    let ended = [
        state,
        accepted::<Decommission>(&awaiting, deny(APPROVER), at(60)).state,
        accepted::<Decommission>(&awaiting, cancel(OWNER), at(60)).state,
    ];
    let names: BTreeSet<&str> = ended.iter().map(Decommission::state_name).collect();
    assert_eq!(
        names,
        BTreeSet::from(["Decommissioned", "Kept", "Cancelled"])
    );
    for state in &ended {
        assert!(Decommission::is_terminal(state));
        for event in every_lifecycle_event() {
            let expected = format!(
                "{} does not apply to decommission in state {}",
                event.label(),
                Decommission::state_name(state)
            );
            assert_rejected(
                on::<Decommission>(state, event, approval_expires_at()),
                "event",
                &expected,
            );
        }
    }
}

// =============================================================================================
// Expiry
// =============================================================================================

fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a date")
}

fn reminder_lead() -> Duration {
    Duration::seconds(policy().lifecycle.expiry_reminder_secs as i64)
}

fn expiry_input() -> ExpiryInput {
    ExpiryInput {
        agent: active_agent(),
    }
}

/// `active_agent()` expires on 2025-12-31: decommissioned from 2026-01-01 00:00 UTC.
fn expiry_deadline_at() -> DateTime<Utc> {
    decommission::expiry_deadline(agent_expires_on())
}

fn counting() -> ExpiryState {
    started::<Expiry>(expiry_input()).state
}

const RENEW_UNTIL: (i32, u32, u32) = (2026, 6, 30);

fn renew_until() -> NaiveDate {
    ymd(RENEW_UNTIL.0, RENEW_UNTIL.1, RENEW_UNTIL.2)
}

fn renewal_by(by: &str) -> Event {
    renewal_requested(renew_until(), by, "the incident tooling still needs it")
}

/// The owner asked for a renewal at `t`.
fn awaiting_renewal_at(t: DateTime<Utc>) -> ExpiryState {
    accepted::<Expiry>(&counting(), renewal_by(OWNER), t).state
}

fn approval_of(state: &ExpiryState) -> &ApprovalRequest {
    match state {
        ExpiryState::AwaitingRenewal { approval, .. } => approval,
        other => panic!("expected AwaitingRenewal, got {other:?}"),
    }
}

fn scenario_expiry_start_arms_deadline_and_reminder() {
    let step = started::<Expiry>(expiry_input());
    assert_eq!(
        step.state,
        ExpiryState::Counting {
            agent: active_agent(),
            expires_on: ymd(2025, 12, 31),
            reminded: false,
        }
    );
    let deadline = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(
        expiry_deadline_at(),
        deadline,
        "the day after the expiry date, 00:00 UTC"
    );
    assert_eq!(
        timers_set(&step.commands),
        [
            (expiry::DEADLINE_TIMER, deadline),
            (expiry::REMINDER_TIMER, deadline - Duration::days(14)),
        ]
    );
    assert!(
        notifications(&step.commands).is_empty(),
        "too early to remind"
    );

    // no expiry date, nothing to watch
    let mut input = expiry_input();
    input.agent.expires_on = None;
    assert_rejected(
        start::<Expiry>(input, now()),
        "expires_on",
        "has no expiry date",
    );
}

fn scenario_expiry_start_within_reminder_lead_reminds_at_once() {
    let mut input = expiry_input();
    let expires_on = today() + chrono::Days::new(5);
    input.agent.expires_on = Some(expires_on);
    let step = started::<Expiry>(input);
    assert!(matches!(
        step.state,
        ExpiryState::Counting { reminded: true, .. }
    ));
    assert_eq!(
        timers_set(&step.commands),
        [(
            expiry::DEADLINE_TIMER,
            decommission::expiry_deadline(expires_on)
        )]
    );
    assert_eq!(timers_cancelled(&step.commands), [expiry::REMINDER_TIMER]);
    assert_eq!(notified(&step.commands), [OWNER]);
    assert!(
        notifications(&step.commands)[0]
            .1
            .contains(&expires_on.to_string())
    );
    assert!(audit_kinds(&step.commands).contains(&AuditKind::ExpiryReminded));
}

fn scenario_expiry_reminder_tells_the_owner_once() {
    let remind_at = expiry_deadline_at() - reminder_lead();
    let step = accepted::<Expiry>(&counting(), timer(expiry::REMINDER_TIMER), remind_at);
    assert!(matches!(
        step.state,
        ExpiryState::Counting { reminded: true, .. }
    ));
    let notes = notifications(&step.commands);
    assert_eq!(notified(&step.commands), [OWNER]);
    assert!(
        notes[0].1.contains("expires on 2025-12-31"),
        "{}",
        notes[0].1
    );
    assert!(
        notes[0].2.contains("steward agents renew"),
        "{}",
        notes[0].2
    );
    assert!(
        notes[0].2.contains("2026-01-01 00:00 UTC"),
        "{}",
        notes[0].2
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::ExpiryReminded).actor,
        Actor::Schedule(expiry::REMINDER_TIMER.into())
    );
    assert!(idp_commands(&step.commands).is_empty());
    assert_rejected(
        on::<Expiry>(&step.state, timer(expiry::REMINDER_TIMER), remind_at),
        "timer",
        "reminded already",
    );
}

fn scenario_expiry_renewal_request_asks_security() {
    for by in [OWNER, APPROVER] {
        let step = accepted::<Expiry>(&counting(), renewal_by(by), at(60));
        let ExpiryState::AwaitingRenewal {
            until,
            expires_on,
            approval,
            ..
        } = &step.state
        else {
            panic!("expected AwaitingRenewal, got {:?}", step.state)
        };
        assert_eq!((*until, *expires_on), (renew_until(), agent_expires_on()));
        assert_eq!(approval.action, "renew");
        assert_eq!(approval.requester, by);
        assert!(
            !approval.approvers.iter().any(|a| a == by),
            "{:?}",
            approval.approvers
        );
        assert!(
            approval.justification.contains("2026-06-30"),
            "{}",
            approval.justification
        );
        assert!(
            step.commands
                .contains(&Command::RequestApproval(approval.clone()))
        );
        assert_eq!(
            audit_of(&step.commands, AuditKind::RenewalRequested).actor,
            Actor::Person(by.into())
        );
        assert!(
            agent_changes(&step.commands).is_empty(),
            "the date moves only once approved"
        );
    }
}

fn scenario_expiry_approved_renewal_moves_the_date() {
    let awaiting = awaiting_renewal_at(now());
    let step = accepted::<Expiry>(&awaiting, approve(APPROVER), at(3600));
    let ExpiryState::Counting {
        agent,
        expires_on,
        reminded,
    } = &step.state
    else {
        panic!("expected Counting, got {:?}", step.state)
    };
    assert_eq!(*expires_on, renew_until());
    assert_eq!(agent.expires_on, Some(renew_until()));
    assert!(!reminded, "the owner is reminded again before the new date");
    assert_eq!(
        agent_changes(&step.commands),
        [&AgentChange::ExpiresOn {
            date: renew_until()
        }]
    );
    let new_deadline = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
    assert_eq!(
        timers_set(&step.commands),
        [
            (expiry::DEADLINE_TIMER, new_deadline),
            (expiry::REMINDER_TIMER, new_deadline - reminder_lead()),
        ]
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::Renewed).actor,
        Actor::Person(APPROVER.into())
    );
    // the old deadline no longer ends the agent
    assert_rejected(
        on::<Expiry>(
            &step.state,
            timer(expiry::DEADLINE_TIMER),
            expiry_deadline_at(),
        ),
        "timer",
        "fired before 2026-06-30 ended",
    );
    let mut stored = active_agent();
    stored.apply(agent_changes(&step.commands)[0], at(3600));
    assert_eq!(stored.expires_on, Some(renew_until()));
}

fn scenario_expiry_denied_or_unanswered_renewal_keeps_the_date() {
    let awaiting = awaiting_renewal_at(now());
    let approval = approval_of(&awaiting).clone();
    let denied = accepted::<Expiry>(&awaiting, deny(APPROVER), at(3600));
    let reminded = accepted::<Expiry>(
        &awaiting,
        reminder_timer(),
        approval.remind_at.expect("the test policy reminds"),
    );
    assert_eq!(reminded.state, awaiting, "a reminder keeps waiting");
    let expired = accepted::<Expiry>(&awaiting, expiry_timer(), approval.expires_at);
    for step in [denied, expired] {
        let ExpiryState::Counting {
            expires_on, agent, ..
        } = &step.state
        else {
            panic!("expected Counting, got {:?}", step.state)
        };
        assert_eq!(*expires_on, agent_expires_on());
        assert_eq!(agent.expires_on, Some(agent_expires_on()));
        assert!(agent_changes(&step.commands).is_empty());
        assert!(
            !timers_set(&step.commands)
                .iter()
                .any(|(name, _)| *name == expiry::DEADLINE_TIMER),
            "the deadline stays armed as it was"
        );
        assert!(
            step.commands
                .iter()
                .any(|c| matches!(c, Command::CloseApproval { .. }))
        );
        // the deadline still ends it
        let ended = accepted::<Expiry>(
            &step.state,
            timer(expiry::DEADLINE_TIMER),
            expiry_deadline_at(),
        );
        assert!(matches!(ended.state, ExpiryState::Ended { .. }));
    }
}

fn scenario_expiry_deadline_starts_the_decommission() {
    let step = accepted::<Expiry>(
        &counting(),
        timer(expiry::DEADLINE_TIMER),
        expiry_deadline_at(),
    );
    assert_eq!(
        step.state,
        ExpiryState::Ended {
            agent: active_agent(),
            expires_on: agent_expires_on(),
        }
    );
    assert!(Expiry::is_terminal(&step.state));
    assert!(step.commands.contains(&Command::StartDecommission {
        agent_id: AGENT_ID.into(),
        reason: DecommissionReason::Expired {
            expires_on: agent_expires_on()
        },
    }));
    assert_eq!(timers_cancelled(&step.commands), [expiry::REMINDER_TIMER]);
    assert!(
        idp_commands(&step.commands).is_empty(),
        "the decommission does the revoking"
    );

    // a renewal still undecided when the date passes is withdrawn
    let asked_at = expiry_deadline_at() - Duration::hours(1);
    let awaiting = awaiting_renewal_at(asked_at);
    let step = accepted::<Expiry>(
        &awaiting,
        timer(expiry::DEADLINE_TIMER),
        expiry_deadline_at(),
    );
    assert!(matches!(step.state, ExpiryState::Ended { .. }));
    assert!(step.commands.iter().any(|c| matches!(
        c,
        Command::CloseApproval {
            outcome: ApprovalOutcome::Cancelled { .. },
            ..
        }
    )));
    assert!(
        timers_cancelled(&step.commands).contains(&APPROVAL_EXPIRY_TIMER),
        "{:?}",
        step.commands
    );
    assert!(step.commands.iter().any(|c| matches!(
        c,
        Command::StartDecommission {
            reason: DecommissionReason::Expired { .. },
            ..
        }
    )));
}

fn scenario_expiry_refuses_renewals_that_do_not_hold() {
    let counting = counting();
    for until in [agent_expires_on(), ymd(2025, 6, 1)] {
        assert_rejected(
            on::<Expiry>(
                &counting,
                renewal_requested(until, OWNER, "still needed"),
                at(60),
            ),
            "until",
            "must move the expiry date 2025-12-31 later",
        );
    }
    assert_rejected(
        on::<Expiry>(&counting, renewal_by(OUTSIDER), at(60)),
        "by",
        "is neither the owner",
    );
    assert_rejected(
        on::<Expiry>(
            &counting,
            renewal_requested(renew_until(), OWNER, "  "),
            at(60),
        ),
        "reason",
        "say why",
    );
    // every problem at once
    let both = assert_rejected(
        on::<Expiry>(
            &counting,
            renewal_requested(renew_until(), OUTSIDER, ""),
            at(60),
        ),
        "by",
        "is neither the owner",
    );
    assert_eq!(both.reasons.len(), 2, "{both}");
    // one renewal at a time
    assert_rejected(
        on::<Expiry>(&awaiting_renewal_at(now()), renewal_by(OWNER), at(60)),
        "event",
        "does not apply to expiry in state AwaitingRenewal",
    );
    // the requester does not approve their own renewal
    assert_rejected(
        on::<Expiry>(&awaiting_renewal_at(now()), approve(OWNER), at(60)),
        "approver",
        "cannot approve it",
    );
}

fn scenario_expiry_refuses_early_deadline() {
    let early = expiry_deadline_at() - Duration::seconds(1);
    assert_rejected(
        on::<Expiry>(&counting(), timer(expiry::DEADLINE_TIMER), early),
        "timer",
        "fired before 2025-12-31 ended",
    );
    let awaiting = awaiting_renewal_at(expiry_deadline_at() - Duration::hours(1));
    assert_rejected(
        on::<Expiry>(&awaiting, timer(expiry::DEADLINE_TIMER), early),
        "timer",
        "fired before 2025-12-31 ended",
    );
}

fn scenario_expiry_ended_accepts_no_event() {
    let ended = accepted::<Expiry>(
        &counting(),
        timer(expiry::DEADLINE_TIMER),
        expiry_deadline_at(),
    )
    .state;
    for event in every_lifecycle_event() {
        let expected = format!("{} does not apply to expiry in state Ended", event.label());
        assert_rejected(
            on::<Expiry>(&ended, event, expiry_deadline_at() + Duration::days(1)),
            "event",
            &expected,
        );
    }
}

// =============================================================================================
// Access reviews: campaign
// =============================================================================================

const CAMPAIGN_ID: &str = "2025-q1";
const CAMPAIGN_NAME: &str = "Q1 2025 access review";

/// Launched at `now()` with the policy's duration: 2025-03-24 09:00 UTC.
fn campaign_deadline() -> DateTime<Utc> {
    now() + Duration::seconds(policy().reviews.duration_secs as i64)
}

fn campaign_with(unanswered: Unanswered) -> Campaign {
    Campaign {
        id: CAMPAIGN_ID.into(),
        name: CAMPAIGN_NAME.into(),
        scope: CampaignScope::default(),
        started_by: Actor::Person(APPROVER.into()),
        started_at: now(),
        deadline: campaign_deadline(),
        unanswered,
    }
}

fn campaign_input() -> CampaignInput {
    CampaignInput {
        campaign: campaign_with(Unanswered::KeepAndFlag),
    }
}

fn launching() -> CampaignState {
    started::<ReviewCampaign>(campaign_input()).state
}

/// Every item went out in one round of `items`.
fn reviewing(items: u64) -> CampaignState {
    accepted::<ReviewCampaign>(&launching(), reviews_launched(1, items, false), at(60)).state
}

fn launch_reviews(round: u32) -> Command {
    Command::LaunchReviews {
        campaign_id: CAMPAIGN_ID.into(),
        round,
    }
}

fn launch_commands(commands: &[Command]) -> Vec<&Command> {
    commands
        .iter()
        .filter(|c| matches!(c, Command::LaunchReviews { .. }))
        .collect()
}

fn close_timer() -> Event {
    timer(review_campaign::CLOSE_TIMER)
}

/// The close of a campaign: audited by the close timer, announced to the security channel.
fn assert_campaign_closed(commands: &[Command], items: u64) {
    let audit = audit_of(commands, AuditKind::CampaignClosed);
    assert_eq!(
        audit.actor,
        Actor::Schedule(review_campaign::CLOSE_TIMER.into())
    );
    assert!(
        audit.message.contains(&format!("campaign {CAMPAIGN_ID}"))
            && audit.message.contains(&format!("{items} items"))
            && audit.message.contains("keep_and_flag"),
        "{}",
        audit.message
    );
    let notes = notifications(commands);
    assert_eq!(notified(commands), [SECURITY_CHANNEL]);
    assert!(notes[0].1.contains(CAMPAIGN_NAME), "{}", notes[0].1);
    assert!(
        notes[0].2.contains(&format!("{items} review items"))
            && notes[0].2.contains("keep_and_flag")
            && notes[0]
                .2
                .contains(&format!("steward campaigns report {CAMPAIGN_ID}")),
        "{}",
        notes[0].2
    );
    assert!(launch_commands(commands).is_empty());
}

fn scenario_campaign_start_launches_round_one_and_arms_the_close_timer() {
    let step = started::<ReviewCampaign>(campaign_input());
    assert_eq!(
        step.state,
        CampaignState::Launching {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            launched: 0,
            round: 1,
            deadline_passed: false,
        }
    );
    assert!(!ReviewCampaign::is_terminal(&step.state));
    assert_eq!(
        timers_set(&step.commands),
        [(review_campaign::CLOSE_TIMER, campaign_deadline())]
    );
    assert_eq!(launch_commands(&step.commands), [&launch_reviews(1)]);
    let audit = audit_of(&step.commands, AuditKind::CampaignLaunched);
    assert_eq!(audit.actor, Actor::Person(APPROVER.into()));
    assert!(audit.success);
    for part in [
        "campaign 2025-q1",
        APPROVER,
        "all active agents",
        "keep_and_flag",
        &campaign_deadline().to_rfc3339(),
    ] {
        assert!(audit.message.contains(part), "{part}: {}", audit.message);
    }
    assert!(
        notifications(&step.commands).is_empty(),
        "owners hear from their items"
    );
}

fn scenario_campaign_launches_in_rounds_until_every_item_is_out() {
    let batch = u64::from(policy().reviews.launch_batch);
    let round1 = accepted::<ReviewCampaign>(&launching(), reviews_launched(1, batch, true), at(60));
    assert_eq!(
        round1.state,
        CampaignState::Launching {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            launched: batch,
            round: 2,
            deadline_passed: false,
        }
    );
    assert_eq!(round1.commands, [launch_reviews(2)], "the next round only");

    let round2 =
        accepted::<ReviewCampaign>(&round1.state, reviews_launched(2, 150, false), at(120));
    assert_eq!(
        round2.state,
        CampaignState::Reviewing {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            items: batch + 150,
        }
    );
    assert!(!ReviewCampaign::is_terminal(&round2.state));
    assert!(launch_commands(&round2.commands).is_empty());
    let audit = audit_of(&round2.commands, AuditKind::CampaignLaunched);
    assert_eq!(audit.actor, Actor::System);
    assert!(
        audit.message.contains(&format!(
            "{} review items sent to their owners",
            batch + 150
        )),
        "{}",
        audit.message
    );
    assert!(
        timers_set(&round2.commands).is_empty(),
        "the close timer stays as armed at the start"
    );
}

fn scenario_campaign_closes_at_its_deadline() {
    let reviewing = reviewing(42);
    let step = accepted::<ReviewCampaign>(&reviewing, close_timer(), campaign_deadline());
    assert_eq!(
        step.state,
        CampaignState::Closed {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            items: 42,
            closed_at: campaign_deadline(),
        }
    );
    assert!(ReviewCampaign::is_terminal(&step.state));
    assert_campaign_closed(&step.commands, 42);
}

fn scenario_campaign_deadline_during_launch_closes_after_the_last_round() {
    let passed = accepted::<ReviewCampaign>(&launching(), close_timer(), campaign_deadline());
    assert_eq!(
        passed.state,
        CampaignState::Launching {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            launched: 0,
            round: 1,
            deadline_passed: true,
        }
    );
    assert!(
        passed.commands.is_empty(),
        "nothing closes while items are being sent"
    );

    // After the deadline no further round starts: items nobody could answer get no default.
    let late = campaign_deadline() + Duration::minutes(5);
    let last = accepted::<ReviewCampaign>(&passed.state, reviews_launched(1, 2000, true), late);
    assert_eq!(
        last.state,
        CampaignState::Closed {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            items: 2000,
            closed_at: late,
        }
    );
    assert!(ReviewCampaign::is_terminal(&last.state));
    assert!(
        !last.commands.contains(&launch_reviews(2)),
        "no round after the deadline"
    );
    assert_campaign_closed(&last.commands, 2000);
}

fn scenario_campaign_launch_failure_fails_and_tells_security() {
    let round2 =
        accepted::<ReviewCampaign>(&launching(), reviews_launched(1, 2000, true), at(60)).state;
    let step =
        accepted::<ReviewCampaign>(&round2, command_failed("workflow.launch_reviews"), at(120));
    assert_eq!(
        step.state,
        CampaignState::Failed {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            launched: 2000,
            reason: "403 Forbidden".into(),
        }
    );
    assert!(ReviewCampaign::is_terminal(&step.state));
    let audit = audit_of(&step.commands, AuditKind::CampaignLaunched);
    assert!(!audit.success);
    assert!(
        audit
            .message
            .contains("the launch stopped after 2000 items: 403 Forbidden"),
        "{}",
        audit.message
    );
    let notes = notifications(&step.commands);
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    assert!(notes[0].1.contains(CAMPAIGN_NAME), "{}", notes[0].1);
    assert!(
        notes[0].2.contains(&format!(
            "stay open until {}",
            campaign_deadline().to_rfc3339()
        )),
        "{}",
        notes[0].2
    );
    assert!(launch_commands(&step.commands).is_empty());

    // another command's failure is not the launch's
    assert_rejected(
        on::<ReviewCampaign>(&round2, command_failed("review.ask"), at(120)),
        "event",
        "CommandFailed does not apply to review_campaign in state Launching",
    );
}

fn scenario_campaign_refuses_a_deadline_not_in_the_future_or_a_bad_id() {
    for deadline in [now(), now() - Duration::days(1)] {
        let mut input = campaign_input();
        input.campaign.deadline = deadline;
        assert_rejected(
            start::<ReviewCampaign>(input, now()),
            "deadline",
            &format!("deadline {} is not in the future", deadline.to_rfc3339()),
        );
    }
    let too_long = "a".repeat(41);
    for id in [
        "",
        "Q1-2025",
        "2025_q1",
        "2025 q1",
        "-2025-q1",
        "2025/q1",
        "ü",
        too_long.as_str(),
    ] {
        let refused = review_campaign::check_id(id).expect_err(id);
        assert_eq!(refused.reasons.len(), 1, "{refused}");
        assert_eq!(refused.reasons[0].field, "id", "{refused}");
        let mut input = campaign_input();
        input.campaign.id = id.into();
        assert_rejected(
            start::<ReviewCampaign>(input, now()),
            "id",
            "must be 1 to 40 lowercase letters, digits and dashes",
        );
    }
    let forty = "a".repeat(40);
    for id in ["2025-q4", "q1", "7", forty.as_str()] {
        assert_eq!(review_campaign::check_id(id), Ok(()), "{id}");
    }
    // a campaign needs a name; every problem at once
    let mut input = campaign_input();
    input.campaign.name = "  ".into();
    input.campaign.deadline = now();
    let both = assert_rejected(
        start::<ReviewCampaign>(input, now()),
        "name",
        "a campaign needs a name",
    );
    assert_eq!(both.reasons.len(), 2, "{both}");
}

fn scenario_campaign_refuses_a_launch_report_of_another_round() {
    let launching = launching();
    for round in [0, 2] {
        assert_rejected(
            on::<ReviewCampaign>(&launching, reviews_launched(round, 10, false), at(60)),
            "round",
            &format!("launch round {round} is not the current round 1"),
        );
    }
    // a repeated report of a round already counted counts nothing twice
    let round2 =
        accepted::<ReviewCampaign>(&launching, reviews_launched(1, 10, true), at(60)).state;
    assert_rejected(
        on::<ReviewCampaign>(&round2, reviews_launched(1, 10, false), at(120)),
        "round",
        "launch round 1 is not the current round 2",
    );
    // once every item is out, no launch report applies
    assert_rejected(
        on::<ReviewCampaign>(&reviewing(10), reviews_launched(2, 10, false), at(120)),
        "event",
        "ReviewsLaunched does not apply to review_campaign in state Reviewing",
    );
}

fn scenario_campaign_refuses_an_early_close_timer_and_ended_campaigns_accept_no_event() {
    let early = campaign_deadline() - Duration::seconds(1);
    assert_rejected(
        on::<ReviewCampaign>(&launching(), close_timer(), early),
        "event",
        "TimerFired does not apply to review_campaign in state Launching",
    );
    assert_rejected(
        on::<ReviewCampaign>(&reviewing(10), close_timer(), early),
        "event",
        "TimerFired does not apply to review_campaign in state Reviewing",
    );
    // an item's timer is not the campaign's
    assert_rejected(
        on::<ReviewCampaign>(
            &reviewing(10),
            timer(review_item::DEADLINE_TIMER),
            campaign_deadline(),
        ),
        "event",
        "TimerFired does not apply to review_campaign in state Reviewing",
    );

    let closed =
        accepted::<ReviewCampaign>(&reviewing(10), close_timer(), campaign_deadline()).state;
    let failed = accepted::<ReviewCampaign>(
        &launching(),
        command_failed("workflow.launch_reviews"),
        at(60),
    )
    .state;
    for (state, name) in [(closed, "Closed"), (failed, "Failed")] {
        for event in every_review_event() {
            let expected = format!(
                "{} does not apply to review_campaign in state {name}",
                event.label()
            );
            assert_rejected(
                on::<ReviewCampaign>(&state, event, campaign_deadline() + Duration::days(1)),
                "event",
                &expected,
            );
        }
    }
}

// =============================================================================================
// Access reviews: items
// =============================================================================================

fn remind_at() -> DateTime<Utc> {
    campaign_deadline() - Duration::seconds(policy().reviews.remind_before_secs as i64)
}

fn escalate_at() -> DateTime<Utc> {
    campaign_deadline() - Duration::seconds(policy().reviews.escalate_before_secs as i64)
}

/// `active_agent()` in a campaign whose unanswered items get `unanswered`; its owner's manager
/// is `MANAGER`; a token grant with `datadog:metrics:read` was seen an hour ago.
fn item_input(unanswered: Unanswered) -> ReviewItemInput {
    ReviewItemInput {
        campaign: campaign_with(unanswered),
        agent: active_agent(),
        usage: vec![(METRICS_READ.into(), at(-3600))],
        manager: Some(MANAGER.into()),
    }
}

fn open_item(unanswered: Unanswered) -> ReviewItemState {
    started::<ReviewItemMachine>(item_input(unanswered)).state
}

fn escalated_item(unanswered: Unanswered) -> ReviewItemState {
    accepted::<ReviewItemMachine>(
        &open_item(unanswered),
        timer(review_item::ESCALATION_TIMER),
        escalate_at(),
    )
    .state
}

fn keep(by: &str) -> Event {
    review_decided(ReviewDecision::Keep, by, None)
}

fn revoke(by: &str) -> Event {
    review_decided(ReviewDecision::Revoke, by, None)
}

fn reduce(drop: &[&str], by: &str) -> Event {
    review_decided(
        ReviewDecision::Reduce {
            drop: strings(drop),
        },
        by,
        None,
    )
}

fn item_deadline_timer() -> Event {
    timer(review_item::DEADLINE_TIMER)
}

fn resolution_of(state: &ReviewItemState) -> &Resolution {
    state
        .resolution()
        .unwrap_or_else(|| panic!("no resolution in {state:?}"))
}

fn assert_closed(state: &ReviewItemState) -> &Resolution {
    assert!(
        matches!(state, ReviewItemState::Closed { .. }),
        "expected Closed, got {state:?}"
    );
    assert!(ReviewItemMachine::is_terminal(state));
    resolution_of(state)
}

fn assert_applying(state: &ReviewItemState) -> &Resolution {
    assert!(
        matches!(state, ReviewItemState::Applying { .. }),
        "expected Applying, got {state:?}"
    );
    assert!(!ReviewItemMachine::is_terminal(state));
    resolution_of(state)
}

/// `(action, decided_by)` of every `ApplyReview` (all of them for this agent and campaign).
fn applied_reviews(commands: &[Command]) -> Vec<(&ReviewAction, &str)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::ApplyReview {
                agent_id,
                campaign_id,
                action,
                decided_by,
            } => {
                assert_eq!(
                    (agent_id.as_str(), campaign_id.as_str()),
                    (AGENT_ID, CAMPAIGN_ID)
                );
                Some((action, decided_by.as_str()))
            }
            _ => None,
        })
        .collect()
}

fn assert_item_timers_off(commands: &[Command]) {
    assert_eq!(
        timers_cancelled(commands),
        [
            review_item::REMINDER_TIMER,
            review_item::ESCALATION_TIMER,
            review_item::DEADLINE_TIMER,
        ]
    );
}

/// The closing of an item: its timers are off, the agent records the review, and every message
/// of the item shows the resolution (as the state holds it).
fn assert_item_closes(commands: &[Command], state: &ReviewItemState, review: LastReview) {
    let resolution = assert_closed(state);
    assert_item_timers_off(commands);
    assert!(
        agent_changes(commands).contains(&&AgentChange::Reviewed { review }),
        "{:?}",
        agent_changes(commands)
    );
    assert_eq!(
        review_notices(commands),
        [&ReviewNotice::Closed {
            item: state.item().clone(),
            resolution: resolution.clone(),
        }]
    );
}

fn last_review(decision: &str, by: &str, at: DateTime<Utc>) -> LastReview {
    LastReview {
        campaign: CAMPAIGN_ID.into(),
        decision: decision.into(),
        by: by.into(),
        at,
    }
}

fn scenario_review_item_start_asks_the_owner_and_arms_reminder_escalation_and_deadline() {
    let input = item_input(Unanswered::KeepAndFlag);
    let step = started::<ReviewItemMachine>(input.clone());
    let ReviewItemState::Open { item } = &step.state else {
        panic!("expected Open, got {:?}", step.state)
    };
    assert_eq!(item.id, WORKFLOW_ID);
    assert_eq!(
        (item.campaign_id.as_str(), item.campaign_name.as_str()),
        (CAMPAIGN_ID, CAMPAIGN_NAME)
    );
    assert_eq!(item.agent, active_agent());
    assert_eq!(item.escalate_to.as_deref(), Some(MANAGER));
    assert_eq!(
        (
            item.sent_at,
            item.deadline,
            item.remind_at,
            item.escalate_at
        ),
        (
            now(),
            campaign_deadline(),
            Some(remind_at()),
            Some(escalate_at())
        )
    );
    assert_eq!(item.unanswered, Unanswered::KeepAndFlag);
    assert_eq!(
        item.evidence,
        Evidence::build(&input.agent, &input.usage, now(), &ctx(now()))
    );
    assert!(
        now() < remind_at() && remind_at() < escalate_at() && escalate_at() < campaign_deadline(),
        "the owner is reminded before the item escalates, both before the deadline"
    );
    assert_eq!(
        timers_set(&step.commands),
        [
            (review_item::REMINDER_TIMER, remind_at()),
            (review_item::ESCALATION_TIMER, escalate_at()),
            (review_item::DEADLINE_TIMER, campaign_deadline()),
        ]
    );
    assert_eq!(
        review_notices(&step.commands),
        [&ReviewNotice::Ask { item: item.clone() }]
    );
    let audit = audit_of(&step.commands, AuditKind::ReviewRequested);
    assert_eq!(
        audit.actor,
        Actor::Person(APPROVER.into()),
        "who started the campaign"
    );
    assert_eq!(audit.approval_id.as_deref(), Some(WORKFLOW_ID));
    assert_eq!(audit.scopes, active_agent().scopes);
    assert!(
        audit.message.contains(CAMPAIGN_ID) && audit.message.contains(OWNER),
        "{}",
        audit.message
    );
    assert!(notifications(&step.commands).is_empty());
    assert!(idp_commands(&step.commands).is_empty());
    assert!(applied_reviews(&step.commands).is_empty());
    assert!(agent_changes(&step.commands).is_empty());

    // the owner is their own manager (any spelling): the item escalates to the security channel
    let mut input = item_input(Unanswered::KeepAndFlag);
    input.manager = Some(OWNER.to_uppercase());
    let step = started::<ReviewItemMachine>(input);
    assert_eq!(step.state.item().escalate_to, None);

    // sent inside the reminder and escalation windows: only the deadline is armed
    let late = campaign_deadline() - Duration::days(1);
    let step = start::<ReviewItemMachine>(item_input(Unanswered::KeepAndFlag), late)
        .unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(
        timers_set(&step.commands),
        [(review_item::DEADLINE_TIMER, campaign_deadline())]
    );
    assert_eq!(
        (step.state.item().remind_at, step.state.item().escalate_at),
        (None, None)
    );

    // an agent the campaign does not cover gets no item
    let mut input = item_input(Unanswered::KeepAndFlag);
    input.agent.status = AgentStatus::Decommissioned;
    assert_rejected(
        start::<ReviewItemMachine>(input, now()),
        "agent",
        &format!("{AGENT_NAME} (decommissioned) is not in the campaign's scope"),
    );
    let mut input = item_input(Unanswered::KeepAndFlag);
    input.campaign.scope.environments = strings(&["dev"]);
    assert_rejected(
        start::<ReviewItemMachine>(input, now()),
        "agent",
        "is not in the campaign's scope (environment dev)",
    );
}

fn scenario_review_item_reminds_the_owner_before_escalating_to_the_manager() {
    let open = open_item(Unanswered::KeepAndFlag);
    let item = open.item().clone();
    let reminded =
        accepted::<ReviewItemMachine>(&open, timer(review_item::REMINDER_TIMER), remind_at());
    assert_eq!(reminded.state, open, "a reminder keeps the item open");
    assert_eq!(
        review_notices(&reminded.commands),
        [&ReviewNotice::Remind { item: item.clone() }]
    );
    let audit = audit_of(&reminded.commands, AuditKind::ReviewReminded);
    assert_eq!(
        audit.actor,
        Actor::Schedule(review_item::REMINDER_TIMER.into())
    );
    assert!(audit.message.contains(OWNER), "{}", audit.message);
    assert!(timers_set(&reminded.commands).is_empty());
    assert!(timers_cancelled(&reminded.commands).is_empty());

    let escalated = accepted::<ReviewItemMachine>(
        &reminded.state,
        timer(review_item::ESCALATION_TIMER),
        escalate_at(),
    );
    assert_eq!(
        escalated.state,
        ReviewItemState::Escalated {
            item: item.clone(),
            at: escalate_at(),
        }
    );
    assert!(!ReviewItemMachine::is_terminal(&escalated.state));
    assert_eq!(
        review_notices(&escalated.commands),
        [&ReviewNotice::Escalate { item: item.clone() }]
    );
    let audit = audit_of(&escalated.commands, AuditKind::ReviewEscalated);
    assert_eq!(
        audit.actor,
        Actor::Schedule(review_item::ESCALATION_TIMER.into())
    );
    assert!(
        audit.message.contains(&format!("escalated to {MANAGER}")),
        "{}",
        audit.message
    );
    assert!(agent_changes(&escalated.commands).is_empty());
    assert!(applied_reviews(&escalated.commands).is_empty());

    // a reminder that comes after the escalation still reaches the owner
    let again = accepted::<ReviewItemMachine>(
        &escalated.state,
        timer(review_item::REMINDER_TIMER),
        escalate_at() + Duration::hours(1),
    );
    assert_eq!(again.state, escalated.state);
    assert_eq!(
        review_notices(&again.commands),
        [&ReviewNotice::Remind { item }]
    );

    // without a manager the item escalates to the security channel
    let mut input = item_input(Unanswered::KeepAndFlag);
    input.manager = None;
    let open = started::<ReviewItemMachine>(input).state;
    let step =
        accepted::<ReviewItemMachine>(&open, timer(review_item::ESCALATION_TIMER), escalate_at());
    assert!(matches!(step.state, ReviewItemState::Escalated { .. }));
    assert!(
        audit_of(&step.commands, AuditKind::ReviewEscalated)
            .message
            .contains("escalated to the security channel")
    );
}

fn scenario_review_item_keep_closes_and_records_the_review() {
    let open = open_item(Unanswered::KeepAndFlag);
    let when = at(3600);
    let step = accepted::<ReviewItemMachine>(
        &open,
        review_decided(
            ReviewDecision::Keep,
            OWNER,
            Some("still restarts the monitors"),
        ),
        when,
    );
    let resolution = Resolution {
        decision: "keep".into(),
        dropped: vec![],
        by: Some(OWNER.into()),
        at: when,
        reason: Some("still restarts the monitors".into()),
        default_applied: None,
        escalated: false,
        action: None,
    };
    assert_eq!(
        step.state,
        ReviewItemState::Closed {
            item: open.item().clone(),
            resolution,
        }
    );
    let review = last_review("keep", OWNER, when);
    assert_item_closes(&step.commands, &step.state, review.clone());
    assert_eq!(
        agent_changes(&step.commands),
        [&AgentChange::Reviewed {
            review: review.clone()
        }]
    );
    let audit = audit_of(&step.commands, AuditKind::ReviewDecided);
    assert_eq!(audit.actor, Actor::Person(OWNER.into()));
    assert!(
        audit.message.contains("decision KEEP")
            && audit.message.contains("still restarts the monitors"),
        "{}",
        audit.message
    );
    assert!(applied_reviews(&step.commands).is_empty());
    assert!(idp_commands(&step.commands).is_empty());
    assert!(notifications(&step.commands).is_empty());
    // the registry records the review on the agent
    let mut agent = active_agent();
    agent.apply(agent_changes(&step.commands)[0], when);
    assert_eq!(agent.last_review, Some(review));
    assert_eq!(agent.status, AgentStatus::Active);

    // a security approver keeps an escalated item
    let decided_at = escalate_at() + Duration::hours(1);
    let step = accepted::<ReviewItemMachine>(
        &escalated_item(Unanswered::KeepAndFlag),
        keep(OTHER_APPROVER),
        decided_at,
    );
    let resolution = assert_closed(&step.state);
    assert_eq!(
        (
            resolution.by.as_deref(),
            resolution.escalated,
            resolution.reason.as_deref()
        ),
        (Some(OTHER_APPROVER), true, None)
    );
    assert_item_closes(
        &step.commands,
        &step.state,
        last_review("keep", OTHER_APPROVER, decided_at),
    );
}

fn scenario_review_item_reduce_applies_a_scope_change_and_closes_on_its_result() {
    let open = open_item(Unanswered::KeepAndFlag);
    let step = accepted::<ReviewItemMachine>(
        &open,
        review_decided(
            ReviewDecision::Reduce {
                drop: strings(&[ORDERS_READ]),
            },
            OWNER,
            Some("orders are read by the ERP agent now"),
        ),
        at(3600),
    );
    let resolution = assert_applying(&step.state).clone();
    assert_eq!(
        (
            resolution.decision.as_str(),
            resolution.dropped.clone(),
            resolution.by.as_deref(),
            resolution.escalated,
            resolution.default_applied,
            resolution.action.clone()
        ),
        (
            "reduce",
            strings(&[ORDERS_READ]),
            Some(OWNER),
            false,
            None,
            None
        )
    );
    assert_eq!(
        applied_reviews(&step.commands),
        [(
            &ReviewAction::Reduce {
                drop: strings(&[ORDERS_READ])
            },
            OWNER
        )]
    );
    assert_item_timers_off(&step.commands);
    assert!(
        review_notices(&step.commands).is_empty(),
        "the item shows its outcome once the scope change is under way"
    );
    assert!(agent_changes(&step.commands).is_empty());
    assert!(
        idp_commands(&step.commands).is_empty(),
        "the scope change does the granting"
    );
    let audit = audit_of(&step.commands, AuditKind::ReviewDecided);
    assert_eq!(audit.scopes, strings(&[ORDERS_READ]));
    assert!(
        audit.message.contains("decision REDUCE")
            && audit.message.contains("(drop erp:orders:read)"),
        "{}",
        audit.message
    );

    let detail = "scope change wf-0002 started";
    let done = accepted::<ReviewItemMachine>(
        &step.state,
        review_action_taken(Some("wf-0002"), true, detail),
        at(3660),
    );
    let closed = assert_closed(&done.state);
    assert_eq!(
        closed,
        &Resolution {
            action: Some(ActionResult {
                kind: "scope_change".into(),
                workflow_id: Some("wf-0002".into()),
                ok: true,
                detail: detail.into(),
            }),
            ..resolution
        }
    );
    assert_item_closes(
        &done.commands,
        &done.state,
        last_review("reduce", OWNER, at(3600)),
    );
    assert!(
        notifications(&done.commands).is_empty(),
        "nothing went wrong"
    );
}

fn scenario_review_item_revoke_applies_a_decommission() {
    // the owner's manager, once the item is escalated
    let decided_at = escalate_at() + Duration::hours(1);
    let step = accepted::<ReviewItemMachine>(
        &escalated_item(Unanswered::KeepAndFlag),
        review_decided(
            ReviewDecision::Revoke,
            MANAGER,
            Some("the team was disbanded"),
        ),
        decided_at,
    );
    let resolution = assert_applying(&step.state).clone();
    assert_eq!(
        (
            resolution.decision.as_str(),
            resolution.by.as_deref(),
            resolution.escalated,
            resolution.dropped.is_empty()
        ),
        ("revoke", Some(MANAGER), true, true)
    );
    assert_eq!(
        applied_reviews(&step.commands),
        [(&ReviewAction::Revoke, MANAGER)]
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::ReviewDecided).actor,
        Actor::Person(MANAGER.into())
    );
    assert_item_timers_off(&step.commands);
    assert!(review_notices(&step.commands).is_empty());

    let done = accepted::<ReviewItemMachine>(
        &step.state,
        review_action_taken(Some("wf-0003"), true, "decommission wf-0003 started"),
        decided_at + Duration::minutes(1),
    );
    let closed = assert_closed(&done.state);
    let action = closed.action.as_ref().expect("the action is recorded");
    assert_eq!(
        (
            action.kind.as_str(),
            action.workflow_id.as_deref(),
            action.ok
        ),
        ("decommission", Some("wf-0003"), true)
    );
    assert_item_closes(
        &done.commands,
        &done.state,
        last_review("revoke", MANAGER, decided_at),
    );

    // the owner revokes an open item the same way
    let step =
        accepted::<ReviewItemMachine>(&open_item(Unanswered::KeepAndFlag), revoke(OWNER), at(60));
    assert!(!assert_applying(&step.state).escalated);
    assert_eq!(
        applied_reviews(&step.commands),
        [(&ReviewAction::Revoke, OWNER)]
    );
}

fn scenario_review_item_unanswered_keep_and_flag_closes_flagged_and_tells_security() {
    let deadline = campaign_deadline();
    for (state, escalated) in [
        (open_item(Unanswered::KeepAndFlag), false),
        (escalated_item(Unanswered::KeepAndFlag), true),
    ] {
        let step = accepted::<ReviewItemMachine>(&state, item_deadline_timer(), deadline);
        let resolution = assert_closed(&step.state);
        assert_eq!(
            resolution,
            &Resolution {
                decision: "unanswered".into(),
                dropped: vec![],
                by: None,
                at: deadline,
                reason: Some(format!(
                    "no answer by the deadline {}",
                    deadline.to_rfc3339()
                )),
                default_applied: Some(Unanswered::KeepAndFlag),
                escalated,
                action: Some(ActionResult {
                    kind: "flag".into(),
                    workflow_id: None,
                    ok: true,
                    detail: "kept and flagged; the security channel was told".into(),
                }),
            }
        );
        let review = last_review("unanswered: keep_and_flag", "deadline", deadline);
        assert_item_closes(&step.commands, &step.state, review.clone());
        let flag = AgentFlag::ReviewUnanswered {
            campaign: CAMPAIGN_ID.into(),
            at: deadline,
        };
        assert_eq!(
            agent_changes(&step.commands),
            [
                &AgentChange::Flag { flag: flag.clone() },
                &AgentChange::Reviewed { review }
            ]
        );
        let notes = notifications(&step.commands);
        assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
        assert!(notes[0].1.contains(AGENT_NAME), "{}", notes[0].1);
        assert!(
            notes[0].2.contains("kept and flagged") && notes[0].2.contains(OWNER),
            "{}",
            notes[0].2
        );
        let audit = audit_of(&step.commands, AuditKind::ReviewDefaulted);
        assert_eq!(
            audit.actor,
            Actor::Schedule(review_item::DEADLINE_TIMER.into())
        );
        assert!(
            audit.message.contains("default keep_and_flag applied"),
            "{}",
            audit.message
        );
        assert!(applied_reviews(&step.commands).is_empty(), "kept");
        assert!(idp_commands(&step.commands).is_empty(), "kept");

        // the agent stays active, flagged, and the next review shows why
        let mut agent = active_agent();
        for change in agent_changes(&step.commands) {
            agent.apply(change, deadline);
        }
        assert_eq!(agent.status, AgentStatus::Active);
        assert_eq!(agent.flags, [flag]);
        let next = Evidence::build(&agent, &[], deadline + Duration::days(1), &ctx(now()));
        assert_eq!(
            next.anomalies,
            ["review 2025-q1 went unanswered (2025-03-24)"]
        );
    }
}

fn scenario_review_item_unanswered_revoke_applies_a_decommission() {
    let deadline = campaign_deadline();
    for (state, escalated) in [
        (open_item(Unanswered::Revoke), false),
        (escalated_item(Unanswered::Revoke), true),
    ] {
        let step = accepted::<ReviewItemMachine>(&state, item_deadline_timer(), deadline);
        let resolution = assert_applying(&step.state).clone();
        assert_eq!(
            (
                resolution.default_applied,
                resolution.by.as_deref(),
                resolution.escalated,
                resolution.action.clone()
            ),
            (Some(Unanswered::Revoke), None, escalated, None)
        );
        assert_eq!(
            applied_reviews(&step.commands),
            [(&ReviewAction::Revoke, "deadline of 2025-q1")]
        );
        assert_item_timers_off(&step.commands);
        assert!(review_notices(&step.commands).is_empty());
        assert!(agent_changes(&step.commands).is_empty());
        assert!(
            idp_commands(&step.commands).is_empty(),
            "the decommission revokes"
        );
        assert!(
            audit_of(&step.commands, AuditKind::ReviewDefaulted)
                .message
                .contains("default revoke applied")
        );

        let done = accepted::<ReviewItemMachine>(
            &step.state,
            review_action_taken(Some("wf-0004"), true, "decommission wf-0004 started"),
            deadline + Duration::minutes(1),
        );
        let closed = assert_closed(&done.state);
        assert_eq!(
            closed.action.as_ref().map(|a| (a.kind.as_str(), a.ok)),
            Some(("decommission", true))
        );
        assert_item_closes(
            &done.commands,
            &done.state,
            last_review("unanswered: revoke", "deadline", deadline),
        );
    }
}

fn scenario_review_item_unanswered_freeze_deactivates_the_client() {
    let deadline = campaign_deadline();
    let step = accepted::<ReviewItemMachine>(
        &open_item(Unanswered::Freeze),
        item_deadline_timer(),
        deadline,
    );
    let resolution = assert_applying(&step.state).clone();
    assert_eq!(resolution.default_applied, Some(Unanswered::Freeze));
    assert!(step.commands.contains(&Command::Supersede {
        agent_id: AGENT_ID.into(),
        reason: "frozen: review 2025-q1 unanswered".into(),
    }));
    assert_eq!(
        idp_commands(&step.commands),
        [&IdpCommand::DeactivateClient {
            client_id: CLIENT_ID.into()
        }]
    );
    assert!(
        applied_reviews(&step.commands).is_empty(),
        "a freeze is no decommission"
    );
    assert_item_timers_off(&step.commands);
    assert!(review_notices(&step.commands).is_empty());

    let done = accepted::<ReviewItemMachine>(
        &step.state,
        client_deactivated(),
        deadline + Duration::seconds(30),
    );
    let closed = assert_closed(&done.state);
    let action = closed.action.clone().expect("the action is recorded");
    assert_eq!(
        (
            action.kind.as_str(),
            action.workflow_id.as_deref(),
            action.ok
        ),
        ("freeze", None, true)
    );
    assert!(
        action
            .detail
            .contains("client 0oa-client-0001 deactivated: no new tokens"),
        "{}",
        action.detail
    );
    let review = last_review("unanswered: freeze", "deadline", deadline);
    assert_item_closes(&done.commands, &done.state, review.clone());
    let frozen = AgentChange::Frozen {
        reason: "access review 2025-q1 unanswered".into(),
    };
    assert_eq!(
        agent_changes(&done.commands),
        [&frozen, &AgentChange::Reviewed { review }]
    );
    assert_eq!(
        audit_of(&done.commands, AuditKind::AgentFrozen).actor,
        Actor::Schedule(review_item::DEADLINE_TIMER.into())
    );
    let notes = notifications(&done.commands);
    assert_eq!(notified(&done.commands), [OWNER]);
    assert!(notes[0].1.contains("is frozen"), "{}", notes[0].1);
    let mut agent = active_agent();
    agent.apply(&frozen, deadline);
    assert_eq!(agent.status, AgentStatus::Frozen);
    assert!(
        matches!(agent.flags.as_slice(), [AgentFlag::Frozen { at, .. }] if *at == deadline),
        "{:?}",
        agent.flags
    );

    // an escalated item freezes the same way
    let step = accepted::<ReviewItemMachine>(
        &escalated_item(Unanswered::Freeze),
        item_deadline_timer(),
        deadline,
    );
    assert!(assert_applying(&step.state).escalated);
    assert_eq!(idp_commands(&step.commands).len(), 1);

    // an agent without a client cannot be frozen: the item closes and security hears of it
    let mut input = item_input(Unanswered::Freeze);
    input.agent.client_id = None;
    let open = started::<ReviewItemMachine>(input).state;
    let step = accepted::<ReviewItemMachine>(&open, item_deadline_timer(), deadline);
    let closed = assert_closed(&step.state);
    let failure = ActionResult {
        kind: "freeze".into(),
        workflow_id: None,
        ok: false,
        detail: "the agent has no client at the identity provider".into(),
    };
    // The messages show the failed freeze. (The Closed state's own resolution does not record
    // it: `ReviewItemMachine::deadline` stores the resolution from before `finish` added the
    // action, so `closed.action` is None here; every other closing path records it.)
    assert_eq!(
        review_notices(&step.commands),
        [&ReviewNotice::Closed {
            item: step.state.item().clone(),
            resolution: Resolution {
                action: Some(failure),
                ..closed.clone()
            },
        }]
    );
    assert_eq!(closed.default_applied, Some(Unanswered::Freeze));
    assert!(idp_commands(&step.commands).is_empty());
    assert!(
        step.commands
            .iter()
            .all(|c| !matches!(c, Command::Supersede { .. }))
    );
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    // (this path cancels each timer twice: `deadline` and then `finish` both turn them off)
    let cancelled: BTreeSet<&str> = timers_cancelled(&step.commands).into_iter().collect();
    assert_eq!(
        cancelled,
        BTreeSet::from([
            review_item::REMINDER_TIMER,
            review_item::ESCALATION_TIMER,
            review_item::DEADLINE_TIMER,
        ])
    );
    assert_eq!(
        agent_changes(&step.commands),
        [&AgentChange::Reviewed {
            review: last_review("unanswered: freeze", "deadline", deadline)
        }],
        "not frozen"
    );
}

fn scenario_review_item_failed_actions_close_with_the_failure_recorded() {
    // the engine could not start the decommission
    let revoking =
        accepted::<ReviewItemMachine>(&open_item(Unanswered::KeepAndFlag), revoke(OWNER), at(60))
            .state;
    let detail = "a decommission of the agent is running already";
    let step =
        accepted::<ReviewItemMachine>(&revoking, review_action_taken(None, false, detail), at(120));
    assert_eq!(
        assert_closed(&step.state).action,
        Some(ActionResult {
            kind: "decommission".into(),
            workflow_id: None,
            ok: false,
            detail: detail.into(),
        })
    );
    assert_item_closes(
        &step.commands,
        &step.state,
        last_review("revoke", OWNER, at(60)),
    );
    let notes = notifications(&step.commands);
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    assert!(
        notes[0].2.contains(&format!(
            "The revoke decision on {AGENT_NAME} in campaign {CAMPAIGN_ID} could not be carried out: {detail}"
        )),
        "{}",
        notes[0].2
    );

    // the engine's command failed for good
    let reducing = accepted::<ReviewItemMachine>(
        &open_item(Unanswered::KeepAndFlag),
        reduce(&[ORDERS_READ], OWNER),
        at(60),
    )
    .state;
    let step =
        accepted::<ReviewItemMachine>(&reducing, command_failed("workflow.apply_review"), at(120));
    assert_eq!(
        assert_closed(&step.state).action,
        Some(ActionResult {
            kind: "scope_change".into(),
            workflow_id: None,
            ok: false,
            detail: "403 Forbidden".into(),
        })
    );
    assert_item_closes(
        &step.commands,
        &step.state,
        last_review("reduce", OWNER, at(60)),
    );
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);

    // the identity provider refused to deactivate the client: not frozen
    let deadline = campaign_deadline();
    let freezing = accepted::<ReviewItemMachine>(
        &open_item(Unanswered::Freeze),
        item_deadline_timer(),
        deadline,
    )
    .state;
    let step = accepted::<ReviewItemMachine>(
        &freezing,
        command_failed("idp.deactivate_client"),
        deadline + Duration::minutes(1),
    );
    let closed = assert_closed(&step.state);
    assert_eq!(
        closed.action.as_ref().map(|a| (a.kind.as_str(), a.ok)),
        Some(("freeze", false))
    );
    assert!(
        !agent_changes(&step.commands)
            .iter()
            .any(|c| matches!(c, AgentChange::Frozen { .. })),
        "not frozen"
    );
    assert_item_closes(
        &step.commands,
        &step.state,
        last_review("unanswered: freeze", "deadline", deadline),
    );
    let notes = notifications(&step.commands);
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    assert!(
        notes[0].2.contains("The unanswered: freeze decision"),
        "{}",
        notes[0].2
    );

    // another command's failure is not the action's
    assert_rejected(
        on::<ReviewItemMachine>(&reducing, command_failed("review.closed"), at(120)),
        "event",
        "CommandFailed does not apply to review_item in state Applying",
    );
}

fn scenario_review_item_refuses_reviewers_who_may_not_answer() {
    let open = open_item(Unanswered::KeepAndFlag);
    let escalated = escalated_item(Unanswered::KeepAndFlag);
    let when = escalate_at() + Duration::hours(1);
    for state in [&open, &escalated] {
        for by in [OUTSIDER, COLLEAGUE] {
            for event in [keep(by), revoke(by), reduce(&[ORDERS_READ], by)] {
                assert_rejected(
                    on::<ReviewItemMachine>(state, event, when),
                    "reviewer",
                    &format!(
                        "{by} may not answer the review of {AGENT_NAME}: its owner {OWNER} or a security approver may"
                    ),
                );
            }
        }
    }
    // the owner's manager only once the item is escalated
    assert_rejected(
        on::<ReviewItemMachine>(&open, keep(MANAGER), at(60)),
        "reviewer",
        &format!("the owner's manager {MANAGER} may answer once it is escalated"),
    );
    assert_closed(&accepted::<ReviewItemMachine>(&escalated, keep(MANAGER), when).state);
    // without a manager, the escalation gives nobody else a say
    let mut input = item_input(Unanswered::KeepAndFlag);
    input.manager = None;
    let no_manager = accepted::<ReviewItemMachine>(
        &started::<ReviewItemMachine>(input).state,
        timer(review_item::ESCALATION_TIMER),
        escalate_at(),
    )
    .state;
    assert_rejected(
        on::<ReviewItemMachine>(&no_manager, keep(MANAGER), when),
        "reviewer",
        "may not answer",
    );
    // the owner and the approvers are recognised however they spell themselves, and recorded
    // as the item and the policy list them
    for (by, recorded) in [
        ("  ALICE@Example.com ", OWNER),
        (&*APPROVER.to_uppercase(), APPROVER),
        (OTHER_APPROVER, OTHER_APPROVER),
    ] {
        let step = accepted::<ReviewItemMachine>(&open, keep(by), at(60));
        assert_eq!(assert_closed(&step.state).by.as_deref(), Some(recorded));
    }
}

fn scenario_review_item_refuses_a_reduce_that_does_not_hold() {
    let when = escalate_at() + Duration::hours(1);
    for state in [
        open_item(Unanswered::KeepAndFlag),
        escalated_item(Unanswered::KeepAndFlag),
    ] {
        assert_rejected(
            on::<ReviewItemMachine>(&state, reduce(&[], OWNER), when),
            "drop",
            "Reduce needs at least one",
        );
        for drop in [&[UNLISTED][..], &[ORDERS_READ, UNLISTED][..]] {
            assert_rejected(
                on::<ReviewItemMachine>(&state, reduce(drop, OWNER), when),
                "drop",
                &format!("{AGENT_NAME} does not hold {UNLISTED}"),
            );
        }
        assert_rejected(
            on::<ReviewItemMachine>(&state, reduce(&[METRICS_READ, ORDERS_READ], OWNER), when),
            "drop",
            "answer Revoke instead",
        );
    }
    // who answers is checked first
    assert_rejected(
        on::<ReviewItemMachine>(
            &open_item(Unanswered::KeepAndFlag),
            reduce(&[], OUTSIDER),
            at(60),
        ),
        "reviewer",
        "may not answer",
    );
}

fn scenario_review_item_refuses_decisions_after_the_deadline() {
    let late = campaign_deadline() + Duration::seconds(1);
    let open = open_item(Unanswered::KeepAndFlag);
    for state in [&open, &escalated_item(Unanswered::KeepAndFlag)] {
        for event in [
            keep(OWNER),
            revoke(APPROVER),
            reduce(&[ORDERS_READ], OWNER),
            keep(MANAGER),
        ] {
            assert_rejected(
                on::<ReviewItemMachine>(state, event, late),
                "review",
                &format!(
                    "the review of {AGENT_NAME} closed at {}; its default applies",
                    campaign_deadline().to_rfc3339()
                ),
            );
        }
    }
    // up to the deadline an answer still counts
    assert_closed(&accepted::<ReviewItemMachine>(&open, keep(OWNER), campaign_deadline()).state);
}

fn scenario_review_item_refuses_a_second_decision() {
    let open = open_item(Unanswered::KeepAndFlag);
    let kept = accepted::<ReviewItemMachine>(&open, keep(OWNER), at(60)).state;
    let applying = accepted::<ReviewItemMachine>(&open, revoke(OWNER), at(60)).state;
    let defaulted =
        accepted::<ReviewItemMachine>(&open, item_deadline_timer(), campaign_deadline()).state;
    for state in [&kept, &applying] {
        for event in [keep(OWNER), revoke(APPROVER), reduce(&[ORDERS_READ], OWNER)] {
            assert_rejected(
                on::<ReviewItemMachine>(state, event, at(120)),
                "review",
                &format!("the review of {AGENT_NAME} in campaign {CAMPAIGN_ID} is decided already"),
            );
        }
    }
    // no timer of the item reopens an item being applied
    for name in [
        review_item::REMINDER_TIMER,
        review_item::ESCALATION_TIMER,
        review_item::DEADLINE_TIMER,
    ] {
        assert_rejected(
            on::<ReviewItemMachine>(&applying, timer(name), campaign_deadline()),
            "event",
            "TimerFired does not apply to review_item in state Applying",
        );
    }
    // a deactivated client is only a freeze's result
    assert_rejected(
        on::<ReviewItemMachine>(&applying, client_deactivated(), at(120)),
        "event",
        "ClientDeactivated does not apply to review_item in state Applying",
    );
    // a closed item accepts no event at all
    for state in [&kept, &defaulted] {
        for event in every_review_event() {
            let decision = matches!(event, Event::ReviewDecided { .. });
            let label = event.label();
            let refused = on::<ReviewItemMachine>(state, event, at(120));
            if decision {
                assert_rejected(refused, "review", "is decided already");
            } else {
                assert_rejected(
                    refused,
                    "event",
                    &format!("{label} does not apply to review_item in state Closed"),
                );
            }
        }
    }
}

fn scenario_review_item_refuses_early_timers() {
    let second = Duration::seconds(1);
    let open = open_item(Unanswered::KeepAndFlag);
    assert_rejected(
        on::<ReviewItemMachine>(
            &open,
            timer(review_item::REMINDER_TIMER),
            remind_at() - second,
        ),
        "timer",
        "no reminder is due now",
    );
    assert_rejected(
        on::<ReviewItemMachine>(
            &open,
            timer(review_item::ESCALATION_TIMER),
            escalate_at() - second,
        ),
        "timer",
        "no escalation is due now",
    );
    let not_yet = format!(
        "the review deadline is {}, not yet",
        campaign_deadline().to_rfc3339()
    );
    for state in [&open, &escalated_item(Unanswered::Revoke)] {
        assert_rejected(
            on::<ReviewItemMachine>(state, item_deadline_timer(), campaign_deadline() - second),
            "timer",
            &not_yet,
        );
    }
    // an item escalates once
    assert_rejected(
        on::<ReviewItemMachine>(
            &escalated_item(Unanswered::KeepAndFlag),
            timer(review_item::ESCALATION_TIMER),
            campaign_deadline() - Duration::hours(1),
        ),
        "event",
        "TimerFired does not apply to review_item in state Escalated",
    );
    // an item sent inside the windows has no reminder or escalation to fire
    let late = start::<ReviewItemMachine>(
        item_input(Unanswered::KeepAndFlag),
        campaign_deadline() - Duration::days(1),
    )
    .unwrap_or_else(|r| panic!("{r}"))
    .state;
    let before_deadline = campaign_deadline() - Duration::hours(1);
    assert_rejected(
        on::<ReviewItemMachine>(&late, timer(review_item::REMINDER_TIMER), before_deadline),
        "timer",
        "no reminder is due now",
    );
    assert_rejected(
        on::<ReviewItemMachine>(&late, timer(review_item::ESCALATION_TIMER), before_deadline),
        "timer",
        "no escalation is due now",
    );
    // other workflows' timers
    for name in [review_campaign::CLOSE_TIMER, expiry::DEADLINE_TIMER] {
        assert_rejected(
            on::<ReviewItemMachine>(&open, timer(name), campaign_deadline()),
            "event",
            "TimerFired does not apply to review_item in state Open",
        );
    }
}

// =============================================================================================
// Access reviews: evidence
// =============================================================================================

fn scenario_review_evidence_suggests_scopes_unused_for_the_policy_period() {
    let unused_days = i64::from(policy().reviews.unused_after_days);
    let cutoff = now() - Duration::days(unused_days);
    let mut agent = active_agent();
    agent.scopes = strings(&[METRICS_READ, ORDERS_READ, MONITORS_WRITE, OKTA_APPS_READ]);
    agent.created_at = now() - Duration::days(unused_days + 100);
    let usage = vec![
        (METRICS_READ.to_string(), now() - Duration::days(5)),
        (ORDERS_READ.to_string(), cutoff - Duration::days(1)),
        (OKTA_APPS_READ.to_string(), cutoff),
        // a grant of a scope the agent no longer holds does not appear
        (PAYMENTS_WRITE.to_string(), now() - Duration::days(1)),
    ];
    let evidence = Evidence::build(&agent, &usage, now(), &ctx(now()));
    assert!(evidence.usage_known);
    assert_eq!(
        evidence.scopes,
        [
            ScopeEvidence {
                scope: METRICS_READ.into(),
                last_used: Some(now() - Duration::days(5)),
                sensitive: false,
            },
            ScopeEvidence {
                scope: ORDERS_READ.into(),
                last_used: Some(cutoff - Duration::days(1)),
                sensitive: false,
            },
            ScopeEvidence {
                scope: MONITORS_WRITE.into(),
                last_used: None,
                sensitive: true,
            },
            ScopeEvidence {
                scope: OKTA_APPS_READ.into(),
                last_used: Some(cutoff),
                sensitive: false,
            },
        ]
    );
    assert_eq!(
        evidence.suggested_drop,
        strings(&[ORDERS_READ, MONITORS_WRITE]),
        "unused for {unused_days} days, or never used; used exactly {unused_days} days ago is kept"
    );
    assert_eq!(evidence.credential_age_days, Some(1));

    // no token grant seen: unused means unknown, nothing is suggested
    let evidence = Evidence::build(&agent, &[], now(), &ctx(now()));
    assert!(!evidence.usage_known);
    assert!(evidence.suggested_drop.is_empty());
    assert!(evidence.scopes.iter().all(|s| s.last_used.is_none()));
    assert_eq!(evidence.scopes.len(), 4);

    // an agent younger than the period has not had the time to use its scopes
    agent.created_at = now() - Duration::days(unused_days - 1);
    let evidence = Evidence::build(&agent, &usage, now(), &ctx(now()));
    assert!(evidence.usage_known);
    assert!(evidence.suggested_drop.is_empty());
    assert_eq!(
        evidence.scopes[1].last_used,
        Some(cutoff - Duration::days(1))
    );

    // anomalies since the last review only, with the last review itself
    let reviewed_at = now() - Duration::days(60);
    agent.last_review = Some(LastReview {
        campaign: "2024-q4".into(),
        decision: "keep".into(),
        by: OWNER.into(),
        at: reviewed_at,
    });
    agent.flags = vec![
        AgentFlag::OwnerLost {
            owner: "zoe@example.com".into(),
            since: reviewed_at - Duration::days(1),
        },
        AgentFlag::FreezeRequested {
            reason: "token use from a new network".into(),
            at: now() - Duration::days(2),
        },
    ];
    let evidence = Evidence::build(&agent, &usage, now(), &ctx(now()));
    assert_eq!(
        evidence.anomalies,
        ["freeze requested: token use from a new network (2025-03-08)"]
    );
    assert_eq!(evidence.last_review, agent.last_review);
}

// =============================================================================================
// Freeze (the kill switch after an anomaly finding)
// =============================================================================================

/// The IdP event whose token request raised the finding.
const SIGNAL_EVENT: &str = "okta-evt-4711";
/// The decision asked after containment (`<workflow>-decision`).
const DECISION_ID: &str = "wf-0001-decision";

fn finding(severity: Severity, action: &[Action]) -> Finding {
    Finding {
        rule: "new-source-ip".into(),
        severity,
        action: action.to_vec(),
        summary: format!("{AGENT_NAME} used its credential from 203.0.113.9, never seen before"),
        evidence: strings(&["source: 203.0.113.9", "known sources: 10.1.0.5, 10.1.0.6"]),
    }
}

/// The signal was accepted 1.5 s before the freeze started (at `now()`).
fn signal_accepted_at() -> DateTime<Utc> {
    now() - Duration::milliseconds(1500)
}

fn ms(millis: i64) -> DateTime<Utc> {
    now() + Duration::milliseconds(millis)
}

fn freeze_input(severity: Severity, action: &[Action]) -> FreezeInput {
    FreezeInput {
        agent: active_agent(),
        finding: finding(severity, action),
        accepted_at: signal_accepted_at(),
        raised_by: Actor::IdpEvent(SIGNAL_EVENT.into()),
        decide_only: false,
    }
}

/// The grants `active_agent()` holds: what an unfreeze restores.
fn previous_grants() -> Grants {
    Grants {
        client_id: CLIENT_ID.into(),
        scopes: strings(&[METRICS_READ, ORDERS_READ]),
        token_lifetime_secs: 600,
    }
}

fn decide(approver: &str, decision: Decision) -> Event {
    decided(
        DECISION_ID,
        approver,
        decision,
        Some("checked the evidence with the owner"),
    )
}

fn client_activated() -> Event {
    Event::ClientActivated {
        client_id: CLIENT_ID.into(),
    }
}

/// A freeze of `severity` contained: deactivated at +250 ms, revoked at +500 ms (2000 ms after
/// the signal was accepted).
fn contained_freeze(severity: Severity) -> Step<FreezeState> {
    let first = started::<Freeze>(freeze_input(severity, &[Action::Freeze, Action::Alert]));
    let deactivated = accepted::<Freeze>(&first.state, client_deactivated(), ms(250));
    accepted::<Freeze>(&deactivated.state, tokens_revoked(), ms(500))
}

fn decision_of(state: &FreezeState) -> &ApprovalRequest {
    match state {
        FreezeState::AwaitingDecision { approval, .. } => approval,
        other => panic!("expected AwaitingDecision, got {other:?}"),
    }
}

fn freeze_question_of(state: &FreezeState) -> &ApprovalRequest {
    match state {
        FreezeState::Asking { approval, .. } => approval,
        other => panic!("expected Asking, got {other:?}"),
    }
}

/// A HIGH freeze contained and approved for an unfreeze by `APPROVER`.
fn restoring_freeze() -> FreezeState {
    let contained = contained_freeze(Severity::High);
    accepted::<Freeze>(
        &contained.state,
        decide(APPROVER, Decision::Approve),
        at(3600),
    )
    .state
}

/// A MEDIUM finding that asks whether to freeze.
fn asking_freeze() -> Step<FreezeState> {
    started::<Freeze>(freeze_input(Severity::Medium, &[Action::Freeze]))
}

fn assert_contains_first(commands: &[Command], frozen_by: Actor) {
    // deactivation first (it stops new tokens), then the revocation, then what would undo it
    let idp: Vec<&str> = commands
        .iter()
        .filter(|c| matches!(c, Command::Idp(_) | Command::Supersede { .. }))
        .map(Command::name)
        .collect();
    assert_eq!(
        idp,
        [
            "idp.deactivate_client",
            "idp.revoke_tokens",
            "workflow.supersede"
        ]
    );
    assert_eq!(
        idp_commands(commands),
        [
            &IdpCommand::DeactivateClient {
                client_id: CLIENT_ID.into()
            },
            &IdpCommand::RevokeTokens {
                client_id: CLIENT_ID.into()
            },
        ]
    );
    assert!(commands.contains(&Command::Supersede {
        agent_id: AGENT_ID.into(),
        reason: format!("{AGENT_NAME} is being frozen (new-source-ip)"),
    }));
    assert!(
        agent_changes(commands).iter().any(
            |c| matches!(c, AgentChange::Frozen { reason } if reason.starts_with("new-source-ip: "))
        ),
        "the agent is marked frozen: {commands:?}"
    );
    let frozen = audit_of(commands, AuditKind::AgentFrozen);
    assert_eq!(frozen.actor, frozen_by);
    assert!(
        frozen.message.contains(CLIENT_ID) && frozen.message.contains("new-source-ip"),
        "{}",
        frozen.message
    );
    assert!(
        !commands
            .iter()
            .any(|c| matches!(c, Command::RequestApproval(_))),
        "nobody is asked before containment"
    );
}

fn scenario_freeze_high_finding_contains_at_once_without_asking() {
    for severity in [Severity::High, Severity::Critical] {
        let step = started::<Freeze>(freeze_input(severity, &[Action::Freeze, Action::Alert]));
        let FreezeState::Containing {
            agent,
            finding: kept,
            previous,
            containment,
        } = &step.state
        else {
            panic!("expected Containing, got {:?}", step.state)
        };
        assert_eq!(agent, &active_agent());
        assert_eq!(kept.severity, severity);
        assert_eq!(previous, &previous_grants());
        assert_eq!(containment.accepted_at, signal_accepted_at());
        assert_eq!(containment.deactivated_at, None);
        assert_eq!(containment.revoked_at, None);
        assert_eq!(containment.time_to_contain_ms(), None);

        assert_eq!(
            names(&step.commands),
            [
                "audit",
                "agent.update",
                "idp.deactivate_client",
                "idp.revoke_tokens",
                "workflow.supersede",
                "agent.update",
                "audit",
            ]
        );
        assert_eq!(
            audit_kinds(&step.commands),
            [AuditKind::AnomalyDetected, AuditKind::AgentFrozen]
        );
        let detected = audit_of(&step.commands, AuditKind::AnomalyDetected);
        assert_eq!(detected.actor, Actor::IdpEvent(SIGNAL_EVENT.into()));
        assert!(
            detected
                .message
                .starts_with(&format!("new-source-ip ({}): ", severity.as_str())),
            "{}",
            detected.message
        );
        assert_eq!(
            agent_changes(&step.commands)[0],
            &AgentChange::Flag {
                flag: AgentFlag::Anomaly {
                    rule: "new-source-ip".into(),
                    severity,
                    detail: finding(severity, &[]).summary,
                    at: now(),
                },
            }
        );
        assert_contains_first(&step.commands, Actor::IdpEvent(SIGNAL_EVENT.into()));
        assert!(timers_set(&step.commands).is_empty());
        assert!(!Freeze::is_terminal(&step.state));
    }
}

fn scenario_freeze_containment_in_either_order_asks_security_to_decide() {
    // deactivated, then revoked
    let first = started::<Freeze>(freeze_input(Severity::High, &[Action::Freeze]));
    let deactivated = accepted::<Freeze>(&first.state, client_deactivated(), ms(250));
    let FreezeState::Containing { containment, .. } = &deactivated.state else {
        panic!(
            "one result of two keeps containing, got {:?}",
            deactivated.state
        )
    };
    assert_eq!(containment.deactivated_at, Some(ms(250)));
    assert_eq!(containment.revoked_at, None);
    assert!(
        deactivated.commands.is_empty(),
        "nothing is asked before the tokens are revoked too"
    );

    let contained = accepted::<Freeze>(&deactivated.state, tokens_revoked(), ms(500));
    let FreezeState::AwaitingDecision {
        containment,
        previous,
        ..
    } = &contained.state
    else {
        panic!("expected AwaitingDecision, got {:?}", contained.state)
    };
    assert_eq!(previous, &previous_grants());
    assert_eq!(containment.revoked_at, Some(ms(500)));
    assert_eq!(
        containment.time_to_contain_ms(),
        Some(2000),
        "from the signal being accepted to the revocation"
    );
    assert_eq!(
        containment.outstanding.as_deref(),
        Some("access tokens until they expire")
    );
    let approval = decision_of(&contained.state);
    assert_eq!(approval.id, DECISION_ID);
    assert_eq!(approval.action, "unfreeze");
    assert_eq!(approval.requester, freeze::DETECTION);
    assert_eq!(approval.approvers, strings(&APPROVERS));
    assert!(
        !approval.approvers.contains(&OWNER.to_string()),
        "an unfreeze is security's decision"
    );
    assert_eq!(approval.quorum, 1, "one approver after a HIGH finding");
    assert_eq!(approval.owner, OWNER);
    assert_eq!(approval.requested_at, ms(500));
    assert_eq!(
        approval.expires_at,
        ms(500) + Duration::seconds(policy().detection.decision_secs as i64)
    );
    assert_eq!(approval.remind_at, None);
    for line in [
        "new-source-ip (HIGH): ",
        "source: 203.0.113.9",
        "known sources: 10.1.0.5, 10.1.0.6",
        "contained in 2000 ms",
        "still valid: access tokens until they expire",
    ] {
        assert!(
            approval.justification.contains(line),
            "the evidence lacks {line:?}: {}",
            approval.justification
        );
    }
    assert_eq!(
        names(&contained.commands),
        ["audit", "timer.set", "approval.request", "audit"]
    );
    assert_eq!(
        audit_kinds(&contained.commands),
        [AuditKind::AgentFrozen, AuditKind::ApprovalRequested]
    );
    let frozen = audit_of(&contained.commands, AuditKind::AgentFrozen);
    assert!(
        frozen
            .message
            .contains("deactivated and tokens revoked 2000 ms after the signal was accepted"),
        "the audit records the time to contain: {}",
        frozen.message
    );
    assert_eq!(
        timers_set(&contained.commands),
        [(APPROVAL_EXPIRY_TIMER, approval.expires_at)]
    );
    assert!(
        contained
            .commands
            .contains(&Command::RequestApproval(approval.clone()))
    );
    assert!(idp_commands(&contained.commands).is_empty());

    // revoked, then deactivated: the same decision, timed to the revocation
    let first = started::<Freeze>(freeze_input(Severity::Critical, &[Action::Freeze]));
    let revoked = accepted::<Freeze>(&first.state, tokens_revoked(), ms(400));
    let FreezeState::Containing { containment, .. } = &revoked.state else {
        panic!(
            "one result of two keeps containing, got {:?}",
            revoked.state
        )
    };
    assert_eq!(containment.revoked_at, Some(ms(400)));
    assert_eq!(containment.deactivated_at, None);
    assert!(revoked.commands.is_empty());
    let contained = accepted::<Freeze>(&revoked.state, client_deactivated(), ms(900));
    let approval = decision_of(&contained.state);
    assert_eq!(approval.quorum, 2, "two approvers after a CRITICAL finding");
    assert!(
        approval.justification.contains("contained in 1900 ms"),
        "{}",
        approval.justification
    );
    assert!(
        audit_of(&contained.commands, AuditKind::AgentFrozen)
            .message
            .contains("1900 ms")
    );
    assert!(
        audit_of(&contained.commands, AuditKind::ApprovalRequested)
            .message
            .contains("(2 distinct approvers needed)")
    );
}

fn scenario_freeze_unfreeze_needs_the_quorum_and_restores_the_previous_grants() {
    let contained = contained_freeze(Severity::Critical);

    let one = accepted::<Freeze>(
        &contained.state,
        decide(APPROVER, Decision::Approve),
        at(600),
    );
    let approval = decision_of(&one.state);
    assert_eq!(approval.votes.len(), 1);
    assert_eq!(approval.votes[0].by, APPROVER);
    assert!(matches!(
        follow_ups(&one.commands).as_slice(),
        [FollowUp::Vote {
            votes: 1,
            quorum: 2,
            ..
        }]
    ));
    assert_eq!(audit_kinds(&one.commands), [AuditKind::ApprovalVoted]);
    assert!(
        idp_commands(&one.commands).is_empty(),
        "one vote of two restores nothing"
    );

    // the same approver twice does not make a quorum
    assert_rejected(
        on::<Freeze>(&one.state, decide(APPROVER, Decision::Approve), at(700)),
        "approver",
        "already approved",
    );

    let two = accepted::<Freeze>(
        &one.state,
        decide(OTHER_APPROVER, Decision::Approve),
        at(900),
    );
    let FreezeState::Restoring {
        previous,
        by,
        grants_set: set_yet,
        activated: activated_yet,
        ..
    } = &two.state
    else {
        panic!("expected Restoring, got {:?}", two.state)
    };
    assert_eq!(previous, &previous_grants());
    assert_eq!(by, OTHER_APPROVER);
    assert!(!set_yet && !activated_yet);
    assert_eq!(
        idp_commands(&two.commands),
        [
            &IdpCommand::SetGrants {
                client_id: CLIENT_ID.into(),
                scopes: strings(&[METRICS_READ, ORDERS_READ]),
                token_lifetime_secs: 600,
            },
            &IdpCommand::ActivateClient {
                client_id: CLIENT_ID.into()
            },
        ],
        "exactly the grants the agent had, then the client back on"
    );
    assert!(two.commands.iter().any(|c| matches!(
        c,
        Command::CloseApproval {
            approval_id,
            outcome: ApprovalOutcome::Approved { by, .. },
        } if approval_id == DECISION_ID && by == OTHER_APPROVER
    )));
    assert!(timers_cancelled(&two.commands).contains(&APPROVAL_EXPIRY_TIMER));

    let unfrozen_change = AgentChange::Unfrozen {
        scopes: strings(&[METRICS_READ, ORDERS_READ]),
        token_lifetime_secs: 600,
        by: OTHER_APPROVER.into(),
    };

    // grants set, then activated
    let set = accepted::<Freeze>(
        &two.state,
        grants_set(&strings(&[METRICS_READ, ORDERS_READ]), 600),
        at(960),
    );
    assert!(matches!(
        set.state,
        FreezeState::Restoring {
            grants_set: true,
            activated: false,
            ..
        }
    ));
    assert!(set.commands.is_empty());
    let done = accepted::<Freeze>(&set.state, client_activated(), at(990));
    let FreezeState::Unfrozen { by, .. } = &done.state else {
        panic!("expected Unfrozen, got {:?}", done.state)
    };
    assert_eq!(by, OTHER_APPROVER);
    assert!(Freeze::is_terminal(&done.state));
    assert_eq!(agent_changes(&done.commands), [&unfrozen_change]);
    let unfrozen = audit_of(&done.commands, AuditKind::AgentUnfrozen);
    assert_eq!(unfrozen.actor, Actor::Person(OTHER_APPROVER.into()));
    assert_eq!(unfrozen.scopes, strings(&[METRICS_READ, ORDERS_READ]));
    assert_eq!(notified(&done.commands), [OWNER]);

    // activated, then grants set: the same end
    let activated = accepted::<Freeze>(&two.state, client_activated(), at(960));
    assert!(matches!(
        activated.state,
        FreezeState::Restoring {
            grants_set: false,
            activated: true,
            ..
        }
    ));
    assert!(activated.commands.is_empty());
    let done_too = accepted::<Freeze>(
        &activated.state,
        grants_set(&strings(&[METRICS_READ, ORDERS_READ]), 600),
        at(990),
    );
    assert_eq!(done_too.state, done.state);
    assert_eq!(done_too.commands, done.commands);

    // the registry record: frozen by the containment, active with its grants after the unfreeze
    let mut agent = active_agent();
    let started = started::<Freeze>(freeze_input(Severity::Critical, &[Action::Freeze]));
    for change in agent_changes(&started.commands) {
        agent.apply(change, now());
    }
    assert_eq!(agent.status, AgentStatus::Frozen);
    agent.apply(&unfrozen_change, at(990));
    assert_eq!(agent.status, AgentStatus::Active);
    assert_eq!(agent.scopes, strings(&[METRICS_READ, ORDERS_READ]));
    assert_eq!(agent.token_lifetime_secs, 600);
}

fn scenario_freeze_only_security_may_decide_an_unfreeze() {
    let contained = contained_freeze(Severity::High);
    // the owner knows the agent but may not lift security's freeze
    assert_rejected(
        on::<Freeze>(&contained.state, decide(OWNER, Decision::Approve), at(600)),
        "approver",
        "is not an allowed approver",
    );
    assert_rejected(
        on::<Freeze>(&contained.state, decide(OUTSIDER, Decision::Deny), at(600)),
        "approver",
        "is not an allowed approver",
    );
    // nor does the detection that raised it
    assert_rejected(
        on::<Freeze>(
            &contained.state,
            decide(freeze::DETECTION, Decision::Approve),
            at(600),
        ),
        "approver",
        "cannot approve it",
    );
    // a decision on another approval (the ask of a MEDIUM freeze) is not this decision
    assert_rejected(
        on::<Freeze>(&contained.state, approve(APPROVER), at(600)),
        "approval_id",
        DECISION_ID,
    );
    // after the decision window, nobody decides any more
    let late = decision_of(&contained.state).expires_at + Duration::seconds(1);
    assert_rejected(
        on::<Freeze>(&contained.state, decide(APPROVER, Decision::Approve), late),
        "approval",
        "expired",
    );
}

fn scenario_freeze_deny_hands_the_agent_to_decommission() {
    let contained = contained_freeze(Severity::Critical);
    // one "no" decides, even where an unfreeze needs two "yes" (and after one of them)
    let one = accepted::<Freeze>(
        &contained.state,
        decide(APPROVER, Decision::Approve),
        at(600),
    );
    for state in [&contained.state, &one.state] {
        let step = accepted::<Freeze>(state, decide(OTHER_APPROVER, Decision::Deny), at(900));
        let FreezeState::Decommissioning { by, .. } = &step.state else {
            panic!("expected Decommissioning, got {:?}", step.state)
        };
        assert_eq!(by, OTHER_APPROVER);
        assert!(Freeze::is_terminal(&step.state));
        let starts: Vec<&Command> = step
            .commands
            .iter()
            .filter(|c| matches!(c, Command::StartDecommission { .. }))
            .collect();
        assert_eq!(
            starts,
            [&Command::StartDecommission {
                agent_id: AGENT_ID.into(),
                reason: DecommissionReason::Freeze {
                    decided_by: OTHER_APPROVER.into(),
                },
            }]
        );
        assert!(
            idp_commands(&step.commands).is_empty(),
            "the client stays deactivated"
        );
        assert!(step.commands.iter().any(|c| matches!(
            c,
            Command::CloseApproval {
                outcome: ApprovalOutcome::Denied { .. },
                ..
            }
        )));
        assert_eq!(audit_kinds(&step.commands), [AuditKind::ApprovalDecided]);
    }
}

fn scenario_freeze_unanswered_decision_keeps_the_agent_frozen() {
    let contained = contained_freeze(Severity::High);
    let expires_at = decision_of(&contained.state).expires_at;
    assert_rejected(
        on::<Freeze>(
            &contained.state,
            expiry_timer(),
            expires_at - Duration::seconds(1),
        ),
        "timer",
        "does not expire until",
    );
    // the decision has no reminder
    assert_rejected(
        on::<Freeze>(&contained.state, reminder_timer(), expires_at),
        "timer",
        "no reminder due",
    );

    let kept = accepted::<Freeze>(&contained.state, expiry_timer(), expires_at);
    assert!(matches!(kept.state, FreezeState::Kept { .. }));
    assert!(Freeze::is_terminal(&kept.state));
    assert_eq!(
        audit_kinds(&kept.commands),
        [AuditKind::ApprovalExpired, AuditKind::FreezeKept]
    );
    assert_eq!(
        audit_of(&kept.commands, AuditKind::FreezeKept).actor,
        Actor::Schedule(APPROVAL_EXPIRY_TIMER.into())
    );
    assert!(kept.commands.iter().any(|c| matches!(
        c,
        Command::CloseApproval {
            outcome: ApprovalOutcome::Expired { .. },
            ..
        }
    )));
    assert!(matches!(
        follow_ups(&kept.commands).as_slice(),
        [FollowUp::Escalation { .. }]
    ));
    assert!(
        idp_commands(&kept.commands).is_empty(),
        "nothing is restored or deleted"
    );
    assert!(
        !kept.commands.iter().any(|c| matches!(
            c,
            Command::StartDecommission { .. } | Command::UpdateAgent { .. }
        )),
        "the agent simply stays frozen"
    );
}

fn scenario_freeze_failed_containment_or_restore_tells_security() {
    // containment: the revocation failed for good
    let first = started::<Freeze>(freeze_input(Severity::High, &[Action::Freeze]));
    let deactivated = accepted::<Freeze>(&first.state, client_deactivated(), ms(250));
    for state in [&first.state, &deactivated.state] {
        let step = accepted::<Freeze>(state, command_failed("idp.revoke_tokens"), ms(800));
        let FreezeState::Failed { reason, .. } = &step.state else {
            panic!("expected Failed, got {:?}", step.state)
        };
        assert!(
            reason.contains("idp.revoke_tokens failed: 403 Forbidden"),
            "{reason}"
        );
        assert!(Freeze::is_terminal(&step.state));
        assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
        let (_, subject, body) = notifications(&step.commands)[0];
        assert!(subject.contains(AGENT_NAME), "{subject}");
        assert!(
            body.contains("Act at the identity provider directly"),
            "{body}"
        );
        assert!(agent_changes(&step.commands).iter().any(|c| matches!(
            c,
            AgentChange::Flag {
                flag: AgentFlag::FreezeRequested { .. }
            }
        )));
        assert!(
            !step
                .commands
                .iter()
                .any(|c| matches!(c, Command::RequestApproval(_))),
            "no decision is asked about a freeze that did not hold"
        );
    }

    // restore: the client could not be activated again
    let step = accepted::<Freeze>(
        &restoring_freeze(),
        command_failed("idp.activate_client"),
        at(3700),
    );
    let FreezeState::Failed { reason, .. } = &step.state else {
        panic!("expected Failed, got {:?}", step.state)
    };
    assert!(
        reason.contains("idp.activate_client failed: 403 Forbidden"),
        "{reason}"
    );
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    assert!(idp_commands(&step.commands).is_empty());
}

fn scenario_freeze_medium_finding_asks_before_freezing() {
    for severity in [Severity::Medium, Severity::Low] {
        let step = started::<Freeze>(freeze_input(severity, &[Action::Freeze]));
        let FreezeState::Asking {
            previous,
            accepted_at,
            ..
        } = &step.state
        else {
            panic!("expected Asking, got {:?}", step.state)
        };
        assert_eq!(previous, &previous_grants());
        assert_eq!(accepted_at, &signal_accepted_at());
        let approval = freeze_question_of(&step.state);
        assert_eq!(approval.id, APPROVAL_ID);
        assert_eq!(approval.action, "freeze");
        assert_eq!(approval.requester, freeze::DETECTION);
        assert_eq!(
            approval.approvers,
            strings(&[OWNER, APPROVER, OTHER_APPROVER]),
            "the owner may confirm a freeze too"
        );
        assert_eq!(approval.quorum, 1);
        assert_eq!(approval.expires_at, approval_expires_at());
        assert_eq!(
            approval.remind_at,
            Some(approval_expires_at() - Duration::seconds(3600))
        );
        assert!(approval.justification.contains("source: 203.0.113.9"));
        assert_eq!(
            names(&step.commands),
            [
                "audit",
                "agent.update",
                "timer.set",
                "timer.set",
                "approval.request",
                "audit",
            ]
        );
        assert_eq!(
            audit_kinds(&step.commands),
            [AuditKind::AnomalyDetected, AuditKind::ApprovalRequested]
        );
        assert!(
            idp_commands(&step.commands).is_empty(),
            "nothing is frozen before someone says so"
        );
        assert!(
            !agent_changes(&step.commands)
                .iter()
                .any(|c| matches!(c, AgentChange::Frozen { .. }))
        );
        assert!(!Freeze::is_terminal(&step.state));
    }
}

fn scenario_freeze_confirmed_medium_finding_contains() {
    for confirmer in [OWNER, APPROVER] {
        let asking = asking_freeze();
        let step = accepted::<Freeze>(&asking.state, approve(confirmer), at(1800));
        let FreezeState::Containing { containment, .. } = &step.state else {
            panic!("expected Containing, got {:?}", step.state)
        };
        assert_eq!(
            containment.accepted_at,
            signal_accepted_at(),
            "the time to contain still counts from the signal"
        );
        assert_eq!(
            names(&step.commands)[..4],
            [
                "timer.cancel",
                "timer.cancel",
                "approval.close",
                "audit", // the decision
            ]
        );
        assert_contains_first(&step.commands, Actor::Person(confirmer.into()));

        let revoked = accepted::<Freeze>(&step.state, tokens_revoked(), at(1801));
        let contained = accepted::<Freeze>(&revoked.state, client_deactivated(), at(1802));
        let decision = decision_of(&contained.state);
        assert_eq!(decision.quorum, 1);
        assert!(
            decision.justification.contains("contained in 1802500 ms"),
            "{}",
            decision.justification
        );
    }
}

fn scenario_freeze_medium_finding_denied_or_unanswered_is_dismissed() {
    let asking = asking_freeze();
    let remind_at = freeze_question_of(&asking.state)
        .remind_at
        .expect("the test policy reminds");

    // denied
    let denied = accepted::<Freeze>(&asking.state, deny(OWNER), at(600));
    assert_eq!(
        denied.state,
        FreezeState::Dismissed {
            agent: active_agent(),
            by: Some(OWNER.into()),
        }
    );
    assert!(Freeze::is_terminal(&denied.state));
    assert_eq!(
        audit_kinds(&denied.commands),
        [AuditKind::ApprovalDecided, AuditKind::FreezeDismissed]
    );
    assert_eq!(
        audit_of(&denied.commands, AuditKind::FreezeDismissed).actor,
        Actor::Person(OWNER.into())
    );
    assert!(idp_commands(&denied.commands).is_empty());

    // reminded, still asking
    assert_rejected(
        on::<Freeze>(
            &asking.state,
            reminder_timer(),
            remind_at - Duration::seconds(1),
        ),
        "timer",
        "no reminder due",
    );
    let reminded = accepted::<Freeze>(&asking.state, reminder_timer(), remind_at);
    assert_eq!(reminded.state, asking.state);
    assert_eq!(
        follow_ups(&reminded.commands),
        [&FollowUp::Reminder {
            expires_at: approval_expires_at()
        }]
    );

    // unanswered
    assert_rejected(
        on::<Freeze>(&reminded.state, expiry_timer(), remind_at),
        "timer",
        "does not expire until",
    );
    let expired = accepted::<Freeze>(&reminded.state, expiry_timer(), approval_expires_at());
    assert_eq!(
        expired.state,
        FreezeState::Dismissed {
            agent: active_agent(),
            by: None,
        }
    );
    assert_eq!(
        audit_kinds(&expired.commands),
        [AuditKind::ApprovalExpired, AuditKind::FreezeDismissed]
    );
    let dismissed = audit_of(&expired.commands, AuditKind::FreezeDismissed);
    assert_eq!(
        dismissed.actor,
        Actor::Schedule(APPROVAL_EXPIRY_TIMER.into())
    );
    assert!(
        dismissed.message.contains("not frozen"),
        "{}",
        dismissed.message
    );
    assert!(idp_commands(&expired.commands).is_empty());
}

fn scenario_freeze_medium_question_is_withdrawn_when_a_stronger_finding_contains() {
    let asking = asking_freeze();
    let question = freeze_question_of(&asking.state).id.clone();
    let withdrawn = accepted::<Freeze>(
        &asking.state,
        Event::Cancel {
            by: Actor::System,
            reason: "a CRITICAL finding froze it".into(),
        },
        at(60),
    );
    assert_eq!(
        withdrawn.state,
        FreezeState::Dismissed {
            agent: active_agent(),
            by: None,
        }
    );
    assert!(withdrawn.commands.iter().any(|c| matches!(
        c,
        Command::CloseApproval { approval_id, outcome: ApprovalOutcome::Cancelled { .. } } if *approval_id == question
    )));
    assert!(
        withdrawn
            .commands
            .iter()
            .any(|c| matches!(c, Command::CancelTimer { name } if name == APPROVAL_EXPIRY_TIMER))
    );
    let audit = audit_of(&withdrawn.commands, AuditKind::FreezeDismissed);
    assert!(audit.message.contains("withdrawn"), "{}", audit.message);
    assert!(idp_commands(&withdrawn.commands).is_empty());
}

fn scenario_freeze_an_agent_frozen_earlier_goes_straight_to_the_decision() {
    let mut frozen = active_agent();
    frozen.status = AgentStatus::Frozen;
    let input = FreezeInput {
        agent: frozen.clone(),
        finding: finding(Severity::High, &[Action::Freeze]),
        accepted_at: signal_accepted_at(),
        raised_by: Actor::Person(OWNER.into()),
        decide_only: true,
    };
    let step = started::<Freeze>(input.clone());
    let approval = decision_of(&step.state);
    assert_eq!(approval.action, "unfreeze");
    assert_eq!(approval.requester, OWNER, "the person asking");
    assert!(approval.justification.contains("frozen earlier"));
    assert!(
        idp_commands(&step.commands).is_empty(),
        "nothing is contained again"
    );
    assert_eq!(audit_kinds(&step.commands), [AuditKind::ApprovalRequested]);
    // Approved: the grants it holds are restored.
    let restoring = accepted::<Freeze>(&step.state, decide(APPROVER, Decision::Approve), at(60));
    assert_eq!(Freeze::state_name(&restoring.state), "Restoring");
    assert!(
        restoring
            .commands
            .contains(&Command::Idp(IdpCommand::SetGrants {
                client_id: CLIENT_ID.into(),
                scopes: frozen.scopes.clone(),
                token_lifetime_secs: frozen.token_lifetime_secs,
            }))
    );
    // Only a frozen agent can be asked about.
    assert_rejected(
        start::<Freeze>(
            FreezeInput {
                agent: active_agent(),
                ..input
            },
            signal_accepted_at(),
        ),
        "agent",
        "only a frozen agent can be unfrozen",
    );
}

fn scenario_freeze_finding_without_freeze_action_alerts_only() {
    let step = started::<Freeze>(freeze_input(
        Severity::High,
        &[Action::Alert, Action::Rotate],
    ));
    let FreezeState::Alerted { finding: kept, .. } = &step.state else {
        panic!("expected Alerted, got {:?}", step.state)
    };
    assert_eq!(kept.action, [Action::Alert, Action::Rotate]);
    assert!(Freeze::is_terminal(&step.state));
    assert_eq!(
        names(&step.commands),
        ["audit", "agent.update", "notify", "notify"]
    );
    assert_eq!(audit_kinds(&step.commands), [AuditKind::AnomalyDetected]);
    assert!(matches!(
        agent_changes(&step.commands).as_slice(),
        [AgentChange::Flag {
            flag: AgentFlag::Anomaly {
                severity: Severity::High,
                ..
            }
        }]
    ));
    assert_eq!(notified(&step.commands), [OWNER, SECURITY_CHANNEL]);
    for (_, subject, body) in notifications(&step.commands) {
        assert_eq!(
            subject,
            format!("HIGH anomaly on {AGENT_NAME}: new-source-ip")
        );
        assert!(body.contains("known sources: 10.1.0.5, 10.1.0.6"), "{body}");
    }
    assert!(idp_commands(&step.commands).is_empty());
    assert!(!step.commands.iter().any(|c| matches!(
        c,
        Command::RequestApproval(_) | Command::Supersede { .. } | Command::SetTimer { .. }
    )));
}

fn scenario_freeze_refuses_an_agent_without_client() {
    let mut input = freeze_input(Severity::Critical, &[Action::Freeze]);
    input.agent.client_id = None;
    assert_rejected(
        start::<Freeze>(input, now()),
        "agent",
        "has no client at the identity provider",
    );
}

fn scenario_freeze_refuses_events_that_do_not_apply() {
    let containing = started::<Freeze>(freeze_input(Severity::High, &[Action::Freeze])).state;
    assert_rejected(
        on::<Freeze>(&containing, approve(APPROVER), ms(100)),
        "event",
        "ApprovalDecided(approve) does not apply to freeze in state Containing",
    );
    // another client's deactivation is not this containment
    assert_rejected(
        on::<Freeze>(
            &containing,
            Event::ClientDeactivated {
                client_id: "0oa-other".into(),
            },
            ms(100),
        ),
        "event",
        "ClientDeactivated does not apply to freeze in state Containing",
    );
    assert_rejected(
        on::<Freeze>(&asking_freeze().state, client_deactivated(), ms(100)),
        "event",
        "ClientDeactivated does not apply to freeze in state Asking",
    );
    assert_rejected(
        on::<Freeze>(&restoring_freeze(), tokens_revoked(), at(3700)),
        "event",
        "TokensRevoked does not apply to freeze in state Restoring",
    );

    // ended freezes accept nothing
    let contained = contained_freeze(Severity::High).state;
    let expires_at = decision_of(&contained).expires_at;
    let ended = [
        accepted::<Freeze>(
            &accepted::<Freeze>(
                &restoring_freeze(),
                grants_set(&strings(&[METRICS_READ, ORDERS_READ]), 600),
                at(3700),
            )
            .state,
            client_activated(),
            at(3700),
        )
        .state,
        accepted::<Freeze>(&contained, decide(APPROVER, Decision::Deny), at(600)).state,
        accepted::<Freeze>(&contained, expiry_timer(), expires_at).state,
        accepted::<Freeze>(&asking_freeze().state, deny(OWNER), at(600)).state,
        started::<Freeze>(freeze_input(Severity::High, &[Action::Alert])).state,
        accepted::<Freeze>(
            &containing,
            command_failed("idp.deactivate_client"),
            ms(100),
        )
        .state,
    ];
    let names: BTreeSet<&str> = ended.iter().map(Freeze::state_name).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "Unfrozen",
            "Decommissioning",
            "Kept",
            "Dismissed",
            "Alerted",
            "Failed"
        ])
    );
    let mut events = every_lifecycle_event();
    events.extend([
        decide(APPROVER, Decision::Approve),
        client_activated(),
        shadow_claimed(),
        shadow_released(),
    ]);
    for state in &ended {
        assert!(Freeze::is_terminal(state));
        for event in events.clone() {
            let expected = format!(
                "{} does not apply to freeze in state {}",
                event.label(),
                Freeze::state_name(state)
            );
            assert_rejected(on::<Freeze>(state, event, at(7200)), "event", &expected);
        }
    }
}

// =============================================================================================
// Shadow agents (IdP clients nobody registered)
// =============================================================================================

const SHADOW_NAME: &str = "legacy-etl-client";
const DISCOVERY_SWEEP: &str = "discovery-sweep";

/// A client found at the IdP: an unregistered agent with no owner.
fn shadow_agent() -> Agent {
    Agent {
        id: AGENT_ID.into(),
        name: SHADOW_NAME.into(),
        owner: String::new(),
        team: String::new(),
        environment: "prod".into(),
        purpose: String::new(),
        scopes: strings(&[ORDERS_READ]),
        token_lifetime_secs: 3600,
        expires_on: None,
        status: AgentStatus::Unregistered,
        client_id: Some(CLIENT_ID.into()),
        secret_version: None,
        credential_issued_at: None,
        requested_by: String::new(),
        created_at: at(-30 * 86_400),
        updated_at: now(),
        flags: vec![],
        credentials: vec![],
        decommission: None,
        last_review: None,
    }
}

fn shadow_input(creator: Option<&str>) -> ShadowInput {
    ShadowInput {
        agent: shadow_agent(),
        creator: creator.map(str::to_string),
        found_by: Actor::Schedule(DISCOVERY_SWEEP.into()),
    }
}

fn claim_grace_ends() -> DateTime<Utc> {
    at(policy().discovery.grace_secs as i64)
}

fn unclaimed_shadow() -> ShadowState {
    started::<ShadowAgent>(shadow_input(Some(COLLEAGUE))).state
}

fn shadow_claimed() -> Event {
    Event::ShadowClaimed {
        by: COLLEAGUE.into(),
        owner: OWNER.into(),
        workflow_id: "wf-0002".into(),
    }
}

fn shadow_released() -> Event {
    Event::ShadowReleased {
        by: COLLEAGUE.into(),
        reason: "a test client from the 2023 migration".into(),
    }
}

fn grace_timer() -> Event {
    timer(discovery::GRACE_TIMER)
}

fn scenario_shadow_agent_found_asks_its_creator_and_security_to_claim_it() {
    let step = started::<ShadowAgent>(shadow_input(Some(COLLEAGUE)));
    assert_eq!(
        step.state,
        ShadowState::Unclaimed {
            agent: shadow_agent(),
            creator: Some(COLLEAGUE.into()),
            grace_ends: claim_grace_ends(),
        }
    );
    assert!(!ShadowAgent::is_terminal(&step.state));
    assert_eq!(
        names(&step.commands),
        ["agent.save", "audit", "timer.set", "notify", "notify"]
    );
    assert_eq!(saved_agents(&step.commands), [&shadow_agent()]);
    assert_eq!(
        saved_agents(&step.commands)[0].status,
        AgentStatus::Unregistered
    );
    let found = audit_of(&step.commands, AuditKind::ShadowAgentFound);
    assert_eq!(found.actor, Actor::Schedule(DISCOVERY_SWEEP.into()));
    assert_eq!(found.scopes, strings(&[ORDERS_READ]));
    assert!(
        found.message.contains(CLIENT_ID)
            && found.message.contains(&format!("created by {COLLEAGUE}")),
        "{}",
        found.message
    );
    assert_eq!(
        timers_set(&step.commands),
        [(discovery::GRACE_TIMER, claim_grace_ends())]
    );
    assert_eq!(
        claim_grace_ends(),
        now() + Duration::days(7),
        "the default grace period"
    );
    assert_eq!(notified(&step.commands), [COLLEAGUE, SECURITY_CHANNEL]);
    for (_, subject, body) in notifications(&step.commands) {
        assert_eq!(subject, format!("Unregistered agent found: {SHADOW_NAME}"));
        for fragment in [
            format!("steward shadow claim {CLIENT_ID} --owner"),
            format!("steward shadow release {CLIENT_ID}"),
            format!("Scopes: {ORDERS_READ}"),
            format!("by {COLLEAGUE}"),
            "2025-03-17 09:00 UTC".to_string(),
        ] {
            assert!(body.contains(&fragment), "{fragment:?} not in {body}");
        }
    }
    assert!(idp_commands(&step.commands).is_empty());

    // nobody known created it: the security channel alone is asked
    let step = started::<ShadowAgent>(shadow_input(None));
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    assert!(
        audit_of(&step.commands, AuditKind::ShadowAgentFound)
            .message
            .contains("the security channel")
    );
}

fn scenario_shadow_agent_refuses_a_client_without_id() {
    let mut input = shadow_input(Some(COLLEAGUE));
    input.agent.client_id = None;
    assert_rejected(
        start::<ShadowAgent>(input, now()),
        "client_id",
        "needs its client id",
    );
}

fn scenario_shadow_agent_claimed_ends_the_grace_period() {
    let step = accepted::<ShadowAgent>(&unclaimed_shadow(), shadow_claimed(), at(3600));
    assert_eq!(
        step.state,
        ShadowState::Claimed {
            agent: shadow_agent(),
            by: COLLEAGUE.into(),
            owner: OWNER.into(),
            onboarding: "wf-0002".into(),
        }
    );
    assert!(ShadowAgent::is_terminal(&step.state));
    assert_eq!(names(&step.commands), ["timer.cancel", "audit"]);
    assert_eq!(timers_cancelled(&step.commands), [discovery::GRACE_TIMER]);
    let claimed = audit_of(&step.commands, AuditKind::ShadowAgentClaimed);
    assert_eq!(claimed.actor, Actor::Person(COLLEAGUE.into()));
    assert!(
        claimed.message.contains(&format!("with owner {OWNER}"))
            && claimed.message.contains("onboarding wf-0002"),
        "{}",
        claimed.message
    );
    assert!(
        idp_commands(&step.commands).is_empty(),
        "a claimed client keeps working"
    );
    // a late grace timer changes nothing
    assert_rejected(
        on::<ShadowAgent>(&step.state, grace_timer(), claim_grace_ends()),
        "event",
        "TimerFired does not apply to shadow_agent in state Claimed",
    );
}

fn assert_releases(step: &Step<ShadowState>, actor: Actor, why_fragment: &str) {
    let ShadowState::Releasing { why, .. } = &step.state else {
        panic!("expected Releasing, got {:?}", step.state)
    };
    assert!(why.contains(why_fragment), "{why}");
    assert!(!ShadowAgent::is_terminal(&step.state));
    assert_eq!(
        names(&step.commands),
        [
            "timer.cancel",
            "idp.deactivate_client",
            "agent.update",
            "audit"
        ]
    );
    assert_eq!(timers_cancelled(&step.commands), [discovery::GRACE_TIMER]);
    assert_eq!(
        idp_commands(&step.commands),
        [&IdpCommand::DeactivateClient {
            client_id: CLIENT_ID.into()
        }]
    );
    assert_eq!(
        agent_changes(&step.commands),
        [&AgentChange::Frozen {
            reason: why.clone()
        }]
    );
    let released = audit_of(&step.commands, AuditKind::ShadowAgentReleased);
    assert_eq!(released.actor, actor);
    assert!(released.message.contains(CLIENT_ID), "{}", released.message);
}

fn scenario_shadow_agent_released_is_frozen_then_decommissioned() {
    let releasing = accepted::<ShadowAgent>(&unclaimed_shadow(), shadow_released(), at(3600));
    assert_releases(
        &releasing,
        Actor::Person(COLLEAGUE.into()),
        &format!("let go by {COLLEAGUE}: a test client from the 2023 migration"),
    );
    let ShadowState::Releasing { why, .. } = &releasing.state else {
        unreachable!()
    };

    // another client's deactivation is not this one's
    assert_rejected(
        on::<ShadowAgent>(
            &releasing.state,
            Event::ClientDeactivated {
                client_id: "0oa-other".into(),
            },
            at(3601),
        ),
        "event",
        "ClientDeactivated does not apply to shadow_agent in state Releasing",
    );

    let released = accepted::<ShadowAgent>(&releasing.state, client_deactivated(), at(3601));
    assert_eq!(
        released.state,
        ShadowState::Released {
            agent: shadow_agent(),
            why: why.clone(),
        }
    );
    assert!(ShadowAgent::is_terminal(&released.state));
    assert_eq!(
        released.commands,
        [Command::StartDecommission {
            agent_id: AGENT_ID.into(),
            reason: DecommissionReason::Unclaimed { why: why.clone() },
        }]
    );
}

fn scenario_shadow_agent_unclaimed_after_the_grace_period_is_released() {
    let unclaimed = unclaimed_shadow();
    // an early grace timer (a stale one from before a restart) changes nothing
    assert_rejected(
        on::<ShadowAgent>(
            &unclaimed,
            grace_timer(),
            claim_grace_ends() - Duration::seconds(1),
        ),
        "event",
        "TimerFired does not apply to shadow_agent in state Unclaimed",
    );
    // nor does a foreign timer
    assert_rejected(
        on::<ShadowAgent>(&unclaimed, expiry_timer(), claim_grace_ends()),
        "event",
        "TimerFired does not apply to shadow_agent in state Unclaimed",
    );

    for fired_at in [claim_grace_ends(), claim_grace_ends() + Duration::hours(2)] {
        let step = accepted::<ShadowAgent>(&unclaimed, grace_timer(), fired_at);
        assert_releases(
            &step,
            Actor::Schedule(discovery::GRACE_TIMER.into()),
            "was not claimed within the grace period (ended 2025-03-17 09:00 UTC)",
        );
        let released = accepted::<ShadowAgent>(&step.state, client_deactivated(), fired_at);
        assert!(matches!(
            released.commands.as_slice(),
            [Command::StartDecommission {
                reason: DecommissionReason::Unclaimed { .. },
                ..
            }]
        ));
    }
}

fn scenario_shadow_agent_release_failure_tells_security() {
    let releasing = accepted::<ShadowAgent>(&unclaimed_shadow(), shadow_released(), at(3600));
    let step = accepted::<ShadowAgent>(
        &releasing.state,
        command_failed("idp.deactivate_client"),
        at(3700),
    );
    let ShadowState::Failed { reason, .. } = &step.state else {
        panic!("expected Failed, got {:?}", step.state)
    };
    assert!(
        reason.contains("idp.deactivate_client failed: 403 Forbidden"),
        "{reason}"
    );
    assert!(ShadowAgent::is_terminal(&step.state));
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    let (_, subject, body) = notifications(&step.commands)[0];
    assert!(subject.contains("could not be frozen"), "{subject}");
    assert!(
        body.contains("Deactivate it at the identity provider"),
        "{body}"
    );
    assert!(
        !step
            .commands
            .iter()
            .any(|c| matches!(c, Command::StartDecommission { .. })),
        "no decommission of a client that is still active"
    );
}

fn scenario_shadow_agent_refuses_events_that_do_not_apply() {
    let unclaimed = unclaimed_shadow();
    assert_rejected(
        on::<ShadowAgent>(&unclaimed, client_deactivated(), at(60)),
        "event",
        "ClientDeactivated does not apply to shadow_agent in state Unclaimed",
    );
    let releasing = accepted::<ShadowAgent>(&unclaimed, shadow_released(), at(60)).state;
    assert_rejected(
        on::<ShadowAgent>(&releasing, shadow_claimed(), at(120)),
        "event",
        "ShadowClaimed does not apply to shadow_agent in state Releasing",
    );

    let ended = [
        accepted::<ShadowAgent>(&unclaimed, shadow_claimed(), at(60)).state,
        accepted::<ShadowAgent>(&releasing, client_deactivated(), at(120)).state,
        accepted::<ShadowAgent>(&releasing, command_failed("idp.deactivate_client"), at(120)).state,
    ];
    let names: BTreeSet<&str> = ended.iter().map(ShadowAgent::state_name).collect();
    assert_eq!(names, BTreeSet::from(["Claimed", "Released", "Failed"]));
    let mut events = every_lifecycle_event();
    events.extend([
        shadow_claimed(),
        shadow_released(),
        grace_timer(),
        client_activated(),
    ]);
    for state in &ended {
        assert!(ShadowAgent::is_terminal(state));
        for event in events.clone() {
            let expected = format!(
                "{} does not apply to shadow_agent in state {}",
                event.label(),
                ShadowAgent::state_name(state)
            );
            assert_rejected(
                on::<ShadowAgent>(state, event, claim_grace_ends()),
                "event",
                &expected,
            );
        }
    }
}
