//! Reading an agent's certificate signing request (PKCS#10): the one thing taken from it is the
//! public key it proves possession of. Its subject, requested extensions and attributes are
//! read by the parser and then ignored; the certificate's names and usages are Steward's.

use super::CaError;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::error::X509Error;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The smallest RSA modulus certified (NIST SP 800-57: 112-bit security until 2030).
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus certified: what ring (and so the mTLS listener) verifies.
pub const MAX_RSA_BITS: usize = 8192;

/// The agent's public key, as the certificate will carry it.
pub(super) struct SubjectKey {
    /// The SubjectPublicKeyInfo's BIT STRING contents (an EC point, an Ed25519 key, an RSA
    /// `RSAPublicKey`).
    key: Vec<u8>,
    /// Names the key type for rcgen (which writes the algorithm identifier from it).
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

const PEM_LABELS: [&str; 2] = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// The CSR's public key, once its self-signature verifies and its key is one Steward
/// certifies. Checks run from the cheapest to the most telling, so a refusal names the first
/// thing to fix: PEM, PKCS#10, key type and size, signature algorithm, signature.
pub(super) fn read(csr_pem: &str) -> Result<SubjectKey, CaError> {
    let (rest, pem) =
        x509_parser::pem::parse_x509_pem(csr_pem.trim_start().as_bytes()).map_err(|_| {
            CaError::CsrNotPem {
                found: "no PEM block".into(),
            }
        })?;
    if !PEM_LABELS.contains(&pem.label.as_str()) {
        return Err(CaError::CsrNotPem {
            found: format!(
                "a `{}` PEM block",
                pem.label.chars().take(40).collect::<String>()
            ),
        });
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(CaError::CsrMalformed(
            "text follows the PEM block; send one request".into(),
        ));
    }
    let (rest, csr) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| CaError::CsrMalformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CaError::CsrMalformed(
            "bytes follow the request's DER".into(),
        ));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let alg = key_type(spki)?;
    check_signature_algorithm(&csr, alg)?;
    csr.verify_signature().map_err(|e| match e {
        X509Error::SignatureUnsupportedAlgorithm => CaError::CsrSignatureAlgorithm {
            algorithm: csr.signature_algorithm.algorithm.to_id_string(),
        },
        _ => CaError::CsrSignature,
    })?;
    let key = SubjectKey {
        key: spki.subject_public_key.data.to_vec(),
        alg,
    };
    // The certificate must name exactly the key that signed the request: rcgen re-encodes the
    // SubjectPublicKeyInfo from the key type, so refuse any encoding it would change (an RSA
    // key without its NULL parameters, say) rather than certify different bytes.
    if rcgen::PublicKeyData::subject_public_key_info(&key) != spki.raw {
        return Err(CaError::CsrKeyEncoding);
    }
    Ok(key)
}

/// The URIs the request's subject alternative names ask for (ignored by the CA; read so a
/// request claiming another identity Steward trusts can be refused before it is taken). The
/// request is one [`read`] accepted.
pub(super) fn requested_uris(csr_pem: &str) -> Vec<String> {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(csr_pem.trim_start().as_bytes()) else {
        return Vec::new();
    };
    let Ok((_, csr)) = X509CertificationRequest::from_der(&pem.contents) else {
        return Vec::new();
    };
    let Some(extensions) = csr.requested_extensions() else {
        return Vec::new();
    };
    extensions
        .filter_map(|e| match e {
            x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_string()),
            _ => None,
        })
        .collect()
}

/// The key types certified: ECDSA P-256 and P-384, Ed25519, RSA of 2048 to 8192 bits.
fn key_type(
    spki: &SubjectPublicKeyInfo<'_>,
) -> Result<&'static rcgen::SignatureAlgorithm, CaError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(&rcgen::PKCS_ECDSA_P256_SHA256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(&rcgen::PKCS_ECDSA_P384_SHA384),
            Some(c) => Err(CaError::UnsupportedCurve {
                curve: curve_name(&c.to_id_string()),
            }),
            None => Err(CaError::UnsupportedCurve {
                curve: "a curve given by explicit parameters".into(),
            }),
        };
    }
    if *oid == OID_PKCS1_RSAENCRYPTION {
        let bits = rsa_bits(spki)?;
        if bits < MIN_RSA_BITS {
            return Err(CaError::RsaKeyTooSmall { bits });
        }
        if bits > MAX_RSA_BITS {
            return Err(CaError::RsaKeyTooLarge { bits });
        }
        return Ok(&rcgen::PKCS_RSA_SHA256);
    }
    if *oid == OID_SIG_ED25519 {
        return Ok(&rcgen::PKCS_ED25519);
    }
    Err(CaError::UnknownKeyType {
        key_type: key_type_name(&oid.to_id_string()),
    })
}

/// The RSA modulus's length in bits (without the sign byte DER adds).
fn rsa_bits(spki: &SubjectPublicKeyInfo<'_>) -> Result<usize, CaError> {
    let parsed = spki
        .parsed()
        .map_err(|_| CaError::CsrMalformed("its RSA public key cannot be read".into()))?;
    let x509_parser::public_key::PublicKey::RSA(rsa) = parsed else {
        return Err(CaError::CsrMalformed(
            "its RSA public key cannot be read".into(),
        ));
    };
    let modulus: &[u8] = {
        let start = rsa
            .modulus
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(rsa.modulus.len());
        &rsa.modulus[start..]
    };
    Ok(match modulus.first() {
        Some(first) => (modulus.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    })
}

/// Signatures verified: SHA-2 only (a SHA-1 signature proves little), and the algorithm must
/// fit the key type.
fn check_signature_algorithm(
    csr: &X509CertificationRequest<'_>,
    key: &'static rcgen::SignatureAlgorithm,
) -> Result<(), CaError> {
    let sig = &csr.signature_algorithm.algorithm;
    let fits = if *key == rcgen::PKCS_RSA_SHA256 {
        *sig == OID_PKCS1_SHA256WITHRSA
            || *sig == OID_PKCS1_SHA384WITHRSA
            || *sig == OID_PKCS1_SHA512WITHRSA
            || *sig == OID_PKCS1_RSASSAPSS
    } else if *key == rcgen::PKCS_ED25519 {
        *sig == OID_SIG_ED25519
    } else {
        *sig == OID_SIG_ECDSA_WITH_SHA256 || *sig == OID_SIG_ECDSA_WITH_SHA384
    };
    if fits {
        Ok(())
    } else {
        Err(CaError::CsrSignatureAlgorithm {
            algorithm: signature_name(&sig.to_id_string()),
        })
    }
}

fn curve_name(oid: &str) -> String {
    match oid {
        "1.3.132.0.35" => "P-521 (secp521r1)".into(),
        "1.3.132.0.10" => "secp256k1".into(),
        _ => format!("OID {oid}"),
    }
}

fn key_type_name(oid: &str) -> String {
    match oid {
        "1.3.101.113" => "Ed448".into(),
        "1.3.101.110" | "1.3.101.111" => "X25519/X448 (key agreement only)".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        "1.2.840.113549.1.1.10" => "RSASSA-PSS-restricted RSA".into(),
        _ => format!("OID {oid}"),
    }
}

fn signature_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => "SHA-1 with RSA".into(),
        "1.2.840.10045.4.1" => "ECDSA with SHA-1".into(),
        "1.2.840.113549.1.1.4" => "MD5 with RSA".into(),
        _ => format!("OID {oid}"),
    }
}
