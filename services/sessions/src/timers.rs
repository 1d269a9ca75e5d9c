//! Fires due timers — an offer nobody answered (RONA), the end of after-contact work, an
//! agent's presence lapsing, a phone's registration expiring — and sweeps outboxes writers left behind. Timers live in one
//! Redis sorted set scored by due time ([`crate::core::Timer`] is their typed form). A
//! timer is claimed by pushing its due time a lease ahead and removed only once handled:
//! if this replica dies mid-way, the timer fires again when the lease runs out, and the
//! core refuses what was already done (overtaken). A timer fires in a span continuing the
//! trace of the command that scheduled it (kept beside the timer by `Store::schedule`).

use std::time::Duration;

use centralita_platform::error::Error;
use centralita_platform::shutdown::Shutdown;
use tracing::Instrument as _;

use crate::core::{self, decision::Applied, AgentState, ContactRef, ContactState, Refusal, Timer};
use crate::engine::{Engine, Failure};

/// How long a claimed timer is this replica's before another may fire it.
const TIMER_LEASE_MS: i64 = 10_000;

/// Timers fired per round at most (the rest in the next round).
const BATCH: isize = 200;

/// Fires due timers every `every`, and sweeps outboxes every fifth round.
pub async fn run(engine: Engine, every: Duration, shutdown: Shutdown) {
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

/// Fires every timer due now (up to a batch); returns how many were handled.
pub async fn fire_due(engine: &Engine) -> Result<usize, Error> {
    let now = engine.clock.now();
    let mut fired = 0;
    for member in engine.store.due_timers(now, BATCH).await? {
        let lease = now + TIMER_LEASE_MS;
        if !engine.store.claim_timer(&member, now, lease).await? {
            continue;
        }
        let outcome = match Timer::parse(&member) {
            Some(timer) => {
                let span = timer_span(&timer);
                let trace = engine.store.timer_trace(&member).await?;
                if let Some(t) = trace.as_deref() {
                    centralita_platform::telemetry::set_parent_from(&span, [("traceparent", t)].into_iter());
                }
                fire(engine, &timer, &member, lease).instrument(span).await
            }
            None => {
                tracing::warn!(%member, "unreadable timer dropped");
                Ok(Applied::Done)
            }
        };
        match outcome {
            Ok(Applied::Done) => {}
            Ok(Applied::Overtaken(why)) => tracing::debug!(%member, %why, "timer overtaken; dropped"),
            // Left claimed: it fires again when the lease runs out.
            Err(e) => return Err(e),
        }
        engine.store.finish_timer(&member, lease).await?;
        fired += 1;
    }
    Ok(fired)
}

/// The span of a timer firing, continuing the trace of the command that scheduled it (the
/// offer, the end of the contact, the stream that closed), so what it causes joins that trace.
fn timer_span(timer: &Timer) -> tracing::Span {
    let span = tracing::info_span!(
        "timer",
        kind = tracing::field::Empty,
        tenant = tracing::field::Empty,
        contact = tracing::field::Empty,
        agent = tracing::field::Empty
    );
    match timer {
        Timer::Offer { tenant, contact, .. } => {
            span.record("kind", "offer").record("tenant", tenant.as_str()).record("contact", contact.0.as_str())
        }
        Timer::AfterContactWork { tenant, contact } => span
            .record("kind", "after_contact_work")
            .record("tenant", tenant.as_str())
            .record("contact", contact.0.as_str()),
        Timer::Presence { agent } => span.record("kind", "presence").record("agent", agent.0.as_str()),
        Timer::Phone { tenant, agent } => {
            span.record("kind", "phone").record("tenant", tenant.as_str()).record("agent", agent.0.as_str())
        }
    };
    span
}

fn applied<T>(result: Result<T, Failure>) -> Result<Applied, Error> {
    match result {
        Ok(_) => Ok(Applied::Done),
        Err(Failure::Refused(why)) => Ok(Applied::Overtaken(why)),
        Err(Failure::Failed(e)) => Err(e),
    }
}

async fn fire(engine: &Engine, timer: &Timer, member: &str, lease: i64) -> Result<Applied, Error> {
    let now = engine.clock.now();
    match timer {
        Timer::Offer { tenant, contact, offer } => {
            let c = ContactRef { tenant: tenant.clone(), id: contact.clone() };
            // The offered agent, read from the record (the timer names only the offer).
            let agent = match engine.store.contact(&c).await? {
                Some(record) if record.state == ContactState::Offered && record.offer_id() == Some(offer) => {
                    record.agent
                }
                _ => None,
            };
            let Some(agent) = agent else { return Ok(Applied::Overtaken(Refusal::OfferNotOpen)) };
            tracing::info!(agent = %agent, "offer not answered in time; the contact goes back to its place");
            applied(engine.transition(&c, |c| core::contact::rona(c, &agent, offer)).await)
        }
        Timer::AfterContactWork { tenant, contact } => {
            let c = ContactRef { tenant: tenant.clone(), id: contact.clone() };
            applied(engine.transition(&c, |c| core::contact::acw_elapsed(c, now)).await)
        }
        Timer::Presence { agent } => {
            // Refreshed by a stream (re)opened since the claim: not lapsed.
            if engine.store.timer_due(member).await? != Some(lease) {
                return Ok(Applied::Done);
            }
            presence_lapsed(engine, agent, now).await
        }
        Timer::Phone { tenant, agent } => {
            let reach = |t: &str, a: &str, registered: bool| engine.reaches(t, a, registered);
            applied(engine.change_agent(agent, |a| Ok(core::agent::phone_lapsed(a, tenant, now, &reach))).await)
        }
    }
}

/// No event stream of the agent refreshed its presence within the grace: an available
/// agent is made away (`disconnected`), so routing stops offering to it, and every offer it
/// holds goes back to its queue at once (as on no answer). Contacts it is connected to stay
/// as they are (the customer may still be on the line); a signed-out agent is left alone.
async fn presence_lapsed(engine: &Engine, agent: &core::AgentId, now: i64) -> Result<Applied, Error> {
    let after = match engine.change_agent(agent, |a| Ok(core::agent::presence_lapsed(a, now))).await {
        Ok(a) => a,
        Err(Failure::Refused(why)) => return Ok(Applied::Overtaken(why)),
        Err(Failure::Failed(e)) => return Err(e),
    };
    if after.state == AgentState::Offline {
        return Ok(Applied::Done);
    }
    tracing::info!(agent = %agent, "agent event stream gone for the presence grace; offers it holds go back");
    for (c, record) in after.contacts.iter().zip(engine.store.contacts(&after.contacts).await?) {
        let Some(record) = record else { continue };
        if record.state != ContactState::Offered || record.agent.as_ref() != Some(agent) {
            continue;
        }
        let Some(offer) = record.offer_id().cloned() else { continue };
        // Answered or moved on meanwhile: overtaken, nothing to do.
        applied(engine.transition(c, |c| core::contact::rona(c, agent, &offer)).await)?;
    }
    Ok(Applied::Done)
}
