//! The matching core: a pure, deterministic state machine `apply(at, input) -> decisions`.
//! No I/O, no clock, no randomness; iteration is over ordered maps only, so the same input
//! sequence gives the same decisions on any replica (see `README.md` beside this file for
//! the rules it implements).
//!
//! One [`Router`] holds one agent pool: every queue whose agents may overlap must be routed
//! by the same router, which is what keeps a shared agent from being booked twice across
//! tenants.
//!
//! # Layout
//! - this file: [`Router`], its [`Snapshot`] and the validation of inputs;
//! - `state`: what the router keeps per agent and per contact ([`Hold`] among it), with the
//!   rules for capacity, eligibility and score, and the per-queue index;
//! - `rejected`: [`Rejected`], the core's refusals;
//! - `tests.rs`: example tests of every rule and the proptests over random pools.

mod rejected;
mod state;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

pub use centralita_routing_contract::model::*;
pub use rejected::Rejected;
use serde::{Deserialize, Serialize};
pub use state::Hold;
use state::{AgentState, ContactState, QueueIndex};

/// Bounds that keep every score far away from overflow.
const PRIORITY_LIMIT: i64 = 1_000_000;
const AGING_LIMIT: i64 = 1_000_000;
const MAX_STEPS: usize = 16;
const MAX_REQUIREMENTS: usize = 32;

/// Serialisable state of a [`Router`]; the indexes are rebuilt on restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    clock: Millis,
    agents: Vec<AgentState>,
    contacts: Vec<ContactState>,
    /// Pending wakeups. Rebuilding them from the contacts would revive wakeups that already
    /// fired and change the order in which the next tick wakes contacts. `None` in snapshots
    /// taken before they were recorded: every contact is rescheduled then.
    #[serde(default)]
    wakeups: Option<Vec<(Millis, ContactId)>>,
}

/// The routing state of one agent pool.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Router {
    clock: Millis,
    agents: BTreeMap<AgentId, AgentState>,
    /// Contacts waiting or offered (not yet accepted).
    contacts: BTreeMap<ContactId, ContactState>,
    /// Accepted contacts and the agent holding each.
    booked: BTreeMap<ContactId, AgentId>,
    queues: BTreeMap<QueueRef, QueueIndex>,
    /// (time, contact) at which something about a waiting contact changes: a relaxation
    /// step, the end of a preferred-agent window, the maximum wait.
    wakeups: BTreeSet<(Millis, ContactId)>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one input that happened at `at` and returns the decisions it causes. On
    /// error nothing changed. Time never goes backwards: an input older than the newest
    /// seen is applied at the newest time.
    pub fn apply(&mut self, at: Millis, input: Input) -> Result<Vec<Decision>, Rejected> {
        let now = at.max(self.clock);
        let mut out = Vec::new();
        match input {
            Input::AgentUpserted(profile) => {
                validate_profile(&profile)?;
                let id = profile.id.clone();
                self.unindex_agent(&id);
                let state = self.agents.entry(id.clone()).or_insert_with(|| AgentState {
                    profile: profile.clone(),
                    ready: false,
                    routed_at: now,
                    holding: BTreeMap::new(),
                });
                state.profile = profile;
                self.index_agent(&id);
                self.match_agent(&id, now, &mut out);
            }
            Input::AgentReady { agent } => {
                let state = self.agents.get_mut(&agent).ok_or_else(|| Rejected::UnknownAgent(agent.clone()))?;
                if !state.ready {
                    self.unindex_agent(&agent);
                    if let Some(state) = self.agents.get_mut(&agent) {
                        state.ready = true;
                        state.routed_at = now;
                    }
                    self.index_agent(&agent);
                    self.match_agent(&agent, now, &mut out);
                }
            }
            Input::AgentNotReady { agent } => {
                if !self.agents.contains_key(&agent) {
                    return Err(Rejected::UnknownAgent(agent));
                }
                self.unindex_agent(&agent);
                if let Some(state) = self.agents.get_mut(&agent) {
                    state.ready = false;
                }
            }
            Input::ContactQueued(contact) => {
                validate_contact(&contact)?;
                if self.contacts.contains_key(&contact.id) || self.booked.contains_key(&contact.id) {
                    return Err(Rejected::DuplicateContact(contact.id));
                }
                let id = contact.id.clone();
                self.schedule(&contact);
                let declined = contact.excluded.iter().cloned().collect();
                let state = ContactState { contact, offered_to: None, declined };
                self.queues.entry(state.contact.queue.clone()).or_default().waiting.insert(state.wait_key());
                self.contacts.insert(id.clone(), state);
                self.match_contact(&id, now, &mut out);
            }
            Input::ContactWithdrawn { contact } => {
                if let Some(agent) = self.booked.remove(&contact) {
                    self.free(&agent, &contact);
                    self.match_agent(&agent, now, &mut out);
                } else if let Some(state) = self.contacts.remove(&contact) {
                    self.drop_wakeups(&state.contact);
                    match state.offered_to {
                        Some(agent) => {
                            self.free(&agent, &contact);
                            self.match_agent(&agent, now, &mut out);
                        }
                        None => {
                            if let Some(q) = self.queues.get_mut(&state.contact.queue) {
                                q.waiting.remove(&state.wait_key());
                            }
                        }
                    }
                }
            }
            Input::OfferAccepted { contact, agent } => {
                self.require_offered(&contact, &agent)?;
                if let Some(state) = self.contacts.remove(&contact) {
                    self.drop_wakeups(&state.contact);
                }
                if let Some(a) = self.agents.get_mut(&agent) {
                    if let Some(hold) = a.holding.get_mut(&contact) {
                        hold.1 = Hold::Booked;
                    }
                }
                self.booked.insert(contact, agent);
            }
            Input::OfferDeclined { contact, agent, not_responding } => {
                self.require_offered(&contact, &agent)?;
                self.return_offer(&contact, &agent, not_responding, true, now, &mut out);
            }
            Input::OfferUndelivered { contact, agent } => {
                self.require_offered(&contact, &agent)?;
                self.return_offer(&contact, &agent, true, false, now, &mut out);
            }
            Input::ContactReleased { contact, agent } => {
                if self.booked.get(&contact) != Some(&agent) {
                    return Err(Rejected::NotBooked(contact, agent));
                }
                self.booked.remove(&contact);
                self.free(&agent, &contact);
                self.match_agent(&agent, now, &mut out);
            }
            Input::BookingMoved { from, to, agent } => {
                if self.booked.get(&from) != Some(&agent) {
                    return Err(Rejected::NotBooked(from, agent));
                }
                if self.contacts.contains_key(&to) || self.booked.contains_key(&to) {
                    return Err(Rejected::DuplicateContact(to));
                }
                self.booked.remove(&from);
                self.unindex_agent(&agent);
                if let Some(a) = self.agents.get_mut(&agent) {
                    if let Some(hold) = a.holding.remove(&from) {
                        a.holding.insert(to.clone(), hold);
                    }
                }
                self.index_agent(&agent);
                self.booked.insert(to, agent);
            }
            Input::Tick => {
                let due: Vec<(Millis, ContactId)> =
                    self.wakeups.iter().take_while(|(t, _)| *t <= now).cloned().collect();
                for key in &due {
                    self.wakeups.remove(key);
                }
                let mut seen = BTreeSet::new();
                for (_, id) in due {
                    if seen.insert(id.clone()) {
                        self.wake(&id, now, &mut out);
                    }
                }
            }
        }
        self.clock = now;
        Ok(out)
    }

    /// Number of contacts waiting (not offered) in routing.
    pub fn waiting(&self) -> usize {
        self.contacts.values().filter(|c| c.offered_to.is_none()).count()
    }

    /// Contacts waiting (not offered) in routing, by channel; a channel with none is left
    /// out. One pass over the contacts, for gauges read every tick rather than per input.
    pub fn waiting_by_channel(&self) -> BTreeMap<Channel, usize> {
        let mut by = BTreeMap::new();
        for c in self.contacts.values().filter(|c| c.offered_to.is_none()) {
            *by.entry(c.contact.channel).or_insert(0) += 1;
        }
        by
    }

    /// Number of agents that take new offers, whether or not they have spare capacity.
    pub fn ready_agents(&self) -> usize {
        self.agents.values().filter(|a| a.ready).count()
    }

    /// Contacts an agent holds, reserved by an offer or booked.
    pub fn holdings(&self, agent: &AgentId) -> Vec<(ContactId, Channel, Hold)> {
        self.agents
            .get(agent)
            .map(|a| a.holding.iter().map(|(id, (ch, h))| (id.clone(), *ch, *h)).collect())
            .unwrap_or_default()
    }

    /// The profile of an agent, if known.
    pub fn agent(&self, agent: &AgentId) -> Option<&AgentProfile> {
        self.agents.get(agent).map(|a| &a.profile)
    }

    /// Whether the agent is known and takes new offers.
    pub fn is_ready(&self, agent: &AgentId) -> bool {
        self.agents.get(agent).is_some_and(|a| a.ready)
    }

    /// The agent a contact is currently offered to, if any.
    pub fn offered_to(&self, contact: &ContactId) -> Option<&AgentId> {
        self.contacts.get(contact).and_then(|c| c.offered_to.as_ref())
    }

    /// Whether the contact is waiting or offered.
    pub fn is_routing(&self, contact: &ContactId) -> bool {
        self.contacts.contains_key(contact)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            clock: self.clock,
            agents: self.agents.values().cloned().collect(),
            contacts: self.contacts.values().cloned().collect(),
            wakeups: Some(self.wakeups.iter().cloned().collect()),
        }
    }

    pub fn restore(snapshot: Snapshot) -> Self {
        let mut router = Router { clock: snapshot.clock, ..Router::default() };
        for agent in snapshot.agents {
            for (contact, (_, hold)) in &agent.holding {
                if *hold == Hold::Booked {
                    router.booked.insert(contact.clone(), agent.profile.id.clone());
                }
            }
            router.agents.insert(agent.profile.id.clone(), agent);
        }
        let ids: Vec<AgentId> = router.agents.keys().cloned().collect();
        for id in &ids {
            router.index_agent(id);
        }
        let reschedule = snapshot.wakeups.is_none();
        router.wakeups = snapshot.wakeups.unwrap_or_default().into_iter().collect();
        for state in snapshot.contacts {
            if reschedule {
                router.schedule(&state.contact);
            }
            if state.offered_to.is_none() {
                router.queues.entry(state.contact.queue.clone()).or_default().waiting.insert(state.wait_key());
            }
            router.contacts.insert(state.contact.id.clone(), state);
        }
        router
    }

    /// An offer ends without a booking: the agent's reservation is freed, the contact goes
    /// back to its place in the queue (`declined`: never to be offered to that agent again),
    /// and with `not_ready` the agent takes no new offers until it is ready again.
    fn return_offer(
        &mut self,
        contact: &ContactId,
        agent: &AgentId,
        not_ready: bool,
        declined: bool,
        now: Millis,
        out: &mut Vec<Decision>,
    ) {
        self.free(agent, contact);
        if not_ready {
            self.unindex_agent(agent);
            if let Some(a) = self.agents.get_mut(agent) {
                a.ready = false;
            }
        }
        if let Some(state) = self.contacts.get_mut(contact) {
            state.offered_to = None;
            if declined {
                state.declined.insert(agent.clone());
            }
            let key = state.wait_key();
            let queued = state.contact.clone();
            self.queues.entry(queued.queue.clone()).or_default().waiting.insert(key);
            // A maximum wait that passed while the contact was offered fires on the next
            // tick.
            self.schedule(&queued);
        }
        self.match_contact(contact, now, out);
        self.match_agent(agent, now, out);
    }

    fn require_offered(&self, contact: &ContactId, agent: &AgentId) -> Result<(), Rejected> {
        match self.contacts.get(contact) {
            Some(c) if c.offered_to.as_ref() == Some(agent) => Ok(()),
            _ => Err(Rejected::NotOffered(contact.clone(), agent.clone())),
        }
    }

    /// Times already past are kept too: they fire on the next tick.
    fn schedule(&mut self, contact: &QueuedContact) {
        for t in wake_times(contact) {
            self.wakeups.insert((t, contact.id.clone()));
        }
    }

    fn drop_wakeups(&mut self, contact: &QueuedContact) {
        for t in wake_times(contact) {
            self.wakeups.remove(&(t, contact.id.clone()));
        }
    }

    fn wake(&mut self, id: &ContactId, now: Millis, out: &mut Vec<Decision>) {
        let Some(state) = self.contacts.get(id) else { return };
        if state.offered_to.is_some() {
            return;
        }
        let expired =
            state.contact.max_wait.as_ref().filter(|m| now - state.contact.enqueued_at >= m.after_ms).cloned();
        if let Some(max) = expired {
            let key = state.wait_key();
            let queue = state.contact.queue.clone();
            if let Some(q) = self.queues.get_mut(&queue) {
                q.waiting.remove(&key);
            }
            if let Some(state) = self.contacts.remove(id) {
                self.drop_wakeups(&state.contact);
            }
            out.push(match max.overflow_to {
                Some(to) => Decision::Overflow { contact: id.clone(), from: queue, to },
                None => Decision::TimedOut { contact: id.clone(), queue },
            });
            return;
        }
        self.match_contact(id, now, out);
    }

    fn index_agent(&mut self, id: &AgentId) {
        let Some(agent) = self.agents.get(id) else { return };
        if !agent.routable() {
            return;
        }
        let key = (agent.routed_at, id.clone());
        for q in &agent.profile.queues {
            self.queues.entry(q.clone()).or_default().agents.insert(key.clone());
        }
    }

    fn unindex_agent(&mut self, id: &AgentId) {
        let Some(agent) = self.agents.get(id) else { return };
        let key = (agent.routed_at, id.clone());
        for q in &agent.profile.queues {
            if let Some(index) = self.queues.get_mut(q) {
                index.agents.remove(&key);
            }
        }
    }

    fn free(&mut self, agent: &AgentId, contact: &ContactId) {
        self.unindex_agent(agent);
        if let Some(a) = self.agents.get_mut(agent) {
            a.holding.remove(contact);
        }
        self.index_agent(agent);
    }

    fn offer(&mut self, contact: &ContactId, agent: &AgentId, now: Millis, out: &mut Vec<Decision>) {
        let Some(state) = self.contacts.get_mut(contact) else { return };
        state.offered_to = Some(agent.clone());
        let key = state.wait_key();
        let (queue, channel, timeout) =
            (state.contact.queue.clone(), state.contact.channel, state.contact.offer_timeout_ms);
        if let Some(q) = self.queues.get_mut(&queue) {
            q.waiting.remove(&key);
        }
        self.unindex_agent(agent);
        if let Some(a) = self.agents.get_mut(agent) {
            a.holding.insert(contact.clone(), (channel, Hold::Reserved));
            a.routed_at = now;
        }
        self.index_agent(agent);
        out.push(Decision::Offer {
            contact: contact.clone(),
            agent: agent.clone(),
            queue,
            channel,
            expires_at: now.saturating_add(timeout),
        });
    }

    /// Offers a waiting contact to the eligible agent that has waited longest, if any.
    fn match_contact(&mut self, id: &ContactId, now: Millis, out: &mut Vec<Decision>) {
        let Some(state) = self.contacts.get(id) else { return };
        if state.offered_to.is_some() {
            return;
        }
        let chosen = match &state.contact.preferred {
            Some((preferred, until)) if now < *until => {
                self.agents.get(preferred).filter(|a| state.eligible(a, now)).map(|a| a.profile.id.clone())
            }
            _ => self.queues.get(&state.contact.queue).and_then(|q| {
                q.agents
                    .iter()
                    .find(|(_, a)| self.agents.get(a).is_some_and(|a| state.eligible(a, now)))
                    .map(|(_, a)| a.clone())
            }),
        };
        if let Some(agent) = chosen {
            self.offer(id, &agent, now, out);
        }
    }

    /// Fills an agent's spare capacity with the best waiting contacts it is eligible for:
    /// highest score now, then earliest in queue, then contact id.
    fn match_agent(&mut self, id: &AgentId, now: Millis, out: &mut Vec<Decision>) {
        loop {
            let Some(agent) = self.agents.get(id) else { return };
            if !agent.routable() {
                return;
            }
            let mut best: Option<(&ContactState, i128)> = None;
            for queue in &agent.profile.queues {
                let Some(index) = self.queues.get(queue) else { continue };
                let candidate =
                    index.waiting.iter().filter_map(|(_, _, c)| self.contacts.get(c)).find(|c| c.eligible(agent, now));
                if let Some(c) = candidate {
                    let score = c.score(now);
                    let better = match best {
                        None => true,
                        Some((b, bs)) => match score.cmp(&bs) {
                            Ordering::Greater => true,
                            Ordering::Less => false,
                            Ordering::Equal => {
                                (c.contact.enqueued_at, &c.contact.id) < (b.contact.enqueued_at, &b.contact.id)
                            }
                        },
                    };
                    if better {
                        best = Some((c, score));
                    }
                }
            }
            let Some((contact, _)) = best else { return };
            let contact = contact.contact.id.clone();
            self.offer(&contact, id, now, out);
        }
    }
}

/// The instants at which something about a waiting contact changes: a relaxation step, the
/// end of its preferred-agent window, its maximum wait.
fn wake_times(contact: &QueuedContact) -> Vec<Millis> {
    let mut times: Vec<Millis> = contact.steps.iter().map(|s| contact.enqueued_at.saturating_add(s.after_ms)).collect();
    if let Some((_, until)) = &contact.preferred {
        times.push(*until);
    }
    if let Some(max) = &contact.max_wait {
        times.push(contact.enqueued_at.saturating_add(max.after_ms));
    }
    times
}

fn validate_profile(p: &AgentProfile) -> Result<(), Rejected> {
    if p.id.0.is_empty() {
        return Err(Rejected::Invalid("agent id is empty".into()));
    }
    if let Some((skill, level)) = p.skills.iter().find(|(_, l)| !(1..=5).contains(*l)) {
        return Err(Rejected::Invalid(format!("skill {skill}: proficiency {level} is outside 1..=5")));
    }
    Ok(())
}

fn validate_contact(c: &QueuedContact) -> Result<(), Rejected> {
    let invalid = |m: String| Err(Rejected::Invalid(m));
    if c.id.0.is_empty() {
        return invalid("contact id is empty".into());
    }
    if c.priority.abs() > PRIORITY_LIMIT {
        return invalid(format!("priority {} is outside ±{PRIORITY_LIMIT}", c.priority));
    }
    if !(0..=AGING_LIMIT).contains(&c.aging_per_minute) {
        return invalid(format!("aging {} is outside 0..={AGING_LIMIT}", c.aging_per_minute));
    }
    if c.offer_timeout_ms <= 0 {
        return invalid("offer timeout must be positive".into());
    }
    if c.steps.len() > MAX_STEPS || c.steps.iter().any(|s| s.requirements.len() > MAX_REQUIREMENTS) {
        return invalid(format!("at most {MAX_STEPS} steps of {MAX_REQUIREMENTS} requirements"));
    }
    if c.steps.windows(2).any(|w| w[0].after_ms >= w[1].after_ms) || c.steps.iter().any(|s| s.after_ms < 0) {
        return invalid("steps must start at increasing, non-negative offsets".into());
    }
    if c.max_wait.as_ref().is_some_and(|m| m.after_ms <= 0) {
        return invalid("maximum wait must be positive".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
