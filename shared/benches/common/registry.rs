//! A large registry for benchmarks, and the kernel's memory figures.
#![allow(dead_code)]

use chrono::{Duration, Utc};
use shared::embedded::Db;
use shared::ports::store::StoreWrite;
use shared::ports::store::{AuditRecord, Commit, HistoryEntry, Instance};
use statemachines::{Actor, Agent, AgentStatus};

/// Peak resident memory since the last reset, measured by the kernel (Linux): writing 5 to
/// /proc/self/clear_refs resets VmHWM to the current RSS, so each phase's peak is its own.
pub fn reset_peak() -> usize {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS (Linux only)");
    rss("VmRSS")
}

pub fn peak() -> usize {
    rss("VmHWM")
}

pub fn rss(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map(|kb| kb * 1024)
        .expect("a memory figure in /proc/self/status")
}

pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn agent(i: usize, now: chrono::DateTime<Utc>) -> Agent {
    let env = ["dev", "staging", "prod"][i % 3];
    // Ages spread over 0..180 days: about half are past the 90-day default.
    let age = Duration::days((i * 7 % 180) as i64) + Duration::minutes((i % 1440) as i64);
    Agent {
        id: format!("agt-{i:08}"),
        name: format!("bench-{i}-agent-{env}"),
        owner: format!("owner{}@example.com", i % 500),
        team: format!("team-{}", i % 40),
        environment: env.into(),
        purpose: "sweep benchmark".into(),
        scopes: vec!["erp:orders:read".into(), "datadog:metrics:read".into()],
        token_lifetime_secs: 900,
        expires_on: None,
        status: if i.is_multiple_of(50) {
            AgentStatus::Denied
        } else {
            AgentStatus::Active
        },
        client_id: Some(format!("0oa{i:010}")),
        secret_version: Some(format!("{:032x}", i)),
        credential_issued_at: Some(now - age),
        requested_by: "bench@example.com".into(),
        created_at: now - age,
        updated_at: now - age,
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

/// Writes the agents in commits of 1,000 (each with a seed workflow instance, as the store's
/// only write path is a workflow commit).
/// An audit record as a workflow's step writes it (`metadata.correlation_uid`).
pub fn workflow_record(workflow: &str, n: usize, at: chrono::DateTime<Utc>) -> AuditRecord {
    let id = format!("{workflow}-r{n}");
    AuditRecord {
        time: at,
        body: serde_json::json!({
            "class_name": "Entity Management", "status": "Success", "status_id": 1,
            "message": format!("step {n} of {workflow}"),
            "metadata": {"uid": id, "correlation_uid": workflow},
            "actor": {"user": {"uid": "steward", "name": "steward"}},
            "unmapped": {"steward_event": "bench_step", "workflow_id": workflow},
        }),
        id,
    }
}

/// A finished workflow of `agent` with `records` audit records: what an agent's page reads.
pub async fn seed_workflow(db: &Db, agent: &str, workflow: &str, records: usize) {
    let now = Utc::now();
    let mut c = commit(workflow, Some(agent), now, vec![]);
    c.audit = (0..records)
        .map(|n| workflow_record(workflow, n, now))
        .collect();
    db.commit(c).await.expect("seeding a workflow");
}

/// A running access-review campaign with an item per agent (70 % still open): what the
/// overview counts and the inbox looks items up in.
pub async fn seed_campaign(db: &Db, agents: usize) {
    use statemachines::review::{Campaign, CampaignScope, Unanswered};
    use statemachines::review_campaign::CampaignState;
    let now = Utc::now();
    let campaign = Campaign {
        id: "bench-q4".into(),
        name: "Bench Q4".into(),
        scope: CampaignScope::default(),
        started_by: Actor::System,
        started_at: now,
        deadline: now + Duration::days(14),
        unanswered: Unanswered::default(),
    };
    let mut c = commit(&Campaign::workflow_id(&campaign.id), None, now, vec![]);
    c.instance.kind = "review_campaign".into();
    c.instance.state_name = "Reviewing".into();
    c.instance.terminal = false;
    c.instance.group = Some("campaigns".into());
    c.instance.state = serde_json::to_value(CampaignState::Reviewing {
        campaign: campaign.clone(),
        items: agents as u64,
    })
    .unwrap();
    db.commit(c).await.expect("seeding a campaign");
    let items: Vec<Commit> = (0..agents)
        .map(|i| {
            let mut c = commit(&campaign.item_id(&format!("agt-{i:08}")), None, now, vec![]);
            c.instance.kind = "review_item".into();
            c.instance.state_name = if i % 10 < 7 { "Open" } else { "Closed" }.into();
            c.instance.group = Some(campaign.id.clone());
            c
        })
        .collect();
    for chunk in items.chunks(500) {
        db.commit_batch(chunk.to_vec())
            .await
            .expect("seeding review items");
    }
}

pub async fn seed(db: &Db, agents: Vec<Agent>) {
    let now = Utc::now();
    for (n, chunk) in agents.chunks(1000).enumerate() {
        db.commit(commit(
            &format!("bench-seed-{n}"),
            None,
            now,
            chunk.to_vec(),
        ))
        .await
        .expect("seeding the registry");
    }
}

fn commit(id: &str, agent: Option<&str>, now: chrono::DateTime<Utc>, agents: Vec<Agent>) -> Commit {
    {
        let id = id.to_string();
        let instance = Instance {
            id: id.clone(),
            kind: "bench".into(),
            agent_id: agent.map(str::to_string),
            state: serde_json::Value::Null,
            state_name: "Seeded".into(),
            terminal: true,
            version: 1,
            pending: vec![],
            applied: vec![],
            request_hash: id.clone(),
            created_at: now,
            updated_at: now,
            group: None,
        };
        Commit {
            instance,
            expected_version: 0,
            history: HistoryEntry {
                seq: 1,
                at: now,
                event_id: "seed".into(),
                event: serde_json::Value::Null,
                actor: Actor::System,
                from: "[*]".into(),
                to: "Seeded".into(),
                commands: vec![],
                rejected: None,
            },
            timers: vec![],
            agents,
            agent_reads: vec![],
            approvals: vec![],
            audit: vec![],
        }
    }
}
