//! Plain data the contact core works on: contacts, agents, offers and participants, with
//! ids as newtypes. No protobuf here: `crate::wire` converts to and from the wire and
//! stored form at the edges.

use std::collections::BTreeMap;

use centralita_platform::identity::Identity;
use centralita_platform::tenant::TenantId;
pub use centralita_routing_contract::{AgentId, Channel, ContactId, Millis, QueueRef};

/// An offer's id: an agent accepts or rejects one offer, never "whatever is offered now".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OfferId(pub String);

impl std::fmt::Display for OfferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A contact by its full identity: contacts are per tenant, agents are BPO-wide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContactRef {
    pub tenant: TenantId,
    pub id: ContactId,
}

/// Where a contact is in its life (see [`super::lifecycle`] for the moves between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContactState {
    Queued,
    Offered,
    Connected,
    AfterContactWork,
    Closed,
    Abandoned,
    TimedOut,
}

impl ContactState {
    pub const ALL: [ContactState; 7] = [
        ContactState::Queued,
        ContactState::Offered,
        ContactState::Connected,
        ContactState::AfterContactWork,
        ContactState::Closed,
        ContactState::Abandoned,
        ContactState::TimedOut,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, ContactState::Closed | ContactState::Abandoned | ContactState::TimedOut)
    }

    /// How refusals name the state ("a contact that is queued").
    pub fn describe(self) -> &'static str {
        match self {
            ContactState::Queued => "queued",
            ContactState::Offered => "offered",
            ContactState::Connected => "connected",
            ContactState::AfterContactWork => "in after-contact work",
            ContactState::Closed => "closed",
            ContactState::Abandoned => "abandoned",
            ContactState::TimedOut => "timed out",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Inbound,
    Outbound,
}

/// The customer's value tier, as CRM or the channel said (unknown when nobody did).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CustomerTier {
    #[default]
    Unknown,
    Standard,
    Vip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillRequirement {
    pub skill: String,
    pub min_proficiency: u32,
}

/// The offer a contact is under (or was accepted from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub id: OfferId,
    pub expires_at: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the contact (accepted it, or took it over in a warm transfer).
    Holder,
    /// Joined the holder's contact in a conference.
    Conferenced,
}

/// How a supervisor is on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMode {
    /// Hears both parties, heard by no one.
    Listen,
    /// Hears both, heard by the agent only.
    Whisper,
    /// Hears both, heard by both.
    Barge,
}

/// The supervisor on a call, since when (the first mode's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    pub supervisor: String,
    pub mode: MonitorMode,
    pub since: Millis,
}

/// An agent's time on a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub agent: AgentId,
    pub role: Role,
    pub joined_at: Option<Millis>,
    pub left_at: Option<Millis>,
}

/// A contact (interaction): one customer conversation on one channel, or a consult leg
/// between two agents (`consult_of` set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub tenant: TenantId,
    pub id: ContactId,
    pub channel: Channel,
    pub direction: Direction,
    pub queue: String,
    pub state: ContactState,
    pub priority: i32,
    pub tier: CustomerTier,
    pub language: String,
    pub required_skills: Vec<SkillRequirement>,
    pub attributes: BTreeMap<String, String>,
    /// The agent it is offered to, held by, or was last held by (after-contact work).
    pub agent: Option<AgentId>,
    pub offer: Option<Offer>,
    pub on_hold: bool,
    pub disposition: String,
    pub preferred_agent: Option<AgentId>,
    pub created_at: Option<Millis>,
    pub enqueued_at: Option<Millis>,
    pub connected_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub closed_at: Option<Millis>,
    /// Why it ended, as its ender said (EndContact's `cause`; empty when not said).
    pub end_cause: String,
    pub previous_agents: Vec<AgentId>,
    pub transfer_count: u32,
    pub customer_identities: Vec<Identity>,
    /// A consult leg: the customer's contact it consults on (same tenant).
    pub consult_of: Option<ContactId>,
    /// A customer's contact: its open consult leg (same tenant).
    pub consult_leg: Option<ContactId>,
    pub participants: Vec<Participant>,
    /// The agent pool whose router routes it, fixed at creation.
    pub agent_pool: String,
    /// The W3C `traceparent` of the contact's trace (opaque here; empty when untraced).
    pub trace_parent: String,
    /// The call's recording is paused (PCI) until resumed.
    pub recording_paused: bool,
    /// The supervisor on the call ([`super::monitor`]).
    pub monitor: Option<Monitor>,
    /// The notes given at wrap-up: personal free text, kept here (erased with the customer,
    /// expiring with the record) and never put in an event.
    pub wrap_up_notes: String,
}

impl Contact {
    /// A new contact on `channel` waiting in `queue` since `now`, routed in `agent_pool`,
    /// with nothing else set yet.
    pub fn queued(
        tenant: TenantId,
        id: ContactId,
        channel: Channel,
        queue: String,
        agent_pool: String,
        now: Millis,
    ) -> Self {
        Contact {
            tenant,
            id,
            channel,
            direction: Direction::Inbound,
            queue,
            state: ContactState::Queued,
            priority: 0,
            tier: CustomerTier::Unknown,
            language: String::new(),
            required_skills: Vec::new(),
            attributes: BTreeMap::new(),
            agent: None,
            offer: None,
            on_hold: false,
            disposition: String::new(),
            preferred_agent: None,
            created_at: Some(now),
            enqueued_at: Some(now),
            connected_at: None,
            ended_at: None,
            closed_at: None,
            end_cause: String::new(),
            previous_agents: Vec::new(),
            transfer_count: 0,
            customer_identities: Vec::new(),
            consult_of: None,
            consult_leg: None,
            participants: Vec::new(),
            agent_pool,
            trace_parent: String::new(),
            recording_paused: false,
            monitor: None,
            wrap_up_notes: String::new(),
        }
    }

    pub fn key(&self) -> ContactRef {
        ContactRef { tenant: self.tenant.clone(), id: self.id.clone() }
    }

    /// Whether `agent` is on the contact now (holding it or conferenced in).
    pub fn is_participant(&self, agent: &AgentId) -> bool {
        self.agent.as_ref() == Some(agent) || self.participants.iter().any(|p| p.agent == *agent && p.left_at.is_none())
    }

    /// Agents on the contact now, holder first: one entry per open participation.
    pub fn open_participants(&self) -> impl Iterator<Item = &Participant> {
        self.participants.iter().filter(|p| p.left_at.is_none())
    }

    pub fn join(&mut self, agent: &AgentId, role: Role, now: Millis) {
        self.participants.push(Participant { agent: agent.clone(), role, joined_at: Some(now), left_at: None });
    }

    /// Every open participation of an agent that `who` picks ends now.
    pub fn leave(&mut self, now: Millis, who: impl Fn(&AgentId) -> bool) {
        for p in self.participants.iter_mut().filter(|p| p.left_at.is_none() && who(&p.agent)) {
            p.left_at = Some(now);
        }
    }

    pub fn offer_id(&self) -> Option<&OfferId> {
        self.offer.as_ref().map(|o| &o.id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentState {
    #[default]
    Offline,
    Available,
    Away,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCapacity {
    pub channel: Channel,
    pub max_contacts: u32,
    pub exclusive: bool,
}

/// What an agent is doing, derived from the contacts it holds (never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Idle,
    Offered,
    OnContact,
    AfterContactWork,
}

/// A BPO agent: its profile (set by an admin), its state (set by itself) and the contacts
/// it holds, across tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: AgentId,
    pub display_name: String,
    pub queues: Vec<QueueRef>,
    pub skills: BTreeMap<String, u32>,
    pub languages: Vec<String>,
    pub capacity: Vec<ChannelCapacity>,
    pub max_total_contacts: u32,
    pub state: AgentState,
    pub away_reason: String,
    /// Contacts offered to or held by the agent, in the order they came.
    pub contacts: Vec<ContactRef>,
    pub state_time: Option<Millis>,
    pub agent_pool: String,
    /// The agent's phones registered with tenants' registrars: tenant id to the
    /// registration's expiry (media reports them).
    pub phones: BTreeMap<String, Millis>,
}

impl Agent {
    /// What the agent is doing, given the records of the contacts it lists.
    pub fn activity(&self, contacts: &[Contact]) -> Activity {
        let has = |s: ContactState| contacts.iter().any(|c| c.state == s);
        if has(ContactState::Connected) {
            Activity::OnContact
        } else if has(ContactState::AfterContactWork) {
            Activity::AfterContactWork
        } else if !self.contacts.is_empty() {
            Activity::Offered
        } else {
            Activity::Idle
        }
    }
}
