//! AppendEntries over long-lived streams: replication's hot path without a new HTTP/2 stream per message.
//!
//! A unary gRPC call opens an HTTP/2 stream, encodes and parses request headers, response headers and trailers,
//! and passes through more tasks than a message on a stream that is already open. openraft 0.9 sends each
//! follower two AppendEntries per Raft round (the entries, then the new commit index), so with one writer that
//! per-call overhead was much of a write's CPU (etcd's peers also keep long-lived streams). Here an AppendEntries
//! is one [`PeerMessage`] on a bidirectional `AppendEntriesStream` call, answered in order by one [`PeerMessage`].
//! Envelopes, signatures, checks and error mapping are exactly the unary call's ([`super::network`]); only the
//! framing differs.
//!
//! Invariants:
//! - a stream carries one call at a time, and goes back to the pool only once that call's answer has arrived: a
//!   call takes its stream out of the pool, so a call cut off by openraft's timeout drops its stream with it, and
//!   a late answer can never be read as the answer to a later call;
//! - a stream that failed in any way is never used again: the next call opens a new one;
//! - a peer that does not serve the stream (`UNIMPLEMENTED`: an older raftkv during a rolling upgrade) is sent
//!   unary calls from then on (remembered per address).

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use raftkv_proto::PeerMessage;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Code, Status, Streaming};

use super::network::raft_client;

/// Idle streams kept per peer address: one per concurrent caller (the replication task, and the odd
/// read-index round or leadership transfer beside it).
const MAX_IDLE_PER_PEER: usize = 4;

/// One open `AppendEntriesStream` call: requests go into `tx`, answers come back on `rx`, in order.
struct AppendStream {
    tx: mpsc::Sender<PeerMessage>,
    rx: Streaming<PeerMessage>,
}

/// The open, idle AppendEntries streams of one node, by peer address.
#[derive(Default)]
pub struct AppendStreams {
    idle: Mutex<HashMap<String, Vec<AppendStream>>>,
    unary_only: Mutex<HashSet<String>>,
}

impl AppendStreams {
    /// Whether the peer at `addr` answered that it does not serve the stream: send it unary calls.
    pub fn unary_only(&self, addr: &str) -> bool {
        self.unary_only.lock().contains(addr)
    }

    /// Drops every idle stream (their connections were made with certificates that have since been reloaded).
    pub fn clear(&self) {
        self.idle.lock().clear();
    }

    /// Sends `msg` to the peer at `addr` on an idle stream, or on a new one over `channel`, and returns its
    /// answer. Errors are the stream's status (or `UNAVAILABLE` if the peer closed the stream), mapped by the
    /// caller as a unary call's.
    pub async fn call(&self, addr: &str, channel: Channel, msg: PeerMessage) -> Result<PeerMessage, Status> {
        let idle = self.idle.lock().get_mut(addr).and_then(Vec::pop);
        let mut stream = match idle {
            Some(s) => s,
            None => self.open(addr, channel.clone()).await?,
        };
        if let Err(mpsc::error::SendError(msg)) = stream.tx.send(msg).await {
            // The idle stream ended since its last answer (the peer restarted, say) and nothing was sent on it:
            // one new stream is tried.
            stream = self.open(addr, channel).await?;
            stream.tx.send(msg).await.map_err(|_| closed())?;
        }
        match stream.rx.message().await? {
            Some(answer) => {
                let mut idle = self.idle.lock();
                let streams = idle.entry(addr.to_string()).or_default();
                if streams.len() < MAX_IDLE_PER_PEER {
                    streams.push(stream);
                }
                Ok(answer)
            }
            None => Err(closed()),
        }
    }

    async fn open(&self, addr: &str, channel: Channel) -> Result<AppendStream, Status> {
        let mut client = raft_client(channel);
        // One message in the channel at a time: a call waits for its answer before the next is sent.
        let (tx, requests) = mpsc::channel(1);
        match client.append_entries_stream(ReceiverStream::new(requests)).await {
            Ok(answers) => Ok(AppendStream { tx, rx: answers.into_inner() }),
            Err(status) => {
                if status.code() == Code::Unimplemented {
                    tracing::info!(peer = addr, "peer does not serve AppendEntries streams; sending it unary calls");
                    self.unary_only.lock().insert(addr.to_string());
                }
                Err(status)
            }
        }
    }
}

fn closed() -> Status {
    Status::unavailable("the peer closed the AppendEntries stream")
}

#[cfg(test)]
mod tests {
    use std::{
        pin::Pin,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        time::Duration,
    };

    use futures::{Stream, StreamExt};
    use raftkv_proto::raft_server::{Raft as RaftRpc, RaftServer};
    use tonic::{transport::server::TcpIncoming, Request, Response};

    use super::*;

    /// A peer port for the tests: the stream echoes each message's body, but holds the first answer of the first
    /// stream back for `first_delay`; or, with `streams: false`, does not serve the stream at all.
    struct EchoPeer {
        streams: bool,
        first_delay: Duration,
        opened: Arc<AtomicUsize>,
    }

    type Answers = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

    #[tonic::async_trait]
    impl RaftRpc for EchoPeer {
        type AppendEntriesStreamStream = Answers;

        async fn hello(&self, _: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn vote(&self, _: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn append_entries(&self, req: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
            Ok(Response::new(req.into_inner()))
        }
        async fn install_snapshot(&self, _: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn timeout_now(&self, _: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn append_entries_stream(
            &self,
            req: Request<Streaming<PeerMessage>>,
        ) -> Result<Response<Answers>, Status> {
            if !self.streams {
                return Err(Status::unimplemented("no streams here"));
            }
            let first_stream = self.opened.fetch_add(1, Ordering::SeqCst) == 0;
            let delay = self.first_delay;
            let answers = req.into_inner().enumerate().then(move |(i, msg)| async move {
                if first_stream && i == 0 {
                    tokio::time::sleep(delay).await;
                }
                msg
            });
            Ok(Response::new(Box::pin(answers)))
        }
    }

    async fn peer(streams: bool, first_delay: Duration) -> (String, Channel, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let opened = Arc::new(AtomicUsize::new(0));
        let service = EchoPeer { streams, first_delay, opened: opened.clone() };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServer::new(service))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        (addr, channel, opened)
    }

    fn message(body: &[u8]) -> PeerMessage {
        PeerMessage { body: body.to_vec(), ..Default::default() }
    }

    #[tokio::test]
    async fn calls_reuse_one_stream_and_each_gets_its_own_answer() {
        let (addr, channel, opened) = peer(true, Duration::ZERO).await;
        let streams = AppendStreams::default();
        for i in 0..5u8 {
            let answer = streams.call(&addr, channel.clone(), message(&[i])).await.unwrap();
            assert_eq!(answer.body, vec![i]);
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1, "one stream carried every call");
    }

    /// The first call gives up before its answer comes; that answer must not be taken for the next call's.
    #[tokio::test]
    async fn a_call_cut_off_by_its_timeout_takes_its_stream_with_it() {
        let (addr, channel, opened) = peer(true, Duration::from_millis(300)).await;
        let streams = AppendStreams::default();
        let first =
            tokio::time::timeout(Duration::from_millis(50), streams.call(&addr, channel.clone(), message(b"1")));
        assert!(first.await.is_err(), "the first answer is held back past the timeout");
        let second = streams.call(&addr, channel.clone(), message(b"2")).await.unwrap();
        assert_eq!(second.body, b"2", "the second call got the first call's late answer");
        assert_eq!(opened.load(Ordering::SeqCst), 2, "the cut-off stream was not reused");
    }

    #[tokio::test]
    async fn a_peer_without_streams_is_remembered_as_unary_only() {
        let (addr, channel, _) = peer(false, Duration::ZERO).await;
        let streams = AppendStreams::default();
        assert!(!streams.unary_only(&addr));
        let err = streams.call(&addr, channel, message(b"x")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(streams.unary_only(&addr));
    }
}
