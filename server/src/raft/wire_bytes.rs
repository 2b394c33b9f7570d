//! Byte strings on the wire and on disk as one slice, not one element at a time.
//!
//! serde serializes a `Vec<u8>` as a sequence: every byte is a separate `serialize_u8` call (and every byte is
//! pushed on its own when decoding). In a release build that is merely slow; in a debug build a 1.5 MiB value
//! costs tens of milliseconds per pass, and a log entry is encoded or decoded about five times between a client's
//! put and its commit (leader WAL, leader read for replication, peer message, follower decode, follower WAL). That
//! alone exceeded openraft's AppendEntries timeout (see `raft::network`) and kept a 1.5 MiB put from ever
//! committing in a debug build (issue 9, item 10).
//!
//! Use with `#[serde(with = "crate::raft::wire_bytes")]` on large `Vec<u8>` fields (values).
//!
//! Invariant: the encoding is byte-for-byte the one serde's sequence form gives in postcard (a varint length,
//! then the bytes), so existing WAL records, snapshots and peer messages stay readable; a unit test checks it.

use serde::{de, Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(Visitor)
}

struct Visitor;

impl<'de> de::Visitor<'de> for Visitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    /// Formats that have no byte strings (JSON) hand over a sequence.
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        a: Vec<u8>,
        n: u32,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Fast {
        #[serde(with = "super")]
        a: Vec<u8>,
        n: u32,
    }

    #[test]
    fn same_bytes_as_the_sequence_form() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let a: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let plain = postcard::to_stdvec(&Plain { a: a.clone(), n: 7 }).unwrap();
            let fast = postcard::to_stdvec(&Fast { a: a.clone(), n: 7 }).unwrap();
            assert_eq!(plain, fast, "len {len}");
            let back: Fast = postcard::from_bytes(&plain).unwrap();
            assert_eq!(back, Fast { a, n: 7 });
        }
    }
}
