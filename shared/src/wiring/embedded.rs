//! Wires the embedded default: one data directory holds the database, the vault, the IdP's
//! signing key and the admin token.

use crate::audit::seal::Sealer;
use crate::embedded::console::Console;
use crate::embedded::queue::SqliteQueue;
use crate::embedded::sqlite::{Db, Durability};
use crate::embedded::vault::FileVault;
use crate::engine::executor::Executor;
use crate::engine::{Engine, EngineConfig};
use crate::idp::dev::DevIdp;
use crate::idp::oauth::{OAuthDcr, OAuthSettings};
use crate::idp::okta::{Okta, OktaSettings};
use crate::inbound::ssf::{SsfReceiver, SsfSettings};
use crate::people_file::PeopleFileDirectory;
use crate::ports::HumanChannel;
use crate::ports::IdentityProvider;
use crate::ports::clock::SystemClock;
use crate::secret::Secret;
use crate::sign_in::{IssuerSettings, PersonTokens};
use crate::slack::{SlackChannel, SlackSettings, SlackWeb};
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
    /// Slack, when configured: approvals go there instead of the console.
    pub slack: Option<SlackSettings>,
    /// Okta, when configured: agents' clients live there instead of in the dev IdP, and the
    /// local server polls its System Log.
    pub okta: Option<OktaSettings>,
    /// The Authorization value Okta's event hook sends; without it the hook route refuses.
    pub okta_hook_secret: Option<Secret>,
    /// Any OAuth 2.0 server with dynamic client registration (RFC 7591/7592), when agents'
    /// clients live there. At most one of `okta` and `oauth`.
    pub oauth: Option<OAuthSettings>,
    /// A Shared Signals transmitter whose pushes the local server receives at `/ssf/events`.
    pub ssf: Option<SsfSettings>,
    /// Okta's Users API is the directory instead of the people file (`STEWARD_DIRECTORY=okta`;
    /// needs `okta`).
    pub okta_directory: bool,
    /// The organisation's OpenID Connect issuer: people sign in to the admin API with its tokens.
    /// `None`: the dev IdP is the people's issuer (passwords set with `steward people password`).
    pub people_issuer: Option<IssuerSettings>,
}

pub use crate::slack::SlackEdge;

/// The embedded default, assembled.
pub struct Embedded {
    pub engine: Arc<Engine>,
    pub db: Arc<Db>,
    pub queue: Arc<SqliteQueue>,
    pub idp: Arc<DevIdp>,
    pub vault: Arc<FileVault>,
    pub console: Arc<Console>,
    pub slack: Option<SlackEdge>,
    /// The Okta adapter, when Okta is the identity provider (the System Log poller uses it).
    pub okta: Option<Okta>,
    pub okta_hook_secret: Option<Secret>,
    /// The Shared Signals receiver (it keeps the transmitter's keys cached).
    pub ssf: Option<Arc<SsfReceiver>>,
    /// Verifies people's tokens: the configured issuer's, else the dev IdP's.
    pub people_tokens: Arc<PersonTokens>,
    /// Whether people sign in at the dev IdP (no outside issuer configured).
    pub people_at_dev_idp: bool,
    pub data_dir: PathBuf,
    /// Signs the audit trail's seals; its key is `<data dir>/audit-seal.key`, apart from the
    /// database.
    pub audit_sealer: Arc<Sealer>,
    /// Whether the first seal may cover a trail that is not empty: the key was created by this
    /// start, or `STEWARD_AUDIT_ADOPT=1` (a data directory from before seals).
    pub adopt_unsealed_trail: bool,
}

impl Embedded {
    pub fn open(cfg: EmbeddedConfig) -> Result<Self, StackError> {
        let dir = cfg.data_dir.clone();
        let err = |m: String| StackError {
            dir: dir.display().to_string(),
            message: m,
        };
        std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        restrict_dir(&dir).map_err(|e| {
            err(format!(
                "cannot make the data directory readable by its owner only (0700): {e}"
            ))
        })?;
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
        // The secret the audit seal key is derived from: 64 random hex characters, made (0600)
        // on first start.
        let seal_key = dir.join("audit-seal.key");
        let (seal_secret, new_key) =
            crate::embedded::vault::read_or_create_private(&seal_key, || {
                hex::encode(rand::random::<[u8; 32]>())
            })
            .map_err(|e| err(format!("{}: {e}", seal_key.display())))?;
        let audit_sealer = Arc::new(
            Sealer::from_secret(&Secret::new(seal_secret)).map_err(|e| err(e.to_string()))?,
        );
        let adopt_unsealed_trail =
            new_key || std::env::var("STEWARD_AUDIT_ADOPT").is_ok_and(|v| v == "1");
        let console = Arc::new(Console::new(db.clone()));
        let okta = cfg
            .okta
            .map(Okta::new)
            .transpose()
            .map_err(|e| err(e.to_string()))?;
        let governed: Arc<dyn IdentityProvider> = match (&okta, cfg.oauth) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "both Okta (STEWARD_OKTA_ORG_URL) and an OAuth server (STEWARD_OAUTH_ISSUER) are configured; choose one identity provider".into(),
                ));
            }
            (Some(o), None) => Arc::new(o.clone()),
            (None, Some(settings)) => {
                Arc::new(OAuthDcr::new(settings, vault.clone()).map_err(|e| err(e.to_string()))?)
            }
            (None, None) => idp.clone(),
        };
        let ssf = cfg
            .ssf
            .map(|s| SsfReceiver::new(s).map(Arc::new))
            .transpose()
            .map_err(|e| err(e.to_string()))?;
        let people_at_dev_idp = cfg.people_issuer.is_none();
        let people_tokens = Arc::new(
            PersonTokens::new(cfg.people_issuer.unwrap_or_else(|| idp.people_issuer()))
                .map_err(|e| err(e.to_string()))?,
        );
        let directory: Arc<dyn crate::ports::Directory> = match (&okta, cfg.okta_directory) {
            (Some(o), true) => Arc::new(crate::idp::okta::OktaDirectory(o.clone())),
            (None, true) => {
                return Err(err(
                    "STEWARD_DIRECTORY=okta needs Okta (STEWARD_OKTA_ORG_URL and its credentials)"
                        .into(),
                ));
            }
            (_, false) => {
                Arc::new(PeopleFileDirectory::load(&cfg.people).map_err(|e| err(e.to_string()))?)
            }
        };
        // Without Slack, the console approver is the default; with it, Slack asks people.
        let (asking, slack): (Arc<dyn HumanChannel>, Option<SlackEdge>) = match &cfg.slack {
            None => (console.clone(), None),
            Some(settings) => {
                let web = Arc::new(
                    SlackWeb::new(&settings.api_url, &settings.bot_token)
                        .map_err(|e| err(e.to_string()))?
                        .with_rate_multiplier(settings.rate_multiplier)
                        .with_call_timeout(settings.call_timeout),
                );
                let asking = Arc::new(SlackChannel::new(
                    web.clone(),
                    db.clone(),
                    directory.clone(),
                    cfg.policy.approval_routes.clone(),
                    settings.security_channel.clone(),
                ));
                let edge = SlackEdge {
                    web,
                    signing_secret: settings.signing_secret.clone(),
                };
                (asking, Some(edge))
            }
        };
        let engine = Arc::new(Engine {
            transitions: Default::default(),
            store: db.clone(),
            queue: queue.clone(),
            outbox: queue.clone(),
            directory,
            clock: Arc::new(SystemClock),
            executor: Executor {
                idp: governed,
                vault: vault.clone(),
                people: asking,
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
            console,
            slack,
            okta,
            okta_hook_secret: cfg.okta_hook_secret,
            ssf,
            people_tokens,
            people_at_dev_idp,
            data_dir: dir,
            audit_sealer,
            adopt_unsealed_trail,
        })
    }
}

fn restrict_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
