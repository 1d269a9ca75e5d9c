//! Sessions' domain metrics, declared in one place and registered into the runtime's
//! registry beside the platform's. Names follow `centralita_sessions_<name>_<unit>`; label
//! values are bounded (event kinds, channels, outcomes; never tenant, contact or agent ids).

use centralita_platform::metrics::Metrics as Platform;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::core::{Channel, Contact, ContactEventKind};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The reasons `crate::decisions` voids an offer for (`offer_voided`).
const VOID_REASONS: [&str; 3] = ["late", "agent_unavailable", "other_pool"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Default)]
pub struct Metrics {
    created: Family<ChannelLabel, Counter>,
    events: Family<KindLabel, Counter>,
    decisions: Family<DecisionLabel, Counter>,
    voided: Family<ReasonLabel, Counter>,
    outbox_pending: Gauge,
    outbox_oldest_ms: Gauge,
    agent_streams: Gauge,
    erased: Family<OutcomeLabel, Counter>,
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

/// The event kind's label (the protobuf enum's name, lower case).
pub fn kind(k: ContactEventKind) -> &'static str {
    use ContactEventKind as K;
    match k {
        K::Queued => "queued",
        K::Offered => "offered",
        K::Accepted => "accepted",
        K::Rejected => "rejected",
        K::NotAnswered => "not_answered",
        K::Held => "held",
        K::Resumed => "resumed",
        K::RecordingPaused => "recording_paused",
        K::RecordingResumed => "recording_resumed",
        K::Transferred => "transferred",
        K::Ended => "ended",
        K::WrappedUp => "wrapped_up",
        K::Abandoned => "abandoned",
        K::Overflowed => "overflowed",
        K::TimedOut => "timed_out",
        K::ConsultStarted => "consult_started",
        K::Conferenced => "conferenced",
        K::ConsultEnded => "consult_ended",
        K::HandedOver => "handed_over",
        K::ConsultClosed => "consult_closed",
        K::MonitorStarted => "monitor_started",
        K::MonitorChanged => "monitor_changed",
        K::MonitorStopped => "monitor_stopped",
    }
}

impl Metrics {
    /// Declares the metrics in the runtime's registry.
    pub fn register(platform: &Platform) -> Self {
        let m = Metrics::default();
        let mut r = platform.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register("centralita_sessions_contacts_created", "Contacts created, by channel", m.created.clone());
        r.register(
            "centralita_sessions_contact_events",
            "Contact lifecycle events written (offered, accepted, rejected, not_answered = RONA, abandoned, …), by kind",
            m.events.clone(),
        );
        r.register(
            "centralita_sessions_routing_decisions",
            "Routing decisions taken, by kind (offer, overflow, timed_out) and outcome (applied, void, stale)",
            m.decisions.clone(),
        );
        r.register(
            "centralita_sessions_offers_voided",
            "Routing offers voided before reaching the agent, by reason (late, agent_unavailable, other_pool)",
            m.voided.clone(),
        );
        r.register(
            "centralita_sessions_outbox_pending_records",
            "Records whose side effects wait in their outbox, as the last sweep counted",
            m.outbox_pending.clone(),
        );
        r.register(
            "centralita_sessions_outbox_oldest_age_milliseconds",
            "How long the oldest pending outbox has waited, as the last sweep saw",
            m.outbox_oldest_ms.clone(),
        );
        r.register(
            "centralita_sessions_agent_streams",
            "Agent event streams open on this replica",
            m.agent_streams.clone(),
        );
        r.register(
            "centralita_sessions_erased_contacts",
            "Contacts named by CRM erasures, by outcome (erased, clean = nothing personal left, gone = expired, skipped = another tenant's)",
            m.erased.clone(),
        );
        drop(r);
        // Every reason is exported from the start (at 0), so a dashboard shows none voided
        // rather than no data, and the chart's check against /metrics finds the family.
        for reason in VOID_REASONS {
            m.voided.get_or_create(&ReasonLabel { reason }).inc_by(0);
        }
        m
    }

    pub fn contact_created(&self, c: &Contact) {
        self.created.get_or_create(&ChannelLabel { channel: channel(c.channel) }).inc();
        self.event(ContactEventKind::Queued);
    }

    pub fn event(&self, k: ContactEventKind) {
        self.events.get_or_create(&KindLabel { kind: kind(k) }).inc();
    }

    pub fn decision(&self, kind: &'static str, outcome: &'static str) {
        self.decisions.get_or_create(&DecisionLabel { kind, outcome }).inc();
    }

    pub fn offer_voided(&self, reason: &'static str) {
        self.voided.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn outbox(&self, pending: i64, oldest_ms: i64) {
        self.outbox_pending.set(pending);
        self.outbox_oldest_ms.set(oldest_ms);
    }

    pub fn stream_opened(&self) {
        self.agent_streams.inc();
    }

    pub fn stream_closed(&self) {
        self.agent_streams.dec();
    }

    pub fn erased_contacts(&self, outcome: &'static str, n: usize) {
        if n > 0 {
            self.erased.get_or_create(&OutcomeLabel { outcome }).inc_by(n as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_metrics_read_back_from_the_exposition() {
        let platform = Platform::new("sessions");
        let m = Metrics::register(&platform);
        m.event(ContactEventKind::NotAnswered);
        m.event(ContactEventKind::NotAnswered);
        m.decision("offer", "void");
        m.offer_voided("late");
        m.outbox(3, 1_500);
        m.stream_opened();
        m.erased_contacts("erased", 2);
        let text = platform.encode();
        for line in [
            "centralita_sessions_contact_events_total{service=\"sessions\",kind=\"not_answered\"} 2",
            "centralita_sessions_routing_decisions_total{service=\"sessions\",kind=\"offer\",outcome=\"void\"} 1",
            "centralita_sessions_offers_voided_total{service=\"sessions\",reason=\"late\"} 1",
            "centralita_sessions_offers_voided_total{service=\"sessions\",reason=\"other_pool\"} 0",
            "centralita_sessions_outbox_pending_records{service=\"sessions\"} 3",
            "centralita_sessions_outbox_oldest_age_milliseconds{service=\"sessions\"} 1500",
            "centralita_sessions_agent_streams{service=\"sessions\"} 1",
            "centralita_sessions_erased_contacts_total{service=\"sessions\",outcome=\"erased\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
