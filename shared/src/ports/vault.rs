//! Secret storage with version stages (Secrets Manager's AWSCURRENT / AWSPENDING / AWSPREVIOUS).

use crate::secret::Secret;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    #[serde(rename = "AWSCURRENT")]
    Current,
    #[serde(rename = "AWSPENDING")]
    Pending,
    #[serde(rename = "AWSPREVIOUS")]
    Previous,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Pending => "AWSPENDING",
            Stage::Previous => "AWSPREVIOUS",
        }
    }
}

/// What the vault says about a version: ids and stages, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version_id: String,
    pub stages: Vec<Stage>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault storage failed: {0}")]
    Io(String),
    #[error("vault entry for {0} cannot be decrypted: wrong key or tampered data")]
    Decrypt(String),
    #[error("vault version {version} of {secret} does not exist")]
    UnknownVersion { secret: String, version: String },
    #[error(
        "the vault secret {secret} is scheduled for deletion on {after}; restore it within the recovery window to read it"
    )]
    ScheduledForDeletion { secret: String, after: String },
    #[error(
        "vault version id `{0}` is not 32 to 64 letters, digits, `-` or `_` (a Secrets Manager ClientRequestToken)"
    )]
    BadVersionId(String),
}

/// Version ids are Secrets Manager ClientRequestTokens: 32 to 64 characters. Every adapter
/// refuses others, so a version id that works locally works in AWS.
pub fn check_version_id(id: &str) -> Result<(), VaultError> {
    let ok = (32..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(VaultError::BadVersionId(id.chars().take(80).collect()))
    }
}

/// Vault ids under this prefix are Steward's own records (the internal CA's key pair, the
/// certificates it issued), never an agent's credential: they are not rotated as agents'
/// secrets are. Agent ids never contain a `/`.
pub const STEWARD_RECORDS: &str = "steward/";

/// Whether the vault id `secret` is an agent's credential, which rotation applies to.
pub fn is_agent_credential(secret: &str) -> bool {
    !secret.starts_with(STEWARD_RECORDS)
}

/// A version id derived from an idempotency key: the same key always gives the same version, so
/// a repeated put is recognised as the same version.
pub fn version_id_for(key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// A stored version as an adapter keeps it: its id and its stages.
pub trait Staged {
    fn version_id(&self) -> &str;
    fn stages_mut(&mut self) -> &mut Vec<Stage>;
}

/// Moves `stage` to `version_id` as Secrets Manager does, for adapters that keep stages
/// themselves: AWSCURRENT demotes the old current to AWSPREVIOUS (and leaves the promoted
/// version's AWSPENDING behind); any other stage simply moves.
pub fn move_stage<V: Staged>(versions: &mut [V], version_id: &str, stage: Stage) {
    if stage == Stage::Current {
        for v in versions.iter_mut() {
            v.stages_mut().retain(|s| *s != Stage::Previous);
        }
        for v in versions.iter_mut() {
            let stages = v.stages_mut();
            if stages.contains(&Stage::Current) {
                stages.retain(|s| *s != Stage::Current);
                stages.push(Stage::Previous);
            }
        }
    } else {
        for v in versions.iter_mut() {
            v.stages_mut().retain(|s| *s != stage);
        }
    }
    if let Some(v) = versions.iter_mut().find(|v| v.version_id() == version_id) {
        let stages = v.stages_mut();
        stages.retain(|s| *s != Stage::Pending || stage != Stage::Current);
        stages.push(stage);
    }
}

/// Versions of a secret, each holding some of the three stages. Only a stage is ever read
/// ([`Vault::get`] names one), so a version that loses its last stage (the previous version of
/// two rotations ago, a pending version replaced by a newer one) can no longer be read through
/// this port on any adapter. What becomes of its value differs:
/// - the file vault deletes it in the same write, so the key beside it decrypts nothing old;
/// - Secrets Manager marks it deprecated and deletes it on its own schedule (when the secret
///   holds more than 100 versions, never one younger than 24 hours);
/// - the KMS envelope vault keeps the newest few sealed and drops older ones.
#[async_trait]
pub trait Vault: Send + Sync {
    /// Stores a value as version `version_id` (idempotent for the same id) with `stage`, moving the
    /// stage from whichever version held it (AWSCURRENT moves the old current to AWSPREVIOUS).
    /// A version left without a stage is no longer readable (see the trait).
    async fn put(
        &self,
        secret: &str,
        version_id: &str,
        value: &Secret,
        stage: Stage,
    ) -> Result<(), VaultError>;
    /// The value holding `stage`. Always name the stage (a read without one may return a stale version; moto and AWS agree).
    async fn get(&self, secret: &str, stage: Stage)
    -> Result<Option<(String, Secret)>, VaultError>;
    /// The secret's versions with their stages. Versions without a stage appear only where the
    /// adapter still keeps them (Secrets Manager, the envelope vault), with no stage.
    async fn versions(&self, secret: &str) -> Result<Vec<VersionInfo>, VaultError>;
    /// Schedules the secret's deletion after `recovery_days` (Secrets Manager's recovery window,
    /// 7 to 30 days) and returns when it is deleted. Until then it cannot be read
    /// ([`VaultError::ScheduledForDeletion`]); Secrets Manager can restore it within the window
    /// (Steward has no restore command yet). Repeating returns the date of
    /// the first call; a secret that does not exist has nothing to delete (returns now).
    async fn schedule_deletion(
        &self,
        secret: &str,
        recovery_days: u32,
    ) -> Result<DateTime<Utc>, VaultError>;
}
