//! gRPC adapters: `ReportingService` (tenant-scoped figures) and `StaffingService`
//! (Erlang C).
//!
//! # Layout
//! - this module: [`Api`], the figures' wire form, the tenant a request is about, and the
//!   handlers of `ReportingService`.
//! - `realtime`: real-time figures, the agents on the floor, the wallboard stream.
//! - `history`: history by period and dimension, CSV, SLA compliance.
//! - `usage`: usage per tenant and month.
//! - `staffing`: `StaffingService` (Erlang C).

use std::pin::Pin;
use std::sync::Arc;

use centralita_platform::auth::{caller, Caller, Role};
use centralita_platform::error::Error;
use centralita_platform::queue::{AbandonRateDefinition, QueueConfig, ServiceLevelDefinition};
use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{Tenant, TenantId};
use centralita_proto::reporting::v1::{self as pb, reporting_service_server::ReportingService};
use deadpool_postgres::Pool;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::core::{Counts, Leg, Millis, QueueRules};
use crate::metrics::Metrics;
use crate::store;

mod history;
mod realtime;
mod staffing;
mod usage;

use history::history_query;
pub use history::to_csv;
pub use staffing::Staffing;
pub use usage::UsageFigures;

type R<T> = Result<Response<T>, Status>;

/// Longest history range one query may cover.
const MAX_RANGE_MS: i64 = 400 * 86_400_000;

#[derive(Clone)]
pub struct Api {
    pub pool: Pool,
    pub registry: TenantRegistry,
    pub shutdown: Shutdown,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

pub fn ts(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// A span of milliseconds as a `google.protobuf.Duration` (seconds and nanos of one sign).
pub fn duration(ms: Millis) -> prost_types::Duration {
    prost_types::Duration { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

fn millis(t: &Option<prost_types::Timestamp>, field: &str) -> Result<Millis, Error> {
    let t = t.as_ref().ok_or_else(|| Error::invalid(field, "is required"))?;
    if !(0..=253_402_300_799).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, "is not a valid timestamp"));
    }
    Ok(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// The tenant a request is about: a tenant's token its own (naming another is refused);
/// a BPO admin must name one.
fn resolve_tenant(caller: &Caller, named: &str, registry: &TenantRegistry) -> Result<Arc<Tenant>, Error> {
    caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor])?;
    let id = if named.is_empty() {
        caller.own_tenant()?.clone()
    } else {
        TenantId::parse(named).map_err(|e| Error::invalid("tenant", e.to_string()))?
    };
    caller.authorize_tenant(&id)?;
    registry.get(&id).ok_or_else(|| Error::NotFound(format!("tenants/{id}")))
}

fn rules_of(tenant: &Tenant, queue: &str) -> QueueRules {
    match tenant.routing.queues.get(queue) {
        Some(q) => QueueRules {
            threshold_ms: q.service_level_threshold.as_millis() as i64,
            short_abandon_ms: q.short_abandon_threshold.as_millis() as i64,
        },
        None => QueueRules { threshold_ms: tenant.service_level.threshold.as_millis() as i64, ..QueueRules::default() },
    }
}

fn definitions(
    queue: Option<&QueueConfig>,
    sl_override: Option<ServiceLevelDefinition>,
) -> (ServiceLevelDefinition, AbandonRateDefinition) {
    let sl = sl_override.or(queue.map(|q| q.service_level_definition)).unwrap_or_default();
    (sl, queue.map(|q| q.abandon_rate_definition).unwrap_or_default())
}

fn seconds(ms: i64, n: u64) -> Option<f64> {
    (n > 0).then(|| ms as f64 / 1000.0 / n as f64)
}

pub fn figures(c: &Counts, sl: ServiceLevelDefinition, ar: AbandonRateDefinition) -> pb::Figures {
    pb::Figures {
        offered: c.offered,
        answered: c.answered,
        answered_within_threshold: c.answered_within,
        abandoned: c.abandoned,
        short_abandoned: c.short_abandoned,
        abandoned_within_threshold: c.abandoned_within,
        left_within_threshold: c.left_within,
        overflowed: c.overflowed,
        timed_out: c.timed_out,
        waiting: c.waiting,
        handled: c.handled,
        transferred: c.transferred,
        transferred_while_waiting: c.transferred_waiting,
        service_level_percent: c.service_level(sl),
        service_level_definition: sl.name().into(),
        service_level_formula: sl.formula().into(),
        asa_seconds: c.asa_seconds(),
        aht_seconds: c.aht_seconds(),
        talk_seconds: seconds(c.talk_ms, c.handled),
        hold_seconds: seconds(c.hold_ms, c.handled),
        after_contact_work_seconds: seconds(c.acw_ms, c.handled),
        abandon_rate_percent: c.abandon_rate(ar),
        abandon_rate_definition: ar.name().into(),
        abandon_rate_formula: ar.formula().into(),
    }
}

impl Api {
    async fn legs(&self, tenant: &Tenant, from: Millis, to: Millis, queue: Option<&str>) -> Result<Vec<Leg>, Error> {
        let mut legs = store::legs_between(&self.pool, &tenant.id, from, to).await?;
        if let Some(q) = queue {
            legs.retain(|l| l.queue == q);
        }
        Ok(legs)
    }
}

pub(super) type MetricsStream = Pin<Box<dyn Stream<Item = Result<pb::RealtimeMetrics, Status>> + Send>>;

#[tonic::async_trait]
impl ReportingService for Api {
    async fn get_realtime_metrics(&self, request: Request<pb::GetRealtimeMetricsRequest>) -> R<pb::RealtimeMetrics> {
        let caller = caller(&request)?;
        Ok(Response::new(self.realtime(caller, request.get_ref()).await?))
    }

    type StreamRealtimeMetricsStream = MetricsStream;

    async fn stream_realtime_metrics(
        &self,
        request: Request<pb::StreamRealtimeMetricsRequest>,
    ) -> R<Self::StreamRealtimeMetricsStream> {
        let caller = caller(&request)?.clone();
        let query = request.into_inner().query.unwrap_or_default();
        // Refused up front (wrong tenant, no such tenant) rather than as a stream error.
        let first = self.realtime(&caller, &query).await?;
        Ok(Response::new(self.wallboard(caller, query, first)))
    }

    async fn query_history(&self, request: Request<pb::QueryHistoryRequest>) -> R<pb::QueryHistoryResponse> {
        let caller = caller(&request)?;
        let q = history_query(caller, request.get_ref(), &self.registry)?;
        let rows = self.history_rows(&q).await?;
        Ok(Response::new(pb::QueryHistoryResponse {
            tenant: q.tenant.id.as_str().into(),
            time_zone: q.tenant.business_hours.time_zone.name().into(),
            rows,
        }))
    }

    async fn export_history_csv(
        &self,
        request: Request<pb::ExportHistoryCsvRequest>,
    ) -> R<pb::ExportHistoryCsvResponse> {
        let caller = caller(&request)?;
        let query = request.get_ref().query.clone().unwrap_or_default();
        let q = history_query(caller, &query, &self.registry)?;
        let rows = self.history_rows(&q).await?;
        Ok(Response::new(pb::ExportHistoryCsvResponse { csv: to_csv(&rows) }))
    }

    async fn get_sla_compliance(&self, request: Request<pb::GetSlaComplianceRequest>) -> R<pb::SlaCompliance> {
        let caller = caller(&request)?;
        Ok(Response::new(self.sla(caller, request.get_ref()).await?))
    }

    async fn get_usage(&self, request: Request<pb::GetUsageRequest>) -> R<pb::Usage> {
        let caller = caller(&request)?;
        Ok(Response::new(self.usage(caller, request.get_ref()).await?))
    }
}
