//! `centralita-operator run` (the controller) and `centralita-operator crd` (prints the
//! Tenant CRD generated from the Rust types).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use centralita_operator::controller::{self, Context};
use centralita_operator::crd::{self, Tenant};
use centralita_platform::bus::{ensure_topics, Producer, TopicSpec, Topics};
use centralita_platform::config::{KafkaConfig, TelemetryConfig};
use centralita_platform::health::Readiness;
use centralita_platform::metrics::Metrics;
use centralita_platform::shutdown::Shutdown;
use clap::{Parser, Subcommand};
use kube::{Api, Client};

#[derive(Debug, Parser)]
#[command(name = "centralita-operator", version, about = "Reconciles Tenant resources into the platform")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch Tenants and reconcile them (the default).
    Run(RunArgs),
    /// Print the Tenant CRD (YAML).
    Crd,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    telemetry: TelemetryConfig,
    /// Admin HTTP port (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "CENTRALITA_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    admin_addr: SocketAddr,
    /// Only this namespace's Tenants; every namespace when empty.
    #[arg(long, env = "CENTRALITA_WATCH_NAMESPACE", default_value = "")]
    watch_namespace: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => match crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Run(args)) => run_blocking(args),
        None => run_blocking(RunArgs::parse_from(["centralita-operator"])),
    }
}

impl RunArgs {
    fn parse_from<I: IntoIterator<Item = &'static str>>(args: I) -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            run: RunArgs,
        }
        Only::parse_from(args).run
    }
}

fn run_blocking(args: RunArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            eprintln!("centralita-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let _telemetry = centralita_platform::telemetry::init("operator", &args.telemetry)?;
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let readiness = Readiness::new();
    readiness.register("kafka");
    readiness.register("kubernetes");
    let metrics = Arc::new(Metrics::new("operator"));
    let admin = tokio::net::TcpListener::bind(args.admin_addr).await?;
    let router = centralita_platform::admin::router(readiness.clone(), metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, router).await {
            tracing::error!(error = %e, "admin port stopped");
        }
    });

    let topic = Topics::new(args.kafka.topic_prefix.clone()).tenants();
    loop {
        match ensure_topics(
            &args.kafka.brokers,
            args.kafka.replication_factor,
            &[TopicSpec { name: topic.clone(), partitions: 1, compacted: true }],
        )
        .await
        {
            Ok(()) => break,
            Err(e) => {
                readiness.set("kafka", false, e.to_string());
                tracing::warn!(error = %e, "the broker is not reachable yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
    readiness.set("kafka", true, "ok");
    let producer = Producer::new(&args.kafka.brokers, None)?;
    let client = Client::try_default().await?;
    let api: Api<Tenant> = if args.watch_namespace.is_empty() {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &args.watch_namespace)
    };
    api.list(&kube::api::ListParams::default().limit(1)).await?;
    readiness.set("kubernetes", true, "ok");
    tracing::info!(%topic, namespace = %args.watch_namespace, "operator watching Tenants");
    let ctx = Arc::new(Context::new(client, producer, topic));
    let sd = shutdown.clone();
    controller::run(api, ctx, async move { sd.wait().await }).await;
    Ok(())
}
