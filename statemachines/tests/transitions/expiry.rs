//! Expiry scenarios.

use super::*;

scenarios![
    scenario_expiry_start_arms_deadline_and_reminder,
    scenario_expiry_start_within_reminder_lead_reminds_at_once,
    scenario_expiry_reminder_tells_the_owner_once,
    scenario_expiry_renewal_request_asks_security,
    scenario_expiry_approved_renewal_moves_the_date,
    scenario_expiry_denied_or_unanswered_renewal_keeps_the_date,
    scenario_expiry_deadline_starts_the_decommission,
    scenario_expiry_refuses_renewals_that_do_not_hold,
    scenario_expiry_refuses_early_deadline,
    scenario_expiry_ended_accepts_no_event,
];

pub(crate) fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a date")
}

pub(crate) fn reminder_lead() -> Duration {
    Duration::seconds(policy().lifecycle.expiry_reminder_secs as i64)
}

pub(crate) fn expiry_input() -> ExpiryInput {
    ExpiryInput {
        agent: active_agent(),
    }
}

/// `active_agent()` expires on 2025-12-31: decommissioned from 2026-01-01 00:00 UTC.
pub(crate) fn expiry_deadline_at() -> DateTime<Utc> {
    decommission::expiry_deadline(agent_expires_on())
}

pub(crate) fn counting() -> ExpiryState {
    started::<Expiry>(expiry_input()).state
}

pub(crate) const RENEW_UNTIL: (i32, u32, u32) = (2026, 6, 30);

pub(crate) fn renew_until() -> NaiveDate {
    ymd(RENEW_UNTIL.0, RENEW_UNTIL.1, RENEW_UNTIL.2)
}

pub(crate) fn renewal_by(by: &str) -> Event {
    renewal_requested(renew_until(), by, "the incident tooling still needs it")
}

/// The owner asked for a renewal at `t`.
pub(crate) fn awaiting_renewal_at(t: DateTime<Utc>) -> ExpiryState {
    accepted::<Expiry>(&counting(), renewal_by(OWNER), t).state
}

pub(crate) fn approval_of(state: &ExpiryState) -> &ApprovalRequest {
    match state {
        ExpiryState::AwaitingRenewal { approval, .. } => approval,
        other => panic!("expected AwaitingRenewal, got {other:?}"),
    }
}

fn scenario_expiry_start_arms_deadline_and_reminder() {
    let step = started::<Expiry>(expiry_input());
    assert_eq!(
        step.state,
        ExpiryState::Counting {
            agent: active_agent(),
            expires_on: ymd(2025, 12, 31),
            reminded: false,
        }
    );
    let deadline = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(
        expiry_deadline_at(),
        deadline,
        "the day after the expiry date, 00:00 UTC"
    );
    assert_eq!(
        timers_set(&step.commands),
        [
            (expiry::DEADLINE_TIMER, deadline),
            (expiry::REMINDER_TIMER, deadline - Duration::days(14)),
        ]
    );
    assert!(
        notifications(&step.commands).is_empty(),
        "too early to remind"
    );

    // no expiry date, nothing to watch
    let mut input = expiry_input();
    input.agent.expires_on = None;
    assert_rejected(
        start::<Expiry>(input, now()),
        "expires_on",
        "has no expiry date",
    );
}

fn scenario_expiry_start_within_reminder_lead_reminds_at_once() {
    let mut input = expiry_input();
    let expires_on = today() + chrono::Days::new(5);
    input.agent.expires_on = Some(expires_on);
    let step = started::<Expiry>(input);
    assert!(matches!(
        step.state,
        ExpiryState::Counting { reminded: true, .. }
    ));
    assert_eq!(
        timers_set(&step.commands),
        [(
            expiry::DEADLINE_TIMER,
            decommission::expiry_deadline(expires_on)
        )]
    );
    assert_eq!(timers_cancelled(&step.commands), [expiry::REMINDER_TIMER]);
    assert_eq!(notified(&step.commands), [OWNER]);
    assert!(
        notifications(&step.commands)[0]
            .1
            .contains(&expires_on.to_string())
    );
    assert!(audit_kinds(&step.commands).contains(&AuditKind::ExpiryReminded));
}

fn scenario_expiry_reminder_tells_the_owner_once() {
    let remind_at = expiry_deadline_at() - reminder_lead();
    let step = accepted::<Expiry>(&counting(), timer(expiry::REMINDER_TIMER), remind_at);
    assert!(matches!(
        step.state,
        ExpiryState::Counting { reminded: true, .. }
    ));
    let notes = notifications(&step.commands);
    assert_eq!(notified(&step.commands), [OWNER]);
    assert!(
        notes[0].1.contains("expires on 2025-12-31"),
        "{}",
        notes[0].1
    );
    assert!(
        notes[0].2.contains("steward agents renew"),
        "{}",
        notes[0].2
    );
    assert!(
        notes[0].2.contains("2026-01-01 00:00 UTC"),
        "{}",
        notes[0].2
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::ExpiryReminded).actor,
        Actor::Schedule(expiry::REMINDER_TIMER.into())
    );
    assert!(idp_commands(&step.commands).is_empty());
    assert_rejected(
        on::<Expiry>(&step.state, timer(expiry::REMINDER_TIMER), remind_at),
        "timer",
        "reminded already",
    );
}

fn scenario_expiry_renewal_request_asks_security() {
    for by in [OWNER, APPROVER] {
        let step = accepted::<Expiry>(&counting(), renewal_by(by), at(60));
        let ExpiryState::AwaitingRenewal {
            until,
            expires_on,
            approval,
            ..
        } = &step.state
        else {
            panic!("expected AwaitingRenewal, got {:?}", step.state)
        };
        assert_eq!((*until, *expires_on), (renew_until(), agent_expires_on()));
        assert_eq!(approval.action, "renew");
        assert_eq!(approval.requester, by);
        assert!(
            !approval.approvers.iter().any(|a| a == by),
            "{:?}",
            approval.approvers
        );
        assert!(
            approval.justification.contains("2026-06-30"),
            "{}",
            approval.justification
        );
        assert!(
            step.commands
                .contains(&Command::RequestApproval(approval.clone()))
        );
        assert_eq!(
            audit_of(&step.commands, AuditKind::RenewalRequested).actor,
            Actor::Person(by.into())
        );
        assert!(
            agent_changes(&step.commands).is_empty(),
            "the date moves only once approved"
        );
    }
}

fn scenario_expiry_approved_renewal_moves_the_date() {
    let awaiting = awaiting_renewal_at(now());
    let step = accepted::<Expiry>(&awaiting, approve(APPROVER), at(3600));
    let ExpiryState::Counting {
        agent,
        expires_on,
        reminded,
    } = &step.state
    else {
        panic!("expected Counting, got {:?}", step.state)
    };
    assert_eq!(*expires_on, renew_until());
    assert_eq!(agent.expires_on, Some(renew_until()));
    assert!(!reminded, "the owner is reminded again before the new date");
    assert_eq!(
        agent_changes(&step.commands),
        [&AgentChange::ExpiresOn {
            date: renew_until()
        }]
    );
    let new_deadline = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
    assert_eq!(
        timers_set(&step.commands),
        [
            (expiry::DEADLINE_TIMER, new_deadline),
            (expiry::REMINDER_TIMER, new_deadline - reminder_lead()),
        ]
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::Renewed).actor,
        Actor::Person(APPROVER.into())
    );
    // the old deadline no longer ends the agent
    assert_rejected(
        on::<Expiry>(
            &step.state,
            timer(expiry::DEADLINE_TIMER),
            expiry_deadline_at(),
        ),
        "timer",
        "fired before 2026-06-30 ended",
    );
    let mut stored = active_agent();
    stored.apply(agent_changes(&step.commands)[0], at(3600));
    assert_eq!(stored.expires_on, Some(renew_until()));
}

fn scenario_expiry_denied_or_unanswered_renewal_keeps_the_date() {
    let awaiting = awaiting_renewal_at(now());
    let approval = approval_of(&awaiting).clone();
    let denied = accepted::<Expiry>(&awaiting, deny(APPROVER), at(3600));
    let reminded = accepted::<Expiry>(
        &awaiting,
        reminder_timer(),
        approval.remind_at.expect("the test policy reminds"),
    );
    assert_eq!(reminded.state, awaiting, "a reminder keeps waiting");
    let expired = accepted::<Expiry>(&awaiting, expiry_timer(), approval.expires_at);
    for step in [denied, expired] {
        let ExpiryState::Counting {
            expires_on, agent, ..
        } = &step.state
        else {
            panic!("expected Counting, got {:?}", step.state)
        };
        assert_eq!(*expires_on, agent_expires_on());
        assert_eq!(agent.expires_on, Some(agent_expires_on()));
        assert!(agent_changes(&step.commands).is_empty());
        assert!(
            !timers_set(&step.commands)
                .iter()
                .any(|(name, _)| *name == expiry::DEADLINE_TIMER),
            "the deadline stays armed as it was"
        );
        assert!(
            step.commands
                .iter()
                .any(|c| matches!(c, Command::CloseApproval { .. }))
        );
        // the deadline still ends it
        let ended = accepted::<Expiry>(
            &step.state,
            timer(expiry::DEADLINE_TIMER),
            expiry_deadline_at(),
        );
        assert!(matches!(ended.state, ExpiryState::Ended { .. }));
    }
}

fn scenario_expiry_deadline_starts_the_decommission() {
    let step = accepted::<Expiry>(
        &counting(),
        timer(expiry::DEADLINE_TIMER),
        expiry_deadline_at(),
    );
    assert_eq!(
        step.state,
        ExpiryState::Ended {
            agent: active_agent(),
            expires_on: agent_expires_on(),
        }
    );
    assert!(Expiry::is_terminal(&step.state));
    assert!(step.commands.contains(&Command::StartDecommission {
        agent_id: AGENT_ID.into(),
        reason: DecommissionReason::Expired {
            expires_on: agent_expires_on()
        },
    }));
    assert_eq!(timers_cancelled(&step.commands), [expiry::REMINDER_TIMER]);
    assert!(
        idp_commands(&step.commands).is_empty(),
        "the decommission does the revoking"
    );

    // a renewal still undecided when the date passes is withdrawn
    let asked_at = expiry_deadline_at() - Duration::hours(1);
    let awaiting = awaiting_renewal_at(asked_at);
    let step = accepted::<Expiry>(
        &awaiting,
        timer(expiry::DEADLINE_TIMER),
        expiry_deadline_at(),
    );
    assert!(matches!(step.state, ExpiryState::Ended { .. }));
    assert!(step.commands.iter().any(|c| matches!(
        c,
        Command::CloseApproval {
            outcome: ApprovalOutcome::Cancelled { .. },
            ..
        }
    )));
    assert!(
        timers_cancelled(&step.commands).contains(&APPROVAL_EXPIRY_TIMER),
        "{:?}",
        step.commands
    );
    assert!(step.commands.iter().any(|c| matches!(
        c,
        Command::StartDecommission {
            reason: DecommissionReason::Expired { .. },
            ..
        }
    )));
}

fn scenario_expiry_refuses_renewals_that_do_not_hold() {
    let counting = counting();
    for until in [agent_expires_on(), ymd(2025, 6, 1)] {
        assert_rejected(
            on::<Expiry>(
                &counting,
                renewal_requested(until, OWNER, "still needed"),
                at(60),
            ),
            "until",
            "must move the expiry date 2025-12-31 later",
        );
    }
    assert_rejected(
        on::<Expiry>(&counting, renewal_by(OUTSIDER), at(60)),
        "by",
        "is neither the owner",
    );
    assert_rejected(
        on::<Expiry>(
            &counting,
            renewal_requested(renew_until(), OWNER, "  "),
            at(60),
        ),
        "reason",
        "say why",
    );
    // every problem at once
    let both = assert_rejected(
        on::<Expiry>(
            &counting,
            renewal_requested(renew_until(), OUTSIDER, ""),
            at(60),
        ),
        "by",
        "is neither the owner",
    );
    assert_eq!(both.reasons.len(), 2, "{both}");
    // one renewal at a time
    assert_rejected(
        on::<Expiry>(&awaiting_renewal_at(now()), renewal_by(OWNER), at(60)),
        "event",
        "does not apply to expiry in state AwaitingRenewal",
    );
    // the requester does not approve their own renewal
    assert_rejected(
        on::<Expiry>(&awaiting_renewal_at(now()), approve(OWNER), at(60)),
        "approver",
        "cannot approve it",
    );
}

fn scenario_expiry_refuses_early_deadline() {
    let early = expiry_deadline_at() - Duration::seconds(1);
    assert_rejected(
        on::<Expiry>(&counting(), timer(expiry::DEADLINE_TIMER), early),
        "timer",
        "fired before 2025-12-31 ended",
    );
    let awaiting = awaiting_renewal_at(expiry_deadline_at() - Duration::hours(1));
    assert_rejected(
        on::<Expiry>(&awaiting, timer(expiry::DEADLINE_TIMER), early),
        "timer",
        "fired before 2025-12-31 ended",
    );
}

fn scenario_expiry_ended_accepts_no_event() {
    let ended = accepted::<Expiry>(
        &counting(),
        timer(expiry::DEADLINE_TIMER),
        expiry_deadline_at(),
    )
    .state;
    for event in every_lifecycle_event() {
        let expected = format!("{} does not apply to expiry in state Ended", event.label());
        assert_rejected(
            on::<Expiry>(&ended, event, expiry_deadline_at() + Duration::days(1)),
            "event",
            &expected,
        );
    }
}
