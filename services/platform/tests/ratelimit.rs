//! The tenant API quota over replicas: two service runtimes in-process sharing the local
//! Redis admit one quota between them, not one each; a replica whose Redis is a closed
//! port still limits, per replica, and says so in `centralita_auth_rate_limiter_fallback`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use centralita_platform::auth::ratelimit::burst;
use centralita_platform::auth::{Role, Signer, TokenRequest};
use centralita_platform::bus::{ensure_topics, Event, Producer, TopicSpec, Topics};
use centralita_platform::config::{RedisConfig, Secret};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use centralita_proto::tenancy::v1 as pb;
use common::*;
use pb::tenant_service_client::TenantServiceClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt as _;

const RATE: u32 = 50;

fn token(tenant: Option<&str>, role: Role) -> String {
    Signer::from_file(&repo_file("deploy/local/dev-keys/jwt-ed25519.key"), "centralita", "centralita-api")
        .unwrap()
        .mint(&TokenRequest {
            subject: "tester".into(),
            tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
            roles: vec![role],
            agent_id: None,
            ttl: Duration::from_secs(600),
        })
        .unwrap()
}

fn get(tenant: &str, token: &str) -> tonic::Request<pb::GetTenantRequest> {
    let mut r = tonic::Request::new(pb::GetTenantRequest { name: format!("tenants/{tenant}") });
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Publishes tenants with quota [`RATE`] under a fresh prefix; returns the prefix and ids.
async fn tenants(stem: &str, n: usize) -> (String, Vec<String>) {
    let prefix = unique(&format!("test.{stem}.")) + ".";
    let topics = Topics::new(prefix.clone());
    ensure_topics(&brokers(), 1, &[TopicSpec { name: topics.tenants(), partitions: 1, compacted: true }])
        .await
        .unwrap();
    let producer = Producer::new(&brokers(), None).unwrap();
    let ids: Vec<String> = (0..n).map(|i| unique(&format!("{stem}{i}-"))).collect();
    for id in &ids {
        let t = tenant(id, RATE);
        let event = Event::new(t.id.clone(), &pb::Tenant::from(&t));
        producer.publish(&topics.tenants(), t.id.as_str(), &event).await.unwrap();
    }
    (prefix, ids)
}

struct Replica {
    client: TenantServiceClient<Channel>,
    admin: SocketAddr,
    shutdown: Shutdown,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn replica(prefix: &str, redis_url: &str) -> Replica {
    let shutdown = Shutdown::new();
    let listeners = Listeners::ephemeral().await.unwrap();
    let (grpc, admin) = (listeners.grpc_addr(), listeners.admin_addr());
    let mut runtime = Runtime::new("ratelimit-test", &config(prefix), shutdown.clone()).unwrap();
    let _redis = runtime.redis(&RedisConfig { url: Secret::new(redis_url.to_owned()) });
    let served = tokio::spawn(runtime.serve(listeners, tonic::service::RoutesBuilder::default()));
    let client = TenantServiceClient::new(Channel::from_shared(format!("http://{grpc}")).unwrap().connect_lazy());
    Replica { client, admin, shutdown, served }
}

impl Replica {
    /// Waits until the replica knows `tenant`, asking as a BPO admin (who has no quota).
    async fn knows(&self, tenant: &str) {
        let admin = token(None, Role::BpoAdmin);
        let known = eventually(Duration::from_secs(30), async || {
            self.client.clone().get_tenant(get(tenant, &admin)).await.is_ok()
        })
        .await;
        assert!(known, "the replica never learnt tenant {tenant}");
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(15), self.served).await.unwrap().unwrap().unwrap();
    }
}

/// Calls `GetTenant` as `tenant` from `workers` tasks per replica, back to back, for `window`;
/// returns the calls admitted and refused. Every refusal must be the quota's.
async fn hammer(replicas: &[&Replica], tenant: &str, workers: usize, window: Duration) -> (usize, usize) {
    let admitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let end = tokio::time::Instant::now() + window;
    let token = token(Some(tenant), Role::Supervisor);
    let mut tasks = tokio::task::JoinSet::new();
    for r in replicas {
        for _ in 0..workers {
            let (mut client, admitted, refused, token, tenant) =
                (r.client.clone(), admitted.clone(), refused.clone(), token.clone(), tenant.to_owned());
            tasks.spawn(async move {
                while tokio::time::Instant::now() < end {
                    match client.get_tenant(get(&tenant, &token)).await {
                        Ok(_) => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(s) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                            let reason = s.get_error_details().error_info().map(|i| i.reason.clone());
                            assert_eq!(reason.as_deref(), Some("TENANT_RATE_LIMITED"), "{s:?}");
                        }
                    }
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    (admitted.load(Ordering::Relaxed), refused.load(Ordering::Relaxed))
}

/// Asserts that `admitted` calls over `took` seconds kept to the quota (its rate plus one
/// burst, and a call of slack), and that the limiter did not refuse below it: at least 90%
/// of the quota when the calls offered exceeded it (a busy machine may offer fewer: tests
/// share two cores with builds).
fn within_quota(admitted: usize, refused: usize, took: f64) -> f64 {
    let most = f64::from(RATE) * took + f64::from(burst(RATE));
    assert!(admitted as f64 <= most + 1.0, "{admitted} admitted in {took:.2} s, more than {most:.0}");
    let least = (0.9 * f64::from(RATE) * took).min(0.9 * (admitted + refused) as f64);
    assert!(admitted as f64 >= least, "{admitted} of {} admitted in {took:.2} s", admitted + refused);
    most
}

/// The tests here measure rates: one at a time, so they do not take each other's CPU.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A bare HTTP/1.1 GET (the admin port).
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_quota_per_tenant() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (prefix, ids) = tenants("rl", 2).await;
    let (busy, other) = (&ids[0], &ids[1]);
    let (a, b) = (replica(&prefix, &redis_url()).await, replica(&prefix, &redis_url()).await);
    for r in [&a, &b] {
        r.knows(busy).await;
        r.knows(other).await;
        assert!(
            eventually(Duration::from_secs(30), async || http_get(r.admin, "/readyz")
                .await
                .starts_with("HTTP/1.1 200"))
            .await
        );
    }

    // The busy tenant floods both replicas for 2 s while the other calls 20 times a second.
    let window = Duration::from_secs(2);
    let other_token = token(Some(other), Role::Supervisor);
    let mut other_client = b.client.clone();
    let other_id = other.clone();
    let steady = tokio::spawn(async move {
        let mut codes = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for _ in 0..40 {
            tick.tick().await;
            codes.push(other_client.get_tenant(get(&other_id, &other_token)).await.map(|_| ()).map_err(|s| s.code()));
        }
        codes
    });
    let started = std::time::Instant::now();
    let (admitted, refused) = hammer(&[&a, &b], busy, 4, window).await;
    let took = started.elapsed().as_secs_f64();
    let others = steady.await.unwrap();

    // One quota over both: the rate over the window plus one burst, where per-replica
    // quotas would have admitted twice that.
    eprintln!(
        "quota {RATE}/s, burst {}, two replicas for {took:.2} s: {admitted} admitted, {refused} refused \
         (quota over the window plus burst: {:.0}; per-replica quotas would allow {:.0})",
        burst(RATE),
        f64::from(RATE) * took + f64::from(burst(RATE)),
        2.0 * (f64::from(RATE) * took + f64::from(burst(RATE)))
    );
    within_quota(admitted, refused, took);
    assert!(refused > 0, "the flood was never refused");
    assert!(others.iter().all(Result::is_ok), "the other tenant was refused: {others:?}");

    let metrics = http_get(a.admin, "/metrics").await;
    assert!(metrics.contains("centralita_auth_rate_limiter_fallback{service=\"ratelimit-test\"} 0"), "{metrics}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_falls_back_to_the_replica_limit() {
    let _one = ONE_AT_A_TIME.lock().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (prefix, ids) = tenants("rlf", 1).await;
    let r = replica(&prefix, &format!("redis://127.0.0.1:{closed}")).await;
    r.knows(&ids[0]).await;

    let window = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let (admitted, refused) = hammer(&[&r], &ids[0], 4, window).await;
    let took = started.elapsed().as_secs_f64();
    let most = within_quota(admitted, refused, took);
    eprintln!(
        "Redis unreachable, quota {RATE}/s for {took:.2} s: {admitted} admitted, {refused} refused (at most {most:.0})"
    );
    assert!(refused > 0, "the flood was never refused");

    let metrics = http_get(r.admin, "/metrics").await;
    assert!(metrics.contains("centralita_auth_rate_limiter_fallback{service=\"ratelimit-test\"} 1"), "{metrics}");
    assert!(
        metrics.contains("centralita_dependency_up{service=\"ratelimit-test\",dependency=\"redis\"} 0"),
        "{metrics}"
    );
    r.stop().await;
}
