//! PostgreSQL side: legs (the history every figure is computed from), agent state spans,
//! published usage days, and the ids of the events already applied, written in one
//! transaction per event (or batch) so a redelivered or replayed event changes nothing.
//!
//! # Layout
//! The functions the rest of the crate calls are re-exported here.
//! - `schema`: the tables, one constant per migration version.
//! - `legs`: contact events folded into legs; legs read back.
//! - `agents`: agent events folded into state spans; agent activity read back.
//! - `usage`: which days' usage records were published.
//! - `retention`: the expired contacts' legs anonymised, one batch per transaction.

use centralita_platform::bus::{Dedupe, Event};
use centralita_platform::db::set_tenant;
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use deadpool_postgres::Pool;

mod agents;
mod legs;
mod retention;
mod schema;
mod usage;

pub use agents::{agent_activity, agent_consumer, apply_agent_event, AgentEvents};
pub use legs::{apply_batch, contact_consumer, fact, fold_batch, legs_between, waiting, ContactEvents, Folded};
pub use retention::{anonymise_contacts, anonymise_expired, ANONYMOUS_PREFIX};
pub use schema::{AGENTS_SQL, CHANNEL_NAME_SQL, LEGS_SQL, LEG_ROLE_SQL, RETENTION_SQL, USAGE_SQL};
pub use usage::{mark_published, published_days};

/// Runs one statement in a transaction scoped to `tenant` (row-level security).
pub(super) async fn tenant_query(
    pool: &Pool,
    tenant: &TenantId,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    set_tenant(&tx, tenant).await?;
    let rows = tx.query(sql, params).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Deduplication happens inside the handler's transaction (`applied_events`), so the
/// consumer's own dedupe has nothing to remember.
#[derive(Debug, Clone, Copy)]
pub struct InTransaction;

impl Dedupe for InTransaction {
    async fn seen(&self, _scope: &str, _event: &Event) -> Result<bool, Error> {
        Ok(false)
    }

    async fn mark(&self, _scope: &str, _event: &Event) -> Result<(), Error> {
        Ok(())
    }
}
