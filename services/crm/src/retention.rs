//! Retention in the CRM: a sweeper that enforces each tenant's `dataRetentionDays` (from
//! the tenant registry) every `CENTRALITA_CRM_SWEEP_INTERVAL` (default 1 h).
//!
//! # What goes, and when (a pass as of `now`, `cutoff = now - dataRetentionDays`)
//! - **Records age one by one, the customer stays**: an interaction (a contact on the
//!   timeline, with its wrap-up notes) whose latest time — created, connected or ended — is
//!   before the cutoff, a note written before it, an answer asked before it. This is what a
//!   data-protection officer reads in "timelines, notes, answers older than the limit are
//!   deleted": a customer who called last week keeps last week's contact, not the one of
//!   three years ago.
//! - **A customer goes with everything about them** when their whole family (the root
//!   profile and the profiles merged into it) shows no activity since the cutoff: no
//!   profile updated, no interaction, note, answer or consent entry, no merge or undo. Then
//!   the profiles, their identities, consent ledger, the merges naming them and anything
//!   left of their records are deleted in one transaction (the same deletion as an erasure,
//!   `store::erase`, without the audit record: nothing is asked of other stores, each of
//!   which runs its own sweeper on the same limit).
//! - **Consents** are not aged entry by entry: what is in force is the latest entry, so
//!   dropping old entries one by one would change the answer `CheckContactPermission`
//!   gives and lose the proof behind it. The ledger is kept whole while its customer is,
//!   a consent or withdrawal recorded within the limit keeps the customer (a STOP last
//!   week is an active relation the tenant must honour), and the ledger goes with the
//!   customer. That is safe: with no profile or no entry, `CheckContactPermission` answers
//!   not allowed, so nothing is ever sent on a consent whose proof is gone. A tenant that
//!   must keep consent proof longer sets a longer `dataRetentionDays` (there is no separate
//!   consent period in the manifest yet).
//! - **Merges** describe a family, not an event about a person: they go with the family.
//! - **Erasure audit records** (`erasures`, `erasure_stores`) stay: they are the proof that
//!   an erasure happened and hold ids, counts, the requesting employee and times. Their
//!   `reason` is an administrator's free text, redacted of the person's names and
//!   identities when the erasure is made (`api::scrub`) and **cleared** by this sweeper once
//!   the erasure is older than the limit.
//! - Kept: `applied_events` and `erased_contacts` (event and contact ids, no personal data:
//!   they stop a redelivered or replayed event from writing again), the outbox (drained).
//!
//! Each step runs in batches of [`BATCH`], one transaction each. A pass is idempotent: what
//! is gone is not found again, so a second pass at the same time deletes nothing. It
//! reports counts only — `centralita_crm_retention_deleted_total{table}` and a log line
//! without ids or text. [`sweep`] takes the time as an argument, so tests move the clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use centralita_platform::config::SweepClock;
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use crate::metrics::Metrics;
use crate::store::{self, Record};

/// Rows (or families' roots) handled in one transaction at most.
pub const BATCH: i64 = 500;

/// The table label of erasure records whose reason text was cleared.
pub const ERASURE_REASONS: &str = "erasure_reasons";

/// What a pass deleted, per table (`erasure_reasons`: reasons cleared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report(pub BTreeMap<String, u64>);

impl Report {
    fn add(&mut self, table: &str, n: u64) {
        *self.0.entry(table.to_owned()).or_default() += n;
    }

    /// Rows deleted or cleared in all.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The count of one table (0 when nothing went).
    pub fn of(&self, table: &str) -> u64 {
        self.0.get(table).copied().unwrap_or(0)
    }
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
        let cutoff = now - chrono::Duration::days(i64::from(tenant.data_retention_days));
        sweep_tenant(pool, &tenant.id, cutoff, metrics, &mut report).await?;
    }
    Ok(report)
}

async fn sweep_tenant(
    pool: &Pool,
    tenant: &TenantId,
    cutoff: DateTime<Utc>,
    metrics: &Metrics,
    report: &mut Report,
) -> Result<(), Error> {
    let t = tenant.as_str();
    let mut client = pool.get().await?;
    for kind in Record::ALL {
        loop {
            let tx = store::begin(&mut client, tenant).await?;
            let n = store::delete_expired_records(&tx, t, kind, cutoff, BATCH).await?;
            tx.commit().await?;
            metrics.retention_deleted(kind.table(), n);
            report.add(kind.table(), n);
            if n < BATCH as u64 {
                break;
            }
        }
    }
    let mut after = String::new();
    loop {
        let tx = store::begin(&mut client, tenant).await?;
        let (deleted, next) = store::delete_expired_families(&tx, t, cutoff, &after, BATCH).await?;
        tx.commit().await?;
        for (table, n) in deleted {
            let n = u64::try_from(n).unwrap_or(0);
            metrics.retention_deleted(&table, n);
            report.add(&table, n);
        }
        match next {
            Some(id) => after = id,
            None => break,
        }
    }
    loop {
        let tx = store::begin(&mut client, tenant).await?;
        let n = store::clear_erasure_reasons(&tx, t, cutoff, BATCH).await?;
        tx.commit().await?;
        metrics.retention_deleted(ERASURE_REASONS, n);
        report.add(ERASURE_REASONS, n);
        if n < BATCH as u64 {
            break;
        }
    }
    Ok(())
}

/// Sweeps every `interval` until `shutdown` (the first pass within a minute of start), as if
/// it were `clock_offset` later than it is (`CENTRALITA_SWEEP_CLOCK_OFFSET`: zero but in
/// retention drills and tests, which cannot wait out `dataRetentionDays`).
/// Every replica may run it: batches lock what they delete and skip what is locked.
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
            Ok(r) if r.total() > 0 => tracing::info!(
                customers = r.of("customers"),
                identities = r.of("identities"),
                interactions = r.of("interactions"),
                notes = r.of("notes"),
                answers = r.of("answers"),
                consents = r.of("consents"),
                merges = r.of("merges"),
                erasure_reasons = r.of(ERASURE_REASONS),
                "retention sweep deleted expired CRM data"
            ),
            Ok(_) => {}
            Err(e) => {
                metrics.retention_failed();
                tracing::warn!(error = %e, "retention sweep failed; will retry");
            }
        }
    }
}
