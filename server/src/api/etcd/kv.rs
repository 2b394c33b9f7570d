//! etcd's `KV` service: Range, Put, DeleteRange, Txn — the same commands and reads as `raftkv.v1.KV`.
//!
//! Writes are proposed on the leader (a follower forwards them, once); Range is linearizable unless
//! `serializable`, and reads at a past revision from the MVCC history; Compact is a replicated command, applied by
//! every member at the same log position.

use std::sync::Arc;

use raftkv_proto::etcd::{self as pb, kv_client::KvClient, kv_server::Kv};
use tonic::{transport::Channel, Request, Response, Status};

use super::{convert, observed};
use crate::{
    api::{
        kv::{forwarded, Route},
        ApiContext,
    },
    error::{Error, EtcdError, Result},
    keyspace::TxnOpResponse,
    raft::{Command, CommandResponse},
};

pub struct EtcdKvService {
    ctx: Arc<ApiContext>,
}

impl EtcdKvService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }
}

impl ApiContext {
    fn etcd_kv_client(&self, addr: &str) -> Result<KvClient<Channel>> {
        Ok(KvClient::new(self.member_channel(addr)?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }
}

/// Maps a refused transaction to etcd's error.
fn refused(resp: &CommandResponse) -> Option<Error> {
    match resp {
        CommandResponse::TxnRefused { reason, .. } => Some(crate::api::kv::refused(reason, convert::revision_error)),
        _ => None,
    }
}

#[tonic::async_trait]
impl Kv for EtcdKvService {
    async fn range(&self, req: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.Range", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            let query = convert::range_query(&ctx.limits, &msg)?;
            if !msg.serializable && !ctx.unsafe_local_reads {
                if let Route::Leader(addr) = route {
                    let r = ctx.etcd_kv_client(&addr)?.range(ctx.forward_request(msg, deadline)).await;
                    return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
                }
                ctx.read_barrier(deadline).await?;
            }
            let (result, current) = ctx.state_machine.read(|ks| (ks.range_at(&query, query.revision), ks.revision()));
            Ok(convert::range_response(ctx.etcd_header(current), result.map_err(convert::revision_error)?))
        })
        .await
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.Put", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            let cmd = convert::put_command(&ctx.limits, msg.clone())?;
            if let Route::Leader(addr) = route {
                let r = ctx.etcd_kv_client(&addr)?.put(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let resp = ctx.write(cmd, deadline).await?;
            if let Some(e) = refused(&resp) {
                return Err(e);
            }
            match resp {
                CommandResponse::Put { revision, prev_kv } => {
                    Ok(pb::PutResponse { header: Some(ctx.etcd_header(revision)), prev_kv: prev_kv.map(convert::kv) })
                }
                // A put with ignore_value runs as a one-op transaction.
                CommandResponse::Txn { revision, mut responses, .. } => match responses.pop() {
                    Some(TxnOpResponse::Put { prev_kv, .. }) => Ok(pb::PutResponse {
                        header: Some(ctx.etcd_header(revision)),
                        prev_kv: prev_kv.map(convert::kv),
                    }),
                    other => Err(Error::Internal(format!("unexpected response to put: {other:?}"))),
                },
                other => Err(Error::Internal(format!("unexpected response to put: {other:?}"))),
            }
        })
        .await
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.DeleteRange", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            let cmd = convert::delete_command(&ctx.limits, msg.clone())?;
            if let Route::Leader(addr) = route {
                let r = ctx.etcd_kv_client(&addr)?.delete_range(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            match ctx.write(cmd, deadline).await? {
                CommandResponse::Delete { revision, deleted, prev_kvs } => Ok(pb::DeleteRangeResponse {
                    header: Some(ctx.etcd_header(revision)),
                    deleted,
                    prev_kvs: prev_kvs.into_iter().map(convert::kv).collect(),
                }),
                other => Err(Error::Internal(format!("unexpected response to delete: {other:?}"))),
            }
        })
        .await
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.Txn", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            let cmd = convert::txn_command(&ctx.limits, msg.clone())?;
            if let Route::Leader(addr) = route {
                let r = ctx.etcd_kv_client(&addr)?.txn(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            let resp = ctx.write(cmd, deadline).await?;
            if let Some(e) = refused(&resp) {
                return Err(e);
            }
            match resp {
                CommandResponse::Txn { revision, succeeded, responses } => Ok(pb::TxnResponse {
                    header: Some(ctx.etcd_header(revision)),
                    succeeded,
                    responses: convert::txn_responses(responses),
                }),
                other => Err(Error::Internal(format!("unexpected response to txn: {other:?}"))),
            }
        })
        .await
    }

    async fn compact(&self, req: Request<pb::CompactionRequest>) -> Result<Response<pb::CompactionResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.Compact", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            if let Route::Leader(addr) = route {
                let revision = msg.revision;
                let r = ctx.etcd_kv_client(&addr)?.compact(ctx.forward_request(msg, deadline)).await;
                let r = r.map(Response::into_inner).map_err(|s| forwarded(s, &addr))?;
                // As an etcd member answers once it applied the compaction itself: a watch or read sent here
                // next must see it.
                ctx.wait_local(deadline, |ks| ks.compact_revision() >= revision).await?;
                return Ok(r);
            }
            // Refused before proposing what is sure to fail; the apply decides for the rest.
            ctx.state_machine.read(|ks| match ks.check_revision(msg.revision) {
                Err(e) => Err(convert::revision_error(e)),
                Ok(()) if msg.revision <= ks.compact_revision() => Err(Error::Etcd(EtcdError::Compacted)),
                Ok(()) => Ok(()),
            })?;
            match ctx.write(Command::Compact { revision: msg.revision }, deadline).await? {
                CommandResponse::Compact { revision, result } => {
                    result.map_err(convert::revision_error)?;
                    Ok(pb::CompactionResponse { header: Some(ctx.etcd_header(revision)) })
                }
                other => Err(Error::Internal(format!("unexpected response to compact: {other:?}"))),
            }
        })
        .await
    }
}
