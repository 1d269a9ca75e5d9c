//! Media follows sessions: the contacts topic's events about the calls this replica holds
//! reach their call's task. Every replica reads the whole topic in a consumer group of its
//! own (`{prefix}media.{instance}.contacts`), since any contact may be one of its calls;
//! events about contacts it does not hold are dropped at once.
//!
//! What a call's task gets is the contact's state after each event ([`ContactUpdate`]):
//! offered to an agent (with the offer), or anything else (the offer then is void).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use centralita_platform::bus::{Consumer, ConsumerSettings, Event, Handler, MemoryDedupe};
use centralita_platform::error::Error;
use centralita_platform::server::Runtime;
use centralita_proto::sessions::v1 as pb;
use tokio::sync::mpsc;

use crate::Config;

/// The contact's state after an event, as a call's task needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactUpdate {
    /// Offered to `agent` under `offer` (until it expires, is rejected or accepted).
    Offered { agent: String, offer: String },
    /// Accepted: connected to `agent`; its recording paused (PCI) or not; the customer on
    /// hold (HoldContact, or consulting) or not. `consult_leg`:
    /// the agent consults on that leg (the customer is on hold meanwhile); `conferenced`:
    /// the agents conferenced in from a consult leg, still on the contact.
    Connected {
        agent: String,
        recording_paused: bool,
        on_hold: bool,
        consult_leg: Option<String>,
        conferenced: Vec<String>,
        /// The supervisor on the call (MonitorContact) and how.
        monitor: Option<(String, Monitoring)>,
    },
    /// An update of a consult leg of the call's contact (a contact whose `consult_of` is the
    /// call's contact): `leg` is its name, `update` its own state as above.
    Leg { leg: String, update: Box<ContactUpdate> },
    /// Back in its queue (offer rejected, not answered, transferred).
    Queued,
    /// Over for the customer (ended, abandoned, timed out, closed).
    Over,
    /// Another state (held, consulting): nothing for the call to do yet.
    Other,
}

/// How a supervisor is on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitoring {
    /// Hears both parties, heard by no one.
    Listen,
    /// Heard by the agent only.
    Whisper,
    /// Heard by both.
    Barge,
}

impl ContactUpdate {
    pub fn of(contact: &pb::Contact) -> Self {
        use pb::ContactState as S;
        match S::try_from(contact.state).unwrap_or(S::Unspecified) {
            S::Offered if !contact.agent_id.is_empty() && !contact.offer_id.is_empty() => {
                ContactUpdate::Offered { agent: contact.agent_id.clone(), offer: contact.offer_id.clone() }
            }
            S::Connected => ContactUpdate::Connected {
                agent: contact.agent_id.clone(),
                recording_paused: contact.recording_paused,
                on_hold: contact.on_hold,
                consult_leg: Some(contact.consult_leg.clone()).filter(|l| !l.is_empty()),
                conferenced: contact
                    .participants
                    .iter()
                    .filter(|p| p.role == pb::participant::Role::Conferenced as i32 && p.leave_time.is_none())
                    .map(|p| p.agent_id.clone())
                    .collect(),
                monitor: contact.monitor.as_ref().and_then(|m| {
                    let mode = match pb::MonitorMode::try_from(m.mode).ok()? {
                        pb::MonitorMode::Listen => Monitoring::Listen,
                        pb::MonitorMode::Whisper => Monitoring::Whisper,
                        pb::MonitorMode::Barge => Monitoring::Barge,
                        pb::MonitorMode::Unspecified => return None,
                    };
                    Some((m.supervisor.clone(), mode)).filter(|(s, _)| !s.is_empty())
                }),
            },
            S::Queued => ContactUpdate::Queued,
            S::AfterContactWork | S::Closed | S::Abandoned | S::TimedOut => ContactUpdate::Over,
            _ => ContactUpdate::Other,
        }
    }
}

/// The calls this replica holds, by contact name (`tenants/{t}/contacts/{id}`).
#[derive(Debug, Clone, Default)]
pub struct Offers {
    calls: Arc<Mutex<HashMap<String, mpsc::Sender<ContactUpdate>>>>,
}

/// A call's subscription to its contact's updates; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    offers: Offers,
    name: String,
    pub updates: mpsc::Receiver<ContactUpdate>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.offers.calls.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.name);
    }
}

impl Offers {
    /// Subscribes to the updates of contact `name`.
    pub fn subscribe(&self, name: &str) -> Subscription {
        let (tx, updates) = mpsc::channel(16);
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), tx);
        Subscription { offers: self.clone(), name: name.to_owned(), updates }
    }

    /// Hands a contact event to its call, if this replica holds it.
    pub fn deliver(&self, event: &pb::ContactEvent) {
        let Some(contact) = &event.contact else { return };
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        // A consult leg's events reach the call of its customer's contact too: the
        // consulted agent's phone is rung and bridged by that call.
        if let Some(call) = calls.get(&contact.consult_of).filter(|_| !contact.consult_of.is_empty()) {
            let update = ContactUpdate::Leg { leg: contact.name.clone(), update: Box::new(ContactUpdate::of(contact)) };
            if call.try_send(update).is_err() {
                tracing::warn!(contact = %contact.consult_of, "a call's contact updates are backed up: one dropped");
            }
        }
        if let Some(call) = calls.get(&contact.name) {
            // A call whose queue is full is busy with earlier updates; the latest state
            // matters more, but updates are few per call (offers every few seconds).
            if call.try_send(ContactUpdate::of(contact)).is_err() {
                tracing::warn!(contact = %contact.name, "a call's contact updates are backed up: one dropped");
            }
        }
    }
}

/// The consumer's handler: decodes and delivers.
#[derive(Debug)]
pub struct Follower {
    offers: Offers,
}

impl Handler for Follower {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        let e: pb::ContactEvent = event.payload()?;
        self.offers.deliver(&e);
        Ok(())
    }
}

/// Starts following the contacts topic on `runtime`; returns the index calls subscribe in.
pub fn follow(runtime: &mut Runtime, config: &Config, instance: &str) -> Result<Offers, Error> {
    let offers = Offers::default();
    let kafka = &config.common.kafka;
    let consumer = Consumer::new(
        ConsumerSettings {
            brokers: kafka.brokers.clone(),
            group_id: format!("{}media.{instance}.contacts", kafka.topic_prefix),
            topics: vec![runtime.topics.contacts()],
            // On the customer's path: an offer rings the phone as soon as it is made.
            fetch_wait: kafka.fetch_wait_low_latency(),
            group_instance_id: kafka.group_instance_id.as_ref().map(|id| format!("{id}-contacts")),
        },
        Follower { offers: offers.clone() },
        MemoryDedupe::new(10_000),
        Some(runtime.metrics.clone()),
    )?;
    let shutdown = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = consumer.run(shutdown).await {
            tracing::error!(error = %e, "contact event follower stopped");
        }
    });
    Ok(offers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, state: pb::ContactState, agent: &str, offer: &str) -> pb::ContactEvent {
        pb::ContactEvent {
            contact: Some(pb::Contact {
                name: name.into(),
                state: state as i32,
                agent_id: agent.into(),
                offer_id: offer.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_call_gets_its_own_contacts_updates_only_while_subscribed() {
        let offers = Offers::default();
        let mut mine = offers.subscribe("tenants/acme/contacts/1");
        offers.deliver(&event("tenants/acme/contacts/2", pb::ContactState::Offered, "bob", "o2"));
        offers.deliver(&event("tenants/acme/contacts/1", pb::ContactState::Offered, "alice", "o1"));
        offers.deliver(&event("tenants/acme/contacts/1", pb::ContactState::Queued, "", ""));
        offers.deliver(&event("tenants/acme/contacts/1", pb::ContactState::Connected, "alice", ""));
        offers.deliver(&event("tenants/acme/contacts/1", pb::ContactState::Abandoned, "", ""));
        // An offer without its agent or id is no offer media can act on.
        offers.deliver(&event("tenants/acme/contacts/1", pb::ContactState::Offered, "", "o3"));
        offers.deliver(&pb::ContactEvent::default());
        let mut got = Vec::new();
        while let Ok(u) = mine.updates.try_recv() {
            got.push(u);
        }
        assert_eq!(
            got,
            [
                ContactUpdate::Offered { agent: "alice".into(), offer: "o1".into() },
                ContactUpdate::Queued,
                ContactUpdate::Connected {
                    agent: "alice".into(),
                    recording_paused: false,
                    on_hold: false,
                    consult_leg: None,
                    conferenced: vec![],
                    monitor: None,
                },
                ContactUpdate::Over,
                ContactUpdate::Other,
            ]
        );
        drop(mine);
        assert!(offers.calls.lock().expect("lock").is_empty(), "unsubscribed on drop");
    }

    #[tokio::test]
    async fn a_consult_legs_events_reach_its_customers_call_with_the_consult_and_conference_read() {
        let offers = Offers::default();
        let mut mine = offers.subscribe("tenants/acme/contacts/1");
        let mut consulting = event("tenants/acme/contacts/1", pb::ContactState::Connected, "ana", "");
        if let Some(c) = consulting.contact.as_mut() {
            c.on_hold = true;
            c.consult_leg = "tenants/acme/contacts/9".into();
            let joined = |agent: &str, role: pb::participant::Role, left: bool| pb::Participant {
                agent_id: agent.into(),
                role: role as i32,
                join_time: Some(Default::default()),
                leave_time: left.then(Default::default),
            };
            c.monitor = Some(pb::ContactMonitor {
                supervisor: "sue".into(),
                mode: pb::MonitorMode::Whisper as i32,
                start_time: None,
            });
            c.participants = vec![
                joined("ana", pb::participant::Role::Holder, false),
                joined("bob", pb::participant::Role::Conferenced, false),
                joined("eve", pb::participant::Role::Conferenced, true),
            ];
        }
        offers.deliver(&consulting);
        let mut leg = event("tenants/acme/contacts/9", pb::ContactState::Offered, "bob", "o9");
        if let Some(c) = leg.contact.as_mut() {
            c.consult_of = "tenants/acme/contacts/1".into();
        }
        offers.deliver(&leg);
        // Another call's leg does not reach this one.
        if let Some(c) = leg.contact.as_mut() {
            c.consult_of = "tenants/acme/contacts/2".into();
        }
        offers.deliver(&leg);
        let mut got = Vec::new();
        while let Ok(u) = mine.updates.try_recv() {
            got.push(u);
        }
        assert_eq!(
            got,
            [
                ContactUpdate::Connected {
                    agent: "ana".into(),
                    recording_paused: false,
                    on_hold: true,
                    consult_leg: Some("tenants/acme/contacts/9".into()),
                    conferenced: vec!["bob".into()],
                    monitor: Some(("sue".into(), Monitoring::Whisper)),
                },
                ContactUpdate::Leg {
                    leg: "tenants/acme/contacts/9".into(),
                    update: Box::new(ContactUpdate::Offered { agent: "bob".into(), offer: "o9".into() }),
                },
            ]
        );
    }
}
