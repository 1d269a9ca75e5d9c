//! PostgreSQL: pooled connections and versioned migrations.
//!
//! Each service owns one schema (`crm`, `recording`, …) in the database it is pointed at;
//! its pool sets `search_path` to that schema, so services can share a database in a small
//! installation without seeing each other's tables. Migrations are SQL files compiled into
//! the binary, applied in order at start-up under an advisory lock (so replicas starting
//! together apply them once), each in its own transaction, and recorded with a checksum: a
//! migration edited after it was applied stops the service with a clear message.
//!
//! Tenancy: [`set_tenant`] sets `centralita.tenant` for the current transaction; row-level
//! security policies compare it with each row's `tenant_id` (see [`TENANCY_SQL`]); [`begin`]
//! opens a transaction with it set. [`outbox`]: events queued with the change that caused
//! them, and the relay that publishes them.

pub mod outbox;

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Transaction};
use tokio_postgres::NoTls;

use crate::error::Error;
use crate::tenant::TenantId;

/// One migration: a version (strictly increasing), a name and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The migrations of one service's schema.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub schema: &'static str,
    pub steps: &'static [Migration],
}

/// SQL every service schema starts from: the function row-level security policies use to
/// read the tenant of the current transaction. It returns NULL when none is set, and a
/// policy `tenant_id = centralita_current_tenant()` then matches no row.
pub const TENANCY_SQL: &str = r#"
CREATE OR REPLACE FUNCTION centralita_current_tenant() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT NULLIF(current_setting('centralita.tenant', true), '') $$;
"#;

/// Builds a pool whose connections use `schema` as their search path. Connects lazily.
pub fn pool(url: &str, schema: &str, max_size: usize) -> Result<Pool, Error> {
    let mut cfg =
        tokio_postgres::Config::from_str(url).map_err(|_| Error::Unavailable("postgresql (bad url)".into()))?;
    cfg.options(format!("-c search_path={schema},public"));
    cfg.connect_timeout(std::time::Duration::from_secs(3));
    let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(mgr)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(Error::internal)
}

/// FNV-1a, 64 bit: a stable checksum of a migration's text (not a security measure).
fn checksum(s: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() < 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Applies the pending migrations; returns how many were applied now.
pub async fn migrate(pool: &Pool, migrations: &Migrations) -> Result<usize, Error> {
    let schema = migrations.schema;
    if !is_identifier(schema) {
        return Err(Error::Internal(format!("bad schema name {schema}")));
    }
    for pair in migrations.steps.windows(2) {
        if pair[1].version <= pair[0].version {
            return Err(Error::Internal(format!("migrations of {schema} are not in increasing version order")));
        }
    }
    let mut client = pool.get().await?;
    let lock_key = checksum(&format!("centralita-migrate-{schema}"));
    client.execute("SELECT pg_advisory_lock($1)", &[&lock_key]).await?;
    let result = async {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                     version bigint PRIMARY KEY,
                     name text NOT NULL,
                     checksum bigint NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now());"
            ))
            .await?;
        let rows = client
            .query(&format!("SELECT version, name, checksum FROM {schema}.schema_migrations ORDER BY version"), &[])
            .await?;
        let applied: std::collections::BTreeMap<i64, (String, i64)> =
            rows.iter().map(|r| (r.get::<_, i64>(0), (r.get::<_, String>(1), r.get::<_, i64>(2)))).collect();
        let mut count = 0;
        for m in migrations.steps {
            let sum = checksum(m.sql);
            match applied.get(&m.version) {
                Some((_, s)) if *s == sum => continue,
                Some((name, _)) => {
                    return Err(Error::Internal(format!(
                        "migration {schema}/{:04}_{name} was changed after it was applied; add a new migration instead",
                        m.version
                    )))
                }
                None => {}
            }
            let tx = client.transaction().await?;
            tx.batch_execute(&format!("SET LOCAL search_path = {schema}, public;")).await?;
            tx.batch_execute(m.sql).await?;
            tx.execute(
                &format!("INSERT INTO {schema}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"),
                &[&m.version, &m.name, &sum],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(schema, version = m.version, name = m.name, "applied migration");
            count += 1;
        }
        // During a rolling update the old replicas run against the new schema: migrations
        // are written expand-then-contract, so this is expected and only worth a note.
        if let Some(latest) = applied.keys().next_back() {
            if migrations.steps.iter().all(|m| m.version < *latest) {
                tracing::warn!(schema, latest, "database schema is newer than this binary; continuing");
            }
        }
        Ok(count)
    }
    .await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&lock_key]).await?;
    result
}

/// A transaction with the tenant set for row-level security.
pub async fn begin<'a>(client: &'a mut Object, tenant: &TenantId) -> Result<Transaction<'a>, Error> {
    let tx = client.transaction().await?;
    set_tenant(&tx, tenant).await?;
    Ok(tx)
}

/// Sets the tenant of the current transaction for row-level security.
pub async fn set_tenant(tx: &deadpool_postgres::Transaction<'_>, tenant: &TenantId) -> Result<(), Error> {
    tx.execute("SELECT set_config('centralita.tenant', $1, true)", &[&tenant.as_str()]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_stable() {
        assert_eq!(checksum(""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_ne!(checksum("CREATE TABLE a()"), checksum("CREATE TABLE b()"));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(is_identifier("crm"));
        assert!(!is_identifier("crm; DROP TABLE x"));
        assert!(!is_identifier(""));
    }
}
