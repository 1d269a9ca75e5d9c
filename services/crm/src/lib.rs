//! The `crm` service. It owns: Customer profiles, identity resolution across channels, interaction timeline, consent and do-not-contact, notes and dispositions, GDPR export and erase.
//!
//! Hot state: none. Durable state: PostgreSQL (schema `crm`, row-level security per tenant).
//!
//! # Layout
//! - [`Config`]: flags and `CENTRALITA_*` environment of this service.
//! - [`run`]: wires the service onto the platform [`Runtime`]: its topics, stores and gRPC
//!   APIs. Every API sits behind the platform's authenticator; tests call `run` on port 0.
//!
//! What is served today is the platform part: gRPC health and reflection, the tenant
//! directory (`centralita.tenancy.v1.TenantService`) from the tenant set this replica
//! consumed, the admin port, and readiness of the dependencies below.

use centralita_platform::config::{PostgresConfig, ServiceArgs};
use centralita_platform::db::{Migration, Migrations, TENANCY_SQL};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;

pub const SERVICE: &str = "crm";

/// The `crm` schema. Version 1 installs the row-level-security helper every tenant-owned
/// table's policy uses; the service's own tables follow as new versions.
pub const MIGRATIONS: Migrations =
    Migrations { schema: "crm", steps: &[Migration { version: 1, name: "tenancy", sql: TENANCY_SQL }] };

/// Flags and `CENTRALITA_*` environment: the common ones plus this service's own.
pub type Config = ServiceArgs<PostgresConfig>;

/// Runs the service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let topics = [runtime.topics.contacts()];
    runtime.with_topics(&topics);
    let _db = runtime.postgres(&config.service, MIGRATIONS)?;
    runtime.serve(listeners, tonic::service::RoutesBuilder::default()).await
}

#[cfg(test)]
mod tests {
    use centralita_platform::config::*;

    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<PostgresConfig>(
            super::SERVICE,
            &["--database-url", "postgres://u@127.0.0.1/db"],
        );
    }
}
