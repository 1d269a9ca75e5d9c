//! Generated protobuf and gRPC types of the Centralita APIs.
//!
//! These types are the wire boundary (STYLE.md §6): services convert them into their own
//! domain types with `TryFrom` in their gRPC adapters and never pass them further in.
//! Packages are versioned (`centralita.<area>.v1`); `buf breaking` guards v1.

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
