//! `raftkv.v1.Lease`, and the lease operations both front doors share ([`ApiContext::grant_lease`] and the rest).
//!
//! Grants and revokes are replicated commands, proposed on the leader (a follower forwards the request, once).
//! Renewals and time-to-live questions need the lease timers, which run only on the leader ([`crate::lessor`]):
//! a follower forwards each renewal to the leader, and retries it (a renewal is idempotent) until its deadline
//! when the leader changes under it — so a client keeping a lease alive through a follower rides out a failover.

use std::{pin::Pin, sync::Arc, time::Instant};

use futures::{Stream, StreamExt};
use raftkv_proto::{self as pb, lease_client::LeaseClient, lease_server::Lease};
use rand::Rng;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Request, Response, Status, Streaming};

use super::{
    kv::{forwarded, observed, Route},
    ApiContext,
};
use crate::{
    error::{Error, EtcdError, Result},
    lessor::Renewed,
    raft::{Command, CommandResponse},
};

/// What `LeaseTimeToLive` answers.
pub struct LeaseStatus {
    /// Seconds left (rounded down); -1 = no such lease.
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Vec<u8>>,
}

impl ApiContext {
    /// The term this node leads and has applied an entry of (so it has applied every earlier leader's commits).
    pub fn ready_leader_term(&self) -> Option<u64> {
        let vote = self.log_store.stored_vote()?;
        let m = self.raft.metrics();
        let m = m.borrow();
        let own_term_applied = m.last_applied.is_some_and(|l| l.leader_id == *vote.leader_id());
        (m.current_leader == Some(self.id) && vote.is_committed() && own_term_applied).then(|| vote.leader_id().term)
    }

    /// Waits until this node's lease timers run, returning their term; [`Error::NotLeader`] if another leads.
    async fn lease_timers(&self, deadline: Instant) -> Result<u64> {
        loop {
            if let (Some(t), Some(ready)) = (self.lessor.term(), self.ready_leader_term()) {
                if t == ready {
                    return Ok(t);
                }
            }
            if let Some(e) = self.not_leader(self.raft.metrics().borrow().current_leader, None) {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader("no leader with running lease timers before the deadline".into()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Grants a lease of `ttl` seconds (raised to the minimum) with `id` (0 = pick one). Returns (id, ttl, revision).
    pub async fn grant_lease(&self, id: i64, ttl: i64, deadline: Instant) -> Result<(i64, i64, i64)> {
        if ttl > crate::lease::MAX_TTL {
            return Err(Error::Etcd(EtcdError::LeaseTtlTooLarge));
        }
        let ttl = ttl.max(self.lessor.min_ttl());
        let id = match id {
            0 => loop {
                // A positive 63-bit id, picked here so that applying the grant is deterministic.
                let id = rand::rng().random_range(1..=i64::MAX);
                if self.state_machine.read(|ks| ks.lease(id).is_none()) {
                    break id;
                }
            },
            id => id,
        };
        match self.write(Command::LeaseGrant { id, ttl }, deadline).await? {
            CommandResponse::Lease { result: Ok(()), revision } => {
                self.metrics.leases_granted.inc();
                Ok((id, ttl, revision))
            }
            CommandResponse::Lease { result: Err(_), .. } => Err(Error::Etcd(EtcdError::LeaseExist)),
            other => Err(Error::Internal(format!("unexpected response to a lease grant: {other:?}"))),
        }
    }

    /// Revokes a lease, deleting its keys at one revision; returns the revision after it.
    pub async fn revoke_lease(&self, id: i64, deadline: Instant) -> Result<i64> {
        match self.write(Command::LeaseRevoke { id }, deadline).await? {
            CommandResponse::Lease { result: Ok(()), revision } => {
                self.metrics.leases_revoked.inc();
                Ok(revision)
            }
            CommandResponse::Lease { result: Err(_), .. } => Err(Error::Etcd(EtcdError::LeaseNotFound)),
            other => Err(Error::Internal(format!("unexpected response to a lease revoke: {other:?}"))),
        }
    }

    /// Renews a lease on the leader, wherever this node is: returns the TTL renewed for, or 0 if the lease does
    /// not exist. `forwarded`: the request came from another member (answer here or fail, never forward again).
    pub async fn renew_lease(&self, id: i64, deadline: Instant, forwarded_here: bool) -> Result<i64> {
        loop {
            let err = match self.renew_here(id, deadline).await {
                Ok(ttl) => return Ok(ttl),
                Err(Error::NotLeader { leader_addr, .. }) if !forwarded_here && !leader_addr.is_empty() => {
                    // A leader that does not answer within two election timeouts (paused, partitioned, dead) is
                    // likely replaced by then: ask again who leads rather than spend the whole deadline on it.
                    let attempt = deadline.min(Instant::now() + self.lessor.election_timeout() * 2);
                    let req = self.forward_request(pb::LeaseKeepAliveRequest { id }, attempt);
                    let mut leader = self.lease_client(&leader_addr)?;
                    match tokio::time::timeout_at(attempt.into(), leader.keep_alive_once(req)).await {
                        Ok(Ok(r)) => return Ok(r.into_inner().ttl),
                        Ok(Err(s)) => forwarded(s, &leader_addr),
                        Err(_) => Error::Unavailable(format!("the leader at {leader_addr} did not answer in time")),
                    }
                }
                Err(e) => e,
            };
            // A renewal is idempotent: retry through whoever leads now, until the deadline.
            let retry = !forwarded_here
                && !matches!(err, Error::Etcd(_) | Error::Fatal(_))
                && deadline.saturating_duration_since(Instant::now()) > std::time::Duration::from_millis(100);
            if !retry {
                return Err(err);
            }
            tracing::debug!(lease = format!("{id:x}"), "renewal retried: {err}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn renew_here(&self, id: i64, deadline: Instant) -> Result<i64> {
        let term = self.lease_timers(deadline).await?;
        // The renewal must see every revoke committed before it arrived.
        self.read_barrier(deadline).await?;
        let lease = self.state_machine.read(|ks| ks.lease(id).map(|l| (l.ttl, l.remaining_ms.is_some())));
        match self.lessor.renew(term, id, lease) {
            Renewed::Ttl { ttl, clear_checkpoint } => {
                if clear_checkpoint {
                    // Else a new leader would start the lease from a remaining time older than this renewal.
                    self.write(Command::LeaseCheckpoint { checkpoints: vec![(id, None)] }, deadline).await?;
                }
                self.metrics.lease_keepalives.inc();
                Ok(ttl)
            }
            Renewed::NotFound => Ok(0),
            Renewed::NotReady => Err(Error::NoLeader("leadership changed during the renewal".into())),
        }
    }

    /// A lease's remaining and granted TTL and (with `keys`) its keys; this node must lead.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool, deadline: Instant) -> Result<LeaseStatus> {
        let term = self.lease_timers(deadline).await?;
        self.read_barrier(deadline).await?;
        let found = self
            .state_machine
            .read(|ks| ks.lease(id).map(|l| (l.ttl, if keys { l.keys.iter().cloned().collect() } else { Vec::new() })));
        let Some((granted_ttl, keys)) = found else {
            return Ok(LeaseStatus { ttl: -1, granted_ttl: 0, keys: Vec::new() });
        };
        let ttl = match self.lessor.remaining(term, id) {
            None => return Err(Error::NoLeader("leadership changed during the request".into())),
            Some(Some(left)) => left.as_secs() as i64,
            Some(None) => granted_ttl, // granted a moment ago: its timer starts at the next tick
        };
        Ok(LeaseStatus { ttl, granted_ttl, keys })
    }

    /// Every lease's id (linearizable unless `serializable`).
    pub async fn lease_ids(&self, deadline: Instant) -> Result<Vec<i64>> {
        self.read_barrier(deadline).await?;
        Ok(self.state_machine.read(|ks| ks.leases().iter().map(|(id, _)| id).collect()))
    }

    fn lease_client(&self, addr: &str) -> Result<LeaseClient<Channel>> {
        Ok(LeaseClient::new(self.member_channel(addr)?))
    }
}

pub struct LeaseService {
    ctx: Arc<ApiContext>,
}

impl LeaseService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

/// Answers each renewal of a keep-alive stream in order, until the client closes it or the node stops.
/// `answer` maps (id, TTL or error) to the front door's response.
pub(crate) fn keep_alive_stream<Req, Resp>(
    ctx: Arc<ApiContext>,
    mut requests: Streaming<Req>,
    id_of: fn(&Req) -> i64,
    answer: fn(&ApiContext, i64, Result<i64>) -> Result<Resp, Status>,
) -> Pin<Box<dyn Stream<Item = Result<Resp, Status>> + Send>>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                r = requests.next() => r,
                _ = ctx.shutting_down() => None,
            };
            let Some(Ok(req)) = next else { return };
            let id = id_of(&req);
            let deadline = Instant::now() + ctx.default_timeout;
            let forwarded_here = false;
            let ttl = ctx.renew_lease(id, deadline, forwarded_here).await;
            let failed = ttl.is_err();
            if tx.send(answer(&ctx, id, ttl)).await.is_err() || failed {
                return; // the client left, or this renewal failed: the stream ends with its error
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn grant(&self, req: Request<pb::LeaseGrantRequest>) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "LeaseGrant", async {
            let deadline = ctx.deadline(&req);
            if let Route::Leader(addr) = ctx.route(&req) {
                let r = ctx.lease_client(&addr)?.grant(ctx.forward_request(req.into_inner(), deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let msg = req.into_inner();
            let (id, ttl, revision) = ctx.grant_lease(msg.id, msg.ttl, deadline).await?;
            Ok(pb::LeaseGrantResponse { header: Some(ctx.header(revision)), id, ttl })
        })
        .await
    }

    async fn revoke(&self, req: Request<pb::LeaseRevokeRequest>) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "LeaseRevoke", async {
            let deadline = ctx.deadline(&req);
            if let Route::Leader(addr) = ctx.route(&req) {
                let r = ctx.lease_client(&addr)?.revoke(ctx.forward_request(req.into_inner(), deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let revision = ctx.revoke_lease(req.into_inner().id, deadline).await?;
            Ok(pb::LeaseRevokeResponse { header: Some(ctx.header(revision)) })
        })
        .await
    }

    type KeepAliveStream = KeepAliveStream;

    async fn keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let answer = |ctx: &ApiContext, id, ttl: Result<i64>| {
            let ttl = ttl.map_err(Error::into_status)?;
            let revision = ctx.state_machine.read(|ks| ks.revision());
            Ok(pb::LeaseKeepAliveResponse { header: Some(ctx.header(revision)), id, ttl })
        };
        let stream = keep_alive_stream(self.ctx.clone(), req.into_inner(), |r| r.id, answer);
        Ok(Response::new(stream))
    }

    async fn keep_alive_once(
        &self,
        req: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "LeaseKeepAliveOnce", async {
            let deadline = ctx.deadline(&req);
            let forwarded_here = req.metadata().contains_key(super::FORWARDED);
            let id = req.into_inner().id;
            let ttl = ctx.renew_lease(id, deadline, forwarded_here).await?;
            let revision = ctx.state_machine.read(|ks| ks.revision());
            Ok(pb::LeaseKeepAliveResponse { header: Some(ctx.header(revision)), id, ttl })
        })
        .await
    }

    async fn time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "LeaseTimeToLive", async {
            let deadline = ctx.deadline(&req);
            if let Route::Leader(addr) = ctx.route(&req) {
                let r = ctx.lease_client(&addr)?.time_to_live(ctx.forward_request(req.into_inner(), deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let msg = req.into_inner();
            let s = ctx.lease_time_to_live(msg.id, msg.keys, deadline).await?;
            let revision = ctx.state_machine.read(|ks| ks.revision());
            Ok(pb::LeaseTimeToLiveResponse {
                header: Some(ctx.header(revision)),
                id: msg.id,
                ttl: s.ttl,
                granted_ttl: s.granted_ttl,
                keys: s.keys,
            })
        })
        .await
    }

    async fn leases(&self, req: Request<pb::LeaseLeasesRequest>) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "LeaseLeases", async {
            let deadline = ctx.deadline(&req);
            if let Route::Leader(addr) = ctx.route(&req) {
                let r = ctx.lease_client(&addr)?.leases(ctx.forward_request(req.into_inner(), deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let ids = ctx.lease_ids(deadline).await?;
            let revision = ctx.state_machine.read(|ks| ks.revision());
            Ok(pb::LeaseLeasesResponse { header: Some(ctx.header(revision)), ids })
        })
        .await
    }
}
