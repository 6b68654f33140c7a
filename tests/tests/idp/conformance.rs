//! The IdentityProvider port's contract, run against every adapter.

use shared::Secret;
use shared::agent_key::AgentKeyPair;
use shared::ca::{CaSettings, InternalCa};
use shared::embedded::vault::FileVault;
use shared::ports::idp::{
    CertificateRecord, ClientKey, ClientSpec, IdentityProvider, IdpError, TokenBinding,
};

/// Where adapters honestly differ.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Secrets a client can hold at once: 2 for Okta and the dev IdP (rotation overlaps), 1 for
    /// RFC 7592 (an update replaces the secret).
    pub max_secrets: usize,
    /// Whether `set_active(false)` is supported (RFC 7592 has no lifecycle).
    pub lifecycle: bool,
}

fn spec(prefix: &str, name: &str, scopes: &[&str]) -> ClientSpec {
    ClientSpec {
        agent_id: format!("{prefix}-{name}"),
        name: format!("{prefix} {name}"),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        token_lifetime_secs: 900,
    }
}

fn refused(r: Result<(), IdpError>, what: &str) {
    match r {
        Ok(()) => panic!("{what}: expected the provider to refuse, it accepted"),
        Err(IdpError::Unavailable(e)) => panic!("{what}: a refusal must not look retryable: {e}"),
        Err(_) => {}
    }
}

/// Runs every property; `prefix` keeps runs against a shared provider apart; `scopes` are two
/// scopes the provider knows.
pub async fn run(idp: &dyn IdentityProvider, caps: Caps, prefix: &str, scopes: [&str; 2]) {
    let [a, b] = scopes;

    // Create: the client exists with what was asked, and its first secret works.
    let s = spec(prefix, "create", &[a]);
    let created = idp
        .create_client(&s, &format!("{prefix}-k1"))
        .await
        .unwrap();
    let info = idp
        .client(&created.client_id)
        .await
        .unwrap()
        .expect("client exists");
    assert_eq!(info.scopes, vec![a.to_string()]);
    assert!(info.active);
    // Steward's mark: the create's key stays with the client (discovery skips such clients).
    let key = format!("{prefix}-k1");
    assert_eq!(info.steward_key.as_deref(), Some(key.as_str()));
    idp.test_secret(&created.client_id, &created.secret)
        .await
        .unwrap();
    refused(
        idp.test_secret(&created.client_id, &Secret::new("not-the-secret"))
            .await,
        "a wrong secret",
    );

    // The same idempotency key gives the same client, with a working secret.
    let again = idp
        .create_client(&s, &format!("{prefix}-k1"))
        .await
        .unwrap();
    assert_eq!(
        again.client_id, created.client_id,
        "a repeated create made a second client"
    );
    idp.test_secret(&again.client_id, &again.secret)
        .await
        .unwrap();
    let id = again.client_id.clone();
    let mut current = again.secret;

    // Grants are set exactly.
    idp.set_grants(&id, &[a.to_string(), b.to_string()], 600)
        .await
        .unwrap();
    let mut got = idp.client(&id).await.unwrap().unwrap().scopes;
    got.sort();
    let mut want = vec![a.to_string(), b.to_string()];
    want.sort();
    assert_eq!(got, want);
    idp.set_grants(&id, &[b.to_string()], 600).await.unwrap();
    assert_eq!(
        idp.client(&id).await.unwrap().unwrap().scopes,
        vec![b.to_string()]
    );

    // Listing includes it, with its mark.
    let listed = idp.list_clients().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|c| c.client_id == id && c.steward_key.as_deref() == Some(key.as_str())),
        "list_clients misses {id} or its mark"
    );

    // Lifecycle: a deactivated client gets no token, an activated one does.
    if caps.lifecycle {
        idp.set_active(&id, false).await.unwrap();
        assert!(!idp.client(&id).await.unwrap().unwrap().active);
        refused(idp.test_secret(&id, &current).await, "a deactivated client");
        idp.set_active(&id, true).await.unwrap();
        idp.test_secret(&id, &current).await.unwrap();
    }

    // Secrets: rotation.
    let before = idp.secret_ids(&id).await.unwrap();
    assert_eq!(before.len(), 1, "a new client has one secret: {before:?}");
    let next = idp
        .add_secret(&id, &format!("{prefix}-rot1"))
        .await
        .unwrap();
    idp.test_secret(&id, &next.secret).await.unwrap();
    if caps.max_secrets >= 2 {
        // Both valid at once: the overlap that makes rotation gap-free.
        idp.test_secret(&id, &current).await.unwrap();
        let ids = idp.secret_ids(&id).await.unwrap();
        assert_eq!(ids, vec![before[0].clone(), next.secret_id.clone()]);
        idp.remove_secret(&id, &before[0]).await.unwrap();
        refused(idp.test_secret(&id, &current).await, "a removed secret");
        idp.remove_secret(&id, &before[0]).await.unwrap();
        refused(
            idp.remove_secret(&id, &next.secret_id).await,
            "removing the only secret",
        );
    } else {
        refused(idp.test_secret(&id, &current).await, "a replaced secret");
    }
    idp.test_secret(&id, &next.secret).await.unwrap();
    current = next.secret;

    // Revoking tokens of a client says what stays valid; an unknown client is named.
    idp.revoke_tokens(&id).await.unwrap();
    assert!(matches!(
        idp.revoke_tokens("no-such-client").await,
        Err(IdpError::UnknownClient(_))
    ));
    assert!(idp.client("no-such-client").await.unwrap().is_none());
    assert!(matches!(
        idp.set_grants("no-such-client", &[a.to_string()], 600)
            .await,
        Err(IdpError::UnknownClient(_))
    ));

    // Delete: gone, no token, and deleting again is fine.
    idp.delete_client(&id).await.unwrap();
    assert!(idp.client(&id).await.unwrap().is_none());
    refused(idp.test_secret(&id, &current).await, "a deleted client");
    idp.delete_client(&id).await.unwrap();
    let listed = idp.list_clients().await.unwrap();
    assert!(
        !listed.iter().any(|c| c.client_id == id),
        "a deleted client is still listed"
    );
}

fn key_state(pairs: &[(&AgentKeyPair, bool)]) -> Vec<ClientKey> {
    pairs
        .iter()
        .map(|(p, active)| ClientKey {
            kid: p.public().kid.clone(),
            active: *active,
        })
        .collect()
}

/// The key-credential properties (RFC 7523 `private_key_jwt`), for every adapter that manages
/// keys: a key client, its keys' rotation (add, both work, deactivate, remove) and the proof
/// that a key works. `prefix` and `scopes` as for [`run`].
pub async fn run_keys(idp: &dyn IdentityProvider, prefix: &str, scopes: [&str; 2]) {
    let [a, b] = scopes;
    let first = AgentKeyPair::generate().unwrap();
    let s = spec(prefix, "keys", &[a]);
    let idempotency = format!("{prefix}-keys-k1");

    // Create: the client exists with what was asked, holds the key, and has no secret.
    let id = idp
        .create_key_client(&s, first.public(), TokenBinding::None, &idempotency)
        .await
        .unwrap();
    let info = idp.client(&id).await.unwrap().expect("key client exists");
    assert_eq!(info.scopes, vec![a.to_string()]);
    assert!(info.active);
    assert_eq!(info.steward_key.as_deref(), Some(idempotency.as_str()));
    assert!(
        idp.secret_ids(&id).await.unwrap().is_empty(),
        "a key client has no secret"
    );
    assert_eq!(idp.keys(&id).await.unwrap(), key_state(&[(&first, true)]));
    idp.test_key(&id, &first).await.unwrap();
    let stranger = AgentKeyPair::generate().unwrap();
    refused(
        idp.test_key(&id, &stranger).await,
        "a key the client does not hold",
    );

    // The same idempotency key gives the same client, still working with its key.
    let again = idp
        .create_key_client(&s, first.public(), TokenBinding::None, &idempotency)
        .await
        .unwrap();
    assert_eq!(again, id, "a repeated create made a second client");
    assert_eq!(idp.keys(&id).await.unwrap(), key_state(&[(&first, true)]));
    idp.test_key(&id, &first).await.unwrap();

    // Grants apply to a key client as to any client.
    idp.set_grants(&id, &[a.to_string(), b.to_string()], 600)
        .await
        .unwrap();
    let mut got = idp.client(&id).await.unwrap().unwrap().scopes;
    got.sort();
    let mut want = vec![a.to_string(), b.to_string()];
    want.sort();
    assert_eq!(got, want);
    idp.test_key(&id, &first).await.unwrap();

    // Rotation: a second key, both work at once (adding it again is fine).
    let second = AgentKeyPair::generate().unwrap();
    idp.add_key(&id, second.public()).await.unwrap();
    idp.add_key(&id, second.public()).await.unwrap();
    idp.test_key(&id, &second).await.unwrap();
    idp.test_key(&id, &first).await.unwrap();
    assert_eq!(
        idp.keys(&id).await.unwrap(),
        key_state(&[(&first, true), (&second, true)]),
        "keys are listed oldest first"
    );

    // The first deactivated: refused with it, working with the second; and back.
    idp.set_key_active(&id, &first.public().kid, false)
        .await
        .unwrap();
    refused(idp.test_key(&id, &first).await, "a deactivated key");
    idp.test_key(&id, &second).await.unwrap();
    assert_eq!(
        idp.keys(&id).await.unwrap(),
        key_state(&[(&first, false), (&second, true)])
    );
    idp.set_key_active(&id, &first.public().kid, true)
        .await
        .unwrap();
    idp.test_key(&id, &first).await.unwrap();
    idp.set_key_active(&id, &first.public().kid, false)
        .await
        .unwrap();
    idp.set_key_active(&id, &first.public().kid, false)
        .await
        .unwrap();

    // Removed: gone, refused, and removing it again is fine.
    idp.remove_key(&id, &first.public().kid).await.unwrap();
    assert_eq!(idp.keys(&id).await.unwrap(), key_state(&[(&second, true)]));
    refused(idp.test_key(&id, &first).await, "a removed key");
    idp.remove_key(&id, &first.public().kid).await.unwrap();
    idp.test_key(&id, &second).await.unwrap();
    // Adding a key the client already holds keeps it as it is.
    idp.add_key(&id, second.public()).await.unwrap();
    assert_eq!(idp.keys(&id).await.unwrap(), key_state(&[(&second, true)]));

    // Deleted: no token with its key.
    idp.delete_client(&id).await.unwrap();
    refused(idp.test_key(&id, &second).await, "a deleted key client");
}

/// Steward's internal CA as the executor opens it (in a vault of its own), issuing agents'
/// certificates from CSRs made here with keys the "agents" keep.
pub struct TestCa {
    pub ca: InternalCa,
    _dir: tempfile::TempDir,
}

/// An agent's certificate as the CA issued it, its registry record, and the agent's key.
pub struct TestCertificate {
    pub record: CertificateRecord,
    pub pem: String,
    pub key: rcgen::KeyPair,
}

impl TestCa {
    pub async fn new(trust_domain: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vault = FileVault::open(&dir.path().join("vault")).unwrap();
        let ca = InternalCa::open(&vault, CaSettings::new(trust_domain), chrono::Utc::now())
            .await
            .unwrap();
        Self { ca, _dir: dir }
    }

    /// A certificate for `agent_name` (SPIFFE id `spiffe://<trust domain>/agent/<name>`) for
    /// a key made now.
    pub fn issue(&self, agent_name: &str) -> TestCertificate {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let issued = self.ca.issue(&csr, agent_name, chrono::Utc::now()).unwrap();
        TestCertificate {
            record: CertificateRecord {
                serial: issued.serial,
                spiffe_id: issued.spiffe_id,
                x5t_s256: issued.x5t_s256,
                not_before: issued.not_before,
                not_after: issued.not_after,
                revoked: None,
            },
            pem: issued.pem,
            key,
        }
    }
}

/// Whether a provider stops accepting a certificate that `remove_certificate` took away. Not
/// so for RFC 8705 `tls_client_auth` at an OAuth server: it accepts every certificate of the
/// CA for the client's SPIFFE id until it expires (or the server reads the CRL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Stops,
    AcceptedUntilExpiry,
}

/// The certificate-credential properties (RFC 8705), for every adapter that registers
/// certificate clients: a certificate client, a second certificate beside the first (both
/// work), the first removed, lifecycle and deletion. `prove` asks the provider for a token as
/// the agent does (a mutual TLS handshake presenting the certificate, when one is given) and
/// answers whether it got one bound to that certificate; `ca` issued the certificates the
/// provider trusts, and `agent` names the agent they are for (its SPIFFE id), which must be
/// fresh per run. `prefix` and `scopes` as for [`run`].
pub async fn run_certificates(
    idp: &dyn IdentityProvider,
    ca: &TestCa,
    agent: &str,
    removal: Removal,
    prefix: &str,
    scopes: [&str; 2],
    prove: &impl AsyncFn(&str, Option<&TestCertificate>) -> Result<(), String>,
) {
    let [a, b] = scopes;
    assert!(
        idp.certificate_clients(),
        "the adapter registers certificate clients"
    );
    let first = ca.issue(agent);
    let s = spec(prefix, "certificates", &[a]);
    let idempotency = format!("{prefix}-certificates-k1");
    let works = async |id: &str, cert: &TestCertificate, what: &str| {
        if let Err(e) = prove(id, Some(cert)).await {
            panic!("{what}: the provider refused the certificate: {e}");
        }
    };
    let refused = async |id: &str, cert: Option<&TestCertificate>, what: &str| {
        if prove(id, cert).await.is_ok() {
            panic!("{what}: expected no token, the provider issued one");
        }
    };

    // Create: the client exists with what was asked, has no secret, and the certificate alone
    // authenticates it; no certificate, or another agent's, does not.
    let id = idp
        .create_certificate_client(&s, &first.record, &first.pem, &idempotency)
        .await
        .unwrap();
    let info = idp
        .client(&id)
        .await
        .unwrap()
        .expect("certificate client exists");
    assert_eq!(info.scopes, vec![a.to_string()]);
    assert!(info.active);
    assert_eq!(info.steward_key.as_deref(), Some(idempotency.as_str()));
    assert!(
        idp.secret_ids(&id).await.unwrap().is_empty(),
        "a certificate client has no secret"
    );
    assert!(
        matches!(
            idp.add_secret(&id, &format!("{idempotency}-secret")).await,
            Err(IdpError::Refused(_))
        ),
        "a certificate client takes no secret either"
    );
    assert!(idp.secret_ids(&id).await.unwrap().is_empty());
    works(&id, &first, "the registered certificate").await;
    refused(&id, None, "no certificate").await;
    let stranger = ca.issue(&format!("{agent}-other"));
    refused(&id, Some(&stranger), "another agent's certificate").await;

    // The same idempotency key gives the same client, still working with its certificate.
    let again = idp
        .create_certificate_client(&s, &first.record, &first.pem, &idempotency)
        .await
        .unwrap();
    assert_eq!(again, id, "a repeated create made a second client");
    works(&id, &first, "after a repeated create").await;

    // Grants apply to a certificate client as to any client.
    idp.set_grants(&id, &[a.to_string(), b.to_string()], 600)
        .await
        .unwrap();
    let mut got = idp.client(&id).await.unwrap().unwrap().scopes;
    got.sort();
    let mut want = vec![a.to_string(), b.to_string()];
    want.sort();
    assert_eq!(got, want);
    works(&id, &first, "after a grants change").await;

    // Rotation: a second certificate of the same agent; both work at once (adding it again is
    // fine).
    let second = ca.issue(agent);
    assert_ne!(second.record.x5t_s256, first.record.x5t_s256);
    idp.add_certificate(&id, &second.record, &second.pem)
        .await
        .unwrap();
    idp.add_certificate(&id, &second.record, &second.pem)
        .await
        .unwrap();
    works(&id, &second, "the added certificate").await;
    works(&id, &first, "the first certificate during the overlap").await;

    // The first removed: the second goes on; removing it again is fine.
    idp.remove_certificate(&id, &first.record.x5t_s256)
        .await
        .unwrap();
    match removal {
        Removal::Stops => refused(&id, Some(&first), "a removed certificate").await,
        Removal::AcceptedUntilExpiry => {
            works(&id, &first, "a removed certificate of the same SPIFFE id").await
        }
    }
    works(&id, &second, "the remaining certificate").await;
    idp.remove_certificate(&id, &first.record.x5t_s256)
        .await
        .unwrap();
    works(&id, &second, "after removing a removed certificate").await;

    // Lifecycle: a deactivated client gets no token with its certificate.
    idp.set_active(&id, false).await.unwrap();
    refused(&id, Some(&second), "a deactivated certificate client").await;
    idp.set_active(&id, true).await.unwrap();
    works(&id, &second, "a reactivated certificate client").await;

    assert!(
        idp.secret_ids(&id).await.unwrap().is_empty(),
        "still no secret after the rotation"
    );

    // Deleted: no token with its certificate.
    idp.delete_client(&id).await.unwrap();
    refused(&id, Some(&second), "a deleted certificate client").await;
}

/// What an adapter that registers no certificate clients answers: a clear refusal, never a
/// retryable failure, that names the credential kinds to use instead.
pub async fn refuses_certificates(idp: &dyn IdentityProvider, ca: &TestCa, prefix: &str) {
    assert!(!idp.certificate_clients());
    let cert = ca.issue(&format!("{prefix}-refused-agent"));
    let s = spec(prefix, "certificates", &["any"]);
    let clear = |r: Result<(), IdpError>, what: &str| match r {
        Err(IdpError::Refused(why)) => assert!(
            why.contains("tls_client_auth") && why.contains("private_key_jwt"),
            "{what}: the refusal should say what is not supported and what to use: {why}"
        ),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    };
    clear(
        idp.create_certificate_client(&s, &cert.record, &cert.pem, &format!("{prefix}-cert-k"))
            .await
            .map(|_| ()),
        "create_certificate_client",
    );
    clear(
        idp.add_certificate("some-client", &cert.record, &cert.pem)
            .await,
        "add_certificate",
    );
    clear(
        idp.remove_certificate("some-client", &cert.record.x5t_s256)
            .await,
        "remove_certificate",
    );
    assert!(
        idp.list_clients().await.unwrap().is_empty(),
        "nothing was registered"
    );
}
