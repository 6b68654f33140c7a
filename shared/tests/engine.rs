//! The durable engine on the embedded stack: idempotent steps, deterministic command keys,
//! poison messages, retries with backoff, failures, timers.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::embedded::Durability;
use shared::embedded::console::Console;
use shared::embedded::vault::FileVault;
use shared::engine::message::Message;
use shared::idp::dev::DevIdp;
use shared::ports::idp::{
    ClientInfo, ClientSpec, CreatedClient, IdpError, NewSecret, TokenRevocation,
};
use shared::ports::queue::OutMessage;
use shared::ports::vault::Stage;
use shared::ports::{Clock, IdentityProvider, Vault};
use shared::wiring::embedded::{Embedded, EmbeddedConfig};
use shared::{Engine, EngineConfig, EngineError, Secret};
use statemachines::{AgentRequest, AgentStatus, Decision, Event};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POLICY: &str = include_str!("../../policy.example.toml");
const PEOPLE: &str = r#"
[[person]]
email = "alice@example.com"
name = "Alice Ng"

[[person]]
email = "bob@example.com"
name = "Bob Okafor"

[[person]]
email = "sam.security@example.com"
name = "Sam Patel"

[[person]]
email = "priya.secops@example.com"
name = "Priya Shah"
active = false
"#;
const REQUESTER: &str = "bob@example.com";
const OWNER: &str = "alice@example.com";
const APPROVER: &str = "sam.security@example.com";

fn config() -> EngineConfig {
    EngineConfig {
        max_attempts: 4,
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        applied_window: 64,
        visibility: Duration::from_secs(10),
        crash_after: None,
        ..EngineConfig::default()
    }
}

struct Stack {
    engine: Engine,
    idp: Arc<DevIdp>,
    vault: Arc<FileVault>,
    console: Arc<Console>,
    _dir: tempfile::TempDir,
}

fn stack() -> Stack {
    build(config(), |_| None, None)
}

/// The embedded stack; `idp` may wrap the dev IdP, `clock` replace the system clock.
fn build(
    config: EngineConfig,
    idp: impl FnOnce(Arc<DevIdp>) -> Option<Arc<dyn IdentityProvider>>,
    clock: Option<Arc<dyn Clock>>,
) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people.toml");
    std::fs::write(&people, PEOPLE).unwrap();
    let s = Embedded::open(EmbeddedConfig {
        data_dir: dir.path().join("data"),
        policy: shared::policy_file::parse(POLICY, "policy.example.toml").unwrap(),
        people,
        issuer: "http://127.0.0.1:1".into(),
        durability: Durability::Wal,
        engine: config,
        slack: None,
        okta: None,
        okta_hook_secret: None,
        oauth: None,
        ssf: None,
        okta_directory: false,
        people_issuer: None,
    })
    .unwrap();
    let Embedded {
        engine,
        idp: dev,
        vault,
        console,
        ..
    } = s;
    let mut engine = Arc::try_unwrap(engine)
        .ok()
        .expect("the stack is the engine's only owner");
    if let Some(wrapped) = idp(dev.clone()) {
        engine.executor.idp = wrapped;
    }
    if let Some(clock) = clock {
        engine.clock = clock;
    }
    Stack {
        engine,
        idp: dev,
        vault,
        console,
        _dir: dir,
    }
}

fn request(name: &str, scopes: &[&str]) -> AgentRequest {
    AgentRequest {
        credential: Default::default(),
        public_key: None,
        key_custody: Default::default(),
        csr: None,
        name: name.into(),
        owner: OWNER.into(),
        team: "sre".into(),
        environment: "prod".into(),
        purpose: "engine tests".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        token_lifetime_secs: Some(600),
        expires_on: None,
    }
}

/// Needs no approval: goes straight to Provisioning.
fn plain() -> AgentRequest {
    request("orders-agent-prod", &["erp:orders:read"])
}

/// Has a sensitive scope: waits for an approval.
fn sensitive() -> AgentRequest {
    request("payments-agent-prod", &["banking:payments:write"])
}

/// Works the queue until nothing is waiting any more (delayed retries included).
async fn settle(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        engine.run_until_idle().await.unwrap();
        if engine.queue.depth().await.unwrap() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

async fn state(engine: &Engine, wf: &str) -> (String, u64, usize) {
    let i = engine.store.instance(wf).await.unwrap().unwrap();
    let h = engine.store.history(wf).await.unwrap();
    (i.state_name, i.version, h.len())
}

fn body(m: &Message) -> String {
    serde_json::to_string(m).unwrap()
}

fn approve(wf: &str) -> Message {
    Message::Event {
        workflow_id: wf.into(),
        event_id: format!("decision/{wf}-approval-1/{APPROVER}/approve"),
        event: Event::ApprovalDecided {
            approval_id: format!("{wf}-approval-1"),
            decision: Decision::Approve,
            approver: APPROVER.into(),
            reason: None,
        },
    }
}

async fn audit_events(engine: &Engine) -> Vec<Value> {
    engine
        .store
        .audit(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.record.body)
        .collect()
}

fn steward_event(v: &Value) -> &str {
    v["unmapped"]["steward_event"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn onboarding_without_approval_reaches_active() {
    let st = stack();
    let e = &st.engine;
    let started = e.request_agent(plain(), REQUESTER).await.unwrap();
    assert_eq!(started.state, "Provisioning");
    assert!(!started.duplicate);
    settle(e).await;

    let i = e
        .store
        .instance(&started.workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(i.state_name, "Active");
    assert!(i.terminal);
    assert!(i.pending.is_empty(), "every command ran: {:?}", i.pending);
    let agent = e.store.agent(&started.agent_id).await.unwrap().unwrap();
    assert_eq!(agent.status, AgentStatus::Active);
    let client_id = agent.client_id.clone().unwrap();
    let (version, stored) = st
        .vault
        .get(&agent.id, Stage::Current)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(version), agent.secret_version);
    let credential = shared::credential::Credential::from_secret(&stored).unwrap();
    assert_eq!(
        credential.client_id, client_id,
        "the vault names the client"
    );
    let secret = credential.client_secret;
    let token = st
        .idp
        .issue_token(&client_id, secret.expose(), None, Utc::now())
        .unwrap();
    assert_eq!(token.scope, "erp:orders:read");
    assert!(
        st.console
            .notices()
            .unwrap()
            .iter()
            .any(|n| n.recipient == OWNER && n.subject.contains("is active"))
    );

    // The same request again starts nothing.
    let again = e.request_agent(plain(), REQUESTER).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.workflow_id, started.workflow_id);
    assert_eq!(again.state, "Active");
    // Another request for the same name is refused while the agent is active.
    let mut other = plain();
    other.purpose = "something else".into();
    assert!(matches!(
        e.request_agent(other, REQUESTER).await,
        Err(EngineError::Conflict(_))
    ));
}

/// Pending commands carry `<workflow>/<seq>/<index>`: the step that emitted them and their place
/// in its command list. The same request on another stack yields the same keys.
#[tokio::test]
async fn pending_commands_have_deterministic_keys() {
    let st = stack();
    let e = &st.engine;
    let wf = e
        .request_agent(sensitive(), REQUESTER)
        .await
        .unwrap()
        .workflow_id;
    let i = e.store.instance(&wf).await.unwrap().unwrap();
    assert_eq!(i.state_name, "AwaitingApproval");
    let keys: Vec<&str> = i.pending.iter().map(|p| p.key.as_str()).collect();
    // 0 requested audit, 1 save agent, 2 reminder timer, 3 expiry timer, 4 ask, 5 audit
    assert_eq!(keys, vec![format!("{wf}/1/4")]);

    // Apply the approval without running anything else: seq 2 adds its external commands.
    e.handle(&body(&approve(&wf))).await.unwrap();
    let i = e.store.instance(&wf).await.unwrap().unwrap();
    let history = e.store.history(&wf).await.unwrap();
    let keys: Vec<String> = i.pending.iter().map(|p| p.key.clone()).collect();
    assert_eq!(
        keys,
        vec![
            format!("{wf}/1/4"),
            // 0-1 cancel the expiry and reminder timers, 2 close, 3 audit, 4 save, 5 create
            format!("{wf}/2/2"),
            format!("{wf}/2/5")
        ]
    );
    for p in &i.pending {
        let parts: Vec<&str> = p.key.rsplitn(3, '/').collect();
        let (idx, seq, prefix) = (parts[0], parts[1], parts[2]);
        assert_eq!(prefix, wf);
        let seq: usize = seq.parse().unwrap();
        let idx: usize = idx.parse().unwrap();
        assert_eq!(
            history[seq - 1].commands[idx],
            p.command.name(),
            "{} names the command at that index of step {seq}",
            p.key
        );
        assert!(p.command.is_external());
    }

    let other = stack();
    let wf2 = other
        .engine
        .request_agent(sensitive(), REQUESTER)
        .await
        .unwrap()
        .workflow_id;
    assert_eq!(wf2, wf, "the workflow id is derived from the request");
    other.engine.handle(&body(&approve(&wf))).await.unwrap();
    let i2 = other.engine.store.instance(&wf).await.unwrap().unwrap();
    let shape = |i: &shared::ports::store::Instance| {
        i.pending
            .iter()
            .map(|p| (p.key.clone(), p.command.name()))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&i2), shape(&i));
}

/// At-least-once delivery: the same event message twice is one step.
#[tokio::test]
async fn an_event_applied_twice_changes_nothing() {
    let st = stack();
    let e = &st.engine;
    let wf = e
        .request_agent(sensitive(), REQUESTER)
        .await
        .unwrap()
        .workflow_id;
    settle(e).await;
    let msg = body(&approve(&wf));
    e.handle(&msg).await.unwrap();
    let once = state(e, &wf).await;
    assert_eq!(once.0, "Provisioning");
    let audit_once = audit_events(e).await.len();
    e.handle(&msg).await.unwrap();
    assert_eq!(
        state(e, &wf).await,
        once,
        "the redelivery is not a new step"
    );
    assert_eq!(audit_events(e).await.len(), audit_once);

    settle(e).await;
    let done = state(e, &wf).await;
    assert_eq!(done.0, "Active");
    e.handle(&msg).await.unwrap();
    assert_eq!(state(e, &wf).await, done);
    assert_eq!(st.idp.list_clients().await.unwrap().len(), 1);
}

/// The person-facing path: decide checks who decides, and a decision is made once.
#[tokio::test]
async fn decide_checks_the_approver_and_decides_once() {
    let st = stack();
    let e = &st.engine;
    let started = e.request_agent(sensitive(), REQUESTER).await.unwrap();
    let wf = started.workflow_id;
    assert_eq!(started.state, "AwaitingApproval");
    settle(e).await;
    let approval_id = format!("{wf}-approval-1");
    assert_eq!(e.store.approvals(true).await.unwrap().len(), 1);
    assert!(
        st.console
            .notices()
            .unwrap()
            .iter()
            .any(|n| n.kind == "approval_request" && n.subject.contains(&approval_id))
    );
    for who in [REQUESTER, "mallory@example.com"] {
        assert!(matches!(
            e.decide(&approval_id, who, Decision::Approve, None, None)
                .await,
            Err(EngineError::Rejected(_))
        ));
    }
    // Priya is an approver in the policy but has left (inactive in the directory).
    match e
        .decide(
            &approval_id,
            "priya.secops@example.com",
            Decision::Approve,
            None,
            None,
        )
        .await
    {
        Err(EngineError::Rejected(r)) => {
            assert!(r.to_string().contains("no longer active"), "{r}")
        }
        other => panic!("a departed approver must be refused, got {other:?}"),
    }
    assert_eq!(
        e.store.approvals(true).await.unwrap().len(),
        1,
        "still pending"
    );
    assert!(matches!(
        e.decide("no-such-approval", APPROVER, Decision::Approve, None, None)
            .await,
        Err(EngineError::NotFound(_))
    ));
    e.decide(
        &approval_id,
        APPROVER,
        Decision::Approve,
        Some("ok".into()),
        None,
    )
    .await
    .unwrap();
    settle(e).await;
    assert_eq!(state(e, &wf).await.0, "Active");
    let rec = e.store.approval(&approval_id).await.unwrap().unwrap();
    assert_eq!(rec.status(), "approved");
    assert!(matches!(
        e.decide(&approval_id, APPROVER, Decision::Deny, None, None)
            .await,
        Err(EngineError::Rejected(_))
    ));
    assert!(e.store.approvals(true).await.unwrap().is_empty());
}

/// A `Completed` (or `Run`) for a command that already completed is a no-op.
#[tokio::test]
async fn completed_for_a_completed_key_is_a_noop() {
    let st = stack();
    let e = &st.engine;
    let wf = e
        .request_agent(plain(), REQUESTER)
        .await
        .unwrap()
        .workflow_id;
    let key = e.store.instance(&wf).await.unwrap().unwrap().pending[0]
        .key
        .clone();
    assert_eq!(key, format!("{wf}/1/2"));
    settle(e).await;
    let done = state(e, &wf).await;
    assert_eq!(done.0, "Active");
    let agent_before = e.store.agents().await.unwrap();

    let completed = Message::Completed {
        workflow_id: wf.clone(),
        key: key.clone(),
        event: Some(Event::ClientCreated {
            client_id: "dev_other".into(),
            secret_version: "sec_other".into(),
        }),
    };
    e.handle(&body(&completed)).await.unwrap();
    let run = Message::Run {
        workflow_id: wf.clone(),
        key,
        attempt: 0,
        waits: 0,
    };
    e.handle(&body(&run)).await.unwrap();
    settle(e).await;
    assert_eq!(state(e, &wf).await, done);
    assert_eq!(e.store.agents().await.unwrap(), agent_before);
    assert_eq!(st.idp.list_clients().await.unwrap().len(), 1);
}

#[tokio::test]
async fn messages_for_unknown_workflows_are_not_retryable() {
    let st = stack();
    let e = &st.engine;
    let wf = "onboarding-nobody-00000000";
    let messages = [
        approve(wf),
        Message::Completed {
            workflow_id: wf.into(),
            key: format!("{wf}/1/2"),
            event: None,
        },
        Message::Run {
            workflow_id: wf.into(),
            key: format!("{wf}/1/2"),
            attempt: 0,
            waits: 0,
        },
    ];
    for m in &messages {
        let err = e.handle(&body(m)).await.unwrap_err();
        assert!(!err.retryable, "{m:?}");
        assert!(err.message.contains(wf), "{}", err.message);
    }
}

/// In one batch, once a workflow's message fails, its later messages wait (so events apply in
/// order, as a FIFO group requires); other workflows' messages go ahead.
#[tokio::test]
async fn a_failed_message_holds_back_its_workflow_in_the_batch() {
    let st = stack();
    let e = &st.engine;
    let started = e
        .request_agent(sensitive(), "bob@example.com")
        .await
        .unwrap();
    settle(e).await;
    let missing = "onboarding-nobody-00000000";
    let bodies = [
        body(&approve(missing)),
        body(&Message::Run {
            workflow_id: missing.into(),
            key: format!("{missing}/1/0"),
            attempt: 0,
            waits: 0,
        }),
        body(&approve(&started.workflow_id)),
    ];
    let refs: Vec<(&str, Option<&str>)> = bodies.iter().map(|b| (b.as_str(), None)).collect();
    let results = e.process(&refs).await;
    let first = results[0].as_ref().unwrap_err();
    assert!(!first.retryable && first.message.contains("unknown workflow"));
    let held = results[1].as_ref().unwrap_err();
    assert!(held.retryable, "{held:?}");
    assert!(held.message.contains("held back"), "{}", held.message);
    assert!(
        results[2].is_ok(),
        "another workflow goes ahead: {:?}",
        results[2]
    );
}

/// A message that cannot be parsed is poison: not retryable, and after the queue's max
/// receives it sits in the dead-letter queue with an audit record saying so.
#[tokio::test]
async fn a_malformed_message_ends_in_the_dead_letter_queue() {
    let st = stack();
    let e = &st.engine;
    let junk = "{\"msg\": \"nonsense\"";
    let err = e.handle(junk).await.unwrap_err();
    assert!(!err.retryable);
    assert!(err.message.contains("malformed"), "{}", err.message);

    e.queue
        .send(vec![OutMessage {
            group: "junk".into(),
            dedupe_id: "junk-1".into(),
            body: junk.into(),
            delay: Duration::ZERO,
        }])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.queue.dead_letters(10).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "never dead-lettered");
        e.work_once(10).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = e.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, junk);
    assert_eq!(dead[0].group, "junk");
    assert_eq!(dead[0].receive_count, e.queue.max_receives());
    assert_eq!(e.queue.depth().await.unwrap(), 0);

    let records: Vec<Value> = audit_events(e)
        .await
        .into_iter()
        .filter(|v| steward_event(v) == "dead_letter")
        .collect();
    assert_eq!(records.len(), 1, "one record when the message goes dead");
    let r = &records[0];
    assert_eq!(r["unmapped"]["message"], junk);
    assert!(
        r["unmapped"]["error"]
            .as_str()
            .unwrap()
            .contains("malformed")
    );
    assert_eq!(r["status"], "Failure");
}

/// An identity provider that fails `create_client` the first `failures` times (after taking
/// and never answering the first `hangs` calls).
struct FlakyIdp {
    inner: Arc<DevIdp>,
    hangs: AtomicU32,
    failures: AtomicU32,
    error: fn(String) -> IdpError,
    calls: AtomicU32,
    created: AtomicU32,
}

impl FlakyIdp {
    fn new(inner: Arc<DevIdp>, failures: u32, error: fn(String) -> IdpError) -> Arc<Self> {
        Arc::new(Self {
            inner,
            hangs: AtomicU32::new(0),
            failures: AtomicU32::new(failures),
            error,
            calls: AtomicU32::new(0),
            created: AtomicU32::new(0),
        })
    }
}

#[async_trait]
impl IdentityProvider for FlakyIdp {
    async fn create_client(
        &self,
        spec: &ClientSpec,
        idempotency_key: &str,
    ) -> Result<CreatedClient, IdpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .hangs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            std::future::pending::<()>().await;
        }
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err((self.error)("injected failure".into()));
        }
        let created = self.inner.create_client(spec, idempotency_key).await?;
        self.created.fetch_add(1, Ordering::SeqCst);
        Ok(created)
    }
    async fn set_grants(
        &self,
        client_id: &str,
        scopes: &[String],
        token_lifetime_secs: u32,
    ) -> Result<(), IdpError> {
        self.inner
            .set_grants(client_id, scopes, token_lifetime_secs)
            .await
    }
    async fn set_active(&self, client_id: &str, active: bool) -> Result<(), IdpError> {
        self.inner.set_active(client_id, active).await
    }
    async fn client(&self, client_id: &str) -> Result<Option<ClientInfo>, IdpError> {
        self.inner.client(client_id).await
    }
    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        self.inner.list_clients().await
    }
    async fn add_secret(&self, client_id: &str, key: &str) -> Result<NewSecret, IdpError> {
        self.inner.add_secret(client_id, key).await
    }
    async fn remove_secret(&self, client_id: &str, secret_id: &str) -> Result<(), IdpError> {
        self.inner.remove_secret(client_id, secret_id).await
    }
    async fn secret_ids(&self, client_id: &str) -> Result<Vec<String>, IdpError> {
        self.inner.secret_ids(client_id).await
    }
    async fn test_secret(&self, client_id: &str, secret: &Secret) -> Result<(), IdpError> {
        self.inner.test_secret(client_id, secret).await
    }
    async fn revoke_tokens(&self, client_id: &str) -> Result<TokenRevocation, IdpError> {
        self.inner.revoke_tokens(client_id).await
    }
    async fn delete_client(&self, client_id: &str) -> Result<(), IdpError> {
        self.inner.delete_client(client_id).await
    }
}

fn flaky_stack(
    config: EngineConfig,
    failures: u32,
    error: fn(String) -> IdpError,
) -> (Stack, Arc<FlakyIdp>) {
    let mut flaky = None;
    let st = build(
        config,
        |dev| {
            let f = FlakyIdp::new(dev, failures, error);
            flaky = Some(f.clone());
            Some(f as Arc<dyn IdentityProvider>)
        },
        None,
    );
    (st, flaky.unwrap())
}

/// An IdP that takes the call and never answers costs the command one attempt (the engine's
/// command deadline), not the worker: the command is tried again and the agent is provisioned.
#[tokio::test]
async fn a_hung_idp_call_costs_one_attempt() {
    let (st, idp) = flaky_stack(
        EngineConfig {
            command_deadline: Duration::from_millis(200),
            ..config()
        },
        0,
        IdpError::Unavailable,
    );
    idp.hangs.store(1, Ordering::SeqCst);
    let e = &st.engine;
    let started = e.request_agent(plain(), REQUESTER).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), settle(e))
        .await
        .expect("the worker is not held by the hung call");
    assert_eq!(state(e, &started.workflow_id).await.0, "Active");
    assert_eq!(
        idp.calls.load(Ordering::SeqCst),
        2,
        "one hung, one answered"
    );
    assert_eq!(idp.created.load(Ordering::SeqCst), 1);
    assert!(e.queue.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn transient_idp_failures_are_retried_until_active() {
    let (st, idp) = flaky_stack(config(), 2, IdpError::Unavailable);
    let e = &st.engine;
    let started = e.request_agent(plain(), REQUESTER).await.unwrap();
    settle(e).await;
    assert_eq!(state(e, &started.workflow_id).await.0, "Active");
    assert_eq!(
        idp.calls.load(Ordering::SeqCst),
        3,
        "two failures, one success"
    );
    assert_eq!(idp.created.load(Ordering::SeqCst), 1);
    assert_eq!(st.idp.list_clients().await.unwrap().len(), 1);
    let agent = e.store.agent(&started.agent_id).await.unwrap().unwrap();
    assert_eq!(agent.status, AgentStatus::Active);
    let history = e.store.history(&started.workflow_id).await.unwrap();
    assert!(history.iter().all(|h| h.rejected.is_none()));
    assert!(
        !history
            .iter()
            .any(|h| h.event.to_string().contains("command_failed"))
    );
}

async fn assert_failed(st: &Stack, e: &Engine, started: &shared::engine::Started, why: &str) {
    let i = e
        .store
        .instance(&started.workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(i.state_name, "Failed");
    assert!(i.terminal);
    assert!(i.pending.is_empty());
    let agent = e.store.agent(&started.agent_id).await.unwrap().unwrap();
    assert_eq!(agent.status, AgentStatus::Failed);
    assert_eq!(agent.client_id, None);
    assert!(st.idp.list_clients().await.unwrap().is_empty());
    let notices = st.console.notices().unwrap();
    let n = notices
        .iter()
        .find(|n| n.recipient == OWNER && n.subject.contains("could not be provisioned"))
        .expect("the owner is told");
    assert!(n.body.contains(why), "{}", n.body);
    assert!(
        audit_events(e)
            .await
            .iter()
            .any(|v| steward_event(v) == "provisioning_failed" && v["status"] == "Failure")
    );
    // A failed agent's name is free again.
    assert!(
        e.request_agent(
            AgentRequest {
                purpose: "second try".into(),
                ..plain()
            },
            REQUESTER
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn failures_beyond_max_attempts_fail_the_workflow() {
    let cfg = EngineConfig {
        max_attempts: 3,
        ..config()
    };
    let (st, idp) = flaky_stack(cfg, 1000, IdpError::Unavailable);
    let e = &st.engine;
    let started = e.request_agent(plain(), REQUESTER).await.unwrap();
    settle(e).await;
    assert_eq!(idp.calls.load(Ordering::SeqCst), 3, "max_attempts attempts");
    assert_eq!(idp.created.load(Ordering::SeqCst), 0);
    assert_failed(&st, e, &started, "unavailable").await;
}

#[tokio::test]
async fn a_refusal_fails_at_once() {
    let (st, idp) = flaky_stack(config(), 1000, IdpError::Refused);
    let e = &st.engine;
    let started = e.request_agent(plain(), REQUESTER).await.unwrap();
    settle(e).await;
    assert_eq!(idp.calls.load(Ordering::SeqCst), 1, "no retry of a refusal");
    assert_failed(&st, e, &started, "refused").await;
}

#[tokio::test]
async fn backoff_grows_exponentially_and_is_capped() {
    let st = build(
        EngineConfig {
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            ..config()
        },
        |_| None,
        None,
    );
    let e = &st.engine;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for _ in 0..50 {
        for (attempt, base) in [(0u32, 10.0), (1, 20.0), (2, 40.0)] {
            let b = ms(e.backoff(attempt));
            assert!(
                (base..=base * 1.25).contains(&b),
                "attempt {attempt}: {b}ms not in [{base}, {}]",
                base * 1.25
            );
        }
        for attempt in [3u32, 4, 5, 10, 16, 17, 64, u32::MAX] {
            let b = e.backoff(attempt);
            assert!(
                b <= Duration::from_millis(100),
                "attempt {attempt}: {b:?} exceeds max_backoff"
            );
            assert!(b >= Duration::from_millis(80), "attempt {attempt}: {b:?}");
        }
    }
}

/// A clock the test moves.
struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// An unanswered approval expires when the tick finds its timer due; ticking again is harmless.
#[tokio::test]
async fn tick_fires_due_timers_once() {
    let clock = Arc::new(TestClock(Mutex::new(Utc::now())));
    let st = build(config(), |_| None, Some(clock.clone()));
    let e = &st.engine;
    let started = e.request_agent(sensitive(), REQUESTER).await.unwrap();
    settle(e).await;
    assert_eq!(e.tick().await.unwrap(), 0, "nothing is due yet");
    *clock.0.lock().unwrap() += chrono::Duration::hours(73);
    assert_eq!(e.tick().await.unwrap(), 2, "the reminder and the expiry");
    assert_eq!(e.tick().await.unwrap(), 0, "a fired timer is gone");
    settle(e).await;
    let wf = &started.workflow_id;
    assert_eq!(state(e, wf).await.0, "Expired");
    let approval_id = format!("{wf}-approval-1");
    assert_eq!(
        e.store
            .approval(&approval_id)
            .await
            .unwrap()
            .unwrap()
            .status(),
        "expired"
    );
    assert_eq!(
        e.store
            .agent(&started.agent_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        AgentStatus::Expired
    );
    assert!(st.idp.list_clients().await.unwrap().is_empty());
    assert!(matches!(
        e.decide(&approval_id, APPROVER, Decision::Approve, None, None)
            .await,
        Err(EngineError::Rejected(_))
    ));
}

/// Group commit: messages of one workflow in one batch build on each other in memory, and a
/// duplicate inside the batch is recognised.
#[tokio::test]
async fn a_batch_applies_events_of_one_workflow_in_order() {
    let st = stack();
    let e = &st.engine;
    let wf = e
        .request_agent(sensitive(), REQUESTER)
        .await
        .unwrap()
        .workflow_id;
    settle(e).await;
    let before = e.store.history(&wf).await.unwrap().len();
    let approve = body(&approve(&wf));
    let cancel = body(&Message::Event {
        workflow_id: wf.clone(),
        event_id: format!("cancel/{wf}"),
        event: Event::Cancel {
            by: statemachines::Actor::Person(REQUESTER.into()),
            reason: "changed my mind".into(),
        },
    });
    // Three messages of one workflow, visible together: one receive takes them all.
    let out = |dedupe: &str, body: &str| OutMessage {
        group: wf.clone(),
        dedupe_id: dedupe.into(),
        body: body.into(),
        delay: Duration::ZERO,
    };
    e.queue
        .send(vec![
            out("t-approve", &approve),
            out("t-approve-again", &approve),
            out("t-cancel", &cancel),
        ])
        .await
        .unwrap();
    assert_eq!(e.work_once(32).await.unwrap(), 3);
    assert_eq!(
        e.queue.dead_letters(10).await.unwrap().len(),
        0,
        "nothing failed"
    );
    let history = e.store.history(&wf).await.unwrap();
    assert_eq!(
        history.len(),
        before + 2,
        "two steps: the duplicate is not one"
    );
    let steps: Vec<(&str, &str, bool)> = history[before..]
        .iter()
        .map(|h| (h.from.as_str(), h.to.as_str(), h.rejected.is_some()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("AwaitingApproval", "Provisioning", false),
            ("Provisioning", "Provisioning", true),
        ],
        "the cancel saw the approval applied before it in the same batch"
    );
    assert!(
        audit_events(e)
            .await
            .iter()
            .any(|v| steward_event(v) == "refused")
    );
    settle(e).await;
    assert_eq!(state(e, &wf).await.0, "Active");
}

/// One mapped event as the intake paths hand it over.
fn received(id: &str, signal: shared::signal::Signal) -> shared::intake::Received {
    shared::intake::Received {
        source: "ssf",
        event_id: id.into(),
        event_type: "test".into(),
        subject: "test".into(),
        published: None,
        signal: Some(signal),
    }
}

fn risk(kind: shared::signal::RiskKind, subject: &str) -> shared::signal::Signal {
    shared::signal::Signal::Risk {
        kind,
        subjects: vec![subject.into()],
        level: None,
        detail: "reported by the transmitter".into(),
        ip: None,
    }
}

/// Outside signals take the policy's severity: a credential compromise (CRITICAL) about an
/// agent's client freezes it at once; a credential change (MEDIUM) asks first; signals about
/// nobody Steward knows, or kinds the policy does not map, change nothing.
#[tokio::test]
async fn outside_signals_freeze_or_ask_by_the_policys_mapping() {
    use shared::signal::RiskKind;
    let st = stack();
    let e = &st.engine;
    e.request_agent(plain(), REQUESTER).await.unwrap();
    settle(e).await;
    let agent = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
    let client = agent.client_id.clone().unwrap();

    // Unknown subject, unmapped kind: recorded only.
    shared::intake::accept(
        e,
        vec![
            received("s-1", risk(RiskKind::CredentialCompromise, "dev_unknown")),
            received("s-2", risk(RiskKind::SessionsCleared, &client)),
        ],
    )
    .await
    .unwrap();
    settle(e).await;
    let a = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
    assert_eq!(a.status, AgentStatus::Active);
    assert!(a.flags.is_empty(), "{:?}", a.flags);

    // MEDIUM: asks the owner or security first; nothing is contained yet.
    shared::intake::accept(
        e,
        vec![received("s-3", risk(RiskKind::CredentialChange, &client))],
    )
    .await
    .unwrap();
    settle(e).await;
    let asked = e.store.approvals(true).await.unwrap();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].request.action, "freeze");
    assert!(asked[0].request.approvers.contains(&OWNER.to_string()));
    assert!(st.idp.client(&client).await.unwrap().unwrap().active);
    // The owner may confirm, not dismiss, a finding about their own agent: told at once,
    // whether they answer "Don't freeze" or withdraw the question.
    match e
        .decide(&asked[0].request.id, OWNER, Decision::Deny, None, None)
        .await
    {
        Err(EngineError::Rejected(r)) => {
            assert!(
                r.to_string()
                    .contains("only a security approver may dismiss"),
                "{r}"
            )
        }
        other => panic!("the owner's dismissal must be refused, got {other:?}"),
    }
    match e.cancel(&asked[0].request.workflow_id, OWNER, "mine").await {
        Err(EngineError::Rejected(r)) => {
            assert!(
                r.to_string()
                    .contains("only a security approver may dismiss"),
                "{r}"
            )
        }
        other => panic!("the owner's withdrawal must be refused, got {other:?}"),
    }
    assert_eq!(
        e.store.approvals(true).await.unwrap().len(),
        1,
        "still asked"
    );

    // CRITICAL, by agent name: contained first, then the decision is asked.
    shared::intake::accept(
        e,
        vec![received(
            "s-4",
            risk(RiskKind::CredentialCompromise, "orders-agent-prod"),
        )],
    )
    .await
    .unwrap();
    settle(e).await;
    let a = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
    assert_eq!(a.status, AgentStatus::Frozen);
    assert!(!st.idp.client(&client).await.unwrap().unwrap().active);
    let decision = e
        .store
        .approvals(true)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.request.action == "unfreeze")
        .expect("the unfreeze decision is asked");
    assert_eq!(decision.request.quorum, 2, "two people after CRITICAL");
    assert!(
        !e.store
            .approvals(true)
            .await
            .unwrap()
            .iter()
            .any(|r| r.request.action == "freeze"),
        "the MEDIUM question is withdrawn once the agent is contained"
    );

    // The same signal again starts nothing new; a further finding on a frozen agent is an alert.
    let before = e.store.instances_for_agent(&a.id).await.unwrap().len();
    shared::intake::accept(
        e,
        vec![received(
            "s-4",
            risk(RiskKind::CredentialCompromise, "orders-agent-prod"),
        )],
    )
    .await
    .unwrap();
    settle(e).await;
    assert_eq!(
        e.store.instances_for_agent(&a.id).await.unwrap().len(),
        before
    );
    let kinds: Vec<String> = audit_events(e)
        .await
        .iter()
        .map(|v| steward_event(v).to_string())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "anomaly_detected").count(),
        2,
        "{kinds:?}"
    );
}

/// A refused token grant freezes only when its reason is exactly a scope refusal after the
/// client authenticated: a reason that merely mentions a scope (a wrong secret naming one) is
/// not evidence against the agent, whoever knows its client id.
#[tokio::test]
async fn only_an_authenticated_scope_refusal_counts_against_the_agent() {
    let st = stack();
    let e = &st.engine;
    e.request_agent(plain(), REQUESTER).await.unwrap();
    settle(e).await;
    let client = e
        .find_agent("orders-agent-prod")
        .await
        .unwrap()
        .unwrap()
        .client_id
        .unwrap();
    let refused = |id: &str, reason: &str| {
        received(
            id,
            shared::signal::Signal::TokenGrant {
                client_id: client.clone(),
                ip: Some("203.0.113.9".into()),
                grant_type: Some("client_credentials".into()),
                requested: vec!["banking:payments:write".into()],
                granted: vec![],
                success: false,
                reason: Some(reason.into()),
                binding: None,
            },
        )
    };
    for (id, reason) in [
        ("g-1", "invalid_client: the scope parameter was ignored"),
        (
            "g-2",
            "Client authentication failed (scope banking:payments:write)",
        ),
        ("g-3", "scope"),
    ] {
        shared::intake::accept(e, vec![refused(id, reason)])
            .await
            .unwrap();
        settle(e).await;
        let a = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
        assert_eq!(a.status, AgentStatus::Active, "{reason}: {:?}", a.flags);
    }
    shared::intake::accept(e, vec![refused("g-4", "no_matching_scope")])
        .await
        .unwrap();
    settle(e).await;
    let a = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
    assert_eq!(a.status, AgentStatus::Frozen, "{:?}", a.flags);
}

/// The kill switch by hand, a decision nobody takes (the agent stays frozen), and a later
/// request to decide: another approver unfreezes it with exactly its grants.
#[tokio::test]
async fn a_freeze_nobody_decided_can_be_unfrozen_on_request() {
    let clock = Arc::new(TestClock(Mutex::new(Utc::now())));
    let st = build(config(), |_| None, Some(clock.clone()));
    let e = &st.engine;
    e.request_agent(plain(), REQUESTER).await.unwrap();
    settle(e).await;
    let agent = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
    let client = agent.client_id.clone().unwrap();

    // Only the owner or security may pull the switch.
    assert!(matches!(
        e.freeze_now("orders-agent-prod", REQUESTER, "curious")
            .await,
        Err(EngineError::Rejected(_))
    ));
    let d = e
        .freeze_now(
            "orders-agent-prod",
            OWNER,
            "laptop with its secret was stolen",
        )
        .await
        .unwrap();
    assert_eq!(d.started.len(), 1);
    settle(e).await;
    assert!(!st.idp.client(&client).await.unwrap().unwrap().active);
    // While that decision is open, a second request is refused.
    assert!(matches!(
        e.request_unfreeze("orders-agent-prod", OWNER, "found it")
            .await,
        Err(EngineError::Conflict(_))
    ));

    // Nobody decides within `decide_within`: kept frozen.
    *clock.0.lock().unwrap() += chrono::Duration::days(8);
    e.tick().await.unwrap();
    settle(e).await;
    let frozen = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
    assert_eq!(frozen.status, AgentStatus::Frozen);
    assert_eq!(state(e, &d.started[0].workflow_id).await.0, "Kept");

    // The owner asks; the decision goes to security, not to the person asking.
    let asked = e
        .request_unfreeze(
            "orders-agent-prod",
            OWNER,
            "laptop recovered, secret rotated",
        )
        .await
        .unwrap();
    assert_eq!(asked.state, "AwaitingDecision");
    settle(e).await;
    let approval = e
        .store
        .approvals(true)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.request.workflow_id == asked.workflow_id)
        .unwrap();
    assert_eq!(approval.request.requester, OWNER);
    assert_eq!(
        approval.request.quorum, 1,
        "a HIGH freeze needs one approver"
    );
    assert!(matches!(
        e.decide(&approval.request.id, OWNER, Decision::Approve, None, None)
            .await,
        Err(EngineError::Rejected(_))
    ));
    e.decide(
        &approval.request.id,
        APPROVER,
        Decision::Approve,
        None,
        None,
    )
    .await
    .unwrap();
    settle(e).await;
    let back = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
    assert_eq!(back.status, AgentStatus::Active);
    assert_eq!(back.scopes, agent.scopes);
    let c = st.idp.client(&client).await.unwrap().unwrap();
    assert!(c.active);
    assert_eq!(c.scopes, agent.scopes);
    // An active agent cannot be "unfrozen".
    assert!(matches!(
        e.request_unfreeze("orders-agent-prod", OWNER, "again")
            .await,
        Err(EngineError::Conflict(_))
    ));
}

/// A token grant delivered again (an Okta retry, a batch replayed after a crash half-way) is
/// counted once: the baseline's request count and hourly count do not grow with redeliveries,
/// which would otherwise let a replayed batch inflate what "usual" is.
#[tokio::test]
async fn a_redelivered_token_grant_is_counted_once() {
    let st = stack();
    let e = &st.engine;
    e.request_agent(plain(), REQUESTER).await.unwrap();
    settle(e).await;
    let agent = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
    let client = agent.client_id.clone().unwrap();
    let grant = |id: &str| {
        received(
            id,
            shared::signal::Signal::TokenGrant {
                client_id: client.clone(),
                ip: Some("10.0.0.7".into()),
                grant_type: Some("client_credentials".into()),
                requested: agent.scopes.clone(),
                granted: agent.scopes.clone(),
                success: true,
                reason: None,
                binding: None,
            },
        )
    };
    shared::intake::accept(e, vec![grant("g-1"), grant("g-2")])
        .await
        .unwrap();
    let first = e.store.baseline(&agent.id).await.unwrap().unwrap();
    assert_eq!(first.requests, 2);
    for _ in 0..3 {
        shared::intake::accept(e, vec![grant("g-1"), grant("g-2")])
            .await
            .unwrap();
    }
    let again = e.store.baseline(&agent.id).await.unwrap().unwrap();
    assert_eq!(again.requests, 2, "redeliveries are not counted");
    assert_eq!(again.current_count, first.current_count);
    shared::intake::accept(e, vec![grant("g-3")]).await.unwrap();
    assert_eq!(
        e.store.baseline(&agent.id).await.unwrap().unwrap().requests,
        3
    );
}

/// Token requests handed over at the same time share group commits: every caller returns only
/// once its grant is written, each grant counts once in the agent's baseline and scope use,
/// and an out-of-grant request among them still freezes the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grants_share_group_commits_and_each_counts_once() {
    use shared::intake::{GroupIntake, Received};
    use shared::signal::Signal;
    let st = stack();
    let e = Arc::new(st.engine);
    e.request_agent(plain(), REQUESTER).await.unwrap();
    settle(&e).await;
    let agent = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
    let client = agent.client_id.clone().unwrap();
    let grant = |n: usize, scope: &str, ok: bool| Received {
        source: "dev-idp",
        event_id: format!("grant-{n}"),
        event_type: "token.grant".into(),
        subject: client.clone(),
        published: Some(chrono::Utc::now()),
        signal: Some(Signal::TokenGrant {
            client_id: client.clone(),
            ip: Some("10.0.0.7".into()),
            grant_type: Some("client_credentials".into()),
            requested: vec![scope.into()],
            granted: if ok { vec![scope.into()] } else { vec![] },
            success: ok,
            reason: (!ok).then(|| "invalid_scope".into()),
            binding: None,
        }),
    };
    let intake = GroupIntake::start(e.clone(), 16, 64);
    let scope = agent.scopes[0].clone();
    let calls: Vec<_> = (0..40)
        .map(|n| {
            let (intake, ev) = (intake.clone(), grant(n, &scope, true));
            tokio::spawn(async move { intake.accept(vec![ev]).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let baseline = e.store.baseline(&agent.id).await.unwrap().unwrap();
    assert_eq!(baseline.requests, 40, "each grant counted once");
    let used = e.store.scope_usage(&client).await.unwrap();
    assert_eq!(used.len(), 1);
    // Handed over again (a redelivery): written, counted no more.
    intake.accept(vec![grant(3, &scope, true)]).await.unwrap();
    assert_eq!(
        e.store.baseline(&agent.id).await.unwrap().unwrap().requests,
        40
    );
    intake
        .accept(vec![grant(99, "banking:payments:write", false)])
        .await
        .unwrap();
    settle(&e).await;
    let a = e.find_agent("orders-agent-prod").await.unwrap().unwrap();
    assert_eq!(a.status, AgentStatus::Frozen);
}
