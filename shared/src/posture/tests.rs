use super::*;
use statemachines::review_item::LastReview;

const EXAMPLE: &str = include_str!("../../../policy.example.toml");

fn policy() -> Policy {
    crate::policy_file::parse(EXAMPLE, "policy.example.toml").expect("example policy is valid")
}

fn now() -> DateTime<Utc> {
    "2026-06-15T12:00:00Z".parse().unwrap()
}

fn days_ago(d: i64) -> DateTime<Utc> {
    now() - Duration::days(d)
}

/// A well-governed agent: dedicated client, two approved scopes, 15-minute tokens, its own key
/// (10 days old) with DPoP-bound tokens, an owner, reviewed last month.
fn agent(name: &str, client: &str) -> Agent {
    Agent {
        id: format!("agt-{name}"),
        name: name.into(),
        owner: "alice@example.com".into(),
        team: "sre".into(),
        environment: "prod".into(),
        purpose: "reads metrics".into(),
        scopes: vec![
            "datadog:metrics:read".into(),
            "datadog:monitors:read".into(),
        ],
        token_lifetime_secs: 15 * 60,
        expires_on: None,
        status: AgentStatus::Active,
        client_id: Some(client.into()),
        secret_version: None,
        credential_issued_at: Some(days_ago(10)),
        requested_by: "alice@example.com".into(),
        created_at: days_ago(400),
        updated_at: days_ago(10),
        flags: vec![],
        credentials: vec![],
        credential_kind: CredentialKind::PrivateKeyJwt,
        key_custody: Default::default(),
        token_binding: TokenBinding::Dpop,
        keys: vec![],
        csr: None,
        certificates: vec![],
        decommission: None,
        last_review: Some(LastReview {
            campaign: "2026-q2".into(),
            decision: "keep".into(),
            by: "alice@example.com".into(),
            at: days_ago(30),
        }),
    }
}

/// The same agent with a client secret and bearer tokens.
fn with_secret(name: &str, client: &str) -> Agent {
    let mut a = agent(name, client);
    a.credential_kind = CredentialKind::Secret;
    a.token_binding = TokenBinding::None;
    a.secret_version = Some("v1".into());
    a
}

fn risky(name: &str, client: &str) -> Agent {
    let mut a = agent(name, client);
    a.scopes.push("datadog:monitors:write".into());
    a.credential_issued_at = Some(days_ago(200));
    a.token_lifetime_secs = 60 * 60;
    a.flags.push(AgentFlag::Anomaly {
        rule: "ip-outside-ranges".into(),
        severity: Severity::High,
        detail: "request from 203.0.113.9".into(),
        at: days_ago(1),
    });
    a.last_review = None;
    a
}

fn unregistered(name: &str, client: &str) -> Agent {
    let mut a = agent(name, client);
    a.status = AgentStatus::Unregistered;
    a.owner = String::new();
    a.last_review = None;
    a.created_at = days_ago(2);
    a.credential_issued_at = None;
    a
}

fn build(
    agents: &[Agent],
    policy: &Policy,
    audit_streaming: bool,
    discovery_ran: bool,
) -> PostureReport {
    PostureReport::build(&PostureInput {
        agents,
        policy,
        now: now(),
        audit_streaming,
        discovery_ran,
    })
}

fn find<'r>(r: &'r PostureReport, name: &str) -> &'r AgentPosture {
    r.agents
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("{name} not in the report"))
}

#[test]
fn a_well_governed_agent_scores_low_and_passes_every_check() {
    let p = policy();
    let r = build(&[agent("good-agent-prod", "c1")], &p, true, true);
    let a = find(&r, "good-agent-prod");
    assert_eq!(a.score, 0, "{:?}", a.factors);
    assert_eq!(a.level, RiskLevel::Low);
    assert!(a.factors.is_empty(), "{:?}", a.factors);
    assert_eq!(a.checklist.len(), item::ALL.len());
    assert!(a.failed_checks().is_empty(), "{:?}", a.checklist);
    assert!(
        a.check(item::MINIMAL_SCOPES)
            .unwrap()
            .detail
            .contains("2 scopes, all approved by policy"),
        "{:?}",
        a.check(item::MINIMAL_SCOPES)
    );
}

#[test]
fn a_risky_agent_scores_high_and_fails_the_right_checks() {
    let p = policy();
    let r = build(&[risky("risky-agent-prod", "c2")], &p, true, true);
    let a = find(&r, "risky-agent-prod");
    let points = |name: &str| {
        a.factors
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.points)
            .unwrap_or(0)
    };
    assert_eq!(points("scope_breadth"), 3);
    assert_eq!(points("sensitive_scopes"), 10);
    assert_eq!(points("credential_age"), 20, "{:?}", a.factors);
    assert_eq!(points("token_lifetime"), 5);
    assert_eq!(points("anomalies"), 20);
    assert_eq!(points("review_overdue"), 10);
    assert_eq!(points("no_owner"), 0);
    assert_eq!(a.score, 68);
    assert_eq!(a.level, RiskLevel::High);
    assert!(
        a.factors.iter().any(|f| f
            .detail
            .contains("200 days old; the prod maximum is 60 days")),
        "{:?}",
        a.factors
    );
    // 60-minute tokens are at the ceiling, not over it; the scopes are all approved.
    assert_eq!(a.failed_checks(), vec![item::ROTATION, item::REVIEWED]);

    // More anomalies, over-long tokens, an owner who left: critical, capped at 100.
    let mut worse = risky("worse-agent-prod", "c3");
    worse.token_lifetime_secs = 2 * 3600;
    worse.flags.push(AgentFlag::Anomaly {
        rule: "credential-sharing".into(),
        severity: Severity::Critical,
        detail: "4 sources".into(),
        at: days_ago(1),
    });
    worse.flags.push(AgentFlag::OwnerLost {
        owner: "alice@example.com".into(),
        since: days_ago(3),
    });
    worse.scopes.push("okta:users:manage".into());
    worse.last_review = Some(LastReview {
        campaign: "2026-q2".into(),
        decision: "unanswered: keep-and-flag".into(),
        by: "deadline".into(),
        at: days_ago(20),
    });
    let r = build(&[worse], &p, false, true);
    let a = find(&r, "worse-agent-prod");
    assert_eq!(a.level, RiskLevel::Critical, "{:?}", a.factors);
    assert!(a.score <= 100);
    assert_eq!(
        a.failed_checks(),
        vec![
            item::MINIMAL_SCOPES,
            item::SHORT_LIVED_TOKENS,
            item::ROTATION,
            item::OWNER_ASSIGNED,
            item::AUDIT_STREAMING
        ]
    );
    let minimal = a.check(item::MINIMAL_SCOPES).unwrap();
    assert!(
        minimal
            .detail
            .contains("excluded by policy: okta:users:manage")
            && minimal.detail.contains("access not re-certified"),
        "{}",
        minimal.detail
    );
}

#[test]
fn a_client_used_by_two_records_is_not_dedicated() {
    let p = policy();
    let mut old = agent("old-agent-prod", "shared-client");
    old.status = AgentStatus::Decommissioned;
    let agents = [
        agent("one-agent-prod", "shared-client"),
        agent("two-agent-prod", "shared-client"),
        agent("three-agent-prod", "own-client"),
        old,
    ];
    let r = build(&agents, &p, true, true);
    assert_eq!(r.summary.agents, 3, "ended records are left out");
    for name in ["one-agent-prod", "two-agent-prod"] {
        let c = find(&r, name)
            .check(item::DEDICATED_CLIENT)
            .unwrap()
            .clone();
        assert!(!c.ok, "{name}: {c:?}");
        assert!(
            c.detail
                .contains("shared-client is shared with 1 other agent record"),
            "{}",
            c.detail
        );
    }
    assert!(find(&r, "three-agent-prod").passes(item::DEDICATED_CLIENT));
    let rate = &r.summary.checklist[0];
    assert_eq!(
        (rate.item.as_str(), rate.passed, rate.total, rate.percent),
        (item::DEDICATED_CLIENT, 1, 3, 33)
    );
}

#[test]
fn maturity_progresses_level_by_level() {
    let mut p = policy();
    p.discovery.enabled = false;

    // A shadow agent and no discovery: ad-hoc.
    let mut agents = vec![
        agent("a-agent-prod", "c1"),
        unregistered("shadow-agent-prod", "c2"),
    ];
    let r = build(&agents, &p, false, false);
    assert_eq!(r.summary.maturity, Maturity::AdHoc);
    assert_eq!(r.summary.next_level, Some(Maturity::Discovery));
    assert!(
        r.summary
            .next_level_missing
            .iter()
            .any(|m| m.contains("enable discovery")),
        "{:?}",
        r.summary.next_level_missing
    );
    let shadow = find(&r, "shadow-agent-prod");
    assert!(!shadow.passes(item::OWNER_ASSIGNED));
    assert!(shadow.factors.iter().any(|f| f.name == "no_owner"));

    // Discovery ran, but half the live agents lack an owner: discovery only.
    let r = build(&agents, &p, false, true);
    assert_eq!(r.summary.maturity, Maturity::Discovery);
    assert_eq!(r.summary.next_level, Some(Maturity::Governance));
    let missing = r.summary.next_level_missing.join("\n");
    assert!(
        missing.contains("1 of 2 do (50%)") && missing.contains("owner_assigned 1"),
        "{missing}"
    );

    // Nine governed agents and the shadow one: 90% are governed.
    agents.extend((0..8).map(|i| agent(&format!("n{i}-agent-prod"), &format!("cn{i}"))));
    let r = build(&agents, &p, false, true);
    assert_eq!(r.summary.maturity, Maturity::Governance);
    assert_eq!(r.summary.next_level, Some(Maturity::Detection));
    assert_eq!(
        r.summary.next_level_missing,
        vec!["stream the audit trail out of Steward (e.g. to a SIEM)".to_string()]
    );

    // Detection needs rules as well as the stream.
    let mut no_rules = p.clone();
    no_rules.detection.rules.clear();
    let r = build(&agents, &no_rules, true, true);
    assert_eq!(r.summary.maturity, Maturity::Governance);
    assert!(r.summary.next_level_missing[0].contains("at least one anomaly detection rule"));

    // Audit streams and detection has rules: detection; the shadow agent blocks the rest.
    let r = build(&agents, &p, true, true);
    assert_eq!(r.summary.maturity, Maturity::Detection);
    assert_eq!(r.summary.next_level, Some(Maturity::FullGovernance));
    assert!(
        r.summary
            .next_level_missing
            .contains(&"claim or release 1 unregistered agent".to_string()),
        "{:?}",
        r.summary.next_level_missing
    );

    // The shadow agent is claimed (its record now governed): full governance.
    agents[1] = agent("shadow-agent-prod", "c2");
    let r = build(&agents, &p, true, true);
    assert_eq!(r.summary.maturity, Maturity::FullGovernance);
    assert_eq!(r.summary.next_level, None);
    assert!(r.summary.next_level_missing.is_empty());
    assert!(r.summary.checklist.iter().all(|c| c.percent == 100));
}

#[test]
fn discovery_enabled_with_no_shadow_agent_counts_as_discovery() {
    let p = policy();
    assert!(p.discovery.enabled);
    let r = build(&[agent("a-agent-prod", "c1")], &p, false, false);
    assert_eq!(r.summary.maturity, Maturity::Governance);
    let r = build(
        &[
            agent("a-agent-prod", "c1"),
            unregistered("s-agent-prod", "c2"),
        ],
        &p,
        false,
        false,
    );
    assert_eq!(r.summary.maturity, Maturity::AdHoc);
}

#[test]
fn reviews_fall_due_after_the_period() {
    let p = policy();
    let mut fresh = agent("fresh-agent-prod", "c1");
    fresh.last_review = None;
    fresh.created_at = days_ago(5);
    let mut stale = agent("stale-agent-prod", "c2");
    stale.last_review.as_mut().unwrap().at = days_ago(200);
    let r = build(&[fresh, stale], &p, true, true);
    let fresh = find(&r, "fresh-agent-prod").check(item::REVIEWED).unwrap();
    assert!(
        fresh.ok && fresh.detail.starts_with("not yet due"),
        "{fresh:?}"
    );
    let stale = find(&r, "stale-agent-prod");
    assert!(!stale.passes(item::REVIEWED));
    assert!(stale.factors.iter().any(|f| f.name == "review_overdue"));
}

#[test]
fn pending_agents_are_reported_but_not_counted_as_live() {
    let p = policy();
    let mut pending = agent("new-agent-prod", "unused");
    pending.status = AgentStatus::PendingApproval;
    pending.client_id = None;
    pending.credential_issued_at = None;
    let r = build(&[pending, agent("a-agent-prod", "c1")], &p, true, true);
    assert_eq!((r.summary.agents, r.summary.live_agents), (2, 1));
    let a = find(&r, "new-agent-prod");
    assert!(!a.passes(item::DEDICATED_CLIENT) && !a.passes(item::ROTATION));
    assert_eq!(r.summary.maturity, Maturity::FullGovernance);
}

#[test]
fn table_and_json_show_the_report() {
    let p = policy();
    let r = build(
        &[
            agent("good-agent-prod", "c1"),
            risky("risky-agent-prod", "c2"),
        ],
        &p,
        false,
        true,
    );
    let table = r.to_table();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME "), "{table}");
    assert!(lines[0].ends_with("FAILED CHECKS"), "{table}");
    assert!(
        lines[1].starts_with("risky-agent-prod"),
        "riskiest first:\n{table}"
    );
    assert!(
        lines[1].contains(" 68  high ")
            && lines[1].ends_with("rotation, reviewed, audit_streaming"),
        "{table}"
    );
    // Columns line up: LEVEL starts at the same offset on every row.
    let col = lines[0].find("LEVEL").unwrap();
    assert_eq!(&lines[1][col..col + 4], "high", "{table}");
    assert_eq!(&lines[2][col..col + 3], "low", "{table}");
    // The risky agent's old secret keeps half the live agents ungoverned.
    assert!(table.contains("Maturity: discovery (2 of 5"), "{table}");
    assert!(
        table.contains("To reach governance:\n  - 90% of live agents"),
        "{table}"
    );
    let rotation = lines
        .iter()
        .find(|l| l.trim_start().starts_with("rotation "))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        rotation.split_whitespace().collect::<Vec<_>>(),
        ["rotation", "1/2", "50%"]
    );

    let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    assert_eq!(v["summary"]["maturity"], "discovery");
    assert_eq!(v["summary"]["next_level"], "governance");
    assert_eq!(v["agents"][0]["name"], "risky-agent-prod");
    assert_eq!(v["agents"][0]["level"], "high");
    assert_eq!(v["agents"][0]["status"], "active");
    assert_eq!(v["agents"][0]["checklist"][0]["item"], "dedicated_client");
    let back: PostureReport = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn shared_secrets_and_bearer_tokens_fail_their_checks_and_are_counted() {
    let mut p = policy();
    p.credentials
        .binding
        .insert("prod".into(), TokenBinding::Dpop);
    // A secret whose tokens are bound: no shared secret fails, bound tokens passes.
    let mut secret_bound = agent("secret-bound-agent-prod", "c3");
    secret_bound.credential_kind = CredentialKind::Secret;
    // Frozen: live (its pass rates count) but not active (the counts do not).
    let mut frozen = with_secret("frozen-bearer-agent-prod", "c4");
    frozen.status = AgentStatus::Frozen;
    let agents = [
        agent("keyed-agent-prod", "c1"),
        with_secret("bearer-agent-prod", "c2"),
        secret_bound,
        frozen,
    ];
    let r = build(&agents, &p, true, true);

    let keyed = find(&r, "keyed-agent-prod");
    assert!(keyed.failed_checks().is_empty(), "{:?}", keyed.checklist);
    assert!(
        keyed
            .check(item::NO_SHARED_SECRET)
            .unwrap()
            .detail
            .contains("its own key (private_key_jwt)"),
        "{:?}",
        keyed.checklist
    );
    assert!(
        keyed
            .check(item::BOUND_TOKENS)
            .unwrap()
            .detail
            .contains("DPoP-bound"),
        "{:?}",
        keyed.checklist
    );

    let bearer = find(&r, "bearer-agent-prod");
    assert_eq!(
        bearer.failed_checks(),
        vec![item::NO_SHARED_SECRET, item::BOUND_TOKENS]
    );
    let bound = &bearer.check(item::BOUND_TOKENS).unwrap().detail;
    assert!(
        bound.starts_with("bearer tokens") && bound.contains("prod now requires dpop-bound tokens"),
        "{bound}"
    );
    assert!(
        bearer
            .check(item::NO_SHARED_SECRET)
            .unwrap()
            .detail
            .contains("client secret"),
        "{:?}",
        bearer.checklist
    );
    assert_eq!(
        find(&r, "secret-bound-agent-prod").failed_checks(),
        vec![item::NO_SHARED_SECRET]
    );

    let s = &r.summary;
    assert_eq!(
        (
            s.active_agents,
            s.key_bound_agents,
            s.bound_token_agents,
            s.bearer_only_agents
        ),
        (3, 1, 2, 1)
    );
    assert_eq!(
        s.bearer_only,
        vec![AgentRef {
            agent_id: "agt-bearer-agent-prod".into(),
            name: "bearer-agent-prod".into(),
            environment: "prod".into(),
        }]
    );
    // Pass rates are of the live agents (the frozen one included).
    let rate = |i: &str| {
        let r = s.checklist.iter().find(|c| c.item == i).unwrap();
        (r.passed, r.total)
    };
    assert_eq!(rate(item::NO_SHARED_SECRET), (1, 4));
    assert_eq!(rate(item::BOUND_TOKENS), (2, 4));

    // Every governance item passes, the audit trail streams: detection. Full governance needs
    // every live agent on its own key with bound tokens.
    assert_eq!(s.maturity, Maturity::Detection);
    assert_eq!(s.next_level, Some(Maturity::FullGovernance));
    let missing = s.next_level_missing.join("\n");
    assert!(
        missing.contains("1 of 4 do (25%)")
            && missing.contains("failing: no_shared_secret 3, bound_tokens 2;"),
        "{missing}"
    );

    let table = r.to_table();
    assert!(
        table.contains(
            "Credentials (3 active agents): 1 hold their own key (no shared secret), 2 have bound tokens, 1 bearer-only\n  bearer-only: bearer-agent-prod (prod)\n"
        ),
        "{table}"
    );
    let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    assert_eq!(v["summary"]["bearer_only_agents"], 1);
    assert_eq!(v["summary"]["bearer_only"][0]["name"], "bearer-agent-prod");

    // Every active agent on its own key with bound tokens: nobody is bearer-only.
    let r = build(&agents[..1], &p, true, true);
    assert_eq!(r.summary.maturity, Maturity::FullGovernance);
    assert_eq!(r.summary.bearer_only_agents, 0);
    assert!(
        r.to_table()
            .contains("Credentials (1 active agent): 1 hold their own key (no shared secret), 1 have bound tokens, 0 bearer-only\n\n"),
        "{}",
        r.to_table()
    );
}

#[test]
fn the_summary_names_the_first_bearer_only_agents_and_counts_them_all() {
    let p = policy();
    let agents: Vec<Agent> = (0..BEARER_ONLY_LISTED + 5)
        .rev()
        .map(|i| with_secret(&format!("b{i:02}-agent-prod"), &format!("c{i}")))
        .collect();
    let r = build(&agents, &p, true, true);
    let s = &r.summary;
    assert_eq!(s.bearer_only_agents, BEARER_ONLY_LISTED + 5);
    assert_eq!(s.bearer_only.len(), BEARER_ONLY_LISTED);
    assert_eq!(s.bearer_only[0].name, "b00-agent-prod", "by name");
    assert_eq!(
        s.bearer_only.last().unwrap().name,
        format!("b{:02}-agent-prod", BEARER_ONLY_LISTED - 1)
    );
    assert!(r.to_table().contains(", and 5 more\n"), "{}", r.to_table());
}

#[test]
fn a_summary_kept_before_the_credential_counts_reads_them_as_zero() {
    let r = build(&[with_secret("a-agent-prod", "c1")], &policy(), true, true);
    let mut v = serde_json::to_value(&r.summary).unwrap();
    for k in [
        "active_agents",
        "key_bound_agents",
        "bound_token_agents",
        "bearer_only_agents",
        "bearer_only",
    ] {
        assert!(v.as_object_mut().unwrap().remove(k).is_some(), "{k}");
    }
    let old: Summary = serde_json::from_value(v).unwrap();
    assert_eq!((old.active_agents, old.bearer_only_agents), (0, 0));
    assert!(old.bearer_only.is_empty());
}

/// A key Steward generated and hands out from the vault is copyable like a secret: it fails
/// `no_shared_secret` (saying how to pass) and is not counted as an agent holding its own key.
#[test]
fn a_steward_held_key_is_no_key_of_the_agents_own() {
    let p = policy();
    let mut held = agent("vaulted-key-agent-prod", "c5");
    held.key_custody = statemachines::credential::KeyCustody::Steward;
    held.secret_version = Some("v1".into());
    let agents = [agent("keyed-agent-prod", "c1"), held];
    let r = build(&agents, &p, true, true);
    let held = find(&r, "vaulted-key-agent-prod");
    assert_eq!(held.failed_checks(), vec![item::NO_SHARED_SECRET]);
    assert!(
        held.check(item::NO_SHARED_SECRET)
            .unwrap()
            .detail
            .contains("have the agent keep its own key"),
        "{:?}",
        held.checklist
    );
    assert_eq!(
        (r.summary.active_agents, r.summary.key_bound_agents),
        (2, 1)
    );
}
