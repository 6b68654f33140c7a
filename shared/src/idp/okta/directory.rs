//! Okta's Users API as the people directory (`STEWARD_DIRECTORY=okta`): whether an owner or an
//! approver is a real, active person, and who their manager is, straight from the org, so a
//! person deactivated in Okta loses their powers in Steward at their next call.
//!
//! `GET /api/v1/users/{login}` first (Okta's login is usually the e-mail address), then
//! `GET /api/v1/users?search=profile.email eq "<email>"` when no login matches. Active means
//! Okta's `ACTIVE`, or a status of a person still employed (`PASSWORD_EXPIRED`, `LOCKED_OUT`,
//! `RECOVERY`); `STAGED`, `PROVISIONED`, `SUSPENDED` and `DEPROVISIONED` are not active. The
//! manager is the user `profile.managerId` names (its e-mail), or `profile.manager` when that is
//! an e-mail address. The API token or service app needs `okta.users.read`.

use super::{Okta, is_missing};
use crate::ports::directory::{Directory, DirectoryError, Person};
use async_trait::async_trait;
use serde_json::Value;

/// Statuses of a person who still works here.
const ACTIVE_STATUSES: [&str; 4] = ["ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"];

/// The Okta org's users, as the directory.
#[derive(Clone, Debug)]
pub struct OktaDirectory(pub Okta);

fn unavailable(e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError(format!("Okta's Users API: {e}"))
}

fn text<'a>(user: &'a Value, field: &str) -> Option<&'a str> {
    user["profile"][field]
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl OktaDirectory {
    /// A user by id or login; `None` when Okta has none.
    async fn user(&self, id_or_login: &str) -> Result<Option<Value>, DirectoryError> {
        let url = self.0.t.url(&["api", "v1", "users", id_or_login], &[]);
        match self.0.get(url).await {
            Ok(answer) => answer.json().map(Some).map_err(unavailable),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The one user whose profile e-mail is `email`; `None` for none (or, ambiguously, several).
    async fn by_email(&self, email: &str) -> Result<Option<Value>, DirectoryError> {
        let search = format!("profile.email eq \"{}\"", email.replace('"', ""));
        let url = self.0.t.url(
            &["api", "v1", "users"],
            &[("search", &search), ("limit", "2")],
        );
        let found: Vec<Value> = self
            .0
            .get(url)
            .await
            .map_err(unavailable)?
            .json()
            .map_err(unavailable)?;
        Ok(match <[Value; 1]>::try_from(found) {
            Ok([one]) => Some(one),
            Err(_) => None,
        })
    }

    async fn manager_of(&self, user: &Value) -> Result<Option<String>, DirectoryError> {
        if let Some(id) = text(user, "managerId") {
            return Ok(self
                .user(id)
                .await?
                .and_then(|m| text(&m, "email").map(str::to_ascii_lowercase)));
        }
        Ok(text(user, "manager")
            .filter(|m| m.contains('@'))
            .map(str::to_ascii_lowercase))
    }
}

#[async_trait]
impl Directory for OktaDirectory {
    async fn person(&self, email: &str) -> Result<Option<Person>, DirectoryError> {
        let email = email.trim().to_ascii_lowercase();
        if email.is_empty() || !email.contains('@') {
            return Ok(None);
        }
        let user = match self.user(&email).await? {
            Some(u) => Some(u),
            None => self.by_email(&email).await?,
        };
        let Some(user) = user else {
            return Ok(None);
        };
        let status = user["status"].as_str().unwrap_or_default();
        let name = match (text(&user, "firstName"), text(&user, "lastName")) {
            (Some(f), Some(l)) => format!("{f} {l}"),
            _ => text(&user, "displayName").unwrap_or(&email).to_string(),
        };
        Ok(Some(Person {
            email: text(&user, "email")
                .map(str::to_ascii_lowercase)
                .unwrap_or(email),
            name,
            active: ACTIVE_STATUSES.contains(&status),
            manager: self.manager_of(&user).await?,
            // Okta does not know Slack ids: Slack clicks are matched by e-mail instead.
            chat: None,
        }))
    }

    async fn person_by_chat(&self, _chat: &str) -> Result<Option<Person>, DirectoryError> {
        Ok(None)
    }
}
