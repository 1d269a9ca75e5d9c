//! The `recording` service (`centralita-recording`). It is to own call audio and chat
//! transcripts: per-tenant envelope encryption, pause and resume (the tenant's recording
//! policy), retention and legal hold, playback, with the media in object storage and the
//! metadata in PostgreSQL. None of that is built yet: today the crate owns only its
//! PostgreSQL schema, still empty, and runs what every service runs.
//!
//! # What runs today
//! - gRPC: health and reflection, and the tenant directory
//!   (`centralita.tenancy.v1.TenantService`) from the tenant set this replica consumed from
//!   the tenants topic;
//! - the admin port: `/livez`, `/readyz`, `/metrics` (the platform's metrics only);
//! - PostgreSQL schema `recording`, migrated in the background: [`MIGRATIONS`] holds only
//!   version 1, the row-level-security helper every tenant-owned table will use;
//! - readiness: Kafka (the contacts topic is created at start-up if missing), PostgreSQL
//!   (migrated and answering) and the tenant set. No Redis, no object storage yet.
//!
//! # Layout
//! - `lib.rs`: [`SERVICE`], [`MIGRATIONS`], [`Config`] (the common flags plus
//!   `CENTRALITA_DATABASE_URL` and `CENTRALITA_DATABASE_POOL_SIZE`) and [`run`], which starts
//!   the platform [`Runtime`] with the contacts topic, the PostgreSQL pool and no gRPC
//!   routes of its own; a unit test checks the configuration contract.
//! - `main.rs`: the thin `main`, `centralita_platform::server::main_with`.

use centralita_platform::config::{PostgresConfig, ServiceArgs};
use centralita_platform::db::{Migration, Migrations, TENANCY_SQL};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;

pub const SERVICE: &str = "recording";

/// The `recording` schema. Version 1 installs the row-level-security helper every tenant-owned
/// table's policy uses; the service's own tables follow as new versions.
pub const MIGRATIONS: Migrations =
    Migrations { schema: "recording", steps: &[Migration { version: 1, name: "tenancy", sql: TENANCY_SQL }] };

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
