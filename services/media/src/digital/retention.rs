//! Retention of conversations: the sweeper deletes every conversation whose **last
//! activity** is older than its tenant's `dataRetentionDays`, with all its rows (messages,
//! SMS provider ids, unpublished events: the same deletion as an erasure,
//! [`super::erasure::delete_conversations`]).
//!
//! A conversation's last activity is the later of its end and its newest message:
//! - an **ended** conversation ages from the end of its contact (`ended_at`, which the
//!   [`EndsHandler`] takes from sessions' events on the contacts topic), or from a later
//!   message if one was written after it (an agent during after-contact work);
//! - an **open** conversation (no end known) ages from its newest message: one silent for
//!   the whole retention period is deleted too, because the contract limits how long the
//!   data is kept, not how long a contact may stay open, and a conversation silent that long
//!   is abandoned. The customer's next SMS then starts a new conversation; a web chat page
//!   still open gets 404 and starts over. Conversations that ended before media recorded
//!   ends (schema version 4) have no `ended_at` and age the same way.
//!
//! The conversation is the unit: its messages go with it, never one by one (its sequence
//! stays whole while it exists). Deletion, not anonymisation: media keeps no figure that
//! must survive (reports count contacts from sessions' events).
//!
//! [`sweep`] takes the time as an argument, so tests move the clock instead of waiting; it
//! is idempotent (what is gone is not found again) and reports what it removed, as counts
//! only: no ids, numbers or text in the logs.

use std::sync::Arc;
use std::time::Duration;

use centralita_platform::bus::{Event, EventPayload, Handler};
use centralita_platform::config::SweepClock;
use centralita_platform::db::begin;
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{parse_contact_name, TenantId};
use centralita_proto::sessions::v1 as spb;
use centralita_proto::tenancy::v1::Channel;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::erasure::{delete_conversations, Report};
use crate::metrics::DigitalMetrics;

/// Conversations deleted in one transaction at most (a pass goes on until none is left).
const BATCH: i64 = 200;

/// One pass over every tenant the registry knows, as if it were `now`: deletes each
/// conversation whose last activity is before `now - dataRetentionDays`. Returns the rows
/// deleted.
pub async fn sweep(
    pool: &Pool,
    tenants: &TenantRegistry,
    metrics: &DigitalMetrics,
    now: DateTime<Utc>,
) -> Result<Report, Error> {
    let mut total = Report::default();
    for tenant in tenants.list() {
        let cutoff = now - chrono::Duration::days(i64::from(tenant.data_retention_days));
        loop {
            let (report, found) = sweep_batch(pool, &tenant.id, cutoff).await?;
            metrics.swept(&report);
            add(&mut total, &report);
            if found < BATCH as usize {
                break;
            }
        }
    }
    Ok(total)
}

fn add(total: &mut Report, r: &Report) {
    total.conversations += r.conversations;
    total.messages += r.messages;
    total.sms_ids += r.sms_ids;
    total.email_ids += r.email_ids;
    total.attachments += r.attachments;
    total.outbox += r.outbox;
}

/// Deletes up to [`BATCH`] expired conversations of `tenant` in one transaction; the rows
/// deleted and how many conversations were found.
async fn sweep_batch(pool: &Pool, tenant: &TenantId, cutoff: DateTime<Utc>) -> Result<(Report, usize), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    // Locked: an append waits, then finds no conversation; one that committed first made
    // the conversation active again, and it is not chosen. The newest message is the one
    // at `last_seq` (a key lookup).
    let expired: Vec<String> = tx
        .query(
            "SELECT c.contact_id FROM conversations c
             LEFT JOIN messages m ON m.tenant = c.tenant AND m.contact_id = c.contact_id AND m.seq = c.last_seq
             WHERE c.tenant = $1 AND c.created_at < $2
               AND GREATEST(c.created_at, c.ended_at, m.created_at) < $2
             ORDER BY c.created_at LIMIT $3
             FOR UPDATE OF c",
            &[&tenant.as_str(), &cutoff, &BATCH],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut report = Report::default();
    if !expired.is_empty() {
        delete_conversations(&tx, tenant, &expired, &mut report).await?;
    }
    tx.commit().await?;
    Ok((report, expired.len()))
}

/// Sweeps every `interval` until `shutdown` (the first pass within a minute of start), as if
/// it were `clock_offset` later than it is (`CENTRALITA_SWEEP_CLOCK_OFFSET`: zero but in
/// retention drills and tests, which cannot wait out `dataRetentionDays`).
pub async fn run(
    pool: Pool,
    tenants: TenantRegistry,
    metrics: Arc<DigitalMetrics>,
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
            Ok(r) if r.records() > 0 => tracing::info!(
                conversations = r.conversations,
                messages = r.messages,
                sms_ids = r.sms_ids,
                email_ids = r.email_ids,
                attachments = r.attachments,
                outbox = r.outbox,
                "retention sweep deleted expired conversations"
            ),
            Ok(_) => {}
            Err(e) => {
                metrics.retention_failed();
                tracing::warn!(error = %e, "retention sweep failed; will retry");
            }
        }
    }
}

/// Records when a digital contact ended (`conversations.ended_at`) from sessions' events on
/// the contacts topic, the first time only (a redelivery or a later event changes nothing).
/// Voice and other channels' events are dropped without a query.
#[derive(Debug)]
pub struct EndsHandler {
    pub pool: Pool,
}

/// When the contact ended for the customer, if it has: its end time, or its close time for
/// a contact closed without one (abandoned, timed out).
pub fn ended_at(contact: &spb::Contact) -> Option<DateTime<Utc>> {
    let t = contact.end_time.as_ref().or(contact.close_time.as_ref())?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

impl Handler for EndsHandler {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        if event.type_name != spb::ContactEvent::TYPE {
            return Ok(());
        }
        let Ok(e) = event.payload::<spb::ContactEvent>() else { return Ok(()) };
        let Some(contact) = e.contact else { return Ok(()) };
        if !matches!(Channel::try_from(contact.channel), Ok(Channel::Chat | Channel::Sms | Channel::Email)) {
            return Ok(());
        }
        let Some(at) = ended_at(&contact) else { return Ok(()) };
        let Ok((tenant, id)) = parse_contact_name("contact", &contact.name) else { return Ok(()) };
        if tenant != event.tenant {
            tracing::warn!("contact event of another tenant than its envelope; skipped");
            return Ok(());
        }
        let mut client = self.pool.get().await?;
        let tx = begin(&mut client, &tenant).await?;
        tx.execute(
            "UPDATE conversations SET ended_at = $3 WHERE tenant = $1 AND contact_id = $2 AND ended_at IS NULL",
            &[&tenant.as_str(), &id, &at],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_ends_at_its_end_time_or_else_its_close_time() {
        let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let mut c = spb::Contact::default();
        assert_eq!(ended_at(&c), None, "open");
        c.close_time = ts(200);
        assert_eq!(ended_at(&c).map(|t| t.timestamp()), Some(200), "closed without an end (abandoned)");
        c.end_time = ts(100);
        assert_eq!(ended_at(&c).map(|t| t.timestamp()), Some(100), "the end comes first");
        c.end_time = Some(prost_types::Timestamp { seconds: 1, nanos: -1 });
        assert_eq!(ended_at(&c), None, "an invalid time is no end");
    }
}
