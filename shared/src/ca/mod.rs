//! Steward's internal certificate authority for agents that authenticate with a client
//! certificate (RFC 8705 `tls_client_auth`, [`statemachines::credential::CredentialKind`]).
//!
//! - The CA is an ECDSA P-256 key pair and a self-signed certificate, made once and kept in the
//!   vault under [`CA_SECRET`]; [`InternalCa::open`] reuses it, and a creator that loses a race
//!   uses the one stored first.
//! - [`InternalCa::issue`] certifies the public key of an agent's CSR (the private key never
//!   leaves the agent): one URI SAN `spiffe://<trust domain>/agent/<name>`, digitalSignature,
//!   clientAuth only, not a CA, [`CaSettings::lifetime_days`] (30 by default, at most 90).
//! - [`Revocations`] lists revoked serials; the caller keeps it (in the store) and passes it
//!   to [`InternalCa::crl`] (a CRL valid for a day) and [`InternalCa::verify_chain`] (what the
//!   mTLS listener asks of a client certificate).
//!
//! The CA's private key is in the vault and in memory only: no `Debug`, error or return value
//! carries it. Why each choice: docs/adr/0033-internal-ca.md.

mod csr;
mod revocation;
mod server;
// The tests keep the CA in the embedded file vault.
#[cfg(all(test, feature = "embedded"))]
mod tests;

pub use csr::{MAX_RSA_BITS, MIN_RSA_BITS};
pub use revocation::{Revocation, RevocationReason, Revocations};
pub use server::ServerCertificate;

use crate::ports::vault::{Stage, Vault, VaultError, version_id_for};
use crate::secret::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The vault id of the CA's key pair and certificate. Reserved: no agent secret is named so.
pub const CA_SECRET: &str = "steward/ca";
/// The certificate lifetime when the settings name none.
pub const DEFAULT_LIFETIME_DAYS: u32 = 30;
/// The longest certificate lifetime Steward issues; more is refused, never shortened.
pub const MAX_LIFETIME_DAYS: u32 = 90;
/// How long a CRL is valid by default (its `nextUpdate` after `thisUpdate`).
pub const DEFAULT_CRL_LIFETIME_HOURS: u32 = 24;
/// The longest CRL validity accepted: a revocation must reach relying parties within a week.
pub const MAX_CRL_LIFETIME_HOURS: u32 = 7 * 24;
/// The CA certificate's lifetime when the settings name none (it is made once).
pub const DEFAULT_CA_LIFETIME_DAYS: u32 = 3650;
/// Longest agent name certified (the SPIFFE id stays far below its 2048-byte limit).
pub const MAX_AGENT_NAME_CHARS: usize = 128;

/// Every creator writes its new CA record as the version id derived from this key, so two
/// openers that create a CA at once write the same version and the vault keeps the first
/// (docs/adr/0033). A later CA (rotation) would be a new key.
const CA_VERSION_KEY: &str = "steward/ca/v1";

/// What the CA needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaSettings {
    /// The SPIFFE trust domain agents' ids are in (`spiffe://<trust_domain>/agent/<name>`):
    /// lowercase letters, digits, `.`, `-` and `_`, such as `steward.example.com`.
    pub trust_domain: String,
    /// Lifetime of an agent's certificate, 1 to [`MAX_LIFETIME_DAYS`].
    #[serde(default = "default_lifetime_days")]
    pub lifetime_days: u32,
    /// How long a CRL is valid, 1 to [`MAX_CRL_LIFETIME_HOURS`].
    #[serde(default = "default_crl_lifetime_hours")]
    pub crl_lifetime_hours: u32,
    /// Lifetime of the CA certificate when it is created, 365 to 7300 days. An existing CA
    /// keeps its own.
    #[serde(default = "default_ca_lifetime_days")]
    pub ca_lifetime_days: u32,
}

fn default_lifetime_days() -> u32 {
    DEFAULT_LIFETIME_DAYS
}
fn default_crl_lifetime_hours() -> u32 {
    DEFAULT_CRL_LIFETIME_HOURS
}
fn default_ca_lifetime_days() -> u32 {
    DEFAULT_CA_LIFETIME_DAYS
}

impl CaSettings {
    /// Settings with the defaults: 30-day certificates, day-long CRLs, a ten-year CA.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            lifetime_days: DEFAULT_LIFETIME_DAYS,
            crl_lifetime_hours: DEFAULT_CRL_LIFETIME_HOURS,
            ca_lifetime_days: DEFAULT_CA_LIFETIME_DAYS,
        }
    }

    /// Refuses a trust domain that is not one, or a lifetime out of its range.
    pub fn check(&self) -> Result<(), CaError> {
        check_trust_domain(&self.trust_domain)?;
        check_lifetime(self.lifetime_days)?;
        if !(1..=MAX_CRL_LIFETIME_HOURS).contains(&self.crl_lifetime_hours) {
            return Err(CaError::CrlLifetime {
                hours: self.crl_lifetime_hours,
            });
        }
        if !(365..=7300).contains(&self.ca_lifetime_days) {
            return Err(CaError::CaLifetime {
                days: self.ca_lifetime_days,
            });
        }
        Ok(())
    }
}

/// Why the CA refused. Each message says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "`{0}` is not a SPIFFE trust domain: use 1 to 255 lowercase letters, digits, `.`, `-` and `_`, such as `steward.example.com`"
    )]
    TrustDomain(String),
    #[error(
        "a certificate lifetime of {days} days is above the maximum of {MAX_LIFETIME_DAYS}; ask for {MAX_LIFETIME_DAYS} days or fewer (short lifetimes bound what a lost key can do)"
    )]
    LifetimeTooLong { days: u32 },
    #[error(
        "a certificate lifetime of 0 days is no lifetime; ask for 1 to {MAX_LIFETIME_DAYS} days"
    )]
    LifetimeZero,
    #[error(
        "a CRL lifetime of {hours} hours is out of range; use 1 to {MAX_CRL_LIFETIME_HOURS} hours (24 by default)"
    )]
    CrlLifetime { hours: u32 },
    #[error(
        "a CA certificate lifetime of {days} days is out of range; use 365 to 7300 days (3650 by default)"
    )]
    CaLifetime { days: u32 },
    #[error(
        "`{0}` is not an agent name a certificate can carry: use 1 to {MAX_AGENT_NAME_CHARS} lowercase letters and digits in words joined by single '-', such as `billing-agent-prod`"
    )]
    AgentName(String),
    #[error(
        "the certificate signing request is not PEM (found {found}); send one `-----BEGIN CERTIFICATE REQUEST-----` block, as `openssl req -new` writes"
    )]
    CsrNotPem { found: String },
    #[error(
        "the certificate signing request cannot be read as PKCS#10 ({0}); create it again with the agent's key"
    )]
    CsrMalformed(String),
    #[error(
        "the certificate signing request's signature does not verify with the public key it carries: it was altered or signed by another key; create it again with the agent's key"
    )]
    CsrSignature,
    #[error(
        "the certificate signing request is signed with {algorithm}, which Steward does not accept; sign it with SHA-256 or stronger (ECDSA, Ed25519, RSA PKCS#1 v1.5 or PSS) using the key it carries"
    )]
    CsrSignatureAlgorithm { algorithm: String },
    #[error(
        "the certificate signing request's RSA key has {bits} bits; Steward certifies RSA keys of at least {MIN_RSA_BITS} bits: make a new key (ECDSA P-256 is preferred)"
    )]
    RsaKeyTooSmall { bits: usize },
    #[error(
        "the certificate signing request's RSA key has {bits} bits, more than the {MAX_RSA_BITS} TLS verifiers accept; make a key of 2048 to 4096 bits (or ECDSA P-256)"
    )]
    RsaKeyTooLarge { bits: usize },
    #[error(
        "the certificate signing request's elliptic-curve key is on {curve}; Steward certifies P-256 (preferred) and P-384 keys: make a new key on one of them"
    )]
    UnsupportedCurve { curve: String },
    #[error(
        "the certificate signing request's key type ({key_type}) is not one Steward certifies; make an ECDSA P-256 (preferred), P-384, Ed25519 or RSA (2048 bits or more) key"
    )]
    UnknownKeyType { key_type: String },
    #[error(
        "the certificate signing request's public key is not in its standard encoding, so a certificate could not carry it unchanged; create the request again with a standard tool (openssl, rcgen)"
    )]
    CsrKeyEncoding,
    #[error(
        "the certificate signing request asks for `{name}`, another identity Steward trusts (this agent's is `{own}`); make the request again without that name: Steward certifies only the agent's own SPIFFE id"
    )]
    CsrClaimsOther { name: String, own: String },
    #[error(
        "the certificate is not PEM (found {found}); send one `-----BEGIN CERTIFICATE-----` block"
    )]
    CertificateNotPem { found: String },
    #[error("the certificate cannot be read as X.509 ({0}); send the certificate Steward issued")]
    CertificateMalformed(String),
    #[error(
        "the certificate was not issued by Steward's CA for trust domain {trust_domain}; present the certificate Steward issued from the agent's CSR"
    )]
    NotIssuedHere { trust_domain: String },
    #[error(
        "the certificate is not an agent's client certificate: {0}; present the certificate Steward issued"
    )]
    NotAnAgentCertificate(String),
    #[error("the certificate expired at {not_after}; ask Steward for a new one from a new CSR")]
    Expired { not_after: DateTime<Utc> },
    #[error("the certificate is valid only from {not_before}; check this machine's clock, or wait")]
    NotYetValid { not_before: DateTime<Utc> },
    #[error(
        "the certificate with serial {serial} was revoked at {at} ({reason}); ask Steward for a new one from a new CSR"
    )]
    Revoked {
        serial: String,
        at: DateTime<Utc>,
        reason: RevocationReason,
    },
    #[error(
        "`{serial}` is not a certificate serial number: give 1 to 20 bytes in hex, as the issued certificate's `serial`"
    )]
    Serial { serial: String },
    #[error(
        "the CA certificate expires at {ca_not_after}, before a certificate issued now would ({not_after}); issue a shorter one or replace the CA"
    )]
    CaExpiresFirst {
        ca_not_after: DateTime<Utc>,
        not_after: DateTime<Utc>,
    },
    #[error(
        "the CA in the vault ({CA_SECRET}) is for trust domain `{stored}`, not `{configured}`; set the trust domain back, or move the vault entry aside to make a new CA (every agent certificate then has to be issued again)"
    )]
    TrustDomainMismatch { stored: String, configured: String },
    #[error(
        "the CA in the vault ({CA_SECRET}) is unreadable: {0}; restore the vault entry from a backup, or move it aside to make a new CA (every agent certificate then has to be issued again)"
    )]
    StoredCaUnreadable(&'static str),
    #[error(
        "the vault accepted the new CA but returns nothing under {CA_SECRET}; check the vault and open the CA again"
    )]
    CaNotStored,
    #[error("the CA could not be read from or kept in the vault: {0}")]
    Vault(#[from] VaultError),
    #[error("the CA could not sign: {0}")]
    Signing(String),
}

/// A certificate issued to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub pem: String,
    /// Its serial number in lowercase hex (what [`Revocations::revoke`] takes).
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// base64url SHA-256 of the DER: the token's `cnf.x5t#S256` (RFC 8705 §3.1).
    pub x5t_s256: String,
    /// `spiffe://<trust domain>/agent/<name>`, the certificate's only subject alternative name.
    pub spiffe_id: String,
}

/// A client certificate [`InternalCa::verify_chain`] accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedClient {
    pub spiffe_id: String,
    /// The agent name the SPIFFE id ends with.
    pub agent_name: String,
    /// base64url SHA-256 of the DER, to compare with a token's `cnf.x5t#S256`.
    pub x5t_s256: String,
    pub serial: String,
    pub not_after: DateTime<Utc>,
}

/// A CRL signed by the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    pub der: Vec<u8>,
    pub pem: String,
    pub this_update: DateTime<Utc>,
    pub next_update: DateTime<Utc>,
    /// The CRL number: milliseconds since the epoch at `this_update`, so it only grows.
    pub number: u64,
    /// How many serials it lists.
    pub revoked: usize,
}

/// The CA record in the vault. No `Debug`: it holds the private key.
#[derive(Serialize, Deserialize)]
struct StoredCa {
    trust_domain: String,
    /// The CA certificate, PEM.
    certificate: String,
    /// The CA's PKCS#8 private key, PEM.
    key: String,
}

/// The internal CA, opened from the vault. Its `Debug` shows the CA certificate's facts, never
/// the key.
pub struct InternalCa {
    settings: CaSettings,
    issuer: Issuer<'static, KeyPair>,
    /// The key identifier the CA certificate names, for the CRL's authority key identifier.
    key_id: KeyIdMethod,
    certificate_pem: String,
    certificate_der: Vec<u8>,
    not_after: DateTime<Utc>,
}

impl std::fmt::Debug for InternalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalCa")
            .field("trust_domain", &self.settings.trust_domain)
            .field("lifetime_days", &self.settings.lifetime_days)
            .field("ca_x5t_s256", &thumbprint(&self.certificate_der))
            .field("ca_not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl InternalCa {
    /// The CA kept in `vault` under [`CA_SECRET`], made now if there is none. Two openers at
    /// once both end up with the CA the vault kept: each writes its new CA as the same version,
    /// which the vault stores once, then reads back and uses what is stored (on the file vault
    /// within one process; on Secrets Manager and the envelope vault across processes too).
    pub async fn open(
        vault: &dyn Vault,
        settings: CaSettings,
        now: DateTime<Utc>,
    ) -> Result<Self, CaError> {
        settings.check()?;
        if let Some(ca) = Self::load(vault, &settings).await? {
            return Ok(ca);
        }
        let made = Self::create(&settings, now)?;
        let json = serde_json::to_string(&made)
            .map_err(|_| CaError::StoredCaUnreadable("the new CA record could not be written"))?;
        drop(made);
        let put = vault
            .put(
                CA_SECRET,
                &version_id_for(CA_VERSION_KEY),
                &Secret::new(json),
                Stage::Current,
            )
            .await;
        // Whether this write or another opener's came first, the stored CA is the CA.
        match Self::load(vault, &settings).await? {
            Some(ca) => {
                if let Err(e) = put {
                    tracing::info!(error = %e, "another process stored the CA first; using it");
                }
                Ok(ca)
            }
            None => Err(put
                .err()
                .map(CaError::Vault)
                .unwrap_or(CaError::CaNotStored)),
        }
    }

    async fn load(vault: &dyn Vault, settings: &CaSettings) -> Result<Option<Self>, CaError> {
        let Some((_, value)) = vault.get(CA_SECRET, Stage::Current).await? else {
            return Ok(None);
        };
        // serde_json's messages may quote the value: none of them is passed on.
        let stored: StoredCa = serde_json::from_str(value.expose())
            .map_err(|_| CaError::StoredCaUnreadable("it is not a CA record"))?;
        if stored.trust_domain != settings.trust_domain {
            return Err(CaError::TrustDomainMismatch {
                stored: stored.trust_domain,
                configured: settings.trust_domain.clone(),
            });
        }
        Self::from_stored(stored, settings.clone()).map(Some)
    }

    fn from_stored(stored: StoredCa, settings: CaSettings) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(&stored.key)
            .map_err(|_| CaError::StoredCaUnreadable("its private key is not a PEM key"))?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::StoredCaUnreadable(
                "its private key is not an ECDSA P-256 key",
            ));
        }
        let (_, pem) = x509_parser::pem::parse_x509_pem(stored.certificate.as_bytes())
            .map_err(|_| CaError::StoredCaUnreadable("its certificate is not PEM"))?;
        let der = pem.contents;
        let (not_after, key_id) = {
            let (_, cert) = X509Certificate::from_der(&der)
                .map_err(|_| CaError::StoredCaUnreadable("its certificate is not X.509"))?;
            if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key) {
                return Err(CaError::StoredCaUnreadable(
                    "its certificate is not for its private key",
                ));
            }
            if !cert.is_ca() {
                return Err(CaError::StoredCaUnreadable(
                    "its certificate is not a CA certificate",
                ));
            }
            let ski = cert
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                    _ => None,
                });
            (
                timestamp(cert.validity().not_after.timestamp()),
                ski.map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified),
            )
        };
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
            .map_err(|_| CaError::StoredCaUnreadable("its certificate cannot sign"))?;
        Ok(Self {
            settings,
            issuer,
            key_id,
            certificate_pem: stored.certificate,
            certificate_der: der,
            not_after,
        })
    }

    /// A new CA: a P-256 key and a self-signed certificate that may sign end-entity
    /// certificates and CRLs only (path length 0), naming the trust domain.
    fn create(settings: &CaSettings, now: DateTime<Utc>) -> Result<StoredCa, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(signing)?;
        let td = &settings.trust_domain;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Steward");
        dn.push(DnType::CommonName, format!("Steward agent CA {td}"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![uri_san(&format!("spiffe://{td}"))?];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(SerialNumber::from_slice(&new_serial()));
        let not_before = whole_seconds(now);
        params.not_before = asn1_time(not_before)?;
        params.not_after =
            asn1_time(not_before + Duration::days(i64::from(settings.ca_lifetime_days)))?;
        let cert = params.self_signed(&key).map_err(signing)?;
        Ok(StoredCa {
            trust_domain: td.clone(),
            certificate: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    pub fn settings(&self) -> &CaSettings {
        &self.settings
    }

    /// The CA certificate, PEM: the trust anchor the mTLS listener and relying parties pin.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }

    /// A certificate for `agent_name` from its CSR, valid from `now` for the settings'
    /// lifetime.
    pub fn issue(
        &self,
        csr_pem: &str,
        agent_name: &str,
        now: DateTime<Utc>,
    ) -> Result<IssuedCertificate, CaError> {
        self.issue_for_days(csr_pem, agent_name, self.settings.lifetime_days, now)
    }

    /// A certificate for `agent_name` from its CSR, valid from `now` for `lifetime_days`
    /// (1 to [`MAX_LIFETIME_DAYS`]; more is refused). Only the CSR's public key is used, once
    /// its self-signature verifies: its subject, names and requested extensions are ignored.
    pub fn issue_for_days(
        &self,
        csr_pem: &str,
        agent_name: &str,
        lifetime_days: u32,
        now: DateTime<Utc>,
    ) -> Result<IssuedCertificate, CaError> {
        check_lifetime(lifetime_days)?;
        check_agent_name(agent_name)?;
        let key = csr::read(csr_pem)?;
        let not_before = whole_seconds(now);
        let not_after = not_before + Duration::days(i64::from(lifetime_days));
        if not_after > self.not_after {
            return Err(CaError::CaExpiresFirst {
                ca_not_after: self.not_after,
                not_after,
            });
        }
        let spiffe_id = spiffe_id(&self.settings.trust_domain, agent_name);
        let serial = new_serial();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent_name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![uri_san(&spiffe_id)?];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = asn1_time(not_before)?;
        params.not_after = asn1_time(not_after)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(signing)?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            serial: hex::encode(serial),
            not_before,
            not_after,
            x5t_s256: thumbprint(cert.der()),
            spiffe_id,
        })
    }

    /// A CRL signed by the CA listing `revocations` (but those [`Revocations::prune`] would
    /// drop), valid from `now` for the settings' CRL lifetime.
    pub fn crl(&self, revocations: &Revocations, now: DateTime<Utc>) -> Result<Crl, CaError> {
        let this_update = whole_seconds(now);
        let next_update =
            this_update + Duration::hours(i64::from(self.settings.crl_lifetime_hours));
        let number = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let mut revoked_certs = Vec::new();
        for (serial, r) in revocations.listed(now) {
            // Serials are kept normalised: they decode.
            let bytes = hex::decode(serial).map_err(|_| CaError::Serial {
                serial: serial.into(),
            })?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: asn1_time(whole_seconds(r.at))?,
                reason_code: Some(r.reason.rcgen()),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: asn1_time(this_update)?,
            next_update: asn1_time(next_update)?,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.key_id.clone(),
        };
        let revoked = params.revoked_certs.len();
        let crl = params.signed_by(&self.issuer).map_err(signing)?;
        Ok(Crl {
            der: crl.der().to_vec(),
            pem: crl.pem().map_err(signing)?,
            this_update,
            next_update,
            number,
            revoked,
        })
    }

    /// Whether `cert_pem` is an agent certificate this CA issued, valid at `now` and not in
    /// `revocations`: its SPIFFE id and thumbprint if so.
    pub fn verify_chain(
        &self,
        cert_pem: &str,
        revocations: &Revocations,
        now: DateTime<Utc>,
    ) -> Result<VerifiedClient, CaError> {
        let (rest, pem) = x509_parser::pem::parse_x509_pem(cert_pem.trim_start().as_bytes())
            .map_err(|_| CaError::CertificateNotPem {
                found: "no PEM block".into(),
            })?;
        if pem.label != "CERTIFICATE" {
            return Err(CaError::CertificateNotPem {
                found: format!(
                    "a `{}` PEM block",
                    pem.label.chars().take(40).collect::<String>()
                ),
            });
        }
        if !rest.iter().all(u8::is_ascii_whitespace) {
            return Err(CaError::CertificateMalformed(
                "text follows the PEM block; send the agent's certificate alone".into(),
            ));
        }
        self.verify_der(&pem.contents, revocations, now)
    }

    /// [`verify_chain`](Self::verify_chain) for a DER certificate (what a TLS handshake
    /// gives).
    pub fn verify_der(
        &self,
        der: &[u8],
        revocations: &Revocations,
        now: DateTime<Utc>,
    ) -> Result<VerifiedClient, CaError> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| CaError::CertificateMalformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CaError::CertificateMalformed(
                "bytes follow the certificate's DER".into(),
            ));
        }
        let (_, ca) = X509Certificate::from_der(&self.certificate_der)
            .map_err(|_| CaError::StoredCaUnreadable("its certificate is not X.509"))?;
        let not_here = || CaError::NotIssuedHere {
            trust_domain: self.settings.trust_domain.clone(),
        };
        if cert.issuer().as_raw() != ca.subject().as_raw() {
            return Err(not_here());
        }
        cert.verify_signature(Some(ca.public_key()))
            .map_err(|_| not_here())?;
        let not_agent = |why: &str| CaError::NotAnAgentCertificate(why.into());
        if cert.is_ca() {
            return Err(not_agent("it is a CA certificate"));
        }
        let client_auth =
            matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
        if !client_auth {
            return Err(not_agent("it is not for TLS client authentication"));
        }
        let uris: Vec<&str> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let [spiffe_id] = uris.as_slice() else {
            return Err(not_agent("it does not carry exactly one SPIFFE id"));
        };
        let prefix = format!("spiffe://{}/agent/", self.settings.trust_domain);
        let agent_name = spiffe_id
            .strip_prefix(&prefix)
            .filter(|name| check_agent_name(name).is_ok())
            .ok_or_else(|| not_agent("its SPIFFE id is not an agent's in this trust domain"))?;
        let not_before = timestamp(cert.validity().not_before.timestamp());
        let not_after = timestamp(cert.validity().not_after.timestamp());
        if now < not_before {
            return Err(CaError::NotYetValid { not_before });
        }
        if now > not_after {
            return Err(CaError::Expired { not_after });
        }
        let serial = revocation::serial_hex(cert.raw_serial())
            .ok_or_else(|| not_agent("its serial number is zero or too long"))?;
        if let Some(r) = revocations.get(&serial) {
            return Err(CaError::Revoked {
                serial,
                at: r.at,
                reason: r.reason,
            });
        }
        Ok(VerifiedClient {
            spiffe_id: (*spiffe_id).to_string(),
            agent_name: agent_name.to_string(),
            x5t_s256: thumbprint(der),
            serial,
            not_after,
        })
    }
}

/// Checks an agent's CSR before it is taken into a request: it reads and verifies as
/// [`InternalCa::issue`] will read it (PEM, PKCS#10, key type and size, SHA-2 self-signature:
/// the proof that the requester holds the key), and the names it asks for claim nothing else
/// Steward trusts: a URI in the trust domain must be the agent's own SPIFFE id (the CA ignores
/// every name a CSR asks for, so a request naming another agent or the CA itself is a mistake
/// or an attempt, and is refused rather than silently certified as this agent).
pub fn check_csr(csr_pem: &str, trust_domain: &str, agent_name: &str) -> Result<(), CaError> {
    check_trust_domain(trust_domain)?;
    check_agent_name(agent_name)?;
    csr::read(csr_pem)?;
    let own = spiffe_id(trust_domain, agent_name);
    let domain = format!("spiffe://{trust_domain}");
    for uri in csr::requested_uris(csr_pem) {
        let in_domain = uri
            .get(..domain.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(&domain))
            && matches!(uri.as_bytes().get(domain.len()), None | Some(b'/'));
        if in_domain && uri != own {
            return Err(CaError::CsrClaimsOther {
                name: uri.chars().take(200).collect(),
                own,
            });
        }
    }
    Ok(())
}

/// `spiffe://<trust domain>/agent/<name>`.
pub fn spiffe_id(trust_domain: &str, agent_name: &str) -> String {
    format!("spiffe://{trust_domain}/agent/{agent_name}")
}

/// base64url (no padding) SHA-256 of a certificate's DER: RFC 8705's `x5t#S256`.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_` (SPIFFE ID §2.1).
fn check_trust_domain(td: &str) -> Result<(), CaError> {
    let ok = (1..=255).contains(&td.len())
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
        && !td.starts_with('.')
        && !td.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(CaError::TrustDomain(td.chars().take(80).collect()))
    }
}

fn check_lifetime(days: u32) -> Result<(), CaError> {
    match days {
        0 => Err(CaError::LifetimeZero),
        d if d > MAX_LIFETIME_DAYS => Err(CaError::LifetimeTooLong { days: d }),
        _ => Ok(()),
    }
}

/// Agent names as the naming policy makes them: lowercase words of letters and digits joined
/// by single '-' (so always one SPIFFE path segment).
fn check_agent_name(name: &str) -> Result<(), CaError> {
    let ok = (1..=MAX_AGENT_NAME_CHARS).contains(&name.len())
        && name.split('-').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(CaError::AgentName(name.chars().take(80).collect()))
    }
}

fn uri_san(uri: &str) -> Result<SanType, CaError> {
    // Checked names are ASCII, which is all Ia5String refuses.
    Ok(SanType::URI(uri.try_into().map_err(signing)?))
}

/// 128 random bits, positive and without a leading zero byte, so the hex is the DER's.
fn new_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    serial[0] = (serial[0] & 0x7f).max(1);
    serial
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    timestamp(t.timestamp())
}

fn timestamp(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

fn asn1_time(t: DateTime<Utc>) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|e| CaError::Signing(format!("time {t} out of range: {e}")))
}

fn signing(e: rcgen::Error) -> CaError {
    // rcgen's errors name what failed, never key material.
    CaError::Signing(e.to_string())
}
