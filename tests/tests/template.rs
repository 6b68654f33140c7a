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

/// The functions that take identity-provider events (the `api` function's Shared Signals
/// receiver, `idp-hook`) keep token-grant evidence with BatchWriteItem, which IAM authorises
/// on its own: without it every token grant an event brings is refused on AWS.
#[test]
fn the_functions_taking_events_may_write_grant_evidence() {
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    for role in ["ApiRole", "IdpHookRole"] {
        let mut found = Vec::new();
        statements(&doc["Resources"][role], &mut found);
        let actions: Vec<String> = found.iter().flat_map(|s| strings(&s["Action"])).collect();
        for action in ["dynamodb:BatchWriteItem", "dynamodb:UpdateItem"] {
            assert!(
                actions.iter().any(|a| a == action),
                "{role} lacks {action}: {actions:?}"
            );
        }
    }
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

// ---------- AWS limits ----------

/// A CloudFormation parameter value holds at most 4,096 bytes.
const PARAMETER_MAX: usize = 4096;
/// A function's environment variables hold at most 4 KB in all (names and values).
const ENVIRONMENT_MAX: usize = 4096;
/// A physical id, URL or ARN a `!Ref` of a resource or `!GetAtt` yields: table names and ARNs
/// stay under it (a queue URL is about 130 bytes, a function ARN at most 140).
const GENERATED_MAX: usize = 256;

/// The longest value `v` can take once CloudFormation resolved it, given each parameter's
/// `MaxLength`. Panics on a form it does not know, so a new construct is looked at.
fn longest(doc: &Value, v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Number(n) => n.to_string().len(),
        Value::Bool(_) => 5,
        Value::Tagged(t) => match t.tag.to_string().as_str() {
            "!Ref" => {
                let name = t.value.as_str().expect("!Ref names something");
                let p = &doc["Parameters"][name];
                if p.is_null() {
                    GENERATED_MAX // a resource or pseudo parameter
                } else if p["Type"] == "Number" {
                    20
                } else {
                    // Without a MaxLength (itself a violation), a value can be the maximum.
                    p["MaxLength"].as_u64().unwrap_or(PARAMETER_MAX as u64) as usize
                }
            }
            "!GetAtt" => GENERATED_MAX,
            "!If" => {
                let branches = t.value.as_sequence().expect("!If [condition, a, b]");
                longest(doc, &branches[1]).max(longest(doc, &branches[2]))
            }
            "!Sub" => {
                let s = t.value.as_str().expect("!Sub with a string");
                s.len() + s.matches("${").count() * GENERATED_MAX
            }
            other => panic!("unknown tag {other} in an environment"),
        },
        other => panic!("unexpected value {other:?} in an environment"),
    }
}

/// Per function: the worst-case size of its environment (the globals with its own variables).
fn environment_sizes(text: &str) -> Vec<(String, usize)> {
    let doc: Value = serde_yaml_ng::from_str(text).unwrap();
    let globals = doc["Globals"]["Function"]["Environment"]["Variables"]
        .as_mapping()
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, r) in doc["Resources"].as_mapping().unwrap() {
        if r["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let mut vars = globals.clone();
        if let Some(own) = r["Properties"]["Environment"]["Variables"].as_mapping() {
            for (k, v) in own {
                vars.insert(k.clone(), v.clone());
            }
        }
        let size = vars
            .iter()
            .map(|(k, v)| k.as_str().unwrap().len() + longest(&doc, v))
            .sum();
        out.push((name.as_str().unwrap().to_string(), size));
    }
    out
}

/// What exceeds a limit: a parameter default over 4,096 bytes, a String parameter a value of
/// which could be (no `MaxLength`, or one above the limit), a function whose environment
/// could exceed 4 KB.
fn limit_violations(text: &str) -> Vec<String> {
    let doc: Value = serde_yaml_ng::from_str(text).unwrap();
    let mut problems = Vec::new();
    for (name, p) in doc["Parameters"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let default = p["Default"].as_str().map_or(0, str::len);
        if default > PARAMETER_MAX {
            problems.push(format!("{name}: default of {default} bytes"));
        }
        if p["Type"] == "String" {
            match p["MaxLength"].as_u64() {
                None => problems.push(format!("{name}: no MaxLength")),
                Some(m) if m as usize > PARAMETER_MAX => {
                    problems.push(format!("{name}: MaxLength {m} above {PARAMETER_MAX}"))
                }
                Some(_) => {}
            }
        }
    }
    for (function, size) in environment_sizes(text) {
        if size > ENVIRONMENT_MAX {
            problems.push(format!(
                "{function}: environment up to {size} bytes, above {ENVIRONMENT_MAX}"
            ));
        }
    }
    problems
}

#[test]
fn no_parameter_or_environment_can_exceed_aws_limits() {
    assert_eq!(limit_violations(TEMPLATE), Vec::<String>::new());
    let sizes = environment_sizes(TEMPLATE);
    assert_eq!(sizes.len(), 6, "{sizes:?}");
    // The policy and people file are pushed to the table, never passed as parameters.
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    for gone in ["PolicyToml", "PeopleToml"] {
        assert!(doc["Parameters"][gone].is_null(), "{gone} is back");
    }
    assert!(!TEMPLATE.contains("STEWARD_POLICY") && !TEMPLATE.contains("STEWARD_PEOPLE"));
}

#[test]
fn an_oversized_parameter_or_environment_is_caught() {
    // A file passed through a parameter, the way the policy once was.
    let policy = TEMPLATE.replacen(
        "Parameters:\n",
        &format!(
            "Parameters:\n  PolicyToml:\n    Type: String\n    MaxLength: 4096\n    Default: \"{}\"\n",
            "x".repeat(5000)
        ),
        1,
    );
    assert_eq!(
        limit_violations(&policy),
        vec!["PolicyToml: default of 5000 bytes"]
    );
    let unbounded = TEMPLATE.replacen("    MaxLength: 128\n", "", 1);
    assert!(
        limit_violations(&unbounded)
            .iter()
            .any(|p| p.ends_with("no MaxLength")),
        "{:?}",
        limit_violations(&unbounded)
    );
    // Eight long values in the globals push every function over 4 KB.
    let mut big = String::new();
    for i in 0..8 {
        big.push_str(&format!(
            "        STEWARD_BIG_{i}: \"{}\"\n",
            "v".repeat(500)
        ));
    }
    let crowded = TEMPLATE.replacen(
        "        STEWARD_LOG: info\n",
        &format!("        STEWARD_LOG: info\n{big}"),
        1,
    );
    let problems = limit_violations(&crowded);
    assert_eq!(problems.len(), 6, "{problems:?}");
    assert!(problems[0].contains("environment up to"), "{problems:?}");
}

/// Slack and Okta are optional: their functions, roles and URLs exist only when configured, and
/// a stack without an identity provider, with one Slack secret of two, or with both Okta and
/// an OAuth server is refused at deploy time (rules) instead of crash-looping.
#[test]
fn slack_and_okta_are_optional_and_a_half_configuration_is_refused_at_deploy() {
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    let r = &doc["Resources"];
    for name in [
        "SlackInteractions",
        "SlackInteractionsRole",
        "SlackInteractionsLogs",
    ] {
        assert_eq!(r[name]["Condition"], "HasSlack", "{name}");
    }
    for name in ["IdpHook", "IdpHookRole", "IdpHookLogs"] {
        assert_eq!(r[name]["Condition"], "HasOktaHook", "{name}");
    }
    for p in [
        "SlackBotTokenArn",
        "SlackSigningSecretArn",
        "OktaApiTokenArn",
        "OktaOrgUrl",
        "OktaHookSecretArn",
        "OAuthIssuer",
    ] {
        assert_eq!(doc["Parameters"][p]["Default"], "", "{p} is optional");
    }
    for rule in [
        "OneIdentityProvider",
        "OktaNeedsItsToken",
        "SlackNeedsBothSecrets",
        "LogStreamNeedsTheHook",
    ] {
        let assertion = &doc["Rules"][rule]["Assertions"][0];
        assert!(
            !assertion["Assert"].is_null() && assertion["AssertDescription"].is_string(),
            "{rule}"
        );
    }
    // Concurrency is bounded by the event source, never by reserving account concurrency.
    let worker = &r["Worker"]["Properties"];
    assert!(worker["ReservedConcurrentExecutions"].is_null());
    assert!(
        !worker["Events"]["Work"]["Properties"]["ScalingConfig"]["MaximumConcurrency"].is_null()
    );
    for (name, f) in r.as_mapping().unwrap() {
        let reserved = &f["Properties"]["ReservedConcurrentExecutions"];
        assert!(
            reserved.is_null() || matches!(reserved, Value::Tagged(t) if t.tag == "!If"),
            "{name:?} reserves concurrency unconditionally"
        );
    }
}

/// Operable: alarms on failed invocations, rate limits, expired approvals and failed rotations
/// (besides the dead letters), each notifying the alarm topic, over the metrics the functions
/// write as Embedded Metric Format (namespace `Steward`); and a dashboard whose body is JSON
/// that shows them.
#[test]
fn alarms_and_a_dashboard_watch_the_engine_metrics() {
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    let r = &doc["Resources"];
    let tag = |v: &Value| match v {
        Value::Tagged(t) => format!("{} {}", t.tag, t.value.as_str().unwrap_or_default()),
        other => format!("{other:?}"),
    };
    for alarm in [
        "DeadLetterAlarm",
        "FunctionErrorsAlarm",
        "ThrottlesAlarm",
        "ApprovalsExpiredAlarm",
        "ApprovalBacklogAgeAlarm",
        "FailedRotationsAlarm",
    ] {
        let p = &r[alarm]["Properties"];
        assert_eq!(r[alarm]["Type"], "AWS::CloudWatch::Alarm", "{alarm}");
        assert_eq!(tag(&p["AlarmActions"][0]), "!Ref AlarmTopic", "{alarm}");
    }
    assert_eq!(
        r["FailedRotationsAlarm"]["Properties"]["Namespace"],
        shared::aws::metrics::NAMESPACE
    );
    assert_eq!(
        r["FailedRotationsAlarm"]["Properties"]["MetricName"],
        "WorkflowsFailed"
    );
    let body = match &r["Dashboard"]["Properties"]["DashboardBody"] {
        Value::Tagged(t) => t.value.as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    // The placeholders CloudFormation fills in are names; the rest must be JSON already.
    let mut plain = String::new();
    let mut rest = body.as_str();
    while let Some(i) = rest.find("${") {
        plain.push_str(&rest[..i]);
        plain.push('X');
        rest = &rest[i + rest[i..].find('}').unwrap() + 1..];
    }
    plain.push_str(rest);
    let dashboard: serde_json::Value = serde_json::from_str(&plain).expect("dashboard JSON");
    let text = dashboard.to_string();
    for metric in [
        "WorkflowsStarted",
        "WorkflowsFailed",
        "TimeToContain",
        "CommandLatency",
        "Throttles",
        "ApprovalsExpired",
        "ApprovalBacklog",
        "ApprovalOldestAge",
    ] {
        assert!(text.contains(metric), "{metric} is not on the dashboard");
    }
}
