//! The floor gauges: every tenant queue's service level over the last 15 minutes against its
//! contracted target, who is waiting and the agents by state, set from the same real-time
//! figures `GetRealtimeMetrics` answers with, every [`EVERY`], so Prometheus can show each
//! tenant and alert when one breaches its service level (the chart's
//! `CentralitaTenantServiceLevelBreach`). Every replica computes them from PostgreSQL, so
//! replicas agree; dashboards take the maximum per queue.

use std::collections::BTreeMap;
use std::time::Duration;

use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::Tenant;
use centralita_proto::reporting::v1 as pb;

use crate::api::Api;
use crate::metrics::{QueueFloor, QueueLabel};

/// How often the gauges are computed.
pub const EVERY: Duration = Duration::from_secs(15);

/// What the gauges hold for `tenant`'s queues, from its real-time figures.
pub fn of_tenant(tenant: &Tenant, rt: &pb::RealtimeMetrics) -> Vec<(QueueLabel, QueueFloor)> {
    rt.queues
        .iter()
        .map(|q| {
            let config = tenant.routing.queues.get(&q.queue);
            let target =
                config.and_then(|c| c.service_level_target_percent).unwrap_or(tenant.service_level.target_percent);
            let agents = q.agents.unwrap_or_default();
            let label = QueueLabel { tenant: tenant.id.as_str().to_owned(), queue: q.queue.clone() };
            let floor = QueueFloor {
                service_level_percent: q.rolling_15m.as_ref().and_then(|f| f.service_level_percent),
                target_percent: target,
                waiting: q.waiting,
                longest_wait_ms: q.longest_wait_ms,
                agents: [agents.available, agents.busy, agents.away, agents.offline],
            };
            (label, floor)
        })
        .collect()
}

/// Sets the gauges every [`EVERY`] until shutdown. A pass that fails for one tenant (the
/// database unreachable) leaves every gauge as the last complete pass set it.
pub async fn export_loop(api: Api, shutdown: Shutdown) {
    let mut every = tokio::time::interval(EVERY);
    'passes: loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = every.tick() => {}
        }
        let mut queues = BTreeMap::new();
        for tenant in api.registry.list() {
            match api.realtime_of(&tenant, None).await {
                Ok(rt) => queues.extend(of_tenant(&tenant, &rt)),
                Err(e) => {
                    tracing::warn!(error = %e, tenant = %tenant.id, "floor gauges not updated: no real-time figures");
                    continue 'passes;
                }
            }
        }
        api.metrics.floor(&queues);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use centralita_platform::metrics::Metrics as Platform;
    use centralita_platform::tenant::TenantManifest;

    use super::*;
    use crate::metrics::Metrics;

    fn tenant() -> Tenant {
        let text = r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: { name: acme }
spec:
  displayName: Acme
  channels: [voice]
  serviceLevel: { targetPercent: 80, thresholdSeconds: 20 }
  quotas: { maxConcurrentContacts: 10, apiRequestsPerSecond: 100 }
  businessHours: { timeZone: Europe/Madrid }
  dataRetentionDays: 30
  recording: { voice: none }
  routing:
    queues:
      - { id: support, serviceLevelTargetPercent: 90 }
      - { id: sales }
"#;
        TenantManifest::parse_all(text, chrono::Utc::now()).expect("manifest").remove(0)
    }

    fn queue(id: &str, sl: Option<f64>, waiting: u64) -> pb::RealtimeQueue {
        pb::RealtimeQueue {
            queue: id.into(),
            waiting,
            longest_wait_ms: 12_500,
            rolling_15m: Some(pb::Figures { service_level_percent: sl, ..Default::default() }),
            agents: Some(pb::AgentsByState { available: 2, busy: 3, away: 1, offline: 0 }),
            ..Default::default()
        }
    }

    fn series<'a>(text: &'a str, name: &str, labels: &str) -> Option<&'a str> {
        let want = format!("{name}{{service=\"reporting\",{labels}}} ");
        text.lines().find_map(|l| l.strip_prefix(want.as_str()))
    }

    #[test]
    fn each_queue_is_a_series_against_its_own_target() {
        let platform = Platform::new("reporting");
        let m = Arc::new(Metrics::register(&platform));
        let t = tenant();
        let rt = pb::RealtimeMetrics {
            tenant: "acme".into(),
            queues: vec![queue("support", Some(75.0), 4), queue("sales", None, 0)],
            ..Default::default()
        };
        m.floor(&of_tenant(&t, &rt).into_iter().collect());
        let text = platform.encode();
        let support = "tenant=\"acme\",queue=\"support\"";
        let sales = "tenant=\"acme\",queue=\"sales\"";
        assert_eq!(series(&text, "centralita_reporting_service_level_percent", support), Some("75.0"), "{text}");
        // The queue's own target, else the tenant's.
        assert_eq!(series(&text, "centralita_reporting_service_level_target_percent", support), Some("90.0"));
        assert_eq!(series(&text, "centralita_reporting_service_level_target_percent", sales), Some("80.0"));
        // Nothing judged: no service level, rather than a 0 that would page.
        assert_eq!(series(&text, "centralita_reporting_service_level_percent", sales), None, "{text}");
        assert_eq!(series(&text, "centralita_reporting_waiting_contacts", support), Some("4"));
        assert_eq!(series(&text, "centralita_reporting_longest_wait_seconds", support), Some("12.5"));
        assert_eq!(series(&text, "centralita_reporting_agents", &format!("{support},state=\"busy\"")), Some("3"));
        assert_eq!(series(&text, "centralita_reporting_agents", &format!("{support},state=\"away\"")), Some("1"));

        // A queue gone from the tenant's figures loses its series; the other keeps them.
        let rt = pb::RealtimeMetrics {
            tenant: "acme".into(),
            queues: vec![queue("support", Some(95.0), 0)],
            ..Default::default()
        };
        m.floor(&of_tenant(&t, &rt).into_iter().collect());
        let text = platform.encode();
        assert_eq!(series(&text, "centralita_reporting_service_level_percent", support), Some("95.0"));
        assert!(!text.contains("queue=\"sales\""), "{text}");
    }
}
