//! Segment files and the WAL directory.
//!
//! The log is a sequence of append-only segment files named by a zero-padded
//! sequence number, `00000000000000000001.wal`, `00000000000000000002.wal`, ...,
//! so that lexical order is log order. Only the highest-numbered segment (the
//! active one) is ever written; once the WAL rolls past a segment it is fsynced
//! and never modified again, only read and eventually deleted.
//!
//! # Invariants
//!
//! * Sequence numbers on disk are contiguous. Segments are deleted only from
//!   the front, so a gap means a file went missing.
//! * Every segment begins with a Checkpoint record. A new segment is created,
//!   given its checkpoint, fdatasynced, and only then is the directory fsynced,
//!   so a segment whose name is durable also has a durable checkpoint. (The one
//!   exception is a crash between creating the file and that fsync; recovery
//!   then finds the last segment empty or with a torn checkpoint and rewrites it.)
//! * The active segment's file may be longer than its records: the bytes after
//!   them are zeros written ahead of time (see `Segment::write_at_end`). A
//!   segment the WAL rolled past ends with its last record: what was left of
//!   its zeros is cut off before its final fsync.
//! * Writes use `pwrite` at an offset tracked in memory, never the file cursor,
//!   and reads use `pread`, so readers and the writer share one descriptor safely.
//!
//! The directory also holds a `LOCK` file, `flock`ed while a WAL has it open, so
//! two processes cannot append to the same log.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::WalError;

const SUFFIX: &str = ".wal";
const SEQ_DIGITS: usize = 20;
const LOCK_FILE: &str = "LOCK";

/// The file name of segment `seq`.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:0SEQ_DIGITS$}{SUFFIX}")
}

/// The sequence number in a segment file name, or None if it is not one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files in `dir`, sorted by sequence number. Other files are ignored.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let read_dir = fs::read_dir(dir).map_err(|e| WalError::io(dir, "list directory", e))?;
    let mut segments = Vec::new();
    for dirent in read_dir {
        let dirent = dirent.map_err(|e| WalError::io(dir, "list directory", e))?;
        let name = dirent.file_name();
        match name.to_str().and_then(parse_file_name) {
            Some(seq) => segments.push((seq, dirent.path())),
            None if name.to_str() == Some(LOCK_FILE) => {}
            None => {
                tracing::debug!(file = ?dirent.path(), "ignoring non-segment file in WAL directory")
            }
        }
    }
    segments.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(segments)
}

/// Whether a write failed for want of space (ENOSPC, or a quota: EDQUOT).
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// fsyncs a directory, making file creations and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| WalError::io(dir, "fsync directory", e))
}

/// Creates `dir` if needed (making the creation durable) and takes its lock.
/// The returned file holds the lock until it is closed.
pub(crate) fn prepare_dir(dir: &Path) -> Result<File, WalError> {
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|e| WalError::io(dir, "create directory", e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| WalError::io(&path, "open lock file", e))?;
    // A lock released a moment ago can still be held for a moment: a process that forked between our open and
    // close (to exec anything) shares the lock's open file description until its exec closes it. So a held lock
    // is tried again for a short while before it counts as another WAL's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        // SAFETY: flock on a descriptor we own; it has no memory-safety preconditions.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(lock);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::WouldBlock {
            return Err(WalError::io(&path, "lock", err));
        }
        if std::time::Instant::now() >= deadline {
            return Err(WalError::Locked { path });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// An open segment file. Shared (via Arc) between the writer, the flusher and
/// readers; a reader holding one keeps the data readable even if the file is
/// unlinked by a concurrent purge.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub seq: u64,
    pub path: PathBuf,
    file: File,
}

impl SegmentFile {
    /// Opens an existing segment for reading and appending.
    pub(crate) fn open(seq: u64, path: PathBuf) -> Result<Self, WalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| WalError::io(&path, "open segment", e))?;
        Ok(SegmentFile { seq, path, file })
    }

    /// Creates a new, empty segment. Fails if the file already exists: segment
    /// numbers are never reused.
    pub(crate) fn create(dir: &Path, seq: u64) -> Result<Self, WalError> {
        let path = dir.join(file_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| WalError::io(&path, "create segment", e))?;
        Ok(SegmentFile { seq, path, file })
    }

    pub(crate) fn read_all(&self) -> Result<Vec<u8>, WalError> {
        let mut buf = vec![0; self.size()? as usize];
        self.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), WalError> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            let op = if e.kind() == io::ErrorKind::UnexpectedEof { "read (file shorter than index)" } else { "read" };
            WalError::io(&self.path, op, e)
        })
    }

    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), WalError> {
        self.file.write_all_at(buf, offset).map_err(|e| WalError::io(&self.path, "write", e))
    }

    /// Writes zeros to bytes `[from, to)`.
    pub(crate) fn write_zeros(&self, from: u64, to: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// The file's size.
    pub(crate) fn size(&self) -> Result<u64, WalError> {
        Ok(self.file.metadata().map_err(|e| WalError::io(&self.path, "stat segment", e))?.len())
    }

    /// fdatasync: makes written data (and the file size) durable.
    pub(crate) fn sync_data(&self) -> Result<(), WalError> {
        self.file.sync_data().map_err(|e| WalError::io(&self.path, "fdatasync", e))
    }

    /// Cuts the file to `len` bytes and makes that durable.
    pub(crate) fn truncate_to(&self, len: u64) -> Result<(), WalError> {
        self.file.set_len(len).map_err(|e| WalError::io(&self.path, "ftruncate", e))?;
        self.file.sync_all().map_err(|e| WalError::io(&self.path, "fsync", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("1.wal"), None);
        assert_eq!(parse_file_name("0000000000000000000a.wal"), None);
        assert_eq!(parse_file_name("00000000000000000001.wal.tmp"), None);
        assert!(file_name(9) < file_name(10), "lexical order must be numeric order");
    }

    #[test]
    fn lock_excludes_second_opener() {
        let dir = tempfile::tempdir().unwrap();
        let held = prepare_dir(dir.path()).unwrap();
        assert!(matches!(prepare_dir(dir.path()), Err(WalError::Locked { .. })));
        drop(held);
        prepare_dir(dir.path()).unwrap();
    }
}
