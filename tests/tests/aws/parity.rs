//! One HTTP surface on both deployments: the test walks the route table and calls every route
//! on the real local server (`steward serve`, over HTTP) and through the `api` Lambda function's
//! handler (API Gateway v2 event JSON, against moto), after the same setup on both, and checks
//! each answers with the same status and the same body shape. A route added to the table
//! without a call here does not compile (`sample` matches every operation).

use crate::functions::{Aws, aws_with_people, http_event, invoke};
use crate::support::{self, Server};
use serde_json::{Value, json};
use shared::http::routes::{Access, Op, ROUTES, Route};
use std::collections::BTreeMap;

const AGENT: &str = "datadog-remediation-agent-prod";

/// What differs between the two sides' setups: the ids their workflows got.
struct Ids {
    workflow: String,
    approval: String,
    campaign: String,
}

/// One call: the path's values, the query string and the JSON body.
struct Sample {
    args: Vec<String>,
    query: &'static str,
    body: Option<Value>,
}

fn call(args: &[&str], body: Option<Value>) -> Sample {
    Sample {
        args: args.iter().map(|s| s.to_string()).collect(),
        query: "",
        body,
    }
}

/// The call each route gets. Calls that would start work the local worker then runs (and the
/// Lambda side, with no worker, would not) are refusals, so both sides stay in step.
fn sample(op: Op, ids: &Ids) -> Sample {
    let reason = || json!({"reason": "parity check"});
    match op {
        Op::Health | Op::HealthCounts => call(&[], None),
        Op::SlackInteractions => call(&[], Some(json!({}))),
        Op::OktaHookVerification => call(&[], None),
        Op::OktaHookDelivery => call(&[], Some(json!({"data": {"events": []}}))),
        Op::SharedSignals => call(&[], Some(json!("not a SET"))),
        Op::Whoami => call(&[], None),
        Op::ListAgents => call(&[], None),
        Op::RequestAgent => call(&[], Some(request())),
        Op::KeyNonce => call(&[], None),
        // A proof over a nonce the other side never issued: refused alike.
        Op::ConfirmKey => call(&[AGENT, "no-such-kid"], None),
        Op::ConfirmCertificate => call(&[AGENT, "no-such-certificate"], None),
        // A CSR that is none, for a secret agent: refused alike.
        Op::RotateCertificate => call(&[AGENT], Some(json!({"csr": "not a CSR"}))),
        Op::RotateKey => call(
            &[AGENT],
            Some(json!({"public_jwk": {"kty": "EC"}, "key_proof": "not a proof"})),
        ),
        Op::ShowAgent | Op::AgentHistory | Op::AgentGrants => call(&[AGENT], None),
        // A secret agent has no certificate: refused alike.
        Op::AgentCertificate => call(&[AGENT], None),
        Op::ChangeScopes => call(
            &[AGENT],
            Some(json!({"add": ["okta:users:manage"], "reason": "parity"})),
        ),
        Op::ReassignOwner => call(&[AGENT], Some(json!({"owner": support::BOB}))),
        Op::Rotate => call(&[AGENT], Some(json!({}))),
        Op::Decommission | Op::Freeze | Op::Unfreeze => call(&[AGENT], Some(reason())),
        Op::Renew => call(
            &[AGENT],
            Some(json!({"until": "2099-01-01", "reason": "parity"})),
        ),
        Op::ListShadowAgents => call(&[], None),
        Op::ClaimShadowAgent => call(
            &["no-such-client"],
            Some(
                json!({"owner": support::ALICE, "team": "sre", "environment": "prod", "purpose": "parity"}),
            ),
        ),
        Op::ReleaseShadowAgent => call(&["no-such-client"], Some(reason())),
        Op::Discover | Op::Sweep | Op::ListCampaigns => call(&[], None),
        Op::LaunchCampaign => call(
            &[],
            Some(
                json!({"id": ids.campaign, "scope": {"environments": ["staging"], "teams": [], "risk": []}}),
            ),
        ),
        Op::CampaignProgress => call(&[&ids.campaign], None),
        Op::CampaignReport => Sample {
            query: "format=csv",
            ..call(&[&ids.campaign], None)
        },
        Op::AnswerReview => call(&["no-such-item"], Some(json!({"decision": "keep"}))),
        Op::ShowWorkflow => call(&[&ids.workflow], None),
        Op::CancelWorkflow => call(&["no-such-workflow"], Some(reason())),
        Op::ListApprovals => Sample {
            query: "all=true",
            ..call(&[], None)
        },
        // Automation may not decide: refused alike on both sides.
        Op::Approve => call(&[&ids.approval], Some(json!({}))),
        Op::Deny => call(&[&ids.approval], Some(reason())),
        Op::ExportAudit => Sample {
            query: "after=0&limit=5",
            ..call(&[], None)
        },
        Op::AuditSeal | Op::Notifications | Op::DeadLetters | Op::IdpClients => call(&[], None),
        // Personal tokens belong to people: automation is refused alike.
        Op::CreateToken => call(&[], Some(json!({"name": "ci"}))),
        Op::ListTokens => call(&[], None),
        Op::RevokeToken => call(&["pat_0000000000000000"], Some(json!({}))),
    }
}

fn request() -> Value {
    json!({
        "name": AGENT,
        "owner": support::ALICE,
        "team": "sre",
        "environment": "prod",
        "purpose": "Mutes flapping monitors and opens incidents during on-call",
        "scopes": ["datadog:metrics:read", "datadog:monitors:write"],
    })
}

/// A side of the comparison: how to call a route there.
enum Side<'a> {
    Local(&'a Server),
    Lambda(&'a Aws),
}

impl Side<'_> {
    async fn call(&self, route: &Route, s: &Sample) -> (u16, Value) {
        let args: Vec<&str> = s.args.iter().map(String::as_str).collect();
        let mut path = route.url(&args);
        if !s.query.is_empty() {
            path = format!("{path}?{}", s.query);
        }
        let method = route.verb.as_str();
        match self {
            Side::Local(server) => tokio::task::block_in_place(|| {
                let url = server.url(&path);
                let req = match method {
                    "GET" => server.http().get(url),
                    _ => server
                        .http()
                        .post(url)
                        .json(s.body.as_ref().unwrap_or(&json!({}))),
                };
                let resp = req
                    .bearer_auth(&server.token)
                    .send()
                    .expect("HTTP request to steward");
                let status = resp.status().as_u16();
                let text = resp.text().expect("response body");
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }),
            Side::Lambda(aws) => {
                let body = (method == "POST").then(|| s.body.clone().unwrap_or(json!({})));
                let (status, v) =
                    invoke(&aws.router, http_event(method, &path, body.as_ref())).await;
                (status as u16, v)
            }
        }
    }
}

/// The shape of a JSON value: object keys (recursively) and value kinds. `null` matches
/// anything (an optional field set on one side only); arrays compare by their first element.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => json!([a.first().map(shape)]),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

/// Does `a` have the shape of `b`, where both have a value?
fn same_shape(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
            keys.into_iter().all(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => same_shape(p, q),
                _ => false,
            })
        }
        (Value::Array(x), Value::Array(y)) => match (x.first(), y.first()) {
            (Some(Value::Null), _) | (_, Some(Value::Null)) | (None, _) | (_, None) => true,
            (Some(p), Some(q)) => same_shape(p, q),
        },
        (Value::Null, _) | (_, Value::Null) => true,
        (p, q) => p == q,
    }
}

/// The same setup on a side: one agent requested (its approval pending), one campaign id.
async fn set_up(side: &Side<'_>) -> Ids {
    let (status, started) = side
        .call(
            &shared::http::routes::REQUEST_AGENT,
            &call(&[], Some(request())),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let workflow = started["workflow_id"].as_str().unwrap().to_string();
    // The approval is asked by a command: locally the worker runs it, on the Lambda side the
    // test runs it, as the worker function would.
    if let Side::Lambda(aws) = side {
        while aws.stack.engine.work_once(16).await.unwrap() > 0 {}
    }
    let mut approval = None;
    for _ in 0..300 {
        let (_, list) = side
            .call(&shared::http::routes::LIST_APPROVALS, &call(&[], None))
            .await;
        if let Some(id) = list[0]["request"]["id"].as_str() {
            approval = Some(id.to_string());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ids {
        workflow,
        approval: approval.expect("the approval was asked"),
        campaign: "2026-parity".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_alike_locally_and_through_the_lambda_handler() {
    let server = tokio::task::block_in_place(Server::start);
    let aws = aws_with_people(5, None, support::PEOPLE).await;
    // The scheduler's tick seals the trail on AWS, as `steward serve` does at start.
    shared::audit::seal::seal(
        aws.edge.engine.store.as_ref(),
        &crate::sealer(),
        chrono::Utc::now(),
        true,
    )
    .await
    .unwrap();
    let (local, lambda) = (Side::Local(&server), Side::Lambda(&aws));
    let local_ids = set_up(&local).await;
    let lambda_ids = set_up(&lambda).await;

    let mut differences = BTreeMap::new();
    let mut succeeded = 0;
    for route in ROUTES {
        let (ls, lv) = local.call(route, &sample(route.op, &local_ids)).await;
        let (as_, av) = lambda.call(route, &sample(route.op, &lambda_ids)).await;
        if (200..300).contains(&ls) && (200..300).contains(&as_) {
            succeeded += 1;
        }
        // On AWS only the worker holds the identity provider (the api function queues what
        // needs it), so its client list is not served there.
        if route.op == shared::http::routes::Op::IdpClients {
            assert_eq!(ls, 200, "{}: {lv}", route.name());
            assert_eq!(as_, 404, "{} on AWS: {av}", route.name());
            assert!(
                av["error"].as_str().unwrap_or("").contains("worker"),
                "{av}"
            );
            continue;
        }
        if route.embedded_only {
            assert_eq!(ls, 200, "{}: {lv}", route.name());
            assert_eq!(as_, 404, "{} on AWS: {av}", route.name());
            assert!(
                av["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("embedded default"),
                "{}: {av}",
                route.name()
            );
            continue;
        }
        if ls != as_ || !same_shape(&shape(&lv), &shape(&av)) {
            differences.insert(
                route.name(),
                format!("local {ls} {lv}\n    lambda {as_} {av}"),
            );
        }
    }
    assert!(
        differences.is_empty(),
        "routes that answer differently:\n{}",
        differences
            .iter()
            .map(|(r, d)| format!("  {r}:\n    {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The reads and safe writes automation may do succeed (14 of the 39 today, with the IdP's
    // client list checked apart above); the rest are refusals both sides must answer alike
    // (the role table refuses automation's decisions).
    assert!(
        succeeded >= 14,
        "only {succeeded} of {} routes succeeded on both sides",
        ROUTES.len()
    );

    // Admin routes refuse a caller who did not authenticate, on both.
    for route in ROUTES.iter().filter(|r| r.access == Access::Admin) {
        let s = sample(route.op, &local_ids);
        let args: Vec<&str> = s.args.iter().map(String::as_str).collect();
        let url = server.url(&route.url(&args));
        let status = tokio::task::block_in_place(|| {
            let req = match route.verb.as_str() {
                "GET" => server.http().get(url),
                _ => server.http().post(url).json(&json!({})),
            };
            req.send().unwrap().status().as_u16()
        });
        assert_eq!(status, 401, "{} without the admin token", route.name());
        let mut unsigned = http_event(route.verb.as_str(), &route.url(&args), None);
        unsigned["requestContext"]
            .as_object_mut()
            .unwrap()
            .remove("authorizer");
        let (status, body) = invoke(&aws.router, unsigned).await;
        assert_eq!(status, 403, "{} unsigned: {body}", route.name());
    }
}

#[test]
fn shapes_compare_keys_and_kinds_not_values() {
    let a = json!({"id": "x", "n": 1, "items": [{"k": true}], "opt": null});
    let b = json!({"id": "y", "n": 2, "items": [], "opt": "set"});
    assert!(same_shape(&shape(&a), &shape(&b)));
    let c = json!({"id": "y", "n": "2", "items": []});
    assert!(
        !same_shape(&shape(&a), &shape(&c)),
        "a number is not a string"
    );
    let d = json!({"id": "y", "n": 2, "items": [], "extra": 1});
    assert!(
        !same_shape(&shape(&a), &shape(&d)),
        "a key on one side only"
    );
}
