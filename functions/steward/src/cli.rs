//! Operator commands. They talk to a running `steward serve` over its admin API, except
//! `validate` (offline) and `agents credentials` (reads the local vault, and records the
//! hand-out in the local audit trail).
//!
//! What the server sends is data, not terminal commands: the human printers get every string
//! through [`shown`] (by [`print()`]), and `--json` output has the control characters JSON
//! leaves raw escaped too ([`json_text`]).

use crate::Client;
use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use shared::admin::ApprovalView;
use shared::admin::{
    AgentRequestBody, CancelBody, DecisionBody, DecommissionBody, FreezeBody, OwnerBody, RenewBody,
    RotateBody, ScopeChangeBody,
};
use shared::http::client::{AdminClient, ClientError};
use shared::secret::Secret;
use statemachines::Decision;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum AgentsCmd {
    /// Request a new agent from a manifest (agent.toml). A `private_key_jwt` manifest names
    /// the agent's key file: its public key and a proof of possession are sent, never the key.
    Request { manifest: PathBuf },
    /// Rotate a key-bound agent to the key in FILE (made with `new-key`): it is added beside the
    /// current key, and the old key is retired once the agent has used the new one.
    RotateKey {
        agent: String,
        /// The new private key file; only its public key and a proof leave this machine.
        #[arg(long)]
        key: PathBuf,
    },
    /// Confirm the agent now uses its new key KID, where the identity provider does not report
    /// which key signed a grant: its key rotation goes on to the grace period.
    ConfirmKey { agent: String, kid: String },
    /// Renew a `tls_client_auth` agent's certificate from its next CSR (PEM, made with the
    /// agent's new key, which stays with the agent): the new certificate is accepted beside the
    /// current one, which is revoked once the agent has used the new one.
    RotateCertificate {
        agent: String,
        /// The CSR file.
        #[arg(long)]
        csr: PathBuf,
    },
    /// Confirm the agent now uses its new certificate (serial or x5t#S256), where the identity
    /// provider does not report which certificate a grant used: its certificate rotation goes
    /// on to the grace period.
    ConfirmCertificate { agent: String, certificate: String },
    /// Make a key pair for a `private_key_jwt` agent (P-256, PKCS#8 PEM, mode 0600) and print
    /// its public JWK. The file stays with the agent; Steward never sees it.
    NewKey {
        /// Where to write the private key (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// The inventory.
    List,
    /// One agent: record, workflows and history.
    Show { agent: String },
    /// Add or remove scopes, or change the token lifetime.
    Scopes {
        agent: String,
        #[arg(long)]
        add: Vec<String>,
        #[arg(long)]
        remove: Vec<String>,
        /// New token lifetime, e.g. 10m.
        #[arg(long)]
        lifetime: Option<humantime::Duration>,
        #[arg(long)]
        reason: String,
    },
    /// Give an agent whose owner left a new owner (the former owner's manager or security).
    Reassign {
        agent: String,
        /// The new owner: an active person in the directory.
        #[arg(long)]
        owner: String,
    },
    /// Withdraw a request that is still waiting (by workflow id).
    Cancel {
        workflow: String,
        #[arg(long)]
        reason: String,
    },
    /// Hand an agent its credentials from the local vault: the client id and its current
    /// secret, or for a key Steward holds (key_custody steward) its kid and private key (to
    /// stdout, or into a new file with mode 0600 with --key-out).
    Credentials {
        agent: String,
        /// Write a Steward-held private key into this new file instead of stdout.
        #[arg(long)]
        key_out: Option<PathBuf>,
    },
    /// A `tls_client_auth` agent's client certificate from the internal CA (PEM; public: the
    /// key stays with the agent), to stdout or into FILE.
    Certificate {
        agent: String,
        /// Where to write the certificate (replaced if it exists).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rotate the agent's secret now (owner or security approver; no approval needed).
    Rotate { agent: String },
    /// Freeze the agent now, the kill switch: client deactivated, tokens revoked; security
    /// then decides Unfreeze or Decommission (owner or security approver).
    Freeze {
        agent: String,
        #[arg(long)]
        reason: String,
    },
    /// Ask security to decide on an agent frozen earlier (a review's freeze default, or a
    /// freeze nobody decided): Unfreeze restores its grants, Decommission ends it.
    Unfreeze {
        agent: String,
        #[arg(long)]
        reason: String,
    },
    /// Ask to decommission the agent (a security approver decides).
    Decommission {
        agent: String,
        #[arg(long)]
        reason: String,
    },
    /// Ask to keep a time-bound agent past its expiry date (a security approver decides).
    Renew {
        agent: String,
        /// The new expiry date, YYYY-MM-DD.
        #[arg(long)]
        until: chrono::NaiveDate,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum ApprovalsCmd {
    /// Pending approvals (all with --all).
    List {
        #[arg(long)]
        all: bool,
    },
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

/// The typed admin client, with the CLI's way of finding the server's token.
pub struct Api(AdminClient);

impl std::ops::Deref for Api {
    type Target = AdminClient;
    fn deref(&self) -> &AdminClient {
        &self.0
    }
}

impl Api {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self(AdminClient::new(base, Secret::new(token))?))
    }

    pub async fn from_client(c: &Client) -> anyhow::Result<Self> {
        // An explicit token first, then the signed-in person (`steward login`), then the
        // server's admin token (automation).
        let token = match &c.token {
            Some(t) => t.clone(),
            None if let Some(t) = crate::login::current_token().await? => t,
            None => std::fs::read_to_string(c.data_dir.join("admin-token"))
                .with_context(|| {
                    format!(
                        "no admin token: pass --token or run next to the server's data dir ({})",
                        c.data_dir.display()
                    )
                })?
                .trim()
                .to_string(),
        };
        Self::new(&c.url, &token)
    }
}

/// A typed reply as JSON, which the printers read.
pub fn json_of<T: serde::Serialize>(reply: Result<T, ClientError>) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(reply?)?)
}

/// `v` as `--json` prints it, or `human(v)` with every string (and key) of `v` made safe for
/// a terminal by [`shown`]: the one way a reply reaches the screen.
pub fn print(c: &Client, v: &Value, human: impl FnOnce(&Value)) {
    if c.json {
        println!("{}", json_text(v));
    } else {
        human(&shown_value(v));
    }
}

/// Characters a terminal acts on instead of showing: every control character (C0, newline
/// and tab included, DEL, C1, so ESC and the 8-bit CSI too) and the bidirectional overrides
/// and isolates, which reorder what is shown around them.
fn acted_on(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` as a human printer shows it: each character a terminal would act on (see
/// [`acted_on`]) written as a visible escape such as `\u{1b}`, so a purpose, a reason or a
/// name from the server cannot move the cursor, clear the screen, retitle the window or
/// forge a line of output.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acted_on) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for ch in text.chars() {
        if acted_on(ch) {
            out.extend(ch.escape_unicode());
        } else {
            out.push(ch);
        }
    }
    Cow::Owned(out)
}

/// [`shown`] for a text of several lines (an error with its reasons): each line on its own.
pub fn shown_lines(text: &str) -> String {
    text.split('\n').map(shown).collect::<Vec<_>>().join("\n")
}

/// `v` with [`shown`] applied to every string and key.
pub fn shown_value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(shown(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(shown_value).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (shown(k).into_owned(), shown_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// JSON text (one document or JSON lines) with the characters JSON allows raw in strings
/// but a terminal acts on (DEL, C1, bidirectional controls) written as `\uXXXX` escapes: the
/// same JSON to a parser. Newlines between documents or pretty-printed members stay.
pub fn json_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && acted_on(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for ch in text.chars() {
        if ch != '\n' && acted_on(ch) {
            // Every such character is in the Basic Multilingual Plane: one \uXXXX escape.
            out.push_str(&format!("\\u{:04x}", ch as u32));
        } else {
            out.push(ch);
        }
    }
    Cow::Owned(out)
}

/// `v` as `--json` prints it.
pub fn json_text(v: &Value) -> String {
    json_safe(&serde_json::to_string_pretty(v).unwrap_or_default()).into_owned()
}

pub async fn agents(cmd: AgentsCmd, c: &Client) -> anyhow::Result<()> {
    let api = Api::from_client(c).await?;
    match cmd {
        AgentsCmd::RotateKey { agent, key } => {
            let pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading the new key {}", key.display()))?;
            let pair = shared::agent_key::AgentKeyPair::from_pem(&pem)
                .with_context(|| format!("the new key {}", key.display()))?;
            // The proof names the agent by name, as the server knows it.
            let name = json_of(api.agent(&agent).await)?["agent"]["name"]
                .as_str()
                .unwrap_or(&agent)
                .to_string();
            let nonce = api.key_nonce().await?.nonce;
            let body = shared::admin::KeyBody {
                public_jwk: pair.public_jwk(),
                key_proof: pair.key_proof(&name, &nonce, chrono::Utc::now()),
            };
            let v = json_of(api.rotate_key(&agent, &body).await)?;
            print(c, &v, |v| {
                println!(
                    "key rotation {} → {}",
                    v["workflow_id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                );
            });
            return Ok(());
        }
        AgentsCmd::ConfirmKey { agent, kid } => {
            let v = json_of(api.confirm_key(&agent, &kid).await)?;
            print(c, &v, |v| {
                println!(
                    "key {kid} confirmed in use; rotation {} goes on to its grace period",
                    v["workflow_id"].as_str().unwrap_or("?")
                );
            });
            return Ok(());
        }
        AgentsCmd::RotateCertificate { agent, csr } => {
            let csr = std::fs::read_to_string(&csr)
                .with_context(|| format!("reading the CSR {}", csr.display()))?;
            let body = shared::admin::CertificateBody { csr };
            let v = json_of(api.rotate_certificate(&agent, &body).await)?;
            print(c, &v, |v| {
                println!(
                    "certificate rotation {} → {}",
                    v["workflow_id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                );
            });
            return Ok(());
        }
        AgentsCmd::ConfirmCertificate { agent, certificate } => {
            let v = json_of(api.confirm_certificate(&agent, &certificate).await)?;
            print(c, &v, |v| {
                println!(
                    "certificate {certificate} confirmed in use; rotation {} goes on to its grace period",
                    v["workflow_id"].as_str().unwrap_or("?")
                );
            });
            return Ok(());
        }
        AgentsCmd::NewKey { out } => {
            let pair = shared::agent_key::AgentKeyPair::generate()?;
            write_private(&out, pair.pem().expose())?;
            let v = serde_json::json!({"kid": pair.public().kid, "public_jwk": pair.public_jwk(), "file": out.display().to_string()});
            print(c, &v, |v| {
                println!(
                    "wrote {} (keep it with the agent)\nkid {}\npublic JWK {}",
                    v["file"].as_str().unwrap_or("?"),
                    v["kid"].as_str().unwrap_or("?"),
                    v["public_jwk"]
                );
            });
            return Ok(());
        }
        AgentsCmd::Request { manifest } => {
            let shared::manifest::Manifest { request, key_file } =
                shared::manifest::load_manifest(&manifest)?;
            // A private_key_jwt agent's key file is read here, where it is: the public key and
            // a proof over Steward's nonce leave the machine, the private key does not.
            let (public_jwk, key_proof) = match key_file {
                None => (None, None),
                Some(path) => {
                    let pem = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading the agent's key {}", path.display()))?;
                    let pair = shared::agent_key::AgentKeyPair::from_pem(&pem)
                        .with_context(|| format!("the agent's key {}", path.display()))?;
                    let nonce = api.key_nonce().await?.nonce;
                    let proof = pair.key_proof(&request.name, &nonce, chrono::Utc::now());
                    (Some(pair.public_jwk()), Some(proof))
                }
            };
            let body = AgentRequestBody {
                request,
                public_jwk,
                key_proof,
            };
            let v = json_of(api.request_agent(&body).await)?;
            print(c, &v, |v| {
                let dup = if v["duplicate"].as_bool() == Some(true) {
                    " (already requested; nothing new started)"
                } else {
                    ""
                };
                println!(
                    "{} → {}{dup}\nworkflow {}",
                    v["agent_id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?"),
                    v["workflow_id"].as_str().unwrap_or("?")
                );
            });
        }
        AgentsCmd::List => {
            let v = json_of(api.agents().await)?;
            print(c, &v, |v| {
                println!(
                    "{:<40} {:<17} {:<28} {:<5} SCOPES",
                    "NAME", "STATUS", "OWNER", "ENV"
                );
                for a in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<40} {:<17} {:<28} {:<5} {}",
                        a["name"].as_str().unwrap_or(""),
                        a["status"].as_str().unwrap_or(""),
                        a["owner"].as_str().unwrap_or(""),
                        a["environment"].as_str().unwrap_or(""),
                        a["scopes"]
                            .as_array()
                            .map(|s| s
                                .iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default()
                    );
                }
            });
        }
        AgentsCmd::Show { agent } => {
            let v = json_of(api.agent(&agent).await)?;
            let h = json_of(api.agent_history(&agent).await)?;
            print(c, &json!({"agent": v, "history": h}), |both| {
                show_agent(&both["agent"]["agent"], &both["history"])
            });
        }
        AgentsCmd::Scopes {
            agent,
            add,
            remove,
            lifetime,
            reason,
        } => {
            let token_lifetime_secs = lifetime
                .map(|l| u32::try_from(std::time::Duration::from(l).as_secs()))
                .transpose()
                .context("--lifetime is too long")?;
            let body = ScopeChangeBody {
                request: statemachines::scope_change::ScopeChangeRequest {
                    add,
                    remove,
                    token_lifetime_secs,
                    reason,
                },
            };
            let v = json_of(api.change_scopes(&agent, &body).await)?;
            print(c, &v, |v| {
                println!(
                    "scope change {} → {}",
                    v["workflow_id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                )
            });
        }
        AgentsCmd::Reassign { agent, owner } => {
            let v = json_of(api.reassign_owner(&agent, &OwnerBody { owner }).await)?;
            print(c, &v, |v| {
                println!(
                    "{agent}: owner {} assigned ({})",
                    v["owner"].as_str().unwrap_or("?"),
                    v["workflow_id"].as_str().unwrap_or("?")
                )
            });
        }
        AgentsCmd::Cancel { workflow, reason } => {
            let body = CancelBody { reason };
            let v = json_of(api.cancel_workflow(&workflow, &body).await)?;
            print(c, &v, |_| println!("cancel requested for {workflow}"));
        }
        AgentsCmd::Credentials { agent, key_out } => {
            credentials(&api, c, &agent, key_out.as_deref()).await?
        }
        AgentsCmd::Certificate { agent, out } => {
            let pem = api.agent_certificate(&agent).await?;
            match &out {
                Some(path) => {
                    std::fs::write(path, &pem)
                        .with_context(|| format!("writing {}", path.display()))?;
                    let v = json!({"agent": agent, "file": path.display().to_string()});
                    print(c, &v, |v| {
                        println!(
                            "wrote {}'s certificate to {}",
                            agent,
                            v["file"].as_str().unwrap_or("?")
                        )
                    });
                }
                None => print(c, &json!({"agent": agent, "certificate": pem}), |_| {
                    print!("{pem}")
                }),
            }
        }
        AgentsCmd::Rotate { agent } => {
            let v = json_of(api.rotate(&agent, &RotateBody {}).await)?;
            print(c, &v, |v| {
                println!(
                    "rotation {} → {}",
                    v["workflow_id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                )
            });
        }
        AgentsCmd::Freeze { agent, reason } => {
            let v = json_of(api.freeze(&agent, &FreezeBody { reason }).await)?;
            print(c, &v, |v| {
                for s in v["started"].as_array().into_iter().flatten() {
                    println!(
                        "freeze {} → {}",
                        s["workflow_id"].as_str().unwrap_or("?"),
                        s["state"].as_str().unwrap_or("?")
                    );
                }
            });
        }
        AgentsCmd::Unfreeze { agent, reason } => {
            let v = json_of(api.unfreeze(&agent, &FreezeBody { reason }).await)?;
            print(c, &v, |v| {
                println!(
                    "unfreeze decision {} → {} (approve = unfreeze, deny = decommission)",
                    v["workflow_id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                )
            });
        }
        AgentsCmd::Decommission { agent, reason } => {
            let body = DecommissionBody { reason };
            let v = json_of(api.decommission(&agent, &body).await)?;
            print(c, &v, |v| {
                println!(
                    "decommission {} → {}",
                    v["workflow_id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                )
            });
        }
        AgentsCmd::Renew {
            agent,
            until,
            reason,
        } => {
            let body = RenewBody { until, reason };
            let v = json_of(api.renew(&agent, &body).await)?;
            print(c, &v, |v| {
                println!(
                    "renewal until {until} asked ({}); a security approver decides",
                    v["workflow_id"].as_str().unwrap_or("?")
                )
            });
        }
    }
    Ok(())
}

/// `agents show`: the record (`a`, made safe by [`print()`]) and its history `h`.
fn show_agent(a: &Value, h: &Value) {
    println!(
        "{} ({})",
        a["name"].as_str().unwrap_or(""),
        a["id"].as_str().unwrap_or("")
    );
    for k in [
        "status",
        "owner",
        "team",
        "environment",
        "purpose",
        "client_id",
        "secret_version",
        "credential_issued_at",
        "token_lifetime_secs",
        "expires_on",
    ] {
        println!("  {k:<22} {}", display(&a[k]));
    }
    println!("  {:<22} {}", "scopes", display(&a["scopes"]));
    print_credentials(a);
    println!("history:");
    for e in h.as_array().into_iter().flatten() {
        let en = &e["entry"];
        let refused = en["rejected"]
            .as_str()
            .map(|r| format!("  REFUSED: {r}"))
            .unwrap_or_default();
        println!(
            "  {}  {:<13} {:<17} → {:<17} by {}{refused}",
            en["at"].as_str().unwrap_or(""),
            e["kind"].as_str().unwrap_or(""),
            en["from"].as_str().unwrap_or(""),
            en["to"].as_str().unwrap_or(""),
            actor(&en["actor"])
        );
    }
}

/// Credential age, the rotation receipts and the decommission receipt of an agent record.
fn print_credentials(a: &Value) {
    let age = a["credential_issued_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_days());
    match age {
        Some(d) => println!(
            "  {:<22} {d} days (since {})",
            "credential age",
            display(&a["credential_issued_at"])
        ),
        None => println!("  {:<22} -", "credential age"),
    }
    let receipts = a["credentials"].as_array().cloned().unwrap_or_default();
    if !receipts.is_empty() {
        println!("credential history:");
    }
    for r in &receipts {
        println!(
            "  {}  {} → {}  ({})",
            display(&r["new_valid_from"]),
            display(&r["old"]["secret_id"]),
            display(&r["new"]["secret_id"]),
            display(&r["reason"])
        );
        println!(
            "      old secret valid {} … {}; {}",
            display(&r["old_valid_from"]),
            display(&r["old_valid_until"]),
            display(&r["old_revocation"])
        );
        println!("      verified: {}", display(&r["verification"]));
    }
    let d = &a["decommission"];
    if !d.is_null() {
        println!("revocation receipt ({}):", display(&d["workflow"]));
        println!("  {:<22} {}", "reason", display(&d["reason"]));
        println!("  {:<22} {}", "requested by", display(&d["requested_by"]));
        println!("  {:<22} {}", "approved by", display(&d["approved_by"]));
        for s in d["steps"].as_array().into_iter().flatten() {
            println!(
                "  {} {:<24} {} ({})",
                if s["done"].as_bool() == Some(true) {
                    "✓"
                } else {
                    "✗"
                },
                display(&s["action"]),
                display(&s["detail"]),
                display(&s["at"])
            );
        }
        println!(
            "  {:<22} {}",
            "no token valid after",
            display(&d["no_token_valid_after"])
        );
        println!(
            "  {:<22} {}",
            "secret deleted after",
            display(&d["secret_deleted_after"])
        );
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(display).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn actor(v: &Value) -> String {
    match (v["type"].as_str(), v["id"].as_str()) {
        (Some("person"), Some(id)) => id.to_string(),
        (Some(t), Some(id)) => format!("{t}:{id}"),
        (Some(t), None) => t.to_string(),
        _ => "?".into(),
    }
}

async fn credentials(
    api: &Api,
    c: &Client,
    agent: &str,
    key_out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use shared::ports::Vault;
    let v = json_of(api.agent(agent).await)?;
    let a = &v["agent"];
    let id = a["id"].as_str().context("agent has no id")?;
    let name = a["name"].as_str().unwrap_or(agent);
    let client_id = a["client_id"].as_str().with_context(|| {
        format!(
            "{agent} has no client yet (status {})",
            display(&a["status"])
        )
    })?;
    // The hand-out is recorded in the trail before the secret is shown: no database, no secret.
    let db_path = c.data_dir.join("steward.db");
    if !db_path.is_file() {
        bail!(
            "no Steward database at {}: handing out a secret is recorded in its audit trail; pass the server's --data-dir (or STEWARD_DATA_DIR)",
            db_path.display()
        );
    }
    let vault = shared::embedded::vault::FileVault::open(&c.data_dir.join("vault"))?;
    let (version, stored) = vault
        .get(id, shared::ports::vault::Stage::Current)
        .await?
        .with_context(|| format!("no current secret for {agent} in the vault"))?;
    let vaulted = shared::credential::VaultedCredential::from_secret(&stored)?;
    if let Some(path) = key_out {
        if !matches!(vaulted, shared::credential::VaultedCredential::Key(_)) {
            bail!("{agent} holds a client secret, not a Steward-held key: --key-out is for keys");
        }
        // Refused before the hand-out is recorded: nothing is handed out then.
        if path.exists() {
            bail!(
                "{} exists already: a key file is never overwritten; name a new file",
                path.display()
            );
        }
    }
    let me = api
        .whoami()
        .await
        .context("asking the server who you are, for the audit record of the hand-out")?;
    let data_dir = std::fs::canonicalize(&c.data_dir).unwrap_or_else(|_| c.data_dir.clone());
    let record = hand_out_record(
        &me,
        &HandOut {
            agent_id: id,
            agent_name: name,
            client_id,
            version: &version,
            what: match vaulted {
                shared::credential::VaultedCredential::Secret(_) => "client secret",
                shared::credential::VaultedCredential::Key(_) => "private key",
            },
            os_user: &os_user(),
            data_dir: &data_dir.display().to_string(),
        },
        chrono::Utc::now(),
    );
    append_audit(&db_path, record).await.context(
        "the hand-out could not be recorded in the audit trail, so the secret is not shown",
    )?;
    match vaulted {
        shared::credential::VaultedCredential::Secret(s) => {
            eprintln!(
                "handing out the current secret of {} (version {}); treat it as a password (recorded in the audit trail)",
                shown(agent),
                shown(&version)
            );
            println!(
                "client_id={}\nclient_secret={}",
                shown(client_id),
                s.client_secret.expose()
            );
        }
        shared::credential::VaultedCredential::Key(k) => {
            eprintln!(
                "handing out the current private key of {} (kid {}, version {}); treat it as a password (recorded in the audit trail)",
                shown(agent),
                shown(&k.kid),
                shown(&version)
            );
            println!("client_id={}\nkid={}", shown(client_id), shown(&k.kid));
            match key_out {
                Some(path) => {
                    write_private(path, k.private_key.expose())?;
                    println!("private_key_file={}", path.display());
                }
                None => print!("{}", k.private_key.expose()),
            }
        }
    }
    Ok(())
}

/// A secret handed out of the local vault: what the audit record names (never the secret).
struct HandOut<'a> {
    agent_id: &'a str,
    agent_name: &'a str,
    client_id: &'a str,
    version: &'a str,
    /// "client secret" or "private key".
    what: &'a str,
    /// The local account that ran the CLI.
    os_user: &'a str,
    /// The data directory whose vault it was read from.
    data_dir: &'a str,
}

/// The audit record of a hand-out: the trail's call record (who, as the server knows the
/// token, from the CLI) about the agent's client credential and its vault version, with the
/// local account and data directory. No secret is given to it.
fn hand_out_record(
    me: &shared::admin::Me,
    h: &HandOut<'_>,
    time: chrono::DateTime<chrono::Utc>,
) -> shared::ports::store::AuditRecord {
    let caller = shared::audit::Caller {
        kind: &me.kind,
        id: &me.id,
        token_id: me.token_id.as_deref(),
        via: None,
    };
    let mut r = shared::audit::call(caller, "cli", "agents credentials", 200, None, time);
    let b = &mut r.body;
    b["message"] = json!(format!(
        "{} {} took the current {} of agent {} (version {}) from the local vault in {} as OS user {}",
        me.kind, me.id, h.what, h.agent_name, h.version, h.data_dir, h.os_user
    ));
    b["entity"] = json!({
        "uid": h.agent_id,
        "name": format!("{} {}", h.agent_name, h.what),
        "type": "OAuth client credential",
        "data": {"client_id": h.client_id, "version": h.version},
    });
    let u = &mut b["unmapped"];
    u["steward_event"] = json!("secret_handed_out");
    u["agent_id"] = json!(h.agent_id);
    u["agent_name"] = json!(h.agent_name);
    u["secret_version"] = json!(h.version);
    u["os_user"] = json!(h.os_user);
    u["data_dir"] = json!(h.data_dir);
    r
}

/// Appends `record` to the trail of the database at `db_path` (beside a running server: SQLite
/// serialises the writers; a write that lost the race to the server is tried again).
async fn append_audit(
    db_path: &Path,
    record: shared::ports::store::AuditRecord,
) -> anyhow::Result<()> {
    use shared::ports::store::StoreWrite as _;
    let db = shared::embedded::Db::open(db_path, shared::embedded::Durability::Fsync)
        .with_context(|| format!("opening {}", db_path.display()))?;
    let mut tries = 0;
    loop {
        match db.append_audit(vec![record.clone()]).await {
            Ok(()) => return Ok(()),
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::debug!(error = %e, tries, "appending the hand-out's audit record again");
                tokio::time::sleep(std::time::Duration::from_millis(50 * tries)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The local account running the CLI: its name from the environment and, on Linux, the uid
/// the kernel gives the process (which the environment cannot change).
fn os_user() -> String {
    let name = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .map(|n| shared::audit::bounded(n.trim(), 64));
    #[cfg(target_os = "linux")]
    let uid = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    };
    #[cfg(not(target_os = "linux"))]
    let uid: Option<u32> = None;
    match (name, uid) {
        (Some(n), Some(u)) => format!("{n} (uid {u})"),
        (Some(n), None) => n,
        (None, Some(u)) => format!("uid {u}"),
        (None, None) => "unknown".into(),
    }
}

pub async fn approvals(cmd: ApprovalsCmd, c: &Client) -> anyhow::Result<()> {
    let api = Api::from_client(c).await?;
    match cmd {
        ApprovalsCmd::List { all } => {
            let v = json_of(api.approvals(all).await)?;
            print(c, &v, |v| {
                for a in v.as_array().into_iter().flatten() {
                    let r = &a["request"];
                    println!(
                        "{}  [{}] {} {} ({}) +[{}] sensitive [{}] by {} — approvers {} — expires {}",
                        r["id"].as_str().unwrap_or(""),
                        a["status"].as_str().unwrap_or(""),
                        r["action"].as_str().unwrap_or(""),
                        r["agent_name"].as_str().unwrap_or(""),
                        r["environment"].as_str().unwrap_or(""),
                        display(&r["scopes_added"]),
                        display(&r["sensitive_scopes"]),
                        r["requester"].as_str().unwrap_or(""),
                        display(&r["approvers"]),
                        r["expires_at"].as_str().unwrap_or("")
                    );
                    println!("    justification: {}", display(&r["justification"]));
                }
            });
        }
        ApprovalsCmd::Approve { id, reason } => {
            decide(&api, c, &id, Decision::Approve, reason).await?
        }
        ApprovalsCmd::Deny { id, reason } => {
            decide(&api, c, &id, Decision::Deny, Some(reason)).await?
        }
    }
    Ok(())
}

/// What an approver is about to decide: everything the action hash covers, who asked and why.
/// `a` is an approval as [`print()`] hands it (made safe for the terminal).
fn approval_summary(a: &Value, decision: &str) -> String {
    let r = &a["request"];
    let hash = a["action_hash"].as_str().unwrap_or("");
    format!(
        "{decision} {} [{}]: {} {} ({})\n  add scopes [{}] (sensitive [{}]); remove scopes [{}]; token lifetime {}s\n  requested by {}: {}\n  action hash {}",
        display(&r["id"]),
        display(&a["status"]),
        display(&r["action"]),
        display(&r["agent_name"]),
        display(&r["environment"]),
        display(&r["scopes_added"]),
        display(&r["sensitive_scopes"]),
        display(&r["scopes_removed"]),
        display(&r["token_lifetime_secs"]),
        display(&r["requester"]),
        display(&r["justification"]),
        &hash[..hash.len().min(12)]
    )
}

/// The decision's body: bound to the request as it was shown, so the server refuses it if the
/// request changed in between.
fn decision_body(approval: &ApprovalView, reason: Option<String>) -> DecisionBody {
    DecisionBody {
        reason,
        action_hash: Some(approval.action_hash.clone()),
    }
}

async fn decide(
    api: &Api,
    c: &Client,
    id: &str,
    decision: Decision,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let word = match decision {
        Decision::Approve => "approve",
        Decision::Deny => "deny",
    };
    let approval = api.approval(id).await?.with_context(|| {
        format!(
            "no approval with id `{}` (see `steward approvals list --all`); nothing was decided",
            shown(id)
        )
    })?;
    let summary = approval_summary(
        &shown_value(&serde_json::to_value(&approval)?),
        match decision {
            Decision::Approve => "approving",
            Decision::Deny => "denying",
        },
    );
    // The JSON reply stays alone on stdout.
    if c.json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    let body = decision_body(&approval, reason);
    let v = json_of(match decision {
        Decision::Approve => api.approve(id, &body).await,
        Decision::Deny => api.deny(id, &body).await,
    })?;
    print(c, &v, |_| {
        println!(
            "approval {}: {word} queued; the workflow applies it (see `steward agents show`)",
            shown(id)
        )
    });
    Ok(())
}

pub async fn whoami(c: &Client) -> anyhow::Result<()> {
    let me = Api::from_client(c).await?.whoami().await?;
    let (kind, id) = (shown(&me.kind), shown(&me.id));
    match me.token_id {
        Some(token) => println!("{kind} {id} (token {})", shown(&token)),
        None => println!("{kind} {id}"),
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check the whole trail: every record's hash and its link to the one before on its chain,
    /// and the latest signed seal (the trail reaches it and agrees with it, and it is recent).
    /// Exits 1, naming the first record that does not hold, when the trail was cut or rewritten.
    Verify {
        /// The seal key to trust (hex): `steward serve` logs it at start, and every `verify`
        /// prints it. Without it, the key the server's seal names is used, and the output says so.
        #[arg(long, env = "STEWARD_AUDIT_KEY")]
        key: Option<String>,
        /// The oldest seal accepted (the server seals every minute).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        max_age: std::time::Duration,
    },
}

pub async fn audit(command: Option<AuditCmd>, c: &Client) -> anyhow::Result<()> {
    let api = Api::from_client(c).await?;
    match command {
        None => {
            use std::io::Write as _;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut written = Ok(());
            api.audit_lines(|line| {
                written = writeln!(out, "{}", json_safe(line));
                written.is_ok()
            })
            .await?;
            written?;
            out.flush()?;
            Ok(())
        }
        Some(AuditCmd::Verify { key, max_age }) => verify_audit(&api, key, max_age).await,
    }
}

async fn verify_audit(
    api: &Api,
    key: Option<String>,
    max_age: std::time::Duration,
) -> anyhow::Result<()> {
    use shared::audit::seal::{TrailBroken, TrailCheck, from_export_line, verifying_key};
    let seal = match api.audit_seal().await {
        Ok(seal) => seal,
        Err(e) if e.status() == Some(404) => return Err(TrailBroken::Unsealed.into()),
        Err(e) => return Err(e.into()),
    };
    let pinned = key.is_some();
    let key = verifying_key(key.as_deref().unwrap_or(&seal.key))?;
    let mut check = TrailCheck::new(seal, &key)?;
    let (mut line_no, mut broken) = (0u64, None);
    api.audit_lines(|line| {
        line_no += 1;
        let added = from_export_line(line)
            .map_err(|why| TrailBroken::Unreadable { line: line_no, why })
            .and_then(|record| check.add(&record));
        broken = added.err();
        broken.is_none()
    })
    .await?;
    if let Some(e) = broken {
        anyhow::bail!("the audit trail does not verify: {e}");
    }
    let v = check
        .finish(chrono::Utc::now(), max_age)
        .map_err(|e| anyhow::anyhow!("the audit trail does not verify: {e}"))?;
    println!(
        "verified: {} records on {} chain(s), through record {}; sealed through record {} at {} by key {}",
        v.records,
        v.chains,
        v.last_seq,
        v.sealed_through,
        v.sealed_at.to_rfc3339(),
        v.key
    );
    if !pinned {
        eprintln!(
            "note: the key was the one the server's seal names; pass --key {} (or set STEWARD_AUDIT_KEY) so that a server with a rewritten trail cannot vouch for itself",
            v.key
        );
    }
    Ok(())
}

pub async fn validate(
    policy: &Path,
    people: Option<&Path>,
    manifests: &[PathBuf],
) -> anyhow::Result<()> {
    let policy = shared::policy_file::load(policy)?;
    let directory = people
        .map(shared::people_file::PeopleFileDirectory::load)
        .transpose()?;
    let dir_ref = directory
        .as_ref()
        .map(|d| d as &dyn shared::ports::Directory);
    let verdicts =
        shared::manifest::validate(manifests, &policy, dir_ref, chrono::Utc::now().date_naive())
            .await;
    let mut bad = 0;
    for v in &verdicts {
        if v.problems.is_empty() {
            println!("ok    {}", v.path);
        } else {
            bad += 1;
            println!("FAIL  {}", v.path);
            for p in &v.problems {
                println!("      - {p}");
            }
        }
    }
    if bad > 0 {
        bail!(
            "{bad} of {} manifest(s) do not satisfy the policy",
            verdicts.len()
        );
    }
    Ok(())
}

/// Writes a private key to a new file only its owner can read.
fn write_private(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte a terminal acts on: C0 (with newline and tab), DEL and C1 (as UTF-8).
    fn raw_controls(text: &str) -> Vec<char> {
        text.chars().filter(|c| c.is_control()).collect()
    }

    #[test]
    fn shown_makes_every_control_character_visible() {
        let hostile =
            "x\u{1b}[2J\u{1b}]0;pwned\u{7}\r\nfake line\t\u{7f}\u{9b}31m\u{202e}evil\u{0}";
        let s = shown(hostile);
        assert!(raw_controls(&s).is_empty(), "{s:?}");
        assert!(!s.contains('\u{202e}'), "{s:?}");
        assert_eq!(
            s,
            "x\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{d}\\u{a}fake line\\u{9}\\u{7f}\\u{9b}31m\\u{202e}evil\\u{0}"
        );
        // Ordinary text, accents and other scripts are untouched (and not copied).
        for fine in [
            "alice@example.com",
            "Mutes flapping monitors — on-call",
            "Zoë 東京 😀",
        ] {
            assert!(matches!(shown(fine), Cow::Borrowed(_)), "{fine}");
        }
        assert_eq!(
            shown_lines("refused (422)\n  - purpose: \u{1b}[2J"),
            "refused (422)\n  - purpose: \\u{1b}[2J"
        );
    }

    #[test]
    fn the_human_printers_get_safe_strings_and_keys() {
        let v = json!({
            "agent": {"purpose": "a\u{1b}[2Jb", "scopes": ["s\u{7}"], "n": 3, "ok": true},
            "k\u{1b}": null,
        });
        let safe = shown_value(&v);
        assert_eq!(safe["agent"]["purpose"], "a\\u{1b}[2Jb");
        assert_eq!(safe["agent"]["scopes"][0], "s\\u{7}");
        assert_eq!(safe["agent"]["n"], 3);
        assert_eq!(safe["agent"]["ok"], true);
        assert!(safe.get("k\\u{1b}").is_some(), "{safe}");
        assert!(raw_controls(&safe.to_string()).is_empty());
    }

    #[test]
    fn json_output_escapes_what_json_leaves_raw_and_means_the_same() {
        let v = json!({"purpose": "a\u{1b}b\u{7f}c\u{9b}d\u{202e}e\nf", "n": [1, 2]});
        let text = json_text(&v);
        // Only the pretty-printer's newlines stay raw.
        assert!(raw_controls(&text).iter().all(|c| *c == '\n'), "{text:?}");
        assert!(!text.contains('\u{202e}'), "{text:?}");
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        // JSON lines (the audit export) the same way, one line each.
        let lines = format!("{}\n{}", json!({"m": "x\u{85}y"}), json!({"m": "z"}));
        let safe = json_safe(&lines);
        assert_eq!(safe.lines().count(), 2);
        for (l, orig) in safe.lines().zip(lines.lines()) {
            assert!(raw_controls(l).is_empty(), "{l:?}");
            assert_eq!(
                serde_json::from_str::<Value>(l).unwrap(),
                serde_json::from_str::<Value>(orig).unwrap()
            );
        }
        assert!(matches!(json_safe("{\"a\":\"b\"}"), Cow::Borrowed(_)));
    }

    fn approval() -> ApprovalView {
        serde_json::from_value(json!({
            "status": "pending",
            "action_hash": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "request": {
                "id": "onboarding-x-1-approval-1",
                "workflow_id": "onboarding-x-1",
                "agent_id": "agent-1",
                "agent_name": "x-agent-prod",
                "environment": "prod",
                "action": "onboard",
                "scopes_added": ["datadog:monitors:write"],
                "scopes_removed": ["old:scope"],
                "sensitive_scopes": ["datadog:monitors:write"],
                "token_lifetime_secs": 900,
                "requester": "alice@example.com",
                "justification": "mutes monitors\u{1b}[2J",
                "approvers": ["sam.security@example.com"],
                "requested_at": "2026-01-01T00:00:00Z",
                "expires_at": "2026-01-04T00:00:00Z"
            },
            "outcome": null
        }))
        .unwrap()
    }

    #[test]
    fn a_decision_carries_the_action_hash_of_the_request_shown() {
        let a = approval();
        for reason in [None, Some("needed".to_string())] {
            let body = decision_body(&a, reason.clone());
            assert_eq!(body.action_hash.as_deref(), Some(a.action_hash.as_str()));
            assert_eq!(body.reason, reason);
            let wire = serde_json::to_value(&body).unwrap();
            assert_eq!(wire["action_hash"], a.action_hash.as_str());
        }
    }

    #[test]
    fn the_summary_shows_what_the_hash_covers_and_why() {
        let a = approval();
        let text = approval_summary(
            &shown_value(&serde_json::to_value(&a).unwrap()),
            "approving",
        );
        for needle in [
            "approving onboarding-x-1-approval-1 [pending]: onboard x-agent-prod (prod)",
            "add scopes [datadog:monitors:write]",
            "remove scopes [old:scope]",
            "token lifetime 900s",
            "requested by alice@example.com: mutes monitors\\u{1b}[2J",
            "action hash 0f1e2d3c4b5a",
        ] {
            assert!(text.contains(needle), "`{needle}` in:\n{text}");
        }
        assert!(raw_controls(&text).iter().all(|c| *c == '\n'), "{text:?}");
    }

    #[test]
    fn the_hand_out_record_names_who_and_which_version_and_no_secret() {
        let me = shared::admin::Me {
            kind: "person".into(),
            id: "alice@example.com".into(),
            token_id: Some("jti-1".into()),
        };
        let at = chrono::Utc::now();
        let r = hand_out_record(
            &me,
            &HandOut {
                agent_id: "agent-1",
                agent_name: "x-agent-prod",
                client_id: "0oa123",
                version: "v-42",
                what: "private key",
                os_user: "alice (uid 1000)",
                data_dir: "/srv/steward",
            },
            at,
        );
        let b = &r.body;
        assert_eq!(r.time, at);
        assert_eq!(b["unmapped"]["steward_event"], "secret_handed_out");
        assert_eq!(b["unmapped"]["agent_id"], "agent-1");
        assert_eq!(b["unmapped"]["secret_version"], "v-42");
        assert_eq!(b["unmapped"]["os_user"], "alice (uid 1000)");
        assert_eq!(b["unmapped"]["data_dir"], "/srv/steward");
        assert_eq!(b["unmapped"]["principal"]["id"], "alice@example.com");
        assert_eq!(b["unmapped"]["source"], "cli");
        assert_eq!(b["entity"]["uid"], "agent-1");
        assert_eq!(b["entity"]["data"]["version"], "v-42");
        assert_eq!(b["actor"]["user"]["uid"], "alice@example.com");
        let m = b["message"].as_str().unwrap();
        for needle in [
            "alice@example.com",
            "private key of agent x-agent-prod",
            "v-42",
            "/srv/steward",
            "alice (uid 1000)",
        ] {
            assert!(m.contains(needle), "`{needle}` in {m}");
        }
    }

    #[test]
    fn the_os_user_is_named() {
        let u = os_user();
        assert!(!u.is_empty());
        assert!(raw_controls(&u).is_empty(), "{u:?}");
    }
}
