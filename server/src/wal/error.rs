//! Errors returned by the write-ahead log.
//!
//! Every error that concerns a file names that file, and every corruption error
//! also names the byte offset of the damaged record, so an operator can inspect it
//! (`xxd -s OFFSET FILE`) before deciding what to do. Corruption is never
//! "repaired" silently: the only damage recovery removes on its own is a torn tail
//! of the last segment (see `recovery.rs`), which is a normal result of a crash.

use std::io;
use std::path::PathBuf;

/// What an operator should do about a corrupt log: the damaged node cannot serve,
/// but Raft can rebuild it from the other members of the cluster.
const CORRUPT_HINT: &str = "restore this node from a peer or remove its data directory";

/// An error from the write-ahead log.
#[derive(thiserror::Error, Debug)]
pub enum WalError {
    /// A system call on a WAL file or directory failed.
    #[error("WAL I/O error: {op} {}: {source}", path.display())]
    Io {
        /// The file or directory the call was made on.
        path: PathBuf,
        /// What was being done, e.g. "fdatasync" or "create segment".
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A record on disk failed its checks. At open this means the WAL refuses to start.
    #[error("WAL corrupt: {} at offset {offset}: {reason} — {CORRUPT_HINT}", path.display())]
    Corrupt {
        /// The segment file holding the bad record.
        path: PathBuf,
        /// Byte offset of the start of the bad record within `path`.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// `append` was given entries that do not continue the log.
    #[error("WAL append is not contiguous: expected index {expected}, got {got}")]
    NonContiguous {
        /// The index the next entry must have.
        expected: u64,
        /// The index it had.
        got: u64,
    },

    /// `truncate` asked to remove entries that were already purged.
    #[error("WAL truncate since {since} reaches into the purged prefix (purged up to {purged})")]
    TruncatePurged {
        /// The requested truncation point.
        since: u64,
        /// The current purge index.
        purged: u64,
    },

    /// `purge` asked to purge less than an earlier purge did.
    #[error("WAL purge up to {upto} would move the purge point backwards (already purged up to {purged})")]
    PurgeRegressed {
        /// The requested purge index.
        upto: u64,
        /// The current purge index.
        purged: u64,
    },

    /// An entry or purge index of u64::MAX, which would leave no next index.
    #[error("WAL index {index} is out of range (u64::MAX is reserved)")]
    IndexOverflow {
        /// The offending index.
        index: u64,
    },

    /// A payload is larger than a single record may hold.
    #[error("WAL {what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// What kind of payload it was ("entry", "vote", ...).
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit for that kind.
        max: usize,
    },

    /// Another process (or another `Wal` in this process) has the directory open.
    #[error("WAL directory {} is locked by another open WAL (lock file held)", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// A write or fsync failed earlier. After a failed fsync the kernel may have
    /// dropped the dirty pages, so retrying could falsely report success: the WAL
    /// refuses all further writes and the process must restart and recover.
    #[error("WAL is poisoned by an earlier I/O failure ({reason}); restart the node to recover")]
    Poisoned {
        /// The failure that poisoned the WAL.
        reason: String,
    },

    /// The WAL was closed.
    #[error("WAL is closed")]
    Closed,
}

impl WalError {
    pub(super) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        WalError::Io { path: path.into(), op, source }
    }

    pub(super) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        WalError::Corrupt { path: path.into(), offset, reason: reason.into() }
    }
}
