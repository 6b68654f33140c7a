//! Each Lambda handler called as Lambda calls it, with event payloads of the documented shapes
//! (tests/fixtures/aws), against moto: `api` → SQS → `worker` runs an onboarding to Active
//! (approved in Slack through `slack-interactions`), a malformed message ends in the dead-letter
//! queue while the rest of its batch succeeds, `secret-rotation` walks its four steps (each
//! twice), `scheduler` ticks timers, `idp-hook` takes Okta deliveries once; with Slack
//! configured (a local fake Web API), the worker posts the approval and records the messages in
//! DynamoDB, and a click through `slack-interactions` decides it.

use crate::moto;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::secretsmanager::SecretsManagerSecretRotationEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde_json::{Value, json};
use shared::aws::EdgeError;
use shared::credential::Credential;
use shared::embedded::{Db, Durability};
use shared::idp::dev::DevIdp;
use shared::people_file::PeopleFileDirectory;
use shared::ports::vault::Stage;
use shared::ports::{IdentityProvider, Queue, Vault};
use shared::wiring::aws::{
    AwsSettings, AwsStack, LoggedChannel, NoIdentityProvider, Parts, SlackLink,
};
use shared::{EngineConfig, Secret};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const AGENT: &str = "datadog-remediation-agent-prod";
const SAM_SLACK_ID: &str = "U0SAMPATEL";
const SIGNING_SECRET: &str = "test-signing-secret-9f8e7d6c5b4a";
pub(crate) const HOOK_SECRET: &str = "Bearer okta-hook-shared-secret-3c2b1a";

/// The people directory, with Slack user ids for the approvers.
const PEOPLE: &str = r#"
[[person]]
email = "alice@example.com"
name = "Alice Ng"
manager = "maria@example.com"
chat = "U0ALICENG"

[[person]]
email = "maria@example.com"
name = "Maria Rossi"

[[person]]
email = "sam.security@example.com"
name = "Sam Patel"
chat = "U0SAMPATEL"

[[person]]
email = "priya.secops@example.com"
name = "Priya Shah"
"#;

pub struct Aws {
    /// The `worker` function's stack: the one with the identity provider.
    pub stack: AwsStack,
    /// The stack of the functions that never call the identity provider (`api`, `scheduler`,
    /// `idp-hook`, `slack-interactions`), as `AwsStack::from_env` builds it: what needs the
    /// identity provider is queued for the worker.
    pub edge: AwsStack,
    /// The `api` function's router over `edge`, as its `main` builds it.
    pub router: axum::Router,
    pub idp: Arc<DevIdp>,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    _dir: tempfile::TempDir,
}

/// The stack as each function's `main` builds it, on fresh moto resources, with the dev IdP
/// standing in for the identity provider.
pub async fn aws(max_receives: u32) -> Aws {
    aws_with(max_receives, None).await
}

/// The stack with Slack as the human channel (the worker's `STEWARD_SLACK_BOT_TOKEN_ARN`).
async fn aws_with(max_receives: u32, slack: Option<SlackLink>) -> Aws {
    aws_with_people(max_receives, slack, PEOPLE).await
}

/// The stack with `people` as the directory.
pub async fn aws_with_people(max_receives: u32, slack: Option<SlackLink>, people: &str) -> Aws {
    aws_with_vault(max_receives, slack, people, None).await
}

/// The stack with agents' secrets in the KMS-envelope vault under `kms_key` (else Secrets
/// Manager).
async fn aws_with_vault(
    max_receives: u32,
    slack: Option<SlackLink>,
    people: &str,
    kms_key: Option<String>,
) -> Aws {
    let sdk = moto::sdk().await;
    let table = moto::fresh_table(&sdk).await;
    let queue = moto::fresh_queue(&sdk, max_receives, Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("idp.db"), Durability::Wal).unwrap());
    let idp =
        Arc::new(DevIdp::open(db, &dir.path().join("idp.pem"), "http://127.0.0.1:1").unwrap());
    let settings = AwsSettings {
        table,
        queue_url: queue.url().to_string(),
        secret_prefix: format!("{}/agents/", moto::unique("steward")),
        kms_key_id: kms_key.clone(),
        endpoint: Some(moto::endpoint()),
        rotation_function_arn: None,
        vault: match kms_key {
            Some(_) => shared::wiring::aws::VaultKind::DynamoDbKms,
            None => shared::wiring::aws::VaultKind::SecretsManager,
        },
    };
    let policy = shared::policy_file::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy.example.toml"),
    )
    .unwrap();
    let directory: Arc<PeopleFileDirectory> = Arc::new(PeopleFileDirectory::parse(people).unwrap());
    let engine = EngineConfig {
        base_backoff: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let parts = |idp: Arc<dyn IdentityProvider>, elsewhere: bool| Parts {
        policy: policy.clone(),
        directory: directory.clone(),
        idp,
        people: Arc::new(LoggedChannel),
        slack: slack.clone(),
        engine: EngineConfig {
            identity_provider_elsewhere: elsewhere,
            ..engine.clone()
        },
    };
    let stack = AwsStack::connect(&settings, parts(idp.clone(), false))
        .await
        .unwrap();
    let edge = AwsStack::connect(&settings, parts(Arc::new(NoIdentityProvider), true))
        .await
        .unwrap();
    // People sign in at the test's dev IdP, an OIDC issuer whose keys the function holds.
    let people = Arc::new(shared::sign_in::PersonTokens::new(idp.people_issuer()).unwrap());
    Aws {
        router: api::router(&edge, None, Some(people), None),
        stack,
        edge,
        idp,
        sqs: aws_sdk_sqs::Client::new(&sdk),
        queue_url: settings.queue_url,
        _dir: dir,
    }
}

/// An API Gateway HTTP API event (payload format 2.0, IAM-signed caller) for `method path`
/// (with its query string, if any) and a JSON body.
pub fn http_event(method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut v: Value =
        serde_json::from_str(include_str!("../../fixtures/aws/apigw-http-v2-iam.json")).unwrap();
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    v["rawPath"] = json!(path);
    v["rawQueryString"] = json!(query);
    v["requestContext"]["http"]["method"] = json!(method);
    v["requestContext"]["http"]["path"] = json!(path);
    if let Some(b) = body {
        v["body"] = json!(b.to_string());
    }
    v
}

/// Hands `event` to the `api` function's handler as the Lambda runtime does (the event JSON
/// deserialized, the router called through `lambda_http`), and returns the response JSON's
/// status and body.
pub async fn invoke(router: &axum::Router, event: Value) -> (i64, Value) {
    use api::lambda_http::{Adapter, Context, LambdaEvent, Service, request::LambdaRequest};
    let request: LambdaRequest = serde_json::from_value(event).unwrap();
    let mut handler = Adapter::from(router.clone());
    let response = handler
        .call(LambdaEvent::new(request, Context::default()))
        .await
        .unwrap();
    let r = serde_json::to_value(&response).unwrap();
    let text = r["body"].as_str().unwrap_or_default().to_string();
    let text = if r["isBase64Encoded"] == true {
        use base64::Engine as _;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
        )
        .unwrap()
    } else {
        text
    };
    (
        r["statusCode"].as_i64().unwrap(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub(crate) async fn call(a: &Aws, method: &str, path: &str, body: Option<&Value>) -> (i64, Value) {
    invoke(&a.router, http_event(method, path, body)).await
}

impl Aws {
    /// `person`'s access token from the test's dev IdP: password set and checked, a device code
    /// entered and exchanged, as `steward login` does it over HTTP.
    pub fn person_token(&self, person: &str) -> String {
        let now = chrono::Utc::now();
        let password = shared::Secret::new(format!("test password of {person}"));
        self.idp.set_password(person, &password, now).unwrap();
        let who = self.idp.check_password(person, &password, now).unwrap();
        let device = self
            .idp
            .start_device(Some("steward-cli"), None, now)
            .unwrap();
        self.idp
            .approve_device(&device.user_code, &who, now)
            .unwrap();
        self.idp
            .device_token(Some("steward-cli"), Some(&device.device_code), now)
            .unwrap()
            .access_token
    }
}

/// An API Gateway event from `person` signed in (a bearer token, no IAM signature).
pub fn person_event(token: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut e = http_event(method, path, body);
    e["requestContext"]["authorizer"] = Value::Null;
    e["headers"]["authorization"] = json!(format!("Bearer {token}"));
    e
}

/// A call to the `api` function by `person`, signed in.
pub(crate) async fn call_as(
    a: &Aws,
    person: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (i64, Value) {
    let token = a.person_token(person);
    invoke(&a.router, person_event(&token, method, path, body)).await
}

/// What the SQS event source does: receive a batch and invoke the worker with it.
pub(crate) async fn deliver(a: &Aws) -> Option<(SqsEvent, SqsBatchResponse)> {
    let got = a
        .sqs
        .receive_message()
        .queue_url(&a.queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(30)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    if got.is_empty() {
        return None;
    }
    let template: Value =
        serde_json::from_str(include_str!("../../fixtures/aws/sqs-fifo-record.json")).unwrap();
    let records: Vec<Value> = got
        .iter()
        .map(|m| {
            let mut r = template.clone();
            r["messageId"] = json!(m.message_id());
            r["receiptHandle"] = json!(m.receipt_handle());
            r["body"] = json!(m.body());
            let attrs: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), json!(v)))
                        .collect()
                })
                .unwrap_or_default();
            r["attributes"] = Value::Object(attrs);
            let message_attrs: serde_json::Map<String, Value> = m
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                json!({"stringValue": v.string_value(), "dataType": v.data_type(), "stringListValues": [], "binaryListValues": []}),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            r["messageAttributes"] = Value::Object(message_attrs);
            r
        })
        .collect();
    let event: SqsEvent = serde_json::from_value(json!({"Records": records})).unwrap();
    let response = worker::handle(&a.stack.engine, &*a.stack.queue, event.clone())
        .await
        .unwrap();
    Some((event, response))
}

/// Invokes the worker until the queue has nothing visible.
pub(crate) async fn drain(a: &Aws) {
    for _ in 0..50 {
        if deliver(a).await.is_none() {
            return;
        }
    }
    panic!("the queue did not drain");
}

pub(crate) async fn agent(a: &Aws) -> Value {
    let (status, body) = call(a, "GET", &format!("/api/agents/{AGENT}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["agent"].clone()
}

pub(crate) fn request() -> Value {
    json!({
        "name": AGENT,
        "owner": "alice@example.com",
        "team": "sre",
        "environment": "prod",
        "purpose": "Mutes flapping monitors and opens incidents during on-call",
        "scopes": ["datadog:metrics:read", "datadog:monitors:write"],
    })
}

/// A signed Slack block_actions request: `user` clicked `action` on the button whose value is
/// `value` (`<approval id>:<action hash>`).
fn slack_click(user: &str, action: &str, value: &str, secret: &str) -> ApiGatewayV2httpRequest {
    let payload = json!({
        "type": "block_actions",
        "team": {"id": "T0001", "domain": "example"},
        "user": {"id": user, "username": "sam", "team_id": "T0001"},
        "api_app_id": "A0001",
        "trigger_id": "1700000001.0001.abc",
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0001"},
        "actions": [{"type": "button", "action_id": action, "block_id": "decision", "value": value, "action_ts": format!("1700000001.{}", rand::random::<u32>())}],
    });
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = crate::fake_slack::signature(secret, &ts, &body);
    let mut v: Value =
        serde_json::from_str(include_str!("../../fixtures/aws/apigw-http-v2-iam.json")).unwrap();
    v["requestContext"]["http"]["method"] = json!("POST");
    v["requestContext"]["authorizer"] = Value::Null;
    v["headers"] = json!({
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": ts,
        "x-slack-signature": sig,
    });
    v["body"] = json!(body);
    serde_json::from_value(v).unwrap()
}

/// The pending approval's id.
pub(crate) async fn pending_approval(a: &Aws) -> String {
    let button = pending_button(a).await;
    button.rsplit_once(':').unwrap().0.to_string()
}

/// The pending approval's button value: `<approval id>:<action hash>`.
async fn pending_button(a: &Aws) -> String {
    let (status, approvals) = call(a, "GET", "/api/approvals", None).await;
    assert_eq!(status, 200);
    let id = approvals[0]["request"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an approval is pending: {approvals}"));
    format!("{id}:{}", approvals[0]["action_hash"].as_str().unwrap())
}

/// Requests an agent through `api`, approves it through `api`, runs the worker: Active.
pub(crate) async fn onboard(a: &Aws) -> Value {
    let (status, started) = call(a, "POST", "/api/agents", Some(&request())).await;
    assert_eq!(status, 202, "{started}");
    drain(a).await;
    let id = pending_approval(a).await;
    let (status, body) = call_as(
        a,
        "sam.security@example.com",
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    drain(a).await;
    let agent = agent(a).await;
    assert_eq!(agent["status"], "active", "{agent}");
    agent
}

pub(crate) async fn audit_lines(a: &Aws) -> Vec<Value> {
    let (status, body) = call(a, "GET", "/api/audit", None).await;
    assert_eq!(status, 200);
    match body {
        // One line of NDJSON is itself a JSON document.
        Value::Object(_) => vec![body],
        Value::String(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        other => panic!("unexpected audit export {other}"),
    }
}

/// api → SQS → worker, approved by a Slack click: the agent is Active, its credential is in
/// Secrets Manager as AWSCURRENT, and it gets a token.
#[tokio::test(flavor = "multi_thread")]
async fn onboarding_runs_to_active_through_api_sqs_and_worker() {
    let a = aws(5).await;
    let (status, started) = call(&a, "POST", "/api/agents", Some(&request())).await;
    assert_eq!(status, 202, "{started}");
    let workflow = started["workflow_id"].as_str().unwrap().to_string();
    let (status, again) = call(&a, "POST", "/api/agents", Some(&request())).await;
    assert_eq!(status, 200, "the identical request is recognised: {again}");
    drain(&a).await;
    assert_eq!(agent(&a).await["status"], "pending_approval");
    let approval = pending_button(&a).await;

    // A click from someone who is not an approver changes nothing.
    let alice = slack_interactions::handle(
        &a.edge.engine,
        &Secret::new(SIGNING_SECRET),
        None,
        slack_click("U0ALICENG", "approve", &approval, SIGNING_SECRET),
    )
    .await
    .unwrap();
    let text = format!("{:?}", alice.body);
    assert!(text.contains("ephemeral"), "{text}");
    // A forged click is refused outright.
    let forged = slack_interactions::handle(
        &a.edge.engine,
        &Secret::new(SIGNING_SECRET),
        None,
        slack_click(SAM_SLACK_ID, "approve", &approval, "not-the-secret"),
    )
    .await
    .unwrap();
    assert_eq!(forged.status_code, 401);
    // A flood of forged clicks costs the audit chain a bounded number of writes (each would
    // contend for its head item), not one each.
    let refused_before = audit_lines(&a)
        .await
        .iter()
        .filter(|l| {
            l["unmapped"]["steward_event"] == "refused"
                && l["unmapped"]["refused"] == "Slack interaction"
        })
        .count();
    for _ in 0..40 {
        let forged = slack_interactions::handle(
            &a.edge.engine,
            &Secret::new(SIGNING_SECRET),
            None,
            slack_click(SAM_SLACK_ID, "approve", &approval, "not-the-secret"),
        )
        .await
        .unwrap();
        assert_eq!(forged.status_code, 401);
    }
    let refused_after = audit_lines(&a)
        .await
        .iter()
        .filter(|l| {
            l["unmapped"]["steward_event"] == "refused"
                && l["unmapped"]["refused"] == "Slack interaction"
        })
        .count();
    assert!(
        refused_after - refused_before <= 1,
        "{} records for 40 forged clicks",
        refused_after - refused_before
    );
    drain(&a).await;
    assert_eq!(agent(&a).await["status"], "pending_approval");

    let sam = slack_interactions::handle(
        &a.edge.engine,
        &Secret::new(SIGNING_SECRET),
        None,
        slack_click(SAM_SLACK_ID, "approve", &approval, SIGNING_SECRET),
    )
    .await
    .unwrap();
    assert_eq!(sam.status_code, 200);
    assert!(format!("{:?}", sam.body).contains("Received your Approve"));
    drain(&a).await;

    let agent = agent(&a).await;
    assert_eq!(agent["status"], "active", "{agent}");
    let (status, wf) = call(&a, "GET", &format!("/api/workflows/{workflow}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(wf["workflow"]["state_name"], "Active");
    let agent_id = agent["id"].as_str().unwrap();
    let client_id = agent["client_id"].as_str().unwrap();
    let (version, stored) = a
        .stack
        .vault
        .get(agent_id, Stage::Current)
        .await
        .unwrap()
        .expect("the credential is in Secrets Manager");
    assert_eq!(agent["secret_version"], json!(version));
    let credential = Credential::from_secret(&stored).unwrap();
    assert_eq!(credential.client_id, client_id);
    let token = a
        .idp
        .issue_token(
            client_id,
            credential.client_secret.expose(),
            None,
            chrono::Utc::now(),
        )
        .unwrap();
    assert!(token.scope.contains("datadog:monitors:write"));

    // The table holds no secret; the audit trail names the decision.
    let scan = aws_sdk_dynamodb::Client::new(&moto::sdk().await)
        .scan()
        .table_name(a.stack.store.table())
        .send()
        .await
        .unwrap();
    let everything = format!("{:?}", scan.items());
    assert!(!everything.contains(credential.client_secret.expose()));
    let audit = audit_lines(&a).await;
    assert!(
        audit
            .iter()
            .any(|l| l["unmapped"]["steward_event"] == "approval_decided"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l["message"].as_str().unwrap_or_default().contains("Slack")),
        "the forged click is audited"
    );
}

/// Bad input to the api function: unsigned calls, malformed bodies, unknown agents and routes
/// get a clear 4xx, change nothing, and are audited.
#[tokio::test(flavor = "multi_thread")]
async fn api_refuses_bad_requests() {
    let a = aws(5).await;
    let mut unsigned = http_event("GET", "/api/agents", None);
    unsigned["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let (status, body) = invoke(&a.router, unsigned).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(&a, "POST", "/api/agents", Some(&json!({"name": 7}))).await;
    assert_eq!(status, 422, "well-formed JSON of the wrong shape");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("malformed agent request")
    );
    let (status, _) = call(&a, "GET", "/api/agents/nobody-agent-prod", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&a, "DELETE", "/api/agents", None).await;
    assert_eq!(status, 405, "the route exists, not with this method");
    let (status, body) = call(&a, "GET", "/api/no-such-route", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no route GET /api/no-such-route");
    let mut bad = request();
    bad["scopes"] = json!(["root:everything"]);
    let (status, body) = call(&a, "POST", "/api/agents", Some(&bad)).await;
    assert_eq!(status, 422, "{body}");
    let (_, agents) = call(&a, "GET", "/api/agents", None).await;
    assert_eq!(agents, json!([]), "nothing was created");
    let audit = audit_lines(&a).await;
    assert!(audit.len() >= 3, "refusals are audited: {audit:?}");
    assert!(audit.iter().all(|l| l["status"] == "Failure"));
}

/// A malformed message fails alone: the rest of its batch succeeds, and after the redrive count
/// it sits in the dead-letter queue (audited), not in the way.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_message_goes_to_the_dead_letter_queue_and_the_batch_succeeds() {
    let a = aws(2).await;
    a.stack
        .queue
        .send(vec![shared::ports::queue::OutMessage {
            group: "garbage".into(),
            dedupe_id: "garbage-1".into(),
            body: "{not json".into(),
            delay: Duration::ZERO,
        }])
        .await
        .unwrap();
    let (status, _) = call(&a, "POST", "/api/agents", Some(&request())).await;
    assert_eq!(status, 202);

    let (event, response) = deliver(&a).await.expect("a batch");
    assert_eq!(event.records.len(), 2, "both in one batch");
    let bad_id = event
        .records
        .iter()
        .find(|r| r.body.as_deref() == Some("{not json"))
        .and_then(|r| r.message_id.clone())
        .unwrap();
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, vec![bad_id.as_str()], "only the bad message fails");
    drain(&a).await;
    assert_eq!(
        agent(&a).await["status"],
        "pending_approval",
        "the good one went on"
    );

    // Redelivered until the redrive count, then dead-lettered.
    let mut dead = vec![];
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let _ = deliver(&a).await;
        dead = a.stack.queue.dead_letters(10).await.unwrap();
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(dead.len(), 1, "the malformed message is in the DLQ");
    assert_eq!(dead[0].body, "{not json");
    assert_eq!(dead[0].group, "garbage");
    assert_eq!(a.stack.queue.depth().await.unwrap(), 0);
    let audit = audit_lines(&a).await;
    assert!(
        audit
            .iter()
            .any(|l| l["unmapped"]["steward_event"] == "dead_letter"),
        "{audit:?}"
    );
}

fn rotation_event(
    a: &Aws,
    agent_id: &str,
    step: &str,
    token: &str,
) -> SecretsManagerSecretRotationEvent {
    let mut v: Value = serde_json::from_str(include_str!(
        "../../fixtures/aws/secretsmanager-rotation.json"
    ))
    .unwrap();
    v["Step"] = json!(step);
    v["SecretId"] = json!(format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbC123",
        a.stack.vault.secret_name(agent_id)
    ));
    v["ClientRequestToken"] = json!(token);
    serde_json::from_value(v).unwrap()
}

async fn rotate_step(a: &Aws, agent_id: &str, step: &str, token: &str) -> Result<(), EdgeError> {
    secret_rotation::handle(
        &*a.stack.store,
        &a.stack.vault,
        &*a.idp,
        rotation_event(a, agent_id, step, token),
    )
    .await
}

pub(crate) async fn works(a: &Aws, client_id: &str, c: &Credential) -> bool {
    a.idp.test_secret(client_id, &c.client_secret).await.is_ok()
}

/// The rotation handler walks createSecret → setSecret → testSecret → finishSecret, each step
/// invoked twice; the old secret keeps working until the next rotation removes it.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_walks_four_steps_and_is_safe_to_reinvoke() {
    let a = aws(5).await;
    let agent = onboard(&a).await;
    let (agent_id, client_id) = (
        agent["id"].as_str().unwrap().to_string(),
        agent["client_id"].as_str().unwrap().to_string(),
    );
    let vault = &a.stack.vault;
    let id = agent_id.as_str();
    let current = |stage| async move {
        vault
            .get(id, stage)
            .await
            .unwrap()
            .map(|(v, s)| (v, Credential::from_secret(&s).unwrap()))
    };
    let (v0, old) = current(Stage::Current).await.unwrap();
    let token = "2b5c8e1f-7a3d-4c6b-9e2f-1a4d7c0b3e6f";

    // finishSecret before createSecret refuses, and changes nothing.
    let early = rotate_step(&a, id, "finishSecret", token).await;
    assert!(
        matches!(early, Err(EdgeError::NonRetryable(_))),
        "{early:?}"
    );

    let agent_id = id;
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        for attempt in 0..2 {
            rotate_step(&a, agent_id, step, token)
                .await
                .unwrap_or_else(|e| panic!("{step} (attempt {attempt}): {e}"));
        }
        if step == "createSecret" {
            let (v, new) = current(Stage::Pending).await.unwrap();
            assert_eq!(v, token);
            assert_eq!(a.idp.secret_ids(&client_id).await.unwrap().len(), 2);
            assert!(works(&a, &client_id, &new).await);
            assert_eq!(
                current(Stage::Current).await.unwrap().0,
                v0,
                "not yet current"
            );
        }
    }
    let (v1, new) = current(Stage::Current).await.unwrap();
    assert_eq!(v1, token);
    assert_eq!(current(Stage::Previous).await.unwrap().0, v0);
    assert!(current(Stage::Pending).await.is_none());
    assert!(works(&a, &client_id, &new).await);
    assert!(
        works(&a, &client_id, &old).await,
        "the previous secret has a grace period"
    );
    // Every step re-invoked after the rotation finished is still a no-op.
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        rotate_step(&a, agent_id, step, token).await.unwrap();
    }
    assert_eq!(a.idp.secret_ids(&client_id).await.unwrap().len(), 2);

    // The next rotation retires the previous secret at the IdP.
    let token2 = "8d1e4b7a-0c3f-4e6d-a9b2-5f8c1d4e7a0b";
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        rotate_step(&a, agent_id, step, token2).await.unwrap();
    }
    assert!(
        !works(&a, &client_id, &old).await,
        "the secret two rotations back is gone"
    );
    assert!(works(&a, &client_id, &new).await);
    let audit = audit_lines(&a).await;
    let rotated: Vec<&Value> = audit
        .iter()
        .filter(|l| l["unmapped"]["steward_event"] == "secret_rotated")
        .collect();
    assert_eq!(rotated.len(), 2, "one record per finished rotation");
    let line = serde_json::to_string(&audit).unwrap();
    assert!(
        !line.contains(new.client_secret.expose()),
        "no secret in the audit trail"
    );

    // A secret that is not one of ours is refused.
    let mut foreign = rotation_event(&a, agent_id, "createSecret", token);
    foreign.secret_id =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:other/db-AbC123".into();
    let r = secret_rotation::handle(&*a.stack.store, &a.stack.vault, &*a.idp, foreign).await;
    assert!(matches!(r, Err(EdgeError::NonRetryable(_))), "{r:?}");
}

/// The scheduler's tick hands each timer partition to the workers (once a minute, however
/// often it runs); an unknown job is refused. (`scale.rs` fires them.)
#[tokio::test(flavor = "multi_thread")]
async fn scheduler_ticks_due_timers() {
    let a = aws(5).await;
    let event: EventBridgeEvent<scheduler::Job> =
        serde_json::from_str(include_str!("../../fixtures/aws/eventbridge-schedule.json")).unwrap();
    let out = scheduler::handle(&a.edge.engine, &crate::sealer(), event.clone())
        .await
        .unwrap();
    let partitions = shared::aws::dynamodb::TIMER_SHARDS as usize;
    assert_eq!(out["timer_partitions"], partitions);
    assert_eq!(a.stack.queue.depth().await.unwrap(), partitions);
    scheduler::handle(&a.edge.engine, &crate::sealer(), event.clone())
        .await
        .unwrap();
    assert_eq!(
        a.stack.queue.depth().await.unwrap(),
        partitions,
        "the same minute's tick again adds nothing"
    );
    let mut unknown = event;
    unknown.detail.job = "reticulate".into();
    let r = scheduler::handle(&a.edge.engine, &crate::sealer(), unknown).await;
    assert!(matches!(r, Err(EdgeError::NonRetryable(m)) if m.contains("reticulate")));
}

pub(crate) fn hook_event(
    method: &str,
    headers: Value,
    body: Option<&str>,
) -> ApiGatewayV2httpRequest {
    let mut v: Value =
        serde_json::from_str(include_str!("../../fixtures/aws/apigw-http-v2-iam.json")).unwrap();
    v["requestContext"]["http"]["method"] = json!(method);
    v["requestContext"]["authorizer"] = Value::Null;
    v["headers"] = headers;
    if let Some(b) = body {
        v["body"] = json!(b);
    }
    serde_json::from_value(v).unwrap()
}

/// Okta's verification challenge is answered; deliveries need the hook's Authorization value,
/// and each event is recorded once however often Okta delivers it.
#[tokio::test(flavor = "multi_thread")]
async fn idp_hook_verifies_and_takes_each_event_once() {
    let a = aws(5).await;
    let secret = Secret::new(HOOK_SECRET);
    let call = |req| idp_hook::handle(&a.edge.engine, &secret, req);
    let body_of = |r: &aws_lambda_events::apigw::ApiGatewayV2httpResponse| match &r.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => t.clone(),
        _ => String::new(),
    };
    let verify = call(hook_event(
        "GET",
        json!({"x-okta-verification-challenge": "chal-123", "authorization": HOOK_SECRET}),
        None,
    ))
    .await
    .unwrap();
    assert_eq!(verify.status_code, 200);
    assert_eq!(body_of(&verify), r#"{"verification":"chal-123"}"#);

    let delivery = include_str!("../../fixtures/okta/event-hook-delivery-sample.json");
    let unauthorized = call(hook_event(
        "POST",
        json!({"authorization": "Bearer guess"}),
        Some(delivery),
    ))
    .await
    .unwrap();
    assert_eq!(unauthorized.status_code, 401);
    let audit_before = audit_lines(&a).await.len();
    for _ in 0..2 {
        let r = call(hook_event(
            "POST",
            json!({"authorization": HOOK_SECRET, "content-type": "application/json"}),
            Some(delivery),
        ))
        .await
        .unwrap();
        assert_eq!(r.status_code, 200);
    }
    let audit = audit_lines(&a).await;
    let received: Vec<&Value> = audit
        .iter()
        .filter(|l| l["unmapped"]["steward_event"] == "idp_event_received")
        .collect();
    assert_eq!(received.len(), 1, "the redelivery is recognised by uuid");
    assert_eq!(
        received[0]["unmapped"]["event_uid"],
        "f790999f-fe87-467a-9880-6982a583986c"
    );
    assert_eq!(audit.len(), audit_before + 1, "{audit:#?}");
    let malformed = call(hook_event(
        "POST",
        json!({"authorization": HOOK_SECRET}),
        Some("{\"data\": 5}"),
    ))
    .await
    .unwrap();
    assert_eq!(malformed.status_code, 400);
}

/// A retry that is not due yet holds its workflow's later messages in the batch: a decision
/// queued behind it waits, and both apply in order once it is due.
#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_message_holds_back_its_group_in_the_worker() {
    use shared::engine::message::Message;
    use statemachines::Event;
    let a = aws(5).await;
    let (status, started) = call(&a, "POST", "/api/agents", Some(&request())).await;
    assert_eq!(status, 202);
    let wf = started["workflow_id"].as_str().unwrap().to_string();
    drain(&a).await;
    let approval = pending_approval(&a).await;
    let stale_timer = Message::Event {
        workflow_id: wf.clone(),
        event_id: "timer/stale/1".into(),
        event: Event::TimerFired {
            name: "stale".into(),
        },
    };
    a.stack
        .queue
        .send(vec![shared::ports::queue::OutMessage {
            group: wf.clone(),
            dedupe_id: "stale-timer".into(),
            body: serde_json::to_string(&stale_timer).unwrap(),
            delay: Duration::from_secs(3),
        }])
        .await
        .unwrap();
    let (status, _) = call_as(
        &a,
        "sam.security@example.com",
        "POST",
        &format!("/api/approvals/{approval}/approve"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 202);
    let (event, response) = deliver(&a).await.expect("a batch");
    assert_eq!(event.records.len(), 2, "the delayed retry and the decision");
    assert_eq!(
        response.batch_item_failures.len(),
        2,
        "both wait: the decision may not overtake the retry"
    );
    assert_eq!(agent(&a).await["status"], "pending_approval");
    // Both come back when the head is due. Real SQS then delivers them in order (the group is
    // blocked while the head is in flight). moto 5.2.5 does not: it recomputes a group's
    // in-flight set per message (moto/sqs/models.py, receive_message), so a redelivered head is
    // skipped while its follower still counts as in flight. The order is SQS's to keep; what
    // the worker controls, holding the follower back, is checked above.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    drain(&a).await;
    assert_eq!(agent(&a).await["status"], "active");
    let (_, workflow) = call(&a, "GET", &format!("/api/workflows/{wf}"), None).await;
    let history = workflow["history"].as_array().unwrap();
    assert!(
        history.iter().any(|h| h["event_id"] == "timer/stale/1"),
        "the retry was applied once it was due (and refused by the machine)"
    );
}

/// testSecret works from the version's own credential document, as Secrets Manager runs it
/// alone when rotation is first turned on (the agent may still be provisioning); the steps
/// that change credentials still need an active agent in the registry.
#[tokio::test(flavor = "multi_thread")]
async fn test_secret_needs_only_the_credential() {
    use shared::ports::idp::ClientSpec;
    let a = aws(5).await;
    let created = a
        .idp
        .create_client(
            &ClientSpec {
                agent_id: "agt-provisioning".into(),
                name: "new-agent-prod".into(),
                scopes: vec!["datadog:metrics:read".into()],
                token_lifetime_secs: 900,
            },
            "k1",
        )
        .await
        .unwrap();
    let credential = Credential {
        client_id: created.client_id.clone(),
        secret_id: created.secret_id,
        client_secret: created.secret,
    };
    let vault = &a.stack.vault;
    let current = "aaaaaaaa-1111-4111-8111-111111111111";
    let copy = "bbbbbbbb-2222-4222-8222-222222222222";
    vault
        .put(
            "agt-provisioning",
            current,
            &credential.to_secret(),
            Stage::Current,
        )
        .await
        .unwrap();
    vault
        .put(
            "agt-provisioning",
            copy,
            &credential.to_secret(),
            Stage::Pending,
        )
        .await
        .unwrap();
    rotate_step(&a, "agt-provisioning", "testSecret", copy)
        .await
        .unwrap();
    let create = rotate_step(&a, "agt-provisioning", "createSecret", copy).await;
    // The copy is already AWSPENDING under this token, so createSecret has nothing to do;
    // a new rotation needs the registry.
    assert!(create.is_ok(), "{create:?}");
    let fresh = rotate_step(
        &a,
        "agt-provisioning",
        "createSecret",
        "cccccccc-3333-4333-8333-333333333333",
    )
    .await;
    assert!(
        matches!(&fresh, Err(EdgeError::NonRetryable(m)) if m.contains("no agent")),
        "{fresh:?}"
    );
}

/// With Slack configured, the worker posts the approval (owner DM and security channel), the
/// posted messages are recorded with the approval in DynamoDB, a click through
/// `slack-interactions` approves it, and both messages are updated.
#[tokio::test(flavor = "multi_thread")]
async fn onboarding_is_approved_in_slack_on_aws() {
    use crate::fake_slack::{BOT_TOKEN, FakeSlack, buttons};
    use shared::ports::store::StoreRead;
    let slack = FakeSlack::start(&[
        ("alice@example.com", "U0ALICENG"),
        ("sam.security@example.com", SAM_SLACK_ID),
    ]);
    let web =
        Arc::new(shared::slack::SlackWeb::new(&slack.api_url(), &Secret::new(BOT_TOKEN)).unwrap());
    let a = aws_with(
        5,
        Some(SlackLink {
            web: web.clone(),
            security_channel: Some("C0SECURITY".into()),
        }),
    )
    .await;
    let (status, started) = call(&a, "POST", "/api/agents", Some(&request())).await;
    assert_eq!(status, 202, "{started}");
    drain(&a).await;
    let posts = slack.approval_posts();
    assert_eq!(posts.len(), 2, "owner DM and security channel: {posts:#?}");
    let value = buttons(&posts[0].2).unwrap()[0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let approval_id = value.rsplit_once(':').unwrap().0.to_string();
    let record = a.stack.store.approval(&approval_id).await.unwrap().unwrap();
    let mut channels: Vec<&str> = record.messages.iter().map(|m| m.channel.as_str()).collect();
    channels.sort();
    assert_eq!(channels, ["C0SECURITY", "D0ALICENG"], "{record:?}");

    let reply = slack_interactions::handle(
        &a.edge.engine,
        &Secret::new(SIGNING_SECRET),
        Some(&web),
        slack_click(SAM_SLACK_ID, "approve", &value, SIGNING_SECRET),
    )
    .await
    .unwrap();
    assert_eq!(reply.status_code, 200);
    assert!(format!("{:?}", reply.body).contains("Received your Approve"));
    drain(&a).await;
    assert_eq!(agent(&a).await["status"], "active");
    let updates = slack.calls_of("chat.update");
    assert_eq!(updates.len(), 2, "{updates:#?}");
    assert!(updates.iter().all(|u| buttons(&u.body).is_none()));
    slack.assert_well_formed();
}

/// Okta Log Streaming: a System Log event on the partner bus, shaped as EventBridge delivers
/// it, goes through `idp-hook` into the same mapping as hook deliveries (a token grant kept as
/// evidence); a repeat is applied once, and an event from another source is refused and
/// audited.
#[tokio::test(flavor = "multi_thread")]
async fn idp_hook_takes_okta_log_stream_events_from_eventbridge() {
    let a = aws(5).await;
    let secret = Secret::new(HOOK_SECRET);
    let mut grant: Value = serde_json::from_str(include_str!(
        "../../fixtures/okta/events/app.oauth2.as.token.grant.access_token.json"
    ))
    .unwrap();
    grant["published"] = json!(chrono::Utc::now().to_rfc3339());
    let uuid = grant["uuid"].as_str().unwrap().to_string();
    let event = json!({
        "version": "0",
        "id": "5b1b9d1e-8f41-4c4a-9b0e-1f2d3c4b5a69",
        "detail-type": "SystemLog",
        "source": "aws.partner/okta.com/example-org/steward-stream",
        "account": "123456789012",
        "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": grant,
    });
    for _ in 0..2 {
        let out = idp_hook::dispatch(&a.edge.engine, &secret, event.clone())
            .await
            .unwrap();
        assert_eq!(out, Value::Null);
    }
    // A token grant is evidence, kept once, off the audit chain.
    let audit = audit_lines(&a).await;
    assert!(
        !audit
            .iter()
            .any(|l| l["unmapped"]["event_uid"] == uuid.as_str()),
        "{audit:#?}"
    );
    use shared::ports::store::StoreRead;
    let client = grant["actor"]["id"].as_str().unwrap();
    let since = chrono::DateTime::parse_from_rfc3339(grant["published"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        - chrono::Duration::minutes(1);
    let kept = a.stack.store.grants(client, since, 10).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].event_id, uuid);
    assert_eq!(kept[0].source, "okta");

    let mut foreign = event.clone();
    foreign["source"] = json!("aws.partner/example.com/other");
    idp_hook::dispatch(&a.edge.engine, &secret, foreign)
        .await
        .unwrap();
    let audit = audit_lines(&a).await;
    assert!(audit.iter().any(|l| {
        l["status"] == "Failure"
            && l["message"]
                .as_str()
                .unwrap_or_default()
                .contains("is not an Okta log stream")
    }));
}

/// Rotation and decommission through the AWS stack (API → SQS → worker, DynamoDB, Secrets
/// Manager): the new secret is AWSCURRENT and works, the receipt is in the registry; the
/// decommission supersedes the rotation waiting out its grace period, deletes the client and
/// schedules the secret's deletion; the sweep job runs.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_and_decommission_run_on_aws() {
    use shared::ports::vault::{Stage, VaultError};
    let a = aws(5).await;
    let before = onboard(&a).await;
    let agent_id = before["id"].as_str().unwrap().to_string();
    let client_id = before["client_id"].as_str().unwrap().to_string();

    let (status, body) = call_as(
        &a,
        "bob@example.com",
        "POST",
        &format!("/api/agents/{AGENT}/rotate"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 403, "only the owner or security may rotate: {body}");
    let (status, body) = call(
        &a,
        "POST",
        &format!("/api/agents/{AGENT}/rotate"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 403, "nor may automation: {body}");
    let (status, started) = call_as(
        &a,
        "alice@example.com",
        "POST",
        &format!("/api/agents/{AGENT}/rotate"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    drain(&a).await;
    let rotation = started["workflow_id"].as_str().unwrap().to_string();
    let (_, wf) = call(&a, "GET", &format!("/api/workflows/{rotation}"), None).await;
    assert_eq!(wf["workflow"]["state_name"], "Grace", "{wf}");
    let after = agent(&a).await;
    assert_ne!(after["secret_version"], before["secret_version"]);
    assert_eq!(
        after["credentials"][0]["old"]["version"],
        before["secret_version"]
    );
    let (version, value) = a
        .stack
        .vault
        .get(&agent_id, Stage::Current)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after["secret_version"], version.as_str());
    let c = Credential::from_secret(&value).unwrap();
    assert!(works(&a, &client_id, &c).await, "the new secret works");

    let (status, body) = call_as(
        &a,
        "alice@example.com",
        "POST",
        &format!("/api/agents/{AGENT}/decommission"),
        Some(&json!({"reason": "retired"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    drain(&a).await;
    let id = pending_approval(&a).await;
    let (status, body) = call_as(
        &a,
        "sam.security@example.com",
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    drain(&a).await;
    drain(&a).await;
    let (_, wf) = call(&a, "GET", &format!("/api/workflows/{rotation}"), None).await;
    assert_eq!(wf["workflow"]["state_name"], "Cancelled", "{wf}");
    let archived = agent(&a).await;
    assert_eq!(archived["status"], "decommissioned", "{archived}");
    let receipt = &archived["decommission"];
    assert!(receipt["no_token_valid_after"].is_string(), "{receipt}");
    assert!(receipt["secret_deleted_after"].is_string(), "{receipt}");
    assert!(
        !works(&a, &client_id, &c).await,
        "no token after the decommission"
    );
    let err = a
        .stack
        .vault
        .get(&agent_id, Stage::Current)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VaultError::ScheduledForDeletion { .. }),
        "{err:?}"
    );

    let mut event: EventBridgeEvent<scheduler::Job> =
        serde_json::from_str(include_str!("../../fixtures/aws/eventbridge-schedule.json")).unwrap();
    event.detail.job = "sweep".into();
    let out = scheduler::handle(&a.edge.engine, &crate::sealer(), event)
        .await
        .unwrap();
    assert_eq!(out["report"]["due"], 0, "{out}");
    // The sweep keeps the dashboard's posture summary, with the agents by status (the overview's
    // counts on DynamoDB, which has no status index to count on).
    assert!(out["posture_summary_at"].is_string(), "{out}");
    let posture = a
        .edge
        .engine
        .recorded_posture()
        .await
        .unwrap()
        .expect("a posture summary after the sweep");
    assert_eq!(
        posture.statuses.get("decommissioned"),
        Some(&1),
        "{posture:?}"
    );
    assert!(a.edge.engine.store.agent_counts().await.unwrap().is_none());
}

/// A person calls the `api` function with a token from the organisation's issuer (the OIDC test
/// peer): the function verifies it itself, whatever authorizer ran before, and asks the
/// directory; an IAM principal stays automation.
#[tokio::test(flavor = "multi_thread")]
async fn a_person_calls_the_api_function_with_a_token_from_the_issuer() {
    use crate::support::oidc_people;
    let a = aws(3).await;
    let mut settings =
        shared::sign_in::IssuerSettings::new(oidc_people::issuer(), oidc_people::AUDIENCE);
    settings.jwks_min_refresh = Duration::ZERO;
    let people = Arc::new(shared::sign_in::PersonTokens::new(settings).unwrap());
    let router = api::router(&a.stack, None, Some(people), None);
    let password = oidc_people::env("STEWARD_TEST_OIDC_PEOPLE_PASSWORD");
    let token_of = |who: &'static str| {
        let password = password.clone();
        tokio::task::spawn_blocking(move || oidc_people::sign_in(who, &password).unwrap())
    };
    let as_bearer = |token: Option<&str>| {
        let mut e = http_event("GET", "/api/whoami", None);
        e["requestContext"]["authorizer"] = Value::Null;
        if let Some(t) = token {
            e["headers"]["authorization"] = json!(format!("Bearer {t}"));
        }
        e
    };

    let alice = token_of("alice@example.com").await.unwrap();
    let (status, me) = invoke(&router, as_bearer(Some(&alice))).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["kind"], "person");
    assert_eq!(me["id"], "alice@example.com");

    let mallory = token_of("mallory@example.com").await.unwrap();
    let (status, v) = invoke(&router, as_bearer(Some(&mallory))).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not in the directory"),
        "{v}"
    );

    let (status, v) = invoke(&router, as_bearer(None)).await;
    assert_eq!(status, 403, "{v}");

    let (status, me) = invoke(&router, http_event("GET", "/api/whoami", None)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["kind"], "automation");
    assert_eq!(me["id"], "arn:aws:iam::123456789012:user/platform-admin");
}

/// With `STEWARD_VAULT=dynamodb-kms`, an onboarded agent's credential is sealed in the table
/// under a KMS data key: the engine reads it back, Secrets Manager holds nothing, and the item
/// holds no secret in the clear.
#[tokio::test(flavor = "multi_thread")]
async fn agents_secrets_can_live_in_the_kms_envelope_vault() {
    use shared::ports::vault::Stage;
    let sdk = moto::sdk().await;
    let key = aws_sdk_kms::Client::new(&sdk)
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_string();
    let a = aws_with_vault(5, None, PEOPLE, Some(key)).await;
    let agent = onboard(&a).await;
    let agent_id = agent["id"].as_str().unwrap();
    let (version, value) = a
        .stack
        .agent_vault
        .get(agent_id, Stage::Current)
        .await
        .unwrap()
        .expect("the credential is in the envelope vault");
    assert_eq!(agent["secret_version"], version.as_str());
    let credential = Credential::from_secret(&value).unwrap();
    assert!(
        works(&a, agent["client_id"].as_str().unwrap(), &credential).await,
        "the sealed secret is the client's"
    );
    assert_eq!(
        a.stack.vault.get(agent_id, Stage::Current).await.unwrap(),
        None,
        "Secrets Manager holds nothing"
    );
}

/// Slack says "too many requests, retry after 1 s" to the first approval post: the worker puts
/// the command back as a new message (a new deduplication id, `run:<key>#<attempt>.<waits>`),
/// which SQS FIFO would otherwise drop as a copy for 5 minutes; after the wait the post is
/// delivered, once, and the onboarding goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_slack_post_is_delivered_after_the_wait() {
    use crate::fake_slack::{BOT_TOKEN, FakeSlack};
    let slack = FakeSlack::start(&[
        ("alice@example.com", "U0ALICENG"),
        ("sam.security@example.com", SAM_SLACK_ID),
    ]);
    let web =
        Arc::new(shared::slack::SlackWeb::new(&slack.api_url(), &Secret::new(BOT_TOKEN)).unwrap());
    let a = aws_with(
        5,
        Some(SlackLink {
            web,
            security_channel: Some("C0SECURITY".into()),
        }),
    )
    .await;
    slack.throttle_next_posts(1);
    let (status, started) = call(&a, "POST", "/api/agents", Some(&request())).await;
    assert_eq!(status, 202, "{started}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while slack.approval_posts().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the throttled post was never delivered: {:#?}",
            slack.calls()
        );
        drain(&a).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drain(&a).await;
    assert_eq!(slack.calls_of("chat.postMessage/429").len(), 1);
    let posts = slack.approval_posts();
    assert_eq!(posts.len(), 2, "each post once: {posts:#?}");
    assert_eq!(agent(&a).await["status"], "pending_approval");
    // Nothing ended in the dead-letter queue.
    assert!(a.stack.queue.dead_letters(10).await.unwrap().is_empty());
}

/// The `api` function serves the dashboard too: pages behind a session kept in the table
/// (DynamoDB), the same headers and refusals as locally.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_function_serves_the_dashboard_with_sessions_in_the_table() {
    use api::lambda_http::{Adapter, Context, LambdaEvent, Service, request::LambdaRequest};
    use shared::ports::Sessions;
    let a = aws(3).await;
    let people = Arc::new(shared::sign_in::PersonTokens::new(a.idp.people_issuer()).unwrap());
    let settings = api::DashboardSettings {
        url: "https://steward.example.com".into(),
        client_id: "0oa-dashboard".into(),
    };
    let dashboard = settings.dashboard(&a.edge, Some(&people)).unwrap();
    let router = api::router(&a.edge, None, Some(people), Some(dashboard));
    let page = |method: &str, path: &str, cookie: Option<&str>, form: Option<&str>| {
        let mut e = http_event(method, path, None);
        e["requestContext"]["authorizer"] = Value::Null;
        if let Some(c) = cookie {
            e["cookies"] = json!([c]);
        }
        if let Some(f) = form {
            e["body"] = json!(f);
            e["headers"]["content-type"] = json!("application/x-www-form-urlencoded");
        }
        let router = router.clone();
        async move {
            let request: LambdaRequest = serde_json::from_value(e).unwrap();
            let r = Adapter::from(router)
                .call(LambdaEvent::new(request, Context::default()))
                .await
                .unwrap();
            serde_json::to_value(&r).unwrap()
        }
    };

    // No session: to the sign-in, with the page's headers.
    let r = page("GET", "/agents", None, None).await;
    assert_eq!(r["statusCode"], 303, "{r}");
    assert_eq!(r["headers"]["location"], "/sign-in?return_to=%2Fagents");
    assert_eq!(r["headers"]["x-frame-options"], "DENY");

    // A session in the table (as the sign-in opens it): the page renders.
    let id = "lambda-session-0123456789abcdefghijklmnopqrstuvwxyz";
    let now = chrono::Utc::now();
    a.edge
        .store
        .put_session(&shared::ports::sessions::Session {
            digest: shared::dashboard::session::digest(id),
            person: "sam.security@example.com".into(),
            csrf: "the-csrf-token".into(),
            created_at: now,
            seen_at: now,
            expires_at: now + chrono::Duration::hours(12),
        })
        .await
        .unwrap();
    let cookie = format!("__Host-steward_session={id}");
    let r = page("GET", "/agents", Some(&cookie), None).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    let csp = r["headers"]["content-security-policy"].as_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = r["body"].as_str().unwrap();
    assert!(html.contains("sam.security@example.com"), "{html}");

    // A form with another token is refused (and changes nothing).
    let r = page("POST", "/act/api/sweep", Some(&cookie), Some("csrf=forged")).await;
    assert_eq!(r["statusCode"], 403, "{r}");
    // Signed out: the session is gone from the table.
    let r = page(
        "POST",
        "/sign-out",
        Some(&cookie),
        Some("csrf=the-csrf-token"),
    )
    .await;
    assert_eq!(r["statusCode"], 303, "{r}");
    assert!(
        a.edge
            .store
            .session(&shared::dashboard::session::digest(id))
            .await
            .unwrap()
            .is_none()
    );
}
