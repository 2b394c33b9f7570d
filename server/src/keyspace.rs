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
//! taken under the lock in constant time and serialized in the background while writes continue. A live key and
//! its value share one heap block (`Record`, the map's key); the map's value holds only revisions and the lease,
//! so a key costs one allocation and a small slot (see docs/architecture.md, "Bytes per key").
//!
//! Invariants, checked by `debug_assert`s and tests: `revision` never decreases; for every key
//! `create_revision <= mod_revision <= revision` and `version >= 1`; `size_bytes` is the sum over live keys of
//! key + value + `quota::PER_KEY_OVERHEAD` bytes (kept incrementally; the storage quota is checked against it).

use imbl::{OrdMap, Vector};
use serde::{Deserialize, Serialize};

use crate::lease::{Lease, LeaseError, LeaseImage, Leases};

/// One key as seen by readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    #[serde(with = "crate::raft::wire_bytes")]
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// The lease the key is attached to (0 = none).
    pub lease: i64,
}

/// A live key and its current value in one allocation: the map's key. `[key length: u32 LE][key][value]`, so a key
/// costs one heap block and a 16-byte slot in the map's nodes. Ordered, compared and looked up by the key alone
/// (`Borrow<[u8]>`), so the map finds it from a `&[u8]`. Replacing a key's value means removing its record and
/// inserting a new one (a map's `insert` keeps the old key object).
#[derive(Clone)]
struct Record(Box<[u8]>);

impl Record {
    fn new(key: &[u8], value: &[u8]) -> Self {
        let key_len = u32::try_from(key.len()).expect("keys are bounded by the request limit, far below 4 GiB");
        let mut bytes = Vec::with_capacity(4 + key.len() + value.len());
        bytes.extend_from_slice(&key_len.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Self(bytes.into_boxed_slice())
    }

    #[inline]
    fn split(&self) -> (&[u8], &[u8]) {
        let (len, rest) = self.0.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
        rest.split_at(len)
    }

    #[inline]
    fn key(&self) -> &[u8] {
        self.split().0
    }

    #[inline]
    fn value(&self) -> &[u8] {
        self.split().1
    }
}

impl std::borrow::Borrow<[u8]> for Record {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Record {}

impl PartialOrd for Record {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Record {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (key, value) = self.split();
        write!(f, "{:?} = {} bytes", String::from_utf8_lossy(key), value.len())
    }
}

/// What the map stores beside a live key's [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Revisions {
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    /// The lease the key is attached to (0 = none).
    lease: i64,
}

/// One version of a key as reads see it, borrowed from the live map or from the history.
#[derive(Debug, Clone, Copy)]
struct Version<'a> {
    value: &'a [u8],
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

impl<'a> Version<'a> {
    fn live(record: &'a Record, r: &Revisions) -> Self {
        Version {
            value: record.value(),
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
            version: r.version,
            lease: r.lease,
        }
    }

    fn to_kv(self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: self.value.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }

    fn to_meta(self) -> Meta {
        Meta {
            value: self.value.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// A superseded version of a key, as the history keeps it (the key itself is the history's map key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// The lease the key is attached to (0 = none).
    pub lease: i64,
}

impl Meta {
    fn version(&self) -> Version<'_> {
        Version {
            value: &self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }

    fn stored(&self) -> StoredMeta {
        self.version().stored()
    }
}

impl Version<'_> {
    fn stored(self) -> StoredMeta {
        StoredMeta {
            value: self.value.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}

/// [`Meta`] as snapshots store it: its shape before leases, so that older snapshots still load. Leases are stored
/// beside it ([`LeaseSetImage`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMeta {
    #[serde(with = "crate::raft::wire_bytes")]
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

impl StoredMeta {
    fn into_meta(self) -> Meta {
        Meta {
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: 0,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The lease a key is attached to (0 = none).
    Lease,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One condition of a transaction, over one key or every key of a range (etcd's `range_end` on a compare): it
/// holds if it holds for every key there. An absent key (or an empty range) compares as version = create = mod =
/// lease = 0, and a value compare against it is false, as in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCompare {
    pub range: KeyRange,
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
        /// Keep the key's current value (etcd's `ignore_value`); the key must exist.
        ignore_value: bool,
        /// Keep the key's current lease (etcd's `ignore_lease`); the key must exist.
        ignore_lease: bool,
        /// The lease to attach the key to (0 = none; a put without a lease detaches the key from its lease). An
        /// unknown lease refuses the transaction.
        lease: i64,
    },
    Range(RangeQuery),
    Delete {
        range: KeyRange,
        prev_kv: bool,
    },
    /// A nested transaction: its compares see the state left by the ops before it.
    Txn {
        compare: Vec<TxnCompare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResponse {
    /// `revision` (here and below): the key space's revision as this op left it inside the transaction — the
    /// revision before the transaction until its first change, the transaction's own from then on (etcd's
    /// nested response headers).
    Put {
        prev_kv: Option<KeyValue>,
        revision: i64,
    },
    Range(RangeResult, i64),
    Delete {
        deleted: i64,
        prev_kvs: Vec<KeyValue>,
        revision: i64,
    },
    Txn {
        succeeded: bool,
        responses: Vec<TxnOpResponse>,
    },
}

/// How a range orders its result (etcd's `sort_order` / `sort_target`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Key order, ascending (the map's own order).
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeQuery {
    pub range: KeyRange,
    /// 0 = unlimited.
    pub limit: i64,
    pub keys_only: bool,
    pub count_only: bool,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Bounds on the returned keys' revisions (0 = no bound). They filter `kvs`, not `count` (as in etcd).
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
    /// Read the key space as it was at this revision (0 = now).
    pub revision: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
}

/// Why a transaction was refused as a whole when it was applied (nothing of it took effect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnRefused {
    /// A put with `ignore_value` or `ignore_lease` of a key that does not exist (etcd's `key not found`).
    KeyNotFound,
    /// A put naming a lease that does not exist (etcd's `requested lease not found`).
    LeaseNotFound,
    /// A range at a revision that cannot be read.
    Revision(RevisionError),
}

/// The ordered key space with its revision counter.
#[derive(Debug, Clone)]
pub struct KeySpace {
    map: OrdMap<Record, Revisions>,
    revision: i64,
    /// Sum of `entry_size` over live keys.
    bytes: u64,
    /// Revisions are numbered as etcd's (see [`Self::adopt_etcd_revisions`]).
    etcd_revisions: bool,
    /// The MVCC history: every superseded write of a key since `compact_revision`, oldest first — the versions
    /// it had before its current one, and a tombstone for each delete. A key's current version lives in `map`.
    history: OrdMap<Vec<u8>, Vector<Past>>,
    /// Reads at a revision below this one are refused as compacted (etcd's compact revision; -1 = never
    /// compacted, as etcd starts, so that compacting to 0 once succeeds there too).
    compact_revision: i64,
    /// Keys and values held in `history`.
    history_bytes: u64,
    /// The sub-revision of a key's current version when it is not 0 (it was not the first write of its
    /// revision), so that replayed events keep the order they happened in. Small: most writes are first.
    current_sub: OrdMap<Vec<u8>, u32>,
    /// The revision being written and the next sub-revision in it (not persisted: only used while applying).
    writing: (i64, u32),
    /// The leases, each with its attached keys.
    leases: Leases,
}

impl Default for KeySpace {
    fn default() -> Self {
        Self {
            map: OrdMap::new(),
            revision: 0,
            bytes: 0,
            etcd_revisions: false,
            history: OrdMap::new(),
            compact_revision: -1,
            history_bytes: 0,
            current_sub: OrdMap::new(),
            writing: (0, 0),
            leases: Leases::default(),
        }
    }
}

/// One superseded write of a key: the version it put at `rev` (`Some`), or its delete at `rev` (`None`); `sub` is
/// its place among the writes of that revision (etcd's sub-revision: a transaction's op order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Past {
    pub rev: i64,
    pub sub: u32,
    pub meta: Option<Meta>,
}

/// [`Past`] as snapshots store it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPast {
    pub rev: i64,
    pub sub: u32,
    pub meta: Option<StoredMeta>,
}

/// Replayed revisions: the last revision covered, and the events of each revision that had some.
pub type Replayed = (i64, Vec<(i64, Vec<Event>)>);

/// The MVCC history as a snapshot holds it: every key with past writes, and those writes, oldest first.
pub type HistoryImage = Vec<(Vec<u8>, Vec<StoredPast>)>;

/// The leases as a snapshot holds them: the table, the lease of every live key that has one, and of every past
/// version that had one (key, revision, lease).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSetImage {
    pub leases: Vec<LeaseImage>,
    pub key_leases: Vec<(Vec<u8>, i64)>,
    pub past_leases: Vec<(Vec<u8>, i64, i64)>,
}

/// Why a read or compaction at a revision cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevisionError {
    /// Below the compact revision: those versions are gone.
    Compacted { compact_revision: i64 },
    /// Above the current revision.
    Future,
}

/// The keys of `range` in `m`, in order.
/// The entries of `m` whose keys are in `range`, in key order.
fn entries_in<'a, K, V>(m: &'a OrdMap<K, V>, range: &KeyRange) -> Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a>
where
    K: Ord + Clone + std::borrow::Borrow<[u8]>,
    V: Clone,
{
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let start = range.start.as_slice();
    match &range.end {
        None => Box::new(m.get_key_value(start).into_iter()),
        Some(end) if end.as_slice() == [0] => Box::new(m.range::<_, [u8]>((Included(start), Unbounded))),
        Some(end) if end.as_slice() <= start => Box::new(std::iter::empty()),
        Some(end) => Box::new(m.range::<_, [u8]>((Included(start), Excluded(end.as_slice())))),
    }
}

fn keys_in<'a, K, V>(m: &'a OrdMap<K, V>, range: &KeyRange) -> Vec<&'a [u8]>
where
    K: Ord + Clone + std::borrow::Borrow<[u8]>,
    V: Clone,
{
    entries_in(m, range).map(|(k, _)| k.borrow()).collect()
}

/// What one superseded version counts in the history's size.
fn past_size(key: &[u8], p: &Past) -> u64 {
    key.len() as u64 + p.meta.as_ref().map_or(0, |m| m.value.len() as u64) + crate::quota::PER_KEY_OVERHEAD
}

/// What one live key counts towards the storage quota.
fn entry_size(key: &[u8], value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + crate::quota::PER_KEY_OVERHEAD
}

/// The serialized form of a key space (snapshots).
#[derive(Serialize, Deserialize)]
pub struct KeySpaceImage {
    pub revision: i64,
    pub entries: Vec<(Vec<u8>, StoredMeta)>,
}

/// A key space decoded straight from the bytes of a [`KeySpaceImage`] (a snapshot): each key and value is borrowed
/// from the bytes and copied once, into the one allocation that holds both, as it is decoded, with no list of
/// entries in between. So a restart costs one allocation per key. Every key is checked as it is read; the first inconsistent one is kept
/// (postcard would drop the text of a decode error) and [`KeySpace::from_image`] refuses the image with it.
pub struct LoadedKeySpace {
    revision: i64,
    map: OrdMap<Record, Revisions>,
    bytes: u64,
    refused: Option<String>,
}

impl LoadedKeySpace {
    fn new(revision: i64) -> Self {
        Self { revision, map: OrdMap::new(), bytes: 0, refused: None }
    }

    fn add(&mut self, key: &[u8], m: StoredMetaRef<'_>) {
        if self.refused.is_none() {
            if let Err(reason) = self.try_add(key, m) {
                self.refused = Some(reason);
                self.map = OrdMap::new();
            }
        }
    }

    fn try_add(&mut self, key: &[u8], m: StoredMetaRef<'_>) -> Result<(), String> {
        if !(m.create_revision <= m.mod_revision && m.mod_revision <= self.revision && m.version >= 1) {
            return Err(format!(
                "inconsistent key {:?}: {m:?} with revision {}",
                String::from_utf8_lossy(key),
                self.revision
            ));
        }
        self.bytes += entry_size(key, m.value);
        let revs = Revisions {
            create_revision: m.create_revision,
            mod_revision: m.mod_revision,
            version: m.version,
            lease: 0,
        };
        if self.map.insert(Record::new(key, m.value), revs).is_some() {
            return Err(format!("key {:?} appears twice", String::from_utf8_lossy(key)));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for LoadedKeySpace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

        struct Image;
        impl<'de> Visitor<'de> for Image {
            type Value = LoadedKeySpace;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key space image")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LoadedKeySpace, A::Error> {
                let revision: i64 = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                seq.next_element_seed(Entries(LoadedKeySpace::new(revision)))?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))
            }
        }

        /// The entries, added to the key space one by one.
        struct Entries(LoadedKeySpace);
        impl<'de> DeserializeSeed<'de> for Entries {
            type Value = LoadedKeySpace;
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<LoadedKeySpace, D::Error> {
                d.deserialize_seq(self)
            }
        }
        impl<'de> Visitor<'de> for Entries {
            type Value = LoadedKeySpace;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the key space's entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<LoadedKeySpace, A::Error> {
                while let Some((key, meta)) = seq.next_element::<(&'de [u8], StoredMetaRef<'de>)>()? {
                    self.0.add(key, meta);
                }
                Ok(self.0)
            }
        }

        d.deserialize_struct("KeySpaceImage", &["revision", "entries"], Image)
    }
}

/// [`StoredMeta`], borrowed: postcard encodes a `Vec<u8>` and a byte slice alike, so a [`KeySpaceImage`]'s bytes
/// decode as either.
#[derive(Debug, Deserialize)]
pub struct StoredMetaRef<'a> {
    pub value: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
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
        self.current(key).map(|v| v.to_kv(key))
    }

    /// The current version of `key`, if it is live.
    fn current(&self, key: &[u8]) -> Option<Version<'_>> {
        self.map.get_key_value(key).map(|(rec, r)| Version::live(rec, r))
    }

    /// Iterates the live keys of `range` in order.
    fn iter_range<'a>(&'a self, range: &'a KeyRange) -> impl Iterator<Item = (&'a [u8], Version<'a>)> + 'a {
        entries_in(&self.map, range).map(|(rec, r)| (rec.key(), Version::live(rec, r)))
    }

    /// The compact revision: reads at revisions below it are refused.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Checks that `revision` (0 = current) can be read.
    pub fn check_revision(&self, revision: i64) -> Result<(), RevisionError> {
        if revision > self.revision {
            return Err(RevisionError::Future);
        }
        if revision > 0 && revision < self.compact_revision {
            return Err(RevisionError::Compacted { compact_revision: self.compact_revision });
        }
        Ok(())
    }

    /// The version of `key` visible at `revision` (its last write at or before it, if that was a put).
    fn visible_at<'a>(&'a self, key: &[u8], revision: i64) -> Option<Version<'a>> {
        if let Some(v) = self.current(key).filter(|v| v.mod_revision <= revision) {
            return Some(v);
        }
        let past = self.history.get(key)?;
        past.iter().rev().find(|p| p.rev <= revision).and_then(|p| p.meta.as_ref()).map(Meta::version)
    }

    /// The keys of `range` as they were at `revision`, in key order.
    fn iter_range_at<'a>(&'a self, range: &'a KeyRange, revision: i64) -> Vec<(&'a [u8], Version<'a>)> {
        self.keys_ever_in(range).into_iter().filter_map(|k| self.visible_at(k, revision).map(|v| (k, v))).collect()
    }

    /// Every key of `range` that exists now or has past writes in the history, in key order, once each.
    fn keys_ever_in(&self, range: &KeyRange) -> Vec<&[u8]> {
        let mut live = keys_in(&self.map, range).into_iter().peekable();
        let mut past = keys_in(&self.history, range).into_iter().peekable();
        let mut keys = Vec::new();
        // Merge the two sorted key lists.
        loop {
            let next = match (live.peek(), past.peek()) {
                (Some(a), Some(b)) if a == b => {
                    past.next();
                    live.next()
                }
                (Some(a), Some(b)) if a < b => live.next(),
                (Some(_), Some(_)) => past.next(),
                (Some(_), None) => live.next(),
                (None, Some(_)) => past.next(),
                (None, None) => break,
            };
            keys.extend(next);
        }
        keys
    }

    /// A range read at a past `revision` (0 or the current one: now), checked against the compact revision.
    pub fn range_at(&self, q: &RangeQuery, revision: i64) -> Result<RangeResult, RevisionError> {
        self.check_revision(revision)?;
        if revision == 0 || revision == self.revision {
            return Ok(self.range(q));
        }
        Ok(self.range_over(q, self.iter_range_at(&q.range, revision).into_iter()))
    }

    /// A range read with etcd's semantics: `count` is every key in the range; the revision bounds then filter,
    /// the sort orders, and `limit` cuts (setting `more`). Without a sort or bound, it stops early at `limit`.
    pub fn range(&self, q: &RangeQuery) -> RangeResult {
        self.range_over(q, self.iter_range(&q.range))
    }

    fn range_over<'a>(&self, q: &RangeQuery, items: impl Iterator<Item = (&'a [u8], Version<'a>)>) -> RangeResult {
        let mut out = RangeResult::default();
        let limit = if q.limit > 0 { q.limit as usize } else { usize::MAX };
        let filtered = q.sort_order != SortOrder::None
            || q.sort_target != SortTarget::Key
            || q.min_mod_revision != 0
            || q.max_mod_revision != 0
            || q.min_create_revision != 0
            || q.max_create_revision != 0;
        let keep = |m: &Version<'_>| {
            !(q.max_mod_revision != 0 && m.mod_revision > q.max_mod_revision
                || q.min_mod_revision != 0 && m.mod_revision < q.min_mod_revision
                || q.max_create_revision != 0 && m.create_revision > q.max_create_revision
                || q.min_create_revision != 0 && m.create_revision < q.min_create_revision)
        };
        for (k, m) in items {
            out.count += 1;
            if q.count_only {
                continue;
            }
            if !filtered && out.kvs.len() >= limit {
                out.more = true;
                continue;
            }
            if !keep(&m) {
                continue;
            }
            out.kvs.push(m.to_kv(k));
        }
        if filtered {
            // etcd sorts ascending by a non-key target when no order is given. Stable: ties stay in key order.
            let order = match (q.sort_order, q.sort_target) {
                (SortOrder::None, SortTarget::Key) => SortOrder::None,
                (SortOrder::None, _) => SortOrder::Ascend,
                (o, _) => o,
            };
            let by = |a: &KeyValue, b: &KeyValue| match q.sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            match order {
                SortOrder::None => {}
                SortOrder::Ascend => out.kvs.sort_by(by),
                SortOrder::Descend => out.kvs.sort_by(|a, b| by(b, a)),
            }
            if out.kvs.len() > limit {
                out.kvs.truncate(limit);
                out.more = true;
            }
        }
        // After sorting: a sort by value sorts by the values keys_only leaves out (as etcd's does).
        if q.keys_only {
            out.kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        out
    }

    /// Applies a put at the next revision. Returns the event and the previous value.
    /// A put without a lease: it detaches the key from the lease it had, as in etcd.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Event {
        self.revision += 1;
        self.put_at(key, value, self.revision, Some(0))
    }

    /// The next sub-revision of revision `rev`.
    fn next_sub(&mut self, rev: i64) -> u32 {
        if self.writing.0 != rev {
            self.writing = (rev, 0);
        }
        self.writing.1 += 1;
        self.writing.1 - 1
    }

    /// Moves the current version of `key` (`prev`) into the history.
    fn supersede(&mut self, key: &[u8], prev: Meta) {
        let sub = self.current_sub.remove(key).unwrap_or(0);
        self.remember(key, Past { rev: prev.mod_revision, sub, meta: Some(prev) });
    }

    /// Puts `key` at revision `rev`, attached to `lease` (`None`: the lease it has, etcd's `ignore_lease`).
    fn put_at(&mut self, key: Vec<u8>, value: Vec<u8>, rev: i64, lease: Option<i64>) -> Event {
        let sub = self.next_sub(rev);
        let prev = self.map.remove_with_key(key.as_slice()).map(|(rec, r)| Version::live(&rec, &r).to_meta());
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        let lease = lease.unwrap_or(old_lease);
        if lease != old_lease {
            self.leases.detach(old_lease, &key);
            self.leases.attach(lease, &key);
        }
        let revs = match &prev {
            Some(p) => {
                Revisions { create_revision: p.create_revision, mod_revision: rev, version: p.version + 1, lease }
            }
            None => Revisions { create_revision: rev, mod_revision: rev, version: 1, lease },
        };
        self.bytes += entry_size(&key, &value);
        if let Some(p) = &prev {
            self.bytes -= entry_size(&key, &p.value);
        }
        let prev_kv = prev.as_ref().map(|p| p.version().to_kv(&key));
        if let Some(p) = prev {
            self.supersede(&key, p);
        }
        if sub > 0 {
            self.current_sub.insert(key.clone(), sub);
        }
        self.map.insert(Record::new(&key, &value), revs);
        let kv = KeyValue {
            key,
            value,
            create_revision: revs.create_revision,
            mod_revision: revs.mod_revision,
            version: revs.version,
            lease: revs.lease,
        };
        Event { kind: EventKind::Put, kv, prev_kv }
    }

    /// Deletes every key in `range`; bumps the revision only if something was deleted.
    pub fn delete(&mut self, range: &KeyRange) -> Vec<Event> {
        let keys: Vec<Vec<u8>> = self.iter_range(range).map(|(k, _)| k.to_vec()).collect();
        if keys.is_empty() {
            return Vec::new();
        }
        self.revision += 1;
        self.delete_at(keys, self.revision)
    }

    fn delete_at(&mut self, keys: Vec<Vec<u8>>, rev: i64) -> Vec<Event> {
        keys.into_iter()
            .filter_map(|k| {
                let prev = self.map.remove_with_key(k.as_slice()).map(|(rec, r)| Version::live(&rec, &r).to_meta())?;
                self.leases.detach(prev.lease, &k);
                let sub = self.next_sub(rev);
                self.bytes -= entry_size(&k, &prev.value);
                let kv = KeyValue {
                    key: k.clone(),
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: rev,
                    version: 0,
                    lease: 0,
                };
                let prev_kv = prev.version().to_kv(&k);
                self.supersede(&k, prev);
                self.remember(&k, Past { rev, sub, meta: None });
                Some(Event { kind: EventKind::Delete, kv, prev_kv: Some(prev_kv) })
            })
            .collect()
    }

    fn compare(&self, c: &TxnCompare) -> bool {
        let holds = |m: Option<Version<'_>>| {
            let ord = match c.target {
                CompareTarget::Value => match m {
                    Some(m) => m.value.cmp(c.value.as_slice()),
                    None => return false,
                },
                CompareTarget::Version => m.map_or(0, |m| m.version).cmp(&c.number),
                CompareTarget::CreateRevision => m.map_or(0, |m| m.create_revision).cmp(&c.number),
                CompareTarget::ModRevision => m.map_or(0, |m| m.mod_revision).cmp(&c.number),
                CompareTarget::Lease => m.map_or(0, |m| m.lease).cmp(&c.number),
            };
            match c.op {
                CompareOp::Equal => ord.is_eq(),
                CompareOp::NotEqual => ord.is_ne(),
                CompareOp::Greater => ord.is_gt(),
                CompareOp::Less => ord.is_lt(),
            }
        };
        let mut any = false;
        for (_, m) in self.iter_range(&c.range) {
            any = true;
            if !holds(Some(m)) {
                return false;
            }
        }
        any || holds(None)
    }

    /// Whether the ops that will run (see [`Self::choose`]) write anything.
    fn writes(&self, run: &[&TxnOp]) -> bool {
        run.iter().any(|op| match op {
            TxnOp::Put { .. } => true,
            TxnOp::Delete { range, .. } => self.iter_range(range).next().is_some(),
            _ => false,
        })
    }

    /// Why the ops that will run cannot run: etcd checks the puts on the path, then its ranges, before any op.
    fn refusal(&self, run: &[&TxnOp]) -> Option<TxnRefused> {
        let put = |op: &&TxnOp| match op {
            TxnOp::Put { key, ignore_value, ignore_lease, .. }
                if (*ignore_value || *ignore_lease) && !self.map.contains_key(key.as_slice()) =>
            {
                Some(TxnRefused::KeyNotFound)
            }
            TxnOp::Put { lease, ignore_lease: false, .. } if *lease != 0 && !self.leases.contains(*lease) => {
                Some(TxnRefused::LeaseNotFound)
            }
            _ => None,
        };
        let range = |op: &&TxnOp| match op {
            TxnOp::Range(q) => self.check_revision(q.revision).err().map(TxnRefused::Revision),
            _ => None,
        };
        run.iter().find_map(put).or_else(|| run.iter().find_map(range))
    }

    /// Runs a transaction atomically. All writes of the chosen branch (nested ones included) share one new
    /// revision, bumped only if something is written. Reads inside see the transaction's earlier writes. A
    /// transaction that is refused ([`TxnRefused`]) changes nothing.
    pub fn txn(
        &mut self,
        compare: &[TxnCompare],
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    ) -> Result<(bool, Vec<TxnOpResponse>, Vec<Event>), TxnRefused> {
        let succeeded = compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { success } else { failure };
        let (mut path, mut run) = (Vec::new(), Vec::new());
        self.choose(&ops, &mut path, &mut run);
        if let Some(refused) = self.refusal(&run) {
            return Err(refused);
        }
        let writes = self.writes(&run);
        drop(run);
        let rev = if writes { self.revision + 1 } else { self.revision };
        let mut path = path.into_iter();
        // A key can change twice in one txn (a put and a from-key delete over it: etcd's duplicate check lets that
        // through). Its events' previous values are then those before the txn, as etcd's watchers report them
        // (the value at the revision before); the ops' own responses see the txn's earlier writes.
        let before = writes.then(|| self.map.clone()); // O(1): a persistent map
        let mut events = Vec::new();
        let responses = self.run_ops(ops, rev, &mut path, &mut events);
        if writes {
            self.revision = rev;
        }
        if let Some(before) = before {
            for e in &mut events {
                // A put that creates the key has none (etcd does not look one up for a create).
                let creates = e.kind == EventKind::Put && e.kv.create_revision == e.kv.mod_revision;
                e.prev_kv = if creates {
                    None
                } else {
                    before.get_key_value(e.kv.key.as_slice()).map(|(rec, r)| Version::live(rec, r).to_kv(&e.kv.key))
                };
            }
        }
        debug_assert!(events.iter().all(|e| e.kv.mod_revision == self.revision));
        Ok((succeeded, responses, events))
    }

    /// The path through a transaction, decided once against the state before any op runs (as etcd decides it):
    /// the outcome of every nested transaction that will run (`path`, in run order) and the ops that will run
    /// (`run`, nested ones in place).
    fn choose<'a>(&self, ops: &'a [TxnOp], path: &mut Vec<bool>, run: &mut Vec<&'a TxnOp>) {
        for op in ops {
            match op {
                TxnOp::Txn { compare, success, failure } => {
                    let succeeded = compare.iter().all(|c| self.compare(c));
                    path.push(succeeded);
                    self.choose(if succeeded { success } else { failure }, path, run);
                }
                op => run.push(op),
            }
        }
    }

    fn run_ops(
        &mut self,
        ops: Vec<TxnOp>,
        rev: i64,
        path: &mut std::vec::IntoIter<bool>,
        events: &mut Vec<Event>,
    ) -> Vec<TxnOpResponse> {
        // Before the first change of this txn, ops see the revision before it; after it, the txn's own.
        let begin = self.revision;
        let seen = |events: &Vec<Event>| if events.is_empty() { begin } else { rev };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                TxnOp::Put { key, value, prev_kv, ignore_value, ignore_lease, lease } => {
                    let value = match (ignore_value, self.current(&key)) {
                        (true, Some(v)) => v.value.to_vec(),
                        _ => value,
                    };
                    let ev = self.put_at(key, value, rev, (!ignore_lease).then_some(lease));
                    let prev_kv = if prev_kv { ev.prev_kv.clone() } else { None };
                    events.push(ev);
                    responses.push(TxnOpResponse::Put { prev_kv, revision: rev });
                }
                TxnOp::Range(q) => {
                    // At a given revision, a read does not see this txn's writes (they are at a later one).
                    let result = if q.revision == 0 || (q.revision == begin && events.is_empty()) {
                        self.range(&q)
                    } else {
                        self.range_over(&q, self.iter_range_at(&q.range, q.revision).into_iter())
                    };
                    responses.push(TxnOpResponse::Range(result, seen(events)))
                }
                TxnOp::Delete { range, prev_kv } => {
                    let keys: Vec<Vec<u8>> = self.iter_range(&range).map(|(k, _)| k.to_vec()).collect();
                    let evs = self.delete_at(keys, rev);
                    let deleted = evs.len() as i64;
                    let prev_kvs =
                        if prev_kv { evs.iter().filter_map(|e| e.prev_kv.clone()).collect() } else { vec![] };
                    events.extend(evs);
                    responses.push(TxnOpResponse::Delete { deleted, prev_kvs, revision: seen(events) });
                }
                TxnOp::Txn { success, failure, .. } => {
                    let succeeded = path.next().expect("a nested transaction's outcome was chosen up front");
                    let ops = if succeeded { success } else { failure };
                    let responses_inner = self.run_ops(ops, rev, path, events);
                    responses.push(TxnOpResponse::Txn { succeeded, responses: responses_inner });
                }
            }
        }
        responses
    }

    /// The one-time switch to etcd's revision numbering (a fresh store is at revision 1, the first write is 2),
    /// applied by the [`crate::raft::Command::EtcdRevisions`] entry at the same log position on every member:
    /// every revision so far moves up by one. Returns false (and changes nothing) if it was already done.
    pub fn adopt_etcd_revisions(&mut self) -> bool {
        if self.etcd_revisions {
            return false;
        }
        self.etcd_revisions = true;
        self.revision += 1;
        let keys: Vec<Vec<u8>> = self.map.keys().map(|rec| rec.key().to_vec()).collect();
        for k in keys {
            if let Some(m) = self.map.get_mut(k.as_slice()) {
                m.create_revision += 1;
                m.mod_revision += 1;
            }
        }
        let keys: Vec<Vec<u8>> = self.history.keys().cloned().collect();
        for k in keys {
            if let Some(past) = self.history.get_mut(&k) {
                for p in past.iter_mut() {
                    p.rev += 1;
                    if let Some(m) = p.meta.as_mut() {
                        m.create_revision += 1;
                        m.mod_revision += 1;
                    }
                }
            }
        }
        if self.compact_revision > 0 {
            self.compact_revision += 1;
        }
        true
    }

    /// Whether [`Self::adopt_etcd_revisions`] was applied.
    pub fn etcd_revisions(&self) -> bool {
        self.etcd_revisions
    }

    /// Keeps a superseded write of `key` in the history.
    fn remember(&mut self, key: &[u8], past: Past) {
        self.history_bytes += past_size(key, &past);
        match self.history.get_mut(key) {
            Some(v) => v.push_back(past),
            None => {
                self.history.insert(key.to_vec(), Vector::unit(past));
            }
        }
    }

    /// Bytes of keys and values the MVCC history holds.
    pub fn history_bytes(&self) -> u64 {
        self.history_bytes
    }

    /// Versions held in the MVCC history.
    pub fn history_versions(&self) -> usize {
        self.history.values().map(|v| v.len()).sum()
    }

    /// Compacts the history to `revision` (etcd's Compact): afterwards reads at `revision` and later still work,
    /// reads before it are refused, and every version no such read can see is dropped.
    pub fn compact(&mut self, revision: i64) -> Result<(), RevisionError> {
        if revision > self.revision {
            return Err(RevisionError::Future);
        }
        if revision <= self.compact_revision {
            return Err(RevisionError::Compacted { compact_revision: self.compact_revision });
        }
        self.compact_revision = revision;
        // Sub-revisions matter only for revisions that can still be replayed.
        let old: Vec<Vec<u8>> = self
            .current_sub
            .keys()
            .filter(|k| self.map.get(k.as_slice()).is_none_or(|m| m.mod_revision < revision))
            .cloned()
            .collect();
        for k in old {
            self.current_sub.remove(&k);
        }
        let keys: Vec<Vec<u8>> = self.history.keys().cloned().collect();
        for k in keys {
            let current_visible = self.map.get(k.as_slice()).is_some_and(|m| m.mod_revision <= revision);
            let Some(past) = self.history.get(&k) else { continue };
            // The first entry a read at `revision` or later can see: the last one at or before `revision`
            // (unless the current version, or a delete, already hides it), and everything after it.
            let keep_from = if current_visible {
                past.len()
            } else {
                match past.iter().rposition(|p| p.rev <= revision) {
                    Some(i) if past[i].meta.is_some() => i,
                    Some(i) => i + 1,
                    None => 0,
                }
            };
            if keep_from == 0 {
                continue;
            }
            let dropped: u64 = past.iter().take(keep_from).map(|p| past_size(&k, p)).sum();
            self.history_bytes -= dropped;
            if keep_from >= past.len() {
                self.history.remove(&k);
            } else {
                let kept = past.clone().split_off(keep_from);
                self.history.insert(k, kept);
            }
        }
        Ok(())
    }

    /// A hash of every version visible at some revision in `[compact revision, revision]` (etcd's HashKV): equal
    /// on every member that applied the same log, whatever its snapshots.
    pub fn hash_kv(&self, revision: i64) -> Result<u32, RevisionError> {
        self.check_revision(revision)?;
        let revision = if revision == 0 { self.revision } else { revision };
        let mut h = crc32c::crc32c(&self.compact_revision.to_be_bytes());
        let mut add = |key: &[u8], rev: i64, m: Option<Version<'_>>| {
            h = crc32c::crc32c_append(h, &(key.len() as u64).to_be_bytes());
            h = crc32c::crc32c_append(h, key);
            h = crc32c::crc32c_append(h, &rev.to_be_bytes());
            if let Some(m) = m {
                h = crc32c::crc32c_append(h, &m.create_revision.to_be_bytes());
                h = crc32c::crc32c_append(h, &m.version.to_be_bytes());
                h = crc32c::crc32c_append(h, &(m.value.len() as u64).to_be_bytes());
                h = crc32c::crc32c_append(h, m.value);
            }
        };
        let all = KeyRange { start: vec![], end: Some(vec![0]) };
        for k in self.keys_ever_in(&all) {
            let current = self.current(k);
            if let Some(past) = self.history.get(k) {
                for p in past.iter().filter(|p| p.rev <= revision) {
                    add(k, p.rev, p.meta.as_ref().map(Meta::version));
                }
            }
            if let Some(m) = current.filter(|m| m.mod_revision <= revision) {
                add(k, m.mod_revision, Some(m));
            }
        }
        Ok(h)
    }

    /// The events of revisions `from..=to` on keys of `range`, replayed from the MVCC history in the order they
    /// happened (etcd's revision, sub-revision), each with its previous value (the version visible at the revision
    /// before, as etcd's watch reports it; none for a create, or before the compact revision). Stops after
    /// `max_revisions` revisions with events, or once `max_bytes` are collected past the first; returns the last
    /// revision it covered with them. `Err(compact revision)` if `from` is below it.
    pub fn replay(
        &self,
        range: &KeyRange,
        from: i64,
        to: i64,
        max_revisions: usize,
        max_bytes: usize,
    ) -> Result<Replayed, i64> {
        if from < self.compact_revision {
            return Err(self.compact_revision);
        }
        let to = to.min(self.revision);
        // Every write in [from, to] to a key of the range: (revision, sub-revision, key, what it wrote).
        let mut writes: Vec<(i64, u32, &[u8], Option<Version<'_>>)> = Vec::new();
        for k in self.keys_ever_in(range) {
            if let Some(past) = self.history.get(k) {
                writes.extend(
                    past.iter()
                        .filter(|p| p.rev >= from && p.rev <= to)
                        .map(|p| (p.rev, p.sub, k, p.meta.as_ref().map(Meta::version))),
                );
            }
            if let Some(m) = self.current(k).filter(|m| m.mod_revision >= from && m.mod_revision <= to) {
                writes.push((m.mod_revision, self.current_sub.get(k).copied().unwrap_or(0), k, Some(m)));
            }
        }
        writes.sort_by_key(|(rev, sub, _, _)| (*rev, *sub));
        let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
        let mut bytes = 0;
        let mut covered = to;
        for (rev, _, key, wrote) in writes {
            if out.last().is_none_or(|(r, _)| *r != rev) {
                if out.len() >= max_revisions || (!out.is_empty() && bytes > max_bytes) {
                    covered = rev - 1;
                    break;
                }
                out.push((rev, Vec::new()));
            }
            let prev = if rev - 1 < self.compact_revision {
                None
            } else {
                self.visible_at(key, rev - 1).map(|m| m.to_kv(key))
            };
            let event = match wrote {
                Some(m) => {
                    let creates = m.create_revision == rev;
                    Event { kind: EventKind::Put, kv: m.to_kv(key), prev_kv: if creates { None } else { prev } }
                }
                None => Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: key.to_vec(),
                        value: vec![],
                        create_revision: 0,
                        mod_revision: rev,
                        version: 0,
                        lease: 0,
                    },
                    prev_kv: prev,
                },
            };
            bytes += event.kv.key.len() + event.kv.value.len() + event.prev_kv.as_ref().map_or(0, |p| p.value.len());
            out.last_mut().expect("a revision was pushed").1.push(event);
        }
        Ok((covered, out))
    }

    /// The MVCC history and compact revision, for snapshots.
    pub fn history_image(&self) -> (i64, HistoryImage, Vec<(Vec<u8>, u32)>) {
        let stored = |p: &Past| StoredPast { rev: p.rev, sub: p.sub, meta: p.meta.as_ref().map(Meta::stored) };
        let entries = self.history.iter().map(|(k, v)| (k.clone(), v.iter().map(stored).collect())).collect();
        let subs = self.current_sub.iter().map(|(k, s)| (k.clone(), *s)).collect();
        (self.compact_revision, entries, subs)
    }

    /// Restores the MVCC history from a snapshot, refusing an inconsistent one.
    pub fn set_history(
        &mut self,
        compact_revision: i64,
        entries: HistoryImage,
        subs: Vec<(Vec<u8>, u32)>,
    ) -> Result<(), String> {
        self.current_sub = subs.into_iter().collect();
        let mut bytes = 0;
        let mut history = OrdMap::new();
        for (k, past) in entries {
            let ordered = past.windows(2).all(|w| w[0].rev < w[1].rev);
            let below_current = past.last().is_none_or(|p| p.rev <= self.revision);
            if past.is_empty() || !ordered || !below_current {
                return Err(format!("inconsistent history of key {:?}", String::from_utf8_lossy(&k)));
            }
            let past: Vector<Past> = past
                .into_iter()
                .map(|p| Past { rev: p.rev, sub: p.sub, meta: p.meta.map(StoredMeta::into_meta) })
                .collect();
            bytes += past.iter().map(|p| past_size(&k, p)).sum::<u64>();
            history.insert(k, past);
        }
        self.history = history;
        self.history_bytes = bytes;
        self.compact_revision = compact_revision;
        Ok(())
    }

    pub fn to_image(&self) -> KeySpaceImage {
        KeySpaceImage {
            revision: self.revision,
            entries: self.map.iter().map(|(rec, r)| (rec.key().to_vec(), Version::live(rec, r).stored())).collect(),
        }
    }

    /// The key space a snapshot image decoded into ([`LoadedKeySpace`]).
    pub fn from_image(image: LoadedKeySpace, etcd_revisions: bool) -> Result<Self, String> {
        let LoadedKeySpace { revision, map, bytes, refused } = image;
        if let Some(reason) = refused {
            return Err(reason);
        }
        // An image without its history (from an older raftkv): nothing before it can be read.
        Ok(Self {
            map,
            revision,
            bytes,
            etcd_revisions,
            history: OrdMap::new(),
            compact_revision: revision,
            history_bytes: 0,
            current_sub: OrdMap::new(),
            writing: (0, 0),
            leases: Leases::default(),
        })
    }

    /// The leases, for snapshots.
    pub fn lease_image(&self) -> LeaseSetImage {
        let key_leases =
            self.map.iter().filter(|(_, r)| r.lease != 0).map(|(rec, r)| (rec.key().to_vec(), r.lease)).collect();
        let mut past_leases = Vec::new();
        for (k, past) in self.history.iter() {
            for p in past.iter() {
                if let Some(m) = p.meta.as_ref().filter(|m| m.lease != 0) {
                    past_leases.push((k.clone(), p.rev, m.lease));
                }
            }
        }
        LeaseSetImage { leases: self.leases.image(), key_leases, past_leases }
    }

    /// Restores the leases from a snapshot (after [`Self::set_history`]), refusing an inconsistent image.
    pub fn set_leases(&mut self, image: LeaseSetImage) -> Result<(), String> {
        for (k, lease) in &image.key_leases {
            match self.map.get_mut(k.as_slice()) {
                Some(r) => r.lease = *lease,
                None => return Err(format!("lease {lease} names key {:?}, which does not exist", lossy(k))),
            }
        }
        for (k, rev, lease) in &image.past_leases {
            let meta = self
                .history
                .get_mut(k)
                .and_then(|past| past.iter_mut().find(|p| p.rev == *rev))
                .and_then(|p| p.meta.as_mut());
            match meta {
                Some(m) => m.lease = *lease,
                None => return Err(format!("lease {lease} names version {rev} of key {:?}, not held", lossy(k))),
            }
        }
        let attached = self.map.iter().filter(|(_, r)| r.lease != 0).map(|(rec, r)| (rec.key(), r.lease));
        self.leases = Leases::from_image(image.leases, attached)?;
        Ok(())
    }

    /// The leases.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// A lease by id.
    pub fn lease(&self, id: i64) -> Option<&Lease> {
        self.leases.get(id)
    }

    /// Grants lease `id` with `ttl` seconds (no revision: a grant writes no key).
    pub fn grant_lease(&mut self, id: i64, ttl: i64) -> Result<(), LeaseError> {
        self.leases.grant(id, ttl)
    }

    /// Revokes lease `id`: deletes every key attached to it, all at one new revision (none if it had no keys).
    pub fn revoke_lease(&mut self, id: i64) -> Result<Vec<Event>, LeaseError> {
        let keys = self.leases.remove(id)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.revision += 1;
        let events = self.delete_at(keys.into_iter().collect(), self.revision);
        debug_assert!(!events.is_empty(), "every key of a lease is live");
        Ok(events)
    }

    /// Records the remaining times of leases (see [`crate::lease::Lease::remaining_ms`]).
    pub fn checkpoint_leases(&mut self, checkpoints: &[(i64, Option<i64>)]) {
        self.leases.checkpoint(checkpoints)
    }
}

fn lossy(k: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ks`'s image, encoded as a snapshot holds it and decoded again (without its history or leases).
    fn reloaded(ks: &KeySpace, etcd_revisions: bool) -> KeySpace {
        let bytes = postcard::to_allocvec(&ks.to_image()).unwrap();
        KeySpace::from_image(postcard::from_bytes(&bytes).unwrap(), etcd_revisions).unwrap()
    }

    fn q(range: KeyRange) -> RangeQuery {
        RangeQuery { range, ..Default::default() }
    }

    #[test]
    fn records_order_and_match_by_key_alone() {
        let a = Record::new(b"ab", b"zzz");
        let b = Record::new(b"abc", b"");
        let c = Record::new(b"b", b"a");
        assert_eq!((a.key(), a.value()), (&b"ab"[..], &b"zzz"[..]));
        assert_eq!((b.key(), b.value()), (&b"abc"[..], &b""[..]));
        assert!(a < b && b < c, "ordered by key, whatever the values");
        assert_eq!(a, Record::new(b"ab", b"other value"));
        let empty = Record::new(b"", b"v");
        assert_eq!((empty.key(), empty.value()), (&b""[..], &b"v"[..]));
        let mut ks = KeySpace::default();
        ks.put(b"k".to_vec(), b"old".to_vec());
        ks.put(b"k".to_vec(), b"new".to_vec());
        // The map's key object holds the value: an overwrite must replace it, not only the revisions beside it.
        assert_eq!(ks.get(b"k").unwrap().value, b"new");
        assert_eq!(ks.map.len(), 1);
        let (rec, revs) = ks.map.get_key_value(&b"k"[..]).unwrap();
        assert_eq!((rec.value(), revs.version), (&b"new"[..], 2));
    }

    #[test]
    fn a_snapshot_image_decodes_into_the_same_key_space() {
        let mut ks = KeySpace::default();
        for i in 0..300u32 {
            ks.put(format!("key-{:05}", i * 7 % 300).into_bytes(), vec![i as u8; (i % 40) as usize]);
        }
        ks.delete(&KeyRange { start: b"key-00010".to_vec(), end: Some(b"key-00020".to_vec()) });
        let back = reloaded(&ks, false);
        assert_eq!(back.revision(), ks.revision());
        assert_eq!(back.size_bytes(), ks.size_bytes());
        let all = q(KeyRange { start: vec![], end: Some(vec![0]) });
        assert_eq!(back.range(&all).kvs, ks.range(&all).kvs);
        assert_eq!(back.range(&all).kvs.len(), 290);
        // An entry that breaks the invariants fails the decode instead of loading.
        let mut image = ks.to_image();
        image.entries[3].1.mod_revision = ks.revision() + 1;
        let bytes = postcard::to_allocvec(&image).unwrap();
        let err = KeySpace::from_image(postcard::from_bytes(&bytes).unwrap(), false).expect_err("refused");
        assert!(err.starts_with("inconsistent key \"key-00003\""), "{err}");
        let mut image = ks.to_image();
        image.entries[4].0 = image.entries[3].0.clone();
        let bytes = postcard::to_allocvec(&image).unwrap();
        let err = KeySpace::from_image(postcard::from_bytes(&bytes).unwrap(), false).expect_err("refused");
        assert!(err.contains("appears twice"), "{err}");
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
                    range: KeyRange::single("k"),
                    target: CompareTarget::Value,
                    op: CompareOp::Equal,
                    value: expect.to_vec(),
                    number: 0,
                }],
                vec![TxnOp::Put {
                    key: b"k".to_vec(),
                    value: new.to_vec(),
                    prev_kv: true,
                    ignore_value: false,
                    ignore_lease: false,
                    lease: 0,
                }],
                vec![TxnOp::Range(q(KeyRange::single("k")))],
            )
            .unwrap()
        };
        let (ok, resp, evs) = cas(&mut ks, b"old", b"new");
        assert!(ok);
        assert_eq!(evs.len(), 1);
        assert_eq!(resp, vec![TxnOpResponse::Put { prev_kv: Some(evs[0].prev_kv.clone().unwrap()), revision: 2 }]);
        assert_eq!(ks.revision(), 2);
        let (ok, resp, evs) = cas(&mut ks, b"old", b"newer");
        assert!(!ok);
        assert!(evs.is_empty());
        assert_eq!(ks.revision(), 2, "a failed CAS that only reads must not bump the revision");
        match &resp[0] {
            TxnOpResponse::Range(r, _) => assert_eq!(r.kvs[0].value, b"new"),
            other => panic!("unexpected {other:?}"),
        }
        // Absent key: version == 0 holds (create-if-absent).
        let (ok, _, _) = ks
            .txn(
                &[TxnCompare {
                    range: KeyRange::single("fresh"),
                    target: CompareTarget::Version,
                    op: CompareOp::Equal,
                    value: vec![],
                    number: 0,
                }],
                vec![
                    TxnOp::Put {
                        key: b"fresh".to_vec(),
                        value: b"1".to_vec(),
                        prev_kv: false,
                        ignore_value: false,
                        ignore_lease: false,
                        lease: 0,
                    },
                    TxnOp::Put {
                        key: b"other".to_vec(),
                        value: b"2".to_vec(),
                        prev_kv: false,
                        ignore_value: false,
                        ignore_lease: false,
                        lease: 0,
                    },
                ],
                vec![],
            )
            .unwrap();
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
        let put = TxnOp::Put {
            key: b"d".to_vec(),
            value: vec![1; 5],
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
            lease: 0,
        };
        ks.txn(&[], vec![put], vec![]).unwrap();
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
        let back = reloaded(&ks, false);
        assert_eq!(back.revision(), 3);
        assert_eq!(back.size_bytes(), ks.size_bytes(), "the size survives a snapshot");
        assert_eq!(back.get(b"b"), ks.get(b"b"));
        assert_eq!(back.len(), 1);
    }

    fn put(key: &str, value: &str) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
            lease: 0,
        }
    }

    fn cmp(range: KeyRange, target: CompareTarget, op: CompareOp, number: i64) -> TxnCompare {
        TxnCompare { range, target, op, value: vec![], number }
    }

    #[test]
    fn nested_txns_share_one_revision_and_choose_their_own_branch() {
        let mut ks = KeySpace::default();
        ks.put(b"a".to_vec(), b"1".to_vec());
        let inner = TxnOp::Txn {
            compare: vec![cmp(KeyRange::single("a"), CompareTarget::Version, CompareOp::Equal, 5)],
            success: vec![put("yes", "1")],
            failure: vec![put("no", "1")],
        };
        let (ok, resp, evs) = ks.txn(&[], vec![put("b", "2"), inner], vec![]).unwrap();
        assert!(ok);
        assert_eq!(evs.len(), 2);
        assert_eq!(ks.revision(), 2);
        assert!(ks.get(b"no").is_some() && ks.get(b"yes").is_none());
        let inner = vec![TxnOpResponse::Put { prev_kv: None, revision: 2 }];
        assert_eq!(resp[1], TxnOpResponse::Txn { succeeded: false, responses: inner });
    }

    #[test]
    fn a_range_compare_holds_only_if_it_holds_for_every_key() {
        let mut ks = KeySpace::default();
        ks.put(b"p/1".to_vec(), b"x".to_vec());
        ks.put(b"p/2".to_vec(), b"x".to_vec());
        ks.put(b"p/2".to_vec(), b"y".to_vec());
        let version_is_1 = cmp(KeyRange::prefix("p/"), CompareTarget::Version, CompareOp::Equal, 1);
        assert!(!ks.txn(&[version_is_1], vec![], vec![]).unwrap().0, "p/2 has version 2");
        let below_3 = cmp(KeyRange::prefix("p/"), CompareTarget::Version, CompareOp::Less, 3);
        assert!(ks.txn(&[below_3], vec![], vec![]).unwrap().0);
        let empty = cmp(KeyRange::prefix("q/"), CompareTarget::CreateRevision, CompareOp::Equal, 0);
        assert!(ks.txn(&[empty], vec![], vec![]).unwrap().0, "an empty range compares as an absent key");
    }

    #[test]
    fn ignore_value_keeps_the_value_and_refuses_a_missing_key() {
        let mut ks = KeySpace::default();
        ks.put(b"k".to_vec(), b"v".to_vec());
        let keep = |key: &str| TxnOp::Put {
            key: key.into(),
            value: vec![],
            prev_kv: false,
            ignore_value: true,
            ignore_lease: false,
            lease: 0,
        };
        ks.txn(&[], vec![keep("k")], vec![]).unwrap();
        assert_eq!((ks.get(b"k").unwrap().value, ks.get(b"k").unwrap().version), (b"v".to_vec(), 2));
        assert_eq!(ks.txn(&[], vec![put("other", "1"), keep("gone")], vec![]), Err(TxnRefused::KeyNotFound));
        assert!(ks.get(b"other").is_none(), "a refused txn changes nothing");
        assert_eq!(ks.revision(), 2);
    }

    #[test]
    fn ranges_sort_and_filter_as_etcd() {
        let mut ks = KeySpace::default();
        for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("b", "9")] {
            ks.put(k.into(), v.into());
        }
        let all = KeyRange::from_wire(b"a".to_vec(), vec![0]);
        let keys = |r: RangeResult| r.kvs.into_iter().map(|kv| String::from_utf8(kv.key).unwrap()).collect::<Vec<_>>();
        let by_value = RangeQuery { range: all.clone(), sort_target: SortTarget::Value, ..Default::default() };
        assert_eq!(keys(ks.range(&by_value)), ["c", "a", "b"], "no order given: ascending");
        let desc = RangeQuery { sort_order: SortOrder::Descend, limit: 2, ..by_value };
        let r = ks.range(&desc);
        assert_eq!((r.more, r.count), (true, 3));
        assert_eq!(keys(r), ["b", "a"]);
        let recent = RangeQuery { range: all, min_mod_revision: 3, ..Default::default() };
        let r = ks.range(&recent);
        assert_eq!(r.count, 3, "count is the whole range, before the revision filters");
        assert_eq!(keys(r), ["b", "c"]);
    }

    #[test]
    fn adopting_etcd_revisions_moves_every_revision_up_once() {
        let mut ks = KeySpace::default();
        assert!(ks.adopt_etcd_revisions());
        assert_eq!(ks.revision(), 1, "a fresh store is at revision 1, as etcd's");
        assert_eq!(ks.put(b"a".to_vec(), b"1".to_vec()).kv.mod_revision, 2);
        let mut old = KeySpace::default();
        old.put(b"a".to_vec(), b"1".to_vec());
        old.put(b"a".to_vec(), b"2".to_vec());
        assert!(old.adopt_etcd_revisions());
        assert!(!old.adopt_etcd_revisions(), "only once");
        let kv = old.get(b"a").unwrap();
        assert_eq!((old.revision(), kv.create_revision, kv.mod_revision, kv.version), (3, 2, 3, 2));
        let back = reloaded(&old, old.etcd_revisions());
        assert!(back.etcd_revisions());
    }

    fn at(ks: &KeySpace, range: KeyRange, revision: i64) -> Result<Vec<(String, String)>, RevisionError> {
        let r = ks.range_at(&RangeQuery { range, ..Default::default() }, revision)?;
        Ok(r.kvs
            .into_iter()
            .map(|kv| (String::from_utf8(kv.key).unwrap(), String::from_utf8(kv.value).unwrap()))
            .collect())
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn past_revisions_read_what_was_there_then() {
        let mut ks = KeySpace::default();
        ks.adopt_etcd_revisions(); // 1
        ks.put(b"a".to_vec(), b"1".to_vec()); // 2
        ks.put(b"b".to_vec(), b"1".to_vec()); // 3
        ks.put(b"a".to_vec(), b"2".to_vec()); // 4
        ks.delete(&KeyRange::single("b")); // 5
        ks.put(b"b".to_vec(), b"again".to_vec()); // 6
        let all = || KeyRange::from_wire(b"a".to_vec(), vec![0]);
        assert_eq!(at(&ks, all(), 1).unwrap(), pairs(&[]));
        assert_eq!(at(&ks, all(), 2).unwrap(), pairs(&[("a", "1")]));
        assert_eq!(at(&ks, all(), 3).unwrap(), pairs(&[("a", "1"), ("b", "1")]));
        assert_eq!(at(&ks, all(), 4).unwrap(), pairs(&[("a", "2"), ("b", "1")]));
        assert_eq!(at(&ks, all(), 5).unwrap(), pairs(&[("a", "2")]), "deleted at 5");
        assert_eq!(at(&ks, all(), 6).unwrap(), pairs(&[("a", "2"), ("b", "again")]));
        assert_eq!(at(&ks, all(), 7), Err(RevisionError::Future));
        let b3 = ks.range_at(&RangeQuery { range: KeyRange::single("b"), ..Default::default() }, 3).unwrap();
        assert_eq!((b3.kvs[0].create_revision, b3.kvs[0].mod_revision, b3.kvs[0].version), (3, 3, 1));
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_can_see() {
        let mut ks = KeySpace::default();
        ks.adopt_etcd_revisions(); // 1
        for v in ["1", "2", "3"] {
            ks.put(b"a".to_vec(), v.into()); // 2, 3, 4
        }
        ks.put(b"gone".to_vec(), b"x".to_vec()); // 5
        ks.delete(&KeyRange::single("gone")); // 6
        ks.put(b"a".to_vec(), b"4".to_vec()); // 7
        let before = ks.history_versions();
        ks.compact(6).unwrap();
        let all = || KeyRange::from_wire(b"a".to_vec(), vec![0]);
        assert_eq!(at(&ks, all(), 5), Err(RevisionError::Compacted { compact_revision: 6 }));
        assert_eq!(at(&ks, all(), 6).unwrap(), pairs(&[("a", "3")]), "the compacted revision itself is readable");
        assert_eq!(at(&ks, all(), 7).unwrap(), pairs(&[("a", "4")]));
        assert_eq!(ks.history_versions(), 1, "only a=3 is still needed (from {before})");
        assert_eq!(ks.compact(6), Err(RevisionError::Compacted { compact_revision: 6 }));
        assert_eq!(ks.compact(8), Err(RevisionError::Future));
        ks.compact(7).unwrap();
        assert_eq!((ks.history_versions(), ks.history_bytes()), (0, 0));
    }

    #[test]
    fn history_survives_a_snapshot_and_hashes_alike() {
        let mut ks = KeySpace::default();
        ks.adopt_etcd_revisions();
        for i in 0..20u8 {
            ks.put(vec![b'k', i % 3], vec![i]);
        }
        ks.delete(&KeyRange::single(vec![b'k', 1]));
        ks.compact(10).unwrap();
        let (compact, history, subs) = ks.history_image();
        let mut back = reloaded(&ks, true);
        back.set_history(compact, history, subs).unwrap();
        let all = || KeyRange::from_wire(vec![0], vec![0]);
        for rev in 10..=ks.revision() {
            assert_eq!(at(&back, all(), rev), at(&ks, all(), rev), "revision {rev}");
            assert_eq!(back.hash_kv(rev), ks.hash_kv(rev));
        }
        assert_ne!(ks.hash_kv(15), ks.hash_kv(16), "the hash covers the versions up to its revision");
        assert_eq!(back.history_bytes(), ks.history_bytes());
    }

    fn leased_put(ks: &mut KeySpace, key: &str, value: &str, lease: i64) -> Result<Vec<Event>, TxnRefused> {
        let op = TxnOp::Put {
            key: key.into(),
            value: value.into(),
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
            lease,
        };
        ks.txn(&[], vec![op], vec![]).map(|(_, _, evs)| evs)
    }

    /// Every key attached to a lease is live with that lease, and every live leased key is in its lease's set.
    fn assert_lease_invariant(ks: &KeySpace) {
        for (id, l) in ks.leases().iter() {
            for k in l.keys.iter() {
                assert_eq!(ks.map.get(k.as_slice()).map(|m| m.lease), Some(id), "key {k:?} of lease {id}");
            }
        }
        for (rec, m) in ks.map.iter().filter(|(_, m)| m.lease != 0) {
            let k = rec.key();
            assert!(ks.lease(m.lease).is_some_and(|l| l.keys.contains(k)), "key {k:?} of lease {}", m.lease);
        }
    }

    #[test]
    fn leases_attach_detach_and_revoke_in_one_revision() {
        let mut ks = KeySpace::default();
        ks.adopt_etcd_revisions();
        assert_eq!(leased_put(&mut ks, "a", "1", 7), Err(TxnRefused::LeaseNotFound), "no such lease yet");
        let rev = ks.revision();
        ks.grant_lease(7, 10).unwrap();
        assert_eq!(ks.grant_lease(7, 10), Err(LeaseError::Exists));
        assert_eq!(ks.revision(), rev, "a grant writes no key");
        ks.grant_lease(8, 10).unwrap();
        for k in ["a", "b", "c"] {
            leased_put(&mut ks, k, "v", 7).unwrap();
        }
        assert_eq!(ks.get(b"a").unwrap().lease, 7);
        leased_put(&mut ks, "c", "v", 8).unwrap(); // moves to lease 8
        ks.put(b"b".to_vec(), b"plain".to_vec()); // a put without a lease detaches
        ks.put(b"z".to_vec(), b"other".to_vec());
        assert_lease_invariant(&ks);
        assert_eq!(ks.lease(7).unwrap().keys.iter().collect::<Vec<_>>(), vec![&b"a".to_vec()]);
        // ignore_lease keeps the lease.
        let keep = TxnOp::Put {
            key: b"c".to_vec(),
            value: b"w".to_vec(),
            prev_kv: false,
            ignore_value: false,
            ignore_lease: true,
            lease: 0,
        };
        ks.txn(&[], vec![keep], vec![]).unwrap();
        assert_eq!(ks.get(b"c").unwrap().lease, 8);
        // A compare on the lease sees it.
        let cmp = |n| TxnCompare {
            range: KeyRange::single("c"),
            target: CompareTarget::Lease,
            op: CompareOp::Equal,
            value: vec![],
            number: n,
        };
        assert!(ks.compare(&cmp(8)) && !ks.compare(&cmp(0)));

        leased_put(&mut ks, "d", "v", 8).unwrap();
        let before = ks.revision();
        let evs = ks.revoke_lease(8).unwrap();
        assert_eq!(ks.revision(), before + 1, "one revision for all of the lease's keys");
        assert!(evs.iter().all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == before + 1));
        let mut deleted: Vec<_> = evs.iter().map(|e| e.kv.key.clone()).collect();
        deleted.sort();
        assert_eq!(deleted, vec![b"c".to_vec(), b"d".to_vec()]);
        assert!(ks.get(b"c").is_none() && ks.get(b"a").is_some() && ks.get(b"z").is_some());
        assert_eq!(ks.revoke_lease(8), Err(LeaseError::NotFound));
        // A lease without keys is revoked without a revision.
        ks.grant_lease(9, 5).unwrap();
        let rev = ks.revision();
        assert_eq!(ks.revoke_lease(9), Ok(vec![]));
        assert_eq!(ks.revision(), rev);
        // Deleting a leased key detaches it.
        ks.delete(&KeyRange::single("a"));
        assert!(ks.lease(7).unwrap().keys.is_empty());
        assert_lease_invariant(&ks);
    }

    #[test]
    fn leases_survive_a_snapshot_with_their_keys_and_past_versions() {
        let mut ks = KeySpace::default();
        ks.adopt_etcd_revisions();
        ks.grant_lease(7, 30).unwrap();
        ks.grant_lease(9, 60).unwrap();
        leased_put(&mut ks, "a", "1", 7).unwrap();
        let leased_rev = ks.revision();
        ks.put(b"a".to_vec(), b"2".to_vec());
        leased_put(&mut ks, "b", "1", 9).unwrap();
        ks.checkpoint_leases(&[(9, Some(12_345)), (404, Some(1))]);
        let (compact, history, subs) = ks.history_image();
        let mut back = reloaded(&ks, true);
        back.set_history(compact, history, subs).unwrap();
        back.set_leases(ks.lease_image()).unwrap();
        assert_eq!(back.lease(9).unwrap().remaining_ms, Some(12_345));
        assert_eq!(back.lease(7).unwrap().ttl, 30);
        assert!(back.lease(7).unwrap().keys.is_empty(), "a was detached by the plain put");
        assert_eq!(back.get(b"b").unwrap().lease, 9);
        let past = back.range_at(&q(KeyRange::single("a")), leased_rev).unwrap();
        assert_eq!(past.kvs[0].lease, 7, "a past version keeps its lease");
        assert_lease_invariant(&back);
        // An image naming a lease that is not in the table is refused.
        let mut bad = ks.lease_image();
        bad.leases.retain(|l| l.id != 9);
        let (compact, history, subs) = ks.history_image();
        let mut back = reloaded(&ks, true);
        back.set_history(compact, history, subs).unwrap();
        let err = back.set_leases(bad).unwrap_err();
        assert!(err.contains("unknown lease 9"), "{err}");
    }
}
