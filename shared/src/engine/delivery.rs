//! The work loop: due timers become events, queue deliveries are processed, failures back off.

use super::*;

impl Engine {
    /// The tick where workers run in parallel (the worker function on AWS): one message per
    /// timer partition, each fired by whichever worker takes it (see [`Engine::fire_timers`]).
    /// Returns how many partitions were handed out.
    pub async fn fan_out_timers(&self) -> Result<usize, EngineError> {
        let minute = self.clock.now().format("%Y%m%dT%H%M").to_string();
        let msgs: Vec<Message> = (0..self.store.timer_partitions())
            .map(|p| Message::fire_timers(p, format!("{minute}.0")))
            .collect();
        let n = msgs.len();
        self.send(msgs, Duration::ZERO).await?;
        Ok(n)
    }

    /// Fires up to `limit` due timers of `partition`: their `TimerFired` events are queued (to
    /// their workflows' groups, so they run in parallel) and the timers removed, 16 at a time.
    /// Returns how many were due.
    pub async fn fire_timers(&self, partition: u32, limit: usize) -> Result<usize, EngineError> {
        let timers = self
            .store
            .due_timers_in(partition, self.clock.now(), limit)
            .await?;
        let msgs: Vec<Message> = timers.iter().map(timer_fired).collect();
        self.send(msgs, Duration::ZERO).await?;
        for chunk in timers.chunks(16) {
            let removed =
                futures_util::future::join_all(chunk.iter().map(|t| self.store.remove_timer(t)))
                    .await;
            for r in removed {
                r?;
            }
        }
        Ok(timers.len())
    }

    /// Turns up to [`TICK_BATCH`] due timers into `TimerFired` events (the local server's
    /// tick): their events in one send, then the timers removed in one write. Safe to run
    /// twice, and a crash between the two only fires them again: the event id is the timer's
    /// name and due time, and a workflow applies an event once. Returns how many were due; a
    /// full batch means more may be waiting.
    pub async fn tick(&self) -> Result<usize, EngineError> {
        let timers = self.store.due_timers(self.clock.now(), TICK_BATCH).await?;
        if timers.is_empty() {
            return Ok(0);
        }
        self.send(timers.iter().map(timer_fired).collect(), Duration::ZERO)
            .await?;
        self.store.remove_timers(&timers).await?;
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

    pub(super) async fn failed_delivery(
        &self,
        d: &Delivery,
        e: &HandleError,
    ) -> Result<(), EngineError> {
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
}

/// A due timer's event (its id names the timer and its due time, so a repeat is recognised).
fn timer_fired(t: &crate::ports::store::Timer) -> Message {
    Message::Event {
        workflow_id: t.workflow_id.clone(),
        event_id: format!("timer/{}/{}", t.name, t.due_at.timestamp_millis()),
        event: Event::TimerFired {
            name: t.name.clone(),
        },
    }
}
