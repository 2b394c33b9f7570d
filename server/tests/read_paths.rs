//! Linearizable reads: the leader lease serves them without a round while a quorum acknowledges the leader, and a
//! leader cut off from its quorum stops serving them from the lease (it never answers with a value that a newer
//! leader has overwritten). `--linearizable-reads read-index` takes the round every time.

mod harness;

use std::time::Duration;

use harness::{http_get, TestCluster};

/// The value of counter `name` in a node's `/metrics`.
async fn counter(cluster: &TestCluster, id: u64, name: &str) -> f64 {
    let body = http_get(&cluster.nodes[&id].http, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .unwrap_or_else(|| panic!("no {name} in the metrics:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_serves_reads_and_a_cut_off_leader_never_reads_stale_data() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let c = cluster.node_client(leader);
    for i in 0..20 {
        c.put(format!("k{i}"), format!("v{i}")).await.expect("put");
        let got = c.get(format!("k{i}"), false).await.expect("get").kv.expect("present");
        assert_eq!(got.value, format!("v{i}").into_bytes(), "a read sees the write before it");
    }
    assert!(counter(&cluster, leader, "raftkv_lease_reads_total").await > 0.0, "reads were served from the lease");

    // Cut the leader off from both followers. They elect a new leader and overwrite the key.
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    cluster.partition(leader, &others).await;
    for id in &others {
        cluster.partition(*id, &[leader]).await;
    }
    let majority = &cluster.client_of(&others);
    harness::eventually(
        Duration::from_secs(30),
        "the majority elects a new leader and takes a write",
        move || async move { majority.put("k0", "new").await.ok() },
    )
    .await;

    // The old leader still believes it leads; a linearizable read sent to it must not return the old value.
    let old = &cluster.node_client(leader);
    match old.get("k0", false).await {
        Ok(r) => assert_eq!(r.kv.expect("present").value, b"new", "the cut-off leader served a stale read"),
        // Refused, or never answered: tonic reports its own request timeout as Cancelled ("Timeout expired").
        Err(status) => assert!(
            matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
                || (status.code() == tonic::Code::Cancelled && status.message().contains("Timeout expired")),
            "the cut-off leader refuses the read: {status:?}"
        ),
    }

    // Healed, the old leader follows again and reads see the new value through it.
    cluster.partition(leader, &[]).await;
    for id in &others {
        cluster.partition(*id, &[]).await;
    }
    harness::eventually(Duration::from_secs(30), "the old leader serves the new value", move || async move {
        old.get("k0", false).await.ok().and_then(|r| r.kv).filter(|kv| kv.value == b"new")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_index_mode_takes_a_round_for_every_batch_and_no_lease() {
    let cluster = TestCluster::start_with(3, &["--linearizable-reads", "read-index"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let c = cluster.node_client(leader);
    for i in 0..20 {
        c.put(format!("k{i}"), format!("v{i}")).await.expect("put");
    }
    // Concurrent reads share rounds; each still sees every write acknowledged before it.
    let c = &c;
    let reads = (0..20).map(|i| async move { (i, c.get(format!("k{i}"), false).await) });
    for (i, r) in futures::future::join_all(reads).await {
        assert_eq!(r.expect("get").kv.expect("present").value, format!("v{i}").into_bytes());
    }
    assert_eq!(counter(&cluster, leader, "raftkv_lease_reads_total").await, 0.0, "no read used the lease");
}
