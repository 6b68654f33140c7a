//! Wires the engine onto AWS once per Lambda container: SDK clients, the DynamoDB store, the
//! SQS queue, the Secrets Manager vault, and the parts that come from configuration (policy,
//! people, identity provider, approvals).

use crate::aws::dynamodb::DynamoStore;
use crate::aws::secrets_manager::{RotationSchedule, SecretsManagerVault};
use crate::aws::sqs::SqsQueue;
use crate::engine::executor::Executor;
use crate::engine::{Engine, EngineConfig};
use crate::people_file::PeopleFileDirectory;
use crate::ports::clock::SystemClock;
use crate::ports::human_channel::NotifyError;
use crate::ports::idp::{
    ClientInfo, ClientSpec, CreatedClient, IdpError, NewSecret, TokenRevocation,
};
use crate::ports::{Directory, HumanChannel, IdentityProvider};
use crate::slack::{SlackChannel, SlackWeb};
use async_trait::async_trait;
use aws_config::SdkConfig;
use statemachines::{ApprovalOutcome, ApprovalRequest, Policy};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("environment variable {0} is not set; infra/template.yaml sets it for every function")]
    Missing(&'static str),
    #[error("{name} is invalid: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("cannot reach {what}: {message}")]
    Unreachable { what: String, message: String },
}

/// Where the stack's resources are (the template passes them as environment variables).
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub table: String,
    pub queue_url: String,
    pub secret_prefix: String,
    pub kms_key_id: Option<String>,
    /// A local AWS endpoint (moto in tests); `None` in AWS.
    pub endpoint: Option<String>,
    /// The `secret-rotation` function that every agent secret is wired to.
    pub rotation_function_arn: Option<String>,
    /// Where agents' secrets are kept (`STEWARD_VAULT`).
    pub vault: VaultKind,
}

/// The vault agents' secrets go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultKind {
    /// One Secrets Manager secret per agent (`secrets-manager`, the default).
    SecretsManager,
    /// Values sealed with data keys of the KMS key `STEWARD_KMS_KEY_ID`, in the table
    /// (`dynamodb-kms`; docs/adr/0024-kms-envelope-vault.md).
    DynamoDbKms,
}

pub const VAULT_ENV: &str = "STEWARD_VAULT";

pub const TABLE_ENV: &str = "STEWARD_TABLE";
pub const QUEUE_URL_ENV: &str = "STEWARD_QUEUE_URL";
pub const SECRET_PREFIX_ENV: &str = "STEWARD_SECRET_PREFIX";
pub const KMS_KEY_ENV: &str = "STEWARD_KMS_KEY_ID";
pub const POLICY_ENV: &str = "STEWARD_POLICY";
pub const PEOPLE_ENV: &str = "STEWARD_PEOPLE";
pub const ROTATION_FUNCTION_ENV: &str = "STEWARD_ROTATION_FUNCTION_ARN";
pub const DEFAULT_SECRET_PREFIX: &str = "steward/agents/";

fn var(name: &'static str) -> Result<String, StackError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or(StackError::Missing(name))
}

fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl AwsSettings {
    pub fn from_env() -> Result<Self, StackError> {
        Ok(Self {
            table: var(TABLE_ENV)?,
            queue_url: var(QUEUE_URL_ENV)?,
            secret_prefix: optional(SECRET_PREFIX_ENV)
                .unwrap_or_else(|| DEFAULT_SECRET_PREFIX.into()),
            kms_key_id: optional(KMS_KEY_ENV),
            endpoint: optional(crate::aws::ENDPOINT_ENV),
            rotation_function_arn: optional(ROTATION_FUNCTION_ENV),
            vault: match optional(VAULT_ENV).as_deref() {
                None | Some("secrets-manager") => VaultKind::SecretsManager,
                Some("dynamodb-kms") if optional(KMS_KEY_ENV).is_some() => VaultKind::DynamoDbKms,
                Some("dynamodb-kms") => {
                    return Err(StackError::Invalid {
                        name: VAULT_ENV,
                        message: format!(
                            "dynamodb-kms seals values with a KMS key: set {KMS_KEY_ENV} to its id, ARN or alias"
                        ),
                    });
                }
                Some(other) => {
                    return Err(StackError::Invalid {
                        name: VAULT_ENV,
                        message: format!(
                            "`{other}` is not a vault: use secrets-manager (the default) or dynamodb-kms"
                        ),
                    });
                }
            },
        })
    }
}

/// A configuration value: the text itself, `base64:<text encoded>` (how the template passes
/// multi-line TOML through a parameter), or the path of a file bundled with the function.
fn config_text(name: &'static str) -> Result<String, StackError> {
    decode_config(name, var(name)?)
}

fn decode_config(name: &'static str, raw: String) -> Result<String, StackError> {
    if let Some(encoded) = raw.strip_prefix("base64:") {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| StackError::Invalid {
                name,
                message: format!("not valid base64 after `base64:`: {e}"),
            })?;
        return String::from_utf8(bytes).map_err(|_| StackError::Invalid {
            name,
            message: "the decoded text is not UTF-8".into(),
        });
    }
    if Path::new(&raw).is_file() {
        return std::fs::read_to_string(&raw).map_err(|e| StackError::Invalid {
            name,
            message: format!("cannot read {raw}: {e}"),
        });
    }
    Ok(raw)
}

/// The policy from `STEWARD_POLICY` (see `config_text`).
pub fn policy_from_env() -> Result<Policy, StackError> {
    let raw = config_text(POLICY_ENV)?;
    let invalid = |e: crate::policy_file::PolicyError| StackError::Invalid {
        name: POLICY_ENV,
        message: e.to_string(),
    };
    crate::policy_file::parse(&raw, POLICY_ENV).map_err(invalid)
}

/// The people directory from `STEWARD_PEOPLE` (see `config_text`).
pub fn people_from_env() -> Result<PeopleFileDirectory, StackError> {
    let raw = config_text(PEOPLE_ENV)?;
    let invalid = |e: crate::ports::directory::DirectoryError| StackError::Invalid {
        name: PEOPLE_ENV,
        message: e.to_string(),
    };
    PeopleFileDirectory::parse(&raw).map_err(invalid)
}

/// The identity provider for the functions that run identity-provider commands (`worker`,
/// `secret-rotation`): Okta, at `STEWARD_OKTA_ORG_URL`, with the SSWS API token read from
/// Secrets Manager (`STEWARD_OKTA_API_TOKEN_ARN`). The development IdP lives in the embedded
/// database and cannot serve Lambda.
pub async fn identity_provider_from_env(
    sdk: &SdkConfig,
) -> Result<Arc<dyn IdentityProvider>, StackError> {
    let org = var(crate::idp::okta::ENV_ORG_URL)?;
    let token = crate::aws::secret_from_env(sdk, "STEWARD_OKTA_API_TOKEN_ARN").await?;
    let invalid = |e: crate::idp::okta::OktaSettingsError| StackError::Invalid {
        name: crate::idp::okta::ENV_ORG_URL,
        message: e.to_string(),
    };
    let settings =
        crate::idp::okta::OktaSettings::new(&org, crate::idp::okta::OktaAuth::ApiToken(token))
            .map_err(invalid)?;
    Ok(Arc::new(
        crate::idp::okta::Okta::new(settings).map_err(invalid)?,
    ))
}

/// The identity provider of the functions that never call it (`api`, `scheduler`, `idp-hook`,
/// `slack-interactions`): their engine only records steps and queues commands, which the
/// `worker` runs. A call reaching it is a wiring bug, reported as such.
pub struct NoIdentityProvider;

impl NoIdentityProvider {
    fn refuse<T>() -> Result<T, IdpError> {
        Err(IdpError::Refused(
            "this function does not call the identity provider; identity-provider commands run in the worker function".into(),
        ))
    }
}

#[async_trait]
impl IdentityProvider for NoIdentityProvider {
    async fn create_client(&self, _: &ClientSpec, _: &str) -> Result<CreatedClient, IdpError> {
        Self::refuse()
    }
    async fn set_grants(&self, _: &str, _: &[String], _: u32) -> Result<(), IdpError> {
        Self::refuse()
    }
    async fn set_active(&self, _: &str, _: bool) -> Result<(), IdpError> {
        Self::refuse()
    }
    async fn client(&self, _: &str) -> Result<Option<ClientInfo>, IdpError> {
        Self::refuse()
    }
    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        Self::refuse()
    }
    async fn add_secret(&self, _: &str, _: &str) -> Result<NewSecret, IdpError> {
        Self::refuse()
    }
    async fn remove_secret(&self, _: &str, _: &str) -> Result<(), IdpError> {
        Self::refuse()
    }
    async fn secret_ids(&self, _: &str) -> Result<Vec<String>, IdpError> {
        Self::refuse()
    }
    async fn test_secret(&self, _: &str, _: &crate::Secret) -> Result<(), IdpError> {
        Self::refuse()
    }
    async fn revoke_tokens(&self, _: &str) -> Result<TokenRevocation, IdpError> {
        Self::refuse()
    }
    async fn delete_client(&self, _: &str) -> Result<(), IdpError> {
        Self::refuse()
    }
}

/// Approval requests and notices as structured log lines (CloudWatch Logs), for deployments
/// without a chat integration: approvers act through the admin API.
pub struct LoggedChannel;

#[async_trait]
impl HumanChannel for LoggedChannel {
    async fn ask(&self, approval: &ApprovalRequest, key: &str) -> Result<(), NotifyError> {
        tracing::info!(
            target: "steward::approvals",
            key,
            approval_id = %approval.id,
            workflow_id = %approval.workflow_id,
            agent = %approval.agent_name,
            action = %approval.action,
            approvers = %approval.approvers.join(","),
            expires_at = %approval.expires_at,
            "approval requested"
        );
        Ok(())
    }

    async fn closed(
        &self,
        approval_id: &str,
        outcome: &ApprovalOutcome,
        key: &str,
    ) -> Result<(), NotifyError> {
        tracing::info!(target: "steward::approvals", key, approval_id, outcome = %serde_json::to_string(outcome).unwrap_or_default(), "approval closed");
        Ok(())
    }

    async fn follow_up(
        &self,
        approval_id: &str,
        follow_up: &statemachines::FollowUp,
        key: &str,
    ) -> Result<(), NotifyError> {
        tracing::info!(target: "steward::approvals", key, approval_id, follow_up = %serde_json::to_string(follow_up).unwrap_or_default(), "approval follow-up");
        Ok(())
    }

    async fn review(
        &self,
        notice: &statemachines::review_item::ReviewNotice,
        key: &str,
    ) -> Result<(), NotifyError> {
        let item = notice.item();
        tracing::info!(target: "steward::reviews", key, notice = notice.name(), item = %item.id, agent = %item.agent.name, owner = %item.agent.owner, deadline = %item.deadline, "review item");
        Ok(())
    }

    async fn notify(
        &self,
        to: &str,
        subject: &str,
        body: &str,
        key: &str,
    ) -> Result<(), NotifyError> {
        tracing::info!(target: "steward::approvals", key, to, subject, body, "notice");
        Ok(())
    }
}

/// The parts of the engine that do not come from AWS.
pub struct Parts {
    pub policy: Policy,
    pub directory: Arc<dyn Directory>,
    pub idp: Arc<dyn IdentityProvider>,
    /// Used when `slack` is `None`.
    pub people: Arc<dyn HumanChannel>,
    /// Slack, when configured: approvals are asked there (replacing `people`).
    pub slack: Option<SlackLink>,
    pub engine: EngineConfig,
}

/// Slack for the deployed functions: the Web API client and the security channel.
#[derive(Clone)]
pub struct SlackLink {
    pub web: Arc<SlackWeb>,
    pub security_channel: Option<String>,
}

/// Environment of the Slack link: the bot token's secret ARN (optional: without it approvals
/// are only logged), the API URL and the security channel.
pub const SLACK_BOT_TOKEN_ARN_ENV: &str = "STEWARD_SLACK_BOT_TOKEN_ARN";

impl SlackLink {
    /// Slack from the environment, `None` when no bot token secret is configured.
    pub async fn from_env(sdk: &SdkConfig) -> Result<Option<Self>, StackError> {
        if std::env::var(SLACK_BOT_TOKEN_ARN_ENV).map_or(true, |v| v.trim().is_empty()) {
            return Ok(None);
        }
        let token = crate::aws::secret_from_env(sdk, SLACK_BOT_TOKEN_ARN_ENV).await?;
        crate::slack::check_bot_token(&token).map_err(|e| StackError::Invalid {
            name: SLACK_BOT_TOKEN_ARN_ENV,
            message: e.to_string(),
        })?;
        let token = crate::Secret::new(token.expose().trim());
        let api_url = std::env::var(crate::slack::API_URL_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| crate::slack::SLACK_API_URL.into());
        let web = SlackWeb::new(&api_url, &token).map_err(|e| StackError::Invalid {
            name: SLACK_BOT_TOKEN_ARN_ENV,
            message: e.to_string(),
        })?;
        Ok(Some(Self {
            web: Arc::new(web),
            security_channel: std::env::var(crate::slack::SECURITY_CHANNEL_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty()),
        }))
    }
}

/// The engine on AWS, assembled.
pub struct AwsStack {
    pub engine: Arc<Engine>,
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
    /// Secrets Manager, which the `secret-rotation` function is the rotation Lambda of.
    pub vault: Arc<SecretsManagerVault>,
    /// Where the engine keeps agents' secrets: `vault`, or the KMS-envelope vault.
    pub agent_vault: Arc<dyn crate::ports::Vault>,
    pub idp: Arc<dyn IdentityProvider>,
    pub slack: Option<SlackLink>,
    pub sdk: SdkConfig,
}

impl AwsStack {
    /// Builds the clients once and reads the queue's redrive policy, which also opens (warms)
    /// the TLS connection to SQS during the function's init phase.
    pub async fn connect(settings: &AwsSettings, parts: Parts) -> Result<Self, StackError> {
        let sdk = crate::aws::sdk_config(settings.endpoint.as_deref()).await;
        let store = Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            &settings.table,
        ));
        let queue = Arc::new(
            SqsQueue::open(aws_sdk_sqs::Client::new(&sdk), &settings.queue_url)
                .await
                .map_err(|e| StackError::Unreachable {
                    what: format!("queue {}", settings.queue_url),
                    message: e.to_string(),
                })?,
        );
        let mut vault = SecretsManagerVault::new(
            aws_sdk_secretsmanager::Client::new(&sdk),
            &settings.secret_prefix,
            settings.kms_key_id.clone(),
        );
        if let Some(arn) = &settings.rotation_function_arn {
            // Rotate well inside the policy's maximum credential age.
            let max = parts.policy.rotation_max_age_days.max(2);
            vault = vault.with_rotation(RotationSchedule {
                function_arn: arn.clone(),
                every_days: (max * 2 / 3).max(1),
            });
        }
        let vault = Arc::new(vault);
        let agent_vault: Arc<dyn crate::ports::Vault> = match (settings.vault, &settings.kms_key_id)
        {
            (VaultKind::DynamoDbKms, Some(key)) => {
                Arc::new(crate::aws::envelope_vault::EnvelopeVault::new(
                    aws_sdk_dynamodb::Client::new(&sdk),
                    aws_sdk_kms::Client::new(&sdk),
                    &settings.table,
                    key,
                ))
            }
            (VaultKind::DynamoDbKms, None) => {
                return Err(StackError::Invalid {
                    name: VAULT_ENV,
                    message: format!("dynamodb-kms needs {KMS_KEY_ENV}"),
                });
            }
            (VaultKind::SecretsManager, _) => vault.clone(),
        };
        // Open the TLS connection to DynamoDB during init too (SQS was opened above): one read
        // of a key that never exists.
        use crate::ports::store::StoreRead;
        store
            .instance("warm-up")
            .await
            .map_err(|e| StackError::Unreachable {
                what: format!("table {}", settings.table),
                message: e.to_string(),
            })?;
        let people: Arc<dyn HumanChannel> = match &parts.slack {
            Some(link) => Arc::new(SlackChannel::new(
                link.web.clone(),
                store.clone(),
                parts.policy.approval_routes.clone(),
                link.security_channel.clone(),
            )),
            None => parts.people,
        };
        let engine = Arc::new(Engine {
            transitions: Default::default(),
            store: store.clone(),
            queue: queue.clone(),
            outbox: Arc::new(crate::ports::outbox::SeparateOutbox {
                store: store.clone(),
                queue: queue.clone(),
            }),
            directory: parts.directory,
            clock: Arc::new(SystemClock),
            executor: Executor {
                idp: parts.idp.clone(),
                vault: agent_vault.clone(),
                people,
            },
            policy: Arc::new(parts.policy),
            config: parts.engine,
        });
        Ok(Self {
            engine,
            store,
            queue,
            vault,
            agent_vault,
            idp: parts.idp,
            slack: parts.slack,
            sdk,
        })
    }

    /// Everything from the environment, for a function that never calls the identity
    /// provider (`api`, `scheduler`, `idp-hook`, `slack-interactions`).
    pub async fn from_env() -> Result<Self, StackError> {
        Self::from_env_with(Arc::new(NoIdentityProvider)).await
    }

    /// Everything from the environment, with the configured identity provider (`worker`,
    /// `secret-rotation`).
    pub async fn from_env_with_idp() -> Result<Self, StackError> {
        let settings = AwsSettings::from_env()?;
        let sdk = crate::aws::sdk_config(settings.endpoint.as_deref()).await;
        let idp = identity_provider_from_env(&sdk).await?;
        Self::from_env_with(idp).await
    }

    async fn from_env_with(idp: Arc<dyn IdentityProvider>) -> Result<Self, StackError> {
        let settings = AwsSettings::from_env()?;
        let sdk = crate::aws::sdk_config(settings.endpoint.as_deref()).await;
        let parts = Parts {
            policy: policy_from_env()?,
            directory: Arc::new(people_from_env()?),
            idp,
            people: Arc::new(LoggedChannel),
            slack: SlackLink::from_env(&sdk).await?,
            engine: EngineConfig::default(),
        };
        Self::connect(&settings, parts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_text_is_plain_base64_or_a_file() {
        assert_eq!(decode_config(POLICY_ENV, "a = 1".into()).unwrap(), "a = 1");
        assert_eq!(
            decode_config(POLICY_ENV, "base64:YSA9IDEKYiA9IDI=".into()).unwrap(),
            "a = 1\nb = 2"
        );
        let err = decode_config(POLICY_ENV, "base64:%%%".into()).unwrap_err();
        assert!(err.to_string().contains("STEWARD_POLICY"), "{err}");
        let file = std::env::temp_dir().join(format!("steward-cfg-{}", std::process::id()));
        std::fs::write(&file, "from = \"file\"").unwrap();
        assert_eq!(
            decode_config(PEOPLE_ENV, file.display().to_string()).unwrap(),
            "from = \"file\""
        );
        std::fs::remove_file(file).unwrap();
    }
}
