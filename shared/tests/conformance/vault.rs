//! The vault port's contract (Secrets Manager version stages): values by stage, AWSCURRENT
//! demoting the old current to AWSPREVIOUS, AWSPENDING alongside, idempotent puts by version id,
//! version listings that never carry a value, and versions without a stage never read again.
//!
//! Every property expects a fresh, empty vault.

use super::Subject;
use shared::Secret;
use shared::ports::Vault;
use shared::ports::vault::{Stage, VersionInfo};

/// Version ids are Secrets Manager ClientRequestTokens: 32 to 64 characters.
pub const V1: &str = "11111111-1111-4111-8111-111111111111";
pub const V2: &str = "22222222-2222-4222-8222-222222222222";
pub const V3: &str = "33333333-3333-4333-8333-333333333333";

/// Runs every property, each on a fresh vault from `fresh`.
pub async fn run_vault_suite(fresh: impl Fn() -> Subject<dyn Vault>) {
    put_get_by_stage(&*fresh().port).await;
    new_current_demotes_old_to_previous(&*fresh().port).await;
    pending_is_separate(&*fresh().port).await;
    put_is_idempotent_per_version(&*fresh().port).await;
    versions_list_ids_and_stages_never_values(&*fresh().port).await;
    secrets_are_independent(&*fresh().port).await;
    version_ids_must_be_tokens(&*fresh().port).await;
    deletion_is_scheduled_with_a_recovery_window(&*fresh().port).await;
    a_version_without_a_stage_is_never_read(&*fresh().port).await;
}

/// Decommission: the secret is scheduled for deletion after the recovery window; from then it
/// cannot be read, a repeat keeps the first date, and other secrets are untouched.
pub async fn deletion_is_scheduled_with_a_recovery_window(v: &dyn Vault) {
    v.put("agt-1", V1, &Secret::new("s1"), Stage::Current)
        .await
        .unwrap();
    v.put("agt-2", V2, &Secret::new("s2"), Stage::Current)
        .await
        .unwrap();
    let before = chrono::Utc::now();
    let after = v.schedule_deletion("agt-1", 7).await.unwrap();
    let days = (after - before).num_hours();
    assert!(
        (7 * 24 - 1..=7 * 24 + 1).contains(&days),
        "7 days later: {after}"
    );
    let err = v.get("agt-1", Stage::Current).await.unwrap_err();
    assert!(
        matches!(
            err,
            shared::ports::vault::VaultError::ScheduledForDeletion { .. }
        ),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("s1"),
        "no value in the error: {err}"
    );
    let again = v.schedule_deletion("agt-1", 7).await.unwrap();
    assert!(
        (again - after).num_seconds().abs() <= 2,
        "{again} vs {after}"
    );
    assert_eq!(get(v, "agt-2", Stage::Current).await, some(V2, "s2"));
    // Nothing to delete is not an error.
    v.schedule_deletion("agt-none", 7).await.unwrap();
}

/// A version id Secrets Manager would refuse is refused everywhere, and nothing is stored.
pub async fn version_ids_must_be_tokens(v: &dyn Vault) {
    for bad in [
        "v1",
        "short-id",
        &"x".repeat(65),
        "11111111 1111 4111 8111 111111111111",
    ] {
        let err = v
            .put("agt-1", bad, &Secret::new("s1"), Stage::Current)
            .await
            .unwrap_err();
        assert!(
            matches!(err, shared::ports::vault::VaultError::BadVersionId(_)),
            "{bad}: {err:?}"
        );
    }
    assert_eq!(get(v, "agt-1", Stage::Current).await, None);
    assert!(v.versions("agt-1").await.unwrap().is_empty());
}

async fn get(v: &dyn Vault, secret: &str, stage: Stage) -> Option<(String, String)> {
    v.get(secret, stage)
        .await
        .unwrap()
        .map(|(id, s)| (id, s.expose().to_string()))
}

fn some(id: &str, value: &str) -> Option<(String, String)> {
    Some((id.to_string(), value.to_string()))
}

fn stages_of(versions: &[VersionInfo], id: &str) -> Vec<Stage> {
    let mut s = versions
        .iter()
        .find(|v| v.version_id == id)
        .map(|v| v.stages.clone())
        .unwrap_or_default();
    s.sort_by_key(|s| s.as_str());
    s
}

/// A value is read back by the stage it was put with, and by no other.
pub async fn put_get_by_stage(v: &dyn Vault) {
    assert_eq!(get(v, "agt-1", Stage::Current).await, None);
    assert!(v.versions("agt-1").await.unwrap().is_empty());
    v.put("agt-1", V1, &Secret::new("s1"), Stage::Current)
        .await
        .unwrap();
    assert_eq!(get(v, "agt-1", Stage::Current).await, some(V1, "s1"));
    assert_eq!(get(v, "agt-1", Stage::Pending).await, None);
    assert_eq!(get(v, "agt-1", Stage::Previous).await, None);
}

/// A new AWSCURRENT moves the old current to AWSPREVIOUS (and the old previous loses it).
pub async fn new_current_demotes_old_to_previous(v: &dyn Vault) {
    v.put("agt-1", V1, &Secret::new("s1"), Stage::Current)
        .await
        .unwrap();
    v.put("agt-1", V2, &Secret::new("s2"), Stage::Current)
        .await
        .unwrap();
    assert_eq!(get(v, "agt-1", Stage::Current).await, some(V2, "s2"));
    assert_eq!(get(v, "agt-1", Stage::Previous).await, some(V1, "s1"));
    v.put("agt-1", V3, &Secret::new("s3"), Stage::Current)
        .await
        .unwrap();
    assert_eq!(get(v, "agt-1", Stage::Current).await, some(V3, "s3"));
    assert_eq!(get(v, "agt-1", Stage::Previous).await, some(V2, "s2"));
    let versions = v.versions("agt-1").await.unwrap();
    assert_eq!(stages_of(&versions, V3), vec![Stage::Current]);
    assert_eq!(stages_of(&versions, V2), vec![Stage::Previous]);
    assert_eq!(stages_of(&versions, V1), vec![], "v1 holds no stage now");
}

/// AWSPENDING lives beside AWSCURRENT; promoting the pending version demotes the current one.
pub async fn pending_is_separate(v: &dyn Vault) {
    v.put("agt-1", V1, &Secret::new("s1"), Stage::Current)
        .await
        .unwrap();
    v.put("agt-1", V2, &Secret::new("s2"), Stage::Pending)
        .await
        .unwrap();
    assert_eq!(get(v, "agt-1", Stage::Current).await, some(V1, "s1"));
    assert_eq!(get(v, "agt-1", Stage::Pending).await, some(V2, "s2"));
    assert_eq!(get(v, "agt-1", Stage::Previous).await, None);
    // A newer pending replaces the older pending, not the current.
    v.put("agt-1", V3, &Secret::new("s3"), Stage::Pending)
        .await
        .unwrap();
    assert_eq!(get(v, "agt-1", Stage::Pending).await, some(V3, "s3"));
    assert_eq!(get(v, "agt-1", Stage::Current).await, some(V1, "s1"));
    // Promote v3.
    v.put("agt-1", V3, &Secret::new("s3"), Stage::Current)
        .await
        .unwrap();
    assert_eq!(get(v, "agt-1", Stage::Current).await, some(V3, "s3"));
    assert_eq!(get(v, "agt-1", Stage::Previous).await, some(V1, "s1"));
}

/// Putting the same version id again (a redelivered command) changes nothing.
pub async fn put_is_idempotent_per_version(v: &dyn Vault) {
    for _ in 0..2 {
        v.put("agt-1", V1, &Secret::new("s1"), Stage::Current)
            .await
            .unwrap();
    }
    assert_eq!(get(v, "agt-1", Stage::Current).await, some(V1, "s1"));
    assert_eq!(
        get(v, "agt-1", Stage::Previous).await,
        None,
        "a repeat must not demote the version to its own previous"
    );
    let versions = v.versions("agt-1").await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].version_id, V1);
    assert_eq!(versions[0].stages, vec![Stage::Current]);

    for _ in 0..2 {
        v.put("agt-1", V2, &Secret::new("s2"), Stage::Current)
            .await
            .unwrap();
    }
    assert_eq!(get(v, "agt-1", Stage::Current).await, some(V2, "s2"));
    assert_eq!(get(v, "agt-1", Stage::Previous).await, some(V1, "s1"));
    let versions = v.versions("agt-1").await.unwrap();
    assert_eq!(
        versions.iter().filter(|x| x.version_id == V2).count(),
        1,
        "one entry per version id"
    );
}

/// `versions` names ids and stages; the value appears nowhere in it.
pub async fn versions_list_ids_and_stages_never_values(v: &dyn Vault) {
    let (s1, s2) = ("plaintext-one-6f1d9a2c5b8e", "plaintext-two-0a7e3c9d1f4b");
    v.put("agt-1", V1, &Secret::new(s1), Stage::Current)
        .await
        .unwrap();
    v.put("agt-1", V2, &Secret::new(s2), Stage::Pending)
        .await
        .unwrap();
    let versions = v.versions("agt-1").await.unwrap();
    let mut ids: Vec<&str> = versions.iter().map(|x| x.version_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec![V1, V2]);
    assert_eq!(stages_of(&versions, V1), vec![Stage::Current]);
    assert_eq!(stages_of(&versions, V2), vec![Stage::Pending]);
    let shown = format!("{versions:?} {}", serde_json::to_string(&versions).unwrap());
    assert!(!shown.contains(s1) && !shown.contains(s2), "{shown}");
    assert!(shown.contains("AWSCURRENT") && shown.contains("AWSPENDING"));
}

/// Secrets with different names do not share versions or stages.
pub async fn secrets_are_independent(v: &dyn Vault) {
    v.put("agt-1", V1, &Secret::new("one"), Stage::Current)
        .await
        .unwrap();
    v.put("agt-2", V1, &Secret::new("two"), Stage::Current)
        .await
        .unwrap();
    v.put("agt-2", V2, &Secret::new("two-b"), Stage::Current)
        .await
        .unwrap();
    assert_eq!(get(v, "agt-1", Stage::Current).await, some(V1, "one"));
    assert_eq!(get(v, "agt-1", Stage::Previous).await, None);
    assert_eq!(get(v, "agt-2", Stage::Current).await, some(V2, "two-b"));
    assert_eq!(get(v, "agt-2", Stage::Previous).await, some(V1, "two"));
    assert_eq!(v.versions("agt-1").await.unwrap().len(), 1);
}

/// A version that lost every stage (rotated out twice, or a pending version replaced) is never
/// read again, by any stage; where the adapter still lists it, it holds no stage.
pub async fn a_version_without_a_stage_is_never_read(v: &dyn Vault) {
    let old = "rotated-out-value-9b3e1f7a2c";
    v.put("agt-1", V1, &Secret::new(old), Stage::Current)
        .await
        .unwrap();
    v.put("agt-1", V2, &Secret::new("s2"), Stage::Current)
        .await
        .unwrap();
    v.put("agt-1", V3, &Secret::new("s3"), Stage::Current)
        .await
        .unwrap();
    let dropped = "replaced-pending-4d8a0c6e1b";
    v.put("agt-2", V1, &Secret::new("s1"), Stage::Current)
        .await
        .unwrap();
    v.put("agt-2", V2, &Secret::new(dropped), Stage::Pending)
        .await
        .unwrap();
    v.put("agt-2", V3, &Secret::new("s3"), Stage::Pending)
        .await
        .unwrap();
    for (secret, gone, value) in [("agt-1", V1, old), ("agt-2", V2, dropped)] {
        for stage in [Stage::Current, Stage::Pending, Stage::Previous] {
            if let Some((id, s)) = get(v, secret, stage).await {
                assert_ne!(id, gone, "{secret} {stage:?}");
                assert_ne!(s, value, "{secret} {stage:?}");
            }
        }
        let versions = v.versions(secret).await.unwrap();
        assert_eq!(stages_of(&versions, gone), vec![], "{secret}: {versions:?}");
    }
}
