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
            phoneless_tenants: p.phoneless_tenants.iter().cloned().collect(),
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
            phoneless_tenants: p.phoneless_tenants.into_iter().collect(),
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
mod tests;
