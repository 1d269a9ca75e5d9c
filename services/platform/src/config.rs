//! Typed configuration shared by every service: flags with `CENTRALITA_*` environment
//! fallbacks (clap derive), validated once at start by [`CommonConfig::validate`].
//!
//! Services flatten [`CommonConfig`] plus the store sections they need
//! ([`PostgresConfig`], [`RedisConfig`]) into their own `Config`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The wrapped value; call only where it is handed to the client that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret<String> {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Parses `250ms`, `20s`, `5m`, `1h` (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 500ms, 20s, 5m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(format!("`{s}` has unknown unit `{unit}` (use ms, s, m, h or d)")),
    };
    Ok(d)
}

/// Writes a duration the way [`parse_duration`] reads it, in its largest whole unit (`2d`,
/// `36h`, `90s`, `250ms`), for log lines an operator compares with the setting.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses `CENTRALITA_SWEEP_CLOCK_OFFSET` like [`parse_duration`], and says why a negative
/// one is refused rather than that it is not a duration.
fn parse_sweep_clock_offset(s: &str) -> Result<Duration, String> {
    if s.trim_start().starts_with('-') {
        return Err(format!(
            "CENTRALITA_SWEEP_CLOCK_OFFSET must not be negative (`{}`): the sweepers may act \
             ahead of the clock, never behind it (0s to 10950d)",
            s.trim()
        ));
    }
    parse_duration(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// Log line format: `json` (default, one object a line) or `text` for humans.
    #[arg(long, env = "CENTRALITA_LOG_FORMAT", default_value = "json", value_enum)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax. The SIP stack logs whole messages (callers'
    /// numbers included) at info, so by default it logs warnings only.
    #[arg(long, env = "CENTRALITA_LOG", default_value = "info,rsipstack=warn")]
    pub log_filter: String,
    /// Span filter (EnvFilter syntax), apart from the log filter: the spans kept for traces
    /// (and exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Logs at `warn` keep their
    /// traces; `off` creates no spans at all (no trace context is carried either).
    #[arg(long, env = "CENTRALITA_TRACE", default_value = "info,rsipstack=off")]
    pub trace_filter: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct KafkaConfig {
    /// Comma-separated Kafka bootstrap servers.
    #[arg(long = "kafka-brokers", env = "CENTRALITA_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Prefix of every topic name; lets several installations (or tests) share a cluster.
    #[arg(long = "kafka-topic-prefix", env = "CENTRALITA_KAFKA_TOPIC_PREFIX", default_value = "centralita.")]
    pub topic_prefix: String,
    /// Partitions of the event topics created at start-up (the tenants topic uses one).
    #[arg(long = "kafka-partitions", env = "CENTRALITA_KAFKA_PARTITIONS", default_value_t = 12)]
    pub partitions: i32,
    /// Replication factor of topics created at start-up.
    #[arg(long = "kafka-replication-factor", env = "CENTRALITA_KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,
    /// Static consumer-group membership (`group.instance.id`) of this replica, stable across
    /// its restarts (a StatefulSet pod name, or `sessions-1` locally): a restarted replica
    /// takes its partitions back without waiting for the broker to expire the dead member; a
    /// static member gone for longer than the session timeout is expired like a dynamic one
    /// (tansu 0.6 needs `deploy/local/tansu-broker.patch` for that). tansu 0.6 holds a static
    /// member's JoinGroup and SyncGroup until 3 s have passed, its coordinator's `PAUSE_MS`,
    /// so the restarted replica gets its partitions about 4 s after it starts. Unset:
    /// dynamic membership.
    #[arg(long = "kafka-group-instance-id", env = "CENTRALITA_KAFKA_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// Longest a fetch on the customer's path (routing inputs, routing decisions) waits at
    /// the broker, 1 to 1000 ms: the latency floor of each of those hops. tansu holds every
    /// fetch this long, even when records are there, and lists the partition's stored
    /// batches on each, so a longer wait costs latency per hop and saves broker CPU
    /// (loadtest/BENCHMARKS.md).
    #[arg(
        long = "kafka-fetch-wait-low-latency-ms",
        env = "CENTRALITA_KAFKA_FETCH_WAIT_LOW_LATENCY_MS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u64).range(1..=1000)
    )]
    pub fetch_wait_low_latency_ms: u64,
    /// How long a replica stays ready while its broker check fails, once it has passed
    /// (`0s`: not at all). The APIs keep serving through their outboxes while the broker is
    /// away, and all replicas share it, so a short outage should not empty their Services.
    #[arg(
        long = "kafka-readiness-grace",
        env = "CENTRALITA_KAFKA_READINESS_GRACE",
        default_value = "120s",
        value_parser = parse_duration
    )]
    pub readiness_grace: Duration,
    /// How long a consumer group of this process may stay unsettled (joining, syncing) while
    /// the broker answers before `/livez` fails, so the replica is restarted (`0s`, the
    /// default: never). Opt-in: with tansu 0.6 a restart does not always mend the group
    /// (`bus::GroupWatch`); `centralita_bus_consumer_group_unsettled_seconds` reports it anyway.
    #[arg(
        long = "kafka-stuck-group-timeout",
        env = "CENTRALITA_KAFKA_STUCK_GROUP_TIMEOUT",
        default_value = "0s",
        value_parser = parse_duration
    )]
    pub stuck_group_timeout: Duration,
    /// How long the event topics this service creates keep their records (`retention.ms`,
    /// `cleanup.policy=delete`; the compacted tenants topic keeps its latest records), 1h to
    /// 10950d. Events carry references, not personal data (issue 23); this bounds what they
    /// still hold. Keep it at most the shortest `dataRetentionDays` of the tenants, and long
    /// enough for a consumer to catch up after an outage. Applies to topics created from now
    /// on: an existing topic keeps its configuration (docs/data-map.md says how to set it).
    #[arg(
        long = "kafka-retention",
        env = "CENTRALITA_KAFKA_RETENTION",
        default_value = "7d",
        value_parser = parse_duration
    )]
    pub retention: Duration,
}

/// Bounds of `CENTRALITA_KAFKA_RETENTION`: an hour, and the longest `dataRetentionDays`.
pub const KAFKA_RETENTION_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(3600)..=Duration::from_secs(10_950 * 86_400);

/// The clock the retention sweepers read: the real one, or `CENTRALITA_SWEEP_CLOCK_OFFSET`
/// ahead of it (retention drills and tests, which cannot wait out `dataRetentionDays`).
#[derive(Debug, Clone, Copy)]
pub struct SweepClock {
    offset: Duration,
}

impl SweepClock {
    /// A sweeper's clock; says so in a warning when it runs ahead.
    pub fn new(offset: Duration) -> Self {
        if !offset.is_zero() {
            tracing::warn!(
                "retention sweeps run as if the clock were {} ahead (CENTRALITA_SWEEP_CLOCK_OFFSET), for retention \
                 drills and tests only",
                format_duration(offset)
            );
        }
        Self { offset }
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + self.offset
    }
}

/// Largest `CENTRALITA_SWEEP_CLOCK_OFFSET`: the longest `dataRetentionDays`, which is enough
/// to expire anything a tenant keeps.
pub const SWEEP_CLOCK_OFFSET_MAX: Duration = Duration::from_secs(10_950 * 86_400);

impl KafkaConfig {
    /// The fetch wait of consumers on the customer's path.
    pub fn fetch_wait_low_latency(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.fetch_wait_low_latency_ms)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// PEM file with the Ed25519 public key that signs caller tokens (EdDSA JWTs).
    #[arg(long = "jwt-public-key-file", env = "CENTRALITA_JWT_PUBLIC_KEY_FILE")]
    pub public_key_file: PathBuf,
    /// Required `iss` claim.
    #[arg(long = "jwt-issuer", env = "CENTRALITA_JWT_ISSUER", default_value = "centralita")]
    pub issuer: String,
    /// Required `aud` claim.
    #[arg(long = "jwt-audience", env = "CENTRALITA_JWT_AUDIENCE", default_value = "centralita-api")]
    pub audience: String,
    /// The BPO's identity provider, whose tokens are accepted beside the platform's own.
    #[command(flatten)]
    pub idp: IdpConfig,
}

/// The identity provider (OpenID Connect) whose signed tokens people sign in with
/// (`crate::auth::jwks`). Off unless `CENTRALITA_JWT_JWKS_URL` is set.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IdpConfig {
    /// The provider's JSON Web Key Set (its discovery document's `jwks_uri`).
    #[arg(long = "jwt-jwks-url", env = "CENTRALITA_JWT_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// The `iss` of the provider's tokens; required with the key set.
    #[arg(long = "jwt-idp-issuer", env = "CENTRALITA_JWT_IDP_ISSUER")]
    pub idp_issuer: Option<String>,
    /// The `aud` the provider's tokens must carry (default: `CENTRALITA_JWT_AUDIENCE`).
    #[arg(long = "jwt-idp-audience", env = "CENTRALITA_JWT_IDP_AUDIENCE")]
    pub idp_audience: Option<String>,
    /// How often the key set is read again (sooner after a token names an unknown key).
    #[arg(long = "jwt-jwks-refresh", env = "CENTRALITA_JWT_JWKS_REFRESH", default_value = "5m", value_parser = parse_duration)]
    pub jwks_refresh: Option<Duration>,
}

impl IdpConfig {
    /// The key set's URL and the provider's issuer when one is configured; `Err` names the
    /// setting that is wrong.
    pub fn provider(&self) -> Result<Option<(&str, &str)>, ConfigError> {
        let Some(url) = self.jwks_url.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError::new("CENTRALITA_JWT_JWKS_URL", "must be an http(s):// URL"));
        }
        let issuer =
            self.idp_issuer.as_deref().filter(|i| !i.trim().is_empty()).ok_or_else(|| {
                ConfigError::new("CENTRALITA_JWT_IDP_ISSUER", "is required with CENTRALITA_JWT_JWKS_URL")
            })?;
        Ok(Some((url, issuer)))
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct CommonConfig {
    /// Address of the gRPC port.
    #[arg(long, env = "CENTRALITA_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the admin HTTP port (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "CENTRALITA_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// How long shutdown may take to drain in-flight work; keep it below the pod's grace period.
    #[arg(long, env = "CENTRALITA_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// How far ahead of the real clock the retention sweepers act (`0s`, the default: not at
    /// all), up to 10950d: a retention drill on a staging install, or an end-to-end test,
    /// sees data expire without waiting out `dataRetentionDays`. Never in production: the
    /// sweepers would delete data before its time. The chart does not set it.
    #[arg(
        long,
        env = "CENTRALITA_SWEEP_CLOCK_OFFSET",
        default_value = "0s",
        allow_hyphen_values = true,
        value_parser = parse_sweep_clock_offset
    )]
    pub sweep_clock_offset: Duration,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// Browsers' access to the gRPC port (gRPC-Web and its CORS origins).
    #[command(flatten)]
    pub grpc_web: crate::grpc_web::GrpcWebConfig,
    /// Mutual TLS on the gRPC port and to the other services.
    #[command(flatten)]
    pub tls: crate::tls::TlsConfig,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PostgresConfig {
    /// PostgreSQL URL, `postgres://user:password@host:port/db`.
    #[arg(id = "database_url", value_name = "URL", long = "database-url", env = "CENTRALITA_DATABASE_URL")]
    pub url: Secret<String>,
    /// Maximum pooled connections.
    #[arg(
        id = "database_pool_size",
        long = "database-pool-size",
        env = "CENTRALITA_DATABASE_POOL_SIZE",
        default_value_t = 16
    )]
    pub pool_size: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RedisConfig {
    /// Redis URL, `redis://[:password@]host:port[/db]`.
    #[arg(id = "redis_url", value_name = "URL", long = "redis-url", env = "CENTRALITA_REDIS_URL")]
    pub url: Secret<String>,
}

/// The whole configuration of a service: the [`CommonConfig`] every service has, plus the
/// service's own settings `S` (the stores it uses and anything only it needs).
#[derive(Debug, Clone, clap::Parser)]
pub struct ServiceArgs<S: clap::Args> {
    #[command(flatten)]
    pub common: CommonConfig,
    #[command(flatten)]
    pub service: S,
}

/// The settings of a service that needs nothing beyond the common ones.
#[derive(Debug, Clone, clap::Args)]
pub struct NoSettings {}

/// The settings of a service that uses both PostgreSQL and Redis.
#[derive(Debug, Clone, clap::Args)]
pub struct PostgresAndRedis {
    #[command(flatten)]
    pub postgres: PostgresConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
}

/// A setting that cannot be used; printed as one line before a non-zero exit.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self { setting, message: message.into() }
    }
}

/// Configuration a service's `Config` validates once at start.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

impl Validate for CommonConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.brokers.split(',').all(|b| b.trim().is_empty()) {
            return Err(ConfigError::new("CENTRALITA_KAFKA_BROKERS", "no broker given"));
        }
        if !(1..=1024).contains(&self.kafka.partitions) {
            return Err(ConfigError::new("CENTRALITA_KAFKA_PARTITIONS", "must be between 1 and 1024"));
        }
        if !(1..=16).contains(&self.kafka.replication_factor) {
            return Err(ConfigError::new("CENTRALITA_KAFKA_REPLICATION_FACTOR", "must be between 1 and 16"));
        }
        if !self.kafka.topic_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(ConfigError::new(
                "CENTRALITA_KAFKA_TOPIC_PREFIX",
                "may hold only ASCII letters, digits, '.', '_' and '-'",
            ));
        }
        if let Some(id) = &self.kafka.group_instance_id {
            if id.is_empty() || id.len() > 200 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(ConfigError::new(
                    "CENTRALITA_KAFKA_GROUP_INSTANCE_ID",
                    "must be 1-200 of ASCII letters, digits, '.', '_' and '-'",
                ));
            }
        }
        if !KAFKA_RETENTION_RANGE.contains(&self.kafka.retention) {
            return Err(ConfigError::new("CENTRALITA_KAFKA_RETENTION", "must be between 1h and 10950d"));
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            return Err(ConfigError::new("CENTRALITA_JWT_ISSUER / CENTRALITA_JWT_AUDIENCE", "must not be empty"));
        }
        if self.shutdown_timeout.is_zero() {
            return Err(ConfigError::new("CENTRALITA_SHUTDOWN_TIMEOUT", "must be more than zero"));
        }
        if self.sweep_clock_offset > SWEEP_CLOCK_OFFSET_MAX {
            return Err(ConfigError::new("CENTRALITA_SWEEP_CLOCK_OFFSET", "must be between 0s and 10950d"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_filter)
            .map_err(|e| ConfigError::new("CENTRALITA_LOG", e.to_string()))?;
        self.tls.validate()?;
        self.grpc_web.validate()
    }
}

impl Validate for PostgresConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        tokio_postgres::Config::from_str(self.url.expose())
            .map_err(|_| ConfigError::new("CENTRALITA_DATABASE_URL", "is not a valid postgres:// URL"))?;
        if !(1..=1000).contains(&self.pool_size) {
            return Err(ConfigError::new("CENTRALITA_DATABASE_POOL_SIZE", "must be between 1 and 1000"));
        }
        Ok(())
    }
}

impl Validate for RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        redis::Client::open(self.url.expose().as_str())
            .map(|_| ())
            .map_err(|_| ConfigError::new("CENTRALITA_REDIS_URL", "is not a valid redis:// URL"))
    }
}

impl<S: clap::Args + Validate> Validate for ServiceArgs<S> {
    fn validate(&self) -> Result<(), ConfigError> {
        self.common.validate()?;
        self.service.validate()
    }
}

impl Validate for NoSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl Validate for PostgresAndRedis {
    fn validate(&self) -> Result<(), ConfigError> {
        self.postgres.validate()?;
        self.redis.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("postgres://u:hunter2@h/db".to_string());
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    /// The common flags parsed from `extra` (the JWT key file given).
    fn common(extra: &[&str]) -> CommonConfig {
        let mut args = vec!["svc", "--jwt-public-key-file", "/dev/null"];
        args.extend_from_slice(extra);
        <CommonConfig as clap::FromArgMatches>::from_arg_matches(
            &<CommonConfig as clap::Args>::augment_args(clap::Command::new("svc")).get_matches_from(args),
        )
        .expect("flags parse")
    }

    #[test]
    fn the_topic_retention_defaults_to_a_week_and_is_bounded() {
        assert_eq!(common(&[]).kafka.retention, Duration::from_secs(7 * 86_400));
        assert!(common(&[]).validate().is_ok());
        assert!(common(&["--kafka-retention", "24h"]).validate().is_ok());
        for bad in ["59m", "10951d"] {
            let e = common(&["--kafka-retention", bad]).validate().expect_err(bad);
            assert!(e.to_string().contains("CENTRALITA_KAFKA_RETENTION"), "{e}");
        }
    }

    /// The common flags parsed from `extra`, or clap's error (the JWT key file given).
    fn try_common(extra: &[&str]) -> Result<CommonConfig, clap::Error> {
        let mut args = vec!["svc", "--jwt-public-key-file", "/dev/null"];
        args.extend_from_slice(extra);
        let matches =
            <CommonConfig as clap::Args>::augment_args(clap::Command::new("svc")).try_get_matches_from(args)?;
        <CommonConfig as clap::FromArgMatches>::from_arg_matches(&matches)
    }

    #[test]
    fn the_sweep_clock_offset_is_off_by_default_and_neither_negative_nor_beyond_10950_days() {
        assert_eq!(common(&[]).sweep_clock_offset, Duration::ZERO);
        for (given, secs) in [("2d", 2 * 86_400), ("36h", 36 * 3600), ("0s", 0), ("10950d", 10_950 * 86_400)] {
            let c = common(&["--sweep-clock-offset", given]);
            assert_eq!(c.sweep_clock_offset, Duration::from_secs(secs), "{given}");
            assert!(c.validate().is_ok(), "{given}");
        }
        let e = common(&["--sweep-clock-offset", "10951d"]).validate().expect_err("beyond 10950d");
        assert_eq!(e.setting, "CENTRALITA_SWEEP_CLOCK_OFFSET");
        assert!(e.to_string().contains("between 0s and 10950d"), "{e}");
        let negatives: [&[&str]; 3] =
            [&["--sweep-clock-offset", "-2d"], &["--sweep-clock-offset=-36h"], &["--sweep-clock-offset", " -1"]];
        for negative in negatives {
            let e = try_common(negative).expect_err("negative");
            assert!(e.to_string().contains("CENTRALITA_SWEEP_CLOCK_OFFSET must not be negative"), "{e}");
        }
        assert!(try_common(&["--sweep-clock-offset", "2 days"]).is_err());
    }

    #[test]
    fn durations_format_in_their_largest_whole_unit_and_parse_back() {
        for (secs, shown) in [(0, "0s"), (2 * 86_400, "2d"), (36 * 3600, "36h"), (90, "90s"), (300, "5m")] {
            assert_eq!(format_duration(Duration::from_secs(secs)), shown);
            assert_eq!(parse_duration(shown), Ok(Duration::from_secs(secs)));
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn the_identity_provider_is_off_unless_its_key_set_is_given_and_then_needs_its_issuer() {
        assert_eq!(common(&[]).auth.idp.provider().expect("off"), None);
        let url = "https://idp.example/certs";
        let on = common(&["--jwt-jwks-url", url, "--jwt-idp-issuer", "https://idp.example"]);
        assert_eq!(on.auth.idp.provider().expect("on"), Some((url, "https://idp.example")));
        assert_eq!(on.auth.idp.jwks_refresh, Some(Duration::from_secs(300)));
        let no_issuer = common(&["--jwt-jwks-url", url]);
        let e = no_issuer.auth.idp.provider().expect_err("no issuer");
        assert!(e.to_string().contains("CENTRALITA_JWT_IDP_ISSUER"), "{e}");
        let file = common(&["--jwt-jwks-url", "file:///etc/keys", "--jwt-idp-issuer", "i"]);
        assert!(file.auth.idp.provider().expect_err("scheme").to_string().contains("CENTRALITA_JWT_JWKS_URL"));
    }

    #[test]
    fn bad_database_url_names_the_setting() {
        let c = PostgresConfig { url: Secret::new("mysql://x".into()), pool_size: 4 };
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("CENTRALITA_DATABASE_URL"));
        assert!(!e.to_string().contains("mysql"), "the URL may hold a password");
    }
}
