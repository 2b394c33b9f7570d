//! The transaction shapes of log entries written before nested transactions and etcd's compare ranges (the
//! `Command::TxnV1` entries): decoded as written, converted to today's [`crate::keyspace`] types when applied.
//!
//! Log entries and snapshots are postcard, which is not self-describing: a type that is in the log never changes.
//! A new shape gets a new `Command` variant, and the old one stays readable here.

use serde::{Deserialize, Serialize};

use crate::keyspace::{self, CompareOp, CompareTarget, KeyRange};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetV1 {
    Value,
    Version,
    CreateRevision,
    ModRevision,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCompareV1 {
    pub key: Vec<u8>,
    pub target: TargetV1,
    pub op: CompareOp,
    #[serde(with = "super::wire_bytes")]
    pub value: Vec<u8>,
    pub number: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeQueryV1 {
    pub range: KeyRange,
    pub limit: i64,
    pub keys_only: bool,
    pub count_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpV1 {
    Put {
        key: Vec<u8>,
        #[serde(with = "super::wire_bytes")]
        value: Vec<u8>,
        prev_kv: bool,
    },
    Range(RangeQueryV1),
    Delete {
        range: KeyRange,
        prev_kv: bool,
    },
}

impl From<TxnCompareV1> for keyspace::TxnCompare {
    fn from(c: TxnCompareV1) -> Self {
        let target = match c.target {
            TargetV1::Value => CompareTarget::Value,
            TargetV1::Version => CompareTarget::Version,
            TargetV1::CreateRevision => CompareTarget::CreateRevision,
            TargetV1::ModRevision => CompareTarget::ModRevision,
        };
        Self { range: KeyRange::single(c.key), target, op: c.op, value: c.value, number: c.number }
    }
}

impl From<TxnOpV1> for keyspace::TxnOp {
    fn from(op: TxnOpV1) -> Self {
        match op {
            TxnOpV1::Put { key, value, prev_kv } => {
                Self::Put { key, value, prev_kv, ignore_value: false, ignore_lease: false, lease: 0 }
            }
            TxnOpV1::Range(q) => Self::Range(keyspace::RangeQuery {
                range: q.range,
                limit: q.limit,
                keys_only: q.keys_only,
                count_only: q.count_only,
                ..Default::default()
            }),
            TxnOpV1::Delete { range, prev_kv } => Self::Delete { range, prev_kv },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{decode, encode, Command};

    /// A v1 transaction entry, as bytes raftkv wrote before this module existed, still decodes and converts.
    #[test]
    fn a_v1_txn_entry_still_decodes() {
        let v1 = Command::TxnV1 {
            compare: vec![TxnCompareV1 {
                key: b"k".to_vec(),
                target: TargetV1::ModRevision,
                op: CompareOp::Equal,
                value: vec![],
                number: 7,
            }],
            success: vec![TxnOpV1::Put { key: b"k".to_vec(), value: b"v".to_vec(), prev_kv: true }],
            failure: vec![],
        };
        let bytes = encode(&v1);
        // Variant 2, one compare: key "k", target 3 (ModRevision), op 0, empty value, number 7 (zigzag 14), ...
        assert_eq!(&bytes[..8], &[2, 1, 1, b'k', 3, 0, 0, 14]);
        assert_eq!(decode::<Command>(&bytes).unwrap(), v1);
    }
}
