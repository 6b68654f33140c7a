//! A client-side view of Okta's rate limits, shared by every call of one `Okta` (and its clones).
//!
//! Okta counts requests per bucket (a group of endpoints) in fixed windows and reports the state
//! on every answer: `X-Rate-Limit-Limit`, `X-Rate-Limit-Remaining`, `X-Rate-Limit-Reset` (UTC
//! epoch seconds when the window ends). The limiter never lets more requests be on their way
//! than the latest `Remaining` allows, so concurrent callers cannot overshoot it:
//! - a known window with room: a caller reserves one request (in flight until its answer);
//! - a known window without room: callers wait until `Reset` (plus jitter);
//! - no known window (at start, or once `Reset` has passed): one request at a time probes the
//!   new window, and its answer tells the others how much room there is.

use reqwest::header::{DATE, HeaderMap};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Clock differences up to this are noise from `Date`'s one-second resolution.
const SKEW_TOLERANCE_SECS: i64 = 2;
/// Callers waiting for answers recheck at least this often (a lost wake-up costs no more).
const RECHECK: Duration = Duration::from_millis(200);
/// Waiters for a reset are spread over this much, so they do not arrive at one instant.
const JITTER_MS: u64 = 100;

/// The bucket of a request path. Okta keeps separate buckets per endpoint family; Steward's
/// calls fall into `apps` (every `/api/v1/apps…` path, counted together so the tighter of
/// Okta's app buckets governs), `logs`, and one per token endpoint (the path itself).
pub(crate) fn bucket_of(path: &str) -> String {
    if path.starts_with("/api/v1/apps") {
        "apps".into()
    } else if path.starts_with("/api/v1/logs") {
        "logs".into()
    } else {
        path.to_string()
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    remaining: u32,
    /// Okta's `X-Rate-Limit-Reset`: identifies the window.
    reset_epoch: u64,
    /// When the window ends by this machine's clock (corrected for a large skew).
    reset_at: SystemTime,
}

#[derive(Debug, Default)]
struct Bucket {
    window: Option<Window>,
    in_flight: u32,
}

/// A bucket would make the caller wait longer than it may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TooLong {
    pub bucket: String,
    pub wait: Duration,
}

#[derive(Default)]
struct Shared {
    buckets: Mutex<HashMap<String, Bucket>>,
    changed: Notify,
}

/// One per Okta org; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Limiter {
    shared: Arc<Shared>,
}

/// The right to send one request in a bucket; dropping it ends the reservation.
pub(crate) struct Permit {
    shared: Arc<Shared>,
    bucket: String,
}

fn lock(shared: &Shared) -> MutexGuard<'_, HashMap<String, Bucket>> {
    // A panic while holding the lock leaves counters that are still usable.
    shared
        .buckets
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Limiter {
    /// Waits until a request in `bucket` may be sent; gives up when that would take longer
    /// than `max_wait` in all.
    pub(crate) async fn acquire(
        &self,
        bucket: &str,
        max_wait: Duration,
    ) -> Result<Permit, TooLong> {
        let started = Instant::now();
        loop {
            // Registered before the check, so an answer arriving in between still wakes us.
            let notified = self.shared.changed.notified();
            let reset_at = {
                let mut buckets = lock(&self.shared);
                let b = buckets.entry(bucket.to_string()).or_default();
                match b.window {
                    Some(w) if SystemTime::now() < w.reset_at => {
                        if w.remaining > b.in_flight {
                            b.in_flight += 1;
                            return Ok(self.permit(bucket));
                        }
                        Some(w.reset_at)
                    }
                    // The window is over or unknown: one request probes the next one.
                    _ if b.in_flight == 0 => {
                        b.window = None;
                        b.in_flight = 1;
                        return Ok(self.permit(bucket));
                    }
                    _ => None,
                }
            };
            // Until the reset, unless an answer on its way shows room earlier.
            let wait = match reset_at {
                Some(at) => at.duration_since(SystemTime::now()).unwrap_or_default() + jitter(),
                None => RECHECK,
            };
            if started.elapsed() + wait > max_wait {
                return Err(TooLong {
                    bucket: bucket.to_string(),
                    wait,
                });
            }
            tracing::debug!(
                bucket,
                wait_ms = wait.as_millis() as u64,
                "okta rate limit: waiting"
            );
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn permit(&self, bucket: &str) -> Permit {
        Permit {
            shared: self.shared.clone(),
            bucket: bucket.to_string(),
        }
    }
}

impl Permit {
    /// Records what an answer said about the bucket's window.
    pub(crate) fn observe(&self, headers: &HeaderMap) {
        let Some(seen) = parse(headers) else { return };
        let mut buckets = lock(&self.shared);
        let b = buckets.entry(self.bucket.clone()).or_default();
        b.window = Some(match b.window {
            // Answers arrive out of order: within one window the lowest count is the latest.
            Some(w) if w.reset_epoch == seen.reset_epoch => Window {
                remaining: w.remaining.min(seen.remaining),
                ..seen
            },
            // A late answer from a window that is over says nothing about the current one.
            Some(w) if w.reset_epoch > seen.reset_epoch => w,
            _ => seen,
        });
        drop(buckets);
        self.shared.changed.notify_waiters();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut buckets = lock(&self.shared);
        if let Some(b) = buckets.get_mut(&self.bucket) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
        drop(buckets);
        self.shared.changed.notify_waiters();
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn parse(headers: &HeaderMap) -> Option<Window> {
    // The limit itself is not needed: `Remaining` already says how much room is left.
    header_u64(headers, "x-rate-limit-limit")?;
    let remaining = header_u64(headers, "x-rate-limit-remaining")?;
    let reset_epoch = header_u64(headers, "x-rate-limit-reset")?;
    let reset_local = reset_epoch as i64 - server_skew(headers);
    Some(Window {
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_epoch,
        reset_at: UNIX_EPOCH + Duration::from_secs(reset_local.max(0) as u64),
    })
}

/// Server clock minus ours, in seconds, when the `Date` header shows a real difference.
fn server_skew(headers: &HeaderMap) -> i64 {
    let Some(date) = headers.get(DATE).and_then(|d| d.to_str().ok()) else {
        return 0;
    };
    let Ok(server) = chrono::DateTime::parse_from_rfc2822(date) else {
        return 0;
    };
    let skew = server.timestamp() - chrono::Utc::now().timestamp();
    if skew.abs() > SKEW_TOLERANCE_SECS {
        skew
    } else {
        0
    }
}

fn jitter() -> Duration {
    Duration::from_millis(rand::random::<u64>() % JITTER_MS)
}

/// How long until the window an answer reports resets (for a 429), if it says.
pub(crate) fn until_reset(headers: &HeaderMap) -> Option<Duration> {
    let w = parse(headers)?;
    Some(
        w.reset_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            + jitter(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(limit: u32, remaining: u32, reset: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-limit", HeaderValue::from(limit));
        h.insert("x-rate-limit-remaining", HeaderValue::from(remaining));
        h.insert("x-rate-limit-reset", HeaderValue::from(reset));
        h
    }

    fn now_epoch() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn buckets() {
        assert_eq!(bucket_of("/api/v1/apps"), "apps");
        assert_eq!(bucket_of("/api/v1/apps/0oa1/credentials/secrets"), "apps");
        assert_eq!(bucket_of("/api/v1/logs"), "logs");
        assert_eq!(bucket_of("/oauth2/v1/token"), "/oauth2/v1/token");
    }

    #[tokio::test]
    async fn an_unknown_bucket_admits_one_probe_at_a_time() {
        let limiter = Limiter::default();
        let probe = limiter
            .acquire("apps", Duration::from_secs(1))
            .await
            .unwrap();
        let second = tokio::time::timeout(
            Duration::from_millis(50),
            limiter.acquire("apps", Duration::from_secs(1)),
        )
        .await;
        assert!(
            second.is_err(),
            "a second request went out before the probe's answer"
        );
        probe.observe(&headers(10, 9, now_epoch() + 60));
        drop(probe);
        let mut permits = Vec::new();
        for _ in 0..9 {
            permits.push(
                limiter
                    .acquire("apps", Duration::from_secs(1))
                    .await
                    .unwrap(),
            );
        }
        assert!(
            limiter
                .acquire("apps", Duration::from_millis(300))
                .await
                .is_err(),
            "a tenth request in a window with nine left"
        );
    }

    #[tokio::test]
    async fn an_exhausted_window_waits_for_its_reset() {
        let limiter = Limiter::default();
        let probe = limiter
            .acquire("logs", Duration::from_secs(1))
            .await
            .unwrap();
        probe.observe(&headers(5, 0, now_epoch() + 30));
        drop(probe);
        let err = limiter
            .acquire("logs", Duration::from_secs(5))
            .await
            .err()
            .expect("it must not wait 30 s when allowed 5");
        assert!(err.wait > Duration::from_secs(20), "{err:?}");
        // Other buckets are not affected.
        limiter
            .acquire("apps", Duration::from_millis(10))
            .await
            .unwrap();
    }

    #[test]
    fn older_answers_do_not_raise_the_count() {
        let limiter = Limiter::default();
        let p = limiter.permit("apps");
        let reset = now_epoch() + 60;
        p.observe(&headers(10, 3, reset));
        p.observe(&headers(10, 7, reset));
        p.observe(&headers(10, 9, reset - 60));
        let w = lock(&limiter.shared)["apps"].window.unwrap();
        assert_eq!((w.remaining, w.reset_epoch), (3, reset));
    }
}
