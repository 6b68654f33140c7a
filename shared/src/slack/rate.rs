//! Slack's rate limits, kept on our side so a campaign launch never floods Slack
//! (api.slack.com/apis/rate-limits): each Web API method has a tier (per minute, per workspace,
//! with short bursts), and `chat.postMessage` allows about one message per second per
//! conversation and several hundred per minute per workspace. A 429 (or `ratelimited`) pauses
//! the method for the `Retry-After` Slack gives.
//!
//! A call either goes now (its slot is taken) or learns how long to wait; short waits are slept
//! through, longer ones go back to the queue as a delayed retry that does not count as a failed
//! attempt (`NotifyError::retry_after`).

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;
type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Calls per minute of Slack's tiers (the documented floor: "20+", "50+", "100+").
pub const TIER_2: u32 = 20;
pub const TIER_3: u32 = 50;
pub const TIER_4: u32 = 100;
/// `chat.postMessage`: one a second per conversation ...
pub const POST_PER_CONVERSATION_PER_MINUTE: u32 = 60;
/// ... and "several hundred per minute" per workspace.
pub const POST_PER_WORKSPACE_PER_MINUTE: u32 = 300;

/// The tier of a method Steward calls (calls per minute).
pub fn per_minute(method: &str) -> Option<u32> {
    match method {
        "chat.postMessage" => Some(POST_PER_WORKSPACE_PER_MINUTE),
        "chat.update" | "users.lookupByEmail" | "conversations.history" | "conversations.open" => {
            Some(TIER_3)
        }
        "users.info" => Some(TIER_4),
        "users.list" => Some(TIER_2),
        _ => None,
    }
}

/// Where Steward stands against Slack's limits, per method (and per conversation for posts).
pub struct SlackRates {
    methods: HashMap<&'static str, Direct>,
    conversations: Keyed,
    paused: Mutex<HashMap<String, Instant>>,
    clock: DefaultClock,
}

/// A quota of `per_minute × multiplier` calls a minute with a burst of a tenth of that.
fn quota(per_minute: u32, multiplier: f64) -> Quota {
    let rate = (per_minute as f64 * multiplier).max(1.0);
    let period = Duration::from_secs_f64(60.0 / rate);
    let burst = NonZeroU32::new(((rate / 10.0).floor() as u32).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl SlackRates {
    /// Slack's limits scaled by `multiplier` (1.0 for Slack itself; an Enterprise Grid with
    /// raised limits, or a local fake in tests, may allow more).
    pub fn new(multiplier: f64) -> Self {
        let methods = [
            "chat.postMessage",
            "chat.update",
            "users.lookupByEmail",
            "conversations.history",
            "conversations.open",
        ]
        .into_iter()
        .filter_map(|m| per_minute(m).map(|n| (m, RateLimiter::direct(quota(n, multiplier)))))
        .collect();
        let per_conversation = Quota::with_period(Duration::from_secs_f64(
            60.0 / (POST_PER_CONVERSATION_PER_MINUTE as f64 * multiplier).max(1.0),
        ))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
        Self {
            methods,
            conversations: RateLimiter::keyed(per_conversation),
            paused: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a slot for `method` (posting into `conversation`) if one is free now; otherwise
    /// says how long until one is. Nothing is taken when the answer is a wait.
    pub fn check(&self, method: &str, conversation: Option<&str>) -> Result<(), Duration> {
        if let Some(until) = self.paused.lock().expect("rate lock").get(method)
            && let Some(left) = until.checked_duration_since(Instant::now())
            && !left.is_zero()
        {
            return Err(left);
        }
        let now = self.clock.now();
        if let Some(c) = conversation
            && method == "chat.postMessage"
        {
            // Checked first: a conversation's slot is cheap to give back by waiting, the
            // workspace's is not.
            if let Err(not_until) = self.conversations.check_key(&c.to_string()) {
                return Err(not_until.wait_time_from(now));
            }
        }
        if let Some(limiter) = self.methods.get(method)
            && let Err(not_until) = limiter.check()
        {
            return Err(not_until.wait_time_from(now));
        }
        Ok(())
    }

    /// Slack said "too many": no calls of `method` for `wait`.
    pub fn pause(&self, method: &str, wait: Duration) {
        self.paused
            .lock()
            .expect("rate lock")
            .insert(method.to_string(), Instant::now() + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_gets_about_one_post_a_second() {
        let rates = SlackRates::new(1.0);
        assert!(rates.check("chat.postMessage", Some("D1")).is_ok());
        let wait = rates
            .check("chat.postMessage", Some("D1"))
            .expect_err("a second post into the same conversation waits");
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another conversation is not held up by the first one.
        assert!(rates.check("chat.postMessage", Some("D2")).is_ok());
    }

    #[test]
    fn tier_three_allows_a_burst_then_about_fifty_a_minute() {
        let rates = SlackRates::new(1.0);
        let mut allowed = 0;
        while rates.check("chat.update", None).is_ok() {
            allowed += 1;
            assert!(
                allowed < 50,
                "tier 3 must not allow a minute's calls at once"
            );
        }
        assert_eq!(allowed, 5, "a burst of a tenth of the minute's calls");
        let wait = rates.check("chat.update", None).unwrap_err();
        assert!(wait <= Duration::from_millis(1200), "{wait:?}");
        // Methods are limited independently.
        assert!(rates.check("users.lookupByEmail", None).is_ok());
    }

    #[test]
    fn the_workspace_limit_holds_across_conversations() {
        let rates = SlackRates::new(1.0);
        let mut allowed = 0;
        for i in 0..100 {
            if rates
                .check("chat.postMessage", Some(&format!("D{i}")))
                .is_ok()
            {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 30, "300 a minute with a burst of 30");
    }

    #[test]
    fn retry_after_pauses_the_method() {
        let rates = SlackRates::new(1.0);
        rates.pause("chat.update", Duration::from_secs(30));
        let wait = rates.check("chat.update", None).unwrap_err();
        assert!(wait > Duration::from_secs(29), "{wait:?}");
        assert!(rates.check("chat.postMessage", Some("D1")).is_ok());
    }

    #[test]
    fn a_multiplier_scales_the_limits() {
        let rates = SlackRates::new(10.0);
        let mut allowed = 0;
        while rates.check("chat.update", None).is_ok() {
            allowed += 1;
        }
        assert_eq!(allowed, 50);
    }
}
