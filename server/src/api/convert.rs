//! Conversions between protobuf messages and raftkv's internal types, with request validation.
//!
//! Validation happens here, once, before anything reaches Raft: a request that would be refused by the state
//! machine must never be proposed (it would cost a log entry on every node and could not be undone).
//!
//! Sizes: every key is at most `--max-key-bytes`, every value (put values and txn compare values) at most
//! `--max-value-bytes`, and the values of one request together at most `--max-request-bytes` (etcd's flag; 1.5
//! MiB by default, so one put at the value limit still fits). Keys are not counted in the request limit: they are
//! bounded by the key limit times `--max-txn-ops`. So one request's log entry is bounded, and the proposer can pack
//! entries below the WAL record and peer message limits.

use raftkv_proto as pb;

use crate::{
    config::Limits,
    error::{Error, Result},
    keyspace::{
        CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, RangeQuery, RangeResult, TxnCompare, TxnOp,
        TxnOpResponse,
    },
    raft::Command,
};

impl Limits {
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("key must not be empty".into()));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::TooLarge { what: "key", size: key.len(), limit: self.max_key_bytes });
        }
        Ok(())
    }

    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value_bytes {
            return Err(Error::TooLarge { what: "value", size: value.len(), limit: self.max_value_bytes });
        }
        Ok(())
    }

    /// The values one request carries, together, against `--max-request-bytes`.
    pub fn check_request(&self, value_bytes: usize) -> Result<()> {
        if value_bytes > self.max_request_bytes {
            return Err(Error::RequestTooLarge { size: value_bytes, limit: self.max_request_bytes });
        }
        Ok(())
    }

    fn check_range_end(&self, end: &[u8]) -> Result<()> {
        if end.len() > self.max_key_bytes {
            return Err(Error::TooLarge { what: "range_end", size: end.len(), limit: self.max_key_bytes });
        }
        Ok(())
    }
}

pub fn put_command(limits: &Limits, r: pb::PutRequest) -> Result<Command> {
    limits.check_key(&r.key)?;
    limits.check_value(&r.value)?;
    limits.check_request(r.value.len())?;
    Ok(if r.lease != 0 {
        // A put with a lease runs as a one-op transaction: that is where an unknown lease is refused when
        // applied (the lease may be revoked between this check and the apply).
        Command::Txn { compare: vec![], success: vec![txn_put(r)], failure: vec![] }
    } else {
        Command::Put { key: r.key, value: r.value, prev_kv: r.prev_kv }
    })
}

fn txn_put(p: pb::PutRequest) -> TxnOp {
    TxnOp::Put {
        key: p.key,
        value: p.value,
        prev_kv: p.prev_kv,
        ignore_value: false,
        ignore_lease: false,
        lease: p.lease,
    }
}

pub fn delete_command(limits: &Limits, r: pb::DeleteRequest) -> Result<Command> {
    limits.check_key(&r.key)?;
    limits.check_range_end(&r.range_end)?;
    let range = KeyRange::from_wire(r.key, r.range_end);
    Ok(Command::Delete { key: range.start, range_end: range.end, prev_kv: r.prev_kv })
}

pub fn range_query(limits: &Limits, r: &pb::RangeRequest) -> Result<RangeQuery> {
    // An empty key with range_end "\0" means "everything"; otherwise the key must be valid.
    if !(r.key.is_empty() && r.range_end == [0]) {
        limits.check_key(&r.key)?;
    }
    limits.check_range_end(&r.range_end)?;
    if r.limit < 0 {
        return Err(Error::InvalidArgument(format!("limit must be >= 0, got {}", r.limit)));
    }
    Ok(RangeQuery {
        range: KeyRange::from_wire(r.key.clone(), r.range_end.clone()),
        limit: r.limit,
        keys_only: r.keys_only,
        count_only: r.count_only,
        revision: r.revision,
        ..Default::default()
    })
}

fn txn_op(limits: &Limits, op: pb::RequestOp) -> Result<TxnOp> {
    match op.request {
        Some(pb::request_op::Request::Put(p)) => {
            limits.check_key(&p.key)?;
            limits.check_value(&p.value)?;
            Ok(txn_put(p))
        }
        Some(pb::request_op::Request::Range(r)) => Ok(TxnOp::Range(range_query(limits, &r)?)),
        Some(pb::request_op::Request::Delete(d)) => {
            limits.check_key(&d.key)?;
            limits.check_range_end(&d.range_end)?;
            Ok(TxnOp::Delete { range: KeyRange::from_wire(d.key, d.range_end), prev_kv: d.prev_kv })
        }
        None => Err(Error::InvalidArgument("transaction operation has no request set".into())),
    }
}

pub fn txn_command(limits: &Limits, r: pb::TxnRequest) -> Result<Command> {
    let ops = r.compare.len() + r.success.len() + r.failure.len();
    if ops > limits.max_txn_ops {
        return Err(Error::InvalidArgument(format!(
            "transaction has {ops} compares and operations, over the limit of {}",
            limits.max_txn_ops
        )));
    }
    let compare = r
        .compare
        .into_iter()
        .map(|c| {
            limits.check_key(&c.key)?;
            limits.check_value(&c.value)?;
            let target = match pb::compare::Target::try_from(c.target) {
                Ok(pb::compare::Target::Value) => CompareTarget::Value,
                Ok(pb::compare::Target::Version) => CompareTarget::Version,
                Ok(pb::compare::Target::CreateRevision) => CompareTarget::CreateRevision,
                Ok(pb::compare::Target::ModRevision) => CompareTarget::ModRevision,
                Err(_) => return Err(Error::InvalidArgument(format!("unknown compare target {}", c.target))),
            };
            let op = match pb::compare::Result::try_from(c.result) {
                Ok(pb::compare::Result::Equal) => CompareOp::Equal,
                Ok(pb::compare::Result::NotEqual) => CompareOp::NotEqual,
                Ok(pb::compare::Result::Greater) => CompareOp::Greater,
                Ok(pb::compare::Result::Less) => CompareOp::Less,
                Err(_) => return Err(Error::InvalidArgument(format!("unknown compare result {}", c.result))),
            };
            Ok(TxnCompare { range: KeyRange::single(c.key), target, op, value: c.value, number: c.number })
        })
        .collect::<Result<Vec<_>>>()?;
    let success = r.success.into_iter().map(|o| txn_op(limits, o)).collect::<Result<Vec<_>>>()?;
    let failure = r.failure.into_iter().map(|o| txn_op(limits, o)).collect::<Result<Vec<_>>>()?;
    let put_bytes = |ops: &[TxnOp]| -> usize {
        ops.iter().map(|o| if let TxnOp::Put { value, .. } = o { value.len() } else { 0 }).sum()
    };
    let value_bytes = compare.iter().map(|c| c.value.len()).sum::<usize>() + put_bytes(&success) + put_bytes(&failure);
    limits.check_request(value_bytes)?;
    check_no_duplicate_writes(&success)?;
    check_no_duplicate_writes(&failure)?;
    Ok(Command::Txn { compare, success, failure })
}

/// One revision changes each key at most once (as in etcd): a branch may not write the same key twice.
fn check_no_duplicate_writes(ops: &[TxnOp]) -> Result<()> {
    let puts: Vec<&[u8]> = ops
        .iter()
        .filter_map(|o| match o {
            TxnOp::Put { key, .. } => Some(key.as_slice()),
            _ => None,
        })
        .collect();
    let deletes: Vec<&KeyRange> = ops
        .iter()
        .filter_map(|o| match o {
            TxnOp::Delete { range, .. } => Some(range),
            _ => None,
        })
        .collect();
    for (i, k) in puts.iter().enumerate() {
        if puts[..i].contains(k) || deletes.iter().any(|r| r.contains(k)) {
            return Err(Error::InvalidArgument(format!(
                "transaction writes key {:?} more than once",
                String::from_utf8_lossy(k)
            )));
        }
    }
    for (i, a) in deletes.iter().enumerate() {
        if deletes[..i].iter().any(|b| a.overlaps(b)) {
            return Err(Error::InvalidArgument("transaction deletes overlapping ranges".into()));
        }
    }
    Ok(())
}

/// The native API's error for a revision that cannot be read.
pub fn revision_error(e: crate::keyspace::RevisionError, requested: i64, current: i64) -> Error {
    match e {
        crate::keyspace::RevisionError::Compacted { compact_revision } => Error::Compacted(format!(
            "revision {requested} was compacted: this key space keeps versions from revision {compact_revision} on"
        )),
        crate::keyspace::RevisionError::Future => {
            Error::InvalidArgument(format!("revision {requested} is in the future: the current revision is {current}"))
        }
    }
}

pub fn kv(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

pub fn range_response(header: pb::ResponseHeader, r: RangeResult) -> pb::RangeResponse {
    pb::RangeResponse { header: Some(header), kvs: r.kvs.into_iter().map(kv).collect(), more: r.more, count: r.count }
}

pub fn txn_responses(responses: Vec<TxnOpResponse>) -> Vec<pb::ResponseOp> {
    responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                TxnOpResponse::Put { prev_kv, .. } => {
                    pb::response_op::Response::Put(pb::PutResponse { header: None, prev_kv: prev_kv.map(kv) })
                }
                TxnOpResponse::Range(r, _) => pb::response_op::Response::Range(pb::RangeResponse {
                    header: None,
                    kvs: r.kvs.into_iter().map(kv).collect(),
                    more: r.more,
                    count: r.count,
                }),
                TxnOpResponse::Delete { deleted, prev_kvs, .. } => {
                    pb::response_op::Response::Delete(pb::DeleteResponse {
                        header: None,
                        deleted,
                        prev_kvs: prev_kvs.into_iter().map(kv).collect(),
                    })
                }
                TxnOpResponse::Txn { .. } => unreachable!("raftkv.v1 transactions have no nested transactions"),
            }),
        })
        .collect()
}

pub fn event(e: Event, with_prev: bool) -> pb::Event {
    pb::Event {
        r#type: match e.kind {
            EventKind::Put => pb::event::EventType::Put as i32,
            EventKind::Delete => pb::event::EventType::Delete as i32,
        },
        kv: Some(kv(e.kv)),
        prev_kv: if with_prev { e.prev_kv.map(kv) } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_limit() {
        let limits = Limits { max_key_bytes: 4, max_value_bytes: 8, max_txn_ops: 2, max_request_bytes: 12 };
        let err =
            put_command(&limits, pb::PutRequest { key: vec![], value: vec![], prev_kv: false, lease: 0 }).unwrap_err();
        assert_eq!(err.to_string(), "key must not be empty");
        let err =
            put_command(&limits, pb::PutRequest { key: b"12345".to_vec(), value: vec![], prev_kv: false, lease: 0 })
                .unwrap_err();
        assert_eq!(err.to_string(), "key is 5 bytes, over the limit of 4 bytes");
        let err =
            put_command(&limits, pb::PutRequest { key: b"k".to_vec(), value: vec![0; 9], prev_kv: false, lease: 0 })
                .unwrap_err();
        assert_eq!(err.to_string(), "value is 9 bytes, over the limit of 8 bytes");
        assert_eq!(err.into_status().code(), tonic::Code::InvalidArgument);
        let op = pb::RequestOp { request: None };
        let err =
            txn_command(&limits, pb::TxnRequest { compare: vec![], success: vec![op], failure: vec![] }).unwrap_err();
        assert!(err.to_string().contains("no request set"), "{err}");
        let bad = pb::Compare { key: b"k".to_vec(), target: 42, result: 0, value: vec![], number: 0 };
        let err =
            txn_command(&limits, pb::TxnRequest { compare: vec![bad], success: vec![], failure: vec![] }).unwrap_err();
        assert!(err.to_string().contains("unknown compare target 42"), "{err}");
    }

    #[test]
    fn request_limit_counts_put_and_compare_values() {
        let limits = Limits { max_key_bytes: 4, max_value_bytes: 8, max_txn_ops: 4, max_request_bytes: 12 };
        let put = |v: usize| pb::RequestOp {
            request: Some(pb::request_op::Request::Put(pb::PutRequest {
                key: format!("k{v}").into_bytes(),
                value: vec![0; v],
                prev_kv: false,
                lease: 0,
            })),
        };
        let txn = |compare: Vec<pb::Compare>, success: Vec<pb::RequestOp>| pb::TxnRequest {
            compare,
            success,
            failure: vec![],
        };
        // 6 + 6 = 12: at the limit.
        txn_command(&limits, txn(vec![], vec![put(6), put(5)])).unwrap();
        let err = txn_command(&limits, txn(vec![], vec![put(7), put(6)])).unwrap_err();
        assert_eq!(err.into_status().code(), tonic::Code::InvalidArgument);
        let err = txn_command(&limits, txn(vec![], vec![put(7), put(6)])).unwrap_err();
        assert!(
            err.to_string().contains("13 bytes of values, over the limit of 12 bytes (--max-request-bytes)"),
            "{err}"
        );
        // Compare values count, and are size-checked on their own.
        let cmp = |v: usize| pb::Compare { key: b"k".to_vec(), target: 3, result: 0, value: vec![1; v], number: 0 };
        let err = txn_command(&limits, txn(vec![cmp(8)], vec![put(5)])).unwrap_err();
        assert!(err.to_string().contains("--max-request-bytes"), "{err}");
        let err = txn_command(&limits, txn(vec![cmp(9)], vec![])).unwrap_err();
        assert!(err.to_string().contains("value is 9 bytes, over the limit of 8 bytes"), "{err}");
    }
}
