//! A WAL with a torn tail recovers (the cut record is dropped and re-replicated); a WAL corrupted in the middle
//! refuses to start with an error naming the file and offset.

mod harness;

use std::{fs, io::Write, path::PathBuf, time::Duration};

use harness::TestCluster;

fn segments(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// About where a segment's records end (its last non-zero byte; a record may itself end in zero bytes): the
/// zeros written ahead of them follow.
fn records_end(bytes: &[u8]) -> u64 {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p as u64 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_recovers_and_catches_up() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let client = cluster.client();
    for i in 0..40 {
        client.put(format!("t{i}"), format!("v{i}")).await.unwrap();
    }
    let commit = cluster.status(leader).await.unwrap().commit_index;
    cluster.wait_applied(victim, commit, Duration::from_secs(10)).await;
    cluster.kill(victim);

    // Tear the last record: cut 5 bytes off the end of the newest segment's records (the file goes on with the
    // zeros the WAL writes ahead of them), and append a half-written header.
    let segs = segments(&cluster.wal_dir(victim));
    let last = segs.last().unwrap();
    let len = records_end(&fs::read(last).unwrap());
    let f = fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    fs::OpenOptions::new().append(true).open(last).unwrap().write_all(&[0x30, 0x00]).unwrap();

    cluster.spawn(victim);
    for i in 40..50 {
        client.put(format!("t{i}"), format!("v{i}")).await.unwrap();
    }
    let commit = cluster.status(leader).await.unwrap().commit_index;
    cluster.wait_applied(victim, commit, Duration::from_secs(15)).await;
    for i in 0..50 {
        assert_eq!(cluster.local_get(victim, &format!("t{i}")).await, Some(format!("v{i}").into_bytes()), "t{i}");
    }
    let log = fs::read_to_string(&cluster.nodes[&victim].log).unwrap();
    assert!(log.contains("torn"), "the torn tail was reported in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_mid_log_refuses_to_start() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let client = cluster.client();
    for i in 0..40 {
        client.put(format!("c{i}"), vec![b'z'; 100]).await.unwrap();
    }
    let commit = cluster.status(leader).await.unwrap().commit_index;
    cluster.wait_applied(victim, commit, Duration::from_secs(10)).await;
    cluster.stop(victim);

    // Flip one byte in the middle of the first segment.
    let segs = segments(&cluster.wal_dir(victim));
    let first = &segs[0];
    let mut bytes = fs::read(first).unwrap();
    let mid = records_end(&bytes) as usize / 2;
    bytes[mid] ^= 0xff;
    fs::write(first, &bytes).unwrap();

    cluster.spawn(victim);
    let (status, log) = cluster.wait_exit(victim, Duration::from_secs(10));
    assert!(!status.success(), "a node with a corrupt WAL must not start");
    let name = first.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        log.contains("corrupt") && log.contains(&name) && log.contains("offset"),
        "error names file and offset:\n{log}"
    );
    // The rest of the cluster is unaffected.
    client.put("still", "works").await.unwrap();
}
