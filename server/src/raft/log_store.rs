//! openraft's `RaftLogStorage` over raftkv's write-ahead log.
//!
//! The WAL ([`crate::wal`]) stores opaque records; this adapter encodes openraft's types into them (postcard):
//! log entries by index, the vote, the committed log id, and the last purged log id.
//!
//! Durability contract with openraft:
//! - `append` returns once the entries are written (visible to readers); openraft is told they are durable
//!   through `LogFlushed` only after the WAL's group-commit fdatasync covers them;
//! - `save_vote`, `truncate` and `purge` return only once durable;
//! - `purge` never runs ahead of a snapshot install that is still being written;
//! - `save_committed` is written without waiting: after a crash openraft may re-learn a smaller committed index,
//!   which is safe, and it lets a restarted node re-apply committed entries without waiting for the leader.
//!
//! Reads for replication are bounded by bytes before anything is read or decoded
//! (`limited_get_log_entries`: at most [`super::network::MAX_APPEND_BYTES`] of entries, at least one), and a
//! caller that needs only an entry's log id ([`LogStore::last_log_id`], status, metrics) decodes only that prefix
//! of the record ([`entry_log_id`]), never the payload.

// openraft's storage traits fix `StorageError` (large) as the error type of every storage call.
#![allow(clippy::result_large_err)]

use std::{
    fmt::Debug,
    ops::{Bound, RangeBounds},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use openraft::{
    storage::{LogFlushed, RaftLogStorage},
    LogState, RaftLogReader,
};

use super::{decode, encode, snapshot::DurableSnapshot, Entry, LogId, StorageError, TypeConfig, Vote};
use crate::wal::{Wal, WalError};

/// The Raft log on top of the WAL. Clones share the WAL.
#[derive(Clone)]
pub struct LogStore {
    wal: Wal,
    /// Highest committed index reported by openraft (for status and metrics).
    committed_index: Arc<AtomicU64>,
    /// Purges wait for an in-flight snapshot install to be durable first.
    snapshot: DurableSnapshot,
    /// The log id of the last entry appended, if nothing was truncated since: status reads it without touching the
    /// WAL.
    last: Arc<parking_lot::Mutex<Option<LogId>>>,
    /// The vote last saved (durable; what `read_vote` would return). Set before `save_vote` returns, so before
    /// openraft can answer a vote request with it: the leader lease checks it (see `raft::read_lease`).
    vote: Arc<parking_lot::Mutex<Option<Vote>>>,
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    openraft::StorageIOError::read_logs(openraft::AnyError::error(e.to_string())).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError {
    openraft::StorageIOError::write_logs(openraft::AnyError::error(e.to_string())).into()
}

fn vote_err(e: impl std::fmt::Display) -> StorageError {
    openraft::StorageIOError::write_vote(openraft::AnyError::error(e.to_string())).into()
}

impl LogStore {
    pub fn new(wal: Wal, snapshot: DurableSnapshot) -> Self {
        let committed = wal.committed().and_then(|b| decode::<Option<LogId>>(&b).ok().flatten()).map_or(0, |l| l.index);
        let vote = wal.vote().and_then(|b| decode::<Vote>(&b).ok());
        Self {
            wal,
            committed_index: Arc::new(AtomicU64::new(committed)),
            snapshot,
            last: Default::default(),
            vote: Arc::new(parking_lot::Mutex::new(vote)),
        }
    }

    /// The vote in the log store: saved (durable) before openraft acts on it.
    pub fn stored_vote(&self) -> Option<Vote> {
        *self.vote.lock()
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// The highest committed log index this node knows of.
    pub fn committed_index(&self) -> u64 {
        self.committed_index.load(Ordering::Relaxed)
    }

    fn purged_log_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.wal.purged() {
            Some((_, bytes)) => decode(&bytes).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    /// The log id of the last entry in the WAL (its payload is not decoded).
    pub fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let Some(last) = self.wal.last_index() else { return Ok(None) };
        if let Some(cached) = *self.last.lock() {
            if cached.index == last {
                return Ok(Some(cached));
            }
        }
        let entries = self.wal.read(last, last + 1).map_err(read_err)?;
        match entries.first() {
            Some((_, bytes)) => Ok(Some(entry_log_id(bytes).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    /// Runs a blocking WAL call off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Wal) -> Result<T, WalError> + Send + 'static,
    ) -> Result<T, WalError> {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || f(&wal)).await.unwrap_or(Err(WalError::Closed))
    }
}

/// The log id of an encoded entry, decoding only that prefix (an `Entry` is encoded log id first, then payload).
pub fn entry_log_id(bytes: &[u8]) -> Result<LogId, postcard::Error> {
    postcard::take_from_bytes::<LogId>(bytes).map(|(id, _)| id)
}

impl RaftLogReader<TypeConfig> for LogStore {
    /// At most [`super::network::MAX_APPEND_BYTES`] of entries from `start` (at least one): openraft asks for up to
    /// `max_payload_entries` entries per AppendEntries, and with large entries that would be gigabytes read and
    /// decoded before the network layer could refuse them.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let n = self.wal.entries_within(start, end, super::network::MAX_APPEND_BYTES);
        self.try_get_log_entries(start..start + n.max(1).min(end.saturating_sub(start))).await
    }

    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + openraft::OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e + 1,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        self.wal
            .read(start, end)
            .map_err(read_err)?
            .iter()
            .map(|(_, bytes)| decode::<Entry>(bytes).map_err(read_err))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.purged_log_id()?;
        let last_log_id = self.last_log_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode(vote);
        self.blocking(move |wal| wal.save_vote(&bytes)).await.map_err(vote_err)?;
        *self.vote.lock() = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match self.wal.vote() {
            Some(bytes) => decode(&bytes)
                .map(Some)
                .map_err(|e| openraft::StorageIOError::read_vote(openraft::AnyError::error(e.to_string())).into()),
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = committed {
            self.committed_index.fetch_max(c.index, Ordering::Relaxed);
        }
        self.wal.save_committed(&encode(&committed)).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        match self.wal.committed() {
            Some(bytes) => decode(&bytes).map_err(read_err),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        // Entries at or below the purge point are already covered by the snapshot: nothing to store.
        let purged = self.wal.purged().map(|(i, _)| i);
        let mut last_id = None;
        let records: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .inspect(|e| last_id = Some(e.log_id))
            .filter(|e| purged.is_none_or(|p| e.log_id.index > p))
            .map(|e| (e.log_id.index, encode(&e)))
            .collect();
        if records.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // Appending at or below the last index replaces the entries from there on (openraft itself truncates
        // conflicting entries first; this keeps "append" meaning "the log now ends with these").
        let first = records[0].0;
        *self.last.lock() = None;
        if self.wal.last_index().is_some_and(|last| first <= last) {
            let wal = self.wal.clone();
            tokio::task::spawn_blocking(move || wal.truncate(first))
                .await
                .unwrap_or(Err(WalError::Closed))
                .map_err(write_err)?;
        }
        // openraft 0.9's core waits for this flush before it does anything else (replication included), so the
        // flush is done here when nothing else is being synced, instead of on the flusher thread — unless this is
        // the runtime's only worker, which a slow disk would then freeze for everything else (probes, reads).
        let on_durable: crate::wal::DurableCallback = Box::new(move |res| callback.log_io_completed(res));
        let spare_worker = tokio::runtime::Handle::try_current().is_ok_and(|h| {
            h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread && h.metrics().num_workers() > 1
        });
        if spare_worker {
            self.wal.append_and_sync(records, on_durable).map_err(write_err)?;
        } else {
            self.wal.append(records, on_durable).map_err(write_err)?;
        }
        *self.last.lock() = last_id;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::info!(since = %log_id, "truncating conflicting log entries");
        *self.last.lock() = None;
        self.blocking(move |wal| wal.truncate(log_id.index)).await.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(upto = %log_id, "purging log");
        // openraft purges right after handing a received snapshot to the state machine, without waiting for it
        // to be installed. Purging first and crashing before the snapshot is on disk would leave a log that
        // starts after the last durable snapshot: wait for it.
        self.snapshot.wait_covers(log_id.index).await.map_err(write_err)?;
        let bytes = encode(&log_id);
        self.blocking(move |wal| wal.purge(log_id.index, &bytes)).await.map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Command;

    #[test]
    fn log_id_is_read_from_the_prefix_only() {
        let entry = Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(7, 2), 42),
            payload: openraft::EntryPayload::Normal(Command::Put {
                key: b"k".to_vec(),
                value: vec![1; 1000],
                prev_kv: false,
            }),
        };
        let bytes = encode(&entry);
        assert_eq!(entry_log_id(&bytes).unwrap(), entry.log_id);
        // The payload is not needed: a record cut right after the log id still yields it.
        assert_eq!(entry_log_id(&bytes[..8]).unwrap(), entry.log_id);
    }
}
