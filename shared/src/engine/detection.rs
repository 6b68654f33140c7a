//! Anomaly detection's side of the engine: each token request is checked against the agent's
//! baseline and the policy's rules, outside signals are mapped by the policy, and every finding
//! starts a freeze workflow (which contains first, asks first, or only alerts, by severity and
//! action). Rotation findings also start a rotation.

use super::workflows::StartInput;
use super::{Engine, EngineError, Started, short_hash};
use chrono::{DateTime, Utc};
use serde_json::json;
use statemachines::detection::{Action, Baseline, Finding, TokenRequest, signal_finding};
use statemachines::freeze::{Freeze, FreezeInput};
use statemachines::rotation::RotationReason;
use statemachines::{Actor, Agent, AgentStatus, Workflow};
use std::collections::HashMap;

/// What detection did with one observation or signal.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Detected {
    pub findings: Vec<Finding>,
    /// Freeze workflows started (one per finding at most).
    pub started: Vec<Started>,
}

/// The baselines one intake batch reads and changes: each agent's is read once, checked against
/// each of its requests in the batch in turn, and saved once, with the batch's other writes.
#[derive(Debug, Default)]
pub struct Baselines {
    by_agent: HashMap<String, (Baseline, bool)>,
}

impl Baselines {
    /// The baselines the batch changed, to save.
    pub fn into_changed(self) -> Vec<(String, Baseline)> {
        self.by_agent
            .into_iter()
            .filter(|(_, (_, changed))| *changed)
            .map(|(id, (b, _))| (id, b))
            .collect()
    }
}

impl Engine {
    /// Checks one token request of the client `client_id` (granted or refused): updates the
    /// agent's baseline and acts on what the rules find. Clients Steward does not know are
    /// discovery's business, not detection's.
    pub async fn observe_token_request(
        &self,
        client_id: &str,
        request: &TokenRequest,
        signal_id: &str,
        accepted_at: DateTime<Utc>,
    ) -> Result<Detected, EngineError> {
        let mut baselines = Baselines::default();
        let detected = self
            .observe_token_request_in(&mut baselines, client_id, request, signal_id, accepted_at)
            .await?;
        for (agent_id, baseline) in baselines.into_changed() {
            self.store.put_baseline(&agent_id, &baseline).await?;
        }
        Ok(detected)
    }

    /// [`observe_token_request`](Self::observe_token_request) within a batch: the baseline
    /// comes from and goes back to `baselines`, which the caller saves after the batch.
    pub async fn observe_token_request_in(
        &self,
        baselines: &mut Baselines,
        client_id: &str,
        request: &TokenRequest,
        signal_id: &str,
        accepted_at: DateTime<Utc>,
    ) -> Result<Detected, EngineError> {
        let Some(agent) = self.store.agent_by_client(client_id).await? else {
            return Ok(Detected::default());
        };
        if agent.status != AgentStatus::Active {
            return Ok(Detected::default());
        }
        let mut expected = agent.clone();
        if request.requested.iter().any(|s| !agent.scopes.contains(s)) {
            // Scopes a person asked for, still waiting for security: an agent deployed ahead of
            // its approval is refused by the IdP, not frozen.
            for i in self.store.instances_for_agent(&agent.id).await? {
                if i.kind == statemachines::scope_change::ScopeChange::KIND
                    && i.state_name == "AwaitingApproval"
                {
                    let added = i.state["change"]["added"].as_array().cloned();
                    expected.scopes.extend(
                        added
                            .into_iter()
                            .flatten()
                            .filter_map(|v| v.as_str().map(str::to_string)),
                    );
                }
            }
        }
        let (mut baseline, changed) = match baselines.by_agent.remove(&agent.id) {
            Some(held) => held,
            None => (
                self.store.baseline(&agent.id).await?.unwrap_or_default(),
                false,
            ),
        };
        if baseline.has_counted(signal_id) {
            // Delivered again (an Okta retry, a batch replayed after a crash): counted and
            // answered the first time; counting it again would inflate the baseline.
            baselines
                .by_agent
                .insert(agent.id.clone(), (baseline, changed));
            return Ok(Detected::default());
        }
        let findings = baseline.check(&expected, request, &self.policy);
        baseline.mark_counted(signal_id);
        baselines
            .by_agent
            .insert(agent.id.clone(), (baseline, true));
        // Answered before the baseline is saved (with the batch): a crash in between counts
        // the event once more on redelivery, while the answer (keyed by the event id) starts
        // nothing twice.
        self.respond(&agent, findings, signal_id, accepted_at).await
    }

    /// An outside signal (Okta threat detection, SSF credential compromise) about `agent`,
    /// with the severity the policy maps its kind to.
    pub async fn observe_signal(
        &self,
        agent: &Agent,
        kind: &str,
        detail: &str,
        signal_id: &str,
        accepted_at: DateTime<Utc>,
    ) -> Result<Detected, EngineError> {
        if matches!(
            agent.status,
            AgentStatus::Decommissioned
                | AgentStatus::Denied
                | AgentStatus::Cancelled
                | AgentStatus::Expired
        ) {
            return Ok(Detected::default());
        }
        let findings = signal_finding(&self.policy, kind, agent, detail)
            .into_iter()
            .collect();
        self.respond(agent, findings, signal_id, accepted_at).await
    }

    /// A person pulls the kill switch: the same containment as a HIGH finding.
    pub async fn freeze_now(
        &self,
        agent_ref: &str,
        by: &str,
        reason: &str,
    ) -> Result<Detected, EngineError> {
        let actor = Actor::Person(by.to_string());
        let agent = self.agent_for("freeze request", agent_ref, &actor).await?;
        self.check_owner_or_approver("freeze request", &agent, by, &actor)
            .await?;
        if agent.status != AgentStatus::Active {
            let why = format!(
                "{} is {}; only an active agent can be frozen",
                agent.name,
                agent.status.as_str()
            );
            self.audit_refusal(
                "freeze request",
                &actor,
                Some((&agent.id, &agent.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Conflict(why));
        }
        let finding = Finding {
            rule: "manual".into(),
            severity: statemachines::detection::Severity::High,
            action: vec![Action::Freeze],
            summary: format!("{by} froze {}: {reason}", agent.name),
            evidence: vec![format!("reason: {reason}")],
        };
        let now = self.clock.now();
        let id = format!("manual/{by}/{}", now.timestamp_millis());
        self.respond(&agent, vec![finding], &id, now).await
    }

    /// Asks security to decide on an agent frozen earlier (by a review's freeze default, or a
    /// freeze nobody decided in time): Unfreeze restores its grants, Decommission ends it. The
    /// owner or a security approver asks; someone else approves (two after a CRITICAL finding).
    pub async fn request_unfreeze(
        &self,
        agent_ref: &str,
        by: &str,
        reason: &str,
    ) -> Result<Started, EngineError> {
        let actor = Actor::Person(by.to_string());
        let agent = self
            .agent_for("unfreeze request", agent_ref, &actor)
            .await?;
        self.check_owner_or_approver("unfreeze request", &agent, by, &actor)
            .await?;
        let open = self
            .store
            .instances_for_agent(&agent.id)
            .await?
            .into_iter()
            .find(|i| i.kind == Freeze::KIND && !i.terminal);
        let busy = match open {
            Some(i) => Some(format!(
                "{} has a freeze in progress ({}, {}); decide that one",
                agent.name, i.id, i.state_name
            )),
            None if agent.status != AgentStatus::Frozen => Some(format!(
                "{} is {}; only a frozen agent can be unfrozen",
                agent.name,
                agent.status.as_str()
            )),
            None => None,
        };
        if let Some(why) = busy {
            self.audit_refusal(
                "unfreeze request",
                &actor,
                Some((&agent.id, &agent.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Conflict(why));
        }
        // As strict as the worst finding on record: two approvers after a CRITICAL one.
        let severity = agent
            .flags
            .iter()
            .filter_map(|f| match f {
                statemachines::AgentFlag::Anomaly { severity, .. } => Some(*severity),
                _ => None,
            })
            .max()
            .unwrap_or(statemachines::detection::Severity::High)
            .max(statemachines::detection::Severity::High);
        let finding = Finding {
            rule: statemachines::freeze::UNFREEZE_REQUEST.into(),
            severity,
            action: vec![Action::Freeze],
            summary: format!("{by} asks to unfreeze {}: {reason}", agent.name),
            evidence: agent
                .flags
                .iter()
                .filter_map(|f| match f {
                    statemachines::AgentFlag::Frozen { reason, at } => Some(format!(
                        "frozen {}: {reason}",
                        at.format("%Y-%m-%d %H:%M UTC")
                    )),
                    _ => None,
                })
                .collect(),
        };
        let now = self.clock.now();
        let hash = short_hash(&[&agent.id, "unfreeze", &now.timestamp_millis().to_string()]);
        let workflow_id = format!("freeze-{}-{}", agent.name, &hash[..12]);
        let input = StartInput::Freeze(FreezeInput {
            agent: agent.clone(),
            finding,
            accepted_at: now,
            raised_by: actor.clone(),
            decide_only: true,
        });
        let summary = json!({"unfreeze_request": {"by": by, "reason": reason}});
        let (state, duplicate) = self
            .start(
                &workflow_id,
                Freeze::KIND,
                Some(&agent.id),
                &agent.name,
                input,
                &hash,
                actor,
                summary,
            )
            .await?;
        Ok(Started {
            workflow_id,
            agent_id: agent.id.clone(),
            state,
            duplicate,
        })
    }

    /// Starts the response to each finding. One freeze at a time per agent: while one runs (or
    /// the agent is frozen), a further freezing finding is recorded as an alert.
    async fn respond(
        &self,
        agent: &Agent,
        findings: Vec<Finding>,
        signal_id: &str,
        accepted_at: DateTime<Utc>,
    ) -> Result<Detected, EngineError> {
        let mut out = Detected::default();
        if findings.is_empty() {
            return Ok(out);
        }
        // A freeze that only asks does not hold back one that contains (which withdraws it).
        let open: Vec<String> = self
            .store
            .instances_for_agent(&agent.id)
            .await?
            .into_iter()
            .filter(|i| i.kind == Freeze::KIND && !i.terminal)
            .map(|i| i.state_name)
            .collect();
        let mut asking = open.iter().any(|s| s == "Asking");
        let mut freezing =
            agent.status == AgentStatus::Frozen || open.iter().any(|s| s != "Asking");
        for finding in findings {
            // The summary quotes outside text (a freeze reason): a field, escaped by the logger,
            // never the message, where a newline would forge a log line.
            tracing::warn!(agent = %agent.name, rule = %finding.rule, severity = finding.severity.as_str(), summary = ?finding.summary, "anomaly");
            let mut response = finding.clone();
            // One question at a time: a second finding that would ask is an alert.
            let would_ask = response.freezes() && !response.severity.contains_first();
            if response.freezes() && (freezing || (asking && would_ask)) {
                response.action.retain(|a| *a != Action::Freeze);
                response.action.push(Action::Alert);
                response
                    .evidence
                    .push("the agent is already frozen or being frozen".into());
            }
            if response.freezes() {
                if response.severity.contains_first() {
                    freezing = true;
                } else {
                    asking = true;
                }
            }
            let hash = short_hash(&[&agent.id, &finding.rule, signal_id]);
            let workflow_id = format!("freeze-{}-{}", agent.name, &hash[..12]);
            let raised_by = if signal_id.starts_with("manual/") {
                Actor::Person(signal_id.split('/').nth(1).unwrap_or_default().to_string())
            } else {
                Actor::IdpEvent(signal_id.to_string())
            };
            let input = StartInput::Freeze(FreezeInput {
                agent: agent.clone(),
                finding: response.clone(),
                accepted_at,
                raised_by: raised_by.clone(),
                decide_only: false,
            });
            let summary = json!({"finding": {"rule": finding.rule, "severity": finding.severity, "summary": finding.summary}});
            match self
                .start(
                    &workflow_id,
                    Freeze::KIND,
                    Some(&agent.id),
                    &agent.name,
                    input,
                    &hash,
                    raised_by,
                    summary,
                )
                .await
            {
                Ok((state, duplicate)) => out.started.push(Started {
                    workflow_id,
                    agent_id: agent.id.clone(),
                    state,
                    duplicate,
                }),
                // Refused (no client): audited by `start`; the next finding may still act.
                Err(EngineError::Rejected(_)) => {}
                Err(e) => return Err(e),
            }
            if response.action.contains(&Action::Rotate) {
                match self
                    .request_rotation(
                        &agent.id,
                        RotationReason::Detection {
                            rule: finding.rule.clone(),
                        },
                        Actor::System,
                    )
                    .await
                {
                    // A rotation already running (or a decommission) covers it.
                    Ok(_) | Err(EngineError::Conflict(_)) | Err(EngineError::Rejected(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            out.findings.push(response);
        }
        Ok(out)
    }
}
