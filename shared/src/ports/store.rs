//! The store port: workflow instances, their history, the agent registry, approvals, timers and
//! the audit trail. Reads and writes are separate traits; `Store` is the sum an adapter provides.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use statemachines::detection::Baseline;
use statemachines::{Actor, Agent, ApprovalOutcome, ApprovalRequest, Command, Vote};

/// A side effect waiting to run, with its deterministic idempotency key (`<workflow>/<seq>/<index>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCommand {
    pub key: String,
    pub command: Command,
}

/// A workflow instance as stored (on DynamoDB the `WF#<id>` / `STATE` item; docs/adr/0008).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub kind: String,
    pub agent_id: Option<String>,
    pub state: serde_json::Value,
    pub state_name: String,
    pub terminal: bool,
    /// Bumped by every write; writes are conditional on the version read.
    pub version: u64,
    pub pending: Vec<PendingCommand>,
    /// Recently applied event ids (a bounded window) for at-least-once delivery.
    pub applied: Vec<String>,
    /// Hash of the request that started it: a duplicate request is recognised by it.
    pub request_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A set of instances read together (a campaign's review items: the campaign id). Written
    /// with the first commit and never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// One line of a workflow's replayable trail (`WF#<id>` / `EV#<seq>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub event_id: String,
    /// The event (or the start input summary), as JSON.
    pub event: serde_json::Value,
    pub actor: Actor,
    pub from: String,
    pub to: String,
    /// Names of the commands the step emitted.
    pub commands: Vec<String>,
    /// Set when the event was refused; the state did not change.
    pub rejected: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub workflow_id: String,
    pub name: String,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerChange {
    Set(Timer),
    Cancel { workflow_id: String, name: String },
}

/// An approval as stored: the request (with the votes given so far), a hash of exactly what was
/// asked, its outcome, and where it was posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub request: ApprovalRequest,
    pub action_hash: String,
    pub outcome: Option<ApprovalOutcome>,
    /// The chat messages that show it (updated when it is decided).
    #[serde(default)]
    pub messages: Vec<PostedMessage>,
}

/// A chat message that shows an approval: where it is and what it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedMessage {
    /// The conversation (a channel id, or the DM channel of a person).
    pub channel: String,
    /// The message's timestamp id in that conversation.
    pub ts: String,
    /// Why it was posted there: `owner`, `approver`, `security-channel`.
    pub route: String,
    /// When it was recorded. A record with an empty `ts` says a post was about to be made
    /// then: after a crash, the conversation is searched from this time before posting again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

impl ApprovalRecord {
    pub fn status(&self) -> &'static str {
        status_of(self.outcome.as_ref())
    }
}

/// The status an approval has with this outcome (none yet: pending).
pub fn status_of(outcome: Option<&ApprovalOutcome>) -> &'static str {
    match outcome {
        None => "pending",
        Some(ApprovalOutcome::Approved { .. }) => "approved",
        Some(ApprovalOutcome::Denied { .. }) => "denied",
        Some(ApprovalOutcome::Expired { .. }) => "expired",
        Some(ApprovalOutcome::Cancelled { .. }) => "cancelled",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // short-lived, one per commit; boxing buys nothing
pub enum ApprovalChange {
    Open(ApprovalRecord),
    Close {
        id: String,
        outcome: ApprovalOutcome,
    },
    /// One approver's "yes" towards a quorum.
    Vote {
        id: String,
        vote: Vote,
    },
}

/// An audit record, already shaped after OCSF; the store chains it (hash of previous + this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub time: DateTime<Utc>,
    pub body: serde_json::Value,
}

/// What one intake batch (a page of the System Log, a hook delivery, a run of token requests)
/// leaves behind besides its grants and audit records: the scope use of its grants, the
/// baselines detection updated, and the inbound ids it applied. Written by
/// [`StoreWrite::record_intake`] after every event of the batch was applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntakeWrites {
    /// `(client id, granted scopes, when)`: the latest use of each scope is kept.
    pub scope_use: Vec<(String, Vec<String>, DateTime<Utc>)>,
    /// `(agent id, baseline)`, each agent once, its baseline after the batch.
    pub baselines: Vec<(String, Baseline)>,
    /// `(source, inbound id)`: remembered as seen for the dedupe window.
    pub seen: Vec<(String, String)>,
}

/// A token grant (or refusal) as the identity provider reported it: the evidence detection,
/// reviews and the dashboard read. Kept apart from the audit chain (tens a second at scale,
/// where the chain takes a person's and a workflow's actions) for [`GRANT_RETENTION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantEvidence {
    /// The event's own id (Okta `uuid`): a repeat is stored once.
    pub event_id: String,
    /// `okta`, `ssf`, `dev-idp`.
    pub source: String,
    pub client_id: String,
    pub at: DateTime<Utc>,
    pub ip: Option<String>,
    pub requested: Vec<String>,
    pub granted: Vec<String>,
    pub success: bool,
    pub reason: Option<String>,
}

/// How long grant evidence is kept.
pub const GRANT_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A stored audit record with its chain hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainedAudit {
    pub seq: u64,
    /// The hash chain the record is on: 0 where the store keeps one chain (SQLite); on
    /// DynamoDB, the shard of its workflow, sealed with the others by checkpoints.
    #[serde(default)]
    pub chain: u32,
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

/// Where the audit trail ends: the last record sealed into the trail's order and the hash each
/// chain ends in after it (what a signed seal covers, see `audit::seal`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditTips {
    pub through: u64,
    /// Chain → the hash of its last record up to `through` (chains with no record are absent).
    pub chains: std::collections::BTreeMap<u32, String>,
}

impl AuditTips {
    /// SHA-256 over `chain:hash` lines in chain order: the same for every store.
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for (chain, hash) in &self.chains {
            h.update(format!("{chain}:{hash}\n").as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Everything one step writes, atomically: new state (conditional on `expected_version`),
/// history, timers, registry, approvals and audit.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub instance: Instance,
    /// The version read; 0 means "must not exist yet".
    pub expected_version: u64,
    pub history: HistoryEntry,
    pub timers: Vec<TimerChange>,
    pub agents: Vec<Agent>,
    /// The registry records this step changed field by field, as it read them: the commit
    /// conflicts when one was written since (by a step that committed in between), so a
    /// concurrent freeze and rotation cannot undo each other's fields.
    pub agent_reads: Vec<AgentRead>,
    pub approvals: Vec<ApprovalChange>,
    pub audit: Vec<AuditRecord>,
}

/// An agent record as a step read it before changing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRead {
    pub id: String,
    /// Its `updated_at` then: every write of an agent sets it.
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("workflow {id} changed underneath (expected version {expected}); reload and retry")]
    Conflict { id: String, expected: u64 },
    /// An agent a step changed field by field was written by another step since it was read.
    #[error("{0} was written by another step since it was read; reload and retry")]
    AgentChanged(String),
    #[error("stored record {0} is unreadable: {1}")]
    Corrupt(String, String),
    #[error("storage failed: {0}")]
    Backend(String),
}

/// An order of the registry (the dashboard's inventory sorts by these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentOrder {
    /// By id (registration order).
    #[default]
    Id,
    Name,
    Status,
    /// By owner, without (ASCII) case.
    Owner,
}

impl AgentOrder {
    /// The value an agent is sorted by (ties by id).
    pub fn key(self, a: &Agent) -> String {
        match self {
            AgentOrder::Id => a.id.clone(),
            AgentOrder::Name => a.name.clone(),
            AgentOrder::Status => a.status.as_str().to_string(),
            AgentOrder::Owner => a.owner.to_ascii_lowercase(),
        }
    }
}

#[async_trait]
pub trait StoreRead: Send + Sync {
    async fn instance(&self, id: &str) -> Result<Option<Instance>, StoreError>;
    async fn history(&self, workflow_id: &str) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Instances touching an agent, oldest first.
    async fn instances_for_agent(&self, agent_id: &str) -> Result<Vec<Instance>, StoreError>;
    async fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError>;
    async fn agent_by_name(&self, name: &str) -> Result<Option<Agent>, StoreError>;
    /// The whole registry. For reports and small registries only: the hot paths read through
    /// the indexed methods below.
    async fn agents(&self) -> Result<Vec<Agent>, StoreError>;
    /// The agents `owner` owns (compared without case), any status, in id order.
    async fn agents_owned_by(&self, owner: &str) -> Result<Vec<Agent>, StoreError>;
    /// Active agents whose credential was issued at or before `cutoff`, oldest credential
    /// first, at most `limit`: the sweep's candidates.
    async fn agents_with_credentials_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Agent>, StoreError>;
    /// Active agents with an expiry date, in id order.
    async fn time_bound_agents(&self) -> Result<Vec<Agent>, StoreError>;
    /// The registry a page at a time: agents with an id after `after`, in id order, at most
    /// `limit`.
    async fn agents_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Agent>, StoreError>;
    /// The registry a page at a time in `order`: agents after the one whose sort key and id
    /// are `after`, at most `limit`. The default reads the whole registry and sorts it; a store
    /// with an index for the order reads only the page.
    async fn agents_ordered(
        &self,
        order: AgentOrder,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Agent>, StoreError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.agents_after(cursor.as_deref(), 1000).await?;
            let full = page.len() == 1000;
            cursor = page.last().map(|a| a.id.clone());
            all.extend(page);
            if !full {
                break;
            }
        }
        all.sort_by(|a, b| (order.key(a), &a.id).cmp(&(order.key(b), &b.id)));
        Ok(all
            .into_iter()
            .filter(|a| {
                after.is_none_or(|(k, id)| (order.key(a).as_str(), a.id.as_str()) > (k, id))
            })
            .take(limit)
            .collect())
    }
    /// How many agents have each status (`AgentStatus::as_str`), counted on a status index;
    /// `None` where the store has none (DynamoDB: there the posture summary the sweep keeps
    /// stands in, as of when it was built).
    async fn agent_counts(
        &self,
    ) -> Result<Option<std::collections::BTreeMap<String, u64>>, StoreError> {
        Ok(None)
    }
    /// How many workflows of `kind` are in `state`, last written at or after `since`, counted on
    /// an index; `None` where the store has none (DynamoDB).
    async fn count_workflows(
        &self,
        _kind: &str,
        _state: &str,
        _since: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// How many instances of a group are in each state (`state_name`), without reading their
    /// bodies; `None` where the store cannot count them so (DynamoDB).
    async fn group_states(
        &self,
        _group: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, u64>>, StoreError> {
        Ok(None)
    }
    /// Token grants per hour since `since` (hour start, granted, refused), oldest first; `None`
    /// where the store keeps grants only per client (DynamoDB).
    async fn grants_per_hour(
        &self,
        _since: DateTime<Utc>,
    ) -> Result<Option<Vec<(DateTime<Utc>, u64, u64)>>, StoreError> {
        Ok(None)
    }
    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError>;
    async fn approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>, StoreError>;
    async fn due_timers(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, StoreError>;
    /// Grant evidence of `client_id` at or after `since`, oldest first, at most `limit`.
    async fn grants(
        &self,
        client_id: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<GrantEvidence>, StoreError>;
    /// How many partitions the due timers are kept in; each can be read (and its timers fired)
    /// on its own, by workers in parallel.
    fn timer_partitions(&self) -> u32 {
        1
    }
    /// The due timers of one partition (`0..timer_partitions()`), earliest first.
    async fn due_timers_in(
        &self,
        partition: u32,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Timer>, StoreError> {
        match partition {
            0 => self.due_timers(now, limit).await,
            _ => Ok(vec![]),
        }
    }
    async fn audit(&self, after_seq: u64, limit: usize) -> Result<Vec<ChainedAudit>, StoreError>;
    /// Where the trail ends now (seals what was appended first, where the store seals).
    async fn audit_tips(&self) -> Result<AuditTips, StoreError>;
    /// The audit records a workflow's steps wrote (`metadata.correlation_uid`), newest first,
    /// at most `limit`: what an agent's page shows beside its timeline.
    async fn workflow_audit(
        &self,
        workflow_id: &str,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Where a named reader of an outside log stopped (the System Log's `after` cursor).
    async fn cursor(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// The instances of a group (see [`Instance::group`]), in id order.
    async fn instances_in_group(&self, group: &str) -> Result<Vec<Instance>, StoreError>;
    /// When each scope of a client was last granted in a token (the evidence reviews show).
    async fn scope_usage(
        &self,
        client_id: &str,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError>;
    /// The chat messages recorded for `subject` (a review item id).
    async fn messages(&self, subject: &str) -> Result<Vec<PostedMessage>, StoreError>;
    /// The agent whose IdP client is `client_id` (the newest record, when several were).
    async fn agent_by_client(&self, client_id: &str) -> Result<Option<Agent>, StoreError>;
    /// What an agent's traffic usually looks like (anomaly detection's baseline).
    async fn baseline(&self, agent_id: &str) -> Result<Option<Baseline>, StoreError>;
}

#[async_trait]
pub trait StoreWrite: Send + Sync {
    /// Writes a step atomically; `Conflict` when the instance's version is not `expected_version`.
    async fn commit(&self, commit: Commit) -> Result<(), StoreError>;
    /// Writes several steps in one durable write (group commit); each succeeds or conflicts alone.
    async fn commit_batch(
        &self,
        commits: Vec<Commit>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut out = Vec::with_capacity(commits.len());
        for c in commits {
            out.push(self.commit(c).await);
        }
        Ok(out)
    }
    /// Removes a fired timer, only if it still has this due time (a re-armed timer stays).
    async fn remove_timer(&self, timer: &Timer) -> Result<(), StoreError>;
    /// [`remove_timer`](Self::remove_timer) for each of `timers`; one write where the store
    /// can (one transaction on SQLite).
    async fn remove_timers(&self, timers: &[Timer]) -> Result<(), StoreError> {
        for t in timers {
            self.remove_timer(t).await?;
        }
        Ok(())
    }
    /// Appends audit records that belong to no workflow step (refused requests, dead letters).
    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<(), StoreError>;
    /// Records a chat message that shows approval `id` (kept once per channel and ts).
    async fn add_approval_message(
        &self,
        id: &str,
        message: PostedMessage,
    ) -> Result<(), StoreError>;
    /// Records that inbound item `id` from `source` (an Okta event uuid, a Slack action) was
    /// seen; `true` the first time within `keep`, `false` for a repeat delivery.
    async fn remember_inbound(
        &self,
        source: &str,
        id: &str,
        keep: std::time::Duration,
    ) -> Result<bool, StoreError>;
    /// Saves where a named reader stopped; written only after what it read was applied.
    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), StoreError>;
    /// Keeps token grants as evidence (once per event id), off the audit chain, for
    /// [`GRANT_RETENTION`].
    async fn record_grants(&self, grants: &[GrantEvidence]) -> Result<(), StoreError>;
    /// Seals the audit records appended since the last seal, where the store keeps several
    /// chains (a checkpoint linking their tips). A store with one chain has nothing to do.
    async fn seal_audit(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Records that a token granted `scopes` to `client_id` at `at` (keeps the latest time).
    async fn record_scope_usage(
        &self,
        client_id: &str,
        scopes: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Records a chat message for `subject`, one per route (a later record of a route
    /// replaces the earlier one: the "about to post" marker, then the posted message).
    async fn put_message(&self, subject: &str, message: PostedMessage) -> Result<(), StoreError>;
    /// Saves an agent's baseline (the last write wins: a baseline is a statistic, and a lost
    /// update of one request changes no decision).
    async fn put_baseline(&self, agent_id: &str, baseline: &Baseline) -> Result<(), StoreError>;
    /// Writes what an intake batch leaves behind ([`IntakeWrites`]); for each of its `seen`
    /// ids, `true` the first time within `keep` (as [`remember_inbound`](Self::remember_inbound)).
    /// A store that can makes it one write (one fsync per batch on SQLite: a group commit);
    /// the default writes each part as its own method does.
    async fn record_intake(
        &self,
        writes: &IntakeWrites,
        keep: std::time::Duration,
    ) -> Result<Vec<bool>, StoreError> {
        for (client_id, scopes, at) in &writes.scope_use {
            self.record_scope_usage(client_id, scopes, *at).await?;
        }
        for (agent_id, baseline) in &writes.baselines {
            self.put_baseline(agent_id, baseline).await?;
        }
        let mut new = Vec::with_capacity(writes.seen.len());
        for (source, id) in &writes.seen {
            new.push(self.remember_inbound(source, id, keep).await?);
        }
        Ok(new)
    }
}

pub trait Store: StoreRead + StoreWrite {}
impl<T: StoreRead + StoreWrite> Store for T {}
