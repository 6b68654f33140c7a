//! Owner-loss scenarios.

use super::*;

scenarios![
    scenario_owner_loss_flags_agent_and_asks_manager_and_security,
    scenario_owner_loss_without_manager_asks_security_only,
    scenario_owner_loss_reassigned_clears_flag_and_tells_new_owner,
    scenario_owner_loss_refuses_the_lost_owner_back,
    scenario_owner_loss_deadline_requests_freeze,
    scenario_owner_loss_refuses_early_or_foreign_timer,
    scenario_owner_loss_ended_accepts_no_event,
];

pub(crate) const NEW_OWNER: &str = "dave@example.com";

pub(crate) fn owner_loss_input(manager: Option<&str>) -> OwnerLossInput {
    OwnerLossInput {
        agent: active_agent(),
        change: "deactivated".into(),
        manager: manager.map(str::to_string),
        event_id: "okta-ev-1".into(),
    }
}

pub(crate) fn owner_deadline() -> chrono::DateTime<chrono::Utc> {
    now() + chrono::Duration::seconds(policy().owner_reassign_secs as i64)
}

pub(crate) fn deadline_timer() -> Event {
    Event::TimerFired {
        name: OWNER_DEADLINE_TIMER.into(),
    }
}

pub(crate) fn assigned(owner: &str, by: &str) -> Event {
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
