//! Metrics pushed over OTLP/gRPC as well as scraped from `/metrics`.
//!
//! The services keep one set of metrics (the Prometheus registry of [`Metrics`]); when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is set and
//! `OTEL_METRICS_EXPORTER` is not `none`, a task exports the same registry to that OTLP
//! receiver every `OTEL_METRIC_EXPORT_INTERVAL` milliseconds (default 60 000) and once more at
//! shutdown. The standard variables keep their meaning; nothing else is configured.
//!
//! What is sent is what a scrape sees, converted family by family from the OpenMetrics text
//! the registry encodes (the one encoding `prometheus-client` offers): counters as monotonic
//! cumulative sums, gauges as gauges, histograms as cumulative explicit-bucket histograms
//! whose exemplars (the trace of a call in the bucket) become OTLP exemplars with that trace
//! id, info metrics as gauges of 1. Names and labels are the scrape's (label `service` kept;
//! the resource carries `service.name` too), so a dashboard works on either path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, number_data_point, AggregationTemporality, Exemplar, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Where and how often to push, from the standard `OTEL_*` variables; `None`: no push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    pub endpoint: String,
    pub interval: Duration,
    pub timeout: Duration,
}

impl PushConfig {
    /// Reads the push settings through `var` (the process environment in services); an
    /// error names the variable at fault.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, (&'static str, String)> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_METRICS_EXPORTER").is_some_and(|v| v.trim() == "none") {
            return Ok(None);
        }
        let (name, endpoint) = match set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            Some(e) => ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", e),
            None => match set("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(e) => ("OTEL_EXPORTER_OTLP_ENDPOINT", e),
                None => return Ok(None),
            },
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err((name, format!("`{endpoint}` must start with http:// or https://")));
        }
        let millis = |name: &'static str, default: u64| -> Result<Duration, (&'static str, String)> {
            match set(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(ms) if (100..=3_600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
                    _ => Err((name, format!("must be milliseconds between 100 and 3600000, got `{v}`"))),
                },
            }
        };
        Ok(Some(Self {
            endpoint: endpoint.trim().to_owned(),
            interval: millis("OTEL_METRIC_EXPORT_INTERVAL", 60_000)?,
            timeout: millis("OTEL_METRIC_EXPORT_TIMEOUT", 30_000)?,
        }))
    }
}

/// Pushes `metrics` to `cfg.endpoint` every interval until `shutdown`, then once more.
/// Failures are counted (`centralita_telemetry_metric_exports_total{outcome="failed"}`) and
/// logged once per run of failures; the next interval tries again.
pub async fn push(service: &'static str, metrics: Arc<Metrics>, cfg: PushConfig, shutdown: Shutdown) {
    let channel = match tonic::transport::Endpoint::from_shared(cfg.endpoint.clone()) {
        Ok(e) => e.timeout(cfg.timeout).connect_timeout(cfg.timeout).connect_lazy(),
        Err(e) => {
            tracing::warn!(endpoint = %cfg.endpoint, error = %e, "OTLP metrics endpoint unusable; not pushing");
            return;
        }
    };
    let mut client = MetricsServiceClient::new(channel);
    let start = unix_nanos(SystemTime::now());
    let mut failing = false;
    tracing::info!(endpoint = %cfg.endpoint, interval_ms = cfg.interval.as_millis() as u64, "pushing metrics over OTLP");
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => false,
            _ = shutdown.wait() => true,
        };
        let request = export_request(service, &metrics.encode(), start, unix_nanos(SystemTime::now()));
        let result = tokio::time::timeout(cfg.timeout, client.export(request)).await;
        let ok = matches!(result, Ok(Ok(_)));
        metrics.metric_export(ok);
        match (ok, failing) {
            (false, false) => {
                let error = match result {
                    Ok(Err(status)) => status.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(endpoint = %cfg.endpoint, %error, "OTLP metrics export failed; retrying every interval");
            }
            (true, true) => tracing::info!(endpoint = %cfg.endpoint, "OTLP metrics export works again"),
            _ => {}
        }
        failing = !ok;
        if last {
            return;
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// One export of `text` (the registry's OpenMetrics encoding) for `service`; every point
/// carries `start` (the process's first push) and `now` (nanoseconds since the epoch).
pub fn export_request(service: &str, text: &str, start: u64, now: u64) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "centralita".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics: convert(text, start, now),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
    }
}

/// One sample line: `name{labels} value [# {exemplar labels} value [timestamp]]`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    exemplar: Option<(Vec<(String, String)>, f64)>,
}

/// Parses `name{a="b",c="d"}`-style labels starting at `s` (after the `{`); returns them and
/// the rest after the closing `}`.
fn labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(rest) = s.strip_prefix('}') {
            return Some((out, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        let mut chars = s[eq + 1..].strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        s = &s[eq + 1..][1 + end + 1..];
        out.push((key, value));
    }
}

fn number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

fn sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            let (l, rest) = labels(&line[i + 1..])?;
            (line[..i].to_owned(), (l, rest))
        }
        Some(i) => (line[..i].to_owned(), (Vec::new(), &line[i..])),
        None => return None,
    };
    let (sample_labels, rest) = rest;
    let (value_part, exemplar_part) = match rest.split_once(" # ") {
        Some((v, e)) => (v, Some(e)),
        None => (rest, None),
    };
    let value = number(value_part.split_whitespace().next()?)?;
    let exemplar = match exemplar_part {
        Some(e) => {
            let (l, rest) = labels(e.trim_start().strip_prefix('{')?)?;
            Some((l, number(rest.split_whitespace().next()?)?))
        }
        None => None,
    };
    Some(Sample { name, labels: sample_labels, value, exemplar })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Info,
    Other,
}

struct Family {
    name: String,
    kind: Kind,
    help: String,
    unit: String,
    samples: Vec<Sample>,
}

/// The families of an OpenMetrics text, in order; lines it cannot read are skipped (the
/// text is the registry's own encoding, so none are expected).
fn families(text: &str) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    let mut help = HashMap::new();
    let mut units = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, h)) = rest.split_once(' ') {
                help.insert(name.to_owned(), h.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("# UNIT ") {
            if let Some((name, u)) = rest.split_once(' ') {
                units.insert(name.to_owned(), u.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                let kind = match kind.trim() {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "histogram" => Kind::Histogram,
                    "info" => Kind::Info,
                    _ => Kind::Other,
                };
                out.push(Family {
                    name: name.to_owned(),
                    kind,
                    help: help.remove(name).unwrap_or_default(),
                    unit: units.remove(name).unwrap_or_default(),
                    samples: Vec::new(),
                });
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            if let (Some(family), Some(s)) = (out.last_mut(), sample(line)) {
                if s.name.starts_with(family.name.as_str()) {
                    family.samples.push(s);
                }
            }
        }
    }
    out
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| kv(k, v)).collect()
}

fn point(s: &Sample, start: u64, now: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(&s.labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(s.value)),
        ..Default::default()
    }
}

/// A 32-hex-digit trace id as its 16 bytes.
fn trace_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect()
}

/// The histogram points of a family: its samples grouped by their labels without `le`.
fn histogram_points(f: &Family, start: u64, now: u64) -> Vec<HistogramDataPoint> {
    struct Acc {
        labels: Vec<(String, String)>,
        buckets: Vec<(f64, f64)>,
        sum: f64,
        count: f64,
        exemplars: Vec<Exemplar>,
    }
    let mut order: Vec<Vec<(String, String)>> = Vec::new();
    let mut acc: HashMap<Vec<(String, String)>, Acc> = HashMap::new();
    for s in &f.samples {
        let suffix = &s.name[f.name.len()..];
        let le = s.labels.iter().find(|(k, _)| k == "le").and_then(|(_, v)| number(v));
        let key: Vec<(String, String)> = s.labels.iter().filter(|(k, _)| k != "le").cloned().collect();
        let a = acc.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Acc { labels: key, buckets: Vec::new(), sum: 0.0, count: 0.0, exemplars: Vec::new() }
        });
        match (suffix, le) {
            ("_bucket", Some(le)) => {
                a.buckets.push((le, s.value));
                if let Some((labels, value)) = &s.exemplar {
                    let trace = labels.iter().find(|(k, _)| k == "trace_id").and_then(|(_, v)| trace_bytes(v));
                    a.exemplars.push(Exemplar {
                        filtered_attributes: attributes(
                            &labels.iter().filter(|(k, _)| k != "trace_id").cloned().collect::<Vec<_>>(),
                        ),
                        time_unix_nano: now,
                        value: Some(exemplar::Value::AsDouble(*value)),
                        trace_id: trace.unwrap_or_default(),
                        span_id: Vec::new(),
                    });
                }
            }
            ("_sum", _) => a.sum = s.value,
            ("_count", _) => a.count = s.value,
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|key| acc.remove(&key))
        .map(|mut a| {
            a.buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
            // OpenMetrics buckets are cumulative; OTLP's count each bucket alone.
            let mut previous = 0.0;
            let bucket_counts = a
                .buckets
                .iter()
                .map(|(_, c)| {
                    let n = (c - previous).max(0.0);
                    previous = *c;
                    n as u64
                })
                .collect();
            HistogramDataPoint {
                attributes: attributes(&a.labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: a.count as u64,
                sum: Some(a.sum),
                bucket_counts,
                explicit_bounds: a.buckets.iter().map(|(le, _)| *le).filter(|le| le.is_finite()).collect(),
                exemplars: a.exemplars,
                ..Default::default()
            }
        })
        .collect()
}

/// The OTLP metrics of an OpenMetrics text.
fn convert(text: &str, start: u64, now: u64) -> Vec<Metric> {
    families(text)
        .into_iter()
        .filter(|f| !f.samples.is_empty())
        .map(|f| {
            let data = match f.kind {
                Kind::Counter => metric::Data::Sum(Sum {
                    data_points: f
                        .samples
                        .iter()
                        .filter(|s| s.name.ends_with("_total"))
                        .map(|s| point(s, start, now))
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                Kind::Histogram => metric::Data::Histogram(Histogram {
                    data_points: histogram_points(&f, start, now),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
                Kind::Gauge | Kind::Info | Kind::Other => {
                    metric::Data::Gauge(Gauge { data_points: f.samples.iter().map(|s| point(s, start, now)).collect() })
                }
            };
            Metric { name: f.name, description: f.help, unit: f.unit, data: Some(data), ..Default::default() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::exemplar::HistogramWithExemplars;
    use prometheus_client::metrics::family::Family as PFamily;
    use prometheus_client::metrics::gauge::Gauge as PGauge;

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Label {
        method: String,
    }

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Trace {
        trace_id: String,
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    /// A registry with each kind the services use, encoded by prometheus-client and
    /// converted: every value, label and exemplar arrives as OTLP says it should.
    #[test]
    fn the_registry_converts_to_otlp_points() {
        let metrics = Metrics::new("sessions");
        let calls = PFamily::<Label, Counter>::default();
        let depth = PFamily::<Label, PGauge>::default();
        let seconds: PFamily<Label, HistogramWithExemplars<Trace>, fn() -> HistogramWithExemplars<Trace>> =
            PFamily::new_with_constructor(|| HistogramWithExemplars::new([0.1, 1.0].into_iter()));
        {
            let mut r = metrics.registry.lock().expect("registry");
            r.register("test_calls", "Calls", calls.clone());
            r.register("test_depth", "Depth", depth.clone());
            r.register("test_seconds", "Seconds", seconds.clone());
        }
        // prometheus-client writes label values as they are (no escaping): the services'
        // values are codes, names and topics; separators the text uses must still pass.
        let odd = Label { method: "say hi, {x} = y # z".into() };
        calls.get_or_create(&odd).inc_by(3);
        depth.get_or_create(&Label { method: "a".into() }).set(-7);
        let h = seconds.get_or_create(&Label { method: "a".into() });
        h.observe(0.05, None, None);
        h.observe(0.5, Some(Trace { trace_id: TRACE.into() }), None);
        h.observe(5.0, None, None);
        let request = export_request("sessions", &metrics.encode(), 10, 20);
        let rm = &request.resource_metrics[0];
        assert_eq!(rm.resource.as_ref().expect("resource").attributes, vec![kv("service.name", "sessions")]);
        let by_name: HashMap<_, _> = rm.scope_metrics[0].metrics.iter().map(|m| (m.name.as_str(), m)).collect();

        let Some(metric::Data::Sum(sum)) = &by_name["test_calls"].data else { panic!("a sum") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert_eq!(sum.data_points.len(), 1);
        let p = &sum.data_points[0];
        assert_eq!(p.value, Some(number_data_point::Value::AsDouble(3.0)));
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (10, 20));
        assert!(p.attributes.contains(&kv("method", &odd.method)), "{:?}", p.attributes);
        assert!(p.attributes.contains(&kv("service", "sessions")), "{:?}", p.attributes);
        assert_eq!(by_name["test_calls"].description, "Calls.");

        let Some(metric::Data::Gauge(g)) = &by_name["test_depth"].data else { panic!("a gauge") };
        assert_eq!(g.data_points[0].value, Some(number_data_point::Value::AsDouble(-7.0)));

        let Some(metric::Data::Histogram(h)) = &by_name["test_seconds"].data else { panic!("a histogram") };
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(p.bucket_counts, vec![1, 1, 1], "per bucket, not cumulative");
        assert_eq!((p.count, p.sum), (3, Some(5.55)));
        assert!(!p.attributes.iter().any(|a| a.key == "le"));
        assert_eq!(p.exemplars.len(), 1, "{:?}", p.exemplars);
        assert_eq!(p.exemplars[0].trace_id, trace_bytes(TRACE).expect("hex"));
        assert_eq!(p.exemplars[0].value, Some(exemplar::Value::AsDouble(0.5)));

        // The platform's own families are there too, e.g. readiness.
        assert!(by_name.contains_key("centralita_service_ready"), "{:?}", by_name.keys());
    }

    #[test]
    fn unreadable_lines_are_skipped_not_fatal() {
        let text = "# TYPE x gauge\nx{a=\"unterminated} 1\nx{a=\"b\"} notanumber\nx 2\n# EOF\n";
        let m = convert(text, 0, 1);
        let Some(metric::Data::Gauge(g)) = &m[0].data else { panic!("a gauge") };
        assert_eq!(g.data_points.len(), 1);
        assert_eq!(g.data_points[0].value, Some(number_data_point::Value::AsDouble(2.0)));
        assert!(trace_bytes("zz").is_none() && trace_bytes(&"g".repeat(32)).is_none());
        // OpenMetrics escapes in label values are read.
        let m = convert("# TYPE y gauge\ny{a=\"q\\\"u\\\\o\\nte\"} +Inf\n", 0, 1);
        let Some(metric::Data::Gauge(g)) = &m[0].data else { panic!("a gauge") };
        assert_eq!(g.data_points[0].attributes, vec![kv("a", "q\"u\\o\nte")]);
        assert_eq!(g.data_points[0].value, Some(number_data_point::Value::AsDouble(f64::INFINITY)));
    }

    #[test]
    fn the_standard_variables_configure_the_push() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(PushConfig::from_vars(vars(&[])), Ok(None));
        let c = PushConfig::from_vars(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")]))
            .expect("valid")
            .expect("on");
        assert_eq!((c.interval, c.timeout), (Duration::from_secs(60), Duration::from_secs(30)));
        let c = PushConfig::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ]))
        .expect("valid")
        .expect("on");
        assert_eq!((c.endpoint.as_str(), c.interval), ("http://m:4317", Duration::from_secs(1)));
        let off = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"), ("OTEL_METRICS_EXPORTER", "none")]);
        assert_eq!(PushConfig::from_vars(off), Ok(None));
        let bad = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"), ("OTEL_METRIC_EXPORT_INTERVAL", "soon")]);
        assert_eq!(PushConfig::from_vars(bad).expect_err("refused").0, "OTEL_METRIC_EXPORT_INTERVAL");
        assert!(PushConfig::from_vars(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "a:4317")])).is_err());
    }
}
