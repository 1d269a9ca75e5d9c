//! One named function per command or input on a contact. Each takes the contact as stored
//! and the command's facts (who, which offer, now), and gives the contact to write with its
//! effects, or a [`Refusal`]. Nothing here reads a clock, an id generator or the network.

use centralita_platform::queue::QueueConfig;
use centralita_routing_contract::{self as rc, Input};

use super::effects::{Change, ContactEventKind as Kind, Effect, Linked, Notice, Timer};
use super::lifecycle::{next, Action};
use super::model::{AgentId, Channel, Contact, ContactState, CustomerTier, Millis, Offer, OfferId, Role};
use super::refusal::Refusal;

/// The contact after `action`, before its details change; refused when the table says no.
pub(super) fn step(c: &Contact, action: Action) -> Result<Change<Contact>, Refusal> {
    let to = next(c.state, action)?;
    let mut after = c.clone();
    after.state = to;
    Ok(Change::new(after))
}

/// Appends what every ending has: the contact leaves the open index.
pub(super) fn finish(mut change: Change<Contact>) -> Change<Contact> {
    if change.record.state.is_terminal() {
        change.push(Effect::Close);
    }
    change
}

pub(super) fn event(kind: Kind, agent: Option<&AgentId>) -> Effect {
    Effect::ContactEvent { kind, agent: agent.cloned() }
}

/// The agent of a contact it held is released: routing frees the capacity (when it was
/// booked there), the agent's list and stream are updated.
pub(super) fn release(change: &mut Change<Contact>, agent: Option<&AgentId>, booked: bool) {
    let Some(agent) = agent else { return };
    if booked {
        let contact = change.record.id.clone();
        change.push(Effect::Route(Input::ContactReleased { contact, agent: agent.clone() }));
    }
    change.push(Effect::AgentContact { agent: agent.clone(), add: false, notify: true });
}

/// The routing view of a queued contact: priority, aging, relaxation steps and the maximum
/// wait from its queue's configuration `q`.
pub fn routing_view(c: &Contact, q: &QueueConfig, now: Millis) -> rc::QueuedContact {
    let enqueued_at = c.enqueued_at.unwrap_or(now);
    let vip = c.tier == CustomerTier::Vip;
    let steps = q
        .steps
        .iter()
        .map(|s| {
            let mut requirements: Vec<rc::Requirement> = if s.drop_skills {
                Vec::new()
            } else {
                c.required_skills
                    .iter()
                    .map(|r| rc::Requirement::Skill {
                        name: r.skill.clone(),
                        min_proficiency: (r.min_proficiency as u8).saturating_sub(s.proficiency_drop).max(1),
                    })
                    .collect()
            };
            if !c.language.is_empty() && !s.drop_language {
                requirements.push(rc::Requirement::Language(c.language.clone()));
            }
            rc::Step { after_ms: s.after.as_millis() as i64, requirements }
        })
        .collect();
    let preferred = c
        .preferred_agent
        .clone()
        .filter(|_| !q.preferred_agent_window.is_zero())
        .map(|a| (a, enqueued_at + q.preferred_agent_window.as_millis() as i64));
    // A transferred contact does not go straight back to the agent who transferred it
    // (unless that agent is the explicit target).
    let excluded = match c.previous_agents.last() {
        Some(last) if c.transfer_count > 0 && Some(last) != c.preferred_agent.as_ref() => vec![last.clone()],
        _ => Vec::new(),
    };
    rc::QueuedContact {
        id: c.id.clone(),
        queue: rc::QueueRef::new(c.tenant.to_string(), c.queue.clone()),
        channel: c.channel,
        priority: i64::from(q.priority) + i64::from(c.priority) + if vip { i64::from(q.vip_boost) } else { 0 },
        aging_per_minute: i64::from(q.aging_per_minute),
        enqueued_at,
        steps,
        preferred,
        offer_timeout_ms: q.offer_timeout.as_millis() as i64,
        max_wait: q.max_wait.map(|m| rc::MaxWait {
            after_ms: m.as_millis() as i64,
            overflow_to: q.overflow_queue.as_ref().map(|o| rc::QueueRef::new(c.tenant.to_string(), o.clone())),
        }),
        excluded,
    }
}

/// A new contact joins its queue (`q`, its queue's configuration).
pub fn create(c: Contact, q: &QueueConfig, now: Millis) -> Change<Contact> {
    let queued = routing_view(&c, q, now);
    let mut change = Change::new(c);
    change.push(event(Kind::Queued, None));
    change.push(Effect::Route(Input::ContactQueued(queued)));
    change
}

/// Routing decided to offer the contact to `agent` until `expires_at` (the offer is made;
/// [`super::decision::offer_verdict`] decides whether it still can be).
pub fn offer(c: &Contact, agent: &AgentId, offer: OfferId, expires_at: Millis) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, Action::Offer)?;
    let after = &mut change.record;
    after.agent = Some(agent.clone());
    after.offer = Some(Offer { id: offer.clone(), expires_at: Some(expires_at) });
    let timer = Timer::Offer { tenant: c.tenant.clone(), contact: c.id.clone(), offer };
    change.push(Effect::AgentContact { agent: agent.clone(), add: true, notify: false });
    change.push(Effect::Notify { agent: agent.clone(), notice: Notice::Offer });
    change.push(Effect::Schedule { timer, due: expires_at });
    change.push(event(Kind::Offered, Some(agent)));
    Ok(change)
}

fn require_open_offer(c: &Contact, agent: &AgentId, offer: &OfferId) -> Result<(), Refusal> {
    if c.offer_id() != Some(offer) || c.agent.as_ref() != Some(agent) {
        return Err(Refusal::OfferNotOpen);
    }
    Ok(())
}

/// The offered agent accepts offer `offer`.
pub fn accept(c: &Contact, agent: &AgentId, offer: &OfferId, now: Millis) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, Action::Accept)?;
    require_open_offer(c, agent, offer)?;
    if c.offer.as_ref().and_then(|o| o.expires_at).is_some_and(|exp| exp < now) {
        return Err(Refusal::OfferExpired);
    }
    change.record.connected_at = Some(now);
    change.record.join(agent, Role::Holder, now);
    let timer = Timer::Offer { tenant: c.tenant.clone(), contact: c.id.clone(), offer: offer.clone() };
    change.push(Effect::Cancel(timer));
    change.push(Effect::Route(Input::OfferAccepted { contact: c.id.clone(), agent: agent.clone() }));
    change.push(event(Kind::Accepted, Some(agent)));
    change.push(Effect::Notify { agent: agent.clone(), notice: Notice::Contact });
    Ok(change)
}

/// The offered agent rejects offer `offer`: the contact goes back to its place.
pub fn reject(c: &Contact, agent: &AgentId, offer: &OfferId) -> Result<Change<Contact>, Refusal> {
    decline(c, agent, offer, false)
}

/// Nobody answered offer `offer` in time (RONA): the contact goes back to its place and
/// the agent is made away (not responding).
pub fn rona(c: &Contact, agent: &AgentId, offer: &OfferId) -> Result<Change<Contact>, Refusal> {
    decline(c, agent, offer, true)
}

fn decline(c: &Contact, agent: &AgentId, offer: &OfferId, not_responding: bool) -> Result<Change<Contact>, Refusal> {
    let action = if not_responding { Action::NoAnswer } else { Action::Reject };
    let kind = if not_responding { Kind::NotAnswered } else { Kind::Rejected };
    let mut change = step(c, action)?;
    require_open_offer(c, agent, offer)?;
    change.record.agent = None;
    change.record.offer = None;
    let timer = Timer::Offer { tenant: c.tenant.clone(), contact: c.id.clone(), offer: offer.clone() };
    change.push(Effect::Cancel(timer));
    change.push(event(kind, Some(agent)));
    let contact = c.id.clone();
    change.push(Effect::Route(Input::OfferDeclined { contact, agent: agent.clone(), not_responding }));
    if not_responding {
        change.push(Effect::AgentNotResponding(agent.clone()));
    }
    release(&mut change, Some(agent), false);
    Ok(change)
}

fn require_holder(c: &Contact, agent: &AgentId) -> Result<(), Refusal> {
    if c.agent.as_ref() != Some(agent) {
        return Err(Refusal::NotHeldByAgent);
    }
    Ok(())
}

/// The holder puts the customer on hold.
pub fn hold(c: &Contact, agent: &AgentId) -> Result<Change<Contact>, Refusal> {
    set_hold(c, agent, true)
}

/// The holder takes the customer off hold.
pub fn resume(c: &Contact, agent: &AgentId) -> Result<Change<Contact>, Refusal> {
    set_hold(c, agent, false)
}

fn set_hold(c: &Contact, agent: &AgentId, hold: bool) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, if hold { Action::Hold } else { Action::Resume })?;
    require_holder(c, agent)?;
    if c.on_hold == hold {
        return Err(if hold { Refusal::AlreadyOnHold } else { Refusal::NotOnHold });
    }
    change.record.on_hold = hold;
    change.push(event(if hold { Kind::Held } else { Kind::Resumed }, Some(agent)));
    change.push(Effect::Notify { agent: agent.clone(), notice: Notice::Contact });
    Ok(change)
}

/// PCI pause: the holder pauses the recording of its connected call (`pause`), or resumes
/// it. Media follows the contact and tells recording, which keeps the paused span silent.
pub fn pause_recording(c: &Contact, agent: &AgentId, pause: bool) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, if pause { Action::PauseRecording } else { Action::ResumeRecording })?;
    require_holder(c, agent)?;
    if c.channel == Channel::Task {
        return Err(Refusal::NotACall);
    }
    if c.recording_paused == pause {
        return Err(if pause { Refusal::RecordingAlreadyPaused } else { Refusal::RecordingNotPaused });
    }
    change.record.recording_paused = pause;
    change.push(event(if pause { Kind::RecordingPaused } else { Kind::RecordingResumed }, Some(agent)));
    change.push(Effect::Notify { agent: agent.clone(), notice: Notice::Contact });
    Ok(change)
}

/// Where a transfer or consult goes: a queue of the tenant, and an agent in it or anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub queue: String,
    pub agent: Option<AgentId>,
}

/// The holder sends the contact to `to` (queue `q`): it leaves the agent and queues again.
pub fn transfer(
    c: &Contact,
    agent: &AgentId,
    to: &Target,
    q: &QueueConfig,
    now: Millis,
) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, Action::Transfer)?;
    require_holder(c, agent)?;
    if c.consult_leg.is_some() {
        return Err(Refusal::ConsultInProgress);
    }
    let after = &mut change.record;
    after.leave(now, |_| true);
    // A supervisor on the call leaves with the agent.
    after.monitor = None;
    after.queue.clone_from(&to.queue);
    after.preferred_agent.clone_from(&to.agent);
    after.previous_agents.push(agent.clone());
    after.agent = None;
    after.offer = None;
    after.on_hold = false;
    after.transfer_count += 1;
    after.enqueued_at = Some(now);
    let queued = routing_view(after, q, now);
    change.push(event(Kind::Transferred, Some(agent)));
    release(&mut change, Some(agent), true);
    change.push(Effect::Route(Input::ContactQueued(queued)));
    Ok(change)
}

/// [`end`], keeping why it ended (`cause`, checked by the API; empty: not said) on the
/// record, so whoever reads the contact later sees it (a media replica that died:
/// `media lost the call`).
pub fn end_with_cause(c: &Contact, cause: &str, acw_ms: Millis, now: Millis) -> Result<Change<Contact>, Refusal> {
    let mut change = end(c, acw_ms, now)?;
    cause.clone_into(&mut change.record.end_cause);
    Ok(change)
}

/// The customer ends the contact (or a channel, supervisor or the holder ends it for them):
/// while queued or offered it is abandoned, once connected it goes to after-contact work
/// for `acw_ms`.
pub fn end(c: &Contact, acw_ms: Millis, now: Millis) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, Action::End)?;
    let after = &mut change.record;
    after.ended_at = Some(now);
    if after.state == ContactState::Abandoned {
        after.closed_at = Some(now);
    }
    after.leave(now, |_| true);
    // A supervisor on the call leaves with the agent.
    after.monitor = None;
    after.consult_leg = None;
    let agent = c.agent.as_ref();
    ended_links(&mut change, c);
    if change.record.state == ContactState::Abandoned {
        change.push(event(Kind::Abandoned, agent));
        change.push(Effect::Route(Input::ContactWithdrawn { contact: c.id.clone() }));
        if let Some(agent) = agent {
            if let Some(offer) = c.offer_id() {
                let timer = Timer::Offer { tenant: c.tenant.clone(), contact: c.id.clone(), offer: offer.clone() };
                change.push(Effect::Cancel(timer));
            }
            release(&mut change, Some(agent), false);
        }
    } else {
        change.push(event(Kind::Ended, agent));
        let timer = Timer::AfterContactWork { tenant: c.tenant.clone(), contact: c.id.clone() };
        change.push(Effect::Schedule { timer, due: now + acw_ms });
        change.notify(agent, Notice::Contact);
    }
    Ok(finish(change))
}

/// The holder wraps up with a disposition and notes (kept on the record, not in the event).
pub fn wrap_up(c: &Contact, disposition: &str, notes: &str, now: Millis) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, Action::WrapUp)?;
    change.record.disposition = disposition.to_owned();
    notes.clone_into(&mut change.record.wrap_up_notes);
    change.record.closed_at = Some(now);
    let agent = change.record.agent.clone();
    change.push(Effect::Cancel(Timer::AfterContactWork { tenant: c.tenant.clone(), contact: c.id.clone() }));
    change.push(Effect::ContactEvent { kind: Kind::WrappedUp, agent: agent.clone() });
    release(&mut change, agent.as_ref(), true);
    Ok(finish(change))
}

/// After-contact work ran out without a wrap-up: the contact closes without a disposition.
pub fn acw_elapsed(c: &Contact, now: Millis) -> Result<Change<Contact>, Refusal> {
    wrap_up(c, "", "", now)
}

/// Routing moved the waiting contact to queue `to` (its configuration `q`).
pub fn overflow(c: &Contact, to: &str, q: &QueueConfig, now: Millis) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, Action::Overflow)?;
    change.record.queue = to.to_owned();
    change.record.enqueued_at = Some(now);
    let queued = routing_view(&change.record, q, now);
    change.push(event(Kind::Overflowed, None));
    change.push(Effect::Route(Input::ContactQueued(queued)));
    Ok(change)
}

/// The contact waited past its queue's maximum wait with nowhere to overflow.
pub fn time_out(c: &Contact, now: Millis) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, Action::TimeOut)?;
    change.record.ended_at = Some(now);
    change.record.closed_at = Some(now);
    change.push(event(Kind::TimedOut, None));
    ended_links(&mut change, c);
    Ok(finish(change))
}

/// The customer was erased (GDPR art. 17, CRM's `CustomerErased` names the contact): the
/// personal data the contact carries leaves it — the identities the channel saw, the
/// attributes its creator gave (free text that may name the person) and the agent's wrap-up
/// notes. Everything else (state,
/// queue, agents, times, disposition code) is about the contact-center's work and stays, so
/// a live contact goes on. No effects: an event would carry nothing a consumer needs, and
/// the agent's view is refreshed by the contact's next change. Refused with
/// [`Refusal::NothingToErase`] when nothing personal is left (erased before), so a
/// redelivered erasure writes nothing.
pub fn erase(c: &Contact) -> Result<Change<Contact>, Refusal> {
    if c.customer_identities.is_empty() && c.attributes.is_empty() && c.wrap_up_notes.is_empty() {
        return Err(Refusal::NothingToErase);
    }
    let mut after = c.clone();
    after.customer_identities.clear();
    after.attributes.clear();
    after.wrap_up_notes.clear();
    Ok(Change::new(after))
}

/// The contact `before` ends (ended, abandoned, timed out): the other contact of its
/// consult hears it. A leg's customer contact learns that its leg ended; a customer's
/// contact takes its open leg with it.
pub(super) fn ended_links(change: &mut Change<Contact>, before: &Contact) {
    if let Some(customer) = &before.consult_of {
        let change_of = Linked::LegEnded { leg: before.id.clone(), agent: before.agent.clone() };
        change.push(Effect::Linked { contact: customer.clone(), change: change_of });
    }
    if let Some(leg) = &before.consult_leg {
        change.push(Effect::Linked { contact: leg.clone(), change: Linked::LegCancelled });
    }
}
