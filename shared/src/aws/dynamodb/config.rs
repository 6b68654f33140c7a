//! The deployment's configuration documents on the table: the policy and the people file, each
//! the TOML text an operator pushed (`steward-aws config push`), never a template parameter or an
//! environment variable (both are capped at 4 KB). `CONFIG`/`<document>` holds the current text
//! with its version and digest; `CONFIG`/`<document>#v<version, 20 digits>` keeps every pushed
//! version, so what was in force when is on record. The functions read `CONFIG` at start and
//! again every minute, and rebuild their engine when a digest changed.

use super::{DynamoStore, Item, backend, build_err, key, n, number, s, text};
use crate::ports::store::StoreError;
use aws_sdk_dynamodb::types::{AttributeValue as Av, Put, TransactWriteItem};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

const PARTITION: &str = "CONFIG";
/// An item holds at most 400 KB; the text leaves room for the other attributes.
pub const MAX_DOCUMENT_BYTES: usize = 380 * 1024;

/// One configuration document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigDocument {
    Policy,
    People,
}

impl ConfigDocument {
    pub const ALL: [ConfigDocument; 2] = [ConfigDocument::Policy, ConfigDocument::People];

    pub fn name(self) -> &'static str {
        match self {
            ConfigDocument::Policy => "policy",
            ConfigDocument::People => "people",
        }
    }
}

/// A document as stored: its text, the version it was pushed as and the text's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    pub text: String,
    pub version: u64,
    pub sha256: String,
    pub pushed_at: DateTime<Utc>,
}

/// The current documents (absent ones were never pushed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredConfig {
    pub policy: Option<StoredDocument>,
    pub people: Option<StoredDocument>,
}

impl StoredConfig {
    pub fn get(&self, doc: ConfigDocument) -> Option<&StoredDocument> {
        match doc {
            ConfigDocument::Policy => self.policy.as_ref(),
            ConfigDocument::People => self.people.as_ref(),
        }
    }

    /// What identifies this configuration: the digests of both documents.
    pub fn fingerprint(&self) -> String {
        ConfigDocument::ALL
            .iter()
            .map(|d| self.get(*d).map_or("-", |x| x.sha256.as_str()))
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Why a push did not land.
#[derive(Debug, thiserror::Error)]
pub enum ConfigPushError {
    #[error(
        "the {document} file is {bytes} bytes; the table holds at most {MAX_DOCUMENT_BYTES} (for a directory that large, use the Okta directory instead of a people file)"
    )]
    TooLarge {
        document: &'static str,
        bytes: usize,
    },
    #[error(
        "the {0} was pushed by someone else meanwhile; nothing was changed: read it (steward-aws config show) and push again"
    )]
    ChangedMeanwhile(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn parse(item: &Item) -> Result<StoredDocument, StoreError> {
    let what = || format!("CONFIG/{}", text(item, "SK").unwrap_or("?"));
    let corrupt = |why: &str| StoreError::Corrupt(what(), why.into());
    let body = text(item, "text").ok_or_else(|| corrupt("attribute `text` is missing"))?;
    let sha = text(item, "sha256").ok_or_else(|| corrupt("attribute `sha256` is missing"))?;
    if sha256_hex(body) != sha {
        return Err(corrupt("the text does not match its digest"));
    }
    Ok(StoredDocument {
        text: body.to_string(),
        version: number(item, "version").ok_or_else(|| corrupt("no version"))?,
        sha256: sha.to_string(),
        pushed_at: text(item, "pushed_at")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| corrupt("no pushed_at"))?,
    })
}

impl DynamoStore {
    /// The current configuration documents, read consistently in one query.
    pub async fn config(&self) -> Result<StoredConfig, StoreError> {
        let mut out = StoredConfig::default();
        let keys: Vec<Item> = ConfigDocument::ALL
            .iter()
            .map(|d| key(PARTITION, d.name()))
            .collect();
        for item in self.get_many(keys).await? {
            match text(&item, "SK") {
                Some("policy") => out.policy = Some(parse(&item)?),
                Some("people") => out.people = Some(parse(&item)?),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Stores `text` as the new current `doc` and keeps it as a version. The caller validated
    /// it. Conditional on the version read before (`None`: never pushed), so two concurrent
    /// pushes cannot both win; the loser is told to read and push again.
    pub async fn put_config(
        &self,
        doc: ConfigDocument,
        text_value: &str,
        read_version: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<StoredDocument, ConfigPushError> {
        if text_value.len() > MAX_DOCUMENT_BYTES {
            return Err(ConfigPushError::TooLarge {
                document: doc.name(),
                bytes: text_value.len(),
            });
        }
        let version = read_version.unwrap_or(0) + 1;
        let stored = StoredDocument {
            text: text_value.to_string(),
            version,
            sha256: sha256_hex(text_value),
            pushed_at: now,
        };
        let attrs = |mut item: Item| {
            item.insert("text".into(), s(stored.text.clone()));
            item.insert("version".into(), n(version));
            item.insert("sha256".into(), s(stored.sha256.clone()));
            item.insert("pushed_at".into(), s(now.to_rfc3339()));
            item
        };
        let current = Put::builder()
            .table_name(self.table())
            .set_item(Some(attrs(key(PARTITION, doc.name()))));
        let current = match read_version {
            None => current.condition_expression("attribute_not_exists(PK)"),
            Some(v) => current
                .condition_expression("version = :read")
                .expression_attribute_values(":read", Av::N(v.to_string())),
        };
        let kept = Put::builder()
            .table_name(self.table())
            .set_item(Some(attrs(key(
                PARTITION,
                format!("{}#v{version:020}", doc.name()),
            ))))
            .condition_expression("attribute_not_exists(PK)");
        self.client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .put(current.build().map_err(build_err)?)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .put(kept.build().map_err(build_err)?)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(_)) => {
                    ConfigPushError::ChangedMeanwhile(doc.name())
                }
                _ => ConfigPushError::Store(backend(e)),
            })?;
        Ok(stored)
    }
}
