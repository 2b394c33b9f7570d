//! The gRPC services one node serves on its client port.
//!
//! - [`kv`]: `raftkv.v1.KV` — Put/Get/Delete/Range/Txn/Watch (public).
//! - [`cluster`]: `raftkv.v1.Cluster` — status and membership (public).
//! - [`peer`]: `raftkv.v1.Raft` — Raft RPCs between peers only.
//! - [`convert`]: protobuf ⇄ internal types, and request validation.
//!
//! [`ApiContext`] holds what every handler needs and implements the two consistency primitives:
//! [`ApiContext::write`] (propose through Raft, wait for apply) and [`ApiContext::read_barrier`] (openraft's
//! read-index: confirm leadership with a quorum, then wait until the state machine has applied up to the commit
//! index seen at that moment). A node that is not the leader answers [`Error::NotLeader`] and the handlers forward
//! the original request to the leader, once (`x-raftkv-forwarded` prevents loops).

pub mod cluster;
pub mod convert;
pub mod kv;
pub mod peer;

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};

use crate::{
    config::Limits,
    error::{Error, Result},
    metrics::Metrics,
    raft::{
        log_store::LogStore, network::NetworkShared, state_machine::StateMachineStore, Command, CommandResponse,
        NodeId, Raft,
    },
};

/// Metadata key set on forwarded requests so the leader never forwards them again.
pub const FORWARDED: &str = "x-raftkv-forwarded";

/// Shared by all services of one node.
pub struct ApiContext {
    pub id: NodeId,
    pub addr: String,
    pub raft: Raft,
    pub state_machine: StateMachineStore,
    pub log_store: LogStore,
    pub network: Arc<NetworkShared>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Used when the client sent no deadline.
    pub default_timeout: Duration,
}

impl ApiContext {
    pub fn cluster_id(&self) -> u64 {
        self.network.cluster_id.load(Ordering::Relaxed)
    }

    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The response header for a reply reflecting `revision`.
    pub fn header(&self, revision: i64) -> raftkv_proto::ResponseHeader {
        raftkv_proto::ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.id,
            raft_term: self.term(),
            revision,
        }
    }

    /// The deadline of a request: the client's `grpc-timeout`, or the server default.
    pub fn deadline<T>(&self, req: &tonic::Request<T>) -> Instant {
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or(self.default_timeout);
        Instant::now() + timeout
    }

    /// The current leader as (id, address), if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()).unwrap_or_default();
        Some((id, addr))
    }

    /// Waits until some leader is known, or the deadline passes.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<()> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map(|_| ())
            .map_err(|_| {
                Error::NoLeader(format!("no leader was elected within {timeout:?} (is a quorum of nodes up?)"))
            })
    }

    fn not_leader(&self, leader: Option<NodeId>, addr: Option<String>) -> Option<Error> {
        match leader {
            Some(l) if l != self.id => Some(Error::NotLeader {
                leader_id: l,
                leader_addr: addr.or_else(|| self.leader().map(|(_, a)| a)).unwrap_or_default(),
            }),
            _ => None,
        }
    }

    /// Proposes `cmd` through Raft and waits for it to be applied here (this node must lead).
    ///
    /// Retries only when openraft guarantees the entry did not commit (it was refused before being proposed,
    /// or its log entry was truncated). A write that times out after being proposed has an unknown outcome and
    /// is reported as `DEADLINE_EXCEEDED`, never retried.
    pub async fn write(&self, cmd: Command, deadline: Instant) -> Result<CommandResponse> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::NoLeader("deadline passed before the write could be proposed".into()));
            }
            self.metrics.proposals.inc();
            let res = tokio::time::timeout(left, self.raft.client_write(cmd.clone())).await;
            match res {
                Ok(Ok(resp)) => return Ok(resp.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    self.metrics.proposals_failed.inc();
                    if let Some(e) = self.not_leader(f.leader_id, f.leader_node.map(|n| n.addr)) {
                        return Err(e);
                    }
                    // No leader yet (or this node is about to lead): wait for an election, then retry.
                    self.wait_for_leader(deadline).await?;
                    if let Some(e) = self.not_leader(self.raft.metrics().borrow().current_leader, None) {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                    return Err(Error::FailedPrecondition(e.to_string()))
                }
                Ok(Err(RaftError::Fatal(e))) => return Err(Error::Unavailable(format!("raft stopped: {e}"))),
                Err(_) => {
                    self.metrics.proposals_failed.inc();
                    return Err(Error::DeadlineExceeded(
                        "the write was proposed but not committed before the deadline; it may or may not take effect"
                            .into(),
                    ));
                }
            }
        }
    }

    /// Makes the next local read linearizable: confirms leadership with a quorum and waits for the state machine to
    /// catch up with the commit index observed then.
    pub async fn read_barrier(&self, deadline: Instant) -> Result<()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::NoLeader("deadline passed before leadership could be confirmed".into()));
            }
            match tokio::time::timeout(left, self.raft.ensure_linearizable()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    if let Some(e) = self.not_leader(f.leader_id, f.leader_node.map(|n| n.addr)) {
                        return Err(e);
                    }
                    self.wait_for_leader(deadline).await?;
                    if let Some(e) = self.not_leader(self.raft.metrics().borrow().current_leader, None) {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                    return Err(Error::Unavailable(format!("cannot reach a quorum to confirm leadership: {e}")))
                }
                Ok(Err(RaftError::Fatal(e))) => return Err(Error::Unavailable(format!("raft stopped: {e}"))),
                Err(_) => return Err(Error::DeadlineExceeded("leadership not confirmed before the deadline".into())),
            }
        }
    }
}

/// Parses gRPC's `grpc-timeout` header ("100m", "5S", ...).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_parses() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
