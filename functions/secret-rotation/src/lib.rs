//! The `secret-rotation` function: Secrets Manager's rotation contract for an agent's client
//! secret, one step per invocation, each safe to repeat (Secrets Manager retries steps, and may
//! invoke one twice):
//!
//! the steps are `shared::secret_rotation`, the same the rotation workflow runs (ADR 16). A rotation
//! Secrets Manager starts (an operator's "rotate now") leaves the old secret as AWSPREVIOUS,
//! still valid at the IdP until the next rotation's createSecret removes it; Steward's own
//! rotation workflow removes it after the policy's grace period. finishSecret is audited.

use aws_lambda_events::event::secretsmanager::SecretsManagerSecretRotationEvent;
use shared::audit;
use shared::aws::EdgeError;
use shared::aws::secrets_manager::SecretsManagerVault;
use shared::ports::vault::check_version_id;
use shared::ports::{IdentityProvider, Store};
use shared::secret_rotation;
use statemachines::AgentStatus;

fn retry(e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Retryable(e.to_string())
}

fn refuse(e: impl Into<String>) -> EdgeError {
    EdgeError::NonRetryable(e.into())
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
    let step_error = |e: secret_rotation::RotationError| {
        if e.retryable() {
            EdgeError::Retryable(e.to_string())
        } else {
            EdgeError::NonRetryable(e.to_string())
        }
    };
    match step {
        "createSecret" => {
            if secret_rotation::ours(vault, agent_id, token).await.is_ok() {
                return Ok(()); // done already
            }
            let (_, client_id) = active_agent().await?;
            secret_rotation::create_secret(vault, idp, agent_id, &client_id, token)
                .await
                .map(|_| ())
                .map_err(step_error)
        }
        // These two work from the version's own credential document: Secrets Manager also runs
        // testSecret alone, on a copy of the current version, when rotation is first turned on
        // (while the agent may still be provisioning).
        "setSecret" => secret_rotation::set_secret(vault, idp, agent_id, token)
            .await
            .map_err(step_error),
        "testSecret" => secret_rotation::test_secret(vault, idp, agent_id, token)
            .await
            .map_err(step_error),
        "finishSecret" => {
            let (agent, client_id) = active_agent().await?;
            let previous = secret_rotation::finish_secret(vault, agent_id, token)
                .await
                .map_err(step_error)?;
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
