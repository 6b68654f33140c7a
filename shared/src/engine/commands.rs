//! Running a pending command through the executor and reporting its result back as an event.

use super::*;

impl Engine {
    pub(super) async fn run_command(
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
            Command::Supersede {
                agent_id,
                reason,
                ending,
            } => self.supersede(agent_id, reason, *ending).await,
            Command::SettleShadowClaim {
                client_id,
                onboarding,
                adopted,
                reason,
            } => {
                self.settle_shadow_claim(client_id, onboarding, *adopted, reason)
                    .await
            }
            // A round of a campaign's launch writes up to `reviews.launch_batch` items to the
            // store (whose calls have their own deadlines): not bounded by a peer's deadline.
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
            // A call to a peer (the IdP, Slack, the vault): a peer that takes the call and
            // never answers, or a chain of its client's retries that adds up, costs this
            // attempt, not the worker; the command is tried again with backoff.
            command => {
                let deadline = self.config.command_deadline;
                match tokio::time::timeout(deadline, self.executor.run(key, command)).await {
                    Ok(result) => result,
                    Err(_) => Err(super::executor::ExecError {
                        command: command.name(),
                        message: format!(
                            "no answer within {} s; tried again later",
                            deadline.as_secs_f32()
                        ),
                        retryable: true,
                        retry_after: None,
                    }),
                }
            }
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

    pub(super) async fn send(&self, msgs: Vec<Message>, delay: Duration) -> Result<(), QueueError> {
        self.send_delayed(msgs.into_iter().map(|m| (m, delay)).collect())
            .await
    }

    pub(super) async fn send_delayed(
        &self,
        msgs: Vec<(Message, Duration)>,
    ) -> Result<(), QueueError> {
        if msgs.is_empty() {
            return Ok(());
        }
        self.queue.send(outgoing(msgs)).await
    }

    pub(super) async fn audit_refusal(
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
