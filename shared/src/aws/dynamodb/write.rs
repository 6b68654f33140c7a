//! Writes outside a step: timers removed, audit appended, approval messages, inbound dedupe,
//! scope usage, chat messages, baselines, cursors.

use super::*;

#[async_trait]
impl StoreWrite for DynamoStore {
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let items = self.step_items(&commit)?;
        let id = commit.instance.id.clone();
        let expected = commit.expected_version;
        self.transact(
            &format!("step {} of workflow {id}", commit.history.seq),
            &id,
            items,
            &commit.audit,
            || StoreError::Conflict {
                id: id.clone(),
                expected,
            },
        )
        .await
    }

    async fn remove_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(
                wf(&timer.workflow_id),
                format!("TIMER#{}", timer.name),
            )))
            .condition_expression("due = :due")
            .expression_attribute_values(":due", n(timer.due_at.timestamp_millis()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let service = e.into_service_error();
                if service.is_conditional_check_failed_exception() {
                    Ok(()) // re-armed (or already gone): leave it
                } else {
                    Err(StoreError::Backend(describe(&service)))
                }
            }
        }
    }

    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        // Records appended outside a step (intake, refusals) spread over the shards, a chunk
        // at a time: each record takes two items (itself and its id marker) beside the shard's
        // tip, within a transaction's 100. A retry after a chunk failed skips the records its
        // markers show were appended.
        for chunk in records.chunks(AUDIT_APPEND_CHUNK) {
            self.transact("audit append", &chunk[0].id, vec![], chunk, || {
                StoreError::Backend("audit append conflicted".into())
            })
            .await?;
        }
        Ok(())
    }

    async fn add_approval_message(
        &self,
        id: &str,
        message: PostedMessage,
    ) -> Result<(), StoreError> {
        // A repeat appends the same entry again; reads keep one per channel and ts.
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("APPROVAL#{id}"), "META")))
            .update_expression("SET messages = list_append(if_not_exists(messages, :none), :m)")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":none", Av::L(vec![]))
            .expression_attribute_values(":m", Av::L(vec![json(&message)?]))
            .send()
            .await
            .map_err(|e| {
                let service = e.into_service_error();
                if service.is_conditional_check_failed_exception() {
                    StoreError::Corrupt(id.to_string(), "approval posted does not exist".into())
                } else {
                    StoreError::Backend(describe(&service))
                }
            })?;
        Ok(())
    }

    async fn remember_inbound(
        &self,
        source: &str,
        id: &str,
        keep: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let mut item = key(format!("SEEN#{source}#{id}"), "META");
        let expires = Utc::now().timestamp() + keep.as_secs() as i64;
        item.insert(TTL_ATTRIBUTE.into(), n(expires));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // An expired row that DynamoDB has not deleted yet does not count.
            .condition_expression("attribute_not_exists(PK) OR #exp < :now")
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(Utc::now().timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => {
                let service = e.into_service_error();
                if service.is_conditional_check_failed_exception() {
                    Ok(false)
                } else {
                    Err(StoreError::Backend(describe(&service)))
                }
            }
        }
    }

    async fn record_scope_usage(
        &self,
        client_id: &str,
        scopes: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for scope in scopes {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(format!("USAGE#{client_id}"), scope.as_str())))
                .update_expression("SET last_used = :t")
                // Keep the latest: an older grant read late changes nothing.
                .condition_expression("attribute_not_exists(last_used) OR last_used < :t")
                .expression_attribute_values(":t", n(at.timestamp_millis()))
                .send()
                .await;
            if let Err(e) = result {
                let service = e.into_service_error();
                if !service.is_conditional_check_failed_exception() {
                    return Err(StoreError::Backend(describe(&service)));
                }
            }
        }
        Ok(())
    }

    async fn record_grants(&self, grants: &[GrantEvidence]) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        // One partition per client and hour: a busy agent's grants spread over the hours, and
        // the dashboard's last 24 hours are at most 24 queries.
        let mut requests = Vec::with_capacity(grants.len());
        let mut seen = std::collections::HashSet::new();
        for g in grants {
            let (pk, sk) = grant_key(g);
            if !seen.insert((pk.clone(), sk.clone())) {
                continue; // one batch may not write an item twice
            }
            let mut item = key(pk, sk);
            item.insert("body".into(), json(g)?);
            let expires = g.at.timestamp() + GRANT_RETENTION.as_secs() as i64;
            item.insert(TTL_ATTRIBUTE.into(), n(expires));
            requests.push(
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .map_err(build_err)?,
                    )
                    .build(),
            );
        }
        for chunk in requests.chunks(25) {
            let mut pending = Some(chunk.to_vec());
            let mut attempt = 0u32;
            while let Some(batch) = pending.take().filter(|b| !b.is_empty()) {
                if attempt > 0 {
                    let ms = 20u64 << attempt.min(6);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                attempt += 1;
                if attempt > 10 {
                    return Err(StoreError::Backend(
                        "grant evidence: DynamoDB kept items unprocessed".into(),
                    ));
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, batch)
                    .send()
                    .await
                    .map_err(backend)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table));
            }
        }
        // The overview's grants per hour: one counter item per hour, added to once per batch.
        // A batch delivered twice (an intake retried after its write) is counted twice; the
        // evidence itself is kept once.
        let mut hours: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        let mut counted = std::collections::HashSet::new();
        for g in grants.iter().filter(|g| counted.insert(grant_key(g))) {
            let hour = hours.entry(grant_hour(g.at)).or_default();
            if g.success {
                hour.0 += 1;
            } else {
                hour.1 += 1;
            }
        }
        for (hour, (granted, refused)) in hours {
            let expires = (self.clock)().timestamp() + GRANT_RETENTION.as_secs() as i64;
            self.client
                .update_item()
                .table_name(&self.table)
                .key("PK", s(GRANT_HOURS))
                .key("SK", s(hour))
                .update_expression("ADD granted :g, refused :r SET #ttl = :e")
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":g", n(granted))
                .expression_attribute_values(":r", n(refused))
                .expression_attribute_values(":e", n(expires))
                .send()
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn put_message(&self, subject: &str, message: PostedMessage) -> Result<(), StoreError> {
        let mut item = key(format!("MSG#{subject}"), message.route.as_str());
        item.insert("body".into(), json(&message)?);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn put_baseline(&self, agent_id: &str, baseline: &Baseline) -> Result<(), StoreError> {
        let mut item = key(format!("BASELINE#{agent_id}"), "META");
        item.insert("body".into(), json(baseline)?);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn seal_audit(&self) -> Result<(), StoreError> {
        self.checkpoint().await.map(|_| ())
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let mut item = key(format!("CURSOR#{name}"), "META");
        item.insert("value".into(), Av::S(value.to_string()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}
