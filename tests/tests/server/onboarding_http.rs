//! Onboarding and scope change over HTTP: request → approval → provisioning → a real token.

use crate::support::*;
use serde_json::{Value, json};

const NAME: &str = "datadog-remediation-agent-prod";

/// The JWT's claims carry exactly these scopes, as `scp` (array) and `scope` (space-separated).
fn assert_scopes(claims: &Value, expected: &[&str]) {
    assert_eq!(strings(&claims["scp"]), expected, "scp claim: {claims}");
    assert_eq!(claims["scope"], expected.join(" "), "scope claim: {claims}");
}

#[test]
fn request_approve_provision_and_fetch_a_verified_token() {
    let s = Server::start();
    let mut body = agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    );
    body["token_lifetime_secs"] = json!(900);

    // The request is accepted and waits for a security approval.
    let started = s.request_ok(&body);
    assert_eq!(started["state"], "AwaitingApproval", "{started}");
    let wf = started["workflow_id"].as_str().unwrap().to_string();
    let agent_id = started["agent_id"].as_str().unwrap().to_string();
    let pending = s.agent(NAME);
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    assert_eq!(pending["id"], agent_id.as_str());
    assert!(pending["client_id"].is_null(), "no client before approval");
    assert!(s.idp_clients().is_empty(), "nothing provisioned yet");

    // The approval names the security group (never the requester) and the sensitive scope.
    let approval = s.pending_approval(&wf);
    assert_eq!(approval["status"], "pending");
    let req = &approval["request"];
    assert_eq!(req["action"], "onboard");
    assert_eq!(req["requester"], ALICE);
    assert_eq!(strings(&req["approvers"]), [SAM, PRIYA]);
    assert_eq!(
        strings(&req["sensitive_scopes"]),
        ["datadog:monitors:write"]
    );
    assert!(req["expires_at"].is_string());
    let approval_id = req["id"].as_str().unwrap().to_string();
    s.wait("the approvers to be notified", SETTLE, || {
        array(s.get_ok("/api/notifications"))
            .into_iter()
            .find(|n| n["kind"] == "approval_request")
            .filter(|n| n["subject"].as_str().unwrap_or("").contains(&approval_id))
    });

    // Security approves; the agent is provisioned with a dedicated client.
    let (status, decided) = s.decide(&approval_id, "approve", SAM);
    assert_eq!(status, 202, "{decided}");
    assert_eq!(decided["workflow_id"], wf.as_str());
    let agent = s.wait_agent_status(NAME, "active");
    let client_id = agent["client_id"].as_str().expect("client_id").to_string();
    assert!(agent["secret_version"].is_string(), "{agent}");
    assert_eq!(
        strings(&agent["scopes"]),
        ["datadog:metrics:read", "datadog:monitors:write"]
    );
    assert_eq!(agent["token_lifetime_secs"], 900);

    // The IdP holds exactly that client with exactly the granted scopes.
    let clients = s.idp_clients();
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(clients[0]["client_id"], client_id.as_str());
    assert_eq!(clients[0]["name"], NAME);
    assert_eq!(
        strings(&clients[0]["scopes"]),
        ["datadog:metrics:read", "datadog:monitors:write"]
    );
    assert_eq!(clients[0]["token_lifetime_secs"], 900);
    assert_eq!(clients[0]["active"], true);

    // The approval is closed as approved, and the workflow ended Active.
    let all = s.approvals(true);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"], "approved");
    assert!(s.approvals(false).is_empty());
    let w = s.wait_workflow_state(&wf, "Active");
    assert_eq!(w["workflow"]["terminal"], true);

    // A real token from the token endpoint with the secret from the vault.
    let (version, secret) = s.vault_secret(&agent_id);
    assert_eq!(agent["secret_version"], version.as_str());
    let (claims, resp) = s.token_ok(
        &client_id,
        &secret,
        Some("datadog:metrics:read datadog:monitors:write"),
    );
    assert_eq!(resp["expires_in"], 900);
    assert_eq!(resp["scope"], "datadog:metrics:read datadog:monitors:write");
    assert_eq!(claims["sub"], client_id.as_str());
    assert_eq!(claims["client_id"], client_id.as_str());
    assert_eq!(claims["iss"], s.base.as_str());
    assert_eq!(claims["aud"], "api://steward-agents");
    assert_scopes(&claims, &["datadog:metrics:read", "datadog:monitors:write"]);
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 900, "the token lives the policy lifetime");

    // The JWKS is one Ed25519 key, and a tampered token does not verify with it.
    let jwks = s.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    let token = resp["access_token"].as_str().unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let forged = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
        payload["scope"] = json!("okta:users:manage");
        parts[1] = b64.encode(payload.to_string());
        parts.join(".")
    };
    assert!(
        s.verify(&forged).is_err(),
        "a tampered token must not verify"
    );

    // client_secret_post without a scope: every granted scope.
    let resp = s
        .http()
        .post(s.url("/oauth2/v1/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().unwrap();
    let claims = s.verify(v["access_token"].as_str().unwrap()).unwrap();
    assert_scopes(&claims, &["datadog:metrics:read", "datadog:monitors:write"]);

    // A scope outside the grant is refused (RFC 6749 invalid_scope), and the agent is frozen
    // for asking (anomaly detection's CRITICAL rule): its client takes no request after that.
    let (status, v, _) = s.token(&client_id, &secret, Some("banking:payments:write"));
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"], "invalid_scope", "{v}");
    assert!(v["access_token"].is_null());
    s.wait_agent_status(NAME, "frozen");
    // The registry says frozen in the step that issues the deactivation; the identity provider
    // applies it when that command runs, a moment later.
    wait_until(
        "the frozen agent's client to be deactivated",
        SETTLE,
        || (s.token(&client_id, &secret, None).0 == 401).then_some(()),
    );
    let (status, v, _) = s.token(
        &client_id,
        &secret,
        Some("datadog:metrics:read okta:users:manage"),
    );
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error_description"], "client is deactivated", "{v}");
    assert!(v["access_token"].is_null());

    // A wrong secret and an unknown client get the same 401 invalid_client.
    let (status, wrong, www) = s.token(&client_id, "not-the-secret", None);
    assert_eq!(status, 401, "{wrong}");
    assert_eq!(wrong["error"], "invalid_client");
    assert!(www.is_some(), "401 carries WWW-Authenticate");
    let (status, unknown, _) = s.token("dev_0000000000000000", &secret, None);
    assert_eq!(status, 401, "{unknown}");
    assert_eq!(unknown["error"], "invalid_client");
    assert_eq!(
        wrong["error_description"], unknown["error_description"],
        "unknown and wrong-secret clients are indistinguishable"
    );
    // No client authentication at all.
    let resp = s
        .http()
        .post(s.url("/oauth2/v1/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // Every refused token request is audited with the client id, never the secret.
    let refused: Vec<Value> = s
        .audit()
        .into_iter()
        .filter(|r| r["unmapped"]["steward_event"] == "token_refused")
        .collect();
    // Five: the scope outside the grant, the deactivated client (the wait's refused request
    // and the check after it are the same refusal, recorded once within the window and
    // counted twice), the wrong secret, the unknown client, no authentication.
    assert_eq!(refused.len(), 5, "{:?}", messages(&refused));
    assert!(
        refused
            .iter()
            .all(|r| r["class_uid"] == 3002 && r["status_id"] == 2)
    );
    assert!(
        refused
            .iter()
            .any(|r| r["user"]["uid"] == client_id.as_str())
    );
    let trail = serde_json::to_string(&s.audit()).unwrap();
    assert!(
        !trail.contains(secret.as_str()),
        "the secret never reaches the audit trail"
    );

    // The history and the audit trail tell the story, naming the approver.
    let history = array(s.get_ok(&format!("/api/agents/{NAME}/history")));
    let steps: Vec<&str> = history
        .iter()
        .filter(|h| h["entry"]["rejected"].is_null())
        .map(|h| h["entry"]["to"].as_str().unwrap())
        .collect();
    for expected in ["AwaitingApproval", "Provisioning", "Active"] {
        assert!(steps.contains(&expected), "{expected} in {steps:?}");
    }
    let audit = s.audit();
    let decided: Vec<&Value> = audit
        .iter()
        .filter(|r| r["unmapped"]["steward_event"] == "approval_decided")
        .collect();
    assert_eq!(decided.len(), 1, "{:?}", messages(&audit));
    assert_eq!(decided[0]["actor"]["user"]["email_addr"], SAM);
    assert_eq!(decided[0]["unmapped"]["approval_id"], approval_id.as_str());
    assert_eq!(decided[0]["metadata"]["correlation_uid"], wf.as_str());
    assert!(
        audit
            .iter()
            .filter(|r| r["unmapped"]["steward_event"] != "token_refused")
            .all(|r| r["status"] == "Success"),
        "nothing but the deliberate token requests was refused: {:?}",
        messages(&audit)
    );
}

#[test]
fn a_request_without_sensitive_scopes_provisions_without_approval() {
    let s = Server::start();
    let name = "datadog-metrics-agent-dev";
    let started = s.request_ok(&agent_request(
        name,
        "dev",
        BOB,
        &["datadog:metrics:read", "datadog:monitors:read"],
    ));
    assert_eq!(started["state"], "Provisioning", "{started}");
    let agent = s.wait_agent_status(name, "active");
    assert!(s.approvals(true).is_empty(), "no approval was asked for");
    assert_eq!(
        agent["token_lifetime_secs"], 900,
        "the policy maximum when absent"
    );

    let client_id = agent["client_id"].as_str().unwrap();
    let (_, secret) = s.vault_secret(agent["id"].as_str().unwrap());
    let (claims, resp) = s.token_ok(client_id, &secret, None);
    assert_eq!(resp["expires_in"], 900);
    assert_eq!(claims["sub"], client_id);
    assert_scopes(&claims, &["datadog:metrics:read", "datadog:monitors:read"]);
    let (status, v, _) = s.token(client_id, &secret, Some("datadog:monitors:write"));
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_scope")));
}

#[test]
fn scope_change_adding_a_sensitive_scope_needs_approval_removing_does_not() {
    let s = Server::start();
    let name = "datadog-triage-agent-staging";
    s.request_ok(&agent_request(
        name,
        "staging",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:read"],
    ));
    let agent = s.wait_agent_status(name, "active");
    let client_id = agent["client_id"].as_str().unwrap().to_string();
    let (_, secret) = s.vault_secret(agent["id"].as_str().unwrap());

    // Add a sensitive scope: it waits for an approval and nothing changes meanwhile.
    let (status, change) = s.post_as(ALICE, &format!("/api/agents/{name}/scopes"),
        &json!({"add": ["datadog:monitors:write"], "remove": [], "reason": "mute flapping monitors"}),
    );
    assert_eq!(status, 202, "{change}");
    assert_eq!(change["state"], "AwaitingApproval", "{change}");
    let wf = change["workflow_id"].as_str().unwrap().to_string();
    let approval = s.pending_approval(&wf);
    assert_eq!(approval["request"]["action"], "scope-change");
    assert_eq!(
        strings(&approval["request"]["sensitive_scopes"]),
        ["datadog:monitors:write"]
    );
    assert_eq!(
        strings(&s.agent(name)["scopes"]),
        ["datadog:metrics:read", "datadog:monitors:read"]
    );
    let (status, v, _) = s.token(&client_id, &secret, Some("datadog:monitors:write"));
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_scope")),
        "not granted before the approval"
    );

    // Approve: the grant, the registry and the next token carry the new scope.
    let approval_id = approval["request"]["id"].as_str().unwrap();
    let (status, v) = s.decide(approval_id, "approve", PRIYA);
    assert_eq!(status, 202, "{v}");
    s.wait_workflow_state(&wf, "Applied");
    let expected = [
        "datadog:metrics:read",
        "datadog:monitors:read",
        "datadog:monitors:write",
    ];
    let agent = s.agent(name);
    assert_eq!(agent["status"], "active");
    assert_eq!(strings(&agent["scopes"]), expected);
    assert_eq!(
        agent["client_id"],
        client_id.as_str(),
        "same client, new grant"
    );
    let clients = s.idp_clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(strings(&clients[0]["scopes"]), expected);
    let (claims, _) = s.token_ok(&client_id, &secret, Some("datadog:monitors:write"));
    assert_scopes(&claims, &["datadog:monitors:write"]);
    let (claims, _) = s.token_ok(&client_id, &secret, None);
    assert_scopes(&claims, &expected);

    // Remove a scope: applied at once, without an approval.
    let approvals_before = s.approvals(true).len();
    let (status, change) = s.post_as(
        ALICE,
        &format!("/api/agents/{name}/scopes"),
        &json!({"remove": ["datadog:monitors:read"], "reason": "no longer needed"}),
    );
    assert_eq!(status, 202, "{change}");
    assert_eq!(change["state"], "Granting", "{change}");
    s.wait_workflow_state(change["workflow_id"].as_str().unwrap(), "Applied");
    assert_eq!(
        s.approvals(true).len(),
        approvals_before,
        "no approval for a removal"
    );
    let expected = ["datadog:metrics:read", "datadog:monitors:write"];
    assert_eq!(strings(&s.agent(name)["scopes"]), expected);
    assert_eq!(strings(&s.idp_clients()[0]["scopes"]), expected);
    let (claims, _) = s.token_ok(&client_id, &secret, None);
    assert_scopes(&claims, &expected);
    // Asking for the removed scope is refused, and (outside its grant now) freezes the agent.
    let (status, v, _) = s.token(&client_id, &secret, Some("datadog:monitors:read"));
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_scope")),
        "a removed scope is no longer issued"
    );
    s.wait_agent_status(name, "frozen");

    // The audit trail records the grants and the revocation.
    let audit = s.audit();
    let kinds: Vec<&str> = audit
        .iter()
        .map(|r| r["unmapped"]["steward_event"].as_str().unwrap_or(""))
        .collect();
    assert!(kinds.contains(&"scopes_granted"), "{kinds:?}");
    assert!(kinds.contains(&"scopes_revoked"), "{kinds:?}");
}

#[test]
fn a_waiting_request_can_be_withdrawn_by_its_requester() {
    let s = Server::start();
    let started = s.request_ok(&agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    ));
    let wf = started["workflow_id"].as_str().unwrap();
    let approval_id = s.pending_approval(wf)["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = s.post_as(
        ALICE,
        &format!("/api/workflows/{wf}/cancel"),
        &json!({"reason": "asked for the wrong scopes"}),
    );
    assert_eq!(status, 202, "{v}");
    s.wait_workflow_state(wf, "Cancelled");
    let agent = s.wait_agent_status(NAME, "cancelled");
    assert!(agent["client_id"].is_null());
    assert!(s.idp_clients().is_empty());
    assert_eq!(s.approvals(true)[0]["status"], "cancelled");
    // Nothing left to decide, and an ended workflow cannot be cancelled again.
    let (status, v) = s.decide(&approval_id, "approve", SAM);
    assert_eq!(status, 422, "{v}");
    let (status, v) = s.post_as(
        ALICE,
        &format!("/api/workflows/{wf}/cancel"),
        &json!({"reason": "again"}),
    );
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("already ended"), "{v}");
}

#[test]
fn a_cancel_by_someone_else_does_not_block_the_requesters_cancel() {
    let s = Server::start();
    let started = s.request_ok(&agent_request(
        NAME,
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    ));
    let wf = started["workflow_id"].as_str().unwrap();
    // Bob may not withdraw Alice's request, and the API says so at once.
    let (status, v) = s.post_as(
        BOB,
        &format!("/api/workflows/{wf}/cancel"),
        &json!({"reason": "not mine to cancel"}),
    );
    assert_eq!(status, 403, "{v}");
    assert!(v.to_string().contains("may be done only by"), "{v}");
    s.wait_idle();
    assert_eq!(s.agent(NAME)["status"], "pending_approval");
    // Alice still can.
    let (status, v) = s.post_as(
        ALICE,
        &format!("/api/workflows/{wf}/cancel"),
        &json!({"reason": "asked for the wrong scopes"}),
    );
    assert_eq!(status, 202, "{v}");
    s.wait_agent_status(NAME, "cancelled");
}

/// The development IdP's tokens name the URL clients reach the server at (`--public-url`), not
/// the address it listens on; listening on every interface without saying that URL refuses to
/// start, since `http://0.0.0.0:…` is no issuer a client can check.
#[test]
fn the_dev_idps_issuer_is_the_public_url() {
    const PUBLIC: &str = "https://steward.example.test";
    let mut s = Server::start_with(Options::default().env("STEWARD_PUBLIC_URL", PUBLIC));
    let discovery = s.get_ok("/.well-known/openid-configuration");
    assert_eq!(discovery["issuer"], PUBLIC, "{discovery}");
    assert_eq!(
        discovery["token_endpoint"],
        format!("{PUBLIC}/oauth2/v1/token"),
        "{discovery}"
    );
    let agent = s.active_dev_agent("public-url-agent-dev");
    let (_, secret) = s.vault_secret(agent["id"].as_str().unwrap());
    let client_id = s.agent("public-url-agent-dev")["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v, _) = s.token(&client_id, &secret, None);
    assert_eq!(status, 200, "{v}");
    let payload = v["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let claims: Value = {
        use base64::Engine as _;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(claims["iss"], PUBLIC, "{claims}");
    s.kill();

    let (out, _, stderr) = run(steward()
        .arg("serve")
        .arg("--data-dir")
        .arg(&s.data_dir)
        .arg("--policy")
        .arg(&s.policy_path)
        .arg("--people")
        .arg(&s.people_path)
        .arg("--listen")
        .arg("0.0.0.0:0"));
    assert!(!out.status.success());
    assert!(
        stderr.contains("needs --public-url"),
        "the refusal says what to set: {stderr}"
    );
    let (out, _, stderr) = run(steward()
        .args([
            "serve",
            "--public-url",
            "https://x.example/path",
            "--data-dir",
        ])
        .arg(&s.data_dir));
    assert!(!out.status.success());
    assert!(stderr.contains("no path"), "{stderr}");
}
