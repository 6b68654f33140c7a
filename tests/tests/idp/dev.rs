//! The development IdP against the port's contract.

use super::conformance::{self, Caps};
use shared::embedded::sqlite::{Db, Durability};
use shared::idp::dev::DevIdp;
use std::sync::Arc;

#[tokio::test]
async fn dev_idp_follows_the_identity_provider_contract() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap());
    let idp = DevIdp::open(db, &dir.path().join("idp.key"), "http://127.0.0.1:1").unwrap();
    let caps = Caps {
        max_secrets: 2,
        lifecycle: true,
    };
    conformance::run(&idp, caps, "dev", ["erp.read", "erp.write"]).await;
}

#[tokio::test]
async fn dev_idp_key_clients_follow_the_identity_provider_contract() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap());
    let idp = DevIdp::open(db, &dir.path().join("idp.key"), "http://127.0.0.1:1").unwrap();
    conformance::run_keys(&idp, "dev", ["erp.read", "erp.write"]).await;
}

/// The dev IdP's certificate clients (RFC 8705) against the port's contract. A certificate is
/// proved as the mTLS listener does: checked against the CA (`verify_der`), then the IdP's
/// grant with it; the token must be bound to it (`cnf.x5t#S256`).
#[tokio::test]
async fn dev_idp_certificate_clients_follow_the_identity_provider_contract() {
    use shared::ca::Revocations;
    use shared::idp::dev::ClientAuth;
    use shared::ports::idp::TokenBinding;
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap());
    let idp = DevIdp::open(db, &dir.path().join("idp.key"), "http://127.0.0.1:1").unwrap();
    let ca = conformance::TestCa::new("steward.test").await;
    let prove = async |client_id: &str, cert: Option<&conformance::TestCertificate>| {
        let cert = cert.ok_or("the dev IdP's mTLS listener needs a certificate")?;
        let der = x509_parser::pem::parse_x509_pem(cert.pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let now = chrono::Utc::now();
        let presented = ca
            .ca
            .verify_der(&der, &Revocations::new(), now)
            .map_err(|e| e.to_string())?;
        let token = idp
            .grant(
                ClientAuth::Certificate {
                    client_id,
                    certificate: &presented,
                },
                None,
                None,
                now,
            )
            .map_err(|e| e.to_string())?;
        assert_eq!(token.binding, TokenBinding::Certificate);
        let seen =
            idp.introspect_with(&token.access_token, None, Some(&presented), now.timestamp());
        assert!(seen.active, "{seen:?}");
        assert_eq!(
            seen.claims.unwrap()["cnf"]["x5t#S256"],
            cert.record.x5t_s256.as_str()
        );
        Ok(())
    };
    conformance::run_certificates(
        &idp,
        &ca,
        "ledger-agent-prod",
        conformance::Removal::Stops,
        "dev",
        ["erp.read", "erp.write"],
        &prove,
    )
    .await;
}
