//! Compiles every `.proto` file of the crate with protox (pure Rust, so no system `protoc`),
//! generates prost messages and tonic clients and servers from the descriptor set, and keeps the
//! encoded descriptor set in `OUT_DIR` so tests can compare it with flamepy's.
//!
//! `flame.cluster.v1` is generated a second time into `OUT_DIR/stubbed` with default server
//! stubs (a method a server does not implement answers UNIMPLEMENTED), and `lib.rs` includes
//! that copy: test fakes of `Cluster` outside this crate then keep compiling when a method is
//! added. Every other package keeps required methods, so its servers must implement them all.

use prost::Message;
use std::path::PathBuf;

/// The flame.v1 files, named as flamepy's descriptors name them (`types.proto`, ...).
const V1: &[&str] = &["types.proto", "frontend.proto", "shim.proto"];
/// Flame's own versioned packages.
const INTERNAL: &[&str] = &[
    "flame_raft.proto",
    "flame_cluster.proto",
    "flame_agent.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<&str> = V1.iter().chain(INTERNAL).copied().collect();
    let includes = ["protos/v1", "protos/internal"];
    for dir in includes {
        println!("cargo:rerun-if-changed={dir}");
    }
    let fds = protox::compile(&files, includes)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("flame_descriptor_set.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds.clone())?;
    let stubbed = out.join("stubbed");
    std::fs::create_dir_all(&stubbed)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .out_dir(stubbed)
        .compile_fds(fds)?;
    Ok(())
}
