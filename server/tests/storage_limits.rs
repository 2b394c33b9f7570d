//! Storage at its limits, with real processes: a node whose disk fills up stops (exit non-zero) without losing an
//! acknowledged write and catches up once it has room again; and the storage quota (`--quota-backend-bytes`)
//! refuses writes that add data with etcd's error and NOSPACE alarm, while reads and deletes keep working.

mod harness;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use harness::{eventually, http_get, TestCluster, BIN};

/// A tmpfs mounted on a directory for the test's duration (lazily unmounted on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).output().unwrap();
        assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn value(i: u64) -> Vec<u8> {
    format!("{i:08}").into_bytes().repeat(2 * 1024) // 16 KiB
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_stops_the_node_without_losing_writes_and_it_catches_up_after() {
    // Slower Raft timing than the default: when the full node was leading, the survivor that was not its quorum
    // partner may lag by many entries, and catching it up must fit in one AppendEntries timeout (the heartbeat)
    // even in a debug build on a loaded machine (issue 9 item 10 is about that timeout itself).
    let timing = ["--heartbeat", "300ms", "--election-timeout-min", "1500ms", "--election-timeout-max", "3s"];
    let mut cluster = TestCluster::prepare(3, &timing, false);
    let full = 3;
    let tmpfs = match Tmpfs::mount(&cluster.nodes[&full].data_dir, "3m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "SKIPPED full_disk test: cannot mount a tmpfs for node {full}'s data directory ({why}); run as root"
            );
            return;
        }
    };
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(Duration::from_secs(30)).await;

    // Write 16 KiB values until node 3's 3 MiB disk is full and it stops; remember what was acknowledged.
    let client = cluster.client();
    let mut acked = Vec::new();
    let mut exit = None;
    for i in 0..600u64 {
        let key = format!("k{i:05}");
        if client.put(key.as_bytes(), value(i)).await.is_ok() {
            acked.push((key, i));
        }
        let child = cluster.nodes.get_mut(&full).unwrap().child.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            exit = Some(status);
            break;
        }
    }
    let (status, log) = match exit {
        Some(_) => cluster.wait_exit(full, Duration::from_secs(1)),
        // 600 x 16 KiB is far more than 3 MiB: it must have stopped by now, or at least very soon.
        None => cluster.wait_exit(full, Duration::from_secs(30)),
    };
    assert!(!status.success(), "a node that hit ENOSPC must exit non-zero, got {status}");
    assert!(log.contains("FATAL"), "the log must say why it stopped:\n{log}");
    assert!(log.contains("No space left on device"), "the cause (ENOSPC) must be logged:\n{log}");
    assert!(acked.len() > 10, "writes were acknowledged before the disk filled ({})", acked.len());

    // The other two keep accepting writes.
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let survivors = cluster.client_of(&[1, 2]);
    for i in 1000..1020u64 {
        let key = format!("k{i:05}");
        survivors.put(key.as_bytes(), value(i)).await.unwrap_or_else(|e| panic!("put {key} after node 3 stopped: {e}"));
        acked.push((key, i));
    }
    // Every acknowledged write is there.
    for (key, i) in &acked {
        let kv = survivors.get(key.as_bytes(), false).await.unwrap().kv;
        assert_eq!(kv.map(|kv| kv.value), Some(value(*i)), "acknowledged write {key} lost");
    }

    // Free space (a bigger disk), restart: node 3 recovers its WAL and catches up.
    tmpfs.resize("256m");
    cluster.spawn(full);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let commit = cluster.status(leader).await.unwrap().commit_index;
    cluster.wait_applied(full, commit, Duration::from_secs(60)).await;
    for (key, i) in &acked {
        assert_eq!(cluster.local_get(full, key).await, Some(value(*i)), "{key} on the restarted node (serializable)");
    }
    drop(cluster); // kill the processes before the tmpfs goes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_refuses_writes_that_add_data_and_raises_nospace() {
    const QUOTA: u64 = 100_000;
    let cluster = TestCluster::start_with(1, &["--quota-backend-bytes", &QUOTA.to_string()]);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let client = cluster.client();
    let http = cluster.nodes[&1].http.clone();
    let big = vec![b'v'; 10_000];

    // Fill up to the quota: the first refusal has etcd's code and message.
    let mut stored = Vec::new();
    let refused = loop {
        let key = format!("q{:03}", stored.len());
        match client.put(key.as_bytes(), big.clone()).await {
            Ok(_) => stored.push(key),
            Err(e) => break e,
        }
        assert!(stored.len() < 20, "the quota of {QUOTA} bytes never refused a write");
    };
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.message(), "etcdserver: mvcc: database space exceeded");
    assert_eq!(stored.len(), 9, "9 x (10 KiB + key + overhead) fit in 100 000 bytes, a 10th does not");

    // The alarm is visible everywhere.
    let s = cluster.status(1).await.unwrap();
    assert_eq!(s.alarms, vec!["NOSPACE".to_string()]);
    assert_eq!(s.quota_backend_bytes, QUOTA);
    assert!(s.db_size > 90_000 && s.db_size <= QUOTA, "db_size {}", s.db_size);
    let status = http_get(&http, "/status").await;
    assert!(status.contains(r#""alarms":["NOSPACE"]"#), "{status}");
    assert!(http_get(&http, "/metrics").await.contains("raftkv_alarm_nospace 1"));
    let out = Command::new(BIN).args(["--endpoints", &cluster.addr(1), "status"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOSPACE"), "{}", String::from_utf8_lossy(&out.stdout));

    // While it is raised even a small put is refused; reads and deletes work.
    let small = client.put(b"tiny".to_vec(), b"x".to_vec()).await.unwrap_err();
    assert_eq!(small.code(), tonic::Code::ResourceExhausted);
    assert_eq!(client.get(stored[0].as_bytes(), false).await.unwrap().kv.unwrap().value, big);
    for key in &stored[..5] {
        let req = raftkv_proto::DeleteRequest { key: key.as_bytes().to_vec(), ..Default::default() };
        assert_eq!(client.delete(req).await.unwrap().deleted, 1, "delete {key} under the alarm");
    }

    // Below 90 % of the quota the alarm clears and writes are accepted again.
    eventually(Duration::from_secs(10), "the NOSPACE alarm to clear", || async {
        cluster.status(1).await.filter(|s| s.alarms.is_empty()).map(|_| ())
    })
    .await;
    client.put(b"again".to_vec(), big.clone()).await.expect("a put fits again after deletes");
    assert!(http_get(&http, "/metrics").await.contains("raftkv_alarm_nospace 0"));
}
