//! Helpers for the services' integration tests: configuration pointing at the local stack
//! (`deploy/local/env.sh` exports the same defaults), tokens from the development key,
//! unique names so tests run side by side, and readiness polling.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{Role, Signer, TokenRequest};
use crate::bus::{ensure_topics, Event, Producer, TopicSpec, Topics};
use crate::config::{
    AuthConfig, CommonConfig, KafkaConfig, LogFormat, PostgresConfig, RedisConfig, Secret, TelemetryConfig,
};
use crate::tenant::{TenantId, TenantManifest};

/// `name` from the environment, or `default`.
pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

/// A file of the repository, from any crate under `services/`.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// `prefix` plus a short unique suffix (lower-case hex).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::now_v7().simple().to_string()[20..])
}

pub fn brokers() -> String {
    env("CENTRALITA_KAFKA_BROKERS", "127.0.0.1:9092")
}

/// Common configuration on ephemeral ports with the given topic prefix.
pub fn common(prefix: &str) -> CommonConfig {
    CommonConfig {
        grpc_addr: ([127, 0, 0, 1], 0).into(),
        admin_addr: ([127, 0, 0, 1], 0).into(),
        shutdown_timeout: Duration::from_secs(5),
        sweep_clock_offset: Duration::ZERO,
        kafka: KafkaConfig {
            brokers: brokers(),
            topic_prefix: prefix.into(),
            partitions: 1,
            replication_factor: 1,
            group_instance_id: None,
            fetch_wait_low_latency_ms: 2,
            readiness_grace: Duration::from_secs(120),
            stuck_group_timeout: Duration::from_secs(180),
            retention: Duration::from_secs(7 * 86_400),
        },
        auth: AuthConfig {
            public_key_file: repo_file("deploy/local/dev-keys/jwt-ed25519.pub"),
            issuer: "centralita".into(),
            audience: "centralita-api".into(),
            idp: Default::default(),
        },
        telemetry: TelemetryConfig {
            log_format: LogFormat::Json,
            log_filter: "warn".into(),
            trace_filter: "info".into(),
        },
        grpc_web: Default::default(),
        tls: Default::default(),
    }
}

pub fn redis() -> RedisConfig {
    RedisConfig { url: Secret::new(env("CENTRALITA_REDIS_URL", "redis://127.0.0.1:6390")) }
}

pub fn postgres() -> PostgresConfig {
    PostgresConfig {
        url: Secret::new(env("CENTRALITA_DATABASE_URL", "postgres://centralita:centralita@127.0.0.1:5440/centralita")),
        pool_size: 4,
    }
}

/// A token signed with the development key.
///
/// # Panics
/// When the development key is missing or the tenant id is invalid (test setup errors).
pub fn token(tenant: Option<&str>, role: Role, agent: Option<&str>) -> String {
    #[allow(clippy::expect_used)]
    Signer::from_file(&repo_file("deploy/local/dev-keys/jwt-ed25519.key"), "centralita", "centralita-api")
        .expect("development signing key")
        .mint(&TokenRequest {
            subject: "tester".into(),
            tenant: tenant.map(|t| TenantId::parse(t).expect("valid tenant id")),
            roles: vec![role],
            agent_id: agent.map(Into::into),
            ttl: Duration::from_secs(600),
        })
        .expect("token")
}

/// `msg` with a bearer token.
///
/// # Panics
/// Never for tokens minted by [`token`].
pub fn request<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    #[allow(clippy::expect_used)]
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii header"));
    r
}

/// A fresh topic prefix (`<stem>…`) with two new tenants (`<stem>a-…`, `<stem>b-…`)
/// published from `manifest(id)`, and the event topics `event_topics` names created, each
/// with 3 partitions: the start of a service's integration test.
///
/// # Panics
/// When a manifest is invalid or the broker refuses (test setup errors).
#[allow(clippy::expect_used)]
pub async fn two_tenants(
    stem: &str,
    manifest: impl Fn(&str) -> String,
    event_topics: impl FnOnce(&Topics) -> Vec<String>,
) -> (String, Topics, [String; 2]) {
    let prefix = unique(stem) + ".";
    let topics = Topics::new(prefix.clone());
    let tenants = [unique(&format!("{stem}a-")), unique(&format!("{stem}b-"))];
    publish_tenants(&topics, &tenants.iter().map(|t| manifest(t)).collect::<Vec<_>>()).await;
    let specs: Vec<TopicSpec> =
        event_topics(&topics).into_iter().map(|name| TopicSpec { name, partitions: 3, compacted: false }).collect();
    ensure_topics(&brokers(), 1, &specs).await.expect("event topics");
    (prefix, topics, tenants)
}

/// Creates the tenants topic of `topics` and publishes each manifest on it.
///
/// # Panics
/// When a manifest is invalid or the broker refuses (test setup errors).
#[allow(clippy::expect_used)]
pub async fn publish_tenants(topics: &Topics, manifests: &[String]) {
    let brokers = brokers();
    ensure_topics(&brokers, 1, &[TopicSpec { name: topics.tenants(), partitions: 1, compacted: true }])
        .await
        .expect("tenants topic");
    let producer = Producer::new(&brokers, None).expect("producer");
    for yaml in manifests {
        for t in TenantManifest::parse_all(yaml, chrono::Utc::now()).expect("valid manifest") {
            let event = Event::new(t.id.clone(), &centralita_proto::tenancy::v1::Tenant::from(&t));
            producer.publish(&topics.tenants(), t.id.as_str(), &event).await.expect("tenant published");
        }
    }
}

/// Polls `/readyz` on the admin port until it answers 200 (up to 30 s).
pub async fn wait_ready(admin: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..300 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            if buf.starts_with(b"HTTP/1.1 200") {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs `f` on this thread under a subscriber that builds OpenTelemetry spans, inside a span
/// continuing the W3C `traceparent` given: for tests of what keeps or carries trace context.
pub fn in_trace<R>(traceparent: &str, f: impl FnOnce() -> R) -> R {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("test");
        crate::telemetry::set_parent_from(&span, [("traceparent", traceparent)].into_iter());
        span.in_scope(f)
    })
}
