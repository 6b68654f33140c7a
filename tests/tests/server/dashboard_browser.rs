//! The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core
//! (`tests/browser/dashboard.mjs`) against a real `steward serve`. `tests/run` installs
//! Chromium and the npm packages; without them this test fails and says what to install.
//!
//! The journey: the requester signs in and sees their request without an Approve button, and a
//! forged POST from their session is refused; CSRF-less and cross-site posts are refused; the
//! approver approves and the agent page shows the agent active with its client; a token request
//! for an excluded scope freezes it, the overview shows the freeze, and two approvers unfreeze
//! it. Every page visited passes axe-core with no serious violation, and a screenshot of each
//! is written under `<target>/dashboard-screenshots/`.

use crate::support::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

const NAME: &str = "datadog-oncall-agent-prod";

fn needed(var: &str, what: &str) -> PathBuf {
    let v = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: {what}. Run tests/run, which installs Debian's chromium and the \
             npm packages of tests/browser into target/browser and sets it"
        )
    });
    let p = PathBuf::from(v);
    assert!(p.exists(), "{var}={} does not exist: {what}", p.display());
    p
}

/// Where screenshots go: beside the test binaries' target directory.
fn screenshots() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.parent())
        .expect("<target>/<profile>/deps/<test>");
    target.join("dashboard-screenshots")
}

fn phase(s: &Server, phase: &str) {
    let dir = needed(
        "STEWARD_TEST_BROWSER_DIR",
        "the directory with node_modules/playwright-core and axe-core",
    );
    let chromium = needed("STEWARD_TEST_CHROMIUM", "Chromium's executable");
    // The script beside its node_modules, fresh from the source tree.
    let script = dir.join("dashboard.mjs");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard.mjs"),
        &script,
    )
    .expect("copying the browser script");
    let out = Command::new("node")
        .arg(&script)
        .arg(phase)
        .current_dir(&dir)
        .env("STEWARD_URL", s.url("").trim_end_matches('/'))
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOTS", screenshots())
        .env("AGENT", NAME)
        .env("REQUESTER", ALICE)
        .env("PASSWORD_REQUESTER", Server::password_of(ALICE))
        .env("APPROVER", SAM)
        .env("PASSWORD_APPROVER", Server::password_of(SAM))
        .env("SECOND_APPROVER", PRIYA)
        .env("PASSWORD_SECOND_APPROVER", Server::password_of(PRIYA))
        .output()
        .expect("node runs (tests/run checks it is installed)");
    assert!(
        out.status.success(),
        "browser phase {phase} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn people_decide_in_the_dashboard_in_a_real_browser() {
    let s = Server::start();
    for p in [ALICE, SAM, PRIYA] {
        s.set_password(p);
    }
    let mut body = agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    );
    body["token_lifetime_secs"] = json!(900);
    let started = s.request_ok(&body);
    let approval = s.pending_approval(started["workflow_id"].as_str().unwrap());
    let approval_id = approval["request"]["id"].as_str().unwrap().to_string();

    phase(&s, "approve");
    let agent = s.wait_agent_status(NAME, "active");
    let decided = s.pending_approval_by_id(&approval_id);
    assert_eq!(decided["status"], "approved", "{decided}");
    assert_eq!(decided["outcome"]["by"], SAM, "{decided}");
    let sources: Vec<String> = s
        .audit()
        .into_iter()
        .filter(|r| r["unmapped"]["steward_event"] == "api_call")
        .filter(|r| r["unmapped"]["principal"]["id"] == SAM)
        .filter_map(|r| r["unmapped"]["source"].as_str().map(str::to_string))
        .collect();
    assert!(sources.iter().any(|s| s == "dashboard"), "{sources:?}");

    // A token request for an excluded scope freezes the agent at once.
    let client = agent["client_id"].as_str().unwrap().to_string();
    let (_, secret) = s.vault_secret(agent["id"].as_str().unwrap());
    let (status, v, _) = s.token(&client, &secret, Some("datadog:api_keys:write"));
    assert!(status >= 400, "{v}");
    s.wait_agent_status(NAME, "frozen");

    phase(&s, "unfreeze");
    let back = s.wait_agent_status(NAME, "active");
    assert_eq!(
        strings(&back["scopes"]),
        ["datadog:metrics:read", "datadog:monitors:write"]
    );
    for page in [
        "approvals",
        "agent",
        "inventory",
        "overview",
        "campaigns",
        "audit",
    ] {
        let shot = screenshots().join(format!("{page}.png"));
        assert!(shot.is_file(), "no screenshot {}", shot.display());
    }
}
