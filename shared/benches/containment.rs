//! Time to contain on the embedded default: from an anomaly signal being accepted to the
//! identity provider's token-revocation call, one containment at a time.
//!
//! The stack is the one `steward serve` opens (`Embedded::open`: SQLite store, embedded queue,
//! file vault, development IdP), with the IdP wrapped so the bench sees when the worker calls
//! it. Agents are onboarded through the real path (non-sensitive scope, no approval). Then, for
//! each agent, a refused token request for a scope it was never granted is accepted
//! (`intake::accept`, as the Okta hook and the System Log poller do); the built-in CRITICAL
//! rule `scope-outside-grant` starts a freeze, and the worker (`work_once(32)`, as the server's
//! worker loop) runs its `idp.deactivate_client` and `idp.revoke_tokens` commands. A sample is
//! the wall time from just before `accept` to the revocation call returning.
//!
//!     cargo bench -p shared --bench containment                             # 1,000 agents per level
//!     STEWARD_BENCH_AGENTS=200 cargo bench -p shared --bench containment
//!     STEWARD_BENCH_LEVELS=fsync cargo bench -p shared --bench containment  # default level only

use async_trait::async_trait;
use shared::Secret;
use shared::embedded::Durability;
use shared::engine::executor::Executor;
use shared::idp::dev::DevIdp;
use shared::intake::{Received, accept};
use shared::ports::idp::{
    ClientInfo, ClientSpec, CreatedClient, IdentityProvider, IdpError, NewSecret, TokenRevocation,
};
use shared::signal::Signal;
use shared::wiring::embedded::{Embedded, EmbeddedConfig};
use shared::{Engine, EngineConfig};
use statemachines::{AgentRequest, AgentStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The policy maximum and the default token lifetime: 15 minutes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// A sample that has not contained after this long fails the bench.
const GIVE_UP: Duration = Duration::from_secs(30);

/// When the worker's calls to the IdP returned, per client id.
#[derive(Default)]
struct Calls {
    deactivated: HashMap<String, Instant>,
    revoked: HashMap<String, Instant>,
}

/// The development IdP, delegated to in full, noting when a client was deactivated and when
/// its tokens were revoked (on the call's successful return).
struct RecordingIdp {
    inner: Arc<DevIdp>,
    calls: Arc<Mutex<Calls>>,
}

#[async_trait]
impl IdentityProvider for RecordingIdp {
    async fn create_client(
        &self,
        spec: &ClientSpec,
        idempotency_key: &str,
    ) -> Result<CreatedClient, IdpError> {
        self.inner.create_client(spec, idempotency_key).await
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
        self.inner.set_active(client_id, active).await?;
        if !active {
            let at = Instant::now();
            self.calls
                .lock()
                .expect("calls")
                .deactivated
                .insert(client_id.to_string(), at);
        }
        Ok(())
    }
    async fn client(&self, client_id: &str) -> Result<Option<ClientInfo>, IdpError> {
        self.inner.client(client_id).await
    }
    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        self.inner.list_clients().await
    }
    async fn add_secret(
        &self,
        client_id: &str,
        idempotency_key: &str,
    ) -> Result<NewSecret, IdpError> {
        self.inner.add_secret(client_id, idempotency_key).await
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
        let r = self.inner.revoke_tokens(client_id).await?;
        let at = Instant::now();
        self.calls
            .lock()
            .expect("calls")
            .revoked
            .insert(client_id.to_string(), at);
        Ok(r)
    }
    async fn delete_client(&self, client_id: &str) -> Result<(), IdpError> {
        self.inner.delete_client(client_id).await
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Run {
    samples: Vec<Duration>,
    deactivation: Vec<Duration>,
    setup: Duration,
    wall: Duration,
}

/// The server's worker, driven inline: `work_once(32)`, and while the queue is empty, a wait
/// for its wake-up (at most 200 ms), until `done` holds.
async fn work_until(stack: &Embedded, engine: &Engine, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < GIVE_UP,
            "{what}: not done after {GIVE_UP:?}"
        );
        if engine.work_once(32).await.expect("worker") == 0 {
            let _ = tokio::time::timeout(Duration::from_millis(200), stack.queue.ready.notified())
                .await;
        }
    }
}

async fn run(level: &str, durability: Durability, agents: usize) -> Run {
    let dir = tempfile::tempdir().expect("temporary directory");
    let people = dir.path().join("people.toml");
    std::fs::write(
        &people,
        "[[person]]\nemail = \"alice@example.com\"\nname = \"Alice\"\n",
    )
    .expect("people file");
    let policy = shared::policy_file::parse(
        include_str!("../../policy.example.toml"),
        "policy.example.toml",
    )
    .expect("the example policy is valid");
    let stack = Embedded::open(EmbeddedConfig {
        data_dir: dir.path().join("data"),
        policy,
        people,
        issuer: "http://127.0.0.1:8080".into(),
        durability,
        engine: EngineConfig::default(),
        slack: None,
        okta: None,
        okta_hook_secret: None,
        oauth: None,
        ssf: None,
        okta_directory: false,
        people_issuer: None,
    })
    .expect("the embedded stack");
    let calls = Arc::new(Mutex::new(Calls::default()));
    // The stack's own engine, with the recording IdP in front of the development IdP.
    let engine = Engine {
        transitions: Default::default(),
        store: stack.engine.store.clone(),
        queue: stack.engine.queue.clone(),
        outbox: stack.engine.outbox.clone(),
        directory: stack.engine.directory.clone(),
        clock: stack.engine.clock.clone(),
        executor: Executor {
            idp: Arc::new(RecordingIdp {
                inner: stack.idp.clone(),
                calls: calls.clone(),
            }),
            vault: stack.engine.executor.vault.clone(),
            people: stack.engine.executor.people.clone(),
        },
        policy: stack.engine.policy.clone(),
        config: stack.engine.config.clone(),
    };

    // Setup (not timed): agents onboarded with a non-sensitive scope, so they provision at
    // once and get a client at the development IdP.
    let setup = Instant::now();
    let mut ids = Vec::with_capacity(agents);
    for i in 0..agents {
        let started = engine
            .request_agent(
                AgentRequest {
                    credential: Default::default(),
                    public_key: None,
                    key_custody: Default::default(),
                    csr: None,
                    name: format!("contain{i}-agent-prod"),
                    owner: "alice@example.com".into(),
                    team: "sre".into(),
                    environment: "prod".into(),
                    purpose: "time-to-contain benchmark".into(),
                    scopes: vec!["datadog:metrics:read".into()],
                    token_lifetime_secs: None,
                    expires_on: None,
                },
                "alice@example.com",
            )
            .await
            .expect("onboarding request");
        ids.push(started.agent_id);
    }
    engine.run_until_idle().await.expect("onboarding");
    let mut clients = Vec::with_capacity(agents);
    for id in &ids {
        let agent = engine
            .store
            .agent(id)
            .await
            .expect("store")
            .expect("onboarded agent");
        assert_eq!(
            agent.status,
            AgentStatus::Active,
            "{} is active",
            agent.name
        );
        let client_id = agent.client_id.clone().expect("a client at the IdP");
        assert!(
            stack.idp.client(&client_id).await.expect("idp").is_some(),
            "{client_id} exists at the development IdP"
        );
        clients.push((agent.id, agent.name, client_id));
    }
    let setup = setup.elapsed();

    // Timed: one containment at a time.
    let mut samples = Vec::with_capacity(agents);
    let mut deactivation = Vec::with_capacity(agents);
    let wall = Instant::now();
    for (i, (agent_id, name, client_id)) in clients.iter().enumerate() {
        let event = Received {
            source: "dev-idp",
            event_id: format!("bench-{level}-{i}"),
            event_type: "token.grant".into(),
            subject: client_id.clone(),
            published: Some(engine.clock.now()),
            signal: Some(Signal::TokenGrant {
                client_id: client_id.clone(),
                ip: Some("10.0.0.1".into()),
                grant_type: Some("client_credentials".into()),
                // Never granted to these agents: the CRITICAL `scope-outside-grant` rule.
                requested: vec!["banking:payments:write".into()],
                granted: vec![],
                success: false,
                reason: Some("invalid_scope".into()),
                binding: None,
            }),
        };
        let t0 = Instant::now();
        let accepted = accept(&engine, vec![event]).await.expect("accepting");
        assert_eq!(accepted.new, 1, "the signal is new");
        work_until(&stack, &engine, &format!("containing {name}"), || {
            calls.lock().expect("calls").revoked.contains_key(client_id)
        })
        .await;
        let (revoked, deactivated) = {
            let c = calls.lock().expect("calls");
            (c.revoked[client_id], c.deactivated.get(client_id).copied())
        };
        samples.push(revoked - t0);
        deactivation.push(
            deactivated
                .unwrap_or_else(|| panic!("{name}: tokens revoked but the client not deactivated"))
                - t0,
        );
        // Not timed: the rest of the freeze (the decision ask), so the next sample starts on an
        // empty queue; then the outcome is checked.
        engine.run_until_idle().await.expect("finishing the freeze");
        let agent = engine
            .store
            .agent(agent_id)
            .await
            .expect("store")
            .expect("agent");
        assert_eq!(
            agent.status,
            AgentStatus::Frozen,
            "{name} is frozen after the signal"
        );
        let freezes: Vec<_> = engine
            .store
            .instances_for_agent(agent_id)
            .await
            .expect("store")
            .into_iter()
            .filter(|w| w.kind == "freeze")
            .collect();
        assert!(
            freezes.len() == 1 && freezes[0].state_name == "AwaitingDecision",
            "{name}: one freeze, contained and awaiting a decision (got {:?})",
            freezes
                .iter()
                .map(|w| (&w.id, &w.state_name))
                .collect::<Vec<_>>()
        );
        let client = stack
            .idp
            .client(client_id)
            .await
            .expect("idp")
            .expect("client");
        assert!(!client.active, "{name}: client {client_id} is deactivated");
    }
    let wall = wall.elapsed();
    samples.sort();
    deactivation.sort();
    Run {
        samples,
        deactivation,
        setup,
        wall,
    }
}

fn row(what: &str, level: &str, s: &[Duration]) {
    println!(
        "| {what} | {level} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.5}% |",
        s.len(),
        ms(percentile(s, 0.50)),
        ms(percentile(s, 0.90)),
        ms(percentile(s, 0.99)),
        ms(s.last().copied().unwrap_or_default()),
        percentile(s, 0.99).as_secs_f64() / TOKEN_LIFETIME.as_secs_f64() * 100.0,
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let agents: usize = std::env::var("STEWARD_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let levels = std::env::var("STEWARD_BENCH_LEVELS").unwrap_or_else(|_| "fsync,wal".into());
    println!(
        "time to contain: {agents} agents per level, one containment at a time (embedded default: SQLite store, embedded queue, file vault, development IdP)"
    );
    let mut runs = Vec::new();
    for level in levels.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        let durability = match level {
            "fsync" => Durability::Fsync,
            "wal" => Durability::Wal,
            other => panic!("STEWARD_BENCH_LEVELS: `fsync` or `wal`, not `{other}`"),
        };
        let r = run(level, durability, agents).await;
        println!(
            "{level}: {} containments in {:.1} s (setup {:.1} s), every agent frozen",
            r.samples.len(),
            r.wall.as_secs_f64(),
            r.setup.as_secs_f64()
        );
        runs.push((level.to_string(), r));
    }
    println!();
    println!(
        "| signal accepted → | level | samples | p50 ms | p90 ms | p99 ms | max ms | p99 / 15-min token lifetime |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (level, r) in &runs {
        row("revoke_tokens returned", level, &r.samples);
        row("deactivation returned", level, &r.deactivation);
    }
    println!();
    for (level, r) in &runs {
        let p99 = percentile(&r.samples, 0.99);
        println!(
            "{level}: p99 = {:.2} ms = {:.5}% of a 15-minute token lifetime (1 : {:.0})",
            ms(p99),
            p99.as_secs_f64() / TOKEN_LIFETIME.as_secs_f64() * 100.0,
            TOKEN_LIFETIME.as_secs_f64() / p99.as_secs_f64()
        );
    }
}
