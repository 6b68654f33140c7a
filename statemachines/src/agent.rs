//! Agents: the non-human identities Steward governs.

use crate::credential::{
    AgentKey, CertificateRecord, CertificateRevocation, CredentialKind, KeyCustody, KeyRecord,
    TokenBinding,
};
use crate::policy::{Policy, reason};
use crate::receipt::{CREDENTIAL_HISTORY, CredentialReceipt, RevocationReceipt};
use crate::workflow::{Reason, Rejected};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// A request for a new agent identity (the `agent.toml` manifest, or the admin API body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRequest {
    pub name: String,
    /// Email of the accountable human owner; must be an active person in the directory.
    pub owner: String,
    pub team: String,
    pub environment: String,
    pub purpose: String,
    pub scopes: Vec<String>,
    /// Access-token lifetime in seconds; the policy maximum when absent.
    #[serde(default)]
    pub token_lifetime_secs: Option<u32>,
    /// The agent is decommissioned after this date unless renewed.
    #[serde(default)]
    pub expires_on: Option<NaiveDate>,
    /// How the agent authenticates (`secret` when absent).
    #[serde(default)]
    pub credential: CredentialKind,
    /// The agent-held public key of a `private_key_jwt` agent. The admin API sets it only after
    /// the requester proved possession of the private half; a body cannot name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<AgentKey>,
    /// Who holds a `private_key_jwt` agent's private key: the agent (`agent`, the default; it
    /// sends `public_jwk`) or Steward (`steward`: generated and vaulted for agents that cannot
    /// keep a key).
    #[serde(default, skip_serializing_if = "KeyCustody::is_agent")]
    pub key_custody: KeyCustody,
    /// A `tls_client_auth` agent's certificate signing request (PKCS#10, PEM), made with the
    /// key the agent keeps. Public: its self-signature is the proof of possession, and the
    /// internal CA certifies only its key, under the agent's SPIFFE id, whatever it asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
}

/// Longest purpose an agent request may give (it is shown to approvers and reviewers).
pub const MAX_PURPOSE_CHARS: usize = 1000;
/// Longest team name or owner address.
pub const MAX_NAME_CHARS: usize = 254;
/// Longest certificate signing request accepted (an RSA-8192 request is under 4 000).
pub const MAX_CSR_CHARS: usize = 16_384;

impl AgentRequest {
    /// Every policy check that needs no I/O, all reasons at once.
    pub fn check(&self, policy: &Policy, today: NaiveDate) -> Result<(), Rejected> {
        let mut reasons: Vec<Reason> = Vec::new();
        policy.check_environment(&self.environment, &mut reasons);
        policy.check_name(&self.name, &self.environment, &mut reasons);
        if self.owner.trim().is_empty() {
            reasons.push(reason("owner", "an owner (a person's email) is required"));
        }
        if self.team.trim().is_empty() {
            reasons.push(reason("team", "a team is required"));
        }
        if self.purpose.trim().is_empty() {
            reasons.push(reason(
                "purpose",
                "a purpose is required: say what the agent does",
            ));
        }
        for (field, value, max) in [
            ("purpose", &self.purpose, MAX_PURPOSE_CHARS),
            ("team", &self.team, MAX_NAME_CHARS),
            ("owner", &self.owner, MAX_NAME_CHARS),
        ] {
            let n = value.chars().count();
            if n > max {
                reasons.push(reason(
                    field,
                    format!("{field} is {n} characters long; at most {max} are kept"),
                ));
            }
        }
        if self.scopes.is_empty() {
            reasons.push(reason("scopes", "at least one scope is required"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.scopes {
            if !seen.insert(s) {
                reasons.push(reason("scopes", format!("scope `{s}` is listed twice")));
            }
        }
        policy.check_scopes("scopes", &self.scopes, &mut reasons);
        policy.check_token_lifetime(self.token_lifetime(policy), &mut reasons);
        if let Some(d) = self.expires_on
            && d <= today
        {
            reasons.push(reason(
                "expires_on",
                format!("expiry date {d} is not in the future"),
            ));
        }
        self.check_credential(policy, &mut reasons);
        Rejected::from_reasons(reasons)
    }

    /// The credential kind against the environment's policy, and what the kind needs.
    fn check_credential(&self, policy: &Policy, reasons: &mut Vec<Reason>) {
        let allowed = policy.credentials.kinds_in(&self.environment);
        if !allowed.contains(&self.credential) {
            reasons.push(reason(
                "credential",
                format!(
                    "credential `{}` is not allowed in environment `{}` (allowed: {})",
                    self.credential.as_str(),
                    self.environment,
                    allowed
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        match (self.credential, self.key_custody, &self.public_key) {
            (CredentialKind::PrivateKeyJwt, KeyCustody::Agent, None) => reasons.push(reason(
                "credential",
                "a private_key_jwt agent needs its public key: send public_jwk with key_proof (a JWT signed by the key over a nonce from POST /api/key-nonces), or key_custody `steward` for an agent that cannot keep a key",
            )),
            (CredentialKind::PrivateKeyJwt, KeyCustody::Steward, Some(_)) => {
                reasons.push(reason(
                    "public_jwk",
                    "with key_custody `steward` Steward generates the key pair: send no public_jwk",
                ))
            }
            (CredentialKind::PrivateKeyJwt, KeyCustody::Steward, None)
                if !policy.credentials.steward_keys_in(&self.environment) =>
            {
                reasons.push(reason(
                    "key_custody",
                    format!(
                        "Steward-held keys are not allowed in environment `{}`: the agent must make its own key pair and send public_jwk with key_proof",
                        self.environment
                    ),
                ))
            }
            (CredentialKind::Secret | CredentialKind::TlsClientAuth, KeyCustody::Steward, _) => {
                reasons.push(reason(
                    "key_custody",
                    format!(
                        "key_custody is only for credential private_key_jwt, not `{}`",
                        self.credential.as_str()
                    ),
                ))
            }
            (CredentialKind::Secret | CredentialKind::TlsClientAuth, _, Some(_)) => {
                reasons.push(reason(
                    "public_jwk",
                    format!(
                        "a public key is only for credential private_key_jwt, not `{}`",
                        self.credential.as_str()
                    ),
                ))
            }
            _ => {}
        }
        match (self.credential, &self.csr) {
            (CredentialKind::TlsClientAuth, None) => reasons.push(reason(
                "csr",
                "a tls_client_auth agent needs a certificate signing request: send csr, a PEM `CERTIFICATE REQUEST` made with the agent's own key (e.g. `openssl req -new -key agent.key -subj /CN=<name>`); the key stays with the agent",
            )),
            (CredentialKind::TlsClientAuth, Some(csr)) => {
                let n = csr.chars().count();
                if n > MAX_CSR_CHARS {
                    reasons.push(reason(
                        "csr",
                        format!("the certificate signing request is {n} characters long; at most {MAX_CSR_CHARS} are accepted"),
                    ));
                } else if !csr.contains("-----BEGIN") {
                    reasons.push(reason(
                        "csr",
                        "the certificate signing request must be PEM: one `-----BEGIN CERTIFICATE REQUEST-----` block",
                    ));
                }
            }
            (_, Some(_)) => reasons.push(reason(
                "csr",
                format!(
                    "a certificate signing request is only for credential tls_client_auth, not `{}`",
                    self.credential.as_str()
                ),
            )),
            (_, None) => {}
        }
        if policy.credentials.binding_in(&self.environment) == TokenBinding::Dpop
            && self.credential == CredentialKind::Secret
        {
            // A DPoP proof is signed by the agent's key: an agent bound by policy holds one.
            reasons.push(reason(
                "credential",
                format!(
                    "environment `{}` requires DPoP-bound tokens: use private_key_jwt, whose key signs the proofs",
                    self.environment
                ),
            ));
        }
        if policy.credentials.binding_in(&self.environment) == TokenBinding::Certificate
            && self.credential != CredentialKind::TlsClientAuth
        {
            reasons.push(reason(
                "credential",
                format!(
                    "environment `{}` requires certificate-bound tokens: only tls_client_auth agents can hold them",
                    self.environment
                ),
            ));
        }
    }

    pub fn token_lifetime(&self, policy: &Policy) -> u32 {
        self.token_lifetime_secs
            .unwrap_or(policy.max_token_lifetime_secs)
    }

    /// Scopes that need a security approval.
    pub fn sensitive_scopes(&self, policy: &Policy) -> Vec<String> {
        self.scopes
            .iter()
            .filter(|s| policy.is_sensitive(s))
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    PendingApproval,
    Provisioning,
    Active,
    Denied,
    Expired,
    Cancelled,
    Failed,
    /// Its client is deactivated at the identity provider (no new tokens) until someone acts.
    Frozen,
    /// A client found at the identity provider that nobody registered (a shadow agent): no
    /// owner until someone claims it.
    Unregistered,
    /// Client deleted, secret scheduled for deletion; the record is archived, never erased.
    Decommissioned,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingApproval => "pending_approval",
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Frozen => "frozen",
            Self::Unregistered => "unregistered",
            Self::Decommissioned => "decommissioned",
        }
    }
}

/// The registry record of an agent, stored under the key `AGENT#<id>`. No secret values, ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub team: String,
    pub environment: String,
    pub purpose: String,
    pub scopes: Vec<String>,
    pub token_lifetime_secs: u32,
    pub expires_on: Option<NaiveDate>,
    pub status: AgentStatus,
    /// Client id at the identity provider, once provisioned.
    pub client_id: Option<String>,
    /// Vault version id of the current secret (an id, not the secret).
    pub secret_version: Option<String>,
    pub credential_issued_at: Option<DateTime<Utc>>,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What needs a person's attention (owner lost, freeze requested).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<AgentFlag>,
    /// Completed rotations, newest last (at most `receipt::CREDENTIAL_HISTORY`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialReceipt>,
    /// The decommission receipt, once decommissioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decommission: Option<RevocationReceipt>,
    /// The agent's latest access review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_review: Option<crate::review::LastReview>,
    /// How the agent authenticates.
    #[serde(default)]
    pub credential_kind: CredentialKind,
    /// What its tokens are bound to, as its environment's policy required when it was made.
    #[serde(default)]
    pub token_binding: TokenBinding,
    /// Who holds a `private_key_jwt` agent's private key. A Steward-held key lives in the
    /// vault as the agent's credential (`secret_version`) and rotates like a secret; `keys`
    /// lists only agent-held keys.
    #[serde(default, skip_serializing_if = "KeyCustody::is_agent")]
    pub key_custody: KeyCustody,
    /// A key-bound agent's public keys, by thumbprint (never a private key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyRecord>,
    /// A `tls_client_auth` agent's certificate signing request, as it was requested (public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// The certificates the internal CA issued to a `tls_client_auth` agent, oldest first
    /// (public facts: serial, SPIFFE id, thumbprint, validity, revocation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateRecord>,
}

/// A change to some fields of a registry record; see `Command::UpdateAgent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum AgentChange {
    /// A rotation promoted a new secret: it is current from `receipt.new_valid_from`.
    CredentialRotated { receipt: CredentialReceipt },
    /// The rotation's grace period ended and the old secret was removed (or could not be).
    OldSecretRevoked {
        rotation: String,
        at: DateTime<Utc>,
        removed: bool,
        detail: String,
    },
    /// The agent is decommissioned; its record is archived with the receipt.
    Decommissioned { receipt: RevocationReceipt },
    /// A renewal moved the agent's expiry date.
    ExpiresOn { date: NaiveDate },
    /// An access review resolved the agent's item.
    Reviewed { review: crate::review::LastReview },
    /// The agent's client was deactivated: frozen until someone acts. Its valid certificates go
    /// on hold (`certificate_hold`).
    Frozen { reason: String },
    /// Security unfroze the agent: active again with exactly these grants, and its
    /// certificates' hold released.
    Unfrozen {
        scopes: Vec<String>,
        token_lifetime_secs: u32,
        by: String,
    },
    /// Something needs a person's attention.
    Flag { flag: AgentFlag },
    /// A key rotation added a key (active beside the others).
    KeyAdded { key: KeyRecord },
    /// A key rotation removed an old key from the client.
    KeyRetired { kid: String, at: DateTime<Utc> },
    /// A scope change set the client's grants. Only the grants change: a freeze or a rotation
    /// recorded meanwhile stays.
    GrantsSet {
        scopes: Vec<String>,
        token_lifetime_secs: u32,
    },
    /// A certificate rotation added a certificate (accepted beside the current one; the
    /// newest is the one the agent fetches).
    CertificateAdded {
        certificate: crate::credential::CertificateRecord,
    },
    /// The internal CA revoked one of the agent's certificates (kept; the CRL lists it).
    CertificateRevoked {
        serial: String,
        at: DateTime<Utc>,
        reason: String,
    },
}

impl Agent {
    /// A `private_key_jwt` agent whose private key Steward generated and keeps in the vault:
    /// it rotates and is handed out like a secret.
    pub fn steward_holds_key(&self) -> bool {
        self.credential_kind == CredentialKind::PrivateKeyJwt
            && self.key_custody == KeyCustody::Steward
    }

    /// Whether the vault holds the agent's credential (a secret, or a Steward-held key): what
    /// secret rotation and the vault's deletion at decommission apply to.
    pub fn vaulted_credential(&self) -> bool {
        self.credential_kind == CredentialKind::Secret || self.steward_holds_key()
    }

    /// Applies `change` to the record as stored.
    pub fn apply(&mut self, change: &AgentChange, now: DateTime<Utc>) {
        match change {
            AgentChange::CredentialRotated { receipt } => {
                if self
                    .credentials
                    .iter()
                    .any(|r| r.rotation == receipt.rotation)
                {
                    return; // applied already
                }
                self.secret_version = receipt.new.version.clone();
                self.credential_issued_at = Some(receipt.new_valid_from);
                self.credentials.push(receipt.clone());
                let excess = self.credentials.len().saturating_sub(CREDENTIAL_HISTORY);
                self.credentials.drain(..excess);
            }
            AgentChange::OldSecretRevoked {
                rotation,
                at,
                removed,
                detail,
            } => {
                if let Some(r) = self
                    .credentials
                    .iter_mut()
                    .find(|r| &r.rotation == rotation)
                {
                    r.old_valid_until = removed.then_some(*at);
                    r.old_revocation = Some(detail.clone());
                }
            }
            AgentChange::Decommissioned { receipt } => {
                self.status = AgentStatus::Decommissioned;
                self.decommission = Some(receipt.clone());
            }
            AgentChange::ExpiresOn { date } => self.expires_on = Some(*date),
            AgentChange::Reviewed { review } => self.last_review = Some(review.clone()),
            AgentChange::Frozen { reason } => {
                if matches!(self.status, AgentStatus::Active | AgentStatus::Unregistered) {
                    self.status = AgentStatus::Frozen;
                }
                // Its valid certificates go on hold: the CRL lists them, so relying parties
                // of agent-to-agent mTLS refuse them too, not only Steward's token endpoint.
                for c in self.certificates.iter_mut().filter(|c| c.revoked.is_none()) {
                    c.revoked = Some(CertificateRevocation {
                        at: now,
                        reason: crate::credential::CERTIFICATE_HOLD.into(),
                    });
                }
                self.flags.push(AgentFlag::Frozen {
                    reason: reason.clone(),
                    at: now,
                });
            }
            AgentChange::Unfrozen {
                scopes,
                token_lifetime_secs,
                ..
            } => {
                if self.status == AgentStatus::Frozen {
                    self.status = AgentStatus::Active;
                }
                self.scopes = scopes.clone();
                self.token_lifetime_secs = *token_lifetime_secs;
                self.flags.retain(|f| {
                    !matches!(
                        f,
                        AgentFlag::Frozen { .. } | AgentFlag::FreezeRequested { .. }
                    )
                });
                // The hold is released: the next CRL no longer lists them.
                for c in self.certificates.iter_mut().filter(|c| c.on_hold()) {
                    c.revoked = None;
                }
            }
            AgentChange::Flag { flag } => {
                if !self.flags.contains(flag) {
                    self.flags.push(flag.clone());
                }
            }
            AgentChange::KeyAdded { key } => {
                if !self.keys.iter().any(|k| k.key.kid == key.key.kid) {
                    self.keys.push(key.clone());
                }
            }
            AgentChange::KeyRetired { kid, at } => {
                if let Some(k) = self.keys.iter_mut().find(|k| &k.key.kid == kid) {
                    k.status = crate::credential::KeyStatus::Removed;
                }
                // The agent's credential is as old as its newest key.
                self.credential_issued_at = self
                    .keys
                    .iter()
                    .filter(|k| k.status == crate::credential::KeyStatus::Active)
                    .map(|k| k.added_at)
                    .max()
                    .or(Some(*at));
            }
            AgentChange::GrantsSet {
                scopes,
                token_lifetime_secs,
            } => {
                self.scopes = scopes.clone();
                self.token_lifetime_secs = *token_lifetime_secs;
            }
            AgentChange::CertificateAdded { certificate } => {
                if !self
                    .certificates
                    .iter()
                    .any(|c| c.serial == certificate.serial)
                {
                    self.certificates.push(certificate.clone());
                }
            }
            AgentChange::CertificateRevoked { serial, at, reason } => {
                // A revocation is never undone or moved: the first one stands, except a hold,
                // which a final revocation replaces.
                if let Some(c) = self
                    .certificates
                    .iter_mut()
                    .find(|c| &c.serial == serial && !c.revoked_for_good())
                {
                    c.revoked = Some(CertificateRevocation {
                        at: *at,
                        reason: reason.clone(),
                    });
                }
            }
        }
        self.updated_at = now;
    }

    /// How old the current secret is, in whole days.
    pub fn credential_age_days(&self, now: DateTime<Utc>) -> Option<i64> {
        self.credential_issued_at
            .map(|t| (now - t).num_days().max(0))
    }
}

/// Something about an agent that needs a person's attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "flag")]
pub enum AgentFlag {
    /// Its owner left or was suspended; a new owner must be assigned.
    OwnerLost { owner: String, since: DateTime<Utc> },
    /// A freeze was requested (anomaly detection's freeze workflow acts on it).
    FreezeRequested { reason: String, at: DateTime<Utc> },
    /// It was frozen (client deactivated).
    Frozen { reason: String, at: DateTime<Utc> },
    /// Nobody answered its access review; it was kept and flagged.
    ReviewUnanswered { campaign: String, at: DateTime<Utc> },
    /// A detection rule fired on its traffic.
    Anomaly {
        rule: String,
        severity: crate::detection::Severity,
        detail: String,
        at: DateTime<Utc>,
    },
}
