//! Leases on a cluster of real processes: expiry, keep-alive, revoke (one revision, with watch events), and the
//! failures that made etcd expire leases early or keep them forever — kill -9 of the leader while a client keeps
//! a lease alive through a follower, a SIGSTOPped leader that wakes up after its leases' TTL, repeated leader
//! changes against a checkpointed lease, and a restart of the whole cluster.
//!
//! Bounds are checked the way a client can know them: a lease must not be gone before its TTL has passed since
//! the client saw its last renewal (or grant) acknowledged — judged by when the read that found it gone was
//! *answered*, so a slow machine can only make the check weaker, never fail it falsely; and it must be gone
//! within a generous timeout after its owner stopped renewing.

mod harness;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use harness::{eventually, TestCluster};
use raftkv::client::Client;
use raftkv_proto as pb;

/// The election timeout (max) the test cluster runs with (`raftkv serve`'s default).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);

async fn grant(client: &Client, ttl: i64) -> (i64, Instant) {
    let r = client.lease_grant(ttl, 0).await.expect("grant");
    assert_eq!(r.ttl, ttl, "granted the TTL asked for");
    (r.id, Instant::now())
}

async fn exists(client: &Client, key: &str) -> Option<bool> {
    client.get(key.as_bytes(), false).await.ok().map(|r| r.kv.is_some())
}

/// Renews `id` through `client` every `every` until `stop`; records when each renewal was acknowledged, and
/// fails the test if one answered that the lease is gone.
fn keep_alive(
    client: Arc<Client>,
    id: i64,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Instant>>>, tokio::task::JoinHandle<Vec<String>>) {
    let acks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let acks2 = acks.clone();
    let task = tokio::spawn(async move {
        let mut errors = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match client.lease_keep_alive_once(id).await {
                Ok(r) => {
                    assert!(r.ttl > 0, "lease {id:x} was kept alive but a renewal found it gone");
                    acks2.lock().unwrap().push(Instant::now());
                }
                Err(e) => errors.push(format!("{:?}: {}", e.code(), e.message())),
            }
            tokio::time::sleep(every).await;
        }
        errors
    });
    (acks, task)
}

/// Every DELETE of `key` from revision `from` on, collected while the test runs.
async fn deletes_of(client: &Client, key: &str, from: i64) -> Arc<Mutex<Vec<i64>>> {
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let req = pb::WatchRequest { key: key.into(), range_end: vec![], start_revision: from, prev_kv: false };
    let (_, mut stream) = client.watch(req).await.expect("watch");
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(msg)) = stream.message().await {
            for e in msg.events {
                if e.r#type == pb::event::EventType::Delete as i32 {
                    seen2.lock().unwrap().push(e.kv.map_or(0, |kv| kv.mod_revision));
                }
            }
        }
    });
    seen
}

/// A lease of `ttl` seconds with the key "kept", renewed through `renew_via` every `every` from its first renewal
/// on, while every delete of the key is collected through `watch_via`.
struct Kept {
    deleted: Arc<Mutex<Vec<i64>>>,
    acks: Arc<Mutex<Vec<Instant>>>,
    keeper: tokio::task::JoinHandle<Vec<String>>,
    stop: Arc<AtomicBool>,
}

async fn keep_a_lease(client: &Client, ttl: i64, renew_via: Arc<Client>, every: Duration, watch_via: &Client) -> Kept {
    let (id, _) = grant(client, ttl).await;
    client.put_with_lease("kept", "v", id).await.unwrap();
    let from = client.get("kept", false).await.unwrap().header.unwrap().revision;
    let deleted = deletes_of(watch_via, "kept", from).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (acks, keeper) = keep_alive(renew_via, id, every, stop.clone());
    eventually(Duration::from_secs(10), "a first renewal", || async {
        (!acks.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    Kept { deleted, acks, keeper, stop }
}

/// Waits until `key` is gone, checking on every read that it did not go before `not_before`; returns when the
/// read that found it gone was answered.
async fn wait_gone(client: &Client, key: &str, not_before: Instant, timeout: Duration) -> Instant {
    eventually(timeout, &format!("{key} deleted by its lease's expiry"), || async {
        let present = exists(client, key).await?;
        let answered = Instant::now();
        if !present {
            assert!(answered >= not_before, "{key} was gone {:?} before its lease could expire", not_before - answered);
            return Some(answered);
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_keep_alive_and_revoke_in_one_revision() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = Arc::new(cluster.client());
    let follower = *cluster.running().iter().find(|id| **id != leader).unwrap();

    // The TTL is raised to the minimum: 1.5 election timeouts, rounded up to whole seconds.
    let min = client.lease_grant(0, 0).await.unwrap();
    assert_eq!(min.ttl, 1, "0 s is raised to the minimum");
    let asked = client.lease_grant(5, 0x1234).await.unwrap();
    assert_eq!(asked.id, 0x1234);
    let again = client.lease_grant(5, 0x1234).await.unwrap_err();
    assert_eq!((again.code(), again.message()), (tonic::Code::FailedPrecondition, "etcdserver: lease already exists"));

    // Expiry on time.
    let (short, granted) = grant(&client, 2).await;
    client.put_with_lease("short", "v", short).await.unwrap();
    let got = client.get("short", false).await.unwrap().kv.unwrap();
    assert_eq!(got.lease, short, "the key carries its lease");
    let unknown = client.put_with_lease("nope", "v", 0x7777).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (tonic::Code::NotFound, "etcdserver: requested lease not found"));

    // Keep-alive through a follower keeps a lease well past its TTL.
    let (kept, _) = grant(&client, 2).await;
    client.put_with_lease("kept", "v", kept).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (_acks, keeper) =
        keep_alive(Arc::new(cluster.node_client(follower)), kept, Duration::from_millis(500), stop.clone());

    wait_gone(&client, "short", granted + Duration::from_secs(2), Duration::from_secs(15)).await;
    let ttl = client.lease_time_to_live(short, false).await.unwrap();
    assert_eq!(ttl.ttl, -1, "an expired lease is gone: {ttl:?}");
    let renewed = client.lease_keep_alive_once(short).await.unwrap();
    assert_eq!(renewed.ttl, 0, "renewing an expired lease answers TTL 0");

    tokio::time::sleep(Duration::from_secs(4)).await; // twice the TTL
    assert_eq!(exists(&client, "kept").await, Some(true), "kept alive through a follower");
    let ttl = client.lease_time_to_live(kept, true).await.unwrap();
    assert_eq!((ttl.granted_ttl, ttl.keys.clone()), (2, vec![b"kept".to_vec()]), "{ttl:?}");
    assert!((0..=2).contains(&ttl.ttl), "{ttl:?}");
    stop.store(true, Ordering::Relaxed);
    assert!(keeper.await.unwrap().is_empty(), "every renewal was answered");

    // Revoke: every key of the lease goes at one revision, with a delete event each; a plain put detached one.
    let (many, _) = grant(&client, 60).await;
    for k in ["r/a", "r/b", "r/c", "r/d"] {
        client.put_with_lease(k, "v", many).await.unwrap();
    }
    client.put("r/d", "detached").await.unwrap();
    let from = client.get("r/a", false).await.unwrap().header.unwrap().revision + 1;
    let list = client.lease_list().await.unwrap();
    assert!(list.ids.contains(&many) && list.ids.contains(&kept), "{list:?}");
    let revoked = client.lease_revoke(many).await.unwrap().header.unwrap().revision;
    assert_eq!(revoked, from, "one revision for the whole revoke");
    let req = pb::WatchRequest { key: b"r/".to_vec(), range_end: b"r0".to_vec(), start_revision: from, prev_kv: false };
    let (_, mut stream) = client.watch(req).await.unwrap();
    let msg = loop {
        let msg = stream.message().await.unwrap().unwrap();
        if !msg.events.is_empty() {
            break msg;
        }
    };
    let deleted: Vec<(String, i64)> = msg
        .events
        .iter()
        .map(|e| {
            assert_eq!(e.r#type, pb::event::EventType::Delete as i32);
            let kv = e.kv.clone().unwrap();
            (String::from_utf8(kv.key).unwrap(), kv.mod_revision)
        })
        .collect();
    assert_eq!(deleted, [("r/a".into(), revoked), ("r/b".into(), revoked), ("r/c".into(), revoked)]);
    assert_eq!(exists(&client, "r/d").await, Some(true), "a key detached from the lease stays");
    let again = client.lease_revoke(many).await.unwrap_err();
    assert_eq!((again.code(), again.message()), (tonic::Code::NotFound, "etcdserver: requested lease not found"));
    // Every member applied the same: the revoke is replicated, not local.
    for id in cluster.running() {
        cluster.wait_applied(id, cluster.status(leader).await.unwrap().commit_index, Duration::from_secs(10)).await;
        assert_eq!(cluster.local_get(id, "r/a").await, None, "node {id}");
        assert_eq!(cluster.local_get(id, "r/d").await.as_deref(), Some(&b"detached"[..]), "node {id}");
    }
}

/// kill -9 of the leader while a client keeps one lease alive through a follower: that lease never expires; a
/// lease whose owner stopped renewing still expires, within TTL + failover time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_neither_expires_a_kept_lease_nor_keeps_an_abandoned_one() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = Arc::new(cluster.client());
    let follower = *cluster.running().iter().find(|id| **id != leader).unwrap();
    let via = Arc::new(cluster.node_client(follower));
    let Kept { deleted, acks, keeper, stop } =
        keep_a_lease(&client, 3, via.clone(), Duration::from_secs(1), &via).await;
    let (abandoned, granted) = grant(&client, 3).await;
    client.put_with_lease("abandoned", "v", abandoned).await.unwrap();

    let killed = Instant::now();
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(15)).await;
    let failover = killed.elapsed();
    assert_ne!(new_leader, leader);
    let survivors = cluster.client_of(&cluster.running());
    let gone = wait_gone(&survivors, "abandoned", granted + Duration::from_secs(3), Duration::from_secs(20)).await;
    eprintln!(
        "abandoned lease: gone {:?} after the kill (TTL 3 s, failover {failover:?}, + election timeout {ELECTION_TIMEOUT:?})",
        gone - killed
    );
    // The new leader starts the lease's whole TTL (+ the election timeout) once it took over.
    let bound = Duration::from_secs(3) + failover + ELECTION_TIMEOUT + Duration::from_secs(1);
    assert!(gone - killed <= bound, "the abandoned lease lived {:?} after the kill, beyond {bound:?}", gone - killed);
    // Keep renewing through the failover for three TTLs more.
    tokio::time::sleep(Duration::from_secs(9)).await;
    stop.store(true, Ordering::Relaxed);
    let errors = keeper.await.unwrap();
    assert_eq!(exists(&survivors, "kept").await, Some(true), "a lease kept alive through a follower survives");
    assert_eq!(*deleted.lock().unwrap(), Vec::<i64>::new(), "the kept lease's key was never deleted");
    let acks = acks.lock().unwrap();
    let longest = acks.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    eprintln!("kept lease: {} renewals, longest gap {longest:?}, {} failed: {errors:?}", acks.len(), errors.len());
}

/// A leader SIGSTOPped for longer than its leases' TTL, while a client keeps one alive through the new leader,
/// wakes up with that lease's deadline long past: it must revoke nothing (it no longer leads, and it could not
/// have served renewals while stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_revokes_nothing_when_it_wakes_up() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = Arc::new(cluster.client());
    let follower = *cluster.running().iter().find(|id| **id != leader).unwrap();
    let via = Arc::new(cluster.node_client(follower));
    let Kept { deleted, acks, keeper, stop } =
        keep_a_lease(&client, 2, via.clone(), Duration::from_millis(500), &via).await;

    let (abandoned, granted) = grant(&client, 2).await;
    client.put_with_lease("abandoned", "v", abandoned).await.unwrap();
    cluster.pause(leader);
    tokio::time::sleep(Duration::from_secs(5)).await; // 2.5 TTLs: every deadline the old leader knows has passed
    let during = acks.lock().unwrap().len();
    cluster.resume(leader);
    tokio::time::sleep(Duration::from_secs(5)).await; // time to wake up, notice, and (wrongly) revoke
    stop.store(true, Ordering::Relaxed);
    let errors = keeper.await.unwrap();
    assert!(acks.lock().unwrap().len() > during, "renewals went on after the old leader woke up");
    assert_eq!(*deleted.lock().unwrap(), Vec::<i64>::new(), "the kept lease's key was never deleted");
    assert_eq!(exists(&client, "kept").await, Some(true));
    let log = std::fs::read_to_string(&cluster.nodes[&leader].log).unwrap();
    assert!(!log.contains("lease expired and was revoked"), "the woken leader revoked a lease");
    // The lease nobody renewed expired under the new leader (and only once).
    wait_gone(&client, "abandoned", granted + Duration::from_secs(2), Duration::from_secs(15)).await;
    eprintln!("renewals failed during the pause: {errors:?}");
}

/// The leader's apply loop stalls (as behind a stalled disk, etcd #15247) for longer than a lease's TTL while it
/// keeps leading (heartbeats go on): renewals, which wait for apply, cannot be answered meanwhile. When apply
/// resumes, the leader must extend its deadlines by the stall instead of revoking the leases whose owners were
/// trying to renew them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_apply_stalled_extends_what_it_could_not_renew() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = Arc::new(cluster.client());
    let follower = *cluster.running().iter().find(|id| **id != leader).unwrap();
    let watch_via = cluster.node_client(follower);
    let Kept { deleted, acks, keeper, stop } =
        keep_a_lease(&client, 2, client.clone(), Duration::from_millis(300), &watch_via).await;

    let stalled = harness::http_post(&cluster.nodes[&leader].http, "/debug/stall-apply?ms=5000").await;
    assert!(stalled.contains("stalled_ms"), "{stalled}");
    // A write commits but is not applied on the leader: renewals (which wait for apply) hang from now on.
    let writer = {
        let client = cluster.client();
        tokio::spawn(async move { client.put("during", "the stall").await })
    };
    let before = acks.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop.store(true, Ordering::Relaxed);
    let errors = keeper.await.unwrap();
    let _ = writer.await;
    assert_eq!(cluster.wait_for_leader(Duration::from_secs(5)).await, leader, "no election: the leader kept leading");
    assert!(acks.lock().unwrap().len() > before, "renewals resumed after the stall");
    assert_eq!(*deleted.lock().unwrap(), Vec::<i64>::new(), "the lease was revoked after the stall");
    assert_eq!(exists(&client, "kept").await, Some(true));
    let log = std::fs::read_to_string(&cluster.nodes[&leader].log).unwrap();
    assert!(!log.contains("lease expired and was revoked"), "the leader revoked a lease it could not renew");
    eprintln!("renewals that failed during the stall: {errors:?}");
}

/// Three leader changes in a row against a lease whose owner stopped renewing: with checkpoints every second,
/// each change extends it by at most the checkpoint interval + the failover + the election timeout — not by a
/// whole TTL each time, as without checkpoints (etcd #9395).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_changes_do_not_extend_a_checkpointed_lease_beyond_its_bound() {
    const TTL: u64 = 15;
    let checkpoint = Duration::from_secs(1);
    let interval = checkpoint_arg(checkpoint);
    let mut cluster = TestCluster::start_with(3, &["--lease-checkpoint-interval", &interval]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let (id, granted) = grant(&client, TTL as i64).await;
    client.put_with_lease("abandoned", "v", id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Kill the leader, wait for the next, bring the old one back (so a quorum survives the next kill); 3 times.
    let mut bound = Duration::from_secs(TTL) + Duration::from_secs(1); // + polling and tick slack
    for round in 1..=3 {
        let leader = cluster.wait_for_leader(Duration::from_secs(15)).await;
        let killed = Instant::now();
        cluster.kill(leader);
        let next = cluster.wait_for_leader(Duration::from_secs(15)).await;
        let failover = killed.elapsed();
        bound += checkpoint + failover + ELECTION_TIMEOUT;
        eprintln!("change {round}: {leader} -> {next} in {failover:?}");
        cluster.spawn(leader);
        let commit = cluster.status(next).await.unwrap().commit_index;
        cluster.wait_applied(leader, commit, Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let gone = wait_gone(&client, "abandoned", granted + Duration::from_secs(TTL), Duration::from_secs(60)).await;
    let lived = gone - granted;
    eprintln!("lease of {TTL} s lived {lived:?} through 3 leader changes; bound {bound:?}");
    assert!(lived <= bound, "the lease lived {lived:?}, beyond its bound {bound:?}: leader changes extended it");
}

fn checkpoint_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// A restart of the whole cluster (from snapshots, too) keeps every lease with its keys; the timers restart with
/// the extension rule (remaining time + election timeout), so a short lease still expires afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restart_keeps_leases() {
    let mut cluster = TestCluster::start_with(3, &["--snapshot-every", "5"]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let (long, _) = grant(&client, 600).await;
    for i in 0..8 {
        client.put_with_lease(format!("long/{i}"), "v", long).await.unwrap();
    }
    let ids = cluster.running();
    for id in &ids {
        let status = cluster.stop(*id);
        assert!(status.success(), "node {id} stopped cleanly: {status:?}");
    }
    for id in &ids {
        cluster.spawn(*id);
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let ttl = client.lease_time_to_live(long, true).await.unwrap();
    assert_eq!(ttl.granted_ttl, 600, "{ttl:?}");
    assert_eq!(ttl.keys.len(), 8, "{ttl:?}");
    assert!(ttl.ttl > 500 && ttl.ttl <= 601, "restarted from its remaining time (+ election timeout): {ttl:?}");
    let snapshots = ids.iter().filter(|id| cluster.nodes[id].data_dir.join("snapshots/current.snap").exists()).count();
    assert!(snapshots > 0, "the restart went through a snapshot");
    // A lease granted now still expires, and its key goes at every member.
    let (short, granted) = grant(&client, 1).await;
    client.put_with_lease("short", "v", short).await.unwrap();
    wait_gone(&client, "short", granted + Duration::from_secs(1), Duration::from_secs(15)).await;
    assert!(client.lease_list().await.unwrap().ids == vec![long], "only the long lease is left");
}
