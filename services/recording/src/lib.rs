//! The `recording` service (`centralita-recording`): call audio, encrypted per recording
//! under the tenant's key, stored through `object_store`, played back with an audit trail,
//! kept for the tenant's retention unless on legal hold.
//!
//! # What runs
//! - gRPC `centralita.recording.v1.RecordingService` behind the platform's authenticator:
//!   `IngestCall` (the media service streams a call's two legs in: a `channel` token of
//!   the tenant), `GetRecording`, `ListRecordings`, `StreamRecordingAudio`,
//!   `CreatePlaybackUrl` (supervisors and tenant admins of the tenant), `SetLegalHold` and
//!   `ClearLegalHold` (tenant admins); `IngestTranscript` (media's digital role hands over a
//!   closed digital contact's conversation) and `GetTranscript` (read like playback).
//! - the playback HTTP port (`CENTRALITA_PLAYBACK_ADDR`): signed, expiring URLs of the WAV
//!   file with range requests ([`http`]).
//! - the retention sweeper ([`retention`]), every `CENTRALITA_RECORDING_SWEEP_INTERVAL`.
//! - a consumer of the customers topic: CRM's `CustomerErased` deletes the recordings of the
//!   erased customer's contacts, reported with a `StoreErased` ([`erasure`]).
//! - PostgreSQL schema `recording` ([`MIGRATIONS`]): recordings, wrapped data keys, audit.
//!
//! # Layout
//! - [`capture`]: the pure core: ingest messages in, stereo PCM out (legs aligned on media
//!   time, PCI pauses as silence), every input validated.
//! - [`g711`]: µ-law and A-law decoding.
//! - [`crypto`]: data keys, their wrapping, the STREAM segments (`docs/recording-format.md`).
//! - [`keys`]: the tenants' versioned key-encryption keys.
//! - [`ingest`]: a call being recorded: spool file on disk, upload at the end.
//! - [`objects`]: the object store (local disk or S3).
//! - [`store`]: the schema and every query, tenant set for row-level security.
//! - [`playback`]: WAV assembly over byte ranges, signed URLs.
//! - [`transcript`]: digital transcripts (pure): validation and the JSON they encrypt;
//!   [`transcripts`]: their two RPCs (stored and read whole, encrypted like audio).
//! - [`api`], [`http`]: the gRPC and HTTP adapters.
//! - [`retention`]: the sweeper. [`erasure`]: CRM's customer erasures carried out on
//!   recordings, reported back (`StoreErased`). [`metrics`]: `centralita_recording_*`.

pub mod api;
pub mod capture;
pub mod crypto;
pub mod erasure;
pub mod g711;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod objects;
pub mod playback;
pub mod retention;
pub mod store;
pub mod transcript;
pub mod transcripts;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use centralita_platform::auth::Authenticated;
use centralita_platform::bus::{Consumer, ConsumerSettings, MemoryDedupe, Producer, FETCH_WAIT_DEFAULT};
use centralita_platform::config::{parse_duration, ConfigError, PostgresConfig, ServiceArgs, Validate};
use centralita_platform::db::{Migration, Migrations, TENANCY_SQL};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use centralita_proto::recording::v1::recording_service_server::RecordingServiceServer;
use tokio::net::TcpListener;

pub const SERVICE: &str = "recording";

/// The `recording` schema.
pub const MIGRATIONS: Migrations = Migrations {
    schema: "recording",
    steps: &[
        Migration { version: 1, name: "tenancy", sql: TENANCY_SQL },
        Migration { version: 2, name: "recordings", sql: store::RECORDINGS_SQL },
        Migration { version: 3, name: "transcripts", sql: store::TRANSCRIPTS_SQL },
    ],
};

/// Recording's own settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    #[command(flatten)]
    pub postgres: PostgresConfig,
    /// Where recordings are stored: `file:///<absolute dir>`, or `s3://<bucket>` with the
    /// standard `AWS_*` environment (endpoint, region, credentials, `AWS_ALLOW_HTTP`).
    #[arg(
        long = "store-url",
        env = "CENTRALITA_RECORDING_STORE_URL",
        default_value = "file:///var/lib/centralita/recordings"
    )]
    pub store_url: String,
    /// Local directory of the calls being recorded (encrypted spool files).
    #[arg(long = "spool-dir", env = "CENTRALITA_RECORDING_SPOOL_DIR", default_value = "/var/lib/centralita/spool")]
    pub spool_dir: PathBuf,
    /// YAML file of the tenants' key-encryption keys (see the `keys` module). Without it no
    /// call can be recorded.
    #[arg(long = "keys-file", env = "CENTRALITA_RECORDING_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// Address of the playback HTTP port (signed URLs).
    #[arg(long = "playback-addr", env = "CENTRALITA_PLAYBACK_ADDR", default_value = "0.0.0.0:9190")]
    pub playback_addr: SocketAddr,
    /// Base of the playback URLs handed out (`https://recordings.example.com`); by default
    /// `http://` and the playback address (loopback when it listens on every address).
    #[arg(long = "playback-public-url", env = "CENTRALITA_PLAYBACK_PUBLIC_URL")]
    pub playback_public_url: Option<String>,
    /// File holding the secret that signs playback URLs (every replica needs the same one).
    /// Without it each process makes a random one: URLs then work only on the replica that
    /// issued them.
    #[arg(long = "playback-url-key-file", env = "CENTRALITA_PLAYBACK_URL_KEY_FILE")]
    pub playback_url_key_file: Option<PathBuf>,
    /// How long a playback URL works.
    #[arg(long = "playback-url-ttl", env = "CENTRALITA_PLAYBACK_URL_TTL", default_value = "5m", value_parser = parse_duration)]
    pub playback_url_ttl: Duration,
    /// How often the retention sweeper runs.
    #[arg(long = "sweep-interval", env = "CENTRALITA_RECORDING_SWEEP_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub sweep_interval: Duration,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.postgres.validate()?;
        if !(self.store_url.starts_with("file:///") || self.store_url.starts_with("s3://")) {
            return Err(ConfigError::new(
                "CENTRALITA_RECORDING_STORE_URL",
                "must be file:///<absolute dir> or s3://<bucket>",
            ));
        }
        if self.playback_url_ttl.is_zero() || self.playback_url_ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new("CENTRALITA_PLAYBACK_URL_TTL", "must be between 1 s and 24 h"));
        }
        if self.sweep_interval.is_zero() {
            return Err(ConfigError::new("CENTRALITA_RECORDING_SWEEP_INTERVAL", "must be more than zero"));
        }
        if let Some(u) = &self.playback_public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(ConfigError::new("CENTRALITA_PLAYBACK_PUBLIC_URL", "must be an http:// or https:// URL"));
            }
        }
        Ok(())
    }
}

/// Flags and `CENTRALITA_*` environment: the common ones plus [`Settings`].
pub type Config = ServiceArgs<Settings>;

/// Runs the service on `listeners` (and playback HTTP on the configured address).
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let playback = TcpListener::bind(config.service.playback_addr).await?;
    run_with_playback(config, listeners, playback, shutdown).await
}

/// [`run`] with the playback HTTP port on `playback_addr` (port 0 picks one): the address
/// taken and the service's future (tests).
pub async fn start(
    config: Config,
    listeners: Listeners,
    playback_addr: SocketAddr,
    shutdown: Shutdown,
) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = anyhow::Result<()>>)> {
    let playback = TcpListener::bind(playback_addr).await?;
    Ok((playback.local_addr()?, run_with_playback(config, listeners, playback, shutdown)))
}

async fn run_with_playback(
    config: Config,
    listeners: Listeners,
    playback: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let s = &config.service;
    let keys = match &s.keys_file {
        Some(path) => keys::Keyring::load(path).map_err(|m| ConfigError::new("CENTRALITA_RECORDING_KEYS_FILE", m))?,
        None => keys::Keyring::empty(),
    };
    let objects =
        objects::Objects::from_url(&s.store_url).map_err(|m| ConfigError::new("CENTRALITA_RECORDING_STORE_URL", m))?;
    std::fs::create_dir_all(&s.spool_dir)
        .map_err(|e| ConfigError::new("CENTRALITA_RECORDING_SPOOL_DIR", e.to_string()))?;
    let url_key = match &s.playback_url_key_file {
        Some(path) => std::fs::read(path)
            .map_err(|e| ConfigError::new("CENTRALITA_PLAYBACK_URL_KEY_FILE", e.to_string()))
            .and_then(|k| {
                if k.len() < 16 {
                    Err(ConfigError::new("CENTRALITA_PLAYBACK_URL_KEY_FILE", "holds fewer than 16 bytes"))
                } else {
                    Ok(k)
                }
            })?,
        None => crypto::DataKey::generate().map_err(anyhow::Error::msg)?.0.to_vec(),
    };
    let local = playback.local_addr()?;
    let base = s.playback_public_url.clone().unwrap_or_else(|| {
        let host = if local.ip().is_unspecified() { "127.0.0.1".to_owned() } else { local.ip().to_string() };
        format!("http://{host}:{}", local.port())
    });

    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let topics = [runtime.topics.contacts(), runtime.topics.customers()];
    runtime.with_topics(&topics);
    let pool = runtime.postgres(&s.postgres, MIGRATIONS)?;
    let metrics = Arc::new(metrics::Metrics::register(&runtime.metrics));
    let producer = Arc::new(Producer::new(&config.common.kafka.brokers, Some(runtime.metrics.clone()))?);
    let erasures = Consumer::new(
        ConsumerSettings {
            brokers: config.common.kafka.brokers.clone(),
            group_id: format!("{}recording.erasures", config.common.kafka.topic_prefix),
            topics: vec![runtime.topics.customers()],
            fetch_wait: FETCH_WAIT_DEFAULT,
            group_instance_id: config.common.kafka.group_instance_id.clone(),
        },
        erasure::ErasureHandler {
            pool: pool.clone(),
            objects: objects.clone(),
            producer,
            topics: runtime.topics.clone(),
            metrics: metrics.clone(),
        },
        MemoryDedupe::new(10_000),
        Some(runtime.metrics.clone()),
    )?;
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = erasures.run(sd).await {
            tracing::error!(error = %e, "customer erasure consumer stopped");
        }
    });
    let keyring = Arc::new(keys);
    let recorder = ingest::Recorder {
        pool: pool.clone(),
        keys: keyring.clone(),
        objects: objects.clone(),
        spool: s.spool_dir.clone(),
        metrics: metrics.clone(),
    };
    runtime.spawn(ingest::recover_at_start(recorder.clone(), runtime.shutdown.clone()));
    let api = api::Api {
        recorder,
        registry: runtime.registry.clone(),
        signer: playback::UrlSigner::new(url_key, base),
        url_ttl: s.playback_url_ttl,
    };
    tracing::info!(playback_addr = %local, "playback HTTP listening");
    runtime.spawn(http::serve(playback, Arc::new(api.clone()), runtime.shutdown.clone()));
    runtime.spawn(retention::run(
        pool,
        objects,
        runtime.registry.clone(),
        metrics,
        keyring,
        s.sweep_interval,
        config.common.sweep_clock_offset,
        runtime.shutdown.clone(),
    ));
    runtime.with_health_name("centralita.recording.v1.RecordingService");
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(Authenticated::new(RecordingServiceServer::new(api), runtime.authenticator.clone()));
    runtime.serve(listeners, routes).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<super::Settings>(
            super::SERVICE,
            &["--database-url", "postgres://u@127.0.0.1/db"],
        );
    }
}
