//! Signing in to the dashboard: the OpenID Connect authorization code flow with PKCE (RFC 7636)
//! at the people's issuer, as the public client [`super::CLIENT_ID`]. The access token it
//! returns is checked exactly as the API checks a bearer token; then a session is opened (a new
//! id at every sign-in) and the token is dropped: the dashboard never calls anything with it.

use super::pages::{PageState, error_page};
use super::session::{self, cookie, digest, random_token, set_cookie};
use super::{CALLBACK_PATH, Dashboard};
use crate::ports::sessions::PendingSignIn;
use axum::extract::{Form, FromRequest as _, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::Duration;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie binding a sign-in to the browser that started it (login CSRF).
const SIGN_IN_COOKIE: &str = "steward_sign_in";
/// How long a person has at the issuer.
const SIGN_IN_SECS: i64 = 600;

#[derive(Deserialize)]
pub struct Start {
    return_to: Option<String>,
}

/// A path of this server to come back to; anything else (another site, `//host`) is the
/// overview.
fn local_path(p: Option<&str>) -> String {
    match p {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.into(),
        _ => "/".into(),
    }
}

/// The issuer's authorization and token endpoints (discovered once; a failure is tried again at
/// the next sign-in).
async fn endpoints(d: &Dashboard) -> Result<(String, String), String> {
    d.endpoints
        .get_or_try_init(|| async {
            let doc =
                crate::sign_in::discovery_document(&d.http, &d.people.settings().issuer).await?;
            let get = |k: &str| {
                doc.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| format!("the issuer's discovery document has no {k}"))
            };
            Ok((get("authorization_endpoint")?, get("token_endpoint")?))
        })
        .await
        .cloned()
}

/// `GET /sign-in`: to the issuer, with a fresh `state` and PKCE challenge.
pub async fn start(State(s): State<PageState>, Query(q): Query<Start>) -> Response {
    let Some(d) = s.dashboard() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (authorize, _) = match endpoints(d).await {
        Ok(e) => e,
        Err(why) => {
            return error_page(StatusCode::BAD_GATEWAY, "Sign-in is unavailable", &why);
        }
    };
    let state = random_token();
    let verifier = random_token();
    let pending = PendingSignIn {
        digest: digest(&state),
        verifier: verifier.clone(),
        return_to: local_path(q.return_to.as_deref()),
        expires_at: s.app.engine.clock.now() + Duration::seconds(SIGN_IN_SECS),
    };
    if let Err(e) = d.sessions.put_sign_in(&pending).await {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is unavailable",
            &e.to_string(),
        );
    }
    let challenge = B64URL.encode(Sha256::digest(verifier.as_bytes()));
    let mut to = match url::Url::parse(&authorize) {
        Ok(u) => u,
        Err(e) => {
            return error_page(
                StatusCode::BAD_GATEWAY,
                "Sign-in is unavailable",
                &format!("the issuer's authorization_endpoint is not a URL: {e}"),
            );
        }
    };
    to.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &d.client_id)
        .append_pair("redirect_uri", &d.redirect_uri())
        .append_pair("scope", "openid email")
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let cookie = set_cookie(
        SIGN_IN_COOKIE,
        &state,
        CALLBACK_PATH,
        d.secure(),
        Some(SIGN_IN_SECS),
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(to.as_str())).into_response()
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: the issuer's answer. Every refusal is counted and audited, and the
/// page says what went wrong.
pub async fn callback(
    State(s): State<PageState>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(d) = s.dashboard() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match finish(&s, d, &headers, q).await {
        Ok((session_id, return_to)) => {
            let jar = axum::response::AppendHeaders([
                (
                    header::SET_COOKIE,
                    set_cookie(
                        session::cookie_name(d.secure()),
                        &session_id,
                        "/",
                        d.secure(),
                        None,
                    ),
                ),
                (
                    header::SET_COOKIE,
                    set_cookie(SIGN_IN_COOKIE, "", CALLBACK_PATH, d.secure(), Some(0)),
                ),
            ]);
            (jar, Redirect::to(&return_to)).into_response()
        }
        Err((status, why)) => {
            s.app.refuse("dashboard sign-in", &why).await;
            error_page(
                status,
                "Sign-in failed",
                &format!("{why}. Sign in again from the start page."),
            )
        }
    }
}

async fn finish(
    s: &PageState,
    d: &Dashboard,
    headers: &HeaderMap,
    q: Callback,
) -> Result<(String, String), (StatusCode, String)> {
    let bad = |why: &str| (StatusCode::BAD_REQUEST, why.to_string());
    if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or_default();
        return Err(bad(&format!(
            "the issuer refused the sign-in: {error} {detail}"
        )));
    }
    let state = q
        .state
        .ok_or_else(|| bad("the issuer's answer has no state"))?;
    let code = q
        .code
        .ok_or_else(|| bad("the issuer's answer has no code"))?;
    let started_here = cookie(headers, SIGN_IN_COOKIE)
        .is_some_and(|c| bool::from(c.as_bytes().ct_eq(state.as_bytes())));
    if !started_here {
        return Err(bad("this sign-in was not started in this browser"));
    }
    let pending = d
        .sessions
        .take_sign_in(&digest(&state))
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .ok_or_else(|| bad("the sign-in is unknown or was already used"))?;
    let now = s.app.engine.clock.now();
    if now >= pending.expires_at {
        return Err(bad("the sign-in took longer than 10 minutes"));
    }
    let (_, token_endpoint) = endpoints(d)
        .await
        .map_err(|why| (StatusCode::BAD_GATEWAY, why))?;
    let redirect_uri = d.redirect_uri();
    let answer = d
        .http
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("client_id", d.client_id.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ])
        .send()
        .await
        .map_err(|e| {
            (
                StatusCode::BAD_GATEWAY,
                format!("the issuer's token endpoint cannot be reached: {e}"),
            )
        })?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let error = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error code");
        return Err(bad(&format!(
            "the issuer refused the code ({status}, {error})"
        )));
    }
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the issuer's token answer has no access_token"))?;
    let person = d.people.verify(token).await.map_err(|e| {
        (
            StatusCode::UNAUTHORIZED,
            format!("the issuer's token was refused: {e}"),
        )
    })?;
    crate::http::auth::active_person(
        s.app.engine.directory.as_ref(),
        person.id.clone(),
        person.token_id.clone(),
        crate::http::Credential::Dashboard,
    )
    .await
    .map_err(|no| (no.status, no.why))?;
    // A new id at every sign-in; a session this browser had before ends.
    if let Some(old) = cookie(headers, session::cookie_name(d.secure())) {
        let _ = d.sessions.end_session(&digest(old)).await;
    }
    let id = session::open(d, &person.id, now)
        .await
        .map_err(|e| (e.status, e.body.error))?;
    tracing::info!(person = %person.id, "dashboard sign-in");
    Ok((id, pending.return_to))
}

#[derive(Deserialize)]
pub struct SignOut {
    csrf: Option<String>,
}

/// `POST /sign-out`: ends the session (with the form's anti-forgery token).
pub async fn sign_out(State(s): State<PageState>, request: axum::extract::Request) -> Response {
    let Some(d) = s.dashboard() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (parts, body) = request.into_parts();
    let form =
        Form::<SignOut>::from_request(axum::extract::Request::from_parts(parts.clone(), body), &())
            .await
            .map(|Form(f)| f)
            .unwrap_or(SignOut { csrf: None });
    let signed_in = match session::signed_in(&s.app, d, &parts.headers).await {
        Ok(si) => si,
        Err(_) => return Redirect::to("/sign-in").into_response(),
    };
    if let Err(why) = session::check_form(d, &parts, &signed_in.session, form.csrf.as_deref()) {
        s.app
            .refuse_by("dashboard sign-out", &signed_in.caller_actor(), &why)
            .await;
        return error_page(StatusCode::FORBIDDEN, "Refused", &why);
    }
    let _ = d.sessions.end_session(&signed_in.session.digest).await;
    let clear = set_cookie(
        session::cookie_name(d.secure()),
        "",
        "/",
        d.secure(),
        Some(0),
    );
    ([(header::SET_COOKIE, clear)], Redirect::to("/signed-out")).into_response()
}
