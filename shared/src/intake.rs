//! Where every intake path hands over what an identity provider or a Shared Signals transmitter
//! said: Okta event hooks, the polled System Log, Okta Log Streaming through EventBridge and SSF
//! pushes all end in [`accept`], so one mapping decides what each event means.

use crate::Engine;
use crate::audit;
use crate::engine::EngineError;
use crate::engine::detection::Baselines;
use crate::ports::store::{GrantEvidence, IntakeWrites};
use crate::signal::{AppChange, Signal};
use chrono::{DateTime, Utc};
use statemachines::detection::TokenRequest;
use std::time::Duration;

/// Deliveries are at least once (Okta retries a hook once; the System Log and EventBridge may
/// repeat after a crash): an event seen within this window is not applied again.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// One event as received, already mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Where it came from: `okta`, `ssf`.
    pub source: &'static str,
    /// The event's own id (Okta's `uuid`, a SET's `jti`): the dedupe key.
    pub event_id: String,
    /// The event's type in the source's terms (Okta `eventType`, a SET event URI).
    pub event_type: String,
    /// Who or what it is about, for the audit line.
    pub subject: String,
    pub published: Option<DateTime<Utc>>,
    /// `None`: a type Steward records but does not act on.
    pub signal: Option<Signal>,
}

/// What [`accept`] did with a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Events seen for the first time.
    pub new: usize,
    /// Repeats of events already accepted.
    pub repeated: usize,
}

/// Records and applies each event once. Token grants (the bulk: every token an agent gets) are
/// kept as grant evidence, off the audit chain; every other event is an audit record. Both are
/// keyed by the event id and stored once, so a redelivery, or a retry after a crash half-way,
/// is recorded once; the event is remembered as seen only after it was applied, and applying
/// is idempotent, so a crash in between loses nothing and doubles nothing. What a grant leads
/// to (a finding, a freeze) is audited by the workflow it starts.
///
/// What each signal does:
/// - a person lost → owner-loss handling for every live agent they own;
/// - a token grant (granted or refused) → the scope use reviews show, and anomaly detection
///   against the agent's baseline and rules;
/// - a risk signal about a client or agent → a finding with the policy's severity;
/// - a service app created outside Steward → a shadow agent (discovery);
/// - every other event → recorded with its mapping in the audit trail (`unmapped.signal`).
pub async fn accept(engine: &Engine, events: Vec<Received>) -> Result<Accepted, EngineError> {
    let now = engine.clock.now();
    let grants: Vec<GrantEvidence> = events.iter().filter_map(|ev| grant(ev, now)).collect();
    engine.store.record_grants(&grants).await?;
    let records = events
        .iter()
        .filter(|ev| !matches!(ev.signal, Some(Signal::TokenGrant { .. })))
        .map(|ev| {
            audit::idp_event_received(
                ev.source,
                &ev.event_type,
                &ev.event_id,
                &ev.subject,
                ev.signal.as_ref(),
                now,
            )
        })
        .collect();
    engine.store.append_audit(records).await?;
    // Every event is applied first; what the batch leaves behind (scope use, baselines, the
    // ids now seen) is then one write: a group commit, one fsync per batch on SQLite.
    // What can contain an agent goes first (a request for a scope outside the grant, a risk
    // signal): its freeze does not wait behind the rest of a page of routine grants.
    let mut writes = IntakeWrites::default();
    let mut baselines = Baselines::default();
    let (urgent, routine): (Vec<&Received>, Vec<&Received>) =
        events.iter().partition(|ev| urgent(ev));
    for ev in urgent.into_iter().chain(routine) {
        apply(engine, ev, now, &mut writes, &mut baselines).await?;
    }
    writes.seen = events
        .iter()
        .map(|ev| (ev.source.to_string(), ev.event_id.clone()))
        .collect();
    writes.baselines = baselines.into_changed();
    let new = engine.store.record_intake(&writes, DEDUPE_WINDOW).await?;
    let mut accepted = Accepted::default();
    for (ev, new) in events.iter().zip(new) {
        if new {
            accepted.new += 1;
        } else {
            tracing::info!(source = ev.source, id = %ev.event_id, "event delivered again; already applied");
            accepted.repeated += 1;
        }
    }
    Ok(accepted)
}

/// A token grant event as evidence.
fn grant(ev: &Received, received: DateTime<Utc>) -> Option<GrantEvidence> {
    let Some(Signal::TokenGrant {
        client_id,
        ip,
        requested,
        granted,
        success,
        reason,
        ..
    }) = &ev.signal
    else {
        return None;
    };
    Some(GrantEvidence {
        event_id: ev.event_id.clone(),
        source: ev.source.to_string(),
        client_id: client_id.clone(),
        at: ev.published.unwrap_or(received),
        ip: ip.clone(),
        requested: requested.clone(),
        granted: granted.clone(),
        success: *success,
        reason: reason.clone(),
    })
}

/// Whether a refused grant's reason is exactly a refusal of the scope after the client
/// authenticated (Okta `no_matching_scope`, OAuth `invalid_scope`). Only those codes: a reason
/// that merely mentions a scope (a wrong secret that named one) proves nothing about the agent.
/// An event that may contain an agent at once: a refused request for a scope outside the
/// grant, or a risk signal.
fn urgent(ev: &Received) -> bool {
    match &ev.signal {
        Some(Signal::TokenGrant {
            success: false,
            reason: Some(reason),
            ..
        }) => refused_for_scope(reason),
        Some(Signal::Risk { .. }) => true,
        _ => false,
    }
}

pub fn refused_for_scope(reason: &str) -> bool {
    matches!(
        reason.trim().to_ascii_lowercase().as_str(),
        "no_matching_scope" | "invalid_scope"
    )
}

async fn apply(
    engine: &Engine,
    ev: &Received,
    accepted_at: DateTime<Utc>,
    writes: &mut IntakeWrites,
    baselines: &mut Baselines,
) -> Result<(), EngineError> {
    if let Some(Signal::TokenGrant {
        client_id,
        ip,
        requested,
        granted,
        success,
        reason,
        binding,
        ..
    }) = &ev.signal
    {
        let at = ev.published.unwrap_or(accepted_at);
        // A refusal proves the credential was used only when the client authenticated and
        // asked for a scope it lacks (Okta `no_matching_scope`, OAuth `invalid_scope`); a wrong
        // secret says nothing about the agent, and must not let anyone freeze it.
        let authenticated = *success || reason.as_deref().is_some_and(refused_for_scope);
        if *success {
            writes
                .scope_use
                .push((client_id.clone(), granted.clone(), at));
        }
        let request = TokenRequest {
            at,
            ip: ip.clone(),
            requested: requested.clone(),
            granted: granted.clone(),
            success: *success,
            binding: *binding,
        };
        if authenticated {
            engine
                .observe_token_request_in(baselines, client_id, &request, &ev.event_id, accepted_at)
                .await?;
        }
    }
    if let Some(Signal::Risk {
        kind,
        subjects,
        detail,
        ..
    }) = &ev.signal
    {
        let kind = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        for subject in subjects {
            let agent = match engine.store.agent_by_client(subject).await? {
                Some(a) => Some(a),
                None => engine.find_agent(subject).await?,
            };
            if let Some(agent) = agent {
                engine
                    .observe_signal(&agent, &kind, detail, &ev.event_id, accepted_at)
                    .await?;
            }
        }
    }
    if let Some(Signal::ServiceApp {
        app_id,
        change: AppChange::Created,
        by,
        ..
    }) = &ev.signal
        && engine.policy.discovery.enabled
    {
        engine
            .look_at_new_client(app_id, by.as_deref(), &ev.event_id)
            .await?;
    }
    if let Some(Signal::PersonLost { login, change, .. }) = &ev.signal {
        let started = engine.owner_lost(login, *change, &ev.event_id).await?;
        for s in started.iter().filter(|s| !s.duplicate) {
            tracing::info!(agent = %s.agent_id, workflow = %s.workflow_id, "owner lost; asking for a new owner");
        }
    }
    Ok(())
}

/// Events from many callers at once (the development IdP's token endpoint: one grant per
/// request), handed to [`accept`] in group commits: whatever arrived while the previous batch
/// was being written goes in the next, so a burst of requests shares one durable write instead
/// of two each. Each caller waits until its own events are written (nothing is acknowledged
/// before it is durable), and a batch that fails fails each of its callers.
#[derive(Clone)]
pub struct GroupIntake {
    tx: tokio::sync::mpsc::Sender<Waiting>,
}

type Waiting = (
    Vec<Received>,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

/// What a caller of [`GroupIntake::accept`] learns when its batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum GroupIntakeError {
    #[error("the intake batch holding these events was not written: {0}")]
    Failed(String),
    #[error("the intake has stopped (the server is shutting down); the events were not written")]
    Stopped,
}

impl GroupIntake {
    /// Starts the writer on the current runtime: batches of at most `max_batch` events, at
    /// most `queue` callers waiting (further callers wait for room).
    pub fn start(engine: std::sync::Arc<Engine>, max_batch: usize, queue: usize) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Waiting>(queue.max(1));
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut events = first.0;
                let mut callers = vec![first.1];
                while events.len() < max_batch {
                    match rx.try_recv() {
                        Ok((more, caller)) => {
                            events.extend(more);
                            callers.push(caller);
                        }
                        Err(_) => break,
                    }
                }
                let result = accept(&engine, events)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                for caller in callers {
                    // A caller that gave up (its request ended) needs no answer.
                    let _ = caller.send(result.clone());
                }
            }
        });
        Self { tx }
    }

    /// Hands `events` over and waits until the batch holding them is written.
    pub async fn accept(&self, events: Vec<Received>) -> Result<(), GroupIntakeError> {
        let (done, written) = tokio::sync::oneshot::channel();
        self.tx
            .send((events, done))
            .await
            .map_err(|_| GroupIntakeError::Stopped)?;
        written
            .await
            .map_err(|_| GroupIntakeError::Stopped)?
            .map_err(GroupIntakeError::Failed)
    }
}
