//! Compiles sessions' internal protobuf (the outbox entries stored in Redis) against the
//! public types of `centralita-proto`, which it refers to instead of generating them again.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let internal = root.join("proto");
    let public = root.join("../../proto");
    let file = internal.join("centralita/sessions/internal/v1/outbox.proto");
    println!("cargo:rerun-if-changed={}", internal.display());
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .extern_path(".centralita.sessions.v1", "::centralita_proto::sessions::v1")
        .extern_path(".centralita.crm.v1", "::centralita_proto::crm::v1")
        .extern_path(".centralita.tenancy.v1", "::centralita_proto::tenancy::v1")
        .compile_protos(&[file], &[internal, public])?;
    Ok(())
}
