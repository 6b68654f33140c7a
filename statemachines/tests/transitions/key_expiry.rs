//! Key expiry scenarios: the owner asked to rotate before a key's end, the key removed at its
//! end, never left valid.

use super::*;
use statemachines::credential::{AgentKey, CredentialKind, KeyRecord, KeyStatus};
use statemachines::key_expiry::{EXPIRY_TIMER, KeyExpiry, KeyExpiryInput, KeyExpiryState};

scenarios![
    scenario_key_expiry_asks_the_owner_then_removes_the_key_at_its_end,
    scenario_key_expiry_of_a_key_already_past_its_end_removes_it_at_once,
    scenario_key_expiry_that_cannot_remove_the_key_tells_security,
    scenario_key_expiry_refuses_secret_agents_unknown_keys_and_early_timers,
    scenario_key_expiry_is_cancelled_by_a_decommission,
];

/// A decommission cancels the watch (its client and keys go anyway): nothing is removed or
/// told at the key's end, and a removal already out is recorded quietly.
fn scenario_key_expiry_is_cancelled_by_a_decommission() {
    let cancel = || Event::Cancel {
        by: Actor::System,
        reason: "superseded by decommission".into(),
    };
    for state in [
        started::<KeyExpiry>(input(ends())).state,
        started::<KeyExpiry>(input(at(-1))).state,
    ] {
        let step = accepted::<KeyExpiry>(&state, cancel(), at(1));
        assert!(matches!(step.state, KeyExpiryState::Cancelled { .. }));
        assert!(idp_commands(&step.commands).is_empty());
        assert!(
            !step
                .commands
                .iter()
                .any(|c| matches!(c, Command::Notify { .. }))
        );
        for late in [
            Event::KeyRemoved {
                kid: "aging-kid".into(),
            },
            Event::CommandFailed {
                command: "idp.remove_key".into(),
                retryable: false,
                reason: "gone".into(),
            },
        ] {
            let after = accepted::<KeyExpiry>(&step.state, late, at(2));
            assert_eq!(after.state, step.state);
            assert!(after.commands.is_empty());
        }
    }
}

fn keyed_agent() -> Agent {
    let mut a = active_agent();
    a.credential_kind = CredentialKind::PrivateKeyJwt;
    a.secret_version = None;
    a.keys = vec![KeyRecord {
        key: AgentKey {
            kid: "aging-kid".into(),
            jwk: r#"{"kty":"EC"}"#.into(),
        },
        added_at: at(-76 * 86_400),
        status: KeyStatus::Active,
    }];
    a
}

fn input(expires_at: DateTime<Utc>) -> KeyExpiryInput {
    KeyExpiryInput {
        agent: keyed_agent(),
        kid: "aging-kid".into(),
        expires_at,
    }
}

fn ends() -> DateTime<Utc> {
    at(14 * 86_400)
}

fn scenario_key_expiry_asks_the_owner_then_removes_the_key_at_its_end() {
    let step = started::<KeyExpiry>(input(ends()));
    assert!(matches!(step.state, KeyExpiryState::Watching { .. }));
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
    assert!(asked.contains("rotate-key"), "{asked}");
    assert!(step.commands.iter().any(
        |c| matches!(c, Command::SetTimer { name, at } if name == EXPIRY_TIMER && *at == ends())
    ));
    let removing = accepted::<KeyExpiry>(
        &step.state,
        Event::TimerFired {
            name: EXPIRY_TIMER.into(),
        },
        ends(),
    );
    match idp_commands(&removing.commands).as_slice() {
        [IdpCommand::RemoveKey { client_id, kid }] => {
            assert_eq!((client_id.as_str(), kid.as_str()), (CLIENT_ID, "aging-kid"));
        }
        other => panic!("expected RemoveKey, got {other:?}"),
    }
    let done = accepted::<KeyExpiry>(
        &removing.state,
        Event::KeyRemoved {
            kid: "aging-kid".into(),
        },
        ends(),
    );
    assert!(matches!(done.state, KeyExpiryState::Expired { .. }));
    assert!(done.commands.iter().any(|c| matches!(
        c,
        Command::UpdateAgent { change: AgentChange::KeyRetired { kid, .. }, .. } if kid == "aging-kid"
    )));
    assert!(
        done.commands
            .iter()
            .any(|c| matches!(c, Command::Notify { to, .. } if to == SECURITY_CHANNEL))
    );
}

fn scenario_key_expiry_of_a_key_already_past_its_end_removes_it_at_once() {
    let step = started::<KeyExpiry>(input(at(-1)));
    assert!(matches!(step.state, KeyExpiryState::Removing { .. }));
    assert_eq!(idp_commands(&step.commands).len(), 1);
}

fn scenario_key_expiry_that_cannot_remove_the_key_tells_security() {
    let removing = started::<KeyExpiry>(input(at(-1))).state;
    let end = accepted::<KeyExpiry>(
        &removing,
        Event::CommandFailed {
            command: "idp.remove_key".into(),
            retryable: false,
            reason: "the IdP refused".into(),
        },
        at(1),
    );
    let KeyExpiryState::Failed { reason, .. } = &end.state else {
        panic!("expected Failed, got {:?}", end.state)
    };
    assert!(reason.contains("still works"), "{reason}");
    assert!(
        end.commands
            .iter()
            .any(|c| matches!(c, Command::Notify { to, .. } if to == SECURITY_CHANNEL))
    );
}

fn scenario_key_expiry_refuses_secret_agents_unknown_keys_and_early_timers() {
    let mut secret = input(ends());
    secret.agent.credential_kind = CredentialKind::Secret;
    assert_rejected(
        start::<KeyExpiry>(secret, now()),
        "agent",
        "holds no key of its own",
    );
    let mut unknown = input(ends());
    unknown.kid = "other".into();
    assert_rejected(
        start::<KeyExpiry>(unknown, now()),
        "kid",
        "no active key other",
    );
    let watching = started::<KeyExpiry>(input(ends())).state;
    assert!(
        on::<KeyExpiry>(
            &watching,
            Event::TimerFired {
                name: EXPIRY_TIMER.into()
            },
            at(60)
        )
        .is_err()
    );
    let removing = started::<KeyExpiry>(input(at(-1))).state;
    assert!(
        on::<KeyExpiry>(
            &removing,
            Event::KeyRemoved {
                kid: "other".into()
            },
            at(1)
        )
        .is_err()
    );
}
