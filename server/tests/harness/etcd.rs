//! A real etcd to compare raftkv with: one member on free loopback ports, killed on drop.
//!
//! The binary is `$RAFTKV_ETCD_BIN`, else `etcd` on PATH (CI installs Debian's etcd-server, 3.4); `None` when
//! there is none, and the test says it skipped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use raftkv_proto::etcd::{maintenance_client::MaintenanceClient, StatusRequest};

pub struct Etcd {
    child: Child,
    pub endpoint: String,
    pub version: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn etcd_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("RAFTKV_ETCD_BIN").map(PathBuf::from).unwrap_or_else(|| "etcd".into());
    let out = Command::new(&bin).arg("--version").output().ok()?;
    out.status.success().then_some(bin)
}

impl Etcd {
    /// Starts a one-member etcd and waits until it answers `Status`; `None` if no etcd binary is available.
    pub async fn start() -> Option<Etcd> {
        let bin = etcd_bin()?;
        let out = Command::new(&bin).arg("--version").output().ok()?;
        let version = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_string();
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (super::free_port(), super::free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(&bin)
            .args(["--name", "e1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e1={peer_url}")])
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let etcd = Etcd { child, endpoint: format!("127.0.0.1:{client}"), version, _dir: dir };
        let channel = etcd.channel();
        super::eventually(Duration::from_secs(30), "etcd answers Status with a leader", || {
            let mut c = MaintenanceClient::new(channel.clone());
            async move { c.status(StatusRequest {}).await.ok().filter(|s| s.get_ref().leader != 0) }
        })
        .await;
        Some(etcd)
    }

    pub fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.endpoint)).unwrap().connect_lazy()
    }
}
