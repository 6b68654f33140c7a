//! Rules onboarding and scope change share: approval quorum (the two-person rule), reminders,
//! escalation, the people channel, the token-lifetime ceiling.

use super::*;

scenarios![
    scenario_lifetime_ceiling_holds_even_if_policy_allows_more,
    scenario_onboarding_two_person_rule_needs_two_distinct_approvers,
    scenario_onboarding_two_person_rule_deny_after_one_vote_denies,
    scenario_onboarding_reminder_keeps_waiting_and_expiry_escalates,
    scenario_scope_change_two_person_rule_needs_two_distinct_approvers,
    scenario_scope_change_reminder_keeps_waiting,
    scenario_two_person_rule_refuses_a_request_it_cannot_satisfy,
    scenario_people_channel_failures_do_not_fail_provisioning_or_granting,
    scenario_requester_is_compared_trimmed_and_in_any_case_when_the_approval_opens,
    scenario_a_refused_approver_is_not_told_who_the_approvers_are,
    scenario_a_reminder_is_set_only_when_it_comes_before_the_expiry,
    scenario_only_a_quorum_above_one_is_spelled_out,
    scenario_an_approval_stored_before_quorums_needs_one_approver,
];

pub(crate) fn payments_request() -> AgentRequest {
    let mut request = sensitive_request();
    request.scopes = strings(&[PAYMENTS_WRITE]);
    request
}

pub(crate) fn follow_ups(commands: &[Command]) -> Vec<&FollowUp> {
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

// ---- review follow-ups -------------------------------------------------------------
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

fn scenario_requester_is_compared_trimmed_and_in_any_case_when_the_approval_opens() {
    // An approver asking under a padded, shouted spelling of themselves is still the requester:
    // not among the approvers, and their own "yes" is refused.
    let mut input = onboarding_input(sensitive_request());
    input.requester = format!("  {}  ", APPROVER.to_uppercase());
    let awaiting = started::<Onboarding>(input).state;
    let OnboardingState::AwaitingApproval { approval, .. } = &awaiting else {
        panic!("expected AwaitingApproval, got {awaiting:?}")
    };
    assert_eq!(approval.approvers, strings(&[OTHER_APPROVER]));
    assert_eq!(approval.requester, APPROVER.to_uppercase());
    assert_rejected(
        on::<Onboarding>(&awaiting, approve(APPROVER), at(60)),
        "approver",
        "cannot approve it",
    );
    accepted::<Onboarding>(&awaiting, approve(OTHER_APPROVER), at(60));
    // Under the two-person rule the same requester leaves one approver: refused up front.
    let mut input = onboarding_input(payments_request());
    input.requester = format!(" {APPROVER}\t");
    assert_rejected(
        start::<Onboarding>(input, now()),
        "approvers",
        "needs 2 distinct approvers other than the requester",
    );
}

fn scenario_a_refused_approver_is_not_told_who_the_approvers_are() {
    // The refusal goes back to whoever clicked (an ephemeral Slack answer): it says they are not
    // an approver of this request, never who is.
    let refusals = [
        on::<Onboarding>(&awaiting_onboarding(), approve(OUTSIDER), at(60)).unwrap_err(),
        on::<ScopeChange>(&awaiting_scope_change(), deny(OUTSIDER), at(60)).unwrap_err(),
        on::<Freeze>(&asking_freeze().state, deny(OUTSIDER), at(60)).unwrap_err(),
    ];
    for refused in refusals {
        let text = refused.to_string();
        assert!(text.contains("is not an allowed approver"), "{text}");
        for person in [APPROVER, OTHER_APPROVER, OWNER] {
            assert!(!text.contains(person), "{person} is named: {text}");
        }
    }
}

/// The approval as a policy with this reminder and expiry opens it.
fn opened_under(reminder_secs: u64, expiry_secs: u64) -> ApprovalRequest {
    let mut p = policy().clone();
    p.approval_reminder_secs = reminder_secs;
    p.approval_expiry_secs = expiry_secs;
    let ctx = statemachines::Ctx {
        now: now(),
        policy: &p,
        workflow_id: WORKFLOW_ID,
    };
    let step =
        statemachines::workflow::start::<Onboarding>(onboarding_input(sensitive_request()), &ctx)
            .unwrap();
    let OnboardingState::AwaitingApproval { approval, .. } = step.state else {
        panic!("expected AwaitingApproval")
    };
    approval
}

fn scenario_a_reminder_is_set_only_when_it_comes_before_the_expiry() {
    // Off (0), or not before the expiry: no reminder.
    assert_eq!(opened_under(0, 3600).remind_at, None);
    assert_eq!(opened_under(3600, 3600).remind_at, None);
    assert_eq!(opened_under(7200, 3600).remind_at, None);
    // Otherwise it comes that long before the expiry.
    let a = opened_under(600, 3600);
    assert_eq!(a.expires_at, now() + Duration::seconds(3600));
    assert_eq!(a.remind_at, Some(now() + Duration::seconds(3000)));
    assert_eq!(
        opened_under(3599, 3600).remind_at,
        Some(now() + Duration::seconds(1))
    );
}

fn scenario_only_a_quorum_above_one_is_spelled_out() {
    let one = started::<Onboarding>(onboarding_input(sensitive_request()));
    let asked = audit_of(&one.commands, AuditKind::ApprovalRequested);
    assert!(
        !asked.message.contains("distinct approvers"),
        "{}",
        asked.message
    );
    let two = started::<Onboarding>(onboarding_input(payments_request()));
    let asked = audit_of(&two.commands, AuditKind::ApprovalRequested);
    assert!(
        asked.message.contains("(2 distinct approvers needed)"),
        "{}",
        asked.message
    );
}

fn scenario_an_approval_stored_before_quorums_needs_one_approver() {
    let OnboardingState::AwaitingApproval { approval, .. } = awaiting_onboarding() else {
        panic!("expected AwaitingApproval")
    };
    let mut stored = serde_json::to_value(&approval).unwrap();
    stored.as_object_mut().unwrap().remove("quorum");
    let read: ApprovalRequest = serde_json::from_value(stored).unwrap();
    assert_eq!(read.quorum, 1);
}
