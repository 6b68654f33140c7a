//! The identity provider of the `worker` and `secret-rotation` functions as the template
//! configures it: `STEWARD_OAUTH_ISSUER` with the initial access token's ARN (a stack without
//! Okta), against the real OAuth server (npm oidc-provider, started by `tests/run`) and the
//! token in moto's Secrets Manager; and the refusals a function starts with instead of a crash
//! loop.

use crate::moto::{sdk, unique};
use shared::ports::idp::ClientSpec;
use shared::wiring::aws::{
    AwsSettings, OAUTH_INITIAL_ACCESS_TOKEN_ARN_ENV, StackError, VaultKind, identity_provider,
};
use std::collections::HashMap;

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => panic!(
            "{name} is not set: run tests/run, which starts oidc-provider on 127.0.0.1 and \
             exports STEWARD_TEST_OIDC_ISSUER and STEWARD_TEST_OIDC_INITIAL_ACCESS_TOKEN"
        ),
    }
}

fn settings(table: &str) -> AwsSettings {
    AwsSettings {
        table: table.into(),
        queue_url: "unused: the identity provider sends nothing to the queue".into(),
        secret_prefix: format!("{}/", unique("steward-idp")),
        kms_key_id: None,
        endpoint: Some(crate::moto::endpoint()),
        rotation_function_arn: None,
        vault: VaultKind::SecretsManager,
    }
}

async fn secret(sdk: &aws_config::SdkConfig, value: &str) -> String {
    aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(unique("steward-iat"))
        .secret_string(value)
        .send()
        .await
        .expect("create the secret on moto")
        .arn
        .expect("moto returns the secret's ARN")
}

fn lookup(vars: HashMap<&'static str, String>) -> impl Fn(&str) -> Option<String> + Sync {
    move |name| vars.get(name).cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oauth_issuer_stack_registers_agents_with_the_token_from_secrets_manager() {
    let sdk = sdk().await;
    let settings = settings(&crate::moto::fresh_table(&sdk).await);
    let arn = secret(&sdk, &env("STEWARD_TEST_OIDC_INITIAL_ACCESS_TOKEN")).await;
    let vars = lookup(HashMap::from([
        (
            shared::idp::oauth::ISSUER_ENV,
            env("STEWARD_TEST_OIDC_ISSUER"),
        ),
        (OAUTH_INITIAL_ACCESS_TOKEN_ARN_ENV, arn),
    ]));
    let idp = identity_provider(&settings, &sdk, &vars)
        .await
        .expect("the worker's identity provider from the OAuth settings");
    let agent = unique("agt-aws-oauth");
    let created = idp
        .create_client(
            &ClientSpec {
                agent_id: agent.clone(),
                name: format!("aws oauth {agent}"),
                scopes: vec!["steward:test:read".into()],
                token_lifetime_secs: 300,
            },
            &format!("{agent}-k1"),
        )
        .await
        .expect("registered at the OAuth server with the initial access token");
    // The client exists at the server, with Steward's scopes, and its secret gets a token.
    let info = idp
        .client(&created.client_id)
        .await
        .expect("read the registration back")
        .expect("the client exists at the server");
    assert_eq!(info.scopes, vec!["steward:test:read".to_string()]);
    idp.test_secret(&created.client_id, &created.secret)
        .await
        .expect("the new secret obtains a token");
    // The registration's management token went to the stack's vault (Secrets Manager, under
    // the stack's prefix), not to the table or the process.
    let kept = aws_sdk_secretsmanager::Client::new(&sdk)
        .list_secrets()
        .filters(
            aws_sdk_secretsmanager::types::Filter::builder()
                .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                .values(settings.secret_prefix.clone())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        !kept.secret_list().is_empty(),
        "the registration access token is kept in Secrets Manager under {}",
        settings.secret_prefix
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_initial_access_token_is_refused_by_the_server_not_retried() {
    let sdk = sdk().await;
    let settings = settings(&crate::moto::fresh_table(&sdk).await);
    let arn = secret(&sdk, "not-the-initial-access-token-0123456789abcdef").await;
    let vars = lookup(HashMap::from([
        (
            shared::idp::oauth::ISSUER_ENV,
            env("STEWARD_TEST_OIDC_ISSUER"),
        ),
        (OAUTH_INITIAL_ACCESS_TOKEN_ARN_ENV, arn),
    ]));
    let idp = identity_provider(&settings, &sdk, &vars).await.unwrap();
    let agent = unique("agt-aws-oauth-bad");
    let refused = idp
        .create_client(
            &ClientSpec {
                agent_id: agent.clone(),
                name: agent.clone(),
                scopes: vec!["steward:test:read".into()],
                token_lifetime_secs: 300,
            },
            &format!("{agent}-k1"),
        )
        .await
        .expect_err("the server refuses a registration with the wrong token");
    assert!(
        !matches!(refused, shared::ports::idp::IdpError::Unavailable(_)),
        "a refusal must not look retryable: {refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stack_without_an_identity_provider_refuses_to_start_naming_both_settings() {
    let sdk = sdk().await;
    let settings = settings("steward-unused");
    let Err(e) = identity_provider(&settings, &sdk, &lookup(HashMap::new())).await else {
        panic!("started without an identity provider");
    };
    let text = e.to_string();
    assert!(
        text.contains("STEWARD_OKTA_ORG_URL") && text.contains("STEWARD_OAUTH_ISSUER"),
        "the refusal names what to set: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn okta_without_its_api_token_refuses_to_start_naming_the_setting() {
    let sdk = sdk().await;
    let settings = settings("steward-unused");
    let vars = lookup(HashMap::from([(
        shared::idp::okta::ENV_ORG_URL,
        "https://example.okta.com".to_string(),
    )]));
    match identity_provider(&settings, &sdk, &vars).await {
        Err(StackError::Missing(name)) => assert_eq!(name, "STEWARD_OKTA_API_TOKEN_ARN"),
        Err(other) => panic!("expected the missing token's setting, got: {other}"),
        Ok(_) => panic!("Okta started without its API token"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_secret_refuses_to_start_naming_the_setting() {
    let sdk = sdk().await;
    let settings = settings("steward-unused");
    let arn = secret(&sdk, "   ").await;
    let vars = lookup(HashMap::from([
        (
            shared::idp::oauth::ISSUER_ENV,
            env("STEWARD_TEST_OIDC_ISSUER"),
        ),
        (OAUTH_INITIAL_ACCESS_TOKEN_ARN_ENV, arn.clone()),
    ]));
    match identity_provider(&settings, &sdk, &vars).await {
        Err(e @ StackError::Invalid { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(OAUTH_INITIAL_ACCESS_TOKEN_ARN_ENV) && text.contains(&arn),
                "the refusal names the setting and the secret: {text}"
            );
        }
        Err(other) => panic!("expected an empty-secret refusal, got: {other}"),
        Ok(_) => panic!("started with an empty initial access token"),
    }
}
