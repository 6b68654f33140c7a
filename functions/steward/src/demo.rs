//! `steward demo`: the seeds' story, end to end over real HTTP, in a temporary directory.
//! Alice, Sam and Priya sign in at the dev IdP (device codes entered with passwords the demo sets
//! for them); the automation token cannot decide anything. Alice asks for a Datadog remediation
//! agent with a sensitive scope; she cannot approve her own request; security approves; Steward provisions a dedicated client; the agent fetches a real
//! signed token; its request for a banking scope freezes it at once and two security approvers
//! unfreeze it; a request for an excluded scope is refused; the audit trail shows it all.

use crate::cli::{Api, json_of};
use crate::server;
use anyhow::{Context, bail};
use serde_json::{Value, json};
use shared::admin::{AgentRequestBody, DecisionBody, RotateBody, ScopeChangeBody};
use shared::idp::dev::{KEYS_PATH, TOKEN_PATH};
use shared::ports::Vault;
use shared::ports::vault::Stage;
use std::time::{Duration, Instant};

const POLICY: &str = include_str!("../../../policy.example.toml");
const PEOPLE: &str = include_str!("../../../people.example.toml");
const AGENT: &str = "datadog-remediation-agent-prod";

struct Timeline(Instant);

impl Timeline {
    fn say(&self, who: &str, what: impl AsRef<str>) {
        println!(
            "[{:>6.3}s] {:<26} {}",
            self.0.elapsed().as_secs_f64(),
            who,
            what.as_ref()
        );
    }
}

pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("policy.toml"), POLICY)?;
    std::fs::write(dir.path().join("people.toml"), PEOPLE)?;
    let policy = shared::policy_file::parse(POLICY, "policy.example.toml")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = server::bound(listener.local_addr()?);
    let data_dir = dir.path().join("data");
    let stack =
        shared::wiring::embedded::Embedded::open(shared::wiring::embedded::EmbeddedConfig {
            data_dir: data_dir.clone(),
            policy,
            people: dir.path().join("people.toml"),
            issuer: base.clone(),
            durability: shared::embedded::Durability::Fsync,
            engine: shared::EngineConfig::default(),
            slack: None,
            okta: None,
            okta_hook_secret: None,
            oauth: None,
            ssf: None,
            okta_directory: false,
            people_issuer: None,
        })?;
    let vault = stack.vault.clone();
    let token = server::admin_token(&data_dir)?;
    // The demo's people, each with a password only this run knows.
    let mut passwords = Vec::new();
    for person in PEOPLE_IN_STORY {
        let password = crate::people::generated_password();
        stack
            .idp
            .set_password(person, &password, chrono::Utc::now())?;
        passwords.push((person, password));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        stack,
        listener,
        server::Intervals {
            tick: Duration::from_millis(200),
            okta_log: Duration::from_secs(60),
            sweep: Duration::from_secs(3600),
        },
        server::TrustedProxies::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let t = Timeline(Instant::now());
    println!(
        "Steward demo — embedded default (SQLite, file vault, dev IdP) at {base}, data in {}\n",
        data_dir.display()
    );
    let automation = Api::new(&base, &token)?;
    let result = async {
        let mut people = Vec::new();
        for (person, password) in &passwords {
            let (user_code, token) = sign_in(&base, person, password).await?;
            t.say(
                person,
                format!("signs in at the dev IdP: enters device code {user_code} with their password → a 1-hour EdDSA token"),
            );
            people.push(Api::new(&base, &token)?);
        }
        let [alice, sam, priya] = <[Api; 3]>::try_from(people)
            .map_err(|_| anyhow::anyhow!("three people sign in"))?;
        story(&t, &Cast { automation, alice, sam, priya }, &base, &vault).await
    }
    .await;
    let _ = stop.send(());
    let _ = server.await;
    result
}

/// Who calls: the automation token (CI) and each person, signed in as themselves.
struct Cast {
    automation: Api,
    alice: Api,
    sam: Api,
    priya: Api,
}

const PEOPLE_IN_STORY: [&str; 3] = [
    "alice@example.com",
    "sam.security@example.com",
    "priya.secops@example.com",
];

/// The device authorization grant as a person does it: the CLI's request, the person entering
/// the code with their password on the verification page, the CLI's poll.
async fn sign_in(
    base: &str,
    person: &str,
    password: &shared::Secret,
) -> anyhow::Result<(String, String)> {
    use shared::idp::dev::people::{DEVICE_AUTHORIZATION_PATH, DEVICE_CODE_GRANT};
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let device: Value = http
        .post(format!("{base}{DEVICE_AUTHORIZATION_PATH}"))
        .form(&[("client_id", "steward-cli"), ("scope", "openid email")])
        .send()
        .await?
        .json()
        .await?;
    let user_code = device["user_code"].as_str().context("user_code")?;
    let entered = http
        .post(
            device["verification_uri"]
                .as_str()
                .context("verification_uri")?,
        )
        .form(&[
            ("user_code", user_code),
            ("email", person),
            ("password", password.expose()),
        ])
        .send()
        .await?;
    if !entered.status().is_success() {
        bail!("{person} could not enter the code: {}", entered.status());
    }
    let token: Value = http
        .post(format!("{base}{TOKEN_PATH}"))
        .form(&[
            ("grant_type", DEVICE_CODE_GRANT),
            ("client_id", "steward-cli"),
            (
                "device_code",
                device["device_code"].as_str().context("device_code")?,
            ),
        ])
        .send()
        .await?
        .json()
        .await?;
    let access = token["access_token"]
        .as_str()
        .with_context(|| format!("no token for {person}: {token}"))?;
    Ok((user_code.to_string(), access.to_string()))
}

async fn story(
    t: &Timeline,
    cast: &Cast,
    base: &str,
    vault: &shared::embedded::vault::FileVault,
) -> anyhow::Result<()> {
    // 1. The request
    let request = AgentRequestBody {
        request: serde_json::from_value(json!({
            "name": AGENT, "owner": "alice@example.com", "team": "sre", "environment": "prod",
            "purpose": "Mutes flapping monitors and opens incidents during on-call",
            "scopes": ["datadog:metrics:read", "datadog:monitors:write"], "token_lifetime_secs": 900,
        }))?,
        public_jwk: None,
        key_proof: None,
    };
    let api = &cast.alice;
    t.say("alice@example.com", format!("requests {AGENT}: datadog:metrics:read + datadog:monitors:write (sensitive), 15-minute tokens"));
    let started = json_of(api.request_agent(&request).await)?;
    t.say(
        "steward",
        format!(
            "policy checks pass; workflow {} is {}",
            started["workflow_id"].as_str().unwrap_or("?"),
            started["state"].as_str().unwrap_or("?")
        ),
    );
    let again = json_of(api.request_agent(&request).await)?;
    t.say(
        "alice@example.com",
        format!(
            "sends the same request again → duplicate={} (nothing new started)",
            again["duplicate"]
        ),
    );

    // 2. The approval
    let approvals = wait_for(
        || async {
            Ok(json_of(api.approvals(false).await)?
                .as_array()
                .cloned()
                .unwrap_or_default())
        },
        |a: &Vec<Value>| !a.is_empty(),
    )
    .await?;
    let approval = &approvals[0]["request"];
    let approval_id = approval["id"].as_str().context("approval id")?.to_string();
    t.say(
        "steward",
        format!(
            "asks {} to approve {approval_id} (expires {})",
            approval["approvers"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "))
                .unwrap_or_default(),
            approval["expires_at"].as_str().unwrap_or("")
        ),
    );
    let decision = |reason: Option<&str>| DecisionBody {
        reason: reason.map(str::to_string),
        action_hash: None,
    };
    let Err(refused) = cast.automation.approve(&approval_id, &decision(None)).await else {
        bail!("the automation token approved a request");
    };
    t.say(
        "automation token",
        format!(
            "tries to approve → refused: {}",
            refused.to_string().replace('\n', " ")
        ),
    );
    let Err(refused) = cast.alice.approve(&approval_id, &decision(None)).await else {
        bail!("the requester approved her own request");
    };
    t.say(
        "alice@example.com",
        format!(
            "tries to approve her own request → refused: {}",
            refused.to_string().replace('\n', " ")
        ),
    );
    cast.sam
        .approve(
            &approval_id,
            &decision(Some("remediation needs monitor writes")),
        )
        .await?;
    t.say(
        "sam.security@example.com",
        format!("approves {approval_id}"),
    );

    // 3. Provisioning
    let agent = wait_for(
        || async { json_of(api.agent(AGENT).await) },
        |v: &Value| v["agent"]["status"] == "active",
    )
    .await?;
    let a = &agent["agent"];
    let client_id = a["client_id"].as_str().context("client id")?.to_string();
    t.say(
        "steward",
        format!(
            "provisioned dedicated client {client_id}; secret {} stored in the vault (AWSCURRENT)",
            a["secret_version"].as_str().unwrap_or("?")
        ),
    );

    // 4. A real token
    let (_, stored) = vault
        .get(a["id"].as_str().context("agent id")?, Stage::Current)
        .await?
        .context("secret in vault")?;
    let secret = shared::credential::Credential::from_secret(&stored)?.client_secret;
    shared::tls::install_crypto_provider();
    // The demo's own calls to the local server get a deadline like every other call.
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let resp = http
        .post(format!("{base}{TOKEN_PATH}"))
        .basic_auth(&client_id, Some(secret.expose()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "datadog:metrics:read datadog:monitors:write"),
        ])
        .send()
        .await?;
    let status = resp.status();
    let tok: Value = resp.json().await?;
    if !status.is_success() {
        bail!("token request failed: {tok}");
    }
    let jwks: Value = http
        .get(format!("{base}{KEYS_PATH}"))
        .send()
        .await?
        .json()
        .await?;
    let claims = verify(
        tok["access_token"].as_str().context("access_token")?,
        &jwks,
        base,
    )?;
    t.say(
        AGENT,
        format!(
            "client_credentials → EdDSA-signed JWT verified with the JWKS: sub={} scp={} lifetime={}s",
            claims["sub"].as_str().unwrap_or(""),
            claims["scope"].as_str().unwrap_or(""),
            claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0)
        ),
    );
    let resp = http
        .post(format!("{base}{TOKEN_PATH}"))
        .basic_auth(&client_id, Some(secret.expose()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "banking:payments:write"),
        ])
        .send()
        .await?;
    let refused: Value = resp.json().await?;
    t.say(
        AGENT,
        format!(
            "asks for a token with banking:payments:write → {}: {}",
            refused["error"].as_str().unwrap_or(""),
            refused["error_description"].as_str().unwrap_or("")
        ),
    );

    // 4b. The kill switch: a scope outside its grant is CRITICAL. It is contained before anyone
    // is asked, then two security approvers unfreeze it with exactly its previous grants.
    wait_for(
        || async { json_of(api.agent(AGENT).await) },
        |v: &Value| v["agent"]["status"] == "frozen",
    )
    .await?;
    let pending = wait_for(
        || async { json_of(api.approvals(false).await) },
        |v: &Value| {
            v.as_array()
                .into_iter()
                .flatten()
                .any(|a| a["request"]["action"] == "unfreeze")
        },
    )
    .await?;
    let decision_id = pending
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["request"]["action"] == "unfreeze")
        .and_then(|a| a["request"]["id"].as_str())
        .context("the unfreeze decision")?
        .to_string();
    let audit = cast.automation.audit().await?;
    let contained = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["message"].as_str().map(str::to_string))
        .find(|m| m.contains("contained:"))
        .unwrap_or_default();
    t.say(
        "steward",
        format!("CRITICAL scope-outside-grant → frozen first; {contained}"),
    );
    t.say(
        "steward",
        format!(
            "asks security to decide {decision_id}: Unfreeze (two approvers after CRITICAL) or Decommission"
        ),
    );
    for (approver, person) in [
        ("sam.security@example.com", &cast.sam),
        ("priya.secops@example.com", &cast.priya),
    ] {
        person
            .approve(
                &decision_id,
                &decision(Some("the dependency was pinned back after review")),
            )
            .await?;
        t.say(approver, format!("approves unfreezing ({decision_id})"));
    }
    let unfrozen = wait_for(
        || async { json_of(api.agent(AGENT).await) },
        |v: &Value| v["agent"]["status"] == "active",
    )
    .await?;
    t.say(
        "steward",
        format!(
            "unfrozen: client active again with exactly its previous grants ({})",
            unfrozen["agent"]["scopes"]
                .as_array()
                .map(|s| s
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        ),
    );

    // 5. An excluded scope
    let change = ScopeChangeBody {
        request: statemachines::scope_change::ScopeChangeRequest {
            add: vec!["okta:users:manage".into()],
            remove: vec![],
            token_lifetime_secs: None,
            reason: "auto-remediate locked accounts".into(),
        },
    };
    let refused = match api.change_scopes(AGENT, &change).await {
        Err(e) if e.status() == Some(422) => e,
        other => bail!("the excluded scope was not refused: {other:?}"),
    };
    t.say(
        "alice@example.com",
        format!(
            "asks to add okta:users:manage → {}",
            refused.to_string().replace('\n', " ")
        ),
    );

    // 6. Rotation with no gap: the old secret keeps working through the grace period
    let before = a["secret_version"].as_str().unwrap_or("").to_string();
    let started = json_of(api.rotate(AGENT, &RotateBody {}).await)?;
    let rotated = wait_for(
        || async { json_of(api.agent(AGENT).await) },
        |v: &Value| {
            v["agent"]["secret_version"]
                .as_str()
                .is_some_and(|s| s != before)
        },
    )
    .await?;
    let receipt = &rotated["agent"]["credentials"][0];
    let token_with = |secret: shared::Secret| {
        let (http, client_id) = (http.clone(), client_id.clone());
        async move {
            http.post(format!("{base}{TOKEN_PATH}"))
                .basic_auth(&client_id, Some(secret.expose()))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        }
    };
    let (_, current) = vault
        .get(a["id"].as_str().context("agent id")?, Stage::Current)
        .await?
        .context("rotated secret in vault")?;
    let new_secret = shared::credential::Credential::from_secret(&current)?.client_secret;
    let (new_ok, old_ok) = (token_with(new_secret).await, token_with(secret).await);
    if !new_ok || !old_ok {
        bail!(
            "after the rotation the new secret works: {new_ok}, the old one (grace) works: {old_ok}"
        );
    }
    t.say(
        "steward",
        format!(
            "rotation {}: secret {} → {} (verified with a real token before promotion); both work until the grace period ends, then {} is removed",
            started["workflow_id"].as_str().unwrap_or("?"),
            receipt["old"]["secret_id"].as_str().unwrap_or("?"),
            receipt["new"]["secret_id"].as_str().unwrap_or("?"),
            receipt["old"]["secret_id"].as_str().unwrap_or("?")
        ),
    );

    // 6b. A key-bound agent beside the secret one: it holds its own key pair, Steward and the
    // IdP keep only the public half, and its tokens are bound to the key (DPoP).
    key_bound(t, api, &http, base, &jwks, vault).await?;

    // 7. The trail
    let history = json_of(api.agent_history(AGENT).await)?;
    let steps: Vec<String> = history
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["entry"]["rejected"].is_null() && e["entry"]["from"] != e["entry"]["to"])
        .map(|e| e["entry"]["to"].as_str().unwrap_or("").to_string())
        .collect();
    t.say(
        "steward",
        format!("workflow history: start → {}", steps.join(" → ")),
    );
    let audit = cast.automation.audit().await?;
    let lines: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    t.say(
        "steward",
        format!("audit trail: {} OCSF records, hash-chained:", lines.len()),
    );
    for l in &lines {
        println!(
            "           {:<9} {:<40} {}",
            l["status"].as_str().unwrap_or(""),
            l["type_name"].as_str().unwrap_or(""),
            l["message"].as_str().unwrap_or("")
        );
    }
    println!(
        "\nDone: {AGENT} is active with a dedicated least-privilege client, obtained a real token, was frozen the moment it asked for a scope outside its grant and unfrozen by two approvers, the excluded scope was refused, and its secret was rotated without a gap. Beside it, ledger-reader-agent-prod holds its own key: Steward keeps no secret for it, and its DPoP-bound token is useless without that key."
    );
    Ok(())
}

/// The agent that holds its own key: onboarded with a proof of possession, a DPoP-bound token
/// from a client assertion, and a copy of that token refused without the key's proof.
async fn key_bound(
    t: &Timeline,
    api: &Api,
    http: &reqwest::Client,
    base: &str,
    jwks: &Value,
    vault: &shared::embedded::vault::FileVault,
) -> anyhow::Result<()> {
    use shared::agent_key::AgentKeyPair;
    use shared::idp::dev::INTROSPECT_PATH;
    const KEYED: &str = "ledger-reader-agent-prod";
    let pair = AgentKeyPair::generate()?;
    let nonce = api.key_nonce().await?.nonce;
    let request = AgentRequestBody {
        request: serde_json::from_value(json!({
            "name": KEYED, "owner": "alice@example.com", "team": "finance", "environment": "prod",
            "purpose": "Reads orders to reconcile the ledger", "scopes": ["erp:orders:read"],
            "credential": "private_key_jwt",
        }))?,
        public_jwk: Some(pair.public_jwk()),
        key_proof: Some(pair.key_proof(KEYED, &nonce, chrono::Utc::now())),
    };
    t.say(
        "alice@example.com",
        format!(
            "requests {KEYED} with credential private_key_jwt: sends its public key {} and a proof signed over Steward's nonce; the private key stays with the agent",
            pair.public().kid
        ),
    );
    json_of(api.request_agent(&request).await)?;
    let agent = wait_for(
        || async { json_of(api.agent(KEYED).await) },
        |v: &Value| v["agent"]["status"] == "active",
    )
    .await?;
    let agent = &agent["agent"];
    let client_id = agent["client_id"]
        .as_str()
        .context("client_id")?
        .to_string();
    let vaulted = vault
        .get(agent["id"].as_str().context("agent id")?, Stage::Current)
        .await?;
    t.say(
        "steward",
        format!(
            "provisioned client {client_id} authenticating with key {} only; the vault holds {} for it",
            agent["keys"][0]["kid"].as_str().unwrap_or("?"),
            if vaulted.is_none() { "nothing" } else { "a value (unexpected)" }
        ),
    );
    let token_url = format!("{base}{TOKEN_PATH}");
    let now = chrono::Utc::now();
    let resp = http
        .post(&token_url)
        .header("DPoP", pair.dpop_proof("POST", &token_url, None, now))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            (
                "client_assertion_type",
                shared::agent_key::CLIENT_ASSERTION_TYPE,
            ),
            (
                "client_assertion",
                pair.client_assertion(&client_id, &token_url, now).as_str(),
            ),
        ])
        .send()
        .await?;
    let status = resp.status();
    let tok: Value = resp.json().await?;
    if !status.is_success() {
        bail!("the key-bound agent's token request failed: {tok}");
    }
    let token = tok["access_token"].as_str().context("access_token")?;
    let claims = verify(token, jwks, base)?;
    t.say(
        KEYED,
        format!(
            "client assertion + DPoP proof → {} token bound to its key (cnf.jkt={})",
            tok["token_type"].as_str().unwrap_or("?"),
            claims["cnf"]["jkt"].as_str().unwrap_or("?")
        ),
    );
    let introspect_url = format!("{base}{INTROSPECT_PATH}");
    let copied: Value = http
        .post(&introspect_url)
        .form(&[("token", token)])
        .send()
        .await?
        .json()
        .await?;
    t.say(
        "attacker",
        format!(
            "presents a copy of that token without the key → active={}: {}",
            copied["active"],
            copied["reason"].as_str().unwrap_or("")
        ),
    );
    let held: Value = http
        .post(&introspect_url)
        .header(
            "DPoP",
            pair.dpop_proof("POST", &introspect_url, Some(token), chrono::Utc::now()),
        )
        .form(&[("token", token)])
        .send()
        .await?
        .json()
        .await?;
    t.say(
        KEYED,
        format!(
            "presents it with its DPoP proof → active={}",
            held["active"]
        ),
    );
    if copied["active"] != false || held["active"] != true {
        bail!("introspection did not tell the key holder from a copy: {copied} / {held}");
    }
    Ok(())
}

/// Verifies an access token with the server's JWKS (EdDSA; the key its `kid` names, since the
/// JWKS also lists the key before the last rotation), its issuer and audience.
pub fn verify(token: &str, jwks: &Value, issuer: &str) -> anyhow::Result<Value> {
    let keys = shared::jwks::parse_jwks(jwks).map_err(anyhow::Error::msg)?;
    let kid = jsonwebtoken::decode_header(token)?.kid;
    let shared::jwks::Lookup::Found(key) =
        shared::jwks::lookup(&keys, kid.as_deref(), jsonwebtoken::Algorithm::EdDSA)
    else {
        anyhow::bail!("the JWKS has no Ed25519 key with the token's kid");
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[shared::idp::dev::DEFAULT_AUDIENCE]);
    validation.set_issuer(&[issuer]);
    Ok(jsonwebtoken::decode::<Value>(token, &key.key, &validation)?.claims)
}

async fn wait_for<T, F, Fut>(mut fetch: F, done: impl Fn(&T) -> bool) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = fetch().await?;
        if done(&v) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for the workflow to move on");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
