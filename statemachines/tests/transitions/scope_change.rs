//! Scope-change scenarios.

use super::*;

scenarios![
    scenario_scope_change_non_sensitive_add_sets_grants_at_once,
    scenario_scope_change_removal_and_lifetime_need_no_approval,
    scenario_scope_change_sensitive_add_waits_for_approval,
    scenario_scope_change_approve_sets_exact_new_grant,
    scenario_scope_change_deny_leaves_grants_unchanged,
    scenario_scope_change_expiry_leaves_grants_unchanged,
    scenario_scope_change_waiting_is_withdrawn_by_steward_when_the_agent_is_frozen,
    scenario_scope_change_cancel_leaves_grants_unchanged,
    scenario_scope_change_grants_set_updates_registry_and_audits,
    scenario_scope_change_command_failed_tells_requester,
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
    scenario_scope_change_refuses_self_approval,
    scenario_scope_change_refuses_approver_outside_allowed_set,
    scenario_scope_change_refuses_decision_after_expiry,
    scenario_scope_change_refuses_wrong_approval_id,
    scenario_scope_change_refuses_early_expiry_timer,
    scenario_scope_change_refuses_a_timer_that_is_not_its_approvals,
    scenario_scope_change_refuses_cancel_while_granting,
    scenario_scope_change_refuses_second_decision_once_approved,
    scenario_scope_change_terminal_states_accept_no_event,
    scenario_scope_change_refuses_cancel_by_outsider,
    scenario_scope_change_refuses_duplicate_scopes,
    scenario_scope_change_refuses_keeping_a_newly_excluded_scope,
];

pub(crate) fn start_scope_change(
    request: ScopeChangeRequest,
) -> Result<Step<ScopeChangeState>, Rejected> {
    start::<ScopeChange>(scope_change_input(request), now())
}

/// Adds `datadog:monitors:write` (sensitive) and removes `erp:orders:read`.
pub(crate) fn awaiting_scope_change() -> ScopeChangeState {
    started::<ScopeChange>(scope_change_input(scope_change_request(
        &[MONITORS_WRITE],
        &[ORDERS_READ],
    )))
    .state
}

pub(crate) fn approved_scope_change() -> ScopeChangeState {
    accepted::<ScopeChange>(&awaiting_scope_change(), approve(APPROVER), at(600)).state
}

pub(crate) fn set_grants_of(commands: &[Command]) -> (&str, &[String], u32) {
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
                credential_kind: Default::default(),
                key_custody: Default::default(),
                token_binding: Default::default(),
                keys: vec![],
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
        "mallory@example.com is not an allowed approver for approval wf-0001-approval-1: only its approvers may decide it; nothing was decided",
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

/// Another workflow's timer, even at the approval's expiry, neither expires nor reminds it.
fn scenario_scope_change_refuses_a_timer_that_is_not_its_approvals() {
    let awaiting = awaiting_scope_change();
    for name in [rotation::START_TIMER, OWNER_DEADLINE_TIMER, "approval"] {
        assert_rejected(
            on::<ScopeChange>(&awaiting, timer(name), approval_expires_at()),
            "event",
            "TimerFired does not apply to scope_change in state AwaitingApproval",
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

// ---- review follow-ups -------------------------------------------------------------
fn scenario_scope_change_refuses_cancel_by_outsider() {
    assert_rejected(
        on::<ScopeChange>(&awaiting_scope_change(), cancel(OUTSIDER), at(60)),
        "by",
        "only the requester",
    );
}

// ---- review follow-ups -------------------------------------------------------------
fn scenario_scope_change_refuses_duplicate_scopes() {
    assert_rejected(
        start_scope_change(scope_change_request(&[OKTA_APPS_READ, OKTA_APPS_READ], &[])),
        "add",
        "scope `okta:apps:read` is listed twice",
    );
}

// ---- review follow-ups -------------------------------------------------------------
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

/// A freeze or a decommission supersedes a scope change still waiting for approval: Steward
/// itself withdraws it (the approvers are no longer asked about an agent that is off).
fn scenario_scope_change_waiting_is_withdrawn_by_steward_when_the_agent_is_frozen() {
    let step = accepted::<ScopeChange>(
        &awaiting_scope_change(),
        Event::Cancel {
            by: Actor::System,
            reason: "the agent was frozen".into(),
        },
        at(60),
    );
    assert!(
        matches!(step.state, ScopeChangeState::Cancelled { .. }),
        "{:?}",
        step.state
    );
}
