//! The protobuf form of the core's types: what the API returns, what the events carry and
//! what Redis stores. The stored record is the wire `Contact`/`Agent` on purpose: records
//! written by earlier releases read back unchanged, and an operator can decode a key with
//! the public protos. Converting in is `TryFrom` (a record or request can be malformed);
//! converting out is `From`.

use centralita_platform::identity::Identity;
use centralita_platform::tenant::{contact_name, parse_contact_name, TenantId};
use centralita_proto::sessions::v1 as pb;
use centralita_routing_contract::wire::{channel_from_pb, channel_to_pb, millis_from_pb, millis_to_pb};
use centralita_routing_contract::{AgentId, ContactId, QueueRef};

use crate::core::{
    Activity, Agent, AgentEventKind, AgentState, ChannelCapacity, Contact, ContactEventKind, ContactRef, ContactState,
    CustomerTier, Direction, Monitor, MonitorMode, Offer, OfferId, Participant, Role, SkillRequirement,
};

/// Why a stored record or a wire message does not make a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Malformed {
    pub field: &'static str,
    pub message: String,
}

fn malformed(field: &'static str, message: impl std::fmt::Display) -> Malformed {
    Malformed { field, message: message.to_string() }
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref().map(millis_from_pb)
}

fn pb_time(ms: Option<i64>) -> Option<prost_types::Timestamp> {
    ms.map(millis_to_pb)
}

fn some_agent(s: &str) -> Option<AgentId> {
    (!s.is_empty()).then(|| AgentId(s.to_owned()))
}

fn agent_str(a: &Option<AgentId>) -> String {
    a.as_ref().map(|a| a.0.clone()).unwrap_or_default()
}

impl TryFrom<i32> for ContactState {
    type Error = Malformed;
    fn try_from(v: i32) -> Result<Self, Malformed> {
        use pb::ContactState as P;
        Ok(match P::try_from(v).unwrap_or(P::Unspecified) {
            P::Queued => ContactState::Queued,
            P::Offered => ContactState::Offered,
            P::Connected => ContactState::Connected,
            P::AfterContactWork => ContactState::AfterContactWork,
            P::Closed => ContactState::Closed,
            P::Abandoned => ContactState::Abandoned,
            P::TimedOut => ContactState::TimedOut,
            P::Unspecified => return Err(malformed("state", format!("{v} is not a contact state"))),
        })
    }
}

impl From<ContactState> for pb::ContactState {
    fn from(s: ContactState) -> Self {
        match s {
            ContactState::Queued => pb::ContactState::Queued,
            ContactState::Offered => pb::ContactState::Offered,
            ContactState::Connected => pb::ContactState::Connected,
            ContactState::AfterContactWork => pb::ContactState::AfterContactWork,
            ContactState::Closed => pb::ContactState::Closed,
            ContactState::Abandoned => pb::ContactState::Abandoned,
            ContactState::TimedOut => pb::ContactState::TimedOut,
        }
    }
}

pub(crate) fn direction_from_pb(d: i32) -> Direction {
    if d == pb::Direction::Outbound as i32 {
        Direction::Outbound
    } else {
        Direction::Inbound
    }
}

pub(crate) fn tier_from_pb(t: i32) -> CustomerTier {
    match pb::CustomerTier::try_from(t) {
        Ok(pb::CustomerTier::Vip) => CustomerTier::Vip,
        Ok(pb::CustomerTier::Standard) => CustomerTier::Standard,
        _ => CustomerTier::Unknown,
    }
}

pub(crate) fn skills_from_pb(skills: &[pb::SkillRequirement]) -> Vec<SkillRequirement> {
    skills.iter().map(|r| SkillRequirement { skill: r.skill.clone(), min_proficiency: r.min_proficiency }).collect()
}

/// A consult's other contact, stored as its full name (always the same tenant).
/// A stored contact's supervisor, if any.
fn monitor_from_pb(m: &Option<pb::ContactMonitor>) -> Result<Option<Monitor>, Malformed> {
    let Some(m) = m else { return Ok(None) };
    let mode = match pb::MonitorMode::try_from(m.mode) {
        Ok(pb::MonitorMode::Listen) => MonitorMode::Listen,
        Ok(pb::MonitorMode::Whisper) => MonitorMode::Whisper,
        Ok(pb::MonitorMode::Barge) => MonitorMode::Barge,
        _ => return Err(malformed("monitor.mode", "LISTEN, WHISPER or BARGE")),
    };
    Ok(Some(Monitor { supervisor: m.supervisor.clone(), mode, since: time(&m.start_time).unwrap_or_default() }))
}

/// A monitor mode on the wire.
pub fn monitor_mode_to_pb(mode: MonitorMode) -> pb::MonitorMode {
    match mode {
        MonitorMode::Listen => pb::MonitorMode::Listen,
        MonitorMode::Whisper => pb::MonitorMode::Whisper,
        MonitorMode::Barge => pb::MonitorMode::Barge,
    }
}

fn linked_id(field: &'static str, name: &str) -> Result<Option<ContactId>, Malformed> {
    if name.is_empty() {
        return Ok(None);
    }
    let (_, id) = parse_contact_name(field, name).map_err(|e| malformed(field, e))?;
    Ok(Some(ContactId(id)))
}

impl TryFrom<&pb::Contact> for Contact {
    type Error = Malformed;
    fn try_from(c: &pb::Contact) -> Result<Self, Malformed> {
        let (tenant, id) = parse_contact_name("name", &c.name).map_err(|e| malformed("name", e))?;
        let participants = c
            .participants
            .iter()
            .map(|p| {
                let role = match pb::participant::Role::try_from(p.role) {
                    Ok(pb::participant::Role::Conferenced) => Role::Conferenced,
                    _ => Role::Holder,
                };
                Participant {
                    agent: AgentId(p.agent_id.clone()),
                    role,
                    joined_at: time(&p.join_time),
                    left_at: time(&p.leave_time),
                }
            })
            .collect();
        let customer_identities = c
            .customer_identities
            .iter()
            .map(|i| Identity::parse(i, "").map_err(|e| malformed("customer_identities", e)))
            .collect::<Result<_, _>>()?;
        Ok(Contact {
            tenant,
            id: ContactId(id),
            channel: channel_from_pb(c.channel).map_err(|e| malformed("channel", e))?,
            direction: if c.direction == pb::Direction::Outbound as i32 {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            queue: c.queue.clone(),
            state: ContactState::try_from(c.state)?,
            priority: c.priority,
            tier: tier_from_pb(c.customer_tier),
            language: c.language.clone(),
            required_skills: skills_from_pb(&c.required_skills),
            attributes: c.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            agent: some_agent(&c.agent_id),
            offer: (!c.offer_id.is_empty())
                .then(|| Offer { id: OfferId(c.offer_id.clone()), expires_at: time(&c.offer_expire_time) }),
            on_hold: c.on_hold,
            disposition: c.disposition.clone(),
            preferred_agent: some_agent(&c.preferred_agent_id),
            created_at: time(&c.create_time),
            enqueued_at: time(&c.enqueue_time),
            connected_at: time(&c.connect_time),
            ended_at: time(&c.end_time),
            closed_at: time(&c.close_time),
            end_cause: c.end_cause.clone(),
            previous_agents: c.previous_agents.iter().map(|a| AgentId(a.clone())).collect(),
            transfer_count: c.transfer_count,
            customer_identities,
            consult_of: linked_id("consult_of", &c.consult_of)?,
            consult_leg: linked_id("consult_leg", &c.consult_leg)?,
            participants,
            agent_pool: c.agent_pool.clone(),
            trace_parent: c.trace_parent.clone(),
            recording_paused: c.recording_paused,
            wrap_up_notes: c.wrap_up_notes.clone(),
            monitor: monitor_from_pb(&c.monitor)?,
        })
    }
}

impl From<&Contact> for pb::Contact {
    fn from(c: &Contact) -> Self {
        let name_of =
            |id: &Option<ContactId>| id.as_ref().map(|id| contact_name(c.tenant.as_str(), &id.0)).unwrap_or_default();
        pb::Contact {
            name: contact_name(c.tenant.as_str(), &c.id.0),
            tenant: c.tenant.to_string(),
            channel: channel_to_pb(c.channel) as i32,
            direction: match c.direction {
                Direction::Inbound => pb::Direction::Inbound,
                Direction::Outbound => pb::Direction::Outbound,
            } as i32,
            queue: c.queue.clone(),
            state: pb::ContactState::from(c.state) as i32,
            priority: c.priority,
            customer_tier: match c.tier {
                CustomerTier::Unknown => pb::CustomerTier::Unspecified,
                CustomerTier::Standard => pb::CustomerTier::Standard,
                CustomerTier::Vip => pb::CustomerTier::Vip,
            } as i32,
            language: c.language.clone(),
            required_skills: c
                .required_skills
                .iter()
                .map(|r| pb::SkillRequirement { skill: r.skill.clone(), min_proficiency: r.min_proficiency })
                .collect(),
            attributes: c.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            agent_id: agent_str(&c.agent),
            offer_id: c.offer.as_ref().map(|o| o.id.0.clone()).unwrap_or_default(),
            offer_expire_time: pb_time(c.offer.as_ref().and_then(|o| o.expires_at)),
            on_hold: c.on_hold,
            disposition: c.disposition.clone(),
            preferred_agent_id: agent_str(&c.preferred_agent),
            create_time: pb_time(c.created_at),
            enqueue_time: pb_time(c.enqueued_at),
            connect_time: pb_time(c.connected_at),
            end_time: pb_time(c.ended_at),
            close_time: pb_time(c.closed_at),
            end_cause: c.end_cause.clone(),
            previous_agents: c.previous_agents.iter().map(|a| a.0.clone()).collect(),
            transfer_count: c.transfer_count,
            customer_identities: c.customer_identities.iter().map(Identity::to_pb).collect(),
            consult_of: name_of(&c.consult_of),
            consult_leg: name_of(&c.consult_leg),
            participants: c
                .participants
                .iter()
                .map(|p| pb::Participant {
                    agent_id: p.agent.0.clone(),
                    role: match p.role {
                        Role::Holder => pb::participant::Role::Holder,
                        Role::Conferenced => pb::participant::Role::Conferenced,
                    } as i32,
                    join_time: pb_time(p.joined_at),
                    leave_time: pb_time(p.left_at),
                })
                .collect(),
            agent_pool: c.agent_pool.clone(),
            trace_parent: c.trace_parent.clone(),
            recording_paused: c.recording_paused,
            wrap_up_notes: c.wrap_up_notes.clone(),
            monitor: c.monitor.as_ref().map(|m| pb::ContactMonitor {
                supervisor: m.supervisor.clone(),
                mode: monitor_mode_to_pb(m.mode) as i32,
                start_time: pb_time(Some(m.since)),
            }),
        }
    }
}

impl From<Activity> for pb::AgentActivity {
    fn from(a: Activity) -> Self {
        match a {
            Activity::Idle => pb::AgentActivity::Idle,
            Activity::Offered => pb::AgentActivity::Offered,
            Activity::OnContact => pb::AgentActivity::OnContact,
            Activity::AfterContactWork => pb::AgentActivity::AfterContactWork,
        }
    }
}

impl From<AgentState> for pb::AgentState {
    fn from(s: AgentState) -> Self {
        match s {
            AgentState::Offline => pb::AgentState::Offline,
            AgentState::Available => pb::AgentState::Available,
            AgentState::Away => pb::AgentState::Away,
        }
    }
}

/// `agents/{agent}` into the agent's id.
pub fn agent_id_from_name(field: &'static str, name: &str) -> Result<AgentId, Malformed> {
    let id = name.strip_prefix("agents/").ok_or_else(|| malformed(field, "must be `agents/{agent}`"))?;
    if !centralita_platform::queue::is_code(id) {
        return Err(malformed(field, "agent id must be 1-40 of a-z, 0-9, - and _"));
    }
    Ok(AgentId(id.to_owned()))
}

impl TryFrom<&pb::Agent> for Agent {
    type Error = Malformed;
    fn try_from(a: &pb::Agent) -> Result<Self, Malformed> {
        let contacts = a
            .contacts
            .iter()
            .map(|name| {
                let (tenant, id) = parse_contact_name("contacts", name).map_err(|e| malformed("contacts", e))?;
                Ok(ContactRef { tenant, id: ContactId(id) })
            })
            .collect::<Result<_, Malformed>>()?;
        let capacity = a
            .capacity
            .iter()
            .map(|c| {
                Ok(ChannelCapacity {
                    channel: channel_from_pb(c.channel).map_err(|e| malformed("capacity", e))?,
                    max_contacts: c.max_contacts,
                    exclusive: c.exclusive,
                })
            })
            .collect::<Result<_, Malformed>>()?;
        Ok(Agent {
            id: agent_id_from_name("name", &a.name)?,
            display_name: a.display_name.clone(),
            queues: a.queues.iter().map(|q| QueueRef::new(q.tenant.clone(), q.queue.clone())).collect(),
            skills: a.skills.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            languages: a.languages.clone(),
            capacity,
            max_total_contacts: a.max_total_contacts,
            state: match pb::AgentState::try_from(a.state) {
                Ok(pb::AgentState::Available) => AgentState::Available,
                Ok(pb::AgentState::Away) => AgentState::Away,
                _ => AgentState::Offline,
            },
            away_reason: a.away_reason.clone(),
            contacts,
            state_time: time(&a.state_time),
            agent_pool: a.agent_pool.clone(),
            phones: a.phones.iter().map(|p| (p.tenant.clone(), time(&p.expire_time).unwrap_or_default())).collect(),
        })
    }
}

impl From<&Agent> for pb::Agent {
    fn from(a: &Agent) -> Self {
        pb::Agent {
            name: format!("agents/{}", a.id),
            display_name: a.display_name.clone(),
            queues: a
                .queues
                .iter()
                .map(|q| pb::QueueAssignment { tenant: q.tenant.clone(), queue: q.queue.clone() })
                .collect(),
            skills: a.skills.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            languages: a.languages.clone(),
            capacity: a
                .capacity
                .iter()
                .map(|c| pb::ChannelCapacity {
                    channel: channel_to_pb(c.channel) as i32,
                    max_contacts: c.max_contacts,
                    exclusive: c.exclusive,
                })
                .collect(),
            max_total_contacts: a.max_total_contacts,
            state: pb::AgentState::from(a.state) as i32,
            away_reason: a.away_reason.clone(),
            activity: 0,
            contacts: a.contacts.iter().map(|c| contact_name(c.tenant.as_str(), &c.id.0)).collect(),
            state_time: pb_time(a.state_time),
            agent_pool: a.agent_pool.clone(),
            phones: a
                .phones
                .iter()
                .map(|(tenant, until)| pb::AgentPhone { tenant: tenant.clone(), expire_time: pb_time(Some(*until)) })
                .collect(),
        }
    }
}

impl From<ContactEventKind> for pb::contact_event::Kind {
    fn from(k: ContactEventKind) -> Self {
        use pb::contact_event::Kind as P;
        use ContactEventKind as K;
        match k {
            K::Queued => P::Queued,
            K::Offered => P::Offered,
            K::Accepted => P::Accepted,
            K::Rejected => P::Rejected,
            K::NotAnswered => P::NotAnswered,
            K::Held => P::Held,
            K::Resumed => P::Resumed,
            K::RecordingPaused => P::RecordingPaused,
            K::RecordingResumed => P::RecordingResumed,
            K::Transferred => P::Transferred,
            K::Ended => P::Ended,
            K::WrappedUp => P::WrappedUp,
            K::Abandoned => P::Abandoned,
            K::Overflowed => P::Overflowed,
            K::TimedOut => P::TimedOut,
            K::ConsultStarted => P::ConsultStarted,
            K::Conferenced => P::Conferenced,
            K::ConsultEnded => P::ConsultEnded,
            K::HandedOver => P::HandedOver,
            K::ConsultClosed => P::ConsultClosed,
            K::MonitorStarted => P::MonitorStarted,
            K::MonitorChanged => P::MonitorChanged,
            K::MonitorStopped => P::MonitorStopped,
        }
    }
}

impl From<AgentEventKind> for pb::agent_event::Kind {
    fn from(k: AgentEventKind) -> Self {
        match k {
            AgentEventKind::Upserted => pb::agent_event::Kind::Upserted,
            AgentEventKind::SignedIn => pb::agent_event::Kind::SignedIn,
            AgentEventKind::StateChanged => pb::agent_event::Kind::StateChanged,
            AgentEventKind::SignedOut => pb::agent_event::Kind::SignedOut,
        }
    }
}

/// The tenant of a contact name, for callers that have only the name.
pub fn contact_ref(field: &'static str, name: &str) -> Result<ContactRef, Malformed> {
    let (tenant, id): (TenantId, String) = parse_contact_name(field, name).map_err(|e| malformed(field, e))?;
    Ok(ContactRef { tenant, id: ContactId(id) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored contact with every field set reads back and writes out unchanged.
    #[test]
    fn a_stored_contact_round_trips() {
        let ts = |ms| Some(millis_to_pb(ms));
        let stored = pb::Contact {
            name: "tenants/acme/contacts/c1".into(),
            tenant: "acme".into(),
            channel: centralita_proto::tenancy::v1::Channel::Chat as i32,
            direction: pb::Direction::Outbound as i32,
            queue: "sales".into(),
            state: pb::ContactState::Connected as i32,
            priority: -3,
            customer_tier: pb::CustomerTier::Vip as i32,
            language: "es".into(),
            required_skills: vec![pb::SkillRequirement { skill: "billing".into(), min_proficiency: 3 }],
            attributes: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
            agent_id: "a1".into(),
            offer_id: "o1".into(),
            offer_expire_time: ts(5),
            on_hold: true,
            disposition: "sold".into(),
            preferred_agent_id: "a2".into(),
            create_time: ts(1),
            enqueue_time: ts(2),
            connect_time: ts(3),
            end_time: ts(4),
            close_time: ts(6),
            end_cause: "media lost the call".into(),
            previous_agents: vec!["a0".into()],
            transfer_count: 1,
            customer_identities: vec![centralita_proto::crm::v1::Identity {
                kind: centralita_proto::crm::v1::IdentityKind::Email as i32,
                value: "ana@example.com".into(),
                ..Default::default()
            }],
            consult_of: String::new(),
            consult_leg: "tenants/acme/contacts/leg1".into(),
            participants: vec![pb::Participant {
                agent_id: "a1".into(),
                role: pb::participant::Role::Holder as i32,
                join_time: ts(3),
                leave_time: None,
            }],
            agent_pool: "default".into(),
            trace_parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            recording_paused: true,
            wrap_up_notes: "called back".into(),
            monitor: Some(pb::ContactMonitor {
                supervisor: "sue".into(),
                mode: pb::MonitorMode::Whisper as i32,
                start_time: ts(7),
            }),
        };
        let domain = Contact::try_from(&stored).expect("valid");
        assert_eq!(pb::Contact::from(&domain), stored);
    }

    #[test]
    fn a_malformed_record_is_refused_with_its_field() {
        let bad = pb::Contact { name: "contacts/c1".into(), ..Default::default() };
        assert_eq!(Contact::try_from(&bad).unwrap_err().field, "name");
        let bad = pb::Contact { name: "tenants/acme/contacts/c1".into(), state: 99, channel: 1, ..Default::default() };
        assert_eq!(Contact::try_from(&bad).unwrap_err().field, "state");
        let bad = pb::Agent { name: "agents/A B".into(), ..Default::default() };
        assert_eq!(Agent::try_from(&bad).unwrap_err().field, "name");
    }

    /// Hostile input: any mutation of a stored contact's bytes decodes to a contact, or is
    /// refused with its field; never a panic. What converts converts back to itself.
    mod hostile {
        use super::*;
        use proptest::prelude::*;

        fn stored() -> Vec<u8> {
            let c = crate::core::Contact::queued(
                TenantId::parse("acme").unwrap(),
                ContactId("c1".into()),
                centralita_routing_contract::Channel::Chat,
                "sales".into(),
                "default".into(),
                5,
            );
            prost::Message::encode_to_vec(&pb::Contact::from(&c))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn mutated_records_convert_or_are_refused(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
                let mut bytes = stored();
                for (at, b) in edits {
                    let at = at % bytes.len();
                    bytes[at] = b;
                }
                if let Ok(wire) = <pb::Contact as prost::Message>::decode(bytes.as_slice()) {
                    if let Ok(c) = Contact::try_from(&wire) {
                        prop_assert_eq!(Contact::try_from(&pb::Contact::from(&c)).expect("converts back"), c);
                    }
                }
                if let Ok(wire) = <pb::Agent as prost::Message>::decode(bytes.as_slice()) {
                    let _ = Agent::try_from(&wire);
                }
            }

            #[test]
            fn any_text_is_a_timer_or_nothing(member in ".{0,120}") {
                if let Some(t) = crate::core::Timer::parse(&member) {
                    prop_assert_eq!(crate::core::Timer::parse(&t.member()), Some(t));
                }
            }

            #[test]
            fn any_bytes_are_an_outbox_entry_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = <crate::outbox::OutboxEntry as prost::Message>::decode(bytes.as_slice());
            }
        }
    }

    #[test]
    fn a_stored_agent_round_trips() {
        let stored = pb::Agent {
            name: "agents/a1".into(),
            display_name: "Ana".into(),
            queues: vec![pb::QueueAssignment { tenant: "acme".into(), queue: "sales".into() }],
            skills: [("billing".to_owned(), 4)].into_iter().collect(),
            languages: vec!["es".into()],
            capacity: vec![pb::ChannelCapacity {
                channel: centralita_proto::tenancy::v1::Channel::Voice as i32,
                max_contacts: 1,
                exclusive: true,
            }],
            max_total_contacts: 3,
            state: pb::AgentState::Away as i32,
            away_reason: "lunch".into(),
            activity: 0,
            contacts: vec!["tenants/acme/contacts/c1".into()],
            state_time: Some(millis_to_pb(7)),
            agent_pool: "default".into(),
            phones: vec![pb::AgentPhone { tenant: "acme".into(), expire_time: Some(millis_to_pb(60_007)) }],
        };
        assert_eq!(pb::Agent::from(&Agent::try_from(&stored).expect("valid")), stored);
    }
}
