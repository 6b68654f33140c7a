//! Wires the embedded default: one data directory holds the database, the vault, the IdP's
//! signing key and the admin token.

use super::approvals::ConsoleApprovals;
use super::directory::PeopleFileDirectory;
use super::queue::SqliteQueue;
use super::sqlite::{Db, Durability};
use super::vault::FileVault;
use crate::engine::executor::Executor;
use crate::engine::{Engine, EngineConfig};
use crate::idp::dev::DevIdp;
use crate::ports::clock::SystemClock;
use statemachines::Policy;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("cannot open the embedded stack in {dir}: {message}")]
pub struct StackError {
    pub dir: String,
    pub message: String,
}

pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub policy: Policy,
    pub people: PathBuf,
    /// Issuer URL of the dev IdP (the local server's base URL).
    pub issuer: String,
    pub durability: Durability,
    pub engine: EngineConfig,
}

/// The embedded default, assembled.
pub struct Embedded {
    pub engine: Arc<Engine>,
    pub db: Arc<Db>,
    pub queue: Arc<SqliteQueue>,
    pub idp: Arc<DevIdp>,
    pub vault: Arc<FileVault>,
    pub approvals: Arc<ConsoleApprovals>,
    pub data_dir: PathBuf,
}

impl Embedded {
    pub fn open(cfg: EmbeddedConfig) -> Result<Self, StackError> {
        let dir = cfg.data_dir.clone();
        let err = |m: String| StackError {
            dir: dir.display().to_string(),
            message: m,
        };
        std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        restrict_dir(&dir);
        let db = Arc::new(
            Db::open(&dir.join("steward.db"), cfg.durability).map_err(|e| err(e.to_string()))?,
        );
        let queue = Arc::new(SqliteQueue::new(db.clone()));
        let recovered = queue.recover_in_flight().map_err(|e| err(e.to_string()))?;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "redelivering messages that were in flight when the last process stopped"
            );
        }
        let idp = Arc::new(
            DevIdp::open(db.clone(), &dir.join("idp-signing-key.pem"), &cfg.issuer)
                .map_err(|e| err(e.to_string()))?,
        );
        let vault = Arc::new(FileVault::open(&dir.join("vault")).map_err(|e| err(e.to_string()))?);
        let approvals = Arc::new(ConsoleApprovals::new(db.clone()));
        let directory =
            Arc::new(PeopleFileDirectory::load(&cfg.people).map_err(|e| err(e.to_string()))?);
        let engine = Arc::new(Engine {
            transitions: Default::default(),
            store: db.clone(),
            queue: queue.clone(),
            directory,
            clock: Arc::new(SystemClock),
            executor: Executor {
                idp: idp.clone(),
                vault: vault.clone(),
                approvals: approvals.clone(),
            },
            policy: Arc::new(cfg.policy),
            config: cfg.engine,
        });
        Ok(Self {
            engine,
            db,
            queue,
            idp,
            vault,
            approvals,
            data_dir: dir,
        })
    }
}

fn restrict_dir(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
}
