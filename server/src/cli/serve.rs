//! `raftkv serve`: run one node. Every flag can also come from a `RAFTKV_*` environment variable.
//!
//! Exit status: 0 after a clean shutdown (SIGTERM, Ctrl-C); non-zero if start-up fails or if the node stops for a
//! fatal reason (a storage error such as a full disk, a poisoned WAL, Raft stopped; see `raftkv::failstop`), so
//! that a supervisor restarts it.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use raftkv::{
    config::{parse_cluster, Limits, NodeConfig, RaftTuning, ResourceLimits},
    node::{self, Listeners},
    tls::TlsFiles,
};

use super::parse_duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long, env = "RAFTKV_ID")]
    pub id: u64,
    /// Client port: gRPC + gRPC-Web (the public KV and Cluster services).
    #[arg(long, env = "RAFTKV_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,
    /// Address clients and other members use to reach this node's client port (default: --listen).
    #[arg(long, env = "RAFTKV_ADVERTISE")]
    pub advertise: Option<String>,
    /// Peer port: the Raft service only (never served on the client port; etcd's 2380 to its 2379).
    #[arg(long, env = "RAFTKV_LISTEN_PEER", default_value = "127.0.0.1:7201")]
    pub listen_peer: SocketAddr,
    /// Address other members use to reach this node's peer port (default: --listen-peer); what --initial-cluster
    /// lists for this node.
    #[arg(long, env = "RAFTKV_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// TLS certificate (PEM) of the client and HTTP ports; they then speak TLS only.
    #[arg(long, env = "RAFTKV_CERT_FILE", requires_all = ["key_file", "trusted_ca_file"])]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file.
    #[arg(long, env = "RAFTKV_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// CA (PEM) that signed client certificates, and the other members' client certificates (members forward
    /// requests to the leader's client port presenting --cert-file).
    #[arg(long, env = "RAFTKV_TRUSTED_CA_FILE", requires = "cert_file")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by --trusted-ca-file.
    #[arg(long, env = "RAFTKV_CLIENT_CERT_AUTH", requires = "cert_file")]
    pub client_cert_auth: bool,
    /// TLS certificate (PEM) of the peer port; peers then authenticate each other with mutual TLS.
    #[arg(long, env = "RAFTKV_PEER_CERT_FILE", requires_all = ["peer_key_file", "peer_trusted_ca_file"])]
    pub peer_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --peer-cert-file.
    #[arg(long, env = "RAFTKV_PEER_KEY_FILE", requires = "peer_cert_file")]
    pub peer_key_file: Option<PathBuf>,
    /// CA (PEM) that signed every member's peer certificate.
    #[arg(long, env = "RAFTKV_PEER_TRUSTED_CA_FILE", requires = "peer_cert_file")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// HTTP address for /metrics, /healthz, /readyz, /status.
    #[arg(long, env = "RAFTKV_HTTP")]
    pub http: Option<SocketAddr>,
    /// Where the WAL, snapshots and metadata live.
    #[arg(long, env = "RAFTKV_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Bootstrap a new cluster with these members, by peer address: 1=host:peerport,2=host:peerport,... A node
    /// whose data directory is empty first asks the others whether it is already a member that has run, and
    /// refuses to start if so (remove it and --join instead).
    #[arg(long, env = "RAFTKV_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Mixed into the cluster id of a new cluster, so two clusters bootstrapped from the same member list refuse
    /// each other's messages (etcd's flag; give each cluster its own).
    #[arg(long, env = "RAFTKV_INITIAL_CLUSTER_TOKEN", default_value = "raftkv-cluster")]
    pub initial_cluster_token: String,
    /// Join an existing cluster through this endpoint, or any of several comma-separated ones (the node is added
    /// as a learner).
    #[arg(long, env = "RAFTKV_JOIN", conflicts_with = "initial_cluster")]
    pub join: Option<String>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "RAFTKV_LOG_JSON")]
    pub log_json: bool,
    /// Longest key accepted, in bytes.
    #[arg(long, env = "RAFTKV_MAX_KEY_BYTES", default_value_t = Limits::default().max_key_bytes)]
    pub max_key_bytes: usize,
    /// Largest single value accepted, in bytes (see also --max-request-bytes).
    #[arg(long, env = "RAFTKV_MAX_VALUE_BYTES", default_value_t = Limits::default().max_value_bytes)]
    pub max_value_bytes: usize,
    #[arg(long, env = "RAFTKV_HEARTBEAT", default_value = "100ms", value_parser = parse_duration)]
    pub heartbeat: Duration,
    #[arg(long, env = "RAFTKV_ELECTION_TIMEOUT_MIN", default_value = "300ms", value_parser = parse_duration)]
    pub election_timeout_min: Duration,
    #[arg(long, env = "RAFTKV_ELECTION_TIMEOUT_MAX", default_value = "500ms", value_parser = parse_duration)]
    pub election_timeout_max: Duration,
    /// Snapshot (and compact the WAL) after this many log entries.
    #[arg(long, env = "RAFTKV_SNAPSHOT_EVERY", default_value_t = RaftTuning::default().snapshot_every)]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for slightly lagging followers.
    #[arg(long, env = "RAFTKV_KEEP_AFTER_SNAPSHOT", default_value_t = RaftTuning::default().keep_after_snapshot)]
    pub keep_after_snapshot: u64,
    /// Default deadline for requests that carry none.
    #[arg(long, env = "RAFTKV_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    #[arg(long, env = "RAFTKV_WAL_SEGMENT_BYTES", default_value_t = 64 << 20)]
    pub wal_segment_bytes: u64,
    /// Revisions of change history kept in memory for watchers.
    #[arg(long, env = "RAFTKV_WATCH_HISTORY", default_value_t = 100_000)]
    pub watch_history: usize,
    /// Browser origins allowed to use the client port through gRPC-Web, e.g. https://dash.example:8443
    /// (comma-separated). Default: none, except this node's own dashboard with --web-dir. `*` allows every web
    /// page (an explicit opt-in).
    #[arg(long, env = "RAFTKV_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Enable the partition hook on the HTTP port (testing only).
    #[arg(long, env = "RAFTKV_FAULT_INJECTION")]
    pub fault_injection: bool,
    /// Before each WAL fsync, write the point it covers to DATA_DIR/wal-synced-marker, so a test harness can
    /// cut off exactly the unsynced tail after a kill -9 (testing only: it roughly doubles the cost of an fsync).
    #[arg(long, env = "RAFTKV_WAL_SYNC_MARKER")]
    pub wal_sync_marker: bool,
    /// Write batches in flight at once on the leader (more = more parallelism, smaller batches).
    #[arg(long, env = "RAFTKV_PROPOSALS_IN_FLIGHT", default_value_t = raftkv::raft::proposer::DEFAULT_IN_FLIGHT)]
    pub proposals_in_flight: usize,
    // --- Bounded resources (issue 9). ---
    /// Most bytes of values (put values plus txn compare values) one request may carry; larger requests are
    /// refused with INVALID_ARGUMENT before anything is proposed. etcd's flag and default (1.5 MiB); keys are
    /// bounded by --max-key-bytes each.
    #[arg(long, env = "RAFTKV_MAX_REQUEST_BYTES", default_value_t = Limits::default().max_request_bytes)]
    pub max_request_bytes: usize,
    /// Most writes waiting on the leader to be proposed; more are refused with RESOURCE_EXHAUSTED (nothing was
    /// proposed, so the client may retry).
    #[arg(long, env = "RAFTKV_MAX_PENDING_PROPOSALS", default_value_t = ResourceLimits::default().max_pending_proposals)]
    pub max_pending_proposals: usize,
    /// Most bytes of writes waiting on the leader to be proposed (see --max-pending-proposals).
    #[arg(
        long,
        env = "RAFTKV_MAX_PENDING_PROPOSAL_BYTES",
        default_value_t = ResourceLimits::default().max_pending_proposal_bytes
    )]
    pub max_pending_proposal_bytes: usize,
    /// Bytes of change history kept in memory for watchers (besides --watch-history revisions). Previous values
    /// are kept only while a watcher asks for them (prev_kv).
    #[arg(long, env = "RAFTKV_WATCH_HISTORY_BYTES", default_value_t = ResourceLimits::default().watch_history_bytes)]
    pub watch_history_bytes: usize,
    /// Also snapshot (and compact the WAL) once the WAL grew by this many bytes since the last snapshot, and keep
    /// at most a quarter of it behind a snapshot (0 = only --snapshot-every).
    #[arg(long, env = "RAFTKV_SNAPSHOT_WAL_BYTES", default_value_t = ResourceLimits::default().snapshot_wal_bytes)]
    pub snapshot_wal_bytes: u64,
    // --- end of bounded resources. ---
    /// How the leader proves a linearizable read is current: `lease` (no round trip while a quorum acknowledged
    /// a heartbeat within half the election timeout; assumes the members' clocks run at rates within 2x of each
    /// other) or `read-index` (a heartbeat round to a quorum per batch of reads, no clock assumption).
    #[arg(long, env = "RAFTKV_LINEARIZABLE_READS", value_enum, default_value_t = raftkv::config::ReadMode::Lease)]
    pub linearizable_reads: raftkv::config::ReadMode,
    /// DELIBERATELY BROKEN: linearizable reads served locally without confirming leadership. Only for the chaos
    /// suite's self-test, which must catch the stale reads this causes.
    #[arg(long, hide = true)]
    pub unsafe_local_reads: bool,
    /// Shared secret that authenticates peers without TLS: every Raft message is signed with it (HMAC) and a
    /// peer must answer a challenge before it is sent anything; the secret itself never travels. Set the same
    /// value on every node; prefer the environment variable over the flag so it stays out of `ps`.
    #[arg(long, env = "RAFTKV_PEER_SECRET", hide_env_values = true)]
    pub peer_secret: Option<String>,
    /// Serve the dashboard (a `trunk build` of web/) from this directory on the HTTP port (needs --http).
    #[arg(long, env = "RAFTKV_WEB_DIR", requires = "http")]
    pub web_dir: Option<PathBuf>,
    /// Base URLs the dashboard's browser uses to reach each node's gRPC-Web port (comma-separated; default:
    /// the members' advertised addresses). Set it when browsers reach the nodes by other names, e.g. behind
    /// published container ports.
    #[arg(long, env = "RAFTKV_DASHBOARD_ENDPOINTS", value_delimiter = ',')]
    pub dashboard_endpoints: Vec<String>,
    // --- storage safety (issue 9) ---
    /// Storage quota in bytes (etcd's flag): once the key space (keys + values + 32 bytes per key) would exceed
    /// it, writes that add data are refused with RESOURCE_EXHAUSTED "etcdserver: mvcc: database space exceeded"
    /// and the NOSPACE alarm is raised; reads and deletes keep working, and the alarm clears once deletes bring
    /// the key space under 90 % of the quota. 0 means the default (2 GiB).
    #[arg(long, env = "RAFTKV_QUOTA_BACKEND_BYTES", default_value_t = raftkv::quota::DEFAULT_QUOTA_BACKEND_BYTES)]
    pub quota_backend_bytes: u64,
    /// How the leader compacts the MVCC history (etcd's flag): `periodic` keeps --auto-compaction-retention of
    /// time, `revision` keeps that many revisions. Reads and watches before the compacted revision are refused.
    #[arg(long, env = "RAFTKV_AUTO_COMPACTION_MODE", value_enum, default_value_t = raftkv::auto_compaction::Mode::Periodic)]
    pub auto_compaction_mode: raftkv::auto_compaction::Mode,
    /// How much history to keep (etcd's flag): for periodic a duration (5m, 1h) or a number of hours, for revision
    /// a number of revisions; 0 keeps everything. The history lives in memory, so the default is 5m (etcd's
    /// default is 0).
    #[arg(long, env = "RAFTKV_AUTO_COMPACTION_RETENTION", default_value = "5m")]
    pub auto_compaction_retention: String,
    /// How often the leader replicates the remaining time of long leases (etcd's
    /// --experimental-lease-checkpoint-interval), so that a leader change extends a lease by at most this plus the
    /// election timeout instead of restarting its whole TTL. Leases with a TTL up to this are not checkpointed.
    /// 0 turns checkpoints off.
    #[arg(long, env = "RAFTKV_LEASE_CHECKPOINT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub lease_checkpoint_interval: Duration,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<NodeConfig> {
        let mut c = NodeConfig::new(self.id, self.listen, self.listen_peer, &self.data_dir);
        if let Some(a) = &self.advertise {
            c.advertise = a.clone();
        }
        if let Some(a) = &self.advertise_peer {
            c.advertise_peer = a.clone();
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            c.client_tls = Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                trusted_ca: self.trusted_ca_file.clone(),
                require_client_cert: self.client_cert_auth,
            });
        }
        if let (Some(cert), Some(key)) = (&self.peer_cert_file, &self.peer_key_file) {
            c.peer_tls = Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                trusted_ca: self.peer_trusted_ca_file.clone(),
                require_client_cert: true,
            });
        }
        c.initial_cluster_token = self.initial_cluster_token.clone();
        c.http = self.http;
        if let Some(spec) = &self.initial_cluster {
            c.initial_cluster = parse_cluster(spec).map_err(|e| anyhow::anyhow!("--initial-cluster: {e}"))?;
        }
        c.join = self.join.clone();
        c.limits = Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_request_bytes: self.max_request_bytes,
            ..Limits::default()
        };
        c.resources = ResourceLimits {
            max_pending_proposals: self.max_pending_proposals,
            max_pending_proposal_bytes: self.max_pending_proposal_bytes,
            watch_history_bytes: self.watch_history_bytes,
            snapshot_wal_bytes: self.snapshot_wal_bytes,
        };
        c.raft = RaftTuning {
            heartbeat: self.heartbeat,
            election_timeout_min: self.election_timeout_min,
            election_timeout_max: self.election_timeout_max,
            snapshot_every: self.snapshot_every,
            keep_after_snapshot: self.keep_after_snapshot,
        };
        c.request_timeout = self.request_timeout;
        c.wal_segment_bytes = self.wal_segment_bytes;
        c.watch_history = self.watch_history;
        c.cors_origins = self.cors_origin.clone();
        c.fault_injection = self.fault_injection;
        c.wal_sync_marker = self.wal_sync_marker;
        c.proposals_in_flight = self.proposals_in_flight;
        c.unsafe_local_reads = self.unsafe_local_reads;
        c.linearizable_reads = self.linearizable_reads;
        c.peer_secret = self.peer_secret.clone().filter(|s| !s.is_empty());
        c.web_dir = self.web_dir.clone();
        c.dashboard_endpoints = self.dashboard_endpoints.iter().filter(|e| !e.trim().is_empty()).cloned().collect();
        c.quota_backend_bytes = self.quota_backend_bytes; // storage safety (issue 9)
        c.lease_checkpoint_interval = self.lease_checkpoint_interval;
        c.auto_compaction =
            raftkv::auto_compaction::Policy::parse(self.auto_compaction_mode, &self.auto_compaction_retention)
                .map_err(anyhow::Error::msg)?;
        c.validate()?;
        Ok(c)
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(a: &ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(a.log_json);
    let config = a.config()?;
    let listeners = Listeners::bind(&config).await?;
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match node::run(config, listeners, shutdown).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            // Logged as well as returned: a supervisor's log collector sees the cause in the structured log.
            tracing::error!("{e}");
            Err(e.into())
        }
    }
}
