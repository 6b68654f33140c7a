//! The `idp-hook` function: Okta event hooks, through a function URL (or API Gateway) event.
//! The verification, authorization and deduplication live in `shared::inbound::okta_hook`,
//! shared with the local server.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use shared::aws::{EdgeError, http};
use shared::{Engine, Secret};

pub async fn handle(
    engine: &Engine,
    hook_secret: &Secret,
    req: ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, EdgeError> {
    let body = match http::body(&req) {
        Ok(b) => b,
        Err(why) => return Ok(http::json(400, &serde_json::json!({"error": why}))),
    };
    let reply = shared::inbound::okta_hook::handle(
        engine,
        hook_secret,
        &http::method(&req),
        &req.headers,
        &body,
    )
    .await
    .map_err(|e| EdgeError::Retryable(e.to_string()))?;
    Ok(http::reply(reply))
}
