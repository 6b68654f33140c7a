//! Shadow-agent scenarios (IdP clients nobody registered).

use super::*;

scenarios![
    scenario_shadow_agent_found_asks_its_creator_and_security_to_claim_it,
    scenario_shadow_agent_claimed_ends_the_grace_period,
    scenario_shadow_agent_released_is_frozen_then_decommissioned,
    scenario_shadow_agent_unclaimed_after_the_grace_period_is_released,
    scenario_shadow_agent_release_failure_tells_security,
    scenario_shadow_agent_refuses_a_client_without_id,
    scenario_shadow_agent_refuses_events_that_do_not_apply,
];

pub(crate) const SHADOW_NAME: &str = "legacy-etl-client";
pub(crate) const DISCOVERY_SWEEP: &str = "discovery-sweep";

/// A client found at the IdP: an unregistered agent with no owner.
pub(crate) fn shadow_agent() -> Agent {
    Agent {
        id: AGENT_ID.into(),
        name: SHADOW_NAME.into(),
        owner: String::new(),
        team: String::new(),
        environment: "prod".into(),
        purpose: String::new(),
        scopes: strings(&[ORDERS_READ]),
        token_lifetime_secs: 3600,
        expires_on: None,
        status: AgentStatus::Unregistered,
        client_id: Some(CLIENT_ID.into()),
        secret_version: None,
        credential_issued_at: None,
        requested_by: String::new(),
        created_at: at(-30 * 86_400),
        updated_at: now(),
        flags: vec![],
        credentials: vec![],
        decommission: None,
        last_review: None,
    }
}

pub(crate) fn shadow_input(creator: Option<&str>) -> ShadowInput {
    ShadowInput {
        agent: shadow_agent(),
        creator: creator.map(str::to_string),
        found_by: Actor::Schedule(DISCOVERY_SWEEP.into()),
    }
}

pub(crate) fn claim_grace_ends() -> DateTime<Utc> {
    at(policy().discovery.grace_secs as i64)
}

pub(crate) fn unclaimed_shadow() -> ShadowState {
    started::<ShadowAgent>(shadow_input(Some(COLLEAGUE))).state
}

pub(crate) fn shadow_claimed() -> Event {
    Event::ShadowClaimed {
        by: COLLEAGUE.into(),
        owner: OWNER.into(),
        workflow_id: "wf-0002".into(),
    }
}

pub(crate) fn shadow_released() -> Event {
    Event::ShadowReleased {
        by: COLLEAGUE.into(),
        reason: "a test client from the 2023 migration".into(),
    }
}

pub(crate) fn grace_timer() -> Event {
    timer(discovery::GRACE_TIMER)
}

fn scenario_shadow_agent_found_asks_its_creator_and_security_to_claim_it() {
    let step = started::<ShadowAgent>(shadow_input(Some(COLLEAGUE)));
    assert_eq!(
        step.state,
        ShadowState::Unclaimed {
            agent: shadow_agent(),
            creator: Some(COLLEAGUE.into()),
            grace_ends: claim_grace_ends(),
        }
    );
    assert!(!ShadowAgent::is_terminal(&step.state));
    assert_eq!(
        names(&step.commands),
        ["agent.save", "audit", "timer.set", "notify", "notify"]
    );
    assert_eq!(saved_agents(&step.commands), [&shadow_agent()]);
    assert_eq!(
        saved_agents(&step.commands)[0].status,
        AgentStatus::Unregistered
    );
    let found = audit_of(&step.commands, AuditKind::ShadowAgentFound);
    assert_eq!(found.actor, Actor::Schedule(DISCOVERY_SWEEP.into()));
    assert_eq!(found.scopes, strings(&[ORDERS_READ]));
    assert!(
        found.message.contains(CLIENT_ID)
            && found.message.contains(&format!("created by {COLLEAGUE}")),
        "{}",
        found.message
    );
    assert_eq!(
        timers_set(&step.commands),
        [(discovery::GRACE_TIMER, claim_grace_ends())]
    );
    assert_eq!(
        claim_grace_ends(),
        now() + Duration::days(7),
        "the default grace period"
    );
    assert_eq!(notified(&step.commands), [COLLEAGUE, SECURITY_CHANNEL]);
    for (_, subject, body) in notifications(&step.commands) {
        assert_eq!(subject, format!("Unregistered agent found: {SHADOW_NAME}"));
        for fragment in [
            format!("steward shadow claim {CLIENT_ID} --owner"),
            format!("steward shadow release {CLIENT_ID}"),
            format!("Scopes: {ORDERS_READ}"),
            format!("by {COLLEAGUE}"),
            "2025-03-17 09:00 UTC".to_string(),
        ] {
            assert!(body.contains(&fragment), "{fragment:?} not in {body}");
        }
    }
    assert!(idp_commands(&step.commands).is_empty());

    // nobody known created it: the security channel alone is asked
    let step = started::<ShadowAgent>(shadow_input(None));
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    assert!(
        audit_of(&step.commands, AuditKind::ShadowAgentFound)
            .message
            .contains("the security channel")
    );
}

fn scenario_shadow_agent_refuses_a_client_without_id() {
    let mut input = shadow_input(Some(COLLEAGUE));
    input.agent.client_id = None;
    assert_rejected(
        start::<ShadowAgent>(input, now()),
        "client_id",
        "needs its client id",
    );
}

fn scenario_shadow_agent_claimed_ends_the_grace_period() {
    let step = accepted::<ShadowAgent>(&unclaimed_shadow(), shadow_claimed(), at(3600));
    assert_eq!(
        step.state,
        ShadowState::Claimed {
            agent: shadow_agent(),
            by: COLLEAGUE.into(),
            owner: OWNER.into(),
            onboarding: "wf-0002".into(),
        }
    );
    assert!(ShadowAgent::is_terminal(&step.state));
    assert_eq!(names(&step.commands), ["timer.cancel", "audit"]);
    assert_eq!(timers_cancelled(&step.commands), [discovery::GRACE_TIMER]);
    let claimed = audit_of(&step.commands, AuditKind::ShadowAgentClaimed);
    assert_eq!(claimed.actor, Actor::Person(COLLEAGUE.into()));
    assert!(
        claimed.message.contains(&format!("with owner {OWNER}"))
            && claimed.message.contains("onboarding wf-0002"),
        "{}",
        claimed.message
    );
    assert!(
        idp_commands(&step.commands).is_empty(),
        "a claimed client keeps working"
    );
    // a late grace timer changes nothing
    assert_rejected(
        on::<ShadowAgent>(&step.state, grace_timer(), claim_grace_ends()),
        "event",
        "TimerFired does not apply to shadow_agent in state Claimed",
    );
}

pub(crate) fn assert_releases(step: &Step<ShadowState>, actor: Actor, why_fragment: &str) {
    let ShadowState::Releasing { why, .. } = &step.state else {
        panic!("expected Releasing, got {:?}", step.state)
    };
    assert!(why.contains(why_fragment), "{why}");
    assert!(!ShadowAgent::is_terminal(&step.state));
    assert_eq!(
        names(&step.commands),
        [
            "timer.cancel",
            "idp.deactivate_client",
            "agent.update",
            "audit"
        ]
    );
    assert_eq!(timers_cancelled(&step.commands), [discovery::GRACE_TIMER]);
    assert_eq!(
        idp_commands(&step.commands),
        [&IdpCommand::DeactivateClient {
            client_id: CLIENT_ID.into()
        }]
    );
    assert_eq!(
        agent_changes(&step.commands),
        [&AgentChange::Frozen {
            reason: why.clone()
        }]
    );
    let released = audit_of(&step.commands, AuditKind::ShadowAgentReleased);
    assert_eq!(released.actor, actor);
    assert!(released.message.contains(CLIENT_ID), "{}", released.message);
}

fn scenario_shadow_agent_released_is_frozen_then_decommissioned() {
    let releasing = accepted::<ShadowAgent>(&unclaimed_shadow(), shadow_released(), at(3600));
    assert_releases(
        &releasing,
        Actor::Person(COLLEAGUE.into()),
        &format!("let go by {COLLEAGUE}: a test client from the 2023 migration"),
    );
    let ShadowState::Releasing { why, .. } = &releasing.state else {
        unreachable!()
    };

    // another client's deactivation is not this one's
    assert_rejected(
        on::<ShadowAgent>(
            &releasing.state,
            Event::ClientDeactivated {
                client_id: "0oa-other".into(),
            },
            at(3601),
        ),
        "event",
        "ClientDeactivated does not apply to shadow_agent in state Releasing",
    );

    let released = accepted::<ShadowAgent>(&releasing.state, client_deactivated(), at(3601));
    assert_eq!(
        released.state,
        ShadowState::Released {
            agent: shadow_agent(),
            why: why.clone(),
        }
    );
    assert!(ShadowAgent::is_terminal(&released.state));
    assert_eq!(
        released.commands,
        [Command::StartDecommission {
            agent_id: AGENT_ID.into(),
            reason: DecommissionReason::Unclaimed { why: why.clone() },
        }]
    );
}

fn scenario_shadow_agent_unclaimed_after_the_grace_period_is_released() {
    let unclaimed = unclaimed_shadow();
    // an early grace timer (a stale one from before a restart) changes nothing
    assert_rejected(
        on::<ShadowAgent>(
            &unclaimed,
            grace_timer(),
            claim_grace_ends() - Duration::seconds(1),
        ),
        "event",
        "TimerFired does not apply to shadow_agent in state Unclaimed",
    );
    // nor does a foreign timer
    assert_rejected(
        on::<ShadowAgent>(&unclaimed, expiry_timer(), claim_grace_ends()),
        "event",
        "TimerFired does not apply to shadow_agent in state Unclaimed",
    );

    for fired_at in [claim_grace_ends(), claim_grace_ends() + Duration::hours(2)] {
        let step = accepted::<ShadowAgent>(&unclaimed, grace_timer(), fired_at);
        assert_releases(
            &step,
            Actor::Schedule(discovery::GRACE_TIMER.into()),
            "was not claimed within the grace period (ended 2025-03-17 09:00 UTC)",
        );
        let released = accepted::<ShadowAgent>(&step.state, client_deactivated(), fired_at);
        assert!(matches!(
            released.commands.as_slice(),
            [Command::StartDecommission {
                reason: DecommissionReason::Unclaimed { .. },
                ..
            }]
        ));
    }
}

fn scenario_shadow_agent_release_failure_tells_security() {
    let releasing = accepted::<ShadowAgent>(&unclaimed_shadow(), shadow_released(), at(3600));
    let step = accepted::<ShadowAgent>(
        &releasing.state,
        command_failed("idp.deactivate_client"),
        at(3700),
    );
    let ShadowState::Failed { reason, .. } = &step.state else {
        panic!("expected Failed, got {:?}", step.state)
    };
    assert!(
        reason.contains("idp.deactivate_client failed: 403 Forbidden"),
        "{reason}"
    );
    assert!(ShadowAgent::is_terminal(&step.state));
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    let (_, subject, body) = notifications(&step.commands)[0];
    assert!(subject.contains("could not be frozen"), "{subject}");
    assert!(
        body.contains("Deactivate it at the identity provider"),
        "{body}"
    );
    assert!(
        !step
            .commands
            .iter()
            .any(|c| matches!(c, Command::StartDecommission { .. })),
        "no decommission of a client that is still active"
    );
}

fn scenario_shadow_agent_refuses_events_that_do_not_apply() {
    let unclaimed = unclaimed_shadow();
    assert_rejected(
        on::<ShadowAgent>(&unclaimed, client_deactivated(), at(60)),
        "event",
        "ClientDeactivated does not apply to shadow_agent in state Unclaimed",
    );
    let releasing = accepted::<ShadowAgent>(&unclaimed, shadow_released(), at(60)).state;
    assert_rejected(
        on::<ShadowAgent>(&releasing, shadow_claimed(), at(120)),
        "event",
        "ShadowClaimed does not apply to shadow_agent in state Releasing",
    );

    let ended = [
        accepted::<ShadowAgent>(&unclaimed, shadow_claimed(), at(60)).state,
        accepted::<ShadowAgent>(&releasing, client_deactivated(), at(120)).state,
        accepted::<ShadowAgent>(&releasing, command_failed("idp.deactivate_client"), at(120)).state,
    ];
    let names: BTreeSet<&str> = ended.iter().map(ShadowAgent::state_name).collect();
    assert_eq!(names, BTreeSet::from(["Claimed", "Released", "Failed"]));
    let mut events = every_lifecycle_event();
    events.extend([
        shadow_claimed(),
        shadow_released(),
        grace_timer(),
        client_activated(),
    ]);
    for state in &ended {
        assert!(ShadowAgent::is_terminal(state));
        for event in events.clone() {
            let expected = format!(
                "{} does not apply to shadow_agent in state {}",
                event.label(),
                ShadowAgent::state_name(state)
            );
            assert_rejected(
                on::<ShadowAgent>(state, event, claim_grace_ends()),
                "event",
                &expected,
            );
        }
    }
}
