//! Daily usage records for billing: once a day of a tenant's time zone is over, its usage
//! (handled contacts and handle minutes per channel, agents' signed-in hours) is published
//! on the usage topic, keyed by tenant. The event id is derived from tenant and day, so a
//! record published again (a crash between publish and bookkeeping, two replicas) is a
//! duplicate consumers drop. Days up to a week back are caught up after an outage.

use std::sync::Arc;
use std::time::Duration;

use centralita_platform::bus::{Event, Producer};
use centralita_platform::error::Error;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::Tenant;
use centralita_proto::reporting::v1 as pb;
use chrono::{Days, NaiveDate};
use uuid::Uuid;

use crate::api::{now_ms, ts, Api};
use crate::core::rollup::{period_start, Period};
use crate::core::Millis;
use crate::store;

/// How far back a missed day is still published.
const CATCH_UP_DAYS: u64 = 7;

/// The event id of `tenant`'s usage record of `day`: the same on every publish.
pub fn record_id(tenant: &str, day: NaiveDate) -> Uuid {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut g = 0x8422_2325_cbf2_9ce4u64;
    for b in tenant.bytes().chain(day.to_string().bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        g = (g ^ u64::from(b)).wrapping_mul(0x100_0000_01b3).rotate_left(7);
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&h.to_be_bytes());
    bytes[8..].copy_from_slice(&g.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// The finished days of `tenant` (local time) to consider at `now`, oldest first.
fn finished_days(tenant: &Tenant, now: Millis) -> Vec<NaiveDate> {
    let tz = tenant.business_hours.time_zone;
    let today = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default().with_timezone(&tz).date_naive();
    (1..=CATCH_UP_DAYS).rev().filter_map(|back| today.checked_sub_days(Days::new(back))).collect()
}

fn day_range(tenant: &Tenant, day: NaiveDate) -> Option<(Millis, Millis)> {
    let tz = tenant.business_hours.time_zone;
    let noon = |d: NaiveDate| d.and_hms_opt(12, 0, 0)?.and_local_timezone(tz).earliest();
    let start = period_start(Period::Day, tz, noon(day)?.timestamp_millis());
    let end = period_start(Period::Day, tz, noon(day.checked_add_days(Days::new(1))?)?.timestamp_millis());
    Some((start, end))
}

/// Publishes every finished, unpublished day of every tenant; returns how many.
pub async fn publish_due(api: &Api, producer: &Producer, topic: &str, now: Millis) -> Result<usize, Error> {
    let mut published = 0;
    for tenant in api.registry.list() {
        let days = finished_days(&tenant, now);
        let done = store::published_days(&api.pool, &tenant.id, &days).await?;
        for day in days.into_iter().filter(|d| !done.contains(d)) {
            let Some((from, to)) = day_range(&tenant, day) else { continue };
            let u = api.usage_between(&tenant.id, from, to).await?;
            let record = pb::UsageRecord {
                tenant: tenant.id.as_str().into(),
                day: day.to_string(),
                time_zone: tenant.business_hours.time_zone.name().into(),
                period_start: Some(ts(from)),
                period_end: Some(ts(to)),
                channels: u.channels,
                agent_signed_in_hours: u.agent_signed_in_hours,
                agents: u.agents,
            };
            let at = chrono::DateTime::from_timestamp_millis(to).unwrap_or_default();
            let mut event = Event::at(tenant.id.clone(), &record, at);
            event.id = record_id(tenant.id.as_str(), day);
            producer.publish(topic, tenant.id.as_str(), &event).await?;
            store::mark_published(&api.pool, &tenant.id, day).await?;
            api.metrics.usage_record_published();
            published += 1;
        }
    }
    Ok(published)
}

/// Runs [`publish_due`] every minute until shutdown.
pub async fn publish_loop(api: Api, producer: Arc<Producer>, topic: String, shutdown: Shutdown) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = every.tick() => {}
        }
        match publish_due(&api, &producer, &topic, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "usage records published"),
            Err(e) => tracing::warn!(error = %e, "usage publishing failed; retrying in a minute"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_stable_per_tenant_and_day() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 22).expect("date");
        assert_eq!(record_id("acme", d), record_id("acme", d));
        assert_ne!(record_id("acme", d), record_id("acme", d.succ_opt().expect("next")));
        assert_ne!(record_id("acme", d), record_id("globex", d));
    }
}
