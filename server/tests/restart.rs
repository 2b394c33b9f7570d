//! Whole-cluster restart keeps every write; a node that was down through a snapshot and log compaction catches up
//! by snapshot install.

mod harness;

use std::time::Duration;

use harness::{eventually, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_data() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for i in 0..50 {
        client.put(format!("key{i}"), format!("value{i}")).await.unwrap();
    }
    client.delete(raftkv_proto::DeleteRequest { key: b"key7".to_vec(), ..Default::default() }).await.unwrap();
    drop(client);
    // Half clean, half brutal.
    cluster.stop(1);
    cluster.kill(2);
    cluster.kill(3);
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for i in 0..50 {
        let kv = client.get(format!("key{i}"), false).await.unwrap().kv;
        if i == 7 {
            assert!(kv.is_none(), "deleted key came back");
        } else {
            assert_eq!(kv.unwrap().value, format!("value{i}").as_bytes());
        }
    }
    // Revisions continue where they stopped (a fresh store is at 1, as etcd's; 51 writes so far).
    let r = client.put("after", "restart").await.unwrap();
    assert_eq!(r.header.unwrap().revision, 53);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_node_catches_up_by_snapshot_install() {
    let mut cluster = TestCluster::start_with(
        3,
        &["--snapshot-every", "50", "--keep-after-snapshot", "5", "--wal-segment-bytes", "4096"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let lagging = (1..=3).find(|i| *i != leader).unwrap();
    cluster.kill(lagging);
    let lag_index = 0;

    let client = cluster.client_of(&cluster.running());
    for i in 0..300 {
        client.put(format!("snap{i:04}"), vec![b'x'; 200]).await.unwrap();
    }
    // The leader snapshotted and purged its WAL past everything the lagging node has.
    let s = eventually(Duration::from_secs(20), "leader snapshot + purge", || async {
        let s = cluster.status(leader).await?;
        (s.snapshot_index >= 250 && s.purged_index > lag_index + 50).then_some(s)
    })
    .await;
    let segments = std::fs::read_dir(cluster.wal_dir(leader)).unwrap().count();
    assert!(segments < 10, "old WAL segments were deleted after compaction ({segments} files left)");

    cluster.spawn(lagging);
    cluster.wait_applied(lagging, s.commit_index, Duration::from_secs(30)).await;
    let ls = cluster.status(lagging).await.unwrap();
    assert!(ls.snapshot_index > 0, "the lagging node installed a snapshot (snapshot index {})", ls.snapshot_index);
    for i in [0, 1, 150, 299] {
        assert_eq!(cluster.local_get(lagging, &format!("snap{i:04}")).await.map(|v| v.len()), Some(200), "snap{i:04}");
    }
    assert_eq!(ls.key_count, 300);
    assert_eq!(ls.header.unwrap().revision, 301, "300 writes after revision 1");

    // And after a restart it starts from its own snapshot.
    cluster.kill(lagging);
    cluster.spawn(lagging);
    cluster.wait_applied(lagging, s.commit_index, Duration::from_secs(20)).await;
    assert_eq!(cluster.status(lagging).await.unwrap().key_count, 300);
}
