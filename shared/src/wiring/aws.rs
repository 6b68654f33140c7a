//! Wires the engine onto AWS once per Lambda container: SDK clients, the DynamoDB store, the
//! SQS queue, the Secrets Manager vault, and the parts that come from configuration (policy,
//! people, identity provider, approvals).

use crate::aws::dynamodb::DynamoStore;
use crate::aws::dynamodb::config::{ConfigDocument, StoredConfig};
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
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("environment variable {0} is not set; infra/template.yaml sets it for every function")]
    Missing(&'static str),
    #[error("{name} is invalid: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("cannot reach {what}: {message}")]
    Unreachable { what: String, message: String },
    #[error(
        "no {0} has been pushed to the table: run `steward-aws config push --table <TableName output> --{0} <file>` (docs/aws.md)"
    )]
    NotConfigured(&'static str),
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

/// The policy and the people directory in force, as pushed to the table
/// (`steward-aws config push`; `aws::dynamodb::config`).
pub struct Configuration {
    pub policy: Policy,
    pub directory: Arc<dyn Directory>,
    /// The digests of the documents it was read from (a change rebuilds the engine).
    pub fingerprint: String,
}

impl Configuration {
    /// Parses the stored documents; a missing one is named with the command that pushes it.
    pub fn parse(stored: &StoredConfig) -> Result<Self, StackError> {
        let missing = |doc: ConfigDocument| StackError::NotConfigured(doc.name());
        let policy = stored
            .policy
            .as_ref()
            .ok_or_else(|| missing(ConfigDocument::Policy))?;
        let people = stored
            .people
            .as_ref()
            .ok_or_else(|| missing(ConfigDocument::People))?;
        let policy = crate::policy_file::parse(&policy.text, "the pushed policy").map_err(|e| {
            StackError::Invalid {
                name: "policy (in the table)",
                message: e.to_string(),
            }
        })?;
        let people = PeopleFileDirectory::parse(&people.text).map_err(|e| StackError::Invalid {
            name: "people (in the table)",
            message: e.to_string(),
        })?;
        Ok(Self {
            policy,
            directory: Arc::new(people),
            fingerprint: stored.fingerprint(),
        })
    }

    /// The configuration in the table now.
    pub async fn read(store: &DynamoStore) -> Result<Self, StackError> {
        let stored = store.config().await.map_err(|e| StackError::Unreachable {
            what: format!("the configuration in table {}", store.table()),
            message: e.to_string(),
        })?;
        Self::parse(&stored)
    }
}

/// Secrets Manager ARN of the RFC 7591 initial access token (optional).
pub const OAUTH_INITIAL_ACCESS_TOKEN_ARN_ENV: &str = "STEWARD_OAUTH_INITIAL_ACCESS_TOKEN_ARN";

/// The identity provider for the functions that run identity-provider commands (`worker`,
/// `secret-rotation`): Okta when `STEWARD_OKTA_ORG_URL` is set (its SSWS API token read from
/// Secrets Manager, `STEWARD_OKTA_API_TOKEN_ARN`), else the OAuth server at
/// `STEWARD_OAUTH_ISSUER` (RFC 7591 dynamic client registration, its registrations kept in
/// the agents' vault). The template refuses a stack with neither, so this error is for a
/// function started by hand. The development IdP lives in the embedded database and cannot
/// serve Lambda.
pub async fn identity_provider_from_env(
    settings: &AwsSettings,
    sdk: &SdkConfig,
) -> Result<Arc<dyn IdentityProvider>, StackError> {
    identity_provider(settings, sdk, &|name| optional(name)).await
}

/// [`identity_provider_from_env`] with the variables read through `env` (a test gives a map;
/// the process environment is shared by every test thread).
pub async fn identity_provider(
    settings: &AwsSettings,
    sdk: &SdkConfig,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Arc<dyn IdentityProvider>, StackError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let secret = async |arn_env: &'static str| match env(arn_env) {
        Some(arn) => crate::aws::secret_value(sdk, arn_env, &arn).await,
        None => Err(StackError::Missing(arn_env)),
    };
    if let Some(org) = env(crate::idp::okta::ENV_ORG_URL) {
        let token = secret("STEWARD_OKTA_API_TOKEN_ARN").await?;
        let invalid = |e: crate::idp::okta::OktaSettingsError| StackError::Invalid {
            name: crate::idp::okta::ENV_ORG_URL,
            message: e.to_string(),
        };
        let okta =
            crate::idp::okta::OktaSettings::new(&org, crate::idp::okta::OktaAuth::ApiToken(token))
                .map_err(invalid)?;
        return Ok(Arc::new(
            crate::idp::okta::Okta::new(okta).map_err(invalid)?,
        ));
    }
    let Some(issuer) = env(crate::idp::oauth::ISSUER_ENV) else {
        return Err(StackError::Invalid {
            name: "identity provider",
            message: format!(
                "set {} (Okta) or {} (an OAuth server with RFC 7591 registration)",
                crate::idp::okta::ENV_ORG_URL,
                crate::idp::oauth::ISSUER_ENV
            ),
        });
    };
    let invalid = |e: crate::idp::oauth::OAuthSettingsError| StackError::Invalid {
        name: crate::idp::oauth::ISSUER_ENV,
        message: e.to_string(),
    };
    let mut oauth = crate::idp::oauth::OAuthSettings::new(&issuer).map_err(invalid)?;
    if env(OAUTH_INITIAL_ACCESS_TOKEN_ARN_ENV).is_some() {
        let iat = secret(OAUTH_INITIAL_ACCESS_TOKEN_ARN_ENV).await?;
        oauth = oauth.with_initial_access_token(iat).map_err(invalid)?;
    }
    if let Some(resource) = env(crate::idp::oauth::RESOURCE_ENV) {
        oauth = oauth.with_resource(resource.trim()).map_err(invalid)?;
    }
    let vault = agent_vault(
        settings,
        sdk,
        SecretsManagerVault::new(
            aws_sdk_secretsmanager::Client::new(sdk),
            &settings.secret_prefix,
            settings.kms_key_id.clone(),
        )
        .into(),
    )?;
    Ok(Arc::new(
        crate::idp::oauth::OAuthDcr::new(oauth, vault).map_err(invalid)?,
    ))
}

/// Where agents' secrets go: `secrets_manager`, or the KMS-envelope vault in the table.
fn agent_vault(
    settings: &AwsSettings,
    sdk: &SdkConfig,
    secrets_manager: Arc<SecretsManagerVault>,
) -> Result<Arc<dyn crate::ports::Vault>, StackError> {
    match (settings.vault, &settings.kms_key_id) {
        (VaultKind::DynamoDbKms, Some(key)) => {
            Ok(Arc::new(crate::aws::envelope_vault::EnvelopeVault::new(
                aws_sdk_dynamodb::Client::new(sdk),
                aws_sdk_kms::Client::new(sdk),
                &settings.table,
                key,
            )))
        }
        (VaultKind::DynamoDbKms, None) => Err(StackError::Invalid {
            name: VAULT_ENV,
            message: format!("dynamodb-kms needs {KMS_KEY_ENV}"),
        }),
        (VaultKind::SecretsManager, _) => Ok(secrets_manager),
    }
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

/// What a stack is built of besides its engine, which depends on the configuration.
struct Clients {
    settings: AwsSettings,
    store: Arc<DynamoStore>,
    queue: Arc<SqsQueue>,
    vault: Arc<SecretsManagerVault>,
    agent_vault: Arc<dyn crate::ports::Vault>,
    idp: Arc<dyn IdentityProvider>,
    slack: Option<SlackLink>,
    sdk: SdkConfig,
    channel: Arc<dyn HumanChannel>,
    engine_config: EngineConfig,
}

impl Clients {
    /// The stack with an engine over these clients, `policy` and `directory`. The Secrets
    /// Manager vault is made anew: the rotation schedule it gives new secrets follows the
    /// policy's maximum age.
    fn stack(mut self, policy: Policy, directory: Arc<dyn Directory>) -> AwsStack {
        self.vault = Arc::new(secrets_manager_vault(&self.settings, &self.sdk, &policy));
        if self.settings.vault == VaultKind::SecretsManager {
            self.agent_vault = self.vault.clone();
        }
        let people: Arc<dyn HumanChannel> = match &self.slack {
            Some(link) => Arc::new(SlackChannel::new(
                link.web.clone(),
                self.store.clone(),
                directory.clone(),
                policy.approval_routes.clone(),
                link.security_channel.clone(),
            )),
            None => self.channel.clone(),
        };
        let engine = Arc::new(Engine {
            transitions: Default::default(),
            store: self.store.clone(),
            queue: self.queue.clone(),
            outbox: Arc::new(crate::ports::outbox::SeparateOutbox {
                store: self.store.clone(),
                queue: self.queue.clone(),
            }),
            directory,
            clock: Arc::new(SystemClock),
            executor: Executor {
                idp: self.idp.clone(),
                vault: self.agent_vault.clone(),
                people,
            },
            policy: Arc::new(policy),
            config: self.engine_config.clone(),
        });
        AwsStack {
            engine,
            settings: self.settings,
            store: self.store,
            queue: self.queue,
            vault: self.vault,
            agent_vault: self.agent_vault,
            idp: self.idp,
            slack: self.slack,
            sdk: self.sdk,
            channel: self.channel,
            engine_config: self.engine_config,
        }
    }
}

/// Secrets Manager for agents' secrets, each wired to the rotation function on a schedule well
/// inside the policy's maximum credential age.
fn secrets_manager_vault(
    settings: &AwsSettings,
    sdk: &SdkConfig,
    policy: &Policy,
) -> SecretsManagerVault {
    let vault = SecretsManagerVault::new(
        aws_sdk_secretsmanager::Client::new(sdk),
        &settings.secret_prefix,
        settings.kms_key_id.clone(),
    );
    match &settings.rotation_function_arn {
        Some(arn) => {
            let max = policy.rotation_max_age_days.max(2);
            vault.with_rotation(RotationSchedule {
                function_arn: arn.clone(),
                every_days: (max * 2 / 3).max(1),
            })
        }
        None => vault,
    }
}

/// The engine on AWS, assembled.
#[derive(Clone)]
pub struct AwsStack {
    pub engine: Arc<Engine>,
    settings: AwsSettings,
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
    /// Secrets Manager, which the `secret-rotation` function is the rotation Lambda of.
    pub vault: Arc<SecretsManagerVault>,
    /// Where the engine keeps agents' secrets: `vault`, or the KMS-envelope vault.
    pub agent_vault: Arc<dyn crate::ports::Vault>,
    pub idp: Arc<dyn IdentityProvider>,
    pub slack: Option<SlackLink>,
    pub sdk: SdkConfig,
    /// Where people are asked without Slack (the log).
    channel: Arc<dyn HumanChannel>,
    engine_config: EngineConfig,
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
        let vault = Arc::new(secrets_manager_vault(settings, &sdk, &parts.policy));
        let agent_vault = agent_vault(settings, &sdk, vault.clone())?;
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
        let clients = Clients {
            settings: settings.clone(),
            store,
            queue,
            vault,
            agent_vault,
            idp: parts.idp,
            slack: parts.slack,
            sdk,
            channel: parts.people,
            engine_config: parts.engine,
        };
        Ok(clients.stack(parts.policy, parts.directory))
    }

    fn clients(&self) -> Clients {
        Clients {
            settings: self.settings.clone(),
            store: self.store.clone(),
            queue: self.queue.clone(),
            vault: self.vault.clone(),
            agent_vault: self.agent_vault.clone(),
            idp: self.idp.clone(),
            slack: self.slack.clone(),
            sdk: self.sdk.clone(),
            channel: self.channel.clone(),
            engine_config: self.engine_config.clone(),
        }
    }

    /// The same clients, with the engine rebuilt for `config`.
    pub fn reconfigured(&self, config: Configuration) -> Self {
        self.clients().stack(config.policy, config.directory)
    }

    /// Everything from the environment and the table, for a function that never calls the
    /// identity provider (`api`, `scheduler`, `idp-hook`, `slack-interactions`).
    pub async fn from_env() -> Result<LiveStack<AwsStack>, StackError> {
        Self::from_env_with(Arc::new(NoIdentityProvider), true).await
    }

    /// Everything from the environment and the table, with the configured identity provider
    /// (`worker`, `secret-rotation`).
    pub async fn from_env_with_idp() -> Result<LiveStack<AwsStack>, StackError> {
        let settings = AwsSettings::from_env()?;
        let sdk = crate::aws::sdk_config(settings.endpoint.as_deref()).await;
        let idp = identity_provider_from_env(&settings, &sdk).await?;
        Self::from_env_with(idp, false).await
    }

    async fn from_env_with(
        idp: Arc<dyn IdentityProvider>,
        idp_elsewhere: bool,
    ) -> Result<LiveStack<AwsStack>, StackError> {
        let settings = AwsSettings::from_env()?;
        let sdk = crate::aws::sdk_config(settings.endpoint.as_deref()).await;
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &settings.table);
        let config = Configuration::read(&store).await?;
        let fingerprint = config.fingerprint.clone();
        let parts = Parts {
            policy: config.policy,
            directory: config.directory,
            idp,
            people: Arc::new(LoggedChannel),
            slack: SlackLink::from_env(&sdk).await?,
            engine: EngineConfig {
                identity_provider_elsewhere: idp_elsewhere,
                ..EngineConfig::default()
            },
        };
        let stack = Self::connect(&settings, parts).await?;
        Ok(LiveStack::new(stack, fingerprint, |s| s))
    }
}

/// How often a function looks for a pushed configuration (one read of two items).
pub const CONFIG_REFRESH: Duration = Duration::from_secs(60);

/// A function's stack (or what it builds from it, such as the `api` function's router) that
/// follows the configuration in the table: at most every [`CONFIG_REFRESH`] the current
/// invocation reads the documents' digests, and a changed one rebuilds the engine before the
/// invocation runs. A pushed policy thus takes effect within a minute, without a redeploy. A
/// configuration that cannot be read or parsed keeps the one in force (and says so in the log).
pub struct LiveStack<T> {
    base: AwsStack,
    build: Box<dyn Fn(AwsStack) -> T + Send + Sync>,
    every: Duration,
    current: tokio::sync::Mutex<Current<T>>,
}

struct Current<T> {
    fingerprint: String,
    value: Arc<T>,
    checked: Instant,
}

impl<T> LiveStack<T> {
    /// `stack`, built with the configuration `fingerprint` names, and what `build` makes of it.
    pub fn new(
        stack: AwsStack,
        fingerprint: String,
        build: impl Fn(AwsStack) -> T + Send + Sync + 'static,
    ) -> Self {
        let value = Arc::new(build(stack.clone()));
        Self {
            base: stack,
            build: Box::new(build),
            every: CONFIG_REFRESH,
            current: tokio::sync::Mutex::new(Current {
                fingerprint,
                value,
                checked: Instant::now(),
            }),
        }
    }

    /// The same, building `U` from each stack instead (the `api` function's router).
    pub fn map<U>(self, build: impl Fn(AwsStack) -> U + Send + Sync + 'static) -> LiveStack<U> {
        let fingerprint = self.current.into_inner().fingerprint;
        LiveStack::new(self.base, fingerprint, build)
    }

    /// Looks for a new configuration every `every` instead (zero: at every invocation).
    pub fn refreshing_every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// The stack as first built (its clients; its engine has the configuration of start).
    pub fn base(&self) -> &AwsStack {
        &self.base
    }

    /// What the current invocation runs on.
    pub async fn current(&self) -> Arc<T> {
        let mut live = self.current.lock().await;
        if live.checked.elapsed() >= self.every {
            live.checked = Instant::now();
            match self.base.store.config().await {
                Ok(stored) if stored.fingerprint() != live.fingerprint => {
                    match Configuration::parse(&stored) {
                        Ok(config) => {
                            tracing::info!(
                                target: "steward::config",
                                from = %live.fingerprint,
                                to = %config.fingerprint,
                                policy_version = stored.policy.as_ref().map_or(0, |d| d.version),
                                people_version = stored.people.as_ref().map_or(0, |d| d.version),
                                "configuration changed; engine rebuilt"
                            );
                            live.fingerprint = config.fingerprint.clone();
                            live.value = Arc::new((self.build)(self.base.reconfigured(config)));
                        }
                        Err(e) => tracing::error!(
                            target: "steward::config",
                            error = %e,
                            "the configuration in the table is unusable; keeping the one in force"
                        ),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    target: "steward::config",
                    error = %e,
                    "cannot read the configuration; keeping the one in force"
                ),
            }
        }
        live.value.clone()
    }
}
