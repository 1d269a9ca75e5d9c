//! The contact core: sessions' rules as plain functions over plain data, like routing's
//! matching core. Every command or input is one named function taking the record as
//! stored and the command's facts (who, which offer, the time now, new ids), returning the
//! record to write and its effects ([`Change`]) or a [`Refusal`]. No Redis, tokio, tonic or
//! rdkafka: the adapters load, call, store and carry the effects out.
//!
//! # Layout
//! - [`model`]: contacts, agents, offers, participants; ids as newtypes.
//! - [`lifecycle`]: the contact state table every contact command goes through first.
//! - [`contact`]: create, offer, accept, reject, RONA, hold, resume, transfer, end, wrap-up,
//!   after-contact work elapsed, overflow, time-out, erasure of the customer's personal
//!   data; the routing view of a queued contact.
//! - [`consult`]: consult, complete the consult (transfer, conference, cancel), and the
//!   linked change that reaches the other contact of a consult.
//! - [`monitor`]: a supervisor listening, whispering or barging in on a call.
//! - [`agent`]: sign-in, state changes, sign-out, upsert, not responding, presence lapsed.
//! - [`position`]: where a waiting contact stands in its queue, the wait it can expect, and
//!   the handle time a closing contact adds to its queue's.
//! - [`decision`]: whether a routing offer is made, void or stale.
//! - [`effects`]: what a change asks for (events, routing inputs, typed timers, notices).
//! - [`refusal`]: why a command or input is refused.

pub mod agent;
pub mod consult;
pub mod contact;
pub mod decision;
pub mod effects;
pub mod lifecycle;
pub mod model;
pub mod monitor;
pub mod position;
pub mod refusal;

pub use effects::{AgentEventKind, Change, ContactEventKind, Effect, Linked, Notice, Timer};
pub use model::*;
pub use refusal::Refusal;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
