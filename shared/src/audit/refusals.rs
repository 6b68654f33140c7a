//! Bounding the audit of unauthenticated refusals: anyone can send a forged request, so each is
//! counted, but the same refusal is recorded at most once per window and each window has a
//! budget of records. The local server keeps one window; each AWS function container its own.

/// The same unauthenticated refusal is recorded at most once per this window, and at most
/// [`REFUSAL_RECORDS`] records are written per window in all; the rest are counted (in
/// `/api/health` at once, in the next record's text). A flood of refused requests cannot grow the
/// trail faster than that, whatever it varies.
pub const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
pub const REFUSAL_RECORDS: u64 = 100;

/// The current window: when it started, the records written in it, and per refusal when it was
/// last recorded and how many like it went unrecorded since.
pub struct RefusalWindow {
    started: std::time::Instant,
    written: u64,
    seen: std::collections::HashMap<String, (std::time::Instant, u64)>,
}

impl Default for RefusalWindow {
    fn default() -> Self {
        Self {
            started: std::time::Instant::now(),
            written: 0,
            seen: Default::default(),
        }
    }
}

impl RefusalWindow {
    /// Whether the unauthenticated refusal `key` (what was refused and why) is recorded now,
    /// and then the reason its record gives (`why`, with how many like it went unrecorded since
    /// its last record); `None`: only counted. The local server keeps one window; each AWS
    /// function container keeps its own.
    pub fn record_due(&mut self, key: &str, why: &str) -> Option<String> {
        let key = crate::audit::bounded(key, 200);
        let now = std::time::Instant::now();
        if now.duration_since(self.started) >= REFUSAL_WINDOW {
            self.started = now;
            self.written = 0;
            self.seen
                .retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_WINDOW);
        }
        let budget_left = self.written < REFUSAL_RECORDS;
        let due = match self.seen.get_mut(&key) {
            Some((at, skipped)) if now.duration_since(*at) < REFUSAL_WINDOW || !budget_left => {
                *skipped += 1;
                None
            }
            Some(entry) => {
                let skipped = entry.1;
                *entry = (now, 0);
                Some(skipped)
            }
            None if !budget_left => None,
            None => {
                self.seen.insert(key, (now, 0));
                Some(0)
            }
        };
        if due.is_some() {
            self.written += 1;
        }
        due.map(|skipped| match skipped {
            0 => why.to_string(),
            n => format!(
                "{why} (and {n} more refusals like it since the last record, counted in /api/health)"
            ),
        })
    }
}
