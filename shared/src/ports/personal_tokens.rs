//! Personal API tokens: what a person's scripts call the admin API with, acting as that person.
//! A token is shown once when created; the store keeps only its SHA-256 digest, its name, its
//! owner and its lifetime. The token is `stp_<16 hex>_<secret>`: the part before the secret is
//! its id (`pat_<16 hex>`), which the audit trail names.

use super::store::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the store keeps of a personal token (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalToken {
    /// `pat_<16 hex>`.
    pub id: String,
    /// The person it acts as (normalised: trimmed, lower-cased e-mail).
    pub person: String,
    /// What the person calls it (`ci`, `laptop-script`).
    pub name: String,
    /// SHA-256 of the secret part, hex.
    pub digest: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl PersonalToken {
    /// Usable at `now`: neither revoked nor expired.
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

#[async_trait]
pub trait PersonalTokens: Send + Sync {
    /// Stores a new token; an id that exists already is a conflict (nothing is replaced).
    async fn put_token(&self, token: &PersonalToken) -> Result<(), StoreError>;
    async fn token(&self, id: &str) -> Result<Option<PersonalToken>, StoreError>;
    /// A person's tokens, live or not, oldest first.
    async fn tokens_of(&self, person: &str) -> Result<Vec<PersonalToken>, StoreError>;
    /// Marks a token revoked at `at`; `false` when there is no such token. Revoking twice keeps
    /// the first time.
    async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;
}
