//! Who calls the admin API. Each deployment says how a caller proves who they are
//! ([`Authenticate`]); the router asks it before every admin route and hands the handler the
//! [`Caller`] it established.

use crate::secret::Secret;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

/// The authenticated principal behind an admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who: the IAM principal's ARN on AWS; the admin-token holder locally.
    pub principal: String,
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
pub trait Authenticate: Send + Sync {
    fn authenticate(&self, request: &Parts) -> Result<Caller, Unauthenticated>;
}

/// The local server's admin token (`<data-dir>/admin-token`), compared in constant time.
pub struct AdminToken(pub Secret);

/// The principal name audited for calls made with the local admin token.
pub const ADMIN_TOKEN_PRINCIPAL: &str = "admin-token holder";

impl Authenticate for AdminToken {
    fn authenticate(&self, request: &Parts) -> Result<Caller, Unauthenticated> {
        let presented = request
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok: bool = presented
            .as_bytes()
            .ct_eq(self.0.expose().as_bytes())
            .into();
        if ok {
            return Ok(Caller {
                principal: ADMIN_TOKEN_PRINCIPAL.into(),
            });
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
