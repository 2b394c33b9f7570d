//! Dynamic membership: a new node joins as a learner, catches up, is promoted to voter; a member is removed.

mod harness;

use std::time::Duration;

use harness::{eventually, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_promote_remove() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for i in 0..20 {
        client.put(format!("m{i}"), "x").await.unwrap();
    }

    // Node 4 joins through a follower's endpoint.
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    cluster.add_joining_node(4, &cluster.addr(follower));
    cluster.spawn(4);
    let members = eventually(Duration::from_secs(20), "node 4 in the member list as a learner", || async {
        let m = client.member_list().await.ok()?.members;
        m.iter().any(|m| m.id == 4 && !m.voter).then_some(m)
    })
    .await;
    assert_eq!(members.len(), 4);
    let commit = cluster.status(leader).await.unwrap().commit_index;
    cluster.wait_applied(4, commit, Duration::from_secs(20)).await;
    assert_eq!(cluster.local_get(4, "m19").await.as_deref(), Some(&b"x"[..]));
    assert_eq!(cluster.status(4).await.unwrap().role, raftkv_proto::Role::Learner as i32);

    // Adding it again is refused precisely.
    let err = client.member_add(4, &cluster.peer_addr(4), &cluster.addr(4)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    // Promote: it becomes a voter.
    let m = client.member_promote(4).await.unwrap().members;
    assert!(m.iter().any(|m| m.id == 4 && m.voter), "{m:?}");
    eventually(Duration::from_secs(10), "node 4 is a follower", || async {
        (cluster.status(4).await?.role == raftkv_proto::Role::Follower as i32).then_some(())
    })
    .await;

    // Remove a follower that is not node 4; the cluster keeps working with 3 voters.
    let victim = (1..=3).find(|i| *i != leader && *i != follower).unwrap();
    let m = client.member_remove(victim).await.unwrap().members;
    assert!(!m.iter().any(|m| m.id == victim), "{m:?}");
    assert_eq!(m.iter().filter(|m| m.voter).count(), 3);
    cluster.kill(victim);
    let c = cluster.client_of(&cluster.running());
    c.put("after-remove", "ok").await.unwrap();
    assert_eq!(c.get("after-remove", false).await.unwrap().kv.unwrap().value, b"ok");

    // Unknown member ids are NOT_FOUND.
    assert_eq!(c.member_remove(42).await.unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(c.member_promote(42).await.unwrap_err().code(), tonic::Code::NotFound);
}
