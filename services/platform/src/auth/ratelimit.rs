//! The tenant's API quota (`spec.quotas.apiRequestsPerSecond`), shared by every replica
//! that reaches the same Redis.
//!
//! # Algorithm
//! GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): Redis keeps
//! the tenant's *theoretical arrival time* (TAT) under `{t:<tenant>}:ratelimit`. A call at
//! `now` is admitted when `max(TAT, now) + T − now ≤ burst × T`, `T` being `1 s / rate`,
//! and then moves the TAT on by `T`. One Lua script ([`GCRA`]) does the read, the decision
//! and the write atomically, with Redis's own clock (`TIME`), so replicas with skewed clocks
//! still share one schedule; a call costs one `EVALSHA` round trip. The key expires once the
//! tenant has been idle long enough to have its whole burst back, so idle tenants leave
//! nothing behind.
//!
//! # Burst
//! [`burst`]: a fifth of a second's worth of the quota, at least [`MIN_BURST`] calls. Over
//! any window of `w` seconds a tenant gets at most `rate × w + burst` calls, so no
//! one-second window sees more than 1.2× a quota of 25/s or more (the per-replica limiter it
//! replaces let a tenant have 2× the quota at once, per replica). 200 ms absorbs the clumps in which an
//! evenly spread load still arrives (a frontend fanning out parallel calls, HTTP/2 batching,
//! a scheduler pause on the caller's side); the floor lets a small tenant's agent desktop
//! make its handful of parallel calls on sign-in.
//!
//! # When Redis cannot be reached
//! The check fails open to a *bounded* rate, never closed: each replica falls back to its
//! own per-replica limiter (the registry's token bucket, same rate and burst), so during an
//! outage a tenant can reach N× its quota over N replicas, and no more. A failed or slow
//! (> [`CHECK_TIMEOUT`]) check switches the replica to the fallback; from then on one call
//! a second ([`RETRY_AFTER`]) tries Redis again and the others count locally, so an outage
//! adds no latency to calls. Each switch is logged once (warn when falling back, info when
//! back) and `centralita_auth_rate_limiter_fallback` is 1 while the replica falls back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use crate::cache::{tenant_key, RedisHandle};
use crate::error::{Error, Reason};
use crate::registry::TenantRegistry;
use crate::tenant::Tenant;

/// The fewest calls a tenant may make at once, whatever its rate.
pub const MIN_BURST: u32 = 5;

/// How long a call waits for the shared check before it counts locally instead.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(100);

/// While falling back, how often one call tries Redis again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How many calls a tenant with quota `rate` a second may make at once: 200 ms worth of
/// quota, at least [`MIN_BURST`] (see the module docs for why).
pub fn burst(rate: u32) -> u32 {
    (rate / 5).max(MIN_BURST)
}

/// The GCRA check. KEYS[1]: the tenant's TAT in µs since the epoch. ARGV[1]: the emission
/// interval `T` in µs; ARGV[2]: the tolerance `burst × T` in µs. Returns 1 when the call is
/// admitted, 0 when it is over quota. The TAT is written with `%d`: Lua would print a
/// 16-digit number as `1.7e+15`, losing the microseconds.
pub const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > tolerance then return 0 end
local ttl_ms = math.floor((next_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', string.format('%d', ttl_ms))
return 1
";

/// The Redis key of a tenant's quota.
pub fn key(tenant: &Tenant) -> String {
    tenant_key(&tenant.id, &["ratelimit"])
}

/// The refusal of a call over quota, the same from the shared and the local limiter.
pub(crate) fn over_quota(tenant: &Tenant) -> Error {
    Error::ResourceExhausted {
        reason: Reason::TenantRateLimited,
        message: format!(
            "tenant `{}` exceeded its API quota of {} requests/s",
            tenant.id, tenant.quotas.api_requests_per_second
        ),
    }
}

#[derive(Debug, Default)]
struct Fallback {
    active: bool,
    /// While active: when a call may try Redis again.
    retry_at: Option<Instant>,
}

/// The quota shared through Redis, with the per-replica fallback.
#[derive(Debug)]
pub(crate) struct SharedQuota {
    redis: RedisHandle,
    script: redis::Script,
    fallback: Mutex<Fallback>,
    gauge: Gauge,
}

impl SharedQuota {
    pub(crate) fn new(redis: RedisHandle, gauge: Gauge) -> Self {
        gauge.set(0);
        Self { redis, script: redis::Script::new(GCRA), fallback: Mutex::default(), gauge }
    }

    /// Takes one call from `tenant`'s shared quota; counts it in `local` instead while Redis
    /// cannot be reached.
    pub(crate) async fn take(&self, tenant: &Tenant, local: &TenantRegistry) -> Result<(), Error> {
        if !self.should_try(Instant::now()) {
            return local.take_request(tenant);
        }
        let checked = match self.redis.conn() {
            Ok(mut conn) => {
                let rate = tenant.quotas.api_requests_per_second.max(1);
                let interval = (1_000_000 / u64::from(rate)).max(1);
                let tolerance = interval * u64::from(burst(rate));
                let mut call = self.script.key(key(tenant));
                call.arg(interval).arg(tolerance);
                match tokio::time::timeout(CHECK_TIMEOUT, call.invoke_async::<i64>(&mut conn)).await {
                    Ok(Ok(admitted)) => Ok(admitted == 1),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match checked {
            Ok(admitted) => {
                self.recovered();
                if admitted {
                    Ok(())
                } else {
                    Err(over_quota(tenant))
                }
            }
            Err(why) => {
                self.fell_back(Instant::now(), &why);
                local.take_request(tenant)
            }
        }
    }

    /// Whether this call asks Redis: always, unless falling back and another call tried less
    /// than [`RETRY_AFTER`] ago.
    fn should_try(&self, now: Instant) -> bool {
        let mut f = self.fallback.lock().unwrap_or_else(|p| p.into_inner());
        if !f.active {
            return true;
        }
        match f.retry_at {
            Some(at) if now < at => false,
            _ => {
                f.retry_at = Some(now + RETRY_AFTER);
                true
            }
        }
    }

    fn fell_back(&self, now: Instant, why: &str) {
        let mut f = self.fallback.lock().unwrap_or_else(|p| p.into_inner());
        f.retry_at = Some(now + RETRY_AFTER);
        if !f.active {
            f.active = true;
            self.gauge.set(1);
            tracing::warn!(
                error = why,
                "shared API rate limiter unreachable: counting tenant quotas per replica until Redis answers"
            );
        }
    }

    fn recovered(&self) {
        let mut f = self.fallback.lock().unwrap_or_else(|p| p.into_inner());
        if f.active {
            *f = Fallback::default();
            self.gauge.set(0);
            tracing::info!("shared API rate limiter reachable again: tenant quotas are shared across replicas");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::tenant;

    #[test]
    fn burst_is_a_fifth_of_a_second_with_a_floor() {
        assert_eq!(burst(1), MIN_BURST);
        assert_eq!(burst(25), MIN_BURST);
        assert_eq!(burst(50), 10);
        assert_eq!(burst(1000), 200);
    }

    #[test]
    fn keys_are_hash_tagged_per_tenant() {
        assert_eq!(key(&tenant("acme", 5, 1)), "{t:acme}:ratelimit");
    }

    #[test]
    fn fallback_retries_once_a_second_and_recovers() {
        let gauge = Gauge::default();
        let q = SharedQuota::new(RedisHandle::default(), gauge.clone());
        let t0 = Instant::now();
        assert!(q.should_try(t0));
        q.fell_back(t0, "down");
        assert_eq!(gauge.get(), 1);
        assert!(!q.should_try(t0 + Duration::from_millis(500)));
        assert!(q.should_try(t0 + RETRY_AFTER), "one call tries again after a second");
        assert!(!q.should_try(t0 + RETRY_AFTER), "and only one");
        q.recovered();
        assert_eq!(gauge.get(), 0);
        assert!(q.should_try(t0 + RETRY_AFTER));
    }
}
