//! Hot state in Redis: contacts and agents as protobuf records with a version, updated by
//! optimistic compare-and-set (one Lua script), so concurrent RPCs, routing decisions and
//! timers on any replica serialise per record without locks.
//!
//! Keys: contacts under their tenant's hash tag (`{t:<tenant>}:contact:<id>`), agents under
//! their own (`{a:<agent>}:agent`, agents are BPO-wide), so every script touches one slot.

use centralita_platform::cache::{tenant_key, RedisHandle};
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use redis::AsyncCommands;

const CAS: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'v', v + 1, 'd', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return v + 1
";

/// Attempts before a compare-and-set under contention gives up with UNAVAILABLE.
const ATTEMPTS: usize = 50;

/// How long a finished contact stays readable.
pub const CLOSED_TTL_MS: i64 = 24 * 3600 * 1000;

pub fn contact_key(tenant: &TenantId, id: &str) -> String {
    tenant_key(tenant, &["contact", id])
}

pub fn open_index(tenant: &TenantId) -> String {
    tenant_key(tenant, &["contacts", "open"])
}

pub fn request_key(tenant: &TenantId, request_id: &str) -> String {
    tenant_key(tenant, &["request", request_id])
}

pub fn agent_key(agent: &str) -> String {
    format!("{{a:{agent}}}:agent")
}

#[derive(Clone)]
pub struct Store {
    redis: RedisHandle,
    cas: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    pub fn new(redis: RedisHandle) -> Self {
        Self { redis, cas: redis::Script::new(CAS) }
    }

    pub fn conn(&self) -> Result<redis::aio::ConnectionManager, Error> {
        self.redis.conn()
    }

    pub async fn load<M: prost::Message + Default>(&self, key: &str) -> Result<Option<(u64, M)>, Error> {
        let mut conn = self.conn()?;
        let (v, d): (Option<u64>, Option<Vec<u8>>) =
            redis::cmd("HMGET").arg(key).arg("v").arg("d").query_async(&mut conn).await?;
        match (v, d) {
            (Some(v), Some(d)) => Ok(Some((v, M::decode(d.as_slice()).map_err(Error::internal)?))),
            _ => Ok(None),
        }
    }

    /// Reads the record at `key`, lets `f` compute the new one (or refuse), and writes it
    /// only if nobody wrote in between; otherwise tries again with the fresh record.
    /// `ttl_ms(&new)` > 0 makes the record expire.
    pub async fn update<M, R>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<M>) -> Result<(M, R), Error>,
        ttl_ms: impl Fn(&M) -> i64,
    ) -> Result<(M, R), Error>
    where
        M: prost::Message + Default + Clone,
    {
        let mut conn = self.conn()?;
        for _ in 0..ATTEMPTS {
            let current = self.load::<M>(key).await?;
            let version = current.as_ref().map(|(v, _)| *v).unwrap_or(0);
            let (new, result) = f(current.map(|(_, m)| m))?;
            let written: i64 = self
                .cas
                .key(key)
                .arg(version)
                .arg(new.encode_to_vec())
                .arg(ttl_ms(&new))
                .invoke_async(&mut conn)
                .await?;
            if written >= 0 {
                return Ok((new, result));
            }
        }
        Err(Error::Unavailable(format!("record {key} (too much contention)")))
    }

    pub async fn zadd(&self, key: &str, member: &str, score: i64) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let _: i64 = conn.zadd(key, member, score).await?;
        Ok(())
    }

    pub async fn zrem(&self, key: &str, member: &str) -> Result<bool, Error> {
        let mut conn = self.conn()?;
        let n: i64 = conn.zrem(key, member).await?;
        Ok(n > 0)
    }
}
