//! Freeze scenarios (the kill switch after an anomaly finding).

use super::*;

scenarios![
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
    scenario_freeze_only_security_may_decide_an_unfreeze,
    scenario_freeze_refuses_an_agent_without_client,
    scenario_freeze_refuses_events_that_do_not_apply,
    scenario_freeze_owner_may_confirm_but_only_security_may_dismiss,
    scenario_freeze_critical_unfreeze_needs_two_approvers_besides_the_requester,
    scenario_freeze_critical_decision_under_a_one_approver_policy_cannot_unfreeze,
    scenario_freeze_a_person_under_the_detection_name_neither_withdraws_nor_decides,
    scenario_freeze_another_timer_or_another_commands_failure_is_not_this_freezes,
    scenario_freeze_restore_counts_only_this_clients_results,
    scenario_freeze_critical_decision_with_enough_approvers_does_not_say_too_few,
    scenario_freeze_question_goes_to_the_owner_once_and_never_to_a_blank_owner,
    scenario_freeze_puts_certificates_on_hold_and_the_unfreeze_releases_them,
];

/// The IdP event whose token request raised the finding.
pub(crate) const SIGNAL_EVENT: &str = "okta-evt-4711";
/// The decision asked after containment (`<workflow>-decision`).
pub(crate) const DECISION_ID: &str = "wf-0001-decision";

pub(crate) fn finding(severity: Severity, action: &[Action]) -> Finding {
    Finding {
        rule: "new-source-ip".into(),
        severity,
        action: action.to_vec(),
        summary: format!("{AGENT_NAME} used its credential from 203.0.113.9, never seen before"),
        evidence: strings(&["source: 203.0.113.9", "known sources: 10.1.0.5, 10.1.0.6"]),
    }
}

/// The signal was accepted 1.5 s before the freeze started (at `now()`).
pub(crate) fn signal_accepted_at() -> DateTime<Utc> {
    now() - Duration::milliseconds(1500)
}

pub(crate) fn ms(millis: i64) -> DateTime<Utc> {
    now() + Duration::milliseconds(millis)
}

pub(crate) fn freeze_input(severity: Severity, action: &[Action]) -> FreezeInput {
    FreezeInput {
        agent: active_agent(),
        finding: finding(severity, action),
        accepted_at: signal_accepted_at(),
        raised_by: Actor::IdpEvent(SIGNAL_EVENT.into()),
        decide_only: false,
    }
}

/// The grants `active_agent()` holds: what an unfreeze restores.
pub(crate) fn previous_grants() -> Grants {
    Grants {
        client_id: CLIENT_ID.into(),
        scopes: strings(&[METRICS_READ, ORDERS_READ]),
        token_lifetime_secs: 600,
    }
}

pub(crate) fn decide(approver: &str, decision: Decision) -> Event {
    decided(
        DECISION_ID,
        approver,
        decision,
        Some("checked the evidence with the owner"),
    )
}

pub(crate) fn client_activated() -> Event {
    Event::ClientActivated {
        client_id: CLIENT_ID.into(),
    }
}

/// A freeze of `severity` contained: deactivated at +250 ms, revoked at +500 ms (2000 ms after
/// the signal was accepted).
pub(crate) fn contained_freeze(severity: Severity) -> Step<FreezeState> {
    let first = started::<Freeze>(freeze_input(severity, &[Action::Freeze, Action::Alert]));
    let deactivated = accepted::<Freeze>(&first.state, client_deactivated(), ms(250));
    accepted::<Freeze>(&deactivated.state, tokens_revoked(), ms(500))
}

pub(crate) fn decision_of(state: &FreezeState) -> &ApprovalRequest {
    match state {
        FreezeState::AwaitingDecision { approval, .. } => approval,
        other => panic!("expected AwaitingDecision, got {other:?}"),
    }
}

pub(crate) fn freeze_question_of(state: &FreezeState) -> &ApprovalRequest {
    match state {
        FreezeState::Asking { approval, .. } => approval,
        other => panic!("expected Asking, got {other:?}"),
    }
}

/// A HIGH freeze contained and approved for an unfreeze by `APPROVER`.
pub(crate) fn restoring_freeze() -> FreezeState {
    let contained = contained_freeze(Severity::High);
    accepted::<Freeze>(
        &contained.state,
        decide(APPROVER, Decision::Approve),
        at(3600),
    )
    .state
}

/// A MEDIUM finding that asks whether to freeze.
pub(crate) fn asking_freeze() -> Step<FreezeState> {
    started::<Freeze>(freeze_input(Severity::Medium, &[Action::Freeze]))
}

pub(crate) fn assert_contains_first(commands: &[Command], frozen_by: Actor) {
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
        ending: false,
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
            "the owner may confirm a freeze too (but not dismiss it)"
        );
        assert_eq!(
            audit_of(&step.commands, AuditKind::ApprovalRequested).actor,
            Actor::System,
            "Steward asks, not a person named like it"
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

    // denied by a security approver (the owner may not dismiss a finding about their agent)
    assert_rejected(
        on::<Freeze>(&asking.state, deny(OWNER), at(600)),
        "approver",
        "only a security approver may dismiss",
    );
    let denied = accepted::<Freeze>(&asking.state, deny(APPROVER), at(600));
    assert_eq!(
        denied.state,
        FreezeState::Dismissed {
            agent: active_agent(),
            by: Some(APPROVER.into()),
        }
    );
    assert!(Freeze::is_terminal(&denied.state));
    assert_eq!(
        audit_kinds(&denied.commands),
        [AuditKind::ApprovalDecided, AuditKind::FreezeDismissed]
    );
    assert_eq!(
        audit_of(&denied.commands, AuditKind::FreezeDismissed).actor,
        Actor::Person(APPROVER.into())
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
        accepted::<Freeze>(&asking_freeze().state, deny(APPROVER), at(600)).state,
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

/// A policy with the test policy's settings and only these approvers.
fn policy_with_approvers(approvers: &[&str]) -> statemachines::Policy {
    let mut p = policy().clone();
    p.approvers = strings(approvers);
    p
}

fn ctx_with(policy: &statemachines::Policy, at: DateTime<Utc>) -> statemachines::Ctx<'_> {
    statemachines::Ctx {
        now: at,
        policy,
        workflow_id: WORKFLOW_ID,
    }
}

/// An unfreeze request (`agents unfreeze`) for the frozen agent, by `by`, after a finding of
/// `severity`.
fn unfreeze_request(by: &str, severity: Severity) -> FreezeInput {
    let mut frozen = active_agent();
    frozen.status = AgentStatus::Frozen;
    FreezeInput {
        agent: frozen,
        finding: finding(severity, &[Action::Freeze]),
        accepted_at: signal_accepted_at(),
        raised_by: Actor::Person(by.into()),
        decide_only: true,
    }
}

fn scenario_freeze_owner_may_confirm_but_only_security_may_dismiss() {
    let asking = asking_freeze();
    // The owner's "Don't freeze" would dismiss a finding about their own agent: refused, however
    // they spell themselves.
    for owner in [OWNER.to_string(), format!("  {}  ", OWNER.to_uppercase())] {
        let refused = assert_rejected(
            on::<Freeze>(&asking.state, deny(&owner), at(600)),
            "approver",
            "only a security approver may dismiss",
        );
        assert!(
            refused.to_string().contains("may confirm the freeze"),
            "{refused}"
        );
        // Withdrawing the question dismisses it too: not the owner's either.
        assert_rejected(
            on::<Freeze>(&asking.state, cancel(&owner), at(600)),
            "by",
            "only a security approver may dismiss",
        );
    }
    // Nor anyone who is not asked.
    assert_rejected(
        on::<Freeze>(&asking.state, cancel(OUTSIDER), at(600)),
        "by",
        "may not withdraw",
    );
    // The owner's "Freeze" still contains.
    let confirmed = accepted::<Freeze>(&asking.state, approve(OWNER), at(600));
    assert_eq!(Freeze::state_name(&confirmed.state), "Containing");
    // A security approver dismisses, by a decision or by withdrawing the question.
    let denied = accepted::<Freeze>(&asking.state, deny(OTHER_APPROVER), at(600));
    assert_eq!(
        denied.state,
        FreezeState::Dismissed {
            agent: active_agent(),
            by: Some(OTHER_APPROVER.into()),
        }
    );
    let withdrawn = accepted::<Freeze>(&asking.state, cancel(APPROVER), at(600));
    assert_eq!(Freeze::state_name(&withdrawn.state), "Dismissed");
}

fn scenario_freeze_critical_unfreeze_needs_two_approvers_besides_the_requester() {
    // Two approvers listed, one of them asks: one approver is left, and one approval must not
    // unfreeze after a CRITICAL finding. Refused up front, not capped to one.
    let refused = assert_rejected(
        start::<Freeze>(unfreeze_request(APPROVER, Severity::Critical), now()),
        "approvers",
        "needs 2 distinct approvers other than the requester, but the policy leaves only 1",
    );
    assert!(
        refused.to_string().contains("after a CRITICAL finding"),
        "{refused}"
    );
    // The same request after a HIGH finding needs one approver: the other one decides.
    let high = started::<Freeze>(unfreeze_request(APPROVER, Severity::High));
    assert_eq!(decision_of(&high.state).quorum, 1);
    assert_eq!(
        decision_of(&high.state).approvers,
        strings(&[OTHER_APPROVER])
    );
    // Asked by someone who is not an approver, both approvers remain: two unfreeze.
    let critical = started::<Freeze>(unfreeze_request(OWNER, Severity::Critical));
    let approval = decision_of(&critical.state);
    assert_eq!(approval.quorum, 2);
    assert_eq!(approval.approvers, strings(&APPROVERS));
    let one = accepted::<Freeze>(&critical.state, decide(APPROVER, Decision::Approve), at(60));
    assert_eq!(Freeze::state_name(&one.state), "AwaitingDecision");
    let two = accepted::<Freeze>(
        &one.state,
        decide(OTHER_APPROVER, Decision::Approve),
        at(120),
    );
    assert_eq!(Freeze::state_name(&two.state), "Restoring");
}

fn scenario_freeze_critical_decision_under_a_one_approver_policy_cannot_unfreeze() {
    let lone = policy_with_approvers(&[APPROVER]);
    // An unfreeze request is refused up front.
    assert_rejected(
        statemachines::workflow::start::<Freeze>(
            unfreeze_request(OWNER, Severity::Critical),
            &ctx_with(&lone, now()),
        ),
        "approvers",
        "needs 2 distinct approvers other than the requester, but the policy leaves only 1",
    );
    // The decision after a containment is still asked (the agent is contained whatever the
    // policy), with the quorum of two it cannot reach: the lone approver's "yes" does not
    // unfreeze; their "no" decommissions.
    let first = statemachines::workflow::start::<Freeze>(
        freeze_input(Severity::Critical, &[Action::Freeze]),
        &ctx_with(&lone, now()),
    )
    .unwrap();
    let deactivated = statemachines::workflow::on::<Freeze>(
        &first.state,
        client_deactivated(),
        &ctx_with(&lone, ms(250)),
    )
    .unwrap();
    let contained = statemachines::workflow::on::<Freeze>(
        &deactivated.state,
        tokens_revoked(),
        &ctx_with(&lone, ms(500)),
    )
    .unwrap();
    let approval = decision_of(&contained.state);
    assert_eq!(approval.quorum, 2, "not capped to the one approver listed");
    assert!(
        approval
            .justification
            .contains("can only be decommissioned"),
        "{}",
        approval.justification
    );
    assert_rejected(
        statemachines::workflow::on::<Freeze>(
            &contained.state,
            decide(APPROVER, Decision::Approve),
            &ctx_with(&lone, at(600)),
        ),
        "approvers",
        "cannot be unfrozen by this decision",
    );
    let denied = statemachines::workflow::on::<Freeze>(
        &contained.state,
        decide(APPROVER, Decision::Deny),
        &ctx_with(&lone, at(600)),
    )
    .unwrap();
    assert_eq!(Freeze::state_name(&denied.state), "Decommissioning");
}

fn scenario_freeze_a_person_under_the_detection_name_neither_withdraws_nor_decides() {
    let asking = asking_freeze();
    let question = freeze_question_of(&asking.state);
    assert_eq!(question.requester, freeze::DETECTION);
    for name in [
        freeze::DETECTION.to_string(),
        format!(" {} ", freeze::DETECTION.to_uppercase()),
    ] {
        let person = Actor::Person(name.clone());
        // The engine's up-front check and the machine both refuse it.
        assert!(
            question.check_canceller(&person).is_err(),
            "{name:?} is not Steward"
        );
        assert_rejected(
            on::<Freeze>(&asking.state, cancel(&name), at(60)),
            "by",
            "may not",
        );
        assert_rejected(
            on::<Freeze>(&asking.state, approve(&name), at(60)),
            "approver",
            "cannot approve it",
        );
        assert_rejected(
            on::<Freeze>(&asking.state, deny(&name), at(60)),
            "approver",
            "cannot approve it",
        );
    }
    // Nor any other name Steward acts under.
    for name in [
        "steward",
        "schedule:approval-expiry",
        "idp-event:okta-evt-1",
    ] {
        assert!(
            question
                .check_canceller(&Actor::Person(name.into()))
                .is_err()
        );
        assert_rejected(
            on::<Freeze>(&asking.state, approve(name), at(60)),
            "approver",
            "a person cannot decide under it",
        );
    }
    // Steward itself still withdraws it (a stronger finding froze the agent meanwhile).
    let withdrawn = accepted::<Freeze>(
        &asking.state,
        Event::Cancel {
            by: Actor::System,
            reason: "a CRITICAL finding froze it".into(),
        },
        at(60),
    );
    assert_eq!(Freeze::state_name(&withdrawn.state), "Dismissed");
}

/// Another workflow's timer neither expires nor reminds a question or a decision, and the
/// failure of a command that is not the containment's (a notice, the supersede, a restore's)
/// does not fail the containment.
fn scenario_freeze_another_timer_or_another_commands_failure_is_not_this_freezes() {
    let asking = asking_freeze().state;
    let contained = contained_freeze(Severity::High).state;
    let decision_expires_at = decision_of(&contained).expires_at;
    for name in [OWNER_DEADLINE_TIMER, rotation::START_TIMER, "approval"] {
        assert_rejected(
            on::<Freeze>(&asking, timer(name), approval_expires_at()),
            "event",
            "TimerFired does not apply to freeze in state Asking",
        );
        assert_rejected(
            on::<Freeze>(&contained, timer(name), decision_expires_at),
            "event",
            "TimerFired does not apply to freeze in state AwaitingDecision",
        );
    }
    let first = started::<Freeze>(freeze_input(Severity::High, &[Action::Freeze]));
    let deactivated = accepted::<Freeze>(&first.state, client_deactivated(), ms(250));
    for state in [&first.state, &deactivated.state] {
        for command in [
            "workflow.supersede",
            "notify",
            "idp.set_grants",
            "idp.activate_client",
        ] {
            assert_rejected(
                on::<Freeze>(state, command_failed(command), ms(800)),
                "event",
                "CommandFailed does not apply to freeze in state Containing",
            );
        }
    }
}

/// While an unfreeze restores the grants, only this client's results count, and a failure of
/// either restore command (setting the grants or activating the client) tells security; the
/// containment's commands failing late do not.
fn scenario_freeze_restore_counts_only_this_clients_results() {
    let restoring = restoring_freeze();
    let other = "0oa-other";
    assert_rejected(
        on::<Freeze>(
            &restoring,
            Event::GrantsSet {
                client_id: other.into(),
                scopes: strings(&[METRICS_READ, ORDERS_READ]),
                token_lifetime_secs: 600,
            },
            at(3700),
        ),
        "event",
        "GrantsSet does not apply to freeze in state Restoring",
    );
    assert_rejected(
        on::<Freeze>(
            &restoring,
            Event::ClientActivated {
                client_id: other.into(),
            },
            at(3700),
        ),
        "event",
        "ClientActivated does not apply to freeze in state Restoring",
    );
    // this client's results restore it
    let granted = accepted::<Freeze>(
        &restoring,
        grants_set(&strings(&[METRICS_READ, ORDERS_READ]), 600),
        at(3700),
    );
    assert_eq!(Freeze::state_name(&granted.state), "Restoring");
    let activated = accepted::<Freeze>(&granted.state, client_activated(), at(3700));
    assert_eq!(Freeze::state_name(&activated.state), "Unfrozen");

    for command in ["idp.set_grants", "idp.activate_client"] {
        let step = accepted::<Freeze>(&restoring, command_failed(command), at(3700));
        let FreezeState::Failed { reason, .. } = &step.state else {
            panic!("{command}: expected Failed, got {:?}", step.state)
        };
        assert!(
            reason.contains(&format!("{command} failed: 403 Forbidden")),
            "{reason}"
        );
        assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    }
    for command in ["idp.deactivate_client", "idp.revoke_tokens", "notify"] {
        assert_rejected(
            on::<Freeze>(&restoring, command_failed(command), at(3700)),
            "event",
            "CommandFailed does not apply to freeze in state Restoring",
        );
    }
}

/// A CRITICAL finding needs two approvers to unfreeze; a policy that leaves exactly two says
/// nothing about too few approvers (only one that leaves fewer does).
fn scenario_freeze_critical_decision_with_enough_approvers_does_not_say_too_few() {
    let contained = contained_freeze(Severity::Critical);
    let requested = started::<Freeze>(unfreeze_request(OWNER, Severity::Critical));
    for state in [&contained.state, &requested.state] {
        let approval = decision_of(state);
        assert_eq!(approval.quorum, 2);
        assert_eq!(approval.approvers.len(), 2);
        assert!(
            !approval.justification.contains("approver(s)")
                && !approval
                    .justification
                    .contains("can only be decommissioned"),
            "{}",
            approval.justification
        );
    }
}

/// The owner is asked whether to freeze besides security, once, spelled as the policy lists
/// them if they are an approver too; an agent without an owner asks security only, not a
/// blank approver.
fn scenario_freeze_question_goes_to_the_owner_once_and_never_to_a_blank_owner() {
    let mut orphan = freeze_input(Severity::Medium, &[Action::Freeze]);
    orphan.agent.owner = String::new();
    let step = started::<Freeze>(orphan);
    assert_eq!(
        freeze_question_of(&step.state).approvers,
        strings(&APPROVERS)
    );

    let mut approver_owned = freeze_input(Severity::Medium, &[Action::Freeze]);
    approver_owned.agent.owner = APPROVER.to_uppercase();
    let step = started::<Freeze>(approver_owned);
    assert_eq!(
        freeze_question_of(&step.state).approvers,
        strings(&APPROVERS)
    );
}

/// A frozen `tls_client_auth` agent's valid certificates go on hold (`certificate_hold`: the CRL
/// lists them); the unfreeze releases the hold, a decommission revokes them for good, and a
/// certificate revoked for good before stays revoked through both.
fn scenario_freeze_puts_certificates_on_hold_and_the_unfreeze_releases_them() {
    use statemachines::credential::{
        CERTIFICATE_HOLD, CertificateRecord, CertificateRevocation, CredentialKind,
    };
    let cert = |serial: &str, revoked: Option<&str>| CertificateRecord {
        serial: serial.into(),
        spiffe_id: "spiffe://steward.local/agent/billing-agent-prod".into(),
        x5t_s256: format!("x5t-{serial}"),
        not_before: at(-86_400),
        not_after: at(86_400 * 20),
        revoked: revoked.map(|reason| CertificateRevocation {
            at: at(-3600),
            reason: reason.into(),
        }),
    };
    let mut input = freeze_input(Severity::High, &[Action::Freeze]);
    input.agent.credential_kind = CredentialKind::TlsClientAuth;
    input.agent.certificates = vec![cert("0a", Some("superseded")), cert("0b", None)];
    let step = started::<Freeze>(input.clone());
    let frozen = audit_of(&step.commands, AuditKind::AgentFrozen);
    assert!(
        frozen.message.contains("certificate(s) 0b on hold"),
        "{}",
        frozen.message
    );
    let mut agent = input.agent.clone();
    for change in agent_changes(&step.commands) {
        agent.apply(change, now());
    }
    let reasons = |a: &Agent| -> Vec<Option<String>> {
        a.certificates
            .iter()
            .map(|c| c.revoked.as_ref().map(|r| r.reason.clone()))
            .collect()
    };
    assert_eq!(
        reasons(&agent),
        [Some("superseded".into()), Some(CERTIFICATE_HOLD.into())]
    );
    assert!(agent.certificates[1].on_hold() && !agent.certificates[1].revoked_for_good());
    // Unfrozen: the hold is released, the earlier revocation stands.
    let mut unfrozen = agent.clone();
    unfrozen.apply(
        &AgentChange::Unfrozen {
            scopes: unfrozen.scopes.clone(),
            token_lifetime_secs: unfrozen.token_lifetime_secs,
            by: "sam.security@example.com".into(),
        },
        at(60),
    );
    assert_eq!(reasons(&unfrozen), [Some("superseded".into()), None]);
    // Decommissioned instead: the hold becomes a final revocation.
    let mut gone = agent.clone();
    gone.apply(
        &AgentChange::CertificateRevoked {
            serial: "0b".into(),
            at: at(60),
            reason: "cessation_of_operation".into(),
        },
        at(60),
    );
    assert_eq!(
        reasons(&gone),
        [
            Some("superseded".into()),
            Some("cessation_of_operation".into())
        ]
    );
    // A final revocation is never replaced.
    gone.apply(
        &AgentChange::CertificateRevoked {
            serial: "0a".into(),
            at: at(90),
            reason: "key_compromise".into(),
        },
        at(90),
    );
    assert_eq!(reasons(&gone)[0].as_deref(), Some("superseded"));
}
