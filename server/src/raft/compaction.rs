//! Log compaction by bytes: snapshots triggered when the WAL grew by `--snapshot-wal-bytes`.
//!
//! openraft triggers snapshots by entry count (`--snapshot-every`) and keeps `--keep-after-snapshot` entries
//! behind each one, but one entry can hold megabytes, so between two count-triggered snapshots the WAL could
//! reach many gigabytes on every node at once (issue 9, item 6). This task watches the WAL's size on this node:
//! - once the entries the last snapshot does not cover hold `threshold` bytes (from the WAL's in-memory index;
//!   not the WAL's growth, which a purge and writes made during a snapshot build would both distort), it asks
//!   openraft for a snapshot (`raft.trigger().snapshot()`), at most one request in flight;
//! - after a snapshot, if the entries kept behind it hold more than `threshold / 4` bytes, it asks openraft to
//!   purge up to the point where the kept entries fit that budget (`raft.trigger().purge_log`; openraft never
//!   purges past the snapshot and waits for replication that is still reading those entries).
//!
//! Invariant: between snapshots the WAL grows by at most about `threshold` plus one segment plus what is written
//! while a snapshot is being built; behind a snapshot it keeps at most `max(threshold / 4, one entry)` beyond the
//! count-based rule's minimum. With `threshold == 0` the task does nothing.

use std::time::{Duration, Instant};

use super::Raft;
use crate::wal::Wal;

/// How often the WAL size is looked at (a lock and a sum over segment lengths).
const POLL: Duration = Duration::from_millis(200);
/// A requested snapshot that has not appeared after this long is requested again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Spawns the task for one node; it ends when `stopping` turns true.
pub fn spawn(raft: Raft, wal: Wal, threshold: u64, mut stopping: tokio::sync::watch::Receiver<bool>) {
    if threshold == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut policy = Policy::new(threshold);
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let snapshot = raft.metrics().borrow().snapshot.map(|l| l.index);
            let first = wal.first_index();
            let kept = |from: u64, upto: u64| wal.entries_within(from, upto + 1, usize::MAX);
            // The bytes of the entries the snapshot does not cover (from the WAL's in-memory index).
            let uncovered = wal.last_index().map_or(0, |last| wal.entry_bytes(snapshot.map_or(0, |s| s + 1), last + 1));
            match policy.observe(uncovered, snapshot, Instant::now()) {
                Action::Snapshot => {
                    tracing::info!(
                        uncovered,
                        threshold,
                        "the WAL's entries since the last snapshot passed --snapshot-wal-bytes"
                    );
                    if raft.trigger().snapshot().await.is_err() {
                        return;
                    }
                }
                Action::Purge(snap) => {
                    let Some(first) = first else { continue };
                    let budget = (threshold / 4) as usize;
                    if first > snap || kept(first, snap) == 0 {
                        continue;
                    }
                    let lo = wal.newest_start_within(first, snap + 1, budget);
                    if lo == first {
                        continue;
                    }
                    tracing::info!(upto = lo - 1, snapshot = snap, "purging log entries kept behind the snapshot");
                    if raft.trigger().purge_log(lo - 1).await.is_err() {
                        return;
                    }
                }
                Action::Nothing => {}
            }
        }
    });
}

#[derive(Debug, PartialEq, Eq)]
enum Action {
    Nothing,
    Snapshot,
    /// A new snapshot at this index: bound what is kept behind it.
    Purge(u64),
}

/// The decision, separate from the I/O so it can be tested.
struct Policy {
    threshold: u64,
    snapshot: Option<u64>,
    first_look: bool,
    requested: Option<Instant>,
}

impl Policy {
    fn new(threshold: u64) -> Self {
        Self { threshold, snapshot: None, first_look: true, requested: None }
    }

    /// `uncovered`: the bytes of the WAL's entries newer than `snapshot`.
    fn observe(&mut self, uncovered: u64, snapshot: Option<u64>, now: Instant) -> Action {
        if snapshot != self.snapshot || self.first_look {
            let first_look = std::mem::take(&mut self.first_look);
            self.snapshot = snapshot;
            self.requested = None;
            if let (false, Some(s)) = (first_look, snapshot) {
                return Action::Purge(s);
            }
        }
        let waiting = self.requested.is_some_and(|t| now.duration_since(t) < RETRY_AFTER);
        if !waiting && uncovered >= self.threshold {
            self.requested = Some(now);
            return Action::Snapshot;
        }
        Action::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_once_the_uncovered_entries_pass_the_threshold_and_purges_after_each_snapshot() {
        let t0 = Instant::now();
        let mut p = Policy::new(100);
        assert_eq!(p.observe(99, None, t0), Action::Nothing);
        assert_eq!(p.observe(100, None, t0), Action::Snapshot);
        assert_eq!(p.observe(400, None, t0), Action::Nothing, "one request at a time");
        assert_eq!(p.observe(400, None, t0 + RETRY_AFTER), Action::Snapshot, "asked again when none came");
        assert_eq!(p.observe(410, Some(7), t0), Action::Purge(7));
        assert_eq!(p.observe(60, Some(7), t0), Action::Nothing);
        assert_eq!(p.observe(160, Some(7), t0), Action::Snapshot);
    }

    #[test]
    fn entries_written_while_a_snapshot_was_built_count_even_if_nothing_more_comes() {
        // All writes landed while the snapshot was built: 300 bytes are newer than it, and the WAL never grows again.
        let t0 = Instant::now();
        let mut p = Policy::new(100);
        assert_eq!(p.observe(150, None, t0), Action::Snapshot);
        assert_eq!(p.observe(300, Some(7), t0), Action::Purge(7));
        assert_eq!(p.observe(300, Some(7), t0), Action::Snapshot);
    }
}
