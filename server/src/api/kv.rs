//! `raftkv.v1.KV`: the public key-value service.
//!
//! Writes go through Raft on the leader. Reads are linearizable unless the request asks for `serializable`, in
//! which case any node answers from its own state machine (possibly stale, never torn). A follower forwards writes
//! and linearizable reads to the leader it knows, so clients may talk to any node. Watches are served by the
//! node they are opened on, from its own applied history: every node applies every entry in the same order, so a
//! watch continues across leader changes.

use std::{future::Future, pin::Pin, sync::Arc, time::Instant};

use futures::Stream;
use raftkv_proto::{self as pb, kv_client::KvClient, kv_server::Kv};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Request, Response, Status};

use super::{convert, ApiContext, FORWARDED};
use crate::{
    error::{Error, Result},
    raft::CommandResponse,
    watch::WatchError,
};

pub struct KvService {
    ctx: Arc<ApiContext>,
}

impl KvService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }
}

/// Runs a handler, recording its latency and status code.
pub(crate) async fn observed<T>(
    ctx: &ApiContext,
    method: &'static str,
    f: impl Future<Output = Result<T>>,
) -> Result<Response<T>, Status> {
    observed_as(ctx, method, Error::into_status, f).await
}

/// [`observed`] with the front door's own conversion of errors to statuses.
pub(crate) async fn observed_as<T>(
    ctx: &ApiContext,
    method: &'static str,
    to_status: fn(Error) -> Status,
    f: impl Future<Output = Result<T>>,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let res = f.await.map_err(to_status);
    let code = match &res {
        Ok(_) => "OK".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    ctx.metrics.requests.with_label_values(&[method, &code]).inc();
    ctx.metrics.request_seconds.with_label_values(&[method]).observe(start.elapsed().as_secs_f64());
    res.map(Response::new)
}

/// Where a request must go: served here, or forwarded to the leader at this address.
pub(crate) enum Route {
    Local,
    Leader(String),
}

impl ApiContext {
    /// Forward to the known leader unless this node leads, no leader is known (then wait here), or the request
    /// was already forwarded once.
    pub(crate) fn route<T>(&self, req: &Request<T>) -> Route {
        if req.metadata().contains_key(FORWARDED) {
            return Route::Local;
        }
        match self.leader() {
            Some((id, addr)) if id != self.id && !addr.is_empty() => Route::Leader(addr),
            _ => Route::Local,
        }
    }

    /// Builds the forwarded request: same message, marked as forwarded, with the remaining deadline.
    pub(crate) fn forward_request<T>(&self, msg: T, deadline: Instant) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        req
    }

    /// A channel to another member's client port (with the client TLS files when set), for forwarding.
    pub(crate) fn member_channel(&self, addr: &str) -> Result<Channel> {
        self.network.client_channels.get(addr).map_err(Error::Unavailable)
    }

    fn kv_client(&self, addr: &str) -> Result<KvClient<Channel>> {
        Ok(KvClient::new(self.member_channel(addr)?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }
}

/// Maps a failure of a forwarded request. The leader's own answer passes through unchanged. A transport failure
/// is UNAVAILABLE (retry elsewhere) only when the connection could not even be opened; a connection lost while
/// the request was in flight leaves the outcome unknown (the leader may have proposed it before dying).
pub(crate) fn forwarded(status: Status, leader: &str) -> Error {
    let from_transport =
        matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
            && !status.metadata().contains_key("grpc-status")
            && !status.metadata().contains_key("x-raftkv-leader-id");
    let answered_by_raftkv = status.metadata().contains_key("x-raftkv-leader-id")
        || status.message().starts_with("no leader")
        || status.message().starts_with("not the leader");
    if answered_by_raftkv || !from_transport {
        return Error::Forwarded(Box::new(status));
    }
    let m = status.message();
    if m.contains("tcp connect error") || m.contains("Connection refused") {
        Error::Unavailable(format!("leader at {leader} unreachable: {m}"))
    } else {
        Error::OutcomeUnknown(format!(
            "lost the leader at {leader} while forwarding ({m}); the request may or may not have taken effect"
        ))
    }
}

/// Why the state machine refused a transaction (or a put with a lease), with each front door's own conversion of
/// a revision error.
pub(crate) fn refused(
    reason: &crate::keyspace::TxnRefused,
    revision_error: impl FnOnce(crate::keyspace::RevisionError) -> Error,
) -> Error {
    use crate::{error::EtcdError, keyspace::TxnRefused};
    match reason {
        TxnRefused::KeyNotFound => Error::Etcd(EtcdError::KeyNotFound),
        TxnRefused::LeaseNotFound => Error::Etcd(EtcdError::LeaseNotFound),
        TxnRefused::Revision(e) => revision_error(*e),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// A watcher's batch as responses (see [`crate::watch::split`]), each headed by the last revision it completes.
fn watch_responses(
    revs: Vec<(i64, Vec<crate::keyspace::Event>)>,
    with_prev: bool,
    header: impl Fn(i64) -> pb::ResponseHeader,
) -> Vec<pb::WatchResponse> {
    crate::watch::split(revs, |e| convert::event(e, with_prev))
        .into_iter()
        .map(|p| pb::WatchResponse { header: Some(header(p.revision)), events: p.events })
        .collect()
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "Put", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            let cmd = convert::put_command(&ctx.limits, msg.clone())?;
            if let Route::Leader(addr) = route {
                let r = ctx.kv_client(&addr)?.put(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            match ctx.write(cmd, deadline).await? {
                CommandResponse::Put { revision, prev_kv } => {
                    Ok(pb::PutResponse { header: Some(ctx.header(revision)), prev_kv: prev_kv.map(convert::kv) })
                }
                // A put with a lease runs as a one-op transaction.
                CommandResponse::Txn { revision, mut responses, .. } => match responses.pop() {
                    Some(crate::keyspace::TxnOpResponse::Put { prev_kv, .. }) => {
                        Ok(pb::PutResponse { header: Some(ctx.header(revision)), prev_kv: prev_kv.map(convert::kv) })
                    }
                    other => Err(Error::Internal(format!("unexpected response to put: {other:?}"))),
                },
                CommandResponse::TxnRefused { reason, revision } => {
                    Err(refused(&reason, |e| convert::revision_error(e, 0, revision)))
                }
                other => Err(Error::Internal(format!("unexpected response to put: {other:?}"))),
            }
        })
        .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "Get", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            ctx.limits.check_key(&msg.key)?;
            if !msg.serializable && !ctx.unsafe_local_reads {
                if let Route::Leader(addr) = route {
                    let r = ctx.kv_client(&addr)?.get(ctx.forward_request(msg, deadline)).await;
                    return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
                }
                ctx.read_barrier(deadline).await?;
            }
            let (kv, revision) = ctx.state_machine.read(|ks| {
                let query = crate::keyspace::RangeQuery {
                    range: crate::keyspace::KeyRange::single(msg.key.clone()),
                    ..Default::default()
                };
                let kv = match msg.revision {
                    0 => Ok(ks.get(&msg.key)),
                    at => ks
                        .range_at(&query, at)
                        .map(|r| r.kvs.into_iter().next())
                        .map_err(|e| convert::revision_error(e, at, ks.revision())),
                };
                (kv, ks.revision())
            });
            Ok(pb::GetResponse { header: Some(ctx.header(revision)), kv: kv?.map(convert::kv) })
        })
        .await
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "Delete", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            let cmd = convert::delete_command(&ctx.limits, msg.clone())?;
            if let Route::Leader(addr) = route {
                let r = ctx.kv_client(&addr)?.delete(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            match ctx.write(cmd, deadline).await? {
                CommandResponse::Delete { revision, deleted, prev_kvs } => Ok(pb::DeleteResponse {
                    header: Some(ctx.header(revision)),
                    deleted,
                    prev_kvs: prev_kvs.into_iter().map(convert::kv).collect(),
                }),
                other => Err(Error::Internal(format!("unexpected response to delete: {other:?}"))),
            }
        })
        .await
    }

    async fn range(&self, req: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "Range", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            let query = convert::range_query(&ctx.limits, &msg)?;
            if !msg.serializable && !ctx.unsafe_local_reads {
                if let Route::Leader(addr) = route {
                    let r = ctx.kv_client(&addr)?.range(ctx.forward_request(msg, deadline)).await;
                    return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
                }
                ctx.read_barrier(deadline).await?;
            }
            let (result, revision) = ctx.state_machine.read(|ks| {
                let r = ks.range_at(&query, query.revision);
                (r.map_err(|e| convert::revision_error(e, query.revision, ks.revision())), ks.revision())
            });
            Ok(convert::range_response(ctx.header(revision), result?))
        })
        .await
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "Txn", async {
            let deadline = ctx.deadline(&req);
            let route = ctx.route(&req);
            let msg = req.into_inner();
            let cmd = convert::txn_command(&ctx.limits, msg.clone())?;
            if let Route::Leader(addr) = route {
                let r = ctx.kv_client(&addr)?.txn(ctx.forward_request(msg, deadline)).await;
                return r.map(Response::into_inner).map_err(|s| forwarded(s, &addr));
            }
            match ctx.write(cmd, deadline).await? {
                CommandResponse::Txn { revision, succeeded, responses } => Ok(pb::TxnResponse {
                    header: Some(ctx.header(revision)),
                    succeeded,
                    responses: convert::txn_responses(responses),
                }),
                CommandResponse::TxnRefused { reason, revision } => {
                    Err(refused(&reason, |e| convert::revision_error(e, 0, revision)))
                }
                other => Err(Error::Internal(format!("unexpected response to txn: {other:?}"))),
            }
        })
        .await
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let ctx = self.ctx.clone();
        let res = observed(&ctx, "Watch", async {
            let msg = req.into_inner();
            if !(msg.key.is_empty() && msg.range_end == [0]) {
                ctx.limits.check_key(&msg.key)?;
            }
            let range = crate::keyspace::KeyRange::from_wire(msg.key, msg.range_end);
            let hub = ctx.state_machine.watch_hub();
            let with_prev = msg.prev_kv;
            let mut watcher = hub.subscribe(range, msg.start_revision, with_prev);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            // The first message confirms the watch is in place and says where it starts.
            let first = pb::WatchResponse { header: Some(ctx.header(watcher.next_revision() - 1)), events: vec![] };
            let ctx2 = ctx.clone();
            tokio::spawn(async move {
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
                loop {
                    let batch = tokio::select! {
                        b = watcher.next_batch() => b,
                        _ = tx.closed() => return,
                        _ = ctx2.shutting_down() => Err(WatchError::Closed),
                    };
                    let msgs = match batch {
                        Ok(revs) => {
                            watch_responses(revs, with_prev, |rev| ctx2.header(rev)).into_iter().map(Ok).collect()
                        }
                        Err(e @ WatchError::Compacted { .. }) => {
                            vec![Err(Error::Compacted(e.to_string()).into_status())]
                        }
                        Err(e @ WatchError::PrevKvNotKept { .. }) => {
                            vec![Err(Error::FailedPrecondition(e.to_string()).into_status())]
                        }
                        Err(WatchError::Closed) => {
                            vec![Err(Error::Unavailable("node shutting down".into()).into_status())]
                        }
                    };
                    for msg in msgs {
                        let stop = msg.is_err();
                        if tx.send(msg).await.is_err() || stop {
                            return;
                        }
                    }
                }
            });
            Ok(Box::pin(ReceiverStream::new(rx)) as WatchStream)
        })
        .await;
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::{Event, EventKind, KeyValue};

    fn ev(rev: i64, len: usize) -> Event {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: vec![0; len],
            create_revision: 1,
            mod_revision: rev,
            version: 1,
            lease: 0,
        };
        Event { kind: EventKind::Put, kv, prev_kv: None }
    }

    #[test]
    fn responses_are_split_by_bytes_and_headers_never_run_ahead() {
        let big = 1536 * 1024;
        // 10 revisions of 1.5 MiB, then one revision of 5 events of 1 MiB.
        let mut revs: Vec<(i64, Vec<Event>)> = (1..=10).map(|r| (r, vec![ev(r, big)])).collect();
        revs.push((11, (0..5).map(|_| ev(11, 1 << 20)).collect()));
        let out = watch_responses(revs, false, |rev| pb::ResponseHeader { revision: rev, ..Default::default() });
        let mut seen = 0;
        for m in &out {
            let size: usize = m.events.iter().map(|e| e.kv.as_ref().unwrap().value.len()).sum();
            assert!(size <= crate::watch::MAX_BATCH_BYTES, "a response with {size} bytes of values");
            let top = m.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).max().unwrap();
            let header = m.header.as_ref().unwrap().revision;
            assert!(header <= top && header >= top - 1, "header {header} for events up to {top}");
            seen += m.events.len();
        }
        assert_eq!(seen, 15);
        assert_eq!(out.last().unwrap().header.as_ref().unwrap().revision, 11);
    }
}
