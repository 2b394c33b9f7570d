//! The Raft glue: openraft's type configuration and the adapters that plug raftkv's storage and transport into it.
//!
//! - [`log_store`]: openraft's `RaftLogStorage` over our write-ahead log ([`crate::wal`]).
//! - [`state_machine`]: openraft's `RaftStateMachine` over the MVCC key space ([`crate::keyspace`]), with
//!   snapshots ([`snapshot`]) and the watch hub ([`crate::watch`]).
//! - [`network`]: openraft's `RaftNetwork` over the peer-only gRPC service (`raftkv.v1.Raft`), authenticated by
//!   peer TLS or [`peer_auth`], with AppendEntries on long-lived streams ([`append_stream`]); [`announce`]
//!   records members' client addresses in the membership.
//! - [`proposer`]: batches concurrent client writes into one log entry (group commit on the leader), bounded.
//! - [`compaction`]: snapshots (and purges) triggered by WAL bytes, besides openraft's entry count.
//! - [`wire_bytes`]: values encoded as byte strings, not one serde call per byte.
//!
//! Every log entry's application payload is a [`Command`]; applying it yields a [`CommandResponse`].

pub mod announce;
pub mod append_stream;
pub mod command_v1;
pub mod compaction;
pub mod log_store;
pub mod network;
pub mod peer_auth;
pub mod proposer;
pub mod read_index;
pub mod read_lease;
pub mod snapshot;
pub mod snapshot_data;
pub mod state_machine;
pub mod wire_bytes;

use serde::{Deserialize, Serialize};

use crate::{
    keyspace::{KeyValue, RevisionError, TxnCompare, TxnOp, TxnOpResponse, TxnRefused},
    lease::LeaseError,
};

/// Node ids are small positive integers chosen by the operator (`--id`); 0 means "none" on the wire.
pub type NodeId = u64;

/// What openraft stores about each member: where to reach it (etcd's peer and client URLs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The member's advertised client address (`host:port`): leader hints, forwarding, member lists. Empty until
    /// the member announced it (see [`announce`]) — a member bootstrapped from `--initial-cluster` starts so.
    pub addr: String,
    /// The member's advertised peer address: the only address Raft traffic goes to.
    pub peer_addr: String,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer {} client {}", self.peer_addr, if self.addr.is_empty() { "?" } else { &self.addr })
    }
}

openraft::declare_raft_types!(
    /// raftkv's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot_data::SnapshotBytes,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// A mutation of the key space, replicated through the Raft log. Reads never go through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put {
        key: Vec<u8>,
        #[serde(with = "wire_bytes")]
        value: Vec<u8>,
        prev_kv: bool,
    },
    /// Deletes `key`, or every key in `[key, range_end)` when `range_end` is set.
    Delete {
        key: Vec<u8>,
        range_end: Option<Vec<u8>>,
        prev_kv: bool,
    },
    /// A transaction as written before nested transactions (see [`command_v1`]); never proposed any more.
    TxnV1 {
        compare: Vec<command_v1::TxnCompareV1>,
        success: Vec<command_v1::TxnOpV1>,
        failure: Vec<command_v1::TxnOpV1>,
    },
    /// Several commands proposed together (see [`proposer`]); applied in order, one revision each.
    Batch(Vec<Command>),
    /// Switches the key space to etcd's revision numbering, once (see `KeySpace::adopt_etcd_revisions`). A leader
    /// proposes it when it finds the switch not yet made, so a new cluster makes it before its first write and a
    /// data directory of an older raftkv at one log position on every member.
    EtcdRevisions,
    Txn {
        compare: Vec<TxnCompare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    /// Drops the MVCC history before `revision` (etcd's Compact), at the same log position on every member.
    Compact {
        revision: i64,
    },
    /// Grants a lease (see [`crate::lease`]). The proposer picked the id (so applying is deterministic) and raised
    /// the TTL to the cluster's minimum; an id in use is refused when applied.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// Revokes a lease: deletes every key attached to it at one new revision. Proposed by a client, or by the
    /// leader's lessor when the lease expired ([`crate::lessor`]).
    LeaseRevoke {
        id: i64,
    },
    /// Remaining times of leases in milliseconds (`None`: renewed, the whole TTL again), so that a new leader does
    /// not give every lease its whole TTL anew.
    LeaseCheckpoint {
        checkpoints: Vec<(i64, Option<i64>)>,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Put { key, value, .. } => {
                write!(f, "put {} ({} bytes)", String::from_utf8_lossy(key), value.len())
            }
            Command::Delete { key, range_end: None, .. } => write!(f, "delete {}", String::from_utf8_lossy(key)),
            Command::Delete { key, range_end: Some(end), .. } => {
                write!(f, "delete [{}, {})", String::from_utf8_lossy(key), String::from_utf8_lossy(end))
            }
            Command::Txn { compare, success, failure } => {
                write!(f, "txn ({} compares, {} then, {} else)", compare.len(), success.len(), failure.len())
            }
            Command::TxnV1 { compare, success, failure } => {
                write!(f, "txn ({} compares, {} then, {} else)", compare.len(), success.len(), failure.len())
            }
            Command::EtcdRevisions => f.write_str("adopt etcd revision numbering"),
            Command::Compact { revision } => write!(f, "compact to revision {revision}"),
            Command::LeaseGrant { id, ttl } => write!(f, "grant lease {id:x} ({ttl} s)"),
            Command::LeaseRevoke { id } => write!(f, "revoke lease {id:x}"),
            Command::LeaseCheckpoint { checkpoints } => write!(f, "checkpoint {} leases", checkpoints.len()),
            Command::Batch(cmds) => match cmds.as_slice() {
                // The switch queued ahead of a write: name the write first.
                [Command::EtcdRevisions, rest @ ..] if !rest.is_empty() => {
                    write!(f, "{} + adopt etcd revision numbering", Command::Batch(rest.to_vec()))
                }
                [one] => one.fmt(f),
                [first, rest @ ..] => write!(f, "{first} + {} more", rest.len()),
                [] => f.write_str("empty batch"),
            },
        }
    }
}

/// The result of applying one log entry. Blank and membership entries yield `Empty`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    Empty {
        revision: i64,
    },
    Put {
        revision: i64,
        prev_kv: Option<KeyValue>,
    },
    Delete {
        revision: i64,
        deleted: i64,
        prev_kvs: Vec<KeyValue>,
    },
    Txn {
        revision: i64,
        succeeded: bool,
        responses: Vec<TxnOpResponse>,
    },
    Batch(Vec<CommandResponse>),
    /// The transaction was refused when applied and changed nothing.
    TxnRefused {
        revision: i64,
        reason: TxnRefused,
    },
    Compact {
        revision: i64,
        result: Result<(), RevisionError>,
    },
    /// A lease grant, revoke or checkpoint.
    Lease {
        revision: i64,
        result: Result<(), LeaseError>,
    },
}

impl CommandResponse {
    /// The key space revision after this entry was applied.
    pub fn revision(&self) -> i64 {
        match self {
            CommandResponse::Empty { revision }
            | CommandResponse::Put { revision, .. }
            | CommandResponse::Delete { revision, .. }
            | CommandResponse::Txn { revision, .. }
            | CommandResponse::TxnRefused { revision, .. }
            | CommandResponse::Compact { revision, .. }
            | CommandResponse::Lease { revision, .. } => *revision,
            CommandResponse::Batch(r) => r.last().map_or(0, CommandResponse::revision),
        }
    }
}

/// Encodes a value for the WAL, snapshots or the peer wire (postcard: compact, serde-driven).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encoding to a Vec cannot fail for raftkv's own types")
}

/// Decodes what [`encode`] produced.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
