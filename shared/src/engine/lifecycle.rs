//! Rotation, decommission and expiry: how they are requested and scheduled.

use super::executor::ExecError;
use super::message::Message;
use super::workflows::StartInput;
use super::{Engine, EngineError, Started, short_hash};
use serde_json::json;
use statemachines::decommission::{Decommission, DecommissionInput, DecommissionReason};
use statemachines::expiry::{Expiry, ExpiryInput};
use statemachines::rotation::{Rotation, RotationInput, RotationReason};
use statemachines::{Actor, Agent, AgentFlag, AgentStatus, Event, Rejected, Workflow};
use std::time::Duration;

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SweepReport {
    /// Agent records the sweep read: active agents whose credential is old enough to be due in
    /// some environment, and active time-bound agents (through indexes; the registry is never
    /// read whole).
    pub agents: usize,
    /// Active agents whose secret is past its maximum age.
    pub due: usize,
    /// Rotations started by this sweep (each at its planned slot).
    pub started: usize,
    /// Due agents with a rotation already running (or being decommissioned).
    pub running: usize,
    /// Due agents left for the next sweep: a run starts at most an hour's worth of rotations
    /// (`rotation_starts_per_minute` × 60), so it ends in bounded time and starts never pile up.
    pub deferred: usize,
    /// The last planned start, if any.
    pub last_start: Option<chrono::DateTime<chrono::Utc>>,
    /// Time-bound agents whose expiry watch started now.
    pub expiries_started: usize,
    /// Agent-held keys near their maximum age whose watch started now (owner asked to rotate).
    #[serde(default)]
    pub key_expiries_started: usize,
    /// Certificates within `certificate_remind_days` of their end whose watch started now
    /// (owner asked to renew).
    #[serde(default)]
    pub certificate_expiries_started: usize,
    /// The scheduled access-review campaign this sweep launched, if one was due.
    pub campaign_launched: Option<String>,
    /// Shadow agents (IdP clients nobody registered) this sweep found for the first time.
    pub shadow_agents_found: usize,
    /// Where the identity provider is another process's (the worker function on AWS), the
    /// discovery sweep was queued for it instead of run here.
    #[serde(default)]
    pub discovery_queued: bool,
}

impl Engine {
    /// Rotates an agent's secret now (on demand, or for a detection rule). Refused while a
    /// rotation of the agent is running.
    pub async fn request_rotation(
        &self,
        agent_ref: &str,
        reason: RotationReason,
        by: Actor,
    ) -> Result<Started, EngineError> {
        let agent = self.agent_for("rotation request", agent_ref, &by).await?;
        if let RotationReason::OnDemand { by: person } = &reason {
            self.check_owner_or_approver("rotation request", &agent, person, &by)
                .await?;
        }
        // One read of the agent's workflows answers both questions.
        let live: Vec<_> = self
            .store
            .instances_for_agent(&agent.id)
            .await?
            .into_iter()
            .filter(|i| !i.terminal)
            .collect();
        let of_kind = |kind: &str| live.iter().find(|i| i.kind == kind).map(|i| i.id.clone());
        let running = match of_kind(Rotation::KIND) {
            Some(r) => Some(format!(
                "a rotation of {} is already running ({r}); wait for it to finish",
                agent.name
            )),
            None => of_kind(Decommission::KIND).map(|d| {
                format!(
                    "{} is being decommissioned ({d}); it is not rotated",
                    agent.name
                )
            }),
        };
        if let Some(why) = running {
            self.audit_refusal(
                "rotation request",
                &by,
                Some((&agent.id, &agent.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Conflict(why));
        }
        let now = self.clock.now();
        let hash = short_hash(&[
            &agent.id,
            agent.secret_version.as_deref().unwrap_or(""),
            &now.timestamp_millis().to_string(),
        ]);
        self.start_rotation(agent, reason, by, now, &hash).await
    }

    /// Rotates a key-bound agent's key to `new_key`, whose possession the caller proved (the
    /// owner or a security approver). Refused while a key rotation or a decommission of the
    /// agent runs.
    pub async fn request_key_rotation(
        &self,
        agent_ref: &str,
        new_key: statemachines::credential::AgentKey,
        person: &str,
    ) -> Result<Started, EngineError> {
        use statemachines::key_rotation::{KeyRotation, KeyRotationInput};
        let by = Actor::Person(person.to_string());
        let agent = self
            .agent_for("key rotation request", agent_ref, &by)
            .await?;
        self.check_owner_or_approver("key rotation request", &agent, person, &by)
            .await?;
        self.refuse_while_running(
            "key rotation request",
            &by,
            &agent,
            &[KeyRotation::KIND, Decommission::KIND],
        )
        .await?;
        let hash = short_hash(&[&agent.id, &new_key.kid]);
        let workflow_id = format!("key-rotation-{}-{}", agent.name, &hash[..12]);
        let (agent_id, name) = (agent.id.clone(), agent.name.clone());
        let summary = json!({"key_rotation": {"new_kid": new_key.kid}});
        let input = StartInput::KeyRotation(KeyRotationInput {
            agent,
            new_key,
            requested_by: by.clone(),
        });
        let (state, duplicate) = self
            .start(
                &workflow_id,
                KeyRotation::KIND,
                Some(&agent_id),
                &name,
                input,
                &hash,
                by,
                summary,
            )
            .await?;
        Ok(Started {
            workflow_id,
            agent_id,
            state,
            duplicate,
        })
    }

    /// The owner (or a security approver) confirms the agent now uses key `kid`: the key
    /// rotation waiting for its first use goes on, as if the IdP had reported a grant with it.
    /// For identity providers that do not say which key signed a grant (Okta, RFC 7592).
    pub async fn confirm_key_in_use(
        &self,
        agent_ref: &str,
        kid: &str,
        person: &str,
    ) -> Result<String, EngineError> {
        use statemachines::key_rotation::KeyRotation;
        let by = Actor::Person(person.to_string());
        let agent = self
            .agent_for("key use confirmation", agent_ref, &by)
            .await?;
        self.check_owner_or_approver("key use confirmation", &agent, person, &by)
            .await?;
        let newest = agent
            .keys
            .iter()
            .rfind(|k| k.status == statemachines::credential::KeyStatus::Active)
            .is_some_and(|k| k.key.kid == kid);
        self.confirm_in_use(
            "key use confirmation",
            &agent,
            &by,
            KeyRotation::KIND,
            newest.then_some(kid),
            &format!("key {kid}"),
            Event::KeyUsed {
                kid: kid.to_string(),
                confirmed_by: Some(person.to_string()),
            },
        )
        .await
    }

    /// The owner (or a security approver) confirms the agent now uses certificate
    /// `certificate` (its serial or `x5t#S256`): the certificate rotation waiting for its first
    /// use goes on, as if the mTLS token endpoint had reported a grant with it. For identity
    /// providers that do not say which certificate a grant used.
    pub async fn confirm_certificate_in_use(
        &self,
        agent_ref: &str,
        certificate: &str,
        person: &str,
    ) -> Result<String, EngineError> {
        use statemachines::certificate_rotation::CertificateRotation;
        let what = "certificate use confirmation";
        let by = Actor::Person(person.to_string());
        let agent = self.agent_for(what, agent_ref, &by).await?;
        self.check_owner_or_approver(what, &agent, person, &by)
            .await?;
        let newest = agent
            .certificates
            .iter()
            .rfind(|c| c.revoked.is_none())
            .filter(|c| c.serial == certificate || c.x5t_s256 == certificate)
            .map(|c| c.x5t_s256.clone());
        let event = Event::CertificateUsed {
            x5t_s256: newest.clone().unwrap_or_default(),
            confirmed_by: Some(person.to_string()),
        };
        self.confirm_in_use(
            what,
            &agent,
            &by,
            CertificateRotation::KIND,
            newest.as_deref(),
            &format!("certificate {certificate}"),
            event,
        )
        .await
    }

    /// Sends a person's confirmation `event` to the agent's rotation of `kind` waiting in
    /// `AwaitingUse`, when `newest` (the id of the agent's newest credential, if it is the one
    /// confirmed) is set; otherwise refuses, audited, naming `credential`.
    #[allow(clippy::too_many_arguments)]
    async fn confirm_in_use(
        &self,
        what: &str,
        agent: &Agent,
        by: &Actor,
        kind: &str,
        newest: Option<&str>,
        credential: &str,
        event: Event,
    ) -> Result<String, EngineError> {
        let waiting = self
            .store
            .instances_for_agent(&agent.id)
            .await?
            .into_iter()
            .find(|i| !i.terminal && i.kind == kind && i.state_name == "AwaitingUse");
        let (Some(i), Some(id)) = (waiting, newest) else {
            let why = format!(
                "no {} of {} waits for {credential} to be used",
                kind.replace('_', " "),
                agent.name
            );
            self.audit_refusal(what, by, Some((&agent.id, &agent.name)), None, &why)
                .await?;
            return Err(EngineError::Conflict(why));
        };
        self.send(
            vec![Message::Event {
                event_id: format!("confirmed/{}/{id}", i.id),
                workflow_id: i.id.clone(),
                event,
            }],
            Duration::ZERO,
        )
        .await?;
        Ok(i.id)
    }

    /// A token was granted to `client_id` with a client assertion signed by key `kid`: when the
    /// agent's newest key is one a key rotation waits to see used, the rotation hears of it.
    /// Costs one registry read per grant, and a workflow read only while two keys are active.
    pub async fn key_used(&self, client_id: &str, kid: &str) -> Result<(), EngineError> {
        use statemachines::credential::KeyStatus;
        use statemachines::key_rotation::KeyRotation;
        let Some(agent) = self.store.agent_by_client(client_id).await? else {
            return Ok(());
        };
        let active: Vec<_> = agent
            .keys
            .iter()
            .filter(|k| k.status == KeyStatus::Active)
            .collect();
        if active.len() < 2 || active.last().is_none_or(|k| k.key.kid != kid) {
            return Ok(());
        }
        self.tell_awaiting_use(
            &agent.id,
            KeyRotation::KIND,
            &format!("key-used/{kid}"),
            Event::KeyUsed {
                kid: kid.to_string(),
                confirmed_by: None,
            },
        )
        .await
    }

    /// Sends `event` to the agent's workflows of `kind` waiting in `AwaitingUse` (a rotation
    /// waiting for the new credential's first use), once per workflow and `what`.
    async fn tell_awaiting_use(
        &self,
        agent_id: &str,
        kind: &str,
        what: &str,
        event: Event,
    ) -> Result<(), EngineError> {
        let msgs: Vec<Message> = self
            .store
            .instances_for_agent(agent_id)
            .await?
            .into_iter()
            .filter(|i| !i.terminal && i.kind == kind && i.state_name == "AwaitingUse")
            .map(|i| Message::Event {
                event_id: format!("{what}/{}", i.id),
                workflow_id: i.id,
                event: event.clone(),
            })
            .collect();
        if !msgs.is_empty() {
            self.send(msgs, Duration::ZERO).await?;
        }
        Ok(())
    }

    /// Refuses (audited, 409) while a workflow of one of `kinds` runs for the agent.
    async fn refuse_while_running(
        &self,
        what: &str,
        by: &Actor,
        agent: &Agent,
        kinds: &[&str],
    ) -> Result<(), EngineError> {
        let running = self
            .store
            .instances_for_agent(&agent.id)
            .await?
            .into_iter()
            .find(|i| !i.terminal && kinds.contains(&i.kind.as_str()));
        let Some(other) = running else {
            return Ok(());
        };
        let why = format!(
            "a {} of {} is running ({}); wait for it to finish",
            other.kind.replace('_', " "),
            agent.name,
            other.id
        );
        self.audit_refusal(what, by, Some((&agent.id, &agent.name)), None, &why)
            .await?;
        Err(EngineError::Conflict(why))
    }

    /// Rotates a `tls_client_auth` agent's certificate: the internal CA issues a new one from
    /// `csr` (the agent's new CSR, checked as at onboarding: its signature is the proof of
    /// possession), the IdP accepts it beside the current one, and the old one is revoked after
    /// the grace period once the agent used the new one. Only the owner or a security approver;
    /// refused while a certificate rotation or a decommission of the agent runs.
    pub async fn request_certificate_rotation(
        &self,
        agent_ref: &str,
        csr: &str,
        person: &str,
    ) -> Result<Started, EngineError> {
        use statemachines::certificate_rotation::{CertificateRotation, CertificateRotationInput};
        let what = "certificate rotation request";
        let by = Actor::Person(person.to_string());
        let agent = self.agent_for(what, agent_ref, &by).await?;
        self.check_owner_or_approver(what, &agent, person, &by)
            .await?;
        self.accept_agent_csr(&agent.name, csr, &by).await?;
        self.refuse_while_running(
            what,
            &by,
            &agent,
            &[CertificateRotation::KIND, Decommission::KIND],
        )
        .await?;
        let hash = short_hash(&[&agent.id, csr]);
        let workflow_id = format!("certificate-rotation-{}-{}", agent.name, &hash[..12]);
        let (agent_id, name) = (agent.id.clone(), agent.name.clone());
        let summary = json!({"certificate_rotation": {"csr_sha256": &hash[..12]}});
        let input = StartInput::CertificateRotation(CertificateRotationInput {
            agent,
            order: self.policy.credentials.certificate_order(csr),
            requested_by: by.clone(),
        });
        let (state, duplicate) = self
            .start(
                &workflow_id,
                CertificateRotation::KIND,
                Some(&agent_id),
                &name,
                input,
                &hash,
                by,
                summary,
            )
            .await?;
        Ok(Started {
            workflow_id,
            agent_id,
            state,
            duplicate,
        })
    }

    /// A token was granted to `client_id` over mutual TLS with the certificate `x5t_s256`:
    /// when it is the agent's newest certificate and a certificate rotation waits to see it
    /// used, the rotation hears of it. Costs one registry read per grant, and a workflow read
    /// only while two certificates are valid.
    pub async fn certificate_used(
        &self,
        client_id: &str,
        x5t_s256: &str,
    ) -> Result<(), EngineError> {
        use statemachines::certificate_rotation::CertificateRotation;
        let Some(agent) = self.store.agent_by_client(client_id).await? else {
            return Ok(());
        };
        let valid: Vec<_> = agent
            .certificates
            .iter()
            .filter(|c| c.revoked.is_none())
            .collect();
        if valid.len() < 2 || valid.last().is_none_or(|c| c.x5t_s256 != x5t_s256) {
            return Ok(());
        }
        self.tell_awaiting_use(
            &agent.id,
            CertificateRotation::KIND,
            &format!("certificate-used/{x5t_s256}"),
            Event::CertificateUsed {
                x5t_s256: x5t_s256.to_string(),
                confirmed_by: None,
            },
        )
        .await
    }

    async fn start_rotation(
        &self,
        agent: Agent,
        reason: RotationReason,
        by: Actor,
        start_at: chrono::DateTime<chrono::Utc>,
        hash: &str,
    ) -> Result<Started, EngineError> {
        let workflow_id = format!("rotation-{}-{}", agent.name, &hash[..12]);
        let (agent_id, name) = (agent.id.clone(), agent.name.clone());
        let summary = json!({"rotation": {"reason": reason, "start_at": start_at}});
        let input = StartInput::Rotation(RotationInput {
            agent,
            reason,
            requested_by: by.clone(),
            start_at,
        });
        let (state, duplicate) = self
            .start(
                &workflow_id,
                Rotation::KIND,
                Some(&agent_id),
                &name,
                input,
                hash,
                by,
                summary,
            )
            .await?;
        Ok(Started {
            workflow_id,
            agent_id,
            state,
            duplicate,
        })
    }

    /// The scheduled sweep: starts a rotation for every active agent whose secret passed its
    /// environment's maximum age, spread over the policy's window, and the expiry watch of
    /// every time-bound agent. Safe to run often: a secret version is rotated by at most one
    /// scheduled rotation a day, and a running rotation is never doubled.
    pub async fn sweep(&self) -> Result<SweepReport, EngineError> {
        let now = self.clock.now();
        // Only credentials old enough to be due somewhere: the shortest maximum age of any
        // environment, oldest first, and no more than one run can start (an hour at the
        // policy's rate); the rest waits for the next sweep, which reads them first.
        let shortest = self
            .policy
            .lifecycle
            .rotation_max_age_days_by_env
            .values()
            .copied()
            .chain([self.policy.rotation_max_age_days])
            .min()
            .unwrap_or(self.policy.rotation_max_age_days);
        let cutoff = now - chrono::Duration::days(i64::from(shortest));
        let read_at_most = self.policy.lifecycle.rotation_starts_per_minute as usize * 60;
        let agents = self
            .store
            .agents_with_credentials_before(cutoff, read_at_most.max(1))
            .await?;
        let time_bound = self.store.time_bound_agents().await?;
        let plan = statemachines::sweep::plan(&agents, now, &self.policy);
        let mut report = SweepReport {
            agents: agents.len() + time_bound.len(),
            due: plan.len(),
            ..Default::default()
        };
        let by_id: std::collections::HashMap<&str, &Agent> =
            agents.iter().map(|a| (a.id.as_str(), a)).collect();
        let day = now.date_naive().to_string();
        let max_starts = self.policy.lifecycle.rotation_starts_per_minute as usize * 60;
        for p in plan {
            let Some(agent) = by_id.get(p.agent_id.as_str()) else {
                continue;
            };
            if report.started >= max_starts {
                report.deferred += 1;
                continue;
            }
            if self.busy(&agent.id).await? {
                report.running += 1;
                continue;
            }
            let hash = short_hash(&[
                &agent.id,
                agent.secret_version.as_deref().unwrap_or(""),
                &day,
            ]);
            let reason = RotationReason::Scheduled {
                age_days: p.age_days,
                max_age_days: p.max_age_days,
            };
            let by = Actor::Schedule("rotation-sweep".into());
            match self
                .start_rotation((*agent).clone(), reason, by, p.start_at, &hash)
                .await
            {
                Ok(s) if !s.duplicate => {
                    report.started += 1;
                    report.last_start = Some(p.start_at);
                }
                Ok(_) => report.running += 1,
                Err(EngineError::Rejected(r)) => {
                    tracing::info!(agent = %agent.name, %r, "sweep: rotation not started");
                }
                Err(e) => return Err(e),
            }
        }
        for agent in time_bound
            .iter()
            .filter(|a| a.status == AgentStatus::Active && a.expires_on.is_some())
        {
            if self
                .start_expiry(agent)
                .await?
                .is_some_and(|s| !s.duplicate)
            {
                report.expiries_started += 1;
            }
        }
        report.key_expiries_started = self.watch_key_ages(now).await?;
        report.certificate_expiries_started = self.watch_certificate_ends(now).await?;
        report.campaign_launched = self
            .launch_scheduled_campaign()
            .await?
            .filter(|s| !s.duplicate)
            .map(|s| s.workflow_id);
        if self.policy.discovery.enabled && self.config.identity_provider_elsewhere {
            report.discovery_queued = self.queue_discovery().await?;
        } else if self.policy.discovery.enabled {
            match self.discover().await {
                Ok(d) => {
                    report.shadow_agents_found = d.shadows.iter().filter(|s| !s.duplicate).count()
                }
                // The IdP being down must not stop rotations and reviews: the next sweep retries.
                Err(EngineError::Idp(e)) => {
                    tracing::warn!(error = %e, "sweep: discovery could not list the IdP's clients")
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(?report, "sweep");
        Ok(report)
    }

    /// Starts the expiry watch of every agent-held key within `key_remind_days` of its
    /// maximum age (once per key); returns how many started.
    async fn watch_key_ages(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, EngineError> {
        use statemachines::credential::KeyStatus;
        use statemachines::key_expiry::{KeyExpiry, KeyExpiryInput};
        let c = &self.policy.credentials;
        let max_age = chrono::Duration::days(i64::from(c.key_max_age_days));
        let notice = max_age - chrono::Duration::days(i64::from(c.key_remind_days));
        let read_at_most = self.policy.lifecycle.rotation_starts_per_minute as usize * 60;
        // A key-bound agent's credential time is its newest key's: its older keys are older.
        let agents = self
            .store
            .agents_with_credentials_before(now - notice, read_at_most.max(1))
            .await?;
        let mut started = 0;
        for agent in agents.iter().filter(|a| {
            a.credential_kind.key_bound()
                && matches!(a.status, AgentStatus::Active | AgentStatus::Frozen)
        }) {
            for key in agent
                .keys
                .iter()
                .filter(|k| k.status == KeyStatus::Active && k.added_at + notice <= now)
            {
                let expires_at = key.added_at + max_age;
                let input = StartInput::KeyExpiry(KeyExpiryInput {
                    agent: agent.clone(),
                    kid: key.key.kid.clone(),
                    expires_at,
                });
                let summary = json!({"key_expiry": {"kid": key.key.kid, "expires_at": expires_at}});
                if self
                    .start_watch(agent, KeyExpiry::KIND, &key.key.kid, input, summary)
                    .await?
                {
                    started += 1;
                }
            }
        }
        Ok(started)
    }

    /// Starts the expiry watch of every valid certificate within `certificate_remind_days` of
    /// its end (once per certificate); returns how many started.
    async fn watch_certificate_ends(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, EngineError> {
        use statemachines::certificate_expiry::{CertificateExpiry, CertificateExpiryInput};
        use statemachines::credential::CredentialKind;
        let c = &self.policy.credentials;
        let remind = chrono::Duration::days(i64::from(c.certificate_remind_days));
        // Certificates are issued for the policy's lifetime: one issued before `cutoff` is
        // within its reminder time. (One issued under a longer lifetime is read early and
        // skipped below until its own time; an expired one is refused at the mTLS endpoint
        // whether or not its watch ran.)
        let notice = chrono::Duration::days(i64::from(c.certificate_lifetime_days)) - remind;
        let read_at_most = self.policy.lifecycle.rotation_starts_per_minute as usize * 60;
        let agents = self
            .store
            .agents_with_credentials_before(
                now - notice.max(chrono::Duration::zero()),
                read_at_most.max(1),
            )
            .await?;
        let mut started = 0;
        for agent in agents.iter().filter(|a| {
            a.credential_kind == CredentialKind::TlsClientAuth
                && matches!(a.status, AgentStatus::Active | AgentStatus::Frozen)
        }) {
            for cert in agent
                .certificates
                .iter()
                .filter(|c| !c.revoked_for_good() && c.not_after - remind <= now)
            {
                let input = StartInput::CertificateExpiry(CertificateExpiryInput {
                    agent: agent.clone(),
                    certificate: cert.clone(),
                });
                let summary = json!({"certificate_expiry": {"serial": cert.serial, "expires_at": cert.not_after}});
                if self
                    .start_watch(agent, CertificateExpiry::KIND, &cert.serial, input, summary)
                    .await?
                {
                    started += 1;
                }
            }
        }
        Ok(started)
    }

    /// Starts the sweep's watch of `kind` over one credential (`credential`: a kid or a
    /// serial) of `agent`, once per credential; `true` when it started now. A watch the machine
    /// refuses (the credential went in between) is logged and skipped.
    async fn start_watch(
        &self,
        agent: &Agent,
        kind: &str,
        credential: &str,
        input: StartInput,
        summary: serde_json::Value,
    ) -> Result<bool, EngineError> {
        let hash = short_hash(&[&agent.id, credential]);
        let name = kind.replace('_', "-");
        let workflow_id = format!("{name}-{}-{}", agent.name, &hash[..12]);
        if self.store.instance(&workflow_id).await?.is_some() {
            return Ok(false);
        }
        match self
            .start(
                &workflow_id,
                kind,
                Some(&agent.id),
                &agent.name,
                input,
                &hash,
                Actor::Schedule(name.clone()),
                summary,
            )
            .await
        {
            Ok((_, duplicate)) => Ok(!duplicate),
            Err(EngineError::Rejected(r)) => {
                tracing::info!(agent = %agent.name, %r, "sweep: {name} watch not started");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Starts watching a time-bound agent's expiry date (once per agent).
    async fn start_expiry(&self, agent: &Agent) -> Result<Option<Started>, EngineError> {
        let workflow_id = format!("expiry-{}", agent.id);
        if let Some(i) = self.store.instance(&workflow_id).await? {
            return Ok(Some(Started {
                workflow_id,
                agent_id: agent.id.clone(),
                state: i.state_name,
                duplicate: true,
            }));
        }
        let input = StartInput::Expiry(ExpiryInput {
            agent: agent.clone(),
        });
        let summary = json!({"expiry": {"expires_on": agent.expires_on}});
        match self
            .start(
                &workflow_id,
                Expiry::KIND,
                Some(&agent.id),
                &agent.name,
                input,
                &workflow_id,
                Actor::Schedule("expiry".into()),
                summary,
            )
            .await
        {
            Ok((state, duplicate)) => Ok(Some(Started {
                workflow_id,
                agent_id: agent.id.clone(),
                state,
                duplicate,
            })),
            Err(EngineError::Rejected(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A person asks to keep a time-bound agent until `until`; a security approver decides.
    pub async fn request_renewal(
        &self,
        agent_ref: &str,
        until: chrono::NaiveDate,
        by: &str,
        reason: &str,
    ) -> Result<Started, EngineError> {
        let actor = Actor::Person(by.to_string());
        let agent = self.agent_for("renewal", agent_ref, &actor).await?;
        if agent.status != AgentStatus::Active || agent.expires_on.is_none() {
            let why = format!(
                "{} is {} and has {}; only active time-bound agents are renewed",
                agent.name,
                agent.status.as_str(),
                agent
                    .expires_on
                    .map(|d| format!("expiry date {d}"))
                    .unwrap_or_else(|| "no expiry date".into())
            );
            self.audit_refusal(
                "renewal",
                &actor,
                Some((&agent.id, &agent.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Rejected(Rejected::new("agent", why)));
        }
        self.check_owner_or_approver("renewal", &agent, by, &actor)
            .await?;
        let mut problems = Vec::new();
        if agent.expires_on.is_some_and(|d| until <= d) {
            problems.push(format!(
                "a renewal must move the expiry date {} later; {until} does not",
                agent.expires_on.map(|d| d.to_string()).unwrap_or_default()
            ));
        }
        if reason.trim().is_empty() {
            problems.push("say why the agent is still needed (reason)".to_string());
        }
        if !problems.is_empty() {
            let why = problems.join("; ");
            self.audit_refusal(
                "renewal",
                &actor,
                Some((&agent.id, &agent.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Rejected(Rejected::new("renewal", why)));
        }
        let started = self.start_expiry(&agent).await?.ok_or_else(|| {
            EngineError::Conflict(format!(
                "the expiry watch of {} could not start",
                agent.name
            ))
        })?;
        let event_id = format!(
            "renewal/{}/{until}/{}",
            started.workflow_id,
            by.trim().to_ascii_lowercase()
        );
        self.send(
            vec![Message::Event {
                workflow_id: started.workflow_id.clone(),
                event_id,
                event: Event::RenewalRequested {
                    until,
                    by: by.to_string(),
                    reason: reason.to_string(),
                },
            }],
            Duration::ZERO,
        )
        .await?;
        Ok(started)
    }

    /// The owner (or a security approver, or the lost owner's manager) asks to decommission an
    /// agent; a security approver decides.
    pub async fn request_decommission(
        &self,
        agent_ref: &str,
        requester: &str,
        why: &str,
    ) -> Result<Started, EngineError> {
        let actor = Actor::Person(requester.to_string());
        let agent = self
            .agent_for("decommission request", agent_ref, &actor)
            .await?;
        let owner_lost = agent
            .flags
            .iter()
            .any(|f| matches!(f, AgentFlag::OwnerLost { .. }));
        let manager = if owner_lost {
            self.directory
                .person(&agent.owner)
                .await?
                .and_then(|p| p.manager)
        } else {
            None
        };
        let allowed = agent.owner.eq_ignore_ascii_case(requester)
            || self.is_approver(requester)
            || manager.is_some_and(|m| m.eq_ignore_ascii_case(requester));
        if !allowed {
            let why = format!(
                "{requester} may not decommission {}: only its owner {}, a security approver{} may",
                agent.name,
                agent.owner,
                if owner_lost {
                    " or the former owner's manager"
                } else {
                    ""
                }
            );
            self.audit_refusal(
                "decommission request",
                &actor,
                Some((&agent.id, &agent.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Rejected(Rejected::new("requester", why)));
        }
        if why.trim().is_empty() {
            let msg = "say why the agent is decommissioned (reason)".to_string();
            self.audit_refusal(
                "decommission request",
                &actor,
                Some((&agent.id, &agent.name)),
                None,
                &msg,
            )
            .await?;
            return Err(EngineError::Rejected(Rejected::new("reason", msg)));
        }
        let reason = if owner_lost {
            DecommissionReason::OwnerLost { why: why.into() }
        } else {
            DecommissionReason::Requested { why: why.into() }
        };
        self.decommission(agent, reason, actor).await
    }

    /// Starts the decommission of `agent` (access reviews and the freeze call this with a
    /// review's or a freeze's decision). One decommission runs per agent.
    pub async fn decommission(
        &self,
        agent: Agent,
        reason: DecommissionReason,
        by: Actor,
    ) -> Result<Started, EngineError> {
        if let Some(running) = self.running(&agent.id, Decommission::KIND).await? {
            let why = format!(
                "a decommission of {} is already in progress ({running})",
                agent.name
            );
            self.audit_refusal(
                "decommission request",
                &by,
                Some((&agent.id, &agent.name)),
                None,
                &why,
            )
            .await?;
            return Err(EngineError::Conflict(why));
        }
        let canonical = serde_json::to_string(&reason).unwrap_or_default();
        let hash = short_hash(&[&agent.id, &agent.updated_at.to_rfc3339(), &canonical]);
        let workflow_id = format!("decommission-{}-{}", agent.name, &hash[..8]);
        let (agent_id, name) = (agent.id.clone(), agent.name.clone());
        let summary = json!({"decommission": reason});
        let input = StartInput::Decommission(DecommissionInput {
            agent,
            reason,
            requested_by: by.clone(),
        });
        let (state, duplicate) = self
            .start(
                &workflow_id,
                Decommission::KIND,
                Some(&agent_id),
                &name,
                input,
                &hash,
                by,
                summary,
            )
            .await?;
        Ok(Started {
            workflow_id,
            agent_id,
            state,
            duplicate,
        })
    }

    /// `Command::StartDecommission`, run by the engine (a workflow starting another).
    pub(super) async fn start_decommission_command(
        &self,
        agent_id: &str,
        reason: &DecommissionReason,
    ) -> Result<Option<Event>, ExecError> {
        let fail = |e: EngineError| ExecError {
            command: "workflow.start_decommission",
            message: e.to_string(),
            retryable: true,
            retry_after: None,
        };
        let Some(agent) = self
            .store
            .agent(agent_id)
            .await
            .map_err(|e| fail(e.into()))?
        else {
            return Ok(None);
        };
        match self
            .decommission(agent, reason.clone(), Actor::Schedule("expiry".into()))
            .await
        {
            // Refused (decommissioned already, or one is running): audited, nothing to retry.
            Ok(_) | Err(EngineError::Rejected(_)) | Err(EngineError::Conflict(_)) => Ok(None),
            Err(e) => Err(fail(e)),
        }
    }

    /// `Command::Supersede`: a `Cancel` to each running rotation of the agent, to each of its
    /// scope changes still waiting for approval (one already granting finishes; a freeze
    /// restores the grants it recorded, whatever came after) and to a freeze still asking
    /// whether to freeze; when the agent is `ending` (a decommission), also to its key and
    /// certificate expiry watches.
    pub(super) async fn supersede(
        &self,
        agent_id: &str,
        reason: &str,
        ending: bool,
    ) -> Result<Option<Event>, ExecError> {
        let fail = |message: String| ExecError {
            command: "workflow.supersede",
            message,
            retryable: true,
            retry_after: None,
        };
        let running = self
            .store
            .instances_for_agent(agent_id)
            .await
            .map_err(|e| fail(e.to_string()))?
            .into_iter()
            .filter(|i| {
                !i.terminal
                    && (i.kind == Rotation::KIND
                        || i.kind == statemachines::key_rotation::KeyRotation::KIND
                        || i.kind == statemachines::certificate_rotation::CertificateRotation::KIND
                        || (i.kind == statemachines::scope_change::ScopeChange::KIND
                            && i.state_name == "AwaitingApproval")
                        || (i.kind == statemachines::freeze::Freeze::KIND
                            && i.state_name == "Asking")
                        || (ending
                            && (i.kind == statemachines::key_expiry::KeyExpiry::KIND
                                || i.kind
                                    == statemachines::certificate_expiry::CertificateExpiry::KIND)))
            });
        let msgs: Vec<Message> = running
            .map(|i| Message::Event {
                event_id: format!("cancel/{}/superseded", i.id),
                workflow_id: i.id,
                event: Event::Cancel {
                    by: Actor::System,
                    reason: reason.to_string(),
                },
            })
            .collect();
        self.send(msgs, Duration::ZERO)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(None)
    }

    /// A rotation or a decommission of the agent is running.
    async fn busy(&self, agent_id: &str) -> Result<bool, EngineError> {
        Ok(self
            .store
            .instances_for_agent(agent_id)
            .await?
            .iter()
            .any(|i| !i.terminal && (i.kind == Rotation::KIND || i.kind == Decommission::KIND)))
    }

    pub(super) async fn running(
        &self,
        agent_id: &str,
        kind: &str,
    ) -> Result<Option<String>, EngineError> {
        Ok(self
            .store
            .instances_for_agent(agent_id)
            .await?
            .into_iter()
            .find(|i| i.kind == kind && !i.terminal)
            .map(|i| i.id))
    }

    pub(super) fn is_approver(&self, person: &str) -> bool {
        self.policy
            .approvers
            .iter()
            .any(|a| a.eq_ignore_ascii_case(person.trim()))
    }

    pub(super) async fn check_owner_or_approver(
        &self,
        what: &str,
        agent: &Agent,
        person: &str,
        actor: &Actor,
    ) -> Result<(), EngineError> {
        if agent.owner.eq_ignore_ascii_case(person.trim()) || self.is_approver(person) {
            return Ok(());
        }
        let why = format!(
            "{person} is neither the owner of {} ({}) nor a security approver",
            agent.name, agent.owner
        );
        self.audit_refusal(what, actor, Some((&agent.id, &agent.name)), None, &why)
            .await?;
        Err(EngineError::Rejected(Rejected::new("requester", why)))
    }

    pub(super) async fn agent_for(
        &self,
        what: &str,
        agent_ref: &str,
        actor: &Actor,
    ) -> Result<Agent, EngineError> {
        match self.find_agent(agent_ref).await? {
            Some(a) => Ok(a),
            None => {
                let why = format!("no agent with id or name `{agent_ref}`");
                self.audit_refusal(what, actor, None, None, &why).await?;
                Err(EngineError::NotFound(why))
            }
        }
    }
}
