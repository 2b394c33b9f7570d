//! The search's memo: the configurations it has already explored (Lowe's memoization).
//!
//! A configuration is a set of *settled* entries (a bitset over a key's entries), the register
//! state, and a restriction on the next op (see [`super::search`]). The search asks two questions
//! many times per configuration: "was this exact configuration explored?" and, for dominance,
//! "was this configuration with a few bits cleared explored?". Both are answered without hashing
//! the bitset or allocating, through a Zobrist fingerprint: every entry has a fixed random 64-bit
//! value, a set's fingerprint is the XOR of its members' values (so it is updated in O(1) as bits
//! flip, and clearing a bit is one more XOR), and the state and restriction are mixed in.
//!
//! Fingerprints only find candidates: the memo also stores each configuration itself, compactly,
//! and a lookup counts as a hit only if the stored configuration is equal. So the memo is exact; a
//! fingerprint collision costs a comparison, never a wrong verdict.
//!
//! The compact form of a set (its *key*) is built by the search (see `settled_key` there): the
//! frontier of completed entries, the few unsettled entries before it, and the settled ones from
//! it on. Settled entries cluster at the front (entries are in invocation order), so most keys
//! take a few words however long the history. The memo only requires that equal sets have equal
//! keys and different sets different keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::State;

/// A bijective mix of 64 bits (the SplitMix64 finalizer): consecutive inputs give unrelated outputs.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The Zobrist value of entry `entry` in a set.
pub(crate) fn member_print(entry: usize) -> u64 {
    mix(entry as u64)
}

/// The full fingerprint of a configuration, from its set's fingerprint.
fn fingerprint(set_print: u64, state: State, restriction: State) -> u64 {
    // Complemented so that the input is unlike any member's (entry indices are small numbers).
    set_print ^ mix(!((u64::from(state) << 32) | u64::from(restriction)))
}

/// Hashes fingerprints, which are already uniformly distributed, by passing them through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; this keeps the hasher correct for anything else anyway.
        for &byte in bytes {
            self.0 = mix(self.0 ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A configuration, stored compactly.
#[derive(Debug)]
struct Stored {
    key: Box<[u64]>,
    state: State,
    restriction: State,
}

impl Stored {
    fn equals(&self, key: &[u64], state: State, restriction: State) -> bool {
        self.state == state && self.restriction == restriction && *self.key == *key
    }

    /// Roughly what storing this configuration costs, table overhead included.
    fn footprint(&self) -> usize {
        std::mem::size_of::<(u64, Stored)>() * 2 + std::mem::size_of_val(&*self.key)
    }
}

/// Explored configurations.
#[derive(Default)]
pub(crate) struct Memo {
    /// By fingerprint. Fingerprints of distinct configurations almost never collide; the
    /// `colliding` list holds the rare extra configurations that share one.
    table: HashMap<u64, Stored, BuildHasherDefault<PassThrough>>,
    colliding: Vec<(u64, Stored)>,
    bytes: usize,
}

impl Memo {
    /// Approximate memory use.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the configuration was stored. `set_print` must be the Zobrist fingerprint of the
    /// set whose key `key` computes; `key` is only called on a fingerprint match.
    pub(crate) fn contains(
        &self,
        set_print: u64,
        key: impl FnOnce() -> Vec<u64>,
        state: State,
        restriction: State,
    ) -> bool {
        let print = fingerprint(set_print, state, restriction);
        let Some(stored) = self.table.get(&print) else { return false };
        let key = key();
        stored.equals(&key, state, restriction)
            || self.colliding.iter().any(|(other, stored)| *other == print && stored.equals(&key, state, restriction))
    }

    /// Stores a configuration that is not stored yet, given its set's fingerprint and key.
    pub(crate) fn insert(&mut self, set_print: u64, key: Vec<u64>, state: State, restriction: State) {
        let print = fingerprint(set_print, state, restriction);
        let stored = Stored { key: key.into_boxed_slice(), state, restriction };
        self.bytes += stored.footprint();
        if let Some(stored) = self.table.insert(print, stored) {
            // Keep the first one in the table and the newcomer aside; the order doesn't matter.
            let newcomer = self.table.insert(print, stored).expect("just inserted");
            self.colliding.push((print, newcomer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print_of(set: &[u64]) -> u64 {
        let mut print = 0;
        for (i, &word) in set.iter().enumerate() {
            for bit in 0..64 {
                if word & (1 << bit) != 0 {
                    print ^= member_print(i * 64 + bit);
                }
            }
        }
        print
    }

    #[test]
    fn stores_configurations_exactly() {
        let mut memo = Memo::default();
        let sets: [&[u64]; 4] = [&[0, 0, 0], &[u64::MAX, 5, 0], &[u64::MAX, u64::MAX, 1], &[7, 0, 1 << 63]];
        for (i, set) in sets.iter().enumerate() {
            assert!(!memo.contains(print_of(set), || set.to_vec(), 1, 2));
            memo.insert(print_of(set), set.to_vec(), 1, 2);
            assert!(memo.contains(print_of(set), || set.to_vec(), 1, 2), "set {i}");
            assert!(!memo.contains(print_of(set), || set.to_vec(), 2, 2));
            assert!(!memo.contains(print_of(set), || set.to_vec(), 1, 1));
        }
        assert!(memo.bytes() > 0);
    }

    #[test]
    fn fingerprint_collisions_are_not_hits() {
        let mut memo = Memo::default();
        // Lie about the fingerprints so that every set collides.
        let sets: [&[u64]; 3] = [&[1, 0], &[2, 0], &[0, 3]];
        for set in &sets[..2] {
            memo.insert(42, set.to_vec(), 0, 0);
        }
        assert!(memo.contains(42, || sets[0].to_vec(), 0, 0));
        assert!(memo.contains(42, || sets[1].to_vec(), 0, 0));
        assert!(!memo.contains(42, || sets[2].to_vec(), 0, 0));
        assert!(!memo.contains(43, || sets[0].to_vec(), 0, 0));
    }

    #[test]
    fn stored_equality_compares_keys_state_and_restriction() {
        let stored = Stored { key: vec![3, 1, 2, 9].into_boxed_slice(), state: 4, restriction: 5 };
        assert!(stored.equals(&[3, 1, 2, 9], 4, 5));
        assert!(!stored.equals(&[3, 1, 2], 4, 5));
        assert!(!stored.equals(&[3, 1, 2, 9, 0], 4, 5));
        assert!(!stored.equals(&[3, 1, 2, 9], 5, 5));
        assert!(!stored.equals(&[3, 1, 2, 9], 4, 4));
        assert!(stored.footprint() > std::mem::size_of_val(&*stored.key));
    }
}
