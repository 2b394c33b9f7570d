//! The clients: a mix of put, linearizable get, serializable get, delete, compare-and-swap and range reads on a
//! small key set (so operations conflict), each recorded with its invoke and completion times and outcome.
//!
//! Outcomes: `Ok` with the result; `Fail` only when the request provably never reached a Raft log (the
//! connection could not be opened, or a node refused it for want of a leader); `Unknown` otherwise — a timeout
//! or a broken connection may or may not have taken effect, and the checker allows both.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use raftkv::{client::Client, keyspace::prefix_end, tls::ClientTls};
use raftkv_proto as pb;
use rand::{rngs::StdRng, Rng, SeedableRng};
use tonic::Status;

use crate::{
    checker::history::{OpKind, Outcome},
    etcd_client::EtcdKv,
    record::{RangeRead, Recorder, SerialRead, WatchRecord},
};

pub const PREFIX: &str = "k/";

/// Restart counters per node, bumped by the nemesis; serializable reads across a restart are not compared.
pub type Incarnations = Arc<Vec<AtomicU64>>;

/// True if the failed write provably had no effect.
pub fn surely_not_applied(s: &Status) -> bool {
    let m = s.message();
    s.code() == tonic::Code::InvalidArgument
        || m.contains("tcp connect error")
        || m.contains("Connection refused")
        || m.contains("no leader")
        || m.contains("not the leader")
}

fn write_outcome(s: &Status) -> Outcome {
    if surely_not_applied(s) {
        Outcome::Fail
    } else {
        Outcome::Unknown
    }
}

fn value_of(kv: Option<pb::KeyValue>) -> Option<String> {
    kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

pub struct ClientSpec {
    pub process: u64,
    /// Endpoints this client talks to (one node when pinned).
    pub endpoints: Vec<String>,
    /// The node it is pinned to (serializable reads are only meaningful per node).
    pub pinned: Option<u64>,
    pub keys: usize,
    pub seed: u64,
    /// The cluster's client TLS files (empty without TLS).
    pub tls: ClientTls,
    /// Puts, gets, deletes and compare-and-swaps go through the etcd API instead of `raftkv.v1`.
    pub etcd_api: bool,
}

/// A client of `endpoints` with the cluster's TLS files (checked when the cluster started).
pub fn connect(endpoints: Vec<String>, timeout: Duration, tls: &ClientTls) -> Client {
    Client::new(endpoints, timeout).with_tls(tls.clone()).expect("the cluster's TLS files are usable")
}

pub async fn run_client(spec: ClientSpec, rec: Arc<Recorder>, stop: Arc<AtomicBool>, inc: Incarnations) {
    let client = connect(spec.endpoints.clone(), Duration::from_secs(2), &spec.tls);
    let etcd = spec.etcd_api.then(|| {
        EtcdKv::new(connect(spec.endpoints.clone(), Duration::from_secs(2), &spec.tls), Duration::from_secs(2))
    });
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut last_seen: HashMap<String, Option<String>> = HashMap::new();
    let p = spec.process;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{PREFIX}{}", rng.random_range(0..spec.keys));
        seq += 1;
        let value = format!("{p}-{seq}");
        let roll = rng.random_range(0..100);
        let t0 = rec.now();
        if let Some(etcd) = &etcd {
            if etcd_op(etcd, &rec, p, roll, &key, &value, &mut last_seen, t0).await {
                continue;
            }
        }
        match roll {
            0..30 => {
                let r = client.put(key.as_bytes(), value.as_bytes()).await;
                let outcome = r.as_ref().map_or_else(write_outcome, |_| Outcome::Ok);
                rec.op(p, &key, OpKind::Put { value }, t0, outcome);
            }
            30..55 => match client.get(key.as_bytes(), false).await {
                Ok(r) => {
                    let v = value_of(r.kv);
                    last_seen.insert(key.clone(), v.clone());
                    rec.op(p, &key, OpKind::Get { result: v }, t0, Outcome::Ok);
                }
                // A failed read has no effect and tells nothing.
                Err(_) => rec.op(p, &key, OpKind::Get { result: None }, t0, Outcome::Fail),
            },
            55..65 => {
                let Some(node) = spec.pinned else { continue };
                let before = inc[node as usize - 1].load(Ordering::SeqCst);
                if let Ok(r) = client.get(key.as_bytes(), true).await {
                    let after = inc[node as usize - 1].load(Ordering::SeqCst);
                    let revision = r.header.as_ref().map_or(0, |h| h.revision);
                    let read = SerialRead {
                        process: p,
                        node,
                        incarnation: (before, after),
                        key: key.clone(),
                        value: value_of(r.kv),
                        revision,
                        invoke_ns: t0,
                        at_ns: rec.now(),
                    };
                    rec.serial_reads.lock().expect("recorder lock").push(read);
                }
            }
            65..70 => {
                let r = client.delete(pb::DeleteRequest { key: key.clone().into_bytes(), ..Default::default() }).await;
                let outcome = r.as_ref().map_or_else(write_outcome, |_| Outcome::Ok);
                rec.op(p, &key, OpKind::Delete, t0, outcome);
            }
            70..90 => {
                let expect = last_seen.get(&key).cloned().flatten();
                let compare = match &expect {
                    Some(v) => pb::Compare {
                        key: key.clone().into_bytes(),
                        target: pb::compare::Target::Value as i32,
                        result: pb::compare::Result::Equal as i32,
                        value: v.clone().into_bytes(),
                        number: 0,
                    },
                    None => pb::Compare {
                        key: key.clone().into_bytes(),
                        target: pb::compare::Target::Version as i32,
                        result: pb::compare::Result::Equal as i32,
                        value: vec![],
                        number: 0,
                    },
                };
                let put = pb::PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    prev_kv: false,
                    lease: 0,
                };
                let req = pb::TxnRequest {
                    compare: vec![compare],
                    success: vec![pb::RequestOp { request: Some(pb::request_op::Request::Put(put)) }],
                    failure: vec![],
                };
                match client.txn(req).await {
                    Ok(r) => {
                        if r.succeeded {
                            last_seen.insert(key.clone(), Some(value.clone()));
                        }
                        let kind = OpKind::Cas { expect, new: value, succeeded: r.succeeded };
                        rec.op(p, &key, kind, t0, Outcome::Ok);
                    }
                    Err(s) => {
                        let kind = OpKind::Cas { expect, new: value, succeeded: false };
                        rec.op(p, &key, kind, t0, write_outcome(&s));
                    }
                }
            }
            _ => {
                let req = pb::RangeRequest {
                    key: PREFIX.as_bytes().to_vec(),
                    range_end: prefix_end(PREFIX.as_bytes()),
                    ..Default::default()
                };
                if let Ok(r) = client.range(req).await {
                    let kvs = r
                        .kvs
                        .into_iter()
                        .map(|kv| {
                            (
                                String::from_utf8_lossy(&kv.key).into_owned(),
                                String::from_utf8_lossy(&kv.value).into_owned(),
                            )
                        })
                        .collect();
                    rec.range_reads.lock().expect("recorder lock").push(RangeRead {
                        process: p,
                        kvs,
                        at_ns: rec.now(),
                    });
                }
            }
        }
    }
}

/// Runs the operation `roll` picks through the etcd API, if it is one of those the etcd clients make; false
/// for the others (serializable reads and ranges stay on the native API).
#[allow(clippy::too_many_arguments)]
async fn etcd_op(
    etcd: &EtcdKv,
    rec: &Recorder,
    p: u64,
    roll: u32,
    key: &str,
    value: &str,
    last_seen: &mut HashMap<String, Option<String>>,
    t0: u64,
) -> bool {
    match roll {
        0..30 => {
            let outcome = etcd.put(key, value).await.as_ref().map_or_else(write_outcome, |_| Outcome::Ok);
            rec.op(p, key, OpKind::Put { value: value.to_string() }, t0, outcome);
        }
        30..55 => match etcd.get(key).await {
            Ok(v) => {
                last_seen.insert(key.to_string(), v.clone());
                rec.op(p, key, OpKind::Get { result: v }, t0, Outcome::Ok);
            }
            Err(_) => rec.op(p, key, OpKind::Get { result: None }, t0, Outcome::Fail),
        },
        65..70 => {
            let outcome = etcd.delete(key).await.as_ref().map_or_else(write_outcome, |_| Outcome::Ok);
            rec.op(p, key, OpKind::Delete, t0, outcome);
        }
        70..90 => {
            let expect = last_seen.get(key).cloned().flatten();
            let (succeeded, outcome) = match etcd.cas(key, expect.as_deref(), value).await {
                Ok(s) => (s, Outcome::Ok),
                Err(s) => (false, write_outcome(&s)),
            };
            if succeeded {
                last_seen.insert(key.to_string(), Some(value.to_string()));
            }
            rec.op(p, key, OpKind::Cas { expect, new: value.to_string(), succeeded }, t0, outcome);
        }
        _ => return false,
    }
    true
}

/// Follows every change (the workload's keys into the watch record, the lease clients' into their own) from
/// revision 1, moving to another node when one goes away and resuming at the next revision. Stops once `stop` is set and it has seen `final_revision` (`i64::MAX` until the
/// run knows it).
pub async fn run_watcher(
    endpoints: Vec<(u64, String)>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    final_revision: Arc<AtomicI64>,
    tls: ClientTls,
) {
    let mut next: i64 = 1;
    let mut turn = 0usize;
    let mut compacted_on = 0usize;
    loop {
        let done = |next: i64| stop.load(Ordering::Relaxed) && next > final_revision.load(Ordering::SeqCst);
        if done(next) {
            return;
        }
        let (node, addr) = endpoints[turn % endpoints.len()].clone();
        turn += 1;
        let client = connect(vec![addr], Duration::from_secs(2), &tls);
        // Every key, so that revisions follow one another with no gap.
        let req = pb::WatchRequest { key: vec![], range_end: vec![0], start_revision: next, prev_kv: false };
        let mut stream = match client.watch(req).await {
            Ok((_, s)) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let msg = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
            match msg {
                Ok(Ok(Some(m))) => {
                    compacted_on = 0;
                    let received_ns = rec.now();
                    for ev in m.events {
                        let kv = ev.kv.unwrap_or_default();
                        let deleted = ev.r#type == pb::event::EventType::Delete as i32;
                        let key = String::from_utf8_lossy(&kv.key).into_owned();
                        if key.starts_with(crate::leases::PREFIX) {
                            let revision = kv.mod_revision;
                            let e = crate::leases::LeaseEvent { key, revision, deleted, received_ns };
                            rec.lease_events.lock().expect("recorder lock").push(e);
                            next = revision + 1;
                            continue;
                        }
                        rec.watch.lock().expect("recorder lock").push(WatchRecord::Event {
                            revision: kv.mod_revision,
                            key: String::from_utf8_lossy(&kv.key).into_owned(),
                            value: (!deleted).then(|| String::from_utf8_lossy(&kv.value).into_owned()),
                            node,
                        });
                        next = kv.mod_revision + 1;
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(s)) if s.code() == tonic::Code::OutOfRange => {
                    // This node no longer has the history we need; try the others before giving up on it.
                    compacted_on += 1;
                    if compacted_on >= endpoints.len() {
                        let now = client
                            .status(&endpoints[0].1)
                            .await
                            .ok()
                            .and_then(|s| s.header)
                            .map_or(next, |h| h.revision + 1);
                        rec.watch.lock().expect("recorder lock").push(WatchRecord::Resync { revision: now });
                        next = now;
                        compacted_on = 0;
                    }
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => {
                    if done(next) {
                        return;
                    }
                }
            }
        }
    }
}
