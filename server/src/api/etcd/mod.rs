//! The etcd front door: etcd v3's gRPC API (`etcdserverpb`), served on the client port next to `raftkv.v1`, so
//! etcdctl and etcd's client libraries work against raftkv unmodified.
//!
//! One node, two front doors, one set of replicated commands: every handler here turns etcd's request into the
//! same [`crate::raft::Command`] the native API proposes (or the same local read), and answers from the same key
//! space — so both APIs agree on every key, revision and event. What differs is only the wire: etcd's messages,
//! its validation rules, and its errors, code *and* message ([`crate::error::EtcdError`]; clients match errors by
//! message). The conversion to `tonic::Status` happens once, in `observed`, through
//! [`Error::into_etcd_status`].
//!
//! - [`kv`]: `KV` — Range (also at past revisions), Put, DeleteRange, Txn, Compact.
//! - [`watch`]: `Watch` — many watches per stream, served from this node's applied history and MVCC history.
//! - [`cluster`]: `Cluster` — MemberList, MemberAdd (learners), MemberPromote, MemberRemove.
//! - [`maintenance`]: `Maintenance` — Status, Alarm, Defragment, Hash, HashKV.
//! - [`lease`]: `Lease` — LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases.
//! - [`auth`]: authentication is disabled (clients authenticate with mTLS) — answered as etcd does then.
//!
//! Followers forward writes and linearizable reads to the leader's etcd API, once (as the native API does).

pub mod auth;
pub mod cluster;
pub mod convert;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use std::future::Future;

use raftkv_proto::etcd as pb;
use tonic::{Response, Status};

use super::ApiContext;
use crate::error::{Error, Result};

/// The etcd version whose behaviour raftkv implements, reported by `Maintenance/Status`. Clients turn features on
/// by it (Kubernetes among them), so it names the oldest etcd whose API raftkv answers as etcd does for what it
/// serves; see the README's "etcd compatibility" section.
pub const ETCD_VERSION: &str = "3.5.0";

/// Runs an etcd handler, recording its latency and status code (as `etcd.<Method>`), and converts its error.
pub(crate) async fn observed<T>(
    ctx: &ApiContext,
    method: &'static str,
    f: impl Future<Output = Result<T>>,
) -> Result<Response<T>, Status> {
    super::kv::observed_as(ctx, method, Error::into_etcd_status, f).await
}

impl ApiContext {
    /// etcd's response header.
    pub(crate) fn etcd_header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader { cluster_id: self.cluster_id(), member_id: self.id, revision, raft_term: self.term() }
    }
}
