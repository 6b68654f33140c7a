//! Certificate rotation scenarios: a `tls_client_auth` agent's new certificate issued and
//! accepted beside the old, verified by its first use over mTLS, the old removed and revoked
//! (superseded) after the grace period; failures; a cancel at any step.

use super::*;
use statemachines::agent::AgentChange;
use statemachines::certificate_rotation::{
    CertificateRotation, CertificateRotationInput, CertificateRotationState, FIRST_USE_TIMER,
    GRACE_TIMER,
};
use statemachines::credential::{CertificateOrder, CertificateRecord, CredentialKind};

scenarios![
    scenario_certificate_rotation_issues_the_new_certificate_beside_the_old,
    scenario_certificate_rotation_first_use_starts_the_grace_then_the_old_ones_are_revoked,
    scenario_certificate_rotation_failures_end_it_and_say_why,
    scenario_certificate_rotation_cancel_wins_at_every_step_and_late_results_are_recorded,
    scenario_certificate_rotation_refuses_other_agents_and_early_timers,
    scenario_certificate_rotation_owner_confirmation_counts_as_first_use_and_is_attributed,
    scenario_certificate_rotation_an_unused_new_certificate_is_removed_and_revoked_at_the_deadline,
];

fn first_use_deadline() -> DateTime<Utc> {
    at(1 + policy().credentials.first_use_secs as i64)
}

fn scenario_certificate_rotation_owner_confirmation_counts_as_first_use_and_is_attributed() {
    let step = accepted::<CertificateRotation>(
        &awaiting_with(&["0a"]),
        Event::CertificateUsed {
            x5t_s256: "x5t-0b".into(),
            confirmed_by: Some(OWNER.into()),
        },
        at(60),
    );
    assert!(matches!(step.state, CertificateRotationState::Grace { .. }));
    assert!(
        step.commands.iter().any(|c| matches!(c, Command::Audit(r) if r.actor == Actor::Person(OWNER.into()) && r.message.contains("confirmed the agent uses certificate 0b"))),
        "the audit names who confirmed: {:?}",
        step.commands
    );
}

fn scenario_certificate_rotation_an_unused_new_certificate_is_removed_and_revoked_at_the_deadline()
{
    let awaiting = awaiting_with(&["0a"]);
    let CertificateRotationState::AwaitingUse { deadline, .. } = &awaiting else {
        panic!("expected AwaitingUse")
    };
    assert_eq!(*deadline, first_use_deadline());
    let added = accepted::<CertificateRotation>(
        &issuing_with(&["0a"]),
        Event::CertificateAdded {
            certificate: cert("0b"),
        },
        at(1),
    );
    assert!(
        added.commands.iter().any(|c| matches!(c, Command::SetTimer { name, at } if name == FIRST_USE_TIMER && *at == first_use_deadline())),
        "the first-use deadline is set"
    );
    let timer = || Event::TimerFired {
        name: FIRST_USE_TIMER.into(),
    };
    assert!(
        on::<CertificateRotation>(&awaiting, timer(), at(2)).is_err(),
        "not before the deadline"
    );
    let step = accepted::<CertificateRotation>(&awaiting, timer(), first_use_deadline());
    assert!(matches!(
        step.state,
        CertificateRotationState::Abandoning { .. }
    ));
    match idp_commands(&step.commands).as_slice() {
        [IdpCommand::RemoveCertificate { x5t_s256, .. }] => assert_eq!(x5t_s256, "x5t-0b"),
        other => panic!("expected the new certificate's removal, got {other:?}"),
    }
    // Another certificate's removal is not this one's.
    assert!(
        on::<CertificateRotation>(
            &step.state,
            Event::CertificateRemoved {
                x5t_s256: "x5t-0a".into()
            },
            first_use_deadline()
        )
        .is_err()
    );
    let end = accepted::<CertificateRotation>(
        &step.state,
        Event::CertificateRemoved {
            x5t_s256: "x5t-0b".into(),
        },
        first_use_deadline(),
    );
    assert!(
        matches!(&end.state, CertificateRotationState::Failed { reason, .. } if reason.contains("never used") && reason.contains("keeps working"))
    );
    assert!(end.commands.iter().any(|c| matches!(c, Command::UpdateAgent { change: AgentChange::CertificateRevoked { serial, reason, .. }, .. } if serial == "0b" && reason == "cessation_of_operation")));
    assert!(idp_commands(&end.commands).is_empty());
    // The removal failing leaves a valid certificate behind: security is told.
    let end = accepted::<CertificateRotation>(
        &step.state,
        failed("idp.remove_certificate"),
        first_use_deadline(),
    );
    assert!(
        matches!(&end.state, CertificateRotationState::Failed { reason, .. } if reason.contains("could not be removed again"))
    );
    assert!(
        end.commands
            .iter()
            .any(|c| matches!(c, Command::Notify { to, .. } if to == SECURITY_CHANNEL))
    );
    // A freeze while abandoning still cancels.
    let cancelled = accepted::<CertificateRotation>(
        &step.state,
        Event::Cancel {
            by: Actor::System,
            reason: "frozen".into(),
        },
        first_use_deadline(),
    );
    assert!(matches!(
        cancelled.state,
        CertificateRotationState::Cancelled { .. }
    ));
}

fn cert(serial: &str) -> CertificateRecord {
    CertificateRecord {
        serial: serial.into(),
        spiffe_id: "spiffe://steward.local/agent/billing-agent-prod".into(),
        x5t_s256: format!("x5t-{serial}"),
        not_before: at(-86_400),
        not_after: at(86_400 * 20),
        revoked: None,
    }
}

fn certificate_agent(serials: &[&str]) -> Agent {
    let mut a = active_agent();
    a.credential_kind = CredentialKind::TlsClientAuth;
    a.secret_version = None;
    a.certificates = serials.iter().map(|s| cert(s)).collect();
    a
}

fn input_with(serials: &[&str]) -> CertificateRotationInput {
    CertificateRotationInput {
        agent: certificate_agent(serials),
        order: CertificateOrder {
            csr: "-----BEGIN CERTIFICATE REQUEST-----".into(),
            trust_domain: "steward.local".into(),
            lifetime_days: 30,
        },
        requested_by: Actor::Person(OWNER.into()),
    }
}

fn issuing_with(serials: &[&str]) -> CertificateRotationState {
    started::<CertificateRotation>(input_with(serials)).state
}

fn awaiting_with(serials: &[&str]) -> CertificateRotationState {
    accepted::<CertificateRotation>(
        &issuing_with(serials),
        Event::CertificateAdded {
            certificate: cert("0b"),
        },
        at(1),
    )
    .state
}

fn grace_with(serials: &[&str]) -> CertificateRotationState {
    accepted::<CertificateRotation>(
        &awaiting_with(serials),
        Event::CertificateUsed {
            x5t_s256: "x5t-0b".into(),
            confirmed_by: None,
        },
        at(60),
    )
    .state
}

fn grace_ends() -> DateTime<Utc> {
    at(60 + policy().lifecycle.rotation_grace_secs as i64)
}

fn retiring_with(serials: &[&str]) -> CertificateRotationState {
    accepted::<CertificateRotation>(
        &grace_with(serials),
        Event::TimerFired {
            name: GRACE_TIMER.into(),
        },
        grace_ends(),
    )
    .state
}

fn failed(cmd: &str) -> Event {
    Event::CommandFailed {
        command: cmd.into(),
        retryable: false,
        reason: "the IdP refused".into(),
    }
}

fn scenario_certificate_rotation_issues_the_new_certificate_beside_the_old() {
    let step = started::<CertificateRotation>(input_with(&["0a"]));
    assert!(matches!(
        step.state,
        CertificateRotationState::Issuing { .. }
    ));
    assert_eq!(step.state.run().old, [cert("0a")]);
    match idp_commands(&step.commands).as_slice() {
        [
            IdpCommand::AddCertificate {
                client_id, order, ..
            },
        ] => {
            assert_eq!(client_id, CLIENT_ID);
            assert!(order.csr.contains("CERTIFICATE REQUEST"));
        }
        other => panic!("expected one AddCertificate, got {other:?}"),
    }
    let added = accepted::<CertificateRotation>(
        &step.state,
        Event::CertificateAdded {
            certificate: cert("0b"),
        },
        at(1),
    );
    assert!(matches!(
        added.state,
        CertificateRotationState::AwaitingUse { .. }
    ));
    assert!(
        added.commands.iter().any(|c| matches!(c, Command::UpdateAgent { change: AgentChange::CertificateAdded { certificate }, .. } if certificate.serial == "0b")),
        "the registry records the new certificate"
    );
    assert!(
        added
            .commands
            .iter()
            .any(|c| matches!(c, Command::Notify { to, .. } if to == OWNER)),
        "the owner is told to switch"
    );
    assert!(
        idp_commands(&added.commands).is_empty(),
        "nothing removed yet"
    );
}

fn scenario_certificate_rotation_first_use_starts_the_grace_then_the_old_ones_are_revoked() {
    // Another certificate's grant is not the new one's first use.
    assert!(
        on::<CertificateRotation>(
            &awaiting_with(&["0a"]),
            Event::CertificateUsed {
                x5t_s256: "x5t-0a".into(),
                confirmed_by: None,
            },
            at(60)
        )
        .is_err()
    );
    let CertificateRotationState::Grace { until, .. } = grace_with(&["0a"]) else {
        panic!("expected Grace")
    };
    assert_eq!(until, grace_ends());
    // Two old certificates (an earlier rotation was cancelled): removed and revoked in turn.
    let retiring = retiring_with(&["09", "0a"]);
    let CertificateRotationState::RetiringOld { remaining, .. } = &retiring else {
        panic!("expected RetiringOld, got {retiring:?}")
    };
    assert_eq!(remaining.len(), 2);
    let step = accepted::<CertificateRotation>(
        &retiring,
        Event::CertificateRemoved {
            x5t_s256: "x5t-09".into(),
        },
        grace_ends(),
    );
    assert!(step.commands.iter().any(|c| matches!(c, Command::UpdateAgent { change: AgentChange::CertificateRevoked { serial, reason, .. }, .. } if serial == "09" && reason == "superseded")));
    match idp_commands(&step.commands).as_slice() {
        [IdpCommand::RemoveCertificate { x5t_s256, .. }] => assert_eq!(x5t_s256, "x5t-0a"),
        other => panic!("expected the next removal, got {other:?}"),
    }
    let done = accepted::<CertificateRotation>(
        &step.state,
        Event::CertificateRemoved {
            x5t_s256: "x5t-0a".into(),
        },
        grace_ends(),
    );
    assert!(matches!(done.state, CertificateRotationState::Done { .. }));
    assert!(done.commands.iter().any(|c| matches!(c, Command::UpdateAgent { change: AgentChange::CertificateRevoked { serial, .. }, .. } if serial == "0a")));
    assert!(idp_commands(&done.commands).is_empty());
}

fn scenario_certificate_rotation_failures_end_it_and_say_why() {
    let end = accepted::<CertificateRotation>(
        &issuing_with(&["0a"]),
        failed("idp.add_certificate"),
        at(1),
    );
    assert!(
        matches!(&end.state, CertificateRotationState::Failed { reason, .. } if reason.contains("could not be issued"))
    );
    let end = accepted::<CertificateRotation>(
        &retiring_with(&["0a"]),
        failed("idp.remove_certificate"),
        grace_ends(),
    );
    assert!(
        matches!(&end.state, CertificateRotationState::Failed { reason, .. } if reason.contains("0a") && reason.contains("still works"))
    );
    assert!(
        end.commands
            .iter()
            .any(|c| matches!(c, Command::Notify { to, .. } if to == SECURITY_CHANNEL)),
        "security is told what is left"
    );
}

fn scenario_certificate_rotation_cancel_wins_at_every_step_and_late_results_are_recorded() {
    let cancel = || Event::Cancel {
        by: Actor::System,
        reason: "frozen".into(),
    };
    for state in [
        issuing_with(&["0a"]),
        awaiting_with(&["0a"]),
        grace_with(&["0a"]),
        retiring_with(&["0a"]),
    ] {
        let step = accepted::<CertificateRotation>(&state, cancel(), grace_ends());
        assert!(
            matches!(step.state, CertificateRotationState::Cancelled { .. }),
            "{state:?}"
        );
        assert!(idp_commands(&step.commands).is_empty());
    }
    let cancelled = accepted::<CertificateRotation>(&issuing_with(&["0a"]), cancel(), at(1)).state;
    // A certificate issued after the cancel is still recorded (a decommission revokes it).
    let step = accepted::<CertificateRotation>(
        &cancelled,
        Event::CertificateAdded {
            certificate: cert("0b"),
        },
        at(2),
    );
    assert_eq!(step.state, cancelled);
    assert!(matches!(
        step.commands.as_slice(),
        [Command::UpdateAgent {
            change: AgentChange::CertificateAdded { .. },
            ..
        }]
    ));
    for late in [
        Event::CertificateUsed {
            x5t_s256: "x5t-0b".into(),
            confirmed_by: None,
        },
        Event::CertificateRemoved {
            x5t_s256: "x5t-0a".into(),
        },
        failed("idp.add_certificate"),
    ] {
        let step = accepted::<CertificateRotation>(&cancelled, late, at(2));
        assert_eq!(step.state, cancelled);
        assert!(step.commands.is_empty());
    }
}

fn scenario_certificate_rotation_refuses_other_agents_and_early_timers() {
    let mut secret = input_with(&["0a"]);
    secret.agent.credential_kind = CredentialKind::Secret;
    assert_rejected(
        start::<CertificateRotation>(secret, now()),
        "agent",
        "rotate its secret instead",
    );
    let mut frozen = input_with(&["0a"]);
    frozen.agent.status = AgentStatus::Frozen;
    assert_rejected(
        start::<CertificateRotation>(frozen, now()),
        "agent",
        "only active agents",
    );
    assert_rejected(
        start::<CertificateRotation>(input_with(&[]), now()),
        "agent",
        "no valid certificate",
    );
    assert!(
        on::<CertificateRotation>(
            &grace_with(&["0a"]),
            Event::TimerFired {
                name: GRACE_TIMER.into()
            },
            at(61)
        )
        .is_err(),
        "the grace timer does not end the grace early"
    );
}
