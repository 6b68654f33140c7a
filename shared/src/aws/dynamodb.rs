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
//! | audit | `AUDIT#<day>` | `SEQ#<seq, 20 digits>`, and `HEAD` holding the chain's tip that day |
//! | inbound dedupe | `SEEN#<source>#<id>` | `META`, expiring through the table's TTL (`expires_at`) |
//! | group → workflows | `GROUP#<group>` | `WF#<workflow id>` (a campaign's review items) |
//! | scope usage | `USAGE#<client id>` | `<scope>`, with `last_used` (epoch ms) |
//! | chat messages | `MSG#<subject>` | `<route>` |
//!
//! One step (state + history + timers + registry + approvals + audit) is one
//! `TransactWriteItems`, conditional on the instance version. Nothing is keyed by a constant:
//! due timers spread over [`TIMER_SHARDS`] index partitions, and the audit chain moves to a new
//! partition every day (a day's `HEAD` links to the previous day's, so the chain is unbroken).

use crate::audit::chain_hash;
use crate::aws::describe;
use crate::ports::store::{
    ApprovalChange, ApprovalRecord, AuditRecord, ChainedAudit, Commit, HistoryEntry, Instance,
    PostedMessage, StoreError, StoreRead, StoreWrite, Timer, TimerChange, status_of,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as Av, BillingMode, ConditionCheck, Delete,
    GlobalSecondaryIndex, KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType,
    Put, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, Update,
};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use statemachines::detection::Baseline;
use statemachines::{Agent, ApprovalOutcome};
use std::collections::HashMap;

/// Partitions of the due-timer index; the tick queries each.
pub const TIMER_SHARDS: u32 = 16;
/// The sparse index of due timers.
pub const DUE_INDEX: &str = "due-timers";
/// The table's TTL attribute (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// Audit sequence numbers are `<day number> * SEQ_PER_DAY + <n-th record of that day>`, so a
/// reader resuming after a seq knows which day partition to read.
const SEQ_PER_DAY: u64 = 1_000_000_000;
/// A transaction holds at most 100 items.
const MAX_TRANSACTION_ITEMS: usize = 100;
/// Retries when another writer extended the audit chain first (with jittered backoff).
const CHAIN_RETRIES: u32 = 12;
const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

type Item = HashMap<String, Av>;

pub struct DynamoStore {
    client: Client,
    table: String,
    /// The wall clock that picks the audit day (a test sets it to cross midnight).
    clock: fn() -> DateTime<Utc>,
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

fn day_number(t: DateTime<Utc>) -> u64 {
    t.timestamp().div_euclid(86_400).max(0) as u64
}

fn day_name(day: u64) -> String {
    let date = NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.checked_add_days(chrono::Days::new(day)))
        .unwrap_or_default();
    format!("AUDIT#{}", date.format("%Y-%m-%d"))
}

/// What each item of a transaction is, to explain a cancellation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Instance,
    History,
    ChainHead,
    /// The id marker of the audit record at this index (a record id is stored once).
    AuditId(usize),
    CloseApproval,
    Other,
}

/// The audit chain's tip as read before a write.
struct ChainTip {
    day: u64,
    /// Today's `HEAD` exists (update it) or not (create it).
    head_exists: bool,
    genesis_exists: bool,
    seq: u64,
    hash: String,
    /// A new day's first records link to this day's tip (day, seq as read).
    links_to: Option<(u64, u64)>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            clock: Utc::now,
        }
    }

    /// The same store with another clock for choosing the audit day.
    pub fn with_clock(mut self, clock: fn() -> DateTime<Utc>) -> Self {
        self.clock = clock;
        self
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
            .key_schema(key_el("PK", KeyType::Hash)?)
            .key_schema(key_el("SK", KeyType::Range)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(DUE_INDEX)
                    .key_schema(key_el("GSI1PK", KeyType::Hash)?)
                    .key_schema(key_el("due", KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(build_err)?,
            )
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
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk.clone()));
            q = match &sort {
                Some((condition, value)) => q
                    .key_condition_expression(format!("PK = :pk AND {condition}"))
                    .expression_attribute_values(":v", s(value.clone())),
                None => q.key_condition_expression("PK = :pk"),
            };
            let page = q
                .consistent_read(true)
                .set_limit(limit.map(|l| (l - out.len()).min(1000) as i32))
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

    async fn genesis_day(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .get("AUDIT#GENESIS".into(), "META")
            .await?
            .and_then(|i| number(&i, "day")))
    }

    /// Reads today's chain tip; on the first write of a day, the last tip of an earlier day.
    async fn chain_tip(&self, now: DateTime<Utc>) -> Result<ChainTip, StoreError> {
        let today = day_number(now);
        // Today's and tomorrow's tips in one round trip: a writer whose clock runs ahead may
        // have started tomorrow already, and then this writer follows it.
        let mut heads = self
            .get_many(vec![
                key(day_name(today), "HEAD"),
                key(day_name(today + 1), "HEAD"),
            ])
            .await?;
        let tomorrow = day_name(today + 1);
        let (day, found) = match heads.iter().position(|h| text(h, "PK") == Some(&tomorrow)) {
            Some(i) => (today + 1, Some(heads.swap_remove(i))),
            None => (today, heads.pop()),
        };
        if let Some(head) = found {
            return Ok(ChainTip {
                day,
                head_exists: true,
                genesis_exists: true,
                seq: number(&head, "seq").unwrap_or(day * SEQ_PER_DAY),
                hash: text(&head, "hash").unwrap_or(ZERO_HASH).to_string(),
                links_to: None,
            });
        }
        let genesis = self.genesis_day().await?;
        let mut hash = ZERO_HASH.to_string();
        let mut links_to = None;
        if let Some(first) = genesis {
            let mut d = day;
            while d > first {
                d -= 1;
                if let Some(head) = self.get(day_name(d), "HEAD").await? {
                    hash = text(&head, "hash").unwrap_or(ZERO_HASH).to_string();
                    links_to = Some((d, number(&head, "seq").unwrap_or(d * SEQ_PER_DAY)));
                    break;
                }
            }
        }
        Ok(ChainTip {
            day,
            head_exists: false,
            genesis_exists: genesis.is_some(),
            seq: day * SEQ_PER_DAY,
            hash,
            links_to,
        })
    }

    /// The transaction items that append `records` to the chain after `tip`.
    fn chain_items(
        &self,
        tip: &ChainTip,
        records: &[AuditRecord],
    ) -> Result<Vec<(Role, TransactWriteItem)>, StoreError> {
        let mut items = Vec::with_capacity(2 * records.len() + 2);
        let (mut seq, mut prev) = (tip.seq, tip.hash.clone());
        let partition = day_name(tip.day);
        for (i, record) in records.iter().enumerate() {
            // Like the embedded store, a record id is appended once: a retried append (after a
            // lost response) or a repeated one finds its marker and leaves the record out.
            let marker = key(format!("AUDITID#{}", record.id), "META");
            items.push((
                Role::AuditId(i),
                self.put(marker, Some("attribute_not_exists(PK)"), &[], &[])?,
            ));
            seq += 1;
            let hash = chain_hash(&prev, record);
            let chained = ChainedAudit {
                seq,
                record: record.clone(),
                prev_hash: prev,
                hash: hash.clone(),
            };
            let mut item = key(partition.clone(), seq_key(seq));
            item.insert("body".into(), json(&chained)?);
            items.push((
                Role::ChainHead,
                self.put(item, Some("attribute_not_exists(PK)"), &[], &[])?,
            ));
            prev = hash;
        }
        let mut head = key(partition, "HEAD");
        head.insert("seq".into(), n(seq));
        head.insert("hash".into(), s(prev));
        items.push((
            Role::ChainHead,
            if tip.head_exists {
                self.put(head, Some("seq = :seq"), &[], &[(":seq", n(tip.seq))])?
            } else {
                self.put(head, Some("attribute_not_exists(PK)"), &[], &[])?
            },
        ));
        // No fork at midnight: appending to a day requires that the next day has not started,
        // and starting a day requires that the day it links to has not moved since it was read.
        items.push((
            Role::ChainHead,
            self.condition(
                key(day_name(tip.day + 1), "HEAD"),
                "attribute_not_exists(PK)",
                None,
            )?,
        ));
        if let Some((day, seq)) = tip.links_to {
            items.push((
                Role::ChainHead,
                self.condition(key(day_name(day), "HEAD"), "seq = :seq", Some(n(seq)))?,
            ));
        }
        if !tip.genesis_exists {
            let mut g = key("AUDIT#GENESIS", "META");
            g.insert("day".into(), n(tip.day));
            items.push((
                Role::ChainHead,
                self.put(g, Some("attribute_not_exists(PK)"), &[], &[])?,
            ));
        }
        Ok(items)
    }

    fn put(
        &self,
        item: Item,
        condition: Option<&str>,
        names: &[(&str, &str)],
        values: &[(&str, Av)],
    ) -> Result<TransactWriteItem, StoreError> {
        let mut p = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string));
        for (k, v) in names {
            p = p.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            p = p.expression_attribute_values(*k, v.clone());
        }
        Ok(TransactWriteItem::builder()
            .put(p.build().map_err(build_err)?)
            .build())
    }

    fn condition(
        &self,
        item_key: Item,
        expression: &str,
        seq: Option<Av>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut c = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(item_key))
            .condition_expression(expression);
        if let Some(v) = seq {
            c = c.expression_attribute_values(":seq", v);
        }
        Ok(TransactWriteItem::builder()
            .condition_check(c.build().map_err(build_err)?)
            .build())
    }

    fn delete(&self, pk: String, sk: String) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk, sk)))
                    .build()
                    .map_err(build_err)?,
            )
            .build())
    }

    /// The items of one step, each with its role (to read a cancellation).
    fn step_items(&self, c: &Commit) -> Result<Vec<(Role, TransactWriteItem)>, StoreError> {
        let i = &c.instance;
        let mut items = Vec::new();
        let mut state = key(wf(&i.id), "STATE");
        state.insert("version".into(), n(i.version));
        state.insert("body".into(), json(i)?);
        items.push((
            Role::Instance,
            if c.expected_version == 0 {
                self.put(state, Some("attribute_not_exists(PK)"), &[], &[])?
            } else {
                self.put(
                    state,
                    Some("version = :expected"),
                    &[],
                    &[(":expected", n(c.expected_version))],
                )?
            },
        ));
        let mut history = key(wf(&i.id), format!("EV#{:020}", c.history.seq));
        history.insert("body".into(), json(&c.history)?);
        items.push((
            Role::History,
            self.put(history, Some("attribute_not_exists(PK)"), &[], &[])?,
        ));
        if c.expected_version == 0
            && let Some(agent) = &i.agent_id
        {
            let mut link = key(
                format!("AGENT#{agent}"),
                format!(
                    "WF#{}#{}",
                    i.created_at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                    i.id
                ),
            );
            link.insert("workflow_id".into(), s(&i.id));
            items.push((Role::Other, self.put(link, None, &[], &[])?));
        }
        if c.expected_version == 0
            && let Some(group) = &i.group
        {
            let mut link = key(format!("GROUP#{group}"), format!("WF#{}", i.id));
            link.insert("workflow_id".into(), s(&i.id));
            items.push((Role::Other, self.put(link, None, &[], &[])?));
        }
        // One change per item: the last change to a timer (or agent) in a step wins.
        let mut timers: Vec<(&str, &str, &TimerChange)> = Vec::new();
        for t in &c.timers {
            let (wid, name) = match t {
                TimerChange::Set(t) => (t.workflow_id.as_str(), t.name.as_str()),
                TimerChange::Cancel { workflow_id, name } => (workflow_id.as_str(), name.as_str()),
            };
            timers.retain(|(w, nm, _)| !(*w == wid && *nm == name));
            timers.push((wid, name, t));
        }
        for (wid, name, change) in timers {
            let item = match change {
                TimerChange::Set(t) => {
                    let mut item = key(wf(wid), format!("TIMER#{name}"));
                    item.insert("GSI1PK".into(), s(timer_shard(wid)));
                    item.insert("due".into(), n(t.due_at.timestamp_millis()));
                    item.insert("workflow_id".into(), s(wid));
                    item.insert("name".into(), s(name));
                    self.put(item, None, &[], &[])?
                }
                TimerChange::Cancel { .. } => self.delete(wf(wid), format!("TIMER#{name}"))?,
            };
            items.push((Role::Other, item));
        }
        let mut agents: Vec<&Agent> = Vec::new();
        for a in &c.agents {
            agents.retain(|x| x.id != a.id);
            agents.push(a);
        }
        for a in agents {
            let mut item = key(format!("AGENT#{}", a.id), "META");
            item.insert("name".into(), s(&a.name));
            item.insert("body".into(), json(a)?);
            items.push((Role::Other, self.put(item, None, &[], &[])?));
            let mut by_name = key(format!("AGENTNAME#{}", a.name), a.id.clone());
            by_name.insert("agent_id".into(), s(&a.id));
            by_name.insert("updated_at".into(), s(a.updated_at.to_rfc3339()));
            items.push((Role::Other, self.put(by_name, None, &[], &[])?));
            if let Some(client_id) = &a.client_id {
                let mut by_client = key(format!("AGENTCLIENT#{client_id}"), "META");
                by_client.insert("agent_id".into(), s(&a.id));
                items.push((Role::Other, self.put(by_client, None, &[], &[])?));
            }
        }
        for change in &c.approvals {
            match change {
                ApprovalChange::Open(r) => {
                    let mut item = key(format!("APPROVAL#{}", r.request.id), "META");
                    item.insert("request".into(), json(&r.request)?);
                    item.insert("action_hash".into(), s(&r.action_hash));
                    item.insert("status".into(), s(r.status()));
                    if let Some(o) = &r.outcome {
                        item.insert("outcome".into(), json(o)?);
                    }
                    items.push((Role::Other, self.put(item, None, &[], &[])?));
                }
                ApprovalChange::Close { id, outcome } => {
                    let status = status_of(Some(outcome));
                    let update = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(format!("APPROVAL#{id}"), "META")))
                        .update_expression("SET outcome = :o, #st = :s")
                        .condition_expression("attribute_exists(PK)")
                        .expression_attribute_names("#st", "status")
                        .expression_attribute_values(":o", json(outcome)?)
                        .expression_attribute_values(":s", s(status))
                        .build()
                        .map_err(build_err)?;
                    items.push((
                        Role::CloseApproval,
                        TransactWriteItem::builder().update(update).build(),
                    ));
                }
                ApprovalChange::Vote { id, vote } => {
                    let update = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(format!("APPROVAL#{id}"), "META")))
                        .update_expression(
                            "SET votes = list_append(if_not_exists(votes, :none), :v)",
                        )
                        .condition_expression("attribute_exists(PK)")
                        .expression_attribute_values(":none", Av::L(vec![]))
                        .expression_attribute_values(":v", Av::L(vec![json(vote)?]))
                        .build()
                        .map_err(build_err)?;
                    items.push((
                        Role::CloseApproval,
                        TransactWriteItem::builder().update(update).build(),
                    ));
                }
            }
        }
        Ok(items)
    }

    /// Writes `items` (plus the audit chain extension for `audit`) in one transaction,
    /// re-reading the chain tip when another writer extended it first.
    async fn transact(
        &self,
        what: &str,
        items: Vec<(Role, TransactWriteItem)>,
        audit: &[AuditRecord],
        conflict: impl Fn() -> StoreError,
    ) -> Result<(), StoreError> {
        let mut audit: Vec<AuditRecord> = audit.to_vec();
        for attempt in 0..CHAIN_RETRIES {
            if attempt > 0 {
                let ms = 10u64 << attempt.min(6);
                let jitter = rand::random::<u64>() % ms;
                tokio::time::sleep(std::time::Duration::from_millis(ms / 2 + jitter)).await;
            }
            if items.is_empty() && audit.is_empty() {
                return Ok(()); // every record was stored before
            }
            let mut all = items.clone();
            if !audit.is_empty() {
                let tip = self.chain_tip((self.clock)()).await?;
                all.extend(self.chain_items(&tip, &audit)?);
            }
            if all.len() > MAX_TRANSACTION_ITEMS {
                return Err(StoreError::Backend(format!(
                    "{what} writes {} items; a DynamoDB transaction holds at most {MAX_TRANSACTION_ITEMS}",
                    all.len()
                )));
            }
            let roles: Vec<Role> = all.iter().map(|(r, _)| *r).collect();
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(all.into_iter().map(|(_, i)| i).collect()))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let service = err.into_service_error();
            let TransactWriteItemsError::TransactionCanceledException(cancelled) = &service else {
                return Err(StoreError::Backend(describe(&service)));
            };
            let failed: Vec<(Role, &str)> = cancelled
                .cancellation_reasons()
                .iter()
                .zip(&roles)
                .filter_map(|(r, role)| r.code().filter(|c| *c != "None").map(|c| (*role, c)))
                .collect();
            let condition = |role: Role| {
                failed
                    .iter()
                    .any(|(r, c)| *r == role && *c == "ConditionalCheckFailed")
            };
            if condition(Role::Instance) || condition(Role::History) {
                return Err(conflict());
            }
            let stored: Vec<usize> = failed
                .iter()
                .filter_map(|(r, c)| match r {
                    Role::AuditId(i) if *c == "ConditionalCheckFailed" => Some(*i),
                    _ => None,
                })
                .collect();
            if !stored.is_empty() {
                // Those records are in the trail already: leave them out and write the rest.
                let mut i = 0;
                audit.retain(|_| {
                    let keep = !stored.contains(&i);
                    i += 1;
                    keep
                });
                continue;
            }
            if condition(Role::CloseApproval) {
                return Err(StoreError::Corrupt(
                    what.to_string(),
                    "it closes an approval that was never opened".into(),
                ));
            }
            let retry = condition(Role::ChainHead)
                || failed.iter().any(|(_, c)| *c == "TransactionConflict");
            if !retry {
                return Err(StoreError::Backend(format!(
                    "{what} was cancelled: {}",
                    failed
                        .iter()
                        .map(|(r, c)| format!("{r:?} {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Err(StoreError::Backend(format!(
            "{what}: the audit chain kept moving; gave up after {CHAIN_RETRIES} attempts"
        )))
    }
}

fn approval_from(item: &Item) -> Result<ApprovalRecord, StoreError> {
    let mut request: statemachines::ApprovalRequest = body(item, "request")?;
    // Votes and messages are appended to their own lists, so no write rewrites the request.
    for vote in json_list::<statemachines::Vote>(item, "votes")? {
        if !request.votes.contains(&vote) {
            request.votes.push(vote);
        }
    }
    let mut messages: Vec<PostedMessage> = Vec::new();
    for m in json_list::<PostedMessage>(item, "messages")? {
        if !messages
            .iter()
            .any(|k| k.channel == m.channel && k.ts == m.ts)
        {
            messages.push(m);
        }
    }
    Ok(ApprovalRecord {
        request,
        action_hash: text(item, "action_hash").unwrap_or_default().to_string(),
        outcome: match item.get("outcome") {
            Some(_) => Some(body::<ApprovalOutcome>(item, "outcome")?),
            None => None,
        },
        messages,
    })
}

fn json_list<T: DeserializeOwned>(item: &Item, attr: &str) -> Result<Vec<T>, StoreError> {
    let Some(Av::L(values)) = item.get(attr) else {
        return Ok(vec![]);
    };
    values
        .iter()
        .map(|v| {
            let text = v.as_s().map_err(|_| {
                StoreError::Corrupt(attr.to_string(), "list entry is not a string".into())
            })?;
            serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(attr.to_string(), e.to_string()))
        })
        .collect()
}

#[async_trait]
impl StoreRead for DynamoStore {
    async fn instance(&self, id: &str) -> Result<Option<Instance>, StoreError> {
        self.get(wf(id), "STATE")
            .await?
            .map(|i| body(&i, "body"))
            .transpose()
    }

    async fn history(&self, workflow_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.query(
            wf(workflow_id),
            Some(("begins_with(SK, :v)", "EV#".into())),
            None,
        )
        .await?
        .iter()
        .map(|i| body(i, "body"))
        .collect()
    }

    async fn instances_for_agent(&self, agent_id: &str) -> Result<Vec<Instance>, StoreError> {
        let links = self
            .query(
                format!("AGENT#{agent_id}"),
                Some(("begins_with(SK, :v)", "WF#".into())),
                None,
            )
            .await?;
        let mut out = Vec::with_capacity(links.len());
        for link in &links {
            if let Some(id) = text(link, "workflow_id")
                && let Some(i) = self.instance(id).await?
            {
                out.push(i);
            }
        }
        Ok(out)
    }

    async fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        self.get(format!("AGENT#{id}"), "META")
            .await?
            .map(|i| body(&i, "body"))
            .transpose()
    }

    async fn agent_by_name(&self, name: &str) -> Result<Option<Agent>, StoreError> {
        let ids = self.query(format!("AGENTNAME#{name}"), None, None).await?;
        let newest = ids
            .iter()
            .max_by_key(|i| text(i, "updated_at").unwrap_or_default().to_string())
            .and_then(|i| text(i, "agent_id"));
        match newest {
            Some(id) => self.agent(id).await,
            None => Ok(None),
        }
    }

    async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        let items = self
            .scan(
                "begins_with(PK, :p) AND SK = :meta",
                HashMap::from([(":p".into(), s("AGENT#")), (":meta".into(), s("META"))]),
                &[],
            )
            .await?;
        let mut agents: Vec<Agent> = items
            .iter()
            .map(|i| body(i, "body"))
            .collect::<Result<_, _>>()?;
        agents.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(agents)
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        self.get(format!("APPROVAL#{id}"), "META")
            .await?
            .map(|i| approval_from(&i))
            .transpose()
    }

    async fn approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>, StoreError> {
        let mut values = HashMap::from([(":p".to_string(), s("APPROVAL#"))]);
        let filter = if pending_only {
            values.insert(":pending".into(), s("pending"));
            "begins_with(PK, :p) AND #st = :pending"
        } else {
            "begins_with(PK, :p)"
        };
        let names: &[(&str, &str)] = if pending_only {
            &[("#st", "status")]
        } else {
            &[]
        };
        let items = self.scan(filter, values, names).await?;
        let mut out: Vec<ApprovalRecord> =
            items.iter().map(approval_from).collect::<Result<_, _>>()?;
        out.sort_by(|a, b| {
            (a.request.requested_at, &a.request.id).cmp(&(b.request.requested_at, &b.request.id))
        });
        Ok(out)
    }

    async fn due_timers(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let mut out = Vec::new();
        for shard in 0..TIMER_SHARDS {
            let mut start = None;
            loop {
                let page = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(DUE_INDEX)
                    .key_condition_expression("GSI1PK = :p AND due <= :now")
                    .expression_attribute_values(":p", s(format!("TIMERS#{shard}")))
                    .expression_attribute_values(":now", n(now.timestamp_millis()))
                    .limit(limit.clamp(1, 1000) as i32)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(backend)?;
                for item in page.items.unwrap_or_default() {
                    let (Some(wid), Some(name), Some(due)) = (
                        text(&item, "workflow_id"),
                        text(&item, "name"),
                        item.get("due")
                            .and_then(|v| v.as_n().ok())
                            .and_then(|v| v.parse::<i64>().ok()),
                    ) else {
                        continue;
                    };
                    out.push(Timer {
                        workflow_id: wid.to_string(),
                        name: name.to_string(),
                        due_at: Utc
                            .timestamp_millis_opt(due)
                            .single()
                            .unwrap_or(DateTime::<Utc>::MIN_UTC),
                    });
                }
                start = page.last_evaluated_key;
                if start.is_none() || out.len() >= limit * (shard as usize + 1) {
                    break;
                }
            }
        }
        out.sort_by(|a, b| {
            (a.due_at, &a.workflow_id, &a.name).cmp(&(b.due_at, &b.workflow_id, &b.name))
        });
        out.truncate(limit);
        Ok(out)
    }

    async fn audit(&self, after_seq: u64, limit: usize) -> Result<Vec<ChainedAudit>, StoreError> {
        let start_day = if after_seq == 0 {
            match self.genesis_day().await? {
                Some(d) => d,
                None => return Ok(vec![]),
            }
        } else {
            after_seq / SEQ_PER_DAY
        };
        // One day of slack for a writer whose clock runs ahead.
        let last_day = day_number((self.clock)()) + 1;
        let mut out: Vec<ChainedAudit> = Vec::new();
        let mut day = start_day;
        while day <= last_day && out.len() < limit {
            let items = self
                .query(
                    day_name(day),
                    Some(("SK > :v", seq_key(after_seq))),
                    Some(limit - out.len()),
                )
                .await?;
            for i in &items {
                out.push(body(i, "body")?);
            }
            day += 1;
        }
        Ok(out)
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(format!("CURSOR#{name}"), "META")
            .await?
            .and_then(|i| text(&i, "value").map(str::to_string)))
    }

    async fn instances_in_group(&self, group: &str) -> Result<Vec<Instance>, StoreError> {
        let links = self
            .query(
                format!("GROUP#{group}"),
                Some(("begins_with(SK, :v)", "WF#".into())),
                None,
            )
            .await?;
        let ids: Vec<&str> = links
            .iter()
            .filter_map(|l| text(l, "workflow_id"))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let keys = chunk.iter().map(|id| key(wf(id), "STATE")).collect();
            for item in self.get_many(keys).await? {
                out.push(body::<Instance>(&item, "body")?);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn scope_usage(
        &self,
        client_id: &str,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let items = self.query(format!("USAGE#{client_id}"), None, None).await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let scope = text(i, "SK")?.to_string();
                let ms: i64 = match i.get("last_used") {
                    Some(Av::N(v)) => v.parse().ok()?,
                    _ => return None,
                };
                Some((scope, Utc.timestamp_millis_opt(ms).single()?))
            })
            .collect())
    }

    async fn agent_by_client(&self, client_id: &str) -> Result<Option<Agent>, StoreError> {
        let id = self
            .get(format!("AGENTCLIENT#{client_id}"), "META")
            .await?
            .and_then(|i| text(&i, "agent_id").map(str::to_string));
        match id {
            Some(id) => self.agent(&id).await,
            None => Ok(None),
        }
    }

    async fn baseline(&self, agent_id: &str) -> Result<Option<Baseline>, StoreError> {
        self.get(format!("BASELINE#{agent_id}"), "META")
            .await?
            .map(|i| body(&i, "body"))
            .transpose()
    }

    async fn messages(&self, subject: &str) -> Result<Vec<PostedMessage>, StoreError> {
        self.query(format!("MSG#{subject}"), None, None)
            .await?
            .iter()
            .map(|i| body(i, "body"))
            .collect()
    }
}

#[async_trait]
impl StoreWrite for DynamoStore {
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let items = self.step_items(&commit)?;
        let id = commit.instance.id.clone();
        let expected = commit.expected_version;
        self.transact(
            &format!("step {} of workflow {id}", commit.history.seq),
            items,
            &commit.audit,
            || StoreError::Conflict {
                id: id.clone(),
                expected,
            },
        )
        .await
    }

    async fn remove_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(
                wf(&timer.workflow_id),
                format!("TIMER#{}", timer.name),
            )))
            .condition_expression("due = :due")
            .expression_attribute_values(":due", n(timer.due_at.timestamp_millis()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let service = e.into_service_error();
                if service.is_conditional_check_failed_exception() {
                    Ok(()) // re-armed (or already gone): leave it
                } else {
                    Err(StoreError::Backend(describe(&service)))
                }
            }
        }
    }

    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.transact("audit append", vec![], &records, || {
            StoreError::Backend("audit append conflicted".into())
        })
        .await
    }

    async fn add_approval_message(
        &self,
        id: &str,
        message: PostedMessage,
    ) -> Result<(), StoreError> {
        // A repeat appends the same entry again; reads keep one per channel and ts.
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("APPROVAL#{id}"), "META")))
            .update_expression("SET messages = list_append(if_not_exists(messages, :none), :m)")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":none", Av::L(vec![]))
            .expression_attribute_values(":m", Av::L(vec![json(&message)?]))
            .send()
            .await
            .map_err(|e| {
                let service = e.into_service_error();
                if service.is_conditional_check_failed_exception() {
                    StoreError::Corrupt(id.to_string(), "approval posted does not exist".into())
                } else {
                    StoreError::Backend(describe(&service))
                }
            })?;
        Ok(())
    }

    async fn remember_inbound(
        &self,
        source: &str,
        id: &str,
        keep: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let mut item = key(format!("SEEN#{source}#{id}"), "META");
        let expires = Utc::now().timestamp() + keep.as_secs() as i64;
        item.insert(TTL_ATTRIBUTE.into(), n(expires));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // An expired row that DynamoDB has not deleted yet does not count.
            .condition_expression("attribute_not_exists(PK) OR #exp < :now")
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(Utc::now().timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => {
                let service = e.into_service_error();
                if service.is_conditional_check_failed_exception() {
                    Ok(false)
                } else {
                    Err(StoreError::Backend(describe(&service)))
                }
            }
        }
    }

    async fn record_scope_usage(
        &self,
        client_id: &str,
        scopes: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for scope in scopes {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(format!("USAGE#{client_id}"), scope.as_str())))
                .update_expression("SET last_used = :t")
                // Keep the latest: an older grant read late changes nothing.
                .condition_expression("attribute_not_exists(last_used) OR last_used < :t")
                .expression_attribute_values(":t", n(at.timestamp_millis()))
                .send()
                .await;
            if let Err(e) = result {
                let service = e.into_service_error();
                if !service.is_conditional_check_failed_exception() {
                    return Err(StoreError::Backend(describe(&service)));
                }
            }
        }
        Ok(())
    }

    async fn put_message(&self, subject: &str, message: PostedMessage) -> Result<(), StoreError> {
        let mut item = key(format!("MSG#{subject}"), message.route.as_str());
        item.insert("body".into(), json(&message)?);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn put_baseline(&self, agent_id: &str, baseline: &Baseline) -> Result<(), StoreError> {
        let mut item = key(format!("BASELINE#{agent_id}"), "META");
        item.insert("body".into(), json(baseline)?);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let mut item = key(format!("CURSOR#{name}"), "META");
        item.insert("value".into(), Av::S(value.to_string()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}
