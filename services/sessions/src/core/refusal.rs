//! Why the core refuses a command or an input. A refusal is a domain outcome, not an
//! error: a command refused goes back to its caller (the gRPC adapter maps it once, in
//! `crate::api`), an input refused (a routing decision, a timer, the other side of a
//! consult) was overtaken by what happened meanwhile and has nothing left to do.

use super::lifecycle::Action;
use super::model::{AgentId, ContactId, ContactState};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("cannot {} a contact that is {}", .action.verb(), .state.describe())]
    IllegalMove { action: Action, state: ContactState },
    #[error("contact {0} does not exist")]
    ContactGone(ContactId),
    #[error("the contact holds no personal data (erased before)")]
    NothingToErase,
    #[error("agent {0} does not exist")]
    AgentGone(AgentId),
    #[error("`{0}` is not a queue of an active tenant")]
    QueueGone(String),
    #[error("this offer is no longer open")]
    OfferNotOpen,
    #[error("this offer has expired")]
    OfferExpired,
    #[error("the contact is already on hold")]
    AlreadyOnHold,
    #[error("the contact is not on hold")]
    NotOnHold,
    #[error("the recording is already paused")]
    RecordingAlreadyPaused,
    #[error("the recording is not paused")]
    RecordingNotPaused,
    #[error("only a call's recording or a conversation's transcript can be paused")]
    NotACall,
    #[error("the contact is no longer held by this agent")]
    NotHeldByAgent,
    #[error("only the agent holding the contact ends it; a conferenced agent leaves by ending its consult leg")]
    OnlyHolderEnds,
    #[error("the contact has a consult leg; complete or cancel the consult first")]
    ConsultInProgress,
    #[error("a consult leg cannot be consulted on")]
    LegCannotConsult,
    #[error("the contact already has a consult leg, {0}")]
    AlreadyConsulting(String),
    #[error("the contact has no consult leg")]
    NoConsultLeg,
    #[error("the consulted agent has not accepted the consult leg")]
    ConsultNotAccepted,
    #[error("the consult leg changed meanwhile")]
    ConsultLegChanged,
    #[error("the consulted agent is already on the contact")]
    AlreadyParticipant,
    #[error("not a consult leg")]
    NotALeg,
    #[error("the consult is over")]
    ConsultOver,
    #[error("only a connected voice call of a customer (not a consult leg) can be monitored")]
    NotACustomerCall,
    #[error("the call is monitored by supervisor {0}")]
    MonitoredByAnother(String),
    #[error("already monitoring the call in this mode")]
    AlreadyMonitoring,
    #[error("not monitoring this call")]
    NotMonitoring,
    #[error("the agent is not signed in")]
    NotSignedIn,
    #[error("the agent still holds contacts")]
    HoldsContacts,
    #[error("`{0}` is not an away reason of the agent's tenants")]
    UnknownAwayReason(String),
    #[error(
        "agent {agent} is in agent pool {current} (signed in, holding contacts, or signed out less than {quiet_s} s ago); its new queues are in pool {wanted}: sign it out first"
    )]
    PoolPinned { agent: AgentId, current: String, wanted: String, quiet_s: i64 },
}
