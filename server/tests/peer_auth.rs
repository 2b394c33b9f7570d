//! With `--peer-secret`, the Raft service (which shares the client port) refuses callers without the secret,
//! while the cluster itself works as usual.

mod harness;

use std::time::Duration;

use harness::TestCluster;
use raftkv_proto::{raft_client::RaftClient, PeerMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_need_the_secret() {
    let cluster = TestCluster::start_with(3, &["--peer-secret", "correct-horse-battery"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    cluster.client().put("guarded", "yes").await.unwrap();

    let channel = cluster.client().channel(&cluster.addr(leader)).unwrap();
    let msg = PeerMessage { from: 9, to: leader, cluster_id: 0, version: 1, body: vec![] };
    let err = RaftClient::new(channel.clone()).vote(msg.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("x-raftkv-peer-secret", "wrong-horse-battery".parse().unwrap());
    let err = RaftClient::new(channel).vote(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // The cluster keeps working: all nodes share the secret.
    for id in 1..=3 {
        let c = cluster.node_client(id);
        assert_eq!(c.get("guarded", false).await.unwrap().kv.unwrap().value, b"yes");
    }
}
