//! Prometheus metrics for one node, served as text on the HTTP port's `/metrics`.
//!
//! Counters and histograms are updated on the hot paths (requests, proposals, WAL fsyncs, state machine
//! applies); gauges that mirror Raft state (term, role, indexes) are refreshed from openraft's metrics at scrape
//! time, so they cost nothing between scrapes.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub proposals: IntCounter,
    pub proposals_failed: IntCounter,
    /// Linearizable reads served under the leader lease (no round).
    pub lease_reads: IntCounter,
    /// Compactions of the MVCC history this node proposed (`auto_compaction`).
    pub compactions: IntCounter,
    /// Leases granted, revoked by a client, and expired (revoked by this node as leader); renewals answered.
    pub leases_granted: IntCounter,
    pub leases_revoked: IntCounter,
    pub leases_expired: IntCounter,
    pub lease_keepalives: IntCounter,
    /// Leases with running timers on this node (0 unless it leads).
    pub leases: IntGauge,
    pub apply_seconds: Histogram,
    pub fsync_seconds: Histogram,
    pub fsync_batch_records: Histogram,
    pub term: IntGauge,
    pub role: IntGauge,
    pub is_leader: IntGauge,
    pub last_log_index: IntGauge,
    pub commit_index: IntGauge,
    pub applied_index: IntGauge,
    pub snapshot_index: IntGauge,
    pub revision: IntGauge,
    pub keys: IntGauge,
    pub wal_bytes: IntGauge,
    pub wal_segments: IntGauge,
    pub db_size: IntGauge,
    pub quota_backend_bytes: IntGauge,
    pub alarm_nospace: IntGauge,
}

fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_05, 2.0, 18).expect("valid buckets")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("raftkv".into()), None).expect("valid registry");
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("valid metric");
                registry.register(Box::new(m.clone())).expect("metric registered once");
                m
            }};
        }
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        Self {
            requests: reg!(IntCounterVec::new(
                Opts::new("requests_total", "gRPC requests by method and status code"),
                &["method", "code"]
            )),
            request_seconds: reg!(HistogramVec::new(
                HistogramOpts::new("request_seconds", "gRPC request latency by method").buckets(latency_buckets()),
                &["method"]
            )),
            proposals: reg!(IntCounter::new("proposals_total", "commands proposed to Raft on this node")),
            proposals_failed: reg!(IntCounter::new("proposals_failed_total", "proposals that did not commit")),
            lease_reads: reg!(IntCounter::new(
                "lease_reads_total",
                "linearizable reads served under the leader lease, without a round"
            )),
            compactions: reg!(IntCounter::new(
                "auto_compactions_total",
                "compactions of the MVCC history this node proposed as leader"
            )),
            leases_granted: reg!(IntCounter::new("leases_granted_total", "leases granted through this node")),
            leases_revoked: reg!(IntCounter::new(
                "leases_revoked_total",
                "leases revoked by clients through this node"
            )),
            leases_expired: reg!(IntCounter::new(
                "leases_expired_total",
                "leases this node revoked as leader because they expired"
            )),
            lease_keepalives: reg!(IntCounter::new(
                "lease_keepalives_total",
                "lease renewals this node answered as leader (rate() gives keep-alives per second)"
            )),
            leases: reg!(gauge("leases", "leases with running timers (on the leader; 0 elsewhere)")),
            apply_seconds: reg!(Histogram::with_opts(
                HistogramOpts::new("apply_seconds", "state machine apply latency per batch").buckets(latency_buckets())
            )),
            fsync_seconds: reg!(Histogram::with_opts(
                HistogramOpts::new("wal_fsync_seconds", "WAL fdatasync latency").buckets(latency_buckets())
            )),
            fsync_batch_records: reg!(Histogram::with_opts(
                HistogramOpts::new("wal_fsync_batch_records", "records made durable by one fsync (group commit)")
                    .buckets(prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets"))
            )),
            term: reg!(gauge("raft_term", "current Raft term")),
            role: reg!(gauge("raft_role", "0 unknown, 1 follower, 2 candidate, 3 leader, 4 learner, 5 shutdown")),
            is_leader: reg!(gauge("raft_is_leader", "1 if this node is the leader")),
            last_log_index: reg!(gauge("raft_last_log_index", "last log index in the WAL")),
            commit_index: reg!(gauge("raft_commit_index", "highest committed log index known here")),
            applied_index: reg!(gauge("raft_applied_index", "last log index applied to the state machine")),
            snapshot_index: reg!(gauge("raft_snapshot_index", "log index of the current snapshot")),
            revision: reg!(gauge("kv_revision", "key space revision")),
            keys: reg!(gauge("kv_keys", "keys in the key space")),
            wal_bytes: reg!(gauge("wal_bytes", "bytes of WAL segments on disk")),
            wal_segments: reg!(gauge("wal_segments", "WAL segment files on disk")),
            db_size: reg!(gauge("db_size_bytes", "key space size as the quota counts it (keys + values + overhead)")),
            quota_backend_bytes: reg!(gauge("quota_backend_bytes", "the storage quota (--quota-backend-bytes)")),
            alarm_nospace: reg!(gauge("alarm_nospace", "1 while the NOSPACE alarm is raised (key space at its quota)")),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}
