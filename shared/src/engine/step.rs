//! The commit protocol: apply a batch of events in memory, build each step's commit (state,
//! history, timers, registry, approvals, audit, pending commands) and write it with the sends and
//! acks through the outbox.

use super::*;
use crate::ports::store::AgentRead;

impl Engine {
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
            // Every log line of the step carries its workflow id.
            let span = tracing::info_span!("step", workflow_id = %workflow);
            let prepared = tracing::Instrument::instrument(
                async {
                    match msg {
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
                        Message::ClientCreated {
                            client_id,
                            creator,
                            event_id,
                            ..
                        } => match self
                            .client_created(&client_id, creator.as_deref(), &event_id)
                            .await
                        {
                            Ok(_) => Ok(Prepared::Send(vec![])),
                            // Refused or gone: audited by the engine, nothing to retry.
                            Err(EngineError::Rejected(_) | EngineError::NotFound(_)) => {
                                Ok(Prepared::Send(vec![]))
                            }
                            Err(e) => Err(HandleError {
                                message: e.to_string(),
                                retryable: true,
                            }),
                        },
                        Message::FireTimers {
                            partition, round, ..
                        } => match self
                            .fire_timers(partition, self.config.timers_per_round)
                            .await
                        {
                            // A full round: more may be due; the next round goes behind this one.
                            Ok(n) if n >= self.config.timers_per_round => {
                                let (minute, k) = round.split_once('.').unwrap_or((&round, "0"));
                                let next = k.parse::<u32>().unwrap_or(0) + 1;
                                Ok(Prepared::Send(vec![(
                                    Message::fire_timers(partition, format!("{minute}.{next}")),
                                    std::time::Duration::ZERO,
                                )]))
                            }
                            Ok(_) => Ok(Prepared::Send(vec![])),
                            Err(e) => Err(HandleError {
                                message: e.to_string(),
                                retryable: true,
                            }),
                        },
                        Message::Discover { run } => match self.discover().await {
                            Ok(report) => {
                                tracing::info!(run, ?report, "discovery sweep");
                                Ok(Prepared::Send(vec![]))
                            }
                            Err(e) => Err(HandleError {
                                message: e.to_string(),
                                retryable: true,
                            }),
                        },
                    }
                },
                span,
            )
            .await;
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
        let facts: Vec<super::metrics::StepFacts> = batch
            .steps
            .iter()
            .map(super::metrics::StepFacts::of)
            .collect();
        match self.outbox.write(batch).await {
            Ok(written) => {
                for ((r, i), facts) in written.into_iter().zip(step_at).zip(&facts) {
                    match r {
                        Ok(()) => {
                            self.transitions
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            facts.emit();
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
    pub(super) async fn prepare(
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
                        let reads = self
                            .resolve_agent_updates(&mut applied.commands, agents, now)
                            .await?;
                        Ok(Some((applied, reads)))
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
            Ok(Some((applied, reads))) => {
                let (mut commit, pending) = self.build_commit(
                    &instance, applied, event_id, event_json, actor, completes, now,
                );
                commit.agent_reads = reads;
                (commit, pending)
            }
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
    pub(super) fn build_commit(
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
                | Command::SettleShadowClaim { .. }
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
                agent_reads: vec![],
                approvals,
                audit: audit_records,
            },
            new_pending,
        )
    }

    /// A step that changes no state: a completed command without a result, or a refused event.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bookkeeping_commit(
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
                agent_reads: vec![],
                approvals: vec![],
                audit: audit_records,
            },
            vec![],
        )
    }

    /// Turns each `UpdateAgent` into a `SaveAgent` of the record as stored (or as an earlier
    /// step of this batch left it) with the change applied, so the step writes only its fields.
    /// Returns the records as read (once per agent): the commit conflicts if one changed since.
    pub(super) async fn resolve_agent_updates(
        &self,
        commands: &mut [Command],
        agents: &mut HashMap<String, Agent>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<AgentRead>, StoreError> {
        let mut reads: Vec<AgentRead> = Vec::new();
        let mut written: Vec<String> = Vec::new();
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
                    // Read before this step wrote it: what must still be stored at commit.
                    if !written.contains(agent_id) && !reads.iter().any(|r| &r.id == agent_id) {
                        reads.push(AgentRead {
                            id: agent.id.clone(),
                            updated_at: agent.updated_at,
                        });
                    }
                    agent.apply(change, now);
                    agents.insert(agent.id.clone(), agent.clone());
                    written.push(agent.id.clone());
                    *command = Command::SaveAgent(Box::new(agent));
                }
                Command::SaveAgent(a) => {
                    agents.insert(a.id.clone(), (**a).clone());
                    written.push(a.id.clone());
                }
                _ => {}
            }
        }
        Ok(reads)
    }
}

/// Name prefix of the dispatch timers (`steward:dispatch/<step seq>`); no machine uses it.
pub const DISPATCH_TIMER: &str = "steward:dispatch/";

/// What preparing a message produced: messages to send, or a step to write and then its messages.
pub(super) enum Prepared {
    Send(Vec<(Message, Duration)>),
    Step(Box<Commit>, Vec<(Message, Duration)>),
}

pub(super) fn outgoing(msgs: Vec<(Message, Duration)>) -> Vec<OutMessage> {
    msgs.into_iter()
        .map(|(m, delay)| OutMessage {
            group: m.workflow_id().to_string(),
            dedupe_id: m.dedupe_id(),
            body: serde_json::to_string(&m).expect("messages serialize"),
            delay,
        })
        .collect()
}

pub(super) fn runs(workflow_id: &str, pending: &[PendingCommand]) -> Vec<(Message, Duration)> {
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

pub(super) fn remember(applied: &mut Vec<String>, event_id: &str, window: usize) {
    applied.push(event_id.to_string());
    if applied.len() > window {
        let drop = applied.len() - window;
        applied.drain(..drop);
    }
}
