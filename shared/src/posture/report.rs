//! The whole report: built from the registry, printed as a table or JSON.

use super::*;

impl PostureReport {
    pub fn build(input: &PostureInput) -> Self {
        let ctx = Ctx::new(input);
        let mut agents: Vec<AgentPosture> = input
            .agents
            .iter()
            .filter(|a| reported(a.status))
            .map(|a| ctx.assess(a))
            .collect();
        agents.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.name.cmp(&b.name)));

        let live_agents: Vec<&AgentPosture> = agents.iter().filter(|a| live(a.status)).collect();
        let mut by_level = LevelCounts::default();
        for a in &agents {
            *match a.level {
                RiskLevel::Low => &mut by_level.low,
                RiskLevel::Medium => &mut by_level.medium,
                RiskLevel::High => &mut by_level.high,
                RiskLevel::Critical => &mut by_level.critical,
            } += 1;
        }
        let checklist = item::ALL
            .iter()
            .map(|i| {
                let passed = live_agents.iter().filter(|a| a.passes(i)).count();
                PassRate {
                    item: (*i).into(),
                    passed,
                    total: live_agents.len(),
                    percent: percent(passed, live_agents.len()),
                }
            })
            .collect();

        let mut maturity = Maturity::AdHoc;
        let mut next_level = None;
        let mut next_level_missing = Vec::new();
        for level in &Maturity::ALL[1..] {
            let m = missing(*level, input, &live_agents);
            if !m.is_empty() {
                next_level = Some(*level);
                next_level_missing = m;
                break;
            }
            maturity = *level;
        }

        let active: Vec<&Agent> = input
            .agents
            .iter()
            .filter(|a| a.status == AgentStatus::Active)
            .collect();
        let mut bearer_only: Vec<AgentRef> = active
            .iter()
            .filter(|a| a.token_binding == TokenBinding::None)
            .map(|a| AgentRef {
                agent_id: a.id.clone(),
                name: a.name.clone(),
                environment: a.environment.clone(),
            })
            .collect();
        let bearer_only_agents = bearer_only.len();
        bearer_only.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| a.agent_id.cmp(&b.agent_id))
        });
        bearer_only.truncate(BEARER_ONLY_LISTED);

        let summary = Summary {
            agents: agents.len(),
            live_agents: live_agents.len(),
            unregistered_agents: agents
                .iter()
                .filter(|a| a.status == AgentStatus::Unregistered)
                .count(),
            active_agents: active.len(),
            key_bound_agents: active
                .iter()
                .filter(|a| a.credential_kind.key_bound() && !a.steward_holds_key())
                .count(),
            bound_token_agents: active.len() - bearer_only_agents,
            bearer_only_agents,
            bearer_only,
            by_level,
            checklist,
            maturity,
            next_level,
            next_level_missing,
        };
        Self {
            generated_at: input.now,
            agents,
            summary,
        }
    }

    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }

    /// An aligned plain-text table, then the checklist pass rates and the maturity level.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        if self.agents.is_empty() {
            out.push_str("no agents in the registry\n");
        } else {
            let header = [
                "NAME",
                "ENV",
                "OWNER",
                "STATUS",
                "SCORE",
                "LEVEL",
                "FAILED CHECKS",
            ];
            let rows: Vec<[String; 7]> = self
                .agents
                .iter()
                .map(|a| {
                    let failed = a.failed_checks();
                    [
                        a.name.clone(),
                        a.environment.clone(),
                        if a.owner.is_empty() {
                            "-".into()
                        } else {
                            a.owner.clone()
                        },
                        a.status.as_str().into(),
                        a.score.to_string(),
                        a.level.as_str().into(),
                        if failed.is_empty() {
                            "-".into()
                        } else {
                            failed.join(", ")
                        },
                    ]
                })
                .collect();
            let mut widths = header.map(|h| h.chars().count());
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: [&str; 7]| {
                let mut l = String::new();
                for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                    let pad = w.saturating_sub(cell.chars().count());
                    if i == 4 {
                        // SCORE: right-aligned
                        l.push_str(&" ".repeat(pad));
                        l.push_str(cell);
                    } else {
                        l.push_str(cell);
                        if i + 1 < cells.len() {
                            l.push_str(&" ".repeat(pad));
                        }
                    }
                    if i + 1 < cells.len() {
                        l.push_str("  ");
                    }
                }
                l.push('\n');
                l
            };
            out.push_str(&line(header));
            for row in &rows {
                out.push_str(&line(row.each_ref().map(String::as_str)));
            }
        }

        let s = &self.summary;
        out.push_str(&format!(
            "\nRisk: {} critical, {} high, {} medium, {} low\n",
            s.by_level.critical, s.by_level.high, s.by_level.medium, s.by_level.low
        ));
        out.push_str(&format!(
            "\nZero-trust checklist ({}):\n",
            plural(s.live_agents, "live agent", "live agents")
        ));
        let width = item::ALL.iter().map(|i| i.len()).max().unwrap_or(0);
        for r in &s.checklist {
            out.push_str(&format!(
                "  {:<width$}  {:>4}/{:<4} {:>4}%\n",
                r.item, r.passed, r.total, r.percent
            ));
        }
        out.push_str(&format!(
            "\nCredentials ({}): {} hold their own key (no shared secret), {} have bound tokens, {} bearer-only\n",
            plural(s.active_agents, "active agent", "active agents"),
            s.key_bound_agents,
            s.bound_token_agents,
            s.bearer_only_agents
        ));
        if s.bearer_only_agents > 0 {
            let mut names = s
                .bearer_only
                .iter()
                .map(|a| format!("{} ({})", a.name, a.environment))
                .collect::<Vec<_>>()
                .join(", ");
            if s.bearer_only_agents > s.bearer_only.len() {
                names.push_str(&format!(
                    ", and {} more",
                    s.bearer_only_agents - s.bearer_only.len()
                ));
            }
            out.push_str(&format!("  bearer-only: {names}\n"));
        }
        out.push_str(&format!(
            "\nMaturity: {} ({} of {}: {})\n",
            s.maturity.label(),
            s.maturity.rank(),
            Maturity::ALL.len(),
            Maturity::ALL.map(Maturity::label).join(" → ")
        ));
        if let Some(next) = s.next_level {
            out.push_str(&format!("To reach {}:\n", next.label()));
            for m in &s.next_level_missing {
                out.push_str(&format!("  - {m}\n"));
            }
        }
        out
    }
}
