//! Logs and traces.
//!
//! - Logs: `tracing` events as one JSON object a line on stdout (or text for humans), with
//!   the current span's fields (tenant, contact) and, inside a span, its `trace_id` and
//!   `span_id` ([`TraceIds`]), so a log line leads to its trace.
//! - Traces: an OpenTelemetry tracer provider is always installed, so trace context is
//!   created and propagated; spans are exported over OTLP/gRPC only when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the standard `OTEL_*` variables).
//! - Propagation: W3C `traceparent`/`tracestate`, injected into and extracted from gRPC
//!   metadata ([`extract_http`]) and Kafka headers (see [`crate::bus`]). Work done later on
//!   behalf of a command (an outbox drained after the write) keeps the command's context as
//!   header pairs ([`current_trace_headers`]) and continues it with [`set_parent_from`];
//!   a span that handles many records at once links each record's context ([`link_from`]).

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
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
    // Spans and logs are filtered apart: logs at `warn` still leave the traces whole.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(EnvFilter::try_new(&cfg.trace_filter).map_err(|e| anyhow::anyhow!("CENTRALITA_TRACE: {e}"))?);
    let logs = || EnvFilter::try_new(&cfg.log_filter).map_err(|e| anyhow::anyhow!("CENTRALITA_LOG: {e}"));
    let registry = tracing_subscriber::registry().with(otel);
    match cfg.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(TraceIds(
                        tracing_subscriber::fmt::format()
                            .json()
                            .flatten_event(true)
                            .with_current_span(true)
                            .with_span_list(false)
                            .with_target(true),
                    ))
                    .with_filter(logs()?),
            )
            .try_init()?,
        LogFormat::Text => {
            registry.with(tracing_subscriber::fmt::layer().with_target(false).with_filter(logs()?)).try_init()?
        }
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

/// The trace context found in `pairs` (W3C header names, any case), if a valid one is there.
pub fn context_from<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Option<opentelemetry::Context> {
    let map: HashMap<String, String> = pairs
        .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent") || k.eq_ignore_ascii_case("tracestate"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    if map.is_empty() {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&MapExtractor(&map));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of the trace context found in `pairs` (if any). Call it before the
/// span is first entered: once started, a span keeps its parent.
pub fn set_parent_from<'a>(span: &tracing::Span, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    if let Some(cx) = context_from(pairs) {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the trace context found in `pairs` (if any): how a span that handles many
/// records at once (a batch) is connected to the trace of each.
pub fn link_from<'a>(span: &tracing::Span, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    if let Some(cx) = context_from(pairs) {
        span.add_link(cx.span().span_context().clone());
    }
}

/// Makes `span` a child of `traceparent` — the stored context of the thing the work is
/// about (a contact's trace, kept on its record) — and links it to the current span (the
/// call doing the work, in a trace of its own). So the work of many callers on one thing
/// stays in that thing's trace, and each caller's trace still leads to it. Without a valid
/// `traceparent`, `span` stays a child of the current span. Call before `span` is entered.
pub fn continue_stored(span: &tracing::Span, traceparent: &str) {
    let Some(stored) = context_from([("traceparent", traceparent)].into_iter()) else {
        return;
    };
    let stored_trace = stored.span().span_context().trace_id();
    let current = tracing::Span::current().context().span().span_context().clone();
    let _ = span.set_parent(stored);
    if current.is_valid() && current.trace_id() != stored_trace {
        span.add_link(current);
    }
}

/// Puts the current span's W3C trace context into an outgoing gRPC call's metadata, so the
/// service called continues this trace (media's calls to sessions and recording).
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    for (k, v) in current_trace_headers() {
        if let (Ok(key), Ok(value)) =
            (tonic::metadata::MetadataKey::from_bytes(k.as_bytes()), tonic::metadata::MetadataValue::try_from(&v))
        {
            metadata.insert(key, value);
        }
    }
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

/// The JSON log line of `F` with the `trace_id` and `span_id` of the current span (when it
/// is in a trace) added as top-level fields.
#[derive(Debug)]
pub struct TraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for TraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx.lookup_current().and_then(|span| {
            let ext = span.extensions();
            let data = ext.get::<tracing_opentelemetry::OtelData>()?;
            let (trace, span) = (data.trace_id()?, data.span_id()?);
            (trace != opentelemetry::TraceId::INVALID).then_some((trace, span))
        });
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some((trace, span)), Some(head)) => {
                let sep = if head.trim_end().ends_with('{') { "" } else { "," };
                writeln!(writer, "{head}{sep}\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"}}")
            }
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buf").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn spans_continue_header_context_and_log_lines_carry_their_ids() {
        let provider = SdkTracerProvider::builder().build();
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(TraceIds(tracing_subscriber::fmt::format().json().flatten_event(true)))
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            let headers = [("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))];
            let span = tracing::info_span!("command");
            set_parent_from(&span, headers.iter().map(|(k, v)| (*k, v.as_str())));
            let carried = span.in_scope(|| {
                tracing::info!("inside");
                current_trace_headers()
            });
            assert!(carried["traceparent"].contains(TRACE), "{carried:?}");
            // Later, elsewhere: a span continuing the carried context.
            let later = tracing::info_span!("later");
            set_parent_from(&later, carried.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            assert_eq!(later.context().span().span_context().trace_id().to_string(), TRACE);
            tracing::info!("outside");
            assert!(context_from([("traceparent", "garbage")].into_iter()).is_none());
            // Work on the stored thing from another caller's trace: in the stored trace.
            let other = tracing::info_span!("other caller");
            set_parent_from(
                &other,
                [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")].into_iter(),
            );
            let work = other.in_scope(|| {
                let work = tracing::info_span!("work");
                continue_stored(&work, &carried["traceparent"]);
                work
            });
            assert_eq!(work.context().span().span_context().trace_id().to_string(), TRACE);
            // An outgoing call carries the work's context.
            let mut metadata = tonic::metadata::MetadataMap::new();
            work.in_scope(|| inject_metadata(&mut metadata));
            let sent = metadata.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default();
            assert!(sent.contains(TRACE), "{metadata:?}");
            let untraced = tracing::info_span!("untraced");
            continue_stored(&untraced, "");
            assert_ne!(untraced.context().span().span_context().trace_id().to_string(), TRACE);
        });
        let text = String::from_utf8(buf.0.lock().expect("buf").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("one JSON object a line")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["trace_id"], TRACE, "{text}");
        assert_eq!(lines[0]["span_id"].as_str().map(str::len), Some(16), "{text}");
        assert!(lines[1].get("trace_id").is_none(), "no span, no ids: {text}");
    }
}
