//! Starting workflows: onboarding and scope-change requests checked against the policy and the
//! directory, and the first step of a new instance.

use super::*;

impl Engine {
    /// Onboarding: checks the request against the policy and the directory and starts the
    /// workflow. The same request twice is recognised and starts nothing new.
    pub async fn request_agent(
        &self,
        request: AgentRequest,
        requester: &str,
    ) -> Result<Started, EngineError> {
        self.onboard(request, requester, None).await
    }

    /// Onboarding; `adopt` = (agent id, client id, when its record last changed) of a claimed
    /// shadow agent, whose record and client the onboarding takes over. The same claim sent
    /// again is the same onboarding; a claim after an earlier one ended (the record changed
    /// back) is a new one.
    pub(crate) async fn onboard(
        &self,
        request: AgentRequest,
        requester: &str,
        adopt: Option<(&str, &str, &str)>,
    ) -> Result<Started, EngineError> {
        let canonical = serde_json::to_string(&request).unwrap_or_default();
        let hash = match adopt {
            Some((_, _, generation)) => short_hash(&[&canonical, requester, generation]),
            None => short_hash(&[&canonical, requester]),
        };
        let workflow_id = format!("onboarding-{}-{}", request.name, &hash[..8]);
        let agent_id = match adopt {
            Some((id, _, _)) => id.to_string(),
            None => format!("agt-{}", &hash[..12]),
        };
        if let Some(existing) = self.store.instance(&workflow_id).await? {
            return Ok(Started {
                workflow_id,
                agent_id,
                state: existing.state_name,
                duplicate: true,
            });
        }
        let actor = Actor::Person(requester.to_string());
        if let Some(other) = self.store.agent_by_name(&request.name).await?
            && other.id != agent_id
            && !matches!(
                other.status,
                AgentStatus::Denied
                    | AgentStatus::Expired
                    | AgentStatus::Cancelled
                    | AgentStatus::Failed
                    | AgentStatus::Decommissioned
            )
        {
            let why = format!(
                "an agent named {} already exists ({}, owner {}); change its scopes instead or choose another name",
                other.name,
                other.status.as_str(),
                other.owner
            );
            self.audit_refusal(
                "agent request",
                &actor,
                Some((&other.id, &other.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Conflict(why));
        }
        let owner_status = self.directory.owner_status(&request.owner).await?;
        let name = request.name.clone();
        let input = StartInput::Onboarding(OnboardingInput {
            agent_id: agent_id.clone(),
            request,
            requester: requester.to_string(),
            owner_status,
            adopt_client: adopt.map(|(_, client, _)| client.to_string()),
        });
        let started = self.start(&workflow_id, "onboarding", Some(&agent_id), &name, input, &hash, actor, json!({"request": serde_json::from_str::<serde_json::Value>(&canonical).unwrap_or_default()})).await?;
        Ok(Started {
            workflow_id,
            agent_id,
            state: started.0,
            duplicate: started.1,
        })
    }

    /// Scope change on an active agent (by id or name).
    pub async fn request_scope_change(
        &self,
        agent_ref: &str,
        request: ScopeChangeRequest,
        requester: &str,
    ) -> Result<Started, EngineError> {
        let actor = Actor::Person(requester.to_string());
        let Some(agent) = self.find_agent(agent_ref).await? else {
            let why = format!("no agent with id or name `{agent_ref}`");
            self.audit_refusal("scope change", &actor, None, None, &why)
                .await?;
            return Err(EngineError::NotFound(why));
        };
        let canonical = serde_json::to_string(&request).unwrap_or_default();
        let hash = short_hash(&[
            &agent.id,
            &agent.updated_at.to_rfc3339(),
            &canonical,
            requester,
        ]);
        let workflow_id = format!("scope-change-{}-{}", agent.name, &hash[..8]);
        if let Some(existing) = self.store.instance(&workflow_id).await? {
            return Ok(Started {
                workflow_id,
                agent_id: agent.id,
                state: existing.state_name,
                duplicate: true,
            });
        }
        if let Some(running) = self
            .store
            .instances_for_agent(&agent.id)
            .await?
            .into_iter()
            .find(|i| i.kind == "scope_change" && !i.terminal)
        {
            let why = format!(
                "a scope change for {} is already in progress ({}); wait for it or cancel it",
                agent.name, running.id
            );
            self.audit_refusal(
                "scope change",
                &actor,
                Some((&agent.id, &agent.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Conflict(why));
        }
        let (agent_id, name) = (agent.id.clone(), agent.name.clone());
        let input = StartInput::ScopeChange(ScopeChangeInput {
            agent,
            request,
            requester: requester.to_string(),
        });
        let started = self.start(&workflow_id, "scope_change", Some(&agent_id), &name, input, &hash, actor, json!({"scope_change": serde_json::from_str::<serde_json::Value>(&canonical).unwrap_or_default()})).await?;
        Ok(Started {
            workflow_id,
            agent_id,
            state: started.0,
            duplicate: started.1,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start(
        &self,
        workflow_id: &str,
        kind: &str,
        agent_id: Option<&str>,
        agent_name: &str,
        input: StartInput,
        hash: &str,
        actor: Actor,
        summary: serde_json::Value,
    ) -> Result<(String, bool), EngineError> {
        self.start_in(
            workflow_id,
            kind,
            (agent_id, agent_name),
            input,
            hash,
            actor,
            summary,
            None,
        )
        .await
    }

    /// [`Engine::start`] for an instance that belongs to `group` (see `Instance::group`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_in(
        &self,
        workflow_id: &str,
        kind: &str,
        (agent_id, agent_name): (Option<&str>, &str),
        input: StartInput,
        hash: &str,
        actor: Actor,
        summary: serde_json::Value,
        group: Option<&str>,
    ) -> Result<(String, bool), EngineError> {
        let ctx = self.ctx(workflow_id);
        let applied = match workflows::start(input, &ctx) {
            Ok(a) => a,
            Err(rejected) => {
                self.audit_refusal(
                    &format!("{kind} request"),
                    &actor,
                    agent_id.map(|a| (a, agent_name)),
                    Some(workflow_id),
                    &rejected.to_string(),
                )
                .await?;
                return Err(EngineError::Rejected(rejected));
            }
        };
        let now = ctx.now;
        let machine_step = applied;
        // A step that changes agent fields conflicts when another step wrote the agent since it
        // was read (a freeze racing a rotation): read it again and retry, a few times.
        let mut attempt = 0;
        let state = loop {
            attempt += 1;
            let mut applied = machine_step.clone();
            let reads = self
                .resolve_agent_updates(&mut applied.commands, &mut HashMap::new(), now)
                .await?;
            let fresh = Instance {
                id: workflow_id.to_string(),
                kind: kind.to_string(),
                agent_id: agent_id.map(str::to_string),
                state: serde_json::Value::Null,
                state_name: statemachines::workflow::START.into(),
                terminal: false,
                version: 0,
                pending: vec![],
                applied: vec![],
                request_hash: hash.to_string(),
                created_at: now,
                updated_at: now,
                group: group.map(str::to_string),
            };
            let (mut commit, new_pending) = self.build_commit(
                &fresh,
                applied,
                "start",
                summary.clone(),
                actor.clone(),
                None,
                now,
            );
            commit.agent_reads = reads;
            let state = commit.instance.state_name.clone();
            let step = self.start_step(commit, &new_pending);
            let facts = super::metrics::StepFacts::of(&step);
            let written = self
                .outbox
                .write(Batch {
                    steps: vec![step],
                    ..Default::default()
                })
                .await?
                .pop()
                .unwrap_or(Ok(()));
            match written {
                Ok(()) => {
                    facts.emit();
                    break state;
                }
                Err(StoreError::AgentChanged(_)) if attempt < 5 => continue,
                // The same request raced in twice: the first one won, this one is the duplicate.
                Err(StoreError::Conflict { .. }) => {
                    let existing = self
                        .store
                        .instance(workflow_id)
                        .await?
                        .map(|i| i.state_name)
                        .unwrap_or(state);
                    return Ok((existing, true));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok((state, false))
    }

    /// The outbox step of a workflow's first commit. Where the outbox is not atomic, nothing
    /// redelivers a start (no queue message led to it), so the step also arms a dispatch timer:
    /// when it fires, the step's commands that are still pending are sent again. Copies of
    /// messages that did go out fall in the queue's deduplication window and are dropped.
    pub(super) fn start_step(&self, mut commit: Commit, pending: &[PendingCommand]) -> Step {
        let wf = commit.instance.id.clone();
        if !self.outbox.atomic() && !pending.is_empty() {
            commit.timers.push(TimerChange::Set(Timer {
                workflow_id: wf.clone(),
                name: format!("{DISPATCH_TIMER}{}", commit.instance.version),
                due_at: commit.instance.updated_at
                    + chrono::Duration::from_std(self.config.dispatch_check).unwrap_or_default(),
            }));
        }
        Step::new(commit, outgoing(runs(&wf, pending)))
    }
}
