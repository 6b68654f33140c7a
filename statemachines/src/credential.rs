//! How an agent proves who it is, and what binds its tokens to it: the credential kinds a
//! manifest chooses from, the token binding a policy can require, and the public keys the
//! registry keeps for key-bound agents (never a private key).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How an agent authenticates to the identity provider.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A client secret kept in the vault: whoever copies it can use it.
    #[default]
    Secret,
    /// RFC 7523 client assertions signed with a private key the agent holds; the identity
    /// provider and the registry keep only the public JWK.
    PrivateKeyJwt,
    /// RFC 8705 mutual TLS with a certificate from Steward's internal CA.
    TlsClientAuth,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 3] = [
        CredentialKind::Secret,
        CredentialKind::PrivateKeyJwt,
        CredentialKind::TlsClientAuth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
        }
    }

    /// Whether the credential is a key the agent never hands out (not a shared secret).
    pub fn key_bound(self) -> bool {
        !matches!(self, Self::Secret)
    }
}

/// Who holds a `private_key_jwt` agent's private key.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyCustody {
    /// The agent made its key pair and keeps the private key: Steward holds nothing secret.
    #[default]
    Agent,
    /// For agents that cannot keep a key: Steward generates the pair and keeps the private key
    /// in the vault, delivered and rotated like a secret; the identity provider gets only the
    /// public key.
    Steward,
}

impl KeyCustody {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Steward => "steward",
        }
    }

    pub fn is_agent(&self) -> bool {
        *self == Self::Agent
    }
}

impl std::str::FromStr for CredentialKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is not a credential kind (secret, private_key_jwt, tls_client_auth)")
            })
    }
}

/// What an access token is bound to (a sender-constrained token is useless without its key).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenBinding {
    /// A bearer token: whoever holds it can use it.
    #[default]
    None,
    /// RFC 9449 DPoP: the token names the agent key's thumbprint (`cnf.jkt`) and every use
    /// carries a proof signed with that key.
    Dpop,
    /// RFC 8705: the token names the client certificate's thumbprint (`cnf.x5t#S256`) and is
    /// used over mutual TLS with that certificate.
    Certificate,
}

impl TokenBinding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Dpop => "dpop",
            Self::Certificate => "certificate",
        }
    }
}

/// A public key an agent signs client assertions (and DPoP proofs) with. The agent proved it
/// holds the private half (a signature over a nonce Steward issued) before the key was
/// accepted; the private half is never seen by Steward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentKey {
    /// The key's RFC 7638 SHA-256 thumbprint (base64url): its `kid` everywhere, and the
    /// `cnf.jkt` of tokens bound to it.
    pub kid: String,
    /// The public JWK as JSON text, with `kid` set to the thumbprint.
    pub jwk: String,
}

/// A key in the registry record, with its place in the key's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The public key (public keys are no secret: the registry shows them).
    #[serde(flatten)]
    pub key: AgentKey,
    pub added_at: DateTime<Utc>,
    pub status: KeyStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// The identity provider accepts assertions signed with it.
    Active,
    /// Deactivated at the identity provider (a freeze, or a retired key in its grace period).
    Inactive,
    /// Removed from the identity provider.
    Removed,
}

/// A client certificate Steward's internal CA issued to a `tls_client_auth` agent, as the
/// registry keeps it: public facts only. The private key never leaves the agent; the
/// certificate itself is public (`GET /api/agents/{agent}/certificate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// The serial number, lowercase hex: what the CRL lists once it is revoked.
    pub serial: String,
    /// `spiffe://<trust domain>/agent/<name>`, the certificate's only subject alternative name.
    pub spiffe_id: String,
    /// base64url SHA-256 of the certificate's DER: the `cnf.x5t#S256` of the tokens bound to
    /// it (RFC 8705 §3.1).
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// When Steward revoked it and why; `None` while it is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<CertificateRevocation>,
}

impl CertificateRecord {
    /// On hold while its agent is frozen ([`CERTIFICATE_HOLD`]): the CRL lists it and the mTLS
    /// token endpoint refuses it until an unfreeze releases it.
    pub fn on_hold(&self) -> bool {
        self.revoked
            .as_ref()
            .is_some_and(|r| r.reason == CERTIFICATE_HOLD)
    }

    /// Revoked for good: for any reason but a hold. Never undone.
    pub fn revoked_for_good(&self) -> bool {
        self.revoked.is_some() && !self.on_hold()
    }
}

/// A revoked certificate's revocation: never undone, except a hold ([`CERTIFICATE_HOLD`]),
/// which an unfreeze releases and a final revocation replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRevocation {
    pub at: DateTime<Utc>,
    /// The RFC 5280 reason, by name (`cessation_of_operation` for a decommissioned agent).
    pub reason: String,
}

/// The RFC 5280 reason of a decommissioned agent's certificate.
pub const CESSATION_OF_OPERATION: &str = "cessation_of_operation";

/// The RFC 5280 reason (`certificateHold`) of a frozen agent's certificates: the only
/// revocation that is undone (by an unfreeze).
pub const CERTIFICATE_HOLD: &str = "certificate_hold";

/// The RFC 5280 reason of a certificate a certificate rotation replaced.
pub const SUPERSEDED: &str = "superseded";

/// What the internal CA needs to issue a `tls_client_auth` agent's certificate when its client
/// is created: the agent's CSR and the policy's certificate settings at that time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateOrder {
    /// The agent's PKCS#10 request, PEM (its public key and self-signature; public).
    pub csr: String,
    /// The SPIFFE trust domain of the certificate's id.
    pub trust_domain: String,
    /// The certificate's lifetime, 1 to 90 days.
    pub lifetime_days: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_and_print_as_in_manifests() {
        for k in CredentialKind::ALL {
            assert_eq!(k.as_str().parse::<CredentialKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        let e = "client_secret".parse::<CredentialKind>().unwrap_err();
        assert!(e.contains("private_key_jwt"), "{e}");
        assert!(!CredentialKind::Secret.key_bound());
        assert!(CredentialKind::PrivateKeyJwt.key_bound());
        assert!(CredentialKind::TlsClientAuth.key_bound());
    }
}
