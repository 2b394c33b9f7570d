//! The gRPC services one node serves on its client port.
//!
//! - [`kv`]: `raftkv.v1.KV` — Put/Get/Delete/Range/Txn/Watch (public).
//! - [`cluster`]: `raftkv.v1.Cluster` — status and membership (public).
//! - [`lease`]: `raftkv.v1.Lease` — leases (public), and the lease operations both front doors share.
//! - [`peer`]: `raftkv.v1.Raft` — Raft RPCs between peers only.
//! - [`convert`]: protobuf ⇄ internal types, and request validation.
//! - [`etcd`]: the second front door — etcd v3's API (`etcdserverpb.*`) over the same commands and key space.
//!
//! [`ApiContext`] holds what every handler needs and implements the two consistency primitives:
//! [`ApiContext::write`] (propose through Raft, wait for apply) and [`ApiContext::read_barrier`] (the read index:
//! confirm leadership with a quorum — one round shared by every read that arrived before it,
//! [`crate::raft::read_index`] — then wait until the state machine has applied up to the commit index seen at that
//! moment). A node that is not the leader answers [`Error::NotLeader`] and the handlers forward
//! the original request to the leader, once (`x-raftkv-forwarded` prevents loops).

pub mod cluster;
pub mod convert;
pub mod etcd;
pub mod kv;
pub mod lease;
pub mod peer;

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use openraft::error::{CheckIsLeaderError, RaftError};

use crate::{
    config::Limits,
    error::{Error, Result},
    events::EventLog,
    metrics::Metrics,
    raft::{
        log_store::LogStore,
        network::NetworkShared,
        proposer::{ProposeError, Proposer},
        read_index::ReadIndex,
        state_machine::StateMachineStore,
        Command, CommandResponse, NodeId, Raft,
    },
};

/// No request waits longer than this, whatever deadline it asks for.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// Metadata key set on forwarded requests so the leader never forwards them again.
pub const FORWARDED: &str = "x-raftkv-forwarded";

/// Shared by all services of one node.
pub struct ApiContext {
    pub id: NodeId,
    pub addr: String,
    /// This node's advertised peer address.
    pub peer_addr: String,
    pub raft: Raft,
    /// Batches writes into log entries.
    pub proposer: Proposer,
    /// Lets one leadership confirmation serve every linearizable read that arrived before it.
    pub read_index: ReadIndex,
    pub state_machine: StateMachineStore,
    pub log_store: LogStore,
    pub network: Arc<NetworkShared>,
    pub metrics: Arc<Metrics>,
    /// What happened to this node (elections, snapshots, faults, ...), for people watching it.
    pub events: Arc<EventLog>,
    pub limits: Limits,
    /// Used when the client sent no deadline.
    pub default_timeout: Duration,
    /// Linearizable reads may use the leader lease (`--linearizable-reads lease`).
    pub read_lease: bool,
    /// DELIBERATELY BROKEN mode for the chaos suite's self-test (see `NodeConfig::unsafe_local_reads`).
    pub unsafe_local_reads: bool,
    /// Becomes true when the node starts shutting down; long-lived streams end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// A leadership transfer is under way (etcd's MoveLeader): this leader proposes nothing meanwhile.
    pub transferring: std::sync::atomic::AtomicBool,
    /// Lease deadlines, on the leader (see [`crate::lessor`]).
    pub lessor: crate::lessor::Lessor,
}

impl ApiContext {
    /// Resolves once the node is shutting down.
    pub async fn shutting_down(&self) {
        let mut rx = self.stopping.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
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

    /// The deadline of a request: the client's `grpc-timeout`, or the server default — less a small margin, so
    /// the server answers with its precise error (no leader, ...) before the client gives up on its own.
    pub fn deadline<T>(&self, req: &tonic::Request<T>) -> Instant {
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or(self.default_timeout)
            .min(MAX_REQUEST_TIMEOUT);
        let margin = (timeout / 10).min(Duration::from_millis(200));
        Instant::now() + (timeout - margin)
    }

    /// The current leader as (id, address), if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let id = m.current_leader?;
        let addr = self.network.client_addr_of(id, m.membership_config.membership().get_node(&id));
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

    pub(crate) fn not_leader(&self, leader: Option<NodeId>, addr: Option<String>) -> Option<Error> {
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
    /// Retries only while nothing has been proposed (no leader yet). Once proposed, a write that loses its
    /// leader or runs out of time has an unknown outcome — it may still commit through another node — and is
    /// reported as such (`UNKNOWN` / `DEADLINE_EXCEEDED`), never retried: retrying a compare-and-swap or a put
    /// that may have committed could undo another client's acknowledged write.
    pub async fn write(&self, cmd: Command, deadline: Instant) -> Result<CommandResponse> {
        self.state_machine.check_quota(&cmd)?; // --quota-backend-bytes: refused before anything is proposed
        if self.transferring.load(Ordering::Acquire) {
            // Nothing proposed: the client retries, and finds the new leader.
            return Err(Error::NoLeader("leadership is being transferred to another member".into()));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::NoLeader("deadline passed before the write could be proposed".into()));
            }
            let leader = self.raft.metrics().borrow().current_leader;
            match leader {
                Some(l) if l == self.id => {}
                Some(l) => return Err(self.not_leader(Some(l), None).expect("another node leads")),
                None => {
                    self.wait_for_leader(deadline).await?;
                    continue;
                }
            }
            if !self.state_machine.etcd_revisions() {
                // Queued ahead of this write, so it is applied first (see `Command::EtcdRevisions`).
                if let Ok(p) = self.proposer.propose(Command::EtcdRevisions, deadline) {
                    tokio::spawn(async move { p.wait(deadline).await });
                }
            }
            self.metrics.proposals.inc();
            let pending = match self.proposer.propose(cmd, deadline) {
                Ok(p) => p,
                Err(ProposeError::QueueFull(m)) => {
                    self.metrics.proposals_failed.inc();
                    return Err(Error::ResourceExhausted(m));
                }
                Err(e) => return Err(Error::Internal(format!("proposer refused a write: {e:?}"))),
            };
            return match pending.wait(deadline).await {
                Ok(resp) => Ok(resp),
                Err(Some(ProposeError::LeadershipLost)) => {
                    self.metrics.proposals_failed.inc();
                    Err(Error::OutcomeUnknown(
                        "leadership changed while the write was in flight; it may or may not take effect".into(),
                    ))
                }
                Err(Some(ProposeError::ChangeMembership(e))) => Err(Error::FailedPrecondition(e)),
                Err(Some(ProposeError::Stopped(e))) => Err(Error::OutcomeUnknown(format!("raft stopped: {e}"))),
                Err(Some(ProposeError::QueueFull(m))) => Err(Error::ResourceExhausted(m)),
                Err(Some(ProposeError::NotProposed)) => {
                    self.metrics.proposals_failed.inc();
                    Err(Error::DeadlineExceeded(
                        "the write waited in the leader's proposal queue until its deadline and was dropped \
                         without being proposed; it did not take effect"
                            .into(),
                    ))
                }
                Err(None) => {
                    self.metrics.proposals_failed.inc();
                    Err(Error::DeadlineExceeded(
                        "the write was proposed but not committed before the deadline; it may or may not take effect"
                            .into(),
                    ))
                }
            };
        }
    }

    /// Makes the next local read linearizable: proves leadership (the leader lease, else a read-index round) and
    /// waits for the state machine to catch up with the commit index observed then.
    pub async fn read_barrier(&self, deadline: Instant) -> Result<()> {
        if let Some(index) = self.lease_read_index() {
            self.metrics.lease_reads.inc();
            return self.wait_applied(index, deadline).await;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::NoLeader("deadline passed before leadership could be confirmed".into()));
            }
            match tokio::time::timeout(left, self.read_index.confirm()).await {
                Ok(None) => return Err(Error::Unavailable("node is shutting down".into())),
                Ok(Some(Ok(read_index))) => {
                    let Some(index) = read_index.map(|l| l.index) else { return Ok(()) };
                    return self.wait_applied(index, deadline).await;
                }
                Ok(Some(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))))) => {
                    if let Some(e) =
                        self.not_leader(f.leader_id, f.leader_node.map(|n| n.addr).filter(|a| !a.is_empty()))
                    {
                        return Err(e);
                    }
                    self.wait_for_leader(deadline).await?;
                    if let Some(e) = self.not_leader(self.raft.metrics().borrow().current_leader, None) {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(Some(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))))) => {
                    return Err(Error::Unavailable(format!("cannot reach a quorum to confirm leadership: {e}")))
                }
                Ok(Some(Err(RaftError::Fatal(e)))) => return Err(Error::Unavailable(format!("raft stopped: {e}"))),
                Err(_) => return Err(Error::DeadlineExceeded("leadership not confirmed before the deadline".into())),
            }
        }
    }
}

impl ApiContext {
    /// The read index from the leader lease, if this node holds it (see [`crate::raft::read_lease`]): the commit
    /// index now, with leadership proven by a quorum's recent acknowledgements instead of a round.
    fn lease_read_index(&self) -> Option<u64> {
        if !self.read_lease {
            return None;
        }
        // The vote in the log store, not openraft's metrics: it changes before this node can vote for another.
        let vote = self.log_store.stored_vote()?;
        let held = {
            let m = self.raft.metrics();
            let m = m.borrow();
            // This term's first entry must be applied: everything earlier leaders committed is applied then.
            let own_term_applied = m.last_applied.is_some_and(|l| l.leader_id == *vote.leader_id());
            match m.membership_config.membership().get_joint_config().as_slice() {
                // One configuration (not a membership change): its voters, borrowed, no copy per read.
                [voters] if own_term_applied => self.network.read_lease.held(self.id, Some(vote), voters),
                _ => return None, // not yet, or during a membership change: take the read index
            }
        };
        // Read after the lease check: at least the commit index when the read arrived.
        held.then(|| self.log_store.committed_index())
    }

    /// Waits until the local key space satisfies `done` (something the leader applied reached this member), or
    /// the deadline.
    pub(crate) async fn wait_local(
        &self,
        deadline: Instant,
        done: impl Fn(&crate::keyspace::KeySpace) -> bool,
    ) -> Result<()> {
        while !self.state_machine.read(&done) {
            if Instant::now() >= deadline {
                return Err(Error::DeadlineExceeded("this member did not apply the change before the deadline".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Waits until the state machine has applied `index`, or the deadline.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.raft.wait(Some(left)).applied_index_at_least(Some(index), "read index").await {
            Ok(_) => Ok(()),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(Error::DeadlineExceeded(
                "the state machine did not catch up with the read index before the deadline".into(),
            )),
            Err(openraft::metrics::WaitError::ShuttingDown) => {
                Err(Error::Unavailable("raft stopped while waiting for apply".into()))
            }
        }
    }
}

/// Parses gRPC's `grpc-timeout` header ("100m", "5S", ...).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    // The gRPC spec allows at most 8 digits.
    if num.is_empty() || num.len() > 8 {
        return None;
    }
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
        assert_eq!(parse_grpc_timeout("999999999H"), None, "more than 8 digits is invalid");
        assert_eq!(parse_grpc_timeout("99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
