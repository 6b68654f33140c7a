//! The development identity provider's token endpoint (`POST /oauth2/v1/token` of the local
//! server): the form body, read by axum's `Form` extractor, and the HTTP Basic client
//! credentials, then the grant in shared's `DevIdp` (client credentials, device code,
//! authorization code, refresh token).
//!
//! The form type and the client authentication (Basic or form, one method) are shared's
//! `token_request`, which the endpoint's handler uses too; the grants are shared's `DevIdp`.

use crate::support::block_on;
use crate::support::keep;
use axum::extract::FromRequest as _;
use shared::embedded::{Db, Durability};
use shared::idp::dev::people::DEVICE_CODE_GRANT;
use shared::idp::dev::token_request::{Authentication, TokenForm, client_authentication};
use shared::idp::dev::{DevIdp, TOKEN_PATH};
use shared::ports::IdentityProvider as _;
use shared::ports::idp::ClientSpec;
use std::sync::{Arc, Mutex};

/// In a seed, the fixture client's id and secret (random, made when the fixture starts) are
/// written as these; the target puts the real ones in, so a seed can get a token.
pub const CLIENT_PLACEHOLDER: &str = "@client@";
pub const SECRET_PLACEHOLDER: &str = "@secret@";
/// The fixture client's grant.
pub const SCOPES: [&str; 3] = ["erp:orders:read", "erp:inventory:read", "okta:logs:read"];

struct Fixture {
    idp: DevIdp,
    client_id: String,
    secret: String,
    _dir: tempfile::TempDir,
}

static FIXTURE: Mutex<Option<Arc<Fixture>>> = Mutex::new(None);

fn fixture() -> Arc<Fixture> {
    let mut slot = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert_with(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = Db::open(&dir.path().join("steward.db"), Durability::Wal).expect("the database");
        let idp = DevIdp::open(
            Arc::new(db),
            &dir.path().join("idp-signing-key.pem"),
            "http://127.0.0.1:8787",
        )
        .expect("the development IdP");
        let spec = ClientSpec {
            agent_id: "agt-fuzz".into(),
            name: "fuzz-agent-dev".into(),
            scopes: SCOPES.iter().map(|s| s.to_string()).collect(),
            token_lifetime_secs: 600,
        };
        let created = block_on(idp.create_client(&spec, "fuzz")).expect("the fixture client");
        Arc::new(Fixture {
            idp,
            client_id: created.client_id,
            secret: created.secret.expose().to_string(),
            _dir: dir,
        })
    })
    .clone()
}

/// Drops the fixture (its database and key in a temporary directory); the next call to
/// [`token_request`] makes a new one.
pub fn release_fixture() {
    FIXTURE.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// Input: `<Authorization header value>\n<form body>`.
pub fn token_request(data: &[u8]) {
    keep(grant(data));
}

/// The grant's answer: `None` when the request did not get as far as the identity provider,
/// else the granted scope or the OAuth error.
fn grant(data: &[u8]) -> Option<Result<String, String>> {
    let (authorization, body) = crate::support::split_line(data);
    let request = http::Request::builder()
        .method("POST")
        .uri(TOKEN_PATH)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(axum::body::Body::from(body.to_vec()))
        .expect("a request");
    let form = match block_on(axum::Form::<TokenForm>::from_request(request, &())) {
        Ok(axum::Form(form)) => form,
        Err(rejection) => {
            keep(rejection.body_text());
            return None;
        }
    };
    let fx = fixture();
    let real = |v: Option<String>, placeholder: &str, value: &str| {
        v.map(|v| {
            if v == placeholder {
                value.to_string()
            } else {
                v
            }
        })
    };
    let now = chrono::DateTime::from_timestamp(1_796_601_600, 0).expect("a valid instant");
    let client = form.client_id.as_deref();
    // People's grants first, as the endpoint takes them.
    let person = match form.grant_type.as_deref() {
        Some(DEVICE_CODE_GRANT) => Some(fx.idp.device_token(
            client,
            form.device_code.as_deref(),
            now,
        )),
        Some("authorization_code") => Some(fx.idp.code_token(
            client,
            form.code.as_deref(),
            form.redirect_uri.as_deref(),
            form.code_verifier.as_deref(),
            now,
        )),
        Some("refresh_token") => Some(fx.idp.refresh(client, form.refresh_token.as_deref(), now)),
        _ => None,
    };
    if let Some(result) = person {
        return Some(result.map(|t| t.scope).map_err(|e| e.to_string()));
    }
    // The endpoint's own reading of the client's credentials.
    let authorization = crate::support::header_value(authorization);
    let (_, authentication) = client_authentication(authorization, &form);
    let (id, secret) = match authentication {
        Ok(Authentication::Secret(id, secret)) => (id, secret),
        // An assertion goes through the same verification the endpoint runs; the fixture's
        // client has no key, so none may be accepted.
        Ok(Authentication::Assertion {
            client_id,
            assertion,
        }) => {
            if form.grant_type.as_deref() != Some("client_credentials") {
                return None;
            }
            let result = fx.idp.grant(
                shared::idp::dev::ClientAuth::Assertion {
                    client_id: &client_id,
                    assertion: &assertion,
                },
                form.scope.as_deref(),
                None,
                now,
            );
            assert!(result.is_err(), "an assertion accepted without a key");
            return Some(result.map(|t| t.scope).map_err(|e| e.to_string()));
        }
        Err(_) => return None,
    };
    if form.grant_type.as_deref() != Some("client_credentials") {
        return None;
    }
    let id = real(Some(id), CLIENT_PLACEHOLDER, &fx.client_id).unwrap_or_default();
    let secret = real(Some(secret), SECRET_PLACEHOLDER, &fx.secret).unwrap_or_default();
    let result = fx.idp.issue_token(&id, &secret, form.scope.as_deref(), now);
    if let Ok(token) = &result {
        assert_eq!(id, fx.client_id, "a token for a client that does not exist");
        assert!(
            token.scope.split(' ').all(|s| SCOPES.contains(&s)),
            "a token with scopes outside the grant: {}",
            token.scope
        );
    }
    Some(result.map(|t| t.scope).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        crate::support::seed("token_request", name)
    }

    /// The seeds reach the identity provider, and the placeholders get a token.
    #[test]
    fn seeds_reach_the_grant() {
        let ok = grant(&seed("basic-client-credentials.txt"));
        assert_eq!(ok, Some(Ok("erp:orders:read".into())));
        let post = grant(&seed("post-client-credentials.txt"));
        assert_eq!(post, Some(Ok("erp:inventory:read".into())));
        let outside = grant(&seed("basic-out-of-grant-scope.txt")).unwrap();
        assert!(outside.unwrap_err().starts_with("invalid_scope"));
        let wrong = grant(&seed("wrong-secret.txt")).unwrap();
        assert!(wrong.unwrap_err().starts_with("invalid_client"));
        assert!(grant(&seed("device-code.txt")).unwrap().is_err());
        assert_eq!(grant(&seed("basic-and-form-secret.txt")), None);
        assert_eq!(grant(&seed("basic-and-other-form-id.txt")), None);
        let same = grant(&seed("basic-and-same-form-id.txt"));
        assert_eq!(same, Some(Ok("okta:logs:read".into())));
        release_fixture();
    }
}
