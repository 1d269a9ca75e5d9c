//! Warm transfer and conference. The agent holding a connected contact consults: the
//! customer's contact goes on hold and a consult leg, a contact of its own with
//! `consult_of` set, is routed to the target queue or agent like any contact (capacity,
//! offers, no answer, the agent's stream). When the consulted agent has accepted the leg,
//! the consulting agent hands the contact over (the leg closes and routing moves the
//! consulted agent's booking from the leg to the contact, so no capacity is freed in
//! between) or conferences (both agents on the contact, listed in `participants`); or it
//! cancels the consult.
//!
//! Each step writes one record; what it means for the other record of the pair is an
//! outbox effect ([`pb::LinkedContactEffect`]), carried out after the write and retried by
//! the sweeper, so a crash in between delays the other side but never loses it. A linked
//! change that no longer fits (the leg already closed, another consult since) is dropped.

use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use centralita_proto::sessions::v1::{
    self as pb, agent_stream_event::Event as Notice, contact_event::Kind, linked_contact_effect::Op, ContactState,
};
use centralita_routing::core::{self as rc, Input};

use crate::engine::{contact_id, contact_name, now_ms, parse_contact_name, timer, ts, Effects, Engine};
use crate::lifecycle::Action;

/// Where a consult goes: a queue of the tenant, or an agent through a queue.
#[derive(Debug, Clone)]
pub struct Target {
    pub queue: String,
    pub agent: String,
}

/// The agent `agent` joins `c` now in `role`.
fn join(c: &mut pb::Contact, agent: &str, role: pb::participant::Role, now: i64) {
    c.participants.push(pb::Participant {
        agent_id: agent.to_owned(),
        role: role as i32,
        join_time: ts(now),
        leave_time: None,
    });
}

/// Every open participation on `c` of an agent that `who` picks ends now.
pub fn leave(c: &mut pb::Contact, now: i64, who: impl Fn(&str) -> bool) {
    for p in c.participants.iter_mut().filter(|p| p.leave_time.is_none() && who(&p.agent_id)) {
        p.leave_time = ts(now);
    }
}

/// Whether `agent` is on `c` now (holding it or conferenced in).
pub fn is_participant(c: &pb::Contact, agent: &str) -> bool {
    c.agent_id == agent || c.participants.iter().any(|p| p.agent_id == agent && p.leave_time.is_none())
}

/// Records that `agent` accepted `c`.
pub fn accepted(c: &mut pb::Contact, agent: &str, now: i64) {
    join(c, agent, pb::participant::Role::Holder, now);
}

/// Opens a consult leg from the customer's contact `customer`, held by `agent`. Returns
/// the leg.
pub async fn start(
    engine: &Engine,
    tenant: &TenantId,
    customer: &pb::Contact,
    agent: &str,
    target: Target,
) -> Result<pb::Contact, Error> {
    let leg_id = uuid::Uuid::now_v7().simple().to_string();
    let leg_name = contact_name(tenant.as_str(), &leg_id);
    let now = now_ms();
    let leg = pb::Contact {
        name: leg_name.clone(),
        tenant: tenant.to_string(),
        channel: customer.channel,
        direction: customer.direction,
        queue: target.queue,
        state: ContactState::Queued as i32,
        priority: customer.priority,
        customer_tier: customer.customer_tier,
        language: customer.language.clone(),
        attributes: customer.attributes.clone(),
        preferred_agent_id: target.agent,
        customer_identities: customer.customer_identities.clone(),
        consult_of: customer.name.clone(),
        // The consulted agent's booking moves onto the customer's contact: both in one pool.
        agent_pool: customer.agent_pool.clone(),
        create_time: ts(now),
        enqueue_time: ts(now),
        ..Default::default()
    };
    // Checked before anything is written.
    let queued = engine.queued(&leg)?;
    engine
        .transition(
            tenant,
            contact_id(customer),
            Action::Consult,
            |c| {
                if !c.consult_of.is_empty() {
                    return Err(Error::FailedPrecondition("a consult leg cannot be consulted on".into()));
                }
                if !c.consult_leg.is_empty() {
                    return Err(Error::FailedPrecondition(format!(
                        "the contact already has a consult leg, {}",
                        c.consult_leg
                    )));
                }
                if c.agent_id != agent {
                    return Err(Error::FailedPrecondition("the contact is no longer held by this agent".into()));
                }
                c.on_hold = true;
                c.consult_leg.clone_from(&leg_name);
                Ok(())
            },
            |before, after, fx| {
                engine.contact_event(fx, Kind::ConsultStarted, before, after, agent, "")?;
                fx.notify(agent, Notice::Contact(after.clone()));
                Ok(())
            },
        )
        .await?;
    engine.store.zadd(&crate::store::open_index(tenant), &leg_id, now).await?;
    engine
        .create(tenant, &leg, |fx| {
            engine.contact_event(fx, Kind::Queued, &pb::Contact::default(), &leg, "", "")?;
            engine.route(fx, tenant, &leg, &Input::ContactQueued(queued.clone()));
            Ok(())
        })
        .await
}

/// The consulting agent finishes the consult of the customer's contact `c`.
pub async fn complete(
    engine: &Engine,
    tenant: &TenantId,
    c: &pb::Contact,
    agent: &str,
    outcome: pb::complete_consult_request::Outcome,
) -> Result<pb::Contact, Error> {
    use pb::complete_consult_request::Outcome as O;
    if outcome == O::Unspecified {
        return Err(Error::invalid("outcome", "TRANSFER, CONFERENCE or CANCEL"));
    }
    if c.consult_leg.is_empty() {
        return Err(Error::FailedPrecondition("the contact has no consult leg".into()));
    }
    let leg_name = c.consult_leg.clone();
    let (_, leg_id) = parse_contact_name(&leg_name)?;
    let id = contact_id(c).to_owned();
    let now = now_ms();
    // The leg's agent, for a transfer or conference: it must have accepted the leg.
    let consulted = match outcome {
        O::Transfer | O::Conference => {
            let leg = engine
                .store
                .load::<pb::Contact>(&crate::store::contact_key(tenant, &leg_id))
                .await?
                .map(|(_, l)| l)
                .filter(|l| l.state == ContactState::Connected as i32 && !l.agent_id.is_empty())
                .ok_or_else(|| {
                    Error::FailedPrecondition("the consulted agent has not accepted the consult leg".into())
                })?;
            // The leg's own effects (its acceptance, on the routing log) go out before the
            // ones below, which build on them.
            engine.drain(&crate::store::Outbox::contact(tenant, &leg_id), true).await?;
            leg.agent_id
        }
        // (Unspecified is refused above.)
        O::Cancel | O::Unspecified => String::new(),
    };
    let same_leg = |c: &pb::Contact| {
        if c.consult_leg != leg_name {
            return Err(Error::FailedPrecondition("the consult leg changed meanwhile".into()));
        }
        if c.agent_id != agent {
            return Err(Error::FailedPrecondition("the contact is no longer held by this agent".into()));
        }
        Ok(())
    };
    let linked = |op: Op| pb::LinkedContactEffect {
        tenant: tenant.to_string(),
        contact_id: leg_id.clone(),
        op: op as i32,
        ..Default::default()
    };
    let (_, after) = match outcome {
        O::Transfer => {
            engine
                .transition(
                    tenant,
                    &id,
                    Action::HandOver,
                    |c| {
                        same_leg(c)?;
                        leave(c, now, |a| a == agent || a == consulted);
                        join(c, &consulted, pb::participant::Role::Holder, now);
                        c.previous_agents.push(agent.to_owned());
                        c.agent_id.clone_from(&consulted);
                        c.transfer_count += 1;
                        c.on_hold = false;
                        c.consult_leg.clear();
                        Ok(())
                    },
                    |before, after, fx| {
                        engine.contact_event(fx, Kind::HandedOver, before, after, agent, "")?;
                        // In this order on the one routing partition: the consulting agent's
                        // booking goes, then the consulted agent's moves onto the contact.
                        engine.release(fx, tenant, after, agent, true);
                        let moved = Input::BookingMoved {
                            from: rc::ContactId(leg_id.clone()),
                            to: rc::ContactId(id.clone()),
                            agent: rc::AgentId(consulted.clone()),
                        };
                        engine.route(fx, tenant, after, &moved);
                        fx.agent_contact(&consulted, after, true, true);
                        fx.linked(linked(Op::LegHandedOver));
                        Ok(())
                    },
                )
                .await?
        }
        O::Conference => {
            engine
                .transition(
                    tenant,
                    &id,
                    Action::Conference,
                    |c| {
                        same_leg(c)?;
                        if is_participant(c, &consulted) {
                            return Err(Error::FailedPrecondition(
                                "the consulted agent is already on the contact".into(),
                            ));
                        }
                        join(c, &consulted, pb::participant::Role::Conferenced, now);
                        c.on_hold = false;
                        Ok(())
                    },
                    |before, after, fx| {
                        engine.contact_event(fx, Kind::Conferenced, before, after, &consulted, "")?;
                        fx.notify(agent, Notice::Contact(after.clone()));
                        fx.notify(&consulted, Notice::Contact(after.clone()));
                        Ok(())
                    },
                )
                .await?
        }
        O::Cancel | O::Unspecified => {
            engine
                .transition(
                    tenant,
                    &id,
                    Action::ConsultEnded,
                    |c| {
                        same_leg(c)?;
                        leave(c, now, |a| a != agent);
                        c.consult_leg.clear();
                        Ok(())
                    },
                    |before, after, fx| {
                        engine.contact_event(fx, Kind::ConsultEnded, before, after, agent, "")?;
                        fx.notify(agent, Notice::Contact(after.clone()));
                        fx.linked(linked(Op::LegCancelled));
                        Ok(())
                    },
                )
                .await?
        }
    };
    Ok(after)
}

/// The other side of a consult step (an outbox effect). A change that no longer fits is
/// dropped: it was overtaken (the leg closed, the consult ended) and has nothing left to do.
pub async fn apply_linked(engine: &Engine, e: pb::LinkedContactEffect) -> Result<(), Error> {
    let tenant = TenantId::parse(&e.tenant).map_err(Error::internal)?;
    let id = e.contact_id.as_str();
    let now = now_ms();
    let result = match Op::try_from(e.op).unwrap_or(Op::Unspecified) {
        Op::LegHandedOver | Op::LegCancelled => {
            let handed_over = e.op == Op::LegHandedOver as i32;
            engine
                .transition(
                    &tenant,
                    id,
                    Action::CloseLeg,
                    |c| {
                        if c.consult_of.is_empty() {
                            return Err(Error::FailedPrecondition("not a consult leg".into()));
                        }
                        c.end_time = ts(now);
                        c.close_time = ts(now);
                        c.on_hold = false;
                        leave(c, now, |_| true);
                        Ok(())
                    },
                    |before, after, fx| {
                        let agent = before.agent_id.as_str();
                        engine.contact_event(fx, Kind::ConsultClosed, before, after, agent, "")?;
                        if before.state == ContactState::Offered as i32 {
                            fx.cancel(timer("offer", &tenant, id, &before.offer_id));
                        }
                        // A handed-over leg's booking has moved to the customer's contact;
                        // anything else the leg holds in routing goes.
                        if !(handed_over && before.state == ContactState::Connected as i32) {
                            let withdrawn = Input::ContactWithdrawn { contact: rc::ContactId(id.into()) };
                            engine.route(fx, &tenant, before, &withdrawn);
                        }
                        engine.release(fx, &tenant, after, agent, false);
                        Ok(())
                    },
                )
                .await
                .map(|_| ())
        }
        Op::LegEnded => {
            let leg_name = contact_name(tenant.as_str(), &e.leg_id);
            let leg_agent = e.agent_id.as_str();
            engine
                .transition(
                    &tenant,
                    id,
                    Action::ConsultEnded,
                    |c| {
                        if c.consult_leg != leg_name {
                            return Err(Error::FailedPrecondition("the consult is over".into()));
                        }
                        if !leg_agent.is_empty() && leg_agent != c.agent_id {
                            leave(c, now, |a| a == leg_agent);
                        }
                        c.consult_leg.clear();
                        Ok(())
                    },
                    |before, after, fx| {
                        engine.contact_event(fx, Kind::ConsultEnded, before, after, leg_agent, "")?;
                        fx.notify(&after.agent_id, Notice::Contact(after.clone()));
                        Ok(())
                    },
                )
                .await
                .map(|_| ())
        }
        Op::Unspecified => Err(Error::internal("linked contact effect without an op")),
    };
    match result {
        Ok(()) => Ok(()),
        Err(Error::FailedPrecondition(why) | Error::NotFound(why)) => {
            tracing::info!(contact = %id, %why, "linked consult change overtaken; dropped");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The contact `before` ends (ended, abandoned, timed out): the other contact of its
/// consult hears it. A leg's customer contact learns that its leg ended; a customer's
/// contact takes its open leg with it.
pub fn ended(fx: &mut Effects, before: &pb::Contact) {
    if !before.consult_of.is_empty() {
        match parse_contact_name(&before.consult_of) {
            Ok((tenant, customer)) => fx.linked(pb::LinkedContactEffect {
                tenant: tenant.to_string(),
                contact_id: customer,
                op: Op::LegEnded as i32,
                leg_id: contact_id(before).to_owned(),
                agent_id: before.agent_id.clone(),
            }),
            Err(e) => tracing::error!(error = %e, contact = %before.name, "malformed consult_of; not linked"),
        }
    }
    if !before.consult_leg.is_empty() {
        match parse_contact_name(&before.consult_leg) {
            Ok((tenant, leg)) => fx.linked(pb::LinkedContactEffect {
                tenant: tenant.to_string(),
                contact_id: leg,
                op: Op::LegCancelled as i32,
                ..Default::default()
            }),
            Err(e) => tracing::error!(error = %e, contact = %before.name, "malformed consult_leg; not linked"),
        }
    }
}
