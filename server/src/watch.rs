//! The watch hub: every applied change, in revision order, fanned out to watchers.
//!
//! The state machine appends the events of each revision to a bounded in-memory history and publishes the new
//! revision. A watcher is a cursor (`next_revision`) into that history: it wakes when the published revision
//! passes its cursor and reads the missing revisions from the history. So a slow watcher never skips events; it
//! only fails — loudly, with [`WatchError::Compacted`] — if the revisions it still needs have fallen out of the
//! bounded history (or predate this node's last snapshot install or restart). Watchers never see a revision twice.
//!
//! Bounds (issue 9, items 7 and 8):
//! - the history holds at most `revisions` revisions **and** `bytes` bytes of events (`--watch-history` and
//!   `--watch-history-bytes`); the oldest go first, but the newest revision always stays;
//! - previous values (`prev_kv`) are kept only while some watcher asks for them: a revision applied while no
//!   `prev_kv` watcher was open is stored without them. A `prev_kv` watcher that reaches such a revision fails
//!   with [`WatchError::PrevKvNotKept`] (never a silent `None`); it can resume from the revision the error names,
//!   or watch without `prev_kv`. A watcher opened with `prev_kv` keeps previous values for every revision applied
//!   from then on, so "watch from now with prev_kv" always works;
//! - one [`Watcher::next_batch`] returns at most [`MAX_BATCH_REVISIONS`] revisions and, beyond the first, at
//!   most [`MAX_BATCH_BYTES`] bytes of events, so a watcher far behind on large values gets many bounded messages
//!   instead of one over the gRPC message limit (whose refusal would look like "compacted").
//!
//! Behind the bounded history stands the key space's MVCC history (see [`Replay`]): a watcher whose revisions
//! fell out of the hub's history, or predate this node's restart or snapshot install, or that wants previous
//! values the hub did not keep, reads them from there instead — so it fails as compacted only below the key
//! space's compact revision, as an etcd watch does.
//!
//! Invariant: revisions in the history are strictly increasing and contiguous from `first_revision` on.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::keyspace::{Event, KeyRange, Replayed};

/// Most revisions one [`Watcher::next_batch`] returns.
pub const MAX_BATCH_REVISIONS: usize = 1000;
/// Most bytes of events one [`Watcher::next_batch`] returns (beyond its first revision). Also the size at which
/// the watch handler splits a response: well below the 64 MiB message limit, and below the 4 MiB a browser's
/// gRPC-Web client accepts by default.
pub const MAX_BATCH_BYTES: usize = 3 << 20;

/// How much history a hub keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub revisions: usize,
    pub bytes: usize,
}

/// A revision count alone: the byte bound is then the default `--watch-history-bytes`.
impl From<usize> for HistoryLimits {
    fn from(revisions: usize) -> Self {
        Self { revisions, bytes: crate::config::ResourceLimits::default().watch_history_bytes }
    }
}

/// All events of one revision.
#[derive(Debug, Clone)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Arc<Vec<Event>>,
    /// Bytes of keys and values in `events` (what the history bound counts).
    pub bytes: usize,
    /// Whether `events` carry their previous values.
    pub has_prev: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    #[error("revision {requested} is no longer available on this node (its history starts at revision {oldest})")]
    Compacted { requested: i64, oldest: i64 },
    #[error(
        "the previous values of revision {revision} were not kept (no watcher asked for prev_kv when it was \
         applied); watch it without prev_kv, or with prev_kv from revision {resume} on"
    )]
    PrevKvNotKept { revision: i64, resume: i64 },
    #[error("the node is shutting down")]
    Closed,
}

/// The bytes an event holds in memory (keys and values), as the history bound counts them.
pub fn event_bytes(e: &Event) -> usize {
    let kv = |k: &crate::keyspace::KeyValue| k.key.len() + k.value.len() + 32;
    kv(&e.kv) + e.prev_kv.as_ref().map_or(0, kv)
}

struct History {
    /// Revisions that changed something, oldest first. Revisions with no events (none exist today) are absent.
    revisions: VecDeque<RevisionEvents>,
    /// Every revision < `floor` is not (or no longer) in the history.
    floor: i64,
    limits: HistoryLimits,
    bytes: usize,
}

/// One response's worth of a watcher's batch (see [`split`]).
pub struct Piece<E> {
    /// The last revision whose events the piece completes (for one that ends inside a revision, the one before).
    pub revision: i64,
    pub events: Vec<E>,
    /// More events of the piece's last revision follow in the next piece.
    pub ends_inside: bool,
}

/// Splits a watcher's batch into pieces of at most [`MAX_BATCH_BYTES`] of events each (one event larger than that
/// goes alone), so no response nears the gRPC message limit: tonic would refuse it with OUT_OF_RANGE, which
/// means "compacted". Revisions stay whole where they fit; one with more events than fit is split over several
/// pieces, in order. A piece's `revision` never runs ahead of an event not yet delivered, so a client that
/// resumes at it + 1 skips nothing. Both front doors build their responses from these pieces.
pub fn split<E>(revs: Vec<(i64, Vec<Event>)>, mut convert: impl FnMut(Event) -> E) -> Vec<Piece<E>> {
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut last = 0;
    for (rev, evs) in revs {
        for (i, e) in evs.into_iter().enumerate() {
            let size = event_bytes(&e);
            if !events.is_empty() && bytes + size > MAX_BATCH_BYTES {
                // Everything before this event is in the piece: every revision before `rev` is complete.
                out.push(Piece { revision: rev - 1, events: std::mem::take(&mut events), ends_inside: i > 0 });
                bytes = 0;
            }
            bytes += size;
            events.push(convert(e));
        }
        last = rev;
    }
    if !events.is_empty() {
        out.push(Piece { revision: last, events, ends_inside: false });
    }
    out
}

/// Reads revisions `from..=to` of a range from the key space's MVCC history, with previous values: at most
/// `max_revisions` revisions with events and about `max_bytes` bytes; returns the last revision covered and the
/// events, or `Err(compact revision)` when `from` is below it (see `KeySpace::replay`).
pub type Replay = dyn Fn(&KeyRange, i64, i64, usize, usize) -> Result<Replayed, i64> + Send + Sync;

/// Revisions and their events, as a watcher delivers them.
type Batch = Vec<(i64, Vec<Event>)>;

/// Shared by the state machine (publisher) and every watch stream.
#[derive(Clone)]
pub struct WatchHub {
    history: Arc<Mutex<History>>,
    latest: Arc<watch::Sender<i64>>,
    /// Set once by the state machine that owns the hub.
    replay: Arc<std::sync::OnceLock<Box<Replay>>>,
    /// Open watchers that asked for previous values.
    prev_watchers: Arc<AtomicUsize>,
}

impl WatchHub {
    /// `current_revision`: the key space revision at start (events before it are unavailable).
    pub fn new(current_revision: i64, limits: HistoryLimits) -> Self {
        assert!(limits.revisions > 0 && limits.bytes > 0, "watch history limits must be positive");
        let (tx, _) = watch::channel(current_revision);
        Self {
            history: Arc::new(Mutex::new(History {
                revisions: VecDeque::new(),
                floor: current_revision + 1,
                limits,
                bytes: 0,
            })),
            latest: Arc::new(tx),
            prev_watchers: Arc::new(AtomicUsize::new(0)),
            replay: Arc::default(),
        }
    }

    /// Gives the hub a way to read what its own history no longer holds (the key space's MVCC history).
    pub fn set_replay(&self, replay: Box<Replay>) {
        let _ = self.replay.set(replay);
    }

    /// Events of `next..=upto` from the MVCC history, if the hub has a replay source.
    fn replay(&self, range: &KeyRange, next: i64, upto: i64) -> Option<Result<Replayed, i64>> {
        let replay = self.replay.get()?;
        Some(replay(range, next, upto, MAX_BATCH_REVISIONS, MAX_BATCH_BYTES))
    }

    /// Records the events of a newly applied revision.
    pub fn publish(&self, revision: i64, mut events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut h = self.history.lock();
        // Read under the history lock: a prev_kv watcher registers under it too, so it sees previous values for
        // every revision published after it subscribed.
        let has_prev = self.prev_watchers.load(Ordering::Acquire) > 0;
        if !has_prev {
            events.iter_mut().for_each(|e| e.prev_kv = None);
        }
        let bytes = events.iter().map(event_bytes).sum();
        if let Some(last) = h.revisions.back() {
            assert!(revision > last.revision, "watch history must grow: {revision} after {}", last.revision);
        }
        h.revisions.push_back(RevisionEvents { revision, events: Arc::new(events), bytes, has_prev });
        h.bytes += bytes;
        while h.revisions.len() > h.limits.revisions || (h.bytes > h.limits.bytes && h.revisions.len() > 1) {
            let dropped = h.revisions.pop_front().expect("non-empty");
            h.bytes -= dropped.bytes;
            h.floor = dropped.revision + 1;
        }
        drop(h);
        self.latest.send_replace(revision);
    }

    /// The key space was replaced wholesale (snapshot install): no history before `revision + 1` exists here.
    pub fn reset(&self, revision: i64) {
        let mut h = self.history.lock();
        h.revisions.clear();
        h.bytes = 0;
        h.floor = revision + 1;
        drop(h);
        self.latest.send_replace(revision);
    }

    /// A revision without events was applied (nothing to deliver; watchers and headers see it as current).
    pub fn pass(&self, revision: i64) {
        let _h = self.history.lock();
        self.latest.send_replace(revision);
    }

    pub fn latest(&self) -> i64 {
        *self.latest.borrow()
    }

    /// Revisions and bytes held now.
    pub fn held(&self) -> (usize, usize) {
        let h = self.history.lock();
        (h.revisions.len(), h.bytes)
    }

    /// Starts a watcher. `start_revision <= 0` means "changes after now". `prev_kv`: the watcher wants previous
    /// values (kept from now on while it is open).
    pub fn subscribe(&self, range: KeyRange, start_revision: i64, prev_kv: bool) -> Watcher {
        let rx = self.latest.subscribe();
        // "Now" is read under the history lock, with the prev_kv registration: a revision published before it may
        // lack previous values, every one after it has them.
        let h = self.history.lock();
        if prev_kv {
            self.prev_watchers.fetch_add(1, Ordering::AcqRel);
        }
        let now = h.revisions.back().map_or(h.floor - 1, |r| r.revision).max(*rx.borrow());
        drop(h);
        let next = if start_revision <= 0 { now + 1 } else { start_revision };
        Watcher { hub: self.clone(), rx, range, next, prev_kv }
    }

    /// Up to [`MAX_BATCH_REVISIONS`] revisions from `next` to `upto`, and no more than [`MAX_BATCH_BYTES`] beyond
    /// the first.
    fn read_from(&self, next: i64, upto: i64) -> Result<Vec<RevisionEvents>, WatchError> {
        let h = self.history.lock();
        if next < h.floor {
            // Nothing was lost if no revision in [next, floor) ever changed a key we could see — but we cannot
            // know that, so the watcher must resync.
            return Err(WatchError::Compacted { requested: next, oldest: h.floor });
        }
        let start = h.revisions.partition_point(|r| r.revision < next);
        let mut bytes = 0;
        let mut out = Vec::new();
        for r in h.revisions.iter().skip(start).take_while(|r| r.revision <= upto).take(MAX_BATCH_REVISIONS) {
            if !out.is_empty() && bytes + r.bytes > MAX_BATCH_BYTES {
                break;
            }
            bytes += r.bytes;
            out.push(r.clone());
        }
        Ok(out)
    }
}

/// One watch stream's cursor.
pub struct Watcher {
    hub: WatchHub,
    rx: watch::Receiver<i64>,
    range: KeyRange,
    next: i64,
    prev_kv: bool,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.prev_kv {
            self.hub.prev_watchers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Watcher {
    /// Waits for the next revision(s) that touch the watched range and returns their events, grouped by revision
    /// (bounded: see [`MAX_BATCH_REVISIONS`] and [`MAX_BATCH_BYTES`]; call again for the rest).
    pub async fn next_batch(&mut self) -> Result<Vec<(i64, Vec<Event>)>, WatchError> {
        loop {
            let latest = *self.rx.borrow_and_update();
            while latest >= self.next {
                let revs = match self.hub.read_from(self.next, latest) {
                    Ok(revs) => revs,
                    // Before the hub's history: from the key space's, if it still has them.
                    Err(WatchError::Compacted { requested, oldest }) => match self.replay_mvcc(latest) {
                        Some(Ok(Some(out))) => return Ok(out),
                        Some(Ok(None)) => continue,
                        Some(Err(compacted)) => return Err(WatchError::Compacted { requested, oldest: compacted }),
                        None => return Err(WatchError::Compacted { requested, oldest }),
                    },
                    Err(e) => return Err(e),
                };
                let Some(last) = revs.last().map(|r| r.revision) else {
                    // No revision with events in [next, latest]: nothing to deliver up to `latest`.
                    self.next = latest + 1;
                    break;
                };
                let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
                let mut replayed = false;
                for r in revs {
                    let evs: Vec<Event> = r.events.iter().filter(|e| self.range.contains(&e.kv.key)).cloned().collect();
                    if evs.is_empty() {
                        continue;
                    }
                    if self.prev_kv && !r.has_prev {
                        if out.is_empty() {
                            // The hub dropped the previous values: the key space's history has them.
                            match self.replay_mvcc(latest) {
                                Some(Ok(Some(out))) => return Ok(out),
                                Some(Ok(None)) => {
                                    // Nothing for this watcher there; the replay moved its cursor.
                                    replayed = true;
                                    break;
                                }
                                _ => {}
                            }
                            let resume = self.hub.prev_resume_point(r.revision);
                            return Err(WatchError::PrevKvNotKept { revision: r.revision, resume });
                        }
                        // Deliver what precedes it first; the error comes with the next call.
                        self.next = r.revision;
                        return Ok(out);
                    }
                    out.push((r.revision, evs));
                }
                if !replayed {
                    self.next = last + 1;
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            self.rx.changed().await.map_err(|_| WatchError::Closed)?;
        }
    }

    /// Reads from `next` on out of the key space's MVCC history: `Some(Ok(Some(events)))` to deliver,
    /// `Some(Ok(None))` when the revisions covered had nothing for this watcher (its cursor moved), `Some(Err(c))`
    /// below the compact revision `c`, `None` without a replay source.
    fn replay_mvcc(&mut self, upto: i64) -> Option<Result<Option<Batch>, i64>> {
        let result = self.hub.replay(&self.range, self.next, upto)?;
        Some(result.map(|(covered, mut out)| {
            self.next = covered + 1;
            if !self.prev_kv {
                out.iter_mut().flat_map(|(_, evs)| evs.iter_mut()).for_each(|e| e.prev_kv = None);
            }
            (!out.is_empty()).then_some(out)
        }))
    }

    /// The next revision this watcher will deliver.
    pub fn next_revision(&self) -> i64 {
        self.next
    }
}

impl WatchHub {
    /// The first revision after `revision` from which every held revision has its previous values (or the next
    /// revision to be applied).
    fn prev_resume_point(&self, revision: i64) -> i64 {
        let h = self.history.lock();
        let mut resume = self.latest() + 1;
        for r in h.revisions.iter().rev() {
            if r.revision <= revision || !r.has_prev {
                break;
            }
            resume = r.revision;
        }
        resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::KeySpace;

    #[tokio::test]
    async fn watchers_see_every_revision_in_order() {
        let mut ks = KeySpace::default();
        let hub = WatchHub::new(0, HistoryLimits { revisions: 100, bytes: 1 << 20 });
        let mut w = hub.subscribe(KeyRange::prefix("a"), 1, false);
        for i in 0..10 {
            let key = if i % 2 == 0 { "a1" } else { "b1" };
            let ev = ks.put(key.into(), vec![i]);
            hub.publish(ks.revision(), vec![ev]);
        }
        let mut seen = Vec::new();
        while seen.len() < 5 {
            for (rev, evs) in w.next_batch().await.unwrap() {
                assert_eq!(evs.len(), 1);
                seen.push(rev);
            }
        }
        assert_eq!(seen, vec![1, 3, 5, 7, 9]);
    }

    #[tokio::test]
    async fn compacted_history_is_an_error_not_a_gap() {
        let mut ks = KeySpace::default();
        let hub = WatchHub::new(0, HistoryLimits { revisions: 3, bytes: 1 << 20 });
        for i in 0..10 {
            let ev = ks.put(b"k".to_vec(), vec![i]);
            hub.publish(ks.revision(), vec![ev]);
        }
        let mut w = hub.subscribe(KeyRange::single("k"), 2, false);
        assert_eq!(w.next_batch().await.unwrap_err(), WatchError::Compacted { requested: 2, oldest: 8 });
        let mut w = hub.subscribe(KeyRange::single("k"), 8, false);
        let revs: Vec<i64> = w.next_batch().await.unwrap().into_iter().map(|(r, _)| r).collect();
        assert_eq!(revs, vec![8, 9, 10]);
        hub.reset(20);
        let mut w = hub.subscribe(KeyRange::single("k"), 11, false);
        assert!(matches!(w.next_batch().await, Err(WatchError::Compacted { .. })));
    }

    #[tokio::test]
    async fn history_is_bounded_by_bytes_and_batches_are_split() {
        let mut ks = KeySpace::default();
        let hub = WatchHub::new(0, HistoryLimits { revisions: 1000, bytes: 10 << 20 });
        let mut w = hub.subscribe(KeyRange::prefix("k"), 1, false);
        for i in 0..20u8 {
            let ev = ks.put(format!("k{i}").into_bytes(), vec![i; 1 << 20]);
            hub.publish(ks.revision(), vec![ev]);
        }
        let (revs, bytes) = hub.held();
        assert!(bytes <= 10 << 20 && revs < 20, "{revs} revisions, {bytes} bytes held");
        // The first revisions fell out by bytes: the watcher from revision 1 is told so.
        assert!(matches!(w.next_batch().await, Err(WatchError::Compacted { .. })));
        let oldest = 20 - revs as i64 + 1;
        let mut w = hub.subscribe(KeyRange::prefix("k"), oldest, false);
        let mut seen = Vec::new();
        while seen.len() < revs {
            let batch = w.next_batch().await.unwrap();
            let size: usize = batch.iter().flat_map(|(_, e)| e).map(event_bytes).sum();
            assert!(batch.len() == 1 || size <= MAX_BATCH_BYTES, "a batch of {size} bytes");
            seen.extend(batch.into_iter().map(|(r, _)| r));
        }
        assert_eq!(seen, (oldest..=20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn prev_values_are_kept_only_for_prev_kv_watchers_and_never_faked() {
        let mut ks = KeySpace::default();
        let hub = WatchHub::new(0, HistoryLimits { revisions: 100, bytes: 1 << 20 });
        let put = |ks: &mut KeySpace, v: u8| {
            let ev = ks.put(b"k".to_vec(), vec![v]);
            hub.publish(ks.revision(), vec![ev]);
        };
        put(&mut ks, 1);
        put(&mut ks, 2); // rev 2: prev value not kept (nobody asked)
        let mut w = hub.subscribe(KeyRange::single("k"), 0, true);
        put(&mut ks, 3); // rev 3: kept
        let batch = w.next_batch().await.unwrap();
        assert_eq!(batch[0].0, 3);
        assert_eq!(batch[0].1[0].prev_kv.as_ref().unwrap().value, vec![2]);
        // A prev_kv watcher asking for revision 2 gets an error naming where it can resume, not a missing prev.
        let mut old = hub.subscribe(KeyRange::single("k"), 2, true);
        assert_eq!(old.next_batch().await.unwrap_err(), WatchError::PrevKvNotKept { revision: 2, resume: 3 });
        // Without prev_kv, the same revisions are fine.
        let mut plain = hub.subscribe(KeyRange::single("k"), 2, false);
        assert_eq!(plain.next_batch().await.unwrap().len(), 2);
        drop((w, old));
        put(&mut ks, 4); // no prev_kv watcher left: not kept
        let (_, _) = hub.held();
        let mut late = hub.subscribe(KeyRange::single("k"), 4, true);
        assert!(matches!(late.next_batch().await, Err(WatchError::PrevKvNotKept { revision: 4, .. })));
    }
}
