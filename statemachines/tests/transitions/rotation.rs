//! Credential-rotation scenarios.

use super::*;

scenarios![
    scenario_rotation_of_a_steward_held_key_runs_like_a_secret_and_removes_the_old_key,
    scenario_rotation_refuses_agent_held_keys_and_certificates,
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
    scenario_rotation_a_detection_rotation_is_stopped_by_security_only,
    scenario_rotation_late_results_after_cancel_are_recorded_only,
    scenario_rotation_refuses_results_of_another_version,
    scenario_rotation_refuses_early_and_foreign_timers,
    scenario_rotation_refuses_agents_it_cannot_rotate,
    scenario_rotation_ended_states_accept_no_new_work,
];

pub(crate) const SWEEP: &str = "rotation-sweep";

pub(crate) fn grace() -> Duration {
    Duration::seconds(policy().lifecycle.rotation_grace_secs as i64)
}

pub(crate) fn retry_wait(attempt: u32) -> Duration {
    Duration::seconds((policy().lifecycle.rotation_retry_secs << (attempt - 1)) as i64)
}

pub(crate) fn rotation_input(start_at: DateTime<Utc>) -> RotationInput {
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

pub(crate) fn issuing_rotation() -> RotationState {
    started::<Rotation>(rotation_input(now())).state
}

/// The first attempt's secret was issued ten seconds in.
pub(crate) fn verifying_rotation() -> RotationState {
    accepted::<Rotation>(
        &issuing_rotation(),
        secret_issued(&rotation_version(1)),
        at(10),
    )
    .state
}

/// Verified twenty seconds in.
pub(crate) fn promoting_rotation() -> RotationState {
    accepted::<Rotation>(
        &verifying_rotation(),
        secret_verified(&rotation_version(1)),
        at(20),
    )
    .state
}

/// When the new secret became current.
pub(crate) fn promoted_at() -> DateTime<Utc> {
    at(30)
}

pub(crate) fn grace_rotation() -> RotationState {
    accepted::<Rotation>(
        &promoting_rotation(),
        secret_promoted(&rotation_version(1)),
        promoted_at(),
    )
    .state
}

pub(crate) fn grace_ends() -> DateTime<Utc> {
    promoted_at() + grace()
}

pub(crate) fn revoking_rotation() -> RotationState {
    accepted::<Rotation>(
        &grace_rotation(),
        timer(rotation::GRACE_TIMER),
        grace_ends(),
    )
    .state
}

pub(crate) fn retry_timer() -> Event {
    timer(rotation::RETRY_TIMER)
}

/// The only IdP command of a step.
pub(crate) fn only_idp(commands: &[Command]) -> &IdpCommand {
    match idp_commands(commands).as_slice() {
        [one] => one,
        other => panic!("expected exactly one IdP command, got {other:?}"),
    }
}

pub(crate) fn issue_secret(version: &str) -> Command {
    Command::Idp(IdpCommand::IssueSecret {
        agent_id: AGENT_ID.into(),
        client_id: CLIENT_ID.into(),
        version: version.into(),
    })
}

pub(crate) fn credential_receipt(commands: &[Command]) -> &CredentialReceipt {
    match agent_changes(commands).as_slice() {
        [AgentChange::CredentialRotated { receipt }] => receipt,
        other => panic!("expected one CredentialRotated update, got {other:?}"),
    }
}

/// RetryWait, waiting to start attempt `attempt` (2 or more): every earlier attempt failed in
/// `Issuing`.
pub(crate) fn rotation_waiting_for_attempt(attempt: u32) -> (RotationState, DateTime<Utc>) {
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
pub(crate) fn rotation_attempt_in(attempt: u32, where_: &str) -> (RotationState, DateTime<Utc>) {
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

pub(crate) fn failing_command(state: &RotationState) -> &'static str {
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
            key: false,
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
pub(crate) fn waiting_rotations() -> Vec<(RotationState, DateTime<Utc>)> {
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

/// A rotation a detection rule started (the credential seen from several places) is
/// security's to stop: the owner of the agent whose secret leaked may not cancel it, a
/// security approver may.
fn scenario_rotation_a_detection_rotation_is_stopped_by_security_only() {
    let detected = started::<Rotation>(RotationInput {
        reason: RotationReason::Detection {
            rule: "credential-shared".into(),
        },
        requested_by: Actor::System,
        ..rotation_input(now())
    })
    .state;
    assert_rejected(
        on::<Rotation>(&detected, cancel(OWNER), at(1)),
        "by",
        "only a security approver may stop it",
    );
    let step = accepted::<Rotation>(&detected, cancel(APPROVER), at(1));
    assert!(matches!(step.state, RotationState::Cancelled { .. }));
    // A rotation the owner asked for is theirs to stop.
    let on_demand = started::<Rotation>(RotationInput {
        reason: RotationReason::OnDemand { by: OWNER.into() },
        requested_by: Actor::Person(OWNER.into()),
        ..rotation_input(now())
    })
    .state;
    let step = accepted::<Rotation>(&on_demand, cancel(OWNER), at(1));
    assert!(matches!(step.state, RotationState::Cancelled { .. }));
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
pub(crate) fn grace_rotation_without_previous_secret_id() -> RotationState {
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

fn steward_key_agent() -> Agent {
    let mut a = active_agent();
    a.credential_kind = statemachines::credential::CredentialKind::PrivateKeyJwt;
    a.key_custody = statemachines::credential::KeyCustody::Steward;
    a
}

/// A key Steward generated and vaults rotates through the same steps as a secret (the executor
/// generates, registers and tests the new key); after the grace the old key, by its kid, is
/// what is removed.
fn scenario_rotation_of_a_steward_held_key_runs_like_a_secret_and_removes_the_old_key() {
    let mut input = rotation_input(now());
    input.agent = steward_key_agent();
    let issuing = started::<Rotation>(input).state;
    let verifying =
        accepted::<Rotation>(&issuing, secret_issued(&rotation_version(1)), at(10)).state;
    let promoting =
        accepted::<Rotation>(&verifying, secret_verified(&rotation_version(1)), at(20)).state;
    let grace = accepted::<Rotation>(
        &promoting,
        secret_promoted(&rotation_version(1)),
        promoted_at(),
    )
    .state;
    let step = accepted::<Rotation>(&grace, timer(rotation::GRACE_TIMER), grace_ends());
    assert_eq!(
        *only_idp(&step.commands),
        IdpCommand::RemoveSecret {
            client_id: CLIENT_ID.into(),
            secret_id: OLD_SECRET_ID.into(),
            key: true,
        },
        "the old key is removed by its kid"
    );
}

/// An agent-held key or certificate is the agent's own: there is nothing in the vault to rotate.
fn scenario_rotation_refuses_agent_held_keys_and_certificates() {
    use statemachines::credential::CredentialKind;
    for kind in [CredentialKind::PrivateKeyJwt, CredentialKind::TlsClientAuth] {
        let mut input = rotation_input(now());
        input.agent.credential_kind = kind;
        assert_rejected(
            start::<Rotation>(input, now()),
            "agent",
            "there is no secret to rotate",
        );
    }
}
