//! Prometheus metrics of the platform layer, declared in one place, so every name and label
//! of the layer can be read and reviewed together and none is registered twice.
//!
//! Names follow `centralita_<subsystem>_<name>_<unit>`; label values are bounded (reasons,
//! topics, outcomes, dependency names; never tenant ids or event ids). Services register
//! their own metrics into [`Metrics::registry`] under the same rules.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumedLabel {
    pub topic: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabel {
    pub dependency: &'static str,
}

/// Buckets of `centralita_bus_event_age_seconds`: a hop on the customer's path takes
/// milliseconds, a backlog or a replay seconds.
const EVENT_AGE_BUCKETS: [f64; 16] =
    [0.001, 0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.030, 0.050, 0.075, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug)]
pub struct Metrics {
    pub registry: Mutex<Registry>,
    auth_rejected: Family<ReasonLabel, Counter>,
    pub bus_published: Family<TopicLabel, Counter>,
    pub bus_consumed: Family<ConsumedLabel, Counter>,
    bus_event_age: Family<TopicLabel, Histogram, fn() -> Histogram>,
    pub tenants_known: Family<StatusLabel, Gauge>,
    pub dependency_up: Family<DependencyLabel, Gauge>,
    pub ready: Gauge,
    /// 1 while the shared API rate limiter cannot reach Redis and this replica counts tenant
    /// quotas alone (see `auth::ratelimit`); 0 otherwise, and always in a service without one.
    pub auth_rate_limiter_fallback: Gauge,
}

impl Metrics {
    pub fn new(service: &'static str) -> Self {
        use std::borrow::Cow;
        let mut registry = Registry::with_labels([(Cow::Borrowed("service"), Cow::Borrowed(service))].into_iter());
        let auth_rejected = Family::<ReasonLabel, Counter>::default();
        let bus_published = Family::<TopicLabel, Counter>::default();
        let bus_consumed = Family::<ConsumedLabel, Counter>::default();
        let bus_event_age: Family<TopicLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(EVENT_AGE_BUCKETS));
        let tenants_known = Family::<StatusLabel, Gauge>::default();
        let dependency_up = Family::<DependencyLabel, Gauge>::default();
        let ready = Gauge::default();
        let auth_rate_limiter_fallback = Gauge::default();
        let help = "gRPC calls refused by authentication, by reason";
        registry.register("centralita_auth_rejected_calls", help, auth_rejected.clone());
        registry.register(
            "centralita_bus_published_events",
            "Events published to Kafka, by topic",
            bus_published.clone(),
        );
        let help = "Events read from Kafka, by topic and outcome (handled, duplicate, malformed)";
        registry.register("centralita_bus_consumed_events", help, bus_consumed.clone());
        let help = "Age of a consumed event when its handling starts (from its occurred_at: the publisher's \
                    outbox, the broker and the fetch wait), by topic";
        registry.register("centralita_bus_event_age_seconds", help, bus_event_age.clone());
        let help = "Tenants in this replica's registry, by status";
        registry.register("centralita_tenants_known", help, tenants_known.clone());
        let help = "1 when a dependency answered its last check";
        registry.register("centralita_dependency_up", help, dependency_up.clone());
        registry.register("centralita_service_ready", "1 when this replica reports ready", ready.clone());
        let help = "1 while the shared API rate limiter cannot reach Redis and this replica counts tenant quotas \
                    alone (at most the quota per replica)";
        registry.register("centralita_auth_rate_limiter_fallback", help, auth_rate_limiter_fallback.clone());
        Self {
            registry: Mutex::new(registry),
            auth_rejected,
            bus_published,
            bus_consumed,
            bus_event_age,
            tenants_known,
            dependency_up,
            ready,
            auth_rate_limiter_fallback,
        }
    }

    pub fn auth_rejected(&self, reason: &'static str) {
        self.auth_rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Records how old an event of `topic` is as its handling starts.
    pub fn event_age(&self, topic: &str, occurred_at: chrono::DateTime<chrono::Utc>) {
        let age = (chrono::Utc::now() - occurred_at).num_microseconds().unwrap_or(i64::MAX).max(0);
        self.bus_event_age.get_or_create(&TopicLabel { topic: topic.to_owned() }).observe(age as f64 / 1e6);
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_the_convention() {
        let m = Metrics::new("sessions");
        m.auth_rejected("TOKEN_EXPIRED");
        m.ready.set(1);
        let text = m.encode();
        assert!(
            text.contains("centralita_auth_rejected_calls_total{service=\"sessions\",reason=\"TOKEN_EXPIRED\"} 1"),
            "{text}"
        );
        assert!(text.contains("centralita_service_ready{service=\"sessions\"} 1"), "{text}");
        assert!(text.contains("centralita_auth_rate_limiter_fallback{service=\"sessions\"} 0"), "{text}");
    }

    #[test]
    fn event_ages_fall_in_their_buckets() {
        let m = Metrics::new("routing");
        let now = chrono::Utc::now();
        m.event_age("p.routing.inputs", now - chrono::Duration::milliseconds(12));
        m.event_age("p.routing.inputs", now - chrono::Duration::seconds(3));
        // A clock step backwards counts as no age, not a negative one.
        m.event_age("p.routing.inputs", now + chrono::Duration::seconds(1));
        let text = m.encode();
        let line = |le: &str| {
            let want = format!(
                "centralita_bus_event_age_seconds_bucket{{service=\"routing\",le=\"{le}\",topic=\"p.routing.inputs\"}}"
            );
            text.lines().find(|l| l.starts_with(&want)).map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
        };
        assert_eq!(line("0.001").as_deref(), Some("1"), "{text}");
        assert_eq!(line("0.01").as_deref(), Some("1"), "{text}");
        assert_eq!(line("0.015").as_deref(), Some("2"), "{text}");
        assert_eq!(line("1.0").as_deref(), Some("2"), "{text}");
        assert_eq!(line("5.0").as_deref(), Some("3"), "{text}");
    }
}
