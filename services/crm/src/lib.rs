//! The `crm` service. It owns: customer profiles, identity resolution across channels,
//! interaction timeline, value tier, consent and do-not-contact, notes and answers, GDPR
//! export and erase.
//!
//! Hot state: none. Durable state: PostgreSQL (schema `crm`, row-level security per tenant).
//!
//! # Layout
//! - [`Config`]: flags and `CENTRALITA_*` environment of this service.
//! - [`run`]: wires the service onto the platform [`Runtime`]: its topics, stores and gRPC
//!   APIs. Every API sits behind the platform's authenticator; tests call `run` on port 0.
//! - [`store`]: the schema and every query, one transaction per call with the tenant set for
//!   row-level security.
//! - [`events`]: the contacts topic folded into interactions, each event once.
//! - [`erasures`]: other services' reports that they erased an erasure's contacts from
//!   their store (`StoreErased` on the customers topic), recorded on the erasure.
//! - [`api`]: the gRPC service `centralita.crm.v1.CustomerService`.
//! - [`metrics`]: the CRM's domain metrics (`centralita_crm_*`), recorded by the API and the
//!   contact-event consumer.
//! - [`relay`]: publishes the events the API queued in the outbox table (erasures), so an
//!   accepted erasure is announced even if the broker is down at that moment.

pub mod api;
pub mod erasures;
pub mod events;
pub mod metrics;
pub mod store;

use std::sync::Arc;

use centralita_platform::auth::Authenticated;
use centralita_platform::bus::Producer;
use centralita_platform::config::{PostgresConfig, ServiceArgs};
use centralita_platform::db::{self, Migration, Migrations, TENANCY_SQL};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use centralita_proto::crm::v1::customer_service_server::CustomerServiceServer;
use tokio::sync::{watch, Notify};

pub const SERVICE: &str = "crm";

/// The `crm` schema.
pub const MIGRATIONS: Migrations = Migrations {
    schema: "crm",
    steps: &[
        Migration { version: 1, name: "tenancy", sql: TENANCY_SQL },
        Migration { version: 2, name: "customers", sql: store::CUSTOMERS_SQL },
        Migration { version: 3, name: "erasure_stores", sql: store::ERASURE_STORES_SQL },
    ],
};

/// Flags and `CENTRALITA_*` environment: the common ones plus this service's own.
pub type Config = ServiceArgs<PostgresConfig>;

/// Runs the service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let topics = [runtime.topics.contacts(), runtime.topics.customers()];
    runtime.with_topics(&topics);
    let pool = runtime.postgres(&config.service, MIGRATIONS)?;
    let metrics = Arc::new(metrics::Metrics::register(&runtime.metrics));
    let (applied_tx, applied) = watch::channel(0u64);
    let prefix = &config.common.kafka.topic_prefix;
    let consumer = events::consumer(
        &config.common.kafka.brokers,
        format!("{prefix}crm.contacts"),
        runtime.topics.contacts(),
        config.common.kafka.group_instance_id.clone(),
        events::ContactEvents { pool: pool.clone(), applied: Arc::new(applied_tx), metrics: metrics.clone() },
        Some(runtime.metrics.clone()),
    )?;
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = consumer.run(sd).await {
            tracing::error!(error = %e, "contact event consumer stopped");
        }
    });
    let reports = erasures::consumer(
        &config.common.kafka.brokers,
        format!("{prefix}crm.erasures"),
        runtime.topics.customers(),
        // One static member id per consumer of the process (the contact consumer has the
        // replica's own).
        config.common.kafka.group_instance_id.as_ref().map(|id| format!("{id}-erasures")),
        erasures::StoreReports { pool: pool.clone() },
        Some(runtime.metrics.clone()),
    )?;
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = reports.run(sd).await {
            tracing::error!(error = %e, "store erasure report consumer stopped");
        }
    });
    let outbox = Arc::new(Notify::new());
    let producer = Producer::new(&config.common.kafka.brokers, Some(runtime.metrics.clone()))?;
    let relay = db::outbox::relay(
        pool.clone(),
        producer,
        runtime.topics.clone(),
        outbox.clone(),
        runtime.shutdown.clone(),
        "crm",
    );
    runtime.spawn(relay);
    runtime.with_health_name("centralita.crm.v1.CustomerService");
    let api = api::Api { pool, applied, outbox, metrics };
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(Authenticated::new(CustomerServiceServer::new(api), runtime.authenticator.clone()));
    runtime.serve(listeners, routes).await
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
