//! Conversions between the matching core's types and the routing log's protobuf messages
//! (`centralita.routing.v1`). Decoding validates: a record that does not convert is
//! reported, never applied half-way.

use std::collections::{BTreeMap, BTreeSet};

use centralita_proto::routing::v1 as pb;
use centralita_proto::tenancy::v1::Channel as PbChannel;

use crate::core::{
    AgentId, AgentProfile, CapacityProfile, Channel, ContactId, Decision, Input, MaxWait, Millis, QueueRef,
    QueuedContact, Requirement, Step,
};

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

pub fn channel_from_pb(c: i32) -> Result<Channel, String> {
    Ok(match PbChannel::try_from(c) {
        Ok(PbChannel::Voice) => Channel::Voice,
        Ok(PbChannel::Chat) => Channel::Chat,
        Ok(PbChannel::Sms) => Channel::Sms,
        Ok(PbChannel::Email) => Channel::Email,
        Ok(PbChannel::Social) => Channel::Social,
        Ok(PbChannel::Task) => Channel::Task,
        _ => return Err(format!("unknown channel {c}")),
    })
}

pub fn millis_to_pb(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn millis_from_pb(t: &prost_types::Timestamp) -> Millis {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos / 1_000_000))
}

fn queue_to_pb(q: &QueueRef) -> pb::QueueRef {
    pb::QueueRef { tenant: q.tenant.clone(), queue: q.queue.clone() }
}

fn queue_from_pb(q: Option<pb::QueueRef>) -> Result<QueueRef, String> {
    let q = q.ok_or("queue is missing")?;
    if q.tenant.is_empty() || q.queue.is_empty() {
        return Err("queue needs a tenant and a queue id".into());
    }
    Ok(QueueRef { tenant: q.tenant, queue: q.queue })
}

fn answer(contact: &ContactId, agent: &AgentId, not_responding: bool) -> pb::OfferAnswer {
    pb::OfferAnswer { contact_id: contact.0.clone(), agent_id: agent.0.clone(), not_responding }
}

pub fn profile_to_pb(p: &AgentProfile) -> pb::AgentProfile {
    pb::AgentProfile {
        agent_id: p.id.0.clone(),
        queues: p.queues.iter().map(queue_to_pb).collect(),
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

pub fn profile_from_pb(p: pb::AgentProfile) -> Result<AgentProfile, String> {
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
        skills.insert(k, u8::try_from(v).map_err(|_| format!("proficiency {v} is out of range"))?);
    }
    Ok(AgentProfile {
        id: AgentId(p.agent_id),
        queues: p.queues.into_iter().map(|q| queue_from_pb(Some(q))).collect::<Result<_, _>>()?,
        skills,
        languages: p.languages.into_iter().collect(),
        capacity: CapacityProfile { limits, exclusive, max_total: p.max_total_contacts },
    })
}

pub fn input_to_pb(input: &Input) -> pb::RoutingInput {
    use pb::routing_input::Input as I;
    let i = match input {
        Input::AgentUpserted(p) => I::AgentUpserted(profile_to_pb(p)),
        Input::AgentReady { agent } => I::AgentReady(agent.0.clone()),
        Input::AgentNotReady { agent } => I::AgentNotReady(agent.0.clone()),
        Input::ContactQueued(c) => I::ContactQueued(pb::QueuedContact {
            contact_id: c.id.0.clone(),
            queue: Some(queue_to_pb(&c.queue)),
            channel: channel_to_pb(c.channel) as i32,
            priority: c.priority,
            aging_per_minute: c.aging_per_minute,
            enqueue_time: Some(millis_to_pb(c.enqueued_at)),
            steps: c
                .steps
                .iter()
                .map(|s| pb::Step {
                    after_ms: s.after_ms,
                    requirements: s
                        .requirements
                        .iter()
                        .map(|r| pb::Requirement {
                            requirement: Some(match r {
                                Requirement::Skill { name, min_proficiency } => {
                                    pb::requirement::Requirement::Skill(pb::SkillLevel {
                                        skill: name.clone(),
                                        min_proficiency: u32::from(*min_proficiency),
                                    })
                                }
                                Requirement::Language(l) => pb::requirement::Requirement::Language(l.clone()),
                            }),
                        })
                        .collect(),
                })
                .collect(),
            preferred_agent_id: c.preferred.as_ref().map(|(a, _)| a.0.clone()).unwrap_or_default(),
            preferred_until: c.preferred.as_ref().map(|(_, t)| millis_to_pb(*t)),
            offer_timeout_ms: c.offer_timeout_ms,
            max_wait_ms: c.max_wait.as_ref().map(|m| m.after_ms).unwrap_or(0),
            overflow_to: c.max_wait.as_ref().and_then(|m| m.overflow_to.as_ref()).map(queue_to_pb),
            excluded_agent_ids: c.excluded.iter().map(|a| a.0.clone()).collect(),
        }),
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

pub fn input_from_pb(input: pb::RoutingInput) -> Result<Input, String> {
    use pb::routing_input::Input as I;
    Ok(match input.input.ok_or("empty routing input")? {
        I::AgentUpserted(p) => Input::AgentUpserted(profile_from_pb(p)?),
        I::AgentReady(a) => Input::AgentReady { agent: AgentId(a) },
        I::AgentNotReady(a) => Input::AgentNotReady { agent: AgentId(a) },
        I::ContactQueued(c) => {
            let mut steps = Vec::new();
            for s in c.steps {
                let mut requirements = Vec::new();
                for r in s.requirements {
                    requirements.push(match r.requirement.ok_or("empty requirement")? {
                        pb::requirement::Requirement::Skill(s) => Requirement::Skill {
                            name: s.skill,
                            min_proficiency: u8::try_from(s.min_proficiency).map_err(|_| "proficiency out of range")?,
                        },
                        pb::requirement::Requirement::Language(l) => Requirement::Language(l),
                    });
                }
                steps.push(Step { after_ms: s.after_ms, requirements });
            }
            let preferred = match (c.preferred_agent_id.is_empty(), &c.preferred_until) {
                (false, Some(t)) => Some((AgentId(c.preferred_agent_id), millis_from_pb(t))),
                _ => None,
            };
            Input::ContactQueued(QueuedContact {
                id: ContactId(c.contact_id),
                queue: queue_from_pb(c.queue)?,
                channel: channel_from_pb(c.channel)?,
                priority: c.priority,
                aging_per_minute: c.aging_per_minute,
                enqueued_at: c.enqueue_time.as_ref().map(millis_from_pb).ok_or("enqueue_time is missing")?,
                steps,
                preferred,
                offer_timeout_ms: c.offer_timeout_ms,
                max_wait: (c.max_wait_ms > 0).then(|| MaxWait {
                    after_ms: c.max_wait_ms,
                    overflow_to: c.overflow_to.and_then(|q| queue_from_pb(Some(q)).ok()),
                }),
                excluded: c.excluded_agent_ids.into_iter().map(AgentId).collect(),
            })
        }
        I::ContactWithdrawn(c) => Input::ContactWithdrawn { contact: ContactId(c) },
        I::OfferAccepted(a) => Input::OfferAccepted { contact: ContactId(a.contact_id), agent: AgentId(a.agent_id) },
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

pub fn decision_to_pb(d: &Decision) -> pb::RoutingDecision {
    use pb::routing_decision::Decision as D;
    let d = match d {
        Decision::Offer { contact, agent, queue, channel, expires_at } => D::Offer(pb::Offer {
            contact_id: contact.0.clone(),
            agent_id: agent.0.clone(),
            queue: Some(queue_to_pb(queue)),
            channel: channel_to_pb(*channel) as i32,
            expire_time: Some(millis_to_pb(*expires_at)),
        }),
        Decision::Overflow { contact, from, to } => D::Overflow(pb::Overflow {
            contact_id: contact.0.clone(),
            from: Some(queue_to_pb(from)),
            to: Some(queue_to_pb(to)),
        }),
        Decision::TimedOut { contact, queue } => {
            D::TimedOut(pb::TimedOut { contact_id: contact.0.clone(), queue: Some(queue_to_pb(queue)) })
        }
    };
    pb::RoutingDecision { decision: Some(d) }
}

pub fn decision_from_pb(d: pb::RoutingDecision) -> Result<Decision, String> {
    use pb::routing_decision::Decision as D;
    Ok(match d.decision.ok_or("empty routing decision")? {
        D::Offer(o) => Decision::Offer {
            contact: ContactId(o.contact_id),
            agent: AgentId(o.agent_id),
            queue: queue_from_pb(o.queue)?,
            channel: channel_from_pb(o.channel)?,
            expires_at: o.expire_time.as_ref().map(millis_from_pb).ok_or("expire_time is missing")?,
        },
        D::Overflow(o) => Decision::Overflow {
            contact: ContactId(o.contact_id),
            from: queue_from_pb(o.from)?,
            to: queue_from_pb(o.to)?,
        },
        D::TimedOut(t) => Decision::TimedOut { contact: ContactId(t.contact_id), queue: queue_from_pb(t.queue)? },
    })
}
