//! The retention sweeper: deletes every finished recording older than its tenant's
//! `dataRetentionDays`, unless it is on legal hold: first its row and wrapped data key
//! (from then on the audio is unreadable anywhere, backups included), then its object.
//! Each deletion is audited. [`sweep`] takes the time as an argument, so tests move the
//! clock instead of waiting. The same loop re-wraps data keys after a key rotation
//! ([`rewrap`]).

use std::sync::Arc;
use std::time::Duration;

use centralita_platform::config::SweepClock;
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use crate::keys::Keyring;
use crate::metrics::Metrics;
use crate::objects::Objects;
use crate::store::{self, Audit};

/// Recordings deleted in one pass per tenant at most (the next pass continues).
const BATCH: i64 = 500;

/// One pass over every tenant the registry knows, as if it were `now`. Returns how many
/// recordings were deleted.
pub async fn sweep(
    pool: &Pool,
    objects: &Objects,
    tenants: &TenantRegistry,
    metrics: &Metrics,
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let mut deleted = 0;
    for tenant in tenants.list() {
        let cutoff = now - chrono::Duration::days(i64::from(tenant.data_retention_days));
        for row in store::expired(pool, &tenant.id, cutoff, BATCH).await? {
            let audit = Audit {
                actor: "system:retention",
                roles: vec![],
                action: "retention_delete",
                recording: &row.id,
                detail: format!(
                    "started {}, retention {} days",
                    row.started_at.to_rfc3339(),
                    tenant.data_retention_days
                ),
                at: now,
            };
            if !store::delete(pool, &tenant.id, &row.id, &audit).await? {
                continue; // put on hold meanwhile
            }
            metrics.audited("retention_delete");
            if let Err(e) = objects.delete(&row.object_key).await {
                // The key is gone, so the object is unreadable; it stays as garbage.
                metrics.retention_failures.inc();
                tracing::warn!(error = %e, recording = %row.id, "cannot delete a shredded recording's object");
            }
            metrics.retention_deleted.inc();
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Re-wraps the data keys of `tenants` that are not under their tenant's current key
/// version (after a rotation), a batch per tenant per pass; the audio is not touched. Keys
/// the keyring cannot unwrap (a version already removed from it) are logged and left.
/// Returns how many were re-wrapped.
pub async fn rewrap(pool: &Pool, keys: &Keyring, tenants: &[TenantId]) -> Result<usize, Error> {
    let mut done = 0;
    for tenant in tenants {
        let Some(current) = keys.current(tenant.as_str()) else { continue };
        for (id, version, wrapped) in store::keys_not_at(pool, tenant, current, BATCH).await? {
            match keys.rewrap(tenant.as_str(), &id, version, &wrapped) {
                Ok(Some((to, new))) => {
                    if store::rewrap_key(pool, tenant, &id, version, to, &new).await? {
                        done += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, recording = %id, version, "cannot re-wrap a data key"),
            }
        }
    }
    Ok(done)
}

/// Sweeps (and re-wraps rotated keys) every `interval` until `shutdown`, sweeping as if it
/// were `clock_offset` later than it is (`CENTRALITA_SWEEP_CLOCK_OFFSET`: zero but in
/// retention drills and tests, which cannot wait out `dataRetentionDays`).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    pool: Pool,
    objects: Objects,
    tenants: TenantRegistry,
    metrics: Arc<Metrics>,
    keys: Arc<Keyring>,
    interval: Duration,
    clock_offset: Duration,
    shutdown: Shutdown,
) {
    let clock = SweepClock::new(clock_offset);
    // The first pass soon after start (a rotation is picked up by a restart), then every
    // interval.
    let mut wait = interval.min(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        let ids: Vec<TenantId> = tenants.list().iter().map(|t| t.id.clone()).collect();
        match rewrap(&pool, &keys, &ids).await {
            Ok(n) if n > 0 => tracing::info!(rewrapped = n, "data keys moved to their tenant's current key"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "re-wrapping data keys failed; will retry"),
        }
        match sweep(&pool, &objects, &tenants, &metrics, clock.now()).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "retention sweep"),
            Ok(_) => {}
            Err(e) => {
                metrics.retention_failures.inc();
                tracing::warn!(error = %e, "retention sweep failed; will retry");
            }
        }
    }
}
