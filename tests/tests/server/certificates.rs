//! Agents that authenticate with a client certificate (`tls_client_auth`, RFC 8705) on the
//! embedded default: the certificate comes from Steward's internal CA, issued from the agent's
//! CSR when its client is created and named by its SPIFFE id; the mTLS listener authenticates
//! the agent by it and binds its tokens to it (`cnf.x5t#S256`); a copy of such a token is
//! refused by introspection without the certificate; decommission revokes it (the CRL lists it,
//! the mTLS token endpoint refuses it); no private key shows anywhere.

use crate::support::*;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

const TRUST_DOMAIN: &str = "agents.example.test";
const LIFETIME_DAYS: i64 = 20;

/// The example policy where prod allows only certificate agents, with certificate-bound tokens,
/// 20-day certificates and a trust domain of its own.
fn certificates_in_prod() -> Options {
    let mut o = Options::default();
    assert!(
        !o.policy.contains("\n[credentials]"),
        "the example sets none"
    );
    o.policy.push_str(&format!(
        "\n[credentials]\nkinds = {{ prod = [\"tls_client_auth\"] }}\nbinding = {{ prod = \"certificate\" }}\ncertificate_lifetime_days = {LIFETIME_DAYS}\ntrust_domain = \"{TRUST_DOMAIN}\"\n"
    ));
    o
}

/// An agent's key (it never leaves the agent) and a CSR it signed, asking for `uris`.
fn agent_key(name: &str, uris: &[&str]) -> (KeyPair, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI((*uri).try_into().unwrap()));
    }
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

fn certificate_request(name: &str, csr: &str) -> Value {
    let mut body = agent_request(name, "prod", ALICE, &["datadog:metrics:read"]);
    body["credential"] = json!("tls_client_auth");
    body["csr"] = json!(csr);
    body
}

fn der_of(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap_or_else(|e| panic!("not PEM ({e}): {pem}"))
        .1
        .contents
}

/// The mTLS listener's base URL (the harness gives it a port of its own).
fn mtls_base(s: &Server) -> String {
    assert!(!s.mtls.is_empty(), "the test server has an mTLS listener");
    s.mtls.clone()
}

/// A client of the mTLS listener trusting Steward's CA, presenting `identity` (a certificate
/// PEM and its key) when given.
fn mtls_client(ca_pem: &str, identity: Option<(&str, &KeyPair)>) -> reqwest::blocking::Client {
    shared::tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der_of(ca_pem))).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
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
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A client_credentials request naming `client_id` and nothing else: over mTLS the
/// certificate is the client's authentication.
fn certificate_token(
    http: &reqwest::blocking::Client,
    base: &str,
    client_id: &str,
) -> (u16, Value) {
    let resp = http
        .post(format!("{base}/oauth2/v1/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
        ])
        .send()
        .expect("POST /oauth2/v1/token");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn introspect(http: &reqwest::blocking::Client, base: &str, token: &str) -> Value {
    let resp = http
        .post(format!("{base}/oauth2/v1/introspect"))
        .form(&[("token", token)])
        .send()
        .expect("POST /oauth2/v1/introspect");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().unwrap()
}

/// The lines of a PEM between its armour: what would show if the key leaked anywhere.
fn pem_body(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect()
}

/// The CA's private key, PEM, as the vault keeps it (read here only to look for it elsewhere).
fn ca_private_key(s: &Server) -> String {
    use shared::ports::Vault;
    let vault = shared::embedded::vault::FileVault::open(&s.data_dir.join("vault")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (_, record) = rt
        .block_on(vault.get(shared::ca::CA_SECRET, shared::ports::vault::Stage::Current))
        .unwrap()
        .expect("the CA is in the vault");
    let record: Value = serde_json::from_str(record.expose()).unwrap();
    record["key"].as_str().unwrap().to_string()
}

/// Onboards a certificate agent (Alice's, no approval needed): its record once active, and
/// its certificate as the API hands it out.
fn onboard(s: &Server, name: &str, csr: &str) -> (Value, String) {
    s.request_ok(&certificate_request(name, csr));
    let agent = s.wait_agent_status(name, "active");
    let resp = s
        .http()
        .get(s.url(&format!("/api/agents/{name}/certificate")))
        .bearer_auth(s.person_token(BOB))
        .send()
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "any signed-in person may read it"
    );
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/x-pem-file"
    );
    (agent, resp.text().unwrap())
}

#[test]
fn a_certificate_agent_gets_certificate_bound_tokens_over_mtls_until_decommissioned() {
    let s = Server::start_with(certificates_in_prod());
    let name = "ledger-mtls-agent-prod";
    let mtls = mtls_base(&s);
    assert!(
        s.log().contains(&format!(
            "mTLS listener (tls_client_auth, certificate-bound tokens): {mtls}"
        )),
        "{}",
        s.log()
    );

    // A certificate agent needs its CSR; a CSR must verify and may name no other identity
    // Steward trusts. Each refusal says why and changes nothing.
    let (status, v) = s.request_agent(&{
        let mut b = certificate_request(name, "");
        b.as_object_mut().unwrap().remove("csr");
        b
    });
    assert_eq!(status, 422, "{v}");
    assert!(
        v.to_string()
            .contains("needs a certificate signing request"),
        "{v}"
    );
    let (_, claiming) = agent_key(
        name,
        &[&format!("spiffe://{TRUST_DOMAIN}/agent/billing-agent-prod")],
    );
    let (status, v) = s.request_agent(&certificate_request(name, &claiming));
    assert_eq!(status, 422, "{v}");
    assert!(
        v.to_string().contains("another identity Steward trusts"),
        "{v}"
    );
    let (_, good) = agent_key(name, &[]);
    let tampered = {
        // One base64 character of the body changed: the self-signature no longer verifies.
        let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
        let line = &mut lines[3];
        let c = if line.as_bytes()[10] == b'A' {
            "B"
        } else {
            "A"
        };
        line.replace_range(10..11, c);
        lines.join("\n")
    };
    let (status, v) = s.request_agent(&certificate_request(name, &tampered));
    assert_eq!(status, 422, "{v}");
    assert!(
        !s.agents().iter().any(|a| a["name"] == name),
        "a refused CSR changes nothing"
    );
    let refusals = s
        .audit()
        .into_iter()
        .filter(|r| {
            r.to_string()
                .contains(&format!("certificate signing request for agent {name}"))
        })
        .count();
    assert!(refusals >= 2, "each refused CSR is audited ({refusals})");

    // The agent's CSR: the certificate is issued with the client and names the SPIFFE id only.
    let (key, csr) = agent_key(name, &[&format!("spiffe://{TRUST_DOMAIN}/agent/{name}")]);
    let requested_at = chrono::Utc::now();
    let (agent, pem) = onboard(&s, name, &csr);
    assert_eq!(agent["credential_kind"], "tls_client_auth");
    assert_eq!(agent["token_binding"], "certificate");
    assert_eq!(
        agent["secret_version"],
        Value::Null,
        "no secret in the vault"
    );
    let record = &agent["certificates"][0];
    let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/agent/{name}");
    assert_eq!(record["spiffe_id"], spiffe_id.as_str(), "{agent}");
    let der = der_of(&pem);
    let x5t = shared::ca::thumbprint(&der);
    assert_eq!(record["x5t#S256"], x5t.as_str());
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        hex::encode(cert.raw_serial()),
        record["serial"].as_str().unwrap()
    );
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => u.to_string(),
            other => panic!("only a URI SAN, got {other:?}"),
        })
        .collect();
    assert_eq!(uris, std::slice::from_ref(&spiffe_id));
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(
        lifetime <= LIFETIME_DAYS * 86_400,
        "a {lifetime}-second certificate under a {LIFETIME_DAYS}-day policy"
    );
    assert!(cert.validity().not_before.timestamp() >= requested_at.timestamp() - 5);
    // The certificate is the agent's key, certified: the key itself went nowhere.
    assert_eq!(
        cert.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
    );
    let client_id = agent["client_id"].as_str().unwrap().to_string();
    let client = s
        .idp_clients()
        .into_iter()
        .find(|c| c["client_id"] == client_id.as_str())
        .expect("the IdP holds the client");
    assert_eq!(
        client["secret_ids"],
        json!([]),
        "a certificate client has no secret"
    );

    // The CA certificate is public; the mTLS listener's server certificate chains to it.
    let (status, ca_pem) = s.send(s.http().get(s.url("/ca/certificate")));
    assert_eq!(status, 200);
    let ca_pem = ca_pem.as_str().unwrap().to_string();
    let with_cert = mtls_client(&ca_pem, Some((&pem, &key)));
    let without_cert = mtls_client(&ca_pem, None);

    // Over mTLS, the certificate alone authenticates the agent; the token names it.
    let (status, v) = certificate_token(&with_cert, &mtls, &client_id);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    let token = v["access_token"].as_str().unwrap().to_string();
    let claims = s.verify(&token).expect("the token verifies with the JWKS");
    assert_eq!(claims["cnf"]["x5t#S256"], x5t.as_str(), "{claims}");
    assert_eq!(claims["client_id"], client_id.as_str());
    // Without the certificate: over mTLS, or on the plain listener, no token.
    for (http, base) in [(&without_cert, mtls.as_str()), (s.http(), s.base.as_str())] {
        let (status, v) = certificate_token(http, base, &client_id);
        assert_eq!(
            (status, v["error"].as_str()),
            (401, Some("invalid_client")),
            "{base}: {v}"
        );
    }

    // Another certificate agent: its certificate does not stand for the first one.
    let other_name = "ledger-other-agent-prod";
    let (other_key, other_csr) = agent_key(other_name, &[]);
    let (other_agent, other_pem) = onboard(&s, other_name, &other_csr);
    let other = mtls_client(&ca_pem, Some((&other_pem, &other_key)));
    let (status, v) = certificate_token(&other, &mtls, &client_id);
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("another agent"),
        "{v}"
    );
    let other_client = other_agent["client_id"].as_str().unwrap();
    let (status, v) = certificate_token(&other, &mtls, other_client);
    assert_eq!(status, 200, "the other agent's own client: {v}");

    // Introspection: active only over mTLS with the certificate the token names.
    let held = introspect(&with_cert, &mtls, &token);
    assert_eq!(held["active"], true, "{held}");
    assert_eq!(held["cnf"]["x5t#S256"], x5t.as_str());
    for (http, base, why) in [
        (s.http(), s.base.as_str(), "bound to a client certificate"),
        (
            &without_cert,
            mtls.as_str(),
            "bound to a client certificate",
        ),
        (&other, mtls.as_str(), "not the one the token is bound to"),
    ] {
        let copied = introspect(http, base, &token);
        assert_eq!(copied["active"], false, "{base}: {copied}");
        assert!(
            copied["reason"].as_str().unwrap().contains(why),
            "{base}: {copied}"
        );
    }

    // The metadata names the mTLS endpoints (RFC 8705 §5).
    let (_, metadata) = s.send(
        s.http()
            .get(s.url("/.well-known/oauth-authorization-server")),
    );
    assert_eq!(
        metadata["mtls_endpoint_aliases"]["token_endpoint"],
        format!("{mtls}/oauth2/v1/token").as_str(),
        "{metadata}"
    );
    assert_eq!(metadata["tls_client_certificate_bound_access_tokens"], true);

    // Decommission: the certificate is revoked at once, listed in the CRL, refused over mTLS.
    let gone = s.decommission_approved(name, ALICE, SAM);
    assert_eq!(
        gone["certificates"][0]["revoked"]["reason"], "cessation_of_operation",
        "{gone}"
    );
    let steps: Vec<(&str, bool)> = gone["decommission"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["action"].as_str().unwrap(), s["done"] == true))
        .collect();
    assert!(steps.contains(&("revoke certificate", true)), "{steps:?}");
    let crl_der = s
        .http()
        .get(s.url("/ca/crl"))
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec();
    let (_, crl) = CertificateRevocationList::from_der(&crl_der).expect("a DER CRL");
    let ca_der = der_of(&ca_pem);
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    crl.verify_signature(ca_cert.public_key())
        .expect("the CRL is signed by the CA");
    let revoked: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert_eq!(
        revoked,
        [record["serial"].as_str().unwrap()],
        "only the decommissioned one"
    );
    let (status, crl_pem) = s.send(s.http().get(s.url("/ca/crl?format=pem")));
    assert_eq!(status, 200);
    assert!(
        crl_pem
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN X509 CRL-----")
    );
    let (status, v) = certificate_token(&with_cert, &mtls, &client_id);
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    assert!(
        v["error_description"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    let after = introspect(&with_cert, &mtls, &token);
    assert_eq!(after["active"], false, "{after}");

    // No private key anywhere: not the CA's, not the agents'.
    let ca_key = ca_private_key(&s);
    let everywhere = format!(
        "{}{}{}{}{}{}{}",
        Value::Array(s.agents()),
        Value::Array(s.audit()),
        Value::Array(s.idp_clients()),
        s.get_ok(&format!("/api/agents/{name}")),
        s.get_ok(&format!("/api/agents/{name}/history")),
        metadata,
        s.log()
    );
    assert!(!everywhere.contains("PRIVATE KEY"));
    for line in pem_body(&ca_key)
        .into_iter()
        .chain(pem_body(&key.serialize_pem()))
        .chain(pem_body(&other_key.serialize_pem()))
    {
        assert!(!everywhere.contains(&line), "a private key leaked");
    }
}

/// The CLI requests a certificate agent from a manifest naming its CSR file, and hands out its
/// certificate; a policy asking for certificates longer than 90 days is refused at start.
#[test]
fn the_cli_requests_a_certificate_agent_and_fetches_its_certificate() {
    let s = Server::start_with(certificates_in_prod());
    let dir = tempfile::tempdir().unwrap();
    let name = "ledger-cli-mtls-agent-prod";
    let (_key, csr) = agent_key(name, &[]);
    std::fs::write(dir.path().join("agent.csr"), &csr).unwrap();
    let manifest = dir.path().join("agent.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"{name}\"\nowner = \"{ALICE}\"\nteam = \"sre\"\nenvironment = \"prod\"\npurpose = \"reads the ledger\"\nscopes = [\"datadog:metrics:read\"]\ncredential = \"tls_client_auth\"\ncsr = \"agent.csr\"\n"
        ),
    )
    .unwrap();
    let (out, _, stderr) =
        run(&mut s.cli_as(ALICE, ["agents", "request", manifest.to_str().unwrap()]));
    assert!(out.status.success(), "{stderr}");
    let agent = s.wait_agent_status(name, "active");
    let (out, stdout, stderr) = run(&mut s.cli_as(ALICE, ["agents", "certificate", name]));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("-----BEGIN CERTIFICATE-----"),
        "{stdout}"
    );
    assert_eq!(
        shared::ca::thumbprint(&der_of(&stdout)),
        agent["certificates"][0]["x5t#S256"].as_str().unwrap()
    );
    // A secret agent has no certificate, and says so.
    let (out, _, stderr) = run(&mut s.cli(["agents", "certificate", "no-such-agent"]));
    assert!(!out.status.success());
    assert!(stderr.contains("no-such-agent"), "{stderr}");

    // More than 90 days is refused with a policy-file error.
    let mut o = Options::default();
    o.policy
        .push_str("\n[credentials]\ncertificate_lifetime_days = 91\n");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, &o.policy).unwrap();
    let (out, _, stderr) = run(steward().args([
        "validate",
        "--policy",
        policy.to_str().unwrap(),
        manifest.to_str().unwrap(),
    ]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("certificate_lifetime_days = 91 is out of range"),
        "{stderr}"
    );
}

/// A certificate rotation under load: the agent asks for a certificate-bound token over mTLS
/// every ~20 ms and fetches its certificate now and then; the owner submits its new CSR; the CA
/// issues the new certificate (same SPIFFE id, new serial and x5t#S256), the IdP accepts both,
/// the agent switches when it finds the new one, its first grant with it verifies the
/// rotation, and after the grace the old certificate is removed and revoked (superseded). Not
/// one token request fails; afterwards the old certificate is refused and the CRL lists it.
/// Only the owner or security may rotate; a bad CSR is refused and audited.
#[test]
fn a_certificate_rotates_while_the_agent_keeps_getting_tokens() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut o = certificates_in_prod();
    assert!(o.policy.contains("grace = \"24h\""));
    o.policy = o.policy.replace("grace = \"24h\"", "grace = \"2s\"");
    let s = Server::start_with(o);
    let name = "ledger-rotating-mtls-agent-prod";
    let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/agent/{name}");
    let (old_key, csr) = agent_key(name, &[]);
    let old_key = Arc::new(old_key);
    let (agent, old_pem) = onboard(&s, name, &csr);
    let client_id = agent["client_id"].as_str().unwrap().to_string();
    let old_record = agent["certificates"][0].clone();
    let old_x5t = shared::ca::thumbprint(&der_of(&old_pem));
    let (_, ca_pem) = s.send(s.http().get(s.url("/ca/certificate")));
    let ca_pem = ca_pem.as_str().unwrap().to_string();
    let mtls = mtls_base(&s);

    // The agent's next key: made by the agent, its CSR handed to the owner.
    let (new_key, new_csr) = agent_key(name, &[]);
    let new_key = Arc::new(new_key);
    let next: Arc<Mutex<Option<Arc<KeyPair>>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let fetch_token = s.person_token(BOB);
    let agent_thread = {
        let (next, stop, ca_pem, mtls, id) = (
            next.clone(),
            stop.clone(),
            ca_pem.clone(),
            mtls.clone(),
            client_id.clone(),
        );
        let cert_url = s.url(&format!("/api/agents/{name}/certificate"));
        let old_key = old_key.clone();
        let old_pem = old_pem.clone();
        let old_x5t = old_x5t.clone();
        std::thread::spawn(move || {
            let plain = reqwest::blocking::Client::new();
            let mut http = mtls_client(&ca_pem, Some((&old_pem, &old_key)));
            let mut current = old_x5t;
            let mut ok: Vec<String> = Vec::new();
            let mut failed: Vec<String> = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // Now and then: is there a newer certificate for the key the agent holds next?
                if i.is_multiple_of(10)
                    && let Some(key) = next.lock().unwrap().clone()
                    && let Ok(resp) = plain.get(&cert_url).bearer_auth(&fetch_token).send()
                    && resp.status().as_u16() == 200
                    && let Ok(pem) = resp.text()
                {
                    let x5t = shared::ca::thumbprint(&der_of(&pem));
                    if x5t != current {
                        http = mtls_client(&ca_pem, Some((&pem, &key)));
                        current = x5t;
                    }
                }
                i += 1;
                match certificate_token(&http, &mtls, &id) {
                    (200, _) => ok.push(current.clone()),
                    (status, v) => failed.push(format!("{status} {v}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        })
    };

    // Only the owner or security may rotate it; a CSR that does not verify is refused and
    // audited.
    let path = format!("/api/agents/{name}/certificates");
    let (status, v) = s.post_as(BOB, &path, &json!({ "csr": new_csr }));
    assert_eq!(status, 403, "{v}");
    let tampered = {
        let mut lines: Vec<String> = new_csr.lines().map(str::to_string).collect();
        let line = &mut lines[3];
        let c = if line.as_bytes()[10] == b'A' {
            "B"
        } else {
            "A"
        };
        line.replace_range(10..11, c);
        lines.join("\n")
    };
    let (status, v) = s.post_as(ALICE, &path, &json!({ "csr": tampered }));
    assert_eq!(status, 422, "{v}");
    assert!(
        s.audit().iter().any(|r| r
            .to_string()
            .contains(&format!("certificate signing request for agent {name}"))),
        "the refused CSR is audited"
    );

    std::thread::sleep(Duration::from_millis(300));
    let (status, started) = s.post_as(ALICE, &path, &json!({ "csr": new_csr }));
    assert_eq!(status, 202, "{started}");
    let workflow = started["workflow_id"].as_str().unwrap().to_string();
    s.wait_workflow_state(&workflow, "AwaitingUse");
    let both = s.agent(name);
    let certs = both["certificates"].as_array().unwrap().clone();
    assert_eq!(certs.len(), 2, "{both}");
    assert!(certs.iter().all(|c| c["revoked"].is_null()), "{both}");
    let new_record = certs[1].clone();
    assert_eq!(new_record["spiffe_id"], spiffe_id.as_str());
    assert_ne!(new_record["serial"], old_record["serial"]);
    assert_ne!(new_record["x5t#S256"], old_x5t.as_str());
    // The old certificate keeps working until the agent switches; let it fetch a few more.
    std::thread::sleep(Duration::from_millis(300));
    *next.lock().unwrap() = Some(new_key.clone());
    s.wait_workflow_state(&workflow, "Done");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = agent_thread.join().unwrap();

    assert!(
        failed.is_empty(),
        "token requests failed during the rotation: {failed:?}"
    );
    let new_x5t = new_record["x5t#S256"].as_str().unwrap();
    let with = |x5t: &str| ok.iter().filter(|k| *k == x5t).count();
    assert!(
        with(&old_x5t) >= 5,
        "{} with the old certificate",
        with(&old_x5t)
    );
    assert!(
        with(new_x5t) >= 5,
        "{} with the new certificate",
        with(new_x5t)
    );

    // The certificate served now is the new one; the old one is refused and in the CRL.
    let resp = s
        .http()
        .get(s.url(&format!("/api/agents/{name}/certificate")))
        .bearer_auth(s.person_token(BOB))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let served = resp.text().unwrap();
    assert_eq!(shared::ca::thumbprint(&der_of(&served)), new_x5t);
    let old_client = mtls_client(&ca_pem, Some((&old_pem, &old_key)));
    let (status, v) = certificate_token(&old_client, &mtls, &client_id);
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    let after = s.agent(name);
    let certs = after["certificates"].as_array().unwrap();
    assert_eq!(certs[0]["serial"], old_record["serial"]);
    assert_eq!(certs[0]["revoked"]["reason"], "superseded", "{after}");
    assert!(certs[1]["revoked"].is_null(), "{after}");
    let crl_der = s
        .http()
        .get(s.url("/ca/crl"))
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec();
    let (_, crl) = CertificateRevocationList::from_der(&crl_der).expect("a DER CRL");
    let revoked: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert_eq!(revoked, [old_record["serial"].as_str().unwrap()]);
    // The new certificate goes on working.
    let new_client = mtls_client(&ca_pem, Some((&served, &new_key)));
    let (status, v) = certificate_token(&new_client, &mtls, &client_id);
    assert_eq!(status, 200, "{v}");
}

/// The serials a CRL from `GET /ca/crl` lists, each with its reason code (RFC 5280).
fn crl_entries(s: &Server) -> Vec<(String, Option<String>)> {
    let der = s
        .http()
        .get(s.url("/ca/crl"))
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec();
    let (_, crl) = CertificateRevocationList::from_der(&der).expect("a DER CRL");
    crl.iter_revoked_certificates()
        .map(|r| {
            let reason = r.reason_code().map(|(_, c)| c.to_string());
            (hex::encode(r.raw_serial()), reason)
        })
        .collect()
}

/// The kill switch on a certificate agent: its certificate goes on hold (the CRL lists it as
/// `certificateHold`, so agent-to-agent mTLS peers refuse it too) and the mTLS token endpoint
/// refuses it; the unfreeze releases the hold, and the same certificate works again.
#[test]
fn a_frozen_certificate_agent_is_on_hold_until_unfrozen() {
    let s = Server::start_with(certificates_in_prod());
    let name = "ledger-held-agent-prod";
    let (key, csr) = agent_key(name, &[]);
    let (agent, pem) = onboard(&s, name, &csr);
    let client_id = agent["client_id"].as_str().unwrap().to_string();
    let serial = agent["certificates"][0]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, ca_pem) = s.send(s.http().get(s.url("/ca/certificate")));
    let with_cert = mtls_client(ca_pem.as_str().unwrap(), Some((&pem, &key)));
    let mtls = mtls_base(&s);
    assert_eq!(certificate_token(&with_cert, &mtls, &client_id).0, 200);
    assert!(crl_entries(&s).is_empty());

    let (status, v) = s.post_as(
        ALICE,
        &format!("/api/agents/{name}/freeze"),
        &json!({"reason": "its key may have leaked"}),
    );
    assert_eq!(status, 202, "{v}");
    let freeze = v["started"][0]["workflow_id"].as_str().unwrap().to_string();
    s.wait_workflow_state(&freeze, "AwaitingDecision");
    let frozen = s.agent(name);
    assert_eq!(
        frozen["certificates"][0]["revoked"]["reason"], "certificate_hold",
        "{frozen}"
    );
    let crl = crl_entries(&s);
    assert_eq!(crl.len(), 1, "{crl:?}");
    assert_eq!(crl[0].0, serial);
    assert!(
        crl[0].1.as_deref().is_some_and(|r| r.contains("Hold")),
        "the reason is certificateHold: {crl:?}"
    );
    let (status, v) = certificate_token(&with_cert, &mtls, &client_id);
    assert_eq!(status, 401, "{v}");
    assert!(
        s.audit().iter().any(|r| r
            .to_string()
            .contains(&format!("certificate(s) {serial} on hold"))),
        "the freeze's audit names the held certificate"
    );

    // Security unfreezes: the hold is released and the same certificate works again.
    let decision = s.pending_approval(&freeze);
    let (status, v) = s.decide(decision["request"]["id"].as_str().unwrap(), "approve", SAM);
    assert_eq!(status, 202, "{v}");
    let back = s.wait_agent_status(name, "active");
    assert!(back["certificates"][0]["revoked"].is_null(), "{back}");
    assert!(
        crl_entries(&s).is_empty(),
        "the next CRL no longer lists it"
    );
    let (status, v) = certificate_token(&with_cert, &mtls, &client_id);
    assert_eq!(status, 200, "{v}");
}

/// `steward agents rotate-certificate` with the agent's next CSR. Where the IdP does not say
/// which certificate a grant used, the owner confirms the switch (`steward agents
/// confirm-certificate`): only the owner or security may, only for the certificate the rotation
/// waits for; the old certificate is then revoked after the grace period.
#[test]
fn the_owner_confirms_the_new_certificate_from_the_cli_and_the_old_one_is_revoked() {
    let mut o = certificates_in_prod();
    o.policy = o.policy.replace("grace = \"24h\"", "grace = \"1s\"");
    let s = Server::start_with(o);
    let name = "ledger-confirmed-mtls-agent-prod";
    let (_old_key, csr) = agent_key(name, &[]);
    let (agent, _) = onboard(&s, name, &csr);
    let old_serial = agent["certificates"][0]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let (_new_key, new_csr) = agent_key(name, &[]);
    let csr_file = dir.path().join("next.csr");
    std::fs::write(&csr_file, &new_csr).unwrap();

    let (out, stdout, stderr) = run(&mut s.cli_as(
        BOB,
        [
            "agents",
            "rotate-certificate",
            name,
            "--csr",
            csr_file.to_str().unwrap(),
        ],
    ));
    assert!(!out.status.success(), "not Bob's agent: {stdout}");
    assert!(
        stderr.contains("403") || stderr.contains("not allowed"),
        "{stderr}"
    );
    let (out, stdout, stderr) = run(&mut s.cli_as(
        ALICE,
        [
            "agents",
            "rotate-certificate",
            name,
            "--csr",
            csr_file.to_str().unwrap(),
        ],
    ));
    assert!(out.status.success(), "{stderr}");
    let workflow = stdout
        .split_whitespace()
        .find(|w| w.starts_with("certificate-rotation-"))
        .unwrap_or_else(|| panic!("the workflow id: {stdout}"))
        .to_string();
    s.wait_workflow_state(&workflow, "AwaitingUse");
    let both = s.agent(name);
    let new_serial = both["certificates"][1]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let new_x5t = both["certificates"][1]["x5t#S256"]
        .as_str()
        .unwrap()
        .to_string();

    let confirm = |person: &str, certificate: &str| {
        run(&mut s.cli_as(person, ["agents", "confirm-certificate", name, certificate]))
    };
    let (out, _, stderr) = confirm(ALICE, &old_serial);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("waits for certificate {old_serial} to be used")),
        "the old certificate is not the one awaited: {stderr}"
    );
    let (out, _, _) = confirm(BOB, &new_serial);
    assert!(!out.status.success(), "not Bob's agent");
    // By serial or by x5t#S256: the same certificate.
    let (out, stdout, stderr) = confirm(ALICE, &new_x5t);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("confirmed in use"), "{stdout}");
    s.wait_workflow_state(&workflow, "Done");
    let after = s.agent(name);
    assert_eq!(after["certificates"][0]["revoked"]["reason"], "superseded");
    assert!(after["certificates"][1]["revoked"].is_null(), "{after}");
    assert!(
        s.audit().iter().any(|r| r.to_string().contains(&format!(
            "alice@example.com confirmed the agent uses certificate {new_serial}"
        ))),
        "the confirmation is attributed"
    );
}

/// A new certificate the agent never uses is not left valid: at `[credentials] first_use_secs`
/// the rotation removes it at the IdP and revokes it, and the current certificate keeps working.
#[test]
fn an_unused_new_certificate_is_revoked_at_the_first_use_deadline() {
    let mut o = certificates_in_prod();
    o.policy.push_str("first_use_secs = 1\n");
    let s = Server::start_with(o);
    let name = "ledger-unswitched-agent-prod";
    let (key, csr) = agent_key(name, &[]);
    let (agent, pem) = onboard(&s, name, &csr);
    let client_id = agent["client_id"].as_str().unwrap().to_string();
    let (_, next_csr) = agent_key(name, &[]);
    let (status, started) = s.post_as(
        ALICE,
        &format!("/api/agents/{name}/certificates"),
        &json!({ "csr": next_csr }),
    );
    assert_eq!(status, 202, "{started}");
    let workflow = started["workflow_id"].as_str().unwrap();
    s.wait_workflow_state(workflow, "Failed");
    let after = s.agent(name);
    assert!(after["certificates"][0]["revoked"].is_null(), "{after}");
    assert_eq!(
        after["certificates"][1]["revoked"]["reason"], "cessation_of_operation",
        "{after}"
    );
    let unused = after["certificates"][1]["serial"].as_str().unwrap();
    assert!(crl_entries(&s).iter().any(|(s, _)| s == unused));
    // The certificate handed out is the one that still works, not the revoked one.
    let resp = s
        .http()
        .get(s.url(&format!("/api/agents/{name}/certificate")))
        .bearer_auth(s.person_token(ALICE))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["x-certificate-serial"].to_str().unwrap(),
        after["certificates"][0]["serial"].as_str().unwrap()
    );
    assert_eq!(resp.text().unwrap(), pem);
    let (_, ca_pem) = s.send(s.http().get(s.url("/ca/certificate")));
    let with_cert = mtls_client(ca_pem.as_str().unwrap(), Some((&pem, &key)));
    assert_eq!(
        certificate_token(&with_cert, &mtls_base(&s), &client_id).0,
        200,
        "the current certificate keeps working"
    );
}

/// A certificate near its end: the sweep starts its watch `certificate_remind_days` ahead, the
/// owner is asked to renew it (with the command to run), and the watch waits for the
/// certificate's `notAfter` to remove it at the IdP. Once per certificate.
#[test]
fn the_sweep_asks_the_owner_to_renew_a_certificate_near_its_end() {
    let mut o = certificates_in_prod();
    o.policy = o.policy.replace(
        &format!("certificate_lifetime_days = {LIFETIME_DAYS}"),
        "certificate_lifetime_days = 1\ncertificate_remind_days = 2",
    );
    let s = Server::start_with(o);
    let name = "ledger-renewing-agent-prod";
    let (_key, csr) = agent_key(name, &[]);
    let (agent, _) = onboard(&s, name, &csr);
    let serial = agent["certificates"][0]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, report) = s.post("/api/sweep", &json!({}));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["certificate_expiries_started"], 1, "{report}");
    let asked = s.wait("the owner asked to renew", SETTLE, || {
        array(s.get_ok("/api/notifications"))
            .into_iter()
            .find(|n| n["recipient"] == ALICE && n.to_string().contains("its certificate ends at"))
    });
    let text = asked.to_string();
    assert!(text.contains(&serial), "{text}");
    assert!(
        text.contains(&format!("steward agents rotate-certificate {name}")),
        "{text}"
    );
    let history = s.get_ok(&format!(
        "/api/agents/{}/history",
        agent["id"].as_str().unwrap()
    ));
    let watch_id = array(history)
        .into_iter()
        .find(|e| e["kind"] == "certificate_expiry")
        .and_then(|e| e["workflow_id"].as_str().map(str::to_string))
        .expect("a certificate expiry watch");
    let watch = s.workflow(&watch_id);
    assert_eq!(watch["workflow"]["state_name"], "Watching", "{watch}");
    let (_, again) = s.post("/api/sweep", &json!({}));
    assert_eq!(again["certificate_expiries_started"], 0, "{again}");

    // A decommission ends the watch: nothing is left to remove or to tell at the end.
    s.decommission_approved(name, ALICE, SAM);
    s.wait_workflow_state(&watch_id, "Cancelled");
}
