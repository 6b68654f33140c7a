//! The audit chain on the table: one partition per day, a `HEAD` item holding the day's tip,
//! and the transaction items that append records to it.

use super::*;

impl DynamoStore {
    pub(super) async fn genesis_day(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .get("AUDIT#GENESIS".into(), "META")
            .await?
            .and_then(|i| number(&i, "day")))
    }

    /// Reads today's chain tip; on the first write of a day, the last tip of an earlier day.
    pub(super) async fn chain_tip(&self, now: DateTime<Utc>) -> Result<ChainTip, StoreError> {
        let today = day_number(now);
        // Today's and tomorrow's tips in one round trip: a writer whose clock runs ahead may
        // have started tomorrow already, and then this writer follows it.
        let mut heads = self
            .get_many(vec![
                key(day_name(today), "HEAD"),
                key(day_name(today + 1), "HEAD"),
            ])
            .await?;
        let tomorrow = day_name(today + 1);
        let (day, found) = match heads.iter().position(|h| text(h, "PK") == Some(&tomorrow)) {
            Some(i) => (today + 1, Some(heads.swap_remove(i))),
            None => (today, heads.pop()),
        };
        if let Some(head) = found {
            return Ok(ChainTip {
                day,
                head_exists: true,
                genesis_exists: true,
                seq: number(&head, "seq").unwrap_or(day * SEQ_PER_DAY),
                hash: text(&head, "hash").unwrap_or(ZERO_HASH).to_string(),
                links_to: None,
            });
        }
        let genesis = self.genesis_day().await?;
        let mut hash = ZERO_HASH.to_string();
        let mut links_to = None;
        if let Some(first) = genesis {
            let mut d = day;
            while d > first {
                d -= 1;
                if let Some(head) = self.get(day_name(d), "HEAD").await? {
                    hash = text(&head, "hash").unwrap_or(ZERO_HASH).to_string();
                    links_to = Some((d, number(&head, "seq").unwrap_or(d * SEQ_PER_DAY)));
                    break;
                }
            }
        }
        Ok(ChainTip {
            day,
            head_exists: false,
            genesis_exists: genesis.is_some(),
            seq: day * SEQ_PER_DAY,
            hash,
            links_to,
        })
    }

    /// The transaction items that append `records` to the chain after `tip`.
    pub(super) fn chain_items(
        &self,
        tip: &ChainTip,
        records: &[AuditRecord],
    ) -> Result<Vec<(Role, TransactWriteItem)>, StoreError> {
        let mut items = Vec::with_capacity(2 * records.len() + 2);
        let (mut seq, mut prev) = (tip.seq, tip.hash.clone());
        let partition = day_name(tip.day);
        for (i, record) in records.iter().enumerate() {
            // Like the embedded store, a record id is appended once: a retried append (after a
            // lost response) or a repeated one finds its marker and leaves the record out.
            let marker = key(format!("AUDITID#{}", record.id), "META");
            items.push((
                Role::AuditId(i),
                self.put(marker, Some("attribute_not_exists(PK)"), &[], &[])?,
            ));
            seq += 1;
            let hash = chain_hash(&prev, record);
            let chained = ChainedAudit {
                seq,
                record: record.clone(),
                prev_hash: prev,
                hash: hash.clone(),
            };
            let mut item = key(partition.clone(), seq_key(seq));
            item.insert("body".into(), json(&chained)?);
            items.push((
                Role::ChainHead,
                self.put(item, Some("attribute_not_exists(PK)"), &[], &[])?,
            ));
            prev = hash;
        }
        let mut head = key(partition, "HEAD");
        head.insert("seq".into(), n(seq));
        head.insert("hash".into(), s(prev));
        items.push((
            Role::ChainHead,
            if tip.head_exists {
                self.put(head, Some("seq = :seq"), &[], &[(":seq", n(tip.seq))])?
            } else {
                self.put(head, Some("attribute_not_exists(PK)"), &[], &[])?
            },
        ));
        // No fork at midnight: appending to a day requires that the next day has not started,
        // and starting a day requires that the day it links to has not moved since it was read.
        items.push((
            Role::ChainHead,
            self.condition(
                key(day_name(tip.day + 1), "HEAD"),
                "attribute_not_exists(PK)",
                None,
            )?,
        ));
        if let Some((day, seq)) = tip.links_to {
            items.push((
                Role::ChainHead,
                self.condition(key(day_name(day), "HEAD"), "seq = :seq", Some(n(seq)))?,
            ));
        }
        if !tip.genesis_exists {
            let mut g = key("AUDIT#GENESIS", "META");
            g.insert("day".into(), n(tip.day));
            items.push((
                Role::ChainHead,
                self.put(g, Some("attribute_not_exists(PK)"), &[], &[])?,
            ));
        }
        Ok(items)
    }
}
