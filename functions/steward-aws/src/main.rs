//! `steward-aws`: what an operator does to an AWS deployment without going through its API.
//! Kept apart from `steward` so the local server and CLI link no AWS SDK.

mod config;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "steward-aws",
    version,
    about = "Steward on AWS: the deployment's policy and people file"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The policy and people file of the deployment, kept in its table: push, show.
    Config {
        #[command(subcommand)]
        command: config::ConfigCmd,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Config { command } => config::config(command).await,
    }
}
