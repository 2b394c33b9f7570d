//! The key space: an ordered, multi-version-tagged map from key to value, as the Raft state machine applies it.
//!
//! Model (etcd v3's): one cluster-wide `revision` counts the applied writes. Every write that changes something
//! (a put, a delete that removed at least one key, a transaction whose chosen branch wrote) bumps the revision by
//! exactly one, and every key it touches records:
//! - `create_revision`: the revision that created the key (since its last delete),
//! - `mod_revision`: the revision of its last write,
//! - `version`: writes since creation (1 after the first put).
//!
//! That is what makes compare-and-swap exact (compare `mod_revision` or `version`) and lets watchers resume from a
//! revision with nothing skipped.
//!
//! The map is an `imbl::OrdMap` (a persistent B-tree): cloning it is O(1) and shares structure, so a snapshot is
//! taken under the lock in constant time and serialized in the background while writes continue.
//!
//! Invariants, checked by `debug_assert`s and tests: `revision` never decreases; for every key
//! `create_revision <= mod_revision <= revision` and `version >= 1`; `size_bytes` is the sum over live keys of
//! key + value + `quota::PER_KEY_OVERHEAD` bytes (kept incrementally; the storage quota is checked against it).

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

/// One key as seen by readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    #[serde(with = "crate::raft::wire_bytes")]
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

/// What the map stores per key (the key itself is the map key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(with = "crate::raft::wire_bytes")]
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

impl Meta {
    fn to_kv(&self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}

/// A change to one key, as delivered to watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// After the change; for a delete, the key with an empty value and `mod_revision` = the deleting revision.
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// A key range: one key (`end == None`), `[start, end)`, or everything from `start` on (`end == Some([0])`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    pub fn single(key: impl Into<Vec<u8>>) -> Self {
        Self { start: key.into(), end: None }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        Self { start, end: Some(end) }
    }

    /// Builds a range from the wire form (`range_end` empty = single key).
    pub fn from_wire(key: Vec<u8>, range_end: Vec<u8>) -> Self {
        Self { start: key, end: (!range_end.is_empty()).then_some(range_end) }
    }

    /// The exclusive end as a bound: `None` = unbounded.
    fn end_bound(&self) -> Option<Vec<u8>> {
        match &self.end {
            None => {
                let mut e = self.start.clone();
                e.push(0);
                Some(e)
            }
            Some(end) if end.as_slice() == [0] => None,
            Some(end) => Some(end.clone()),
        }
    }

    /// Do the two ranges share at least one possible key?
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let before = |a: &KeyRange, b: &KeyRange| a.end_bound().is_some_and(|e| e.as_slice() <= b.start.as_slice());
        !before(self, other) && !before(other, self)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.start.as_slice(),
            Some(end) if end.as_slice() == [0] => key >= self.start.as_slice(),
            Some(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
}

pub use raftkv_proto::prefix_end;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value,
    Version,
    CreateRevision,
    ModRevision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One condition of a transaction. An absent key compares as version = create = mod = 0 and no value (a value
/// compare against an absent key is false, as in etcd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCompare {
    pub key: Vec<u8>,
    pub target: CompareTarget,
    pub op: CompareOp,
    #[serde(with = "crate::raft::wire_bytes")]
    pub value: Vec<u8>,
    pub number: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        key: Vec<u8>,
        #[serde(with = "crate::raft::wire_bytes")]
        value: Vec<u8>,
        prev_kv: bool,
    },
    Range(RangeQuery),
    Delete {
        range: KeyRange,
        prev_kv: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResponse {
    Put { prev_kv: Option<KeyValue> },
    Range(RangeResult),
    Delete { deleted: i64, prev_kvs: Vec<KeyValue> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeQuery {
    pub range: KeyRange,
    /// 0 = unlimited.
    pub limit: i64,
    pub keys_only: bool,
    pub count_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
}

/// The ordered key space with its revision counter.
#[derive(Debug, Clone, Default)]
pub struct KeySpace {
    map: OrdMap<Vec<u8>, Meta>,
    revision: i64,
    /// Sum of `entry_size` over live keys.
    bytes: u64,
}

/// What one live key counts towards the storage quota.
fn entry_size(key: &[u8], value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + crate::quota::PER_KEY_OVERHEAD
}

/// The serialized form of a key space (snapshots).
#[derive(Serialize, Deserialize)]
pub struct KeySpaceImage {
    pub revision: i64,
    pub entries: Vec<(Vec<u8>, Meta)>,
}

impl KeySpace {
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The key space's size as the storage quota counts it (deterministic: the same on every node).
    pub fn size_bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.map.get(key).map(|m| m.to_kv(key))
    }

    /// Iterates the keys of `range` in order.
    fn iter_range<'a>(&'a self, range: &'a KeyRange) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Meta)> + 'a> {
        match &range.end {
            None => Box::new(self.map.get_key_value(&range.start).into_iter()),
            Some(end) if end.as_slice() == [0] => Box::new(self.map.range(range.start.clone()..)),
            Some(end) if end.as_slice() <= range.start.as_slice() => Box::new(std::iter::empty()),
            Some(end) => Box::new(self.map.range(range.start.clone()..end.clone())),
        }
    }

    pub fn range(&self, q: &RangeQuery) -> RangeResult {
        let mut out = RangeResult::default();
        let limit = if q.limit > 0 { q.limit as usize } else { usize::MAX };
        for (k, m) in self.iter_range(&q.range) {
            out.count += 1;
            if q.count_only {
                continue;
            }
            if out.kvs.len() >= limit {
                out.more = true;
                continue;
            }
            let mut kv = m.to_kv(k);
            if q.keys_only {
                kv.value.clear();
            }
            out.kvs.push(kv);
        }
        out
    }

    /// Applies a put at the next revision. Returns the event and the previous value.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Event {
        self.revision += 1;
        self.put_at(key, value, self.revision)
    }

    fn put_at(&mut self, key: Vec<u8>, value: Vec<u8>, rev: i64) -> Event {
        let prev = self.map.get(&key).cloned();
        let meta = match &prev {
            Some(p) => Meta { value, create_revision: p.create_revision, mod_revision: rev, version: p.version + 1 },
            None => Meta { value, create_revision: rev, mod_revision: rev, version: 1 },
        };
        let kv = meta.to_kv(&key);
        self.bytes += entry_size(&key, &meta.value);
        if let Some(p) = &prev {
            self.bytes -= entry_size(&key, &p.value);
        }
        let prev_kv = prev.map(|p| p.to_kv(&key));
        self.map.insert(key, meta);
        Event { kind: EventKind::Put, kv, prev_kv }
    }

    /// Deletes every key in `range`; bumps the revision only if something was deleted.
    pub fn delete(&mut self, range: &KeyRange) -> Vec<Event> {
        let keys: Vec<Vec<u8>> = self.iter_range(range).map(|(k, _)| k.clone()).collect();
        if keys.is_empty() {
            return Vec::new();
        }
        self.revision += 1;
        self.delete_at(keys, self.revision)
    }

    fn delete_at(&mut self, keys: Vec<Vec<u8>>, rev: i64) -> Vec<Event> {
        keys.into_iter()
            .filter_map(|k| {
                let prev = self.map.remove(&k)?;
                self.bytes -= entry_size(&k, &prev.value);
                let kv =
                    KeyValue { key: k.clone(), value: Vec::new(), create_revision: 0, mod_revision: rev, version: 0 };
                Some(Event { kind: EventKind::Delete, kv, prev_kv: Some(prev.to_kv(&k)) })
            })
            .collect()
    }

    fn compare(&self, c: &TxnCompare) -> bool {
        let meta = self.map.get(&c.key);
        let ord = match c.target {
            CompareTarget::Value => match meta {
                Some(m) => m.value.as_slice().cmp(c.value.as_slice()),
                None => return false,
            },
            CompareTarget::Version => meta.map_or(0, |m| m.version).cmp(&c.number),
            CompareTarget::CreateRevision => meta.map_or(0, |m| m.create_revision).cmp(&c.number),
            CompareTarget::ModRevision => meta.map_or(0, |m| m.mod_revision).cmp(&c.number),
        };
        match c.op {
            CompareOp::Equal => ord.is_eq(),
            CompareOp::NotEqual => ord.is_ne(),
            CompareOp::Greater => ord.is_gt(),
            CompareOp::Less => ord.is_lt(),
        }
    }

    /// Runs a transaction atomically. All writes of the chosen branch share one new revision (bumped only if the
    /// branch writes anything). Reads inside the branch see the branch's earlier writes.
    pub fn txn(
        &mut self,
        compare: &[TxnCompare],
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    ) -> (bool, Vec<TxnOpResponse>, Vec<Event>) {
        let succeeded = compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { success } else { failure };
        let writes = ops.iter().any(|op| match op {
            TxnOp::Put { .. } => true,
            TxnOp::Delete { range, .. } => self.iter_range(range).next().is_some(),
            TxnOp::Range(_) => false,
        });
        let rev = if writes { self.revision + 1 } else { self.revision };
        let mut events = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                TxnOp::Put { key, value, prev_kv } => {
                    let ev = self.put_at(key, value, rev);
                    responses.push(TxnOpResponse::Put { prev_kv: if prev_kv { ev.prev_kv.clone() } else { None } });
                    events.push(ev);
                }
                TxnOp::Range(q) => responses.push(TxnOpResponse::Range(self.range(&q))),
                TxnOp::Delete { range, prev_kv } => {
                    let keys: Vec<Vec<u8>> = self.iter_range(&range).map(|(k, _)| k.clone()).collect();
                    let evs = self.delete_at(keys, rev);
                    responses.push(TxnOpResponse::Delete {
                        deleted: evs.len() as i64,
                        prev_kvs: if prev_kv { evs.iter().filter_map(|e| e.prev_kv.clone()).collect() } else { vec![] },
                    });
                    events.extend(evs);
                }
            }
        }
        if writes {
            self.revision = rev;
        }
        debug_assert!(events.iter().all(|e| e.kv.mod_revision == self.revision));
        (succeeded, responses, events)
    }

    pub fn to_image(&self) -> KeySpaceImage {
        KeySpaceImage {
            revision: self.revision,
            entries: self.map.iter().map(|(k, m)| (k.clone(), m.clone())).collect(),
        }
    }

    /// Rebuilds a key space from a snapshot image, refusing an inconsistent one.
    pub fn from_image(image: KeySpaceImage) -> Result<Self, String> {
        let map: OrdMap<Vec<u8>, Meta> = image.entries.into_iter().collect();
        for (k, m) in &map {
            if !(m.create_revision <= m.mod_revision && m.mod_revision <= image.revision && m.version >= 1) {
                return Err(format!(
                    "inconsistent key {:?}: {m:?} with revision {}",
                    String::from_utf8_lossy(k),
                    image.revision
                ));
            }
        }
        let bytes = map.iter().map(|(k, m)| entry_size(k, &m.value)).sum();
        Ok(Self { map, revision: image.revision, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(range: KeyRange) -> RangeQuery {
        RangeQuery { range, limit: 0, keys_only: false, count_only: false }
    }

    #[test]
    fn put_tracks_revisions_and_versions() {
        let mut ks = KeySpace::default();
        let e1 = ks.put(b"a".to_vec(), b"1".to_vec());
        assert_eq!((e1.kv.create_revision, e1.kv.mod_revision, e1.kv.version), (1, 1, 1));
        assert!(e1.prev_kv.is_none());
        ks.put(b"b".to_vec(), b"x".to_vec());
        let e3 = ks.put(b"a".to_vec(), b"2".to_vec());
        assert_eq!((e3.kv.create_revision, e3.kv.mod_revision, e3.kv.version), (1, 3, 2));
        assert_eq!(e3.prev_kv.unwrap().value, b"1");
        assert_eq!(ks.revision(), 3);
    }

    #[test]
    fn delete_only_bumps_revision_when_something_goes() {
        let mut ks = KeySpace::default();
        ks.put(b"a".to_vec(), b"1".to_vec());
        assert!(ks.delete(&KeyRange::single("zz")).is_empty());
        assert_eq!(ks.revision(), 1);
        let evs = ks.delete(&KeyRange::single("a"));
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kv.mod_revision, 2);
        assert_eq!(ks.revision(), 2);
        // Re-creating starts a new generation.
        let e = ks.put(b"a".to_vec(), b"3".to_vec());
        assert_eq!((e.kv.create_revision, e.kv.version), (3, 1));
    }

    #[test]
    fn ranges_prefixes_limits() {
        let mut ks = KeySpace::default();
        for k in ["a", "b/1", "b/2", "b/3", "c"] {
            ks.put(k.into(), b"v".to_vec());
        }
        let r = ks.range(&q(KeyRange::prefix("b/")));
        assert_eq!(r.kvs.iter().map(|kv| kv.key.as_slice()).collect::<Vec<_>>(), [b"b/1", b"b/2", b"b/3"]);
        let r = ks.range(&RangeQuery { limit: 2, ..q(KeyRange::prefix("b/")) });
        assert_eq!((r.kvs.len(), r.more, r.count), (2, true, 3));
        let r = ks.range(&RangeQuery { count_only: true, ..q(KeyRange::from_wire(b"b".to_vec(), vec![0])) });
        assert_eq!((r.kvs.len(), r.count), (0, 4));
        let r = ks.range(&RangeQuery { keys_only: true, ..q(KeyRange::single("c")) });
        assert_eq!(r.kvs[0].value, b"");
        assert_eq!(ks.range(&q(KeyRange::from_wire(b"c".to_vec(), b"a".to_vec()))).count, 0);
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
        let evs = ks.delete(&KeyRange::prefix("b/"));
        assert_eq!(evs.len(), 3);
        assert!(evs.iter().all(|e| e.kv.mod_revision == 6));
    }

    #[test]
    fn txn_compare_and_swap() {
        let mut ks = KeySpace::default();
        ks.put(b"k".to_vec(), b"old".to_vec());
        let cas = |ks: &mut KeySpace, expect: &[u8], new: &[u8]| {
            ks.txn(
                &[TxnCompare {
                    key: b"k".to_vec(),
                    target: CompareTarget::Value,
                    op: CompareOp::Equal,
                    value: expect.to_vec(),
                    number: 0,
                }],
                vec![TxnOp::Put { key: b"k".to_vec(), value: new.to_vec(), prev_kv: true }],
                vec![TxnOp::Range(q(KeyRange::single("k")))],
            )
        };
        let (ok, resp, evs) = cas(&mut ks, b"old", b"new");
        assert!(ok);
        assert_eq!(evs.len(), 1);
        assert_eq!(resp, vec![TxnOpResponse::Put { prev_kv: Some(evs[0].prev_kv.clone().unwrap()) }]);
        assert_eq!(ks.revision(), 2);
        let (ok, resp, evs) = cas(&mut ks, b"old", b"newer");
        assert!(!ok);
        assert!(evs.is_empty());
        assert_eq!(ks.revision(), 2, "a failed CAS that only reads must not bump the revision");
        match &resp[0] {
            TxnOpResponse::Range(r) => assert_eq!(r.kvs[0].value, b"new"),
            other => panic!("unexpected {other:?}"),
        }
        // Absent key: version == 0 holds (create-if-absent).
        let (ok, _, _) = ks.txn(
            &[TxnCompare {
                key: b"fresh".to_vec(),
                target: CompareTarget::Version,
                op: CompareOp::Equal,
                value: vec![],
                number: 0,
            }],
            vec![
                TxnOp::Put { key: b"fresh".to_vec(), value: b"1".to_vec(), prev_kv: false },
                TxnOp::Put { key: b"other".to_vec(), value: b"2".to_vec(), prev_kv: false },
            ],
            vec![],
        );
        assert!(ok);
        assert_eq!(ks.revision(), 3, "all writes of one txn share one revision");
        assert_eq!(ks.get(b"other").unwrap().mod_revision, 3);
    }

    #[test]
    fn size_is_tracked_through_puts_overwrites_deletes_and_txns() {
        let o = crate::quota::PER_KEY_OVERHEAD;
        let mut ks = KeySpace::default();
        assert_eq!(ks.size_bytes(), 0);
        ks.put(b"ab".to_vec(), vec![0; 10]);
        assert_eq!(ks.size_bytes(), 12 + o);
        ks.put(b"ab".to_vec(), vec![0; 4]);
        assert_eq!(ks.size_bytes(), 6 + o, "an overwrite replaces the old value's size");
        ks.put(b"c".to_vec(), vec![]);
        ks.txn(&[], vec![TxnOp::Put { key: b"d".to_vec(), value: vec![1; 5], prev_kv: false }], vec![]);
        assert_eq!(ks.size_bytes(), 6 + o + 1 + o + 6 + o);
        ks.delete(&KeyRange::from_wire(b"a".to_vec(), vec![0]));
        assert_eq!(ks.size_bytes(), 0);
    }

    #[test]
    fn image_round_trip() {
        let mut ks = KeySpace::default();
        ks.put(b"a".to_vec(), b"1".to_vec());
        ks.put(b"b".to_vec(), b"2".to_vec());
        ks.delete(&KeyRange::single("a"));
        let back = KeySpace::from_image(ks.to_image()).unwrap();
        assert_eq!(back.revision(), 3);
        assert_eq!(back.size_bytes(), ks.size_bytes(), "the size survives a snapshot");
        assert_eq!(back.get(b"b"), ks.get(b"b"));
        assert_eq!(back.len(), 1);
    }
}
