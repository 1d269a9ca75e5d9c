//! A service runtime in-process on ephemeral ports, against the real broker: tenants flow
//! from the topic into the registry; every call is authenticated and tenant-scoped; refused
//! calls log no token material; shutdown turns health NOT_SERVING and returns.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_platform::auth::{Role, Signer, TokenRequest};
use centralita_platform::bus::{ensure_topics, Event, Producer, TopicSpec, Topics};
use centralita_platform::config::CommonConfig;
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{Tenant, TenantId, TenantStatus};
use centralita_proto::tenancy::v1 as pb;
use common::*;
use pb::tenant_service_client::TenantServiceClient;
use tonic::transport::Channel;
use tonic::Code;

/// Everything the process logged, for the no-token-material check.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config(prefix: &str) -> CommonConfig {
    let mut c = common::config(prefix);
    c.kafka.partitions = 2;
    c.telemetry.log_filter = "info".into();
    c
}

fn signer() -> Signer {
    Signer::from_file(&repo_file("deploy/local/dev-keys/jwt-ed25519.key"), "centralita", "centralita-api").unwrap()
}

fn token(tenant: Option<&str>, role: Role) -> String {
    signer()
        .mint(&TokenRequest {
            subject: "tester".into(),
            tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
            roles: vec![role],
            agent_id: (role == Role::Agent).then(|| "agent-7".into()),
            ttl: Duration::from_secs(600),
        })
        .unwrap()
}

fn req<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn get(name: &str, token: &str) -> tonic::Request<pb::GetTenantRequest> {
    req(pb::GetTenantRequest { name: name.into() }, token)
}

async fn publish(producer: &Producer, topics: &Topics, t: &Tenant) {
    producer.publish(&topics.tenants(), t.id.as_str(), &Event::new(t.id.clone(), &pb::Tenant::from(t))).await.unwrap();
}

async fn code(client: &mut TenantServiceClient<Channel>, r: tonic::Request<pb::GetTenantRequest>) -> Code {
    match client.get_tenant(r).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenancy_auth_and_shutdown_over_grpc() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing_subscriber::fmt().json().with_writer(move || writer.clone()).with_max_level(tracing::Level::DEBUG).init();

    let prefix = unique("test.rt.") + ".";
    let topics = Topics::new(prefix.clone());
    ensure_topics(&brokers(), 1, &[TopicSpec { name: topics.tenants(), partitions: 1, compacted: true }])
        .await
        .unwrap();
    let producer = Producer::new(&brokers(), None).unwrap();
    publish(&producer, &topics, &tenant("acme", 1000)).await;
    publish(&producer, &topics, &tenant("globex", 1000)).await;
    publish(&producer, &topics, &tenant("tiny", 1)).await;

    let shutdown = Shutdown::new();
    let listeners = Listeners::ephemeral().await.unwrap();
    let (grpc, admin) = (listeners.grpc_addr(), listeners.admin_addr());
    let runtime = Runtime::new("test", &config(&prefix), shutdown.clone()).unwrap();
    let served = tokio::spawn(runtime.serve(listeners, tonic::service::RoutesBuilder::default()));

    let channel = Channel::from_shared(format!("http://{grpc}")).unwrap().connect_lazy();
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = async || {
        health
            .clone()
            .check(tonic_health::pb::HealthCheckRequest { service: "centralita.tenancy.v1.TenantService".into() })
            .await
            .map(|r| r.into_inner().status() == tonic_health::pb::health_check_response::ServingStatus::Serving)
            .unwrap_or(false)
    };
    assert!(eventually(Duration::from_secs(30), serving).await, "runtime never became SERVING");
    let readyz = reqwest_lite(admin, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");

    let mut client = TenantServiceClient::new(channel.clone());
    let acme_agent = token(Some("acme"), Role::Agent);

    // Own tenant: visible. Another tenant: refused, even by exact name.
    let t = client.get_tenant(get("tenants/acme", &acme_agent)).await.unwrap().into_inner();
    assert_eq!(t.display_name, "acme Inc");
    assert_eq!(t.business_hours.unwrap().time_zone, "America/New_York");
    assert_eq!(code(&mut client, get("tenants/globex", &acme_agent)).await, Code::PermissionDenied);
    let listed = client.list_tenants(req(pb::ListTenantsRequest::default(), &acme_agent)).await.unwrap().into_inner();
    assert_eq!(listed.tenants.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["tenants/acme"]);

    // A BPO admin sees every tenant, page by page.
    let admin_token = token(None, Role::BpoAdmin);
    let page1 = client
        .list_tenants(req(pb::ListTenantsRequest { page_size: 2, page_token: String::new() }, &admin_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page1.tenants.len(), 2);
    let page2 = client
        .list_tenants(req(pb::ListTenantsRequest { page_size: 2, page_token: page1.next_page_token }, &admin_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.tenants.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["tenants/tiny"]);
    assert!(page2.next_page_token.is_empty());
    let bad = client
        .list_tenants(req(pb::ListTenantsRequest { page_size: -1, page_token: String::new() }, &admin_token))
        .await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
    let bad = client.get_tenant(get("acme", &admin_token)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("name"), "{}", bad.message());

    // Refusals: expired, wrongly signed, missing, unknown tenant.
    let expired = signer()
        .mint_at(
            &TokenRequest {
                subject: "old".into(),
                tenant: Some(TenantId::parse("acme").unwrap()),
                roles: vec![Role::Supervisor],
                agent_id: None,
                ttl: Duration::from_secs(60),
            },
            chrono::Utc::now().timestamp() - 3600,
        )
        .unwrap();
    let forged = Signer::from_file(
        &repo_file("services/platform/tests/fixtures/other-ed25519.key"),
        "centralita",
        "centralita-api",
    )
    .unwrap()
    .mint(&TokenRequest {
        subject: "mallory".into(),
        tenant: None,
        roles: vec![Role::BpoAdmin],
        agent_id: None,
        ttl: Duration::from_secs(600),
    })
    .unwrap();
    assert_eq!(code(&mut client, get("tenants/acme", &expired)).await, Code::Unauthenticated);
    assert_eq!(code(&mut client, get("tenants/acme", &forged)).await, Code::Unauthenticated);
    assert_eq!(
        code(&mut client, tonic::Request::new(pb::GetTenantRequest { name: "tenants/acme".into() })).await,
        Code::Unauthenticated
    );
    let unknown = token(Some("initech"), Role::TenantAdmin);
    let status = client.get_tenant(get("tenants/initech", &unknown)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("not onboarded"), "{}", status.message());

    // API rate quota: 1 request/s with a burst of 5 (`auth::ratelimit::burst`).
    let tiny = token(Some("tiny"), Role::Supervisor);
    let codes: Vec<Code> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(code(&mut client, get("tenants/tiny", &tiny)).await);
        }
        v
    };
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");

    // Suspending a tenant on the topic reaches the running service.
    let mut globex = tenant("globex", 1000);
    globex.status = TenantStatus::Suspended;
    globex.updated_at = chrono::Utc::now();
    publish(&producer, &topics, &globex).await;
    let globex_token = token(Some("globex"), Role::Supervisor);
    assert!(
        eventually(Duration::from_secs(20), async || code(&mut client.clone(), get("tenants/globex", &globex_token))
            .await
            == Code::PermissionDenied)
        .await
    );
    let status = client.get_tenant(get("tenants/globex", &globex_token)).await.unwrap_err();
    assert!(status.message().contains("suspended"), "{}", status.message());

    // Every call is counted by method and code, and timed (the RED metrics of the chart's
    // dashboards and alerts); a made-up method is counted as `unknown`, not by its name.
    let _ = health.clone().check(tonic_health::pb::HealthCheckRequest { service: "no.such.Api".into() }).await;
    let refused = call_made_up_method(tonic::client::Grpc::new(channel.clone()), None).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    let unimplemented = call_made_up_method(tonic::client::Grpc::new(channel.clone()), Some(&admin_token)).await;
    assert_eq!(unimplemented.unwrap_err().code(), Code::Unimplemented);
    let metrics = reqwest_lite(admin, "/metrics").await;
    let handled = |labels: &str| {
        let series = format!("centralita_grpc_server_handled_total{{service=\"test\",{labels}}} ");
        metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|v| v.parse::<u64>().ok())
    };
    let tenants = "grpc_service=\"centralita.tenancy.v1.TenantService\"";
    assert!(handled(&format!("{tenants},grpc_method=\"GetTenant\",grpc_code=\"OK\"")) >= Some(1), "{metrics}");
    assert!(
        handled(&format!("{tenants},grpc_method=\"GetTenant\",grpc_code=\"PermissionDenied\"")) >= Some(2),
        "{metrics}"
    );
    assert!(
        handled(&format!("{tenants},grpc_method=\"GetTenant\",grpc_code=\"Unauthenticated\"")) >= Some(3),
        "{metrics}"
    );
    assert!(
        handled(&format!("{tenants},grpc_method=\"GetTenant\",grpc_code=\"ResourceExhausted\"")) >= Some(1),
        "{metrics}"
    );
    assert!(
        handled(&format!("{tenants},grpc_method=\"ListTenants\",grpc_code=\"InvalidArgument\"")) == Some(1),
        "{metrics}"
    );
    let health_api = "grpc_service=\"grpc.health.v1.Health\",grpc_method=\"Check\"";
    assert!(handled(&format!("{health_api},grpc_code=\"NotFound\"")) == Some(1), "{metrics}");
    let made_up = "grpc_service=\"unknown\",grpc_method=\"unknown\"";
    assert!(handled(&format!("{made_up},grpc_code=\"Unauthenticated\"")) == Some(1), "{metrics}");
    assert!(handled(&format!("{made_up},grpc_code=\"Unimplemented\"")) == Some(1), "{metrics}");
    assert!(!metrics.contains("MadeUp"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "centralita_grpc_server_handling_seconds_count{{service=\"test\",{tenants},grpc_method=\"ListTenants\"}} 4"
        )),
        "{metrics}"
    );

    // No token material in anything logged.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("call refused by authentication"), "refusals are logged");
    for t in [&expired, &forged, &unknown, &acme_agent, &admin_token] {
        for part in t.split('.') {
            assert!(!text.contains(part), "token material in logs");
        }
    }

    // Shutdown: NOT_SERVING (or gone), then the runtime returns.
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(15), served).await.unwrap().unwrap().unwrap();
    assert!(!serving().await);
}

/// A unary call to a method no service has, as a scanner or a newer client would make.
async fn call_made_up_method(mut grpc: tonic::client::Grpc<Channel>, token: Option<&str>) -> Result<(), tonic::Status> {
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/centralita.tenancy.v1.TenantService/MadeUp");
    let codec = tonic_prost::ProstCodec::<pb::GetTenantRequest, pb::Tenant>::default();
    let request = match token {
        Some(t) => req(pb::GetTenantRequest::default(), t),
        None => tonic::Request::new(pb::GetTenantRequest::default()),
    };
    grpc.unary(request, path, codec).await.map(|_| ())
}

/// A bare HTTP/1.1 GET (the admin port), without pulling an HTTP client into the build.
async fn reqwest_lite(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
