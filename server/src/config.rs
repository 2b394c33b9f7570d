//! A node's configuration: typed, validated once at start-up, before anything touches the data directory.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use crate::{
    error::{Error, Result},
    raft::NodeId,
};

/// Request size limits, checked before anything is proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_txn_ops: usize,
    /// `--max-request-bytes` (etcd's name): the most value bytes one request may carry — put values plus txn
    /// compare values. Keys are bounded separately (`max_key_bytes` each, at most `max_txn_ops` of them), so one
    /// request's log entry stays below `max_request_bytes + max_txn_ops * 2 * max_key_bytes` plus framing.
    pub max_request_bytes: usize,
}

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Largest `--max-request-bytes` accepted. The KV service decodes messages up to the peer message limit (64 MiB),
/// well above this, so a request over `--max-request-bytes` is still decoded and refused with a message naming the
/// flag rather than with tonic's generic "message length too large" (only past 64 MiB does tonic refuse it).
pub const MAX_REQUEST_BYTES_CEILING: usize = 32 << 20;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 4096,
            max_value_bytes: 1536 * 1024,
            max_txn_ops: 128,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// Bounds on what a node keeps in memory and on disk (issue 9: "bounded resources").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// `--max-pending-proposals`: writes queued on the leader, not yet proposed, at most.
    pub max_pending_proposals: usize,
    /// `--max-pending-proposal-bytes`: bytes of those writes, at most.
    pub max_pending_proposal_bytes: usize,
    /// `--watch-history-bytes`: bytes of change history kept for watchers (besides `watch_history` revisions).
    pub watch_history_bytes: usize,
    /// `--snapshot-wal-bytes`: take a snapshot once the WAL grew by this much since the last one (0 = never).
    pub snapshot_wal_bytes: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            max_pending_proposals: 10_000,
            max_pending_proposal_bytes: 64 << 20,
            watch_history_bytes: 64 << 20,
            snapshot_wal_bytes: 256 << 20,
        }
    }
}

/// Raft timing and log compaction.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the WAL behind a snapshot, so slightly lagging followers catch up from the log.
    pub keep_after_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(500),
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
        }
    }
}

/// Everything `raftkv serve` needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Client port: gRPC + gRPC-Web (the public `KV` and `Cluster` services).
    pub listen: SocketAddr,
    /// Address clients (and forwarding members) use to reach this node's client port (defaults to `listen`).
    pub advertise: String,
    /// Peer port: the Raft service only, never served on the client port.
    pub listen_peer: SocketAddr,
    /// Address other members use to reach this node's peer port (defaults to `listen_peer`); what
    /// `--initial-cluster` lists.
    pub advertise_peer: String,
    /// TLS on the client and HTTP ports (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`).
    pub client_tls: Option<crate::tls::TlsFiles>,
    /// Mutual TLS on the peer port and for connections to peers (`--peer-cert-file`, `--peer-key-file`,
    /// `--peer-trusted-ca-file`).
    pub peer_tls: Option<crate::tls::TlsFiles>,
    /// HTTP address for /metrics, /healthz, /readyz, /status.
    pub http: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// Members to bootstrap a new cluster with, by peer address (empty when joining).
    pub initial_cluster: BTreeMap<NodeId, String>,
    /// Mixed into a new cluster's id (etcd's `--initial-cluster-token`).
    pub initial_cluster_token: String,
    /// An endpoint of an existing cluster to join as a learner.
    pub join: Option<String>,
    pub limits: Limits,
    /// Memory and disk bounds (proposer queue, watch history, WAL between snapshots).
    pub resources: ResourceLimits,
    pub raft: RaftTuning,
    pub request_timeout: Duration,
    /// Revisions of change history kept in memory for watchers.
    pub watch_history: usize,
    pub wal_segment_bytes: u64,
    /// Browser origins allowed to call the client port through gRPC-Web (empty = none; `*` = any, an explicit
    /// opt-in). `serve --web-dir` adds its own dashboard's origin.
    pub cors_origins: Vec<String>,
    /// Enables the partition hook (for `raftkv cluster` and tests).
    pub fault_injection: bool,
    /// Before each WAL fsync, record the point it covers in `wal-synced-marker` (for the chaos suite's
    /// lose-the-unsynced-tail nemesis; it costs a second metadata write per fsync).
    pub wal_sync_marker: bool,
    /// Write batches proposed but not yet applied, at most (see `raft::proposer`).
    pub proposals_in_flight: usize,
    /// How the leader proves a linearizable read is not stale: a leader lease (no round trip; assumes clock rates
    /// differ by less than 2x, see `raft::read_lease`), or a read-index round per batch of reads.
    pub linearizable_reads: ReadMode,
    /// DELIBERATELY BROKEN: serve linearizable reads from the local state machine, without confirming leadership.
    /// Exists only so the chaos suite can prove its checker catches stale reads. Never use it.
    pub unsafe_local_reads: bool,
    /// Shared secret every peer must present on Raft RPCs (None = peers are not authenticated).
    pub peer_secret: Option<String>,
    /// Serve the dashboard's files from here on the HTTP port (read-only: no process control).
    pub web_dir: Option<PathBuf>,
    /// gRPC-Web URLs the dashboard should use to reach the nodes (empty = the members' advertised addresses).
    pub dashboard_endpoints: Vec<String>,
    // --- storage safety (issue 9) ---
    /// Writes that add data are refused (NOSPACE alarm) once the key space would exceed this many bytes
    /// (0 = the default, 2 GiB; see `quota`).
    pub quota_backend_bytes: u64,
    /// When the leader compacts the MVCC history (`--auto-compaction-mode`, `--auto-compaction-retention`).
    pub auto_compaction: crate::auto_compaction::Policy,
    /// How often the leader checkpoints the remaining time of long leases (see `lessor`).
    pub lease_checkpoint_interval: Duration,
}

impl NodeConfig {
    /// A config with defaults for everything but identity and places.
    pub fn new(id: NodeId, listen: SocketAddr, listen_peer: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            listen,
            advertise: listen.to_string(),
            listen_peer,
            advertise_peer: listen_peer.to_string(),
            client_tls: None,
            peer_tls: None,
            http: None,
            data_dir: data_dir.into(),
            initial_cluster: BTreeMap::new(),
            initial_cluster_token: "raftkv-cluster".into(),
            join: None,
            limits: Limits::default(),
            resources: ResourceLimits::default(),
            raft: RaftTuning::default(),
            request_timeout: Duration::from_secs(5),
            watch_history: 100_000,
            wal_segment_bytes: 64 << 20,
            cors_origins: Vec::new(),
            fault_injection: false,
            wal_sync_marker: false,
            proposals_in_flight: crate::raft::proposer::DEFAULT_IN_FLIGHT,
            linearizable_reads: ReadMode::Lease,
            unsafe_local_reads: false,
            peer_secret: None,
            web_dir: None,
            dashboard_endpoints: Vec::new(),
            quota_backend_bytes: crate::quota::DEFAULT_QUOTA_BACKEND_BYTES,
            auto_compaction: Default::default(),
            lease_checkpoint_interval: crate::lessor::DEFAULT_CHECKPOINT_INTERVAL,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(Error::Config("--id must be a positive integer".into()));
        }
        validate_addr(&self.advertise).map_err(|e| Error::Config(format!("--advertise: {e}")))?;
        validate_addr(&self.advertise_peer).map_err(|e| Error::Config(format!("--advertise-peer: {e}")))?;
        if self.listen == self.listen_peer {
            return Err(Error::Config(format!(
                "--listen and --listen-peer are both {}: the peer port must be a port of its own",
                self.listen
            )));
        }
        if self.http.is_some_and(|h| h == self.listen || h == self.listen_peer) {
            return Err(Error::Config("--http must be a port of its own (not --listen or --listen-peer)".into()));
        }
        if let Some(t) = &self.client_tls {
            if t.require_client_cert && t.trusted_ca.is_none() {
                return Err(Error::Config(
                    "--client-cert-auth needs --trusted-ca-file (the CA clients' certificates are signed by)".into(),
                ));
            }
        }
        if let Some(t) = &self.peer_tls {
            if t.trusted_ca.is_none() {
                return Err(Error::Config(
                    "--peer-cert-file needs --peer-trusted-ca-file: peers authenticate each other".into(),
                ));
            }
        }
        if self.join.is_some() && !self.initial_cluster.is_empty() {
            return Err(Error::Config(
                "use either --initial-cluster (new cluster) or --join (existing cluster), not both".into(),
            ));
        }
        if !self.initial_cluster.is_empty() {
            match self.initial_cluster.get(&self.id) {
                None => {
                    return Err(Error::Config(format!(
                        "--initial-cluster does not contain this node's id {} ({})",
                        self.id,
                        format_cluster(&self.initial_cluster)
                    )))
                }
                Some(addr) if addr != &self.advertise_peer => {
                    return Err(Error::Config(format!(
                        "--initial-cluster gives node {} the peer address {addr}, but it advertises {} \
                         (--initial-cluster lists peer addresses: --advertise-peer, default --listen-peer)",
                        self.id, self.advertise_peer
                    )))
                }
                _ => {}
            }
        }
        if self.raft.election_timeout_min <= self.raft.heartbeat
            || self.raft.election_timeout_max <= self.raft.election_timeout_min
        {
            return Err(Error::Config("need heartbeat < election timeout min < election timeout max".into()));
        }
        if let Some(secret) = &self.peer_secret {
            if secret.len() < 8 || !secret.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(Error::Config(
                    "--peer-secret must be at least 8 printable ASCII characters, no spaces".into(),
                ));
            }
        }
        if self.raft.snapshot_every == 0 {
            return Err(Error::Config("--snapshot-every must be positive".into()));
        }
        let l = &self.limits;
        if l.max_request_bytes == 0 || l.max_request_bytes > MAX_REQUEST_BYTES_CEILING {
            return Err(Error::Config(format!(
                "--max-request-bytes must be between 1 and {MAX_REQUEST_BYTES_CEILING} bytes, got {}",
                l.max_request_bytes
            )));
        }
        if l.max_value_bytes > MAX_REQUEST_BYTES_CEILING {
            return Err(Error::Config(format!("--max-value-bytes may be at most {MAX_REQUEST_BYTES_CEILING} bytes")));
        }
        let r = &self.resources;
        if r.max_pending_proposals == 0 || r.max_pending_proposal_bytes < l.max_request_bytes {
            return Err(Error::Config(
                "--max-pending-proposals must be positive and --max-pending-proposal-bytes at least \
                 --max-request-bytes (one request must fit in the queue)"
                    .into(),
            ));
        }
        if r.watch_history_bytes == 0 {
            return Err(Error::Config("--watch-history-bytes must be positive".into()));
        }
        Ok(())
    }

    /// Host names browsers may use to reach this node's client and HTTP ports, besides IP literals and
    /// `localhost` (the DNS-rebinding check of [`crate::origin`]): the advertised host, the dashboard endpoints'
    /// and the allowed origins' hosts.
    pub fn browser_hosts(&self) -> Vec<String> {
        let mut hosts = vec![crate::origin::host_name(&self.advertise).to_string()];
        for url in self.dashboard_endpoints.iter().chain(&self.cors_origins) {
            let authority = url.split_once("://").map_or(url.as_str(), |(_, r)| r).split('/').next().unwrap_or("");
            hosts.push(crate::origin::host_name(authority).to_string());
        }
        hosts.retain(|h| !h.is_empty() && h != "*");
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// The browser origins allowed on the client port: `--cors-origin`, plus this node's own dashboard
    /// (`--web-dir`) at its HTTP port, by IP, `localhost` and every browser host name.
    pub fn allowed_origins(&self, https: bool) -> Vec<String> {
        let mut origins = self.cors_origins.clone();
        if let (Some(_), Some(http)) = (&self.web_dir, self.http) {
            let scheme = if https { "https" } else { "http" };
            let mut hosts = self.browser_hosts();
            hosts.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
            if !http.ip().is_unspecified() {
                hosts.push(http.ip().to_string());
            }
            for host in hosts {
                origins.push(format!("{scheme}://{host}:{}", http.port()));
            }
        }
        origins
    }

    /// How much change history the watch hub keeps (`--watch-history`, `--watch-history-bytes`).
    pub fn watch_limits(&self) -> crate::watch::HistoryLimits {
        crate::watch::HistoryLimits { revisions: self.watch_history, bytes: self.resources.watch_history_bytes }
    }

    /// The proposer's queue bounds (`--max-pending-proposals`, `--max-pending-proposal-bytes`).
    pub fn proposal_queue(&self) -> crate::raft::proposer::QueueLimits {
        crate::raft::proposer::QueueLimits {
            max_commands: self.resources.max_pending_proposals,
            max_bytes: self.resources.max_pending_proposal_bytes,
        }
    }

    /// The cluster id a bootstrapping cluster derives from its initial membership (same on every member).
    pub fn bootstrap_cluster_id(&self) -> u64 {
        let spec = format!("{}\0{}", format_cluster(&self.initial_cluster), self.initial_cluster_token);
        // FNV-1a: stable across versions and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in spec.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

/// `1=127.0.0.1:7001,2=...` → map. Ids must be positive and unique; addresses `host:port`.
pub fn parse_cluster(spec: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("{part:?} is not of the form ID=HOST:PORT"))?;
        let id: NodeId = id.trim().parse().map_err(|_| format!("{id:?} is not a node id (a positive integer)"))?;
        if id == 0 {
            return Err("node ids start at 1".into());
        }
        validate_addr(addr.trim())?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node id {id} appears twice"));
        }
    }
    if out.is_empty() {
        return Err("the cluster list is empty".into());
    }
    Ok(out)
}

pub fn format_cluster(m: &BTreeMap<NodeId, String>) -> String {
    m.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",")
}

/// A `host:port` address.
pub fn validate_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} is not HOST:PORT"))?;
    if host.is_empty() || host.contains('/') {
        return Err(format!("{addr:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{addr:?} has no valid port")),
    }
}

/// Parses a duration like `5s`, `250ms`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 5s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_spec_parses_and_rejects() {
        let m = parse_cluster("1=127.0.0.1:7001, 2=127.0.0.1:7002,3=localhost:7003").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[&3], "localhost:7003");
        assert!(parse_cluster("1=a:1,1=b:2").unwrap_err().contains("twice"));
        assert!(parse_cluster("0=a:1").unwrap_err().contains("start at 1"));
        assert!(parse_cluster("x=a:1").is_err());
        assert!(parse_cluster("1=nohost").is_err());
        assert!(parse_cluster("").is_err());
    }

    #[test]
    fn validate_catches_misconfiguration() {
        let mut c = NodeConfig::new(4, "127.0.0.1:7004".parse().unwrap(), "127.0.0.1:7204".parse().unwrap(), "/tmp/x");
        c.initial_cluster = parse_cluster("1=127.0.0.1:7001,2=127.0.0.1:7002").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("does not contain this node's id 4"));
        c.id = 0;
        assert!(c.validate().is_err());
        let mut c = NodeConfig::new(1, "127.0.0.1:7001".parse().unwrap(), "127.0.0.1:7201".parse().unwrap(), "/tmp/x");
        c.initial_cluster = parse_cluster("1=127.0.0.1:7001").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("peer address"), "initial cluster lists peer addresses");
        c.initial_cluster = parse_cluster("1=127.0.0.1:7201").unwrap();
        assert!(c.validate().is_ok());
        c.listen_peer = c.listen;
        assert!(c.validate().unwrap_err().to_string().contains("port of its own"));
        c.listen_peer = "127.0.0.1:7201".parse().unwrap();
        let a = c.bootstrap_cluster_id();
        c.initial_cluster = parse_cluster("1=127.0.0.1:7201,2=127.0.0.1:7202").unwrap();
        assert_ne!(a, c.bootstrap_cluster_id());
        let b = c.bootstrap_cluster_id();
        c.initial_cluster_token = "another".into();
        assert_ne!(b, c.bootstrap_cluster_id(), "the token separates clusters with the same members");
    }
}

/// How linearizable reads confirm leadership (`--linearizable-reads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadMode {
    /// A leader lease renewed by every acknowledged heartbeat: no round trip per read (see `raft::read_lease`).
    Lease,
    /// A round of heartbeats to a quorum, shared by every read that arrived before it (see `raft::read_index`).
    ReadIndex,
}
