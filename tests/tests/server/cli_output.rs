//! What the operator CLI shows and sends: strings from the server reach the terminal as text,
//! never as escape sequences; `approvals list` shows why an agent is asked for; a decision is
//! bound to the request it showed; handing out a secret is audited; the token never travels
//! over plain http to another host.

use crate::support::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAME: &str = "datadog-remediation-agent-prod";
/// Clears the screen, retitles the window, rings the bell, then an 8-bit CSI (C1) and a
/// right-to-left override.
const HOSTILE: &str =
    "Mutes monitors\u{1b}[2J\u{1b}]0;owned\u{7} during on-call\u{9b}31m red\u{202e}txt";

/// The characters a terminal acts on that `text` holds raw (newlines aside).
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| *c != '\n' && (c.is_control() || *c == '\u{202e}'))
        .collect()
}

#[test]
fn cli_output_shows_control_characters_as_visible_escapes() {
    let s = Server::start();
    let mut body = agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    );
    body["purpose"] = json!(HOSTILE);
    let started = s.request_ok(&body);
    let approval = s.pending_approval(started["workflow_id"].as_str().unwrap());
    assert_eq!(approval["request"]["justification"], HOSTILE);

    for args in [
        &["agents", "show", NAME][..],
        &["approvals", "list"][..],
        &["approvals", "list", "--all"][..],
    ] {
        let (out, stdout, stderr) = run(&mut s.cli(args));
        assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
        assert_eq!(
            raw_controls(&stdout),
            Vec::<char>::new(),
            "{args:?}: {stdout:?}"
        );
        assert!(
            stdout.contains("Mutes monitors\\u{1b}[2J\\u{1b}]0;owned\\u{7} during on-call\\u{9b}31m red\\u{202e}txt"),
            "{args:?}: {stdout}"
        );
    }

    // --json: the same data to a parser, with nothing raw a terminal would act on.
    for args in [
        &["agents", "show", NAME, "--json"][..],
        &["approvals", "list", "--json"][..],
    ] {
        let (out, stdout, stderr) = run(&mut s.cli(args));
        assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
        assert_eq!(
            raw_controls(&stdout),
            Vec::<char>::new(),
            "{args:?}: {stdout:?}"
        );
        let v: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
        let purpose = if args[0] == "agents" {
            &v["agent"]["agent"]["purpose"]
        } else {
            &v[0]["request"]["justification"]
        };
        assert_eq!(purpose, HOSTILE, "{args:?}");
    }

    // The audit export (JSON lines) likewise.
    let (out, stdout, stderr) = run(&mut s.cli(["audit"]));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(raw_controls(&stdout), Vec::<char>::new());
    assert!(
        stdout
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );

    // An error that quotes what was asked for: shown as text too.
    let (out, stdout, stderr) = run(&mut s.cli(["agents", "show", "nobody\u{1b}[2J\u{7}"]));
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(raw_controls(&stderr), Vec::<char>::new(), "{stderr:?}");
}

#[test]
fn approvals_list_shows_the_justification_and_approve_shows_what_it_decides() {
    let s = Server::start();
    let started = s.request_ok(&agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    ));
    let approval = s.pending_approval(started["workflow_id"].as_str().unwrap());
    let id = approval["request"]["id"].as_str().unwrap().to_string();
    let hash = approval["action_hash"].as_str().unwrap().to_string();

    let (out, stdout, stderr) = run(&mut s.cli(["approvals", "list"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(&id));
    assert!(lines.next().is_some(), "{stdout}");
    assert_eq!(
        lines.next(),
        Some("    justification: Mutes flapping monitors and opens incidents during on-call"),
        "{stdout}"
    );

    let (out, stdout, stderr) = run(&mut s.cli_as(
        SAM,
        [
            "approvals",
            "approve",
            id.as_str(),
            "--reason",
            "looked at it",
        ],
    ));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for needle in [
        format!("approving {id} [pending]: onboard {NAME} (prod)"),
        "add scopes [datadog:metrics:read, datadog:monitors:write]".into(),
        format!("requested by {ALICE}: Mutes flapping monitors"),
        format!("action hash {}", &hash[..12]),
        "approve queued".into(),
    ] {
        assert!(stdout.contains(&needle), "`{needle}` in:\n{stdout}");
    }
    // The server took the hash it computed itself: the decision applies.
    s.wait_agent_status(NAME, "active");

    // An unknown id: refused before anything is sent.
    let (out, _, stderr) =
        run(&mut s.cli_as(SAM, ["approvals", "deny", "no-such", "--reason", "x"]));
    assert!(!out.status.success());
    assert!(stderr.contains("no approval with id `no-such`"), "{stderr}");
}

/// One request a fake admin API received: (method, path with query, body).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A fake admin API on a loopback port: lists one pending approval whose action hash is
/// `hash`, and accepts decisions, keeping what it was sent.
fn fake_api(hash: &'static str) -> (String, Seen) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let kept = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            reader.read_line(&mut head).unwrap();
            let mut len = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut parts = head.split_whitespace();
            let (method, path) = (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            );
            let (status, reply) = if method == "GET" && path.starts_with("/api/approvals") {
                (
                    "200 OK",
                    json!([{
                        "status": "pending",
                        "action_hash": hash,
                        "request": {
                            "id": "wf-1-approval-1", "workflow_id": "wf-1", "agent_id": "agent-1",
                            "agent_name": NAME, "environment": "prod", "action": "onboard",
                            "scopes_added": ["datadog:monitors:write"], "scopes_removed": [],
                            "sensitive_scopes": ["datadog:monitors:write"],
                            "token_lifetime_secs": 900, "requester": ALICE,
                            "justification": "on-call remediation", "approvers": [SAM],
                            "requested_at": "2026-01-01T00:00:00Z",
                            "expires_at": "2026-01-04T00:00:00Z"
                        },
                        "outcome": null
                    }]),
                )
            } else if method == "POST" && path.starts_with("/api/approvals/wf-1-approval-1/") {
                (
                    "202 Accepted",
                    json!({"approval_id": "wf-1-approval-1", "workflow_id": "wf-1",
                           "decision": if path.ends_with("/deny") { "deny" } else { "approve" },
                           "status": "decision queued"}),
                )
            } else {
                ("404 Not Found", json!({"error": "no route", "reasons": []}))
            };
            kept.lock()
                .unwrap()
                .push((method, path, String::from_utf8_lossy(&body).into_owned()));
            let reply = reply.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (base, seen)
}

#[test]
fn approve_and_deny_send_the_action_hash_of_the_request_they_showed() {
    const HASH: &str = "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592";
    for verb in ["approve", "deny"] {
        let (base, seen) = fake_api(HASH);
        let (out, stdout, stderr) = run(steward()
            .args(["approvals", verb, "wf-1-approval-1", "--reason", "checked"])
            .args(["--url", &base, "--token", "stp_test"]));
        assert!(out.status.success(), "{verb}: {stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("action hash {}", &HASH[..12])),
            "{stdout}"
        );
        let seen = seen.lock().unwrap().clone();
        let decision = seen
            .iter()
            .find(|(m, p, _)| m == "POST" && p.ends_with(&format!("/{verb}")))
            .unwrap_or_else(|| panic!("no decision sent: {seen:?}"));
        let sent: Value = serde_json::from_str(&decision.2).unwrap();
        assert_eq!(sent["action_hash"], HASH, "{verb}: {sent}");
        assert_eq!(sent["reason"], "checked", "{verb}: {sent}");
    }
}

#[test]
fn handing_out_credentials_is_audited_without_the_secret() {
    let mut s = Server::start();
    let agent = s.active_dev_agent("metrics-reader-agent-dev");
    let id = agent["id"].as_str().unwrap();
    let (version, secret) = s.vault_secret(id);

    let (out, stdout, stderr) =
        run(&mut s.cli_as(ALICE, ["agents", "credentials", "metrics-reader-agent-dev"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("client_secret={secret}")),
        "{stdout}"
    );

    let audit = s.audit();
    let handed: Vec<&Value> = audit
        .iter()
        .filter(|r| r["unmapped"]["steward_event"] == "secret_handed_out")
        .collect();
    assert_eq!(handed.len(), 1, "{:#?}", messages(&audit));
    let r = handed[0];
    assert_eq!(r["unmapped"]["agent_id"], id, "{r}");
    assert_eq!(r["unmapped"]["secret_version"], version.as_str(), "{r}");
    assert_eq!(r["unmapped"]["principal"]["id"], ALICE, "{r}");
    assert_eq!(r["unmapped"]["source"], "cli", "{r}");
    let data_dir = std::fs::canonicalize(&s.data_dir).unwrap();
    assert_eq!(
        r["unmapped"]["data_dir"],
        data_dir.display().to_string(),
        "{r}"
    );
    assert!(
        r["unmapped"]["os_user"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "{r}"
    );
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains("metrics-reader-agent-dev") && message.contains(&version),
        "{message}"
    );
    // Nowhere in the trail is the secret.
    assert!(
        audit.iter().all(|r| !r.to_string().contains(&secret)),
        "the secret is in the audit trail"
    );

    // Written beside the running server, the record is on the chain: the server seals over it
    // and the trail verifies.
    let last = audit
        .iter()
        .filter_map(|r| r["unmapped"]["audit_seq"].as_u64())
        .max()
        .unwrap();
    s.kill();
    s.spawn(&Options::default());
    wait_until("the seal at start", Duration::from_secs(20), || {
        let (status, seal) = s.get("/api/audit/seal");
        (status == 200 && seal["through"].as_u64() >= Some(last)).then_some(())
    });
    let (out, stdout, stderr) = run(&mut s.cli(["audit", "verify"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
}

#[test]
fn the_token_is_not_sent_over_plain_http_to_another_host() {
    for url in ["http://example.com", "http://203.0.113.9:8080"] {
        let (out, stdout, stderr) = run(steward().args([
            "agents",
            "list",
            "--url",
            url,
            "--token",
            "stp_secret_value",
        ]));
        assert!(!out.status.success(), "{url}: {stdout}");
        assert!(
            stderr.contains("use https://") && stderr.contains("plain http"),
            "{url}: {stderr}"
        );
        assert!(!stderr.contains("stp_secret_value"), "{stderr}");
    }
}
