//! The operator's own Prometheus metrics, declared in one place (so every name and label
//! can be reviewed together) and registered into the runtime's registry, so `/metrics` on
//! the admin port shows them next to the platform's.
//!
//! - `centralita_operator_reconciles_total{result}`: reconciles by [`ReconcileResult`]
//!   (bounded: one label value per variant, never a tenant or resource name).
//! - `centralita_operator_reconcile_duration_seconds`: how long one reconcile took,
//!   Kubernetes API calls and the publication to the tenants topic included.

use std::time::Duration;

use centralita_platform::metrics::Metrics as PlatformMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// What one reconcile came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    /// The finalizer was added; nothing published yet (the next reconcile publishes).
    Finalized,
    /// Published, and the status changed (a new generation, or a first publication).
    Applied,
    /// Published again with nothing new to say (the hourly re-publication).
    Unchanged,
    /// The spec was refused: nothing published, Ready=False says why.
    Invalid,
    /// The resource was deleted: the tenant published suspended (when it ever was
    /// published), the finalizer removed.
    Deleted,
    /// The reconcile failed (Kubernetes API or broker); retried with backoff.
    Error,
}

impl ReconcileResult {
    pub const ALL: [ReconcileResult; 6] = [
        ReconcileResult::Finalized,
        ReconcileResult::Applied,
        ReconcileResult::Unchanged,
        ReconcileResult::Invalid,
        ReconcileResult::Deleted,
        ReconcileResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Finalized => "finalized",
            ReconcileResult::Applied => "applied",
            ReconcileResult::Unchanged => "unchanged",
            ReconcileResult::Invalid => "invalid",
            ReconcileResult::Deleted => "deleted",
            ReconcileResult::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// A reconcile is two or three Kubernetes API calls and at most one acknowledged publish:
/// milliseconds when both answer, seconds when the broker is slow or down.
const DURATION_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Clone)]
pub struct Metrics {
    reconciles: Family<ResultLabel, Counter>,
    reconcile_duration: Histogram,
}

impl Metrics {
    /// The operator's metrics, registered into `platform`'s registry (the one `/metrics`
    /// serves). Every result starts at 0, so each series exists before its first reconcile.
    pub fn new(platform: &PlatformMetrics) -> Self {
        let reconciles = Family::<ResultLabel, Counter>::default();
        for result in ReconcileResult::ALL {
            let _ = reconciles.get_or_create(&ResultLabel { result: result.as_str() });
        }
        let reconcile_duration = Histogram::new(DURATION_BUCKETS);
        let mut registry = platform.registry.lock().unwrap_or_else(|p| p.into_inner());
        let help = "Reconciles of Tenant resources, by result (finalized, applied, unchanged, invalid, deleted, error)";
        registry.register("centralita_operator_reconciles", help, reconciles.clone());
        let help = "Duration of one reconcile of a Tenant resource, Kubernetes API calls and publication included";
        registry.register("centralita_operator_reconcile_duration_seconds", help, reconcile_duration.clone());
        Self { reconciles, reconcile_duration }
    }

    /// Records one reconcile.
    pub fn reconciled(&self, result: ReconcileResult, took: Duration) {
        self.reconciles.get_or_create(&ResultLabel { result: result.as_str() }).inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_result_and_timed() {
        let platform = PlatformMetrics::new("operator");
        let m = Metrics::new(&platform);
        m.reconciled(ReconcileResult::Applied, Duration::from_millis(30));
        m.reconciled(ReconcileResult::Applied, Duration::from_millis(40));
        m.reconciled(ReconcileResult::Error, Duration::from_secs(3));
        let text = platform.encode();
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(has(r#"centralita_operator_reconciles_total{service="operator",result="applied"} 2"#), "{text}");
        assert!(has(r#"centralita_operator_reconciles_total{service="operator",result="error"} 1"#), "{text}");
        assert!(has(r#"centralita_operator_reconciles_total{service="operator",result="unchanged"} 0"#), "{text}");
        assert!(has(r#"centralita_operator_reconcile_duration_seconds_count{service="operator"} 3"#), "{text}");
        assert!(
            has(r#"centralita_operator_reconcile_duration_seconds_bucket{service="operator",le="0.05"} 2"#),
            "{text}"
        );
        // The platform's own metrics are in the same exposition.
        assert!(text.contains("centralita_service_ready"), "{text}");
    }
}
