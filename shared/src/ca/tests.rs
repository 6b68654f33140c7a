//! The CA with real keys: agents' CSRs made by rcgen (and by openssl, in `testdata/`, for the
//! key types rcgen cannot make on ring), certificates and CRLs read back with x509-parser.

use super::*;
use crate::embedded::vault::FileVault;
use crate::ports::vault::VersionInfo;
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use x509_parser::revocation_list::CertificateRevocationList;

const TD: &str = "steward.example.com";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

async fn open_in(dir: &std::path::Path) -> (InternalCa, FileVault) {
    let vault = FileVault::open(dir).unwrap();
    let ca = InternalCa::open(&vault, CaSettings::new(TD), now())
        .await
        .unwrap();
    (ca, vault)
}

/// An agent's CSR that asks for everything it should not get: a DNS name, a SPIFFE id of
/// another trust domain, server authentication and a CA's basic constraints.
fn greedy_csr(key: &KeyPair) -> String {
    let mut params = CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://elsewhere.example/agent/root".try_into().unwrap(),
    ));
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
        .distinguished_name
        .push(DnType::CommonName, "agent-aaaa");
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn agent_csr() -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    greedy_csr(&key)
}

fn der_of(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn the_certificate_names_the_agent_and_not_what_the_csr_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _vault) = open_in(dir.path()).await;
    let issued = ca.issue(&agent_csr(), "billing-agent-prod", now()).unwrap();
    assert_eq!(
        issued.spiffe_id,
        "spiffe://steward.example.com/agent/billing-agent-prod"
    );

    let der = der_of(&issued.pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(names[0], GeneralName::URI(&issued.spiffe_id));
    assert_eq!(
        cert.subject().to_string(),
        "CN=billing-agent-prod",
        "the CSR's subject is not copied"
    );
    assert!(!cert.is_ca());
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert!(!ku.key_cert_sign() && !ku.crl_sign() && !ku.key_encipherment());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth);
    assert!(!eku.server_auth && !eku.any && eku.other.is_empty());
    let ca_der = der_of(ca.certificate_pem());
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());

    assert_eq!(issued.serial, hex::encode(cert.raw_serial()));
    assert_eq!(issued.serial.len(), 32);
    assert_eq!(issued.x5t_s256, thumbprint(&der));
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&issued.x5t_s256).unwrap(),
        Sha256::digest(&der).to_vec()
    );

    let verified = ca
        .verify_chain(&issued.pem, &Revocations::new(), now())
        .unwrap();
    assert_eq!(verified.spiffe_id, issued.spiffe_id);
    assert_eq!(verified.agent_name, "billing-agent-prod");
    assert_eq!(verified.x5t_s256, issued.x5t_s256);
    assert_eq!(verified.serial, issued.serial);
    assert_eq!(verified.not_after, issued.not_after);
}

#[tokio::test]
async fn the_lifetime_is_30_days_by_default_and_more_than_90_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, vault) = open_in(dir.path()).await;
    let csr = agent_csr();
    let issued = ca.issue(&csr, "agent-one", now()).unwrap();
    assert_eq!(issued.not_before, now());
    assert_eq!(issued.not_after - issued.not_before, Duration::days(30));
    let cert_der = der_of(&issued.pem);
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    assert_eq!(cert.validity().not_before.timestamp(), now().timestamp());
    assert_eq!(
        cert.validity().not_after.timestamp(),
        (now() + Duration::days(30)).timestamp()
    );

    let err = ca.issue_for_days(&csr, "agent-one", 91, now()).unwrap_err();
    assert!(
        matches!(err, CaError::LifetimeTooLong { days: 91 }),
        "{err}"
    );
    assert!(err.to_string().contains("maximum of 90"), "{err}");
    assert!(matches!(
        ca.issue_for_days(&csr, "agent-one", 0, now()),
        Err(CaError::LifetimeZero)
    ));
    let longest = ca.issue_for_days(&csr, "agent-one", 90, now()).unwrap();
    assert_eq!(longest.not_after - longest.not_before, Duration::days(90));

    // Settings above the maximum are refused, not shortened.
    let mut settings = CaSettings::new(TD);
    settings.lifetime_days = 91;
    let err = InternalCa::open(&vault, settings, now()).await.unwrap_err();
    assert!(
        matches!(err, CaError::LifetimeTooLong { days: 91 }),
        "{err}"
    );
    let mut settings = CaSettings::new(TD);
    settings.lifetime_days = 7;
    let short = InternalCa::open(&vault, settings, now()).await.unwrap();
    let issued = short.issue(&csr, "agent-one", now()).unwrap();
    assert_eq!(issued.not_after - issued.not_before, Duration::days(7));
}

#[test]
fn settings_default_from_toml_and_refuse_what_is_out_of_range() {
    let settings: CaSettings = toml::from_str("trust_domain = \"steward.example.com\"").unwrap();
    assert_eq!(settings, CaSettings::new(TD));
    settings.check().unwrap();
    for td in [
        "",
        "Steward.example.com",
        "spiffe://x",
        "a/b",
        ".x",
        "x.",
        "a b",
    ] {
        let err = CaSettings::new(td).check().unwrap_err();
        assert!(matches!(err, CaError::TrustDomain(_)), "{td}: {err}");
    }
    let mut s = CaSettings::new(TD);
    s.crl_lifetime_hours = 0;
    assert!(matches!(s.check(), Err(CaError::CrlLifetime { hours: 0 })));
    let mut s = CaSettings::new(TD);
    s.ca_lifetime_days = 30;
    assert!(matches!(s.check(), Err(CaError::CaLifetime { days: 30 })));
}

#[tokio::test]
async fn a_tampered_csr_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _vault) = open_in(dir.path()).await;
    let csr = agent_csr();
    let mut der = der_of(&csr);
    let at = der
        .windows(10)
        .position(|w| w == b"agent-aaaa")
        .expect("the subject is in the DER");
    der[at..at + 10].copy_from_slice(b"agent-bbbb");
    let err = ca
        .issue(&to_pem("CERTIFICATE REQUEST", &der), "agent-one", now())
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignature), "{err}");
    assert!(err.to_string().contains("altered"), "{err}");

    // A CSR whose key was swapped for another agent's: the signature is not that key's.
    let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mine = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut der = der_of(&greedy_csr(&mine));
    let (mine_raw, other_raw) = (mine.public_key_raw(), other.public_key_raw());
    let at = der
        .windows(mine_raw.len())
        .position(|w| w == mine_raw)
        .unwrap();
    der[at..at + other_raw.len()].copy_from_slice(other_raw);
    let err = ca
        .issue(&to_pem("CERTIFICATE REQUEST", &der), "agent-one", now())
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignature), "{err}");

    let err = ca.issue("hello", "agent-one", now()).unwrap_err();
    assert!(matches!(err, CaError::CsrNotPem { .. }), "{err}");
    let err = ca
        .issue(ca.certificate_pem(), "agent-one", now())
        .unwrap_err();
    assert!(matches!(err, CaError::CsrNotPem { .. }), "{err}");
    assert!(err.to_string().contains("`CERTIFICATE` PEM block"), "{err}");
    let err = ca
        .issue(
            &to_pem("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x00"),
            "agent-one",
            now(),
        )
        .unwrap_err();
    assert!(matches!(err, CaError::CsrMalformed(_)), "{err}");
}

#[tokio::test]
async fn weak_or_unknown_keys_are_refused_saying_what_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _vault) = open_in(dir.path()).await;
    let issue = |csr: &str| ca.issue(csr, "agent-one", now());

    let err = issue(include_str!("testdata/rsa1024.csr.pem")).unwrap_err();
    assert!(
        matches!(err, CaError::RsaKeyTooSmall { bits: 1024 }),
        "{err}"
    );
    assert!(err.to_string().contains("at least 2048 bits"), "{err}");

    let err = issue(include_str!("testdata/p521.csr.pem")).unwrap_err();
    assert!(matches!(err, CaError::UnsupportedCurve { .. }), "{err}");
    assert!(err.to_string().contains("P-521"), "{err}");

    let err = issue(include_str!("testdata/ed448.csr.pem")).unwrap_err();
    assert!(matches!(err, CaError::UnknownKeyType { .. }), "{err}");
    assert!(err.to_string().contains("Ed448"), "{err}");
    assert!(err.to_string().contains("P-256"), "{err}");

    let err = issue(include_str!("testdata/rsa2048-sha1.csr.pem")).unwrap_err();
    assert!(
        matches!(err, CaError::CsrSignatureAlgorithm { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("SHA-1"), "{err}");

    // RSA 2048 is certified, with the key unchanged and the requested names dropped.
    let csr = include_str!("testdata/rsa2048.csr.pem");
    let issued = issue(csr).unwrap();
    let cert_der = der_of(&issued.pem);
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    let csr_der = der_of(csr);
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der).unwrap();
    assert_eq!(
        cert.public_key().raw,
        req.certification_request_info.subject_pki.raw
    );
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(names, &vec![GeneralName::URI(&issued.spiffe_id)]);

    // Ed25519 and P-384 keys made by rcgen are certified too.
    for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P384_SHA384] {
        let key = KeyPair::generate_for(alg).unwrap();
        let issued = issue(&greedy_csr(&key)).unwrap();
        ca.verify_chain(&issued.pem, &Revocations::new(), now())
            .unwrap();
    }
}

#[tokio::test]
async fn agent_names_outside_stewards_charset_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _vault) = open_in(dir.path()).await;
    let csr = agent_csr();
    for name in [
        "",
        "Billing",
        "billing_agent",
        "billing.agent",
        "../admin",
        "a/b",
        "-agent",
        "agent-",
        "agent--one",
        "agent one",
        "agént",
        &"a".repeat(129),
    ] {
        let err = ca.issue(&csr, name, now()).unwrap_err();
        assert!(matches!(err, CaError::AgentName(_)), "{name}: {err}");
    }
    ca.issue(&csr, "a", now()).unwrap();
    ca.issue(&csr, "agent-2-prod", now()).unwrap();
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_verify_chain() {
    let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, _vault) = open_in(dir.path()).await;
    // Same trust domain, same subject name: only the key tells them apart.
    let (other, _other_vault) = open_in(other_dir.path()).await;
    let csr = agent_csr();
    let foreign = other.issue(&csr, "agent-one", now()).unwrap();
    let err = ca
        .verify_chain(&foreign.pem, &Revocations::new(), now())
        .unwrap_err();
    assert!(matches!(err, CaError::NotIssuedHere { .. }), "{err}");
    // A self-signed certificate claiming the agent's SPIFFE id.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(spiffe_id(TD, "agent-one").try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let forged = params.self_signed(&key).unwrap().pem();
    let err = ca
        .verify_chain(&forged, &Revocations::new(), now())
        .unwrap_err();
    assert!(matches!(err, CaError::NotIssuedHere { .. }), "{err}");
    // The CA's own certificate is signed by the CA but is not an agent's.
    let err = ca
        .verify_chain(ca.certificate_pem(), &Revocations::new(), now())
        .unwrap_err();
    assert!(matches!(err, CaError::NotAnAgentCertificate(_)), "{err}");
    // Ours passes, and not outside its validity.
    let ours = ca.issue(&csr, "agent-one", now()).unwrap();
    ca.verify_chain(&ours.pem, &Revocations::new(), now())
        .unwrap();
    let err = ca
        .verify_chain(
            &ours.pem,
            &Revocations::new(),
            ours.not_after + Duration::seconds(1),
        )
        .unwrap_err();
    assert!(matches!(err, CaError::Expired { .. }), "{err}");
    let err = ca
        .verify_chain(&ours.pem, &Revocations::new(), now() - Duration::seconds(1))
        .unwrap_err();
    assert!(matches!(err, CaError::NotYetValid { .. }), "{err}");
    assert!(matches!(
        ca.verify_chain("nothing", &Revocations::new(), now()),
        Err(CaError::CertificateNotPem { .. })
    ));
}

#[tokio::test]
async fn a_revoked_serial_is_in_the_crl_and_verify_chain_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _vault) = open_in(dir.path()).await;
    let csr = agent_csr();
    let revoked = ca.issue(&csr, "agent-one", now()).unwrap();
    let kept = ca.issue(&csr, "agent-two", now()).unwrap();
    let mut revocations = Revocations::new();
    let at = now() + Duration::hours(1);
    assert!(
        revocations
            .revoke(&revoked.serial, RevocationReason::KeyCompromise, at)
            .unwrap()
    );
    // Again, in another spelling: the first revocation stays.
    let colons = revoked
        .serial
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        !revocations
            .revoke(
                &colons,
                RevocationReason::Superseded,
                at + Duration::hours(1)
            )
            .unwrap()
    );
    assert_eq!(revocations.len(), 1);
    assert!(matches!(
        revocations.revoke("zz", RevocationReason::Unspecified, at),
        Err(CaError::Serial { .. })
    ));

    let crl_at = now() + Duration::hours(2);
    let crl = ca.crl(&revocations, crl_at).unwrap();
    assert_eq!(crl.next_update - crl.this_update, Duration::days(1));
    assert_eq!(crl.revoked, 1);
    assert_eq!(der_of(&crl.pem), crl.der);
    let (rest, parsed) = CertificateRevocationList::from_der(&crl.der).unwrap();
    assert!(rest.is_empty());
    let ca_der = der_of(ca.certificate_pem());
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    parsed.verify_signature(ca_cert.public_key()).unwrap();
    assert_eq!(parsed.issuer().as_raw(), ca_cert.subject().as_raw());
    assert_eq!(parsed.last_update().timestamp(), crl_at.timestamp());
    assert_eq!(
        parsed.next_update().unwrap().timestamp(),
        (crl_at + Duration::days(1)).timestamp()
    );
    assert_eq!(
        parsed.crl_number().unwrap().to_string(),
        crl.number.to_string()
    );
    let listed: Vec<_> = parsed.iter_revoked_certificates().collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(hex::encode(listed[0].raw_serial()), revoked.serial);
    assert_eq!(listed[0].revocation_date.timestamp(), at.timestamp());
    assert_eq!(
        listed[0].reason_code().unwrap().1,
        x509_parser::x509::ReasonCode::KeyCompromise
    );

    let err = ca
        .verify_chain(&revoked.pem, &revocations, crl_at)
        .unwrap_err();
    match &err {
        CaError::Revoked { serial, reason, .. } => {
            assert_eq!(serial, &revoked.serial);
            assert_eq!(*reason, RevocationReason::KeyCompromise);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("revoked"), "{err}");
    ca.verify_chain(&kept.pem, &revocations, crl_at).unwrap();

    // The list is the caller's to keep: it round-trips as JSON.
    let json = serde_json::to_string(&revocations).unwrap();
    let back: Revocations = serde_json::from_str(&json).unwrap();
    assert_eq!(back, revocations);

    // Past any certificate's end, the revocation leaves the CRL and the list.
    let later = at + Duration::days(i64::from(MAX_LIFETIME_DAYS) + 2);
    assert_eq!(ca.crl(&revocations, later).unwrap().revoked, 0);
    assert_eq!(revocations.prune(later), 1);
    assert!(revocations.is_empty());
    // An empty CRL is still a signed CRL.
    let empty = ca.crl(&revocations, later).unwrap();
    let (_, parsed) = CertificateRevocationList::from_der(&empty.der).unwrap();
    parsed.verify_signature(ca_cert.public_key()).unwrap();
    assert_eq!(parsed.iter_revoked_certificates().count(), 0);
    assert!(empty.number > crl.number);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_is_made_once_and_reused_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _vault) = open_in(dir.path()).await;
    // Another process later: a new vault handle on the same directory.
    let (second, vault) = open_in(dir.path()).await;
    assert_eq!(first.certificate_pem(), second.certificate_pem());
    // What one issued, the other verifies.
    let issued = first.issue(&agent_csr(), "agent-one", now()).unwrap();
    second
        .verify_chain(&issued.pem, &Revocations::new(), now())
        .unwrap();
    let versions = vault.versions(CA_SECRET).await.unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");

    // Openers at once on a fresh vault end up with one CA.
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(FileVault::open(dir.path()).unwrap());
    let opens = (0..4).map(|_| {
        let vault = vault.clone();
        tokio::spawn(async move {
            InternalCa::open(vault.as_ref(), CaSettings::new(TD), now())
                .await
                .unwrap()
                .certificate_pem()
                .to_string()
        })
    });
    let pems = futures_util::future::join_all(opens).await;
    let pems: Vec<String> = pems.into_iter().map(Result::unwrap).collect();
    assert!(pems.windows(2).all(|w| w[0] == w[1]));

    // Another trust domain is refused rather than served by this CA.
    let err = InternalCa::open(vault.as_ref(), CaSettings::new("other.example"), now())
        .await
        .unwrap_err();
    assert!(matches!(err, CaError::TrustDomainMismatch { .. }), "{err}");
}

/// A vault whose first read misses what is there, as when another process stores its CA
/// between this opener's read and its write.
struct LateReader {
    inner: FileVault,
    missed: AtomicBool,
}

#[async_trait]
impl Vault for LateReader {
    async fn put(
        &self,
        secret: &str,
        version_id: &str,
        value: &Secret,
        stage: Stage,
    ) -> Result<(), VaultError> {
        self.inner.put(secret, version_id, value, stage).await
    }
    async fn get(
        &self,
        secret: &str,
        stage: Stage,
    ) -> Result<Option<(String, Secret)>, VaultError> {
        if !self.missed.swap(true, Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.get(secret, stage).await
    }
    async fn versions(&self, secret: &str) -> Result<Vec<VersionInfo>, VaultError> {
        self.inner.versions(secret).await
    }
    async fn schedule_deletion(
        &self,
        secret: &str,
        recovery_days: u32,
    ) -> Result<DateTime<Utc>, VaultError> {
        self.inner.schedule_deletion(secret, recovery_days).await
    }
}

#[tokio::test]
async fn a_creator_that_loses_the_race_uses_the_stored_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (winner, _vault) = open_in(dir.path()).await;
    let late = LateReader {
        inner: FileVault::open(dir.path()).unwrap(),
        missed: AtomicBool::new(false),
    };
    let loser = InternalCa::open(&late, CaSettings::new(TD), now())
        .await
        .unwrap();
    assert!(late.missed.load(Ordering::SeqCst), "the first read missed");
    assert_eq!(loser.certificate_pem(), winner.certificate_pem());
    let issued = loser.issue(&agent_csr(), "agent-one", now()).unwrap();
    winner
        .verify_chain(&issued.pem, &Revocations::new(), now())
        .unwrap();
}

#[tokio::test]
async fn the_ca_private_key_appears_in_no_debug_or_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, vault) = open_in(dir.path()).await;
    let (_, stored) = vault.get(CA_SECRET, Stage::Current).await.unwrap().unwrap();
    let stored: serde_json::Value = serde_json::from_str(stored.expose()).unwrap();
    let key_pem = stored["key"].as_str().unwrap();
    assert!(key_pem.contains("PRIVATE KEY"));
    let body: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    let joined = body.concat();
    let key_der = STANDARD.decode(&joined).unwrap();
    let needles: Vec<String> = body
        .iter()
        .map(|l| l.to_string())
        .chain([joined.clone(), hex::encode(&key_der)])
        .collect();

    let csr = agent_csr();
    let issued = ca.issue(&csr, "agent-one", now()).unwrap();
    let mut revocations = Revocations::new();
    revocations
        .revoke(&issued.serial, RevocationReason::KeyCompromise, now())
        .unwrap();
    let crl = ca.crl(&revocations, now()).unwrap();
    let mut shown = vec![
        format!("{ca:?}"),
        format!("{ca:#?}"),
        format!("{issued:?}"),
        format!("{crl:?}"),
        format!("{revocations:?}"),
        issued.pem.clone(),
        crl.pem.clone(),
        ca.certificate_pem().to_string(),
    ];
    let errors = [
        ca.issue("junk", "agent-one", now()).unwrap_err(),
        ca.issue(&csr, "Bad Name", now()).unwrap_err(),
        ca.issue_for_days(&csr, "agent-one", 91, now()).unwrap_err(),
        ca.verify_chain(&issued.pem, &revocations, now())
            .unwrap_err(),
        ca.issue(ca.certificate_pem(), "agent-one", now())
            .unwrap_err(),
        InternalCa::open(&vault, CaSettings::new("other.example"), now())
            .await
            .unwrap_err(),
    ];
    for e in &errors {
        shown.push(e.to_string());
        shown.push(format!("{e:?}"));
    }
    // A damaged record: the error names the problem, not the value.
    let broken = Secret::new(
        stored
            .to_string()
            .replace("BEGIN PRIVATE KEY", "BEGIN NOTHING"),
    );
    vault
        .put(
            CA_SECRET,
            &version_id_for("broken"),
            &broken,
            Stage::Current,
        )
        .await
        .unwrap();
    let e = InternalCa::open(&vault, CaSettings::new(TD), now())
        .await
        .unwrap_err();
    assert!(matches!(e, CaError::StoredCaUnreadable(_)), "{e}");
    shown.push(e.to_string());
    shown.push(format!("{e:?}"));

    for text in &shown {
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "the CA key leaked into: {text}"
            );
        }
    }
}

/// A CSR enters a request only if it verifies and claims no identity of the trust domain but
/// the agent's own; names outside the trust domain are ignored (as the CA ignores them).
#[test]
fn a_csr_may_claim_only_its_own_agent_in_the_trust_domain() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let request = |uris: &[&str]| {
        let mut params = CertificateParams::new(vec!["host.example.com".to_string()]).unwrap();
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into().unwrap()));
        }
        params.serialize_request(&key).unwrap().pem().unwrap()
    };
    let own = format!("spiffe://{TD}/agent/billing-agent-prod");
    check_csr(&request(&[]), TD, "billing-agent-prod").unwrap();
    check_csr(&request(&[&own]), TD, "billing-agent-prod").unwrap();
    // Another trust domain's id (the greedy CSR asks for one) is no identity Steward trusts.
    check_csr(&greedy_csr(&key), TD, "billing-agent-prod").unwrap();
    for claimed in [
        format!("spiffe://{TD}/agent/payroll-agent-prod"),
        format!("spiffe://{TD}"),
        format!("SPIFFE://{}/agent/billing-agent-prod/x", TD.to_uppercase()),
    ] {
        let e = check_csr(&request(&[&own, &claimed]), TD, "billing-agent-prod").unwrap_err();
        assert!(
            matches!(&e, CaError::CsrClaimsOther { name, .. } if *name == claimed),
            "{claimed}: {e}"
        );
        assert!(e.to_string().contains(&own), "{e}");
    }
    let tampered = request(&[]).replace("CERTIFICATE REQUEST", "PUBLIC KEY");
    assert!(matches!(
        check_csr(&tampered, TD, "billing-agent-prod"),
        Err(CaError::CsrNotPem { .. })
    ));
}

/// The mTLS listener's certificate: a server certificate for its names, from the CA, with a
/// key of its own, never longer than asked or than the CA; no `Debug` of the key.
#[tokio::test]
async fn the_listener_certificate_is_a_server_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _vault) = open_in(dir.path()).await;
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let issued = ca
        .issue_server_certificate(&["localhost"], &[ip], 30, now())
        .unwrap();
    let (_, cert) = X509Certificate::from_der(&issued.certificate_der).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(ca.certificate_der()).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert!(names.contains(&GeneralName::DNSName("localhost")));
    assert!(names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
    assert_eq!(issued.not_after, now() + Duration::days(30));
    assert!(!format!("{issued:?}").contains("key_pkcs8"));
    assert!(matches!(
        ca.issue_server_certificate(&["localhost"], &[], 91, now()),
        Err(CaError::LifetimeTooLong { days: 91 })
    ));
    // Not a client certificate: the listener's own certificate does not pass as an agent's.
    assert!(
        ca.verify_der(&issued.certificate_der, &Revocations::new(), now())
            .is_err()
    );
}
