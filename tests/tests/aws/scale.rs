//! The store under 100 concurrent writers: no item is retried by a storm of conditional-check
//! failures (the audit trail's shards), and the whole trail verifies afterwards. A smaller run
//! than the bench (`STEWARD_LOAD_AGENTS`, default 500 agents here, 10,000 in the bench).

use crate::{load, moto};

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_workers_commit_without_a_hot_item() {
    let agents = std::env::var("STEWARD_LOAD_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let load = load::run(&moto::endpoint(), 100, agents).await;
    println!("{}", serde_json::to_string_pretty(&load.report).unwrap());
    assert_eq!(load.commits, agents * 3);
    if let Some(storm) = load.storm() {
        panic!("a hot item: {storm}\n{}", load.report);
    }
}

/// Timers due at the same moment fan out: the tick gives each timer partition to a worker,
/// each worker fires its partition's timers in rounds (a full round queues the next), and
/// every timer fires once. Rounds of 10 here stand for rounds of 1,000.
#[tokio::test(flavor = "multi_thread")]
async fn timers_due_at_once_fan_out_over_partitions_and_rounds() {
    use crate::conformance::store::{step, timer};
    use aws_lambda_events::event::sqs::SqsEvent;
    use shared::ports::store::{StoreRead, StoreWrite, TimerChange};
    use shared::wiring::aws::{
        AwsSettings, AwsStack, LoggedChannel, NoIdentityProvider, Parts, VaultKind,
    };
    use std::collections::HashMap;
    use std::sync::Arc;

    let sdk = moto::sdk().await;
    let table = moto::fresh_table(&sdk).await;
    let queue = moto::fresh_queue(&sdk, 3, std::time::Duration::from_secs(30)).await;
    let settings = AwsSettings {
        table,
        queue_url: queue.url().to_string(),
        secret_prefix: format!("{}/agents/", moto::unique("steward")),
        kms_key_id: None,
        endpoint: Some(moto::endpoint()),
        rotation_function_arn: None,
        vault: VaultKind::SecretsManager,
    };
    let policy = shared::policy_file::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy.example.toml"),
    )
    .unwrap();
    let stack = AwsStack::connect(
        &settings,
        Parts {
            policy,
            directory: Arc::new(
                shared::people_file::PeopleFileDirectory::parse(crate::support::PEOPLE).unwrap(),
            ),
            idp: Arc::new(NoIdentityProvider),
            people: Arc::new(LoggedChannel),
            slack: None,
            engine: shared::EngineConfig {
                timers_per_round: 10,
                identity_provider_elsewhere: true,
                ..Default::default()
            },
        },
    )
    .await
    .unwrap();
    const TIMERS: usize = 240;
    for i in 0..TIMERS {
        let id = format!("wf-due-{i}");
        let mut c = step(&id, 1);
        c.timers = vec![TimerChange::Set(timer(&id, "review-deadline", 5))];
        stack.store.commit(c).await.unwrap();
    }
    let mut tick: aws_lambda_events::event::eventbridge::EventBridgeEvent<scheduler::Job> =
        serde_json::from_str(include_str!("../../fixtures/aws/eventbridge-schedule.json")).unwrap();
    tick.detail.job = "tick".into();
    scheduler::handle(&stack.engine, &crate::sealer(), tick)
        .await
        .unwrap();

    // The workers: a FIFO round goes to the worker handler; the events it queues are counted.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let template: serde_json::Value =
        serde_json::from_str(include_str!("../../fixtures/aws/sqs-fifo-record.json")).unwrap();
    let mut fired: HashMap<String, usize> = HashMap::new();
    let mut rounds = 0;
    for _ in 0..500 {
        let got = sqs
            .receive_message()
            .queue_url(queue.url())
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            break;
        }
        for m in got {
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            if body["msg"] == "fire_timers" {
                rounds += 1;
                let mut r = template.clone();
                r["messageId"] = serde_json::json!(m.message_id());
                r["receiptHandle"] = serde_json::json!(m.receipt_handle());
                r["body"] = serde_json::json!(m.body());
                r["messageAttributes"] = serde_json::json!({});
                let event: SqsEvent =
                    serde_json::from_value(serde_json::json!({"Records": [r]})).unwrap();
                let out = worker::handle(&stack.engine, &*stack.queue, event)
                    .await
                    .unwrap();
                assert!(out.batch_item_failures.is_empty(), "{out:?}");
            } else {
                assert_eq!(body["event"]["type"], "timer_fired", "{body}");
                *fired
                    .entry(body["workflow_id"].as_str().unwrap().to_string())
                    .or_default() += 1;
                sqs.delete_message()
                    .queue_url(queue.url())
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
    assert_eq!(fired.len(), TIMERS, "every timer fired");
    assert!(fired.values().all(|n| *n == 1), "each once");
    let partitions = shared::aws::dynamodb::TIMER_SHARDS as usize;
    assert!(
        rounds > partitions,
        "a full round queued the next: {rounds} rounds for {partitions} partitions"
    );
    assert!(
        stack
            .store
            .due_timers(chrono::Utc::now(), 1000)
            .await
            .unwrap()
            .is_empty()
    );
}
