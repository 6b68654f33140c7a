//! A local fake of Slack's Web API, following its documented contract
//! (Slack's published Web API OpenAPI spec and api.slack.com/methods): bearer bot
//! token on every call, JSON bodies, `{"ok": false, "error": "..."}` refusals with HTTP 200.
//! It records every call so tests can check what Steward sent, and it accepts the ephemeral
//! answers Steward posts to an interaction's `response_url`.
//!
//! Methods: `chat.postMessage` (with message `metadata`), `chat.update`,
//! `users.lookupByEmail`, `conversations.open`, `conversations.history` (newest first, `oldest`,
//! `include_all_metadata`), plus `/respond/{n}` as the response_url target. It can answer the
//! first posts with HTTP 429 and `Retry-After`, as Slack does when a limit is exceeded.
#![allow(dead_code)] // each test binary uses a different part

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const BOT_TOKEN: &str = "xoxb-1111-2222-fake-bot-token";

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub authorized: bool,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// (channel, ts) of every message posted, with its current body.
    messages: HashMap<(String, String), Value>,
    next_ts: u64,
    /// Shape problems found in what Steward sent.
    problems: Vec<String>,
    /// Posts still to answer with 429.
    throttle_posts: u32,
    /// Posts to this channel are taken and never answered (a hung Slack).
    hang_channel: Option<String>,
    /// (channel, ts) in posting order.
    order: Vec<(String, String)>,
}

pub struct FakeSlack {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[derive(Clone)]
struct AppState {
    inner: Arc<Mutex<Inner>>,
    users: Arc<HashMap<String, String>>,
}

impl FakeSlack {
    /// Starts the fake on 127.0.0.1 in a thread of its own (so it works from plain and from
    /// async tests); `users` maps directory emails to Slack user ids. Stops when dropped.
    pub fn start(users: &[(&str, &str)]) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            // Message ts are Unix times (seconds.micros), as Slack's are.
            next_ts: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64,
            ..Inner::default()
        }));
        let users: Arc<HashMap<String, String>> = Arc::new(
            users
                .iter()
                .map(|(e, id)| (e.to_string(), id.to_string()))
                .collect(),
        );
        let state = AppState {
            inner: inner.clone(),
            users,
        };
        let app = Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/chat.update", post(update))
            .route("/api/users.lookupByEmail", get(lookup_by_email))
            .route("/api/conversations.open", post(conversations_open))
            .route("/api/conversations.history", get(history).post(history))
            .route("/respond/{n}", post(respond))
            .with_state(state);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fake Slack");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for the fake Slack");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self {
            base: format!("http://{addr}"),
            inner,
            _stop: stop,
        }
    }

    /// The API base URL Steward is configured with.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.base)
    }

    /// Takes chat.postMessage calls to `channel` and never answers them (recorded as method
    /// `chat.postMessage/hung`), until [`FakeSlack::answer_again`].
    pub fn hang_posts_to(&self, channel: &str) {
        self.inner.lock().unwrap().hang_channel = Some(channel.to_string());
    }

    /// Answers every post again (the hung ones stay unanswered).
    pub fn answer_again(&self) {
        self.inner.lock().unwrap().hang_channel = None;
    }

    /// Answers the next `n` chat.postMessage calls with HTTP 429 (`Retry-After: 1`).
    pub fn throttle_next_posts(&self, n: u32) {
        self.inner.lock().unwrap().throttle_posts = n;
    }

    /// A response_url for a click, recorded as method `respond`.
    pub fn response_url(&self, n: u32) -> String {
        format!("{}/respond/{n}", self.base)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Every call carried the bot token and every payload had the documented shape.
    pub fn assert_well_formed(&self) {
        let inner = self.inner.lock().unwrap();
        let unauthorized: Vec<&Call> = inner.calls.iter().filter(|c| !c.authorized).collect();
        assert!(
            unauthorized.is_empty(),
            "calls without the bot token: {unauthorized:#?}"
        );
        assert!(
            inner.problems.is_empty(),
            "malformed Slack calls: {:#?}",
            inner.problems
        );
    }

    /// The current body of a posted message.
    pub fn message(&self, channel: &str, ts: &str) -> Value {
        self.inner.lock().unwrap().messages[&(channel.to_string(), ts.to_string())].clone()
    }

    /// Posted messages tagged with Slack message metadata `key` (what Steward looks for after
    /// a crash), as posted.
    pub fn tagged_posts(&self, key_prefix: &str) -> Vec<Value> {
        self.calls_of("chat.postMessage")
            .into_iter()
            .filter(|c| {
                c.body["metadata"]["event_payload"]["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with(key_prefix))
            })
            .map(|c| c.body)
            .collect()
    }

    /// Posted messages (channel, ts, body as posted) that carry Approve / Deny buttons.
    pub fn approval_posts(&self) -> Vec<(String, String, Value)> {
        self.calls_of("chat.postMessage")
            .into_iter()
            .filter(|c| buttons(&c.body).is_some())
            .map(|c| {
                (
                    c.body["_posted_channel"].as_str().unwrap().to_string(),
                    c.body["_posted_ts"].as_str().unwrap().to_string(),
                    c.body,
                )
            })
            .collect()
    }
}

/// The Approve / Deny buttons of a message body, if it has them.
pub fn buttons(body: &Value) -> Option<Vec<Value>> {
    body["blocks"].as_array()?.iter().find_map(|b| {
        (b["type"] == "actions").then(|| b["elements"].as_array().cloned().unwrap_or_default())
    })
}

/// All text of a message body (text and blocks), for assertions.
pub fn all_text(body: &Value) -> String {
    let mut out = body["text"].as_str().unwrap_or_default().to_string();
    out.push('\n');
    out.push_str(&body["blocks"].to_string());
    out
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {BOT_TOKEN}"))
}

/// Checks a message payload against Slack's documented constraints.
fn check_message(body: &Value, problems: &mut Vec<String>) {
    if body["channel"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("no channel: {body}"));
    }
    if body["text"].as_str().is_none_or(str::is_empty) {
        problems.push(format!(
            "no fallback text (needed for notifications): {body}"
        ));
    }
    let Some(blocks) = body.get("blocks") else {
        return;
    };
    let Some(blocks) = blocks.as_array() else {
        problems.push(format!("blocks is not an array: {blocks}"));
        return;
    };
    if blocks.len() > 50 {
        problems.push(format!("{} blocks (max 50)", blocks.len()));
    }
    for b in blocks {
        let kind = b["type"].as_str().unwrap_or_default();
        match kind {
            "header" => {
                if b["text"]["type"] != "plain_text"
                    || b["text"]["text"].as_str().map_or(0, str::len) > 150
                {
                    problems.push(format!("bad header: {b}"));
                }
            }
            "section" => {
                if b.get("text").is_none() && b.get("fields").is_none() {
                    problems.push(format!("section without text or fields: {b}"));
                }
                if b["fields"].as_array().is_some_and(|f| f.len() > 10) {
                    problems.push(format!("section with more than 10 fields: {b}"));
                }
                if b["text"]["text"].as_str().is_some_and(|t| t.len() > 3000) {
                    problems.push(format!("section text over 3000 chars: {b}"));
                }
            }
            "actions" => {
                for e in b["elements"].as_array().into_iter().flatten() {
                    if e["type"] == "button"
                        && (e["action_id"].as_str().is_none()
                            || e["text"]["type"] != "plain_text"
                            || e["value"].as_str().map_or(0, str::len) > 2000)
                    {
                        problems.push(format!("bad button: {e}"));
                    }
                }
            }
            "input" => {
                if b["label"]["type"] != "plain_text" || b.get("element").is_none() {
                    problems.push(format!("bad input: {b}"));
                }
            }
            "context" | "divider" => {}
            other => problems.push(format!("unexpected block type {other}: {b}")),
        }
    }
}

async fn post_message(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let hang = {
        let mut inner = s.inner.lock().unwrap();
        let hang = inner.hang_channel.is_some()
            && inner.hang_channel.as_deref() == body["channel"].as_str();
        if hang {
            inner.calls.push(Call {
                method: "chat.postMessage/hung".into(),
                authorized: authorized(&headers),
                body: body.clone(),
            });
        }
        hang
    };
    if hang {
        std::future::pending::<()>().await;
    }
    {
        let mut inner = s.inner.lock().unwrap();
        if inner.throttle_posts > 0 {
            inner.throttle_posts -= 1;
            inner.calls.push(Call {
                method: "chat.postMessage/429".into(),
                authorized: authorized(&headers),
                body,
            });
            return (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
        }
    }
    post_accepted(s, headers, body).into_response()
}

fn post_accepted(s: AppState, headers: HeaderMap, mut body: Value) -> Json<Value> {
    let ok = authorized(&headers);
    let mut inner = s.inner.lock().unwrap();
    if !ok {
        inner.calls.push(Call {
            method: "chat.postMessage".into(),
            authorized: false,
            body,
        });
        return Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    let mut problems = Vec::new();
    check_message(&body, &mut problems);
    inner.problems.extend(problems);
    let requested = body["channel"].as_str().unwrap_or_default().to_string();
    // A user id as channel posts into the app's DM with that user (a D… channel).
    let channel = match requested.strip_prefix('U') {
        Some(rest) => format!("D{rest}"),
        None => requested.clone(),
    };
    // Slack's ts is the time the message was posted (unique within the channel): a fake
    // running for minutes must not hand out the times it started at.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    inner.next_ts = now.max(inner.next_ts + 100);
    let ts = format!(
        "{}.{:06}",
        inner.next_ts / 1_000_000,
        inner.next_ts % 1_000_000
    );
    body["_posted_channel"] = json!(channel);
    body["_posted_ts"] = json!(ts);
    inner
        .messages
        .insert((channel.clone(), ts.clone()), body.clone());
    inner.order.push((channel.clone(), ts.clone()));
    inner.calls.push(Call {
        method: "chat.postMessage".into(),
        authorized: true,
        body: body.clone(),
    });
    Json(json!({
        "ok": true,
        "channel": channel,
        "ts": ts,
        "message": {"type": "message", "subtype": "bot_message", "bot_id": "B0STEWARD", "ts": ts,
                     "text": body["text"], "blocks": body["blocks"]}
    }))
}

async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let ok = authorized(&headers);
    let mut inner = s.inner.lock().unwrap();
    inner.calls.push(Call {
        method: "chat.update".into(),
        authorized: ok,
        body: body.clone(),
    });
    if !ok {
        return Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    let mut problems = Vec::new();
    check_message(&body, &mut problems);
    inner.problems.extend(problems);
    let key = (
        body["channel"].as_str().unwrap_or_default().to_string(),
        body["ts"].as_str().unwrap_or_default().to_string(),
    );
    if !inner.messages.contains_key(&key) {
        return Json(json!({"ok": false, "error": "message_not_found"}));
    }
    inner.messages.insert(key.clone(), body.clone());
    Json(json!({
        "ok": true,
        "channel": key.0,
        "ts": key.1,
        "text": body["text"],
        "message": {"text": body["text"], "blocks": body["blocks"], "bot_id": "B0STEWARD"}
    }))
}

async fn lookup_by_email(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let ok = authorized(&headers);
    let email = q.get("email").cloned().unwrap_or_default();
    s.inner.lock().unwrap().calls.push(Call {
        method: "users.lookupByEmail".into(),
        authorized: ok,
        body: json!({"email": email}),
    });
    if !ok {
        return Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    match s.users.get(&email) {
        Some(id) => Json(json!({
            "ok": true,
            "user": {"id": id, "team_id": "T0STEWARD", "name": email.split('@').next(),
                     "deleted": false, "is_bot": false,
                     "profile": {"email": email, "display_name": email}}
        })),
        None => Json(json!({"ok": false, "error": "users_not_found"})),
    }
}

async fn respond(
    State(s): State<AppState>,
    Path(n): Path<u32>,
    Json(body): Json<Value>,
) -> Json<Value> {
    s.inner.lock().unwrap().calls.push(Call {
        method: "respond".into(),
        authorized: true,
        body: json!({"n": n, "body": body}),
    });
    Json(json!({"ok": true}))
}

async fn conversations_open(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let ok = authorized(&headers);
    s.inner.lock().unwrap().calls.push(Call {
        method: "conversations.open".into(),
        authorized: ok,
        body: body.clone(),
    });
    if !ok {
        return Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    let user = match &body["users"] {
        Value::Array(a) => a
            .first()
            .and_then(|u| u.as_str())
            .unwrap_or_default()
            .to_string(),
        Value::String(u) => u.split(',').next().unwrap_or_default().to_string(),
        _ => String::new(),
    };
    match user.strip_prefix('U') {
        Some(rest) => Json(json!({"ok": true, "channel": {"id": format!("D{rest}")}})),
        None => Json(json!({"ok": false, "error": "user_not_found"})),
    }
}

async fn history(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let ok = authorized(&headers);
    let mut inner = s.inner.lock().unwrap();
    inner.calls.push(Call {
        method: "conversations.history".into(),
        authorized: ok,
        body: json!(q),
    });
    if !ok {
        return Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    let channel = q.get("channel").cloned().unwrap_or_default();
    let oldest: f64 = q.get("oldest").and_then(|o| o.parse().ok()).unwrap_or(0.0);
    let metadata = q.get("include_all_metadata").is_some_and(|v| v == "true");
    let messages: Vec<Value> = inner
        .order
        .iter()
        .rev()
        .filter(|(c, ts)| *c == channel && ts.parse::<f64>().unwrap_or(0.0) >= oldest)
        .map(|(c, ts)| {
            let b = &inner.messages[&(c.clone(), ts.clone())];
            let mut m =
                json!({"type": "message", "ts": ts, "text": b["text"], "bot_id": "B0STEWARD"});
            if metadata && !b["metadata"].is_null() {
                m["metadata"] = b["metadata"].clone();
            }
            m
        })
        .collect();
    Json(json!({"ok": true, "messages": messages, "has_more": false}))
}

/// Slack's v0 request signature of `body` at `ts` (the documented algorithm).
pub fn signature(secret: &str, ts: &str, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// A button click (`block_actions`) as Slack posts it to the interactions URL.
pub struct Click<'a> {
    pub user: &'a str,
    pub action: &'a str,
    /// The button's value (what Steward put on it).
    pub value: &'a str,
    /// The response_url's number (the fake records answers under it).
    pub n: u32,
    /// The block holding the button.
    block: &'static str,
    channel: &'static str,
    /// The message's inputs as Slack reports them (`state.values`).
    state: Value,
}

impl<'a> Click<'a> {
    /// A button on an approval or alert message, with the reason box as the person left it.
    pub fn approval(
        user: &'a str,
        action: &'a str,
        value: &'a str,
        n: u32,
        reason: Option<&str>,
    ) -> Self {
        Click {
            user,
            action,
            value,
            n,
            block: "decision",
            channel: "C0SECURITY",
            state: json!({"reason": {"reason": {"type": "plain_text_input", "value": reason}}}),
        }
    }

    /// A button on an access-review message (a direct message to the owner), with the scopes
    /// picked in its multi-select.
    pub fn review(user: &'a str, action: &'a str, item: &'a str, drop: &[&str], n: u32) -> Self {
        let picked: Vec<Value> = drop
            .iter()
            .map(|d| json!({"text": {"type": "plain_text", "text": d}, "value": d}))
            .collect();
        Click {
            user,
            action,
            value: item,
            n,
            block: "review_decision",
            channel: "D0X",
            state: json!({"review_scopes": {"review_drop": {"type": "multi_static_select", "selected_options": picked}}}),
        }
    }

    /// The form body Slack posts.
    pub fn form(&self, slack: &FakeSlack) -> String {
        let (user, n) = (self.user, self.n);
        let payload = json!({
            "type": "block_actions",
            "team": {"id": "T0STEWARD", "domain": "example"},
            "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": "T0STEWARD"},
            "api_app_id": "A0STEWARD",
            "token": "legacy-verification-token-unused",
            "container": {"type": "message", "message_ts": "1700000000.000200", "channel_id": self.channel, "is_ephemeral": false},
            "trigger_id": format!("1700000001.{n}.0a1b2c"),
            "channel": {"id": self.channel, "name": "steward"},
            "state": {"values": self.state},
            "response_url": slack.response_url(n),
            "actions": [{
                "action_id": self.action, "block_id": self.block,
                "text": {"type": "plain_text", "text": self.action, "emoji": true},
                "value": self.value, "type": "button",
                "action_ts": format!("1700000002.{n:06}")
            }]
        });
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish()
    }

    /// Posts the click to the server, signed now with `secret`; returns (status, body).
    pub fn send(
        &self,
        s: &crate::support::Server,
        slack: &FakeSlack,
        secret: &str,
    ) -> (u16, Value) {
        let body = self.form(slack);
        let ts = chrono::Utc::now().timestamp().to_string();
        post_signed(s, &body, &ts, &signature(secret, &ts, &body))
    }
}

/// Posts a form body to `/slack/interactions` with the given timestamp and signature.
pub fn post_signed(s: &crate::support::Server, body: &str, ts: &str, sig: &str) -> (u16, Value) {
    let r = s
        .http()
        .post(s.url("/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body.to_string())
        .send()
        .expect("posting a Slack interaction");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}
