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

/// A fresh member whose peers are not up yet waits before it bootstraps (however long they take to be scheduled).
/// Meanwhile its HTTP port says it is alive, so a supervisor (a kubelet's liveness probe) does not restart it, and
/// not ready; in clear text and over TLS, asked by `raftkv probe` (the image's health check). Once a majority runs,
/// the node's own server takes over the port and is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_waiting_for_its_peers_is_live_but_not_ready() {
    for tls in [false, true] {
        let mut cluster = TestCluster::prepare(3, &[], tls);
        cluster.spawn(1);
        let http = cluster.nodes[&1].http.clone();
        let probe = |what: &str| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"));
            cmd.args(["probe", what, "--http", &http, "--timeout", "5s"]).env_remove("RAFTKV_CERT_FILE");
            if tls {
                cmd.env("RAFTKV_CERT_FILE", "node-1.pem"); // only whether it is set matters to the probe
            }
            let out = cmd.output().unwrap();
            (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let (_, live) = eventually(Duration::from_secs(20), "node 1 live while it waits for its peers", || {
            let p = probe("live");
            async move { p.0.then_some(p) }
        })
        .await;
        assert!(live.contains("waiting for a majority of --initial-cluster"), "tls {tls}: /healthz says why: {live}");
        let (ready, why) = probe("ready");
        assert!(!ready && why.contains("not ready: waiting for a majority"), "tls {tls}: /readyz while waiting: {why}");

        cluster.spawn(2);
        cluster.spawn(3);
        eventually(Duration::from_secs(30), "node 1 ready once its peers run", || {
            let p = probe("ready");
            async move { p.0.then_some(()) }
        })
        .await;
        assert_eq!(probe("live"), (true, "ok".to_string()), "tls {tls}: the node's own /healthz serves the port");
    }
}
