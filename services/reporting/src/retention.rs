//! Retention in reporting: a sweeper that enforces each tenant's `dataRetentionDays` (from
//! the tenant registry) every `CENTRALITA_REPORTING_SWEEP_INTERVAL` (default 1 h) by
//! **anonymising**, not deleting.
//!
//! Why anonymise: every figure — history, SLA compliance, usage for billing, agent time —
//! is computed from the legs on the fly (`api::history`, `api::usage`), there is no stored
//! aggregate, so deleting legs would change last year's SLA report and invoice. What in a
//! leg can lead to a person is its **contact id**: the contacts topic, sessions, CRM, media
//! and recording link it to the caller's phone, email, messages and voice. So once every
//! leg of a contact is older than the limit (its latest time — entered, left, held, ended,
//! handled — before `now - dataRetentionDays`), the contact id of its legs becomes a random
//! pseudonym (`anon:` and 32 hex digits, one per contact so its legs stay one contact)
//! that nothing else knows. Everything a figure reads stays: queue, channel, times,
//! outcome, hold, transfers, offers, the disposition code (a code of the tenant's list,
//! meaningless without the contact) and the agent id.
//!
//! Agent ids are kept on purpose: agents are the BPO's employees, not the tenant's
//! customers; per-agent history and agent time (occupancy) join legs by agent; their
//! retention is the BPO's employment records policy, not the tenant contract (so are
//! `agent_spans`). `applied_events` (event ids) is kept: it stops a replayed event from
//! writing a leg again under the real contact id. A contact's event arriving after its
//! legs were anonymised (later than the whole retention period) starts a new leg under its
//! real id; the next pass anonymises that one too.
//!
//! Each batch ([`BATCH`] contacts) is one transaction; a pass is idempotent (anonymised
//! legs are never chosen again), so a second pass at the same time changes nothing. It
//! reports counts only: `centralita_reporting_retention_contacts_anonymised_total`,
//! `centralita_reporting_retention_legs_anonymised_total` and a log line without ids.
//! [`sweep`] takes the time as an argument, so tests move the clock.

use std::sync::Arc;
use std::time::Duration;

use centralita_platform::config::SweepClock;
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use crate::metrics::Metrics;
use crate::store;

/// Contacts anonymised in one transaction at most (a pass goes on until none is left).
pub const BATCH: i64 = 500;

/// What a pass anonymised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub contacts: u64,
    pub legs: u64,
}

/// One pass over every tenant the registry knows, as if it were `now`.
pub async fn sweep(
    pool: &Pool,
    tenants: &TenantRegistry,
    metrics: &Metrics,
    now: DateTime<Utc>,
) -> Result<Report, Error> {
    let mut report = Report::default();
    for tenant in tenants.list() {
        let cutoff = (now - chrono::Duration::days(i64::from(tenant.data_retention_days))).timestamp_millis();
        loop {
            let (found, contacts, legs) = store::anonymise_expired(pool, &tenant.id, cutoff, BATCH).await?;
            metrics.anonymised(contacts, legs);
            report.contacts += contacts;
            report.legs += legs;
            if found < BATCH as u64 {
                break;
            }
        }
    }
    Ok(report)
}

/// Sweeps every `interval` until `shutdown` (the first pass within a minute of start), as if
/// it were `clock_offset` later than it is (`CENTRALITA_SWEEP_CLOCK_OFFSET`: zero but in
/// retention drills and tests, which cannot wait out `dataRetentionDays`).
/// Every replica may run it: an update waits for a batch of contact events holding the same
/// legs, and a contact already anonymised is not chosen again.
pub async fn run(
    pool: Pool,
    tenants: TenantRegistry,
    metrics: Arc<Metrics>,
    interval: Duration,
    clock_offset: Duration,
    shutdown: Shutdown,
) {
    let clock = SweepClock::new(clock_offset);
    let mut wait = interval.min(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        match sweep(&pool, &tenants, &metrics, clock.now()).await {
            Ok(r) if r.contacts > 0 => {
                tracing::info!(contacts = r.contacts, legs = r.legs, "retention sweep anonymised expired legs")
            }
            Ok(_) => {}
            Err(e) => {
                metrics.retention_failed();
                tracing::warn!(error = %e, "retention sweep failed; will retry");
            }
        }
    }
}
