//! The two routing logs. Both are keyed by agent pool ([`crate::pool_key`]), so all of a
//! pool's inputs reach one router in order, and its decisions come back in order.

use centralita_platform::bus::Topics;

/// The routing input log: what sessions tells routing (agents, contacts, offer answers),
/// plus the ticks routing appends itself.
pub fn input_topic(topics: &Topics) -> String {
    topics.name("routing.inputs")
}

/// The decisions routing takes (offers, overflows, timeouts).
pub fn decision_topic(topics: &Topics) -> String {
    topics.name("routing.decisions")
}
