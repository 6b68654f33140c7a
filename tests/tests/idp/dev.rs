//! The development IdP against the port's contract.

use super::conformance::{self, Caps};
use shared::embedded::sqlite::{Db, Durability};
use shared::idp::dev::DevIdp;
use std::sync::Arc;

#[tokio::test]
async fn dev_idp_follows_the_identity_provider_contract() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap());
    let idp = DevIdp::open(db, &dir.path().join("idp.key"), "http://127.0.0.1:1").unwrap();
    let caps = Caps {
        max_secrets: 2,
        lifecycle: true,
    };
    conformance::run(&idp, caps, "dev", ["erp.read", "erp.write"]).await;
}

#[tokio::test]
async fn dev_idp_key_clients_follow_the_identity_provider_contract() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap());
    let idp = DevIdp::open(db, &dir.path().join("idp.key"), "http://127.0.0.1:1").unwrap();
    conformance::run_keys(&idp, "dev", ["erp.read", "erp.write"]).await;
}
