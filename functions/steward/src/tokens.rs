//! `steward tokens`: personal API tokens for the scripts a signed-in person runs. Each acts as
//! that person (same roles, same audit trail, token id named), is shown once when created,
//! and can be listed and revoked. Creating one needs a sign-in (`steward login`), not a token.

use crate::Client;
use crate::cli::{Api, json_of, print};
use shared::admin::TokenCreateBody;

#[derive(clap::Subcommand)]
pub enum TokensCmd {
    /// Create a token (printed once: store it where the script reads it).
    Create {
        /// What it is for (`ci`, `nightly-report`).
        #[arg(long)]
        name: String,
        /// How long it lives, e.g. 30d or 12h (default 30 days, at most 365).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Your tokens, live, expired and revoked (never their values).
    List,
    /// Revoke one of your tokens now.
    Revoke { id: String },
}

pub async fn tokens(cmd: TokensCmd, c: &Client) -> anyhow::Result<()> {
    let api = Api::from_client(c).await?;
    match cmd {
        TokensCmd::Create { name, ttl } => {
            let created = api.create_token(&TokenCreateBody { name, ttl }).await?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "token {} `{}` acts as you until {}; it is shown only now (send it as `Authorization: Bearer …`, or `STEWARD_TOKEN`)",
                    created.view.id,
                    created.view.name,
                    created.view.expires_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
        TokensCmd::List => {
            let v = json_of(api.tokens().await)?;
            print(c, &v, |v| {
                let list = v.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!(
                        "no personal tokens; create one with `steward tokens create --name …`"
                    );
                }
                for t in list {
                    let state = if !t["revoked_at"].is_null() {
                        "revoked".to_string()
                    } else {
                        format!("until {}", t["expires_at"].as_str().unwrap_or("?"))
                    };
                    println!(
                        "{}  {:<20} {state}",
                        t["id"].as_str().unwrap_or("?"),
                        t["name"].as_str().unwrap_or("?")
                    );
                }
            });
        }
        TokensCmd::Revoke { id } => {
            let v = json_of(api.revoke_token(&id).await)?;
            print(c, &v, |v| {
                println!(
                    "{} revoked at {}",
                    v["id"].as_str().unwrap_or("?"),
                    v["revoked_at"].as_str().unwrap_or("?")
                )
            });
        }
    }
    Ok(())
}
