//! Key rotation scenarios: a key-bound agent's new key added beside the old, verified by its
//! first use, the old retired after the grace period; an unused new key removed again; a
//! cancel at any step.

use super::*;
use statemachines::credential::{AgentKey, CredentialKind, KeyRecord, KeyStatus};
use statemachines::key_rotation::{
    FIRST_USE_TIMER, GRACE_TIMER, KeyRotation, KeyRotationInput, KeyRotationState,
};

scenarios![
    scenario_key_rotation_refuses_a_steward_held_key,
    scenario_key_rotation_adds_the_new_key_beside_the_old,
    scenario_key_rotation_first_use_starts_the_grace_then_the_old_key_is_removed,
    scenario_key_rotation_unused_new_key_is_removed_again_and_the_owner_told,
    scenario_key_rotation_failures_end_it_and_say_why,
    scenario_key_rotation_cancel_wins_at_every_step_and_late_results_are_recorded,
    scenario_key_rotation_refuses_secret_agents_known_keys_and_early_timers,
    scenario_key_rotation_owner_confirmation_counts_as_first_use_and_is_attributed,
];

/// Where the IdP does not report which key signed a grant, the owner confirms the switch: the
/// rotation goes on, and the trail names who confirmed.
fn scenario_key_rotation_owner_confirmation_counts_as_first_use_and_is_attributed() {
    let step = accepted::<KeyRotation>(
        &awaiting(),
        Event::KeyUsed {
            kid: kid("new-kid"),
            confirmed_by: Some(OWNER.into()),
        },
        at(60),
    );
    assert!(matches!(step.state, KeyRotationState::Grace { .. }));
    let confirmed = step
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Audit(a) => Some(a.clone()),
            _ => None,
        })
        .expect("the confirmation is audited");
    assert_eq!(confirmed.actor, Actor::Person(OWNER.into()));
    assert!(
        confirmed.message.contains("confirmed"),
        "{}",
        confirmed.message
    );
}

fn key(kid: &str) -> AgentKey {
    AgentKey {
        kid: kid.into(),
        jwk: format!(r#"{{"kty":"EC","kid":"{kid}"}}"#),
    }
}

fn keyed_agent() -> Agent {
    let mut a = active_agent();
    a.credential_kind = CredentialKind::PrivateKeyJwt;
    a.secret_version = None;
    a.keys = vec![KeyRecord {
        key: key("old-kid"),
        added_at: at(-86_400),
        status: KeyStatus::Active,
    }];
    a
}

fn input() -> KeyRotationInput {
    KeyRotationInput {
        agent: keyed_agent(),
        new_key: key("new-kid"),
        requested_by: Actor::Person(OWNER.into()),
    }
}

fn kid(k: &str) -> String {
    k.to_string()
}

fn adding() -> KeyRotationState {
    started::<KeyRotation>(input()).state
}

fn awaiting() -> KeyRotationState {
    accepted::<KeyRotation>(
        &adding(),
        Event::KeyAdded {
            kid: kid("new-kid"),
        },
        at(1),
    )
    .state
}

fn grace() -> KeyRotationState {
    accepted::<KeyRotation>(
        &awaiting(),
        Event::KeyUsed {
            kid: kid("new-kid"),
            confirmed_by: None,
        },
        at(60),
    )
    .state
}

fn grace_ends() -> DateTime<Utc> {
    at(60 + policy().lifecycle.rotation_grace_secs as i64)
}

fn retiring() -> KeyRotationState {
    accepted::<KeyRotation>(&grace(), timer(GRACE_TIMER), grace_ends()).state
}

fn timer(name: &str) -> Event {
    Event::TimerFired { name: name.into() }
}

fn scenario_key_rotation_adds_the_new_key_beside_the_old() {
    let step = started::<KeyRotation>(input());
    assert!(matches!(step.state, KeyRotationState::AddingKey { .. }));
    assert_eq!(step.state.run().old_kids, ["old-kid"]);
    match idp_commands(&step.commands).as_slice() {
        [IdpCommand::AddKey { client_id, key: k }] => {
            assert_eq!((client_id.as_str(), k.kid.as_str()), (CLIENT_ID, "new-kid"));
        }
        other => panic!("expected one AddKey, got {other:?}"),
    }
    let added = accepted::<KeyRotation>(
        &step.state,
        Event::KeyAdded {
            kid: kid("new-kid"),
        },
        at(1),
    );
    let KeyRotationState::AwaitingUse { deadline, .. } = &added.state else {
        panic!("expected AwaitingUse, got {:?}", added.state)
    };
    assert_eq!(
        *deadline,
        at(1 + policy().credentials.first_use_secs as i64)
    );
    assert!(added.commands.iter().any(|c| matches!(
        c,
        Command::UpdateAgent { change: AgentChange::KeyAdded { key }, .. } if key.key.kid == "new-kid" && key.status == KeyStatus::Active
    )));
    assert!(added.commands.iter().any(
        |c| matches!(c, Command::SetTimer { name, at } if name == FIRST_USE_TIMER && at == deadline)
    ));
    assert!(
        added
            .commands
            .iter()
            .any(|c| matches!(c, Command::Notify { to, .. } if to == OWNER))
    );
    assert!(
        idp_commands(&added.commands).is_empty(),
        "the old key is not touched yet"
    );
}

fn scenario_key_rotation_first_use_starts_the_grace_then_the_old_key_is_removed() {
    // A grant with the old key is no verification.
    assert!(
        on::<KeyRotation>(
            &awaiting(),
            Event::KeyUsed {
                kid: kid("old-kid"),
                confirmed_by: None,
            },
            at(30)
        )
        .is_err()
    );
    let g = grace();
    let KeyRotationState::Grace { until, .. } = &g else {
        panic!("expected Grace, got {g:?}")
    };
    assert_eq!(*until, grace_ends());
    assert!(
        on::<KeyRotation>(&g, timer(GRACE_TIMER), at(61)).is_err(),
        "not before the grace ends"
    );
    let r = accepted::<KeyRotation>(&g, timer(GRACE_TIMER), grace_ends());
    match idp_commands(&r.commands).as_slice() {
        [IdpCommand::RemoveKey { kid: k, .. }] => assert_eq!(k, "old-kid"),
        other => panic!("expected RemoveKey of the old key, got {other:?}"),
    }
    let done = accepted::<KeyRotation>(
        &r.state,
        Event::KeyRemoved {
            kid: kid("old-kid"),
        },
        grace_ends(),
    );
    assert!(matches!(done.state, KeyRotationState::Done { .. }));
    assert!(done.commands.iter().any(|c| matches!(
        c,
        Command::UpdateAgent { change: AgentChange::KeyRetired { kid, .. }, .. } if kid == "old-kid"
    )));

    // Two old keys: removed one after the other.
    let mut two = input();
    two.agent.keys.push(KeyRecord {
        key: key("older-kid"),
        added_at: at(-100),
        status: KeyStatus::Active,
    });
    let s = started::<KeyRotation>(two).state;
    let s = accepted::<KeyRotation>(
        &s,
        Event::KeyAdded {
            kid: kid("new-kid"),
        },
        at(1),
    )
    .state;
    let s = accepted::<KeyRotation>(
        &s,
        Event::KeyUsed {
            kid: kid("new-kid"),
            confirmed_by: None,
        },
        at(60),
    )
    .state;
    let s = accepted::<KeyRotation>(&s, timer(GRACE_TIMER), grace_ends()).state;
    let next = accepted::<KeyRotation>(
        &s,
        Event::KeyRemoved {
            kid: kid("old-kid"),
        },
        grace_ends(),
    );
    assert!(
        matches!(&next.state, KeyRotationState::RetiringOld { remaining, .. } if remaining == &["older-kid"])
    );
    let done = accepted::<KeyRotation>(
        &next.state,
        Event::KeyRemoved {
            kid: kid("older-kid"),
        },
        grace_ends(),
    );
    assert!(matches!(done.state, KeyRotationState::Done { .. }));

    // No key was active before (all retired earlier): the grace's end finishes at once.
    let mut none = input();
    none.agent.keys.clear();
    let s = started::<KeyRotation>(none).state;
    let s = accepted::<KeyRotation>(
        &s,
        Event::KeyAdded {
            kid: kid("new-kid"),
        },
        at(1),
    )
    .state;
    let s = accepted::<KeyRotation>(
        &s,
        Event::KeyUsed {
            kid: kid("new-kid"),
            confirmed_by: None,
        },
        at(60),
    )
    .state;
    let done = accepted::<KeyRotation>(&s, timer(GRACE_TIMER), grace_ends());
    assert!(matches!(done.state, KeyRotationState::Done { .. }));
}

fn scenario_key_rotation_unused_new_key_is_removed_again_and_the_owner_told() {
    let deadline = at(1 + policy().credentials.first_use_secs as i64);
    assert!(on::<KeyRotation>(&awaiting(), timer(FIRST_USE_TIMER), at(2)).is_err());
    let step = accepted::<KeyRotation>(&awaiting(), timer(FIRST_USE_TIMER), deadline);
    assert!(matches!(step.state, KeyRotationState::Abandoning { .. }));
    match idp_commands(&step.commands).as_slice() {
        [IdpCommand::RemoveKey { kid: k, .. }] => assert_eq!(k, "new-kid"),
        other => panic!("expected RemoveKey of the new key, got {other:?}"),
    }
    let end = accepted::<KeyRotation>(
        &step.state,
        Event::KeyRemoved {
            kid: kid("new-kid"),
        },
        deadline,
    );
    let KeyRotationState::Failed { reason, .. } = &end.state else {
        panic!("expected Failed, got {:?}", end.state)
    };
    assert!(
        reason.contains("never used") && reason.contains("keeps working"),
        "{reason}"
    );
    assert!(
        end.commands
            .iter()
            .any(|c| matches!(c, Command::Notify { to, .. } if to == OWNER))
    );
}

fn failed(cmd: &str) -> Event {
    Event::CommandFailed {
        command: cmd.into(),
        retryable: false,
        reason: "the IdP refused".into(),
    }
}

fn scenario_key_rotation_failures_end_it_and_say_why() {
    let end = accepted::<KeyRotation>(&adding(), failed("idp.add_key"), at(1));
    assert!(
        matches!(&end.state, KeyRotationState::Failed { reason, .. } if reason.contains("could not be added"))
    );
    let abandoning = accepted::<KeyRotation>(
        &awaiting(),
        timer(FIRST_USE_TIMER),
        at(1 + policy().credentials.first_use_secs as i64),
    )
    .state;
    let end = accepted::<KeyRotation>(&abandoning, failed("idp.remove_key"), at(10));
    assert!(
        matches!(&end.state, KeyRotationState::Failed { reason, .. } if reason.contains("could not be removed"))
    );
    assert!(
        end.commands
            .iter()
            .any(|c| matches!(c, Command::Notify { to, .. } if to == SECURITY_CHANNEL)),
        "security is told what is left"
    );
    let end = accepted::<KeyRotation>(&retiring(), failed("idp.remove_key"), grace_ends());
    assert!(
        matches!(&end.state, KeyRotationState::Failed { reason, .. } if reason.contains("old-kid") && reason.contains("still works"))
    );
}

fn scenario_key_rotation_cancel_wins_at_every_step_and_late_results_are_recorded() {
    let cancel = || Event::Cancel {
        by: Actor::System,
        reason: "frozen".into(),
    };
    for state in [adding(), awaiting(), grace(), retiring()] {
        let step = accepted::<KeyRotation>(&state, cancel(), grace_ends());
        assert!(
            matches!(step.state, KeyRotationState::Cancelled { .. }),
            "{state:?}"
        );
        assert!(idp_commands(&step.commands).is_empty());
    }
    let cancelled = accepted::<KeyRotation>(&adding(), cancel(), at(1)).state;
    for late in [
        Event::KeyAdded {
            kid: kid("new-kid"),
        },
        Event::KeyUsed {
            kid: kid("new-kid"),
            confirmed_by: None,
        },
        Event::KeyRemoved {
            kid: kid("old-kid"),
        },
        failed("idp.add_key"),
    ] {
        let step = accepted::<KeyRotation>(&cancelled, late, at(2));
        assert_eq!(step.state, cancelled);
        assert!(step.commands.is_empty());
    }
}

fn scenario_key_rotation_refuses_secret_agents_known_keys_and_early_timers() {
    let mut secret = input();
    secret.agent.credential_kind = CredentialKind::Secret;
    assert_rejected(
        start::<KeyRotation>(secret, now()),
        "agent",
        "rotate its secret instead",
    );
    let mut same = input();
    same.new_key = key("old-kid");
    assert_rejected(
        start::<KeyRotation>(same, now()),
        "public_jwk",
        "already holds key old-kid",
    );
    let mut frozen = input();
    frozen.agent.status = AgentStatus::Frozen;
    assert_rejected(
        start::<KeyRotation>(frozen, now()),
        "agent",
        "only active agents",
    );
    // Another key's result is not this rotation's.
    assert!(on::<KeyRotation>(&adding(), Event::KeyAdded { kid: kid("other") }, at(1)).is_err());
}

/// A Steward-held key is rotated by Steward like a secret, never by a key the caller brings.
fn scenario_key_rotation_refuses_a_steward_held_key() {
    let mut input = input();
    input.agent.key_custody = statemachines::credential::KeyCustody::Steward;
    input.agent.keys.clear();
    assert_rejected(
        start::<KeyRotation>(input, now()),
        "agent",
        "it rotates like a secret, with `steward agents rotate",
    );
}
