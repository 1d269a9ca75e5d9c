//! CRM's customer erasures as each store's consumer reads them from the customers topic,
//! and the report each store publishes back when it has erased what it held
//! (`StoreErased`, which the CRM records on the erasure's audit record).

use centralita_proto::crm::v1 as crm;

use crate::bus::{Event, EventPayload as _, Producer};
use crate::error::Error;
use crate::tenant::TenantId;

/// The erasure a `CustomerErased` event carries. `None` for the topic's other events (every
/// store's `StoreErased`) and — logged — for one that cannot be read, or whose erasure is
/// missing or names another tenant than its envelope: an erasure never reaches beyond the
/// tenant that published it.
pub fn customer_erasure(event: &Event) -> Option<crm::Erasure> {
    if event.type_name != crm::CustomerErased::TYPE {
        return None;
    }
    let erased = match event.payload::<crm::CustomerErased>() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable customer erasure skipped");
            return None;
        }
    };
    let erasure = erased.erasure.filter(|_| erased.tenant == event.tenant.as_str());
    if erasure.is_none() {
        tracing::warn!(tenant = %erased.tenant, "customer erasure without an erasure, or of another tenant than its envelope; skipped");
    }
    erasure
}

/// Publishes on `topic` (the customers topic) that `store` erased `records` records of
/// erasure `erasure` of `tenant` at `at`, keyed by the erasure.
pub async fn report_erased(
    producer: &Producer,
    topic: &str,
    tenant: &TenantId,
    erasure: &str,
    store: &str,
    records: i64,
    at: prost_types::Timestamp,
) -> Result<(), Error> {
    let done = crm::StoreErased {
        tenant: tenant.to_string(),
        erasure: erasure.to_owned(),
        store: store.to_owned(),
        records_erased: records,
        erase_time: Some(at),
    };
    producer.publish(topic, erasure, &Event::new(tenant.clone(), &done)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant: &str, erased: &crm::CustomerErased) -> Event {
        Event::new(TenantId::parse(tenant).expect("id"), erased)
    }

    #[test]
    fn only_an_erasure_of_the_envelopes_own_tenant_is_read() {
        let erasure = crm::Erasure { name: "erasures/e1".into(), contacts: vec!["c".into()], ..Default::default() };
        let own = crm::CustomerErased { tenant: "acme".into(), erasure: Some(erasure.clone()) };
        assert_eq!(customer_erasure(&event("acme", &own)), Some(erasure.clone()));
        assert_eq!(customer_erasure(&event("globex", &own)), None, "another tenant's envelope");
        let empty = crm::CustomerErased { tenant: "acme".into(), erasure: None };
        assert_eq!(customer_erasure(&event("acme", &empty)), None);
        let report = crm::StoreErased { tenant: "acme".into(), erasure: "erasures/e1".into(), ..Default::default() };
        let other = Event::new(TenantId::parse("acme").expect("id"), &report);
        assert_eq!(customer_erasure(&other), None, "a store's report is not an erasure");
    }
}
