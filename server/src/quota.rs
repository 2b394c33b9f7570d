//! The storage quota (`--quota-backend-bytes`, etcd's name) and its NOSPACE alarm.
//!
//! The key space lives in memory and in every snapshot, so its size is what must be bounded. It is measured
//! deterministically, the same on every node: the sum over live keys of key bytes + value bytes +
//! [`PER_KEY_OVERHEAD`] (tracked incrementally by `keyspace`, see `KeySpace::size_bytes`).
//!
//! A write that *adds data* (a put, or a transaction with a put in either branch) is checked before it is
//! proposed ([`Quota::check`]): if the key space plus what the write could add (its puts' key + value +
//! overhead, counted as if every key were new) would exceed the quota, it is refused with `RESOURCE_EXHAUSTED`
//! and etcd's message `etcdserver: mvcc: database space exceeded`, and the NOSPACE alarm is raised. While the
//! alarm is raised every write that adds data is refused, as in etcd. Reads, deletes and transactions without
//! puts always pass, so an operator can make room. The alarm clears by itself once deletes bring the key space
//! below [`CLEAR_PERCENT`] % of the quota (etcd needs `alarm disarm`; the hysteresis keeps it from flapping).
//!
//! The alarm is visible in `Status` (`alarms`), `/status`, `/metrics` (`raftkv_alarm_nospace`) and
//! `raftkv status`. The check is made where writes are proposed, on the leader; a node whose key space alone is
//! over the quota reports the alarm too, so every member shows it.
//!
//! Invariants: a refused write was never proposed (retrying it is safe); nothing but a write that adds data is
//! ever refused by the quota.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{
    error::{Error, Result},
    keyspace::TxnOp,
    raft::Command,
};

/// etcd's default quota: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 << 30;

/// Bytes counted per live key besides its key and value (metadata and map overhead, roughly).
pub const PER_KEY_OVERHEAD: u64 = 32;

/// The alarm clears once the key space is below this share of the quota.
pub const CLEAR_PERCENT: u64 = 90;

/// The name of the alarm, as etcd names it.
pub const NOSPACE: &str = "NOSPACE";

/// The quota and the alarm's state. Shared by the API (checks) and status reporting.
#[derive(Debug)]
pub struct Quota {
    limit: AtomicU64,
    alarm: AtomicBool,
}

impl Default for Quota {
    fn default() -> Self {
        Self { limit: AtomicU64::new(DEFAULT_QUOTA_BACKEND_BYTES), alarm: AtomicBool::new(false) }
    }
}

impl Quota {
    /// Sets the quota; 0 means the default (2 GiB), as in etcd.
    pub fn set_limit(&self, bytes: u64) {
        let bytes = if bytes == 0 { DEFAULT_QUOTA_BACKEND_BYTES } else { bytes };
        self.limit.store(bytes, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// At most how many bytes `cmd` can add to the key space (0 for a command that adds no data).
    pub fn cost(cmd: &Command) -> u64 {
        let put = |key: &[u8], value: &[u8]| key.len() as u64 + value.len() as u64 + PER_KEY_OVERHEAD;
        fn ops(list: &[TxnOp], put: &impl Fn(&[u8], &[u8]) -> u64) -> u64 {
            list.iter()
                .map(|op| match op {
                    TxnOp::Put { key, value, .. } => put(key, value),
                    TxnOp::Txn { success, failure, .. } => ops(success, put).max(ops(failure, put)),
                    _ => 0,
                })
                .sum()
        }
        match cmd {
            Command::Put { key, value, .. } => put(key, value),
            Command::Delete { .. }
            | Command::EtcdRevisions
            | Command::Compact { .. }
            | Command::LeaseRevoke { .. }
            | Command::LeaseCheckpoint { .. } => 0,
            // etcd refuses new leases under the NOSPACE alarm too.
            Command::LeaseGrant { .. } => PER_KEY_OVERHEAD,
            Command::Txn { success, failure, .. } => ops(success, &put).max(ops(failure, &put)),
            Command::TxnV1 { success, failure, .. } => {
                let v1 = |o: &[crate::raft::command_v1::TxnOpV1]| -> Vec<TxnOp> {
                    o.iter().cloned().map(Into::into).collect()
                };
                ops(&v1(success), &put).max(ops(&v1(failure), &put))
            }
            Command::Batch(cmds) => cmds.iter().map(Self::cost).sum(),
        }
    }

    /// Refuses `cmd` with [`Error::NoSpace`] (raising the alarm) if it adds data and the key space, now
    /// `used` bytes, has no room for it or the alarm is raised.
    pub fn check(&self, used: u64, cmd: &Command) -> Result<()> {
        let cost = Self::cost(cmd);
        if cost == 0 {
            return Ok(());
        }
        self.maybe_clear(used);
        if self.alarm.load(Ordering::Relaxed) || used.saturating_add(cost) > self.limit() {
            if !self.alarm.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    used,
                    cost,
                    quota = self.limit(),
                    "alarm {NOSPACE} raised: the key space is at --quota-backend-bytes; writes that add data are \
                     refused until deletes make room"
                );
            }
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    /// The active alarms for a key space of `used` bytes.
    pub fn alarms(&self, used: u64) -> Vec<String> {
        self.maybe_clear(used);
        if self.alarm.load(Ordering::Relaxed) || used > self.limit() {
            vec![NOSPACE.to_string()]
        } else {
            vec![]
        }
    }

    fn maybe_clear(&self, used: u64) {
        let below = used < self.limit() / 100 * CLEAR_PERCENT;
        if below && self.alarm.swap(false, Ordering::Relaxed) {
            tracing::info!(used, quota = self.limit(), "alarm {NOSPACE} cleared: the key space is below the quota");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::{KeyRange, RangeQuery};

    fn put(k: &str, n: usize) -> Command {
        Command::Put { key: k.into(), value: vec![0; n], prev_kv: false }
    }

    #[test]
    fn refuses_only_writes_that_add_data_and_clears_below_the_threshold() {
        let q = Quota::default();
        q.set_limit(1000);
        assert_eq!(Quota::cost(&put("ab", 10)), 2 + 10 + PER_KEY_OVERHEAD);
        q.check(0, &put("a", 900)).unwrap();
        assert!(matches!(q.check(950, &put("a", 100)), Err(Error::NoSpace)), "over the quota");
        assert_eq!(q.alarms(950), vec![NOSPACE], "the refusal raised the alarm");
        assert!(matches!(q.check(920, &put("a", 1)), Err(Error::NoSpace)), "the alarm refuses even small puts");
        let delete = Command::Delete { key: b"a".to_vec(), range_end: None, prev_kv: false };
        q.check(2000, &delete).unwrap();
        let read_txn = Command::Txn {
            compare: vec![],
            success: vec![TxnOp::Range(RangeQuery { range: KeyRange::single("a"), ..Default::default() })],
            failure: vec![],
        };
        q.check(2000, &read_txn).unwrap();
        assert_eq!(q.alarms(950), vec![NOSPACE], "not yet below 90 % of the quota");
        assert!(q.alarms(899).is_empty(), "cleared below 90 %");
        q.check(10, &put("a", 1)).unwrap();
        q.set_limit(0);
        assert_eq!(q.limit(), DEFAULT_QUOTA_BACKEND_BYTES, "0 means the default");
    }
}
