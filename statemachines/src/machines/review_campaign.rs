//! Access-review campaign: one review item per agent in scope, each sent to the agent's owner
//! (see `review_item`). The campaign itself only launches the items, in bounded rounds the
//! engine runs (`Command::LaunchReviews`), and closes at its deadline; what each item became is
//! read from the items for progress and the evidence report.
//!
//! Launching --(ReviewsLaunched, more)--> Launching --(ReviewsLaunched, done)--> Reviewing
//! --(deadline timer)--> Closed. A launch that fails for good ends as Failed (items already
//! sent stay open and keep their own deadline).

use crate::command::{Actor, AuditEvent, AuditKind, Command, SECURITY_CHANNEL};
use crate::event::Event;
use crate::policy::reason;
pub use crate::review::{Campaign, CampaignScope, Risk, Unanswered, check_id};
use crate::workflow::{
    Ctx, Rejected, START, Step, Transition, Workflow, not_applicable, states, t,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The timer that closes the campaign at its deadline.
pub const CLOSE_TIMER: &str = "campaign-close";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignInput {
    pub campaign: Campaign,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum CampaignState {
    /// Items are being created and sent, a round at a time.
    Launching {
        campaign: Campaign,
        launched: u64,
        round: u32,
        /// The deadline passed while still launching: close when the launch ends.
        #[serde(default)]
        deadline_passed: bool,
    },
    /// Every item is out; owners are answering.
    Reviewing { campaign: Campaign, items: u64 },
    /// The deadline passed; unanswered items got the default (each item applies it).
    Closed {
        campaign: Campaign,
        items: u64,
        closed_at: DateTime<Utc>,
    },
    /// The launch failed for good; items already out stay open until their deadline.
    Failed {
        campaign: Campaign,
        launched: u64,
        reason: String,
    },
}

impl CampaignState {
    pub fn campaign(&self) -> &Campaign {
        match self {
            Self::Launching { campaign, .. }
            | Self::Reviewing { campaign, .. }
            | Self::Closed { campaign, .. }
            | Self::Failed { campaign, .. } => campaign,
        }
    }
}

/// Owners' least time to answer when the policy escalates nothing (`escalate_before = 0`).
pub const MIN_NOTICE_SECS: u64 = 3600;
/// The furthest deadline a campaign may have.
pub const MAX_DAYS: i64 = 366;

pub struct ReviewCampaign;

fn campaign_audit(campaign: &Campaign, kind: AuditKind, actor: Actor, message: String) -> Command {
    Command::Audit(AuditEvent {
        kind,
        actor,
        agent_id: String::new(),
        agent_name: String::new(),
        approval_id: None,
        scopes: vec![],
        success: true,
        message: format!("campaign {}: {message}", campaign.id),
    })
}

fn launch(campaign: &Campaign, round: u32) -> Command {
    Command::LaunchReviews {
        campaign_id: campaign.id.clone(),
        round,
    }
}

fn close(campaign: &Campaign, items: u64, now: DateTime<Utc>) -> Step<CampaignState> {
    Step {
        commands: vec![
            campaign_audit(
                campaign,
                AuditKind::CampaignClosed,
                Actor::Schedule(CLOSE_TIMER.into()),
                format!(
                    "closed at its deadline with {items} items; unanswered items get the default ({})",
                    campaign.unanswered.as_str()
                ),
            ),
            Command::Notify {
                to: SECURITY_CHANNEL.into(),
                subject: format!("Access review {} closed", campaign.name),
                body: format!(
                    "{} closed with {items} review items. Unanswered items get the policy default ({}). Evidence: `steward campaigns report {}`.",
                    campaign.name,
                    campaign.unanswered.as_str(),
                    campaign.id
                ),
            },
        ],
        state: CampaignState::Closed {
            campaign: campaign.clone(),
            items,
            closed_at: now,
        },
    }
}

states! {
    CampaignState {
        Launching,
        Reviewing,
        Closed: terminal,
        Failed: terminal,
    }
}

impl Workflow for ReviewCampaign {
    type State = CampaignState;
    type Input = CampaignInput;
    const KIND: &'static str = "review_campaign";
    const TRANSITIONS: &'static [Transition] = &[
        t(START, "start", "Launching"),
        t("Launching", "ReviewsLaunched", "Launching"),
        t("Launching", "ReviewsLaunched", "Reviewing"),
        t("Launching", "ReviewsLaunched", "Closed"),
        t("Launching", "TimerFired", "Launching"),
        t("Launching", "CommandFailed", "Failed"),
        t("Reviewing", "TimerFired", "Closed"),
    ];

    fn start(input: CampaignInput, ctx: &Ctx) -> Result<Step<CampaignState>, Rejected> {
        let campaign = input.campaign;
        check_id(&campaign.id)?;
        let mut reasons = Vec::new();
        if campaign.name.trim().is_empty() {
            reasons.push(reason("name", "a campaign needs a name"));
        }
        // An unanswered item gets the default at the deadline (revoke decommissions with no
        // further approval): owners get at least the escalation's notice to answer, and a
        // deadline more than a year away is a typo, not a review.
        let least = match ctx.policy.reviews.escalate_before_secs {
            0 => MIN_NOTICE_SECS,
            s => s,
        };
        let earliest = ctx.now + chrono::Duration::seconds(least as i64);
        if campaign.deadline < earliest {
            reasons.push(reason(
                "deadline",
                format!(
                    "deadline {} leaves owners less than {} to answer (the policy's escalation notice); give a deadline after {}",
                    campaign.deadline.to_rfc3339(),
                    crate::policy::describe_secs(least),
                    earliest.to_rfc3339()
                ),
            ));
        }
        if campaign.deadline > ctx.now + chrono::Duration::days(MAX_DAYS) {
            reasons.push(reason(
                "deadline",
                format!(
                    "deadline {} is more than {MAX_DAYS} days away",
                    campaign.deadline.to_rfc3339()
                ),
            ));
        }
        Rejected::from_reasons(reasons)?;
        Ok(Step {
            commands: vec![
                campaign_audit(
                    &campaign,
                    AuditKind::CampaignLaunched,
                    campaign.started_by.clone(),
                    format!(
                        "launched by {} for {}, due {}, unanswered → {}",
                        campaign.started_by.describe(),
                        campaign.scope.describe(),
                        campaign.deadline.to_rfc3339(),
                        campaign.unanswered.as_str()
                    ),
                ),
                Command::SetTimer {
                    name: CLOSE_TIMER.into(),
                    at: campaign.deadline,
                },
                launch(&campaign, 1),
            ],
            state: CampaignState::Launching {
                campaign,
                launched: 0,
                round: 1,
                deadline_passed: false,
            },
        })
    }

    fn on(state: &CampaignState, event: Event, ctx: &Ctx) -> Result<Step<CampaignState>, Rejected> {
        use CampaignState as S;
        match (state, event) {
            (
                S::Launching {
                    campaign,
                    launched,
                    round,
                    deadline_passed,
                },
                Event::ReviewsLaunched {
                    round: r,
                    launched: n,
                    more,
                },
            ) => {
                if r != *round {
                    return Err(Rejected::new(
                        "round",
                        format!("launch round {r} is not the current round {round}"),
                    ));
                }
                let total = launched + n;
                // After the deadline no new items: an item nobody could answer gets no default.
                if more && !*deadline_passed {
                    return Ok(Step {
                        commands: vec![launch(campaign, round + 1)],
                        state: S::Launching {
                            campaign: campaign.clone(),
                            launched: total,
                            round: round + 1,
                            deadline_passed: *deadline_passed,
                        },
                    });
                }
                if *deadline_passed {
                    return Ok(close(campaign, total, ctx.now));
                }
                Ok(Step {
                    commands: vec![campaign_audit(
                        campaign,
                        AuditKind::CampaignLaunched,
                        Actor::System,
                        format!("{total} review items sent to their owners"),
                    )],
                    state: S::Reviewing {
                        campaign: campaign.clone(),
                        items: total,
                    },
                })
            }
            (
                S::Launching {
                    campaign,
                    launched,
                    round,
                    ..
                },
                Event::TimerFired { name },
            ) if name == CLOSE_TIMER && ctx.now >= campaign.deadline => Ok(Step {
                commands: vec![],
                state: S::Launching {
                    campaign: campaign.clone(),
                    launched: *launched,
                    round: *round,
                    deadline_passed: true,
                },
            }),
            (
                S::Launching {
                    campaign, launched, ..
                },
                Event::CommandFailed {
                    command, reason, ..
                },
            ) if command == "workflow.launch_reviews" => Ok(Step {
                commands: vec![
                    Command::CancelTimer {
                        name: CLOSE_TIMER.into(),
                    },
                    Command::Audit(AuditEvent {
                        kind: AuditKind::CampaignLaunched,
                        actor: Actor::System,
                        agent_id: String::new(),
                        agent_name: String::new(),
                        approval_id: None,
                        scopes: vec![],
                        success: false,
                        message: format!(
                            "campaign {}: the launch stopped after {launched} items: {reason}",
                            campaign.id
                        ),
                    }),
                    Command::Notify {
                        to: SECURITY_CHANNEL.into(),
                        subject: format!("Access review {} did not launch fully", campaign.name),
                        body: format!(
                            "The launch stopped after {launched} review items: {reason}. The items already sent stay open until {}.",
                            campaign.deadline.to_rfc3339()
                        ),
                    },
                ],
                state: S::Failed {
                    campaign: campaign.clone(),
                    launched: *launched,
                    reason,
                },
            }),
            (S::Reviewing { campaign, items }, Event::TimerFired { name })
                if name == CLOSE_TIMER && ctx.now >= campaign.deadline =>
            {
                Ok(close(campaign, *items, ctx.now))
            }
            (s, e) => Err(not_applicable(Self::KIND, Self::state_name(s), &e)),
        }
    }
}
