//! The `secret-rotation` function: Secrets Manager's rotation contract for an agent's client
//! secret, one step per invocation, each safe to repeat (Secrets Manager retries steps, and may
//! invoke one twice):
//!
//! 1. `createSecret`: make room at the IdP (remove the secret that is neither current nor
//!    this rotation's), add a new client secret, store it as AWSPENDING under the request token.
//! 2. `setSecret`: the IdP generated the secret, so there is nothing to set; check it is there.
//! 3. `testSecret`: obtain a token with the pending secret.
//! 4. `finishSecret`: move AWSCURRENT to the new version (the old one becomes AWSPREVIOUS and
//!    keeps working until the next rotation removes it), and audit the rotation.

use aws_lambda_events::event::secretsmanager::SecretsManagerSecretRotationEvent;
use shared::audit;
use shared::aws::EdgeError;
use shared::aws::secrets_manager::SecretsManagerVault;
use shared::credential::Credential;
use shared::ports::vault::{Stage, check_version_id};
use shared::ports::{IdentityProvider, Store, Vault};
use statemachines::AgentStatus;

fn retry(e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Retryable(e.to_string())
}

fn refuse(e: impl Into<String>) -> EdgeError {
    EdgeError::NonRetryable(e.into())
}

/// An identity-provider failure: retry when it is unavailable, not when it refused.
fn at_idp(e: shared::ports::idp::IdpError) -> EdgeError {
    if e.retryable() {
        EdgeError::Retryable(e.to_string())
    } else {
        EdgeError::NonRetryable(e.to_string())
    }
}

pub async fn handle(
    store: &dyn Store,
    vault: &SecretsManagerVault,
    idp: &dyn IdentityProvider,
    event: SecretsManagerSecretRotationEvent,
) -> Result<(), EdgeError> {
    let token = event.client_request_token.as_str();
    check_version_id(token).map_err(|e| refuse(e.to_string()))?;
    let agent_id = vault.name_of(&event.secret_id).ok_or_else(|| {
        refuse(format!(
            "secret {} is not an agent secret of this Steward (names start with `{}`)",
            event.secret_id,
            vault.secret_name("")
        ))
    })?;
    let step = event.step.as_str();
    let agent_id = agent_id.as_str();
    tracing::info!(step, agent_id, version = token, "rotation step");
    // The registry's record; only an active agent with a client starts a rotation.
    let active_agent = || async move {
        let agent = store
            .agent(agent_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| refuse(format!("no agent {agent_id} in the registry")))?;
        if agent.status != AgentStatus::Active {
            return Err(refuse(format!(
                "agent {} is {:?}; only active agents have their secret rotated",
                agent.name, agent.status
            )));
        }
        let client_id = agent
            .client_id
            .clone()
            .ok_or_else(|| refuse(format!("agent {} has no client yet", agent.name)))?;
        Ok((agent, client_id))
    };
    let read = |stage: Stage| async move {
        match vault.get(agent_id, stage).await.map_err(retry)? {
            Some((version, value)) => Credential::from_secret(&value)
                .map(|c| Some((version, c)))
                .map_err(|e| refuse(format!("{} of {}: {e}", stage.as_str(), agent_id))),
            None => Ok(None),
        }
    };
    // This rotation's version: AWSPENDING until finishSecret, AWSCURRENT after (a repeat).
    let ours = || async move {
        for stage in [Stage::Pending, Stage::Current] {
            if let Some((v, c)) = read(stage).await?
                && v == token
            {
                return Ok(c);
            }
        }
        Err(refuse(format!(
            "{step}: version {token} of {agent_id} is neither AWSPENDING nor AWSCURRENT; createSecret must run first"
        )))
    };
    match step {
        "createSecret" => {
            if ours().await.is_ok() {
                return Ok(()); // done already
            }
            let (_, client_id) = active_agent().await?;
            let (_, current) = read(Stage::Current)
                .await?
                .ok_or_else(|| refuse(format!("{agent_id} has no AWSCURRENT version")))?;
            // Room for the new secret (Okta allows two): drop what is neither current nor ours.
            for id in idp.secret_ids(&client_id).await.map_err(at_idp)? {
                if id != current.secret_id {
                    idp.remove_secret(&client_id, &id).await.map_err(at_idp)?;
                }
            }
            let new = idp.add_secret(&client_id, token).await.map_err(at_idp)?;
            let credential = Credential {
                client_id: client_id.clone(),
                secret_id: new.secret_id,
                client_secret: new.secret,
            };
            vault
                .put(agent_id, token, &credential.to_secret(), Stage::Pending)
                .await
                .map_err(retry)
        }
        // These two work from the version's own credential document: Secrets Manager also runs
        // testSecret alone, on a copy of the current version, when rotation is first turned on
        // (while the agent may still be provisioning).
        "setSecret" => {
            let c = ours().await?;
            let held = idp.secret_ids(&c.client_id).await.map_err(at_idp)?;
            if held.contains(&c.secret_id) {
                Ok(())
            } else {
                Err(refuse(format!(
                    "the identity provider no longer holds secret {} of client {}; cancel this rotation and start another",
                    c.secret_id, c.client_id
                )))
            }
        }
        "testSecret" => {
            let c = ours().await?;
            idp.test_secret(&c.client_id, &c.client_secret)
                .await
                .map_err(|e| retry(format!("the new secret does not work yet: {e}")))
        }
        "finishSecret" => {
            let (agent, client_id) = active_agent().await?;
            let current = read(Stage::Current).await?;
            let previous = if current.as_ref().is_some_and(|(v, _)| v == token) {
                // Finished already (a repeat): the stage moved; make sure it was audited.
                read(Stage::Previous).await?.map(|(v, _)| v)
            } else {
                let c = ours().await?;
                vault
                    .put(agent_id, token, &c.to_secret(), Stage::Current)
                    .await
                    .map_err(retry)?;
                current.map(|(v, _)| v)
            };
            // The record's id comes from the token, so a repeat does not audit twice.
            store
                .append_audit(vec![audit::secret_rotated(
                    &format!("rotation-{token}"),
                    &agent.id,
                    &agent.name,
                    &client_id,
                    previous.as_deref(),
                    token,
                    chrono::Utc::now(),
                )])
                .await
                .map_err(retry)
        }
        other => Err(refuse(format!(
            "unknown rotation step `{other}` (createSecret, setSecret, testSecret, finishSecret)"
        ))),
    }
}
