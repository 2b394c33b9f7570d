//! Disaster recovery: `raftkv snapshot save` from a running cluster, the cluster destroyed, `raftkv snapshot
//! restore` into the data directories of a new cluster, and every key — value, create and mod revision, version —
//! its MVCC history and the revision are back. A damaged backup is refused.

mod harness;

use std::{process::Command, time::Duration};

use harness::{TestCluster, BIN};
use raftkv_proto as pb;

fn raftkv(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

async fn everything(c: &raftkv::client::Client) -> pb::RangeResponse {
    c.range(pb::RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_backup_restores_every_key_and_revision_into_a_new_cluster() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.db");
    let file = file.to_str().unwrap();
    let (before, old_revision) = {
        let cluster = TestCluster::start(3);
        cluster.wait_for_leader(Duration::from_secs(20)).await;
        let c = cluster.client();
        for i in 0..50 {
            c.put(format!("k/{i:02}"), format!("v{i}")).await.unwrap();
        }
        let old = c.put("k/00", "first").await.unwrap().header.unwrap().revision;
        c.put("k/00", "second").await.unwrap();
        c.delete(pb::DeleteRequest { key: b"k/01".to_vec(), ..Default::default() }).await.unwrap();
        let endpoints = cluster.running().iter().map(|id| cluster.addr(*id)).collect::<Vec<_>>().join(",");
        let (ok, out, err) = raftkv(&["snapshot", "save", file, "--endpoints", &endpoints]);
        assert!(ok, "save: {out}{err}");
        assert!(out.contains("revision"), "{out}");
        (everything(&c).await, old)
        // The cluster is destroyed here: processes killed, data directories deleted.
    };
    let revision = before.header.as_ref().unwrap().revision;
    let (ok, out, err) = raftkv(&["snapshot", "status", file, "-o", "json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((status["revision"].as_i64(), status["keys"].as_u64()), (Some(revision), Some(49)), "{status}");

    // A damaged copy is refused.
    let mut damaged = std::fs::read(file).unwrap();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    let damaged_path = work.path().join("damaged.db");
    std::fs::write(&damaged_path, damaged).unwrap();
    let dir = work.path().join("never");
    let (ok, _, err) = raftkv(&[
        "snapshot",
        "restore",
        damaged_path.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--id",
        "1",
    ]);
    assert!(!ok && err.contains("SHA-256"), "{err}");

    // A new cluster, every member restored from the backup.
    let mut cluster = TestCluster::prepare(3, &[], false);
    for id in 1..=3u64 {
        let dir = cluster.nodes[&id].data_dir.to_str().unwrap().to_string();
        let (ok, out, err) = raftkv(&["snapshot", "restore", file, "--data-dir", &dir, "--id", &id.to_string()]);
        assert!(ok, "restore {id}: {out}{err}");
    }
    let (ok, _, err) =
        raftkv(&["snapshot", "restore", file, "--data-dir", cluster.nodes[&1].data_dir.to_str().unwrap(), "--id", "1"]);
    assert!(!ok && err.contains("not empty"), "a second restore into the same directory is refused: {err}");
    for id in 1..=3u64 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let c = cluster.client();
    let after = everything(&c).await;
    assert_eq!(after.header.as_ref().unwrap().revision, revision, "the revision is back");
    assert_eq!(after.kvs, before.kvs, "every key, value, create and mod revision and version is back");
    // Every member has it (serializable reads, each node's own state).
    for id in 1..=3u64 {
        let r = cluster.node_client(id).get("k/49", true).await.unwrap();
        assert_eq!(r.kv.unwrap().value, b"v49", "node {id}");
    }
    // The MVCC history came along: a read at a revision before the backup.
    assert_eq!(c.get_at("k/00", false, old_revision).await.unwrap().kv.unwrap().value, b"first");
    // And the new cluster carries on from there.
    let next = c.put("after", "restore").await.unwrap().header.unwrap().revision;
    assert_eq!(next, revision + 1);
}
