//! The dashboard's sessions on the table: `SESSION#<digest>`/`META` and, while a sign-in is at
//! the issuer, `SIGNIN#<digest>`/`META`. Both expire through the table's TTL; since DynamoDB
//! removes expired items only eventually, the dashboard checks the expiry it reads.

use super::{DynamoStore, Item, TTL_ATTRIBUTE, backend, body, json, key, n};
use crate::ports::Sessions;
use crate::ports::sessions::{PendingSignIn, Session};
use crate::ports::store::StoreError;
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};

fn session_key(digest: &str) -> Item {
    key(format!("SESSION#{digest}"), "META")
}

fn sign_in_key(digest: &str) -> Item {
    key(format!("SIGNIN#{digest}"), "META")
}

impl DynamoStore {
    /// Puts `item` unless its key exists; `what` names it in the refusal.
    async fn put_new(&self, item: Item, what: &str) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    StoreError::Backend(format!("{what} exists already"))
                }
                _ => backend(e),
            })?;
        Ok(())
    }
}

#[async_trait]
impl Sessions for DynamoStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        let mut item = session_key(&session.digest);
        item.insert("body".into(), json(session)?);
        item.insert(TTL_ATTRIBUTE.into(), n(session.expires_at.timestamp()));
        self.put_new(item, "the session").await
    }

    async fn session(&self, digest: &str) -> Result<Option<Session>, StoreError> {
        self.get(format!("SESSION#{digest}"), "META")
            .await?
            .map(|item| body(&item, "body"))
            .transpose()
    }

    async fn touch_session(&self, digest: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let Some(mut session) = Sessions::session(self, digest).await? else {
            return Ok(false);
        };
        session.seen_at = at;
        let mut item = session_key(digest);
        item.insert("body".into(), json(&session)?);
        item.insert(TTL_ATTRIBUTE.into(), n(session.expires_at.timestamp()));
        // Only while it exists: a sign-out in between is not undone.
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_exists(PK)")
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(backend(e)),
            },
        }
    }

    async fn end_session(&self, digest: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(session_key(digest)))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn put_sign_in(&self, pending: &PendingSignIn) -> Result<(), StoreError> {
        let mut item = sign_in_key(&pending.digest);
        item.insert("body".into(), json(pending)?);
        item.insert(TTL_ATTRIBUTE.into(), n(pending.expires_at.timestamp()));
        self.put_new(item, "the sign-in").await
    }

    async fn take_sign_in(&self, digest: &str) -> Result<Option<PendingSignIn>, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(sign_in_key(digest)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(backend)?;
        out.attributes.map(|item| body(&item, "body")).transpose()
    }
}
