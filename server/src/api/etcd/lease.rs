//! etcd's `Lease` service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases — the lease
//! operations of [`crate::api::lease`], answered with etcd's messages and errors.
//!
//! As in etcd, grants, revokes and time-to-live questions are answered by the leader (a follower forwards them);
//! each renewal on a keep-alive stream is forwarded to the leader by the member the stream is open on, and a
//! renewal of a lease that does not exist (revoked, expired) answers TTL 0 rather than an error.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use raftkv_proto::etcd::{self as pb, lease_client::LeaseClient, lease_server::Lease};
use tonic::{transport::Channel, Request, Response, Status, Streaming};

use super::observed;
use crate::{
    api::{
        kv::{forwarded, Route},
        lease::keep_alive_stream,
        ApiContext,
    },
    error::{Error, Result},
};

pub struct EtcdLeaseService {
    ctx: Arc<ApiContext>,
}

impl EtcdLeaseService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }
}

impl ApiContext {
    fn etcd_lease_client(&self, addr: &str) -> Result<LeaseClient<Channel>> {
        Ok(LeaseClient::new(self.member_channel(addr)?))
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for EtcdLeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.LeaseGrant", async {
            let deadline = ctx.deadline(&req);
            if let Route::Leader(addr) = ctx.route(&req) {
                let r =
                    ctx.etcd_lease_client(&addr)?.lease_grant(ctx.forward_request(req.into_inner(), deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let msg = req.into_inner();
            let (id, ttl, revision) = ctx.grant_lease(msg.id, msg.ttl, deadline).await?;
            Ok(pb::LeaseGrantResponse { header: Some(ctx.etcd_header(revision)), id, ttl, error: String::new() })
        })
        .await
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.LeaseRevoke", async {
            let deadline = ctx.deadline(&req);
            if let Route::Leader(addr) = ctx.route(&req) {
                let r =
                    ctx.etcd_lease_client(&addr)?.lease_revoke(ctx.forward_request(req.into_inner(), deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let revision = ctx.revoke_lease(req.into_inner().id, deadline).await?;
            Ok(pb::LeaseRevokeResponse { header: Some(ctx.etcd_header(revision)) })
        })
        .await
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let answer = |ctx: &ApiContext, id, ttl: Result<i64>| {
            let ttl = ttl.map_err(Error::into_etcd_status)?;
            let revision = ctx.state_machine.read(|ks| ks.revision());
            Ok(pb::LeaseKeepAliveResponse { header: Some(ctx.etcd_header(revision)), id, ttl })
        };
        Ok(Response::new(keep_alive_stream(self.ctx.clone(), req.into_inner(), |r| r.id, answer)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.LeaseTimeToLive", async {
            let deadline = ctx.deadline(&req);
            if let Route::Leader(addr) = ctx.route(&req) {
                let fwd = ctx.forward_request(req.into_inner(), deadline);
                let r = ctx.etcd_lease_client(&addr)?.lease_time_to_live(fwd).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let msg = req.into_inner();
            let s = ctx.lease_time_to_live(msg.id, msg.keys, deadline).await?;
            let revision = ctx.state_machine.read(|ks| ks.revision());
            Ok(pb::LeaseTimeToLiveResponse {
                header: Some(ctx.etcd_header(revision)),
                id: msg.id,
                ttl: s.ttl,
                granted_ttl: s.granted_ttl,
                keys: s.keys,
            })
        })
        .await
    }

    async fn lease_leases(
        &self,
        req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.LeaseLeases", async {
            let deadline = ctx.deadline(&req);
            if let Route::Leader(addr) = ctx.route(&req) {
                let r =
                    ctx.etcd_lease_client(&addr)?.lease_leases(ctx.forward_request(req.into_inner(), deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let ids = ctx.lease_ids(deadline).await?;
            let revision = ctx.state_machine.read(|ks| ks.revision());
            Ok(pb::LeaseLeasesResponse {
                header: Some(ctx.etcd_header(revision)),
                leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
            })
        })
        .await
    }
}
