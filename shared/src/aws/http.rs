//! HTTP requests as Lambda receives them (API Gateway HTTP API and function URLs share the
//! payload format 2.0), for the `idp-hook` and `slack-interactions` functions (the `api`
//! function serves the shared axum router through `lambda_http` instead).

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;

/// A request body as sent (function URLs base64-encode some bodies).
pub fn body(req: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, String> {
    let raw = req.body.as_deref().unwrap_or("");
    if req.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|e| format!("body is not valid base64: {e}"))
    } else {
        Ok(raw.as_bytes().to_vec())
    }
}

pub fn method(req: &ApiGatewayV2httpRequest) -> String {
    req.request_context
        .http
        .method
        .as_str()
        .to_ascii_uppercase()
}

/// A response with a JSON body.
pub fn json(status: u16, value: &serde_json::Value) -> ApiGatewayV2httpResponse {
    text(status, "application/json", value.to_string())
}

pub fn text(status: u16, content_type: &str, body: String) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(status);
    r.headers = headers;
    r.body = Some(Body::Text(body));
    r
}

/// A response without a body.
pub fn empty(status: u16) -> ApiGatewayV2httpResponse {
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(status);
    r
}

/// The Lambda response for an inbound edge's reply.
pub fn reply(r: crate::inbound::Reply) -> ApiGatewayV2httpResponse {
    match r.body {
        Some(v) => json(r.status, &v),
        None => empty(r.status),
    }
}

/// This container's window of unauthenticated refusals (see
/// [`crate::audit::refusals::RefusalWindow::record_due`]): a flood of forged requests is counted (the
/// `RefusedRequests` metric) and recorded within the window's budget, not one audit write each,
/// which would all contend for the audit chain's head item.
static REFUSALS: std::sync::LazyLock<std::sync::Mutex<crate::audit::refusals::RefusalWindow>> =
    std::sync::LazyLock::new(Default::default);

/// Counts an unauthenticated refusal of `what` (e.g. "Slack interaction") and records it when
/// this container's window says it is due. Fails only when the store is unreachable.
pub async fn refuse(
    engine: &crate::Engine,
    what: &str,
    why: &str,
) -> Result<(), crate::engine::EngineError> {
    crate::metric!("RefusedRequests", 1, "Count", "Refused" => what);
    tracing::warn!(what, why, "request refused");
    let due = REFUSALS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record_due(&format!("{what}|{why}"), why);
    if let Some(why) = due.as_deref() {
        let record = crate::audit::refusal(
            what,
            &statemachines::Actor::System,
            None,
            None,
            why,
            engine.clock.now(),
        );
        engine.store.append_audit(vec![record]).await?;
    }
    Ok(())
}
