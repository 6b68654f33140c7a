//! The durable engine (docs/ARCHITECTURE.md, "The commit protocol"; docs/adr/0020): loads a workflow instance, applies an event with its
//! pure machine, writes state + history + pending commands in one conditional write, then
//! dispatches the pending commands through the queue. Delivery is at least once everywhere, so
//! every step is idempotent: applied event ids are remembered, command keys are deterministic,
//! and executors honour them.

pub mod detection;
pub mod discovery;
pub mod executor;
pub mod lifecycle;
pub mod message;
mod owners;
pub mod reviews;
pub mod workflows;

use crate::audit;
use crate::ports::outbox::{Batch, Outbox, OutboxError, Step};
use crate::ports::queue::{Delivery, OutMessage, QueueError};
use crate::ports::store::{
    ApprovalChange, ApprovalRecord, Commit, HistoryEntry, Instance, PendingCommand, StoreError,
    Timer, TimerChange,
};
use crate::ports::{Clock, Directory, Queue, Store};
use executor::Executor;
use message::Message;
use serde_json::json;
use sha2::{Digest, Sha256};
use statemachines::onboarding::OnboardingInput;
use statemachines::scope_change::{ScopeChangeInput, ScopeChangeRequest};
use statemachines::{
    Actor, Agent, AgentRequest, AgentStatus, ApprovalRequest, Command, Ctx, Decision, Event,
    FollowUp, Policy, Rejected, Vote,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use workflows::{Applied, ApplyError, StartInput};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Attempts per external command before it fails for good (`CommandFailed`).
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// How many applied event ids an instance remembers for deduplication.
    pub applied_window: usize,
    /// How long a received message stays hidden while it is processed.
    pub visibility: Duration,
    /// Where the outbox is not atomic (DynamoDB and SQS), how long after a start its commands'
    /// messages are sent again in case a crash fell between the write and the send. Must stay
    /// well under the queue's 5-minute deduplication window, which drops the copies of messages
    /// that did go out.
    pub dispatch_check: Duration,
    /// Fault injection for crash tests: abort the process right after this command's side effect
    /// succeeded and before its result is recorded (`STEWARD_CRASH_AFTER=idp.create_client`).
    pub crash_after: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
            applied_window: 16,
            visibility: Duration::from_secs(30),
            dispatch_check: Duration::from_secs(60),
            crash_after: std::env::var("STEWARD_CRASH_AFTER")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("request refused: {0}")]
    Rejected(Rejected),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Directory(#[from] crate::ports::directory::DirectoryError),
    #[error(transparent)]
    Idp(#[from] crate::ports::idp::IdpError),
}

impl From<OutboxError> for EngineError {
    fn from(e: OutboxError) -> Self {
        match e {
            OutboxError::Store(e) => Self::Store(e),
            OutboxError::Queue(e) => Self::Queue(e),
        }
    }
}

/// A message could not be processed now. Retryable errors come back with backoff; others are
/// poison and reach the dead-letter queue after the queue's max receive count.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandleError {
    pub message: String,
    pub retryable: bool,
}

impl From<StoreError> for HandleError {
    fn from(e: StoreError) -> Self {
        let retryable = !matches!(e, StoreError::Corrupt(..));
        Self {
            message: e.to_string(),
            retryable,
        }
    }
}
impl From<QueueError> for HandleError {
    fn from(e: QueueError) -> Self {
        Self {
            message: e.to_string(),
            retryable: true,
        }
    }
}

/// The answer to a start request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Started {
    pub workflow_id: String,
    pub agent_id: String,
    pub state: String,
    /// True when this exact request was already received: nothing new was started.
    pub duplicate: bool,
}

pub struct Engine {
    /// Steps written since start (accepted, refused and bookkeeping), for health and benchmarks.
    pub transitions: std::sync::atomic::AtomicU64,
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    /// Where steps and the messages that run their commands are written (see [`Outbox`]).
    pub outbox: Arc<dyn Outbox>,
    pub directory: Arc<dyn Directory>,
    pub clock: Arc<dyn Clock>,
    pub executor: Executor,
    pub policy: Arc<Policy>,
    pub config: EngineConfig,
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Hash of exactly what an approver is shown: a decision binds to it.
pub fn action_hash(r: &ApprovalRequest) -> String {
    let v = json!([
        r.agent_id,
        r.action,
        r.scopes_added,
        r.scopes_removed,
        r.token_lifetime_secs,
        r.environment
    ]);
    short_hash(&[&v.to_string()])
}

impl Engine {
    fn ctx<'a>(&'a self, workflow_id: &'a str) -> Ctx<'a> {
        Ctx {
            now: self.clock.now(),
            policy: &self.policy,
            workflow_id,
        }
    }

    /// Onboarding: checks the request against the policy and the directory and starts the
    /// workflow. The same request twice is recognised and starts nothing new.
    pub async fn request_agent(
        &self,
        request: AgentRequest,
        requester: &str,
    ) -> Result<Started, EngineError> {
        self.onboard(request, requester, None).await
    }

    /// Onboarding; `adopt` = (agent id, client id) of a claimed shadow agent, whose record
    /// and client the onboarding takes over.
    pub(crate) async fn onboard(
        &self,
        request: AgentRequest,
        requester: &str,
        adopt: Option<(&str, &str)>,
    ) -> Result<Started, EngineError> {
        let canonical = serde_json::to_string(&request).unwrap_or_default();
        let hash = short_hash(&[&canonical, requester]);
        let workflow_id = format!("onboarding-{}-{}", request.name, &hash[..8]);
        let agent_id = match adopt {
            Some((id, _)) => id.to_string(),
            None => format!("agt-{}", &hash[..12]),
        };
        if let Some(existing) = self.store.instance(&workflow_id).await? {
            return Ok(Started {
                workflow_id,
                agent_id,
                state: existing.state_name,
                duplicate: true,
            });
        }
        let actor = Actor::Person(requester.to_string());
        if let Some(other) = self.store.agent_by_name(&request.name).await?
            && other.id != agent_id
            && !matches!(
                other.status,
                AgentStatus::Denied
                    | AgentStatus::Expired
                    | AgentStatus::Cancelled
                    | AgentStatus::Failed
                    | AgentStatus::Decommissioned
            )
        {
            let why = format!(
                "an agent named {} already exists ({}, owner {}); change its scopes instead or choose another name",
                other.name,
                other.status.as_str(),
                other.owner
            );
            self.audit_refusal(
                "agent request",
                &actor,
                Some((&other.id, &other.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Conflict(why));
        }
        let owner_status = self.directory.owner_status(&request.owner).await?;
        let name = request.name.clone();
        let input = StartInput::Onboarding(OnboardingInput {
            agent_id: agent_id.clone(),
            request,
            requester: requester.to_string(),
            owner_status,
            adopt_client: adopt.map(|(_, client)| client.to_string()),
        });
        let started = self.start(&workflow_id, "onboarding", Some(&agent_id), &name, input, &hash, actor, json!({"request": serde_json::from_str::<serde_json::Value>(&canonical).unwrap_or_default()})).await?;
        Ok(Started {
            workflow_id,
            agent_id,
            state: started.0,
            duplicate: started.1,
        })
    }

    /// Scope change on an active agent (by id or name).
    pub async fn request_scope_change(
        &self,
        agent_ref: &str,
        request: ScopeChangeRequest,
        requester: &str,
    ) -> Result<Started, EngineError> {
        let actor = Actor::Person(requester.to_string());
        let Some(agent) = self.find_agent(agent_ref).await? else {
            let why = format!("no agent with id or name `{agent_ref}`");
            self.audit_refusal("scope change", &actor, None, None, &why)
                .await?;
            return Err(EngineError::NotFound(why));
        };
        let canonical = serde_json::to_string(&request).unwrap_or_default();
        let hash = short_hash(&[
            &agent.id,
            &agent.updated_at.to_rfc3339(),
            &canonical,
            requester,
        ]);
        let workflow_id = format!("scope-change-{}-{}", agent.name, &hash[..8]);
        if let Some(existing) = self.store.instance(&workflow_id).await? {
            return Ok(Started {
                workflow_id,
                agent_id: agent.id,
                state: existing.state_name,
                duplicate: true,
            });
        }
        if let Some(running) = self
            .store
            .instances_for_agent(&agent.id)
            .await?
            .into_iter()
            .find(|i| i.kind == "scope_change" && !i.terminal)
        {
            let why = format!(
                "a scope change for {} is already in progress ({}); wait for it or cancel it",
                agent.name, running.id
            );
            self.audit_refusal(
                "scope change",
                &actor,
                Some((&agent.id, &agent.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Conflict(why));
        }
        let (agent_id, name) = (agent.id.clone(), agent.name.clone());
        let input = StartInput::ScopeChange(ScopeChangeInput {
            agent,
            request,
            requester: requester.to_string(),
        });
        let started = self.start(&workflow_id, "scope_change", Some(&agent_id), &name, input, &hash, actor, json!({"scope_change": serde_json::from_str::<serde_json::Value>(&canonical).unwrap_or_default()})).await?;
        Ok(Started {
            workflow_id,
            agent_id,
            state: started.0,
            duplicate: started.1,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn start(
        &self,
        workflow_id: &str,
        kind: &str,
        agent_id: Option<&str>,
        agent_name: &str,
        input: StartInput,
        hash: &str,
        actor: Actor,
        summary: serde_json::Value,
    ) -> Result<(String, bool), EngineError> {
        self.start_in(
            workflow_id,
            kind,
            (agent_id, agent_name),
            input,
            hash,
            actor,
            summary,
            None,
        )
        .await
    }

    /// [`Engine::start`] for an instance that belongs to `group` (see `Instance::group`).
    #[allow(clippy::too_many_arguments)]
    async fn start_in(
        &self,
        workflow_id: &str,
        kind: &str,
        (agent_id, agent_name): (Option<&str>, &str),
        input: StartInput,
        hash: &str,
        actor: Actor,
        summary: serde_json::Value,
        group: Option<&str>,
    ) -> Result<(String, bool), EngineError> {
        let ctx = self.ctx(workflow_id);
        let mut applied = match workflows::start(input, &ctx) {
            Ok(a) => a,
            Err(rejected) => {
                self.audit_refusal(
                    &format!("{kind} request"),
                    &actor,
                    agent_id.map(|a| (a, agent_name)),
                    Some(workflow_id),
                    &rejected.to_string(),
                )
                .await?;
                return Err(EngineError::Rejected(rejected));
            }
        };
        let now = ctx.now;
        self.resolve_agent_updates(&mut applied.commands, &mut HashMap::new(), now)
            .await?;
        let fresh = Instance {
            id: workflow_id.to_string(),
            kind: kind.to_string(),
            agent_id: agent_id.map(str::to_string),
            state: serde_json::Value::Null,
            state_name: statemachines::workflow::START.into(),
            terminal: false,
            version: 0,
            pending: vec![],
            applied: vec![],
            request_hash: hash.to_string(),
            created_at: now,
            updated_at: now,
            group: group.map(str::to_string),
        };
        let (commit, new_pending) =
            self.build_commit(&fresh, applied, "start", summary, actor, None, now);
        let state = commit.instance.state_name.clone();
        let step = self.start_step(commit, &new_pending);
        let written = self
            .outbox
            .write(Batch {
                steps: vec![step],
                ..Default::default()
            })
            .await?
            .pop()
            .unwrap_or(Ok(()));
        match written {
            Ok(()) => {}
            // The same request raced in twice: the first one won, this one is the duplicate.
            Err(StoreError::Conflict { .. }) => {
                let existing = self
                    .store
                    .instance(workflow_id)
                    .await?
                    .map(|i| i.state_name)
                    .unwrap_or(state);
                return Ok((existing, true));
            }
            Err(e) => return Err(e.into()),
        }
        Ok((state, false))
    }

    /// The outbox step of a workflow's first commit. Where the outbox is not atomic, nothing
    /// redelivers a start (no queue message led to it), so the step also arms a dispatch timer:
    /// when it fires, the step's commands that are still pending are sent again. Copies of
    /// messages that did go out fall in the queue's deduplication window and are dropped.
    fn start_step(&self, mut commit: Commit, pending: &[PendingCommand]) -> Step {
        let wf = commit.instance.id.clone();
        if !self.outbox.atomic() && !pending.is_empty() {
            commit.timers.push(TimerChange::Set(Timer {
                workflow_id: wf.clone(),
                name: format!("{DISPATCH_TIMER}{}", commit.instance.version),
                due_at: commit.instance.updated_at
                    + chrono::Duration::from_std(self.config.dispatch_check).unwrap_or_default(),
            }));
        }
        Step::new(commit, outgoing(runs(&wf, pending)))
    }

    /// Checks a decision now (for a clear answer to the person) and hands it to the workflow,
    /// whose machine enforces the same rules when it applies it. `shown` is the action hash of
    /// the request as the approver saw it (a Slack button carries it): a decision on a request
    /// that has changed since is refused.
    pub async fn decide(
        &self,
        approval_id: &str,
        approver: &str,
        decision: Decision,
        reason: Option<String>,
        shown: Option<&str>,
    ) -> Result<ApprovalRecord, EngineError> {
        let actor = Actor::Person(approver.to_string());
        let Some(record) = self.store.approval(approval_id).await? else {
            let why = format!("no approval with id `{approval_id}`");
            self.audit_refusal("approval decision", &actor, None, None, &why)
                .await?;
            return Err(EngineError::NotFound(why));
        };
        let req = &record.request;
        let target = Some((req.agent_id.as_str(), req.agent_name.as_str()));
        if record.outcome.is_some() {
            let why = format!(
                "approval {approval_id} is already {}; a decision is made once",
                record.status()
            );
            self.audit_refusal(
                "approval decision",
                &actor,
                target,
                Some(&req.workflow_id),
                &why,
            )
            .await?;
            return Err(EngineError::Rejected(Rejected::new("approval", why)));
        }
        let refusal = match shown {
            Some(hash) if hash != record.action_hash => Some(Rejected::new(
                "approval",
                format!(
                    "approval {approval_id} changed after this message was shown (what is asked is no longer what you saw); nothing was decided, look at the current request"
                ),
            )),
            _ => req.check_decision(approver, self.clock.now()).err(),
        };
        if let Some(r) = refusal {
            self.audit_refusal(
                "approval decision",
                &actor,
                target,
                Some(&req.workflow_id),
                &r.to_string(),
            )
            .await?;
            return Err(EngineError::Rejected(r));
        }
        let decision_word = match decision {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        };
        let event_id = format!(
            "decision/{approval_id}/{}/{decision_word}",
            approver.to_ascii_lowercase()
        );
        let msg = Message::Event {
            workflow_id: req.workflow_id.clone(),
            event_id,
            event: Event::ApprovalDecided {
                approval_id: approval_id.to_string(),
                decision,
                approver: approver.to_string(),
                reason,
            },
        };
        self.send(vec![msg], Duration::ZERO).await?;
        Ok(record)
    }

    /// Withdraws a request that is still waiting.
    pub async fn cancel(
        &self,
        workflow_id: &str,
        by: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let actor = Actor::Person(by.to_string());
        match self.store.instance(workflow_id).await? {
            None => {
                let why = format!("no workflow `{workflow_id}`");
                self.audit_refusal("cancel", &actor, None, None, &why)
                    .await?;
                Err(EngineError::NotFound(why))
            }
            Some(i) if i.terminal => {
                let why = format!("workflow {workflow_id} already ended ({})", i.state_name);
                self.audit_refusal("cancel", &actor, None, Some(workflow_id), &why)
                    .await?;
                Err(EngineError::Rejected(Rejected::new("workflow", why)))
            }
            Some(i) => {
                // Same rule as the machine's, checked now for a clear answer to the person.
                let waiting = self
                    .store
                    .approvals(true)
                    .await?
                    .into_iter()
                    .find(|a| a.request.workflow_id == workflow_id);
                if let Some(approval) = waiting
                    && let Err(r) = approval.request.check_canceller(&actor)
                {
                    let agent = i.agent_id.clone().unwrap_or_default();
                    self.audit_refusal(
                        "cancel",
                        &actor,
                        Some((&agent, &approval.request.agent_name)),
                        Some(workflow_id),
                        &r.to_string(),
                    )
                    .await?;
                    return Err(EngineError::Rejected(r));
                }
                let event = Event::Cancel {
                    by: actor,
                    reason: reason.to_string(),
                };
                let msg = Message::Event {
                    workflow_id: workflow_id.to_string(),
                    // One id per person: a refused cancel must not swallow an allowed one.
                    event_id: format!("cancel/{workflow_id}/{}", by.trim().to_ascii_lowercase()),
                    event,
                };
                self.send(vec![msg], Duration::ZERO).await?;
                Ok(())
            }
        }
    }

    pub async fn find_agent(&self, agent_ref: &str) -> Result<Option<Agent>, EngineError> {
        if let Some(a) = self.store.agent(agent_ref).await? {
            return Ok(Some(a));
        }
        Ok(self.store.agent_by_name(agent_ref).await?)
    }

    /// Turns due timers into `TimerFired` events (the scheduler's tick). Safe to run twice: the
    /// event id is the timer's name and due time.
    pub async fn tick(&self) -> Result<usize, EngineError> {
        let timers = self.store.due_timers(self.clock.now(), 256).await?;
        for t in &timers {
            let msg = Message::Event {
                workflow_id: t.workflow_id.clone(),
                event_id: format!("timer/{}/{}", t.name, t.due_at.timestamp_millis()),
                event: Event::TimerFired {
                    name: t.name.clone(),
                },
            };
            self.send(vec![msg], Duration::ZERO).await?;
            self.store.remove_timer(t).await?;
        }
        Ok(timers.len())
    }

    /// Receives and processes one batch; returns how many messages it handled. All state
    /// changes of the batch, the messages they send and the acks of the deliveries share one
    /// write where the outbox allows (see [`Outbox`]).
    pub async fn work_once(&self, max: usize) -> Result<usize, EngineError> {
        let deliveries = self.queue.receive(max, self.config.visibility).await?;
        fail::fail_point!("engine::after_receive");
        let n = deliveries.len();
        if n > 0 {
            self.work(&deliveries).await?;
        }
        Ok(n)
    }

    /// Processes deliveries received elsewhere (the Lambda SQS event source) or by
    /// [`Engine::work_once`]: the batch's steps, the messages they send and the acks of the
    /// successful deliveries go to the outbox in one write. Failed deliveries are put back with
    /// backoff (and audited when this was their last receive); their receipts are returned.
    pub async fn work(&self, deliveries: &[Delivery]) -> Result<Vec<String>, EngineError> {
        let bodies: Vec<(&str, Option<&str>)> = deliveries
            .iter()
            .map(|d| (d.body.as_str(), Some(d.receipt.as_str())))
            .collect();
        let results = self.process(&bodies).await;
        let mut failed = Vec::new();
        for (d, r) in deliveries.iter().zip(results) {
            if let Err(e) = r {
                self.failed_delivery(d, &e).await?;
                failed.push(d.receipt.clone());
            }
        }
        Ok(failed)
    }

    /// Processes until the queue has nothing visible (tests, the demo).
    pub async fn run_until_idle(&self) -> Result<usize, EngineError> {
        let mut total = 0;
        loop {
            let n = self.work_once(32).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    async fn failed_delivery(&self, d: &Delivery, e: &HandleError) -> Result<(), EngineError> {
        let attempt = d.receive_count.saturating_sub(1);
        let delay = if e.retryable {
            self.backoff(attempt)
        } else {
            Duration::from_millis(100)
        };
        tracing::warn!(error = %e, receive_count = d.receive_count, retryable = e.retryable, "message failed; it will be redelivered");
        if d.receive_count >= self.queue.max_receives() {
            let summary: String = d.body.chars().take(200).collect();
            self.store
                .append_audit(vec![audit::dead_letter(
                    &summary,
                    d.receive_count,
                    &e.message,
                    self.clock.now(),
                )])
                .await?;
        }
        self.queue.nack(&d.receipt, delay).await?;
        Ok(())
    }

    /// Exponential backoff with jitter, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .base_backoff
            .saturating_mul(1u32 << attempt.min(16));
        // Jitter, then cap: max_backoff is a hard ceiling (SQS refuses delays over 15 min).
        let jitter = rand::random::<f64>() * 0.25;
        exp.mul_f64(1.0 + jitter).min(self.config.max_backoff)
    }

    /// Processes one queue message.
    pub async fn handle(&self, body: &str) -> Result<(), HandleError> {
        let mut results = self.process(&[(body, None)]).await;
        results.pop().unwrap_or(Ok(()))
    }

    /// Processes messages in order (each with the receipt that acks it, if any): commands run,
    /// events are applied in memory (later events of a workflow see the earlier ones), then
    /// every step, every message the batch sends and the acks of the messages done go to the
    /// outbox in one write. A message is done when its result is `Ok`.
    pub async fn process(&self, bodies: &[(&str, Option<&str>)]) -> Vec<Result<(), HandleError>> {
        let mut results: Vec<Result<(), HandleError>> = Vec::with_capacity(bodies.len());
        let mut batch = Batch::default();
        let mut cache: HashMap<String, Instance> = HashMap::new();
        let mut agents: HashMap<String, Agent> = HashMap::new();
        let mut step_at = Vec::new();
        // Workflows with a failed message in this batch: their later messages wait, so one
        // workflow's events still apply in order (FIFO per group).
        let mut held: HashSet<String> = HashSet::new();
        for (i, (body, receipt)) in bodies.iter().enumerate() {
            let msg: Message = match serde_json::from_str(body) {
                Ok(m) => m,
                Err(e) => {
                    results.push(Err(HandleError {
                        message: format!("malformed queue message: {e}"),
                        retryable: false,
                    }));
                    continue;
                }
            };
            let workflow = msg.workflow_id().to_string();
            if held.contains(&workflow) {
                results.push(Err(HandleError {
                    message: format!(
                        "held back: an earlier message of workflow {workflow} in this batch failed"
                    ),
                    retryable: true,
                }));
                continue;
            }
            let prepared = match msg {
                Message::Event {
                    workflow_id,
                    event_id,
                    event,
                } => {
                    self.prepare(
                        (&mut cache, &mut agents),
                        &workflow_id,
                        &event_id,
                        Some(event),
                        None,
                    )
                    .await
                }
                Message::Completed {
                    workflow_id,
                    key,
                    event,
                } => {
                    self.prepare(
                        (&mut cache, &mut agents),
                        &workflow_id,
                        &format!("done:{key}"),
                        event,
                        Some(&key),
                    )
                    .await
                }
                Message::Run {
                    workflow_id,
                    key,
                    attempt,
                    waits,
                } => self
                    .run_command(&workflow_id, &key, (attempt, waits))
                    .await
                    .map(Prepared::Send),
            };
            match prepared {
                Ok(Prepared::Send(msgs)) => {
                    batch.messages.extend(outgoing(msgs));
                    batch.acks.extend(receipt.map(str::to_string));
                    results.push(Ok(()));
                }
                Ok(Prepared::Step(commit, msgs)) => {
                    batch.steps.push(Step {
                        commit: *commit,
                        messages: outgoing(msgs),
                        ack: receipt.map(str::to_string),
                    });
                    step_at.push(i);
                    results.push(Ok(()));
                }
                Err(e) => {
                    held.insert(workflow);
                    results.push(Err(e));
                }
            }
        }
        fail::fail_point!("engine::before_write");
        match self.outbox.write(batch).await {
            Ok(written) => {
                for (r, i) in written.into_iter().zip(step_at) {
                    match r {
                        Ok(()) => {
                            self.transitions
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => results[i] = Err(e.into()),
                    }
                }
            }
            // Nothing is known to be written or sent: every message comes back. What was
            // written is recognised on redelivery, and its commands are sent again.
            Err(e) => {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(HandleError {
                        message: e.to_string(),
                        retryable: true,
                    });
                }
            }
        }
        fail::fail_point!("engine::after_write");
        results
    }

    /// Applies one event to the workflow (as cached in this batch, or loaded) without writing.
    async fn prepare(
        &self,
        (cache, agents): (&mut HashMap<String, Instance>, &mut HashMap<String, Agent>),
        workflow_id: &str,
        event_id: &str,
        event: Option<Event>,
        completes: Option<&str>,
    ) -> Result<Prepared, HandleError> {
        let instance = match cache.get(workflow_id) {
            Some(i) => i.clone(),
            None => match self.store.instance(workflow_id).await? {
                Some(i) => i,
                None => {
                    return Err(HandleError {
                        message: format!("event {event_id} names unknown workflow {workflow_id}"),
                        retryable: false,
                    });
                }
            },
        };
        if let Some(Event::TimerFired { name }) = &event
            && let Some(seq) = name.strip_prefix(DISPATCH_TIMER)
        {
            // The dispatch check of a step (see `start_step`): its commands still pending go
            // out again; the machine never sees this timer.
            let step = format!("{workflow_id}/{seq}/");
            let again: Vec<PendingCommand> = instance
                .pending
                .iter()
                .filter(|p| p.key.starts_with(&step))
                .cloned()
                .collect();
            if !again.is_empty() {
                tracing::info!(
                    workflow_id,
                    commands = again.len(),
                    "dispatch check: sending a start's pending commands again"
                );
            }
            return Ok(Prepared::Send(runs(workflow_id, &again)));
        }
        let already_done = completes.is_some_and(|k| !instance.pending.iter().any(|p| p.key == k));
        if instance.applied.iter().any(|e| e == event_id) || already_done {
            // A redelivery: the step is recorded; make sure its commands went out.
            return Ok(Prepared::Send(runs(workflow_id, &instance.pending)));
        }
        let now = self.clock.now();
        let actor = event.as_ref().map(Event::actor).unwrap_or(Actor::System);
        let event_json = event
            .as_ref()
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .unwrap_or(json!({"completed": completes}));
        let outcome = match event {
            None => Ok(None),
            Some(ev) => {
                let ctx = Ctx {
                    now,
                    policy: &self.policy,
                    workflow_id,
                };
                match workflows::apply(&instance.kind, &instance.state, ev, &ctx) {
                    Ok(mut applied) => {
                        self.resolve_agent_updates(&mut applied.commands, agents, now)
                            .await?;
                        Ok(Some(applied))
                    }
                    Err(ApplyError::Rejected(r)) => Err(r),
                    Err(ApplyError::Corrupt(c)) => {
                        return Err(HandleError {
                            message: c,
                            retryable: false,
                        });
                    }
                }
            }
        };
        let (commit, new_pending) = match outcome {
            Ok(Some(applied)) => self.build_commit(
                &instance, applied, event_id, event_json, actor, completes, now,
            ),
            Ok(None) => self
                .bookkeeping_commit(&instance, event_id, event_json, actor, completes, None, now),
            Err(rejected) => {
                tracing::info!(workflow_id, event_id, %rejected, "event refused");
                let agent = instance.agent_id.clone().unwrap_or_default();
                let record = audit::refusal(
                    &format!("event {event_id}"),
                    &actor,
                    Some((&agent, &agent)),
                    Some(workflow_id),
                    &rejected.to_string(),
                    now,
                );
                self.bookkeeping_commit(
                    &instance,
                    event_id,
                    event_json,
                    actor,
                    completes,
                    Some((rejected, record)),
                    now,
                )
            }
        };
        cache.insert(workflow_id.to_string(), commit.instance.clone());
        Ok(Prepared::Step(
            Box::new(commit),
            runs(workflow_id, &new_pending),
        ))
    }

    /// The commit for an accepted step: local commands go into the write, external ones become
    /// pending with keys `<workflow>/<seq>/<index>`.
    #[allow(clippy::too_many_arguments)]
    fn build_commit(
        &self,
        before: &Instance,
        applied: Applied,
        event_id: &str,
        event: serde_json::Value,
        actor: Actor,
        completes: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> (Commit, Vec<PendingCommand>) {
        let seq = before.version + 1;
        let wf = before.id.as_str();
        let (mut timers, mut agents, mut approvals, mut audit_records, mut new_pending) =
            (vec![], vec![], vec![], vec![], vec![]);
        let names = applied
            .commands
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        for (idx, command) in applied.commands.into_iter().enumerate() {
            let key = format!("{wf}/{seq}/{idx}");
            match &command {
                Command::SetTimer { name, at } => timers.push(TimerChange::Set(Timer {
                    workflow_id: wf.into(),
                    name: name.clone(),
                    due_at: *at,
                })),
                Command::CancelTimer { name } => timers.push(TimerChange::Cancel {
                    workflow_id: wf.into(),
                    name: name.clone(),
                }),
                Command::SaveAgent(a) => agents.push((**a).clone()),
                Command::Audit(ev) => {
                    audit_records.push(audit::from_event(ev, wf, now, key.clone()))
                }
                Command::RequestApproval(r) => {
                    approvals.push(ApprovalChange::Open(ApprovalRecord {
                        request: r.clone(),
                        action_hash: action_hash(r),
                        outcome: None,
                        messages: vec![],
                    }));
                }
                Command::CloseApproval {
                    approval_id,
                    outcome,
                } => {
                    approvals.push(ApprovalChange::Close {
                        id: approval_id.clone(),
                        outcome: outcome.clone(),
                    });
                }
                Command::FollowUpApproval {
                    approval_id,
                    follow_up: FollowUp::Vote { by, at, .. },
                } => approvals.push(ApprovalChange::Vote {
                    id: approval_id.clone(),
                    vote: Vote {
                        by: by.clone(),
                        at: *at,
                    },
                }),
                Command::Idp(_)
                | Command::Vault(_)
                | Command::UpdateAgent { .. }
                | Command::StartDecommission { .. }
                | Command::Supersede { .. }
                | Command::LaunchReviews { .. }
                | Command::Review(_)
                | Command::ApplyReview { .. }
                | Command::Notify { .. }
                | Command::FollowUpApproval { .. } => {}
            }
            if command.is_external() {
                new_pending.push(PendingCommand { key, command });
            }
        }
        let mut instance = before.clone();
        instance
            .pending
            .retain(|p| Some(p.key.as_str()) != completes);
        instance.pending.extend(new_pending.iter().cloned());
        instance.state = applied.state;
        instance.state_name = applied.state_name.to_string();
        instance.terminal = applied.terminal;
        remember(&mut instance.applied, event_id, self.config.applied_window);
        instance.version = seq;
        instance.updated_at = now;
        let history = HistoryEntry {
            seq,
            at: now,
            event_id: event_id.into(),
            event,
            actor,
            from: before.state_name.clone(),
            to: instance.state_name.clone(),
            commands: names,
            rejected: None,
        };
        (
            Commit {
                instance,
                expected_version: before.version,
                history,
                timers,
                agents,
                approvals,
                audit: audit_records,
            },
            new_pending,
        )
    }

    /// A step that changes no state: a completed command without a result, or a refused event.
    #[allow(clippy::too_many_arguments)]
    fn bookkeeping_commit(
        &self,
        before: &Instance,
        event_id: &str,
        event: serde_json::Value,
        actor: Actor,
        completes: Option<&str>,
        refusal: Option<(Rejected, crate::ports::store::AuditRecord)>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> (Commit, Vec<PendingCommand>) {
        let mut instance = before.clone();
        instance
            .pending
            .retain(|p| Some(p.key.as_str()) != completes);
        remember(&mut instance.applied, event_id, self.config.applied_window);
        instance.version += 1;
        instance.updated_at = now;
        let (rejected, audit_records) = match refusal {
            Some((r, rec)) => (Some(r.to_string()), vec![rec]),
            None => (None, vec![]),
        };
        let history = HistoryEntry {
            seq: instance.version,
            at: now,
            event_id: event_id.into(),
            event,
            actor,
            from: before.state_name.clone(),
            to: before.state_name.clone(),
            commands: vec![],
            rejected,
        };
        (
            Commit {
                instance,
                expected_version: before.version,
                history,
                timers: vec![],
                agents: vec![],
                approvals: vec![],
                audit: audit_records,
            },
            vec![],
        )
    }

    /// Turns each `UpdateAgent` into a `SaveAgent` of the record as stored (or as an earlier
    /// step of this batch left it) with the change applied, so the step writes only its fields.
    async fn resolve_agent_updates(
        &self,
        commands: &mut [Command],
        agents: &mut HashMap<String, Agent>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        for command in commands.iter_mut() {
            match command {
                Command::UpdateAgent { agent_id, change } => {
                    let current = match agents.get(agent_id.as_str()) {
                        Some(a) => Some(a.clone()),
                        None => self.store.agent(agent_id).await?,
                    };
                    let Some(mut agent) = current else {
                        tracing::warn!(
                            agent_id,
                            "an update names an agent the registry does not hold"
                        );
                        continue;
                    };
                    agent.apply(change, now);
                    agents.insert(agent.id.clone(), agent.clone());
                    *command = Command::SaveAgent(Box::new(agent));
                }
                Command::SaveAgent(a) => {
                    agents.insert(a.id.clone(), (**a).clone());
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn run_command(
        &self,
        workflow_id: &str,
        key: &str,
        (attempt, waits): (u32, u32),
    ) -> Result<Vec<(Message, Duration)>, HandleError> {
        let Some(instance) = self.store.instance(workflow_id).await? else {
            return Err(HandleError {
                message: format!("command {key} names unknown workflow {workflow_id}"),
                retryable: false,
            });
        };
        let Some(pending) = instance.pending.iter().find(|p| p.key == key) else {
            return Ok(vec![]); // completed already: a redelivered run is a no-op
        };
        let result = match &pending.command {
            Command::StartDecommission { agent_id, reason } => {
                self.start_decommission_command(agent_id, reason).await
            }
            Command::Supersede { agent_id, reason } => self.supersede(agent_id, reason).await,
            Command::LaunchReviews { campaign_id, round } => {
                self.launch_reviews(campaign_id, *round).await
            }
            Command::ApplyReview {
                agent_id,
                campaign_id,
                action,
                decided_by,
            } => {
                self.apply_review(agent_id, campaign_id, action, decided_by)
                    .await
            }
            command => self.executor.run(key, command).await,
        };
        let name = pending.command.name();
        let next = match result {
            Ok(event) => {
                fail::fail_point!("executor::after_effect");
                if self.config.crash_after.as_deref() == Some(name) {
                    eprintln!(
                        "STEWARD_CRASH_AFTER={name}: aborting after the side effect, before recording it"
                    );
                    std::process::abort();
                }
                (
                    Message::Completed {
                        workflow_id: workflow_id.into(),
                        key: key.into(),
                        event,
                    },
                    Duration::ZERO,
                )
            }
            // Throttled (a rate limit said when): try again then, without using up an attempt.
            Err(e) if e.retry_after.is_some() => {
                let wait = e
                    .retry_after
                    .unwrap_or_default()
                    .min(self.config.max_backoff);
                tracing::info!(key, wait_ms = wait.as_millis() as u64, error = %e, "command throttled; retrying after the wait");
                (
                    Message::Run {
                        workflow_id: workflow_id.into(),
                        key: key.into(),
                        attempt,
                        waits: waits + 1,
                    },
                    wait,
                )
            }
            Err(e) if e.retryable && attempt + 1 < self.config.max_attempts => {
                tracing::warn!(key, attempt, error = %e, "command failed; retrying with backoff");
                (
                    Message::Run {
                        workflow_id: workflow_id.into(),
                        key: key.into(),
                        attempt: attempt + 1,
                        waits: 0,
                    },
                    self.backoff(attempt),
                )
            }
            Err(e) => {
                tracing::warn!(key, attempt, error = %e, "command failed for good");
                let event = Event::CommandFailed {
                    command: name.into(),
                    retryable: e.retryable,
                    reason: e.message,
                };
                (
                    Message::Completed {
                        workflow_id: workflow_id.into(),
                        key: key.into(),
                        event: Some(event),
                    },
                    Duration::ZERO,
                )
            }
        };
        Ok(vec![next])
    }

    async fn send(&self, msgs: Vec<Message>, delay: Duration) -> Result<(), QueueError> {
        self.send_delayed(msgs.into_iter().map(|m| (m, delay)).collect())
            .await
    }

    async fn send_delayed(&self, msgs: Vec<(Message, Duration)>) -> Result<(), QueueError> {
        if msgs.is_empty() {
            return Ok(());
        }
        self.queue.send(outgoing(msgs)).await
    }

    async fn audit_refusal(
        &self,
        what: &str,
        actor: &Actor,
        agent: Option<(&str, &str)>,
        workflow_id: Option<&str>,
        why: &str,
    ) -> Result<(), StoreError> {
        tracing::info!(what, actor = %actor.describe(), why, "refused");
        self.store
            .append_audit(vec![audit::refusal(
                what,
                actor,
                agent,
                workflow_id,
                why,
                self.clock.now(),
            )])
            .await
    }
}

/// Name prefix of the dispatch timers (`steward:dispatch/<step seq>`); no machine uses it.
pub const DISPATCH_TIMER: &str = "steward:dispatch/";

/// What preparing a message produced: messages to send, or a step to write and then its messages.
enum Prepared {
    Send(Vec<(Message, Duration)>),
    Step(Box<Commit>, Vec<(Message, Duration)>),
}

fn outgoing(msgs: Vec<(Message, Duration)>) -> Vec<OutMessage> {
    msgs.into_iter()
        .map(|(m, delay)| OutMessage {
            group: m.workflow_id().to_string(),
            dedupe_id: m.dedupe_id(),
            body: serde_json::to_string(&m).expect("messages serialize"),
            delay,
        })
        .collect()
}

fn runs(workflow_id: &str, pending: &[PendingCommand]) -> Vec<(Message, Duration)> {
    pending
        .iter()
        .map(|p| {
            (
                Message::Run {
                    workflow_id: workflow_id.into(),
                    key: p.key.clone(),
                    attempt: 0,
                    waits: 0,
                },
                Duration::ZERO,
            )
        })
        .collect()
}

fn remember(applied: &mut Vec<String>, event_id: &str, window: usize) {
    applied.push(event_id.to_string());
    if applied.len() > window {
        let drop = applied.len() - window;
        applied.drain(..drop);
    }
}
