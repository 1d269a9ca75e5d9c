//! CRM's customer erasures carried out on recordings. A `CustomerErased` on the customers
//! topic names, in `erasure.contacts`, every contact the CRM linked to the erased customer;
//! every recording of those contacts, of the erasure's own tenant only, loses its data key
//! (from then on unreadable, backups included) and its row, then its object, each audited
//! (`erasure_delete`). A recording on legal hold is kept and audited as such
//! (`erasure_kept_on_hold`): a hold is there for legal claims, which GDPR art. 17(3)(e)
//! exempts from erasure; clearing the hold lets retention delete it. Then recording reports
//! its store done with a `StoreErased`, which the CRM records on the erasure's audit record.
//!
//! The consumer stores the offset only after the report is published, so an erasure that
//! fails half-way is redone from the start: what was deleted is gone (nothing to do), and
//! the report is published again (with the count of this pass), as the proto asks.

use std::sync::Arc;

use centralita_platform::bus::{Event, Handler, Producer, Topics};
use centralita_platform::error::Error;
use centralita_platform::tenant::{parse_contact_name, TenantId};
use chrono::Utc;
use deadpool_postgres::Pool;

use crate::metrics::Metrics;
use crate::objects::Objects;
use crate::store::{self, Audit};

/// The store this service reports in `StoreErased` (the CRM's `ErasureStore.store`).
pub const STORE: &str = "recording";

/// Carries out erasures on recordings and reports each done.
#[derive(Debug)]
pub struct ErasureHandler {
    pub pool: Pool,
    pub objects: Objects,
    pub producer: Arc<Producer>,
    pub topics: Topics,
    pub metrics: Arc<Metrics>,
}

/// What one erasure came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub erased: usize,
    pub kept_on_hold: usize,
    /// Contact names skipped: malformed, or of another tenant than the erasure's.
    pub skipped: usize,
}

impl Handler for ErasureHandler {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        // The topic also carries every store's `StoreErased`, this one's included.
        let Some(erasure) = centralita_platform::erasure::customer_erasure(event) else {
            return Ok(());
        };
        let report =
            erase(&self.pool, &self.objects, &self.metrics, &event.tenant, &erasure.name, &erasure.contacts).await?;
        let at = centralita_platform::tenant::timestamp(Utc::now());
        let topic = self.topics.customers();
        let records = report.erased as i64;
        centralita_platform::erasure::report_erased(
            &self.producer,
            &topic,
            &event.tenant,
            &erasure.name,
            STORE,
            records,
            at,
        )
        .await?;
        tracing::info!(erasure = %erasure.name, erased = report.erased, kept_on_hold = report.kept_on_hold, skipped = report.skipped, "customer erased from recordings");
        Ok(())
    }
}

/// Deletes the recordings of the contacts `names` of `tenant` (names of another tenant are
/// skipped: an erasure never reaches beyond its own tenant, whatever it names).
pub async fn erase(
    pool: &Pool,
    objects: &Objects,
    metrics: &Metrics,
    tenant: &TenantId,
    erasure: &str,
    names: &[String],
) -> Result<Report, Error> {
    let mut report = Report::default();
    for name in names {
        let contact = match parse_contact_name("contacts", name) {
            Ok((t, id)) if t == *tenant => id,
            _ => {
                tracing::warn!(contact = %name, "erasure names a malformed contact or one of another tenant; skipped");
                report.skipped += 1;
                continue;
            }
        };
        let mut after: Option<String> = None;
        loop {
            let rows = store::of_contact(pool, tenant, &contact, after.as_deref(), 100).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.id.clone());
            for row in &rows {
                let detail = format!("{erasure} (contact {contact})");
                if row.legal_hold {
                    let a = audit("erasure_kept_on_hold", &row.id, detail);
                    store::audit(pool, tenant, &a).await?;
                    metrics.audited("erasure_kept_on_hold");
                    report.kept_on_hold += 1;
                    continue;
                }
                if store::delete(pool, tenant, &row.id, &audit("erasure_delete", &row.id, detail)).await? {
                    metrics.audited("erasure_delete");
                    if let Err(e) = objects.delete(&row.object_key).await {
                        // The key is gone, so the object is unreadable; it stays as garbage.
                        tracing::warn!(error = %e, recording = %row.id, "cannot delete an erased recording's object");
                    }
                    report.erased += 1;
                }
            }
        }
    }
    Ok(report)
}

fn audit<'a>(action: &'a str, recording: &'a str, detail: String) -> Audit<'a> {
    Audit { actor: "system:erasure", roles: vec![], action, recording, detail, at: Utc::now() }
}
