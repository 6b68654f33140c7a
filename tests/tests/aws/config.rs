//! The deployment's policy and people file live in its table: `steward-aws config push` checks and
//! stores them, the functions build their engine from them, and a new push takes effect in a
//! running function without a redeploy. A bad push changes nothing.

use crate::{moto, support};
use shared::aws::dynamodb::DynamoStore;
use shared::wiring::aws::{
    AwsSettings, AwsStack, Configuration, LiveStack, LoggedChannel, NoIdentityProvider, Parts,
    StackError, VaultKind,
};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

fn repo(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file)
}

fn push(table: &str, args: &[&str]) -> Output {
    support::steward_aws()
        .args(["config", "push", "--table", table])
        .args(args)
        .env(shared::aws::ENDPOINT_ENV, moto::endpoint())
        .output()
        .expect("run steward-aws config push")
}

fn show(table: &str) -> String {
    let out = support::steward_aws()
        .args(["config", "show", "--table", table])
        .env(shared::aws::ENDPOINT_ENV, moto::endpoint())
        .output()
        .expect("run steward-aws config show");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A stack as a function's `main` builds it (`AwsStack::from_env`), on `table`.
async fn live_stack(table: &str) -> Result<LiveStack<AwsStack>, StackError> {
    let sdk = moto::sdk().await;
    let queue = moto::fresh_queue(&sdk, 3, Duration::from_secs(30)).await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let config = Configuration::read(&store).await?;
    let fingerprint = config.fingerprint.clone();
    let settings = AwsSettings {
        table: table.into(),
        queue_url: queue.url().to_string(),
        secret_prefix: format!("{}/agents/", moto::unique("steward")),
        kms_key_id: None,
        endpoint: Some(moto::endpoint()),
        rotation_function_arn: None,
        vault: VaultKind::SecretsManager,
    };
    let parts = Parts {
        policy: config.policy,
        directory: config.directory,
        idp: Arc::new(NoIdentityProvider),
        people: Arc::new(LoggedChannel),
        slack: None,
        engine: Default::default(),
    };
    let stack = AwsStack::connect(&settings, parts).await?;
    Ok(LiveStack::new(stack, fingerprint, |s| s).refreshing_every(Duration::ZERO))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_refuses_to_start_until_the_configuration_is_pushed() {
    let table = moto::fresh_table(&moto::sdk().await).await;
    let err = live_stack(&table)
        .await
        .err()
        .expect("started without a policy");
    let msg = err.to_string();
    assert!(
        msg.contains("no policy has been pushed") && msg.contains("steward-aws config push"),
        "{msg}"
    );
    // The people file alone is not enough either.
    let out = push(
        &table,
        &["--people", repo("people.example.toml").to_str().unwrap()],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no policy yet"), "{}", text(&out));
    assert!(show(&table).contains("policy  not pushed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_policy_takes_effect_in_a_running_function_and_a_bad_one_changes_nothing() {
    let table = moto::fresh_table(&moto::sdk().await).await;
    let policy = repo("policy.example.toml");
    let people = repo("people.example.toml");
    let out = push(
        &table,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--people",
            people.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("policy version 1 pushed"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("people version 1 pushed"),
        "{}",
        text(&out)
    );

    let live = live_stack(&table).await.expect("function starts");
    let before = live.current().await;
    assert_eq!(
        before.engine.policy.approvers,
        vec![support::SAM, support::PRIYA]
    );

    // The security team changes the approvers: one push, no redeploy.
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("policy.toml");
    let original = std::fs::read_to_string(&policy).unwrap();
    let edited = original.replace(
        &format!("approvers = [\"{}\", \"{}\"]", support::SAM, support::PRIYA),
        &format!("approvers = [\"{}\"]", support::PRIYA),
    );
    assert_ne!(
        edited, original,
        "the example policy's approvers line moved"
    );
    std::fs::write(&changed, &edited).unwrap();
    let out = push(&table, &["--policy", changed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("policy version 2 pushed"),
        "{}",
        text(&out)
    );
    let after = live.current().await;
    assert_eq!(after.engine.policy.approvers, vec![support::PRIYA]);
    // The same file again is no new version.
    let out = push(&table, &["--policy", changed.to_str().unwrap()]);
    assert!(text(&out).contains("policy unchanged"), "{}", text(&out));

    // Refused before anything is written: a policy that does not parse, and one naming an
    // approver the people file does not have.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, original.replace("[approvals]", "[approvals\n")).unwrap();
    let out = push(&table, &["--policy", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("the policy"), "{}", text(&out));
    let stranger = dir.path().join("stranger.toml");
    std::fs::write(
        &stranger,
        edited.replace(support::PRIYA, "mallory@example.com"),
    )
    .unwrap();
    let out = push(&table, &["--policy", stranger.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .contains("approvers or operators the people file does not have: mallory@example.com"),
        "{}",
        text(&out)
    );
    let shown = show(&table);
    assert!(shown.contains("policy  version 2"), "{shown}");
    assert_eq!(
        live.current().await.engine.policy.approvers,
        vec![support::PRIYA]
    );
    // Every version is kept: what was in force when is on record.
    let sdk = moto::sdk().await;
    let kept = aws_sdk_dynamodb::Client::new(&sdk)
        .query()
        .table_name(&table)
        .key_condition_expression("PK = :pk AND begins_with(SK, :v)")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S("CONFIG".into()),
        )
        .expression_attribute_values(
            ":v",
            aws_sdk_dynamodb::types::AttributeValue::S("policy#v".into()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(kept.count(), 2);
}
