//! The supply-chain story end to end, on the real `steward serve` with a fake Slack: an agent
//! that normally reads ERP data asks the token endpoint for a banking scope. It is frozen before
//! any grant (client deactivated, tokens revoked), security is asked in Slack with the evidence,
//! and the decision is applied: two approvers unfreeze one agent with exactly its previous
//! grants; one approver decommissions the other.

use crate::fake_slack::{BOT_TOKEN, Click, FakeSlack, all_text, buttons};
use crate::support::*;
use serde_json::Value;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SECURITY_CHANNEL: &str = "C0SECURITY";
const ORDERS_READ: &str = "erp:orders:read";
const INVENTORY_READ: &str = "erp:inventory:read";
const PAYMENTS_WRITE: &str = "banking:payments:write";

fn start() -> (Server, FakeSlack) {
    let slack = FakeSlack::start(&[
        (ALICE, "U0ALICE"),
        (BOB, "U0BOB"),
        (SAM, "U0SAM"),
        (PRIYA, "U0PRIYA"),
    ]);
    let opts = Options::default()
        .env("STEWARD_SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("STEWARD_SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env("STEWARD_SLACK_API_URL", &slack.api_url())
        .env("STEWARD_SLACK_SECURITY_CHANNEL", SECURITY_CHANNEL);
    (Server::start_with(opts), slack)
}

/// Onboards an ERP reader (no sensitive scope: provisioned at once); returns (agent, client id,
/// secret).
fn erp_reader(s: &Server, name: &str) -> (Value, String, String) {
    s.request_ok(&agent_request(
        name,
        "prod",
        ALICE,
        &[ORDERS_READ, INVENTORY_READ],
    ));
    let agent = s.wait_agent_status(name, "active");
    let client = agent["client_id"].as_str().unwrap().to_string();
    let (_, secret) = s.vault_secret(agent["id"].as_str().unwrap());
    (agent, client, secret)
}

fn click(s: &Server, slack: &FakeSlack, user: &str, action: &str, value: &str, n: u32) {
    let (status, v) = Click::approval(user, action, value, n, None).send(s, slack, SIGNING_SECRET);
    assert_eq!(status, 200, "{v}");
}

/// What Steward answered the clicker on response_url `n`.
fn answer(slack: &FakeSlack, n: u32) -> String {
    wait_until("the ephemeral answer", SETTLE, || {
        slack
            .calls_of("respond")
            .into_iter()
            .find(|c| c.body["n"] == n)
            .map(|c| {
                c.body["body"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
    })
}

/// The freeze workflow of `agent` (there is exactly one).
fn freeze_of(s: &Server, agent_id: &str) -> Value {
    let history = s.get_ok(&format!("/api/agents/{agent_id}/history"));
    let ids: Vec<String> = history
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "freeze")
        .filter_map(|e| e["workflow_id"].as_str().map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 1, "one freeze workflow: {history}");
    s.workflow(&ids[0])["workflow"].clone()
}

/// The decision message in the security channel for `agent_name`: (button value, body).
fn decision_message(slack: &FakeSlack, agent_name: &str) -> (String, Value) {
    wait_until(
        "the freeze decision in the security channel",
        SETTLE,
        || {
            slack
                .approval_posts()
                .into_iter()
                .find(|(channel, _, body)| {
                    channel == SECURITY_CHANNEL
                        && all_text(body).contains(agent_name)
                        && all_text(body).contains("Unfreeze")
                })
                .map(|(_, _, body)| {
                    let b = buttons(&body).unwrap();
                    (b[0]["value"].as_str().unwrap().to_string(), body)
                })
        },
    )
}

/// Every scope a token granted to `agent`, from its grant evidence.
fn granted_scopes(s: &Server, agent: &str) -> Vec<String> {
    let grants = s.get_ok(&format!("/api/agents/{agent}/grants"));
    grants
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["granted"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[test]
fn supply_chain_agent_asking_for_a_banking_scope_is_frozen_before_any_grant() {
    let (s, slack) = start();
    let (agent, client, secret) = erp_reader(&s, "erp-reader-agent-prod");
    let agent_id = agent["id"].as_str().unwrap();

    // Normal traffic: ERP reads, no finding.
    for _ in 0..5 {
        s.token_ok(&client, &secret, Some(ORDERS_READ));
    }
    let (claims, _) = s.token_ok(&client, &secret, Some(INVENTORY_READ));
    assert_eq!(claims["scope"], INVENTORY_READ);
    s.wait_idle();
    assert_eq!(s.agent("erp-reader-agent-prod")["status"], "active");

    // The compromised dependency asks for a banking scope: refused by the IdP, and frozen.
    let (status, refused, _) = s.token(&client, &secret, Some(PAYMENTS_WRITE));
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"], "invalid_scope");
    let frozen = s.wait_agent_status("erp-reader-agent-prod", "frozen");
    assert!(
        frozen["flags"].to_string().contains("scope-outside-grant"),
        "{frozen}"
    );

    // Contained: the client is deactivated, so even its approved scopes are refused now. The
    // frozen status is committed with the deactivation queued, which runs right after it.
    s.wait("the client to be deactivated", SETTLE, || {
        s.idp_clients()
            .into_iter()
            .find(|c| c["client_id"] == client.as_str())
            .filter(|c| c["active"] == false)
    });
    let (status, v, _) = s.token(&client, &secret, Some(ORDERS_READ));
    assert_eq!(status, 401, "{v}");
    // No token ever carried the banking scope.
    let granted = granted_scopes(&s, "erp-reader-agent-prod");
    assert!(
        !s.audit()
            .iter()
            .any(|r| r["unmapped"]["event_type"] == "token.grant"),
        "grants are evidence, kept off the audit chain"
    );
    assert!(granted.iter().any(|g| g == ORDERS_READ), "{granted:?}");
    assert!(!granted.iter().any(|g| g == PAYMENTS_WRITE), "{granted:?}");

    // The audit trail: the finding (CRITICAL), the containment with its time, no approval first.
    let audit = s.audit();
    let steps: Vec<&str> = audit
        .iter()
        .filter(|r| r["unmapped"]["agent_id"] == agent_id)
        .filter_map(|r| r["unmapped"]["steward_event"].as_str())
        .collect();
    let detected = steps.iter().position(|k| *k == "anomaly_detected").unwrap();
    let frozen_at = steps.iter().position(|k| *k == "agent_frozen").unwrap();
    let asked = steps
        .iter()
        .rposition(|k| *k == "approval_requested")
        .unwrap();
    assert!(detected < frozen_at && frozen_at < asked, "{steps:?}");
    let contained = messages(&audit)
        .into_iter()
        .find(|m| m.contains("contained:"))
        .expect("the containment is audited");
    assert!(
        contained.contains(" ms after the signal was accepted"),
        "{contained}"
    );

    // Security is asked in Slack with the evidence; the owner hears too.
    let (value, body) = decision_message(&slack, "erp-reader-agent-prod");
    let text = all_text(&body);
    assert!(text.contains(PAYMENTS_WRITE), "{text}");
    assert!(text.contains("CRITICAL"), "{text}");
    assert!(text.contains("Two-person rule"), "{text}");
    let labels: Vec<String> = buttons(&body)
        .unwrap()
        .iter()
        .map(|b| b["text"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(labels, ["Unfreeze", "Decommission"]);
    assert!(
        slack
            .approval_posts()
            .iter()
            .any(|(c, _, b)| c != SECURITY_CHANNEL && all_text(b).contains("erp-reader-agent-prod")),
        "the owner gets the evidence too"
    );

    // The owner cannot unfreeze; after a CRITICAL finding one approver is not enough.
    click(&s, &slack, "U0ALICE", "approve", &value, 1);
    assert!(
        answer(&slack, 1).contains("not an allowed approver"),
        "{}",
        answer(&slack, 1)
    );
    click(&s, &slack, "U0SAM", "approve", &value, 2);
    wait_until("the first vote", SETTLE, || {
        let w = freeze_of(&s, agent_id);
        (w["state"]["approval"]["votes"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
    assert_eq!(s.agent("erp-reader-agent-prod")["status"], "frozen");
    click(&s, &slack, "U0PRIYA", "approve", &value, 3);

    // Unfrozen with exactly the previous grants.
    let back = s.wait_agent_status("erp-reader-agent-prod", "active");
    assert_eq!(strings(&back["scopes"]), [ORDERS_READ, INVENTORY_READ]);
    assert!(
        !back["flags"].to_string().contains("\"flag\":\"frozen\""),
        "{back}"
    );
    let idp = s
        .idp_clients()
        .into_iter()
        .find(|c| c["client_id"] == client.as_str())
        .unwrap();
    assert_eq!(idp["active"], true);
    assert_eq!(strings(&idp["scopes"]), [ORDERS_READ, INVENTORY_READ]);
    s.token_ok(&client, &secret, Some(ORDERS_READ));
    assert_eq!(freeze_of(&s, agent_id)["state_name"], "Unfrozen");
}

#[test]
fn a_frozen_agent_can_be_decommissioned_by_one_security_approver() {
    let (s, slack) = start();
    let (agent, client, secret) = erp_reader(&s, "erp-sync-agent-prod");
    s.token_ok(&client, &secret, Some(ORDERS_READ));
    let (status, _, _) = s.token(&client, &secret, Some(PAYMENTS_WRITE));
    assert_eq!(status, 400);
    s.wait_agent_status("erp-sync-agent-prod", "frozen");
    let (value, _) = decision_message(&slack, "erp-sync-agent-prod");
    click(&s, &slack, "U0SAM", "deny", &value, 1);
    let gone = s.wait_agent_status("erp-sync-agent-prod", "decommissioned");
    assert!(
        gone["decommission"]["reason"]
            .as_str()
            .unwrap()
            .contains("decommission decided by sam.security@example.com"),
        "{gone}"
    );
    assert!(
        !s.idp_clients()
            .iter()
            .any(|c| c["client_id"] == client.as_str()),
        "the client is deleted"
    );
    assert_eq!(
        freeze_of(&s, agent["id"].as_str().unwrap())["state_name"],
        "Decommissioning"
    );
    // A wrong secret naming the banking scope proves nothing and freezes nothing.
    let (other, other_client, _) = erp_reader(&s, "erp-audit-agent-prod");
    let (status, _, _) = s.token(&other_client, "not-the-secret", Some(PAYMENTS_WRITE));
    assert_eq!(status, 401);
    s.wait_idle();
    assert_eq!(
        s.agent("erp-audit-agent-prod")["status"],
        "active",
        "{other}"
    );
}

/// A freeze reason is text a person typed: logged as an escaped field, so a newline in it
/// cannot forge a line of the server's log.
#[test]
fn a_freeze_reason_cannot_forge_a_log_line() {
    let s = Server::start();
    s.active_dev_agent("logline-agent-dev");
    let forged = "FORGED level=ERROR the admin token was rotated";
    let (status, body) = s.post_as(
        SAM,
        "/api/agents/logline-agent-dev/freeze",
        &serde_json::json!({"reason": format!("looks odd\n{forged}")}),
    );
    assert_eq!(status, 202, "{body}");
    s.wait_agent_status("logline-agent-dev", "frozen");
    let log = s.log();
    assert!(log.contains("FORGED"), "the reason is logged:\n{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a line of the log was forged:\n{log}"
    );
}

/// `[credentials] binding` comes to require DPoP-bound tokens in dev, but a secret agent made
/// before still takes bearer tokens: each such grant is an `unbound-token` finding (HIGH,
/// alert: no freeze). In prod, which requires no binding, the same grant is none.
#[test]
fn a_bearer_token_where_the_policy_requires_binding_is_an_unbound_token_finding() {
    let opts = Options::default();
    assert!(
        !opts.policy.contains("\n[credentials]"),
        "the example sets none"
    );
    let mut s = Server::start_with(opts.clone());
    // Onboarded while dev allowed bearer tokens; then the policy starts requiring DPoP there
    // (a new secret agent in dev would now be refused: it has no key to sign proofs with).
    let dev = s.active_dev_agent("bearer-reader-agent-dev");
    assert_eq!(dev["token_binding"], "none", "{dev}");
    s.kill();
    std::fs::write(
        &s.policy_path,
        format!(
            "{}\n[credentials]\nbinding = {{ dev = \"dpop\" }}\n",
            opts.policy
        ),
    )
    .unwrap();
    s.spawn(&opts);
    let client = dev["client_id"].as_str().unwrap();
    let (_, secret) = s.vault_secret(dev["id"].as_str().unwrap());
    let (claims, _) = s.token_ok(client, &secret, None);
    assert!(claims.get("cnf").is_none(), "a bearer token: {claims}");
    let flagged = s.wait("the unbound-token finding", SETTLE, || {
        let a = s.agent("bearer-reader-agent-dev");
        a["flags"]
            .to_string()
            .contains("unbound-token")
            .then_some(a)
    });
    assert_eq!(
        flagged["status"], "active",
        "an alert, not a freeze: {flagged}"
    );
    let flag = flagged["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "unbound-token")
        .unwrap_or_else(|| panic!("{flagged}"));
    assert_eq!(flag["severity"], "high", "{flag}");
    assert!(
        flag["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("bearer token"),
        "{flag}"
    );

    // Prod requires no binding: its bearer tokens are no finding.
    let (prod, prod_client, prod_secret) = erp_reader(&s, "erp-bearer-agent-prod");
    s.token_ok(&prod_client, &prod_secret, Some(ORDERS_READ));
    s.wait_idle();
    let prod = s.agent(prod["name"].as_str().unwrap());
    assert!(
        !prod["flags"].to_string().contains("unbound-token"),
        "{prod}"
    );
}
