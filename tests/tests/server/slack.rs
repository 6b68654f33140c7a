//! Slack as the human channel, end to end: the real `steward serve` configured with a bot
//! token and signing secret, a local fake of Slack's Web API, and clicks signed and shaped
//! exactly as Slack sends them (`block_actions`, v0 signature).

use crate::fake_slack::{self, BOT_TOKEN, FakeSlack, all_text, buttons, post_signed, signature};
use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SECURITY_CHANNEL: &str = "C0SECURITY";
const MONITORS_WRITE: &str = "datadog:monitors:write";
const PAYMENTS_WRITE: &str = "banking:payments:write";

fn slack() -> FakeSlack {
    FakeSlack::start(&[
        (ALICE, "U0ALICE"),
        (BOB, "U0BOB"),
        (SAM, "U0SAM"),
        (PRIYA, "U0PRIYA"),
    ])
}

fn options(slack: &FakeSlack) -> Options {
    Options::default()
        .env("STEWARD_SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("STEWARD_SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env("STEWARD_SLACK_API_URL", &slack.api_url())
        .env("STEWARD_SLACK_SECURITY_CHANNEL", SECURITY_CHANNEL)
}

/// Sets `key = value` in the example policy's `[approvals]` table.
fn with_approval(mut o: Options, key: &str, value: &str) -> Options {
    let set = format!("{key} = {value}");
    match o
        .policy
        .lines()
        .find(|l| l.starts_with(&format!("{key} =")))
    {
        Some(line) => o.policy = o.policy.replace(&line.to_string(), &set),
        None => {
            assert!(o.policy.contains("[approvals]\n"));
            o.policy = o
                .policy
                .replace("[approvals]\n", &format!("[approvals]\n{set}\n"));
        }
    }
    o
}

/// A click on an approval message as Slack delivers it.
struct Click<'a> {
    user: &'a str,
    action: &'a str,
    value: &'a str,
    reason: Option<&'a str>,
    /// The response_url's number (the fake records answers under it).
    n: u32,
}

impl Click<'_> {
    fn slack(&self) -> fake_slack::Click<'_> {
        fake_slack::Click::approval(self.user, self.action, self.value, self.n, self.reason)
    }
}

/// POSTs a signed click to the server; returns (status, body).
fn click(s: &Server, slack: &FakeSlack, c: &Click) -> (u16, Value) {
    c.slack().send(s, slack, SIGNING_SECRET)
}

/// `user` clicks Approve (no reason) on the button `value`; returns what Steward answered them.
fn approve_answer(s: &Server, slack: &FakeSlack, user: &str, value: &str, n: u32) -> String {
    let c = Click {
        user,
        action: "approve",
        value,
        reason: None,
        n,
    };
    click(s, slack, &c);
    answer(slack, n)
}

/// What Steward answered the clicker on response_url `n` (ephemeral).
fn answer(slack: &FakeSlack, n: u32) -> String {
    wait_until("the ephemeral answer", SETTLE, || {
        slack
            .calls_of("respond")
            .into_iter()
            .find(|c| c.body["n"] == n)
            .map(|c| {
                assert_eq!(c.body["body"]["response_type"], "ephemeral", "{:?}", c.body);
                assert_eq!(c.body["body"]["replace_original"], false, "{:?}", c.body);
                c.body["body"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
    })
}

/// The value both buttons of the approval message carry.
fn button_value(post: &Value) -> String {
    let b = buttons(post).expect("approval message has buttons");
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(b[0]["value"], b[1]["value"]);
    b[0]["value"].as_str().unwrap().to_string()
}

/// Requests an agent and waits until its approval message reached Slack `posts` times.
fn request_and_wait_for_posts(
    s: &Server,
    slack: &FakeSlack,
    name: &str,
    scopes: &[&str],
    posts: usize,
) -> (String, Vec<(String, String, Value)>) {
    let started = s.request_ok(&agent_request(name, "prod", ALICE, scopes));
    let workflow = started["workflow_id"].as_str().unwrap().to_string();
    let approval = s.pending_approval(&workflow)["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let found = wait_until("the approval messages", SETTLE, || {
        let mine: Vec<_> = slack
            .approval_posts()
            .into_iter()
            .filter(|(_, _, b)| button_value(b).starts_with(&format!("{approval}:")))
            .collect();
        (mine.len() >= posts).then_some(mine)
    });
    (approval, found)
}

fn decided_records(s: &Server, approval: &str) -> Vec<Value> {
    s.audit()
        .into_iter()
        .filter(|r| {
            r["unmapped"]["steward_event"] == "approval_decided"
                && r["unmapped"]["approval_id"] == approval
        })
        .collect()
}

/// request → Slack message (owner DM and security channel, Block Kit, bot token) → refused
/// self-approval and outsider → signed click by an approver → the agent is provisioned → both
/// messages updated without buttons → the requester is told.
#[test]
fn approval_round_trip_through_slack() {
    let slack = slack();
    // Bob's Slack id is in the people file: he is known, just not an approver.
    let mut opts = options(&slack);
    assert!(opts.people.contains("name = \"Bob Okafor\"\n"));
    opts.people = opts.people.replace(
        "name = \"Bob Okafor\"\n",
        "name = \"Bob Okafor\"\nchat = \"U0BOB\"\n",
    );
    let s = Server::start_with(opts);
    let (approval, posts) =
        request_and_wait_for_posts(&s, &slack, "monitor-fixer-agent-prod", &[MONITORS_WRITE], 2);
    let channels: Vec<&str> = posts.iter().map(|(c, _, _)| c.as_str()).collect();
    assert!(channels.contains(&SECURITY_CHANNEL), "{channels:?}");
    assert!(channels.contains(&"D0ALICE"), "owner DM: {channels:?}");
    let (_, _, post) = &posts[0];
    let text = all_text(post);
    for expected in [
        "monitor-fixer-agent-prod",
        "prod",
        ALICE,
        "Mutes flapping monitors",
        &format!("+ {MONITORS_WRITE}"),
        "Sensitive scopes",
        "Expires",
        "15 min",
    ] {
        assert!(
            text.contains(expected),
            "message lacks {expected:?}: {text}"
        );
    }
    let b = buttons(post).unwrap();
    assert_eq!(b[0]["action_id"], "approve");
    assert_eq!(b[0]["style"], "primary");
    assert_eq!(b[1]["action_id"], "deny");
    assert_eq!(b[1]["style"], "danger");
    assert!(
        b[1]["confirm"]["title"]["text"].is_string(),
        "deny asks to confirm: {b:?}"
    );
    let value = button_value(post);
    let pending = s.pending_approval_by_id(&approval);
    assert_eq!(
        value,
        format!("{approval}:{}", pending["action_hash"].as_str().unwrap()),
        "the buttons carry the hash of what is shown"
    );

    // The requester cannot approve their own request; an outsider cannot either.
    let (status, _) = click(
        &s,
        &slack,
        &Click {
            user: "U0ALICE",
            action: "approve",
            value: &value,
            reason: None,
            n: 1,
        },
    );
    assert_eq!(status, 200);
    assert!(
        answer(&slack, 1).contains("cannot approve"),
        "{}",
        answer(&slack, 1)
    );
    let (status, _) = click(
        &s,
        &slack,
        &Click {
            user: "U0BOB",
            action: "approve",
            value: &value,
            reason: None,
            n: 2,
        },
    );
    assert_eq!(status, 200);
    assert!(
        answer(&slack, 2).contains("is not an allowed approver"),
        "{}",
        answer(&slack, 2)
    );
    // An unknown Slack user is refused too.
    let (status, _) = click(
        &s,
        &slack,
        &Click {
            user: "U0STRANGER",
            action: "approve",
            value: &value,
            reason: None,
            n: 3,
        },
    );
    assert_eq!(status, 200);
    assert!(
        answer(&slack, 3).contains("not one of the allowed approvers"),
        "{}",
        answer(&slack, 3)
    );
    s.wait_idle();
    assert_eq!(
        s.agent("monitor-fixer-agent-prod")["status"],
        "pending_approval"
    );
    assert!(
        slack.calls_of("chat.update").is_empty(),
        "refused clicks change no message"
    );

    // Sam approves, with a reason typed into the message.
    let (status, _) = click(
        &s,
        &slack,
        &Click {
            user: "U0SAM",
            action: "approve",
            value: &value,
            reason: Some("ok for INC-4711"),
            n: 4,
        },
    );
    assert_eq!(status, 200);
    assert!(
        answer(&slack, 4).contains("Received your Approve"),
        "{}",
        answer(&slack, 4)
    );
    // Slack retries a delivery it did not see acknowledged: the same click (same action_ts)
    // counts once.
    let sams_click = Click {
        user: "U0SAM",
        action: "approve",
        value: &value,
        reason: Some("ok for INC-4711"),
        n: 4,
    };
    let (status, _) = click(&s, &slack, &sams_click);
    assert_eq!(status, 200);
    let retried = wait_until("the answer to the retry", SETTLE, || {
        let r: Vec<_> = slack
            .calls_of("respond")
            .into_iter()
            .filter(|c| c.body["n"] == 4)
            .collect();
        (r.len() == 2).then(|| r[1].body["body"]["text"].to_string())
    });
    assert!(
        retried.contains("already"),
        "the retry counts once: {retried}"
    );
    s.wait_agent_status("monitor-fixer-agent-prod", "active");

    let updates = wait_until("both messages updated", SETTLE, || {
        let u = slack.calls_of("chat.update");
        (u.len() >= 2).then_some(u)
    });
    assert_eq!(updates.len(), 2, "one update per message: {updates:#?}");
    for (channel, ts, _) in &posts {
        let now = slack.message(channel, ts);
        assert!(buttons(&now).is_none(), "buttons removed: {now}");
        let text = all_text(&now);
        assert!(text.contains("Approved") && text.contains(SAM), "{text}");
        assert!(
            text.contains("ok for INC-4711"),
            "the reason is shown: {text}"
        );
    }
    let told = wait_until("the requester is told", SETTLE, || {
        slack
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.body["channel"] == "U0ALICE" && all_text(&c.body).contains("Your request"))
    });
    assert!(
        all_text(&told.body).contains("*Approved* by sam.security@example.com"),
        "{:?}",
        told.body
    );

    let decided = decided_records(&s, &approval);
    assert_eq!(decided.len(), 1, "{decided:#?}");
    assert_eq!(decided[0]["actor"]["user"]["email_addr"], SAM);
    let refusals: Vec<String> = messages(&s.audit_failures());
    assert!(
        refusals.iter().any(|m| m.contains("cannot approve")),
        "{refusals:#?}"
    );
    assert!(
        refusals
            .iter()
            .any(|m| m.contains("not one of the allowed approvers")),
        "{refusals:#?}"
    );
    slack.assert_well_formed();
    assert!(
        slack.calls_of("users.lookupByEmail").len() <= 6,
        "lookups are cached: {:#?}",
        slack.calls_of("users.lookupByEmail")
    );
}

/// 50 concurrent clicks (two approvers, Approve and Deny mixed) on one approval: exactly one
/// decision is recorded and each message is updated once.
#[test]
fn fifty_concurrent_clicks_make_one_decision() {
    let slack = slack();
    let s = Server::start_with(options(&slack));
    let (approval, posts) =
        request_and_wait_for_posts(&s, &slack, "race-agent-prod", &[MONITORS_WRITE], 2);
    let value = button_value(&posts[0].2);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50u32)
            .map(|i| {
                let (s, slack, value) = (&s, &slack, &value);
                scope.spawn(move || {
                    let user = if i % 2 == 0 { "U0SAM" } else { "U0PRIYA" };
                    let action = if i % 3 == 0 { "deny" } else { "approve" };
                    click(
                        s,
                        slack,
                        &Click {
                            user,
                            action,
                            value,
                            reason: None,
                            n: 100 + i,
                        },
                    )
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    s.wait_idle();
    let record = s.pending_approval_by_id(&approval);
    assert_ne!(record["outcome"], Value::Null, "decided: {record}");
    assert_eq!(
        decided_records(&s, &approval).len(),
        1,
        "exactly one decision"
    );
    std::thread::sleep(Duration::from_millis(500));
    s.wait_idle();
    let updates = slack.calls_of("chat.update");
    assert_eq!(
        updates.len(),
        posts.len(),
        "one update per message: {updates:#?}"
    );
    slack.assert_well_formed();
}

/// Under a two-person rule one approval is not enough, the same person does not count twice,
/// and the message shows the first vote while it waits.
#[test]
fn two_person_rule_needs_two_distinct_approvers() {
    let slack = slack();
    let opts = with_approval(
        options(&slack),
        "two_person_scopes",
        &format!("[\"{PAYMENTS_WRITE}\"]"),
    );
    let s = Server::start_with(opts);
    let (approval, posts) =
        request_and_wait_for_posts(&s, &slack, "payments-agent-prod", &[PAYMENTS_WRITE], 2);
    let value = button_value(&posts[0].2);
    assert!(all_text(&posts[0].2).contains("Two-person rule"));

    assert!(approve_answer(&s, &slack, "U0SAM", &value, 1).contains("Received"));
    let voted = wait_until("the vote shown", SETTLE, || {
        let u = slack.calls_of("chat.update");
        (u.len() >= 2).then_some(u)
    });
    for u in &voted {
        let text = all_text(&u.body);
        assert!(text.contains("1 of 2"), "{text}");
        assert!(buttons(&u.body).is_some(), "still open: {text}");
    }
    assert_eq!(s.agent("payments-agent-prod")["status"], "pending_approval");

    let answered = approve_answer(&s, &slack, "U0SAM", &value, 2);
    assert!(answered.contains("already approved"), "{answered}");
    s.wait_idle();
    assert_eq!(s.agent("payments-agent-prod")["status"], "pending_approval");

    click(
        &s,
        &slack,
        &Click {
            user: "U0PRIYA",
            action: "approve",
            value: &value,
            reason: None,
            n: 3,
        },
    );
    s.wait_agent_status("payments-agent-prod", "active");
    let wf = s.workflow(
        s.pending_approval_by_id(&approval)["request"]["workflow_id"]
            .as_str()
            .unwrap(),
    );
    let recorded = &wf["workflow"]["state"]["approval"]["approvers"];
    assert_eq!(*recorded, json!([SAM, PRIYA]), "{wf}");
    slack.assert_well_formed();
}

/// A click whose button shows a different request than the one stored is refused; so is a
/// forged, stale or unsigned request. Nothing changes.
#[test]
fn changed_request_and_bad_signatures_are_refused() {
    let slack = slack();
    let s = Server::start_with(options(&slack));
    let (approval, posts) =
        request_and_wait_for_posts(&s, &slack, "hash-agent-prod", &[MONITORS_WRITE], 2);
    let stale = format!("{approval}:{}", "ab".repeat(32));
    let answered = approve_answer(&s, &slack, "U0SAM", &stale, 1);
    assert!(
        answered.contains("changed after this message was shown"),
        "{answered}"
    );

    let value = button_value(&posts[0].2);
    let body = fake_slack::Click::approval("U0SAM", "approve", &value, 2, None).form(&slack);
    let now = chrono::Utc::now().timestamp();
    let ts = now.to_string();
    let (status, v) = post_signed(
        &s,
        &body,
        &ts,
        &signature("not-the-signing-secret", &ts, &body),
    );
    assert_eq!(status, 401, "wrong secret: {v}");
    let (status, v) = post_signed(
        &s,
        &body.replace("approve", "deny"),
        &ts,
        &signature(SIGNING_SECRET, &ts, &body),
    );
    assert_eq!(status, 401, "altered body: {v}");
    let old = (now - 301).to_string();
    let (status, v) = post_signed(&s, &body, &old, &signature(SIGNING_SECRET, &old, &body));
    assert_eq!(status, 401, "stale timestamp: {v}");
    assert!(v["error"].as_str().unwrap().contains("5 minutes"), "{v}");
    let r = s
        .http()
        .post(s.url("/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "missing headers");
    s.wait_idle();
    assert_eq!(s.agent("hash-agent-prod")["status"], "pending_approval");
    assert!(slack.calls_of("chat.update").is_empty());
    // Each reason is recorded (the two mismatches are one reason).
    let refusals = messages(&s.audit_failures());
    for reason in ["does not match", "5 minutes", "missing"] {
        assert!(
            refusals.iter().any(|m| m.contains(reason)),
            "{reason}: {refusals:#?}"
        );
    }

    // Anyone can forge a click: a flood is counted in full and recorded within the refusal
    // window's budget, not one audit write each.
    let bad = s.health()["bad_requests"].as_u64().unwrap();
    let before = s.audit_failures().len();
    let started = std::time::Instant::now();
    let flood = 120u64;
    for i in 0..flood {
        let forged = signature(&format!("guess-{i}"), &ts, &body);
        let (status, v) = post_signed(&s, &body, &ts, &forged);
        assert_eq!(status, 401, "{v}");
    }
    let windows = started.elapsed().as_secs() / shared::http::REFUSAL_WINDOW.as_secs() + 1;
    assert_eq!(
        s.health()["bad_requests"].as_u64().unwrap(),
        bad + flood,
        "every forged click is counted"
    );
    let written = s.audit_failures().len() - before;
    assert!(
        written <= windows as usize,
        "{written} records for {flood} forged clicks in {windows} window(s)"
    );
}

/// The reminder fires from its timer before the expiry (in the request's thread); at the expiry
/// the security channel gets the escalation, the messages show "Expired", the requester is told,
/// and a late click is refused.
#[test]
fn reminder_escalation_and_expiry_fire_from_timers() {
    let slack = slack();
    let opts = with_approval(
        options(&slack).approval_expiry("4s"),
        "remind_before",
        "\"2s\"",
    );
    let s = Server::start_with(opts);
    let (approval, posts) =
        request_and_wait_for_posts(&s, &slack, "sleepy-agent-prod", &[MONITORS_WRITE], 2);
    let value = button_value(&posts[0].2);

    let reminders = wait_until("the reminders", Duration::from_secs(10), || {
        let r: Vec<_> = slack
            .calls_of("chat.postMessage")
            .into_iter()
            .filter(|c| c.body["thread_ts"].is_string())
            .collect();
        (r.len() >= 2).then_some(r)
    });
    for r in &reminders {
        assert!(all_text(&r.body).contains("Reminder"), "{:?}", r.body);
        assert!(
            posts
                .iter()
                .any(|(c, ts, _)| r.body["channel"] == c.as_str()
                    && r.body["thread_ts"] == ts.as_str()),
            "in the request's thread: {:?}",
            r.body
        );
    }
    s.wait_agent_status_for("sleepy-agent-prod", "expired", Duration::from_secs(15));
    let escalation = wait_until("the escalation", SETTLE, || {
        slack.calls_of("chat.postMessage").into_iter().find(|c| {
            c.body["channel"] == SECURITY_CHANNEL
                && all_text(&c.body).contains("Unanswered approval expired")
        })
    });
    assert!(buttons(&escalation.body).is_none());
    wait_until("the messages show the expiry", SETTLE, || {
        posts
            .iter()
            .all(|(c, ts, _)| all_text(&slack.message(c, ts)).contains("Expired"))
            .then_some(())
    });
    let answered = approve_answer(&s, &slack, "U0SAM", &value, 1);
    assert!(answered.contains("expired"), "{answered}");
    s.wait_idle();
    assert_eq!(s.agent("sleepy-agent-prod")["status"], "expired");
    assert!(decided_records(&s, &approval).is_empty());
    slack.assert_well_formed();
}

/// Slack's documented signing example verifies; a wrong secret, an altered body, a stale
/// timestamp and missing headers do not.
#[test]
fn slack_signature_vector() {
    use shared::Secret;
    use shared::inbound::slack::{SignatureError, verify};
    let v: Value = serde_json::from_str(include_str!(
        "../../fixtures/slack/slack_signature_vector.json"
    ))
    .unwrap();
    let secret = Secret::new(v["signing_secret"].as_str().unwrap());
    let ts = v["x_slack_request_timestamp"].as_str().unwrap();
    let sig = v["x_slack_signature"].as_str().unwrap();
    let body = v["body"].as_str().unwrap().as_bytes();
    assert_eq!(
        signature(secret.expose(), ts, v["body"].as_str().unwrap()),
        sig,
        "the test's own signer agrees with Slack's example"
    );
    let then = chrono::DateTime::from_timestamp(ts.parse().unwrap(), 0).unwrap();
    assert_eq!(verify(&secret, Some(ts), Some(sig), body, then), Ok(()));
    assert_eq!(
        verify(&Secret::new("wrong"), Some(ts), Some(sig), body, then),
        Err(SignatureError::Mismatch)
    );
    let mut altered = body.to_vec();
    altered[0] ^= 1;
    assert_eq!(
        verify(&secret, Some(ts), Some(sig), &altered, then),
        Err(SignatureError::Mismatch)
    );
    let later = then + chrono::Duration::seconds(301);
    assert_eq!(
        verify(&secret, Some(ts), Some(sig), body, later),
        Err(SignatureError::Stale)
    );
    assert_eq!(
        verify(
            &secret,
            Some(ts),
            Some(sig),
            body,
            then + chrono::Duration::seconds(299)
        ),
        Ok(())
    );
    assert_eq!(
        verify(&secret, None, Some(sig), body, then),
        Err(SignatureError::MissingHeaders)
    );
    assert_eq!(
        verify(&secret, Some(ts), None, body, then),
        Err(SignatureError::MissingHeaders)
    );
}

/// One person cannot supply both votes of a two-person rule by voting once signed in through
/// the API and once in Slack: both are the same principal.
#[test]
fn one_person_cannot_supply_both_votes_through_the_api_and_slack() {
    let slack = slack();
    let opts = with_approval(
        options(&slack),
        "two_person_scopes",
        &format!("[\"{PAYMENTS_WRITE}\"]"),
    )
    .env(
        "STEWARD_OIDC_ISSUER",
        &crate::support::oidc_people::issuer(),
    )
    .env(
        "STEWARD_OIDC_AUDIENCE",
        crate::support::oidc_people::AUDIENCE,
    );
    let s = Server::start_with(opts);
    let (approval, posts) =
        request_and_wait_for_posts(&s, &slack, "payments-agent-prod", &[PAYMENTS_WRITE], 2);
    let value = button_value(&posts[0].2);

    let sam = crate::support::oidc_people::sign_in(
        SAM,
        &crate::support::oidc_people::env("STEWARD_TEST_OIDC_PEOPLE_PASSWORD"),
    )
    .unwrap();
    let r = s
        .http()
        .post(s.url(&format!("/api/approvals/{approval}/approve")))
        .bearer_auth(&sam)
        .json(&json!({"reason": "signed in"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // The API vote is queued; once the workflow recorded it, Sam's click is the same person's.
    s.wait_idle();

    let answered = approve_answer(&s, &slack, "U0SAM", &value, 1);
    assert!(answered.contains("already approved"), "{answered}");
    s.wait_idle();
    assert_eq!(s.agent("payments-agent-prod")["status"], "pending_approval");

    assert!(approve_answer(&s, &slack, "U0PRIYA", &value, 2).contains("Received"));
    s.wait_agent_status("payments-agent-prod", "active");

    // Each vote is audited with its principal and where it was cast.
    let calls: Vec<Value> = s
        .audit()
        .into_iter()
        .filter(|r| r["unmapped"]["steward_event"] == "api_call")
        .collect();
    let cast = |source: &str, who: &str, via: &str| {
        calls.iter().any(|r| {
            r["unmapped"]["source"] == source
                && r["unmapped"]["principal"]["id"] == who
                && r["unmapped"]["principal"]["via"] == via
        })
    };
    assert!(cast("api", SAM, "sign-in"), "{calls:?}");
    assert!(cast("slack", PRIYA, "slack-signature"), "{calls:?}");
}

/// A person's `chat` id in the people file is where their messages go: Slack is not asked for
/// it by e-mail, so an owner Slack cannot find by e-mail is still asked and told.
#[test]
fn the_people_files_chat_id_is_where_messages_go() {
    // Slack does not know Alice by e-mail; the people file gives her id.
    let slack = FakeSlack::start(&[(BOB, "U0BOB"), (SAM, "U0SAM"), (PRIYA, "U0PRIYA")]);
    let mut o = options(&slack);
    assert!(o.people.contains("email = \"alice@example.com\"\n"));
    o.people = o.people.replace(
        "email = \"alice@example.com\"\n",
        "email = \"alice@example.com\"\nchat = \"U0ALICECHAT\"\n",
    );
    let s = Server::start_with(o);
    let (_, posts) =
        request_and_wait_for_posts(&s, &slack, "chat-id-agent-prod", &[MONITORS_WRITE], 2);
    let channels: Vec<&str> = posts.iter().map(|(c, _, _)| c.as_str()).collect();
    // Slack answers a post to a user id in the DM channel it opens (`D…`).
    assert!(
        channels.contains(&"D0ALICECHAT"),
        "the owner's request went to her chat id: {channels:?}"
    );
    let asked: Vec<Value> = slack
        .calls_of("users.lookupByEmail")
        .into_iter()
        .map(|c| c.body)
        .collect();
    assert!(
        !asked.iter().any(|b| b["email"] == ALICE),
        "Slack was asked for Alice by e-mail: {asked:?}"
    );
}

/// A Slack that takes a post and never answers costs the command one attempt, not the worker:
/// while the security channel's post hangs, an agent that needs no approval is provisioned, and
/// once Slack answers again the waiting request reaches the channel.
#[test]
fn a_hung_slack_call_does_not_stop_the_worker() {
    let slack = slack();
    slack.hang_posts_to(SECURITY_CHANNEL);
    let s = Server::start_with(options(&slack).env("STEWARD_SLACK_TIMEOUT", "1s"));
    s.request_ok(&agent_request(
        "hung-post-agent-prod",
        "prod",
        ALICE,
        &[MONITORS_WRITE],
    ));
    wait_until("the post that hangs", SETTLE, || {
        (!slack.calls_of("chat.postMessage/hung").is_empty()).then_some(())
    });
    // Meanwhile an agent that needs no approval is provisioned.
    let name = "metrics-reader-agent-dev";
    s.request_ok(&agent_request(
        name,
        "dev",
        ALICE,
        &["datadog:metrics:read"],
    ));
    s.wait_agent_status_for(name, "active", Duration::from_secs(30));
    // Slack answers again: the request reaches the security channel on a retry.
    slack.answer_again();
    wait_until(
        "the security channel's post",
        Duration::from_secs(60),
        || {
            slack
                .approval_posts()
                .iter()
                .any(|(c, _, _)| c == SECURITY_CHANNEL)
                .then_some(())
        },
    );
}

/// A slow peer holds up only its own work: while the security channel's post hangs for as long
/// as its deadline allows (a minute here), the other worker lanes provision an agent that
/// needs no approval within seconds.
#[test]
fn a_slow_slack_call_does_not_hold_up_unrelated_workflows() {
    let slack = slack();
    slack.hang_posts_to(SECURITY_CHANNEL);
    let s = Server::start_with(options(&slack).env("STEWARD_SLACK_TIMEOUT", "60s"));
    s.request_ok(&agent_request(
        "slow-post-agent-prod",
        "prod",
        ALICE,
        &[MONITORS_WRITE],
    ));
    wait_until("the post that hangs", SETTLE, || {
        (!slack.calls_of("chat.postMessage/hung").is_empty()).then_some(())
    });
    let name = "metrics-reader-agent-dev";
    s.request_ok(&agent_request(
        name,
        "dev",
        ALICE,
        &["datadog:metrics:read"],
    ));
    s.wait_agent_status_for(name, "active", Duration::from_secs(15));
    assert_eq!(
        s.agent("slow-post-agent-prod")["status"],
        "pending_approval",
        "the hung post's workflow is still waiting on it"
    );
}

/// Every message Steward posted, by the key its Slack message metadata carries: a key posted
/// more than once is a message shown twice.
fn posts_by_key(slack: &FakeSlack) -> std::collections::BTreeMap<String, usize> {
    let mut by_key = std::collections::BTreeMap::new();
    for c in slack.calls_of("chat.postMessage") {
        let key = c.body["metadata"]["event_payload"]["key"]
            .as_str()
            .unwrap_or_else(|| panic!("a post without Steward's metadata key: {}", c.body))
            .to_string();
        *by_key.entry(key).or_insert(0) += 1;
    }
    by_key
}

/// The process dies right after Slack accepted an approval request's message and before it was
/// recorded; the restarted server finds the message in the conversation instead of posting it
/// again, and posts the request's other messages once.
#[test]
fn an_approval_message_posted_just_before_a_crash_is_not_posted_again() {
    let slack = slack();
    let opts = options(&slack);
    let mut s = Server::start_with(opts.clone());
    s.kill();
    s.spawn(
        &opts
            .clone()
            .env("STEWARD_CRASH_AFTER", "slack.approval_posted"),
    );
    let (status, body) = s.post_as(
        ALICE,
        "/api/agents",
        &agent_request("crash-post-agent-prod", "prod", ALICE, &[MONITORS_WRITE]),
    );
    assert_eq!(status, 202, "{body}");
    let workflow = body["workflow_id"].as_str().unwrap().to_string();
    assert!(
        !s.wait_exit(Duration::from_secs(30)).success(),
        "the fault injection aborts the server"
    );
    assert_eq!(
        slack.approval_posts().len(),
        1,
        "one message was out before the abort"
    );

    s.spawn(&opts);
    let approval = s.pending_approval(&workflow)["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The owner's DM and the security channel (the example policy's routes).
    let posts = wait_until("both request messages", SETTLE, || {
        let mine: Vec<_> = slack
            .approval_posts()
            .into_iter()
            .filter(|(_, _, b)| button_value(b).starts_with(&format!("{approval}:")))
            .collect();
        (mine.len() >= 2).then_some(mine)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        slack.approval_posts().len(),
        posts.len(),
        "no late duplicate"
    );
    let twice: Vec<_> = posts_by_key(&slack)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "posted more than once: {twice:?}");
    assert!(
        !slack.calls_of("conversations.history").is_empty(),
        "the message posted before the abort was looked for in the conversation"
    );
    // The approval knows both messages (the one found after the crash too): a decision
    // rewrites both.
    let (status, body) = s.decide(&approval, "approve", SAM);
    assert_eq!(status, 202, "{body}");
    let want: std::collections::BTreeSet<(String, String)> = posts
        .iter()
        .map(|(c, t, _)| (c.clone(), t.clone()))
        .collect();
    wait_until("both messages updated", SETTLE, || {
        let updated: std::collections::BTreeSet<(String, String)> = slack
            .calls_of("chat.update")
            .into_iter()
            .map(|c| {
                (
                    c.body["channel"].as_str().unwrap_or_default().to_string(),
                    c.body["ts"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        want.is_subset(&updated).then_some(())
    });
    slack.assert_well_formed();
}

/// The same for a notice: the owner is told once that their agent is active, though the
/// process died right after Slack accepted the notice.
#[test]
fn a_notice_posted_just_before_a_crash_is_not_posted_again() {
    let slack = slack();
    let opts = options(&slack);
    let mut s = Server::start_with(opts.clone());
    s.kill();
    s.spawn(
        &opts
            .clone()
            .env("STEWARD_CRASH_AFTER", "slack.notice_posted"),
    );
    let (status, body) = s.post_as(
        ALICE,
        "/api/agents",
        &agent_request(
            "crash-notice-agent-dev",
            "dev",
            ALICE,
            &["datadog:metrics:read"],
        ),
    );
    assert_eq!(status, 202, "{body}");
    assert!(
        !s.wait_exit(Duration::from_secs(30)).success(),
        "the fault injection aborts the server"
    );
    s.spawn(&opts);
    s.wait_agent_status("crash-notice-agent-dev", "active");
    let told = || {
        slack
            .calls_of("chat.postMessage")
            .into_iter()
            .filter(|c| all_text(&c.body).contains("crash-notice-agent-dev is active"))
            .count()
    };
    wait_until("the notice", SETTLE, || (told() >= 1).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(told(), 1, "the owner was told once");
    assert!(!slack.calls_of("conversations.history").is_empty());
}
