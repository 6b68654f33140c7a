//! The vault as DynamoDB items whose values are sealed with a KMS key (envelope encryption):
//! for each version, KMS `GenerateDataKey` returns a fresh AES-256 key in plaintext and wrapped
//! by the KMS key; the value is sealed with AES-256-GCM under the plaintext key (random nonce, the
//! secret name and version as associated data) and only the wrapped key is stored. Reading asks
//! KMS to unwrap it. The secret name and version are the KMS encryption context, so a wrapped
//! key copied to another item does not decrypt.
//!
//! One item per secret, `VAULT#<name>` / `META`, holds its versions and stages; every write is
//! conditional on the item's revision, so two writers never lose each other's versions. Costs a
//! KMS request per version written or read instead of Secrets Manager's per-secret monthly fee
//! (docs/COSTS.md). Selected with `STEWARD_VAULT=dynamodb-kms` and `STEWARD_VAULT_KMS_KEY_ID`.

use crate::aws::describe;
use crate::ports::vault::{Stage, Vault, VaultError, VersionInfo, check_version_id};
use crate::secret::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Versions kept without a stage (Secrets Manager keeps about 100; a few are enough to read a
/// grace-period secret again).
const UNSTAGED_KEPT: usize = 5;
/// Attempts at a read-modify-write when another writer changed the item in between.
const WRITE_ATTEMPTS: u32 = 8;

#[derive(Serialize, Deserialize, Default)]
struct SecretItem {
    versions: Vec<SealedVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delete_after: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone)]
struct SealedVersion {
    version_id: String,
    stages: Vec<Stage>,
    created_at: DateTime<Utc>,
    /// The data key, wrapped by the KMS key (base64 of KMS's CiphertextBlob).
    wrapped_key: String,
    nonce: String,
    ciphertext: String,
}

impl crate::ports::vault::Staged for SealedVersion {
    fn version_id(&self) -> &str {
        &self.version_id
    }
    fn stages_mut(&mut self) -> &mut Vec<Stage> {
        &mut self.stages
    }
}

pub struct EnvelopeVault {
    dynamodb: aws_sdk_dynamodb::Client,
    kms: aws_sdk_kms::Client,
    table: String,
    key_id: String,
}

fn io(e: impl std::error::Error) -> VaultError {
    VaultError::Io(describe(&e))
}

fn context(secret: &str, version: &str) -> HashMap<String, String> {
    HashMap::from([
        ("steward:secret".to_string(), secret.to_string()),
        ("steward:version".to_string(), version.to_string()),
    ])
}

fn aad(secret: &str, version: &str) -> Vec<u8> {
    format!("{secret}\0{version}").into_bytes()
}

/// Moves `stage` to `version_id` (the shared Secrets Manager rules); versions left without a
/// stage beyond the newest few are dropped.
fn restage(item: &mut SecretItem, version_id: &str, stage: Stage) {
    if item
        .versions
        .iter()
        .any(|v| v.version_id == version_id && v.stages.contains(&stage))
    {
        return;
    }
    crate::ports::vault::move_stage(&mut item.versions, version_id, stage);
    let unstaged: Vec<String> = item
        .versions
        .iter()
        .rev()
        .filter(|v| v.stages.is_empty())
        .skip(UNSTAGED_KEPT)
        .map(|v| v.version_id.clone())
        .collect();
    item.versions.retain(|v| !unstaged.contains(&v.version_id));
}

impl EnvelopeVault {
    /// Values go to `table` (the engine's table: `VAULT#` items), sealed under data keys that
    /// `key_id` (a KMS key id, ARN or alias) wraps.
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        kms: aws_sdk_kms::Client,
        table: impl Into<String>,
        key_id: impl Into<String>,
    ) -> Self {
        Self {
            dynamodb,
            kms,
            table: table.into(),
            key_id: key_id.into(),
        }
    }

    fn key(secret: &str) -> HashMap<String, Av> {
        HashMap::from([
            ("PK".to_string(), Av::S(format!("VAULT#{secret}"))),
            ("SK".to_string(), Av::S("META".into())),
        ])
    }

    /// The item and its revision (0: none yet); a secret past its recovery window reads as gone.
    async fn load(&self, secret: &str) -> Result<(SecretItem, u64), VaultError> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(secret)))
            .consistent_read(true)
            .send()
            .await
            .map_err(io)?;
        let Some(item) = out.item else {
            return Ok((SecretItem::default(), 0));
        };
        let rev = item
            .get("rev")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let body: SecretItem = item
            .get("body")
            .and_then(|v| v.as_s().ok())
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| VaultError::Decrypt(secret.into()))?;
        match body.delete_after {
            Some(after) if after <= Utc::now() => Ok((SecretItem::default(), rev)),
            _ => Ok((body, rev)),
        }
    }

    /// Writes the item if its revision is still `rev`; `Ok(false)` when another writer won.
    async fn store(&self, secret: &str, item: &SecretItem, rev: u64) -> Result<bool, VaultError> {
        let mut attrs = Self::key(secret);
        attrs.insert("rev".into(), Av::N((rev + 1).to_string()));
        attrs.insert(
            "body".into(),
            Av::S(serde_json::to_string(item).map_err(|e| VaultError::Io(e.to_string()))?),
        );
        let mut put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attrs));
        put = if rev == 0 {
            put.condition_expression("attribute_not_exists(PK) OR attribute_not_exists(rev)")
        } else {
            put.condition_expression("rev = :rev")
                .expression_attribute_values(":rev", Av::N(rev.to_string()))
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(io(e)),
        }
    }

    async fn seal(
        &self,
        secret: &str,
        version_id: &str,
        value: &Secret,
    ) -> Result<SealedVersion, VaultError> {
        let key = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context(secret, version_id)))
            .send()
            .await
            .map_err(io)?;
        let (Some(plain), Some(wrapped)) = (key.plaintext(), key.ciphertext_blob()) else {
            return Err(VaultError::Io(
                "KMS returned no data key for the vault".into(),
            ));
        };
        let cipher = Aes256Gcm::new_from_slice(plain.as_ref())
            .map_err(|_| VaultError::Io("KMS returned a data key that is not 256 bits".into()))?;
        let nonce: [u8; 12] = rand::random();
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.expose().as_bytes(),
                    aad: &aad(secret, version_id),
                },
            )
            .map_err(|_| VaultError::Io("sealing the value failed".into()))?;
        Ok(SealedVersion {
            version_id: version_id.into(),
            stages: vec![],
            created_at: Utc::now(),
            wrapped_key: B64.encode(wrapped.as_ref()),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        })
    }

    async fn open_sealed(&self, secret: &str, v: &SealedVersion) -> Result<Secret, VaultError> {
        let bad = || VaultError::Decrypt(secret.to_string());
        let wrapped = B64.decode(&v.wrapped_key).map_err(|_| bad())?;
        let key = self
            .kms
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(context(secret, &v.version_id)))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_invalid_ciphertext_exception() => bad(),
                _ => io(e),
            })?;
        let plain = key.plaintext().ok_or_else(bad)?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(plain.as_ref()));
        let nonce = B64.decode(&v.nonce).map_err(|_| bad())?;
        let ciphertext = B64.decode(&v.ciphertext).map_err(|_| bad())?;
        if nonce.len() != 12 {
            return Err(bad());
        }
        let value = cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad(secret, &v.version_id),
                },
            )
            .map_err(|_| bad())?;
        String::from_utf8(value).map(Secret::new).map_err(|_| bad())
    }
}

fn scheduled(secret: &str, item: &SecretItem) -> Result<(), VaultError> {
    match item.delete_after {
        Some(after) => Err(VaultError::ScheduledForDeletion {
            secret: secret.into(),
            after: after.to_rfc3339(),
        }),
        None => Ok(()),
    }
}

fn contended(secret: &str) -> VaultError {
    VaultError::Io(format!(
        "the vault item of {secret} kept changing under {WRITE_ATTEMPTS} writes; try again"
    ))
}

#[async_trait]
impl Vault for EnvelopeVault {
    async fn put(
        &self,
        secret: &str,
        version_id: &str,
        value: &Secret,
        stage: Stage,
    ) -> Result<(), VaultError> {
        check_version_id(version_id)?;
        let mut sealed: Option<SealedVersion> = None;
        for _ in 0..WRITE_ATTEMPTS {
            let (mut item, rev) = self.load(secret).await?;
            scheduled(secret, &item)?;
            if !item.versions.iter().any(|v| v.version_id == version_id) {
                // Sealed once, even if the write is retried.
                let version = match &sealed {
                    Some(v) => v.clone(),
                    None => {
                        let v = self.seal(secret, version_id, value).await?;
                        sealed = Some(v.clone());
                        v
                    }
                };
                item.versions.push(version);
            }
            restage(&mut item, version_id, stage);
            if self.store(secret, &item, rev).await? {
                return Ok(());
            }
        }
        Err(contended(secret))
    }

    async fn get(
        &self,
        secret: &str,
        stage: Stage,
    ) -> Result<Option<(String, Secret)>, VaultError> {
        let (item, _) = self.load(secret).await?;
        scheduled(secret, &item)?;
        match item.versions.iter().find(|v| v.stages.contains(&stage)) {
            Some(v) => Ok(Some((
                v.version_id.clone(),
                self.open_sealed(secret, v).await?,
            ))),
            None => Ok(None),
        }
    }

    async fn versions(&self, secret: &str) -> Result<Vec<VersionInfo>, VaultError> {
        let (item, _) = self.load(secret).await?;
        Ok(item
            .versions
            .iter()
            .map(|v| VersionInfo {
                version_id: v.version_id.clone(),
                stages: v.stages.clone(),
                created_at: v.created_at,
            })
            .collect())
    }

    async fn schedule_deletion(
        &self,
        secret: &str,
        recovery_days: u32,
    ) -> Result<DateTime<Utc>, VaultError> {
        let days = recovery_days.clamp(7, 30);
        for _ in 0..WRITE_ATTEMPTS {
            let (mut item, rev) = self.load(secret).await?;
            if let Some(after) = item.delete_after {
                return Ok(after);
            }
            if item.versions.is_empty() {
                return Ok(Utc::now());
            }
            let after = Utc::now() + Duration::days(i64::from(days));
            item.delete_after = Some(after);
            if self.store(secret, &item, rev).await? {
                return Ok(after);
            }
        }
        Err(contended(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: &str, stages: &[Stage]) -> SealedVersion {
        SealedVersion {
            version_id: id.into(),
            stages: stages.to_vec(),
            created_at: Utc::now(),
            wrapped_key: String::new(),
            nonce: String::new(),
            ciphertext: String::new(),
        }
    }

    #[test]
    fn current_demotes_the_old_current_and_old_unstaged_versions_go() {
        let mut item = SecretItem::default();
        item.versions.push(version("v1", &[Stage::Current]));
        item.versions.push(version("v2", &[]));
        restage(&mut item, "v2", Stage::Current);
        let stages: Vec<(&str, Vec<Stage>)> = item
            .versions
            .iter()
            .map(|v| (v.version_id.as_str(), v.stages.clone()))
            .collect();
        assert_eq!(
            stages,
            vec![("v1", vec![Stage::Previous]), ("v2", vec![Stage::Current])]
        );
        for i in 0..10 {
            item.versions.push(version(&format!("old{i}"), &[]));
        }
        restage(&mut item, "v2", Stage::Pending);
        assert_eq!(
            item.versions.iter().filter(|v| v.stages.is_empty()).count(),
            UNSTAGED_KEPT
        );
    }
}
