//! The CLI as a user runs it: `put`, `get` against a follower, `status -o json`, `scan`, `cas`, exit codes.

mod harness;

use std::{process::Command, time::Duration};

use harness::{TestCluster, BIN};

fn raftkv(endpoints: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("--endpoints").arg(endpoints).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_round_trip() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let all = (1..=3).map(|i| cluster.addr(i)).collect::<Vec<_>>().join(",");
    let follower = cluster.addr((1..=3).find(|i| *i != leader).unwrap());

    let out = raftkv(&all, &["put", "100", "Alice"]);
    assert!(out.status.success(), "{out:?}");
    // Wait until the follower has applied it, then a serializable read there prints the value alone.
    let commit = cluster.status(leader).await.unwrap().commit_index;
    for id in 1..=3 {
        cluster.wait_applied(id, commit, Duration::from_secs(10)).await;
    }
    let out = raftkv(&follower, &["get", "100", "--serializable"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Alice\n");
    let out = raftkv(&follower, &["get", "100"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Alice\n");

    // Absent key: exit 1, message on stderr, nothing on stdout.
    let out = raftkv(&all, &["get", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // status -o json: one object per node reached.
    let out = raftkv(&all, &["status", "-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    for o in arr {
        for f in ["id", "role", "term", "leader", "last_log_index", "commit_index", "applied_index", "endpoint"] {
            assert!(o.get(f).is_some(), "status json lacks {f}: {o}");
        }
        assert_eq!(o["leader"].as_u64(), Some(leader));
    }
    assert_eq!(arr.iter().filter(|o| o["role"] == "leader").count(), 1);

    // The client finds a live node even when the first endpoint is dead.
    let dead = format!("127.0.0.1:{}", harness::free_port());
    let out = raftkv(&format!("{dead},{follower}"), &["get", "100"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Alice\n", "{out:?}");

    // scan, cas, delete.
    for k in ["user/1", "user/2", "user/3"] {
        assert!(raftkv(&all, &["put", k, "u"]).status.success());
    }
    let out = raftkv(&all, &["scan", "user/", "--keys-only"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "user/1\nuser/2\nuser/3\n");
    let out = raftkv(&all, &["cas", "100", "Bob", "--expect", "Alice"]);
    assert!(out.status.success(), "{out:?}");
    let out = raftkv(&all, &["cas", "100", "Carol", "--expect", "Alice"]);
    assert_eq!(out.status.code(), Some(1), "a failed compare exits 1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Bob"));
    let out = raftkv(&all, &["delete", "user/", "--prefix", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deleted"], 3);

    // Bad input from the CLI: a clear error and a non-zero exit.
    let out = raftkv(&all, &["put", "", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidArgument: key must not be empty"));

    // members list
    let out = raftkv(&all, &["members", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    cluster.client().put("m", "1").await.unwrap();
    let http = cluster.nodes[&leader].http.clone();
    let metrics = harness::http_get(&http, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for m in [
        "raftkv_raft_term",
        "raftkv_raft_is_leader 1",
        "raftkv_wal_fsync_seconds_bucket",
        "raftkv_requests_total{code=\"OK\",method=\"Put\"}",
    ] {
        assert!(metrics.contains(m), "metrics lack {m}");
    }
    assert!(harness::http_get(&http, "/healthz").await.starts_with("HTTP/1.1 200"));
    eventually_ready(&http).await;
    let status = harness::http_get(&http, "/status").await;
    let body = status.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["role"], "leader");
    assert_eq!(v["id"].as_u64(), Some(leader));
}

async fn eventually_ready(http: &str) {
    harness::eventually(Duration::from_secs(10), "readyz 200", || async {
        harness::http_get(http, "/readyz").await.starts_with("HTTP/1.1 200").then_some(())
    })
    .await
}

/// What `grpcurl -plaintext ADDR list` does: server reflection lists every service; the health service answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_and_health() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let cluster = TestCluster::start(1);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let channel = cluster.client().channel(&cluster.addr(1)).unwrap();
    let mut refl = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected {resp:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["raftkv.v1.KV", "raftkv.v1.Cluster", "raftkv.v1.Raft", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "reflection lacks {want}: {names:?}");
    }

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest { service: "raftkv.v1.KV".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}
