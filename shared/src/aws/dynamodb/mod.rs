//! The store on one DynamoDB table (single-table design: docs/adr/0008-dynamodb-single-table.md).
//!
//! | item | PK | SK |
//! |---|---|---|
//! | workflow instance | `WF#<id>` | `STATE` (conditional on `version`) |
//! | history | `WF#<id>` | `EV#<seq, 20 digits>` |
//! | timer | `WF#<id>` | `TIMER#<name>`, with `GSI1PK = TIMERS#<shard>` and `due` for the sparse index |
//! | agent | `AGENT#<id>` | `META` |
//! | agent → workflows | `AGENT#<id>` | `WF#<created>#<workflow id>` |
//! | agent name → ids | `AGENTNAME#<name>` | `<agent id>` (names may be reused; newest wins) |
//! | client id → agent | `AGENTCLIENT#<client id>` | `META` |
//! | detection baseline | `BASELINE#<agent id>` | `META` |
//! | approval | `APPROVAL#<id>` | `META` |
//! | audit (sharded chains) | `AUDIT#<shard>` | `SEQ#<n, 20 digits>`, and `HEAD` holding the shard's tip |
//! | audit checkpoints | `AUDITCP` | `CP#<first seq, 20 digits>` (every shard's tip, chained) |
//! | inbound dedupe | `SEEN#<source>#<id>` | `META`, expiring through the table's TTL (`expires_at`) |
//! | group → workflows | `GROUP#<group>` | `WF#<workflow id>` (a campaign's review items) |
//! | scope usage | `USAGE#<client id>` | `<scope>`, with `last_used` (epoch ms) |
//! | chat messages | `MSG#<subject>` | `<route>` |
//! | personal API token | `PAT#<id>` | `META` (the digest, never the token) |
//! | person → tokens | `PATS#<person>` | `<created>#<token id>` |
//! | token grant evidence | `GRANTS#<client id>#<hour>` | `<at, ms, 15 digits>#<event id>`, expiring through the TTL after 30 days |
//! | token grants per hour | `GRANTHOURS` | `<hour>`, with `granted` and `refused` counters (the dashboard's chart) |
//! | configuration | `CONFIG` | `policy`, `people` (current), `<document>#v<version>` (every push) |
//!
//! One step (state + history + timers + registry + approvals + audit) is one
//! `TransactWriteItems`, conditional on the instance version. No item is written by every
//! step: due timers spread over [`TIMER_SHARDS`] index partitions, and the audit trail over
//! [`audit_chain::AUDIT_SHARDS`] chains sealed by checkpoints (`audit_chain`).

pub mod audit_chain;
pub mod config;
mod personal_tokens;
mod read;
mod sessions;
mod step;
mod write;

use crate::audit::chain_hash;
use crate::aws::describe;
use crate::ports::store::{
    ApprovalChange, ApprovalRecord, AuditRecord, AuditTips, ChainedAudit, Commit, GRANT_RETENTION,
    GrantEvidence, HistoryEntry, Instance, PostedMessage, StoreError, StoreRead, StoreWrite, Timer,
    TimerChange, status_of,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as Av, BillingMode, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put,
    ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, Update,
};
use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use statemachines::detection::Baseline;
use statemachines::{Agent, ApprovalOutcome};
use std::collections::HashMap;

/// Partitions of the due-timer index; the tick queries each.
pub const TIMER_SHARDS: u32 = 16;
/// The sparse index of due timers.
pub const DUE_INDEX: &str = "due-timers";
/// Agent records by owner (`OWNERPK = OWNER#<owner, lower case>`).
pub const OWNER_INDEX: &str = "agents-by-owner";
/// Active agents by when their credential was issued (`CREDPK = CRED#<shard>`, `cred_issued`).
pub const CREDENTIAL_INDEX: &str = "agents-by-credential";
/// Every agent record by id (`REGPK = REG#<shard>`).
pub const REGISTRY_INDEX: &str = "agents-registry";
/// Active time-bound agents (`BOUNDPK = BOUND#<shard>`).
pub const TIME_BOUND_INDEX: &str = "agents-time-bound";
/// Open approvals (`PENDINGPK = PENDING#<shard>`, removed when one closes).
pub const PENDING_INDEX: &str = "approvals-pending";
/// Partitions of the sharded agent indexes: a write of every agent never lands on one index
/// partition.
pub const AGENT_INDEX_SHARDS: u32 = 16;
/// The table's TTL attribute (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// A transaction holds at most 100 items.
const MAX_TRANSACTION_ITEMS: usize = 100;
/// Retries when another writer extended the audit chain first (with jittered backoff).
const CHAIN_RETRIES: u32 = 24;
/// Audit records appended in one transaction (2 items each, plus the shard's tip).
const AUDIT_APPEND_CHUNK: usize = 48;
const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

type Item = HashMap<String, Av>;

pub struct DynamoStore {
    client: Client,
    table: String,
    /// The wall clock that picks the audit day (a test sets it to cross midnight).
    clock: fn() -> DateTime<Utc>,
    /// Per item key, how often a transaction was tried again because of it (a conditional
    /// check another writer made fail, or a conflicting transaction): a hot item shows here.
    contention: std::sync::Mutex<HashMap<String, u64>>,
}

fn s(v: impl Into<String>) -> Av {
    Av::S(v.into())
}

fn n(v: impl ToString) -> Av {
    Av::N(v.to_string())
}

fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("PK".to_string(), s(pk)), ("SK".to_string(), s(sk))])
}

fn backend(e: impl std::error::Error) -> StoreError {
    StoreError::Backend(describe(&e))
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Backend(format!("building a DynamoDB request: {e}"))
}

fn json<T: serde::Serialize>(v: &T) -> Result<Av, StoreError> {
    serde_json::to_string(v)
        .map(Av::S)
        .map_err(|e| StoreError::Backend(format!("encoding: {e}")))
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn number(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn body<T: DeserializeOwned>(item: &Item, attr: &str) -> Result<T, StoreError> {
    let what = || {
        format!(
            "{}/{}",
            text(item, "PK").unwrap_or("?"),
            text(item, "SK").unwrap_or("?")
        )
    };
    let raw = text(item, attr)
        .ok_or_else(|| StoreError::Corrupt(what(), format!("attribute `{attr}` is missing")))?;
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(what(), e.to_string()))
}

/// Where one grant's evidence is kept: its client's partition for the hour of the grant.
/// The partition of the hourly grant counters (`SK` = [`grant_hour`]).
const GRANT_HOURS: &str = "GRANTHOURS";

/// An hour as the grant partitions and counters name it (`2026-12-07T13`).
fn grant_hour(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H").to_string()
}

fn grant_key(g: &GrantEvidence) -> (String, String) {
    (
        format!("GRANTS#{}#{}", g.client_id, g.at.format("%Y-%m-%dT%H")),
        format!("{:015}#{}", g.at.timestamp_millis().max(0), g.event_id),
    )
}

/// The partition of a sharded agent index an agent's entry goes to.
fn agent_shard(agent_id: &str) -> u32 {
    let h = Sha256::digest(agent_id.as_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % AGENT_INDEX_SHARDS
}

/// The index attributes of an agent record: every agent is in the registry and its owner's
/// index; an active agent with a credential in the credential index; an active time-bound
/// agent in the time-bound index.
fn agent_index_attributes(a: &Agent, item: &mut Item) {
    let shard = agent_shard(&a.id);
    item.insert("agent_id".into(), s(&a.id));
    item.insert("REGPK".into(), s(format!("REG#{shard}")));
    item.insert(
        "OWNERPK".into(),
        s(format!("OWNER#{}", a.owner.trim().to_lowercase())),
    );
    let active = a.status == statemachines::AgentStatus::Active;
    if let (true, Some(issued)) = (active, a.credential_issued_at) {
        item.insert("CREDPK".into(), s(format!("CRED#{shard}")));
        item.insert("cred_issued".into(), n(issued.timestamp_millis()));
    }
    if active && a.expires_on.is_some() {
        item.insert("BOUNDPK".into(), s(format!("BOUND#{shard}")));
    }
}

fn wf(id: &str) -> String {
    format!("WF#{id}")
}

fn seq_key(seq: u64) -> String {
    format!("SEQ#{seq:020}")
}

fn timer_shard(workflow_id: &str) -> String {
    let h = Sha256::digest(workflow_id.as_bytes());
    format!(
        "TIMERS#{}",
        u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % TIMER_SHARDS
    )
}

/// What each item of a transaction is, to explain a cancellation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Instance,
    History,
    /// A record of the audit chain (its seq taken by another writer).
    ChainHead,
    /// The chain's `HEAD` (moved by another writer).
    ChainTip,
    /// The id marker of the audit record at this index (a record id is stored once).
    AuditId(usize),
    CloseApproval,
    /// An agent the step changed field by field, conditional on the record it read.
    AgentRead,
    Other,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            clock: Utc::now,
            contention: Default::default(),
        }
    }

    /// The same store with another clock for choosing the audit day.
    pub fn with_clock(mut self, clock: fn() -> DateTime<Utc>) -> Self {
        self.clock = clock;
        self
    }

    /// Retries per item key since this store was made (see `contention`).
    pub fn contention(&self) -> HashMap<String, u64> {
        self.contention
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    fn contended(&self, keys: impl IntoIterator<Item = String>) {
        // Bounded: a warm container keeps at most this many keys (the hottest show early).
        const KEYS: usize = 10_000;
        if let Ok(mut c) = self.contention.lock() {
            for k in keys {
                if let Some(n) = c.get_mut(&k) {
                    *n += 1;
                } else if c.len() < KEYS {
                    c.insert(k, 1);
                }
            }
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table as infra/template.yaml declares it (on-demand, the sparse due-timer
    /// index, TTL). For tests and local set-ups; in AWS the template owns the table.
    pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(build_err)
        };
        let key_el = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(build_err)
        };
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("PK", ScalarAttributeType::S)?)
            .attribute_definitions(attr("SK", ScalarAttributeType::S)?)
            .attribute_definitions(attr("GSI1PK", ScalarAttributeType::S)?)
            .attribute_definitions(attr("due", ScalarAttributeType::N)?)
            .attribute_definitions(attr("OWNERPK", ScalarAttributeType::S)?)
            .attribute_definitions(attr("CREDPK", ScalarAttributeType::S)?)
            .attribute_definitions(attr("REGPK", ScalarAttributeType::S)?)
            .attribute_definitions(attr("BOUNDPK", ScalarAttributeType::S)?)
            .attribute_definitions(attr("PENDINGPK", ScalarAttributeType::S)?)
            .attribute_definitions(attr("agent_id", ScalarAttributeType::S)?)
            .attribute_definitions(attr("cred_issued", ScalarAttributeType::N)?)
            .key_schema(key_el("PK", KeyType::Hash)?)
            .key_schema(key_el("SK", KeyType::Range)?)
            .set_global_secondary_indexes(Some(
                [
                    (DUE_INDEX, "GSI1PK", "due"),
                    (OWNER_INDEX, "OWNERPK", "agent_id"),
                    (CREDENTIAL_INDEX, "CREDPK", "cred_issued"),
                    (REGISTRY_INDEX, "REGPK", "agent_id"),
                    (TIME_BOUND_INDEX, "BOUNDPK", "agent_id"),
                    (PENDING_INDEX, "PENDINGPK", "agent_id"),
                ]
                .into_iter()
                .map(|(name, hash, range)| {
                    GlobalSecondaryIndex::builder()
                        .index_name(name)
                        .key_schema(key_el(hash, KeyType::Hash)?)
                        .key_schema(key_el(range, KeyType::Range)?)
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::All)
                                .build(),
                        )
                        .build()
                        .map_err(build_err)
                })
                .collect::<Result<Vec<_>, _>>()?,
            ))
            .send()
            .await
            .map_err(backend)?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build()
                    .map_err(build_err)?,
            )
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item)
    }

    /// The items that exist among `keys` (at most 100), read consistently in one request.
    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(build_err)?,
        );
        while let Some(request) = pending.take() {
            let page = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(backend)?;
            if let Some(mut found) = page.responses {
                out.extend(found.remove(&self.table).unwrap_or_default());
            }
            // DynamoDB may leave keys unprocessed under load: ask again for those.
            pending = page
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .filter(|k| !k.keys().is_empty());
        }
        Ok(out)
    }

    /// Items of partition `pk`, optionally narrowed by a sort-key condition on `:v`.
    async fn query(
        &self,
        pk: String,
        sort: Option<(&str, String)>,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        self.pages(None, "PK", pk, sort.map(|(c, v)| (c, s(v))), limit)
            .await
    }

    /// Items of one partition of a secondary index (`hash = pk`), optionally narrowed by a
    /// sort-key condition on `:v`, in sort-key order, at most `limit`.
    async fn index_query(
        &self,
        index: &str,
        hash: &str,
        pk: String,
        sort: Option<(&str, Av)>,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        self.pages(Some(index), hash, pk, sort, limit).await
    }

    /// A query page by page: of the table (read consistently) or of a secondary index (which
    /// cannot be).
    async fn pages(
        &self,
        index: Option<&str>,
        hash: &str,
        pk: String,
        sort: Option<(&str, Av)>,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_string))
                .consistent_read(index.is_none())
                .expression_attribute_names("#h", hash)
                .expression_attribute_values(":pk", s(pk.clone()));
            q = match &sort {
                Some((condition, value)) => q
                    .key_condition_expression(format!("#h = :pk AND {condition}"))
                    .expression_attribute_values(":v", value.clone()),
                None => q.key_condition_expression("#h = :pk"),
            };
            let page = q
                .set_limit(limit.map(|l| (l - out.len()).clamp(1, 1000) as i32))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() || limit.is_some_and(|l| out.len() >= l) {
                return Ok(out);
            }
        }
    }

    /// A filtered scan (inventory listings; not on any hot path).
    async fn scan(
        &self,
        filter: &str,
        values: Item,
        names: &[(&str, &str)],
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let mut scan = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(filter)
                .set_expression_attribute_values(Some(values.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start);
            for (k, v) in names {
                scan = scan.expression_attribute_names(*k, *v);
            }
            let page = scan.send().await.map_err(backend)?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }
}
