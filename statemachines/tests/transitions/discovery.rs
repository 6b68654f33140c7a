//! Shadow-agent scenarios (IdP clients nobody registered).

use super::*;

scenarios![
    scenario_shadow_agent_found_asks_its_creator_and_security_to_claim_it,
    scenario_shadow_agent_claimed_ends_the_grace_period,
    scenario_shadow_agent_let_go_by_a_security_approver_is_frozen_then_decommissioned,
    scenario_shadow_agent_release_by_its_creator_or_anyone_but_security_is_refused,
    scenario_shadow_agent_unclaimed_after_the_grace_period_is_frozen_and_security_asked,
    scenario_shadow_agent_deletion_approved_by_security_decommissions_it,
    scenario_shadow_agent_deletion_denied_keeps_it_frozen_for_a_claim_or_a_release,
    scenario_shadow_agent_deletion_unanswered_keeps_it_frozen,
    scenario_shadow_agent_deletion_question_withdrawn_keeps_it_frozen,
    scenario_shadow_agent_claim_or_release_overtakes_the_deletion_question,
    scenario_shadow_agent_releasing_stored_without_an_approver_asks_security,
    scenario_shadow_agent_release_failure_tells_security,
    scenario_shadow_agent_refuses_a_client_without_id,
    scenario_shadow_agent_refuses_events_that_do_not_apply,
    scenario_shadow_agent_claim_adopted_ends_it,
    scenario_shadow_agent_claim_that_ends_without_taking_over_makes_it_unclaimed_again,
    scenario_shadow_agent_claimed_frozen_and_refused_stays_frozen,
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
        credential_kind: Default::default(),
        key_custody: Default::default(),
        token_binding: Default::default(),
        keys: vec![],
        csr: None,
        certificates: vec![],
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

/// Found, with `COLLEAGUE` named as its creator (as an IdP event names one).
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

/// A release by `by`.
fn released_by(by: &str) -> Event {
    Event::ShadowReleased {
        by: by.into(),
        reason: "a test client from the 2023 migration".into(),
    }
}

/// A release by a security approver.
pub(crate) fn shadow_released() -> Event {
    released_by(APPROVER)
}

pub(crate) fn grace_timer() -> Event {
    timer(discovery::GRACE_TIMER)
}

/// When the deletion question is asked in these scenarios: a second after the grace period.
fn asked_at() -> DateTime<Utc> {
    claim_grace_ends() + Duration::seconds(1)
}

/// The approval a step asks for.
fn requested_approval(commands: &[Command]) -> &ApprovalRequest {
    let asked: Vec<&ApprovalRequest> = commands
        .iter()
        .filter_map(|c| match c {
            Command::RequestApproval(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "one approval asked: {commands:?}");
    asked[0]
}

/// The reason of the decommission a step starts, if it starts one.
fn decommission_started(commands: &[Command]) -> Option<&DecommissionReason> {
    commands.iter().find_map(|c| match c {
        Command::StartDecommission { agent_id, reason } => {
            assert_eq!(agent_id, AGENT_ID);
            Some(reason)
        }
        _ => None,
    })
}

/// Unclaimed past the grace period, its client deactivated: the deletion question is open.
fn awaiting_deletion() -> ShadowState {
    let freezing =
        accepted::<ShadowAgent>(&unclaimed_shadow(), grace_timer(), claim_grace_ends()).state;
    accepted::<ShadowAgent>(&freezing, client_deactivated(), asked_at()).state
}

/// The deletion was denied: frozen, waiting for a claim or a release.
fn kept_shadow() -> ShadowState {
    accepted::<ShadowAgent>(
        &awaiting_deletion(),
        deny(APPROVER),
        asked_at() + Duration::hours(1),
    )
    .state
}

fn assert_closed(commands: &[Command], outcome: fn(&ApprovalOutcome) -> bool) {
    let closed: Vec<&ApprovalOutcome> = commands
        .iter()
        .filter_map(|c| match c {
            Command::CloseApproval {
                approval_id,
                outcome,
            } if approval_id == APPROVAL_ID => Some(outcome),
            _ => None,
        })
        .collect();
    assert!(
        closed.len() == 1 && outcome(closed[0]),
        "approval closed once as expected: {closed:?}"
    );
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
            "A security approver may let it go".to_string(),
            format!("steward shadow release {CLIENT_ID} --reason"),
            format!("Scopes: {ORDERS_READ}"),
            format!("by {COLLEAGUE}"),
            "2025-03-17 09:00 UTC".to_string(),
            "deactivated, not deleted".to_string(),
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
            creator: Some(COLLEAGUE.into()),
            frozen: false,
        }
    );
    assert!(
        !ShadowAgent::is_terminal(&step.state),
        "it waits for the claim's outcome"
    );
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

/// The first step of a freeze: the grace timer cancelled, the client deactivated, the agent
/// marked frozen, audited as `kind` by `actor`.
fn assert_freezes(step: &Step<ShadowState>, kind: AuditKind, actor: Actor, why_fragment: &str) {
    let (ShadowState::Releasing { why, .. } | ShadowState::Freezing { why, .. }) = &step.state
    else {
        panic!("expected Releasing or Freezing, got {:?}", step.state)
    };
    assert!(why.contains(why_fragment), "{why}");
    assert!(!ShadowAgent::is_terminal(&step.state));
    assert_eq!(
        names(&step.commands)[..4],
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
    let frozen = audit_of(&step.commands, kind);
    assert_eq!(frozen.actor, actor);
    assert!(frozen.message.contains(CLIENT_ID), "{}", frozen.message);
    assert_eq!(decommission_started(&step.commands), None);
}

fn scenario_shadow_agent_let_go_by_a_security_approver_is_frozen_then_decommissioned() {
    let releasing = accepted::<ShadowAgent>(&unclaimed_shadow(), shadow_released(), at(3600));
    assert_freezes(
        &releasing,
        AuditKind::ShadowAgentReleased,
        Actor::Person(APPROVER.into()),
        &format!("let go by {APPROVER}: a test client from the 2023 migration"),
    );
    assert_eq!(names(&releasing.commands).len(), 4);
    let ShadowState::Releasing { why, approver, .. } = &releasing.state else {
        unreachable!()
    };
    assert_eq!(approver.as_deref(), Some(APPROVER));

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

/// A creator is a name an IdP event carries (anyone with the hook secret can write one): it may
/// claim, never delete. Only a security approver lets a shadow agent go.
fn scenario_shadow_agent_release_by_its_creator_or_anyone_but_security_is_refused() {
    let unclaimed = unclaimed_shadow();
    let ShadowState::Unclaimed { creator, .. } = &unclaimed else {
        unreachable!()
    };
    assert_eq!(creator.as_deref(), Some(COLLEAGUE));
    for by in [
        COLLEAGUE,
        " Bob@Example.com ",
        OUTSIDER,
        OWNER,
        "schedule:claim-grace",
        "steward",
        "",
    ] {
        let refused = assert_rejected(
            on::<ShadowAgent>(&unclaimed, released_by(by), at(3600)),
            "by",
            "is not a security approver and may not let legacy-etl-client go",
        );
        assert!(
            refused.to_string().contains("steward shadow claim"),
            "{refused}"
        );
    }
    // the machine's rule, which the engine asks too
    assert!(discovery::check_releaser(&shadow_agent(), COLLEAGUE, policy()).is_err());
    assert!(discovery::check_releaser(&shadow_agent(), OTHER_APPROVER, policy()).is_ok());

    // an approver, spelled any way, may
    let step = accepted::<ShadowAgent>(&unclaimed, released_by(" Sec-Lead@Example.com "), at(3600));
    assert_eq!(ShadowAgent::state_name(&step.state), "Releasing");
}

fn scenario_shadow_agent_unclaimed_after_the_grace_period_is_frozen_and_security_asked() {
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
        let freezing = accepted::<ShadowAgent>(&unclaimed, grace_timer(), fired_at);
        assert_eq!(ShadowAgent::state_name(&freezing.state), "Freezing");
        assert_freezes(
            &freezing,
            AuditKind::AgentFrozen,
            Actor::Schedule(discovery::GRACE_TIMER.into()),
            "was not claimed within the grace period (ended 2025-03-17 09:00 UTC)",
        );
        // the creator hears it is frozen, not deleted, and may still claim it
        assert_eq!(notified(&freezing.commands), [COLLEAGUE]);
        let (_, subject, body) = notifications(&freezing.commands)[0];
        assert!(subject.contains("is frozen"), "{subject}");
        for fragment in [
            "deactivated now, not deleted",
            "the security approvers decide",
            &format!("steward shadow claim {CLIENT_ID}"),
        ] {
            assert!(body.contains(fragment), "{fragment:?} not in {body}");
        }

        // Deactivated: never a decommission, a question to the security approvers.
        let asked = accepted::<ShadowAgent>(&freezing.state, client_deactivated(), fired_at);
        assert_eq!(decommission_started(&asked.commands), None);
        assert!(idp_commands(&asked.commands).is_empty());
        let ShadowState::AwaitingDeletion { approval, why, .. } = &asked.state else {
            panic!("expected AwaitingDeletion, got {:?}", asked.state)
        };
        assert!(!ShadowAgent::is_terminal(&asked.state));
        assert!(
            why.contains("was not claimed within the grace period"),
            "{why}"
        );
        assert_eq!(requested_approval(&asked.commands), approval);
        assert_eq!(approval.id, APPROVAL_ID);
        assert_eq!(approval.action, "decommission");
        assert_eq!(approval.approvers, strings(&APPROVERS));
        assert_eq!(approval.quorum, 1);
        assert_eq!(approval.requester, "schedule:claim-grace");
        assert_eq!(approval.requested_by(), Actor::System);
        assert_eq!(approval.scopes_removed, strings(&[ORDERS_READ]));
        assert!(approval.sensitive_scopes.is_empty());
        assert_eq!(
            approval.expires_at,
            fired_at + Duration::seconds(policy().approval_expiry_secs as i64)
        );
        for fragment in [
            "Its client is deactivated",
            "Approve to decommission it",
            "deny to keep it deactivated",
        ] {
            assert!(
                approval.justification.contains(fragment),
                "{fragment:?} not in {}",
                approval.justification
            );
        }
        assert_eq!(
            names(&asked.commands),
            [
                "audit",
                "timer.set",
                "timer.set",
                "approval.request",
                "audit"
            ]
        );
        assert_eq!(
            audit_of(&asked.commands, AuditKind::AgentFrozen).actor,
            Actor::System
        );
    }

    // nobody known created it: nobody else is told (the question goes to the approvers)
    let unknown = started::<ShadowAgent>(shadow_input(None)).state;
    let freezing = accepted::<ShadowAgent>(&unknown, grace_timer(), claim_grace_ends());
    assert!(notified(&freezing.commands).is_empty());
}

fn scenario_shadow_agent_deletion_approved_by_security_decommissions_it() {
    let waiting = awaiting_deletion();
    let decided_at = asked_at() + Duration::hours(1);
    // the creator an event named is no approver; nor is anyone else outside the policy
    for by in [COLLEAGUE, OUTSIDER, "schedule:claim-grace"] {
        assert_rejected(
            on::<ShadowAgent>(&waiting, approve(by), decided_at),
            "approver",
            "",
        );
    }
    // another approval's decision is not this one's
    assert_rejected(
        on::<ShadowAgent>(
            &waiting,
            decided("wf-0001-other", APPROVER, Decision::Approve, None),
            decided_at,
        ),
        "approval_id",
        "waiting for approval wf-0001-approval-1",
    );
    // nor is a decision after the expiry
    assert_rejected(
        on::<ShadowAgent>(&waiting, approve(APPROVER), asked_at() + Duration::days(2)),
        "approval",
        "expired",
    );

    let step = accepted::<ShadowAgent>(&waiting, approve(APPROVER), decided_at);
    let ShadowState::Released { why, .. } = &step.state else {
        panic!("expected Released, got {:?}", step.state)
    };
    assert!(ShadowAgent::is_terminal(&step.state));
    assert!(
        why.contains("was not claimed within the grace period")
            && why.contains(&format!("decommission approved by {APPROVER}")),
        "{why}"
    );
    assert_eq!(
        decommission_started(&step.commands),
        Some(&DecommissionReason::Unclaimed { why: why.clone() })
    );
    assert_closed(
        &step.commands,
        |o| matches!(o, ApprovalOutcome::Approved { by, .. } if by == APPROVER),
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::ApprovalDecided).actor,
        Actor::Person(APPROVER.into())
    );
    let released = audit_of(&step.commands, AuditKind::ShadowAgentReleased);
    assert_eq!(released.actor, Actor::Person(APPROVER.into()));
    assert_eq!(released.approval_id.as_deref(), Some(APPROVAL_ID));
    assert!(
        idp_commands(&step.commands).is_empty(),
        "the decommission workflow deletes"
    );
}

fn scenario_shadow_agent_deletion_denied_keeps_it_frozen_for_a_claim_or_a_release() {
    let step = accepted::<ShadowAgent>(
        &awaiting_deletion(),
        deny(OTHER_APPROVER),
        asked_at() + Duration::hours(1),
    );
    let ShadowState::Kept { why, .. } = &step.state else {
        panic!("expected Kept, got {:?}", step.state)
    };
    assert!(
        !ShadowAgent::is_terminal(&step.state),
        "it can still be claimed or let go"
    );
    assert!(
        why.contains(&format!(
            "{OTHER_APPROVER} denied its decommission: use the read-only scope"
        )),
        "{why}"
    );
    assert_eq!(decommission_started(&step.commands), None);
    assert!(
        idp_commands(&step.commands).is_empty(),
        "it stays deactivated"
    );
    assert!(agent_changes(&step.commands).is_empty(), "it stays frozen");
    assert_closed(&step.commands, |o| {
        matches!(o, ApprovalOutcome::Denied { .. })
    });
    let kept = audit_of(&step.commands, AuditKind::DecommissionKept);
    assert_eq!(kept.actor, Actor::Person(OTHER_APPROVER.into()));
    assert!(
        kept.message.contains("stays frozen") && kept.message.contains("can still be claimed"),
        "{}",
        kept.message
    );

    let kept = step.state;
    let later = asked_at() + Duration::days(30);
    // the grace and approval timers are over
    for event in [grace_timer(), expiry_timer(), reminder_timer()] {
        assert_rejected(
            on::<ShadowAgent>(&kept, event, later),
            "event",
            "TimerFired does not apply to shadow_agent in state Kept",
        );
    }
    // the creator still may not let it go
    assert_rejected(
        on::<ShadowAgent>(&kept, released_by(COLLEAGUE), later),
        "by",
        "is not a security approver",
    );

    // a claim takes it over
    let claimed = accepted::<ShadowAgent>(&kept, shadow_claimed(), later);
    assert_eq!(ShadowAgent::state_name(&claimed.state), "Claimed");
    assert_eq!(names(&claimed.commands), ["audit"]);
    assert_eq!(
        audit_of(&claimed.commands, AuditKind::ShadowAgentClaimed).actor,
        Actor::Person(COLLEAGUE.into())
    );

    // a security approver's release decommissions it (the client is deactivated already)
    let released = accepted::<ShadowAgent>(&kept, shadow_released(), later);
    let ShadowState::Released { why, .. } = &released.state else {
        panic!("expected Released, got {:?}", released.state)
    };
    assert!(why.contains(&format!("let go by {APPROVER}")), "{why}");
    assert_eq!(
        names(&released.commands),
        ["audit", "workflow.start_decommission"]
    );
    assert_eq!(
        decommission_started(&released.commands),
        Some(&DecommissionReason::Unclaimed { why: why.clone() })
    );
    assert_eq!(
        audit_of(&released.commands, AuditKind::ShadowAgentReleased).actor,
        Actor::Person(APPROVER.into())
    );
}

fn scenario_shadow_agent_deletion_unanswered_keeps_it_frozen() {
    let waiting = awaiting_deletion();
    let ShadowState::AwaitingDeletion { approval, .. } = &waiting else {
        unreachable!()
    };
    let remind_at = approval.remind_at.expect("the policy reminds");
    // early timers change nothing
    assert_rejected(
        on::<ShadowAgent>(&waiting, reminder_timer(), remind_at - Duration::seconds(1)),
        "timer",
        "no reminder due now",
    );
    assert_rejected(
        on::<ShadowAgent>(&waiting, expiry_timer(), remind_at),
        "timer",
        "does not expire until",
    );

    let reminded = accepted::<ShadowAgent>(&waiting, reminder_timer(), remind_at);
    assert_eq!(reminded.state, waiting, "still waiting");
    assert!(matches!(
        reminded.commands.as_slice(),
        [Command::FollowUpApproval {
            follow_up: FollowUp::Reminder { .. },
            ..
        }]
    ));

    let expired = accepted::<ShadowAgent>(&waiting, expiry_timer(), approval.expires_at);
    let ShadowState::Kept { why, .. } = &expired.state else {
        panic!("expected Kept, got {:?}", expired.state)
    };
    assert!(why.contains("nobody decided"), "{why}");
    assert_eq!(decommission_started(&expired.commands), None);
    assert!(idp_commands(&expired.commands).is_empty());
    assert_closed(&expired.commands, |o| {
        matches!(o, ApprovalOutcome::Expired { .. })
    });
    assert_eq!(
        audit_of(&expired.commands, AuditKind::DecommissionKept).actor,
        Actor::Schedule(APPROVAL_EXPIRY_TIMER.into())
    );
    assert!(
        audit_kinds(&expired.commands).contains(&AuditKind::ApprovalExpired),
        "escalated like every unanswered approval"
    );
}

fn scenario_shadow_agent_deletion_question_withdrawn_keeps_it_frozen() {
    let waiting = awaiting_deletion();
    let when = asked_at() + Duration::hours(1);
    // Steward asked it: its creator, or a person under Steward's names, may not withdraw it
    for by in [COLLEAGUE, "schedule:claim-grace"] {
        assert_rejected(
            on::<ShadowAgent>(&waiting, cancel(by), when),
            "by",
            "may not cancel approval",
        );
    }
    for by in [Actor::Person(APPROVER.into()), Actor::System] {
        let step = accepted::<ShadowAgent>(
            &waiting,
            Event::Cancel {
                by: by.clone(),
                reason: "the team that owns it is back from leave".into(),
            },
            when,
        );
        let ShadowState::Kept { why, .. } = &step.state else {
            panic!("expected Kept, got {:?}", step.state)
        };
        assert!(why.contains("withdrew the question"), "{why}");
        assert_eq!(decommission_started(&step.commands), None);
        assert!(idp_commands(&step.commands).is_empty());
        assert_closed(&step.commands, |o| {
            matches!(o, ApprovalOutcome::Cancelled { .. })
        });
        assert_eq!(
            audit_of(&step.commands, AuditKind::DecommissionKept).actor,
            by
        );
    }
}

fn scenario_shadow_agent_claim_or_release_overtakes_the_deletion_question() {
    let waiting = awaiting_deletion();
    let when = asked_at() + Duration::hours(1);

    // a late claim (the creator, back) closes the question
    let claimed = accepted::<ShadowAgent>(&waiting, shadow_claimed(), when);
    assert_eq!(ShadowAgent::state_name(&claimed.state), "Claimed");
    assert_closed(&claimed.commands, |o| {
        matches!(o, ApprovalOutcome::Cancelled { .. })
    });
    assert_eq!(decommission_started(&claimed.commands), None);
    assert!(idp_commands(&claimed.commands).is_empty());

    // the creator may not let it go
    assert_rejected(
        on::<ShadowAgent>(&waiting, released_by(COLLEAGUE), when),
        "by",
        "is not a security approver",
    );
    // a security approver letting it go decides it
    let released = accepted::<ShadowAgent>(&waiting, shadow_released(), when);
    assert_eq!(ShadowAgent::state_name(&released.state), "Released");
    assert_closed(&released.commands, |o| {
        matches!(o, ApprovalOutcome::Cancelled { .. })
    });
    assert!(matches!(
        decommission_started(&released.commands),
        Some(DecommissionReason::Unclaimed { why }) if why.contains(&format!("let go by {APPROVER}"))
    ));
    assert!(idp_commands(&released.commands).is_empty());
}

/// A `Releasing` state stored before a release needed a security approver (the grace period's
/// end, or a creator an event named, released it) has no approver: once its client is
/// deactivated, security is asked, as after the grace period; nothing is deleted.
fn scenario_shadow_agent_releasing_stored_without_an_approver_asks_security() {
    let stored = serde_json::json!({
        "state": "Releasing",
        "agent": shadow_agent(),
        "why": "was not claimed within the grace period (ended 2025-03-17 09:00 UTC)",
    });
    let releasing: ShadowState = serde_json::from_value(stored).expect("an older state loads");
    let ShadowState::Releasing { approver, .. } = &releasing else {
        unreachable!()
    };
    assert_eq!(approver, &None);
    let step = accepted::<ShadowAgent>(&releasing, client_deactivated(), asked_at());
    assert_eq!(ShadowAgent::state_name(&step.state), "AwaitingDeletion");
    assert_eq!(decommission_started(&step.commands), None);
    assert_eq!(requested_approval(&step.commands).action, "decommission");
}

fn scenario_shadow_agent_release_failure_tells_security() {
    let releasing = accepted::<ShadowAgent>(&unclaimed_shadow(), shadow_released(), at(3600));
    let freezing = accepted::<ShadowAgent>(&unclaimed_shadow(), grace_timer(), claim_grace_ends());
    for deactivating in [releasing.state, freezing.state] {
        let step = accepted::<ShadowAgent>(
            &deactivating,
            command_failed("idp.deactivate_client"),
            claim_grace_ends() + Duration::seconds(100),
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
        assert_eq!(
            decommission_started(&step.commands),
            None,
            "no decommission of a client that is still active"
        );
        assert!(
            !step
                .commands
                .iter()
                .any(|c| matches!(c, Command::RequestApproval(_))),
            "no question about a client that is still active"
        );
    }
}

fn scenario_shadow_agent_refuses_events_that_do_not_apply() {
    let unclaimed = unclaimed_shadow();
    assert_rejected(
        on::<ShadowAgent>(&unclaimed, client_deactivated(), at(60)),
        "event",
        "ClientDeactivated does not apply to shadow_agent in state Unclaimed",
    );
    let releasing = accepted::<ShadowAgent>(&unclaimed, shadow_released(), at(60)).state;
    let freezing = accepted::<ShadowAgent>(&unclaimed, grace_timer(), claim_grace_ends()).state;
    // while the client is being deactivated, nothing else applies
    for (deactivating, name) in [(&releasing, "Releasing"), (&freezing, "Freezing")] {
        for event in [
            shadow_claimed(),
            shadow_released(),
            approve(APPROVER),
            cancel(APPROVER),
        ] {
            let expected = format!(
                "{} does not apply to shadow_agent in state {name}",
                event.label()
            );
            assert_rejected(
                on::<ShadowAgent>(deactivating, event, asked_at()),
                "event",
                &expected,
            );
        }
    }
    // results of commands it never sent do not apply to the open states
    for open in [awaiting_deletion(), kept_shadow()] {
        for event in [
            client_deactivated(),
            client_created(),
            command_failed("idp.deactivate_client"),
        ] {
            let expected = format!(
                "{} does not apply to shadow_agent in state {}",
                event.label(),
                ShadowAgent::state_name(&open)
            );
            assert_rejected(
                on::<ShadowAgent>(&open, event, asked_at()),
                "event",
                &expected,
            );
        }
    }

    let claimed = accepted::<ShadowAgent>(&unclaimed, shadow_claimed(), at(60)).state;
    // Claimed waits only for its claim's outcome.
    let mut not_the_outcome = every_lifecycle_event();
    not_the_outcome.extend([
        shadow_claimed(),
        shadow_released(),
        grace_timer(),
        client_activated(),
    ]);
    for event in not_the_outcome {
        let expected = format!(
            "{} does not apply to shadow_agent in state Claimed",
            event.label()
        );
        assert_rejected(
            on::<ShadowAgent>(&claimed, event, at(90)),
            "event",
            &expected,
        );
    }
    let ended = [
        accepted::<ShadowAgent>(&claimed, settled("wf-0002", true), at(90)).state,
        accepted::<ShadowAgent>(&releasing, client_deactivated(), at(120)).state,
        accepted::<ShadowAgent>(&releasing, command_failed("idp.deactivate_client"), at(120)).state,
    ];
    let names: BTreeSet<&str> = ended.iter().map(ShadowAgent::state_name).collect();
    assert_eq!(names, BTreeSet::from(["Adopted", "Released", "Failed"]));
    let mut events = every_lifecycle_event();
    events.extend([
        shadow_claimed(),
        shadow_released(),
        grace_timer(),
        client_activated(),
        settled("wf-0002", false),
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

fn settled(onboarding: &str, adopted: bool) -> Event {
    Event::ShadowClaimSettled {
        onboarding: onboarding.into(),
        adopted,
        reason: if adopted {
            "adopted".into()
        } else {
            format!("denied by {APPROVER}: not this quarter")
        },
    }
}

fn scenario_shadow_agent_claim_adopted_ends_it() {
    let claimed = accepted::<ShadowAgent>(&unclaimed_shadow(), shadow_claimed(), at(3600)).state;
    // Another onboarding's outcome is not this claim's.
    assert_rejected(
        on::<ShadowAgent>(&claimed, settled("wf-0003", true), at(7200)),
        "event",
        "ShadowClaimSettled does not apply to shadow_agent in state Claimed",
    );
    let step = accepted::<ShadowAgent>(&claimed, settled("wf-0002", true), at(7200));
    assert_eq!(
        step.state,
        ShadowState::Adopted {
            agent: shadow_agent(),
            onboarding: "wf-0002".into(),
        }
    );
    assert!(ShadowAgent::is_terminal(&step.state));
    assert!(
        step.commands.is_empty(),
        "the onboarding did the rest: {:?}",
        names(&step.commands)
    );
}

/// A claim denied (or expired, withdrawn, failed) took nothing over: the client is still as it
/// was found, so it is a shadow agent again, not a client nobody is asked about.
fn scenario_shadow_agent_claim_that_ends_without_taking_over_makes_it_unclaimed_again() {
    let claimed = accepted::<ShadowAgent>(&unclaimed_shadow(), shadow_claimed(), at(3600)).state;
    let when = at(7200);
    let step = accepted::<ShadowAgent>(&claimed, settled("wf-0002", false), when);
    let grace_ends = when + Duration::seconds(policy().discovery.grace_secs as i64);
    assert_eq!(
        step.state,
        ShadowState::Unclaimed {
            agent: Agent {
                updated_at: when,
                ..shadow_agent()
            },
            creator: Some(COLLEAGUE.into()),
            grace_ends,
        }
    );
    let saved = saved_agents(&step.commands)[0];
    assert_eq!(saved.status, AgentStatus::Unregistered);
    assert_eq!(saved.owner, "", "the claimer's owner is not kept");
    assert_eq!(
        timers_set(&step.commands),
        [(discovery::GRACE_TIMER, grace_ends)]
    );
    let found = audit_of(&step.commands, AuditKind::ShadowAgentFound);
    assert!(
        found.message.contains("not this quarter") && found.message.contains("unclaimed again"),
        "{}",
        found.message
    );
    assert_eq!(notified(&step.commands), [COLLEAGUE, SECURITY_CHANNEL]);
    assert!(idp_commands(&step.commands).is_empty());
    // It can be claimed again.
    accepted::<ShadowAgent>(&step.state, shadow_claimed(), when + Duration::hours(1));
}

/// Claimed while frozen after the grace period, then refused: still frozen, still undecided.
fn scenario_shadow_agent_claimed_frozen_and_refused_stays_frozen() {
    let claimed = accepted::<ShadowAgent>(&kept_shadow(), shadow_claimed(), at(10 * 86_400)).state;
    assert!(matches!(claimed, ShadowState::Claimed { frozen: true, .. }));
    let step = accepted::<ShadowAgent>(&claimed, settled("wf-0002", false), at(11 * 86_400));
    assert!(
        matches!(step.state, ShadowState::Kept { .. }),
        "{:?}",
        step.state
    );
    assert_eq!(saved_agents(&step.commands)[0].status, AgentStatus::Frozen);
    assert!(idp_commands(&step.commands).is_empty());
    assert!(
        timers_set(&step.commands).is_empty(),
        "no new grace period for a frozen client"
    );
}
