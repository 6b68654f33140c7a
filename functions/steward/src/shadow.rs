//! `steward shadow`: clients at the identity provider nobody registered (discovery).

use crate::Client;
use crate::cli::{Api, json_of, print};
use clap::Subcommand;
use shared::admin::{ClaimBody, ReleaseBody};
use shared::engine::discovery::Claim;

#[derive(Subcommand)]
pub enum ShadowCmd {
    /// List the IdP's clients now and register the unknown ones as shadow agents.
    Discover,
    /// Shadow agents waiting for a claim.
    List,
    /// Claim a shadow agent: it is onboarded with this owner and Steward takes over its
    /// credential (grants set to the approved scopes, a new secret in the vault, the old
    /// secrets removed).
    Claim {
        /// The client id (or the shadow agent's name).
        client: String,
        #[arg(long)]
        owner: String,
        #[arg(long)]
        team: String,
        #[arg(long)]
        environment: String,
        #[arg(long)]
        purpose: String,
        /// The registered name; the client's name when absent.
        #[arg(long)]
        name: Option<String>,
        /// Scopes to keep (repeatable); the client's current scopes when absent.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Let a shadow agent go: frozen now, then decommissioned (its creator or security).
    Release {
        client: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn shadow(cmd: ShadowCmd, c: &Client) -> anyhow::Result<()> {
    let api = Api::from_client(c).await?;
    match cmd {
        ShadowCmd::Discover => {
            let v = json_of(api.discover().await)?;
            print(c, &v, |v| {
                println!(
                    "{} clients at the identity provider, {} registered",
                    v["clients"], v["registered"]
                );
                for s in v["shadows"].as_array().into_iter().flatten() {
                    println!(
                        "shadow agent {} ({}) {}",
                        s["agent_id"].as_str().unwrap_or("?"),
                        s["workflow_id"].as_str().unwrap_or("?"),
                        if s["duplicate"].as_bool() == Some(true) {
                            "already known"
                        } else {
                            "found now: its creator or security is asked to claim it"
                        }
                    );
                }
            });
        }
        ShadowCmd::List => {
            let v = json_of(api.shadow_agents().await)?;
            print(c, &v, |v| {
                for a in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<40} {:<24} scopes: {}",
                        a["name"].as_str().unwrap_or("?"),
                        a["client_id"].as_str().unwrap_or("?"),
                        a["scopes"]
                            .as_array()
                            .map(|s| s
                                .iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(" "))
                            .unwrap_or_default()
                    );
                }
            });
        }
        ShadowCmd::Claim {
            client,
            owner,
            team,
            environment,
            purpose,
            name,
            scopes,
        } => {
            let body = ClaimBody {
                claim: Claim {
                    name,
                    owner,
                    team,
                    environment,
                    purpose,
                    scopes: (!scopes.is_empty()).then_some(scopes),
                    token_lifetime_secs: None,
                },
            };
            let v = json_of(api.claim_shadow_agent(&client, &body).await)?;
            print(c, &v, |v| {
                println!(
                    "claimed: onboarding {} → {}",
                    v["workflow_id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                )
            });
        }
        ShadowCmd::Release { client, reason } => {
            let body = ReleaseBody { reason };
            let v = json_of(api.release_shadow_agent(&client, &body).await)?;
            print(c, &v, |v| {
                println!(
                    "released: {} freezes the client, then decommissions it",
                    v["workflow_id"].as_str().unwrap_or("?")
                )
            });
        }
    }
    Ok(())
}
