//! Encrypted file vault: one file per secret holding its versions and stages, each value sealed
//! with AES-256-GCM (random 96-bit nonce, the secret name and version as associated data).
//! Only versions that hold a stage are kept (see [`Vault::put`]).
//! The key comes from `STEWARD_VAULT_KEY` (base64, 32 bytes) or a generated 0600 key file.

use crate::ports::vault::{Stage, Vault, VaultError, VersionInfo};
use crate::secret::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const KEY_ENV: &str = "STEWARD_VAULT_KEY";

#[derive(Serialize, Deserialize, Default)]
struct SecretFile {
    versions: Vec<StoredVersion>,
    /// Set when the secret is scheduled for deletion: unreadable from then, removed after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delete_after: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
struct StoredVersion {
    version_id: String,
    stages: Vec<Stage>,
    created_at: DateTime<Utc>,
    nonce: String,
    ciphertext: String,
}

impl crate::ports::vault::Staged for StoredVersion {
    fn version_id(&self) -> &str {
        &self.version_id
    }
    fn stages_mut(&mut self) -> &mut Vec<Stage> {
        &mut self.stages
    }
}

pub struct FileVault {
    dir: PathBuf,
    cipher: Aes256Gcm,
    /// Serialises read-modify-write of a secret file within the process.
    write: Mutex<()>,
}

fn io(e: impl std::fmt::Display) -> VaultError {
    VaultError::Io(e.to_string())
}

/// Writes `bytes` to `path` readable by the owner only, atomically (temp file, fsync, rename).
/// The temp file has a random name and must not exist yet (`O_EXCL`), so a file or symlink
/// someone placed beside `path` is never written through.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.tmp",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Reads a key or token file Steward keeps private, narrowing it to 0600 first when it is
/// readable by others (a copy restored without its mode): the secret stays the same, so
/// nothing breaks, and it stops being readable by every account on the machine.
pub fn read_private(path: &Path) -> std::io::Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            tracing::warn!(file = %path.display(), "a private file was readable by others; narrowed to 0600");
        }
    }
    std::fs::read_to_string(path)
}

/// A private key or token file's content (trimmed): read with [`read_private`], or made by
/// `make` and written with [`write_private`] when the file does not exist; `true` when made now.
pub fn read_or_create_private(
    path: &Path,
    make: impl FnOnce() -> String,
) -> std::io::Result<(String, bool)> {
    match read_private(path) {
        Ok(text) => Ok((text.trim().to_string(), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = make();
            write_private(path, text.as_bytes())?;
            Ok((text, true))
        }
        Err(e) => Err(e),
    }
}

/// A secret scheduled for deletion cannot be read or written, as in Secrets Manager.
fn scheduled(secret: &str, file: &SecretFile) -> Result<(), VaultError> {
    match file.delete_after {
        Some(after) => Err(VaultError::ScheduledForDeletion {
            secret: secret.into(),
            after: after.to_rfc3339(),
        }),
        None => Ok(()),
    }
}

impl FileVault {
    /// Opens the vault in `dir`, with the key from `STEWARD_VAULT_KEY` or `<dir>/vault.key`
    /// (generated on first use, mode 0600).
    pub fn open(dir: &Path) -> Result<Self, VaultError> {
        std::fs::create_dir_all(dir).map_err(io)?;
        let key_bytes = match std::env::var(KEY_ENV) {
            Ok(b64) => B64
                .decode(b64.trim())
                .map_err(|e| VaultError::Io(format!("{KEY_ENV} is not base64: {e}")))?,
            Err(_) => {
                let key_file = dir.join("vault.key");
                let (b64, _) =
                    read_or_create_private(&key_file, || B64.encode(rand::random::<[u8; 32]>()))
                        .map_err(io)?;
                B64.decode(b64).map_err(|e| {
                    VaultError::Io(format!("{} is not base64: {e}", key_file.display()))
                })?
            }
        };
        if key_bytes.len() != 32 {
            return Err(VaultError::Io(format!(
                "the vault key must be 32 bytes, got {}",
                key_bytes.len()
            )));
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key_bytes));
        Ok(Self {
            dir: dir.to_path_buf(),
            cipher,
            write: Mutex::new(()),
        })
    }

    /// One file per secret, named by the hex of the secret's name: reversible, so two names
    /// never share a file, and safe in any file system.
    fn file(&self, secret: &str) -> PathBuf {
        self.dir
            .join(format!("{}.secret.json", hex::encode(secret.as_bytes())))
    }

    fn read(&self, secret: &str) -> Result<SecretFile, VaultError> {
        match std::fs::read(self.file(secret)) {
            Ok(bytes) => {
                let file: SecretFile = serde_json::from_slice(&bytes)
                    .map_err(|_| VaultError::Decrypt(secret.into()))?;
                match file.delete_after {
                    // The recovery window is over: the secret is gone for good.
                    Some(after) if after <= Utc::now() => {
                        std::fs::remove_file(self.file(secret)).map_err(io)?;
                        Ok(SecretFile::default())
                    }
                    _ => Ok(file),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SecretFile::default()),
            Err(e) => Err(io(e)),
        }
    }

    fn aad(secret: &str, version: &str) -> Vec<u8> {
        format!("{secret}\0{version}").into_bytes()
    }
}

#[async_trait]
impl Vault for FileVault {
    async fn put(
        &self,
        secret: &str,
        version_id: &str,
        value: &Secret,
        stage: Stage,
    ) -> Result<(), VaultError> {
        crate::ports::vault::check_version_id(version_id)?;
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = self.read(secret)?;
        scheduled(secret, &file)?;
        if !file.versions.iter().any(|v| v.version_id == version_id) {
            let nonce: [u8; 12] = rand::random();
            let aad = Self::aad(secret, version_id);
            let ct = self
                .cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: value.expose().as_bytes(),
                        aad: &aad,
                    },
                )
                .map_err(|_| VaultError::Io("encryption failed".into()))?;
            file.versions.push(StoredVersion {
                version_id: version_id.into(),
                stages: vec![],
                created_at: Utc::now(),
                nonce: B64.encode(nonce),
                ciphertext: B64.encode(ct),
            });
        }
        let already = file
            .versions
            .iter()
            .any(|v| v.version_id == version_id && v.stages.contains(&stage));
        if !already {
            // Moving AWSCURRENT demotes the old current to AWSPREVIOUS, as Secrets Manager does.
            crate::ports::vault::move_stage(&mut file.versions, version_id, stage);
            // A version left without a stage is deleted now: the port never reads it again, and
            // a rotated-out secret must not stay decryptable beside the key.
            file.versions.retain(|v| !v.stages.is_empty());
        }
        let bytes = serde_json::to_vec_pretty(&file).map_err(io)?;
        write_private(&self.file(secret), &bytes).map_err(io)
    }

    async fn get(
        &self,
        secret: &str,
        stage: Stage,
    ) -> Result<Option<(String, Secret)>, VaultError> {
        let file = self.read(secret)?;
        scheduled(secret, &file)?;
        let Some(v) = file.versions.iter().find(|v| v.stages.contains(&stage)) else {
            return Ok(None);
        };
        let nonce = B64
            .decode(&v.nonce)
            .map_err(|_| VaultError::Decrypt(secret.into()))?;
        let ct = B64
            .decode(&v.ciphertext)
            .map_err(|_| VaultError::Decrypt(secret.into()))?;
        let aad = Self::aad(secret, &v.version_id);
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Decrypt(secret.into()))?;
        let value = String::from_utf8(pt).map_err(|_| VaultError::Decrypt(secret.into()))?;
        Ok(Some((v.version_id.clone(), Secret::new(value))))
    }

    async fn schedule_deletion(
        &self,
        secret: &str,
        recovery_days: u32,
    ) -> Result<DateTime<Utc>, VaultError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = self.read(secret)?;
        if let Some(after) = file.delete_after {
            return Ok(after);
        }
        let now = Utc::now();
        if file.versions.is_empty() {
            return Ok(now);
        }
        let after = now + chrono::Duration::days(i64::from(recovery_days));
        file.delete_after = Some(after);
        let bytes = serde_json::to_vec_pretty(&file).map_err(io)?;
        write_private(&self.file(secret), &bytes).map_err(io)?;
        Ok(after)
    }

    async fn versions(&self, secret: &str) -> Result<Vec<VersionInfo>, VaultError> {
        Ok(self
            .read(secret)?
            .versions
            .into_iter()
            .map(|v| VersionInfo {
                version_id: v.version_id,
                stages: v.stages,
                created_at: v.created_at,
            })
            .collect())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A symlink someone placed where the temp file used to be written (`<name>.tmp`) is not
    /// followed: the file it points to is left alone, and the key lands where it belongs.
    #[test]
    fn writing_a_private_file_never_follows_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let key = dir.path().join("vault.key");
        std::os::unix::fs::symlink(&victim, dir.path().join("vault.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("vault.key.tmp")).unwrap();
        write_private(&key, b"secret").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "secret");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temp file is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") && n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A key file restored without its mode is narrowed to 0600 when it is read.
    #[test]
    fn a_private_file_readable_by_others_is_narrowed_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("admin-token");
        std::fs::write(&key, "token").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_private(&key).unwrap(), "token");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
