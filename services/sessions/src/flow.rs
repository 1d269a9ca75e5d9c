//! The background side of sessions: applying routing decisions, firing timers (offer
//! expiry = RONA, end of after-contact work) and fanning agent notifications out to the
//! streams open on this replica.

use std::time::Duration;

use centralita_platform::bus::{Event, Handler};
use centralita_platform::error::Error;
use centralita_platform::queue::DISCONNECTED;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use centralita_proto::routing::v1 as rpb;
use centralita_proto::sessions::v1::{
    self as pb, agent_stream_event::Event as Notice, contact_event::Kind, ContactState,
};
use centralita_routing::core::{self as rc, Decision, Input};
use centralita_routing::engine::pool_tenant;
use centralita_routing::wire;
use futures::StreamExt;

use crate::engine::{now_ms, pool_key, timer, ts, Engine};
use crate::lifecycle::Action;
use crate::store;

/// The offered agent declined (or did not answer): the contact goes back to its place, the
/// agent is told, and on no answer the agent is made away (not responding).
pub async fn decline(
    engine: &Engine,
    tenant: &TenantId,
    id: &str,
    offer_id: &str,
    agent: &str,
    not_responding: bool,
) -> Result<pb::Contact, Error> {
    let action = if not_responding { Action::NoAnswer } else { Action::Reject };
    let kind = if not_responding { Kind::NotAnswered } else { Kind::Rejected };
    let (_, after) = engine
        .transition(
            tenant,
            id,
            action,
            |c| {
                if c.offer_id != offer_id || c.agent_id != agent {
                    return Err(Error::FailedPrecondition("this offer is no longer open".into()));
                }
                c.agent_id.clear();
                c.offer_id.clear();
                c.offer_expire_time = None;
                Ok(())
            },
            |before, after, fx| {
                fx.cancel(timer("offer", tenant, id, offer_id));
                engine.contact_event(fx, kind, before, after, agent, "")?;
                engine.route(
                    fx,
                    tenant,
                    after,
                    &Input::OfferDeclined {
                        contact: rc::ContactId(id.into()),
                        agent: rc::AgentId(agent.into()),
                        not_responding,
                    },
                );
                if not_responding {
                    fx.not_responding(agent);
                }
                engine.release(fx, tenant, after, agent, false);
                Ok(())
            },
        )
        .await?;
    Ok(after)
}

/// After-contact work ends: the contact closes and the agent's capacity is freed.
pub async fn close(
    engine: &Engine,
    tenant: &TenantId,
    id: &str,
    disposition: &str,
    notes: &str,
) -> Result<pb::Contact, Error> {
    let now = now_ms();
    let (_, after) = engine
        .transition(
            tenant,
            id,
            Action::WrapUp,
            |c| {
                c.disposition = disposition.to_owned();
                c.close_time = ts(now);
                Ok(())
            },
            |before, after, fx| {
                fx.cancel(timer("acw", tenant, id, ""));
                engine.contact_event(fx, Kind::WrappedUp, before, after, &after.agent_id, notes)?;
                engine.release(fx, tenant, after, &after.agent_id, true);
                Ok(())
            },
        )
        .await?;
    Ok(after)
}

/// Applies routing decisions to contacts. Stale decisions (the contact left the queue
/// meanwhile) change nothing.
#[derive(Debug)]
pub struct DecisionHandler {
    pub engine: Engine,
}

impl Handler for DecisionHandler {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        let decision =
            match event.payload::<rpb::RoutingDecision>().map_err(|e| e.to_string()).and_then(wire::decision_from_pb) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "invalid routing decision skipped");
                    return Ok(());
                }
            };
        match apply(&self.engine, decision, event.occurred_at.timestamp_millis()).await {
            Err(Error::FailedPrecondition(why)) | Err(Error::NotFound(why)) => {
                tracing::debug!(%why, "stale routing decision");
                Ok(())
            }
            other => other,
        }
    }
}

/// An offer with less time left than this (or than half its timeout, if shorter) when it
/// reaches sessions is void rather than made: the agent could not answer it and would be
/// marked not responding for nothing.
const MIN_OFFER_MS: i64 = 1_000;

/// The agent's record if it is available.
async fn available_agent(engine: &Engine, agent: &rc::AgentId) -> Result<Option<pb::Agent>, Error> {
    Ok(engine
        .store
        .load::<pb::Agent>(&store::agent_key(&agent.0))
        .await?
        .map(|(_, a)| a)
        .filter(|a| a.state == pb::AgentState::Available as i32))
}

async fn apply(engine: &Engine, decision: Decision, decided_at: i64) -> Result<(), Error> {
    match decision {
        Decision::Offer { contact, agent, queue, expires_at, .. } => {
            let tenant = TenantId::parse(&queue.tenant).map_err(Error::internal)?;
            let offer_id = uuid::Uuid::now_v7().simple().to_string();
            let Some((_, queued)) = engine
                .store
                .load::<pb::Contact>(&store::contact_key(&tenant, &contact.0))
                .await?
                .filter(|(_, c)| c.state == ContactState::Queued as i32)
            else {
                // Stale (the contact left the queue meanwhile) or already applied.
                return Ok(());
            };
            let available = available_agent(engine, &agent).await?;
            // The router that decided is the contact's pool's: an agent since moved to
            // another pool (signed out, reassigned, signed in) is booked there now, and the
            // deciding router's view of it is stale.
            let same_pool = available.as_ref().is_some_and(|a| pool_key(&a.agent_pool) == pool_key(&queued.agent_pool));
            let left_ms = expires_at - now_ms();
            let min_left = MIN_OFFER_MS.min((expires_at - decided_at) / 2);
            if !same_pool || left_ms < min_left {
                // The offer is void: the agent left (or changed pool) between routing's
                // decision and now, or the decision arrived too late (a backlog, a
                // restart) for anyone to answer it. The contact goes back to its place
                // without counting as declined by the agent, which the deciding router
                // takes as not ready; if the agent is available (again), its readiness is
                // appended after the void (whose publish is acknowledged first), so routing
                // never leaves it idle.
                let available = available.is_some();
                tracing::info!(contact = %contact.0, agent = %agent.0, available, same_pool, left_ms, "offer void; contact back to its place");
                let pool = &queued.agent_pool;
                engine.route_now(&tenant, pool, &Input::OfferUndelivered { contact, agent: agent.clone() }).await?;
                // Readiness goes to the agent's own pool (it changes nothing where the agent
                // is ready already; where pools share a router, it undoes the void's
                // not-ready).
                if let Some(a) = available_agent(engine, &agent).await? {
                    engine.route_now(&pool_tenant(), &a.agent_pool, &Input::AgentReady { agent }).await?;
                }
                return Ok(());
            }
            engine
                .transition(
                    &tenant,
                    &contact.0,
                    Action::Offer,
                    |c| {
                        c.agent_id.clone_from(&agent.0);
                        c.offer_id.clone_from(&offer_id);
                        c.offer_expire_time = ts(expires_at);
                        Ok(())
                    },
                    |before, after, fx| {
                        fx.agent_contact(&agent.0, after, true, false);
                        fx.notify(&agent.0, Notice::Offer(after.clone()));
                        fx.schedule(timer("offer", &tenant, &contact.0, &offer_id), expires_at);
                        engine.contact_event(fx, Kind::Offered, before, after, &agent.0, "")?;
                        Ok(())
                    },
                )
                .await?;
        }
        Decision::Overflow { contact, to, .. } => {
            let tenant = TenantId::parse(&to.tenant).map_err(Error::internal)?;
            let now = now_ms();
            engine
                .transition(
                    &tenant,
                    &contact.0,
                    Action::Overflow,
                    |c| {
                        c.queue.clone_from(&to.queue);
                        c.enqueue_time = ts(now);
                        Ok(())
                    },
                    |before, after, fx| {
                        engine.contact_event(fx, Kind::Overflowed, before, after, "", "")?;
                        engine.route(fx, &tenant, after, &Input::ContactQueued(engine.queued(after)?));
                        Ok(())
                    },
                )
                .await?;
        }
        Decision::TimedOut { contact, queue } => {
            let tenant = TenantId::parse(&queue.tenant).map_err(Error::internal)?;
            let now = now_ms();
            engine
                .transition(
                    &tenant,
                    &contact.0,
                    Action::TimeOut,
                    |c| {
                        c.end_time = ts(now);
                        c.close_time = ts(now);
                        Ok(())
                    },
                    |before, after, fx| {
                        engine.contact_event(fx, Kind::TimedOut, before, after, "", "")?;
                        crate::consult::ended(fx, before);
                        Ok(())
                    },
                )
                .await?;
        }
    }
    Ok(())
}

/// Fires due timers (an offer nobody answered, RONA; the end of after-contact work) and
/// carries out side effects writers left behind. A timer is claimed by pushing its due time
/// a lease ahead, and removed only once handled: if this replica dies mid-way, the timer
/// fires again when the lease runs out (handlers refuse what was already done).
pub async fn timers(engine: Engine, every: Duration, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(every);
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = fire_due(&engine).await {
            tracing::warn!(error = %e, "timer sweep failed");
        }
        round += 1;
        if round.is_multiple_of(5) {
            match engine.sweep_outboxes().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "carried out side effects left behind"),
                Err(e) => tracing::warn!(error = %e, "outbox sweep failed"),
            }
        }
    }
}

/// How long a claimed timer is this replica's before another may fire it.
const TIMER_LEASE_MS: i64 = 10_000;

async fn fire_due(engine: &Engine) -> Result<(), Error> {
    let mut conn = engine.store.conn()?;
    let now = now_ms();
    let due: Vec<String> = redis::AsyncCommands::zrangebyscore_limit(&mut conn, &engine.deadlines, "-inf", now, 0, 200)
        .await
        .map_err(Error::from)?;
    for member in due {
        let lease = now + TIMER_LEASE_MS;
        if !engine.store.claim_timer(&engine.deadlines, &member, now, lease).await? {
            continue;
        }
        let parts: Vec<&str> = member.splitn(4, '|').collect();
        let result = match parts.as_slice() {
            ["presence", _, agent, _] => presence_lapsed(engine, &member, agent, lease).await,
            [kind, tenant, id, token] => match TenantId::parse(tenant) {
                Ok(tenant) => fire(engine, kind, &tenant, id, token).await,
                Err(_) => Err(Error::NotFound(member.clone())),
            },
            _ => Err(Error::NotFound(member.clone())),
        };
        if let Err(Error::NotFound(what)) = &result {
            tracing::debug!(%what, "timer for something that is gone; dropped");
        }
        match result {
            Ok(()) | Err(Error::FailedPrecondition(_)) | Err(Error::NotFound(_)) => {
                engine.store.finish_timer(&engine.deadlines, &member, lease).await?;
            }
            // Left claimed: it fires again when the lease runs out.
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// No event stream of the agent refreshed its presence within the grace: unless one did
/// since the claim, an available agent is made away (`disconnected`), so routing stops
/// offering to it, and every offer it holds goes back to its queue at once (as on no
/// answer). Contacts it is connected to stay as they are (the customer may still be on the
/// line); a signed-out agent is left alone.
async fn presence_lapsed(engine: &Engine, member: &str, agent: &str, lease: i64) -> Result<(), Error> {
    let mut conn = engine.store.conn()?;
    let score: Option<i64> = redis::AsyncCommands::zscore(&mut conn, &engine.deadlines, member).await?;
    if score != Some(lease) {
        return Ok(()); // refreshed by a stream (re)opened since the claim
    }
    let (agent_after, ()) = engine
        .update_agent(agent, |cur, fx| {
            let mut a = cur.ok_or_else(|| Error::NotFound(format!("agents/{agent}")))?;
            if a.state == pb::AgentState::Available as i32 {
                a.state = pb::AgentState::Away as i32;
                a.away_reason = DISCONNECTED.into();
                a.state_time = ts(now_ms());
                engine.route_agent(fx, &a, &Input::AgentNotReady { agent: rc::AgentId(agent.to_owned()) });
                engine.agent_event(fx, pb::agent_event::Kind::StateChanged, &a);
                fx.notify(agent, Notice::Agent(a.clone()));
            }
            Ok((a, ()))
        })
        .await?;
    if agent_after.state == pb::AgentState::Offline as i32 {
        return Ok(());
    }
    tracing::info!(agent, "agent event stream gone for the presence grace; offers it holds go back");
    for name in &agent_after.contacts {
        let Ok((tenant, id)) = crate::engine::parse_contact_name(name) else { continue };
        let Some((_, c)) = engine.store.load::<pb::Contact>(&store::contact_key(&tenant, &id)).await? else { continue };
        if c.state == ContactState::Offered as i32 && c.agent_id == agent {
            match decline(engine, &tenant, &id, &c.offer_id, agent, true).await {
                Ok(_) | Err(Error::FailedPrecondition(_)) => {} // answered or moved on meanwhile
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

async fn fire(engine: &Engine, kind: &str, tenant: &TenantId, id: &str, token: &str) -> Result<(), Error> {
    match kind {
        "offer" => {
            let agent = engine
                .store
                .load::<pb::Contact>(&store::contact_key(tenant, id))
                .await?
                .filter(|(_, c)| c.state == ContactState::Offered as i32 && c.offer_id == token)
                .map(|(_, c)| c.agent_id);
            match agent {
                Some(agent) => decline(engine, tenant, id, token, &agent, true).await.map(|_| ()),
                None => Ok(()),
            }
        }
        "acw" => close(engine, tenant, id, "", "").await.map(|_| ()),
        _ => Ok(()),
    }
}

/// Forwards agent notifications published on Redis (by any replica) to this replica's
/// open streams.
pub async fn fan_out(engine: Engine, redis_url: String, shutdown: Shutdown) {
    loop {
        let result = async {
            let client = redis::Client::open(redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&engine.redis_channel).await?;
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = shutdown.wait() => return Ok::<bool, redis::RedisError>(true),
                    m = messages.next() => {
                        let Some(m) = m else { return Ok(false) };
                        let payload: Vec<u8> = m.get_payload()?;
                        let Some(split) = payload.iter().position(|b| *b == b'\n') else { continue };
                        let agent = String::from_utf8_lossy(&payload[..split]).into_owned();
                        if let Ok(event) = <pb::AgentStreamEvent as prost::Message>::decode(&payload[split + 1..]) {
                            engine.notices.send(&agent, event);
                        }
                    }
                }
            }
        }
        .await;
        match result {
            Ok(true) => return,
            Ok(false) => tracing::warn!("agent notification subscription ended; resubscribing"),
            Err(e) => tracing::warn!(error = %e, "agent notification subscription failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
