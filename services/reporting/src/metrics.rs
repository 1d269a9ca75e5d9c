//! Reporting's domain metrics, declared in one place and registered into the runtime's
//! registry beside the platform's (which already has each consumed event's age,
//! `centralita_bus_event_age_seconds`). Names follow `centralita_reporting_<name>_<unit>`;
//! label values are bounded (outcomes and leg roles; never tenant, queue, contact or agent
//! ids).
//!
//! Recorded once the transaction that did the thing has committed: by the consumers'
//! handlers ([`crate::store::ContactEvents`], [`crate::store::AgentEvents`]) from what the
//! store reports it changed, by the wallboard stream and by the usage publisher. The pure
//! [`core`](crate::core) records nothing.

use centralita_platform::metrics::Metrics as Platform;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use crate::core::{Outcome, Role};
use crate::store::Folded;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

/// A tenant's queue. Unlike the platform's other labels these carry tenant ids: tenants and
/// their queues are configuration (a manifest each, applied by an operator), not caller
/// input, so their number is bounded by what the BPO onboards; one series per queue is what
/// lets an SRE see and alert on each tenant's service level against its contract.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct QueueLabel {
    pub tenant: String,
    pub queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentStateLabel {
    tenant: String,
    queue: String,
    state: &'static str,
}

/// The real-time figures of one queue the floor gauges show (see [`Metrics::floor`]).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueFloor {
    /// The rolling 15 minutes' service level by the queue's definition; none when nothing was judged.
    pub service_level_percent: Option<f64>,
    /// The contracted target: the queue's, else the tenant's.
    pub target_percent: f64,
    pub waiting: u64,
    pub longest_wait_ms: i64,
    /// Agents serving the queue: available, busy, away, offline.
    pub agents: [u32; 4],
}

const AGENT_STATES: [&str; 4] = ["available", "busy", "away", "offline"];

/// Buckets of `centralita_reporting_contact_batch_events`: a quiet floor applies events one
/// or two at a time, a backlog or a replay up to the batch limit (1,000).
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

#[derive(Debug)]
pub struct Metrics {
    contacts: Family<OutcomeLabel, Counter>,
    legs: Family<RoleLabel, Counter>,
    batch_events: Histogram,
    agent_events: Counter,
    wallboards: Gauge,
    usage_records: Counter,
    service_level: Family<QueueLabel, Gauge<f64, AtomicU64>>,
    target: Family<QueueLabel, Gauge<f64, AtomicU64>>,
    waiting: Family<QueueLabel, Gauge>,
    longest_wait: Family<QueueLabel, Gauge<f64, AtomicU64>>,
    agents: Family<AgentStateLabel, Gauge>,
    retention_contacts: Counter,
    retention_legs: Counter,
    retention_failures: Counter,
    erasure_contacts: Counter,
    erasure_legs: Counter,
    /// The queues the gauges above hold, so a queue or tenant that is gone is removed.
    floor_queues: Mutex<BTreeSet<QueueLabel>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            contacts: Family::default(),
            legs: Family::default(),
            batch_events: Histogram::new(BATCH_BUCKETS),
            agent_events: Counter::default(),
            wallboards: Gauge::default(),
            usage_records: Counter::default(),
            service_level: Family::default(),
            target: Family::default(),
            waiting: Family::default(),
            longest_wait: Family::default(),
            agents: Family::default(),
            retention_contacts: Counter::default(),
            retention_legs: Counter::default(),
            retention_failures: Counter::default(),
            erasure_contacts: Counter::default(),
            erasure_legs: Counter::default(),
            floor_queues: Mutex::default(),
        }
    }
}

/// The label of how a leg left its queue (`Waiting` is not a way out and never recorded).
fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Waiting => "waiting",
        Outcome::Answered => "answered",
        Outcome::Abandoned => "abandoned",
        Outcome::Overflowed => "overflowed",
        Outcome::TimedOut => "timed_out",
        Outcome::TransferredWaiting => "transferred_waiting",
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Customer => "customer",
        Role::HandedOver => "handed_over",
        Role::Consult => "consult",
    }
}

impl Metrics {
    /// Declares the metrics in the runtime's registry.
    pub fn register(platform: &Platform) -> Self {
        let m = Metrics::default();
        let mut r = platform.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "centralita_reporting_contacts_recorded",
            "Customers' queue legs recorded as they left the queue, by outcome (answered, abandoned, overflowed, \
             timed_out, transferred_waiting)",
            m.contacts.clone(),
        );
        r.register(
            "centralita_reporting_legs_written",
            "Legs (the rows every figure is computed from) created or changed, by role (customer, handed_over, \
             consult)",
            m.legs.clone(),
        );
        r.register(
            "centralita_reporting_contact_batch_events",
            "New contact events applied per batch (one transaction)",
            m.batch_events.clone(),
        );
        r.register(
            "centralita_reporting_agent_events_applied",
            "Agent events folded into state spans (new ones; duplicates are not counted)",
            m.agent_events.clone(),
        );
        r.register(
            "centralita_reporting_wallboard_subscribers",
            "Wallboard streams (StreamRealtimeMetrics) open on this replica",
            m.wallboards.clone(),
        );
        r.register(
            "centralita_reporting_usage_records_published",
            "Daily usage records published on the usage topic",
            m.usage_records.clone(),
        );
        r.register(
            "centralita_reporting_service_level_percent",
            "Each tenant queue's service level over the last 15 minutes, by the queue's definition, as the last \
             floor pass computed (no series while nothing was judged)",
            m.service_level.clone(),
        );
        r.register(
            "centralita_reporting_service_level_target_percent",
            "Each tenant queue's contracted service-level target (the queue's, else the tenant's)",
            m.target.clone(),
        );
        r.register(
            "centralita_reporting_waiting_contacts",
            "Customers waiting in each tenant queue (offered ones included), as the last floor pass counted",
            m.waiting.clone(),
        );
        r.register(
            "centralita_reporting_longest_wait_seconds",
            "Age of the oldest customer waiting in each tenant queue, as the last floor pass saw",
            m.longest_wait.clone(),
        );
        r.register(
            "centralita_reporting_agents",
            "Agents serving each tenant queue, by what they do now (available, busy, away, offline)",
            m.agents.clone(),
        );
        r.register(
            "centralita_reporting_retention_contacts_anonymised",
            "Contacts whose legs the retention sweeper anonymised (older than the tenant's dataRetentionDays: \
             the contact id replaced, the figures kept)",
            m.retention_contacts.clone(),
        );
        r.register(
            "centralita_reporting_retention_legs_anonymised",
            "Legs the retention sweeper anonymised",
            m.retention_legs.clone(),
        );
        r.register(
            "centralita_reporting_retention_failures",
            "Retention sweeps that failed (retried at the next interval)",
            m.retention_failures.clone(),
        );
        r.register(
            "centralita_reporting_erasure_contacts_anonymised",
            "Contacts whose legs a customer's erasure anonymised (the contact id replaced, the figures kept)",
            m.erasure_contacts.clone(),
        );
        r.register(
            "centralita_reporting_erasure_legs_anonymised",
            "Legs a customer's erasure anonymised",
            m.erasure_legs.clone(),
        );
        drop(r);
        m
    }

    /// What a retention batch anonymised, once committed.
    pub fn anonymised(&self, contacts: u64, legs: u64) {
        self.retention_contacts.inc_by(contacts);
        self.retention_legs.inc_by(legs);
    }

    /// What a customer's erasure anonymised, once committed.
    pub fn erased(&self, contacts: u64, legs: u64) {
        self.erasure_contacts.inc_by(contacts);
        self.erasure_legs.inc_by(legs);
    }

    pub fn retention_failed(&self) {
        self.retention_failures.inc();
    }

    /// What one committed batch of contact events changed.
    pub fn folded(&self, f: &Folded) {
        if f.events > 0 {
            self.batch_events.observe(f.events as f64);
        }
        for r in &f.legs_written {
            self.legs.get_or_create(&RoleLabel { role: role(*r) }).inc();
        }
        for o in f.left_queue.iter().filter(|o| **o != Outcome::Waiting) {
            self.contacts.get_or_create(&OutcomeLabel { outcome: outcome(*o) }).inc();
        }
    }

    pub fn agent_event_applied(&self) {
        self.agent_events.inc();
    }

    /// A wallboard stream opened; it counts until the guard is dropped.
    pub fn wallboard_opened(self: &std::sync::Arc<Self>) -> WallboardGuard {
        self.wallboards.inc();
        WallboardGuard(self.clone())
    }

    pub fn usage_record_published(&self) {
        self.usage_records.inc();
    }

    /// Sets the per-queue gauges from one pass over every tenant's real-time figures; the
    /// queues of the previous pass that are not in this one (a queue removed, a tenant
    /// offboarded) lose their series.
    pub fn floor(&self, queues: &BTreeMap<QueueLabel, QueueFloor>) {
        let mut known = self.floor_queues.lock().unwrap_or_else(|p| p.into_inner());
        for gone in known.iter().filter(|q| !queues.contains_key(*q)) {
            self.forget(gone);
        }
        for (q, f) in queues {
            match f.service_level_percent {
                Some(sl) => {
                    self.service_level.get_or_create(q).set(sl);
                }
                None => {
                    self.service_level.remove(q);
                }
            }
            self.target.get_or_create(q).set(f.target_percent);
            self.waiting.get_or_create(q).set(i64::try_from(f.waiting).unwrap_or(i64::MAX));
            self.longest_wait.get_or_create(q).set(f.longest_wait_ms as f64 / 1000.0);
            for (state, n) in AGENT_STATES.iter().zip(f.agents) {
                self.agents.get_or_create(&agent_state(q, state)).set(i64::from(n));
            }
        }
        *known = queues.keys().cloned().collect();
    }

    fn forget(&self, q: &QueueLabel) {
        self.service_level.remove(q);
        self.target.remove(q);
        self.waiting.remove(q);
        self.longest_wait.remove(q);
        for state in AGENT_STATES {
            self.agents.remove(&agent_state(q, state));
        }
    }
}

fn agent_state(q: &QueueLabel, state: &'static str) -> AgentStateLabel {
    AgentStateLabel { tenant: q.tenant.clone(), queue: q.queue.clone(), state }
}

/// Counts one open wallboard stream while it lives.
#[derive(Debug)]
pub struct WallboardGuard(std::sync::Arc<Metrics>);

impl Drop for WallboardGuard {
    fn drop(&mut self) {
        self.0.wallboards.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn sample(text: &str, name: &str, labels: &str) -> Option<String> {
        let want = format!("{name}{{service=\"reporting\"{labels}}} ");
        text.lines().find_map(|l| l.strip_prefix(want.as_str())).map(str::to_owned)
    }

    #[test]
    fn recorded_metrics_appear_in_the_registry_text_with_their_labels() {
        let platform = Platform::new("reporting");
        let m = Arc::new(Metrics::register(&platform));
        m.folded(&Folded {
            events: 3,
            legs_written: vec![Role::Customer, Role::Customer, Role::Consult],
            left_queue: vec![Outcome::Answered, Outcome::Abandoned, Outcome::Answered],
        });
        m.folded(&Folded { events: 0, legs_written: vec![], left_queue: vec![] });
        m.agent_event_applied();
        m.usage_record_published();
        let first = m.wallboard_opened();
        let second = m.wallboard_opened();
        drop(first);
        let text = platform.encode();
        let at = |name: &str, labels: &str| sample(&text, name, labels);
        assert_eq!(at("centralita_reporting_contacts_recorded_total", ",outcome=\"answered\"").as_deref(), Some("2"));
        assert_eq!(at("centralita_reporting_contacts_recorded_total", ",outcome=\"abandoned\"").as_deref(), Some("1"));
        assert_eq!(at("centralita_reporting_legs_written_total", ",role=\"customer\"").as_deref(), Some("2"));
        assert_eq!(at("centralita_reporting_legs_written_total", ",role=\"consult\"").as_deref(), Some("1"));
        // An empty batch (all duplicates) is not a batch size.
        assert_eq!(at("centralita_reporting_contact_batch_events_count", "").as_deref(), Some("1"));
        assert_eq!(at("centralita_reporting_contact_batch_events_sum", "").as_deref(), Some("3.0"));
        assert_eq!(at("centralita_reporting_agent_events_applied_total", "").as_deref(), Some("1"));
        assert_eq!(at("centralita_reporting_usage_records_published_total", "").as_deref(), Some("1"));
        assert_eq!(at("centralita_reporting_wallboard_subscribers", "").as_deref(), Some("1"));
        drop(second);
        assert_eq!(sample(&platform.encode(), "centralita_reporting_wallboard_subscribers", "").as_deref(), Some("0"));
    }
}
