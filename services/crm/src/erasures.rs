//! Other services' reports on the customers topic that they erased an erasure's contacts
//! from their store (`StoreErased`), recorded on the erasure's audit record so it shows
//! each store done or still pending. Each report is applied once (its event id is recorded
//! in the transaction that applies it); a report of another tenant's erasure, or of one
//! the tenant does not have, changes nothing.

use centralita_platform::bus::{
    BatchConsumer, BatchHandler, ConsumerSettings, Event, EventPayload, FETCH_WAIT_DEFAULT,
};
use centralita_platform::error::Error;
use centralita_platform::metrics::Metrics;
use centralita_platform::tenant::from_timestamp;
use centralita_proto::crm::v1 as pb;
use deadpool_postgres::{Object, Pool};

use crate::store;

/// Records stores' erasure reports.
#[derive(Debug)]
pub struct StoreReports {
    pub pool: Pool,
}

pub fn consumer(
    brokers: &str,
    group_id: String,
    topic: String,
    group_instance_id: Option<String>,
    handler: StoreReports,
    metrics: Option<std::sync::Arc<Metrics>>,
) -> Result<BatchConsumer<StoreReports>, Error> {
    BatchConsumer::new(
        ConsumerSettings {
            brokers: brokers.into(),
            group_id,
            topics: vec![topic],
            fetch_wait: FETCH_WAIT_DEFAULT,
            group_instance_id,
        },
        handler,
        100,
        std::time::Duration::from_millis(5),
        metrics,
    )
}

impl BatchHandler for StoreReports {
    async fn handle_batch(&mut self, events: &[Event]) -> Result<(), Error> {
        let mut client = self.pool.get().await?;
        for e in events {
            apply(&mut client, e).await?;
        }
        Ok(())
    }
}

/// Applies one event in its own transaction; true when it recorded a report. The topic's
/// other events (the CRM's own `CustomerErased`) and unreadable reports are skipped.
pub async fn apply(client: &mut Object, event: &Event) -> Result<bool, Error> {
    if event.type_name != pb::StoreErased::TYPE {
        return Ok(false);
    }
    let report: pb::StoreErased = match event.payload() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, event_id = %event.id, "skipping unreadable store erasure report");
            return Ok(false);
        }
    };
    let Some(id) = report.erasure.strip_prefix("erasures/").filter(|id| !id.is_empty()) else {
        tracing::warn!(event_id = %event.id, erasure = %report.erasure, "skipping a store erasure report without an erasure");
        return Ok(false);
    };
    if report.store.is_empty() || report.tenant != event.tenant.as_str() {
        tracing::warn!(event_id = %event.id, "skipping a store erasure report without a store, or of another tenant than its envelope");
        return Ok(false);
    }
    let at = report.erase_time.as_ref().and_then(from_timestamp).unwrap_or(event.occurred_at);
    let tx = store::begin(client, &event.tenant).await?;
    let tenant = event.tenant.as_str();
    let recorded = store::first_application(&tx, tenant, &event.id.to_string()).await?
        && store::store_erased(&tx, tenant, id, &report.store, report.records_erased, at).await?;
    tx.commit().await?;
    if recorded {
        tracing::info!(tenant, erasure = %report.erasure, store = %report.store, "store reported erased");
    } else {
        tracing::debug!(tenant, erasure = %report.erasure, "store erasure report applied before, or of an unknown erasure");
    }
    Ok(recorded)
}
