//! Compare-and-swap semantics, and a watch that delivers every change in order across a leader change.

mod harness;

use std::time::Duration;

use harness::TestCluster;
use raftkv_proto as pb;

fn cas(key: &str, expect_version: i64, new: &str) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![pb::Compare {
            key: key.into(),
            target: pb::compare::Target::Version as i32,
            result: pb::compare::Result::Equal as i32,
            value: vec![],
            number: expect_version,
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::Put(pb::PutRequest {
                key: key.into(),
                value: new.into(),
                prev_kv: true,
                lease: 0,
            })),
        }],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::Range(pb::RangeRequest { key: key.into(), ..Default::default() })),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let c = cluster.client();

    // Create-if-absent succeeds once.
    let r = c.txn(cas("lock", 0, "owner-a")).await.unwrap();
    assert!(r.succeeded);
    let r = c.txn(cas("lock", 0, "owner-b")).await.unwrap();
    assert!(!r.succeeded, "second create-if-absent must fail");
    match &r.responses[0].response {
        Some(pb::response_op::Response::Range(rr)) => assert_eq!(rr.kvs[0].value, b"owner-a"),
        other => panic!("expected the current value, got {other:?}"),
    }
    // Swap on the right version.
    let r = c.txn(cas("lock", 1, "owner-c")).await.unwrap();
    assert!(r.succeeded);
    match &r.responses[0].response {
        Some(pb::response_op::Response::Put(p)) => assert_eq!(p.prev_kv.as_ref().unwrap().value, b"owner-a"),
        other => panic!("expected a put response, got {other:?}"),
    }
    let kv = c.get("lock", false).await.unwrap().kv.unwrap();
    assert_eq!((kv.value.as_slice(), kv.version), (&b"owner-c"[..], 2));

    // Concurrent CAS increments: exactly one winner per version, no lost update.
    c.put("counter", "0").await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let c = cluster.client();
        handles.push(tokio::spawn(async move {
            let mut wins = 0;
            for _ in 0..10 {
                loop {
                    let cur = c.get("counter", false).await.unwrap().kv.unwrap();
                    let n: u64 = String::from_utf8(cur.value).unwrap().parse().unwrap();
                    let req = pb::TxnRequest {
                        compare: vec![pb::Compare {
                            key: b"counter".to_vec(),
                            target: pb::compare::Target::ModRevision as i32,
                            result: pb::compare::Result::Equal as i32,
                            value: vec![],
                            number: cur.mod_revision,
                        }],
                        success: vec![pb::RequestOp {
                            request: Some(pb::request_op::Request::Put(pb::PutRequest {
                                key: b"counter".to_vec(),
                                value: (n + 1).to_string().into_bytes(),
                                prev_kv: false,
                                lease: 0,
                            })),
                        }],
                        failure: vec![],
                    };
                    if c.txn(req).await.unwrap().succeeded {
                        wins += 1;
                        break;
                    }
                }
            }
            wins
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, 40);
    let v = c.get("counter", false).await.unwrap().kv.unwrap().value;
    assert_eq!(v, b"40", "every successful CAS increment is counted exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_every_change_in_order_across_leader_change() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let watcher_node = (1..=3).find(|i| *i != leader).unwrap();

    let wc = cluster.node_client(watcher_node);
    let (_, mut stream) = wc
        .watch(pb::WatchRequest {
            key: b"w/".to_vec(),
            range_end: raftkv::keyspace::prefix_end(b"w/"),
            start_revision: 0,
            prev_kv: true,
        })
        .await
        .unwrap();
    // The first message confirms the watch.
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.events.is_empty());

    let client = cluster.client();
    for i in 0..20 {
        client.put(format!("w/{}", i % 5), format!("{i}")).await.unwrap();
        client.put("other", "noise").await.unwrap();
    }
    cluster.kill(leader);
    cluster.wait_for_leader(Duration::from_secs(15)).await;
    let client = cluster.client_of(&cluster.running());
    for i in 20..40 {
        client.put(format!("w/{}", i % 5), format!("{i}")).await.unwrap();
    }
    client.delete(pb::DeleteRequest { key: b"w/0".to_vec(), ..Default::default() }).await.unwrap();

    let mut events = Vec::new();
    while events.len() < 41 {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        events.extend(msg.events);
    }
    let mut last_rev = 0;
    for (i, ev) in events.iter().enumerate().take(40) {
        let kv = ev.kv.as_ref().unwrap();
        assert_eq!(kv.key, format!("w/{}", i % 5).into_bytes(), "event {i} key");
        assert_eq!(kv.value, format!("{i}").into_bytes(), "event {i} value (none skipped, none reordered)");
        assert!(kv.mod_revision > last_rev, "revisions strictly increase");
        last_rev = kv.mod_revision;
        if i >= 5 {
            assert_eq!(ev.prev_kv.as_ref().unwrap().value, format!("{}", i - 5).into_bytes());
        }
    }
    assert_eq!(events[40].r#type, pb::event::EventType::Delete as i32);
    assert_eq!(events[40].kv.as_ref().unwrap().key, b"w/0");
}
