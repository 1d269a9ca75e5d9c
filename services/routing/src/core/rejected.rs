//! The core's refusals. They stay inside routing: a refused input is logged and skipped by
//! the engine, never sent back to whoever wrote it.

use super::{AgentId, ContactId};

/// Why an input could not be applied. The core is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    #[error("contact {0} is already in routing")]
    DuplicateContact(ContactId),
    #[error("contact {0} is not offered to agent {1}")]
    NotOffered(ContactId, AgentId),
    #[error("contact {0} is not booked on agent {1}")]
    NotBooked(ContactId, AgentId),
    #[error("{0}")]
    Invalid(String),
}
