//! The audit trail on the table, sharded so that no item is written by every step
//! (docs/SCALE.md, docs/adr/0025-sharded-audit-chain.md).
//!
//! - [`AUDIT_SHARDS`] hash chains, each in its own partition `AUDIT#<shard>`: records at
//!   `SEQ#<n>` (n counts from 1 within the shard), the tip at `HEAD`. A step's records go to
//!   the shard of its workflow, so one workflow's records stay in order on one chain, and
//!   writers of different workflows rarely meet on a `HEAD`.
//! - Checkpoints in `AUDITCP`/`CP#<first seq>` seal the shards: each holds every shard's tip
//!   (n and hash) when it was taken and a hash over them and the previous checkpoint, so a
//!   verifier walking the checkpoints covers every record of every shard, and a record removed
//!   or rewritten anywhere breaks a hash. The scheduler takes one every minute, and every read
//!   of the trail takes one first, so a reader sees everything committed before it asked.
//! - The trail's order (`seq`) is the checkpoints' order: checkpoint k holds the records
//!   between its tips and the previous one's, shard by shard, numbered from its `first` seq.
//!   Seqs are therefore given when a checkpoint seals the records, and never change.

use super::*;
use serde::{Deserialize, Serialize};

/// Chains of the audit trail. A writer reads its shard's `HEAD` and writes it back conditionally,
/// so two writers of one shard within that window (a round trip, 10–20 ms on DynamoDB) make one
/// retry. With 256 shards, 100 writers at once share a shard a third of the time, and a shard
/// takes a few commits a second at 1,000,000 agents (docs/SCALE.md). A checkpoint reads every
/// `HEAD` (three BatchGetItem calls) and holds every tip (about 25 KB).
pub const AUDIT_SHARDS: u32 = 256;
const CHECKPOINTS: &str = "AUDITCP";
/// A workflow's records are searched for among this many of its shard's latest records (a
/// shard holds 1/256 of the trail; a workflow writes its records within days).
pub const WORKFLOW_AUDIT_READ: usize = 20_000;

/// The tip of one shard's chain as read before a write.
pub(super) struct ChainTip {
    shard: u32,
    head_exists: bool,
    n: u64,
    hash: String,
}

/// One checkpoint: every shard's tip when it was taken, chained to the previous checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// 1, 2, …
    pub number: u64,
    /// The seq of the first record it seals (records get `first`, `first + 1`, …).
    pub first: u64,
    /// Records it seals.
    pub count: u64,
    /// Per shard: the last record's n and hash (0 and zeros for an empty shard).
    pub tips: Vec<(u64, String)>,
    pub at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
}

impl Checkpoint {
    /// The hash of a checkpoint's content and the previous checkpoint's hash.
    pub fn compute_hash(
        prev_hash: &str,
        number: u64,
        first: u64,
        tips: &[(u64, String)],
    ) -> String {
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(format!("|{number}|{first}|").as_bytes());
        for (n, hash) in tips {
            h.update(format!("{n}:{hash};").as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// The chain a workflow's (or an appended batch's first record's) audit records go to.
pub fn shard_of(key: &str) -> u32 {
    let h = Sha256::digest(key.as_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % AUDIT_SHARDS
}

fn shard_partition(shard: u32) -> String {
    format!("AUDIT#{shard:03}")
}

fn checkpoint_key(first: u64) -> String {
    format!("CP#{first:020}")
}

impl DynamoStore {
    /// The tip as a cancelled write returned it (the `HEAD` that won the race).
    pub(super) fn tip_from(shard_key: &str, head: &Item) -> ChainTip {
        ChainTip {
            shard: shard_of(shard_key),
            head_exists: true,
            n: number(head, "n").unwrap_or(0),
            hash: text(head, "hash").unwrap_or(ZERO_HASH).to_string(),
        }
    }

    /// Reads the tip of the shard `chain_key` (a workflow id) writes to.
    pub(super) async fn chain_tip(&self, chain_key: &str) -> Result<ChainTip, StoreError> {
        let shard = shard_of(chain_key);
        let head = self.get(shard_partition(shard), "HEAD").await?;
        Ok(match head {
            Some(h) => ChainTip {
                shard,
                head_exists: true,
                n: number(&h, "n").unwrap_or(0),
                hash: text(&h, "hash").unwrap_or(ZERO_HASH).to_string(),
            },
            None => ChainTip {
                shard,
                head_exists: false,
                n: 0,
                hash: ZERO_HASH.to_string(),
            },
        })
    }

    /// The transaction items that append `records` to the shard chain after `tip`.
    pub(super) fn chain_items(
        &self,
        tip: &ChainTip,
        records: &[AuditRecord],
    ) -> Result<Vec<(Role, TransactWriteItem)>, StoreError> {
        let mut items = Vec::with_capacity(2 * records.len() + 1);
        let (mut n, mut prev) = (tip.n, tip.hash.clone());
        let partition = shard_partition(tip.shard);
        for (i, record) in records.iter().enumerate() {
            // Like the embedded store, a record id is appended once: a retried append (after a
            // lost response) or a repeated one finds its marker and leaves the record out.
            let marker = key(format!("AUDITID#{}", record.id), "META");
            items.push((
                Role::AuditId(i),
                self.put(marker, Some("attribute_not_exists(PK)"), &[], &[])?,
            ));
            n += 1;
            let hash = chain_hash(&prev, record);
            let chained = ChainedAudit {
                seq: 0, // given by the checkpoint that seals it
                chain: tip.shard,
                record: record.clone(),
                prev_hash: prev,
                hash: hash.clone(),
            };
            let mut item = key(partition.clone(), seq_key(n));
            item.insert("body".into(), json(&chained)?);
            // The workflow's records are read back by this (`workflow_audit`).
            if let Some(w) = record.body["metadata"]["correlation_uid"].as_str() {
                item.insert("wf".into(), s(w));
            }
            items.push((
                Role::ChainHead,
                self.put(item, Some("attribute_not_exists(PK)"), &[], &[])?,
            ));
            prev = hash;
        }
        let mut head = key(partition, "HEAD");
        head.insert("n".into(), super::n(n));
        head.insert("hash".into(), s(prev));
        // A writer that lost the race gets the tip that won back with the cancellation, and
        // tries again at once instead of reading it first: half the window to lose in again.
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(head))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            );
        let put = if tip.head_exists {
            put.condition_expression("n = :n")
                .expression_attribute_values(":n", super::n(tip.n))
        } else {
            put.condition_expression("attribute_not_exists(PK)")
        };
        items.push((
            Role::ChainTip,
            TransactWriteItem::builder()
                .put(put.build().map_err(build_err)?)
                .build(),
        ));
        Ok(items)
    }

    /// The latest checkpoint, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk AND begins_with(SK, :cp)")
            .expression_attribute_values(":pk", s(CHECKPOINTS))
            .expression_attribute_values(":cp", s("CP#"))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        page.items()
            .first()
            .map(|i| body::<Checkpoint>(i, "body"))
            .transpose()
    }

    /// Seals what was appended since the latest checkpoint with a new one; `None` when
    /// nothing was. Two sealing at once: one wins, the other reads the winner's.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        for _ in 0..CHAIN_RETRIES {
            let last = self.latest_checkpoint().await?;
            let mut heads = Vec::new();
            let keys: Vec<Item> = (0..AUDIT_SHARDS)
                .map(|s| key(shard_partition(s), "HEAD"))
                .collect();
            for chunk in keys.chunks(100) {
                heads.extend(self.get_many(chunk.to_vec()).await?);
            }
            let mut tips = vec![(0u64, ZERO_HASH.to_string()); AUDIT_SHARDS as usize];
            for h in &heads {
                let shard = text(h, "PK")
                    .and_then(|p| p.strip_prefix("AUDIT#"))
                    .and_then(|s| s.parse::<usize>().ok());
                if let Some(i) = shard.filter(|i| *i < tips.len()) {
                    tips[i] = (
                        number(h, "n").unwrap_or(0),
                        text(h, "hash").unwrap_or(ZERO_HASH).to_string(),
                    );
                }
            }
            let before: Vec<u64> = match &last {
                Some(cp) => cp.tips.iter().map(|(n, _)| *n).collect(),
                None => vec![0; AUDIT_SHARDS as usize],
            };
            let count: u64 = tips
                .iter()
                .zip(&before)
                .map(|((n, _), b)| n.saturating_sub(*b))
                .sum();
            if count == 0 {
                return Ok(None);
            }
            let (number, first, prev_hash) = match &last {
                Some(cp) => (cp.number + 1, cp.first + cp.count, cp.hash.clone()),
                None => (1, 1, ZERO_HASH.to_string()),
            };
            let cp = Checkpoint {
                number,
                first,
                count,
                hash: Checkpoint::compute_hash(&prev_hash, number, first, &tips),
                tips,
                at: (self.clock)(),
                prev_hash,
            };
            let mut item = key(CHECKPOINTS, checkpoint_key(first));
            item.insert("body".into(), json(&cp)?);
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK)")
                .send()
                .await;
            match put {
                Ok(_) => return Ok(Some(cp)),
                Err(e) => {
                    let service = e.into_service_error();
                    if !service.is_conditional_check_failed_exception() {
                        return Err(StoreError::Backend(describe(&service)));
                    }
                    // Another reader sealed first: look again.
                }
            }
        }
        Err(StoreError::Backend(format!(
            "audit checkpoint: others kept sealing; gave up after {CHAIN_RETRIES} attempts"
        )))
    }

    /// The checkpoint sealing `seq`, if one does.
    async fn checkpoint_holding(&self, seq: u64) -> Result<Option<Checkpoint>, StoreError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk AND SK BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(CHECKPOINTS))
            .expression_attribute_values(":lo", s(checkpoint_key(0)))
            .expression_attribute_values(":hi", s(checkpoint_key(seq)))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(page
            .items()
            .first()
            .map(|i| body::<Checkpoint>(i, "body"))
            .transpose()?
            .filter(|cp| seq < cp.first + cp.count))
    }

    /// The checkpoint after `cp`, if any.
    async fn checkpoint_after(&self, cp: &Checkpoint) -> Result<Option<Checkpoint>, StoreError> {
        self.get(CHECKPOINTS.into(), &checkpoint_key(cp.first + cp.count))
            .await?
            .map(|i| body::<Checkpoint>(&i, "body"))
            .transpose()
    }

    /// The records `workflow_id`'s steps wrote, newest first, at most `limit`. They are all on
    /// the workflow's shard; at most [`WORKFLOW_AUDIT_READ`] of its latest records are read.
    pub(super) async fn workflow_records(
        &self,
        workflow_id: &str,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        let mut read = 0;
        while out.len() < limit && read < WORKFLOW_AUDIT_READ {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :seq)")
                .filter_expression("wf = :wf")
                .expression_attribute_values(":pk", s(shard_partition(shard_of(workflow_id))))
                .expression_attribute_values(":seq", s("SEQ#"))
                .expression_attribute_values(":wf", s(workflow_id))
                .scan_index_forward(false)
                .limit(1000)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            read += page.scanned_count().max(0) as usize;
            for item in page.items() {
                if out.len() < limit {
                    out.push(body::<ChainedAudit>(item, "body")?.record);
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Records `lo..=hi` of a shard's chain, at most `limit`.
    async fn shard_range(
        &self,
        shard: u32,
        lo: u64,
        hi: u64,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        while out.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND SK BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(shard_partition(shard)))
                .expression_attribute_values(":lo", s(seq_key(lo)))
                .expression_attribute_values(":hi", s(seq_key(hi)))
                .consistent_read(true)
                .limit((limit - out.len()).min(1000) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` records after `after_seq`, in seq order: what [`Self::checkpoint`] sealed.
    pub(super) async fn sealed_audit(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChainedAudit>, StoreError> {
        let mut out = Vec::new();
        let mut cp = self.checkpoint_holding(after_seq + 1).await?;
        while let Some(c) = cp {
            let mut prev = match c.number {
                1 => vec![0; AUDIT_SHARDS as usize],
                _ => self
                    .checkpoint_holding(c.first - 1)
                    .await?
                    .map(|p| p.tips.iter().map(|(n, _)| *n).collect())
                    .ok_or_else(|| {
                        StoreError::Corrupt(
                            format!("{CHECKPOINTS}/{}", checkpoint_key(c.first)),
                            "the checkpoint before it is missing".into(),
                        )
                    })?,
            };
            prev.resize(c.tips.len(), 0);
            let mut seq = c.first;
            for (shard, ((tip, _), from)) in c.tips.iter().zip(&prev).enumerate() {
                let span = tip.saturating_sub(*from);
                if seq + span <= after_seq + 1 {
                    seq += span; // all of this shard's span is at or before after_seq
                    continue;
                }
                // Skip the part of the span at or before after_seq.
                let skip = (after_seq + 1).saturating_sub(seq);
                let lo = from + 1 + skip;
                let want = (limit - out.len()).min((tip + 1 - lo) as usize);
                let items = self.shard_range(shard as u32, lo, *tip, want).await?;
                seq += skip;
                for i in &items {
                    let mut record: ChainedAudit = body(i, "body")?;
                    record.seq = seq;
                    seq += 1;
                    out.push(record);
                }
                if out.len() >= limit {
                    return Ok(out);
                }
                seq = c.first
                    + c.tips[..=shard]
                        .iter()
                        .zip(&prev)
                        .map(|((t, _), f)| t.saturating_sub(*f))
                        .sum::<u64>();
            }
            cp = self.checkpoint_after(&c).await?;
        }
        Ok(out)
    }
}

/// What a verification of the whole trail covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub checkpoints: u64,
    pub records: u64,
}

/// Where the trail does not hold.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TrailBroken {
    #[error(
        "checkpoint {number} does not hash to what it says, or does not link to the one before"
    )]
    Checkpoint { number: u64 },
    #[error(
        "record {n} of audit chain {shard} was changed or removed: its hash or link does not hold"
    )]
    Record { shard: u32, n: u64 },
    #[error(
        "audit chain {shard} does not end where checkpoint {number} sealed it (records removed or rewritten)"
    )]
    Tip { shard: u32, number: u64 },
    #[error("cannot read the trail: {0}")]
    Store(String),
}

impl DynamoStore {
    /// Walks every checkpoint and every record they seal: each checkpoint's hash and link, each
    /// record's hash and link within its chain, and each chain's end against the checkpoint.
    /// Seals first, so it covers everything appended before it was called.
    pub async fn verify_audit(&self) -> Result<Verified, TrailBroken> {
        let store = |e: StoreError| TrailBroken::Store(e.to_string());
        self.checkpoint().await.map_err(store)?;
        let mut done = Verified::default();
        let mut prev_hash = ZERO_HASH.to_string();
        let mut tips = vec![(0u64, ZERO_HASH.to_string()); AUDIT_SHARDS as usize];
        let mut first = 1;
        while let Some(item) = self
            .get(CHECKPOINTS.into(), &checkpoint_key(first))
            .await
            .map_err(store)?
        {
            let cp: Checkpoint = body(&item, "body").map_err(store)?;
            let expected = Checkpoint::compute_hash(&prev_hash, cp.number, cp.first, &cp.tips);
            if cp.prev_hash != prev_hash || cp.hash != expected || cp.number != done.checkpoints + 1
            {
                return Err(TrailBroken::Checkpoint { number: cp.number });
            }
            for (shard, (tip, tip_hash)) in cp.tips.iter().enumerate() {
                let (from, from_hash) = tips[shard].clone();
                if *tip < from {
                    return Err(TrailBroken::Tip {
                        shard: shard as u32,
                        number: cp.number,
                    });
                }
                let mut last = from_hash;
                let mut expect_n = from + 1;
                if *tip > from {
                    let items = self
                        .shard_range(shard as u32, from + 1, *tip, (*tip - from) as usize)
                        .await
                        .map_err(store)?;
                    for i in &items {
                        let n = text(i, "SK")
                            .and_then(|k| k.strip_prefix("SEQ#"))
                            .and_then(|k| k.parse::<u64>().ok())
                            .unwrap_or(0);
                        let broken = TrailBroken::Record {
                            shard: shard as u32,
                            n: expect_n,
                        };
                        let record: ChainedAudit = body(i, "body").map_err(|_| broken.clone())?;
                        if n != expect_n
                            || record.prev_hash != last
                            || record.hash != chain_hash(&record.prev_hash, &record.record)
                        {
                            return Err(broken);
                        }
                        last = record.hash;
                        expect_n += 1;
                        done.records += 1;
                    }
                }
                if expect_n != tip + 1 || last != *tip_hash {
                    return Err(TrailBroken::Tip {
                        shard: shard as u32,
                        number: cp.number,
                    });
                }
                tips[shard] = (*tip, tip_hash.clone());
            }
            done.checkpoints += 1;
            prev_hash = cp.hash.clone();
            first = cp.first + cp.count;
        }
        Ok(done)
    }
}
