//! The dashboard-session port's properties.

use chrono::{Duration, TimeZone, Utc};
use shared::ports::Sessions;
use shared::ports::sessions::{PendingSignIn, Session};

fn session(digest: &str, person: &str) -> Session {
    let created = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
    Session {
        digest: digest.into(),
        person: person.into(),
        csrf: format!("csrf-{digest}"),
        created_at: created,
        seen_at: created,
        expires_at: created + Duration::hours(12),
    }
}

pub async fn put_get_touch_and_end(p: &dyn Sessions) {
    let a = session(&"a".repeat(64), "ana@example.com");
    let b = session(&"b".repeat(64), "bob@example.com");
    p.put_session(&a).await.unwrap();
    p.put_session(&b).await.unwrap();
    assert_eq!(p.session(&a.digest).await.unwrap(), Some(a.clone()));
    assert_eq!(p.session(&"f".repeat(64)).await.unwrap(), None);
    let later = a.created_at + Duration::minutes(7);
    assert!(p.touch_session(&a.digest, later).await.unwrap());
    let touched = p.session(&a.digest).await.unwrap().unwrap();
    assert_eq!(touched.seen_at, later);
    assert_eq!(
        (
            touched.person.as_str(),
            touched.created_at,
            touched.expires_at
        ),
        ("ana@example.com", a.created_at, a.expires_at),
        "touching changes only when it was seen"
    );
    p.end_session(&a.digest).await.unwrap();
    assert_eq!(p.session(&a.digest).await.unwrap(), None);
    assert!(
        !p.touch_session(&a.digest, later).await.unwrap(),
        "an ended session is not brought back by activity"
    );
    p.end_session(&a.digest).await.unwrap();
    assert_eq!(p.session(&b.digest).await.unwrap(), Some(b), "others stay");
}

pub async fn a_session_is_never_replaced(p: &dyn Sessions) {
    let a = session(&"c".repeat(64), "ana@example.com");
    p.put_session(&a).await.unwrap();
    let forged = session(&"c".repeat(64), "mallory@example.com");
    assert!(p.put_session(&forged).await.is_err());
    assert_eq!(p.session(&a.digest).await.unwrap(), Some(a));
}

pub async fn a_sign_in_is_taken_once(p: &dyn Sessions) {
    let pending = PendingSignIn {
        digest: "d".repeat(64),
        verifier: "v".repeat(64),
        return_to: "/approvals".into(),
        expires_at: Utc::now() + Duration::minutes(10),
    };
    p.put_sign_in(&pending).await.unwrap();
    assert!(p.put_sign_in(&pending).await.is_err(), "a state is new");
    assert_eq!(
        p.take_sign_in(&pending.digest).await.unwrap(),
        Some(pending.clone())
    );
    assert_eq!(p.take_sign_in(&pending.digest).await.unwrap(), None);
    assert_eq!(p.take_sign_in(&"e".repeat(64)).await.unwrap(), None);
}
