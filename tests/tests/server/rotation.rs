//! Rotation and decommission on the embedded engine, against the development IdP and against a
//! real OpenID provider (npm `oidc-provider`, started by `tests/run`).
//!
//! What rotation and decommission must show (docs/adr/0016, 0017): a client keeps obtaining tokens throughout a rotation (no gap),
//! and a decommissioned agent cannot obtain a token while its history and receipt stay readable.

use chrono::{DateTime, Duration, Utc};
use shared::credential::Credential;
use shared::embedded::Durability;
use shared::idp::oauth::OAuthSettings;
use shared::ports::vault::{Stage, VaultError};
use shared::ports::{Clock, IdentityProvider, Vault};
use shared::wiring::embedded::{Embedded, EmbeddedConfig};
use shared::{EngineConfig, Secret};
use statemachines::rotation::RotationReason;
use statemachines::{Actor, AgentRequest, AgentStatus, Decision};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

const OWNER: &str = "alice@example.com";
const APPROVER: &str = "sam.security@example.com";
const PEOPLE: &str = r#"
[[person]]
email = "alice@example.com"
name = "Alice Ng"

[[person]]
email = "sam.security@example.com"
name = "Sam Patel"

[[person]]
email = "priya.secops@example.com"
name = "Priya Rao"
"#;

pub(crate) fn policy(scope: &str) -> String {
    format!(
        r#"
environments = ["dev", "prod"]
[scopes]
approved = ["{scope}"]
[tokens]
max_lifetime = "15m"
[rotation]
max_age = "90days"
grace = "1h"
[approvals]
expiry = "72h"
approvers = ["sam.security@example.com", "priya.secops@example.com"]
"#
    )
}

/// A clock the test moves: the grace period passes without waiting an hour.
pub(crate) struct TestClock(Mutex<DateTime<Utc>>);
impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}
impl TestClock {
    pub(crate) fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

pub(crate) struct Stack {
    pub(crate) stack: Embedded,
    pub(crate) clock: Arc<TestClock>,
    _dir: tempfile::TempDir,
}

fn stack(scope: &str, oauth: Option<OAuthSettings>) -> Stack {
    stack_with(&policy(scope), oauth)
}

/// The stack with the policy `policy` (TOML).
pub(crate) fn stack_with(policy: &str, oauth: Option<OAuthSettings>) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people.toml");
    std::fs::write(&people, PEOPLE).unwrap();
    let mut stack = Embedded::open(EmbeddedConfig {
        data_dir: dir.path().join("data"),
        policy: shared::policy_file::parse(policy, "test policy").unwrap(),
        people,
        issuer: "http://127.0.0.1:1".into(),
        durability: Durability::Wal,
        engine: EngineConfig {
            base_backoff: std::time::Duration::from_millis(5),
            max_backoff: std::time::Duration::from_millis(50),
            ..EngineConfig::default()
        },
        slack: None,
        okta: None,
        okta_hook_secret: None,
        oauth,
        ssf: None,
        okta_directory: false,
        people_issuer: None,
    })
    .unwrap();
    let clock = Arc::new(TestClock(Mutex::new(Utc::now())));
    Arc::get_mut(&mut stack.engine)
        .expect("the stack is the engine's only owner")
        .clock = clock.clone();
    Stack {
        stack,
        clock,
        _dir: dir,
    }
}

pub(crate) fn oidc_settings() -> OAuthSettings {
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the suite with tests/run, which starts oidc-provider")
        })
    };
    OAuthSettings::new(&env("STEWARD_TEST_OIDC_ISSUER"))
        .unwrap()
        .with_initial_access_token(Secret::new(env("STEWARD_TEST_OIDC_INITIAL_ACCESS_TOKEN")))
        .unwrap()
}

impl Stack {
    pub(crate) fn idp(&self) -> Arc<dyn IdentityProvider> {
        self.stack.engine.executor.idp.clone()
    }

    /// Works the queue and fires due timers until nothing is left to do.
    pub(crate) async fn settle(&self) {
        for _ in 0..50 {
            let n = self.stack.engine.run_until_idle().await.unwrap();
            let t = self.stack.engine.tick().await.unwrap();
            if n == 0 && t == 0 {
                return;
            }
        }
        panic!("the engine did not settle");
    }

    async fn onboard(&self, name: &str, scope: &str) -> statemachines::Agent {
        let req = AgentRequest {
            credential: Default::default(),
            public_key: None,
            key_custody: Default::default(),
            csr: None,
            name: name.into(),
            owner: OWNER.into(),
            team: "sre".into(),
            environment: "prod".into(),
            purpose: "rotation tests".into(),
            scopes: vec![scope.into()],
            token_lifetime_secs: Some(300),
            expires_on: None,
        };
        self.stack.engine.request_agent(req, OWNER).await.unwrap();
        self.settle().await;
        let agent = self.stack.engine.find_agent(name).await.unwrap().unwrap();
        assert_eq!(agent.status, AgentStatus::Active, "{agent:?}");
        agent
    }
}

/// What an agent does to get a token, as the README documents it: use AWSCURRENT; if the IdP
/// refuses it (a provider with one secret per client replaced it at createSecret), use
/// AWSPENDING, then AWSCURRENT once more (it may have been promoted in between). If all are
/// refused, the new value is between the IdP's answer and the vault write: wait a moment and
/// read again (at most 5 rounds, 20 ms apart). Returns the IdP secret id that worked and
/// whether the fallback was needed.
async fn obtain_token(
    vault: &dyn Vault,
    idp: &dyn IdentityProvider,
    agent_id: &str,
) -> Result<(String, bool), String> {
    let mut errors = Vec::new();
    for round in 0..5 {
        if round > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for (i, stage) in [Stage::Current, Stage::Pending, Stage::Current]
            .into_iter()
            .enumerate()
        {
            let Some((_, value)) = vault
                .get(agent_id, stage)
                .await
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            let c = Credential::from_secret(&value).map_err(|e| e.to_string())?;
            match idp.test_secret(&c.client_id, &c.client_secret).await {
                Ok(()) => return Ok((c.secret_id, round > 0 || i > 0)),
                Err(e) => errors.push(format!("{}: {e}", stage.as_str())),
            }
        }
    }
    Err(errors.join("; "))
}

#[derive(Default)]
struct ClientLog {
    attempts: AtomicU32,
    fallbacks: AtomicU32,
    failures: Mutex<Vec<String>>,
    secrets_used: Mutex<Vec<String>>,
}

/// Runs a rotation step by step while a client obtains tokens in a loop; returns the log.
async fn rotate_under_load(s: &Stack, agent: &statemachines::Agent) -> Arc<ClientLog> {
    let log = Arc::new(ClientLog::default());
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (log, stop) = (log.clone(), stop.clone());
        let vault: Arc<dyn Vault> = s.stack.vault.clone();
        let idp = s.idp();
        let agent_id = agent.id.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                log.attempts.fetch_add(1, Ordering::SeqCst);
                match obtain_token(&*vault, &*idp, &agent_id).await {
                    Ok((secret_id, fallback)) => {
                        if fallback {
                            log.fallbacks.fetch_add(1, Ordering::SeqCst);
                        }
                        let mut used = log.secrets_used.lock().unwrap();
                        if used.last() != Some(&secret_id) {
                            used.push(secret_id);
                        }
                    }
                    Err(e) => log.failures.lock().unwrap().push(e),
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let engine = &s.stack.engine;
    s.clock.advance(Duration::minutes(1));
    let started = engine
        .request_rotation(
            &agent.name,
            RotationReason::OnDemand { by: OWNER.into() },
            Actor::Person(OWNER.into()),
        )
        .await
        .unwrap();
    // One message at a time, with the client running in between every step.
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(30));
    for _ in 0..200 {
        pause().await;
        let n = engine.work_once(1).await.unwrap();
        let state = engine
            .store
            .instance(&started.workflow_id)
            .await
            .unwrap()
            .unwrap();
        if state.state_name == "Grace" && n == 0 {
            break;
        }
    }
    let state = engine
        .store
        .instance(&started.workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.state_name, "Grace", "promoted, in the grace period");
    pause().await;
    // The grace period passes; the old secret is removed.
    s.clock.advance(Duration::hours(2));
    engine.tick().await.unwrap();
    for _ in 0..50 {
        pause().await;
        if engine.work_once(1).await.unwrap() == 0 {
            break;
        }
    }
    pause().await;
    stop.store(true, Ordering::SeqCst);
    client.await.unwrap();
    s.settle().await;
    let state = engine
        .store
        .instance(&started.workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.state_name, "Done", "{:?}", state.state);
    log
}

async fn assert_rotated(s: &Stack, before: &statemachines::Agent, log: &ClientLog) {
    let failures = log.failures.lock().unwrap().clone();
    let attempts = log.attempts.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {attempts} token attempts failed during the rotation: {failures:?}",
        failures.len()
    );
    assert!(
        attempts > 20,
        "the client ran throughout: {attempts} attempts"
    );
    let used = log.secrets_used.lock().unwrap().clone();
    assert_eq!(
        used.len(),
        2,
        "tokens came from the old, then the new secret: {used:?}"
    );

    let after = s
        .stack
        .engine
        .find_agent(&before.name)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(after.secret_version, before.secret_version);
    assert!(after.credential_issued_at > before.credential_issued_at);
    let receipt = after.credentials.last().expect("a rotation receipt");
    assert_eq!(receipt.old.version, before.secret_version);
    assert_eq!(receipt.new.version, after.secret_version);
    assert_eq!(receipt.new.secret_id.as_deref(), Some(used[1].as_str()));
    assert_eq!(receipt.old.secret_id.as_deref(), Some(used[0].as_str()));
    assert!(receipt.old_valid_until.is_some(), "{receipt:?}");
    assert!(receipt.verification.contains("token was obtained"));
    let text = serde_json::to_string(&after).unwrap();
    // Exactly one secret is held now, and it is the new one; the old one is refused.
    let idp = s.idp();
    let client_id = after.client_id.clone().unwrap();
    assert_eq!(
        idp.secret_ids(&client_id).await.unwrap(),
        vec![used[1].clone()]
    );
    let versions = s.stack.vault.versions(&after.id).await.unwrap();
    let previous = versions
        .iter()
        .find(|v| v.stages.contains(&Stage::Previous))
        .expect("the old version is AWSPREVIOUS");
    assert_eq!(Some(&previous.version_id), before.secret_version.as_ref());
    let (_, old_value) = s
        .stack
        .vault
        .get(&after.id, Stage::Previous)
        .await
        .unwrap()
        .unwrap();
    let old = Credential::from_secret(&old_value).unwrap();
    assert!(
        idp.test_secret(&client_id, &old.client_secret)
            .await
            .is_err(),
        "the old secret is revoked"
    );
    assert!(
        !text.contains(old.client_secret.expose()),
        "no secret value in the registry record"
    );
    let (_, current) = s
        .stack
        .vault
        .get(&after.id, Stage::Current)
        .await
        .unwrap()
        .unwrap();
    let current = Credential::from_secret(&current).unwrap();
    idp.test_secret(&client_id, &current.client_secret)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeps_getting_tokens_through_a_rotation_on_the_dev_idp() {
    let scope = "erp:orders:read";
    let s = stack(scope, None);
    let agent = s.onboard("orders-agent-prod", scope).await;
    let log = rotate_under_load(&s, &agent).await;
    assert_rotated(&s, &agent, &log).await;
    // The dev IdP holds two secrets during a rotation: AWSCURRENT always worked.
    assert_eq!(
        log.fallbacks.load(Ordering::SeqCst),
        0,
        "no fallback to AWSPENDING was needed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeps_getting_tokens_through_a_rotation_on_oidc_provider() {
    let scope = "steward:test:read";
    let s = stack(scope, Some(oidc_settings()));
    let name = format!("rotation-{}-agent-prod", rand::random::<u32>());
    let agent = s.onboard(&name, scope).await;
    let log = rotate_under_load(&s, &agent).await;
    assert_rotated(&s, &agent, &log).await;
}

async fn decommissioned_agent_gets_no_token(s: &Stack, name: &str, scope: &str) {
    let agent = s.onboard(name, scope).await;
    let engine = &s.stack.engine;
    let client_id = agent.client_id.clone().unwrap();
    let (_, value) = s
        .stack
        .vault
        .get(&agent.id, Stage::Current)
        .await
        .unwrap()
        .unwrap();
    let credential = Credential::from_secret(&value).unwrap();
    s.idp()
        .test_secret(&client_id, &credential.client_secret)
        .await
        .expect("a token before the decommission");

    // Only the owner, an approver or (owner lost) the manager may ask; the ask is audited.
    let refused = engine
        .request_decommission(name, "mallory@example.com", "cleanup")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("may not decommission"),
        "{refused}"
    );

    let started = engine
        .request_decommission(name, OWNER, "the integration is retired")
        .await
        .unwrap();
    assert_eq!(started.state, "AwaitingApproval");
    s.settle().await;
    let approval = engine
        .store
        .approvals(true)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.request.workflow_id == started.workflow_id)
        .expect("a pending approval");
    assert_eq!(approval.request.action, "decommission");
    engine
        .decide(
            &approval.request.id,
            APPROVER,
            Decision::Approve,
            None,
            None,
        )
        .await
        .unwrap();
    s.settle().await;

    let done = engine
        .store
        .instance(&started.workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state_name, "Decommissioned", "{:?}", done.state);
    // The old credential no longer obtains a token: the client is gone.
    let err = s
        .idp()
        .test_secret(&client_id, &credential.client_secret)
        .await
        .unwrap_err();
    assert!(!err.to_string().contains(credential.client_secret.expose()));
    assert!(
        s.idp().client(&client_id).await.unwrap().is_none(),
        "client deleted"
    );
    // The vault secret is scheduled for deletion: unreadable, recoverable for the window.
    let vault_err = s
        .stack
        .vault
        .get(&agent.id, Stage::Current)
        .await
        .unwrap_err();
    assert!(
        matches!(vault_err, VaultError::ScheduledForDeletion { .. }),
        "{vault_err:?}"
    );

    // The record is archived, never erased, with its receipt and history.
    let archived = engine.find_agent(name).await.unwrap().expect("record kept");
    assert_eq!(archived.status, AgentStatus::Decommissioned);
    let receipt = archived.decommission.as_ref().expect("revocation receipt");
    assert_eq!(receipt.approved_by, vec![APPROVER.to_string()]);
    assert_eq!(receipt.client_id.as_deref(), Some(client_id.as_str()));
    let actions: Vec<(&str, bool)> = receipt
        .steps
        .iter()
        .map(|st| (st.action.as_str(), st.done))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("revoke tokens", true),
            ("deactivate client", true),
            ("delete client", true),
            ("schedule secret deletion", true)
        ],
        "{receipt:?}"
    );
    let disabled = receipt.steps[1].at;
    assert_eq!(
        receipt.no_token_valid_after,
        Some(disabled + Duration::seconds(300)),
        "revocation time + token lifetime"
    );
    let deleted_after = receipt.secret_deleted_after.expect("deletion date");
    assert!(
        deleted_after > Utc::now() + Duration::days(29),
        "{deleted_after}"
    );
    let history = engine.store.history(&started.workflow_id).await.unwrap();
    assert!(history.len() >= 6, "{history:?}");
    let instances = engine.store.instances_for_agent(&agent.id).await.unwrap();
    assert!(
        instances.iter().any(|i| i.kind == "onboarding"),
        "onboarding history kept"
    );
    // A second request is refused: it is decommissioned already.
    let again = engine
        .request_decommission(name, OWNER, "again")
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("decommissioned already"),
        "{again}"
    );
    // Its name may be used again by a new agent.
    let trail = engine.store.audit(0, 10_000).await.unwrap();
    assert!(
        trail
            .iter()
            .any(|r| r.record.body["unmapped"]["steward_event"] == "decommissioned"),
        "audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_agent_cannot_obtain_a_token_on_the_dev_idp() {
    let scope = "erp:orders:read";
    let s = stack(scope, None);
    decommissioned_agent_gets_no_token(&s, "orders-agent-prod", scope).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_agent_cannot_obtain_a_token_on_oidc_provider() {
    let scope = "steward:test:read";
    let s = stack(scope, Some(oidc_settings()));
    let name = format!("decom-{}-agent-prod", rand::random::<u32>());
    decommissioned_agent_gets_no_token(&s, &name, scope).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommission_cancels_a_running_rotation() {
    let scope = "erp:orders:read";
    let s = stack(scope, None);
    let agent = s.onboard("orders-agent-prod", scope).await;
    let engine = &s.stack.engine;
    let rotation = engine
        .request_rotation(
            &agent.name,
            RotationReason::OnDemand { by: OWNER.into() },
            Actor::Person(OWNER.into()),
        )
        .await
        .unwrap();
    // A second rotation while one runs is refused.
    let twice = engine
        .request_rotation(
            &agent.name,
            RotationReason::Detection {
                rule: "credential-sharing".into(),
            },
            Actor::System,
        )
        .await
        .unwrap_err();
    assert!(twice.to_string().contains("already running"), "{twice}");
    // Run the rotation until it waits in its grace period.
    s.settle().await;
    assert_eq!(
        engine
            .store
            .instance(&rotation.workflow_id)
            .await
            .unwrap()
            .unwrap()
            .state_name,
        "Grace"
    );
    let started = engine
        .decommission(
            agent.clone(),
            statemachines::decommission::DecommissionReason::Freeze {
                decided_by: APPROVER.into(),
            },
            Actor::Person(APPROVER.into()),
        )
        .await
        .unwrap();
    s.settle().await;
    s.clock.advance(Duration::hours(2));
    s.settle().await;
    let r = engine
        .store
        .instance(&rotation.workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.state_name, "Cancelled",
        "the decommission wins: {:?}",
        r.state
    );
    let d = engine
        .store
        .instance(&started.workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.state_name, "Decommissioned");
    let archived = engine.find_agent(&agent.name).await.unwrap().unwrap();
    assert_eq!(archived.status, AgentStatus::Decommissioned);
    // The promoted secret is recorded; the rotation never removed anything after the cancel.
    assert_eq!(archived.credentials.len(), 1);
    assert!(archived.credentials[0].old_valid_until.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_rotates_secrets_past_their_age_spread_over_the_window() {
    let scope = "erp:orders:read";
    let s = stack(scope, None);
    let engine = &s.stack.engine;
    let old = s.onboard("orders-agent-prod", scope).await;
    s.clock.advance(Duration::days(60));
    let young = s.onboard("stock-agent-prod", scope).await;
    s.clock.advance(Duration::days(31));

    // 91 days old: due; 31 days old: not (and not even read: the credential index stops at
    // the shortest maximum age).
    let report = engine.sweep().await.unwrap();
    assert_eq!(
        (report.agents, report.due, report.started),
        (1, 1, 1),
        "{report:?}"
    );
    // A second sweep the same day starts nothing new.
    let again = engine.sweep().await.unwrap();
    assert_eq!(
        (again.due, again.started, again.running),
        (1, 0, 1),
        "{again:?}"
    );
    let rotation = engine
        .store
        .instances_for_agent(&old.id)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.kind == "rotation")
        .expect("a rotation workflow");
    assert!(
        ["Scheduled", "Issuing"].contains(&rotation.state_name.as_str()),
        "{}",
        rotation.state_name
    );
    // Its slot comes within the window; then the grace period passes.
    s.clock.advance(Duration::hours(7));
    s.settle().await;
    s.clock.advance(Duration::hours(2));
    s.settle().await;
    let done = engine.store.instance(&rotation.id).await.unwrap().unwrap();
    assert_eq!(done.state_name, "Done", "{:?}", done.state);
    let rotated = engine.find_agent(&old.name).await.unwrap().unwrap();
    assert_ne!(rotated.secret_version, old.secret_version);
    assert!(
        rotated.credentials[0].reason.contains("scheduled"),
        "{:?}",
        rotated.credentials
    );
    let untouched = engine.find_agent(&young.name).await.unwrap().unwrap();
    assert_eq!(untouched.secret_version, young.secret_version);
    assert!(untouched.credentials.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_bound_agent_is_reminded_renewed_once_and_then_decommissioned() {
    let scope = "erp:orders:read";
    let s = stack(scope, None);
    let engine = &s.stack.engine;
    let expires_on = (s.clock.now() + Duration::days(30)).date_naive();
    let req = AgentRequest {
        credential: Default::default(),
        public_key: None,
        key_custody: Default::default(),
        csr: None,
        name: "quarter-close-agent-prod".into(),
        owner: OWNER.into(),
        team: "finance".into(),
        environment: "prod".into(),
        purpose: "quarter close".into(),
        scopes: vec![scope.into()],
        token_lifetime_secs: Some(300),
        expires_on: Some(expires_on),
    };
    engine.request_agent(req, OWNER).await.unwrap();
    s.settle().await;
    let report = engine.sweep().await.unwrap();
    assert_eq!(report.expiries_started, 1, "{report:?}");
    s.settle().await;
    let notices = |s: &Stack| s.stack.console.notices().unwrap();
    let reminders = |s: &Stack| {
        notices(s)
            .iter()
            .filter(|n| n.subject.contains("expires on"))
            .count()
    };
    assert_eq!(
        reminders(&s),
        0,
        "not yet: the reminder comes 14 days before"
    );

    // 14 days before the deadline the owner is reminded.
    s.clock.advance(Duration::days(17));
    s.settle().await;
    assert_eq!(reminders(&s), 1, "{:?}", notices(&s));

    // A renewal is an approval; an outsider cannot ask for one.
    let until = expires_on + chrono::Days::new(60);
    let refused = engine
        .request_renewal(
            "quarter-close-agent-prod",
            until,
            "mallory@example.com",
            "mine",
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("neither the owner"),
        "{refused}"
    );
    let too_early = engine
        .request_renewal("quarter-close-agent-prod", expires_on, OWNER, "same date")
        .await
        .unwrap_err();
    assert!(too_early.to_string().contains("later"), "{too_early}");
    s.settle().await;
    assert!(
        engine.store.approvals(true).await.unwrap().is_empty(),
        "an outsider's renewal opens no approval"
    );
    engine
        .request_renewal(
            "quarter-close-agent-prod",
            until,
            OWNER,
            "the close slipped",
        )
        .await
        .unwrap();
    s.settle().await;
    let approval = engine
        .store
        .approvals(true)
        .await
        .unwrap()
        .pop()
        .expect("renewal approval");
    assert_eq!(approval.request.action, "renew");
    engine
        .decide(
            &approval.request.id,
            APPROVER,
            Decision::Approve,
            None,
            None,
        )
        .await
        .unwrap();
    s.settle().await;
    let renewed = engine
        .find_agent("quarter-close-agent-prod")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.expires_on, Some(until));

    // The old date passes: nothing happens.
    s.clock.advance(Duration::days(20));
    s.settle().await;
    assert_eq!(
        engine
            .find_agent("quarter-close-agent-prod")
            .await
            .unwrap()
            .unwrap()
            .status,
        AgentStatus::Active
    );
    // No second renewal: after the new date the agent is decommissioned, without an approval
    // (its expiry date was approved; the owner was reminded).
    s.clock.advance(Duration::days(60));
    s.settle().await;
    assert!(reminders(&s) >= 2, "reminded of the new date too");
    let ended = engine
        .find_agent("quarter-close-agent-prod")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status, AgentStatus::Decommissioned, "{ended:?}");
    let receipt = ended.decommission.expect("receipt");
    assert!(receipt.reason.contains("expiry date"), "{}", receipt.reason);
    assert!(receipt.no_token_valid_after.is_some());
}
