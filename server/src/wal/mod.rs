//! The write-ahead log: raftkv's durability layer for Raft log entries and the
//! metadata Raft must never forget (vote, committed, purge point).
//!
//! Raft's safety depends on a node keeping its promises across crashes: an entry
//! it acknowledged, or a vote it cast, must still be there after a power cut.
//! The WAL provides that by appending every change to a file and fsyncing it
//! before reporting it durable. It stores opaque byte payloads; the caller
//! encodes its own (openraft) types.
//!
//! # Layout
//!
//! A directory of append-only *segment* files, `00000000000000000001.wal`,
//! `00000000000000000002.wal`, ... (see `segment.rs`), plus a `LOCK` file. Each
//! segment is a sequence of CRC-framed records (see `record.rs` for the exact
//! bytes):
//!
//! ```text
//! [u32 LE payload len][u32 LE CRC32C(type + payload)][u8 type][payload]
//! types: 1 Entry(index, bytes)  2 Vote(bytes)  3 Committed(bytes)
//!        4 Truncate(since)      5 Purge(upto, bytes)
//!        6 Checkpoint(vote, committed, purge, live index range)
//!        7 Synced(segment, own offset, synced offset): a sync mark
//! ```
//!
//! The log's state is what you get by applying all records in order (segment
//! order, then file order): an Entry appends, Truncate removes entries >= since,
//! Purge removes entries <= upto, Vote / Committed replace the saved value.
//! Every segment starts with a Checkpoint holding the metadata as of its
//! creation, so older segments can be deleted once all their entries are purged
//! without losing the vote or purge records that were in them.
//!
//! The active segment's file is grown ahead of its records, by writing zeros
//! ([`WalOptions::preallocate`], 1 MiB at a time, up to `segment_bytes`): an
//! fdatasync that must also make a new file size and new blocks durable costs
//! about 2.5 times one that only writes data into blocks already there (0.37 vs
//! 0.14 ms p50 on this project's machines). So every byte after the last record
//! is zero, and a scan of the last segment reads records until only zeros are
//! left. A segment the WAL rolls past is cut to its records first.
//!
//! Only the last segment is written. When it reaches `segment_bytes` the WAL
//! *rolls*: it fdatasyncs the old segment, creates the next one with its
//! checkpoint, fdatasyncs it, and fsyncs the directory, all before writing
//! anything else. So a segment that is not last is complete and durable, which
//! is what lets recovery treat any damage in it as corruption rather than a
//! torn write (see `recovery.rs`).
//!
//! Entries are read back with `pread` through an in-memory index
//! (index -> segment, offset, length; see `state.rs`) and their CRC is checked
//! again on every read. Payloads are not cached in memory.
//!
//! # Durability and group commit
//!
//! Writes go to the file with `pwrite` under one mutex, so file order is call
//! order. They are not fsynced by the caller. A background *flusher* thread
//! does the routine fsyncs (see `append_and_sync` below for the one exception):
//! it notes how far the log has been written, calls
//! `fdatasync` once on the active segment, and then everything written up to
//! that point is durable. Appends that arrive while an fsync is in progress are
//! covered by the next one, so N concurrent appenders share far fewer than N
//! fsyncs. Each write operation gets a sequence number; an operation is durable
//! once the flusher's synced sequence number reaches it:
//!
//! * `append` returns after the write; its callback runs on the flusher thread
//!   once it is durable (or with the error if it never will be).
//! * `append_and_sync` is for a caller that waits for durability anyway (the
//!   Raft core): when no fsync is running, it does the group fsync itself, on
//!   its own thread, and runs the callbacks before it returns — two thread
//!   hand-offs fewer for a lone write. Only one fsync runs at a time, whoever
//!   runs it; appends that arrive meanwhile wait for the next one.
//! * `save_vote`, `truncate`, `purge` and `sync` block until durable (and do the
//!   fsync themselves when none is running).
//! * `save_committed` does not wait: losing the newest committed index in a crash
//!   is safe in Raft, so it rides along with the next fsync.
//!
//! After each group fsync the flusher appends a *sync mark* to the active segment
//! naming the offset the fsync covered. It costs no fsync of its own (it rides
//! along with the next one, or with the final sync at close) and lets recovery
//! tell a torn unsynced tail, holes included, from damage to synced data (see
//! `recovery.rs`).
//!
//! # Failure model
//!
//! The WAL is fail-stop. If a write or fsync fails it is *poisoned*: pending
//! callbacks and waiters get the error, and all later writes fail with
//! [`WalError::Poisoned`]. After a failed fsync Linux may have dropped the dirty
//! pages and cleared the error, so a retry could "succeed" without the data ever
//! reaching the disk; after a failed write the file and the in-memory index may
//! disagree. Restarting and replaying the files is the only safe way forward.
//!
//! # Invariants
//!
//! * Entry indices in the log are contiguous; the next append must continue at
//!   the index after the last entry (or after the purge point, once purged).
//! * File order is call order; memory is updated in the same order, under the
//!   same mutex.
//! * `synced_seq <= write_seq`, and everything written with a sequence number
//!   `<= synced_seq` is on stable storage.
//! * A sync mark is written only after the fsync it describes succeeded, names
//!   its own segment and offset, and claims no more than what that fsync covered.
//! * A segment is deleted only if it is not the active segment and every entry
//!   ever written to it is at or below the purge point; segments are deleted
//!   oldest first, each deletion made durable before the next, so the segment
//!   numbers on disk always form a contiguous run.

mod error;
mod record;
mod recovery;
mod segment;
mod state;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

pub use error::WalError;
pub use recovery::{RecoveryReport, TornTail};

use record::{Record, HEADER_LEN, MAX_ENTRY_DATA, MAX_META_DATA};
use recovery::Segment;
use segment::SegmentFile;
use state::{Conflict, Loc, LogState};

/// Called with the outcome once appended entries are durable (or never will be).
pub type DurableCallback = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Metrics hook called after each group fsync with its duration and the number
/// of records it made durable.
pub type FsyncHook = Arc<dyn Fn(Duration, usize) + Send + Sync>;

/// Called once, with the reason, when the WAL is poisoned (see "Failure model"). It runs with the WAL's lock
/// held: it must return quickly and must not call into the WAL.
pub type PoisonHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Default segment size: large enough that rolls (three fsyncs each) are rare.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Default [`WalOptions::preallocate`]: an fdatasync that grows the file must also allocate blocks and write the
/// new size, one within written blocks does not; 1 MiB of zeros is about a millisecond of writing, once per MiB
/// of log.
pub const DEFAULT_PREALLOCATE_BYTES: u64 = 1 << 20;

/// Reads coalesce adjacent records into one `pread` of up to this many bytes.
const MAX_READ_CHUNK: usize = 4 << 20;

/// How to open a WAL.
#[derive(Clone)]
pub struct WalOptions {
    /// Directory holding the segment files; created if missing.
    pub dir: PathBuf,
    /// Roll to a new segment once the active one holds at least this many bytes.
    pub segment_bytes: u64,
    /// Called from the flusher thread after every group fsync.
    pub on_fsync: Option<FsyncHook>,
    /// Fault-injection aid: before each group fsync, write "SEGMENT_FILE_NAME OFFSET" (the point the sync will
    /// cover) to this file, so a test harness can cut off exactly the unsynced tail after a kill -9.
    pub synced_marker: Option<PathBuf>,
    /// Called once when the WAL is poisoned, so the process can stop instead of limping on.
    pub on_poison: Option<PoisonHook>,
    /// When the active segment's file must grow, it grows by this many bytes of zeros beyond the write
    /// ([`DEFAULT_PREALLOCATE_BYTES`]; 0 = grow with every write). See `Segment::write_at_end`.
    pub preallocate: u64,
}

impl WalOptions {
    /// Options with default settings for a WAL in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalOptions {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            on_fsync: None,
            synced_marker: None,
            on_poison: None,
            preallocate: DEFAULT_PREALLOCATE_BYTES,
        }
    }
}

impl fmt::Debug for WalOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalOptions")
            .field("dir", &self.dir)
            .field("segment_bytes", &self.segment_bytes)
            .field("on_fsync", &self.on_fsync.as_ref().map(|_| "<hook>"))
            .field("synced_marker", &self.synced_marker)
            .field("on_poison", &self.on_poison.as_ref().map(|_| "<hook>"))
            .field("preallocate", &self.preallocate)
            .finish()
    }
}

/// A snapshot of WAL counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Segment files in use.
    pub segments: usize,
    /// Total bytes in those files.
    pub bytes: u64,
    /// Data fsyncs since open: group commits plus the syncs done when rolling.
    pub fsyncs: u64,
    /// Records written since open (entries, metadata and checkpoints; not sync marks).
    pub records_written: u64,
    /// Entries currently present.
    pub entries: usize,
}

/// A handle to an open write-ahead log. Cheap to clone; all clones share one log.
/// The log is closed (after a final fsync) when the last clone is dropped.
#[derive(Clone)]
pub struct Wal {
    handle: Arc<Handle>,
}

/// Owns the flusher thread; its Drop (when the last `Wal` goes) stops it.
struct Handle {
    core: Arc<Core>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    flusher_id: ThreadId,
}

/// State shared by the handles and the flusher thread.
struct Core {
    dir: PathBuf,
    segment_bytes: u64,
    /// `WalOptions::preallocate`.
    preallocate: u64,
    on_fsync: Option<FsyncHook>,
    synced_marker: Option<PathBuf>,
    on_poison: Option<PoisonHook>,
    /// Set with `Inner::poisoned`, readable without the lock (health checks must not wait behind an fsync).
    is_poisoned: std::sync::atomic::AtomicBool,
    inner: Mutex<Inner>,
    /// Signalled when there is something for the flusher to do.
    wake_flusher: Condvar,
    /// Signalled when `synced_seq` advances, or on poison / flusher exit.
    synced: Condvar,
    /// Held while deleting segments, so deletions happen strictly oldest first.
    deleting: Mutex<()>,
    /// The flock on the directory's LOCK file, released when Core is dropped.
    _lock: std::fs::File,
}

struct Inner {
    state: LogState,
    /// Segments in sequence order, contiguous; the back one is active.
    segments: VecDeque<Segment>,
    /// Sequence number of the last completed write operation.
    write_seq: u64,
    /// Every write with a sequence number <= this is durable.
    synced_seq: u64,
    /// The highest sequence number somebody waits to be durable (an append's callback, a blocking call). The
    /// flusher syncs only up to demand: a write nobody waits for (the committed index) rides along with the next
    /// sync instead of costing one of its own, which would delay the next append's.
    wanted_seq: u64,
    records_written: u64,
    /// `records_written` as of the last group fsync (for the metrics hook).
    records_synced: u64,
    fsyncs: u64,
    /// Append callbacks waiting for `synced_seq` to reach their sequence number.
    callbacks: VecDeque<(u64, DurableCallback)>,
    /// Set by the first write or fsync failure: (error kind, description).
    poisoned: Option<(io::ErrorKind, String)>,
    /// A sync mark was written to the active segment after its last fsync (synced at close).
    mark_unsynced: bool,
    /// A group fsync is running (on the flusher or inline on an appender): at most one at a time, so
    /// `synced_seq` only moves forward and each sync mark follows its own fsync.
    syncing: bool,
    /// No new operations; the flusher finishes pending work and exits.
    closing: bool,
    flusher_exited: bool,
}

/// A callback ready to run, with what it reports.
type Ready = (DurableCallback, io::Result<()>);

impl Inner {
    /// Somebody waits for a write that is not durable yet, and no fsync is running that could cover it.
    fn needs_sync(&self) -> bool {
        self.poisoned.is_none() && self.synced_seq < self.wanted_seq && !self.syncing
    }

    fn has_ready_callbacks(&self) -> bool {
        !self.callbacks.is_empty()
            && (self.poisoned.is_some() || self.callbacks.front().is_some_and(|(seq, _)| *seq <= self.synced_seq))
    }

    /// The callbacks whose writes are durable (all of them, with the error, once poisoned), in order.
    fn take_ready_callbacks(&mut self) -> Vec<Ready> {
        let mut ready = Vec::new();
        if let Some((kind, reason)) = &self.poisoned {
            let (kind, reason) = (*kind, reason.clone());
            ready.extend(self.callbacks.drain(..).map(|(_, cb)| (cb, Err(io::Error::new(kind, reason.clone())))));
        } else {
            while self.callbacks.front().is_some_and(|(seq, _)| *seq <= self.synced_seq) {
                let (_, cb) = self.callbacks.pop_front().expect("front checked");
                ready.push((cb, Ok(())));
            }
        }
        ready
    }

    fn active(&self) -> &Segment {
        self.segments.back().expect("WAL always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.back_mut().expect("WAL always has an active segment")
    }

    fn segment(&self, seq: u64) -> &Segment {
        let first = self.segments.front().expect("WAL always has an active segment").file.seq;
        assert!(seq >= first, "WAL bug: a live entry points into deleted segment {seq} (oldest kept: {first})");
        let seg = &self.segments[(seq - first) as usize];
        assert_eq!(seg.file.seq, seq, "WAL bug: segment list is not contiguous");
        seg
    }

    /// Fails unless new writes are allowed.
    fn check_writable(&self) -> Result<(), WalError> {
        if let Some((_, reason)) = &self.poisoned {
            return Err(WalError::Poisoned { reason: reason.clone() });
        }
        if self.closing || self.flusher_exited {
            return Err(WalError::Closed);
        }
        Ok(())
    }
}

impl From<Conflict> for WalError {
    fn from(c: Conflict) -> Self {
        match c {
            Conflict::NonContiguous { expected, got } => WalError::NonContiguous { expected, got },
            Conflict::TruncatePurged { since, purged } => WalError::TruncatePurged { since, purged },
            Conflict::PurgeRegressed { upto, purged } => WalError::PurgeRegressed { upto, purged },
            Conflict::IndexOverflow { index } => WalError::IndexOverflow { index },
        }
    }
}

fn check_size(what: &'static str, len: usize, max: usize) -> Result<(), WalError> {
    if len > max {
        return Err(WalError::TooLarge { what, len, max });
    }
    Ok(())
}

impl Wal {
    /// Opens (or creates) the WAL in `opts.dir`, recovering its state from the
    /// segment files. Fails with [`WalError::Corrupt`] if the files are damaged
    /// in a way a crash cannot explain, and with [`WalError::Locked`] if another
    /// WAL has the directory open.
    pub fn open(opts: WalOptions) -> Result<(Wal, RecoveryReport), WalError> {
        assert!(opts.segment_bytes > 0, "WalOptions::segment_bytes must be positive");
        let lock = segment::prepare_dir(&opts.dir)?;
        let recovered = recovery::recover(&opts.dir)?;
        let records = recovered.segments.iter().map(|s| s.records).sum::<u64>();
        let core = Arc::new(Core {
            dir: opts.dir.clone(),
            segment_bytes: opts.segment_bytes,
            preallocate: opts.preallocate,
            on_fsync: opts.on_fsync,
            synced_marker: opts.synced_marker,
            on_poison: opts.on_poison,
            is_poisoned: std::sync::atomic::AtomicBool::new(false),
            inner: Mutex::new(Inner {
                state: recovered.state,
                segments: recovered.segments.into(),
                write_seq: 0,
                synced_seq: 0,
                wanted_seq: 0,
                records_written: 0,
                records_synced: 0,
                fsyncs: 0,
                callbacks: VecDeque::new(),
                syncing: false,
                poisoned: None,
                mark_unsynced: false,
                closing: false,
                flusher_exited: false,
            }),
            wake_flusher: Condvar::new(),
            synced: Condvar::new(),
            deleting: Mutex::new(()),
            _lock: lock,
        });
        let thread = thread::Builder::new()
            .name("wal-flusher".into())
            .spawn({
                let core = Arc::clone(&core);
                move || run_flusher(core)
            })
            .map_err(|e| WalError::io(&opts.dir, "spawn flusher thread", e))?;
        tracing::debug!(dir = %opts.dir.display(), records, "WAL open");
        let handle = Handle { core, flusher_id: thread.thread().id(), flusher: Mutex::new(Some(thread)) };
        Ok((Wal { handle: Arc::new(handle) }, recovered.report))
    }

    fn core(&self) -> &Core {
        &self.handle.core
    }

    /// The last saved vote.
    pub fn vote(&self) -> Option<Vec<u8>> {
        self.core().lock().state.vote.clone()
    }

    /// The last saved committed payload.
    pub fn committed(&self) -> Option<Vec<u8>> {
        self.core().lock().state.committed.clone()
    }

    /// The last purge: its index and the caller's payload.
    pub fn purged(&self) -> Option<(u64, Vec<u8>)> {
        self.core().lock().state.purged.clone()
    }

    /// Index of the first entry present.
    pub fn first_index(&self) -> Option<u64> {
        self.core().lock().state.first_index()
    }

    /// Index of the last entry present.
    pub fn last_index(&self) -> Option<u64> {
        self.core().lock().state.last_index()
    }

    /// The entries present in `[start, end_exclusive)`, in index order, read from
    /// disk with their CRCs re-checked. Fails with [`WalError::Poisoned`] once the
    /// WAL is poisoned: the index may then describe records that never reached
    /// the file.
    pub fn read(&self, start: u64, end_exclusive: u64) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
        if start >= end_exclusive {
            return Ok(Vec::new());
        }
        // Plan under the lock, read outside it: an Arc'd file stays readable even
        // if a concurrent purge unlinks it, and records are never overwritten.
        let runs = {
            let inner = self.core().lock();
            if let Some((_, reason)) = &inner.poisoned {
                return Err(WalError::Poisoned { reason: reason.clone() });
            }
            plan_reads(&inner, start, end_exclusive)
        };
        let mut out = Vec::with_capacity(runs.iter().map(|r| r.entries.len()).sum());
        for run in runs {
            let mut buf = vec![0; run.bytes];
            run.file.read_exact_at(&mut buf, run.offset)?;
            let mut pos = 0;
            for (index, loc) in run.entries {
                let frame = &buf[pos..pos + HEADER_LEN + loc.len as usize];
                pos += frame.len();
                let corrupt = |reason: String| WalError::corrupt(&run.file.path, loc.offset, reason);
                match record::check_frame(frame) {
                    Ok(Record::Entry { index: got, data }) if got == index => out.push((index, data.to_vec())),
                    Ok(Record::Entry { index: got, .. }) => {
                        return Err(corrupt(format!(
                            "index expects entry {index} here but the record holds entry {got}"
                        )))
                    }
                    Ok(other) => {
                        return Err(corrupt(format!(
                            "index expects entry {index} here but found a {} record",
                            other.kind()
                        )))
                    }
                    Err(reason) => return Err(corrupt(format!("{reason} reading entry {index}"))),
                }
            }
        }
        Ok(out)
    }

    /// How many of the entries from `start` on (below `end_exclusive`) fit in `max_bytes` of record data — at
    /// least one if any is present — read from the in-memory index, without touching the files. Lets callers
    /// bound a read by bytes before reading (replication, the debug log view).
    pub fn entries_within(&self, start: u64, end_exclusive: u64, max_bytes: usize) -> u64 {
        let inner = self.core().lock();
        let mut total = 0usize;
        let mut n = 0u64;
        for (_, loc) in inner.state.locs(start, end_exclusive) {
            total += loc.len as usize;
            if n > 0 && total > max_bytes {
                break;
            }
            n += 1;
        }
        n
    }

    /// The record bytes of the entries from `start` on (below `end_exclusive`), from the in-memory index.
    pub fn entry_bytes(&self, start: u64, end_exclusive: u64) -> u64 {
        let inner = self.core().lock();
        inner.state.locs(start, end_exclusive).map(|(_, loc)| loc.len as u64).sum()
    }

    /// The first index of the newest run of entries below `end_exclusive`, starting at `start` or later, that fits
    /// in `max_bytes` (by [`entries_within`](Self::entries_within); at least the last entry). Bisection: a run only
    /// grows as its start moves back.
    pub fn newest_start_within(&self, start: u64, end_exclusive: u64, max_bytes: usize) -> u64 {
        let fits = |from: u64| self.entries_within(from, end_exclusive, max_bytes) >= end_exclusive - from;
        if start + 1 >= end_exclusive || fits(start) {
            return start;
        }
        let (mut lo, mut hi) = (start, end_exclusive - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// Writes `entries` (no fsync). They are visible to [`read`](Self::read) when
    /// this returns, and `on_durable` is called from the flusher thread once they
    /// are fsynced — or with the error if that fails. If `append` itself returns
    /// an error, `on_durable` is never called; a validation error (e.g.
    /// NonContiguous) leaves the log unchanged, while a write error poisons it.
    ///
    /// The first index must be `last_index + 1`; if the log is empty, the index
    /// after the purge point (or the truncation point); if the log has never had
    /// an entry nor a purge, anything. Indices must increase by one.
    pub fn append(&self, entries: Vec<(u64, Vec<u8>)>, on_durable: DurableCallback) -> Result<(), WalError> {
        self.append_records(entries, on_durable, false)
    }

    /// [`append`](Self::append) for a caller that waits for durability before it does anything else (openraft
    /// 0.9's core waits for each append's flush): if no fsync is running, the entries are fsynced on the caller's
    /// thread and `on_durable` is called before this returns, which saves two thread hand-offs (to the flusher and
    /// back). If one is running, it behaves as `append`: the flusher's next group fsync covers them.
    pub fn append_and_sync(&self, entries: Vec<(u64, Vec<u8>)>, on_durable: DurableCallback) -> Result<(), WalError> {
        self.append_records(entries, on_durable, true)
    }

    fn append_records(
        &self,
        entries: Vec<(u64, Vec<u8>)>,
        on_durable: DurableCallback,
        inline: bool,
    ) -> Result<(), WalError> {
        for (_, data) in &entries {
            check_size("entry", data.len(), MAX_ENTRY_DATA)?;
        }
        if let Some(&(last, _)) = entries.last() {
            if last == u64::MAX {
                return Err(WalError::IndexOverflow { index: last });
            }
        }
        for pair in entries.windows(2) {
            let expected = pair[0].0 + 1; // no overflow: checked above that every index < u64::MAX
            if pair[1].0 != expected {
                return Err(WalError::NonContiguous { expected, got: pair[1].0 });
            }
        }
        let records: Vec<Record<'_>> =
            entries.iter().map(|(index, data)| Record::Entry { index: *index, data }).collect();

        let core = self.core();
        let mut inner = core.lock();
        inner.check_writable()?;
        if let Some(first) = records.first() {
            inner.state.check(first)?;
            core.write(&mut inner, &records)?;
        }
        // An empty append still reports through the flusher, after everything
        // written before it is durable.
        let seq = inner.write_seq;
        inner.callbacks.push_back((seq, on_durable));
        inner.wanted_seq = inner.wanted_seq.max(seq);
        if inline && inner.needs_sync() {
            core.sync_inline(inner);
        } else {
            core.wake_flusher.notify_one();
        }
        Ok(())
    }

    /// Saves the vote; it is durable when this returns.
    pub fn save_vote(&self, vote: &[u8]) -> Result<(), WalError> {
        check_size("vote", vote.len(), MAX_META_DATA)?;
        let core = self.core();
        let mut inner = core.lock();
        inner.check_writable()?;
        core.write(&mut inner, &[Record::Vote(vote)])?;
        let seq = inner.write_seq;
        core.wait_synced(inner, seq)
    }

    /// Saves the committed payload. It is written but not fsynced: it becomes
    /// durable with the next sync (Raft tolerates losing it).
    pub fn save_committed(&self, committed: &[u8]) -> Result<(), WalError> {
        check_size("committed", committed.len(), MAX_META_DATA)?;
        let core = self.core();
        let mut inner = core.lock();
        inner.check_writable()?;
        core.write(&mut inner, &[Record::Committed(committed)])?;
        Ok(())
    }

    /// Removes entries with index >= `since`; durable when this returns. After
    /// it, the next append continues at `since`.
    pub fn truncate(&self, since: u64) -> Result<(), WalError> {
        let core = self.core();
        let mut inner = core.lock();
        inner.check_writable()?;
        let record = Record::Truncate { since };
        inner.state.check(&record)?;
        if inner.state.truncate_is_noop(since) {
            return Ok(());
        }
        core.write(&mut inner, &[record])?;
        let seq = inner.write_seq;
        core.wait_synced(inner, seq)
    }

    /// Removes entries with index <= `upto` and records `payload` (the caller's
    /// log id) as the purge point; durable when this returns. `upto` may be past
    /// the last entry: the log becomes empty and the next append starts at
    /// `upto + 1`. Then deletes the segment files no longer needed; if that
    /// fails the error is returned, but the purge itself is already durable and
    /// the files are retried on the next purge.
    pub fn purge(&self, upto: u64, payload: &[u8]) -> Result<(), WalError> {
        check_size("purge payload", payload.len(), MAX_META_DATA)?;
        let core = self.core();
        let mut inner = core.lock();
        inner.check_writable()?;
        let record = Record::Purge { upto, payload };
        inner.state.check(&record)?;
        core.write(&mut inner, &[record])?;
        let seq = inner.write_seq;
        core.wait_synced(inner, seq)?;
        core.delete_purged_segments()
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<(), WalError> {
        let core = self.core();
        let inner = core.lock();
        inner.check_writable()?;
        let seq = inner.write_seq;
        core.wait_synced(inner, seq)
    }

    /// Syncs, then stops the flusher. Later writes fail with [`WalError::Closed`];
    /// reads keep working. Dropping the last handle does the same implicitly.
    pub fn close(&self) -> Result<(), WalError> {
        let result = match self.sync() {
            Err(WalError::Closed) => Ok(()),
            other => other,
        };
        self.handle.shutdown();
        result
    }

    /// Current counters.
    pub fn stats(&self) -> WalStats {
        let inner = self.core().lock();
        WalStats {
            segments: inner.segments.len(),
            bytes: inner.segments.iter().map(|s| s.allocated).sum(),
            fsyncs: inner.fsyncs,
            records_written: inner.records_written,
            entries: inner.state.entry_count(),
        }
    }

    /// Why the WAL is poisoned, if it is: it then refuses every write until the process restarts.
    /// Cheap when it is not poisoned: no lock is taken.
    pub fn poisoned(&self) -> Option<String> {
        if !self.core().is_poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        self.core().lock().poisoned.as_ref().map(|(_, reason)| reason.clone())
    }

    /// The directory holding the segment files.
    pub fn dir(&self) -> &Path {
        &self.core().dir
    }
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal").field("dir", &self.core().dir).finish_non_exhaustive()
    }
}

/// Adjacent entry records in one segment, read with a single pread.
struct ReadRun {
    file: Arc<SegmentFile>,
    offset: u64,
    bytes: usize,
    entries: Vec<(u64, Loc)>,
}

fn plan_reads(inner: &Inner, start: u64, end: u64) -> Vec<ReadRun> {
    let mut runs: Vec<ReadRun> = Vec::new();
    for (index, loc) in inner.state.locs(start, end) {
        let frame = HEADER_LEN + loc.len as usize;
        if let Some(run) = runs.last_mut() {
            if run.file.seq == loc.seg
                && run.offset + run.bytes as u64 == loc.offset
                && run.bytes + frame <= MAX_READ_CHUNK
            {
                run.bytes += frame;
                run.entries.push((index, loc));
                continue;
            }
        }
        let file = Arc::clone(&inner.segment(loc.seg).file);
        runs.push(ReadRun { file, offset: loc.offset, bytes: frame, entries: vec![(index, loc)] });
    }
    runs
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only a bug (a failed assert) can panic while holding this lock; the state
        // may then be inconsistent, so refuse to go on rather than risk the log.
        self.inner.lock().expect("WAL state lock poisoned by an earlier panic")
    }

    /// Writes one operation's records (already checked against the state) and
    /// applies them. Any failure poisons the WAL: part of the operation may have
    /// reached the file, and memory already reflects all of it.
    fn write(&self, inner: &mut Inner, records: &[Record<'_>]) -> Result<(), WalError> {
        if let Err(err) = self.write_records(inner, records) {
            self.poison(inner, &err);
            return Err(err);
        }
        inner.write_seq += 1;
        Ok(())
    }

    fn write_records(&self, inner: &mut Inner, records: &[Record<'_>]) -> Result<(), WalError> {
        let mut buf = Vec::new();
        let mut buffered = 0u64;
        for record in records {
            let active = inner.active();
            // Roll only a segment holding more than its checkpoint, so a tiny
            // segment_bytes still makes progress.
            let has_data = active.records > 1 || buffered > 0;
            if has_data && active.len + buf.len() as u64 >= self.segment_bytes {
                self.flush(inner, &mut buf, &mut buffered)?;
                self.roll(inner)?;
            }
            let active = inner.active_mut();
            let offset = active.len + buf.len() as u64;
            let len = record::encode(record, &mut buf);
            let loc = Loc { seg: active.file.seq, offset, len };
            if let Record::Entry { index, .. } = record {
                active.max_index = Some(active.max_index.map_or(*index, |m| m.max(*index)));
            }
            buffered += 1;
            inner.state.apply(record, loc);
        }
        self.flush(inner, &mut buf, &mut buffered)
    }

    /// Starts a new segment. The old one is fdatasynced first, so no later write
    /// can reach the disk before it (recovery relies on non-last segments being
    /// complete), and the new one is durable, checkpoint included, before any
    /// record goes into it.
    fn roll(&self, inner: &mut Inner) -> Result<(), WalError> {
        let old = inner.active();
        let seq = old.file.seq + 1;
        if old.allocated > old.len {
            // Zeros left after its records (preallocated under a larger `segment_bytes`): cut, so that a segment
            // that is not last ends with its last record and zeros there are loss (see `recovery.rs`).
            old.file.truncate_to(old.len)?;
            let old = inner.active_mut();
            old.allocated = old.len;
        } else {
            old.file.sync_data()?;
        }
        inner.fsyncs += 1;
        let mut seg = Segment::new(SegmentFile::create(&self.dir, seq)?);
        recovery::write_checkpoint(&mut seg, &inner.state.checkpoint())?;
        inner.fsyncs += 1;
        inner.records_written += 1;
        segment::sync_dir(&self.dir)?;
        tracing::debug!(segment = %seg.file.path.display(), "WAL rolled to a new segment");
        inner.segments.push_back(seg);
        inner.mark_unsynced = false; // the old segment was synced in full, mark included
        Ok(())
    }

    /// Blocks until the write with sequence number `seq` is durable.
    fn wait_synced<'a>(&'a self, mut inner: MutexGuard<'a, Inner>, seq: u64) -> Result<(), WalError> {
        inner.wanted_seq = inner.wanted_seq.max(seq);
        if inner.needs_sync() {
            self.sync_inline(inner);
            inner = self.lock();
        } else {
            self.wake_flusher.notify_one();
        }
        loop {
            if inner.synced_seq >= seq {
                return Ok(());
            }
            if let Some((_, reason)) = &inner.poisoned {
                return Err(WalError::Poisoned { reason: reason.clone() });
            }
            if inner.flusher_exited {
                return Err(WalError::Closed);
            }
            inner = self.synced.wait(inner).expect("WAL state lock poisoned by an earlier panic");
        }
    }

    /// One group fsync of everything written so far. Precondition: `inner.needs_sync()`. The lock is released
    /// during the fsync; returns it with how long the fsync took and how many records it covered (`None` if it
    /// failed, which poisons the WAL).
    fn sync_written<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> (MutexGuard<'a, Inner>, Option<(Duration, usize)>) {
        assert!(inner.needs_sync(), "WAL bug: a group fsync started with nothing to sync or another one running");
        inner.syncing = true;
        // Everything with seq <= target is in the active segment or in older
        // ones, which were synced when rolled; so one fdatasync covers it all.
        let target = inner.write_seq;
        let records = inner.records_written;
        let file = Arc::clone(&inner.active().file);
        let covered = inner.active().len;
        drop(inner);
        if let Some(marker) = &self.synced_marker {
            // Written before the sync, so the marker never lags behind what is durable.
            let name = file.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let _ = std::fs::write(marker, format!("{name} {covered}\n"));
        }
        let started = Instant::now();
        let result = file.sync_data();
        let took = started.elapsed();
        let mut inner = self.lock();
        inner.syncing = false;
        let mut synced = None;
        match result {
            Ok(()) => {
                assert!(target >= inner.synced_seq, "WAL bug: synced sequence number went backwards");
                inner.synced_seq = target;
                inner.fsyncs += 1;
                synced = Some((took, (records - inner.records_synced) as usize));
                inner.records_synced = records;
                // The mark describes this segment only; if the WAL rolled meanwhile, the roll synced it all.
                if inner.active().file.seq == file.seq {
                    inner.mark_unsynced = false;
                    if let Err(err) = self.write_sync_mark(&mut inner, covered) {
                        self.poison(&mut inner, &err);
                    }
                }
            }
            Err(err) => self.poison(&mut inner, &err),
        }
        self.synced.notify_all();
        (inner, synced)
    }

    /// The group fsync done by the appender itself when nobody else is syncing: a lone write (a leader's next
    /// entry, a follower's AppendEntries) is made durable and reported on the caller's thread, without two
    /// thread hand-offs (to the flusher and back). Writes arriving meanwhile wait for the flusher's next sync.
    fn sync_inline(&self, inner: MutexGuard<'_, Inner>) {
        let (mut inner, synced) = self.sync_written(inner);
        let ready = inner.take_ready_callbacks();
        if inner.needs_sync() || inner.has_ready_callbacks() || inner.closing {
            self.wake_flusher.notify_one();
        }
        drop(inner);
        self.deliver(synced, ready);
    }

    /// Runs the fsync hook and the ready callbacks, without the lock: a panic in caller code must not take the
    /// WAL down with it.
    fn deliver(&self, synced: Option<(Duration, usize)>, ready: Vec<Ready>) {
        if let (Some(hook), Some((took, records))) = (&self.on_fsync, synced) {
            if catch_unwind(AssertUnwindSafe(|| hook(took, records))).is_err() {
                tracing::error!("WAL on_fsync hook panicked");
            }
        }
        for (cb, result) in ready {
            if catch_unwind(AssertUnwindSafe(|| cb(result))).is_err() {
                tracing::error!("WAL durable callback panicked");
            }
        }
    }

    fn poison(&self, inner: &mut Inner, err: &WalError) {
        if inner.poisoned.is_none() {
            tracing::error!(error = %err, "WAL poisoned: all further writes will fail until restart");
            let kind = match err {
                WalError::Io { source, .. } => source.kind(),
                _ => io::ErrorKind::Other,
            };
            inner.poisoned = Some((kind, err.to_string()));
            self.is_poisoned.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(hook) = &self.on_poison {
                if catch_unwind(AssertUnwindSafe(|| hook(&err.to_string()))).is_err() {
                    tracing::error!("WAL on_poison hook panicked");
                }
            }
        }
        self.synced.notify_all();
        self.wake_flusher.notify_one();
    }

    /// Deletes, oldest first, the non-active segments whose entries are all
    /// purged. Each unlink is made durable before the next so that a crash
    /// cannot leave a gap in the segment numbers.
    fn delete_purged_segments(&self) -> Result<(), WalError> {
        let _serial = self.deleting.lock().expect("WAL deletion lock poisoned by an earlier panic");
        let mut victims: VecDeque<Segment> = {
            let mut inner = self.lock();
            let purged = inner.state.purged.as_ref().map(|(i, _)| *i);
            let mut victims = VecDeque::new();
            while inner.segments.len() > 1 {
                let front = inner.segments.front().expect("len > 1");
                let all_purged = match (front.max_index, purged) {
                    (None, _) => true, // no entries: its metadata lives on in later checkpoints
                    (Some(max), Some(purged)) => max <= purged,
                    (Some(_), None) => false,
                };
                if !all_purged {
                    break;
                }
                victims.push_back(inner.segments.pop_front().expect("len > 1"));
            }
            victims
        };
        while let Some(seg) = victims.front() {
            let result = match std::fs::remove_file(&seg.file.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(WalError::io(&seg.file.path, "delete segment", e)),
                _ => segment::sync_dir(&self.dir),
            };
            if let Err(err) = result {
                tracing::error!(error = %err, "WAL could not delete a purged segment; will retry on the next purge");
                // Give the rest back, in order, so the next purge retries them.
                let mut inner = self.lock();
                while let Some(seg) = victims.pop_back() {
                    inner.segments.push_front(seg);
                }
                // The purge itself is durable; a leftover file only costs disk until the next purge.
                return Ok(());
            }
            tracing::debug!(segment = %seg.file.path.display(), "WAL deleted purged segment");
            victims.pop_front();
        }
        Ok(())
    }
}

impl Core {
    /// Appends a sync mark to the active segment after an fsync of it covered `[0, synced)`. Not fsynced here.
    fn write_sync_mark(&self, inner: &mut Inner, synced: u64) -> Result<(), WalError> {
        let active = inner.active_mut();
        let at = active.len;
        assert!(synced <= at, "WAL bug: sync mark at {at} would claim {synced}, beyond what was written");
        let mut buf = Vec::with_capacity(record::SYNCED_FRAME);
        record::encode(&Record::Synced { segment: active.file.seq, at, synced }, &mut buf);
        active.write_at_end(&buf, self.preallocate, self.segment_bytes)?;
        active.records += 1;
        inner.mark_unsynced = true;
        Ok(())
    }

    /// Writes the buffered records at the end of the active segment.
    fn flush(&self, inner: &mut Inner, buf: &mut Vec<u8>, buffered: &mut u64) -> Result<(), WalError> {
        if buf.is_empty() {
            return Ok(());
        }
        let active = inner.active_mut();
        active.write_at_end(buf, self.preallocate, self.segment_bytes)?;
        active.records += *buffered;
        inner.records_written += *buffered;
        buf.clear();
        *buffered = 0;
        Ok(())
    }
}

impl Handle {
    /// Tells the flusher to finish pending work and exit, and waits for it
    /// (unless called on the flusher thread itself, from a callback).
    fn shutdown(&self) {
        {
            let mut inner = self.core.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.closing = true;
        }
        self.core.wake_flusher.notify_all();
        if thread::current().id() == self.flusher_id {
            return;
        }
        let thread = self.flusher.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("WAL flusher thread panicked");
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The flusher: waits for unsynced writes or pending callbacks, fdatasyncs the
/// active segment once for everything written so far, then completes callbacks.
/// It stands aside while an appender syncs inline ([`Core::sync_inline`]).
fn run_flusher(core: Arc<Core>) {
    /// Marks the flusher gone even if it panics, so waiters fail instead of hanging.
    struct ExitGuard<'a>(&'a Core);
    impl Drop for ExitGuard<'_> {
        fn drop(&mut self) {
            let mut inner = self.0.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.flusher_exited = true;
            if !inner.callbacks.is_empty() {
                tracing::error!(pending = inner.callbacks.len(), "WAL flusher exited with callbacks pending");
            }
            self.0.synced.notify_all();
        }
    }
    let _guard = ExitGuard(&core);

    let mut inner = core.lock();
    loop {
        let need_sync = inner.needs_sync();
        if !need_sync && !inner.has_ready_callbacks() {
            if inner.closing && inner.callbacks.is_empty() && !inner.syncing {
                if inner.mark_unsynced && inner.poisoned.is_none() {
                    // So that a clean shutdown leaves the last synced point on disk too.
                    if let Err(err) = inner.active().file.sync_data() {
                        tracing::warn!(error = %err, "WAL: final fsync of the last sync mark failed");
                    }
                    inner.mark_unsynced = false;
                }
                return;
            }
            inner = core.wake_flusher.wait(inner).expect("WAL state lock poisoned by an earlier panic");
            continue;
        }
        let synced;
        (inner, synced) = if need_sync { core.sync_written(inner) } else { (inner, None) };
        let ready = inner.take_ready_callbacks();
        drop(inner);
        core.deliver(synced, ready);
        inner = core.lock();
    }
}
