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
    // In a KMS key policy `Resource: "*"` is the key itself, the only resource it can name.
    let mut key_policies = Vec::new();
    for (_, r) in doc["Resources"].as_mapping().expect("resources") {
        if r["Type"] == "AWS::KMS::Key" {
            statements(&r["Properties"]["KeyPolicy"], &mut key_policies);
        }
    }
    let mut problems = Vec::new();
    for s in &found {
        let actions = strings(&s["Action"]);
        let sid = s["Sid"].as_str().unwrap_or("(no Sid)").to_string();
        for a in &actions {
            if a.contains('*') {
                problems.push(format!("{sid}: wildcard action {a}"));
            }
        }
        if strings(&s["Resource"]).iter().any(|r| r == "*") && !key_policies.contains(s) {
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

// ---------- what each function may touch (docs/adr/0028-iam-per-function.md) ----------

/// A tagged value as written (`!GetAtt Table.Arn`), or the plain string.
fn written(v: &Value) -> String {
    match v {
        Value::Tagged(t) => match &t.value {
            Value::String(s) => format!("{} {s}", t.tag),
            other => format!("{} {other:?}", t.tag),
        },
        Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn role_statements(doc: &Value, role: &str) -> Vec<Value> {
    let mut found = Vec::new();
    statements(&doc["Resources"][role], &mut found);
    assert!(!found.is_empty(), "{role} has statements");
    found
}

/// IAM `StringLike`: `*` is any run of characters, `?` any one.
fn like(pattern: &str, text: &str) -> bool {
    match pattern.chars().next() {
        None => text.is_empty(),
        Some('*') => (0..=text.len())
            .filter(|i| text.is_char_boundary(*i))
            .any(|i| like(&pattern[1..], &text[i..])),
        Some(c) => {
            text.chars().next().is_some_and(|t| c == '?' || c == t) && {
                let n = text.chars().next().map_or(0, char::len_utf8);
                like(&pattern[c.len_utf8()..], &text[n..])
            }
        }
    }
}

/// The partition-key patterns a statement is bound to: `ForAllValues:StringLike` on
/// `dynamodb:LeadingKeys`, together with `"Null": false` on it (without that, a request that
/// names no key, a Scan, matches `ForAllValues` vacuously). `None`: not bound.
fn leading_keys(s: &Value) -> Option<Vec<String>> {
    let c = &s["Condition"];
    let keys = strings(&c["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]);
    let present = c["Null"]["dynamodb:LeadingKeys"] == "false";
    (!keys.is_empty() && present).then_some(keys)
}

/// A statement's resources as written.
fn resources(s: &Value) -> Vec<String> {
    match &s["Resource"] {
        Value::Sequence(rs) => rs.iter().map(written).collect(),
        r => vec![written(r)],
    }
}

const TABLE: &str = "!GetAtt Table.Arn";
const WRITES: &[&str] = &[
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
];

/// Whether `role` may do one of `actions` on the partition `pk` of the table.
fn may(doc: &Value, role: &str, actions: &[&str], pk: &str) -> bool {
    role_statements(doc, role).iter().any(|s| {
        strings(&s["Action"])
            .iter()
            .any(|a| actions.contains(&a.as_str()))
            && resources(s).iter().any(|r| r == TABLE)
            && leading_keys(s).is_none_or(|keys| keys.iter().any(|k| like(k, pk)))
    })
}

/// Whether `role` may write (put, update, delete) the partition `pk` of the table.
fn may_write(doc: &Value, role: &str, pk: &str) -> bool {
    may(doc, role, WRITES, pk)
}

/// The roles behind the public function URLs.
const EDGE_ROLES: &[&str] = &["SlackInteractionsRole", "IdpHookRole"];

/// What is wrong with the public functions' table access: a Scan, a statement on the table not
/// bound to partition keys, an index they may read other than by name, or other than by Query.
fn edge_violations(text: &str) -> Vec<String> {
    let doc: Value = serde_yaml_ng::from_str(text).unwrap();
    let mut problems = Vec::new();
    for role in EDGE_ROLES {
        for s in role_statements(&doc, role) {
            let sid = s["Sid"].as_str().unwrap_or("(no Sid)").to_string();
            let actions = strings(&s["Action"]);
            if !actions.iter().any(|a| a.starts_with("dynamodb:")) {
                continue;
            }
            if actions.iter().any(|a| a == "dynamodb:Scan") {
                problems.push(format!("{role}/{sid}: Scan"));
            }
            for r in &resources(&s) {
                if r == TABLE {
                    if leading_keys(&s).is_none() {
                        problems.push(format!(
                            "{role}/{sid}: the table without dynamodb:LeadingKeys (and Null false)"
                        ));
                    }
                } else if let Some(index) = r.strip_prefix("!Sub ${Table.Arn}/index/") {
                    if index.contains('*') || actions != ["dynamodb:Query"] {
                        problems.push(format!("{role}/{sid}: index {index} for {actions:?}"));
                    }
                } else {
                    problems.push(format!("{role}/{sid}: table actions on {r}"));
                }
            }
        }
    }
    problems
}

/// Finding 12: the two functions behind unauthenticated URLs cannot read the table wholesale
/// or write outside the partitions their code writes. Slack clicks only append audit records
/// and remember the click; approvals and workflows stay read-only to them. Okta events start
/// workflows (so they write those partitions) but never the configuration, the audit
/// checkpoints, sessions, tokens, sealed secrets or cursors.
#[test]
fn the_public_functions_cannot_scan_and_write_only_their_partitions() {
    assert_eq!(edge_violations(TEMPLATE), Vec::<String>::new());
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    // What their code reads (an item, or a batch of the configuration): without it they fail.
    let reads = |role: &str, pks: &[&str]| {
        for pk in pks {
            assert!(
                may(&doc, role, &["dynamodb:GetItem"], pk)
                    && may(&doc, role, &["dynamodb:BatchGetItem"], pk),
                "{role} must read {pk}"
            );
        }
    };
    let start = ["CONFIG", "WF#warm-up", "AUDIT#255"];
    let slack = "SlackInteractionsRole";
    reads(slack, &start);
    reads(slack, &["APPROVAL#a1", "WF#review-c1-a1"]);
    assert!(!may(&doc, slack, &["dynamodb:GetItem"], "SESSION#d"));
    for pk in ["AUDIT#007", "AUDITID#refusal-1", "SEEN#slack-action#U1/1.5"] {
        assert!(may_write(&doc, slack, pk), "{slack} must write {pk}");
    }
    for pk in [
        "APPROVAL#a1",
        "WF#onboarding-x",
        "AGENT#a1",
        "AUDITCP",
        "CONFIG",
        "SESSION#d",
        "VAULT#a1",
        "SEEN#okta#e1",
    ] {
        assert!(!may_write(&doc, slack, pk), "{slack} may write {pk}");
    }
    let slack_actions: Vec<String> = role_statements(&doc, slack)
        .iter()
        .flat_map(|s| strings(&s["Action"]))
        .collect();
    for never in [
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
    ] {
        assert!(
            !slack_actions.iter().any(|a| a == never),
            "{slack}: {never}"
        );
    }
    let okta = "IdpHookRole";
    reads(okta, &start);
    reads(
        okta,
        &[
            "AGENT#a1",
            "AGENTNAME#bot",
            "AGENTCLIENT#0oa1",
            "BASELINE#a1",
            "WF#freeze-a-1",
        ],
    );
    assert!(!may(&doc, okta, &["dynamodb:GetItem"], "VAULT#a1"));
    for pk in [
        "SEEN#okta#e1",
        "GRANTS#0oa1#2026-12-07T13",
        "GRANTHOURS",
        "USAGE#0oa1",
        "BASELINE#a1",
        "WF#freeze-a-1",
        "AGENT#a1",
        "APPROVAL#a1",
        "AUDIT#001",
        "AUDITID#x",
    ] {
        assert!(may_write(&doc, okta, pk), "{okta} must write {pk}");
    }
    for pk in [
        "CONFIG",
        "AUDITCP",
        "SESSION#d",
        "SIGNIN#d",
        "PAT#t",
        "PATS#p",
        "VAULT#a1",
        "CURSOR#audit-seal",
        "MSG#m",
        "GROUP#campaigns",
        "SEEN#slack-action#U1/1.5",
        "SEEN#ssf-jti#j1",
    ] {
        assert!(!may_write(&doc, okta, pk), "{okta} may write {pk}");
    }
}

/// Only the `api` function lists the whole table (every approval ever); no other role has
/// `dynamodb:Scan`.
#[test]
fn only_the_api_function_scans() {
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    let mut scanning = Vec::new();
    for (name, r) in doc["Resources"].as_mapping().unwrap() {
        if r["Type"] != "AWS::IAM::Role" {
            continue;
        }
        let mut found = Vec::new();
        statements(r, &mut found);
        if found
            .iter()
            .any(|s| strings(&s["Action"]).iter().any(|a| a == "dynamodb:Scan"))
        {
            scanning.push(name.as_str().unwrap().to_string());
        }
    }
    assert_eq!(scanning, ["ApiRole"]);
}

#[test]
fn an_edge_with_table_wide_access_is_caught() {
    let scan = TEMPLATE.replacen(
        "Action: [dynamodb:GetItem, dynamodb:BatchGetItem, dynamodb:Query]\n                Resource: !GetAtt Table.Arn\n                Condition:\n                  ForAllValues:StringLike:\n                    dynamodb:LeadingKeys: [CONFIG",
        "Action: [dynamodb:GetItem, dynamodb:BatchGetItem, dynamodb:Query, dynamodb:Scan]\n                Resource: !GetAtt Table.Arn\n                Condition:\n                  ForAllValues:StringLike:\n                    dynamodb:LeadingKeys: [CONFIG",
        1,
    );
    assert_ne!(scan, TEMPLATE);
    let v = edge_violations(&scan);
    assert!(v.iter().any(|p| p.ends_with(": Scan")), "{v:?}");
    // Without "Null": false, ForAllValues holds for a request naming no key at all.
    let vacuous = TEMPLATE.replacen(
        "                  \"Null\":\n                    dynamodb:LeadingKeys: \"false\"\n",
        "",
        usize::MAX,
    );
    assert!(
        edge_violations(&vacuous)
            .iter()
            .any(|p| p.contains("without dynamodb:LeadingKeys")),
        "{:?}",
        edge_violations(&vacuous)
    );
    let any_index = TEMPLATE.replacen("index/agents-by-owner", "index/*", 1);
    assert!(
        edge_violations(&any_index)
            .iter()
            .any(|p| p.contains("index *")),
        "{:?}",
        edge_violations(&any_index)
    );
    let doc: Value = serde_yaml_ng::from_str(&TEMPLATE.replacen(
        "[\"AUDIT#*\", \"AUDITID#*\", \"SEEN#slack-action#*\"]",
        "[\"AUDIT*\", \"SEEN#slack-action#*\", \"APPROVAL#*\"]",
        1,
    ))
    .unwrap();
    assert!(may_write(&doc, "SlackInteractionsRole", "APPROVAL#a1"));
    assert!(may_write(&doc, "SlackInteractionsRole", "AUDITCP"));
    assert!(like("AUDIT#*", "AUDIT#001") && !like("AUDIT#*", "AUDITCP"));
    assert!(like("GRANTHOURS", "GRANTHOURS") && !like("GRANTHOURS", "GRANTHOURSX"));
}

/// Agents' secrets in Secrets Manager are encrypted with the stack's own key, whose policy lets
/// the account administer it but not use it, and lets exactly the roles that handle agents'
/// secrets use it, through Secrets Manager, for `steward/agents/*`. The function that creates
/// the secrets passes the key in the variable the code reads.
#[test]
fn agent_secrets_are_encrypted_with_a_key_only_their_roles_may_use() {
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    let r = &doc["Resources"];
    let key = &r["AgentSecretsKey"];
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(key["DeletionPolicy"], "Retain");
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    assert_eq!(
        written(&r["AgentSecretsKeyAlias"]["Properties"]["TargetKeyId"]),
        "!Ref AgentSecretsKey"
    );
    let prefix = doc["Globals"]["Function"]["Environment"]["Variables"]["STEWARD_SECRET_PREFIX"]
        .as_str()
        .unwrap();
    assert_eq!(prefix, shared::wiring::aws::DEFAULT_SECRET_PREFIX);
    // The roles that read or write agents' secrets.
    let agent_secrets = format!("secret:{prefix}*");
    let mut secret_roles = Vec::new();
    for (name, res) in r.as_mapping().unwrap() {
        if res["Type"] != "AWS::IAM::Role" {
            continue;
        }
        let mut found = Vec::new();
        statements(res, &mut found);
        if found.iter().any(|s| {
            strings(&s["Action"])
                .iter()
                .any(|a| a.starts_with("secretsmanager:"))
                && written(&s["Resource"]).contains(&agent_secrets)
        }) {
            secret_roles.push(format!("!GetAtt {}.Arn", name.as_str().unwrap()));
        }
    }
    secret_roles.sort();
    assert_eq!(
        secret_roles,
        ["!GetAtt SecretRotationRole.Arn", "!GetAtt WorkerRole.Arn"]
    );
    let mut policy = Vec::new();
    statements(&key["Properties"]["KeyPolicy"], &mut policy);
    let uses = |s: &Value| {
        strings(&s["Action"]).iter().any(|a| {
            ["kms:Encrypt", "kms:Decrypt", "kms:CreateGrant"].contains(&a.as_str())
                || a.starts_with("kms:GenerateDataKey")
                || a.starts_with("kms:ReEncrypt")
        })
    };
    let mut users = Vec::new();
    for s in &policy {
        assert_eq!(s["Effect"], "Allow");
        let principals: Vec<String> = match &s["Principal"]["AWS"] {
            Value::Sequence(p) => p.iter().map(written).collect(),
            p => vec![written(p)],
        };
        if principals.iter().any(|p| p.contains(":root")) {
            assert!(!uses(s), "the account may use the key: {s:?}");
        }
        if uses(s) {
            let via = written(&s["Condition"]["StringEquals"]["kms:ViaService"]);
            assert!(via.starts_with("!Sub secretsmanager."), "{via}");
            let arn = written(&s["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"]);
            assert!(arn.ends_with(&agent_secrets), "{arn}");
            users.extend(principals);
        }
    }
    users.sort();
    assert_eq!(users, secret_roles, "who may use the key");
    // The code reads the key from this variable (shared/src/wiring/aws.rs) and passes it to
    // CreateSecret as KmsKeyId; the function whose role creates secrets sets it to the key.
    assert_eq!(shared::wiring::aws::KMS_KEY_ENV, "STEWARD_KMS_KEY_ID");
    let vault = &doc["Globals"]["Function"]["Environment"]["Variables"]["STEWARD_VAULT"];
    let Value::Tagged(vault) = vault else {
        panic!("{vault:?}")
    };
    assert_eq!(
        (vault.tag.to_string().as_str(), written(&vault.value[0])),
        ("!If", "HasVaultKey".to_string())
    );
    assert_eq!(vault.value[2], "secrets-manager");
    for (name, f) in r.as_mapping().unwrap() {
        if f["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let role = written(&f["Properties"]["Role"]);
        let role_name = role.trim_start_matches("!GetAtt ").trim_end_matches(".Arn");
        let creates = role_statements(&doc, role_name).iter().any(|s| {
            strings(&s["Action"])
                .iter()
                .any(|a| a == "secretsmanager:CreateSecret")
        });
        if !creates {
            continue;
        }
        let env = &f["Properties"]["Environment"]["Variables"][shared::wiring::aws::KMS_KEY_ENV];
        let Value::Tagged(t) = env else {
            panic!("{name:?} creates secrets without STEWARD_KMS_KEY_ID: {env:?}")
        };
        let branches: Vec<String> = t.value.as_sequence().unwrap().iter().map(written).collect();
        assert_eq!(
            (t.tag.to_string(), branches),
            (
                "!If".to_string(),
                vec![
                    "HasVaultKey".to_string(),
                    "!Ref VaultKmsKeyArn".to_string(),
                    "!GetAtt AgentSecretsKey.Arn".to_string()
                ]
            ),
            "{name:?}"
        );
    }
}

/// The schedules' dead-letter queue takes EventBridge deliveries only from this stack's rules
/// in this account: every rule that names it as its dead-letter queue, and no other.
#[test]
fn schedule_dead_letters_come_only_from_this_stacks_rules() {
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    let r = doc["Resources"].as_mapping().unwrap();
    let dlq = "!GetAtt ScheduleDeadLetterQueue.Arn";
    // The rules that may dead-letter into it: SAM's schedule rules (<function><event>) and the
    // template's own rules.
    let mut rules = Vec::new();
    for (name, res) in r {
        let name = name.as_str().unwrap();
        if res["Type"] == "AWS::Serverless::Function" {
            for (event, e) in res["Properties"]["Events"]
                .as_mapping()
                .into_iter()
                .flatten()
            {
                if e["Type"] == "Schedule"
                    && written(&e["Properties"]["DeadLetterConfig"]["Arn"]) == dlq
                {
                    rules.push(format!("!GetAtt {name}{}.Arn", event.as_str().unwrap()));
                }
            }
        }
        if res["Type"] == "AWS::Events::Rule"
            && res["Properties"]["Targets"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|t| written(&t["DeadLetterConfig"]["Arn"]) == dlq)
        {
            rules.push(format!("!GetAtt {name}.Arn"));
        }
    }
    assert!(rules.len() >= 5, "{rules:?}");
    let mut found = Vec::new();
    statements(
        &doc["Resources"]["ScheduleDeadLetterQueuePolicy"],
        &mut found,
    );
    assert!(!found.is_empty());
    for s in &found {
        let c = &s["Condition"];
        assert_eq!(
            written(&c["StringEquals"]["aws:SourceAccount"]),
            "!Ref AWS::AccountId",
            "{s:?}"
        );
        // A conditional rule appears as !If [its condition, its ARN, AWS::NoValue].
        let mut sources = Vec::new();
        for v in c["ArnEquals"]["aws:SourceArn"]
            .as_sequence()
            .expect("a list")
        {
            match v {
                Value::Tagged(t) if t.tag == "!If" => {
                    let b = t.value.as_sequence().unwrap();
                    assert_eq!(written(&b[2]), "!Ref AWS::NoValue");
                    let rule = written(&b[1]);
                    let name = rule.trim_start_matches("!GetAtt ").trim_end_matches(".Arn");
                    assert_eq!(
                        b[0], doc["Resources"][name]["Condition"],
                        "{rule} is listed under its own condition"
                    );
                    sources.push(rule);
                }
                v => sources.push(written(v)),
            }
        }
        sources.sort();
        rules.sort();
        assert_eq!(sources, rules);
    }
}

/// The audit seal key (docs/adr/0029-signed-audit-seals.md): a secret the stack makes, named to
/// the scheduler by the variable its code reads, and readable by the scheduler's role alone
/// (a role that can write the table must not be able to sign a rewritten trail).
#[test]
fn only_the_scheduler_may_read_the_audit_seal_key() {
    let doc: Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    let secret = &doc["Resources"]["AuditSealSecret"];
    assert_eq!(secret["Type"], "AWS::SecretsManager::Secret");
    assert!(
        secret["Properties"]["GenerateSecretString"]["PasswordLength"]
            .as_u64()
            .is_some_and(|n| n >= shared::audit::seal::SEAL_SECRET_MIN_CHARS as u64),
        "the generated secret is long enough for a seal key"
    );
    assert_eq!(secret["DeletionPolicy"], "Retain");
    let env = &doc["Resources"]["Scheduler"]["Properties"]["Environment"]["Variables"];
    assert!(
        written(&env[scheduler::SEAL_KEY_ENV]).contains("AuditSealSecret"),
        "the scheduler is told the secret in {}",
        scheduler::SEAL_KEY_ENV
    );
    let resources = doc["Resources"].as_mapping().unwrap();
    let mut readers = Vec::new();
    for (name, r) in resources {
        if r["Type"] != "AWS::IAM::Role" {
            continue;
        }
        let mut found = Vec::new();
        statements(r, &mut found);
        if found
            .iter()
            .any(|s| written(&s["Resource"]).contains("AuditSealSecret"))
        {
            readers.push(name.as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(readers, ["SchedulerRole"]);
}
