//! `raftkv cluster`: a local cluster of real `raftkv serve` child processes on 127.0.0.1
//! ([`raftkv::local_cluster`]), plus the dashboard and the control API that lets it break them ([`control`]).
//!
//! Node *i* serves its client port (gRPC + gRPC-Web) on `base-port + i − 1`, HTTP on `base-port + 100 + i − 1`
//! and its peer port on `base-port + 200 + i − 1`; the dashboard is on `--dashboard` (127.0.0.1:8080), and the
//! nodes accept gRPC-Web from the dashboard's origin only. With `--tls`, every port speaks TLS with a throwaway CA
//! made in the data directory, and clients need the printed `--cacert --cert --key`. Ctrl-C (or SIGTERM) stops
//! every child.

mod control;

use std::{fs, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use raftkv::local_cluster::{LocalCluster, NodePorts};

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Node i listens on base-port + i - 1 (client gRPC), base-port + 100 + i - 1 (HTTP) and base-port + 200 +
    /// i - 1 (peers).
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Where node data and logs go (kept between runs; default: a directory under the system temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Wipe the data directory first (only if it holds a raftkv cluster, or nothing).
    #[arg(long)]
    pub fresh: bool,
    /// TLS on every port, with mutual TLS between peers and client certificates required: makes a throwaway CA
    /// and certificates in the data directory (tls/) and prints the client flags to use.
    #[arg(long)]
    pub tls: bool,
    /// Extra arguments passed to every `raftkv serve` (e.g. --snapshot-every=1000).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
    /// Where the dashboard and its control API listen.
    #[arg(long, env = "RAFTKV_DASHBOARD", default_value = "127.0.0.1:8080")]
    pub dashboard: SocketAddr,
    /// The dashboard's built files (the output of `trunk build` in web/).
    #[arg(long, env = "RAFTKV_WEB_DIR", default_value = raftkv::dashboard::DEFAULT_WEB_DIR)]
    pub web_dir: PathBuf,
}

pub fn default_data_dir(base_port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("raftkv-cluster-{base_port}"))
}

/// Checks every port is free before starting anything, so a clash is reported clearly and nothing half-starts.
fn check_ports_free(ports: &[NodePorts]) -> anyhow::Result<()> {
    for n in ports {
        for p in [n.grpc, n.http, n.peer] {
            let addr: SocketAddr = ([127, 0, 0, 1], p).into();
            std::net::TcpListener::bind(addr).with_context(|| {
                format!("port {p} on 127.0.0.1 is not available (in use?); choose another --base-port")
            })?;
        }
    }
    Ok(())
}

/// The ports of node `i` (0-based), if they fit below 65536.
pub fn node_ports(base: u16, i: u16) -> Option<NodePorts> {
    Some(NodePorts { grpc: base.checked_add(i)?, http: base.checked_add(100 + i)?, peer: base.checked_add(200 + i)? })
}

/// `--fresh` wipes only what a cluster run left: an empty directory, or one of `node-*` directories, their logs and
/// `tls/` — never a directory that holds anything else (a typo such as `--data-dir ~`).
fn refuse_foreign_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("node-") || name == "tls") {
            bail!(
                "--fresh would wipe {}, but it holds {name:?}, which is not from a raftkv cluster; pick another \
                 --data-dir or remove it yourself",
                dir.display()
            );
        }
    }
    Ok(())
}

pub async fn run(a: &ClusterArgs) -> anyhow::Result<ExitCode> {
    if a.nodes == 0 || a.nodes > 99 {
        bail!("--nodes must be between 1 and 99");
    }
    let ports: Vec<NodePorts> = (0..a.nodes as u16)
        .map(|i| node_ports(a.base_port, i).context("port out of range"))
        .collect::<anyhow::Result<_>>()?;
    check_ports_free(&ports)?;
    let dir = a.data_dir.clone().unwrap_or_else(|| default_data_dir(a.base_port));
    if a.fresh && dir.exists() {
        refuse_foreign_dir(&dir)?;
        fs::remove_dir_all(&dir).with_context(|| format!("wiping {}", dir.display()))?;
    }
    let mut serve_args = a.serve_args.clone();
    // The nodes accept gRPC-Web from the dashboard's page only (by IP and by localhost).
    for host in [a.dashboard.ip().to_string(), "localhost".to_string()] {
        serve_args.push(format!("--cors-origin=http://{host}:{}", a.dashboard.port()));
    }
    // Bound before any node starts, so a busy dashboard port is reported and nothing half-starts.
    let dashboard = raftkv::node::bind(a.dashboard, "the dashboard (--dashboard)").await?;
    let exe = std::env::current_exe().context("locating the raftkv executable")?;
    let mut cluster = LocalCluster::start_with_tls(&exe, &ports, &dir, &serve_args, a.tls)?;
    println!("raftkv: starting {} nodes; data and logs in {}", a.nodes, dir.display());
    let (leader, leader_addr) = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    println!();
    for n in cluster.nodes.values() {
        println!(
            "  node {}  grpc {}  http http://{}  peer {}{}",
            n.id,
            n.addr,
            n.http,
            n.peer,
            if n.id == leader { "  (leader)" } else { "" }
        );
    }
    println!();
    println!("leader: node {leader} at {leader_addr}");
    let follower = cluster.nodes.values().find(|n| n.id != leader).unwrap_or(&cluster.nodes[&leader]).addr.clone();
    let flags = match cluster.client_tls() {
        Some(t) => {
            let f = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            let flags = format!(" --cacert {} --cert {} --key {}", f(&t.cacert), f(&t.cert), f(&t.key));
            println!("tls:    every port speaks TLS; clients need{flags}");
            flags
        }
        None => String::new(),
    };
    println!(
        "try:    raftkv{flags} put 100 Alice && raftkv{flags} --endpoints {follower} get 100 --serializable && \
         raftkv{flags} status"
    );
    // etcd's own client speaks to the same nodes (the etcd API on every client port).
    let endpoints = cluster
        .nodes
        .values()
        .map(|n| if flags.is_empty() { n.addr.clone() } else { format!("https://{}", n.addr) })
        .collect::<Vec<_>>()
        .join(",");
    println!("etcd:   ETCDCTL_API=3 etcdctl{flags} --endpoints {endpoints} get 100");

    let controller = control::Controller::new(cluster, dir.clone(), a.base_port);
    let app = control::router(controller.clone())
        .merge(raftkv::dashboard::static_files(a.web_dir.clone()))
        // Only the dashboard's own page may drive the control API (no foreign page, no DNS rebinding).
        .layer(raftkv::origin::OriginGuardLayer::new(raftkv::origin::OriginPolicy::default()));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        axum::serve(dashboard, app).with_graceful_shutdown(stopped).await
    });
    let supervisor = tokio::spawn(control::supervise(controller.clone()));
    println!();
    println!("dashboard: http://{}/", a.dashboard);
    if !raftkv::dashboard::is_built(&a.web_dir) {
        println!(
            "           (no dashboard files in {}: {}; the cluster runs meanwhile)",
            a.web_dir.display(),
            raftkv::dashboard::BUILD_HINT
        );
    }
    println!("Ctrl-C stops the cluster.");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("stopping the cluster...");
    supervisor.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    tokio::task::spawn_blocking(move || controller.with_cluster(|c| c.stop())).await?;
    println!("stopped; data kept in {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
