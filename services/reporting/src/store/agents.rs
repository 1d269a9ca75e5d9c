//! Agent state spans: agent events folded into spans, each event once, and the activity
//! (spans and answered legs of any tenant) agent time is computed from.

use std::sync::Arc;

use centralita_platform::bus::{Consumer, ConsumerSettings, Event, Handler, FETCH_WAIT_DEFAULT};
use centralita_platform::db::set_tenant;
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use centralita_proto::sessions::v1 as spb;
use deadpool_postgres::Pool;

use super::legs::{leg_from_row, LEG_COLUMNS};
use super::InTransaction;
use crate::core::agents::{next_span, split_late, Span};
use crate::core::{Leg, Millis};
use crate::metrics::Metrics;

/// The consumer of the agents topic that folds agent events into state spans.
pub fn agent_consumer(
    brokers: &str,
    group_id: String,
    topic: String,
    group_instance_id: Option<String>,
    pool: Pool,
    domain: Arc<Metrics>,
    metrics: Option<Arc<centralita_platform::metrics::Metrics>>,
) -> Result<Consumer<AgentEvents, InTransaction>, Error> {
    Consumer::new(
        ConsumerSettings {
            brokers: brokers.into(),
            group_id,
            topics: vec![topic],
            fetch_wait: FETCH_WAIT_DEFAULT,
            group_instance_id,
        },
        AgentEvents { pool, metrics: domain },
        InTransaction,
        metrics,
    )
}

const SPAN_COLUMNS: &str = "agent_id, since, until, state, away_reason, queues";

fn span_from_row(r: &tokio_postgres::Row) -> Result<Span, Error> {
    Ok(Span {
        agent: r.try_get(0)?,
        since: r.try_get(1)?,
        until: r.try_get(2)?,
        state: r.try_get(3)?,
        away_reason: r.try_get(4)?,
        queues: r.try_get(5)?,
    })
}

/// Applies one agent event, once: closes the agent's open span and opens the next.
pub async fn apply_agent_event(pool: &Pool, event: &Event) -> Result<bool, Error> {
    let e: spb::AgentEvent = event.payload()?;
    let a = e.agent.ok_or_else(|| Error::invalid("agent", "an agent event names no agent"))?;
    let agent = a.name.strip_prefix("agents/").unwrap_or(&a.name).to_owned();
    if agent.is_empty() {
        return Err(Error::invalid("agent.name", "is empty"));
    }
    let state = i16::try_from(a.state).map_err(|_| Error::invalid("agent.state", "out of range"))?;
    let mut queues: Vec<String> = a.queues.iter().map(|q| format!("{}/{}", q.tenant, q.queue)).collect();
    queues.sort();
    queues.dedup();
    let mut tenants: Vec<String> = a.queues.iter().map(|q| q.tenant.clone()).collect();
    tenants.sort();
    tenants.dedup();
    let at = event.occurred_at.timestamp_millis();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    set_tenant(&tx, &TenantId::bpo()).await?;
    let fresh = tx
        .execute(
            "INSERT INTO applied_events (event_id, tenant) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&event.id.to_string(), &TenantId::bpo().as_str()],
        )
        .await?;
    if fresh == 0 {
        tx.commit().await?;
        return Ok(false);
    }
    let open = tx
        .query_opt(
            &format!("SELECT {SPAN_COLUMNS} FROM agent_spans WHERE agent_id = $1 AND until IS NULL FOR UPDATE"),
            &[&agent],
        )
        .await?
        .map(|r| span_from_row(&r))
        .transpose()?;
    if open.as_ref().is_some_and(|o| at < o.since) {
        // Late: it lands inside the span that holds its time.
        let containing = tx
            .query_opt(
                &format!(
                    "SELECT {SPAN_COLUMNS} FROM agent_spans WHERE agent_id = $1 AND since <= $2 AND until > $2 FOR UPDATE"
                ),
                &[&agent, &at],
            )
            .await?
            .map(|r| span_from_row(&r))
            .transpose()?;
        if let Some((before, late)) = containing.and_then(|c| split_late(&c, at, state, &a.away_reason, queues)) {
            end_span(&tx, &before, at).await?;
            write_span(&tx, &late, &tenants).await?;
        }
    } else if let Some(next) = next_span(open.as_ref(), &agent, at, state, &a.away_reason, queues) {
        if let Some(o) = &open {
            end_span(&tx, o, at).await?;
        }
        write_span(&tx, &next, &tenants).await?;
    }
    tx.commit().await?;
    Ok(true)
}

async fn end_span(tx: &deadpool_postgres::Transaction<'_>, span: &Span, at: Millis) -> Result<(), Error> {
    tx.execute(
        "UPDATE agent_spans SET until = $3 WHERE agent_id = $1 AND since = $2",
        &[&span.agent, &span.since, &at],
    )
    .await?;
    Ok(())
}

/// Stores `span` (replacing one that starts at the same instant).
async fn write_span(tx: &deadpool_postgres::Transaction<'_>, span: &Span, tenants: &[String]) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO agent_spans (agent_id, since, until, state, away_reason, queues, tenants) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (agent_id, since) DO UPDATE SET until = EXCLUDED.until, state = EXCLUDED.state, \
         away_reason = EXCLUDED.away_reason, queues = EXCLUDED.queues, tenants = EXCLUDED.tenants",
        &[&span.agent, &span.since, &span.until, &span.state, &span.away_reason, &span.queues, &tenants],
    )
    .await?;
    Ok(())
}

/// Spans of the agents that served `tenant` overlapping `[from, to)`, with every leg those
/// agents answered that overlaps it (any tenant's: agent time is BPO-wide).
pub async fn agent_activity(
    pool: &Pool,
    tenant: &TenantId,
    from: Millis,
    to: Millis,
) -> Result<(Vec<Span>, Vec<Leg>), Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    set_tenant(&tx, tenant).await?;
    let agents: Vec<String> = tx
        .query(
            "SELECT DISTINCT agent_id FROM agent_spans WHERE $1 = ANY (tenants) AND since < $3 AND (until IS NULL OR until > $2)",
            &[&tenant.as_str(), &from, &to],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let spans = tx
        .query(
            &format!(
                "SELECT {SPAN_COLUMNS} FROM agent_spans WHERE agent_id = ANY ($1) AND since < $3 AND (until IS NULL OR until > $2) \
                 ORDER BY agent_id, since"
            ),
            &[&agents, &from, &to],
        )
        .await?
        .iter()
        .map(span_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit().await?;
    // The agents' legs of every tenant, read as the BPO.
    let tx = client.transaction().await?;
    set_tenant(&tx, &TenantId::bpo()).await?;
    let legs = tx
        .query(
            &format!(
                "SELECT {LEG_COLUMNS} FROM legs WHERE outcome = 1 AND agent_id = ANY ($1) AND left_at < $3 \
                 AND (handled_at IS NULL OR handled_at > $2)"
            ),
            &[&agents, &from, &to],
        )
        .await?
        .iter()
        .map(leg_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit().await?;
    Ok((spans, legs))
}

/// The agent-event consumer's handler.
#[derive(Debug, Clone)]
pub struct AgentEvents {
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
}

impl Handler for AgentEvents {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        match apply_agent_event(&self.pool, event).await {
            Err(e @ Error::InvalidArgument(_)) => {
                tracing::warn!(error = %e, event_id = %event.id, "unreadable agent event skipped");
                Ok(())
            }
            Ok(fresh) => {
                if fresh {
                    self.metrics.agent_event_applied();
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
