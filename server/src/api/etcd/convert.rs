//! etcd's messages ⇄ raftkv's commands and key-space types, with etcd's validation rules (`v3rpc/key.go`):
//! an empty key is `key is not provided`; more compares or ops in one list than `--max-txn-ops` is `too many
//! operations in txn request`; a transaction that would write one key twice in one revision is `duplicate key
//! given in txn request`, judged exactly as etcd judges it. Sizes beyond raftkv's limits are `request is too
//! large`. A request refused here never reaches the log.

use std::collections::HashSet;

use raftkv_proto::etcd::{self as pb, mvccpb};

use crate::{
    config::Limits,
    error::{Error, EtcdError, Result},
    keyspace::{
        CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, RangeQuery, RangeResult, RevisionError,
        SortOrder, SortTarget, TxnCompare, TxnOp, TxnOpResponse,
    },
    raft::Command,
};

fn etcd(e: EtcdError) -> Error {
    Error::Etcd(e)
}

fn check_key(limits: &Limits, key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(etcd(EtcdError::EmptyKey));
    }
    if key.len() > limits.max_key_bytes {
        return Err(Error::TooLarge { what: "key", size: key.len(), limit: limits.max_key_bytes });
    }
    Ok(())
}

fn check_range_end(limits: &Limits, end: &[u8]) -> Result<()> {
    if end.len() > limits.max_key_bytes {
        return Err(Error::TooLarge { what: "range_end", size: end.len(), limit: limits.max_key_bytes });
    }
    Ok(())
}

fn check_put(limits: &Limits, p: &pb::PutRequest) -> Result<()> {
    check_key(limits, &p.key)?;
    if p.ignore_value && !p.value.is_empty() {
        return Err(etcd(EtcdError::ValueProvided));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(etcd(EtcdError::LeaseProvided));
    }
    limits.check_value(&p.value)
}

fn put_op(p: pb::PutRequest) -> TxnOp {
    TxnOp::Put {
        key: p.key,
        value: p.value,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
        lease: p.lease,
    }
}

/// A put: a plain [`Command::Put`], or (with `ignore_value`, `ignore_lease` or a lease, which need the key or the
/// lease to exist when applied) a one-op transaction.
pub fn put_command(limits: &Limits, p: pb::PutRequest) -> Result<Command> {
    check_put(limits, &p)?;
    limits.check_request(p.value.len())?;
    Ok(if p.ignore_value || p.ignore_lease || p.lease != 0 {
        Command::Txn { compare: vec![], success: vec![put_op(p)], failure: vec![] }
    } else {
        Command::Put { key: p.key, value: p.value, prev_kv: p.prev_kv }
    })
}

pub fn delete_command(limits: &Limits, d: pb::DeleteRangeRequest) -> Result<Command> {
    check_key(limits, &d.key)?;
    check_range_end(limits, &d.range_end)?;
    let range = KeyRange::from_wire(d.key, d.range_end);
    Ok(Command::Delete { key: range.start, range_end: range.end, prev_kv: d.prev_kv })
}

/// A range (its `revision`: 0 = current).
pub fn range_query(limits: &Limits, r: &pb::RangeRequest) -> Result<RangeQuery> {
    check_key(limits, &r.key)?;
    check_range_end(limits, &r.range_end)?;
    use pb::range_request::{SortOrder as O, SortTarget as T};
    let sort_order = match O::try_from(r.sort_order) {
        Ok(O::None) => SortOrder::None,
        Ok(O::Ascend) => SortOrder::Ascend,
        Ok(O::Descend) => SortOrder::Descend,
        Err(_) => return Err(etcd(EtcdError::InvalidSortOption)),
    };
    let sort_target = match T::try_from(r.sort_target) {
        Ok(T::Key) => SortTarget::Key,
        Ok(T::Version) => SortTarget::Version,
        Ok(T::Create) => SortTarget::Create,
        Ok(T::Mod) => SortTarget::Mod,
        Ok(T::Value) => SortTarget::Value,
        Err(_) => return Err(etcd(EtcdError::InvalidSortOption)),
    };
    let query = RangeQuery {
        range: KeyRange::from_wire(r.key.clone(), r.range_end.clone()),
        limit: r.limit.max(0),
        keys_only: r.keys_only,
        count_only: r.count_only,
        sort_order,
        sort_target,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
        revision: r.revision,
    };
    Ok(query)
}

/// etcd's error for a revision that cannot be read or compacted.
pub fn revision_error(e: RevisionError) -> Error {
    match e {
        RevisionError::Compacted { .. } => etcd(EtcdError::Compacted),
        RevisionError::Future => etcd(EtcdError::FutureRev),
    }
}

fn compare(limits: &Limits, c: pb::Compare) -> Result<TxnCompare> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    check_key(limits, &c.key)?;
    check_range_end(limits, &c.range_end)?;
    let op = match R::try_from(c.result) {
        Ok(R::Equal) => CompareOp::Equal,
        Ok(R::Greater) => CompareOp::Greater,
        Ok(R::Less) => CompareOp::Less,
        Ok(R::NotEqual) => CompareOp::NotEqual,
        Err(_) => return Err(Error::InvalidArgument(format!("unknown compare result {}", c.result))),
    };
    let target = match T::try_from(c.target) {
        Ok(T::Version) => CompareTarget::Version,
        Ok(T::Create) => CompareTarget::CreateRevision,
        Ok(T::Mod) => CompareTarget::ModRevision,
        Ok(T::Value) => CompareTarget::Value,
        Ok(T::Lease) => CompareTarget::Lease,
        Err(_) => return Err(Error::InvalidArgument(format!("unknown compare target {}", c.target))),
    };
    // The union member that matches the target; another one (or none) compares as zero, as in etcd.
    let (value, number) = match (target, c.target_union) {
        (CompareTarget::Value, Some(U::Value(v))) => (v, 0),
        (CompareTarget::Version, Some(U::Version(n)))
        | (CompareTarget::CreateRevision, Some(U::CreateRevision(n)))
        | (CompareTarget::ModRevision, Some(U::ModRevision(n)))
        | (CompareTarget::Lease, Some(U::Lease(n))) => (vec![], n),
        _ => (vec![], 0),
    };
    limits.check_value(&value)?;
    Ok(TxnCompare { range: KeyRange::from_wire(c.key, c.range_end), target, op, value, number })
}

fn txn_op(limits: &Limits, op: pb::RequestOp) -> Result<TxnOp> {
    use pb::request_op::Request as R;
    match op.request {
        Some(R::RequestPut(p)) => {
            check_put(limits, &p)?;
            Ok(put_op(p))
        }
        Some(R::RequestRange(r)) => Ok(TxnOp::Range(range_query(limits, &r)?)),
        Some(R::RequestDeleteRange(d)) => {
            check_key(limits, &d.key)?;
            check_range_end(limits, &d.range_end)?;
            Ok(TxnOp::Delete { range: KeyRange::from_wire(d.key, d.range_end), prev_kv: d.prev_kv })
        }
        Some(R::RequestTxn(t)) => {
            let (compare, success, failure) = txn_parts(limits, t)?;
            Ok(TxnOp::Txn { compare, success, failure })
        }
        None => Err(Error::InvalidArgument("transaction operation has no request set".into())),
    }
}

type TxnParts = (Vec<TxnCompare>, Vec<TxnOp>, Vec<TxnOp>);

fn txn_parts(limits: &Limits, t: pb::TxnRequest) -> Result<TxnParts> {
    // etcd counts each list on its own, at every nesting level.
    if t.compare.len().max(t.success.len()).max(t.failure.len()) > limits.max_txn_ops {
        return Err(etcd(EtcdError::TooManyOps));
    }
    let compare = t.compare.into_iter().map(|c| compare(limits, c)).collect::<Result<Vec<_>>>()?;
    let success = t.success.into_iter().map(|o| txn_op(limits, o)).collect::<Result<Vec<_>>>()?;
    let failure = t.failure.into_iter().map(|o| txn_op(limits, o)).collect::<Result<Vec<_>>>()?;
    Ok((compare, success, failure))
}

pub fn txn_command(limits: &Limits, t: pb::TxnRequest) -> Result<Command> {
    let (compare, success, failure) = txn_parts(limits, t)?;
    check_intervals(&success)?;
    check_intervals(&failure)?;
    let value_bytes = compare.iter().map(|c| c.value.len()).sum::<usize>() + put_bytes(&success) + put_bytes(&failure);
    limits.check_request(value_bytes)?;
    Ok(Command::Txn { compare, success, failure })
}

fn put_bytes(ops: &[TxnOp]) -> usize {
    ops.iter()
        .map(|o| match o {
            TxnOp::Put { value, .. } => value.len(),
            TxnOp::Txn { success, failure, .. } => put_bytes(success) + put_bytes(failure),
            _ => 0,
        })
        .sum()
}

/// A delete's interval as etcd's duplicate check sees it: `[key, range_end)` taken literally (so a from-key
/// delete, `range_end = "\0"`, overlaps no put), or the one key.
fn deletes_key(range: &KeyRange, key: &[u8]) -> bool {
    match &range.end {
        None => key == range.start.as_slice(),
        Some(end) => key >= range.start.as_slice() && key < end.as_slice(),
    }
}

/// etcd's duplicate-key rule for one branch: no key is put twice, and no put lands in a range deleted in the same
/// branch; a nested transaction's two branches may overlap each other (only one runs), but neither may overlap
/// what the enclosing branch writes. Returns the keys put and the ranges deleted, nested ones included.
fn check_intervals(ops: &[TxnOp]) -> Result<(HashSet<Vec<u8>>, Vec<KeyRange>)> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|o| if let TxnOp::Delete { range, .. } = o { Some(range.clone()) } else { None })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    let dup = || etcd(EtcdError::DuplicateKey);
    for op in ops {
        let TxnOp::Txn { success, failure, .. } = op else { continue };
        let (puts_then, dels_then) = check_intervals(success)?;
        let (puts_else, dels_else) = check_intervals(failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.iter().any(|d| deletes_key(d, k)) {
                return Err(dup());
            }
            puts.insert(k.clone());
        }
        for k in puts_else {
            if puts.contains(&k) && !puts_then.contains(&k) || dels.iter().any(|d| deletes_key(d, &k)) {
                return Err(dup());
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let TxnOp::Put { key, .. } = op else { continue };
        if puts.contains(key) || dels.iter().any(|d| deletes_key(d, key)) {
            return Err(dup());
        }
        puts.insert(key.clone());
    }
    Ok((puts, dels))
}

pub fn kv(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn range_response(header: pb::ResponseHeader, r: RangeResult) -> pb::RangeResponse {
    pb::RangeResponse { header: Some(header), kvs: r.kvs.into_iter().map(kv).collect(), more: r.more, count: r.count }
}

/// A transaction's responses, with the headers etcd gives nested responses: the revision only (as the op left
/// it), and an empty header on a nested transaction.
pub fn txn_responses(responses: Vec<TxnOpResponse>) -> Vec<pb::ResponseOp> {
    use pb::response_op::Response as R;
    let header = |revision| pb::ResponseHeader { revision, ..Default::default() };
    responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                TxnOpResponse::Put { prev_kv, revision } => {
                    R::ResponsePut(pb::PutResponse { header: Some(header(revision)), prev_kv: prev_kv.map(kv) })
                }
                TxnOpResponse::Range(r, revision) => R::ResponseRange(range_response(header(revision), r)),
                TxnOpResponse::Delete { deleted, prev_kvs, revision } => {
                    R::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: Some(header(revision)),
                        deleted,
                        prev_kvs: prev_kvs.into_iter().map(kv).collect(),
                    })
                }
                TxnOpResponse::Txn { succeeded, responses } => R::ResponseTxn(pb::TxnResponse {
                    header: Some(pb::ResponseHeader::default()),
                    succeeded,
                    responses: txn_responses(responses),
                }),
            }),
        })
        .collect()
}

pub fn event(e: Event, with_prev: bool) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv(e.kv)),
        prev_kv: if with_prev { e.prev_kv.map(kv) } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_key_bytes: 64, max_value_bytes: 64, max_txn_ops: 3, max_request_bytes: 128 }
    }

    fn put(k: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest { key: k.into(), ..Default::default() })),
        }
    }

    fn del(k: &str, end: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::TxnRequest {
        pb::TxnRequest { compare: vec![], success, failure }
    }

    fn nested(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::RequestOp {
        pb::RequestOp { request: Some(pb::request_op::Request::RequestTxn(txn(success, failure))) }
    }

    fn message(r: Result<Command>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => e.into_etcd_status().message().to_string(),
        }
    }

    #[test]
    fn duplicate_keys_are_judged_as_etcd_judges_them() {
        let l = limits();
        let dup = "etcdserver: duplicate key given in txn request";
        assert_eq!(message(txn_command(&l, txn(vec![put("a"), put("b")], vec![]))), "ok");
        assert_eq!(message(txn_command(&l, txn(vec![put("a"), put("a")], vec![]))), dup);
        assert_eq!(message(txn_command(&l, txn(vec![put("b"), del("a", "c")], vec![]))), dup);
        assert_eq!(message(txn_command(&l, txn(vec![put("b"), del("a", "\0")], vec![]))), "ok", "from-key: literal");
        assert_eq!(message(txn_command(&l, txn(vec![del("a", "c"), del("b", "d")], vec![]))), "ok");
        assert_eq!(message(txn_command(&l, txn(vec![put("a")], vec![put("a")]))), "ok", "other branch");
        assert_eq!(message(txn_command(&l, txn(vec![nested(vec![put("a")], vec![del("a", "")])], vec![]))), "ok");
        assert_eq!(message(txn_command(&l, txn(vec![nested(vec![put("a")], vec![]), put("a")], vec![]))), dup);
        assert_eq!(message(txn_command(&l, txn(vec![nested(vec![del("a", "b")], vec![]), put("a")], vec![]))), dup);
    }

    #[test]
    fn etcd_validation_errors() {
        let l = limits();
        let four = vec![put("a"), put("b"), put("c"), put("d")];
        assert_eq!(message(txn_command(&l, txn(four, vec![]))), "etcdserver: too many operations in txn request");
        let nested4 = nested(vec![put("a"), put("b"), put("c"), put("d")], vec![]);
        assert_eq!(
            message(txn_command(&l, txn(vec![nested4], vec![]))),
            "etcdserver: too many operations in txn request"
        );
        let empty = pb::PutRequest::default();
        assert_eq!(message(put_command(&l, empty)), "etcdserver: key is not provided");
        let leased = pb::PutRequest { key: "k".into(), lease: 7, ..Default::default() };
        assert!(
            matches!(put_command(&l, leased), Ok(Command::Txn { .. })),
            "a leased put checks its lease when applied"
        );
        let both = pb::PutRequest { key: "k".into(), value: "v".into(), ignore_value: true, ..Default::default() };
        assert_eq!(message(put_command(&l, both)), "etcdserver: value is provided");
        let big = pb::PutRequest { key: "k".into(), value: vec![0; 65], ..Default::default() };
        assert_eq!(message(put_command(&l, big)), "etcdserver: request is too large");
        let sort = pb::RangeRequest { key: "k".into(), sort_order: 9, ..Default::default() };
        let err = range_query(&l, &sort).unwrap_err().into_etcd_status();
        assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "etcdserver: invalid sort option"));
        assert_eq!(
            revision_error(RevisionError::Future).into_etcd_status().message(),
            "etcdserver: mvcc: required revision is a future revision"
        );
        let err = revision_error(RevisionError::Compacted { compact_revision: 3 }).into_etcd_status();
        assert_eq!(
            (err.code(), err.message()),
            (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        );
    }
}
