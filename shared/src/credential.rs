//! What the vault holds for an agent: its OAuth client credential as one JSON document, so the
//! agent reads a single secret, and rotation knows which identity-provider credential each vault
//! version is:
//! - a client secret: `{"client_id", "client_secret", "secret_id"}` ([`Credential`]);
//! - a private key Steward generated for a `private_key_jwt` agent that cannot keep one (key
//!   custody `steward`): `{"client_id", "kid", "private_key"}` ([`KeyCredential`], the key as
//!   PKCS#8 PEM; the identity provider holds only its public half).

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

/// A Steward-held private key as the vault keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyCredential {
    pub client_id: String,
    /// The key's id at the identity provider (its RFC 7638 thumbprint).
    pub kid: String,
    /// The private key, PKCS#8 PEM.
    pub private_key: Secret,
}

impl std::fmt::Debug for KeyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCredential")
            .field("client_id", &self.client_id)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl KeyCredential {
    /// The vault value.
    pub fn to_secret(&self) -> Secret {
        Secret::new(
            serde_json::json!({
                "client_id": self.client_id,
                "kid": self.kid,
                "private_key": self.private_key.expose(),
            })
            .to_string(),
        )
    }
}

/// Whatever the vault holds as an agent's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultedCredential {
    Secret(Credential),
    Key(KeyCredential),
}

impl VaultedCredential {
    pub fn from_secret(value: &Secret) -> Result<Self, NotACredential> {
        if let Ok(c) = Credential::from_secret(value) {
            return Ok(Self::Secret(c));
        }
        let v: serde_json::Value =
            serde_json::from_str(value.expose()).map_err(|_| NotACredential)?;
        let field = |name: &str| v[name].as_str().map(str::to_string).ok_or(NotACredential);
        Ok(Self::Key(KeyCredential {
            client_id: field("client_id")?,
            kid: field("kid")?,
            private_key: Secret::new(field("private_key")?),
        }))
    }

    pub fn to_secret(&self) -> Secret {
        match self {
            Self::Secret(c) => c.to_secret(),
            Self::Key(k) => k.to_secret(),
        }
    }

    pub fn client_id(&self) -> &str {
        match self {
            Self::Secret(c) => &c.client_id,
            Self::Key(k) => &k.client_id,
        }
    }

    /// The identity provider's id of the credential: the secret's id, or the key's kid.
    pub fn id(&self) -> &str {
        match self {
            Self::Secret(c) => &c.secret_id,
            Self::Key(k) => &k.kid,
        }
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

    #[test]
    fn a_vaulted_key_round_trips_and_never_shows_in_debug() {
        let k = KeyCredential {
            client_id: "dev_1".into(),
            kid: "kid-1".into(),
            private_key: Secret::new(
                "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n",
            ),
        };
        let v = VaultedCredential::Key(k.clone());
        let back = VaultedCredential::from_secret(&v.to_secret()).unwrap();
        assert_eq!(back, v);
        assert_eq!((back.client_id(), back.id()), ("dev_1", "kid-1"));
        assert!(!format!("{back:?}").contains("PRIVATE"));
        let s = VaultedCredential::Secret(Credential {
            client_id: "dev_1".into(),
            secret_id: "sec_1".into(),
            client_secret: Secret::new("s3cr3t"),
        });
        assert_eq!(
            VaultedCredential::from_secret(&s.to_secret()).unwrap().id(),
            "sec_1"
        );
        assert!(VaultedCredential::from_secret(&Secret::new("{\"client_id\":\"x\"}")).is_err());
    }
}
