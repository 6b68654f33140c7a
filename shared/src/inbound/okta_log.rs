//! The Okta System Log, polled (`GET /api/v1/logs`) for what event hooks never carry: token
//! grants and failed grants, threat detection, entity-risk actions. The `after` cursor is kept
//! in the store and written only after the page it ends was applied, so a restart resumes where
//! the last applied page ended: nothing is skipped, and a page re-read after a crash is not
//! applied twice (the intake remembers each event's uuid). Rate limiting is the Okta adapter's:
//! the `logs` bucket's limiter makes a poll wait rather than exceed it.
//!
//! On AWS the same events arrive through Okta Log Streaming to EventBridge instead.

use super::okta_events;
use crate::Engine;
use crate::audit;
use crate::engine::EngineError;
use crate::idp::okta::Okta;
use crate::intake::{self, Accepted};
use crate::ports::idp::IdpError;
use statemachines::Actor;
use std::time::Duration;

/// The store cursor's name.
pub const CURSOR: &str = "okta-system-log";
/// Events per page (Okta's maximum for `/api/v1/logs` is 1000).
pub const PAGE_SIZE: u32 = 200;
/// How far back the very first poll starts.
pub const FIRST_LOOKBACK: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("reading the Okta System Log failed: {0}")]
    Okta(#[from] IdpError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Polled {
    pub pages: usize,
    pub accepted: Accepted,
    /// Events that could not be read (audited as refused).
    pub unreadable: usize,
}

/// Reads pages from the saved cursor until Okta has no more, applying each page before moving
/// the cursor past it. At most `max_pages` pages per call, so one poll cannot run forever
/// behind a busy org.
pub async fn poll(
    engine: &Engine,
    okta: &Okta,
    page_size: u32,
    max_pages: usize,
) -> Result<Polled, PollError> {
    let mut polled = Polled::default();
    for _ in 0..max_pages {
        let cursor = engine
            .store
            .cursor(CURSOR)
            .await
            .map_err(EngineError::from)?;
        let since = match cursor {
            Some(_) => None,
            None => Some(
                engine.clock.now() - chrono::Duration::from_std(FIRST_LOOKBACK).unwrap_or_default(),
            ),
        };
        let page = okta.system_log(cursor.as_deref(), since, page_size).await?;
        polled.pages += 1;
        let mut received = Vec::with_capacity(page.events.len());
        for ev in &page.events {
            match okta_events::received(ev) {
                Ok(r) => received.push(r),
                Err(e) => {
                    polled.unreadable += 1;
                    engine
                        .store
                        .append_audit(vec![audit::refusal(
                            "Okta System Log event",
                            &Actor::System,
                            None,
                            None,
                            &e.to_string(),
                            engine.clock.now(),
                        )])
                        .await
                        .map_err(EngineError::from)?;
                }
            }
        }
        let done = page.events.len() < page_size as usize;
        let accepted = intake::accept(engine, received).await?;
        polled.accepted.new += accepted.new;
        polled.accepted.repeated += accepted.repeated;
        if let Some(after) = &page.after
            && cursor.as_deref() != Some(after.as_str())
        {
            engine
                .store
                .set_cursor(CURSOR, after)
                .await
                .map_err(EngineError::from)?;
        }
        if done || page.after.is_none() {
            break;
        }
    }
    Ok(polled)
}
