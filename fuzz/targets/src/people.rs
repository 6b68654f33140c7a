//! People's OpenID Connect tokens (shared/src/sign_in.rs, `PersonTokens::verify`, the bearer
//! token of every signed-in admin request) and the issuers' key sets they are checked with
//! (shared/src/jwks, also the Shared Signals transmitter's keys).

use crate::support::{JWKS, KID, block_on, keep, sign_compact};
use jsonwebtoken::Algorithm;
use serde_json::json;
use shared::jwks::{ACCEPTED_ALGS, JwksSource, MAX_JWKS_BYTES, lookup, parse_jwks_text};
use shared::sign_in::{IssuerSettings, PersonTokens, TokenRefused};
use std::sync::OnceLock;

/// The issuer and audience the fuzz verifier trusts (the seeds' `iss` and `aud`).
pub const ISSUER: &str = "https://issuer.example.com";
pub const AUDIENCE: &str = "api://steward";

fn verifier() -> &'static PersonTokens {
    static VERIFIER: OnceLock<PersonTokens> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let mut settings = IssuerSettings::new(ISSUER, AUDIENCE);
        settings.jwks = Some(JwksSource::Json(
            serde_json::from_str(JWKS).expect("the test JWKS is JSON"),
        ));
        PersonTokens::new(settings).expect("the fuzz issuer's settings are valid")
    })
}

/// Input: the bearer token of an admin request (`Authorization: Bearer <token>`).
pub fn person_token(data: &[u8]) {
    let Some(token) = crate::support::header_value(data) else {
        return;
    };
    keep(block_on(verifier().verify(token)).map_err(|e| e.to_string()));
}

/// Input: a person token's claims (any bytes), signed with the issuer's (test) key, so that
/// the claim checks run: `exp`, `nbf`, `iss`, `aud`, the person claim, `email_verified`.
/// A correctly signed token is never refused for its algorithm, key or signature.
pub fn person_claims(claims: &[u8]) {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": KID});
    let token = sign_compact(&header, claims);
    match block_on(verifier().verify(&token)) {
        Ok(person) => {
            keep(person);
        }
        Err(
            e @ (TokenRefused::Algorithm(_)
            | TokenRefused::Key(_)
            | TokenRefused::Signature
            | TokenRefused::Unavailable(_)),
        ) => panic!("a token signed with the issuer's key was refused: {e}"),
        Err(e) => {
            keep(e.to_string());
        }
    }
}

/// Input: a JWKS document as an issuer or transmitter serves it. Its usable keys are looked
/// up for every accepted algorithm (with and without their `kid`), and each key found checks
/// a fixed signature, as a token naming it would make it do.
pub fn jwks(data: &[u8]) {
    if data.len() > MAX_JWKS_BYTES {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keys = match parse_jwks_text(text) {
        Ok(keys) => keys,
        Err(why) => {
            keep(why);
            return;
        }
    };
    let signature = sign_compact(&json!({"alg": "EdDSA"}), b"{}");
    let (input, sig) = signature.rsplit_once('.').expect("three parts");
    for alg in ACCEPTED_ALGS {
        for kid in keys
            .iter()
            .map(|k| k.kid.as_deref())
            .take(8)
            .chain([None, Some(KID)])
        {
            if let shared::jwks::Lookup::Found(key) = lookup(&keys, kid, alg) {
                assert!(
                    key.fits(alg),
                    "lookup found a key that cannot verify {alg:?}"
                );
                let ok = jsonwebtoken::crypto::verify(sig, input.as_bytes(), &key.key, alg);
                keep(ok.is_ok_and(|v| v && alg == Algorithm::EdDSA));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::seed;

    fn verify(name: &str) -> Result<shared::sign_in::Person, TokenRefused> {
        let token = String::from_utf8(seed("person_token", name)).unwrap();
        block_on(verifier().verify(&token))
    }

    /// The signed seeds reach the claim checks.
    #[test]
    fn seeds_reach_the_claims() {
        assert_eq!(verify("person-email.jwt").unwrap().id, "alice@example.com");
        assert_eq!(verify("person-expired.jwt"), Err(TokenRefused::Expired));
        assert_eq!(
            verify("person-email-unverified.jwt"),
            Err(TokenRefused::EmailNotVerified)
        );
        assert!(matches!(
            verify("alg-hs256.jwt"),
            Err(TokenRefused::Algorithm(_))
        ));
    }

    /// Every JWKS seed but the empty one has usable keys.
    #[test]
    fn jwks_seeds_have_keys() {
        for name in ["fuzz-key.json", "rsa-2048.json", "ec-p256-p384.json"] {
            let text = String::from_utf8(seed("jwks", name)).unwrap();
            assert!(parse_jwks_text(&text).is_ok(), "{name}");
        }
    }
}
