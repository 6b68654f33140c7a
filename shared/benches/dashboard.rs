//! The dashboard's pages over a large embedded default: 100,000 agents, 5,000,000 token
//! grants, 1,000,000 audit records and a running campaign of 100,000 items in SQLite, each page rendered through the router (session check, role check, reads,
//! HTML) as a signed-in security approver asks for it. p50 and p95 per page, and the process's
//! peak resident memory measured by the kernel.
//!
//!     cargo bench -p shared --features http --bench dashboard
//!     STEWARD_BENCH_AGENTS=20000 STEWARD_BENCH_GRANTS=500000 STEWARD_BENCH_AUDIT=200000 cargo bench -p shared --features http --bench dashboard

mod common;

use axum::body::Body;
use chrono::{Duration, Utc};
use common::registry::{agent, mib, peak, reset_peak, seed};
use shared::ports::Sessions;
use shared::ports::sessions::Session;
use shared::ports::store::{GrantEvidence, StoreWrite};
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceExt;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let agents = env("STEWARD_BENCH_AGENTS", 100_000);
    let grants = env("STEWARD_BENCH_GRANTS", 5_000_000);
    let runs = env("STEWARD_BENCH_RUNS", 40);
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = shared::policy_file::parse(
        &std::fs::read_to_string(root.join("policy.example.toml")).unwrap(),
        "policy.example.toml",
    )
    .unwrap();
    let stack =
        shared::wiring::embedded::Embedded::open(shared::wiring::embedded::EmbeddedConfig {
            data_dir: dir.path().to_path_buf(),
            policy,
            people: root.join("people.example.toml"),
            issuer: "http://127.0.0.1:8080".into(),
            durability: shared::embedded::Durability::Wal,
            engine: Default::default(),
            slack: None,
            okta: None,
            okta_hook_secret: None,
            oauth: None,
            ssf: None,
            okta_directory: false,
            people_issuer: None,
        })
        .expect("the embedded default");

    let now = Utc::now();
    let t = Instant::now();
    seed(&stack.db, (0..agents).map(|i| agent(i, now)).collect()).await;
    let seeded_agents = t.elapsed();
    let t = Instant::now();
    let batch = 20_000;
    let mut written = 0;
    while written < grants {
        let chunk: Vec<GrantEvidence> = (written..(written + batch).min(grants))
            .map(|i| {
                let client = i % agents;
                GrantEvidence {
                    event_id: format!("g{i:09}"),
                    source: "dev-idp".into(),
                    client_id: format!("0oa{client:010}"),
                    at: now - Duration::seconds((i % 86_400) as i64),
                    ip: Some(format!("10.0.{}.{}", client % 250, i % 250)),
                    requested: vec!["erp:orders:read".into()],
                    granted: vec!["erp:orders:read".into()],
                    success: i % 97 != 0,
                    reason: None,
                }
            })
            .collect();
        stack
            .db
            .record_grants(&chunk)
            .await
            .expect("seeding grants");
        written += chunk.len();
    }
    let seeded_grants = t.elapsed();
    // Every agent's last token (its scopes' use), and an audit trail of `records` records
    // over as many workflows as agents; the agent on the bench's agent page has 12 workflows.
    let t = Instant::now();
    for i in 0..agents {
        stack
            .db
            .record_scope_usage(
                &format!("0oa{i:010}"),
                &["erp:orders:read".to_string()],
                now - Duration::seconds((i % 86_400) as i64),
            )
            .await
            .expect("seeding scope usage");
    }
    let records = env("STEWARD_BENCH_AUDIT", 1_000_000);
    let mut written = 0;
    while written < records {
        let chunk: Vec<_> = (written..(written + 1000).min(records))
            .map(|i| common::registry::workflow_record(&format!("wf-{:08}", i % agents), i, now))
            .collect();
        written += chunk.len();
        stack
            .db
            .append_audit(chunk)
            .await
            .expect("seeding the trail");
    }
    let one_id = format!("agt-{:08}", agents / 2 + 1);
    for w in 0..12 {
        common::registry::seed_workflow(&stack.db, &one_id, &format!("wf-one-{w}"), 8).await;
    }
    common::registry::seed_campaign(&stack.db, agents).await;
    let seeded_trail = t.elapsed();
    println!(
        "seeded {agents} agents in {:.0} s, {grants} grants in {:.0} s, scope use, {records} audit records and a campaign of {agents} items in {:.0} s",
        seeded_agents.as_secs_f64(),
        seeded_grants.as_secs_f64(),
        seeded_trail.as_secs_f64()
    );
    // The posture summary the sweep would have kept.
    stack
        .engine
        .record_posture()
        .await
        .expect("posture summary");

    let dashboard = shared::dashboard::Dashboard::new(
        "http://127.0.0.1:8080",
        stack.people_tokens.clone(),
        shared::dashboard::CLIENT_ID,
        stack.db.clone(),
    )
    .unwrap();
    let session_id = "bench-session-id-0123456789abcdefghijklmnopqrstuvwxyz";
    stack
        .db
        .put_session(&Session {
            digest: shared::dashboard::session::digest(session_id),
            person: "sam.security@example.com".into(),
            csrf: "bench".into(),
            created_at: now,
            seen_at: now,
            expires_at: now + Duration::hours(12),
        })
        .await
        .unwrap();
    let app = shared::http::App::new(shared::http::AppParts {
        engine: stack.engine.clone(),
        auth: Arc::new(shared::http::AdminToken(shared::Secret::new("unused"))),
        tokens: stack.db.clone(),
        slack: None,
        okta_hook_secret: None,
        ssf: None,
        local: None,
        dashboard: Some(Arc::new(dashboard)),
    });
    let router = shared::http::router(app);
    let cookie = format!("steward_session={session_id}");
    // Page 500 of the prod agents (a third of the registry): after the 75,000th agent.
    let page_500 = format!(
        "/agents?env=prod&after=agt-{:08}",
        (agents * 3 / 4).min(agents - 1)
    );
    let one = format!("/agents/{one_id}");
    let pages = [
        ("overview", "/".to_string()),
        ("inventory, page 1", "/agents".to_string()),
        ("inventory, page 500 of a filter (env=prod)", page_500),
        (
            "agent page (24 h of grants, 12 workflows, 96 audit records)",
            one,
        ),
    ];
    // The pages' own peak: the seeding above is not the server's.
    let base = reset_peak();
    println!("| page ({agents} agents, {grants} grants) | p50 ms | p95 ms | bytes |");
    println!("|---|---:|---:|---:|");
    for (name, path) in &pages {
        let mut times = Vec::with_capacity(runs);
        let mut bytes = 0;
        for _ in 0..runs {
            let request = axum::http::Request::get(path.as_str())
                .header("cookie", &cookie)
                .body(Body::empty())
                .unwrap();
            let t = Instant::now();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = body.len();
        }
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!("| {name} | {:.1} | {:.1} | {bytes} |", pct(0.5), pct(0.95));
    }
    println!(
        "RSS: {:.0} MiB when the pages start (the seeded database's cache included), peak {:.0} MiB while serving them",
        mib(base),
        mib(peak())
    );
}
