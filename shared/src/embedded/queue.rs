//! The queue port on SQLite, with SQS FIFO semantics: per-group order with one message of a
//! group in flight at a time, a 5-minute deduplication window, visibility timeouts, and redrive
//! to a dead-letter table after `max_receives`.

use super::sqlite::{Db, from_ts, ts};
use crate::ports::queue::{DeadLetter, Delivery, OutMessage, Queue, QueueError};
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{OptionalExtension, params};
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
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = ts(Utc::now());
        {
            let mut conn = self.db.lock();
            let tx = conn.transaction().map_err(q)?;
            tx.execute(
                "DELETE FROM queue_dedupe WHERE sent_at < ?1",
                [now - DEDUPE_WINDOW.as_millis() as i64],
            )
            .map_err(q)?;
            for m in &messages {
                let fresh = tx
                    .execute(
                        "INSERT OR IGNORE INTO queue_dedupe (dedupe_id, sent_at) VALUES (?1, ?2)",
                        params![m.dedupe_id, now],
                    )
                    .map_err(q)?;
                if fresh == 1 {
                    tx.execute(
                        "INSERT INTO queue (group_id, dedupe_id, body, visible_at) VALUES (?1,?2,?3,?4)",
                        params![m.group, m.dedupe_id, m.body, now + m.delay.as_millis() as i64],
                    )
                    .map_err(q)?;
                }
            }
            tx.commit().map_err(q)?;
        }
        self.ready.notify_one();
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        let now = ts(Utc::now());
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(q)?;
        let candidates: Vec<(i64, String, String, u32)> = {
            // Groups with a message in flight deliver nothing until it is acked or times out.
            let mut st = tx
                .prepare_cached(
                    "SELECT seq, group_id, body, receive_count FROM queue
                     WHERE visible_at <= ?1
                       AND group_id NOT IN (SELECT group_id FROM queue WHERE receipt IS NOT NULL AND visible_at > ?1)
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(q)?;
            st.query_map(params![now, (max * 4) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(q)?
            .collect::<Result<_, _>>()
            .map_err(q)?
        };
        let mut out = Vec::new();
        for (seq, group, body, count) in candidates {
            if out.len() >= max {
                break;
            }
            if count >= self.max_receives {
                tx.execute(
                    "INSERT INTO dead_letters (group_id, body, receive_count, dead_at) VALUES (?1,?2,?3,?4)",
                    params![group, body, count, now],
                )
                .map_err(q)?;
                tx.execute("DELETE FROM queue WHERE seq=?1", [seq])
                    .map_err(q)?;
                tracing::error!(
                    group,
                    receive_count = count,
                    "message moved to the dead-letter queue"
                );
                continue;
            }
            let count = count + 1;
            let receipt = format!("{seq}:{count}");
            tx.execute(
                "UPDATE queue SET receive_count=?2, receipt=?3, visible_at=?4 WHERE seq=?1",
                params![seq, count, receipt, now + visibility.as_millis() as i64],
            )
            .map_err(q)?;
            out.push(Delivery {
                receipt,
                body,
                receive_count: count,
            });
        }
        tx.commit().map_err(q)?;
        Ok(out)
    }

    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(q)?;
        for r in receipts {
            tx.execute("DELETE FROM queue WHERE receipt=?1", [r])
                .map_err(q)?;
        }
        tx.commit().map_err(q)
    }

    async fn nack(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        let visible = ts(Utc::now()) + delay.as_millis() as i64;
        self.db
            .lock()
            .execute(
                "UPDATE queue SET visible_at=?2 WHERE receipt=?1",
                params![receipt, visible],
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
