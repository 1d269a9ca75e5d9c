//! The web chat's rate limit: a token bucket per conversation (pure; the caller passes the
//! time), so one visitor cannot flood an agent or the store.

use std::time::Instant;

/// Messages a conversation may send per second, sustained, and in a burst.
pub const RATE_PER_SECOND: f64 = 5.0;
pub const BURST: f64 = 10.0;

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(now: Instant) -> Self {
        Self { tokens: BURST, at: now }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * RATE_PER_SECOND).min(BURST);
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(t0);
        assert!((0..10).all(|_| b.take(t0)), "the burst");
        assert!(!b.take(t0), "then nothing until time passes");
        assert!(b.take(t0 + Duration::from_millis(200)), "one every 200 ms");
        assert!(!b.take(t0 + Duration::from_millis(250)));
        // A long pause refills up to the burst only.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| b.take(later)).count(), 10);
        // Time going backwards (another caller's `now`) never adds tokens.
        assert!(!b.take(t0));
    }
}
