//! raftkv's one error type, and its single conversion into a gRPC status.
//!
//! Every fallible path in the library returns [`Error`]. The API layer converts it to `tonic::Status` in exactly
//! one place ([`Error::into_status`]), so the mapping from failure to status code is reviewed in one spot:
//!
//! | failure | status |
//! |---|---|
//! | bad request (empty key, over-size key/value/request, malformed op) | `INVALID_ARGUMENT` |
//! | the leader's proposal queue is full (nothing was proposed; retry later) | `RESOURCE_EXHAUSTED` |
//! | no leader, leader unreachable, node shutting down | `UNAVAILABLE` (+ `x-raftkv-leader-id` / `-addr` hints) |
//! | deadline passed while waiting for Raft | `DEADLINE_EXCEEDED` |
//! | leader lost after the write was proposed (may or may not commit) | `UNKNOWN` |
//! | watch from a revision no longer kept | `OUT_OF_RANGE` |
//! | unknown member id | `NOT_FOUND` |
//! | membership change not allowed now, wrong node/cluster | `FAILED_PRECONDITION` |
//! | key space over `--quota-backend-bytes` (NOSPACE alarm) | `RESOURCE_EXHAUSTED` |
//! | storage / internal failures | `INTERNAL` |
//! | node stopped for a fatal cause (fail-stop) | `UNAVAILABLE` |

use std::path::{Path, PathBuf};

use crate::{raft::NodeId, wal::WalError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}: {source}", path.display())]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },

    #[error(transparent)]
    Wal(#[from] WalError),

    #[error("snapshot {} is corrupt ({reason}); refusing to start — remove the member (raftkv members remove ID), wipe its data directory and start it with --join", path.display())]
    CorruptSnapshot { path: PathBuf, reason: String },

    #[error("{0}")]
    InvalidArgument(String),

    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { what: &'static str, size: usize, limit: usize },

    /// The values of one request (put values, txn compare values) exceed `--max-request-bytes`.
    #[error(
        "request carries {size} bytes of values, over the limit of {limit} bytes (--max-request-bytes); \
         split it into smaller requests"
    )]
    RequestTooLarge { size: usize, limit: usize },

    /// A bounded queue or buffer is full; nothing was done, so the request may be retried later.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),

    /// No leader is known (election in progress, or no quorum).
    #[error("no leader: {0}")]
    NoLeader(String),

    /// This node is not the leader; the request should go to `leader`.
    #[error("not the leader; the leader is node {leader_id} at {leader_addr}")]
    NotLeader { leader_id: NodeId, leader_addr: String },

    #[error("unavailable: {0}")]
    Unavailable(String),

    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),

    /// A write was proposed but its fate is unknown (leader lost mid-flight).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),

    #[error("{0}")]
    Compacted(String),

    #[error("unknown member {0}")]
    UnknownMember(NodeId),

    #[error("{0}")]
    FailedPrecondition(String),

    #[error("configuration: {0}")]
    Config(String),

    /// Starting would endanger the cluster (e.g. a member whose data is gone re-joining as if it had never run).
    #[error("refusing to start: {0}")]
    RefuseStart(String),

    /// A status returned by the leader a request was forwarded to, passed through unchanged.
    #[error("{}", .0.message())]
    Forwarded(Box<tonic::Status>),

    #[error("raft storage: {0}")]
    Storage(Box<openraft::StorageError<NodeId>>),

    #[error("internal: {0}")]
    Internal(String),

    /// The key space is over `--quota-backend-bytes`; writes that add data are refused (etcd's message).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,

    /// The node stopped because it can no longer serve (see `failstop`); the process should be restarted.
    #[error("fatal: {0}; the node stopped so that a supervisor restarts it")]
    Fatal(String),

    /// One of etcd's own errors, for the etcd API (clients match them by message).
    #[error("{}", .0.message())]
    Etcd(EtcdError),
}

/// etcd's server errors (`api/v3rpc/rpctypes`) that raftkv answers on its etcd API: the gRPC code and the exact
/// message, because etcd's clients map errors by message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdError {
    EmptyKey,
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    TooManyOps,
    DuplicateKey,
    InvalidSortOption,
    Compacted,
    FutureRev,
    NoSpace,
    LeaseNotFound,
    LeaseExist,
    LeaseTtlTooLarge,
    MemberNotFound,
    MemberNotLearner,
    LearnerNotReady,
    MemberBadUrls,
    PeerUrlExist,
    BadLeaderTransferee,
    RequestTooLarge,
    TooManyRequests,
    AuthNotEnabled,
    NoLeader,
    NotLeader,
    Stopped,
    Timeout,
    TimeoutDueToLeaderFail,
    Unhealthy,
}

impl EtcdError {
    pub fn code(self) -> tonic::Code {
        use tonic::Code;
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey | InvalidSortOption
            | RequestTooLarge => Code::InvalidArgument,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            AuthNotEnabled | NotLeader | LeaseExist | MemberNotLearner | LearnerNotReady | PeerUrlExist
            | BadLeaderTransferee => Code::FailedPrecondition,
            MemberBadUrls => Code::InvalidArgument,
            NoLeader | Stopped | Timeout | TimeoutDueToLeaderFail | Unhealthy => Code::Unavailable,
        }
    }

    pub fn message(self) -> &'static str {
        use EtcdError::*;
        match self {
            EmptyKey => "etcdserver: key is not provided",
            KeyNotFound => "etcdserver: key not found",
            ValueProvided => "etcdserver: value is provided",
            LeaseProvided => "etcdserver: lease is provided",
            TooManyOps => "etcdserver: too many operations in txn request",
            DuplicateKey => "etcdserver: duplicate key given in txn request",
            InvalidSortOption => "etcdserver: invalid sort option",
            Compacted => "etcdserver: mvcc: required revision has been compacted",
            FutureRev => "etcdserver: mvcc: required revision is a future revision",
            NoSpace => "etcdserver: mvcc: database space exceeded",
            LeaseNotFound => "etcdserver: requested lease not found",
            LeaseExist => "etcdserver: lease already exists",
            LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            MemberNotFound => "etcdserver: member not found",
            MemberNotLearner => "etcdserver: can only promote a learner member",
            LearnerNotReady => "etcdserver: can only promote a learner member which is in sync with leader",
            MemberBadUrls => "etcdserver: given member URLs are invalid",
            PeerUrlExist => "etcdserver: Peer URLs already exists",
            BadLeaderTransferee => "etcdserver: bad leader transferee",
            RequestTooLarge => "etcdserver: request is too large",
            TooManyRequests => "etcdserver: too many requests",
            AuthNotEnabled => "etcdserver: authentication is not enabled",
            NoLeader => "etcdserver: no leader",
            NotLeader => "etcdserver: not leader",
            Stopped => "etcdserver: server stopped",
            Timeout => "etcdserver: request timed out",
            TimeoutDueToLeaderFail => "etcdserver: request timed out, possibly due to previous leader failure",
            Unhealthy => "etcdserver: unhealthy cluster",
        }
    }
}

impl Error {
    pub fn io(path: &Path, op: &'static str, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), op, source }
    }

    /// The one conversion from a raftkv error to a gRPC status.
    pub fn into_status(self) -> tonic::Status {
        use tonic::Code;
        let code = match &self {
            Error::InvalidArgument(_) | Error::TooLarge { .. } | Error::RequestTooLarge { .. } => Code::InvalidArgument,
            Error::ResourceExhausted(_) | Error::NoSpace => Code::ResourceExhausted,
            Error::NoLeader(_) | Error::NotLeader { .. } | Error::Unavailable(_) | Error::Fatal(_) => Code::Unavailable,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::OutcomeUnknown(_) => Code::Unknown,
            Error::Compacted(_) => Code::OutOfRange,
            Error::UnknownMember(_) => Code::NotFound,
            Error::FailedPrecondition(_) | Error::Config(_) | Error::RefuseStart(_) => Code::FailedPrecondition,
            Error::Forwarded(s) => return *s.clone(),
            Error::Etcd(e) => return tonic::Status::new(e.code(), e.message()),
            Error::Io { .. }
            | Error::Wal(_)
            | Error::CorruptSnapshot { .. }
            | Error::Storage(_)
            | Error::Internal(_) => Code::Internal,
        };
        let mut status = tonic::Status::new(code, self.to_string());
        if let Error::NotLeader { leader_id, leader_addr } = &self {
            if let Ok(v) = leader_id.to_string().parse() {
                status.metadata_mut().insert("x-raftkv-leader-id", v);
            }
            if let (false, Ok(v)) = (leader_addr.is_empty(), leader_addr.parse()) {
                status.metadata_mut().insert("x-raftkv-leader-addr", v);
            }
        }
        status
    }
}

impl Error {
    /// The one conversion for the etcd API: etcd's code and message where etcd has the error (its clients match
    /// on them), else the native status.
    pub fn into_etcd_status(self) -> tonic::Status {
        let etcd = match &self {
            Error::Etcd(e) => Some(*e),
            Error::TooLarge { .. } | Error::RequestTooLarge { .. } => Some(EtcdError::RequestTooLarge),
            Error::NoSpace => Some(EtcdError::NoSpace),
            Error::NoLeader(_) => Some(EtcdError::NoLeader),
            Error::DeadlineExceeded(_) => Some(EtcdError::Timeout),
            Error::OutcomeUnknown(_) => Some(EtcdError::TimeoutDueToLeaderFail),
            Error::Compacted(_) => Some(EtcdError::Compacted),
            Error::UnknownMember(_) => Some(EtcdError::MemberNotFound),
            Error::ResourceExhausted(_) => Some(EtcdError::TooManyRequests),
            Error::Fatal(_) => Some(EtcdError::Stopped),
            _ => None,
        };
        match etcd {
            Some(e) => {
                if !matches!(self, Error::Etcd(_)) {
                    tracing::debug!("etcd API: {self}");
                }
                tonic::Status::new(e.code(), e.message())
            }
            None => self.into_status(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.into_status()
    }
}
