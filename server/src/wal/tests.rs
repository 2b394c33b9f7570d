//! Tests of the WAL through its public API, plus direct manipulation of the
//! segment files to simulate crashes and corruption.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::record::{self, Checkpoint, Defect, Record, Scanned, Scanner};
use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

fn open_opts(opts: WalOptions) -> (Wal, RecoveryReport) {
    Wal::open(opts).expect("open WAL")
}

fn open(dir: &Path) -> (Wal, RecoveryReport) {
    open_opts(WalOptions::new(dir))
}

fn open_small(dir: &Path, segment_bytes: u64) -> (Wal, RecoveryReport) {
    open_opts(WalOptions { segment_bytes, ..WalOptions::new(dir) })
}

fn payload(i: u64) -> Vec<u8> {
    // Varying lengths, so offsets differ from record to record.
    format!("entry-{i}-{}", "x".repeat((i % 7) as usize)).into_bytes()
}

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|i| (i, payload(i))).collect()
}

/// Appends and waits for the durability callback.
fn append_durable(wal: &Wal, batch: Vec<(u64, Vec<u8>)>) {
    let (tx, rx) = mpsc::channel();
    wal.append(batch, Box::new(move |r| tx.send(r.map_err(|e| e.to_string())).unwrap())).expect("append");
    rx.recv_timeout(TIMEOUT).expect("durable callback never fired").expect("append became durable");
}

fn read_all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    wal.read(0, u64::MAX).expect("read")
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    segment::list(dir).unwrap().into_iter().map(|(_, p)| p).collect()
}

/// (offset, frame length, record kind, entry index) of one record in a file.
type RecordInfo = (u64, usize, &'static str, Option<u64>);

/// Every record in a file.
fn records_in(path: &Path) -> Vec<RecordInfo> {
    let buf = fs::read(path).unwrap();
    let mut scanner = Scanner::new(&buf);
    let mut out = Vec::new();
    loop {
        match scanner.next() {
            Scanned::Record { offset, len, record } => {
                let index = match record {
                    Record::Entry { index, .. } => Some(index),
                    _ => None,
                };
                out.push((offset, record::HEADER_LEN + len as usize, record.kind(), index));
            }
            // The zeros preallocated after the last record.
            Scanned::End | Scanned::Defect { defect: Defect::ZeroTail, .. } => return out,
            Scanned::Defect { offset, defect } => {
                panic!("{}: defect at {offset}: {defect}", path.display())
            }
        }
    }
}

fn flip_byte(path: &Path, offset: u64) {
    let mut buf = fs::read(path).unwrap();
    buf[offset as usize] ^= 0x5a;
    fs::write(path, buf).unwrap();
}

fn expect_corrupt(dir: &Path) -> (PathBuf, u64, String) {
    match Wal::open(WalOptions::new(dir)) {
        Err(err @ WalError::Corrupt { .. }) => {
            let msg = err.to_string();
            let WalError::Corrupt { path, offset, .. } = err else { unreachable!() };
            assert!(msg.contains(&path.display().to_string()), "message names the file: {msg}");
            assert!(msg.contains(&format!("at offset {offset}")), "message names the offset: {msg}");
            assert!(msg.contains("refusing to start"), "message says what happens: {msg}");
            (path, offset, msg)
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, but the WAL opened"),
    }
}

#[test]
fn empty_directory_opens_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/wal");
    let (wal, report) = open(&dir);
    assert_eq!(report, RecoveryReport { segments: 1, entries: 0, torn_tail: None });
    assert_eq!((wal.first_index(), wal.last_index()), (None, None));
    assert_eq!((wal.vote(), wal.committed(), wal.purged()), (None, None, None));
    assert_eq!(read_all(&wal), vec![]);
    assert_eq!(wal.dir(), dir);
    drop(wal);

    let (wal, report) = open(&dir);
    assert_eq!(report.entries, 0);
    assert_eq!(report.segments, 1, "reopening must not add segments");
    assert_eq!(wal.last_index(), None);
}

#[test]
fn append_read_reopen_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    append_durable(&wal, entries(1..=1));
    append_durable(&wal, entries(2..=10));
    append_durable(&wal, vec![(11, vec![])]); // empty payloads are fine
    append_durable(&wal, entries(12..=20));
    let mut want = entries(1..=20);
    want[10].1 = vec![];

    assert_eq!(read_all(&wal), want);
    assert_eq!(wal.read(5, 8).unwrap(), want[4..7].to_vec());
    assert_eq!(wal.read(19, 100).unwrap(), want[18..].to_vec());
    assert_eq!(wal.read(21, 30).unwrap(), vec![]);
    assert_eq!(wal.read(8, 8).unwrap(), vec![]);
    assert_eq!((wal.first_index(), wal.last_index()), (Some(1), Some(20)));
    assert_eq!(wal.stats().entries, 20);
    drop(wal);

    let (wal, report) = open(tmp.path());
    assert_eq!(report, RecoveryReport { segments: 1, entries: 20, torn_tail: None });
    assert_eq!(read_all(&wal), want);
    append_durable(&wal, entries(21..=21));
    assert_eq!(wal.last_index(), Some(21));
}

#[test]
fn metadata_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    wal.save_vote(b"term-1-node-a").unwrap();
    wal.save_vote(b"term-2-node-b").unwrap();
    append_durable(&wal, entries(1..=5));
    wal.save_committed(b"commit-4").unwrap();
    wal.purge(3, b"logid-3").unwrap();
    assert_eq!(wal.purged(), Some((3, b"logid-3".to_vec())));
    assert_eq!(wal.first_index(), Some(4));
    wal.sync().unwrap();
    drop(wal);

    let (wal, report) = open(tmp.path());
    assert_eq!(report.entries, 2);
    assert_eq!(wal.vote(), Some(b"term-2-node-b".to_vec()));
    assert_eq!(wal.committed(), Some(b"commit-4".to_vec()));
    assert_eq!(wal.purged(), Some((3, b"logid-3".to_vec())));
    assert_eq!(read_all(&wal), entries(4..=5));
}

#[test]
fn the_committed_index_costs_no_fsync_of_its_own_and_rides_along_with_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    append_durable(&wal, entries(1..=3));
    let before = wal.stats().fsyncs;
    wal.save_committed(b"commit-3").unwrap();
    // Nobody waits for it: the flusher must not sync for it (it would delay the next append's sync).
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(wal.stats().fsyncs, before, "save_committed alone caused an fsync");
    append_durable(&wal, entries(4..=4));
    assert_eq!(wal.stats().fsyncs, before + 1, "one fsync covers the append and the committed index");
    drop(wal);
    let (wal, _) = open(tmp.path());
    assert_eq!(wal.committed(), Some(b"commit-3".to_vec()));
}

#[test]
fn truncate_then_append_then_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    append_durable(&wal, entries(1..=10));
    wal.truncate(6).unwrap();
    assert_eq!(wal.last_index(), Some(5));
    assert_eq!(read_all(&wal), entries(1..=5));
    assert!(matches!(
        wal.append(entries(7..=7), Box::new(|_| {})),
        Err(WalError::NonContiguous { expected: 6, got: 7 })
    ));
    let replacement: Vec<_> = (6..=8).map(|i| (i, format!("new-{i}").into_bytes())).collect();
    append_durable(&wal, replacement.clone());
    wal.truncate(100).unwrap(); // past the end: no-op
    drop(wal);

    let (wal, report) = open(tmp.path());
    assert_eq!(report.entries, 8);
    let mut want = entries(1..=5);
    want.extend(replacement);
    assert_eq!(read_all(&wal), want);

    // Truncating everything: the log continues at the truncation point.
    wal.truncate(1).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (None, None));
    drop(wal);
    let (wal, _) = open(tmp.path());
    assert_eq!(read_all(&wal), vec![]);
    assert!(matches!(wal.append(entries(9..=9), Box::new(|_| {})), Err(WalError::NonContiguous { expected: 1, .. })));
    append_durable(&wal, entries(1..=2));
    assert_eq!(read_all(&wal), entries(1..=2));
}

#[test]
fn purge_deletes_old_segments_and_metadata_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open_small(tmp.path(), 200);
    wal.save_vote(b"vote-in-segment-1").unwrap();
    wal.save_committed(b"committed-in-segment-1").unwrap();
    let first_segment = segment_paths(tmp.path())[0].clone();
    for i in 1..=50 {
        append_durable(&wal, entries(i..=i));
    }
    let before = segment_paths(tmp.path());
    assert!(before.len() > 5, "tiny segments should have rolled many times, got {}", before.len());
    assert_eq!(wal.stats().segments, before.len());

    wal.purge(40, b"logid-40").unwrap();
    let after = segment_paths(tmp.path());
    assert!(!first_segment.exists(), "the segment holding the vote was fully purged and must be deleted");
    assert!(after.len() < before.len(), "purge must delete segments ({} -> {})", before.len(), after.len());
    assert_eq!(wal.stats().segments, after.len());
    // Every surviving non-active segment still holds an entry above the purge point.
    for path in &after[..after.len() - 1] {
        let max = records_in(path).iter().filter_map(|r| r.3).max();
        assert!(max.is_some_and(|m| m > 40), "{} should have been deleted (max entry {max:?})", path.display());
    }
    assert_eq!(wal.vote(), Some(b"vote-in-segment-1".to_vec()));
    drop(wal);

    let (wal, report) = open_small(tmp.path(), 200);
    assert_eq!(report.entries, 10);
    assert_eq!(wal.vote(), Some(b"vote-in-segment-1".to_vec()), "vote must survive deletion of its segment");
    assert_eq!(wal.committed(), Some(b"committed-in-segment-1".to_vec()));
    assert_eq!(wal.purged(), Some((40, b"logid-40".to_vec())));
    assert_eq!(wal.first_index(), Some(41));
    assert_eq!(read_all(&wal), entries(41..=50));

    // Purge past the end: the log empties, and continues after the purge point.
    wal.purge(100, b"logid-100").unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (None, None));
    assert_eq!(segment_paths(tmp.path()).len(), 1, "only the active segment is left");
    assert!(matches!(
        wal.append(entries(51..=51), Box::new(|_| {})),
        Err(WalError::NonContiguous { expected: 101, got: 51 })
    ));
    append_durable(&wal, entries(101..=103));
    drop(wal);

    let (wal, _) = open_small(tmp.path(), 200);
    assert_eq!(wal.purged(), Some((100, b"logid-100".to_vec())));
    assert_eq!(wal.vote(), Some(b"vote-in-segment-1".to_vec()));
    assert_eq!(read_all(&wal), entries(101..=103));
}

#[test]
fn truncated_entries_keep_their_segment_until_purged_past() {
    // A segment may be deleted only when every entry ever written to it is
    // purged, including entries later truncated away.
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open_small(tmp.path(), 150);
    append_durable(&wal, entries(1..=10));
    wal.truncate(3).unwrap();
    append_durable(&wal, entries(3..=30));
    wal.purge(8, b"p").unwrap();
    assert_eq!(read_all(&wal), entries(9..=30));
    drop(wal);
    let (wal, _) = open_small(tmp.path(), 150);
    assert_eq!(read_all(&wal), entries(9..=30));
    assert_eq!(wal.purged(), Some((8, b"p".to_vec())));
}

/// Writes entries 1..=4 into one segment and returns its path and the offset of
/// the last entry's record. The file ends with the sync mark the flusher wrote
/// after the fsync that covered the entries.
fn four_entry_log(dir: &Path) -> (PathBuf, u64) {
    let (wal, _) = open(dir);
    append_durable(&wal, entries(1..=4));
    drop(wal);
    let path = segment_paths(dir).pop().unwrap();
    let records = records_in(&path);
    let last_entry = *records.iter().rev().find(|r| r.2 == "entry").unwrap();
    assert_eq!(last_entry.3, Some(4));
    let last = *records.last().unwrap();
    assert_eq!(last.2, "sync mark", "a durable append is followed by its sync mark");
    assert_eq!(last.0, last_entry.0 + last_entry.1 as u64, "the mark follows the entries it covers");
    (path, last_entry.0)
}

/// Cuts `path` right after entry 4's record: a power cut lost the sync mark
/// that would have ridden along with the next fsync.
fn lose_trailing_sync_mark(path: &Path, last_entry_offset: u64) {
    let frame = records_in(path).into_iter().find(|r| r.0 == last_entry_offset).unwrap().1;
    fs::OpenOptions::new().write(true).open(path).unwrap().set_len(last_entry_offset + frame as u64).unwrap();
}

#[test]
fn torn_tail_at_every_offset_of_the_last_record() {
    let base = tempfile::tempdir().unwrap();
    let (path, last_offset) = four_entry_log(base.path());
    lose_trailing_sync_mark(&path, last_offset);
    let bytes = fs::read(&path).unwrap();
    let name = path.file_name().unwrap();

    for cut in last_offset..bytes.len() as u64 {
        let tmp = tempfile::tempdir().unwrap();
        let seg = tmp.path().join(name);
        fs::write(&seg, &bytes[..cut as usize]).unwrap();

        let (wal, report) = open(tmp.path());
        let expected_torn = (cut > last_offset).then(|| TornTail {
            path: seg.clone(),
            offset: last_offset,
            bytes_dropped: cut - last_offset,
        });
        assert_eq!(report.torn_tail, expected_torn, "cut at {cut}");
        assert_eq!(report.entries, 3, "cut at {cut}");
        assert_eq!(read_all(&wal), entries(1..=3), "cut at {cut}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), last_offset, "tail must be cut off on disk (cut at {cut})");

        // The log continues cleanly after the repair.
        append_durable(&wal, vec![(4, b"rewritten".to_vec())]);
        drop(wal);
        let (wal, report) = open(tmp.path());
        assert_eq!(report.torn_tail, None, "cut at {cut}");
        assert_eq!(wal.read(4, 5).unwrap(), vec![(4, b"rewritten".to_vec())], "cut at {cut}");
    }
}

/// The end of the last record in a segment file (where its preallocated zeros begin).
fn records_end(path: &Path) -> u64 {
    let last = *records_in(path).last().unwrap();
    last.0 + last.1 as u64
}

#[test]
fn zero_filled_tail_is_preallocated_space() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, last_offset) = four_entry_log(tmp.path());
    let len = fs::metadata(&path).unwrap().len();
    let end = records_end(&path);
    assert!(len >= end + DEFAULT_PREALLOCATE_BYTES / 2, "zeros written ahead of the records: {len} vs {end}");
    assert!(is_zeros(&fs::read(&path).unwrap()[end as usize..]));

    // Zeros after the last record are space for the next ones: nothing is cut, nothing reported.
    let (wal, report) = open(tmp.path());
    assert_eq!(report.torn_tail, None);
    assert_eq!(read_all(&wal), entries(1..=4));
    drop(wal);
    assert_eq!(fs::metadata(&path).unwrap().len(), len, "the preallocated zeros are kept");

    // The last record itself zeroed, with more zeros after it: as if it had never been written.
    let mut bytes = fs::read(&path).unwrap();
    bytes[last_offset as usize..].fill(0);
    fs::write(&path, &bytes).unwrap();
    let (wal, report) = open(tmp.path());
    assert_eq!(report.torn_tail, None);
    assert_eq!(read_all(&wal), entries(1..=3));
    // The next append goes right after entry 3, into the zeros, and survives a restart.
    append_durable(&wal, vec![(4, b"rewritten".to_vec())]);
    drop(wal);
    assert_eq!(fs::metadata(&path).unwrap().len(), len, "written into the preallocated space");
    let (wal, report) = open(tmp.path());
    assert_eq!(report.torn_tail, None);
    assert_eq!(wal.read(1, 5).unwrap(), [entries(1..=3), vec![(4, b"rewritten".to_vec())]].concat());
    drop(wal);

    // A header that survived, followed by a payload that did not (zeros to the end): a torn write, cut.
    let (path, last_offset) = {
        let tmp2 = tempfile::tempdir().unwrap();
        let r = four_entry_log(tmp2.path());
        let moved = tmp.path().join("torn");
        fs::create_dir(&moved).unwrap();
        fs::copy(&r.0, moved.join(r.0.file_name().unwrap())).unwrap();
        (moved.join(r.0.file_name().unwrap()), r.1)
    };
    let mut bytes = fs::read(&path).unwrap();
    bytes[last_offset as usize + record::HEADER_LEN..].fill(0);
    fs::write(&path, &bytes).unwrap();
    let (wal, report) = open(path.parent().unwrap());
    assert_eq!(report.torn_tail.map(|t| t.offset), Some(last_offset));
    assert_eq!(read_all(&wal), entries(1..=3));
    drop(wal);
    assert_eq!(fs::metadata(&path).unwrap().len(), last_offset, "the torn record is cut off on disk");
}

/// Cuts the zeros after a segment's records, as the WAL does when it rolls past it.
fn cut_to_records(path: &Path) {
    let end = records_end(path);
    fs::OpenOptions::new().write(true).open(path).unwrap().set_len(end).unwrap();
}

fn is_zeros(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

#[test]
fn a_rolled_segment_ends_with_its_records_and_zeros_there_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Written with a large segment size: the file has zeros ahead of its records.
    let (wal, _) = open(tmp.path());
    append_durable(&wal, entries(1..=5));
    drop(wal);
    let first = segment_paths(tmp.path()).remove(0);
    assert!(fs::metadata(&first).unwrap().len() > records_end(&first));
    // Reopened with a small one, the next append rolls: the old segment's zeros are cut off first.
    let (wal, _) = open_opts(WalOptions { segment_bytes: 1024, preallocate: 512, ..WalOptions::new(tmp.path()) });
    for i in 6..=60 {
        append_durable(&wal, entries(i..=i));
    }
    drop(wal);
    let segs = segment_paths(tmp.path());
    assert!(segs.len() >= 3, "rolled: {segs:?}");
    for seg in &segs[..segs.len() - 1] {
        assert_eq!(fs::metadata(seg).unwrap().len(), records_end(seg), "{} ends with its records", seg.display());
    }
    let (wal, report) = open(tmp.path());
    assert_eq!(report.torn_tail, None);
    assert_eq!(read_all(&wal), entries(1..=60));
    drop(wal);

    // Zeros at the end of a rolled segment are lost records (here: its last entry), not space: refused. (Its
    // checkpoint comparison alone would not catch a lost truncate followed by rewritten entries.)
    let last_entry = *records_in(&segs[1]).iter().rev().find(|r| r.2 == "entry").unwrap();
    let mut bytes = fs::read(&segs[1]).unwrap();
    bytes[last_entry.0 as usize..].fill(0);
    fs::write(&segs[1], &bytes).unwrap();
    let (bad, offset, msg) = expect_corrupt(tmp.path());
    assert_eq!((&bad, offset), (&segs[1], last_entry.0), "{msg}");
    assert!(msg.contains("zero-filled tail in a non-last segment"), "{msg}");
}

#[test]
fn crc_bad_last_record_at_eof_is_torn() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, last_offset) = four_entry_log(tmp.path());
    lose_trailing_sync_mark(&path, last_offset);
    let len = fs::metadata(&path).unwrap().len();
    flip_byte(&path, len - 1);
    let (wal, report) = open(tmp.path());
    assert_eq!(
        report.torn_tail,
        Some(TornTail { path: path.clone(), offset: last_offset, bytes_dropped: len - last_offset })
    );
    assert_eq!(read_all(&wal), entries(1..=3));
}

#[test]
fn flipped_byte_mid_log_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = four_entry_log(tmp.path());
    let second = records_in(&path).into_iter().find(|r| r.3 == Some(2)).unwrap();
    let mark = *records_in(&path).last().unwrap();
    assert_eq!(mark.2, "sync mark");
    flip_byte(&path, second.0 + second.1 as u64 - 2);
    let before = fs::read(&path).unwrap();

    let (bad_path, offset, msg) = expect_corrupt(tmp.path());
    assert_eq!(bad_path, path);
    assert_eq!(offset, second.0, "offset of the damaged record");
    let claimed = second.1 - record::HEADER_LEN;
    assert!(
        msg.starts_with(&format!(
            "WAL corrupt: {} at offset {}: CRC mismatch (record claims {claimed} bytes), but the sync mark at \
             offset {} says this segment was fsynced up to offset {}: damage to synced data, not a torn write; \
             refusing to start — restore this node from a peer or remove its data directory",
            path.display(),
            second.0,
            mark.0,
            mark.0,
        )),
        "{msg}"
    );
    assert_eq!(fs::read(&path).unwrap(), before, "a refused open must not modify the file");
}

#[test]
fn damage_in_a_non_last_segment_is_corrupt() {
    let setup = |tmp: &Path| -> Vec<PathBuf> {
        let (wal, _) = open_small(tmp, 120);
        for i in 1..=12 {
            append_durable(&wal, entries(i..=i));
        }
        drop(wal);
        let segs = segment_paths(tmp);
        assert!(segs.len() >= 3, "need several segments, got {}", segs.len());
        segs
    };

    // A CRC error on the last record of segment 1: at EOF of that file, but a
    // non-last segment must be complete, so this is corruption, not a torn tail.
    let tmp = tempfile::tempdir().unwrap();
    let segs = setup(tmp.path());
    let last = *records_in(&segs[0]).iter().rev().find(|r| r.2 == "entry").unwrap();
    flip_byte(&segs[0], last.0 + last.1 as u64 - 1);
    let (path, offset, msg) = expect_corrupt(tmp.path());
    assert_eq!((path, offset), (segs[0].clone(), last.0));
    assert!(msg.contains("non-last segment"), "{msg}");

    // A non-last segment cut short.
    let tmp = tempfile::tempdir().unwrap();
    let segs = setup(tmp.path());
    let len = fs::metadata(&segs[1]).unwrap().len();
    let last = *records_in(&segs[1]).last().unwrap();
    fs::OpenOptions::new().write(true).open(&segs[1]).unwrap().set_len(len - 3).unwrap();
    let (path, offset, _) = expect_corrupt(tmp.path());
    assert_eq!((path, offset), (segs[1].clone(), last.0));

    // A garbage length over the limit in a non-last segment.
    let tmp = tempfile::tempdir().unwrap();
    let segs = setup(tmp.path());
    let first_entry = records_in(&segs[0]).into_iter().find(|r| r.2 == "entry").unwrap();
    let mut bytes = fs::read(&segs[0]).unwrap();
    bytes[first_entry.0 as usize..first_entry.0 as usize + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    fs::write(&segs[0], bytes).unwrap();
    let (path, offset, _) = expect_corrupt(tmp.path());
    assert_eq!((path, offset), (segs[0].clone(), first_entry.0));

    // A missing segment in the middle.
    let tmp = tempfile::tempdir().unwrap();
    let segs = setup(tmp.path());
    fs::remove_file(&segs[1]).unwrap();
    let (path, _, msg) = expect_corrupt(tmp.path());
    assert_eq!(path, segs[1]);
    assert!(msg.contains("missing"), "{msg}");
}

#[test]
fn bad_crc_followed_by_data_in_last_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, last_offset) = four_entry_log(tmp.path());
    let third = records_in(&path).into_iter().find(|r| r.3 == Some(3)).unwrap();
    assert!(third.0 < last_offset);
    flip_byte(&path, third.0 + 4); // the CRC field itself
    let (bad, offset, _) = expect_corrupt(tmp.path());
    assert_eq!((bad, offset), (path, third.0));
}

#[test]
fn segment_must_begin_with_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    record::encode(&Record::Entry { index: 1, data: b"x" }, &mut bytes);
    let path = tmp.path().join(segment::file_name(1));
    fs::write(&path, &bytes).unwrap();
    let (bad, offset, msg) = expect_corrupt(tmp.path());
    assert_eq!((bad, offset), (path, 0));
    assert!(msg.contains("checkpoint"), "{msg}");
}

#[test]
fn checkpoint_disagreeing_with_replay_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    append_durable(&wal, entries(1..=3));
    drop(wal);
    // A hand-made segment 2 whose checkpoint claims a different log range (segment 1 cut as a roll cuts it).
    cut_to_records(&segment_paths(tmp.path())[0]);
    let mut bytes = Vec::new();
    let cp = Checkpoint { range: Some((1, 10)), ..Default::default() };
    record::encode(&Record::Checkpoint(cp), &mut bytes);
    let path = tmp.path().join(segment::file_name(2));
    fs::write(&path, &bytes).unwrap();
    let (bad, offset, msg) = expect_corrupt(tmp.path());
    assert_eq!((bad, offset), (path, 0));
    assert!(msg.contains("log range"), "{msg}");
}

#[test]
fn crash_during_roll_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    wal.save_vote(b"v").unwrap();
    append_durable(&wal, entries(1..=3));
    drop(wal);
    let next = tmp.path().join(segment::file_name(2));

    // The new segment was created (after the old one was cut to its records and synced, as a roll does) but its
    // checkpoint never reached the disk.
    cut_to_records(&segment_paths(tmp.path())[0]);
    fs::write(&next, b"").unwrap();
    let (wal, report) = open(tmp.path());
    assert_eq!((report.segments, report.torn_tail), (2, None));
    assert_eq!(records_in(&next).iter().map(|r| r.2).collect::<Vec<_>>(), vec!["checkpoint"]);
    append_durable(&wal, entries(4..=4));
    drop(wal);
    let (wal, _) = open(tmp.path());
    assert_eq!(read_all(&wal), entries(1..=4));
    assert_eq!(wal.vote(), Some(b"v".to_vec()));
    drop(wal);

    // The checkpoint of a new segment 3 torn halfway.
    let mut cp = Vec::new();
    record::encode(&Record::Checkpoint(Checkpoint::default()), &mut cp);
    let third = tmp.path().join(segment::file_name(3));
    cut_to_records(&next);
    fs::write(&third, &cp[..5]).unwrap();
    let (wal, report) = open(tmp.path());
    assert_eq!(report.torn_tail, Some(TornTail { path: third.clone(), offset: 0, bytes_dropped: 5 }));
    assert_eq!(read_all(&wal), entries(1..=4));
    assert_eq!(records_in(&third).len(), 1, "the rewritten checkpoint");
    append_durable(&wal, entries(5..=5));
    drop(wal);
    let (wal, _) = open(tmp.path());
    assert_eq!(read_all(&wal), entries(1..=5));
    assert_eq!(wal.vote(), Some(b"v".to_vec()));
}

#[test]
fn read_across_segment_boundaries() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open_small(tmp.path(), 100);
    // One large batch straddles many segments; then some single appends.
    append_durable(&wal, entries(1..=30));
    for i in 31..=40 {
        append_durable(&wal, entries(i..=i));
    }
    let segs = segment_paths(tmp.path());
    assert!(segs.len() > 5, "expected many segments, got {}", segs.len());
    for seg in &segs {
        assert_eq!(records_in(seg)[0].2, "checkpoint", "{} must start with a checkpoint", seg.display());
    }
    let stats = wal.stats();
    assert_eq!(stats.segments, segs.len());
    assert_eq!(stats.bytes, segs.iter().map(|p| fs::metadata(p).unwrap().len()).sum::<u64>());

    let all = entries(1..=40);
    assert_eq!(read_all(&wal), all);
    for (from, to) in [(1, 41), (7, 23), (13, 14), (29, 33), (40, 41)] {
        assert_eq!(wal.read(from, to).unwrap(), all[from as usize - 1..to as usize - 1].to_vec(), "read({from}, {to})");
    }
    drop(wal);
    let (wal, report) = open_small(tmp.path(), 100);
    assert_eq!((report.segments, report.entries), (segs.len(), 40));
    assert_eq!(read_all(&wal), all);
}

#[test]
fn read_detects_corruption_after_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    append_durable(&wal, entries(1..=4));
    let path = segment_paths(tmp.path())[0].clone();
    let second = records_in(&path).into_iter().find(|r| r.3 == Some(2)).unwrap();
    // Damage the file under the open WAL (bit rot after recovery).
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"?", second.0 + 12).unwrap();
    match wal.read(1, 5) {
        Err(WalError::Corrupt { path: p, offset, reason }) => {
            assert_eq!((p, offset), (path, second.0));
            assert!(reason.contains("CRC mismatch"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(wal.read(3, 5).unwrap(), entries(3..=4), "undamaged entries stay readable");
}

#[test]
fn invalid_operations_are_rejected_without_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    let fired = Arc::new(AtomicUsize::new(0));
    let cb = || {
        let fired = Arc::clone(&fired);
        Box::new(move |_: io::Result<()>| {
            fired.fetch_add(1, Ordering::SeqCst);
        }) as DurableCallback
    };

    append_durable(&wal, entries(5..=6)); // a fresh log may start anywhere
    assert!(matches!(wal.append(entries(8..=8), cb()), Err(WalError::NonContiguous { expected: 7, got: 8 })));
    assert!(matches!(wal.append(entries(5..=5), cb()), Err(WalError::NonContiguous { expected: 7, got: 5 })));
    let gap = vec![(7, vec![1]), (9, vec![2])];
    assert!(matches!(wal.append(gap, cb()), Err(WalError::NonContiguous { expected: 8, got: 9 })));
    assert!(matches!(wal.append(vec![(u64::MAX, vec![])], cb()), Err(WalError::IndexOverflow { .. })));
    assert_eq!(wal.last_index(), Some(6), "failed appends must not change the log");

    wal.purge(5, b"p5").unwrap();
    assert!(matches!(wal.truncate(5), Err(WalError::TruncatePurged { since: 5, purged: 5 })));
    assert!(matches!(wal.purge(4, b""), Err(WalError::PurgeRegressed { upto: 4, purged: 5 })));
    let big = vec![0; MAX_META_DATA + 1];
    assert!(matches!(wal.save_vote(&big), Err(WalError::TooLarge { what: "vote", .. })));
    assert_eq!(read_all(&wal), entries(6..=6));

    wal.sync().unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), 0, "callbacks of rejected appends are never called");
    drop(wal);
    let (wal, _) = open(tmp.path());
    assert_eq!(read_all(&wal), entries(6..=6));
    assert_eq!(wal.purged(), Some((5, b"p5".to_vec())));
}

#[test]
fn append_and_sync_is_durable_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let fsyncs = Arc::new(AtomicUsize::new(0));
    let hook: FsyncHook = {
        let fsyncs = Arc::clone(&fsyncs);
        Arc::new(move |_took, _records| {
            fsyncs.fetch_add(1, Ordering::SeqCst);
        })
    };
    let (wal, _) = open_opts(WalOptions { on_fsync: Some(hook), ..WalOptions::new(tmp.path()) });
    let caller = std::thread::current().id();
    for i in 1..=20u64 {
        let reported = Arc::new(Mutex::new(None));
        let r = Arc::clone(&reported);
        wal.append_and_sync(
            vec![(i, payload(i))],
            Box::new(move |res| *r.lock().unwrap() = Some((res.is_ok(), std::thread::current().id()))),
        )
        .unwrap();
        // Nobody else syncs: the caller did it, and the callback has run on the caller's thread.
        assert_eq!(*reported.lock().unwrap(), Some((true, caller)), "append {i} was not durable on return");
        assert_eq!(fsyncs.load(Ordering::SeqCst), i as usize, "one fsync per lone append");
    }
    // The flusher still serves plain appends afterwards.
    append_durable(&wal, vec![(21, payload(21))]);
    drop(wal);
    let (wal, _) = open(tmp.path());
    assert_eq!(read_all(&wal), entries(1..=21));
}

#[test]
fn append_and_sync_beside_other_appends_reports_each_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (entered_tx, entered_rx) = mpsc::channel();
    let release = Arc::new(Mutex::new(()));
    let held = release.lock().unwrap();
    let hook: FsyncHook = {
        let release = Arc::clone(&release);
        let entered_tx = Mutex::new(entered_tx);
        // The hook runs after each fsync, before that fsync's callbacks: holding it keeps the first appender
        // busy while other appends arrive (whoever then syncs them, the flusher or an appender), so every
        // callback must still fire exactly once and every entry must be on disk.
        Arc::new(move |_took, _records| {
            let _ = entered_tx.lock().unwrap().send(());
            drop(release.lock().unwrap());
        })
    };
    let (wal, _) = open_opts(WalOptions { on_fsync: Some(hook), ..WalOptions::new(tmp.path()) });
    let (tx, rx) = mpsc::channel();
    let first = {
        let (wal, tx) = (wal.clone(), tx.clone());
        std::thread::spawn(move || {
            wal.append_and_sync(vec![(1, payload(1))], Box::new(move |r| tx.send((1, r.is_ok())).unwrap())).unwrap()
        })
    };
    entered_rx.recv_timeout(TIMEOUT).expect("the first fsync ran");
    // The first appender is inside its hook; a plain append and a second append_and_sync still complete.
    let tx2 = tx.clone();
    wal.append(vec![(2, payload(2))], Box::new(move |r| tx2.send((2, r.is_ok())).unwrap())).unwrap();
    let tx3 = tx.clone();
    let third = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            wal.append_and_sync(vec![(3, payload(3))], Box::new(move |r| tx3.send((3, r.is_ok())).unwrap())).unwrap()
        })
    };
    drop(held);
    first.join().unwrap();
    third.join().unwrap();
    let mut got: Vec<(u64, bool)> = (0..3).map(|_| rx.recv_timeout(TIMEOUT).expect("callback fired")).collect();
    got.sort();
    assert_eq!(got, vec![(1, true), (2, true), (3, true)]);
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "a callback ran twice");
    drop(wal);
    let (wal, _) = open(tmp.path());
    assert_eq!(read_all(&wal), entries(1..=3));
}

#[test]
fn group_commit_shares_fsyncs() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 50;
    let tmp = tempfile::tempdir().unwrap();
    let fsyncs = Arc::new(AtomicUsize::new(0));
    let synced_records = Arc::new(AtomicUsize::new(0));
    let hook: FsyncHook = {
        let (fsyncs, synced_records) = (Arc::clone(&fsyncs), Arc::clone(&synced_records));
        Arc::new(move |_took, records| {
            fsyncs.fetch_add(1, Ordering::SeqCst);
            synced_records.fetch_add(records, Ordering::SeqCst);
            // Stand in for a slow disk, so appends pile up behind each fsync as
            // they would in production; tmpfs fsyncs are nearly free.
            std::thread::sleep(Duration::from_millis(2));
        })
    };
    let (wal, _) = open_opts(WalOptions { on_fsync: Some(hook), ..WalOptions::new(tmp.path()) });
    let next_index = Arc::new(Mutex::new(1u64));
    let (tx, rx) = mpsc::channel();

    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (wal, next_index, tx) = (wal.clone(), Arc::clone(&next_index), tx.clone());
            s.spawn(move || {
                for _ in 0..PER_THREAD {
                    // Index allocation and append under one lock, as the Raft
                    // core serializes appends; the fsync is not under it.
                    let mut next = next_index.lock().unwrap();
                    let tx = tx.clone();
                    let data = format!("t{t}-{}", *next).into_bytes();
                    wal.append(vec![(*next, data)], Box::new(move |r| tx.send(r.is_ok()).unwrap())).unwrap();
                    *next += 1;
                }
            });
        }
    });
    let total = (THREADS * PER_THREAD) as usize;
    for n in 0..total {
        assert!(rx.recv_timeout(TIMEOUT).expect("callback never fired"), "callback {n} reported an error");
    }
    let fsyncs = fsyncs.load(Ordering::SeqCst);
    assert!(fsyncs >= 1 && fsyncs < total / 2, "{total} appends should share fsyncs, took {fsyncs}");
    assert_eq!(synced_records.load(Ordering::SeqCst), total, "every record is reported durable once");
    assert_eq!(wal.stats().fsyncs, fsyncs as u64);
    assert_eq!(wal.stats().records_written, total as u64);

    let got = read_all(&wal);
    assert_eq!(got.len(), total);
    assert!(got.iter().enumerate().all(|(i, (index, _))| *index == i as u64 + 1));
    drop(wal);
    let (wal, report) = open(tmp.path());
    assert_eq!(report.entries, total);
    assert_eq!(read_all(&wal), got);
}

#[test]
fn callbacks_fire_in_order_and_on_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 1..=20 {
        let order = Arc::clone(&order);
        wal.append(entries(i..=i), Box::new(move |r| order.lock().unwrap().push((i, r.is_ok())))).unwrap();
    }
    let order2 = Arc::clone(&order);
    wal.append(vec![], Box::new(move |r| order2.lock().unwrap().push((0, r.is_ok())))).unwrap();
    drop(wal); // final sync, then every callback has run
    let got = order.lock().unwrap().clone();
    let mut want: Vec<_> = (1..=20).map(|i| (i, true)).collect();
    want.push((0, true));
    assert_eq!(got, want);
}

#[test]
fn last_handle_dropped_inside_a_callback() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    let inner = wal.clone();
    let (tx, rx) = mpsc::channel();
    wal.append(
        entries(1..=1),
        Box::new(move |r| {
            drop(inner); // the last handle, dropped on the flusher thread
            tx.send(r.is_ok()).unwrap();
        }),
    )
    .unwrap();
    drop(wal);
    assert!(rx.recv_timeout(TIMEOUT).unwrap());
    // The flusher exits on its own and releases the directory lock.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let wal = loop {
        match Wal::open(WalOptions::new(tmp.path())) {
            Ok((wal, _)) => break wal,
            Err(WalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("reopen failed: {e}"),
        }
    };
    assert_eq!(read_all(&wal), entries(1..=1));
}

#[test]
fn directory_lock_and_close() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    assert!(matches!(Wal::open(WalOptions::new(tmp.path())), Err(WalError::Locked { .. })));
    append_durable(&wal, entries(1..=2));
    let other = wal.clone();
    wal.close().unwrap();
    wal.close().unwrap(); // idempotent
    assert!(matches!(other.append(entries(3..=3), Box::new(|_| {})), Err(WalError::Closed)));
    assert!(matches!(other.save_vote(b"v"), Err(WalError::Closed)));
    assert!(matches!(other.sync(), Err(WalError::Closed)));
    assert_eq!(read_all(&other), entries(1..=2), "reads work after close");
    drop((wal, other));
    let (wal, _) = open(tmp.path());
    assert_eq!(read_all(&wal), entries(1..=2));
}

/// Random operations against a simple model, with tiny segments and frequent
/// reopens, checking the WAL agrees with the model throughout.
#[test]
fn randomized_operations_match_model() {
    #[derive(Default, Clone, Debug, PartialEq)]
    struct Model {
        entries: BTreeMap<u64, Vec<u8>>,
        next: Option<u64>,
        vote: Option<Vec<u8>>,
        committed: Option<Vec<u8>>,
        purged: Option<(u64, Vec<u8>)>,
    }
    fn check(wal: &Wal, m: &Model, step: usize) {
        let got: BTreeMap<u64, Vec<u8>> = read_all(wal).into_iter().collect();
        assert_eq!(got, m.entries, "entries at step {step}");
        assert_eq!(wal.first_index(), m.entries.keys().next().copied(), "first_index at step {step}");
        assert_eq!(wal.last_index(), m.entries.keys().last().copied(), "last_index at step {step}");
        assert_eq!(wal.vote(), m.vote, "vote at step {step}");
        assert_eq!(wal.committed(), m.committed, "committed at step {step}");
        assert_eq!(wal.purged(), m.purged, "purged at step {step}");
    }

    for seed in 0..4u64 {
        let tmp = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let segment_bytes = rng.random_range(64..400);
        let reopen = |dir: &Path| open_small(dir, segment_bytes).0;
        let mut wal = reopen(tmp.path());
        let mut m = Model::default();
        let counter = AtomicU64::new(0);
        let blob = |rng: &mut StdRng| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let len = rng.random_range(0..40);
            let mut v = n.to_le_bytes().to_vec();
            v.resize(8 + len, b'a' + (n % 26) as u8);
            v
        };

        for step in 0..250 {
            match rng.random_range(0..100) {
                0..=44 => {
                    let first = m.next.unwrap_or_else(|| rng.random_range(0..5));
                    let n = rng.random_range(1..5);
                    let batch: Vec<_> = (first..first + n).map(|i| (i, blob(&mut rng))).collect();
                    for (i, d) in &batch {
                        m.entries.insert(*i, d.clone());
                    }
                    m.next = Some(first + n);
                    if rng.random_bool(0.5) {
                        append_durable(&wal, batch);
                    } else {
                        wal.append(batch, Box::new(|r| r.unwrap())).unwrap();
                    }
                }
                45..=54 => {
                    let Some(next) = m.next else { continue };
                    let lo = m.purged.as_ref().map_or(0, |p| p.0 + 1);
                    let since = rng.random_range(lo..=next + 1);
                    wal.truncate(since).unwrap();
                    if since < next {
                        m.entries.retain(|i, _| *i < since);
                        m.next = Some(since);
                    }
                }
                55..=64 => {
                    let lo = m.purged.as_ref().map_or(0, |p| p.0);
                    let hi = m.next.unwrap_or(lo + 1) + 2;
                    let upto = rng.random_range(lo..=hi);
                    let p = blob(&mut rng);
                    wal.purge(upto, &p).unwrap();
                    m.entries.retain(|i, _| *i > upto);
                    m.next = Some(m.next.map_or(upto + 1, |n| n.max(upto + 1)));
                    m.purged = Some((upto, p));
                    // Purge deleted every old segment it could: the oldest one
                    // left is the active one or still holds a live entry.
                    let segs = segment_paths(tmp.path());
                    if segs.len() > 1 {
                        let max = records_in(&segs[0]).iter().filter_map(|r| r.3).max();
                        assert!(max.is_some_and(|x| x > upto), "seed {seed}: {} should be deleted", segs[0].display());
                    }
                }
                65..=72 => {
                    let v = blob(&mut rng);
                    wal.save_vote(&v).unwrap();
                    m.vote = Some(v);
                }
                73..=82 => {
                    let c = blob(&mut rng);
                    wal.save_committed(&c).unwrap();
                    m.committed = Some(c);
                }
                83..=89 => {
                    let from = rng.random_range(0..m.next.unwrap_or(1) + 2);
                    let to = from + rng.random_range(0..6);
                    let want: Vec<_> = m.entries.range(from..to).map(|(i, d)| (*i, d.clone())).collect();
                    assert_eq!(wal.read(from, to).unwrap(), want, "read({from}, {to}) at step {step}, seed {seed}");
                }
                _ => {
                    drop(wal);
                    wal = reopen(tmp.path());
                }
            }
            check(&wal, &m, step);
        }
        drop(wal);
        let wal = reopen(tmp.path());
        check(&wal, &m, usize::MAX);
    }
}

/// Entries big enough that a 4 KiB page holds at most two of them.
fn big_entries(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|i| (i, vec![b'a' + (i % 26) as u8; 3000])).collect()
}

/// A log whose last batch (entries 5..=8) was written but whose fsync never completed: entries 1..=4 were
/// acknowledged (fsynced, and their sync mark follows them), entries 5..=8 are the unsynced tail. Returns the
/// segment path and the offsets of every record in it.
fn log_with_unsynced_tail(dir: &Path, segment_bytes: u64) -> (PathBuf, Vec<RecordInfo>) {
    let (wal, _) = open_small(dir, segment_bytes);
    append_durable(&wal, big_entries(1..=4));
    append_durable(&wal, big_entries(5..=8));
    drop(wal);
    let path = segment_paths(dir).pop().unwrap();
    // The second fsync "never happened": its sync mark was never written.
    let records = records_in(&path);
    let last = *records.last().unwrap();
    assert_eq!(last.2, "sync mark");
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(last.0).unwrap();
    (path, records[..records.len() - 1].to_vec())
}

fn damage(path: &Path, from: u64, len: usize, byte: u8) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &vec![byte; len], from).unwrap();
}

#[test]
fn holes_in_the_unsynced_tail_are_a_torn_tail() {
    // Pages of the unsynced tail written back out of order by a power cut: zeroed or stale pages with data
    // that did arrive after them. Recovery cuts at the first hole and keeps every acknowledged entry.
    // 10_000: the WAL rolls just before entry 5, so the unsynced tail is all of a new segment after its
    // checkpoint (and the last sync mark is in the previous segment).
    for segment_bytes in [DEFAULT_SEGMENT_BYTES, 10_000] {
        for (case, byte) in [("zeroed", 0u8), ("garbage", 0xa5)] {
            for hole_in in [5u64, 6, 7] {
                let what = format!("{case} page in entry {hole_in}, segment_bytes {segment_bytes}");
                let tmp = tempfile::tempdir().unwrap();
                let (path, records) = log_with_unsynced_tail(tmp.path(), segment_bytes);
                let target = *records.iter().find(|r| r.3 == Some(hole_in)).unwrap_or_else(|| panic!("{what}"));
                if segment_bytes == 10_000 {
                    assert_eq!(records.iter().filter_map(|r| r.3).collect::<Vec<_>>(), [5, 6, 7, 8], "{what}");
                }
                let len_before = fs::metadata(&path).unwrap().len();
                // A page-sized hole starting inside the record; the later entries' bytes are still there.
                let page_start = (target.0 + 16) & !4095;
                let hole_start = page_start.max(target.0 + 16);
                let hole_end = (page_start + 4096).min(target.0 + target.1 as u64);
                damage(&path, hole_start, (hole_end - hole_start) as usize, byte);
                assert!(hole_end < len_before, "{what}: data must follow the hole");

                let (wal, report) = open_small(tmp.path(), segment_bytes);
                let torn = report.torn_tail.clone().unwrap_or_else(|| panic!("{what}: expected a torn tail"));
                assert_eq!((torn.path.clone(), torn.offset), (path.clone(), target.0), "{what}");
                assert_eq!(torn.bytes_dropped, len_before - target.0, "{what}");
                assert_eq!(read_all(&wal), big_entries(1..=hole_in - 1), "{what}: acknowledged entries kept");
                // The log goes on after the repair.
                append_durable(&wal, big_entries(hole_in..=hole_in));
                drop(wal);
                let (wal, report) = open_small(tmp.path(), segment_bytes);
                assert_eq!(report.torn_tail, None, "{what}");
                assert_eq!(read_all(&wal), big_entries(1..=hole_in), "{what}");
            }
        }
    }
}

#[test]
fn hole_over_the_last_sync_mark_is_a_torn_tail() {
    // The mark of the last completed fsync rides in the unsynced tail; losing it loses nothing acknowledged.
    let tmp = tempfile::tempdir().unwrap();
    let (path, records) = log_with_unsynced_tail(tmp.path(), DEFAULT_SEGMENT_BYTES);
    let mark = *records.iter().find(|r| r.2 == "sync mark").unwrap();
    damage(&path, mark.0, mark.1, 0);
    let (wal, report) = open(tmp.path());
    assert_eq!(report.torn_tail.map(|t| t.offset), Some(mark.0));
    assert_eq!(read_all(&wal), big_entries(1..=4));
}

#[test]
fn damage_before_the_synced_point_is_refused() {
    // Entries 1..=8 all acknowledged (both fsyncs completed, both marks on disk).
    let setup = || {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _) = open(tmp.path());
        append_durable(&wal, big_entries(1..=4));
        append_durable(&wal, big_entries(5..=8));
        drop(wal);
        let path = segment_paths(tmp.path()).pop().unwrap();
        let records = records_in(&path);
        (tmp, path, records)
    };
    for (what, victim, byte, to_end) in [
        ("zeroed page mid-log", 3u64, 0u8, false),
        ("garbage mid-log", 6, 0x5a, false),
        // The last acknowledged entry rotted to zeros up to its end: without sync marks only zeros followed it,
        // which looked like a torn write, and the acknowledged entry was silently cut.
        ("last entry zeroed to its end", 8, 0, true),
    ] {
        let (tmp, path, records) = setup();
        let target = *records.iter().find(|r| r.3 == Some(victim)).unwrap();
        let len = if to_end { target.1 - 20 } else { 2000 };
        damage(&path, target.0 + 20, len, byte);
        let before = fs::read(&path).unwrap();
        let (bad, offset, msg) = expect_corrupt(tmp.path());
        assert_eq!((bad, offset), (path.clone(), target.0), "{what}: {msg}");
        assert!(msg.contains("damage to synced data"), "{what}: {msg}");
        assert_eq!(fs::read(&path).unwrap(), before, "{what}: a refused open must not modify the file");
    }
}

#[test]
fn sync_mark_at_the_wrong_place_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = four_entry_log(tmp.path());
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(records_end(&path) as usize); // right after the last record, where the zeros were
    let at = bytes.len() as u64 + 8; // claims an offset it is not at
    record::encode(&Record::Synced { segment: 1, at, synced: 10 }, &mut bytes);
    fs::write(&path, &bytes).unwrap();
    let (_, _, msg) = expect_corrupt(tmp.path());
    assert!(msg.contains("sync mark names segment 1"), "{msg}");
}

#[test]
fn clean_close_leaves_the_last_sync_mark_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(tmp.path());
    append_durable(&wal, entries(1..=3));
    let fsyncs = wal.stats().fsyncs;
    wal.close().unwrap();
    let path = segment_paths(tmp.path()).pop().unwrap();
    let kinds: Vec<_> = records_in(&path).iter().map(|r| r.2).collect();
    assert_eq!(kinds, ["checkpoint", "entry", "entry", "entry", "sync mark"]);
    assert!(fsyncs >= 1);
}

/// A full disk poisons the WAL: the hook fires once with the cause, `poisoned()` reports it, every later write
/// fails, and after space is freed a reopen recovers everything that was acknowledged. Needs a tmpfs (root);
/// skipped with a message otherwise.
#[test]
fn full_disk_poisons_once_and_reopen_recovers_the_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("small");
    fs::create_dir_all(&dir).unwrap();
    let mounted =
        std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"]).arg(&dir).output();
    match mounted {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("SKIPPED: cannot mount a tmpfs ({other:?}); run as root");
            return;
        }
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&dir);

    let calls = Arc::new(Mutex::new(Vec::new()));
    let hook: PoisonHook = {
        let calls = Arc::clone(&calls);
        Arc::new(move |reason: &str| calls.lock().unwrap().push(reason.to_string()))
    };
    let (wal, _) = open_opts(WalOptions { on_poison: Some(hook), ..WalOptions::new(&dir) });
    let mut acked = 0;
    let failure = loop {
        let (tx, rx) = mpsc::channel();
        let i = acked + 1;
        if let Err(e) = wal.append(big_entries(i..=i), Box::new(move |r| tx.send(r).unwrap())) {
            break e.to_string();
        }
        match rx.recv_timeout(TIMEOUT).unwrap() {
            Ok(()) => acked = i,
            Err(e) => break e.to_string(),
        }
        assert!(acked < 1000, "256 KiB never filled up");
    };
    assert!(failure.contains("No space left on device"), "{failure}");
    assert!(wal.poisoned().is_some_and(|r| r.contains("No space left")), "{:?}", wal.poisoned());
    assert!(matches!(wal.save_vote(b"v"), Err(WalError::Poisoned { .. })));
    assert_eq!(calls.lock().unwrap().len(), 1, "the hook fires once: {:?}", calls.lock().unwrap());
    drop(wal);

    let out = std::process::Command::new("mount").args(["-o", "remount,size=4m"]).arg(&dir).output().unwrap();
    assert!(out.status.success());
    let (wal, _) = open(&dir);
    let got = read_all(&wal);
    assert!(got.len() as u64 >= acked, "{} entries recovered, {acked} acknowledged", got.len());
    assert_eq!(got[..acked as usize], big_entries(1..=acked)[..], "every acknowledged entry is intact");
}
