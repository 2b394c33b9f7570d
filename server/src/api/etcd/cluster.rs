//! etcd's `Cluster` service: MemberList from the Raft membership (ids, peer and client URLs, learner flag).
//!
//! Membership changes go through raftkv's own `raftkv members ...` for now (the native `Cluster` service); the
//! etcd methods for them answer UNIMPLEMENTED rather than half-working.

use std::sync::Arc;

use raftkv_proto::etcd::{self as pb, cluster_server::Cluster};
use tonic::{Request, Response, Status};

use super::observed;
use crate::api::ApiContext;

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
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("{what} through etcd's API is not implemented yet; use `raftkv members`"))
}

#[tonic::async_trait]
impl Cluster for EtcdClusterService {
    async fn member_add(&self, _: Request<pb::MemberAddRequest>) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(not_yet("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(not_yet("MemberRemove"))
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(not_yet("MemberUpdate"))
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
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(not_yet("MemberPromote"))
    }
}
