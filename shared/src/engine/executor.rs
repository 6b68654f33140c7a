//! Runs external commands against the ports. Every call carries the command's idempotency key,
//! so a repeat (after a crash or a redelivery) is a no-op or returns the first result.

use crate::credential::Credential;
use crate::ports::idp::ClientSpec;
use crate::ports::idp::IdpError;
use crate::ports::vault::{Stage, version_id_for};
use crate::ports::{HumanChannel, IdentityProvider, Vault};
use crate::secret_rotation;
use statemachines::{Command, Event, IdpCommand, VaultCommand};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("{command} failed: {message}")]
pub struct ExecError {
    pub command: &'static str,
    pub message: String,
    pub retryable: bool,
    /// Set when a rate limit said when to try again: the engine waits that long and does not
    /// count the attempt.
    pub retry_after: Option<std::time::Duration>,
}

pub struct Executor {
    pub idp: Arc<dyn IdentityProvider>,
    pub vault: Arc<dyn Vault>,
    /// Where people are asked and told (Slack, the console, or the log).
    pub people: Arc<dyn HumanChannel>,
}

impl Executor {
    /// Performs `command`; returns the event for the machine, if the command has a result.
    /// Measured: its latency, and its errors and rate limits (by command: `idp.*`, `slack.*`,
    /// `vault.*`).
    pub async fn run(&self, key: &str, command: &Command) -> Result<Option<Event>, ExecError> {
        let started = std::time::Instant::now();
        let name = command.name();
        // An X-Ray subsegment on AWS (`crate::aws::xray`): the IdP, Slack or vault call.
        let span = tracing::info_span!(target: "steward::remote", "command", command = name, error = tracing::field::Empty);
        let result =
            tracing::Instrument::instrument(self.perform(key, command), span.clone()).await;
        if result.is_err() {
            span.record("error", true);
        }
        drop(span);
        crate::metric!("CommandLatency", started.elapsed().as_millis(), "Milliseconds", "Command" => name);
        if let Err(e) = &result {
            match e.retry_after {
                Some(_) => crate::metric!("Throttles", 1, "Count", "Command" => name),
                None => crate::metric!("CommandErrors", 1, "Count", "Command" => name),
            }
        }
        result
    }

    /// The credential an earlier run of the command `key` issued and vaulted, if that run got
    /// that far and the IdP still holds its secret: a repeat (the run delivered again after its
    /// result was sent but before the delivery was acknowledged) answers with it instead of
    /// asking the IdP again, which would replace the secret the first result already named.
    async fn issued_by(
        &self,
        agent_id: &str,
        key: &str,
    ) -> Result<Option<(String, Credential)>, String> {
        let Some((version, secret)) = self
            .vault
            .get(agent_id, Stage::Current)
            .await
            .map_err(|e| format!("reading the vaulted secret: {e}"))?
        else {
            return Ok(None);
        };
        let Ok(credential) = Credential::from_secret(&secret) else {
            return Ok(None);
        };
        if version != version_id_for(&format!("{key}/{}", credential.secret_id)) {
            return Ok(None);
        }
        let held = match self.idp.secret_ids(&credential.client_id).await {
            Ok(held) => held,
            Err(IdpError::UnknownClient(_)) => return Ok(None),
            Err(e) => return Err(format!("listing the client's secrets: {e}")),
        };
        Ok(held
            .contains(&credential.secret_id)
            .then_some((version, credential)))
    }

    async fn perform(&self, key: &str, command: &Command) -> Result<Option<Event>, ExecError> {
        let name = command.name();
        let fail = |message: String, retryable: bool| ExecError {
            command: name,
            message,
            retryable,
            retry_after: None,
        };
        match command {
            Command::Idp(IdpCommand::CreateClient {
                agent_id,
                scopes,
                token_lifetime_secs,
                adopt: Some(client_id),
                ..
            }) => {
                let idp_fail =
                    |what: &str, e: IdpError| fail(format!("{what}: {e}"), e.retryable());
                self.idp
                    .set_grants(client_id, scopes, *token_lifetime_secs)
                    .await
                    .map_err(|e| idp_fail("setting the claimed client's grants", e))?;
                // Okta holds two secrets at most: make room for the one Steward issues.
                let held = self
                    .idp
                    .secret_ids(client_id)
                    .await
                    .map_err(|e| idp_fail("listing the claimed client's secrets", e))?;
                if held.len() >= 2 {
                    self.idp
                        .remove_secret(client_id, &held[0])
                        .await
                        .map_err(|e| idp_fail("making room for a new secret", e))?;
                }
                let (version, new_secret_id) = match self
                    .issued_by(agent_id, key)
                    .await
                    .map_err(|e| fail(e, true))?
                {
                    Some((version, credential)) if credential.client_id == *client_id => {
                        (version, credential.secret_id)
                    }
                    _ => {
                        let new =
                            self.idp.add_secret(client_id, key).await.map_err(|e| {
                                idp_fail("issuing a secret for the claimed client", e)
                            })?;
                        let version = version_id_for(&format!("{key}/{}", new.secret_id));
                        let credential = Credential {
                            client_id: client_id.clone(),
                            secret_id: new.secret_id.clone(),
                            client_secret: new.secret,
                        };
                        self.vault
                            .put(agent_id, &version, &credential.to_secret(), Stage::Current)
                            .await
                            .map_err(|e| fail(format!("storing the new secret: {e}"), true))?;
                        (version, new.secret_id)
                    }
                };
                // Steward never held the other secrets: only the vaulted one may work now.
                for old in self
                    .idp
                    .secret_ids(client_id)
                    .await
                    .map_err(|e| idp_fail("listing the claimed client's secrets", e))?
                    .into_iter()
                    .filter(|id| *id != new_secret_id)
                {
                    self.idp
                        .remove_secret(client_id, &old)
                        .await
                        .map_err(|e| idp_fail("removing a secret Steward did not issue", e))?;
                }
                self.idp
                    .set_active(client_id, true)
                    .await
                    .map_err(|e| idp_fail("activating the claimed client", e))?;
                Ok(Some(Event::ClientCreated {
                    client_id: client_id.clone(),
                    secret_version: version,
                }))
            }
            Command::Idp(IdpCommand::CreateClient {
                agent_id,
                name: client_name,
                scopes,
                token_lifetime_secs,
                adopt: None,
                certificate: Some(order),
                ..
            }) => {
                // The agent holds the private key; the CA certifies its CSR's public key and the
                // IdP registers the certificate. The vault keeps only the (public) certificate.
                let spec = ClientSpec {
                    agent_id: agent_id.clone(),
                    name: client_name.clone(),
                    scopes: scopes.clone(),
                    token_lifetime_secs: *token_lifetime_secs,
                };
                self.create_certificate_client(key, &spec, order).await
            }
            Command::Idp(IdpCommand::CreateClient {
                agent_id,
                name: client_name,
                scopes,
                token_lifetime_secs,
                adopt: None,
                key: None,
                binding,
                generate_key: true,
                ..
            }) => {
                let spec = ClientSpec {
                    agent_id: agent_id.clone(),
                    name: client_name.clone(),
                    scopes: scopes.clone(),
                    token_lifetime_secs: *token_lifetime_secs,
                };
                self.create_steward_key_client(key, &spec, *binding).await
            }
            Command::Idp(IdpCommand::CreateClient {
                agent_id,
                name: client_name,
                scopes,
                token_lifetime_secs,
                adopt: None,
                key: Some(agent_key),
                binding,
                ..
            }) => {
                // The agent holds the private key: the IdP gets the public one, the vault
                // nothing. The IdP makes one client per idempotency key, so a repeat after a
                // crash answers with the same client.
                let spec = ClientSpec {
                    agent_id: agent_id.clone(),
                    name: client_name.clone(),
                    scopes: scopes.clone(),
                    token_lifetime_secs: *token_lifetime_secs,
                };
                let client_id = self
                    .idp
                    .create_key_client(&spec, agent_key, *binding, key)
                    .await
                    .map_err(|e| fail(e.to_string(), e.retryable()))?;
                Ok(Some(Event::KeyClientCreated {
                    client_id,
                    kid: agent_key.kid.clone(),
                }))
            }
            Command::Idp(IdpCommand::CreateClient {
                agent_id,
                name: client_name,
                scopes,
                token_lifetime_secs,
                adopt: None,
                key: None,
                ..
            }) => {
                if let Some((version, credential)) = self
                    .issued_by(agent_id, key)
                    .await
                    .map_err(|e| fail(e, true))?
                {
                    return Ok(Some(Event::ClientCreated {
                        client_id: credential.client_id,
                        secret_version: version,
                    }));
                }
                let spec = ClientSpec {
                    agent_id: agent_id.clone(),
                    name: client_name.clone(),
                    scopes: scopes.clone(),
                    token_lifetime_secs: *token_lifetime_secs,
                };
                let created = self
                    .idp
                    .create_client(&spec, key)
                    .await
                    .map_err(|e| fail(e.to_string(), e.retryable()))?;
                // The secret goes from the IdP straight into the vault; only the vault's version
                // id travels on. The version id comes from the command's key and the IdP's
                // secret id: a repeat that got the same secret stores the same version, one
                // that got a replacement secret stores a new one.
                let version = version_id_for(&format!("{key}/{}", created.secret_id));
                let credential = Credential {
                    client_id: created.client_id.clone(),
                    secret_id: created.secret_id,
                    client_secret: created.secret,
                };
                self.vault
                    .put(agent_id, &version, &credential.to_secret(), Stage::Current)
                    .await
                    .map_err(|e| fail(format!("storing the new secret: {e}"), true))?;
                Ok(Some(Event::ClientCreated {
                    client_id: created.client_id,
                    secret_version: version,
                }))
            }
            Command::Idp(IdpCommand::SetGrants {
                client_id,
                scopes,
                token_lifetime_secs,
            }) => {
                self.idp
                    .set_grants(client_id, scopes, *token_lifetime_secs)
                    .await
                    .map_err(|e| fail(e.to_string(), e.retryable()))?;
                Ok(Some(Event::GrantsSet {
                    client_id: client_id.clone(),
                    scopes: scopes.clone(),
                    token_lifetime_secs: *token_lifetime_secs,
                }))
            }
            Command::Idp(IdpCommand::IssueSecret {
                agent_id,
                client_id,
                version,
            }) => {
                let vault = &*self.vault;
                let issued =
                    secret_rotation::create_secret(vault, &*self.idp, agent_id, client_id, version)
                        .await
                        .map_err(|e| fail(e.to_string(), e.retryable()))?;
                secret_rotation::set_secret(vault, &*self.idp, agent_id, version)
                    .await
                    .map_err(|e| fail(e.to_string(), e.retryable()))?;
                Ok(Some(Event::SecretIssued {
                    version: issued.version,
                    secret_id: issued.secret_id,
                    previous_version: issued.previous_version,
                    previous_secret_id: issued.previous_secret_id,
                }))
            }
            Command::Idp(IdpCommand::TestSecret { agent_id, version }) => {
                secret_rotation::test_secret(&*self.vault, &*self.idp, agent_id, version)
                    .await
                    .map_err(|e| fail(e.to_string(), e.retryable()))?;
                Ok(Some(Event::SecretVerified {
                    version: version.clone(),
                }))
            }
            Command::Idp(IdpCommand::RemoveSecret {
                client_id,
                secret_id,
                key,
            }) => {
                // A Steward-held key is removed by its kid, which `secret_id` then is.
                let removed = if *key {
                    self.idp.remove_key(client_id, secret_id).await
                } else {
                    self.idp.remove_secret(client_id, secret_id).await
                };
                removed.map_err(|e| fail(e.to_string(), e.retryable()))?;
                Ok(Some(Event::SecretRemoved {
                    secret_id: secret_id.clone(),
                }))
            }
            Command::Idp(IdpCommand::RevokeTokens { client_id }) => {
                match self.idp.revoke_tokens(client_id).await {
                    Ok(r) => Ok(Some(Event::TokensRevoked {
                        revoked: r.revoked,
                        outstanding: r.outstanding,
                    })),
                    Err(IdpError::UnknownClient(_)) => Ok(Some(Event::TokensRevoked {
                        revoked: "nothing: the client no longer exists at the identity provider"
                            .into(),
                        outstanding: Some(
                            "access tokens issued before it was deleted stay valid until they expire"
                                .into(),
                        ),
                    })),
                    Err(e) => Err(fail(e.to_string(), e.retryable())),
                }
            }
            Command::Idp(IdpCommand::DeactivateClient { client_id }) => {
                match self.idp.set_active(client_id, false).await {
                    // Gone is as deactivated as it gets.
                    Ok(()) | Err(IdpError::UnknownClient(_)) => {
                        Ok(Some(Event::ClientDeactivated {
                            client_id: client_id.clone(),
                        }))
                    }
                    Err(e) => Err(fail(e.to_string(), e.retryable())),
                }
            }
            Command::Idp(IdpCommand::ActivateClient { client_id }) => {
                self.idp
                    .set_active(client_id, true)
                    .await
                    .map_err(|e| fail(e.to_string(), e.retryable()))?;
                Ok(Some(Event::ClientActivated {
                    client_id: client_id.clone(),
                }))
            }
            Command::Idp(IdpCommand::AddKey { client_id, key }) => {
                self.idp
                    .add_key(client_id, key)
                    .await
                    .map_err(|e| fail(e.to_string(), e.retryable()))?;
                Ok(Some(Event::KeyAdded {
                    kid: key.kid.clone(),
                }))
            }
            Command::Idp(IdpCommand::AddCertificate {
                agent_id,
                name: agent_name,
                client_id,
                order,
            }) => {
                self.add_certificate(key, agent_id, agent_name, client_id, order)
                    .await
            }
            Command::Idp(IdpCommand::RemoveCertificate {
                client_id,
                x5t_s256,
            }) => {
                // A client that is gone accepts no certificate either.
                match self.idp.remove_certificate(client_id, x5t_s256).await {
                    Ok(()) | Err(IdpError::UnknownClient(_)) => {
                        Ok(Some(Event::CertificateRemoved {
                            x5t_s256: x5t_s256.clone(),
                        }))
                    }
                    Err(e) => Err(fail(e.to_string(), e.retryable())),
                }
            }
            Command::Idp(IdpCommand::RemoveKey { client_id, kid }) => {
                // A client that is gone holds no key either.
                match self.idp.remove_key(client_id, kid).await {
                    Ok(()) | Err(IdpError::UnknownClient(_)) => {
                        Ok(Some(Event::KeyRemoved { kid: kid.clone() }))
                    }
                    Err(e) => Err(fail(e.to_string(), e.retryable())),
                }
            }
            Command::Idp(IdpCommand::DeleteClient { client_id }) => {
                match self.idp.delete_client(client_id).await {
                    Ok(()) | Err(IdpError::UnknownClient(_)) => Ok(Some(Event::ClientDeleted {
                        client_id: client_id.clone(),
                    })),
                    Err(e) => Err(fail(e.to_string(), e.retryable())),
                }
            }
            Command::Vault(VaultCommand::Promote { agent_id, version }) => {
                secret_rotation::finish_secret(&*self.vault, agent_id, version)
                    .await
                    .map_err(|e| fail(e.to_string(), e.retryable()))?;
                Ok(Some(Event::SecretPromoted {
                    version: version.clone(),
                }))
            }
            Command::Vault(VaultCommand::ScheduleDeletion {
                agent_id,
                recovery_days,
            }) => {
                let delete_after = self
                    .vault
                    .schedule_deletion(agent_id, *recovery_days)
                    .await
                    .map_err(|e| {
                        let retryable = matches!(e, crate::ports::vault::VaultError::Io(_));
                        fail(e.to_string(), retryable)
                    })?;
                Ok(Some(Event::SecretDeletionScheduled { delete_after }))
            }
            Command::RequestApproval(request) => {
                self.people
                    .ask(request, key)
                    .await
                    .map_err(|e| throttled(fail(e.message, e.retryable), e.retry_after))?;
                Ok(None)
            }
            Command::CloseApproval {
                approval_id,
                outcome,
            } => {
                self.people
                    .closed(approval_id, outcome, key)
                    .await
                    .map_err(|e| throttled(fail(e.message, e.retryable), e.retry_after))?;
                Ok(None)
            }
            Command::FollowUpApproval {
                approval_id,
                follow_up,
            } => {
                self.people
                    .follow_up(approval_id, follow_up, key)
                    .await
                    .map_err(|e| throttled(fail(e.message, e.retryable), e.retry_after))?;
                Ok(None)
            }
            Command::Review(notice) => {
                self.people
                    .review(notice, key)
                    .await
                    .map_err(|e| ExecError {
                        command: name,
                        message: e.message,
                        retryable: e.retryable,
                        retry_after: e.retry_after,
                    })?;
                Ok(None)
            }
            Command::Notify { to, subject, body } => {
                self.people
                    .notify(to, subject, body, key)
                    .await
                    .map_err(|e| throttled(fail(e.message, e.retryable), e.retry_after))?;
                Ok(None)
            }
            Command::StartDecommission { .. }
            | Command::Supersede { .. }
            | Command::SettleShadowClaim { .. }
            | Command::LaunchReviews { .. }
            | Command::ApplyReview { .. } => Err(fail(
                "starting a workflow is the engine's job, not the executor's".into(),
                false,
            )),
            Command::SetTimer { .. }
            | Command::CancelTimer { .. }
            | Command::SaveAgent(_)
            | Command::UpdateAgent { .. }
            | Command::Audit(_) => Err(fail(
                "a local command reached the executor; it belongs in the commit".into(),
                false,
            )),
        }
    }
}

fn throttled(mut e: ExecError, retry_after: Option<std::time::Duration>) -> ExecError {
    e.retry_after = retry_after;
    e
}
