//! A person's decision on an approval, and a requester's cancellation: checked now for a clear
//! answer, then applied by the workflow's machine.

use super::*;
use statemachines::onboarding::OwnerStatus;

impl Engine {
    /// Only people active in the directory decide (approvals, review answers): someone who
    /// left loses the power at once, whatever the policy file still lists.
    pub(crate) async fn check_active(&self, person: &str) -> Result<Option<Rejected>, EngineError> {
        Ok(match self.directory.owner_status(person).await? {
            OwnerStatus::Active => None,
            OwnerStatus::Inactive => Some(Rejected::new(
                "approver",
                format!("{person} is no longer active in the directory and cannot decide"),
            )),
            OwnerStatus::Unknown => Some(Rejected::new(
                "approver",
                format!("{person} is not in the directory and cannot decide"),
            )),
        })
    }

    /// Checks a decision now (for a clear answer to the person) and hands it to the workflow,
    /// whose machine enforces the same rules when it applies it. `shown` is the action hash of
    /// the request as the approver saw it (a Slack button carries it): a decision on a request
    /// that has changed since is refused.
    pub async fn decide(
        &self,
        approval_id: &str,
        approver: &str,
        decision: Decision,
        reason: Option<String>,
        shown: Option<&str>,
    ) -> Result<ApprovalRecord, EngineError> {
        let actor = Actor::Person(approver.to_string());
        let Some(record) = self.store.approval(approval_id).await? else {
            let why = format!("no approval with id `{approval_id}`");
            self.audit_refusal("approval decision", &actor, None, None, &why)
                .await?;
            return Err(EngineError::NotFound(why));
        };
        let req = &record.request;
        let target = Some((req.agent_id.as_str(), req.agent_name.as_str()));
        if record.outcome.is_some() {
            let why = format!(
                "approval {approval_id} is already {}; a decision is made once",
                record.status()
            );
            self.audit_refusal(
                "approval decision",
                &actor,
                target,
                Some(&req.workflow_id),
                &why,
            )
            .await?;
            return Err(EngineError::Rejected(Rejected::new("approval", why)));
        }
        let refusal = match shown {
            Some(hash) if hash != record.action_hash => Some(Rejected::new(
                "approval",
                format!(
                    "approval {approval_id} changed after this message was shown (what is asked is no longer what you saw); nothing was decided, look at the current request"
                ),
            )),
            _ => req.check_decision(approver, self.clock.now()).err(),
        };
        let refusal = match refusal {
            Some(r) => Some(r),
            None => self.check_active(approver).await?,
        };
        // The freeze machine's separation of duties, asked now so the owner is told at once.
        let refusal = match refusal {
            None if req.action == "freeze" => match self.store.agent(&req.agent_id).await? {
                Some(agent) => {
                    statemachines::freeze::check_question_answer(&agent, approver, decision).err()
                }
                None => None,
            },
            other => other,
        };
        if let Some(r) = refusal {
            self.audit_refusal(
                "approval decision",
                &actor,
                target,
                Some(&req.workflow_id),
                &r.to_string(),
            )
            .await?;
            return Err(EngineError::Rejected(r));
        }
        let decision_word = match decision {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        };
        let event_id = format!(
            "decision/{approval_id}/{}/{decision_word}",
            approver.to_ascii_lowercase()
        );
        let msg = Message::Event {
            workflow_id: req.workflow_id.clone(),
            event_id,
            event: Event::ApprovalDecided {
                approval_id: approval_id.to_string(),
                decision,
                approver: approver.to_string(),
                reason,
            },
        };
        self.send(vec![msg], Duration::ZERO).await?;
        Ok(record)
    }

    /// Withdraws a request that is still waiting.
    pub async fn cancel(
        &self,
        workflow_id: &str,
        by: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let actor = Actor::Person(by.to_string());
        match self.store.instance(workflow_id).await? {
            None => {
                let why = format!("no workflow `{workflow_id}`");
                self.audit_refusal("cancel", &actor, None, None, &why)
                    .await?;
                Err(EngineError::NotFound(why))
            }
            Some(i) if i.terminal => {
                let why = format!("workflow {workflow_id} already ended ({})", i.state_name);
                self.audit_refusal("cancel", &actor, None, Some(workflow_id), &why)
                    .await?;
                Err(EngineError::Rejected(Rejected::new("workflow", why)))
            }
            Some(i) => {
                // Same rule as the machine's, checked now for a clear answer to the person.
                let waiting = self
                    .store
                    .approvals(true)
                    .await?
                    .into_iter()
                    .find(|a| a.request.workflow_id == workflow_id);
                let check = match &waiting {
                    Some(a) if a.request.action == "freeze" => {
                        match self.store.agent(&a.request.agent_id).await? {
                            Some(agent) => statemachines::freeze::check_question_withdrawal(
                                &agent, &a.request, &actor,
                            ),
                            None => a.request.check_canceller(&actor),
                        }
                    }
                    Some(a) => a.request.check_canceller(&actor),
                    None => Ok(()),
                };
                if let Some(approval) = waiting
                    && let Err(r) = check
                {
                    let agent = i.agent_id.clone().unwrap_or_default();
                    self.audit_refusal(
                        "cancel",
                        &actor,
                        Some((&agent, &approval.request.agent_name)),
                        Some(workflow_id),
                        &r.to_string(),
                    )
                    .await?;
                    return Err(EngineError::Rejected(r));
                }
                // A rotation a detection rule started is security's to stop (the machine's rule,
                // asked now so the person is told at once).
                if i.kind == <statemachines::rotation::Rotation as statemachines::Workflow>::KIND
                    && let Ok(state) = serde_json::from_value::<
                        statemachines::rotation::RotationState,
                    >(i.state.clone())
                    && let Err(r) =
                        statemachines::rotation::check_canceller(state.run(), &actor, &self.policy)
                {
                    let agent = i.agent_id.clone().unwrap_or_default();
                    self.audit_refusal(
                        "cancel",
                        &actor,
                        Some((&agent, &state.run().agent.name)),
                        Some(workflow_id),
                        &r.to_string(),
                    )
                    .await?;
                    return Err(EngineError::Rejected(r));
                }
                let event = Event::Cancel {
                    by: actor,
                    reason: reason.to_string(),
                };
                let msg = Message::Event {
                    workflow_id: workflow_id.to_string(),
                    // One id per person: a refused cancel must not swallow an allowed one.
                    event_id: format!("cancel/{workflow_id}/{}", by.trim().to_ascii_lowercase()),
                    event,
                };
                self.send(vec![msg], Duration::ZERO).await?;
                Ok(())
            }
        }
    }
}
