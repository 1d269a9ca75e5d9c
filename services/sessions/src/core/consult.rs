//! Warm transfer and conference. The agent holding a connected contact consults: the
//! customer's contact goes on hold and a consult leg, a contact of its own with
//! `consult_of` set, is routed to the target queue or agent like any contact. When the
//! consulted agent has accepted the leg, the consulting agent hands the contact over (the
//! leg closes and routing moves the consulted agent's booking from the leg to the contact,
//! so no capacity is freed in between) or conferences (both agents on the contact); or it
//! cancels the consult.
//!
//! Each step writes one record; what it means for the other record of the pair is an
//! [`Effect::Linked`], carried out after the write ([`linked`]). A linked change that no
//! longer fits (the leg already closed, another consult since) is refused: overtaken.

use centralita_platform::queue::QueueConfig;
use centralita_routing_contract::Input;

use super::contact::{event, finish, release, step, Target};
use super::effects::{Change, ContactEventKind as Kind, Effect, Linked, Notice, Timer};
use super::lifecycle::Action;
use super::model::{AgentId, Contact, ContactId, ContactState, Millis, Role};
use super::refusal::Refusal;

/// A consult opened: the customer's contact to write first, then the new leg.
#[derive(Debug, Clone, PartialEq)]
pub struct Consult {
    pub customer: Change<Contact>,
    pub leg: Change<Contact>,
}

/// The holder `agent` of `customer` consults `to` (queue configuration `q`) on a new leg
/// with id `leg_id`.
pub fn consult(
    customer: &Contact,
    agent: &AgentId,
    to: &Target,
    q: &QueueConfig,
    leg_id: ContactId,
    now: Millis,
) -> Result<Consult, Refusal> {
    let mut change = step(customer, Action::Consult)?;
    if customer.consult_of.is_some() {
        return Err(Refusal::LegCannotConsult);
    }
    if let Some(leg) = &customer.consult_leg {
        return Err(Refusal::AlreadyConsulting(centralita_platform::tenant::contact_name(
            customer.tenant.as_str(),
            &leg.0,
        )));
    }
    if customer.agent.as_ref() != Some(agent) {
        return Err(Refusal::NotHeldByAgent);
    }
    change.record.on_hold = true;
    change.record.consult_leg = Some(leg_id.clone());
    change.push(event(Kind::ConsultStarted, Some(agent)));
    change.push(Effect::Notify { agent: agent.clone(), notice: Notice::Contact });
    let leg = Contact {
        direction: customer.direction,
        priority: customer.priority,
        tier: customer.tier,
        language: customer.language.clone(),
        attributes: customer.attributes.clone(),
        preferred_agent: to.agent.clone(),
        customer_identities: customer.customer_identities.clone(),
        consult_of: Some(customer.id.clone()),
        trace_parent: customer.trace_parent.clone(),
        // The consulted agent's booking moves onto the customer's contact: both in one pool.
        ..Contact::queued(
            customer.tenant.clone(),
            leg_id,
            customer.channel,
            to.queue.clone(),
            customer.agent_pool.clone(),
            now,
        )
    };
    Ok(Consult { customer: change, leg: super::contact::create(leg, q, now) })
}

/// How the consulting agent finishes a consult.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The consulted agent takes the contact over (warm transfer).
    Transfer,
    /// The consulted agent joins the contact.
    Conference,
    /// The consult ends; the customer stays with its agent.
    Cancel,
}

/// The consulted agent of `leg`, the consult leg as read now: it must have accepted it.
pub fn consulted_agent(leg: Option<&Contact>) -> Result<AgentId, Refusal> {
    leg.filter(|l| l.state == ContactState::Connected).and_then(|l| l.agent.clone()).ok_or(Refusal::ConsultNotAccepted)
}

/// The consulting agent `agent` finishes the consult on leg `leg` of the customer's
/// contact `c`; `consulted` is the leg's agent for a transfer or conference
/// ([`consulted_agent`]).
pub fn complete_consult(
    c: &Contact,
    agent: &AgentId,
    leg: &ContactId,
    outcome: Outcome,
    consulted: Option<&AgentId>,
    now: Millis,
) -> Result<Change<Contact>, Refusal> {
    let action = match outcome {
        Outcome::Transfer => Action::HandOver,
        Outcome::Conference => Action::Conference,
        Outcome::Cancel => Action::ConsultEnded,
    };
    let mut change = step(c, action)?;
    if c.consult_leg.as_ref() != Some(leg) {
        return Err(Refusal::ConsultLegChanged);
    }
    if c.agent.as_ref() != Some(agent) {
        return Err(Refusal::NotHeldByAgent);
    }
    let consulted = match (outcome, consulted) {
        (Outcome::Cancel, _) => None,
        (_, Some(a)) => Some(a),
        (_, None) => return Err(Refusal::ConsultNotAccepted),
    };
    let after = &mut change.record;
    match (outcome, consulted) {
        (Outcome::Transfer, Some(consulted)) => {
            after.leave(now, |a| a == agent || a == consulted);
            after.join(consulted, Role::Holder, now);
            after.previous_agents.push(agent.clone());
            after.agent = Some(consulted.clone());
            after.transfer_count += 1;
            after.on_hold = false;
            after.consult_leg = None;
            change.push(event(Kind::HandedOver, Some(agent)));
            // In this order on the one routing partition: the consulting agent's booking
            // goes, then the consulted agent's moves onto the contact.
            release(&mut change, Some(agent), true);
            let moved = Input::BookingMoved { from: leg.clone(), to: c.id.clone(), agent: consulted.clone() };
            change.push(Effect::Route(moved));
            change.push(Effect::AgentContact { agent: consulted.clone(), add: true, notify: true });
            change.push(Effect::Linked { contact: leg.clone(), change: Linked::LegHandedOver });
        }
        (Outcome::Conference, Some(consulted)) => {
            if c.is_participant(consulted) {
                return Err(Refusal::AlreadyParticipant);
            }
            after.join(consulted, Role::Conferenced, now);
            after.on_hold = false;
            change.push(event(Kind::Conferenced, Some(consulted)));
            change.push(Effect::Notify { agent: agent.clone(), notice: Notice::Contact });
            change.push(Effect::Notify { agent: consulted.clone(), notice: Notice::Contact });
        }
        _ => {
            after.leave(now, |a| a != agent);
            after.consult_leg = None;
            change.push(event(Kind::ConsultEnded, Some(agent)));
            change.push(Effect::Notify { agent: agent.clone(), notice: Notice::Contact });
            change.push(Effect::Linked { contact: leg.clone(), change: Linked::LegCancelled });
        }
    }
    Ok(change)
}

/// The other side of a consult step reaches contact `c`.
pub fn linked(c: &Contact, change_of: &Linked, now: Millis) -> Result<Change<Contact>, Refusal> {
    match change_of {
        Linked::LegHandedOver | Linked::LegCancelled => {
            let handed_over = *change_of == Linked::LegHandedOver;
            let mut change = step(c, Action::CloseLeg)?;
            if c.consult_of.is_none() {
                return Err(Refusal::NotALeg);
            }
            let after = &mut change.record;
            after.ended_at = Some(now);
            after.closed_at = Some(now);
            after.on_hold = false;
            after.leave(now, |_| true);
            let agent = c.agent.as_ref();
            change.push(event(Kind::ConsultClosed, agent));
            if let (ContactState::Offered, Some(offer)) = (c.state, c.offer_id()) {
                let timer = Timer::Offer { tenant: c.tenant.clone(), contact: c.id.clone(), offer: offer.clone() };
                change.push(Effect::Cancel(timer));
            }
            // A handed-over leg's booking has moved to the customer's contact; anything
            // else the leg holds in routing goes.
            if !(handed_over && c.state == ContactState::Connected) {
                change.push(Effect::Route(Input::ContactWithdrawn { contact: c.id.clone() }));
            }
            release(&mut change, agent, false);
            Ok(finish(change))
        }
        Linked::LegEnded { leg, agent: leg_agent } => {
            let mut change = step(c, Action::ConsultEnded)?;
            if c.consult_leg.as_ref() != Some(leg) {
                return Err(Refusal::ConsultOver);
            }
            if let Some(leg_agent) = leg_agent.as_ref().filter(|a| c.agent.as_ref() != Some(*a)) {
                change.record.leave(now, |a| a == leg_agent);
            }
            change.record.consult_leg = None;
            change.push(event(Kind::ConsultEnded, leg_agent.as_ref()));
            let holder = change.record.agent.clone();
            change.notify(holder.as_ref(), Notice::Contact);
            Ok(change)
        }
    }
}
