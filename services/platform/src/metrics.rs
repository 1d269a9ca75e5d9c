//! Prometheus metrics of the platform layer, declared in one place (STYLE.md §10).
//!
//! Names follow `centralita_<subsystem>_<name>_<unit>`; label values are bounded (reasons,
//! topics, outcomes, dependency names; never tenant ids or event ids). Services register
//! their own metrics into [`Metrics::registry`] under the same rules.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

#[derive(Debug)]
pub struct Metrics {
    pub registry: Mutex<Registry>,
    auth_rejected: Family<ReasonLabel, Counter>,
    pub bus_published: Family<TopicLabel, Counter>,
    pub bus_consumed: Family<ConsumedLabel, Counter>,
    pub tenants_known: Family<StatusLabel, Gauge>,
    pub dependency_up: Family<DependencyLabel, Gauge>,
    pub ready: Gauge,
}

impl Metrics {
    pub fn new(service: &'static str) -> Self {
        let mut registry = Registry::with_labels(
            [(std::borrow::Cow::Borrowed("service"), std::borrow::Cow::Borrowed(service))].into_iter(),
        );
        let m = Self {
            auth_rejected: Family::default(),
            bus_published: Family::default(),
            bus_consumed: Family::default(),
            tenants_known: Family::default(),
            dependency_up: Family::default(),
            ready: Gauge::default(),
            registry: Mutex::new(Registry::default()),
        };
        registry.register(
            "centralita_auth_rejected_calls",
            "gRPC calls refused by authentication, by reason",
            m.auth_rejected.clone(),
        );
        registry.register(
            "centralita_bus_published_events",
            "Events published to Kafka, by topic",
            m.bus_published.clone(),
        );
        registry.register(
            "centralita_bus_consumed_events",
            "Events read from Kafka, by topic and outcome (handled, duplicate, malformed)",
            m.bus_consumed.clone(),
        );
        registry.register(
            "centralita_tenants_known",
            "Tenants in this replica's registry, by status",
            m.tenants_known.clone(),
        );
        registry.register(
            "centralita_dependency_up",
            "1 when a dependency answered its last check",
            m.dependency_up.clone(),
        );
        registry.register("centralita_service_ready", "1 when this replica reports ready", m.ready.clone());
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
        m
    }

    pub fn auth_rejected(&self, reason: &'static str) {
        self.auth_rejected.get_or_create(&ReasonLabel { reason }).inc();
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
    }
}
