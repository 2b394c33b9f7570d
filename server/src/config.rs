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
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_key_bytes: 4096, max_value_bytes: 1536 * 1024, max_txn_ops: 128 }
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
    /// gRPC + gRPC-Web listen address.
    pub listen: SocketAddr,
    /// Address peers and clients use to reach this node (defaults to `listen`).
    pub advertise: String,
    /// HTTP address for /metrics, /healthz, /readyz, /status.
    pub http: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// Members to bootstrap a new cluster with (empty when joining).
    pub initial_cluster: BTreeMap<NodeId, String>,
    /// An endpoint of an existing cluster to join as a learner.
    pub join: Option<String>,
    pub limits: Limits,
    pub raft: RaftTuning,
    pub request_timeout: Duration,
    /// Revisions of change history kept in memory for watchers.
    pub watch_history: usize,
    pub wal_segment_bytes: u64,
    /// Allowed browser origins for gRPC-Web (empty = any).
    pub cors_origins: Vec<String>,
    /// Enables the partition hook (for `raftkv cluster` and tests).
    pub fault_injection: bool,
    /// Write batches proposed but not yet applied, at most (see `raft::proposer`).
    pub proposals_in_flight: usize,
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
}

impl NodeConfig {
    /// A config with defaults for everything but identity and places.
    pub fn new(id: NodeId, listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            listen,
            advertise: listen.to_string(),
            http: None,
            data_dir: data_dir.into(),
            initial_cluster: BTreeMap::new(),
            join: None,
            limits: Limits::default(),
            raft: RaftTuning::default(),
            request_timeout: Duration::from_secs(5),
            watch_history: 100_000,
            wal_segment_bytes: 64 << 20,
            cors_origins: Vec::new(),
            fault_injection: false,
            proposals_in_flight: crate::raft::proposer::DEFAULT_IN_FLIGHT,
            unsafe_local_reads: false,
            peer_secret: None,
            web_dir: None,
            dashboard_endpoints: Vec::new(),
            quota_backend_bytes: crate::quota::DEFAULT_QUOTA_BACKEND_BYTES,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(Error::Config("--id must be a positive integer".into()));
        }
        validate_addr(&self.advertise).map_err(|e| Error::Config(format!("--advertise: {e}")))?;
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
                Some(addr) if addr != &self.advertise => {
                    return Err(Error::Config(format!(
                        "--initial-cluster gives node {} the address {addr}, but it advertises {}",
                        self.id, self.advertise
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
        Ok(())
    }

    /// The cluster id a bootstrapping cluster derives from its initial membership (same on every member).
    pub fn bootstrap_cluster_id(&self) -> u64 {
        let spec = format_cluster(&self.initial_cluster);
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
        let mut c = NodeConfig::new(4, "127.0.0.1:7004".parse().unwrap(), "/tmp/x");
        c.initial_cluster = parse_cluster("1=127.0.0.1:7001,2=127.0.0.1:7002").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("does not contain this node's id 4"));
        c.id = 0;
        assert!(c.validate().is_err());
        let mut c = NodeConfig::new(1, "127.0.0.1:7001".parse().unwrap(), "/tmp/x");
        c.initial_cluster = parse_cluster("1=127.0.0.1:7001").unwrap();
        assert!(c.validate().is_ok());
        let a = c.bootstrap_cluster_id();
        c.initial_cluster = parse_cluster("1=127.0.0.1:7001,2=127.0.0.1:7002").unwrap();
        assert_ne!(a, c.bootstrap_cluster_id());
    }
}
