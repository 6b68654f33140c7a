//! The Okta System Log poller against the fake's `/api/v1/logs`: Link-header pagination, the
//! cursor persisted only after a page is applied, a restart resuming exactly where it stopped,
//! a re-read page not applied twice, and the logs rate limit never exceeded.

use super::fake_okta::{API_TOKEN, FakeOkta};
use serde_json::{Value, json};
use shared::Secret;
use shared::embedded::Durability;
use shared::idp::okta::{Okta, OktaAuth, OktaSettings};
use shared::inbound::okta_log::{self, CURSOR};
use shared::wiring::embedded::{Embedded, EmbeddedConfig};
use std::path::Path;

const POLICY: &str = include_str!("../../../policy.example.toml");
const PEOPLE: &str = include_str!("../../../people.example.toml");

fn open(dir: &Path) -> Embedded {
    std::fs::write(dir.join("people.toml"), PEOPLE).unwrap();
    Embedded::open(EmbeddedConfig {
        data_dir: dir.join("data"),
        policy: shared::policy_file::parse(POLICY, "policy.example.toml").unwrap(),
        people: dir.join("people.toml"),
        issuer: "http://127.0.0.1:1".into(),
        durability: Durability::Wal,
        engine: shared::EngineConfig::default(),
        slack: None,
        okta: None,
        okta_hook_secret: None,
        oauth: None,
        ssf: None,
        okta_directory: false,
        people_issuer: None,
    })
    .unwrap()
}

fn okta(fake: &FakeOkta) -> Okta {
    Okta::new(OktaSettings::new(&fake.base, OktaAuth::ApiToken(Secret::new(API_TOKEN))).unwrap())
        .unwrap()
}

/// Okta's documented events, re-stamped: a fresh uuid and a recent `published`.
fn events(n: usize, tag: &str) -> Vec<Value> {
    let dir = format!("{}/fixtures/okta/events", env!("CARGO_MANIFEST_DIR"));
    let kinds = [
        "app.oauth2.as.token.grant.access_token.json",
        "security.threat.detected.json",
        "application.lifecycle.create.json",
        "user.risk.change.json",
        "policy.entity_risk.action.json",
    ];
    (0..n)
        .map(|i| {
            let text =
                std::fs::read_to_string(format!("{dir}/{}", kinds[i % kinds.len()])).unwrap();
            let mut ev: Value = serde_json::from_str(&text).unwrap();
            ev["uuid"] = json!(format!("{tag}-{i}"));
            ev["published"] = json!(chrono::Utc::now().to_rfc3339());
            ev
        })
        .collect()
}

/// The events recorded: token grants as grant evidence (the fixture's client), every other
/// event in the audit trail.
async fn received(stack: &Embedded) -> Vec<String> {
    let audit = stack.engine.store.audit(0, 10_000).await.unwrap();
    let mut got: Vec<String> = audit
        .iter()
        .filter(|a| a.record.body["unmapped"]["steward_event"] == "idp_event_received")
        .map(|a| {
            a.record.body["unmapped"]["event_uid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    for g in stack
        .engine
        .store
        .grants("0oa8x5nsjp8aDUpB70g7", since, 10_000)
        .await
        .unwrap()
    {
        got.push(g.event_id);
    }
    got
}

fn log_queries(fake: &FakeOkta) -> Vec<String> {
    fake.calls_to("GET", "/api/v1/logs")
        .into_iter()
        .map(|c| c.query)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_pages_persists_the_cursor_and_resumes_exactly_after_a_restart() {
    let fake = FakeOkta::start();
    fake.push_log_events(events(5, "first"));
    let dir = tempfile::tempdir().unwrap();
    let okta = okta(&fake);

    let stack = open(dir.path());
    let polled = okta_log::poll(&stack.engine, &okta, 2, 100).await.unwrap();
    assert_eq!(polled.accepted.new, 5, "{polled:?}");
    assert_eq!(polled.pages, 3, "pages of 2, 2 and 1 event(s): {polled:?}");
    let queries = log_queries(&fake);
    assert!(
        queries[0].contains("since="),
        "the first poll starts from a time: {queries:?}"
    );
    assert!(
        queries[1].contains("after=c2") && queries[2].contains("after=c4"),
        "{queries:?}"
    );
    assert_eq!(
        stack.engine.store.cursor(CURSOR).await.unwrap().as_deref(),
        Some("c5")
    );
    let mut got = received(&stack).await;
    got.sort();
    assert_eq!(
        got,
        (0..5).map(|i| format!("first-{i}")).collect::<Vec<_>>()
    );
    drop(stack);

    // Restart: the new process starts at the saved cursor and reads only what is new.
    fake.push_log_events(events(2, "second"));
    let stack = open(dir.path());
    let polled = okta_log::poll(&stack.engine, &okta, 2, 100).await.unwrap();
    assert_eq!(polled.accepted.new, 2, "{polled:?}");
    assert_eq!(polled.accepted.repeated, 0, "{polled:?}");
    let first_after_restart = &log_queries(&fake)[3];
    assert!(
        first_after_restart.contains("after=c5"),
        "{first_after_restart}"
    );
    assert_eq!(received(&stack).await.len(), 7);

    // A crash after applying a page but before saving the cursor re-reads that page: nothing
    // is applied twice.
    stack.engine.store.set_cursor(CURSOR, "c5").await.unwrap();
    let polled = okta_log::poll(&stack.engine, &okta, 2, 100).await.unwrap();
    assert_eq!(
        (polled.accepted.new, polled.accepted.repeated),
        (0, 2),
        "{polled:?}"
    );
    assert_eq!(received(&stack).await.len(), 7);
    assert_eq!(
        stack.engine.store.cursor(CURSOR).await.unwrap().as_deref(),
        Some("c7")
    );

    // Caught up: one empty page, the cursor stays.
    let polled = okta_log::poll(&stack.engine, &okta, 2, 100).await.unwrap();
    assert_eq!((polled.pages, polled.accepted.new), (1, 0));
    fake.assert_well_formed();
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_respects_the_logs_rate_limit() {
    let fake = FakeOkta::start();
    fake.set_rate_limit("logs", 2, 1);
    fake.push_log_events(events(8, "rl"));
    let dir = tempfile::tempdir().unwrap();
    let stack = open(dir.path());
    let polled = okta_log::poll(&stack.engine, &okta(&fake), 1, 100)
        .await
        .unwrap();
    assert_eq!(polled.accepted.new, 8);
    assert_eq!(
        fake.rate_limited(),
        0,
        "the poller waited instead of being refused"
    );
    for (window, count) in fake.arrivals("logs") {
        assert!(count <= 2, "{count} log requests in window {window}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_event_is_audited_and_does_not_stop_the_poll() {
    let fake = FakeOkta::start();
    let mut evs = events(3, "mixed");
    evs[1]["uuid"] = Value::Null;
    fake.push_log_events(evs);
    let dir = tempfile::tempdir().unwrap();
    let stack = open(dir.path());
    let polled = okta_log::poll(&stack.engine, &okta(&fake), 10, 100)
        .await
        .unwrap();
    assert_eq!(
        (polled.accepted.new, polled.unreadable),
        (2, 1),
        "{polled:?}"
    );
    let audit = stack.engine.store.audit(0, 100).await.unwrap();
    assert!(audit.iter().any(|a| {
        a.record.body["status"] == "Failure"
            && a.record.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("has no uuid")
    }));
}
