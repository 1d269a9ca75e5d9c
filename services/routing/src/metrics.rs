//! Routing's domain metrics, declared in one place and registered into the runtime's
//! registry beside the platform's. Names follow `centralita_routing_<name>_<unit>`; label
//! values are bounded (input and decision kinds, outcomes, channels; never tenant, queue,
//! contact or agent ids).
//!
//! The [`engine`](crate::engine) records them, never the pure [`core`](crate::core):
//! counters as each input is applied, gauges from the routers' state on every tick. Inputs
//! replayed after a takeover or a failed publish are counted again, as are the decisions
//! they re-emit (consumers drop those as duplicates by their ids).

use centralita_platform::metrics::Metrics as Platform;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::core::{Channel, Decision, Input, Router};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InputLabel {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: &'static str,
}

/// What became of one record of the routing input log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The core applied it (possibly taking decisions).
    Applied,
    /// The core refused it (`core::Rejected`) and nothing changed.
    Rejected,
    /// It could not be decoded into an [`Input`]; its kind is `unknown`.
    Malformed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Rejected => "rejected",
            Outcome::Malformed => "malformed",
        }
    }
}

/// The kind label of a record that could not be decoded.
pub const UNKNOWN_KIND: &str = "unknown";

/// An input's kind label (its variant's name, snake case).
pub fn input_kind(input: &Input) -> &'static str {
    match input {
        Input::AgentUpserted(_) => "agent_upserted",
        Input::AgentReady { .. } => "agent_ready",
        Input::AgentNotReady { .. } => "agent_not_ready",
        Input::ContactQueued(_) => "contact_queued",
        Input::ContactWithdrawn { .. } => "contact_withdrawn",
        Input::OfferAccepted { .. } => "offer_accepted",
        Input::OfferDeclined { .. } => "offer_declined",
        Input::OfferUndelivered { .. } => "offer_undelivered",
        Input::ContactReleased { .. } => "contact_released",
        Input::BookingMoved { .. } => "booking_moved",
        Input::Tick => "tick",
    }
}

/// A decision's kind label.
pub fn decision_kind(decision: &Decision) -> &'static str {
    match decision {
        Decision::Offer { .. } => "offer",
        Decision::Overflow { .. } => "overflow",
        Decision::TimedOut { .. } => "timed_out",
    }
}

fn channel(c: Channel) -> &'static str {
    match c {
        Channel::Voice => "voice",
        Channel::Chat => "chat",
        Channel::Sms => "sms",
        Channel::Email => "email",
        Channel::Social => "social",
        Channel::Task => "task",
    }
}

/// Routing's metrics. `Metrics::default()` records into families no registry exposes
/// (for tests that do not read them).
#[derive(Debug, Default)]
pub struct Metrics {
    decisions: Family<KindLabel, Counter>,
    inputs: Family<InputLabel, Counter>,
    queued: Family<ChannelLabel, Gauge>,
    ready_agents: Gauge,
    partitions: Gauge,
    snapshots: Counter,
}

impl Metrics {
    /// Declares the metrics in the runtime's registry.
    pub fn register(platform: &Platform) -> Self {
        let m = Metrics::default();
        let mut r = platform.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "centralita_routing_decisions",
            "Routing decisions taken, by kind (offer, overflow, timed_out)",
            m.decisions.clone(),
        );
        r.register(
            "centralita_routing_inputs",
            "Routing log records applied, by input kind (contact_queued, offer_accepted, tick, …) and outcome \
             (applied, rejected by the core, malformed)",
            m.inputs.clone(),
        );
        r.register(
            "centralita_routing_queued_contacts",
            "Contacts waiting for an offer in this replica's routers, by channel, as the last tick counted",
            m.queued.clone(),
        );
        r.register(
            "centralita_routing_ready_agents",
            "Agents taking new offers in this replica's routers, as the last tick counted",
            m.ready_agents.clone(),
        );
        r.register(
            "centralita_routing_owned_partitions",
            "Partitions of the routing input log (agent pools) this replica routes, as the last tick counted",
            m.partitions.clone(),
        );
        r.register("centralita_routing_snapshots_written", "Partition snapshots written to Redis", m.snapshots.clone());
        drop(r);
        m
    }

    /// One input record handled; `kind` is [`input_kind`] or [`UNKNOWN_KIND`].
    pub fn input(&self, kind: &'static str, outcome: Outcome) {
        self.inputs.get_or_create(&InputLabel { kind, outcome: outcome.label() }).inc();
    }

    pub fn decision(&self, decision: &Decision) {
        self.decisions.get_or_create(&KindLabel { kind: decision_kind(decision) }).inc();
    }

    pub fn snapshot_written(&self) {
        self.snapshots.inc();
    }

    /// Sets the gauges from the routers this replica owns, one per partition. Every channel
    /// is set, so one whose queues emptied reads 0 rather than its last count.
    pub fn observe<'a>(&self, routers: impl IntoIterator<Item = &'a Router>) {
        let (mut partitions, mut ready) = (0, 0);
        let mut queued = [0usize; Channel::ALL.len()];
        for router in routers {
            partitions += 1;
            ready += router.ready_agents();
            for (c, n) in router.waiting_by_channel() {
                if let Some(i) = Channel::ALL.iter().position(|x| *x == c) {
                    queued[i] += n;
                }
            }
        }
        for (c, n) in Channel::ALL.iter().zip(queued) {
            self.queued.get_or_create(&ChannelLabel { channel: channel(*c) }).set(gauge(n));
        }
        self.ready_agents.set(gauge(ready));
        self.partitions.set(gauge(partitions));
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{AgentId, AgentProfile, CapacityProfile, ContactId, QueueRef, QueuedContact};

    /// The value of the sample line starting with `series` (name and labels).
    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    fn contact(id: &str, queue: &QueueRef, channel: Channel) -> QueuedContact {
        QueuedContact {
            id: ContactId::from(id),
            queue: queue.clone(),
            channel,
            priority: 0,
            aging_per_minute: 0,
            enqueued_at: 0,
            steps: Vec::new(),
            preferred: None,
            offer_timeout_ms: 30_000,
            max_wait: None,
            excluded: Vec::new(),
        }
    }

    #[test]
    fn recorded_metrics_read_back_from_the_exposition() {
        let platform = Platform::new("routing");
        let m = Metrics::register(&platform);
        let sales = QueueRef::new("acme", "sales");
        let offer = Decision::Offer {
            contact: ContactId::from("c1"),
            agent: AgentId::from("a"),
            queue: sales.clone(),
            channel: Channel::Chat,
            expires_at: 30_000,
        };
        m.decision(&offer);
        m.decision(&offer);
        m.decision(&Decision::TimedOut { contact: ContactId::from("c2"), queue: sales.clone() });
        m.input(input_kind(&Input::ContactQueued(contact("c1", &sales, Channel::Chat))), Outcome::Applied);
        m.input(input_kind(&Input::Tick), Outcome::Applied);
        m.input(input_kind(&Input::OfferAccepted { contact: "c9".into(), agent: "a".into() }), Outcome::Rejected);
        m.input(UNKNOWN_KIND, Outcome::Malformed);
        m.snapshot_written();

        // Two pools: one with a ready agent and two waiting contacts, one empty.
        let mut pool = Router::new();
        let profile = AgentProfile {
            id: AgentId::from("a"),
            queues: [sales.clone()].into(),
            skills: Default::default(),
            languages: Default::default(),
            capacity: CapacityProfile { limits: [(Channel::Voice, 1)].into(), ..Default::default() },
            phoneless_tenants: Default::default(),
        };
        let inputs = [
            Input::AgentUpserted(profile),
            Input::AgentReady { agent: AgentId::from("a") },
            Input::ContactQueued(contact("c1", &sales, Channel::Chat)),
            Input::ContactQueued(contact("c2", &sales, Channel::Email)),
        ];
        for input in inputs {
            assert_eq!(pool.apply(0, input), Ok(vec![]));
        }
        m.observe([&pool, &Router::new()]);

        let text = platform.encode();
        let expect = [
            (r#"centralita_routing_decisions_total{service="routing",kind="offer"}"#, "2"),
            (r#"centralita_routing_decisions_total{service="routing",kind="timed_out"}"#, "1"),
            (r#"centralita_routing_inputs_total{service="routing",kind="contact_queued",outcome="applied"}"#, "1"),
            (r#"centralita_routing_inputs_total{service="routing",kind="tick",outcome="applied"}"#, "1"),
            (r#"centralita_routing_inputs_total{service="routing",kind="offer_accepted",outcome="rejected"}"#, "1"),
            (r#"centralita_routing_inputs_total{service="routing",kind="unknown",outcome="malformed"}"#, "1"),
            (r#"centralita_routing_snapshots_written_total{service="routing"}"#, "1"),
            (r#"centralita_routing_queued_contacts{service="routing",channel="chat"}"#, "1"),
            (r#"centralita_routing_queued_contacts{service="routing",channel="email"}"#, "1"),
            (r#"centralita_routing_queued_contacts{service="routing",channel="voice"}"#, "0"),
            (r#"centralita_routing_ready_agents{service="routing"}"#, "1"),
            (r#"centralita_routing_owned_partitions{service="routing"}"#, "2"),
        ];
        for (series, value) in expect {
            assert_eq!(sample(&text, series).as_deref(), Some(value), "{series} in\n{text}");
        }
        assert!(sample(&text, r#"centralita_routing_decisions_total{service="routing",kind="overflow"}"#).is_none());

        // Queues that empty read 0, not their last count.
        m.observe(std::iter::empty());
        let text = platform.encode();
        for series in [
            r#"centralita_routing_queued_contacts{service="routing",channel="chat"}"#,
            r#"centralita_routing_ready_agents{service="routing"}"#,
            r#"centralita_routing_owned_partitions{service="routing"}"#,
        ] {
            assert_eq!(sample(&text, series).as_deref(), Some("0"), "{series} in\n{text}");
        }
    }
}
