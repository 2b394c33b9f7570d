//! Backups: a consistent copy of a node's whole state (key space, MVCC history, revision), streamed by etcd's
//! `Maintenance/Snapshot`, saved by `raftkv snapshot save`, and turned into the data directories of a new cluster by
//! `raftkv snapshot restore` (etcd's `etcdutl snapshot restore` procedure).
//!
//! ```text
//! backup file = MAGIC | state length (u64 LE) | state (the state machine's snapshot encoding) | zeros up to a
//!               multiple of 512 bytes | SHA-256 of everything before it
//! ```
//!
//! The padding and the trailing SHA-256 are etcd's shape (a page-aligned database, then its digest), which
//! `etcdctl snapshot save` checks before it keeps a file; so etcdctl saves raftkv backups too.
//!
//! A restored member starts with that state applied *before* its log: `DIR/snapshots/restored.state`, read by the
//! state machine only while it has no snapshot of its own (openraft sees an empty log and no snapshot, so the new
//! cluster bootstraps as any new cluster does). Every member of the new cluster is restored from the same file,
//! so they start equal; the first snapshot a member builds includes the restored state and replaces the file's
//! role. Membership is the new cluster's (`--initial-cluster`), not the old one's.

use std::{fs, io::Write, path::Path};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const MAGIC: &[u8] = b"raftkv-backup-v1\n";
const DIGEST: usize = 32;
const PAGE: usize = 512;
/// The restored state's file name in a data directory's `snapshots/`.
pub const RESTORED_STATE: &str = "restored.state";

/// Wraps a state machine encoding into a backup file's bytes.
pub fn seal(state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + state.len() + PAGE + DIGEST);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.extend_from_slice(state);
    out.resize(out.len().div_ceil(PAGE) * PAGE, 0);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Checks a backup file's bytes and returns the state machine encoding inside.
pub fn open(bytes: &[u8]) -> Result<&[u8]> {
    let bad = |why: &str| Error::InvalidArgument(format!("not a usable raftkv backup: {why}"));
    if bytes.len() < MAGIC.len() + 8 + DIGEST || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad("it does not start with raftkv's backup header"));
    }
    let (body, digest) = bytes.split_at(bytes.len() - DIGEST);
    if Sha256::digest(body).as_slice() != digest {
        return Err(bad("its SHA-256 does not match (truncated or damaged)"));
    }
    let len = u64::from_le_bytes(body[MAGIC.len()..MAGIC.len() + 8].try_into().expect("8 bytes")) as usize;
    let state = &body[MAGIC.len() + 8..];
    if len > state.len() {
        return Err(bad("its length field runs past its end"));
    }
    Ok(&state[..len])
}

/// What a restore wrote.
pub struct Restored {
    pub revision: i64,
    pub keys: usize,
}

/// Makes `data_dir` (new or empty) the data directory of member `id` of a new cluster that starts from `backup`.
pub fn restore(backup: &Path, data_dir: &Path, id: u64) -> Result<Restored> {
    let bytes = fs::read(backup).map_err(|e| Error::io(backup, "read backup", e))?;
    let state = open(&bytes)?;
    let (revision, keys) = crate::raft::state_machine::check_restorable(state)
        .map_err(|e| Error::InvalidArgument(format!("{}: not a usable raftkv backup: {e}", backup.display())))?;
    if data_dir.exists() && fs::read_dir(data_dir).map_err(|e| Error::io(data_dir, "list", e))?.next().is_some() {
        return Err(Error::Config(format!(
            "{} is not empty: restore into a new or empty directory (it becomes a new member's data directory)",
            data_dir.display()
        )));
    }
    // The data directory's identity, as `serve` would create it.
    drop(crate::data_dir::DataDir::open(data_dir, id)?);
    let snapshots = data_dir.join("snapshots");
    fs::create_dir_all(&snapshots).map_err(|e| Error::io(&snapshots, "create", e))?;
    let tmp = snapshots.join(format!("{RESTORED_STATE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(state)?;
        f.sync_all()?;
        fs::rename(&tmp, snapshots.join(RESTORED_STATE))?;
        fs::File::open(&snapshots)?.sync_all()
    };
    write().map_err(|e| Error::io(&snapshots, "write the restored state", e))?;
    Ok(Restored { revision, keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_backup_is_refused() {
        let sealed = seal(b"state");
        assert_eq!((sealed.len() - DIGEST) % PAGE, 0, "page-aligned before the digest, as etcdctl expects");
        assert_eq!(open(&sealed).unwrap(), b"state");
        let mut flipped = sealed.clone();
        flipped[MAGIC.len()] ^= 1;
        assert!(open(&flipped).unwrap_err().to_string().contains("SHA-256"));
        assert!(open(&sealed[..sealed.len() - 1]).is_err(), "truncated");
        assert!(open(b"something else entirely, long enough to have a digest")
            .unwrap_err()
            .to_string()
            .contains("header"));
    }
}
