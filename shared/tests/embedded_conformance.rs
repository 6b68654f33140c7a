//! The port conformance suites against the embedded adapters (SQLite store and queue, file
//! vault), one test per property, plus the properties only the embedded adapters have (key
//! files, file modes, what is on disk).

mod conformance;

use conformance::store::Opener;
use conformance::{Subject, queue, store, vault};
use shared::embedded::queue::SqliteQueue;
use shared::embedded::vault::FileVault;
use shared::embedded::{Db, Durability};
use shared::ports::{Queue, Store, Vault};
use std::sync::Arc;
use std::time::Duration;

/// The embedded queue's clock is in milliseconds.
const TICK: Duration = Duration::from_millis(40);

/// Fresh SQLite storage in its own temp dir; each call of the opener opens the same file again.
fn opener(durability: Durability) -> Opener {
    let dir = tempfile::tempdir().unwrap();
    Box::new(move || {
        let db = Db::open(&dir.path().join("steward.db"), durability).unwrap();
        Arc::new(db) as Arc<dyn Store>
    })
}

fn fresh_queue() -> Subject<dyn Queue> {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap());
    Subject::new(Arc::new(SqliteQueue::new(db)) as Arc<dyn Queue>, dir)
}

fn fresh_vault() -> Subject<dyn Vault> {
    let dir = tempfile::tempdir().unwrap();
    let vault = FileVault::open(&dir.path().join("vault")).unwrap();
    Subject::new(Arc::new(vault) as Arc<dyn Vault>, dir)
}

conformance::store_suite!(store_fsync, opener(Durability::Fsync), tokio::test);
conformance::store_suite!(store_wal, opener(Durability::Wal), tokio::test);
conformance::queue_suite!(queue_sqlite, fresh_queue(), TICK, tokio::test);
conformance::vault_suite!(vault_file, fresh_vault(), tokio::test);
conformance::tokens_suite!(tokens_sqlite, fresh_tokens(), tokio::test);

fn fresh_tokens() -> Subject<dyn shared::ports::PersonalTokens> {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap();
    Subject::new(Arc::new(db) as Arc<dyn shared::ports::PersonalTokens>, dir)
}

/// The aggregate entry points (what the AWS adapters will call) run every property.
#[tokio::test]
async fn whole_suites() {
    store::run_store_suite(|| opener(Durability::Wal)).await;
    queue::run_queue_suite(fresh_queue, TICK).await;
    vault::run_vault_suite(fresh_vault).await;
}

/// The queue's max receive count is configurable and honoured.
#[tokio::test]
async fn queue_custom_max_receives() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap());
    let q = SqliteQueue::with_max_receives(db, 2);
    assert_eq!(q.max_receives(), 2);
    queue::dead_letter_after_max_receives(&q, TICK).await;
    assert_eq!(
        SqliteQueue::new(Arc::new(
            Db::open(&dir.path().join("other.db"), Durability::Wal).unwrap()
        ))
        .max_receives(),
        shared::embedded::queue::MAX_RECEIVES
    );
}

mod sqlite_queue_only {
    use super::*;

    /// A receipt from an earlier receive acks nothing: the message was redelivered to someone
    /// else, who is still working on it.
    #[tokio::test]
    async fn a_stale_receipt_acks_nothing() {
        let q = fresh_queue();
        let q = &*q.port;
        q.send(vec![queue::msg("g", "d1", "work")]).await.unwrap();
        let first = q.receive(1, TICK).await.unwrap();
        tokio::time::sleep(TICK * 2).await;
        let second = q.receive(1, TICK * 100).await.unwrap();
        assert_eq!(second[0].receive_count, 2);
        q.ack(std::slice::from_ref(&first[0].receipt))
            .await
            .unwrap();
        assert_eq!(q.depth().await.unwrap(), 1, "the stale ack removed nothing");
        q.ack(std::slice::from_ref(&second[0].receipt))
            .await
            .unwrap();
        assert_eq!(q.depth().await.unwrap(), 0);
    }
}

mod sqlite_only {
    use super::*;
    use conformance::store::{approval, audit_record, step};
    use shared::audit::chain_hash;
    use shared::ports::store::{ApprovalChange, StoreError, TimerChange};
    use statemachines::{AgentStatus, ApprovalOutcome};

    /// A commit that fails after its first writes (closing an approval that does not exist)
    /// leaves nothing behind: it is one transaction.
    #[tokio::test]
    async fn a_commit_failing_part_way_writes_nothing() {
        let open = opener(Durability::Fsync);
        let s = open();
        s.commit(step("wf-a", 1)).await.unwrap();
        let mut c = step("wf-a", 2);
        c.timers = vec![TimerChange::Set(store::timer("wf-a", "t", 5))];
        c.agents = vec![store::agent(
            "agt-a",
            "a-agent-prod",
            AgentStatus::Active,
            2,
        )];
        c.approvals = vec![
            ApprovalChange::Open(approval("ap-1", "wf-a")),
            ApprovalChange::Close {
                id: "ap-missing".into(),
                outcome: ApprovalOutcome::Expired { at: store::at(3) },
            },
        ];
        c.audit = vec![audit_record("r1")];
        let err = s.commit(c).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(..)), "{err:?}");
        assert_eq!(s.instance("wf-a").await.unwrap().unwrap().version, 1);
        assert_eq!(s.history("wf-a").await.unwrap().len(), 1);
        assert!(s.due_timers(store::at(100), 10).await.unwrap().is_empty());
        assert!(s.agents().await.unwrap().is_empty());
        assert_eq!(s.approval("ap-1").await.unwrap(), None);
        assert!(s.audit(0, 10).await.unwrap().is_empty());
        // The next step goes through normally.
        s.commit(step("wf-a", 2)).await.unwrap();
    }

    /// Audit appends are idempotent by record id (a retried append of the same record), and the
    /// chain stays unbroken around the ignored duplicate.
    #[tokio::test]
    async fn duplicate_audit_id_is_ignored_and_the_chain_holds() {
        let open = opener(Durability::Fsync);
        let s = open();
        s.append_audit(vec![audit_record("r1")]).await.unwrap();
        s.append_audit(vec![audit_record("r1"), audit_record("r2")])
            .await
            .unwrap();
        let all = s.audit(0, 10).await.unwrap();
        let ids: Vec<&str> = all.iter().map(|c| c.record.id.as_str()).collect();
        assert_eq!(ids, vec!["r1", "r2"]);
        assert_eq!(all[0].hash, chain_hash(&all[0].prev_hash, &all[0].record));
        assert_eq!(all[1].hash, chain_hash(&all[1].prev_hash, &all[1].record));
        assert_eq!(
            all[1].prev_hash, all[0].hash,
            "r2 must link to the stored r1, not to the dropped duplicate"
        );
    }

    /// In a group commit, a step that fails part-way (after its first writes) rolls back alone:
    /// its savepoint, not the batch.
    #[tokio::test]
    async fn commit_batch_rolls_back_a_step_failing_part_way() {
        let open = opener(Durability::Fsync);
        let s = open();
        s.commit(step("wf-b", 1)).await.unwrap();
        let mut a = step("wf-a", 1);
        a.audit = vec![audit_record("a-audit")];
        let mut bad = step("wf-b", 2);
        bad.timers = vec![TimerChange::Set(store::timer("wf-b", "t", 5))];
        bad.agents = vec![store::agent(
            "agt-b",
            "b-agent-prod",
            AgentStatus::Active,
            2,
        )];
        bad.approvals = vec![
            ApprovalChange::Open(approval("ap-b", "wf-b")),
            ApprovalChange::Close {
                id: "ap-missing".into(),
                outcome: ApprovalOutcome::Expired { at: store::at(3) },
            },
        ];
        bad.audit = vec![audit_record("b-audit")];
        let mut c = step("wf-c", 1);
        c.audit = vec![audit_record("c-audit")];
        let results = s.commit_batch(vec![a, bad, c]).await.unwrap();
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(matches!(results[1], Err(StoreError::Corrupt(..))));
        assert_eq!(s.instance("wf-b").await.unwrap().unwrap().version, 1);
        assert_eq!(s.history("wf-b").await.unwrap().len(), 1);
        assert!(s.due_timers(store::at(100), 10).await.unwrap().is_empty());
        assert_eq!(s.agent("agt-b").await.unwrap(), None);
        assert_eq!(s.approval("ap-b").await.unwrap(), None);
        let audit = s.audit(0, 10).await.unwrap();
        let ids: Vec<&str> = audit.iter().map(|c| c.record.id.as_str()).collect();
        assert_eq!(ids, vec!["a-audit", "c-audit"]);
        assert_eq!(audit[1].prev_hash, audit[0].hash);
        assert!(s.instance("wf-a").await.unwrap().is_some());
        assert!(s.instance("wf-c").await.unwrap().is_some());
    }

    #[test]
    fn db_remembers_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.db");
        let db = Db::open(&path, Durability::Wal).unwrap();
        assert_eq!(db.path(), path);
        assert!(path.exists());
    }
}

mod file_vault_only {
    use super::*;
    use base64::Engine as _;
    use shared::Secret;
    use shared::embedded::vault::KEY_ENV;
    use shared::ports::vault::{Stage, VaultError};
    use std::path::Path;

    const PLAINTEXT: &str = "s3cr3t-value-that-must-not-hit-the-disk-7c1e";

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    fn no_env_key() {
        assert!(
            std::env::var_os(KEY_ENV).is_none(),
            "these tests use the key file; unset {KEY_ENV}"
        );
    }

    async fn vault_with_secret(dir: &Path) -> FileVault {
        let v = FileVault::open(dir).unwrap();
        v.put("agt-1", vault::V1, &Secret::new(PLAINTEXT), Stage::Current)
            .await
            .unwrap();
        v
    }

    /// The same directory (and key file) opened again reads the values back.
    #[tokio::test]
    async fn reopened_vault_reads_back() {
        no_env_key();
        let dir = tempfile::tempdir().unwrap();
        drop(vault_with_secret(dir.path()).await);
        let again = FileVault::open(dir.path()).unwrap();
        let (id, s) = again.get("agt-1", Stage::Current).await.unwrap().unwrap();
        assert_eq!((id.as_str(), s.expose()), (vault::V1, PLAINTEXT));
    }

    /// Another key cannot read the values: `Decrypt`, not garbage.
    #[tokio::test]
    async fn wrong_key_fails_with_decrypt() {
        no_env_key();
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("a");
        drop(vault_with_secret(&original).await);
        let copy = dir.path().join("b");
        copy_dir(&original, &copy);
        let other_key: [u8; 32] = rand::random();
        std::fs::write(
            copy.join("vault.key"),
            base64::engine::general_purpose::STANDARD.encode(other_key),
        )
        .unwrap();
        let wrong = FileVault::open(&copy).unwrap();
        match wrong.get("agt-1", Stage::Current).await {
            Err(VaultError::Decrypt(name)) => assert_eq!(name, "agt-1"),
            other => panic!("expected Decrypt, got {other:?}"),
        }
        // Listing needs no key.
        assert_eq!(wrong.versions("agt-1").await.unwrap().len(), 1);
        // The original still reads.
        let right = FileVault::open(&original).unwrap();
        assert!(right.get("agt-1", Stage::Current).await.unwrap().is_some());
    }

    /// A key of the wrong length is refused at open.
    #[test]
    fn short_key_is_refused() {
        no_env_key();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vault.key"),
            base64::engine::general_purpose::STANDARD.encode([7u8; 16]),
        )
        .unwrap();
        assert!(matches!(
            FileVault::open(dir.path()),
            Err(VaultError::Io(m)) if m.contains("32 bytes")
        ));
    }

    /// The vault's file for a secret name (hex of the name).
    fn secret_file(name: &str) -> String {
        format!("{}.secret.json", hex::encode(name))
    }

    /// A value is bound to its secret name: a file copied under another name does not decrypt.
    #[tokio::test]
    async fn value_is_bound_to_its_name() {
        no_env_key();
        let dir = tempfile::tempdir().unwrap();
        let v = vault_with_secret(dir.path()).await;
        std::fs::copy(
            dir.path().join(secret_file("agt-1")),
            dir.path().join(secret_file("agt-2")),
        )
        .unwrap();
        assert!(matches!(
            v.get("agt-2", Stage::Current).await,
            Err(VaultError::Decrypt(_))
        ));
    }

    /// Nothing in the vault directory contains the plaintext.
    #[tokio::test]
    async fn plaintext_is_not_on_disk() {
        no_env_key();
        let dir = tempfile::tempdir().unwrap();
        let v = vault_with_secret(dir.path()).await;
        v.put(
            "agt-1",
            vault::V2,
            &Secret::new(format!("{PLAINTEXT}-2")),
            Stage::Pending,
        )
        .await
        .unwrap();
        let mut files = 0;
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(PLAINTEXT));
            assert!(
                !text.contains(&base64::engine::general_purpose::STANDARD.encode(PLAINTEXT)[..20])
            );
            files += 1;
        }
        assert!(files >= 2, "a key file and a secret file");
    }

    /// The sealed values in a secret's file, by version id.
    fn sealed(dir: &Path, name: &str) -> Vec<(String, String)> {
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(secret_file(name))).unwrap()).unwrap();
        file["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["version_id"].as_str().unwrap().to_string(),
                    v["ciphertext"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// A version that lost its last stage is deleted from the file in the same write: rotated
    /// out twice, or a pending version replaced, its ciphertext is gone, so the key beside it
    /// cannot decrypt an old secret.
    #[tokio::test]
    async fn a_version_without_a_stage_is_deleted_from_disk() {
        no_env_key();
        let dir = tempfile::tempdir().unwrap();
        let v = vault_with_secret(dir.path()).await;
        let first = sealed(dir.path(), "agt-1");
        assert_eq!(first.len(), 1);
        let put = |id, value: &str, stage| {
            let (v, value) = (&v, Secret::new(value));
            async move { v.put("agt-1", id, &value, stage).await.unwrap() }
        };
        put(vault::V2, "second", Stage::Current).await;
        let ids = |dir: &Path| -> Vec<String> {
            sealed(dir, "agt-1").into_iter().map(|(id, _)| id).collect()
        };
        assert_eq!(
            ids(dir.path()),
            vec![vault::V1, vault::V2],
            "V1 is AWSPREVIOUS"
        );
        put(vault::V3, "third", Stage::Current).await;
        assert_eq!(ids(dir.path()), vec![vault::V2, vault::V3]);
        let text = std::fs::read_to_string(dir.path().join(secret_file("agt-1"))).unwrap();
        assert!(
            !text.contains(&first[0].1),
            "V1's ciphertext is still on disk"
        );
        let listed: Vec<String> = v
            .versions("agt-1")
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.version_id)
            .collect();
        assert_eq!(listed, vec![vault::V2, vault::V3]);

        // A pending version replaced by a newer pending one goes too.
        const V4: &str = "44444444-4444-4444-8444-444444444444";
        const V5: &str = "55555555-5555-4555-8555-555555555555";
        put(V4, "fourth", Stage::Pending).await;
        put(V5, "fifth", Stage::Pending).await;
        assert_eq!(ids(dir.path()), vec![vault::V2, vault::V3, V5]);
    }

    /// The key file and the secret files are readable by the owner only.
    #[cfg(unix)]
    #[tokio::test]
    async fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        no_env_key();
        let dir = tempfile::tempdir().unwrap();
        drop(vault_with_secret(dir.path()).await);
        for name in ["vault.key".to_string(), secret_file("agt-1")] {
            let mode = std::fs::metadata(dir.path().join(&name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name} has mode {:o}", mode & 0o777);
        }
        let key = std::fs::read_to_string(dir.path().join("vault.key")).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .unwrap();
        assert_eq!(raw.len(), 32);
    }

    /// Two different secret names must be two secrets. The file name sanitises every character
    /// outside [A-Za-z0-9_-] to `_`, so `team/agent` and `team_agent` share one file.
    #[tokio::test]
    async fn names_differing_in_punctuation_are_distinct() {
        no_env_key();
        let dir = tempfile::tempdir().unwrap();
        let v = FileVault::open(dir.path()).unwrap();
        v.put("team/agent", vault::V1, &Secret::new("one"), Stage::Current)
            .await
            .unwrap();
        v.put("team_agent", vault::V1, &Secret::new("two"), Stage::Current)
            .await
            .unwrap();
        let a = v.get("team/agent", Stage::Current).await.unwrap().unwrap();
        let b = v.get("team_agent", Stage::Current).await.unwrap().unwrap();
        assert_eq!(a.1.expose(), "one");
        assert_eq!(b.1.expose(), "two");
    }
}

/// A message whose receives all ended in a dying process (none answered, none audited by the
/// engine) is dead-lettered at its next receive, and the move is audited: nothing disappears
/// from the queue without a record.
#[tokio::test]
async fn a_message_held_by_processes_that_died_is_dead_lettered_with_an_audit_record() {
    use shared::ports::queue::OutMessage;
    use shared::ports::store::StoreRead;
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap());
    let q = SqliteQueue::with_max_receives(db.clone(), 2);
    q.send(vec![OutMessage {
        group: "wf-1".into(),
        dedupe_id: "m-1".into(),
        body: "{\"msg\":\"run\"}".into(),
        delay: Duration::ZERO,
    }])
    .await
    .unwrap();
    for _ in 0..2 {
        assert_eq!(
            q.receive(1, Duration::from_secs(30)).await.unwrap().len(),
            1
        );
        // The process dies holding it; the next one recovers what was in flight.
        assert_eq!(q.recover_in_flight().unwrap(), 1);
    }
    assert!(
        q.receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(q.dead_letters(10).await.unwrap().len(), 1);
    assert_eq!(q.depth().await.unwrap(), 0);
    let audit = db.audit(0, 10).await.unwrap();
    let dead: Vec<_> = audit
        .iter()
        .filter(|a| a.record.body["unmapped"]["steward_event"] == "dead_letter")
        .collect();
    assert_eq!(dead.len(), 1, "{audit:?}");
    assert!(
        dead[0].record.body["unmapped"]["error"]
            .as_str()
            .unwrap()
            .contains("without an answer")
    );
}

conformance::sessions_suite!(sessions_sqlite, fresh_sessions(), tokio::test);

fn fresh_sessions() -> Subject<dyn shared::ports::Sessions> {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap();
    Subject::new(Arc::new(db) as Arc<dyn shared::ports::Sessions>, dir)
}
