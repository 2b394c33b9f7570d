//! Snapshot files: the state machine's durable checkpoint.
//!
//! A snapshot is the whole key space plus the Raft metadata it reflects (last applied log id, membership), as one
//! file `snapshots/current.snap`:
//!
//! ```text
//! "RKVSNAP1" | crc32c(u32 LE, over everything after it) | meta length (u32 LE) | meta (postcard) | data
//! ```
//!
//! `data` is exactly the byte string openraft ships to lagging followers (a postcard [`SnapshotImage`]), so a
//! received snapshot is persisted verbatim. Files are written to a temporary name, fsynced, renamed over
//! `current.snap` and the directory fsynced: a crash leaves either the old or the new snapshot, never a torn one.
//! Because the applied log id and membership live in the same file as the data, they are persisted atomically
//! with it. A snapshot whose checksum does not match refuses start-up. Saving and loading make no copy of the data
//! (the CRC is computed over the pieces as they are written; a load maps the file and decodes from the mapping),
//! so an install holds the received bytes plus the decoded key space, not a third copy for the file.
//!
//! Invariants:
//! - saves are serialized, and a snapshot never replaces a newer one: a slow background build that finishes after
//!   a newer snapshot was installed from the leader is dropped, not written over it;
//! - the WAL is never purged past the durable snapshot while a snapshot from the leader is being installed
//!   ([`DurableSnapshot`]): openraft issues the purge without waiting for the install, and a crash in between
//!   would otherwise leave a log that starts after the last snapshot on disk;
//! - a snapshot install that FAILED (save error such as ENOSPC or EIO, or a bad snapshot) keeps the gate closed
//!   for good: a purge past the durable snapshot then fails instead of proceeding (Raft is going down with the
//!   install's error anyway), so a restart finds a log that still continues the snapshot on disk.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{decode, encode, LogId, SnapshotMeta, StoredMembership};
use crate::{
    error::{Error, Result},
    keyspace::KeySpaceImage,
};

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const FILE: &str = "current.snap";

/// The state machine's content, as serialized into a snapshot.
#[derive(Serialize, Deserialize)]
pub struct SnapshotImage {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub keyspace: KeySpaceImage,
}

/// [`SnapshotImage`] as a load decodes it: the key space built as it is decoded (see
/// [`crate::keyspace::LoadedKeySpace`]).
#[derive(Deserialize)]
pub struct LoadedSnapshotImage {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub keyspace: crate::keyspace::LoadedKeySpace,
}

/// The directory holding the current snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
    /// The log id of the snapshot on disk; the lock also serializes saves.
    saved: Arc<Mutex<Option<LogId>>>,
}

impl SnapshotDir {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create snapshot directory", e))?;
        // A crash mid-save leaves only a temporary file; it was never the snapshot.
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(Self { dir, saved: Arc::new(Mutex::new(None)) })
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Writes `meta` + `data` durably, replacing the previous snapshot. Returns false (and writes nothing) if the
    /// snapshot on disk is already newer.
    pub fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<bool> {
        let mut saved = self.saved.lock();
        if *saved > meta.last_log_id {
            return Ok(false);
        }
        // Header, metadata and data are written as they are, with the CRC computed over the pieces: no copy of
        // the (possibly large) data is made.
        let meta_bytes = encode(meta);
        let meta_len = (meta_bytes.len() as u32).to_le_bytes();
        let crc = [meta_len.as_slice(), &meta_bytes, data].iter().fold(0, |crc, part| crc32c::crc32c_append(crc, part));
        let tmp = self.dir.join(format!("{FILE}.{}.tmp", meta.snapshot_id));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&crc.to_le_bytes())?;
            f.write_all(&meta_len)?;
            f.write_all(&meta_bytes)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path())?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| Error::io(&self.path(), "write snapshot", e))?;
        *saved = meta.last_log_id;
        Ok(true)
    }

    /// Loads the current snapshot, if any: the file is mapped read-only and checked in place, so its data is
    /// decoded straight from the page cache. Reading a snapshot of 150 MB into a buffer cost a restart more than a
    /// fifth of its time (fresh pages zeroed and faulted in, the file copied into them, the data moved to the
    /// front).
    pub fn load(&self) -> Result<Option<LoadedSnapshot>> {
        let path = self.path();
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, "read snapshot", e)),
        };
        let corrupt = |reason: &str| Error::CorruptSnapshot { path: path.clone(), reason: reason.to_string() };
        let len = file.metadata().map_err(|e| Error::io(&path, "read snapshot", e))?.len();
        if len < 16 {
            return Err(corrupt("bad header"));
        }
        // SAFETY: the mapping is only read, and a snapshot file is never written in place: a save writes a new
        // file and renames it over this one, which leaves this inode and its mapping intact. Only another process
        // truncating the file under us could break the mapping (SIGBUS), and nothing but this node writes its
        // data directory.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
            .map_err(|e| Error::io(&path, "map snapshot", e))?;
        if &map[..8] != MAGIC {
            return Err(corrupt("bad header"));
        }
        let crc = u32::from_le_bytes(map[8..12].try_into().expect("4 bytes"));
        let body = &map[12..];
        if crc32c::crc32c(body) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let meta_len = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
        if 4 + meta_len > body.len() {
            return Err(corrupt("metadata length out of bounds"));
        }
        let meta: SnapshotMeta = decode(&body[4..4 + meta_len]).map_err(|e| corrupt(&format!("metadata: {e}")))?;
        *self.saved.lock() = meta.last_log_id;
        Ok(Some(LoadedSnapshot { meta, data_start: 12 + 4 + meta_len, map }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The snapshot on disk, checked: its metadata, and its data read in place from the mapped file.
#[derive(Debug)]
pub struct LoadedSnapshot {
    pub meta: SnapshotMeta,
    map: memmap2::Mmap,
    data_start: usize,
}

impl LoadedSnapshot {
    /// The snapshot's data: what openraft ships to followers, a postcard [`SnapshotImage`].
    pub fn data(&self) -> &[u8] {
        &self.map[self.data_start..]
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct GateState {
    /// Log index covered by the snapshot on disk (0 = none).
    durable: u64,
    /// A snapshot from the leader is being received or installed.
    receiving: bool,
    /// An install failed: never purge past `durable` again in this process.
    failed: bool,
}

/// Shared by the state machine (which makes snapshots durable) and the log store (which must not purge past them
/// while an install is under way).
#[derive(Clone)]
pub struct DurableSnapshot {
    tx: Arc<watch::Sender<GateState>>,
}

impl DurableSnapshot {
    pub fn new(durable_index: u64) -> Self {
        let (tx, _) = watch::channel(GateState { durable: durable_index, receiving: false, failed: false });
        Self { tx: Arc::new(tx) }
    }

    /// A snapshot covering `index` is on disk.
    pub fn advance(&self, index: u64) {
        self.tx.send_modify(|s| s.durable = s.durable.max(index));
    }

    pub fn set_receiving(&self, receiving: bool) {
        self.tx.send_modify(|s| s.receiving = receiving);
    }

    /// A snapshot install failed: the gate stays closed above the durable snapshot.
    pub fn set_failed(&self) {
        self.tx.send_modify(|s| s.failed = true);
    }

    pub fn durable_index(&self) -> u64 {
        self.tx.borrow().durable
    }

    /// Waits, while a snapshot install is under way, until a snapshot covering `index` is on disk. Fails, without
    /// waiting, if an install failed and the snapshot on disk does not cover `index`: purging that far would leave
    /// a log that starts after the last durable snapshot.
    pub async fn wait_covers(&self, index: u64) -> std::result::Result<(), String> {
        let mut rx = self.tx.subscribe();
        let state = match rx.wait_for(|s| s.failed || !s.receiving || s.durable >= index).await {
            Ok(s) => *s,
            Err(_) => *self.tx.borrow(),
        };
        if state.durable >= index || !state.failed {
            return Ok(());
        }
        Err(format!(
            "not purging the log up to {index}: a snapshot install failed and the snapshot on disk covers only up \
             to {}",
            state.durable
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip_and_detect_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path()).unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(openraft::CommittedLeaderId::new(2, 1), 7)),
            last_membership: StoredMembership::default(),
            snapshot_id: "2-7-0".into(),
        };
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert!(dir.save(&meta, &data).unwrap());
        let got = SnapshotDir::open(tmp.path()).unwrap().load().unwrap().unwrap();
        assert_eq!((&got.meta, got.data()), (&meta, data.as_slice()));

        let path = tmp.path().join(FILE);
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err = SnapshotDir::open(tmp.path()).unwrap().load().unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");

        // Too short to hold a header (an empty file cannot even be mapped), or not a snapshot at all.
        for bytes in [&b""[..], b"RKVSNAP1", b"not a raftkv snapshot file"] {
            fs::write(&path, bytes).unwrap();
            let err = SnapshotDir::open(tmp.path()).unwrap().load().unwrap_err().to_string();
            assert!(err.contains("bad header"), "{bytes:?}: {err}");
        }
    }
}
