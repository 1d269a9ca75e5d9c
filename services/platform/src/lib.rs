//! The foundation every Centralita service stands on, used the same way by all of them.
//!
//! # Layout
//! - [`config`]: typed configuration from flags and `CENTRALITA_*` environment, secrets
//!   that never print, validation once at start.
//! - [`telemetry`]: JSON logs, OpenTelemetry traces (OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   is set), W3C trace-context propagation over gRPC metadata and Kafka headers.
//! - [`metrics`]: the Prometheus registry served on the admin port.
//! - [`error`]: the crate's error enum and the one mapping from errors to `tonic::Status`.
//! - [`auth`]: JWT verification and minting, the verified [`auth::Caller`], the
//!   [`auth::Authenticated`] service that puts it into every request and enforces tenant
//!   status and rate quota, the quota shared across replicas in Redis (`auth/ratelimit`).
//! - [`tenant`]: the `Tenant` definition, one file each under `tenant/`: id and contact
//!   names (`id`), manifest (`tenant.yaml`, `manifest`) and its validation (`validate`),
//!   protobuf form (`wire`);
//!   [`queue`]: the tenant's routing configuration in it (`spec.routing`: queues, agent
//!   pool, away reasons, disposition codes).
//! - [`registry`]: the in-memory tenant set every service keeps, fed by [`tenant_feed`]
//!   from the compacted tenants topic.
//! - [`bus`]: the Kafka event bus, one file each under `bus/`: envelope (`event`), topics
//!   and client settings (`topics`, `client`), idempotent producer (`producer`),
//!   at-least-once consumer that stores offsets only after handling (`consumer`, `batch`)
//!   and dedupes on event id (`dedupe`).
//! - [`db`]: PostgreSQL pool and versioned migrations; [`cache`]: Redis.
//! - [`health`]: readiness of dependencies, mirrored into gRPC health and `/readyz`.
//! - [`grpc_web`]: gRPC-Web for browsers on the gRPC port, CORS from an origin allow-list.
//! - [`admin`]: the admin HTTP port (`/livez`, `/readyz`, `/metrics`).
//! - [`shutdown`]: the one shutdown sequence; [`server`]: the runtime that ties all of it
//!   together for a service (`main_with`, `Runtime::serve`, dependency checks, one
//!   shutdown deadline).
//! - [`identity`]: customer identities (phone, email, chat, social) and their normal form.
//! - [`tenancy_api`]: the `centralita.tenancy.v1.TenantService` every service serves.
//! - [`page`]: opaque page tokens of every `List` API.
//! - `testkit` (only with the `testkit` feature, which crates enable in their
//!   `[dev-dependencies]`): helpers for the services' tests, with
//!   `server::assert_config_contract`; never compiled into a production binary.

pub mod admin;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod config;
pub mod db;
pub mod erasure;
pub mod error;
pub mod grpc_web;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod otlp_metrics;
pub mod page;
pub mod queue;
pub mod registry;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tenancy_api;
pub mod tenant;
pub mod tenant_feed;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;

pub use error::{Error, FieldViolation, Result};
