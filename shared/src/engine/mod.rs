//! The durable engine (docs/ARCHITECTURE.md, "The commit protocol"; docs/adr/0020). It loads a
//! workflow instance, applies an event with its pure machine, and writes the step (state,
//! history, timers, registry, approvals, audit, pending commands) together with the messages it
//! sends and the acks of the messages it consumed, in one write through the outbox port.
//! Delivery is at least once everywhere, so every step is idempotent: applied event ids are
//! remembered, command keys are deterministic, and executors honour them.
//!
//! | file | what it holds |
//! |---|---|
//! | `start.rs` | onboarding and scope-change requests, and a new instance's first step |
//! | `decisions.rs` | approval decisions and cancellations |
//! | `delivery.rs` | the work loop: timers, queue deliveries, backoff |
//! | `step.rs` | the commit protocol: apply in memory, build the commit, write through the outbox |
//! | `commands.rs` | running a pending command and reporting its result |
//! | `executor.rs` | what a command does at the identity provider, vault and human channel |
//! | `lifecycle.rs` | rotation, decommission and expiry requests and their schedule |
//! | `reviews.rs` | access-review campaigns |
//! | `detection.rs` | anomaly detection on token requests and outside signals |
//! | `discovery.rs` | shadow agents found at the identity provider |
//! | `owners.rs` | owner loss |
//! | `posture.rs` | the posture summary kept for the dashboard's overview |

pub mod certificates;
mod commands;
mod decisions;
mod delivery;

/// How many due timers one [`Engine::tick`] fires.
pub const TICK_BATCH: usize = 1000;
pub mod keys;
mod start;
mod step;

pub use step::*;

pub mod detection;
pub mod discovery;
pub mod executor;
pub mod lifecycle;
pub mod message;
#[macro_use]
pub mod metrics;
mod owners;
pub mod posture;
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
    /// Attempts per external command before it fails for good (`CommandFailed`); a refusal
    /// that no retry can change (a 4xx from the IdP) fails at once.
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
    /// This process has no identity provider (the AWS functions other than the worker): work
    /// that calls it, such as the sweep's discovery, is queued for the worker instead.
    pub identity_provider_elsewhere: bool,
    /// Due timers one worker fires per message of the fanned-out tick: about 1 s of SQS sends
    /// and conditional deletes for 200, so a batch of 10 such messages stays well inside a
    /// worker invocation's time.
    pub timers_per_round: usize,
    /// The longest one call to a peer (an IdP, Slack or vault command) may take, whatever the
    /// peer's own timeouts and retries add up to: past it the attempt fails and is retried with
    /// backoff. Under the local
    /// queue's visibility (a command still running is never delivered again), and ten of them
    /// fit in a worker invocation on AWS (`Timeout` in the template).
    pub command_deadline: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            // Retries span an outage of about an hour and a half (0.2 s doubling to 15 min,
            // SQS's longest delay): an IdP or Slack down for an hour delays a kill switch or an
            // approval request, and does not drop it.
            max_attempts: 18,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(15 * 60),
            applied_window: 16,
            visibility: Duration::from_secs(30),
            dispatch_check: Duration::from_secs(60),
            crash_after: std::env::var("STEWARD_CRASH_AFTER")
                .ok()
                .filter(|s| !s.is_empty()),
            identity_provider_elsewhere: false,
            timers_per_round: 200,
            command_deadline: Duration::from_secs(20),
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

    pub async fn find_agent(&self, agent_ref: &str) -> Result<Option<Agent>, EngineError> {
        if let Some(a) = self.store.agent(agent_ref).await? {
            return Ok(Some(a));
        }
        Ok(self.store.agent_by_name(agent_ref).await?)
    }
}
