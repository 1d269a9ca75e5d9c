//! The transactional outbox of a PostgreSQL-backed service: an event is queued in the same
//! transaction as the change that caused it ([`queue`]), and a relay ([`relay`]) publishes
//! what is queued, oldest first, deleting each entry once the broker has acknowledged it —
//! at least once, so consumers dedupe on the event id kept in the envelope.
//!
//! The service's schema has the table (with the tenancy policy of [`super::TENANCY_SQL`]):
//! `outbox (tenant TEXT, seq BIGSERIAL, topic_base TEXT, key TEXT, envelope BYTEA)`, where
//! `topic_base` is the topic's name without the installation's prefix.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::Notify;

use super::begin;
use crate::bus::{Event, Producer, Topics};
use crate::error::Error;
use crate::shutdown::Shutdown;
use crate::tenant::TenantId;

/// How many entries one pass of the relay publishes at most.
const BATCH: i64 = 100;

/// Queues `envelope` (an encoded [`Event`]) for `topic_base`, in the caller's transaction.
pub async fn queue(
    tx: &Transaction<'_>,
    tenant: &str,
    topic_base: &str,
    key: &str,
    envelope: &[u8],
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO outbox (tenant, topic_base, key, envelope) VALUES ($1, $2, $3, $4)",
        &[&tenant, &topic_base, &key, &envelope],
    )
    .await?;
    Ok(())
}

/// One queued event.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub tenant: String,
    pub seq: i64,
    pub topic_base: String,
    pub key: String,
    pub envelope: Vec<u8>,
}

/// Up to `limit` queued events of every tenant, oldest first (BPO scope).
pub async fn pending(pool: &Pool, limit: i64) -> Result<Vec<Outgoing>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, &TenantId::bpo()).await?;
    let rows =
        tx.query("SELECT tenant, seq, topic_base, key, envelope FROM outbox ORDER BY seq LIMIT $1", &[&limit]).await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| Outgoing { tenant: r.get(0), seq: r.get(1), topic_base: r.get(2), key: r.get(3), envelope: r.get(4) })
        .collect())
}

/// Deletes a published event from the outbox.
pub async fn published(pool: &Pool, tenant: &str, seq: i64) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, &TenantId::bpo()).await?;
    tx.execute("DELETE FROM outbox WHERE tenant = $1 AND seq = $2", &[&tenant, &seq]).await?;
    tx.commit().await?;
    Ok(())
}

/// Publishes what the outbox holds until `shutdown`; runs when woken (after a write) and
/// every second. `what` names the outbox in logs.
pub async fn relay(
    pool: Pool,
    producer: Producer,
    topics: Topics,
    wake: Arc<Notify>,
    shutdown: Shutdown,
    what: &'static str,
) {
    loop {
        match relay_once(&pool, &producer, &topics).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, outbox = what, "outbox relay failed; will retry"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One pass of the relay; how many events went out. An entry that does not decode is
/// dropped (logged): it can never be published.
pub async fn relay_once(pool: &Pool, producer: &Producer, topics: &Topics) -> Result<usize, Error> {
    let pending = pending(pool, BATCH).await?;
    for o in &pending {
        match Event::decode(&o.envelope) {
            Ok(event) => {
                producer.publish(&topics.name(&o.topic_base), &o.key, &event).await?;
            }
            Err(e) => tracing::error!(error = %e, seq = o.seq, "dropping an outbox entry that does not decode"),
        }
        published(pool, &o.tenant, o.seq).await?;
    }
    Ok(pending.len())
}
