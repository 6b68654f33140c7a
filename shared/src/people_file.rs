//! The people file (TOML) as the directory of the embedded default:
//!
//! ```toml
//! [[person]]
//! email = "alice@example.com"
//! name = "Alice Ng"
//! manager = "maria@example.com"
//! chat = "U024BE7LH"      # optional
//! active = true           # default
//! ```

use crate::ports::directory::{Directory, DirectoryError, Person};
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeopleFile {
    #[serde(default)]
    person: Vec<Person>,
}

pub struct PeopleFileDirectory {
    people: HashMap<String, Person>,
}

impl PeopleFileDirectory {
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            DirectoryError(format!("cannot read people file {}: {e}", path.display()))
        })?;
        Self::parse(&text)
            .map_err(|e| DirectoryError(format!("people file {}: {}", path.display(), e.0)))
    }

    pub fn parse(text: &str) -> Result<Self, DirectoryError> {
        let file: PeopleFile = toml::from_str(text).map_err(|e| DirectoryError(e.to_string()))?;
        Ok(Self {
            people: file
                .person
                .into_iter()
                .map(|p| (p.email.to_ascii_lowercase(), p))
                .collect(),
        })
    }
}

#[async_trait]
impl Directory for PeopleFileDirectory {
    async fn person(&self, email: &str) -> Result<Option<Person>, DirectoryError> {
        Ok(self.people.get(&email.trim().to_ascii_lowercase()).cloned())
    }

    async fn person_by_chat(&self, chat: &str) -> Result<Option<Person>, DirectoryError> {
        Ok(self
            .people
            .values()
            .find(|p| p.chat.as_deref() == Some(chat.trim()))
            .cloned())
    }
}
