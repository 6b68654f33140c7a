//! Load on the DynamoDB store: `workers` concurrent workers commit the steps of `agents`
//! agents, three steps each as an onboarding writes them (the instance with its history, the
//! agent record, a timer, audit records), and count the retries per item key. Run as a test
//! by `tests/run` (500 agents) and as a bench at full size
//! (`cargo bench -p steward-e2e --bench aws_load`, docs/BENCHMARKS.md).

use chrono::{TimeZone, Utc};
use serde_json::Value;
use serde_json::json;
use shared::aws::dynamodb::DynamoStore;
use shared::ports::store::{
    AuditRecord, Commit, HistoryEntry, Instance, StoreWrite, Timer, TimerChange,
};
use statemachines::{Actor, Agent, AgentStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn audit(id: String, agent: &str, what: &str) -> AuditRecord {
    let time = Utc::now();
    AuditRecord {
        id,
        time,
        body: json!({"class_uid": 3004, "message": what, "agent": agent, "time": time.timestamp_millis()}),
    }
}

fn agent(i: usize, status: AgentStatus, v: i64) -> Agent {
    let at = Utc.timestamp_opt(1_790_000_000 + v, 0).unwrap();
    Agent {
        id: format!("agt-load-{i}"),
        name: format!("load-{i}-agent-prod"),
        owner: format!("owner-{}@example.com", i % 500),
        team: "sre".into(),
        environment: "prod".into(),
        purpose: "load".into(),
        scopes: vec!["erp:orders:read".into()],
        token_lifetime_secs: 900,
        expires_on: None,
        status,
        client_id: None,
        secret_version: None,
        credential_issued_at: None,
        requested_by: "bob@example.com".into(),
        created_at: at,
        updated_at: at,
        flags: vec![],
        credentials: vec![],
        credential_kind: Default::default(),
        key_custody: Default::default(),
        token_binding: Default::default(),
        keys: vec![],
        csr: None,
        certificates: vec![],
        decommission: None,
        last_review: None,
    }
}

/// Step `v` (1..=3) of agent `i`'s onboarding.
fn step(i: usize, v: u64) -> Commit {
    let id = format!("onboarding-load-{i}");
    let states = ["[*]", "Provisioning", "Verifying", "Active"];
    let now = Utc::now();
    let status = match v {
        1 => AgentStatus::Provisioning,
        _ => AgentStatus::Active,
    };
    Commit {
        instance: Instance {
            id: id.clone(),
            kind: "onboarding".into(),
            agent_id: Some(format!("agt-load-{i}")),
            state: json!({"state": states[v as usize]}),
            state_name: states[v as usize].into(),
            terminal: v == 3,
            version: v,
            pending: vec![],
            applied: (1..=v).map(|n| format!("ev-{n}")).collect(),
            request_hash: format!("hash-{i}"),
            created_at: now,
            updated_at: now,
            group: None,
        },
        expected_version: v - 1,
        history: HistoryEntry {
            seq: v,
            at: now,
            event_id: format!("ev-{v}"),
            event: json!({"type": "load", "seq": v}),
            actor: Actor::Person("alice@example.com".into()),
            from: states[v as usize - 1].into(),
            to: states[v as usize].into(),
            commands: vec![],
            rejected: None,
        },
        timers: match v {
            1 => vec![TimerChange::Set(Timer {
                workflow_id: id.clone(),
                name: "verify".into(),
                due_at: now + chrono::Duration::hours(1),
            })],
            3 => vec![TimerChange::Cancel {
                workflow_id: id.clone(),
                name: "verify".into(),
            }],
            _ => vec![],
        },
        agents: vec![agent(i, status, v as i64)],
        agent_reads: vec![],
        approvals: vec![],
        audit: (0..if v == 1 { 2 } else { 1 })
            .map(|n| audit(format!("load-{i}-{v}-{n}"), &id, "step"))
            .collect(),
    }
}

/// What a run measured.
pub struct Load {
    pub commits: usize,
    pub retries: u64,
    /// The most retried keys, most first.
    pub hottest: Vec<(String, u64)>,
    pub report: Value,
}

impl Load {
    /// A hot item: the most retried key made more than 10 % of all retries, or commits were
    /// retried more than once on average. Workflows hash to 256 audit shards, so by chance
    /// the fullest shard holds about 7 of 500 agents where the average is 2, and conflicts
    /// grow with the square of a shard's writers: that shard alone expects about 3 % of the
    /// retries, and timing on a loaded machine has pushed it past 5 %. One item every writer
    /// shares (the storm this looks for) takes far more than 10 %.
    pub fn storm(&self) -> Option<String> {
        let limit = (self.retries / 10).max(20);
        if let Some((key, n)) = self.hottest.first().filter(|(_, n)| *n > limit) {
            return Some(format!(
                "{key} made {n} commits retry, more than {limit} (10 % of {} retries)",
                self.retries
            ));
        }
        (self.retries as usize > self.commits).then(|| {
            format!(
                "{} retries for {} commits: more than one each",
                self.retries, self.commits
            )
        })
    }
}

/// Runs the load on a fresh table at `endpoint`; checks the audit trail afterwards.
pub async fn run(endpoint: &str, workers: usize, agents: usize) -> Load {
    let sdk = shared::aws::sdk_config(Some(endpoint)).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("steward-load-{}", hex::encode(rand::random::<[u8; 4]>()));
    DynamoStore::create_table(&client, &table).await.unwrap();
    let store = Arc::new(DynamoStore::new(client, &table));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= agents {
                    return latencies;
                }
                for v in 1..=3 {
                    let t = Instant::now();
                    store.commit(step(i, v)).await.expect("commit");
                    latencies.push(t.elapsed());
                }
            }
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    let commits = latencies.len();
    let contention = store.contention();
    let retries: u64 = contention.values().sum();
    let mut hottest: Vec<(String, u64)> = contention.into_iter().collect();
    hottest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // moto answers one request at a time and slows down as the table grows: the
    // verification's reads get a deadline fit for it (the functions keep theirs).
    let patient = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(600))
                .operation_attempt_timeout(Duration::from_secs(300))
                .build(),
        )
        .build();
    let reader = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(patient), &table);
    let verify_started = Instant::now();
    let verified = reader
        .verify_audit()
        .await
        .expect("the audit trail verifies");
    let verify_seconds = verify_started.elapsed().as_secs_f64();
    assert_eq!(
        verified.records as usize,
        agents * 4,
        "every audit record is on the trail"
    );
    let report = json!({
        "workers": workers,
        "agents": agents,
        "commits": commits,
        "seconds": elapsed.as_secs_f64(),
        "commits_per_second": commits as f64 / elapsed.as_secs_f64(),
        "commit_ms_p50": pct(0.5).as_secs_f64() * 1000.0,
        "commit_ms_p99": pct(0.99).as_secs_f64() * 1000.0,
        "retries": retries,
        "keys_retried": hottest.len(),
        "hottest_keys": hottest.iter().take(5).map(|(k, n)| json!({"key": k, "retries": n})).collect::<Vec<_>>(),
        "audit_records_verified": verified.records,
        "audit_checkpoints": verified.checkpoints,
        "verify_seconds": verify_seconds,
    });
    Load {
        commits,
        retries,
        hottest,
        report,
    }
}
