//! One approval decided from every channel at once: 100 decisions (Approve and Deny mixed, by
//! both security approvers) fired together through the admin API, Slack buttons and dashboard
//! forms. Exactly one outcome may come of it, whatever order the server sees them in: one
//! recorded decision, one `approval_decided` audit record, one workflow step that decided, an
//! agent provisioned once or not at all; every other caller is told "queued" or "already
//! decided", never a 5xx; nothing ends in the dead letters. Five rounds (a fresh agent each, a
//! different decision leading) with the example policy (quorum 1), five under a two-person rule
//! (quorum 2). People sign in at the server's dev IdP: no outside OpenID provider is needed.

use crate::fake_slack::{self, BOT_TOKEN, FakeSlack, buttons, post_signed, signature};
use crate::support::*;
use reqwest::blocking::Client;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use std::sync::Barrier;
use std::time::{Duration, Instant};

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SECURITY_CHANNEL: &str = "C0SECURITY";
const MONITORS_WRITE: &str = "datadog:monitors:write";
/// Decisions fired at once: a third each through the API, Slack and the dashboard.
const DECISIONS: usize = 100;
const APPROVERS: [(&str, &str); 2] = [(SAM, "U0SAM"), (PRIYA, "U0PRIYA")];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    Api,
    Slack,
    Dashboard,
}

/// One caller's decision and what the server answered.
#[derive(Debug)]
struct Answer {
    channel: Channel,
    person: &'static str,
    verb: &'static str,
    status: u16,
    text: String,
}

/// How a caller was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Told {
    /// The decision was taken and queued (the first valid one applies).
    Queued,
    /// A clear refusal: the approval is decided already, or this person voted already.
    Already,
}

impl Answer {
    fn told(&self) -> Option<Told> {
        let already = self.text.contains("already");
        match (self.channel, self.status) {
            (Channel::Api, 202) if self.text.contains("decision queued") => Some(Told::Queued),
            (Channel::Dashboard, 200) if self.text.contains("is recorded") => Some(Told::Queued),
            (Channel::Slack, 200) if self.text.starts_with("Received your ") => Some(Told::Queued),
            (Channel::Api | Channel::Dashboard, 422) if already => Some(Told::Already),
            (Channel::Slack, 200) if already => Some(Told::Already),
            _ => None,
        }
    }
}

fn slack() -> FakeSlack {
    FakeSlack::start(&[
        (ALICE, "U0ALICE"),
        (BOB, "U0BOB"),
        (SAM, "U0SAM"),
        (PRIYA, "U0PRIYA"),
    ])
}

fn options(slack: &FakeSlack, quorum: u8) -> Options {
    let mut o = Options::default()
        .env("STEWARD_SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("STEWARD_SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env("STEWARD_SLACK_API_URL", &slack.api_url())
        .env("STEWARD_SLACK_SECURITY_CHANNEL", SECURITY_CHANNEL);
    if quorum == 2 {
        let empty = "two_person_scopes = []";
        assert!(o.policy.contains(empty), "the example policy changed");
        o.policy = o.policy.replace(
            empty,
            &format!("two_person_scopes = [\"{MONITORS_WRITE}\"]"),
        );
    }
    o
}

/// A browser: no redirects followed, patient enough for a loaded debug build.
fn browser() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn set_cookie(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn location(r: &reqwest::blocking::Response) -> String {
    r.headers()[LOCATION].to_str().unwrap().to_string()
}

/// Signs `person` in to the dashboard at the server's dev IdP (authorization code and PKCE, as
/// a browser does); returns the session cookie and the page's anti-forgery token.
fn dashboard_session(s: &Server, b: &Client, person: &str) -> (String, String) {
    s.set_password(person);
    let start = b
        .get(s.url("/sign-in?return_to=%2Fapprovals"))
        .send()
        .unwrap();
    assert_eq!(start.status().as_u16(), 303);
    let pending = set_cookie(&start, "steward_sign_in");
    let authorize = reqwest::Url::parse(&location(&start)).unwrap();
    let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    form.push(("email".into(), person.into()));
    form.push(("password".into(), Server::password_of(person)));
    let back = b
        .post(s.url("/oauth2/v1/authorize"))
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(back.status().as_u16(), 303, "{person} signing in");
    let done = b
        .get(location(&back))
        .header(COOKIE, &pending)
        .send()
        .unwrap();
    assert_eq!(done.status().as_u16(), 303, "{person} back from the IdP");
    let session = set_cookie(&done, "steward_session");
    let html = b
        .get(s.url("/approvals"))
        .header(COOKIE, &session)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("the inbox carries the anti-forgery token");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    let csrf = rest[..rest.find('"').unwrap()].to_string();
    (session, csrf)
}

/// Decision `i` of round `round`: its channel, who decides (an index into [`APPROVERS`]) and
/// the verb. Every channel gets both approvers and both verbs, and each round another one
/// leads. Half the decisions deny, except in the even rounds under the two-person rule, where
/// one in ten does, so that runs also reach the quorum rather than end at the first Deny.
fn plan(i: usize, quorum: u8, round: usize) -> (Channel, usize, &'static str) {
    let k = i + round;
    let channel = match k % 3 {
        0 => Channel::Api,
        1 => Channel::Slack,
        _ => Channel::Dashboard,
    };
    let person = (k / 3) % 2;
    let deny = if quorum > 1 && round.is_multiple_of(2) {
        k % 10 == 9
    } else {
        (k / 6) % 2 == 1
    };
    (channel, person, if deny { "deny" } else { "approve" })
}

/// Rounds per server: each a fresh agent and approval, with a different decision leading.
const ROUNDS: usize = 5;

/// Who is signed in where, before any burst: API tokens and dashboard sessions (cookie, CSRF
/// token) of [`APPROVERS`].
struct SignedIn {
    browser: Client,
    tokens: Vec<String>,
    sessions: Vec<(String, String)>,
}

/// Starts a server whose `datadog:monitors:write` needs `quorum` approvers and runs
/// [`ROUNDS`] rounds of [`DECISIONS`] decisions at once on it.
fn hundred_decisions_at_once(quorum: u8) {
    let began = Instant::now();
    let slack = slack();
    let s = Server::start_with(options(&slack, quorum));
    let browser = browser();
    let signed = SignedIn {
        tokens: APPROVERS.iter().map(|(p, _)| s.person_token(p)).collect(),
        sessions: APPROVERS
            .iter()
            .map(|(p, _)| dashboard_session(&s, &browser, p))
            .collect(),
        browser,
    };
    let mut summaries = Vec::new();
    for round in 0..ROUNDS {
        summaries.push(race(&s, &slack, &signed, quorum, round));
    }
    let dead = array(s.get_ok("/api/dead-letters"));
    assert!(dead.is_empty(), "dead letters: {dead:#?}");
    slack.assert_well_formed();
    let log = s.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("panicked"))
        .collect();
    assert!(bad.is_empty(), "errors in the server's log: {bad:#?}");
    eprintln!(
        "quorum {quorum}: {ROUNDS} rounds of {DECISIONS} decisions in {:?}\n  {}",
        began.elapsed(),
        summaries.join("\n  ")
    );
}

/// One round: requests an agent, fires [`DECISIONS`] decisions at its approval at once through
/// the three channels and checks that exactly one outcome came of it. Returns a summary line.
fn race(s: &Server, slack: &FakeSlack, signed: &SignedIn, quorum: u8, round: usize) -> String {
    let name = format!("decision-race-{round}-agent-prod");
    let started = s.request_ok(&agent_request(&name, "prod", ALICE, &[MONITORS_WRITE]));
    let workflow = started["workflow_id"].as_str().unwrap().to_string();
    let pending = s.pending_approval(&workflow);
    let approval = pending["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(pending["request"]["quorum"], quorum, "{pending}");
    let hash = pending["action_hash"].as_str().unwrap().to_string();
    let value = format!("{approval}:{hash}");
    // The request reached Slack (owner DM and security channel) with buttons carrying it.
    let posts = wait_until("the approval messages", SETTLE, || {
        let mine: Vec<_> = slack
            .approval_posts()
            .into_iter()
            .filter(|(_, _, b)| {
                buttons(b).is_some_and(|b| b.iter().all(|x| x["value"] == value.as_str()))
            })
            .collect();
        (mine.len() >= 2).then_some(mine)
    });
    if round == 0 {
        // Steward knows the approvers' Slack ids once it has looked them up by e-mail (cached
        // for 15 minutes): one click each on a button showing an older request makes it look
        // them up, and is refused without deciding anything. Without this every click of the
        // burst would look them up at once, and many would be told "nothing was decided,
        // click again" (Steward keeps to Slack's ~50 lookups a minute and identifies a clicker
        // within a second): see docs/RELIABILITY.md.
        let stale = format!("{approval}:{}", "ab".repeat(32));
        for (n, (_, slack_id)) in APPROVERS.iter().enumerate() {
            let click =
                fake_slack::Click::approval(slack_id, "approve", &stale, 900 + n as u32, None);
            let (status, v) = click.send(s, slack, SIGNING_SECRET);
            assert_eq!(status, 200, "{v}");
            let text = v["text"].as_str().unwrap_or_default();
            assert!(text.contains("changed after this message was shown"), "{v}");
        }
        assert!(s.pending_approval_by_id(&approval)["outcome"].is_null());
    }

    let barrier = Barrier::new(DECISIONS);
    let fired = Instant::now();
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..DECISIONS)
            .map(|i| {
                let (barrier, approval, value, hash) = (&barrier, &approval, &value, &hash);
                scope.spawn(move || {
                    let (channel, who, verb) = plan(i, quorum, round);
                    let (person, slack_id) = APPROVERS[who];
                    let reason = format!("{verb} #{i} by {person} via {channel:?}");
                    let n = (1000 * (round + 1) + i) as u32;
                    let slack_body =
                        fake_slack::Click::approval(slack_id, verb, value, n, Some(&reason))
                            .form(slack);
                    let b = &signed.browser;
                    barrier.wait();
                    let (status, text) = match channel {
                        Channel::Api => {
                            let r = b
                                .post(s.url(&format!("/api/approvals/{approval}/{verb}")))
                                .bearer_auth(&signed.tokens[who])
                                .json(&json!({"reason": reason, "action_hash": hash}))
                                .send()
                                .expect("POST to the admin API");
                            (r.status().as_u16(), r.text().unwrap_or_default())
                        }
                        Channel::Slack => {
                            let ts = chrono::Utc::now().timestamp().to_string();
                            let sig = signature(SIGNING_SECRET, &ts, &slack_body);
                            let (status, v) = post_signed(s, &slack_body, &ts, &sig);
                            let text = v["text"].as_str().map(str::to_string);
                            (status, text.unwrap_or_else(|| v.to_string()))
                        }
                        Channel::Dashboard => {
                            let (cookie, csrf) = &signed.sessions[who];
                            let r = b
                                .post(s.url(&format!("/approvals/{approval}/{verb}")))
                                .header(COOKIE, cookie)
                                .header("sec-fetch-site", "same-origin")
                                .form(&[
                                    ("csrf", csrf.as_str()),
                                    ("action_hash", hash.as_str()),
                                    ("reason", reason.as_str()),
                                ])
                                .send()
                                .expect("POST of the dashboard's form");
                            (r.status().as_u16(), r.text().unwrap_or_default())
                        }
                    };
                    Answer {
                        channel,
                        person,
                        verb,
                        status,
                        text,
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let burst = fired.elapsed();

    // Every caller got an answer that is not a server error, and a clear one.
    let server_errors: Vec<&Answer> = answers.iter().filter(|a| a.status >= 500).collect();
    assert!(server_errors.is_empty(), "5xx answers: {server_errors:#?}");
    let unclear: Vec<&Answer> = answers.iter().filter(|a| a.told().is_none()).collect();
    assert!(
        unclear.is_empty(),
        "answers neither \"queued\" nor \"already decided\": {unclear:#?}"
    );
    let count = |c: Channel, t: Told| {
        answers
            .iter()
            .filter(|a| a.channel == c && a.told() == Some(t))
            .count()
    };
    let tally: Vec<String> = [Channel::Api, Channel::Slack, Channel::Dashboard]
        .into_iter()
        .map(|c| {
            format!(
                "{c:?} {}+{}",
                count(c, Told::Queued),
                count(c, Told::Already)
            )
        })
        .collect();

    // Exactly one outcome.
    let decided = s.wait("the approval decided", SETTLE, || {
        let a = s.pending_approval_by_id(&approval);
        (!a["outcome"].is_null()).then_some(a)
    });
    let approved = match decided["outcome"]["outcome"].as_str() {
        Some("approved") => true,
        Some("denied") => false,
        other => panic!("decided neither approved nor denied ({other:?}): {decided}"),
    };
    let agent = s.wait_agent_status(&name, if approved { "active" } else { "denied" });
    s.wait_idle();
    // Late decisions still queued when the outcome showed are applied (and refused) by now.
    std::thread::sleep(Duration::from_millis(500));
    s.wait_idle();
    let records: Vec<Value> = s
        .approvals(true)
        .into_iter()
        .filter(|a| a["request"]["workflow_id"] == workflow.as_str())
        .collect();
    assert_eq!(
        records.len(),
        1,
        "one approval for the request: {records:#?}"
    );
    assert_eq!(
        records[0]["outcome"], decided["outcome"],
        "the outcome did not change"
    );
    let by = decided["outcome"]["by"].as_str().unwrap().to_string();
    assert!(APPROVERS.iter().any(|(p, _)| *p == by), "{decided}");
    // The decision that applied is one its caller was told was taken.
    let queued: std::collections::BTreeSet<(&str, &str)> = answers
        .iter()
        .filter(|a| a.told() == Some(Told::Queued))
        .map(|a| (a.person, a.verb))
        .collect();
    let verb = if approved { "approve" } else { "deny" };
    assert!(
        queued.contains(&(by.as_str(), verb)),
        "{by} {verb} applied, but no caller was told it was queued: {queued:?}"
    );

    // The workflow applied one deciding step (and under the two-person rule at most one vote
    // before it); everything else was refused by the machine.
    let wf = s.workflow(&workflow);
    let steps: Vec<&Value> = wf["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"]["type"] == "approval_decided" && h["rejected"].is_null())
        .collect();
    let summary: Vec<String> = steps
        .iter()
        .map(|h| {
            format!(
                "{} {} {}->{}",
                h["event"]["approver"].as_str().unwrap_or_default(),
                h["event"]["decision"].as_str().unwrap_or_default(),
                h["from"].as_str().unwrap_or_default(),
                h["to"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let refused = wf["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"]["type"] == "approval_decided" && !h["rejected"].is_null())
        .count();
    let deciding: Vec<&&Value> = steps
        .iter()
        .filter(|h| h["to"] != "AwaitingApproval")
        .collect();
    assert_eq!(deciding.len(), 1, "one deciding step: {summary:#?}");
    assert_eq!(
        steps.last().unwrap()["to"],
        if approved { "Provisioning" } else { "Denied" },
        "{summary:#?}"
    );
    assert_eq!(
        deciding[0]["event"]["approver"],
        by.as_str(),
        "{summary:#?}"
    );
    assert!(
        steps.len() <= usize::from(quorum),
        "more applied decisions than the quorum: {summary:#?}"
    );
    let voters: std::collections::HashSet<&str> = steps
        .iter()
        .map(|h| h["event"]["approver"].as_str().unwrap())
        .collect();
    assert_eq!(
        voters.len(),
        steps.len(),
        "a person counted twice: {summary:#?}"
    );
    let state = &wf["workflow"];
    if approved {
        assert_eq!(state["state_name"], "Active", "{state}");
        let approvers = strings(&state["state"]["approval"]["approvers"]);
        assert_eq!(
            approvers.len(),
            usize::from(quorum),
            "exactly the quorum's votes recorded: {approvers:?}"
        );
        assert_eq!(steps.len(), usize::from(quorum), "{summary:#?}");
    } else {
        assert_eq!(state["state_name"], "Denied", "{state}");
        assert_eq!(deciding[0]["event"]["decision"], "deny", "{summary:#?}");
    }

    // One audit record of the decision; under the two-person rule at most one vote before it.
    let audit = s.audit();
    let of = |event: &str| -> Vec<&Value> {
        audit
            .iter()
            .filter(|r| {
                r["unmapped"]["steward_event"] == event
                    && r["unmapped"]["approval_id"] == approval.as_str()
            })
            .collect()
    };
    let decided_records = of("approval_decided");
    assert_eq!(decided_records.len(), 1, "{decided_records:#?}");
    assert_eq!(
        decided_records[0]["actor"]["user"]["email_addr"],
        by.as_str()
    );
    let votes = of("approval_voted");
    assert!(
        votes.len() < usize::from(quorum),
        "more votes than the quorum leaves room for: {votes:#?}"
    );
    assert_eq!(votes.len() + 1, steps.len(), "{votes:#?} vs {summary:#?}");

    // The identity provider holds the agent's client once, or not at all.
    let clients: Vec<Value> = s
        .idp_clients()
        .into_iter()
        .filter(|c| c["name"] == name.as_str())
        .collect();
    if approved {
        assert_eq!(clients.len(), 1, "{clients:#?}");
        assert_eq!(agent["client_id"], clients[0]["client_id"], "{agent}");
    } else {
        assert!(
            clients.is_empty(),
            "a denied agent has a client: {clients:#?}"
        );
        assert!(agent["client_id"].is_null(), "{agent}");
    }
    let dead = array(s.get_ok("/api/dead-letters"));
    assert!(dead.is_empty(), "dead letters: {dead:#?}");

    // Slack: each message was updated at least once and at most once per applied step (a vote
    // whose update comes after the decision is shown with it), ends showing the one outcome
    // without buttons, and the requester was told the outcome once.
    let ours = |c: &fake_slack::Call| {
        posts
            .iter()
            .any(|(ch, ts, _)| c.body["channel"] == ch.as_str() && c.body["ts"] == ts.as_str())
    };
    let told = |c: &fake_slack::Call| {
        c.body["channel"] == "U0ALICE"
            && c.body["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("Your request") && t.contains(&format!("`{name}`")))
    };
    let shown = format!("*{}* by {by}", if approved { "Approved" } else { "Denied" });
    let settled = || {
        let messages: Vec<Value> = posts
            .iter()
            .map(|(c, ts, _)| slack.message(c, ts))
            .collect();
        let tellings = slack
            .calls_of("chat.postMessage")
            .iter()
            .filter(|c| told(c))
            .count();
        let done = messages
            .iter()
            .all(|m| buttons(m).is_none() && fake_slack::all_text(m).contains(&shown));
        (done && tellings >= 1, messages, tellings)
    };
    let deadline = Instant::now() + SETTLE;
    while !settled().0 {
        let (_, messages, tellings) = settled();
        assert!(
            Instant::now() < deadline,
            "round {round}: the messages do not show {shown:?} (steps {summary:?}), or the requester was not told ({tellings}): {messages:#?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(300));
    let updates: Vec<fake_slack::Call> = slack
        .calls_of("chat.update")
        .into_iter()
        .filter(|c| ours(c))
        .collect();
    assert!(
        (posts.len()..=posts.len() * steps.len()).contains(&updates.len()),
        "{} message updates for {} posts and steps {summary:#?}: {updates:#?}",
        updates.len(),
        posts.len()
    );
    assert!(
        settled().0,
        "the messages changed after the outcome: {:#?}",
        settled().1
    );
    let tellings: Vec<fake_slack::Call> = slack
        .calls_of("chat.postMessage")
        .into_iter()
        .filter(|c| told(c))
        .collect();
    assert_eq!(
        tellings.len(),
        1,
        "the requester is told once: {tellings:#?}"
    );

    format!(
        "round {round}: answered in {burst:?}; {} by {by}; applied [{}], {refused} refused by the workflow; queued+already: {}",
        if approved { "approved" } else { "denied" },
        summary.join(", "),
        tally.join(", ")
    )
}

/// 100 decisions at once (API, Slack, dashboard; Approve and Deny by both approvers) on an
/// approval one approver decides: exactly one decision. Five rounds.
#[test]
fn a_hundred_decisions_through_every_channel_make_one() {
    hundred_decisions_at_once(1);
}

/// The same under the two-person rule: one final decision, never more votes than the quorum.
#[test]
fn a_hundred_decisions_under_the_two_person_rule_make_one() {
    hundred_decisions_at_once(2);
}
