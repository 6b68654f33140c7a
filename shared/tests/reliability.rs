//! Reliability: what people rely on when the queue delivers a message more than once, and when
//! the identity provider or the human channel (Slack) is down for a while. See
//! docs/RELIABILITY.md, "Redelivery and outages"; run with
//! `cargo test -p shared --test reliability`.
//!
//! The tests run the embedded stack (SQLite store and queue, dev IdP, file vault, console
//! channel) on a clock the test moves, with test adapters wrapped around the ports:
//! - [`TripleDelivery`] (the queue): every message is delivered three times;
//! - [`SimTimeQueue`] (the queue and the outbox): delayed messages (retries with backoff) wait
//!   on the simulated clock instead of the wall clock, so an hour of backoff takes no time;
//! - [`IdpOutage`] and [`ChannelOutage`]: the IdP answers 503 and Slack is unreachable while the
//!   simulated clock is inside their outage window.
//!
//! One test is `#[ignore]`d: it shows a bug these tests found (a redelivered
//! `idp.create_client`). Run it with `-- --ignored`; it fails until the bug is fixed.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use shared::embedded::Durability;
use shared::embedded::console::Console;
use shared::embedded::queue::SqliteQueue;
use shared::embedded::vault::FileVault;
use shared::engine::message::Message;
use shared::idp::dev::DevIdp;
use shared::ports::human_channel::{HumanChannel, NotifyError};
use shared::ports::idp::{
    ClientInfo, ClientSpec, CreatedClient, IdpError, NewSecret, TokenRevocation,
};
use shared::ports::outbox::{Batch, Outbox, OutboxError};
use shared::ports::queue::{DeadLetter, Delivery, OutMessage, Queue, QueueError};
use shared::ports::store::StoreError;
use shared::ports::vault::Stage;
use shared::ports::{Clock, IdentityProvider, Vault};
use shared::wiring::embedded::{Embedded, EmbeddedConfig};
use shared::{Engine, EngineConfig, Secret};
use statemachines::command::SECURITY_CHANNEL;
use statemachines::review_item::ReviewNotice;
use statemachines::rotation::RotationReason;
use statemachines::scope_change::ScopeChangeRequest;
use statemachines::{
    AgentRequest, AgentStatus, ApprovalOutcome, ApprovalRequest, Decision, FollowUp,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
"#;
const REQUESTER: &str = "bob@example.com";
const OWNER: &str = "alice@example.com";
const APPROVER: &str = "sam.security@example.com";

/// A Monday morning, so that nothing depends on when the test runs.
fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 7, 9, 0, 0).unwrap()
}

/// The simulated clock: moves only when the test moves it.
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap() = t;
    }
    fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

struct Stack {
    engine: Engine,
    queue: Arc<SqliteQueue>,
    idp: Arc<DevIdp>,
    vault: Arc<FileVault>,
    console: Arc<Console>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

/// The embedded stack (as `steward serve` wires it) on the simulated clock.
fn build(config: EngineConfig) -> Stack {
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
        queue,
        idp,
        vault,
        console,
        ..
    } = s;
    let mut engine = Arc::try_unwrap(engine)
        .ok()
        .expect("the stack is the engine's only owner");
    let clock = Arc::new(ManualClock(Mutex::new(start_time())));
    engine.clock = clock.clone();
    Stack {
        engine,
        queue,
        idp,
        vault,
        console,
        clock,
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
        purpose: "reliability tests".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        token_lifetime_secs: Some(600),
        expires_on: None,
    }
}

/// The approval a workflow opened (the first one not decided yet).
async fn open_approval(e: &Engine, workflow_id: &str) -> String {
    e.store
        .approvals(true)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.request.workflow_id == workflow_id)
        .unwrap_or_else(|| panic!("{workflow_id} has no open approval"))
        .request
        .id
}

async fn workflow_state(e: &Engine, workflow_id: &str) -> String {
    e.store
        .instance(workflow_id)
        .await
        .unwrap()
        .unwrap()
        .state_name
}

async fn agent_status(e: &Engine, name: &str) -> AgentStatus {
    e.find_agent(name).await.unwrap().unwrap().status
}

// ---------------------------------------------------------------------------------------------
// 1. Every message delivered three times
// ---------------------------------------------------------------------------------------------

/// The queue, delivering every message three times. The first receive of a message sends a
/// copy of it (same group and body, a deduplication id of its own so the queue keeps it) to the
/// back of its group at once, and keeps another one until the queue is idle. The first copy
/// arrives before what the original's processing sent (a command's `Run` again before its
/// result: a visibility timeout that ran out while a worker still held the message), the second
/// one after everything it caused was done (a batch replayed late, after a crash).
struct TripleDelivery {
    inner: Arc<SqliteQueue>,
    /// Second copies, sent when the queue is idle.
    later: Mutex<Vec<OutMessage>>,
    /// Copies sent and not yet received, by body: a copy is not copied again.
    copies_due: Mutex<HashMap<String, usize>>,
    originals: AtomicUsize,
    copies: AtomicUsize,
    next_id: AtomicU64,
}

impl TripleDelivery {
    fn new(inner: Arc<SqliteQueue>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            later: Mutex::new(Vec::new()),
            copies_due: Mutex::new(HashMap::new()),
            originals: AtomicUsize::new(0),
            copies: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
        })
    }
}

#[async_trait]
impl Queue for TripleDelivery {
    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError> {
        self.inner.send(messages).await
    }
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut deliveries = self.inner.receive(max, visibility).await?;
        if deliveries.is_empty() {
            // Idle: the late copies come now.
            let later = std::mem::take(&mut *self.later.lock().unwrap());
            if !later.is_empty() {
                self.inner.send(later).await?;
                deliveries = self.inner.receive(max, visibility).await?;
            }
        }
        let mut copies = Vec::new();
        let mut later = Vec::new();
        {
            let mut due = self.copies_due.lock().unwrap();
            for d in deliveries.iter().filter(|d| d.receive_count == 1) {
                match due.get_mut(&d.body) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        self.copies.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        self.originals.fetch_add(1, Ordering::SeqCst);
                        *due.entry(d.body.clone()).or_default() += 2;
                        let group = serde_json::from_str::<Message>(&d.body)
                            .map(|m| m.workflow_id().to_string())
                            .unwrap_or_else(|_| "unparsed".into());
                        for to in [&mut copies, &mut later] {
                            let n = self.next_id.fetch_add(1, Ordering::SeqCst);
                            to.push(OutMessage {
                                group: group.clone(),
                                dedupe_id: format!("test-copy:{n}"),
                                body: d.body.clone(),
                                delay: Duration::ZERO,
                            });
                        }
                    }
                }
            }
        }
        self.inner.send(copies).await?;
        self.later.lock().unwrap().extend(later);
        Ok(deliveries)
    }
    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError> {
        self.inner.ack(receipts).await
    }
    async fn nack(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.inner.nack(receipt, delay).await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.dead_letters(limit).await
    }
    async fn dead_letter_count(&self) -> Result<usize, QueueError> {
        self.inner.dead_letter_count().await
    }
    async fn depth(&self) -> Result<usize, QueueError> {
        Ok(self.inner.depth().await? + self.later.lock().unwrap().len())
    }
    fn max_receives(&self) -> u32 {
        self.inner.max_receives()
    }
}

/// Works the queue until nothing waits in it (delayed retries and copies included).
async fn settle(e: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        e.run_until_idle().await.unwrap();
        if e.queue.depth().await.unwrap() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What a person can see after the scenario, without ids that differ between two runs (the
/// dev IdP's client ids and secret ids are random).
#[derive(Debug)]
struct EndState {
    /// name → (status, scopes, has a client)
    agents: BTreeMap<String, (String, Vec<String>, bool)>,
    distinct_client_ids: usize,
    /// IdP clients by name → (active, scopes, token lifetime, secrets held)
    idp_clients: BTreeMap<String, (bool, Vec<String>, u32, usize)>,
    /// approval id → (action, status, votes)
    approvals: BTreeMap<String, (String, String, usize)>,
    /// workflow id → (kind, state, terminal, pending commands, history steps, refused steps)
    workflows: BTreeMap<String, (String, String, bool, usize, usize, usize)>,
    /// (workflow id, audit event kind) → records
    audit: BTreeMap<(String, String), usize>,
    /// (kind, recipient, subject) → notices the console holds
    notices: BTreeMap<(String, String, String), usize>,
    /// active agent's name → (its vaulted (current) credential obtains a token at the IdP, the
    /// registry names that vault version)
    credentials: BTreeMap<String, (bool, bool)>,
    dead_letters: usize,
}

/// A workflow id as two runs can compare it: a rotation's id hashes the agent's secret version,
/// which names the dev IdP's random secret id, so it differs between any two runs; its prefix
/// (`rotation-<agent>`) does not.
fn comparable(workflow_id: &str) -> String {
    match workflow_id.strip_prefix("rotation-") {
        Some(rest) => format!(
            "rotation-{}",
            rest.rsplit_once('-').map_or(rest, |(a, _)| a)
        ),
        None => workflow_id.to_string(),
    }
}

async fn end_state(st: &Stack) -> EndState {
    let e = &st.engine;
    let agents = e.store.agents().await.unwrap();
    let mut out = EndState {
        agents: BTreeMap::new(),
        distinct_client_ids: 0,
        idp_clients: BTreeMap::new(),
        approvals: BTreeMap::new(),
        workflows: BTreeMap::new(),
        audit: BTreeMap::new(),
        notices: BTreeMap::new(),
        credentials: BTreeMap::new(),
        dead_letters: e.queue.dead_letters(1000).await.unwrap().len(),
    };
    let mut client_ids: Vec<String> = agents.iter().filter_map(|a| a.client_id.clone()).collect();
    client_ids.sort();
    client_ids.dedup();
    out.distinct_client_ids = client_ids.len();
    for a in &agents {
        let mut scopes = a.scopes.clone();
        scopes.sort();
        out.agents.insert(
            a.name.clone(),
            (a.status.as_str().into(), scopes, a.client_id.is_some()),
        );
        for i in e.store.instances_for_agent(&a.id).await.unwrap() {
            let history = e.store.history(&i.id).await.unwrap();
            let refused = history.iter().filter(|h| h.rejected.is_some()).count();
            out.workflows.insert(
                comparable(&i.id),
                (
                    i.kind.clone(),
                    i.state_name.clone(),
                    i.terminal,
                    i.pending.len(),
                    history.len(),
                    refused,
                ),
            );
        }
        if a.status == AgentStatus::Active {
            let current = st.vault.get(&a.id, Stage::Current).await.unwrap();
            let (current, secret) = current.expect("an active agent has a vaulted secret");
            let credential = shared::credential::Credential::from_secret(&secret).unwrap();
            let works = st
                .idp
                .issue_token(
                    &credential.client_id,
                    credential.client_secret.expose(),
                    None,
                    Utc::now(),
                )
                .is_ok();
            let named = a.secret_version.as_deref() == Some(current.as_str());
            out.credentials.insert(a.name.clone(), (works, named));
        }
    }
    for c in st.idp.list_clients().await.unwrap() {
        let mut scopes = c.scopes.clone();
        scopes.sort();
        let secrets = st.idp.secret_ids(&c.client_id).await.unwrap().len();
        let previous = out.idp_clients.insert(
            c.name.clone(),
            (c.active, scopes, c.token_lifetime_secs, secrets),
        );
        assert!(previous.is_none(), "two IdP clients named {}", c.name);
    }
    for r in e.store.approvals(false).await.unwrap() {
        out.approvals.insert(
            r.request.id.clone(),
            (
                r.request.action.clone(),
                r.status().into(),
                r.request.votes.len(),
            ),
        );
    }
    for c in e.store.audit(0, 100_000).await.unwrap() {
        let u = &c.record.body["unmapped"];
        let wf = comparable(u["workflow_id"].as_str().unwrap_or("-"));
        let kind = u["steward_event"].as_str().unwrap_or("?").to_string();
        *out.audit.entry((wf, kind)).or_default() += 1;
    }
    for n in st.console.notices().unwrap() {
        *out.notices
            .entry((n.kind, n.recipient, n.subject))
            .or_default() += 1;
    }
    out
}

/// The scenario both runs of the redelivery test go through; returns the state at three
/// checkpoints. The simulated clock moves the same way in both runs, so workflow ids (derived
/// from the request and the time) are the same.
async fn scenario(st: &Stack) -> Vec<EndState> {
    let e = &st.engine;
    let minute = chrono::Duration::minutes(1);
    let mut checkpoints = Vec::new();

    // Onboarding without approval.
    let orders = e
        .request_agent(
            request("orders-agent-prod", &["erp:orders:read"]),
            REQUESTER,
        )
        .await
        .unwrap();
    assert_eq!(orders.state, "Provisioning");
    settle(e).await;
    st.clock.advance(minute);

    // Onboarding with a sensitive scope, approved.
    let payments = e
        .request_agent(
            request("payments-agent-prod", &["banking:payments:write"]),
            REQUESTER,
        )
        .await
        .unwrap();
    assert_eq!(payments.state, "AwaitingApproval");
    settle(e).await;
    let approval = open_approval(e, &payments.workflow_id).await;
    e.decide(
        &approval,
        APPROVER,
        Decision::Approve,
        Some("ok".into()),
        None,
    )
    .await
    .unwrap();
    settle(e).await;
    st.clock.advance(minute);
    checkpoints.push(end_state(st).await);

    // A scope change.
    e.request_scope_change(
        "orders-agent-prod",
        ScopeChangeRequest {
            add: vec!["erp:inventory:read".into()],
            remove: vec![],
            token_lifetime_secs: None,
            reason: "stock checks".into(),
        },
        OWNER,
    )
    .await
    .unwrap();
    settle(e).await;
    st.clock.advance(minute);

    // A rotation, through its grace period.
    e.request_rotation(
        "orders-agent-prod",
        RotationReason::OnDemand { by: OWNER.into() },
        statemachines::Actor::Person(OWNER.into()),
    )
    .await
    .unwrap();
    settle(e).await;
    st.clock.advance(chrono::Duration::hours(25));
    e.tick().await.unwrap();
    settle(e).await;
    st.clock.advance(minute);
    checkpoints.push(end_state(st).await);

    // The kill switch, then an unfreeze decided by security.
    let frozen = e
        .freeze_now("payments-agent-prod", OWNER, "laptop stolen")
        .await
        .unwrap();
    settle(e).await;
    let freeze_wf = &frozen.started[0].workflow_id;
    let decision = open_approval(e, freeze_wf).await;
    e.decide(&decision, APPROVER, Decision::Approve, None, None)
        .await
        .unwrap();
    settle(e).await;
    st.clock.advance(minute);

    // A decommission, decided by security.
    let decommission = e
        .request_decommission("orders-agent-prod", OWNER, "retired")
        .await
        .unwrap();
    settle(e).await;
    let asked = open_approval(e, &decommission.workflow_id).await;
    e.decide(&asked, APPROVER, Decision::Approve, None, None)
        .await
        .unwrap();
    settle(e).await;
    st.clock.advance(minute);
    checkpoints.push(end_state(st).await);
    checkpoints
}

/// As shipped (6 attempts, 16 remembered event ids per workflow), with millisecond backoff.
fn redelivery_config() -> EngineConfig {
    EngineConfig {
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        crash_after: None,
        ..EngineConfig::default()
    }
}

/// At-least-once delivery: the same scenario with every queue message delivered once and
/// delivered three times ends in the same state: agents, the IdP's clients and their secrets,
/// approvals, workflows, the audit trail's records per workflow and kind, the notices people
/// got, and working vaulted credentials; no dead letters. (With `applied_window: 1` the late
/// copies of approval decisions are applied again, as refused steps with "refused" audit
/// records, and this test fails.)
#[tokio::test]
async fn every_message_delivered_three_times_reaches_the_same_end_state() {
    let once = build(redelivery_config());
    let expected = scenario(&once).await;

    let mut thrice = build(redelivery_config());
    let triple = TripleDelivery::new(thrice.queue.clone());
    thrice.engine.queue = triple.clone();
    let got = scenario(&thrice).await;

    let originals = triple.originals.load(Ordering::SeqCst);
    let copies = triple.copies.load(Ordering::SeqCst);
    eprintln!("messages: {originals} delivered three times ({copies} copies received)");
    assert!(originals > 40, "the scenario sends messages: {originals}");
    assert_eq!(copies, 2 * originals, "every message came three times");

    // The single-delivery run is what the scenario should end in.
    let last = expected.last().unwrap();
    assert_eq!(last.dead_letters, 0);
    assert_eq!(
        last.agents["payments-agent-prod"].0, "active",
        "{:?}",
        last.agents
    );
    assert_eq!(last.agents["orders-agent-prod"].0, "decommissioned");
    assert!(
        last.workflows.values().all(|w| w.2 && w.3 == 0 && w.5 == 0),
        "every workflow ended, nothing pending, nothing refused: {:#?}",
        last.workflows
    );
    assert!(
        expected.iter().all(|c| c
            .credentials
            .values()
            .all(|(works, named)| *works && *named)),
        "every active agent's vaulted credential works"
    );

    // Every difference, at every checkpoint, in one message.
    let mut differences = Vec::new();
    for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
        let at = [
            "after onboarding",
            "after the scope change and rotation",
            "at the end",
        ][i];
        let mut differ = |what: &str, once: String, thrice: String| {
            if once != thrice {
                differences.push(format!(
                    "{at}: {what}\n  delivered once:   {once}\n  delivered thrice: {thrice}"
                ));
            }
        };
        differ("dead letters", "0".into(), format!("{}", have.dead_letters));
        differ(
            "agents (status, scopes, has a client)",
            format!("{:?}", want.agents),
            format!("{:?}", have.agents),
        );
        differ(
            "distinct client ids",
            format!("{}", want.distinct_client_ids),
            format!("{}", have.distinct_client_ids),
        );
        differ(
            "IdP clients (active, scopes, token lifetime, secrets held)",
            format!("{:?}", want.idp_clients),
            format!("{:?}", have.idp_clients),
        );
        differ(
            "approvals (action, status, votes)",
            format!("{:?}", want.approvals),
            format!("{:?}", have.approvals),
        );
        differ(
            "workflows (kind, state, terminal, pending, steps, refused steps)",
            format!("{:?}", want.workflows),
            format!("{:?}", have.workflows),
        );
        differ(
            "audit records per (workflow, kind)",
            format!("{:?}", want.audit),
            format!("{:?}", have.audit),
        );
        differ(
            "notices (kind, recipient, subject)",
            format!("{:?}", want.notices),
            format!("{:?}", have.notices),
        );
        differ(
            "credentials (the vaulted one obtains a token, the registry names it)",
            format!("{:?}", want.credentials),
            format!("{:?}", have.credentials),
        );
    }
    assert!(
        differences.is_empty(),
        "delivering every message three times changed the outcome:\n{}",
        differences.join("\n")
    );
}

/// Found by the test above (with the single-delivery run as reference, the registry's
/// `secret_version` of every agent whose `idp.create_client` ran more than once no longer named
/// the vault's current version). A `Run` delivered again after its result was sent but before
/// the delivery was acknowledged (a kill between the two, or a visibility timeout that ran out)
/// still finds its command pending. It used to run `idp.create_client` again: the IdP answers a
/// repeated key with a fresh secret and drops the first one (the port's contract), the vault got
/// a second version, and the first result (the one applied, both share a deduplication id)
/// named a version whose secret the IdP no longer held. Now the repeat finds the credential the
/// first run vaulted, still held by the IdP, and answers with it.
#[tokio::test]
async fn a_create_client_run_delivered_twice_leaves_the_registry_on_the_working_secret() {
    let st = build(redelivery_config());
    let e = &st.engine;
    let started = e
        .request_agent(
            request("orders-agent-prod", &["erp:orders:read"]),
            REQUESTER,
        )
        .await
        .unwrap();
    // A worker receives the Run of idp.create_client ...
    let first = e.queue.receive(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        first[0].body.contains("\"run\""),
        "the create_client run: {}",
        first[0].body
    );
    // ... another worker gets it again meanwhile, and finishes first; then the first one does.
    e.handle(&first[0].body).await.unwrap();
    assert!(e.work(&first).await.unwrap().is_empty());
    settle(e).await;

    let agent = e.store.agent(&started.agent_id).await.unwrap().unwrap();
    assert_eq!(agent.status, AgentStatus::Active);
    let client_id = agent.client_id.clone().unwrap();
    assert_eq!(st.idp.list_clients().await.unwrap().len(), 1, "one client");
    assert_eq!(
        st.idp.secret_ids(&client_id).await.unwrap().len(),
        1,
        "one secret at the IdP"
    );
    let (current, secret) = st
        .vault
        .get(&agent.id, Stage::Current)
        .await
        .unwrap()
        .unwrap();
    let credential = shared::credential::Credential::from_secret(&secret).unwrap();
    assert!(
        st.idp
            .issue_token(
                &client_id,
                credential.client_secret.expose(),
                None,
                Utc::now()
            )
            .is_ok(),
        "the vault's current secret works"
    );
    let versions = st.vault.versions(&agent.id).await.unwrap();
    assert_eq!(
        agent.secret_version.as_deref(),
        Some(current.as_str()),
        "the registry names the vault's current (working) version; the vault holds {versions:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The IdP down for 10 minutes, Slack for an hour
// ---------------------------------------------------------------------------------------------

/// The queue and the outbox with time made simulated: a message sent with a delay (a retry's
/// backoff) is held here until the simulated clock reaches its due time, then sent. Everything
/// else goes straight to the SQLite queue. A failed delivery put back (`nack`) waits at most
/// 10 ms of wall time.
struct SimTimeQueue {
    inner: Arc<SqliteQueue>,
    clock: Arc<ManualClock>,
    held: Mutex<Vec<(DateTime<Utc>, OutMessage)>>,
}

impl SimTimeQueue {
    fn hold(&self, messages: Vec<OutMessage>) -> Vec<OutMessage> {
        let now = self.clock.now();
        let mut held = self.held.lock().unwrap();
        let mut now_due = Vec::new();
        for m in messages {
            if m.delay.is_zero() {
                now_due.push(m);
            } else {
                let due = now + chrono::Duration::from_std(m.delay).unwrap();
                held.push((
                    due,
                    OutMessage {
                        delay: Duration::ZERO,
                        ..m
                    },
                ));
            }
        }
        now_due
    }

    /// Sends the held messages that are due by the simulated clock.
    async fn release(&self) -> usize {
        let now = self.clock.now();
        let mut due: Vec<(DateTime<Utc>, OutMessage)> = {
            let mut held = self.held.lock().unwrap();
            let (due, later) = held.drain(..).partition(|(at, _)| *at <= now);
            *held = later;
            due
        };
        due.sort_by_key(|(at, _)| *at);
        let n = due.len();
        self.inner
            .send(due.into_iter().map(|(_, m)| m).collect())
            .await
            .unwrap();
        n
    }

    fn next_due(&self) -> Option<DateTime<Utc>> {
        self.held.lock().unwrap().iter().map(|(at, _)| *at).min()
    }
}

#[async_trait]
impl Outbox for SimTimeQueue {
    async fn write(&self, mut batch: Batch) -> Result<Vec<Result<(), StoreError>>, OutboxError> {
        batch.messages = self.hold(std::mem::take(&mut batch.messages));
        for step in &mut batch.steps {
            step.messages = self.hold(std::mem::take(&mut step.messages));
        }
        self.inner.write(batch).await
    }
    fn atomic(&self) -> bool {
        Outbox::atomic(&*self.inner)
    }
}

#[async_trait]
impl Queue for SimTimeQueue {
    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError> {
        let now = self.hold(messages);
        self.inner.send(now).await
    }
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        self.inner.receive(max, visibility).await
    }
    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError> {
        self.inner.ack(receipts).await
    }
    async fn nack(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.inner
            .nack(receipt, delay.min(Duration::from_millis(10)))
            .await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.dead_letters(limit).await
    }
    async fn dead_letter_count(&self) -> Result<usize, QueueError> {
        self.inner.dead_letter_count().await
    }
    async fn depth(&self) -> Result<usize, QueueError> {
        Ok(self.inner.depth().await? + self.held.lock().unwrap().len())
    }
    fn max_receives(&self) -> u32 {
        self.inner.max_receives()
    }
}

/// The identity provider answering 503 to every call while the simulated clock is in
/// `from..until`.
struct IdpOutage {
    inner: Arc<DevIdp>,
    clock: Arc<ManualClock>,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    refused: AtomicUsize,
    served: AtomicUsize,
}

impl IdpOutage {
    fn up(&self) -> Result<(), IdpError> {
        if (self.from..self.until).contains(&self.clock.now()) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(IdpError::Unavailable(
                "503 Service Unavailable (simulated outage)".into(),
            ));
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl IdentityProvider for IdpOutage {
    async fn create_client(
        &self,
        spec: &ClientSpec,
        idempotency_key: &str,
    ) -> Result<CreatedClient, IdpError> {
        self.up()?;
        self.inner.create_client(spec, idempotency_key).await
    }
    async fn set_grants(
        &self,
        client_id: &str,
        scopes: &[String],
        token_lifetime_secs: u32,
    ) -> Result<(), IdpError> {
        self.up()?;
        self.inner
            .set_grants(client_id, scopes, token_lifetime_secs)
            .await
    }
    async fn set_active(&self, client_id: &str, active: bool) -> Result<(), IdpError> {
        self.up()?;
        self.inner.set_active(client_id, active).await
    }
    async fn client(&self, client_id: &str) -> Result<Option<ClientInfo>, IdpError> {
        self.up()?;
        self.inner.client(client_id).await
    }
    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        self.up()?;
        self.inner.list_clients().await
    }
    async fn add_secret(&self, client_id: &str, key: &str) -> Result<NewSecret, IdpError> {
        self.up()?;
        self.inner.add_secret(client_id, key).await
    }
    async fn remove_secret(&self, client_id: &str, secret_id: &str) -> Result<(), IdpError> {
        self.up()?;
        self.inner.remove_secret(client_id, secret_id).await
    }
    async fn secret_ids(&self, client_id: &str) -> Result<Vec<String>, IdpError> {
        self.up()?;
        self.inner.secret_ids(client_id).await
    }
    async fn test_secret(&self, client_id: &str, secret: &Secret) -> Result<(), IdpError> {
        self.up()?;
        self.inner.test_secret(client_id, secret).await
    }
    async fn revoke_tokens(&self, client_id: &str) -> Result<TokenRevocation, IdpError> {
        self.up()?;
        self.inner.revoke_tokens(client_id).await
    }
    async fn delete_client(&self, client_id: &str) -> Result<(), IdpError> {
        self.up()?;
        self.inner.delete_client(client_id).await
    }
}

/// One message the human channel delivered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Sent {
    what: &'static str,
    to: String,
    about: String,
}

impl Sent {
    /// Whether it reaches the security channel: approval requests are posted there (the
    /// policy's `routes` include `security-channel`), escalations go there, and notices
    /// addressed to it.
    fn to_security_channel(&self) -> bool {
        matches!(self.what, "ask" | "escalation") || self.to == SECURITY_CHANNEL
    }
}

/// The human channel unreachable while the simulated clock is in `from..until`; records what it
/// delivered afterwards (every successful call, before the console's own deduplication by key).
struct ChannelOutage {
    inner: Arc<Console>,
    clock: Arc<ManualClock>,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    refused: AtomicUsize,
    sent: Mutex<Vec<Sent>>,
}

impl ChannelOutage {
    fn up(&self) -> Result<(), NotifyError> {
        if (self.from..self.until).contains(&self.clock.now()) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(NotifyError {
                message: "slack.com unreachable (simulated outage)".into(),
                retryable: true,
                retry_after: None,
            });
        }
        Ok(())
    }
    fn record(&self, what: &'static str, to: &str, about: &str) {
        self.sent.lock().unwrap().push(Sent {
            what,
            to: to.into(),
            about: about.into(),
        });
    }
    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl HumanChannel for ChannelOutage {
    async fn ask(&self, approval: &ApprovalRequest, key: &str) -> Result<(), NotifyError> {
        self.up()?;
        self.inner.ask(approval, key).await?;
        self.record("ask", &approval.approvers.join(","), &approval.id);
        Ok(())
    }
    async fn closed(
        &self,
        approval_id: &str,
        outcome: &ApprovalOutcome,
        key: &str,
    ) -> Result<(), NotifyError> {
        self.up()?;
        self.inner.closed(approval_id, outcome, key).await?;
        self.record("closed", "", approval_id);
        Ok(())
    }
    async fn follow_up(
        &self,
        approval_id: &str,
        follow_up: &FollowUp,
        key: &str,
    ) -> Result<(), NotifyError> {
        self.up()?;
        self.inner.follow_up(approval_id, follow_up, key).await?;
        let what = match follow_up {
            FollowUp::Vote { .. } => "vote",
            FollowUp::Reminder { .. } => "reminder",
            FollowUp::Escalation { .. } => "escalation",
        };
        self.record(what, "", approval_id);
        Ok(())
    }
    async fn review(&self, notice: &ReviewNotice, key: &str) -> Result<(), NotifyError> {
        self.up()?;
        self.inner.review(notice, key).await?;
        self.record("review", "", &notice.item().id);
        Ok(())
    }
    async fn notify(
        &self,
        to: &str,
        subject: &str,
        body: &str,
        key: &str,
    ) -> Result<(), NotifyError> {
        self.up()?;
        self.inner.notify(to, subject, body, key).await?;
        self.record("notify", to, subject);
        Ok(())
    }
}

struct Outage {
    st: Stack,
    queue: Arc<SimTimeQueue>,
    idp: Arc<IdpOutage>,
    channel: Arc<ChannelOutage>,
}

/// The stack with the IdP down from `begins` for `idp_down` and the human channel down from
/// `begins` for `channel_down` (simulated time).
fn outage_stack(
    config: EngineConfig,
    begins: DateTime<Utc>,
    idp_down: chrono::Duration,
    channel_down: chrono::Duration,
) -> Outage {
    let mut st = build(config);
    let queue = Arc::new(SimTimeQueue {
        inner: st.queue.clone(),
        clock: st.clock.clone(),
        held: Mutex::new(Vec::new()),
    });
    st.engine.queue = queue.clone();
    st.engine.outbox = queue.clone();
    let idp = Arc::new(IdpOutage {
        inner: st.idp.clone(),
        clock: st.clock.clone(),
        from: begins,
        until: begins + idp_down,
        refused: AtomicUsize::new(0),
        served: AtomicUsize::new(0),
    });
    st.engine.executor.idp = idp.clone();
    let channel = Arc::new(ChannelOutage {
        inner: st.console.clone(),
        clock: st.clock.clone(),
        from: begins,
        until: begins + channel_down,
        refused: AtomicUsize::new(0),
        sent: Mutex::new(Vec::new()),
    });
    st.engine.executor.people = channel.clone();
    Outage {
        st,
        queue,
        idp,
        channel,
    }
}

impl Outage {
    /// Works everything visible now (wall-clock waits only for put-back deliveries).
    async fn drain(&self) {
        let e = &self.st.engine;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            e.run_until_idle().await.unwrap();
            if self.queue.inner.depth().await.unwrap() == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the queue did not drain");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Moves the simulated clock to `until`, stopping at every held message's due time (and at
    /// least once a minute for timers), and works the queue at each stop.
    async fn run_until(&self, until: DateTime<Utc>) {
        let clock = &self.st.clock;
        loop {
            self.drain().await;
            let now = clock.now();
            if now >= until {
                return;
            }
            let minute_later = now + chrono::Duration::minutes(1);
            let next = self
                .queue
                .next_due()
                .map_or(minute_later, |d| d.min(minute_later))
                .clamp(now, until);
            clock.set(next);
            self.queue.release().await;
            self.st.engine.tick().await.unwrap();
        }
    }
}

/// What ran during an outage, for the report.
fn refused(o: &Outage) -> (usize, usize) {
    (
        o.idp.refused.load(Ordering::SeqCst),
        o.channel.refused.load(Ordering::SeqCst),
    )
}

/// Per-command retries span about 87 minutes: 18 attempts, backoff doubling from 200 ms up to
/// 15 minutes (SQS's longest delay). The shipped default (6 attempts, 200 ms to 60 s) spans
/// about 7 seconds; see `with_the_default_retry_budget_an_outage_fails_commands_visibly`.
fn outage_config() -> EngineConfig {
    EngineConfig {
        max_attempts: 18,
        base_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(15 * 60),
        crash_after: None,
        ..EngineConfig::default()
    }
}

/// The IdP answers 503 for 10 minutes and Slack is unreachable for an hour, on a simulated
/// clock; meanwhile an agent is requested, a sensitive one too, a live agent is frozen and
/// another rotated. Nothing is lost: during the outage the work waits (no dead letter, no
/// failed workflow), after recovery every workflow completes, and every message people get is
/// delivered exactly once, the security channel's included.
#[tokio::test]
async fn an_idp_and_slack_outage_loses_nothing_and_tells_security_once() {
    let begins = start_time() + chrono::Duration::minutes(10);
    let o = outage_stack(
        outage_config(),
        begins,
        chrono::Duration::minutes(10),
        chrono::Duration::minutes(60),
    );
    let e = &o.st.engine;

    // Before the outage: two live agents.
    e.request_agent(
        request("orders-agent-prod", &["erp:orders:read"]),
        REQUESTER,
    )
    .await
    .unwrap();
    e.request_agent(
        request("inventory-agent-prod", &["erp:inventory:read"]),
        REQUESTER,
    )
    .await
    .unwrap();
    o.run_until(begins).await;
    assert_eq!(
        agent_status(e, "orders-agent-prod").await,
        AgentStatus::Active
    );
    assert_eq!(
        agent_status(e, "inventory-agent-prod").await,
        AgentStatus::Active
    );
    let before = o.channel.sent().len();
    let inventory_secret = e
        .find_agent("inventory-agent-prod")
        .await
        .unwrap()
        .unwrap()
        .secret_version;

    // The outage begins: the IdP answers 503, Slack cannot be reached.
    let billing = e
        .request_agent(
            request("billing-agent-prod", &["erp:orders:read"]),
            REQUESTER,
        )
        .await
        .unwrap();
    let payments = e
        .request_agent(
            request("payments-agent-prod", &["banking:payments:write"]),
            REQUESTER,
        )
        .await
        .unwrap();
    let frozen = e
        .freeze_now("orders-agent-prod", OWNER, "laptop stolen")
        .await
        .unwrap();
    let freeze_wf = frozen.started[0].workflow_id.clone();
    let rotation = e
        .request_rotation(
            "inventory-agent-prod",
            RotationReason::OnDemand { by: OWNER.into() },
            statemachines::Actor::Person(OWNER.into()),
        )
        .await
        .unwrap();
    let orders_client = e
        .find_agent("orders-agent-prod")
        .await
        .unwrap()
        .unwrap()
        .client_id
        .unwrap();

    // Five minutes in: everything waits.
    o.run_until(begins + chrono::Duration::minutes(5)).await;
    let (idp_refusals, channel_refusals) = refused(&o);
    assert!(idp_refusals >= 4 * 5, "the IdP was retried: {idp_refusals}");
    assert!(
        channel_refusals >= 5,
        "Slack was retried: {channel_refusals}"
    );
    assert_eq!(e.queue.dead_letters(10).await.unwrap().len(), 0);
    assert_eq!(
        agent_status(e, "billing-agent-prod").await,
        AgentStatus::Provisioning
    );
    assert_eq!(
        workflow_state(e, &billing.workflow_id).await,
        "Provisioning"
    );
    assert_eq!(
        workflow_state(e, &payments.workflow_id).await,
        "AwaitingApproval"
    );
    assert_eq!(workflow_state(e, &freeze_wf).await, "Containing");
    assert_eq!(workflow_state(e, &rotation.workflow_id).await, "Issuing");
    assert_eq!(o.channel.sent().len(), before, "nothing reached anybody");

    // The IdP is back after 10 minutes; Slack is still down.
    o.run_until(begins + chrono::Duration::minutes(30)).await;
    let (idp_refusals, _) = refused(&o);
    eprintln!(
        "IdP: {idp_refusals} calls answered 503, {} served",
        o.idp.served.load(Ordering::SeqCst)
    );
    assert_eq!(workflow_state(e, &billing.workflow_id).await, "Active");
    assert_eq!(
        agent_status(e, "billing-agent-prod").await,
        AgentStatus::Active
    );
    assert!(
        !o.st
            .idp
            .client(&orders_client)
            .await
            .unwrap()
            .unwrap()
            .active,
        "the frozen agent's client is deactivated once the IdP answers"
    );
    assert_eq!(workflow_state(e, &freeze_wf).await, "AwaitingDecision");
    assert_eq!(workflow_state(e, &rotation.workflow_id).await, "Grace");
    assert_eq!(o.channel.sent().len(), before, "Slack is still down");
    assert_eq!(e.queue.dead_letters(10).await.unwrap().len(), 0);

    // Slack is back after an hour. Retries were up to 15 minutes apart by then (plus jitter):
    // the freeze's question, first tried when the IdP came back, goes out by 82 minutes at worst.
    o.run_until(begins + chrono::Duration::minutes(90)).await;
    let (_, channel_refusals) = refused(&o);
    eprintln!("Slack: {channel_refusals} calls failed during the outage");
    assert_eq!(e.queue.dead_letters(10).await.unwrap().len(), 0);
    let sent: Vec<Sent> = o.channel.sent()[before..].to_vec();
    let payments_approval = open_approval(e, &payments.workflow_id).await;
    let freeze_decision = open_approval(e, &freeze_wf).await;
    for approval in [&payments_approval, &freeze_decision] {
        assert_eq!(
            sent.iter()
                .filter(|s| s.what == "ask" && &s.about == approval)
                .count(),
            1,
            "{approval} is asked once: {sent:#?}"
        );
    }

    // People decide; the freeze's grace and the rotation's grace run out.
    e.decide(&payments_approval, APPROVER, Decision::Approve, None, None)
        .await
        .unwrap();
    e.decide(&freeze_decision, APPROVER, Decision::Approve, None, None)
        .await
        .unwrap();
    o.run_until(begins + chrono::Duration::hours(26)).await;

    for (wf, done) in [
        (&billing.workflow_id, "Active"),
        (&payments.workflow_id, "Active"),
        (&freeze_wf, "Unfrozen"),
        (&rotation.workflow_id, "Done"),
    ] {
        let i = e.store.instance(wf).await.unwrap().unwrap();
        assert_eq!(i.state_name, done, "{wf}");
        assert!(i.terminal && i.pending.is_empty(), "{wf}: {:?}", i.pending);
        let history = e.store.history(wf).await.unwrap();
        assert!(
            history.iter().all(|h| h.rejected.is_none()),
            "{wf}: nothing refused: {history:#?}"
        );
    }
    for name in [
        "orders-agent-prod",
        "inventory-agent-prod",
        "billing-agent-prod",
        "payments-agent-prod",
    ] {
        let a = e.find_agent(name).await.unwrap().unwrap();
        assert_eq!(a.status, AgentStatus::Active, "{name}");
        let c =
            o.st.idp
                .client(a.client_id.as_deref().unwrap())
                .await
                .unwrap()
                .unwrap();
        assert!(c.active, "{name}");
        let mut want = a.scopes.clone();
        want.sort();
        let mut have = c.scopes.clone();
        have.sort();
        assert_eq!(have, want, "{name}");
    }
    let inventory = e.find_agent("inventory-agent-prod").await.unwrap().unwrap();
    assert_ne!(inventory.secret_version, inventory_secret, "rotated");
    assert_eq!(
        o.st.idp
            .secret_ids(inventory.client_id.as_deref().unwrap())
            .await
            .unwrap()
            .len(),
        1,
        "the old secret is removed after the grace period"
    );
    assert_eq!(e.queue.dead_letters(10).await.unwrap().len(), 0);
    assert_eq!(e.queue.depth().await.unwrap(), 0);

    // Every message was delivered once, whatever it took.
    let sent: Vec<Sent> = o.channel.sent()[before..].to_vec();
    let mut counts: BTreeMap<&Sent, usize> = BTreeMap::new();
    for s in &sent {
        *counts.entry(s).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:#?}");
    let security: Vec<&Sent> = sent.iter().filter(|s| s.to_security_channel()).collect();
    eprintln!("delivered after the outage: {sent:#?}");
    assert_eq!(
        security.len(),
        2,
        "the security channel is asked about the sensitive request and the freeze, once each, and told nothing else (no failure): {security:#?}"
    );
    // The owner is told that billing-agent-prod is active, once.
    assert_eq!(
        sent.iter()
            .filter(|s| s.what == "notify"
                && s.to == OWNER
                && s.about.contains("billing-agent-prod"))
            .count(),
        1,
        "{sent:#?}"
    );
}

/// The same outages with the retry budget `steward serve` and the AWS functions ship
/// (`EngineConfig::default()`: 18 attempts, backoff doubling from 200 ms to 15 minutes, about
/// an hour and a half): the IdP down for 10 minutes and Slack for an hour delay the work and
/// lose none of it. The onboarding completes, the kill switch contains the agent and asks its
/// decision, the rotation goes on, and the approvers are asked once. (With the earlier budget of
/// 6 attempts, about 7 seconds, the onboarding and the kill switch failed for good and every
/// notice and ask during the Slack outage was dropped.)
#[tokio::test]
async fn with_the_shipped_retry_budget_an_outage_loses_nothing() {
    let begins = start_time() + chrono::Duration::minutes(10);
    let o = outage_stack(
        EngineConfig {
            crash_after: None,
            ..EngineConfig::default()
        },
        begins,
        chrono::Duration::minutes(10),
        chrono::Duration::minutes(60),
    );
    let e = &o.st.engine;
    e.request_agent(
        request("orders-agent-prod", &["erp:orders:read"]),
        REQUESTER,
    )
    .await
    .unwrap();
    e.request_agent(
        request("inventory-agent-prod", &["erp:inventory:read"]),
        REQUESTER,
    )
    .await
    .unwrap();
    o.run_until(begins).await;
    let before = o.channel.sent().len();

    let billing = e
        .request_agent(
            request("billing-agent-prod", &["erp:orders:read"]),
            REQUESTER,
        )
        .await
        .unwrap();
    let payments = e
        .request_agent(
            request("payments-agent-prod", &["banking:payments:write"]),
            REQUESTER,
        )
        .await
        .unwrap();
    let frozen = e
        .freeze_now("orders-agent-prod", OWNER, "laptop stolen")
        .await
        .unwrap();
    let freeze_wf = frozen.started[0].workflow_id.clone();
    let rotation = e
        .request_rotation(
            "inventory-agent-prod",
            RotationReason::OnDemand { by: OWNER.into() },
            statemachines::Actor::Person(OWNER.into()),
        )
        .await
        .unwrap();
    o.run_until(begins + chrono::Duration::hours(3)).await;

    // Delayed, not lost.
    assert_eq!(workflow_state(e, &billing.workflow_id).await, "Active");
    assert_eq!(workflow_state(e, &freeze_wf).await, "AwaitingDecision");
    assert_ne!(workflow_state(e, &rotation.workflow_id).await, "Failed");
    assert_eq!(
        workflow_state(e, &payments.workflow_id).await,
        "AwaitingApproval"
    );
    assert_eq!(e.queue.dead_letters(10).await.unwrap().len(), 0);

    // What people must hear once Slack is back, once each.
    let sent: Vec<Sent> = o.channel.sent()[before..].to_vec();
    let mut seen = std::collections::HashSet::new();
    for m in &sent {
        assert!(
            seen.insert((m.to.clone(), m.what, m.about.clone())),
            "told twice: {m:?}\n{sent:#?}"
        );
    }
    assert_eq!(
        sent.iter()
            .filter(|s| s.to_security_channel() && s.about.contains("freeze-orders-agent-prod"))
            .count(),
        1,
        "the security channel is asked once about the frozen orders-agent-prod: {sent:#?}"
    );
    assert_eq!(
        sent.iter()
            .filter(|s| s.to == OWNER && s.about.contains("billing-agent-prod is active"))
            .count(),
        1,
        "the owner hears once that billing-agent-prod is active: {sent:#?}"
    );
    let payments_approval = open_approval(e, &payments.workflow_id).await;
    assert_eq!(
        sent.iter()
            .filter(|s| s.what == "ask" && s.about == payments_approval)
            .count(),
        1,
        "the approvers are asked once about payments-agent-prod: {sent:#?}"
    );
}
