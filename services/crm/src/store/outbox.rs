//! The outbox: events queued in the transaction that caused them, published by the relay.

use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use deadpool_postgres::{Pool, Transaction};

use super::begin;

/// Queues an event for the relay, in the caller's transaction.
pub async fn outbox(
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

pub async fn published(pool: &Pool, tenant: &str, seq: i64) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, &TenantId::bpo()).await?;
    tx.execute("DELETE FROM outbox WHERE tenant = $1 AND seq = $2", &[&tenant, &seq]).await?;
    tx.commit().await?;
    Ok(())
}
