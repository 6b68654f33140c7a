//! Test harness: runs the real `steward` binary as a separate process in a temporary directory
//! and talks to it over HTTP, as its operators, approvers and agents do.
//!
//! Every test binary includes this module and uses a different subset of it.
#![allow(dead_code)]

pub mod oidc_people;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const POLICY: &str = include_str!("../../../policy.example.toml");
pub const PEOPLE: &str = include_str!("../../../people.example.toml");

pub const ALICE: &str = "alice@example.com";
pub const BOB: &str = "bob@example.com";
pub const SAM: &str = "sam.security@example.com";
pub const PRIYA: &str = "priya.secops@example.com";

/// How long a server gets to answer /health after it was started.
const STARTUP: Duration = Duration::from_secs(15);
/// Default patience for a workflow to move on.
pub const SETTLE: Duration = Duration::from_secs(15);

/// The `steward` binary: `$STEWARD_BIN`, or `<target>/debug/steward` next to this test binary
/// (`<target>/debug/deps/<test>`). Panics (never skips) when it is missing.
pub fn steward_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STEWARD_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "steward binary not found at {} (from STEWARD_BIN)",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join(format!("steward{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "steward binary not found at {}: run `cargo build -p steward` first (the README test command does)",
        bin.display()
    );
    bin
}

/// The `steward-aws` binary: `$STEWARD_AWS_BIN`, or beside the `steward` binary. Panics (never
/// skips) when it is missing.
pub fn steward_aws() -> Command {
    let bin = match std::env::var_os("STEWARD_AWS_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            steward_bin().with_file_name(format!("steward-aws{}", std::env::consts::EXE_SUFFIX))
        }
    };
    assert!(
        bin.is_file(),
        "steward-aws binary not found at {}: run `cargo build -p steward-aws` first (the README test command does)",
        bin.display()
    );
    let mut c = Command::new(bin);
    c.env_remove("STEWARD_TABLE");
    c
}

/// A `steward` command with the environment cleared of anything that would redirect it.
pub fn steward() -> Command {
    let mut c = Command::new(steward_bin());
    for var in [
        "STEWARD_URL",
        "STEWARD_DATA_DIR",
        "STEWARD_TOKEN",
        "STEWARD_POLICY",
        "STEWARD_PEOPLE",
        "STEWARD_LISTEN",
        "STEWARD_DURABILITY",
        "STEWARD_TICK",
        "STEWARD_CRASH_AFTER",
        "STEWARD_VAULT_KEY",
        "STEWARD_OIDC_ISSUER",
        "STEWARD_OIDC_AUDIENCE",
        "STEWARD_OIDC_CLIENT_ID",
    ] {
        c.env_remove(var);
    }
    // No signed-in session of whoever runs the tests: each command sees an empty config dir
    // unless a test gives it its own.
    c.env(
        "STEWARD_CONFIG_DIR",
        std::env::temp_dir().join("steward-tests-no-session"),
    );
    c.env("STEWARD_LOG", "steward=info,shared=info,warn");
    c
}

/// Runs a command to completion and returns its output (stdout, stderr as text).
pub fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("running the steward binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// A port nobody listens on right now (the server binds exactly what it is given).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    l.local_addr().expect("probe address").port()
}

/// How a server is started.
#[derive(Clone)]
pub struct Options {
    pub policy: String,
    pub people: String,
    /// `--tick`, e.g. "200ms".
    pub tick: String,
    pub durability: String,
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            policy: POLICY.to_string(),
            people: PEOPLE.to_string(),
            tick: "200ms".into(),
            durability: "fsync".into(),
            env: vec![],
        }
    }
}

impl Options {
    /// The example policy with a different approval expiry.
    pub fn approval_expiry(mut self, expiry: &str) -> Self {
        assert!(self.policy.contains("expiry = \"72h\""));
        self.policy = self
            .policy
            .replace("expiry = \"72h\"", &format!("expiry = \"{expiry}\""));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A running `steward serve` in its own temporary directory. Killed on drop.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    /// The mTLS listener's base URL (`https://127.0.0.1:<port>`), on a port of its own: the
    /// default (the main port + 1) is the next test's main port as often as not.
    pub mtls: String,
    pub token: String,
    pub data_dir: PathBuf,
    pub policy_path: PathBuf,
    pub people_path: PathBuf,
    log_path: PathBuf,
    starts: u32,
    http: reqwest::blocking::Client,
    /// People's access tokens from the server's dev IdP, by e-mail (the issuer is the server's
    /// URL, so a restart on a new port empties it).
    signed_in: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// People whose password is set.
    passwords: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The people's issuer when it is not the server's dev IdP (the OIDC test peer).
    people_issuer: Option<String>,
    // Last: removed after the child is gone.
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let policy_path = dir.path().join("policy.toml");
        let people_path = dir.path().join("people.toml");
        std::fs::write(&policy_path, &opts.policy).expect("writing the policy");
        std::fs::write(&people_path, &opts.people).expect("writing the people file");
        let mut s = Server {
            child: None,
            base: String::new(),
            mtls: String::new(),
            token: String::new(),
            data_dir: dir.path().join("data"),
            policy_path,
            people_path,
            log_path: PathBuf::new(),
            starts: 0,
            signed_in: Default::default(),
            passwords: Default::default(),
            people_issuer: opts
                .env
                .iter()
                .find(|(k, _)| k == "STEWARD_OIDC_ISSUER")
                .map(|(_, v)| v.clone()),
            http: {
                shared::tls::install_crypto_provider();
                reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("http client")
            },
            dir,
        };
        s.spawn(&opts);
        s
    }

    /// Starts the process (again) on the same data directory, on a fresh port, and waits for
    /// /health. A lost race for the port is retried.
    pub fn spawn(&mut self, opts: &Options) {
        self.launch(opts, true);
    }

    /// Starts the process again without waiting for it to answer: for a restart that may abort
    /// (fault injection) before it is up. Follow with [`Server::wait_exit`].
    pub fn spawn_may_abort(&mut self, opts: &Options) {
        self.launch(opts, false);
    }

    fn launch(&mut self, opts: &Options, wait_healthy: bool) {
        assert!(self.child.is_none(), "the server is already running");
        self.signed_in.lock().unwrap().clear();
        for _ in 0..3 {
            self.starts += 1;
            self.log_path = self.dir.path().join(format!("server-{}.log", self.starts));
            let log = std::fs::File::create(&self.log_path).expect("server log file");
            let port = free_port();
            let mut cmd = steward();
            cmd.arg("serve")
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--policy")
                .arg(&self.policy_path)
                .arg("--people")
                .arg(&self.people_path)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--tick")
                .arg(&opts.tick)
                .arg("--durability")
                .arg(&opts.durability)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log));
            if !opts.env.iter().any(|(k, _)| k == "STEWARD_MTLS_LISTEN") {
                let mtls_port = free_port();
                cmd.arg("--mtls-listen")
                    .arg(format!("127.0.0.1:{mtls_port}"));
                self.mtls = format!("https://127.0.0.1:{mtls_port}");
            }
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("spawning steward serve");
            self.child = Some(child);
            self.base = format!("http://127.0.0.1:{port}");
            if !wait_healthy {
                return;
            }
            let deadline = Instant::now() + STARTUP;
            loop {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok())
                    .flatten()
                {
                    self.child = None;
                    let log = self.log();
                    if log.contains("binding") {
                        break; // someone took the port: try another one
                    }
                    panic!("steward serve exited at start-up ({status}):\n{log}");
                }
                let healthy = self
                    .http
                    .get(format!("{}/health", self.base))
                    .send()
                    .map(|r| r.status().as_u16() == 200)
                    .unwrap_or(false);
                if healthy {
                    self.token = std::fs::read_to_string(self.data_dir.join("admin-token"))
                        .expect("admin token written at first start")
                        .trim()
                        .to_string();
                    return;
                }
                if Instant::now() > deadline {
                    panic!(
                        "steward serve did not answer /health within {STARTUP:?}:\n{}",
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        panic!(
            "could not start steward serve on a free port:\n{}",
            self.log()
        );
    }

    /// Kills the process (SIGKILL: no graceful shutdown) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit on its own; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("the server is running");
        loop {
            if let Some(status) = child.try_wait().expect("polling the server process") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "steward serve did not exit within {timeout:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the current (or last) process wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// Sends a request: (status, JSON body, or the text as a JSON string).
    pub fn send(&self, req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
        let resp = req.send().expect("HTTP request to steward");
        let status = resp.status().as_u16();
        let text = resp.text().expect("response body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// POST a form (the dev IdP's OAuth endpoints): (status, JSON body).
    pub fn send_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        self.send(self.http.post(self.url(path)).form(form))
    }

    /// GET on the admin API (with the bearer token): (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.url(path)).bearer_auth(&self.token))
    }

    /// POST JSON on the admin API (with the bearer token): (status, JSON body).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(&self.token)
                .json(body),
        )
    }

    /// GET that must succeed.
    pub fn get_ok(&self, path: &str) -> Value {
        let (status, v) = self.get(path);
        assert_eq!(status, 200, "GET {path} → {status}: {v}");
        v
    }

    /// The health figures (`status`, `queue_depth`, `dead_letters`, `bad_requests`): the
    /// authenticated `/api/health`, since the public `/health` says only that it answers.
    pub fn health(&self) -> Value {
        self.get_ok("/api/health")
    }

    pub fn agents(&self) -> Vec<Value> {
        array(self.get_ok("/api/agents"))
    }

    /// GET /api/agents/{x}: the `agent` record (panics if absent).
    pub fn agent(&self, name: &str) -> Value {
        self.get_ok(&format!("/api/agents/{name}"))["agent"].clone()
    }

    pub fn approvals(&self, all: bool) -> Vec<Value> {
        array(self.get_ok(if all {
            "/api/approvals?all=true"
        } else {
            "/api/approvals"
        }))
    }

    pub fn idp_clients(&self) -> Vec<Value> {
        array(self.get_ok("/api/idp/clients"))
    }

    pub fn workflow(&self, id: &str) -> Value {
        self.get_ok(&format!("/api/workflows/{id}"))
    }

    /// The audit trail, one OCSF record per NDJSON line.
    pub fn audit(&self) -> Vec<Value> {
        let resp = self
            .http
            .get(self.url("/api/audit"))
            .bearer_auth(&self.token)
            .send()
            .expect("GET /api/audit");
        assert_eq!(resp.status().as_u16(), 200);
        resp.text()
            .expect("audit body")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
            .collect()
    }

    /// Audit records with status Failure (refusals, dead letters), without the API call records
    /// that only say how each call was answered (a refused call has both).
    pub fn audit_failures(&self) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|r| r["status"] == "Failure")
            .filter(|r| r["unmapped"]["steward_event"] != "api_call")
            .collect()
    }

    /// Requests an agent as a signed-in person: the body's `requester` (taken out of the body,
    /// which names nobody), else its owner. (status, body).
    pub fn request_agent(&self, body: &Value) -> (u16, Value) {
        let mut body = body.clone();
        let requester = body
            .as_object_mut()
            .and_then(|b| b.remove("requester"))
            .or_else(|| body.get("owner").cloned())
            .and_then(|r| r.as_str().map(str::to_string))
            .expect("an agent request names its owner");
        self.post_as(&requester, "/api/agents", &body)
    }

    /// Requests an agent that must be accepted (202, not a duplicate).
    pub fn request_ok(&self, body: &Value) -> Value {
        let (status, v) = self.request_agent(body);
        assert_eq!(status, 202, "agent request refused: {v}");
        assert_eq!(v["duplicate"], false, "{v}");
        v
    }

    /// Onboards an agent that needs no approval (Alice's, in dev, reading metrics) and waits
    /// until it is active; returns it.
    pub fn active_dev_agent(&self, name: &str) -> Value {
        self.request_ok(&agent_request(
            name,
            "dev",
            ALICE,
            &["datadog:metrics:read"],
        ));
        self.wait_agent_status(name, "active")
    }

    /// The one pending approval of `workflow_id`.
    pub fn pending_approval(&self, workflow_id: &str) -> Value {
        let found: Vec<Value> = self
            .approvals(false)
            .into_iter()
            .filter(|a| a["request"]["workflow_id"] == workflow_id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one pending approval for {workflow_id}: {found:?}"
        );
        found[0].clone()
    }

    /// `owner` asks to decommission `name`, `approver` approves it, and the agent's record once
    /// it is decommissioned.
    pub fn decommission_approved(&self, name: &str, owner: &str, approver: &str) -> Value {
        let (status, started) = self.post_as(
            owner,
            &format!("/api/agents/{name}/decommission"),
            &serde_json::json!({"reason": "the ledger moved"}),
        );
        assert_eq!(status, 202, "{started}");
        let approval = self.pending_approval(started["workflow_id"].as_str().unwrap());
        let (status, v) = self.decide(
            approval["request"]["id"].as_str().unwrap(),
            "approve",
            approver,
        );
        assert_eq!(status, 202, "{v}");
        self.wait_agent_status(name, "decommissioned")
    }

    /// The approval record with this id (pending or decided).
    pub fn pending_approval_by_id(&self, approval_id: &str) -> Value {
        self.approvals(true)
            .into_iter()
            .find(|a| a["request"]["id"] == approval_id)
            .unwrap_or_else(|| panic!("no approval {approval_id}"))
    }

    /// POST /api/approvals/{id}/approve|deny, by `approver` signed in.
    pub fn decide(&self, approval_id: &str, verb: &str, approver: &str) -> (u16, Value) {
        self.post_as(
            approver,
            &format!("/api/approvals/{approval_id}/{verb}"),
            &json!({"reason": format!("{verb} by {approver} in an e2e test")}),
        )
    }

    /// Waits until the agent's status is `status` and returns the record.
    pub fn wait_agent_status(&self, name: &str, status: &str) -> Value {
        self.wait_agent_status_for(name, status, SETTLE)
    }

    pub fn wait_agent_status_for(&self, name: &str, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, v) = self.get(&format!("/api/agents/{name}"));
            if code == 200 && v["agent"]["status"] == status {
                return v["agent"].clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for agent {name} to become {status}\nlast seen ({code}): {v}\nserver log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls `probe` every 25 ms until it returns Some; after `timeout` panics with `what` and
    /// the server's log.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nserver log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until the workflow's state is `state` and returns the workflow document.
    pub fn wait_workflow_state(&self, id: &str, state: &str) -> Value {
        self.wait(&format!("workflow {id} to reach {state}"), SETTLE, || {
            let v = self.workflow(id);
            (v["workflow"]["state_name"] == state).then_some(v)
        })
    }

    /// Waits until nothing is left in the queue (all messages handled).
    pub fn wait_idle(&self) {
        self.wait("the queue to drain", SETTLE, || {
            (self.health()["queue_depth"] == 0).then_some(())
        })
    }

    /// The current client secret of an agent (version, secret), read from the local vault in
    /// the data directory.
    pub fn vault_secret(&self, agent_id: &str) -> (String, String) {
        self.vault_stage(agent_id, shared::ports::vault::Stage::Current)
            .unwrap_or_else(|| panic!("no current secret for {agent_id} in the vault"))
    }

    pub fn vault_stage(
        &self,
        agent_id: &str,
        stage: shared::ports::vault::Stage,
    ) -> Option<(String, String)> {
        use shared::ports::Vault;
        let vault = shared::embedded::vault::FileVault::open(&self.data_dir.join("vault"))
            .expect("opening the file vault");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime");
        rt.block_on(vault.get(agent_id, stage))
            .expect("reading the vault")
            .map(|(version, stored)| {
                let c = shared::credential::Credential::from_secret(&stored)
                    .expect("the vault holds a credential document");
                (version, c.client_secret.expose().to_string())
            })
    }

    /// POST /oauth2/v1/token with client_secret_basic: (status, body, WWW-Authenticate).
    pub fn token(
        &self,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> (u16, Value, Option<String>) {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let resp = self
            .http
            .post(self.url("/oauth2/v1/token"))
            .basic_auth(client_id, Some(secret))
            .form(&form)
            .send()
            .expect("POST /oauth2/v1/token");
        let status = resp.status().as_u16();
        let www = resp
            .headers()
            .get("www-authenticate")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let v = resp.json().expect("token endpoint answers JSON");
        (status, v, www)
    }

    /// A token that must be issued; returns the verified claims and the response.
    pub fn token_ok(&self, client_id: &str, secret: &str, scope: Option<&str>) -> (Value, Value) {
        let (status, v, _) = self.token(client_id, secret, scope);
        assert_eq!(status, 200, "token refused: {v}");
        assert_eq!(v["token_type"], "Bearer", "{v}");
        let claims = self
            .verify(v["access_token"].as_str().expect("access_token"))
            .expect("the access token verifies with the JWKS");
        (claims, v)
    }

    pub fn jwks(&self) -> Value {
        let (status, v) = self.send(self.http.get(self.url("/oauth2/v1/keys")));
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Verifies an access token's EdDSA signature with the server's JWKS, its issuer (the base
    /// URL) and audience; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Value, jsonwebtoken::errors::Error> {
        let jwks = self.jwks();
        // The key the token's kid names: the JWKS lists the previous key too after a rotation.
        let keys = shared::jwks::parse_jwks(&jwks).expect("the server's JWKS");
        let kid = jsonwebtoken::decode_header(token)?.kid;
        let shared::jwks::Lookup::Found(key) =
            shared::jwks::lookup(&keys, kid.as_deref(), jsonwebtoken::Algorithm::EdDSA)
        else {
            panic!("no Ed25519 key with the token's kid {kid:?} in the JWKS {jwks}");
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.set_audience(&["api://steward-agents"]);
        validation.set_issuer(&[self.base.as_str()]);
        jsonwebtoken::decode::<Value>(token, &key.key, &validation).map(|d| d.claims)
    }

    /// A CLI command (`args` are the subcommand and its arguments) pointed at this server.
    pub fn cli<I, A>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = A>,
        A: AsRef<std::ffi::OsStr>,
    {
        let mut c = steward();
        c.args(args)
            .arg("--url")
            .arg(&self.base)
            .arg("--data-dir")
            .arg(&self.data_dir);
        c
    }

    /// A CLI command run by `person`, signed in at the server's dev IdP.
    pub fn cli_as<I, A>(&self, person: &str, args: I) -> Command
    where
        I: IntoIterator<Item = A>,
        A: AsRef<std::ffi::OsStr>,
    {
        let mut c = self.cli(args);
        c.env("STEWARD_TOKEN", self.person_token(person));
        c
    }

    /// The password a person of the test people file signs in with.
    pub fn password_of(person: &str) -> String {
        format!("test password of {person}")
    }

    /// Sets `person`'s password at the dev IdP (`steward people password`), once.
    pub fn set_password(&self, person: &str) {
        if self.passwords.lock().unwrap().contains(person) {
            return;
        }
        let mut child = self
            .cli_plain(["people", "password", person])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("steward people password");
        use std::io::Write as _;
        writeln!(
            child.stdin.take().expect("stdin"),
            "{}",
            Self::password_of(person)
        )
        .expect("writing the password");
        let out = child.wait_with_output().expect("steward people password");
        assert!(
            out.status.success(),
            "setting {person}'s password failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.passwords.lock().unwrap().insert(person.to_string());
    }

    /// `steward <args> --data-dir <data> --people <people file>` (commands that do not call the
    /// server).
    fn cli_plain<const N: usize>(&self, args: [&str; N]) -> Command {
        let mut c = steward();
        c.args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--people")
            .arg(&self.people_path);
        c
    }

    /// `person`'s access token: their password set, then the device authorization grant at
    /// the server's dev IdP, as `steward login` and a browser do it.
    pub fn person_token(&self, person: &str) -> String {
        if let Some(t) = self.signed_in.lock().unwrap().get(person) {
            return t.clone();
        }
        if self.people_issuer.is_some() {
            let password = oidc_people::env("STEWARD_TEST_OIDC_PEOPLE_PASSWORD");
            let token = oidc_people::sign_in(person.trim(), &password)
                .unwrap_or_else(|e| panic!("{person} signing in at the OIDC test peer: {e}"));
            self.signed_in
                .lock()
                .unwrap()
                .insert(person.to_string(), token.clone());
            return token;
        }
        self.set_password(person);
        let (status, device) = self.send(
            self.http
                .post(self.url("/oauth2/v1/device/authorize"))
                .form(&[("client_id", "steward-cli"), ("scope", "openid email")]),
        );
        assert_eq!(status, 200, "device authorization: {device}");
        let user_code = device["user_code"].as_str().expect("user_code");
        let password = Self::password_of(person);
        let entered = self
            .http
            .post(self.url("/device"))
            .form(&[
                ("user_code", user_code),
                ("email", person),
                ("password", password.as_str()),
            ])
            .send()
            .expect("the verification page");
        assert_eq!(entered.status().as_u16(), 200, "{person} entering the code");
        let (status, token) = self.send(self.http.post(self.url("/oauth2/v1/token")).form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "steward-cli"),
            (
                "device_code",
                device["device_code"].as_str().expect("device_code"),
            ),
        ]));
        assert_eq!(status, 200, "{person}'s token: {token}");
        let token = token["access_token"]
            .as_str()
            .expect("access_token")
            .to_string();
        self.signed_in
            .lock()
            .unwrap()
            .insert(person.to_string(), token.clone());
        token
    }

    /// GET on the admin API as `person`.
    pub fn get_as(&self, person: &str, path: &str) -> (u16, Value) {
        self.send(
            self.http
                .get(self.url(path))
                .bearer_auth(self.person_token(person)),
        )
    }

    /// POST JSON on the admin API as `person`.
    pub fn post_as(&self, person: &str, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(self.person_token(person))
                .json(body),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An agent request body (the admin API's AgentRequest).
pub fn agent_request(name: &str, env: &str, owner: &str, scopes: &[&str]) -> Value {
    json!({
        "name": name,
        "owner": owner,
        "team": "sre",
        "environment": env,
        "purpose": "Mutes flapping monitors and opens incidents during on-call",
        "scopes": scopes,
    })
}

pub fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        other => panic!("expected a JSON array, got {other}"),
    }
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of strings, got {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// Polls `probe` every 25 ms until it returns Some; panics with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The messages of audit records, for assertions and failure output.
pub fn messages(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["message"].as_str().unwrap_or("").to_string())
        .collect()
}
