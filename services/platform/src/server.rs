//! The runtime of a service: everything between `main` and the service's own gRPC API.
//!
//! ```text
//! main ─ main_with(config) ─ telemetry, listeners, signals ─ service::run(config, listeners, shutdown)
//!                                                               └ Runtime::new … .serve(routes)
//! ```
//! [`Runtime::serve`] runs the gRPC port (health, reflection, the tenant API and the
//! service's own APIs behind the [`Authenticator`]), the admin port, the Kafka bootstrap
//! (topic creation, then a liveness probe), the tenant feed, the store checks, and the one
//! shutdown sequence: NOT_SERVING, drain gRPC while background work stops, all within one
//! deadline (`CENTRALITA_SHUTDOWN_TIMEOUT`) counted from the first signal.
//!
//! Start-up never fails because a dependency is down: each dependency is a readiness check
//! retried in the background, so a replica started early reports not-ready and recovers by
//! itself instead of crash-looping.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;

use crate::auth::{Authenticated, Authenticator, Verifier};
use crate::bus::{client_config, ensure_topics_retained, TopicSpec, Topics};
use crate::cache::RedisHandle;
use crate::config::{CommonConfig, ConfigError, PostgresConfig, RedisConfig, ServiceArgs, Validate};
use crate::db::{self, Migrations};
use crate::health::Readiness;
use crate::metrics::{DependencyLabel, Metrics};
use crate::registry::TenantRegistry;
use crate::shutdown::Shutdown;
use crate::tenancy_api::TenantApi;
use crate::tenant_feed::TenantFeed;

/// The two listening sockets of a service.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(grpc: SocketAddr, admin: SocketAddr) -> std::io::Result<Self> {
        Ok(Self { grpc: TcpListener::bind(grpc).await?, admin: TcpListener::bind(admin).await? })
    }

    /// Both on an ephemeral loopback port (tests).
    pub async fn ephemeral() -> std::io::Result<Self> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self::bind(any, any).await
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }
}

/// The thin `main` of every service: parse and validate config (one clear line and exit 2
/// when it is wrong), start telemetry, bind the ports, install signal handling and run.
pub fn main_with<S, F, Fut>(service: &'static str, run: F) -> ExitCode
where
    S: clap::Args + Validate,
    F: FnOnce(ServiceArgs<S>, Listeners, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    main_with_args(service, std::env::args_os(), run)
}

/// [`main_with`] over the given command line (program name first), for a binary that has
/// subcommands of its own besides running the service.
pub fn main_with_args<S, F, Fut>(
    service: &'static str,
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    run: F,
) -> ExitCode
where
    S: clap::Args + Validate,
    F: FnOnce(ServiceArgs<S>, Listeners, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = parse_args::<S>(service, args).unwrap_or_else(|e| e.exit());
    if let Err(e) = config.validate() {
        eprintln!("{service}: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{service}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let _telemetry = match crate::telemetry::init(service, &config.common.telemetry) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{service}: cannot start telemetry: {e}");
                return ExitCode::FAILURE;
            }
        };
        let common = config.common.clone();
        let listeners = match Listeners::bind(common.grpc_addr, common.admin_addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, grpc = %common.grpc_addr, admin = %common.admin_addr, "cannot bind ports");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = Shutdown::new();
        shutdown.on_signals();
        match run(config, listeners, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "service stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}

/// How often the gRPC server pings an idle client connection, and how long it waits for
/// the answer before closing it.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses a service's flags, naming the command after the service.
pub fn parse_args<S: clap::Args>(
    service: &'static str,
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<ServiceArgs<S>, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = ServiceArgs::<S>::command()
        .name(service)
        .about(format!("Centralita {service} service"))
        .version(env!("CARGO_PKG_VERSION"));
    let matches = command.try_get_matches_from_mut(args)?;
    ServiceArgs::<S>::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
}

/// One dependency check, probed periodically by [`Runtime`] (see [`Runtime::spawn_check`]).
/// A probe that keeps state (connect once, then ping) does the expensive part only until
/// it succeeds once.
pub trait Check: Send + 'static {
    fn probe(&mut self) -> impl Future<Output = crate::Result<()>> + Send;
}

/// Applies migrations until they succeed once, then asks `SELECT 1`.
struct PostgresCheck {
    pool: deadpool_postgres::Pool,
    migrations: Migrations,
    migrated: bool,
}

impl Check for PostgresCheck {
    async fn probe(&mut self) -> crate::Result<()> {
        if self.migrated {
            self.pool.get().await?.simple_query("SELECT 1").await?;
        } else {
            let applied = db::migrate(&self.pool, &self.migrations).await?;
            self.migrated = true;
            tracing::info!(applied, schema = self.migrations.schema, "database schema is current");
        }
        Ok(())
    }
}

/// Connects until Redis answers once, then PINGs.
struct RedisCheck {
    handle: RedisHandle,
    url: crate::config::Secret<String>,
}

impl Check for RedisCheck {
    async fn probe(&mut self) -> crate::Result<()> {
        match self.handle.conn() {
            Ok(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()).map_err(Into::into),
            Err(_) => crate::cache::connect(self.url.expose()).await.map(|c| self.handle.set(c)),
        }
    }
}

/// Creates the service's topics until that succeeds once, then fetches cluster metadata.
struct KafkaCheck {
    brokers: String,
    replication: i32,
    retention: Duration,
    specs: Vec<TopicSpec>,
    probe: Option<Arc<BaseConsumer>>,
    topics_ready: bool,
}

impl Check for KafkaCheck {
    async fn probe(&mut self) -> crate::Result<()> {
        if !self.topics_ready {
            ensure_topics_retained(&self.brokers, self.replication, Some(self.retention), &self.specs).await?;
            self.topics_ready = true;
            return Ok(());
        }
        let probe = self.probe.clone().ok_or_else(|| crate::Error::Unavailable("kafka client".into()))?;
        tokio::task::spawn_blocking(move || probe.fetch_metadata(None, Duration::from_secs(3)).map(|_| ()))
            .await
            .map_err(crate::Error::internal)??;
        Ok(())
    }
}

/// Everything a service shares with the others, wired up.
#[derive(Debug)]
pub struct Runtime {
    pub service: &'static str,
    pub config: CommonConfig,
    pub topics: Topics,
    pub registry: TenantRegistry,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub authenticator: Authenticator,
    pub shutdown: Shutdown,
    topic_specs: Vec<TopicSpec>,
    health_names: Vec<String>,
    background: JoinSet<()>,
    /// Where the metrics are pushed over OTLP too (the standard `OTEL_*` variables).
    metrics_push: Option<crate::otlp_metrics::PushConfig>,
    /// Mutual TLS, when `CENTRALITA_TLS_*` turn it on: the gRPC port's, and the one the
    /// service's clients of other services use ([`crate::tls::lazy_channel`]).
    pub tls: Option<Arc<crate::tls::Tls>>,
}

const CHECK_KAFKA: &str = "kafka";
const CHECK_POSTGRES: &str = "postgres";
const CHECK_REDIS: &str = "redis";

impl Runtime {
    pub fn new(service: &'static str, config: &CommonConfig, shutdown: Shutdown) -> Result<Self, ConfigError> {
        let mut verifier =
            Verifier::from_file(&config.auth.public_key_file, &config.auth.issuer, &config.auth.audience)
                .map_err(|m| ConfigError::new("CENTRALITA_JWT_PUBLIC_KEY_FILE", m))?;
        // The identity provider's keys, read in the background once the runtime runs.
        let idp = match config.auth.idp.provider()? {
            Some((url, issuer)) => {
                let audience = config.auth.idp.idp_audience.as_deref().unwrap_or(&config.auth.audience);
                let idp = Arc::new(crate::auth::jwks::Idp::new(issuer, audience));
                verifier = verifier.with_idp(idp.clone());
                let every = config.auth.idp.jwks_refresh.unwrap_or(Duration::from_secs(300));
                Some((idp, url.to_owned(), every))
            }
            None => None,
        };
        let registry = TenantRegistry::loading();
        let metrics = Arc::new(Metrics::new(service));
        let readiness = Readiness::new();
        readiness.register(CHECK_KAFKA);
        readiness.set_grace(CHECK_KAFKA, config.kafka.readiness_grace);
        metrics.groups.set_timeout(config.kafka.stuck_group_timeout);
        readiness.register(crate::tenant_feed::CHECK);
        let topics = Topics::new(config.kafka.topic_prefix.clone());
        let tenants_topic = TopicSpec { name: topics.tenants(), partitions: 1, compacted: true };
        let metrics_push = crate::otlp_metrics::PushConfig::from_vars(|k| std::env::var(k).ok())
            .map_err(|(setting, m)| ConfigError::new(setting, m))?;
        let tls = crate::tls::Tls::from_config(&config.tls)?;
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().watch(metrics.clone(), shutdown.clone()));
        }
        Ok(Self {
            service,
            config: config.clone(),
            authenticator: Authenticator::new(Arc::new(verifier), registry.clone(), metrics.clone()),
            topics,
            registry,
            readiness,
            metrics,
            shutdown,
            topic_specs: vec![tenants_topic],
            health_names: vec!["centralita.tenancy.v1.TenantService".into()],
            background: JoinSet::new(),
            metrics_push,
            tls,
        }
        .with_idp_keys(idp))
    }

    /// Reads the identity provider's keys in the background, when there is one.
    fn with_idp_keys(mut self, idp: Option<(Arc<crate::auth::jwks::Idp>, String, Duration)>) -> Self {
        if let Some((idp, url, every)) = idp {
            let shutdown = self.shutdown.clone();
            self.spawn(crate::auth::jwks::refresh_loop(idp, url, every, shutdown));
        }
        self
    }

    /// Topics this service needs; created at start-up if missing, with the configured
    /// partition count.
    pub fn with_topics(&mut self, names: &[String]) {
        for name in names {
            if !self.topic_specs.iter().any(|s| &s.name == name) {
                self.topic_specs.push(TopicSpec {
                    name: name.clone(),
                    partitions: self.config.kafka.partitions,
                    compacted: false,
                });
            }
        }
    }

    /// Declares one of the service's own gRPC services (full name) for gRPC health.
    pub fn with_health_name(&mut self, name: &str) {
        self.health_names.push(name.to_owned());
    }

    /// Runs `task` in the background until shutdown; `serve` waits for it (within what is
    /// left of the shutdown deadline after the gRPC drain, then aborts it) so consumers can
    /// commit before the process exits.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.background.spawn(task);
    }

    /// Runs `check` until shutdown: every 5 s while it passes, every second while it fails,
    /// mirroring each result into readiness (`name`) and `centralita_dependency_up`. The
    /// runtime's own checks (Kafka, PostgreSQL, Redis) run this way; a service adds those of
    /// dependencies only it has (the operator's Kubernetes API).
    pub fn spawn_check(&mut self, name: &'static str, mut check: impl Check) {
        self.readiness.register(name);
        let (readiness, shutdown, metrics) = (self.readiness.clone(), self.shutdown.clone(), self.metrics.clone());
        self.spawn(async move {
            let up = metrics.dependency_up.get_or_create(&DependencyLabel { dependency: name }).clone();
            loop {
                let result = check.probe().await;
                let ok = result.is_ok();
                match result {
                    Ok(()) => readiness.set(name, true, "ok"),
                    Err(e) => {
                        tracing::warn!(error = %e, check = name, "dependency check failed");
                        readiness.set(name, false, e.to_string());
                    }
                }
                up.set(i64::from(ok));
                let delay = if ok { Duration::from_secs(5) } else { Duration::from_secs(1) };
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        });
    }

    /// A PostgreSQL pool whose schema is migrated in the background; the `postgres` check
    /// passes once migrations are applied and the database answers.
    pub fn postgres(
        &mut self,
        cfg: &PostgresConfig,
        migrations: Migrations,
    ) -> Result<deadpool_postgres::Pool, ConfigError> {
        let pool = db::pool(cfg.url.expose(), migrations.schema, cfg.pool_size)
            .map_err(|_| ConfigError::new("CENTRALITA_DATABASE_URL", "cannot build a pool from it"))?;
        self.spawn_check(CHECK_POSTGRES, PostgresCheck { pool: pool.clone(), migrations, migrated: false });
        Ok(pool)
    }

    /// A Redis connection made in the background; the `redis` check follows PING. The
    /// service's tenant API quotas are counted in it too, shared with every replica using
    /// the same Redis ([`Authenticator::share_quota`]).
    pub fn redis(&mut self, cfg: &RedisConfig) -> RedisHandle {
        let handle = RedisHandle::default();
        self.spawn_check(CHECK_REDIS, RedisCheck { handle: handle.clone(), url: cfg.url.clone() });
        self.authenticator.share_quota(handle.clone());
        handle
    }

    fn start_kafka(&mut self) {
        let check = KafkaCheck {
            brokers: self.config.kafka.brokers.clone(),
            replication: self.config.kafka.replication_factor,
            retention: self.config.kafka.retention,
            specs: self.topic_specs.clone(),
            probe: client_config(&self.config.kafka.brokers).create().ok().map(Arc::new),
            topics_ready: false,
        };
        self.spawn_check(CHECK_KAFKA, check);
        let feed = TenantFeed {
            brokers: self.config.kafka.brokers.clone(),
            topic: self.topics.tenants(),
            service: self.service,
            registry: self.registry.clone(),
            readiness: self.readiness.clone(),
            metrics: self.metrics.clone(),
        };
        let shutdown = self.shutdown.clone();
        self.spawn(feed.run(shutdown));
    }

    /// Serves until shutdown, then runs the shutdown sequence: NOT_SERVING, drain gRPC,
    /// wait for the background work, close the admin port. The whole sequence shares one
    /// deadline, `shutdown_timeout` after the trigger; what has not finished by then is
    /// dropped (calls) or aborted (tasks).
    pub async fn serve(mut self, listeners: Listeners, mut routes: RoutesBuilder) -> anyhow::Result<()> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(centralita_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        routes.add_service(health_service).add_service(reflection).add_service(Authenticated::new(
            TenantApi::new(self.registry.clone()).into_server(),
            self.authenticator.clone(),
        ));

        self.start_kafka();
        if let Some(push) = self.metrics_push.take() {
            let (metrics, shutdown) = (self.metrics.clone(), self.shutdown.clone());
            self.spawn(crate::otlp_metrics::push(self.service, metrics, push, shutdown));
        }

        // Mirror readiness into gRPC health, for the server as a whole ("") and each API.
        let mut ready_rx = self.readiness.subscribe();
        let names = self.health_names.clone();
        let reporter = health_reporter.clone();
        let health_task = tokio::spawn(async move {
            loop {
                let status =
                    if *ready_rx.borrow_and_update() { ServingStatus::Serving } else { ServingStatus::NotServing };
                reporter.set_service_status("", status).await;
                for n in &names {
                    reporter.set_service_status(n, status).await;
                }
                if ready_rx.changed().await.is_err() {
                    return;
                }
            }
        });
        for n in std::iter::once("").chain(self.health_names.iter().map(String::as_str)) {
            health_reporter.set_service_status(n, ServingStatus::NotServing).await;
        }

        let grpc_addr = listeners.grpc_addr();
        let admin_addr = listeners.admin_addr();
        tracing::info!(service = self.service, %grpc_addr, %admin_addr, tls = self.tls.is_some(), "serving");

        let admin_stop = Shutdown::new();
        let admin = axum::serve(listeners.admin, crate::admin::router(self.readiness.clone(), self.metrics.clone()))
            .with_graceful_shutdown({
                let s = admin_stop.clone();
                async move { s.wait().await }
            });
        let mut admin_task = tokio::spawn(async move {
            if let Err(e) = admin.await {
                tracing::error!(error = %e, "admin server failed");
            }
        });

        let shutdown = self.shutdown.clone();
        let readiness = self.readiness.clone();
        // Calls are labelled with the methods of the descriptor sets served here, nothing else.
        let methods = crate::metrics::GrpcMethods::from_descriptor_sets(&[
            centralita_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ]);
        let router = tonic::transport::Server::builder()
            // HTTP/2 pings find a client that vanished without closing its connection (a
            // frontend whose network dropped): its streams end instead of hanging for the
            // kernel's retransmission timeout, so agent presence runs out on time.
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .trace_fn(crate::telemetry::grpc_span)
            // Browsers speak gRPC-Web over HTTP/1.1 (crate::grpc_web): CORS outermost, so a
            // preflight is answered before anything else, then tonic-web's translation to
            // the same gRPC services (and their authentication) as every other client.
            .accept_http1(true)
            .layer(self.config.grpc_web.cors())
            .layer(tonic_web::GrpcWebLayer::new())
            .add_routes(crate::metrics::instrument_grpc(routes.routes(), self.metrics.clone(), methods));
        let stopping = async move {
            shutdown.wait().await;
            readiness.set_shutting_down();
            tracing::info!("shutting down: NOT_SERVING, draining in-flight calls");
        };
        type Serving = std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;
        let mut grpc: Serving = match &self.tls {
            Some(tls) => {
                Box::pin(router.serve_with_incoming_shutdown(tls.incoming(no_delay(listeners.grpc)), stopping))
            }
            None => Box::pin(router.serve_with_incoming_shutdown(no_delay(listeners.grpc), stopping)),
        };
        // Serve until shutdown is triggered (or the gRPC server fails).
        let failed = tokio::select! {
            r = &mut grpc => Some(r),
            _ = self.shutdown.wait() => None,
        };
        // One deadline for the whole sequence, taken once, at the first signal: the gRPC
        // drain and the background work share it instead of each getting the full timeout,
        // so shutdown ends within CENTRALITA_SHUTDOWN_TIMEOUT, as the chart's grace period
        // assumes. (A second signal exits the process at once; see `Shutdown::on_signals`.)
        let timeout = self.config.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // Background work stops on the same trigger (and does, too, if gRPC failed first),
        // so consumers commit while gRPC drains.
        self.shutdown.trigger();
        let served = match failed {
            Some(r) => r,
            None => tokio::time::timeout_at(deadline, &mut grpc).await.unwrap_or_else(|_| {
                tracing::warn!(?timeout, "shutdown deadline passed while draining gRPC; closing remaining calls");
                Ok(())
            }),
        };
        drop(grpc);
        let drained =
            tokio::time::timeout_at(deadline, async { while self.background.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(?timeout, "background tasks did not stop within the shutdown deadline; aborting them");
            // Not joined: an aborted task may still be dropping a Kafka client, which blocks;
            // the deadline is what the pod's grace period counts on.
            self.background.abort_all();
        }
        health_task.abort();
        // The admin port answers /livez through the drain; it stops last, still within the
        // deadline.
        admin_stop.trigger();
        if tokio::time::timeout_at(deadline, &mut admin_task).await.is_err() {
            admin_task.abort();
        }
        tracing::info!("stopped");
        served.map_err(Into::into)
    }
}

/// Accepted gRPC connections with Nagle's algorithm off. A gRPC response is several small
/// writes (headers, data, trailers); with Nagle on, the later ones wait for the client's
/// delayed ACK, which adds up to 40 ms to a call or a streamed message.
fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Checks every service's configuration the same way (called from each service's tests):
/// the flags are consistent (clap's own assertions), and a bad common setting is refused
/// with the setting named. `required` holds the flags the service needs to parse at all.
/// Only with the `testkit` feature (tests).
#[cfg(feature = "testkit")]
pub fn assert_config_contract<S: clap::Args + Validate>(service: &'static str, required: &[&str]) {
    use clap::CommandFactory;
    ServiceArgs::<S>::command().debug_assert();
    let mut args = vec!["service", "--jwt-public-key-file", "/dev/null", "--kafka-partitions", "0"];
    args.extend_from_slice(required);
    let config = match parse_args::<S>(service, args) {
        Ok(c) => c,
        Err(e) => panic!("the service's flags do not parse: {e}"),
    };
    match config.validate() {
        Ok(()) => panic!("a partition count of 0 was accepted"),
        Err(e) => assert!(e.to_string().contains("CENTRALITA_KAFKA_PARTITIONS"), "{e}"),
    }
    let mut args = vec!["service", "--jwt-public-key-file", "/dev/null", "--kafka-fetch-wait-low-latency-ms", "0"];
    args.extend_from_slice(required);
    match parse_args::<S>(service, args) {
        Ok(_) => panic!("a fetch wait of 0 ms was accepted"),
        Err(e) => assert!(e.to_string().contains("kafka-fetch-wait-low-latency-ms"), "{e}"),
    }
}
