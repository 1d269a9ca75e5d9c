//! `centralita`: the admin CLI (crate `centralita-cli`). It owns the command line of the
//! platform outside Kubernetes: publishing tenant configuration to the tenants topic (what
//! the operator does for `Tenant` resources), minting development tokens, and checking that
//! the services are up. It keeps no state: the compacted tenants topic is the truth, read
//! back with `centralita_platform::tenant_feed::load_snapshot`.
//!
//! # Commands
//! - `admin tenant apply -f FILE [--dry-run]` validates every `---`-separated `Tenant`
//!   document (`TenantManifest::parse_all`, the validation the operator uses too). An
//!   invalid document, or a manifest moving an onboarded tenant to another agent pool,
//!   refuses the whole file: exit 2, nothing published. Otherwise it creates the tenants
//!   topic if missing (compacted, one partition) and publishes each tenant keyed by its id.
//!   `--dry-run` validates only and needs no broker.
//! - `admin tenant list` and `get ID` read the topic's current state (a table, YAML or
//!   JSON manifests); `suspend ID` and `resume ID` publish the current tenant again with
//!   the new status.
//! - `token mint` signs a JWT with an Ed25519 private key (the development key of
//!   `deploy/local/dev-keys/` locally): subject, tenant, roles, agent id, lifetime, and an
//!   optional issue time for tokens that are already expired.
//! - `admin agent upsert --id ID --queue TENANT/QUEUE… --capacity CHANNEL=N…` creates or
//!   changes a BPO agent through sessions' `UpsertAgent` (with a short-lived BPO-admin token
//!   minted from the key): queue assignments, per-channel capacity, skills, languages; every
//!   flag is checked here first (exit 2 naming it), then sessions validates again.
//!   `admin agent list` prints the agents with their pool, state and assignments.
//! - `status --endpoints name=host:port,...` mints a short-lived BPO-admin token and shows
//!   each service's gRPC health and the tenants its `TenantService` lists; `--wait` polls
//!   until every one is SERVING (and sees `--expect-tenant`).
//!
//! Exit codes: 0 success, 2 invalid input, 1 anything else (e.g. the broker is down).
//!
//! # Layout
//! One file, no library: nothing links the CLI, and what it shares with the services
//! (manifest validation, token signing, topic names, the tenant snapshot) lives in
//! `centralita-platform`.
//! - `Cli`, `Command`, `AdminCommand`, `TenantCommand`, `TokenCommand`, `StatusArgs`,
//!   `KafkaArgs`, `Output`: the clap command tree, with `CENTRALITA_*` environment for the
//!   brokers, topic prefix, key file, issuer and audience.
//! - `main`, `dispatch`: a two-thread runtime, then the command; `token mint` is handled in
//!   `dispatch`. `Failure` carries the exit code (`InvalidArgument` gives 2 and every bad
//!   field).
//! - `tenant`, `publish`, `current`, `set_status`, `print_manifests`: the tenant commands.
//! - `status`, `probe`, `Seen`: the status table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use centralita_platform::auth::{Role, Signer, TokenRequest};
use centralita_platform::bus::{ensure_topics, Event, Producer, TopicSpec, Topics};
use centralita_platform::config::parse_duration;
use centralita_platform::error::FieldViolation;
use centralita_platform::tenant::{Tenant, TenantId, TenantManifest, TenantStatus};
use centralita_platform::tenant_feed::load_snapshot;
use centralita_platform::tls::{lazy_channel, Tls, TlsConfig};
use centralita_platform::Error;
use centralita_proto::sessions::v1 as sessions;
use centralita_proto::tenancy::v1 as pb;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "centralita", version, about = "Centralita admin CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long = "kafka-brokers", env = "CENTRALITA_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic name prefix of the installation.
    #[arg(long = "kafka-topic-prefix", env = "CENTRALITA_KAFKA_TOPIC_PREFIX", default_value = "centralita.")]
    topic_prefix: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Platform administration (BPO operator).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Development tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// gRPC health of each service and the tenants each one sees.
    Status(StatusArgs),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Tenants (client companies).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// BPO agents (shared by the tenants of a pool), through sessions.
    Agent {
        // Boxed: its API arguments (endpoints, key, TLS files) outweigh the tenant commands.
        #[command(subcommand)]
        command: Box<AgentCommand>,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Create or change an agent: its queues, capacity per channel, skills and languages.
    Upsert {
        /// Agent id (`agents/{id}`): 1-64 of a-z, 0-9, '-', '_', '.'.
        #[arg(long)]
        id: String,
        #[arg(long)]
        display_name: Option<String>,
        /// `tenant/queue` (repeatable): the queues the agent serves.
        #[arg(long = "queue", required = true)]
        queues: Vec<String>,
        /// `channel=N` (repeatable): voice, chat, sms, email; N contacts at once, 1-20.
        #[arg(long = "capacity", required = true)]
        capacity: Vec<String>,
        /// `skill=level` (repeatable), level 1-5.
        #[arg(long = "skill")]
        skills: Vec<String>,
        /// Language tags (repeatable), e.g. es, en.
        #[arg(long = "language")]
        languages: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Every agent: pool, state, assignments, contacts held.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Where sessions is, and the key the CLI mints its BPO-admin token with.
#[derive(Debug, clap::Args)]
struct ApiArgs {
    /// `name=host:port` of the services (sessions is used), comma-separated.
    #[arg(long, env = "CENTRALITA_ENDPOINTS", value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    #[arg(long, env = "CENTRALITA_JWT_PRIVATE_KEY_FILE")]
    private_key_file: PathBuf,
    #[arg(long, env = "CENTRALITA_JWT_ISSUER", default_value = "centralita")]
    issuer: String,
    #[arg(long, env = "CENTRALITA_JWT_AUDIENCE", default_value = "centralita-api")]
    audience: String,
    #[command(flatten)]
    tls: TlsConfig,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Validate a tenant file (one or more `---`-separated Tenant documents) and publish it.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Validate only; publish nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// List the current tenants.
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Show one tenant as a manifest.
    Get {
        id: String,
        #[arg(short, long, value_enum, default_value = "yaml")]
        output: Output,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Suspend a tenant: every service refuses its calls.
    Suspend {
        id: String,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Make a suspended tenant active again.
    Resume {
        id: String,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a signed JWT and print it.
    Mint {
        #[arg(long, default_value = "dev")]
        subject: String,
        /// Tenant id; omit only for bpo_admin.
        #[arg(long)]
        tenant: Option<String>,
        /// Role (repeatable): bpo_admin, tenant_admin, supervisor, agent.
        #[arg(long = "role", required = true)]
        roles: Vec<Role>,
        #[arg(long)]
        agent_id: Option<String>,
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// Issue time, Unix seconds (default now); with --ttl, makes tokens that are
        /// already expired, to test how clients and services handle them.
        #[arg(long)]
        issued_at: Option<i64>,
        #[arg(long, env = "CENTRALITA_JWT_PRIVATE_KEY_FILE")]
        private_key_file: PathBuf,
        #[arg(long, env = "CENTRALITA_JWT_ISSUER", default_value = "centralita")]
        issuer: String,
        #[arg(long, env = "CENTRALITA_JWT_AUDIENCE", default_value = "centralita-api")]
        audience: String,
    },
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// `name=host:port` of each service's gRPC port, comma-separated.
    #[arg(long, env = "CENTRALITA_ENDPOINTS", value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Keep polling up to this long until every service is SERVING (and sees --expect-tenant).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    wait: Duration,
    /// Fail unless every service sees this tenant.
    #[arg(long)]
    expect_tenant: Option<String>,
    #[arg(long, env = "CENTRALITA_JWT_PRIVATE_KEY_FILE")]
    private_key_file: PathBuf,
    #[arg(long, env = "CENTRALITA_JWT_ISSUER", default_value = "centralita")]
    issuer: String,
    #[arg(long, env = "CENTRALITA_JWT_AUDIENCE", default_value = "centralita-api")]
    audience: String,
    /// The services' mutual TLS: the CLI presents this certificate (one the services' CA
    /// signed) and checks theirs.
    #[command(flatten)]
    tls: TlsConfig,
}

/// The CLI's certificate for the services' mutual TLS, read once per command (exit 2 when
/// the files are set but do not load); none when `CENTRALITA_TLS_*` are unset.
fn load_tls(config: &TlsConfig) -> Result<Option<Arc<Tls>>, Failure> {
    Tls::from_config(config).map_err(|e| Failure { code: 2, message: e.to_string() })
}

/// A lazily connected channel to the gRPC port at `addr` (`host:port`): over mutual TLS
/// when `tls` is given.
fn grpc_channel(addr: &str, tls: Option<&Arc<Tls>>, timeout: Duration) -> Result<tonic::transport::Channel, Failure> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    lazy_channel(&format!("{scheme}://{addr}"), tls, |e| e.connect_timeout(timeout).timeout(timeout))
        .map_err(|m| Failure { code: 2, message: format!("address {m}") })
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(v) => Failure {
                code: 2,
                message: std::iter::once("invalid input:".to_string())
                    .chain(v.iter().map(|f| format!("  {}: {}", f.field, f.description)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            },
            other => Failure { code: 1, message: other.to_string() },
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure { code: 1, message: format!("{e:#}") }
    }
}

type CliResult = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(command: Command) -> CliResult {
    match command {
        Command::Admin { command: AdminCommand::Tenant { command } } => tenant(command).await,
        Command::Admin { command: AdminCommand::Agent { command } } => agent(*command).await,
        Command::Token {
            command:
                TokenCommand::Mint { subject, tenant, roles, agent_id, ttl, issued_at, private_key_file, issuer, audience },
        } => {
            let signer = Signer::from_file(&private_key_file, &issuer, &audience)
                .map_err(|m| Failure { code: 2, message: m })?;
            let tenant = tenant.map(|t| TenantId::parse(&t).map_err(|m| Error::invalid("--tenant", m))).transpose()?;
            if tenant.is_none() && !roles.contains(&Role::BpoAdmin) {
                return Err(Error::invalid("--tenant", "is required unless --role bpo_admin").into());
            }
            let request = TokenRequest { subject, tenant, roles, agent_id, ttl };
            let token = signer.mint_at(&request, issued_at.unwrap_or_else(|| chrono::Utc::now().timestamp()))?;
            println!("{token}");
            Ok(())
        }
        Command::Status(args) => status(args).await,
    }
}

/// Publishes `tenants` to the tenants topic (its callers have made sure the topic exists:
/// `apply` creates it, `suspend` and `resume` read the tenant from it first).
async fn publish(kafka: &KafkaArgs, tenants: &[Tenant]) -> CliResult {
    let topic = Topics::new(kafka.topic_prefix.clone()).tenants();
    let producer = Producer::new(&kafka.brokers, None)?;
    for t in tenants {
        let event = Event::new(t.id.clone(), &pb::Tenant::from(t));
        let (partition, offset) = producer.publish(&topic, t.id.as_str(), &event).await?;
        println!(
            "tenant/{} {} ({}; {topic} partition {partition} offset {offset})",
            t.id,
            if t.is_active() { "configured" } else { "configured (suspended)" },
            t.display_name
        );
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

async fn current(kafka: &KafkaArgs, id: &str) -> Result<Tenant, Failure> {
    let id = TenantId::parse(id).map_err(|m| Error::invalid("tenant id", m))?;
    let topic = Topics::new(kafka.topic_prefix.clone()).tenants();
    let registry = load_snapshot(&kafka.brokers, &topic, Duration::from_secs(15)).await?;
    registry
        .get(&id)
        .map(|t| t.as_ref().clone())
        .ok_or_else(|| Failure { code: 1, message: format!("tenant `{id}` is not onboarded") })
}

async fn tenant(command: TenantCommand) -> CliResult {
    match command {
        TenantCommand::Apply { file, dry_run, kafka } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure { code: 2, message: format!("cannot read {}: {e}", file.display()) })?;
            let tenants = TenantManifest::parse_all(&text, chrono::Utc::now()).map_err(|e| {
                let mut f = Failure::from(e);
                f.message = format!("{} was refused, nothing published. {}", file.display(), f.message);
                f
            })?;
            if dry_run {
                for t in &tenants {
                    println!("tenant/{} valid (dry run, not published)", t.id);
                }
                return Ok(());
            }
            // A tenant's agent pool is fixed once it is onboarded (sessions pins it at first
            // use): a manifest moving it is refused whole.
            let topic = Topics::new(kafka.topic_prefix.clone()).tenants();
            ensure_topics(&kafka.brokers, 1, &[TopicSpec { name: topic.clone(), partitions: 1, compacted: true }])
                .await?;
            let onboarded = load_snapshot(&kafka.brokers, &topic, Duration::from_secs(15)).await?;
            let moved: Vec<String> = tenants
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let now = onboarded.get(&t.id)?;
                    (now.routing.agent_pool != t.routing.agent_pool).then(|| {
                        format!(
                            "document {}: spec.routing.agentPool: tenant {} is in agent pool `{}`; a tenant's pool cannot change",
                            i + 1,
                            t.id,
                            now.routing.agent_pool
                        )
                    })
                })
                .collect();
            if !moved.is_empty() {
                return Err(Failure {
                    code: 2,
                    message: format!("{} was refused, nothing published. {}", file.display(), moved.join("; ")),
                });
            }
            publish(&kafka, &tenants).await
        }
        TenantCommand::List { output, kafka } => {
            let topic = Topics::new(kafka.topic_prefix.clone()).tenants();
            let registry = load_snapshot(&kafka.brokers, &topic, Duration::from_secs(15)).await?;
            let tenants = registry.list();
            match output {
                Output::Table => {
                    println!(
                        "{:<24} {:<28} {:<10} {:<28} {:>10} UPDATED",
                        "ID", "NAME", "STATUS", "CHANNELS", "SL TARGET"
                    );
                    for t in tenants {
                        let channels: Vec<String> =
                            t.channels.iter().map(|c| format!("{c:?}").to_lowercase()).collect();
                        println!(
                            "{:<24} {:<28} {:<10} {:<28} {:>10} {}",
                            t.id,
                            t.display_name,
                            format!("{:?}", t.status).to_lowercase(),
                            channels.join(","),
                            format!("{}%/{}s", t.service_level.target_percent, t.service_level.threshold.as_secs()),
                            t.updated_at.format("%Y-%m-%dT%H:%M:%SZ")
                        );
                    }
                }
                Output::Yaml | Output::Json => {
                    let manifests: Vec<TenantManifest> =
                        tenants.iter().map(|t| TenantManifest::from(t.as_ref())).collect();
                    print_manifests(&manifests, output)?;
                }
            }
            Ok(())
        }
        TenantCommand::Get { id, output, kafka } => {
            let t = current(&kafka, &id).await?;
            print_manifests(&[TenantManifest::from(&t)], output)
        }
        TenantCommand::Suspend { id, kafka } => set_status(&kafka, &id, TenantStatus::Suspended).await,
        TenantCommand::Resume { id, kafka } => set_status(&kafka, &id, TenantStatus::Active).await,
    }
}

async fn set_status(kafka: &KafkaArgs, id: &str, status: TenantStatus) -> CliResult {
    let mut t = current(kafka, id).await?;
    t.status = status;
    t.updated_at = chrono::Utc::now();
    publish(kafka, &[t]).await
}

fn print_manifests(manifests: &[TenantManifest], output: Output) -> CliResult {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(manifests).map_err(anyhow::Error::from)?),
        _ => {
            for m in manifests {
                print!("---\n{}", serde_yaml::to_string(m).map_err(anyhow::Error::from)?);
            }
        }
    }
    Ok(())
}

/// One service's answer to `status`.
struct Seen {
    name: String,
    addr: String,
    health: String,
    tenants: Vec<String>,
}

async fn probe(name: &str, addr: &str, token: &str, tls: Option<&Arc<Tls>>) -> Seen {
    let mut seen = Seen { name: name.into(), addr: addr.into(), health: "UNREACHABLE".into(), tenants: vec![] };
    let channel = match grpc_channel(addr, tls, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(f) => {
            seen.health = "BAD ADDRESS".into();
            eprintln!("{name}: {}", f.message);
            return seen;
        }
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    seen.health = match health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await {
        Ok(r) => format!("{:?}", r.into_inner().status()).to_uppercase(),
        // Not connected: refused, nothing listening, or a TLS handshake that failed.
        Err(s) if s.code() == tonic::Code::Unavailable => return seen,
        Err(s) => format!("ERROR {:?}", s.code()),
    };
    let mut client = pb::tenant_service_client::TenantServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::ListTenantsRequest { page_size: 1000, page_token: String::new() });
    if let Ok(v) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", v);
    }
    if let Ok(r) = client.list_tenants(request).await {
        seen.tenants = r
            .into_inner()
            .tenants
            .into_iter()
            .map(|t| {
                let suspended = t.status == pb::TenantStatus::Suspended as i32;
                let id = t.name.trim_start_matches("tenants/").to_string();
                if suspended {
                    format!("{id}(suspended)")
                } else {
                    id
                }
            })
            .collect();
    }
    seen
}

async fn status(args: StatusArgs) -> CliResult {
    let tls = load_tls(&args.tls)?;
    let signer = Signer::from_file(&args.private_key_file, &args.issuer, &args.audience)
        .map_err(|m| Failure { code: 2, message: m })?;
    let token = signer.mint(&TokenRequest {
        subject: "centralita-status".into(),
        tenant: None,
        roles: vec![Role::BpoAdmin],
        agent_id: None,
        ttl: Duration::from_secs(300),
    })?;
    let mut targets = Vec::new();
    for e in &args.endpoints {
        let (name, addr) =
            e.split_once('=').ok_or_else(|| Error::invalid("--endpoints", format!("`{e}` is not name=host:port")))?;
        targets.push((name.to_string(), addr.to_string()));
    }
    let deadline = tokio::time::Instant::now() + args.wait;
    loop {
        let mut results = Vec::new();
        for (name, addr) in &targets {
            results.push(probe(name, addr, &token, tls.as_ref()).await);
        }
        let good = |s: &Seen| {
            s.health == "SERVING" && args.expect_tenant.as_ref().is_none_or(|t| s.tenants.iter().any(|x| x == t))
        };
        let all_good = results.iter().all(good);
        if all_good || tokio::time::Instant::now() >= deadline {
            println!("{:<12} {:<22} {:<14} TENANTS", "SERVICE", "GRPC", "HEALTH");
            for s in &results {
                println!("{:<12} {:<22} {:<14} {}", s.name, s.addr, s.health, s.tenants.join(", "));
            }
            return if all_good {
                Ok(())
            } else {
                Err(Failure { code: 1, message: "not every service is SERVING with the expected tenant".into() })
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The agent `upsert` describes, checked flag by flag (every bad flag named at once).
fn agent_of(
    id: &str,
    display_name: Option<String>,
    queues: &[String],
    capacity: &[String],
    skills: &[String],
    languages: Vec<String>,
) -> Result<sessions::Agent, Error> {
    let mut bad = Vec::new();
    let valid_id = !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !valid_id {
        bad.push(FieldViolation::new(
            "--id",
            "must be 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit",
        ));
    }
    let mut assignments = Vec::new();
    for q in queues {
        match q.split_once('/') {
            Some((t, queue)) if TenantId::parse(t).is_ok() && !queue.is_empty() && !queue.contains('/') => {
                assignments.push(sessions::QueueAssignment { tenant: t.to_owned(), queue: queue.to_owned() })
            }
            _ => bad.push(FieldViolation::new("--queue", format!("`{q}` is not tenant/queue"))),
        }
    }
    let mut caps = Vec::new();
    for c in capacity {
        let parsed = c.split_once('=').and_then(|(ch, n)| {
            let channel = match ch {
                "voice" => pb::Channel::Voice,
                "chat" => pb::Channel::Chat,
                "sms" => pb::Channel::Sms,
                "email" => pb::Channel::Email,
                _ => return None,
            };
            n.parse::<u32>().ok().filter(|n| (1..=20).contains(n)).map(|n| (channel, n))
        });
        match parsed {
            Some((channel, n)) if !caps.iter().any(|x: &sessions::ChannelCapacity| x.channel == channel as i32) => {
                caps.push(sessions::ChannelCapacity { channel: channel as i32, max_contacts: n, exclusive: false })
            }
            _ => bad.push(FieldViolation::new(
                "--capacity",
                format!("`{c}` is not channel=N (voice, chat, sms, email once each; 1-20)"),
            )),
        }
    }
    let mut skill_map = std::collections::HashMap::new();
    for sk in skills {
        match sk
            .split_once('=')
            .and_then(|(k, v)| v.parse::<u32>().ok().filter(|v| (1..=5).contains(v)).map(|v| (k, v)))
        {
            Some((k, v)) if !k.is_empty() => {
                skill_map.insert(k.to_owned(), v);
            }
            _ => bad.push(FieldViolation::new("--skill", format!("`{sk}` is not skill=level (1-5)"))),
        }
    }
    if !bad.is_empty() {
        return Err(Error::InvalidArgument(bad));
    }
    Ok(sessions::Agent {
        name: format!("agents/{id}"),
        display_name: display_name.unwrap_or_else(|| id.to_owned()),
        queues: assignments,
        skills: skill_map,
        languages,
        capacity: caps,
        ..Default::default()
    })
}

/// `message` with the bearer token.
fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

async fn agent(command: AgentCommand) -> CliResult {
    let api = match &command {
        AgentCommand::Upsert { api, .. } | AgentCommand::List { api } => api,
    };
    let addr = api
        .endpoints
        .iter()
        .find_map(|e| e.strip_prefix("sessions="))
        .ok_or_else(|| Failure { code: 2, message: "--endpoints has no sessions=host:port".into() })?;
    let signer = Signer::from_file(&api.private_key_file, &api.issuer, &api.audience)
        .map_err(|m| Failure { code: 2, message: m })?;
    let token = signer.mint_at(
        &TokenRequest {
            subject: "centralita-cli".into(),
            tenant: None,
            roles: vec![Role::BpoAdmin],
            agent_id: None,
            ttl: Duration::from_secs(300),
        },
        chrono::Utc::now().timestamp(),
    )?;
    let channel = grpc_channel(addr, load_tls(&api.tls)?.as_ref(), Duration::from_secs(10))?;
    let mut client = sessions::agent_service_client::AgentServiceClient::new(channel);
    let failed = |s: tonic::Status| Failure {
        code: if s.code() == tonic::Code::InvalidArgument { 2 } else { 1 },
        message: format!("sessions refused ({:?}): {}", s.code(), s.message()),
    };
    match command {
        AgentCommand::Upsert { id, display_name, queues, capacity, skills, languages, .. } => {
            let agent = agent_of(&id, display_name, &queues, &capacity, &skills, languages)?;
            let saved = client
                .upsert_agent(with_token(&token, sessions::UpsertAgentRequest { agent: Some(agent) }))
                .await
                .map_err(failed)?
                .into_inner();
            println!("{} saved (pool {}, {} queue(s))", saved.name, saved.agent_pool, saved.queues.len());
        }
        AgentCommand::List { .. } => {
            println!("{:<28} {:<10} {:<10} {:>8} QUEUES", "AGENT", "POOL", "STATE", "CONTACTS");
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_agents(with_token(&token, sessions::ListAgentsRequest { page_size: 500, page_token }))
                    .await
                    .map_err(failed)?
                    .into_inner();
                for a in &page.agents {
                    let queues: Vec<String> = a.queues.iter().map(|q| format!("{}/{}", q.tenant, q.queue)).collect();
                    println!(
                        "{:<28} {:<10} {:<10} {:>8} {}",
                        a.name.trim_start_matches("agents/"),
                        a.agent_pool,
                        format!("{:?}", a.state()).to_lowercase(),
                        a.contacts.len(),
                        queues.join(",")
                    );
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: Error) -> Vec<String> {
        match e {
            Error::InvalidArgument(v) => v.iter().map(|f| f.field.to_string()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_agent_is_built_from_its_flags() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = agent_of(
            "ana-1",
            None,
            &s(&["acme/support", "globex/claims"]),
            &s(&["chat=2", "voice=1"]),
            &s(&["es=5"]),
            s(&["es"]),
        )
        .unwrap();
        assert_eq!(a.name, "agents/ana-1");
        assert_eq!(a.display_name, "ana-1");
        assert_eq!(
            a.queues.iter().map(|q| (q.tenant.as_str(), q.queue.as_str())).collect::<Vec<_>>(),
            [("acme", "support"), ("globex", "claims")]
        );
        assert_eq!(
            a.capacity.iter().map(|c| (c.channel, c.max_contacts)).collect::<Vec<_>>(),
            [(pb::Channel::Chat as i32, 2), (pb::Channel::Voice as i32, 1)]
        );
        assert_eq!(a.skills.get("es"), Some(&5));
    }

    #[test]
    fn every_bad_flag_is_named() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let e = agent_of(
            "Ana Gil",
            None,
            &s(&["acme", "Acme/x", "a/b/c"]),
            &s(&["chat=0", "fax=1", "chat=2", "chat=3"]),
            &s(&["es=9", "=2"]),
            vec![],
        )
        .unwrap_err();
        let f = fields(e);
        assert_eq!(f.iter().filter(|x| *x == "--id").count(), 1, "{f:?}");
        assert_eq!(f.iter().filter(|x| *x == "--queue").count(), 3, "{f:?}");
        // chat=0 and fax=1 are not capacities; the second chat is a repeat.
        assert_eq!(f.iter().filter(|x| *x == "--capacity").count(), 3, "{f:?}");
        assert_eq!(f.iter().filter(|x| *x == "--skill").count(), 2, "{f:?}");
    }
}
