//! Bounded resources and big payloads (issue 9, items 3, 6, 7, 8, 10), on real processes: large transactions do
//! not knock the leader over, an oversized request is refused naming its limit, a watcher far behind on large
//! values receives every revision, and the WAL stays bounded by the snapshot-bytes trigger.

mod harness;

use std::{path::Path, time::Duration};

use harness::{eventually, TestCluster};
use raftkv_proto as pb;
use tonic::Code;

const MIB: usize = 1 << 20;
/// The documented value limit (and the default --max-request-bytes).
const LIMIT: usize = 1536 * 1024;

fn put_op(key: String, len: usize) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::Put(pb::PutRequest {
            key: key.into_bytes(),
            value: vec![3; len],
            prev_kv: false,
            lease: 0,
        })),
    }
}

/// A txn of `n` puts of `len` bytes each.
fn txn(tag: &str, n: usize, len: usize) -> pb::TxnRequest {
    pb::TxnRequest { success: (0..n).map(|i| put_op(format!("{tag}/{i}"), len)).collect(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_transactions_leave_a_leader_that_accepts_writes() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let c = cluster.client();
    c.put("before", "1").await.unwrap();

    // Three concurrent ~30 MiB txns (20 puts of 1.5 MiB each, every value within its own limit).
    let (a, b, d) = tokio::join!(c.txn(txn("a", 20, LIMIT)), c.txn(txn("b", 20, LIMIT)), c.txn(txn("c", 20, LIMIT)));
    for r in [a, b, d] {
        let e = r.expect_err("a 30 MiB txn is over --max-request-bytes");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("--max-request-bytes") && e.message().contains("1572864"), "{e:?}");
    }
    // Three concurrent txns and three puts at the limit all commit (each entry is 1.5 MiB; batches hold several).
    let (a, b, d) =
        tokio::join!(c.txn(txn("x", 2, LIMIT / 2)), c.txn(txn("y", 2, LIMIT / 2)), c.txn(txn("z", 2, LIMIT / 2)));
    for r in [a, b, d] {
        assert!(r.expect("a txn at the request limit commits").succeeded);
    }
    let (a, b, d) =
        tokio::join!(c.put("p1", vec![1u8; LIMIT]), c.put("p2", vec![2u8; LIMIT]), c.put("p3", vec![3u8; LIMIT]));
    for r in [a, b, d] {
        r.expect("a put at the value limit commits");
    }
    // The leader still takes writes, and every node has the data.
    c.put("after", "2").await.unwrap();
    let s = cluster.status(leader).await.expect("leader status");
    for id in 1..=3 {
        cluster.wait_applied(id, s.commit_index, Duration::from_secs(30)).await;
        assert_eq!(cluster.local_get(id, "p3").await.map(|v| v.len()), Some(LIMIT), "node {id}");
        assert_eq!(cluster.local_get(id, "y/1").await.map(|v| v.len()), Some(LIMIT / 2), "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_naming_the_limit_and_costs_no_entry() {
    let cluster = TestCluster::start_with(3, &["--max-request-bytes", "1000000"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let c = cluster.client();
    c.put("k", "v").await.unwrap();
    cluster.wait_members_recorded(leader, Duration::from_secs(20)).await;
    let before = cluster.status(leader).await.unwrap().last_log_index;

    // Through a follower too: it is refused there, before forwarding.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for client in [c, cluster.node_client(follower)] {
        let e = client.put("big", vec![0u8; 1_000_001]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("over the limit of 1000000 bytes (--max-request-bytes)"), "{e:?}");
        let e = client.txn(txn("t", 2, 600_000)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("1200000 bytes of values") && e.message().contains("--max-request-bytes"),
            "{e:?}"
        );
        // Compare values count (and are size-checked on their own).
        let cmp = pb::Compare { key: b"k".to_vec(), value: vec![1; 700_000], ..Default::default() };
        let t = pb::TxnRequest { compare: vec![cmp], success: vec![put_op("u".into(), 400_000)], ..Default::default() };
        let e = client.txn(t).await.unwrap_err();
        assert!(e.message().contains("--max-request-bytes"), "{e:?}");
        let cmp = pb::Compare { key: b"k".to_vec(), value: vec![1; LIMIT + 1], ..Default::default() };
        let e = client.txn(pb::TxnRequest { compare: vec![cmp], ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("value is 1572865 bytes, over the limit of 1572864 bytes"), "{e:?}");
    }
    // Exactly at the limit is fine.
    cluster.client().put("exact", vec![9u8; 1_000_000]).await.unwrap();
    let after = cluster.status(leader).await.unwrap().last_log_index;
    assert_eq!(after, before + 1, "refused requests cost no log entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_far_behind_on_large_values_receives_every_revision() {
    // One node: watches are served from the node's own history. 50 revisions of 1.5 MiB are 75 MiB, more than
    // one gRPC message may carry.
    const N: usize = 50;
    let cluster = TestCluster::start_with(1, &["--watch-history-bytes", &(256 * MIB).to_string()]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let c = cluster.client();
    let start = c.put("w/0", "first").await.unwrap().header.unwrap().revision + 1;
    for i in 0..N {
        c.put(format!("w/{}", i % 5), vec![i as u8; LIMIT]).await.unwrap();
    }
    // The watcher starts after all of it was written: everything is pending at once.
    let req = pb::WatchRequest {
        key: b"w/".to_vec(),
        range_end: raftkv::keyspace::prefix_end(b"w/"),
        start_revision: start,
        prev_kv: false,
    };
    let (_, mut stream) = c.watch(req).await.unwrap();
    let mut revisions = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while revisions.len() < N {
            let msg = stream.message().await.expect("the watch keeps going").expect("the stream stays open");
            for ev in msg.events {
                let kv = ev.kv.unwrap();
                assert_eq!(kv.value.len(), LIMIT);
                assert_eq!(kv.value[0] as usize, revisions.len(), "values in order");
                revisions.push(kv.mod_revision);
            }
        }
    })
    .await
    .expect("every revision arrives");
    assert_eq!(revisions, (start..start + N as i64).collect::<Vec<_>>());
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_by_the_snapshot_bytes_trigger() {
    const THRESHOLD: usize = 8 * MIB;
    let cluster = TestCluster::start_with(
        3,
        &[
            "--snapshot-wal-bytes",
            &THRESHOLD.to_string(),
            "--wal-segment-bytes",
            &(2 * MIB).to_string(),
            // The entry-count trigger would never fire here.
            "--snapshot-every",
            "1000000",
        ],
    );
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let c = cluster.client();
    // 40 MiB of writes: five times the threshold.
    for i in 0..40 {
        c.put(format!("s/{i}"), vec![i as u8; MIB]).await.unwrap();
    }
    for id in 1..=3 {
        let wal = cluster.wal_dir(id);
        // Without the trigger the WAL would hold all 40 MiB. Bounded: the threshold, plus what is kept behind the
        // snapshot (a quarter of it), plus segment granularity and one entry: at most twice the threshold.
        eventually(Duration::from_secs(120), &format!("node {id} snapshotted and its WAL shrank"), || async {
            let s = cluster.status(id).await?;
            (s.snapshot_index > 0 && dir_bytes(&wal) <= 2 * THRESHOLD as u64).then_some(())
        })
        .await;
    }
    // The data is all there.
    assert_eq!(c.get("s/39", false).await.unwrap().kv.unwrap().value, vec![39u8; MIB]);
}
