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

crate::conformance::sessions_suite!(
    sessions_dynamodb,
    fresh_sessions(),
    tokio::test(flavor = "multi_thread")
);

fn fresh_sessions() -> Subject<dyn shared::ports::Sessions> {
    let table = moto::block_on(async { moto::fresh_table(&moto::sdk().await).await });
    let sdk = moto::block_on(moto::sdk());
    Subject::new(
        Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table))
            as Arc<dyn shared::ports::Sessions>,
        (),
    )
}

mod dynamodb_only {
    use super::*;
    use crate::conformance::store::{audit_record, step};
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    use shared::aws::dynamodb::TIMER_SHARDS;
    use shared::aws::dynamodb::audit_chain::shard_of;

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

    /// The trail is spread over shard chains (no item written by every step) and sealed by
    /// chained checkpoints: every record is listed once, each chain links, and a verifier
    /// walking the checkpoints covers them all; a rewritten or removed record is found.
    #[tokio::test(flavor = "multi_thread")]
    async fn audit_shards_are_sealed_by_chained_checkpoints() {
        use shared::aws::dynamodb::audit_chain::TrailBroken;
        let sdk = moto::sdk().await;
        let table = moto::fresh_table(&sdk).await;
        let s = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table.clone());
        for i in 0..30 {
            s.append_audit(vec![audit_record(&format!("rec-{i}"))])
                .await
                .unwrap();
            if i == 14 {
                s.seal_audit().await.unwrap(); // as the scheduler's tick does
            }
        }
        let all = s.audit(0, 100).await.unwrap();
        assert_eq!(all.len(), 30);
        crate::conformance::store::assert_chained(&all);
        let chains: std::collections::HashSet<u32> = all.iter().map(|c| c.chain).collect();
        assert!(chains.len() > 8, "records spread over shards: {chains:?}");
        // What the first checkpoint sealed lists first: a reader's position never moves.
        let mut first: Vec<&str> = all[..15].iter().map(|c| c.record.id.as_str()).collect();
        first.sort();
        let mut expected: Vec<String> = (0..15).map(|i| format!("rec-{i}")).collect();
        expected.sort();
        assert_eq!(first, expected);
        let checked = s.verify_audit().await.unwrap();
        assert_eq!((checked.checkpoints, checked.records), (2, 30));
        // Nothing new: no new checkpoint.
        assert!(s.checkpoint().await.unwrap().is_none());

        // Someone with table access rewrites a record: the verifier names it.
        let victim = &all[3];
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        let item = client
            .query()
            .table_name(&table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", Av::S(format!("AUDIT#{:03}", victim.chain)))
            .send()
            .await
            .unwrap()
            .items
            .unwrap()
            .into_iter()
            .find(|i| {
                i.get("body")
                    .and_then(|b| b.as_s().ok())
                    .is_some_and(|b| b.contains(&format!("\"{}\"", victim.record.id)))
            })
            .unwrap();
        let mut forged = item.clone();
        let body = item["body"].as_s().unwrap().replace("rec-", "REC-");
        forged.insert("body".into(), Av::S(body));
        client
            .put_item()
            .table_name(&table)
            .set_item(Some(forged))
            .send()
            .await
            .unwrap();
        let err = s.verify_audit().await.unwrap_err();
        assert!(
            matches!(err, TrailBroken::Record { shard, .. } if shard == victim.chain),
            "{err}"
        );
        // Putting it back and deleting a shard's last record instead: the tip gives it away.
        client
            .put_item()
            .table_name(&table)
            .set_item(Some(item.clone()))
            .send()
            .await
            .unwrap();
        s.verify_audit().await.unwrap();
        let head = client
            .get_item()
            .table_name(&table)
            .key("PK", Av::S(format!("AUDIT#{:03}", victim.chain)))
            .key("SK", Av::S("HEAD".into()))
            .send()
            .await
            .unwrap()
            .item
            .unwrap();
        let n: u64 = head["n"].as_n().unwrap().parse().unwrap();
        client
            .delete_item()
            .table_name(&table)
            .key("PK", Av::S(format!("AUDIT#{:03}", victim.chain)))
            .key("SK", Av::S(format!("SEQ#{n:020}")))
            .send()
            .await
            .unwrap();
        let err = s.verify_audit().await.unwrap_err();
        assert!(
            matches!(err, TrailBroken::Tip { shard, .. } | TrailBroken::Record { shard, .. } if shard == victim.chain),
            "{err}"
        );
    }

    /// The signed seal on the sharded trail: it covers every shard's chain as the checkpoints
    /// order them, `steward audit verify`'s walk over the exported lines agrees with it, and
    /// the sealer refuses to sign a trail with a record changed since the last seal.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_signed_seal_covers_every_shard_and_is_not_renewed_over_a_changed_record() {
        use shared::audit::seal::{self, SealError, TrailBroken, TrailCheck};
        let sdk = moto::sdk().await;
        let table = moto::fresh_table(&sdk).await;
        let s = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table.clone());
        let sealer = crate::sealer();
        let now = chrono::Utc::now();
        assert_eq!(
            seal::seal(&s, &sealer, now, false).await.unwrap().through,
            0
        );
        for i in 0..20 {
            s.append_audit(vec![audit_record(&format!("sealed-{i}"))])
                .await
                .unwrap();
        }
        let sealed = seal::seal(&s, &sealer, now, false).await.unwrap();
        assert_eq!(sealed.through, 20);
        assert!(sealed.chains.len() > 5, "{:?}", sealed.chains.keys());
        let key = seal::verifying_key(&sealer.public_key()).unwrap();
        let mut walk = TrailCheck::new(sealed.clone(), &key).unwrap();
        for c in s.audit(0, 100).await.unwrap() {
            let line = shared::audit::export_line(&c);
            walk.add(&seal::from_export_line(&line).unwrap()).unwrap();
        }
        assert_eq!(walk.finish(now, seal::SEAL_MAX_AGE).unwrap().records, 20);

        // A record appended later, then changed in the table: the next seal is refused.
        s.append_audit(vec![audit_record("sealed-late")])
            .await
            .unwrap();
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        let late = s.audit(20, 10).await.unwrap().pop().unwrap();
        let item = client
            .query()
            .table_name(&table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", Av::S(format!("AUDIT#{:03}", late.chain)))
            .send()
            .await
            .unwrap()
            .items
            .unwrap()
            .into_iter()
            .find(|i| {
                i.get("body")
                    .and_then(|b| b.as_s().ok())
                    .is_some_and(|b| b.contains("sealed-late"))
            })
            .unwrap();
        let mut forged = item.clone();
        let body = item["body"]
            .as_s()
            .unwrap()
            .replace("sealed-late", "nothing-here");
        forged.insert("body".into(), Av::S(body));
        client
            .put_item()
            .table_name(&table)
            .set_item(Some(forged))
            .send()
            .await
            .unwrap();
        let refused = seal::seal(&s, &sealer, now, false).await.unwrap_err();
        assert!(
            matches!(refused, SealError::Broken(TrailBroken::Hash { seq: 21 })),
            "{refused}"
        );
        assert_eq!(seal::latest(&s).await.unwrap().unwrap(), sealed);
    }

    /// Writers racing on one workflow's chain all land, in one unbroken chain; writers of
    /// different workflows land on different chains.
    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_appends_keep_every_chain_whole() {
        let sdk = moto::sdk().await;
        let table = moto::fresh_table(&sdk).await;
        let s = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table));
        // Record ids that all land on one shard: every append contends on its HEAD.
        let shard = shard_of("contended");
        let ids: Vec<String> = (0..)
            .map(|i| format!("rec-{i}"))
            .filter(|id| shard_of(id) == shard)
            .take(20)
            .collect();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (s, ids) = (s.clone(), ids[w * 5..w * 5 + 5].to_vec());
            tasks.push(tokio::spawn(async move {
                for id in ids {
                    s.append_audit(vec![audit_record(&id)]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let chain = s.audit(0, 100).await.unwrap();
        assert_eq!(chain.len(), 20);
        assert!(chain.iter().all(|c| c.chain == shard));
        crate::conformance::store::assert_chained(&chain);
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

        // Steward's own records (the internal CA, issued certificates) are no agent secret:
        // stored without the rotation function.
        v.put(
            shared::ca::CA_SECRET,
            V1,
            &Secret::new("{}"),
            Stage::Current,
        )
        .await
        .unwrap();
        let described = aws_sdk_secretsmanager::Client::new(&sdk)
            .describe_secret()
            .secret_id(v.secret_name(shared::ca::CA_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(described.rotation_lambda_arn(), None);
        assert_ne!(described.rotation_enabled(), Some(true));
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
