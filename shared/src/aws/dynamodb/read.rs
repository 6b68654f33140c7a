//! Reads, by record family: instances and history, agents, approvals, timers, audit, cursors,
//! groups, scope usage, baselines, chat messages.

use super::*;

fn approval_from(item: &Item) -> Result<ApprovalRecord, StoreError> {
    let mut request: statemachines::ApprovalRequest = body(item, "request")?;
    // Votes and messages are appended to their own lists, so no write rewrites the request.
    for vote in json_list::<statemachines::Vote>(item, "votes")? {
        if !request.votes.contains(&vote) {
            request.votes.push(vote);
        }
    }
    let mut messages: Vec<PostedMessage> = Vec::new();
    for m in json_list::<PostedMessage>(item, "messages")? {
        if !messages
            .iter()
            .any(|k| k.channel == m.channel && k.ts == m.ts)
        {
            messages.push(m);
        }
    }
    Ok(ApprovalRecord {
        request,
        action_hash: text(item, "action_hash").unwrap_or_default().to_string(),
        outcome: match item.get("outcome") {
            Some(_) => Some(body::<ApprovalOutcome>(item, "outcome")?),
            None => None,
        },
        messages,
    })
}

fn json_list<T: DeserializeOwned>(item: &Item, attr: &str) -> Result<Vec<T>, StoreError> {
    let Some(Av::L(values)) = item.get(attr) else {
        return Ok(vec![]);
    };
    values
        .iter()
        .map(|v| {
            let text = v.as_s().map_err(|_| {
                StoreError::Corrupt(attr.to_string(), "list entry is not a string".into())
            })?;
            serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(attr.to_string(), e.to_string()))
        })
        .collect()
}

#[async_trait]
impl StoreRead for DynamoStore {
    async fn instance(&self, id: &str) -> Result<Option<Instance>, StoreError> {
        self.get(wf(id), "STATE")
            .await?
            .map(|i| body(&i, "body"))
            .transpose()
    }

    async fn history(&self, workflow_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.query(
            wf(workflow_id),
            Some(("begins_with(SK, :v)", "EV#".into())),
            None,
        )
        .await?
        .iter()
        .map(|i| body(i, "body"))
        .collect()
    }

    async fn instances_for_agent(&self, agent_id: &str) -> Result<Vec<Instance>, StoreError> {
        let links = self
            .query(
                format!("AGENT#{agent_id}"),
                Some(("begins_with(SK, :v)", "WF#".into())),
                None,
            )
            .await?;
        let mut out = Vec::with_capacity(links.len());
        for link in &links {
            if let Some(id) = text(link, "workflow_id")
                && let Some(i) = self.instance(id).await?
            {
                out.push(i);
            }
        }
        Ok(out)
    }

    async fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        self.get(format!("AGENT#{id}"), "META")
            .await?
            .map(|i| body(&i, "body"))
            .transpose()
    }

    async fn agent_by_name(&self, name: &str) -> Result<Option<Agent>, StoreError> {
        let ids = self.query(format!("AGENTNAME#{name}"), None, None).await?;
        let newest = ids
            .iter()
            .max_by_key(|i| text(i, "updated_at").unwrap_or_default().to_string())
            .and_then(|i| text(i, "agent_id"));
        match newest {
            Some(id) => self.agent(id).await,
            None => Ok(None),
        }
    }

    async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        // Through the registry index: agent records only, never the rest of the table (history,
        // audit, grant evidence).
        let mut agents: Vec<Agent> = Vec::new();
        for shard in 0..AGENT_INDEX_SHARDS {
            for i in self
                .index_query(REGISTRY_INDEX, "REGPK", format!("REG#{shard}"), None, None)
                .await?
            {
                agents.push(body(&i, "body")?);
            }
        }
        agents.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(agents)
    }

    async fn agents_owned_by(&self, owner: &str) -> Result<Vec<Agent>, StoreError> {
        let pk = format!("OWNER#{}", owner.trim().to_lowercase());
        let items = self
            .index_query(OWNER_INDEX, "OWNERPK", pk, None, None)
            .await?;
        items.iter().map(|i| body(i, "body")).collect()
    }

    async fn agents_with_credentials_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Agent>, StoreError> {
        let mut out: Vec<(i64, Agent)> = Vec::new();
        for shard in 0..AGENT_INDEX_SHARDS {
            let items = self
                .index_query(
                    CREDENTIAL_INDEX,
                    "CREDPK",
                    format!("CRED#{shard}"),
                    Some(("cred_issued <= :v", n(cutoff.timestamp_millis()))),
                    Some(limit),
                )
                .await?;
            for i in &items {
                let at = i
                    .get("cred_issued")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                out.push((at, body(i, "body")?));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        out.truncate(limit);
        Ok(out.into_iter().map(|(_, a)| a).collect())
    }

    async fn time_bound_agents(&self) -> Result<Vec<Agent>, StoreError> {
        let mut out: Vec<Agent> = Vec::new();
        for shard in 0..AGENT_INDEX_SHARDS {
            for i in self
                .index_query(
                    TIME_BOUND_INDEX,
                    "BOUNDPK",
                    format!("BOUND#{shard}"),
                    None,
                    None,
                )
                .await?
            {
                out.push(body(&i, "body")?);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn agents_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Agent>, StoreError> {
        let mut out: Vec<Agent> = Vec::new();
        for shard in 0..AGENT_INDEX_SHARDS {
            let after = after.map(|a| ("agent_id > :v", s(a)));
            for i in self
                .index_query(
                    REGISTRY_INDEX,
                    "REGPK",
                    format!("REG#{shard}"),
                    after,
                    Some(limit),
                )
                .await?
            {
                out.push(body(&i, "body")?);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.truncate(limit);
        Ok(out)
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        self.get(format!("APPROVAL#{id}"), "META")
            .await?
            .map(|i| approval_from(&i))
            .transpose()
    }

    async fn approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>, StoreError> {
        if pending_only {
            // The pending index holds only open approvals: no scan.
            let mut out = Vec::new();
            for shard in 0..AGENT_INDEX_SHARDS {
                for i in self
                    .index_query(
                        PENDING_INDEX,
                        "PENDINGPK",
                        format!("PENDING#{shard}"),
                        None,
                        None,
                    )
                    .await?
                {
                    out.push(approval_from(&i)?);
                }
            }
            out.sort_by(|a: &ApprovalRecord, b| {
                (a.request.requested_at, &a.request.id)
                    .cmp(&(b.request.requested_at, &b.request.id))
            });
            return Ok(out);
        }
        // Every approval ever (`?all=true`): a scan, for the rare look at the history.
        let mut values = HashMap::from([(":p".to_string(), s("APPROVAL#"))]);
        let filter = if pending_only {
            values.insert(":pending".into(), s("pending"));
            "begins_with(PK, :p) AND #st = :pending"
        } else {
            "begins_with(PK, :p)"
        };
        let names: &[(&str, &str)] = if pending_only {
            &[("#st", "status")]
        } else {
            &[]
        };
        let items = self.scan(filter, values, names).await?;
        let mut out: Vec<ApprovalRecord> =
            items.iter().map(approval_from).collect::<Result<_, _>>()?;
        out.sort_by(|a, b| {
            (a.request.requested_at, &a.request.id).cmp(&(b.request.requested_at, &b.request.id))
        });
        Ok(out)
    }

    async fn due_timers(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let mut out = Vec::new();
        for shard in 0..TIMER_SHARDS {
            out.extend(self.due_timers_in(shard, now, limit).await?);
        }
        out.sort_by(|a, b| {
            (a.due_at, &a.workflow_id, &a.name).cmp(&(b.due_at, &b.workflow_id, &b.name))
        });
        out.truncate(limit);
        Ok(out)
    }

    async fn grants(
        &self,
        client_id: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<GrantEvidence>, StoreError> {
        let mut out = Vec::new();
        let now = (self.clock)();
        // Hour partitions from `since` to now (and one ahead for a clock running fast).
        use chrono::DurationRound;
        // Nothing older than the retention is kept: never walk hours before it.
        let oldest = now - chrono::Duration::from_std(GRANT_RETENTION).unwrap_or_default();
        let since = since.max(oldest);
        let mut hour = since
            .duration_trunc(chrono::TimeDelta::hours(1))
            .unwrap_or(since);
        let floor = format!("{:015}#", since.timestamp_millis().max(0));
        while hour <= now + chrono::Duration::hours(1) && out.len() < limit {
            let pk = format!("GRANTS#{client_id}#{}", hour.format("%Y-%m-%dT%H"));
            for item in self
                .query(
                    pk,
                    Some(("SK >= :v", floor.clone())),
                    Some(limit - out.len()),
                )
                .await?
            {
                out.push(body::<GrantEvidence>(&item, "body")?);
            }
            hour += chrono::Duration::hours(1);
        }
        Ok(out)
    }

    async fn grants_per_hour(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Option<Vec<(DateTime<Utc>, u64, u64)>>, StoreError> {
        let items = self
            .query(
                GRANT_HOURS.into(),
                Some(("SK >= :v", grant_hour(since))),
                None,
            )
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let hour = text(item, "SK").unwrap_or_default();
            let at = chrono::NaiveDateTime::parse_from_str(&format!("{hour}:00"), "%Y-%m-%dT%H:%M")
                .map_err(|e| StoreError::Corrupt(format!("grant hour {hour}"), e.to_string()))?
                .and_utc();
            out.push((
                at,
                number(item, "granted").unwrap_or(0),
                number(item, "refused").unwrap_or(0),
            ));
        }
        Ok(Some(out))
    }

    fn timer_partitions(&self) -> u32 {
        TIMER_SHARDS
    }

    async fn due_timers_in(
        &self,
        shard: u32,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Timer>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        while out.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("GSI1PK = :p AND due <= :now")
                .expression_attribute_values(":p", s(format!("TIMERS#{shard}")))
                .expression_attribute_values(":now", n(now.timestamp_millis()))
                .limit((limit - out.len()).clamp(1, 1000) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            for item in page.items.unwrap_or_default() {
                let (Some(wid), Some(name), Some(due)) = (
                    text(&item, "workflow_id"),
                    text(&item, "name"),
                    item.get("due")
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    continue;
                };
                out.push(Timer {
                    workflow_id: wid.to_string(),
                    name: name.to_string(),
                    due_at: Utc
                        .timestamp_millis_opt(due)
                        .single()
                        .unwrap_or(DateTime::<Utc>::MIN_UTC),
                });
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn audit_tips(&self) -> Result<AuditTips, StoreError> {
        self.checkpoint().await?;
        Ok(match self.latest_checkpoint().await? {
            Some(cp) => AuditTips {
                through: cp.first + cp.count - 1,
                chains: cp
                    .tips
                    .iter()
                    .enumerate()
                    .filter(|(_, (n, _))| *n > 0)
                    .map(|(shard, (_, hash))| (shard as u32, hash.clone()))
                    .collect(),
            },
            None => AuditTips::default(),
        })
    }

    async fn audit(&self, after_seq: u64, limit: usize) -> Result<Vec<ChainedAudit>, StoreError> {
        // Seal what was appended since the last checkpoint, so the reader sees it all.
        self.checkpoint().await?;
        self.sealed_audit(after_seq, limit).await
    }

    async fn workflow_audit(
        &self,
        workflow_id: &str,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.workflow_records(workflow_id, limit).await
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(format!("CURSOR#{name}"), "META")
            .await?
            .and_then(|i| text(&i, "value").map(str::to_string)))
    }

    async fn instances_in_group(&self, group: &str) -> Result<Vec<Instance>, StoreError> {
        let links = self
            .query(
                format!("GROUP#{group}"),
                Some(("begins_with(SK, :v)", "WF#".into())),
                None,
            )
            .await?;
        let ids: Vec<&str> = links
            .iter()
            .filter_map(|l| text(l, "workflow_id"))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let keys = chunk.iter().map(|id| key(wf(id), "STATE")).collect();
            for item in self.get_many(keys).await? {
                out.push(body::<Instance>(&item, "body")?);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn scope_usage(
        &self,
        client_id: &str,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let items = self.query(format!("USAGE#{client_id}"), None, None).await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let scope = text(i, "SK")?.to_string();
                let ms: i64 = match i.get("last_used") {
                    Some(Av::N(v)) => v.parse().ok()?,
                    _ => return None,
                };
                Some((scope, Utc.timestamp_millis_opt(ms).single()?))
            })
            .collect())
    }

    async fn agent_by_client(&self, client_id: &str) -> Result<Option<Agent>, StoreError> {
        let id = self
            .get(format!("AGENTCLIENT#{client_id}"), "META")
            .await?
            .and_then(|i| text(&i, "agent_id").map(str::to_string));
        match id {
            Some(id) => self.agent(&id).await,
            None => Ok(None),
        }
    }

    async fn baseline(&self, agent_id: &str) -> Result<Option<Baseline>, StoreError> {
        self.get(format!("BASELINE#{agent_id}"), "META")
            .await?
            .map(|i| body(&i, "body"))
            .transpose()
    }

    async fn messages(&self, subject: &str) -> Result<Vec<PostedMessage>, StoreError> {
        self.query(format!("MSG#{subject}"), None, None)
            .await?
            .iter()
            .map(|i| body(i, "body"))
            .collect()
    }
}
