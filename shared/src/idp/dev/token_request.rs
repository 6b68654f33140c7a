//! What a client sends the development IdP's token endpoint (`POST /oauth2/v1/token`): the
//! form body and, for `client_secret_basic`, the HTTP Basic credentials. The local server's
//! handler and the fuzz target read requests with these, so what is fuzzed is what is served.

use super::OAuthError;
use base64::Engine as _;
use serde::Deserialize;

/// The token request's form (`application/x-www-form-urlencoded`): every grant's fields.
#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    pub grant_type: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub device_code: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    /// RFC 7523 §2.2 client authentication.
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

/// A client's authentication as the request made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// `client_secret_basic` / `client_secret_post`: the id and the secret.
    Secret(String, String),
    /// `private_key_jwt`: the client id and its signed assertion.
    Assertion {
        client_id: String,
        assertion: String,
    },
}

/// The client's authentication: a JWT client assertion (RFC 7523) when the form carries one,
/// otherwise the id and secret of [`client_credentials`]. One method per request. Also returns
/// the client id the request named, when it named one, for the refusal's record.
pub fn client_authentication(
    authorization: Option<&str>,
    form: &TokenForm,
) -> (Option<String>, Result<Authentication, OAuthError>) {
    if form.client_assertion_type.is_none() && form.client_assertion.is_none() {
        let (named, r) = client_credentials(authorization, form);
        return (
            named,
            r.map(|(id, secret)| Authentication::Secret(id, secret)),
        );
    }
    // The id the assertion names (its `sub`), read before it is verified: only to find the
    // client whose keys verify it.
    let subject = form.client_assertion.as_deref().and_then(|a| {
        let payload = a.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        claims["sub"].as_str().map(str::to_string)
    });
    let named = form.client_id.clone().or_else(|| subject.clone());
    let refuse = |why: &str| (named.clone(), Err(OAuthError::invalid_request(why)));
    if form.client_assertion_type.as_deref() != Some(crate::agent_key::CLIENT_ASSERTION_TYPE) {
        return refuse(
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        );
    }
    let Some(assertion) = form.client_assertion.clone() else {
        return refuse("client_assertion is missing");
    };
    if authorization.is_some_and(|a| a.starts_with("Basic ")) || form.client_secret.is_some() {
        return refuse(
            "use one client authentication method: a client assertion or a secret, not both",
        );
    }
    match (&form.client_id, subject) {
        (Some(id), Some(sub)) if *id != sub => {
            refuse("client_id must be the client the assertion names (its sub)")
        }
        (_, None) => refuse("client_assertion is not a JWT naming its client in sub"),
        (_, Some(client_id)) => (
            Some(client_id.clone()),
            Ok(Authentication::Assertion {
                client_id,
                assertion,
            }),
        ),
    }
}

/// The client's id and secret (RFC 6749 §2.3): HTTP Basic (`authorization`, the header's
/// value) or the form's `client_id` and `client_secret`, one method per request. Also returns
/// the client id the request named, when it named one, for the refusal's record.
pub fn client_credentials(
    authorization: Option<&str>,
    form: &TokenForm,
) -> (Option<String>, Result<(String, String), OAuthError>) {
    let basic = authorization
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(i, p)| (url_decode(i), url_decode(p)))
        });
    match (basic, &form.client_id, &form.client_secret) {
        // One authentication method per request. A form client_id naming the same client as
        // the Basic header is allowed; a second secret, or another id, is not.
        (Some((basic_id, _)), form_id, form_secret)
            if form_secret.is_some() || form_id.as_ref().is_some_and(|f| *f != basic_id) =>
        {
            (
                Some(basic_id),
                Err(OAuthError::invalid_request(
                    "use one client authentication method: HTTP Basic or client_id and client_secret in the form, not both",
                )),
            )
        }
        (Some((id, secret)), _, _) => (Some(id.clone()), Ok((id, secret))),
        (None, Some(id), Some(secret)) => (Some(id.clone()), Ok((id.clone(), secret.clone()))),
        (None, id, _) => (
            id.clone(),
            Err(OAuthError::invalid_client(
                "client authentication is required",
            )),
        ),
    }
}

/// RFC 6749 §2.3.1: client credentials in Basic auth are form-urlencoded first.
pub fn url_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
