//! `steward campaigns`: launch access-review campaigns, follow their progress, answer items and
//! export the evidence report.

use crate::Client;
use crate::cli::Api;
use crate::cli::json_of;
use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use shared::admin::{CampaignBody, ReviewAnswerBody};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CampaignsCmd {
    /// Launch a campaign: one review item per active agent in scope, sent to its owner.
    Launch {
        /// Short id, e.g. 2026-q4 (lowercase letters, digits, dashes).
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Only these environments (repeatable).
        #[arg(long = "env")]
        environments: Vec<String>,
        /// Only these teams (repeatable).
        #[arg(long = "team")]
        teams: Vec<String>,
        /// Only these risk levels: high, medium, low (repeatable).
        #[arg(long = "risk")]
        risk: Vec<String>,
        /// Answers are due this long from now (e.g. 14days); default: the policy's.
        #[arg(long)]
        due: Option<String>,
        /// What unanswered items get: revoke, freeze, keep-and-flag; default: the policy's.
        #[arg(long)]
        unanswered: Option<String>,
    },
    /// Every campaign with its progress.
    List,
    /// One campaign's progress: a bar and counts.
    Show { id: String },
    /// Answer a review item (what the Slack buttons do).
    Decide {
        item: String,
        /// keep, reduce or revoke.
        decision: String,
        /// Scopes to drop (reduce; repeatable).
        #[arg(long = "drop")]
        drop: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The evidence report: a Markdown summary on stdout, or JSON / CSV / Markdown files.
    Report {
        id: String,
        /// json, csv or md (printed to stdout).
        #[arg(long)]
        format: Option<String>,
        /// Write ID.json, ID.csv and ID.md (ID: the campaign) into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `[#########-----------]  45%` for `done` of `total`.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done as f64 / total as f64) * width as f64).round() as usize
    }
    .min(width);
    let pct = (done * 100).checked_div(total).unwrap_or(0);
    format!(
        "[{}{}] {pct:>3}%",
        "#".repeat(filled),
        "-".repeat(width - filled)
    )
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

fn progress_lines(v: &Value) -> String {
    let items = n(v, "items");
    let decided = n(v, "decided");
    format!(
        "{} ({}) — {} · {}, due {}\n  {} {decided}/{items} resolved\n  keep {} · reduce {} · revoke {} · unanswered→{} {} · open {} · escalated {} · applying {}{}",
        v["name"].as_str().unwrap_or("?"),
        v["id"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        v["scope"].as_str().unwrap_or("?"),
        v["deadline"].as_str().unwrap_or("?"),
        bar(decided, items, 30),
        n(v, "keep"),
        n(v, "reduce"),
        n(v, "revoke"),
        v["unanswered_default"].as_str().unwrap_or("?"),
        n(v, "defaulted"),
        n(v, "open"),
        n(v, "escalated"),
        n(v, "applying"),
        match n(v, "action_failed") {
            0 => String::new(),
            f => format!(" · {f} actions FAILED"),
        }
    )
}

pub async fn campaigns(cmd: CampaignsCmd, c: &Client) -> anyhow::Result<()> {
    let api = Api::from_client(c).await?;
    match cmd {
        CampaignsCmd::Launch {
            id,
            name,
            environments,
            teams,
            risk,
            due,
            unanswered,
        } => {
            let deadline = match due {
                None => None,
                Some(d) => {
                    let secs = humantime::parse_duration(&d)
                        .with_context(|| format!("--due `{d}` is not a duration (e.g. 14days)"))?;
                    Some(chrono::Utc::now() + chrono::Duration::from_std(secs)?)
                }
            };
            // The CLI's words are the API's enum values (`--unanswered keep-flag`).
            let unanswered = unanswered
                .map(|u| serde_json::from_value(json!(u.replace('-', "_"))))
                .transpose()
                .context("--unanswered is not one of revoke, freeze, keep-flag")?;
            let risk = serde_json::from_value(json!(risk))
                .context("--risk is not one of high, medium, low")?;
            let body = CampaignBody {
                id: id.clone(),
                name,
                scope: statemachines::review_campaign::CampaignScope {
                    environments,
                    teams,
                    risk,
                },
                deadline,
                unanswered,
            };
            let v = json_of(api.launch_campaign(&body).await)?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "campaign {id} launched ({}); follow it with `steward campaigns show {id}`",
                    v["state"].as_str().unwrap_or("?")
                );
            }
        }
        CampaignsCmd::List => {
            let v = json_of(api.campaigns().await)?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let list = v.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no campaigns yet; launch one with `steward campaigns launch`");
                }
                for p in list {
                    println!("{}", progress_lines(&p));
                }
            }
        }
        CampaignsCmd::Show { id } => {
            let v = json_of(api.campaign(&id).await)?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", progress_lines(&v));
            }
        }
        CampaignsCmd::Decide {
            item,
            decision,
            drop,
            reason,
        } => {
            let body = ReviewAnswerBody {
                decision: decision.clone(),
                drop,
                reason,
            };
            let v = json_of(api.answer_review(&item, &body).await)?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{decision} on {item} received; it applies in a moment");
            }
        }
        CampaignsCmd::Report { id, format, out } => {
            let get = |f: &'static str| api.campaign_report(&id, f);
            let text = |v: String| v;
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for (f, ext) in [("json", "json"), ("csv", "csv"), ("md", "md")] {
                    let path = dir.join(format!("{id}.{ext}"));
                    std::fs::write(&path, text(get(f).await?))
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("wrote {}", path.display());
                }
                return Ok(());
            }
            let f = match format.as_deref().unwrap_or("md") {
                "json" => "json",
                "csv" => "csv",
                "md" | "markdown" => "md",
                other => bail!("--format `{other}` is not one of json, csv, md"),
            };
            print!("{}", text(get(f).await?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn the_bar_shows_the_share_done() {
        assert_eq!(bar(0, 10, 10), "[----------]   0%");
        assert_eq!(bar(5, 10, 10), "[#####-----]  50%");
        assert_eq!(bar(10, 10, 10), "[##########] 100%");
        assert_eq!(bar(0, 0, 4), "[----]   0%");
    }
}
