//! infra/template.yaml's IAM rules, which no linter checks on SAM templates: no
//! wildcard actions anywhere, and `Resource: "*"` only for actions that support nothing
//! narrower (the allow-list below), each such line explained by a comment right above it.
//! The same check must fail on deliberately broken copies.

use serde_yaml_ng::Value;

const TEMPLATE: &str = include_str!("../../infra/template.yaml");

/// Actions AWS documents as supporting no resource-level permissions.
const STAR_RESOURCE_ACTIONS: &[&str] = &["xray:PutTraceSegments", "xray:PutTelemetryRecords"];

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        _ => vec![],
    }
}

/// Every IAM statement in the document: any mapping with `Effect` and `Action`.
fn statements(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Mapping(m) => {
            if m.contains_key("Effect") && m.contains_key("Action") {
                out.push(v.clone());
            }
            for (_, child) in m {
                statements(child, out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| statements(i, out)),
        Value::Tagged(t) => statements(&t.value, out),
        _ => {}
    }
}

/// What is wrong with the template's IAM, one line per problem.
fn iam_violations(text: &str) -> Vec<String> {
    let doc: Value = serde_yaml_ng::from_str(text).expect("the template parses as YAML");
    let mut found = Vec::new();
    statements(&doc, &mut found);
    assert!(found.len() > 10, "the template's statements were found");
    let mut problems = Vec::new();
    for s in &found {
        let actions = strings(&s["Action"]);
        let sid = s["Sid"].as_str().unwrap_or("(no Sid)").to_string();
        for a in &actions {
            if a.contains('*') {
                problems.push(format!("{sid}: wildcard action {a}"));
            }
        }
        if strings(&s["Resource"]).iter().any(|r| r == "*") {
            let narrowable: Vec<&String> = actions
                .iter()
                .filter(|a| !STAR_RESOURCE_ACTIONS.contains(&a.as_str()))
                .collect();
            if !narrowable.is_empty() {
                problems.push(format!(
                    "{sid}: Resource \"*\" for {narrowable:?}, which support narrower resources"
                ));
            }
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let star = t.starts_with("Resource:")
            && matches!(
                t.trim_start_matches("Resource:").trim(),
                "\"*\"" | "'*'" | "*"
            );
        if star {
            let commented = i > 0 && lines[i - 1].trim().starts_with('#');
            if !commented {
                problems.push(format!(
                    "line {}: Resource \"*\" without a comment saying why",
                    i + 1
                ));
            }
        }
    }
    problems
}

#[test]
fn template_has_no_iam_wildcards() {
    assert_eq!(iam_violations(TEMPLATE), Vec::<String>::new());
}

#[test]
fn a_wildcard_action_is_caught() {
    let broken = TEMPLATE.replacen("dynamodb:GetItem", "dynamodb:*", 1);
    let v = iam_violations(&broken);
    assert!(
        v.iter().any(|p| p.contains("wildcard action dynamodb:*")),
        "{v:?}"
    );
    let broken = TEMPLATE.replacen("Action: sqs:GetQueueUrl", "Action: \"*\"", 1);
    let v = iam_violations(&broken);
    assert!(v.iter().any(|p| p.contains("wildcard action *")), "{v:?}");
}

#[test]
fn a_wildcard_resource_is_caught() {
    let broken = TEMPLATE.replacen("Resource: !GetAtt Table.Arn", "Resource: \"*\"", 1);
    let v = iam_violations(&broken);
    assert!(
        v.iter().any(|p| p.contains("dynamodb:GetItem")),
        "a table action on *: {v:?}"
    );
    assert!(
        v.iter().any(|p| p.contains("without a comment")),
        "and no comment explains it: {v:?}"
    );
}

#[test]
fn an_unexplained_star_resource_is_caught() {
    let mut removed = false;
    let broken: String = TEMPLATE
        .lines()
        .filter(|l| {
            let drop = !removed && l.trim().starts_with("# X-Ray's");
            removed |= drop;
            !drop
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(removed);
    let v = iam_violations(&broken);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("without a comment"));
}

/// Each function has its own role, and no role is shared.
#[test]
fn one_role_per_function() {
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    let resources = doc["Resources"].as_mapping().unwrap();
    let mut roles = Vec::new();
    for (name, r) in resources {
        if r["Type"] == "AWS::Serverless::Function" {
            let role = match &r["Properties"]["Role"] {
                Value::Tagged(t) => t.value.as_str().unwrap_or_default().to_string(),
                other => panic!("{name:?} has no explicit role: {other:?}"),
            };
            roles.push(role);
        }
    }
    assert_eq!(roles.len(), 6);
    let mut unique = roles.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), roles.len(), "{roles:?}");
}

/// The Slack app manifest asks for exactly the scopes Steward's calls need and turns
/// interactivity on at the `/slack/interactions` route.
#[test]
fn slack_manifest_has_the_scopes_and_interactivity() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/slack/manifest.yaml"),
    )
    .unwrap();
    let m: serde_json::Value = serde_yaml_ng::from_str(&text).expect("manifest is YAML");
    let scopes: Vec<&str> = m["oauth_config"]["scopes"]["bot"]
        .as_array()
        .expect("bot scopes")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for needed in ["chat:write", "users:read", "users:read.email"] {
        assert!(
            scopes.contains(&needed),
            "missing bot scope {needed}: {scopes:?}"
        );
    }
    assert!(
        scopes
            .iter()
            .all(|s| !s.contains("admin") && *s != "channels:history"),
        "no broad scopes: {scopes:?}"
    );
    assert_eq!(m["settings"]["interactivity"]["is_enabled"], true);
    assert!(
        m["settings"]["interactivity"]["request_url"]
            .as_str()
            .unwrap()
            .ends_with("/slack/interactions")
    );
    assert_eq!(m["settings"]["socket_mode_enabled"], false);
}

/// People reach the `api` function through a second HTTP API whose JWT authorizer checks the
/// same issuer and audience the function verifies again; every piece of it exists only when
/// `PeopleIssuer` is set.
#[test]
fn people_reach_the_api_function_through_a_jwt_authorizer_on_the_same_issuer() {
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    let r = &doc["Resources"];
    let tag = |v: &Value| match v {
        Value::Tagged(t) => format!("{} {}", t.tag, t.value.as_str().unwrap_or_default()),
        other => format!("{other:?}"),
    };
    let jwt = &r["PeopleAuthorizer"]["Properties"];
    assert_eq!(jwt["AuthorizerType"], "JWT");
    assert_eq!(tag(&jwt["JwtConfiguration"]["Issuer"]), "!Ref PeopleIssuer");
    assert_eq!(
        tag(&jwt["JwtConfiguration"]["Audience"][0]),
        "!Ref PeopleAudience"
    );
    let route = &r["PeopleRoute"]["Properties"];
    assert_eq!(route["AuthorizationType"], "JWT");
    assert_eq!(route["RouteKey"], "ANY /api/{proxy+}");
    let env = &r["Api"]["Properties"]["Environment"]["Variables"];
    assert_eq!(tag(&env["STEWARD_OIDC_ISSUER"]), "!Ref PeopleIssuer");
    for name in [
        "PeopleApi",
        "PeopleApiStage",
        "PeopleAuthorizer",
        "PeopleIntegration",
        "PeopleRoute",
        "PeopleApiInvoke",
    ] {
        assert_eq!(r[name]["Condition"], "HasPeopleIssuer", "{name}");
    }
}
