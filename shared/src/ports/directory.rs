//! The people directory: is an owner a real, active person, and who is their manager.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use statemachines::onboarding::OwnerStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub email: String,
    pub name: String,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub manager: Option<String>,
    /// Chat handle (Slack user id or handle), when known.
    #[serde(default)]
    pub chat: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
#[error("directory unavailable: {0}")]
pub struct DirectoryError(pub String);

#[async_trait]
pub trait Directory: Send + Sync {
    async fn person(&self, email: &str) -> Result<Option<Person>, DirectoryError>;
    /// The person with this chat handle (a Slack user id), to know who clicked.
    async fn person_by_chat(&self, chat: &str) -> Result<Option<Person>, DirectoryError>;

    async fn owner_status(&self, email: &str) -> Result<OwnerStatus, DirectoryError> {
        Ok(match self.person(email).await? {
            Some(p) if p.active => OwnerStatus::Active,
            Some(_) => OwnerStatus::Inactive,
            None => OwnerStatus::Unknown,
        })
    }
}
