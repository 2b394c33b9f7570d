//! `raftkv.v1.Raft`: receives Raft RPCs from peers and hands them to openraft.
//!
//! Separate from the public services on purpose. Each message names its sender, its intended receiver and the
//! cluster; a node refuses a message meant for another node id or another cluster (`FAILED_PRECONDITION`), so a
//! mis-wired address or a data directory copied between nodes cannot corrupt a log. A node that joins an existing
//! cluster learns the cluster id from its first peer message and records it. With `--peer-secret`, callers must
//! also present the cluster's shared secret (`UNAUTHENTICATED` otherwise): the service shares the client port.

use std::sync::{atomic::Ordering, Arc};

use raftkv_proto::{raft_server::Raft as RaftRpc, PeerMessage};
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Request, Response, Status};

use crate::raft::{decode, encode, network::NetworkShared, NodeId, Raft};

pub struct PeerService {
    raft: Raft,
    network: Arc<NetworkShared>,
    /// Called once when a joining node learns its cluster id, to persist it.
    on_cluster_id: Arc<dyn Fn(u64) + Send + Sync>,
}

impl PeerService {
    pub fn new(raft: Raft, network: Arc<NetworkShared>, on_cluster_id: Arc<dyn Fn(u64) + Send + Sync>) -> Self {
        Self { raft, network, on_cluster_id }
    }

    /// Refuses callers without the cluster's peer secret (when one is configured).
    fn authenticate<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(secret) = &self.network.peer_secret else { return Ok(()) };
        let given = req.metadata().get(crate::raft::network::PEER_SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or(&[]);
        // Constant-time comparison: no timing hint about how much of a guess was right.
        let ok = given.len() == secret.len()
            && given.iter().zip(secret.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if ok {
            Ok(())
        } else {
            Err(Status::unauthenticated("peer RPCs need the cluster's peer secret"))
        }
    }

    fn check(&self, msg: &PeerMessage) -> Result<(), Status> {
        let me = self.network.id;
        if msg.to != me {
            return Err(Status::failed_precondition(format!(
                "message for node {} reached node {me}: check the cluster addresses",
                msg.to
            )));
        }
        if msg.version != crate::raft::network::PEER_PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!("peer protocol version {} is not supported", msg.version)));
        }
        let mine = self.network.cluster_id.load(Ordering::Relaxed);
        if msg.cluster_id != 0 {
            if mine == 0 {
                if self
                    .network
                    .cluster_id
                    .compare_exchange(0, msg.cluster_id, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    (self.on_cluster_id)(msg.cluster_id);
                }
            } else if mine != msg.cluster_id {
                return Err(Status::failed_precondition(format!(
                    "message from cluster {:016x} reached a node of cluster {mine:016x}",
                    msg.cluster_id
                )));
            }
        }
        if self.network.faults.is_blocked(msg.from) {
            return Err(Status::unavailable(format!("fault injection: node {} is partitioned", msg.from)));
        }
        Ok(())
    }

    fn reply<T: Serialize>(&self, to: NodeId, body: &T) -> Response<PeerMessage> {
        Response::new(PeerMessage {
            from: self.network.id,
            to,
            cluster_id: self.network.cluster_id.load(Ordering::Relaxed),
            version: crate::raft::network::PEER_PROTOCOL_VERSION,
            body: encode(body),
        })
    }

    fn body<T: DeserializeOwned>(msg: &PeerMessage) -> Result<T, Status> {
        decode(&msg.body).map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
    }
}

#[tonic::async_trait]
impl RaftRpc for PeerService {
    async fn vote(&self, req: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        self.authenticate(&req)?;
        let msg = req.into_inner();
        self.check(&msg)?;
        let res = self.raft.vote(Self::body(&msg)?).await;
        Ok(self.reply(msg.from, &res))
    }

    async fn append_entries(&self, req: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        self.authenticate(&req)?;
        let msg = req.into_inner();
        self.check(&msg)?;
        let res = self.raft.append_entries(Self::body(&msg)?).await;
        if matches!(&res, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
            self.network.traffic.leader_contact();
        }
        Ok(self.reply(msg.from, &res))
    }

    async fn install_snapshot(&self, req: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        self.authenticate(&req)?;
        let msg = req.into_inner();
        self.check(&msg)?;
        let res = self.raft.install_snapshot(Self::body(&msg)?).await;
        Ok(self.reply(msg.from, &res))
    }
}
