//! Property tests over random command sequences: a small world of contacts and agents
//! driven only through the core's functions, with a model router that books capacity from
//! the routing inputs the core emits (and offers only what it may book, as routing does).
//! After every step: no contact is in an illegal state, no contact is held by two agents,
//! no agent is above its capacity, agents' lists, routing's bookings and pending timers
//! agree with the contacts; and the same sequence always gives the same effects.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use centralita_routing_contract::Input;

use super::agent::{self, StateCommand};
use super::consult::{self, Outcome};
use super::contact::{self, Target};
use super::effects::{Change, Effect, Timer};
use super::model::*;
use super::tests::{a, new_contact, queue};

const AGENTS: [&str; 3] = ["ana", "bob", "cy"];
const CAPACITY: usize = 2;

#[derive(Debug, Clone)]
enum Cmd {
    Create(u8),
    /// The router offers contact to agent (if it may).
    Offer(u8, u8),
    Accept(u8),
    /// An answer from the wrong agent or to an old offer: must be refused.
    WrongAccept(u8, u8),
    Reject(u8),
    Rona(u8),
    Hold(u8),
    Resume(u8),
    Transfer(u8),
    End(u8),
    WrapUp(u8),
    AcwElapsed(u8),
    Overflow(u8),
    TimeOut(u8),
    Consult(u8, u8),
    Complete(u8, u8),
    Away(u8),
    Available(u8),
    PresenceLapsed(u8),
}

fn cmd() -> impl Strategy<Value = Cmd> {
    // Few contacts and a lifecycle-heavy mix, so that random sequences often carry a
    // contact all the way (offered, accepted, consulted, ended, wrapped up).
    let c = 0u8..4;
    let ag = 0u8..3;
    prop_oneof![
        3 => c.clone().prop_map(Cmd::Create),
        5 => (c.clone(), ag.clone()).prop_map(|(c, a)| Cmd::Offer(c, a)),
        5 => c.clone().prop_map(Cmd::Accept),
        1 => (c.clone(), ag.clone()).prop_map(|(c, a)| Cmd::WrongAccept(c, a)),
        1 => c.clone().prop_map(Cmd::Reject),
        1 => c.clone().prop_map(Cmd::Rona),
        1 => c.clone().prop_map(Cmd::Hold),
        1 => c.clone().prop_map(Cmd::Resume),
        1 => c.clone().prop_map(Cmd::Transfer),
        3 => c.clone().prop_map(Cmd::End),
        3 => c.clone().prop_map(Cmd::WrapUp),
        1 => c.clone().prop_map(Cmd::AcwElapsed),
        1 => c.clone().prop_map(Cmd::Overflow),
        1 => c.clone().prop_map(Cmd::TimeOut),
        2 => (c.clone(), ag.clone()).prop_map(|(c, a)| Cmd::Consult(c, a)),
        2 => (c.clone(), 0u8..3).prop_map(|(c, o)| Cmd::Complete(c, o)),
        1 => ag.clone().prop_map(Cmd::Away),
        1 => ag.clone().prop_map(Cmd::Available),
        1 => ag.prop_map(Cmd::PresenceLapsed),
    ]
}

#[derive(Debug, Default)]
struct World {
    now: Millis,
    next_id: u32,
    contacts: BTreeMap<ContactId, Contact>,
    /// Contact index (of the command) to its contact id, customers only.
    customers: BTreeMap<u8, ContactId>,
    agents: BTreeMap<AgentId, Agent>,
    /// The model router's bookings: contact to agent.
    booked: BTreeMap<ContactId, AgentId>,
    timers: BTreeSet<String>,
    /// Every effect in order, for the determinism check.
    log: Vec<String>,
}

fn agent_record(id: &str) -> Agent {
    Agent {
        id: a(id),
        display_name: id.into(),
        queues: vec![QueueRef::new("acme", "sales")],
        skills: Default::default(),
        languages: Vec::new(),
        capacity: vec![ChannelCapacity { channel: Channel::Voice, max_contacts: CAPACITY as u32, exclusive: false }],
        max_total_contacts: 0,
        state: AgentState::Available,
        away_reason: String::new(),
        contacts: Vec::new(),
        state_time: Some(0),
        agent_pool: "default".into(),
        phones: Default::default(),
    }
}

impl World {
    fn new() -> Self {
        let agents = AGENTS.iter().map(|id| (a(id), agent_record(id))).collect();
        World { agents, ..Default::default() }
    }

    fn id(&mut self) -> ContactId {
        self.next_id += 1;
        ContactId(format!("k{}", self.next_id))
    }

    fn customer(&self, i: u8) -> Option<Contact> {
        self.customers.get(&i).and_then(|id| self.contacts.get(id)).cloned()
    }

    fn load(&self, agent: &AgentId) -> usize {
        self.booked.values().filter(|b| *b == agent).count()
    }

    /// Applies a contact change and everything it causes, as the engine would.
    fn contact(&mut self, change: Change<Contact>) {
        let c = change.record.clone();
        self.contacts.insert(c.id.clone(), c.clone());
        for e in change.effects {
            self.log.push(format!("{}: {e:?}", c.id));
            match e {
                Effect::Route(input) => self.route(input),
                Effect::Schedule { timer, .. } => {
                    self.timers.insert(timer.member());
                }
                Effect::Cancel(timer) => {
                    self.timers.remove(&timer.member());
                }
                Effect::AgentContact { agent, add, .. } => {
                    if let Some(rec) = self.agents.get(&agent) {
                        let updated = agent::list_contact(rec, &c.key(), add);
                        self.agents.insert(agent, updated);
                    }
                }
                Effect::Linked { contact, change: linked } => {
                    if let Some(other) = self.contacts.get(&contact).cloned() {
                        if let Ok(ch) = consult::linked(&other, &linked, self.now) {
                            self.contact(ch);
                        }
                    }
                }
                Effect::AgentNotResponding(agent) => {
                    if let Some(rec) = self.agents.get(&agent) {
                        let ch = agent::not_responding(rec, self.now);
                        self.agent(ch);
                    }
                }
                Effect::ContactEvent { .. } | Effect::Notify { .. } | Effect::Close | Effect::AgentEvent(_) => {}
            }
        }
    }

    fn agent(&mut self, change: Change<Agent>) {
        for e in &change.effects {
            self.log.push(format!("{}: {e:?}", change.record.id));
        }
        self.agents.insert(change.record.id.clone(), change.record);
    }

    /// The model router's bookkeeping of the inputs sessions sends it.
    fn route(&mut self, input: Input) {
        match input {
            Input::OfferAccepted { contact, agent } => {
                self.booked.insert(contact, agent);
            }
            Input::OfferDeclined { contact, .. }
            | Input::OfferUndelivered { contact, .. }
            | Input::ContactWithdrawn { contact }
            | Input::ContactReleased { contact, .. } => {
                self.booked.remove(&contact);
            }
            Input::BookingMoved { from, to, agent } => {
                self.booked.remove(&from);
                self.booked.insert(to, agent);
            }
            Input::ContactQueued(_)
            | Input::Tick
            | Input::AgentUpserted(_)
            | Input::AgentReady { .. }
            | Input::AgentNotReady { .. } => {}
        }
    }

    fn step(&mut self, cmd: &Cmd) {
        self.now += 1_000;
        let now = self.now;
        let q = queue("sales");
        let agent_of = |i: u8| a(AGENTS[i as usize % AGENTS.len()]);
        let result: Option<Result<Change<Contact>, super::Refusal>> = match *cmd {
            Cmd::Create(i) => {
                if self.customers.contains_key(&i) {
                    None
                } else {
                    let id = self.id();
                    self.customers.insert(i, id.clone());
                    let mut c = new_contact(&id.0, now);
                    c.id = id;
                    Some(Ok(contact::create(c, &q, now)))
                }
            }
            Cmd::Offer(i, ag) => {
                // Any contact (legs included) by index among all contacts.
                let c = self.contacts.values().nth(i as usize).cloned();
                let agent = agent_of(ag);
                let free = self.agents[&agent].state == AgentState::Available && self.load(&agent) < CAPACITY;
                match c {
                    Some(c) if free && c.state == ContactState::Queued => {
                        // The router reserves the agent for the offer.
                        self.booked.insert(c.id.clone(), agent.clone());
                        let offer = OfferId(format!("o{now}"));
                        Some(contact::offer(&c, &agent, offer, now + 15_000))
                    }
                    _ => None,
                }
            }
            Cmd::Accept(i) | Cmd::Reject(i) | Cmd::Rona(i) => {
                let c = self.contacts.values().nth(i as usize).cloned();
                c.and_then(|c| {
                    let (agent, offer) = (c.agent.clone()?, c.offer_id()?.clone());
                    Some(match cmd {
                        Cmd::Accept(_) => contact::accept(&c, &agent, &offer, now),
                        Cmd::Reject(_) => contact::reject(&c, &agent, &offer),
                        _ => contact::rona(&c, &agent, &offer),
                    })
                })
            }
            Cmd::WrongAccept(i, ag) => {
                if let Some(c) = self.contacts.values().nth(i as usize).cloned() {
                    let wrong = contact::accept(&c, &agent_of(ag), &OfferId("never".into()), now);
                    assert!(wrong.is_err(), "an unknown offer was accepted: {c:?}");
                }
                None
            }
            Cmd::Hold(i)
            | Cmd::Resume(i)
            | Cmd::Transfer(i)
            | Cmd::End(i)
            | Cmd::WrapUp(i)
            | Cmd::AcwElapsed(i)
            | Cmd::Overflow(i)
            | Cmd::TimeOut(i) => {
                let c = self.contacts.values().nth(i as usize).cloned();
                c.map(|c| {
                    let holder = c.agent.clone().unwrap_or_else(|| a("nobody"));
                    match cmd {
                        Cmd::Hold(_) => contact::hold(&c, &holder),
                        Cmd::Resume(_) => contact::resume(&c, &holder),
                        Cmd::Transfer(_) => {
                            let to = Target { queue: "support".into(), agent: None };
                            contact::transfer(&c, &holder, &to, &queue("support"), now)
                        }
                        Cmd::End(_) => contact::end(&c, 30_000, now),
                        Cmd::WrapUp(_) => contact::wrap_up(&c, "done", "", now),
                        Cmd::AcwElapsed(_) => contact::acw_elapsed(&c, now),
                        Cmd::Overflow(_) => contact::overflow(&c, "spill", &queue("spill"), now),
                        _ => contact::time_out(&c, now),
                    }
                })
            }
            Cmd::Consult(i, ag) => {
                let c = self.customer(i);
                let leg = self.id();
                c.map(|c| {
                    let holder = c.agent.clone().unwrap_or_else(|| a("nobody"));
                    let to = Target { queue: "sales".into(), agent: Some(agent_of(ag)) };
                    consult::consult(&c, &holder, &to, &q, leg, now).map(|k| {
                        // The customer's write first, then the leg.
                        self.contact(k.customer);
                        k.leg
                    })
                })
            }
            Cmd::Complete(i, o) => self.customer(i).and_then(|c| {
                let holder = c.agent.clone()?;
                let leg = c.consult_leg.clone()?;
                let outcome = [Outcome::Transfer, Outcome::Conference, Outcome::Cancel][o as usize];
                let consulted = match outcome {
                    Outcome::Cancel => None,
                    _ => match consult::consulted_agent(self.contacts.get(&leg)) {
                        Ok(a) => Some(a),
                        Err(refused) => return Some(Err(refused)),
                    },
                };
                Some(consult::complete_consult(&c, &holder, &leg, outcome, consulted.as_ref(), now))
            }),
            Cmd::Away(ag) | Cmd::Available(ag) | Cmd::PresenceLapsed(ag) => {
                let rec = self.agents[&agent_of(ag)].clone();
                let change = match cmd {
                    Cmd::Away(_) => agent::set_state(&rec, StateCommand::Set, AgentState::Away, "lunch", |_| true, now),
                    Cmd::Available(_) => {
                        agent::set_state(&rec, StateCommand::Set, AgentState::Available, "", |_| true, now)
                    }
                    _ => Ok(agent::presence_lapsed(&rec, now)),
                };
                if let Ok(change) = change {
                    self.agent(change);
                }
                None
            }
        };
        match result {
            Some(Ok(change)) => self.contact(change),
            Some(Err(refused)) => {
                self.log.push(format!("refused: {refused}"));
                // A refused offer frees what the router reserved for it.
                if let Cmd::Offer(i, _) = cmd {
                    if let Some(c) = self.contacts.values().nth(*i as usize) {
                        if c.state != ContactState::Offered {
                            self.booked.remove(&c.id.clone());
                        }
                    }
                }
            }
            None => {}
        }
    }

    fn check(&self) {
        for c in self.contacts.values() {
            let holders: Vec<&Participant> =
                c.participants.iter().filter(|p| p.left_at.is_none() && p.role == Role::Holder).collect();
            assert!(holders.len() <= 1, "{} held by two agents: {holders:?}", c.id);
            match c.state {
                ContactState::Queued => {
                    assert!(c.agent.is_none() && c.offer.is_none(), "queued with an agent: {c:?}");
                    assert!(c.participants.iter().all(|p| p.left_at.is_some()), "queued with participants: {c:?}");
                }
                ContactState::Offered => assert!(c.agent.is_some() && c.offer.is_some(), "offer without agent: {c:?}"),
                ContactState::Connected => {
                    assert!(c.agent.is_some(), "connected without agent: {c:?}");
                    assert_eq!(holders.first().map(|p| &p.agent), c.agent.as_ref(), "holder is not the agent: {c:?}");
                }
                ContactState::AfterContactWork => {
                    assert!(c.agent.is_some() && holders.is_empty(), "after-contact work: {c:?}");
                }
                ContactState::Closed | ContactState::Abandoned | ContactState::TimedOut => {
                    assert!(c.closed_at.is_some(), "ended without close time: {c:?}");
                    assert!(c.participants.iter().all(|p| p.left_at.is_some()), "ended with participants: {c:?}");
                }
            }
            // Routing's bookings follow the contact's agent while it holds capacity.
            let holds =
                matches!(c.state, ContactState::Offered | ContactState::Connected | ContactState::AfterContactWork);
            let expected = if holds { c.agent.as_ref() } else { None };
            assert_eq!(self.booked.get(&c.id), expected, "routing's booking of {} disagrees: {c:?}", c.id);
            // Pending timers belong to the state that set them.
            let offer_timer = c
                .offer_id()
                .map(|o| Timer::Offer { tenant: c.tenant.clone(), contact: c.id.clone(), offer: o.clone() }.member());
            let acw = Timer::AfterContactWork { tenant: c.tenant.clone(), contact: c.id.clone() }.member();
            let has_offer_timer = offer_timer.as_ref().is_some_and(|t| self.timers.contains(t));
            assert_eq!(has_offer_timer, c.state == ContactState::Offered, "offer timer of {c:?}");
            assert_eq!(self.timers.contains(&acw), c.state == ContactState::AfterContactWork, "acw timer of {c:?}");
        }
        for (id, agent) in &self.agents {
            assert!(self.load(id) <= CAPACITY, "{id} above capacity");
            let mut listed: Vec<&ContactId> = agent.contacts.iter().map(|c| &c.id).collect();
            listed.sort();
            let mut holding: Vec<&ContactId> = self
                .contacts
                .values()
                .filter(|c| c.agent.as_ref() == Some(id))
                .filter(|c| {
                    matches!(c.state, ContactState::Offered | ContactState::Connected | ContactState::AfterContactWork)
                })
                .map(|c| &c.id)
                .collect();
            holding.sort();
            assert_eq!(listed, holding, "{id}'s list disagrees with the contacts");
        }
    }
}

fn run(cmds: &[Cmd]) -> Vec<String> {
    let mut world = World::new();
    for cmd in cmds {
        world.step(cmd);
        world.check();
    }
    world.log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_keep_the_invariants(cmds in proptest::collection::vec(cmd(), 1..80)) {
        let first = run(&cmds);
        prop_assert_eq!(first, run(&cmds), "the same sequence gave other effects");
    }
}

/// A sequence that reaches every branch the properties watch: offer, accept, consult,
/// transfer by hand-over, conference, cancel, end, wrap-up.
#[test]
fn a_scripted_sequence_through_consults_keeps_the_invariants() {
    use Cmd::*;
    let script = [
        Create(0),
        Offer(0, 0),
        Accept(0),
        Consult(0, 1),
        Offer(1, 1),
        Accept(1),
        Complete(0, 1),
        Complete(0, 2),
        Consult(0, 2),
        Offer(1, 2),
        Offer(2, 2),
        Accept(2),
        Complete(0, 0),
        End(0),
        WrapUp(0),
        Create(1),
        Offer(3, 1),
        Rona(3),
        End(3),
    ];
    let mut world = World::new();
    for cmd in &script {
        world.step(cmd);
        world.check();
    }
    let c0 = world.customer(0).unwrap();
    assert_eq!(c0.state, ContactState::Closed);
    assert_eq!(c0.transfer_count, 1, "handed over once");
    assert!(world.booked.is_empty(), "every booking released: {:?}", world.booked);
    assert!(world.timers.is_empty(), "every timer done: {:?}", world.timers);
}
