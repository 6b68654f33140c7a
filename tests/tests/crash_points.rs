//! Crash points: the process dies at each point between receive, step, commit, send and ack,
//! a new process opens the same data, and every workflow completes exactly once. On the
//! embedded default (SQLite) and on AWS (DynamoDB and SQS on moto).
//!
//! A crash point (`fail::fail_point!`, compiled in through shared's `failpoints` feature)
//! panics the task that runs the engine: everything in flight in that "process" is dropped,
//! an open SQLite transaction rolls back, and only what was written survives, as after a
//! `kill -9`. For every point, the test crashes at its 1st, 2nd, … hit until the scenario
//! runs through without reaching it.

#[path = "aws/moto.rs"]
#[allow(dead_code)] // only part of the helpers is used here
mod moto;

use shared::EngineConfig;
use shared::embedded::{Db, Durability};
use shared::engine::Engine;
use shared::idp::dev::DevIdp;
use shared::people_file::PeopleFileDirectory;
use shared::ports::IdentityProvider;
use shared::wiring::aws::{AwsSettings, AwsStack, LoggedChannel, Parts};
use shared::wiring::embedded::{Embedded, EmbeddedConfig};
use statemachines::{AgentRequest, AgentStatus, Decision};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Every crash point in the engine's path from a request or a receive to the ack.
const POINTS: &[&str] = &[
    "engine::after_receive",
    "executor::after_effect",
    "engine::before_write",
    "outbox::after_commit",
    "outbox::after_send",
    "engine::after_write",
];

/// Failpoints are process-wide: one scenario at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

const OWNER: &str = "alice@example.com";
const APPROVER: &str = "sam.security@example.com";
/// Needs an approval (sensitive scope): stays active.
const KEPT: &str = "payments-agent-prod";
/// Needs none: onboarded, then decommissioned (which a security approver approves).
const RETIRED: &str = "orders-agent-prod";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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
        purpose: "crash-point tests".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        token_lifetime_secs: Some(600),
        expires_on: None,
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        // A message the dead process held comes back soon (SQS; SQLite recovers at open).
        visibility: Duration::from_secs(1),
        dispatch_check: Duration::from_millis(300),
        crash_after: None,
        ..EngineConfig::default()
    }
}

/// One "process": an engine on the environment's data, and the IdP it governs.
struct Process {
    engine: Arc<Engine>,
    idp: Arc<dyn IdentityProvider>,
}

/// Where the data lives between processes.
enum Env {
    Sqlite {
        dir: tempfile::TempDir,
    },
    Aws {
        dir: tempfile::TempDir,
        settings: AwsSettings,
    },
}

impl Env {
    fn sqlite() -> Self {
        Env::Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn aws() -> Self {
        let sdk = moto::sdk().await;
        let table = moto::fresh_table(&sdk).await;
        let queue = moto::fresh_queue(&sdk, 10, Duration::from_secs(1)).await;
        Env::Aws {
            dir: tempfile::tempdir().unwrap(),
            settings: AwsSettings {
                vault: shared::wiring::aws::VaultKind::SecretsManager,
                table,
                queue_url: queue.url().to_string(),
                secret_prefix: format!("{}/agents/", moto::unique("steward")),
                kms_key_id: None,
                endpoint: Some(moto::endpoint()),
                rotation_function_arn: None,
            },
        }
    }

    fn policy() -> statemachines::Policy {
        shared::policy_file::load(&repo().join("policy.example.toml")).unwrap()
    }

    /// Starts a process: opens everything anew, as after a restart.
    async fn open(&self) -> Process {
        match self {
            Env::Sqlite { dir } => {
                let s = Embedded::open(EmbeddedConfig {
                    data_dir: dir.path().join("data"),
                    policy: Self::policy(),
                    people: repo().join("people.example.toml"),
                    issuer: "http://127.0.0.1:1".into(),
                    // A process crash keeps what WAL mode wrote (fsync guards power loss).
                    durability: Durability::Wal,
                    engine: config(),
                    slack: None,
                    okta: None,
                    okta_hook_secret: None,
                    oauth: None,
                    ssf: None,
                    okta_directory: false,
                    people_issuer: None,
                })
                .unwrap();
                Process {
                    engine: s.engine,
                    idp: s.idp,
                }
            }
            Env::Aws { dir, settings } => {
                let db = Arc::new(Db::open(&dir.path().join("idp.db"), Durability::Wal).unwrap());
                let idp = Arc::new(
                    DevIdp::open(db, &dir.path().join("idp.pem"), "http://127.0.0.1:1").unwrap(),
                );
                let people = std::fs::read_to_string(repo().join("people.example.toml")).unwrap();
                let parts = Parts {
                    policy: Self::policy(),
                    directory: Arc::new(PeopleFileDirectory::parse(&people).unwrap()),
                    idp: idp.clone(),
                    people: Arc::new(LoggedChannel),
                    slack: None,
                    engine: config(),
                };
                let stack = AwsStack::connect(settings, parts).await.unwrap();
                Process {
                    engine: stack.engine,
                    idp,
                }
            }
        }
    }
}

/// What a user and the service do: request two agents, approve what waits, decommission one
/// once it is active; the worker and the tick run meanwhile. Re-run from the top after a
/// crash, as a client retries a request that got no answer: identical requests are
/// recognised, and a decision already made is refused without changing anything.
async fn scenario(p: Process) {
    let e = &p.engine;
    e.request_agent(request(KEPT, &["banking:payments:write"]), OWNER)
        .await
        .unwrap();
    e.request_agent(request(RETIRED, &["erp:orders:read"]), OWNER)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        e.tick().await.unwrap();
        e.run_until_idle().await.unwrap();
        for a in e.store.approvals(true).await.unwrap() {
            // A decision sent before a crash may be applied already: refused then, harmless.
            let _ = e
                .decide(&a.request.id, APPROVER, Decision::Approve, None, None)
                .await;
        }
        let retired = e.store.agent_by_name(RETIRED).await.unwrap();
        if let Some(a) = &retired
            && a.status == AgentStatus::Active
        {
            let _ = e.request_decommission(RETIRED, OWNER, "retired").await;
        }
        if settled(&p).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the workflows did not complete: {}",
            describe(e).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Both agents where the scenario leads, every workflow at rest, nothing pending or queued.
async fn settled(p: &Process) -> bool {
    let e = &p.engine;
    let status = |name: &'static str| async move {
        e.store.agent_by_name(name).await.unwrap().map(|a| a.status)
    };
    if status(KEPT).await != Some(AgentStatus::Active)
        || status(RETIRED).await != Some(AgentStatus::Decommissioned)
    {
        return false;
    }
    for name in [KEPT, RETIRED] {
        let agent = e.store.agent_by_name(name).await.unwrap().unwrap();
        for i in e.store.instances_for_agent(&agent.id).await.unwrap() {
            if !i.terminal || !i.pending.is_empty() {
                return false;
            }
        }
    }
    e.queue.depth().await.unwrap() == 0
}

async fn describe(e: &Engine) -> String {
    let mut out = Vec::new();
    for name in [KEPT, RETIRED] {
        let Some(agent) = e.store.agent_by_name(name).await.unwrap() else {
            out.push(format!("{name}: no record"));
            continue;
        };
        out.push(format!("{name}: {}", agent.status.as_str()));
        for i in e.store.instances_for_agent(&agent.id).await.unwrap() {
            let pending: Vec<_> = i.pending.iter().map(|p| p.key.as_str()).collect();
            out.push(format!("  {} {} pending {pending:?}", i.id, i.state_name));
        }
    }
    out.push(format!("queue depth {}", e.queue.depth().await.unwrap()));
    out.join("\n")
}

/// Exactly once: one client for the kept agent and none left for the retired one, every
/// command of every workflow completed once, nothing failed, nothing dead-lettered.
async fn check_exactly_once(p: &Process, case: &str) {
    let e = &p.engine;
    let clients = p.idp.list_clients().await.unwrap();
    let named = |n: &str| clients.iter().filter(|c| c.name == n).count();
    assert_eq!(named(KEPT), 1, "{case}: one client for {KEPT}: {clients:?}");
    assert_eq!(named(RETIRED), 0, "{case}: {RETIRED}'s client deleted");
    for name in [KEPT, RETIRED] {
        let agent = e.store.agent_by_name(name).await.unwrap().unwrap();
        for i in e.store.instances_for_agent(&agent.id).await.unwrap() {
            let history = e.store.history(&i.id).await.unwrap();
            let mut done: Vec<&str> = history
                .iter()
                .filter(|h| h.event_id.starts_with("done:"))
                .map(|h| h.event_id.as_str())
                .collect();
            let n = done.len();
            done.sort();
            done.dedup();
            assert_eq!(
                n,
                done.len(),
                "{case}: a command of {} completed twice",
                i.id
            );
            assert!(
                !history
                    .iter()
                    .any(|h| h.event.to_string().contains("command_failed")),
                "{case}: a command of {} failed: {history:?}",
                i.id
            );
            // Every external command a step emitted was completed.
            let emitted: usize = history
                .iter()
                .filter(|h| h.rejected.is_none())
                .map(|h| {
                    h.commands
                        .iter()
                        .filter(|c| !LOCAL_COMMANDS.contains(&c.as_str()))
                        .count()
                })
                .sum();
            assert_eq!(
                n, emitted,
                "{case}: {} emitted {emitted} commands and completed {n}: {:?}",
                i.id, history
            );
        }
    }
    assert_eq!(e.store.approvals(true).await.unwrap().len(), 0, "{case}");
    assert!(
        e.queue.dead_letters(10).await.unwrap().is_empty(),
        "{case}: dead letters: {:?}",
        e.queue.dead_letters(10).await.unwrap()
    );
}

/// Commands written with the step itself (no queue message, no completion).
const LOCAL_COMMANDS: &[&str] = &[
    "timer.set",
    "timer.cancel",
    "agent.save",
    "agent.update",
    "audit",
];

/// Runs the scenario in its own task ("process"): `true` if it crashed.
async fn run_process(env: &Env) -> bool {
    let p = env.open().await;
    let task = tokio::spawn(scenario(p));
    match task.await {
        Ok(()) => false,
        Err(e) if e.is_panic() => {
            let why = e.into_panic();
            let why = why
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| why.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(
                why.contains("fail point") || why.contains("failpoint") || why.is_empty(),
                "the process died of something else than the crash point: {why}"
            );
            true
        }
        Err(e) => panic!("{e}"),
    }
}

/// The crash points' panics are expected: their messages and backtraces would bury the
/// output. Any other panic is reported as usual.
fn quiet_crash_points() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if !msg.contains("failpoint") {
                default(info);
            }
        }));
    });
}

/// Crashes at every hit of every point (`next` = hit + 1), or at a spread of hits (hit × 2)
/// where each run costs a visibility timeout (SQS).
async fn matrix(make: impl AsyncFn() -> Env, store: &str, next: fn(u32) -> u32) {
    let _serial = SERIAL.lock().await;
    quiet_crash_points();
    let scenario_fail = fail::FailScenario::setup();
    let mut crashes = 0;
    for point in POINTS {
        let mut hit = 1;
        loop {
            let env = make().await;
            // Off for hit-1 passes, then one panic, then off: the k-th hit dies.
            fail::cfg(*point, &format!("{}*off->1*panic->off", hit - 1)).unwrap();
            let crashed = run_process(&env).await;
            fail::remove(*point);
            let case = format!("{store}: crash at {point}, hit {hit}");
            if crashed {
                crashes += 1;
                // The restart: a new process on the same data finishes the work.
                assert!(!run_process(&env).await, "{case}: the restart crashed");
            }
            let p = env.open().await;
            check_exactly_once(&p, &case).await;
            if !crashed {
                // The scenario ran through without reaching this hit: next point.
                assert!(hit > 1, "{case}: the point was never reached");
                break;
            }
            hit = next(hit);
        }
    }
    scenario_fail.teardown();
    eprintln!("{store}: {crashes} crashes, each recovered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_recovers_exactly_once_on_sqlite() {
    matrix(async || Env::sqlite(), "sqlite", |hit| hit + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_recovers_exactly_once_on_aws() {
    matrix(Env::aws, "aws", |hit| hit * 2).await;
}
