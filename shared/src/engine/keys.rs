//! Agent-held keys entering Steward: a nonce to sign over, and the check that whoever submits a
//! public key holds its private half (a proof of possession over that nonce), before the key
//! reaches a workflow. A refused proof changes nothing and is audited.

use super::{Engine, EngineError};
use crate::agent_key::{self, AgentKey};
use chrono::{DateTime, Utc};
use statemachines::{Actor, Rejected};

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
