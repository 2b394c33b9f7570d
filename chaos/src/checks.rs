//! The checks beyond linearizability: no acknowledged write lost, watch streams complete and in order, and
//! serializable reads that never invent values nor go back in time on one node. Each returns human-readable
//! violations (empty = passed).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{
    checker::history::{Op, OpKind, Outcome},
    record::{RangeRead, SerialRead, WatchRecord},
};

/// Values each write may have put in place, with how it ended.
fn written_values(ops: &[Op]) -> HashMap<&str, (&Op, Outcome)> {
    ops.iter()
        .filter_map(|op| match &op.kind {
            OpKind::Put { value } => Some((value.as_str(), (op, op.outcome))),
            OpKind::Cas { new, .. } => Some((new.as_str(), (op, op.outcome))),
            _ => None,
        })
        .collect()
}

/// A value a reader saw must come from a write that did not fail.
fn check_value(seen: &str, written: &HashMap<&str, (&Op, Outcome)>, what: &str) -> Option<String> {
    match written.get(seen) {
        None => Some(format!("{what} returned {seen:?}, which no client ever wrote")),
        Some((op, Outcome::Fail)) => {
            Some(format!("{what} returned {seen:?}, written by op {} which was reported as failed (no effect)", op.id))
        }
        Some(_) => None,
    }
}

/// Every acknowledged write is visible at the end, unless a later write replaced it. `finals` are the values
/// read linearizably after the cluster healed.
pub fn lost_writes(ops: &[Op], finals: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut out = Vec::new();
    let written = written_values(ops);
    for (key, fin) in finals {
        let key_ops: Vec<&Op> = ops.iter().filter(|o| &o.key == key).collect();
        // The writes that could have produced the final state.
        let producers: Vec<&Op> = key_ops
            .iter()
            .copied()
            .filter(|o| o.outcome != Outcome::Fail)
            .filter(|o| match (&o.kind, fin) {
                (OpKind::Put { value }, Some(f)) => value == f,
                (OpKind::Cas { new, succeeded, .. }, Some(f)) => {
                    new == f && (*succeeded || o.outcome == Outcome::Unknown)
                }
                (OpKind::Delete, None) => true,
                _ => false,
            })
            .collect();
        if let Some(f) = fin {
            if let Some(v) = check_value(f, &written, &format!("final read of {key}")) {
                out.push(v);
                continue;
            }
        }
        // The latest the final state can have been produced.
        let produced_by = producers.iter().map(|o| o.complete_ns).max();
        let latest_producer_invoke = producers.iter().map(|o| o.invoke_ns).max();
        // An acknowledged write that started after every possible producer finished must have replaced it.
        for o in &key_ops {
            let acked_write = o.outcome == Outcome::Ok
                && match &o.kind {
                    OpKind::Put { .. } | OpKind::Delete => true,
                    OpKind::Cas { succeeded, .. } => *succeeded,
                    OpKind::Get { .. } => false,
                };
            if !acked_write {
                continue;
            }
            let lost = match (produced_by, fin) {
                (Some(done), _) => o.invoke_ns > done && latest_producer_invoke.is_some_and(|i| o.invoke_ns > i),
                // The key was never written by anyone who could explain the final state (absent with no delete).
                (None, None) => true,
                (None, Some(_)) => false,
            };
            if lost {
                out.push(format!(
                    "acknowledged write op {} to {key} ({:?}, done at {} ms) is lost: the final value is {fin:?}",
                    o.id,
                    o.kind,
                    o.complete_ns / 1_000_000
                ));
            }
        }
    }
    out
}

/// Watch: revisions strictly increase with no duplicate and no silent gap (every revision changes exactly one
/// key under the workload prefix), every value was written, and — when the watch never had to resync — replaying
/// it gives the final state.
pub fn watch(
    records: &[WatchRecord],
    ops: &[Op],
    final_revision: i64,
    finals: &BTreeMap<String, Option<String>>,
    // Revisions of writes to the lease clients' keys, which the watch delivered apart.
    elsewhere: &std::collections::BTreeSet<i64>,
) -> Vec<String> {
    let mut out = Vec::new();
    let written = written_values(ops);
    // A fresh store is at revision 1 (as etcd's): the first write is revision 2.
    let mut expect_next: Option<i64> = Some(2);
    let mut last = 0i64;
    let mut state: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut resynced = false;
    for r in records {
        match r {
            WatchRecord::Resync { revision } => {
                resynced = true;
                expect_next = None;
                if *revision <= last {
                    out.push(format!("watch resynced backwards to {revision} after {last}"));
                }
            }
            WatchRecord::Event { revision, key, value, node } => {
                if *revision <= last {
                    out.push(format!(
                        "watch delivered revision {revision} after {last} (duplicate or reordered; node {node})"
                    ));
                }
                if let Some(n) = expect_next {
                    if *revision != n && !(n..*revision).all(|r| elsewhere.contains(&r)) {
                        out.push(format!("watch skipped from {} to {revision} without an error (node {node})", n - 1));
                    }
                }
                if let Some(v) = value {
                    if let Some(msg) = check_value(v, &written, &format!("watch event at revision {revision}")) {
                        out.push(msg);
                    }
                }
                state.insert(key.clone(), value.clone());
                last = *revision;
                expect_next = Some(revision + 1);
            }
        }
    }
    let last = last.max(elsewhere.last().copied().unwrap_or(0));
    if last < final_revision {
        out.push(format!("watch ended at revision {last}, the cluster is at {final_revision}"));
    }
    if !resynced {
        for (key, fin) in finals {
            let seen = state.get(key).cloned().flatten();
            if &seen != fin {
                out.push(format!("replaying the watch gives {key} = {seen:?}, the cluster says {fin:?}"));
            }
        }
    }
    out
}

/// Serializable reads never show a value nobody wrote, and never go back in time on one node (within one run of
/// that node's process): a read that starts after another read on the same node finished must not see an older
/// revision. (Concurrent reads may complete in either order.)
pub fn serializable(reads: &[SerialRead], ranges: &[RangeRead], ops: &[Op]) -> Vec<String> {
    let mut out = Vec::new();
    let written = written_values(ops);
    for r in reads {
        if let Some(v) = &r.value {
            if let Some(msg) = check_value(v, &written, &format!("serializable read of {} on node {}", r.key, r.node)) {
                out.push(msg);
            }
        }
    }
    let mut by_node: HashMap<(u64, u64), Vec<&SerialRead>> = HashMap::new();
    for r in reads.iter().filter(|r| r.incarnation.0 == r.incarnation.1) {
        by_node.entry((r.node, r.incarnation.0)).or_default().push(r);
    }
    for ((node, _), rs) in by_node {
        let mut by_invoke = rs.clone();
        by_invoke.sort_by_key(|r| r.invoke_ns);
        let mut by_complete = rs;
        by_complete.sort_by_key(|r| r.at_ns);
        // The newest revision among reads completed before the current one was invoked.
        let mut done = 0;
        let mut newest: Option<&SerialRead> = None;
        for r in by_invoke {
            while done < by_complete.len() && by_complete[done].at_ns < r.invoke_ns {
                if newest.is_none_or(|n| by_complete[done].revision > n.revision) {
                    newest = Some(by_complete[done]);
                }
                done += 1;
            }
            if let Some(n) = newest.filter(|n| r.revision < n.revision) {
                out.push(format!(
                    "node {node} went back in time: a serializable read started at {} ms saw revision {}, one that \
                     finished at {} ms had seen {}",
                    r.invoke_ns / 1_000_000,
                    r.revision,
                    n.at_ns / 1_000_000,
                    n.revision
                ));
            }
        }
    }
    let mut seen_bad: HashSet<String> = HashSet::new();
    for rr in ranges {
        for (k, v) in &rr.kvs {
            if let Some(msg) = check_value(v, &written, &format!("range read of {k}")) {
                if seen_bad.insert(msg.clone()) {
                    out.push(msg);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, key: &str, kind: OpKind, t: (u64, u64), outcome: Outcome) -> Op {
        Op { id, process: id, key: key.into(), kind, invoke_ns: t.0, complete_ns: t.1, outcome }
    }

    #[test]
    fn a_lost_write_is_caught() {
        let ops = vec![
            op(1, "k", OpKind::Put { value: "a".into() }, (0, 10), Outcome::Ok),
            op(2, "k", OpKind::Put { value: "b".into() }, (20, 30), Outcome::Ok),
        ];
        let finals = BTreeMap::from([("k".to_string(), Some("a".to_string()))]);
        let v = lost_writes(&ops, &finals);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("op 2"), "{v:?}");
        let finals = BTreeMap::from([("k".to_string(), Some("b".to_string()))]);
        assert!(lost_writes(&ops, &finals).is_empty());
        // Concurrent writes: either may win.
        let ops = vec![
            op(1, "k", OpKind::Put { value: "a".into() }, (0, 30), Outcome::Ok),
            op(2, "k", OpKind::Put { value: "b".into() }, (10, 20), Outcome::Ok),
        ];
        let finals = BTreeMap::from([("k".to_string(), Some("a".to_string()))]);
        assert!(lost_writes(&ops, &finals).is_empty());
        // A value nobody wrote.
        let finals = BTreeMap::from([("k".to_string(), Some("zzz".to_string()))]);
        assert!(!lost_writes(&ops, &finals).is_empty());
    }

    #[test]
    fn watch_gaps_duplicates_and_divergence_are_caught() {
        let ops = vec![
            op(1, "k/1", OpKind::Put { value: "a".into() }, (0, 10), Outcome::Ok),
            op(2, "k/1", OpKind::Put { value: "b".into() }, (20, 30), Outcome::Ok),
            op(3, "k/2", OpKind::Put { value: "c".into() }, (40, 50), Outcome::Ok),
        ];
        let ev = |revision, key: &str, value: &str| WatchRecord::Event {
            revision,
            key: key.into(),
            value: Some(value.into()),
            node: 1,
        };
        let finals =
            BTreeMap::from([("k/1".to_string(), Some("b".to_string())), ("k/2".to_string(), Some("c".to_string()))]);
        let none = std::collections::BTreeSet::new();
        // Revision 1 is the fresh store's: the first write is revision 2.
        let good = vec![ev(2, "k/1", "a"), ev(3, "k/1", "b"), ev(4, "k/2", "c")];
        assert!(watch(&good, &ops, 4, &finals, &none).is_empty());
        let gap = vec![ev(2, "k/1", "a"), ev(4, "k/2", "c")];
        assert!(watch(&gap, &ops, 4, &finals, &none).iter().any(|v| v.contains("skipped")));
        let dup = vec![ev(2, "k/1", "a"), ev(3, "k/1", "b"), ev(3, "k/1", "b"), ev(4, "k/2", "c")];
        assert!(watch(&dup, &ops, 4, &finals, &none).iter().any(|v| v.contains("duplicate")));
        let short = vec![ev(2, "k/1", "a"), ev(3, "k/1", "b")];
        assert!(!watch(&short, &ops, 4, &finals, &none).is_empty());
        let missed_first = vec![ev(3, "k/1", "b"), ev(4, "k/2", "c")];
        assert!(watch(&missed_first, &ops, 4, &finals, &none).iter().any(|v| v.contains("skipped")));
        // A gap filled by the lease clients' writes (delivered apart) is no gap.
        let lease_write = std::collections::BTreeSet::from([3]);
        assert!(watch(&gap, &ops, 4, &finals, &lease_write).iter().all(|v| !v.contains("skipped")));
    }

    #[test]
    fn serializable_reads_that_go_back_or_invent_are_caught() {
        let ops = vec![op(1, "k", OpKind::Put { value: "a".into() }, (0, 10), Outcome::Ok)];
        let read = |t: (u64, u64), revision, value: Option<&str>| SerialRead {
            process: 1,
            node: 2,
            incarnation: (0, 0),
            key: "k".into(),
            value: value.map(String::from),
            revision,
            invoke_ns: t.0,
            at_ns: t.1,
        };
        assert!(serializable(&[read((0, 1), 1, Some("a")), read((2, 3), 1, Some("a"))], &[], &ops).is_empty());
        // Sequential reads going back: caught.
        assert!(!serializable(&[read((0, 1), 5, Some("a")), read((2, 3), 4, Some("a"))], &[], &ops).is_empty());
        // Concurrent reads may finish in either order.
        assert!(serializable(&[read((0, 10), 5, Some("a")), read((1, 11), 4, Some("a"))], &[], &ops).is_empty());
        assert!(!serializable(&[read((0, 1), 1, Some("never"))], &[], &ops).is_empty());
    }
}
