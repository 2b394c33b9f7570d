//! Record framing: how one logical record is laid out in a segment file, and a
//! scanner that walks a segment's bytes and classifies whatever it finds.
//!
//! # Frame
//!
//! ```text
//! +-----------------+-----------------+--------+-------------------+
//! | len: u32 LE     | crc: u32 LE     | type:u8| payload (len B)   |
//! +-----------------+-----------------+--------+-------------------+
//!   0                 4                 8        9
//! ```
//!
//! * `len` counts the payload only (not the 9-byte header, not the type byte).
//! * `crc` is CRC32C (Castagnoli) over the type byte followed by the payload.
//!   The length is not covered directly, but a wrong length makes the CRC run
//!   over the wrong bytes, which fails the check just the same.
//! * `len` may not exceed [`MAX_PAYLOAD`] (64 MiB), so a garbage length cannot
//!   make a reader allocate gigabytes.
//! * Type `0` is never written, so a zero-filled region never decodes as a record
//!   (its CRC check fails too: CRC32C of a zero byte is not zero).
//!
//! # Record types and payloads (all integers little-endian)
//!
//! | type | name       | payload                                                   |
//! |------|------------|-----------------------------------------------------------|
//! | 1    | Entry      | `index: u64`, then the caller's entry bytes               |
//! | 2    | Vote       | the caller's vote bytes                                   |
//! | 3    | Committed  | the caller's committed bytes                              |
//! | 4    | Truncate   | `since: u64` — entries with index >= since are removed    |
//! | 5    | Purge      | `upto: u64`, then the caller's bytes (its log id) — entries <= upto are removed |
//! | 6    | Checkpoint | see below                                                 |
//! | 7    | Synced     | `segment: u64, at: u64, synced: u64` — a *sync mark*, see below |
//!
//! A Checkpoint is the first record of every segment. It carries the complete
//! metadata state as of the moment the segment was created, so that older
//! segments can be deleted without losing the vote, committed or purge records
//! they held:
//!
//! ```text
//! version: u8 (=1)
//! flags:   u8   bit0 vote present, bit1 committed present,
//!               bit2 purged present, bit3 log range present
//! [start: u64, next: u64]            if bit3 — entries [start, next) were live
//! [upto: u64, len: u32, bytes]       if bit2 — the purge index and payload
//! [len: u32, bytes]                  if bit0 — the vote
//! [len: u32, bytes]                  if bit1 — the committed payload
//! ```
//!
//! A Synced record (a *sync mark*) is written by the flusher right after each group fsync: "every byte of
//! segment `segment` below offset `synced` is on stable storage", and it sits at offset `at` of that segment
//! (so `synced <= at`). It is not itself fsynced: it rides along with the next sync. Recovery uses the highest
//! mark it finds to tell a torn unsynced tail (damage at or after the synced point, which a power cut can cause,
//! holes included) from corruption of data that was already synced (damage before it). A mark says nothing
//! about the log's state and is never replayed into it. Naming its own segment and offset makes a mark found at
//! the wrong place (say, inside an entry's payload) invalid.
//!
//! Decoding is strict: unknown types, unknown flags, short payloads and trailing
//! bytes are all errors. A record whose CRC is valid but whose contents do not
//! parse was written that way, so it is always corruption, never a torn write.

use std::fmt;

/// Size of the frame header: length, CRC, type.
pub(crate) const HEADER_LEN: usize = 9;

/// Largest payload a record may carry (type byte excluded).
pub(crate) const MAX_PAYLOAD: usize = 64 << 20;

/// Largest caller payload for an entry (its index takes 8 bytes of the record).
pub(crate) const MAX_ENTRY_DATA: usize = MAX_PAYLOAD - 8;

/// Largest vote / committed / purge payload. These are all repeated in every
/// Checkpoint, which must itself fit in one record, so they are kept small.
pub(crate) const MAX_META_DATA: usize = 1 << 20;

const CHECKPOINT_VERSION: u8 = 1;
const FLAG_VOTE: u8 = 1 << 0;
const FLAG_COMMITTED: u8 = 1 << 1;
const FLAG_PURGED: u8 = 1 << 2;
const FLAG_RANGE: u8 = 1 << 3;
const KNOWN_FLAGS: u8 = FLAG_VOTE | FLAG_COMMITTED | FLAG_PURGED | FLAG_RANGE;

/// On-disk record type tags. Never renumber these: they are the file format.
pub(crate) const TYPE_ENTRY: u8 = 1;
const TYPE_VOTE: u8 = 2;
const TYPE_COMMITTED: u8 = 3;
const TYPE_TRUNCATE: u8 = 4;
const TYPE_PURGE: u8 = 5;
const TYPE_CHECKPOINT: u8 = 6;
const TYPE_SYNCED: u8 = 7;

/// Payload length of a sync mark, and its whole frame.
const SYNCED_PAYLOAD: usize = 24;
pub(crate) const SYNCED_FRAME: usize = HEADER_LEN + SYNCED_PAYLOAD;

/// The metadata state a Checkpoint record carries. It is also what replay
/// compares a checkpoint against (see `recovery.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub vote: Option<Vec<u8>>,
    pub committed: Option<Vec<u8>>,
    /// Last purge: its index and the caller's payload.
    pub purged: Option<(u64, Vec<u8>)>,
    /// The live index range `[start, next)`, or None if the log has never had an
    /// entry nor a purge (then any first index is accepted).
    pub range: Option<(u64, u64)>,
}

/// One decoded record. Byte payloads borrow from the buffer they were read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    Entry {
        index: u64,
        data: &'a [u8],
    },
    Vote(&'a [u8]),
    Committed(&'a [u8]),
    Truncate {
        since: u64,
    },
    Purge {
        upto: u64,
        payload: &'a [u8],
    },
    Checkpoint(Checkpoint),
    /// A sync mark: bytes `[0, synced)` of segment `segment` were fsynced; the mark itself is at offset `at`.
    Synced {
        segment: u64,
        at: u64,
        synced: u64,
    },
}

impl Record<'_> {
    /// The record type's name, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Record::Entry { .. } => "entry",
            Record::Vote(_) => "vote",
            Record::Committed(_) => "committed",
            Record::Truncate { .. } => "truncate",
            Record::Purge { .. } => "purge",
            Record::Checkpoint(_) => "checkpoint",
            Record::Synced { .. } => "sync mark",
        }
    }

    fn type_tag(&self) -> u8 {
        match self {
            Record::Entry { .. } => TYPE_ENTRY,
            Record::Vote(_) => TYPE_VOTE,
            Record::Committed(_) => TYPE_COMMITTED,
            Record::Truncate { .. } => TYPE_TRUNCATE,
            Record::Purge { .. } => TYPE_PURGE,
            Record::Checkpoint(_) => TYPE_CHECKPOINT,
            Record::Synced { .. } => TYPE_SYNCED,
        }
    }
}

/// Appends the framed record to `out` and returns the length of its payload.
pub(crate) fn encode(record: &Record<'_>, out: &mut Vec<u8>) -> u32 {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    out[start + 8] = record.type_tag();
    match record {
        Record::Entry { index, data } => {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(data);
        }
        Record::Vote(data) | Record::Committed(data) => out.extend_from_slice(data),
        Record::Truncate { since } => out.extend_from_slice(&since.to_le_bytes()),
        Record::Purge { upto, payload } => {
            out.extend_from_slice(&upto.to_le_bytes());
            out.extend_from_slice(payload);
        }
        Record::Checkpoint(cp) => encode_checkpoint(cp, out),
        Record::Synced { segment, at, synced } => {
            for v in [segment, at, synced] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    let payload_len = out.len() - start - HEADER_LEN;
    // Callers check sizes against MAX_ENTRY_DATA / MAX_META_DATA before encoding;
    // getting here with an oversized record is a bug, and writing it would make a
    // log that recovery rejects.
    assert!(
        payload_len <= MAX_PAYLOAD,
        "WAL record payload of {payload_len} bytes exceeds MAX_PAYLOAD; size checks were skipped"
    );
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    payload_len as u32
}

fn encode_checkpoint(cp: &Checkpoint, out: &mut Vec<u8>) {
    let mut flags = 0;
    if cp.vote.is_some() {
        flags |= FLAG_VOTE;
    }
    if cp.committed.is_some() {
        flags |= FLAG_COMMITTED;
    }
    if cp.purged.is_some() {
        flags |= FLAG_PURGED;
    }
    if cp.range.is_some() {
        flags |= FLAG_RANGE;
    }
    out.push(CHECKPOINT_VERSION);
    out.push(flags);
    if let Some((start, next)) = cp.range {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&next.to_le_bytes());
    }
    if let Some((upto, payload)) = &cp.purged {
        out.extend_from_slice(&upto.to_le_bytes());
        put_bytes(payload, out);
    }
    if let Some(vote) = &cp.vote {
        put_bytes(vote, out);
    }
    if let Some(committed) = &cp.committed {
        put_bytes(committed, out);
    }
}

fn put_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Decodes a record whose CRC has already been verified. `payload` excludes the
/// type byte. Errors describe why a well-framed record makes no sense.
pub(crate) fn decode(type_tag: u8, payload: &[u8]) -> Result<Record<'_>, String> {
    match type_tag {
        TYPE_ENTRY => {
            let (index, data) =
                split_u64(payload).ok_or_else(|| format!("entry record too short ({} bytes)", payload.len()))?;
            Ok(Record::Entry { index, data })
        }
        TYPE_VOTE => Ok(Record::Vote(payload)),
        TYPE_COMMITTED => Ok(Record::Committed(payload)),
        TYPE_TRUNCATE => match split_u64(payload) {
            Some((since, [])) => Ok(Record::Truncate { since }),
            _ => Err(format!("truncate record has {} bytes, expected 8", payload.len())),
        },
        TYPE_PURGE => {
            let (upto, payload) =
                split_u64(payload).ok_or_else(|| format!("purge record too short ({} bytes)", payload.len()))?;
            Ok(Record::Purge { upto, payload })
        }
        TYPE_CHECKPOINT => decode_checkpoint(payload).map(Record::Checkpoint),
        TYPE_SYNCED => {
            let mut r = Reader(payload);
            match (r.u64(), r.u64(), r.u64(), r.0.is_empty()) {
                (Some(segment), Some(at), Some(synced), true) if synced <= at => {
                    Ok(Record::Synced { segment, at, synced })
                }
                (Some(_), Some(at), Some(synced), true) => {
                    Err(format!("sync mark at offset {at} claims a synced point {synced} after itself"))
                }
                _ => Err(format!("sync mark has {} bytes, expected {SYNCED_PAYLOAD}", payload.len())),
            }
        }
        other => Err(format!("unknown record type {other}")),
    }
}

fn decode_checkpoint(payload: &[u8]) -> Result<Checkpoint, String> {
    let mut r = Reader(payload);
    let version = r.u8().ok_or("checkpoint record is empty")?;
    if version != CHECKPOINT_VERSION {
        return Err(format!("unsupported checkpoint version {version}"));
    }
    let flags = r.u8().ok_or("checkpoint record has no flags byte")?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(format!("checkpoint has unknown flags {flags:#04x}"));
    }
    let short = || "checkpoint record is truncated".to_string();
    let mut cp = Checkpoint::default();
    if flags & FLAG_RANGE != 0 {
        let start = r.u64().ok_or_else(short)?;
        let next = r.u64().ok_or_else(short)?;
        if start > next {
            return Err(format!("checkpoint range start {start} is after next {next}"));
        }
        cp.range = Some((start, next));
    }
    if flags & FLAG_PURGED != 0 {
        let upto = r.u64().ok_or_else(short)?;
        let bytes = r.bytes().ok_or_else(short)?;
        cp.purged = Some((upto, bytes.to_vec()));
    }
    if flags & FLAG_VOTE != 0 {
        cp.vote = Some(r.bytes().ok_or_else(short)?.to_vec());
    }
    if flags & FLAG_COMMITTED != 0 {
        cp.committed = Some(r.bytes().ok_or_else(short)?.to_vec());
    }
    if !r.0.is_empty() {
        return Err(format!("checkpoint record has {} trailing bytes", r.0.len()));
    }
    Ok(cp)
}

fn split_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = b.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

/// A cursor over a checkpoint payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u64(&mut self) -> Option<u64> {
        let (v, rest) = split_u64(self.0)?;
        self.0 = rest;
        Some(v)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (bytes, rest) = rest.split_at(len);
        self.0 = rest;
        Some(bytes)
    }
}

/// Reads the header at the start of `buf`: (payload length, crc, type).
pub(crate) fn parse_header(buf: &[u8]) -> Option<(usize, u32, u8)> {
    let header: &[u8; HEADER_LEN] = buf.first_chunk()?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    Some((len, crc, header[8]))
}

/// Checks a complete frame (`buf` = header + payload, exactly) and decodes it.
/// Used when reading entries back, where the frame's extent is known in advance.
pub(crate) fn check_frame(buf: &[u8]) -> Result<Record<'_>, String> {
    let (len, crc, tag) = parse_header(buf).ok_or("record shorter than its header")?;
    if HEADER_LEN + len != buf.len() {
        return Err(format!(
            "record claims {len} bytes but the index expects {}",
            buf.len().saturating_sub(HEADER_LEN)
        ));
    }
    if crc32c::crc32c(&buf[8..]) != crc {
        return Err(format!("CRC mismatch (record claims {len} bytes)"));
    }
    decode(tag, &buf[HEADER_LEN..])
}

/// Why the scanner stopped before the end of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Defect {
    /// Everything from here to end of file is zero bytes (space the filesystem
    /// allocated before the data reached it).
    ZeroTail,
    /// Fewer than HEADER_LEN bytes remain.
    HeaderPastEof { remaining: usize },
    /// The header claims more bytes than remain in the file.
    PayloadPastEof { claimed: usize, remaining: usize },
    /// The claimed length is above MAX_PAYLOAD but the file does hold that much.
    TooLong { claimed: usize },
    /// CRC mismatch on a record that ends exactly at end of file, or that is
    /// followed only by zero bytes: the last write was cut short.
    CrcAtTail { claimed: usize },
    /// CRC mismatch on a record followed by more (non-zero) data: damage in the middle, or a hole in an
    /// unsynced tail whose later pages reached the disk.
    CrcMismatch { claimed: usize },
    /// The CRC is valid but the contents are malformed.
    Malformed { reason: String },
}

impl Defect {
    /// Whether a crash could have produced this defect in bytes that were written but not yet fsynced: an
    /// interrupted append, or pages of the unsynced tail that reached the disk out of order (holes of zeros
    /// or stale data, followed by data that did arrive). Only a record with a valid CRC and nonsensical
    /// contents cannot come from a crash: it was written that way. Whether such a defect is really a torn
    /// tail depends on where it is relative to the synced point (see `recovery.rs`).
    pub(crate) fn is_torn_write(&self) -> bool {
        !matches!(self, Defect::Malformed { .. })
    }
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::ZeroTail => write!(f, "zero-filled tail"),
            Defect::HeaderPastEof { remaining } => {
                write!(f, "record header cut short ({remaining} of {HEADER_LEN} bytes present)")
            }
            Defect::PayloadPastEof { claimed, remaining } => {
                write!(f, "record runs past end of file (claims {claimed} bytes, {remaining} present)")
            }
            Defect::TooLong { claimed } => {
                write!(f, "record claims {claimed} bytes, over the {MAX_PAYLOAD}-byte limit")
            }
            Defect::CrcAtTail { claimed } | Defect::CrcMismatch { claimed } => {
                write!(f, "CRC mismatch (record claims {claimed} bytes)")
            }
            Defect::Malformed { reason } => write!(f, "{reason}"),
        }
    }
}

/// One step of a scan.
#[derive(Debug)]
pub(crate) enum Scanned<'a> {
    /// A valid record starting at `offset`, with payload length `len`.
    Record { offset: u64, len: u32, record: Record<'a> },
    /// A defect at `offset`; the scan cannot continue past it.
    Defect { offset: u64, defect: Defect },
    /// Clean end of the buffer.
    End,
}

/// Walks the records of one segment's bytes from the start.
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Scanner { buf, pos: 0, done: false }
    }

    /// Returns the next record, a defect, or End. After a defect or End it keeps
    /// returning End.
    #[allow(clippy::should_implement_trait)] // not an Iterator: End is a value, not None
    pub(crate) fn next(&mut self) -> Scanned<'a> {
        if self.done || self.pos == self.buf.len() {
            self.done = true;
            return Scanned::End;
        }
        let offset = self.pos as u64;
        match self.step() {
            Ok((len, record)) => {
                self.pos += HEADER_LEN + len as usize;
                Scanned::Record { offset, len, record }
            }
            Err(defect) => {
                self.done = true;
                // An all-zero remainder is a zero-filled tail whatever the header
                // bytes happened to decode as (they are zeros too).
                let defect = if is_zero(&self.buf[self.pos..]) { Defect::ZeroTail } else { defect };
                Scanned::Defect { offset, defect }
            }
        }
    }

    fn step(&self) -> Result<(u32, Record<'a>), Defect> {
        let rest = &self.buf[self.pos..];
        let Some((len, crc, tag)) = parse_header(rest) else {
            return Err(Defect::HeaderPastEof { remaining: rest.len() });
        };
        let remaining = rest.len() - HEADER_LEN;
        if len > remaining {
            return Err(Defect::PayloadPastEof { claimed: len, remaining });
        }
        if len > MAX_PAYLOAD {
            return Err(Defect::TooLong { claimed: len });
        }
        let frame_end = HEADER_LEN + len;
        if crc32c::crc32c(&rest[8..frame_end]) != crc {
            // Nothing but zeros after a bad record means it was the last write,
            // cut short; anything else after it means the damage is in the middle.
            return Err(if is_zero(&rest[frame_end..]) {
                Defect::CrcAtTail { claimed: len }
            } else {
                Defect::CrcMismatch { claimed: len }
            });
        }
        let record = decode(tag, &rest[HEADER_LEN..frame_end]).map_err(|reason| Defect::Malformed { reason })?;
        Ok((len as u32, record))
    }
}

/// The sync mark of segment `segment`, starting at or after offset `from`, that claims the highest synced
/// point: `(synced, at)`.
///
/// Used past a defect, where record boundaries are unknown, so every offset is tried. A candidate must have the
/// mark's type and length, a valid CRC, and name this segment and its own offset, so bytes that merely look like
/// a mark (inside an entry's payload, or left over at another offset) do not count.
pub(crate) fn max_sync_mark_after(buf: &[u8], from: usize, segment: u64) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    let last_start = buf.len().checked_sub(SYNCED_FRAME)?;
    for at in from..=last_start {
        let frame = &buf[at..at + SYNCED_FRAME];
        if frame[8] != TYPE_SYNCED || frame[0..4] != (SYNCED_PAYLOAD as u32).to_le_bytes() {
            continue;
        }
        if let Ok(Record::Synced { segment: s, at: a, synced }) = check_frame(frame) {
            if s == segment && a == at as u64 && best.is_none_or(|(b, _)| synced > b) {
                best = Some((synced, a));
            }
        }
    }
    best
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(r: &Record<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        encode(r, &mut v);
        v
    }

    #[test]
    fn records_round_trip() {
        let cp = Checkpoint {
            vote: Some(b"v".to_vec()),
            committed: None,
            purged: Some((7, b"logid".to_vec())),
            range: Some((8, 12)),
        };
        let records = [
            Record::Entry { index: 42, data: b"hello" },
            Record::Entry { index: 0, data: b"" },
            Record::Vote(b"vote"),
            Record::Committed(b""),
            Record::Truncate { since: 9 },
            Record::Purge { upto: 3, payload: b"x" },
            Record::Checkpoint(cp),
            Record::Checkpoint(Checkpoint::default()),
            Record::Synced { segment: 3, at: 100, synced: 90 },
        ];
        let mut buf = Vec::new();
        for r in &records {
            encode(r, &mut buf);
        }
        let mut s = Scanner::new(&buf);
        for want in &records {
            match s.next() {
                Scanned::Record { record, .. } => assert_eq!(&record, want),
                other => panic!("expected {want:?}, got {other:?}"),
            }
        }
        assert!(matches!(s.next(), Scanned::End));
    }

    #[test]
    fn header_layout_is_stable() {
        let f = frame(&Record::Vote(b"ab"));
        assert_eq!(&f[0..4], &2u32.to_le_bytes(), "length counts payload only");
        assert_eq!(f[8], TYPE_VOTE);
        assert_eq!(&f[4..8], &crc32c::crc32c(&[TYPE_VOTE, b'a', b'b']).to_le_bytes());
        assert_eq!(&f[9..], b"ab");
    }

    #[test]
    fn defects_are_classified() {
        let good = frame(&Record::Vote(b"abcdef"));
        let classify = |buf: &[u8]| {
            let mut s = Scanner::new(buf);
            let _ = s.next();
            match s.next() {
                Scanned::Defect { offset, defect } => {
                    assert_eq!(offset, good.len() as u64);
                    defect
                }
                other => panic!("expected defect, got {other:?}"),
            }
        };
        let rec = frame(&Record::Committed(b"0123456789"));
        let with = |tail: &[u8]| [good.as_slice(), tail].concat();

        assert_eq!(classify(&with(&[0; 30])), Defect::ZeroTail);
        assert_eq!(classify(&with(&rec[..5])), Defect::HeaderPastEof { remaining: 5 });
        assert_eq!(classify(&with(&rec[..12])), Defect::PayloadPastEof { claimed: 10, remaining: 3 });

        let mut bad = rec.clone();
        bad[12] ^= 1;
        assert_eq!(classify(&with(&bad)), Defect::CrcAtTail { claimed: 10 });
        assert_eq!(classify(&with(&[bad.as_slice(), &[0; 7]].concat())), Defect::CrcAtTail { claimed: 10 });
        assert_eq!(classify(&with(&[bad.as_slice(), &good].concat())), Defect::CrcMismatch { claimed: 10 });

        let mut huge = rec.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(classify(&with(&huge)), Defect::PayloadPastEof { .. }));

        // A valid CRC over an unknown type is written corruption, not a torn write.
        let mut unknown = rec.clone();
        unknown[8] = 99;
        let crc = crc32c::crc32c(&unknown[8..]);
        unknown[4..8].copy_from_slice(&crc.to_le_bytes());
        let d = classify(&with(&unknown));
        assert_eq!(d, Defect::Malformed { reason: "unknown record type 99".into() });
        assert!(!d.is_torn_write());
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        assert!(decode(TYPE_ENTRY, &[1, 2, 3]).is_err());
        assert!(decode(TYPE_TRUNCATE, &[0; 9]).is_err());
        assert!(decode(TYPE_CHECKPOINT, &[]).is_err());
        assert!(decode(TYPE_CHECKPOINT, &[2, 0]).is_err(), "unknown version");
        assert!(decode(TYPE_CHECKPOINT, &[1, 0x80]).is_err(), "unknown flag");
        assert!(decode(TYPE_CHECKPOINT, &[1, 0, 0]).is_err(), "trailing byte");
        assert!(decode(TYPE_CHECKPOINT, &[1, FLAG_VOTE, 5, 0, 0, 0, 1]).is_err(), "short bytes");
        assert_eq!(decode(TYPE_CHECKPOINT, &[1, 0]), Ok(Record::Checkpoint(Checkpoint::default())));
        assert!(decode(TYPE_SYNCED, &[0; 23]).is_err(), "short sync mark");
        let mut after_itself = [0u8; 24];
        after_itself[16] = 1; // synced 1 > at 0
        assert!(decode(TYPE_SYNCED, &after_itself).unwrap_err().contains("after itself"));
    }

    #[test]
    fn sync_marks_are_found_past_a_defect_only_at_their_own_offset() {
        let mut buf = vec![0xab; 50]; // garbage
        let at = buf.len() as u64;
        encode(&Record::Synced { segment: 2, at, synced: 40 }, &mut buf);
        buf.extend_from_slice(&[0; 7]);
        let misplaced = buf.len() as u64 + 1; // claims an offset it is not at
        encode(&Record::Synced { segment: 2, at: misplaced, synced: 45 }, &mut buf);
        let other_segment = buf.len() as u64;
        encode(&Record::Synced { segment: 9, at: other_segment, synced: 47 }, &mut buf);
        assert_eq!(max_sync_mark_after(&buf, 0, 2), Some((40, at)));
        assert_eq!(max_sync_mark_after(&buf, at as usize + 1, 2), None);
        assert_eq!(max_sync_mark_after(&buf, 0, 9), Some((47, other_segment)));
        assert_eq!(max_sync_mark_after(&buf[..10], 0, 2), None);
    }

    #[test]
    fn check_frame_verifies_length_and_crc() {
        let f = frame(&Record::Entry { index: 5, data: b"payload" });
        assert_eq!(check_frame(&f), Ok(Record::Entry { index: 5, data: b"payload" }));
        let mut bad = f.clone();
        bad[15] ^= 0x40;
        assert!(check_frame(&bad).unwrap_err().contains("CRC mismatch"));
        assert!(check_frame(&f[..f.len() - 1]).unwrap_err().contains("claims"));
    }
}
