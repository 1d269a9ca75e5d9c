//! CRM's erasures carried out on reporting's legs. A `CustomerErased` on the customers
//! topic names, in `erasure.contacts`, every contact the CRM linked to the erased customer;
//! what in a leg can lead to that person is its contact id (sessions, media, recording and
//! the contacts topic's older events link it to the caller), so the legs of those contacts
//! (of the erasure's own tenant only) get a fresh pseudonym each, as the retention sweeper
//! does for expired contacts ([`crate::retention`]): every figure stays (queue, channel,
//! times, outcome, disposition code, agent), nothing leads back. Then reporting reports its
//! store done with a `StoreErased` on the same topic, which the CRM records on the
//! erasure's audit record (`reporting` is one of `ERASURE_STORES`).
//!
//! Idempotent: a redelivered erasure finds the ids gone and reports again (the CRM keeps the
//! first report's time and count). The consumer stores the offset only after both, so an
//! erasure that fails half-way is retried until it is done. A contact event that arrives
//! after the erasure (a contact still open when the customer was erased) starts a leg under
//! the real id again — the same limit as retention's; sessions has already removed the
//! person from that contact's record and the topic carries references only.

use std::collections::BTreeSet;
use std::sync::Arc;

use centralita_platform::bus::{Event, Handler};
use centralita_platform::error::Error;
use centralita_platform::tenant::{parse_contact_name, TenantId};
use deadpool_postgres::Pool;

use crate::metrics::Metrics;
use crate::store;

/// The store this service reports in `StoreErased` (the CRM's `ErasureStore.store`).
pub const STORE: &str = "reporting";

/// Carries out CRM's erasures on legs and reports each done.
#[derive(Debug)]
pub struct ErasureHandler {
    pub pool: Pool,
    pub producer: Arc<centralita_platform::bus::Producer>,
    pub customers_topic: String,
    pub metrics: Arc<Metrics>,
}

/// The contact ids under which reporting keeps the legs of `names` (contact names, as the
/// CRM lists them) of `tenant`: the name as the contact events carry it and its bare id.
/// Names of another tenant or malformed are left out, and counted.
pub fn leg_ids(tenant: &TenantId, names: &[String]) -> (Vec<String>, usize) {
    let mut ids = BTreeSet::new();
    let mut skipped = 0;
    for name in names {
        match parse_contact_name("contacts", name) {
            Ok((t, id)) if t == *tenant => {
                ids.insert(name.clone());
                ids.insert(id);
            }
            _ => skipped += 1,
        }
    }
    (ids.into_iter().collect(), skipped)
}

impl Handler for ErasureHandler {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        // The topic also carries every store's `StoreErased`, this one's included.
        let Some(erasure) = centralita_platform::erasure::customer_erasure(event) else {
            return Ok(());
        };
        let (ids, skipped) = leg_ids(&event.tenant, &erasure.contacts);
        if skipped > 0 {
            tracing::warn!(erasure = %erasure.name, skipped, "erasure names malformed contacts or another tenant's; skipped");
        }
        let (contacts, legs) = store::anonymise_contacts(&self.pool, &event.tenant, &ids).await?;
        self.metrics.erased(contacts, legs);
        let at = centralita_platform::tenant::timestamp(chrono::Utc::now());
        let (topic, tenant) = (&self.customers_topic, &event.tenant);
        centralita_platform::erasure::report_erased(
            &self.producer,
            topic,
            tenant,
            &erasure.name,
            STORE,
            legs as i64,
            at,
        )
        .await?;
        tracing::info!(erasure = %erasure.name, contacts, legs, "customer's legs anonymised");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_erasures_own_tenants_contacts_are_reached() {
        let acme = TenantId::parse("acme").unwrap();
        let names = [
            "tenants/acme/contacts/c1".to_owned(),
            "tenants/globex/contacts/c2".to_owned(),
            "contacts/c3".to_owned(),
            "tenants/acme/contacts/bad id".to_owned(),
            "tenants/acme/contacts/c1".to_owned(),
        ];
        let (ids, skipped) = leg_ids(&acme, &names);
        assert_eq!(ids, vec!["c1".to_owned(), "tenants/acme/contacts/c1".to_owned()]);
        assert_eq!(skipped, 3);
    }
}
