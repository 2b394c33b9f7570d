//! The logical state of the log, kept in memory: which entries exist and where
//! their records are on disk, plus the vote / committed / purge metadata.
//!
//! The same code applies records both when they are written and when they are
//! replayed at startup ([`LogState::check`] then [`LogState::apply`]), so the
//! state after a restart is by construction the state before it. `check` may
//! fail and changes nothing; `apply` cannot fail. The live WAL checks a whole
//! operation first, then applies each record as it encodes it into the write
//! buffer: a segment roll in the middle of a batch must checkpoint the state
//! including the batch's earlier records. If the write then fails, memory is
//! ahead of the file, which is why any write failure poisons the WAL.
//!
//! # The index range
//!
//! Entries are identified by a u64 index and are always contiguous. The state
//! tracks the half-open range `[start, next)` of live indices explicitly:
//!
//! * `range == None`: the log has never had an entry nor a purge; the first
//!   append may start at any index.
//! * otherwise the next append must be exactly `next`. A purge up to `p` moves
//!   `start` to at least `p + 1` (and `next` too if the log becomes empty); a
//!   truncate since `s` moves `next` down to `s`.
//!
//! # Invariants
//!
//! * `hole + entries.len() == next - start`: every live index is either in
//!   `entries` (location known) or in the `hole` at the front.
//! * `hole == 0` outside of replay. During replay the hole stands for entries the
//!   first surviving segment's checkpoint says were live, whose records were in
//!   segments since deleted; replay is only valid if later purges or truncates
//!   remove all of them (checked at the end of recovery).
//! * if purged up to `p`, then `p < start`.

use std::collections::VecDeque;
use std::fmt;

use super::record::{Checkpoint, Record};

/// Where an entry's record lives: segment sequence number, byte offset of the
/// record header, and payload length (the frame is `HEADER_LEN + len` bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub seg: u64,
    pub offset: u64,
    pub len: u32,
}

/// Why an operation does not fit the current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Conflict {
    NonContiguous { expected: u64, got: u64 },
    TruncatePurged { since: u64, purged: u64 },
    PurgeRegressed { upto: u64, purged: u64 },
    IndexOverflow { index: u64 },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::NonContiguous { expected, got } => {
                write!(f, "entry index {got} does not continue the log (expected {expected})")
            }
            Conflict::TruncatePurged { since, purged } => {
                write!(f, "truncate since {since} reaches into the purged prefix (purged up to {purged})")
            }
            Conflict::PurgeRegressed { upto, purged } => {
                write!(f, "purge up to {upto} is below the earlier purge up to {purged}")
            }
            Conflict::IndexOverflow { index } => {
                write!(f, "index {index} is out of range (u64::MAX is reserved)")
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct LogState {
    pub vote: Option<Vec<u8>>,
    pub committed: Option<Vec<u8>>,
    pub purged: Option<(u64, Vec<u8>)>,
    range: Option<(u64, u64)>,
    hole: u64,
    /// Locations of entries `[start + hole, next)`.
    entries: VecDeque<Loc>,
}

impl LogState {
    /// The state a checkpoint describes, with all its live entries in the hole.
    pub(crate) fn from_checkpoint(cp: Checkpoint) -> Self {
        let hole = cp.range.map_or(0, |(start, next)| next - start);
        LogState {
            vote: cp.vote,
            committed: cp.committed,
            purged: cp.purged,
            range: cp.range,
            hole,
            entries: VecDeque::new(),
        }
    }

    /// The metadata to write into a new segment's checkpoint.
    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            vote: self.vote.clone(),
            committed: self.committed.clone(),
            purged: self.purged.clone(),
            range: self.range,
        }
    }

    /// Live entries whose location is unknown (non-zero only during replay).
    pub(crate) fn hole(&self) -> Option<(u64, u64)> {
        let (start, _) = self.range?;
        (self.hole > 0).then(|| (start, start + self.hole))
    }

    pub(crate) fn first_index(&self) -> Option<u64> {
        let (start, _) = self.range?;
        (!self.entries.is_empty()).then_some(start + self.hole)
    }

    pub(crate) fn last_index(&self) -> Option<u64> {
        let (_, next) = self.range?;
        (!self.entries.is_empty()).then(|| next - 1)
    }

    pub(crate) fn entry_count(&self) -> usize {
        self.entries.len()
    }

    fn purged_index(&self) -> Option<u64> {
        self.purged.as_ref().map(|(i, _)| *i)
    }

    /// Checks that `record` may be applied to the current state.
    pub(crate) fn check(&self, record: &Record<'_>) -> Result<(), Conflict> {
        match record {
            Record::Entry { index, .. } => self.check_append(*index),
            Record::Truncate { since } => self.check_truncate(*since),
            Record::Purge { upto, .. } => self.check_purge(*upto),
            Record::Vote(_) | Record::Committed(_) | Record::Checkpoint(_) | Record::Synced { .. } => Ok(()),
        }
    }

    /// Applies a checked record; `loc` is where it was written (used for entries).
    pub(crate) fn apply(&mut self, record: &Record<'_>, loc: Loc) {
        match record {
            Record::Entry { index, .. } => self.apply_append(*index, loc),
            Record::Vote(v) => self.vote = Some(v.to_vec()),
            Record::Committed(c) => self.committed = Some(c.to_vec()),
            Record::Truncate { since } => self.apply_truncate(*since),
            Record::Purge { upto, payload } => self.apply_purge(*upto, payload.to_vec()),
            Record::Checkpoint(_) => {
                panic!("WAL bug: a checkpoint is not applied; it starts replay or is compared against it")
            }
            Record::Synced { .. } => panic!("WAL bug: a sync mark is not part of the log's state"),
        }
    }

    /// Locations of the entries present in `[from, to)`, in index order.
    pub(crate) fn locs(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, Loc)> + '_ {
        let (lo, hi) = match (self.first_index(), self.range) {
            (Some(first), Some((_, next))) => (from.max(first), to.min(next)),
            _ => (0, 0),
        };
        let base = self.first_index().unwrap_or(0);
        (lo..hi.max(lo)).map(move |i| (i, self.entries[(i - base) as usize]))
    }

    /// Checks that a run of entries starting at `first` may be appended.
    fn check_append(&self, first: u64) -> Result<(), Conflict> {
        if first == u64::MAX {
            return Err(Conflict::IndexOverflow { index: first });
        }
        match self.range {
            Some((_, next)) if first != next => Err(Conflict::NonContiguous { expected: next, got: first }),
            _ => Ok(()),
        }
    }

    fn apply_append(&mut self, index: u64, loc: Loc) {
        let next = match self.range {
            None => {
                self.range = Some((index, index));
                index
            }
            Some((_, next)) => next,
        };
        assert_eq!(index, next, "WAL bug: appended entry {index} where {next} was expected");
        let (start, _) = self.range.expect("range set above");
        self.range = Some((start, next + 1));
        self.entries.push_back(loc);
        self.assert_invariants();
    }

    fn check_truncate(&self, since: u64) -> Result<(), Conflict> {
        match self.purged_index() {
            Some(purged) if since <= purged => Err(Conflict::TruncatePurged { since, purged }),
            _ => Ok(()),
        }
    }

    /// Whether truncating at `since` would change anything (so the WAL can skip
    /// writing a record for a no-op).
    pub(crate) fn truncate_is_noop(&self, since: u64) -> bool {
        self.range.is_none_or(|(_, next)| since >= next)
    }

    fn apply_truncate(&mut self, since: u64) {
        let Some((start, next)) = self.range else {
            return;
        };
        if since >= next {
            return;
        }
        if since <= start {
            // Everything goes; the next append continues at `since`.
            self.range = Some((since, since));
            self.hole = 0;
            self.entries.clear();
        } else {
            let mut drop = next - since;
            let from_entries = drop.min(self.entries.len() as u64);
            self.entries.truncate(self.entries.len() - from_entries as usize);
            drop -= from_entries;
            self.hole -= drop;
            self.range = Some((start, since));
        }
        self.assert_invariants();
    }

    fn check_purge(&self, upto: u64) -> Result<(), Conflict> {
        if upto == u64::MAX {
            return Err(Conflict::IndexOverflow { index: upto });
        }
        match self.purged_index() {
            Some(purged) if upto < purged => Err(Conflict::PurgeRegressed { upto, purged }),
            _ => Ok(()),
        }
    }

    fn apply_purge(&mut self, upto: u64, payload: Vec<u8>) {
        let new_start = upto + 1;
        match self.range {
            Some((_, next)) if new_start >= next => {
                // The log becomes empty; the next append starts after the purge.
                self.range = Some((new_start, new_start));
                self.hole = 0;
                self.entries.clear();
            }
            Some((start, next)) if new_start > start => {
                let mut drop = new_start - start;
                let from_hole = drop.min(self.hole);
                self.hole -= from_hole;
                drop -= from_hole;
                self.entries.drain(..drop as usize);
                self.range = Some((new_start, next));
            }
            Some(_) => {} // purge below the first live entry: only the metadata changes
            None => self.range = Some((new_start, new_start)),
        }
        self.purged = Some((upto, payload));
        self.assert_invariants();
    }

    fn assert_invariants(&self) {
        if let Some((start, next)) = self.range {
            assert!(start <= next, "WAL bug: index range start {start} > next {next}");
            assert_eq!(
                self.hole + self.entries.len() as u64,
                next - start,
                "WAL bug: index holds {} entries + {} missing for range [{start}, {next})",
                self.entries.len(),
                self.hole
            );
            if let Some(purged) = self.purged_index() {
                assert!(purged < start, "WAL bug: purged index {purged} is not below live start {start}");
            }
        } else {
            assert!(self.entries.is_empty() && self.hole == 0, "WAL bug: entries present without a range");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(i: u64) -> Loc {
        Loc { seg: 1, offset: i * 100, len: 10 }
    }

    fn append(s: &mut LogState, range: std::ops::RangeInclusive<u64>) {
        for i in range {
            s.check_append(i).unwrap();
            s.apply_append(i, loc(i));
        }
    }

    fn indices(s: &LogState) -> Vec<u64> {
        s.locs(0, u64::MAX)
            .map(|(i, l)| {
                assert_eq!(l, loc(i), "location of entry {i}");
                i
            })
            .collect()
    }

    #[test]
    fn append_truncate_purge() {
        let mut s = LogState::default();
        assert_eq!(s.check_append(17), Ok(()), "a fresh log accepts any first index");
        append(&mut s, 5..=9);
        assert_eq!((s.first_index(), s.last_index()), (Some(5), Some(9)));
        assert_eq!(s.check_append(11), Err(Conflict::NonContiguous { expected: 10, got: 11 }));

        s.apply_truncate(8);
        assert_eq!(indices(&s), vec![5, 6, 7]);
        append(&mut s, 8..=8);

        s.apply_purge(6, b"p".to_vec());
        assert_eq!(indices(&s), vec![7, 8]);
        assert_eq!(s.check_truncate(6), Err(Conflict::TruncatePurged { since: 6, purged: 6 }));
        assert_eq!(s.check_purge(5), Err(Conflict::PurgeRegressed { upto: 5, purged: 6 }));

        s.apply_purge(20, b"q".to_vec());
        assert_eq!((s.first_index(), s.last_index()), (None, None));
        assert_eq!(s.check_append(21), Ok(()));
        assert!(s.check_append(9).is_err());
        assert_eq!(s.locs(0, 100).count(), 0);
    }

    #[test]
    fn truncate_everything_continues_at_since() {
        let mut s = LogState::default();
        append(&mut s, 3..=6);
        assert!(s.truncate_is_noop(7));
        assert!(!s.truncate_is_noop(6));
        s.apply_truncate(3);
        assert_eq!(s.last_index(), None);
        assert_eq!(s.check_append(3), Ok(()));
    }

    #[test]
    fn locs_clamps_to_present_range() {
        let mut s = LogState::default();
        append(&mut s, 10..=14);
        let got: Vec<u64> = s.locs(12, 100).map(|(i, _)| i).collect();
        assert_eq!(got, vec![12, 13, 14]);
        assert_eq!(s.locs(0, 11).map(|(i, _)| i).collect::<Vec<_>>(), vec![10]);
        assert_eq!(s.locs(20, 30).count(), 0);
        assert_eq!(s.locs(13, 12).count(), 0);
    }

    #[test]
    fn hole_is_consumed_by_purge_and_truncate() {
        let cp = Checkpoint { range: Some((5, 10)), purged: Some((4, vec![])), ..Default::default() };
        let mut s = LogState::from_checkpoint(cp.clone());
        assert_eq!(s.hole(), Some((5, 10)));
        append(&mut s, 10..=11);
        s.apply_purge(7, vec![]);
        assert_eq!(s.hole(), Some((8, 10)));
        s.apply_purge(9, vec![]);
        assert_eq!(s.hole(), None);
        assert_eq!(indices(&s), vec![10, 11]);

        let mut s = LogState::from_checkpoint(cp);
        s.apply_truncate(7);
        assert_eq!(s.hole(), Some((5, 7)));
        s.apply_truncate(5);
        assert_eq!(s.hole(), None);
        assert_eq!(s.checkpoint().range, Some((5, 5)));
    }
}
