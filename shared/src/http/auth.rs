//! Who calls the admin API. Each deployment says how a caller proves who they are
//! ([`Authenticate`]); the router asks it before every admin route and hands the handler the
//! [`Caller`] it established.

use crate::ports::{Directory, PersonalTokens};
use crate::secret::Secret;
use crate::sign_in::PersonTokens;
use async_trait::async_trait;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Who is behind an admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A person, signed in with the organisation's issuer and active in the directory.
    Person {
        /// The normalised person claim (lower-cased e-mail by default): the directory's key,
        /// and what separation of duties compares.
        id: String,
        /// Names the token in the audit trail (its `jti` or a digest; a personal token's id),
        /// never the token.
        token_id: String,
        via: Credential,
    },
    /// Automation: the local admin token, or an IAM principal on AWS.
    Automation {
        /// The admin-token holder, or the IAM principal's ARN.
        name: String,
    },
}

/// How a person proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credential {
    /// A token the people's issuer signed (a sign-in).
    SignIn,
    /// A personal API token the person created.
    PersonalToken,
    /// A dashboard session, opened when the person signed in through the browser.
    Dashboard,
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Person {
                id,
                token_id,
                via: Credential::SignIn,
            } => write!(f, "person {id} (token {token_id})"),
            Principal::Person {
                id,
                token_id,
                via: Credential::PersonalToken,
            } => write!(f, "person {id} (personal token {token_id})"),
            Principal::Person {
                id,
                token_id,
                via: Credential::Dashboard,
            } => write!(f, "person {id} (dashboard {token_id})"),
            Principal::Automation { name } => write!(f, "automation {name}"),
        }
    }
}

/// The authenticated principal behind an admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
}

impl Caller {
    pub fn automation(name: impl Into<String>) -> Self {
        Caller {
            principal: Principal::Automation { name: name.into() },
        }
    }

    /// The signed-in person, if the caller is one.
    pub fn person(&self) -> Option<&str> {
        match &self.principal {
            Principal::Person { id, .. } => Some(id),
            Principal::Automation { .. } => None,
        }
    }

    /// Who the engine records as acting: the person's id, or `automation:<name>` (which no
    /// person id can equal, so automation never counts as an approver or a reviewer).
    pub fn acting(&self) -> String {
        match &self.principal {
            Principal::Person { id, .. } => id.clone(),
            Principal::Automation { name } => format!("automation:{name}"),
        }
    }
}

/// Why a request was not let in: the status and the sentence the caller gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthenticated {
    pub status: StatusCode,
    /// What was wrong (audited).
    pub why: String,
    /// How to do it right (told to the caller, not audited).
    pub hint: String,
}

/// How a deployment establishes the caller of an admin request.
#[async_trait]
pub trait Authenticate: Send + Sync {
    async fn authenticate(&self, request: &Parts) -> Result<Caller, Unauthenticated>;
}

/// The principal name audited for calls made with the local admin token.
pub const ADMIN_TOKEN_PRINCIPAL: &str = "admin-token holder";

/// The bearer token of a request (`Authorization: Bearer <token>`), trimmed; empty when absent.
pub fn bearer(request: &Parts) -> &str {
    request
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
}

/// The local server's callers: the admin token (`<data-dir>/admin-token`, automation, compared
/// in constant time); people with a token the people's issuer signed; and people's personal API
/// tokens. A person must be active in the directory.
pub struct BearerTokens {
    pub admin: Secret,
    pub people: Option<Arc<PersonTokens>>,
    pub directory: Arc<dyn Directory>,
    pub tokens: Arc<dyn PersonalTokens>,
}

/// A person's bearer token, verified against the issuer and the directory: the person must be
/// listed and active (403 otherwise); an unverifiable token is 401, an unreachable issuer 503.
pub async fn person_caller(
    people: &PersonTokens,
    directory: &dyn Directory,
    presented: &str,
) -> Result<Caller, Unauthenticated> {
    let person = people
        .verify(presented)
        .await
        .map_err(|e| Unauthenticated {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
            why: e.to_string(),
            hint: "get a new token from the organisation's issuer".into(),
        })?;
    active_person(directory, person.id, person.token_id, Credential::SignIn).await
}

/// The person behind a verified credential, if they are active in the directory (403 if not).
pub(crate) async fn active_person(
    directory: &dyn Directory,
    id: String,
    token_id: String,
    via: Credential,
) -> Result<Caller, Unauthenticated> {
    let refused = |why: String| Unauthenticated {
        status: StatusCode::FORBIDDEN,
        why,
        hint: "ask the people directory's owner to add or reactivate you".into(),
    };
    match directory.person(&id).await {
        Ok(Some(p)) if p.active => Ok(Caller {
            principal: Principal::Person { id, token_id, via },
        }),
        Ok(Some(_)) => Err(refused(format!(
            "{id} is no longer active in the directory"
        ))),
        Ok(None) => Err(refused(format!("{id} is not in the directory"))),
        Err(e) => Err(Unauthenticated {
            status: StatusCode::SERVICE_UNAVAILABLE,
            why: e.to_string(),
            hint: "try again later".into(),
        }),
    }
}

/// A personal API token: live, and its person still active in the directory.
pub async fn personal_caller(
    tokens: &dyn PersonalTokens,
    directory: &dyn Directory,
    presented: &str,
) -> Result<Caller, Unauthenticated> {
    use crate::personal_token::{PersonalTokenError, check};
    let token = check(tokens, presented, chrono::Utc::now())
        .await
        .map_err(|e| Unauthenticated {
            status: match e {
                PersonalTokenError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            },
            why: e.to_string(),
            hint: "create a new one with `steward tokens create` after `steward login`".into(),
        })?;
    active_person(directory, token.person, token.id, Credential::PersonalToken).await
}

/// The admin token alone (no person sign-in).
pub struct AdminToken(pub Secret);

#[async_trait]
impl Authenticate for AdminToken {
    async fn authenticate(&self, request: &Parts) -> Result<Caller, Unauthenticated> {
        admin_token(&self.0, bearer(request))
    }
}

fn admin_token(admin: &Secret, presented: &str) -> Result<Caller, Unauthenticated> {
    let ok: bool = !admin.expose().is_empty()
        && bool::from(presented.as_bytes().ct_eq(admin.expose().as_bytes()));
    if ok {
        return Ok(Caller::automation(ADMIN_TOKEN_PRINCIPAL));
    }
    Err(Unauthenticated {
        status: StatusCode::UNAUTHORIZED,
        why: if presented.is_empty() {
            "missing bearer token".into()
        } else {
            "wrong bearer token".into()
        },
        hint: "send `Authorization: Bearer <token>` with the token from <data-dir>/admin-token"
            .into(),
    })
}

#[async_trait]
impl Authenticate for BearerTokens {
    async fn authenticate(&self, request: &Parts) -> Result<Caller, Unauthenticated> {
        let presented = bearer(request);
        if crate::personal_token::looks_personal(presented) {
            return personal_caller(self.tokens.as_ref(), self.directory.as_ref(), presented).await;
        }
        // A JWT has two dots; the admin token has none.
        let Some(people) = self
            .people
            .as_ref()
            .filter(|_| presented.matches('.').count() == 2)
        else {
            return admin_token(&self.admin, presented);
        };
        person_caller(people, self.directory.as_ref(), presented).await
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = super::ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Set by the router's authentication layer on every admin route; a handler asking for
        // it on a public route is a wiring mistake, answered as such.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            super::ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this route has no authenticated caller",
            )
        })
    }
}
