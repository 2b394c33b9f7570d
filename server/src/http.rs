//! The node's HTTP port: `/metrics` (Prometheus), `/healthz`, `/readyz`, `/status` (JSON), and — only when fault
//! injection is enabled — `/debug/partition` to cut this node off from chosen peers and `/debug/stall-apply?ms=N`
//! to hold its state machine's applies for a while (a stalled disk). With `--web-dir` it also
//! serves the dashboard ([`dashboard_router`]).
//!
//! `/healthz` is liveness: 503 once the node is fatally broken (Raft stopped, WAL poisoned; the process is then
//! about to exit, see `failstop`). `/readyz` is readiness: 503 whenever this node cannot serve what it claims —
//! fatal, shutting down, no leader, a leader without a quorum, a follower cut off from its leader, or applied
//! behind committed (see `failstop::readiness`). While a fresh member waits for a majority of its initial cluster
//! before bootstrapping, the port already answers: live, not ready ([`StartingHttp`]).

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use crate::api::ApiContext;

pub fn router(ctx: Arc<ApiContext>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/debug/partition", get(get_partition).post(set_partition))
        .route("/debug/stall-apply", post(stall_apply))
        .with_state(ctx)
}

async fn metrics(State(ctx): State<Arc<ApiContext>>) -> Response {
    let s = ctx.status().await;
    let m = &ctx.metrics;
    m.term.set(s.term as i64);
    m.role.set(s.role as i64);
    m.is_leader.set(i64::from(s.leader_id == ctx.id));
    m.last_log_index.set(s.last_log_index as i64);
    m.commit_index.set(s.commit_index as i64);
    m.applied_index.set(s.applied_index as i64);
    m.snapshot_index.set(s.snapshot_index as i64);
    m.revision.set(s.header.as_ref().map_or(0, |h| h.revision));
    m.keys.set(s.key_count as i64);
    let wal = ctx.log_store.wal().stats();
    m.wal_bytes.set(wal.bytes as i64);
    m.wal_segments.set(wal.segments as i64);
    m.db_size.set(s.db_size as i64);
    m.quota_backend_bytes.set(s.quota_backend_bytes as i64);
    m.alarm_nospace.set(i64::from(s.alarms.iter().any(|a| a == crate::quota::NOSPACE)));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response()
}

async fn healthz(State(ctx): State<Arc<ApiContext>>) -> Response {
    match crate::failstop::fatal_reason(&ctx.raft, ctx.log_store.wal()) {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

async fn readyz(State(ctx): State<Arc<ApiContext>>) -> Response {
    let s = ctx.status().await;
    match crate::failstop::readiness(&ctx, &s) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn status(State(ctx): State<Arc<ApiContext>>) -> Json<serde_json::Value> {
    let s = ctx.status().await;
    let role_name = raftkv_proto::Role::try_from(s.role).unwrap_or(raftkv_proto::Role::Unknown).as_str_name();
    Json(json!({
        "id": s.id,
        "endpoint": s.addr,
        "role": role_name.to_ascii_lowercase(),
        "term": s.term,
        "leader": s.leader_id,
        "leader_addr": s.leader_addr,
        "voted_for": s.voted_for,
        "last_log_index": s.last_log_index,
        "last_log_term": s.last_log_term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "snapshot_index": s.snapshot_index,
        "purged_index": s.purged_index,
        "revision": s.header.as_ref().map_or(0, |h| h.revision),
        "cluster_id": format!("{:016x}", ctx.cluster_id()),
        "keys": s.key_count,
        "members": s.members.iter().map(|m| json!({"id": m.id, "addr": m.addr, "voter": m.voter})).collect::<Vec<_>>(),
        "replication": s.replication.iter().map(|r| json!({"node_id": r.node_id, "matched_index": r.matched_index, "lag": r.lag})).collect::<Vec<_>>(),
        "partitioned_from": ctx.network.faults.blocked(),
        "version": s.version,
        "alarms": s.alarms,
        "db_size": s.db_size,
        "quota_backend_bytes": s.quota_backend_bytes,
    }))
}

/// The dashboard's files at `/` and `GET /api/cluster` (read-only: `control` is false).
pub fn dashboard_router(ctx: Arc<ApiContext>, web_dir: std::path::PathBuf, endpoints: Vec<String>) -> Router {
    let endpoints = Arc::new(endpoints);
    Router::new()
        .route(
            "/api/cluster",
            get(move || async move {
                let nodes = crate::dashboard::nodes_to_show(&endpoints, &ctx.members());
                Json(raftkv_proto::dashboard::ClusterInfo { control: false, nodes })
            }),
        )
        .merge(crate::dashboard::static_files(web_dir))
}

#[derive(Deserialize)]
struct StallQuery {
    ms: u64,
}

/// Fault injection: the state machine applies nothing for `ms` (the next apply waits), as behind a stalled disk.
async fn stall_apply(State(ctx): State<Arc<ApiContext>>, Query(q): Query<StallQuery>) -> Response {
    if !ctx.network.faults.enabled() {
        return (
            StatusCode::FORBIDDEN,
            "fault injection is disabled on this node (start it with --fault-injection)
",
        )
            .into_response();
    }
    ctx.state_machine.stall_apply(std::time::Duration::from_millis(q.ms));
    let msg = format!("apply stalled for {} ms", q.ms);
    tracing::warn!("fault injection: {msg}");
    ctx.events.record(raftkv_proto::EventKind::FaultInjected, ctx.term(), msg.clone());
    Json(json!({"stalled_ms": q.ms})).into_response()
}

#[derive(Deserialize)]
struct PartitionQuery {
    /// Comma-separated peer ids to cut off; empty heals.
    #[serde(default)]
    peers: String,
}

async fn get_partition(State(ctx): State<Arc<ApiContext>>) -> Response {
    Json(json!({"enabled": ctx.network.faults.enabled(), "blocked": ctx.network.faults.blocked()})).into_response()
}

async fn set_partition(State(ctx): State<Arc<ApiContext>>, Query(q): Query<PartitionQuery>) -> Response {
    let peers: Result<Vec<u64>, _> =
        q.peers.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse()).collect();
    let Ok(peers) = peers else {
        return (StatusCode::BAD_REQUEST, "peers must be comma-separated node ids\n").into_response();
    };
    let before = ctx.network.faults.blocked();
    if !ctx.network.faults.set_blocked(peers) {
        return (StatusCode::FORBIDDEN, "fault injection is disabled on this node (start it with --fault-injection)\n")
            .into_response();
    }
    let blocked = ctx.network.faults.blocked();
    if blocked == before {
        return Json(json!({"blocked": blocked})).into_response();
    }
    tracing::warn!(?blocked, "fault injection: partition changed");
    let msg = if blocked.is_empty() {
        "partition healed: peer traffic flows again".to_string()
    } else {
        format!("partitioned: peer traffic to and from nodes {blocked:?} is dropped")
    };
    ctx.events.record(raftkv_proto::EventKind::FaultInjected, ctx.term(), msg);
    Json(json!({"blocked": ctx.network.faults.blocked()})).into_response()
}

/// The HTTP port while a fresh member waits for a majority of `--initial-cluster` to answer before it bootstraps
/// (`node::refuse_amnesia`, which can wait as long as its peers take to be scheduled). `/healthz` answers 200: the
/// process is alive and doing what it must, so a supervisor (a kubelet's liveness probe) must not restart it; every
/// other path answers 503 with the reason, `/readyz` included. It serves a duplicate of the port's socket, so the
/// node's real server takes over the same listener once this one has stopped.
pub struct StartingHttp {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

const WAITING: &str = "waiting for a majority of --initial-cluster to answer before bootstrapping";

impl StartingHttp {
    pub fn serve(
        listener: &tokio::net::TcpListener,
        tls: Option<crate::tls::ReloadingServer>,
    ) -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        let dup =
            tokio::net::TcpListener::from_std(std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?))?;
        let router = Router::new()
            .route("/healthz", get(|| async { (StatusCode::OK, format!("ok: {WAITING}\n")) }))
            .fallback(|| async { (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {WAITING}\n")) });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let task = spawn_serve(dup, tls, router, stopped)?;
        Ok(Self { stop: Some(stop), task })
    }

    /// Stops accepting and gives open requests a moment, so that afterwards the real server alone serves the port.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(std::time::Duration::from_secs(1), &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for StartingHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`, then lets open requests finish.
pub fn spawn_serve(
    listener: tokio::net::TcpListener,
    tls: Option<crate::tls::ReloadingServer>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    Ok(match tls {
        None => tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(shutdown).await }),
        Some(t) => {
            let l = crate::tls::AxumTlsListener::new(listener, t)?;
            tokio::spawn(async move { axum::serve(l, router).with_graceful_shutdown(shutdown).await })
        }
    })
}
