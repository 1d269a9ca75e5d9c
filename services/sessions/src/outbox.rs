//! The outbox's stored form: the core's effects of one write, turned into the internal
//! `OutboxEntry` record (`proto/`, compiled by this crate's build script) that the store
//! writes atomically with the record, and that any replica carries out afterwards
//! (`crate::engine`). Publishes are encoded here, event id included, so a retry republishes
//! the same event and consumers dedupe it. Each entry keeps the trace context of the command
//! that produced it, which the drain continues.

use centralita_platform::bus::{Event, Topics};
use centralita_proto::routing::v1 as rpb;
use centralita_proto::sessions::v1 as pb;
use centralita_routing_contract::{input_topic, pool_key, pool_tenant};
use prost::Message as _;

use crate::core::{Agent, AgentId, Contact, ContactState, Effect, Linked, Notice};

/// The generated internal types (`centralita.sessions.internal.v1`).
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/centralita.sessions.internal.v1.rs"));
}

use proto::outbox_effect::Effect as Fx;
pub use proto::{linked_contact_effect::Op, LinkedContactEffect, OutboxEffect, OutboxEntry, PublishEffect};

fn fx(e: Fx) -> OutboxEffect {
    OutboxEffect { effect: Some(e) }
}

fn publish(topic: String, key: &str, event: &Event) -> OutboxEffect {
    fx(Fx::Publish(PublishEffect { topic, key: key.to_owned(), envelope: event.encode() }))
}

fn notice(agent: &AgentId, event: pb::agent_stream_event::Event) -> OutboxEffect {
    let event = Some(pb::AgentStreamEvent { event: Some(event), send_time: None });
    fx(Fx::Notify(proto::NotifyEffect { agent_id: agent.0.clone(), event }))
}

fn timer(member: String, due_unix_ms: i64) -> proto::TimerEffect {
    proto::TimerEffect { member, due_unix_ms }
}

/// The entry of `effects`, with the trace context of the current span (the command's).
fn encode(effects: Vec<OutboxEffect>) -> Vec<u8> {
    if effects.is_empty() {
        return Vec::new();
    }
    let mut trace = centralita_platform::telemetry::current_trace_headers();
    let traceparent = trace.remove("traceparent").unwrap_or_default();
    let tracestate = trace.remove("tracestate").unwrap_or_default();
    OutboxEntry { effects, traceparent, tracestate }.encode_to_vec()
}

/// The contact as the contacts topic carries it: references, never personal data. The
/// topic cannot be erased per person and a replay must not bring an erased customer back,
/// so the identities, the attributes (free values a creator or a flow set, which may name the
/// person) and the wrap-up notes stay in the record; a consumer that needs them reads them
/// with `GetContact` while the record exists (`ContactEvent.customer_identified` and
/// `has_notes` say there is something to read). Agents' offers and notices (their own
/// stream, not a log) keep the whole contact.
pub fn without_personal_data(c: &pb::Contact) -> pb::Contact {
    pb::Contact {
        customer_identities: Vec::new(),
        attributes: Default::default(),
        wrap_up_notes: String::new(),
        ..c.clone()
    }
}

/// The outbox entry of a contact write: `after` as written, `previous` its state before
/// (`None` for a new contact).
pub fn contact_entry(topics: &Topics, previous: Option<ContactState>, after: &Contact, effects: &[Effect]) -> Vec<u8> {
    let wire = pb::Contact::from(after);
    let mut out = Vec::with_capacity(effects.len());
    for e in effects {
        out.push(match e {
            Effect::ContactEvent { kind, agent } => {
                let kind = pb::contact_event::Kind::from(*kind);
                let event = pb::ContactEvent {
                    kind: kind as i32,
                    contact: Some(without_personal_data(&wire)),
                    previous_state: previous.map_or(0, |s| pb::ContactState::from(s) as i32),
                    agent_id: agent.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
                    notes: String::new(),
                    customer_identified: !after.customer_identities.is_empty(),
                    has_notes: kind == pb::contact_event::Kind::WrappedUp && !after.wrap_up_notes.is_empty(),
                };
                publish(topics.contacts(), &after.id.0, &Event::new(after.tenant.clone(), &event))
            }
            Effect::Route(input) => {
                let event = Event::new(after.tenant.clone(), &rpb::RoutingInput::from(input));
                publish(input_topic(topics), &pool_key(&after.agent_pool), &event)
            }
            Effect::Notify { agent, notice: kind } => notice(
                agent,
                match kind {
                    Notice::Offer => pb::agent_stream_event::Event::Offer(wire.clone()),
                    Notice::Contact | Notice::Agent => pb::agent_stream_event::Event::Contact(wire.clone()),
                },
            ),
            Effect::AgentContact { agent, add, notify } => fx(Fx::AgentContact(proto::AgentContactEffect {
                agent_id: agent.0.clone(),
                contact_name: wire.name.clone(),
                add: *add,
                notify: notify.then(|| wire.clone()),
            })),
            Effect::Linked { contact, change } => {
                let (op, leg_id, agent_id) = match change {
                    Linked::LegHandedOver => (Op::LegHandedOver, String::new(), String::new()),
                    Linked::LegCancelled => (Op::LegCancelled, String::new(), String::new()),
                    Linked::LegEnded { leg, agent } => {
                        (Op::LegEnded, leg.0.clone(), agent.as_ref().map(|a| a.0.clone()).unwrap_or_default())
                    }
                };
                fx(Fx::LinkedContact(LinkedContactEffect {
                    tenant: after.tenant.to_string(),
                    contact_id: contact.0.clone(),
                    op: op as i32,
                    leg_id,
                    agent_id,
                }))
            }
            Effect::Close => {
                let (handled_ms, closed_at) = crate::core::position::handled(after).unwrap_or_default();
                fx(Fx::Close(proto::CloseEffect {
                    tenant: after.tenant.to_string(),
                    contact_id: after.id.0.clone(),
                    queue: after.queue.clone(),
                    handled_ms,
                    closed_at,
                }))
            }
            other => common(topics, other),
        });
    }
    encode(out)
}

/// The outbox entry of an agent write (`after` as written). Agents are BPO-wide: their
/// events and routing inputs carry the pool tenant.
pub fn agent_entry(topics: &Topics, after: &Agent, effects: &[Effect]) -> Vec<u8> {
    let wire = pb::Agent::from(after);
    let mut out = Vec::with_capacity(effects.len());
    for e in effects {
        out.push(match e {
            Effect::AgentEvent(kind) => {
                let event =
                    pb::AgentEvent { kind: pb::agent_event::Kind::from(*kind) as i32, agent: Some(wire.clone()) };
                publish(topics.agents(), &after.id.0, &Event::new(pool_tenant(), &event))
            }
            Effect::Route(input) => {
                let event = Event::new(pool_tenant(), &rpb::RoutingInput::from(input));
                publish(input_topic(topics), &pool_key(&after.agent_pool), &event)
            }
            Effect::Notify { agent, .. } => notice(agent, pb::agent_stream_event::Event::Agent(wire.clone())),
            other => common(topics, other),
        });
    }
    encode(out)
}

/// Effects that read the same whichever record was written.
fn common(_topics: &Topics, e: &Effect) -> OutboxEffect {
    match e {
        Effect::Schedule { timer: t, due } => fx(Fx::Schedule(timer(t.member(), *due))),
        Effect::Cancel(t) => fx(Fx::Cancel(timer(t.member(), 0))),
        Effect::AgentNotResponding(agent) => {
            fx(Fx::AgentNotResponding(proto::AgentNotRespondingEffect { agent_id: agent.0.clone() }))
        }
        // Record-specific effects asked of the other kind of record: a core bug, kept
        // visible as an effect that does nothing but log when carried out.
        other => {
            tracing::error!(effect = ?other, "effect does not apply to this kind of record");
            OutboxEffect { effect: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_keeps_the_trace_context_of_the_command_that_wrote_it() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let close = || {
            vec![fx(Fx::Close(proto::CloseEffect {
                tenant: "acme".into(),
                contact_id: "c1".into(),
                ..Default::default()
            }))]
        };
        let bytes =
            centralita_platform::testkit::in_trace(&format!("00-{trace}-00f067aa0ba902b7-01"), || encode(close()));
        let entry = OutboxEntry::decode(bytes.as_slice()).expect("entry");
        assert_eq!(entry.traceparent.split('-').nth(1), Some(trace), "{entry:?}");
        assert_eq!(entry.effects.len(), 1);
        // Outside any trace: no context kept; no effects: no entry.
        assert!(OutboxEntry::decode(encode(close()).as_slice()).expect("entry").traceparent.is_empty());
        assert!(encode(Vec::new()).is_empty());
    }

    /// Issue 23: the contacts topic carries references only. A wrapped-up contact with
    /// identities, attributes and notes publishes an event holding none of them (flags say
    /// they are at sessions), while the agent's own notice keeps the whole contact.
    #[test]
    fn contact_events_carry_no_personal_data_and_notices_keep_it() {
        use crate::core::{AgentId, Channel, ContactEventKind, ContactId, Notice};
        use centralita_platform::identity::{Identity, Kind};
        use centralita_platform::tenant::TenantId;
        use prost::Message as _;
        let mut c = Contact::queued(
            TenantId::parse("acme").expect("tenant"),
            ContactId("c1".into()),
            Channel::Voice,
            "support".into(),
            "default".into(),
            1,
        );
        c.state = ContactState::Closed;
        c.customer_identities = vec![Identity { kind: Kind::Phone, value: "+34600999111".into() }];
        c.attributes.insert("account".into(), "ES-ACC-7731".into());
        c.wrap_up_notes = "angry about invoice 42".into();
        let ana = AgentId("ana".into());
        let effects = [
            Effect::ContactEvent { kind: ContactEventKind::WrappedUp, agent: Some(ana.clone()) },
            Effect::Notify { agent: ana, notice: Notice::Contact },
        ];
        let topics = Topics::new("t.");
        let entry =
            OutboxEntry::decode(contact_entry(&topics, Some(ContactState::AfterContactWork), &c, &effects).as_slice())
                .expect("entry");
        let Some(Fx::Publish(p)) = &entry.effects[0].effect else { panic!("a publish: {entry:?}") };
        assert_eq!(p.topic, topics.contacts());
        for planted in ["+34600999111", "ES-ACC-7731", "angry about invoice"] {
            assert!(!p.envelope.windows(planted.len()).any(|w| w == planted.as_bytes()), "{planted} on the topic");
        }
        let event: pb::ContactEvent = Event::decode(&p.envelope).expect("envelope").payload().expect("payload");
        let on_topic = event.contact.as_ref().expect("contact");
        assert!(on_topic.customer_identities.is_empty() && on_topic.attributes.is_empty());
        assert!(on_topic.wrap_up_notes.is_empty() && event.notes.is_empty());
        assert!(event.customer_identified && event.has_notes);
        assert_eq!((on_topic.name.as_str(), on_topic.queue.as_str()), ("tenants/acme/contacts/c1", "support"));
        let Some(Fx::Notify(n)) = &entry.effects[1].effect else { panic!("a notice: {entry:?}") };
        let Some(pb::agent_stream_event::Event::Contact(full)) = n.event.as_ref().and_then(|e| e.event.clone()) else {
            panic!("the contact: {n:?}")
        };
        assert_eq!(full.wrap_up_notes, "angry about invoice 42");
        assert_eq!(full.customer_identities.len(), 1);
        // A contact without identities or notes says so.
        c.customer_identities.clear();
        c.wrap_up_notes.clear();
        let entry = OutboxEntry::decode(contact_entry(&topics, None, &c, &effects[..1]).as_slice()).expect("entry");
        let Some(Fx::Publish(p)) = &entry.effects[0].effect else { panic!("a publish") };
        let event: pb::ContactEvent = Event::decode(&p.envelope).expect("envelope").payload().expect("payload");
        assert!(!event.customer_identified && !event.has_notes);
    }
}
