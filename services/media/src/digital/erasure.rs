//! CRM's customer erasures carried out on conversations. A `CustomerErased` on the
//! customers topic names, in `erasure.contacts`, every contact the CRM linked to the erased
//! customer; for each of those contacts of the erasure's own tenant, everything schema
//! `media` holds about it is **deleted**, in one transaction per erasure:
//! - `sms_messages`: the provider ids (Twilio `MessageSid`) of its SMS, inbound and outbound;
//! - `email_messages`: the Message-IDs, subjects, reference chains and attachment names of
//!   its email;
//! - `messages`: every message (text, agent ids, failure reasons);
//! - `outbox`: conversation events of it not yet published (their envelopes carry message
//!   text, so they are dropped rather than published after the erasure);
//! - `conversations`: its head (the customer's phone number or web chat visitor id, the
//!   web page's origin, read markers).
//!
//! Nothing is scrubbed and kept: media holds no figure that must stay for counting (the
//! reports count contacts from sessions' events, not media's rows), so a row with its
//! personal data removed would be a row about nobody. A contact named by an erasure of
//! another tenant, or a malformed name, is skipped whatever it names.
//!
//! Then media reports its store done with a `StoreErased` (store [`STORE`]), which the CRM
//! records on the erasure's audit record. The consumer stores the offset only after the
//! report is published, so an erasure that fails half-way is redone from the start: the
//! transaction either deleted everything or nothing, and a redelivery deletes nothing more
//! and reports again with 0 records, as the proto asks.
//!
//! Not reached from here: what media already published on the conversations topic (message
//! text in `MessageReceived`/`MessageSent`), see `docs/data-map.md`.

use std::sync::Arc;

use centralita_platform::bus::{Event, Handler, Producer, Topics};
use centralita_platform::db::begin;
use centralita_platform::error::Error;
use centralita_platform::tenant::{parse_contact_name, timestamp, TenantId};
use chrono::Utc;
use deadpool_postgres::{Pool, Transaction};

use super::store::TOPIC_BASE;
use crate::metrics::DigitalMetrics;

/// The store this service reports in `StoreErased` (the CRM's `ErasureStore.store`).
pub const STORE: &str = "media";

/// Rows one erasure deleted, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub conversations: u64,
    pub messages: u64,
    pub sms_ids: u64,
    /// `email_messages` rows.
    pub email_ids: u64,
    /// `attachments` rows (files).
    pub attachments: u64,
    pub outbox: u64,
    /// Contact names skipped: malformed, or of another tenant than the erasure's.
    pub skipped: usize,
}

impl Report {
    /// The records erased, as reported to the CRM: every row deleted.
    pub fn records(&self) -> u64 {
        self.conversations + self.messages + self.sms_ids + self.email_ids + self.attachments + self.outbox
    }
}

/// Carries out erasures on conversations and reports each done.
#[derive(Debug)]
pub struct ErasureHandler {
    pub pool: Pool,
    pub producer: Arc<Producer>,
    pub topics: Topics,
    pub metrics: Arc<DigitalMetrics>,
}

impl Handler for ErasureHandler {
    #[tracing::instrument(skip_all, fields(tenant = %event.tenant))]
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        // The topic also carries every store's `StoreErased`, this one's included.
        let Some(erasure) = centralita_platform::erasure::customer_erasure(event) else {
            return Ok(());
        };
        let report = erase(&self.pool, &event.tenant, &erasure.contacts).await?;
        self.metrics.erased(&report);
        let topic = self.topics.customers();
        let records = report.records() as i64;
        centralita_platform::erasure::report_erased(
            &self.producer,
            &topic,
            &event.tenant,
            &erasure.name,
            STORE,
            records,
            timestamp(Utc::now()),
        )
        .await?;
        // Ids and counts only: no personal data in the log.
        tracing::info!(
            erasure = %erasure.name,
            conversations = report.conversations,
            messages = report.messages,
            sms_ids = report.sms_ids,
            email_ids = report.email_ids,
            attachments = report.attachments,
            outbox = report.outbox,
            skipped = report.skipped,
            "customer erased from conversations"
        );
        Ok(())
    }
}

/// Deletes everything schema `media` holds about the contacts `names` of `tenant`, in one
/// transaction (names of another tenant are skipped: an erasure never reaches beyond its
/// own tenant, whatever it names). Running it again deletes nothing more.
pub async fn erase(pool: &Pool, tenant: &TenantId, names: &[String]) -> Result<Report, Error> {
    let mut report = Report::default();
    let mut contacts = Vec::with_capacity(names.len());
    for name in names {
        match parse_contact_name("contacts", name) {
            Ok((t, id)) if t == *tenant => contacts.push(id),
            _ => {
                tracing::warn!(
                    contact = %name,
                    "erasure names a malformed contact or one of another tenant; skipped"
                );
                report.skipped += 1;
            }
        }
    }
    if contacts.is_empty() {
        return Ok(report);
    }
    let mut client = pool.get().await?;
    // The tenant's transaction: row-level security confines every statement to it too.
    let tx = begin(&mut client, tenant).await?;
    // Lock the conversations first: an append (which takes the same row lock) waits, then
    // finds no conversation; none can slip a message in between the deletes.
    tx.query(
        "SELECT 1 FROM conversations WHERE tenant = $1 AND contact_id = ANY($2) FOR UPDATE",
        &[&tenant.as_str(), &contacts],
    )
    .await?;
    delete_conversations(&tx, tenant, &contacts, &mut report).await?;
    tx.commit().await?;
    Ok(report)
}

/// Deletes the conversations `contacts` of `tenant` and every row about them (children
/// first, for the foreign keys), in the caller's transaction, counting each table's rows
/// into `report`. The caller holds the conversations' row locks.
pub(crate) async fn delete_conversations(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    contacts: &[String],
    report: &mut Report,
) -> Result<(), Error> {
    let t = tenant.as_str();
    report.sms_ids +=
        tx.execute("DELETE FROM sms_messages WHERE tenant = $1 AND contact_id = ANY($2)", &[&t, &contacts]).await?;
    report.email_ids +=
        tx.execute("DELETE FROM email_messages WHERE tenant = $1 AND contact_id = ANY($2)", &[&t, &contacts]).await?;
    report.attachments +=
        tx.execute("DELETE FROM attachments WHERE tenant = $1 AND contact_id = ANY($2)", &[&t, &contacts]).await?;
    report.messages +=
        tx.execute("DELETE FROM messages WHERE tenant = $1 AND contact_id = ANY($2)", &[&t, &contacts]).await?;
    report.outbox += tx
        .execute(
            "DELETE FROM outbox WHERE tenant = $1 AND topic_base = $2 AND key = ANY($3)",
            &[&t, &TOPIC_BASE, &contacts],
        )
        .await?;
    report.conversations +=
        tx.execute("DELETE FROM conversations WHERE tenant = $1 AND contact_id = ANY($2)", &[&t, &contacts]).await?;
    Ok(())
}
