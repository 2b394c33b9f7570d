//! The NixOS VM tests (`nixos-tests/failover.py`, `nixos-tests/partition.py`), step for step, with real processes,
//! so that what the VM tests check is also checked on every `cargo test`, where there is no KVM.
//!
//! Three `raftkv serve` processes stand for the three VMs: each on its own address (127.0.0.2, 127.0.0.3,
//! 127.0.0.4, the same port on each), with its own data directory. The VM's `crash()` (power loss) is `kill -9`;
//! the VM's `block()` (network cable pulled) is the nodes' fault-injection hook, set in both directions: the cut
//! node drops all Raft traffic to and from its peers, and its peers drop all of its traffic.
//!
//! Every wait polls with a timeout; nothing asserts on how fast anything happens.

mod harness;

use std::{collections::BTreeMap, time::Duration};

use harness::{eventually, TestCluster};
use raftkv::client::Client;
use raftkv_proto as pb;

/// One address per "machine".
const HOSTS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
const ELECTION: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(30);

type Kv = BTreeMap<String, String>;

/// `count` pairs `PREFIX-000 = value-0`, ...
fn pairs(prefix: &str, count: usize) -> Kv {
    (0..count).map(|i| (format!("{prefix}-{i:03}"), format!("value-{i}"))).collect()
}

/// Writes the pairs one at a time; returns the ones that were acknowledged.
async fn put_all(client: &Client, pairs: &Kv) -> Kv {
    let mut acked = Kv::new();
    for (k, v) in pairs {
        if client.put(k.as_bytes(), v.as_bytes()).await.is_ok() {
            acked.insert(k.clone(), v.clone());
        }
    }
    acked
}

/// Every key and value in node `id`'s own state machine (a serializable scan that node answers itself).
async fn local_view(cluster: &TestCluster, id: u64) -> Option<Kv> {
    let c = Client::new(vec![cluster.addr(id)], Duration::from_secs(2));
    let all =
        pb::RangeRequest { range_end: raftkv::keyspace::prefix_end(b""), serializable: true, ..Default::default() };
    let resp = c.range(all).await.ok()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Some(resp.kvs.iter().map(|kv| (text(&kv.key), text(&kv.value))).collect())
}

/// Waits until node `id` itself holds every expected key with its expected value.
async fn wait_for_values(cluster: &TestCluster, id: u64, expected: &Kv) {
    let what = format!("node {id} holding all {} acknowledged keys with their values", expected.len());
    eventually(CONVERGE, &what, || async {
        let view = local_view(cluster, id).await?;
        expected.iter().all(|(k, v)| view.get(k) == Some(v)).then_some(())
    })
    .await;
}

/// Waits until every node in `ids` names the same leader, one of `ids`, and that node says it leads.
async fn wait_for_leader_among(cluster: &TestCluster, ids: &[u64]) -> u64 {
    eventually(ELECTION, &format!("a leader that nodes {ids:?} agree on"), || async {
        let mut leader = None;
        for &id in ids {
            let s = cluster.status(id).await?;
            if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
                return None;
            }
            leader = Some(s.leader_id);
        }
        let l = leader.filter(|l| ids.contains(l))?;
        (cluster.status(l).await?.role == pb::Role::Leader as i32).then_some(l)
    })
    .await
}

/// The nodes run on their own addresses and know each other by them.
async fn check_addresses(cluster: &TestCluster) {
    for (id, host) in (1..=3).zip(HOSTS) {
        assert!(cluster.addr(id).starts_with(&format!("{host}:")), "node {id} at {}", cluster.addr(id));
        let s = cluster.status(id).await.expect("status");
        assert_eq!(s.id, id, "the node at {} is node {id}", cluster.addr(id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover() {
    let mut cluster = TestCluster::start_on_hosts(&HOSTS, &[]);

    // "three nodes elect a leader"
    let leader = wait_for_leader_among(&cluster, &[1, 2, 3]).await;
    check_addresses(&cluster).await;
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();

    // "writes are acknowledged"
    let before = put_all(&cluster.client(), &pairs("before", 40)).await;
    assert_eq!(before.len(), 40, "a healthy cluster acknowledges every write");

    // "crash the leader"
    cluster.kill(leader);

    // "the survivors elect a new leader"
    let new_leader = wait_for_leader_among(&cluster, &survivors).await;
    assert_ne!(new_leader, leader);

    // "every acknowledged write is readable on the survivors"
    for &id in &survivors {
        wait_for_values(&cluster, id, &before).await;
        let c = cluster.node_client(id);
        for key in ["before-000", "before-039"] {
            let got = c.get(key, false).await.unwrap_or_else(|e| panic!("linearizable get {key} via node {id}: {e}"));
            assert_eq!(got.kv.map(|kv| kv.value), Some(before[key].as_bytes().to_vec()), "{key} via node {id}");
        }
    }

    // "new writes succeed"
    let after = put_all(&cluster.client_of(&survivors), &pairs("after", 20)).await;
    assert_eq!(after.len(), 20, "the survivors acknowledge every write");

    // "the old leader boots again and catches up"
    cluster.spawn(leader);
    let mut all = before.clone();
    all.extend(after);
    wait_for_values(&cluster, leader, &all).await;
    let commit = cluster.status(new_leader).await.expect("leader status").commit_index;
    cluster.wait_applied(leader, commit, CONVERGE).await;
    let now = wait_for_leader_among(&cluster, &[1, 2, 3]).await;
    assert!(survivors.contains(&now), "the restarted node {leader} is not the leader (leader: {now})");
    let s = cluster.status(leader).await.expect("status of the restarted node");
    assert_eq!(s.role, pb::Role::Follower as i32, "the restarted node follows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition() {
    let cluster = TestCluster::start_on_hosts(&HOSTS, &[]);

    // "three nodes elect a leader"
    let leader = wait_for_leader_among(&cluster, &[1, 2, 3]).await;
    check_addresses(&cluster).await;
    let majority: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();

    // "writes are acknowledged"
    let before = put_all(&cluster.client(), &pairs("before", 20)).await;
    assert_eq!(before.len(), 20, "a healthy cluster acknowledges every write");
    for id in 1..=3 {
        wait_for_values(&cluster, id, &before).await;
    }

    // "cut the leader off the network": both directions.
    cluster.partition(leader, &majority).await;
    for &id in &majority {
        cluster.partition(id, &[leader]).await;
    }

    // "the majority elects a new leader and accepts writes"
    let new_leader = wait_for_leader_among(&cluster, &majority).await;
    assert_ne!(new_leader, leader);
    let during = put_all(&cluster.client_of(&majority), &pairs("during", 20)).await;
    assert_eq!(during.len(), 20, "the majority acknowledges every write");

    // "the isolated old leader cannot commit": asked directly, it must not acknowledge a write, nor serve a
    // linearizable read.
    let isolated = Client::new(vec![cluster.addr(leader)], Duration::from_secs(3));
    let write = isolated.put("isolated-write", "lost").await;
    assert!(write.is_err(), "node {leader} acknowledged a write while cut off from the majority: {write:?}");
    let read = isolated.get("before-000", false).await;
    assert!(read.is_err(), "node {leader} served a linearizable read while cut off: {read:?}");

    // "it rejoins as a follower and converges"
    cluster.partition(leader, &[]).await;
    for &id in &majority {
        cluster.partition(id, &[]).await;
    }
    let now = wait_for_leader_among(&cluster, &[1, 2, 3]).await;
    assert!(majority.contains(&now), "the old leader {leader} is not the leader again (leader: {now})");
    let mut expected = before.clone();
    expected.extend(during);
    for id in 1..=3 {
        wait_for_values(&cluster, id, &expected).await;
    }
    // The write the isolated leader took was never committed: once it has caught up, no node has it.
    let commit = cluster.status(now).await.expect("leader status").commit_index;
    for id in 1..=3 {
        cluster.wait_applied(id, commit, CONVERGE).await;
        let view = local_view(&cluster, id).await.expect("scan");
        assert!(!view.contains_key("isolated-write"), "node {id} has the write the isolated leader could not commit");
    }
    let s = cluster.status(leader).await.expect("status of the old leader");
    assert_eq!(s.role, pb::Role::Follower as i32, "the old leader follows");
}
