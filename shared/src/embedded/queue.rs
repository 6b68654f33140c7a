//! The queue port on SQLite, with SQS FIFO semantics: per-group order with one message of a
//! group in flight at a time, a 5-minute deduplication window, visibility timeouts, and redrive
//! to a dead-letter table after `max_receives`.

use super::sqlite::{Db, append_audit_tx, backend, exec, from_ts, ts, write_commit};
use crate::ports::outbox::{Batch, Outbox, OutboxError};
use crate::ports::queue::{DeadLetter, Delivery, OutMessage, Queue, QueueError};
use crate::ports::store::StoreError;
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::sync::Arc;
use std::time::Duration;

/// SQS FIFO's deduplication interval.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Receives before a message is dead-lettered (SQS maxReceiveCount we configure in infra too).
pub const MAX_RECEIVES: u32 = 5;

pub struct SqliteQueue {
    db: Arc<Db>,
    max_receives: u32,
    /// Wakes the worker when something was sent.
    pub ready: tokio::sync::Notify,
}

fn q(e: impl std::fmt::Display) -> QueueError {
    QueueError(e.to_string())
}

impl SqliteQueue {
    pub fn new(db: Arc<Db>) -> Self {
        Self::with_max_receives(db, MAX_RECEIVES)
    }
    pub fn with_max_receives(db: Arc<Db>, max_receives: u32) -> Self {
        Self {
            db,
            max_receives,
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Makes messages that were in flight when the previous process stopped visible at once.
    /// Call it only from the process that owns the queue, before its worker starts: nobody else
    /// can be holding them, so waiting out their visibility timeout would only delay recovery.
    pub fn recover_in_flight(&self) -> Result<usize, QueueError> {
        let now = ts(Utc::now());
        exec(&self.db.lock(), "UPDATE queue SET receipt=NULL, visible_at=MIN(visible_at, ?1) WHERE receipt IS NOT NULL", [now]).map_err(q)
    }

    fn receive_in(
        &self,
        tx: &Transaction,
        max: usize,
        visibility: Duration,
    ) -> rusqlite::Result<Vec<Delivery>> {
        let now = ts(Utc::now());
        let candidates: Vec<(i64, String, String, u32, bool)> = {
            // Groups with a message in flight deliver nothing until it is acked or times out.
            // Scans in send order (rowid) and stops at the limit: most messages are visible.
            let mut st = tx.prepare_cached(
                "SELECT seq, group_id, body, receive_count, receipt IS NULL FROM queue
                 WHERE visible_at <= ?1
                   AND group_id NOT IN (SELECT group_id FROM queue WHERE receipt IS NOT NULL AND visible_at > ?1)
                 ORDER BY seq LIMIT ?2",
            )?;
            st.query_map(params![now, (max * 4) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for (seq, group, body, count, unanswered) in candidates {
            if out.len() >= max {
                break;
            }
            if count >= self.max_receives {
                exec(
                    tx,
                    "INSERT INTO dead_letters (group_id, body, receive_count, dead_at) VALUES (?1,?2,?3,?4)",
                    params![group, body, count, now],
                )?;
                exec(tx, "DELETE FROM queue WHERE seq=?1", [seq])?;
                // A failed last receive was audited by the engine when it put the message back
                // (its receipt stays). One that ended without an answer (the process stopped
                // while it held the message; the receipt was cleared at the restart) was not:
                // the move itself is audited.
                if unanswered {
                    let summary: String = body.chars().take(200).collect();
                    let record = crate::audit::dead_letter(
                        &summary,
                        count,
                        "its last receive ended without an answer (the process stopped while it held the message)",
                        Utc::now(),
                    );
                    append_audit_tx(tx, &[record]).map_err(|e| {
                        rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(
                            e.to_string(),
                        )))
                    })?;
                }
                tracing::error!(
                    group,
                    receive_count = count,
                    "message moved to the dead-letter queue"
                );
                continue;
            }
            let count = count + 1;
            let receipt = format!("{seq}:{count}");
            exec(
                tx,
                "UPDATE queue SET receive_count=?2, receipt=?3, visible_at=?4 WHERE seq=?1",
                params![seq, count, receipt, now + visibility.as_millis() as i64],
            )?;
            out.push(Delivery {
                receipt,
                body,
                receive_count: count,
            });
        }
        Ok(out)
    }
}

fn insert(tx: &Connection, messages: &[OutMessage]) -> rusqlite::Result<()> {
    let now = ts(Utc::now());
    exec(
        tx,
        "DELETE FROM queue_dedupe WHERE sent_at < ?1",
        [now - DEDUPE_WINDOW.as_millis() as i64],
    )?;
    for m in messages {
        let fresh = exec(
            tx,
            "INSERT OR IGNORE INTO queue_dedupe (dedupe_id, sent_at) VALUES (?1, ?2)",
            params![m.dedupe_id, now],
        )?;
        if fresh == 1 {
            exec(
                tx,
                "INSERT INTO queue (group_id, dedupe_id, body, visible_at) VALUES (?1,?2,?3,?4)",
                params![
                    m.group,
                    m.dedupe_id,
                    m.body,
                    now + m.delay.as_millis() as i64
                ],
            )?;
        }
    }
    Ok(())
}

/// Receipts are `<seq>:<receive count>`: a stale receipt (from an earlier receive) matches nothing.
fn receipt_seq(receipt: &str) -> Result<i64, QueueError> {
    receipt
        .split(':')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| QueueError(format!("malformed receipt `{receipt}`")))
}

fn delete_received(tx: &Connection, receipts: &[(i64, &String)]) -> rusqlite::Result<()> {
    for (seq, r) in receipts {
        exec(
            tx,
            "DELETE FROM queue WHERE seq=?1 AND receipt=?2",
            params![seq, r],
        )?;
    }
    Ok(())
}

fn parse_receipts(receipts: &[String]) -> Result<Vec<(i64, &String)>, QueueError> {
    receipts
        .iter()
        .map(|r| receipt_seq(r).map(|s| (s, r)))
        .collect()
}

/// The store and the queue share the database: a batch's steps, the messages they send and the
/// acks of what they consumed are one transaction. A crash keeps all of it or none.
#[async_trait]
impl Outbox for SqliteQueue {
    async fn write(&self, batch: Batch) -> Result<Vec<Result<(), StoreError>>, OutboxError> {
        let Batch {
            steps,
            messages,
            acks,
        } = batch;
        let parsed = parse_receipts(&acks)?;
        let step_acks: Vec<Option<(i64, &String)>> = steps
            .iter()
            .map(|s| {
                s.ack
                    .as_ref()
                    .map(|r| receipt_seq(r).map(|seq| (seq, r)))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        let sends = !messages.is_empty() || steps.iter().any(|s| !s.messages.is_empty());
        // Steps are acknowledged to people (a request's 202) and record what happened at an IdP:
        // they wait for the disk at the durable level. A batch without steps (a command's
        // result, acks) only risks a redelivery, which the engine answers.
        let wait_for_disk = !steps.is_empty();
        let results = self
            .db
            .write(wait_for_disk, |tx| -> Result<_, StoreError> {
                let mut results = Vec::with_capacity(steps.len());
                insert(tx, &messages).map_err(backend)?;
                for (step, ack) in steps.iter().zip(&step_acks) {
                    // One savepoint per step: a conflicting step rolls back alone.
                    let sp = tx.savepoint().map_err(backend)?;
                    match write_commit(&sp, &step.commit) {
                        Ok(()) => {
                            fail::fail_point!("outbox::after_commit");
                            insert(&sp, &step.messages).map_err(backend)?;
                            if let Some(ack) = ack {
                                delete_received(&sp, &[*ack]).map_err(backend)?;
                            }
                            sp.commit().map_err(backend)?;
                            results.push(Ok(()));
                        }
                        Err(e) => {
                            drop(sp); // rolls back this step only
                            results.push(Err(e));
                        }
                    }
                }
                fail::fail_point!("outbox::after_send");
                delete_received(tx, &parsed).map_err(backend)?;
                Ok(results)
            })?;
        if sends {
            self.ready.notify_one();
        }
        Ok(results)
    }

    fn atomic(&self) -> bool {
        true
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        {
            // Sends from the API (a decision, a cancel) are acknowledged to a person: fsynced
            // at the durable level.
            let mut conn = self.db.lock();
            let tx = conn.transaction().map_err(q)?;
            insert(&tx, &messages).map_err(q)?;
            tx.commit().map_err(q)?;
        }
        self.ready.notify_one();
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        // Marking messages in flight need not wait for the disk: after a crash they are simply
        // delivered again, which at-least-once delivery allows.
        self.db
            .relaxed(|tx| self.receive_in(tx, max, visibility))
            .map_err(q)
    }

    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError> {
        let parsed = parse_receipts(receipts)?;
        self.db
            .relaxed(|tx| delete_received(tx, &parsed))
            .map_err(q)
    }

    async fn nack(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        let visible = ts(Utc::now()) + delay.as_millis() as i64;
        let seq = receipt_seq(receipt)?;
        exec(
            &self.db.lock(),
            "UPDATE queue SET visible_at=?3 WHERE seq=?1 AND receipt=?2",
            params![seq, receipt, visible],
        )
        .map_err(q)?;
        Ok(())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let conn = self.db.lock();
        let mut st = conn.prepare_cached("SELECT group_id, body, receive_count, dead_at FROM dead_letters ORDER BY seq DESC LIMIT ?1").map_err(q)?;
        let rows = st
            .query_map([limit as i64], |r| {
                Ok(DeadLetter {
                    group: r.get(0)?,
                    body: r.get(1)?,
                    receive_count: r.get(2)?,
                    dead_at: from_ts(r.get(3)?),
                })
            })
            .map_err(q)?;
        rows.collect::<Result<_, _>>().map_err(q)
    }

    async fn dead_letter_count(&self) -> Result<usize, QueueError> {
        let n: i64 = self
            .db
            .lock()
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))
            .map_err(q)?;
        Ok(n as usize)
    }

    async fn depth(&self) -> Result<usize, QueueError> {
        let n: Option<i64> = self
            .db
            .lock()
            .query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))
            .optional()
            .map_err(q)?;
        Ok(n.unwrap_or(0) as usize)
    }

    fn max_receives(&self) -> u32 {
        self.max_receives
    }
}
