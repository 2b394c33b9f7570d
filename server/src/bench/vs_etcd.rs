//! `raftkv bench --vs-etcd`: raftkv and etcd side by side, on the same machine, by the same client.
//!
//! A number for raftkv alone says little: it depends on the disk's fsync latency, the CPU and what else runs.
//! So this mode measures the machine's `fdatasync` p50 first (4 KiB appended and synced, 200 times, in the run's
//! temp dir — the same file system both clusters write to), then starts a 3-node raftkv cluster and a 3-member
//! etcd cluster ([`super::etcd`]), both on free loopback ports with their data in that temp dir, and runs the same
//! workloads against each with the same client code, key and value sizes:
//!
//! - `write`: puts from `--clients` loops over `--conns` connections, to the leader (also fills the keys read
//!   below);
//! - `write-1`: puts from one client (`--total-single` requests) — commit latency;
//! - `read`: linearizable gets from `--clients` loops, to the leader;
//! - `read-serializable`: serializable gets from `--clients` loops, spread over every member;
//! - `read-1`: linearizable gets from one client — read latency.
//!
//! The systems take turns, workload set by workload set: in each of `--rounds` rounds raftkv runs every workload
//! and then etcd does (etcd first in every other round), so a slow phase of a shared machine does not favour one
//! side. Both clusters run the whole time; the idle one only sends heartbeats. The table shows each side's best
//! round (highest ops/s) per workload and the ratios; `-o json` prints every round's raw numbers too.

use std::{
    io::Write as _,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::bail;
use raftkv::local_cluster::{LocalCluster, NodePorts};

use super::{etcd, etcd_op, raftkv_op, BenchArgs, BenchResult, Load, Op, Targets};
use crate::cli::{print_table, Cli, Output};

/// One workload of the comparison.
struct Spec {
    /// Stable name, in the JSON.
    id: &'static str,
    op: Op,
    /// One client, `--total-single` requests.
    single: bool,
}

const WORKLOADS: [Spec; 5] = [
    Spec { id: "write", op: Op::Write, single: false },
    Spec { id: "write-1", op: Op::Write, single: true },
    Spec { id: "read", op: Op::ReadLinearizable, single: false },
    Spec { id: "read-serializable", op: Op::ReadSerializable, single: false },
    Spec { id: "read-1", op: Op::ReadLinearizable, single: true },
];

const SYSTEMS: [&str; 2] = ["raftkv", "etcd"];

const FSYNC_SAMPLES: usize = 200;

impl Spec {
    fn label(&self, a: &BenchArgs) -> String {
        let what = match self.op {
            Op::Write => "write",
            Op::ReadLinearizable => "linearizable read",
            Op::ReadSerializable => "serializable read",
        };
        if self.single {
            format!("{what}, 1 client")
        } else {
            format!("{what}, {} clients", a.clients)
        }
    }

    fn load(&self, a: &BenchArgs) -> Load {
        let l = Load::of(a);
        if self.single {
            Load { clients: 1, conns: 1, total: a.total_single, ..l }
        } else {
            l
        }
    }
}

/// p50 of `fdatasync` after appending 4 KiB to a file in `dir`, in ms.
fn fdatasync_p50_ms(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let block = vec![0x5au8; 4096];
    let mut samples = Vec::with_capacity(FSYNC_SAMPLES);
    for _ in 0..FSYNC_SAMPLES {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        samples.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    samples.sort();
    Ok(samples[samples.len() / 2].as_secs_f64() * 1000.0)
}

fn ops_per_sec(r: &BenchResult) -> f64 {
    r.ops as f64 / r.elapsed.as_secs_f64()
}

fn p50_ms(r: &BenchResult) -> f64 {
    r.hist.value_at_quantile(0.5) as f64 / 1000.0
}

fn cell(r: &BenchResult) -> String {
    format!("{:.0} ({:.2} / {:.2})", ops_per_sec(r), p50_ms(r), r.hist.value_at_quantile(0.99) as f64 / 1000.0)
}

/// Was `--endpoints` given on the command line? (It is global with a default, so clap cannot refuse it here.)
fn endpoints_flag_given() -> bool {
    std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a == "--endpoints" || a.starts_with("--endpoints=")
    })
}

pub async fn run(cli: &Cli, a: &BenchArgs) -> anyhow::Result<ExitCode> {
    if endpoints_flag_given() {
        bail!("--vs-etcd starts its own raftkv and etcd clusters; it does not take --endpoints");
    }
    if a.total_single == 0 {
        bail!("--total-single must be positive");
    }
    let etcd_version = etcd::version(&a.etcd_bin)?;
    let raftkv_version = env!("CARGO_PKG_VERSION");
    let dir = tempfile::Builder::new().prefix("raftkv-vs-etcd-").tempdir()?;

    eprintln!("bench: measuring fdatasync in {}", dir.path().display());
    let fsync_p50 = fdatasync_p50_ms(dir.path())?;

    eprintln!("bench: starting 3 raftkv nodes and 3 etcd members ({etcd_version}, {})", a.etcd_bin.display());
    let ports: Vec<NodePorts> = (0..3).map(|_| NodePorts::free()).collect::<raftkv::Result<_>>()?;
    let exe = std::env::current_exe()?;
    let mut raftkv_cluster = LocalCluster::start(&exe, &ports, &dir.path().join("raftkv"), &[])?;
    let mut etcd_cluster = etcd::EtcdCluster::start(&a.etcd_bin, &dir.path().join("etcd"), 3)?;
    let (_, raftkv_leader) = raftkv_cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let etcd_leader = etcd_cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let raftkv_all = raftkv_cluster.endpoints();
    let etcd_all = etcd_cluster.endpoints();
    eprintln!("bench: raftkv leader at {raftkv_leader}, etcd leader at {etcd_leader}");

    // rounds[r][s][w]: round r, system s (SYSTEMS order), workload w (WORKLOADS order).
    let mut rounds: Vec<[Vec<BenchResult>; 2]> = Vec::new();
    let mut orders = Vec::new();
    for round in 0..a.rounds as usize {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut results: [Vec<BenchResult>; 2] = [Vec::new(), Vec::new()];
        for &s in &order {
            eprintln!("round {}/{}: {}", round + 1, a.rounds, SYSTEMS[s]);
            raftkv_cluster.check_alive()?;
            etcd_cluster.check_alive()?;
            for w in &WORKLOADS {
                let name = format!("{} {}", SYSTEMS[s], w.id);
                let l = w.load(a);
                let mut r = if s == 0 {
                    raftkv_op(&name, w.op, &Targets { leader: &raftkv_leader, all: &raftkv_all, tls: None }, &l).await?
                } else {
                    etcd_op(&name, w.op, &Targets { leader: &etcd_leader, all: &etcd_all, tls: None }, &l).await?
                };
                r.name = w.id.to_string();
                results[s].push(r);
            }
        }
        orders.push(order.map(|s| SYSTEMS[s]));
        rounds.push(results);
    }

    // Each side's best round per workload: the highest ops/s.
    let best = |s: usize, w: usize| -> &BenchResult {
        rounds
            .iter()
            .map(|r| &r[s][w])
            .max_by(|x, y| ops_per_sec(x).total_cmp(&ops_per_sec(y)))
            .expect("at least one round")
    };
    let any_errors = rounds.iter().flat_map(|r| r.iter().flatten()).any(|r| r.errors > 0);

    match cli.output {
        Output::Json => {
            let rounds_json: Vec<serde_json::Value> = rounds
                .iter()
                .zip(&orders)
                .enumerate()
                .map(|(i, (r, order))| {
                    serde_json::json!({
                        "round": i + 1,
                        "order": order,
                        "raftkv": r[0].iter().map(BenchResult::json).collect::<Vec<_>>(),
                        "etcd": r[1].iter().map(BenchResult::json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let summary: Vec<serde_json::Value> = WORKLOADS
                .iter()
                .enumerate()
                .map(|(w, spec)| {
                    let (rk, et) = (best(0, w), best(1, w));
                    let l = spec.load(a);
                    serde_json::json!({
                        "workload": spec.id,
                        "label": spec.label(a),
                        "clients": l.clients,
                        "total": l.total,
                        "raftkv": rk.json(),
                        "etcd": et.json(),
                        "ops_ratio": ops_per_sec(rk) / ops_per_sec(et),
                        "p50_ratio": spec.single.then(|| p50_ms(et) / p50_ms(rk)),
                    })
                })
                .collect();
            let out = serde_json::json!({
                "fdatasync_p50_ms": fsync_p50,
                "fdatasync_samples": FSYNC_SAMPLES,
                "etcd_version": etcd_version,
                "etcd_bin": a.etcd_bin.display().to_string(),
                "raftkv_version": raftkv_version,
                "nodes": 3,
                "clients": a.clients,
                "conns": a.conns,
                "total": a.total,
                "total_single": a.total_single,
                "key_size": a.key_size,
                "val_size": a.val_size,
                "keys": a.keys,
                "summary_of_rounds": "best (highest ops/s) per side and workload",
                "rounds": rounds_json,
                "summary": summary,
            });
            println!("{out}");
        }
        Output::Table => {
            println!(
                "raftkv {raftkv_version} vs {etcd_version} ({}), 3 nodes each on this machine; fdatasync p50 {fsync_p50:.3} ms",
                a.etcd_bin.display()
            );
            println!(
                "clients={} conns={} per node, total={} (1 client: {}), key {} B, value {} B, keys={}; best of {} round(s) per side (highest ops/s)",
                a.clients, a.conns, a.total, a.total_single, a.key_size, a.val_size, a.keys, a.rounds
            );
            println!(
                "ratio: raftkv ops/s ÷ etcd ops/s; 1-client rows also p50: etcd p50 ÷ raftkv p50 (> 1: raftkv faster)"
            );
            let rows: Vec<Vec<String>> = WORKLOADS
                .iter()
                .enumerate()
                .map(|(w, spec)| {
                    let (rk, et) = (best(0, w), best(1, w));
                    let mut ratio = format!("{:.2}x", ops_per_sec(rk) / ops_per_sec(et));
                    if spec.single {
                        ratio.push_str(&format!(", p50 {:.2}x", p50_ms(et) / p50_ms(rk)));
                    }
                    let errors = |s: usize| rounds.iter().map(|r| r[s][w].errors).sum::<u64>();
                    vec![spec.label(a), cell(rk), cell(et), ratio, format!("{}/{}", errors(0), errors(1))]
                })
                .collect();
            print_table(
                &["WORKLOAD", "RAFTKV OPS/S (P50 / P99 MS)", "ETCD OPS/S (P50 / P99 MS)", "RAFTKV÷ETCD", "ERRORS R/E"],
                &rows,
            );
        }
    }
    drop(etcd_cluster);
    drop(raftkv_cluster);
    Ok(if any_errors { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
