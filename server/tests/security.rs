//! Closed by default: the peer port is apart from the client port, peers prove themselves before they get data,
//! foreign web pages and rebound host names are refused, a wiped member cannot rejoin as if it had never run,
//! and a TLS cluster refuses clients without TLS or without a certificate.

mod harness;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use harness::{eventually, TestCluster, BIN};
use raftkv_proto::{raft_client::RaftClient, PeerMessage};
use tokio::io::AsyncReadExt;

const SECRET: &str = "correct-horse-battery";

/// One raw HTTP/1.1 exchange with extra header lines; returns the response, lower-cased.
async fn raw(addr: &str, method: &str, path: &str, headers: &[&str]) -> String {
    harness::http_request_with(addr, method, path, headers).await.to_lowercase()
}

fn plain_channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_service_is_only_on_the_peer_port_and_peers_prove_the_secret() {
    let cluster = TestCluster::start_with(3, &["--peer-secret", SECRET]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    cluster.client().put("guarded", "yes").await.unwrap();

    // Not on the client port at all.
    let vote = PeerMessage { from: 9, to: leader, version: 1, ..Default::default() };
    let err = RaftClient::new(plain_channel(&cluster.addr(leader))).vote(vote.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "the client port has no Raft service: {err:?}");

    // On the peer port, an unsigned message, the old clear-text header, and a MAC under another secret fail.
    let peer = plain_channel(&cluster.peer_addr(leader));
    let err = RaftClient::new(peer.clone()).vote(vote.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let mut req = tonic::Request::new(vote.clone());
    req.metadata_mut().insert("x-raftkv-peer-secret", SECRET.parse().unwrap());
    let err = RaftClient::new(peer.clone()).vote(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "a secret in clear is not accepted: {err:?}");
    let mut forged = vote.clone();
    forged.sent_at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    forged.nonce = vec![1; 16];
    forged.mac = vec![0; 32];
    let err = RaftClient::new(peer.clone()).vote(forged).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("MAC"), "{err:?}");
    // The AppendEntries stream checks each message as the unary call does: an unsigned one ends the stream.
    let append = PeerMessage { from: 9, to: leader, version: 1, body: vec![1, 2, 3], ..Default::default() };
    let mut answers =
        RaftClient::new(peer).append_entries_stream(futures::stream::iter([append])).await.unwrap().into_inner();
    let err = answers.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // The cluster keeps working: all nodes share the secret; every member has announced its client address.
    for id in 1..=3 {
        let c = cluster.node_client(id);
        assert_eq!(c.get("guarded", false).await.unwrap().kv.unwrap().value, b"yes");
    }
    eventually(Duration::from_secs(10), "every member's client address is in the membership", || async {
        let members = cluster.client().member_list().await.ok()?.members;
        members.iter().all(|m| m.addr == cluster.addr(m.id) && m.peer_addr == cluster.peer_addr(m.id)).then_some(())
    })
    .await;
}

/// Accepts connections and records every byte sent to it (it never answers like a peer).
async fn recording_listener() -> (String, Arc<Mutex<Vec<u8>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = l.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 65536];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    s.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_add_of_an_impostor_sends_it_no_secret_and_no_data() {
    let cluster = TestCluster::start_with(3, &["--peer-secret", SECRET]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let marker = "exfiltrate-me-0123456789";
    cluster.client().put("secret-data", marker).await.unwrap();

    let (impostor, seen) = recording_listener().await;
    let err = cluster.client().member_add(4, &impostor, "").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("did not prove to be a peer"), "{err:?}");
    // Whatever the leader would do next (replication retries) has had time to happen.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let members = cluster.client().member_list().await.unwrap().members;
    assert!(members.iter().all(|m| m.id != 4), "the impostor is not a member: {members:?}");
    let bytes = seen.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains(SECRET), "the secret reached the impostor");
    assert!(!text.contains(marker), "data reached the impostor");
    assert!(!text.contains("x-raftkv-peer-secret"), "no secret header either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_a_cluster_id_is_refused_once_the_cluster_is_known() {
    let cluster = TestCluster::start(1);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let msg = PeerMessage { from: 2, to: 1, cluster_id: 0, version: 1, body: vec![1, 2, 3], ..Default::default() };
    let err = RaftClient::new(plain_channel(&cluster.peer_addr(1))).append_entries(msg).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("without a cluster id"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_web_pages_are_refused_and_the_dashboard_origin_allowed() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<html>dashboard</html>").unwrap();
    let mut cluster = TestCluster::prepare(1, &[], false);
    let http = cluster.nodes[&1].http.clone();
    cluster.extra_args = vec!["--web-dir".into(), web.path().display().to_string()];
    cluster.spawn(1);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let grpc = cluster.addr(1);
    let preflight = |origin: String| {
        let grpc = grpc.clone();
        async move {
            raw(
                &grpc,
                "OPTIONS",
                "/raftkv.v1.KV/Put",
                &[
                    &format!("Origin: {origin}"),
                    "Access-Control-Request-Method: POST",
                    "Access-Control-Request-Headers: content-type,x-grpc-web",
                ],
            )
            .await
        }
    };

    // A page on another origin: refused, with no CORS grant.
    let evil = preflight("http://evil.example".into()).await;
    assert!(!evil.contains("access-control-allow-origin"), "{evil}");
    assert!(evil.contains("grpc-status: 7") || evil.starts_with("http/1.1 403"), "{evil}");
    // A gRPC-Web write from it is refused before it reaches the handler.
    let put = raw(
        &grpc,
        "POST",
        "/raftkv.v1.KV/Put",
        &["Origin: http://evil.example", "Content-Type: application/grpc-web+proto"],
    )
    .await;
    assert!(put.contains("grpc-status: 7"), "{put}");
    // The node's own dashboard (served by --web-dir on its HTTP port) is allowed.
    let own = preflight(format!("http://{http}")).await;
    assert!(own.contains(&format!("access-control-allow-origin: http://{http}")), "{own}");

    // The fault hook: a cross-origin POST and a rebound Host are refused; the partition does not change.
    let resp =
        raw(&http, "POST", "/debug/partition?peers=2", &["Origin: http://evil.example", "Sec-Fetch-Site: cross-site"])
            .await;
    assert!(resp.starts_with("http/1.1 403"), "{resp}");
    let resp =
        raw(&http, "POST", "/debug/partition?peers=2", &["Host: evil.example:80", "Sec-Fetch-Site: same-origin"]).await;
    assert!(resp.starts_with("http/1.1 403") && resp.contains("rebinding"), "{resp}");
    let state = raw(&http, "GET", "/debug/partition", &[]).await;
    assert!(state.contains("\"blocked\":[]"), "nothing was partitioned: {state}");
    // The same request from a tool (no Origin) works.
    let ok = raw(&http, "POST", "/debug/partition?peers=2", &[]).await;
    assert!(ok.starts_with("http/1.1 200"), "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_member_refuses_to_rejoin_until_removed_and_joined_again() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    for i in 0..20 {
        cluster.client().put(format!("k{i}").as_str(), "v").await.unwrap();
    }
    // Every member has announced itself (it has run) before node 3 loses its disk.
    eventually(Duration::from_secs(10), "node 3's client address is recorded", || async {
        let m = cluster.client().member_list().await.ok()?.members;
        m.iter().any(|m| m.id == 3 && !m.addr.is_empty()).then_some(())
    })
    .await;
    cluster.kill(3);
    std::fs::remove_dir_all(&cluster.nodes[&3].data_dir).unwrap();

    // Restarted with the same flags (--initial-cluster): it refuses, naming the repair.
    cluster.spawn(3);
    let (status, log) = cluster.wait_exit(3, Duration::from_secs(30));
    assert!(!status.success(), "{log}");
    assert!(log.contains("refusing to start") && log.contains("raftkv members remove 3"), "{log}");
    assert!(log.contains("--join"), "{log}");

    // The repair works: remove, then join with an empty directory, promote; it has every write.
    cluster.client().member_remove(3).await.unwrap();
    std::fs::remove_dir_all(&cluster.nodes[&3].data_dir).ok();
    let join = cluster.addr(1);
    cluster.nodes.get_mut(&3).unwrap().bootstrap = vec!["--join".into(), join];
    cluster.spawn(3);
    eventually(Duration::from_secs(20), "node 3 rejoined as a learner", || async {
        let m = cluster.client().member_list().await.ok()?.members;
        m.iter().any(|m| m.id == 3).then_some(())
    })
    .await;
    cluster.client().member_promote(3).await.unwrap();
    eventually(Duration::from_secs(20), "node 3 caught up", || async {
        (cluster.local_get(3, "k19").await.as_deref() == Some(&b"v"[..])).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cluster_still_bootstraps_in_one_command() {
    // Nodes started one after another (the first waits for a majority to answer, then all bootstrap).
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    cluster.client().put("first", "start").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_works_with_certificates_and_refuses_everyone_else() {
    let cluster = TestCluster::start_tls(3, &[]);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let tls = cluster.client_tls();
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().unwrap().display().to_string();
    let endpoints = (1..=3).map(|i| cluster.addr(i)).collect::<Vec<_>>().join(",");
    let cli = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(["--endpoints", &endpoints, "--timeout", "3s"])
            .args(args)
            .output()
            .unwrap()
    };
    let (ca, cert, key) = (path(&tls.cacert), path(&tls.cert), path(&tls.key));
    // Through the CLI, with certificates: write on one node, read through a follower (forwarded over TLS).
    let out = cli(&["--cacert", &ca, "--cert", &cert, "--key", &key, "put", "tls-key", "over-tls"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for id in 1..=3 {
        let out = std::process::Command::new(BIN)
            .args(["--endpoints", &cluster.addr(id), "--cacert", &ca, "--cert", &cert, "--key", &key, "get", "tls-key"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "over-tls",
            "node {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = cluster.status(1).await.unwrap();
    assert!(status.client_tls && status.peer_tls, "{status:?}");

    // A plaintext client is refused with a clear error.
    let out = cli(&["get", "tls-key"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("Unavailable") && err.contains("probably speaks TLS"), "{err}");
    // A TLS client without a certificate is refused (the server requires one), at once: every endpoint's refusal
    // is certain, so the client does not retry it until its (here: very long) deadline.
    let mut child = std::process::Command::new(BIN)
        .args(["--endpoints", &endpoints, "--timeout", "300s", "--cacert", &ca, "get", "tls-key"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let gave_up = child.try_wait().unwrap().is_some();
    child.kill().ok();
    let out = child.wait_with_output().unwrap();
    assert!(gave_up, "the client kept retrying a certain TLS refusal: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("over-tls"), "{err}");
    assert!(err.contains("TLS failed (received fatal alert: CertificateRequired)") && err.contains("--cert"), "{err}");
    // Nor does the peer port answer anything without TLS (the handshake comes first; plain HTTP/2 is dropped).
    let err = RaftClient::new(plain_channel(&cluster.peer_addr(1)))
        .vote(PeerMessage { from: 2, to: 1, version: 1, ..Default::default() })
        .await
        .unwrap_err();
    assert!(!err.metadata().contains_key("grpc-status"), "no gRPC answer at all: {err:?}");
}
