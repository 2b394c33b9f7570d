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

/// One child node.
pub struct NodeProcess {
    pub id: u64,
    pub addr: String,
    pub http: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A set of child `raftkv serve` processes, stopped on drop.
pub struct LocalCluster {
    pub nodes: BTreeMap<u64, NodeProcess>,
    pub initial_cluster: String,
    exe: PathBuf,
    extra_args: Vec<String>,
}

impl LocalCluster {
    /// Starts nodes `1..=ports.len()`, node i on `ports[i-1] = (grpc, http)`.
    pub fn start(exe: &Path, ports: &[(u16, u16)], data_dir: &Path, extra_args: &[String]) -> Result<Self> {
        fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, "create", e))?;
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (g, _))| format!("{}=127.0.0.1:{g}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster {
            exe: exe.to_path_buf(),
            nodes: BTreeMap::new(),
            initial_cluster,
            extra_args: extra_args.to_vec(),
        };
        for (i, (g, h)) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            cluster.nodes.insert(
                id,
                NodeProcess {
                    id,
                    addr: format!("127.0.0.1:{g}"),
                    http: format!("127.0.0.1:{h}"),
                    data_dir: data_dir.join(format!("node-{id}")),
                    log: data_dir.join(format!("node-{id}.log")),
                    child: None,
                },
            );
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// (Re)starts node `id`'s process.
    pub fn spawn(&mut self, id: u64) -> Result<()> {
        let exe = self.exe.clone();
        let n = self.nodes.get_mut(&id).ok_or_else(|| Error::Config(format!("no node {id}")))?;
        let io = |e| Error::io(&n.log, "open log", e);
        let mut log = fs::OpenOptions::new().create(true).append(true).open(&n.log).map_err(io)?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .args(["--id", &id.to_string(), "--listen", &n.addr, "--http", &n.http])
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(["--initial-cluster", &self.initial_cluster, "--fault-injection"])
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
        let client = Client::new(self.endpoints(), Duration::from_secs(1));
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
        for n in self.nodes.values_mut() {
            if let Some(c) = &n.child {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

impl LocalCluster {
    /// Reaps children that exited on their own; returns their ids and exit statuses.
    pub fn reap_exited(&mut self) -> Vec<(u64, std::process::ExitStatus)> {
        let mut out = Vec::new();
        for n in self.nodes.values_mut() {
            if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                n.child = None;
                out.push((n.id, status));
            }
        }
        out
    }

    /// Is node `id`'s process running (as far as we know)?
    pub fn is_running(&mut self, id: u64) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else { return false };
        match n.child.as_mut() {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    n.child = None;
                    false
                }
            },
            None => false,
        }
    }

    /// Sends `sig` to node `id` (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, id: u64, sig: i32) -> bool {
        match self.nodes.get(&id).and_then(|n| n.child.as_ref()) {
            // SAFETY: kill(2) on our own child's pid.
            Some(c) => unsafe { libc::kill(c.id() as i32, sig) == 0 },
            None => false,
        }
    }

    /// kill -9 node `id` and reap it.
    pub fn kill(&mut self, id: u64) -> bool {
        let Some(mut c) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) else { return false };
        // SAFETY: kill(2) on our own child's pid; SIGCONT first in case it is paused.
        unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
        let _ = c.kill();
        let _ = c.wait();
        true
    }

    /// Cuts node `id` off from `peers` through its fault-injection hook (an empty list heals it).
    pub async fn partition(&self, id: u64, peers: &[u64]) -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let n = self.nodes.get(&id).ok_or_else(|| Error::Config(format!("no node {id}")))?;
        let list = peers.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        let req = format!(
            "POST /debug/partition?peers={list} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            n.http
        );
        let run = async {
            let mut s = tokio::net::TcpStream::connect(&n.http).await?;
            s.write_all(req.as_bytes()).await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(Duration::from_secs(2), run).await {
            Ok(Ok(resp)) if resp.starts_with("HTTP/1.1 200") => Ok(()),
            Ok(Ok(resp)) => Err(Error::Unavailable(format!("node {id} refused the partition: {resp}"))),
            Ok(Err(e)) => Err(Error::Unavailable(format!("node {id} HTTP: {e}"))),
            Err(_) => Err(Error::Unavailable(format!("node {id} HTTP did not answer"))),
        }
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
