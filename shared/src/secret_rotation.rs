//! Secrets Manager's rotation protocol over the vault and IdP ports (ADR 16). The rotation
//! workflow's executor and the `secret-rotation` Lambda both call these, so a rotation started by
//! Steward's sweep and one started by Secrets Manager do the same thing. Every step is
//! idempotent for the same `token` (the ClientRequestToken, the new vault version id): a repeat
//! after a crash or a retry finds its own work and returns the same answer.
//!
//! | step | what it does |
//! |---|---|
//! | `createSecret` | make room at the IdP (drop a leftover that is neither current nor ours), add a new client secret, store it as AWSPENDING `token` |
//! | `setSecret` | the IdP generated the value: check it still holds it |
//! | `testSecret` | obtain a real client_credentials token with the AWSPENDING value |
//! | `finishSecret` | move AWSCURRENT to `token`; the old version becomes AWSPREVIOUS and keeps working until removed |
//!
//! A key Steward holds for a `private_key_jwt` agent (key custody `steward`) rotates through
//! the same steps: `createSecret` generates a new P-256 key pair and stores it as AWSPENDING,
//! `setSecret` registers its public key at the IdP beside the current one (adding a key it
//! holds already is fine, so a repeat after a crash between the two steps completes it),
//! `testSecret` obtains a real token with a client assertion signed by it, and the old key is
//! removed by its `kid` after the grace period.

use crate::agent_key::AgentKeyPair;
use crate::credential::{Credential, KeyCredential, NotACredential, VaultedCredential};
use crate::ports::idp::IdpError;
use crate::ports::vault::{Stage, VaultError};
use crate::ports::{IdentityProvider, Vault};

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    #[error("identity provider: {0}")]
    Idp(#[from] IdpError),
    #[error("{stage} of {agent}: {source}")]
    NotACredential {
        stage: &'static str,
        agent: String,
        source: NotACredential,
    },
    #[error("{0} has no AWSCURRENT secret to rotate from")]
    NoCurrent(String),
    #[error(
        "version {token} of {agent} is neither AWSPENDING nor AWSCURRENT; createSecret must run first"
    )]
    NotOurs { agent: String, token: String },
    #[error(
        "the identity provider no longer holds secret {secret_id} of client {client_id}; cancel this rotation and start another"
    )]
    Lost {
        client_id: String,
        secret_id: String,
    },
    #[error("the new secret does not work yet: {0}")]
    TestFailed(IdpError),
    #[error(
        "the vaulted key of {agent} does not read as a private key; its vault version is damaged and the rotation cannot use it"
    )]
    BadKey { agent: String },
    #[error("a new key pair could not be made: {0}")]
    KeyGeneration(String),
    #[error(
        "client {0} is deactivated (its agent is frozen or being decommissioned): the new secret cannot be tested until it is active again"
    )]
    Deactivated(String),
}

impl RotationError {
    /// Worth retrying later: the vault or IdP was unavailable, or a new secret has not reached
    /// every IdP node yet.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Vault(VaultError::Io(_)) => true,
            Self::Idp(e) => e.retryable(),
            Self::TestFailed(_) => true,
            _ => false,
        }
    }
}

/// What `createSecret` issued and what it replaces (ids only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub version: String,
    pub secret_id: String,
    pub previous_version: Option<String>,
    pub previous_secret_id: Option<String>,
}

async fn read(
    vault: &dyn Vault,
    agent_id: &str,
    stage: Stage,
) -> Result<Option<(String, VaultedCredential)>, RotationError> {
    match vault.get(agent_id, stage).await? {
        Some((version, value)) => VaultedCredential::from_secret(&value)
            .map(|c| Some((version, c)))
            .map_err(|source| RotationError::NotACredential {
                stage: stage.as_str(),
                agent: agent_id.into(),
                source,
            }),
        None => Ok(None),
    }
}

/// This rotation's credential: AWSPENDING until finishSecret, AWSCURRENT after (a repeat).
pub async fn ours(
    vault: &dyn Vault,
    agent_id: &str,
    token: &str,
) -> Result<(Stage, VaultedCredential), RotationError> {
    for stage in [Stage::Pending, Stage::Current] {
        if let Some((v, c)) = read(vault, agent_id, stage).await?
            && v == token
        {
            return Ok((stage, c));
        }
    }
    Err(RotationError::NotOurs {
        agent: agent_id.into(),
        token: token.into(),
    })
}

/// `createSecret`.
pub async fn create_secret(
    vault: &dyn Vault,
    idp: &dyn IdentityProvider,
    agent_id: &str,
    client_id: &str,
    token: &str,
) -> Result<Issued, RotationError> {
    let current = read(vault, agent_id, Stage::Current).await?;
    match ours(vault, agent_id, token).await {
        Ok((Stage::Pending, c)) => {
            return Ok(Issued {
                version: token.into(),
                secret_id: c.id().to_string(),
                previous_version: current.as_ref().map(|(v, _)| v.clone()),
                previous_secret_id: current.map(|(_, c)| c.id().to_string()),
            });
        }
        Ok((_, c)) => {
            let previous = read(vault, agent_id, Stage::Previous).await?;
            return Ok(Issued {
                version: token.into(),
                secret_id: c.id().to_string(),
                previous_version: previous.as_ref().map(|(v, _)| v.clone()),
                previous_secret_id: previous.map(|(_, c)| c.id().to_string()),
            });
        }
        Err(RotationError::NotOurs { .. }) => {}
        Err(e) => return Err(e),
    }
    let (current_version, current) =
        current.ok_or_else(|| RotationError::NoCurrent(agent_id.into()))?;
    let current = match current {
        VaultedCredential::Secret(c) => c,
        VaultedCredential::Key(k) => {
            // A new key pair, vaulted before the IdP hears of it (setSecret registers it):
            // nothing is ever registered that the vault does not hold.
            let pair = AgentKeyPair::generate()
                .map_err(|e| RotationError::KeyGeneration(e.to_string()))?;
            let new = KeyCredential {
                client_id: client_id.into(),
                kid: pair.public().kid.clone(),
                private_key: pair.pem().clone(),
            };
            vault
                .put(agent_id, token, &new.to_secret(), Stage::Pending)
                .await?;
            return Ok(Issued {
                version: token.into(),
                secret_id: new.kid,
                previous_version: Some(current_version),
                previous_secret_id: Some(k.kid),
            });
        }
    };
    // Room for the new secret (Okta and the dev IdP hold two): a leftover of a failed or lost
    // attempt goes. A provider holding one secret per client replaces it in add_secret.
    let held = idp.secret_ids(client_id).await?;
    if held.len() > 1 {
        for id in held.iter().filter(|id| **id != current.secret_id) {
            idp.remove_secret(client_id, id).await?;
        }
    }
    let new = idp.add_secret(client_id, token).await?;
    let credential = Credential {
        client_id: client_id.into(),
        secret_id: new.secret_id.clone(),
        client_secret: new.secret,
    };
    vault
        .put(agent_id, token, &credential.to_secret(), Stage::Pending)
        .await?;
    Ok(Issued {
        version: token.into(),
        secret_id: new.secret_id,
        previous_version: Some(current_version),
        previous_secret_id: Some(current.secret_id),
    })
}

/// `setSecret`: the IdP generated the value, so there is nothing to set; it must still hold it.
pub async fn set_secret(
    vault: &dyn Vault,
    idp: &dyn IdentityProvider,
    agent_id: &str,
    token: &str,
) -> Result<(), RotationError> {
    let c = match ours(vault, agent_id, token).await?.1 {
        VaultedCredential::Secret(c) => c,
        VaultedCredential::Key(k) => {
            let pair = key_pair(agent_id, &k)?;
            idp.add_key(&k.client_id, pair.public()).await?;
            return Ok(());
        }
    };
    if idp.secret_ids(&c.client_id).await?.contains(&c.secret_id) {
        Ok(())
    } else {
        Err(RotationError::Lost {
            client_id: c.client_id,
            secret_id: c.secret_id,
        })
    }
}

/// `testSecret`: a real client_credentials token with this rotation's value.
pub async fn test_secret(
    vault: &dyn Vault,
    idp: &dyn IdentityProvider,
    agent_id: &str,
    token: &str,
) -> Result<(), RotationError> {
    let c = ours(vault, agent_id, token).await?.1;
    let result = match &c {
        VaultedCredential::Secret(s) => idp.test_secret(&s.client_id, &s.client_secret).await,
        VaultedCredential::Key(k) => idp.test_key(&k.client_id, &key_pair(agent_id, k)?).await,
    };
    let client_id = c.client_id().to_string();
    match result {
        Ok(()) => Ok(()),
        // A deactivated client refuses every secret, and will until a person unfreezes it:
        // not the propagation delay a retry waits out. Retried, the failure would hold up the
        // workflow's other events (the cancel a freeze sends) for the whole retry budget.
        Err(e) => match idp.client(&client_id).await {
            Ok(Some(info)) if !info.active => Err(RotationError::Deactivated(client_id)),
            _ => Err(RotationError::TestFailed(e)),
        },
    }
}

/// The key pair a vaulted key credential holds.
fn key_pair(agent_id: &str, k: &KeyCredential) -> Result<AgentKeyPair, RotationError> {
    AgentKeyPair::from_pem(k.private_key.expose()).map_err(|_| RotationError::BadKey {
        agent: agent_id.into(),
    })
}

/// `finishSecret`: AWSCURRENT moves to `token`. Returns the version that was current before
/// (AWSPREVIOUS now), if any.
pub async fn finish_secret(
    vault: &dyn Vault,
    agent_id: &str,
    token: &str,
) -> Result<Option<String>, RotationError> {
    let current = read(vault, agent_id, Stage::Current).await?;
    if current.as_ref().is_some_and(|(v, _)| v == token) {
        // Finished already (a repeat).
        return Ok(read(vault, agent_id, Stage::Previous)
            .await?
            .map(|(v, _)| v));
    }
    let (_, c) = ours(vault, agent_id, token).await?;
    vault
        .put(agent_id, token, &c.to_secret(), Stage::Current)
        .await?;
    Ok(current.map(|(v, _)| v))
}
