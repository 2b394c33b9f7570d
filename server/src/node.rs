//! Wiring one raftkv node: open the data directory and storage, start openraft, serve the three ports, and shut
//! everything down cleanly.
//!
//! - The **client port** (`--listen`): the public `KV` and `Cluster` services, health and reflection, over gRPC
//!   and gRPC-Web; browsers only from the origins allowed (`--cors-origin`, none by default).
//! - The **peer port** (`--listen-peer`): the Raft service only — no gRPC-Web, no CORS, nothing public.
//! - The **HTTP port** (`--http`, optional): metrics, health, status, the dashboard's files.
//!
//! With `--cert-file` the client and HTTP ports speak TLS only; with `--peer-cert-file` the peer port speaks
//! mutual TLS only ([`crate::tls`]). A new member with an empty data directory first asks the cluster whether
//! it is already a member that has run (`refuse_amnesia`); if so it refuses to start rather than vote with
//! a log it has forgotten.
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
use raftkv_proto::{cluster_server::ClusterServer, etcd as etcd_pb, kv_server::KvServer, raft_server::RaftServer};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    api::{cluster::ClusterService, etcd as etcd_api, kv::KvService, peer::PeerService, ApiContext},
    config::NodeConfig,
    data_dir::DataDir,
    error::{Error, Result},
    metrics::Metrics,
    raft::{
        log_store::LogStore,
        network::{FaultInjector, Network, NetworkShared, PeerChannels},
        peer_auth::PeerSecret,
        snapshot::SnapshotDir,
        state_machine::StateMachineStore,
        Node, Raft,
    },
    wal::{Wal, WalOptions},
};

/// The sockets a node serves on.
pub struct Listeners {
    pub grpc: TcpListener,
    pub peer: TcpListener,
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
        let peer = bind(config.listen_peer, "peers (--listen-peer)").await?;
        let http = match config.http {
            Some(a) => Some(bind(a, "HTTP (--http)").await?),
            None => None,
        };
        Ok(Self { grpc, peer, http })
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

/// The TLS configurations of a node's ports (None = plain text).
struct PortsTls {
    client: Option<crate::tls::ReloadingServer>,
    http: Option<crate::tls::ReloadingServer>,
    peer: Option<crate::tls::ReloadingServer>,
}

impl PortsTls {
    fn load(config: &NodeConfig) -> Result<Self> {
        use crate::tls::ReloadingServer;
        let client = match &config.client_tls {
            // h2 for gRPC, http/1.1 for browsers' gRPC-Web.
            Some(f) => Some(ReloadingServer::new(f.clone(), vec![b"h2", b"http/1.1"], "client")?),
            None => None,
        };
        let http = match (&config.client_tls, config.http) {
            // Client certificates are not required here: probes and metrics scrapers rarely have one, and the port
            // serves no data beyond status (fault injection, where enabled, is for test clusters).
            (Some(f), Some(_)) => {
                let files = crate::tls::TlsFiles { require_client_cert: false, ..f.clone() };
                Some(ReloadingServer::new(files, vec![b"http/1.1"], "http")?)
            }
            _ => None,
        };
        let peer = match &config.peer_tls {
            Some(f) => Some(ReloadingServer::new(f.clone(), vec![b"h2"], "peer")?),
            None => None,
        };
        Ok(Self { client, http, peer })
    }

    fn all(&self) -> Vec<crate::tls::ReloadingServer> {
        [&self.client, &self.http, &self.peer].into_iter().flatten().cloned().collect()
    }
}

/// Spawns a task serving a tonic router on `listener`, over TLS when `tls` is set. (A macro: the routers' layer
/// stacks differ in type, and tonic's bounds on them are long.)
macro_rules! spawn_grpc {
    ($router:expr, $listener:expr, $tls:expr, $stopped:expr) => {{
        let (router, listener, stopped) = ($router, $listener, $stopped);
        match $tls {
            None => tokio::spawn(async move {
                router.serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stopped).await
            }),
            Some(tls) => tokio::spawn(async move {
                router.serve_with_incoming_shutdown(crate::tls::tonic_incoming(listener, tls), stopped).await
            }),
        }
    }};
}

/// Runs a node until `shutdown` resolves. Returns an error if start-up fails (bad data dir, corrupt WAL, ...), or
/// [`Error::Fatal`] once the node stopped because it can no longer serve (see [`crate::failstop`]).
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate()?;
    let mut shutdown = Box::pin(shutdown);
    let tls = PortsTls::load(&config)?;
    let metrics = Arc::new(Metrics::new());
    let data_dir = DataDir::open(&config.data_dir, config.id)?;

    let mut wal_opts = WalOptions::new(data_dir.wal_dir());
    wal_opts.segment_bytes = config.wal_segment_bytes;
    let m = metrics.clone();
    wal_opts.on_fsync = Some(Arc::new(move |d: Duration, records: usize| {
        m.fsync_seconds.observe(d.as_secs_f64());
        m.fsync_batch_records.observe(records as f64);
    }));
    if config.wal_sync_marker {
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
        StateMachineStore::open(SnapshotDir::open(data_dir.snapshot_dir())?, config.watch_limits(), metrics.clone())?;
    let log_store = LogStore::new(wal.clone(), state_machine.durable_snapshot());
    state_machine.quota().set_limit(config.quota_backend_bytes); // --quota-backend-bytes

    let network = Arc::new(NetworkShared {
        id: config.id,
        cluster_id: AtomicU64::new(data_dir.cluster_id()),
        client_addr: config.advertise.clone(),
        peer_channels: PeerChannels::new(tls.peer.clone()),
        client_channels: PeerChannels::new(tls.client.clone()),
        faults: FaultInjector::new(config.fault_injection),
        peer_secret: config.peer_secret.as_deref().map(PeerSecret::new),
        traffic: Default::default(),
        client_addrs: Default::default(),
        taking_part: std::sync::atomic::AtomicBool::new(true),
        read_lease: crate::raft::read_lease::ReadLease::new(config.raft.election_timeout_max),
    });
    if config.unsafe_local_reads {
        tracing::warn!("UNSAFE: --unsafe-local-reads serves linearizable reads locally; reads may be stale");
    }
    if tls.peer.is_none() && network.peer_secret.is_none() {
        tracing::warn!(
            "peers are not authenticated (no --peer-cert-file, no peer secret): anyone who can reach {} can \
             send this node Raft messages; fine on loopback or a private network only",
            config.listen_peer
        );
    }

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
        // Before the peer port opens: see `refuse_amnesia`.
        network.taking_part.store(false, std::sync::atomic::Ordering::Release);
    }

    // Set when the node starts shutting down: servers stop accepting, and open streams (watches, events) end so
    // the graceful shutdown does not wait for them.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // Why the node must stop on its own (it then exits non-zero so a supervisor restarts or alerts).
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::unbounded_channel::<Error>();

    // The peer port first: fresh members ask each other who is there before any of them bootstraps.
    let data_dir = Arc::new(Mutex::new(data_dir));
    let dd = data_dir.clone();
    // A joining node learns its cluster id from its first peer message; persist it.
    let on_cluster_id = Arc::new(move |id: u64| {
        if let Err(e) = dd.lock().set_cluster_id(id) {
            tracing::error!("recording cluster id: {e}");
        }
    });
    const MAX_MSG: usize = crate::raft::network::MAX_PEER_MESSAGE;
    let peer_router = tonic::transport::Server::builder().http2_adaptive_window(Some(true)).add_service(
        RaftServer::new(PeerService::new(raft.clone(), network.clone(), on_cluster_id, stopping.clone()))
            .max_decoding_message_size(MAX_MSG)
            .max_encoding_message_size(MAX_MSG),
    );
    let peer_task = spawn_grpc!(peer_router, listeners.peer, tls.peer.clone(), stopped());

    if !initialized && !config.initial_cluster.is_empty() {
        // The wait below lasts as long as the peers take to come up; probes get an answer meanwhile.
        let starting_http = match &listeners.http {
            Some(l) => Some(
                crate::http::StartingHttp::serve(l, tls.http.clone())
                    .map_err(|e| Error::Internal(format!("HTTP port while starting: {e}")))?,
            ),
            None => None,
        };
        tokio::select! {
            r = refuse_amnesia(&config, &network) => r?,
            _ = &mut shutdown => {
                let _ = stop_tx.send(true);
                return Ok(());
            }
        }
        if let Some(h) = starting_http {
            h.stop().await;
        }
        {
            let mut dd = data_dir.lock();
            if dd.cluster_id() == 0 {
                dd.set_cluster_id(config.bootstrap_cluster_id())?;
                network.cluster_id.store(dd.cluster_id(), std::sync::atomic::Ordering::SeqCst);
            }
        }
        let members = config
            .initial_cluster
            .iter()
            .map(|(id, peer_addr)| {
                let addr = if *id == config.id { config.advertise.clone() } else { String::new() };
                (*id, Node { addr, peer_addr: peer_addr.clone() })
            })
            .collect::<std::collections::BTreeMap<_, _>>();
        match raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(cluster = %crate::config::format_cluster(&config.initial_cluster), "bootstrapped a new cluster")
            }
            Err(e) => tracing::info!("not bootstrapping: {e}"),
        }
        network.taking_part.store(true, std::sync::atomic::Ordering::Release);
    }
    let events = crate::events::EventLog::new();
    crate::events::spawn_metrics_watcher(config.id, &raft, events.clone());
    crate::raft::announce::spawn(raft.clone(), network.clone(), stopped());
    crate::tls::spawn_reloader(tls.all(), stopped());

    let ctx = Arc::new(ApiContext {
        id: config.id,
        addr: config.advertise.clone(),
        peer_addr: config.advertise_peer.clone(),
        raft: raft.clone(),
        proposer: crate::raft::proposer::Proposer::start(
            raft.clone(),
            config.proposals_in_flight,
            config.proposal_queue(),
        ),
        read_index: crate::raft::read_index::ReadIndex::start(raft.clone()),
        state_machine: state_machine.clone(),
        log_store: log_store.clone(),
        network: network.clone(),
        metrics: metrics.clone(),
        events,
        limits: config.limits,
        default_timeout: config.request_timeout,
        unsafe_local_reads: config.unsafe_local_reads,
        read_lease: config.linearizable_reads == crate::config::ReadMode::Lease,
        stopping,
        transferring: Default::default(),
        lessor: crate::lessor::Lessor::new(crate::lessor::LessorConfig {
            election_timeout: config.raft.election_timeout_max,
            checkpoint_interval: config.lease_checkpoint_interval,
        }),
    });

    spawn_etcd_revisions(ctx.clone());
    crate::auto_compaction::spawn(ctx.clone(), config.auto_compaction);
    crate::lessor::spawn(ctx.clone());
    crate::raft::compaction::spawn(
        raft.clone(),
        wal.clone(),
        config.resources.snapshot_wal_bytes,
        ctx.stopping.clone(),
    );

    // The client port: public services, gRPC + gRPC-Web, CORS only for the allowed origins.
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
    let origins = config.allowed_origins(tls.http.is_some());
    let browser_policy = |grpc| crate::origin::OriginPolicy {
        allowed_origins: origins.clone(),
        allowed_hosts: config.browser_hosts(),
        grpc,
    };
    let cors = cors_layer(&origins);
    let client_router = tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_adaptive_window(Some(true))
        .layer(crate::origin::OriginGuardLayer::new(browser_policy(true)))
        .layer(cors)
        .layer(tonic_web::GrpcWebLayer::new())
        .add_service(
            KvServer::new(KvService::new(ctx.clone()))
                .max_decoding_message_size(MAX_MSG)
                .max_encoding_message_size(MAX_MSG),
        )
        .add_service(ClusterServer::new(ClusterService::new(ctx.clone())))
        .add_service(raftkv_proto::lease_server::LeaseServer::new(crate::api::lease::LeaseService::new(ctx.clone())))
        // The etcd front door: the same commands and key space, etcd's wire.
        .add_service(
            etcd_pb::kv_server::KvServer::new(etcd_api::kv::EtcdKvService::new(ctx.clone()))
                .max_decoding_message_size(MAX_MSG)
                .max_encoding_message_size(MAX_MSG),
        )
        .add_service(
            etcd_pb::watch_server::WatchServer::new(etcd_api::watch::EtcdWatchService::new(ctx.clone()))
                .max_encoding_message_size(MAX_MSG),
        )
        .add_service(etcd_pb::cluster_server::ClusterServer::new(etcd_api::cluster::EtcdClusterService::new(
            ctx.clone(),
        )))
        .add_service(etcd_pb::maintenance_server::MaintenanceServer::new(
            etcd_api::maintenance::EtcdMaintenanceService::new(ctx.clone()),
        ))
        .add_service(etcd_pb::lease_server::LeaseServer::new(etcd_api::lease::EtcdLeaseService::new(ctx.clone())))
        .add_service(etcd_pb::auth_server::AuthServer::new(etcd_api::auth::EtcdAuthService::new(ctx.clone())))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha);
    let grpc_task = spawn_grpc!(client_router, listeners.grpc, tls.client.clone(), stopped());

    let http_task = match listeners.http {
        None => None,
        Some(l) => {
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
            let router = router.layer(crate::origin::OriginGuardLayer::new(browser_policy(false)));
            Some(
                crate::http::spawn_serve(l, tls.http.clone(), router, stopped())
                    .map_err(|e| Error::Internal(format!("HTTP TLS listener: {e}")))?,
            )
        }
    };

    if let (false, Some(endpoint)) = (initialized, config.join.clone()) {
        let client_tls = config.client_tls.as_ref().map(|f| crate::tls::ClientTls {
            cacert: f.trusted_ca.clone(),
            cert: Some(f.cert.clone()),
            key: Some(f.key.clone()),
        });
        let me = JoinAs { id: config.id, addr: config.advertise.clone(), peer_addr: config.advertise_peer.clone() };
        let fatal = fatal_tx.clone();
        let stop = stopped();
        tokio::spawn(async move {
            tokio::select! {
                r = join_cluster(endpoint, me, client_tls) => if let Err(e) = r { let _ = fatal.send(e); },
                _ = stop => {}
            }
        });
    }

    tracing::info!(
        id = config.id,
        listen = %config.listen,
        advertise = %config.advertise,
        listen_peer = %config.listen_peer,
        advertise_peer = %config.advertise_peer,
        http = ?config.http,
        client_tls = tls.client.is_some(),
        peer_tls = tls.peer.is_some(),
        "raftkv node serving"
    );
    // fail-stop: the shutdown signal, a fatal storage/Raft error, or a refusal found after start-up (join).
    let fatal = tokio::select! {
        f = failstop.until_shutdown_or_fatal(&mut shutdown, &raft, &wal) => f.map(Error::Fatal),
        Some(e) = fatal_rx.recv() => {
            tracing::error!("stopping: {e}");
            Some(e)
        }
    };
    if fatal.is_none() {
        tracing::info!("shutting down");
    }
    let _ = stop_tx.send(true);
    // Give in-flight RPCs a moment; then stop Raft, so no write is acknowledged after its storage is closed.
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc_task).await;
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), peer_task).await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    match fatal {
        // fail-stop: Err after a fatal cause (the WAL may be poisoned: no final sync).
        Some(e) => Err(e),
        None => crate::failstop::FailStop::finish(None, &wal),
    }
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // An empty list allows no cross-origin request at all (the browser gets no CORS headers).
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_headers([
            http::header::CONTENT_TYPE,
            http::HeaderName::from_static("x-grpc-web"),
            http::HeaderName::from_static("x-user-agent"),
            http::HeaderName::from_static("grpc-timeout"),
        ])
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .expose_headers([
            http::HeaderName::from_static("grpc-status"),
            http::HeaderName::from_static("grpc-message"),
            http::HeaderName::from_static("grpc-status-details-bin"),
            http::HeaderName::from_static("x-raftkv-leader-id"),
            http::HeaderName::from_static("x-raftkv-leader-addr"),
        ])
        .max_age(Duration::from_secs(3600))
}

/// Refuses to bootstrap a member whose data is gone while its cluster still counts it.
///
/// A member that ran has acknowledged entries and cast votes; if its data directory is lost and it simply
/// bootstrapped again, it would vote with an empty log, and one more failure could lose acknowledged writes. So a
/// node with no Raft state and `--initial-cluster` first asks the other listed members (over the authenticated
/// peer protocol). If any of them belongs to a cluster in which this node's id has announced its client address
/// (it has run: see [`crate::raft::announce`]), it refuses with the repair. Otherwise it waits until a majority
/// of the listed members (itself included) has answered — so that a lost directory is noticed even while some
/// peers are down — and then bootstraps as on a first start.
async fn refuse_amnesia(config: &NodeConfig, network: &NetworkShared) -> Result<()> {
    let others: Vec<(u64, String)> =
        config.initial_cluster.iter().filter(|(id, _)| **id != config.id).map(|(id, a)| (*id, a.clone())).collect();
    let majority = config.initial_cluster.len() / 2 + 1;
    let started = std::time::Instant::now();
    let mut last_log = started;
    loop {
        let answers = futures::future::join_all(
            others.iter().map(|(id, addr)| network.hello(*id, addr, Duration::from_millis(1000))),
        )
        .await;
        let mut answered = 1; // this node
        for (info, (peer, addr)) in answers.iter().zip(&others) {
            let Ok(info) = info else { continue };
            answered += 1;
            let me = info.members.iter().find(|(id, _, _)| *id == config.id);
            if let (true, Some((_, _, client_addr))) = (info.initialized, me) {
                if !client_addr.is_empty() {
                    return Err(Error::RefuseStart(format!(
                        "this node's data directory {} is empty, but node {peer} (at {addr}) belongs to a cluster \
                         in which node {} has already run (at {client_addr}). Starting now would make it vote \
                         with a log it has forgotten. Repair: remove it from the cluster (`raftkv members remove \
                         {}`), then start it with an empty data directory and --join <a member's client \
                         address> instead of --initial-cluster; promote it once it has caught up.",
                        config.data_dir.display(),
                        config.id,
                        config.id,
                    )));
                }
            }
        }
        if answered >= majority {
            return Ok(());
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            last_log = std::time::Instant::now();
            tracing::warn!(
                answered,
                majority,
                waited = ?started.elapsed(),
                "waiting for a majority of --initial-cluster to answer before bootstrapping"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Who a joining node is.
struct JoinAs {
    id: u64,
    addr: String,
    peer_addr: String,
}

/// Asks an existing cluster to add this node as a learner, retrying until it answers. Fails (the node stops)
/// when the cluster already has a member with this id: this node's data directory is empty, so that member's
/// data is gone and it must be removed first.
async fn join_cluster(endpoint: String, me: JoinAs, tls: Option<crate::tls::ClientTls>) -> Result<()> {
    let mut delay = Duration::from_millis(200);
    loop {
        // Several endpoints may be given, comma-separated; the client tries them in turn.
        let endpoints = endpoint.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
        let mut client = crate::client::Client::new(endpoints, Duration::from_secs(5));
        if let Some(t) = &tls {
            client = client.with_tls(t.clone())?;
        }
        match client.member_add(me.id, &me.peer_addr, &me.addr).await {
            Ok(_) => {
                tracing::info!(%endpoint, "joined the cluster as a learner; promote with `raftkv members promote {}`", me.id);
                return Ok(());
            }
            // Added ahead of its start (etcd's MemberAdd, which names no client address) and never run: it is
            // this node, which the leader will find at its peer address.
            Err(e)
                if e.code() == tonic::Code::FailedPrecondition && e.message().contains("already exists") && {
                    let members = client.member_list().await.map(|r| r.members).unwrap_or_default();
                    members.iter().any(|m| m.id == me.id && m.addr.is_empty() && m.peer_addr == me.peer_addr)
                } =>
            {
                tracing::info!(%endpoint, "this node was added to the cluster before it started; waiting for the leader");
                return Ok(());
            }
            Err(e) if e.code() == tonic::Code::FailedPrecondition && e.message().contains("already exists") => {
                return Err(Error::RefuseStart(format!(
                    "the cluster already has a member {}: {}. This node's data directory is empty, so it cannot be \
                     that member any more. Remove it first (`raftkv members remove {}`), then start this node \
                     again; or pick another --id.",
                    me.id,
                    e.message(),
                    me.id
                )));
            }
            Err(e) => tracing::warn!(%endpoint, "joining the cluster: {}; retrying", e.message()),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Until the key space numbers revisions as etcd does, a leader proposes the switch (`Command::EtcdRevisions`):
/// a new cluster reports revision 1 before its first write, and an older data directory switches once.
fn spawn_etcd_revisions(ctx: Arc<ApiContext>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !ctx.state_machine.etcd_revisions() && !*ctx.stopping.borrow() {
            tick.tick().await;
            let leads = {
                let m = ctx.raft.metrics().borrow().clone();
                m.current_leader == Some(ctx.id) && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
            };
            if leads {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                if let Err(e) = ctx.write(crate::raft::Command::EtcdRevisions, deadline).await {
                    tracing::debug!("proposing etcd revision numbering: {e}");
                }
            }
        }
    });
}
