//! Readiness: each dependency a service needs (Kafka, PostgreSQL, Redis, the tenant set)
//! is a named check; the replica is ready when every check passes and it is not shutting
//! down. The state is mirrored into gRPC health (`grpc.health.v1`) and `/readyz`.
//!
//! Checks are set by the tasks that own each dependency, which keep retrying with backoff,
//! so a service started while a dependency is down reports not-ready and recovers by itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckState {
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Default)]
struct State {
    checks: BTreeMap<&'static str, CheckState>,
    shutting_down: bool,
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
        self.update(|s| {
            s.checks.entry(name).or_insert(CheckState { ok: false, detail: "starting".into() });
        });
    }

    pub fn set(&self, name: &'static str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        self.update(|s| {
            s.checks.insert(name, CheckState { ok, detail });
        });
    }

    pub fn set_shutting_down(&self) {
        self.update(|s| s.shutting_down = true);
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        let ready = !s.shutting_down && s.checks.values().all(|c| c.ok);
        self.tx.send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    pub fn is_ready(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn report(&self) -> Report {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Report {
            ready: !s.shutting_down && s.checks.values().all(|c| c.ok),
            shutting_down: s.shutting_down,
            checks: s.checks.clone(),
        }
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
}
