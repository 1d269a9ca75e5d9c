//! Media follows sessions: the contacts topic's events about the calls this replica holds
//! reach their call's task. Every replica reads the whole topic in a consumer group of its
//! own (`{prefix}media.{instance}.contacts`), since any contact may be one of its calls;
//! events about contacts it does not hold are dropped at once.
//!
//! What a call's task gets is the contact's state after each event ([`ContactUpdate`]):
//! offered to an agent (with the offer), or anything else (the offer then is void).
//!
//! A call subscribes once sessions has created its contact, and routing may offer the
//! contact before that (an idle agent is offered within milliseconds of the contact being
//! queued): such an event found no call and was dropped, the phone never rang and the caller
//! waited for the offer's timeout (30 s in the voice benchmark, 30 of 500 calls). So the
//! latest update of a voice contact no call holds yet is kept for a while ([`EARLY_FOR`],
//! at most [`EARLY_MAX`] contacts) and handed to the call when it subscribes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long the update of a voice contact no call holds yet is kept for a call to come.
pub const EARLY_FOR: Duration = Duration::from_secs(10);
/// The most such updates kept (the oldest go first).
pub const EARLY_MAX: usize = 10_000;

/// The calls this replica holds, by contact name (`tenants/{t}/contacts/{id}`).
#[derive(Debug, Clone, Default)]
pub struct Offers {
    /// Locked before `early` wherever both are.
    calls: Arc<Mutex<HashMap<String, mpsc::Sender<ContactUpdate>>>>,
    early: Arc<Mutex<Early>>,
}

/// The latest update of each voice contact that no call held when it came.
#[derive(Debug, Default)]
struct Early {
    /// By contact: the update and the number of its entry in `order`.
    latest: HashMap<String, (u64, ContactUpdate)>,
    /// Every update kept, oldest first: (number, when, contact). An entry whose contact has
    /// a newer update since is stale and only waits to be dropped.
    order: VecDeque<(u64, Instant, String)>,
    next: u64,
}

impl Early {
    fn keep(&mut self, name: &str, update: ContactUpdate, now: Instant) {
        self.forget(now);
        // Stale entries count too, so `order` stays bounded however often one contact changes.
        while self.latest.len() >= EARLY_MAX || self.order.len() >= 2 * EARLY_MAX {
            if !self.drop_oldest() {
                break;
            }
        }
        self.next += 1;
        self.latest.insert(name.to_owned(), (self.next, update));
        self.order.push_back((self.next, now, name.to_owned()));
    }

    fn take(&mut self, name: &str, now: Instant) -> Option<ContactUpdate> {
        self.forget(now);
        self.latest.remove(name).map(|(_, update)| update)
    }

    /// Drops what is older than [`EARLY_FOR`].
    fn forget(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(_, at, _)| now.saturating_duration_since(*at) >= EARLY_FOR) {
            self.drop_oldest();
        }
    }

    /// Drops the oldest entry (and its contact's update, unless a newer one replaced it);
    /// false when there is none.
    fn drop_oldest(&mut self) -> bool {
        let Some((n, _, name)) = self.order.pop_front() else { return false };
        if self.latest.get(&name).is_some_and(|(kept, _)| *kept == n) {
            self.latest.remove(&name);
        }
        true
    }
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
    /// Subscribes to the updates of contact `name`; the first is the latest one that came
    /// before (see the module docs), if any.
    pub fn subscribe(&self, name: &str) -> Subscription {
        self.subscribe_at(name, Instant::now())
    }

    fn subscribe_at(&self, name: &str, now: Instant) -> Subscription {
        let (tx, updates) = mpsc::channel(16);
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(update) = self.early.lock().unwrap_or_else(|p| p.into_inner()).take(name, now) {
            // An empty channel of 16: this send cannot fail.
            let _ = tx.try_send(update);
        }
        calls.insert(name.to_owned(), tx);
        Subscription { offers: self.clone(), name: name.to_owned(), updates }
    }

    /// Hands a contact event to its call, if this replica holds it; keeps it for a while
    /// if it is about a voice contact no call holds yet.
    pub fn deliver(&self, event: &pb::ContactEvent) {
        self.deliver_at(event, Instant::now());
    }

    fn deliver_at(&self, event: &pb::ContactEvent, now: Instant) {
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
        } else if contact.channel == centralita_proto::tenancy::v1::Channel::Voice as i32
            && contact.consult_of.is_empty()
        {
            // Perhaps a call of this replica that has not subscribed yet (still under the
            // calls lock, so a subscription either sees it here or gets it sent).
            self.early.lock().unwrap_or_else(|p| p.into_inner()).keep(&contact.name, ContactUpdate::of(contact), now);
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

    fn voice(name: &str, state: pb::ContactState, agent: &str, offer: &str) -> pb::ContactEvent {
        let mut e = event(name, state, agent, offer);
        if let Some(c) = e.contact.as_mut() {
            c.channel = centralita_proto::tenancy::v1::Channel::Voice as i32;
        }
        e
    }

    #[tokio::test]
    async fn an_offer_made_before_the_call_subscribed_reaches_it_when_it_does() {
        let offers = Offers::default();
        let t0 = Instant::now();
        // Routing offered the contact before media's call subscribed: the latest update is kept.
        offers.deliver_at(&voice("tenants/acme/contacts/1", pb::ContactState::Queued, "", ""), t0);
        offers.deliver_at(&voice("tenants/acme/contacts/1", pb::ContactState::Offered, "ana", "o1"), t0);
        let mut call = offers.subscribe_at("tenants/acme/contacts/1", t0 + Duration::from_millis(5));
        assert_eq!(
            call.updates.try_recv().ok(),
            Some(ContactUpdate::Offered { agent: "ana".into(), offer: "o1".into() })
        );
        assert!(call.updates.try_recv().is_err(), "only the latest");
        // Taken once: a second subscription (a retry) gets nothing old.
        drop(call);
        let mut again = offers.subscribe_at("tenants/acme/contacts/1", t0 + Duration::from_millis(6));
        assert!(again.updates.try_recv().is_err());
        // Later events go to the subscribed call as before.
        offers.deliver(&voice("tenants/acme/contacts/1", pb::ContactState::Queued, "", ""));
        assert_eq!(again.updates.recv().await, Some(ContactUpdate::Queued));
    }

    #[test]
    fn only_voice_contacts_are_kept_and_not_for_long_nor_too_many() {
        let offers = Offers::default();
        let t0 = Instant::now();
        // Another channel's contact (never one of media's calls) or a consult leg: not kept.
        offers.deliver_at(&event("tenants/acme/contacts/chat", pb::ContactState::Offered, "ana", "o1"), t0);
        let mut leg = voice("tenants/acme/contacts/leg", pb::ContactState::Offered, "bob", "o2");
        if let Some(c) = leg.contact.as_mut() {
            c.consult_of = "tenants/acme/contacts/1".into();
        }
        offers.deliver_at(&leg, t0);
        assert!(offers.early.lock().unwrap().latest.is_empty());
        // Kept EARLY_FOR at most.
        offers.deliver_at(&voice("tenants/acme/contacts/old", pb::ContactState::Offered, "ana", "o3"), t0);
        let mut late = offers.subscribe_at("tenants/acme/contacts/old", t0 + EARLY_FOR);
        assert!(late.updates.try_recv().is_err(), "expired");
        // At most EARLY_MAX: the oldest go first, a contact updated since keeps its latest.
        let t1 = t0 + EARLY_FOR + Duration::from_secs(1);
        for i in 0..EARLY_MAX + 5 {
            offers.deliver_at(&voice(&format!("tenants/acme/contacts/n{i}"), pb::ContactState::Queued, "", ""), t1);
        }
        let early = offers.early.lock().unwrap();
        assert_eq!(early.latest.len(), EARLY_MAX);
        assert!(!early.latest.contains_key("tenants/acme/contacts/n0"));
        assert!(early.latest.contains_key(&format!("tenants/acme/contacts/n{}", EARLY_MAX + 4)));
        assert!(early.order.len() <= 2 * EARLY_MAX);
        drop(early);
        // One contact changing often: its latest is kept, the stale entries stay bounded.
        let t2 = t1 + EARLY_FOR + Duration::from_secs(1);
        for i in 0..3 * EARLY_MAX {
            let state = if i % 2 == 0 { pb::ContactState::Queued } else { pb::ContactState::Offered };
            offers.deliver_at(&voice("tenants/acme/contacts/busy", state, "ana", &format!("o{i}")), t2);
        }
        assert!(offers.early.lock().unwrap().order.len() <= 2 * EARLY_MAX);
        let mut busy = offers.subscribe_at("tenants/acme/contacts/busy", t2);
        let last = 3 * EARLY_MAX - 1;
        assert_eq!(
            busy.updates.try_recv().ok(),
            Some(ContactUpdate::Offered { agent: "ana".into(), offer: format!("o{last}") })
        );
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
