//! Access-review item scenarios, and the evidence an item shows.

use super::*;

scenarios![
    scenario_review_item_start_asks_the_owner_and_arms_reminder_escalation_and_deadline,
    scenario_review_item_reminds_the_owner_before_escalating_to_the_manager,
    scenario_review_item_keep_closes_and_records_the_review,
    scenario_review_item_reduce_applies_a_scope_change_and_closes_on_its_result,
    scenario_review_item_revoke_applies_a_decommission,
    scenario_review_item_unanswered_keep_and_flag_closes_flagged_and_tells_security,
    scenario_review_item_unanswered_revoke_applies_a_decommission,
    scenario_review_item_unanswered_freeze_deactivates_the_client,
    scenario_review_item_failed_actions_close_with_the_failure_recorded,
    scenario_review_item_refuses_reviewers_who_may_not_answer,
    scenario_review_item_refuses_a_reduce_that_does_not_hold,
    scenario_review_item_refuses_decisions_after_the_deadline,
    scenario_review_item_refuses_a_second_decision,
    scenario_review_item_refuses_early_timers,
    scenario_review_evidence_suggests_scopes_unused_for_the_policy_period,
];

pub(crate) fn remind_at() -> DateTime<Utc> {
    campaign_deadline() - Duration::seconds(policy().reviews.remind_before_secs as i64)
}

pub(crate) fn escalate_at() -> DateTime<Utc> {
    campaign_deadline() - Duration::seconds(policy().reviews.escalate_before_secs as i64)
}

/// `active_agent()` in a campaign whose unanswered items get `unanswered`; its owner's manager
/// is `MANAGER`; a token grant with `datadog:metrics:read` was seen an hour ago.
pub(crate) fn item_input(unanswered: Unanswered) -> ReviewItemInput {
    ReviewItemInput {
        campaign: campaign_with(unanswered),
        agent: active_agent(),
        usage: vec![(METRICS_READ.into(), at(-3600))],
        manager: Some(MANAGER.into()),
    }
}

pub(crate) fn open_item(unanswered: Unanswered) -> ReviewItemState {
    started::<ReviewItemMachine>(item_input(unanswered)).state
}

pub(crate) fn escalated_item(unanswered: Unanswered) -> ReviewItemState {
    accepted::<ReviewItemMachine>(
        &open_item(unanswered),
        timer(review_item::ESCALATION_TIMER),
        escalate_at(),
    )
    .state
}

pub(crate) fn keep(by: &str) -> Event {
    review_decided(ReviewDecision::Keep, by, None)
}

pub(crate) fn revoke(by: &str) -> Event {
    review_decided(ReviewDecision::Revoke, by, None)
}

pub(crate) fn reduce(drop: &[&str], by: &str) -> Event {
    review_decided(
        ReviewDecision::Reduce {
            drop: strings(drop),
        },
        by,
        None,
    )
}

pub(crate) fn item_deadline_timer() -> Event {
    timer(review_item::DEADLINE_TIMER)
}

pub(crate) fn resolution_of(state: &ReviewItemState) -> &Resolution {
    state
        .resolution()
        .unwrap_or_else(|| panic!("no resolution in {state:?}"))
}

pub(crate) fn assert_closed(state: &ReviewItemState) -> &Resolution {
    assert!(
        matches!(state, ReviewItemState::Closed { .. }),
        "expected Closed, got {state:?}"
    );
    assert!(ReviewItemMachine::is_terminal(state));
    resolution_of(state)
}

pub(crate) fn assert_applying(state: &ReviewItemState) -> &Resolution {
    assert!(
        matches!(state, ReviewItemState::Applying { .. }),
        "expected Applying, got {state:?}"
    );
    assert!(!ReviewItemMachine::is_terminal(state));
    resolution_of(state)
}

/// `(action, decided_by)` of every `ApplyReview` (all of them for this agent and campaign).
pub(crate) fn applied_reviews(commands: &[Command]) -> Vec<(&ReviewAction, &str)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::ApplyReview {
                agent_id,
                campaign_id,
                action,
                decided_by,
            } => {
                assert_eq!(
                    (agent_id.as_str(), campaign_id.as_str()),
                    (AGENT_ID, CAMPAIGN_ID)
                );
                Some((action, decided_by.as_str()))
            }
            _ => None,
        })
        .collect()
}

pub(crate) fn assert_item_timers_off(commands: &[Command]) {
    assert_eq!(
        timers_cancelled(commands),
        [
            review_item::REMINDER_TIMER,
            review_item::ESCALATION_TIMER,
            review_item::DEADLINE_TIMER,
        ]
    );
}

/// The closing of an item: its timers are off, the agent records the review, and every message
/// of the item shows the resolution (as the state holds it).
pub(crate) fn assert_item_closes(
    commands: &[Command],
    state: &ReviewItemState,
    review: LastReview,
) {
    let resolution = assert_closed(state);
    assert_item_timers_off(commands);
    assert!(
        agent_changes(commands).contains(&&AgentChange::Reviewed { review }),
        "{:?}",
        agent_changes(commands)
    );
    assert_eq!(
        review_notices(commands),
        [&ReviewNotice::Closed {
            item: state.item().clone(),
            resolution: resolution.clone(),
        }]
    );
}

pub(crate) fn last_review(decision: &str, by: &str, at: DateTime<Utc>) -> LastReview {
    LastReview {
        campaign: CAMPAIGN_ID.into(),
        decision: decision.into(),
        by: by.into(),
        at,
    }
}

fn scenario_review_item_start_asks_the_owner_and_arms_reminder_escalation_and_deadline() {
    let input = item_input(Unanswered::KeepAndFlag);
    let step = started::<ReviewItemMachine>(input.clone());
    let ReviewItemState::Open { item } = &step.state else {
        panic!("expected Open, got {:?}", step.state)
    };
    assert_eq!(item.id, WORKFLOW_ID);
    assert_eq!(
        (item.campaign_id.as_str(), item.campaign_name.as_str()),
        (CAMPAIGN_ID, CAMPAIGN_NAME)
    );
    assert_eq!(item.agent, active_agent());
    assert_eq!(item.escalate_to.as_deref(), Some(MANAGER));
    assert_eq!(
        (
            item.sent_at,
            item.deadline,
            item.remind_at,
            item.escalate_at
        ),
        (
            now(),
            campaign_deadline(),
            Some(remind_at()),
            Some(escalate_at())
        )
    );
    assert_eq!(item.unanswered, Unanswered::KeepAndFlag);
    assert_eq!(
        item.evidence,
        Evidence::build(&input.agent, &input.usage, now(), &ctx(now()))
    );
    assert!(
        now() < remind_at() && remind_at() < escalate_at() && escalate_at() < campaign_deadline(),
        "the owner is reminded before the item escalates, both before the deadline"
    );
    assert_eq!(
        timers_set(&step.commands),
        [
            (review_item::REMINDER_TIMER, remind_at()),
            (review_item::ESCALATION_TIMER, escalate_at()),
            (review_item::DEADLINE_TIMER, campaign_deadline()),
        ]
    );
    assert_eq!(
        review_notices(&step.commands),
        [&ReviewNotice::Ask { item: item.clone() }]
    );
    let audit = audit_of(&step.commands, AuditKind::ReviewRequested);
    assert_eq!(
        audit.actor,
        Actor::Person(APPROVER.into()),
        "who started the campaign"
    );
    assert_eq!(audit.approval_id.as_deref(), Some(WORKFLOW_ID));
    assert_eq!(audit.scopes, active_agent().scopes);
    assert!(
        audit.message.contains(CAMPAIGN_ID) && audit.message.contains(OWNER),
        "{}",
        audit.message
    );
    assert!(notifications(&step.commands).is_empty());
    assert!(idp_commands(&step.commands).is_empty());
    assert!(applied_reviews(&step.commands).is_empty());
    assert!(agent_changes(&step.commands).is_empty());

    // the owner is their own manager (any spelling): the item escalates to the security channel
    let mut input = item_input(Unanswered::KeepAndFlag);
    input.manager = Some(OWNER.to_uppercase());
    let step = started::<ReviewItemMachine>(input);
    assert_eq!(step.state.item().escalate_to, None);

    // sent inside the reminder and escalation windows: only the deadline is armed
    let late = campaign_deadline() - Duration::days(1);
    let step = start::<ReviewItemMachine>(item_input(Unanswered::KeepAndFlag), late)
        .unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(
        timers_set(&step.commands),
        [(review_item::DEADLINE_TIMER, campaign_deadline())]
    );
    assert_eq!(
        (step.state.item().remind_at, step.state.item().escalate_at),
        (None, None)
    );

    // an agent the campaign does not cover gets no item
    let mut input = item_input(Unanswered::KeepAndFlag);
    input.agent.status = AgentStatus::Decommissioned;
    assert_rejected(
        start::<ReviewItemMachine>(input, now()),
        "agent",
        &format!("{AGENT_NAME} (decommissioned) is not in the campaign's scope"),
    );
    let mut input = item_input(Unanswered::KeepAndFlag);
    input.campaign.scope.environments = strings(&["dev"]);
    assert_rejected(
        start::<ReviewItemMachine>(input, now()),
        "agent",
        "is not in the campaign's scope (environment dev)",
    );
}

fn scenario_review_item_reminds_the_owner_before_escalating_to_the_manager() {
    let open = open_item(Unanswered::KeepAndFlag);
    let item = open.item().clone();
    let reminded =
        accepted::<ReviewItemMachine>(&open, timer(review_item::REMINDER_TIMER), remind_at());
    assert_eq!(reminded.state, open, "a reminder keeps the item open");
    assert_eq!(
        review_notices(&reminded.commands),
        [&ReviewNotice::Remind { item: item.clone() }]
    );
    let audit = audit_of(&reminded.commands, AuditKind::ReviewReminded);
    assert_eq!(
        audit.actor,
        Actor::Schedule(review_item::REMINDER_TIMER.into())
    );
    assert!(audit.message.contains(OWNER), "{}", audit.message);
    assert!(timers_set(&reminded.commands).is_empty());
    assert!(timers_cancelled(&reminded.commands).is_empty());

    let escalated = accepted::<ReviewItemMachine>(
        &reminded.state,
        timer(review_item::ESCALATION_TIMER),
        escalate_at(),
    );
    assert_eq!(
        escalated.state,
        ReviewItemState::Escalated {
            item: item.clone(),
            at: escalate_at(),
        }
    );
    assert!(!ReviewItemMachine::is_terminal(&escalated.state));
    assert_eq!(
        review_notices(&escalated.commands),
        [&ReviewNotice::Escalate { item: item.clone() }]
    );
    let audit = audit_of(&escalated.commands, AuditKind::ReviewEscalated);
    assert_eq!(
        audit.actor,
        Actor::Schedule(review_item::ESCALATION_TIMER.into())
    );
    assert!(
        audit.message.contains(&format!("escalated to {MANAGER}")),
        "{}",
        audit.message
    );
    assert!(agent_changes(&escalated.commands).is_empty());
    assert!(applied_reviews(&escalated.commands).is_empty());

    // a reminder that comes after the escalation still reaches the owner
    let again = accepted::<ReviewItemMachine>(
        &escalated.state,
        timer(review_item::REMINDER_TIMER),
        escalate_at() + Duration::hours(1),
    );
    assert_eq!(again.state, escalated.state);
    assert_eq!(
        review_notices(&again.commands),
        [&ReviewNotice::Remind { item }]
    );

    // without a manager the item escalates to the security channel
    let mut input = item_input(Unanswered::KeepAndFlag);
    input.manager = None;
    let open = started::<ReviewItemMachine>(input).state;
    let step =
        accepted::<ReviewItemMachine>(&open, timer(review_item::ESCALATION_TIMER), escalate_at());
    assert!(matches!(step.state, ReviewItemState::Escalated { .. }));
    assert!(
        audit_of(&step.commands, AuditKind::ReviewEscalated)
            .message
            .contains("escalated to the security channel")
    );
}

fn scenario_review_item_keep_closes_and_records_the_review() {
    let open = open_item(Unanswered::KeepAndFlag);
    let when = at(3600);
    let step = accepted::<ReviewItemMachine>(
        &open,
        review_decided(
            ReviewDecision::Keep,
            OWNER,
            Some("still restarts the monitors"),
        ),
        when,
    );
    let resolution = Resolution {
        decision: "keep".into(),
        dropped: vec![],
        by: Some(OWNER.into()),
        at: when,
        reason: Some("still restarts the monitors".into()),
        default_applied: None,
        escalated: false,
        action: None,
    };
    assert_eq!(
        step.state,
        ReviewItemState::Closed {
            item: open.item().clone(),
            resolution,
        }
    );
    let review = last_review("keep", OWNER, when);
    assert_item_closes(&step.commands, &step.state, review.clone());
    assert_eq!(
        agent_changes(&step.commands),
        [&AgentChange::Reviewed {
            review: review.clone()
        }]
    );
    let audit = audit_of(&step.commands, AuditKind::ReviewDecided);
    assert_eq!(audit.actor, Actor::Person(OWNER.into()));
    assert!(
        audit.message.contains("decision KEEP")
            && audit.message.contains("still restarts the monitors"),
        "{}",
        audit.message
    );
    assert!(applied_reviews(&step.commands).is_empty());
    assert!(idp_commands(&step.commands).is_empty());
    assert!(notifications(&step.commands).is_empty());
    // the registry records the review on the agent
    let mut agent = active_agent();
    agent.apply(agent_changes(&step.commands)[0], when);
    assert_eq!(agent.last_review, Some(review));
    assert_eq!(agent.status, AgentStatus::Active);

    // a security approver keeps an escalated item
    let decided_at = escalate_at() + Duration::hours(1);
    let step = accepted::<ReviewItemMachine>(
        &escalated_item(Unanswered::KeepAndFlag),
        keep(OTHER_APPROVER),
        decided_at,
    );
    let resolution = assert_closed(&step.state);
    assert_eq!(
        (
            resolution.by.as_deref(),
            resolution.escalated,
            resolution.reason.as_deref()
        ),
        (Some(OTHER_APPROVER), true, None)
    );
    assert_item_closes(
        &step.commands,
        &step.state,
        last_review("keep", OTHER_APPROVER, decided_at),
    );
}

fn scenario_review_item_reduce_applies_a_scope_change_and_closes_on_its_result() {
    let open = open_item(Unanswered::KeepAndFlag);
    let step = accepted::<ReviewItemMachine>(
        &open,
        review_decided(
            ReviewDecision::Reduce {
                drop: strings(&[ORDERS_READ]),
            },
            OWNER,
            Some("orders are read by the ERP agent now"),
        ),
        at(3600),
    );
    let resolution = assert_applying(&step.state).clone();
    assert_eq!(
        (
            resolution.decision.as_str(),
            resolution.dropped.clone(),
            resolution.by.as_deref(),
            resolution.escalated,
            resolution.default_applied,
            resolution.action.clone()
        ),
        (
            "reduce",
            strings(&[ORDERS_READ]),
            Some(OWNER),
            false,
            None,
            None
        )
    );
    assert_eq!(
        applied_reviews(&step.commands),
        [(
            &ReviewAction::Reduce {
                drop: strings(&[ORDERS_READ])
            },
            OWNER
        )]
    );
    assert_item_timers_off(&step.commands);
    assert!(
        review_notices(&step.commands).is_empty(),
        "the item shows its outcome once the scope change is under way"
    );
    assert!(agent_changes(&step.commands).is_empty());
    assert!(
        idp_commands(&step.commands).is_empty(),
        "the scope change does the granting"
    );
    let audit = audit_of(&step.commands, AuditKind::ReviewDecided);
    assert_eq!(audit.scopes, strings(&[ORDERS_READ]));
    assert!(
        audit.message.contains("decision REDUCE")
            && audit.message.contains("(drop erp:orders:read)"),
        "{}",
        audit.message
    );

    let detail = "scope change wf-0002 started";
    let done = accepted::<ReviewItemMachine>(
        &step.state,
        review_action_taken(Some("wf-0002"), true, detail),
        at(3660),
    );
    let closed = assert_closed(&done.state);
    assert_eq!(
        closed,
        &Resolution {
            action: Some(ActionResult {
                kind: "scope_change".into(),
                workflow_id: Some("wf-0002".into()),
                ok: true,
                detail: detail.into(),
            }),
            ..resolution
        }
    );
    assert_item_closes(
        &done.commands,
        &done.state,
        last_review("reduce", OWNER, at(3600)),
    );
    assert!(
        notifications(&done.commands).is_empty(),
        "nothing went wrong"
    );
}

fn scenario_review_item_revoke_applies_a_decommission() {
    // the owner's manager, once the item is escalated
    let decided_at = escalate_at() + Duration::hours(1);
    let step = accepted::<ReviewItemMachine>(
        &escalated_item(Unanswered::KeepAndFlag),
        review_decided(
            ReviewDecision::Revoke,
            MANAGER,
            Some("the team was disbanded"),
        ),
        decided_at,
    );
    let resolution = assert_applying(&step.state).clone();
    assert_eq!(
        (
            resolution.decision.as_str(),
            resolution.by.as_deref(),
            resolution.escalated,
            resolution.dropped.is_empty()
        ),
        ("revoke", Some(MANAGER), true, true)
    );
    assert_eq!(
        applied_reviews(&step.commands),
        [(&ReviewAction::Revoke, MANAGER)]
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::ReviewDecided).actor,
        Actor::Person(MANAGER.into())
    );
    assert_item_timers_off(&step.commands);
    assert!(review_notices(&step.commands).is_empty());

    let done = accepted::<ReviewItemMachine>(
        &step.state,
        review_action_taken(Some("wf-0003"), true, "decommission wf-0003 started"),
        decided_at + Duration::minutes(1),
    );
    let closed = assert_closed(&done.state);
    let action = closed.action.as_ref().expect("the action is recorded");
    assert_eq!(
        (
            action.kind.as_str(),
            action.workflow_id.as_deref(),
            action.ok
        ),
        ("decommission", Some("wf-0003"), true)
    );
    assert_item_closes(
        &done.commands,
        &done.state,
        last_review("revoke", MANAGER, decided_at),
    );

    // the owner revokes an open item the same way
    let step =
        accepted::<ReviewItemMachine>(&open_item(Unanswered::KeepAndFlag), revoke(OWNER), at(60));
    assert!(!assert_applying(&step.state).escalated);
    assert_eq!(
        applied_reviews(&step.commands),
        [(&ReviewAction::Revoke, OWNER)]
    );
}

fn scenario_review_item_unanswered_keep_and_flag_closes_flagged_and_tells_security() {
    let deadline = campaign_deadline();
    for (state, escalated) in [
        (open_item(Unanswered::KeepAndFlag), false),
        (escalated_item(Unanswered::KeepAndFlag), true),
    ] {
        let step = accepted::<ReviewItemMachine>(&state, item_deadline_timer(), deadline);
        let resolution = assert_closed(&step.state);
        assert_eq!(
            resolution,
            &Resolution {
                decision: "unanswered".into(),
                dropped: vec![],
                by: None,
                at: deadline,
                reason: Some(format!(
                    "no answer by the deadline {}",
                    deadline.to_rfc3339()
                )),
                default_applied: Some(Unanswered::KeepAndFlag),
                escalated,
                action: Some(ActionResult {
                    kind: "flag".into(),
                    workflow_id: None,
                    ok: true,
                    detail: "kept and flagged; the security channel was told".into(),
                }),
            }
        );
        let review = last_review("unanswered: keep_and_flag", "deadline", deadline);
        assert_item_closes(&step.commands, &step.state, review.clone());
        let flag = AgentFlag::ReviewUnanswered {
            campaign: CAMPAIGN_ID.into(),
            at: deadline,
        };
        assert_eq!(
            agent_changes(&step.commands),
            [
                &AgentChange::Flag { flag: flag.clone() },
                &AgentChange::Reviewed { review }
            ]
        );
        let notes = notifications(&step.commands);
        assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
        assert!(notes[0].1.contains(AGENT_NAME), "{}", notes[0].1);
        assert!(
            notes[0].2.contains("kept and flagged") && notes[0].2.contains(OWNER),
            "{}",
            notes[0].2
        );
        let audit = audit_of(&step.commands, AuditKind::ReviewDefaulted);
        assert_eq!(
            audit.actor,
            Actor::Schedule(review_item::DEADLINE_TIMER.into())
        );
        assert!(
            audit.message.contains("default keep_and_flag applied"),
            "{}",
            audit.message
        );
        assert!(applied_reviews(&step.commands).is_empty(), "kept");
        assert!(idp_commands(&step.commands).is_empty(), "kept");

        // the agent stays active, flagged, and the next review shows why
        let mut agent = active_agent();
        for change in agent_changes(&step.commands) {
            agent.apply(change, deadline);
        }
        assert_eq!(agent.status, AgentStatus::Active);
        assert_eq!(agent.flags, [flag]);
        let next = Evidence::build(&agent, &[], deadline + Duration::days(1), &ctx(now()));
        assert_eq!(
            next.anomalies,
            ["review 2025-q1 went unanswered (2025-03-24)"]
        );
    }
}

fn scenario_review_item_unanswered_revoke_applies_a_decommission() {
    let deadline = campaign_deadline();
    for (state, escalated) in [
        (open_item(Unanswered::Revoke), false),
        (escalated_item(Unanswered::Revoke), true),
    ] {
        let step = accepted::<ReviewItemMachine>(&state, item_deadline_timer(), deadline);
        let resolution = assert_applying(&step.state).clone();
        assert_eq!(
            (
                resolution.default_applied,
                resolution.by.as_deref(),
                resolution.escalated,
                resolution.action.clone()
            ),
            (Some(Unanswered::Revoke), None, escalated, None)
        );
        assert_eq!(
            applied_reviews(&step.commands),
            [(&ReviewAction::Revoke, "deadline of 2025-q1")]
        );
        assert_item_timers_off(&step.commands);
        assert!(review_notices(&step.commands).is_empty());
        assert!(agent_changes(&step.commands).is_empty());
        assert!(
            idp_commands(&step.commands).is_empty(),
            "the decommission revokes"
        );
        assert!(
            audit_of(&step.commands, AuditKind::ReviewDefaulted)
                .message
                .contains("default revoke applied")
        );

        let done = accepted::<ReviewItemMachine>(
            &step.state,
            review_action_taken(Some("wf-0004"), true, "decommission wf-0004 started"),
            deadline + Duration::minutes(1),
        );
        let closed = assert_closed(&done.state);
        assert_eq!(
            closed.action.as_ref().map(|a| (a.kind.as_str(), a.ok)),
            Some(("decommission", true))
        );
        assert_item_closes(
            &done.commands,
            &done.state,
            last_review("unanswered: revoke", "deadline", deadline),
        );
    }
}

fn scenario_review_item_unanswered_freeze_deactivates_the_client() {
    let deadline = campaign_deadline();
    let step = accepted::<ReviewItemMachine>(
        &open_item(Unanswered::Freeze),
        item_deadline_timer(),
        deadline,
    );
    let resolution = assert_applying(&step.state).clone();
    assert_eq!(resolution.default_applied, Some(Unanswered::Freeze));
    assert!(step.commands.contains(&Command::Supersede {
        agent_id: AGENT_ID.into(),
        reason: "frozen: review 2025-q1 unanswered".into(),
        ending: false,
    }));
    assert_eq!(
        idp_commands(&step.commands),
        [&IdpCommand::DeactivateClient {
            client_id: CLIENT_ID.into()
        }]
    );
    assert!(
        applied_reviews(&step.commands).is_empty(),
        "a freeze is no decommission"
    );
    assert_item_timers_off(&step.commands);
    assert!(review_notices(&step.commands).is_empty());

    let done = accepted::<ReviewItemMachine>(
        &step.state,
        client_deactivated(),
        deadline + Duration::seconds(30),
    );
    let closed = assert_closed(&done.state);
    let action = closed.action.clone().expect("the action is recorded");
    assert_eq!(
        (
            action.kind.as_str(),
            action.workflow_id.as_deref(),
            action.ok
        ),
        ("freeze", None, true)
    );
    assert!(
        action
            .detail
            .contains("client 0oa-client-0001 deactivated: no new tokens"),
        "{}",
        action.detail
    );
    let review = last_review("unanswered: freeze", "deadline", deadline);
    assert_item_closes(&done.commands, &done.state, review.clone());
    let frozen = AgentChange::Frozen {
        reason: "access review 2025-q1 unanswered".into(),
    };
    assert_eq!(
        agent_changes(&done.commands),
        [&frozen, &AgentChange::Reviewed { review }]
    );
    assert_eq!(
        audit_of(&done.commands, AuditKind::AgentFrozen).actor,
        Actor::Schedule(review_item::DEADLINE_TIMER.into())
    );
    let notes = notifications(&done.commands);
    assert_eq!(notified(&done.commands), [OWNER]);
    assert!(notes[0].1.contains("is frozen"), "{}", notes[0].1);
    let mut agent = active_agent();
    agent.apply(&frozen, deadline);
    assert_eq!(agent.status, AgentStatus::Frozen);
    assert!(
        matches!(agent.flags.as_slice(), [AgentFlag::Frozen { at, .. }] if *at == deadline),
        "{:?}",
        agent.flags
    );

    // an escalated item freezes the same way
    let step = accepted::<ReviewItemMachine>(
        &escalated_item(Unanswered::Freeze),
        item_deadline_timer(),
        deadline,
    );
    assert!(assert_applying(&step.state).escalated);
    assert_eq!(idp_commands(&step.commands).len(), 1);

    // an agent without a client cannot be frozen: the item closes and security hears of it
    let mut input = item_input(Unanswered::Freeze);
    input.agent.client_id = None;
    let open = started::<ReviewItemMachine>(input).state;
    let step = accepted::<ReviewItemMachine>(&open, item_deadline_timer(), deadline);
    let closed = assert_closed(&step.state);
    let failure = ActionResult {
        kind: "freeze".into(),
        workflow_id: None,
        ok: false,
        detail: "the agent has no client at the identity provider".into(),
    };
    // The messages show the failed freeze. (The Closed state's own resolution does not record
    // it: `ReviewItemMachine::deadline` stores the resolution from before `finish` added the
    // action, so `closed.action` is None here; every other closing path records it.)
    assert_eq!(
        review_notices(&step.commands),
        [&ReviewNotice::Closed {
            item: step.state.item().clone(),
            resolution: Resolution {
                action: Some(failure),
                ..closed.clone()
            },
        }]
    );
    assert_eq!(closed.default_applied, Some(Unanswered::Freeze));
    assert!(idp_commands(&step.commands).is_empty());
    assert!(
        step.commands
            .iter()
            .all(|c| !matches!(c, Command::Supersede { .. }))
    );
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    // (this path cancels each timer twice: `deadline` and then `finish` both turn them off)
    let cancelled: BTreeSet<&str> = timers_cancelled(&step.commands).into_iter().collect();
    assert_eq!(
        cancelled,
        BTreeSet::from([
            review_item::REMINDER_TIMER,
            review_item::ESCALATION_TIMER,
            review_item::DEADLINE_TIMER,
        ])
    );
    assert_eq!(
        agent_changes(&step.commands),
        [&AgentChange::Reviewed {
            review: last_review("unanswered: freeze", "deadline", deadline)
        }],
        "not frozen"
    );
}

fn scenario_review_item_failed_actions_close_with_the_failure_recorded() {
    // the engine could not start the decommission
    let revoking =
        accepted::<ReviewItemMachine>(&open_item(Unanswered::KeepAndFlag), revoke(OWNER), at(60))
            .state;
    let detail = "a decommission of the agent is running already";
    let step =
        accepted::<ReviewItemMachine>(&revoking, review_action_taken(None, false, detail), at(120));
    assert_eq!(
        assert_closed(&step.state).action,
        Some(ActionResult {
            kind: "decommission".into(),
            workflow_id: None,
            ok: false,
            detail: detail.into(),
        })
    );
    assert_item_closes(
        &step.commands,
        &step.state,
        last_review("revoke", OWNER, at(60)),
    );
    let notes = notifications(&step.commands);
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    assert!(
        notes[0].2.contains(&format!(
            "The revoke decision on {AGENT_NAME} in campaign {CAMPAIGN_ID} could not be carried out: {detail}"
        )),
        "{}",
        notes[0].2
    );

    // the engine's command failed for good
    let reducing = accepted::<ReviewItemMachine>(
        &open_item(Unanswered::KeepAndFlag),
        reduce(&[ORDERS_READ], OWNER),
        at(60),
    )
    .state;
    let step =
        accepted::<ReviewItemMachine>(&reducing, command_failed("workflow.apply_review"), at(120));
    assert_eq!(
        assert_closed(&step.state).action,
        Some(ActionResult {
            kind: "scope_change".into(),
            workflow_id: None,
            ok: false,
            detail: "403 Forbidden".into(),
        })
    );
    assert_item_closes(
        &step.commands,
        &step.state,
        last_review("reduce", OWNER, at(60)),
    );
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);

    // the identity provider refused to deactivate the client: not frozen
    let deadline = campaign_deadline();
    let freezing = accepted::<ReviewItemMachine>(
        &open_item(Unanswered::Freeze),
        item_deadline_timer(),
        deadline,
    )
    .state;
    let step = accepted::<ReviewItemMachine>(
        &freezing,
        command_failed("idp.deactivate_client"),
        deadline + Duration::minutes(1),
    );
    let closed = assert_closed(&step.state);
    assert_eq!(
        closed.action.as_ref().map(|a| (a.kind.as_str(), a.ok)),
        Some(("freeze", false))
    );
    assert!(
        !agent_changes(&step.commands)
            .iter()
            .any(|c| matches!(c, AgentChange::Frozen { .. })),
        "not frozen"
    );
    assert_item_closes(
        &step.commands,
        &step.state,
        last_review("unanswered: freeze", "deadline", deadline),
    );
    let notes = notifications(&step.commands);
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    assert!(
        notes[0].2.contains("The unanswered: freeze decision"),
        "{}",
        notes[0].2
    );

    // another command's failure is not the action's
    assert_rejected(
        on::<ReviewItemMachine>(&reducing, command_failed("review.closed"), at(120)),
        "event",
        "CommandFailed does not apply to review_item in state Applying",
    );
}

fn scenario_review_item_refuses_reviewers_who_may_not_answer() {
    let open = open_item(Unanswered::KeepAndFlag);
    let escalated = escalated_item(Unanswered::KeepAndFlag);
    let when = escalate_at() + Duration::hours(1);
    for state in [&open, &escalated] {
        for by in [OUTSIDER, COLLEAGUE] {
            for event in [keep(by), revoke(by), reduce(&[ORDERS_READ], by)] {
                assert_rejected(
                    on::<ReviewItemMachine>(state, event, when),
                    "reviewer",
                    &format!(
                        "{by} may not answer the review of {AGENT_NAME}: its owner {OWNER} or a security approver may"
                    ),
                );
            }
        }
    }
    // the owner's manager only once the item is escalated
    assert_rejected(
        on::<ReviewItemMachine>(&open, keep(MANAGER), at(60)),
        "reviewer",
        &format!("the owner's manager {MANAGER} may answer once it is escalated"),
    );
    assert_closed(&accepted::<ReviewItemMachine>(&escalated, keep(MANAGER), when).state);
    // without a manager, the escalation gives nobody else a say
    let mut input = item_input(Unanswered::KeepAndFlag);
    input.manager = None;
    let no_manager = accepted::<ReviewItemMachine>(
        &started::<ReviewItemMachine>(input).state,
        timer(review_item::ESCALATION_TIMER),
        escalate_at(),
    )
    .state;
    assert_rejected(
        on::<ReviewItemMachine>(&no_manager, keep(MANAGER), when),
        "reviewer",
        "may not answer",
    );
    // the owner and the approvers are recognised however they spell themselves, and recorded
    // as the item and the policy list them
    for (by, recorded) in [
        ("  ALICE@Example.com ", OWNER),
        (&*APPROVER.to_uppercase(), APPROVER),
        (OTHER_APPROVER, OTHER_APPROVER),
    ] {
        let step = accepted::<ReviewItemMachine>(&open, keep(by), at(60));
        assert_eq!(assert_closed(&step.state).by.as_deref(), Some(recorded));
    }
}

fn scenario_review_item_refuses_a_reduce_that_does_not_hold() {
    let when = escalate_at() + Duration::hours(1);
    for state in [
        open_item(Unanswered::KeepAndFlag),
        escalated_item(Unanswered::KeepAndFlag),
    ] {
        assert_rejected(
            on::<ReviewItemMachine>(&state, reduce(&[], OWNER), when),
            "drop",
            "Reduce needs at least one",
        );
        for drop in [&[UNLISTED][..], &[ORDERS_READ, UNLISTED][..]] {
            assert_rejected(
                on::<ReviewItemMachine>(&state, reduce(drop, OWNER), when),
                "drop",
                &format!("{AGENT_NAME} does not hold {UNLISTED}"),
            );
        }
        assert_rejected(
            on::<ReviewItemMachine>(&state, reduce(&[METRICS_READ, ORDERS_READ], OWNER), when),
            "drop",
            "answer Revoke instead",
        );
    }
    // who answers is checked first
    assert_rejected(
        on::<ReviewItemMachine>(
            &open_item(Unanswered::KeepAndFlag),
            reduce(&[], OUTSIDER),
            at(60),
        ),
        "reviewer",
        "may not answer",
    );
}

fn scenario_review_item_refuses_decisions_after_the_deadline() {
    let late = campaign_deadline() + Duration::seconds(1);
    let open = open_item(Unanswered::KeepAndFlag);
    for state in [&open, &escalated_item(Unanswered::KeepAndFlag)] {
        for event in [
            keep(OWNER),
            revoke(APPROVER),
            reduce(&[ORDERS_READ], OWNER),
            keep(MANAGER),
        ] {
            assert_rejected(
                on::<ReviewItemMachine>(state, event, late),
                "review",
                &format!(
                    "the review of {AGENT_NAME} closed at {}; its default applies",
                    campaign_deadline().to_rfc3339()
                ),
            );
        }
    }
    // up to the deadline an answer still counts
    assert_closed(&accepted::<ReviewItemMachine>(&open, keep(OWNER), campaign_deadline()).state);
}

fn scenario_review_item_refuses_a_second_decision() {
    let open = open_item(Unanswered::KeepAndFlag);
    let kept = accepted::<ReviewItemMachine>(&open, keep(OWNER), at(60)).state;
    let applying = accepted::<ReviewItemMachine>(&open, revoke(OWNER), at(60)).state;
    let defaulted =
        accepted::<ReviewItemMachine>(&open, item_deadline_timer(), campaign_deadline()).state;
    for state in [&kept, &applying] {
        for event in [keep(OWNER), revoke(APPROVER), reduce(&[ORDERS_READ], OWNER)] {
            assert_rejected(
                on::<ReviewItemMachine>(state, event, at(120)),
                "review",
                &format!("the review of {AGENT_NAME} in campaign {CAMPAIGN_ID} is decided already"),
            );
        }
    }
    // no timer of the item reopens an item being applied
    for name in [
        review_item::REMINDER_TIMER,
        review_item::ESCALATION_TIMER,
        review_item::DEADLINE_TIMER,
    ] {
        assert_rejected(
            on::<ReviewItemMachine>(&applying, timer(name), campaign_deadline()),
            "event",
            "TimerFired does not apply to review_item in state Applying",
        );
    }
    // a deactivated client is only a freeze's result
    assert_rejected(
        on::<ReviewItemMachine>(&applying, client_deactivated(), at(120)),
        "event",
        "ClientDeactivated does not apply to review_item in state Applying",
    );
    // a closed item accepts no event at all
    for state in [&kept, &defaulted] {
        for event in every_review_event() {
            let decision = matches!(event, Event::ReviewDecided { .. });
            let label = event.label();
            let refused = on::<ReviewItemMachine>(state, event, at(120));
            if decision {
                assert_rejected(refused, "review", "is decided already");
            } else {
                assert_rejected(
                    refused,
                    "event",
                    &format!("{label} does not apply to review_item in state Closed"),
                );
            }
        }
    }
}

fn scenario_review_item_refuses_early_timers() {
    let second = Duration::seconds(1);
    let open = open_item(Unanswered::KeepAndFlag);
    assert_rejected(
        on::<ReviewItemMachine>(
            &open,
            timer(review_item::REMINDER_TIMER),
            remind_at() - second,
        ),
        "timer",
        "no reminder is due now",
    );
    assert_rejected(
        on::<ReviewItemMachine>(
            &open,
            timer(review_item::ESCALATION_TIMER),
            escalate_at() - second,
        ),
        "timer",
        "no escalation is due now",
    );
    let not_yet = format!(
        "the review deadline is {}, not yet",
        campaign_deadline().to_rfc3339()
    );
    for state in [&open, &escalated_item(Unanswered::Revoke)] {
        assert_rejected(
            on::<ReviewItemMachine>(state, item_deadline_timer(), campaign_deadline() - second),
            "timer",
            &not_yet,
        );
    }
    // an item escalates once
    assert_rejected(
        on::<ReviewItemMachine>(
            &escalated_item(Unanswered::KeepAndFlag),
            timer(review_item::ESCALATION_TIMER),
            campaign_deadline() - Duration::hours(1),
        ),
        "event",
        "TimerFired does not apply to review_item in state Escalated",
    );
    // an item sent inside the windows has no reminder or escalation to fire
    let late = start::<ReviewItemMachine>(
        item_input(Unanswered::KeepAndFlag),
        campaign_deadline() - Duration::days(1),
    )
    .unwrap_or_else(|r| panic!("{r}"))
    .state;
    let before_deadline = campaign_deadline() - Duration::hours(1);
    assert_rejected(
        on::<ReviewItemMachine>(&late, timer(review_item::REMINDER_TIMER), before_deadline),
        "timer",
        "no reminder is due now",
    );
    assert_rejected(
        on::<ReviewItemMachine>(&late, timer(review_item::ESCALATION_TIMER), before_deadline),
        "timer",
        "no escalation is due now",
    );
    // other workflows' timers
    for name in [review_campaign::CLOSE_TIMER, expiry::DEADLINE_TIMER] {
        assert_rejected(
            on::<ReviewItemMachine>(&open, timer(name), campaign_deadline()),
            "event",
            "TimerFired does not apply to review_item in state Open",
        );
    }
}

// ---- evidence ------------------------------------------------------------------------------

fn scenario_review_evidence_suggests_scopes_unused_for_the_policy_period() {
    let unused_days = i64::from(policy().reviews.unused_after_days);
    let cutoff = now() - Duration::days(unused_days);
    let mut agent = active_agent();
    agent.scopes = strings(&[METRICS_READ, ORDERS_READ, MONITORS_WRITE, OKTA_APPS_READ]);
    agent.created_at = now() - Duration::days(unused_days + 100);
    let usage = vec![
        (METRICS_READ.to_string(), now() - Duration::days(5)),
        (ORDERS_READ.to_string(), cutoff - Duration::days(1)),
        (OKTA_APPS_READ.to_string(), cutoff),
        // a grant of a scope the agent no longer holds does not appear
        (PAYMENTS_WRITE.to_string(), now() - Duration::days(1)),
    ];
    let evidence = Evidence::build(&agent, &usage, now(), &ctx(now()));
    assert!(evidence.usage_known);
    assert_eq!(
        evidence.scopes,
        [
            ScopeEvidence {
                scope: METRICS_READ.into(),
                last_used: Some(now() - Duration::days(5)),
                sensitive: false,
            },
            ScopeEvidence {
                scope: ORDERS_READ.into(),
                last_used: Some(cutoff - Duration::days(1)),
                sensitive: false,
            },
            ScopeEvidence {
                scope: MONITORS_WRITE.into(),
                last_used: None,
                sensitive: true,
            },
            ScopeEvidence {
                scope: OKTA_APPS_READ.into(),
                last_used: Some(cutoff),
                sensitive: false,
            },
        ]
    );
    assert_eq!(
        evidence.suggested_drop,
        strings(&[ORDERS_READ, MONITORS_WRITE]),
        "unused for {unused_days} days, or never used; used exactly {unused_days} days ago is kept"
    );
    assert_eq!(evidence.credential_age_days, Some(1));

    // no token grant seen: unused means unknown, nothing is suggested
    let evidence = Evidence::build(&agent, &[], now(), &ctx(now()));
    assert!(!evidence.usage_known);
    assert!(evidence.suggested_drop.is_empty());
    assert!(evidence.scopes.iter().all(|s| s.last_used.is_none()));
    assert_eq!(evidence.scopes.len(), 4);

    // an agent younger than the period has not had the time to use its scopes
    agent.created_at = now() - Duration::days(unused_days - 1);
    let evidence = Evidence::build(&agent, &usage, now(), &ctx(now()));
    assert!(evidence.usage_known);
    assert!(evidence.suggested_drop.is_empty());
    assert_eq!(
        evidence.scopes[1].last_used,
        Some(cutoff - Duration::days(1))
    );

    // anomalies since the last review only, with the last review itself
    let reviewed_at = now() - Duration::days(60);
    agent.last_review = Some(LastReview {
        campaign: "2024-q4".into(),
        decision: "keep".into(),
        by: OWNER.into(),
        at: reviewed_at,
    });
    agent.flags = vec![
        AgentFlag::OwnerLost {
            owner: "zoe@example.com".into(),
            since: reviewed_at - Duration::days(1),
        },
        AgentFlag::FreezeRequested {
            reason: "token use from a new network".into(),
            at: now() - Duration::days(2),
        },
    ];
    let evidence = Evidence::build(&agent, &usage, now(), &ctx(now()));
    assert_eq!(
        evidence.anomalies,
        ["freeze requested: token use from a new network (2025-03-08)"]
    );
    assert_eq!(evidence.last_review, agent.last_review);
}
