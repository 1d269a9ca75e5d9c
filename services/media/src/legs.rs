//! Leg events on Kafka: what happens to each leg of a voice call (created, ringing,
//! answered, held, resumed, a DTMF digit, ended with its cause) as a
//! `centralita.media.v1.LegEvent` in the platform's envelope, on `<prefix>media.legs`, keyed
//! by the contact's id so one call's events stay in order on one partition.
//!
//! The call never waits for the bus: a call hands its events to a bounded queue
//! ([`QUEUE`]) with `try_send`; one task publishes them in that order through the platform's
//! idempotent producer, with at most [`IN_FLIGHT`] awaiting the broker's acknowledgement.
//! What does not fit in the queue is dropped, what the producer refuses or fails to deliver
//! is lost; each counted (`centralita_media_leg_events_total{outcome}`) and the event's
//! `sequence` (1, 2, 3… per call) shows a consumer the gap. Nothing is retried beyond the
//! producer's own retries: a voice role has no store to keep events in (digital's outbox is
//! in PostgreSQL, which the voice role does not use).
//!
//! **DTMF digits are PCI-sensitive** (a card number, a PIN): a digit event carries the digit
//! for the IVR, but never while the call's recording is paused (the agent's PCI pause: the
//! event then says a digit was pressed, `withheld`, without it); digits are never logged,
//! and never reach the recording (the fork carries audio only).

use std::sync::Arc;

use centralita_platform::bus::{Event, Producer};
use centralita_platform::tenant::TenantId;
use centralita_proto::media::v1 as pb;
use futures::stream::{FuturesUnordered, StreamExt as _};
use tokio::sync::mpsc;

use crate::metrics::LegMetrics;

/// The topic's name after the installation's prefix.
pub const TOPIC_BASE: &str = "media.legs";
/// Events waiting to be handed to the producer, over all calls of the replica.
pub const QUEUE: usize = 4096;
/// Events handed to the producer and not yet acknowledged.
pub const IN_FLIGHT: usize = 1024;

pub use pb::{DtmfSource, EndCause, HoldOrigin, Leg};

/// Where the replica's calls hand their leg events.
#[derive(Debug, Clone)]
pub struct LegEvents {
    queue: mpsc::Sender<(String, Event)>,
    metrics: Arc<LegMetrics>,
}

impl LegEvents {
    /// The queue, and the task that publishes what it receives to `topic` (it ends once
    /// every [`LegEvents`] and [`CallEvents`] is dropped and what was queued is settled).
    pub fn start(
        producer: Producer,
        topic: String,
        metrics: Arc<LegMetrics>,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let task = publish(rx, producer, topic, metrics.clone());
        (Self { queue, metrics }, task)
    }

    /// A call's events, about contact `contact` (`tenants/{t}/contacts/{id}`) of `tenant`.
    pub fn call(&self, tenant: &TenantId, contact: &str) -> CallEvents {
        let key = contact.rsplit('/').next().unwrap_or(contact).to_owned();
        CallEvents {
            events: Some(self.clone()),
            tenant: tenant.clone(),
            contact: contact.to_owned(),
            key,
            sequence: 0,
            withhold_digits: false,
        }
    }
}

impl CallEvents {
    /// A call whose events go nowhere (no bus configured: tests of the front door).
    pub fn nowhere(tenant: &TenantId, contact: &str) -> Self {
        CallEvents {
            events: None,
            tenant: tenant.clone(),
            contact: contact.to_owned(),
            key: String::new(),
            sequence: 0,
            withhold_digits: false,
        }
    }
}

async fn publish(mut rx: mpsc::Receiver<(String, Event)>, producer: Producer, topic: String, metrics: Arc<LegMetrics>) {
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            Some(delivered) = in_flight.next(), if !in_flight.is_empty() => {
                let delivered: Result<(i32, i64), centralita_platform::error::Error> = delivered;
                match delivered {
                    Ok(_) => metrics.leg_event("published"),
                    Err(e) => {
                        tracing::warn!(error = %e, "a leg event was not delivered");
                        metrics.leg_event("failed");
                    }
                }
            }
            next = rx.recv(), if open && in_flight.len() < IN_FLIGHT => match next {
                // Handed over in the order received, so one call's events keep their order.
                Some((key, event)) => match producer.enqueue(&topic, &key, &event) {
                    Ok(delivery) => in_flight.push(delivery),
                    Err(e) => {
                        tracing::warn!(error = %e, "the producer refused a leg event");
                        metrics.leg_event("failed");
                    }
                },
                None => open = false,
            },
        }
    }
}

/// One call's leg events: numbered in the order the call emits them.
#[derive(Debug)]
pub struct CallEvents {
    events: Option<LegEvents>,
    tenant: TenantId,
    contact: String,
    /// The contact's id: the record key.
    key: String,
    sequence: u64,
    /// The call's recording is paused (PCI): digits are withheld.
    withhold_digits: bool,
}

impl CallEvents {
    /// Follows the contact's PCI pause: while paused, digit events carry no digit.
    pub fn set_recording_paused(&mut self, paused: bool) {
        self.withhold_digits = paused;
    }

    /// The event, numbered, as it is published (tests read it back from the queue).
    fn event(&mut self, leg: Leg, call_id: &str, agent: &str, kind: pb::leg_event::Kind) -> pb::LegEvent {
        self.sequence += 1;
        pb::LegEvent {
            contact: self.contact.clone(),
            leg: leg as i32,
            call_id: call_id.to_owned(),
            agent_id: if leg == Leg::Agent { agent.to_owned() } else { String::new() },
            sequence: self.sequence,
            kind: Some(kind),
        }
    }

    fn emit(&mut self, leg: Leg, call_id: &str, agent: &str, kind: pb::leg_event::Kind) {
        let payload = self.event(leg, call_id, agent, kind);
        let Some(events) = &self.events else { return };
        let event = Event::new(self.tenant.clone(), &payload);
        if events.queue.try_send((self.key.clone(), event)).is_err() {
            events.metrics.leg_event("dropped");
        }
    }

    pub fn created(&mut self, leg: Leg, call_id: &str, agent: &str) {
        self.emit(leg, call_id, agent, pb::leg_event::Kind::Created(pb::LegCreated {}));
    }

    pub fn ringing(&mut self, call_id: &str, agent: &str, sip_status: u16) {
        let kind = pb::leg_event::Kind::Ringing(pb::LegRinging { sip_status: u32::from(sip_status) });
        self.emit(Leg::Agent, call_id, agent, kind);
    }

    pub fn answered(&mut self, leg: Leg, call_id: &str, agent: &str) {
        self.emit(leg, call_id, agent, pb::leg_event::Kind::Answered(pb::LegAnswered {}));
    }

    /// The call went on hold (`on`) or off it, started from `leg`'s side.
    pub fn hold(&mut self, leg: Leg, call_id: &str, agent: &str, on: bool, origin: HoldOrigin) {
        let origin = origin as i32;
        let kind = if on {
            pb::leg_event::Kind::Held(pb::LegHeld { origin })
        } else {
            pb::leg_event::Kind::Resumed(pb::LegResumed { origin })
        };
        self.emit(leg, call_id, agent, kind);
    }

    /// A digit `leg`'s party pressed: withheld while the recording is paused (PCI).
    pub fn digit(&mut self, leg: Leg, call_id: &str, agent: &str, digit: char, source: DtmfSource) {
        let withheld = self.withhold_digits;
        let digit = if withheld { String::new() } else { digit.to_string() };
        let kind = pb::leg_event::Kind::Dtmf(pb::DtmfDigit { digit, source: source as i32, withheld });
        self.emit(leg, call_id, agent, kind);
    }

    pub fn ended(&mut self, leg: Leg, call_id: &str, agent: &str, cause: EndCause, sip_status: u16, detail: &str) {
        let kind = pb::leg_event::Kind::Ended(pb::LegEnded {
            cause: cause as i32,
            sip_status: u32::from(sip_status),
            detail: detail.to_owned(),
        });
        self.emit(leg, call_id, agent, kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centralita_platform::bus::EventPayload;

    fn queue(capacity: usize) -> (LegEvents, mpsc::Receiver<(String, Event)>) {
        let platform = centralita_platform::metrics::Metrics::new("media-test");
        let (queue, rx) = mpsc::channel(capacity);
        (LegEvents { queue, metrics: Arc::new(LegMetrics::register(&platform)) }, rx)
    }

    fn read(rx: &mut mpsc::Receiver<(String, Event)>) -> Vec<(String, pb::LegEvent)> {
        let mut out = Vec::new();
        while let Ok((key, event)) = rx.try_recv() {
            assert_eq!(event.type_name, pb::LegEvent::TYPE);
            assert_eq!(event.tenant.as_str(), "acme");
            out.push((key, event.payload::<pb::LegEvent>().expect("decodes")));
        }
        out
    }

    #[test]
    fn a_calls_events_are_numbered_keyed_by_contact_and_name_the_leg() {
        let (events, mut rx) = queue(16);
        let tenant = TenantId::parse("acme").expect("tenant");
        let mut call = events.call(&tenant, "tenants/acme/contacts/0193");
        call.created(Leg::Caller, "c1@trunk", "");
        call.created(Leg::Agent, "a1@media", "ana");
        call.ringing("a1@media", "ana", 180);
        call.answered(Leg::Agent, "a1@media", "ana");
        call.hold(Leg::Agent, "a1@media", "ana", true, HoldOrigin::Sip);
        call.hold(Leg::Agent, "a1@media", "ana", false, HoldOrigin::Contact);
        call.ended(Leg::Agent, "a1@media", "ana", EndCause::PeerBye, 0, "agent hung up");
        let got = read(&mut rx);
        assert_eq!(got.len(), 7);
        assert!(got.iter().all(|(k, e)| k == "0193" && e.contact == "tenants/acme/contacts/0193"));
        assert_eq!(got.iter().map(|(_, e)| e.sequence).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            (got[0].1.leg, got[0].1.agent_id.as_str()),
            (Leg::Caller as i32, ""),
            "no agent on the caller's leg"
        );
        assert_eq!((got[1].1.leg, got[1].1.agent_id.as_str()), (Leg::Agent as i32, "ana"));
        assert_eq!(got[2].1.kind, Some(pb::leg_event::Kind::Ringing(pb::LegRinging { sip_status: 180 })));
        assert_eq!(got[4].1.kind, Some(pb::leg_event::Kind::Held(pb::LegHeld { origin: HoldOrigin::Sip as i32 })));
        assert_eq!(
            got[5].1.kind,
            Some(pb::leg_event::Kind::Resumed(pb::LegResumed { origin: HoldOrigin::Contact as i32 }))
        );
        assert_eq!(
            got[6].1.kind,
            Some(pb::leg_event::Kind::Ended(pb::LegEnded {
                cause: EndCause::PeerBye as i32,
                sip_status: 0,
                detail: "agent hung up".into()
            }))
        );
    }

    #[test]
    fn digits_are_withheld_while_the_recording_is_paused() {
        let (events, mut rx) = queue(16);
        let mut call = events.call(&TenantId::parse("acme").expect("tenant"), "tenants/acme/contacts/1");
        call.digit(Leg::Caller, "c1", "", '4', DtmfSource::Rfc4733);
        call.set_recording_paused(true);
        call.digit(Leg::Caller, "c1", "", '5', DtmfSource::SipInfo);
        call.set_recording_paused(false);
        call.digit(Leg::Agent, "a1", "ana", '#', DtmfSource::SipInfo);
        let digits: Vec<pb::DtmfDigit> = read(&mut rx)
            .into_iter()
            .filter_map(|(_, e)| match e.kind {
                Some(pb::leg_event::Kind::Dtmf(d)) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(
            digits,
            [
                pb::DtmfDigit { digit: "4".into(), source: DtmfSource::Rfc4733 as i32, withheld: false },
                pb::DtmfDigit { digit: String::new(), source: DtmfSource::SipInfo as i32, withheld: true },
                pb::DtmfDigit { digit: "#".into(), source: DtmfSource::SipInfo as i32, withheld: false },
            ]
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (events, mut rx) = queue(2);
        let mut call = events.call(&TenantId::parse("acme").expect("tenant"), "tenants/acme/contacts/1");
        for _ in 0..5 {
            call.created(Leg::Caller, "c1", "");
        }
        assert_eq!(events.metrics.count("dropped"), 3);
        let got = read(&mut rx);
        assert_eq!(got.iter().map(|(_, e)| e.sequence).collect::<Vec<_>>(), [1, 2], "numbered even when dropped");
        // The next event after the gap keeps counting: a consumer sees 1, 2, 6.
        call.created(Leg::Caller, "c1", "");
        assert_eq!(read(&mut rx)[0].1.sequence, 6);
    }
}
