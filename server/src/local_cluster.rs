//! A local cluster of real `raftkv serve` child processes on 127.0.0.1 — used by `raftkv cluster`, `raftkv bench
//! --start-cluster` and the chaos suite.
//!
//! Each node keeps its data in `DATA_DIR/node-i` and logs to `DATA_DIR/node-i.log` (the exact command line heads
//! each run's log, so a person can restart a node by hand). Children run with fault injection enabled so they can
//! be partitioned. Children are killed if the parent dies (PR_SET_PDEATHSIG) and on drop, so no orphan keeps a
//! port.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    client::Client,
    error::{Error, Result},
};

/// The three ports of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    /// Client port (gRPC, gRPC-Web).
    pub grpc: u16,
    /// Peer port (Raft).
    pub peer: u16,
    pub http: u16,
}

impl NodePorts {
    /// Three free loopback ports.
    pub fn free() -> Result<Self> {
        Ok(Self { grpc: free_port()?, peer: free_port()?, http: free_port()? })
    }
}

/// One child node.
pub struct NodeProcess {
    pub id: u64,
    /// Client address.
    pub addr: String,
    /// Peer address.
    pub peer: String,
    pub http: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Joins through this endpoint instead of bootstrapping with the initial cluster (nodes added later).
    pub join: Option<String>,
    /// Stopped with SIGSTOP and not resumed yet.
    pub paused: bool,
    /// How the process last ended ("killed (SIGKILL)", "exited: exit status: 1", ...); empty while it runs.
    pub last_exit: String,
    child: Option<Child>,
}

/// A set of child `raftkv serve` processes, stopped on drop.
pub struct LocalCluster {
    pub nodes: BTreeMap<u64, NodeProcess>,
    pub initial_cluster: String,
    exe: PathBuf,
    extra_args: Vec<String>,
    /// With TLS: where the throwaway CA and the certificates are (see [`crate::tls::make_test_pki`]).
    tls_dir: Option<PathBuf>,
    /// Exits noticed by [`LocalCluster::is_running`] and not yet returned by [`LocalCluster::reap_exited`].
    unreported: Vec<(u64, std::process::ExitStatus)>,
}

impl LocalCluster {
    /// Starts nodes `1..=ports.len()`, node i on `ports[i-1]`, in plain text.
    pub fn start(exe: &Path, ports: &[NodePorts], data_dir: &Path, extra_args: &[String]) -> Result<Self> {
        Self::start_with_tls(exe, ports, data_dir, extra_args, false)
    }

    /// Starts nodes `1..=ports.len()`; with `tls`, every port speaks TLS (clients must present a certificate,
    /// peers authenticate each other) with a throwaway CA made in `data_dir/tls` on first use.
    pub fn start_with_tls(
        exe: &Path,
        ports: &[NodePorts],
        data_dir: &Path,
        extra_args: &[String],
        tls: bool,
    ) -> Result<Self> {
        fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, "create", e))?;
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{}", i + 1, p.peer))
            .collect::<Vec<_>>()
            .join(",");
        let tls_dir = tls.then(|| data_dir.join("tls"));
        if let Some(dir) = &tls_dir {
            if !dir.join("ca.pem").exists() {
                // Certificates for nodes added later too: ids up to 32.
                let ids: Vec<u64> = (1..=32).collect();
                crate::tls::make_test_pki(dir, &ids, &["127.0.0.1".to_string(), "localhost".to_string()])?;
            }
        }
        let mut cluster = LocalCluster {
            exe: exe.to_path_buf(),
            nodes: BTreeMap::new(),
            initial_cluster,
            extra_args: extra_args.to_vec(),
            tls_dir,
            unreported: Vec::new(),
        };
        for (i, p) in ports.iter().enumerate() {
            cluster.add(i as u64 + 1, *p, data_dir, None)?;
        }
        Ok(cluster)
    }

    /// The files a client of this cluster needs (None without TLS).
    pub fn client_tls(&self) -> Option<crate::tls::ClientTls> {
        self.tls_dir.as_deref().map(crate::tls::test_pki_client)
    }

    /// A client of this cluster (with its TLS files, if any).
    pub fn client(&self, timeout: Duration) -> Result<Client> {
        let c = Client::new(self.endpoints(), timeout);
        match self.client_tls() {
            Some(t) => c.with_tls(t),
            None => Ok(c),
        }
    }

    /// Starts node `id` on `ports` with its data in `data_dir/node-id`. With `join`, the node asks that endpoint
    /// to add it as a learner instead of bootstrapping.
    pub fn add(&mut self, id: u64, ports: NodePorts, data_dir: &Path, join: Option<String>) -> Result<()> {
        if self.nodes.contains_key(&id) {
            return Err(Error::Config(format!("node {id} already exists")));
        }
        self.nodes.insert(
            id,
            NodeProcess {
                id,
                addr: format!("127.0.0.1:{}", ports.grpc),
                peer: format!("127.0.0.1:{}", ports.peer),
                http: format!("127.0.0.1:{}", ports.http),
                data_dir: data_dir.join(format!("node-{id}")),
                log: data_dir.join(format!("node-{id}.log")),
                join,
                paused: false,
                last_exit: String::new(),
                child: None,
            },
        );
        self.spawn(id)
    }

    /// Stops node `id` (if running) and forgets it.
    pub fn forget(&mut self, id: u64) -> Option<NodeProcess> {
        self.terminate(id);
        self.nodes.remove(&id)
    }

    /// (Re)starts node `id`'s process.
    ///
    /// Call it from a thread that lives as long as the cluster should (the main thread, a runtime worker): the
    /// child is killed when *the thread that spawned it* exits (PR_SET_PDEATHSIG), so a short-lived blocking-pool
    /// thread would take the node down with it.
    pub fn spawn(&mut self, id: u64) -> Result<()> {
        let exe = self.exe.clone();
        let tls_args = self.tls_dir.as_deref().map(|d| crate::tls::test_pki_serve_args(d, id)).unwrap_or_default();
        let n = self.nodes.get_mut(&id).ok_or_else(|| Error::Config(format!("no node {id}")))?;
        let io = |e| Error::io(&n.log, "open log", e);
        let mut log = fs::OpenOptions::new().create(true).append(true).open(&n.log).map_err(io)?;
        if n.child.is_some() {
            return Err(Error::Config(format!("node {id} is already running")));
        }
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .args(["--id", &id.to_string(), "--listen", &n.addr, "--listen-peer", &n.peer, "--http", &n.http])
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(match &n.join {
                Some(endpoint) => ["--join", endpoint],
                None => ["--initial-cluster", &self.initial_cluster],
            })
            .arg("--fault-injection")
            .args(tls_args)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log.try_clone().map_err(io)?);
        // SAFETY: prctl is async-signal-safe; it asks the kernel to SIGKILL the child if we die.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // The exact command line heads each run's log, so a person can restart a node by hand.
        let line: Vec<String> = std::iter::once(exe.display().to_string())
            .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        use std::io::Write as _;
        writeln!(log, "# {}", line.join(" ")).map_err(io)?;
        n.child = Some(cmd.spawn().map_err(|e| Error::io(&exe, "start", e))?);
        n.paused = false;
        n.last_exit.clear();
        Ok(())
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    /// Fails with the node's log tail if any child has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for n in self.nodes.values_mut() {
            if let Some(c) = n.child.as_mut() {
                if let Some(status) = c.try_wait().map_err(|e| Error::io(&n.log, "wait for child", e))? {
                    let log = fs::read_to_string(&n.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(Error::Unavailable(format!(
                        "node {} exited ({status}); last lines of {}:\n{}",
                        n.id,
                        n.log.display(),
                        tail.join("\n")
                    )));
                }
            }
        }
        Ok(())
    }

    /// Waits until some node reports a leader that a majority agrees on.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> Result<(u64, String)> {
        let client = self.client(Duration::from_secs(1))?;
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let all = client.status_all().await;
            let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
            for (_, s) in &all {
                if let Ok(s) = s {
                    if s.leader_id != 0 {
                        *votes.entry(s.leader_id).or_default() += 1;
                    }
                }
            }
            if let Some((&leader, &n)) = votes.iter().max_by_key(|(_, n)| **n) {
                if n * 2 > self.nodes.len() {
                    let addr = self.nodes.get(&leader).map(|n| n.addr.clone()).unwrap_or_default();
                    return Ok((leader, addr));
                }
            }
            if Instant::now() > deadline {
                return Err(Error::NoLeader(format!("no leader elected within {timeout:?}; see the node logs")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM every node, then SIGKILL what is left after a grace period.
    pub fn stop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        self.terminate_all(&ids);
    }

    /// SIGTERM node `id` (resuming it first if paused), SIGKILL it if it has not exited within 5 s, and reap it.
    /// Returns false if it was not running.
    pub fn terminate(&mut self, id: u64) -> bool {
        self.terminate_all(&[id]) > 0
    }

    fn terminate_all(&mut self, ids: &[u64]) -> usize {
        let stopping: Vec<(u64, Child)> = ids.iter().filter_map(|id| Some((*id, self.begin_stop(*id)?))).collect();
        let count = stopping.len();
        let deadline = Instant::now() + STOP_GRACE;
        for (id, child) in stopping {
            let how = wait_stopped(child, deadline);
            self.record_exit(id, how);
        }
        count
    }

    /// Sends SIGTERM to node `id` (and SIGCONT, in case it is paused) and hands its process over to be waited for
    /// with [`wait_stopped`] — without holding `self`, so a caller sharing the cluster behind a lock need not hold
    /// it while the node shuts down. From now on the node counts as not running.
    pub fn begin_stop(&mut self, id: u64) -> Option<Child> {
        let n = self.nodes.get_mut(&id)?;
        let c = n.child.take()?;
        // SAFETY: kill(2) on our own child's pid; a paused process must run to handle SIGTERM.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
            libc::kill(c.id() as i32, libc::SIGCONT);
        }
        n.paused = false;
        n.last_exit = "stopping (SIGTERM sent)".to_string();
        Some(c)
    }

    /// Records how node `id`'s process ended (shown to people).
    pub fn record_exit(&mut self, id: u64, how: String) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.last_exit = how;
        }
    }
}

/// How long a node gets to shut down cleanly after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Waits until `deadline` for a process sent SIGTERM to exit, SIGKILLs it otherwise, reaps it, and says how it
/// ended. Blocks the calling thread.
pub fn wait_stopped(mut c: Child, deadline: Instant) -> String {
    while Instant::now() < deadline {
        if let Ok(Some(s)) = c.try_wait() {
            return format!("stopped ({s})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    format!("did not stop within {STOP_GRACE:?} of SIGTERM; killed")
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

impl LocalCluster {
    /// Reaps children that exited on their own; returns their ids and exit statuses.
    pub fn reap_exited(&mut self) -> Vec<(u64, std::process::ExitStatus)> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.is_running(id);
        }
        std::mem::take(&mut self.unreported)
    }

    /// Is node `id`'s process running (as far as we know)? Reaps it if it exited (reported by `reap_exited`).
    pub fn is_running(&mut self, id: u64) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else { return false };
        let ended = match n.child.as_mut().map(|c| c.try_wait()) {
            None => return false,
            Some(Ok(None)) => return true,
            Some(Ok(Some(status))) => {
                self.unreported.push((id, status));
                status.to_string()
            }
            Some(Err(e)) => format!("cannot be waited for: {e}"),
        };
        n.child = None;
        n.paused = false;
        n.last_exit = format!("exited on its own ({ended}); see {}", n.log.display());
        false
    }

    /// The pid of node `id`'s process, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(Child::id)
    }

    /// The ids of the nodes whose processes are running (paused ones included).
    pub fn running_ids(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        ids.into_iter().filter(|id| self.is_running(*id)).collect()
    }

    /// Sends `sig` to node `id` (SIGSTOP, SIGCONT, ...), tracking whether it is paused.
    pub fn signal(&mut self, id: u64, sig: i32) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else { return false };
        let Some(c) = n.child.as_ref() else { return false };
        // SAFETY: kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(c.id() as i32, sig) == 0 };
        if sent && sig == libc::SIGSTOP {
            n.paused = true;
        } else if sent && sig == libc::SIGCONT {
            n.paused = false;
        }
        sent
    }

    /// kill -9 node `id` and reap it.
    pub fn kill(&mut self, id: u64) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else { return false };
        let Some(mut c) = n.child.take() else { return false };
        // SAFETY: kill(2) on our own child's pid; SIGCONT first in case it is paused.
        unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
        let _ = c.kill();
        let _ = c.wait();
        n.paused = false;
        n.last_exit = "killed (SIGKILL)".to_string();
        true
    }

    /// Cuts node `id` off from `peers` through its fault-injection hook (an empty list heals it).
    pub async fn partition(&self, id: u64, peers: &[u64]) -> Result<()> {
        let n = self.nodes.get(&id).ok_or_else(|| Error::Config(format!("no node {id}")))?;
        set_partition(&n.http, id, peers, self.client_tls().as_ref()).await
    }
}

/// Tells the node whose HTTP address is `http` to drop Raft traffic to and from `peers` (empty heals it). With
/// `tls`, the HTTP port speaks TLS (its certificate is checked against `tls.cacert`).
pub async fn set_partition(http: &str, id: u64, peers: &[u64], tls: Option<&crate::tls::ClientTls>) -> Result<()> {
    let list = peers.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
    let req = format!(
        "POST /debug/partition?peers={list} HTTP/1.1\r\nHost: {http}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let connector = tls.map(|t| t.connector()).transpose()?;
    let run = crate::tls::http_exchange(http, req, connector);
    match tokio::time::timeout(Duration::from_secs(2), run).await {
        Ok(Ok(resp)) if resp.starts_with("HTTP/1.1 200") => Ok(()),
        Ok(Ok(resp)) => Err(Error::Unavailable(format!("node {id} refused the partition: {resp}"))),
        Ok(Err(e)) => Err(Error::Unavailable(format!("node {id} HTTP: {e}"))),
        Err(_) => Err(Error::Unavailable(format!("node {id} HTTP did not answer"))),
    }
}

/// A free loopback port for a node to listen on.
///
/// Chosen below the kernel's ephemeral range (where outgoing connections get their local ports, so a port that is
/// free now could be taken by a node's own client socket before the node binds it), never handed out twice by
/// this process, and checked to be bindable right now.
pub fn free_port() -> Result<u16> {
    use rand::Rng;
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..10_000 {
        let port = rand::rng().random_range(20_000..32_000);
        if !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.push(port);
            return Ok(port);
        }
    }
    Err(Error::Unavailable("no free port found in 20000..32000".into()))
}
