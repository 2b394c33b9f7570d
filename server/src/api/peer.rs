//! `raftkv.v1.Raft`: receives Raft RPCs from peers and hands them to openraft. Served only on the peer port.
//!
//! Each message names its sender, its intended receiver and the cluster; a node refuses a message meant for
//! another node id or another cluster (`FAILED_PRECONDITION`), so a mis-wired address or a data directory copied
//! between nodes cannot corrupt a log. Once a node knows its cluster id, a message without one is refused too. A
//! node that joins an existing cluster learns the cluster id from its first peer message and records it.
//!
//! Authentication: with peer TLS the port accepts only connections whose certificate the peer CA signed. With
//! a peer secret every message must carry a valid MAC (`UNAUTHENTICATED` otherwise) and every reply is signed over
//! the request's nonce, so callers can tell a peer from an impostor ([`crate::raft::peer_auth`]).

use std::{
    pin::Pin,
    sync::{atomic::Ordering, Arc},
};

use futures::{Stream, StreamExt};
use raftkv_proto::{raft_server::Raft as RaftRpc, PeerMessage};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::raft::{
    decode, encode,
    network::{NetworkShared, Rpc},
    peer_auth::{Direction, HelloInfo},
    Raft,
};

#[derive(Clone)]
pub struct PeerService {
    raft: Raft,
    network: Arc<NetworkShared>,
    /// Called once when a joining node learns its cluster id, to persist it.
    on_cluster_id: Arc<dyn Fn(u64) + Send + Sync>,
    /// True once the node is shutting down: open AppendEntries streams end, so the graceful shutdown of the peer
    /// port does not wait for the peers to drop them.
    stopping: watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(
        raft: Raft,
        network: Arc<NetworkShared>,
        on_cluster_id: Arc<dyn Fn(u64) + Send + Sync>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self { raft, network, on_cluster_id, stopping }
    }

    /// Refuses messages without a valid MAC (when a peer secret is configured).
    fn authenticate(&self, rpc: Rpc, msg: &PeerMessage) -> Result<(), Status> {
        match &self.network.peer_secret {
            None => Ok(()),
            Some(secret) => secret
                .verify(Direction::Request, rpc.name(), msg, None)
                .map_err(|e| Status::unauthenticated(format!("peer RPCs need the cluster's peer secret: {e}"))),
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
        if msg.cluster_id == 0 {
            if mine != 0 {
                return Err(Status::failed_precondition(format!(
                    "message without a cluster id reached a node of cluster {mine:016x}"
                )));
            }
        } else if mine == 0 {
            if self.network.cluster_id.compare_exchange(0, msg.cluster_id, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                (self.on_cluster_id)(msg.cluster_id);
            }
        } else if mine != msg.cluster_id {
            return Err(Status::failed_precondition(format!(
                "message from cluster {:016x} reached a node of cluster {mine:016x}",
                msg.cluster_id
            )));
        }
        if self.network.faults.is_blocked(msg.from) {
            return Err(Status::unavailable(format!("fault injection: node {} is partitioned", msg.from)));
        }
        Ok(())
    }

    /// Accepts an authenticated, well-addressed message and remembers the sender's client address.
    fn accept(&self, rpc: Rpc, req: Request<PeerMessage>) -> Result<PeerMessage, Status> {
        self.accept_message(rpc, req.into_inner())
    }

    fn accept_message(&self, rpc: Rpc, msg: PeerMessage) -> Result<PeerMessage, Status> {
        self.authenticate(rpc, &msg)?;
        if !self.network.taking_part.load(Ordering::Acquire) {
            return Err(Status::unavailable("starting: checking with the cluster before taking part"));
        }
        self.check(&msg)?;
        if !msg.client_addr.is_empty() {
            self.network.client_addrs.lock().insert(msg.from, msg.client_addr.clone());
        }
        Ok(msg)
    }

    fn reply<T: Serialize>(&self, rpc: Rpc, req: &PeerMessage, body: &T) -> Response<PeerMessage> {
        Response::new(self.reply_message(rpc, req, body))
    }

    fn reply_message<T: Serialize>(&self, rpc: Rpc, req: &PeerMessage, body: &T) -> PeerMessage {
        let mut m = PeerMessage {
            from: self.network.id,
            to: req.from,
            cluster_id: self.network.cluster_id.load(Ordering::Relaxed),
            version: crate::raft::network::PEER_PROTOCOL_VERSION,
            body: encode(body),
            client_addr: self.network.client_addr.clone(),
            ..Default::default()
        };
        if let Some(secret) = &self.network.peer_secret {
            secret.sign(Direction::Reply, rpc.name(), &mut m, req.nonce.clone());
        }
        m
    }

    /// One AppendEntries, unary or from a stream: checked, handed to openraft, answered.
    async fn append_entries_message(&self, msg: PeerMessage) -> Result<PeerMessage, Status> {
        let msg = self.accept_message(Rpc::AppendEntries, msg)?;
        let res = self.raft.append_entries(Self::body(&msg)?).await;
        if matches!(&res, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
            self.network.traffic.leader_contact();
        }
        Ok(self.reply_message(Rpc::AppendEntries, &msg, &res))
    }

    fn body<T: DeserializeOwned>(msg: &PeerMessage) -> Result<T, Status> {
        decode(&msg.body).map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
    }
}

/// The answers of one AppendEntries stream.
type AppendAnswers = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RaftRpc for PeerService {
    type AppendEntriesStreamStream = AppendAnswers;
    async fn hello(&self, req: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        // Authenticated, but no cluster check: a starting node asks who is out there before it knows its cluster.
        let msg = req.into_inner();
        self.authenticate(Rpc::Hello, &msg)?;
        if msg.to != self.network.id {
            return Err(Status::failed_precondition(format!(
                "hello for node {} reached node {}: check the cluster addresses",
                msg.to, self.network.id
            )));
        }
        let m = self.raft.metrics().borrow().membership_config.clone();
        // A member "has run" once it is recorded with a client address, or has sent this node an authenticated
        // message carrying one (not yet recorded by the leader).
        let members: Vec<_> = m
            .membership()
            .nodes()
            .map(|(id, n)| {
                let heard = self.network.client_addrs.lock().get(id).cloned().unwrap_or_default();
                (*id, n.peer_addr.clone(), if n.addr.is_empty() { heard } else { n.addr.clone() })
            })
            .collect();
        let info = HelloInfo {
            node_id: self.network.id,
            cluster_id: self.network.cluster_id.load(Ordering::Relaxed),
            initialized: !members.is_empty(),
            members,
        };
        Ok(self.reply(Rpc::Hello, &msg, &info))
    }

    async fn vote(&self, req: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let msg = self.accept(Rpc::Vote, req)?;
        if self.network.read_lease.refusing_votes() {
            // See `raft::read_lease`: a node that just started may have forgotten it follows a live leader.
            return Err(Status::unavailable("just started: not voting until a leader's lease could have run out"));
        }
        let res = self.raft.vote(Self::body(&msg)?).await;
        Ok(self.reply(Rpc::Vote, &msg, &res))
    }

    async fn append_entries(&self, req: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        self.append_entries_message(req.into_inner()).await.map(Response::new)
    }

    /// Messages are handled one at a time, in order, as the connection reads them (no task of its own). The
    /// first refused message is the stream's last answer: its status ends the stream, and the caller drops it.
    async fn append_entries_stream(
        &self,
        req: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        let service = Arc::new(self.clone());
        let mut stopping = self.stopping.clone();
        let answers = req
            .into_inner()
            .then(move |msg| {
                let service = service.clone();
                async move { service.append_entries_message(msg?).await }
            })
            .scan(false, |failed, answer| {
                let done = *failed;
                *failed = answer.is_err();
                futures::future::ready((!done).then_some(answer))
            })
            .take_until(async move {
                let _ = stopping.wait_for(|s| *s).await;
            });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn timeout_now(&self, req: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let msg = self.accept(Rpc::TimeoutNow, req)?;
        let term: u64 = Self::body(&msg)?;
        let (leader, current_term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.current_leader, m.current_term)
        };
        let answer: Result<(), String> = if leader != Some(msg.from) || current_term != term {
            Err(format!(
                "node {} (term {term}) is not this node's leader (node {leader:?}, term {current_term})",
                msg.from
            ))
        } else {
            tracing::info!(from = msg.from, term, "leadership transfer: starting an election");
            self.raft.trigger().elect().await.map_err(|e| e.to_string())
        };
        Ok(self.reply(Rpc::TimeoutNow, &msg, &answer))
    }

    async fn install_snapshot(&self, req: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let msg = self.accept(Rpc::InstallSnapshot, req)?;
        let res = self.raft.install_snapshot(Self::body(&msg)?).await;
        Ok(self.reply(Rpc::InstallSnapshot, &msg, &res))
    }
}
