//! `steward report`: the posture report (a risk score per agent, the zero-trust checklist, the
//! organisation's maturity level; see `shared::posture`). It reads the data directory's database
//! directly, so it needs no running server (SQLite's WAL lets it read beside one).

use crate::Client;
use anyhow::{Context, bail};
use shared::embedded::{Db, Durability};
use shared::ports::store::StoreRead;
use shared::posture::{PostureInput, PostureReport};
use std::path::PathBuf;

/// The cursor the discovery sweep writes each time it has listed the identity provider's
/// clients: its presence means discovery has run.
pub const DISCOVERY_CURSOR: &str = "discovery:last-sweep";

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The policy the server runs with (risk thresholds: rotation ages, sensitive scopes,
    /// review period, detection rules).
    #[arg(long, env = "STEWARD_POLICY", default_value = "policy.example.toml")]
    pub policy: PathBuf,
    /// `table` (aligned text) or `json`.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Write the report to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the audit trail is streamed as it is written (e.g. `splunk-hec`), if it is.
    /// Steward has no built-in export: an operator who ships `GET /api/audit` (or the AWS
    /// deployment's records) to a SIEM says so here. Counts for the `audit_streaming` check
    /// and the detection maturity level; empty means not streamed.
    #[arg(long, env = "STEWARD_AUDIT_STREAM")]
    pub audit_stream: Option<String>,
}

pub async fn report(a: ReportArgs, c: &Client) -> anyhow::Result<()> {
    let policy = shared::policy_file::load(&a.policy)?;
    let db_path = c.data_dir.join("steward.db");
    if !db_path.is_file() {
        bail!(
            "no Steward database at {}: pass the server's --data-dir (or STEWARD_DATA_DIR)",
            db_path.display()
        );
    }
    let db = Db::open(&db_path, Durability::Wal)
        .with_context(|| format!("opening {}", db_path.display()))?;
    let agents = db.agents().await.context("reading the agent registry")?;
    let discovery_ran = db
        .cursor(DISCOVERY_CURSOR)
        .await
        .context("reading the discovery cursor")?
        .is_some();
    let audit_streaming = a
        .audit_stream
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty());
    let report = PostureReport::build(&PostureInput {
        agents: &agents,
        policy: &policy,
        now: chrono::Utc::now(),
        audit_streaming,
        discovery_ran,
    });
    let text = if a.format == "json" || c.json {
        let mut j = report.to_json()?;
        j.push('\n');
        j
    } else {
        report.to_table()
    };
    match &a.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "posture report written to {} ({} agents, maturity: {})",
                path.display(),
                report.summary.agents,
                report.summary.maturity.label()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
