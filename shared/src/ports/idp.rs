//! The identity provider port: service clients, their secrets and grants.

use crate::secret::Secret;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub agent_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub token_lifetime_secs: u32,
}

/// A client just created, with its first secret. The secret goes to the vault and nowhere else.
#[derive(Debug)]
pub struct CreatedClient {
    pub client_id: String,
    pub secret_id: String,
    pub secret: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub client_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub token_lifetime_secs: u32,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error("identity provider is unavailable, try again: {0}")]
    Unavailable(String),
    #[error("identity provider refused the request: {0}")]
    Refused(String),
    #[error("client {0} does not exist at the identity provider")]
    UnknownClient(String),
}

impl IdpError {
    pub fn retryable(&self) -> bool {
        matches!(self, IdpError::Unavailable(_))
    }
}

#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// Creates a client, once per `idempotency_key`. Repeating the key returns the same client
    /// (with a fresh secret replacing any secret the lost first attempt issued: nobody holds it).
    async fn create_client(
        &self,
        spec: &ClientSpec,
        idempotency_key: &str,
    ) -> Result<CreatedClient, IdpError>;
    /// Sets the client's grants to exactly `scopes` and its token lifetime.
    async fn set_grants(
        &self,
        client_id: &str,
        scopes: &[String],
        token_lifetime_secs: u32,
    ) -> Result<(), IdpError>;
    async fn set_active(&self, client_id: &str, active: bool) -> Result<(), IdpError>;
    async fn client(&self, client_id: &str) -> Result<Option<ClientInfo>, IdpError>;
    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError>;
    /// Adds a second secret to a client (rotation). A repeat with the same key replaces the
    /// secret the first call made, whose value nobody kept. Okta holds at most two secrets per
    /// client: remove the outgoing one first.
    async fn add_secret(
        &self,
        client_id: &str,
        idempotency_key: &str,
    ) -> Result<NewSecret, IdpError>;
    /// Removes one secret; removing a secret that is already gone is fine. The only secret of a
    /// client cannot be removed.
    async fn remove_secret(&self, client_id: &str, secret_id: &str) -> Result<(), IdpError>;
    /// The ids of a client's secrets, oldest first.
    async fn secret_ids(&self, client_id: &str) -> Result<Vec<String>, IdpError>;
    /// Proves a secret works by obtaining a token with it (the rotation's test step).
    async fn test_secret(&self, client_id: &str, secret: &Secret) -> Result<(), IdpError>;
}

#[derive(Debug)]
pub struct NewSecret {
    pub secret_id: String,
    pub secret: Secret,
}
