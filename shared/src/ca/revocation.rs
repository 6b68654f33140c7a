//! The revoked serials: a value the caller keeps in the store (conditional writes, written in
//! the same step as the revocation's audit record) and hands to [`InternalCa::crl`] and
//! [`InternalCa::verify_chain`]. Not in the vault: the list is not secret, and the vault port
//! has no compare-and-set, so two revocations at once could lose one (docs/adr/0033).
//!
//! [`InternalCa::crl`]: super::InternalCa::crl
//! [`InternalCa::verify_chain`]: super::InternalCa::verify_chain

use super::{CaError, MAX_LIFETIME_DAYS};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a certificate was revoked (RFC 5280 §5.3.1 reason codes that fit an agent's
/// certificate). Only `certificateHold` (a frozen agent's) is ever undone: the registry drops
/// it at the unfreeze, and the next CRL no longer lists the serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
}

impl RevocationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key_compromise",
            Self::AffiliationChanged => "affiliation_changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation_of_operation",
            Self::CertificateHold => "certificate_hold",
            Self::PrivilegeWithdrawn => "privilege_withdrawn",
        }
    }

    pub(super) fn rcgen(self) -> rcgen::RevocationReason {
        match self {
            Self::Unspecified => rcgen::RevocationReason::Unspecified,
            Self::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Self::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            Self::Superseded => rcgen::RevocationReason::Superseded,
            Self::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            Self::CertificateHold => rcgen::RevocationReason::CertificateHold,
            Self::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One revoked serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub at: DateTime<Utc>,
    pub reason: RevocationReason,
}

/// The revoked serials (lowercase hex, no leading zero bytes), each with when and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    #[serde(default)]
    revoked: BTreeMap<String, Revocation>,
}

impl Revocations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes `serial` (hex, as [`IssuedCertificate::serial`]; `:` separators and upper case
    /// accepted). `true` when it is new; revoking again keeps the first time and reason.
    ///
    /// [`IssuedCertificate::serial`]: super::IssuedCertificate::serial
    pub fn revoke(
        &mut self,
        serial: &str,
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<bool, CaError> {
        let serial = normalise_serial(serial)?;
        if self.revoked.contains_key(&serial) {
            return Ok(false);
        }
        self.revoked.insert(serial, Revocation { at: now, reason });
        Ok(true)
    }

    /// The revocation of `serial`, if it was revoked.
    pub fn get(&self, serial: &str) -> Option<&Revocation> {
        normalise_serial(serial)
            .ok()
            .and_then(|s| self.revoked.get(&s))
    }

    /// Every revoked serial with its revocation, in serial order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Revocation)> {
        self.revoked.iter().map(|(s, r)| (s.as_str(), r))
    }

    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// Drops the revocations whose certificates have certainly expired, and returns how many:
    /// every certificate was issued before it was revoked and lives at most
    /// [`MAX_LIFETIME_DAYS`], so one revoked longer ago than that (plus a day of clock
    /// leeway) is past its end, and RFC 5280 §3.3 lets a CRL stop listing it.
    pub fn prune(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.revoked.len();
        self.revoked.retain(|_, r| !expired_for_sure(r, now));
        before - self.revoked.len()
    }

    /// The revocations a CRL made at `now` lists (those [`prune`](Self::prune) would keep).
    pub(super) fn listed(&self, now: DateTime<Utc>) -> impl Iterator<Item = (&str, &Revocation)> {
        self.iter().filter(move |(_, r)| !expired_for_sure(r, now))
    }
}

fn expired_for_sure(r: &Revocation, now: DateTime<Utc>) -> bool {
    r.at + Duration::days(i64::from(MAX_LIFETIME_DAYS) + 1) < now
}

/// A serial number as Steward writes it: lowercase hex of the DER integer's bytes without
/// leading zero bytes (what x509-parser's `raw_serial` gives once its sign byte is dropped).
pub(super) fn normalise_serial(serial: &str) -> Result<String, CaError> {
    let bad = || CaError::Serial {
        serial: serial.chars().take(80).collect(),
    };
    let hex_digits: String = serial.trim().chars().filter(|c| *c != ':').collect();
    let hex_digits = if hex_digits.len() % 2 == 1 {
        format!("0{hex_digits}")
    } else {
        hex_digits
    };
    let bytes = hex::decode(&hex_digits).map_err(|_| bad())?;
    serial_hex(&bytes).ok_or_else(bad)
}

/// `bytes` (a serial's big-endian magnitude, maybe with leading zeros) in Steward's form; `None`
/// for zero or more than 20 significant bytes (RFC 5280 §4.1.2.2).
pub(super) fn serial_hex(bytes: &[u8]) -> Option<String> {
    let start = bytes.iter().position(|b| *b != 0)?;
    let significant = &bytes[start..];
    (significant.len() <= 20).then(|| hex::encode(significant))
}
