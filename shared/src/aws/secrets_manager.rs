//! The vault on AWS Secrets Manager: one secret per agent (`<prefix><agent id>`), versions
//! labelled AWSCURRENT / AWSPENDING / AWSPREVIOUS. Reads always name the stage: a read without
//! one may return a stale version (seen on moto and on AWS), and naming it is what AWS documents anyway.

use crate::aws::describe;
use crate::ports::vault::{Stage, Vault, VaultError, VersionInfo};
use crate::secret::Secret;
use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use chrono::{DateTime, TimeZone, Utc};

pub struct SecretsManagerVault {
    client: Client,
    prefix: String,
    kms_key_id: Option<String>,
    rotation: Option<RotationSchedule>,
}

/// What `DescribeSecret` says about a secret: version ids with their stages, and rotation.
#[derive(Debug, Default)]
struct SecretState {
    versions: Vec<(String, Vec<String>)>,
    rotation_enabled: bool,
}

/// Rotation every agent secret gets when it is stored: Secrets Manager invokes `function_arn`
/// (the `secret-rotation` function) every `every_days`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationSchedule {
    pub function_arn: String,
    pub every_days: u32,
}

fn io(e: impl std::error::Error) -> VaultError {
    VaultError::Io(describe(&e))
}

/// Secrets Manager refuses reads of a secret scheduled for deletion with InvalidRequestException
/// ("... marked for deletion" on AWS, "... currently marked deleted" on moto).
fn marked_for_deletion(message: &str) -> bool {
    message.contains("marked for deletion") || message.contains("marked deleted")
}

fn stage_from(label: &str) -> Option<Stage> {
    match label {
        "AWSCURRENT" => Some(Stage::Current),
        "AWSPENDING" => Some(Stage::Pending),
        "AWSPREVIOUS" => Some(Stage::Previous),
        _ => None,
    }
}

impl SecretsManagerVault {
    /// Secrets are named `<prefix><name>` (e.g. `steward/agents/`), encrypted with `kms_key_id`
    /// when given (else the account's `aws/secretsmanager` key).
    pub fn new(client: Client, prefix: impl Into<String>, kms_key_id: Option<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            kms_key_id,
            rotation: None,
        }
    }

    /// Turns rotation on for every secret this vault stores (where it is not on yet).
    pub fn with_rotation(mut self, schedule: RotationSchedule) -> Self {
        self.rotation = Some(schedule);
        self
    }

    /// Wires a secret to the rotation function, unless it is wired already. Rotation starts on
    /// the schedule, not now: Secrets Manager only runs the function's testSecret step to check
    /// the configuration.
    async fn ensure_rotation(
        &self,
        secret: &str,
        name: &str,
        enabled: bool,
    ) -> Result<(), VaultError> {
        let Some(schedule) = &self.rotation else {
            return Ok(());
        };
        // The CA's key and the issued certificates are not agent secrets: the rotation function
        // would find no credential in them.
        if enabled || !crate::ports::vault::is_agent_credential(secret) {
            return Ok(());
        }
        self.client
            .rotate_secret()
            .secret_id(name)
            .rotation_lambda_arn(&schedule.function_arn)
            .rotation_rules(
                aws_sdk_secretsmanager::types::RotationRulesType::builder()
                    .automatically_after_days(i64::from(schedule.every_days))
                    .build(),
            )
            .rotate_immediately(false)
            .send()
            .await
            .map_err(|e| {
                VaultError::Io(format!(
                    "turning on rotation of {name} with {}: {}",
                    schedule.function_arn,
                    describe(&e)
                ))
            })?;
        Ok(())
    }

    pub fn secret_name(&self, secret: &str) -> String {
        format!("{}{secret}", self.prefix)
    }

    /// The vault's name for a Secrets Manager secret id (name or ARN), if it is one of ours.
    pub fn name_of(&self, secret_id: &str) -> Option<String> {
        // ARNs end in `secret:<name>-<6 random characters>`.
        let name = match secret_id.split_once(":secret:") {
            Some((_, rest)) => rest.rsplit_once('-').map(|(n, _)| n).unwrap_or(rest),
            None => secret_id,
        };
        name.strip_prefix(&self.prefix).map(str::to_string)
    }

    /// The secret's versions and rotation setting, `None` when it does not exist.
    async fn state(&self, name: &str) -> Result<Option<SecretState>, VaultError> {
        match self.client.describe_secret().secret_id(name).send().await {
            Ok(d) => Ok(Some(SecretState {
                versions: d
                    .version_ids_to_stages()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                rotation_enabled: d.rotation_enabled() == Some(true),
            })),
            Err(e) => {
                let service = e.into_service_error();
                if service.is_resource_not_found_exception() {
                    Ok(None)
                } else {
                    Err(VaultError::Io(describe(&service)))
                }
            }
        }
    }

    /// Moves `stage` onto `version_id` (Secrets Manager moves AWSPREVIOUS by itself when
    /// AWSCURRENT moves).
    async fn move_stage(
        &self,
        name: &str,
        versions: &[(String, Vec<String>)],
        version_id: &str,
        stage: Stage,
    ) -> Result<(), VaultError> {
        let holder = versions
            .iter()
            .find(|(_, labels)| labels.iter().any(|l| l == stage.as_str()))
            .map(|(id, _)| id.clone());
        if holder.as_deref() == Some(version_id) {
            return Ok(());
        }
        self.client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage(stage.as_str())
            .move_to_version_id(version_id)
            .set_remove_from_version_id(holder)
            .send()
            .await
            .map_err(io)?;
        if stage == Stage::Current {
            // The promoted version is no longer pending.
            let pending_here = versions
                .iter()
                .any(|(id, l)| id == version_id && l.iter().any(|l| l == "AWSPENDING"));
            if pending_here {
                self.client
                    .update_secret_version_stage()
                    .secret_id(name)
                    .version_stage("AWSPENDING")
                    .remove_from_version_id(version_id)
                    .send()
                    .await
                    .map_err(io)?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Vault for SecretsManagerVault {
    async fn put(
        &self,
        secret: &str,
        version_id: &str,
        value: &Secret,
        stage: Stage,
    ) -> Result<(), VaultError> {
        crate::ports::vault::check_version_id(version_id)?;
        let name = self.secret_name(secret);
        let state = match self.state(&name).await? {
            Some(state) => state,
            None => {
                // Created empty, so the first value gets exactly the stage asked for.
                let created = self
                    .client
                    .create_secret()
                    .name(&name)
                    .description("Steward-managed OAuth client credential of one agent")
                    .set_kms_key_id(self.kms_key_id.clone())
                    .tags(
                        aws_sdk_secretsmanager::types::Tag::builder()
                            .key("managed-by")
                            .value("steward")
                            .build(),
                    )
                    .send()
                    .await;
                if let Err(e) = created {
                    let service = e.into_service_error();
                    // Another writer created it first: fine.
                    if !service.is_resource_exists_exception() {
                        return Err(VaultError::Io(describe(&service)));
                    }
                }
                SecretState::default()
            }
        };
        if state.versions.iter().any(|(id, _)| id == version_id) {
            // The version exists (a repeated put): only make sure it holds the stage.
            self.move_stage(&name, &state.versions, version_id, stage)
                .await?;
            return self
                .ensure_rotation(secret, &name, state.rotation_enabled)
                .await;
        }
        self.client
            .put_secret_value()
            .secret_id(&name)
            .client_request_token(version_id)
            .secret_string(value.expose())
            .version_stages(stage.as_str())
            .send()
            .await
            .map_err(io)?;
        // Secrets Manager moved the stage onto the new version (and AWSCURRENT's old holder to
        // AWSPREVIOUS) itself.
        if stage == Stage::Current {
            self.ensure_rotation(secret, &name, state.rotation_enabled)
                .await?;
        }
        Ok(())
    }

    async fn get(
        &self,
        secret: &str,
        stage: Stage,
    ) -> Result<Option<(String, Secret)>, VaultError> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(self.secret_name(secret))
            .version_stage(stage.as_str())
            .send()
            .await;
        match result {
            Ok(v) => Ok(Some((
                v.version_id().unwrap_or_default().to_string(),
                Secret::new(v.secret_string().unwrap_or_default()),
            ))),
            Err(e) => {
                let service = e.into_service_error();
                if service.is_resource_not_found_exception() {
                    Ok(None)
                } else if service.is_invalid_request_exception()
                    && marked_for_deletion(&describe(&service))
                {
                    Err(VaultError::ScheduledForDeletion {
                        secret: secret.into(),
                        after: "the end of its recovery window".into(),
                    })
                } else {
                    Err(VaultError::Io(describe(&service)))
                }
            }
        }
    }

    async fn schedule_deletion(
        &self,
        secret: &str,
        recovery_days: u32,
    ) -> Result<DateTime<Utc>, VaultError> {
        let name = self.secret_name(secret);
        let described = match self.client.describe_secret().secret_id(&name).send().await {
            Ok(d) => d,
            Err(e) => {
                let service = e.into_service_error();
                return if service.is_resource_not_found_exception() {
                    Ok(Utc::now())
                } else {
                    Err(VaultError::Io(describe(&service)))
                };
            }
        };
        let when = |d: &aws_sdk_secretsmanager::primitives::DateTime| {
            Utc.timestamp_opt(d.secs(), d.subsec_nanos()).single()
        };
        // Scheduled already (a repeat): DeletedDate is the date it will be deleted.
        if let Some(deleted) = described.deleted_date().and_then(when) {
            return Ok(deleted);
        }
        let out = self
            .client
            .delete_secret()
            .secret_id(&name)
            .recovery_window_in_days(i64::from(recovery_days))
            .send()
            .await
            .map_err(io)?;
        Ok(out
            .deletion_date()
            .and_then(when)
            .unwrap_or_else(|| Utc::now() + chrono::Duration::days(i64::from(recovery_days))))
    }

    async fn versions(&self, secret: &str) -> Result<Vec<VersionInfo>, VaultError> {
        let name = self.secret_name(secret);
        if self.state(&name).await?.is_none() {
            return Ok(vec![]);
        }
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_secret_version_ids()
                .secret_id(&name)
                .include_deprecated(true)
                .set_next_token(token)
                .send()
                .await
                .map_err(io)?;
            let empty = page.versions().is_empty();
            for v in page.versions() {
                out.push(VersionInfo {
                    version_id: v.version_id().unwrap_or_default().to_string(),
                    stages: v
                        .version_stages()
                        .iter()
                        .filter_map(|l| stage_from(l))
                        .collect(),
                    created_at: v
                        .created_date()
                        .and_then(|d| Utc.timestamp_opt(d.secs(), d.subsec_nanos()).single())
                        .unwrap_or_else(Utc::now),
                });
            }
            // moto answers every page with a token; an empty page ends the listing too.
            token = page.next_token.filter(|t| !t.is_empty());
            if token.is_none() || empty {
                break;
            }
        }
        out.sort_by_key(|v| v.created_at);
        Ok(out)
    }
}
