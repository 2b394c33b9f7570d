//! An independent etcd client library against raftkv: Python's `etcd3` (PyPI 0.12, with `protobuf==3.20.3`,
//! the only version it imports with), unmodified, through `tests/clients/etcd3_client.py`. Uses
//! `RAFTKV_ETCD3_PYTHON`, else the venv CI makes at `~/.cache/raftkv-tools/etcd3-venv`; skipped without one.

mod harness;

use std::{path::PathBuf, process::Command, time::Duration};

use harness::TestCluster;

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("RAFTKV_ETCD3_PYTHON").map(PathBuf::from).or_else(|| {
        let home = std::env::var_os("HOME")?;
        Some(PathBuf::from(home).join(".cache/raftkv-tools/etcd3-venv/bin/python"))
    })?;
    let ok = Command::new(&p).args(["-c", "import etcd3"]).output().is_ok_and(|o| o.status.success());
    ok.then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd3_works_against_raftkv() {
    let Some(python) = python() else {
        eprintln!("skipped: no Python with etcd3 (pip install etcd3==0.12.0 protobuf==3.20.3; RAFTKV_ETCD3_PYTHON)");
        return;
    };
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    cluster.wait_members_recorded(leader, Duration::from_secs(20)).await;
    // Through a follower: forwarding must be invisible to the client.
    let follower = cluster.running().into_iter().find(|id| *id != leader).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/etcd3_client.py");
    let out = Command::new(python).arg(script).arg(cluster.addr(follower)).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "etcd3 client failed ({}):\n{stdout}\n{stderr}", out.status);
    assert_eq!(stdout.trim(), "ok", "{stderr}");
}
