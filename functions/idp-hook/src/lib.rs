//! The `idp-hook` function: Okta's two ways of telling Steward what happened.
//! - Event hooks, through a function URL (or API Gateway) request: verification,
//!   authorization and deduplication live in `shared::inbound::okta_hook`, shared with the
//!   local server.
//! - Okta Log Streaming: System Log events on an EventBridge partner bus, delivered by the
//!   template's rule, one `LogEvent` per EventBridge event (`detail`).
//!
//! Both feed `shared::intake`, the one mapping of events to workflows.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde_json::Value;
use shared::audit;
use shared::aws::{EdgeError, http};
use shared::inbound::okta_events;
use shared::{Engine, Secret};
use statemachines::Actor;

/// Where an invocation came from, told apart by its shape.
pub enum Invocation {
    Hook(Box<ApiGatewayV2httpRequest>),
    LogStream(Value),
}

impl Invocation {
    pub fn from_payload(payload: Value) -> Result<Self, EdgeError> {
        if payload.get("detail-type").is_some() && payload.get("detail").is_some() {
            return Ok(Self::LogStream(payload));
        }
        serde_json::from_value(payload)
            .map(|r| Self::Hook(Box::new(r)))
            .map_err(|e| {
                EdgeError::NonRetryable(format!(
                    "neither a function URL request nor an EventBridge event: {e}"
                ))
            })
    }
}

/// Handles one invocation; the hook answer is returned as JSON for the function URL.
pub async fn dispatch(
    engine: &Engine,
    hook_secret: &Secret,
    payload: Value,
) -> Result<Value, EdgeError> {
    match Invocation::from_payload(payload)? {
        Invocation::Hook(req) => {
            let reply = handle(engine, hook_secret, *req).await?;
            serde_json::to_value(reply).map_err(|e| EdgeError::NonRetryable(e.to_string()))
        }
        Invocation::LogStream(event) => {
            log_stream(engine, &event).await?;
            Ok(Value::Null)
        }
    }
}

pub async fn handle(
    engine: &Engine,
    hook_secret: &Secret,
    req: ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, EdgeError> {
    let body = match http::body(&req) {
        Ok(b) => b,
        Err(why) => return Ok(http::json(400, &serde_json::json!({"error": why}))),
    };
    use shared::inbound::okta_hook;
    if let Some(why) = okta_hook::unauthenticated(hook_secret, &req.headers) {
        http::refuse(engine, okta_hook::REFUSED, why)
            .await
            .map_err(|e| EdgeError::Retryable(e.to_string()))?;
        return Ok(http::reply(okta_hook::unauthenticated_reply(why)));
    }
    let reply = okta_hook::handle(
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

/// One System Log event from Okta Log Streaming. Only Okta's partner sources are read (the
/// rule filters on them too). An unreadable event is audited and dropped: EventBridge would
/// only retry it into the dead-letter queue. Storage failures are retried.
pub async fn log_stream(engine: &Engine, event: &Value) -> Result<(), EdgeError> {
    let source = event["source"].as_str().unwrap_or_default();
    let problem = if !source.starts_with("aws.partner/okta.com/") {
        Some(format!(
            "EventBridge event from `{source}` is not an Okta log stream"
        ))
    } else {
        match okta_events::received(&event["detail"]) {
            Ok(received) => {
                shared::intake::accept(engine, vec![received])
                    .await
                    .map_err(|e| EdgeError::Retryable(e.to_string()))?;
                None
            }
            Err(e) => Some(e.to_string()),
        }
    };
    if let Some(why) = problem {
        tracing::warn!(why, "log stream event refused");
        engine
            .store
            .append_audit(vec![audit::refusal(
                "Okta log stream event",
                &Actor::System,
                None,
                None,
                &why,
                engine.clock.now(),
            )])
            .await
            .map_err(|e| EdgeError::Retryable(e.to_string()))?;
    }
    Ok(())
}
