//! INVITE flood limiting: how many INVITEs one source address may send, before anything
//! else is done with them (parsing what the front door needs, admission, sessions).
//!
//! A token bucket per source IP address: `CENTRALITA_SIP_INVITE_RATE` INVITEs a second on
//! average, bursts of `CENTRALITA_SIP_INVITE_BURST`. An INVITE beyond it is answered `503`
//! (a carrier trunk retries later or elsewhere) and creates nothing; the other sources are
//! served as before. Each replica counts alone (a trunk spread over N
//! replicas by the SIP edge gets N times the rate), which is what the limit protects: this
//! process's CPU and sessions behind it. The defaults are well above what one trunk sends
//! to one replica in normal work (the voice benchmark's set-up rate included).
//!
//! The table of sources is bounded ([`MAX_SOURCES`]): when it is full, sources whose bucket
//! has refilled (idle ones) are forgotten; if all are busy, new sources share one bucket
//! (a flood from spoofed addresses cannot grow memory, nor starve the sources already known).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use centralita_platform::config::ConfigError;

/// The most source addresses tracked at once.
pub const MAX_SOURCES: usize = 10_000;
/// The defaults of [`FloodArgs`].
pub const DEFAULT_RATE: u32 = 200;
pub const DEFAULT_BURST: u32 = 400;

/// The flood limit's settings (voice role).
#[derive(Debug, Clone, clap::Args)]
pub struct FloodArgs {
    /// INVITEs a second one source address may send on average (more get `503`).
    #[arg(long = "sip-invite-rate", env = "CENTRALITA_SIP_INVITE_RATE", default_value_t = DEFAULT_RATE)]
    pub invite_rate: u32,
    /// INVITEs one source address may send at once (the bucket's size).
    #[arg(long = "sip-invite-burst", env = "CENTRALITA_SIP_INVITE_BURST", default_value_t = DEFAULT_BURST)]
    pub invite_burst: u32,
}

impl FloodArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.invite_rate) {
            return Err(ConfigError::new("CENTRALITA_SIP_INVITE_RATE", "must be 1 to 100000"));
        }
        if self.invite_burst < 1 || self.invite_burst > 1_000_000 {
            return Err(ConfigError::new("CENTRALITA_SIP_INVITE_BURST", "must be 1 to 1000000"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for FloodLimit {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_RATE, DEFAULT_BURST, MAX_SOURCES)
    }
}

/// Per-source token buckets (pure: the caller gives the time).
#[derive(Debug)]
pub struct FloodLimit {
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
    /// Shared by new sources while the table is full of busy ones.
    overflow: Option<Bucket>,
}

impl FloodLimit {
    pub fn new(args: &FloodArgs) -> Self {
        Self::with_capacity(args.invite_rate, args.invite_burst, MAX_SOURCES)
    }

    pub fn with_capacity(rate: u32, burst: u32, max_sources: usize) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            overflow: None,
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
    }

    fn take(&self, b: &mut Bucket, now: Instant) -> bool {
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether an INVITE from `source` at `now` passes (and counts it).
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> bool {
        if let Some(mut b) = self.buckets.get(&source).copied() {
            let ok = self.take(&mut b, now);
            self.buckets.insert(source, b);
            return ok;
        }
        if self.buckets.len() >= self.max_sources {
            // Forget the sources whose bucket is full again (idle for burst/rate seconds).
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        }
        if self.buckets.len() >= self.max_sources {
            let mut b = self.overflow.unwrap_or(Bucket { tokens: self.burst, at: now });
            let ok = self.take(&mut b, now);
            self.overflow = Some(b);
            return ok;
        }
        let mut b = Bucket { tokens: self.burst, at: now };
        let ok = self.take(&mut b, now);
        self.buckets.insert(source, b);
        ok
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_not_touched() {
        let mut f = FloodLimit::with_capacity(5, 10, 100);
        let t0 = Instant::now();
        let flood = ip("192.0.2.1");
        let passed = (0..50).filter(|_| f.admit(flood, t0)).count();
        assert_eq!(passed, 10, "the burst, then nothing at the same instant");
        assert!(f.admit(ip("192.0.2.2"), t0), "another source is served");
        // One second later: 5 more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..50).filter(|_| f.admit(flood, t1)).count(), 5);
        // A long pause refills the bucket to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..50).filter(|_| f.admit(flood, t2)).count(), 10);
    }

    #[test]
    fn the_table_is_bounded_idle_sources_forgotten_new_ones_share_a_bucket_when_all_are_busy() {
        let mut f = FloodLimit::with_capacity(1, 2, 3);
        let t0 = Instant::now();
        for n in 1..=3 {
            let s = ip(&format!("198.51.100.{n}"));
            assert!(f.admit(s, t0) && f.admit(s, t0) && !f.admit(s, t0), "busy: bucket empty");
        }
        assert_eq!(f.sources(), 3);
        // Full of busy sources: newcomers share the overflow bucket (2 INVITEs), the known
        // ones keep their own.
        assert!(f.admit(ip("203.0.113.1"), t0));
        assert!(f.admit(ip("203.0.113.2"), t0));
        assert!(!f.admit(ip("203.0.113.3"), t0));
        assert_eq!(f.sources(), 3);
        // Later, the idle ones are forgotten and a newcomer gets a bucket of its own.
        let later = t0 + Duration::from_secs(10);
        assert!(f.admit(ip("203.0.113.4"), later));
        assert_eq!(f.sources(), 1);
    }

    #[test]
    fn settings_are_checked() {
        assert!(FloodArgs { invite_rate: 200, invite_burst: 400 }.validate().is_ok());
        assert!(FloodArgs { invite_rate: 0, invite_burst: 400 }.validate().is_err());
        assert!(FloodArgs { invite_rate: 1, invite_burst: 0 }.validate().is_err());
    }

    proptest! {
        /// Any sequence of sources and times: no source gets more than its allowance, and
        /// the table never exceeds its bound.
        #[test]
        fn no_source_ever_gets_more_than_its_allowance(
            rate in 1u32..50,
            burst in 1u32..50,
            steps in proptest::collection::vec((0u8..6, 0u64..400), 1..300),
        ) {
            let mut f = FloodLimit::with_capacity(rate, burst, 4);
            let t0 = Instant::now();
            let mut now = t0;
            let mut passed = [0u64; 6];
            for (source, advance_ms) in steps {
                now += Duration::from_millis(advance_ms);
                if f.admit(IpAddr::from([10, 0, 0, source]), now) {
                    passed[usize::from(source)] += 1;
                }
                prop_assert!(f.sources() <= 4);
            }
            let elapsed = now.duration_since(t0).as_secs_f64();
            // A source forgotten only once its bucket is full again loses nothing and gains
            // nothing; one that used the shared overflow bucket before getting its own can
            // have had both: at most twice one bucket's allowance.
            let bound = 2.0 * (f64::from(burst) + elapsed * f64::from(rate));
            for p in passed {
                prop_assert!((p as f64) <= bound + 1e-9, "{p} > {bound}");
            }
        }
    }
}
