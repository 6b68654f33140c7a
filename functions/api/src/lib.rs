//! The `api` function: Steward's admin API behind API Gateway (HTTP API, IAM auth). The same
//! routes and JSON bodies as the local server's `/api`: request agents and scope changes,
//! decide approvals, cancel workflows, rotate, decommission and renew agents, run the sweep,
//! list inventory, show history, export the audit trail.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shared::admin::{
    AgentRequestBody, CancelBody, DecisionBody, DecommissionBody, OwnerBody, RenewBody, RotateBody,
    ScopeChangeBody,
};
use shared::audit;
use shared::aws::http;
use shared::engine::{EngineError, Started};
use shared::ports::Queue;
use shared::{Engine, audit::refusal};
use statemachines::rotation::RotationReason;
use statemachines::{Actor, Decision};

/// Handles one request. Client errors are answered (4xx, audited); an `Err` is left for
/// API Gateway to report as a 5xx (retryable).
pub async fn handle(
    engine: &Engine,
    queue: &dyn Queue,
    req: ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, EngineError> {
    let method = http::method(&req);
    let path = http::path(&req);
    // API Gateway's IAM authorizer names the signed caller; without one the route is open.
    let caller = req
        .request_context
        .authorizer
        .as_ref()
        .and_then(|a| a.iam.as_ref())
        .and_then(|i| i.user_arn.clone());
    let Some(caller) = caller else {
        return refuse(engine, 403, &format!("{method} {path}"), "the request is not signed with IAM credentials (the route must use AWS_IAM authorization)").await;
    };
    tracing::info!(%method, %path, %caller, "admin API call");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let result = match (method.as_str(), segments.as_slice()) {
        ("GET", ["agents"]) => Ok(http::json(200, &json!(engine.store.agents().await?))),
        ("POST", ["agents"]) => {
            match parse::<AgentRequestBody>(engine, &req, "agent request").await? {
                Ok(b) => {
                    let requester = b.requester.unwrap_or_else(|| b.request.owner.clone());
                    started(engine.request_agent(b.request, &requester).await)
                }
                Err(r) => Ok(r),
            }
        }
        ("GET", ["agents", agent]) => show_agent(engine, agent).await,
        ("POST", ["agents", agent, "scopes"]) => {
            match parse::<ScopeChangeBody>(engine, &req, "scope change").await? {
                Ok(b) => started(
                    engine
                        .request_scope_change(agent, b.request, &b.requester)
                        .await,
                ),
                Err(r) => Ok(r),
            }
        }
        ("POST", ["agents", agent, "owner"]) => {
            match parse::<OwnerBody>(engine, &req, "owner reassignment").await? {
                Ok(b) => engine
                    .reassign_owner(agent, &b.owner, &b.by)
                    .await
                    .map(|workflow_id| {
                        http::json(
                            202,
                            &json!({"workflow_id": workflow_id, "owner": b.owner, "status": "owner assignment queued"}),
                        )
                    }),
                Err(r) => Ok(r),
            }
        }
        ("POST", ["agents", agent, "rotate"]) => {
            match parse::<RotateBody>(engine, &req, "rotation request").await? {
                Ok(b) => started(
                    engine
                        .request_rotation(
                            agent,
                            RotationReason::OnDemand { by: b.by.clone() },
                            Actor::Person(b.by),
                        )
                        .await,
                ),
                Err(r) => Ok(r),
            }
        }
        ("POST", ["agents", agent, "decommission"]) => {
            match parse::<DecommissionBody>(engine, &req, "decommission request").await? {
                Ok(b) => started(engine.request_decommission(agent, &b.by, &b.reason).await),
                Err(r) => Ok(r),
            }
        }
        ("POST", ["agents", agent, "renew"]) => {
            match parse::<RenewBody>(engine, &req, "renewal request").await? {
                Ok(b) => started(
                    engine
                        .request_renewal(agent, b.until, &b.by, &b.reason)
                        .await,
                ),
                Err(r) => Ok(r),
            }
        }
        ("POST", ["sweep"]) => Ok(http::json(200, &json!(engine.sweep().await?))),
        ("GET", ["workflows", id]) => match engine.store.instance(id).await? {
            Some(i) => {
                let history = engine.store.history(id).await?;
                Ok(http::json(200, &json!({"workflow": i, "history": history})))
            }
            None => Ok(not_found(&format!("no workflow `{id}`"))),
        },
        ("POST", ["workflows", id, "cancel"]) => {
            match parse::<CancelBody>(engine, &req, "cancel request").await? {
                Ok(b) => engine.cancel(id, &b.by, &b.reason).await.map(|()| {
                    http::json(
                        202,
                        &json!({"workflow_id": id, "status": "cancel requested"}),
                    )
                }),
                Err(r) => Ok(r),
            }
        }
        ("GET", ["approvals"]) => {
            let all = http::query(&req, "all") == Some("true");
            let records = engine.store.approvals(!all).await?;
            let out: Vec<Value> = records.into_iter().map(|r| json!({"status": r.status(), "action_hash": r.action_hash, "request": r.request, "outcome": r.outcome})).collect();
            Ok(http::json(200, &json!(out)))
        }
        ("POST", ["approvals", id, verb @ ("approve" | "deny")]) => {
            let decision = if *verb == "approve" {
                Decision::Approve
            } else {
                Decision::Deny
            };
            match parse::<DecisionBody>(engine, &req, "approval decision").await? {
                Ok(b) => engine
                    .decide(id, &b.approver, decision, b.reason, b.action_hash.as_deref())
                    .await
                    .map(|record| {
                        http::json(202, &json!({"approval_id": id, "workflow_id": record.request.workflow_id, "decision": decision, "status": "decision queued: the workflow applies it and records the outcome"}))
                    }),
                Err(r) => Ok(r),
            }
        }
        ("GET", ["audit"]) => {
            let after = http::query(&req, "after")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let limit = http::query(&req, "limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000usize)
                .min(10_000);
            let rows = engine.store.audit(after, limit).await?;
            let mut text = String::new();
            for r in &rows {
                text.push_str(&audit::export_line(r));
                text.push('\n');
            }
            Ok(http::text(200, "application/x-ndjson", text))
        }
        ("GET", ["dead-letters"]) => Ok(http::json(
            200,
            &json!(queue.dead_letters(100).await.map_err(EngineError::from)?),
        )),
        _ => Ok(not_found(&format!("no route {method} {path}"))),
    };
    match result {
        Ok(r) => Ok(r),
        Err(EngineError::Rejected(r)) => Ok(http::json(
            422,
            &json!({"error": "request refused", "reasons": r.reasons}),
        )),
        Err(EngineError::NotFound(m)) => Ok(not_found(&m)),
        Err(EngineError::Conflict(m)) => Ok(http::json(409, &json!({"error": m}))),
        Err(other) => Err(other),
    }
}

fn not_found(message: &str) -> ApiGatewayV2httpResponse {
    http::json(404, &json!({"error": message}))
}

/// 202 for a new workflow, 200 when the identical request was already received.
fn started(r: Result<Started, EngineError>) -> Result<ApiGatewayV2httpResponse, EngineError> {
    let s = r?;
    let status = if s.duplicate { 200 } else { 202 };
    Ok(http::json(status, &json!(s)))
}

async fn show_agent(engine: &Engine, agent: &str) -> Result<ApiGatewayV2httpResponse, EngineError> {
    let Some(a) = engine.find_agent(agent).await? else {
        return Ok(not_found(&format!("no agent with id or name `{agent}`")));
    };
    let workflows: Vec<Value> = engine
        .store
        .instances_for_agent(&a.id)
        .await?
        .into_iter()
        .map(|i| json!({"id": i.id, "kind": i.kind, "state": i.state_name, "terminal": i.terminal, "pending_commands": i.pending.len(), "updated_at": i.updated_at}))
        .collect();
    Ok(http::json(
        200,
        &json!({"agent": a, "workflows": workflows}),
    ))
}

/// The JSON body, or the 400 answer (audited) saying what is wrong with it.
async fn parse<T: DeserializeOwned>(
    engine: &Engine,
    req: &ApiGatewayV2httpRequest,
    what: &str,
) -> Result<Result<T, ApiGatewayV2httpResponse>, EngineError> {
    let parsed = http::body(req).and_then(|b| {
        serde_json::from_slice::<T>(&b).map_err(|e| format!("malformed {what}: {e}"))
    });
    match parsed {
        Ok(v) => Ok(Ok(v)),
        Err(why) => Ok(Err(refuse(engine, 400, what, &why).await?)),
    }
}

/// A refused request: counted in the log, audited, answered with what was wrong.
async fn refuse(
    engine: &Engine,
    status: u16,
    what: &str,
    why: &str,
) -> Result<ApiGatewayV2httpResponse, EngineError> {
    tracing::warn!(what, why, "refused");
    engine
        .store
        .append_audit(vec![refusal(
            what,
            &Actor::System,
            None,
            None,
            why,
            engine.clock.now(),
        )])
        .await?;
    Ok(http::json(status, &json!({"error": why})))
}
