//! The port conformance suites (shared/tests/conformance, the code the embedded adapters pass)
//! on the AWS adapters against moto, one test per property, plus what only these adapters do.

use crate::conformance::store::Opener;
use crate::conformance::{Subject, queue, store};
use crate::moto;
use shared::aws::dynamodb::DynamoStore;
use shared::aws::secrets_manager::SecretsManagerVault;
use shared::ports::store::{StoreRead, StoreWrite};
use shared::ports::{Queue, Store, Vault};
use std::sync::Arc;
use std::time::Duration;

/// SQS counts visibility and delays in whole seconds.
const TICK: Duration = Duration::from_secs(1);

/// A fresh table; each call of the opener opens a new client on the same table.
fn opener() -> Opener {
    let table = moto::block_on(async { moto::fresh_table(&moto::sdk().await).await });
    Box::new(move || {
        let sdk = moto::block_on(moto::sdk());
        Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            table.clone(),
        )) as Arc<dyn Store>
    })
}

fn fresh_queue() -> Subject<dyn Queue> {
    let q = moto::block_on(async {
        moto::fresh_queue(&moto::sdk().await, 3, Duration::from_secs(30)).await
    });
    Subject::new(Arc::new(q) as Arc<dyn Queue>, ())
}

fn fresh_vault() -> Subject<dyn Vault> {
    let sdk = moto::block_on(moto::sdk());
    let v = SecretsManagerVault::new(
        aws_sdk_secretsmanager::Client::new(&sdk),
        format!("{}/", moto::unique("steward")),
        None,
    );
    Subject::new(Arc::new(v) as Arc<dyn Vault>, ())
}

crate::conformance::store_suite!(
    store_dynamodb,
    opener(),
    tokio::test(flavor = "multi_thread")
);
crate::conformance::queue_suite!(
    queue_sqs,
    fresh_queue(),
    TICK,
    tokio::test(flavor = "multi_thread")
);
crate::conformance::vault_suite!(
    vault_secrets_manager,
    fresh_vault(),
    tokio::test(flavor = "multi_thread")
);
crate::conformance::vault_suite!(
    vault_dynamodb_kms,
    fresh_envelope_vault(),
    tokio::test(flavor = "multi_thread")
);

/// The KMS-envelope vault on a fresh table, sealing under a fresh KMS key.
fn fresh_envelope_vault() -> Subject<dyn Vault> {
    let (table, key_id, sdk) = moto::block_on(async {
        let sdk = moto::sdk().await;
        let table = moto::fresh_table(&sdk).await;
        let key = aws_sdk_kms::Client::new(&sdk)
            .create_key()
            .description("steward vault test key")
            .send()
            .await
            .unwrap();
        let key_id = key.key_metadata().unwrap().key_id().to_string();
        (table, key_id, sdk)
    });
    let v = shared::aws::envelope_vault::EnvelopeVault::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        aws_sdk_kms::Client::new(&sdk),
        table,
        key_id,
    );
    Subject::new(Arc::new(v) as Arc<dyn Vault>, ())
}

crate::conformance::tokens_suite!(
    tokens_dynamodb,
    fresh_tokens(),
    tokio::test(flavor = "multi_thread")
);

fn fresh_tokens() -> Subject<dyn shared::ports::PersonalTokens> {
    let table = moto::block_on(async { moto::fresh_table(&moto::sdk().await).await });
    let sdk = moto::block_on(moto::sdk());
    Subject::new(
        Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table))
            as Arc<dyn shared::ports::PersonalTokens>,
        (),
    )
}

mod dynamodb_only {
    use super::*;
    use crate::conformance::store::{audit_record, step};
    use shared::aws::dynamodb::TIMER_SHARDS;

    /// Nothing is keyed by a constant: the items a step writes spread over per-workflow,
    /// per-agent and per-day partitions, and due timers over several index partitions.
    #[tokio::test(flavor = "multi_thread")]
    async fn no_item_is_keyed_by_a_constant() {
        let sdk = moto::sdk().await;
        let table = moto::fresh_table(&sdk).await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        let s = DynamoStore::new(client.clone(), table.clone());
        for i in 0..24 {
            let mut c = step(&format!("wf-{i}"), 1);
            c.timers = vec![shared::ports::store::TimerChange::Set(store::timer(
                &format!("wf-{i}"),
                "expiry",
                5,
            ))];
            c.audit = vec![audit_record(&format!("r{i}"))];
            s.commit(c).await.unwrap();
        }
        let items = client
            .scan()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        let pk =
            |i: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
             k: &str| {
                i.get(k)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
        let partitions: std::collections::HashSet<String> =
            items.iter().map(|i| pk(i, "PK")).collect();
        // 24 workflows, one audit day, the genesis marker.
        assert!(partitions.len() >= 26, "{partitions:?}");
        let shards: std::collections::HashSet<String> = items
            .iter()
            .map(|i| pk(i, "GSI1PK"))
            .filter(|p| !p.is_empty())
            .collect();
        assert!(
            shards.len() > 4 && shards.len() <= TIMER_SHARDS as usize,
            "due timers spread over index partitions: {shards:?}"
        );
        assert_eq!(s.due_timers(store::at(10), 100).await.unwrap().len(), 24);
    }

    /// The audit chain crosses midnight unbroken: the new day links to the old day's tip, seqs
    /// keep rising, paging crosses the partitions, and a writer still on yesterday after today
    /// started joins today instead of forking the chain.
    #[tokio::test(flavor = "multi_thread")]
    async fn audit_chain_crosses_midnight_without_forking() {
        use std::sync::atomic::{AtomicI64, Ordering};
        static NOW: AtomicI64 = AtomicI64::new(0);
        fn clock() -> chrono::DateTime<chrono::Utc> {
            chrono::DateTime::from_timestamp(NOW.load(Ordering::SeqCst), 0).unwrap()
        }
        let midnight = 1_795_392_000; // 2026-11-24T00:00:00Z
        let sdk = moto::sdk().await;
        let table = moto::fresh_table(&sdk).await;
        let store = || {
            DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table.clone()).with_clock(clock)
        };
        let (a, b) = (store(), store());
        NOW.store(midnight - 60, Ordering::SeqCst);
        a.append_audit(vec![audit_record("d1-a"), audit_record("d1-b")])
            .await
            .unwrap();
        NOW.store(midnight + 60, Ordering::SeqCst);
        b.append_audit(vec![audit_record("d2-a")]).await.unwrap();
        // A writer whose clock is still before midnight: it must not extend yesterday.
        NOW.store(midnight - 1, Ordering::SeqCst);
        a.append_audit(vec![audit_record("late")]).await.unwrap();
        NOW.store(midnight + 120, Ordering::SeqCst);
        b.append_audit(vec![audit_record("d2-b")]).await.unwrap();
        let chain = b.audit(0, 100).await.unwrap();
        let ids: Vec<&str> = chain.iter().map(|c| c.record.id.as_str()).collect();
        assert_eq!(ids, vec!["d1-a", "d1-b", "d2-a", "late", "d2-b"]);
        assert_eq!(chain[0].prev_hash, "0".repeat(64));
        for pair in chain.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash, "{:?}", pair[1].record.id);
            assert!(pair[1].seq > pair[0].seq);
        }
        // Paging resumes across the day boundary.
        assert_eq!(
            b.audit(chain[1].seq, 2).await.unwrap(),
            chain[2..4].to_vec()
        );
        // A repeated append of a stored id changes nothing.
        b.append_audit(vec![audit_record("d2-a")]).await.unwrap();
        assert_eq!(b.audit(0, 100).await.unwrap(), chain);
    }

    /// Two writers racing on the audit chain both land, and the chain stays one chain.
    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_appends_keep_one_chain() {
        let sdk = moto::sdk().await;
        let table = moto::fresh_table(&sdk).await;
        let s = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table));
        let mut tasks = Vec::new();
        for w in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..5 {
                    s.append_audit(vec![audit_record(&format!("w{w}-{i}"))])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let chain = s.audit(0, 100).await.unwrap();
        assert_eq!(chain.len(), 20);
        for pair in chain.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
    }
}

mod sqs_only {
    use super::*;
    use crate::conformance::queue::msg;
    use shared::aws::sqs::sqs_id;

    /// Groups and deduplication ids SQS would refuse (too long, spaces) still work.
    #[tokio::test(flavor = "multi_thread")]
    async fn ids_outside_the_sqs_alphabet_are_hashed() {
        assert_eq!(sqs_id("wf-1/2/0"), "wf-1/2/0");
        assert_eq!(sqs_id(&"x".repeat(200)).len(), 64);
        assert_eq!(sqs_id("has space").len(), 64);
        let q = fresh_queue();
        let q = &*q.port;
        let long = "g".repeat(300);
        q.send(vec![msg(&long, "with space", "body")])
            .await
            .unwrap();
        q.send(vec![msg(&long, "with space", "dup")]).await.unwrap();
        let got = q.receive(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "body");
    }

    /// The dead-letter queue is read without consuming it: an operator can still redrive.
    #[tokio::test(flavor = "multi_thread")]
    async fn dead_letters_are_peeked_not_consumed() {
        let q = fresh_queue();
        let q = &*q.port;
        queue::dead_letter_after_max_receives(q, TICK).await;
        assert_eq!(q.dead_letters(10).await.unwrap().len(), 1);
        assert_eq!(q.dead_letters(10).await.unwrap().len(), 1);
    }
}

mod secrets_manager_only {
    use super::*;
    use crate::conformance::vault::V1;
    use shared::Secret;
    use shared::aws::secrets_manager::RotationSchedule;
    use shared::ports::vault::Stage;

    /// A stored agent secret is wired to the rotation function. moto cannot run Lambda
    /// functions (it needs Docker), so the proof is Secrets Manager's own answer: it looked up
    /// exactly the configured function to invoke its testSecret step.
    #[tokio::test(flavor = "multi_thread")]
    async fn storing_a_secret_turns_on_its_rotation() {
        let sdk = moto::sdk().await;
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:steward-secret-rotation";
        let v = SecretsManagerVault::new(
            aws_sdk_secretsmanager::Client::new(&sdk),
            format!("{}/", moto::unique("steward")),
            None,
        )
        .with_rotation(RotationSchedule {
            function_arn: arn.into(),
            every_days: 60,
        });
        let err = v
            .put("agt-1", V1, &Secret::new("s1"), Stage::Current)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("turning on rotation") && err.contains(arn),
            "{err}"
        );
        // The value itself was stored first; a retry only retries the wiring.
        let (version, _) = v.get("agt-1", Stage::Current).await.unwrap().unwrap();
        assert_eq!(version, V1);
        let described = aws_sdk_secretsmanager::Client::new(&sdk)
            .describe_secret()
            .secret_id(v.secret_name("agt-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(described.rotation_lambda_arn(), Some(arn));
    }
}

mod envelope_only {
    use super::*;
    use shared::ports::vault::Stage;

    /// What only the KMS-envelope vault promises: the table holds no value in the clear, and a
    /// sealed version moved to another secret's item does not open (the secret and version are
    /// the KMS encryption context and the cipher's associated data).
    #[tokio::test(flavor = "multi_thread")]
    async fn the_table_holds_no_value_and_a_moved_version_does_not_open() {
        let sdk = moto::sdk().await;
        let table = moto::fresh_table(&sdk).await;
        let kms = aws_sdk_kms::Client::new(&sdk);
        let key_id = kms
            .create_key()
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .key_id()
            .to_string();
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let vault = shared::aws::envelope_vault::EnvelopeVault::new(
            dynamodb.clone(),
            kms,
            table.clone(),
            key_id,
        );
        let value = shared::Secret::new("client-secret-that-must-never-be-stored-plain");
        let version = "0123456789abcdef0123456789abcdef";
        vault
            .put("agt-a", version, &value, Stage::Current)
            .await
            .unwrap();
        let items = dynamodb
            .scan()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        let text = format!("{items:?}");
        assert!(text.contains("VAULT#agt-a"), "{text}");
        assert!(!text.contains(value.expose()), "the value is sealed");

        // Copy agt-a's item under agt-b: same wrapped key and ciphertext, another secret name.
        let mut copied = items
            .into_iter()
            .find(|i| {
                i.get("PK").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("VAULT#agt-a")
            })
            .unwrap();
        copied.insert(
            "PK".into(),
            aws_sdk_dynamodb::types::AttributeValue::S("VAULT#agt-b".into()),
        );
        dynamodb
            .put_item()
            .table_name(&table)
            .set_item(Some(copied))
            .send()
            .await
            .unwrap();
        let err = vault.get("agt-b", Stage::Current).await.unwrap_err();
        assert!(
            matches!(err, shared::ports::vault::VaultError::Decrypt(_)),
            "{err}"
        );
        assert_eq!(
            vault
                .get("agt-a", Stage::Current)
                .await
                .unwrap()
                .unwrap()
                .1
                .expose(),
            value.expose()
        );
    }
}
