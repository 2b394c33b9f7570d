//! etcd's `Lease` service. raftkv has no leases yet (they come with their own issue): every call answers
//! UNIMPLEMENTED, and a put naming a lease is refused with etcd's `requested lease not found` (see
//! [`super::convert`]), so nothing is ever stored as if it had a lease.

use std::pin::Pin;

use futures::Stream;
use raftkv_proto::etcd::{self as pb, lease_server::Lease};
use tonic::{Request, Response, Status, Streaming};

pub struct EtcdLeaseService;

fn no_leases() -> Status {
    Status::unimplemented("raftkv does not implement leases yet")
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for EtcdLeaseService {
    async fn lease_grant(&self, _: Request<pb::LeaseGrantRequest>) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        Err(no_leases())
    }

    async fn lease_revoke(
        &self,
        _: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        Err(no_leases())
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        _: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        Err(no_leases())
    }

    async fn lease_time_to_live(
        &self,
        _: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        Err(no_leases())
    }

    async fn lease_leases(
        &self,
        _: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        Err(no_leases())
    }
}
