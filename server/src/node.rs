//! Wiring one raftkv node: open the data directory and storage, start openraft, serve gRPC (+ gRPC-Web, CORS,
//! health, reflection) and HTTP, and shut everything down cleanly.
//!
//! [`run`] takes already-bound listeners and a shutdown future (mini-redis style), so tests and `raftkv cluster`
//! bind port 0 or their own ports and stop nodes deterministically.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use parking_lot::Mutex;
use raftkv_proto::{cluster_server::ClusterServer, kv_server::KvServer, raft_server::RaftServer};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    api::{cluster::ClusterService, kv::KvService, peer::PeerService, ApiContext},
    config::NodeConfig,
    data_dir::DataDir,
    error::{Error, Result},
    metrics::Metrics,
    raft::{
        log_store::LogStore,
        network::{FaultInjector, Network, NetworkShared, PeerChannels},
        snapshot::SnapshotDir,
        state_machine::StateMachineStore,
        Node, Raft,
    },
    wal::{Wal, WalOptions},
};

/// The sockets a node serves on.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: Option<TcpListener>,
}

/// Binds a listener, turning "address in use" and friends into a message that names the flag and address.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => " (another process is using that port; pick another or stop it)",
            std::io::ErrorKind::AddrNotAvailable => " (that address is not on this machine)",
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
            _ => "",
        };
        Error::Config(format!("cannot listen on {addr} for {what}: {e}{hint}"))
    })
}

impl Listeners {
    pub async fn bind(config: &NodeConfig) -> Result<Self> {
        let grpc = bind(config.listen, "gRPC (--listen)").await?;
        let http = match config.http {
            Some(a) => Some(bind(a, "HTTP (--http)").await?),
            None => None,
        };
        Ok(Self { grpc, http })
    }
}

fn openraft_config(config: &NodeConfig) -> Result<openraft::Config> {
    let t = &config.raft;
    let c = openraft::Config {
        cluster_name: "raftkv".into(),
        heartbeat_interval: t.heartbeat.as_millis() as u64,
        election_timeout_min: t.election_timeout_min.as_millis() as u64,
        election_timeout_max: t.election_timeout_max.as_millis() as u64,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(t.snapshot_every),
        max_in_snapshot_log_to_keep: t.keep_after_snapshot,
        snapshot_max_chunk_size: 4 << 20,
        max_payload_entries: 512,
        ..Default::default()
    };
    c.validate().map_err(|e| Error::Config(format!("raft settings: {e}")))
}

/// Runs a node until `shutdown` resolves. Returns an error if start-up fails (bad data dir, corrupt WAL, ...), or
/// [`Error::Fatal`] once the node stopped because it can no longer serve (see [`crate::failstop`]).
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate()?;
    let metrics = Arc::new(Metrics::new());
    let mut data_dir = DataDir::open(&config.data_dir, config.id)?;

    let mut wal_opts = WalOptions::new(data_dir.wal_dir());
    wal_opts.segment_bytes = config.wal_segment_bytes;
    let m = metrics.clone();
    wal_opts.on_fsync = Some(Arc::new(move |d: Duration, records: usize| {
        m.fsync_seconds.observe(d.as_secs_f64());
        m.fsync_batch_records.observe(records as f64);
    }));
    if config.fault_injection {
        wal_opts.synced_marker = Some(data_dir.path().join("wal-synced-marker"));
    }
    let failstop = crate::failstop::FailStop::new(); // fail-stop: a poisoned WAL stops the node
    wal_opts.on_poison = Some(failstop.poison_hook());
    let (wal, report) = Wal::open(wal_opts)?;
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(?torn, "WAL had a torn tail (a write cut short by a crash); it was cut off");
    }
    tracing::info!(segments = report.segments, entries = report.entries, "WAL recovered");
    let state_machine =
        StateMachineStore::open(SnapshotDir::open(data_dir.snapshot_dir())?, config.watch_history, metrics.clone())?;
    let log_store = LogStore::new(wal.clone(), state_machine.durable_snapshot());
    state_machine.quota().set_limit(config.quota_backend_bytes); // --quota-backend-bytes

    if data_dir.cluster_id() == 0 && !config.initial_cluster.is_empty() {
        data_dir.set_cluster_id(config.bootstrap_cluster_id())?;
    }
    let network = Arc::new(NetworkShared {
        id: config.id,
        cluster_id: AtomicU64::new(data_dir.cluster_id()),
        channels: PeerChannels::default(),
        faults: FaultInjector::new(config.fault_injection),
        peer_secret: config.peer_secret.clone(),
        traffic: Default::default(),
    });
    if config.unsafe_local_reads {
        tracing::warn!("UNSAFE: --unsafe-local-reads serves linearizable reads locally; reads may be stale");
    }
    let data_dir = Arc::new(Mutex::new(data_dir));

    let raft = Raft::new(
        config.id,
        Arc::new(openraft_config(&config)?),
        Network { shared: network.clone() },
        log_store.clone(),
        state_machine.clone(),
    )
    .await
    .map_err(|e| Error::Internal(format!("starting raft: {e}")))?;

    let initialized = raft.is_initialized().await.map_err(|e| Error::Internal(e.to_string()))?;
    if !initialized && !config.initial_cluster.is_empty() {
        let members = config
            .initial_cluster
            .iter()
            .map(|(id, addr)| (*id, Node { addr: addr.clone() }))
            .collect::<std::collections::BTreeMap<_, _>>();
        match raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(cluster = %crate::config::format_cluster(&config.initial_cluster), "bootstrapped a new cluster")
            }
            Err(e) => tracing::info!("not bootstrapping: {e}"),
        }
    }

    // Set when the node starts shutting down: servers stop accepting, and open streams (watches, events) end so
    // the graceful shutdown does not wait for them.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let events = crate::events::EventLog::new();
    crate::events::spawn_metrics_watcher(config.id, &raft, events.clone());

    let ctx = Arc::new(ApiContext {
        id: config.id,
        addr: config.advertise.clone(),
        raft: raft.clone(),
        proposer: crate::raft::proposer::Proposer::start(raft.clone(), config.proposals_in_flight),
        state_machine: state_machine.clone(),
        log_store: log_store.clone(),
        network: network.clone(),
        metrics: metrics.clone(),
        events,
        limits: config.limits,
        default_timeout: config.request_timeout,
        unsafe_local_reads: config.unsafe_local_reads,
        stopping: stop_rx.clone(),
    });

    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // gRPC + gRPC-Web on one port.
    let dd = data_dir.clone();
    let on_cluster_id = Arc::new(move |id: u64| {
        if let Err(e) = dd.lock().set_cluster_id(id) {
            tracing::error!("recording cluster id: {e}");
        }
    });
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<KvServer<KvService>>().await;
    // Reflection v1 and v1alpha: grpcurl and other tools use whichever the server offers.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(raftkv_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1().map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_alpha =
        reflection_builder().build_v1alpha().map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let cors = cors_layer(&config.cors_origins);
    const MAX_MSG: usize = crate::raft::network::MAX_PEER_MESSAGE;
    let grpc = tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_adaptive_window(Some(true))
        .layer(cors)
        .layer(tonic_web::GrpcWebLayer::new())
        .add_service(
            KvServer::new(KvService::new(ctx.clone()))
                .max_decoding_message_size(MAX_MSG)
                .max_encoding_message_size(MAX_MSG),
        )
        .add_service(ClusterServer::new(ClusterService::new(ctx.clone())))
        .add_service(
            RaftServer::new(PeerService::new(raft.clone(), network.clone(), on_cluster_id))
                .max_decoding_message_size(MAX_MSG)
                .max_encoding_message_size(MAX_MSG),
        )
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .serve_with_incoming_shutdown(TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)), stopped());
    let grpc_task = tokio::spawn(grpc);

    let http_task = listeners.http.map(|l| {
        let mut router = crate::http::router(ctx.clone());
        if let Some(dir) = &config.web_dir {
            if !crate::dashboard::is_built(dir) {
                tracing::warn!(dir = %dir.display(), "no dashboard build there; {}", crate::dashboard::BUILD_HINT);
            }
            router = router.merge(crate::http::dashboard_router(
                ctx.clone(),
                dir.clone(),
                config.dashboard_endpoints.clone(),
            ));
        }
        let fut = stopped();
        tokio::spawn(async move { axum::serve(l, router).with_graceful_shutdown(fut).await })
    });

    if let (false, Some(endpoint)) = (initialized, config.join.clone()) {
        tokio::spawn(join_cluster(endpoint, config.id, config.advertise.clone(), stopped()));
    }

    tracing::info!(id = config.id, listen = %config.listen, advertise = %config.advertise, http = ?config.http, "raftkv node serving");
    let fatal = failstop.until_shutdown_or_fatal(shutdown, &raft, &wal).await; // fail-stop
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Give in-flight RPCs a moment; then stop Raft, so no write is acknowledged after its storage is closed.
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc_task).await;
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    if let Err(e) = raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    crate::failstop::FailStop::finish(fatal, &wal) // fail-stop: Err after a fatal cause
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow = if origins.is_empty() || origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_headers(tower_http::cors::Any)
        .allow_methods([http::Method::POST, http::Method::GET, http::Method::OPTIONS])
        .expose_headers([
            http::HeaderName::from_static("grpc-status"),
            http::HeaderName::from_static("grpc-message"),
            http::HeaderName::from_static("grpc-status-details-bin"),
            http::HeaderName::from_static("x-raftkv-leader-id"),
            http::HeaderName::from_static("x-raftkv-leader-addr"),
        ])
        .max_age(Duration::from_secs(3600))
}

/// Asks an existing cluster to add this node as a learner, retrying until it answers.
async fn join_cluster(endpoint: String, id: u64, addr: String, stopped: impl Future<Output = ()>) {
    let attempt = async {
        let mut delay = Duration::from_millis(200);
        loop {
            // Several endpoints may be given, comma-separated; the client tries them in turn.
            let endpoints = endpoint.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
            let client = crate::client::Client::new(endpoints, Duration::from_secs(5));
            match client.member_add(id, &addr).await {
                Ok(_) => {
                    tracing::info!(%endpoint, "joined the cluster as a learner; promote with `raftkv members promote {id}`");
                    return;
                }
                Err(e) if e.code() == tonic::Code::FailedPrecondition && e.message().contains("already exists") => {
                    // Only fine if the existing member is this node at this address.
                    if e.message().contains(&format!("(at {addr},")) {
                        tracing::info!("already a member of the cluster");
                    } else {
                        tracing::error!(
                            "member id {id} already exists with another address: {}; remove it first \
                             (raftkv members remove {id}) or pick another --id",
                            e.message()
                        );
                    }
                    return;
                }
                Err(e) => tracing::warn!(%endpoint, "joining the cluster: {}; retrying", e.message()),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    };
    tokio::select! {
        _ = attempt => {}
        _ = stopped => {}
    }
}
