//! Owner loss: the identity provider says a person left; every live agent they own starts the
//! owner-loss workflow, and the manager or security assigns a new owner.

use super::{Engine, EngineError, Started, short_hash, workflows::StartInput};
use crate::engine::message::Message;
use crate::signal::PersonChange;
use serde_json::json;
use statemachines::onboarding::OwnerStatus;
use statemachines::owner_loss::{OwnerLoss, OwnerLossInput};
use statemachines::{Actor, AgentStatus, Event, Rejected, Workflow};
use std::time::Duration;

impl Engine {
    /// Starts owner-loss handling for each live agent `owner` (an email / login) owns, once per
    /// agent while one is running. Returns what was started.
    pub async fn owner_lost(
        &self,
        owner: &str,
        change: PersonChange,
        event_id: &str,
    ) -> Result<Vec<Started>, EngineError> {
        let owned: Vec<_> = self
            .store
            .agents_owned_by(owner)
            .await?
            .into_iter()
            .filter(|a| a.owner.eq_ignore_ascii_case(owner))
            .filter(|a| {
                matches!(
                    a.status,
                    AgentStatus::Active | AgentStatus::PendingApproval | AgentStatus::Provisioning
                )
            })
            .collect();
        if owned.is_empty() {
            return Ok(vec![]);
        }
        let manager = self
            .directory
            .person(owner)
            .await?
            .and_then(|p| p.manager)
            .filter(|m| !m.trim().is_empty());
        let change = match change {
            PersonChange::Deactivated => "deactivated",
            PersonChange::Suspended => "suspended",
        };
        let mut started = Vec::new();
        for agent in owned {
            let running = self
                .store
                .instances_for_agent(&agent.id)
                .await?
                .into_iter()
                .find(|i| i.kind == OwnerLoss::KIND && !i.terminal);
            if let Some(i) = running {
                started.push(Started {
                    workflow_id: i.id,
                    agent_id: agent.id.clone(),
                    state: i.state_name,
                    duplicate: true,
                });
                continue;
            }
            let hash = short_hash(&[&agent.id, &agent.owner, event_id]);
            let workflow_id = format!("owner-loss-{}-{}", agent.name, &hash[..8]);
            let (agent_id, name) = (agent.id.clone(), agent.name.clone());
            let input = StartInput::OwnerLoss(OwnerLossInput {
                agent,
                change: change.to_string(),
                manager: manager.clone(),
                event_id: event_id.to_string(),
            });
            let (state, duplicate) = self
                .start(
                    &workflow_id,
                    OwnerLoss::KIND,
                    Some(&agent_id),
                    &name,
                    input,
                    &hash,
                    Actor::IdpEvent(event_id.to_string()),
                    json!({"owner_lost": {"owner": owner, "change": change}}),
                )
                .await?;
            started.push(Started {
                workflow_id,
                agent_id,
                state,
                duplicate,
            });
        }
        Ok(started)
    }

    /// Makes `new_owner` the owner of an agent whose owner was lost. Only the lost owner's
    /// manager or a policy approver may, and the new owner must be an active person.
    pub async fn reassign_owner(
        &self,
        agent_ref: &str,
        new_owner: &str,
        by: &str,
    ) -> Result<String, EngineError> {
        let actor = Actor::Person(by.to_string());
        let Some(agent) = self.find_agent(agent_ref).await? else {
            let why = format!("no agent with id or name `{agent_ref}`");
            self.audit_refusal("owner reassignment", &actor, None, None, &why)
                .await?;
            return Err(EngineError::NotFound(why));
        };
        let subject = Some((agent.id.as_str(), agent.name.as_str()));
        let Some(instance) = self
            .store
            .instances_for_agent(&agent.id)
            .await?
            .into_iter()
            .find(|i| i.kind == OwnerLoss::KIND && !i.terminal)
        else {
            let why = format!(
                "{} has an owner ({}); owners are reassigned here only after the identity provider reports the owner left",
                agent.name, agent.owner
            );
            self.audit_refusal("owner reassignment", &actor, subject, None, &why)
                .await?;
            return Err(EngineError::Conflict(why));
        };
        let manager = self
            .directory
            .person(&agent.owner)
            .await?
            .and_then(|p| p.manager);
        let allowed = manager.iter().any(|m| m.eq_ignore_ascii_case(by)) || self.is_approver(by);
        let refusal = if !allowed {
            Some(Rejected::new(
                "by",
                format!(
                    "{by} may not reassign {}: only the former owner's manager{} or a security approver may",
                    agent.name,
                    manager.map(|m| format!(" ({m})")).unwrap_or_default()
                ),
            ))
        } else {
            match self.directory.owner_status(new_owner).await? {
                OwnerStatus::Active => None,
                OwnerStatus::Inactive => Some(Rejected::new(
                    "owner",
                    format!(
                        "{new_owner} is not an active person in the directory; choose an active owner"
                    ),
                )),
                OwnerStatus::Unknown => Some(Rejected::new(
                    "owner",
                    format!(
                        "{new_owner} is not a person in the directory; agents need a named human owner"
                    ),
                )),
            }
        };
        if let Some(r) = refusal {
            self.audit_refusal(
                "owner reassignment",
                &actor,
                subject,
                Some(&instance.id),
                &r.to_string(),
            )
            .await?;
            return Err(EngineError::Rejected(r));
        }
        let msg = Message::Event {
            workflow_id: instance.id.clone(),
            event_id: format!(
                "owner/{}/{}",
                instance.id,
                new_owner.trim().to_ascii_lowercase()
            ),
            event: Event::OwnerAssigned {
                owner: new_owner.trim().to_string(),
                by: by.to_string(),
            },
        };
        self.send(vec![msg], Duration::ZERO).await?;
        Ok(instance.id)
    }
}
