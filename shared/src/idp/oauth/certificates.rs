//! Certificate clients (RFC 8705): `tls_client_auth` agents' clients, registered by RFC 7591
//! with the method [`OAuthSettings::certificate_clients`] names and
//! `tls_client_certificate_bound_access_tokens: true`, so that the server issues tokens only
//! over mutual TLS with the agent's certificate and binds them to it (`cnf.x5t#S256`). The
//! certificate comes from Steward's internal CA (`crate::ca`); this adapter never holds a
//! private key, and presents no certificate itself: agents go to the server's mTLS endpoints
//! ([`Endpoints::mtls_token_endpoint`], from `mtls_endpoint_aliases`, RFC 8705 §5).
//!
//! - **`self_signed_tls_client_auth`** (§2.2, recommended): the certificate itself is
//!   registered, as a JWK of its public key with `x5c` (and `kid` its `x5t#S256`) in the
//!   client's `jwks`; the server accepts exactly the registered certificates, whoever issued
//!   them. `add_certificate` and `remove_certificate` are RFC 7592 updates of that `jwks`, each
//!   checked against the server's echo: a removed certificate stops authenticating the client
//!   as soon as the update returns, as on the development IdP.
//! - **`tls_client_auth`** (§2.1): the SPIFFE id is registered as `tls_client_auth_san_uri`,
//!   and the server must trust Steward's CA (`GET /ca/certificate`). RFC 7591 cannot pin one
//!   certificate here: any unexpired certificate of the CA for that SPIFFE id authenticates
//!   the client. So `add_certificate` changes nothing at the server (a rotation keeps the
//!   SPIFFE id; another one is refused), and `remove_certificate` cannot take one certificate
//!   away: it answers that nothing changed at the server, which still accepts that certificate
//!   until it expires, or until it reads Steward's CRL (`GET /ca/crl`), where the certificate
//!   rotation's next step lists it (revoked as `superseded`). A name used again after a
//!   decommission has the same SPIFFE id, so an earlier agent's certificate (revoked, listed in
//!   the CRL) stands for the later one at a server that reads no CRL: use
//!   `self_signed_tls_client_auth` unless the server checks revocation.
//!
//! Either way the vault record lists the certificates registered (`x5t#S256`, SPIFFE id,
//! serial; public), which marks the client as a certificate client: it has no secret, and
//! keys and secrets are refused for it.

use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// A certificate of a certificate client as its vault record keeps it (public facts only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CertificateDoc {
    #[serde(rename = "x5t#S256")]
    pub(super) x5t_s256: String,
    pub(super) spiffe_id: String,
    pub(super) serial: String,
}

/// A certificate checked against the record that names it, ready to register.
#[derive(Debug)]
pub(super) struct CheckedCertificate {
    pub(super) record: CertificateRecord,
    /// Its public key as a JWK, `kid` its `x5t#S256`, `x5c` the certificate (RFC 7517 §4.7).
    pub(super) jwk: Value,
}

impl CheckedCertificate {
    pub(super) fn doc(&self) -> CertificateDoc {
        CertificateDoc {
            x5t_s256: self.record.x5t_s256.clone(),
            spiffe_id: self.record.spiffe_id.clone(),
            serial: self.record.serial.clone(),
        }
    }
}

/// `pem` read as one certificate, which must be the one `record` describes (its `x5t#S256`,
/// serial and SPIFFE id), and turned into the JWK `self_signed_tls_client_auth` registers.
pub(super) fn checked_certificate(
    record: &CertificateRecord,
    pem: &str,
) -> Result<CheckedCertificate, IdpError> {
    let refuse = |why: String| {
        IdpError::Refused(format!(
            "certificate {} cannot be registered: {why}",
            record.serial
        ))
    };
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.trim_start().as_bytes())
        .map_err(|_| refuse("its PEM does not read".into()))?;
    if block.label != "CERTIFICATE" {
        return Err(refuse(format!(
            "its PEM is a `{}` block, not a CERTIFICATE",
            block.label.chars().take(40).collect::<String>()
        )));
    }
    let der = block.contents;
    let x5t = crate::ca::thumbprint(&der);
    if x5t != record.x5t_s256 {
        return Err(refuse(format!(
            "the PEM given is another certificate (x5t#S256 {x5t}, not {})",
            record.x5t_s256
        )));
    }
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| refuse(format!("it does not parse: {e}")))?;
    if hex::encode(cert.raw_serial()) != record.serial {
        return Err(refuse("its serial is not the record's".into()));
    }
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !uris.contains(&record.spiffe_id) {
        return Err(refuse(format!(
            "it does not name the SPIFFE id {} of its record",
            record.spiffe_id
        )));
    }
    let mut jwk = public_jwk(&cert).map_err(refuse)?;
    // Checked as agents' keys are: a usable public JWK with public members only.
    crate::agent_key::public_key(&jwk).map_err(|e| refuse(e.to_string()))?;
    jwk["kid"] = json!(record.x5t_s256);
    jwk["x5c"] = json!([STANDARD.encode(&der)]);
    Ok(CheckedCertificate {
        record: record.clone(),
        jwk,
    })
}

/// The certificate's public key as a JWK: EC P-256 and P-384, Ed25519, RSA (what the CA
/// certifies).
fn public_jwk(cert: &X509Certificate<'_>) -> Result<Value, String> {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or("its EC key names no curve")?;
        let (crv, len) = if curve == OID_EC_P256 {
            ("P-256", 32)
        } else if curve == OID_NIST_EC_P384 {
            ("P-384", 48)
        } else {
            return Err(format!("its EC curve {curve} is not P-256 or P-384"));
        };
        let point = &spki.subject_public_key.data;
        if point.len() != 1 + 2 * len || point[0] != 4 {
            return Err("its EC key is not an uncompressed point".into());
        }
        return Ok(json!({
            "kty": "EC",
            "crv": crv,
            "x": b64(&point[1..=len]),
            "y": b64(&point[1 + len..]),
        }));
    }
    if *alg == OID_SIG_ED25519 {
        return Ok(json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64(&spki.subject_public_key.data),
        }));
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err("its RSA key does not parse".into());
        };
        let unsigned = |b: &[u8]| {
            let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
            b64(&b[start..])
        };
        return Ok(json!({
            "kty": "RSA",
            "n": unsigned(rsa.modulus),
            "e": unsigned(rsa.exponent),
        }));
    }
    Err(format!("its key type {alg} is not EC, Ed25519 or RSA"))
}

/// The `x5t#S256` of each certificate registered in a `jwks` (the SHA-256 of `x5c[0]`).
fn registered_certificates(m: &Map<String, Value>) -> Vec<String> {
    m.get("jwks")
        .and_then(|j| j.get("keys"))
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.get("x5c")?.get(0)?.as_str())
                .filter_map(|c| STANDARD.decode(c).ok())
                .map(|der| crate::ca::thumbprint(&der))
                .collect()
        })
        .unwrap_or_default()
}

/// The client metadata of a new certificate client.
pub(super) fn certificate_metadata(
    body: &mut Value,
    method: CertificateClients,
    certificate: &CheckedCertificate,
) {
    body["token_endpoint_auth_method"] = json!(method.method());
    body["tls_client_certificate_bound_access_tokens"] = json!(true);
    match method {
        CertificateClients::SelfSigned => {
            body["jwks"] = json!({ "keys": [certificate.jwk] });
        }
        CertificateClients::TlsClientAuth => {
            body["tls_client_auth_san_uri"] = json!(certificate.record.spiffe_id);
        }
    }
}

/// Checks a certificate client's registration answer: the method, the binding, and the
/// certificate (self-signed) or its SPIFFE id (`tls_client_auth`).
pub(super) fn check_certificate_client(
    m: &Map<String, Value>,
    client_id: &str,
    method: CertificateClients,
    certificate: &CheckedCertificate,
) -> Result<(), IdpError> {
    let got = str_field(m, "token_endpoint_auth_method");
    if got != Some(method.method()) {
        return Err(IdpError::Refused(format!(
            "the server registered client {client_id} with token_endpoint_auth_method `{}` \
             instead of `{}`",
            got.unwrap_or("<none>"),
            method.method()
        )));
    }
    if m.get("tls_client_certificate_bound_access_tokens") != Some(&Value::Bool(true)) {
        return Err(IdpError::Refused(format!(
            "the server registered client {client_id} without \
             tls_client_certificate_bound_access_tokens (RFC 8705 §3.4), so its tokens would \
             not be bound to the agent's certificate"
        )));
    }
    let record = &certificate.record;
    match method {
        CertificateClients::SelfSigned => {
            if !registered_certificates(m).contains(&record.x5t_s256) {
                return Err(IdpError::Refused(format!(
                    "the server registered client {client_id} without certificate {} \
                     (x5t#S256 {}) in its jwks",
                    record.serial, record.x5t_s256
                )));
            }
        }
        CertificateClients::TlsClientAuth => {
            if str_field(m, "tls_client_auth_san_uri") != Some(record.spiffe_id.as_str()) {
                return Err(IdpError::Refused(format!(
                    "the server registered client {client_id} without tls_client_auth_san_uri \
                     {}, so no certificate of the agent would authenticate it",
                    record.spiffe_id
                )));
            }
        }
    }
    Ok(())
}

impl Endpoints {
    /// Refuses early, with the reason, what the server's metadata says it does not do.
    pub(super) fn check_certificate_support(
        &self,
        method: CertificateClients,
    ) -> Result<(), IdpError> {
        if let Some(methods) = &self.auth_methods
            && !methods.iter().any(|m| m == method.method())
        {
            return Err(IdpError::Refused(format!(
                "the server does not accept {} (its token_endpoint_auth_methods_supported: {}); \
                 set {CERTIFICATE_CLIENTS_ENV} to a method it lists, or use credential kind \
                 `private_key_jwt` with it",
                method.method(),
                methods.join(", ")
            )));
        }
        if !self.certificate_bound_tokens {
            return Err(IdpError::Refused(
                "the server does not bind tokens to client certificates (no \
                 tls_client_certificate_bound_access_tokens in its metadata, RFC 8705 §3.3); \
                 use credential kind `private_key_jwt` with it"
                    .into(),
            ));
        }
        if self.mtls_token_endpoint().scheme() != "https" {
            return Err(IdpError::Refused(format!(
                "the server's token endpoint for mutual TLS, {}, is not https, so no client \
                 certificate can reach it; the server must name an https one in \
                 mtls_endpoint_aliases (RFC 8705 §5)",
                self.mtls_token_endpoint()
            )));
        }
        Ok(())
    }
}

impl OAuthDcr {
    /// The configured method, or a refusal that says how to turn certificate clients on.
    fn certificate_method(&self) -> Result<CertificateClients, IdpError> {
        self.settings.certificate_clients.ok_or_else(|| {
            IdpError::Refused(format!(
                "this OAuth adapter registers no tls_client_auth clients unless \
                 {CERTIFICATE_CLIENTS_ENV} is `self_signed_tls_client_auth` or \
                 `tls_client_auth`; use credential kind `secret` or `private_key_jwt` with it"
            ))
        })
    }

    /// The port's `create_certificate_client`, once per idempotency key like `create_client`.
    pub(super) async fn register_certificate_client(
        &self,
        spec: &ClientSpec,
        record: &CertificateRecord,
        pem: &str,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        let method = self.certificate_method()?;
        let certificate = checked_certificate(record, pem)?;
        let _g = self.lock.lock().await;
        let key_name = self.idempotency_name(idempotency_key);
        // A repeat whose first answer was lost: the client exists, with its certificate (the
        // executor issues one certificate per command key).
        if let Some(reg) = self
            .registered_before(idempotency_key, ClientKind::Certificate)
            .await?
        {
            return Ok(reg.client_id);
        }
        let (reg, _) = self
            .register(
                spec,
                idempotency_key,
                NewAuth::Certificate {
                    method,
                    certificate: &certificate,
                },
            )
            .await?;
        self.store(
            &key_name,
            &IdempotencyDoc {
                client_id: reg.client_id.clone(),
            },
        )
        .await?;
        tracing::info!(
            client_id = %reg.client_id,
            method = method.method(),
            x5t_s256 = %record.x5t_s256,
            spiffe_id = %record.spiffe_id,
            "registered an OAuth certificate client (RFC 7591, RFC 8705)"
        );
        Ok(reg.client_id)
    }

    /// The live certificate client `client_id`, its current registration and its method.
    async fn certificate_client(
        &self,
        client_id: &str,
    ) -> Result<(Registration, Map<String, Value>, CertificateClients), IdpError> {
        let reg = self.live_registration(client_id).await?;
        let current = self.read_live(&reg).await?;
        let method = match str_field(&current, "token_endpoint_auth_method") {
            Some(SELF_SIGNED_TLS_CLIENT_AUTH) => CertificateClients::SelfSigned,
            Some(TLS_CLIENT_AUTH) => CertificateClients::TlsClientAuth,
            other => {
                return Err(IdpError::Refused(format!(
                    "client {client_id} authenticates with `{}`, not a certificate (RFC 8705): \
                     certificates are for clients made by create_certificate_client",
                    other.unwrap_or("client_secret_basic")
                )));
            }
        };
        Ok((reg, current, method))
    }

    /// An RFC 7592 update registering exactly `jwks`, checked against the server's answer.
    async fn register_certificates(
        &self,
        reg: &mut Registration,
        current: &Map<String, Value>,
        jwks: Vec<Value>,
        x5t_s256: &str,
        present: bool,
    ) -> Result<(), IdpError> {
        let mut body = update_body(current);
        body.insert("jwks".into(), json!({ "keys": jwks }));
        let resp = self.update_keeping_secret(reg, body).await?;
        if registered_certificates(&resp).iter().any(|x| x == x5t_s256) != present {
            return Err(IdpError::Refused(format!(
                "the server kept client {}'s jwks as they were, so certificate {x5t_s256} could \
                 not be {}",
                reg.client_id,
                if present { "registered" } else { "taken out" }
            )));
        }
        if resp.get("tls_client_certificate_bound_access_tokens") != Some(&Value::Bool(true)) {
            return Err(IdpError::Refused(format!(
                "the server dropped tls_client_certificate_bound_access_tokens from client {} \
                 on an update, so its tokens are no longer bound to the certificate; delete the \
                 client",
                reg.client_id
            )));
        }
        Ok(())
    }

    pub(super) async fn add_client_certificate(
        &self,
        client_id: &str,
        record: &CertificateRecord,
        pem: &str,
    ) -> Result<(), IdpError> {
        let certificate = checked_certificate(record, pem)?;
        let _g = self.lock.lock().await;
        let (mut reg, current, method) = self.certificate_client(client_id).await?;
        if method == CertificateClients::TlsClientAuth {
            let registered = str_field(&current, "tls_client_auth_san_uri");
            if registered != Some(record.spiffe_id.as_str()) {
                return Err(IdpError::Refused(format!(
                    "client {client_id} accepts certificates for {} (tls_client_auth_san_uri), \
                     not {}: a tls_client_auth client is registered for one SPIFFE id",
                    registered.unwrap_or("<no SPIFFE id>"),
                    record.spiffe_id
                )));
            }
        }
        // Remembered first: a certificate the server holds is always one the record lists.
        let docs = reg.certificates.get_or_insert_with(Vec::new);
        if !docs.iter().any(|c| c.x5t_s256 == record.x5t_s256) {
            docs.push(certificate.doc());
            self.save_registration(&reg).await?;
        }
        if method == CertificateClients::TlsClientAuth {
            // The server accepts every certificate of the CA for that SPIFFE id already.
            tracing::info!(
                client_id,
                x5t_s256 = %record.x5t_s256,
                "a tls_client_auth client accepts the new certificate by its SPIFFE id; nothing \
                 to change at the OAuth server"
            );
            return Ok(());
        }
        let mut jwks: Vec<Value> = current
            .get("jwks")
            .and_then(|j| j.get("keys"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if registered_certificates(&current).contains(&record.x5t_s256) {
            return Ok(());
        }
        jwks.push(certificate.jwk);
        self.register_certificates(&mut reg, &current, jwks, &record.x5t_s256, true)
            .await?;
        tracing::info!(
            client_id,
            x5t_s256 = %record.x5t_s256,
            "added a certificate to an OAuth client's jwks (RFC 7592, self_signed_tls_client_auth)"
        );
        Ok(())
    }

    pub(super) async fn remove_client_certificate(
        &self,
        client_id: &str,
        x5t_s256: &str,
    ) -> Result<(), IdpError> {
        let _g = self.lock.lock().await;
        let (mut reg, current, method) = self.certificate_client(client_id).await?;
        match method {
            CertificateClients::SelfSigned => {
                let mut jwks: Vec<Value> = current
                    .get("jwks")
                    .and_then(|j| j.get("keys"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let before = jwks.len();
                jwks.retain(|k| {
                    let x5t = k
                        .get("x5c")
                        .and_then(|c| c.get(0))
                        .and_then(Value::as_str)
                        .and_then(|c| STANDARD.decode(c).ok())
                        .map(|der| crate::ca::thumbprint(&der));
                    x5t.as_deref() != Some(x5t_s256)
                });
                if jwks.len() != before {
                    self.register_certificates(&mut reg, &current, jwks, x5t_s256, false)
                        .await?;
                }
                tracing::info!(
                    client_id,
                    x5t_s256,
                    "removed a certificate from an OAuth client's jwks (RFC 7592, \
                     self_signed_tls_client_auth)"
                );
            }
            CertificateClients::TlsClientAuth => {
                // See the module doc: RFC 7591 cannot take one certificate of a SPIFFE id away.
                tracing::warn!(
                    client_id,
                    x5t_s256,
                    "a tls_client_auth client cannot stop accepting one certificate of its \
                     SPIFFE id: the OAuth server accepts it until it expires, or until it reads \
                     the certificate's revocation in Steward's CRL"
                );
            }
        }
        if let Some(docs) = &mut reg.certificates
            && docs.iter().any(|c| c.x5t_s256 == x5t_s256)
        {
            docs.retain(|c| c.x5t_s256 != x5t_s256);
            self.save_registration(&reg).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    /// A certificate from a CA made here, as Steward's CA issues them, and its record.
    fn issued(key_alg: &'static rcgen::SignatureAlgorithm) -> (CertificateRecord, String) {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate_for(key_alg).unwrap();
        let spiffe_id = "spiffe://steward.test/agent/ledger-agent-prod";
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(spiffe_id.try_into().unwrap()));
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0x01]));
        let cert = params.signed_by(&key, &issuer).unwrap();
        let record = CertificateRecord {
            serial: "0a01".into(),
            spiffe_id: spiffe_id.into(),
            x5t_s256: crate::ca::thumbprint(cert.der()),
            not_before: Utc::now(),
            not_after: Utc::now(),
            revoked: None,
        };
        (record, cert.pem())
    }

    #[test]
    fn a_certificate_becomes_a_jwk_with_its_x5c_and_thumbprint() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let (record, pem) = issued(alg);
            let c = checked_certificate(&record, &pem).unwrap();
            assert_eq!(c.jwk["kid"], json!(record.x5t_s256));
            let m = json!({"jwks": {"keys": [c.jwk]}});
            assert_eq!(
                registered_certificates(m.as_object().unwrap()),
                vec![record.x5t_s256.clone()]
            );
            // The JWK is the certificate's key: its thumbprint is the SPKI's key.
            crate::agent_key::public_key(&c.jwk).unwrap();
            assert!(c.jwk.get("d").is_none());
        }
    }

    #[test]
    fn a_pem_that_is_not_the_records_certificate_is_refused() {
        let (record, pem) = issued(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, other) = issued(&rcgen::PKCS_ECDSA_P256_SHA256);
        let e = checked_certificate(&record, &other)
            .unwrap_err()
            .to_string();
        assert!(e.contains("another certificate"), "{e}");
        let mut wrong_id = record.clone();
        wrong_id.spiffe_id = "spiffe://steward.test/agent/other-agent".into();
        let e = checked_certificate(&wrong_id, &pem)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SPIFFE id"), "{e}");
        let mut wrong_serial = record.clone();
        wrong_serial.serial = "0b02".into();
        assert!(checked_certificate(&wrong_serial, &pem).is_err());
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let e = checked_certificate(&record, &key).unwrap_err().to_string();
        assert!(e.contains("not a CERTIFICATE"), "{e}");
        // A private key is never repeated in a refusal.
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!e.contains(&body[..20]), "{e}");
    }

    #[test]
    fn a_certificate_client_registration_is_checked() {
        let (record, pem) = issued(&rcgen::PKCS_ECDSA_P256_SHA256);
        let c = checked_certificate(&record, &pem).unwrap();
        for method in [
            CertificateClients::SelfSigned,
            CertificateClients::TlsClientAuth,
        ] {
            let mut body = json!({});
            certificate_metadata(&mut body, method, &c);
            let m = body.as_object().unwrap();
            check_certificate_client(m, "c", method, &c).unwrap();
            // Each dropped member is refused: the method, the binding, the certificate.
            for dropped in [
                "token_endpoint_auth_method",
                "tls_client_certificate_bound_access_tokens",
                match method {
                    CertificateClients::SelfSigned => "jwks",
                    CertificateClients::TlsClientAuth => "tls_client_auth_san_uri",
                },
            ] {
                let mut less = m.clone();
                less.remove(dropped);
                assert!(
                    check_certificate_client(&less, "c", method, &c).is_err(),
                    "{method:?} without {dropped}"
                );
            }
        }
    }

    #[test]
    fn the_server_must_do_certificate_bound_tokens_over_https() {
        let url = |u: &str| Url::parse(u).unwrap();
        let mut e = Endpoints {
            token: url("http://127.0.0.1:1/token"),
            registration: url("http://127.0.0.1:1/reg"),
            revocation: None,
            introspection: None,
            auth_methods: Some(vec!["self_signed_tls_client_auth".into()]),
            dpop_algs: None,
            certificate_bound_tokens: true,
            mtls_token: Some(url("https://127.0.0.1:2/token")),
            mtls_introspection: None,
            mtls_revocation: None,
        };
        e.check_certificate_support(CertificateClients::SelfSigned)
            .unwrap();
        let e2 = e
            .check_certificate_support(CertificateClients::TlsClientAuth)
            .unwrap_err()
            .to_string();
        assert!(e2.contains(CERTIFICATE_CLIENTS_ENV), "{e2}");
        e.mtls_token = None;
        let e3 = e
            .check_certificate_support(CertificateClients::SelfSigned)
            .unwrap_err()
            .to_string();
        assert!(e3.contains("mtls_endpoint_aliases"), "{e3}");
        e.mtls_token = Some(url("https://127.0.0.1:2/token"));
        e.certificate_bound_tokens = false;
        assert!(
            e.check_certificate_support(CertificateClients::SelfSigned)
                .is_err()
        );
    }

    #[test]
    fn certificate_clients_are_off_unless_named() {
        assert_eq!(CertificateClients::parse("").unwrap(), None);
        assert_eq!(CertificateClients::parse("off").unwrap(), None);
        assert_eq!(
            CertificateClients::parse("self_signed_tls_client_auth").unwrap(),
            Some(CertificateClients::SelfSigned)
        );
        assert_eq!(
            CertificateClients::parse(" tls_client_auth ").unwrap(),
            Some(CertificateClients::TlsClientAuth)
        );
        let e = CertificateClients::parse("mtls").unwrap_err().to_string();
        assert!(e.contains(CERTIFICATE_CLIENTS_ENV), "{e}");
        let s = OAuthSettings::new("https://a.example").unwrap();
        assert_eq!(s.certificate_clients, None, "off by default");
    }
}
