//! Hot state in Redis, and the only module that talks to Redis. Contacts and agents are
//! stored as their wire records (`crate::wire`) with a version, updated by optimistic
//! compare-and-set (one Lua script) together with their outbox entry, so concurrent RPCs,
//! routing decisions and timers on any replica serialise per record without locks.
//!
//! Keys: contacts under their tenant's hash tag (`{t:<tenant>}:contact:<id>`), agents under
//! their own (`{a:<agent>}:agent`, agents are BPO-wide), so every script touches one slot.
//! Besides the records: each tenant's index of open contacts and request ids, the agent
//! index, the timers (one sorted set scored by due time), and the pub/sub channel of agent
//! notices.

use centralita_platform::cache::{tenant_key, RedisHandle};
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use centralita_proto::sessions::v1 as pb;
use futures::stream::BoxStream;
use futures::StreamExt;
use redis::AsyncCommands;

use crate::core::position::HANDLE_SAMPLES;
use crate::core::{Agent, AgentId, Contact, ContactRef};

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

/// How long a request id keeps naming the contact it created.
const REQUEST_TTL_S: u64 = 24 * 3600;

/// How long a drainer may hold a record's outbox before another may take over.
const DRAIN_LEASE_MS: u64 = 15_000;

pub fn contact_key(c: &ContactRef) -> String {
    tenant_key(&c.tenant, &["contact", &c.id.0])
}

fn open_index(tenant: &TenantId) -> String {
    tenant_key(tenant, &["contacts", "open"])
}

/// Sorted set of a queue's last handled contacts: `{contact id}:{handled ms}` scored by
/// when each closed (no personal data: ids and durations).
fn handled_key(tenant: &TenantId, queue: &str) -> String {
    tenant_key(tenant, &["queue", queue, "handled"])
}

fn request_key(tenant: &TenantId, request_id: &str) -> String {
    tenant_key(tenant, &["request", request_id])
}

/// The agent pool a tenant was first routed in (pinned: see `crate::pools`).
fn tenant_pool_key(tenant: &TenantId) -> String {
    tenant_key(tenant, &["agent-pool"])
}

pub fn agent_key(agent: &AgentId) -> String {
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
    pub fn contact(c: &ContactRef) -> Self {
        Self {
            list: tenant_key(&c.tenant, &["outbox", &c.id.0]),
            pending: tenant_key(&c.tenant, &["outbox"]),
            member: c.id.0.clone(),
        }
    }

    /// Agents are BPO-wide: their pending set is per agent and the sweeper walks the agent
    /// index.
    pub fn agent(agent: &AgentId) -> Self {
        Self {
            list: format!("{{a:{agent}}}:outbox"),
            pending: format!("{{a:{agent}}}:outbox-pending"),
            member: agent.0.clone(),
        }
    }

    fn lock(&self) -> String {
        format!("{}:lock", self.list)
    }
}

/// What a compare-and-set write does with the record it read.
#[derive(Debug)]
pub enum Write<M, R> {
    /// Write `record` (with the outbox entry, empty for none) and return `R`.
    Put { record: M, entry: Vec<u8>, result: R },
    /// Write nothing and return `R`.
    Keep(R),
}

/// The store's own keys besides the per-record ones (under the deployment's prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    /// Pub/sub channel of agent notices.
    pub notices: String,
    /// Sorted set of timers (offer expiry, end of after-contact work, presence).
    pub deadlines: String,
    /// Set of every agent id.
    pub agents: String,
    /// Hash of timer member to the W3C `traceparent` current when it was scheduled, which
    /// the timer's span continues when it fires.
    pub deadline_traces: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            notices: format!("{prefix}sessions:agent-events"),
            deadlines: format!("{prefix}sessions:deadlines"),
            agents: format!("{prefix}sessions:agents"),
            deadline_traces: format!("{prefix}sessions:deadline-traces"),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    redis: RedisHandle,
    url: String,
    keys: Keys,
    cas: redis::Script,
    pop: redis::Script,
    unlock: redis::Script,
    claim: redis::Script,
    done: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("keys", &self.keys).finish_non_exhaustive()
    }
}

fn decode<M: prost::Message + Default>(d: &[u8]) -> Result<M, Error> {
    M::decode(d).map_err(Error::internal)
}

fn contact_from(m: &pb::Contact) -> Result<Contact, Error> {
    Contact::try_from(m).map_err(|e| Error::internal(format!("stored contact {}: {e}", m.name)))
}

fn agent_from(m: &pb::Agent) -> Result<Agent, Error> {
    Agent::try_from(m).map_err(|e| Error::internal(format!("stored agent {}: {e}", m.name)))
}

fn ttl(c: &Contact) -> i64 {
    if c.state.is_terminal() {
        CLOSED_TTL_MS
    } else {
        0
    }
}

impl Store {
    /// `url` is the Redis the handle connects to (pub/sub needs a connection of its own).
    pub fn new(redis: RedisHandle, url: String, keys: Keys) -> Self {
        Self {
            redis,
            url,
            keys,
            cas: redis::Script::new(CAS),
            pop: redis::Script::new(POP),
            unlock: redis::Script::new(UNLOCK),
            claim: redis::Script::new(CLAIM),
            done: redis::Script::new(DONE),
        }
    }

    fn conn(&self) -> Result<redis::aio::ConnectionManager, Error> {
        self.redis.conn()
    }

    async fn load<M: prost::Message + Default>(&self, key: &str) -> Result<Option<(u64, M)>, Error> {
        let mut conn = self.conn()?;
        let (v, d): (Option<u64>, Option<Vec<u8>>) =
            redis::cmd("HMGET").arg(key).arg("v").arg("d").query_async(&mut conn).await?;
        match (v, d) {
            (Some(v), Some(d)) => Ok(Some((v, decode(&d)?))),
            _ => Ok(None),
        }
    }

    /// Reads many records in one round trip per 500 (missing ones are `None`).
    async fn load_many<M: prost::Message + Default>(&self, keys: &[String]) -> Result<Vec<Option<M>>, Error> {
        let mut out = Vec::with_capacity(keys.len());
        let mut conn = self.conn()?;
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.hget(k, "d");
            }
            let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
            for v in values {
                out.push(v.as_deref().map(decode).transpose()?);
            }
        }
        Ok(out)
    }

    pub async fn contact(&self, c: &ContactRef) -> Result<Option<Contact>, Error> {
        self.load::<pb::Contact>(&contact_key(c)).await?.map(|(_, m)| contact_from(&m)).transpose()
    }

    pub async fn contacts(&self, refs: &[ContactRef]) -> Result<Vec<Option<Contact>>, Error> {
        let keys: Vec<String> = refs.iter().map(contact_key).collect();
        self.load_many::<pb::Contact>(&keys).await?.iter().map(|m| m.as_ref().map(contact_from).transpose()).collect()
    }

    pub async fn agent(&self, agent: &AgentId) -> Result<Option<Agent>, Error> {
        self.load::<pb::Agent>(&agent_key(agent)).await?.map(|(_, m)| agent_from(&m)).transpose()
    }

    pub async fn agents(&self, ids: &[AgentId]) -> Result<Vec<Option<Agent>>, Error> {
        let keys: Vec<String> = ids.iter().map(agent_key).collect();
        self.load_many::<pb::Agent>(&keys).await?.iter().map(|m| m.as_ref().map(agent_from).transpose()).collect()
    }

    /// Reads contact `c`, lets `f` decide what to write (with the outbox entry of its side
    /// effects), and writes it only if nobody wrote in between; otherwise tries again with
    /// the fresh record. A finished contact expires after [`CLOSED_TTL_MS`].
    pub async fn write_contact<R, E: From<Error>>(
        &self,
        c: &ContactRef,
        outbox: &Outbox,
        mut f: impl FnMut(Option<Contact>) -> Result<Write<Contact, R>, E>,
    ) -> Result<R, E> {
        let key = contact_key(c);
        self.write(&key, outbox, |m: Option<pb::Contact>| {
            let current = m.as_ref().map(contact_from).transpose()?;
            Ok(match f(current)? {
                Write::Put { record, entry, result } => {
                    let ttl = ttl(&record);
                    (Write::Put { record: pb::Contact::from(&record), entry, result }, ttl)
                }
                Write::Keep(r) => (Write::Keep(r), 0),
            })
        })
        .await
    }

    /// Like [`Store::write_contact`], for an agent (agents never expire).
    pub async fn write_agent<R, E: From<Error>>(
        &self,
        agent: &AgentId,
        outbox: &Outbox,
        mut f: impl FnMut(Option<Agent>) -> Result<Write<Agent, R>, E>,
    ) -> Result<R, E> {
        let key = agent_key(agent);
        self.write(&key, outbox, |m: Option<pb::Agent>| {
            let current = m.as_ref().map(agent_from).transpose()?;
            Ok(match f(current)? {
                Write::Put { record, entry, result } => {
                    (Write::Put { record: pb::Agent::from(&record), entry, result }, 0)
                }
                Write::Keep(r) => (Write::Keep(r), 0),
            })
        })
        .await
    }

    async fn write<M, R, E: From<Error>>(
        &self,
        key: &str,
        outbox: &Outbox,
        mut f: impl FnMut(Option<M>) -> Result<(Write<M, R>, i64), E>,
    ) -> Result<R, E>
    where
        M: prost::Message + Default,
    {
        let mut conn = self.conn()?;
        for _ in 0..ATTEMPTS {
            let current = self.load::<M>(key).await?;
            let version = current.as_ref().map(|(v, _)| *v).unwrap_or(0);
            let (record, entry, result, ttl_ms) = match f(current.map(|(_, m)| m))? {
                (Write::Keep(r), _) => return Ok(r),
                (Write::Put { record, entry, result }, ttl) => (record, entry, result, ttl),
            };
            let written: i64 = self
                .cas
                .key(key)
                .key(&outbox.list)
                .key(&outbox.pending)
                .arg(version)
                .arg(record.encode_to_vec())
                .arg(ttl_ms)
                .arg(entry)
                .arg(chrono::Utc::now().timestamp_millis())
                .arg(&outbox.member)
                .invoke_async(&mut conn)
                .await
                .map_err(Error::from)?;
            if written >= 0 {
                return Ok(result);
            }
        }
        Err(Error::Unavailable(format!("record {key} (too much contention)")).into())
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

    pub async fn outbox_len(&self, outbox: &Outbox) -> Result<i64, Error> {
        let mut conn = self.conn()?;
        Ok(conn.llen(&outbox.list).await?)
    }

    /// Contacts of `tenant` whose outbox has been pending since before `before` (ms).
    pub async fn pending_contacts(&self, tenant: &TenantId, before: i64, limit: isize) -> Result<Vec<String>, Error> {
        let mut conn = self.conn()?;
        let pending = tenant_key(tenant, &["outbox"]);
        Ok(conn.zrangebyscore_limit(pending, "-inf", before, 0, limit).await?)
    }

    /// How many contacts of `tenant` have effects pending, and since when the oldest has
    /// (ms), for the backlog metrics.
    pub async fn outbox_backlog(&self, tenant: &TenantId) -> Result<(usize, Option<i64>), Error> {
        let mut conn = self.conn()?;
        let pending = tenant_key(tenant, &["outbox"]);
        let (count, oldest): (usize, Vec<(String, i64)>) =
            redis::pipe().zcard(&pending).zrange_withscores(&pending, 0, 0).query_async(&mut conn).await?;
        Ok((count, oldest.first().map(|(_, since)| *since)))
    }

    /// Agents (of `agents`) whose outbox is not empty.
    pub async fn agents_with_pending(&self, agents: &[AgentId]) -> Result<Vec<AgentId>, Error> {
        let mut conn = self.conn()?;
        let mut out = Vec::new();
        for chunk in agents.chunks(500) {
            let mut pipe = redis::pipe();
            for a in chunk {
                pipe.llen(Outbox::agent(a).list);
            }
            let lens: Vec<i64> = pipe.query_async(&mut conn).await?;
            out.extend(chunk.iter().zip(lens).filter(|(_, n)| *n > 0).map(|(a, _)| a.clone()));
        }
        Ok(out)
    }

    // --- Timers -------------------------------------------------------------------------

    /// Sets (or moves) timer `member` to fire at `due` (ms), keeping the trace context of the
    /// current span (the command that scheduled it) for the timer's span to continue.
    pub async fn schedule(&self, member: &str, due: i64) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let trace = centralita_platform::telemetry::current_trace_headers().remove("traceparent");
        let mut pipe = redis::pipe();
        pipe.zadd(&self.keys.deadlines, member, due).ignore();
        match trace {
            Some(t) => pipe.hset(&self.keys.deadline_traces, member, t).ignore(),
            None => pipe.hdel(&self.keys.deadline_traces, member).ignore(),
        };
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    pub async fn cancel(&self, member: &str) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let () = redis::pipe()
            .zrem(&self.keys.deadlines, member)
            .ignore()
            .hdel(&self.keys.deadline_traces, member)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The `traceparent` timer `member` was scheduled under, if any.
    pub async fn timer_trace(&self, member: &str) -> Result<Option<String>, Error> {
        let mut conn = self.conn()?;
        Ok(conn.hget(&self.keys.deadline_traces, member).await?)
    }

    /// Up to `limit` timers due at `now`.
    pub async fn due_timers(&self, now: i64, limit: isize) -> Result<Vec<String>, Error> {
        let mut conn = self.conn()?;
        Ok(conn.zrangebyscore_limit(&self.keys.deadlines, "-inf", now, 0, limit).await?)
    }

    /// When timer `member` fires, if it is set.
    pub async fn timer_due(&self, member: &str) -> Result<Option<i64>, Error> {
        let mut conn = self.conn()?;
        Ok(conn.zscore(&self.keys.deadlines, member).await?)
    }

    /// Claims a due timer until `lease_until`; false if it is not due or another replica
    /// claimed it first.
    pub async fn claim_timer(&self, member: &str, now: i64, lease_until: i64) -> Result<bool, Error> {
        let mut conn = self.conn()?;
        let claimed: i64 =
            self.claim.key(&self.keys.deadlines).arg(member).arg(now).arg(lease_until).invoke_async(&mut conn).await?;
        Ok(claimed == 1)
    }

    /// Removes a handled timer unless it was rescheduled since the claim.
    pub async fn finish_timer(&self, member: &str, lease_until: i64) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let removed: i64 =
            self.done.key(&self.keys.deadlines).arg(member).arg(lease_until).invoke_async(&mut conn).await?;
        if removed == 1 {
            let _: i64 = conn.hdel(&self.keys.deadline_traces, member).await?;
        }
        Ok(())
    }

    // --- Indexes --------------------------------------------------------------------------

    /// Lists contact `c` among its tenant's open contacts (before it is written: a listing
    /// skips ids without a record).
    pub async fn index_open(&self, c: &ContactRef, since: i64) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let _: i64 = conn.zadd(open_index(&c.tenant), &c.id.0, since).await?;
        Ok(())
    }

    pub async fn unindex_open(&self, c: &ContactRef) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let _: i64 = conn.zrem(open_index(&c.tenant), &c.id.0).await?;
        Ok(())
    }

    /// Ids of the tenant's open contacts from position `from` on, oldest first, and how
    /// many there are in all.
    pub async fn open_contacts(&self, tenant: &TenantId, from: usize) -> Result<(Vec<String>, usize), Error> {
        let mut conn = self.conn()?;
        let key = open_index(tenant);
        let (ids, total): (Vec<String>, usize) =
            redis::pipe().zrange(&key, from as isize, -1).zcard(&key).query_async(&mut conn).await?;
        Ok((ids, total))
    }

    /// Adds contact `id` of `queue`, handled for `handled_ms` and closed at `closed_at`, to
    /// the queue's last [`HANDLE_SAMPLES`] handle times. Idempotent: a redelivered close
    /// names the same member.
    pub async fn record_handled(
        &self,
        tenant: &TenantId,
        queue: &str,
        id: &str,
        handled_ms: i64,
        closed_at: i64,
    ) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let key = handled_key(tenant, queue);
        let () = redis::pipe()
            .zadd(&key, format!("{id}:{handled_ms}"), closed_at)
            .ignore()
            .zremrangebyrank(&key, 0, -(HANDLE_SAMPLES as isize) - 1)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The handle times of `queue`'s last [`HANDLE_SAMPLES`] handled contacts, in ms.
    pub async fn handle_times(&self, tenant: &TenantId, queue: &str) -> Result<Vec<i64>, Error> {
        let mut conn = self.conn()?;
        let members: Vec<String> = conn.zrange(handled_key(tenant, queue), 0, -1).await?;
        Ok(members.iter().filter_map(|m| m.rsplit_once(':')?.1.parse().ok()).collect())
    }

    /// Reserves `request_id` of `tenant` for contact `id`; the id it already named, if any.
    pub async fn reserve_request(
        &self,
        tenant: &TenantId,
        request_id: &str,
        id: &str,
    ) -> Result<Option<String>, Error> {
        let mut conn = self.conn()?;
        Ok(redis::cmd("SET")
            .arg(request_key(tenant, request_id))
            .arg(id)
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(REQUEST_TTL_S)
            .query_async(&mut conn)
            .await?)
    }

    /// Lists the agent (before its record is written: the index may name an agent without
    /// a record).
    pub async fn index_agent(&self, agent: &AgentId) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let _: i64 = conn.sadd(&self.keys.agents, &agent.0).await?;
        Ok(())
    }

    /// Every agent id, sorted.
    pub async fn agent_ids(&self) -> Result<Vec<AgentId>, Error> {
        let mut conn = self.conn()?;
        let mut ids: Vec<String> = conn.smembers(&self.keys.agents).await?;
        ids.sort();
        Ok(ids.into_iter().map(AgentId).collect())
    }

    /// Pins `tenant` to agent pool `wanted` unless it is pinned already; the pinned pool
    /// (`None` if the pin vanished between the two calls).
    pub async fn pin_pool(&self, tenant: &TenantId, wanted: &str) -> Result<Option<String>, Error> {
        let mut conn = self.conn()?;
        let key = tenant_pool_key(tenant);
        let set: Option<String> = redis::cmd("SET").arg(&key).arg(wanted).arg("NX").query_async(&mut conn).await?;
        if set.is_some() {
            return Ok(Some(wanted.to_owned()));
        }
        Ok(conn.get(&key).await?)
    }

    // --- Agent notices ----------------------------------------------------------------------

    /// Publishes `payload` on the agent-notice channel, for every replica's streams.
    pub async fn publish_notice(&self, payload: Vec<u8>) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let _: i64 = conn.publish(&self.keys.notices, payload).await?;
        Ok(())
    }

    /// Every later payload on the agent-notice channel (a connection of its own); ends when
    /// the subscription does.
    pub async fn notices(&self) -> Result<BoxStream<'static, Vec<u8>>, Error> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&self.keys.notices).await?;
        Ok(pubsub.into_on_message().filter_map(|m| async move { m.get_payload::<Vec<u8>>().ok() }).boxed())
    }
}
