//! Routing's decisions, as sessions takes them: whether an offer can still be made, and
//! the outcome of a decision that no longer fits.

use centralita_routing_contract::pool_key;

use super::model::{Agent, AgentState, Contact, ContactState, Millis};
use super::refusal::Refusal;

/// An offer with less time left than this (or than half its timeout, if shorter) when it
/// reaches sessions is void rather than made: the agent could not answer it and would be
/// marked not responding for nothing.
pub const MIN_OFFER_MS: Millis = 1_000;

/// What becomes of a routing offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferVerdict {
    /// Make the offer.
    Make,
    /// The contact left the queue meanwhile (or the offer was already made): nothing to do.
    Stale,
    /// The offer is void: the agent left (or changed pool) between routing's decision and
    /// now, or the decision arrived too late (a backlog, a restart) for anyone to answer
    /// it. The contact goes back to its place without counting as declined by the agent.
    Void { agent_available: bool, same_pool: bool, left_ms: Millis },
}

/// Decides on an offer of `contact` to `agent` (their records as read now), decided at
/// `decided_at` to expire at `expires_at`.
pub fn offer_verdict(
    contact: Option<&Contact>,
    agent: Option<&Agent>,
    decided_at: Millis,
    expires_at: Millis,
    now: Millis,
) -> OfferVerdict {
    let Some(contact) = contact.filter(|c| c.state == ContactState::Queued) else {
        return OfferVerdict::Stale;
    };
    let available = agent.filter(|a| a.state == AgentState::Available);
    // The router that decided is the contact's pool's: an agent since moved to another pool
    // (signed out, reassigned, signed in) is booked there now, and the deciding router's
    // view of it is stale.
    let same_pool = available.is_some_and(|a| pool_key(&a.agent_pool) == pool_key(&contact.agent_pool));
    let left_ms = expires_at - now;
    let min_left = MIN_OFFER_MS.min((expires_at - decided_at) / 2);
    if !same_pool || left_ms < min_left {
        OfferVerdict::Void { agent_available: available.is_some(), same_pool, left_ms }
    } else {
        OfferVerdict::Make
    }
}

/// What applying an input (a routing decision, a timer, the other side of a consult) came
/// to: done, or overtaken by what happened meanwhile — a domain outcome, never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    Overtaken(Refusal),
}
