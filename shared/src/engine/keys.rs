//! Keys of `private_key_jwt` agents:
//! - agent-held keys entering Steward: a nonce to sign over, and the check that whoever submits
//!   a public key holds its private half (a proof of possession over that nonce), before the key
//!   reaches a workflow. A refused proof changes nothing and is audited;
//! - keys Steward holds for agents that cannot keep one (key custody `steward`): the executor
//!   generates the pair, vaults it before the IdP hears of it, registers the public key and
//!   obtains a real token with it (`Executor::create_steward_key_client`); from then on it
//!   rotates like a secret (`crate::secret_rotation`).

use super::executor::{ExecError, Executor};
use super::{Engine, EngineError};
use crate::agent_key::{self, AgentKey, AgentKeyPair};
use crate::credential::{KeyCredential, VaultedCredential};
use crate::ports::idp::ClientSpec;
use crate::ports::vault::{Stage, version_id_for};
use chrono::{DateTime, Utc};
use statemachines::credential::TokenBinding;
use statemachines::{Actor, Event, Rejected};

/// How long a nonce may wait for its proof.
pub const KEY_NONCE_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// The `remember_inbound` sources: nonces Steward issued, and nonces a proof used up.
const ISSUED: &str = "key-nonce";
const USED: &str = "key-nonce-used";

impl Engine {
    /// A fresh nonce for a proof of possession, good once within [`KEY_NONCE_TTL`].
    pub async fn key_nonce(&self) -> Result<(String, DateTime<Utc>), EngineError> {
        let nonce = format!("kn_{}", hex::encode(rand::random::<[u8; 16]>()));
        self.store
            .remember_inbound(ISSUED, &nonce, KEY_NONCE_TTL)
            .await?;
        let expires = self.clock.now()
            + chrono::Duration::from_std(KEY_NONCE_TTL).unwrap_or(chrono::Duration::zero());
        Ok((nonce, expires))
    }

    /// Checks `jwk` is a public key Steward accepts and `proof` shows the caller holds its
    /// private half, for the agent `agent_name`, over a nonce Steward issued and nobody used.
    pub async fn accept_agent_key(
        &self,
        agent_name: &str,
        jwk: &serde_json::Value,
        proof: &str,
        actor: &Actor,
    ) -> Result<AgentKey, EngineError> {
        let checked = match agent_key::public_key(jwk) {
            Ok(key) => agent_key::verify_possession(&key, proof, agent_name, self.clock.now())
                .map(|nonce| (key, nonce)),
            Err(e) => Err(e),
        };
        let (key, nonce) = match checked {
            Ok(k) => k,
            Err(e) => return Err(self.refuse_key(agent_name, actor, e.to_string()).await?),
        };
        // Used up first, then checked as issued: a made-up nonce is used up by its first
        // attempt and so never passes, and a proof replayed finds its nonce used.
        let first_use = self
            .store
            .remember_inbound(USED, &nonce, KEY_NONCE_TTL)
            .await?;
        if !first_use {
            let why = "the key proof's nonce was used already: ask for a new nonce and sign again";
            return Err(self.refuse_key(agent_name, actor, why.into()).await?);
        }
        let unknown = self
            .store
            .remember_inbound(ISSUED, &nonce, KEY_NONCE_TTL)
            .await?;
        if unknown {
            let why = "the key proof's nonce was not issued by Steward (or expired): ask POST /api/key-nonces for one";
            return Err(self.refuse_key(agent_name, actor, why.into()).await?);
        }
        Ok(key)
    }

    async fn refuse_key(
        &self,
        agent_name: &str,
        actor: &Actor,
        why: String,
    ) -> Result<EngineError, EngineError> {
        self.audit_refusal(
            &format!("public key for agent {agent_name}"),
            actor,
            None,
            None,
            &why,
        )
        .await?;
        Ok(EngineError::Rejected(Rejected::new("key_proof", why)))
    }
}

impl Executor {
    /// The vaulted key credential at `stage`, if it is the version `version`.
    async fn vaulted_key(
        &self,
        agent_id: &str,
        stage: Stage,
        version: impl Fn(&KeyCredential) -> String,
    ) -> Result<Option<(String, KeyCredential)>, String> {
        let Some((v, value)) = self
            .vault
            .get(agent_id, stage)
            .await
            .map_err(|e| format!("reading the vaulted key: {e}"))?
        else {
            return Ok(None);
        };
        match VaultedCredential::from_secret(&value) {
            Ok(VaultedCredential::Key(k)) if v == version(&k) => Ok(Some((v, k))),
            _ => Ok(None),
        }
    }

    /// Creates the client of a `private_key_jwt` agent whose key Steward holds, once per
    /// command `key`: the key pair is generated and vaulted (pending, as the version the
    /// command's key names) before the IdP hears of it, so a repeat after a crash registers the
    /// same key; the IdP makes one client per idempotency key; a real token obtained with a
    /// client assertion verifies it; then the key becomes the agent's current vault version.
    pub(super) async fn create_steward_key_client(
        &self,
        key: &str,
        spec: &ClientSpec,
        binding: TokenBinding,
    ) -> Result<Option<Event>, ExecError> {
        let fail = |message: String, retryable: bool| ExecError {
            command: "idp.create_client",
            message,
            retryable,
            retry_after: None,
        };
        let agent_id = &spec.agent_id;
        let current_version = |k: &KeyCredential| version_id_for(&format!("{key}/{}", k.kid));
        if let Some((version, done)) = self
            .vaulted_key(agent_id, Stage::Current, current_version)
            .await
            .map_err(|e| fail(e, true))?
        {
            return Ok(Some(Event::ClientCreated {
                client_id: done.client_id,
                secret_version: version,
            }));
        }
        let draft = version_id_for(&format!("{key}/key"));
        let pair = match self
            .vaulted_key(agent_id, Stage::Pending, |_| draft.clone())
            .await
            .map_err(|e| fail(e, true))?
        {
            Some((_, k)) => AgentKeyPair::from_pem(k.private_key.expose()).map_err(|_| {
                fail(
                    "the vaulted draft key does not read as a private key".into(),
                    false,
                )
            })?,
            None => {
                let pair = AgentKeyPair::generate()
                    .map_err(|e| fail(format!("making a key pair: {e}"), false))?;
                let vaulted = KeyCredential {
                    client_id: String::new(),
                    kid: pair.public().kid.clone(),
                    private_key: pair.pem().clone(),
                };
                self.vault
                    .put(agent_id, &draft, &vaulted.to_secret(), Stage::Pending)
                    .await
                    .map_err(|e| fail(format!("storing the new key: {e}"), true))?;
                pair
            }
        };
        let client_id = self
            .idp
            .create_key_client(spec, pair.public(), binding, key)
            .await
            .map_err(|e| fail(e.to_string(), e.retryable()))?;
        // Verified before anyone is told it works: a token obtained with the new key.
        self.idp
            .test_key(&client_id, &pair)
            .await
            .map_err(|e| fail(format!("the new key does not work yet: {e}"), true))?;
        let credential = KeyCredential {
            client_id: client_id.clone(),
            kid: pair.public().kid.clone(),
            private_key: pair.pem().clone(),
        };
        let version = current_version(&credential);
        self.vault
            .put(agent_id, &version, &credential.to_secret(), Stage::Current)
            .await
            .map_err(|e| fail(format!("storing the new key: {e}"), true))?;
        Ok(Some(Event::ClientCreated {
            client_id,
            secret_version: version,
        }))
    }
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::embedded::console::Console;
    use crate::embedded::vault::FileVault;
    use crate::embedded::{Db, Durability};
    use crate::idp::dev::DevIdp;
    use crate::ports::{IdentityProvider, Vault};
    use statemachines::{Command, IdpCommand};
    use std::sync::Arc;

    fn stack(dir: &std::path::Path) -> (Executor, Arc<DevIdp>, Arc<FileVault>) {
        let db = Arc::new(Db::open(&dir.join("steward.db"), Durability::Wal).unwrap());
        let idp = Arc::new(
            DevIdp::open(
                db.clone(),
                &dir.join("idp-signing-key.pem"),
                "http://127.0.0.1:8080",
            )
            .unwrap(),
        );
        let vault = Arc::new(FileVault::open(&dir.join("vault")).unwrap());
        let executor = Executor {
            idp: idp.clone(),
            vault: vault.clone(),
            people: Arc::new(Console::new(db)),
        };
        (executor, idp, vault)
    }

    fn create() -> Command {
        Command::Idp(IdpCommand::CreateClient {
            agent_id: "agt-1".into(),
            name: "ledger-agent-prod".into(),
            scopes: vec!["ledger:read".into()],
            token_lifetime_secs: 600,
            adopt: None,
            key: None,
            binding: TokenBinding::Dpop,
            certificate: None,
            generate_key: true,
        })
    }

    fn created(event: Option<Event>) -> (String, String) {
        match event {
            Some(Event::ClientCreated {
                client_id,
                secret_version,
            }) => (client_id, secret_version),
            other => panic!("expected ClientCreated, got {other:?}"),
        }
    }

    async fn current_key(vault: &FileVault) -> KeyCredential {
        let (_, value) = vault.get("agt-1", Stage::Current).await.unwrap().unwrap();
        match VaultedCredential::from_secret(&value).unwrap() {
            VaultedCredential::Key(k) => k,
            other => panic!("expected a key, got {other:?}"),
        }
    }

    /// A repeat of the command answers with the client and key the first run made; a run that
    /// finds the draft an interrupted run vaulted registers that key, not a new one. The IdP
    /// holds only the public key.
    #[tokio::test]
    async fn a_steward_held_key_is_generated_once_per_command_key() {
        let dir = tempfile::tempdir().unwrap();
        let (executor, idp, vault) = stack(dir.path());
        let first = created(executor.run("cmd-1", &create()).await.unwrap());
        let key = current_key(&vault).await;
        assert_eq!(key.client_id, first.0);
        let again = created(executor.run("cmd-1", &create()).await.unwrap());
        assert_eq!(again, first);
        assert_eq!(current_key(&vault).await, key);
        let registered = idp.keys(&first.0).await.unwrap();
        assert_eq!(registered.len(), 1);
        assert_eq!(registered[0].kid, key.kid);
        assert!(!format!("{registered:?}").contains("PRIVATE"));

        // Interrupted after the draft was vaulted, before the IdP heard of it.
        let other = tempfile::tempdir().unwrap();
        let (executor, idp, vault) = stack(other.path());
        let draft = AgentKeyPair::generate().unwrap();
        let vaulted = KeyCredential {
            client_id: String::new(),
            kid: draft.public().kid.clone(),
            private_key: draft.pem().clone(),
        };
        vault
            .put(
                "agt-1",
                &version_id_for("cmd-2/key"),
                &vaulted.to_secret(),
                Stage::Pending,
            )
            .await
            .unwrap();
        let (client_id, _) = created(executor.run("cmd-2", &create()).await.unwrap());
        assert_eq!(current_key(&vault).await.kid, draft.public().kid);
        assert_eq!(
            idp.keys(&client_id).await.unwrap()[0].kid,
            draft.public().kid
        );
    }
}
