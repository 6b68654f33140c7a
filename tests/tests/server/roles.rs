//! The role table over the whole route table: every admin operation, called by each principal
//! the table does not allow (automation, an unrelated person, the owner, the owner's manager, a
//! security approver, an operator), is refused with 403, audited with that principal, and
//! changes nothing. Reads the table allows answer them all. docs/api.md shows the same table.

use crate::support::*;
use serde_json::{Value, json};
use shared::http::roles::{Role, markdown_table, who_may};
use shared::http::routes::{Access, Op, ROUTES, Route};

const NAME: &str = "erp-sync-agent-dev";
const MARIA: &str = "maria@example.com";
const OLU: &str = "olu.ops@example.com";

/// Who calls, and the roles they hold for Alice's agent (and for anything else).
struct Principal {
    who: &'static str,
    about_the_agent: Vec<Role>,
    otherwise: Vec<Role>,
}

fn principals() -> Vec<Principal> {
    let person = |who, extra: &[Role], for_agent: &[Role]| Principal {
        who,
        about_the_agent: [&[Role::Person][..], extra, for_agent].concat(),
        otherwise: [&[Role::Person][..], extra].concat(),
    };
    vec![
        Principal {
            who: "automation",
            about_the_agent: vec![Role::Automation],
            otherwise: vec![Role::Automation],
        },
        person(BOB, &[], &[]),
        person(ALICE, &[], &[Role::Owner]),
        person(MARIA, &[], &[Role::Manager]),
        person(SAM, &[Role::SecurityApprover], &[]),
        person(OLU, &[Role::Operator], &[]),
    ]
}

/// A well-formed call of each operation, about Alice's agent where it takes one: only the role
/// table can refuse it.
fn sample(op: Op, workflow: &str, approval: &str) -> (Vec<String>, Value) {
    let reason = json!({"reason": "role table test"});
    let (args, body): (Vec<&str>, Value) = match op {
        Op::ShowAgent | Op::AgentHistory | Op::AgentGrants | Op::AgentCertificate => {
            (vec![NAME], Value::Null)
        }
        Op::ChangeScopes => (
            vec![NAME],
            json!({"add": ["erp:orders:read"], "reason": "role table test"}),
        ),
        Op::ReassignOwner => (vec![NAME], json!({"owner": BOB})),
        Op::Rotate => (vec![NAME], json!({})),
        // A key the caller never proved: only the role table, then the proof, can refuse it.
        Op::RotateKey => (
            vec![NAME],
            json!({"public_jwk": {"kty": "EC"}, "key_proof": "not a proof"}),
        ),
        Op::ConfirmKey => (vec![NAME, "no-such-kid"], Value::Null),
        Op::ConfirmCertificate => (vec![NAME, "no-such-certificate"], Value::Null),
        // A CSR that is none: only the role table, then the CSR check, can refuse it.
        Op::RotateCertificate => (vec![NAME], json!({"csr": "not a CSR"})),
        Op::Decommission | Op::Freeze | Op::Unfreeze => (vec![NAME], reason),
        Op::Renew => (
            vec![NAME],
            json!({"until": "2099-01-01", "reason": "role table test"}),
        ),
        Op::RequestAgent => (
            vec![],
            agent_request("erp-extra-agent-dev", "dev", ALICE, &["erp:orders:read"]),
        ),
        Op::ClaimShadowAgent => (
            vec!["no-such-client"],
            json!({"owner": ALICE, "team": "sre", "environment": "dev", "purpose": "test"}),
        ),
        Op::ReleaseShadowAgent => (vec!["no-such-client"], reason),
        Op::LaunchCampaign => (
            vec![],
            json!({"id": "roles-q1", "scope": {"environments": ["dev"], "teams": [], "risk": []}}),
        ),
        Op::CampaignProgress | Op::CampaignReport => (vec!["roles-q1"], Value::Null),
        Op::AnswerReview => (vec!["no-such-item"], json!({"decision": "keep"})),
        Op::ShowWorkflow => (vec![workflow], Value::Null),
        Op::CancelWorkflow => (vec![workflow], reason),
        Op::Approve => (vec![approval], json!({})),
        Op::Deny => (vec![approval], reason),
        Op::CreateToken => (vec![], json!({"name": "ci"})),
        Op::RevokeToken => (vec!["pat_0000000000000000"], json!({})),
        _ => (vec![], json!({})),
    };
    (args.into_iter().map(str::to_string).collect(), body)
}

/// What a refused call must leave as it was.
fn snapshot(s: &Server) -> Value {
    let audit: Vec<Value> = s
        .audit()
        .into_iter()
        .filter(|r| {
            !matches!(
                r["unmapped"]["steward_event"].as_str(),
                Some("api_call" | "call_refused")
            )
        })
        .collect();
    json!({
        "agents": s.agents(),
        "approvals": s.approvals(true),
        "campaigns": s.get_ok("/api/campaigns"),
        "audit": audit.len(),
    })
}

fn call(s: &Server, p: &Principal, route: &Route, args: &[String], body: &Value) -> (u16, Value) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let path = route.url(&args);
    let token = match p.who {
        "automation" => s.token.clone(),
        who => s.person_token(who),
    };
    let req = match route.verb.as_str() {
        "GET" => s.http().get(s.url(&path)),
        _ => s.http().post(s.url(&path)).json(body),
    };
    s.send(req.bearer_auth(token))
}

#[test]
fn every_operation_refuses_every_principal_the_role_table_does_not_allow() {
    let s = Server::start();
    // Alice's agent (non-sensitive: active without an approval), and a request of hers waiting
    // for security.
    s.request_ok(&agent_request(NAME, "dev", ALICE, &["erp:orders:read"]));
    s.wait_agent_status(NAME, "active");
    let waiting = s.request_ok(&agent_request(
        "datadog-remediation-agent-prod",
        "prod",
        ALICE,
        &["datadog:metrics:read", "datadog:monitors:write"],
    ));
    let workflow = waiting["workflow_id"].as_str().unwrap().to_string();
    let approval = s.pending_approval(&workflow)["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let onboarding = s.get_ok(&format!("/api/agents/{NAME}"))["workflows"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.wait_idle();

    let mut refused = 0;
    for route in ROUTES.iter().filter(|r| r.access == Access::Admin) {
        let allowed = who_may(route.op);
        let about_the_agent = route.path.contains("{agent}") || route.op == Op::CancelWorkflow;
        let (args, body) = sample(route.op, &onboarding, &approval);
        for p in principals() {
            let roles = if about_the_agent {
                &p.about_the_agent
            } else {
                &p.otherwise
            };
            let may = roles.iter().any(|r| allowed.contains(r));
            if may {
                if route.verb.as_str() == "GET" {
                    let (status, v) = call(&s, &p, route, &args, &body);
                    assert_ne!(status, 403, "{} refused {}: {v}", route.name(), p.who);
                }
                continue;
            }
            let before = snapshot(&s);
            let (status, v) = call(&s, &p, route, &args, &body);
            assert_eq!(status, 403, "{} by {}: {v}", route.name(), p.who);
            let why = v["error"].as_str().unwrap_or_default();
            assert!(
                why.contains("may be done only by") && why.contains(allowed[0].describe()),
                "{} by {}: the refusal says who may: {why}",
                route.name(),
                p.who
            );
            s.wait_idle();
            assert_eq!(
                snapshot(&s),
                before,
                "{} by {} changed something",
                route.name(),
                p.who
            );
            let audited = s.audit().into_iter().rev().find(|r| {
                r["unmapped"]["steward_event"] == "call_refused"
                    && r["api"]["operation"] == route.name()
            });
            let audited =
                audited.unwrap_or_else(|| panic!("{} by {} not audited", route.name(), p.who));
            let id = if p.who == "automation" {
                "admin-token holder"
            } else {
                p.who
            };
            assert_eq!(audited["unmapped"]["principal"]["id"], id, "{audited}");
            refused += 1;
        }
    }
    // Every principal but one is refused somewhere; the count catches a table emptied by mistake.
    assert!(refused >= 50, "only {refused} refusals checked");

    // Decisions are a person's: automation is refused whatever it names.
    let (status, _) = s.post(&format!("/api/approvals/{approval}/approve"), &json!({}));
    assert_eq!(status, 403);
    assert_eq!(s.pending_approval(&workflow)["status"], "pending");
}

#[test]
fn the_docs_show_the_role_table_the_server_checks() {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md"),
    )
    .unwrap();
    let table = markdown_table();
    assert!(
        docs.contains(&table),
        "docs/api.md must contain the role table exactly as the code has it:\n\n{table}"
    );
}
