//! The client the CLI (and the tests, bench and cluster launcher) use: endpoint selection, leader discovery and
//! retries within a deadline.
//!
//! Any node answers any request (followers forward to the leader), so the client only has to find a live node.
//! It sticks to the last node that answered, follows `x-raftkv-leader-addr` hints, and moves on to the next
//! endpoint when a node is unreachable or has no leader. Retries stop at the deadline.
//!
//! Retry safety: reads are retried on any unavailability. Writes (put, delete, txn, membership changes) are
//! retried only when the request provably never reached a Raft log: the connection could not be established, or
//! a node refused it before proposing (no leader / not the leader). A write whose first attempt may have committed
//! is never repeated — a repeated put or delete could undo another client's acknowledged write, a repeated
//! compare-and-swap could report a false failure — its error says the outcome is unknown instead.

pub mod concurrency;

use std::{
    collections::HashMap,
    future::Future,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use raftkv_proto::{self as pb, cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient};
use tonic::{transport::Channel, Code, Request, Status};

pub struct Client {
    endpoints: Vec<String>,
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
    preferred: AtomicUsize,
    /// A leader address learned from a hint, tried first.
    leader_hint: Mutex<Option<String>>,
    /// TLS for every endpoint (`--cacert`, `--cert`, `--key`); endpoints then default to `https://`.
    tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The least time left worth sending a write again in (see [`Client::call`]).
const MIN_WRITE_ATTEMPT: Duration = Duration::from_millis(150);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Safe to repeat after any unavailability (reads).
    Idempotent,
    /// Only when the request surely did not reach a node's Raft log.
    NotSent,
}

/// True if the status proves the request was not proposed: the connection never opened, or a raftkv node said it
/// has no leader / is not the leader (it refuses before proposing).
fn surely_not_sent(s: &Status) -> bool {
    let m = s.message();
    m.contains("tcp connect error")
        || m.contains("Connection refused")
        // The endpoint's name did not resolve (e.g. a container whose DNS server is briefly unreachable): nothing
        // was sent.
        || m.contains("dns error")
        || m.starts_with("no leader")
        || m.starts_with("not the leader")
}

impl Client {
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Self {
        assert!(!endpoints.is_empty(), "a client needs at least one endpoint");
        Self {
            endpoints,
            timeout,
            channels: Mutex::default(),
            preferred: AtomicUsize::new(0),
            leader_hint: Mutex::default(),
            tls: None,
        }
    }

    /// Talks TLS to every endpoint, with these files.
    pub fn with_tls(mut self, tls: crate::tls::ClientTls) -> crate::error::Result<Self> {
        self.tls = if tls.is_set() { Some(tls.config()?) } else { None };
        Ok(self)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut map = self.channels.lock();
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let url = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.to_string()
        } else if self.tls.is_some() {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| Status::invalid_argument(format!("bad endpoint {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(1000))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if url.starts_with("https://") {
            let tls = self.tls.clone().unwrap_or_default();
            endpoint =
                endpoint.tls_config(tls).map_err(|e| Status::invalid_argument(format!("TLS for {addr:?}: {e}")))?;
        }
        let ch = endpoint.connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    pub fn kv(&self, addr: &str) -> Result<KvClient<Channel>, Status> {
        Ok(KvClient::new(self.channel(addr)?).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20))
    }

    pub fn cluster(&self, addr: &str) -> Result<ClusterClient<Channel>, Status> {
        Ok(ClusterClient::new(self.channel(addr)?))
    }

    /// Calls `f` against live endpoints until it succeeds, fails for a non-retryable reason, or the deadline
    /// passes.
    async fn call<T, F, Fut>(&self, retry: Retry, mut f: F) -> Result<T, Status>
    where
        F: FnMut(String, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0usize;
        let mut last_err = Status::unavailable("no endpoint tried");
        // Endpoints that refused our TLS (a certificate alert): trying them again cannot help, and once every
        // endpoint has, that refusal is the answer — not a time-out after retrying it for the whole deadline.
        let mut tls_refusals = 0usize;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A write is not sent again with too little time left for an answer: one that timed out would have an
            // unknown outcome, where not sending it leaves the earlier, certain failure.
            if left.is_zero() || (attempt > 0 && retry == Retry::NotSent && left < MIN_WRITE_ATTEMPT) {
                return Err(last_err);
            }
            let hinted = self.leader_hint.lock().take();
            let idx = self.preferred.load(Ordering::Relaxed) % self.endpoints.len();
            let addr = hinted.unwrap_or_else(|| self.endpoints[idx].clone());
            // tonic's timeout is only a header for the server; enforce it here too (a silent node must not hang us).
            let res = match tokio::time::timeout(left, f(addr.clone(), left)).await {
                Ok(r) => r,
                // Out of time after earlier failures: for a read the earlier failure says more than the time-out. Not
                // for a write: this attempt was sent and may have taken effect, so its outcome is unknown — saying
                // "no leader" (nothing happened) of it could hide an acknowledged-by-the-cluster write.
                Err(_) if attempt > 0 && retry == Retry::Idempotent => return Err(last_err),
                Err(_) => Err(Status::deadline_exceeded(format!("{addr} did not answer within {left:?}"))),
            };
            match res {
                Ok(v) => return Ok(v),
                Err(s) => {
                    let (s, tls_refused) = self.explain(s, &addr);
                    if tls_refused {
                        tls_refusals += 1;
                        if tls_refusals >= self.endpoints.len() {
                            return Err(Status::new(s.code(), format!("{addr}: {}", s.message())));
                        }
                    }
                    let retryable = matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled)
                        && (retry == Retry::Idempotent || surely_not_sent(&s));
                    if !retryable {
                        return Err(s);
                    }
                    let hint = s.metadata().get("x-raftkv-leader-addr").and_then(|v| v.to_str().ok());
                    if let Some(l) = hint.filter(|l| !l.is_empty()) {
                        *self.leader_hint.lock() = Some(l.to_string());
                    } else {
                        self.preferred.store(idx + 1, Ordering::Relaxed);
                    }
                    // A TLS refusal says more than a connection cut off (as the same refusal may show itself).
                    if tls_refused || !last_err.message().contains("TLS failed") {
                        last_err = Status::new(s.code(), format!("{addr}: {}", s.message()));
                    }
                    attempt += 1;
                    // Cycle quickly through endpoints, then back off a little while an election runs.
                    if attempt % self.endpoints.len() == 0 {
                        let rounds = (attempt / self.endpoints.len()).min(4) as u64;
                        tokio::time::sleep(Duration::from_millis(25 * rounds)).await;
                    }
                }
            }
        }
    }

    /// Says what a transport failure most likely means: a plain-text client talking to a TLS port sees an HTTP/2
    /// protocol error, a TLS client a handshake failure (untrusted server, or no client certificate). Also says
    /// whether it is a certain TLS refusal (a certificate rejected by either side), which no retry will change.
    fn explain(&self, s: Status, addr: &str) -> (Status, bool) {
        if !matches!(s.code(), Code::Internal | Code::Unknown | Code::Unavailable | Code::Cancelled)
            || s.metadata().contains_key("grpc-status")
        {
            return (s, false);
        }
        // The innermost cause is the telling one ("received fatal alert: CertificateRequired").
        let mut cause = s.message().to_string();
        let mut src = std::error::Error::source(&s);
        while let Some(e) = src {
            cause = e.to_string();
            src = e.source();
        }
        let m = format!("{} {cause}", s.message()).to_ascii_lowercase();
        let plain = !(addr.starts_with("https://") || (self.tls.is_some() && !addr.starts_with("http://")));
        if plain && (m.contains("h2 protocol error") || m.contains("frame with invalid size")) {
            let s = Status::unavailable(format!(
                "the connection failed ({}): the server probably speaks TLS; pass --cacert (and --cert, --key if it \
                 requires client certificates)",
                s.message()
            ));
            return (s, false);
        }
        // A server that requires a client certificate refuses it after the client's handshake completed (TLS 1.3),
        // so the first request may just see its connection cancelled.
        let tls_words =
            ["certificate", "handshake", "tls", "alert", "operation was canceled", "transport error", "reset"];
        let down = m.contains("tcp connect error") || m.contains("connection refused") || m.contains("dns error");
        if !plain && !down && tls_words.iter().any(|w| m.contains(w)) {
            // rustls: "received fatal alert: CertificateRequired" (the server's verdict on us), "invalid peer
            // certificate: UnknownIssuer" (ours on the server).
            let refused = m.contains("fatal alert") || m.contains("invalid peer certificate");
            let s = Status::unavailable(format!(
                "TLS failed ({cause}): check --cacert (the CA that signed the server's certificate) and, if the server \
                 requires client certificates, --cert and --key"
            ));
            return (s, refused);
        }
        (s, false)
    }

    fn request<T>(msg: T, left: Duration) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(left);
        r
    }

    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<pb::PutResponse, Status> {
        self.put_with_lease(key, value, 0).await
    }

    /// A put attaching the key to `lease` (0 = none, which detaches it from one it had).
    pub async fn put_with_lease(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<pb::PutResponse, Status> {
        let msg = pb::PutRequest { key: key.into(), value: value.into(), prev_kv: false, lease };
        self.call(Retry::NotSent, |addr, left| {
            let msg = msg.clone();
            async move { Ok(self.kv(&addr)?.put(Self::request(msg, left)).await?.into_inner()) }
        })
        .await
    }

    pub async fn get(&self, key: impl Into<Vec<u8>>, serializable: bool) -> Result<pb::GetResponse, Status> {
        self.get_at(key, serializable, 0).await
    }

    /// Reads `key` as it was at `revision` (0 = now).
    pub async fn get_at(
        &self,
        key: impl Into<Vec<u8>>,
        serializable: bool,
        revision: i64,
    ) -> Result<pb::GetResponse, Status> {
        let msg = pb::GetRequest { key: key.into(), serializable, revision };
        self.call(Retry::Idempotent, |addr, left| {
            let msg = msg.clone();
            async move { Ok(self.kv(&addr)?.get(Self::request(msg, left)).await?.into_inner()) }
        })
        .await
    }

    pub async fn delete(&self, msg: pb::DeleteRequest) -> Result<pb::DeleteResponse, Status> {
        self.call(Retry::NotSent, |addr, left| {
            let msg = msg.clone();
            async move { Ok(self.kv(&addr)?.delete(Self::request(msg, left)).await?.into_inner()) }
        })
        .await
    }

    pub async fn range(&self, msg: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        self.call(Retry::Idempotent, |addr, left| {
            let msg = msg.clone();
            async move { Ok(self.kv(&addr)?.range(Self::request(msg, left)).await?.into_inner()) }
        })
        .await
    }

    pub async fn txn(&self, msg: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        self.call(Retry::NotSent, |addr, left| {
            let msg = msg.clone();
            async move { Ok(self.kv(&addr)?.txn(Self::request(msg, left)).await?.into_inner()) }
        })
        .await
    }

    /// Opens a watch on some live node. The stream's first message confirms the watch (no events).
    pub async fn watch(&self, msg: pb::WatchRequest) -> Result<(String, tonic::Streaming<pb::WatchResponse>), Status> {
        self.call(Retry::Idempotent, |addr, _left| {
            let msg = msg.clone();
            async move {
                let stream = self.kv(&addr)?.watch(Request::new(msg)).await?.into_inner();
                Ok((addr, stream))
            }
        })
        .await
    }

    /// The status of every endpoint, each on its own (a dead node is an error in its slot, not a failure).
    pub async fn status_all(&self) -> Vec<(String, Result<pb::StatusResponse, Status>)> {
        let futs = self.endpoints.iter().map(|addr| async move {
            let res = async {
                let mut c = self.cluster(addr)?;
                let r = tokio::time::timeout(self.timeout.min(Duration::from_secs(2)), c.status(pb::StatusRequest {}))
                    .await;
                match r {
                    Ok(r) => Ok(r?.into_inner()),
                    Err(_) => Err(Status::deadline_exceeded("no answer")),
                }
            }
            .await;
            (addr.clone(), res)
        });
        futures::future::join_all(futs).await
    }

    pub async fn status(&self, addr: &str) -> Result<pb::StatusResponse, Status> {
        Ok(self.cluster(addr)?.status(Self::request(pb::StatusRequest {}, self.timeout)).await?.into_inner())
    }

    pub async fn member_list(&self) -> Result<pb::MemberListResponse, Status> {
        self.call(Retry::Idempotent, |addr, left| async move {
            Ok(self.cluster(&addr)?.member_list(Self::request(pb::MemberListRequest {}, left)).await?.into_inner())
        })
        .await
    }

    /// Adds member `id` as a learner, by its peer address (and its client address, if known).
    pub async fn member_add(&self, id: u64, peer_addr: &str, addr: &str) -> Result<pb::MemberAddResponse, Status> {
        let msg = pb::MemberAddRequest { id, addr: addr.to_string(), peer_addr: peer_addr.to_string() };
        self.call(Retry::NotSent, |a, left| {
            let msg = msg.clone();
            async move { Ok(self.cluster(&a)?.member_add(Self::request(msg, left)).await?.into_inner()) }
        })
        .await
    }

    pub async fn member_promote(&self, id: u64) -> Result<pb::MemberPromoteResponse, Status> {
        self.call(Retry::NotSent, |a, left| async move {
            Ok(self
                .cluster(&a)?
                .member_promote(Self::request(pb::MemberPromoteRequest { id }, left))
                .await?
                .into_inner())
        })
        .await
    }

    pub fn lease_service(&self, addr: &str) -> Result<LeaseClient<Channel>, Status> {
        Ok(LeaseClient::new(self.channel(addr)?))
    }

    /// Grants a lease of `ttl` seconds (`id` 0: the server picks one).
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<pb::LeaseGrantResponse, Status> {
        self.call(Retry::NotSent, |a, left| async move {
            let msg = pb::LeaseGrantRequest { ttl, id };
            Ok(self.lease_service(&a)?.grant(Self::request(msg, left)).await?.into_inner())
        })
        .await
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<pb::LeaseRevokeResponse, Status> {
        self.call(Retry::NotSent, |a, left| async move {
            Ok(self.lease_service(&a)?.revoke(Self::request(pb::LeaseRevokeRequest { id }, left)).await?.into_inner())
        })
        .await
    }

    /// One renewal (idempotent, so retried freely): the TTL renewed for, 0 if the lease does not exist.
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
        self.call(Retry::Idempotent, |a, left| async move {
            let msg = pb::LeaseKeepAliveRequest { id };
            Ok(self.lease_service(&a)?.keep_alive_once(Self::request(msg, left)).await?.into_inner())
        })
        .await
    }

    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<pb::LeaseTimeToLiveResponse, Status> {
        self.call(Retry::Idempotent, |a, left| async move {
            let msg = pb::LeaseTimeToLiveRequest { id, keys };
            Ok(self.lease_service(&a)?.time_to_live(Self::request(msg, left)).await?.into_inner())
        })
        .await
    }

    pub async fn lease_list(&self) -> Result<pb::LeaseLeasesResponse, Status> {
        self.call(Retry::Idempotent, |a, left| async move {
            Ok(self.lease_service(&a)?.leases(Self::request(pb::LeaseLeasesRequest {}, left)).await?.into_inner())
        })
        .await
    }

    pub async fn member_remove(&self, id: u64) -> Result<pb::MemberRemoveResponse, Status> {
        self.call(Retry::NotSent, |a, left| async move {
            Ok(self.cluster(&a)?.member_remove(Self::request(pb::MemberRemoveRequest { id }, left)).await?.into_inner())
        })
        .await
    }
}
