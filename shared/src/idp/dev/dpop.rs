//! RFC 9449 DPoP proofs as the development IdP checks them: at the token endpoint (the token is
//! bound to the proof's key, `cnf.jkt`) and at introspection (a bound token counts only with a
//! proof from that key over this request and this token).

use crate::agent_key::{access_token_hash, public_key};
use crate::jwks::{ACCEPTED_ALGS, parse_jwk};
use jsonwebtoken::Validation;
use serde::Deserialize;

/// A proof's `iat` may be this far from the IdP's clock, either way.
pub const DPOP_IAT_WINDOW_SECS: i64 = 300;
/// The `typ` of a DPoP proof's header.
pub const DPOP_TYP: &str = "dpop+jwt";

/// A proof that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopProof {
    /// The RFC 7638 thumbprint of the proof's key: a bound token's `cnf.jkt`.
    pub jkt: String,
    /// The proof's `jti`, which the caller uses up (a proof is good for one request).
    pub jti: String,
}

#[derive(Deserialize)]
struct Claims {
    htm: String,
    htu: String,
    iat: i64,
    jti: String,
    #[serde(default)]
    ath: Option<String>,
}

/// `url` without its query and fragment (RFC 9449 §4.3: `htu` is compared without them).
fn target(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// Checks a DPoP proof for `method` `url`, and with `access_token` for a request presenting it
/// (`ath`); the reason it fails is said in words the caller can act on.
pub fn verify(
    proof: &str,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now: i64,
) -> Result<DpopProof, String> {
    let header =
        jsonwebtoken::decode_header(proof).map_err(|_| "the DPoP proof is not a signed JWT")?;
    if header.typ.as_deref() != Some(DPOP_TYP) {
        return Err(format!("the DPoP proof's typ must be `{DPOP_TYP}`"));
    }
    if !ACCEPTED_ALGS.contains(&header.alg) {
        return Err("the DPoP proof must be signed with an asymmetric algorithm".into());
    }
    let jwk = header
        .jwk
        .as_ref()
        .ok_or("the DPoP proof's header carries no `jwk`")?;
    let jwk = serde_json::to_value(jwk).map_err(|_| "the DPoP proof's `jwk` is unreadable")?;
    // A header `jwk` with private members is refused, like a submitted public key.
    let key = public_key(&jwk).map_err(|e| format!("the DPoP proof's key: {e}"))?;
    let verifier = parse_jwk(&jwk).map_err(|e| format!("the DPoP proof's key: {e}"))?;
    if !verifier.fits(header.alg) {
        return Err("the DPoP proof's alg does not fit its key".into());
    }
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.set_required_spec_claims::<&str>(&[]);
    let claims = jsonwebtoken::decode::<Claims>(proof, &verifier.key, &v)
        .map_err(|_| "the DPoP proof's signature does not verify with its `jwk`")?
        .claims;
    if !claims.htm.eq_ignore_ascii_case(method) {
        return Err(format!(
            "the DPoP proof is for {}, not {method}",
            claims.htm
        ));
    }
    if target(&claims.htu) != target(url) {
        return Err(format!(
            "the DPoP proof's htu must be {} (it names another URL)",
            target(url)
        ));
    }
    if (now - claims.iat).abs() > DPOP_IAT_WINDOW_SECS {
        return Err("the DPoP proof's iat is too far from now: make a new proof".into());
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err("the DPoP proof needs a jti (at most 256 characters)".into());
    }
    match (access_token, claims.ath.as_deref()) {
        (Some(token), Some(ath)) if ath == access_token_hash(token) => {}
        (Some(_), Some(_)) => return Err("the DPoP proof's ath is for another token".into()),
        (Some(_), None) => {
            return Err("the DPoP proof must carry ath, the hash of the token it presents".into());
        }
        (None, _) => {}
    }
    Ok(DpopProof {
        jkt: key.kid,
        jti: claims.jti,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_key::AgentKeyPair;
    use chrono::Utc;

    const URL: &str = "http://127.0.0.1:8080/oauth2/v1/token";

    #[test]
    fn a_proof_names_its_key_and_fits_only_its_request() {
        let pair = AgentKeyPair::generate().unwrap();
        let now = Utc::now();
        let proof = pair.dpop_proof("POST", URL, None, now);
        let ok = verify(&proof, "POST", URL, None, now.timestamp()).unwrap();
        assert_eq!(ok.jkt, pair.public().kid);
        assert!(verify(&proof, "GET", URL, None, now.timestamp()).is_err());
        let e = verify(
            &proof,
            "POST",
            "http://127.0.0.1:8080/other",
            None,
            now.timestamp(),
        )
        .unwrap_err();
        assert!(e.contains("htu"), "{e}");
        let e = verify(&proof, "POST", URL, None, now.timestamp() + 3600).unwrap_err();
        assert!(e.contains("iat"), "{e}");
        // Presenting a token needs ath, and ath must be this token's.
        let e = verify(&proof, "POST", URL, Some("tok"), now.timestamp()).unwrap_err();
        assert!(e.contains("ath"), "{e}");
        let with = pair.dpop_proof("POST", URL, Some("tok"), now);
        assert!(verify(&with, "POST", URL, Some("tok"), now.timestamp()).is_ok());
        assert!(verify(&with, "POST", URL, Some("other"), now.timestamp()).is_err());
        // A client assertion is no DPoP proof.
        let assertion = pair.client_assertion("dev_1", URL, now);
        assert!(verify(&assertion, "POST", URL, None, now.timestamp()).is_err());
    }
}
