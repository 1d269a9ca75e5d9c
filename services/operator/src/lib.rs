//! `centralita-operator`: a Kubernetes controller for the `Tenant` custom resource.
//!
//! - [`crd`]: the resource type; its CRD schema is generated from the platform's tenant
//!   spec (`centralita-operator crd` prints what `charts/centralita/crds/tenant.yaml` holds).
//! - [`reconcile`]: the decisions as pure functions (validation, status, backoff).
//! - [`controller`]: watches Tenants and carries the decisions out: finalizer, publication
//!   to the tenants topic, status conditions, events.

pub mod controller;
pub mod crd;
pub mod reconcile;
