//! Prometheus metrics of the platform layer, declared in one place, so every name and label
//! of the layer can be read and reviewed together and none is registered twice.
//!
//! Names follow `centralita_<subsystem>_<name>_<unit>`; label values are bounded (reasons,
//! topics, outcomes, dependency names; never tenant ids or event ids). Services register
//! their own metrics into [`Metrics::registry`] under the same rules.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumedLabel {
    pub topic: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabel {
    pub dependency: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcCallLabel {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcMethodLabel {
    grpc_service: String,
    grpc_method: String,
}

/// The exemplar of a latency observation: the trace of the call, so a slow bucket leads to
/// a trace that fell in it (OpenMetrics exemplars; Prometheus keeps them with
/// `--enable-feature=exemplar-storage`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabel {
    pub trace_id: String,
}

/// The trace of the current span, when it is in a sampled trace (the service exports traces
/// and the caller's trace, or its own, is sampled).
pub fn current_trace() -> Option<TraceLabel> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| TraceLabel { trace_id: sc.trace_id().to_string() })
}

/// Buckets of `centralita_grpc_server_handling_seconds`: an API call takes milliseconds; the
/// upper buckets show a slow store or a call waiting on the rate limiter's Redis.
const GRPC_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Buckets of `centralita_bus_event_age_seconds`: a hop on the customer's path takes
/// milliseconds, a backlog or a replay seconds.
const EVENT_AGE_BUCKETS: [f64; 16] =
    [0.001, 0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.030, 0.050, 0.075, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug)]
pub struct Metrics {
    pub registry: Mutex<Registry>,
    auth_rejected: Family<ReasonLabel, Counter>,
    pub bus_published: Family<TopicLabel, Counter>,
    pub bus_consumed: Family<ConsumedLabel, Counter>,
    bus_consumer_lag: Family<TopicLabel, Gauge>,
    bus_event_age: Family<TopicLabel, Histogram, fn() -> Histogram>,
    pub tenants_known: Family<StatusLabel, Gauge>,
    pub dependency_up: Family<DependencyLabel, Gauge>,
    pub ready: Gauge,
    /// 1 while the shared API rate limiter cannot reach Redis and this replica counts tenant
    /// quotas alone (see `auth::ratelimit`); 0 otherwise, and always in a service without one.
    pub auth_rate_limiter_fallback: Gauge,
    grpc_handled: Family<GrpcCallLabel, Counter>,
    grpc_seconds:
        Family<GrpcMethodLabel, HistogramWithExemplars<TraceLabel>, fn() -> HistogramWithExemplars<TraceLabel>>,
    metric_exports: Family<OutcomeLabel, Counter>,
    group_unsettled: Family<GroupLabel, Gauge>,
    /// Rotations of the service-to-service TLS files seen (`crate::tls`), by result.
    pub tls_reloads: Family<ResultLabel, Counter>,
    /// The consumer groups of this process and how long each has been unsettled (`/livez`).
    pub groups: crate::bus::GroupWatch,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

impl Metrics {
    pub fn new(service: &'static str) -> Self {
        use std::borrow::Cow;
        let mut registry = Registry::with_labels([(Cow::Borrowed("service"), Cow::Borrowed(service))].into_iter());
        let auth_rejected = Family::<ReasonLabel, Counter>::default();
        let bus_published = Family::<TopicLabel, Counter>::default();
        let bus_consumed = Family::<ConsumedLabel, Counter>::default();
        let bus_consumer_lag = Family::<TopicLabel, Gauge>::default();
        let bus_event_age: Family<TopicLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(EVENT_AGE_BUCKETS));
        let tenants_known = Family::<StatusLabel, Gauge>::default();
        let dependency_up = Family::<DependencyLabel, Gauge>::default();
        let ready = Gauge::default();
        let auth_rate_limiter_fallback = Gauge::default();
        let grpc_handled = Family::<GrpcCallLabel, Counter>::default();
        let grpc_seconds: Family<
            GrpcMethodLabel,
            HistogramWithExemplars<TraceLabel>,
            fn() -> HistogramWithExemplars<TraceLabel>,
        > = Family::new_with_constructor(|| HistogramWithExemplars::new(GRPC_BUCKETS.into_iter()));
        let help = "gRPC calls refused by authentication, by reason";
        registry.register("centralita_auth_rejected_calls", help, auth_rejected.clone());
        registry.register(
            "centralita_bus_published_events",
            "Events published to Kafka, by topic",
            bus_published.clone(),
        );
        let help = "Events read from Kafka, by topic and outcome (handled, duplicate, malformed)";
        registry.register("centralita_bus_consumed_events", help, bus_consumed.clone());
        let help = "Records of a topic this replica's consumer has yet to read, over the partitions it is \
                    assigned (librdkafka's consumer lag, every 10 s)";
        registry.register("centralita_bus_consumer_lag_records", help, bus_consumer_lag.clone());
        let help = "Age of a consumed event when its handling starts (from its occurred_at: the publisher's \
                    outbox, the broker and the fetch wait), by topic";
        registry.register("centralita_bus_event_age_seconds", help, bus_event_age.clone());
        let help = "Tenants in this replica's registry, by status";
        registry.register("centralita_tenants_known", help, tenants_known.clone());
        let help = "1 when a dependency answered its last check";
        registry.register("centralita_dependency_up", help, dependency_up.clone());
        registry.register("centralita_service_ready", "1 when this replica reports ready", ready.clone());
        let help = "1 while the shared API rate limiter cannot reach Redis and this replica counts tenant quotas \
                    alone (at most the quota per replica)";
        registry.register("centralita_auth_rate_limiter_fallback", help, auth_rate_limiter_fallback.clone());
        let help = "gRPC calls answered, by API, method and status code (the code of the response headers: a \
                    stream that fails after it started counts with the code it started with)";
        registry.register("centralita_grpc_server_handled", help, grpc_handled.clone());
        let help = "Time from a gRPC call's arrival to its response headers (a unary call's whole handling; a \
                    stream's setup), by API and method";
        registry.register("centralita_grpc_server_handling_seconds", help, grpc_seconds.clone());
        let metric_exports = Family::<OutcomeLabel, Counter>::default();
        let help = "Pushes of these metrics to the OTLP receiver (when one is configured), by outcome (ok, failed)";
        registry.register("centralita_telemetry_metric_exports", help, metric_exports.clone());
        let group_unsettled = Family::<GroupLabel, Gauge>::default();
        let help = "Seconds this replica's member of a consumer group has been unsettled (not up and steady: \
                    joining, syncing, without a coordinator), 0 when settled; from librdkafka's statistics every 10 s";
        registry.register("centralita_bus_consumer_group_unsettled_seconds", help, group_unsettled.clone());
        let tls_reloads = Family::<ResultLabel, Counter>::default();
        let help = "Changes of the service-to-service TLS certificate files, by result (reloaded; failed: the files \
                    changed but do not load, the previous certificate stays in use)";
        registry.register("centralita_tls_reloads", help, tls_reloads.clone());
        Self {
            registry: Mutex::new(registry),
            auth_rejected,
            bus_published,
            bus_consumed,
            bus_consumer_lag,
            bus_event_age,
            tenants_known,
            dependency_up,
            ready,
            auth_rate_limiter_fallback,
            grpc_handled,
            grpc_seconds,
            metric_exports,
            group_unsettled,
            tls_reloads,
            groups: crate::bus::GroupWatch::default(),
        }
    }

    /// Records consumer group `group`'s state from a statistics report of its consumer.
    pub fn consumer_group(&self, group: &str, cgrp: Option<&rdkafka::statistics::ConsumerGroup>) {
        let unsettled = self.groups.observe(group, cgrp, Instant::now());
        self.group_unsettled.get_or_create(&GroupLabel { group: group.to_owned() }).set(unsettled.as_secs() as i64);
    }

    /// Counts one push of the metrics over OTLP.
    pub fn metric_export(&self, ok: bool) {
        self.metric_exports.get_or_create(&OutcomeLabel { outcome: if ok { "ok" } else { "failed" } }).inc();
    }

    pub fn auth_rejected(&self, reason: &'static str) {
        self.auth_rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Sets how many records of `topic` this replica's consumer has yet to read.
    pub fn consumer_lag(&self, topic: &str, lag: i64) {
        self.bus_consumer_lag.get_or_create(&TopicLabel { topic: topic.to_owned() }).set(lag);
    }

    /// Records how old an event of `topic` is as its handling starts.
    pub fn event_age(&self, topic: &str, occurred_at: chrono::DateTime<chrono::Utc>) {
        let age = (chrono::Utc::now() - occurred_at).num_microseconds().unwrap_or(i64::MAX).max(0);
        self.bus_event_age.get_or_create(&TopicLabel { topic: topic.to_owned() }).observe(age as f64 / 1e6);
    }

    fn grpc_call(
        &self,
        methods: &GrpcMethods,
        path: &str,
        code: &'static str,
        seconds: f64,
        trace: Option<TraceLabel>,
    ) {
        let (grpc_service, grpc_method) = methods.labels(path);
        let method = GrpcMethodLabel { grpc_service, grpc_method };
        self.grpc_seconds.get_or_create(&method).observe(seconds, trace, None);
        let call =
            GrpcCallLabel { grpc_service: method.grpc_service, grpc_method: method.grpc_method, grpc_code: code };
        self.grpc_handled.get_or_create(&call).inc();
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The gRPC methods a server can label its calls with: those of the descriptor sets it
/// serves. A call to any other path (a typo, a scanner, a method of a newer client) is
/// counted as `unknown`, so no caller can add label values.
#[derive(Debug, Clone, Default)]
pub struct GrpcMethods(Arc<HashSet<String>>);

impl GrpcMethods {
    /// The methods of every service in the encoded `FileDescriptorSet`s.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        use prost::Message as _;
        let mut paths = HashSet::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else { continue };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = service.name.unwrap_or_default();
                    let full = if package.is_empty() { service_name } else { format!("{package}.{service_name}") };
                    for method in service.method {
                        paths.insert(format!("/{full}/{}", method.name.unwrap_or_default()));
                    }
                }
            }
        }
        Self(Arc::new(paths))
    }

    fn labels(&self, path: &str) -> (String, String) {
        match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((service, method)) if self.0.contains(path) => (service.to_owned(), method.to_owned()),
            _ => ("unknown".to_owned(), "unknown".to_owned()),
        }
    }
}

/// The gRPC status code names of the Go and Prometheus ecosystems (`grpc_code`).
fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "Canceled",
        C::Unknown => "Unknown",
        C::InvalidArgument => "InvalidArgument",
        C::DeadlineExceeded => "DeadlineExceeded",
        C::NotFound => "NotFound",
        C::AlreadyExists => "AlreadyExists",
        C::PermissionDenied => "PermissionDenied",
        C::ResourceExhausted => "ResourceExhausted",
        C::FailedPrecondition => "FailedPrecondition",
        C::Aborted => "Aborted",
        C::OutOfRange => "OutOfRange",
        C::Unimplemented => "Unimplemented",
        C::Internal => "Internal",
        C::Unavailable => "Unavailable",
        C::DataLoss => "DataLoss",
        C::Unauthenticated => "Unauthenticated",
    }
}

/// The status code of a response, from its headers: tonic answers a failed call with a
/// trailers-only response (`grpc-status` among the headers); a response without one is a
/// call that succeeded (its `grpc-status: 0` comes in the trailers), unless HTTP itself failed.
fn response_code(response: &http::Response<axum::body::Body>) -> &'static str {
    match response.headers().get("grpc-status") {
        Some(v) => {
            let n = v.to_str().ok().and_then(|s| s.parse::<i32>().ok()).unwrap_or(2);
            grpc_code_name(tonic::Code::from_i32(n))
        }
        None if response.status().is_success() => "OK",
        None => "Unknown",
    }
}

/// `routes` with every call counted in `centralita_grpc_server_handled_total` and timed in
/// `centralita_grpc_server_handling_seconds` (the rate, errors and duration of each method).
pub fn instrument_grpc(
    routes: tonic::service::Routes,
    metrics: Arc<Metrics>,
    methods: GrpcMethods,
) -> tonic::service::Routes {
    let layer = axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
        let (metrics, methods) = (metrics.clone(), methods.clone());
        async move {
            let path = request.uri().path().to_owned();
            let started = Instant::now();
            let response = next.run(request).await;
            // Inside the call's `grpc` span (the server's trace_fn), so this is the call's trace.
            let trace = current_trace();
            metrics.grpc_call(&methods, &path, response_code(&response), started.elapsed().as_secs_f64(), trace);
            response
        }
    });
    tonic::service::Routes::from(routes.into_axum_router().layer(layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_the_convention() {
        let m = Metrics::new("sessions");
        m.auth_rejected("TOKEN_EXPIRED");
        m.ready.set(1);
        let text = m.encode();
        assert!(
            text.contains("centralita_auth_rejected_calls_total{service=\"sessions\",reason=\"TOKEN_EXPIRED\"} 1"),
            "{text}"
        );
        assert!(text.contains("centralita_service_ready{service=\"sessions\"} 1"), "{text}");
        assert!(text.contains("centralita_auth_rate_limiter_fallback{service=\"sessions\"} 0"), "{text}");
    }

    #[test]
    fn event_ages_fall_in_their_buckets() {
        let m = Metrics::new("routing");
        let now = chrono::Utc::now();
        m.event_age("p.routing.inputs", now - chrono::Duration::milliseconds(12));
        m.event_age("p.routing.inputs", now - chrono::Duration::seconds(3));
        // A clock step backwards counts as no age, not a negative one.
        m.event_age("p.routing.inputs", now + chrono::Duration::seconds(1));
        let text = m.encode();
        let line = |le: &str| {
            let want = format!(
                "centralita_bus_event_age_seconds_bucket{{service=\"routing\",le=\"{le}\",topic=\"p.routing.inputs\"}}"
            );
            text.lines().find(|l| l.starts_with(&want)).map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
        };
        assert_eq!(line("0.001").as_deref(), Some("1"), "{text}");
        assert_eq!(line("0.01").as_deref(), Some("1"), "{text}");
        assert_eq!(line("0.015").as_deref(), Some("2"), "{text}");
        assert_eq!(line("1.0").as_deref(), Some("2"), "{text}");
        assert_eq!(line("5.0").as_deref(), Some("3"), "{text}");
    }

    #[test]
    fn grpc_calls_are_labelled_only_with_methods_the_server_serves() {
        let m = Metrics::new("sessions");
        let methods = GrpcMethods::from_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET]);
        m.grpc_call(&methods, "/grpc.health.v1.Health/Check", "OK", 0.003, None);
        m.grpc_call(&methods, "/grpc.health.v1.Health/Check", "NotFound", 0.2, None);
        // Paths a caller makes up are one label value, whatever they are.
        m.grpc_call(&methods, "/grpc.health.v1.Health/Chec", "Unimplemented", 0.001, None);
        m.grpc_call(&methods, "/x.Y/Z", "Unauthenticated", 0.001, None);
        m.grpc_call(&methods, "nonsense", "Unimplemented", 0.001, None);
        let text = m.encode();
        for line in [
            "centralita_grpc_server_handled_total{service=\"sessions\",grpc_service=\"grpc.health.v1.Health\",\
             grpc_method=\"Check\",grpc_code=\"OK\"} 1",
            "centralita_grpc_server_handled_total{service=\"sessions\",grpc_service=\"grpc.health.v1.Health\",\
             grpc_method=\"Check\",grpc_code=\"NotFound\"} 1",
            "centralita_grpc_server_handled_total{service=\"sessions\",grpc_service=\"unknown\",\
             grpc_method=\"unknown\",grpc_code=\"Unimplemented\"} 2",
            "centralita_grpc_server_handling_seconds_count{service=\"sessions\",grpc_service=\"grpc.health.v1.Health\",\
             grpc_method=\"Check\"} 2",
            "centralita_grpc_server_handling_seconds_bucket{service=\"sessions\",le=\"0.005\",\
             grpc_service=\"grpc.health.v1.Health\",grpc_method=\"Check\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("Chec\""), "{text}");
        assert!(!text.contains("x.Y"), "{text}");
    }

    /// `f`'s result inside a span continuing `traceparent`, traces recorded by an SDK tracer.
    fn in_trace<R>(traceparent: &str, f: impl FnOnce() -> R) -> R {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("grpc");
            crate::telemetry::set_parent_from(&span, [("traceparent", traceparent)].into_iter());
            span.in_scope(f)
        })
    }

    #[test]
    fn a_traced_call_is_the_exemplar_of_its_latency_bucket() {
        let m = Metrics::new("sessions");
        let methods = GrpcMethods::from_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET]);
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let label = in_trace(&format!("00-{trace}-00f067aa0ba902b7-01"), current_trace);
        assert_eq!(label, Some(TraceLabel { trace_id: trace.into() }));
        m.grpc_call(&methods, "/grpc.health.v1.Health/Check", "OK", 0.3, label);
        m.grpc_call(&methods, "/grpc.health.v1.Health/Check", "OK", 0.002, None);
        let text = m.encode();
        let bucket = "centralita_grpc_server_handling_seconds_bucket{service=\"sessions\",le=\"0.5\",\
                      grpc_service=\"grpc.health.v1.Health\",grpc_method=\"Check\"} 2 # {trace_id=\"";
        assert!(text.contains(&format!("{bucket}{trace}\"}} 0.3")), "{text}");
        // Outside a sampled trace there is none: an unsampled caller's trace is not one.
        assert_eq!(current_trace(), None);
        let unsampled = in_trace(&format!("00-{trace}-00f067aa0ba902b7-00"), current_trace);
        assert_eq!(unsampled, None);
    }

    #[test]
    fn status_codes_come_from_the_response_headers() {
        let response = |status: u16, grpc: Option<&str>| {
            let mut r = http::Response::builder().status(status);
            if let Some(g) = grpc {
                r = r.header("grpc-status", g);
            }
            r.body(axum::body::Body::empty()).unwrap_or_default()
        };
        assert_eq!(response_code(&response(200, None)), "OK");
        assert_eq!(response_code(&response(200, Some("7"))), "PermissionDenied");
        assert_eq!(response_code(&response(200, Some("8"))), "ResourceExhausted");
        assert_eq!(response_code(&response(200, Some("garbage"))), "Unknown");
        assert_eq!(response_code(&response(404, None)), "Unknown");
    }
}
