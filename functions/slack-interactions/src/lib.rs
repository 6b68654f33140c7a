//! The `slack-interactions` function: signed Slack interactivity requests (Approve / Deny
//! clicks), through a function URL (or API Gateway) event. Verification, parsing and the
//! decision live in `shared::inbound::slack`, shared with the local server.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use shared::aws::{EdgeError, http};
use shared::slack::SlackWeb;
use shared::{Engine, Secret};

pub async fn handle(
    engine: &Engine,
    signing_secret: &Secret,
    slack: Option<&SlackWeb>,
    req: ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, EdgeError> {
    let body = match http::body(&req) {
        Ok(b) => b,
        Err(why) => return Ok(http::json(400, &serde_json::json!({"error": why}))),
    };
    use shared::inbound::slack as interactions;
    let now = engine.clock.now();
    if let Some(why) = interactions::unauthenticated(signing_secret, &req.headers, &body, now) {
        http::refuse(engine, interactions::REFUSED, &why)
            .await
            .map_err(|e| EdgeError::Retryable(e.to_string()))?;
        return Ok(http::reply(interactions::unauthenticated_reply(&why)));
    }
    let reply = interactions::handle(engine, signing_secret, slack, &req.headers, &body)
        .await
        .map_err(|e| EdgeError::Retryable(e.to_string()))?;
    Ok(http::reply(reply))
}
