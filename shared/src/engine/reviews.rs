//! Access-review campaigns: launching (in bounded, resumable rounds), answering items, carrying
//! out decisions, progress and the evidence report.

use super::executor::ExecError;
use super::message::Message;
use super::workflows::{self, StartInput};
use super::{Engine, EngineError, Started, runs, short_hash};
use crate::ports::outbox::Batch;
use crate::ports::store::{Instance, StoreError};
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use statemachines::decommission::DecommissionReason;
use statemachines::review_campaign::{
    Campaign, CampaignInput, CampaignScope, CampaignState, ReviewCampaign, Unanswered,
};
use statemachines::review_item::{
    ReviewAction, ReviewDecision, ReviewItemInput, ReviewItemMachine, ReviewItemState, check_drop,
    check_reviewer,
};
use statemachines::scope_change::ScopeChangeRequest;
use statemachines::{Actor, Event, Rejected, Workflow};
use std::collections::HashMap;
use std::time::Duration;

/// Agents read per page when a campaign walks the registry.
const REGISTRY_PAGE: usize = 500;

/// The group every campaign instance belongs to (for listing campaigns).
pub const CAMPAIGNS_GROUP: &str = "campaigns";
/// Items written per durable batch while launching.
const LAUNCH_COMMIT_CHUNK: usize = 500;

/// A request to launch a campaign (CLI, API, or the schedule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    /// Short id, e.g. `2026-q4`; also the default name.
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scope: CampaignScope,
    /// When answers are due; default: now + the policy's `reviews.answer_within`.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// What unanswered items get; default: the policy's `reviews.unanswered`.
    #[serde(default)]
    pub unanswered: Option<Unanswered>,
}

/// Where a campaign stands (the CLI draws its progress bar from this).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignProgress {
    pub id: String,
    pub name: String,
    pub state: String,
    pub scope: String,
    pub deadline: Option<DateTime<Utc>>,
    pub unanswered_default: String,
    pub items: u64,
    pub open: u64,
    pub escalated: u64,
    pub applying: u64,
    pub decided: u64,
    pub keep: u64,
    pub reduce: u64,
    pub revoke: u64,
    /// Items the deadline resolved with the default.
    pub defaulted: u64,
    /// Decisions whose action failed.
    pub action_failed: u64,
    /// Whether `open`, `escalated`, `applying` and `decided` were counted. A list of campaigns
    /// counts them from the items' states where the store keeps those together (SQLite);
    /// elsewhere only a campaign's own progress reads its items.
    #[serde(default)]
    pub counted: bool,
}

/// One line of the evidence report: an item, who decided what and when, what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    pub item_id: String,
    pub agent_id: String,
    pub agent: String,
    pub owner: String,
    pub team: String,
    pub environment: String,
    pub scopes: Vec<String>,
    pub suggested_drop: Vec<String>,
    pub sent_at: DateTime<Utc>,
    pub status: String,
    /// `keep`, `reduce`, `revoke`, `unanswered`, or empty while open.
    pub decision: String,
    pub dropped: Vec<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub time_to_decision_secs: Option<i64>,
    pub escalated: bool,
    pub default_applied: Option<String>,
    pub reason: Option<String>,
    /// `scope_change`, `decommission`, `freeze`, `flag`.
    pub action: Option<String>,
    pub action_workflow: Option<String>,
    pub action_ok: Option<bool>,
    pub action_detail: Option<String>,
    /// The action workflow's state when the report was made (e.g. `Applied`, `Decommissioned`).
    pub action_state: Option<String>,
}

/// The campaign report: access-certification evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CampaignReport {
    pub campaign: Campaign,
    pub state: String,
    pub generated_at: DateTime<Utc>,
    pub progress: CampaignProgress,
    pub median_time_to_decision_secs: Option<i64>,
    pub items: Vec<ReportRow>,
}

/// CSV columns of the report, in order.
pub const REPORT_COLUMNS: [&str; 22] = [
    "item_id",
    "agent_id",
    "agent",
    "owner",
    "team",
    "environment",
    "scopes",
    "suggested_drop",
    "sent_at",
    "status",
    "decision",
    "dropped",
    "decided_by",
    "decided_at",
    "time_to_decision_secs",
    "escalated",
    "default_applied",
    "reason",
    "action",
    "action_workflow",
    "action_ok",
    "action_detail",
];

impl CampaignReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize")
    }

    /// One row per item (RFC 4180: fields with commas, quotes or line breaks are quoted; a
    /// cell a spreadsheet would run as a formula is written as text).
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(vec![]);
        let _ = w.write_record(REPORT_COLUMNS);
        let t = |d: &Option<DateTime<Utc>>| d.map(|d| d.to_rfc3339()).unwrap_or_default();
        for r in &self.items {
            let row = [
                r.item_id.clone(),
                r.agent_id.clone(),
                r.agent.clone(),
                r.owner.clone(),
                r.team.clone(),
                r.environment.clone(),
                r.scopes.join(" "),
                r.suggested_drop.join(" "),
                r.sent_at.to_rfc3339(),
                r.status.clone(),
                r.decision.clone(),
                r.dropped.join(" "),
                r.decided_by.clone().unwrap_or_default(),
                t(&r.decided_at),
                r.time_to_decision_secs
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                r.escalated.to_string(),
                r.default_applied.clone().unwrap_or_default(),
                r.reason.clone().unwrap_or_default(),
                r.action.clone().unwrap_or_default(),
                r.action_workflow.clone().unwrap_or_default(),
                r.action_ok.map(|b| b.to_string()).unwrap_or_default(),
                r.action_detail.clone().unwrap_or_default(),
            ];
            let _ = w.write_record(row.iter().map(|c| crate::spreadsheet::cell(c).into_owned()));
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }

    /// A short summary for people (and auditors) to read first.
    pub fn to_markdown(&self) -> String {
        let c = &self.campaign;
        let p = &self.progress;
        let mut out = format!(
            "# Access review {} ({})\n\n\
             - Scope: {}\n- Launched: {} by {}\n- Deadline: {}\n- State: {}\n\
             - Unanswered items get: {}\n- Report generated: {}\n\n\
             ## Outcome\n\n| | items |\n|---|---:|\n\
             | reviewed | {} |\n| kept | {} |\n| reduced | {} |\n| revoked | {} |\n\
             | unanswered (default applied) | {} |\n| still open | {} |\n| actions that failed | {} |\n\n",
            c.name,
            c.id,
            c.scope.describe(),
            c.started_at.to_rfc3339(),
            c.started_by.describe(),
            c.deadline.to_rfc3339(),
            self.state,
            c.unanswered.as_str(),
            self.generated_at.to_rfc3339(),
            p.items,
            p.keep,
            p.reduce,
            p.revoke,
            p.defaulted,
            p.open + p.escalated,
            p.action_failed,
        );
        if let Some(m) = self.median_time_to_decision_secs {
            out.push_str(&format!(
                "Median time to decision: {}.\n\n",
                humantime::format_duration(Duration::from_secs(m.max(0) as u64))
            ));
        }
        let unanswered: Vec<&ReportRow> = self
            .items
            .iter()
            .filter(|r| r.default_applied.is_some())
            .collect();
        if !unanswered.is_empty() {
            out.push_str(
                "## Unanswered items\n\n| agent | owner | default | result |\n|---|---|---|---|\n",
            );
            for r in unanswered {
                out.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    r.agent,
                    r.owner,
                    r.default_applied.as_deref().unwrap_or(""),
                    r.action_detail.as_deref().unwrap_or("")
                ));
            }
            out.push('\n');
        }
        let failed: Vec<&ReportRow> = self
            .items
            .iter()
            .filter(|r| r.action_ok == Some(false))
            .collect();
        if !failed.is_empty() {
            out.push_str("## Actions that failed\n\n| agent | decision | why |\n|---|---|---|\n");
            for r in failed {
                out.push_str(&format!(
                    "| {} | {} | {} |\n",
                    r.agent,
                    r.decision,
                    r.action_detail.as_deref().unwrap_or("")
                ));
            }
            out.push('\n');
        }
        out.push_str(
            "Per-item evidence (who decided what and when, the actions and their results) is in the JSON and CSV exports of this report; every decision is also in the hash-chained audit trail.\n",
        );
        out
    }
}

/// The id of the scheduled campaign for the period containing `now` (`2026-q4`, `2026-11`,
/// `2026-h2`, `2026`), or `None` when campaigns are not scheduled.
pub fn scheduled_id(every_months: u32, now: DateTime<Utc>) -> Option<String> {
    let (y, m) = (now.year(), now.month());
    match every_months {
        0 => None,
        1 => Some(format!("{y}-{m:02}")),
        3 => Some(format!("{y}-q{}", (m - 1) / 3 + 1)),
        6 => Some(format!("{y}-h{}", (m - 1) / 6 + 1)),
        12 => Some(format!("{y}")),
        n => Some(format!("{y}-p{}", (m - 1) / n + 1)),
    }
}

fn campaign_of(instance: &Instance) -> Result<CampaignState, StoreError> {
    serde_json::from_value(instance.state.clone())
        .map_err(|e| StoreError::Corrupt(instance.id.clone(), e.to_string()))
}

fn item_of(instance: &Instance) -> Result<ReviewItemState, StoreError> {
    serde_json::from_value(instance.state.clone())
        .map_err(|e| StoreError::Corrupt(instance.id.clone(), e.to_string()))
}

impl Engine {
    /// Launches a campaign: checks it, then starts its workflow, which sends the items in
    /// rounds. The same id with the same request is recognised (nothing new starts); the same
    /// id with another request is refused.
    pub async fn launch_campaign(
        &self,
        request: CampaignRequest,
        by: Actor,
    ) -> Result<Started, EngineError> {
        let now = self.clock.now();
        let workflow_id = Campaign::workflow_id(&request.id);
        let refuse = |why: String| {
            let (by, workflow_id) = (by.clone(), workflow_id.clone());
            async move {
                self.audit_refusal("campaign launch", &by, None, Some(&workflow_id), &why)
                    .await?;
                Err::<Started, _>(EngineError::Rejected(Rejected::new("campaign", why)))
            }
        };
        if let Err(r) = statemachines::review_campaign::check_id(&request.id) {
            return refuse(r.to_string()).await;
        }
        let canonical = serde_json::to_string(&request).unwrap_or_default();
        let hash = short_hash(&[&canonical]);
        if let Some(existing) = self.store.instance(&workflow_id).await? {
            if existing.request_hash == hash {
                return Ok(Started {
                    workflow_id,
                    agent_id: String::new(),
                    state: existing.state_name,
                    duplicate: true,
                });
            }
            let why = format!(
                "a campaign with id {} exists already ({}); choose another id",
                request.id, existing.state_name
            );
            self.audit_refusal("campaign launch", &by, None, Some(&workflow_id), &why)
                .await?;
            return Err(EngineError::Conflict(why));
        }
        for e in &request.scope.environments {
            if !self.policy.environments.contains(e) {
                return refuse(format!(
                    "environment `{e}` is not one of the policy's environments ({})",
                    self.policy.environments.join(", ")
                ))
                .await;
            }
        }
        // Counted a page at a time: a campaign over a million agents does not hold the registry.
        let mut in_scope = 0usize;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .agents_after(after.as_deref(), REGISTRY_PAGE)
                .await?;
            in_scope += page
                .iter()
                .filter(|a| request.scope.covers(a, &self.policy))
                .count();
            match page.last() {
                Some(last) if page.len() == REGISTRY_PAGE => after = Some(last.id.clone()),
                _ => break,
            }
        }
        if in_scope == 0 {
            return refuse(format!(
                "no active agent matches the campaign's scope ({})",
                request.scope.describe()
            ))
            .await;
        }
        let deadline = request.deadline.unwrap_or_else(|| {
            now + chrono::Duration::seconds(self.policy.reviews.duration_secs as i64)
        });
        let campaign = Campaign {
            id: request.id.clone(),
            name: request.name.clone().unwrap_or_else(|| request.id.clone()),
            scope: request.scope.clone(),
            started_by: by.clone(),
            started_at: now,
            deadline,
            unanswered: request.unanswered.unwrap_or(self.policy.reviews.unanswered),
        };
        let name = campaign.name.clone();
        let (state, duplicate) = self
            .start_in(
                &workflow_id,
                ReviewCampaign::KIND,
                (None, &name),
                StartInput::ReviewCampaign(CampaignInput { campaign }),
                &hash,
                by,
                json!({"campaign": request, "agents_in_scope": in_scope}),
                Some(CAMPAIGNS_GROUP),
            )
            .await?;
        Ok(Started {
            workflow_id,
            agent_id: String::new(),
            state,
            duplicate,
        })
    }

    /// Whether any agent is in `scope`, reading the registry a page at a time until one is.
    async fn any_agent_in(
        &self,
        scope: &statemachines::review_campaign::CampaignScope,
    ) -> Result<bool, EngineError> {
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .store
                .agents_after(cursor.as_deref(), REGISTRY_PAGE)
                .await?;
            if page.iter().any(|a| scope.covers(a, &self.policy)) {
                return Ok(true);
            }
            match page.last() {
                Some(last) if page.len() == REGISTRY_PAGE => cursor = Some(last.id.clone()),
                _ => return Ok(false),
            }
        }
    }

    /// Launches the policy's scheduled campaign for the current period if it has not run yet
    /// (called by the sweep). `None` when nothing is scheduled, it exists, or no agent is in
    /// its scope.
    pub async fn launch_scheduled_campaign(&self) -> Result<Option<Started>, EngineError> {
        let Some(id) = scheduled_id(self.policy.reviews.every_months, self.clock.now()) else {
            return Ok(None);
        };
        if self
            .store
            .instance(&Campaign::workflow_id(&id))
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let scope = self.policy.reviews.scope.clone();
        if !self.any_agent_in(&scope).await? {
            return Ok(None);
        }
        let request = CampaignRequest {
            name: Some(format!("Scheduled access review {id}")),
            id,
            scope,
            deadline: None,
            unanswered: None,
        };
        match self
            .launch_campaign(request, Actor::Schedule("reviews".into()))
            .await
        {
            Ok(s) => Ok(Some(s)),
            Err(EngineError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `Command::LaunchReviews`: one round of a campaign's launch. Starts the review items of
    /// agents in scope that have none yet, at most `reviews.launch_batch`, in group commits.
    /// A round run again (after a crash) finds the items it made and re-sends their pending
    /// commands, so no item is lost and none is made twice; each item's Slack message is
    /// sent once by its own command.
    pub(super) async fn launch_reviews(
        &self,
        campaign_id: &str,
        round: u32,
    ) -> Result<Option<Event>, ExecError> {
        let fail = |message: String| ExecError {
            command: "workflow.launch_reviews",
            message,
            retryable: true,
            retry_after: None,
        };
        let store_err = |e: StoreError| fail(e.to_string());
        let workflow_id = Campaign::workflow_id(campaign_id);
        let Some(instance) = self.store.instance(&workflow_id).await.map_err(store_err)? else {
            return Err(ExecError {
                retryable: false,
                ..fail(format!("campaign {campaign_id} does not exist"))
            });
        };
        let campaign = campaign_of(&instance)
            .map_err(store_err)?
            .campaign()
            .clone();
        let round_tag = format!("{campaign_id}/round-{round}");
        // Rounds walk the registry in agent-id order; where a round starts is saved by the
        // round before it, so a round run again (after a crash) covers the same agents.
        let start_key = format!("campaign:{campaign_id}:round:{round}");
        let after = self.store.cursor(&start_key).await.map_err(store_err)?;
        // The registry a page at a time from where this round starts, until the round has
        // its batch (and one more, to know whether another round follows).
        let batch = self.policy.reviews.launch_batch.max(1) as usize;
        let mut candidates = Vec::with_capacity(batch + 1);
        let mut cursor = after.clone();
        'pages: loop {
            let page = self
                .store
                .agents_after(cursor.as_deref(), REGISTRY_PAGE)
                .await
                .map_err(store_err)?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.id.clone());
            let last_page = page.len() < REGISTRY_PAGE;
            for a in page {
                if campaign.scope.covers(&a, &self.policy) {
                    candidates.push(a);
                    if candidates.len() > batch {
                        break 'pages;
                    }
                }
            }
            if last_page {
                break;
            }
        }
        let more = candidates.len() > batch;
        candidates.truncate(batch);
        let last = candidates.last().map(|a| a.id.clone());
        let mut launched = 0u64;
        let mut agents = Vec::with_capacity(candidates.len());
        for a in candidates {
            match self
                .store
                .instance(&campaign.item_id(&a.id))
                .await
                .map_err(store_err)?
            {
                None => agents.push(a),
                // Made by this round before a crash: count it, and make sure its message goes.
                Some(i) if i.request_hash == round_tag => {
                    launched += 1;
                    if !i.pending.is_empty() {
                        self.send_delayed(runs(&i.id, &i.pending))
                            .await
                            .map_err(|e| fail(e.to_string()))?;
                    }
                }
                Some(_) => {}
            }
        }
        let mut managers: HashMap<String, Option<String>> = HashMap::new();
        let now = self.clock.now();
        for chunk in agents.chunks(LAUNCH_COMMIT_CHUNK) {
            let mut steps = Vec::with_capacity(chunk.len());
            for agent in chunk {
                let manager = match managers.get(&agent.owner) {
                    Some(m) => m.clone(),
                    None => {
                        let m = self
                            .directory
                            .person(&agent.owner)
                            .await
                            .map_err(|e| fail(e.to_string()))?
                            .and_then(|p| p.manager);
                        managers.insert(agent.owner.clone(), m.clone());
                        m
                    }
                };
                let usage = match &agent.client_id {
                    Some(c) => self.store.scope_usage(c).await.map_err(store_err)?,
                    None => vec![],
                };
                let item_id = campaign.item_id(&agent.id);
                let ctx = self.ctx(&item_id);
                let input = StartInput::ReviewItem(ReviewItemInput {
                    campaign: campaign.clone(),
                    agent: agent.clone(),
                    usage,
                    manager,
                });
                let applied = match workflows::start(input, &ctx) {
                    Ok(a) => a,
                    Err(r) => {
                        // Left scope between the listing and now: nothing to review.
                        tracing::info!(agent = %agent.name, %r, "review item not started");
                        continue;
                    }
                };
                let fresh = Instance {
                    id: item_id.clone(),
                    kind: ReviewItemMachine::KIND.into(),
                    agent_id: Some(agent.id.clone()),
                    state: serde_json::Value::Null,
                    state_name: statemachines::workflow::START.into(),
                    terminal: false,
                    version: 0,
                    pending: vec![],
                    applied: vec![],
                    request_hash: round_tag.clone(),
                    created_at: now,
                    updated_at: now,
                    group: Some(campaign.id.clone()),
                };
                let (commit, pending) = self.build_commit(
                    &fresh,
                    applied,
                    "start",
                    json!({"review": campaign.id, "round": round}),
                    campaign.started_by.clone(),
                    None,
                    now,
                );
                steps.push(self.start_step(commit, &pending));
            }
            let written = self
                .outbox
                .write(Batch {
                    steps,
                    ..Default::default()
                })
                .await
                .map_err(|e| fail(e.to_string()))?;
            for result in written {
                match result {
                    Ok(()) => {
                        launched += 1;
                        self.transitions
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Made by an earlier run of this round: counted and re-sent above.
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(store_err(e)),
                }
            }
        }
        if more && let Some(last) = last {
            self.store
                .set_cursor(
                    &format!("campaign:{campaign_id}:round:{}", round + 1),
                    &last,
                )
                .await
                .map_err(store_err)?;
        }
        tracing::info!(
            campaign = campaign_id,
            round,
            launched,
            more,
            "review items launched"
        );
        Ok(Some(Event::ReviewsLaunched {
            round,
            launched,
            more,
        }))
    }

    /// `Command::ApplyReview`: a Reduce starts a scope change dropping the scopes; a Revoke
    /// starts the decommission (the review is its approval). A refusal (the agent changed
    /// since) is the action's result, not a failure to retry.
    pub(super) async fn apply_review(
        &self,
        agent_id: &str,
        campaign_id: &str,
        action: &ReviewAction,
        decided_by: &str,
    ) -> Result<Option<Event>, ExecError> {
        let fail = |e: EngineError| ExecError {
            command: "workflow.apply_review",
            message: e.to_string(),
            retryable: true,
            retry_after: None,
        };
        let refused = |detail: String| {
            Ok(Some(Event::ReviewActionTaken {
                workflow_id: None,
                ok: false,
                detail,
            }))
        };
        let Some(agent) = self
            .store
            .agent(agent_id)
            .await
            .map_err(|e| fail(e.into()))?
        else {
            return refused(format!("agent {agent_id} is no longer in the registry"));
        };
        let result = match action {
            ReviewAction::Reduce { drop } => {
                let request = ScopeChangeRequest {
                    add: vec![],
                    remove: drop.clone(),
                    token_lifetime_secs: None,
                    reason: format!("access review {campaign_id}: reduced by {decided_by}"),
                };
                self.request_scope_change(&agent.id, request, decided_by)
                    .await
                    .map(|s| (s, format!("scope change drops {}", drop.join(", "))))
            }
            ReviewAction::Revoke => {
                let by = if decided_by.contains('@') {
                    Actor::Person(decided_by.to_string())
                } else {
                    Actor::Schedule(format!("review-deadline:{campaign_id}"))
                };
                let reason = DecommissionReason::Review {
                    campaign: campaign_id.to_string(),
                    decided_by: decided_by.to_string(),
                };
                self.decommission(agent, reason, by)
                    .await
                    .map(|s| (s, "decommission started".to_string()))
            }
        };
        match result {
            Ok((started, detail)) => Ok(Some(Event::ReviewActionTaken {
                workflow_id: Some(started.workflow_id),
                ok: true,
                detail,
            })),
            Err(EngineError::Rejected(r)) => refused(r.to_string()),
            Err(EngineError::Conflict(m)) | Err(EngineError::NotFound(m)) => refused(m),
            Err(e) => Err(fail(e)),
        }
    }

    /// A reviewer's answer to an item: checked now for a clear answer (and audited when
    /// refused), then handed to the item's workflow, whose machine applies the same rules.
    pub async fn decide_review(
        &self,
        item_id: &str,
        by: &str,
        decision: ReviewDecision,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        let actor = Actor::Person(by.to_string());
        let instance = match self.store.instance(item_id).await? {
            Some(i) if i.kind == ReviewItemMachine::KIND => i,
            _ => {
                let why = format!("no review item `{item_id}`");
                self.audit_refusal("review decision", &actor, None, None, &why)
                    .await?;
                return Err(EngineError::NotFound(why));
            }
        };
        let state = item_of(&instance)?;
        let item = state.item();
        let target = Some((item.agent.id.as_str(), item.agent.name.as_str()));
        let escalated = matches!(state, ReviewItemState::Escalated { .. });
        let check = || -> Result<(), Rejected> {
            if let Some(r) = state.resolution() {
                return Err(Rejected::new(
                    "review",
                    format!(
                        "the review of {} was answered already: {} by {}",
                        item.agent.name,
                        r.decision,
                        r.by.as_deref().unwrap_or("the deadline")
                    ),
                ));
            }
            if self.clock.now() > item.deadline {
                return Err(Rejected::new(
                    "review",
                    format!(
                        "the review of {} closed at {}; its default applies",
                        item.agent.name,
                        item.deadline.to_rfc3339()
                    ),
                ));
            }
            check_reviewer(item, escalated, by, &self.ctx(item_id))?;
            if let ReviewDecision::Reduce { drop } = &decision {
                check_drop(&item.agent, drop)?;
            }
            Ok(())
        };
        let refusal = match check() {
            Err(r) => Some(r),
            Ok(()) => self.check_active(by).await?,
        };
        if let Some(r) = refusal {
            self.audit_refusal(
                "review decision",
                &actor,
                target,
                Some(item_id),
                &r.to_string(),
            )
            .await?;
            return Err(EngineError::Rejected(r));
        }
        let msg = Message::Event {
            workflow_id: item_id.to_string(),
            event_id: format!(
                "review/{item_id}/{}/{}",
                by.trim().to_ascii_lowercase(),
                decision.as_str()
            ),
            event: Event::ReviewDecided {
                decision,
                by: by.to_string(),
                reason,
            },
        };
        self.send(vec![msg], Duration::ZERO).await?;
        Ok(())
    }

    /// Who may answer an item (for recognising a Slack user): owner, manager, approvers.
    pub async fn review_people(&self, item_id: &str) -> Result<Vec<String>, EngineError> {
        let Some(instance) = self.store.instance(item_id).await? else {
            return Ok(vec![]);
        };
        let state = item_of(&instance)?;
        let item = state.item();
        Ok(std::iter::once(item.agent.owner.clone())
            .chain(item.escalate_to.clone())
            .chain(self.policy.approvers.iter().cloned())
            .collect())
    }

    /// Every campaign, newest first, with its items by state where the store counts them
    /// without reading the items.
    pub async fn campaigns(&self) -> Result<Vec<CampaignProgress>, EngineError> {
        let mut out = Vec::new();
        for i in self.store.instances_in_group(CAMPAIGNS_GROUP).await? {
            let c = campaign_of(&i)?;
            let mut p = self.progress_of(&i, &c, &[]).0;
            p.counted = false;
            if let Some(states) = self.store.group_states(&p.id).await? {
                let n = |s: &str| states.get(s).copied().unwrap_or(0);
                p.open = n("Open");
                p.escalated = n("Escalated");
                p.applying = n("Applying");
                p.decided = n("Applying") + n("Closed");
                p.items = p.items.max(states.values().sum());
                p.counted = true;
            }
            out.push(p);
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.deadline));
        Ok(out)
    }

    /// The review items waiting for `owner`'s answer in running campaigns, with each one's
    /// campaign name. The owner's agents (their index) are looked up by item id in each running
    /// campaign: no campaign's items are read in full.
    pub async fn reviews_waiting_for(
        &self,
        owner: &str,
    ) -> Result<Vec<(String, ReportRow)>, EngineError> {
        let mut running = Vec::new();
        for i in self.store.instances_in_group(CAMPAIGNS_GROUP).await? {
            if !i.terminal {
                let state = campaign_of(&i)?;
                running.push((i, state));
            }
        }
        if running.is_empty() {
            return Ok(vec![]);
        }
        let owned = self.store.agents_owned_by(owner).await?;
        let mut out = Vec::new();
        for (instance, state) in &running {
            let c = state.campaign();
            for a in &owned {
                let Some(item) = self.store.instance(&c.item_id(&a.id)).await? else {
                    continue;
                };
                if item.kind != ReviewItemMachine::KIND
                    || !matches!(
                        item_of(&item)?,
                        ReviewItemState::Open { .. } | ReviewItemState::Escalated { .. }
                    )
                {
                    continue;
                }
                let (_, rows) = self.progress_of(instance, state, std::slice::from_ref(&item));
                out.extend(rows.into_iter().map(|r| (c.name.clone(), r)));
            }
        }
        Ok(out)
    }

    /// Progress of one campaign: item counts by state and decision.
    pub async fn campaign_progress(&self, id: &str) -> Result<CampaignProgress, EngineError> {
        let (instance, state) = self.campaign(id).await?;
        let items = self.store.instances_in_group(id).await?;
        Ok(self.progress_of(&instance, &state, &items).0)
    }

    /// The evidence report of one campaign.
    pub async fn campaign_report(&self, id: &str) -> Result<CampaignReport, EngineError> {
        let (instance, state) = self.campaign(id).await?;
        let items = self.store.instances_in_group(id).await?;
        let (progress, rows) = self.progress_of(&instance, &state, &items);
        let mut rows = rows;
        for r in rows.iter_mut() {
            if let Some(wf) = &r.action_workflow {
                r.action_state = self.store.instance(wf).await?.map(|i| i.state_name);
            }
        }
        let mut times: Vec<i64> = rows
            .iter()
            .filter(|r| r.decided_by.is_some())
            .filter_map(|r| r.time_to_decision_secs)
            .collect();
        times.sort_unstable();
        Ok(CampaignReport {
            campaign: state.campaign().clone(),
            state: instance.state_name.clone(),
            generated_at: self.clock.now(),
            progress,
            median_time_to_decision_secs: times.get(times.len() / 2).copied(),
            items: rows,
        })
    }

    async fn campaign(&self, id: &str) -> Result<(Instance, CampaignState), EngineError> {
        match self.store.instance(&Campaign::workflow_id(id)).await? {
            Some(i) if i.kind == ReviewCampaign::KIND => {
                let state = campaign_of(&i)?;
                Ok((i, state))
            }
            _ => Err(EngineError::NotFound(format!("no campaign `{id}`"))),
        }
    }

    fn progress_of(
        &self,
        instance: &Instance,
        state: &CampaignState,
        items: &[Instance],
    ) -> (CampaignProgress, Vec<ReportRow>) {
        let c = state.campaign();
        let mut p = CampaignProgress {
            id: c.id.clone(),
            name: c.name.clone(),
            state: instance.state_name.clone(),
            scope: c.scope.describe(),
            deadline: Some(c.deadline),
            unanswered_default: c.unanswered.as_str().into(),
            ..Default::default()
        };
        p.items = match state {
            CampaignState::Launching { launched, .. } | CampaignState::Failed { launched, .. } => {
                *launched
            }
            CampaignState::Reviewing { items, .. } | CampaignState::Closed { items, .. } => *items,
        };
        if !items.is_empty() {
            p.items = items.len() as u64;
        }
        p.counted = true;
        let mut rows = Vec::with_capacity(items.len());
        for i in items {
            let Ok(s) = item_of(i) else {
                tracing::warn!(item = %i.id, "unreadable review item skipped");
                continue;
            };
            match &s {
                ReviewItemState::Open { .. } => p.open += 1,
                ReviewItemState::Escalated { .. } => p.escalated += 1,
                ReviewItemState::Applying { .. } => p.applying += 1,
                ReviewItemState::Closed { .. } => {}
            }
            let item = s.item();
            let resolution = s.resolution();
            if let Some(r) = resolution {
                p.decided += 1;
                match (r.default_applied, r.decision.as_str()) {
                    (Some(_), _) => p.defaulted += 1,
                    (None, "keep") => p.keep += 1,
                    (None, "reduce") => p.reduce += 1,
                    (None, _) => p.revoke += 1,
                }
                if r.action.as_ref().is_some_and(|a| !a.ok) {
                    p.action_failed += 1;
                }
            }
            let escalated = matches!(s, ReviewItemState::Escalated { .. })
                || resolution.is_some_and(|r| r.escalated);
            let action = resolution.and_then(|r| r.action.as_ref());
            rows.push(ReportRow {
                item_id: item.id.clone(),
                agent_id: item.agent.id.clone(),
                agent: item.agent.name.clone(),
                owner: item.agent.owner.clone(),
                team: item.agent.team.clone(),
                environment: item.agent.environment.clone(),
                scopes: item.agent.scopes.clone(),
                suggested_drop: item.evidence.suggested_drop.clone(),
                sent_at: item.sent_at,
                status: i.state_name.clone(),
                decision: resolution.map(|r| r.decision.clone()).unwrap_or_default(),
                dropped: resolution.map(|r| r.dropped.clone()).unwrap_or_default(),
                decided_by: resolution.and_then(|r| r.by.clone()),
                decided_at: resolution.map(|r| r.at),
                time_to_decision_secs: resolution.map(|r| (r.at - item.sent_at).num_seconds()),
                escalated,
                default_applied: resolution
                    .and_then(|r| r.default_applied)
                    .map(|d| d.as_str().to_string()),
                reason: resolution.and_then(|r| r.reason.clone()),
                action: action.map(|a| a.kind.clone()),
                action_workflow: action.and_then(|a| a.workflow_id.clone()),
                action_ok: action.map(|a| a.ok),
                action_detail: action.map(|a| a.detail.clone()),
                action_state: None,
            });
        }
        (p, rows)
    }
}
