//! The chaos suite as CI runs it: short runs with every nemesis (plain and TLS) must find no violation, and the same harness
//! against a deliberately broken server (linearizable reads served locally) must find one.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn raftkv_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_raftkv-chaos")).with_file_name("raftkv");
    assert!(p.exists(), "{} not built: run `cargo test --workspace` (or `cargo build -p raftkv` first)", p.display());
    p
}

/// One chaos run at a time: two clusters fighting for two cores would starve elections.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn chaos(args: &[&str], out: &Path) -> (Output, String) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let output = Command::new(env!("CARGO_BIN_EXE_raftkv-chaos"))
        .arg("--raftkv")
        .arg(raftkv_bin())
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .expect("run raftkv-chaos");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    (output, stdout)
}

/// Parses the closing `operations=N faults=N violations=N` line.
fn summary(stdout: &str) -> (u64, u64, u64) {
    let last = stdout.lines().last().expect("some output");
    let mut it = last.split_whitespace().map(|kv| kv.split_once('=').expect("k=v").1.parse::<u64>().expect("number"));
    (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
}

#[test]
fn short_run_with_every_nemesis_finds_no_violation() {
    let out = tempfile::tempdir().unwrap();
    let (o, stdout) = chaos(&["--duration", "50s", "--seed", "7", "--hold", "2s", "--interval", "1s"], out.path());
    let (ops, faults, violations) = summary(&stdout);
    assert!(ops > 0, "the run itself failed (see stderr above)");
    for n in ["kill-leader", "kill-follower", "pause-leader", "partition-leader", "restart-all", "lose-unsynced-tail"] {
        assert!(stdout.contains(&format!("nemesis {n}")), "nemesis {n} never ran");
    }
    assert!(ops > 500, "too few operations to mean anything: {ops}");
    assert!(faults >= 6);
    assert_eq!(violations, 0, "violations found; see the report above");
    assert!(o.status.success());
}

#[test]
fn a_server_serving_stale_reads_is_caught() {
    let out = tempfile::tempdir().unwrap();
    let (o, stdout) = chaos(
        &[
            "--unsafe-local-reads",
            "--nemesis",
            "partition-leader",
            "--duration",
            "20s",
            "--seed",
            "3",
            "--hold",
            "4s",
            "--interval",
            "1s",
        ],
        out.path(),
    );
    let (ops, _, violations) = summary(&stdout);
    assert!(ops > 0, "the run itself failed (see stderr above)");
    assert!(violations > 0, "the checker missed stale reads from a partitioned leader");
    assert!(!o.status.success());
    assert!(out.path().join("report.txt").exists() && out.path().join("history.json").exists());
}

#[test]
fn five_nodes_short_run_finds_no_violation() {
    let out = tempfile::tempdir().unwrap();
    let (o, stdout) =
        chaos(&["--nodes", "5", "--duration", "25s", "--seed", "11", "--hold", "2s", "--interval", "1s"], out.path());
    let (ops, faults, violations) = summary(&stdout);
    assert!(ops > 200, "the run itself failed or did too little (see stderr above): {ops}");
    assert!(faults >= 5);
    assert_eq!(violations, 0, "violations found; see the report above");
    assert!(o.status.success());
}

#[test]
fn a_tls_cluster_under_every_nemesis_finds_no_violation() {
    let out = tempfile::tempdir().unwrap();
    let (o, stdout) =
        chaos(&["--tls", "--duration", "30s", "--seed", "19", "--hold", "2s", "--interval", "1s"], out.path());
    let (ops, faults, violations) = summary(&stdout);
    assert!(ops > 300, "the run itself failed or did too little (see stderr above): {ops}");
    assert!(faults >= 5);
    assert_eq!(violations, 0, "violations found; see the report above");
    assert!(o.status.success());
    assert!(out.path().join("history.json").exists(), "the TLS run recorded its history like any other");
}
