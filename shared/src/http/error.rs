//! How the API says no: one error type with its status, and the extractors that turn malformed
//! bodies and query strings into a 400 that says what was wrong (counted and audited).

use super::App;
use crate::admin::ErrorBody;
use crate::engine::EngineError;
use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// An error answer: its status and the JSON body every error has.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                reasons: Vec::new(),
            },
        }
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Rejected(r) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body: ErrorBody {
                    error: "request refused".into(),
                    reasons: r.reasons,
                },
            },
            EngineError::NotFound(m) => ApiError::not_found(m),
            EngineError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            other => ApiError::unavailable(other),
        }
    }
}

impl From<crate::ports::store::StoreError> for ApiError {
    fn from(e: crate::ports::store::StoreError) -> Self {
        EngineError::from(e).into()
    }
}

impl From<crate::ports::queue::QueueError> for ApiError {
    fn from(e: crate::ports::queue::QueueError) -> Self {
        EngineError::from(e).into()
    }
}

/// What a request body is, in the words of the error that refuses a malformed one.
pub trait Named {
    const WHAT: &'static str;
}

macro_rules! named {
    ($($t:ty => $what:literal),* $(,)?) => {
        $(impl Named for $t { const WHAT: &'static str = $what; })*
    };
}

named!(
    crate::admin::AgentRequestBody => "agent request",
    crate::admin::TokenCreateBody => "personal token request",
    crate::admin::ScopeChangeBody => "scope change",
    crate::admin::OwnerBody => "owner reassignment",
    crate::admin::CancelBody => "cancel request",
    crate::admin::DecisionBody => "approval decision",
    crate::admin::RotateBody => "rotation request",
    crate::admin::KeyBody => "key rotation request",
    crate::admin::CertificateBody => "certificate rotation request",
    crate::admin::DecommissionBody => "decommission request",
    crate::admin::RenewBody => "renewal request",
    crate::admin::CampaignBody => "campaign launch",
    crate::admin::ReviewAnswerBody => "review decision",
    crate::admin::FreezeBody => "freeze request",
    crate::admin::ClaimBody => "shadow claim",
    crate::admin::ReleaseBody => "shadow release",
    crate::admin::ApprovalsQuery => "approvals query",
    crate::admin::AuditQuery => "audit query",
    crate::admin::GrantsQuery => "grants query",
    crate::admin::ReportQuery => "report query",
);

/// A JSON body of type `T` (admin routes only); a malformed one is refused with 400 (or 415
/// without a JSON content type, 413 when too large), counted and audited by
/// `roles::authorize` like every refusal of an admin route.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + Named + Send> FromRequest<App> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, app).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => {
                // Counted and audited with the caller by the role check around the handler.
                let why = rejection.body_text();
                Err(ApiError::new(
                    rejection.status(),
                    format!("malformed {}: {why}", T::WHAT),
                ))
            }
        }
    }
}

/// A query string of type `T`; a malformed one is refused like a malformed body.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Named + Send> FromRequestParts<App> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, app).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(rejection) => {
                let why = rejection.body_text();
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("malformed {}: {why}", T::WHAT),
                ))
            }
        }
    }
}
