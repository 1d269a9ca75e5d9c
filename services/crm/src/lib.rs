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
//! - [`sessions`]: reads sessions' contact records for what the events do not carry (the
//!   customer's identities, wrap-up notes), with the CRM's own tenant tokens.
//! - [`erasures`]: other services' reports that they erased an erasure's contacts from
//!   their store (`StoreErased` on the customers topic), recorded on the erasure.
//! - [`api`]: the gRPC service `centralita.crm.v1.CustomerService`.
//! - [`metrics`]: the CRM's domain metrics (`centralita_crm_*`), recorded by the API and the
//!   contact-event consumer.
//! - [`retention`]: the sweeper deleting what is older than the tenant's
//!   `dataRetentionDays` (`CENTRALITA_CRM_SWEEP_INTERVAL`): the policy per table is there.
//! - [`relay`]: publishes the events the API queued in the outbox table (erasures), so an
//!   accepted erasure is announced even if the broker is down at that moment.

pub mod api;
pub mod erasures;
pub mod events;
pub mod metrics;
pub mod retention;
pub mod sessions;
pub mod store;

use std::sync::Arc;

use centralita_platform::auth::Authenticated;
use centralita_platform::bus::Producer;
use centralita_platform::config::{parse_duration, ConfigError, PostgresConfig, ServiceArgs, Validate};
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
        Migration { version: 4, name: "retention", sql: store::RETENTION_SQL },
    ],
};

/// The CRM's own settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    #[command(flatten)]
    pub postgres: PostgresConfig,
    /// How often the retention sweeper deletes what is older than each tenant's
    /// `dataRetentionDays` (see [`retention`]).
    #[arg(long = "sweep-interval", env = "CENTRALITA_CRM_SWEEP_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub sweep_interval: std::time::Duration,
    /// Sessions' gRPC endpoint (`http://host:port`): the subject access export includes
    /// the customer's contact records from it. Unset: the export says `not_configured`.
    #[arg(long = "sessions-endpoint", env = "CENTRALITA_SESSIONS_ENDPOINT")]
    pub sessions_endpoint: Option<String>,
    /// Media's gRPC endpoint: the export includes the customer's conversations.
    #[arg(long = "media-endpoint", env = "CENTRALITA_MEDIA_ENDPOINT")]
    pub media_endpoint: Option<String>,
    /// Recording's gRPC endpoint: the export includes the customer's recordings.
    #[arg(long = "recording-endpoint", env = "CENTRALITA_RECORDING_ENDPOINT")]
    pub recording_endpoint: Option<String>,
    /// PEM file with the Ed25519 private key the CRM signs its own tenant tokens for
    /// sessions with: with `CENTRALITA_SESSIONS_ENDPOINT`, contacts are linked to customers
    /// from sessions' records (see [`sessions`]). Without either, contacts are not linked
    /// and wrap-up notes are not kept (a warning at start says so).
    #[arg(long = "jwt-private-key-file", env = "CENTRALITA_JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<std::path::PathBuf>,
}

impl Settings {
    /// `postgres` with the default sweep interval (1 h).
    pub fn new(postgres: PostgresConfig) -> Self {
        Settings {
            postgres,
            sweep_interval: std::time::Duration::from_secs(3600),
            sessions_endpoint: None,
            media_endpoint: None,
            recording_endpoint: None,
            jwt_private_key_file: None,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.postgres.validate()?;
        if self.sweep_interval.is_zero() {
            return Err(ConfigError::new("CENTRALITA_CRM_SWEEP_INTERVAL", "must be more than zero"));
        }
        for (setting, url) in [
            ("CENTRALITA_SESSIONS_ENDPOINT", &self.sessions_endpoint),
            ("CENTRALITA_MEDIA_ENDPOINT", &self.media_endpoint),
            ("CENTRALITA_RECORDING_ENDPOINT", &self.recording_endpoint),
        ] {
            if let Some(u) = url {
                let ok = (u.starts_with("http://") || u.starts_with("https://"))
                    && tonic::transport::Endpoint::from_shared(u.clone()).is_ok();
                if !ok {
                    return Err(ConfigError::new(setting, "must be an http:// or https:// URL"));
                }
            }
        }
        Ok(())
    }
}

/// Flags and `CENTRALITA_*` environment: the common ones plus [`Settings`].
pub type Config = ServiceArgs<Settings>;

/// The reader of sessions' contact records, when both its endpoint and the signing key are
/// set.
fn contact_reader(
    config: &Config,
    tls: Option<&Arc<centralita_platform::tls::Tls>>,
) -> Result<Option<Arc<sessions::ContactReader>>, ConfigError> {
    let s = &config.service;
    let (Some(endpoint), Some(key)) = (&s.sessions_endpoint, &s.jwt_private_key_file) else {
        tracing::warn!(
            "CENTRALITA_SESSIONS_ENDPOINT or CENTRALITA_JWT_PRIVATE_KEY_FILE is not set: contacts are not linked to customers and wrap-up notes are not kept"
        );
        return Ok(None);
    };
    let auth = &config.common.auth;
    let signer = centralita_platform::auth::Signer::from_file(key, &auth.issuer, &auth.audience)
        .map_err(|m| ConfigError::new("CENTRALITA_JWT_PRIVATE_KEY_FILE", m))?;
    let reader = sessions::ContactReader::new(endpoint, tls, signer)
        .map_err(|m| ConfigError::new("CENTRALITA_SESSIONS_ENDPOINT", m))?;
    Ok(Some(Arc::new(reader)))
}

/// Runs the service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let topics = [runtime.topics.contacts(), runtime.topics.customers()];
    runtime.with_topics(&topics);
    let pool = runtime.postgres(&config.service.postgres, MIGRATIONS)?;
    let metrics = Arc::new(metrics::Metrics::register(&runtime.metrics));
    let (applied_tx, applied) = watch::channel(0u64);
    let prefix = &config.common.kafka.topic_prefix;
    let sessions = contact_reader(&config, runtime.tls.as_ref())?;
    let consumer = events::consumer(
        &config.common.kafka.brokers,
        format!("{prefix}crm.contacts"),
        runtime.topics.contacts(),
        config.common.kafka.group_instance_id.clone(),
        events::ContactEvents { pool: pool.clone(), applied: Arc::new(applied_tx), metrics: metrics.clone(), sessions },
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
    runtime.spawn(retention::run(
        pool.clone(),
        runtime.registry.clone(),
        metrics.clone(),
        config.service.sweep_interval,
        config.common.sweep_clock_offset,
        runtime.shutdown.clone(),
    ));
    runtime.with_health_name("centralita.crm.v1.CustomerService");
    let s = &config.service;
    let stores = api::OtherStores::new(
        s.sessions_endpoint.as_deref(),
        s.media_endpoint.as_deref(),
        s.recording_endpoint.as_deref(),
        runtime.tls.as_ref(),
    )
    .map_err(|m| ConfigError::new("CENTRALITA_*_ENDPOINT", m))?;
    let api = api::Api { pool, applied, outbox, metrics, stores };
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(Authenticated::new(CustomerServiceServer::new(api), runtime.authenticator.clone()));
    runtime.serve(listeners, routes).await
}

#[cfg(test)]
mod tests {
    use centralita_platform::config::Validate;
    use centralita_platform::server::parse_args;

    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<super::Settings>(
            super::SERVICE,
            &["--database-url", "postgres://u@127.0.0.1/db"],
        );
    }

    #[test]
    fn the_sweep_interval_defaults_to_an_hour_and_cannot_be_zero() {
        let args = |extra: &[&str]| {
            let mut a =
                vec!["crm", "--jwt-public-key-file", "/dev/null", "--database-url", "postgres://u@127.0.0.1/db"];
            a.extend_from_slice(extra);
            parse_args::<super::Settings>(super::SERVICE, a).expect("flags parse")
        };
        assert_eq!(args(&[]).service.sweep_interval, std::time::Duration::from_secs(3600));
        assert_eq!(args(&["--sweep-interval", "5m"]).service.sweep_interval, std::time::Duration::from_secs(300));
        let zero = args(&["--sweep-interval", "0s"]).service.validate().expect_err("zero refused");
        assert!(zero.to_string().contains("CENTRALITA_CRM_SWEEP_INTERVAL"), "{zero}");
        let bad = args(&["--media-endpoint", "127.0.0.1:1"]).service.validate().expect_err("not a URL");
        assert!(bad.to_string().contains("CENTRALITA_MEDIA_ENDPOINT"), "{bad}");
        assert!(args(&["--recording-endpoint", "http://127.0.0.1:1"]).service.validate().is_ok());
    }
}
