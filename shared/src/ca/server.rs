//! The certificate of Steward's own mTLS listener (`steward serve --mtls-listen`): a TLS server
//! certificate the internal CA issues for the listener's names, so an agent that pins the CA
//! (`GET /ca/certificate`) can verify the server it presents its client certificate to. Its key
//! is made in memory and never stored: every start (and every renewal) makes a new one.

use super::{
    CaError, InternalCa, MAX_LIFETIME_DAYS, asn1_time, new_serial, signing, thumbprint,
    whole_seconds,
};
use chrono::{DateTime, Duration, Utc};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;

/// A server certificate with its private key (PKCS#8 DER). No `Debug` of the key: `Debug`
/// prints the names and the end of validity only.
pub struct ServerCertificate {
    /// The certificate, DER.
    pub certificate_der: Vec<u8>,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The listener's private key, PKCS#8 DER. In memory only.
    pub key_pkcs8_der: Vec<u8>,
    pub not_after: DateTime<Utc>,
    /// base64url SHA-256 of the DER.
    pub x5t_s256: String,
}

impl std::fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("x5t_s256", &self.x5t_s256)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl InternalCa {
    /// A TLS server certificate for `dns_names` and `ips` (subject alternative names), with a
    /// new ECDSA P-256 key, valid from `now` for `lifetime_days` (1 to [`MAX_LIFETIME_DAYS`],
    /// and never past the CA's end): serverAuth only, digitalSignature, not a CA.
    pub fn issue_server_certificate(
        &self,
        dns_names: &[&str],
        ips: &[IpAddr],
        lifetime_days: u32,
        now: DateTime<Utc>,
    ) -> Result<ServerCertificate, CaError> {
        if lifetime_days == 0 {
            return Err(CaError::LifetimeZero);
        }
        if lifetime_days > MAX_LIFETIME_DAYS {
            return Err(CaError::LifetimeTooLong {
                days: lifetime_days,
            });
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(signing)?;
        let not_before = whole_seconds(now);
        let not_after =
            (not_before + Duration::days(i64::from(lifetime_days))).min(self.not_after());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Steward");
        dn.push(
            DnType::CommonName,
            dns_names
                .first()
                .copied()
                .unwrap_or("steward mTLS listener"),
        );
        params.distinguished_name = dn;
        let mut names = Vec::new();
        for name in dns_names {
            names.push(SanType::DnsName((*name).try_into().map_err(
                |e: rcgen::Error| CaError::Signing(format!("`{name}` is not a DNS name: {e}")),
            )?));
        }
        names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.subject_alt_names = names;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&new_serial()));
        params.not_before = asn1_time(not_before)?;
        params.not_after = asn1_time(not_after)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(signing)?;
        Ok(ServerCertificate {
            x5t_s256: thumbprint(cert.der()),
            certificate_der: cert.der().to_vec(),
            certificate_pem: cert.pem(),
            key_pkcs8_der: key.serialize_der(),
            not_after,
        })
    }
}
