//! Shared helpers of the integration tests. They run against the local stack started by
//! `deploy/local/stack.sh up` (real Redis, PostgreSQL and the Kafka-protocol broker on
//! loopback); every test uses its own topic prefix, group ids and key space, so tests can
//! run in parallel and be re-run on the same stack.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use centralita_platform::config::{AuthConfig, CommonConfig, KafkaConfig, LogFormat, TelemetryConfig};
use centralita_platform::tenant::{Tenant, TenantManifest};

pub fn brokers() -> String {
    std::env::var("CENTRALITA_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn redis_url() -> String {
    std::env::var("CENTRALITA_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".into())
}

/// The test database (not the one the local platform runs on).
pub fn database_url() -> String {
    std::env::var("CENTRALITA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://centralita:centralita@127.0.0.1:5440/centralita_test".into())
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

pub fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

pub fn tenant(id: &str, rps: u32) -> Tenant {
    let text = format!(
        r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  displayName: {id} Inc
  channels: [voice, chat]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 10, apiRequestsPerSecond: {rps} }}
  businessHours: {{ timeZone: America/New_York }}
  dataRetentionDays: 30
  recording: {{ voice: all }}
"#
    );
    TenantManifest::parse_all(&text, chrono::Utc::now()).unwrap().remove(0)
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The common configuration of a test runtime on ephemeral ports under `prefix`.
pub fn config(prefix: &str) -> CommonConfig {
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
