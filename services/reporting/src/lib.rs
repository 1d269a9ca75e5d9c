//! The `reporting` service. It owns: Real-time metrics, interval history, SLA compliance and usage metering per tenant, Erlang C staffing.
//!
//! Hot state: in-process / Redis. Durable state: PostgreSQL (schema `reporting`).
//!
//! # Layout
//! - [`Config`]: flags and `CENTRALITA_*` environment of this service.
//! - [`run`]: wires the service onto the platform [`Runtime`]: its topics, stores and gRPC
//!   APIs. Every API sits behind the platform's authenticator; tests call `run` on port 0.
//! - [`core`]: the aggregation core, pure: contact facts folded into legs, counts and
//!   rollups by period and dimension, agent time from state spans.
//! - [`store`]: the schema and every query; the consumers that fold contact and agent
//!   events, each event once.
//! - [`api`]: the gRPC services `ReportingService` (real-time, wallboard, history, CSV, SLA,
//!   usage) and `StaffingService`.
//! - [`erasure`]: CRM's erasures: the erased customer's contacts' legs anonymised, the
//!   store reported done to the CRM.
//! - [`erlang`]: Erlang C.
//! - [`metrics`]: reporting's domain metrics (`centralita_reporting_*`), recorded by the
//!   consumers, the wallboard stream and the usage publisher.
//! - [`retention`]: the sweeper anonymising legs older than the tenant's
//!   `dataRetentionDays` (`CENTRALITA_REPORTING_SWEEP_INTERVAL`), figures kept.
//! - [`usage`]: publishes each tenant's usage per day on the usage topic.
//! - [`floor`]: each tenant queue's service level against its target, waiting contacts and
//!   agents by state as Prometheus gauges, from the real-time figures.
//!
//! # What it does
//! - Consumes the contacts topic ([`store::ContactEvents`]): each event, once, folds into
//!   the contact's queue legs in PostgreSQL ([`core`]); the event id is recorded in the same
//!   transaction, so redeliveries and replays change nothing.
//! - Serves `centralita.reporting.v1.ReportingService` (real-time figures, a wallboard
//!   stream, history by interval/hour/day/month in the tenant's time zone, CSV, SLA
//!   compliance) and `StaffingService` (Erlang C, [`erlang`]).

pub mod api;
pub mod core;
pub mod erasure;
pub mod erlang;
pub mod floor;
pub mod metrics;
pub mod retention;
pub mod store;
pub mod usage;

use centralita_platform::auth::Authenticated;
use centralita_platform::config::{parse_duration, ConfigError, PostgresConfig, RedisConfig, ServiceArgs, Validate};
use centralita_platform::db::{Migration, Migrations, TENANCY_SQL};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use centralita_proto::reporting::v1::reporting_service_server::ReportingServiceServer;
use centralita_proto::reporting::v1::staffing_service_server::StaffingServiceServer;

pub const SERVICE: &str = "reporting";

/// The `reporting` schema. Version 1 installs the row-level-security helper every tenant-owned
/// table's policy uses; the service's own tables follow as new versions.
pub const MIGRATIONS: Migrations = Migrations {
    schema: "reporting",
    steps: &[
        Migration { version: 1, name: "tenancy", sql: TENANCY_SQL },
        Migration { version: 2, name: "legs", sql: store::LEGS_SQL },
        Migration { version: 3, name: "agents", sql: store::AGENTS_SQL },
        Migration { version: 4, name: "usage", sql: store::USAGE_SQL },
        Migration { version: 5, name: "leg roles", sql: store::LEG_ROLE_SQL },
        Migration { version: 6, name: "channel names", sql: store::CHANNEL_NAME_SQL },
        Migration { version: 7, name: "retention", sql: store::RETENTION_SQL },
    ],
};

/// Reporting's own settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    #[command(flatten)]
    pub postgres: PostgresConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    /// How often the retention sweeper anonymises the legs older than each tenant's
    /// `dataRetentionDays` (see [`retention`]).
    #[arg(long = "sweep-interval", env = "CENTRALITA_REPORTING_SWEEP_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub sweep_interval: std::time::Duration,
}

impl Settings {
    /// `postgres` and `redis` with the default sweep interval (1 h).
    pub fn new(postgres: PostgresConfig, redis: RedisConfig) -> Self {
        Settings { postgres, redis, sweep_interval: std::time::Duration::from_secs(3600) }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.postgres.validate()?;
        self.redis.validate()?;
        if self.sweep_interval.is_zero() {
            return Err(ConfigError::new("CENTRALITA_REPORTING_SWEEP_INTERVAL", "must be more than zero"));
        }
        Ok(())
    }
}

/// Flags and `CENTRALITA_*` environment: the common ones plus [`Settings`].
pub type Config = ServiceArgs<Settings>;

/// Runs the service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let topics =
        [runtime.topics.contacts(), runtime.topics.agents(), runtime.topics.usage(), runtime.topics.customers()];
    runtime.with_topics(&topics);
    let pool = runtime.postgres(&config.service.postgres, MIGRATIONS)?;
    let _redis = runtime.redis(&config.service.redis);
    let prefix = &config.common.kafka.topic_prefix;
    let metrics = std::sync::Arc::new(metrics::Metrics::register(&runtime.metrics));
    let consumer = store::contact_consumer(
        &config.common.kafka.brokers,
        format!("{prefix}reporting.contacts"),
        runtime.topics.contacts(),
        config.common.kafka.group_instance_id.clone(),
        pool.clone(),
        metrics.clone(),
        Some(runtime.metrics.clone()),
    )?;
    let agents = store::agent_consumer(
        &config.common.kafka.brokers,
        format!("{prefix}reporting.agents"),
        runtime.topics.agents(),
        config.common.kafka.group_instance_id.as_ref().map(|id| format!("{id}-agents")),
        pool.clone(),
        metrics.clone(),
        Some(runtime.metrics.clone()),
    )?;
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = consumer.run(sd).await {
            tracing::error!(error = %e, "contact event consumer stopped");
        }
    });
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = agents.run(sd).await {
            tracing::error!(error = %e, "agent event consumer stopped");
        }
    });
    runtime.spawn(retention::run(
        pool.clone(),
        runtime.registry.clone(),
        metrics.clone(),
        config.service.sweep_interval,
        config.common.sweep_clock_offset,
        runtime.shutdown.clone(),
    ));
    let producer = std::sync::Arc::new(centralita_platform::bus::Producer::new(
        &config.common.kafka.brokers,
        Some(runtime.metrics.clone()),
    )?);
    // CRM's erasures: the erased customer's contacts' legs anonymised, the store reported.
    let erasures = centralita_platform::bus::Consumer::new(
        centralita_platform::bus::ConsumerSettings {
            brokers: config.common.kafka.brokers.clone(),
            group_id: format!("{prefix}reporting.erasures"),
            topics: vec![runtime.topics.customers()],
            fetch_wait: centralita_platform::bus::FETCH_WAIT_DEFAULT,
            group_instance_id: config.common.kafka.group_instance_id.as_ref().map(|id| format!("{id}-erasures")),
        },
        erasure::ErasureHandler {
            pool: pool.clone(),
            producer: producer.clone(),
            customers_topic: runtime.topics.customers(),
            metrics: metrics.clone(),
        },
        // The handler is idempotent (anonymised ids match nothing again): an in-process
        // memory of the last events only skips obvious replays.
        centralita_platform::bus::MemoryDedupe::new(1024),
        Some(runtime.metrics.clone()),
    )?;
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = erasures.run(sd).await {
            tracing::error!(error = %e, "customer erasure consumer stopped");
        }
    });
    let api = api::Api { pool, registry: runtime.registry.clone(), shutdown: runtime.shutdown.clone(), metrics };
    runtime.spawn(usage::publish_loop(api.clone(), producer, runtime.topics.usage(), runtime.shutdown.clone()));
    runtime.spawn(floor::export_loop(api.clone(), runtime.shutdown.clone()));
    runtime.with_health_name("centralita.reporting.v1.ReportingService");
    runtime.with_health_name("centralita.reporting.v1.StaffingService");
    let auth = runtime.authenticator.clone();
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(Authenticated::new(ReportingServiceServer::new(api), auth.clone()));
    routes.add_service(Authenticated::new(StaffingServiceServer::new(api::Staffing), auth));
    runtime.serve(listeners, routes).await
}

#[cfg(test)]
mod tests {
    use centralita_platform::config::Validate;
    use centralita_platform::server::parse_args;

    const REQUIRED: [&str; 4] =
        ["--database-url", "postgres://u@127.0.0.1/db", "--redis-url", "redis://127.0.0.1:6379"];

    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<super::Settings>(super::SERVICE, &REQUIRED);
    }

    #[test]
    fn the_sweep_interval_defaults_to_an_hour_and_cannot_be_zero() {
        let args = |extra: &[&str]| {
            let mut a = vec!["reporting", "--jwt-public-key-file", "/dev/null"];
            a.extend_from_slice(&REQUIRED);
            a.extend_from_slice(extra);
            parse_args::<super::Settings>(super::SERVICE, a).expect("flags parse")
        };
        assert_eq!(args(&[]).service.sweep_interval, std::time::Duration::from_secs(3600));
        assert_eq!(args(&["--sweep-interval", "5m"]).service.sweep_interval, std::time::Duration::from_secs(300));
        let zero = args(&["--sweep-interval", "0s"]).service.validate().expect_err("zero refused");
        assert!(zero.to_string().contains("CENTRALITA_REPORTING_SWEEP_INTERVAL"), "{zero}");
    }
}
