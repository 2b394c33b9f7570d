//! A node's data directory: ownership, locking, and identity.
//!
//! ```text
//! DIR/LOCK          flock()ed while a node runs: two processes never share a directory
//! DIR/meta.json     {"node_id": 1, "cluster_id": "…", "format": 1} — which node and cluster the data belongs to
//! DIR/wal/          the write-ahead log (see `wal`)
//! DIR/snapshots/    the latest state machine snapshot (see `raft::snapshot`)
//! ```
//!
//! Opening refuses, with a message naming the problem, a directory that belongs to another node id, a non-empty
//! directory that is not a raftkv directory, a path that is a file, or a directory another process holds.

use std::{
    fs::{self, File},
    os::unix::io::AsRawFd,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    raft::NodeId,
};

const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirMeta {
    pub node_id: NodeId,
    /// Hex; "0" until known.
    pub cluster_id: String,
    pub format: u32,
}

/// An open, locked data directory. The lock is released on drop.
pub struct DataDir {
    path: PathBuf,
    meta: DirMeta,
    _lock: File,
}

impl DataDir {
    /// Opens (creating if needed) the data directory of node `id`.
    pub fn open(path: &Path, id: NodeId) -> Result<Self> {
        if path.exists() && !path.is_dir() {
            return Err(Error::Config(format!("data directory {} is a file, not a directory", path.display())));
        }
        fs::create_dir_all(path).map_err(|e| Error::io(path, "create data directory", e))?;
        let lock_path = path.join("LOCK");
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, "create lock file", e))?;
        // SAFETY: flock on a valid, owned file descriptor.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::Config(format!(
                "data directory {} is in use by another raftkv process",
                path.display()
            )));
        }
        let meta_path = path.join("meta.json");
        let meta = match fs::read(&meta_path) {
            Ok(bytes) => {
                let meta: DirMeta = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Config(format!("{} is not a raftkv metadata file: {e}", meta_path.display()))
                })?;
                if meta.node_id != id {
                    return Err(Error::Config(format!(
                        "data directory {} belongs to node {}, not node {id}; pass the right --data-dir or --id",
                        path.display(),
                        meta.node_id
                    )));
                }
                if meta.format != FORMAT {
                    return Err(Error::Config(format!(
                        "data directory {} has format {}, this raftkv reads format {FORMAT}",
                        path.display(),
                        meta.format
                    )));
                }
                meta
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let foreign: Vec<String> = fs::read_dir(path)
                    .map_err(|e| Error::io(path, "list data directory", e))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // A crash during the very first start can leave these; they are ours.
                    .filter(|n| n != "LOCK" && n != "meta.json.tmp" && n != "wal-synced-marker")
                    .collect();
                if !foreign.is_empty() {
                    return Err(Error::Config(format!(
                        "data directory {} is not empty and is not a raftkv data directory (found {}); \
                         use an empty or new directory",
                        path.display(),
                        foreign.join(", ")
                    )));
                }
                let meta = DirMeta { node_id: id, cluster_id: "0".into(), format: FORMAT };
                write_meta(path, &meta)?;
                meta
            }
            Err(e) => return Err(Error::io(&meta_path, "read", e)),
        };
        Ok(Self { path: path.to_path_buf(), meta, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.path.join("wal")
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.path.join("snapshots")
    }

    pub fn cluster_id(&self) -> u64 {
        u64::from_str_radix(&self.meta.cluster_id, 16).unwrap_or(0)
    }

    /// Records the cluster this directory belongs to (once; later calls with another id are refused).
    pub fn set_cluster_id(&mut self, id: u64) -> Result<()> {
        let cur = self.cluster_id();
        if cur == id {
            return Ok(());
        }
        if cur != 0 {
            return Err(Error::Config(format!(
                "data directory {} belongs to cluster {cur:016x}, not {id:016x}",
                self.path.display()
            )));
        }
        self.meta.cluster_id = format!("{id:016x}");
        write_meta(&self.path, &self.meta)
    }
}

/// Writes meta.json atomically (temp file, fsync, rename, fsync dir).
pub fn write_meta(dir: &Path, meta: &DirMeta) -> Result<()> {
    let tmp = dir.join("meta.json.tmp");
    let path = dir.join("meta.json");
    let run = || -> std::io::Result<()> {
        fs::write(&tmp, serde_json::to_vec_pretty(meta).expect("meta serializes"))?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    run().map_err(|e| Error::io(&path, "write", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_foreign_and_other_nodes_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("n1");
        {
            let mut dir = DataDir::open(&d, 1).unwrap();
            dir.set_cluster_id(0xabc).unwrap();
            // Locked while open.
            let err = DataDir::open(&d, 1).err().unwrap().to_string();
            assert!(err.contains("in use by another raftkv process"), "{err}");
            assert!(dir.set_cluster_id(0xdef).is_err());
        }
        let dir = DataDir::open(&d, 1).unwrap();
        assert_eq!(dir.cluster_id(), 0xabc);
        drop(dir);
        let err = DataDir::open(&d, 2).err().unwrap().to_string();
        assert!(err.contains("belongs to node 1, not node 2"), "{err}");

        let foreign = tmp.path().join("foreign");
        fs::create_dir_all(&foreign).unwrap();
        fs::write(foreign.join("photo.jpg"), b"x").unwrap();
        let err = DataDir::open(&foreign, 1).err().unwrap().to_string();
        assert!(err.contains("not a raftkv data directory (found photo.jpg)"), "{err}");

        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(DataDir::open(&file, 1).err().unwrap().to_string().contains("is a file"));
    }
}
