//! The protobuf form of the routing types (`centralita.routing.v1`): `From` a domain type
//! to its message, `TryFrom` a message back. Decoding validates: a record that does not
//! convert is reported, never applied half-way.
//!
//! Channels, instants and spans are not a type pair of their own (a channel travels as the
//! `i32` of `centralita.tenancy.v1.Channel`, an instant as a `google.protobuf.Timestamp`, a
//! span as a `google.protobuf.Duration`), so they convert with the plain functions here.
//!
//! The spans of a queued contact (offer timeout, maximum wait, step starts) travel twice:
//! as a `Duration` and as the deprecated integer milliseconds they replaced. Records
//! written before the `Duration` fields existed are still on the input log (and replayed
//! after a takeover), and an older reader may still be running during a rollout, so
//! writers set both and readers take the `Duration` when it is set, the milliseconds
//! otherwise.

use std::collections::{BTreeMap, BTreeSet};

use centralita_proto::routing::v1 as pb;
use centralita_proto::tenancy::v1::Channel as PbChannel;

use crate::model::{
    AgentId, AgentProfile, CapacityProfile, Channel, ContactId, Decision, Input, MaxWait, Millis, QueueRef,
    QueuedContact, Requirement, Step,
};

/// Why a routing message does not convert to the domain types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown channel {0}")]
    UnknownChannel(i32),
    #[error("proficiency {0} is out of range")]
    Proficiency(u32),
    #[error("queue needs a tenant and a queue id")]
    IncompleteQueue,
    /// A required field is not set.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A `oneof` has no case set.
    #[error("empty {0}")]
    Empty(&'static str),
    /// A `google.protobuf.Duration` that breaks its own rules.
    #[error("{0} is not a well-formed duration")]
    Duration(&'static str),
}

pub fn channel_to_pb(c: Channel) -> PbChannel {
    match c {
        Channel::Voice => PbChannel::Voice,
        Channel::Chat => PbChannel::Chat,
        Channel::Sms => PbChannel::Sms,
        Channel::Email => PbChannel::Email,
        Channel::Social => PbChannel::Social,
        Channel::Task => PbChannel::Task,
    }
}

pub fn channel_from_pb(c: i32) -> Result<Channel, WireError> {
    Ok(match PbChannel::try_from(c) {
        Ok(PbChannel::Voice) => Channel::Voice,
        Ok(PbChannel::Chat) => Channel::Chat,
        Ok(PbChannel::Sms) => Channel::Sms,
        Ok(PbChannel::Email) => Channel::Email,
        Ok(PbChannel::Social) => Channel::Social,
        Ok(PbChannel::Task) => Channel::Task,
        _ => return Err(WireError::UnknownChannel(c)),
    })
}

pub fn millis_to_pb(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn millis_from_pb(t: &prost_types::Timestamp) -> Millis {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos / 1_000_000))
}

/// Milliseconds as a `google.protobuf.Duration` (seconds and nanos of the same sign).
pub fn duration_to_pb(ms: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// Longest span a `google.protobuf.Duration` may hold, about 10,000 years.
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;

/// A `google.protobuf.Duration` in whole milliseconds (any finer part dropped). One that
/// breaks the Duration rules (beyond about 10,000 years, nanos beyond a second or of the
/// other sign than the seconds) is refused, naming `field`. A negative span is well formed:
/// like one in the deprecated milliseconds fields, it is the core's to refuse.
pub fn duration_from_pb(d: &prost_types::Duration, field: &'static str) -> Result<i64, WireError> {
    let opposite_signs = (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0);
    if d.seconds.unsigned_abs() > MAX_DURATION_SECONDS || d.nanos.unsigned_abs() >= 1_000_000_000 || opposite_signs {
        return Err(WireError::Duration(field));
    }
    Ok(d.seconds * 1000 + i64::from(d.nanos / 1_000_000))
}

/// The span of a `Duration` field when it is set, else of the deprecated milliseconds field
/// it replaced (a record written before the `Duration` existed).
fn span(d: Option<&prost_types::Duration>, deprecated_ms: i64, field: &'static str) -> Result<i64, WireError> {
    d.map_or(Ok(deprecated_ms), |d| duration_from_pb(d, field))
}

fn proficiency(v: u32) -> Result<u8, WireError> {
    u8::try_from(v).map_err(|_| WireError::Proficiency(v))
}

impl From<&QueueRef> for pb::QueueRef {
    fn from(q: &QueueRef) -> Self {
        pb::QueueRef { tenant: q.tenant.clone(), queue: q.queue.clone() }
    }
}

impl TryFrom<pb::QueueRef> for QueueRef {
    type Error = WireError;

    fn try_from(q: pb::QueueRef) -> Result<Self, WireError> {
        if q.tenant.is_empty() || q.queue.is_empty() {
            return Err(WireError::IncompleteQueue);
        }
        Ok(QueueRef { tenant: q.tenant, queue: q.queue })
    }
}

/// A queue a message must carry.
fn required_queue(q: Option<pb::QueueRef>) -> Result<QueueRef, WireError> {
    q.ok_or(WireError::Missing("queue"))?.try_into()
}

impl From<&AgentProfile> for pb::AgentProfile {
    fn from(p: &AgentProfile) -> Self {
        pb::AgentProfile {
            agent_id: p.id.0.clone(),
            queues: p.queues.iter().map(pb::QueueRef::from).collect(),
            skills: p.skills.iter().map(|(k, v)| (k.clone(), u32::from(*v))).collect(),
            languages: p.languages.iter().cloned().collect(),
            capacity: p
                .capacity
                .limits
                .iter()
                .map(|(c, n)| pb::CapacityLimit {
                    channel: channel_to_pb(*c) as i32,
                    max_contacts: *n,
                    exclusive: p.capacity.exclusive.contains(c),
                })
                .collect(),
            max_total_contacts: p.capacity.max_total,
        }
    }
}

impl TryFrom<pb::AgentProfile> for AgentProfile {
    type Error = WireError;

    fn try_from(p: pb::AgentProfile) -> Result<Self, WireError> {
        let mut limits = BTreeMap::new();
        let mut exclusive = BTreeSet::new();
        for c in p.capacity {
            let channel = channel_from_pb(c.channel)?;
            limits.insert(channel, c.max_contacts);
            if c.exclusive {
                exclusive.insert(channel);
            }
        }
        let mut skills = BTreeMap::new();
        for (k, v) in p.skills {
            skills.insert(k, proficiency(v)?);
        }
        Ok(AgentProfile {
            id: AgentId(p.agent_id),
            queues: p.queues.into_iter().map(QueueRef::try_from).collect::<Result<_, _>>()?,
            skills,
            languages: p.languages.into_iter().collect(),
            capacity: CapacityProfile { limits, exclusive, max_total: p.max_total_contacts },
        })
    }
}

impl From<&Requirement> for pb::Requirement {
    fn from(r: &Requirement) -> Self {
        use pb::requirement::Requirement as R;
        let r = match r {
            Requirement::Skill { name, min_proficiency } => {
                R::Skill(pb::SkillLevel { skill: name.clone(), min_proficiency: u32::from(*min_proficiency) })
            }
            Requirement::Language(l) => R::Language(l.clone()),
        };
        pb::Requirement { requirement: Some(r) }
    }
}

impl TryFrom<pb::Requirement> for Requirement {
    type Error = WireError;

    fn try_from(r: pb::Requirement) -> Result<Self, WireError> {
        use pb::requirement::Requirement as R;
        Ok(match r.requirement.ok_or(WireError::Empty("requirement"))? {
            R::Skill(s) => Requirement::Skill { name: s.skill, min_proficiency: proficiency(s.min_proficiency)? },
            R::Language(l) => Requirement::Language(l),
        })
    }
}

impl From<&Step> for pb::Step {
    // Writes the deprecated `after_ms` too, for readers older than `after`.
    #[allow(deprecated)]
    fn from(s: &Step) -> Self {
        pb::Step {
            after_ms: s.after_ms,
            requirements: s.requirements.iter().map(pb::Requirement::from).collect(),
            after: Some(duration_to_pb(s.after_ms)),
        }
    }
}

impl TryFrom<pb::Step> for Step {
    type Error = WireError;

    // Reads the deprecated `after_ms` of records written before `after`.
    #[allow(deprecated)]
    fn try_from(s: pb::Step) -> Result<Self, WireError> {
        let after_ms = span(s.after.as_ref(), s.after_ms, "step after")?;
        let requirements = s.requirements.into_iter().map(Requirement::try_from).collect::<Result<_, _>>()?;
        Ok(Step { after_ms, requirements })
    }
}

impl From<&QueuedContact> for pb::QueuedContact {
    // Writes the deprecated `offer_timeout_ms` and `max_wait_ms` too, for readers older
    // than `offer_timeout` and `max_wait`.
    #[allow(deprecated)]
    fn from(c: &QueuedContact) -> Self {
        let max_wait_ms = c.max_wait.as_ref().map(|m| m.after_ms);
        pb::QueuedContact {
            contact_id: c.id.0.clone(),
            queue: Some((&c.queue).into()),
            channel: channel_to_pb(c.channel) as i32,
            priority: c.priority,
            aging_per_minute: c.aging_per_minute,
            enqueue_time: Some(millis_to_pb(c.enqueued_at)),
            steps: c.steps.iter().map(pb::Step::from).collect(),
            preferred_agent_id: c.preferred.as_ref().map(|(a, _)| a.0.clone()).unwrap_or_default(),
            preferred_until: c.preferred.as_ref().map(|(_, t)| millis_to_pb(*t)),
            offer_timeout_ms: c.offer_timeout_ms,
            max_wait_ms: max_wait_ms.unwrap_or(0),
            overflow_to: c.max_wait.as_ref().and_then(|m| m.overflow_to.as_ref()).map(pb::QueueRef::from),
            excluded_agent_ids: c.excluded.iter().map(|a| a.0.clone()).collect(),
            offer_timeout: Some(duration_to_pb(c.offer_timeout_ms)),
            max_wait: max_wait_ms.map(duration_to_pb),
        }
    }
}

impl TryFrom<pb::QueuedContact> for QueuedContact {
    type Error = WireError;

    // Reads the deprecated `offer_timeout_ms` and `max_wait_ms` of records written before
    // `offer_timeout` and `max_wait`.
    #[allow(deprecated)]
    fn try_from(c: pb::QueuedContact) -> Result<Self, WireError> {
        let offer_timeout_ms = span(c.offer_timeout.as_ref(), c.offer_timeout_ms, "offer_timeout")?;
        let max_wait_ms = span(c.max_wait.as_ref(), c.max_wait_ms, "max_wait")?;
        let preferred = match (c.preferred_agent_id.is_empty(), &c.preferred_until) {
            (false, Some(t)) => Some((AgentId(c.preferred_agent_id), millis_from_pb(t))),
            _ => None,
        };
        Ok(QueuedContact {
            id: ContactId(c.contact_id),
            queue: required_queue(c.queue)?,
            channel: channel_from_pb(c.channel)?,
            priority: c.priority,
            aging_per_minute: c.aging_per_minute,
            enqueued_at: c.enqueue_time.as_ref().map(millis_from_pb).ok_or(WireError::Missing("enqueue_time"))?,
            steps: c.steps.into_iter().map(Step::try_from).collect::<Result<_, _>>()?,
            preferred,
            offer_timeout_ms,
            // An overflow queue that does not convert is dropped: the contact then times
            // out at its maximum wait instead of being refused as a whole.
            max_wait: (max_wait_ms > 0).then(|| MaxWait {
                after_ms: max_wait_ms,
                overflow_to: c.overflow_to.and_then(|q| QueueRef::try_from(q).ok()),
            }),
            excluded: c.excluded_agent_ids.into_iter().map(AgentId).collect(),
        })
    }
}

fn answer(contact: &ContactId, agent: &AgentId, not_responding: bool) -> pb::OfferAnswer {
    pb::OfferAnswer { contact_id: contact.0.clone(), agent_id: agent.0.clone(), not_responding }
}

impl From<&Input> for pb::RoutingInput {
    fn from(input: &Input) -> Self {
        use pb::routing_input::Input as I;
        let i = match input {
            Input::AgentUpserted(p) => I::AgentUpserted(p.into()),
            Input::AgentReady { agent } => I::AgentReady(agent.0.clone()),
            Input::AgentNotReady { agent } => I::AgentNotReady(agent.0.clone()),
            Input::ContactQueued(c) => I::ContactQueued(c.into()),
            Input::ContactWithdrawn { contact } => I::ContactWithdrawn(contact.0.clone()),
            Input::OfferAccepted { contact, agent } => I::OfferAccepted(answer(contact, agent, false)),
            Input::OfferDeclined { contact, agent, not_responding } => {
                I::OfferDeclined(answer(contact, agent, *not_responding))
            }
            Input::OfferUndelivered { contact, agent } => I::OfferUndelivered(answer(contact, agent, false)),
            Input::ContactReleased { contact, agent } => I::ContactReleased(answer(contact, agent, false)),
            Input::BookingMoved { from, to, agent } => I::BookingMoved(pb::BookingMoved {
                from_contact_id: from.0.clone(),
                to_contact_id: to.0.clone(),
                agent_id: agent.0.clone(),
            }),
            Input::Tick => I::Tick(pb::Tick {}),
        };
        pb::RoutingInput { input: Some(i) }
    }
}

impl TryFrom<pb::RoutingInput> for Input {
    type Error = WireError;

    fn try_from(input: pb::RoutingInput) -> Result<Self, WireError> {
        use pb::routing_input::Input as I;
        Ok(match input.input.ok_or(WireError::Empty("routing input"))? {
            I::AgentUpserted(p) => Input::AgentUpserted(p.try_into()?),
            I::AgentReady(a) => Input::AgentReady { agent: AgentId(a) },
            I::AgentNotReady(a) => Input::AgentNotReady { agent: AgentId(a) },
            I::ContactQueued(c) => Input::ContactQueued(c.try_into()?),
            I::ContactWithdrawn(c) => Input::ContactWithdrawn { contact: ContactId(c) },
            I::OfferAccepted(a) => {
                Input::OfferAccepted { contact: ContactId(a.contact_id), agent: AgentId(a.agent_id) }
            }
            I::OfferDeclined(a) => Input::OfferDeclined {
                contact: ContactId(a.contact_id),
                agent: AgentId(a.agent_id),
                not_responding: a.not_responding,
            },
            I::OfferUndelivered(a) => {
                Input::OfferUndelivered { contact: ContactId(a.contact_id), agent: AgentId(a.agent_id) }
            }
            I::ContactReleased(a) => {
                Input::ContactReleased { contact: ContactId(a.contact_id), agent: AgentId(a.agent_id) }
            }
            I::BookingMoved(m) => Input::BookingMoved {
                from: ContactId(m.from_contact_id),
                to: ContactId(m.to_contact_id),
                agent: AgentId(m.agent_id),
            },
            I::Tick(_) => Input::Tick,
        })
    }
}

impl From<&Decision> for pb::RoutingDecision {
    fn from(d: &Decision) -> Self {
        use pb::routing_decision::Decision as D;
        let d = match d {
            Decision::Offer { contact, agent, queue, channel, expires_at } => D::Offer(pb::Offer {
                contact_id: contact.0.clone(),
                agent_id: agent.0.clone(),
                queue: Some(queue.into()),
                channel: channel_to_pb(*channel) as i32,
                expire_time: Some(millis_to_pb(*expires_at)),
            }),
            Decision::Overflow { contact, from, to } => D::Overflow(pb::Overflow {
                contact_id: contact.0.clone(),
                from: Some(from.into()),
                to: Some(to.into()),
            }),
            Decision::TimedOut { contact, queue } => {
                D::TimedOut(pb::TimedOut { contact_id: contact.0.clone(), queue: Some(queue.into()) })
            }
        };
        pb::RoutingDecision { decision: Some(d) }
    }
}

impl TryFrom<pb::RoutingDecision> for Decision {
    type Error = WireError;

    fn try_from(d: pb::RoutingDecision) -> Result<Self, WireError> {
        use pb::routing_decision::Decision as D;
        Ok(match d.decision.ok_or(WireError::Empty("routing decision"))? {
            D::Offer(o) => Decision::Offer {
                contact: ContactId(o.contact_id),
                agent: AgentId(o.agent_id),
                queue: required_queue(o.queue)?,
                channel: channel_from_pb(o.channel)?,
                expires_at: o.expire_time.as_ref().map(millis_from_pb).ok_or(WireError::Missing("expire_time"))?,
            },
            D::Overflow(o) => Decision::Overflow {
                contact: ContactId(o.contact_id),
                from: required_queue(o.from)?,
                to: required_queue(o.to)?,
            },
            D::TimedOut(t) => Decision::TimedOut { contact: ContactId(t.contact_id), queue: required_queue(t.queue)? },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(q: &str) -> QueueRef {
        QueueRef::new("acme", q)
    }

    fn contact() -> QueuedContact {
        QueuedContact {
            id: "c1".into(),
            queue: queue("support"),
            channel: Channel::Chat,
            priority: 10,
            aging_per_minute: 2,
            enqueued_at: 1_700_000_000_123,
            steps: vec![
                Step {
                    after_ms: 0,
                    requirements: vec![
                        Requirement::Skill { name: "billing".into(), min_proficiency: 4 },
                        Requirement::Language("es".into()),
                    ],
                },
                Step { after_ms: 30_000, requirements: vec![] },
            ],
            preferred: Some(("a1".into(), 1_700_000_030_123)),
            offer_timeout_ms: 15_000,
            max_wait: Some(MaxWait { after_ms: 600_000, overflow_to: Some(queue("overflow")) }),
            excluded: vec!["a2".into()],
        }
    }

    fn round_trip_input(input: Input) {
        let back = Input::try_from(pb::RoutingInput::from(&input));
        assert_eq!(back, Ok(input));
    }

    #[test]
    fn every_input_survives_the_wire() {
        let (c, a) = (ContactId::from("c1"), AgentId::from("a1"));
        round_trip_input(Input::AgentUpserted(AgentProfile {
            id: a.clone(),
            queues: [queue("support"), QueueRef::new("globex", "sales")].into(),
            skills: [("billing".to_owned(), 5), ("returns".to_owned(), 1)].into(),
            languages: ["en".to_owned(), "es".to_owned()].into(),
            capacity: CapacityProfile {
                limits: [(Channel::Voice, 1), (Channel::Chat, 3)].into(),
                exclusive: [Channel::Voice].into(),
                max_total: 3,
            },
        }));
        round_trip_input(Input::AgentReady { agent: a.clone() });
        round_trip_input(Input::AgentNotReady { agent: a.clone() });
        round_trip_input(Input::ContactQueued(contact()));
        round_trip_input(Input::ContactQueued(QueuedContact { preferred: None, max_wait: None, ..contact() }));
        round_trip_input(Input::ContactWithdrawn { contact: c.clone() });
        round_trip_input(Input::OfferAccepted { contact: c.clone(), agent: a.clone() });
        round_trip_input(Input::OfferDeclined { contact: c.clone(), agent: a.clone(), not_responding: true });
        round_trip_input(Input::OfferUndelivered { contact: c.clone(), agent: a.clone() });
        round_trip_input(Input::ContactReleased { contact: c.clone(), agent: a.clone() });
        round_trip_input(Input::BookingMoved { from: c, to: "c2".into(), agent: a });
        round_trip_input(Input::Tick);
    }

    #[test]
    fn every_decision_survives_the_wire() {
        for d in [
            Decision::Offer {
                contact: "c1".into(),
                agent: "a1".into(),
                queue: queue("support"),
                channel: Channel::Voice,
                expires_at: 1_700_000_015_000,
            },
            Decision::Overflow { contact: "c1".into(), from: queue("support"), to: queue("overflow") },
            Decision::TimedOut { contact: "c1".into(), queue: queue("support") },
        ] {
            assert_eq!(Decision::try_from(pb::RoutingDecision::from(&d)), Ok(d));
        }
    }

    #[test]
    fn instants_keep_their_millisecond_on_both_sides_of_the_epoch() {
        for ms in [0, 1, 999, 1_000, 1_700_000_000_123, -1, -999, -1_001] {
            let t = millis_to_pb(ms);
            assert!((0..1_000_000_000).contains(&t.nanos), "{t:?}");
            assert_eq!(millis_from_pb(&t), ms);
        }
    }

    fn span(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds, nanos })
    }

    #[test]
    #[allow(deprecated)]
    fn queued_contacts_write_both_forms_of_their_spans() {
        let c = pb::QueuedContact::from(&contact());
        assert_eq!((c.offer_timeout_ms, c.offer_timeout), (15_000, span(15, 0)));
        assert_eq!((c.max_wait_ms, c.max_wait), (600_000, span(600, 0)));
        let steps: Vec<_> = c.steps.iter().map(|s| (s.after_ms, s.after)).collect();
        assert_eq!(steps, [(0, span(0, 0)), (30_000, span(30, 0))]);
        // No maximum wait: zero milliseconds, and no Duration.
        let c = pb::QueuedContact::from(&QueuedContact { max_wait: None, ..contact() });
        assert_eq!((c.max_wait_ms, c.max_wait), (0, None));
    }

    #[test]
    #[allow(deprecated)]
    fn queued_contacts_read_the_duration_when_it_is_set() {
        let mut c = pb::QueuedContact::from(&contact());
        c.offer_timeout_ms = 0;
        c.max_wait_ms = 0;
        c.offer_timeout = span(20, 500_000_000);
        c.max_wait = span(90, 0);
        for s in &mut c.steps {
            s.after_ms = 0;
        }
        c.steps[1].after = span(45, 999_999);
        let read = QueuedContact::try_from(c).unwrap();
        assert_eq!(read.offer_timeout_ms, 20_500);
        assert_eq!(read.max_wait.map(|m| m.after_ms), Some(90_000));
        assert_eq!(read.steps.iter().map(|s| s.after_ms).collect::<Vec<_>>(), [0, 45_000]);
        // The Duration wins over a deprecated field that disagrees; a zero one means no
        // maximum wait, as zero milliseconds did.
        let mut c = pb::QueuedContact::from(&contact());
        c.offer_timeout = span(5, 0);
        c.max_wait = span(0, 0);
        let read = QueuedContact::try_from(c).unwrap();
        assert_eq!((read.offer_timeout_ms, read.max_wait), (5_000, None));
    }

    #[test]
    #[allow(deprecated)]
    fn queued_contacts_written_before_the_durations_still_read() {
        // What a writer older than the Duration fields put on the input log.
        let old = pb::QueuedContact {
            offer_timeout: None,
            max_wait: None,
            steps: pb::QueuedContact::from(&contact())
                .steps
                .into_iter()
                .map(|s| pb::Step { after: None, ..s })
                .collect(),
            ..pb::QueuedContact::from(&contact())
        };
        assert_eq!(old.steps[1].after_ms, 30_000);
        let input = pb::RoutingInput { input: Some(pb::routing_input::Input::ContactQueued(old)) };
        let bytes = prost::Message::encode_to_vec(&input);
        let decoded: pb::RoutingInput = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(Input::try_from(decoded), Ok(Input::ContactQueued(contact())));
        let no_max_wait = pb::QueuedContact { max_wait: None, ..pb::QueuedContact::from(&contact()) };
        let no_max_wait = pb::QueuedContact { max_wait_ms: 0, ..no_max_wait };
        assert_eq!(QueuedContact::try_from(no_max_wait).map(|c| c.max_wait), Ok(None));
    }

    #[test]
    fn spans_keep_their_millisecond_and_malformed_durations_are_refused() {
        for ms in [0, 1, 999, 1_000, 15_000, 86_400_123, -1, -1_001] {
            let d = duration_to_pb(ms);
            assert!(d.seconds == 0 || d.nanos == 0 || (d.seconds > 0) == (d.nanos > 0), "{d:?}");
            assert_eq!(duration_from_pb(&d, "x"), Ok(ms));
        }
        // Finer than a millisecond is dropped.
        assert_eq!(duration_from_pb(&span(1, 999_999).unwrap(), "x"), Ok(1_000));
        for bad in [span(1, -1), span(-1, 1), span(0, 1_000_000_000), span(0, i32::MIN), span(i64::MIN, 0)] {
            assert_eq!(duration_from_pb(&bad.unwrap(), "x"), Err(WireError::Duration("x")));
        }
        let mut c = pb::QueuedContact::from(&contact());
        c.offer_timeout = span(1, -5);
        assert_eq!(
            QueuedContact::try_from(c).map_err(|e| e.to_string()),
            Err("offer_timeout is not a well-formed duration".into())
        );
        let mut c = pb::QueuedContact::from(&contact());
        c.steps[1].after = span(0, 2_000_000_000);
        assert_eq!(QueuedContact::try_from(c), Err(WireError::Duration("step after")));
    }

    #[test]
    fn every_channel_survives_the_wire() {
        for c in Channel::ALL {
            assert_eq!(channel_from_pb(channel_to_pb(c) as i32), Ok(c));
        }
        assert_eq!(channel_from_pb(PbChannel::Unspecified as i32), Err(WireError::UnknownChannel(0)));
    }

    #[test]
    fn a_record_that_does_not_convert_is_refused_whole() {
        fn queued(f: impl FnOnce(&mut pb::QueuedContact)) -> Result<Input, String> {
            let mut c = pb::QueuedContact::from(&contact());
            f(&mut c);
            Input::try_from(pb::RoutingInput { input: Some(pb::routing_input::Input::ContactQueued(c)) })
                .map_err(|e| e.to_string())
        }
        assert_eq!(queued(|c| c.queue = None), Err("queue is missing".into()));
        assert_eq!(
            queued(|c| c.queue.as_mut().unwrap().queue.clear()),
            Err("queue needs a tenant and a queue id".into())
        );
        assert_eq!(queued(|c| c.channel = 99), Err("unknown channel 99".into()));
        assert_eq!(queued(|c| c.enqueue_time = None), Err("enqueue_time is missing".into()));
        assert_eq!(queued(|c| c.steps[0].requirements[0].requirement = None), Err("empty requirement".into()));
        let skill = pb::SkillLevel { skill: "billing".into(), min_proficiency: 300 };
        let requirement = pb::Requirement { requirement: Some(pb::requirement::Requirement::Skill(skill)) };
        assert_eq!(queued(|c| c.steps[0].requirements[0] = requirement), Err("proficiency 300 is out of range".into()));
        assert_eq!(
            Input::try_from(pb::RoutingInput { input: None }).map_err(|e| e.to_string()),
            Err("empty routing input".into())
        );
        assert_eq!(
            Decision::try_from(pb::RoutingDecision { decision: None }).map_err(|e| e.to_string()),
            Err("empty routing decision".into())
        );
    }

    /// Hostile input: a routing input or decision read from the log, its bytes mutated at
    /// random, converts or is refused with a reason — never a panic — and what converts
    /// converts back to itself.
    mod hostile {
        use super::*;
        use proptest::prelude::*;

        fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
            for (at, b) in edits {
                let at = at % bytes.len().max(1);
                if let Some(x) = bytes.get_mut(at) {
                    *x = *b;
                }
            }
            bytes
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn mutated_inputs_convert_or_are_refused(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
                let valid = prost::Message::encode_to_vec(&pb::RoutingInput::from(&Input::ContactQueued(contact())));
                if let Ok(wire) = <pb::RoutingInput as prost::Message>::decode(mutate(valid, &edits).as_slice()) {
                    if let Ok(input) = Input::try_from(wire) {
                        prop_assert_eq!(Input::try_from(pb::RoutingInput::from(&input)).expect("converts back"), input);
                    }
                }
            }

            #[test]
            fn mutated_decisions_convert_or_are_refused(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
                let offer = Decision::Offer {
                    contact: "c1".into(),
                    agent: "a1".into(),
                    queue: queue("support"),
                    channel: Channel::Voice,
                    expires_at: 1_700_000_015_000,
                };
                let valid = prost::Message::encode_to_vec(&pb::RoutingDecision::from(&offer));
                if let Ok(wire) = <pb::RoutingDecision as prost::Message>::decode(mutate(valid, &edits).as_slice()) {
                    if let Ok(d) = Decision::try_from(wire) {
                        prop_assert_eq!(Decision::try_from(pb::RoutingDecision::from(&d)).expect("converts back"), d);
                    }
                }
            }
        }
    }
}
