//! Every call the dashboard makes: gRPC-Web to the nodes (through the generated `raftkv-proto` clients over
//! `tonic-web-wasm-client`) and plain HTTP to the server that served the page (`/api/...`, see
//! [`raftkv_proto::dashboard`]).
//!
//! Every call has a client-side deadline as well as a gRPC one: a paused (SIGSTOP) node accepts connections but
//! never answers, and the page must show it as not answering rather than wait forever.

use std::{future::Future, time::Duration};

use futures::future::{select, Either};
use raftkv_proto::{
    self as pb,
    cluster_client::ClusterClient,
    dashboard::{ClusterInfo, NodeAction, NodeInfo},
    kv_client::KvClient,
};
use tonic::{Code, Request, Status, Streaming};
use tonic_web_wasm_client::Client;

/// Status polls and other quick calls.
pub const QUICK: Duration = Duration::from_millis(900);
/// Writes and reads a person asked for: long enough to ride out an election.
pub const USER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(Status),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Http(String),
}

impl Error {
    /// The gRPC code, when the server answered with one.
    pub fn code(&self) -> Option<Code> {
        // Transport failures (connection refused or reset) surface as UNKNOWN statuses, which is what they are
        // for a write: it may have reached the node.
        match self {
            Error::Rpc(s) => Some(s.code()),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Runs `f` with a client-side deadline.
pub async fn within<T>(limit: Duration, f: impl Future<Output = Result<T>>) -> Result<T> {
    let timer = gloo_timers::future::sleep(limit);
    match select(Box::pin(f), Box::pin(timer)).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(Error::Timeout(limit)),
    }
}

/// Awaits one gRPC call with a client-side deadline and unwraps its answer.
async fn call<T>(
    limit: Duration,
    rpc: impl Future<Output = std::result::Result<tonic::Response<T>, Status>>,
) -> Result<T> {
    within(limit, async { rpc.await.map(tonic::Response::into_inner).map_err(Error::Rpc) }).await
}

fn request<T>(msg: T, timeout: Duration) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// One node, reached over gRPC-Web at its base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub url: String,
}

impl Node {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into() }
    }

    fn kv(&self) -> KvClient<Client> {
        KvClient::new(Client::new(self.url.clone()))
    }

    fn cluster(&self) -> ClusterClient<Client> {
        ClusterClient::new(Client::new(self.url.clone()))
    }

    pub async fn status(&self) -> Result<pb::StatusResponse> {
        call(QUICK, self.cluster().status(request(pb::StatusRequest {}, QUICK))).await
    }

    pub async fn log_entries(&self, limit: u32) -> Result<pb::LogEntriesResponse> {
        call(QUICK, self.cluster().log_entries(request(pb::LogEntriesRequest { to: 0, limit }, QUICK))).await
    }

    /// The node's event stream, replaying buffered events after `after_seq` of `incarnation` (all of them if
    /// the node restarted since).
    pub async fn events(&self, incarnation: u64, after_seq: u64) -> Result<Streaming<pb::NodeEvent>> {
        call(QUICK, self.cluster().events(pb::EventsRequest { after_seq, incarnation })).await
    }

    /// A put, attached to `lease` (0 = none).
    pub async fn put(&self, key: &str, value: &str, lease: i64) -> Result<pb::PutResponse> {
        let msg = pb::PutRequest { key: key.into(), value: value.into(), prev_kv: true, lease };
        call(USER, self.kv().put(request(msg, USER))).await
    }

    /// A put without the previous value, with deadline `limit` (the load generator and the experiments).
    pub async fn put_within(&self, key: &str, value: &str, limit: Duration) -> Result<pb::PutResponse> {
        let msg = pb::PutRequest { key: key.into(), value: value.into(), prev_kv: false, lease: 0 };
        call(limit, self.kv().put(request(msg, limit))).await
    }

    /// A get with deadline `limit`.
    pub async fn get_within(&self, key: &str, serializable: bool, limit: Duration) -> Result<pb::GetResponse> {
        let msg = pb::GetRequest { key: key.into(), serializable, revision: 0 };
        call(limit, self.kv().get(request(msg, limit))).await
    }

    /// Every key in [`from`, `to`), linearizable.
    pub async fn range(&self, from: &str, to: &str) -> Result<pb::RangeResponse> {
        self.range_of(from.into(), to.into(), false, 0).await
    }

    /// Up to `limit` keys (0 = all) in [`key`, `range_end`).
    async fn range_of(
        &self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        serializable: bool,
        limit: i64,
    ) -> Result<pb::RangeResponse> {
        let msg =
            pb::RangeRequest { key, range_end, limit, keys_only: false, count_only: false, serializable, revision: 0 };
        call(USER, self.kv().range(request(msg, USER))).await
    }

    pub async fn get(&self, key: &str, serializable: bool) -> Result<pb::GetResponse> {
        self.get_within(key, serializable, USER).await
    }

    pub async fn delete(&self, key: &str) -> Result<pb::DeleteResponse> {
        let msg = pb::DeleteRequest { key: key.into(), range_end: vec![], prev_kv: true };
        call(USER, self.kv().delete(request(msg, USER))).await
    }

    pub async fn scan(&self, prefix: &str, serializable: bool, limit: i64) -> Result<pb::RangeResponse> {
        self.range_of(prefix.into(), pb::prefix_end(prefix.as_bytes()), serializable, limit).await
    }

    /// Watches every key under `prefix` from now on.
    pub async fn watch(&self, prefix: &str) -> Result<Streaming<pb::WatchResponse>> {
        let msg = pb::WatchRequest {
            key: prefix.into(),
            range_end: pb::prefix_end(prefix.as_bytes()),
            start_revision: 0,
            prev_kv: false,
        };
        call(QUICK, self.kv().watch(msg)).await
    }

    pub async fn member_promote(&self, id: u64) -> Result<pb::MemberPromoteResponse> {
        let msg = pb::MemberPromoteRequest { id };
        call(USER, self.cluster().member_promote(request(msg, USER))).await
    }

    pub async fn member_remove(&self, id: u64) -> Result<pb::MemberRemoveResponse> {
        let msg = pb::MemberRemoveRequest { id };
        call(USER, self.cluster().member_remove(request(msg, USER))).await
    }
}

/// Plain-HTTP calls to the server that served the page.
pub mod control {
    use gloo_net::http::{Request, Response};

    use super::*;

    async fn json<T: serde::de::DeserializeOwned>(r: std::result::Result<Response, gloo_net::Error>) -> Result<T> {
        let r = r.map_err(|e| Error::Http(e.to_string()))?;
        if !r.ok() {
            let body = r.text().await.unwrap_or_default();
            return Err(Error::Http(format!("{} {}", r.status(), body.trim())));
        }
        r.json().await.map_err(|e| Error::Http(format!("bad JSON from the server: {e}")))
    }

    /// Which nodes to show; a page opened with `?nodes=URL,URL` uses those instead (and has no control).
    pub async fn cluster_info() -> Result<ClusterInfo> {
        within(QUICK, async { json(Request::get("/api/cluster").send().await).await }).await
    }

    pub async fn act(id: u64, action: NodeAction) -> Result<NodeInfo> {
        let url = format!("/api/nodes/{id}/{}", action.as_str());
        within(Duration::from_secs(10), async { json(Request::post(&url).send().await).await }).await
    }

    pub async fn add_node() -> Result<NodeInfo> {
        within(Duration::from_secs(10), async { json(Request::post("/api/nodes").send().await).await }).await
    }

    pub async fn forget_node(id: u64) -> Result<()> {
        let url = format!("/api/nodes/{id}");
        within(Duration::from_secs(10), async {
            let r = Request::delete(&url).send().await.map_err(|e| Error::Http(e.to_string()))?;
            if r.ok() {
                Ok(())
            } else {
                Err(Error::Http(format!("{} {}", r.status(), r.text().await.unwrap_or_default().trim())))
            }
        })
        .await
    }
}

/// Milliseconds since the page loaded (for timing calls).
pub fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map_or(0.0, |p| p.now())
}
