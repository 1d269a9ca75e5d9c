//! Compiles every `.proto` under this directory into Rust, plus one file descriptor set
//! that the services hand to gRPC reflection.
use std::path::{Path, PathBuf};

fn protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    protos(&root.join("centralita"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=centralita");
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("centralita_descriptor.bin");
    tonic_prost_build::configure().file_descriptor_set_path(descriptor).compile_protos(&files, &[root])?;
    Ok(())
}
