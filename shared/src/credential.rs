//! What the vault holds for an agent: its OAuth client credential as one JSON document
//! (`{"client_id", "client_secret", "secret_id"}`), so the agent reads a single secret, and
//! rotation knows which identity-provider secret each vault version is.

use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub client_id: String,
    /// The identity provider's id of this secret (rotation removes it by this id).
    pub secret_id: String,
    pub client_secret: Secret,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the vault value is not a Steward credential (JSON with client_id, client_secret, secret_id)"
)]
pub struct NotACredential;

impl Credential {
    /// The vault value.
    pub fn to_secret(&self) -> Secret {
        Secret::new(
            serde_json::json!({
                "client_id": self.client_id,
                "client_secret": self.client_secret.expose(),
                "secret_id": self.secret_id,
            })
            .to_string(),
        )
    }

    pub fn from_secret(value: &Secret) -> Result<Self, NotACredential> {
        let v: serde_json::Value =
            serde_json::from_str(value.expose()).map_err(|_| NotACredential)?;
        let field = |name: &str| v[name].as_str().map(str::to_string).ok_or(NotACredential);
        Ok(Self {
            client_id: field("client_id")?,
            secret_id: field("secret_id")?,
            client_secret: Secret::new(field("client_secret")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_values() {
        let c = Credential {
            client_id: "dev_1".into(),
            secret_id: "sec_1".into(),
            client_secret: Secret::new("s3cr3t"),
        };
        assert_eq!(Credential::from_secret(&c.to_secret()).unwrap(), c);
        assert!(Credential::from_secret(&Secret::new("plain")).is_err());
        assert!(Credential::from_secret(&Secret::new("{\"client_id\":\"x\"}")).is_err());
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
