//! `centralita-operator`: the Kubernetes controller of the `Tenant` custom resource. It
//! owns: turning `Tenant` resources into the platform's tenant configuration on the tenants
//! topic, and their status and events. It keeps no state of its own.
//!
//! It runs on the platform [`Runtime`] like every service: the same thin `main`, flags and
//! `CENTRALITA_*` environment, gRPC port (health, reflection and the tenant API; the
//! operator has no API of its own), admin port (`/livez`, `/readyz`, `/metrics`), readiness
//! checks (Kafka, the tenant feed, and [`controller::KubernetesCheck`]) and shutdown
//! sequence: on SIGTERM the controller finishes its reconciles in flight within the
//! shutdown deadline.
//!
//! # Layout
//! - [`Config`]: flags and `CENTRALITA_*` environment of the operator.
//! - [`run`]: wires the controller onto the platform runtime; [`run_with_client`] does the
//!   same with a given Kubernetes client (tests pass a mocked API server).
//! - [`crd`]: the resource type; its CRD schema is generated from the platform's tenant
//!   spec (`centralita-operator crd` prints what `charts/centralita/crds/tenant.yaml` holds).
//! - [`reconcile`]: the decisions as pure functions (validation, status, backoff).
//! - [`controller`]: watches Tenants and carries the decisions out: finalizer, publication
//!   to the tenants topic, status conditions, events; the Kubernetes readiness check.
//! - [`metrics`]: the operator's Prometheus metrics (reconciles by result, their duration).

pub mod controller;
pub mod crd;
pub mod metrics;
pub mod reconcile;

use std::sync::Arc;

use anyhow::Context as _;
use centralita_platform::bus::Producer;
use centralita_platform::config::{ConfigError, ServiceArgs, Validate};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use kube::{Api, Client};

use crate::controller::{Context, KubernetesCheck};
use crate::crd::Tenant;

pub const SERVICE: &str = "operator";

/// The operator's own settings.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorSettings {
    /// Only this namespace's Tenants; every namespace when empty.
    #[arg(long, env = "CENTRALITA_WATCH_NAMESPACE", default_value = "")]
    pub watch_namespace: String,
}

impl Validate for OperatorSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let ns = &self.watch_namespace;
        let label = ns.len() <= 63
            && ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if label {
            Ok(())
        } else {
            Err(ConfigError::new("CENTRALITA_WATCH_NAMESPACE", "must be empty or a Kubernetes namespace name"))
        }
    }
}

/// Flags and `CENTRALITA_*` environment: the common ones plus the operator's own.
pub type Config = ServiceArgs<OperatorSettings>;

/// Runs the operator on `listeners` until `shutdown`, with the Kubernetes client of its
/// environment (in-cluster service account, or the kubeconfig).
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let client =
        Client::try_default().await.context("no Kubernetes client configuration (in-cluster or kubeconfig)")?;
    run_with_client(config, client, listeners, shutdown).await
}

/// [`run`] with a given Kubernetes client.
pub async fn run_with_client(
    config: Config,
    client: Client,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let metrics = metrics::Metrics::new(&runtime.metrics);
    // The runtime creates the tenants topic (compacted, one partition) at start-up.
    let topic = runtime.topics.tenants();
    let producer = Producer::new(&config.common.kafka.brokers, Some(runtime.metrics.clone()))?;
    let namespace = &config.service.watch_namespace;
    let api: Api<Tenant> =
        if namespace.is_empty() { Api::all(client.clone()) } else { Api::namespaced(client.clone(), namespace) };
    runtime.spawn_check(KubernetesCheck::NAME, KubernetesCheck::new(api.clone()));
    tracing::info!(%topic, namespace = %namespace, "operator watching Tenants");
    let ctx = Arc::new(Context::new(client, producer, topic, metrics));
    // On shutdown the controller takes no new work and finishes the reconciles in flight.
    // (One that never completed its first list, the API server unreachable since start,
    // waits for it even then: the runtime's shutdown deadline aborts it.)
    let stop = runtime.shutdown.clone();
    runtime.spawn(controller::run(api, ctx, async move { stop.wait().await }));
    runtime.serve(listeners, tonic::service::RoutesBuilder::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_contract() {
        centralita_platform::server::assert_config_contract::<OperatorSettings>(SERVICE, &[]);
    }

    #[test]
    fn the_watched_namespace_is_empty_or_a_namespace_name() {
        let ok = |ns: &str| OperatorSettings { watch_namespace: ns.into() }.validate().is_ok();
        assert!(ok("") && ok("contact-center") && ok("ns1"));
        assert!(!ok("Contact_Center") && !ok("-ns") && !ok(&"n".repeat(64)));
    }
}
