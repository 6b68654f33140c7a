//! Limits on failed client authentications at the token endpoint, per client id and per caller
//! address: past either limit a failure is answered 429 with `Retry-After` instead of 401.
//!
//! Only failures count, and only a failure is ever held back: a request with the right secret is
//! checked and answered as always, so nobody's wrong secrets (an attacker naming a client's id,
//! or a stale agent behind the same proxy) lock a well-behaved client out. Client secrets are 256
//! bits, so the limits are not there against guessing: they tell a misconfigured client to back
//! off, and give a flood a cheap answer it can see.
//!
//! Each key is a GCRA bucket (`governor`): `n` failures at once, then one more every `60/n`
//! seconds. Memory is bounded: at most `max_keys` client ids and as many addresses are tracked,
//! keys whose bucket is full again are dropped when the table fills, and while it is still full
//! every failure is held back (which costs a correct secret nothing).

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

/// How many failed client authentications are let through, per minute and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimits {
    /// Per client id (`STEWARD_TOKEN_FAILURES_PER_CLIENT`).
    pub per_client: NonZeroU32,
    /// Per caller address, an IPv6 caller by its /64 (`STEWARD_TOKEN_FAILURES_PER_ADDRESS`).
    pub per_address: NonZeroU32,
    /// Client ids tracked at once, and as many addresses (`STEWARD_TOKEN_FAILURE_KEYS`).
    pub max_keys: usize,
}

pub const PER_CLIENT_ENV: &str = "STEWARD_TOKEN_FAILURES_PER_CLIENT";
pub const PER_ADDRESS_ENV: &str = "STEWARD_TOKEN_FAILURES_PER_ADDRESS";
pub const MAX_KEYS_ENV: &str = "STEWARD_TOKEN_FAILURE_KEYS";

impl Default for FailureLimits {
    fn default() -> Self {
        Self {
            per_client: NonZeroU32::new(20).expect("not zero"),
            // Higher: many agents may sit behind one proxy or NAT address.
            per_address: NonZeroU32::new(100).expect("not zero"),
            max_keys: 10_000,
        }
    }
}

impl FailureLimits {
    /// The limits from the environment, the defaults where unset; an unreadable value is refused.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The limits from `var` (a variable's value by name).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut limits = Self::default();
        let number = |name: &str, max: usize| -> Result<Option<usize>, String> {
            var(name)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=max).contains(n))
                        .ok_or_else(|| {
                            format!("{name} must be a number from 1 to {max}, not `{v}`")
                        })
                })
                .transpose()
        };
        let per_minute = |n: usize| NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX));
        if let Some(n) = number(PER_CLIENT_ENV, 100_000)?.and_then(per_minute) {
            limits.per_client = n;
        }
        if let Some(n) = number(PER_ADDRESS_ENV, 100_000)?.and_then(per_minute) {
            limits.per_address = n;
        }
        if let Some(n) = number(MAX_KEYS_ENV, 10_000_000)? {
            limits.max_keys = n;
        }
        Ok(limits)
    }
}

/// A failure held back, and how long until the caller may fail again. The text is the same for
/// every caller held back by the same limit (refusals are recorded once per window and text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Throttled {
    #[error(
        "too many failed client authentications for this client id: check the client secret, and wait the seconds in Retry-After before trying again"
    )]
    Client { retry_after: Duration },
    #[error(
        "too many failed client authentications from this address: check the clients' credentials, and wait the seconds in Retry-After before trying again"
    )]
    Address { retry_after: Duration },
    #[error(
        "too many failed client authentications from too many clients and addresses at once: wait the seconds in Retry-After before trying again"
    )]
    Crowded { retry_after: Duration },
}

impl Throttled {
    /// Whole seconds, at least one (`Retry-After` has no fractions).
    pub fn retry_after_secs(&self) -> u64 {
        let (Throttled::Client { retry_after }
        | Throttled::Address { retry_after }
        | Throttled::Crowded { retry_after }) = *self;
        retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

type Limiter<K, C> = RateLimiter<K, HashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One kind of key, its buckets and its bound.
struct Table<K: Hash + Eq + Clone, C: Clock> {
    limiter: Limiter<K, C>,
    clock: C,
    max_keys: usize,
    /// How long until a bucket that just ran dry is full again (and its key can be dropped).
    refill: Duration,
    /// When full buckets were last dropped: at most once a second, so a full table does not
    /// make every failure walk it.
    swept: Mutex<Option<C::Instant>>,
}

enum Verdict {
    Allowed,
    Wait(Duration),
    Crowded(Duration),
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Table<K, C> {
    fn new(per_minute: NonZeroU32, max_keys: usize, clock: C) -> Self {
        let quota = Quota::per_minute(per_minute);
        Self {
            limiter: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            refill: quota.replenish_interval() * quota.burst_size().get(),
            clock,
            max_keys: max_keys.max(1),
            swept: Mutex::new(None),
        }
    }

    fn fail(&self, key: &K) -> Verdict {
        if self.limiter.len() >= self.max_keys && !self.make_room() {
            return Verdict::Crowded(self.refill);
        }
        match self.limiter.check_key(key) {
            Ok(()) => Verdict::Allowed,
            Err(not_until) => Verdict::Wait(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Drops the keys whose bucket is full again; whether there is room now.
    fn make_room(&self) -> bool {
        use governor::clock::Reference as _;
        let now = self.clock.now();
        {
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            let recently = swept
                .is_some_and(|at| Duration::from(now.duration_since(at)) < Duration::from_secs(1));
            if recently {
                return false;
            }
            *swept = Some(now);
        }
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len() < self.max_keys
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// The failed client authentications of one server, per client id and per address.
pub struct FailedAuthentications<C: Clock = DefaultClock> {
    /// By the SHA-256 of the client id: a 300 KB id costs what a short one does.
    clients: Table<[u8; 32], C>,
    addresses: Table<IpAddr, C>,
}

impl FailedAuthentications<DefaultClock> {
    pub fn new(limits: FailureLimits) -> Self {
        Self::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> FailedAuthentications<C> {
    pub fn with_clock(limits: FailureLimits, clock: C) -> Self {
        Self {
            clients: Table::new(limits.per_client, limits.max_keys, clock.clone()),
            addresses: Table::new(limits.per_address, limits.max_keys, clock),
        }
    }

    /// Counts a failed client authentication by `address` naming `client_id` (if it named one):
    /// `Ok` to answer it as usual, or the limit it went past. Held back by its address, it does
    /// not count against the client id.
    pub fn failed(&self, client_id: Option<&str>, address: IpAddr) -> Result<(), Throttled> {
        match self.addresses.fail(&address_key(address)) {
            Verdict::Allowed => {}
            Verdict::Wait(retry_after) => return Err(Throttled::Address { retry_after }),
            Verdict::Crowded(retry_after) => return Err(Throttled::Crowded { retry_after }),
        }
        let Some(id) = client_id else {
            return Ok(());
        };
        match self.clients.fail(&Sha256::digest(id.as_bytes()).into()) {
            Verdict::Allowed => Ok(()),
            Verdict::Wait(retry_after) => Err(Throttled::Client { retry_after }),
            Verdict::Crowded(retry_after) => Err(Throttled::Crowded { retry_after }),
        }
    }

    /// Client ids and addresses tracked now.
    pub fn tracked(&self) -> (usize, usize) {
        (self.clients.len(), self.addresses.len())
    }
}

/// An IPv4 address as itself (also when mapped into IPv6); an IPv6 address by its /64, which
/// one host usually holds whole.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limits(per_client: u32, per_address: u32, max_keys: usize) -> FailureLimits {
        FailureLimits {
            per_client: NonZeroU32::new(per_client).unwrap(),
            per_address: NonZeroU32::new(per_address).unwrap(),
            max_keys,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_id_is_held_back_after_its_burst_and_others_are_not() {
        let clock = FakeRelativeClock::default();
        let f = FailedAuthentications::with_clock(limits(5, 1000, 100), clock.clone());
        let here = ip("192.0.2.1");
        for _ in 0..5 {
            assert_eq!(f.failed(Some("dev_a"), here), Ok(()));
        }
        let held = f.failed(Some("dev_a"), here).unwrap_err();
        assert!(matches!(held, Throttled::Client { .. }), "{held:?}");
        // One failure back every 12 s (5 a minute).
        assert_eq!(held.retry_after_secs(), 12);
        assert_eq!(f.failed(Some("dev_b"), here), Ok(()), "another client id");
        clock.advance(Duration::from_secs(12));
        assert_eq!(f.failed(Some("dev_a"), here), Ok(()));
        assert!(f.failed(Some("dev_a"), here).is_err());
    }

    #[test]
    fn an_address_is_held_back_whatever_client_ids_it_names() {
        let clock = FakeRelativeClock::default();
        let f = FailedAuthentications::with_clock(limits(1000, 3, 100), clock);
        let here = ip("2001:db8:1:2:3:4:5:6");
        for i in 0..3 {
            assert_eq!(f.failed(Some(&format!("dev_{i}")), here), Ok(()));
        }
        // The rest of the /64 is the same caller; no client id is the same caller too.
        let held = f
            .failed(Some("dev_new"), ip("2001:db8:1:2::99"))
            .unwrap_err();
        assert!(matches!(held, Throttled::Address { .. }), "{held:?}");
        assert!(f.failed(None, here).is_err());
        assert_eq!(f.failed(Some("dev_new"), ip("2001:db8:1:3::1")), Ok(()));
        assert_eq!(f.failed(Some("dev_new"), ip("192.0.2.7")), Ok(()));
        // Held back by the address, the failures did not count against the ids.
        assert_eq!(f.tracked(), (4, 3));
    }

    #[test]
    fn an_ipv4_address_mapped_into_ipv6_is_the_same_caller() {
        let f =
            FailedAuthentications::with_clock(limits(1000, 1, 100), FakeRelativeClock::default());
        assert_eq!(f.failed(None, ip("192.0.2.1")), Ok(()));
        assert!(f.failed(None, ip("::ffff:192.0.2.1")).is_err());
    }

    /// A flood of new client ids (or addresses) fills the table to its bound, not beyond: then
    /// every failure is held back until full buckets can be dropped.
    #[test]
    fn memory_stays_bounded() {
        let clock = FakeRelativeClock::default();
        let f = FailedAuthentications::with_clock(limits(2, 1_000_000, 50), clock.clone());
        let here = ip("192.0.2.1");
        let mut held = 0;
        for i in 0..500 {
            if let Err(t) = f.failed(Some(&format!("dev_{i}")), here) {
                assert!(matches!(t, Throttled::Crowded { .. }), "{t:?}");
                assert_eq!(t.retry_after_secs(), 60);
                held += 1;
            }
        }
        assert_eq!(held, 450);
        assert_eq!(f.tracked().0, 50);
        // A minute later every bucket is full again: their keys go, and failures are counted.
        clock.advance(Duration::from_secs(61));
        assert_eq!(f.failed(Some("dev_late"), here), Ok(()));
        assert_eq!(f.tracked().0, 1);
    }

    #[test]
    fn limits_come_from_the_environment() {
        let env = |pairs: Vec<(&'static str, String)>| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            }
        };
        assert_eq!(
            FailureLimits::from_lookup(env(vec![])),
            Ok(FailureLimits::default())
        );
        assert_eq!(
            FailureLimits::from_lookup(env(vec![
                (PER_CLIENT_ENV, "5".into()),
                (PER_ADDRESS_ENV, " 50 ".into()),
                (MAX_KEYS_ENV, "1000".into()),
            ])),
            Ok(limits(5, 50, 1000))
        );
        for bad in ["0", "-1", "lots", ""] {
            let e =
                FailureLimits::from_lookup(env(vec![(PER_CLIENT_ENV, bad.into())])).unwrap_err();
            assert!(e.contains(PER_CLIENT_ENV) && e.contains("from 1 to"), "{e}");
        }
    }
}
