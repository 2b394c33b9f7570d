//! `raftkv cluster`: a local cluster of real `raftkv serve` child processes on 127.0.0.1.
//!
//! Node *i* serves gRPC + gRPC-Web on `base-port + i − 1` and HTTP on `base-port + 100 + i − 1`, keeps its data
//! in `DATA_DIR/node-i` and logs to `DATA_DIR/node-i.log`. Children run with fault injection enabled so they can
//! be partitioned for demos and tests. Ctrl-C (or SIGTERM) stops every child; children are also killed if this
//! process dies (PR_SET_PDEATHSIG), so no orphan keeps a port.

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use raftkv::client::Client;

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Node i listens on base-port + i - 1 (gRPC) and base-port + 100 + i - 1 (HTTP).
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Where node data and logs go (kept between runs; default: a directory under the system temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Wipe the data directory first.
    #[arg(long)]
    pub fresh: bool,
    /// Extra arguments passed to every `raftkv serve` (e.g. --snapshot-every=1000).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
}

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
    extra_args: Vec<String>,
}

impl LocalCluster {
    /// Starts nodes `1..=ports.len()`, node i on `ports[i-1] = (grpc, http)`.
    pub fn start(ports: &[(u16, u16)], data_dir: &Path, extra_args: &[String]) -> anyhow::Result<Self> {
        fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (g, _))| format!("{}=127.0.0.1:{g}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster { nodes: BTreeMap::new(), initial_cluster, extra_args: extra_args.to_vec() };
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
    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locating the raftkv executable")?;
        let n = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        let mut log = fs::OpenOptions::new().create(true).append(true).open(&n.log)?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .args(["--id", &id.to_string(), "--listen", &n.addr, "--http", &n.http])
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(["--initial-cluster", &self.initial_cluster, "--fault-injection"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?);
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
        writeln!(log, "# {}", line.join(" "))?;
        n.child = Some(cmd.spawn().context("starting raftkv serve")?);
        Ok(())
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    /// Fails with the node's log tail if any child has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for n in self.nodes.values_mut() {
            if let Some(c) = n.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    let log = fs::read_to_string(&n.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    bail!("node {} exited ({status}); last lines of {}:\n{}", n.id, n.log.display(), tail.join("\n"));
                }
            }
        }
        Ok(())
    }

    /// Waits until some node reports a leader that a majority agrees on.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> anyhow::Result<(u64, String)> {
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
                bail!("no leader elected within {timeout:?}; see the node logs");
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

pub fn default_data_dir(base_port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("raftkv-cluster-{base_port}"))
}

/// Checks every port is free before starting anything, so a clash is reported clearly and nothing half-starts.
fn check_ports_free(ports: &[(u16, u16)]) -> anyhow::Result<()> {
    for (g, h) in ports {
        for p in [g, h] {
            let addr: SocketAddr = ([127, 0, 0, 1], *p).into();
            std::net::TcpListener::bind(addr).with_context(|| {
                format!("port {p} on 127.0.0.1 is not available (in use?); choose another --base-port")
            })?;
        }
    }
    Ok(())
}

pub async fn run(a: &ClusterArgs) -> anyhow::Result<ExitCode> {
    if a.nodes == 0 || a.nodes > 99 {
        bail!("--nodes must be between 1 and 99");
    }
    let ports: Vec<(u16, u16)> = (0..a.nodes as u16)
        .map(|i| (a.base_port.checked_add(i), a.base_port.checked_add(100 + i)))
        .map(|(g, h)| Ok((g.context("port out of range")?, h.context("port out of range")?)))
        .collect::<anyhow::Result<_>>()?;
    check_ports_free(&ports)?;
    let dir = a.data_dir.clone().unwrap_or_else(|| default_data_dir(a.base_port));
    if a.fresh && dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("wiping {}", dir.display()))?;
    }
    let mut cluster = LocalCluster::start(&ports, &dir, &a.serve_args)?;
    println!("raftkv: starting {} nodes; data and logs in {}", a.nodes, dir.display());
    let (leader, leader_addr) = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    println!();
    for n in cluster.nodes.values() {
        println!(
            "  node {}  grpc {}  http http://{}{}",
            n.id,
            n.addr,
            n.http,
            if n.id == leader { "  (leader)" } else { "" }
        );
    }
    println!();
    println!("leader: node {leader} at {leader_addr}");
    let follower = cluster.nodes.values().find(|n| n.id != leader).unwrap_or(&cluster.nodes[&leader]).addr.clone();
    println!("try:    raftkv put 100 Alice && raftkv --endpoints {follower} get 100 --serializable && raftkv status");
    println!("Ctrl-C stops the cluster.");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                for n in cluster.nodes.values_mut() {
                    if let Some(c) = n.child.as_mut() {
                        if let Ok(Some(status)) = c.try_wait() {
                            eprintln!("node {} exited ({status}); see {}", n.id, n.log.display());
                            n.child = None;
                        }
                    }
                }
            }
        }
    }
    println!("stopping the cluster...");
    cluster.stop();
    println!("stopped; data kept in {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
