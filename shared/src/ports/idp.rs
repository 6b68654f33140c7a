//! The identity provider port: service clients, their secrets and grants.

use crate::agent_key::AgentKeyPair;
use crate::secret::Secret;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
pub use statemachines::credential::{AgentKey, CertificateRecord, TokenBinding};

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
    /// Steward's mark on the clients it made: the idempotency key of the `create_client` that
    /// made this one, as the provider keeps it with the client (the dev IdP's row, the Okta
    /// app's profile, the OAuth adapter's vault record). `None` for a client made elsewhere
    /// (an IdP console, a claimed shadow agent's client). Discovery never takes a client whose
    /// mark names one of its workflows for a shadow agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steward_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error("identity provider is unavailable, try again: {0}")]
    Unavailable(String),
    #[error("identity provider refused the request: {0}")]
    Refused(String),
    #[error("client {0} does not exist at the identity provider")]
    UnknownClient(String),
    /// The provider's own error answer, with its code (Okta's `errorCode`, OAuth's `error`).
    #[error("identity provider answered {status} {code}: {summary}")]
    Provider {
        status: u16,
        code: String,
        summary: String,
    },
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
    /// The key is kept with the client from the moment it exists, and reported as
    /// [`ClientInfo::steward_key`]: that is how discovery tells Steward's clients apart before
    /// the onboarding has recorded them.
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
    /// Proves a secret works by obtaining a client_credentials token with it (the rotation's
    /// test step). A refused secret is `Provider`/`Refused`, never `Unavailable`.
    async fn test_secret(&self, client_id: &str, secret: &Secret) -> Result<(), IdpError>;
    /// Revokes what the provider lets a manager revoke of the client's issued tokens, and says
    /// what may stay valid (self-contained access tokens usually live until they expire).
    async fn revoke_tokens(&self, client_id: &str) -> Result<TokenRevocation, IdpError>;
    /// Deletes the client, deactivating it first where the provider requires it. Deleting a
    /// client that is already gone is fine.
    async fn delete_client(&self, client_id: &str) -> Result<(), IdpError>;

    // Key credentials (RFC 7523 `private_key_jwt`). An adapter that cannot manage them says so
    // with `Refused`, and policy keeps key-bound agents away from it.

    /// Creates a client that authenticates with `private_key_jwt` only, holding `key` (active),
    /// once per `idempotency_key` as [`create_client`](Self::create_client): a repeat returns
    /// the same client. No secret exists for it. `binding` asks the provider to bind the
    /// client's tokens (DPoP) where it can.
    async fn create_key_client(
        &self,
        spec: &ClientSpec,
        key: &AgentKey,
        binding: TokenBinding,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        let _ = (spec, key, binding, idempotency_key);
        Err(no_keys())
    }
    /// Adds `key` to the client's keys, active. Adding a key the client already holds is fine
    /// (it is made active).
    async fn add_key(&self, client_id: &str, key: &AgentKey) -> Result<(), IdpError> {
        let _ = (client_id, key);
        Err(no_keys())
    }
    /// Activates or deactivates one key; an inactive key signs no accepted assertion.
    async fn set_key_active(
        &self,
        client_id: &str,
        kid: &str,
        active: bool,
    ) -> Result<(), IdpError> {
        let _ = (client_id, kid, active);
        Err(no_keys())
    }
    /// Removes one key; removing a key that is already gone is fine. An active key is
    /// deactivated first (Okta deletes only inactive keys).
    async fn remove_key(&self, client_id: &str, kid: &str) -> Result<(), IdpError> {
        let _ = (client_id, kid);
        Err(no_keys())
    }
    /// The client's keys, oldest first.
    async fn keys(&self, client_id: &str) -> Result<Vec<ClientKey>, IdpError> {
        let _ = client_id;
        Err(no_keys())
    }
    /// Proves a key works by obtaining a client_credentials token with a client assertion it
    /// signs (the key rotation's test step, for keys Steward holds). A refused assertion is
    /// `Provider`/`Refused`, never `Unavailable`.
    async fn test_key(&self, client_id: &str, key: &AgentKeyPair) -> Result<(), IdpError> {
        let _ = (client_id, key);
        Err(no_keys())
    }

    // Certificate credentials (RFC 8705 `tls_client_auth`), with certificates from Steward's
    // internal CA. An adapter that cannot register them says so, and Steward issues nothing.

    /// Whether this adapter registers `tls_client_auth` clients: asked before a certificate
    /// is issued, so an adapter that cannot never has the CA opened for it.
    fn certificate_clients(&self) -> bool {
        false
    }
    /// Creates a client that authenticates with `certificate` over mutual TLS only (RFC 8705:
    /// `tls_client_auth`, §2.1, with its SPIFFE id as `tls_client_auth_san_uri`, and where the
    /// provider can, pinned to its `x5t#S256`; or `self_signed_tls_client_auth`, §2.2, the
    /// certificate itself registered), once per `idempotency_key` as
    /// [`create_client`](Self::create_client): a repeat returns the same client. Its tokens
    /// are bound to the certificate (`cnf.x5t#S256`). `pem` is the certificate `certificate`
    /// describes (public), for providers that register the certificate itself.
    async fn create_certificate_client(
        &self,
        spec: &ClientSpec,
        certificate: &CertificateRecord,
        pem: &str,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        let _ = (spec, certificate, pem, idempotency_key);
        Err(IdpError::Refused(
            "this identity provider adapter does not register tls_client_auth clients; use credential kind `secret` or `private_key_jwt` with it".into(),
        ))
    }
    /// Accepts `certificate` (its PEM: `pem`) for the client beside the certificates it
    /// accepts already (a certificate rotation's overlap). Adding one it accepts already is
    /// fine.
    async fn add_certificate(
        &self,
        client_id: &str,
        certificate: &CertificateRecord,
        pem: &str,
    ) -> Result<(), IdpError> {
        let _ = (client_id, certificate, pem);
        Err(no_certificates())
    }
    /// No longer accepts the certificate `x5t_s256` for the client; removing one that is
    /// already gone is fine.
    async fn remove_certificate(&self, client_id: &str, x5t_s256: &str) -> Result<(), IdpError> {
        let _ = (client_id, x5t_s256);
        Err(no_certificates())
    }
}

fn no_certificates() -> IdpError {
    IdpError::Refused(
        "this identity provider adapter does not register tls_client_auth clients; use credential kind `secret` or `private_key_jwt` with it".into(),
    )
}

fn no_keys() -> IdpError {
    IdpError::Refused(
        "this identity provider adapter does not manage key credentials; use credential kind `secret` with it".into(),
    )
}

/// A key as the identity provider holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientKey {
    pub kid: String,
    pub active: bool,
}

/// What revoking a client's tokens achieved. Providers differ: Okta's
/// `DELETE /api/v1/apps/{id}/tokens` revokes refresh tokens only, and client_credentials access
/// tokens stay valid until they expire. A revocation receipt states both halves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevocation {
    /// What was revoked, in words ("all refresh tokens of the app").
    pub revoked: String,
    /// Why tokens already issued may still be valid, and until when in terms of the token
    /// lifetime; `None` when nothing issued stays valid.
    pub outstanding: Option<String>,
}

#[derive(Debug)]
pub struct NewSecret {
    pub secret_id: String,
    pub secret: Secret,
}
