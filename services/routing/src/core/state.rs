//! What the router keeps per agent and per contact, and the rules that read it: an agent's
//! capacity and skills, a contact's score, current step and eligibility, and the per-queue
//! index ordered by them (the rules are described in `README.md` beside this file).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{AgentId, AgentProfile, Channel, ContactId, Millis, QueuedContact, Requirement};

/// Priority points are compared in points·milliseconds, so that aging (points per minute)
/// stays integral.
const MS_PER_MINUTE: i128 = 60_000;

/// Whether a unit of capacity is only reserved by an offer or booked by an accepted contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hold {
    Reserved,
    Booked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct AgentState {
    pub(super) profile: AgentProfile,
    pub(super) ready: bool,
    /// When the agent last became ready or was last offered a contact: the longest-waiting
    /// agent is offered first.
    pub(super) routed_at: Millis,
    pub(super) holding: BTreeMap<ContactId, (Channel, Hold)>,
}

impl AgentState {
    fn load(&self, channel: Channel) -> u32 {
        self.holding.values().filter(|(c, _)| *c == channel).count() as u32
    }

    fn can_take(&self, channel: Channel) -> bool {
        let cap = &self.profile.capacity;
        let limit = cap.limits.get(&channel).copied().unwrap_or(0);
        if limit == 0 || self.load(channel) >= limit {
            return false;
        }
        let total = self.holding.len() as u32;
        if cap.max_total > 0 && total >= cap.max_total {
            return false;
        }
        if cap.exclusive.contains(&channel) && total > 0 {
            return false;
        }
        !self.holding.values().any(|(c, _)| cap.exclusive.contains(c))
    }

    fn has_spare(&self) -> bool {
        Channel::ALL.iter().any(|c| self.can_take(*c))
    }

    pub(super) fn routable(&self) -> bool {
        self.ready && self.has_spare()
    }

    fn meets(&self, requirements: &[Requirement]) -> bool {
        requirements.iter().all(|r| match r {
            Requirement::Skill { name, min_proficiency } => {
                self.profile.skills.get(name).is_some_and(|p| p >= min_proficiency)
            }
            Requirement::Language(lang) => self.profile.languages.contains(lang),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ContactState {
    pub(super) contact: QueuedContact,
    pub(super) offered_to: Option<AgentId>,
    pub(super) declined: BTreeSet<AgentId>,
}

impl ContactState {
    /// The part of the score that does not change with time; within a queue (one aging
    /// rate) it orders contacts exactly as the full score does at any instant.
    pub(super) fn wait_key(&self) -> WaitKey {
        let c = &self.contact;
        let fixed = c.priority as i128 * MS_PER_MINUTE - c.aging_per_minute as i128 * c.enqueued_at as i128;
        (Reverse(fixed), c.enqueued_at, c.id.clone())
    }

    pub(super) fn score(&self, now: Millis) -> i128 {
        let c = &self.contact;
        c.priority as i128 * MS_PER_MINUTE + c.aging_per_minute as i128 * (now - c.enqueued_at).max(0) as i128
    }

    fn step(&self, now: Millis) -> &[Requirement] {
        let waited = now - self.contact.enqueued_at;
        self.contact
            .steps
            .iter()
            .rev()
            .find(|s| s.after_ms <= waited)
            .or(self.contact.steps.first())
            .map(|s| s.requirements.as_slice())
            .unwrap_or(&[])
    }

    pub(super) fn eligible(&self, agent: &AgentState, now: Millis) -> bool {
        let c = &self.contact;
        if !agent.ready || self.declined.contains(&agent.profile.id) || !agent.profile.queues.contains(&c.queue) {
            return false;
        }
        if c.channel == Channel::Voice && agent.profile.phoneless_tenants.contains(&c.queue.tenant) {
            return false;
        }
        if let Some((preferred, until)) = &c.preferred {
            if now < *until && *preferred != agent.profile.id {
                return false;
            }
        }
        agent.can_take(c.channel) && agent.meets(self.step(now))
    }
}

type WaitKey = (Reverse<i128>, Millis, ContactId);
type AgentKey = (Millis, AgentId);

#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct QueueIndex {
    pub(super) waiting: BTreeSet<WaitKey>,
    /// Ready agents of the queue with some spare capacity, longest since routed first.
    pub(super) agents: BTreeSet<AgentKey>,
}
