//! `centralita-proto`: the Rust types generated from every `.proto` under `proto/centralita`
//! (the `centralita.<area>.v1` packages), and their encoded descriptors for gRPC reflection.
//! It owns no logic: everything in it is generated at build time.
//!
//! # How it is generated
//! `build.rs` collects every `.proto` file under `proto/centralita` (sorted) and compiles
//! them with `tonic-prost-build`, which runs `protoc` (the Debian `protobuf-compiler`, with
//! the well-known types of `libprotobuf-dev`): prost messages and enums, plus tonic client
//! and server stubs for each `service`. It also writes one `FileDescriptorSet` of the same
//! files, embedded here as [`FILE_DESCRIPTOR_SET`]. A new `.proto` is compiled without
//! touching `build.rs`, but its package needs a module below.
//!
//! # Layout
//! One module per package; each `v1` module is the generated code as is (lints allowed).
//! - [`tenancy::v1`]: `TenantService` (served by every service from its tenant set) and the
//!   tenant configuration (`Tenant`, `RoutingConfig`, `Queue`, `Channel`, …), also the
//!   payload of the tenants topic.
//! - [`events::v1`]: `Envelope`, the one record value of every Kafka event.
//! - [`sessions::v1`]: `AgentService` and `ContactService` (served by sessions), the
//!   `ContactEvent` and `AgentEvent` of the contacts and agents topics. (Sessions' outbox
//!   record is not here: it is internal to sessions, compiled by that crate's build script
//!   from `services/sessions/proto`.)
//! - [`routing::v1`]: messages only, no service: the routing input log (`RoutingInput`,
//!   written by sessions, plus routing's own ticks) and routing's decisions
//!   (`RoutingDecision`), on the `<prefix>routing.inputs` and `<prefix>routing.decisions`
//!   topics.
//! - [`reporting::v1`]: `ReportingService` and `StaffingService` (served by reporting) and
//!   the `UsageRecord` of the usage topic; the figures are defined in `docs/metrics.md`.
//! - [`crm::v1`]: `CustomerService` (served by crm) and the events of the customers topic:
//!   `CustomerErased` (crm) and `StoreErased` (each service that erased its store).
//! - [`media::v1`]: `ConversationService` (served by media's digital role) and the
//!   `ConversationEvent` of the conversations topic.
//! - [`recording::v1`]: `RecordingService` (served by recording): a call's audio in from
//!   media (`IngestCall`), playback, legal hold.
//! - [`FILE_DESCRIPTOR_SET`]: what the platform runtime (`centralita_platform::server`)
//!   registers with gRPC reflection, beside grpc.health's. Every service on that runtime
//!   therefore describes every package above, including the routing log, whatever APIs it
//!   serves itself.
//!
//! # Rules
//! - These types are the wire format. Services are meant to convert them into their own
//!   domain types at their gRPC and Kafka adapters (the platform's `Tenant`, routing's core
//!   types, sessions' contact core). Sessions stores its contact and agent records in Redis
//!   in their wire form (`Contact`, `Agent`), converted at its store.
//! - Packages are versioned; a landed v1 message changes only in backward-compatible ways.
//!   `proto/buf.yaml` configures `buf lint` (STANDARD rules less two that conflict with
//!   resource-oriented APIs), which `deploy/local/test.sh` runs, and `buf breaking` (FILE
//!   rules), which no script runs yet: run it by hand against `main`, from the repository
//!   root as `buf breaking proto --against '.git#branch=main,subdir=proto'` (without the
//!   `proto` input, buf finds no module and cannot resolve the imports). A field is
//!   replaced by adding its successor under a new number and marking it
//!   `[deprecated = true]`; writers set both, readers prefer the successor and fall back to
//!   the old field (records already on Kafka, older clients).

/// Encoded `FileDescriptorSet` of every Centralita proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/centralita_descriptor.bin"));

pub mod tenancy {
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("centralita.tenancy.v1");
    }
}

pub mod events {
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("centralita.events.v1");
    }
}

pub mod sessions {
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("centralita.sessions.v1");
    }
}

pub mod routing {
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("centralita.routing.v1");
    }
}

pub mod reporting {
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("centralita.reporting.v1");
    }
}

pub mod crm {
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("centralita.crm.v1");
    }
}

pub mod media {
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("centralita.media.v1");
    }
}

pub mod recording {
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("centralita.recording.v1");
    }
}
