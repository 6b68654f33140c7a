//! The keys of a JWKS: which are usable for which `alg`, and how a `kid` is looked up.

use super::{ACCEPTED_ALGS, shown};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::str::FromStr;
use std::sync::Arc;

/// One usable key of a JWKS.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The key's own `alg`, when the JWK names one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl VerifyKey {
    pub fn fits(&self, alg: Algorithm) -> bool {
        let kind_fits = match self.kind {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::P256 => alg == Algorithm::ES256,
            KeyKind::P384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        };
        kind_fits && self.alg.is_none_or(|a| a == alg)
    }
}

pub enum Lookup {
    Found(Arc<VerifyKey>),
    /// A key with that `kid` exists but cannot verify this `alg`.
    Unfit,
    /// No `kid` and several keys that could verify: Steward does not try them all.
    Ambiguous,
    Unknown,
}

pub fn lookup(keys: &[Arc<VerifyKey>], kid: Option<&str>, alg: Algorithm) -> Lookup {
    match kid {
        Some(kid) => {
            let named: Vec<_> = keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if named.is_empty() {
                return Lookup::Unknown;
            }
            named
                .into_iter()
                .find(|k| k.fits(alg))
                .map(|k| Lookup::Found(k.clone()))
                .unwrap_or(Lookup::Unfit)
        }
        None => {
            let fit: Vec<_> = keys.iter().filter(|k| k.fits(alg)).collect();
            match fit.as_slice() {
                [one] => Lookup::Found(Arc::clone(one)),
                [] => Lookup::Unknown,
                _ => Lookup::Ambiguous,
            }
        }
    }
}

pub fn parse_jwks_text(text: &str) -> Result<Vec<Arc<VerifyKey>>, String> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    parse_jwks(&doc)
}

/// The usable keys of a JWKS; keys Steward cannot use (encryption keys, symmetric keys, unknown
/// types, short RSA moduli) are skipped, and a set without any usable key is an error.
pub fn parse_jwks(doc: &Value) -> Result<Vec<Arc<VerifyKey>>, String> {
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err("the JWKS has no `keys` array".into());
    };
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        match parse_jwk(jwk) {
            Ok(k) => usable.push(Arc::new(k)),
            Err(why) => skipped.push(format!("key {i}: {why}")),
        }
    }
    if !skipped.is_empty() {
        tracing::info!(skipped = %skipped.join("; "), "JWKS keys Steward does not verify with");
    }
    if usable.is_empty() {
        return Err(if skipped.is_empty() {
            "the JWKS has no keys".into()
        } else {
            skipped.join("; ")
        });
    }
    Ok(usable)
}

pub fn parse_jwk(jwk: &Value) -> Result<VerifyKey, String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bytes = |name: &str| {
        text(name)
            .and_then(|v| B64URL.decode(v.trim_end_matches('=')).ok())
            .ok_or_else(|| format!("`{name}` is missing or not base64url"))
    };
    if text("use").is_some_and(|u| u != "sig") {
        return Err("not a signing key (`use`)".into());
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array)
        && !ops.iter().any(|o| o == "verify")
    {
        return Err("`key_ops` does not allow verify".into());
    }
    let alg = match text("alg") {
        None => None,
        Some(a) => Some(
            Algorithm::from_str(a)
                .ok()
                .filter(|a| ACCEPTED_ALGS.contains(a))
                .ok_or_else(|| format!("alg `{}` is not an accepted signing alg", shown(a)))?,
        ),
    };
    let bad = |e: jsonwebtoken::errors::Error| format!("unreadable key: {e}");
    let (kind, key) = match (text("kty"), text("crv")) {
        (Some("RSA"), _) => {
            let n = bytes("n")?;
            bytes("e")?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!(
                    "RSA modulus of about {bits} bits; 2048 or more needed"
                ));
            }
            let key =
                DecodingKey::from_rsa_components(text("n").unwrap_or(""), text("e").unwrap_or(""))
                    .map_err(bad)?;
            (KeyKind::Rsa, key)
        }
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            let (kind, len) = if crv == "P-256" {
                (KeyKind::P256, 32)
            } else {
                (KeyKind::P384, 48)
            };
            if bytes("x")?.len() != len || bytes("y")?.len() != len {
                return Err(format!("{crv} coordinates must be {len} bytes"));
            }
            let key =
                DecodingKey::from_ec_components(text("x").unwrap_or(""), text("y").unwrap_or(""))
                    .map_err(bad)?;
            (kind, key)
        }
        (Some("OKP"), Some("Ed25519")) => {
            // jsonwebtoken slices the first 32 bytes: a shorter `x` must not reach it.
            if bytes("x")?.len() != 32 {
                return Err("an Ed25519 `x` must be 32 bytes".into());
            }
            let key = DecodingKey::from_ed_components(text("x").unwrap_or("")).map_err(bad)?;
            (KeyKind::Ed25519, key)
        }
        (kty, crv) => {
            return Err(format!(
                "key type {}{} is not a signature key Steward verifies with",
                shown(kty.unwrap_or("(none)")),
                crv.map(|c| format!("/{}", shown(c))).unwrap_or_default()
            ));
        }
    };
    let key = VerifyKey {
        kid: text("kid").map(str::to_string),
        kind,
        alg,
        key,
    };
    if let Some(a) = alg
        && !key.fits(a)
    {
        return Err(format!("alg {a:?} does not match the key type"));
    }
    Ok(key)
}
