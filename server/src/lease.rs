//! Leases as the state machine holds them: replicated, deterministic, without clocks.
//!
//! A lease is an id, the TTL it was granted (seconds, already raised to the cluster's minimum by the leader that
//! proposed the grant), the keys attached to it, and — for long leases — the remaining time last checkpointed
//! through Raft. Nothing here knows the time: when a lease expires is decided by the leader's [`crate::lessor`]
//! on its monotonic clock, and an expiry becomes an ordinary replicated revoke. So every member holds the same
//! leases with the same keys at the same log position, and a restart or a snapshot install keeps them.
//!
//! Invariants (checked by `KeySpace`'s tests): a key is attached to at most one lease; every live key whose
//! `lease` is not 0 is in that lease's key set and every key in a lease's set is live with that lease; a revoke
//! removes the lease and deletes all of its keys at one revision.

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

/// The largest TTL a lease may be granted (etcd's `MaxLeaseTTL`, seconds).
pub const MAX_TTL: i64 = 9_000_000_000;

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The TTL it was granted, in seconds.
    pub ttl: i64,
    /// The remaining time at the last checkpoint, in milliseconds, if one was taken since the last renewal. A new
    /// leader starts the lease from it instead of the whole TTL, so repeated leader changes do not keep
    /// extending a lease.
    pub remaining_ms: Option<i64>,
    /// The keys attached to it.
    pub keys: OrdSet<Vec<u8>>,
}

/// Why a lease command changed nothing. The same on every member: it depends only on the replicated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseError {
    /// A grant of an id that is already in use (etcd's `lease already exists`).
    Exists,
    /// A revoke of an unknown lease (etcd's `requested lease not found`).
    NotFound,
}

/// A lease as a snapshot holds it; its keys are not stored twice (they are the keys whose `lease` is its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseImage {
    pub id: i64,
    pub ttl: i64,
    pub remaining_ms: Option<i64>,
}

/// The replicated lease table.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    by_id: OrdMap<i64, Lease>,
}

impl Leases {
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.by_id.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every lease, by id.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &Lease)> {
        self.by_id.iter().map(|(id, l)| (*id, l))
    }

    pub fn grant(&mut self, id: i64, ttl: i64) -> Result<(), LeaseError> {
        assert!(id != 0, "lease id 0 means no lease; the proposer picks an id before proposing");
        if self.by_id.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        self.by_id.insert(id, Lease { ttl, remaining_ms: None, keys: OrdSet::new() });
        Ok(())
    }

    /// Removes a lease, returning the keys that were attached to it.
    pub fn remove(&mut self, id: i64) -> Result<OrdSet<Vec<u8>>, LeaseError> {
        self.by_id.remove(&id).map(|l| l.keys).ok_or(LeaseError::NotFound)
    }

    /// Records remaining times (milliseconds) of known leases; unknown ones (revoked since) are skipped.
    /// `None` clears a checkpoint (after a renewal: the lease has its whole TTL again).
    pub fn checkpoint(&mut self, checkpoints: &[(i64, Option<i64>)]) {
        for (id, remaining) in checkpoints {
            if let Some(l) = self.by_id.get_mut(id) {
                l.remaining_ms = *remaining;
            }
        }
    }

    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if id == 0 {
            return;
        }
        let lease = self.by_id.get_mut(&id);
        assert!(lease.is_some(), "attaching key {:?} to unknown lease {id}", String::from_utf8_lossy(key));
        if let Some(l) = lease {
            l.keys.insert(key.to_vec());
        }
    }

    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.by_id.get_mut(&id) {
            l.keys.remove(key);
        }
    }

    pub fn image(&self) -> Vec<LeaseImage> {
        self.iter().map(|(id, l)| LeaseImage { id, ttl: l.ttl, remaining_ms: l.remaining_ms }).collect()
    }

    /// Rebuilds the table from a snapshot: the leases, and the keys attached to each (`key_leases`).
    pub fn from_image<'a>(
        image: Vec<LeaseImage>,
        key_leases: impl Iterator<Item = (&'a [u8], i64)>,
    ) -> Result<Self, String> {
        let mut leases = Self::default();
        for l in image {
            if l.id == 0 || leases.grant(l.id, l.ttl).is_err() {
                return Err(format!("lease table has lease id {} twice or as 0", l.id));
            }
            leases.checkpoint(&[(l.id, l.remaining_ms)]);
        }
        for (key, id) in key_leases {
            if !leases.contains(id) {
                return Err(format!("key {:?} is attached to unknown lease {id}", String::from_utf8_lossy(key)));
            }
            leases.attach(id, key);
        }
        Ok(leases)
    }
}
