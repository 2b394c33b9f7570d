//! raftkv: a strongly consistent, replicated key-value store on openraft.
//!
//! # Architecture: the path of a write
//!
//! ```text
//! client ─gRPC/gRPC-Web─▶ api::kv ─▶ openraft (client_write) ─▶ raft::log_store ─▶ wal (append, group fsync)
//!                           │            │ replicate: raft::network ─gRPC─▶ peer api::peer ─▶ peer's log_store
//!                           │            ▼ committed by a quorum
//!                           │        raft::state_machine ─▶ keyspace (MVCC, revision) ─▶ watch hub ─▶ watchers
//!                           ▼
//!                reply with header {cluster, member, term, revision}
//! ```
//!
//! - [`config`]: typed, validated node configuration.
//! - [`data_dir`]: the data directory's lock and identity.
//! - [`wal`]: the write-ahead log — segment files, CRC-framed records, group commit, torn-tail recovery.
//! - [`raft`]: openraft glue — [`raft::log_store`], [`raft::state_machine`], [`raft::snapshot`],
//!   [`raft::network`].
//! - [`keyspace`]: the ordered MVCC key space the state machine applies commands to.
//! - [`watch`]: the revision-ordered change feed behind `Watch`.
//! - [`events`]: the node's event log (elections, snapshots, membership, faults) behind `Cluster/Events`.
//! - [`api`]: the gRPC services (KV, Cluster on the client port; Raft on the peer port) and the one place errors become statuses.
//! - [`http`]: metrics, health, readiness, status JSON, fault injection.
//! - [`dashboard`]: serving the browser dashboard's files and `GET /api/cluster`.
//! - [`node`]: wiring it together; `run(config, listeners, shutdown)`.
//! - [`tls`]: TLS and mTLS on the client, peer and HTTP ports, reloaded when the files change.
//! - [`origin`]: the guard that keeps foreign web pages (and DNS rebinding) out of every browser-reachable port.
//! - [`client`]: the retrying client used by the CLI, bench and tests.
//! - [`local_cluster`]: child `raftkv serve` processes on loopback (`raftkv cluster`, bench, chaos suite).
//! - [`error`]: the crate's error type.

pub mod api;
pub mod auto_compaction;
pub mod backup;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod data_dir;
pub mod error;
pub mod events;
pub mod failstop;
pub mod http;
pub mod keyspace;
pub mod lease;
pub mod lessor;
pub mod local_cluster;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod quota;
pub mod raft;
pub mod tls;
pub mod wal;
pub mod watch;

pub use error::{Error, Result};
