//! Shared Signals: a pushed Security Event Token (shared/src/inbound/ssf), checked by
//! `SsfReceiver::verify` against a transmitter whose JWKS is the fixed test key's.

use crate::support::{JWKS, KID, block_on, keep, sign_compact};
use chrono::{DateTime, Utc};
use serde_json::json;
use shared::inbound::ssf::{CONTENT_TYPE, JwksSource, Rejected, SetErr, SsfReceiver, SsfSettings};
use std::sync::OnceLock;

/// The transmitter and audience of the CAEP specification's examples (the seed claim sets).
pub const ISSUER: &str = "https://idp.example.com/123456789/";
pub const AUDIENCE: &str = "https://sp.example.com/caep";
/// The examples' `iat`; the receiver's clock reads 30 s later.
pub const ISSUED_AT: i64 = 1_615_305_159;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(ISSUED_AT + 30, 0).expect("a valid instant")
}

fn receiver() -> &'static SsfReceiver {
    static RECEIVER: OnceLock<SsfReceiver> = OnceLock::new();
    RECEIVER.get_or_init(|| {
        let jwks = serde_json::from_str(JWKS).expect("the test JWKS is JSON");
        SsfReceiver::new(SsfSettings::new(ISSUER, AUDIENCE, JwksSource::Json(jwks)))
            .expect("the fuzz transmitter's settings are valid")
    })
}

fn verify(body: &[u8]) -> Result<shared::inbound::ssf::VerifiedSet, Rejected> {
    let headers: [(&str, &str); 1] = [("content-type", CONTENT_TYPE)];
    block_on(receiver().verify(&headers[..], body, now()))
}

/// Input: the request body (a compact JWS), with the right Content-Type. Any token that is
/// not signed by the test key stops at the signature check; the seeds are signed by it and
/// reach the claims.
pub fn ssf_set(body: &[u8]) {
    keep(verify(body).map_err(|e| e.to_string()));
}

/// Input: a SET's claims (the JWS payload, any bytes), signed with the test key under a
/// valid header, so that every check after the signature (iss, aud, iat, exp, jti, events,
/// subjects, the CAEP/RISC mapping) runs. A correctly signed token must never be refused
/// for its key or signature.
pub fn ssf_claims(claims: &[u8]) {
    let header = json!({"alg": "EdDSA", "typ": "secevent+jwt", "kid": KID});
    let token = sign_compact(&header, claims);
    match verify(token.as_bytes()) {
        Ok(set) => {
            keep(set);
        }
        Err(Rejected::Refused { err, description }) => {
            assert!(
                !matches!(err, SetErr::AuthenticationFailed | SetErr::InvalidKey),
                "a SET signed with the transmitter's key was refused as {err}: {description}"
            );
            keep(description);
        }
        Err(Rejected::Unavailable(why)) => {
            panic!("keys given in process cannot be unavailable: {why}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::seed;

    /// The signed seeds pass every check; the others stop where they should.
    #[test]
    fn seeds_reach_the_claims() {
        for name in [
            "signed-caep-session-revoked.jwt",
            "signed-caep-session-revoked-complex.jwt",
            "signed-risc-credential-compromise.jwt",
        ] {
            let set = verify(&seed("ssf_set", name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!set.events.is_empty());
        }
        let verbatim = verify(&seed("ssf_set", "signed-verbatim-caep-session-revoked.jwt"));
        assert!(verbatim.is_ok(), "{verbatim:?}");
        let none = verify(&seed("ssf_set", "alg-none.jwt")).unwrap_err();
        assert!(
            none.to_string().starts_with("authentication_failed"),
            "{none}"
        );
        let header = json!({"alg": "EdDSA", "typ": "secevent+jwt", "kid": KID});
        let claims = seed("ssf_claims", "receiver-two-events.json");
        let set = verify(sign_compact(&header, &claims).as_bytes()).unwrap();
        assert_eq!(set.events.len(), 2);
    }
}
