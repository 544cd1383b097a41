//! Compiles `proto/**/*.proto` with protox (a protobuf compiler in Rust, so no system
//! `protoc` is needed) and generates prost messages and the tonic Store client and server.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/prometheus/types.proto",
    "proto/prometheus/remote.proto",
    "proto/io/prometheus/write/v2/types.proto",
    "proto/strata/store/v1/store.proto",
    "proto/strata/cluster/v1/cluster.proto",
    "proto/strata/ingester/v1/ingester.proto",
    "proto/strata/metadata/v1/metadata.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let fds = protox::compile(&files, [root.join("proto")])?;
    tonic_prost_build::configure()
        // `bytes` fields become `bytes::Bytes`: decoding from a `Bytes` buffer then slices
        // it instead of copying chunk data.
        .bytes(".")
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .compile_fds(fds)?;
    Ok(())
}
