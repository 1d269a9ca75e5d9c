//! The `reporting` service. It owns: Real-time metrics, interval history, SLA compliance and usage metering per tenant, Erlang C staffing.
//!
//! Hot state: in-process / Redis. Durable state: PostgreSQL (schema `reporting`).
//!
//! # Layout
//! - [`Config`]: flags and `CENTRALITA_*` environment of this service.
//! - [`run`]: wires the service onto the platform [`Runtime`]: its topics, stores and gRPC
//!   APIs. Every API sits behind the platform's authenticator; tests call `run` on port 0.
//!
//! What is served today is the platform part: gRPC health and reflection, the tenant
//! directory (`centralita.tenancy.v1.TenantService`) from the tenant set this replica
//! consumed, the admin port, and readiness of the dependencies below.

pub mod core;
pub mod erlang;

use centralita_platform::config::{PostgresAndRedis, ServiceArgs};
use centralita_platform::db::{Migration, Migrations, TENANCY_SQL};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;

pub const SERVICE: &str = "reporting";

/// The `reporting` schema. Version 1 installs the row-level-security helper every tenant-owned
/// table's policy uses; the service's own tables follow as new versions.
pub const MIGRATIONS: Migrations =
    Migrations { schema: "reporting", steps: &[Migration { version: 1, name: "tenancy", sql: TENANCY_SQL }] };

/// Flags and `CENTRALITA_*` environment: the common ones plus this service's own.
pub type Config = ServiceArgs<PostgresAndRedis>;

/// Runs the service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let topics = [runtime.topics.contacts(), runtime.topics.agents()];
    runtime.with_topics(&topics);
    let _db = runtime.postgres(&config.service.postgres, MIGRATIONS)?;
    let _redis = runtime.redis(&config.service.redis);
    runtime.serve(listeners, tonic::service::RoutesBuilder::default()).await
}

#[cfg(test)]
mod tests {
    use centralita_platform::config::*;

    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<PostgresAndRedis>(
            super::SERVICE,
            &["--database-url", "postgres://u@127.0.0.1/db", "--redis-url", "redis://127.0.0.1:6379"],
        );
    }
}
