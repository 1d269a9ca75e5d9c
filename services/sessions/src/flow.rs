//! The background side of sessions: applying routing decisions, firing timers (offer
//! expiry = RONA, end of after-contact work) and fanning agent notifications out to the
//! streams open on this replica.

use std::time::Duration;

use centralita_platform::bus::{Event, Handler};
use centralita_platform::error::Error;
use centralita_platform::queue::NOT_RESPONDING;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use centralita_proto::routing::v1 as rpb;
use centralita_proto::sessions::v1::{
    self as pb, agent_stream_event::Event as Notice, contact_event::Kind, ContactState,
};
use centralita_routing::core::{self as rc, Decision, Input};
use centralita_routing::wire;
use futures::StreamExt;

use crate::engine::{now_ms, ts, Engine};
use crate::lifecycle::Action;
use crate::store;

/// The offered agent declined (or did not answer): the contact goes back to its place.
pub async fn decline(
    engine: &Engine,
    tenant: &TenantId,
    id: &str,
    offer_id: &str,
    agent: &str,
    not_responding: bool,
) -> Result<(pb::Contact, pb::Contact), Error> {
    let action = if not_responding { Action::NoAnswer } else { Action::Reject };
    let (before, after) = engine
        .transition(tenant, id, action, |c| {
            if c.offer_id != offer_id || c.agent_id != agent {
                return Err(Error::FailedPrecondition("this offer is no longer open".into()));
            }
            c.agent_id.clear();
            c.offer_id.clear();
            c.offer_expire_time = None;
            Ok(())
        })
        .await?;
    engine.store.zrem(&engine.deadlines, &format!("offer|{tenant}|{id}|{offer_id}")).await?;
    engine
        .route(
            tenant,
            &Input::OfferDeclined {
                contact: rc::ContactId(id.into()),
                agent: rc::AgentId(agent.into()),
                not_responding,
            },
        )
        .await?;
    if not_responding {
        let (a, ()) = engine
            .store
            .update::<pb::Agent, ()>(
                &store::agent_key(agent),
                |cur| {
                    let mut a = cur.ok_or_else(|| Error::NotFound(format!("agents/{agent}")))?;
                    if a.state == pb::AgentState::Available as i32 {
                        a.state = pb::AgentState::Away as i32;
                        a.away_reason = NOT_RESPONDING.into();
                        a.state_time = ts(now_ms());
                    }
                    Ok((a, ()))
                },
                |_| 0,
            )
            .await?;
        let event = pb::AgentEvent { kind: pb::agent_event::Kind::StateChanged as i32, agent: Some(a) };
        let pool = TenantId::parse(centralita_routing::engine::POOL_TENANT).map_err(Error::internal)?;
        engine.producer.publish(&engine.topics.agents(), agent, &Event::new(pool, &event)).await?;
    }
    engine.release(tenant, &after, agent, false).await?;
    Ok((before, after))
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
    let (before, after) = engine
        .transition(tenant, id, Action::WrapUp, |c| {
            c.disposition = disposition.to_owned();
            c.close_time = ts(now);
            Ok(())
        })
        .await?;
    engine.store.zrem(&engine.deadlines, &format!("acw|{tenant}|{id}|")).await?;
    let agent = after.agent_id.clone();
    engine.publish_contact(Kind::WrappedUp, &before, &after, &agent, notes).await?;
    if !agent.is_empty() {
        engine.release(tenant, &after, &agent, true).await?;
    }
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
        match apply(&self.engine, decision).await {
            Err(Error::FailedPrecondition(why)) | Err(Error::NotFound(why)) => {
                tracing::debug!(%why, "stale routing decision");
                Ok(())
            }
            other => other,
        }
    }
}

async fn apply(engine: &Engine, decision: Decision) -> Result<(), Error> {
    match decision {
        Decision::Offer { contact, agent, queue, expires_at, .. } => {
            let tenant = TenantId::parse(&queue.tenant).map_err(Error::internal)?;
            let offer_id = uuid::Uuid::now_v7().simple().to_string();
            let agent_ok = engine
                .store
                .load::<pb::Agent>(&store::agent_key(&agent.0))
                .await?
                .is_some_and(|(_, a)| a.state == pb::AgentState::Available as i32);
            if !agent_ok {
                // The agent left between routing's decision and now: hand the contact back.
                engine.route(&tenant, &Input::OfferDeclined { contact, agent, not_responding: false }).await?;
                return Ok(());
            }
            let (before, after) = engine
                .transition(&tenant, &contact.0, Action::Offer, |c| {
                    c.agent_id.clone_from(&agent.0);
                    c.offer_id.clone_from(&offer_id);
                    c.offer_expire_time = ts(expires_at);
                    Ok(())
                })
                .await?;
            engine.agent_contacts(&agent.0, &after.name, true).await?;
            engine.schedule("offer", tenant.as_str(), &contact.0, &offer_id, expires_at).await?;
            engine.publish_contact(Kind::Offered, &before, &after, &agent.0, "").await?;
            engine.notify(&agent.0, Notice::Offer(after)).await?;
        }
        Decision::Overflow { contact, to, .. } => {
            let tenant = TenantId::parse(&to.tenant).map_err(Error::internal)?;
            let (before, after) = engine
                .transition(&tenant, &contact.0, Action::Overflow, |c| {
                    c.queue.clone_from(&to.queue);
                    c.enqueue_time = ts(now_ms());
                    Ok(())
                })
                .await?;
            engine.publish_contact(Kind::Overflowed, &before, &after, "", "").await?;
            let queued = engine.queued(&after)?;
            engine.route(&tenant, &Input::ContactQueued(queued)).await?;
        }
        Decision::TimedOut { contact, queue } => {
            let tenant = TenantId::parse(&queue.tenant).map_err(Error::internal)?;
            let now = now_ms();
            let (before, after) = engine
                .transition(&tenant, &contact.0, Action::TimeOut, |c| {
                    c.end_time = ts(now);
                    c.close_time = ts(now);
                    Ok(())
                })
                .await?;
            engine.publish_contact(Kind::TimedOut, &before, &after, "", "").await?;
        }
    }
    Ok(())
}

/// Fires due timers: an offer nobody answered (RONA) and the end of after-contact work.
/// Each timer is claimed by removing it from the sorted set, so one replica fires it.
pub async fn timers(engine: Engine, every: Duration, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = fire_due(&engine).await {
            tracing::warn!(error = %e, "timer sweep failed");
        }
    }
}

async fn fire_due(engine: &Engine) -> Result<(), Error> {
    let mut conn = engine.store.conn()?;
    let due: Vec<String> =
        redis::AsyncCommands::zrangebyscore_limit(&mut conn, &engine.deadlines, "-inf", now_ms(), 0, 200)
            .await
            .map_err(Error::from)?;
    for member in due {
        if !engine.store.zrem(&engine.deadlines, &member).await? {
            continue;
        }
        let parts: Vec<&str> = member.splitn(4, '|').collect();
        let [kind, tenant, id, token] = parts.as_slice() else { continue };
        let Ok(tenant) = TenantId::parse(tenant) else { continue };
        let result = match *kind {
            "offer" => {
                let agent = engine
                    .store
                    .load::<pb::Contact>(&store::contact_key(&tenant, id))
                    .await?
                    .filter(|(_, c)| c.state == ContactState::Offered as i32 && c.offer_id == *token)
                    .map(|(_, c)| c.agent_id);
                match agent {
                    Some(agent) => match decline(engine, &tenant, id, token, &agent, true).await {
                        Ok((before, after)) => {
                            engine.publish_contact(Kind::NotAnswered, &before, &after, &agent, "").await
                        }
                        Err(e) => Err(e),
                    },
                    None => Ok(()),
                }
            }
            "acw" => close(engine, &tenant, id, "", "").await.map(|_| ()),
            _ => Ok(()),
        };
        match result {
            Ok(()) | Err(Error::FailedPrecondition(_)) | Err(Error::NotFound(_)) => {}
            Err(e) => {
                // Put the timer back so it fires again.
                let _ = engine.store.zadd(&engine.deadlines, &member, now_ms()).await;
                return Err(e);
            }
        }
    }
    Ok(())
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
                            let _ = engine.notices.send((agent, event));
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
