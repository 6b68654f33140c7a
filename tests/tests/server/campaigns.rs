//! Access-review campaigns end to end: the real `steward serve` with a local fake of Slack's
//! Web API. 200 agents across 20 owners are reviewed: owners answer Keep, Reduce and Revoke by
//! clicking in Slack (signed `block_actions`), the rest stay unanswered, get reminded, escalate
//! to their managers, and at the deadline get the campaign's default; the evidence report
//! matches what happened. A second test kills the server in the middle of a launch (once right
//! after Slack accepted a message, before it was recorded) and checks every item reached Slack
//! exactly once.

use crate::fake_slack::{BOT_TOKEN, Click, FakeSlack};
use crate::support::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SECURITY_CHANNEL: &str = "C0SECURITY";
const READ: &str = "erp:orders:read";
const INVENTORY: &str = "erp:inventory:read";

fn owner(i: usize) -> String {
    format!("owner{i:02}@example.com")
}
fn owner_slack(i: usize) -> String {
    format!("U0OWNER{i:02}")
}
fn lead(j: usize) -> String {
    format!("lead{j}@example.com")
}

/// The example people file plus `owners` owners (with Slack ids) and four team leads.
fn people(owners: usize) -> String {
    let mut p = PEOPLE.to_string();
    for j in 0..4 {
        p.push_str(&format!(
            "\n[[person]]\nemail = \"{}\"\nname = \"Lead {j}\"\nchat = \"U0LEAD{j}\"\n",
            lead(j)
        ));
    }
    for i in 0..owners {
        p.push_str(&format!(
            "\n[[person]]\nemail = \"{}\"\nname = \"Owner {i}\"\nmanager = \"{}\"\nchat = \"{}\"\n",
            owner(i),
            lead(i % 4),
            owner_slack(i)
        ));
    }
    p
}

fn fake_slack(owners: usize) -> FakeSlack {
    let mut users: Vec<(String, String)> =
        (0..owners).map(|i| (owner(i), owner_slack(i))).collect();
    users.extend((0..4).map(|j| (lead(j), format!("U0LEAD{j}"))));
    users.push((SAM.into(), "U0SAM".into()));
    let users: Vec<(&str, &str)> = users
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    FakeSlack::start(&users)
}

fn options(slack: &FakeSlack, owners: usize, reviews: &str, multiplier: &str) -> Options {
    let mut o = Options::default()
        .env("STEWARD_SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("STEWARD_SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env("STEWARD_SLACK_API_URL", &slack.api_url())
        .env("STEWARD_SLACK_SECURITY_CHANNEL", SECURITY_CHANNEL)
        .env("STEWARD_SLACK_RATE_MULTIPLIER", multiplier);
    o.people = people(owners);
    let start = o
        .policy
        .find("[reviews]")
        .expect("the example policy has [reviews]");
    o.policy.truncate(start);
    o.policy.push_str(reviews);
    o
}

/// Onboards `n` agents in dev (no approval needed), owner `i % owners`; returns their names.
fn onboard(s: &Server, n: usize, owners: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("svc{i:03}-agent-dev")).collect();
    for (i, name) in names.iter().enumerate() {
        s.request_ok(&agent_request(
            name,
            "dev",
            &owner(i % owners),
            &[READ, INVENTORY],
        ));
    }
    wait_until("every agent active", Duration::from_secs(120), || {
        let active = s
            .agents()
            .iter()
            .filter(|a| a["status"] == "active")
            .count();
        (active == n).then_some(())
    });
    names
}

/// A click on a review message as Slack delivers it: the button, and the scopes picked in the
/// message's multi-select. Returns what Steward answered the clicker.
fn click(
    s: &Server,
    slack: &FakeSlack,
    user: &str,
    action: &str,
    item: &str,
    drop: &[&str],
    n: u32,
) -> String {
    let (status, v) = Click::review(user, action, item, drop, n).send(s, slack, SIGNING_SECRET);
    assert_eq!(status, 200, "{v}");
    v["text"].as_str().unwrap_or_default().to_string()
}

/// The review item each tagged owner message is about: item id → posted body (exactly one each).
fn owner_messages(slack: &FakeSlack, campaign: &str) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for body in slack.tagged_posts(&format!("review-{campaign}-")) {
        let key = body["metadata"]["event_payload"]["key"]
            .as_str()
            .unwrap()
            .to_string();
        if let Some(item) = key.strip_suffix("/owner") {
            out.entry(item.to_string()).or_default().push(body);
        }
    }
    out
}

fn tagged_count(slack: &FakeSlack, campaign: &str, route: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for body in slack.tagged_posts(&format!("review-{campaign}-")) {
        let key = body["metadata"]["event_payload"]["key"].as_str().unwrap();
        let (item, r) = key.split_once('/').unwrap();
        if r.starts_with(route) {
            *out.entry(item.to_string()).or_default() += 1;
        }
    }
    out
}

fn progress(s: &Server, id: &str) -> Value {
    s.get_ok(&format!("/api/campaigns/{id}"))
}

fn report_text(s: &Server, id: &str, format: &str) -> String {
    let r = s
        .http()
        .get(s.url(&format!("/api/campaigns/{id}/report?format={format}")))
        .bearer_auth(&s.token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().unwrap()
}

#[test]
fn campaign_for_200_agents_across_20_owners_through_slack() {
    const OWNERS: usize = 20;
    let slack = fake_slack(OWNERS);
    let reviews = "[reviews]\nremind_before = \"50s\"\nescalate_before = \"30s\"\nunanswered = \"keep-and-flag\"\n";
    let opts = options(&slack, OWNERS, reviews, "20");
    let s = Server::start_with(opts);
    let names = onboard(&s, 200, OWNERS);

    // Evidence: one agent used one of its scopes.
    let first = s.agent(&names[0]);
    let (_, secret) = s.vault_secret(first["id"].as_str().unwrap());
    s.token_ok(first["client_id"].as_str().unwrap(), &secret, Some(READ));

    // Slack is over its limit for the first posts: Steward waits as told and loses nothing.
    slack.throttle_next_posts(3);
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(80);
    let (status, started) = s.post_as(
        SAM,
        "/api/campaigns",
        &json!({"id": "2026-q4", "name": "Q4 2026 access review",
                "deadline": deadline, "unanswered": "freeze"}),
    );
    assert_eq!(status, 202, "{started}");
    // The same launch again is recognised; the same id for something else is refused.
    let (again, _) = s.post_as(
        SAM,
        "/api/campaigns",
        &json!({"id": "2026-q4", "name": "Q4 2026 access review",
                "deadline": deadline, "unanswered": "freeze"}),
    );
    assert_eq!(again, 200);
    let (other, body) = s.post_as(SAM, "/api/campaigns", &json!({"id": "2026-q4"}));
    assert_eq!(other, 409, "{body}");

    let posts = wait_until("an owner message per item", Duration::from_secs(60), || {
        let m = owner_messages(&slack, "2026-q4");
        (m.len() == 200).then_some(m)
    });
    for (item, bodies) in &posts {
        assert_eq!(bodies.len(), 1, "{item} was sent {} times", bodies.len());
    }
    assert_eq!(slack.calls_of("chat.postMessage/429").len(), 3);
    // Each owner got exactly their own agents' items, in their DM.
    let mut per_owner: HashMap<String, usize> = HashMap::new();
    for bodies in posts.values() {
        *per_owner
            .entry(bodies[0]["_posted_channel"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_owner.len(), OWNERS);
    assert!(per_owner.values().all(|&n| n == 10), "{per_owner:?}");

    // What the owner sees: the agent, its scopes with last use, credential age, the answers.
    let agent_of = |body: &Value| -> String {
        let text = body["text"].as_str().unwrap();
        text.split_whitespace().nth(3).unwrap().to_string()
    };
    let by_agent: HashMap<String, String> = posts
        .iter()
        .map(|(item, b)| (agent_of(&b[0]), item.clone()))
        .collect();
    let used = &posts[&by_agent[&names[0]]][0];
    let shown = used["blocks"].to_string();
    assert!(shown.contains("used today"), "{shown}");
    assert!(shown.contains("no token used it"), "{shown}");
    assert!(shown.contains("Credential age"), "{shown}");
    for action in [
        "review_keep",
        "review_reduce",
        "review_revoke",
        "review_drop",
    ] {
        assert!(shown.contains(action), "{action} missing: {shown}");
    }

    // Owners answer: 30 Keep, 30 Reduce (drop the inventory scope), 30 Revoke; 110 stay open.
    let mut n = 0;
    let mut answer = |i: usize, action: &str, drop: &[&str]| {
        n += 1;
        let item = &by_agent[&names[i]];
        click(&s, &slack, &owner_slack(i % OWNERS), action, item, drop, n)
    };
    for i in 0..30 {
        let said = answer(i, "review_keep", &[]);
        assert!(said.contains("Received your keep"), "{said}");
    }
    for i in 30..60 {
        answer(i, "review_reduce", &[INVENTORY]);
    }
    for i in 60..90 {
        answer(i, "review_revoke", &[]);
    }
    // Refused, changing nothing: someone else's owner, and a Reduce that drops everything.
    let said = click(
        &s,
        &slack,
        &owner_slack(1),
        "review_keep",
        &by_agent[&names[100]],
        &[],
        900,
    );
    assert!(said.contains("may not answer"), "{said}");
    let said = click(
        &s,
        &slack,
        &owner_slack(101 % OWNERS),
        "review_reduce",
        &by_agent[&names[101]],
        &[READ, INVENTORY],
        901,
    );
    assert!(said.contains("answer Revoke instead"), "{said}");

    let p = wait_until("the 90 answers applied", SETTLE, || {
        let p = progress(&s, "2026-q4");
        (p["keep"] == 30 && p["reduce"] == 30 && p["revoke"] == 30).then_some(p)
    });
    assert_eq!(p["items"], 200);

    // Reminder, escalation to the manager, then the deadline's default for the 110 open items.
    let mut last = Value::Null;
    let until = std::time::Instant::now() + Duration::from_secs(150);
    let p = loop {
        let p = progress(&s, "2026-q4");
        if p["decided"] == 200 && p["applying"] == 0 && p["state"] == "Closed" {
            break p;
        }
        assert!(
            std::time::Instant::now() < until,
            "the deadline did not apply the default: {last}\n{}",
            s.log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        last = p;
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(p["defaulted"], 110, "{p}");
    assert_eq!(p["action_failed"], 0, "{p}");
    let reminders = tagged_count(&slack, "2026-q4", "reminder");
    let escalations = tagged_count(&slack, "2026-q4", "escalation");
    assert_eq!(reminders.len(), 110, "one reminder per open item");
    assert_eq!(escalations.len(), 110, "one escalation per open item");
    assert!(
        reminders
            .values()
            .chain(escalations.values())
            .all(|&n| n == 1)
    );
    for i in 0..90 {
        assert!(!escalations.contains_key(&by_agent[&names[i]]));
    }
    let escalated = slack
        .tagged_posts(&format!("{}/escalation", by_agent[&names[95]]))
        .pop()
        .unwrap();
    assert_eq!(
        escalated["_posted_channel"],
        format!("D0LEAD{}", (95 % OWNERS) % 4)
    );

    // The actions: scopes reduced, agents decommissioned, unanswered ones frozen.
    wait_until("decommissions finished", Duration::from_secs(60), || {
        (60..90)
            .all(|i| s.agent(&names[i])["status"] == "decommissioned")
            .then_some(())
    });
    for name in &names[30..60] {
        assert_eq!(strings(&s.agent(name)["scopes"]), [READ]);
    }
    for name in &names[90..200] {
        assert_eq!(s.agent(name)["status"], "frozen", "{name}");
    }
    let frozen = s.agent(&names[150]);
    let (_, fsecret) = s.vault_secret(frozen["id"].as_str().unwrap());
    let (code, _, _) = s.token(frozen["client_id"].as_str().unwrap(), &fsecret, None);
    assert!(code >= 400, "a frozen agent gets no token");
    assert_eq!(strings(&s.agent(&names[0])["scopes"]), [READ, INVENTORY]);

    // The evidence report matches.
    let report: Value = serde_json::from_str(&report_text(&s, "2026-q4", "json")).unwrap();
    let rows = report["items"].as_array().unwrap();
    assert_eq!(rows.len(), 200);
    let row = |i: usize| {
        rows.iter()
            .find(|r| r["agent"] == names[i].as_str())
            .unwrap_or_else(|| panic!("no row for {}", names[i]))
    };
    for i in 0..200 {
        let r = row(i);
        let (decision, by, action, state) = match i {
            0..30 => ("keep", Some(owner(i % OWNERS)), Value::Null, Value::Null),
            30..60 => (
                "reduce",
                Some(owner(i % OWNERS)),
                json!("scope_change"),
                json!("Applied"),
            ),
            60..90 => (
                "revoke",
                Some(owner(i % OWNERS)),
                json!("decommission"),
                json!("Decommissioned"),
            ),
            _ => ("unanswered", None, json!("freeze"), Value::Null),
        };
        assert_eq!(r["decision"], decision, "{r}");
        assert_eq!(r["decided_by"], json!(by), "{r}");
        assert_eq!(r["action"], action, "{r}");
        assert_eq!(r["action_state"], state, "{r}");
        assert!(r["time_to_decision_secs"].as_i64().unwrap() >= 0);
        if i >= 90 {
            assert_eq!(r["default_applied"], "freeze");
            assert_eq!(r["escalated"], true);
            assert_eq!(r["action_ok"], true);
        } else {
            assert_eq!(r["default_applied"], Value::Null);
            assert_eq!(r["escalated"], false);
        }
        if (30..60).contains(&i) {
            assert_eq!(strings(&r["dropped"]), [INVENTORY]);
        }
    }
    let csv = report_text(&s, "2026-q4", "csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 201);
    assert!(
        lines[0].starts_with("item_id,agent_id,agent,owner"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.iter().filter(|l| l.contains(",freeze,")).count(), 110);
    let md = report_text(&s, "2026-q4", "md");
    for line in [
        "| kept | 30 |",
        "| reduced | 30 |",
        "| revoked | 30 |",
        "| unanswered (default applied) | 110 |",
        "| still open | 0 |",
    ] {
        assert!(md.contains(line), "{line} missing:\n{md}");
    }

    // Owner messages show the outcome without buttons.
    let kept = &posts[&by_agent[&names[0]]][0];
    let now = slack.message(
        kept["_posted_channel"].as_str().unwrap(),
        kept["_posted_ts"].as_str().unwrap(),
    );
    assert!(now["blocks"].to_string().contains("Kept"), "{now}");
    assert!(!now["blocks"].to_string().contains("review_keep"), "{now}");

    // The CLI: progress bar and counts, and the three report files.
    let (out, stdout, stderr) = run(&mut s.cli(["campaigns", "show", "2026-q4"]));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("[##############################] 100%"),
        "{stdout}"
    );
    assert!(stdout.contains("200/200 resolved"), "{stdout}");
    assert!(
        stdout.contains("keep 30 · reduce 30 · revoke 30"),
        "{stdout}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (out, _, stderr) = run(&mut s.cli([
        "campaigns",
        "report",
        "2026-q4",
        "--out",
        dir.path().to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{stderr}");
    for ext in ["json", "csv", "md"] {
        assert!(dir.path().join(format!("2026-q4.{ext}")).exists());
    }

    // The audit trail has every decision, and the refused clicks.
    let audit = s.audit();
    let decided = audit
        .iter()
        .filter(|r| r["unmapped"]["steward_event"] == "review_decided")
        .count();
    assert_eq!(decided, 90);
    assert_eq!(
        audit
            .iter()
            .filter(|r| r["unmapped"]["steward_event"] == "review_defaulted")
            .count(),
        110
    );
    assert!(
        messages(&audit)
            .iter()
            .any(|m| m.contains("may not answer the review"))
    );
    slack.assert_well_formed();
}

#[test]
fn restart_in_the_middle_of_a_launch_sends_every_item_once() {
    const OWNERS: usize = 8;
    let slack = fake_slack(OWNERS);
    let reviews = "[reviews]\nremind_before = \"off\"\nescalate_before = \"off\"\n";
    // Slack's own limits: a conversation gets about one post a second, so the launch takes a
    // few seconds and there is a middle to crash in.
    let opts = options(&slack, OWNERS, reviews, "1");
    let mut s = Server::start_with(opts.clone());
    onboard(&s, 40, OWNERS);
    s.kill();

    // First: abort right after Slack accepted an item's message, before it was recorded.
    let crashing = opts
        .clone()
        .env("STEWARD_CRASH_AFTER", "slack.review_posted");
    s.spawn(&crashing);
    let (status, body) = s.post_as(SAM, "/api/campaigns", &json!({"id": "restart-test"}));
    assert_eq!(status, 202, "{body}");
    let exit = s.wait_exit(Duration::from_secs(30));
    assert!(!exit.success(), "the fault injection aborts the server");
    // One lane aborted right after its post; the other lanes (4) may each have had one out.
    let posted = owner_messages(&slack, "restart-test").len();
    assert!(
        (1..=4).contains(&posted),
        "{posted} posted before the abort"
    );

    // Then: a plain kill (SIGKILL) while items are going out.
    s.spawn(&opts);
    wait_until("part of the launch", Duration::from_secs(60), || {
        (owner_messages(&slack, "restart-test").len() >= 12).then_some(())
    });
    s.kill();
    let sent_before = owner_messages(&slack, "restart-test").len();
    assert!(
        sent_before < 40,
        "the kill came in the middle ({sent_before} sent)"
    );

    s.spawn(&opts);
    let posts = wait_until("every item sent", Duration::from_secs(120), || {
        let m = owner_messages(&slack, "restart-test");
        (m.len() == 40).then_some(m)
    });
    // Give a late duplicate the chance to show up.
    std::thread::sleep(Duration::from_secs(3));
    let posts_after = owner_messages(&slack, "restart-test");
    assert_eq!(posts_after.len(), 40);
    for (item, bodies) in &posts_after {
        assert_eq!(bodies.len(), 1, "{item} was sent {} times", bodies.len());
    }
    assert_eq!(posts.len(), 40);
    assert!(
        !slack.calls_of("conversations.history").is_empty(),
        "the message posted before the abort was found in the conversation, not posted again"
    );
    let p = wait_until("the campaign reviewing", SETTLE, || {
        let p = progress(&s, "restart-test");
        (p["state"] == "Reviewing").then_some(p)
    });
    assert_eq!(p["items"], 40);
    assert_eq!(p["open"], 40);
    slack.assert_well_formed();
}

/// The API takes the unanswered default as the policy file, the CLI and the README write it
/// (`keep-and-flag`) as well as its snake-case form, and refuses anything else naming the
/// choices, launching nothing.
#[test]
fn the_api_takes_the_unanswered_default_as_the_docs_write_it() {
    let s = Server::start();
    s.active_dev_agent("metrics-reader-agent-dev");
    for (id, unanswered) in [("dash-a", "keep-and-flag"), ("dash-b", "keep_and_flag")] {
        let (status, body) = s.post_as(
            SAM,
            "/api/campaigns",
            &json!({"id": id, "unanswered": unanswered}),
        );
        assert_eq!(status, 202, "{unanswered}: {body}");
        assert_eq!(
            progress(&s, id)["unanswered_default"],
            "keep_and_flag",
            "{unanswered}"
        );
    }
    let (status, body) = s.post_as(
        SAM,
        "/api/campaigns",
        &json!({"id": "dash-c", "unanswered": "sometimes"}),
    );
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(
        body.to_string().contains("keep_and_flag"),
        "the refusal names the choices: {body}"
    );
    let (status, _) = s.get_as(SAM, "/api/campaigns/dash-c");
    assert_eq!(status, 404, "nothing was launched");
}

/// Someone who left loses the power to answer a review at once, in Slack as on the API: the
/// owner's click after the people file marks them inactive is refused, audited, and the item
/// stays open for the escalation or the default.
#[test]
fn a_departed_owner_cannot_answer_a_review_in_slack() {
    const OWNERS: usize = 1;
    let slack = fake_slack(OWNERS);
    let reviews = "[reviews]\nremind_before = \"off\"\nescalate_before = \"off\"\n";
    let opts = options(&slack, OWNERS, reviews, "100");
    let mut s = Server::start_with(opts.clone());
    onboard(&s, 1, OWNERS);
    let (status, body) = s.post_as(SAM, "/api/campaigns", &json!({"id": "departed"}));
    assert_eq!(status, 202, "{body}");
    let item = wait_until("the item sent", SETTLE, || {
        owner_messages(&slack, "departed").keys().next().cloned()
    });
    s.kill();
    let email = format!("email = \"{}\"\n", owner(0));
    assert!(opts.people.contains(&email));
    let left = opts
        .people
        .replace(&email, &format!("{email}active = false\n"));
    std::fs::write(&s.people_path, left).unwrap();
    s.spawn(&opts);
    let said = click(&s, &slack, &owner_slack(0), "review_keep", &item, &[], 1);
    assert!(said.contains("no longer active"), "{said}");
    assert_eq!(progress(&s, "departed")["open"], 1);
    assert!(
        s.audit()
            .iter()
            .any(|r| r["unmapped"]["steward_event"] == "refused"
                && r.to_string().contains("no longer active")),
        "the refused click is audited"
    );
}

/// The evidence report's CSV opens in a spreadsheet without running anything: a team name (free
/// text in the manifest) that a spreadsheet would take for a formula is written as text.
#[test]
fn the_reports_csv_runs_no_formula() {
    const TEAM: &str = "=HYPERLINK(\"https://evil.example\",\"open\")";
    let s = Server::start();
    let mut request = agent_request("formula-agent-dev", "dev", ALICE, &[READ]);
    request["team"] = json!(TEAM);
    s.request_ok(&request);
    s.wait_agent_status("formula-agent-dev", "active");
    let (status, body) = s.post_as(
        SAM,
        "/api/campaigns",
        &json!({"id": "csv-q1", "scope": {"teams": [TEAM]}}),
    );
    assert_eq!(status, 202, "{body}");
    let csv = wait_until("the report's row", SETTLE, || {
        let csv = report_text(&s, "csv-q1", "csv");
        (csv.lines().count() == 2).then_some(csv)
    });
    // RFC 4180 quotes the cell (it holds commas and quotes); inside, it starts with `'`.
    let quoted = |cell: &str| format!("\"{}\"", cell.replace('"', "\"\""));
    assert!(csv.contains(&quoted(&format!("'{TEAM}"))), "{csv}");
    assert!(!csv.contains(&quoted(TEAM)), "{csv}");
}
