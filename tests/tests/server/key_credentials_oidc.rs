//! Agents that hold their own key (`private_key_jwt`, RFC 7523; ADR 32) with Steward driving a
//! real authorization server: the generic OAuth DCR adapter (ADR 13) pointed at npm
//! `oidc-provider` (started by `tests/run`). Everything goes through Steward's engine: the key
//! enters with a proof of possession over Steward's nonce, onboarding registers a key client
//! with DPoP-bound tokens (RFC 9449) and no secret, the agent gets tokens at oidc-provider's own
//! token endpoint with a client assertion and a DPoP proof, a freeze stops it, and its private
//! key is nowhere Steward writes. A key rotation adds the new key beside the old one; since
//! nothing tells Steward when an outside IdP grants a token with the new key, an unused-looking
//! new key is removed again at the first-use deadline.

use crate::rotation::{Stack, oidc_settings, policy, stack_with};
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::agent_key::{AgentKey, AgentKeyPair};
use shared::ports::vault::Stage;
use shared::ports::{Clock, Vault};
use statemachines::credential::{CredentialKind, KeyStatus, TokenBinding};
use statemachines::{Actor, Agent, AgentRequest, AgentStatus};

const OWNER: &str = "alice@example.com";
const SCOPE: &str = "steward:test:read";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The rotation tests' policy, with DPoP-bound tokens required in prod and a day for a new key's
/// first use.
fn dpop_in_prod() -> String {
    let mut p = policy(SCOPE);
    assert!(!p.contains("[credentials]"), "the base policy sets none");
    p.push_str("\n[credentials]\nbinding = { prod = \"dpop\" }\nfirst_use_secs = 86400\n");
    p
}

fn oidc_stack() -> Stack {
    stack_with(&dpop_in_prod(), Some(oidc_settings()))
}

/// A key whose possession was proved to the engine: a nonce from Steward, a proof signed by
/// `pair` over it, checked by `Engine::accept_agent_key`.
async fn proved_key(s: &Stack, name: &str, pair: &AgentKeyPair) -> AgentKey {
    let engine = &s.stack.engine;
    let (nonce, _) = engine.key_nonce().await.unwrap();
    let proof = pair.key_proof(name, &nonce, s.clock.now());
    let key = engine
        .accept_agent_key(
            name,
            &pair.public_jwk(),
            &proof,
            &Actor::Person(OWNER.into()),
        )
        .await
        .unwrap();
    assert_eq!(&key, pair.public());
    // The proof is good once.
    let again = engine
        .accept_agent_key(
            name,
            &pair.public_jwk(),
            &proof,
            &Actor::Person(OWNER.into()),
        )
        .await
        .unwrap_err();
    assert!(again.to_string().contains("used already"), "{again}");
    key
}

/// Onboards the key-bound prod agent `name` holding `pair` through the engine; the active record.
async fn onboard_keyed(s: &Stack, name: &str, pair: &AgentKeyPair) -> Agent {
    let key = proved_key(s, name, pair).await;
    // Read as a manifest is, so that fields AgentRequest gains later take their defaults.
    let req: AgentRequest = serde_json::from_value(json!({
        "credential": "private_key_jwt",
        "public_key": key,
        "name": name,
        "owner": OWNER,
        "team": "sre",
        "environment": "prod",
        "purpose": "key credentials on oidc-provider",
        "scopes": [SCOPE],
        "token_lifetime_secs": 300,
    }))
    .unwrap();
    assert_eq!(req.credential, CredentialKind::PrivateKeyJwt);
    assert_eq!(req.public_key.as_ref(), Some(pair.public()));
    s.stack.engine.request_agent(req, OWNER).await.unwrap();
    s.settle().await;
    let agent = s.stack.engine.find_agent(name).await.unwrap().unwrap();
    assert_eq!(agent.status, AgentStatus::Active, "{agent:?}");
    agent
}

/// oidc-provider as the agent sees it: its endpoints from discovery, and plain HTTP.
struct Peer {
    http: reqwest::Client,
    token: String,
    introspection: String,
}

impl Peer {
    async fn discover() -> Self {
        let issuer = oidc_settings().issuer().to_string();
        let http = reqwest::Client::new();
        let meta: Value = http
            .get(format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = |k: &str| meta[k].as_str().expect(k).to_string();
        Self {
            token: url("token_endpoint"),
            introspection: url("introspection_endpoint"),
            http,
        }
    }

    /// The client authentication of RFC 7523: an assertion by `pair` for the token endpoint.
    fn assertion(&self, client_id: &str, pair: &AgentKeyPair) -> [(&'static str, String); 3] {
        [
            ("client_id", client_id.to_string()),
            ("client_assertion_type", ASSERTION_TYPE.to_string()),
            (
                "client_assertion",
                pair.client_assertion(client_id, &self.token, Utc::now()),
            ),
        ]
    }

    /// A client_credentials request as the agent makes it: a fresh assertion by `pair`, and a
    /// DPoP proof by `dpop` when given.
    async fn token(
        &self,
        client_id: &str,
        pair: &AgentKeyPair,
        dpop: Option<&AgentKeyPair>,
    ) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("scope", SCOPE.to_string()),
        ];
        form.extend(self.assertion(client_id, pair));
        let mut req = self.http.post(&self.token).form(&form);
        if let Some(k) = dpop {
            req = req.header("DPoP", k.dpop_proof("POST", &self.token, None, Utc::now()));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// RFC 7662 at oidc-provider, which answers a client about its own tokens only: the client
    /// authenticates with an assertion by `pair`.
    async fn introspect(&self, client_id: &str, pair: &AgentKeyPair, token: &str) -> Value {
        let mut form = vec![
            ("token", token.to_string()),
            ("token_type_hint", "access_token".to_string()),
        ];
        form.extend(self.assertion(client_id, pair));
        let resp = self
            .http
            .post(&self.introspection)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.unwrap()
    }
}

/// The vault records the OAuth adapter keeps for `client_id` (ADR 13): its registration record
/// (RFC 7592 URI and token, the keys' public JWKs) and the list of registered clients. Named as
/// the adapter names them: `steward/oauth/<issuer hash>/…`.
async fn adapter_records(s: &Stack, client_id: &str) -> (Value, Value) {
    let hash = |v: &str, n: usize| hex::encode(&Sha256::digest(v.as_bytes())[..n]);
    let prefix = format!("steward/oauth/{}", hash(oidc_settings().issuer(), 6));
    let read = |name: String| async move {
        let (_, value) = s
            .stack
            .vault
            .get(&name, Stage::Current)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the adapter keeps vault record {name}"));
        serde_json::from_str::<Value>(value.expose()).unwrap()
    };
    let record = read(format!("{prefix}/client/{}", hash(client_id, 16))).await;
    assert_eq!(record["client_id"], client_id, "{}", record["client_id"]);
    let index = read(format!("{prefix}/clients")).await;
    (record, index)
}

/// The client's registration as oidc-provider holds it (RFC 7592 read, with the registration
/// access token from the adapter's record).
async fn registration(s: &Stack, client_id: &str) -> Value {
    let (record, _) = adapter_records(s, client_id).await;
    let resp = reqwest::Client::new()
        .get(record["registration_client_uri"].as_str().unwrap())
        .bearer_auth(record["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

/// The thumbprints of the keys registered at oidc-provider, each checked to be public only.
fn registered_kids(reg: &Value) -> Vec<String> {
    reg["jwks"]["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|k| {
                    for m in ["d", "p", "q"] {
                        assert!(k.get(m).is_none(), "a private member was registered: {m}");
                    }
                    shared::agent_key::thumbprint(k).unwrap()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The lines of a PEM between its armour: what would show if the key leaked anywhere.
fn pem_body(pair: &AgentKeyPair) -> Vec<String> {
    let body: Vec<String> = pair
        .pem()
        .expose()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect();
    assert!(!body.is_empty());
    body
}

fn key_status(agent: &Agent, kid: &str) -> Option<KeyStatus> {
    agent
        .keys
        .iter()
        .find(|k| k.key.kid == kid)
        .map(|k| k.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bound_agent_gets_dpop_bound_tokens_from_oidc_provider_until_it_is_frozen() {
    let s = oidc_stack();
    let engine = &s.stack.engine;
    let name = format!("keyed-{}-agent-prod", rand::random::<u32>());
    let pair = AgentKeyPair::generate().unwrap();
    let kid = pair.public().kid.clone();

    // 1. Onboarded through the engine with its proved public key: nothing vaulted for it.
    let agent = onboard_keyed(&s, &name, &pair).await;
    assert_eq!(agent.credential_kind, CredentialKind::PrivateKeyJwt);
    assert_eq!(agent.token_binding, TokenBinding::Dpop);
    assert_eq!(agent.keys.len(), 1, "{:?}", agent.keys);
    assert_eq!(agent.keys[0].key.kid, kid);
    assert_eq!(agent.keys[0].status, KeyStatus::Active);
    assert_eq!(agent.secret_version, None, "nothing in the vault");
    assert!(
        s.stack
            .vault
            .get(&agent.id, Stage::Current)
            .await
            .unwrap()
            .is_none(),
        "no secret under the agent's id"
    );
    let client_id = agent.client_id.clone().expect("a client at oidc-provider");

    // The client oidc-provider registered: private_key_jwt with the agent's JWK, DPoP-bound
    // tokens, no secret.
    let reg = registration(&s, &client_id).await;
    assert_eq!(reg["client_id"], client_id.as_str());
    assert_eq!(
        reg["token_endpoint_auth_method"], "private_key_jwt",
        "{reg}"
    );
    assert_eq!(registered_kids(&reg), vec![kid.clone()], "{reg}");
    assert_eq!(reg["dpop_bound_access_tokens"], true, "{reg}");
    assert!(
        reg.get("client_secret").is_none(),
        "a key client has no secret: {reg}"
    );
    assert_eq!(reg["scope"], SCOPE);
    // The adapter's port says the same.
    let keys = s.idp().keys(&client_id).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].kid.as_str(), keys[0].active), (kid.as_str(), true));
    assert!(s.idp().secret_ids(&client_id).await.unwrap().is_empty());

    // 2. At oidc-provider's token endpoint: an assertion alone gets no token (binding is
    // required); with a DPoP proof by the key, a DPoP-bound token. oidc-provider refuses the
    // first as `invalid_grant` (its detail, "DPoP proof JWT not provided", stays in its log),
    // where the development IdP says `invalid_dpop_proof`.
    let peer = Peer::discover().await;
    let (status, v) = peer.token(&client_id, &pair, None).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    let (status, v) = peer.token(&client_id, &pair, Some(&pair)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "DPoP", "{v}");
    let token = v["access_token"].as_str().unwrap().to_string();
    let answer = peer.introspect(&client_id, &pair, &token).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["client_id"], client_id.as_str(), "{answer}");
    assert_eq!(answer["token_type"], "DPoP", "{answer}");
    assert_eq!(answer["cnf"]["jkt"], kid.as_str(), "{answer}");
    // Another key can neither sign for the client nor have its token bound to itself.
    let other = AgentKeyPair::generate().unwrap();
    let (status, v) = peer.token(&client_id, &other, Some(&other)).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );

    // 3. The kill switch: the client loses its grant, so the key gets no token.
    engine
        .freeze_now(&name, OWNER, "leaked key suspected")
        .await
        .unwrap();
    s.settle().await;
    let frozen = engine.find_agent(&name).await.unwrap().unwrap();
    assert_eq!(frozen.status, AgentStatus::Frozen, "{frozen:?}");
    let (status, v) = peer.token(&client_id, &pair, Some(&pair)).await;
    assert_eq!(status, 400, "a frozen agent got a token: {v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("grant type is not allowed"),
        "{v}"
    );
    assert!(
        !s.idp().client(&client_id).await.unwrap().unwrap().active,
        "deactivated at oidc-provider"
    );
    let reg = registration(&s, &client_id).await;
    assert!(
        !reg["grant_types"]
            .as_array()
            .unwrap()
            .contains(&json!("client_credentials")),
        "{reg}"
    );
    // Its key is still registered (a freeze can be undone), and still only the public half.
    assert_eq!(registered_kids(&reg), vec![kid.clone()], "{reg}");
    // RFC 7009 revokes one token at a time by its value, which Steward never holds: the token
    // issued before the freeze stays active at oidc-provider until it expires, and the freeze
    // says so. (The development IdP answers it inactive at once.)
    let freeze = engine
        .store
        .instances_for_agent(&frozen.id)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.kind == "freeze")
        .expect("a freeze workflow");
    assert_eq!(freeze.state_name, "AwaitingDecision", "{:?}", freeze.state);
    let outstanding = freeze.state["containment"]["outstanding"].as_str().unwrap();
    assert!(
        outstanding.contains("stay valid until they expire (at most 300 s"),
        "{outstanding}"
    );
    let answer = peer.introspect(&client_id, &pair, &token).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["cnf"]["jkt"], kid.as_str(), "{answer}");

    // 4. The private key is nowhere: not in the audit export, the agent record or the
    // adapter's vault records.
    let trail = engine.store.audit(0, 100_000).await.unwrap();
    assert!(!trail.is_empty());
    let export: String = trail.iter().map(shared::audit::export_line).collect();
    let (record, index) = adapter_records(&s, &client_id).await;
    assert_eq!(record["keys"][0]["kid"], kid.as_str(), "{record}");
    assert!(
        index["clients"]
            .as_array()
            .unwrap()
            .contains(&json!(client_id)),
        "{index}"
    );
    let everywhere = format!(
        "{export}\n{}\n{record}\n{index}\n{reg}",
        serde_json::to_string(&frozen).unwrap(),
    );
    assert!(everywhere.contains(&kid), "the public key's id is there");
    for line in pem_body(&pair) {
        assert!(!everywhere.contains(&line), "the private key leaked");
    }
    assert!(!everywhere.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_on_oidc_provider_adds_the_new_key_and_removes_it_unused_at_the_deadline() {
    let s = oidc_stack();
    let engine = &s.stack.engine;
    let name = format!("keyrot-{}-agent-prod", rand::random::<u32>());
    let old = AgentKeyPair::generate().unwrap();
    let agent = onboard_keyed(&s, &name, &old).await;
    let client_id = agent.client_id.clone().unwrap();
    let peer = Peer::discover().await;
    let (status, v) = peer.token(&client_id, &old, Some(&old)).await;
    assert_eq!(status, 200, "{v}");

    // The owner brings a new key with its proof; the rotation adds it beside the old one.
    let new = AgentKeyPair::generate().unwrap();
    let key = proved_key(&s, &name, &new).await;
    let started = engine
        .request_key_rotation(&name, key, OWNER)
        .await
        .unwrap();
    s.settle().await;
    let instance = |id: String| async move { engine.store.instance(&id).await.unwrap().unwrap() };
    let waiting = instance(started.workflow_id.clone()).await;
    assert_eq!(waiting.state_name, "AwaitingUse", "{:?}", waiting.state);
    let reg = registration(&s, &client_id).await;
    assert_eq!(
        registered_kids(&reg),
        vec![old.public().kid.clone(), new.public().kid.clone()],
        "both keys registered at oidc-provider"
    );
    assert_eq!(reg["token_endpoint_auth_method"], "private_key_jwt");
    assert_eq!(reg["dpop_bound_access_tokens"], true, "{reg}");
    let both = engine.find_agent(&name).await.unwrap().unwrap();
    assert_eq!(
        key_status(&both, &old.public().kid),
        Some(KeyStatus::Active)
    );
    assert_eq!(
        key_status(&both, &new.public().kid),
        Some(KeyStatus::Active)
    );

    // Both keys get tokens, each bound to itself.
    for pair in [&old, &new] {
        let (status, v) = peer.token(&client_id, pair, Some(pair)).await;
        assert_eq!(status, 200, "{v}");
        let token = v["access_token"].as_str().unwrap();
        let answer = peer.introspect(&client_id, pair, token).await;
        assert_eq!(answer["cnf"]["jkt"], pair.public().kid.as_str(), "{answer}");
    }
    // Nothing reports that grant to Steward: only the development IdP's token endpoint calls
    // `Engine::key_used`. The rotation still waits for a first use it will never see.
    s.settle().await;
    let still = instance(started.workflow_id.clone()).await;
    assert_eq!(still.state_name, "AwaitingUse", "{:?}", still.state);

    // The first-use deadline passes: the new key, used but never seen used, is removed again;
    // the old key keeps working.
    let deadline: chrono::DateTime<Utc> =
        serde_json::from_value(still.state["deadline"].clone()).expect("a deadline");
    assert_eq!(deadline - s.clock.now(), Duration::days(1));
    s.clock.advance(Duration::hours(23));
    s.settle().await;
    assert_eq!(
        instance(started.workflow_id.clone()).await.state_name,
        "AwaitingUse",
        "not before the deadline"
    );
    s.clock.advance(Duration::hours(1) + Duration::minutes(1));
    s.settle().await;
    let ended = instance(started.workflow_id.clone()).await;
    assert_eq!(ended.state_name, "Failed", "{:?}", ended.state);
    let reason = ended.state["reason"].as_str().unwrap();
    assert!(
        reason.contains("never used") && reason.contains(&new.public().kid),
        "{reason}"
    );
    let reg = registration(&s, &client_id).await;
    assert_eq!(
        registered_kids(&reg),
        vec![old.public().kid.clone()],
        "the new key is gone at oidc-provider"
    );
    let (status, v) = peer.token(&client_id, &new, Some(&new)).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    let (status, v) = peer.token(&client_id, &old, Some(&old)).await;
    assert_eq!(status, 200, "the old key still works: {v}");
    let keys = s.idp().keys(&client_id).await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        vec![old.public().kid.as_str()],
        "the adapter's record forgot the new key"
    );
    let after = engine.find_agent(&name).await.unwrap().unwrap();
    assert_eq!(after.status, AgentStatus::Active);
    assert_eq!(
        key_status(&after, &old.public().kid),
        Some(KeyStatus::Active)
    );
    let trail = engine.store.audit(0, 100_000).await.unwrap();
    let export: String = trail.iter().map(shared::audit::export_line).collect();
    assert!(export.contains("never used"), "the failure is audited");
    for line in pem_body(&old).into_iter().chain(pem_body(&new)) {
        assert!(!export.contains(&line), "a private key leaked");
    }
}
