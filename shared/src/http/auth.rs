//! Who calls the admin API. Each deployment says how a caller proves who they are
//! ([`Authenticate`]); the router asks it before every admin route and hands the handler the
//! [`Caller`] it established.

use crate::ports::Directory;
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
        /// Names the token in the audit trail (its `jti`, or a digest), never the token.
        token_id: String,
    },
    /// Automation: the local admin token, or an IAM principal on AWS.
    Automation {
        /// The admin-token holder, or the IAM principal's ARN.
        name: String,
    },
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Person { id, token_id } => write!(f, "person {id} (token {token_id})"),
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

    /// The person a request acts as, normalised (trimmed, lower-cased). A signed-in person acts
    /// as themselves: a body that names someone else is refused (403). Automation names the
    /// person in the body, as before sign-in.
    pub fn acting_as(&self, named: Option<&str>, field: &str) -> Result<String, super::ApiError> {
        let named = named.map(str::trim).filter(|n| !n.is_empty());
        match (&self.principal, named) {
            (Principal::Person { id, .. }, None) => Ok(id.clone()),
            (Principal::Person { id, .. }, Some(n)) if n.to_lowercase() == *id => Ok(id.clone()),
            (Principal::Person { id, .. }, Some(n)) => Err(super::ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "you are signed in as {id}; `{field}` may not name anyone else ({})",
                    crate::jwks::shown(n)
                ),
            )),
            // Normalised like a person's id, so separation of duties cannot be dodged with a
            // trailing space or capitals.
            (Principal::Automation { .. }, Some(n)) => Ok(n.to_lowercase()),
            (Principal::Automation { .. }, None) => Err(super::ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`{field}` is required: say who this request is from"),
            )),
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
/// in constant time), and, when an issuer is configured, people with a token it signed who are
/// active in the directory.
pub struct BearerTokens {
    pub admin: Secret,
    pub people: Option<Arc<PersonTokens>>,
    pub directory: Arc<dyn Directory>,
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
    let refused = |why: String| Unauthenticated {
        status: StatusCode::FORBIDDEN,
        why,
        hint: "ask the people directory's owner to add or reactivate you".into(),
    };
    match directory.person(&person.id).await {
        Ok(Some(p)) if p.active => Ok(Caller {
            principal: Principal::Person {
                id: person.id,
                token_id: person.token_id,
            },
        }),
        Ok(Some(_)) => Err(refused(format!(
            "{} is no longer active in the directory",
            person.id
        ))),
        Ok(None) => Err(refused(format!("{} is not in the directory", person.id))),
        Err(e) => Err(Unauthenticated {
            status: StatusCode::SERVICE_UNAVAILABLE,
            why: e.to_string(),
            hint: "try again later".into(),
        }),
    }
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
