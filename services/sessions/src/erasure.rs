//! CRM's erasures carried out on sessions' contact records. A `CustomerErased` on the
//! customers topic names, in `erasure.contacts`, every contact the CRM linked to the erased
//! customer (and to the profiles merged into it); each of those, of the erasure's own tenant
//! only, loses the customer's personal data through [`core::contact::erase`], written by the
//! engine's compare-and-set, so a live contact changed meanwhile keeps that change and still
//! loses the data. The other contact of a consult (its leg, or the customer's contact of a
//! leg) carries copies of the same data and is erased with it. Then sessions reports its
//! store done with a `StoreErased` on the same topic, which the CRM records on the erasure's
//! audit record. The consumer stores the offset only after both, so an erasure that fails
//! half-way is retried from the start until it is done: contacts already erased are refused
//! by the core (nothing to write) and counted as such, contacts that expired are done.
//!
//! The rest of what sessions keeps in Redis about a contact holds no personal data: the
//! open-contact index, timers, agents' contact lists and outbox pending sets name contact
//! ids only, and a request-id key maps a channel's idempotency key to a contact id and
//! expires within a day. An erased terminal contact keeps its one-day expiry from the write.

use std::collections::BTreeSet;

use centralita_platform::bus::{Event, Handler};
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use centralita_routing_contract::wire::millis_to_pb;

use crate::core::{self, ContactId, ContactRef, Refusal};
use crate::engine::{Engine, Failure};

/// The store this service reports in `StoreErased` (the CRM's `ErasureStore.store`).
pub const STORE: &str = "sessions";

/// Carries out CRM's erasures on contact records and reports each done.
#[derive(Debug)]
pub struct ErasureHandler {
    pub engine: Engine,
}

impl Handler for ErasureHandler {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        // The topic also carries every store's `StoreErased`, this one's included.
        let Some(erasure) = centralita_platform::erasure::customer_erasure(event) else {
            return Ok(());
        };
        let report = erase(&self.engine, &event.tenant, &erasure.contacts).await?;
        for (outcome, n) in report.counts() {
            self.engine.metrics.erased_contacts(outcome, n);
        }
        let topic = self.engine.topics.customers();
        let at = millis_to_pb(self.engine.clock.now());
        let records = report.erased as i64;
        let producer = &self.engine.producer;
        centralita_platform::erasure::report_erased(producer, &topic, &event.tenant, &erasure.name, STORE, records, at)
            .await?;
        tracing::info!(erasure = %erasure.name, erased = report.erased, clean = report.clean, gone = report.gone, skipped = report.skipped, "customer erased from contact records");
        Ok(())
    }
}

/// What one erasure came to on sessions' contact records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Contacts whose personal data was removed now.
    pub erased: usize,
    /// Contacts with nothing personal left (erased before, or never given any).
    pub clean: usize,
    /// Contacts not in Redis (expired, or never sessions').
    pub gone: usize,
    /// Names skipped: malformed, or of another tenant than the erasure's.
    pub skipped: usize,
}

impl Report {
    /// Each outcome's label (for `centralita_sessions_erased_contacts`) and count.
    pub fn counts(&self) -> [(&'static str, usize); 4] {
        [("erased", self.erased), ("clean", self.clean), ("gone", self.gone), ("skipped", self.skipped)]
    }
}

/// Erases the customer's personal data from the contacts `names` of `tenant` and from the
/// other contact of their consults. Names of another tenant are skipped: an erasure never
/// reaches beyond its own tenant, whatever it names.
pub async fn erase(engine: &Engine, tenant: &TenantId, names: &[String]) -> Result<Report, Error> {
    let mut report = Report::default();
    let mut todo: Vec<ContactRef> = Vec::new();
    for name in names {
        match crate::wire::contact_ref("contacts", name) {
            Ok(c) if c.tenant == *tenant => todo.push(c),
            _ => {
                tracing::warn!(contact = %name, "erasure names a malformed contact or one of another tenant; skipped");
                report.skipped += 1;
            }
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(c) = todo.pop() {
        if !seen.insert(c.clone()) {
            continue;
        }
        let mut linked: Vec<ContactId> = Vec::new();
        let result = engine
            .transition(&c, |record| {
                linked = record.consult_of.iter().chain(record.consult_leg.iter()).cloned().collect();
                core::contact::erase(record)
            })
            .await;
        match result {
            Ok(_) => report.erased += 1,
            Err(Failure::Refused(Refusal::NothingToErase)) => report.clean += 1,
            Err(Failure::Refused(Refusal::ContactGone(_))) => report.gone += 1,
            Err(Failure::Refused(other)) => return Err(Error::internal(format!("erasure refused: {other}"))),
            Err(Failure::Failed(e)) => return Err(e),
        }
        todo.extend(linked.into_iter().map(|id| ContactRef { tenant: tenant.clone(), id }));
    }
    Ok(report)
}
