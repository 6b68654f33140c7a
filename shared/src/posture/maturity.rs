//! What each maturity level still misses, said as the agents and shares to fix.

use super::*;

/// Names of `agents` for a message: the first few, then "…".
pub(super) fn names(agents: &[&AgentPosture]) -> String {
    let mut s = agents
        .iter()
        .take(NAMES_SHOWN)
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if agents.len() > NAMES_SHOWN {
        s.push_str(", …");
    }
    s
}

/// What `level` still misses (empty: reached), given the levels below it are reached.
pub(super) fn missing(
    level: Maturity,
    input: &PostureInput,
    live: &[&AgentPosture],
) -> Vec<String> {
    let policy = input.policy;
    let unregistered = live
        .iter()
        .filter(|a| a.status == AgentStatus::Unregistered)
        .count();
    let mut out = Vec::new();
    match level {
        Maturity::AdHoc => {}
        Maturity::Discovery => {
            let discovered = input.discovery_ran || (policy.discovery.enabled && unregistered == 0);
            if !discovered {
                out.push(
                    "run shadow-agent discovery: no sweep has listed the identity provider's clients yet"
                        .into(),
                );
                if !policy.discovery.enabled {
                    out.push("enable discovery in the policy (`[discovery] enabled`)".into());
                }
            }
        }
        Maturity::Governance => {
            let failing: Vec<&AgentPosture> = live
                .iter()
                .copied()
                .filter(|a| !item::GOVERNANCE.iter().all(|i| a.passes(i)))
                .collect();
            let passed = live.len() - failing.len();
            if !share_met(passed, live.len(), GOVERNANCE_PERCENT) {
                let per_item = item::GOVERNANCE
                    .iter()
                    .map(|i| (i, failing.iter().filter(|a| !a.passes(i)).count()))
                    .filter(|(_, n)| *n > 0)
                    .map(|(i, n)| format!("{i} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                out.push(format!(
                    "{}% of live agents need an owner, a dedicated client, rotation within {ROTATION_CHECK_DAYS} days and tokens of at most {}: {passed} of {} do ({}%); failing: {per_item} ({})",
                    GOVERNANCE_PERCENT,
                    minutes(TOKEN_LIFETIME_CEILING_SECS),
                    live.len(),
                    percent(passed, live.len()),
                    names(&failing)
                ));
            }
        }
        Maturity::Detection => {
            if !policy.detection.enabled {
                out.push("enable anomaly detection in the policy (`[detection] enabled`)".into());
            } else if policy.detection.rules.is_empty() {
                out.push("add at least one anomaly detection rule to the policy".into());
            }
            if !input.audit_streaming {
                out.push("stream the audit trail out of Steward (e.g. to a SIEM)".into());
            }
        }
        Maturity::FullGovernance => {
            let failing: Vec<&AgentPosture> = live
                .iter()
                .copied()
                .filter(|a| a.checklist.iter().any(|c| !c.ok))
                .collect();
            let passed = live.len() - failing.len();
            if !share_met(passed, live.len(), FULL_GOVERNANCE_PERCENT) {
                let per_item = item::ALL
                    .iter()
                    .map(|i| (i, failing.iter().filter(|a| !a.passes(i)).count()))
                    .filter(|(_, n)| *n > 0)
                    .map(|(i, n)| format!("{i} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                out.push(format!(
                    "{}% of live agents must pass every checklist item: {passed} of {} do ({}%); failing: {per_item}; not yet: {}",
                    FULL_GOVERNANCE_PERCENT,
                    live.len(),
                    percent(passed, live.len()),
                    names(&failing)
                ));
            }
            if unregistered > 0 {
                out.push(format!(
                    "claim or release {}",
                    plural(unregistered, "unregistered agent", "unregistered agents")
                ));
            }
        }
    }
    out
}
