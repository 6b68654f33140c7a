//! The development IdP's signing keys: the current Ed25519 key, which signs every token, and the
//! public half of the key before it, so tokens signed before a rotation keep verifying with the
//! JWKS until they expire. A rotation (`steward idp rotate-signing-key`) makes a new current key
//! and keeps the old one's public half; the key before that leaves the JWKS, and its private half
//! is not kept anywhere.
//!
//! Keys are read once, when the IdP opens, so a rotation runs while no process has them open:
//! every holder keeps a shared lock on `<stem>.lock` beside the key, and the rotation takes it
//! exclusively or refuses.

use crate::embedded::sqlite::Db;
use crate::embedded::vault::{read_private, write_private};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the keys of one IdP live: the current private key (the path the IdP is opened with),
/// the previous public key and the lock, side by side.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub current: PathBuf,
    pub previous: PathBuf,
    pub lock: PathBuf,
}

impl KeyFiles {
    /// `idp-signing-key.pem` → `idp-signing-key.previous.pem` and `idp-signing-key.lock`.
    pub fn beside(current: &Path) -> Self {
        let stem = current
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "idp-signing-key".into());
        Self {
            current: current.to_path_buf(),
            previous: current.with_file_name(format!("{stem}.previous.pem")),
            lock: current.with_file_name(format!("{stem}.lock")),
        }
    }

    fn dir(&self) -> String {
        self.current
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    }
}

/// Why the signing keys could not be opened or rotated. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error(
        "the development IdP's signing key in {dir} is in use by a running `steward serve` (or another steward command on that data directory): stop it, then rotate again"
    )]
    InUse { dir: String },
    #[error(
        "there is no signing key at {path}: `steward serve` makes one at its first start, so there is nothing to rotate (is the data directory the server's?)"
    )]
    Missing { path: String },
    #[error(
        "{path} is not an Ed25519 key in PEM ({why}): restore it from a backup of the data directory"
    )]
    Unreadable { path: String, why: String },
    #[error(
        "the signing key was last rotated at {retired_at}, and tokens signed with the key that rotation retired may be in use until {until} (the longest token lifetime is {lifetime}); rotating again now would drop that key from the JWKS before they expire: wait until then, or rotate with --force"
    )]
    TooSoon {
        retired_at: String,
        until: String,
        lifetime: String,
    },
    #[error("cannot {action} {path}: {cause}")]
    Io {
        action: &'static str,
        path: String,
        cause: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SigningKeyError {
    let path = path.display().to_string();
    move |cause| SigningKeyError::Io {
        action,
        path,
        cause,
    }
}

/// The key id tokens name in their header: the first 8 bytes of the public key's SHA-256, in
/// hex (what the IdP has always used, so tokens issued before rotation existed still match).
pub fn kid(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.to_bytes())[..8])
}

/// A public key as a JWK (RFC 8037).
pub fn jwk(key: &VerifyingKey) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": B64URL.encode(key.to_bytes()), "kid": kid(key), "alg": "EdDSA", "use": "sig"})
}

/// The keys an open IdP uses, and the shared lock that keeps a rotation out while it runs.
pub struct Keys {
    pub signing: SigningKey,
    pub previous: Option<VerifyingKey>,
    pub _lock: File,
}

impl Keys {
    /// The JWKS: the current key first, then the previous one.
    pub fn jwks(&self) -> Value {
        let current = self.signing.verifying_key();
        let mut keys = vec![jwk(&current)];
        // Equal after a rotation that stopped between its two writes: served once.
        if let Some(previous) = self.previous.filter(|p| *p != current) {
            keys.push(jwk(&previous));
        }
        json!({ "keys": keys })
    }
}

/// The lock file (0600, empty), opened for locking.
fn lock_file(files: &KeyFiles) -> Result<File, SigningKeyError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(&files.lock).map_err(io("open", &files.lock))
}

fn read_signing(path: &Path) -> Result<Option<SigningKey>, SigningKeyError> {
    match read_private(path) {
        Ok(pem) => {
            SigningKey::from_pkcs8_pem(&pem)
                .map(Some)
                .map_err(|e| SigningKeyError::Unreadable {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

fn read_previous(path: &Path) -> Result<Option<VerifyingKey>, SigningKeyError> {
    match read_private(path) {
        Ok(pem) => VerifyingKey::from_public_key_pem(&pem)
            .map(Some)
            .map_err(|e| SigningKeyError::Unreadable {
                path: path.display().to_string(),
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

fn write_signing(path: &Path, key: &SigningKey) -> Result<(), SigningKeyError> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SigningKeyError::Unreadable {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
    write_private(path, pem.as_bytes()).map_err(io("write", path))
}

/// Opens the keys for an IdP, making the current key (0600) on first use. Waits while a
/// rotation holds the lock (it takes a moment), then holds it shared until the keys are dropped.
pub fn open(files: &KeyFiles) -> Result<Keys, SigningKeyError> {
    let lock = lock_file(files)?;
    if let Err(e) = lock.lock_shared() {
        // A file system without locks (some network mounts): the IdP still works, but a
        // rotation cannot tell that this process has the keys.
        tracing::warn!(file = %files.lock.display(), error = %e, "cannot lock the signing key's lock file; stop every steward process on this data directory before rotating the key");
    }
    let signing = match read_signing(&files.current)? {
        Some(key) => key,
        None => {
            let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
            write_signing(&files.current, &key)?;
            key
        }
    };
    Ok(Keys {
        previous: read_previous(&files.previous)?,
        signing,
        _lock: lock,
    })
}

/// What a rotation did, by key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// Signs every token from the next start on.
    pub kid: String,
    /// The key that signed until now: still in the JWKS.
    pub previous_kid: String,
    /// The key that was previous until now: no longer in the JWKS.
    pub dropped_kid: Option<String>,
}

/// Replaces the current key with a new one and keeps the old one's public half as the previous
/// key; the key that was previous leaves the JWKS.
///
/// `in_use_for`: how long tokens signed with a key can stay valid after it stops signing (the
/// longest token lifetime). When the previous key was retired less than that before `now`, the
/// rotation is refused: its tokens would stop verifying before they expire. `None` rotates
/// anyway.
pub fn rotate(
    files: &KeyFiles,
    in_use_for: Option<Duration>,
    now: SystemTime,
) -> Result<Rotated, SigningKeyError> {
    let missing = || SigningKeyError::Missing {
        path: files.current.display().to_string(),
    };
    // Checked before the lock file is made: a mistyped data directory gets nothing written.
    if !files.current.exists() {
        return Err(missing());
    }
    let lock = lock_file(files)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(SigningKeyError::InUse { dir: files.dir() });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &files.lock)(e)),
    }
    let current = read_signing(&files.current)?.ok_or_else(missing)?;
    let retiring = current.verifying_key();
    let previous = read_previous(&files.previous)?;
    // A previous key equal to the current one is what a rotation that stopped between its two
    // writes leaves: the key it would drop now is gone already.
    let dropping = previous.filter(|p| *p != retiring);
    if let (Some(_), Some(lifetime)) = (dropping, in_use_for) {
        let retired_at = std::fs::metadata(&files.previous)
            .and_then(|m| m.modified())
            .map_err(io("read the time of", &files.previous))?;
        let until = retired_at + lifetime;
        if until > now {
            let at = |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
            return Err(SigningKeyError::TooSoon {
                retired_at: at(retired_at),
                until: at(until),
                lifetime: humantime::format_duration(lifetime).to_string(),
            });
        }
    }
    let public =
        retiring
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| SigningKeyError::Unreadable {
                path: files.current.display().to_string(),
                why: e.to_string(),
            })?;
    // Previous first: stopped between the writes, the old key still signs and is served once.
    write_private(&files.previous, public.as_bytes()).map_err(io("write", &files.previous))?;
    let next = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    write_signing(&files.current, &next)?;
    drop(lock);
    Ok(Rotated {
        kid: kid(&next.verifying_key()),
        previous_kid: kid(&retiring),
        dropped_kid: dropping.as_ref().map(kid),
    })
}

/// The longest a token this IdP signs can live: the longest lifetime of its clients' tokens, or
/// of people's access tokens.
pub fn longest_token_lifetime(db: &Db) -> Result<Duration, SigningKeyError> {
    let clients: Option<u32> = db
        .lock()
        .query_row(
            "SELECT MAX(token_lifetime_secs) FROM idp_clients",
            [],
            |r| r.get(0),
        )
        .map_err(|e| SigningKeyError::Io {
            action: "read the token lifetimes from",
            path: "the database".into(),
            cause: std::io::Error::other(e.to_string()),
        })?;
    let people = u64::try_from(super::people::ACCESS_TOKEN_SECS).unwrap_or(3600);
    Ok(Duration::from_secs(
        people.max(u64::from(clients.unwrap_or(0))),
    ))
}
