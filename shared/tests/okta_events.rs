//! The Okta event mapping against Okta's documented event shapes (tests/fixtures/okta/events,
//! copied from the reference vectors; which are verbatim and which reconstructed is in the
//! README there). Every file maps to the signal Steward acts on, nothing else.

use serde_json::{Value, json};
use shared::inbound::okta_events::{
    AppChange, PersonChange, RiskKind, Signal, classify, debug, ip, list,
};
use std::path::PathBuf;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/okta/events")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn signal(name: &str) -> Signal {
    classify(&fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap_or_else(|| panic!("{name} maps to no signal"))
}

#[test]
fn service_app_lifecycle_feeds_discovery() {
    for (file, change) in [
        ("application.lifecycle.create.json", AppChange::Created),
        ("application.lifecycle.update.json", AppChange::Updated),
        (
            "application.lifecycle.deactivate.json",
            AppChange::Deactivated,
        ),
        ("application.lifecycle.delete.json", AppChange::Deleted),
    ] {
        assert_eq!(
            signal(file),
            Signal::ServiceApp {
                app_id: "0oa8x5nsjp8aDUpB70g7".into(),
                label: "Inventory Agent".into(),
                change,
                by: Some("admin@example.com".into()),
            },
            "{file}"
        );
    }
}

#[test]
fn owner_deactivated_or_suspended_is_person_lost() {
    for (file, change) in [
        ("user.lifecycle.deactivate.json", PersonChange::Deactivated),
        ("user.lifecycle.suspend.json", PersonChange::Suspended),
    ] {
        assert_eq!(
            signal(file),
            Signal::PersonLost {
                user_id: "00u3m90rxKjGQ0G6L1d6".into(),
                login: "john.doe@example.com".into(),
                change,
            }
        );
    }
    // The verbatim event-hook delivery (Okta's sample) carries a `user.session.start`: read,
    // and not acted on.
    let delivery: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/okta/event-hook-delivery-sample.json"
    ))
    .unwrap();
    let events = delivery["data"]["events"].as_array().unwrap();
    assert_eq!(events[0]["eventType"], "user.session.start");
    assert_eq!(classify(&events[0]).unwrap(), None);
}

#[test]
fn token_grants_are_behaviour_evidence() {
    assert_eq!(
        signal("app.oauth2.as.token.grant.access_token.json"),
        Signal::TokenGrant {
            client_id: "0oa8x5nsjp8aDUpB70g7".into(),
            ip: Some("203.0.113.45".into()),
            grant_type: Some("client_credentials".into()),
            requested: vec!["inventory:read".into(), "inventory:write".into()],
            granted: vec!["inventory:read".into(), "inventory:write".into()],
            success: true,
            reason: None,
        }
    );
    let Signal::TokenGrant {
        success,
        reason,
        granted,
        requested,
        ..
    } = signal("app.oauth2.as.token.grant.json")
    else {
        panic!("a failed grant is a token grant")
    };
    assert!(!success);
    assert_eq!(reason.as_deref(), Some("no_matching_scope"));
    assert!(granted.is_empty());
    assert!(!requested.is_empty());
    // A revocation is not a grant, and nothing else either.
    assert_eq!(
        classify(&fixture("app.oauth2.as.token.revoke.json")).unwrap(),
        None
    );
}

#[test]
fn threats_and_risk_are_anomaly_signals() {
    let Signal::Risk {
        kind,
        subjects,
        level,
        ip,
        ..
    } = signal("security.threat.detected.json")
    else {
        panic!()
    };
    assert_eq!(kind, RiskKind::ThreatDetected);
    assert_eq!(subjects, ["1.2.3.4"]);
    assert_eq!(level.as_deref(), Some("HIGH"));
    assert_eq!(ip.as_deref(), Some("1.2.3.4"));

    for (file, expected) in [
        ("user.risk.change.json", RiskKind::UserRisk),
        ("policy.entity_risk.action.json", RiskKind::EntityRiskAction),
        ("user.session.clear.json", RiskKind::SessionsCleared),
    ] {
        let Signal::Risk { kind, subjects, .. } = signal(file) else {
            panic!("{file}")
        };
        assert_eq!(kind, expected, "{file}");
        assert_eq!(subjects, ["john.doe@example.com"], "{file}");
    }
    let Signal::Risk { level, detail, .. } = signal("policy.entity_risk.action.json") else {
        panic!()
    };
    assert_eq!(level.as_deref(), Some("HIGH"));
    assert!(detail.starts_with("TERMINATE_ALL_SESSIONS"), "{detail}");
    let Signal::Risk { kind, subjects, .. } = signal("user.authentication.universal_logout.json")
    else {
        panic!()
    };
    assert_eq!(kind, RiskKind::UniversalLogout);
    assert_eq!(subjects, ["0oa8x5nsjp8aDUpB70g7"], "the logged-out app ids");
}

#[test]
fn debug_data_keys_match_whatever_their_case() {
    let mut e = fixture("app.oauth2.as.token.grant.access_token.json");
    let dbg = e["debugContext"]["debugData"].as_object_mut().unwrap();
    let granted = dbg.remove("grantedScopes").unwrap();
    dbg.insert("GRANTED_SCOPES".into(), granted);
    let grant = dbg.remove("grantType").unwrap();
    dbg.insert("grant_type".into(), grant);
    assert_eq!(
        debug(&e, "grantedScopes").as_deref(),
        Some("inventory:read, inventory:write")
    );
    assert!(matches!(
        classify(&e).unwrap(),
        Some(Signal::TokenGrant { ref granted, ref grant_type, .. })
            if granted.len() == 2 && grant_type.as_deref() == Some("client_credentials")
    ));
}

#[test]
fn ip_falls_back_to_the_chain_under_client_or_request() {
    let mut e = json!({"client": {"ipAddress": "null", "ipChain": [{"ip": "192.0.2.1"}]}});
    assert_eq!(ip(&e).as_deref(), Some("192.0.2.1"));
    e = json!({"client": {"ipAddress": null}, "request": {"ipChain": [{"ip": "192.0.2.2"}]}});
    assert_eq!(ip(&e).as_deref(), Some("192.0.2.2"));
    assert_eq!(ip(&json!({})), None);
    assert_eq!(list("[0oa1, 0oa2]"), ["0oa1", "0oa2"]);
    assert_eq!(list("a b,c"), ["a", "b", "c"]);
    assert!(list("").is_empty());
}

#[test]
fn malformed_events_say_what_is_missing_and_unknown_types_map_to_nothing() {
    let mut e = fixture("application.lifecycle.create.json");
    e["target"] = Value::Null;
    let err = classify(&e).unwrap_err();
    assert!(err.to_string().contains("no AppInstance target"), "{err}");
    assert!(
        err.to_string().contains("application.lifecycle.create"),
        "{err}"
    );
    let err = classify(&json!({"uuid": "u-1"})).unwrap_err();
    assert!(err.to_string().contains("no eventType"), "{err}");
    let mut grant = fixture("app.oauth2.as.token.grant.json");
    grant["actor"]["type"] = json!("User");
    assert!(
        classify(&grant)
            .unwrap_err()
            .to_string()
            .contains("no client")
    );
    assert_eq!(
        classify(&json!({"eventType": "user.session.start"})).unwrap(),
        None
    );
}
