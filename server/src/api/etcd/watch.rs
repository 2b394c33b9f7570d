//! etcd's `Watch` service: one bidirectional stream carries many watches.
//!
//! Each watch is a cursor into this node's applied history ([`crate::watch`]), run by a task of its own that
//! sends into the stream's one outgoing queue, so the events of one watch stay in revision order and none is
//! skipped. A watch whose start is no longer in the history is canceled with `compact_revision` (where a client
//! may resume), as etcd does.
//!
//! Progress (`WatchProgressRequest`, and `progress_notify` watches when idle) keeps etcd's guarantee: a progress
//! revision never runs ahead of events not yet sent. Every watch first sends what it has up to now, then reports
//! how far it got, and the stream answers with the smallest of those.

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};

use futures::{FutureExt, Stream, StreamExt};
use raftkv_proto::etcd::{self as pb, watch_server::Watch};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::{
    api::ApiContext,
    error::{Error, EtcdError},
    keyspace::{Event, EventKind, KeyRange},
    watch::{WatchError, Watcher},
};

/// How long a `progress_notify` watch stays silent before it reports its progress (etcd's default interval).
const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// etcd's watch id of a stream-wide progress response.
const PROGRESS_WATCH_ID: i64 = -1;

pub struct EtcdWatchService {
    ctx: Arc<ApiContext>,
}

impl EtcdWatchService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }
}

type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// One running watch, as the stream sees it.
struct RunningWatch {
    task: tokio::task::JoinHandle<()>,
    /// Asks the watch how far it has sent everything.
    progress: mpsc::Sender<oneshot::Sender<i64>>,
}

impl Drop for RunningWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tonic::async_trait]
impl Watch for EtcdWatchService {
    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<Streaming<pb::WatchRequest>>) -> Result<Response<WatchStream>, Status> {
        let ctx = self.ctx.clone();
        let require_leader = req.metadata().get("hasleader").and_then(|v| v.to_str().ok()) == Some("true");
        if require_leader && ctx.leader().is_none() {
            return Err(Error::Etcd(EtcdError::NoLeader).into_etcd_status());
        }
        ctx.metrics.requests.with_label_values(&["etcd.Watch", "OK"]).inc();
        let mut requests = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut watches: HashMap<i64, RunningWatch> = HashMap::new();
            let mut next_id = 0i64;
            let mut leaderless_ticks = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let msg = tokio::select! {
                    m = requests.next() => m,
                    _ = tx.closed() => return,
                    _ = ctx.shutting_down() => {
                        let _ = tx.send(Err(Error::Etcd(EtcdError::Stopped).into_etcd_status())).await;
                        return;
                    }
                    _ = tick.tick() => {
                        // etcd ends a leader-requiring stream once its member has been without a leader a while.
                        leaderless_ticks = if ctx.leader().is_none() { leaderless_ticks + 1 } else { 0 };
                        if require_leader && leaderless_ticks >= 3 {
                            let _ = tx.send(Err(Error::Etcd(EtcdError::NoLeader).into_etcd_status())).await;
                            return;
                        }
                        continue;
                    }
                };
                let Some(Ok(msg)) = msg else { return };
                use pb::watch_request::RequestUnion as U;
                match msg.request_union {
                    Some(U::CreateRequest(c)) => {
                        let id = if c.watch_id != 0 {
                            c.watch_id
                        } else {
                            while watches.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        };
                        let current = ctx.state_machine.watch_hub().latest();
                        if watches.contains_key(&id) {
                            let _ = tx
                                .send(Ok(pb::WatchResponse {
                                    header: Some(ctx.etcd_header(current)),
                                    watch_id: id,
                                    created: true,
                                    canceled: true,
                                    cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream".into(),
                                    ..Default::default()
                                }))
                                .await;
                            continue;
                        }
                        let watcher = ctx.state_machine.watch_hub().subscribe(
                            KeyRange::from_wire(c.key.clone(), c.range_end.clone()),
                            c.start_revision,
                            c.prev_kv,
                        );
                        let created = pb::WatchResponse {
                            header: Some(ctx.etcd_header(current)),
                            watch_id: id,
                            created: true,
                            ..Default::default()
                        };
                        if tx.send(Ok(created)).await.is_err() {
                            return;
                        }
                        // A start below the compact revision: created, then canceled with where to resume.
                        let compacted = ctx.state_machine.read(|ks| ks.compact_revision());
                        if c.start_revision > 0 && c.start_revision < compacted {
                            let resp = pb::WatchResponse {
                                header: Some(ctx.etcd_header(ctx.state_machine.watch_hub().latest())),
                                watch_id: id,
                                canceled: true,
                                compact_revision: compacted,
                                ..Default::default()
                            };
                            if tx.send(Ok(resp)).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let (progress, progress_rx) = mpsc::channel(1);
                        let task = tokio::spawn(run_watch(ctx.clone(), id, c, watcher, tx.clone(), progress_rx));
                        watches.insert(id, RunningWatch { task, progress });
                    }
                    Some(U::CancelRequest(c)) if watches.remove(&c.watch_id).is_some() => {
                        let current = ctx.state_machine.watch_hub().latest();
                        let canceled = pb::WatchResponse {
                            header: Some(ctx.etcd_header(current)),
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        };
                        if tx.send(Ok(canceled)).await.is_err() {
                            return;
                        }
                    }
                    // Canceling an unknown watch is answered with nothing, as etcd does.
                    Some(U::CancelRequest(_)) => {}
                    Some(U::ProgressRequest(_)) => {
                        let mut revision = ctx.state_machine.watch_hub().latest();
                        watches.retain(|_, w| !w.task.is_finished());
                        for w in watches.values() {
                            let (reply, answer) = oneshot::channel();
                            if w.progress.send(reply).await.is_ok() {
                                if let Ok(r) = answer.await {
                                    revision = revision.min(r);
                                }
                            }
                        }
                        let resp = pb::WatchResponse {
                            header: Some(ctx.etcd_header(revision)),
                            watch_id: PROGRESS_WATCH_ID,
                            ..Default::default()
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    None => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx)) as WatchStream))
    }
}

/// Runs one watch until it is canceled, its stream closes, or its history is gone.
async fn run_watch(
    ctx: Arc<ApiContext>,
    id: i64,
    create: pb::WatchCreateRequest,
    mut watcher: Watcher,
    tx: Out,
    mut progress: mpsc::Receiver<oneshot::Sender<i64>>,
) {
    use pb::watch_create_request::FilterType;
    let no_put = create.filters.contains(&(FilterType::Noput as i32));
    let no_delete = create.filters.contains(&(FilterType::Nodelete as i32));
    let keep = |e: &Event| match e.kind {
        EventKind::Put => !no_put,
        EventKind::Delete => !no_delete,
    };
    let mut quiet = tokio::time::interval(PROGRESS_NOTIFY_INTERVAL);
    quiet.reset();
    // Sends one batch; false once the watch is over.
    let send = |batch: Result<Vec<(i64, Vec<Event>)>, WatchError>| {
        let tx = tx.clone();
        let ctx = ctx.clone();
        let keep = &keep;
        let fragment = create.fragment;
        let prev_kv = create.prev_kv;
        async move {
            let responses = match batch {
                Ok(revs) => {
                    let revs = revs.into_iter().map(|(r, evs)| (r, evs.into_iter().filter(keep).collect())).collect();
                    responses(revs, prev_kv, fragment, id, |rev| ctx.etcd_header(rev))
                }
                Err(WatchError::Compacted { oldest, .. }) => vec![pb::WatchResponse {
                    header: Some(ctx.etcd_header(ctx.state_machine.watch_hub().latest())),
                    watch_id: id,
                    canceled: true,
                    compact_revision: oldest,
                    ..Default::default()
                }],
                Err(e) => vec![pb::WatchResponse {
                    header: Some(ctx.etcd_header(ctx.state_machine.watch_hub().latest())),
                    watch_id: id,
                    canceled: true,
                    cancel_reason: e.to_string(),
                    ..Default::default()
                }],
            };
            for r in responses {
                let over = r.canceled;
                if tx.send(Ok(r)).await.is_err() || over {
                    return false;
                }
            }
            true
        }
    };
    loop {
        tokio::select! {
            batch = watcher.next_batch() => {
                quiet.reset();
                if !send(batch).await {
                    return;
                }
            }
            Some(reply) = progress.recv() => {
                // Send what is there up to now first: the progress must not run ahead of unsent events.
                while let Some(batch) = watcher.next_batch().now_or_never() {
                    if !send(batch).await {
                        return;
                    }
                }
                let _ = reply.send(watcher.next_revision() - 1);
            }
            _ = quiet.tick(), if create.progress_notify => {
                while let Some(batch) = watcher.next_batch().now_or_never() {
                    if !send(batch).await {
                        return;
                    }
                }
                let resp = pb::WatchResponse {
                    header: Some(ctx.etcd_header(watcher.next_revision() - 1)),
                    watch_id: id,
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

/// One watch's batch as responses (see [`crate::watch::split`]). A response that ends inside a revision is
/// marked `fragment` when the watch asked for fragments.
fn responses(
    revs: Vec<(i64, Vec<Event>)>,
    prev_kv: bool,
    fragment: bool,
    id: i64,
    header: impl Fn(i64) -> pb::ResponseHeader,
) -> Vec<pb::WatchResponse> {
    crate::watch::split(revs, |e| convert::event(e, prev_kv))
        .into_iter()
        .map(|p| pb::WatchResponse {
            header: Some(header(p.revision)),
            watch_id: id,
            events: p.events,
            fragment: fragment && p.ends_inside,
            ..Default::default()
        })
        .collect()
}
