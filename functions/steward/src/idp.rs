//! `steward idp rotate-signing-key`: replaces the development IdP's signing key in the data
//! directory while the server is stopped. Tokens signed before keep verifying (the JWKS serves
//! the previous key too) until they expire; the key before that leaves the JWKS.

use anyhow::Context;
use shared::idp::dev::signing::{self, KeyFiles};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum IdpCmd {
    /// Replace the development IdP's signing key (with `steward serve` stopped). New tokens are
    /// signed with a new key; the JWKS keeps serving the old one until the next rotation.
    RotateSigningKey {
        #[arg(long, env = "STEWARD_DATA_DIR", default_value = ".steward")]
        data_dir: PathBuf,
        /// Rotate even when tokens signed with the key the last rotation retired may still be
        /// valid: they stop verifying.
        #[arg(long)]
        force: bool,
    },
}

pub fn idp(cmd: IdpCmd) -> anyhow::Result<()> {
    match cmd {
        IdpCmd::RotateSigningKey { data_dir, force } => rotate(&data_dir, force),
    }
}

fn rotate(data_dir: &Path, force: bool) -> anyhow::Result<()> {
    let files = KeyFiles::beside(&data_dir.join("idp-signing-key.pem"));
    let in_use_for = if force {
        None
    } else {
        Some(longest_token_lifetime(data_dir)?)
    };
    let rotated = signing::rotate(&files, in_use_for, std::time::SystemTime::now())?;
    println!(
        "signing key rotated: new tokens are signed with key {}",
        rotated.kid
    );
    println!(
        "the JWKS also serves key {} until the next rotation, so tokens it signed verify until they expire",
        rotated.previous_kid
    );
    if let Some(dropped) = rotated.dropped_kid {
        println!("key {dropped} is no longer served: tokens it signed no longer verify");
    }
    eprintln!(
        "start `steward serve` again; resource servers that cache the JWKS fetch it again when a token names a key they do not know"
    );
    Ok(())
}

/// The longest lifetime of a token the IdP signed: its clients' in the database (if there is
/// one yet), or people's access tokens.
fn longest_token_lifetime(data_dir: &Path) -> anyhow::Result<std::time::Duration> {
    let path = data_dir.join("steward.db");
    if !path.exists() {
        let secs = shared::idp::dev::people::ACCESS_TOKEN_SECS;
        return Ok(std::time::Duration::from_secs(secs.unsigned_abs()));
    }
    let db = shared::embedded::sqlite::Db::open(&path, shared::embedded::Durability::Fsync)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(signing::longest_token_lifetime(&db)?)
}
