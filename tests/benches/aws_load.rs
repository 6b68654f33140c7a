//! The DynamoDB load bench: `STEWARD_LOAD_WORKERS` concurrent workers (default 100) commit
//! the steps of `STEWARD_LOAD_AGENTS` agents (default 10,000) against moto (or DynamoDB
//! Local), and it prints the throughput, the commit latency and the retries per item key. It
//! fails on a hot item (see `Load::storm`).
//!
//! ```sh
//! target/aws-venv/bin/python tests/moto_serial_dynamodb.py -H 127.0.0.1 -p 5055 &
//! STEWARD_AWS_ENDPOINT=http://127.0.0.1:5055 cargo bench -p steward-e2e --bench aws_load
//! ```

#[path = "../tests/aws/load.rs"]
mod load;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let workers = env("STEWARD_LOAD_WORKERS", 100);
    let agents = env("STEWARD_LOAD_AGENTS", 10_000);
    let Ok(endpoint) = std::env::var(shared::aws::ENDPOINT_ENV) else {
        eprintln!(
            "aws_load: set {} to a DynamoDB endpoint (moto: target/aws-venv/bin/python \
             tests/moto_serial_dynamodb.py -H 127.0.0.1 -p 5055)",
            shared::aws::ENDPOINT_ENV
        );
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let load = rt.block_on(load::run(&endpoint, workers, agents));
    println!("{}", serde_json::to_string_pretty(&load.report).unwrap());
    if let Some(storm) = load.storm() {
        eprintln!("aws_load: a hot item: {storm}");
        std::process::exit(1);
    }
}
