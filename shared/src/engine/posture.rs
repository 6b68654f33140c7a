//! The organisation's posture summary (maturity level, what the next level needs, risk counts,
//! credential ages, findings per day),
//! built from the whole registry in the background after each sweep and kept under
//! [`POSTURE_CURSOR`], so the dashboard's overview reads one row instead of the registry.

use super::{Engine, EngineError};
use crate::posture::{PostureInput, PostureReport, Summary};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use statemachines::{AgentFlag, AgentStatus};
use std::collections::BTreeMap;

pub const POSTURE_CURSOR: &str = "posture:summary";

/// Days of findings the summary counts.
pub const FINDING_DAYS: i64 = 14;

/// A posture summary and when it was built.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedPosture {
    pub generated_at: DateTime<Utc>,
    pub summary: Summary,
    /// Detection findings per day (UTC) and severity over the last [`FINDING_DAYS`] days, from
    /// the agents' records: (day, severity, count), oldest first.
    #[serde(default)]
    pub findings: Vec<(NaiveDate, String, u64)>,
    /// Active credentials by age: four quarters of the policy's maximum age, then older.
    #[serde(default)]
    pub credential_ages: [u64; 5],
    /// The policy's maximum credential age the quarters divide, in days.
    #[serde(default)]
    pub max_age_days: u32,
    /// Agents by status (`AgentStatus::as_str`): the overview's counts where the store keeps no
    /// status index.
    #[serde(default)]
    pub statuses: BTreeMap<String, u64>,
}

impl Engine {
    /// Builds the posture report over the registry and keeps its summary. Audit streaming is
    /// not known here and counts as off (`steward report --audit-stream` says otherwise).
    pub async fn record_posture(&self) -> Result<RecordedPosture, EngineError> {
        let agents = self.store.agents().await?;
        let discovery_ran = self
            .store
            .cursor(super::discovery::LAST_SWEEP_CURSOR)
            .await?
            .is_some();
        let now = self.clock.now();
        let report = PostureReport::build(&PostureInput {
            agents: &agents,
            policy: &self.policy,
            now,
            audit_streaming: false,
            discovery_ran,
        });
        let since = now - chrono::Duration::days(FINDING_DAYS);
        let mut findings: BTreeMap<(NaiveDate, String), u64> = BTreeMap::new();
        for a in &agents {
            for f in &a.flags {
                if let AgentFlag::Anomaly { severity, at, .. } = f
                    && *at >= since
                {
                    *findings
                        .entry((at.date_naive(), severity.as_str().to_string()))
                        .or_insert(0) += 1;
                }
            }
        }
        let max_age_days = self.policy.rotation_max_age_days.max(1);
        let mut credential_ages = [0u64; 5];
        for a in agents.iter().filter(|a| a.status == AgentStatus::Active) {
            if let Some(issued) = a.credential_issued_at {
                let days = (now - issued).num_days().max(0);
                let quarter = (days * 4 / i64::from(max_age_days)).min(4);
                credential_ages[quarter as usize] += 1;
            }
        }
        let mut statuses = BTreeMap::new();
        for a in &agents {
            *statuses.entry(a.status.as_str().to_string()).or_insert(0) += 1;
        }
        let recorded = RecordedPosture {
            statuses,
            generated_at: now,
            summary: report.summary,
            findings: findings.into_iter().map(|((d, s), n)| (d, s, n)).collect(),
            credential_ages,
            max_age_days,
        };
        let text = serde_json::to_string(&recorded).map_err(|e| {
            crate::ports::store::StoreError::Backend(format!("encoding the posture summary: {e}"))
        })?;
        self.store.set_cursor(POSTURE_CURSOR, &text).await?;
        Ok(recorded)
    }

    /// The summary the last [`Engine::record_posture`] kept, if any.
    pub async fn recorded_posture(&self) -> Result<Option<RecordedPosture>, EngineError> {
        Ok(self
            .store
            .cursor(POSTURE_CURSOR)
            .await?
            .and_then(|t| serde_json::from_str(&t).ok()))
    }
}
