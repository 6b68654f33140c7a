//! Agents' key pairs (RFC 7523 `private_key_jwt`).
//!
//! Steward's side: [`public_key`] checks a public JWK an agent submits and names it by its
//! RFC 7638 thumbprint, and [`verify_possession`] checks the agent's proof that it holds the
//! private half (a JWT signed with it over a nonce Steward issued, naming the agent).
//!
//! The agent's side, for the CLI, the demo and tests: [`AgentKeyPair`] makes an ES256 key pair
//! and signs key proofs, client assertions and DPoP proofs (RFC 9449) with it. Its private key
//! is a [`Secret`]: it is never printed, logged or serialised by Steward.

use crate::secret::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
pub use statemachines::credential::AgentKey;

/// The `aud` of a proof of possession: it is good for nothing else.
pub const PROOF_AUDIENCE: &str = "steward:key-proof";
/// The `typ` of a proof of possession's header.
pub const PROOF_TYP: &str = "steward-key-proof+jwt";
/// A proof older than this is refused, whatever its nonce.
pub const PROOF_MAX_AGE_SECS: i64 = 600;
/// RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// JWK members that hold private key material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037).
const PRIVATE_MEMBERS: [&str; 9] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("public_jwk is not a key Steward accepts: {0}")]
    Unusable(String),
    #[error(
        "public_jwk holds private key material (`{0}`): send only the public half; the private key never leaves the agent"
    )]
    Private(&'static str),
    #[error("the key proof was refused: {0}")]
    Proof(String),
    #[error("the private key cannot be read: {0}")]
    PrivateKey(String),
}

/// Checks a submitted public JWK and returns it as the registry keeps it: only the public
/// members, `kid` set to the RFC 7638 SHA-256 thumbprint. A JWK with private members is
/// refused (and its value is never repeated in the error).
pub fn public_key(jwk: &Value) -> Result<AgentKey, KeyError> {
    let Some(o) = jwk.as_object() else {
        return Err(KeyError::Unusable("a JWK is a JSON object".into()));
    };
    if let Some(m) = PRIVATE_MEMBERS.into_iter().find(|m| o.contains_key(*m)) {
        return Err(KeyError::Private(m));
    }
    crate::jwks::parse_jwk(jwk).map_err(KeyError::Unusable)?;
    let kid = thumbprint(jwk)?;
    let keep = |names: &[&str]| {
        let mut out = serde_json::Map::new();
        for n in names {
            if let Some(v) = o.get(*n) {
                out.insert((*n).into(), v.clone());
            }
        }
        out
    };
    let mut public = match o.get("kty").and_then(Value::as_str) {
        Some("EC") => keep(&["kty", "crv", "x", "y", "alg"]),
        Some("RSA") => keep(&["kty", "n", "e", "alg"]),
        Some("OKP") => keep(&["kty", "crv", "x", "alg"]),
        _ => return Err(KeyError::Unusable("kty must be EC, RSA or OKP".into())),
    };
    public.insert("use".into(), json!("sig"));
    public.insert("kid".into(), json!(kid));
    Ok(AgentKey {
        kid,
        jwk: Value::Object(public).to_string(),
    })
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK (base64url): the required members in
/// lexicographic order, no whitespace.
pub fn thumbprint(jwk: &Value) -> Result<String, KeyError> {
    let text = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| KeyError::Unusable(format!("`{name}` is missing")))
    };
    // serde_json writes an object's members in the order given here (no `preserve_order`
    // reordering matters: each canonical form is spelled out).
    let canonical = match text("kty")? {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            json!(text("crv")?),
            json!(text("x")?),
            json!(text("y")?)
        ),
        "RSA" => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            json!(text("e")?),
            json!(text("n")?)
        ),
        "OKP" => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            json!(text("crv")?),
            json!(text("x")?)
        ),
        other => {
            return Err(KeyError::Unusable(format!(
                "kty `{}` is not EC, RSA or OKP",
                other.chars().take(16).collect::<String>()
            )));
        }
    };
    Ok(B64URL.encode(Sha256::digest(canonical.as_bytes())))
}

/// The claims of a proof of possession Steward reads.
#[derive(Debug, serde::Deserialize)]
struct ProofClaims {
    nonce: String,
    sub: String,
    iat: i64,
}

/// Checks that `proof` is a JWT signed with `key`'s private half, for `PROOF_AUDIENCE`, naming
/// the agent `agent_name` as `sub`, issued within [`PROOF_MAX_AGE_SECS`]; returns its nonce.
/// The caller checks the nonce is one Steward issued and uses it up.
pub fn verify_possession(
    key: &AgentKey,
    proof: &str,
    agent_name: &str,
    now: DateTime<Utc>,
) -> Result<String, KeyError> {
    let bad = |why: &str| KeyError::Proof(why.to_string());
    let jwk: Value = serde_json::from_str(&key.jwk).map_err(|_| bad("the key is unreadable"))?;
    let verify = crate::jwks::parse_jwk(&jwk).map_err(KeyError::Unusable)?;
    let header = jsonwebtoken::decode_header(proof).map_err(|_| bad("it is not a signed JWT"))?;
    if header.typ.as_deref() != Some(PROOF_TYP) {
        return Err(bad(&format!("its header's typ must be `{PROOF_TYP}`")));
    }
    if !verify.fits(header.alg) {
        return Err(bad("its alg does not fit the key"));
    }
    let mut v = Validation::new(header.alg);
    v.set_audience(&[PROOF_AUDIENCE]);
    v.set_required_spec_claims(&["aud", "exp"]);
    v.leeway = 60;
    let claims = jsonwebtoken::decode::<ProofClaims>(proof, &verify.key, &v)
        .map_err(|e| KeyError::Proof(format!("it does not verify with public_jwk ({e})")))?
        .claims;
    if claims.sub != agent_name {
        return Err(bad(
            "it names another agent (`sub` must be the agent's name)",
        ));
    }
    let age = now.timestamp() - claims.iat;
    if !(-60..=PROOF_MAX_AGE_SECS).contains(&age) {
        return Err(bad(
            "it is too old or from the future: sign a new one over a new nonce",
        ));
    }
    Ok(claims.nonce)
}

/// A key pair on the agent's side (ES256, P-256). `Debug` shows only the public key's id.
pub struct AgentKeyPair {
    pem: Secret,
    encoding: EncodingKey,
    public: AgentKey,
}

impl std::fmt::Debug for AgentKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKeyPair")
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl AgentKeyPair {
    /// A new P-256 key pair.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        Self::from_pem(&pair.serialize_pem())
    }

    /// Reads a PKCS#8 PEM P-256 private key (what [`generate`](Self::generate) writes and
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` makes).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let unreadable =
            |_| KeyError::PrivateKey("it must be a PKCS#8 PEM P-256 (ES256) private key".into());
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(unreadable)?;
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, Algorithm::ES256)
            .map_err(unreadable)?;
        let jwk = serde_json::to_value(&jwk).map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        let public = public_key(&jwk)?;
        Ok(Self {
            pem: Secret::new(pem),
            encoding,
            public,
        })
    }

    /// The private key as PKCS#8 PEM: for the key file (mode 0600) or the vault, nothing else.
    pub fn pem(&self) -> &Secret {
        &self.pem
    }

    pub fn public(&self) -> &AgentKey {
        &self.public
    }

    /// The public JWK as JSON.
    pub fn public_jwk(&self) -> Value {
        serde_json::from_str(&self.public.jwk).unwrap_or(Value::Null)
    }

    fn sign(&self, typ: &str, with_jwk: bool, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.into());
        if with_jwk {
            header.jwk = serde_json::from_str(&self.public.jwk).ok();
        } else {
            header.kid = Some(self.public.kid.clone());
        }
        // Signing with a key read at construction cannot fail for want of input.
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap_or_default()
    }

    /// A proof of possession for the agent `agent_name` over `nonce` (from Steward).
    pub fn key_proof(&self, agent_name: &str, nonce: &str, now: DateTime<Utc>) -> String {
        let iat = now.timestamp();
        self.sign(
            PROOF_TYP,
            false,
            &json!({"aud": PROOF_AUDIENCE, "sub": agent_name, "nonce": nonce,
                    "iat": iat, "exp": iat + PROOF_MAX_AGE_SECS}),
        )
    }

    /// An RFC 7523 client assertion for `client_id` at the token endpoint `audience`, valid
    /// for five minutes, with a fresh `jti`.
    pub fn client_assertion(&self, client_id: &str, audience: &str, now: DateTime<Utc>) -> String {
        let iat = now.timestamp();
        self.sign(
            "JWT",
            false,
            &json!({"iss": client_id, "sub": client_id, "aud": audience, "iat": iat,
                    "exp": iat + 300, "jti": hex::encode(rand::random::<[u8; 16]>())}),
        )
    }

    /// An RFC 9449 DPoP proof for `method` `url`; with `access_token`, for a request that
    /// presents it (`ath`).
    pub fn dpop_proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> String {
        let mut claims = json!({"htm": method, "htu": url, "iat": now.timestamp(),
                                "jti": hex::encode(rand::random::<[u8; 16]>())});
        if let Some(t) = access_token {
            claims["ath"] = json!(access_token_hash(t));
        }
        self.sign("dpop+jwt", true, &claims)
    }
}

/// RFC 9449 §4.2 `ath`: base64url SHA-256 of the access token.
pub fn access_token_hash(token: &str) -> String {
    B64URL.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1's example key and thumbprint.
    #[test]
    fn thumbprint_matches_rfc_7638() {
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let key = public_key(&jwk).unwrap();
        assert_eq!(key.kid, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn a_private_jwk_is_refused_without_repeating_it() {
        let pair = AgentKeyPair::generate().unwrap();
        let mut jwk = pair.public_jwk();
        jwk["d"] = json!("c2VjcmV0LXByaXZhdGUtc2NhbGFy");
        let e = public_key(&jwk).unwrap_err().to_string();
        assert!(e.contains("`d`") && !e.contains("c2VjcmV0"), "{e}");
        assert!(public_key(&json!({"kty": "oct", "k": "AAAA"})).is_err());
        assert!(!format!("{pair:?}").contains("PRIVATE"), "{pair:?}");
    }

    #[test]
    fn a_proof_binds_key_agent_nonce_and_time() {
        let now = Utc::now();
        let pair = AgentKeyPair::generate().unwrap();
        let proof = pair.key_proof("billing-agent-dev", "kn_1", now);
        assert_eq!(
            verify_possession(pair.public(), &proof, "billing-agent-dev", now).unwrap(),
            "kn_1"
        );
        // Another agent's name, another key, an old proof: refused.
        assert!(verify_possession(pair.public(), &proof, "other-agent-dev", now).is_err());
        let other = AgentKeyPair::generate().unwrap();
        assert!(verify_possession(other.public(), &proof, "billing-agent-dev", now).is_err());
        let old = pair.key_proof(
            "billing-agent-dev",
            "kn_1",
            now - chrono::Duration::seconds(PROOF_MAX_AGE_SECS + 120),
        );
        assert!(verify_possession(pair.public(), &old, "billing-agent-dev", now).is_err());
        // A client assertion is not a key proof.
        let assertion = pair.client_assertion("dev_1", "http://idp/token", now);
        assert!(verify_possession(pair.public(), &assertion, "billing-agent-dev", now).is_err());
    }

    #[test]
    fn a_key_pair_reads_back_from_its_pem() {
        let pair = AgentKeyPair::generate().unwrap();
        let again = AgentKeyPair::from_pem(pair.pem().expose()).unwrap();
        assert_eq!(again.public(), pair.public());
        assert!(AgentKeyPair::from_pem("not a key").is_err());
    }
}
