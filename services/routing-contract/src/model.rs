//! Plain data the matching core works on, and that its inputs and decisions carry.
//! Everything here is serialisable, so a routing replica can snapshot its whole state and a
//! successor can restore it byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. The core never reads a clock: every input carries
/// the time at which it happened, so the same inputs always give the same decisions.
pub type Millis = i64;

/// Channels a contact arrives on; capacity is counted per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Voice,
    Chat,
    Sms,
    Email,
    Social,
    Task,
}

impl Channel {
    pub const ALL: [Channel; 6] =
        [Channel::Voice, Channel::Chat, Channel::Sms, Channel::Email, Channel::Social, Channel::Task];
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_type!(
    /// A BPO agent. Agents are not owned by a tenant: one agent may serve queues of several.
    AgentId
);
id_type!(
    /// A contact (interaction), unique across tenants.
    ContactId
);

/// A queue is named within its tenant, so its key is the pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueRef {
    pub tenant: String,
    pub queue: String,
}

impl QueueRef {
    pub fn new(tenant: impl Into<String>, queue: impl Into<String>) -> Self {
        Self { tenant: tenant.into(), queue: queue.into() }
    }
}

impl fmt::Display for QueueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.queue)
    }
}

/// How many contacts of each channel an agent may hold at once, and which channels must
/// be handled alone (a voice call usually is: no chats while on the phone).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CapacityProfile {
    /// Channel to the most contacts of that channel at once. A channel that is missing or
    /// zero is never offered to the agent.
    pub limits: BTreeMap<Channel, u32>,
    /// A contact of an exclusive channel is offered only to an agent holding nothing, and
    /// while the agent holds it nothing else is offered.
    pub exclusive: BTreeSet<Channel>,
    /// The most contacts across all channels at once; 0 means no limit beyond `limits`.
    pub max_total: u32,
}

/// What routing knows of an agent: assignments, skills and capacity. Sign-in state arrives
/// separately (see [`Input::AgentReady`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProfile {
    pub id: AgentId,
    /// Queues the agent serves, possibly of several tenants.
    pub queues: BTreeSet<QueueRef>,
    /// Skill name to proficiency, 1 (lowest) to 5.
    pub skills: BTreeMap<String, u8>,
    /// Languages the agent speaks (BCP 47 primary tags such as `en`, `es`).
    pub languages: BTreeSet<String>,
    pub capacity: CapacityProfile,
    /// Tenants whose calls cannot reach the agent now (no phone of the agent there while
    /// the tenant has a registrar): their voice contacts are not offered to it.
    #[serde(default)]
    pub phoneless_tenants: BTreeSet<String>,
}

/// One thing a contact needs of an agent during one routing step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Requirement {
    /// The agent has the skill at this proficiency or better.
    Skill { name: String, min_proficiency: u8 },
    /// The agent speaks the language.
    Language(String),
}

/// The requirements that hold from `after_ms` of waiting on, until the next step starts.
/// Later steps normally ask for less (lower proficiency, fewer skills): that is how
/// requirements relax while a contact waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub after_ms: i64,
    pub requirements: Vec<Requirement>,
}

/// What happens when a contact has waited `after_ms` in its queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxWait {
    pub after_ms: i64,
    /// Queue to move the contact to; `None` ends the contact as timed out.
    pub overflow_to: Option<QueueRef>,
}

/// A contact routing must place, with everything needed to rank and match it. Session
/// management builds it from the tenant's queue configuration and the contact's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedContact {
    pub id: ContactId,
    pub queue: QueueRef,
    pub channel: Channel,
    /// Base priority: queue priority plus contact priority plus any tier boost. Higher first.
    pub priority: i64,
    /// Priority points gained per minute of waiting, so no contact starves behind a stream
    /// of higher-priority ones.
    pub aging_per_minute: i64,
    /// When the contact took its place in this queue. A contact sent back to the queue
    /// (rejected offer, no answer) keeps its original place.
    pub enqueued_at: Millis,
    /// Steps, sorted by `after_ms`; the first starts at 0. Empty means no requirements.
    pub steps: Vec<Step>,
    /// Agent to wait for (for example the last agent who served this customer) and until
    /// when; after that anyone eligible.
    pub preferred: Option<(AgentId, Millis)>,
    /// How long an agent has to accept an offer.
    pub offer_timeout_ms: i64,
    pub max_wait: Option<MaxWait>,
    /// Agents never to offer this contact to (the agent who just transferred it away).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<AgentId>,
}

/// Everything that drives the core. Inputs come from the routing input log, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// Creates or replaces an agent's profile (assignments, skills, capacity).
    AgentUpserted(AgentProfile),
    /// The agent is signed in and accepts new offers.
    AgentReady { agent: AgentId },
    /// The agent takes no new offers (away, offline, not responding). Contacts it holds
    /// stay booked until released.
    AgentNotReady { agent: AgentId },
    /// A contact joins a queue (new, transferred, or overflowed).
    ContactQueued(QueuedContact),
    /// A queued or offered contact leaves routing (abandoned, closed, cancelled).
    ContactWithdrawn { contact: ContactId },
    /// The agent accepted: the reservation made by the offer becomes a booking.
    OfferAccepted { contact: ContactId, agent: AgentId },
    /// The agent rejected or let the offer expire: the contact goes back to its place and
    /// will not be offered to that agent again. With `not_responding` the agent also
    /// stops receiving offers until it is ready again.
    OfferDeclined { contact: ContactId, agent: AgentId, not_responding: bool },
    /// The offer never reached the agent (it was no longer available when the offer was
    /// to be made): the contact goes back to its place without counting as declined by
    /// the agent, and the agent takes no new offers until it is ready again.
    OfferUndelivered { contact: ContactId, agent: AgentId },
    /// The agent finished with a contact (after-contact work done, transferred away):
    /// its capacity is free again.
    ContactReleased { contact: ContactId, agent: AgentId },
    /// The agent's booking of `from` becomes a booking of `to`, with no capacity freed in
    /// between (a warm transfer completes: the consulted agent takes over the customer's
    /// contact from its consult leg). `to` must not be in routing or booked.
    BookingMoved { from: ContactId, to: ContactId, agent: AgentId },
    /// Time passed; relaxation steps, preferred-agent windows and maximum waits are
    /// evaluated.
    Tick,
}

/// What the core decided. Decisions are deterministic in the inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Offer the contact to the agent; one unit of the agent's capacity is reserved.
    Offer { contact: ContactId, agent: AgentId, queue: QueueRef, channel: Channel, expires_at: Millis },
    /// The contact waited too long and moves to another queue.
    Overflow { contact: ContactId, from: QueueRef, to: QueueRef },
    /// The contact waited too long and has nowhere to go.
    TimedOut { contact: ContactId, queue: QueueRef },
}
