//! The operator CLI: `steward validate` offline, and `agents` / `approvals` against a running
//! server.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const NAME: &str = "datadog-remediation-agent-prod";

fn manifest(
    dir: &Path,
    file: &str,
    name: &str,
    owner: &str,
    scopes: &[&str],
    lifetime: &str,
) -> PathBuf {
    let scopes = scopes
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"name = "{name}"
owner = "{owner}"
team = "sre"
environment = "prod"
purpose = "Mutes flapping monitors and opens incidents during on-call"
scopes = [{scopes}]
token_lifetime = "{lifetime}"
expires_on = 2099-12-31
"#
    );
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn good(dir: &Path) -> PathBuf {
    manifest(
        dir,
        "good.toml",
        NAME,
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
        "15m",
    )
}

fn policy_files(dir: &Path) -> (PathBuf, PathBuf) {
    let (policy, people) = (dir.join("policy.toml"), dir.join("people.toml"));
    std::fs::write(&policy, POLICY).unwrap();
    std::fs::write(&people, PEOPLE).unwrap();
    (policy, people)
}

/// The FAIL block of `path` in validate's output: its reason lines.
fn problems_of(stdout: &str, path: &Path) -> String {
    let header = format!("FAIL  {}", path.display());
    let start = stdout
        .find(&header)
        .unwrap_or_else(|| panic!("no `{header}` in:\n{stdout}"));
    stdout[start + header.len()..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("      - "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn validate_accepts_a_good_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, people) = policy_files(dir.path());
    let good = good(dir.path());
    let (out, stdout, stderr) = run(steward()
        .arg("validate")
        .arg("--policy")
        .arg(&policy)
        .arg("--people")
        .arg(&people)
        .arg(&good));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("ok    {}", good.display())),
        "{stdout}"
    );
}

#[test]
fn validate_lists_every_reason_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (policy, people) = policy_files(d);
    let good = good(d);
    let excluded = manifest(
        d,
        "excluded.toml",
        NAME,
        ALICE,
        &["datadog:metrics:read", "okta:users:manage"],
        "15m",
    );
    let bad_name = manifest(
        d,
        "bad-name.toml",
        "DatadogBot",
        ALICE,
        &["datadog:metrics:read"],
        "15m",
    );
    let lifetime = manifest(
        d,
        "lifetime.toml",
        NAME,
        ALICE,
        &["datadog:metrics:read"],
        "60m",
    );
    let unknown_owner = manifest(
        d,
        "unknown-owner.toml",
        NAME,
        "nobody@example.com",
        &["datadog:metrics:read"],
        "15m",
    );
    let inactive_owner = manifest(
        d,
        "inactive-owner.toml",
        NAME,
        "carl.former@example.com",
        &["datadog:metrics:read"],
        "15m",
    );
    let broken = d.join("broken.toml");
    std::fs::write(&broken, "name = \"x\"\nscopes = \"not a list\"\n").unwrap();

    let (out, stdout, stderr) = run(steward()
        .arg("validate")
        .arg("--policy")
        .arg(&policy)
        .arg("--people")
        .arg(&people)
        .args([
            &good,
            &excluded,
            &bad_name,
            &lifetime,
            &unknown_owner,
            &inactive_owner,
            &broken,
        ]));
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("ok    {}", good.display())),
        "{stdout}"
    );
    let p = problems_of(&stdout, &excluded);
    assert!(
        p.contains("scopes:") && p.contains("okta:users:manage") && p.contains("excluded"),
        "{p}"
    );
    let p = problems_of(&stdout, &bad_name);
    assert!(
        p.contains("name:") && p.contains("DatadogBot") && p.contains("naming pattern"),
        "{p}"
    );
    let p = problems_of(&stdout, &lifetime);
    assert!(
        p.contains("token_lifetime:") && p.contains("exceeds the policy maximum of 15 min"),
        "{p}"
    );
    let p = problems_of(&stdout, &unknown_owner);
    assert!(
        p.contains("owner:") && p.contains("nobody@example.com is not a person"),
        "{p}"
    );
    let p = problems_of(&stdout, &inactive_owner);
    assert!(
        p.contains("carl.former@example.com is not an active person"),
        "{p}"
    );
    let p = problems_of(&stdout, &broken);
    assert!(p.contains("not a valid agent manifest"), "{p}");
    assert!(stderr.contains("6 of 7 manifest(s)"), "{stderr}");

    // Without --people, owners are not checked (the policy alone says nothing about people).
    let (out, stdout, stderr) = run(steward()
        .arg("validate")
        .arg("--policy")
        .arg(&policy)
        .arg(&unknown_owner));
    assert!(out.status.success(), "{stdout}\n{stderr}");
}

#[test]
fn operator_commands_against_a_running_server() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let good = good(dir.path());

    // agents request
    let (out, stdout, stderr) =
        run(&mut s.cli_as(ALICE, [Path::new("agents"), Path::new("request"), &good]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("→ AwaitingApproval"), "{stdout}");
    let wf = stdout
        .lines()
        .find_map(|l| l.strip_prefix("workflow "))
        .unwrap_or_else(|| panic!("no workflow id in:\n{stdout}"))
        .trim()
        .to_string();
    assert!(wf.starts_with(&format!("onboarding-{NAME}-")), "{wf}");
    let (out, stdout, _) =
        run(&mut s.cli_as(ALICE, [Path::new("agents"), Path::new("request"), &good]));
    assert!(out.status.success());
    assert!(
        stdout.contains("already requested; nothing new started"),
        "{stdout}"
    );
    assert_eq!(s.agents().len(), 1);

    // A refused manifest: non-zero exit with the reasons.
    let excluded = manifest(
        dir.path(),
        "excluded.toml",
        "okta-helper-agent-prod",
        ALICE,
        &["okta:users:manage"],
        "15m",
    );
    let (out, stdout, stderr) = run(&mut s.cli_as(
        ALICE,
        [Path::new("agents"), Path::new("request"), &excluded],
    ));
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("request refused (422)") && stderr.contains("okta:users:manage"),
        "{stderr}"
    );

    // approvals list
    let (out, stdout, stderr) = run(&mut s.cli(["approvals", "list"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains(NAME))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("[pending]"), "{line}");
    assert!(line.contains(&format!("by {ALICE}")), "{line}");
    assert!(line.contains(SAM) && line.contains(PRIYA), "{line}");
    assert!(line.contains("datadog:monitors:write"), "{line}");
    let approval_id = line.split_whitespace().next().unwrap().to_string();
    assert_eq!(approval_id, format!("{wf}-approval-1"));

    // approvals approve: the requester is refused, security is not.
    let (out, _, stderr) =
        run(&mut s.cli_as(ALICE, ["approvals", "approve", approval_id.as_str()]));
    assert!(!out.status.success());
    assert!(stderr.contains("cannot approve"), "{stderr}");
    let (out, stdout, stderr) = run(&mut s.cli_as(
        SAM,
        [
            "approvals",
            "approve",
            &approval_id,
            "--reason",
            "remediation needs monitor writes",
        ],
    ));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("approve queued"), "{stdout}");
    s.wait_agent_status(NAME, "active");

    // agents list
    let (out, stdout, stderr) = run(&mut s.cli(["agents", "list"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with(NAME))
        .unwrap_or_else(|| panic!("{stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            NAME,
            "active",
            ALICE,
            "prod",
            "datadog:metrics:read,datadog:monitors:write"
        ]
    );
    let (out, stdout, _) = run(&mut s.cli(["agents", "list", "--json"]));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    assert_eq!(v[0]["name"], NAME);

    // agents show: record and history
    let (out, stdout, stderr) = run(&mut s.cli(["agents", "show", NAME]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let agent = s.agent(NAME);
    let client_id = agent["client_id"].as_str().unwrap();
    assert!(stdout.starts_with(&format!("{NAME} (")), "{stdout}");
    for needle in [
        "status                 active".to_string(),
        format!("owner                  {ALICE}"),
        format!("client_id              {client_id}"),
        "token_lifetime_secs    900".into(),
        "scopes                 datadog:metrics:read, datadog:monitors:write".into(),
        "history:".into(),
    ] {
        assert!(stdout.contains(&needle), "`{needle}` in:\n{stdout}");
    }
    let history: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "history:")
        .skip(1)
        .collect();
    let has = |from: &str, to: &str, by: &str| {
        history.iter().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.windows(3).any(|x| x == [from, "→", to]) && l.ends_with(&format!("by {by}"))
        })
    };
    assert!(has("[*]", "AwaitingApproval", ALICE), "{stdout}");
    assert!(has("AwaitingApproval", "Provisioning", SAM), "{stdout}");
    assert!(history.iter().any(|l| l.contains("→ Active")), "{stdout}");

    // agents credentials: the client id and the vault's current secret work at the token endpoint.
    let (out, stdout, stderr) = run(&mut s.cli(["agents", "credentials", NAME]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let field = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in:\n{stdout}"))
            .to_string()
    };
    assert_eq!(field("client_id"), client_id);
    let (claims, _) = s.token_ok(client_id, &field("client_secret"), None);
    assert_eq!(claims["sub"], client_id);

    // agents rotate, then agents show: credential age and the rotation receipt.
    let (out, stdout, stderr) = run(&mut s.cli_as(ALICE, ["agents", "rotate", NAME]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("rotation rotation-"), "{stdout}");
    let rotated = s.wait(
        "the rotation to promote the new secret",
        Duration::from_secs(20),
        || {
            let a = s.agent(NAME);
            (a["secret_version"] != agent["secret_version"]).then_some(a)
        },
    );
    let (out, stdout, stderr) = run(&mut s.cli(["agents", "show", NAME]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let receipt = &rotated["credentials"][0];
    for needle in [
        "credential age         0 days".to_string(),
        "credential history:".into(),
        format!(
            "{} → {}  (on demand by {ALICE})",
            receipt["old"]["secret_id"].as_str().unwrap(),
            receipt["new"]["secret_id"].as_str().unwrap()
        ),
        "verified: a client_credentials token was obtained with the new secret".into(),
    ] {
        assert!(stdout.contains(&needle), "`{needle}` in:\n{stdout}");
    }
    let (out, _, stderr) = run(&mut s.cli_as(BOB, ["agents", "rotate", NAME]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("only by the agent's owner, a security approver")
            && stderr.contains("(403)"),
        "{stderr}"
    );

    // approvals list --all shows the decided approval; the default list is empty.
    let (_, stdout, _) = run(&mut s.cli(["approvals", "list", "--all"]));
    assert!(
        stdout.contains(&approval_id) && stdout.contains("[approved]"),
        "{stdout}"
    );
    let (_, stdout, _) = run(&mut s.cli(["approvals", "list"]));
    assert!(!stdout.contains(&approval_id), "{stdout}");

    // audit: OCSF JSON lines, including the refused excluded scope.
    let (out, stdout, stderr) = run(&mut s.cli(["audit"]));
    assert!(out.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect();
    assert!(records.iter().any(|r| r["status"] == "Failure"
        && r["message"].as_str().unwrap().contains("okta:users:manage")));
    assert!(
        records
            .iter()
            .all(|r| r["metadata"]["version"].is_string() && r["class_uid"].is_u64())
    );

    // A wrong token or no server: a clear error, non-zero.
    let (out, _, stderr) = run(&mut s.cli(["agents", "list", "--token", "stw_wrong"]));
    assert!(!out.status.success());
    assert!(stderr.contains("wrong bearer token"), "{stderr}");
    let (out, _, stderr) = run(steward()
        .args(["agents", "list", "--url"])
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&s.data_dir));
    assert!(!out.status.success());
    assert!(stderr.contains("is `steward serve` running?"), "{stderr}");
}

/// `steward serve` with extra arguments and environment in a fresh directory, run until it
/// exits on its own: (exit status, stderr, whether it created its data directory). Killed (and the test failed) if it
/// is still running after `timeout`, i.e. if it accepted what it should have refused.
fn serve_until_exit(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (std::process::ExitStatus, String, bool) {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let (policy, people) = policy_files(dir.path());
    let data_dir = dir.path().join("data");
    let mut cmd = steward();
    for var in ["STEWARD_SWEEP", "STEWARD_OKTA_LOG_POLL"] {
        cmd.env_remove(var);
    }
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--policy")
        .arg(&policy)
        .arg("--people")
        .arg(&people)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--mtls-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning steward serve");
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling steward serve") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("steward serve {args:?} {env:?} kept running:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr, data_dir.exists())
}

/// Arguments, environment, and the message `steward serve` must refuse them with.
type Refusal = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn serve_refuses_zero_and_nonsense_periods_before_starting() {
    let cases: [Refusal; 6] = [
        (
            &["--sweep", "0s"],
            &[],
            "--sweep (STEWARD_SWEEP) must be a positive duration such as 1h or 30m, or `off` (no periodic sweep; POST /api/sweep still runs one); 0s is not a period",
        ),
        (
            &["--tick", "0"],
            &[],
            "--tick (STEWARD_TICK) must be a positive duration such as 1s or 500ms; 0 would never fire timers",
        ),
        (
            &["--tick", "off"],
            &[],
            "--tick (STEWARD_TICK) must be a positive duration such as 1s or 500ms; it cannot be `off`: due timers (approval expiry) would never fire",
        ),
        (
            &["--sweep", "nonsense"],
            &[],
            "--sweep (STEWARD_SWEEP) must be a positive duration such as 1h or 30m, or `off` (no periodic sweep; POST /api/sweep still runs one); `nonsense` is not a duration",
        ),
        (
            &["--okta-log-poll", "0s"],
            &[],
            "--okta-log-poll (STEWARD_OKTA_LOG_POLL) must be a positive duration such as 60s or 5m, or `off`",
        ),
        // The environment is checked the same way as the flags.
        (
            &[],
            &[("STEWARD_SWEEP", "0s")],
            "--sweep (STEWARD_SWEEP) must be a positive duration",
        ),
    ];
    for (args, env, message) in cases {
        let (status, stderr, opened) = serve_until_exit(args, env, Duration::from_secs(15));
        assert!(!status.success(), "{args:?} {env:?}: {status}\n{stderr}");
        assert!(stderr.contains(message), "{args:?} {env:?}:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        // Refused before anything was opened or bound.
        assert!(!stderr.contains("steward serving on"), "{stderr}");
        assert!(!opened, "{args:?} {env:?} created the data dir");
    }
}

#[test]
fn serve_with_the_sweep_off_runs_it_only_when_asked() {
    // The sweep logs its report; with a short period it runs repeatedly.
    let sweeps = |s: &Server| s.log().matches("SweepReport").count();
    let on = Server::start_with(Options::default().env("STEWARD_SWEEP", "100ms"));
    on.wait("a few periodic sweeps", SETTLE, || {
        (sweeps(&on) >= 3).then_some(())
    });
    drop(on);

    let off = Server::start_with(Options::default().env("STEWARD_SWEEP", "off"));
    assert!(
        off.log()
            .contains("periodic sweep: off (POST /api/sweep runs one)"),
        "{}",
        off.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sweeps(&off), 0, "{}", off.log());
    let (status, report) = off.post("/api/sweep", &serde_json::json!({}));
    assert_eq!(status, 200, "{report}");
    off.wait("the requested sweep's log line", SETTLE, || {
        (sweeps(&off) == 1).then_some(())
    });
}

/// An admin-token file emptied (or cut short) by hand or by a bad restore refuses to start,
/// instead of serving with a blank token that a request without one could match.
#[test]
fn serve_refuses_an_empty_admin_token_file() {
    let mut s = crate::support::Server::start();
    s.kill();
    let token = s.data_dir.join("admin-token");
    for content in ["", "  \n", "stw_short"] {
        std::fs::write(&token, content).unwrap();
        s.spawn_may_abort(&crate::support::Options::default());
        let status = s.wait_exit(Duration::from_secs(15));
        assert!(!status.success(), "{content:?}: {status}");
        assert!(
            s.log().contains("an admin token needs at least 32"),
            "{content:?}:\n{}",
            s.log()
        );
    }
}
