//! Signed seals of the audit trail (docs/adr/0029-signed-audit-seals.md).
//!
//! The hash chain shows a record changed in place, but whoever can write the store can also
//! re-hash a rewritten suffix, or drop the tail, and the chain still holds. A seal is a
//! statement "the trail ran to seq N and its chains ended in these hashes, at time T", signed
//! with an Ed25519 key kept apart from the store (a file beside the database, a Secrets
//! Manager secret on AWS). The server seals every [`SEAL_EVERY`]; a verifier walks the whole
//! trail, recomputes every hash and link, and compares what it found at seq N with the seal:
//! - a record rewritten at or before N, even with every later hash recomputed, changes the
//!   tips the seal signed;
//! - records removed from the end leave the trail short of N;
//! - an old seal put back (with the records after it dropped) is older than the verifier
//!   accepts ([`SEAL_MAX_AGE`] by default).
//!
//! What was appended after the latest seal (at most [`SEAL_EVERY`]) is covered by the chain
//! only, until the next seal.

use super::chain_hash;
use crate::ports::store::{AuditRecord, AuditTips, ChainedAudit, Store, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the latest seal is kept (beside the readers' cursors, in the store it seals: the
/// signature, not the place, is what protects it).
pub const SEAL_CURSOR: &str = "audit-seal";
/// How often the server seals the trail.
pub const SEAL_EVERY: Duration = Duration::from_secs(60);
/// The oldest seal a verifier accepts by default: five seals missed.
pub const SEAL_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// Shortest secret a sealing key is derived from.
pub const SEAL_SECRET_MIN_CHARS: usize = 32;
/// The hash a chain starts from.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A signed statement of where the trail ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The last record it covers (0: the trail was empty).
    pub through: u64,
    /// [`AuditTips::digest`] of the chains' ends after record `through`.
    pub digest: String,
    /// Those ends (chain → hash of its last record): the next seal goes on from them.
    pub chains: BTreeMap<u32, String>,
    pub at: DateTime<Utc>,
    /// The Ed25519 public key that signed it (hex).
    pub key: String,
    /// Ed25519 signature over [`Seal::statement`] (hex).
    pub signature: String,
}

impl Seal {
    /// The bytes signed: a fixed label, the seq, the digest and the time.
    pub fn statement(through: u64, digest: &str, at: DateTime<Utc>) -> Vec<u8> {
        format!(
            "steward-audit-seal/v1\n{through}\n{digest}\n{}",
            at.to_rfc3339_opts(SecondsFormat::Micros, true)
        )
        .into_bytes()
    }
}

/// Why a sealing key could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealKeyError {
    #[error(
        "the audit sealing secret has {0} characters; it needs at least {SEAL_SECRET_MIN_CHARS} (random)"
    )]
    TooShort(usize),
    #[error("the audit sealing key {0} is not a 64-character hex Ed25519 public key")]
    NotAKey(String),
}

/// Signs seals. Holds the private key; never serialised.
pub struct Sealer {
    key: SigningKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key", &self.public_key())
            .finish()
    }
}

impl Sealer {
    /// The key derived from a random secret (a file's content, a Secrets Manager value): the
    /// seed is SHA-256 over a label and the secret, so the same secret always gives the same
    /// key and the secret can be any text a secret store generates.
    pub fn from_secret(secret: &crate::Secret) -> Result<Self, SealKeyError> {
        let value = secret.expose().trim();
        if value.chars().count() < SEAL_SECRET_MIN_CHARS {
            return Err(SealKeyError::TooShort(value.chars().count()));
        }
        let mut h = Sha256::new();
        h.update(b"steward-audit-seal-key/v1\n");
        h.update(value.as_bytes());
        let seed: [u8; 32] = h.finalize().into();
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The public key verifiers pin (hex).
    pub fn public_key(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    pub fn seal(&self, tips: &AuditTips, at: DateTime<Utc>) -> Seal {
        let digest = tips.digest();
        let signature = self.key.sign(&Seal::statement(tips.through, &digest, at));
        Seal {
            through: tips.through,
            digest,
            chains: tips.chains.clone(),
            at,
            key: self.public_key(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// A public key from its hex form.
pub fn verifying_key(hex_key: &str) -> Result<VerifyingKey, SealKeyError> {
    let bad = || SealKeyError::NotAKey(super::bounded(hex_key, 80));
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// Why the trail was not sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the audit trail was not sealed: {0}")]
    Store(#[from] StoreError),
    #[error("the audit trail was not sealed, because it changed since the last seal: {0}")]
    Broken(#[from] TrailBroken),
    #[error(
        "the audit trail has {records} records but no seal: the seal was removed, or the trail predates sealing; if it predates sealing, start once with STEWARD_AUDIT_ADOPT=1 to seal the trail as it is"
    )]
    Unsealed { records: u64 },
}

/// Seals the trail as it stands. The records appended since the last seal are checked first
/// (each hash, and each link from where the last seal left its chain), so a trail rewritten
/// between two seals is never signed. Without a previous seal, only an empty trail is sealed,
/// or any trail when `adopt` (a new key, or an operator's explicit choice on upgrade).
pub async fn seal(
    store: &dyn Store,
    sealer: &Sealer,
    now: DateTime<Utc>,
    adopt: bool,
) -> Result<Seal, SealError> {
    let tips = store.audit_tips().await?;
    match latest(store).await? {
        Some(prev) => {
            let key = sealer.key.verifying_key();
            let mut walk = TrailCheck::new(prev, &key)?;
            walk.resume();
            let mut after = walk.seal.through;
            if tips.through < after {
                return Err(TrailBroken::Truncated {
                    last: tips.through,
                    through: after,
                    at: walk.seal.at.to_rfc3339(),
                }
                .into());
            }
            while after < tips.through {
                let page = store.audit(after, 1000).await?;
                if page.is_empty() {
                    break;
                }
                for record in page.iter().take_while(|r| r.seq <= tips.through) {
                    walk.add(record)?;
                }
                after = page.last().map(|r| r.seq).unwrap_or(tips.through);
            }
            if walk.last_seq != tips.through || walk.chains != tips.chains {
                return Err(TrailBroken::Rewritten {
                    through: walk.seal.through,
                    at: walk.seal.at.to_rfc3339(),
                }
                .into());
            }
        }
        None if tips.through > 0 && !adopt => {
            return Err(SealError::Unsealed {
                records: tips.through,
            });
        }
        None => {}
    }
    let seal = sealer.seal(&tips, now);
    let text = serde_json::to_string(&seal).map_err(|e| StoreError::Backend(e.to_string()))?;
    store.set_cursor(SEAL_CURSOR, &text).await?;
    Ok(seal)
}

/// The latest seal, if the trail was ever sealed.
pub async fn latest(store: &dyn Store) -> Result<Option<Seal>, StoreError> {
    match store.cursor(SEAL_CURSOR).await? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(SEAL_CURSOR.into(), e.to_string())),
    }
}

/// Where the trail does not hold, as a verifier reports it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TrailBroken {
    #[error(
        "the seal is not signed by the key {expected}: it was made with another key or altered (the seal names key {found})"
    )]
    Signature { expected: String, found: String },
    #[error(
        "record {seq} comes after record {last}: the trail is out of order (records were renumbered)"
    )]
    Order { seq: u64, last: u64 },
    #[error(
        "record {seq} does not link to the record before it on chain {chain}: a record before it was removed or rewritten"
    )]
    Link { seq: u64, chain: u32 },
    #[error(
        "record {seq} does not hash to what the trail says: it was changed after it was written"
    )]
    Hash { seq: u64 },
    #[error("export line {line} is not an audit record with its chain position: {why}")]
    Unreadable { line: u64, why: String },
    #[error(
        "the trail ends at record {last} but was sealed through record {through} at {at}: records were removed from its end"
    )]
    Truncated { last: u64, through: u64, at: String },
    #[error(
        "the trail differs from what was sealed through record {through} at {at}: records up to it were rewritten (and re-hashed)"
    )]
    Rewritten { through: u64, at: String },
    #[error(
        "the latest seal is from {at}, older than {max_age_secs} s: the server has not sealed since, or an old seal was put back (with the records after it removed)"
    )]
    Stale { at: String, max_age_secs: u64 },
    #[error(
        "the trail has never been sealed: start the server (it seals every minute) or, on AWS, check the scheduler's tick"
    )]
    Unsealed,
}

/// What a verification covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrailVerified {
    pub records: u64,
    pub chains: usize,
    pub last_seq: u64,
    pub sealed_through: u64,
    pub sealed_at: DateTime<Utc>,
    pub key: String,
}

/// Walks a trail record by record (in seq order) against a seal whose signature it checked.
#[derive(Debug)]
pub struct TrailCheck {
    seal: Seal,
    chains: BTreeMap<u32, String>,
    last_seq: u64,
    records: u64,
    /// The digest of the chains' ends once the walk passed the sealed record.
    at_seal: Option<String>,
}

impl TrailCheck {
    /// Starts a walk: the seal must be signed by `key` (the key the verifier pinned).
    pub fn new(seal: Seal, key: &VerifyingKey) -> Result<Self, TrailBroken> {
        let bad = || TrailBroken::Signature {
            expected: hex::encode(key.as_bytes()),
            found: super::bounded(&seal.key, 80),
        };
        let signature = hex::decode(&seal.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or_else(bad)?;
        key.verify(
            &Seal::statement(seal.through, &seal.digest, seal.at),
            &signature,
        )
        .map_err(|_| bad())?;
        let listed = AuditTips {
            through: seal.through,
            chains: seal.chains.clone(),
        };
        if listed.digest() != seal.digest {
            return Err(bad());
        }
        let at_seal = (seal.through == 0).then(|| AuditTips::default().digest());
        Ok(Self {
            seal,
            chains: BTreeMap::new(),
            last_seq: 0,
            records: 0,
            at_seal,
        })
    }

    /// The next record of the trail.
    pub fn add(&mut self, c: &ChainedAudit) -> Result<(), TrailBroken> {
        if c.seq <= self.last_seq {
            return Err(TrailBroken::Order {
                seq: c.seq,
                last: self.last_seq,
            });
        }
        if self.at_seal.is_none() && c.seq > self.seal.through {
            // The sealed record itself is missing: the walk jumped past it.
            return Err(self.truncated());
        }
        let prev = self
            .chains
            .get(&c.chain)
            .map(String::as_str)
            .unwrap_or(ZERO_HASH);
        if c.prev_hash != prev {
            return Err(TrailBroken::Link {
                seq: c.seq,
                chain: c.chain,
            });
        }
        if c.hash != chain_hash(&c.prev_hash, &c.record) {
            return Err(TrailBroken::Hash { seq: c.seq });
        }
        self.chains.insert(c.chain, c.hash.clone());
        self.last_seq = c.seq;
        self.records += 1;
        if c.seq == self.seal.through {
            self.at_seal = Some(
                AuditTips {
                    through: c.seq,
                    chains: self.chains.clone(),
                }
                .digest(),
            );
        }
        Ok(())
    }

    /// Goes on from the seal's own chain ends (the sealer checks only what came after it).
    fn resume(&mut self) {
        self.chains = self.seal.chains.clone();
        self.last_seq = self.seal.through;
        self.at_seal = Some(self.seal.digest.clone());
    }

    fn truncated(&self) -> TrailBroken {
        TrailBroken::Truncated {
            last: self.last_seq,
            through: self.seal.through,
            at: self.seal.at.to_rfc3339(),
        }
    }

    /// The end of the walk: the trail reached the seal and agrees with it, and the seal is
    /// no older than `max_age` at `now`.
    pub fn finish(
        self,
        now: DateTime<Utc>,
        max_age: Duration,
    ) -> Result<TrailVerified, TrailBroken> {
        let Some(found) = &self.at_seal else {
            return Err(self.truncated());
        };
        if *found != self.seal.digest {
            return Err(TrailBroken::Rewritten {
                through: self.seal.through,
                at: self.seal.at.to_rfc3339(),
            });
        }
        let age = (now - self.seal.at).to_std().unwrap_or_default();
        if age > max_age {
            return Err(TrailBroken::Stale {
                at: self.seal.at.to_rfc3339(),
                max_age_secs: max_age.as_secs(),
            });
        }
        Ok(TrailVerified {
            records: self.records,
            chains: self.chains.len(),
            last_seq: self.last_seq,
            sealed_through: self.seal.through,
            sealed_at: self.seal.at,
            key: self.seal.key,
        })
    }
}

/// A record as `steward audit` exports it (one JSON line: the OCSF record with its chain
/// position under `unmapped`), back to what the store hashed: the position removed, the id
/// from `metadata.uid`.
pub fn from_export_line(line: &str) -> Result<ChainedAudit, String> {
    let mut v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let unmapped = v
        .get_mut("unmapped")
        .and_then(|u| u.as_object_mut())
        .ok_or("no `unmapped` object")?;
    let mut take = |k: &str| unmapped.remove(k).ok_or(format!("no `unmapped.{k}`"));
    let seq = take("audit_seq")?
        .as_u64()
        .ok_or("`audit_seq` is not a number")?;
    let chain = take("audit_chain")?
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .ok_or("`audit_chain` is not a chain number")?;
    let prev_hash = take("prev_hash")?
        .as_str()
        .ok_or("`prev_hash` is not text")?
        .to_string();
    let hash = take("hash")?
        .as_str()
        .ok_or("`hash` is not text")?
        .to_string();
    // The export made `unmapped` for a record that had none (Steward's own always have one).
    if unmapped.is_empty() {
        v.as_object_mut().map(|o| o.remove("unmapped"));
    }
    let id = v["metadata"]["uid"]
        .as_str()
        .ok_or("no `metadata.uid`")?
        .to_string();
    // Not hashed (the body holds it): a record without it still verifies.
    let time = v["time"]
        .as_i64()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_default();
    Ok(ChainedAudit {
        seq,
        chain,
        record: AuditRecord { id, time, body: v },
        prev_hash,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sealer() -> Sealer {
        Sealer::from_secret(&crate::Secret::new("k".repeat(40))).unwrap()
    }

    /// A single-chain trail of `n` records, as the embedded store writes it.
    fn trail(n: u64) -> Vec<ChainedAudit> {
        let mut prev = ZERO_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let t = DateTime::from_timestamp_millis(1_700_000_000_000 + seq as i64).unwrap();
                let record = crate::audit::refusal(
                    "test",
                    &statemachines::Actor::System,
                    None,
                    None,
                    &format!("reason {seq}"),
                    t,
                );
                let hash = chain_hash(&prev, &record);
                let c = ChainedAudit {
                    seq,
                    chain: 0,
                    record,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                c
            })
            .collect()
    }

    fn tips_after(records: &[ChainedAudit]) -> AuditTips {
        let mut chains = BTreeMap::new();
        for r in records {
            chains.insert(r.chain, r.hash.clone());
        }
        AuditTips {
            through: records.last().map(|r| r.seq).unwrap_or(0),
            chains,
        }
    }

    fn walk(
        records: &[ChainedAudit],
        seal: &Seal,
        key: &VerifyingKey,
        now: DateTime<Utc>,
    ) -> Result<TrailVerified, TrailBroken> {
        let mut check = TrailCheck::new(seal.clone(), key)?;
        for r in records {
            check.add(r)?;
        }
        check.finish(now, SEAL_MAX_AGE)
    }

    fn rehash(records: &mut [ChainedAudit]) {
        let mut prev = ZERO_HASH.to_string();
        for r in records {
            r.prev_hash = prev.clone();
            r.hash = chain_hash(&prev, &r.record);
            prev = r.hash.clone();
        }
    }

    #[test]
    fn an_untouched_trail_verifies_including_what_was_appended_after_the_seal() {
        let s = sealer();
        let records = trail(10);
        let now = Utc::now();
        let seal = s.seal(&tips_after(&records[..8]), now);
        let key = verifying_key(&s.public_key()).unwrap();
        let v = walk(&records, &seal, &key, now).unwrap();
        assert_eq!((v.records, v.last_seq, v.sealed_through), (10, 10, 8));
    }

    #[test]
    fn a_rewritten_and_rehashed_trail_is_caught_by_the_seal() {
        let s = sealer();
        let mut records = trail(10);
        let now = Utc::now();
        let seal = s.seal(&tips_after(&records), now);
        records[3].record.body["message"] = json!("nothing happened");
        // The chain alone notices an edit in place…
        let key = verifying_key(&s.public_key()).unwrap();
        assert_eq!(
            walk(&records, &seal, &key, now).unwrap_err(),
            TrailBroken::Hash { seq: 4 }
        );
        // …and the seal notices one whose hashes were recomputed.
        rehash(&mut records);
        assert!(matches!(
            walk(&records, &seal, &key, now).unwrap_err(),
            TrailBroken::Rewritten { through: 10, .. }
        ));
    }

    #[test]
    fn a_removed_record_or_a_cut_tail_is_caught() {
        let s = sealer();
        let records = trail(10);
        let now = Utc::now();
        let seal = s.seal(&tips_after(&records), now);
        let key = verifying_key(&s.public_key()).unwrap();
        let mut gap = records.clone();
        gap.remove(4);
        assert_eq!(
            walk(&gap, &seal, &key, now).unwrap_err(),
            TrailBroken::Link { seq: 6, chain: 0 }
        );
        assert!(matches!(
            walk(&records[..7], &seal, &key, now).unwrap_err(),
            TrailBroken::Truncated {
                last: 7,
                through: 10,
                ..
            }
        ));
        // The sealed record itself gone, later ones kept (renumbering is an order error).
        let mut skip = records.clone();
        skip.remove(9);
        skip.push(ChainedAudit {
            seq: 11,
            ..records[9].clone()
        });
        assert!(matches!(
            walk(&skip, &seal, &key, now).unwrap_err(),
            TrailBroken::Truncated { through: 10, .. }
        ));
        let mut again = records.clone();
        again.insert(2, records[1].clone());
        assert_eq!(
            walk(&again, &seal, &key, now).unwrap_err(),
            TrailBroken::Order { seq: 2, last: 2 }
        );
    }

    #[test]
    fn a_seal_from_another_key_an_altered_seal_or_an_old_one_is_refused() {
        let s = sealer();
        let records = trail(5);
        let now = Utc::now();
        let key = verifying_key(&s.public_key()).unwrap();
        let other = Sealer::from_secret(&crate::Secret::new("z".repeat(40))).unwrap();
        let forged = other.seal(&tips_after(&records), now);
        assert!(matches!(
            walk(&records, &forged, &key, now).unwrap_err(),
            TrailBroken::Signature { .. }
        ));
        let mut altered = s.seal(&tips_after(&records[..4]), now);
        altered.through = 5;
        assert!(matches!(
            walk(&records, &altered, &key, now).unwrap_err(),
            TrailBroken::Signature { .. }
        ));
        let old = s.seal(
            &tips_after(&records),
            now - chrono::Duration::seconds(SEAL_MAX_AGE.as_secs() as i64 + 1),
        );
        assert!(matches!(
            walk(&records, &old, &key, now).unwrap_err(),
            TrailBroken::Stale { .. }
        ));
        // An empty trail sealed as empty verifies; records added since do too.
        let empty = s.seal(&AuditTips::default(), now);
        assert_eq!(walk(&records, &empty, &key, now).unwrap().records, 5);
    }

    #[test]
    fn keys_come_from_long_secrets_only_and_the_same_secret_gives_the_same_key() {
        assert_eq!(
            Sealer::from_secret(&crate::Secret::new("short")).unwrap_err(),
            SealKeyError::TooShort(5)
        );
        assert_eq!(sealer().public_key(), sealer().public_key());
        assert!(verifying_key("abc").is_err());
        assert!(!format!("{:?}", sealer()).contains(&"k".repeat(40)));
    }

    #[test]
    fn an_exported_line_reads_back_to_the_record_that_was_hashed() {
        let records = trail(3);
        for r in &records {
            let back = from_export_line(&crate::audit::export_line(r)).unwrap();
            assert_eq!(back.hash, chain_hash(&back.prev_hash, &back.record));
            assert_eq!(back, *r);
        }
        assert!(from_export_line("{\"unmapped\":{}}").is_err());
    }

    #[cfg(feature = "embedded")]
    mod on_sqlite {
        use super::*;
        use crate::embedded::sqlite::{Db, Durability};
        use crate::ports::store::StoreWrite;

        fn refusals(n: usize) -> Vec<AuditRecord> {
            (0..n)
                .map(|i| {
                    crate::audit::refusal(
                        "test",
                        &statemachines::Actor::System,
                        None,
                        None,
                        &format!("reason {i}"),
                        Utc::now(),
                    )
                })
                .collect()
        }

        #[tokio::test]
        async fn the_sealer_signs_only_a_trail_that_still_agrees_with_its_last_seal() {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::open(&dir.path().join("s.db"), Durability::Fsync).unwrap();
            let s = sealer();
            // An empty trail is sealed without adopting anything.
            seal(&db, &s, Utc::now(), false).await.unwrap();
            db.append_audit(refusals(5)).await.unwrap();
            let second = seal(&db, &s, Utc::now(), false).await.unwrap();
            assert_eq!(second.through, 5);
            db.append_audit(refusals(3)).await.unwrap();
            // Someone with the database rewrites record 3 and re-hashes everything after it.
            {
                let conn = db.lock();
                conn.execute(
                    "UPDATE audit SET body = json_set(body, '$.message', 'nothing') WHERE seq = 3",
                    [],
                )
                .unwrap();
                let mut prev = ZERO_HASH.to_string();
                let rows: Vec<(i64, String, String)> = conn
                    .prepare("SELECT seq, id, body FROM audit ORDER BY seq")
                    .unwrap()
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                for (seq, id, body) in rows {
                    let record = AuditRecord {
                        id,
                        time: Utc::now(),
                        body: serde_json::from_str(&body).unwrap(),
                    };
                    let hash = chain_hash(&prev, &record);
                    conn.execute(
                        "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                        rusqlite::params![prev, hash, seq],
                    )
                    .unwrap();
                    prev = hash;
                }
            }
            let refused = seal(&db, &s, Utc::now(), false).await.unwrap_err();
            assert!(
                matches!(refused, SealError::Broken(TrailBroken::Link { seq: 6, .. })),
                "{refused}"
            );
            // The seal stays where it was: a verifier finds the trail rewritten.
            assert_eq!(latest(&db).await.unwrap().unwrap(), second);
            // Removing the seal does not make the sealer adopt the rewritten trail.
            db.lock().execute("DELETE FROM cursors", []).unwrap();
            assert!(matches!(
                seal(&db, &s, Utc::now(), false).await.unwrap_err(),
                SealError::Unsealed { records: 8 }
            ));
            assert_eq!(seal(&db, &s, Utc::now(), true).await.unwrap().through, 8);
        }

        #[tokio::test]
        async fn a_cut_tail_is_not_sealed_over() {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::open(&dir.path().join("s.db"), Durability::Fsync).unwrap();
            let s = sealer();
            db.append_audit(refusals(4)).await.unwrap();
            seal(&db, &s, Utc::now(), true).await.unwrap();
            db.lock()
                .execute("DELETE FROM audit WHERE seq > 2", [])
                .unwrap();
            assert!(matches!(
                seal(&db, &s, Utc::now(), false).await.unwrap_err(),
                SealError::Broken(TrailBroken::Truncated {
                    last: 2,
                    through: 4,
                    ..
                })
            ));
        }
    }
}
