//! What a transition asks the world to do, as data: the adapter (`crate::outbox`) stores
//! the effects with the record, atomically, and carries them out in order afterwards.
//! Every effect is about the record the transition wrote (its events, its routing inputs
//! keyed by its pool, its agent's stream) unless it names another record.

use centralita_platform::tenant::TenantId;
use centralita_routing_contract::Input;

use super::model::{AgentId, ContactId, Millis, OfferId};

/// Kinds of a contact's lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactEventKind {
    Queued,
    Offered,
    Accepted,
    Rejected,
    NotAnswered,
    Held,
    Resumed,
    RecordingPaused,
    RecordingResumed,
    Transferred,
    Ended,
    WrappedUp,
    Abandoned,
    Overflowed,
    TimedOut,
    ConsultStarted,
    Conferenced,
    ConsultEnded,
    HandedOver,
    ConsultClosed,
    MonitorStarted,
    MonitorChanged,
    MonitorStopped,
}

/// Kinds of an agent event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEventKind {
    Upserted,
    SignedIn,
    StateChanged,
    SignedOut,
}

/// A timer of the contact or agent lifecycle. Stored in Redis by [`Timer::member`], which
/// [`Timer::parse`] reads back (the text form is the one earlier releases wrote, so timers
/// pending across an upgrade still fire).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The offer `offer` of a contact was not answered in time (RONA).
    Offer { tenant: TenantId, contact: ContactId, offer: OfferId },
    /// After-contact work of a contact is over.
    AfterContactWork { tenant: TenantId, contact: ContactId },
    /// No event stream of the agent refreshed its presence within the grace.
    Presence { agent: AgentId },
    /// The registration of the agent's phone with the tenant expires.
    Phone { tenant: TenantId, agent: AgentId },
}

impl Timer {
    pub fn member(&self) -> String {
        match self {
            Timer::Offer { tenant, contact, offer } => format!("offer|{tenant}|{contact}|{offer}"),
            Timer::AfterContactWork { tenant, contact } => format!("acw|{tenant}|{contact}|"),
            Timer::Presence { agent } => format!("presence|{}|{agent}|-", TenantId::bpo()),
            Timer::Phone { tenant, agent } => format!("phone|{tenant}|{agent}|-"),
        }
    }

    /// The timer a stored member names; `None` for anything else (dropped by the caller).
    pub fn parse(member: &str) -> Option<Timer> {
        let parts: Vec<&str> = member.splitn(4, '|').collect();
        let [kind, tenant, id, token] = parts.as_slice() else { return None };
        if id.is_empty() {
            return None;
        }
        match *kind {
            "presence" => Some(Timer::Presence { agent: AgentId((*id).to_owned()) }),
            "offer" if !token.is_empty() => Some(Timer::Offer {
                tenant: TenantId::parse(tenant).ok()?,
                contact: ContactId((*id).to_owned()),
                offer: OfferId((*token).to_owned()),
            }),
            "phone" => Some(Timer::Phone { tenant: TenantId::parse(tenant).ok()?, agent: AgentId((*id).to_owned()) }),
            "acw" => Some(Timer::AfterContactWork {
                tenant: TenantId::parse(tenant).ok()?,
                contact: ContactId((*id).to_owned()),
            }),
            _ => None,
        }
    }
}

/// What the agent's event stream is told: the record the transition wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The contact, as an offer to answer.
    Offer,
    /// The contact, changed.
    Contact,
    /// The agent, changed.
    Agent,
}

/// A change to the other contact of a consult, carried out after the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linked {
    /// To the leg: the customer's contact was handed over to the leg's agent; the leg closes.
    LegHandedOver,
    /// To the leg: the consult was cancelled (or the customer's contact ended); the leg closes.
    LegCancelled,
    /// To the customer's contact: its leg `leg` ended (the leg's agent `agent` leaves).
    LegEnded { leg: ContactId, agent: Option<AgentId> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The contact's lifecycle event, carrying the contact as written less its personal
    /// data (see `crate::outbox`).
    ContactEvent {
        kind: ContactEventKind,
        agent: Option<AgentId>,
    },
    /// The agent's event, carrying the agent as written.
    AgentEvent(AgentEventKind),
    /// A routing input, keyed by the written record's agent pool.
    Route(Input),
    Schedule {
        timer: Timer,
        due: Millis,
    },
    Cancel(Timer),
    /// Tells `agent`'s event stream about the written record.
    Notify {
        agent: AgentId,
        notice: Notice,
    },
    /// Adds the written contact to `agent`'s list (or removes it); with `notify`, the
    /// agent's stream hears about the contact and then the agent.
    AgentContact {
        agent: AgentId,
        add: bool,
        notify: bool,
    },
    /// A change to contact `contact` of the same tenant.
    Linked {
        contact: ContactId,
        change: Linked,
    },
    /// The agent did not answer an offer: made away (not responding) if still available.
    AgentNotResponding(AgentId),
    /// The written contact is over: it leaves the tenant's index of open contacts.
    Close,
}

/// The outcome of a command the core accepted: the record to write and what follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<T> {
    pub record: T,
    pub effects: Vec<Effect>,
}

impl<T> Change<T> {
    pub fn new(record: T) -> Self {
        Self { record, effects: Vec::new() }
    }

    pub fn push(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    pub fn notify(&mut self, agent: Option<&AgentId>, notice: Notice) {
        if let Some(agent) = agent {
            self.push(Effect::Notify { agent: agent.clone(), notice });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_read_back_what_they_write() {
        let tenant = TenantId::parse("acme").unwrap();
        for t in [
            Timer::Offer { tenant: tenant.clone(), contact: ContactId("c1".into()), offer: OfferId("o1".into()) },
            Timer::AfterContactWork { tenant: tenant.clone(), contact: ContactId("c1".into()) },
            Timer::Presence { agent: AgentId("a1".into()) },
            Timer::Phone { tenant, agent: AgentId("a1".into()) },
        ] {
            assert_eq!(Timer::parse(&t.member()), Some(t.clone()), "{}", t.member());
        }
        // The text form of earlier releases.
        assert_eq!(
            Timer::parse("offer|acme|c9|o9"),
            Some(Timer::Offer {
                tenant: TenantId::parse("acme").unwrap(),
                contact: ContactId("c9".into()),
                offer: OfferId("o9".into())
            })
        );
        for junk in [
            "",
            "offer",
            "offer|acme|c1|",
            "what|acme|c1|x",
            "acw|NOT A TENANT|c1|",
            "presence|bpo||-",
            "phone|acme||-",
        ] {
            assert_eq!(Timer::parse(junk), None, "{junk}");
        }
    }
}
