//! One leader; writes on any node are readable from every node; linearizable reads through followers.

mod harness;

use std::time::Duration;

use harness::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_writes_anywhere_read_everywhere() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;

    // Exactly one node says it leads, and all agree on the term.
    let mut leaders = 0;
    let mut terms = Vec::new();
    for id in 1..=3 {
        let s = cluster.status(id).await.expect("status");
        if s.role == raftkv_proto::Role::Leader as i32 {
            leaders += 1;
        }
        terms.push(s.term);
        assert_eq!(s.members.len(), 3, "every node knows the 3 members");
    }
    assert_eq!(leaders, 1, "exactly one leader");
    assert!(terms.iter().all(|t| *t == terms[0]), "one term: {terms:?}");

    // Write through each node in turn (followers forward to the leader).
    let mut last_rev = 0;
    for id in 1..=3u64 {
        for i in 0..10 {
            let key = format!("k-{id}-{i}");
            let resp = cluster.node_client(id).put(key.as_bytes(), format!("v{i}").as_bytes()).await.expect("put");
            let h = resp.header.unwrap();
            assert_eq!(h.member_id, leader, "the leader served the forwarded write");
            assert!(h.revision > last_rev, "revisions increase");
            last_rev = h.revision;
        }
    }
    assert_eq!(last_rev, 31, "a fresh store is at revision 1 (as etcd's): 30 writes later it is at 31");

    // Linearizable reads through any node see every write at once.
    for id in 1..=3u64 {
        let c = cluster.node_client(id);
        for w in 1..=3u64 {
            let got = c.get(format!("k-{w}-9").as_bytes(), false).await.unwrap().kv.expect("present");
            assert_eq!(got.value, b"v9");
        }
    }

    // Serializable reads on every node converge to the same data.
    let commit = cluster.status(leader).await.unwrap().commit_index;
    for id in 1..=3u64 {
        cluster.wait_applied(id, commit, Duration::from_secs(10)).await;
        for w in 1..=3u64 {
            for i in 0..10 {
                let v = cluster.local_get(id, &format!("k-{w}-{i}")).await;
                assert_eq!(v.as_deref(), Some(format!("v{i}").as_bytes()), "node {id} key k-{w}-{i}");
            }
        }
        let s = cluster.status(id).await.unwrap();
        assert_eq!(s.header.unwrap().revision, 31, "node {id} revision");
    }

    // Range over a prefix, with limit and count.
    let r = cluster
        .client()
        .range(raftkv_proto::RangeRequest {
            key: b"k-2-".to_vec(),
            range_end: raftkv::keyspace::prefix_end(b"k-2-"),
            limit: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (4, 10, true));
    assert_eq!(r.kvs[0].key, b"k-2-0");
}
