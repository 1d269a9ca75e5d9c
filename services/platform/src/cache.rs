//! Redis: the hot-state store.
//!
//! One multiplexed, auto-reconnecting connection per replica ([`redis::aio::ConnectionManager`])
//! serves every task: Redis is single-threaded per shard, so a pool of sockets would add
//! nothing but sockets. The connection is made in the background ([`RedisHandle`]), so a
//! replica starts (not ready) while Redis is down and becomes ready once it answers.
//!
//! Keys are prefixed per tenant and hash-tagged (`{t:acme}:…`) so one tenant's keys land in
//! one Redis Cluster slot and can be used together in transactions and scripts.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::bus::{Dedupe, Event};
use crate::error::Error;
use crate::tenant::TenantId;

/// `{t:<tenant>}:<part>:<part>…`
pub fn tenant_key(tenant: &TenantId, parts: &[&str]) -> String {
    let mut key = format!("{{t:{tenant}}}");
    for p in parts {
        key.push(':');
        key.push_str(p);
    }
    key
}

pub async fn connect(url: &str) -> Result<ConnectionManager, Error> {
    let client = redis::Client::open(url).map_err(|_| Error::Unavailable("redis (bad url)".into()))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

/// A Redis connection that may not exist yet.
#[derive(Clone, Default)]
pub struct RedisHandle {
    cell: Arc<OnceLock<ConnectionManager>>,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle").field("connected", &self.cell.get().is_some()).finish()
    }
}

impl RedisHandle {
    pub fn connected(conn: ConnectionManager) -> Self {
        let h = Self::default();
        let _ = h.cell.set(conn);
        h
    }

    pub(crate) fn set(&self, conn: ConnectionManager) {
        let _ = self.cell.set(conn);
    }

    /// The connection, or UNAVAILABLE while Redis has not answered yet.
    pub fn conn(&self) -> Result<ConnectionManager, Error> {
        self.cell.get().cloned().ok_or_else(|| Error::Unavailable("redis (not connected yet)".into()))
    }
}

/// Remembers handled event ids in Redis for `ttl` (longer than any redelivery window).
#[derive(Debug, Clone)]
pub struct RedisDedupe {
    redis: RedisHandle,
    ttl: Duration,
}

impl RedisDedupe {
    pub fn new(redis: RedisHandle, ttl: Duration) -> Self {
        Self { redis, ttl }
    }

    fn key(scope: &str, event: &Event) -> String {
        tenant_key(&event.tenant, &["dedupe", scope, &event.id.to_string()])
    }
}

impl Dedupe for RedisDedupe {
    async fn seen(&self, scope: &str, event: &Event) -> Result<bool, Error> {
        let mut c = self.redis.conn()?;
        let n: i64 = redis::cmd("EXISTS").arg(Self::key(scope, event)).query_async(&mut c).await?;
        Ok(n > 0)
    }

    async fn mark(&self, scope: &str, event: &Event) -> Result<(), Error> {
        let mut c = self.redis.conn()?;
        let _: Option<String> = redis::cmd("SET")
            .arg(Self::key(scope, event))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(self.ttl.as_secs().max(1))
            .query_async(&mut c)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hash_tagged_per_tenant() {
        let t = TenantId::parse("acme").expect("id");
        assert_eq!(tenant_key(&t, &["agent", "42"]), "{t:acme}:agent:42");
    }
}
