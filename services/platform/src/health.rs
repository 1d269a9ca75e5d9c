//! Readiness: each dependency a service needs (Kafka, PostgreSQL, Redis, the tenant set)
//! is a named check; the replica is ready when every check passes and it is not shutting
//! down. The state is mirrored into gRPC health (`grpc.health.v1`) and `/readyz`.
//!
//! Checks are set by the tasks that own each dependency, which keep retrying with backoff,
//! so a service started while a dependency is down reports not-ready and recovers by itself.
//!
//! A check can have a grace ([`Readiness::set_grace`]): once it has passed, a failure keeps
//! the replica ready for that long (the report shows the check failing, `tolerated`). The
//! broker's check has one: every API writes through an outbox and keeps serving while the
//! broker is away, and every replica shares the one broker, so taking them all out of their
//! Service for a short broker outage would only turn it into an API outage.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckState {
    pub ok: bool,
    pub detail: String,
    /// Failing, but within its grace: the replica stays ready.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tolerated: bool,
}

#[derive(Debug, Default)]
struct State {
    checks: BTreeMap<&'static str, CheckState>,
    shutting_down: bool,
    grace: BTreeMap<&'static str, Duration>,
    /// Checks with a grace that passed once: since when each fails (`None`: passing).
    failing_since: BTreeMap<&'static str, Option<Instant>>,
    /// Since when each passing check has passed.
    passing_since: BTreeMap<&'static str, Instant>,
}

impl State {
    fn tolerated(&self, name: &str, now: Instant) -> bool {
        match (self.grace.get(name), self.failing_since.get(name)) {
            (Some(grace), Some(Some(since))) => now.saturating_duration_since(*since) < *grace,
            _ => false,
        }
    }

    fn ready(&self, now: Instant) -> bool {
        !self.shutting_down && self.checks.iter().all(|(name, c)| c.ok || self.tolerated(name, now))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ready: bool,
    pub shutting_down: bool,
    pub checks: BTreeMap<&'static str, CheckState>,
}

#[derive(Debug, Clone)]
pub struct Readiness {
    state: Arc<Mutex<State>>,
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self { state: Arc::default(), tx: Arc::new(tx) }
    }

    /// Declares a check; it starts failing with "starting".
    pub fn register(&self, name: &'static str) {
        self.update(Instant::now(), |s| {
            s.checks.entry(name).or_insert(CheckState { ok: false, detail: "starting".into(), tolerated: false });
        });
    }

    /// Once check `name` has passed, its failures keep the replica ready for `grace` (zero:
    /// never). The owner of the check must keep setting it while it fails (the runtime's
    /// checks do, every second), so readiness is recomputed as the grace runs out.
    pub fn set_grace(&self, name: &'static str, grace: Duration) {
        self.update(Instant::now(), |s| {
            s.grace.insert(name, grace);
        });
    }

    pub fn set(&self, name: &'static str, ok: bool, detail: impl Into<String>) {
        self.set_at(name, ok, detail.into(), Instant::now());
    }

    fn set_at(&self, name: &'static str, ok: bool, detail: String, now: Instant) {
        self.update(now, |s| {
            if s.grace.contains_key(name) {
                match (ok, s.failing_since.get(name)) {
                    (true, _) => {
                        s.failing_since.insert(name, None);
                    }
                    // Failing after having passed: the grace starts now (once).
                    (false, Some(None)) => {
                        s.failing_since.insert(name, Some(now));
                    }
                    (false, _) => {}
                }
            }
            if !ok {
                s.passing_since.remove(name);
            } else if !s.passing_since.contains_key(name) {
                s.passing_since.insert(name, now);
            }
            let tolerated = !ok && s.tolerated(name, now);
            s.checks.insert(name, CheckState { ok, detail, tolerated });
        });
    }

    pub fn set_shutting_down(&self) {
        self.update(Instant::now(), |s| s.shutting_down = true);
    }

    fn update(&self, now: Instant, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        let ready = s.ready(now);
        self.tx.send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    /// Since when check `name` has passed (`None`: it fails, or never ran).
    pub fn passing_since(&self, name: &str) -> Option<Instant> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.passing_since.get(name).copied()
    }

    pub fn is_ready(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn report(&self) -> Report {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Report { ready: s.ready(Instant::now()), shutting_down: s.shutting_down, checks: s.checks.clone() }
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes_and_not_stopping() {
        let r = Readiness::new();
        r.register("kafka");
        r.register("tenants");
        assert!(!r.is_ready());
        r.set("kafka", true, "ok");
        assert!(!r.is_ready());
        r.set("tenants", true, "3 tenants");
        assert!(r.is_ready());
        r.set("kafka", false, "broker down");
        assert!(!r.is_ready());
        assert_eq!(r.report().checks["kafka"].detail, "broker down");
        r.set("kafka", true, "ok");
        r.set_shutting_down();
        assert!(!r.is_ready());
    }

    #[test]
    fn a_check_with_a_grace_keeps_the_replica_ready_for_that_long_once_it_passed() {
        let r = Readiness::new();
        r.register("kafka");
        r.set_grace("kafka", Duration::from_secs(60));
        let t0 = Instant::now();
        // Never passed: no grace (a replica starting without its broker is not ready).
        r.set_at("kafka", false, "broker down".into(), t0);
        assert!(!r.is_ready());
        r.set_at("kafka", true, "ok".into(), t0);
        assert!(r.is_ready());
        // Fails: still ready, shown failing and tolerated, until the grace is over.
        r.set_at("kafka", false, "broker down".into(), t0 + Duration::from_secs(1));
        assert!(r.is_ready());
        let shown = &r.report().checks["kafka"];
        assert!(!shown.ok && shown.tolerated, "{shown:?}");
        r.set_at("kafka", false, "broker down".into(), t0 + Duration::from_secs(60));
        assert!(r.is_ready(), "the grace counts from the first failure");
        r.set_at("kafka", false, "broker down".into(), t0 + Duration::from_secs(61));
        assert!(!r.is_ready());
        assert!(!r.report().checks["kafka"].tolerated);
        // Back: ready, and a later failure has a whole grace again.
        r.set_at("kafka", true, "ok".into(), t0 + Duration::from_secs(70));
        assert!(r.is_ready());
        r.set_at("kafka", false, "broker down".into(), t0 + Duration::from_secs(100));
        assert!(r.is_ready());
        // A check without a grace still fails readiness at once.
        r.register("postgres");
        r.set_at("postgres", true, "ok".into(), t0 + Duration::from_secs(100));
        r.set_at("postgres", false, "down".into(), t0 + Duration::from_secs(101));
        assert!(!r.is_ready());
        assert_eq!(r.passing_since("kafka"), None);
        assert_eq!(r.passing_since("postgres"), None);
        r.set_at("kafka", true, "ok".into(), t0 + Duration::from_secs(110));
        r.set_at("kafka", true, "ok".into(), t0 + Duration::from_secs(115));
        assert_eq!(r.passing_since("kafka"), Some(t0 + Duration::from_secs(110)));
        // A zero grace is none.
        let z = Readiness::new();
        z.set_grace("kafka", Duration::ZERO);
        z.set("kafka", true, "ok");
        z.set("kafka", false, "down");
        assert!(!z.is_ready());
        let json = serde_json::to_string(&z.report()).expect("json");
        assert!(json.contains(r#""kafka":{"ok":false,"detail":"down"}"#), "{json}");
    }
}
