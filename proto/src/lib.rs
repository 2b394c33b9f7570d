//! Generated protobuf types and gRPC stubs for raftkv.
//!
//! - `KV` (`raftkv.v1.KV`): the public key-value API — Put, Get, Delete, Range, Txn, Watch.
//! - `Cluster` (`raftkv.v1.Cluster`): status and dynamic membership.
//! - `Lease` (`raftkv.v1.Lease`): keys with a time to live — grant, revoke, keep alive, time to live, list.
//! - `Raft` (`raftkv.v1.Raft`): the peer-only Raft transport (vote, append entries, snapshot chunks). Never
//!   exposed to clients on purpose: it is a separate service so it can be filtered or bound elsewhere.
//!
//! - [`dashboard`]: the JSON of the dashboard's plain-HTTP endpoints (cluster discovery, process control).
//!
//! - [`etcd`]: etcd v3's API (`etcdserverpb.KV`, `Watch`, `Cluster`, `Maintenance`, `Lease`, `Auth`), the second
//!   front door of every node.
//!
//! The `.proto` files live in `proto/raftkv/v1/` and `proto/etcd/`; they are compiled by `build.rs` with `protox`.

/// Everything in package `raftkv.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("raftkv.v1");
}

pub use v1::*;

/// etcd v3's gRPC API, wire-compatible (packages `etcdserverpb`, `mvccpb`, `authpb`; `proto/etcd/`): raftkv serves
/// it next to `raftkv.v1`, and `raftkv bench --target etcd` drives a real etcd with it.
// Generated from our own .proto comments: rustdoc need not read them as Markdown links or HTML.
#[allow(clippy::all, missing_docs, rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]
pub mod etcd {
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub use etcdserverpb::*;
}

pub mod dashboard;

/// The `range_end` that selects every key starting with `prefix`: the smallest key greater than all of them
/// (`"\0"` = no upper bound, for an empty or all-0xff prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Encoded `FileDescriptorSet` of all raftkv protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/raftkv_descriptor.bin"));
