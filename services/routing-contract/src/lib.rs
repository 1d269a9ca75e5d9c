//! The routing contract: what the routing service and the services that talk to it
//! (sessions) share, so that neither depends on the other. It owns the routing types
//! (the inputs routing applies, the decisions it takes, and the plain data they carry),
//! their protobuf form on the routing logs, and where those logs are and how they are keyed.
//! It holds no behaviour: the matching rules live in the routing service's core.
//!
//! # Layout
//! - [`model`]: the plain routing types ([`Input`], [`Decision`], [`QueuedContact`],
//!   [`AgentProfile`], ids, …), serialisable so routing can snapshot them. Re-exported at
//!   the crate root.
//! - [`wire`]: `From`/`TryFrom` between those types and `centralita.routing.v1`, the
//!   [`WireError`] a message that does not convert gives, and the channel and instant
//!   helpers.
//! - [`topics`]: the names of the routing input and decision logs.
//! - [`pools`]: the key of an agent pool's records on those logs, and the envelope tenant of
//!   pool-wide records.

pub mod model;
pub mod pools;
pub mod topics;
pub mod wire;

pub use model::*;
pub use pools::{pool_key, pool_tenant};
pub use topics::{decision_topic, input_topic};
pub use wire::WireError;
