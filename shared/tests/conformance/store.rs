//! The store port's contract: conditional, atomic step writes; ordered history; timers; the
//! agent registry; approvals; the hash-chained audit trail; group commit; durability.
//!
//! Every property expects fresh, empty backing storage.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use shared::audit::chain_hash;
use shared::ports::Store;
use shared::ports::store::{
    AgentOrder, ApprovalChange, ApprovalRecord, AuditRecord, ChainedAudit, Commit, GrantEvidence,
    HistoryEntry, Instance, PendingCommand, PostedMessage, StoreError, Timer, TimerChange,
};
use statemachines::{Actor, Agent, AgentStatus, ApprovalOutcome, ApprovalRequest, Command, Vote};
use std::sync::Arc;

/// Opens a handle on one backing storage; calling it again (after dropping the previous handle)
/// opens the same storage anew.
pub type Opener = Box<dyn Fn() -> Arc<dyn Store> + Send + Sync>;

/// Runs every property, each on fresh storage from `fresh`.
pub async fn run_store_suite(fresh: impl Fn() -> Opener) {
    create_with_version_zero(&*fresh()()).await;
    update_bumps_version(&*fresh()()).await;
    stale_version_conflicts_and_writes_nothing(&*fresh()()).await;
    history_in_seq_order(&*fresh()()).await;
    timers_set_cancel_rearm(&*fresh()()).await;
    due_timers_respects_now_and_limit(&*fresh()()).await;
    agents_upsert_and_lookup(&*fresh()()).await;
    a_stale_agent_read_conflicts_and_writes_nothing(&*fresh()()).await;
    approvals_open_close_and_filter(&*fresh()()).await;
    approval_votes_and_messages_are_kept(&*fresh()()).await;
    audit_is_hash_chained_and_pages(&*fresh()()).await;
    a_workflows_audit_records_newest_first(&*fresh()()).await;
    commit_batch_rolls_back_conflicts_alone(&*fresh()()).await;
    inbound_ids_are_remembered(&*fresh()()).await;
    cursors_are_kept_by_name(&*fresh()()).await;
    groups_scope_usage_and_messages(&*fresh()()).await;
    clients_and_baselines(&*fresh()()).await;
    an_intake_batch_is_written_whole(&*fresh()()).await;
    grants_are_evidence_kept_once_and_read_by_client(&*fresh()()).await;
    agents_are_found_through_their_indexes(&*fresh()()).await;
    counts_for_the_overview(&*fresh()()).await;
    survives_reopen(&fresh()).await;
}

/// What the dashboard reads: agents by status, the registry in each order a page at a time, and
/// (where the store keeps them together) token grants per hour.
pub async fn counts_for_the_overview(s: &dyn Store) {
    let mut c = step("wf-counts", 1);
    c.agents = (0..7)
        .map(|i| {
            let status = match i {
                0..=3 => AgentStatus::Active,
                4 | 5 => AgentStatus::Frozen,
                _ => AgentStatus::Unregistered,
            };
            let mut a = agent(&format!("agt-c{i}"), &format!("c{i}-agent-prod"), status, 1);
            a.credential_issued_at = Some(at(0) - chrono::Duration::days(10 * i as i64));
            a.owner = ["Bob@example.com", "alice@example.com", "carol@example.com"][i % 3].into();
            a
        })
        .collect();
    s.commit(c).await.unwrap();
    if let Some(counts) = s.agent_counts().await.unwrap() {
        assert_eq!(counts.get("active"), Some(&4), "{counts:?}");
        assert_eq!(counts.get("frozen"), Some(&2), "{counts:?}");
        assert_eq!(counts.get("unregistered"), Some(&1), "{counts:?}");
        assert_eq!(counts.values().sum::<u64>(), 7);
    }
    // Workflows by kind and state since a time (failing rotations), and a group's instances by
    // state (a campaign's progress), where the store counts them.
    for (id, kind, state, group) in [
        ("rot-1", "rotation", "RetryWait", None),
        ("rot-2", "rotation", "Failed", None),
        ("rot-3", "rotation", "Failed", None),
        ("onb-1", "onboarding", "Failed", None),
        ("item-1", "review_item", "Open", Some("campaign-c")),
        ("item-2", "review_item", "Open", Some("campaign-c")),
        ("item-3", "review_item", "Closed", Some("campaign-c")),
        ("item-4", "review_item", "Open", Some("campaign-d")),
    ] {
        let mut c = step(id, 1);
        c.instance.kind = kind.into();
        c.instance.state_name = state.into();
        c.instance.group = group.map(str::to_string);
        s.commit(c).await.unwrap();
    }
    if let Some(n) = s
        .count_workflows("rotation", "Failed", at(0))
        .await
        .unwrap()
    {
        assert_eq!(n, 2);
        let retrying = s.count_workflows("rotation", "RetryWait", at(0)).await;
        assert_eq!(retrying.unwrap(), Some(1));
        let later = s.count_workflows("rotation", "Failed", at(1000)).await;
        assert_eq!(later.unwrap(), Some(0), "only those written since");
    }
    if let Some(states) = s.group_states("campaign-c").await.unwrap() {
        assert_eq!(states.get("Open"), Some(&2), "{states:?}");
        assert_eq!(states.get("Closed"), Some(&1), "{states:?}");
        assert_eq!(states.values().sum::<u64>(), 3);
    }

    // Pages in each order, a cursor (the last agent's sort key and id) at a time.
    for order in [
        AgentOrder::Id,
        AgentOrder::Name,
        AgentOrder::Status,
        AgentOrder::Owner,
    ] {
        let mut seen: Vec<String> = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let page = s
                .agents_ordered(
                    order,
                    after.as_ref().map(|(k, i)| (k.as_str(), i.as_str())),
                    3,
                )
                .await
                .unwrap();
            seen.extend(page.iter().map(|a| a.id.clone()));
            match page.last() {
                Some(last) if page.len() == 3 => after = Some((order.key(last), last.id.clone())),
                _ => break,
            }
        }
        let mut all = s.agents().await.unwrap();
        all.sort_by(|a, b| (order.key(a), &a.id).cmp(&(order.key(b), &b.id)));
        let want: Vec<String> = all.iter().map(|a| a.id.clone()).collect();
        assert_eq!(seen, want, "{order:?}");
    }

    let now = Utc::now();
    let hour = |h: i64| now - chrono::Duration::hours(h);
    let grant = |id: &str, at: DateTime<Utc>, success: bool| GrantEvidence {
        event_id: id.into(),
        source: "dev-idp".into(),
        client_id: "client-h".into(),
        at,
        ip: None,
        requested: vec!["erp:orders:read".into()],
        granted: if success {
            vec!["erp:orders:read".into()]
        } else {
            vec![]
        },
        success,
        reason: None,
    };
    s.record_grants(&[
        grant("h1", hour(30), true),
        grant("h2", hour(2), true),
        grant("h3", hour(2), false),
        grant("h4", now, true),
    ])
    .await
    .unwrap();
    if let Some(hours) = s.grants_per_hour(hour(24)).await.unwrap() {
        let granted: u64 = hours.iter().map(|h| h.1).sum();
        let refused: u64 = hours.iter().map(|h| h.2).sum();
        assert_eq!((granted, refused), (2, 1), "{hours:?}");
        assert!(hours.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
    }
}

/// The indexed reads of the registry: by owner (any case), active credentials older than a
/// cutoff (oldest first), active time-bound agents, and pages in id order. An agent that
/// changes leaves the entries it no longer matches.
pub async fn agents_are_found_through_their_indexes(s: &dyn Store) {
    let mk = |i: usize, owner: &str, status: AgentStatus, issued_days_ago: Option<i64>| {
        let mut a = agent(
            &format!("agt-{i:02}"),
            &format!("a{i:02}-agent-prod"),
            status,
            1,
        );
        a.owner = owner.into();
        a.credential_issued_at = issued_days_ago.map(|d| at(0) - chrono::Duration::days(d));
        a
    };
    let mut c = step("wf-index", 1);
    c.agents = vec![
        mk(1, "alice@example.com", AgentStatus::Active, Some(100)),
        mk(2, "Alice@Example.com", AgentStatus::Active, Some(10)),
        mk(3, "bob@example.com", AgentStatus::Active, Some(200)),
        mk(4, "bob@example.com", AgentStatus::Frozen, Some(300)),
        mk(5, "carol@example.com", AgentStatus::PendingApproval, None),
    ];
    let mut bound = mk(6, "carol@example.com", AgentStatus::Active, Some(1));
    bound.expires_on = Some(at(0).date_naive() + chrono::Duration::days(30));
    c.agents.push(bound);
    s.commit(c).await.unwrap();
    let ids = |v: Vec<Agent>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();

    assert_eq!(
        ids(s.agents_owned_by("ALICE@example.com").await.unwrap()),
        vec!["agt-01", "agt-02"]
    );
    assert_eq!(
        ids(s.agents_owned_by("bob@example.com").await.unwrap()),
        vec!["agt-03", "agt-04"]
    );
    let cutoff = at(0) - chrono::Duration::days(90);
    assert_eq!(
        ids(s.agents_with_credentials_before(cutoff, 10).await.unwrap()),
        vec!["agt-03", "agt-01"],
        "active only, oldest credential first"
    );
    assert_eq!(
        ids(s.agents_with_credentials_before(cutoff, 1).await.unwrap()),
        vec!["agt-03"]
    );
    assert_eq!(ids(s.time_bound_agents().await.unwrap()), vec!["agt-06"]);
    assert_eq!(
        ids(s.agents_after(None, 4).await.unwrap()),
        vec!["agt-01", "agt-02", "agt-03", "agt-04"]
    );
    assert_eq!(
        ids(s.agents_after(Some("agt-04"), 4).await.unwrap()),
        vec!["agt-05", "agt-06"]
    );

    // agt-03 is frozen and handed to carol: it leaves bob, and the credential index.
    let mut c = step("wf-index", 2);
    c.agents = vec![mk(3, "carol@example.com", AgentStatus::Frozen, Some(200))];
    s.commit(c).await.unwrap();
    assert_eq!(
        ids(s.agents_owned_by("bob@example.com").await.unwrap()),
        vec!["agt-04"]
    );
    assert_eq!(
        ids(s.agents_owned_by("carol@example.com").await.unwrap()),
        vec!["agt-03", "agt-05", "agt-06"]
    );
    assert_eq!(
        ids(s.agents_with_credentials_before(cutoff, 10).await.unwrap()),
        vec!["agt-01"]
    );
}

/// Token grants are kept as evidence off the audit chain: once per event id, read per client
/// from a time on, oldest first.
pub async fn grants_are_evidence_kept_once_and_read_by_client(s: &dyn Store) {
    let now = Utc::now();
    let grant = |id: &str, client: &str, mins_ago: i64| GrantEvidence {
        event_id: id.into(),
        source: "okta".into(),
        client_id: client.into(),
        at: now - chrono::Duration::minutes(mins_ago),
        ip: Some("198.51.100.7".into()),
        requested: vec!["erp:orders:read".into()],
        granted: vec!["erp:orders:read".into()],
        success: true,
        reason: None,
    };
    s.record_grants(&[
        grant("g1", "client-a", 180),
        grant("g2", "client-a", 30),
        grant("g3", "client-b", 20),
    ])
    .await
    .unwrap();
    // A redelivery, and one more.
    s.record_grants(&[grant("g2", "client-a", 30), grant("g4", "client-a", 1)])
        .await
        .unwrap();
    s.record_grants(&[]).await.unwrap();
    let ids = |v: Vec<GrantEvidence>| v.into_iter().map(|g| g.event_id).collect::<Vec<_>>();
    let since = now - chrono::Duration::hours(24);
    assert_eq!(
        ids(s.grants("client-a", since, 100).await.unwrap()),
        vec!["g1", "g2", "g4"]
    );
    assert_eq!(
        ids(s
            .grants("client-a", now - chrono::Duration::hours(1), 100)
            .await
            .unwrap()),
        vec!["g2", "g4"]
    );
    assert_eq!(
        ids(s.grants("client-a", since, 2).await.unwrap()),
        vec!["g1", "g2"]
    );
    assert_eq!(
        ids(s.grants("client-b", since, 100).await.unwrap()),
        vec!["g3"]
    );
    let read = s.grants("client-b", since, 1).await.unwrap();
    assert_eq!(read[0], grant("g3", "client-b", 20), "round-trips");
    assert!(
        s.audit(0, 10).await.unwrap().is_empty(),
        "grants are not on the audit chain"
    );
}

// ---- fixtures ----

/// A fixed, whole-second base time (adapters may store milliseconds or seconds).
pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_750_000_000 + secs, 0).single().unwrap()
}

pub fn instance(id: &str, version: u64, state_name: &str) -> Instance {
    Instance {
        id: id.into(),
        kind: "onboarding".into(),
        agent_id: Some(format!("agt-{id}")),
        state: json!({"state": state_name, "n": version}),
        state_name: state_name.into(),
        terminal: false,
        version,
        pending: vec![PendingCommand {
            key: format!("{id}/{version}/0"),
            command: Command::Notify {
                to: "alice@example.com".into(),
                subject: format!("step {version}"),
                body: "hello".into(),
            },
        }],
        applied: (1..=version).map(|v| format!("ev-{v}")).collect(),
        request_hash: format!("hash-{id}"),
        created_at: at(0),
        updated_at: at(version as i64),
        group: None,
    }
}

pub fn history(seq: u64, from: &str, to: &str) -> HistoryEntry {
    HistoryEntry {
        seq,
        at: at(seq as i64),
        event_id: format!("ev-{seq}"),
        event: json!({"type": "test", "seq": seq}),
        actor: Actor::Person("alice@example.com".into()),
        from: from.into(),
        to: to.into(),
        commands: vec!["notify".into()],
        rejected: None,
    }
}

/// The step that moves `id` from `version - 1` to `version` (0 → 1 creates it).
pub fn step(id: &str, version: u64) -> Commit {
    let from = if version == 1 {
        "[*]".to_string()
    } else {
        format!("S{}", version - 1)
    };
    let to = format!("S{version}");
    Commit {
        instance: instance(id, version, &to),
        expected_version: version - 1,
        history: history(version, &from, &to),
        timers: vec![],
        agents: vec![],
        agent_reads: vec![],
        approvals: vec![],
        audit: vec![],
    }
}

pub fn agent(id: &str, name: &str, status: AgentStatus, updated: i64) -> Agent {
    Agent {
        id: id.into(),
        name: name.into(),
        owner: "alice@example.com".into(),
        team: "sre".into(),
        environment: "prod".into(),
        purpose: "tests".into(),
        scopes: vec!["erp:orders:read".into()],
        token_lifetime_secs: 900,
        expires_on: None,
        status,
        client_id: None,
        secret_version: None,
        credential_issued_at: None,
        requested_by: "bob@example.com".into(),
        created_at: at(0),
        updated_at: at(updated),
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

pub fn approval(id: &str, workflow_id: &str) -> ApprovalRecord {
    ApprovalRecord {
        request: ApprovalRequest {
            id: id.into(),
            workflow_id: workflow_id.into(),
            agent_id: format!("agt-{workflow_id}"),
            agent_name: "payments-agent-prod".into(),
            environment: "prod".into(),
            action: "onboard".into(),
            scopes_added: vec!["banking:payments:write".into()],
            scopes_removed: vec![],
            sensitive_scopes: vec!["banking:payments:write".into()],
            token_lifetime_secs: 900,
            requester: "bob@example.com".into(),
            justification: "pay invoices".into(),
            approvers: vec!["sam.security@example.com".into()],
            requested_at: at(0),
            expires_at: at(3600),
            owner: "bob@example.com".into(),
            quorum: 1,
            remind_at: None,
            votes: vec![],
        },
        messages: vec![],
        action_hash: format!("action-{id}"),
        outcome: None,
    }
}

pub fn audit_record(id: &str) -> AuditRecord {
    AuditRecord {
        id: id.into(),
        time: at(10),
        body: json!({"message": format!("record {id}"), "metadata": {"uid": id}}),
    }
}

pub fn timer(workflow_id: &str, name: &str, due: i64) -> Timer {
    Timer {
        workflow_id: workflow_id.into(),
        name: name.into(),
        due_at: at(due),
    }
}

fn assert_conflict(r: Result<(), StoreError>, id: &str, expected: u64) {
    match r {
        Err(StoreError::Conflict {
            id: got,
            expected: e,
        }) => {
            assert_eq!(got, id, "conflict names the workflow");
            assert_eq!(e, expected, "conflict names the expected version");
        }
        other => panic!("expected a version conflict on {id}, got {other:?}"),
    }
}

async fn all_timers(s: &dyn Store) -> Vec<Timer> {
    s.due_timers(at(1_000_000), 1000).await.unwrap()
}

async fn audit_ids(s: &dyn Store) -> Vec<String> {
    s.audit(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.record.id)
        .collect()
}

// ---- properties ----

/// `expected_version` 0 creates; a second create of the same id conflicts and changes nothing.
pub async fn create_with_version_zero(s: &dyn Store) {
    assert_eq!(s.instance("wf-a").await.unwrap(), None);
    let first = step("wf-a", 1);
    s.commit(first.clone()).await.unwrap();
    assert_eq!(
        s.instance("wf-a").await.unwrap(),
        Some(first.instance.clone())
    );
    assert_eq!(
        s.history("wf-a").await.unwrap(),
        vec![first.history.clone()]
    );

    let mut again = step("wf-a", 1);
    again.instance.state_name = "Other".into();
    again.history.event_id = "ev-other".into();
    again.audit = vec![audit_record("audit-dup-create")];
    assert_conflict(s.commit(again).await, "wf-a", 0);
    assert_eq!(s.instance("wf-a").await.unwrap(), Some(first.instance));
    assert_eq!(s.history("wf-a").await.unwrap(), vec![first.history]);
    assert!(audit_ids(s).await.is_empty());
}

/// The right version updates and the stored version moves on.
pub async fn update_bumps_version(s: &dyn Store) {
    s.commit(step("wf-a", 1)).await.unwrap();
    let second = step("wf-a", 2);
    s.commit(second.clone()).await.unwrap();
    let stored = s.instance("wf-a").await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.state_name, "S2");
    assert_eq!(stored, second.instance);
    s.commit(step("wf-a", 3)).await.unwrap();
    assert_eq!(s.instance("wf-a").await.unwrap().unwrap().version, 3);
    // A version that was never read (from the future) conflicts too.
    let mut future = step("wf-a", 9);
    future.expected_version = 8;
    assert_conflict(s.commit(future).await, "wf-a", 8);
    // So does an update of an instance that does not exist.
    assert_conflict(s.commit(step("wf-missing", 2)).await, "wf-missing", 1);
    assert_eq!(s.instance("wf-missing").await.unwrap(), None);
    assert!(s.history("wf-missing").await.unwrap().is_empty());
}

/// A stale version conflicts, and nothing the commit carried becomes visible.
pub async fn stale_version_conflicts_and_writes_nothing(s: &dyn Store) {
    let mut first = step("wf-a", 1);
    first.timers = vec![TimerChange::Set(timer("wf-a", "expiry", 100))];
    first.agents = vec![agent(
        "agt-a",
        "a-agent-prod",
        AgentStatus::PendingApproval,
        1,
    )];
    first.approvals = vec![ApprovalChange::Open(approval("ap-1", "wf-a"))];
    first.audit = vec![audit_record("audit-1")];
    s.commit(first).await.unwrap();
    s.commit(step("wf-a", 2)).await.unwrap();

    let before_instance = s.instance("wf-a").await.unwrap();
    let before_history = s.history("wf-a").await.unwrap();
    let before_timers = all_timers(s).await;
    let before_agents = s.agents().await.unwrap();
    let before_approvals = s.approvals(false).await.unwrap();
    let before_audit = s.audit(0, 1000).await.unwrap();

    // Built on version 1, but the instance is at version 2 now.
    let mut stale = step("wf-a", 2);
    stale.instance.state_name = "Stale".into();
    stale.history.event_id = "ev-stale".into();
    stale.timers = vec![
        TimerChange::Cancel {
            workflow_id: "wf-a".into(),
            name: "expiry".into(),
        },
        TimerChange::Set(timer("wf-a", "other", 50)),
    ];
    stale.agents = vec![
        agent("agt-a", "a-agent-prod", AgentStatus::Active, 5),
        agent("agt-new", "new-agent-prod", AgentStatus::Active, 5),
    ];
    stale.approvals = vec![
        ApprovalChange::Close {
            id: "ap-1".into(),
            outcome: ApprovalOutcome::Approved {
                by: "sam.security@example.com".into(),
                at: at(5),
                reason: None,
            },
        },
        ApprovalChange::Open(approval("ap-2", "wf-a")),
    ];
    stale.audit = vec![audit_record("audit-stale")];
    assert_conflict(s.commit(stale).await, "wf-a", 1);

    assert_eq!(s.instance("wf-a").await.unwrap(), before_instance);
    assert_eq!(s.history("wf-a").await.unwrap(), before_history);
    assert_eq!(all_timers(s).await, before_timers);
    assert_eq!(s.agents().await.unwrap(), before_agents);
    assert_eq!(s.agent("agt-new").await.unwrap(), None);
    assert_eq!(s.approvals(false).await.unwrap(), before_approvals);
    assert_eq!(s.approval("ap-2").await.unwrap(), None);
    assert_eq!(
        s.approval("ap-1").await.unwrap().unwrap().status(),
        "pending"
    );
    assert_eq!(s.audit(0, 1000).await.unwrap(), before_audit);
}

/// History comes back in seq order, per workflow.
pub async fn history_in_seq_order(s: &dyn Store) {
    for v in 1..=5 {
        s.commit(step("wf-a", v)).await.unwrap();
        if v <= 3 {
            s.commit(step("wf-b", v)).await.unwrap();
        }
    }
    let a = s.history("wf-a").await.unwrap();
    assert_eq!(
        a.iter().map(|h| h.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(a[0].from, "[*]");
    for w in a.windows(2) {
        assert_eq!(w[0].to, w[1].from, "each step starts where the last ended");
    }
    assert_eq!(a[4], history(5, "S4", "S5"));
    let b = s.history("wf-b").await.unwrap();
    assert_eq!(b.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(s.history("wf-none").await.unwrap().is_empty());
}

/// Set arms, Cancel disarms, Set again re-arms (replacing the due time); removing a fired
/// timer by its old due time leaves a re-armed timer alone.
pub async fn timers_set_cancel_rearm(s: &dyn Store) {
    let mut c = step("wf-a", 1);
    c.timers = vec![
        TimerChange::Set(timer("wf-a", "expiry", 10)),
        TimerChange::Set(timer("wf-a", "reminder", 20)),
    ];
    s.commit(c).await.unwrap();
    assert_eq!(
        all_timers(s).await,
        vec![timer("wf-a", "expiry", 10), timer("wf-a", "reminder", 20)]
    );
    assert_eq!(
        s.due_timers(at(15), 10).await.unwrap(),
        vec![timer("wf-a", "expiry", 10)]
    );

    // Re-arm `expiry` later and cancel `reminder`.
    let mut c = step("wf-a", 2);
    c.timers = vec![
        TimerChange::Set(timer("wf-a", "expiry", 30)),
        TimerChange::Cancel {
            workflow_id: "wf-a".into(),
            name: "reminder".into(),
        },
    ];
    s.commit(c).await.unwrap();
    assert_eq!(all_timers(s).await, vec![timer("wf-a", "expiry", 30)]);
    assert!(s.due_timers(at(25), 10).await.unwrap().is_empty());

    // The tick that fired the old due time removes nothing now.
    s.remove_timer(&timer("wf-a", "expiry", 10)).await.unwrap();
    assert_eq!(all_timers(s).await, vec![timer("wf-a", "expiry", 30)]);
    s.remove_timer(&timer("wf-a", "expiry", 30)).await.unwrap();
    assert!(all_timers(s).await.is_empty());
    // Removing again, or cancelling a timer that is not armed, is harmless.
    s.remove_timer(&timer("wf-a", "expiry", 30)).await.unwrap();
    let mut c = step("wf-a", 3);
    c.timers = vec![TimerChange::Cancel {
        workflow_id: "wf-a".into(),
        name: "never-armed".into(),
    }];
    s.commit(c).await.unwrap();
    assert!(all_timers(s).await.is_empty());
}

/// Only timers due at or before `now`, earliest first, at most `limit`.
pub async fn due_timers_respects_now_and_limit(s: &dyn Store) {
    for (wf, due) in [("wf-a", 30), ("wf-b", 10), ("wf-c", 20), ("wf-d", 40)] {
        let mut c = step(wf, 1);
        c.timers = vec![TimerChange::Set(timer(wf, "t", due))];
        s.commit(c).await.unwrap();
    }
    assert!(s.due_timers(at(9), 10).await.unwrap().is_empty());
    assert_eq!(
        s.due_timers(at(10), 10).await.unwrap(),
        vec![timer("wf-b", "t", 10)],
        "a timer is due at its due time"
    );
    assert_eq!(
        s.due_timers(at(35), 10).await.unwrap(),
        vec![
            timer("wf-b", "t", 10),
            timer("wf-c", "t", 20),
            timer("wf-a", "t", 30)
        ]
    );
    assert_eq!(
        s.due_timers(at(100), 2).await.unwrap(),
        vec![timer("wf-b", "t", 10), timer("wf-c", "t", 20)]
    );
    assert_eq!(s.due_timers(at(100), 10).await.unwrap().len(), 4);
    // Fired together: removed together, except one re-armed since (its due time moved).
    let mut c = step("wf-d", 2);
    c.timers = vec![TimerChange::Set(timer("wf-d", "t", 50))];
    s.commit(c).await.unwrap();
    s.remove_timers(&[
        timer("wf-b", "t", 10),
        timer("wf-c", "t", 20),
        timer("wf-d", "t", 40),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.due_timers(at(100), 10).await.unwrap(),
        vec![timer("wf-a", "t", 30), timer("wf-d", "t", 50)]
    );
}

/// The registry: upsert by id, lookup by id and by name (newest record wins), list.
/// A step that changed an agent field by field, from the record as it read it, is written only
/// while the record is still that one: a step that wrote the agent in between wins, and the
/// late step conflicts whole (nothing of it is written) to be retried on the new record.
pub async fn a_stale_agent_read_conflicts_and_writes_nothing(s: &dyn Store) {
    use shared::ports::store::AgentRead;
    let first = agent("agt-r", "race-agent-prod", AgentStatus::Active, 1);
    let mut c = step("wf-race-a", 1);
    c.agents = vec![first.clone()];
    s.commit(c).await.unwrap();
    // Another step froze it since.
    let mut frozen = first.clone();
    frozen.status = AgentStatus::Frozen;
    frozen.updated_at = at(2);
    let mut c = step("wf-race-b", 1);
    c.agents = vec![frozen.clone()];
    c.agent_reads = vec![AgentRead {
        id: "agt-r".into(),
        updated_at: at(1),
    }];
    s.commit(c).await.unwrap();
    // A step that read the record before the freeze tries to write its change over it.
    let mut stale = first.clone();
    stale.secret_version = Some("v2".into());
    stale.updated_at = at(3);
    let mut c = step("wf-race-c", 1);
    c.agents = vec![stale];
    c.agent_reads = vec![AgentRead {
        id: "agt-r".into(),
        updated_at: at(1),
    }];
    match s.commit(c).await {
        Err(StoreError::AgentChanged(_)) => {}
        other => panic!("a stale read must conflict: {other:?}"),
    }
    assert_eq!(s.agent("agt-r").await.unwrap(), Some(frozen.clone()));
    assert_eq!(
        s.instance("wf-race-c").await.unwrap(),
        None,
        "nothing of it is written"
    );
    // Read again, it goes through.
    let mut fresh = frozen.clone();
    fresh.secret_version = Some("v2".into());
    fresh.updated_at = at(4);
    let mut c = step("wf-race-c", 1);
    c.agents = vec![fresh.clone()];
    c.agent_reads = vec![AgentRead {
        id: "agt-r".into(),
        updated_at: at(2),
    }];
    s.commit(c).await.unwrap();
    assert_eq!(s.agent("agt-r").await.unwrap(), Some(fresh));
}

pub async fn agents_upsert_and_lookup(s: &dyn Store) {
    let a1 = agent(
        "agt-1",
        "orders-agent-prod",
        AgentStatus::PendingApproval,
        1,
    );
    let a2 = agent("agt-2", "metrics-agent-prod", AgentStatus::Active, 1);
    let mut c = step("wf-a", 1);
    c.agents = vec![a1.clone(), a2.clone()];
    s.commit(c).await.unwrap();
    assert_eq!(s.agent("agt-1").await.unwrap(), Some(a1.clone()));
    assert_eq!(
        s.agent_by_name("metrics-agent-prod").await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(s.agent("agt-none").await.unwrap(), None);
    assert_eq!(s.agent_by_name("none-agent-prod").await.unwrap(), None);

    // Upsert: same id, new status.
    let mut a1b = a1.clone();
    a1b.status = AgentStatus::Denied;
    a1b.updated_at = at(5);
    let mut c = step("wf-a", 2);
    c.agents = vec![a1b.clone()];
    s.commit(c).await.unwrap();
    assert_eq!(s.agent("agt-1").await.unwrap(), Some(a1b.clone()));
    let mut listed = s.agents().await.unwrap();
    listed.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(listed, vec![a1b.clone(), a2.clone()]);

    // A newer agent reuses the denied one's name: the name finds the newer record.
    let a3 = agent("agt-3", "orders-agent-prod", AgentStatus::Active, 9);
    let mut c = step("wf-b", 1);
    c.agents = vec![a3.clone()];
    s.commit(c).await.unwrap();
    assert_eq!(
        s.agent_by_name("orders-agent-prod").await.unwrap(),
        Some(a3.clone())
    );
    assert_eq!(s.agent("agt-1").await.unwrap(), Some(a1b));
    assert_eq!(s.agents().await.unwrap().len(), 3);

    // Instances touching an agent, oldest first.
    let mut later = step("wf-c", 1);
    later.instance.agent_id = Some("agt-x".into());
    later.instance.created_at = at(2);
    let mut earlier = step("wf-z", 1);
    earlier.instance.agent_id = Some("agt-x".into());
    earlier.instance.created_at = at(1);
    s.commit(earlier).await.unwrap();
    s.commit(later).await.unwrap();
    let ids: Vec<String> = s
        .instances_for_agent("agt-x")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, vec!["wf-z", "wf-c"]);
    assert!(s.instances_for_agent("agt-none").await.unwrap().is_empty());
}

/// Open records a pending approval; Close sets its outcome and status; `pending_only` filters.
pub async fn approvals_open_close_and_filter(s: &dyn Store) {
    let r1 = approval("ap-1", "wf-a");
    let r2 = approval("ap-2", "wf-b");
    let mut c = step("wf-a", 1);
    c.approvals = vec![ApprovalChange::Open(r1.clone())];
    s.commit(c).await.unwrap();
    let mut c = step("wf-b", 1);
    c.approvals = vec![ApprovalChange::Open(r2.clone())];
    s.commit(c).await.unwrap();
    assert_eq!(s.approval("ap-1").await.unwrap(), Some(r1.clone()));
    assert_eq!(s.approval("ap-none").await.unwrap(), None);
    let pending = |v: Vec<ApprovalRecord>| {
        let mut ids: Vec<String> = v.into_iter().map(|r| r.request.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(
        pending(s.approvals(true).await.unwrap()),
        vec!["ap-1", "ap-2"]
    );

    let approved = ApprovalOutcome::Approved {
        by: "sam.security@example.com".into(),
        at: at(7),
        reason: Some("fine".into()),
    };
    let mut c = step("wf-a", 2);
    c.approvals = vec![ApprovalChange::Close {
        id: "ap-1".into(),
        outcome: approved.clone(),
    }];
    s.commit(c).await.unwrap();
    let closed = s.approval("ap-1").await.unwrap().unwrap();
    assert_eq!(closed.outcome, Some(approved));
    assert_eq!(closed.status(), "approved");
    assert_eq!(closed.request, r1.request, "closing keeps what was asked");
    assert_eq!(closed.action_hash, r1.action_hash);
    assert_eq!(pending(s.approvals(true).await.unwrap()), vec!["ap-2"]);
    assert_eq!(
        pending(s.approvals(false).await.unwrap()),
        vec!["ap-1", "ap-2"]
    );

    let mut c = step("wf-b", 2);
    c.approvals = vec![ApprovalChange::Close {
        id: "ap-2".into(),
        outcome: ApprovalOutcome::Denied {
            by: "sam.security@example.com".into(),
            at: at(8),
            reason: None,
        },
    }];
    s.commit(c).await.unwrap();
    assert_eq!(
        s.approval("ap-2").await.unwrap().unwrap().status(),
        "denied"
    );
    assert!(s.approvals(true).await.unwrap().is_empty());
    assert_eq!(s.approvals(false).await.unwrap().len(), 2);
}

/// A vote (in a commit) and the chat messages that show an approval (recorded after posting)
/// are kept with it; recording the same message twice keeps one; closing keeps both.
pub async fn approval_votes_and_messages_are_kept(s: &dyn Store) {
    let r = approval("ap-v", "wf-v");
    let mut c = step("wf-v", 1);
    c.approvals = vec![ApprovalChange::Open(r.clone())];
    s.commit(c).await.unwrap();
    let posted = |channel: &str, ts: &str, route: &str| PostedMessage {
        channel: channel.into(),
        ts: ts.into(),
        route: route.into(),
        at: None,
    };
    s.add_approval_message(
        "ap-v",
        posted("C0SEC", "1700000000.000100", "security-channel"),
    )
    .await
    .unwrap();
    s.add_approval_message("ap-v", posted("D0OWNER", "1700000000.000200", "owner"))
        .await
        .unwrap();
    // a repeated command records the same message again
    s.add_approval_message(
        "ap-v",
        posted("C0SEC", "1700000000.000100", "security-channel"),
    )
    .await
    .unwrap();
    let vote = Vote {
        by: "sam.security@example.com".into(),
        at: at(5),
    };
    let mut c = step("wf-v", 2);
    c.approvals = vec![ApprovalChange::Vote {
        id: "ap-v".into(),
        vote: vote.clone(),
    }];
    s.commit(c).await.unwrap();
    let got = s.approval("ap-v").await.unwrap().unwrap();
    assert_eq!(got.request.votes, vec![vote.clone()]);
    assert_eq!(got.status(), "pending", "a vote does not decide");
    assert_eq!(
        got.messages,
        vec![
            posted("C0SEC", "1700000000.000100", "security-channel"),
            posted("D0OWNER", "1700000000.000200", "owner")
        ]
    );
    let mut c = step("wf-v", 3);
    c.approvals = vec![ApprovalChange::Close {
        id: "ap-v".into(),
        outcome: ApprovalOutcome::Expired { at: at(9) },
    }];
    s.commit(c).await.unwrap();
    let closed = s.approval("ap-v").await.unwrap().unwrap();
    assert_eq!(closed.request.votes, vec![vote]);
    assert_eq!(closed.messages.len(), 2);
    assert!(
        s.add_approval_message("ap-none", posted("C1", "1.2", "owner"))
            .await
            .is_err(),
        "a message for an approval that does not exist is refused"
    );
}

/// Checks what a verifier checks: each record's hash is the hash of its content and the
/// previous record of its chain (a store may keep several chains, sealed together by
/// checkpoints); every chain starts at zero; seqs increase through the listing.
pub fn assert_chained(all: &[ChainedAudit]) {
    let mut tips: std::collections::HashMap<u32, &str> = std::collections::HashMap::new();
    let zero = "0".repeat(64);
    for (i, c) in all.iter().enumerate() {
        assert_eq!(c.hash, chain_hash(&c.prev_hash, &c.record), "hash of {i}");
        assert_eq!(c.hash.len(), 64);
        let prev = tips.get(&c.chain).copied().unwrap_or(zero.as_str());
        assert_eq!(
            c.prev_hash, prev,
            "{} links to the previous record of chain {}",
            c.record.id, c.chain
        );
        tips.insert(c.chain, &c.hash);
        if i > 0 {
            assert!(c.seq > all[i - 1].seq, "seq increases");
        }
    }
}

/// The position of each record id in a listing.
fn position(all: &[ChainedAudit], id: &str) -> usize {
    all.iter()
        .position(|c| c.record.id == id)
        .unwrap_or_else(|| panic!("{id} is in the trail"))
}

/// A large batch appended outside a step (a hook delivery of many events) lands whole,
/// chained, each record once; appending it again adds nothing.
pub async fn a_large_audit_append_lands_whole(s: &dyn Store) {
    let batch: Vec<AuditRecord> = (0..120)
        .map(|i| audit_record(&format!("bulk-{i:03}")))
        .collect();
    s.append_audit(batch.clone()).await.unwrap();
    let all = s.audit(0, 1000).await.unwrap();
    assert_eq!(all.len(), 120);
    assert_chained(&all);
    s.append_audit(batch).await.unwrap();
    assert_eq!(s.audit(0, 1000).await.unwrap().len(), 120);
}

/// Where the trail ends (what a signed seal covers): the last record's seq and each chain's
/// last hash, as a walk of the whole trail finds them.
pub async fn audit_tips_are_where_the_trail_ends(s: &dyn Store) {
    let empty = s.audit_tips().await.unwrap();
    assert_eq!((empty.through, empty.chains.len()), (0, 0));
    for i in 0..12 {
        let mut c = step(&format!("wf-tips-{i}"), 1);
        c.audit = vec![
            audit_record(&format!("t{i}a")),
            audit_record(&format!("t{i}b")),
        ];
        s.commit(c).await.unwrap();
    }
    s.append_audit(vec![audit_record("t-extra")]).await.unwrap();
    let tips = s.audit_tips().await.unwrap();
    let all = s.audit(0, 1000).await.unwrap();
    assert_eq!(tips.through, all.last().unwrap().seq);
    let mut ends = std::collections::BTreeMap::new();
    for c in &all {
        ends.insert(c.chain, c.hash.clone());
    }
    assert_eq!(tips.chains, ends);
}

/// Audit records (from commits and from `append_audit`) are hash-chained, listed once each,
/// in their order within a chain (one append, one step), and page by seq.
pub async fn audit_is_hash_chained_and_pages(s: &dyn Store) {
    assert!(s.audit(0, 10).await.unwrap().is_empty());
    s.append_audit(vec![audit_record("r1"), audit_record("r2")])
        .await
        .unwrap();
    let mut c = step("wf-a", 1);
    c.audit = vec![audit_record("r3"), audit_record("r4")];
    s.commit(c).await.unwrap();
    s.append_audit(vec![]).await.unwrap();
    s.append_audit(vec![audit_record("r5")]).await.unwrap();

    let all = s.audit(0, 1000).await.unwrap();
    let mut ids: Vec<&str> = all.iter().map(|c| c.record.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec!["r1", "r2", "r3", "r4", "r5"]);
    assert_chained(&all);
    for c in &all {
        assert_eq!(c.record, audit_record(&c.record.id), "record round-trips");
    }
    assert!(position(&all, "r1") < position(&all, "r2"));
    assert_eq!(
        position(&all, "r3") + 1,
        position(&all, "r4"),
        "a step's records stay together"
    );

    // Paging by seq gives the same records, in the same order.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = s.audit(after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(s.audit(all[2].seq, 1000).await.unwrap(), all[3..].to_vec());
    assert!(s.audit(all[4].seq, 10).await.unwrap().is_empty());

    // What is appended later lists after what was read, and keeps its place.
    s.append_audit(vec![audit_record("r6")]).await.unwrap();
    let more = s.audit(all[4].seq, 10).await.unwrap();
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].record.id, "r6");
    let everything = s.audit(0, 1000).await.unwrap();
    assert_eq!(everything[..5], all[..]);
    assert_chained(&everything);
}

/// The records a workflow's steps wrote are read back by its id, newest first, and no other
/// workflow's (an agent's page shows them beside its timeline).
pub async fn a_workflows_audit_records_newest_first(s: &dyn Store) {
    let of = |id: &str, wf: &str| {
        let mut r = audit_record(id);
        r.body["metadata"]["correlation_uid"] = json!(wf);
        r
    };
    let mut first = step("wf-x", 1);
    first.audit = vec![of("x1", "wf-x"), of("x2", "wf-x")];
    s.commit(first).await.unwrap();
    let mut other = step("wf-y", 1);
    other.audit = vec![of("y1", "wf-y")];
    s.commit(other).await.unwrap();
    s.append_audit(vec![audit_record("loose")]).await.unwrap();
    let mut second = step("wf-x", 2);
    second.audit = vec![of("x3", "wf-x")];
    s.commit(second).await.unwrap();

    let ids =
        |records: Vec<AuditRecord>| -> Vec<String> { records.into_iter().map(|r| r.id).collect() };
    assert_eq!(
        ids(s.workflow_audit("wf-x", 10).await.unwrap()),
        vec!["x3", "x2", "x1"]
    );
    assert_eq!(
        ids(s.workflow_audit("wf-x", 2).await.unwrap()),
        vec!["x3", "x2"],
        "the limit keeps the newest"
    );
    assert_eq!(ids(s.workflow_audit("wf-y", 10).await.unwrap()), vec!["y1"]);
    assert!(s.workflow_audit("wf-none", 10).await.unwrap().is_empty());
    let r = &s.workflow_audit("wf-y", 1).await.unwrap()[0];
    assert_eq!(r.body["message"], "record y1", "the record round-trips");
}

/// In a group commit, a conflicting step rolls back alone; the others persist.
pub async fn commit_batch_rolls_back_conflicts_alone(s: &dyn Store) {
    s.commit(step("wf-b", 1)).await.unwrap();
    let mut a = step("wf-a", 1);
    a.audit = vec![audit_record("a-audit")];
    a.timers = vec![TimerChange::Set(timer("wf-a", "t", 10))];
    let mut stale = step("wf-b", 5);
    stale.audit = vec![audit_record("b-audit")];
    stale.timers = vec![TimerChange::Set(timer("wf-b", "t", 10))];
    stale.agents = vec![agent("agt-b", "b-agent-prod", AgentStatus::Active, 1)];
    stale.approvals = vec![ApprovalChange::Open(approval("ap-b", "wf-b"))];
    let mut c = step("wf-c", 1);
    c.audit = vec![audit_record("c-audit")];
    c.agents = vec![agent("agt-c", "c-agent-prod", AgentStatus::Active, 1)];

    let results = s.commit_batch(vec![a, stale, c]).await.unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    match &results[1] {
        Err(StoreError::Conflict { id, expected }) => {
            assert_eq!(id, "wf-b");
            assert_eq!(*expected, 4);
        }
        other => panic!("the stale step must conflict, got {other:?}"),
    }
    assert!(results[2].is_ok(), "{:?}", results[2]);

    assert_eq!(s.instance("wf-a").await.unwrap().unwrap().version, 1);
    assert_eq!(s.instance("wf-c").await.unwrap().unwrap().version, 1);
    assert_eq!(s.history("wf-c").await.unwrap().len(), 1);
    assert_eq!(s.instance("wf-b").await.unwrap().unwrap().version, 1);
    assert_eq!(s.history("wf-b").await.unwrap().len(), 1);
    assert_eq!(all_timers(s).await, vec![timer("wf-a", "t", 10)]);
    assert_eq!(s.agent("agt-b").await.unwrap(), None);
    assert!(s.agent("agt-c").await.unwrap().is_some());
    assert_eq!(s.approval("ap-b").await.unwrap(), None);
    let mut ids = audit_ids(s).await;
    ids.sort();
    assert_eq!(ids, vec!["a-audit", "c-audit"]);
    // The chains are intact across the rolled-back step.
    assert_chained(&s.audit(0, 10).await.unwrap());

    // An empty batch is fine.
    assert!(s.commit_batch(vec![]).await.unwrap().is_empty());
}

/// An inbound id (an Okta event uuid, a Slack action) is new once; a repeat within the window is
/// recognised; sources are independent; an expired entry is new again.
pub async fn inbound_ids_are_remembered(s: &dyn Store) {
    let keep = std::time::Duration::from_secs(600);
    assert!(s.remember_inbound("okta", "ev-1", keep).await.unwrap());
    assert!(!s.remember_inbound("okta", "ev-1", keep).await.unwrap());
    assert!(s.remember_inbound("okta", "ev-2", keep).await.unwrap());
    assert!(s.remember_inbound("slack", "ev-1", keep).await.unwrap());
    assert!(
        s.remember_inbound("okta", "brief", std::time::Duration::ZERO)
            .await
            .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(
        s.remember_inbound("okta", "brief", keep).await.unwrap(),
        "an expired entry is new again"
    );
    assert!(!s.remember_inbound("okta", "brief", keep).await.unwrap());
}

pub async fn cursors_are_kept_by_name(s: &dyn Store) {
    assert_eq!(s.cursor("okta-system-log").await.unwrap(), None);
    s.set_cursor("okta-system-log", "1700000000000_1")
        .await
        .unwrap();
    s.set_cursor("other", "x").await.unwrap();
    assert_eq!(
        s.cursor("okta-system-log").await.unwrap().as_deref(),
        Some("1700000000000_1")
    );
    s.set_cursor("okta-system-log", "1700000000001_2")
        .await
        .unwrap();
    assert_eq!(
        s.cursor("okta-system-log").await.unwrap().as_deref(),
        Some("1700000000001_2")
    );
    assert_eq!(s.cursor("other").await.unwrap().as_deref(), Some("x"));
}

/// Instances of a group are listed together (in id order); scope use keeps the latest time per
/// scope; chat messages are kept one per route, a later record replacing the earlier one.
pub async fn groups_scope_usage_and_messages(s: &dyn Store) {
    for id in ["review-c1-b", "review-c1-a", "review-c2-a", "loner"] {
        let mut c = step(id, 1);
        c.instance.group = id
            .strip_prefix("review-")
            .and_then(|r| r.split('-').next())
            .map(str::to_string);
        s.commit(c).await.unwrap();
    }
    // A later step of an item keeps it in its group.
    let mut later = step("review-c1-a", 2);
    later.instance.group = Some("c1".into());
    s.commit(later).await.unwrap();
    let ids: Vec<String> = s
        .instances_in_group("c1")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["review-c1-a", "review-c1-b"]);
    assert_eq!(s.instances_in_group("c2").await.unwrap().len(), 1);
    assert!(s.instances_in_group("none").await.unwrap().is_empty());

    assert!(s.scope_usage("client-1").await.unwrap().is_empty());
    let scopes = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    s.record_scope_usage("client-1", &scopes(&["a:read", "b:write"]), at(10))
        .await
        .unwrap();
    s.record_scope_usage("client-1", &scopes(&["a:read"]), at(20))
        .await
        .unwrap();
    // An older grant read late does not move the time back.
    s.record_scope_usage("client-1", &scopes(&["b:write"]), at(5))
        .await
        .unwrap();
    let mut used = s.scope_usage("client-1").await.unwrap();
    used.sort();
    assert_eq!(
        used,
        [
            ("a:read".to_string(), at(20)),
            ("b:write".to_string(), at(10))
        ]
    );
    assert!(s.scope_usage("client-2").await.unwrap().is_empty());

    let msg = |ts: &str| PostedMessage {
        channel: "D0OWNER".into(),
        ts: ts.into(),
        route: "owner".into(),
        at: Some(at(1)),
    };
    s.put_message("item-1", msg("")).await.unwrap();
    s.put_message("item-1", msg("1700000000.000100"))
        .await
        .unwrap();
    assert_eq!(
        s.messages("item-1").await.unwrap(),
        [msg("1700000000.000100")]
    );
    assert!(s.messages("item-2").await.unwrap().is_empty());
}

/// Everything committed is there after the store is dropped and opened again.
/// An agent is found by its IdP client id (the newest record wins); a detection baseline is
/// kept per agent, the last write winning.
pub async fn clients_and_baselines(s: &dyn Store) {
    assert_eq!(s.agent_by_client("dev_1").await.unwrap(), None);
    let mut shadow = agent("agt-s", "inventory-sync", AgentStatus::Unregistered, 1);
    shadow.client_id = Some("dev_1".into());
    let mut other = agent("agt-o", "orders-agent-prod", AgentStatus::Active, 1);
    other.client_id = Some("dev_2".into());
    let mut c = step("wf-c", 1);
    c.agents = vec![shadow.clone(), other.clone()];
    s.commit(c).await.unwrap();
    assert_eq!(
        s.agent_by_client("dev_1").await.unwrap(),
        Some(shadow.clone())
    );
    assert_eq!(s.agent_by_client("dev_2").await.unwrap(), Some(other));
    // Claimed: the same record becomes registered under the same client.
    let mut claimed = shadow.clone();
    claimed.status = AgentStatus::Active;
    claimed.updated_at = at(5);
    let mut c = step("wf-c", 2);
    c.agents = vec![claimed.clone()];
    s.commit(c).await.unwrap();
    assert_eq!(s.agent_by_client("dev_1").await.unwrap(), Some(claimed));

    assert_eq!(s.baseline("agt-o").await.unwrap(), None);
    let mut b = statemachines::detection::Baseline {
        requests: 3,
        hourly_rate: 2.5,
        ..Default::default()
    };
    b.ips.insert("10.0.0.1".into(), at(1));
    b.hours[9] = 3;
    s.put_baseline("agt-o", &b).await.unwrap();
    assert_eq!(s.baseline("agt-o").await.unwrap(), Some(b.clone()));
    b.requests = 4;
    b.fired.insert("new-source-ip".into(), at(2));
    s.put_baseline("agt-o", &b).await.unwrap();
    assert_eq!(s.baseline("agt-o").await.unwrap(), Some(b));
    assert_eq!(s.baseline("agt-s").await.unwrap(), None);
}

/// What an intake batch leaves behind, in one call: the latest use of each scope, each agent's
/// baseline, and for each inbound id whether it is new (a repeat, also within the batch, is not).
pub async fn an_intake_batch_is_written_whole(s: &dyn Store) {
    use shared::ports::store::IntakeWrites;
    let keep = std::time::Duration::from_secs(3600);
    assert!(s.remember_inbound("okta", "ev-0", keep).await.unwrap());
    let scopes = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let b = statemachines::detection::Baseline {
        requests: 7,
        ..Default::default()
    };
    let writes = IntakeWrites {
        scope_use: vec![
            ("client-1".into(), scopes(&["a:read", "b:write"]), at(10)),
            ("client-1".into(), scopes(&["a:read"]), at(20)),
            ("client-1".into(), scopes(&["b:write"]), at(5)),
        ],
        baselines: vec![("agt-1".into(), b.clone())],
        seen: vec![
            ("okta".into(), "ev-0".into()),
            ("okta".into(), "ev-1".into()),
            ("okta".into(), "ev-1".into()),
            ("ssf".into(), "ev-0".into()),
        ],
    };
    assert_eq!(
        s.record_intake(&writes, keep).await.unwrap(),
        [false, true, false, true]
    );
    let mut used = s.scope_usage("client-1").await.unwrap();
    used.sort();
    assert_eq!(
        used,
        [
            ("a:read".to_string(), at(20)),
            ("b:write".to_string(), at(10))
        ]
    );
    assert_eq!(s.baseline("agt-1").await.unwrap(), Some(b));
    assert!(!s.remember_inbound("okta", "ev-1", keep).await.unwrap());
    // A batch with nothing in it writes nothing and answers nothing.
    assert!(
        s.record_intake(&IntakeWrites::default(), keep)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn survives_reopen(open: &Opener) {
    let s = open();
    let mut c = step("wf-a", 1);
    c.timers = vec![TimerChange::Set(timer("wf-a", "expiry", 10))];
    c.agents = vec![agent(
        "agt-a",
        "a-agent-prod",
        AgentStatus::PendingApproval,
        1,
    )];
    c.approvals = vec![
        ApprovalChange::Open(approval("ap-1", "wf-a")),
        ApprovalChange::Open(approval("ap-2", "wf-a")),
    ];
    c.audit = vec![audit_record("r1")];
    s.commit(c).await.unwrap();
    let mut c = step("wf-a", 2);
    c.approvals = vec![ApprovalChange::Close {
        id: "ap-1".into(),
        outcome: ApprovalOutcome::Expired { at: at(9) },
    }];
    c.agents = vec![agent("agt-a", "a-agent-prod", AgentStatus::Expired, 2)];
    s.commit(c).await.unwrap();
    s.append_audit(vec![audit_record("r2")]).await.unwrap();
    s.set_cursor("okta-system-log", "cursor-1").await.unwrap();

    let instance = s.instance("wf-a").await.unwrap();
    let history = s.history("wf-a").await.unwrap();
    let agents = s.agents().await.unwrap();
    let approvals = s.approvals(false).await.unwrap();
    let audit = s.audit(0, 100).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(audit.len(), 2);
    drop(s);

    let s = open();
    assert_eq!(s.instance("wf-a").await.unwrap(), instance);
    assert_eq!(s.history("wf-a").await.unwrap(), history);
    assert_eq!(all_timers(&*s).await, vec![timer("wf-a", "expiry", 10)]);
    assert_eq!(s.agents().await.unwrap(), agents);
    assert_eq!(
        s.agent_by_name("a-agent-prod")
            .await
            .unwrap()
            .unwrap()
            .status,
        AgentStatus::Expired
    );
    assert_eq!(s.approvals(false).await.unwrap(), approvals);
    assert_eq!(
        s.approval("ap-1").await.unwrap().unwrap().status(),
        "expired"
    );
    assert_eq!(s.audit(0, 100).await.unwrap(), audit);
    assert_eq!(
        s.cursor("okta-system-log").await.unwrap().as_deref(),
        Some("cursor-1")
    );
    // The chains continue where they left off.
    s.append_audit(vec![audit_record("r3")]).await.unwrap();
    let after = s.audit(audit[1].seq, 10).await.unwrap();
    assert_eq!(after.len(), 1);
    let all = s.audit(0, 10).await.unwrap();
    assert_eq!(all[..2], audit[..]);
    assert_chained(&all);
    // And versions still guard writes.
    assert_conflict(s.commit(step("wf-a", 2)).await, "wf-a", 1);
    s.commit(step("wf-a", 3)).await.unwrap();
}
