//! Personal API tokens on the table: `PAT#<id>`/`META` holds the token's record (its digest,
//! never the token), `PATS#<person>`/`<created>#<id>` lists a person's tokens in creation order.

use super::{DynamoStore, Item, backend, body, json, key, s, text};
use crate::ports::PersonalTokens;
use crate::ports::personal_tokens::PersonalToken;
use crate::ports::store::StoreError;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use chrono::{DateTime, Utc};

fn record_key(id: &str) -> Item {
    key(format!("PAT#{id}"), "META")
}

fn record(token: &PersonalToken) -> Result<Item, StoreError> {
    let mut item = record_key(&token.id);
    item.insert("body".into(), json(token)?);
    Ok(item)
}

fn put(table: &str, item: Item, condition: &str) -> Result<TransactWriteItem, StoreError> {
    Ok(TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression(condition)
                .build()
                .map_err(super::build_err)?,
        )
        .build())
}

#[async_trait]
impl PersonalTokens for DynamoStore {
    async fn put_token(&self, token: &PersonalToken) -> Result<(), StoreError> {
        let mut listed = key(
            format!("PATS#{}", token.person),
            format!("{}#{}", token.created_at.to_rfc3339(), token.id),
        );
        listed.insert("token_id".into(), s(token.id.clone()));
        let absent = "attribute_not_exists(PK)";
        self.client
            .transact_write_items()
            .transact_items(put(&self.table, record(token)?, absent)?)
            .transact_items(put(&self.table, listed, absent)?)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(_) => {
                    StoreError::Backend(format!("personal token {} exists already", token.id))
                }
                None => backend(e),
            })?;
        Ok(())
    }

    async fn token(&self, id: &str) -> Result<Option<PersonalToken>, StoreError> {
        self.get(format!("PAT#{id}"), "META")
            .await?
            .map(|item| body(&item, "body"))
            .transpose()
    }

    async fn tokens_of(&self, person: &str) -> Result<Vec<PersonalToken>, StoreError> {
        let listed = self.query(format!("PATS#{person}"), None, None).await?;
        let keys: Vec<Item> = listed
            .iter()
            .filter_map(|i| text(i, "token_id"))
            .map(record_key)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            for item in self.get_many(chunk.to_vec()).await? {
                out.push(body::<PersonalToken>(&item, "body")?);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let Some(mut token) = PersonalTokens::token(self, id).await? else {
            return Ok(false);
        };
        if token.revoked_at.is_none() {
            token.revoked_at = Some(at);
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(record(&token)?))
                .condition_expression("attribute_exists(PK)")
                .send()
                .await
                .map_err(backend)?;
        }
        Ok(true)
    }
}
