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
}

#[async_trait]
pub trait Vault: Send + Sync {
    /// Stores a value as version `version_id` (idempotent for the same id) with `stage`, moving the
    /// stage from whichever version held it (AWSCURRENT moves the old current to AWSPREVIOUS).
    async fn put(
        &self,
        secret: &str,
        version_id: &str,
        value: &Secret,
        stage: Stage,
    ) -> Result<(), VaultError>;
    /// The value holding `stage`. Always name the stage (see FIELD-NOTES: moto and AWS agree on this).
    async fn get(&self, secret: &str, stage: Stage)
    -> Result<Option<(String, Secret)>, VaultError>;
    async fn versions(&self, secret: &str) -> Result<Vec<VersionInfo>, VaultError>;
}
