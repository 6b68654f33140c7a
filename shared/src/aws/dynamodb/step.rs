//! One step as one `TransactWriteItems`: the items of each record family (instance, history,
//! timers, registry, approvals, audit), conditional on the instance version, and the retry when the
//! audit chain moved.

use super::*;

/// `PK/SK` of the item a transaction item writes or checks.
fn item_key(item: &TransactWriteItem) -> String {
    let k = item
        .put()
        .map(|p| p.item())
        .or_else(|| item.update().map(|u| u.key()))
        .or_else(|| item.delete().map(|d| d.key()))
        .or_else(|| item.condition_check().map(|c| c.key()));
    let part = |name: &str| {
        k.and_then(|k| k.get(name))
            .and_then(|v| v.as_s().ok())
            .map_or("?", String::as_str)
            .to_string()
    };
    format!("{}/{}", part("PK"), part("SK"))
}

impl DynamoStore {
    pub(super) fn put(
        &self,
        item: Item,
        condition: Option<&str>,
        names: &[(&str, &str)],
        values: &[(&str, Av)],
    ) -> Result<TransactWriteItem, StoreError> {
        let mut p = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string));
        for (k, v) in names {
            p = p.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            p = p.expression_attribute_values(*k, v.clone());
        }
        Ok(TransactWriteItem::builder()
            .put(p.build().map_err(build_err)?)
            .build())
    }

    pub(super) fn delete(&self, pk: String, sk: String) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk, sk)))
                    .build()
                    .map_err(build_err)?,
            )
            .build())
    }

    /// The items of one step, each with its role (to read a cancellation).
    pub(super) fn step_items(
        &self,
        c: &Commit,
    ) -> Result<Vec<(Role, TransactWriteItem)>, StoreError> {
        let i = &c.instance;
        let mut items = Vec::new();
        let mut state = key(wf(&i.id), "STATE");
        state.insert("version".into(), n(i.version));
        state.insert("body".into(), json(i)?);
        items.push((
            Role::Instance,
            if c.expected_version == 0 {
                self.put(state, Some("attribute_not_exists(PK)"), &[], &[])?
            } else {
                self.put(
                    state,
                    Some("version = :expected"),
                    &[],
                    &[(":expected", n(c.expected_version))],
                )?
            },
        ));
        let mut history = key(wf(&i.id), format!("EV#{:020}", c.history.seq));
        history.insert("body".into(), json(&c.history)?);
        items.push((
            Role::History,
            self.put(history, Some("attribute_not_exists(PK)"), &[], &[])?,
        ));
        if c.expected_version == 0
            && let Some(agent) = &i.agent_id
        {
            let mut link = key(
                format!("AGENT#{agent}"),
                format!(
                    "WF#{}#{}",
                    i.created_at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                    i.id
                ),
            );
            link.insert("workflow_id".into(), s(&i.id));
            items.push((Role::Other, self.put(link, None, &[], &[])?));
        }
        if c.expected_version == 0
            && let Some(group) = &i.group
        {
            let mut link = key(format!("GROUP#{group}"), format!("WF#{}", i.id));
            link.insert("workflow_id".into(), s(&i.id));
            items.push((Role::Other, self.put(link, None, &[], &[])?));
        }
        // One change per item: the last change to a timer (or agent) in a step wins.
        let mut timers: Vec<(&str, &str, &TimerChange)> = Vec::new();
        for t in &c.timers {
            let (wid, name) = match t {
                TimerChange::Set(t) => (t.workflow_id.as_str(), t.name.as_str()),
                TimerChange::Cancel { workflow_id, name } => (workflow_id.as_str(), name.as_str()),
            };
            timers.retain(|(w, nm, _)| !(*w == wid && *nm == name));
            timers.push((wid, name, t));
        }
        for (wid, name, change) in timers {
            let item = match change {
                TimerChange::Set(t) => {
                    let mut item = key(wf(wid), format!("TIMER#{name}"));
                    item.insert("GSI1PK".into(), s(timer_shard(wid)));
                    item.insert("due".into(), n(t.due_at.timestamp_millis()));
                    item.insert("workflow_id".into(), s(wid));
                    item.insert("name".into(), s(name));
                    self.put(item, None, &[], &[])?
                }
                TimerChange::Cancel { .. } => self.delete(wf(wid), format!("TIMER#{name}"))?,
            };
            items.push((Role::Other, item));
        }
        let mut agents: Vec<&Agent> = Vec::new();
        for a in &c.agents {
            agents.retain(|x| x.id != a.id);
            agents.push(a);
        }
        for a in agents {
            let mut item = key(format!("AGENT#{}", a.id), "META");
            item.insert("name".into(), s(&a.name));
            item.insert("updated_at".into(), s(a.updated_at.to_rfc3339()));
            item.insert("body".into(), json(a)?);
            agent_index_attributes(a, &mut item);
            // Changed field by field: only if still as the step read it (records written before
            // `updated_at` was an attribute pass).
            match c.agent_reads.iter().find(|r| r.id == a.id) {
                Some(read) => items.push((
                    Role::AgentRead,
                    self.put(
                        item,
                        Some("attribute_not_exists(updated_at) OR updated_at = :read"),
                        &[],
                        &[(":read", s(read.updated_at.to_rfc3339()))],
                    )?,
                )),
                None => items.push((Role::Other, self.put(item, None, &[], &[])?)),
            }
            let mut by_name = key(format!("AGENTNAME#{}", a.name), a.id.clone());
            by_name.insert("agent_id".into(), s(&a.id));
            by_name.insert("updated_at".into(), s(a.updated_at.to_rfc3339()));
            items.push((Role::Other, self.put(by_name, None, &[], &[])?));
            if let Some(client_id) = &a.client_id {
                let mut by_client = key(format!("AGENTCLIENT#{client_id}"), "META");
                by_client.insert("agent_id".into(), s(&a.id));
                items.push((Role::Other, self.put(by_client, None, &[], &[])?));
            }
        }
        for change in &c.approvals {
            match change {
                ApprovalChange::Open(r) => {
                    let mut item = key(format!("APPROVAL#{}", r.request.id), "META");
                    item.insert("request".into(), json(&r.request)?);
                    item.insert("action_hash".into(), s(&r.action_hash));
                    item.insert("status".into(), s(r.status()));
                    if let Some(o) = &r.outcome {
                        item.insert("outcome".into(), json(o)?);
                    }
                    if r.outcome.is_none() {
                        // In the pending index while it waits (removed when it closes).
                        let shard = agent_shard(&r.request.id);
                        item.insert("PENDINGPK".into(), s(format!("PENDING#{shard}")));
                        item.insert("agent_id".into(), s(&r.request.id));
                    }
                    items.push((Role::Other, self.put(item, None, &[], &[])?));
                }
                ApprovalChange::Close { id, outcome } => {
                    let status = status_of(Some(outcome));
                    let update = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(format!("APPROVAL#{id}"), "META")))
                        .update_expression("SET outcome = :o, #st = :s REMOVE PENDINGPK")
                        .condition_expression("attribute_exists(PK)")
                        .expression_attribute_names("#st", "status")
                        .expression_attribute_values(":o", json(outcome)?)
                        .expression_attribute_values(":s", s(status))
                        .build()
                        .map_err(build_err)?;
                    items.push((
                        Role::CloseApproval,
                        TransactWriteItem::builder().update(update).build(),
                    ));
                }
                ApprovalChange::Vote { id, vote } => {
                    let update = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(format!("APPROVAL#{id}"), "META")))
                        .update_expression(
                            "SET votes = list_append(if_not_exists(votes, :none), :v)",
                        )
                        .condition_expression("attribute_exists(PK)")
                        .expression_attribute_values(":none", Av::L(vec![]))
                        .expression_attribute_values(":v", Av::L(vec![json(vote)?]))
                        .build()
                        .map_err(build_err)?;
                    items.push((
                        Role::CloseApproval,
                        TransactWriteItem::builder().update(update).build(),
                    ));
                }
            }
        }
        Ok(items)
    }

    /// Writes `items` (plus the extension of `chain_key`'s audit chain for `audit`) in one
    /// transaction, re-reading the chain tip when another writer extended it first.
    pub(super) async fn transact(
        &self,
        what: &str,
        chain_key: &str,
        items: Vec<(Role, TransactWriteItem)>,
        audit: &[AuditRecord],
        conflict: impl Fn() -> StoreError,
    ) -> Result<(), StoreError> {
        let mut audit: Vec<AuditRecord> = audit.to_vec();
        // The chain's tip as the last cancelled attempt returned it, if it did.
        let mut known_tip = None;
        for attempt in 0..CHAIN_RETRIES {
            if attempt > 0 {
                let ms = 10u64 << attempt.min(5);
                let jitter = rand::random::<u64>() % ms;
                tokio::time::sleep(std::time::Duration::from_millis(ms / 2 + jitter)).await;
            }
            if items.is_empty() && audit.is_empty() {
                return Ok(()); // every record was stored before
            }
            let mut all = items.clone();
            if !audit.is_empty() {
                let tip = match known_tip.take() {
                    Some(tip) => tip,
                    None => self.chain_tip(chain_key).await?,
                };
                all.extend(self.chain_items(&tip, &audit)?);
            }
            if all.len() > MAX_TRANSACTION_ITEMS {
                return Err(StoreError::Backend(format!(
                    "{what} writes {} items; a DynamoDB transaction holds at most {MAX_TRANSACTION_ITEMS}",
                    all.len()
                )));
            }
            let roles: Vec<Role> = all.iter().map(|(r, _)| *r).collect();
            // An X-Ray subsegment on AWS: the store call of a step.
            let span = tracing::info_span!(target: "steward::remote", "dynamodb.transact_write_items", error = tracing::field::Empty);
            let keys: Vec<String> = all.iter().map(|(_, i)| item_key(i)).collect();
            let result = tracing::Instrument::instrument(
                self.client
                    .transact_write_items()
                    .set_transact_items(Some(all.into_iter().map(|(_, i)| i).collect()))
                    .send(),
                span.clone(),
            )
            .await;
            if result.is_err() {
                span.record("error", true);
            }
            drop(span);
            let err = match result {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let service = err.into_service_error();
            let TransactWriteItemsError::TransactionCanceledException(cancelled) = &service else {
                return Err(StoreError::Backend(describe(&service)));
            };
            let reasons = cancelled.cancellation_reasons();
            let failed: Vec<(Role, &str)> = reasons
                .iter()
                .zip(&roles)
                .filter_map(|(r, role)| r.code().filter(|c| *c != "None").map(|c| (*role, c)))
                .collect();
            self.contended(
                reasons
                    .iter()
                    .zip(&keys)
                    .filter(|(r, _)| {
                        matches!(
                            r.code(),
                            Some("ConditionalCheckFailed" | "TransactionConflict")
                        )
                    })
                    .map(|(_, k)| k.clone()),
            );
            let condition = |role: Role| {
                failed
                    .iter()
                    .any(|(r, c)| *r == role && *c == "ConditionalCheckFailed")
            };
            if condition(Role::Instance) || condition(Role::History) {
                return Err(conflict());
            }
            if condition(Role::AgentRead) {
                return Err(StoreError::AgentChanged(format!("an agent {what} changes")));
            }
            let stored: Vec<usize> = failed
                .iter()
                .filter_map(|(r, c)| match r {
                    Role::AuditId(i) if *c == "ConditionalCheckFailed" => Some(*i),
                    _ => None,
                })
                .collect();
            if !stored.is_empty() {
                // Those records are in the trail already: leave them out and write the rest.
                let mut i = 0;
                audit.retain(|_| {
                    let keep = !stored.contains(&i);
                    i += 1;
                    keep
                });
                continue;
            }
            if condition(Role::CloseApproval) {
                return Err(StoreError::Corrupt(
                    what.to_string(),
                    "it closes an approval that was never opened".into(),
                ));
            }
            if condition(Role::ChainTip) {
                known_tip = reasons
                    .iter()
                    .zip(&roles)
                    .find(|(r, role)| {
                        **role == Role::ChainTip && r.code() == Some("ConditionalCheckFailed")
                    })
                    .and_then(|(r, _)| r.item())
                    .filter(|head| head.contains_key("n"))
                    .map(|head| Self::tip_from(chain_key, head));
            }
            let retry = condition(Role::ChainHead)
                || condition(Role::ChainTip)
                || failed.iter().any(|(_, c)| *c == "TransactionConflict");
            if !retry {
                return Err(StoreError::Backend(format!(
                    "{what} was cancelled: {}",
                    failed
                        .iter()
                        .map(|(r, c)| format!("{r:?} {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Err(StoreError::Backend(format!(
            "{what}: the audit chain kept moving; gave up after {CHAIN_RETRIES} attempts"
        )))
    }
}
