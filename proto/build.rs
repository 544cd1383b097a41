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
    "proto/opentelemetry/proto/common/v1/common.proto",
    "proto/opentelemetry/proto/resource/v1/resource.proto",
    "proto/opentelemetry/proto/metrics/v1/metrics.proto",
    "proto/opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let mut fds = protox::compile(&files, [root.join("proto")])?;
    // OTLP's comments hold ASCII diagrams that rustdoc would run as doctests and
    // clippy's doc lints refuse: its generated code goes without them (the .proto
    // files keep them).
    for f in &mut fds.file {
        if f.package().starts_with("opentelemetry.") {
            f.source_code_info = None;
        }
    }
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
