//! Agents that authenticate with a client certificate (`tls_client_auth`, RFC 8705; ADR 34)
//! with Steward driving a real authorization server over real mutual TLS: the generic OAuth DCR
//! adapter (ADR 13, ADR 35) pointed at npm `oidc-provider` (started by `tests/run`, with its
//! mTLS listener). Everything goes through Steward's engine: the CSR enters the request, the
//! internal CA issues the certificate when the client is created, and the adapter registers it
//! at oidc-provider (`self_signed_tls_client_auth`: the certificate itself in the client's
//! `jwks`; or `tls_client_auth`: the SPIFFE id, with oidc-provider trusting Steward's CA). The
//! agent, holding its own key and the certificate Steward hands out, gets tokens at
//! oidc-provider's mTLS token endpoint (`mtls_endpoint_aliases`), bound to the certificate
//! (`cnf.x5t#S256` as the registry records it); without the certificate, or with another one,
//! it gets none; a freeze stops it; its private key is nowhere Steward writes. A certificate
//! rotation registers the new certificate beside the old one, and once the owner confirms the
//! switch (oidc-provider does not tell Steward which certificate a grant used) and the grace
//! has passed, the old one is taken out at oidc-provider.

use crate::rotation::{Stack, oidc_settings, policy, stack_with};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::ca::{CaSettings, InternalCa};
use shared::idp::oauth::CertificateClients;
use shared::ports::Vault;
use shared::ports::vault::Stage;
use statemachines::credential::{CredentialKind, TokenBinding};
use statemachines::{Agent, AgentRequest, AgentStatus};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const OWNER: &str = "alice@example.com";
const SCOPE: &str = "steward:test:read";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with tests/run, which starts oidc-provider with its mTLS listener")
    })
}

/// The rotation tests' policy where prod agents hold certificates with bound tokens, in a
/// trust domain of this test's own.
fn certificates_in_prod(trust_domain: &str) -> String {
    let mut p = policy(SCOPE);
    assert!(!p.contains("[credentials]"), "the base policy sets none");
    p.push_str(&format!(
        "\n[credentials]\nkinds = {{ prod = [\"tls_client_auth\"] }}\nbinding = {{ prod = \"certificate\" }}\ntrust_domain = \"{trust_domain}\"\n"
    ));
    p
}

fn oidc_stack(trust_domain: &str, method: CertificateClients) -> Stack {
    stack_with(
        &certificates_in_prod(trust_domain),
        Some(oidc_settings().with_certificate_clients(Some(method))),
    )
}

/// An agent's key (it never leaves the agent) and its CSR.
fn agent_key() -> (KeyPair, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key, csr)
}

fn der_of(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap_or_else(|e| panic!("not PEM ({e}): {pem}"))
        .1
        .contents
}

/// Onboards the certificate prod agent `name` with `csr` through the engine (its CSR checked
/// as the API checks it); the active record and the certificate Steward hands out.
async fn onboard(s: &Stack, name: &str, csr: &str) -> (Agent, String) {
    let engine = &s.stack.engine;
    engine
        .accept_agent_csr(name, csr, &statemachines::Actor::Person(OWNER.into()))
        .await
        .unwrap();
    // Read as a manifest is, so that fields AgentRequest gains later take their defaults.
    let req: AgentRequest = serde_json::from_value(json!({
        "credential": "tls_client_auth",
        "csr": csr,
        "name": name,
        "owner": OWNER,
        "team": "sre",
        "environment": "prod",
        "purpose": "certificate credentials on oidc-provider",
        "scopes": [SCOPE],
        "token_lifetime_secs": 300,
    }))
    .unwrap();
    engine.request_agent(req, OWNER).await.unwrap();
    s.settle().await;
    let agent = engine.find_agent(name).await.unwrap().unwrap();
    assert_eq!(agent.status, AgentStatus::Active, "{agent:?}");
    let stored = engine
        .agent_certificate(&agent)
        .await
        .unwrap()
        .expect("Steward hands out the agent's certificate");
    (agent, stored.pem)
}

/// oidc-provider as the agent sees it: its mTLS endpoints from discovery (RFC 8705 §5), reached
/// over mutual TLS trusting the server certificate oidc-provider wrote at start.
struct Peer {
    token: String,
    introspection: String,
    plain_token: String,
    server_cert: Vec<u8>,
}

impl Peer {
    async fn discover() -> Self {
        let issuer = oidc_settings().issuer().to_string();
        let meta: Value = reqwest::Client::new()
            .get(format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let aliases = &meta["mtls_endpoint_aliases"];
        let url = |v: &Value, k: &str| v[k].as_str().expect(k).to_string();
        let token = url(aliases, "token_endpoint");
        assert!(token.starts_with("https://127.0.0.1:"), "{meta}");
        assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
        Self {
            introspection: url(aliases, "introspection_endpoint"),
            plain_token: url(&meta, "token_endpoint"),
            token,
            server_cert: der_of(
                &std::fs::read_to_string(env("STEWARD_TEST_OIDC_MTLS_SERVER_CERT")).unwrap(),
            ),
        }
    }

    /// An HTTPS client trusting the mTLS listener, presenting `identity` (a certificate PEM
    /// and the agent's key) when given.
    fn client(&self, identity: Option<(&str, &KeyPair)>) -> reqwest::Client {
        shared::tls::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.server_cert.clone()))
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from(der_of(cert))],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// A client_credentials request as the agent makes it over mutual TLS: its client id, and
    /// the certificate of the connection (if any) as its only authentication.
    async fn token(&self, http: &reqwest::Client, url: &str, client_id: &str) -> (u16, Value) {
        let resp = http
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("scope", SCOPE),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// RFC 7662 over mutual TLS: the certificate client authenticates by the connection's
    /// certificate (oidc-provider answers a client about its own tokens only).
    async fn introspect(&self, http: &reqwest::Client, client_id: &str, token: &str) -> Value {
        let resp = http
            .post(&self.introspection)
            .form(&[("token", token), ("client_id", client_id)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.unwrap()
    }
}

/// The vault record the OAuth adapter keeps for `client_id` (ADR 13), named as the adapter
/// names it, and the client's registration as oidc-provider holds it (RFC 7592 read with the
/// record's registration access token).
async fn registration(s: &Stack, client_id: &str) -> (Value, Value) {
    let hash = |v: &str, n: usize| hex::encode(&Sha256::digest(v.as_bytes())[..n]);
    let name = format!(
        "steward/oauth/{}/client/{}",
        hash(oidc_settings().issuer(), 6),
        hash(client_id, 16)
    );
    let (_, value) = s
        .stack
        .vault
        .get(&name, Stage::Current)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the adapter keeps vault record {name}"));
    let record: Value = serde_json::from_str(value.expose()).unwrap();
    let resp = reqwest::Client::new()
        .get(record["registration_client_uri"].as_str().unwrap())
        .bearer_auth(record["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    (record, resp.json().await.unwrap())
}

/// The lines of a PEM between its armour: what would show if the key leaked anywhere.
fn pem_body(pem: &str) -> Vec<String> {
    let body: Vec<String> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect();
    assert!(!body.is_empty());
    body
}

/// The stack's internal CA, as the executor opens it (the one `GET /ca/certificate` serves).
async fn stack_ca(s: &Stack, trust_domain: &str) -> InternalCa {
    InternalCa::open(
        &*s.stack.vault,
        CaSettings::new(trust_domain),
        chrono::Utc::now(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_agent_gets_bound_tokens_from_oidc_provider_over_mtls_until_it_is_frozen() {
    let trust_domain = format!("oidc-{:08x}.test", rand::random::<u32>());
    let s = oidc_stack(&trust_domain, CertificateClients::SelfSigned);
    let engine = &s.stack.engine;
    let name = format!("mtls-{:08x}-agent-prod", rand::random::<u32>());
    let (key, csr) = agent_key();

    // 1. Onboarded through the engine with its CSR: a certificate under its SPIFFE id, no
    // secret anywhere.
    let (agent, pem) = onboard(&s, &name, &csr).await;
    assert_eq!(agent.credential_kind, CredentialKind::TlsClientAuth);
    assert_eq!(agent.token_binding, TokenBinding::Certificate);
    assert_eq!(
        agent.secret_version, None,
        "nothing in the vault for a secret"
    );
    assert_eq!(agent.certificates.len(), 1, "{:?}", agent.certificates);
    let record = agent.certificates[0].clone();
    let der = der_of(&pem);
    assert_eq!(shared::ca::thumbprint(&der), record.x5t_s256);
    assert_eq!(
        record.spiffe_id,
        format!("spiffe://{trust_domain}/agent/{name}")
    );
    let client_id = agent.client_id.clone().expect("a client at oidc-provider");

    // The client oidc-provider registered: self_signed_tls_client_auth with the certificate
    // itself (x5c) in its jwks, certificate-bound tokens, no secret, no private member.
    let (adapter_record, reg) = registration(&s, &client_id).await;
    assert_eq!(
        reg["token_endpoint_auth_method"], "self_signed_tls_client_auth",
        "{reg}"
    );
    assert_eq!(reg["tls_client_certificate_bound_access_tokens"], true);
    let keys = reg["jwks"]["keys"].as_array().expect("a jwks");
    assert_eq!(keys.len(), 1, "{reg}");
    use base64::Engine as _;
    let registered = base64::engine::general_purpose::STANDARD
        .decode(keys[0]["x5c"][0].as_str().unwrap())
        .unwrap();
    assert_eq!(registered, der, "the registered certificate is the agent's");
    for m in ["d", "p", "q"] {
        assert!(keys[0].get(m).is_none(), "a private member was registered");
    }
    assert!(reg.get("client_secret").is_none(), "no secret: {reg}");
    assert_eq!(reg["scope"], SCOPE);
    assert!(s.idp().secret_ids(&client_id).await.unwrap().is_empty());
    assert_eq!(
        adapter_record["certificates"][0]["x5t#S256"],
        record.x5t_s256.as_str()
    );

    // 2. At oidc-provider's mTLS token endpoint, the certificate alone authenticates the agent,
    // and the token is bound to it: introspection names the thumbprint the registry holds.
    let peer = Peer::discover().await;
    let with_cert = peer.client(Some((&pem, &key)));
    let (status, v) = peer.token(&with_cert, &peer.token, &client_id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer", "{v}");
    let token = v["access_token"].as_str().unwrap().to_string();
    let seen = peer.introspect(&with_cert, &client_id, &token).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["client_id"], client_id.as_str(), "{seen}");
    assert_eq!(seen["scope"], SCOPE, "{seen}");
    assert_eq!(seen["cnf"]["x5t#S256"], record.x5t_s256.as_str(), "{seen}");

    // No certificate, over mTLS or on the plain-http endpoint: no token.
    let without = peer.client(None);
    let (status, v) = peer.token(&without, &peer.token, &client_id).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    let (status, v) = peer
        .token(&reqwest::Client::new(), &peer.plain_token, &client_id)
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    // Another certificate from Steward's own CA for the very same SPIFFE id: the registration
    // pins the agent's certificate, so it is refused too.
    let ca = stack_ca(&s, &trust_domain).await;
    let (other_key, other_csr) = agent_key();
    let other = ca.issue(&other_csr, &name, chrono::Utc::now()).unwrap();
    assert_eq!(other.spiffe_id, record.spiffe_id);
    let with_other = peer.client(Some((&other.pem, &other_key)));
    let (status, v) = peer.token(&with_other, &peer.token, &client_id).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    // And a copy of the bound token is inactive for a connection without the certificate.
    let resp = without
        .post(&peer.introspection)
        .form(&[("token", token.as_str()), ("client_id", client_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        401,
        "introspection needs the client's certificate"
    );

    // 3. The kill switch: the client loses its grant, so the certificate gets no token.
    engine
        .freeze_now(&name, OWNER, "leaked key suspected")
        .await
        .unwrap();
    s.settle().await;
    let frozen = engine.find_agent(&name).await.unwrap().unwrap();
    assert_eq!(frozen.status, AgentStatus::Frozen, "{frozen:?}");
    let (status, v) = peer.token(&with_cert, &peer.token, &client_id).await;
    assert_eq!(status, 400, "a frozen agent got a token: {v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("grant type is not allowed"),
        "{v}"
    );
    let (adapter_record, reg) = registration(&s, &client_id).await;
    assert!(
        !reg["grant_types"]
            .as_array()
            .unwrap()
            .contains(&json!("client_credentials")),
        "{reg}"
    );

    // 4. The agent's private key and the CA's are nowhere: not in the audit export, the agent
    // record, the adapter's vault record or the registration.
    let trail = engine.store.audit(0, 100_000).await.unwrap();
    assert!(!trail.is_empty());
    let export: String = trail.iter().map(shared::audit::export_line).collect();
    let (_, ca_record) = s
        .stack
        .vault
        .get(shared::ca::CA_SECRET, Stage::Current)
        .await
        .unwrap()
        .expect("the CA is in the vault");
    let ca_key: Value = serde_json::from_str(ca_record.expose()).unwrap();
    let everywhere = format!(
        "{export}\n{}\n{adapter_record}\n{reg}",
        serde_json::to_string(&frozen).unwrap(),
    );
    assert!(
        everywhere.contains(&record.x5t_s256),
        "the certificate is named"
    );
    assert!(!everywhere.contains("PRIVATE KEY"));
    for line in pem_body(&key.serialize_pem())
        .into_iter()
        .chain(pem_body(ca_key["key"].as_str().unwrap()))
    {
        assert!(!everywhere.contains(&line), "a private key leaked");
    }
}

/// A CA certificate in the directory oidc-provider trusts for `tls_client_auth`, removed again
/// when dropped.
struct TrustedCa(PathBuf);

impl TrustedCa {
    fn add(pem: &str) -> Self {
        let path = Path::new(&env("STEWARD_TEST_OIDC_MTLS_CA_DIR"))
            .join(format!("steward-e2e-{:08x}.pem", rand::random::<u32>()));
        std::fs::write(&path, pem).unwrap();
        Self(path)
    }
}

impl Drop for TrustedCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `tls_client_auth` (RFC 8705 §2.1): the client is registered by the agent's SPIFFE id, and
/// oidc-provider authenticates it by any certificate of a CA it trusts with that id: once
/// Steward's CA certificate (`GET /ca/certificate`) is in its trusted directory, and not
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_auth_agent_gets_bound_tokens_once_oidc_provider_trusts_stewards_ca() {
    let trust_domain = format!("oidc-ca-{:08x}.test", rand::random::<u32>());
    let s = oidc_stack(&trust_domain, CertificateClients::TlsClientAuth);
    let name = format!("mtls-ca-{:08x}-agent-prod", rand::random::<u32>());
    let (key, csr) = agent_key();
    let (agent, pem) = onboard(&s, &name, &csr).await;
    let record = agent.certificates[0].clone();
    let client_id = agent.client_id.clone().unwrap();
    let (_, reg) = registration(&s, &client_id).await;
    assert_eq!(
        reg["token_endpoint_auth_method"], "tls_client_auth",
        "{reg}"
    );
    assert_eq!(reg["tls_client_auth_san_uri"], record.spiffe_id.as_str());
    assert_eq!(reg["tls_client_certificate_bound_access_tokens"], true);
    assert!(reg.get("jwks").is_none(), "no certificate is pinned: {reg}");

    let peer = Peer::discover().await;
    let with_cert = peer.client(Some((&pem, &key)));
    let (status, v) = peer.token(&with_cert, &peer.token, &client_id).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "oidc-provider does not trust Steward's CA yet: {v}"
    );
    // The CA certificate the executor issued with is the stack's own.
    let ca = stack_ca(&s, &trust_domain).await;
    let _trusted = TrustedCa::add(ca.certificate_pem());
    let (status, v) = peer.token(&with_cert, &peer.token, &client_id).await;
    assert_eq!(status, 200, "{v}");
    let token = v["access_token"].as_str().unwrap().to_string();
    let seen = peer.introspect(&with_cert, &client_id, &token).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["cnf"]["x5t#S256"], record.x5t_s256.as_str(), "{seen}");
    // A certificate of the same CA for another agent's SPIFFE id does not stand for it.
    let (other_key, other_csr) = agent_key();
    let other = ca
        .issue(&other_csr, &format!("{name}-other"), chrono::Utc::now())
        .unwrap();
    let with_other = peer.client(Some((&other.pem, &other_key)));
    let (status, v) = peer.token(&with_other, &peer.token, &client_id).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
}

/// The `x5t#S256` of each certificate registered in a client's `jwks` (`x5c[0]`), oldest first.
fn registered_certificates(reg: &Value) -> Vec<String> {
    use base64::Engine as _;
    reg["jwks"]["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|k| {
                    let der = base64::engine::general_purpose::STANDARD
                        .decode(k["x5c"][0].as_str().expect("x5c"))
                        .unwrap();
                    shared::ca::thumbprint(&der)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A certificate rotation on oidc-provider (self-signed): the new certificate is registered
/// beside the old one and both get bound tokens; nothing from oidc-provider tells Steward which
/// certificate a grant used, so the rotation waits until the owner confirms the agent switched;
/// after the grace period the old certificate is taken out of the client's `jwks` (refused from
/// then on) and revoked as superseded, and the new one goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotation_on_oidc_provider_registers_the_new_one_beside_the_old_until_confirmed()
 {
    let trust_domain = format!("oidc-rot-{:08x}.test", rand::random::<u32>());
    let s = oidc_stack(&trust_domain, CertificateClients::SelfSigned);
    let engine = &s.stack.engine;
    let name = format!("mtls-rot-{:08x}-agent-prod", rand::random::<u32>());
    let (old_key, csr) = agent_key();
    let (agent, old_pem) = onboard(&s, &name, &csr).await;
    let client_id = agent.client_id.clone().unwrap();
    let old = agent.certificates[0].clone();
    let peer = Peer::discover().await;
    let with_old = peer.client(Some((&old_pem, &old_key)));
    let (status, v) = peer.token(&with_old, &peer.token, &client_id).await;
    assert_eq!(status, 200, "{v}");

    // The owner brings the agent's next CSR; the CA issues, the adapter adds it to the jwks.
    let (new_key, new_csr) = agent_key();
    let started = engine
        .request_certificate_rotation(&name, &new_csr, OWNER)
        .await
        .unwrap();
    s.settle().await;
    let instance = |id: String| async move { engine.store.instance(&id).await.unwrap().unwrap() };
    let waiting = instance(started.workflow_id.clone()).await;
    assert_eq!(waiting.state_name, "AwaitingUse", "{:?}", waiting.state);
    let both = engine.find_agent(&name).await.unwrap().unwrap();
    assert_eq!(both.certificates.len(), 2, "{:?}", both.certificates);
    let new = both.certificates[1].clone();
    assert_eq!(new.spiffe_id, old.spiffe_id);
    assert_ne!(new.x5t_s256, old.x5t_s256);
    let (_, reg) = registration(&s, &client_id).await;
    assert_eq!(
        registered_certificates(&reg),
        vec![old.x5t_s256.clone(), new.x5t_s256.clone()],
        "both certificates registered at oidc-provider"
    );
    assert_eq!(reg["tls_client_certificate_bound_access_tokens"], true);
    // The certificate Steward hands out now is the new one.
    let new_pem = engine.agent_certificate(&both).await.unwrap().unwrap().pem;
    assert_eq!(shared::ca::thumbprint(&der_of(&new_pem)), new.x5t_s256);

    // Both get tokens, each bound to itself.
    let with_new = peer.client(Some((&new_pem, &new_key)));
    for (http, record) in [(&with_old, &old), (&with_new, &new)] {
        let (status, v) = peer.token(http, &peer.token, &client_id).await;
        assert_eq!(status, 200, "{v}");
        let seen = peer
            .introspect(http, &client_id, v["access_token"].as_str().unwrap())
            .await;
        assert_eq!(seen["cnf"]["x5t#S256"], record.x5t_s256.as_str(), "{seen}");
    }
    // Nothing reports that grant to Steward: the rotation still waits.
    s.settle().await;
    let still = instance(started.workflow_id.clone()).await;
    assert_eq!(still.state_name, "AwaitingUse", "{:?}", still.state);

    // The owner confirms the switch; after the grace the old certificate is gone at
    // oidc-provider and revoked.
    engine
        .confirm_certificate_in_use(&name, &new.x5t_s256, OWNER)
        .await
        .unwrap();
    s.settle().await;
    let grace = instance(started.workflow_id.clone()).await;
    assert_eq!(grace.state_name, "Grace", "{:?}", grace.state);
    let (status, v) = peer.token(&with_old, &peer.token, &client_id).await;
    assert_eq!(
        status, 200,
        "the old certificate works through the grace: {v}"
    );
    s.clock
        .advance(chrono::Duration::hours(1) + chrono::Duration::minutes(1));
    s.settle().await;
    let done = instance(started.workflow_id.clone()).await;
    assert_eq!(done.state_name, "Done", "{:?}", done.state);
    let (_, reg) = registration(&s, &client_id).await;
    assert_eq!(
        registered_certificates(&reg),
        vec![new.x5t_s256.clone()],
        "the old certificate is gone at oidc-provider"
    );
    let (status, v) = peer.token(&with_old, &peer.token, &client_id).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    let (status, v) = peer.token(&with_new, &peer.token, &client_id).await;
    assert_eq!(status, 200, "the new certificate goes on: {v}");
    let after = engine.find_agent(&name).await.unwrap().unwrap();
    assert_eq!(after.status, AgentStatus::Active);
    let revoked = after.certificates[0].revoked.as_ref().expect("revoked");
    assert_eq!(revoked.reason, "superseded");
    assert!(after.certificates[1].revoked.is_none());
}
