//! The controller's reconcile against a **mocked Kubernetes API server** (there is no
//! cluster on this machine: a `tower-test` mock answers the HTTP calls the kube client
//! makes, and records them) and the **real** Kafka-protocol broker of the local stack: the
//! tenant configuration it publishes is read back from the tenants topic. Every reconcile
//! moves `centralita_operator_reconciles_total` for its result.
//!
//! The last test runs the whole operator on the platform runtime against the mocked API
//! server (no broker needed): it reconciles what it lists, and its admin port serves
//! `/livez`, `/readyz` (with the Kubernetes check) and its metrics; shutdown returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_operator::controller::{self, Context};
use centralita_operator::crd::{Tenant, TenantResourceSpec};
use centralita_operator::reconcile::FINALIZER;
use centralita_operator::{metrics, OperatorSettings};
use centralita_platform::bus::{ensure_topics, Producer, TopicSpec, Topics};
use centralita_platform::config::ServiceArgs;
use centralita_platform::metrics::Metrics as PlatformMetrics;
use centralita_platform::server::Listeners;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantStatus;
use centralita_platform::tenant_feed::load_snapshot;
use centralita_platform::testkit::{self, brokers, unique};
use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;

const SPEC: &str = r#"
displayName: Demo Client
channels: [voice, chat]
serviceLevel: { targetPercent: 80, thresholdSeconds: 20 }
quotas: { maxConcurrentContacts: 50, apiRequestsPerSecond: 100 }
businessHours: { timeZone: Europe/Madrid }
dataRetentionDays: 90
recording: { voice: all }
"#;

/// One call the client made: method, path, and the JSON body.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: serde_json::Value,
}

/// A fake API server: answers patches of the Tenant with `object` (as the server would
/// return the updated object), event creations with the event itself, lists of Tenants
/// with `listed`, and keeps watches open without an event.
struct ApiServer {
    calls: Arc<Mutex<Vec<Call>>>,
    object: Arc<Mutex<serde_json::Value>>,
    listed: Arc<Mutex<Vec<Tenant>>>,
}

impl ApiServer {
    fn start() -> (Client, Self) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let object: Arc<Mutex<serde_json::Value>> = Arc::default();
        let listed: Arc<Mutex<Vec<Tenant>>> = Arc::default();
        let (c, o, l) = (calls.clone(), object.clone(), listed.clone());
        tokio::spawn(async move {
            let mut watches = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                let path = parts.uri.path().to_owned();
                let method = parts.method.to_string();
                c.lock().unwrap().push(Call { method: method.clone(), path: path.clone(), body: body.clone() });
                let query = parts.uri.query().unwrap_or_default();
                if method == "GET" && query.contains("watch=true") {
                    watches.push(send);
                    continue;
                }
                let (status, reply) = if path.contains("/events") {
                    (201, body)
                } else if method == "GET" && path.ends_with("/tenants") {
                    let items = l.lock().unwrap().clone();
                    let list = serde_json::json!({
                        "apiVersion": "centralita.io/v1",
                        "kind": "TenantList",
                        "metadata": { "resourceVersion": "1" },
                        "items": items,
                    });
                    (200, list)
                } else {
                    (200, o.lock().unwrap().clone())
                };
                let response =
                    Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap();
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), Self { calls, object, listed })
    }

    fn set(&self, t: &Tenant) {
        *self.object.lock().unwrap() = serde_json::to_value(t).unwrap();
    }

    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

fn tenant(name: &str, spec: &str, generation: i64, finalized: bool) -> Tenant {
    let spec: TenantResourceSpec = serde_yaml::from_str(spec).unwrap();
    let mut t = Tenant::new(name, spec);
    t.metadata.namespace = Some("clients".into());
    t.metadata.generation = Some(generation);
    t.metadata.resource_version = Some(format!("{generation}00"));
    t.metadata.uid = Some("0d4c1f9e-0000-4000-8000-000000000001".into());
    if finalized {
        t.metadata.finalizers = Some(vec![FINALIZER.into()]);
    }
    t
}

async fn setup() -> (Arc<Context>, ApiServer, String, PlatformMetrics) {
    let topic = Topics::new(unique("op-") + ".").tenants();
    ensure_topics(&brokers(), 1, &[TopicSpec { name: topic.clone(), partitions: 1, compacted: true }]).await.unwrap();
    let (client, server) = ApiServer::start();
    let (platform, metrics) = metrics();
    let ctx = Arc::new(Context::new(client, Producer::new(&brokers(), None).unwrap(), topic.clone(), metrics));
    (ctx, server, topic, platform)
}

/// The operator's metrics in a registry of their own.
fn metrics() -> (PlatformMetrics, metrics::Metrics) {
    let platform = PlatformMetrics::new("operator");
    let metrics = metrics::Metrics::new(&platform);
    (platform, metrics)
}

/// `centralita_operator_reconciles_total` of `result` in the exposition `text`.
fn reconciles_in(text: &str, result: &str) -> u64 {
    let series = format!("centralita_operator_reconciles_total{{service=\"operator\",result=\"{result}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("no {series}in\n{text}"));
    line[series.len()..].parse().unwrap()
}

/// Reconciles counted so far, by result, in the order of `metrics::ReconcileResult::ALL`:
/// finalized, applied, unchanged, invalid, deleted, error.
fn reconciles(platform: &PlatformMetrics) -> [u64; 6] {
    let text = platform.encode();
    metrics::ReconcileResult::ALL.map(|r| reconciles_in(&text, r.as_str()))
}

/// How many reconciles were timed.
fn timed(platform: &PlatformMetrics) -> u64 {
    let text = platform.encode();
    let series = "centralita_operator_reconcile_duration_seconds_count{service=\"operator\"} ";
    text.lines().find_map(|l| l.strip_prefix(series)).unwrap().parse().unwrap()
}

/// The tenant as the platform sees it now: read back from the tenants topic.
async fn published(topic: &str, id: &str) -> Option<centralita_platform::tenant::Tenant> {
    let registry = load_snapshot(&brokers(), topic, Duration::from_secs(10)).await.unwrap();
    registry.get(&centralita_platform::tenant::TenantId::parse(id).unwrap()).map(|t| (*t).clone())
}

fn status_patch(calls: &[Call]) -> &serde_json::Value {
    let call = calls.iter().find(|c| c.method == "PATCH" && c.path.ends_with("/status")).expect("a status patch");
    assert_eq!(
        call.path,
        format!("/apis/centralita.io/v1/namespaces/clients/tenants/{}/status", call.path.split('/').nth(7).unwrap())
    );
    &call.body["status"]
}

fn event_reasons(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/apis/events.k8s.io/v1/namespaces/clients/events")
        .map(|c| format!("{}:{}", c.body["type"].as_str().unwrap_or(""), c.body["reason"].as_str().unwrap_or("")))
        .collect()
}

#[tokio::test]
async fn create_update_and_delete_with_the_finalizer() {
    let (ctx, server, topic, platform) = setup().await;
    let name = unique("demo-");

    // 1. A new resource first gets the finalizer, and nothing is published yet.
    let fresh = tenant(&name, SPEC, 1, false);
    server.set(&tenant(&name, SPEC, 1, true));
    let action = controller::reconcile(Arc::new(fresh), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let calls = server.take();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("PATCH", format!("/apis/centralita.io/v1/namespaces/clients/tenants/{name}").as_str())
    );
    assert!(calls[0].body.to_string().contains(FINALIZER), "{:?}", calls[0].body);
    assert!(published(&topic, &name).await.is_none());
    assert_eq!(reconciles(&platform), [1, 0, 0, 0, 0, 0], "finalized");

    // 2. With the finalizer: published, Ready=True for generation 1, a Normal event.
    let live = tenant(&name, SPEC, 1, true);
    let action = controller::reconcile(Arc::new(live.clone()), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(3600)));
    let calls = server.take();
    let status = status_patch(&calls);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        (status["conditions"][0]["type"].as_str(), status["conditions"][0]["status"].as_str()),
        (Some("Ready"), Some("True"))
    );
    assert_eq!(event_reasons(&calls), ["Normal:Published"]);
    let t = published(&topic, &name).await.expect("published");
    assert_eq!((t.display_name.as_str(), t.status), ("Demo Client", TenantStatus::Active));
    assert_eq!(reconciles(&platform), [1, 1, 0, 0, 0, 0], "applied");

    // 2b. The hourly re-publication of the same generation: published, nothing new to say.
    let mut again = live.clone();
    again.status = serde_json::from_value(status.clone()).ok();
    controller::reconcile(Arc::new(again), ctx.clone()).await.unwrap();
    let calls = server.take();
    assert!(event_reasons(&calls).is_empty(), "{calls:?}");
    assert_eq!(reconciles(&platform), [1, 1, 1, 0, 0, 0], "unchanged");

    // 3. An update (generation 2) is published again; the status follows the generation.
    let mut updated = tenant(&name, &SPEC.replace("Demo Client", "Demo Client Ltd"), 2, true);
    let mut prior = live.clone();
    prior.status = serde_json::from_value(status.clone()).ok();
    updated.status = prior.status.clone();
    controller::reconcile(Arc::new(updated.clone()), ctx.clone()).await.unwrap();
    let calls = server.take();
    assert_eq!(status_patch(&calls)["observedGeneration"], 2);
    assert_eq!(published(&topic, &name).await.unwrap().display_name, "Demo Client Ltd");
    assert_eq!(reconciles(&platform), [1, 2, 1, 0, 0, 0], "applied");

    // 4. Deleted: the tenant is published suspended, then the finalizer is removed.
    let mut deleted = updated;
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    let mut gone = deleted.clone();
    gone.metadata.finalizers = Some(vec![]);
    server.set(&gone);
    controller::reconcile(Arc::new(deleted), ctx.clone()).await.unwrap();
    let calls = server.take();
    assert_eq!(event_reasons(&calls), ["Normal:Suspended"]);
    let removal = calls.iter().find(|c| c.method == "PATCH").expect("the finalizer removal");
    assert!(
        removal.body.to_string().contains("remove") || removal.body.to_string().contains("finalizers"),
        "{:?}",
        removal.body
    );
    let t = published(&topic, &name).await.unwrap();
    assert_eq!((t.status, t.display_name.as_str()), (TenantStatus::Suspended, "Demo Client Ltd"));
    assert_eq!(reconciles(&platform), [1, 2, 1, 0, 1, 0], "deleted");
    assert_eq!(timed(&platform), 5);
}

#[tokio::test]
async fn an_invalid_spec_is_not_published_and_the_status_says_why() {
    let (ctx, server, topic, platform) = setup().await;
    let name = unique("bad-");
    let bad = SPEC.replace("targetPercent: 80", "targetPercent: 180").replace("Europe/Madrid", "Mars/Olympus");
    let resource = tenant(&name, &bad, 1, true);
    server.set(&resource);
    let action = controller::reconcile(Arc::new(resource), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let calls = server.take();
    let status = status_patch(&calls);
    let ready = &status["conditions"][0];
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("InvalidSpec")));
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("spec.serviceLevel.targetPercent") && message.contains("spec.businessHours.timeZone"),
        "{message}"
    );
    assert_eq!(event_reasons(&calls), ["Warning:InvalidSpec"]);
    assert!(published(&topic, &name).await.is_none());
    assert_eq!(reconciles(&platform), [0, 0, 0, 1, 0, 0], "invalid");
    // Deleting a tenant that never validated publishes nothing and just lets it go.
    let mut deleted = tenant(&name, &bad, 1, true);
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    controller::reconcile(Arc::new(deleted), ctx.clone()).await.unwrap();
    let calls = server.take();
    assert!(event_reasons(&calls).is_empty());
    assert!(calls.iter().any(|c| c.method == "PATCH"), "the finalizer is removed");
    assert!(published(&topic, &name).await.is_none());
    assert_eq!(reconciles(&platform), [0, 0, 0, 1, 1, 0], "deleted");
}

#[tokio::test]
async fn a_broker_outage_fails_the_reconcile_for_a_retry() {
    let (client, server) = ApiServer::start();
    // Nothing listens there: the publish fails, the reconcile errors, the policy backs off.
    let producer = Producer::new("127.0.0.1:1", None).unwrap();
    let (platform, metrics) = metrics();
    let ctx = Arc::new(Context::new(client, producer, "nowhere.tenants".into(), metrics));
    let resource = tenant(&unique("down-"), SPEC, 1, true);
    server.set(&resource);
    let started = std::time::Instant::now();
    let result =
        tokio::time::timeout(Duration::from_secs(60), controller::reconcile(Arc::new(resource.clone()), ctx.clone()))
            .await;
    let err = result.expect("the publish gives up").expect_err("no broker");
    assert!(err.to_string().contains("finalizer") || err.to_string().contains("publish"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(reconciles(&platform), [0, 0, 0, 0, 0, 1], "error");
    assert_eq!(timed(&platform), 1);
    let first = controller::error_policy(Arc::new(resource.clone()), &err, ctx.clone());
    let second = controller::error_policy(Arc::new(resource), &err, ctx);
    assert_eq!((first, second), (Action::requeue(Duration::from_secs(5)), Action::requeue(Duration::from_secs(10))));
    assert!(server.take().iter().all(|c| !c.path.ends_with("/status")), "no status claims a publish that failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_on_the_platform_runtime() {
    let (client, server) = ApiServer::start();
    let name = unique("listed-");
    // The watch's first list finds a Tenant without the finalizer: the controller adds it.
    server.listed.lock().unwrap().push(tenant(&name, SPEC, 1, false));
    server.set(&tenant(&name, SPEC, 1, true));

    let mut common = testkit::common(&(unique("op-rt-") + "."));
    common.shutdown_timeout = Duration::from_secs(2);
    let config = ServiceArgs { common, service: OperatorSettings { watch_namespace: String::new() } };
    let listeners = Listeners::ephemeral().await.unwrap();
    let admin = listeners.admin_addr();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(centralita_operator::run_with_client(config, client, listeners, shutdown.clone()));

    // Reconciled by the controller the runtime runs, counted in the runtime's registry.
    let mut text = String::new();
    for _ in 0..100 {
        text = http_get(admin, "/metrics").await;
        if text.contains("result=\"finalized\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reconciles_in(&text, "finalized"), 1, "{text}");
    assert_eq!(reconciles_in(&text, "error"), 0, "{text}");
    assert!(text.contains("centralita_operator_reconcile_duration_seconds_count{service=\"operator\"} 1"), "{text}");
    assert!(text.contains("centralita_service_ready{service=\"operator\"}"), "the platform's metrics too: {text}");
    let patched = server.take().into_iter().filter(|c| c.method == "PATCH").collect::<Vec<_>>();
    assert_eq!(patched[0].path, format!("/apis/centralita.io/v1/namespaces/clients/tenants/{name}"));

    assert!(http_get(admin, "/livez").await.starts_with("HTTP/1.1 200"));
    // The Kubernetes API answers its readiness check (Kafka may not: no broker is needed).
    let mut readyz = String::new();
    for _ in 0..100 {
        readyz = http_get(admin, "/readyz").await;
        if readyz.contains(r#""kubernetes":{"ok":true"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(readyz.contains(r#""kubernetes":{"ok":true"#), "{readyz}");

    // The platform's shutdown sequence: within its deadline, with the watch still open.
    let signalled = std::time::Instant::now();
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), running).await.expect("run returned").unwrap().unwrap();
    let took = signalled.elapsed();
    assert!(took < Duration::from_millis(2500), "shutdown took {took:?}");
    eprintln!("the operator stopped {took:?} after the shutdown trigger (deadline 2 s)");
}

/// A bare HTTP/1.1 GET on the admin port: the status line, headers and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
