//! Certificate expiry scenarios: the owner asked to renew before a certificate's end, the
//! certificate removed at the identity provider at its end, never left accepted there.

use super::*;
use statemachines::certificate_expiry::{
    CertificateExpiry, CertificateExpiryInput, CertificateExpiryState, EXPIRY_TIMER,
};
use statemachines::credential::{CertificateRecord, CertificateRevocation, CredentialKind};

scenarios![
    scenario_certificate_expiry_asks_the_owner_then_removes_the_certificate_at_its_end,
    scenario_certificate_expiry_of_a_certificate_past_its_end_removes_it_at_once,
    scenario_certificate_expiry_that_cannot_remove_the_certificate_tells_security,
    scenario_certificate_expiry_refuses_other_agents_revoked_certificates_and_early_timers,
    scenario_certificate_expiry_is_cancelled_by_a_decommission,
];

/// A decommission cancels the watch (its client and certificates go anyway): nothing is
/// removed or told at the certificate's end, and a removal already out is recorded quietly.
fn scenario_certificate_expiry_is_cancelled_by_a_decommission() {
    let cancel = || Event::Cancel {
        by: Actor::System,
        reason: "superseded by decommission".into(),
    };
    for state in [
        started::<CertificateExpiry>(input(ends())).state,
        started::<CertificateExpiry>(input(at(-1))).state,
    ] {
        let step = accepted::<CertificateExpiry>(&state, cancel(), at(1));
        assert!(matches!(
            step.state,
            CertificateExpiryState::Cancelled { .. }
        ));
        assert!(idp_commands(&step.commands).is_empty());
        assert!(
            !step
                .commands
                .iter()
                .any(|c| matches!(c, Command::Notify { .. })),
            "nobody is told"
        );
        for late in [
            Event::CertificateRemoved {
                x5t_s256: "x5t-0c".into(),
            },
            Event::CommandFailed {
                command: "idp.remove_certificate".into(),
                retryable: false,
                reason: "gone".into(),
            },
        ] {
            let after = accepted::<CertificateExpiry>(&step.state, late, at(2));
            assert_eq!(after.state, step.state);
            assert!(after.commands.is_empty());
        }
    }
}

fn ends() -> DateTime<Utc> {
    at(7 * 86_400)
}

fn cert(not_after: DateTime<Utc>) -> CertificateRecord {
    CertificateRecord {
        serial: "0c".into(),
        spiffe_id: "spiffe://steward.local/agent/billing-agent-prod".into(),
        x5t_s256: "x5t-0c".into(),
        not_before: at(-23 * 86_400),
        not_after,
        revoked: None,
    }
}

fn input(not_after: DateTime<Utc>) -> CertificateExpiryInput {
    let mut agent = active_agent();
    agent.credential_kind = CredentialKind::TlsClientAuth;
    agent.secret_version = None;
    agent.certificates = vec![cert(not_after)];
    CertificateExpiryInput {
        agent,
        certificate: cert(not_after),
    }
}

fn timer() -> Event {
    Event::TimerFired {
        name: EXPIRY_TIMER.into(),
    }
}

fn scenario_certificate_expiry_asks_the_owner_then_removes_the_certificate_at_its_end() {
    let step = started::<CertificateExpiry>(input(ends()));
    assert!(matches!(
        step.state,
        CertificateExpiryState::Watching { .. }
    ));
    assert!(
        idp_commands(&step.commands).is_empty(),
        "nothing changes yet"
    );
    let asked = step
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Notify { to, body, .. } if to == OWNER => Some(body.clone()),
            _ => None,
        })
        .expect("the owner is asked");
    assert!(asked.contains("rotate-certificate"), "{asked}");
    assert!(step.commands.iter().any(
        |c| matches!(c, Command::SetTimer { name, at } if name == EXPIRY_TIMER && *at == ends())
    ));
    let removing = accepted::<CertificateExpiry>(&step.state, timer(), ends());
    match idp_commands(&removing.commands).as_slice() {
        [
            IdpCommand::RemoveCertificate {
                client_id,
                x5t_s256,
            },
        ] => {
            assert_eq!(
                (client_id.as_str(), x5t_s256.as_str()),
                (CLIENT_ID, "x5t-0c")
            );
        }
        other => panic!("expected RemoveCertificate, got {other:?}"),
    }
    let done = accepted::<CertificateExpiry>(
        &removing.state,
        Event::CertificateRemoved {
            x5t_s256: "x5t-0c".into(),
        },
        ends(),
    );
    assert!(matches!(done.state, CertificateExpiryState::Expired { .. }));
    for to in [OWNER, SECURITY_CHANNEL] {
        assert!(
            done.commands
                .iter()
                .any(|c| matches!(c, Command::Notify { to: t, .. } if t == to)),
            "{to} is told"
        );
    }
}

fn scenario_certificate_expiry_of_a_certificate_past_its_end_removes_it_at_once() {
    let step = started::<CertificateExpiry>(input(at(-1)));
    assert!(matches!(
        step.state,
        CertificateExpiryState::Removing { .. }
    ));
    assert_eq!(idp_commands(&step.commands).len(), 1);
}

fn scenario_certificate_expiry_that_cannot_remove_the_certificate_tells_security() {
    let removing = started::<CertificateExpiry>(input(at(-1))).state;
    let end = accepted::<CertificateExpiry>(
        &removing,
        Event::CommandFailed {
            command: "idp.remove_certificate".into(),
            retryable: false,
            reason: "the IdP refused".into(),
        },
        at(1),
    );
    let CertificateExpiryState::Failed { reason, .. } = &end.state else {
        panic!("expected Failed, got {:?}", end.state)
    };
    assert!(reason.contains("could not be removed"), "{reason}");
    assert!(
        end.commands
            .iter()
            .any(|c| matches!(c, Command::Notify { to, .. } if to == SECURITY_CHANNEL))
    );
}

fn scenario_certificate_expiry_refuses_other_agents_revoked_certificates_and_early_timers() {
    let mut secret = input(ends());
    secret.agent.credential_kind = CredentialKind::Secret;
    assert_rejected(
        start::<CertificateExpiry>(secret, now()),
        "agent",
        "does not authenticate with a certificate",
    );
    let mut revoked = input(ends());
    revoked.agent.certificates[0].revoked = Some(CertificateRevocation {
        at: at(-60),
        reason: "superseded".into(),
    });
    assert_rejected(
        start::<CertificateExpiry>(revoked, now()),
        "certificate",
        "no valid certificate 0c",
    );
    let watching = started::<CertificateExpiry>(input(ends())).state;
    assert!(on::<CertificateExpiry>(&watching, timer(), at(60)).is_err());
    let removing = started::<CertificateExpiry>(input(at(-1))).state;
    assert!(
        on::<CertificateExpiry>(
            &removing,
            Event::CertificateRemoved {
                x5t_s256: "x5t-other".into()
            },
            at(1)
        )
        .is_err()
    );
}
