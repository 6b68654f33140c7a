//! The `api` function: Steward's HTTP surface on AWS. It serves the one router of
//! `shared::http` (the same the local server mounts) through `lambda_http`, for API Gateway
//! HTTP API and function URL events (payload format 2.0). Admin routes need an IAM-signed
//! caller: API Gateway's IAM authorizer names it in the request context.

use lambda_http::request::RequestContext;
use shared::http::{App, AppParts, Authenticate, Caller, Unauthenticated};
use shared::wiring::aws::AwsStack;
use std::sync::Arc;

pub use lambda_http;

/// The caller API Gateway's IAM authorizer verified (SigV4), by its principal ARN.
pub struct IamCaller;

#[async_trait::async_trait]
impl Authenticate for IamCaller {
    async fn authenticate(
        &self,
        request: &lambda_http::http::request::Parts,
    ) -> Result<Caller, Unauthenticated> {
        let arn = match request.extensions.get::<RequestContext>() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx
                .authorizer
                .as_ref()
                .and_then(|a| a.iam.as_ref())
                .and_then(|i| i.user_arn.clone()),
            _ => None,
        };
        match arn {
            Some(principal) if !principal.is_empty() => Ok(Caller::automation(principal)),
            _ => Err(Unauthenticated {
                status: lambda_http::http::StatusCode::FORBIDDEN,
                why: "the request is not signed with IAM credentials".into(),
                hint: "sign it with SigV4 (the route must use AWS_IAM authorization)".into(),
            }),
        }
    }
}

/// The router the function serves, over the stack built once at start.
pub fn router(
    stack: &AwsStack,
    ssf: Option<Arc<shared::inbound::ssf::SsfReceiver>>,
) -> axum::Router {
    shared::http::router(App::new(AppParts {
        engine: stack.engine.clone(),
        auth: Arc::new(IamCaller),
        // Slack and Okta have their own functions (and secrets); only the routes are here.
        slack: None,
        okta_hook_secret: None,
        ssf,
        local: None,
    }))
}
