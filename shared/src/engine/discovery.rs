//! Shadow-agent discovery: clients at the identity provider that nobody registered. The sweep
//! lists the IdP's clients; the IdP's app-created events report one as it appears. Each
//! unknown client becomes an unregistered agent with a `shadow_agent` workflow that asks its
//! creator (or the security channel) to claim it. Letting it go deletes its client, so only a
//! security approver may; unclaimed after the grace period, it is frozen and the security
//! approvers decide whether to decommission it.
//!
//! Steward's own clients are never shadow agents, even before the onboarding that made one has
//! recorded its client id (the IdP's app-created event often arrives first): a client whose
//! creation mark ([`ClientInfo::steward_key`], the `create_client` key `<workflow>/<seq>/<index>`)
//! names a workflow of this Steward is its own, recorded or not; and for an IdP that keeps no
//! mark, a client named like an agent being onboarded without a client yet is taken for that
//! agent's.

use super::message::Message;
use super::workflows::StartInput;
use super::{Engine, EngineError, Started, short_hash};
use crate::ports::idp::ClientInfo;
use serde_json::json;
use statemachines::discovery::{OPEN_STATES, ShadowAgent, ShadowInput, check_releaser};
use statemachines::onboarding::OwnerStatus;
use statemachines::{Actor, Agent, AgentRequest, AgentStatus, Event, Rejected, Workflow};
use std::time::Duration;

/// The store cursor holding when the last discovery sweep ran (the posture report reads it).
pub const LAST_SWEEP_CURSOR: &str = "discovery:last-sweep";

/// What one discovery sweep found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiscoveryReport {
    /// Clients at the identity provider.
    pub clients: usize,
    /// Clients that belong to a registered agent.
    pub registered: usize,
    /// Clients Steward made, or is making, that no agent records yet: a creation whose
    /// onboarding has not recorded it, or one whose onboarding ended without it (logged).
    /// Never shadow agents.
    #[serde(default)]
    pub unrecorded: usize,
    /// Shadow agents found now (new workflows) or already known (duplicates).
    pub shadows: Vec<Started>,
    /// The sweep was queued for the process that holds the identity provider (the worker
    /// function on AWS) rather than run here; the counts above are then empty.
    #[serde(default)]
    pub queued: bool,
}

/// A claim: what the new owner says about the agent (the onboarding request).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    /// The registered name; the client's name when absent.
    #[serde(default)]
    pub name: Option<String>,
    pub owner: String,
    pub team: String,
    pub environment: String,
    pub purpose: String,
    /// The scopes to keep; the client's current scopes when absent.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub token_lifetime_secs: Option<u32>,
}

/// The start of every shadow agent's id (a claim keeps it).
const SHADOW_AGENT_ID_PREFIX: &str = "agt-shadow-";

fn workflow_id(client_id: &str) -> String {
    format!("shadow-{client_id}")
}

/// The workflow a command key names: the engine keys external commands
/// `<workflow>/<seq>/<index>`.
fn workflow_of(key: &str) -> Option<&str> {
    let mut parts = key.rsplitn(3, '/');
    let (index, seq, workflow) = (parts.next()?, parts.next()?, parts.next()?);
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (number(index) && number(seq) && !workflow.is_empty()).then_some(workflow)
}

/// A registry name from an IdP label: lowercase words joined by '-'.
fn name_of(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

impl Engine {
    /// The discovery sweep: every IdP client without an agent becomes a shadow agent.
    pub async fn discover(&self) -> Result<DiscoveryReport, EngineError> {
        let clients = self.executor.idp.list_clients().await?;
        let mut report = DiscoveryReport {
            clients: clients.len(),
            ..Default::default()
        };
        for client in clients {
            // Known shadow agents come back as duplicates of their workflow.
            if self
                .store
                .agent_by_client(&client.client_id)
                .await?
                .is_some_and(|a| a.status != AgentStatus::Unregistered)
            {
                report.registered += 1;
                continue;
            }
            if self.is_own(&client).await? {
                report.unrecorded += 1;
                continue;
            }
            if let Some(s) = self
                .shadow(client, None, Actor::Schedule("discovery".into()))
                .await?
            {
                report.shadows.push(s);
            }
        }
        self.store
            .set_cursor(LAST_SWEEP_CURSOR, &self.clock.now().to_rfc3339())
            .await?;
        Ok(report)
    }

    /// Queues a discovery sweep for the worker (the process that holds the identity
    /// provider); one per hour however often it is asked. Returns whether it was queued.
    pub async fn queue_discovery(&self) -> Result<bool, EngineError> {
        let run = self.clock.now().format("%Y-%m-%dT%H").to_string();
        self.send(
            vec![super::message::Message::Discover { run }],
            std::time::Duration::ZERO,
        )
        .await?;
        Ok(true)
    }

    /// The IdP said a client was created (Okta `application.lifecycle.create`), by `creator`
    /// when a person did it. Clients Steward created are known and ignored, recorded or not:
    /// Okta reports the apps Steward makes too, often before the onboarding has recorded them.
    /// Hands an IdP event about a new client to the worker, which holds the identity provider
    /// and runs [`Engine::client_created`]: the function that received the event (the Okta
    /// hook on AWS) never calls the IdP, so one such event cannot fail a whole delivery.
    pub async fn look_at_new_client(
        &self,
        client_id: &str,
        creator: Option<&str>,
        event_id: &str,
    ) -> Result<(), EngineError> {
        self.send(
            vec![super::message::Message::ClientCreated {
                group: format!("discovery-{client_id}"),
                client_id: client_id.to_string(),
                creator: creator.map(str::to_string),
                event_id: event_id.to_string(),
            }],
            std::time::Duration::ZERO,
        )
        .await?;
        Ok(())
    }

    pub async fn client_created(
        &self,
        client_id: &str,
        creator: Option<&str>,
        event_id: &str,
    ) -> Result<Option<Started>, EngineError> {
        if self.store.agent_by_client(client_id).await?.is_some() {
            return Ok(None);
        }
        let Some(client) = self.executor.idp.client(client_id).await? else {
            return Ok(None); // gone again before we looked
        };
        if self.is_own(&client).await? {
            return Ok(None);
        }
        let actor = Actor::IdpEvent(event_id.to_string());
        self.shadow(client, creator.map(str::to_string), actor)
            .await
    }

    /// Whether a client no agent records is one Steward made or is making, and so never a
    /// shadow agent.
    async fn is_own(&self, client: &ClientInfo) -> Result<bool, EngineError> {
        let id = client.client_id.as_str();
        if let Some(key) = client.steward_key.as_deref() {
            // Only this Steward's workflows make its clients; a mark naming none of them was
            // forged or made by another deployment, and proves nothing.
            let instance = match workflow_of(key) {
                Some(wf) => self.store.instance(wf).await?,
                None => None,
            };
            let Some(instance) = instance else {
                tracing::warn!(
                    client_id = id,
                    key,
                    "a creation mark naming no workflow here: the client counts as made elsewhere"
                );
                return self.being_onboarded(client).await;
            };
            let in_flight = instance.pending.iter().any(|p| p.key == key);
            // A leftover (its workflow ended without recording it) is Steward's to clean up,
            // not a person's to claim. The onboarding may have recorded it since the caller
            // looked, hence the second read.
            if !in_flight && self.store.agent_by_client(id).await?.is_none() {
                tracing::warn!(
                    client_id = id,
                    workflow = %instance.id,
                    "Steward made this client and no agent records it; delete it if unused"
                );
            }
            return Ok(true);
        }
        self.being_onboarded(client).await
    }

    /// For an IdP that keeps no creation mark: a client named like an agent being onboarded
    /// that has no client yet is taken for the one its onboarding is creating. Its name is the
    /// agent's name (`ClientSpec::name`).
    async fn being_onboarded(&self, client: &ClientInfo) -> Result<bool, EngineError> {
        let Some(a) = self.store.agent_by_name(&client.name).await? else {
            return Ok(false);
        };
        let onboarding = a.client_id.is_none()
            && matches!(
                a.status,
                AgentStatus::Provisioning | AgentStatus::PendingApproval
            );
        // Or it recorded this very client after the caller looked it up by its id.
        let recorded = a.status != AgentStatus::Unregistered
            && a.client_id.as_deref() == Some(client.client_id.as_str());
        Ok(onboarding || recorded)
    }

    /// Starts the shadow workflow of an unknown client (once per client).
    async fn shadow(
        &self,
        client: ClientInfo,
        creator: Option<String>,
        found_by: Actor,
    ) -> Result<Option<Started>, EngineError> {
        let now = self.clock.now();
        let hash = short_hash(&[&client.client_id]);
        let agent = Agent {
            id: format!("{SHADOW_AGENT_ID_PREFIX}{}", &hash[..12]),
            name: name_of(&client.name),
            owner: String::new(),
            team: String::new(),
            environment: String::new(),
            purpose: "found at the identity provider; not registered with Steward".into(),
            scopes: client.scopes.clone(),
            token_lifetime_secs: client.token_lifetime_secs,
            expires_on: None,
            status: AgentStatus::Unregistered,
            client_id: Some(client.client_id.clone()),
            secret_version: None,
            credential_issued_at: Some(client.created_at),
            requested_by: found_by.describe(),
            created_at: client.created_at,
            updated_at: now,
            flags: vec![],
            credentials: vec![],
            credential_kind: Default::default(),
            key_custody: Default::default(),
            token_binding: Default::default(),
            keys: vec![],
            csr: None,
            certificates: vec![],
            decommission: None,
            last_review: None,
        };
        let id = workflow_id(&client.client_id);
        let (agent_id, name) = (agent.id.clone(), agent.name.clone());
        let summary = json!({"shadow": {"client_id": client.client_id, "creator": creator}});
        let input = StartInput::ShadowAgent(ShadowInput {
            agent,
            creator,
            found_by: found_by.clone(),
        });
        let (state, duplicate) = self
            .start(
                &id,
                ShadowAgent::KIND,
                Some(&agent_id),
                &name,
                input,
                &hash,
                found_by,
                summary,
            )
            .await?;
        Ok(Some(Started {
            workflow_id: id,
            agent_id,
            state,
            duplicate,
        }))
    }

    /// The shadow agent `client_ref` names (client id, agent id or agent name), while it can
    /// still be claimed or let go: unclaimed, or frozen with no decision to delete it.
    async fn unclaimed(
        &self,
        what: &str,
        client_ref: &str,
        by: &Actor,
    ) -> Result<(Agent, String), EngineError> {
        let agent = match self.store.agent_by_client(client_ref).await? {
            Some(a) => a,
            None => self.agent_for(what, client_ref, by).await?,
        };
        let client_id = agent.client_id.clone().unwrap_or_default();
        let id = workflow_id(&client_id);
        let instance = self.store.instance(&id).await?;
        // The record decides too: a frozen shadow agent someone decommissioned or unfroze by
        // another way is no longer the shadow workflow's to hand over.
        let open = instance.is_some_and(|i| OPEN_STATES.contains(&i.state_name.as_str()))
            && matches!(
                agent.status,
                AgentStatus::Unregistered | AgentStatus::Frozen
            );
        if !open {
            let why = format!(
                "{} ({}) is not a shadow agent waiting for a claim (status {})",
                agent.name,
                client_id,
                agent.status.as_str()
            );
            self.audit_refusal(what, by, Some((&agent.id, &agent.name)), None, &why)
                .await?;
            return Err(EngineError::Conflict(why));
        }
        Ok((agent, id))
    }

    /// Claims a shadow agent: its onboarding starts with a real owner and, once a security
    /// approver approves, takes over the existing client (grants set to the approved scopes, a
    /// new secret into the vault, the secrets Steward never held removed, the client active).
    /// The claimer must be an active person.
    pub async fn claim_shadow(
        &self,
        client_ref: &str,
        claim: Claim,
        by: &str,
    ) -> Result<Started, EngineError> {
        let actor = Actor::Person(by.to_string());
        let (agent, shadow_id) = self.unclaimed("shadow claim", client_ref, &actor).await?;
        if self.directory.owner_status(by).await? != OwnerStatus::Active {
            let why =
                format!("{by} is not an active person in the directory and cannot claim an agent");
            self.audit_refusal(
                "shadow claim",
                &actor,
                Some((&agent.id, &agent.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Rejected(Rejected::new("by", why)));
        }
        let client_id = agent.client_id.clone().unwrap_or_default();
        let request = AgentRequest {
            name: claim.name.unwrap_or_else(|| agent.name.clone()),
            owner: claim.owner.clone(),
            team: claim.team,
            environment: claim.environment,
            purpose: claim.purpose,
            scopes: claim.scopes.unwrap_or_else(|| agent.scopes.clone()),
            token_lifetime_secs: claim.token_lifetime_secs,
            expires_on: None,
            // A claimed client keeps a secret: Steward replaces the ones it never held.
            credential: Default::default(),
            public_key: None,
            key_custody: Default::default(),
            csr: None,
        };
        let started = self
            .onboard(
                request,
                by,
                Some((&agent.id, &client_id, &agent.updated_at.to_rfc3339())),
            )
            .await?;
        let msg = Message::Event {
            // One per claim: a claim after an earlier one ended is a new event.
            event_id: format!("claim/{shadow_id}/{}", started.workflow_id),
            workflow_id: shadow_id,
            event: Event::ShadowClaimed {
                by: by.to_string(),
                owner: claim.owner,
                workflow_id: started.workflow_id.clone(),
            },
        };
        self.send(vec![msg], Duration::ZERO).await?;
        Ok(started)
    }

    /// `Command::SettleShadowClaim`: tells the shadow workflow of `client_id` how its claim's
    /// onboarding ended.
    pub(super) async fn settle_shadow_claim(
        &self,
        client_id: &str,
        onboarding: &str,
        adopted: bool,
        reason: &str,
    ) -> Result<Option<Event>, crate::engine::executor::ExecError> {
        let msg = Message::Event {
            event_id: format!("settle/{onboarding}"),
            workflow_id: workflow_id(client_id),
            event: Event::ShadowClaimSettled {
                onboarding: onboarding.to_string(),
                adopted,
                reason: reason.to_string(),
            },
        };
        self.send(vec![msg], Duration::ZERO).await.map_err(|e| {
            crate::engine::executor::ExecError {
                command: "workflow.settle_shadow_claim",
                message: e.to_string(),
                retryable: true,
                retry_after: None,
            }
        })?;
        Ok(None)
    }

    /// Lets a shadow agent go: it is frozen now and decommissioned, its client deleted. Only a
    /// security approver active in the directory may: a creator is a name an IdP event carries,
    /// which proves nothing.
    pub async fn release_shadow(
        &self,
        client_ref: &str,
        by: &str,
        reason: &str,
    ) -> Result<String, EngineError> {
        let actor = Actor::Person(by.to_string());
        let (agent, shadow_id) = self.unclaimed("shadow release", client_ref, &actor).await?;
        // The machine's rule, asked now so the person is told at once.
        let refusal = match check_releaser(&agent, by, &self.policy) {
            Err(r) => Some(r),
            Ok(()) => self.check_active(by).await?,
        };
        if let Some(r) = refusal {
            self.audit_refusal(
                "shadow release",
                &actor,
                Some((&agent.id, &agent.name)),
                None,
                &r.to_string(),
            )
            .await?;
            return Err(EngineError::Rejected(r));
        }
        let msg = Message::Event {
            // One id per person: a refused release must not swallow an allowed one.
            event_id: format!("release/{shadow_id}/{}", by.trim().to_ascii_lowercase()),
            workflow_id: shadow_id.clone(),
            event: Event::ShadowReleased {
                by: by.to_string(),
                reason: reason.to_string(),
            },
        };
        self.send(vec![msg], Duration::ZERO).await?;
        Ok(shadow_id)
    }

    /// Shadow agents that can still be claimed or let go: unregistered ones, and those frozen
    /// after their grace period with no decision to delete them.
    pub async fn shadow_agents(&self) -> Result<Vec<Agent>, EngineError> {
        let mut out = Vec::new();
        for a in self.store.agents().await? {
            let listed = match a.status {
                AgentStatus::Unregistered => true,
                // Only a shadow agent's id has this prefix (see `shadow`): other frozen agents
                // cost no read.
                AgentStatus::Frozen if a.id.starts_with(SHADOW_AGENT_ID_PREFIX) => {
                    let id = workflow_id(a.client_id.as_deref().unwrap_or_default());
                    self.store
                        .instance(&id)
                        .await?
                        .is_some_and(|i| OPEN_STATES.contains(&i.state_name.as_str()))
                }
                _ => false,
            };
            if listed {
                out.push(a);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_become_registry_names() {
        assert_eq!(super::name_of("Billing Sync (v2)"), "billing-sync-v2");
        assert_eq!(super::name_of("--ERP_reader--"), "erp-reader");
    }

    #[test]
    fn a_creation_mark_names_the_workflow_of_its_command_key() {
        use super::workflow_of;
        assert_eq!(
            workflow_of("onboarding-orders-agent-prod-1a2b3c4d/1/2"),
            Some("onboarding-orders-agent-prod-1a2b3c4d")
        );
        assert_eq!(workflow_of("shadow-a/b/12/0"), Some("shadow-a/b"));
        for not_a_key in ["console-Inventory Sync", "wf/1", "wf/x/2", "/1/2", "wf/1/"] {
            assert_eq!(workflow_of(not_a_key), None, "{not_a_key}");
        }
    }
}
