//! Access-review campaign scenarios.

use super::*;

scenarios![
    scenario_campaign_start_launches_round_one_and_arms_the_close_timer,
    scenario_campaign_launches_in_rounds_until_every_item_is_out,
    scenario_campaign_closes_at_its_deadline,
    scenario_campaign_deadline_during_launch_closes_after_the_last_round,
    scenario_campaign_launch_failure_fails_and_tells_security,
    scenario_campaign_refuses_a_deadline_not_in_the_future_or_a_bad_id,
    scenario_campaign_words_the_notice_owners_need_in_its_largest_whole_unit,
    scenario_campaign_refuses_a_launch_report_of_another_round,
    scenario_campaign_refuses_an_early_close_timer_and_ended_campaigns_accept_no_event,
];

pub(crate) const CAMPAIGN_ID: &str = "2025-q1";
pub(crate) const CAMPAIGN_NAME: &str = "Q1 2025 access review";

/// Launched at `now()` with the policy's duration: 2025-03-24 09:00 UTC.
pub(crate) fn campaign_deadline() -> DateTime<Utc> {
    now() + Duration::seconds(policy().reviews.duration_secs as i64)
}

pub(crate) fn campaign_with(unanswered: Unanswered) -> Campaign {
    Campaign {
        id: CAMPAIGN_ID.into(),
        name: CAMPAIGN_NAME.into(),
        scope: CampaignScope::default(),
        started_by: Actor::Person(APPROVER.into()),
        started_at: now(),
        deadline: campaign_deadline(),
        unanswered,
    }
}

pub(crate) fn campaign_input() -> CampaignInput {
    CampaignInput {
        campaign: campaign_with(Unanswered::KeepAndFlag),
    }
}

pub(crate) fn launching() -> CampaignState {
    started::<ReviewCampaign>(campaign_input()).state
}

/// Every item went out in one round of `items`.
pub(crate) fn reviewing(items: u64) -> CampaignState {
    accepted::<ReviewCampaign>(&launching(), reviews_launched(1, items, false), at(60)).state
}

pub(crate) fn launch_reviews(round: u32) -> Command {
    Command::LaunchReviews {
        campaign_id: CAMPAIGN_ID.into(),
        round,
    }
}

pub(crate) fn launch_commands(commands: &[Command]) -> Vec<&Command> {
    commands
        .iter()
        .filter(|c| matches!(c, Command::LaunchReviews { .. }))
        .collect()
}

pub(crate) fn close_timer() -> Event {
    timer(review_campaign::CLOSE_TIMER)
}

/// The close of a campaign: audited by the close timer, announced to the security channel.
pub(crate) fn assert_campaign_closed(commands: &[Command], items: u64) {
    let audit = audit_of(commands, AuditKind::CampaignClosed);
    assert_eq!(
        audit.actor,
        Actor::Schedule(review_campaign::CLOSE_TIMER.into())
    );
    assert!(
        audit.message.contains(&format!("campaign {CAMPAIGN_ID}"))
            && audit.message.contains(&format!("{items} items"))
            && audit.message.contains("keep_and_flag"),
        "{}",
        audit.message
    );
    let notes = notifications(commands);
    assert_eq!(notified(commands), [SECURITY_CHANNEL]);
    assert!(notes[0].1.contains(CAMPAIGN_NAME), "{}", notes[0].1);
    assert!(
        notes[0].2.contains(&format!("{items} review items"))
            && notes[0].2.contains("keep_and_flag")
            && notes[0]
                .2
                .contains(&format!("steward campaigns report {CAMPAIGN_ID}")),
        "{}",
        notes[0].2
    );
    assert!(launch_commands(commands).is_empty());
}

fn scenario_campaign_start_launches_round_one_and_arms_the_close_timer() {
    let step = started::<ReviewCampaign>(campaign_input());
    assert_eq!(
        step.state,
        CampaignState::Launching {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            launched: 0,
            round: 1,
            deadline_passed: false,
        }
    );
    assert!(!ReviewCampaign::is_terminal(&step.state));
    assert_eq!(
        timers_set(&step.commands),
        [(review_campaign::CLOSE_TIMER, campaign_deadline())]
    );
    assert_eq!(launch_commands(&step.commands), [&launch_reviews(1)]);
    let audit = audit_of(&step.commands, AuditKind::CampaignLaunched);
    assert_eq!(audit.actor, Actor::Person(APPROVER.into()));
    assert!(audit.success);
    for part in [
        "campaign 2025-q1",
        APPROVER,
        "all active agents",
        "keep_and_flag",
        &campaign_deadline().to_rfc3339(),
    ] {
        assert!(audit.message.contains(part), "{part}: {}", audit.message);
    }
    assert!(
        notifications(&step.commands).is_empty(),
        "owners hear from their items"
    );
}

fn scenario_campaign_launches_in_rounds_until_every_item_is_out() {
    let batch = u64::from(policy().reviews.launch_batch);
    let round1 = accepted::<ReviewCampaign>(&launching(), reviews_launched(1, batch, true), at(60));
    assert_eq!(
        round1.state,
        CampaignState::Launching {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            launched: batch,
            round: 2,
            deadline_passed: false,
        }
    );
    assert_eq!(round1.commands, [launch_reviews(2)], "the next round only");

    let round2 =
        accepted::<ReviewCampaign>(&round1.state, reviews_launched(2, 150, false), at(120));
    assert_eq!(
        round2.state,
        CampaignState::Reviewing {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            items: batch + 150,
        }
    );
    assert!(!ReviewCampaign::is_terminal(&round2.state));
    assert!(launch_commands(&round2.commands).is_empty());
    let audit = audit_of(&round2.commands, AuditKind::CampaignLaunched);
    assert_eq!(audit.actor, Actor::System);
    assert!(
        audit.message.contains(&format!(
            "{} review items sent to their owners",
            batch + 150
        )),
        "{}",
        audit.message
    );
    assert!(
        timers_set(&round2.commands).is_empty(),
        "the close timer stays as armed at the start"
    );
}

fn scenario_campaign_closes_at_its_deadline() {
    let reviewing = reviewing(42);
    let step = accepted::<ReviewCampaign>(&reviewing, close_timer(), campaign_deadline());
    assert_eq!(
        step.state,
        CampaignState::Closed {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            items: 42,
            closed_at: campaign_deadline(),
        }
    );
    assert!(ReviewCampaign::is_terminal(&step.state));
    assert_campaign_closed(&step.commands, 42);
}

fn scenario_campaign_deadline_during_launch_closes_after_the_last_round() {
    let passed = accepted::<ReviewCampaign>(&launching(), close_timer(), campaign_deadline());
    assert_eq!(
        passed.state,
        CampaignState::Launching {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            launched: 0,
            round: 1,
            deadline_passed: true,
        }
    );
    assert!(
        passed.commands.is_empty(),
        "nothing closes while items are being sent"
    );

    // After the deadline no further round starts: items nobody could answer get no default.
    let late = campaign_deadline() + Duration::minutes(5);
    let last = accepted::<ReviewCampaign>(&passed.state, reviews_launched(1, 2000, true), late);
    assert_eq!(
        last.state,
        CampaignState::Closed {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            items: 2000,
            closed_at: late,
        }
    );
    assert!(ReviewCampaign::is_terminal(&last.state));
    assert!(
        !last.commands.contains(&launch_reviews(2)),
        "no round after the deadline"
    );
    assert_campaign_closed(&last.commands, 2000);
}

fn scenario_campaign_launch_failure_fails_and_tells_security() {
    let round2 =
        accepted::<ReviewCampaign>(&launching(), reviews_launched(1, 2000, true), at(60)).state;
    let step =
        accepted::<ReviewCampaign>(&round2, command_failed("workflow.launch_reviews"), at(120));
    assert_eq!(
        step.state,
        CampaignState::Failed {
            campaign: campaign_with(Unanswered::KeepAndFlag),
            launched: 2000,
            reason: "403 Forbidden".into(),
        }
    );
    assert!(ReviewCampaign::is_terminal(&step.state));
    let audit = audit_of(&step.commands, AuditKind::CampaignLaunched);
    assert!(!audit.success);
    assert!(
        audit
            .message
            .contains("the launch stopped after 2000 items: 403 Forbidden"),
        "{}",
        audit.message
    );
    let notes = notifications(&step.commands);
    assert_eq!(notified(&step.commands), [SECURITY_CHANNEL]);
    assert!(notes[0].1.contains(CAMPAIGN_NAME), "{}", notes[0].1);
    assert!(
        notes[0].2.contains(&format!(
            "stay open until {}",
            campaign_deadline().to_rfc3339()
        )),
        "{}",
        notes[0].2
    );
    assert!(launch_commands(&step.commands).is_empty());

    // another command's failure is not the launch's
    assert_rejected(
        on::<ReviewCampaign>(&round2, command_failed("review.ask"), at(120)),
        "event",
        "CommandFailed does not apply to review_campaign in state Launching",
    );
}

fn scenario_campaign_refuses_a_deadline_not_in_the_future_or_a_bad_id() {
    // Owners get at least the policy's escalation notice (3 days) to answer before an
    // unanswered item gets the default; past, now, seconds away and a day short are refused.
    let notice = Duration::seconds(policy().reviews.escalate_before_secs as i64);
    assert_eq!(notice, Duration::days(3));
    for deadline in [
        now() - Duration::days(1),
        now(),
        now() + Duration::seconds(30),
        now() + notice - Duration::seconds(1),
    ] {
        let mut input = campaign_input();
        input.campaign.deadline = deadline;
        assert_rejected(
            start::<ReviewCampaign>(input, now()),
            "deadline",
            &format!(
                "deadline {} leaves owners less than 3 days to answer",
                deadline.to_rfc3339()
            ),
        );
    }
    let mut input = campaign_input();
    input.campaign.deadline = now() + notice;
    start::<ReviewCampaign>(input, now()).expect("exactly the notice is enough");
    // More than a year away is a typo.
    let mut input = campaign_input();
    input.campaign.deadline = now() + Duration::days(367);
    assert_rejected(
        start::<ReviewCampaign>(input, now()),
        "deadline",
        "is more than 366 days away",
    );
    let too_long = "a".repeat(41);
    for id in [
        "",
        "Q1-2025",
        "2025_q1",
        "2025 q1",
        "-2025-q1",
        "2025/q1",
        "ü",
        too_long.as_str(),
    ] {
        let refused = review_campaign::check_id(id).expect_err(id);
        assert_eq!(refused.reasons.len(), 1, "{refused}");
        assert_eq!(refused.reasons[0].field, "id", "{refused}");
        let mut input = campaign_input();
        input.campaign.id = id.into();
        assert_rejected(
            start::<ReviewCampaign>(input, now()),
            "id",
            "must be 1 to 40 lowercase letters, digits and dashes",
        );
    }
    let forty = "a".repeat(40);
    for id in ["2025-q4", "q1", "7", forty.as_str()] {
        assert_eq!(review_campaign::check_id(id), Ok(()), "{id}");
    }
    // a campaign needs a name; every problem at once
    let mut input = campaign_input();
    input.campaign.name = "  ".into();
    input.campaign.deadline = now();
    let both = assert_rejected(
        start::<ReviewCampaign>(input, now()),
        "name",
        "a campaign needs a name",
    );
    assert_eq!(both.reasons.len(), 2, "{both}");
}

fn scenario_campaign_refuses_a_launch_report_of_another_round() {
    let launching = launching();
    for round in [0, 2] {
        assert_rejected(
            on::<ReviewCampaign>(&launching, reviews_launched(round, 10, false), at(60)),
            "round",
            &format!("launch round {round} is not the current round 1"),
        );
    }
    // a repeated report of a round already counted counts nothing twice
    let round2 =
        accepted::<ReviewCampaign>(&launching, reviews_launched(1, 10, true), at(60)).state;
    assert_rejected(
        on::<ReviewCampaign>(&round2, reviews_launched(1, 10, false), at(120)),
        "round",
        "launch round 1 is not the current round 2",
    );
    // once every item is out, no launch report applies
    assert_rejected(
        on::<ReviewCampaign>(&reviewing(10), reviews_launched(2, 10, false), at(120)),
        "event",
        "ReviewsLaunched does not apply to review_campaign in state Reviewing",
    );
}

fn scenario_campaign_refuses_an_early_close_timer_and_ended_campaigns_accept_no_event() {
    let early = campaign_deadline() - Duration::seconds(1);
    assert_rejected(
        on::<ReviewCampaign>(&launching(), close_timer(), early),
        "event",
        "TimerFired does not apply to review_campaign in state Launching",
    );
    assert_rejected(
        on::<ReviewCampaign>(&reviewing(10), close_timer(), early),
        "event",
        "TimerFired does not apply to review_campaign in state Reviewing",
    );
    // an item's timer is not the campaign's
    assert_rejected(
        on::<ReviewCampaign>(
            &reviewing(10),
            timer(review_item::DEADLINE_TIMER),
            campaign_deadline(),
        ),
        "event",
        "TimerFired does not apply to review_campaign in state Reviewing",
    );

    let closed =
        accepted::<ReviewCampaign>(&reviewing(10), close_timer(), campaign_deadline()).state;
    let failed = accepted::<ReviewCampaign>(
        &launching(),
        command_failed("workflow.launch_reviews"),
        at(60),
    )
    .state;
    for (state, name) in [(closed, "Closed"), (failed, "Failed")] {
        for event in every_review_event() {
            let expected = format!(
                "{} does not apply to review_campaign in state {name}",
                event.label()
            );
            assert_rejected(
                on::<ReviewCampaign>(&state, event, campaign_deadline() + Duration::days(1)),
                "event",
                &expected,
            );
        }
    }
}

/// A deadline too soon is refused with the notice owners need, worded in the largest unit it is
/// a whole number of: days, then hours, then minutes, else seconds.
fn scenario_campaign_words_the_notice_owners_need_in_its_largest_whole_unit() {
    for (escalate_before_secs, worded) in [
        (3 * 86_400, "3 days"),
        (86_400, "1 days"),
        (90_000, "25 h"),
        (7_200, "2 h"),
        (3_600, "1 h"),
        (3_660, "61 min"),
        (120, "2 min"),
        (60, "1 min"),
        (90, "90 s"),
        (30, "30 s"),
    ] {
        let mut p = policy().clone();
        p.reviews.escalate_before_secs = escalate_before_secs;
        let ctx = statemachines::Ctx {
            now: now(),
            policy: &p,
            workflow_id: WORKFLOW_ID,
        };
        let mut input = campaign_input();
        input.campaign.deadline = now();
        assert_rejected(
            statemachines::workflow::start::<ReviewCampaign>(input, &ctx),
            "deadline",
            &format!("leaves owners less than {worded} to answer"),
        );
    }
}
