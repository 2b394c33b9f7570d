//! openraft's `RaftStateMachine` over the in-memory MVCC key space, checkpointed by snapshots.
//!
//! Durability comes from the WAL: the state machine itself lives in memory and is rebuilt on start from the last
//! snapshot file plus the committed log entries after it (openraft re-applies them). Restart time is therefore
//! bounded by the snapshot interval, not by the length of the history.
//!
//! Invariants:
//! - `last_applied` only moves forward: entries are applied in increasing log order;
//! - the key space, `last_applied` and the membership change together under one write lock, and are snapshotted
//!   together, so a snapshot is always a consistent cut at `last_applied`;
//! - building a snapshot clones the persistent map under the lock (O(1)) and serializes it outside the lock, so
//!   applies are never blocked by a snapshot in progress.

// openraft's storage traits fix `StorageError` (large) as the error type of every storage call.
#![allow(clippy::result_large_err)]

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Instant,
};

use openraft::{storage::RaftStateMachine, EntryPayload, RaftSnapshotBuilder};
use parking_lot::{Mutex, RwLock};

use super::{
    decode, encode,
    snapshot::{DurableSnapshot, LoadedSnapshotImage, SnapshotDir, SnapshotImage},
    snapshot_data::SnapshotBytes,
    Command, CommandResponse, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::{
    error::Result,
    keyspace::{KeyRange, KeySpace},
    metrics::Metrics,
    watch::{HistoryLimits, WatchHub},
};

/// Everything the state machine holds; replaced wholesale when a snapshot is installed.
#[derive(Clone, Default)]
pub struct StateMachineData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub keyspace: KeySpace,
}

struct Shared {
    data: RwLock<StateMachineData>,
    snapshots: SnapshotDir,
    /// The latest snapshot: its metadata, and its bytes while something (a send to a follower) still holds them.
    /// They are not kept resident — they would cost as much memory again as the key space they encode; a send
    /// reads them from `snapshots/current.snap`, and concurrent sends share one copy.
    current: Mutex<Option<(SnapshotMeta, Weak<Vec<u8>>)>>,
    hub: WatchHub,
    seq: AtomicU64,
    metrics: Arc<Metrics>,
    durable: DurableSnapshot,
    quota: crate::quota::Quota,
    /// Mirrors `KeySpace::etcd_revisions`, readable without the lock (the write path checks it).
    etcd_revisions: AtomicBool,
    /// Fault injection (`/debug/stall-apply`): applies wait until then, as behind a stalled disk.
    stall_until: Mutex<Option<Instant>>,
}

/// Cheap to clone; every clone is the same state machine.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

fn io_err(e: impl std::fmt::Display) -> StorageError {
    openraft::StorageIOError::read_state_machine(openraft::AnyError::error(e.to_string())).into()
}

impl StateMachineStore {
    /// Opens the state machine from the snapshot in `snapshots` (if any).
    pub fn open(
        snapshots: SnapshotDir,
        watch_history: impl Into<HistoryLimits>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let started = Instant::now();
        let (data, current) = match snapshots.load()? {
            Some(loaded) => {
                let (meta, bytes) = (&loaded.meta, loaded.data());
                let corrupt = |reason: String| crate::error::Error::CorruptSnapshot {
                    path: snapshots.dir().join("current.snap"),
                    reason,
                };
                let data = decode_snapshot(bytes).map_err(corrupt)?;
                if data.last_applied != meta.last_log_id {
                    return Err(corrupt("metadata and content disagree on the last applied log id".into()));
                }
                tracing::info!(
                    snapshot = %meta.snapshot_id,
                    bytes = bytes.len(),
                    keys = data.keyspace.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "loaded the snapshot"
                );
                (data, Some((meta.clone(), Weak::new())))
            }
            // A member restored from a backup starts from its state, before its (empty) log.
            None => match std::fs::read(snapshots.dir().join(crate::backup::RESTORED_STATE)) {
                Ok(bytes) => {
                    let path = snapshots.dir().join(crate::backup::RESTORED_STATE);
                    let mut data = decode_snapshot(&bytes)
                        .map_err(|reason| crate::error::Error::CorruptSnapshot { path: path.clone(), reason })?;
                    data.last_applied = None;
                    data.membership = StoredMembership::default();
                    tracing::info!(
                        revision = data.keyspace.revision(),
                        keys = data.keyspace.len(),
                        "starting from a restored backup"
                    );
                    (data, None)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (StateMachineData::default(), None),
                Err(e) => return Err(crate::error::Error::io(snapshots.dir(), "read the restored state", e)),
            },
        };
        let hub = WatchHub::new(data.keyspace.revision(), watch_history.into());
        let etcd_revisions = AtomicBool::new(data.keyspace.etcd_revisions());
        let durable = DurableSnapshot::new(data.last_applied.map_or(0, |l| l.index));
        let store = Self {
            shared: Arc::new(Shared {
                data: RwLock::new(data),
                snapshots,
                current: Mutex::new(current),
                hub,
                seq: AtomicU64::new(0),
                metrics,
                durable,
                quota: Default::default(),
                etcd_revisions,
                stall_until: Mutex::new(None),
            }),
        };
        // What the hub's bounded history no longer holds, a watcher reads from the key space's MVCC history.
        let weak = Arc::downgrade(&store.shared);
        store.shared.hub.set_replay(Box::new(move |range, from, to, max_revisions, max_bytes| {
            let Some(shared) = weak.upgrade() else { return Err(i64::MAX) };
            let d = shared.data.read();
            d.keyspace.replay(range, from, to, max_revisions, max_bytes)
        }));
        Ok(store)
    }

    /// Fault injection: applies wait for `d` from now (what a stalled disk does to an apply loop).
    pub fn stall_apply(&self, d: std::time::Duration) {
        *self.shared.stall_until.lock() = Some(Instant::now() + d);
    }

    /// Whether the key space numbers revisions as etcd does (see [`Command::EtcdRevisions`]).
    pub fn etcd_revisions(&self) -> bool {
        self.shared.etcd_revisions.load(Ordering::Acquire)
    }

    /// Runs `f` against the current key space (a serializable, local read).
    pub fn read<T>(&self, f: impl FnOnce(&KeySpace) -> T) -> T {
        f(&self.shared.data.read().keyspace)
    }

    /// The last applied log id and the key space revision and size, read together.
    pub fn applied(&self) -> (Option<LogId>, i64, usize) {
        let d = self.shared.data.read();
        (d.last_applied, d.keyspace.revision(), d.keyspace.len())
    }

    /// The storage quota (`--quota-backend-bytes`) and its alarm.
    pub fn quota(&self) -> &crate::quota::Quota {
        &self.shared.quota
    }

    /// The key space's size as the quota counts it.
    pub fn size_bytes(&self) -> u64 {
        self.shared.data.read().keyspace.size_bytes()
    }

    /// Refuses a write that adds data once the key space is at its quota (see [`crate::quota`]).
    pub fn check_quota(&self, cmd: &Command) -> Result<()> {
        self.shared.quota.check(self.size_bytes(), cmd)
    }

    /// The active alarms (etcd's names): `NOSPACE` when over the quota.
    pub fn alarms(&self) -> Vec<String> {
        self.shared.quota.alarms(self.size_bytes())
    }

    pub fn membership(&self) -> StoredMembership {
        self.shared.data.read().membership.clone()
    }

    /// The gate the log store uses to never purge past a snapshot that is not yet on disk.
    pub fn durable_snapshot(&self) -> DurableSnapshot {
        self.shared.durable.clone()
    }

    /// Replaces the current snapshot unless a newer one is already current.
    fn set_current(&self, meta: &SnapshotMeta, bytes: Arc<Vec<u8>>) {
        let mut cur = self.shared.current.lock();
        if cur.as_ref().is_some_and(|(m, _)| m.last_log_id > meta.last_log_id) {
            return;
        }
        *cur = Some((meta.clone(), Arc::downgrade(&bytes)));
        self.shared.durable.advance(meta.last_log_id.map_or(0, |l| l.index));
        self.shared.metrics.snapshot_index.set(meta.last_log_id.map_or(0, |l| l.index) as i64);
    }

    pub fn watch_hub(&self) -> &WatchHub {
        &self.shared.hub
    }

    /// Metadata of the current snapshot, if any.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.shared.current.lock().as_ref().map(|(m, _)| m.clone())
    }

    fn apply_command(ks: &mut KeySpace, hub: &WatchHub, cmd: Command) -> CommandResponse {
        match cmd {
            Command::Put { key, value, prev_kv } => {
                let ev = ks.put(key, value);
                let prev = if prev_kv { ev.prev_kv.clone() } else { None };
                hub.publish(ks.revision(), vec![ev]);
                CommandResponse::Put { revision: ks.revision(), prev_kv: prev }
            }
            Command::Delete { key, range_end, prev_kv } => {
                let evs = ks.delete(&KeyRange { start: key, end: range_end });
                let deleted = evs.len() as i64;
                let prev_kvs = if prev_kv { evs.iter().filter_map(|e| e.prev_kv.clone()).collect() } else { vec![] };
                hub.publish(ks.revision(), evs);
                CommandResponse::Delete { revision: ks.revision(), deleted, prev_kvs }
            }
            Command::Txn { compare, success, failure } => match ks.txn(&compare, success, failure) {
                Ok((succeeded, responses, evs)) => {
                    hub.publish(ks.revision(), evs);
                    CommandResponse::Txn { revision: ks.revision(), succeeded, responses }
                }
                Err(reason) => CommandResponse::TxnRefused { revision: ks.revision(), reason },
            },
            Command::TxnV1 { compare, success, failure } => Self::apply_command(
                ks,
                hub,
                Command::Txn {
                    compare: compare.into_iter().map(Into::into).collect(),
                    success: success.into_iter().map(Into::into).collect(),
                    failure: failure.into_iter().map(Into::into).collect(),
                },
            ),
            Command::Compact { revision } => {
                let result = ks.compact(revision);
                if result.is_ok() {
                    tracing::debug!(revision, "compacted the MVCC history");
                }
                CommandResponse::Compact { revision: ks.revision(), result }
            }
            Command::EtcdRevisions => {
                let before = ks.revision();
                if ks.adopt_etcd_revisions() {
                    if before == 0 {
                        // A fresh store: revision 1 has no events, so watching from it stays possible.
                        hub.pass(ks.revision());
                    } else {
                        // Every kept event carries an old number: watchers resume from the new ones.
                        hub.reset(ks.revision());
                    }
                    tracing::info!(revision = ks.revision(), "adopted etcd's revision numbering");
                }
                CommandResponse::Empty { revision: ks.revision() }
            }
            Command::LeaseGrant { id, ttl } => {
                CommandResponse::Lease { revision: ks.revision(), result: ks.grant_lease(id, ttl) }
            }
            Command::LeaseRevoke { id } => {
                let result = ks.revoke_lease(id).map(|evs| {
                    if !evs.is_empty() {
                        hub.publish(ks.revision(), evs);
                    }
                });
                CommandResponse::Lease { revision: ks.revision(), result }
            }
            Command::LeaseCheckpoint { checkpoints } => {
                ks.checkpoint_leases(&checkpoints);
                CommandResponse::Lease { revision: ks.revision(), result: Ok(()) }
            }
            Command::Batch(cmds) => {
                CommandResponse::Batch(cmds.into_iter().map(|c| Self::apply_command(ks, hub, c)).collect())
            }
        }
    }
}

/// What a snapshot holds beyond [`SnapshotImage`], appended after it (so a snapshot of an older raftkv, which
/// ends after the image, still loads: everything here then has its old meaning).
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotExtension {
    etcd_revisions: bool,
    /// The MVCC history (`KeySpace::history_image`).
    compact_revision: i64,
    history: crate::keyspace::HistoryImage,
    /// Sub-revisions of current versions that were not the first write of their revision.
    current_subs: Vec<(Vec<u8>, u32)>,
}

/// Encodes a snapshot: the image, then its extension, then the leases (a snapshot from before leases ends after
/// the extension: it had none).
fn encode_snapshot(image: &SnapshotImage, keyspace: &KeySpace) -> Vec<u8> {
    let mut bytes = encode(image);
    let (compact_revision, history, current_subs) = keyspace.history_image();
    let ext = SnapshotExtension { etcd_revisions: keyspace.etcd_revisions(), compact_revision, history, current_subs };
    bytes.extend(encode(&ext));
    bytes.extend(encode(&keyspace.lease_image()));
    bytes
}

/// Checks that `state` (a snapshot's encoding, as a backup carries it) decodes; returns its revision and key count.
pub fn check_restorable(state: &[u8]) -> Result<(i64, usize), String> {
    let data = decode_snapshot(state)?;
    Ok((data.keyspace.revision(), data.keyspace.len()))
}

impl StateMachineStore {
    /// A consistent encoding of the whole state now (for a backup): cloned under the lock in O(1), encoded
    /// outside it.
    pub async fn backup_state(&self) -> Result<Vec<u8>> {
        let data = self.shared.data.read().clone();
        tokio::task::spawn_blocking(move || {
            let image = SnapshotImage {
                last_applied: data.last_applied,
                membership: data.membership.clone(),
                keyspace: data.keyspace.to_image(),
            };
            encode_snapshot(&image, &data.keyspace)
        })
        .await
        .map_err(|e| crate::error::Error::Internal(format!("encoding a backup: {e}")))
    }
}

fn decode_snapshot(bytes: &[u8]) -> Result<StateMachineData, String> {
    let (image, rest): (LoadedSnapshotImage, &[u8]) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
    let keyspace = if rest.is_empty() {
        // From an older raftkv: no history (nothing before the image can be read) and its own numbering.
        KeySpace::from_image(image.keyspace, false)?
    } else {
        let (ext, rest): (SnapshotExtension, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|e| format!("snapshot extension: {e}"))?;
        let mut ks = KeySpace::from_image(image.keyspace, ext.etcd_revisions)?;
        ks.set_history(ext.compact_revision, ext.history, ext.current_subs)?;
        if !rest.is_empty() {
            let leases = decode::<crate::keyspace::LeaseSetImage>(rest).map_err(|e| format!("snapshot leases: {e}"))?;
            ks.set_leases(leases)?;
        }
        ks
    };
    Ok(StateMachineData { last_applied: image.last_applied, membership: image.membership, keyspace })
}

impl StateMachineStore {
    /// Replaces the state machine with a snapshot received from the leader, after making it durable.
    async fn install(&self, meta: &SnapshotMeta, bytes: Arc<Vec<u8>>) -> Result<(), StorageError> {
        let bad = |e: String| -> StorageError {
            openraft::StorageIOError::read_snapshot(Some(meta.signature()), openraft::AnyError::error(e)).into()
        };
        let data = decode_snapshot(&bytes).map_err(bad)?;
        if data.last_applied != meta.last_log_id {
            return Err(bad(format!(
                "snapshot content is at {:?} but its metadata says {:?}",
                data.last_applied, meta.last_log_id
            )));
        }
        let shared = self.shared.clone();
        let meta2 = meta.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            shared.snapshots.save(&meta2, &bytes).map(|_| bytes).map_err(|e| {
                openraft::StorageIOError::write_snapshot(
                    Some(meta2.signature()),
                    openraft::AnyError::error(e.to_string()),
                )
            })
        })
        .await
        .map_err(io_err)??;
        let revision = data.keyspace.revision();
        let etcd_revisions = data.keyspace.etcd_revisions();
        *self.shared.data.write() = data;
        self.shared.etcd_revisions.store(etcd_revisions, Ordering::Release);
        self.shared.hub.reset(revision);
        self.set_current(meta, bytes);
        tracing::info!(snapshot = %meta.snapshot_id, revision, "installed snapshot from leader");
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // O(1): the key space is a persistent map.
        let data = self.shared.data.read().clone();
        let last_applied = data.last_applied;
        let membership = data.membership.clone();
        let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
            None => format!("0-0-{seq}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership.clone(), snapshot_id };
        let shared = self.shared.clone();
        let meta2 = meta.clone();
        let bytes = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, bool), StorageError> {
            let image = SnapshotImage { last_applied, membership, keyspace: data.keyspace.to_image() };
            let bytes = encode_snapshot(&image, &data.keyspace);
            let saved = shared.snapshots.save(&meta2, &bytes).map_err(|e| {
                openraft::StorageIOError::write_snapshot(
                    Some(meta2.signature()),
                    openraft::AnyError::error(e.to_string()),
                )
            })?;
            Ok((bytes, saved))
        })
        .await
        .map_err(io_err)??;
        let (bytes, saved) = bytes;
        let bytes = Arc::new(bytes);
        if saved {
            self.set_current(&meta, bytes.clone());
            tracing::info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "built snapshot");
            // The map was serialized into one large buffer that is freed once the followers have it; glibc keeps
            // freed heap pages mapped, which after a long write load is most of a node's RSS. Give them back.
            // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            unsafe {
                libc::malloc_trim(0);
            }
        } else {
            tracing::info!(snapshot = %meta.snapshot_id, "dropped a snapshot build overtaken by a newer snapshot");
        }
        Ok(Snapshot { meta, snapshot: Box::new(SnapshotBytes::shared(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let d = self.shared.data.read();
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let stall = self.shared.stall_until.lock().take();
        if let Some(until) = stall {
            tokio::time::sleep_until(until.into()).await;
        }
        let start = Instant::now();
        let mut out = Vec::new();
        let mut d = self.shared.data.write();
        let hub = &self.shared.hub;
        for entry in entries {
            if let Some(prev) = d.last_applied {
                assert!(
                    entry.log_id.index > prev.index,
                    "state machine must apply entries in log order: got {} after {}",
                    entry.log_id,
                    prev
                );
            }
            d.last_applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => CommandResponse::Empty { revision: d.keyspace.revision() },
                EntryPayload::Normal(cmd) => Self::apply_command(&mut d.keyspace, hub, cmd),
                EntryPayload::Membership(m) => {
                    d.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResponse::Empty { revision: d.keyspace.revision() }
                }
            };
            out.push(resp);
        }
        self.shared.etcd_revisions.store(d.keyspace.etcd_revisions(), Ordering::Release);
        drop(d);
        self.shared.metrics.apply_seconds.observe(start.elapsed().as_secs_f64());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotBytes>, StorageError> {
        self.shared.durable.set_receiving(true);
        Ok(Box::new(SnapshotBytes::empty()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotBytes>,
    ) -> Result<(), StorageError> {
        let res = self.install(meta, snapshot.into_shared()).await;
        if let Err(e) = &res {
            // Keep the purge gate closed: openraft has already queued a purge up to this snapshot.
            tracing::error!(snapshot = %meta.snapshot_id, "snapshot install failed: {e}");
            self.shared.durable.set_failed();
        }
        self.shared.durable.set_receiving(false);
        res
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let held = self.shared.current.lock().as_ref().map(|(meta, bytes)| (meta.clone(), bytes.upgrade()));
        let meta = match held {
            None => return Ok(None),
            // Shared, not copied: concurrent sends read one copy.
            Some((meta, Some(bytes))) => {
                return Ok(Some(Snapshot { meta, snapshot: Box::new(SnapshotBytes::shared(bytes)) }))
            }
            Some((meta, None)) => meta,
        };
        let snapshots = self.shared.snapshots.clone();
        let loaded = tokio::task::spawn_blocking(move || snapshots.load()).await.map_err(io_err)?.map_err(|e| {
            openraft::StorageIOError::read_snapshot(Some(meta.signature()), openraft::AnyError::error(e.to_string()))
        })?;
        // The file holds the newest durable snapshot: the current one, or one saved since.
        let Some(loaded) = loaded else { return Ok(None) };
        let (meta, bytes) = (loaded.meta.clone(), Arc::new(loaded.data().to_vec()));
        self.set_current(&meta, bytes.clone());
        Ok(Some(Snapshot { meta, snapshot: Box::new(SnapshotBytes::shared(bytes)) }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::storage::RaftLogStorage;

    use super::*;
    use crate::{keyspace::KeySpaceImage, raft::log_store::LogStore, wal::Wal};

    fn log_id(index: u64) -> LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
    }

    /// A follower with log 1..=10 and no snapshot receives a snapshot up to 8 whose install fails. openraft has
    /// already queued a purge up to 8: it must fail rather than remove entries the snapshot on disk does not
    /// cover (item 9 / review finding 8).
    #[tokio::test]
    async fn failed_snapshot_install_keeps_the_purge_gate_closed() {
        for case in ["save fails (snapshot directory gone, as on EIO)", "snapshot bytes are garbage"] {
            let tmp = tempfile::tempdir().unwrap();
            let (wal, _) = Wal::open(crate::wal::WalOptions::new(tmp.path().join("wal"))).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            wal.append((1..=10).map(|i| (i, vec![i as u8])).collect(), Box::new(move |r| tx.send(r).unwrap())).unwrap();
            rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
            let snap_dir = tmp.path().join("snapshots");
            let mut sm =
                StateMachineStore::open(SnapshotDir::open(&snap_dir).unwrap(), 100, Arc::new(Metrics::new())).unwrap();
            let mut log = LogStore::new(wal.clone(), sm.durable_snapshot());

            let meta = SnapshotMeta {
                last_log_id: Some(log_id(8)),
                last_membership: StoredMembership::default(),
                snapshot_id: "1-8-0".into(),
            };
            let image = SnapshotImage {
                last_applied: Some(log_id(8)),
                membership: StoredMembership::default(),
                keyspace: KeySpaceImage { revision: 0, entries: vec![] },
            };
            let bytes = if case.starts_with("save fails") {
                std::fs::remove_dir_all(&snap_dir).unwrap();
                encode(&image)
            } else {
                vec![0xff; 7]
            };
            let _ = sm.begin_receiving_snapshot().await.unwrap();
            let res = sm.install_snapshot(&meta, Box::new(SnapshotBytes::shared(Arc::new(bytes)))).await;
            assert!(res.is_err(), "{case}: the install must fail");

            let purge = tokio::time::timeout(Duration::from_secs(5), log.purge(log_id(8))).await;
            let purge = purge.unwrap_or_else(|_| panic!("{case}: purge must fail, not hang"));
            let err = purge.expect_err(&format!("{case}: purging past the durable snapshot must fail"));
            assert!(err.to_string().contains("snapshot install failed"), "{case}: {err}");
            assert_eq!(wal.purged(), None, "{case}: nothing may be purged");
            assert_eq!((wal.first_index(), wal.last_index()), (Some(1), Some(10)), "{case}: the log is intact");
        }
    }
}
