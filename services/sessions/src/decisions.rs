//! Routing's decisions, applied to contacts: offers, overflows and time-outs from the
//! routing decision topic. A decision overtaken by what happened meanwhile (the contact
//! left the queue, the offer was already made) is a domain outcome and changes nothing; a
//! failure to read or write is an error, and the consumer retries the decision.

use centralita_platform::bus::{Event, Handler};
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use centralita_proto::routing::v1 as rpb;
use centralita_routing_contract::{pool_tenant, Decision, Input};

use tracing::Instrument as _;

use crate::core::decision::{offer_verdict, Applied, OfferVerdict};
use crate::core::{self, ContactRef, OfferId, Refusal};
use crate::engine::{Engine, Failure};

/// Applies routing decisions to contacts.
#[derive(Debug)]
pub struct DecisionHandler {
    pub engine: Engine,
}

impl Handler for DecisionHandler {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        let decision = match event
            .payload::<rpb::RoutingDecision>()
            .and_then(|d| Decision::try_from(d).map_err(|e| Error::invalid("decision", e.to_string())))
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "invalid routing decision skipped");
                return Ok(());
            }
        };
        let (kind, contact) = match &decision {
            Decision::Offer { contact, .. } => ("offer", contact),
            Decision::Overflow { contact, .. } => ("overflow", contact),
            Decision::TimedOut { contact, .. } => ("timed_out", contact),
        };
        // Inside the consumer's span, which continues the deciding router's decision span.
        let span = tracing::info_span!("decision", kind, tenant = %event.tenant, contact = %contact.0);
        let outcome = apply(&self.engine, decision, event.occurred_at.timestamp_millis()).instrument(span).await?;
        let label = match &outcome {
            Outcome::Applied(Applied::Done) => "applied",
            Outcome::Applied(Applied::Overtaken(why)) => {
                tracing::debug!(%why, "stale routing decision");
                "stale"
            }
            Outcome::Void => "void",
        };
        self.engine.metrics.decision(kind, label);
        Ok(())
    }
}

/// What a decision came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied(Applied),
    /// An offer void before it reached the agent; the contact went back to its place.
    Void,
}

fn applied<T>(result: Result<T, Failure>) -> Result<Outcome, Error> {
    match result {
        Ok(_) => Ok(Outcome::Applied(Applied::Done)),
        Err(Failure::Refused(why)) => Ok(Outcome::Applied(Applied::Overtaken(why))),
        Err(Failure::Failed(e)) => Err(e),
    }
}

fn tenant_of(queue_tenant: &str) -> Result<TenantId, Error> {
    TenantId::parse(queue_tenant).map_err(Error::internal)
}

/// Applies one decision, decided at `decided_at` (ms).
pub async fn apply(engine: &Engine, decision: Decision, decided_at: i64) -> Result<Outcome, Error> {
    let now = engine.clock.now();
    match decision {
        Decision::Offer { contact, agent, queue, expires_at, .. } => {
            let c = ContactRef { tenant: tenant_of(&queue.tenant)?, id: contact };
            let record = engine.store.contact(&c).await?;
            let agent_record = engine.store.agent(&agent).await?;
            match offer_verdict(record.as_ref(), agent_record.as_ref(), decided_at, expires_at, now) {
                OfferVerdict::Stale => Ok(Outcome::Applied(Applied::Overtaken(Refusal::OfferNotOpen))),
                OfferVerdict::Void { agent_available, same_pool, left_ms } => {
                    // The contact goes back to its place without counting as declined by the
                    // agent, which the deciding router takes as not ready; if the agent is
                    // available (again), its readiness is appended after the void (whose
                    // publish is acknowledged first), so routing never leaves it idle.
                    let reason = match (agent_available, same_pool) {
                        (false, _) => "agent_unavailable",
                        (true, false) => "other_pool",
                        (true, true) => "late",
                    };
                    engine.metrics.offer_voided(reason);
                    tracing::info!(contact = %c.id, agent = %agent, agent_available, same_pool, left_ms, "offer void; contact back to its place");
                    let pool = record.map(|r| r.agent_pool).unwrap_or_default();
                    let void = Input::OfferUndelivered { contact: c.id.clone(), agent: agent.clone() };
                    engine.route_now(&c.tenant, &pool, &void).await?;
                    // Readiness goes to the agent's own pool (it changes nothing where the
                    // agent is ready already; where pools share a router, it undoes the
                    // void's not-ready).
                    if let Some(a) =
                        engine.store.agent(&agent).await?.filter(|a| a.state == core::AgentState::Available)
                    {
                        engine.route_now(&pool_tenant(), &a.agent_pool, &Input::AgentReady { agent }).await?;
                    }
                    Ok(Outcome::Void)
                }
                OfferVerdict::Make => {
                    let offer = OfferId(uuid::Uuid::now_v7().simple().to_string());
                    applied(engine.transition(&c, |r| core::contact::offer(r, &agent, offer.clone(), expires_at)).await)
                }
            }
        }
        Decision::Overflow { contact, to, .. } => {
            let c = ContactRef { tenant: tenant_of(&to.tenant)?, id: contact };
            // The queue is checked first: a tenant since suspended or a queue since removed
            // cannot take the contact, which stays where it is.
            let q = match engine.registry.require_active(&c.tenant) {
                Ok(t) => t.routing.queues.get(&to.queue).cloned(),
                Err(_) => None,
            };
            let Some(q) = q else {
                tracing::warn!(contact = %c.id, queue = %to.queue, "overflow to a queue that is gone; skipped");
                return Ok(Outcome::Applied(Applied::Overtaken(Refusal::QueueGone(to.queue))));
            };
            applied(engine.transition(&c, |r| core::contact::overflow(r, &to.queue, &q, now)).await)
        }
        Decision::TimedOut { contact, queue } => {
            let c = ContactRef { tenant: tenant_of(&queue.tenant)?, id: contact };
            applied(engine.transition(&c, |r| core::contact::time_out(r, now)).await)
        }
    }
}
