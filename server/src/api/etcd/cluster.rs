//! etcd's `Cluster` service over the Raft membership: MemberList (ids, peer and client URLs, learner flag),
//! MemberAdd, MemberRemove, MemberPromote, MemberUpdate.
//!
//! MemberAdd follows etcd's order — add first, then start the member — and the server picks the id (one more
//! than the largest). raftkv adds members as learners only (`etcdctl member add --learner`): adding a voter that
//! is not running yet would raise the quorum before it can vote. The new member is then started with that id and
//! `--join`, and promoted once it has caught up (MemberPromote refuses before, with etcd's message).
//! MemberUpdate moves a member to a new peer address once the member has answered there as itself (peer TLS or
//! the secret's challenge), so a mistyped address cannot cut a voter off.

use std::{collections::BTreeMap, sync::Arc};

use openraft::ChangeMembers;
use raftkv_proto::etcd::{self as pb, cluster_client::ClusterClient, cluster_server::Cluster};
use tonic::{transport::Channel, Request, Response, Status};

use super::observed;
use crate::{
    api::{
        kv::{forwarded, Route},
        ApiContext,
    },
    error::{Error, EtcdError, Result},
    raft::Node,
};

pub struct EtcdClusterService {
    ctx: Arc<ApiContext>,
}

impl EtcdClusterService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }
}

/// A URL for an address, with the scheme its port speaks.
fn url(addr: &str, tls: bool) -> String {
    format!("{}://{addr}", if tls { "https" } else { "http" })
}

/// `http://host:port` (or `https://`, or a bare `host:port`) → `host:port`.
fn peer_addr_of(url: &str) -> Result<String> {
    let addr = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
    let addr = addr.trim_end_matches('/');
    crate::config::validate_addr(addr).map_err(|_| Error::Etcd(EtcdError::MemberBadUrls))?;
    Ok(addr.to_string())
}

impl ApiContext {
    /// The members as etcd lists them. raftkv members have no names of their own: the name is the id.
    pub(crate) fn etcd_members(&self) -> Vec<pb::Member> {
        let client_tls = self.network.client_channels.tls();
        let peer_tls = self.network.peer_channels.tls();
        self.members()
            .into_iter()
            .map(|m| pb::Member {
                id: m.id,
                name: m.id.to_string(),
                peer_ur_ls: vec![url(&m.peer_addr, peer_tls)],
                client_ur_ls: if m.addr.is_empty() { vec![] } else { vec![url(&m.addr, client_tls)] },
                is_learner: !m.voter,
            })
            .collect()
    }

    fn etcd_cluster_client(&self, addr: &str) -> Result<ClusterClient<Channel>> {
        Ok(ClusterClient::new(self.member_channel(addr)?))
    }

    /// Whether learner `id` has caught up enough to vote (etcd's rule: within a tenth of the leader's log).
    fn learner_ready(&self, id: u64) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index);
        matched.is_some_and(|i| i * 10 >= last * 9)
    }
}

#[tonic::async_trait]
impl Cluster for EtcdClusterService {
    async fn member_add(&self, req: Request<pb::MemberAddRequest>) -> Result<Response<pb::MemberAddResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.MemberAdd", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            let [peer_url] = msg.peer_ur_ls.as_slice() else { return Err(Error::Etcd(EtcdError::MemberBadUrls)) };
            let peer_addr = peer_addr_of(peer_url)?;
            if !msg.is_learner {
                return Err(Error::FailedPrecondition(
                    "raftkv adds members as learners only (etcdctl member add --learner): start the member with \
                     the id this returns and --join, then promote it once it has caught up"
                        .into(),
                ));
            }
            if let Route::Leader(addr) = route {
                let r = ctx.etcd_cluster_client(&addr)?.member_add(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let members = ctx.members();
            if members.iter().any(|m| m.peer_addr == peer_addr) {
                return Err(Error::Etcd(EtcdError::PeerUrlExist));
            }
            let id = members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
            let node = Node { addr: String::new(), peer_addr: peer_addr.clone() };
            ctx.change(ChangeMembers::AddNodes(BTreeMap::from([(id, node)])), deadline).await?;
            tracing::info!(id, %peer_addr, "added learner through etcd's MemberAdd; start it with --id {id} --join");
            let members = ctx.etcd_members();
            let member = members.iter().find(|m| m.id == id).cloned();
            Ok(pb::MemberAddResponse { header: Some(ctx.etcd_header(ctx.state_machine.applied().1)), member, members })
        })
        .await
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.MemberRemove", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            if let Route::Leader(addr) = route {
                let r = ctx.etcd_cluster_client(&addr)?.member_remove(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            ctx.remove_member(msg.id, deadline).await?;
            tracing::info!(id = msg.id, "removed member through etcd's MemberRemove");
            Ok(pb::MemberRemoveResponse {
                header: Some(ctx.etcd_header(ctx.state_machine.applied().1)),
                members: ctx.etcd_members(),
            })
        })
        .await
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.MemberUpdate", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            let [peer_url] = msg.peer_ur_ls.as_slice() else { return Err(Error::Etcd(EtcdError::MemberBadUrls)) };
            let peer_addr = peer_addr_of(peer_url)?;
            if let Route::Leader(addr) = route {
                let r = ctx.etcd_cluster_client(&addr)?.member_update(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let m = ctx.member(msg.id).map_err(|_| Error::Etcd(EtcdError::MemberNotFound))?;
            if ctx.members().iter().any(|o| o.id != msg.id && o.peer_addr == peer_addr) {
                return Err(Error::Etcd(EtcdError::PeerUrlExist));
            }
            if m.peer_addr != peer_addr {
                // The member must answer there first: a typo must not cut a voter off from the cluster.
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let hello = ctx.network.hello(msg.id, &peer_addr, left.min(std::time::Duration::from_secs(3))).await;
                match hello {
                    Ok(info) if info.node_id == msg.id => {}
                    Ok(info) => {
                        return Err(Error::FailedPrecondition(format!(
                            "{peer_addr} answers as node {}, not node {}",
                            info.node_id, msg.id
                        )))
                    }
                    Err(e) => {
                        return Err(Error::FailedPrecondition(format!(
                            "member {} does not answer at {peer_addr}, so its address was not changed: {e}",
                            msg.id
                        )))
                    }
                }
                let node = Node { addr: m.addr.clone(), peer_addr: peer_addr.clone() };
                ctx.change(ChangeMembers::SetNodes(BTreeMap::from([(msg.id, node)])), deadline).await?;
                tracing::info!(id = msg.id, %peer_addr, "changed a member's peer address through etcd's MemberUpdate");
            }
            Ok(pb::MemberUpdateResponse {
                header: Some(ctx.etcd_header(ctx.state_machine.applied().1)),
                members: ctx.etcd_members(),
            })
        })
        .await
    }

    async fn member_list(&self, _: Request<pb::MemberListRequest>) -> Result<Response<pb::MemberListResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.MemberList", async {
            let revision = ctx.state_machine.applied().1;
            Ok(pb::MemberListResponse { header: Some(ctx.etcd_header(revision)), members: ctx.etcd_members() })
        })
        .await
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.MemberPromote", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            if let Route::Leader(addr) = route {
                let r = ctx.etcd_cluster_client(&addr)?.member_promote(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let m = ctx.member(msg.id).map_err(|_| Error::Etcd(EtcdError::MemberNotFound))?;
            if m.voter {
                return Err(Error::Etcd(EtcdError::MemberNotLearner));
            }
            if !ctx.learner_ready(msg.id) {
                return Err(Error::Etcd(EtcdError::LearnerNotReady));
            }
            ctx.promote_learner(msg.id, deadline).await?;
            tracing::info!(id = msg.id, "promoted learner through etcd's MemberPromote");
            Ok(pb::MemberPromoteResponse {
                header: Some(ctx.etcd_header(ctx.state_machine.applied().1)),
                members: ctx.etcd_members(),
            })
        })
        .await
    }
}
