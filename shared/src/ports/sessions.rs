//! The dashboard's browser sessions. A session is created when a person signs in (after the
//! issuer's authorization code was exchanged and the token verified); the browser holds only a
//! random id in an `HttpOnly` cookie, and the store keeps its SHA-256 digest, never the id. A
//! session ends at its idle or absolute expiry, or when the person signs out.
//!
//! A sign-in in progress (the PKCE verifier and where to return) is kept the same way, under
//! the digest of its `state`, and can be taken once.

use super::store::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the store keeps of a signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 of the cookie's value, hex.
    pub digest: String,
    /// The person (normalised e-mail), as the issuer's token named them.
    pub person: String,
    /// The anti-forgery token every state-changing form carries.
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    /// When the browser was last seen (recorded at most once a minute).
    pub seen_at: DateTime<Utc>,
    /// The absolute end, whatever the activity.
    pub expires_at: DateTime<Utc>,
}

/// A sign-in started in a browser and not yet finished at the issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignIn {
    /// SHA-256 of the `state` sent to the issuer, hex.
    pub digest: String,
    /// The PKCE code verifier (RFC 7636), which only the server knows.
    pub verifier: String,
    /// The page to show after signing in (a path of this server).
    pub return_to: String,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait Sessions: Send + Sync {
    /// Stores a new session; a digest that exists already is refused (nothing is replaced).
    async fn put_session(&self, session: &Session) -> Result<(), StoreError>;
    async fn session(&self, digest: &str) -> Result<Option<Session>, StoreError>;
    /// Records activity; `false` when there is no such session.
    async fn touch_session(&self, digest: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Ends a session (sign-out); ending one that does not exist is not an error.
    async fn end_session(&self, digest: &str) -> Result<(), StoreError>;
    async fn put_sign_in(&self, pending: &PendingSignIn) -> Result<(), StoreError>;
    /// The pending sign-in, removed: a `state` is used once.
    async fn take_sign_in(&self, digest: &str) -> Result<Option<PendingSignIn>, StoreError>;
}
