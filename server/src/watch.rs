//! The watch hub: every applied change, in revision order, fanned out to watchers.
//!
//! The state machine appends the events of each revision to a bounded in-memory history and publishes the new
//! revision. A watcher is a cursor (`next_revision`) into that history: it wakes when the published revision
//! passes its cursor and reads the missing revisions from the history. So a slow watcher never skips events; it
//! only fails — loudly, with [`WatchError::Compacted`] — if the revisions it still needs have fallen out of the
//! bounded history (or predate this node's last snapshot install or restart). Watchers never see a revision twice.
//!
//! Invariant: revisions in the history are strictly increasing and contiguous from `first_revision` on.

use std::{collections::VecDeque, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::keyspace::{Event, KeyRange};

/// All events of one revision.
#[derive(Debug, Clone)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Arc<Vec<Event>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    #[error("revision {requested} is no longer available on this node (its history starts at revision {oldest})")]
    Compacted { requested: i64, oldest: i64 },
    #[error("the node is shutting down")]
    Closed,
}

struct History {
    /// Revisions that changed something, oldest first. Revisions with no events (none exist today) are absent.
    revisions: VecDeque<RevisionEvents>,
    /// Every revision < `floor` is not (or no longer) in the history.
    floor: i64,
    capacity: usize,
}

/// Shared by the state machine (publisher) and every watch stream.
#[derive(Clone)]
pub struct WatchHub {
    history: Arc<Mutex<History>>,
    latest: Arc<watch::Sender<i64>>,
}

impl WatchHub {
    /// `current_revision`: the key space revision at start (events before it are unavailable).
    pub fn new(current_revision: i64, capacity: usize) -> Self {
        assert!(capacity > 0, "watch history capacity must be positive");
        let (tx, _) = watch::channel(current_revision);
        Self {
            history: Arc::new(Mutex::new(History {
                revisions: VecDeque::new(),
                floor: current_revision + 1,
                capacity,
            })),
            latest: Arc::new(tx),
        }
    }

    /// Records the events of a newly applied revision.
    pub fn publish(&self, revision: i64, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut h = self.history.lock();
        if let Some(last) = h.revisions.back() {
            assert!(revision > last.revision, "watch history must grow: {revision} after {}", last.revision);
        }
        h.revisions.push_back(RevisionEvents { revision, events: Arc::new(events) });
        while h.revisions.len() > h.capacity {
            let dropped = h.revisions.pop_front().expect("non-empty");
            h.floor = dropped.revision + 1;
        }
        drop(h);
        self.latest.send_replace(revision);
    }

    /// The key space was replaced wholesale (snapshot install): no history before `revision + 1` exists here.
    pub fn reset(&self, revision: i64) {
        let mut h = self.history.lock();
        h.revisions.clear();
        h.floor = revision + 1;
        drop(h);
        self.latest.send_replace(revision);
    }

    pub fn latest(&self) -> i64 {
        *self.latest.borrow()
    }

    /// Starts a watcher. `start_revision <= 0` means "changes after now".
    pub fn subscribe(&self, range: KeyRange, start_revision: i64) -> Watcher {
        let rx = self.latest.subscribe();
        let next = if start_revision <= 0 { *rx.borrow() + 1 } else { start_revision };
        Watcher { hub: self.clone(), rx, range, next }
    }

    fn read_from(&self, next: i64, upto: i64) -> Result<Vec<RevisionEvents>, WatchError> {
        let h = self.history.lock();
        if next < h.floor {
            // Nothing was lost if no revision in [next, floor) ever changed a key we could see — but we cannot
            // know that, so the watcher must resync.
            return Err(WatchError::Compacted { requested: next, oldest: h.floor });
        }
        let start = h.revisions.partition_point(|r| r.revision < next);
        Ok(h.revisions.iter().skip(start).take_while(|r| r.revision <= upto).cloned().collect())
    }
}

/// One watch stream's cursor.
pub struct Watcher {
    hub: WatchHub,
    rx: watch::Receiver<i64>,
    range: KeyRange,
    next: i64,
}

impl Watcher {
    /// Waits for the next revision(s) that touch the watched range and returns their events, grouped by revision.
    pub async fn next_batch(&mut self) -> Result<Vec<(i64, Vec<Event>)>, WatchError> {
        loop {
            let latest = *self.rx.borrow_and_update();
            if latest >= self.next {
                let revs = self.hub.read_from(self.next, latest)?;
                self.next = latest + 1;
                let out: Vec<(i64, Vec<Event>)> = revs
                    .into_iter()
                    .filter_map(|r| {
                        let evs: Vec<Event> =
                            r.events.iter().filter(|e| self.range.contains(&e.kv.key)).cloned().collect();
                        (!evs.is_empty()).then_some((r.revision, evs))
                    })
                    .collect();
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            self.rx.changed().await.map_err(|_| WatchError::Closed)?;
        }
    }

    /// The next revision this watcher will deliver.
    pub fn next_revision(&self) -> i64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::KeySpace;

    #[tokio::test]
    async fn watchers_see_every_revision_in_order() {
        let mut ks = KeySpace::default();
        let hub = WatchHub::new(0, 100);
        let mut w = hub.subscribe(KeyRange::prefix("a"), 1);
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
        let hub = WatchHub::new(0, 3);
        for i in 0..10 {
            let ev = ks.put(b"k".to_vec(), vec![i]);
            hub.publish(ks.revision(), vec![ev]);
        }
        let mut w = hub.subscribe(KeyRange::single("k"), 2);
        assert_eq!(w.next_batch().await.unwrap_err(), WatchError::Compacted { requested: 2, oldest: 8 });
        let mut w = hub.subscribe(KeyRange::single("k"), 8);
        let revs: Vec<i64> = w.next_batch().await.unwrap().into_iter().map(|(r, _)| r).collect();
        assert_eq!(revs, vec![8, 9, 10]);
        hub.reset(20);
        let mut w = hub.subscribe(KeyRange::single("k"), 11);
        assert!(matches!(w.next_batch().await, Err(WatchError::Compacted { .. })));
    }
}
