//! Honest health with real processes: a leader cut off from its quorum stops saying it is ready.

mod harness;

use std::time::Duration;

use harness::{eventually, try_http_request, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_false_for_a_leader_without_a_quorum() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let http = cluster.nodes[&leader].http.clone();
    eventually(Duration::from_secs(10), "the leader ready", || async {
        try_http_request(&http, "GET", "/readyz").await.filter(|r| r.starts_with("HTTP/1.1 200")).map(|_| ())
    })
    .await;

    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    cluster.partition(leader, &others).await;
    let answer = eventually(Duration::from_secs(20), "the cut-off leader's /readyz to turn 503", || async {
        try_http_request(&http, "GET", "/readyz").await.filter(|r| r.starts_with("HTTP/1.1 503"))
    })
    .await;
    assert!(
        ["leader without a quorum", "no leader", "not leading"].iter().any(|w| answer.contains(w)),
        "the reason is given: {answer}"
    );
    assert!(try_http_request(&http, "GET", "/healthz").await.unwrap().starts_with("HTTP/1.1 200"), "not fatal");
    cluster.partition(leader, &[]).await;
}
