//! A test cluster of real `raftkv` processes.
//!
//! Every node is the real binary (`CARGO_BIN_EXE_raftkv`) on free loopback ports, with its data in a temporary
//! directory and its log in a file next to it. Nothing sleeps for a fixed time: every wait polls a condition
//! until a timeout. Dropping the cluster kills every process (and prints the node logs if the test failed).
//! Cluster tests in one test binary run one at a time (a process-wide lock) so elections are not starved of CPU.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    fs,
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

pub mod etcd;

use raftkv::client::Client;
use raftkv_proto as pb;

pub const BIN: &str = env!("CARGO_BIN_EXE_raftkv");

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the lock that keeps multi-process tests of one test binary from running at the same time (for tests
/// that start processes without a [`TestCluster`]).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free loopback port (see [`raftkv::local_cluster::free_port`]).
pub fn free_port() -> u16 {
    raftkv::local_cluster::free_port().expect("a free loopback port")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub struct TestNode {
    pub id: u64,
    /// Client address.
    pub addr: String,
    /// Peer address.
    pub peer: String,
    pub http: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// Flags for this node instead of --initial-cluster (e.g. --join).
    pub bootstrap: Vec<String>,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, TestNode>,
    pub initial_cluster: String,
    pub extra_args: Vec<String>,
    /// With TLS: the throwaway CA and certificates ([`raftkv::tls::make_test_pki`]).
    pub tls_dir: Option<PathBuf>,
    _serial: MutexGuard<'static, ()>,
}

impl TestCluster {
    /// Starts `n` nodes with default settings.
    pub fn start(n: u64) -> Self {
        Self::start_with(n, &[])
    }

    /// Starts `n` nodes, passing `extra` to every `raftkv serve`.
    pub fn start_with(n: u64, extra: &[&str]) -> Self {
        let mut c = Self::prepare(n, extra, false);
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Starts `n` nodes with TLS on every port: client certificates required, mutual TLS between peers.
    pub fn start_tls(n: u64, extra: &[&str]) -> Self {
        let mut c = Self::prepare(n, extra, true);
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// The cluster's nodes, not started yet.
    pub fn prepare(n: u64, extra: &[&str], tls: bool) -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::Builder::new().prefix("raftkv-test-").tempdir().unwrap();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            nodes.insert(id, Self::new_node(dir.path(), id, vec![]));
        }
        let initial_cluster = nodes.values().map(|n| format!("{}={}", n.id, n.peer)).collect::<Vec<_>>().join(",");
        let tls_dir = tls.then(|| {
            let d = dir.path().join("tls");
            let ids: Vec<u64> = (1..=9).collect();
            raftkv::tls::make_test_pki(&d, &ids, &["127.0.0.1".into(), "localhost".into()]).unwrap();
            d
        });
        TestCluster {
            dir,
            nodes,
            initial_cluster,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            tls_dir,
            _serial: serial,
        }
    }

    /// The client TLS files (CA, client certificate and key) of a TLS cluster.
    pub fn client_tls(&self) -> raftkv::tls::ClientTls {
        raftkv::tls::test_pki_client(self.tls_dir.as_ref().expect("a TLS cluster"))
    }

    fn with_tls(&self, c: Client) -> Client {
        match &self.tls_dir {
            Some(_) => c.with_tls(self.client_tls()).unwrap(),
            None => c,
        }
    }

    fn new_node(dir: &Path, id: u64, bootstrap: Vec<String>) -> TestNode {
        TestNode {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            data_dir: dir.join(format!("node-{id}")),
            log: dir.join(format!("node-{id}.log")),
            child: None,
            bootstrap,
        }
    }

    /// Adds node `id` that joins through `join_endpoint` (not started yet; call `spawn`).
    pub fn add_joining_node(&mut self, id: u64, join_endpoint: &str) {
        let node = Self::new_node(self.dir.path(), id, vec!["--join".into(), join_endpoint.into()]);
        self.nodes.insert(id, node);
    }

    /// The command line that starts node `id`.
    pub fn command(&self, id: u64) -> Command {
        let n = &self.nodes[&id];
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--id", &id.to_string(), "--listen", &n.addr, "--listen-peer", &n.peer, "--http", &n.http])
            .arg("--data-dir")
            .arg(&n.data_dir)
            .arg("--fault-injection");
        if let Some(d) = &self.tls_dir {
            cmd.args(raftkv::tls::test_pki_serve_args(d, id));
        }
        if n.bootstrap.is_empty() {
            cmd.args(["--initial-cluster", &self.initial_cluster]);
        } else {
            cmd.args(&n.bootstrap);
        }
        cmd.args(&self.extra_args).env("RAFTKV_LOG", "info,openraft=warn").stdin(Stdio::null());
        cmd
    }

    /// (Re)starts node `id`.
    pub fn spawn(&mut self, id: u64) {
        let mut cmd = self.command(id);
        let n = self.nodes.get_mut(&id).unwrap();
        assert!(n.child.is_none(), "node {id} is already running");
        let log = fs::OpenOptions::new().create(true).append(true).open(&n.log).unwrap();
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        n.child = Some(cmd.spawn().expect("spawn raftkv serve"));
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).unwrap();
        let mut c = n.child.take().unwrap_or_else(|| panic!("node {id} is not running"));
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self, id: u64) -> std::process::ExitStatus {
        let n = self.nodes.get_mut(&id).unwrap();
        let mut c = n.child.take().unwrap_or_else(|| panic!("node {id} is not running"));
        signal(&c, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                c.kill().unwrap();
                panic!("node {id} did not stop within 10s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pause(&self, id: u64) {
        signal(self.nodes[&id].child.as_ref().unwrap(), libc::SIGSTOP);
    }

    pub fn resume(&self, id: u64) {
        signal(self.nodes[&id].child.as_ref().unwrap(), libc::SIGCONT);
    }

    /// Waits for node `id`'s process to exit on its own (e.g. refused start-up); returns its status and log.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> (std::process::ExitStatus, String) {
        let n = self.nodes.get_mut(&id).unwrap();
        let c = n.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                n.child = None;
                return (s, fs::read_to_string(&n.log).unwrap_or_default());
            }
            if Instant::now() > deadline {
                panic!("node {id} still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    pub fn peer_addr(&self, id: u64) -> String {
        self.nodes[&id].peer.clone()
    }

    /// A client of every node.
    pub fn client(&self) -> Client {
        self.with_tls(Client::new(self.nodes.values().map(|n| n.addr.clone()).collect(), Duration::from_secs(10)))
    }

    /// A client pinned to node `id` (no failover).
    pub fn node_client(&self, id: u64) -> Client {
        self.with_tls(Client::new(vec![self.addr(id)], Duration::from_secs(5)))
    }

    pub async fn status(&self, id: u64) -> Option<pb::StatusResponse> {
        let c = self.with_tls(Client::new(vec![self.addr(id)], Duration::from_millis(500)));
        c.status(&self.addr(id)).await.ok()
    }

    /// Waits until every running node agrees on one leader (among the running nodes); returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let running = self.running();
        // Agreeing on the leader is not enough: right after a start two candidates of one term can both win in
        // turn (openraft lets the higher node id take over a vote that is not yet committed), and the first one's
        // term then ends with whatever was written to it. A vote committed on every node (each has accepted the
        // leader's AppendEntries in that term) holds for at least a leader lease.
        eventually(timeout, "a leader that every running node agrees on", || async {
            let mut leader = None;
            for &id in &running {
                let s = self.status(id).await?;
                if s.leader_id == 0
                    || !running.contains(&s.leader_id)
                    || !s.vote_committed
                    || leader.is_some_and(|(l, t)| (l, t) != (s.leader_id, s.term))
                {
                    return None;
                }
                leader = Some((s.leader_id, s.term));
            }
            let (l, _) = leader?;
            // The leader itself must say so.
            (self.status(l).await?.role == pb::Role::Leader as i32).then_some(l)
        })
        .await
    }

    /// Waits until the leader has recorded every member's client address (a membership entry of its own, appended
    /// shortly after the first election) and applied its whole log: after this, only client writes add entries.
    pub async fn wait_members_recorded(&self, leader: u64, timeout: Duration) {
        // The leader records addresses every 500 ms (`raft::announce`), possibly in more than one entry: wait until
        // every member has one and the log has not grown for three such periods.
        let deadline = std::time::Instant::now() + timeout;
        let mut stable: Option<(u64, std::time::Instant)> = None;
        loop {
            assert!(std::time::Instant::now() < deadline, "the leader's log did not settle within {timeout:?}");
            if let Some(s) = self.status(leader).await {
                let all = !s.members.is_empty() && s.members.iter().all(|m| !m.addr.is_empty());
                if all && s.applied_index == s.last_log_index {
                    match stable {
                        Some((last, since)) if last == s.last_log_index => {
                            if since.elapsed() >= Duration::from_millis(1500) {
                                return;
                            }
                        }
                        _ => stable = Some((s.last_log_index, std::time::Instant::now())),
                    }
                } else {
                    stable = None;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) {
        eventually(timeout, &format!("node {id} applied index >= {index}"), || async {
            (self.status(id).await?.applied_index >= index).then_some(())
        })
        .await
    }

    /// Serializable read on one node.
    pub async fn local_get(&self, id: u64, key: &str) -> Option<Vec<u8>> {
        let c = self.with_tls(Client::new(vec![self.addr(id)], Duration::from_secs(2)));
        c.get(key.as_bytes(), true).await.ok()?.kv.map(|kv| kv.value)
    }

    /// Cuts node `id` off from `peers` through its fault-injection hook (empty = heal).
    pub async fn partition(&self, id: u64, peers: &[u64]) {
        let list = peers.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        let url = format!("/debug/partition?peers={list}");
        http_post(&self.nodes[&id].http, &url).await;
    }

    pub fn wal_dir(&self, id: u64) -> PathBuf {
        self.nodes[&id].data_dir.join("wal")
    }
}

fn signal(c: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(c.id() as i32, sig) };
}

/// A minimal HTTP/1.1 POST (no body) for the fault-injection hook.
pub async fn http_post(addr: &str, path: &str) -> String {
    http_request(addr, "POST", path).await
}

pub async fn http_get(addr: &str, path: &str) -> String {
    http_request(addr, "GET", path).await
}

/// A minimal HTTP/1.1 request without a body; returns the raw response.
pub async fn http_request(addr: &str, method: &str, path: &str) -> String {
    try_http_request(addr, method, path).await.expect("connect to node HTTP port")
}

/// [`http_request`], or None when nothing listens at `addr` (yet).
pub async fn try_http_request(addr: &str, method: &str, path: &str) -> Option<String> {
    try_http_request_with(addr, method, path, &[]).await
}

/// A raw HTTP/1.1 request without a body, with extra header lines (a `Host:` line replaces the default one).
pub async fn http_request_with(addr: &str, method: &str, path: &str, headers: &[&str]) -> String {
    let r = tokio::time::timeout(Duration::from_secs(10), try_http_request_with(addr, method, path, headers));
    r.await.expect("an answer within 10 s").expect("connect to the HTTP port")
}

async fn try_http_request_with(addr: &str, method: &str, path: &str, headers: &[&str]) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("host:")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for h in headers {
        req.push_str(&format!("{h}\r\n"));
    }
    req.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    Some(String::from_utf8_lossy(&out).into_owned())
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                signal(&c, libc::SIGCONT);
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for n in self.nodes.values() {
                let log = fs::read_to_string(&n.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!("----- node {} log (last {} lines) -----\n{}", n.id, tail.len(), tail.join("\n"));
            }
        }
    }
}

impl TestCluster {
    /// A client of the given nodes only.
    pub fn client_of(&self, ids: &[u64]) -> Client {
        self.with_tls(Client::new(ids.iter().map(|id| self.addr(*id)).collect(), Duration::from_secs(10)))
    }
}

impl TestCluster {
    /// Starts one node per entry of `hosts` (node i on `hosts[i-1]`), every node on the same free port of its own
    /// address, like machines of a network: e.g. 127.0.0.2, 127.0.0.3, 127.0.0.4 (Linux routes all of 127/8 to
    /// the loopback interface). `extra` is passed to every `raftkv serve`.
    pub fn start_on_hosts(hosts: &[&str], extra: &[&str]) -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::Builder::new().prefix("raftkv-test-").tempdir().unwrap();
        let (grpc, peer, http) = (free_port_on(hosts), free_port_on(hosts), free_port_on(hosts));
        let mut nodes = BTreeMap::new();
        for (i, host) in hosts.iter().enumerate() {
            let id = i as u64 + 1;
            let mut node = Self::new_node(dir.path(), id, vec![]);
            node.addr = format!("{host}:{grpc}");
            node.peer = format!("{host}:{peer}");
            node.http = format!("{host}:{http}");
            nodes.insert(id, node);
        }
        let initial_cluster = nodes.values().map(|n| format!("{}={}", n.id, n.peer)).collect::<Vec<_>>().join(",");
        let mut c = TestCluster {
            dir,
            nodes,
            initial_cluster,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            tls_dir: None,
            _serial: serial,
        };
        for id in 1..=hosts.len() as u64 {
            c.spawn(id);
        }
        c
    }
}

/// A port that is free on 127.0.0.1 (see [`free_port`]) and can be bound right now on every one of `hosts`.
pub fn free_port_on(hosts: &[&str]) -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if hosts.iter().all(|h| std::net::TcpListener::bind((*h, port)).is_ok()) {
            return port;
        }
    }
    panic!("no port free on all of {hosts:?}");
}
