//! `steward-aws config push | show`: the policy and people file of an AWS deployment, kept in its
//! table (never in template parameters or the functions' environment, which hold 4 KB). A
//! push checks both files first and lands whole or not at all; the functions pick it up within
//! a minute (`shared::wiring::aws::LiveStack`), without a redeploy. AWS credentials come from
//! the environment (`AWS_ACCESS_KEY_ID`, …; for a profile or SSO:
//! `eval "$(aws configure export-credentials --format env)"`); the push needs
//! `dynamodb:GetItem`/`BatchGetItem` and `TransactWriteItems` on the table.

use anyhow::{Context, bail};
use shared::aws::dynamodb::DynamoStore;
use shared::aws::dynamodb::config::{ConfigDocument, StoredConfig};
use shared::people_file::PeopleFileDirectory;
use shared::ports::Directory;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum ConfigCmd {
    /// Check the policy and/or people file and store them in the deployment's table; the
    /// functions use them within a minute.
    Push {
        #[command(flatten)]
        table: Table,
        /// The policy file (TOML).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The people file (TOML): owners, managers, approvers.
        #[arg(long)]
        people: Option<PathBuf>,
    },
    /// What is in force: each document's version, digest and when it was pushed.
    Show {
        #[command(flatten)]
        table: Table,
        /// Print this document's text instead (`policy` or `people`).
        #[arg(long, value_parser = ["policy", "people"])]
        text: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct Table {
    /// The stack's table (its `TableName` output).
    #[arg(long, env = "STEWARD_TABLE")]
    pub table: String,
}

fn store(table: &str, sdk: &aws_config::SdkConfig) -> DynamoStore {
    DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table)
}

async fn sdk() -> aws_config::SdkConfig {
    let endpoint = std::env::var(shared::aws::ENDPOINT_ENV).ok();
    if endpoint.is_none() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        eprintln!(
            "no AWS credentials in the environment; with a profile or SSO run \
             `eval \"$(aws configure export-credentials --format env)\"` first"
        );
    }
    shared::aws::sdk_config(endpoint.as_deref()).await
}

pub async fn config(cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Push {
            table,
            policy,
            people,
        } => push(&table.table, policy.as_deref(), people.as_deref()).await,
        ConfigCmd::Show { table, text } => show(&table.table, text.as_deref()).await,
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The two documents as they would be after the push, checked together: each parses, and
/// everyone the policy names as approver or operator is in the people file (else nobody could
/// ever act as them).
async fn check(policy: &str, people: &str) -> anyhow::Result<()> {
    let policy = shared::policy_file::parse(policy, "the policy").context("the policy")?;
    let people = PeopleFileDirectory::parse(people).context("the people file")?;
    let mut unknown = Vec::new();
    for email in policy.approvers.iter().chain(&policy.operators) {
        if people.person(email).await?.is_none() {
            unknown.push(email.as_str());
        }
    }
    if !unknown.is_empty() {
        bail!(
            "the policy names approvers or operators the people file does not have: {}; add \
             them to the people file (or remove them from the policy) and push again",
            unknown.join(", ")
        );
    }
    Ok(())
}

async fn push(table: &str, policy: Option<&Path>, people: Option<&Path>) -> anyhow::Result<()> {
    if policy.is_none() && people.is_none() {
        bail!("nothing to push: give --policy <file>, --people <file>, or both");
    }
    let sdk = sdk().await;
    let store = store(table, &sdk);
    let current = store
        .config()
        .await
        .with_context(|| format!("reading the configuration in table {table}"))?;
    let new_text = |doc: ConfigDocument, path: Option<&Path>| -> anyhow::Result<Option<String>> {
        path.map(read)
            .transpose()
            .map(|t| t.or_else(|| current.get(doc).map(|d| d.text.clone())))
    };
    let policy_text = new_text(ConfigDocument::Policy, policy)?;
    let people_text = new_text(ConfigDocument::People, people)?;
    match (&policy_text, &people_text) {
        (Some(p), Some(f)) => check(p, f).await?,
        (None, _) => bail!("the table has no policy yet: push --policy with the people file"),
        (_, None) => bail!("the table has no people file yet: push --people with the policy"),
    }
    let now = chrono::Utc::now();
    for (doc, path, text) in [
        (ConfigDocument::Policy, policy, policy_text),
        (ConfigDocument::People, people, people_text),
    ] {
        let (Some(path), Some(text)) = (path, text) else {
            continue;
        };
        let before = current.get(doc);
        if before.is_some_and(|d| d.text == text) {
            println!("{} unchanged ({})", doc.name(), path.display());
            continue;
        }
        let stored = store
            .put_config(doc, &text, before.map(|d| d.version), now)
            .await?;
        println!(
            "{} version {} pushed ({}, sha256 {})",
            doc.name(),
            stored.version,
            path.display(),
            &stored.sha256[..16]
        );
    }
    println!(
        "the functions use it within {} s",
        shared::wiring::aws::CONFIG_REFRESH.as_secs()
    );
    Ok(())
}

async fn show(table: &str, text: Option<&str>) -> anyhow::Result<()> {
    let sdk = sdk().await;
    let current: StoredConfig = store(table, &sdk)
        .config()
        .await
        .with_context(|| format!("reading the configuration in table {table}"))?;
    if let Some(name) = text {
        let doc = match name {
            "policy" => ConfigDocument::Policy,
            _ => ConfigDocument::People,
        };
        match current.get(doc) {
            Some(d) => print!("{}", d.text),
            None => bail!("no {name} has been pushed to table {table}"),
        }
        return Ok(());
    }
    for doc in ConfigDocument::ALL {
        match current.get(doc) {
            Some(d) => println!(
                "{:<7} version {:<4} sha256 {}  pushed {}",
                doc.name(),
                d.version,
                d.sha256,
                d.pushed_at.to_rfc3339()
            ),
            None => println!("{:<7} not pushed", doc.name()),
        }
    }
    Ok(())
}
