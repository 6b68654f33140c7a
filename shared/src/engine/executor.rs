//! Runs external commands against the ports. Every call carries the command's idempotency key,
//! so a repeat (after a crash or a redelivery) is a no-op or returns the first result.

use crate::credential::Credential;
use crate::ports::idp::ClientSpec;
use crate::ports::vault::{Stage, version_id_for};
use crate::ports::{Approvals, IdentityProvider, Vault};
use statemachines::{Command, Event, IdpCommand};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("{command} failed: {message}")]
pub struct ExecError {
    pub command: &'static str,
    pub message: String,
    pub retryable: bool,
}

pub struct Executor {
    pub idp: Arc<dyn IdentityProvider>,
    pub vault: Arc<dyn Vault>,
    pub approvals: Arc<dyn Approvals>,
}

impl Executor {
    /// Performs `command`; returns the event for the machine, if the command has a result.
    pub async fn run(&self, key: &str, command: &Command) -> Result<Option<Event>, ExecError> {
        let name = command.name();
        let fail = |message: String, retryable: bool| ExecError {
            command: name,
            message,
            retryable,
        };
        match command {
            Command::Idp(IdpCommand::CreateClient {
                agent_id,
                name: client_name,
                scopes,
                token_lifetime_secs,
            }) => {
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
            Command::RequestApproval(request) => {
                self.approvals
                    .ask(request, key)
                    .await
                    .map_err(|e| fail(e.message, e.retryable))?;
                Ok(None)
            }
            Command::CloseApproval {
                approval_id,
                outcome,
            } => {
                self.approvals
                    .closed(approval_id, outcome, key)
                    .await
                    .map_err(|e| fail(e.message, e.retryable))?;
                Ok(None)
            }
            Command::FollowUpApproval {
                approval_id,
                follow_up,
            } => {
                self.approvals
                    .follow_up(approval_id, follow_up, key)
                    .await
                    .map_err(|e| fail(e.message, e.retryable))?;
                Ok(None)
            }
            Command::Notify { to, subject, body } => {
                self.approvals
                    .notify(to, subject, body, key)
                    .await
                    .map_err(|e| fail(e.message, e.retryable))?;
                Ok(None)
            }
            Command::SetTimer { .. }
            | Command::CancelTimer { .. }
            | Command::SaveAgent(_)
            | Command::Audit(_) => Err(fail(
                "a local command reached the executor; it belongs in the commit".into(),
                false,
            )),
        }
    }
}
