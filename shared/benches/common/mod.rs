//! Instant, in-memory ports for benchmarks: they measure the engine, not an IdP or Slack.
#![allow(dead_code)]

pub mod registry;

use async_trait::async_trait;
use shared::Secret;
use shared::ports::human_channel::{HumanChannel, NotifyError};
use shared::ports::idp::{
    ClientInfo, ClientSpec, CreatedClient, IdentityProvider, IdpError, NewSecret, TokenRevocation,
};
use shared::ports::vault::{Stage, Vault, VaultError, VersionInfo};
use statemachines::{ApprovalOutcome, ApprovalRequest};

pub struct InstantIdp;
#[async_trait]
impl IdentityProvider for InstantIdp {
    async fn create_client(
        &self,
        spec: &ClientSpec,
        _key: &str,
    ) -> Result<CreatedClient, IdpError> {
        Ok(CreatedClient {
            client_id: format!("c-{}", spec.agent_id),
            secret_id: "s1".into(),
            secret: Secret::new("x"),
        })
    }
    async fn set_grants(&self, _: &str, _: &[String], _: u32) -> Result<(), IdpError> {
        Ok(())
    }
    async fn set_active(&self, _: &str, _: bool) -> Result<(), IdpError> {
        Ok(())
    }
    async fn client(&self, _: &str) -> Result<Option<ClientInfo>, IdpError> {
        Ok(None)
    }
    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        Ok(vec![])
    }
    async fn add_secret(&self, _: &str, _: &str) -> Result<NewSecret, IdpError> {
        Ok(NewSecret {
            secret_id: "s2".into(),
            secret: Secret::new("y"),
        })
    }
    async fn remove_secret(&self, _: &str, _: &str) -> Result<(), IdpError> {
        Ok(())
    }
    async fn secret_ids(&self, _: &str) -> Result<Vec<String>, IdpError> {
        Ok(vec!["s1".into()])
    }
    async fn test_secret(&self, _: &str, _: &Secret) -> Result<(), IdpError> {
        Ok(())
    }
    async fn revoke_tokens(&self, _: &str) -> Result<TokenRevocation, IdpError> {
        Ok(TokenRevocation {
            revoked: "nothing".into(),
            outstanding: None,
        })
    }
    async fn delete_client(&self, _: &str) -> Result<(), IdpError> {
        Ok(())
    }
}

pub struct NullVault;
#[async_trait]
impl Vault for NullVault {
    async fn put(&self, _: &str, _: &str, _: &Secret, _: Stage) -> Result<(), VaultError> {
        Ok(())
    }
    async fn get(&self, _: &str, _: Stage) -> Result<Option<(String, Secret)>, VaultError> {
        Ok(None)
    }
    async fn versions(&self, _: &str) -> Result<Vec<VersionInfo>, VaultError> {
        Ok(vec![])
    }
    async fn schedule_deletion(
        &self,
        _: &str,
        _: u32,
    ) -> Result<chrono::DateTime<chrono::Utc>, VaultError> {
        Ok(chrono::Utc::now())
    }
}

pub struct NullChannel;
#[async_trait]
impl HumanChannel for NullChannel {
    async fn ask(&self, _: &ApprovalRequest, _: &str) -> Result<(), NotifyError> {
        Ok(())
    }
    async fn closed(&self, _: &str, _: &ApprovalOutcome, _: &str) -> Result<(), NotifyError> {
        Ok(())
    }
    async fn follow_up(
        &self,
        _: &str,
        _: &statemachines::FollowUp,
        _: &str,
    ) -> Result<(), NotifyError> {
        Ok(())
    }
    async fn notify(&self, _: &str, _: &str, _: &str, _: &str) -> Result<(), NotifyError> {
        Ok(())
    }
    async fn review(
        &self,
        _: &statemachines::review_item::ReviewNotice,
        _: &str,
    ) -> Result<(), NotifyError> {
        Ok(())
    }
}
