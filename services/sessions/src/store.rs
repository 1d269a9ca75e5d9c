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

/// KEYS: record, outbox list, pending set (the last two in the record's slot).
/// ARGV: expected version, record bytes, ttl ms (0 = none), outbox entry (empty = none),
/// now ms, pending member.
const CAS: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'v', v + 1, 'd', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[4])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ARGV[6])
end
return v + 1
";

/// Drops the outbox head if it is the entry just carried out (KEYS: outbox, pending;
/// ARGV: entry, pending member); once the outbox is empty the record leaves the pending set.
const POP: &str = r"
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) end
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[2]) end
return redis.call('LLEN', KEYS[1])
";

/// Claims a due timer: KEYS deadlines; ARGV member, now, lease end.
const CLAIM: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
";

/// Removes a handled timer unless it was rescheduled meanwhile: KEYS deadlines; ARGV member,
/// lease end.
const DONE: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
";

/// Releases a lock only if it is still ours.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
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

/// The agent pool a tenant was first routed in (pinned: see `Engine::tenant_pool`).
pub fn tenant_pool_key(tenant: &TenantId) -> String {
    tenant_key(tenant, &["agent-pool"])
}

pub fn agent_key(agent: &str) -> String {
    format!("{{a:{agent}}}:agent")
}

/// Where a record's pending side effects wait: its outbox list, and the set that lists the
/// records of one slot with a non-empty outbox (scored by when they first had one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbox {
    pub list: String,
    pub pending: String,
    pub member: String,
}

impl Outbox {
    pub fn contact(tenant: &TenantId, id: &str) -> Self {
        Self {
            list: tenant_key(tenant, &["outbox", id]),
            pending: tenant_key(tenant, &["outbox"]),
            member: id.to_owned(),
        }
    }

    /// Agents are BPO-wide: their pending set is per agent and the sweeper walks the agent
    /// index.
    pub fn agent(agent: &str) -> Self {
        Self {
            list: format!("{{a:{agent}}}:outbox"),
            pending: format!("{{a:{agent}}}:outbox-pending"),
            member: agent.to_owned(),
        }
    }

    fn lock(&self) -> String {
        format!("{}:lock", self.list)
    }
}

/// How long a drainer may hold a record's outbox before another may take over.
const DRAIN_LEASE_MS: u64 = 15_000;

#[derive(Clone)]
pub struct Store {
    redis: RedisHandle,
    cas: redis::Script,
    pop: redis::Script,
    unlock: redis::Script,
    claim: redis::Script,
    done: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    pub fn new(redis: RedisHandle) -> Self {
        Self {
            redis,
            cas: redis::Script::new(CAS),
            pop: redis::Script::new(POP),
            unlock: redis::Script::new(UNLOCK),
            claim: redis::Script::new(CLAIM),
            done: redis::Script::new(DONE),
        }
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

    /// Reads many records in one round trip (missing ones are `None`).
    pub async fn load_many<M: prost::Message + Default>(&self, keys: &[String]) -> Result<Vec<Option<M>>, Error> {
        let mut out = Vec::with_capacity(keys.len());
        let mut conn = self.conn()?;
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.hget(k, "d");
            }
            let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
            for v in values {
                out.push(match v {
                    Some(d) => Some(M::decode(d.as_slice()).map_err(Error::internal)?),
                    None => None,
                });
            }
        }
        Ok(out)
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
        self.write(key, None, |m| f(m).map(|(m, r)| (m, r, Vec::new())), ttl_ms).await
    }

    /// Like [`Store::update`], and `f` also gives the side effects of the write: an encoded
    /// outbox entry appended to `outbox` atomically with the record (empty for none).
    pub async fn update_with<M, R>(
        &self,
        key: &str,
        outbox: &Outbox,
        f: impl FnMut(Option<M>) -> Result<(M, R, Vec<u8>), Error>,
        ttl_ms: impl Fn(&M) -> i64,
    ) -> Result<(M, R), Error>
    where
        M: prost::Message + Default + Clone,
    {
        self.write(key, Some(outbox), f, ttl_ms).await
    }

    async fn write<M, R>(
        &self,
        key: &str,
        outbox: Option<&Outbox>,
        mut f: impl FnMut(Option<M>) -> Result<(M, R, Vec<u8>), Error>,
        ttl_ms: impl Fn(&M) -> i64,
    ) -> Result<(M, R), Error>
    where
        M: prost::Message + Default + Clone,
    {
        let mut conn = self.conn()?;
        for _ in 0..ATTEMPTS {
            let current = self.load::<M>(key).await?;
            let version = current.as_ref().map(|(v, _)| *v).unwrap_or(0);
            let (new, result, entry) = f(current.map(|(_, m)| m))?;
            // Without an outbox the script leaves its outbox keys alone; the record's key
            // stands in for them (same slot).
            let (list, pending, member) = match outbox {
                Some(o) => (o.list.as_str(), o.pending.as_str(), o.member.as_str()),
                None if entry.is_empty() => (key, key, ""),
                None => return Err(Error::internal("side effects without an outbox")),
            };
            let written: i64 = self
                .cas
                .key(key)
                .key(list)
                .key(pending)
                .arg(version)
                .arg(new.encode_to_vec())
                .arg(ttl_ms(&new))
                .arg(entry)
                .arg(chrono::Utc::now().timestamp_millis())
                .arg(member)
                .invoke_async(&mut conn)
                .await?;
            if written >= 0 {
                return Ok((new, result));
            }
        }
        Err(Error::Unavailable(format!("record {key} (too much contention)")))
    }

    /// Takes the outbox's drain lock; `None` when another drainer holds it.
    pub async fn lock_outbox(&self, outbox: &Outbox) -> Result<Option<String>, Error> {
        let mut conn = self.conn()?;
        let token = uuid::Uuid::now_v7().simple().to_string();
        let ok: Option<String> = redis::cmd("SET")
            .arg(outbox.lock())
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(DRAIN_LEASE_MS)
            .query_async(&mut conn)
            .await?;
        Ok(ok.map(|_| token))
    }

    pub async fn unlock_outbox(&self, outbox: &Outbox, token: &str) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let _: i64 = self.unlock.key(outbox.lock()).arg(token).invoke_async(&mut conn).await?;
        Ok(())
    }

    /// The first `n` entries of the outbox, oldest first.
    pub async fn peek_outbox(&self, outbox: &Outbox, n: isize) -> Result<Vec<Vec<u8>>, Error> {
        let mut conn = self.conn()?;
        Ok(conn.lrange(&outbox.list, 0, n - 1).await?)
    }

    /// Drops `entry` from the head of the outbox once carried out; returns what is left.
    pub async fn pop_outbox(&self, outbox: &Outbox, entry: &[u8]) -> Result<i64, Error> {
        let mut conn = self.conn()?;
        Ok(self
            .pop
            .key(&outbox.list)
            .key(&outbox.pending)
            .arg(entry)
            .arg(&outbox.member)
            .invoke_async(&mut conn)
            .await?)
    }

    /// Drops the record from its pending set if its outbox is empty.
    pub async fn forget_if_drained(&self, outbox: &Outbox) -> Result<(), Error> {
        self.pop_outbox(outbox, b"").await.map(|_| ())
    }

    /// Claims a due timer of `deadlines` until `lease_until`; false if it is not due or
    /// another replica claimed it first.
    pub async fn claim_timer(&self, deadlines: &str, member: &str, now: i64, lease_until: i64) -> Result<bool, Error> {
        let mut conn = self.conn()?;
        let claimed: i64 =
            self.claim.key(deadlines).arg(member).arg(now).arg(lease_until).invoke_async(&mut conn).await?;
        Ok(claimed == 1)
    }

    /// Removes a handled timer unless it was rescheduled since the claim.
    pub async fn finish_timer(&self, deadlines: &str, member: &str, lease_until: i64) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let _: i64 = self.done.key(deadlines).arg(member).arg(lease_until).invoke_async(&mut conn).await?;
        Ok(())
    }

    pub async fn outbox_len(&self, outbox: &Outbox) -> Result<i64, Error> {
        let mut conn = self.conn()?;
        Ok(conn.llen(&outbox.list).await?)
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
