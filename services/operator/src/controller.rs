//! The controller: watches `Tenant` resources and carries out [`crate::reconcile`]'s
//! decisions against the Kubernetes API and the tenants topic.
//!
//! - A resource without the finalizer gets it first (nothing is published before the
//!   operator can also suspend it on deletion).
//! - A valid resource is published (the same record the CLI publishes: key tenant id,
//!   `centralita.tenancy.v1.Tenant`), then its status says Ready=True for its generation;
//!   it is re-published every hour (idempotent: consumers upsert by tenant id).
//! - An invalid resource is not published; Ready=False, reason InvalidSpec, the message
//!   lists every field; a Warning event says the same.
//! - A deleted resource publishes the tenant suspended, then the finalizer is removed.
//! - Failures are retried per resource with backoff (5 s doubling to 5 minutes).
//! - Every reconcile is counted by result and timed ([`crate::metrics`]).
//! - [`KubernetesCheck`] is the runtime's readiness check of the Kubernetes API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use centralita_platform::bus::{Event, Producer};
use centralita_platform::tenant::Tenant as TenantConfig;
use centralita_proto::tenancy::v1 as pb;
use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use crate::crd::Tenant;
use crate::metrics::{Metrics, ReconcileResult};
use crate::reconcile::{self, Outcome, FINALIZER};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("publishing the tenant: {0}")]
    Bus(#[from] centralita_platform::error::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the resource has no namespace")]
    NoNamespace,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub producer: Producer,
    /// The tenants topic (`<prefix>tenants`).
    pub topic: String,
    pub recorder: Recorder,
    pub metrics: Metrics,
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, producer: Producer, topic: String, metrics: Metrics) -> Self {
        let reporter = Reporter { controller: "centralita-operator".into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, producer, topic, recorder, metrics, failures: Mutex::default() }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(t: &Tenant) -> String {
    format!("{}/{}", t.namespace().unwrap_or_default(), t.name_any())
}

/// One reconcile of `resource`, counted by result and timed.
#[tracing::instrument(skip_all, fields(tenant = %resource.name_any()))]
pub async fn reconcile(resource: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    // Without the finalizer, `finalizer` adds it (or, on a deleted resource, lets it go)
    // and calls neither `apply` nor `cleanup`.
    let untouched = if resource.metadata.deletion_timestamp.is_some() {
        ReconcileResult::Deleted
    } else {
        ReconcileResult::Finalized
    };
    let done = OnceLock::new();
    let result = finalize(resource, &ctx, &done).await;
    let what = match &result {
        Ok(_) => done.get().copied().unwrap_or(untouched),
        Err(_) => ReconcileResult::Error,
    };
    ctx.metrics.reconciled(what, started.elapsed());
    result
}

async fn finalize(resource: Arc<Tenant>, ctx: &Context, done: &OnceLock<ReconcileResult>) -> Result<Action, Error> {
    let ns = resource.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<Tenant> = Api::namespaced(ctx.client.clone(), &ns);
    let name = key(&resource);
    let result = finalizer(&api, FINALIZER, resource, |event| async {
        let (action, what) = match event {
            Finalizer::Apply(t) => apply(&t, ctx, &api).await?,
            Finalizer::Cleanup(t) => (cleanup(&t, ctx).await?, ReconcileResult::Deleted),
        };
        let _ = done.set(what);
        Ok::<_, Error>(action)
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.failures().remove(&name);
    }
    result
}

/// Retry with per-resource backoff.
pub fn error_policy(resource: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures();
    let n = failures.entry(key(&resource)).or_insert(0);
    let delay = reconcile::backoff(*n);
    *n = n.saturating_add(1);
    tracing::warn!(tenant = %resource.name_any(), error = %error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

async fn publish(ctx: &Context, config: &TenantConfig) -> Result<(), Error> {
    let event = Event::new(config.id.clone(), &pb::Tenant::from(config));
    ctx.producer.publish(&ctx.topic, config.id.as_str(), &event).await?;
    Ok(())
}

async fn apply(resource: &Tenant, ctx: &Context, api: &Api<Tenant>) -> Result<(Action, ReconcileResult), Error> {
    let now = chrono::Utc::now();
    let (outcome, action) = match reconcile::validate(resource, now) {
        Ok(config) => {
            publish(ctx, &config).await?;
            (Outcome::Published, Action::requeue(Duration::from_secs(3600)))
        }
        Err(violations) => (Outcome::Invalid(reconcile::describe(&violations)), Action::await_change()),
    };
    let status = reconcile::status(resource, &outcome, now);
    let worth_an_event = reconcile::changed(resource, &status);
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&resource.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    if worth_an_event {
        let (type_, reason, note) = match &outcome {
            Outcome::Published => {
                (EventType::Normal, "Published", "tenant configuration published to the platform".to_owned())
            }
            Outcome::Invalid(why) => (EventType::Warning, "InvalidSpec", why.clone()),
        };
        record(ctx, resource, type_, reason, note).await;
    }
    let what = match outcome {
        Outcome::Invalid(_) => ReconcileResult::Invalid,
        Outcome::Published if worth_an_event => ReconcileResult::Applied,
        Outcome::Published => ReconcileResult::Unchanged,
    };
    Ok((action, what))
}

async fn cleanup(resource: &Tenant, ctx: &Context) -> Result<Action, Error> {
    // A resource that never validated was never published: nothing to suspend.
    if let Ok(config) = reconcile::validate(resource, chrono::Utc::now()) {
        publish(ctx, &reconcile::suspended(config)).await?;
        record(
            ctx,
            resource,
            EventType::Normal,
            "Suspended",
            "tenant suspended: its Tenant resource was deleted".into(),
        )
        .await;
    }
    Ok(Action::await_change())
}

/// Events are best effort: a failure is logged, never fails the reconcile.
async fn record(ctx: &Context, resource: &Tenant, type_: EventType, reason: &str, note: String) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &resource.object_ref(&())).await {
        tracing::warn!(error = %e, tenant = %resource.name_any(), "could not record an event");
    }
}

/// The readiness check of the Kubernetes API: the operator's Tenants can be listed (what
/// its watch needs, with its RBAC).
#[derive(Debug, Clone)]
pub struct KubernetesCheck {
    api: Api<Tenant>,
}

impl KubernetesCheck {
    pub const NAME: &'static str = "kubernetes";

    pub fn new(api: Api<Tenant>) -> Self {
        Self { api }
    }
}

impl centralita_platform::server::Check for KubernetesCheck {
    async fn probe(&mut self) -> centralita_platform::Result<()> {
        self.api
            .list(&ListParams::default().limit(1))
            .await
            .map(|_| ())
            .map_err(|e| centralita_platform::Error::Unavailable(format!("the Kubernetes API ({e})")))
    }
}

/// Runs the controller over `api` (one namespace or all) until the stream ends.
pub async fn run(
    api: Api<Tenant>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    Controller::new(api, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(tenant = %object.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}
