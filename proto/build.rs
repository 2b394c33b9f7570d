//! Compiles `proto/raftkv/v1/*.proto` with `protox` (pure Rust, no system `protoc`), so the same crate builds
//! natively, for wasm32, and inside a Nix sandbox. Server traits are generated only with the `server` feature;
//! clients are transport-agnostic (built over any `GrpcService`: a tonic `Channel` natively, gRPC-Web in the
//! browser).

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/raftkv/v1/kv.proto",
        "proto/raftkv/v1/cluster.proto",
        "proto/raftkv/v1/raft.proto",
        "proto/raftkv/v1/lease.proto",
        "proto/etcd/etcdserverpb/rpc.proto",
        "proto/etcd/mvccpb/kv.proto",
        "proto/etcd/authpb/auth.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;

    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Server reflection needs the encoded descriptor set.
    std::fs::write(out.join("raftkv_descriptor.bin"), fds.encode_to_vec())?;

    let server = env::var_os("CARGO_FEATURE_SERVER").is_some();
    tonic_prost_build::configure().build_server(server).build_client(true).build_transport(false).compile_fds(fds)?;

    Ok(())
}
