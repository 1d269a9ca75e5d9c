//! The controller's reconcile against a **mocked Kubernetes API server** (there is no
//! cluster on this machine: a `tower-test` mock answers the HTTP calls the kube client
//! makes, and records them) and the **real** Kafka-protocol broker of the local stack: the
//! tenant configuration it publishes is read back from the tenants topic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_operator::controller::{self, Context};
use centralita_operator::crd::{Tenant, TenantResourceSpec};
use centralita_operator::reconcile::FINALIZER;
use centralita_platform::bus::{ensure_topics, Producer, TopicSpec, Topics};
use centralita_platform::tenant::TenantStatus;
use centralita_platform::tenant_feed::load_snapshot;
use centralita_platform::testkit::{brokers, unique};
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
/// return the updated object) and event creations with the event itself.
struct ApiServer {
    calls: Arc<Mutex<Vec<Call>>>,
    object: Arc<Mutex<serde_json::Value>>,
}

impl ApiServer {
    fn start() -> (Client, Self) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let object: Arc<Mutex<serde_json::Value>> = Arc::default();
        let (c, o) = (calls.clone(), object.clone());
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                let path = parts.uri.path().to_owned();
                let method = parts.method.to_string();
                c.lock().unwrap().push(Call { method: method.clone(), path: path.clone(), body: body.clone() });
                let (status, reply) =
                    if path.contains("/events") { (201, body) } else { (200, o.lock().unwrap().clone()) };
                let response =
                    Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap();
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), Self { calls, object })
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

async fn setup() -> (Arc<Context>, ApiServer, String) {
    let topic = Topics::new(unique("op-") + ".").tenants();
    ensure_topics(&brokers(), 1, &[TopicSpec { name: topic.clone(), partitions: 1, compacted: true }]).await.unwrap();
    let (client, server) = ApiServer::start();
    let ctx = Arc::new(Context::new(client, Producer::new(&brokers(), None).unwrap(), topic.clone()));
    (ctx, server, topic)
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
    let (ctx, server, topic) = setup().await;
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

    // 3. An update (generation 2) is published again; the status follows the generation.
    let mut updated = tenant(&name, &SPEC.replace("Demo Client", "Demo Client Ltd"), 2, true);
    let mut prior = live.clone();
    prior.status = serde_json::from_value(status.clone()).ok();
    updated.status = prior.status.clone();
    controller::reconcile(Arc::new(updated.clone()), ctx.clone()).await.unwrap();
    let calls = server.take();
    assert_eq!(status_patch(&calls)["observedGeneration"], 2);
    assert_eq!(published(&topic, &name).await.unwrap().display_name, "Demo Client Ltd");

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
}

#[tokio::test]
async fn an_invalid_spec_is_not_published_and_the_status_says_why() {
    let (ctx, server, topic) = setup().await;
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
    // Deleting a tenant that never validated publishes nothing and just lets it go.
    let mut deleted = tenant(&name, &bad, 1, true);
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    controller::reconcile(Arc::new(deleted), ctx.clone()).await.unwrap();
    let calls = server.take();
    assert!(event_reasons(&calls).is_empty());
    assert!(calls.iter().any(|c| c.method == "PATCH"), "the finalizer is removed");
    assert!(published(&topic, &name).await.is_none());
}

#[tokio::test]
async fn a_broker_outage_fails_the_reconcile_for_a_retry() {
    let (client, server) = ApiServer::start();
    // Nothing listens there: the publish fails, the reconcile errors, the policy backs off.
    let producer = Producer::new("127.0.0.1:1", None).unwrap();
    let ctx = Arc::new(Context::new(client, producer, "nowhere.tenants".into()));
    let resource = tenant(&unique("down-"), SPEC, 1, true);
    server.set(&resource);
    let started = std::time::Instant::now();
    let result =
        tokio::time::timeout(Duration::from_secs(60), controller::reconcile(Arc::new(resource.clone()), ctx.clone()))
            .await;
    let err = result.expect("the publish gives up").expect_err("no broker");
    assert!(err.to_string().contains("finalizer") || err.to_string().contains("publish"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let first = controller::error_policy(Arc::new(resource.clone()), &err, ctx.clone());
    let second = controller::error_policy(Arc::new(resource), &err, ctx);
    assert_eq!((first, second), (Action::requeue(Duration::from_secs(5)), Action::requeue(Duration::from_secs(10))));
    assert!(server.take().iter().all(|c| !c.path.ends_with("/status")), "no status claims a publish that failed");
}
