//! The personal-token port's properties.

use chrono::{Duration, TimeZone, Utc};
use shared::ports::PersonalTokens;
use shared::ports::personal_tokens::PersonalToken;

fn token(id: &str, person: &str, minute: u32) -> PersonalToken {
    let created = Utc.with_ymd_and_hms(2026, 3, 1, 9, minute, 0).unwrap();
    PersonalToken {
        id: id.into(),
        person: person.into(),
        name: format!("script {id}"),
        digest: format!("{:0>64}", id.len()),
        created_at: created,
        expires_at: created + Duration::days(30),
        revoked_at: None,
    }
}

pub async fn put_get_and_list_in_creation_order(p: &dyn PersonalTokens) {
    let a = token("pat_000000000000000a", "ana@example.com", 5);
    let b = token("pat_000000000000000b", "ana@example.com", 1);
    let c = token("pat_000000000000000c", "bob@example.com", 2);
    for t in [&a, &b, &c] {
        p.put_token(t).await.unwrap();
    }
    assert_eq!(p.token(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(p.token("pat_ffffffffffffffff").await.unwrap(), None);
    assert_eq!(p.tokens_of("ana@example.com").await.unwrap(), vec![b, a]);
    assert_eq!(p.tokens_of("bob@example.com").await.unwrap(), vec![c]);
    assert!(p.tokens_of("nobody@example.com").await.unwrap().is_empty());
}

pub async fn an_id_is_never_replaced(p: &dyn PersonalTokens) {
    let a = token("pat_0000000000000001", "ana@example.com", 1);
    p.put_token(&a).await.unwrap();
    let mut other = token("pat_0000000000000001", "mallory@example.com", 2);
    other.digest = "f".repeat(64);
    assert!(p.put_token(&other).await.is_err());
    assert_eq!(p.token(&a.id).await.unwrap(), Some(a));
    assert!(p.tokens_of("mallory@example.com").await.unwrap().is_empty());
}

pub async fn revoking_keeps_the_first_time(p: &dyn PersonalTokens) {
    let a = token("pat_0000000000000002", "ana@example.com", 1);
    p.put_token(&a).await.unwrap();
    let first = a.created_at + Duration::hours(1);
    assert!(a.live(first));
    assert!(p.revoke_token(&a.id, first).await.unwrap());
    assert!(
        p.revoke_token(&a.id, first + Duration::hours(1))
            .await
            .unwrap()
    );
    let stored = p.token(&a.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(first));
    assert!(!stored.live(first));
    assert!(!p.revoke_token("pat_ffffffffffffffff", first).await.unwrap());
    assert!(!a.live(a.expires_at), "a token is dead at its expiry");
}
