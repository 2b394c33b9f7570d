//! The control API `raftkv cluster` serves next to the dashboard: it owns the node processes, so it can break
//! them — kill (-9), stop (SIGTERM), restart, pause/resume (SIGSTOP/SIGCONT), partition/heal — and add or forget
//! nodes. The JSON is [`raftkv_proto::dashboard`]'s.
//!
//! Partitions are *desired state*: the controller keeps the set of partitioned nodes and a reconciler pushes to
//! every live node the peers it must drop (a partitioned node drops everyone; the others drop the partitioned
//! ones). So a partitioned node that is restarted comes back still partitioned, and a heal reaches nodes that were
//! paused when it was asked for. What was pushed is remembered per process (pid), so a new process gets it again.
//!
//! Actions on one node never overlap (a second one while the first runs is a 409), and each runs in its own task:
//! a client that goes away mid-restart cannot leave the node stopped and never started again.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use parking_lot::Mutex;
use raftkv::local_cluster::{self, set_partition, LocalCluster};

/// Nodes `POST /api/nodes` may grow the local cluster to (each is a process on this machine).
const MAX_NODES: usize = 15;
use raftkv_proto::dashboard::{ClusterInfo, NodeAction, NodeInfo, ProcessState};

pub struct Controller {
    cluster: Mutex<LocalCluster>,
    /// Nodes cut off from all their peers.
    partitioned: Mutex<BTreeSet<u64>>,
    /// What each node's process (by pid) was last told to block; a new process starts healed.
    applied: Mutex<BTreeMap<u64, (u32, Vec<u64>)>>,
    /// Nodes with an action in progress.
    busy: Mutex<BTreeSet<u64>>,
    /// The id the next added node gets: ids are never reused while this runs.
    next_id: Mutex<u64>,
    data_dir: PathBuf,
    base_port: u16,
}

/// Marks a node busy until dropped.
struct Busy {
    controller: Arc<Controller>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.controller.busy.lock().remove(&self.id);
    }
}

type Shared = Arc<Controller>;

/// An error answered as a status code and a plain-text message.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

impl Controller {
    pub fn new(cluster: LocalCluster, data_dir: PathBuf, base_port: u16) -> Arc<Self> {
        let next_id = cluster.nodes.keys().max().copied().unwrap_or(0) + 1;
        Arc::new(Self {
            cluster: Mutex::new(cluster),
            partitioned: Mutex::default(),
            applied: Mutex::default(),
            busy: Mutex::default(),
            next_id: Mutex::new(next_id),
            data_dir,
            base_port,
        })
    }

    pub fn with_cluster<T>(&self, f: impl FnOnce(&mut LocalCluster) -> T) -> T {
        f(&mut self.cluster.lock())
    }

    fn info(&self, c: &mut LocalCluster, id: u64) -> Option<NodeInfo> {
        let running = c.is_running(id);
        let n = c.nodes.get(&id)?;
        let process = match (running, n.paused) {
            (true, true) => ProcessState::Paused,
            (true, false) => ProcessState::Running,
            (false, _) => ProcessState::Down,
        };
        Some(NodeInfo {
            id: Some(id),
            url: raftkv::dashboard::grpc_web_url(&n.addr),
            http: Some(format!("http://{}", n.http)),
            process: Some(process),
            partitioned: self.partitioned.lock().contains(&id),
            note: if running { format!("log: {}", n.log.display()) } else { n.last_exit.clone() },
        })
    }

    pub fn cluster_info(&self) -> ClusterInfo {
        let mut c = self.cluster.lock();
        let ids: Vec<u64> = c.nodes.keys().copied().collect();
        ClusterInfo { control: true, nodes: ids.into_iter().filter_map(|id| self.info(&mut c, id)).collect() }
    }

    fn node_info(&self, id: u64) -> Result<NodeInfo, Failure> {
        self.info(&mut self.cluster.lock(), id).ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("no node {id}")))
    }

    /// Pushes the desired partition state to every live node that has not got it yet.
    pub async fn reconcile_partitions(&self) {
        let partitioned = self.partitioned.lock().clone();
        let targets: Vec<(u64, u32, String, Vec<u64>)> = {
            let mut c = self.cluster.lock();
            let ids: Vec<u64> = c.nodes.keys().copied().collect();
            let running = c.running_ids();
            let applied = self.applied.lock();
            running
                .iter()
                .filter(|id| !c.nodes[*id].paused)
                .filter_map(|id| {
                    let pid = c.pid(*id)?;
                    let want: Vec<u64> = if partitioned.contains(id) {
                        ids.iter().copied().filter(|o| o != id).collect()
                    } else {
                        partitioned.iter().copied().filter(|o| o != id).collect()
                    };
                    let pushed = match applied.get(id) {
                        Some((p, w)) if *p == pid => w == &want,
                        // A new process starts healed.
                        _ => want.is_empty(),
                    };
                    (!pushed).then(|| (*id, pid, c.nodes[id].http.clone(), want))
                })
                .collect()
        };
        let tls = self.cluster.lock().client_tls();
        let pushes = targets.into_iter().map(|(id, pid, http, want)| {
            let tls = tls.clone();
            async move {
                match set_partition(&http, id, &want, tls.as_ref()).await {
                    // Only if it reached the process it was meant for (not one that was replaced meanwhile).
                    Ok(()) if self.cluster.lock().pid(id) == Some(pid) => {
                        self.applied.lock().insert(id, (pid, want));
                    }
                    Ok(()) => {}
                    // Not up yet or just died: the next round retries.
                    Err(e) => tracing::debug!("partition state for node {id}: {e}"),
                }
            }
        });
        futures::future::join_all(pushes).await;
    }

    /// Marks node `id` busy, or answers 409 if an action on it is already running.
    fn claim(self: &Arc<Self>, id: u64) -> Result<Busy, Failure> {
        if !self.busy.lock().insert(id) {
            return Err(Failure(StatusCode::CONFLICT, format!("an action on node {id} is still in progress")));
        }
        Ok(Busy { controller: self.clone(), id })
    }

    async fn act(self: &Arc<Self>, id: u64, action: NodeAction) -> Result<NodeInfo, Failure> {
        self.node_info(id)?;
        let busy = self.claim(id)?;
        // In its own task, so it completes even if the client gives up waiting.
        let me = self.clone();
        let task = tokio::spawn(async move {
            let _busy = busy;
            me.run(id, action).await?;
            tracing::info!(node = id, action = action.as_str(), "control");
            me.reconcile_partitions().await;
            me.node_info(id)
        });
        task.await.map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    }

    async fn run(&self, id: u64, action: NodeAction) -> Result<(), Failure> {
        let conflict = |m: String| Failure(StatusCode::CONFLICT, m);
        match action {
            NodeAction::Kill => {
                if !self.cluster.lock().kill(id) {
                    return Err(conflict(format!("node {id} is not running")));
                }
            }
            NodeAction::Stop | NodeAction::Restart => {
                let stopped = self.stop_process(id).await?;
                if action == NodeAction::Stop && !stopped {
                    return Err(conflict(format!("node {id} is not running")));
                }
                if action == NodeAction::Restart {
                    // On a runtime worker thread, which lives as long as the process: the child's parent-death
                    // signal is tied to the thread that spawned it (see LocalCluster::spawn).
                    self.cluster.lock().spawn(id).map_err(|e| conflict(format!("starting node {id}: {e}")))?;
                }
            }
            NodeAction::Pause | NodeAction::Resume => {
                let sig = if action == NodeAction::Pause { libc::SIGSTOP } else { libc::SIGCONT };
                if !self.cluster.lock().signal(id, sig) {
                    return Err(conflict(format!("node {id} is not running")));
                }
            }
            NodeAction::Partition => {
                self.partitioned.lock().insert(id);
            }
            NodeAction::Heal => {
                self.partitioned.lock().remove(&id);
            }
        }
        Ok(())
    }

    /// SIGTERM node `id` and wait (up to STOP_GRACE) for it to exit, without holding the cluster lock meanwhile,
    /// so the page keeps polling. Returns false if it was not running.
    async fn stop_process(&self, id: u64) -> Result<bool, Failure> {
        let Some(child) = self.cluster.lock().begin_stop(id) else { return Ok(false) };
        let deadline = std::time::Instant::now() + local_cluster::STOP_GRACE;
        let how = tokio::task::spawn_blocking(move || local_cluster::wait_stopped(child, deadline))
            .await
            .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        self.cluster.lock().record_exit(id, how);
        Ok(true)
    }

    /// Starts the next node (id = highest + 1) on the next ports; it joins through the running nodes as a learner.
    async fn add_node(self: &Arc<Self>) -> Result<NodeInfo, Failure> {
        let id = {
            let mut c = self.cluster.lock();
            let mut next = self.next_id.lock();
            let id = (*next).max(c.nodes.keys().max().copied().unwrap_or(0) + 1);
            if c.nodes.len() >= MAX_NODES {
                return Err(Failure(StatusCode::CONFLICT, format!("the local cluster has {MAX_NODES} nodes at most")));
            }
            let ports = u16::try_from(id - 1)
                .ok()
                .filter(|i| *i < 100)
                .and_then(|i| super::node_ports(self.base_port, i))
                .ok_or_else(|| Failure(StatusCode::CONFLICT, "no ports left for another node".into()))?;
            for p in [ports.grpc, ports.http, ports.peer] {
                if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
                    return Err(Failure(StatusCode::CONFLICT, format!("port {p} for node {id} is in use")));
                }
            }
            let join: Vec<String> = c.running_ids().into_iter().map(|i| c.nodes[&i].addr.clone()).collect();
            if join.is_empty() {
                return Err(Failure(StatusCode::CONFLICT, "no running node to join through".into()));
            }
            c.add(id, ports, &self.data_dir, Some(join.join(",")))
                .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            *next = id + 1;
            id
        };
        tracing::info!(node = id, "control: added a node (joins as a learner)");
        self.node_info(id)
    }

    /// Stops node `id` and forgets it, deleting its data: it has left the membership (the page removes it
    /// first), and a later node with its id or directory must start empty rather than as a stale member.
    async fn forget_node(self: &Arc<Self>, id: u64) -> Result<StatusCode, Failure> {
        self.node_info(id)?;
        let busy = self.claim(id)?;
        let me = self.clone();
        let task = tokio::spawn(async move {
            let _busy = busy;
            me.stop_process(id).await?;
            let gone = me.cluster.lock().forget(id);
            if let Some(n) = gone {
                if let Err(e) = std::fs::remove_dir_all(&n.data_dir) {
                    tracing::warn!("deleting {}: {e}", n.data_dir.display());
                }
            }
            me.partitioned.lock().remove(&id);
            me.applied.lock().remove(&id);
            tracing::info!(node = id, "control: forgot the node and deleted its data");
            Ok(StatusCode::NO_CONTENT)
        });
        task.await.map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    }
}

pub fn router(controller: Shared) -> Router {
    Router::new()
        .route("/api/cluster", get(|State(c): State<Shared>| async move { Json(c.cluster_info()) }))
        .route("/api/nodes", post(|State(c): State<Shared>| async move { c.add_node().await.map(Json) }))
        .route(
            "/api/nodes/{id}",
            delete(|State(c): State<Shared>, Path(id): Path<u64>| async move { c.forget_node(id).await }),
        )
        .route(
            "/api/nodes/{id}/{action}",
            post(|State(c): State<Shared>, Path((id, action)): Path<(u64, String)>| async move {
                let Some(action) = NodeAction::parse(&action) else {
                    let all: Vec<&str> = NodeAction::ALL.iter().map(|a| a.as_str()).collect();
                    return Err(Failure(StatusCode::NOT_FOUND, format!("unknown action {action:?}; one of {all:?}")));
                };
                c.act(id, action).await.map(Json)
            }),
        )
        .with_state(controller)
}

/// Reaps nodes that exit on their own and keeps partitions applied, until the process ends.
pub async fn supervise(controller: Shared) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let exited = controller.with_cluster(|c| c.reap_exited());
        for (id, status) in exited {
            eprintln!("node {id} exited ({status}); restart it from the dashboard or see its log");
        }
        controller.reconcile_partitions().await;
    }
}
