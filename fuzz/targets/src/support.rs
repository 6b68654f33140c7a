//! What the targets share: a runtime for the async verifiers, the fixed test key, and the
//! input framing (a header line, then a body).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ed25519_dalek::{Signer as _, SigningKey};
use std::future::Future;

/// The seed of the Ed25519 key the targets sign with. A test key, published on purpose: it
/// signs nothing but fuzz inputs, and only the fuzz verifiers trust it.
pub const KEY_SEED: [u8; 32] = *b"steward-fuzz-test-key-not-secret";
/// Its `kid` in [`JWKS`].
pub const KID: &str = "fuzz-ed25519";
/// The JWKS the fuzz verifiers are built from: the public half of [`KEY_SEED`]. It is also a
/// seed of the `jwks` target.
pub const JWKS: &str = include_str!("../../corpus/jwks/fuzz-key.json");

/// The date the targets take as today (the manifest and policy checks need one).
pub const TODAY: (i32, u32, u32) = (2026, 12, 7);

pub fn today() -> chrono::NaiveDate {
    let (y, m, d) = TODAY;
    chrono::NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
}

/// Runs `future` to completion on this thread's runtime (the verifiers are async; with keys
/// given in process they never wait on I/O).
pub fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|rt| rt.block_on(future))
}

/// A compact JWS of `payload` (any bytes) under `header`, signed with the test key (EdDSA).
pub fn sign_compact(header: &serde_json::Value, payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(payload)
    );
    let signature = SigningKey::from_bytes(&KEY_SEED).sign(input.as_bytes());
    format!("{input}.{}", B64URL.encode(signature.to_bytes()))
}

/// Keeps a result alive (so the work that made it is not optimised away) and drops it.
pub fn keep<T>(value: T) {
    std::hint::black_box(value);
}

/// Splits an input into its first line (a header value) and the rest (a body).
pub fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A header value as the HTTP stack hands it on (`HeaderValue::to_str`): visible ASCII and
/// tabs only, else absent.
pub fn header_value(raw: &[u8]) -> Option<&str> {
    raw.iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        .then(|| std::str::from_utf8(raw).ok())
        .flatten()
}

/// A seed of the corpus (for the targets' own tests).
#[cfg(test)]
pub fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = format!("{}/../corpus/{target}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JWKS in the corpus is the public half of the key the targets sign with.
    #[test]
    fn the_jwks_holds_the_test_key() {
        let jwks: serde_json::Value = serde_json::from_str(JWKS).unwrap();
        let key = &jwks["keys"][0];
        let public = SigningKey::from_bytes(&KEY_SEED).verifying_key().to_bytes();
        assert_eq!(key["x"], B64URL.encode(public));
        assert_eq!(key["kid"], KID);
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
    }

    #[test]
    fn lines_split_once() {
        assert_eq!(split_line(b"a\nb\nc"), (&b"a"[..], &b"b\nc"[..]));
        assert_eq!(split_line(b"abc"), (&b"abc"[..], &b""[..]));
        assert_eq!(header_value(b"Basic x"), Some("Basic x"));
        assert_eq!(header_value(b"caf\xc3\xa9"), None);
    }
}
