//! People sign in at a real OpenID provider (npm oidc-provider, device flow) and call the real
//! `steward serve` with its token: a person is let in only while active in the directory, and
//! acts only as themselves; the admin token stays automation.

use crate::support::oidc_people::{self, AUDIENCE};
use crate::support::*;
use serde_json::{Value, json};

const CARL: &str = "carl.former@example.com";
const NAME: &str = "datadog-remediation-agent-prod";

fn signed_in_server() -> Server {
    Server::start_with(
        Options::default()
            .env("STEWARD_OIDC_ISSUER", &oidc_people::issuer())
            .env("STEWARD_OIDC_AUDIENCE", AUDIENCE),
    )
}

fn token_of(person: &str) -> String {
    oidc_people::sign_in(
        person,
        &oidc_people::env("STEWARD_TEST_OIDC_PEOPLE_PASSWORD"),
    )
    .unwrap_or_else(|e| panic!("{person} signs in: {e}"))
}

fn call(s: &Server, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = match method {
        "GET" => s.http().get(s.url(path)),
        _ => s.http().post(s.url(path)),
    }
    .bearer_auth(token);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.send().expect("the server answers");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn refusals(s: &Server) -> Vec<String> {
    s.audit()
        .into_iter()
        .filter(|r| r["status_id"] == 2)
        .filter_map(|r| r["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_person_signed_in_at_the_issuer_is_let_in_and_acts_only_as_themselves() {
    let s = signed_in_server();
    let alice = token_of(ALICE);
    let sam = token_of(SAM);

    let (status, v) = call(&s, &alice, "GET", "/api/agents", None);
    assert_eq!(status, 200, "{v}");

    // Alice files a request: she is its requester; a body naming anyone is refused, whoever
    // it names.
    let mut forged = agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    );
    forged["requester"] = json!(BOB);
    let (status, v) = call(&s, &alice, "POST", "/api/agents", Some(forged));
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("requester"), "{v}");
    assert!(s.agents().is_empty(), "a refused request changes nothing");

    let request = agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    );
    let (status, v) = call(&s, &alice, "POST", "/api/agents", Some(request));
    assert_eq!(status, 202, "{v}");
    let pending = s.approvals(false);
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["request"]["requester"], ALICE);
    let id = pending[0]["request"]["id"].as_str().unwrap().to_string();

    // Sam cannot approve as Priya (the body names nobody); he approves as himself.
    let (status, v) = call(
        &s,
        &sam,
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(json!({"approver": PRIYA})),
    );
    assert_eq!(status, 422, "{v}");
    let (status, v) = call(
        &s,
        &sam,
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(json!({})),
    );
    assert_eq!(status, 202, "{v}");
    s.wait_agent_status(NAME, "active");

    // The admin token is still let in, as automation.
    let (status, _) = s.get("/api/agents");
    assert_eq!(status, 200);
}

#[test]
fn people_the_directory_does_not_know_or_who_left_are_refused_and_audited() {
    let s = signed_in_server();
    for (person, why) in [
        (
            "mallory@example.com",
            "mallory@example.com is not in the directory",
        ),
        (CARL, "carl.former@example.com is no longer active"),
    ] {
        let token = token_of(person);
        let (status, v) = call(&s, &token, "GET", "/api/agents", None);
        assert_eq!(status, 403, "{person}: {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{v}");
        assert!(
            refusals(&s).iter().any(|m| m.contains(why)),
            "the refusal of {person} is audited"
        );
    }
    // Alice's claims under the signature of Sam's token: refused with 401.
    let alice = token_of(ALICE);
    let sam = token_of(SAM);
    let (alice_signed, _) = alice.rsplit_once('.').unwrap();
    let (_, sam_signature) = sam.rsplit_once('.').unwrap();
    let forged = format!("{alice_signed}.{sam_signature}");
    let (status, v) = call(&s, &forged, "GET", "/api/agents", None);
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("signature"), "{v}");
    assert!(!v.to_string().contains(&alice), "the token is never echoed");
}

#[test]
fn a_wrong_password_at_the_issuer_gets_no_token() {
    let refused = oidc_people::sign_in(ALICE, "not-the-password").unwrap_err();
    assert!(refused.contains("wrong login or password"), "{refused}");
}

/// `steward login` end to end: the CLI shows a code, the person enters it at the issuer and
/// signs in there, the CLI keeps the token (0600) and calls Steward as that person until
/// `steward logout`.
#[test]
fn steward_login_signs_a_person_in_with_the_device_flow() {
    use std::io::{BufRead, BufReader};
    let s = signed_in_server();
    let config = tempfile::tempdir().unwrap();
    let mut login = steward()
        .args([
            "login",
            "--issuer",
            &oidc_people::issuer(),
            "--audience",
            AUDIENCE,
        ])
        .env("STEWARD_CONFIG_DIR", config.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(login.stdout.take().unwrap()).lines();
    let prompt = lines.next().expect("the CLI shows a code").unwrap();
    let (_, code) = prompt
        .split_once("enter the code: ")
        .unwrap_or_else(|| panic!("unexpected prompt: {prompt}"));
    oidc_people::approve_device(
        code.trim(),
        ALICE,
        &oidc_people::env("STEWARD_TEST_OIDC_PEOPLE_PASSWORD"),
    )
    .unwrap();
    let status = login.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "steward login failed: {rest:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("Signed in at")),
        "{rest:?}"
    );

    let session = config.path().join("session.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&session).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the session file is the person's alone");
    }

    let whoami = |config: &std::path::Path| {
        let out = s
            .cli(["whoami"])
            .env("STEWARD_CONFIG_DIR", config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let me = whoami(config.path());
    assert!(me.starts_with("person alice@example.com (token "), "{me}");

    let out = steward()
        .arg("logout")
        .env("STEWARD_CONFIG_DIR", config.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!session.exists());
    assert_eq!(
        whoami(config.path()).trim(),
        "automation admin-token holder"
    );
}
