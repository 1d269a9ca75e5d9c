//! Logs and traces.
//!
//! - Logs: `tracing` events as one JSON object a line on stdout (or text for humans), with
//!   the current span's fields (tenant, contact) and the trace id.
//! - Traces: an OpenTelemetry tracer provider is always installed, so trace context is
//!   created and propagated; spans are exported over OTLP/gRPC only when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the standard `OTEL_*` variables).
//! - Propagation: W3C `traceparent`/`tracestate`, injected into and extracted from gRPC
//!   metadata ([`extract_http`]) and Kafka headers (see [`crate::bus`]).

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Flushes and stops trace export when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber and tracer provider. Call once, inside the tokio runtime.
pub fn init(service: &'static str, cfg: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let mut builder = SdkTracerProvider::builder()
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build());
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty());
    if endpoint.is_some() {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
        let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        builder = builder.with_span_processor(processor);
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer(service);
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let filter = EnvFilter::try_new(&cfg.log_filter)?;
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match cfg.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_target(true),
            )
            .try_init()?,
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_target(false)).try_init()?,
    }
    if let Some(endpoint) = endpoint {
        tracing::info!(%endpoint, "exporting traces over OTLP");
    }
    Ok(TelemetryGuard { provider })
}

/// W3C trace context of the current span, as header pairs.
pub fn current_trace_headers() -> HashMap<String, String> {
    let mut map = HashMap::new();
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MapInjector(&mut map));
    map
}

/// Makes `span` a child of the trace context found in `pairs` (if any).
pub fn set_parent_from<'a>(span: &tracing::Span, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    let map: HashMap<String, String> = pairs
        .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent") || k.eq_ignore_ascii_case("tracestate"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    if map.is_empty() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&MapExtractor(&map));
    let _ = span.set_parent(cx);
}

/// The span of one incoming gRPC call, child of the caller's trace context (tonic `trace_fn`).
pub fn grpc_span(req: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc",
        otel.kind = "server",
        rpc.method = %req.uri().path(),
        tenant = tracing::field::Empty,
    );
    extract_http(&span, req.headers());
    span
}

pub fn extract_http(span: &tracing::Span, headers: &http::HeaderMap) {
    set_parent_from(span, headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))));
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a HashMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
