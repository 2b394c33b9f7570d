//! `raftkv.v1.Cluster`: node status and dynamic membership.
//!
//! Status is answered locally (each node reports its own view — that is the point). Membership changes must
//! run on the leader; a follower forwards them. Adding a member makes it a learner (it receives the log or a
//! snapshot but does not vote); promoting turns a learner into a voter through openraft's joint consensus;
//! removing a voter demotes and drops it in one change.

use std::{
    collections::{BTreeMap, BTreeSet},
    pin::Pin,
    sync::Arc,
    time::Instant,
};

use futures::Stream;

use openraft::{
    error::{ClientWriteError, RaftError},
    ChangeMembers, EntryPayload, RaftLogReader, ServerState,
};
use raftkv_proto::{self as pb, cluster_client::ClusterClient, cluster_server::Cluster};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    kv::{forwarded, observed, Route},
    ApiContext,
};
use crate::{
    error::{Error, Result},
    raft::{Entry, Node, NodeId},
};

/// Default and largest page of `LogEntries`.
const LOG_PAGE_DEFAULT: u32 = 20;
const LOG_PAGE_MAX: u32 = 1000;
/// Most record bytes one `LogEntries` call reads and decodes (beyond the last entry of the page): any caller may
/// ask, so a page of large entries is cut short rather than costing up to 1000 × 64 MiB of memory.
const LOG_PAGE_MAX_BYTES: usize = 4 << 20;

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::NodeEvent, Status>> + Send>>;

/// How one log entry is shown to a person.
fn log_entry(e: &Entry, commit_index: u64) -> pb::LogEntry {
    let (kind, summary) = match &e.payload {
        EntryPayload::Blank => (pb::LogEntryKind::Blank, "no-op (new leader commits its term)".to_string()),
        EntryPayload::Normal(cmd) => (pb::LogEntryKind::Command, cmd.to_string()),
        EntryPayload::Membership(m) => {
            let voters: Vec<String> = m.get_joint_config().iter().map(|c| format!("{c:?}")).collect();
            let nodes: Vec<String> = m.nodes().map(|(id, n)| format!("{id}={n}")).collect();
            (
                pb::LogEntryKind::Membership,
                format!("membership: voters {} nodes {}", voters.join(" + "), nodes.join(",")),
            )
        }
    };
    pb::LogEntry {
        index: e.log_id.index,
        term: e.log_id.leader_id.term,
        leader_id: e.log_id.leader_id.node_id,
        kind: kind as i32,
        summary,
        committed: e.log_id.index <= commit_index,
    }
}

pub struct ClusterService {
    ctx: Arc<ApiContext>,
}

impl ClusterService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }
}

pub fn role(state: ServerState) -> pb::Role {
    match state {
        ServerState::Leader => pb::Role::Leader,
        ServerState::Follower => pb::Role::Follower,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Learner => pb::Role::Learner,
        ServerState::Shutdown => pb::Role::Shutdown,
    }
}

impl ApiContext {
    /// The members in the latest membership config this node knows (committed or not).
    pub fn members(&self) -> Vec<pb::Member> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        // During a joint change, voters are those of the target (last) configuration.
        let voters: BTreeSet<NodeId> = m.membership().get_joint_config().last().cloned().unwrap_or_default();
        m.membership()
            .nodes()
            .map(|(id, n)| pb::Member {
                id: *id,
                addr: self.network.client_addr_of(*id, Some(n)),
                voter: voters.contains(id),
                peer_addr: n.peer_addr.clone(),
            })
            .collect()
    }

    /// This node's full status.
    pub async fn status(&self) -> pb::StatusResponse {
        let m = self.raft.metrics().borrow().clone();
        let committed = self.raft.with_raft_state(|st| st.committed.map(|c| c.index)).await.ok().flatten();
        let commit_index = committed.unwrap_or(0).max(self.log_store.committed_index());
        let (applied, revision, keys) = self.state_machine.applied();
        let last_log_index = m.last_log_index.unwrap_or(0);
        // Only the last entry's log id is decoded, never its payload (status, /metrics and /readyz call this).
        let last_log_term = if m.last_log_index.is_some() {
            self.log_store.last_log_id().ok().flatten().map_or(0, |l| l.leader_id.term)
        } else {
            0
        };
        let leader_addr = m
            .current_leader
            .map(|l| self.network.client_addr_of(l, m.membership_config.membership().get_node(&l)))
            .unwrap_or_default();
        let replication = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.id)
                    .map(|(id, matched)| {
                        let mi = matched.map(|l| l.index);
                        pb::ReplicationProgress {
                            node_id: *id,
                            matched_index: mi.unwrap_or(0),
                            has_match: mi.is_some(),
                            lag: last_log_index.saturating_sub(mi.unwrap_or(0)),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let snapshot = m.snapshot;
        let contact = self.network.traffic.since_leader_contact();
        let config = self.raft.config();
        let peers = self
            .network
            .traffic
            .peers()
            .into_iter()
            .map(|(id, p)| pb::PeerTraffic {
                node_id: id,
                append_entries: p.append_entries,
                entries: p.entries,
                votes: p.votes,
                snapshot_chunks: p.snapshot_chunks,
                failures: p.failures,
                in_flight: p.in_flight,
                millis_since_answer: p.last_answer.map_or(0, |t| t.elapsed().as_millis() as u64),
                has_answer: p.last_answer.is_some(),
                last_error: p.last_error,
            })
            .collect();
        let leases = self.lessor.summary();
        pb::StatusResponse {
            header: Some(self.header(revision)),
            id: self.id,
            addr: self.addr.clone(),
            role: role(m.state) as i32,
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            leader_addr,
            voted_for: m.vote.leader_id.voted_for().unwrap_or(0),
            vote_committed: m.vote.committed,
            last_log_index,
            last_log_term,
            commit_index,
            applied_index: applied.map_or(0, |l| l.index),
            snapshot_index: snapshot.map_or(0, |l| l.index),
            snapshot_term: snapshot.map_or(0, |l| l.leader_id.term),
            purged_index: m.purged.map_or(0, |l| l.index),
            members: self.members(),
            replication,
            key_count: keys as u64,
            version: env!("CARGO_PKG_VERSION").to_string(),
            millis_since_quorum_ack: m.millis_since_quorum_ack.unwrap_or(0),
            millis_since_leader_contact: contact.map_or(0, |d| d.as_millis() as u64),
            has_leader_contact: contact.is_some(),
            election_timeout_min_ms: config.election_timeout_min,
            election_timeout_max_ms: config.election_timeout_max,
            peers,
            alarms: self.state_machine.alarms(),
            db_size: self.state_machine.size_bytes(),
            quota_backend_bytes: self.state_machine.quota().limit(),
            peer_addr: self.peer_addr.clone(),
            client_tls: self.network.client_channels.tls(),
            peer_tls: self.network.peer_channels.tls(),
            lease_count: leases.map_or(0, |(n, _)| n as u64),
            lease_soonest_expiry_ms: leases.and_then(|(_, d)| d).map_or(-1, |d| d.as_millis() as i64),
        }
    }

    fn cluster_client(&self, addr: &str) -> Result<ClusterClient<tonic::transport::Channel>> {
        Ok(ClusterClient::new(self.member_channel(addr)?))
    }

    fn membership_error(&self, e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> Error {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match (f.leader_id, f.leader_node) {
                (Some(id), n) if id != self.id => {
                    Error::NotLeader { leader_id: id, leader_addr: self.network.client_addr_of(id, n.as_ref()) }
                }
                _ => Error::NoLeader("no leader to run the membership change".into()),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Error::FailedPrecondition(e.to_string()),
            RaftError::Fatal(e) => Error::Unavailable(format!("raft stopped: {e}")),
        }
    }

    /// Runs a membership change here (leader) and returns the resulting member list.
    pub(crate) async fn change(
        &self,
        change: ChangeMembers<NodeId, Node>,
        deadline: Instant,
    ) -> Result<Vec<pb::Member>> {
        let left = deadline.saturating_duration_since(Instant::now());
        // openraft commits the joint configuration and then the final one from the caller's future: run it in its
        // own task so a client that gives up cannot leave the cluster in the joint configuration.
        let raft = self.raft.clone();
        let task = tokio::spawn(async move { raft.change_membership(change, false).await });
        match tokio::time::timeout(left, task).await {
            Ok(Ok(Ok(_))) => Ok(self.members()),
            Ok(Ok(Err(e))) => Err(self.membership_error(e)),
            Ok(Err(e)) => Err(Error::Internal(format!("membership change task: {e}"))),
            Err(_) => Err(Error::DeadlineExceeded(
                "membership change did not finish before the deadline; it continues in the background".into(),
            )),
        }
    }

    /// The last `limit` log entries up to `to` that this node still has (0 = up to its last entry).
    async fn log_entries(&self, to: u64, limit: u32) -> Result<pb::LogEntriesResponse> {
        let status = self.status().await;
        let limit = match limit {
            0 => LOG_PAGE_DEFAULT,
            n => n.min(LOG_PAGE_MAX),
        } as u64;
        let first = status.purged_index + 1;
        let last = if to == 0 { status.last_log_index } else { to.min(status.last_log_index) };
        let mut from = last.saturating_sub(limit - 1).max(first);
        // Bound the page by bytes before reading (the WAL's index knows each record's size): keep the newest
        // entries, start the page later.
        if from < last {
            from = self.log_store.wal().newest_start_within(from, last + 1, LOG_PAGE_MAX_BYTES);
        }
        let entries = if status.last_log_index == 0 || last < from {
            Vec::new()
        } else {
            let mut reader = self.log_store.clone();
            // Racing a purge (snapshot + compaction) can fail the read; the caller just asks again.
            reader
                .try_get_log_entries(from..=last)
                .await
                .map_err(|e| Error::Unavailable(format!("reading the log: {e}")))?
                .iter()
                .map(|e| log_entry(e, status.commit_index))
                .collect()
        };
        Ok(pb::LogEntriesResponse {
            header: status.header,
            entries,
            first_index: first,
            last_index: status.last_log_index,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
        })
    }

    /// Removes member `id` (a voter is demoted and dropped in one step); refuses to remove the last voter.
    pub(crate) async fn remove_member(&self, id: NodeId, deadline: Instant) -> Result<()> {
        let m = self.member(id)?;
        if m.voter {
            if self.members().iter().filter(|m| m.voter).count() <= 1 {
                return Err(Error::FailedPrecondition("cannot remove the last voter".into()));
            }
            self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id])), deadline).await?;
        } else {
            self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id])), deadline).await?;
        }
        Ok(())
    }

    /// Makes learner `id` a voter.
    pub(crate) async fn promote_learner(&self, id: NodeId, deadline: Instant) -> Result<Vec<pb::Member>> {
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])), deadline).await
    }

    pub(crate) fn member(&self, id: NodeId) -> Result<pb::Member> {
        self.members().into_iter().find(|m| m.id == id).ok_or(Error::UnknownMember(id))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    type EventsStream = EventStream;

    async fn log_entries(
        &self,
        req: Request<pb::LogEntriesRequest>,
    ) -> Result<Response<pb::LogEntriesResponse>, Status> {
        let ctx = &self.ctx;
        let msg = req.into_inner();
        observed(ctx, "LogEntries", ctx.log_entries(msg.to, msg.limit)).await
    }

    async fn events(&self, req: Request<pb::EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        let ctx = self.ctx.clone();
        let msg = req.into_inner();
        let res = observed(&self.ctx, "Events", async move {
            let (past, mut live) = ctx.events.subscribe(msg.incarnation, msg.after_seq);
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(async move {
                for e in past {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                loop {
                    let next = tokio::select! {
                        n = live.recv() => n,
                        _ = tx.closed() => return,
                        // Ending the stream lets the graceful shutdown finish; the client reconnects elsewhere.
                        _ = ctx.shutting_down() => return,
                    };
                    let item = match next {
                        Ok(e) => Ok(e),
                        // A subscriber this slow lost events: say so (it can resubscribe with its last seq).
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => Err(Error::Unavailable(format!(
                            "the event stream fell {n} events behind; resubscribe with after_seq"
                        ))
                        .into_status()),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    let stop = item.is_err();
                    if tx.send(item).await.is_err() || stop {
                        return;
                    }
                }
            });
            Ok(Box::pin(ReceiverStream::new(rx)) as EventStream)
        })
        .await;
        res
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "Status", async { Ok(ctx.status().await) }).await
    }

    async fn member_list(
        &self,
        _req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "MemberList", async {
            let revision = ctx.state_machine.applied().1;
            Ok(pb::MemberListResponse { header: Some(ctx.header(revision)), members: ctx.members() })
        })
        .await
    }

    async fn member_add(&self, req: Request<pb::MemberAddRequest>) -> Result<Response<pb::MemberAddResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "MemberAdd", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            if msg.id == 0 {
                return Err(Error::InvalidArgument("member id must be a positive integer".into()));
            }
            crate::config::validate_addr(&msg.peer_addr)
                .map_err(|e| Error::InvalidArgument(format!("peer_addr: {e}")))?;
            if !msg.addr.is_empty() {
                crate::config::validate_addr(&msg.addr).map_err(|e| Error::InvalidArgument(format!("addr: {e}")))?;
            }
            if let Route::Leader(addr) = route {
                let r = ctx.cluster_client(&addr)?.member_add(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            if let Ok(existing) = ctx.member(msg.id) {
                return Err(Error::FailedPrecondition(format!(
                    "member {} already exists (at peer {}, client {}, {})",
                    existing.id,
                    existing.peer_addr,
                    existing.addr,
                    if existing.voter { "voter" } else { "learner" }
                )));
            }
            // The address must prove it is a peer (peer TLS certificate, or the secret's challenge) before it is
            // added: the leader would otherwise send the log to whatever address a client named.
            let left = deadline.saturating_duration_since(Instant::now());
            let hello = ctx.network.hello(msg.id, &msg.peer_addr, left.min(std::time::Duration::from_secs(3))).await;
            match hello {
                Ok(info) if info.node_id == msg.id => {}
                Ok(info) => {
                    return Err(Error::FailedPrecondition(format!(
                        "{} answers as node {}, not node {}",
                        msg.peer_addr, info.node_id, msg.id
                    )))
                }
                Err(e) => {
                    return Err(Error::FailedPrecondition(format!(
                        "node {} at peer address {} did not prove to be a peer, so it was not added: {e}",
                        msg.id, msg.peer_addr
                    )))
                }
            }
            let node = Node { addr: msg.addr.clone(), peer_addr: msg.peer_addr.clone() };
            let change = ChangeMembers::AddNodes(BTreeMap::from([(msg.id, node)]));
            let members = ctx.change(change, deadline).await?;
            tracing::info!(id = msg.id, peer_addr = %msg.peer_addr, addr = %msg.addr, "added learner");
            Ok(pb::MemberAddResponse { header: Some(ctx.header(ctx.state_machine.applied().1)), members })
        })
        .await
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "MemberPromote", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            if let Route::Leader(addr) = route {
                let r = ctx.cluster_client(&addr)?.member_promote(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            if ctx.member(msg.id)?.voter {
                return Err(Error::FailedPrecondition(format!("member {} is already a voter", msg.id)));
            }
            let members = ctx.promote_learner(msg.id, deadline).await?;
            tracing::info!(id = msg.id, "promoted learner to voter");
            Ok(pb::MemberPromoteResponse { header: Some(ctx.header(ctx.state_machine.applied().1)), members })
        })
        .await
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "MemberRemove", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            if let Route::Leader(addr) = route {
                let r = ctx.cluster_client(&addr)?.member_remove(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            ctx.remove_member(msg.id, deadline).await?;
            tracing::info!(id = msg.id, "removed member");
            Ok(pb::MemberRemoveResponse {
                header: Some(ctx.header(ctx.state_machine.applied().1)),
                members: ctx.members(),
            })
        })
        .await
    }
}
