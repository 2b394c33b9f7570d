//! Bad input gets a precise error and loses nothing: empty and over-size keys and values, malformed requests,
//! unknown members, a wrong data directory, a port in use.

mod harness;

use std::{process::Command, time::Duration};

use harness::{TestCluster, BIN};
use raftkv_proto as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_errors() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let c = cluster.client();
    c.put("keep", "me").await.unwrap();

    let e = c.put("", "v").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("key must not be empty"), "{e:?}");

    let e = c.put(vec![b'k'; 4097], "v").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("key is 4097 bytes, over the limit of 4096 bytes"), "{e:?}");

    let e = c.put("big", vec![0u8; 1536 * 1024 + 1]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("over the limit of 1572864 bytes"), "{e:?}");
    // Exactly at the limit is fine.
    c.put("big", vec![7u8; 1536 * 1024]).await.unwrap();
    assert_eq!(c.get("big", false).await.unwrap().kv.unwrap().value.len(), 1536 * 1024);

    let e = c.get("", false).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A transaction op with nothing in it, and an unknown compare target.
    let e = c
        .txn(pb::TxnRequest { success: vec![pb::RequestOp { request: None }], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let bad = pb::Compare { key: b"k".to_vec(), target: 99, ..Default::default() };
    let e = c.txn(pb::TxnRequest { compare: vec![bad], ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("unknown compare target 99"));

    let e = c.range(pb::RangeRequest { key: b"a".to_vec(), limit: -1, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let e = c.member_remove(77).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("unknown member 77"));
    let e = c.member_add(0, "127.0.0.1:1", "").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c.member_add(9, "not-an-address", "").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Raw garbage on the wire does not crash the node.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(cluster.addr(1)).await.unwrap();
        let _ = s.write_all(b"\x00\x00\x00\x04\x01garbage that is not http2 at all").await;
    }
    let mut raw = c.kv(&cluster.addr(1)).unwrap();
    // A syntactically valid message whose bytes are not UTF-8 is fine: keys are bytes.
    raw.put(pb::PutRequest { key: vec![0xff, 0xfe], value: vec![0], ..Default::default() }).await.unwrap();

    // Nothing was lost along the way.
    assert_eq!(c.get("keep", false).await.unwrap().kv.unwrap().value, b"me");
    for id in 1..=3 {
        assert!(cluster.status(id).await.is_some(), "node {id} still up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_data_dir_and_busy_port_refuse_to_start() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    cluster.client().put("x", "y").await.unwrap();
    // The put's log index (not a fixed one: elections and membership records come before it).
    let put_index = cluster.status(leader).await.unwrap().commit_index;
    cluster.stop(2);

    // Node 3's command line pointed at node 2's data dir.
    let n2_dir = cluster.nodes[&2].data_dir.clone();
    let out = Command::new(BIN)
        .args(["serve", "--id", "3", "--listen", &format!("127.0.0.1:{}", harness::free_port())])
        .arg("--data-dir")
        .arg(&n2_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to node 2, not node 3"), "{err}");

    // A directory that is not raftkv's.
    let foreign = cluster.dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--id", "5", "--listen", &format!("127.0.0.1:{}", harness::free_port())])
        .args(["--listen-peer", &format!("127.0.0.1:{}", harness::free_port())])
        .arg("--data-dir")
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a raftkv data directory"));
    assert_eq!(std::fs::read_to_string(foreign.join("notes.txt")).unwrap(), "mine", "foreign files untouched");

    // A port in use (node 1's).
    let out = Command::new(BIN)
        .args(["serve", "--id", "2", "--listen", &cluster.addr(1)])
        .args(["--listen-peer", &format!("127.0.0.1:{}", harness::free_port())])
        .arg("--data-dir")
        .arg(&n2_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {}", cluster.addr(1))) && err.contains("in use"), "{err}");

    // Node 2 restarts fine afterwards: nothing was damaged.
    cluster.spawn(2);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    cluster.wait_applied(2, put_index, Duration::from_secs(10)).await;
    assert_eq!(cluster.local_get(2, "x").await.as_deref(), Some(&b"y"[..]));
}
