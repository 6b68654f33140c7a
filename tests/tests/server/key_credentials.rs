//! Agents that hold their own key (`private_key_jwt`, RFC 7523) on the embedded default: the
//! key enters only with a proof of possession over Steward's nonce, the client has no secret,
//! tokens come from client assertions and are DPoP-bound (RFC 9449) where the policy says so,
//! and a bound token presented without its proof is refused by introspection.

use crate::support::*;
use serde_json::{Value, json};
use shared::agent_key::AgentKeyPair;

/// The example policy where prod allows only agent-held keys, with DPoP-bound tokens.
fn keys_in_prod() -> Options {
    let mut o = Options::default();
    assert!(
        !o.policy.contains("\n[credentials]"),
        "the example sets none"
    );
    o.policy.push_str(
        "\n[credentials]\nkinds = { prod = [\"private_key_jwt\"] }\nbinding = { prod = \"dpop\" }\n",
    );
    o
}

fn nonce(s: &Server, person: &str) -> String {
    let (status, v) = s.post_as(person, "/api/key-nonces", &json!({}));
    assert_eq!(status, 200, "{v}");
    v["nonce"].as_str().expect("a nonce").to_string()
}

/// An agent request for a key-bound agent with its public key and proof.
fn keyed(name: &str, public_jwk: Value, key_proof: &str) -> Value {
    let mut body = agent_request(name, "prod", ALICE, &["datadog:metrics:read"]);
    body["credential"] = json!("private_key_jwt");
    body["public_jwk"] = public_jwk;
    body["key_proof"] = json!(key_proof);
    body
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// A client_credentials request with a client assertion, and a DPoP proof when given.
fn assertion_token(
    s: &Server,
    client_id: &str,
    assertion: &str,
    dpop: Option<&str>,
) -> (u16, Value) {
    let mut req = s.http().post(s.url("/oauth2/v1/token")).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
    ]);
    if let Some(p) = dpop {
        req = req.header("DPoP", p);
    }
    s.send(req)
}

fn introspect(s: &Server, token: &str, dpop: Option<&str>) -> Value {
    let mut req = s
        .http()
        .post(s.url("/oauth2/v1/introspect"))
        .form(&[("token", token)]);
    if let Some(p) = dpop {
        req = req.header("DPoP", p);
    }
    let (status, v) = s.send(req);
    assert_eq!(status, 200, "{v}");
    v
}

/// The lines of a PEM between its armour: what would show if the key leaked anywhere.
fn pem_body(pair: &AgentKeyPair) -> Vec<String> {
    pair.pem()
        .expose()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect()
}

#[test]
fn an_agent_held_key_gets_dpop_bound_tokens_and_a_copy_without_its_proof_is_refused() {
    let s = Server::start_with(keys_in_prod());
    let name = "ledger-reader-agent-prod";

    // Prod allows no shared secret.
    let (status, v) = s.request_agent(&agent_request(
        "secret-reader-agent-prod",
        "prod",
        ALICE,
        &["datadog:metrics:read"],
    ));
    assert_eq!(status, 422, "{v}");
    assert!(
        v.to_string()
            .contains("credential `secret` is not allowed in environment `prod`"),
        "{v}"
    );

    let pair = AgentKeyPair::generate().unwrap();
    let kid = pair.public().kid.clone();

    // A proof over a nonce Steward never issued, and a public JWK with its private half, are
    // refused, say why and change nothing.
    let forged = pair.key_proof(name, "kn_made_up", now());
    let (status, v) = s.request_agent(&keyed(name, pair.public_jwk(), &forged));
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("not issued by Steward"), "{v}");
    let mut private = pair.public_jwk();
    private["d"] = json!("AAAA");
    let n = nonce(&s, ALICE);
    let (status, v) = s.request_agent(&keyed(name, private, &pair.key_proof(name, &n, now())));
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("private key material (`d`)"), "{v}");
    // A key the requester does not hold: a proof by another key.
    let other = AgentKeyPair::generate().unwrap();
    let n = nonce(&s, ALICE);
    let (status, v) = s.request_agent(&keyed(
        name,
        pair.public_jwk(),
        &other.key_proof(name, &n, now()),
    ));
    assert_eq!(status, 422, "{v}");
    assert!(
        v.to_string().contains("does not verify with public_jwk"),
        "{v}"
    );
    assert!(
        !s.agents().iter().any(|a| a["name"] == name),
        "a refused key changes nothing"
    );
    let refusals = s
        .audit()
        .into_iter()
        .filter(|r| {
            r.to_string()
                .contains("public key for agent ledger-reader-agent-prod")
        })
        .count();
    assert!(refusals >= 3, "each refused key is audited ({refusals})");

    // The agent proves its key over a fresh nonce; the proof is good once.
    let n = nonce(&s, ALICE);
    let proof = pair.key_proof(name, &n, now());
    s.request_ok(&keyed(name, pair.public_jwk(), &proof));
    let (status, v) = s.request_agent(&keyed(
        "ledger-writer-agent-prod",
        pair.public_jwk(),
        &pair.key_proof("ledger-writer-agent-prod", &n, now()),
    ));
    assert_eq!(status, 422, "a used nonce: {v}");
    assert!(v.to_string().contains("used already"), "{v}");

    let agent = s.wait_agent_status(name, "active");
    assert_eq!(agent["credential_kind"], "private_key_jwt");
    assert_eq!(agent["token_binding"], "dpop");
    assert_eq!(agent["keys"][0]["kid"], kid.as_str());
    assert_eq!(agent["keys"][0]["status"], "active");
    assert_eq!(agent["secret_version"], Value::Null, "nothing in the vault");
    let client_id = agent["client_id"].as_str().unwrap().to_string();
    let client = s
        .idp_clients()
        .into_iter()
        .find(|c| c["client_id"] == client_id.as_str())
        .expect("the IdP holds the client");
    assert_eq!(
        client["secret_ids"],
        json!([]),
        "a key client has no secret"
    );

    let token_url = s.url("/oauth2/v1/token");
    // Binding is required: an assertion alone gets no token.
    let (status, v) = assertion_token(
        &s,
        &client_id,
        &pair.client_assertion(&client_id, &token_url, now()),
        None,
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{v}"
    );
    // With the proof, a DPoP-bound token.
    let assertion = pair.client_assertion(&client_id, &token_url, now());
    let dpop = pair.dpop_proof("POST", &token_url, None, now());
    let (status, v) = assertion_token(&s, &client_id, &assertion, Some(&dpop));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "DPoP");
    let token = v["access_token"].as_str().unwrap().to_string();
    let claims = s.verify(&token).expect("the token verifies with the JWKS");
    assert_eq!(claims["cnf"]["jkt"], kid.as_str());
    assert_eq!(claims["client_id"], client_id.as_str());

    // The same assertion again, and a proof used twice: refused.
    let (status, v) = assertion_token(
        &s,
        &client_id,
        &assertion,
        Some(&pair.dpop_proof("POST", &token_url, None, now())),
    );
    assert_eq!(status, 401, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("used already"),
        "{v}"
    );
    let (status, v) = assertion_token(
        &s,
        &client_id,
        &pair.client_assertion(&client_id, &token_url, now()),
        Some(&dpop),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("used already"),
        "{v}"
    );
    // Another key cannot sign for the client.
    let (status, v) = assertion_token(
        &s,
        &client_id,
        &other.client_assertion(&client_id, &token_url, now()),
        Some(&other.dpop_proof("POST", &token_url, None, now())),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );

    // Introspection: with the key's proof the token is active; a copy without the proof, or
    // with another key's proof, is not, and says why.
    let introspect_url = s.url("/oauth2/v1/introspect");
    let held = introspect(
        &s,
        &token,
        Some(&pair.dpop_proof("POST", &introspect_url, Some(&token), now())),
    );
    assert_eq!(held["active"], true, "{held}");
    assert_eq!(held["cnf"]["jkt"], kid.as_str());
    let copied = introspect(&s, &token, None);
    assert_eq!(copied["active"], false, "{copied}");
    assert!(
        copied["reason"].as_str().unwrap().contains("DPoP-bound"),
        "{copied}"
    );
    let stolen = introspect(
        &s,
        &token,
        Some(&other.dpop_proof("POST", &introspect_url, Some(&token), now())),
    );
    assert_eq!(stolen["active"], false, "{stolen}");
    assert!(
        stolen["reason"].as_str().unwrap().contains("another key"),
        "{stolen}"
    );

    // The private key appears nowhere: not in the registry, the audit trail or the log.
    let everywhere = format!(
        "{}{}{}{}",
        Value::Array(s.agents()),
        Value::Array(s.audit()),
        Value::Array(s.idp_clients()),
        s.log()
    );
    for line in pem_body(&pair) {
        assert!(!everywhere.contains(&line), "the private key leaked");
    }
    assert!(!everywhere.contains("PRIVATE KEY"));
}

/// The CLI makes the key file (0600) and requests the agent from a manifest naming it: the
/// public key and a proof leave the machine, the key does not; the agent gets a token.
#[test]
fn the_cli_makes_a_key_and_requests_a_key_bound_agent() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = Server::start_with(keys_in_prod());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent-key.pem");
    let (out, stdout, stderr) =
        run(&mut s.cli(["agents", "new-key", "--out", key.to_str().unwrap()]));
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (out, _, stderr) = run(&mut s.cli(["agents", "new-key", "--out", key.to_str().unwrap()]));
    assert!(
        !out.status.success(),
        "an existing key file is never overwritten"
    );
    assert!(stderr.contains("must not exist"), "{stderr}");
    let pair = AgentKeyPair::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();

    let manifest = dir.path().join("agent.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"ledger-cli-agent-prod\"\nowner = \"{ALICE}\"\nteam = \"sre\"\nenvironment = \"prod\"\npurpose = \"reads the ledger\"\nscopes = [\"datadog:metrics:read\"]\ncredential = \"private_key_jwt\"\nkey = \"agent-key.pem\"\n"
        ),
    )
    .unwrap();
    let (out, _, stderr) =
        run(&mut s.cli_as(ALICE, ["agents", "request", manifest.to_str().unwrap()]));
    assert!(out.status.success(), "{stderr}");
    let agent = s.wait_agent_status("ledger-cli-agent-prod", "active");
    assert_eq!(agent["keys"][0]["kid"], pair.public().kid.as_str());
    let client_id = agent["client_id"].as_str().unwrap();
    let token_url = s.url("/oauth2/v1/token");
    let (status, v) = assertion_token(
        &s,
        client_id,
        &pair.client_assertion(client_id, &token_url, now()),
        Some(&pair.dpop_proof("POST", &token_url, None, now())),
    );
    assert_eq!(status, 200, "{v}");
    for line in pem_body(&pair) {
        assert!(
            !s.log().contains(&line),
            "the private key reached the server"
        );
    }
}

/// Onboards a key-bound prod agent with `pair` (Alice's, no approval needed); its client id.
fn onboard_keyed(s: &Server, name: &str, pair: &AgentKeyPair) -> String {
    let n = nonce(s, ALICE);
    s.request_ok(&keyed(
        name,
        pair.public_jwk(),
        &pair.key_proof(name, &n, now()),
    ));
    s.wait_agent_status(name, "active")["client_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// One token request as an agent makes it: a fresh assertion and DPoP proof from `pair`.
fn agent_token(
    http: &reqwest::blocking::Client,
    token_url: &str,
    client_id: &str,
    pair: &AgentKeyPair,
) -> (u16, Value) {
    let resp = http
        .post(token_url)
        .header("DPoP", pair.dpop_proof("POST", token_url, None, now()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            (
                "client_assertion",
                &pair.client_assertion(client_id, token_url, now()),
            ),
        ])
        .send()
        .expect("POST /oauth2/v1/token");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// A key rotation with an agent fetching tokens throughout: the new key is added beside the old
/// one, the agent switches when it likes, its first token with the new key verifies it, and the
/// old key is removed after the grace period. Not one token request fails.
#[test]
fn a_key_rotates_while_the_agent_keeps_getting_tokens() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let mut o = keys_in_prod();
    assert!(o.policy.contains("grace = \"24h\""));
    o.policy = o.policy.replace("grace = \"24h\"", "grace = \"2s\"");
    let s = Server::start_with(o);
    let name = "ledger-rotating-agent-prod";
    let old = Arc::new(AgentKeyPair::generate().unwrap());
    let client_id = onboard_keyed(&s, name, &old);
    let token_url = s.url("/oauth2/v1/token");

    // The agent: a token every few milliseconds with whichever key it holds now.
    let holds = Arc::new(Mutex::new(old.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let agent = {
        let (holds, stop, url, id) = (
            holds.clone(),
            stop.clone(),
            token_url.clone(),
            client_id.clone(),
        );
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            let mut ok: Vec<String> = Vec::new();
            let mut failed: Vec<String> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let pair = holds.lock().unwrap().clone();
                match agent_token(&http, &url, &id, &pair) {
                    (200, _) => ok.push(pair.public().kid.clone()),
                    (status, v) => failed.push(format!("{status} {v}")),
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            (ok, failed)
        })
    };

    // Someone who is not the owner or security may not rotate it; a proof by another key is
    // refused.
    let new = Arc::new(AgentKeyPair::generate().unwrap());
    let path = format!("/api/agents/{name}/keys");
    let n = nonce(&s, BOB);
    let (status, v) = s.post_as(
        BOB,
        &path,
        &json!({"public_jwk": new.public_jwk(), "key_proof": new.key_proof(name, &n, now())}),
    );
    assert_eq!(status, 403, "{v}");
    let n = nonce(&s, ALICE);
    let (status, v) = s.post_as(
        ALICE,
        &path,
        &json!({"public_jwk": new.public_jwk(), "key_proof": old.key_proof(name, &n, now())}),
    );
    assert_eq!(status, 422, "{v}");

    let n = nonce(&s, ALICE);
    let (status, started) = s.post_as(
        ALICE,
        &path,
        &json!({"public_jwk": new.public_jwk(), "key_proof": new.key_proof(name, &n, now())}),
    );
    assert_eq!(status, 202, "{started}");
    let workflow = started["workflow_id"].as_str().unwrap().to_string();
    s.wait_workflow_state(&workflow, "AwaitingUse");
    let both = s.agent(name);
    let active: Vec<&str> = both["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["status"] == "active")
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        active,
        [old.public().kid.as_str(), new.public().kid.as_str()]
    );
    // The old key keeps working until the agent switches; let it fetch a few more.
    std::thread::sleep(std::time::Duration::from_millis(300));
    *holds.lock().unwrap() = new.clone();
    s.wait_workflow_state(&workflow, "Done");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = agent.join().unwrap();

    assert!(
        failed.is_empty(),
        "token requests failed during the rotation: {failed:?}"
    );
    let with = |kid: &str| ok.iter().filter(|k| *k == kid).count();
    assert!(
        with(&old.public().kid) >= 5,
        "{} with the old key",
        with(&old.public().kid)
    );
    assert!(
        with(&new.public().kid) >= 5,
        "{} with the new key",
        with(&new.public().kid)
    );
    // The old key is gone: its assertions are refused; the registry says so.
    let (status, v) = agent_token(s.http(), &token_url, &client_id, &old);
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    let after = s.agent(name);
    let status_of = |kid: &str| {
        after["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .map(|k| k["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status_of(&old.public().kid).as_deref(), Some("removed"));
    assert_eq!(status_of(&new.public().kid).as_deref(), Some("active"));
}

/// The kill switch on a key-bound agent: its client is deactivated, so no assertion gets a
/// token, and introspection reports its bound tokens inactive at once.
#[test]
fn a_frozen_key_bound_agent_gets_no_token_and_its_tokens_introspect_inactive() {
    let s = Server::start_with(keys_in_prod());
    let name = "ledger-frozen-agent-prod";
    let pair = AgentKeyPair::generate().unwrap();
    let client_id = onboard_keyed(&s, name, &pair);
    let token_url = s.url("/oauth2/v1/token");
    let (status, v) = agent_token(s.http(), &token_url, &client_id, &pair);
    assert_eq!(status, 200, "{v}");
    let token = v["access_token"].as_str().unwrap().to_string();

    let (status, v) = s.post_as(
        ALICE,
        &format!("/api/agents/{name}/freeze"),
        &json!({"reason": "leaked key suspected"}),
    );
    assert_eq!(status, 202, "{v}");
    // The registry says frozen in the step that issues the deactivation; the containment is
    // done when the freeze waits for security's decision.
    let freeze = v["started"][0]["workflow_id"].as_str().unwrap().to_string();
    s.wait_workflow_state(&freeze, "AwaitingDecision");
    assert_eq!(s.agent(name)["status"], "frozen");
    let (status, v) = agent_token(s.http(), &token_url, &client_id, &pair);
    assert_eq!(status, 401, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("deactivated"),
        "{v}"
    );
    let introspect_url = s.url("/oauth2/v1/introspect");
    let answer = introspect(
        &s,
        &token,
        Some(&pair.dpop_proof("POST", &introspect_url, Some(&token), now())),
    );
    assert_eq!(answer["active"], false, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("deactivated"),
        "{answer}"
    );
}

/// Decommissioning a key-bound agent deletes its client (and with it the key), vaults and
/// deletes nothing, and the receipt says from when no token of the agent is valid.
#[test]
fn a_decommissioned_key_bound_agent_has_no_key_left_and_a_receipt() {
    let s = Server::start_with(keys_in_prod());
    let name = "ledger-retired-agent-prod";
    let pair = AgentKeyPair::generate().unwrap();
    let client_id = onboard_keyed(&s, name, &pair);
    let gone = s.decommission_approved(name, ALICE, SAM);
    let receipt = &gone["decommission"];
    assert!(receipt["no_token_valid_after"].is_string(), "{receipt}");
    let failed: Vec<&Value> = receipt["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["done"] != true)
        .collect();
    assert!(failed.is_empty(), "every step done: {failed:?}");
    assert!(
        !s.idp_clients()
            .iter()
            .any(|c| c["client_id"] == client_id.as_str()),
        "the client and its key are gone"
    );
    let token_url = s.url("/oauth2/v1/token");
    let (status, v) = agent_token(s.http(), &token_url, &client_id, &pair);
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
}

/// A key at its maximum age is removed by the sweep, never left valid: here the policy gives
/// keys no time at all, so the first sweep ends the key it finds and the agent gets no token.
#[test]
fn the_sweep_removes_a_key_past_its_maximum_age() {
    let mut o = keys_in_prod();
    o.policy
        .push_str("key_max_age_days = 0\nkey_remind_days = 0\n");
    let s = Server::start_with(o);
    let name = "ledger-aging-agent-prod";
    let pair = AgentKeyPair::generate().unwrap();
    let client_id = onboard_keyed(&s, name, &pair);
    let (status, report) = s.post("/api/sweep", &json!({}));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["key_expiries_started"], 1, "{report}");
    let gone = s.wait("the expired key removed", SETTLE, || {
        let a = s.agent(name);
        (a["keys"][0]["status"] == "removed").then_some(a)
    });
    assert_eq!(gone["keys"][0]["kid"], pair.public().kid.as_str());
    let (status, v) = agent_token(s.http(), &s.url("/oauth2/v1/token"), &client_id, &pair);
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    // A second sweep starts nothing new for that key.
    let (_, again) = s.post("/api/sweep", &json!({}));
    assert_eq!(again["key_expiries_started"], 0, "{again}");
}

/// Where the IdP cannot say which key signed a grant, the owner confirms the switch: only the
/// owner or security may, only for the key a rotation waits for, and the rotation then retires
/// the old key after the grace period.
#[test]
fn the_owner_confirms_the_new_key_in_use_and_the_old_key_retires() {
    let mut o = keys_in_prod();
    o.policy = o.policy.replace("grace = \"24h\"", "grace = \"1s\"");
    let s = Server::start_with(o);
    let name = "ledger-confirmed-agent-prod";
    let old = AgentKeyPair::generate().unwrap();
    let client_id = onboard_keyed(&s, name, &old);
    let new = AgentKeyPair::generate().unwrap();
    let n = nonce(&s, ALICE);
    let (status, started) = s.post_as(
        ALICE,
        &format!("/api/agents/{name}/keys"),
        &json!({"public_jwk": new.public_jwk(), "key_proof": new.key_proof(name, &n, now())}),
    );
    assert_eq!(status, 202, "{started}");
    let workflow = started["workflow_id"].as_str().unwrap();
    s.wait_workflow_state(workflow, "AwaitingUse");
    let confirm = |person: &str, kid: &str| {
        s.post_as(
            person,
            &format!("/api/agents/{name}/keys/{kid}/in-use"),
            &json!({}),
        )
    };
    assert_eq!(confirm(BOB, &new.public().kid).0, 403, "not Bob's agent");
    let (status, v) = confirm(ALICE, &old.public().kid);
    assert_eq!(status, 409, "the old key is not the one awaited: {v}");
    let (status, v) = confirm(ALICE, &new.public().kid);
    assert_eq!(status, 202, "{v}");
    s.wait_workflow_state(workflow, "Done");
    let token_url = s.url("/oauth2/v1/token");
    assert_eq!(agent_token(s.http(), &token_url, &client_id, &old).0, 401);
    assert_eq!(agent_token(s.http(), &token_url, &client_id, &new).0, 200);
    assert!(
        s.audit().iter().any(|r| r
            .to_string()
            .contains("alice@example.com confirmed the agent uses key")),
        "the confirmation is attributed"
    );
}

/// For an agent that cannot keep a key (`key_custody = "steward"`): Steward generates the key
/// pair, registers only the public key, keeps the private key in the vault and verifies it with
/// a real token; the owner hands it out with `steward agents credentials` (audited, the file
/// mode 0600); it rotates like a secret (the sweep or `steward agents rotate`), the old key
/// keeps working through the grace period and is removed after it; a policy can forbid such
/// keys per environment; decommission deletes the client and schedules the vaulted key's
/// deletion. The private key shows nowhere but in the hand-out.
#[test]
fn a_steward_held_key_is_vaulted_handed_out_and_rotated_like_a_secret() {
    let mut o = keys_in_prod();
    o.policy = o.policy.replace("grace = \"24h\"", "grace = \"1s\"");
    o.policy.push_str("steward_keys = { staging = false }\n");
    let s = Server::start_with(o);
    let name = "ledger-keyless-agent-prod";
    let mut body = agent_request(name, "prod", ALICE, &["datadog:metrics:read"]);
    body["credential"] = json!("private_key_jwt");
    body["key_custody"] = json!("steward");
    s.request_ok(&body);
    let agent = s.wait_agent_status(name, "active");
    assert_eq!(agent["key_custody"], "steward", "{agent}");
    assert!(agent["keys"].is_null(), "no agent-held key: {agent}");
    let first_version = agent["secret_version"]
        .as_str()
        .expect("vaulted")
        .to_string();
    let client_id = agent["client_id"].as_str().unwrap().to_string();

    // The owner hands it out; the file is the agent's key and is made 0600.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("agent.key");
    let (out, stdout, stderr) = run(&mut s.cli_as(
        ALICE,
        [
            "agents",
            "credentials",
            name,
            "--key-out",
            key_file.to_str().unwrap(),
        ],
    ));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("client_id={client_id}")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("PRIVATE KEY"),
        "the key went to the file: {stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let old = AgentKeyPair::from_pem(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    assert!(
        stdout.contains(&format!("kid={}", old.public().kid)),
        "{stdout}"
    );
    let token_url = s.url("/oauth2/v1/token");
    let (status, v) = agent_token(s.http(), &token_url, &client_id, &old);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "DPoP", "{v}");
    assert!(
        s.audit()
            .iter()
            .any(|r| r.to_string().contains("private key of agent")),
        "the hand-out is audited"
    );

    // Rotated like a secret: a new key, verified, current; the old one removed after the grace.
    let (status, started) = s.post_as(ALICE, &format!("/api/agents/{name}/rotate"), &json!({}));
    assert_eq!(status, 202, "{started}");
    let rotation = started["workflow_id"].as_str().unwrap().to_string();
    s.wait_workflow_state(&rotation, "Done");
    let rotated = s.agent(name);
    assert_ne!(
        rotated["secret_version"],
        first_version.as_str(),
        "{rotated}"
    );
    assert_eq!(
        agent_token(s.http(), &token_url, &client_id, &old).0,
        401,
        "the old key is removed"
    );
    let next_file = dir.path().join("next.key");
    let (out, _, stderr) = run(&mut s.cli_as(
        ALICE,
        [
            "agents",
            "credentials",
            name,
            "--key-out",
            next_file.to_str().unwrap(),
        ],
    ));
    assert!(out.status.success(), "{stderr}");
    let new = AgentKeyPair::from_pem(&std::fs::read_to_string(&next_file).unwrap()).unwrap();
    assert_ne!(new.public().kid, old.public().kid);
    assert_eq!(agent_token(s.http(), &token_url, &client_id, &new).0, 200);
    // Steward-held keys rotate as secrets do, never by a key someone brings.
    let n = nonce(&s, ALICE);
    let other = AgentKeyPair::generate().unwrap();
    let (status, v) = s.post_as(
        ALICE,
        &format!("/api/agents/{name}/keys"),
        &json!({"public_jwk": other.public_jwk(), "key_proof": other.key_proof(name, &n, now())}),
    );
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("rotates like a secret"), "{v}");

    // Policy: not where `steward_keys` forbids them.
    let mut staging = agent_request(
        "ledger-keyless-agent-staging",
        "staging",
        ALICE,
        &["datadog:metrics:read"],
    );
    staging["credential"] = json!("private_key_jwt");
    staging["key_custody"] = json!("steward");
    let (status, v) = s.request_agent(&staging);
    assert_eq!(status, 422, "{v}");
    assert!(
        v.to_string()
            .contains("Steward-held keys are not allowed in environment `staging`"),
        "{v}"
    );

    // Nothing private anywhere but in the hand-outs: not the registry, the audit, the log.
    let everything = format!(
        "{}{}{}",
        serde_json::to_string(&s.agents()).unwrap(),
        serde_json::to_string(&s.audit()).unwrap(),
        s.log()
    );
    for pair in [&old, &new] {
        for line in pem_body(pair) {
            assert!(!everything.contains(&line), "a private key leaked");
        }
    }

    // Decommissioned: the client and its key are gone, the vaulted key is scheduled for
    // deletion.
    let gone = s.decommission_approved(name, ALICE, SAM);
    let steps = gone["decommission"]["steps"].to_string();
    assert!(steps.contains("vault"), "{steps}");
    assert_eq!(agent_token(s.http(), &token_url, &client_id, &new).0, 401);
}
