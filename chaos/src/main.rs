//! `raftkv-chaos`: runs a real raftkv cluster, injects faults while clients run, records every operation, and
//! checks the history: linearizability per key, no lost acknowledged write, complete in-order watches, sane
//! serializable reads, and convergence of every node.
//!
//! The last line of output is always `operations=N faults=N violations=N`; the exit status is non-zero on any
//! violation. On a violation the history (`history.json`) and a readable report (`report.txt`, the shortest
//! failing key's operations in time order) are written to `--out`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use raftkv::{
    config::parse_duration,
    local_cluster::{LocalCluster, NodePorts},
};
use rand::{rngs::StdRng, Rng, SeedableRng};

use raftkv_chaos::{
    checker,
    checker::history::{OpKind, Outcome},
    checks, leases, nemesis,
    nemesis::Nemesis,
    record,
    record::Recorder,
    report, workload,
    workload::{ClientSpec, PREFIX},
};

#[derive(Parser)]
#[command(name = "raftkv-chaos", version, about = "Fault injection + linearizability checking for raftkv")]
struct Args {
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// How long clients run while faults are injected (e.g. 60s, 30m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed for every random choice (clients, nemesis order, targets). Default: random, printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Where the history and report go.
    #[arg(long, default_value = "chaos-out")]
    out: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: u64,
    /// Keys the clients fight over.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Lease clients: each grants leases, attaches keys, keeps them alive, then revokes or abandons them.
    #[arg(long, default_value_t = 2)]
    lease_clients: u64,
    /// Faults to inject (default: all), in a seeded order, each at least once per round.
    #[arg(long, value_enum, value_delimiter = ',')]
    nemesis: Vec<Nemesis>,
    /// No faults at all (a baseline).
    #[arg(long, conflicts_with = "nemesis")]
    no_nemesis: bool,
    /// How long each fault lasts.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    hold: Duration,
    /// Quiet time between faults.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    interval: Duration,
    /// The raftkv binary (default: next to this one).
    #[arg(long)]
    raftkv: Option<PathBuf>,
    /// Run the servers in a DELIBERATELY BROKEN mode (local linearizable reads) to prove the checker catches it.
    #[arg(long)]
    unsafe_local_reads: bool,
    /// TLS on every port of the cluster (mutual TLS between peers, client certificates required).
    #[arg(long)]
    tls: bool,
    /// Check a recorded `history.json` again instead of running a cluster.
    #[arg(long)]
    recheck: Option<PathBuf>,
    /// Time budget of the linearizability search per key.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    check_budget: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.recheck {
        Some(path) => std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<record::History>(&b)?))
            .and_then(|h| check(&args, h)),
        None => match run(&args).await {
            Ok(h) => check(&args, h),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(summary) => {
            println!("operations={} faults={} violations={}", summary.operations, summary.faults, summary.violations);
            if summary.violations == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            println!("operations=0 faults=0 violations=0");
            ExitCode::from(2)
        }
    }
}

pub struct Summary {
    operations: usize,
    faults: usize,
    violations: usize,
}

async fn run(args: &Args) -> anyhow::Result<record::History> {
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    println!("raftkv-chaos: seed {seed}, {} nodes, {} clients, {:?}", args.nodes, args.clients, args.duration);
    let mut rng = StdRng::seed_from_u64(seed);
    let exe = match &args.raftkv {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("raftkv"),
    };
    anyhow::ensure!(exe.exists(), "raftkv binary not found at {} (pass --raftkv)", exe.display());
    let nemeses: Vec<Nemesis> = if args.no_nemesis {
        vec![]
    } else if args.nemesis.is_empty() {
        Nemesis::ALL.to_vec()
    } else {
        args.nemesis.clone()
    };

    let dir = tempfile::Builder::new().prefix("raftkv-chaos-").tempdir()?;
    let ports: Vec<NodePorts> = (0..args.nodes).map(|_| NodePorts::free()).collect::<raftkv::Result<_>>()?;
    let mut serve_args: Vec<String> =
        ["--snapshot-every", "500", "--keep-after-snapshot", "100", "--request-timeout", "2s", "--wal-sync-marker"]
            .into_iter()
            .map(String::from)
            .collect();
    if args.unsafe_local_reads {
        serve_args.push("--unsafe-local-reads".into());
    }
    let mut cluster = LocalCluster::start_with_tls(&exe, &ports, dir.path(), &serve_args, args.tls)?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let tls = cluster.client_tls().unwrap_or_default();

    let rec = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let inc: workload::Incarnations = Arc::new((0..args.nodes).map(|_| AtomicU64::new(0)).collect());
    let endpoints = cluster.endpoints();
    let mut tasks = Vec::new();
    for p in 0..args.clients {
        // Half the clients are pinned to one node (and do serializable reads there); the rest use every node.
        let pinned = (p % 2 == 0).then_some(p / 2 % args.nodes + 1);
        let spec = ClientSpec {
            process: p + 1,
            endpoints: match pinned {
                Some(n) => vec![endpoints[n as usize - 1].clone()],
                None => endpoints.clone(),
            },
            pinned,
            keys: args.keys,
            seed: rng.random(),
            tls: tls.clone(),
            // Every other unpinned client speaks etcd's API: both front doors, one history, one checker.
            etcd_api: p % 4 == 1,
        };
        tasks.push(tokio::spawn(workload::run_client(spec, rec.clone(), stop.clone(), inc.clone())));
    }
    let mut lease_tasks = Vec::new();
    for p in 0..args.lease_clients {
        let process = 1000 + p; // apart from the key-value clients' ids
        let (rec, stop, tls, seed) = (rec.clone(), stop.clone(), tls.clone(), rng.random());
        lease_tasks.push(tokio::spawn(leases::run_client(process, endpoints.clone(), seed, tls, rec, stop)));
    }
    let final_revision = Arc::new(AtomicI64::new(i64::MAX));
    let watch_targets: Vec<(u64, String)> = (1..=args.nodes).zip(endpoints.iter().cloned()).collect();
    let watcher = tokio::spawn(workload::run_watcher(
        watch_targets,
        rec.clone(),
        stop.clone(),
        final_revision.clone(),
        tls.clone(),
    ));

    // Faults, round after round, in a seeded order.
    let started = Instant::now();
    let mut round: Vec<Nemesis> = Vec::new();
    let mut injected = 0usize;
    while started.elapsed() < args.duration {
        tokio::time::sleep(args.interval.min(args.duration.saturating_sub(started.elapsed()))).await;
        if nemeses.is_empty() || started.elapsed() >= args.duration {
            continue;
        }
        if round.is_empty() {
            round = nemeses.clone();
            for i in (1..round.len()).rev() {
                round.swap(i, rng.random_range(0..=i));
            }
        }
        let n = round.pop().expect("refilled");
        println!("[{:>6.1}s] nemesis {}", started.elapsed().as_secs_f64(), n.name());
        nemesis::inject(n, &mut cluster, &rec, &inc, &mut rng, args.hold).await?;
        injected += 1;
    }

    // Heal: stop the clients, restart anything dead, wait until every node has caught up.
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let lease_wait = async {
        for t in lease_tasks {
            let _ = t.await;
        }
    };
    // A lease client waiting for an abandoned lease to expire may need the cluster healed first.
    let lease_wait = tokio::spawn(lease_wait);
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        let _ = cluster.partition(id, &[]).await;
        cluster.signal(id, libc::SIGCONT);
        if !cluster.is_running(id) {
            cluster.spawn(id)?;
        }
    }
    cluster.wait_for_leader(Duration::from_secs(30)).await.context("the cluster did not recover after the run")?;
    let client = workload::connect(cluster.endpoints(), Duration::from_secs(10), &tls);
    let mut finals = BTreeMap::new();
    let mut final_ops = Vec::new();
    for k in 0..args.keys {
        let key = format!("{PREFIX}{k}");
        let t0 = rec.now();
        let r = client.get(key.as_bytes(), false).await.context("final linearizable read")?;
        let v = r.kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        final_ops.push((key.clone(), v.clone(), t0));
        finals.insert(key, v);
    }
    for (key, v, t0) in final_ops {
        rec.op(0, &key, OpKind::Get { result: v }, t0, Outcome::Ok);
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), lease_wait).await;
    let lease_keys: Vec<String> =
        rec.leases.lock().expect("recorder lock").iter().flat_map(|l| l.keys.clone()).collect();
    let mut lease_finals = BTreeMap::new();
    for key in lease_keys {
        let r = client.get(key.as_bytes(), false).await.context("final read of a lease key")?;
        lease_finals.insert(key, r.kv.is_some());
    }
    let status = client.status_all().await;
    let leader_status = status.iter().filter_map(|(_, s)| s.as_ref().ok()).find(|s| s.leader_id == s.id).cloned();
    let commit = leader_status.as_ref().map_or(0, |s| s.commit_index);
    let cluster_revision = leader_status.as_ref().and_then(|s| s.header.as_ref()).map_or(0, |h| h.revision);
    final_revision.store(cluster_revision, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(30), watcher).await;

    // Convergence: every node ends with the same data.
    let mut convergence = Vec::new();
    for (id, addr) in (1..=args.nodes).zip(cluster.endpoints()) {
        let node = workload::connect(vec![addr], Duration::from_secs(5), &tls);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let applied = node.status(node.endpoints()[0].as_str()).await.map(|s| s.applied_index).unwrap_or(0);
            if applied >= commit || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (key, fin) in &finals {
            let got = node
                .get(key.as_bytes(), true)
                .await
                .ok()
                .and_then(|r| r.kv)
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            if &got != fin {
                convergence.push(format!("node {id} has {key} = {got:?}, the cluster says {fin:?}"));
            }
        }
    }
    cluster.stop();

    Ok(record::History {
        seed,
        nodes: args.nodes,
        faults_injected: injected,
        ops: take(&rec.ops),
        serial_reads: take(&rec.serial_reads),
        range_reads: take(&rec.range_reads),
        watch: take(&rec.watch),
        faults: take(&rec.faults),
        finals,
        final_revision: cluster_revision,
        divergence: convergence,
        leases: take(&rec.leases),
        lease_events: take(&rec.lease_events),
        lease_finals,
    })
}

fn take<T>(m: &std::sync::Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *m.lock().expect("recorder lock"))
}

/// Runs every check over a recorded history, writes it down, and prints the verdicts.
fn check(args: &Args, h: record::History) -> anyhow::Result<Summary> {
    // Written first, so a long check can be interrupted and redone with `--recheck`.
    if args.recheck.is_none() {
        let path = report::write_history(&args.out, &h)?;
        println!("history written to {}", path.display());
    }
    let ops = &h.ops;
    println!(
        "{} lease sessions ({} revoked, {} abandoned), {} lease key events",
        h.leases.len(),
        h.leases.iter().filter(|l| l.revoked_ns.is_some()).count(),
        h.leases.iter().filter(|l| l.abandoned_ns.is_some()).count(),
        h.lease_events.len()
    );
    println!(
        "checking {} operations ({} ok, {} unknown, {} failed), {} watch events...",
        ops.len(),
        ops.iter().filter(|o| o.outcome == Outcome::Ok).count(),
        ops.iter().filter(|o| o.outcome == Outcome::Unknown).count(),
        ops.iter().filter(|o| o.outcome == Outcome::Fail).count(),
        h.watch.len()
    );
    let verdicts = checker::linearizability::check_history(ops, args.check_budget);
    let lease_revisions: std::collections::BTreeSet<i64> = h.lease_events.iter().map(|e| e.revision).collect();
    let violations: Vec<(String, Vec<String>)> = vec![
        ("linearizability".into(), report::linearizability_violations(&verdicts)),
        ("lost writes".into(), checks::lost_writes(ops, &h.finals)),
        ("watch".into(), checks::watch(&h.watch, ops, h.final_revision, &h.finals, &lease_revisions)),
        ("serializable reads".into(), checks::serializable(&h.serial_reads, &h.range_reads, ops)),
        ("convergence".into(), h.divergence.clone()),
        ("leases".into(), leases::check(&h.leases, &h.lease_events, &h.faults, &h.lease_finals)),
    ];
    let unchecked = report::unchecked_keys(&verdicts);
    let total: usize = violations.iter().map(|(_, v)| v.len()).sum();
    for (name, v) in &violations {
        println!("  {name:<20} {}", if v.is_empty() { "ok".to_string() } else { format!("{} violation(s)", v.len()) });
        for line in v.iter().take(5) {
            println!("      {line}");
        }
    }
    if !unchecked.is_empty() {
        println!("  linearizability search ran out of budget on keys {unchecked:?} (not counted as violations)");
    }
    if total > 0 {
        let path = report::write(&args.out, &h, &verdicts, &violations)?;
        println!("report written to {}", path.display());
    }
    Ok(Summary {
        operations: ops.len() + h.serial_reads.len() + h.range_reads.len(),
        faults: h.faults_injected,
        violations: total,
    })
}
