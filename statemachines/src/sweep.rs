//! The rotation sweep's plan: which agents' secrets are past the policy's age, and when each
//! rotation starts. Pure: the engine loads the registry, calls [`plan`], and starts the
//! rotations it returns (each a workflow whose id derives from the secret version, so a second
//! sweep before the rotation ends starts nothing new).

use crate::agent::{Agent, AgentStatus};
use crate::policy::Policy;
use chrono::{DateTime, Duration, Utc};

/// One rotation the sweep starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub agent_id: String,
    pub age_days: i64,
    pub max_age_days: u32,
    /// When the rotation starts.
    pub start_at: DateTime<Utc>,
}

/// Finds the active agents whose secret is at least its environment's maximum age, oldest
/// first, and spreads their starts over the policy's window: evenly, with a jitter inside each
/// slot (stable per agent and day, so a re-run plans the same times), and never more than
/// `rotation_starts_per_minute` (the IdP's rate limit wins over the window).
pub fn plan(agents: &[Agent], now: DateTime<Utc>, policy: &Policy) -> Vec<Planned> {
    let mut due: Vec<(i64, &Agent, u32)> = agents
        .iter()
        // Only what the vault holds rotates here (a secret, or a key Steward generated): an
        // agent's own key or certificate is its own (it rotates by adding a key or a CSR).
        .filter(|a| {
            a.status == AgentStatus::Active && a.client_id.is_some() && a.vaulted_credential()
        })
        .filter_map(|a| {
            let issued = a.credential_issued_at?;
            let max = policy.rotation_max_age_days(&a.environment);
            let age = (now - issued).num_days();
            (age >= i64::from(max)).then_some((age, a, max))
        })
        .collect();
    // Oldest first; ties by id so the plan is deterministic.
    due.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let n = due.len() as i64;
    if n == 0 {
        return vec![];
    }
    let lifecycle = &policy.lifecycle;
    let window_ms = (lifecycle.rotation_window_secs as i64).saturating_mul(1000);
    let min_spacing_ms = 60_000 / i64::from(lifecycle.rotation_starts_per_minute.max(1));
    let spacing_ms = (window_ms / n).max(min_spacing_ms);
    let day = now.date_naive().to_string();
    due.into_iter()
        .enumerate()
        .map(|(i, (age, agent, max))| {
            // Jitter stays within the slack of the slot, so two starts are never closer than
            // the rate limit allows.
            let slack = spacing_ms - min_spacing_ms;
            let jitter = if slack > 0 {
                (jitter_seed(&agent.id, &day) % (slack as u64 + 1)) as i64
            } else {
                0
            };
            Planned {
                agent_id: agent.id.clone(),
                age_days: age,
                max_age_days: max,
                start_at: now + Duration::milliseconds(i as i64 * spacing_ms + jitter),
            }
        })
        .collect()
}

fn jitter_seed(agent_id: &str, day: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in agent_id.bytes().chain([0]).chain(day.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
