//! Operator commands. They talk to a running `steward serve` over its admin API, except
//! `validate` (offline) and `agents credentials` (reads the local vault).

use crate::Client;
use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use shared::admin::{
    AgentRequestBody, CancelBody, DecisionBody, DecommissionBody, FreezeBody, OwnerBody, RenewBody,
    RotateBody, ScopeChangeBody,
};
use shared::http::client::{AdminClient, ClientError};
use shared::secret::Secret;
use statemachines::Decision;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum AgentsCmd {
    /// Request a new agent from a manifest (agent.toml).
    Request { manifest: PathBuf },
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
    /// Hand an agent its credentials from the local vault (client id and current secret).
    Credentials { agent: String },
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

pub fn print(c: &Client, v: &Value, human: impl FnOnce(&Value)) {
    if c.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human(v);
    }
}

pub async fn agents(cmd: AgentsCmd, c: &Client) -> anyhow::Result<()> {
    let api = Api::from_client(c).await?;
    match cmd {
        AgentsCmd::Request { manifest } => {
            let request = shared::manifest::load(&manifest)?;
            let body = AgentRequestBody { request };
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
            if c.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"agent": v, "history": h}))?
                );
                return Ok(());
            }
            let a = &v["agent"];
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
        AgentsCmd::Credentials { agent } => credentials(&api, c, &agent).await?,
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

async fn credentials(api: &Api, c: &Client, agent: &str) -> anyhow::Result<()> {
    use shared::ports::Vault;
    let v = json_of(api.agent(agent).await)?;
    let id = v["agent"]["id"].as_str().context("agent has no id")?;
    let client_id = v["agent"]["client_id"].as_str().with_context(|| {
        format!(
            "{agent} has no client yet (status {})",
            display(&v["agent"]["status"])
        )
    })?;
    let vault = shared::embedded::vault::FileVault::open(&c.data_dir.join("vault"))?;
    let (version, stored) = vault
        .get(id, shared::ports::vault::Stage::Current)
        .await?
        .with_context(|| format!("no current secret for {agent} in the vault"))?;
    let secret = shared::credential::Credential::from_secret(&stored)?.client_secret;
    eprintln!(
        "handing out the current secret of {agent} (version {version}); treat it as a password"
    );
    println!("client_id={client_id}\nclient_secret={}", secret.expose());
    Ok(())
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

async fn decide(
    api: &Api,
    c: &Client,
    id: &str,
    decision: Decision,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let body = DecisionBody {
        reason,
        action_hash: None,
    };
    let v = json_of(match decision {
        Decision::Approve => api.approve(id, &body).await,
        Decision::Deny => api.deny(id, &body).await,
    })?;
    let decision = match decision {
        Decision::Approve => "approve",
        Decision::Deny => "deny",
    };
    print(c, &v, |_| {
        println!(
            "approval {id}: {decision} queued; the workflow applies it (see `steward agents show`)"
        )
    });
    Ok(())
}

pub async fn whoami(c: &Client) -> anyhow::Result<()> {
    let me = Api::from_client(c).await?.whoami().await?;
    match me.token_id {
        Some(token) => println!("{} {} (token {token})", me.kind, me.id),
        None => println!("{} {}", me.kind, me.id),
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
                written = writeln!(out, "{line}");
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
