//! Decommission scenarios.

use super::*;

scenarios![
    scenario_decommission_on_request_waits_for_security_approval,
    scenario_decommission_with_a_decision_revokes_at_once,
    scenario_decommission_agent_without_client_schedules_secret_deletion,
    scenario_decommission_approval_starts_revocation,
    scenario_decommission_deny_keeps_the_agent,
    scenario_decommission_reminder_keeps_waiting_and_expiry_keeps_the_agent,
    scenario_decommission_requester_may_withdraw_while_waiting,
    scenario_decommission_walks_every_step_into_the_receipt,
    scenario_decommission_failed_steps_are_recorded_and_it_goes_on,
    scenario_decommission_refuses_agents_not_in_service,
    scenario_decommission_refuses_results_out_of_order,
    scenario_decommission_refuses_another_timer_or_another_commands_failure,
    scenario_decommission_ended_states_accept_no_event,
    scenario_decommission_revokes_the_agents_certificate_in_its_first_step,
];

pub(crate) fn decommission_input(
    reason: DecommissionReason,
    requested_by: Actor,
) -> DecommissionInput {
    DecommissionInput {
        agent: active_agent(),
        reason,
        requested_by,
    }
}

pub(crate) fn requested() -> DecommissionReason {
    DecommissionReason::Requested {
        why: "the incident tooling moved to another team".into(),
    }
}

pub(crate) fn by_owner() -> Actor {
    Actor::Person(OWNER.into())
}

pub(crate) fn awaiting_decommission() -> DecommissionState {
    started::<Decommission>(decommission_input(requested(), by_owner())).state
}

/// Approved one hour in: revoking tokens.
pub(crate) fn revoking_tokens() -> DecommissionState {
    accepted::<Decommission>(&awaiting_decommission(), approve(APPROVER), at(3600)).state
}

pub(crate) fn receipt_of(state: &DecommissionState) -> &RevocationReceipt {
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

pub(crate) fn supersede() -> Command {
    Command::Supersede {
        agent_id: AGENT_ID.into(),
        reason: format!("superseded by decommission {WORKFLOW_ID}"),
        ending: true,
    }
}

pub(crate) fn revoke_tokens() -> Command {
    Command::Idp(IdpCommand::RevokeTokens {
        client_id: CLIENT_ID.into(),
    })
}

pub(crate) fn schedule_deletion() -> Command {
    Command::Vault(VaultCommand::ScheduleDeletion {
        agent_id: AGENT_ID.into(),
        recovery_days: policy().lifecycle.secret_recovery_days,
    })
}

pub(crate) fn delete_after(t: DateTime<Utc>) -> DateTime<Utc> {
    t + Duration::days(i64::from(policy().lifecycle.secret_recovery_days))
}

/// The receipt's steps as `(action, done)`.
pub(crate) fn steps_of(receipt: &RevocationReceipt) -> Vec<(&str, bool)> {
    receipt
        .steps
        .iter()
        .map(|s| (s.action.as_str(), s.done))
        .collect()
}

pub(crate) fn decommissioned_receipt(commands: &[Command]) -> &RevocationReceipt {
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

/// Another workflow's timer does not expire the approval, and the failure of another command
/// (the step before, repeated late, or a notice) is not recorded as this step's failure: the
/// receipt says what failed, nothing else.
fn scenario_decommission_refuses_another_timer_or_another_commands_failure() {
    for name in [OWNER_DEADLINE_TIMER, rotation::START_TIMER, "approval"] {
        assert_rejected(
            on::<Decommission>(&awaiting_decommission(), timer(name), approval_expires_at()),
            "event",
            "TimerFired does not apply to decommission in state AwaitingApproval",
        );
    }
    let deactivating =
        accepted::<Decommission>(&revoking_tokens(), tokens_revoked(), at(3610)).state;
    let deleting = accepted::<Decommission>(&deactivating, client_deactivated(), at(3620)).state;
    let scheduling = accepted::<Decommission>(&deleting, client_deleted(), at(3630)).state;
    for (state, name, others) in [
        (
            &deactivating,
            "Deactivating",
            ["idp.revoke_tokens", "idp.delete_client", "notify"],
        ),
        (
            &deleting,
            "Deleting",
            ["idp.deactivate_client", "vault.schedule_deletion", "notify"],
        ),
        (
            &scheduling,
            "SchedulingSecretDeletion",
            ["idp.delete_client", "idp.revoke_tokens", "notify"],
        ),
    ] {
        for command in others {
            assert_rejected(
                on::<Decommission>(state, command_failed(command), at(3700)),
                "event",
                &format!("CommandFailed does not apply to decommission in state {name}"),
            );
        }
    }
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

/// A `tls_client_auth` agent's certificate is revoked in the decommission's first step, with
/// its audit record and a receipt step, before anything is asked of the IdP; a certificate
/// revoked already keeps its first revocation.
fn scenario_decommission_revokes_the_agents_certificate_in_its_first_step() {
    use statemachines::credential::{
        CESSATION_OF_OPERATION, CertificateRecord, CertificateRevocation, CredentialKind,
    };
    let cert = |serial: &str, revoked: Option<CertificateRevocation>| CertificateRecord {
        serial: serial.into(),
        spiffe_id: format!("spiffe://steward.local/agent/{}", active_agent().name),
        x5t_s256: format!("x5t-{serial}"),
        not_before: at(-86_400),
        not_after: at(29 * 86_400),
        revoked,
    };
    let earlier = CertificateRevocation {
        at: at(-3600),
        reason: "key_compromise".into(),
    };
    let mut agent = active_agent();
    agent.credential_kind = CredentialKind::TlsClientAuth;
    agent.certificates = vec![cert("0a01", Some(earlier.clone())), cert("0a02", None)];
    let step = started::<Decommission>(DecommissionInput {
        agent,
        reason: DecommissionReason::Freeze {
            decided_by: APPROVER.into(),
        },
        requested_by: Actor::Person(APPROVER.into()),
    });
    assert_eq!(
        names(&step.commands),
        [
            "audit",
            "workflow.supersede",
            "agent.update",
            "audit",
            "idp.revoke_tokens"
        ]
    );
    assert_eq!(
        agent_changes(&step.commands),
        [&AgentChange::CertificateRevoked {
            serial: "0a02".into(),
            at: now(),
            reason: CESSATION_OF_OPERATION.into(),
        }]
    );
    let DecommissionState::RevokingTokens { agent, receipt } = &step.state else {
        panic!("expected RevokingTokens, got {:?}", step.state)
    };
    assert_eq!(steps_of(receipt), [("revoke certificate", true)]);
    assert!(receipt.steps[0].detail.contains("0a02"));
    assert_eq!(agent.certificates[0].revoked.as_ref(), Some(&earlier));
    assert_eq!(
        agent.certificates[1]
            .revoked
            .as_ref()
            .map(|r| r.reason.as_str()),
        Some(CESSATION_OF_OPERATION)
    );
    // Applied to the stored record, the revocation stays as first written.
    let mut stored = active_agent();
    stored.certificates = vec![cert("0a02", None)];
    for change in agent_changes(&step.commands) {
        stored.apply(change, now());
        stored.apply(change, at(60));
    }
    assert_eq!(
        stored.certificates[0].revoked.as_ref().map(|r| r.at),
        Some(now())
    );
}
