//! Minting and checking personal API tokens (the record is
//! [`crate::ports::personal_tokens::PersonalToken`]). A token is `stp_<16 hex>_<43 base64url>`;
//! its id is `pat_<16 hex>`, the store keeps the SHA-256 of the whole token.

use crate::ports::PersonalTokens;
use crate::ports::personal_tokens::PersonalToken;
use crate::ports::store::StoreError;
use crate::secret::Secret;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "stp_";
pub const DEFAULT_TTL: Duration = Duration::days(30);
pub const MAX_TTL: Duration = Duration::days(365);
/// Live tokens one person may hold at once.
pub const MAX_LIVE_PER_PERSON: usize = 20;

/// Why a token cannot be made or used; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PersonalTokenError {
    #[error("a token name is 1 to 64 letters, digits, `-`, `_` or `.`")]
    BadName,
    #[error("ttl `{0}` is not a duration like 30d or 12h")]
    BadTtl(String),
    #[error("ttl {0} is longer than the 365 days allowed")]
    TtlTooLong(String),
    #[error("you hold {MAX_LIVE_PER_PERSON} live tokens already; revoke one first")]
    TooMany,
    #[error("you have a live token named `{0}` already; revoke it or pick another name")]
    NameTaken(String),
    #[error("not a personal token")]
    Malformed,
    #[error("unknown personal token")]
    Unknown,
    #[error("the personal token {0} was revoked")]
    Revoked(String),
    #[error("the personal token {0} expired at {1}")]
    Expired(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token's id, from a presented token (nothing is looked up).
fn id_of(presented: &str) -> Option<String> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (hex_id, secret) = rest.split_at_checked(16)?;
    let secret = secret.strip_prefix('_')?;
    (hex_id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() == 43)
        .then(|| format!("pat_{hex_id}"))
}

/// Makes a token for `person` and stores its digest; returns the record and the token (shown
/// once, kept nowhere).
pub async fn mint(
    store: &dyn PersonalTokens,
    person: &str,
    name: &str,
    ttl: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(PersonalToken, Secret), PersonalTokenError> {
    let name = name.trim();
    let name_ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(PersonalTokenError::BadName);
    }
    let ttl = match ttl.map(str::trim).filter(|t| !t.is_empty()) {
        None => DEFAULT_TTL,
        Some(t) => {
            let d = humantime::parse_duration(t)
                .map_err(|_| PersonalTokenError::BadTtl(t.to_string()))?;
            let d = Duration::from_std(d).map_err(|_| PersonalTokenError::TtlTooLong(t.into()))?;
            if d > MAX_TTL {
                return Err(PersonalTokenError::TtlTooLong(t.to_string()));
            }
            if d <= Duration::zero() {
                return Err(PersonalTokenError::BadTtl(t.to_string()));
            }
            d
        }
    };
    let live: Vec<PersonalToken> = store
        .tokens_of(person)
        .await?
        .into_iter()
        .filter(|t| t.live(now))
        .collect();
    if live.len() >= MAX_LIVE_PER_PERSON {
        return Err(PersonalTokenError::TooMany);
    }
    if live.iter().any(|t| t.name == name) {
        return Err(PersonalTokenError::NameTaken(name.to_string()));
    }
    let hex_id = hex::encode(rand::random::<[u8; 8]>());
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let token = format!("{PREFIX}{hex_id}_{secret}");
    let record = PersonalToken {
        id: format!("pat_{hex_id}"),
        person: person.to_string(),
        name: name.to_string(),
        digest: digest(&token),
        created_at: now,
        expires_at: now + ttl,
        revoked_at: None,
    };
    store.put_token(&record).await?;
    Ok((record, Secret::new(token)))
}

/// Whether a bearer token looks like a personal token (it is then never tried as anything else).
pub fn looks_personal(presented: &str) -> bool {
    presented.starts_with(PREFIX)
}

/// The live token a presented one is, checked in constant time against its stored digest.
pub async fn check(
    store: &dyn PersonalTokens,
    presented: &str,
    now: DateTime<Utc>,
) -> Result<PersonalToken, PersonalTokenError> {
    let id = id_of(presented).ok_or(PersonalTokenError::Malformed)?;
    let record = store.token(&id).await?.ok_or(PersonalTokenError::Unknown)?;
    if !bool::from(digest(presented).as_bytes().ct_eq(record.digest.as_bytes())) {
        return Err(PersonalTokenError::Unknown);
    }
    if record.revoked_at.is_some() {
        return Err(PersonalTokenError::Revoked(record.id));
    }
    if now >= record.expires_at {
        return Err(PersonalTokenError::Expired(
            record.id,
            record.expires_at.to_rfc3339(),
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_only_from_well_formed_tokens() {
        let secret = "a".repeat(43);
        assert_eq!(
            id_of(&format!("stp_0123456789abcdef_{secret}")).as_deref(),
            Some("pat_0123456789abcdef")
        );
        assert_eq!(id_of(&format!("stp_0123456789abcdeg_{secret}")), None);
        assert_eq!(id_of("stp_0123456789abcdef_short"), None);
        assert_eq!(id_of("stw_admin"), None);
    }
}
