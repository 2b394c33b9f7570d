//! Recovery: rebuilding the in-memory state from the segment files at open.
//!
//! Segments are read in sequence order and their records applied in file order,
//! through the same `LogState` operations the live WAL uses. The first surviving
//! segment's checkpoint is the starting state (older segments may have been
//! deleted after a purge); the checkpoint of every later segment must equal the
//! state replayed so far, which catches lost or reordered segments.
//!
//! # What is repaired, and what is refused
//!
//! Everything the WAL acknowledged was fsynced first, and a non-last segment was fsynced in full before the
//! next one was created; so a crash (kill -9, or a power cut) can only damage bytes of the LAST segment that
//! were written after its last completed fsync — the *unsynced tail*. A power cut may lose any part of that
//! tail, not just a suffix: the page cache is written back in no particular order, so the tail may come back
//! with holes (zeros, or stale blocks) followed by data that did arrive.
//!
//! The records of the last segment end where nothing but zeros is left: the WAL writes zeros ahead of its
//! records (`Segment::write_at_end`), so zeros to the end of that file are space not written yet, neither a
//! defect nor cut off. (A record lost to zeros at the very end cannot be told from space never written, with or
//! without preallocation.) A segment that is not last has no such space — the WAL cuts what is left of it when
//! it rolls — so zeros at its end are lost records: corruption, refused like any other defect there. (The next
//! segment's checkpoint would not always tell: a lost truncate and the entries rewritten after it leave the same
//! index range, and the stale entries would come back.)
//!
//! To tell that tail from the synced part, the flusher writes a *sync mark* after every group fsync (see
//! `record.rs`): "this segment is fsynced below offset X". Marks are not fsynced themselves; each rides along
//! with the next sync. When the scan of the last segment stops at a defect at offset D, recovery looks for the
//! highest valid mark after D (record boundaries are unknown past a defect, so every offset is tried):
//!
//! * no mark after D claims a synced point beyond D: D is in the unsynced tail. Everything from D on is cut
//!   off (ftruncate, then fsync) and reported in [`RecoveryReport::torn_tail`] with a warning. This covers an
//!   interrupted append (a header or payload running past end of file, a bad CRC followed by nothing or only
//!   zeros), and holes: a bad CRC or a garbage length followed by more data;
//! * a mark after D says the segment was fsynced beyond D: the damaged bytes had reached the disk before the
//!   crash, so this is corruption, and `open` refuses (below).
//!
//! The limit of this: the mark of the very last group fsync before a power cut may itself be lost, so damage
//! inside that last fsynced batch (bit rot of bytes that had just been synced, in the same power cut) is
//! indistinguishable from a torn write and is cut. A kill -9 loses nothing from the page cache, so there the
//! mark always survives.
//!
//! Anything else is corruption and `open` fails with [`WalError::Corrupt`] naming the file and offset,
//! touching nothing on disk: any defect in a non-last segment, a defect in the last segment before its synced
//! point, a well-framed record that makes no sense (unknown type, non-contiguous entry, checkpoint disagreeing
//! with replay, a sync mark at the wrong place), or a missing segment. Dropping such data could silently lose
//! entries the cluster believes are durable.
//!
//! After recovery the last segment is fsynced (what we read may have been only in the page cache of a crashed
//! process) and, if it is empty, given its checkpoint, so the state `open` returns is durable before anyone
//! acts on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::WalError;
use super::record::{self, Checkpoint, Defect, Record, Scanned, Scanner, HEADER_LEN};
use super::segment::{self, SegmentFile};
use super::state::{Loc, LogState};

/// What `Wal::open` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files in use after recovery.
    pub segments: usize,
    /// Entries present after recovery.
    pub entries: usize,
    /// The torn tail cut from the last segment, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// A torn tail removed from the last segment at recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was cut.
    pub path: PathBuf,
    /// Its new length: the end of the last good record.
    pub offset: u64,
    /// How many bytes were removed.
    pub bytes_dropped: u64,
}

/// A segment in use, with what the WAL needs to know about its contents.
#[derive(Debug)]
pub(crate) struct Segment {
    pub file: Arc<SegmentFile>,
    /// Bytes written (the offset of the next record).
    pub len: u64,
    /// The file's size: `len` plus the zeros preallocated after it (see `Segment::write_at_end`).
    pub allocated: u64,
    /// Records written, including the leading checkpoint.
    pub records: u64,
    /// Highest entry index ever written here, truncated or not. The segment may
    /// be deleted once this is purged.
    pub max_index: Option<u64>,
}

pub(crate) struct Recovered {
    pub state: LogState,
    /// All segments in sequence order; the last one is active.
    pub segments: Vec<Segment>,
    pub report: RecoveryReport,
}

const REFUSE: &str = "refusing to start";

/// Replays `dir` (which must exist and be locked by the caller).
pub(crate) fn recover(dir: &Path) -> Result<Recovered, WalError> {
    let listed = segment::list(dir)?;
    for pair in listed.windows(2) {
        let (a, b) = (pair[0].0, pair[1].0);
        if b != a + 1 {
            return Err(WalError::corrupt(
                dir.join(segment::file_name(a + 1)),
                0,
                format!("segment file is missing (the directory jumps from segment {a} to {b}); {REFUSE}"),
            ));
        }
    }

    let mut state: Option<LogState> = None;
    let mut segments = Vec::with_capacity(listed.len().max(1));
    let mut torn_tail = None;
    for (i, (seq, path)) in listed.iter().enumerate() {
        let is_last = i + 1 == listed.len();
        let file = SegmentFile::open(*seq, path.clone())?;
        // Whole-file reads are fine: a segment is bounded by segment_bytes plus
        // one record, and only one is held at a time.
        let buf = file.read_all()?;
        let mut seg =
            Segment { file: Arc::new(file), len: 0, allocated: buf.len() as u64, records: 0, max_index: None };
        let mut scanner = Scanner::new(&buf);
        loop {
            match scanner.next() {
                Scanned::End => break,
                Scanned::Record { offset, len, record } => {
                    replay(&mut state, &mut seg, offset, len, record)
                        .map_err(|reason| WalError::corrupt(path, offset, format!("{reason}; {REFUSE}")))?;
                    seg.len = offset + (HEADER_LEN as u64) + u64::from(len);
                    seg.records += 1;
                }
                // Nothing but zeros from here on in the last segment: space preallocated for records not
                // written yet. Not a defect, nothing to cut.
                Scanned::Defect { defect: Defect::ZeroTail, .. } if is_last => break,
                Scanned::Defect { offset, defect } if is_last && defect.is_torn_write() => {
                    // Past a defect, only a sync mark can say whether these bytes had been fsynced.
                    if let Some((synced, at)) = record::max_sync_mark_after(&buf, offset as usize + 1, *seq) {
                        if synced > offset {
                            return Err(WalError::corrupt(
                                path,
                                offset,
                                format!(
                                    "{defect}, but the sync mark at offset {at} says this segment was fsynced up \
                                     to offset {synced}: damage to synced data, not a torn write; {REFUSE}"
                                ),
                            ));
                        }
                    }
                    let bytes_dropped = buf.len() as u64 - offset;
                    tracing::warn!(
                        file = %path.display(), offset, bytes_dropped, %defect,
                        "WAL: cutting torn tail off the last segment (written after its last fsync, then a crash)"
                    );
                    torn_tail = Some(TornTail { path: path.clone(), offset, bytes_dropped });
                    break;
                }
                Scanned::Defect { offset, defect } => {
                    let where_ = if is_last { "" } else { " in a non-last segment" };
                    return Err(WalError::corrupt(path, offset, format!("{defect}{where_}; {REFUSE}")));
                }
            }
        }
        debug_assert!(torn_tail.is_none() || is_last);
        segments.push(seg);
    }
    let state = state.unwrap_or_default();

    if let Some((from, to)) = state.hole() {
        return Err(WalError::corrupt(
            &listed[0].1,
            0,
            format!(
                "entries {from}..{to} are live according to this segment's checkpoint, but the segments \
                 that held them are gone; {REFUSE}"
            ),
        ));
    }

    // Only now, with everything validated, change the disk.
    if let Some(torn) = &torn_tail {
        let last = segments.last_mut().expect("a torn tail implies a segment");
        last.file.truncate_to(torn.offset)?;
        last.allocated = torn.offset;
    }
    if segments.is_empty() {
        let file = SegmentFile::create(dir, 1)?;
        segments.push(Segment::new(file));
    }
    let active = segments.last_mut().expect("at least one segment");
    if active.records == 0 {
        // New, or its checkpoint was torn: every segment must start with one.
        write_checkpoint(active, &state.checkpoint())?;
    } else {
        active.file.sync_data()?;
    }
    segment::sync_dir(dir)?;

    assert!(state.hole().is_none(), "WAL bug: recovered state still has missing entries");
    let report = RecoveryReport { segments: segments.len(), entries: state.entry_count(), torn_tail };
    tracing::info!(
        dir = %dir.display(),
        segments = report.segments,
        entries = report.entries,
        first_index = ?state.first_index(),
        last_index = ?state.last_index(),
        torn_tail = report.torn_tail.is_some(),
        "WAL recovered"
    );
    Ok(Recovered { state, segments, report })
}

/// Writes `cp` as the first record of an empty segment and fdatasyncs it.
pub(crate) fn write_checkpoint(seg: &mut Segment, cp: &Checkpoint) -> Result<(), WalError> {
    assert_eq!(seg.records, 0, "checkpoint must be the first record of segment {}", seg.file.seq);
    let mut buf = Vec::new();
    record::encode(&Record::Checkpoint(cp.clone()), &mut buf);
    seg.file.write_all_at(&buf, 0)?;
    seg.file.sync_data()?;
    seg.len = buf.len() as u64;
    seg.allocated = seg.allocated.max(seg.len);
    seg.records = 1;
    Ok(())
}

impl Segment {
    /// A new, empty segment file.
    pub(crate) fn new(file: SegmentFile) -> Self {
        Segment { file: Arc::new(file), len: 0, allocated: 0, records: 0, max_index: None }
    }

    /// Writes `buf` at the end of the segment's records. If that runs past the file's end, the file is first
    /// extended with up to `preallocate` bytes of zeros beyond what `buf` needs, stopping at `limit` (the size at
    /// which the WAL rolls to a new segment): fdatasync then has to make new blocks and the file's new size
    /// durable once per `preallocate` bytes instead of on every append (about 0.4 ms instead of 0.15 ms for the
    /// fdatasync here). Written zeros, not `fallocate`: the blocks of an fallocated range are marked unwritten,
    /// and the first write to each still changes metadata.
    ///
    /// Invariant (recovery relies on it): every byte of the file past `len` is zero, so the records end where
    /// the zeros begin.
    pub(crate) fn write_at_end(&mut self, buf: &[u8], preallocate: u64, limit: u64) -> Result<(), WalError> {
        let end = self.len + buf.len() as u64;
        let target = end.saturating_add(preallocate).min(limit.max(end));
        if end > self.allocated && target > end {
            match self.file.write_zeros(self.allocated.max(self.len), target) {
                Ok(()) => self.allocated = target,
                // A full disk may still take the records themselves: write them without the space ahead (the
                // zeros that did get written keep the invariant) rather than poison the WAL over the zeros, which
                // a restart would only try again.
                Err(e) if segment::is_disk_full(&e) => {
                    tracing::warn!(file = %self.file.path.display(), error = %e, "WAL: no space to preallocate");
                    self.allocated = self.file.size()?;
                }
                Err(e) => return Err(WalError::io(&self.file.path, "preallocate (write zeros)", e)),
            }
        }
        self.file.write_all_at(buf, self.len)?;
        self.len = end;
        self.allocated = self.allocated.max(end);
        Ok(())
    }
}

/// Applies one record read from `seg` at `offset`. Errors are corruption reasons.
fn replay(
    state: &mut Option<LogState>,
    seg: &mut Segment,
    offset: u64,
    len: u32,
    record: Record<'_>,
) -> Result<(), String> {
    if seg.records == 0 {
        let Record::Checkpoint(cp) = record else {
            return Err("segment does not begin with a checkpoint record".into());
        };
        match state {
            // The first surviving segment: its checkpoint is where replay starts.
            None => *state = Some(LogState::from_checkpoint(cp)),
            Some(s) => {
                let replayed = s.checkpoint();
                if replayed != cp {
                    return Err(checkpoint_mismatch(&replayed, &cp));
                }
            }
        }
        return Ok(());
    }
    let s = state.as_mut().expect("a segment's first record set the state");
    match record {
        Record::Checkpoint(_) => return Err("checkpoint record in the middle of a segment".into()),
        Record::Synced { segment, at, .. } if segment != seg.file.seq || at != offset => {
            return Err(format!(
                "sync mark names segment {segment} offset {at} but is in segment {} at offset {offset}",
                seg.file.seq
            ))
        }
        // A mark only matters to the search past a defect; it is not part of the log's state.
        Record::Synced { .. } => return Ok(()),
        _ => {}
    }
    s.check(&record).map_err(|c| c.to_string())?;
    let loc = Loc { seg: seg.file.seq, offset, len };
    s.apply(&record, loc);
    if let Record::Entry { index, .. } = record {
        seg.max_index = Some(seg.max_index.map_or(index, |m| m.max(index)));
    }
    Ok(())
}

fn checkpoint_mismatch(replayed: &Checkpoint, found: &Checkpoint) -> String {
    let mut diffs = Vec::new();
    if replayed.vote != found.vote {
        diffs.push("vote".to_string());
    }
    if replayed.committed != found.committed {
        diffs.push("committed".to_string());
    }
    if replayed.purged.as_ref().map(|p| p.0) != found.purged.as_ref().map(|p| p.0) {
        diffs.push(format!(
            "purge index (replayed {:?}, checkpoint {:?})",
            replayed.purged.as_ref().map(|p| p.0),
            found.purged.as_ref().map(|p| p.0)
        ));
    } else if replayed.purged != found.purged {
        diffs.push("purge payload".to_string());
    }
    if replayed.range != found.range {
        diffs.push(format!("log range (replayed {:?}, checkpoint {:?})", replayed.range, found.range));
    }
    format!("checkpoint disagrees with the state replayed from earlier segments: {}", diffs.join(", "))
}
