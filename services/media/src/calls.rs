//! The calls each voice replica carries, kept in Redis so that none outlives its replica.
//!
//! A call lives in one process's memory (its dialogs, its RTP relay). If that process dies
//! (`kill -9`, OOM, a node lost), nothing of it is left to end its contact, which would stay
//! queued, offered or connected in sessions for good. So each replica writes down the calls
//! it carries, under a lease it renews, and any replica ends the calls of a replica whose
//! lease has run out:
//!
//! - a process is an *incarnation* `<instance>~<uuid>` of its replica (`instance`: the pod
//!   name, `CENTRALITA_KAFKA_GROUP_INSTANCE_ID` or `HOSTNAME`): a restarted process is a new
//!   incarnation and never takes over the entries of the dead one (nothing is resurrected:
//!   its dialogs and RTP are gone with the process);
//! - its lease is its score in `{media:<ns>}:voice:leases` (a sorted set: the lease's end,
//!   Redis's own clock), renewed every third of `CENTRALITA_VOICE_LEASE`;
//! - each call is a field of `{t:<tenant>}:voice:calls:<ns>:<incarnation>` (a hash per
//!   tenant: contact name → `{call_id, started_ms}`), written once its contact is created and
//!   removed once its contact is ended; `{media:<ns>}:voice:tenants:<incarnation>` lists the
//!   tenants it wrote calls for;
//! - every `CENTRALITA_VOICE_SWEEP_INTERVAL` each replica looks for incarnations to sweep
//!   ([`to_sweep`]): those whose lease has ended, and at once those of its own instance that
//!   are not itself (the process it replaces: a pod name is one process at a time). Sweeping
//!   takes `{media:<ns>}:voice:sweep:<incarnation>` (`SET NX PX`, extended per call), so one
//!   replica sweeps an incarnation at a time; each call's contact is ended in sessions with
//!   the cause [`CAUSE_LOST`] (queued or offered: abandoned; connected: after-contact work)
//!   and its field removed; the lease, tenant list and lock go last, once no call is left.
//!   A contact already over counts as done; sessions unreachable leaves the rest for the
//!   next sweep. Sessions refuses a second end of the same contact, so even a sweep that
//!   lost its lock midway cannot end a contact twice;
//! - a replica's own entries whose call its memory no longer holds (ending the contact
//!   failed) are retried by its own sweep the same way;
//! - a clean shutdown ends its calls (the front door's drain), then removes its lease and
//!   list when no entry is left (else it lets the lease run out, and another replica, or
//!   its successor, finishes the job).
//!
//! `<ns>` is the deployment's Kafka topic prefix: deployments (or local runs) sharing one
//! Redis never sweep each other's calls.
//!
//! The gap: a process killed between sessions creating the contact and the entry being
//! written (one Redis round trip) leaves that contact to be ended by hand.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_platform::cache::{tenant_key, RedisHandle};
use centralita_platform::config::ConfigError;
use centralita_platform::tenant::TenantId;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{ContactRefused, Error};
use crate::metrics::RecoveryMetrics;
use crate::sessions::Sessions;

/// The end cause of the contacts of a replica that died, in sessions (`Contact.end_cause`).
pub const CAUSE_LOST: &str = "media lost the call";

/// Settings of the call registry (voice role, with `CENTRALITA_REDIS_URL`).
#[derive(Debug, Clone, clap::Args)]
pub struct CallsArgs {
    /// How long a voice replica's calls outlive its last heartbeat before another replica
    /// ends their contacts (renewed every third of it). Shorter: a crash's calls end sooner;
    /// too short: a replica stalled on Redis for that long has its calls ended.
    #[arg(
        id = "voice_lease",
        long = "voice-lease",
        env = "CENTRALITA_VOICE_LEASE",
        default_value = "15s",
        value_parser = centralita_platform::config::parse_duration
    )]
    pub lease: Duration,
    /// How often each voice replica looks for calls of replicas that died.
    #[arg(
        id = "voice_sweep_interval",
        long = "voice-sweep-interval",
        env = "CENTRALITA_VOICE_SWEEP_INTERVAL",
        default_value = "5s",
        value_parser = centralita_platform::config::parse_duration
    )]
    pub sweep_interval: Duration,
}

impl CallsArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(Duration::from_secs(3)..=Duration::from_secs(600)).contains(&self.lease) {
            return Err(ConfigError::new("CENTRALITA_VOICE_LEASE", "must be 3s to 10m"));
        }
        if self.sweep_interval < Duration::from_millis(100) || self.sweep_interval > self.lease {
            return Err(ConfigError::new(
                "CENTRALITA_VOICE_SWEEP_INTERVAL",
                "must be at least 100ms and at most CENTRALITA_VOICE_LEASE",
            ));
        }
        Ok(())
    }
}

/// One process of a replica: `<instance>~<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Incarnation(String);

impl Incarnation {
    /// A new incarnation of `instance` (characters outside `[A-Za-z0-9._-]` become `_`).
    pub fn new(instance: &str) -> Self {
        let instance: String = instance
            .chars()
            .take(100)
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .collect();
        Incarnation(format!("{instance}~{}", uuid::Uuid::now_v7().simple()))
    }

    /// An incarnation as Redis lists it; `None` for anything not of that form.
    pub fn parse(s: &str) -> Option<Self> {
        let (instance, id) = s.rsplit_once('~')?;
        let ok = !instance.is_empty()
            && instance.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && id.len() == 32
            && id.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| Incarnation(s.to_owned()))
    }

    pub fn instance(&self) -> &str {
        self.0.rsplit_once('~').map_or(&self.0, |(i, _)| i)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Incarnation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The incarnations `me` should sweep, given the leases (`(member, lease end ms)`) and
/// Redis's clock `now_ms`: those whose lease has ended, and those of `me`'s own instance
/// (its predecessors: that process is gone, whatever its lease says). Never `me`; members
/// that are not incarnations are left alone.
pub fn to_sweep(leases: &[(String, i64)], now_ms: i64, me: &Incarnation) -> Vec<Incarnation> {
    leases
        .iter()
        .filter_map(|(member, until)| {
            let inc = Incarnation::parse(member)?;
            (inc != *me && (*until <= now_ms || inc.instance() == me.instance())).then_some(inc)
        })
        .collect()
}

/// What to do with a call's entry after asking sessions to end its contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Ended now: the entry goes, one call recovered.
    Ended,
    /// Over already (ended, or unknown to sessions), or never endable by media (its tenant
    /// refused): the entry goes.
    Gone,
    /// Sessions did not answer: the entry stays for the next sweep.
    Retry,
}

impl Settled {
    pub fn of(result: &Result<(), Error>) -> Self {
        match result {
            Ok(()) => Settled::Ended,
            Err(Error::ContactRefused(ContactRefused::Closed | ContactRefused::TenantSuspended))
            | Err(Error::NoContact) => Settled::Gone,
            Err(_) => Settled::Retry,
        }
    }
}

/// Whether `contact` (`tenants/{t}/contacts/{id}`) is a contact name of `tenant`: an entry
/// under a tenant's key naming another tenant's contact is not acted on.
pub fn of_tenant(contact: &str, tenant: &TenantId) -> bool {
    contact
        .strip_prefix("tenants/")
        .and_then(|rest| rest.strip_prefix(tenant.as_str()))
        .and_then(|rest| rest.strip_prefix("/contacts/"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// A call's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The caller's SIP Call-ID (for the operator's eyes).
    pub call_id: String,
    /// When the call was written down (unix ms).
    pub started_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(String),
}

impl From<centralita_platform::error::Error> for StoreError {
    fn from(e: centralita_platform::error::Error) -> Self {
        StoreError::Redis(e.to_string())
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Redis(e.to_string())
    }
}

/// The registry in Redis (the adapter): every command here touches one hash slot.
#[derive(Debug, Clone)]
pub struct Store {
    redis: RedisHandle,
    ns: String,
}

impl Store {
    /// The registry of deployment `ns` (its Kafka topic prefix).
    pub fn new(redis: RedisHandle, ns: &str) -> Self {
        Self { redis, ns: ns.to_owned() }
    }

    fn leases_key(&self) -> String {
        format!("{{media:{}}}:voice:leases", self.ns)
    }

    fn tenants_key(&self, inc: &Incarnation) -> String {
        format!("{{media:{}}}:voice:tenants:{inc}", self.ns)
    }

    fn lock_key(&self, inc: &Incarnation) -> String {
        format!("{{media:{}}}:voice:sweep:{inc}", self.ns)
    }

    pub fn calls_key(&self, tenant: &TenantId, inc: &Incarnation) -> String {
        tenant_key(tenant, &["voice", "calls", &self.ns, inc.as_str()])
    }

    /// Renews `me`'s lease for `lease` from Redis's clock; `false` if it was not there (the
    /// first heartbeat, or a sweep took it: this replica was thought dead).
    pub async fn heartbeat(&self, me: &Incarnation, lease: Duration) -> Result<bool, StoreError> {
        let mut c = self.redis.conn()?;
        let script = redis::Script::new(
            r"
            local t = redis.call('TIME')
            local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
            return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) == 0 and 1 or 0
            ",
        );
        let renewed: i64 =
            script.key(self.leases_key()).arg(me.as_str()).arg(lease.as_millis() as u64).invoke_async(&mut c).await?;
        Ok(renewed == 1)
    }

    /// Redis's clock (ms) and every lease (member, end in ms).
    pub async fn leases(&self) -> Result<(i64, Vec<(String, i64)>), StoreError> {
        let mut c = self.redis.conn()?;
        let script = redis::Script::new(
            r"
            local t = redis.call('TIME')
            local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
            return {now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
            ",
        );
        let (now, flat): (i64, Vec<String>) = script.key(self.leases_key()).invoke_async(&mut c).await?;
        let leases = flat
            .chunks(2)
            .filter_map(|p| match p {
                [m, s] => s.parse::<f64>().ok().map(|s| (m.clone(), s as i64)),
                _ => None,
            })
            .collect();
        Ok((now, leases))
    }

    /// Writes down call `contact` of `tenant` carried by `me`, whose lease is `lease`.
    pub async fn add(
        &self,
        me: &Incarnation,
        tenant: &TenantId,
        contact: &str,
        e: &Entry,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.redis.conn()?;
        let value = serde_json::to_string(e).map_err(|e| StoreError::Redis(e.to_string()))?;
        // The tenant first, so a sweeper that finds the call also finds its tenant; and a
        // lease if `me` has none yet (its heartbeat has not reached Redis yet), so a call
        // written down is always under a lease that can run out.
        let script = redis::Script::new(
            r"
            redis.call('SADD', KEYS[2], ARGV[2])
            local t = redis.call('TIME')
            local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
            return redis.call('ZADD', KEYS[1], 'NX', now + tonumber(ARGV[3]), ARGV[1])
            ",
        );
        let _: i64 = script
            .key(self.leases_key())
            .key(self.tenants_key(me))
            .arg(me.as_str())
            .arg(tenant.as_str())
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        let _: i64 =
            redis::cmd("HSET").arg(self.calls_key(tenant, me)).arg(contact).arg(value).query_async(&mut c).await?;
        Ok(())
    }

    /// Removes call `contact` of `tenant` from `inc`'s; whether this removed it.
    pub async fn remove(&self, inc: &Incarnation, tenant: &TenantId, contact: &str) -> Result<bool, StoreError> {
        let mut c = self.redis.conn()?;
        let n: i64 = redis::cmd("HDEL").arg(self.calls_key(tenant, inc)).arg(contact).query_async(&mut c).await?;
        Ok(n > 0)
    }

    /// The tenants `inc` wrote calls for (ids that do not parse are skipped).
    pub async fn tenants(&self, inc: &Incarnation) -> Result<Vec<TenantId>, StoreError> {
        let mut c = self.redis.conn()?;
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.tenants_key(inc)).query_async(&mut c).await?;
        Ok(ids.iter().filter_map(|t| TenantId::parse(t).ok()).collect())
    }

    /// `inc`'s calls of `tenant`: contact name → entry (an unreadable entry is kept with an
    /// empty call id: the contact is still to be ended).
    pub async fn calls(&self, inc: &Incarnation, tenant: &TenantId) -> Result<Vec<(String, Entry)>, StoreError> {
        let mut c = self.redis.conn()?;
        let all: HashMap<String, String> =
            redis::cmd("HGETALL").arg(self.calls_key(tenant, inc)).query_async(&mut c).await?;
        let mut calls: Vec<(String, Entry)> = all
            .into_iter()
            .map(|(k, v)| {
                let e = serde_json::from_str(&v).unwrap_or(Entry { call_id: String::new(), started_ms: 0 });
                (k, e)
            })
            .collect();
        calls.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(calls)
    }

    /// Takes the sweep of `inc` for `holder` for `ttl`; `false` if another holds it.
    pub async fn lock(&self, inc: &Incarnation, holder: &Incarnation, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.redis.conn()?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.lock_key(inc))
            .arg(holder.as_str())
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        Ok(set.is_some())
    }

    /// Extends `holder`'s sweep of `inc` by `ttl`; `false` if it no longer holds it.
    pub async fn extend(&self, inc: &Incarnation, holder: &Incarnation, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.redis.conn()?;
        let script = redis::Script::new(
            r"
            if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
            return redis.call('PEXPIRE', KEYS[1], ARGV[2])
            ",
        );
        let n: i64 = script
            .key(self.lock_key(inc))
            .arg(holder.as_str())
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Lets go of `holder`'s sweep of `inc` (if it still holds it).
    pub async fn unlock(&self, inc: &Incarnation, holder: &Incarnation) -> Result<(), StoreError> {
        let mut c = self.redis.conn()?;
        let script = redis::Script::new(
            r"
            if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
            return 0
            ",
        );
        let _: i64 = script.key(self.lock_key(inc)).arg(holder.as_str()).invoke_async(&mut c).await?;
        Ok(())
    }

    /// `inc` has no call left: its lease, tenant list and (held by `holder`, or none) sweep
    /// lock go, in one step. `false` if `holder` lost the lock meanwhile (nothing removed).
    pub async fn retire(&self, inc: &Incarnation, holder: Option<&Incarnation>) -> Result<bool, StoreError> {
        let mut c = self.redis.conn()?;
        let script = redis::Script::new(
            r"
            if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end
            redis.call('ZREM', KEYS[1], ARGV[1])
            redis.call('DEL', KEYS[2], KEYS[3])
            return 1
            ",
        );
        let done: i64 = script
            .key(self.leases_key())
            .key(self.tenants_key(inc))
            .key(self.lock_key(inc))
            .arg(inc.as_str())
            .arg(holder.map_or("", Incarnation::as_str))
            .invoke_async(&mut c)
            .await?;
        Ok(done == 1)
    }
}

/// How ending the contacts behind an incarnation's entries went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Contacts ended by this sweep.
    pub recovered: u32,
    /// Entries removed whose contact was over already.
    pub gone: u32,
    /// Entries left for the next sweep (sessions unreachable, the lock lost).
    pub left: u32,
}

/// Ends contacts in sessions: the port the sweep needs (the real one is [`Sessions`]).
pub trait Ender: Send + Sync {
    fn end(
        &self,
        tenant: &TenantId,
        contact: &str,
        cause: &str,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send;
}

impl Ender for Sessions {
    async fn end(&self, tenant: &TenantId, contact: &str, cause: &str) -> Result<(), Error> {
        self.end_contact(tenant, contact, cause).await
    }
}

/// The calls this process carries: its incarnation, the calls alive in its memory, and
/// the registry.
#[derive(Debug)]
pub struct Carried<E> {
    pub me: Incarnation,
    store: Store,
    ender: Arc<E>,
    live: Mutex<HashSet<(TenantId, String)>>,
    settings: CallsArgs,
    metrics: Arc<RecoveryMetrics>,
}

impl<E: Ender + 'static> Carried<E> {
    pub fn new(
        me: Incarnation,
        store: Store,
        ender: Arc<E>,
        settings: CallsArgs,
        metrics: Arc<RecoveryMetrics>,
    ) -> Self {
        Self { me, store, ender, live: Mutex::default(), settings, metrics }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<(TenantId, String)>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call's contact was created: written down (a failure is logged; the call goes on).
    pub async fn carry(&self, tenant: &TenantId, contact: &str, call_id: &str) {
        self.live().insert((tenant.clone(), contact.to_owned()));
        let entry = Entry { call_id: call_id.to_owned(), started_ms: chrono::Utc::now().timestamp_millis() };
        if let Err(e) = self.store.add(&self.me, tenant, contact, &entry, self.settings.lease).await {
            tracing::warn!(error = %e, "the call could not be written down: a crash would leave its contact open");
        }
    }

    /// A call is over and its contact's end was asked for with `result`: its entry goes
    /// unless sessions did not answer (then this replica's sweep retries the end).
    pub async fn ended(&self, tenant: &TenantId, contact: &str, result: &Result<(), Error>) {
        if Settled::of(result) != Settled::Retry {
            if let Err(e) = self.store.remove(&self.me, tenant, contact).await {
                tracing::warn!(error = %e, "the call's entry could not be removed: the sweep will");
            }
        }
        self.live().remove(&(tenant.clone(), contact.to_owned()));
    }

    /// Renews the lease and sweeps, every interval, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let beat = self.settings.lease / 3;
        let mut next_beat = tokio::time::Instant::now();
        let mut next_sweep = tokio::time::Instant::now();
        let mut first = true;
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_beat {
                match self.store.heartbeat(&self.me, self.settings.lease).await {
                    Ok(true) => first = false,
                    Ok(false) if first => {
                        tracing::info!(incarnation = %self.me, "voice calls registry: lease taken");
                        first = false;
                    }
                    Ok(false) => tracing::warn!(
                        incarnation = %self.me,
                        "voice calls registry: the lease had been swept (this replica was thought dead)"
                    ),
                    Err(e) => tracing::warn!(error = %e, "voice calls registry: lease not renewed"),
                }
                // Until Redis first answers, every second: a restarted replica's calls are
                // under a lease from its first call on.
                next_beat = now + if first { beat.min(Duration::from_secs(1)) } else { beat };
            }
            if now >= next_sweep {
                self.sweep_all().await;
                next_sweep = now + self.settings.sweep_interval;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next_beat.min(next_sweep)) => {}
            }
        }
    }

    /// One round: the incarnations to sweep, and this one's own stale entries.
    pub async fn sweep_all(&self) {
        match self.store.leases().await {
            Ok((now, leases)) => {
                for inc in to_sweep(&leases, now, &self.me) {
                    let _ = self.sweep(&inc).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "voice calls registry: leases not read"),
        }
        self.sweep_own().await;
    }

    /// Ends the contacts of dead incarnation `inc` and removes it once none is left. `None`
    /// when another replica holds its sweep (or Redis failed).
    pub async fn sweep(&self, inc: &Incarnation) -> Option<Sweep> {
        let ttl = self.lock_ttl();
        match self.store.lock(inc, &self.me, ttl).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::warn!(error = %e, %inc, "voice calls registry: sweep not started");
                return None;
            }
        }
        let swept = self.end_entries(inc, |_, _| true, Some(ttl)).await;
        let outcome = match swept {
            Some(s) if s.left == 0 => match self.store.retire(inc, Some(&self.me)).await {
                Ok(true) => "done",
                _ => "incomplete",
            },
            _ => "incomplete",
        };
        if outcome == "incomplete" {
            let _ = self.store.unlock(inc, &self.me).await;
        }
        let s = swept.unwrap_or_default();
        self.metrics.swept(outcome, s.recovered);
        tracing::info!(%inc, recovered = s.recovered, gone = s.gone, left = s.left, outcome, "voice calls of a lost replica swept");
        Some(s)
    }

    /// Retries the ends this process could not get from sessions: its own entries whose
    /// call is no longer in its memory.
    pub async fn sweep_own(&self) -> Option<Sweep> {
        let me = self.me.clone();
        let live = self.live().clone();
        let s = self.end_entries(&me, |t, c| !live.contains(&(t.clone(), c.to_owned())), None).await?;
        if s.recovered + s.gone + s.left > 0 {
            self.metrics.swept(if s.left == 0 { "done" } else { "incomplete" }, s.recovered);
            tracing::info!(recovered = s.recovered, gone = s.gone, left = s.left, "own stale voice calls swept");
        }
        Some(s)
    }

    fn lock_ttl(&self) -> Duration {
        // Each end waits at most 5 s for sessions; the lock is extended before each.
        self.settings.lease.max(Duration::from_secs(15))
    }

    /// Ends the contacts of `inc`'s entries that `pick` selects and removes their entries;
    /// `lock`: the sweep lock's ttl, extended before each (stops when lost). `None` when
    /// Redis failed before anything was read.
    async fn end_entries(
        &self,
        inc: &Incarnation,
        pick: impl Fn(&TenantId, &str) -> bool,
        lock: Option<Duration>,
    ) -> Option<Sweep> {
        let tenants = match self.store.tenants(inc).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, %inc, "voice calls registry: tenants not read");
                return None;
            }
        };
        let mut s = Sweep::default();
        for tenant in tenants {
            let calls = match self.store.calls(inc, &tenant).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, %inc, "voice calls registry: calls not read");
                    s.left += 1;
                    continue;
                }
            };
            for (contact, entry) in calls {
                if !pick(&tenant, &contact) {
                    continue;
                }
                if let Some(ttl) = lock {
                    if !self.store.extend(inc, &self.me, ttl).await.unwrap_or(false) {
                        s.left += 1;
                        return Some(s);
                    }
                }
                let settled = if of_tenant(&contact, &tenant) {
                    let result = self.ender.end(&tenant, &contact, CAUSE_LOST).await;
                    if let Err(e) = &result {
                        tracing::info!(error = %e, %tenant, contact, "lost call: contact not ended by this sweep");
                    }
                    Settled::of(&result)
                } else {
                    tracing::warn!(%tenant, contact, "a call entry naming another tenant's contact: dropped");
                    Settled::Gone
                };
                match settled {
                    Settled::Retry => s.left += 1,
                    done => match self.store.remove(inc, &tenant, &contact).await {
                        Ok(removed) => {
                            if done == Settled::Ended && removed {
                                tracing::info!(%tenant, contact, call_id = entry.call_id, "lost call: contact ended");
                                s.recovered += 1;
                            } else {
                                s.gone += 1;
                            }
                        }
                        Err(_) => s.left += 1,
                    },
                }
            }
        }
        Some(s)
    }

    /// At the end of a clean shutdown (the calls ended by the drain): the lease and list go
    /// if no entry is left; else the lease is left to run out and another replica (or this
    /// one's successor) sweeps what is left.
    pub async fn retire(&self) {
        let Some(s) = self.sweep_own().await else { return };
        let live = self.live().len();
        if s.left > 0 || live > 0 {
            tracing::warn!(left = s.left, live, "calls left in the registry: another replica will end them");
            return;
        }
        match self.store.retire(&self.me, None).await {
            Ok(_) => tracing::info!(incarnation = %self.me, "voice calls registry: lease released"),
            Err(e) => tracing::warn!(error = %e, "voice calls registry: lease not released, it will run out"),
        }
    }
}

#[cfg(test)]
mod tests;
