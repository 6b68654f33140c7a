//! The Okta event mapping against Okta's documented event shapes (tests/fixtures/okta/events,
//! copied from Okta's documented samples; which are verbatim and which reconstructed is in the
//! README there). Every file maps to the signal Steward acts on, nothing else. Then what the
//! engine does with an app-created event and the discovery sweep while Steward is itself
//! creating a client: Okta reports Steward's own apps, often before the onboarding has
//! recorded them.

use async_trait::async_trait;
use serde_json::{Value, json};
use shared::embedded::Durability;
use shared::idp::dev::DevIdp;
use shared::inbound::okta_events::{
    AppChange, PersonChange, RiskKind, Signal, classify, debug, ip, list, received,
};
use shared::ports::IdentityProvider;
use shared::ports::idp::{
    ClientInfo, ClientSpec, CreatedClient, IdpError, NewSecret, TokenRevocation,
};
use shared::wiring::embedded::{Embedded, EmbeddedConfig};
use shared::{Engine, EngineConfig, Secret, intake};
use statemachines::{AgentRequest, AgentStatus};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

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
            // The System Log does not say whether the token is bound: unknown.
            binding: None,
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

// --- discovery while Steward creates a client ----------------------------------------------

const POLICY: &str = include_str!("../../policy.example.toml");
const PEOPLE: &str = r#"
[[person]]
email = "alice@example.com"
name = "Alice Ng"

[[person]]
email = "bob@example.com"
name = "Bob Okafor"
"#;
const AGENT: &str = "orders-agent-prod";

struct Stack {
    engine: Engine,
    dev: Arc<DevIdp>,
    _dir: tempfile::TempDir,
}

/// The embedded stack on the dev IdP, which `wrap` may put something in front of.
fn stack(wrap: impl FnOnce(Arc<DevIdp>) -> Option<Arc<dyn IdentityProvider>>) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people.toml");
    std::fs::write(&people, PEOPLE).unwrap();
    let s = Embedded::open(EmbeddedConfig {
        data_dir: dir.path().join("data"),
        policy: shared::policy_file::parse(POLICY, "policy.example.toml").unwrap(),
        people,
        issuer: "http://127.0.0.1:1".into(),
        durability: Durability::Wal,
        engine: EngineConfig {
            max_attempts: 2,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..EngineConfig::default()
        },
        slack: None,
        okta: None,
        okta_hook_secret: None,
        oauth: None,
        ssf: None,
        okta_directory: false,
        people_issuer: None,
    })
    .unwrap();
    let dev = s.idp.clone();
    let mut engine = Arc::try_unwrap(s.engine)
        .ok()
        .expect("the stack is the engine's only owner");
    if let Some(idp) = wrap(dev.clone()) {
        engine.executor.idp = idp;
    }
    Stack {
        engine,
        dev,
        _dir: dir,
    }
}

fn orders_agent() -> AgentRequest {
    AgentRequest {
        credential: Default::default(),
        public_key: None,
        key_custody: Default::default(),
        csr: None,
        name: AGENT.into(),
        owner: "alice@example.com".into(),
        team: "sre".into(),
        environment: "prod".into(),
        purpose: "reads orders".into(),
        scopes: vec!["erp:orders:read".into()],
        token_lifetime_secs: Some(600),
        expires_on: None,
    }
}

/// Works the queue one message at a time until the IdP holds a client: the create ran, and
/// its result waits in the queue, not yet applied.
async fn until_created(engine: &Engine, idp: &dyn IdentityProvider) -> ClientInfo {
    for _ in 0..20 {
        if let Some(c) = idp.list_clients().await.unwrap().pop() {
            return c;
        }
        engine.work_once(1).await.unwrap();
    }
    panic!("the onboarding created no client")
}

/// Works the queue until it is empty (delayed retries included).
async fn settle(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        engine.run_until_idle().await.unwrap();
        if engine.queue.depth().await.unwrap() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Okta's app-created event about `client_id`, as a hook or the System Log delivers it.
fn app_created(client_id: &str, label: &str) -> intake::Received {
    let mut ev = fixture("application.lifecycle.create.json");
    ev["uuid"] = json!(format!("create-{client_id}"));
    ev["target"][0]["id"] = json!(client_id);
    ev["target"][0]["displayName"] = json!(label);
    ev["target"][0]["alternateId"] = json!(label);
    received(&ev).unwrap()
}

async fn the_agent(engine: &Engine) -> statemachines::Agent {
    engine.store.agent_by_name(AGENT).await.unwrap().unwrap()
}

/// The onboarding ended active with `client_id`, and nothing became a shadow agent.
async fn onboarded_without_shadow(engine: &Engine, client_id: &str) {
    let agent = the_agent(engine).await;
    assert_eq!(agent.status, AgentStatus::Active);
    assert_eq!(agent.client_id.as_deref(), Some(client_id));
    assert_eq!(engine.shadow_agents().await.unwrap(), vec![]);
    let found = engine.store.audit(0, 1000).await.unwrap();
    assert!(
        !found.iter().any(|r| serde_json::to_string(r)
            .unwrap()
            .contains("shadow_agent_found")),
        "no shadow agent audited"
    );
}

/// The dev IdP with something in between: `client` reads that wait, once, until the test lets
/// them go (the test applies the onboarding's record while the engine looks at the client),
/// or creates that make the client and answer with a refusal, as when the answer is lost for
/// good (the onboarding fails, and the client Steward made stays behind).
struct Interposed {
    inner: Arc<dyn IdentityProvider>,
    lose_answer: bool,
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
}

impl Interposed {
    fn new(inner: Arc<dyn IdentityProvider>, lose_answer: bool) -> Self {
        Self {
            inner,
            lose_answer,
            armed: AtomicBool::new(false),
            entered: Notify::new(),
            release: Notify::new(),
        }
    }
}

#[async_trait]
impl IdentityProvider for Interposed {
    async fn create_client(&self, s: &ClientSpec, k: &str) -> Result<CreatedClient, IdpError> {
        let created = self.inner.create_client(s, k).await?;
        if self.lose_answer {
            return Err(IdpError::Refused("the answer was lost".into()));
        }
        Ok(created)
    }
    async fn client(&self, client_id: &str) -> Result<Option<ClientInfo>, IdpError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.inner.client(client_id).await
    }
    async fn set_grants(&self, c: &str, s: &[String], l: u32) -> Result<(), IdpError> {
        self.inner.set_grants(c, s, l).await
    }
    async fn set_active(&self, c: &str, a: bool) -> Result<(), IdpError> {
        self.inner.set_active(c, a).await
    }
    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        self.inner.list_clients().await
    }
    async fn add_secret(&self, c: &str, k: &str) -> Result<NewSecret, IdpError> {
        self.inner.add_secret(c, k).await
    }
    async fn remove_secret(&self, c: &str, s: &str) -> Result<(), IdpError> {
        self.inner.remove_secret(c, s).await
    }
    async fn secret_ids(&self, c: &str) -> Result<Vec<String>, IdpError> {
        self.inner.secret_ids(c).await
    }
    async fn test_secret(&self, c: &str, s: &Secret) -> Result<(), IdpError> {
        self.inner.test_secret(c, s).await
    }
    async fn revoke_tokens(&self, c: &str) -> Result<TokenRevocation, IdpError> {
        self.inner.revoke_tokens(c).await
    }
    async fn delete_client(&self, c: &str) -> Result<(), IdpError> {
        self.inner.delete_client(c).await
    }
}

#[tokio::test]
async fn an_app_created_event_before_the_onboarding_records_its_client_starts_no_shadow() {
    let st = stack(|_| None);
    let e = &st.engine;
    e.request_agent(orders_agent(), "bob@example.com")
        .await
        .unwrap();
    let client = until_created(e, st.dev.as_ref()).await;
    assert_eq!(client.name, AGENT, "the client is named after the agent");
    assert!(
        client
            .steward_key
            .as_deref()
            .is_some_and(|k| k.starts_with("onboarding-")),
        "the client carries its creation key: {client:?}"
    );
    assert_eq!(the_agent(e).await.client_id, None, "not recorded yet");

    let accepted = intake::accept(e, vec![app_created(&client.client_id, AGENT)])
        .await
        .unwrap();
    assert_eq!(accepted.new, 1);
    assert_eq!(e.shadow_agents().await.unwrap(), vec![]);

    settle(e).await;
    onboarded_without_shadow(e, &client.client_id).await;
}

/// Okta's event is handled while the onboarding records the client: the engine finds no agent
/// by the client id, reads the app at Okta, and meanwhile the record lands and the agent is
/// active with it.
#[tokio::test]
async fn an_app_created_event_racing_the_onboardings_record_starts_no_shadow() {
    let mut pausing = None;
    let st = stack(|dev| {
        let p = Arc::new(Interposed::new(dev, false));
        pausing = Some(p.clone());
        Some(p)
    });
    let pausing = pausing.unwrap();
    let e = &st.engine;
    e.request_agent(orders_agent(), "bob@example.com")
        .await
        .unwrap();
    let client = until_created(e, st.dev.as_ref()).await;
    assert_eq!(the_agent(e).await.client_id, None, "not recorded yet");

    pausing.armed.store(true, Ordering::SeqCst);
    // What the worker does with the event (`Message::ClientCreated`), while the onboarding's
    // record is applied between its look at the client and its decision.
    let event = async {
        e.client_created(&client.client_id, None, "create-racing")
            .await
            .unwrap()
    };
    let record = async {
        pausing.entered.notified().await;
        settle(e).await;
        assert_eq!(the_agent(e).await.status, AgentStatus::Active);
        pausing.release.notify_one();
    };
    let (started, ()) = tokio::join!(event, record);
    assert_eq!(started, None, "no shadow started");
    settle(e).await;
    onboarded_without_shadow(e, &client.client_id).await;
}

#[tokio::test]
async fn a_sweep_between_the_create_and_its_record_adopts_nothing() {
    let st = stack(|_| None);
    let e = &st.engine;
    e.request_agent(orders_agent(), "bob@example.com")
        .await
        .unwrap();
    let client = until_created(e, st.dev.as_ref()).await;
    assert_eq!(the_agent(e).await.client_id, None, "not recorded yet");

    let report = e.discover().await.unwrap();
    assert_eq!(report.clients, 1);
    assert_eq!(report.shadows, vec![], "{report:?}");
    assert_eq!(report.unrecorded, 1, "{report:?}");

    settle(e).await;
    onboarded_without_shadow(e, &client.client_id).await;
    let report = e.discover().await.unwrap();
    assert_eq!((report.registered, report.unrecorded), (1, 0));
    assert_eq!(report.shadows, vec![]);
}

/// The create succeeded at the IdP but its answer never came back: the onboarding failed, and
/// its client carries Steward's mark. It is Steward's leftover, not someone's shadow agent.
#[tokio::test]
async fn a_client_left_by_a_failed_onboarding_is_never_a_shadow() {
    let st = stack(|dev| Some(Arc::new(Interposed::new(dev, true))));
    let e = &st.engine;
    e.request_agent(orders_agent(), "bob@example.com")
        .await
        .unwrap();
    settle(e).await;
    assert_eq!(the_agent(e).await.status, AgentStatus::Failed);
    let left = st.dev.list_clients().await.unwrap();
    assert_eq!(left.len(), 1, "the client stayed behind");

    let report = e.discover().await.unwrap();
    assert_eq!(report.shadows, vec![], "{report:?}");
    assert_eq!(report.unrecorded, 1);
    let accepted = intake::accept(e, vec![app_created(&left[0].client_id, AGENT)])
        .await
        .unwrap();
    assert_eq!(accepted.new, 1);
    settle(e).await;
    assert_eq!(e.shadow_agents().await.unwrap(), vec![]);
}

/// Clients made outside Steward are still found, by the sweep and by the event, also when
/// they are made while Steward creates its own, or carry a mark that names no workflow here.
#[tokio::test]
async fn clients_made_outside_steward_are_still_shadows() {
    let st = stack(|_| None);
    let e = &st.engine;
    e.request_agent(orders_agent(), "bob@example.com")
        .await
        .unwrap();
    let own = until_created(e, st.dev.as_ref()).await;
    let outside = |name: &str, key: &str| {
        let spec = ClientSpec {
            agent_id: String::new(),
            name: name.into(),
            scopes: vec!["erp:orders:read".into()],
            token_lifetime_secs: 3600,
        };
        let dev = st.dev.clone();
        let key = key.to_string();
        async move { dev.create_client(&spec, &key).await.unwrap().client_id }
    };
    // Made in the IdP's console, by a person: the dev IdP keeps the key it was given.
    let by_event = outside("Inventory Sync", "console-inventory-sync").await;
    let by_sweep = outside("Old Report Bot", "onboarding-nothing-here/1/2").await;

    let accepted = intake::accept(e, vec![app_created(&by_event, "Inventory Sync")])
        .await
        .unwrap();
    assert_eq!(accepted.new, 1);
    let report = e.discover().await.unwrap();
    assert_eq!(report.clients, 3);
    assert_eq!(report.unrecorded, 1, "Steward's own, being created");
    let mut found: Vec<(String, bool)> = report
        .shadows
        .iter()
        .map(|s| (s.workflow_id.clone(), s.duplicate))
        .collect();
    found.sort();
    // The event went to the worker, which has not run yet: the sweep finds both first.
    let mut expected = vec![
        (format!("shadow-{by_event}"), false),
        (format!("shadow-{by_sweep}"), false),
    ];
    // Client ids are random: both sides in the same order.
    expected.sort();
    assert_eq!(found, expected);
    settle(e).await;
    let mut shadows: Vec<String> = e
        .shadow_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    shadows.sort();
    assert_eq!(shadows, ["inventory-sync", "old-report-bot"]);
    let agent = the_agent(e).await;
    assert_eq!(agent.status, AgentStatus::Active);
    assert_eq!(agent.client_id, Some(own.client_id));
}

/// An app-created event is handed to the worker, which holds the identity provider: the edge
/// that received it never calls the IdP (on AWS it has none), and the worker makes the shadow
/// agent once, however often the event is delivered.
#[tokio::test]
async fn an_app_created_event_is_looked_at_by_the_worker() {
    let st = stack(|_| None);
    let e = &st.engine;
    let spec = ClientSpec {
        agent_id: String::new(),
        name: "Inventory Sync".into(),
        scopes: vec!["erp:orders:read".into()],
        token_lifetime_secs: 3600,
    };
    let client = st
        .dev
        .create_client(&spec, "console-inventory-sync")
        .await
        .unwrap()
        .client_id;
    for _ in 0..2 {
        intake::accept(e, vec![app_created(&client, "Inventory Sync")])
            .await
            .unwrap();
    }
    assert_eq!(
        e.shadow_agents().await.unwrap(),
        vec![],
        "not before the worker ran"
    );
    assert!(e.queue.depth().await.unwrap() >= 1, "handed to the worker");
    settle(e).await;
    let shadows: Vec<String> = e
        .shadow_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(shadows, ["inventory-sync"]);
}
