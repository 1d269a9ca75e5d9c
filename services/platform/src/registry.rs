//! The tenant set a service keeps in memory, fed from the compacted tenants topic.
//!
//! Reads are lock-light (`RwLock` over a map of `Arc<Tenant>`), writes come from one task.
//! The registry also holds the per-tenant API rate limiters so a quota change applies at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::auth::ratelimit::{burst, over_quota};
use crate::error::{Error, Reason};
use crate::tenant::{Tenant, TenantId, TenantStatus};

#[derive(Debug, Default)]
struct Inner {
    tenants: BTreeMap<TenantId, Arc<Tenant>>,
}

/// A token bucket: `rate` tokens a second, bursts up to [`burst`]`(rate)`, the same as the
/// shared limiter's, so a replica falling back to it behaves as the shared one would alone.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, rate: u32, now: Instant) -> bool {
        let (rate, burst) = (f64::from(rate.max(1)), f64::from(burst(rate)));
        if (self.rate - rate).abs() > f64::EPSILON {
            self.rate = rate;
            self.tokens = self.tokens.min(burst);
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TenantRegistry {
    inner: Arc<RwLock<Inner>>,
    buckets: Arc<Mutex<BTreeMap<TenantId, Bucket>>>,
    /// Still reading the tenants topic for the first time ([`Self::loading`]): an unknown
    /// tenant may just not be read yet.
    loading: Arc<std::sync::atomic::AtomicBool>,
}

impl TenantRegistry {
    /// A registry whose tenant set is complete (tests, tools).
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry filled from the tenants topic ([`crate::tenant_feed`]): until
    /// [`Self::mark_loaded`], a call naming a tenant not read yet is answered UNAVAILABLE
    /// (retry) rather than refused for good — a restarted replica serves gRPC before its
    /// feed has caught up.
    pub fn loading() -> Self {
        let r = Self::default();
        r.loading.store(true, std::sync::atomic::Ordering::Release);
        r
    }

    /// The tenant set is read to its end once: unknown tenants are refused from now on.
    pub fn mark_loaded(&self) {
        self.loading.store(false, std::sync::atomic::Ordering::Release);
    }

    /// Stores `tenant` unless a newer version of it is already known (a replayed or
    /// reordered record never rolls a tenant back). Returns whether it changed anything.
    pub fn upsert(&self, tenant: Tenant) -> bool {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match inner.tenants.get(&tenant.id) {
            Some(known) if known.updated_at > tenant.updated_at || **known == tenant => false,
            _ => {
                inner.tenants.insert(tenant.id.clone(), Arc::new(tenant));
                true
            }
        }
    }

    pub fn get(&self, id: &TenantId) -> Option<Arc<Tenant>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).tenants.get(id).cloned()
    }

    /// Every known tenant, ordered by id.
    pub fn list(&self) -> Vec<Arc<Tenant>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).tenants.values().cloned().collect()
    }

    pub fn count_by_status(&self) -> (usize, usize) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let active = inner.tenants.values().filter(|t| t.status == TenantStatus::Active).count();
        (active, inner.tenants.len() - active)
    }

    /// The tenant if it is known and active; otherwise the refusal a caller should see.
    pub fn require_active(&self, id: &TenantId) -> Result<Arc<Tenant>, Error> {
        match self.get(id) {
            None if self.loading.load(std::sync::atomic::Ordering::Acquire) => Err(Error::Unavailable(format!(
                "tenant `{id}` is not known yet: this replica is still loading the tenant set; retry"
            ))),
            None => Err(Error::PermissionDenied {
                reason: Reason::TenantUnknown,
                message: format!("tenant `{id}` is not onboarded on this platform"),
            }),
            Some(t) if t.status == TenantStatus::Suspended => Err(Error::PermissionDenied {
                reason: Reason::TenantSuspended,
                message: format!("tenant `{id}` is suspended"),
            }),
            Some(t) => Ok(t),
        }
    }

    /// Takes one request from the tenant's API rate quota counted in this replica alone, or
    /// refuses: the quota of a service without a shared limiter, and the fallback of one
    /// whose Redis cannot be reached (see [`crate::auth::ratelimit`]).
    pub fn take_request(&self, tenant: &Tenant) -> Result<(), Error> {
        self.take_request_at(tenant, Instant::now())
    }

    fn take_request_at(&self, tenant: &Tenant, now: Instant) -> Result<(), Error> {
        let rate = tenant.quotas.api_requests_per_second;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(tenant.id.clone()).or_insert_with(|| Bucket {
            rate: f64::from(rate.max(1)),
            tokens: f64::from(burst(rate)),
            last: now,
        });
        if bucket.take(rate, now) {
            Ok(())
        } else {
            Err(over_quota(tenant))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tenant::TenantManifest;
    use chrono::DateTime;
    use std::time::Duration;

    pub(crate) fn tenant(id: &str, rps: u32, at: i64) -> Tenant {
        let text = format!(
            r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  displayName: {id}
  channels: [chat]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 10, apiRequestsPerSecond: {rps} }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
"#
        );
        let at = DateTime::from_timestamp(at, 0).expect("valid");
        TenantManifest::parse_all(&text, at).expect("valid").remove(0)
    }

    #[test]
    fn while_the_tenant_set_loads_an_unknown_tenant_is_unavailable_then_refused() {
        let r = TenantRegistry::loading();
        let id = TenantId::parse("acme").expect("id");
        assert!(matches!(r.require_active(&id), Err(Error::Unavailable(_))));
        r.mark_loaded();
        assert!(matches!(r.require_active(&id), Err(Error::PermissionDenied { reason: Reason::TenantUnknown, .. })));
        r.upsert(tenant("acme", 10, 1));
        assert!(r.require_active(&id).is_ok());
        // A complete registry refuses at once.
        let complete = TenantRegistry::new();
        assert!(matches!(complete.require_active(&id), Err(Error::PermissionDenied { .. })));
    }

    #[test]
    fn older_versions_never_roll_back() {
        let r = TenantRegistry::new();
        let mut newer = tenant("acme", 5, 200);
        newer.status = TenantStatus::Suspended;
        assert!(r.upsert(newer));
        assert!(!r.upsert(tenant("acme", 5, 100)));
        let id = TenantId::parse("acme").expect("id");
        assert!(matches!(r.require_active(&id), Err(Error::PermissionDenied { reason: Reason::TenantSuspended, .. })));
        let other = TenantId::parse("globex").expect("id");
        assert!(matches!(r.require_active(&other), Err(Error::PermissionDenied { reason: Reason::TenantUnknown, .. })));
    }

    #[test]
    fn rate_quota_allows_burst_then_refills() {
        let r = TenantRegistry::new();
        let t = tenant("acme", 5, 1);
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| r.take_request_at(&t, t0).is_ok()).count();
        assert_eq!(allowed, burst(5) as usize, "the burst at once");
        assert!(r.take_request_at(&t, t0 + Duration::from_millis(100)).is_err());
        assert!(r.take_request_at(&t, t0 + Duration::from_millis(250)).is_ok());
        let t = tenant("globex", 50, 1);
        let allowed = (0..2000).filter(|&i| r.take_request_at(&t, t0 + Duration::from_millis(i)).is_ok()).count();
        assert!((109..=110).contains(&allowed), "the rate over 2 s plus the burst, got {allowed}");
    }
}
