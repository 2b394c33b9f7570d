//! What the dashboard relies on, checked against real processes: each node's `LogEntries` and `Events` APIs, and
//! `raftkv cluster`'s dashboard server and process-control API (kill, pause, partition, restart, add, forget).

mod harness;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use harness::{eventually, free_port, http_get, http_post, http_request, try_http_request, TestCluster, BIN};
use raftkv_proto::{self as pb, cluster_client::ClusterClient, dashboard::ClusterInfo, EventKind};
use tonic::transport::Channel;

async fn cluster_client(addr: &str) -> ClusterClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    ClusterClient::new(ch)
}

/// The next event satisfying `pred` on `stream`, or a panic naming `what` after 10 s.
async fn next_event(
    stream: &mut tonic::Streaming<pb::NodeEvent>,
    what: &str,
    pred: impl Fn(&pb::NodeEvent) -> bool,
) -> pb::NodeEvent {
    let wait = async {
        loop {
            let e = stream.message().await.expect("event stream").expect("event stream ended");
            if pred(&e) {
                return e;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap_or_else(|_| panic!("no event: {what}"))
}

fn kind(e: &pb::NodeEvent) -> EventKind {
    EventKind::try_from(e.kind).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_entries_and_events_show_raft_at_work() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    cluster.client().put("dash/a", "1").await.unwrap();
    cluster.client().put("dash/b", "22").await.unwrap();

    // The leader's log: a no-op from its election, then our two puts, committed.
    let mut c = cluster_client(&cluster.addr(leader)).await;
    let log = c.log_entries(pb::LogEntriesRequest { to: 0, limit: 0 }).await.unwrap().into_inner();
    let summaries: Vec<&str> = log.entries.iter().map(|e| e.summary.as_str()).collect();
    assert!(summaries.iter().any(|s| s.contains("put dash/a (1 bytes)")), "{summaries:?}");
    assert!(summaries.iter().any(|s| s.contains("put dash/b (2 bytes)")), "{summaries:?}");
    assert!(log.entries.iter().any(|e| e.kind == pb::LogEntryKind::Blank as i32), "{summaries:?}");
    assert!(log.entries.windows(2).all(|w| w[1].index == w[0].index + 1), "entries are consecutive, oldest first");
    assert_eq!(log.entries.last().unwrap().index, log.last_index);
    assert!(log.entries.iter().all(|e| e.committed == (e.index <= log.commit_index)));
    let one = c.log_entries(pb::LogEntriesRequest { to: 0, limit: 1 }).await.unwrap().into_inner();
    assert_eq!(one.entries.len(), 1);
    assert_eq!(one.entries[0].index, log.last_index);

    // Traffic: the leader sent both puts to both followers, and they heard from it.
    let st = cluster.status(leader).await.unwrap();
    assert_eq!(st.peers.iter().map(|p| p.node_id).collect::<Vec<_>>().len(), 2, "{:?}", st.peers);
    assert!(st.peers.iter().all(|p| p.append_entries > 0 && p.entries >= 2 && p.has_answer), "{:?}", st.peers);
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let fs = cluster.status(follower).await.unwrap();
    assert!(fs.has_leader_contact, "{fs:?}");
    assert!(fs.election_timeout_min_ms > 0 && fs.election_timeout_min_ms <= fs.election_timeout_max_ms);

    // A follower's events: it started, and it knows the leader.
    let mut fc = cluster_client(&cluster.addr(follower)).await;
    let mut events = fc.events(pb::EventsRequest::default()).await.unwrap().into_inner();
    let started = next_event(&mut events, "started", |e| kind(e) == EventKind::Started).await;
    assert_eq!(started.seq, 1);
    next_event(&mut events, "leader known", |e| {
        kind(e) == EventKind::LeaderChanged && e.message.contains(&format!("node {leader}"))
    })
    .await;

    // Injected faults are events too.
    http_post(&cluster.nodes[&follower].http, "/debug/partition?peers=99").await;
    next_event(&mut events, "partition", |e| kind(e) == EventKind::FaultInjected && e.message.contains("99")).await;
    http_post(&cluster.nodes[&follower].http, "/debug/partition?peers=").await;
    next_event(&mut events, "heal", |e| kind(e) == EventKind::FaultInjected && e.message.contains("healed")).await;

    // Kill the leader: the follower's live stream reports the new term and the new leader.
    let term_before = cluster.status(follower).await.unwrap().term;
    cluster.kill(leader);
    let term = next_event(&mut events, "term change", |e| kind(e) == EventKind::TermChanged).await;
    assert!(term.term > term_before, "{term:?}");
    let new = next_event(&mut events, "new leader", |e| {
        kind(e) == EventKind::LeaderChanged && !e.message.contains(&format!("node {leader}"))
    })
    .await;
    let new_leader = (1..=3).find(|i| *i != leader && new.message.contains(&format!("node {i}"))).unwrap();
    // The new leader's RPCs to the dead node fail, and it says so.
    eventually(Duration::from_secs(10), "failures to the dead node", || async {
        let st = cluster.status(new_leader).await?;
        st.peers.iter().find(|p| p.node_id == leader && p.failures > 0 && !p.last_error.is_empty()).map(|_| ())
    })
    .await;

    // Reconnecting with the last (incarnation, seq) replays nothing already seen.
    let last = term.seq;
    let mut again = fc.events(pb::EventsRequest { after_seq: last, incarnation: term.incarnation }).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), again.get_mut().message()).await;
    if let Ok(Ok(Some(e))) = next {
        assert!(e.seq > last, "replayed an event already seen: {e:?}");
    }
}

/// A `raftkv cluster` on free ports, killed (with its children) on drop.
struct ClusterCommand {
    child: std::process::Child,
    dashboard: String,
    base: u16,
    _dir: tempfile::TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Drop for ClusterCommand {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; its nodes die with it (PR_SET_PDEATHSIG).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn port_free(p: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
}

fn start_cluster_command(web_dir: &std::path::Path) -> ClusterCommand {
    let serial = harness::serial();
    let base = loop {
        let b = free_port();
        if b < 31_800 && [1, 2, 3, 100, 101, 102, 103, 200, 201, 202, 203].iter().all(|o| port_free(b + o)) {
            break b;
        }
    };
    let dashboard = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .args(["cluster", "--base-port", &base.to_string(), "--dashboard", &dashboard])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--web-dir")
        .arg(web_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ClusterCommand { child, dashboard, base, _dir: dir, _serial: serial }
}

async fn raw_post(addr: &str, path: &str, headers: &[&str]) -> String {
    harness::http_request_with(addr, "POST", path, headers).await
}

/// The HTTP status code and body of a raw response.
fn parse(resp: &str) -> (u16, String) {
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, resp.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string())
}

async fn cluster_info(dashboard: &str) -> Option<ClusterInfo> {
    // Not listening yet (the cluster serves the dashboard once a leader is elected): poll again.
    let get = try_http_request(dashboard, "GET", "/api/cluster");
    let (code, body) = parse(&tokio::time::timeout(Duration::from_secs(2), get).await.ok()??);
    (code == 200).then(|| serde_json::from_str(&body).expect("ClusterInfo JSON"))
}

async fn process_of(dashboard: &str, id: u64) -> Option<(String, bool, String)> {
    let info = cluster_info(dashboard).await?;
    let n = info.nodes.into_iter().find(|n| n.id == Some(id))?;
    Some((serde_json::to_value(n.process).unwrap().as_str().unwrap_or("").to_string(), n.partitioned, n.note))
}

async fn blocked(http: &str) -> String {
    // A node being restarted is not listening yet: nothing blocked that we can see.
    let get = try_http_request(http, "GET", "/debug/partition");
    match tokio::time::timeout(Duration::from_secs(2), get).await {
        Ok(Some(r)) => parse(&r).1,
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_command_serves_the_dashboard_and_breaks_nodes_on_request() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<!doctype html><title>test dashboard</title>").unwrap();
    let cc = start_cluster_command(web.path());
    let d = cc.dashboard.clone();
    let http = |id: u16| format!("127.0.0.1:{}", cc.base + 100 + id - 1);

    let info = eventually(Duration::from_secs(60), "the dashboard server", || cluster_info(&d)).await;
    assert!(info.control);
    assert_eq!(info.nodes.len(), 3);
    assert_eq!(info.nodes[0].url, format!("http://127.0.0.1:{}", cc.base));
    let (code, body) = parse(&http_get(&d, "/").await);
    assert_eq!(code, 200);
    assert!(body.contains("test dashboard"), "{body}");

    // Errors are clear.
    let r = http_post(&d, "/api/nodes/1/explode").await;
    assert_eq!(parse(&r).0, 404);
    assert!(r.contains("partition"), "lists the actions: {r}");
    assert_eq!(parse(&http_post(&d, "/api/nodes/42/kill").await).0, 404);

    // A page on another site cannot drive it (a "simple" POST needs no preflight), nor can a rebound host name.
    let foreign =
        raw_post(&d, "/api/nodes/1/pause", &["Origin: http://evil.example", "Sec-Fetch-Site: cross-site"]).await;
    assert_eq!(parse(&foreign).0, 403, "{foreign}");
    let rebound = raw_post(&d, "/api/nodes/1/kill", &["Host: evil.example", "Sec-Fetch-Site: same-origin"]).await;
    assert_eq!(parse(&rebound).0, 403, "{rebound}");
    assert_eq!(process_of(&d, 1).await.unwrap().0, "running", "node 1 was neither paused nor killed");
    // The nodes grant CORS to the dashboard's page only.
    let grpc = format!("127.0.0.1:{}", cc.base);
    let own = harness::http_request_with(
        &grpc,
        "OPTIONS",
        "/raftkv.v1.KV/Put",
        &[&format!("Origin: http://{d}"), "Access-Control-Request-Method: POST"],
    )
    .await;
    assert!(own.to_lowercase().contains(&format!("access-control-allow-origin: http://{d}")), "{own}");

    // Pause and resume (from the dashboard's own page).
    let same =
        raw_post(&d, "/api/nodes/2/pause", &[&format!("Origin: http://{d}"), "Sec-Fetch-Site: same-origin"]).await;
    assert_eq!(parse(&same).0, 200, "{same}");
    assert_eq!(process_of(&d, 2).await.unwrap().0, "paused");
    assert_eq!(parse(&http_post(&d, "/api/nodes/2/resume").await).0, 200);
    assert_eq!(process_of(&d, 2).await.unwrap().0, "running");

    // Partition node 3: it drops both peers, and they drop it; heal undoes both sides.
    assert_eq!(parse(&http_post(&d, "/api/nodes/3/partition").await).0, 200);
    assert!(process_of(&d, 3).await.unwrap().1);
    eventually(Duration::from_secs(10), "node 3 blocks 1 and 2", || async {
        blocked(&http(3)).await.contains("[1,2]").then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "node 1 blocks 3", || async {
        blocked(&http(1)).await.contains("\"blocked\":[3]").then_some(())
    })
    .await;
    assert_eq!(parse(&http_post(&d, "/api/nodes/3/heal").await).0, 200);
    for id in [1, 3] {
        eventually(Duration::from_secs(10), "healed", || async {
            blocked(&http(id)).await.contains("\"blocked\":[]").then_some(())
        })
        .await;
    }

    // Partition state is re-applied to a restarted process (a new process starts healed).
    assert_eq!(parse(&http_post(&d, "/api/nodes/3/partition").await).0, 200);
    eventually(Duration::from_secs(10), "node 3 blocks 1 and 2", || async {
        blocked(&http(3)).await.contains("[1,2]").then_some(())
    })
    .await;
    assert_eq!(parse(&http_post(&d, "/api/nodes/3/restart").await).0, 200);
    eventually(Duration::from_secs(20), "restarted node 3 is partitioned again", || async {
        blocked(&http(3)).await.contains("[1,2]").then_some(())
    })
    .await;
    assert_eq!(parse(&http_post(&d, "/api/nodes/3/heal").await).0, 200);

    // A clean stop, with an event stream open to the node (as the dashboard always has): the node ends its
    // streams and exits by itself, instead of being killed when the shutdown grace runs out.
    let addr2 = format!("127.0.0.1:{}", cc.base + 1);
    let mut events = cluster_client(&addr2).await.events(pb::EventsRequest::default()).await.unwrap().into_inner();
    events.message().await.unwrap();
    let r = http_post(&d, "/api/nodes/2/stop").await;
    assert_eq!(parse(&r).0, 200, "{r}");
    let (state, _, note) = process_of(&d, 2).await.unwrap();
    assert_eq!((state.as_str(), note.as_str()), ("down", "stopped (exit status: 0)"));
    assert_eq!(parse(&http_post(&d, "/api/nodes/2/stop").await).0, 409, "stopping a stopped node is a conflict");
    assert_eq!(parse(&http_post(&d, "/api/nodes/2/restart").await).0, 200, "restart starts a stopped node");

    // kill -9, then restart: down with a note, then running and answering again.
    assert_eq!(parse(&http_post(&d, "/api/nodes/1/kill").await).0, 200);
    let (state, _, note) = process_of(&d, 1).await.unwrap();
    assert_eq!((state.as_str(), note.as_str()), ("down", "killed (SIGKILL)"));
    assert_eq!(parse(&http_post(&d, "/api/nodes/1/kill").await).0, 409, "killing a dead node is a conflict");
    assert_eq!(parse(&http_post(&d, "/api/nodes/1/restart").await).0, 200);
    let addr1 = format!("127.0.0.1:{}", cc.base);
    let client = raftkv::client::Client::new(vec![addr1.clone()], Duration::from_secs(2));
    eventually(Duration::from_secs(20), "node 1 answers again", || async { client.status(&addr1).await.ok() }).await;

    // Add a node: it starts and joins as a learner; forgetting it stops it.
    let r = http_post(&d, "/api/nodes").await;
    assert_eq!(parse(&r).0, 200, "{r}");
    assert!(r.contains("\"id\":4"), "{r}");
    let all = (0..3).map(|i| format!("127.0.0.1:{}", cc.base + i)).collect();
    let client = raftkv::client::Client::new(all, Duration::from_secs(5));
    eventually(Duration::from_secs(30), "node 4 is a learner", || async {
        let m = client.member_list().await.ok()?;
        m.members.iter().any(|m| m.id == 4 && !m.voter).then_some(())
    })
    .await;
    client.member_remove(4).await.unwrap();
    let r = http_request(&d, "DELETE", "/api/nodes/4").await;
    assert_eq!(parse(&r).0, 204, "{r}");
    assert_eq!(cluster_info(&d).await.unwrap().nodes.len(), 3);
    assert!(port_free(cc.base + 3), "node 4's port is free again");
    assert!(!cc._dir.path().join("node-4").exists(), "a forgotten node's data is deleted");
    // Ids are not reused: the next node is 5, and it starts empty.
    let r = http_post(&d, "/api/nodes").await;
    assert!(r.contains("\"id\":5"), "{r}");

    // Restarted nodes outlive the thread that started them (the parent-death signal follows the spawning
    // thread; tokio retires idle blocking threads after 10 s).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let info = cluster_info(&d).await.unwrap();
    let running: Vec<u64> = info
        .nodes
        .iter()
        .filter(|n| n.process == Some(raftkv_proto::dashboard::ProcessState::Running))
        .filter_map(|n| n.id)
        .collect();
    assert_eq!(running, [1, 2, 3, 5], "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_a_read_only_dashboard_with_web_dir() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<title>node dashboard</title>").unwrap();
    let dir = web.path().to_str().unwrap();
    let cluster = TestCluster::start_with(2, &["--web-dir", dir, "--dashboard-endpoints", "localhost:1,localhost:2"]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let http = cluster.nodes[&1].http.clone();
    let resp = http_get(&http, "/").await;
    assert!(resp.contains("node dashboard"), "{resp}");
    let (code, body) = parse(&http_get(&http, "/api/cluster").await);
    assert_eq!(code, 200);
    let info: ClusterInfo = serde_json::from_str(&body).unwrap();
    assert!(!info.control, "a node does not control processes");
    let urls: Vec<&str> = info.nodes.iter().map(|n| n.url.as_str()).collect();
    assert_eq!(urls, ["http://localhost:1", "http://localhost:2"], "the configured endpoints, as URLs");
    // The control API is not there (the static files answer: not found / method not allowed).
    let code = parse(&http_post(&http, "/api/nodes/1/kill").await).0;
    assert!(matches!(code, 404 | 405), "{code}");
    // The node's own endpoints still are.
    assert!(http_get(&http, "/healthz").await.contains("ok"));
}
