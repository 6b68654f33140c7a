//! The dev IdP's sign-in pages for people: where a person enters the code `steward login`
//! showed (device authorization grant), and the sign-in form of the authorization code grant.
//! Both ask for the e-mail address and the password set with `steward people password`; the
//! person must be active in the people file. Every attempt is audited and every refusal counted.

use super::token::Edge;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use shared::audit;
use shared::idp::dev::people::{AuthorizeRequest, SignInRefused};
use shared::secret::Secret;

/// Pages are plain HTML with no script; nothing may frame them.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · Steward</title>\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}\
         label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.4rem;font-size:1rem}}\
         button{{margin-top:1rem;padding:.5rem 1.2rem;font-size:1rem}}.error{{color:#a00}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn error_line(why: Option<&str>) -> String {
    why.map(|w| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(w)))
        .unwrap_or_default()
}

const CREDENTIAL_FIELDS: &str = "<label for=\"email\">E-mail address</label>\
     <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required>\
     <label for=\"password\">Password</label>\
     <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>";

/// The person's e-mail and password, as the forms post them.
#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

impl Edge {
    /// Checks a person's password and that they are active in the directory; audits a refusal.
    async fn prove(&self, c: &Credentials, client: &str) -> Result<String, SignInRefused> {
        let now = self.app.engine.clock.now();
        let checked = self
            .idp
            .check_password(&c.email, &Secret::new(c.password.clone()), now);
        let person = match checked {
            Ok(p) => p,
            Err(e) => {
                self.refused_sign_in(&c.email, client, &e).await;
                return Err(e);
            }
        };
        match self.app.engine.directory.person(&person).await {
            Ok(Some(p)) if p.active => Ok(person),
            Ok(_) => {
                let e = SignInRefused::NotInDirectory(person.clone());
                self.refused_sign_in(&person, client, &e).await;
                Err(e)
            }
            Err(e) => Err(SignInRefused::Store(e.to_string())),
        }
    }

    async fn refused_sign_in(&self, person: &str, client: &str, why: &SignInRefused) {
        self.app.count_bad_request();
        let now = self.app.engine.clock.now();
        let record = audit::sign_in(person.trim(), client, Err(&why.to_string()), now);
        if let Err(e) = self.app.engine.store.append_audit(vec![record]).await {
            tracing::error!(error = %e, "could not audit a refused sign-in");
        }
    }

    async fn signed_in(&self, person: &str, client: &str) {
        let now = self.app.engine.clock.now();
        let record = audit::sign_in(person, client, Ok(()), now);
        if let Err(e) = self.app.engine.store.append_audit(vec![record]).await {
            tracing::error!(error = %e, "could not audit a sign-in");
        }
    }
}

// ---------- device authorization grant ----------

#[derive(Deserialize)]
pub struct DeviceStart {
    client_id: Option<String>,
    scope: Option<String>,
}

/// RFC 8628 §3.1: a public client asks for a device code and a user code.
pub async fn device_authorization(
    State(edge): State<Edge>,
    form: Result<Form<DeviceStart>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = edge.app.engine.clock.now();
    let result = match form {
        Ok(Form(f)) => edge
            .idp
            .start_device(f.client_id.as_deref(), f.scope.as_deref(), now),
        Err(_) => Err(shared::idp::dev::OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        )),
    };
    match result {
        Ok(d) => ([(header::CACHE_CONTROL, "no-store")], Json(d)).into_response(),
        Err(e) => edge.oauth_refusal(None, e).await,
    }
}

#[derive(Deserialize)]
pub struct CodeQuery {
    user_code: Option<String>,
}

fn device_form(code: &str, why: Option<&str>) -> String {
    format!(
        "<p>Enter the code your terminal shows, and sign in as yourself.</p>{}\
         <form method=\"post\"><label for=\"user_code\">Code</label>\
         <input id=\"user_code\" name=\"user_code\" value=\"{}\" autocomplete=\"off\" required>{CREDENTIAL_FIELDS}\
         <button type=\"submit\">Sign in</button></form>",
        error_line(why),
        escape(code)
    )
}

/// The verification page (RFC 8628 §3.3).
pub async fn device_page(Query(q): Query<CodeQuery>) -> Response {
    page(
        StatusCode::OK,
        "Sign in to Steward",
        &device_form(q.user_code.as_deref().unwrap_or_default(), None),
    )
}

#[derive(Deserialize)]
pub struct DeviceEntry {
    #[serde(default)]
    user_code: String,
    #[serde(flatten)]
    credentials: Credentials,
}

pub async fn device_entry(State(edge): State<Edge>, Form(f): Form<DeviceEntry>) -> Response {
    let now = edge.app.engine.clock.now();
    let title = "Sign in to Steward";
    if !edge.idp.device_pending(&f.user_code, now) {
        let e = SignInRefused::UnknownCode;
        edge.refused_sign_in(&f.credentials.email, "steward-cli", &e)
            .await;
        return page(
            StatusCode::BAD_REQUEST,
            title,
            &device_form(&f.user_code, Some(&e.to_string())),
        );
    }
    let person = match edge.prove(&f.credentials, "steward-cli").await {
        Ok(p) => p,
        Err(e) => {
            if matches!(e, SignInRefused::WrongPassword) {
                let _ = edge.idp.fail_device(&f.user_code);
            }
            return page(
                StatusCode::UNAUTHORIZED,
                title,
                &device_form(&f.user_code, Some(&e.to_string())),
            );
        }
    };
    match edge.idp.approve_device(&f.user_code, &person, now) {
        Ok(()) => {
            edge.signed_in(&person, "steward-cli").await;
            page(
                StatusCode::OK,
                "Signed in",
                &format!(
                    "<p>You are signed in as <strong>{}</strong>. Return to your terminal.</p>",
                    escape(&person)
                ),
            )
        }
        Err(e) => {
            edge.refused_sign_in(&person, "steward-cli", &e).await;
            page(
                StatusCode::BAD_REQUEST,
                title,
                &device_form(&f.user_code, Some(&e.to_string())),
            )
        }
    }
}

// ---------- authorization code grant with PKCE ----------

fn authorize_form(req: &AuthorizeRequest, why: Option<&str>) -> String {
    let hidden: String = [
        ("response_type", &req.response_type),
        ("client_id", &req.client_id),
        ("redirect_uri", &req.redirect_uri),
        ("scope", &req.scope),
        ("state", &req.state),
        ("nonce", &req.nonce),
        ("code_challenge", &req.code_challenge),
        ("code_challenge_method", &req.code_challenge_method),
    ]
    .iter()
    .filter_map(|(name, value)| {
        value.as_ref().map(|v| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(v)
            )
        })
    })
    .collect();
    format!(
        "{}<form method=\"post\">{hidden}{CREDENTIAL_FIELDS}<button type=\"submit\">Sign in</button></form>",
        error_line(why)
    )
}

/// The sign-in form of an authorization request; a request that cannot be honoured is
/// explained here, never sent to its redirect.
pub async fn authorize_page(
    State(edge): State<Edge>,
    Query(req): Query<AuthorizeRequest>,
) -> Response {
    match edge.idp.check_authorization(&req) {
        Ok(_) => page(
            StatusCode::OK,
            "Sign in to Steward",
            &authorize_form(&req, None),
        ),
        Err(e) => {
            edge.refused_sign_in("", req.client_id.as_deref().unwrap_or("(none)"), &e)
                .await;
            page(
                StatusCode::BAD_REQUEST,
                "Sign-in request refused",
                &error_line(Some(&e.to_string())),
            )
        }
    }
}

#[derive(Deserialize)]
pub struct AuthorizeEntry {
    #[serde(flatten)]
    request: AuthorizeRequest,
    #[serde(flatten)]
    credentials: Credentials,
}

pub async fn authorize_entry(State(edge): State<Edge>, Form(f): Form<AuthorizeEntry>) -> Response {
    let auth = match edge.idp.check_authorization(&f.request) {
        Ok(a) => a,
        Err(e) => {
            edge.refused_sign_in(&f.credentials.email, "(none)", &e)
                .await;
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in request refused",
                &error_line(Some(&e.to_string())),
            );
        }
    };
    let person = match edge.prove(&f.credentials, &auth.client_id).await {
        Ok(p) => p,
        Err(e) => {
            return page(
                StatusCode::UNAUTHORIZED,
                "Sign in to Steward",
                &authorize_form(&f.request, Some(&e.to_string())),
            );
        }
    };
    let now = edge.app.engine.clock.now();
    match edge.idp.issue_code(&auth, &person, now) {
        Ok(code) => {
            edge.signed_in(&person, &auth.client_id).await;
            let mut to = url::Url::parse(&auth.redirect_uri).expect("checked as a URL");
            to.query_pairs_mut().append_pair("code", &code);
            if let Some(state) = &auth.state {
                to.query_pairs_mut().append_pair("state", state);
            }
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, to.to_string()),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
            )
                .into_response()
        }
        Err(e) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in failed",
            &error_line(Some(&e.to_string())),
        ),
    }
}
