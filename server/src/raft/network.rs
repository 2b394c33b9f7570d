//! openraft's `RaftNetwork` over the peer-only gRPC service `raftkv.v1.Raft`.
//!
//! Each Raft RPC is one unary gRPC call whose body is openraft's request, postcard-encoded — except
//! AppendEntries, which goes as one message on a long-lived stream per caller ([`super::append_stream`]) — and
//! the reply carries openraft's `Result` the same way, so a remote Raft error (a higher vote, say) arrives as the
//! same typed error openraft would have produced locally. Connection failures map to `Unreachable` (openraft backs off) and other
//! transport failures to `Network`.
//!
//! Every envelope names sender, receiver and cluster, and carries the sender's client address (how members learn
//! each other's client addresses). With a peer secret, envelopes are signed and a connection is proven with
//! `Hello` before any Raft data goes out ([`super::peer_auth`]); with peer TLS, both ends present certificates of
//! the peer CA. Channels are cached per address ([`PeerChannels`]): one cache for peer ports, one (with the
//! client TLS files) for forwarding requests to the leader's client port.
//!
//! [`Traffic`] counts the RPCs sent to each peer (and how many are in flight) and when a leader last reached this
//! node: the dashboard draws them as RaftScope draws messages and election timers.
//!
//! **AppendEntries size and openraft's timeouts** (issue 9, items 3 and 10). In openraft 0.9.25 every
//! AppendEntries — heartbeat or not — is sent by the target's one replication task
//! (`replication/mod.rs::send_log_entries`), wrapped in `timeout(heartbeat_interval, network.append_entries(..))`
//! with `RPCOption::new(heartbeat_interval)`: the RPC's whole budget is one heartbeat interval (100 ms by
//! default), whatever it carries, and the outer timeout is openraft's own, so no `hard_ttl` this layer chooses
//! can extend it. A timed-out AppendEntries is reported to RaftCore, which sends it again from the follower's
//! matching index; heartbeats are queued behind it in the same task (the read-index check in
//! `raft_core.rs::handle_check_is_leader_request` sends its own empty AppendEntries, same timeout). So an entry
//! that cannot be encoded, sent, decoded and made durable within one heartbeat interval is retried forever and
//! never commits, and the followers, starved of timely heartbeats, elect new leaders. That is what a debug build
//! did with a 1.5 MiB put, and any build with three concurrent 30 MiB txns.
//!
//! The fix keeps every RPC well inside that budget instead of stretching it (stretching would need a longer
//! heartbeat interval, hence longer election timeouts and slower failover):
//! - the request limit (`--max-request-bytes`) and the proposer's batch cap (`raft::proposer::MAX_BATCH_BYTES`)
//!   bound one entry to a few MiB;
//! - reads for replication stop at [`MAX_APPEND_BYTES`] (`LogStore::limited_get_log_entries`), and
//!   [`RaftNetwork::append_entries`] checks the summed encoded size of the entries *before* encoding against a
//!   budget that scales with the RPC's timeout (`append_budget`: 4 MiB for 100 ms) and answers `PayloadTooLarge`
//!   with an entries hint that fits (openraft resends at once with that many), so a lagging follower catches up
//!   in many small RPCs rather than one of up to 512 × 9.5 MiB;
//! - values are encoded as byte strings (`raft::wire_bytes`), so the five encode/decode passes of an entry cost
//!   memcpy rather than a serde call per byte — the cost that made a debug build miss the deadline.
//!
//! The [`FaultInjector`] is the hook the local cluster controller and the chaos suite use to partition a node:
//! while a peer is blocked, every message to or from it is dropped as if the network had failed. It is inert
//! unless the node was started with fault injection enabled.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use openraft::{
    error::{InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable},
    network::{RPCOption, RaftNetwork, RaftNetworkFactory},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
        VoteResponse,
    },
};
use parking_lot::{Mutex, RwLock};
use raftkv_proto::{raft_client::RaftClient, PeerMessage};
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use super::{
    append_stream::AppendStreams,
    decode, encode,
    peer_auth::{nonce, Direction, HelloInfo, PeerSecret},
    Node, NodeId, TypeConfig,
};

/// Wire version of the peer protocol (bumped on incompatible changes to openraft's message shapes).
pub const PEER_PROTOCOL_VERSION: u32 = 1;

/// Largest gRPC message between peers (both directions).
pub const MAX_PEER_MESSAGE: usize = 64 << 20;

/// Most encoded entry bytes in one AppendEntries (beyond its first entry): small enough to be sent and made
/// durable within openraft's AppendEntries timeout (one heartbeat interval) on a slow machine.
pub const MAX_APPEND_BYTES: usize = 4 << 20;

/// A client of a peer's `raftkv.v1.Raft` service, with the peer message limit both ways.
pub(crate) fn raft_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel).max_decoding_message_size(MAX_PEER_MESSAGE).max_encoding_message_size(MAX_PEER_MESSAGE)
}

/// Largest AppendEntries body that can be sent at all (one entry larger than this could never replicate).
const MAX_APPEND_BODY: usize = MAX_PEER_MESSAGE - (1 << 20);

/// Bytes an AppendEntries may carry (beyond its first entry) given openraft's timeout for it: what a slow
/// machine (a debug build on two busy cores) encodes, sends, decodes and fsyncs in that time, assumed 40 KiB per
/// millisecond (4 MiB in the default 100 ms), between 1 MiB and [`MAX_APPEND_BYTES`] (the replication read cap).
fn append_budget(timeout: Duration) -> usize {
    let ms = usize::try_from(timeout.as_millis()).unwrap_or(usize::MAX);
    ms.saturating_mul(40 << 10).clamp(1 << 20, MAX_APPEND_BYTES)
}

/// How many of `sizes` (encoded entry sizes, in order) fit in `budget` bytes: at least one.
fn entries_that_fit(sizes: impl IntoIterator<Item = usize>, budget: usize) -> u64 {
    let mut total = 0;
    let mut n = 0;
    for size in sizes {
        total += size;
        if n > 0 && total > budget {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// Partitions a node from chosen peers, for failure testing. Disabled = never blocks anything.
#[derive(Default)]
pub struct FaultInjector {
    enabled: bool,
    blocked: RwLock<HashSet<NodeId>>,
}

impl FaultInjector {
    pub fn new(enabled: bool) -> Self {
        Self { enabled, blocked: RwLock::default() }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Is traffic to/from `peer` currently dropped?
    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.enabled && self.blocked.read().contains(&peer)
    }

    /// Replaces the set of blocked peers. Returns false (and does nothing) when fault injection is disabled.
    pub fn set_blocked(&self, peers: impl IntoIterator<Item = NodeId>) -> bool {
        if !self.enabled {
            return false;
        }
        *self.blocked.write() = peers.into_iter().collect();
        true
    }

    pub fn blocked(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.blocked.read().iter().copied().collect();
        v.sort_unstable();
        v
    }
}

/// A cache of lazily connected gRPC channels, by address, over TLS when `tls` is set (the cache is dropped
/// whenever the certificates are reloaded, so new connections use the new files).
pub struct PeerChannels {
    tls: Option<crate::tls::ReloadingServer>,
    channels: Mutex<(u64, HashMap<String, Channel>)>,
    /// Open AppendEntries streams over these channels (see [`super::append_stream`]).
    pub append_streams: AppendStreams,
}

impl PeerChannels {
    pub fn new(tls: Option<crate::tls::ReloadingServer>) -> Self {
        Self { tls, channels: Mutex::default(), append_streams: AppendStreams::default() }
    }

    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn get(&self, addr: &str) -> Result<Channel, String> {
        let mut map = self.channels.lock();
        let generation = self.tls.as_ref().map_or(0, |t| t.generation());
        if map.0 != generation {
            *map = (generation, HashMap::new());
            self.append_streams.clear();
        }
        if let Some(ch) = map.1.get(addr) {
            return Ok(ch.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            let config = tls.files().client_config().map_err(|e| e.to_string())?;
            endpoint = endpoint.tls_config(config).map_err(|e| format!("TLS for {addr}: {e}"))?;
        }
        let ch = endpoint.connect_lazy();
        map.1.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

/// What this node sent to one peer (see [`Traffic`]).
#[derive(Clone, Debug, Default)]
pub struct PeerStats {
    pub append_entries: u64,
    pub entries: u64,
    pub votes: u64,
    pub snapshot_chunks: u64,
    pub failures: u64,
    pub in_flight: u32,
    pub last_answer: Option<Instant>,
    pub last_error: String,
}

/// Raft RPC counts per peer, and the last time a leader reached this node.
#[derive(Default)]
pub struct Traffic {
    peers: Mutex<BTreeMap<NodeId, PeerStats>>,
    leader_contact: Mutex<Option<Instant>>,
}

impl Traffic {
    fn sent(&self, peer: NodeId, rpc: Rpc, entries: u64) {
        let mut peers = self.peers.lock();
        let p = peers.entry(peer).or_default();
        match rpc {
            Rpc::AppendEntries => {
                p.append_entries += 1;
                p.entries += entries;
            }
            Rpc::Vote => p.votes += 1,
            Rpc::InstallSnapshot => p.snapshot_chunks += 1,
            Rpc::Hello | Rpc::TimeoutNow => {}
        }
        p.in_flight += 1;
    }

    fn done(&self, peer: NodeId, outcome: Result<(), String>) {
        let mut peers = self.peers.lock();
        let p = peers.entry(peer).or_default();
        p.in_flight = p.in_flight.saturating_sub(1);
        match outcome {
            Ok(()) => p.last_answer = Some(Instant::now()),
            Err(e) => {
                p.failures += 1;
                p.last_error = e;
            }
        }
    }

    /// A leader's AppendEntries was accepted (this resets a follower's election timer).
    pub fn leader_contact(&self) {
        *self.leader_contact.lock() = Some(Instant::now());
    }

    pub fn since_leader_contact(&self) -> Option<Duration> {
        self.leader_contact.lock().map(|t| t.elapsed())
    }

    pub fn peers(&self) -> BTreeMap<NodeId, PeerStats> {
        self.peers.lock().clone()
    }
}

/// Marks an RPC in flight until dropped; an RPC dropped before it finished (openraft gave up on it) is a failure.
struct InFlight<'a> {
    traffic: &'a Traffic,
    peer: NodeId,
    outcome: Option<Result<(), String>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| Err("cancelled before an answer".into()));
        self.traffic.done(self.peer, outcome);
    }
}

/// Shared state of the peer network of one node.
pub struct NetworkShared {
    pub id: NodeId,
    /// 0 until known (a node that joins an existing cluster learns it from its first peer message).
    pub cluster_id: AtomicU64,
    /// This node's advertised client address, announced in every peer message.
    pub client_addr: String,
    /// Connections to peers' peer ports (peer TLS when configured).
    pub peer_channels: PeerChannels,
    /// Connections to other members' client ports, for forwarding requests to the leader (client TLS).
    pub client_channels: PeerChannels,
    pub faults: FaultInjector,
    /// Shared secret that signs every peer message (see [`peer_auth`](super::peer_auth)); None = peers are not
    /// authenticated by a secret (peer TLS, a trusted network, or loopback).
    pub peer_secret: Option<PeerSecret>,
    pub traffic: Traffic,
    /// Client addresses members announced in authenticated peer messages (the leader records them in the
    /// membership; see [`announce`](super::announce)).
    pub client_addrs: Mutex<BTreeMap<NodeId, String>>,
    /// False while a fresh node decides whether it may bootstrap (`node::refuse_amnesia`): it answers `Hello`
    /// but takes no part in Raft yet, so no peer can count it as a member that has run before it has.
    pub taking_part: std::sync::atomic::AtomicBool,
    /// Which followers accepted this leader's messages, and when (see [`super::read_lease`]).
    pub read_lease: super::read_lease::ReadLease,
}

/// Why a peer RPC failed below Raft.
#[derive(Debug)]
pub enum PeerCallError {
    /// Nothing reached the peer (connection refused, partitioned, not a peer): openraft backs off.
    Unreachable(String),
    /// The call failed in flight, or the answer was unusable.
    Network(String),
}

impl std::fmt::Display for PeerCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerCallError::Unreachable(m) | PeerCallError::Network(m) => f.write_str(m),
        }
    }
}

impl NetworkShared {
    /// Sends one envelope to node `target` at peer address `addr` and returns the (authenticated) reply body.
    pub async fn call(
        &self,
        target: NodeId,
        addr: &str,
        rpc: Rpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerCallError> {
        use PeerCallError::Unreachable;
        if self.faults.is_blocked(target) {
            return Err(Unreachable(format!("fault injection: node {target} is partitioned")));
        }
        let channel = self.peer_channels.get(addr).map_err(Unreachable)?;
        let mut msg = PeerMessage {
            from: self.id,
            to: target,
            cluster_id: self.cluster_id.load(Ordering::Relaxed),
            version: PEER_PROTOCOL_VERSION,
            body,
            client_addr: self.client_addr.clone(),
            ..Default::default()
        };
        let challenge = nonce();
        if let Some(secret) = &self.peer_secret {
            secret.sign(Direction::Request, rpc.name(), &mut msg, challenge.clone());
        }
        let streams = &self.peer_channels.append_streams;
        if matches!(rpc, Rpc::AppendEntries) && !streams.unary_only(addr) {
            let answer = tokio::time::timeout(timeout, streams.call(addr, channel, msg)).await;
            let reply = answer.unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")));
            return self.check_reply(target, addr, rpc, reply, &challenge);
        }
        let mut client = raft_client(channel);
        let mut request = tonic::Request::new(msg);
        request.set_timeout(timeout);
        let reply = match rpc {
            Rpc::Hello => client.hello(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
            Rpc::TimeoutNow => client.timeout_now(request).await,
        };
        self.check_reply(target, addr, rpc, reply.map(tonic::Response::into_inner), &challenge)
    }

    /// Maps a failed call to [`PeerCallError`], checks the answer came from `target` (and, with a peer secret,
    /// that it is signed over `challenge`), and returns its body.
    fn check_reply(
        &self,
        target: NodeId,
        addr: &str,
        rpc: Rpc,
        reply: Result<PeerMessage, tonic::Status>,
        challenge: &[u8],
    ) -> Result<Vec<u8>, PeerCallError> {
        use PeerCallError::{Network as Net, Unreachable};
        let reply = match reply {
            Ok(r) => r,
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Err(Unreachable(format!("node {target} at {addr}: {}", status.message())));
            }
            Err(status) => {
                return Err(Net(format!("node {target} at {addr}: {:?}: {}", status.code(), status.message())));
            }
        };
        if let Some(secret) = &self.peer_secret {
            // The answer proves the other end holds the secret; anything else is not a peer.
            secret
                .verify(Direction::Reply, rpc.name(), &reply, Some(challenge))
                .map_err(|e| Unreachable(format!("node {target} at {addr} is not a peer: {e}")))?;
        }
        if reply.from != target {
            return Err(Unreachable(format!("{addr} answered as node {}, not node {target}", reply.from)));
        }
        // A Hello answer says nothing about having taken part (a fresh node answers it while deciding whether to
        // start): only Raft traffic counts as the member having run.
        if !reply.client_addr.is_empty() && !matches!(rpc, Rpc::Hello) {
            self.client_addrs.lock().insert(target, reply.client_addr.clone());
        }
        Ok(reply.body)
    }

    /// Asks the node at peer address `addr` who it is, proving it is a peer (secret or peer TLS).
    pub async fn hello(&self, target: NodeId, addr: &str, timeout: Duration) -> Result<HelloInfo, PeerCallError> {
        let body = self.call(target, addr, Rpc::Hello, Vec::new(), timeout).await?;
        decode(&body).map_err(|e| PeerCallError::Network(format!("undecodable hello from {addr}: {e}")))
    }

    /// Tells member `target` (at peer address `addr`) to start an election now: leadership transfer, sent by the
    /// leader of `term` once it stopped its heartbeats.
    pub async fn timeout_now(
        &self,
        target: NodeId,
        addr: &str,
        term: u64,
        timeout: Duration,
    ) -> Result<(), PeerCallError> {
        let body = self.call(target, addr, Rpc::TimeoutNow, encode(&term), timeout).await?;
        let answer: Result<(), String> =
            decode(&body).map_err(|e| PeerCallError::Network(format!("undecodable answer from {addr}: {e}")))?;
        answer.map_err(PeerCallError::Network)
    }

    /// The client address of member `id` (the membership's, else what it announced).
    pub fn client_addr_of(&self, id: NodeId, node: Option<&Node>) -> String {
        match node {
            Some(n) if !n.addr.is_empty() => n.addr.clone(),
            _ if id == self.id => self.client_addr.clone(),
            _ => self.client_addrs.lock().get(&id).cloned().unwrap_or_default(),
        }
    }
}

/// openraft's network factory: one [`PeerClient`] per target.
#[derive(Clone)]
pub struct Network {
    pub shared: Arc<NetworkShared>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerClient { target, node: node.clone(), shared: self.shared.clone(), proven: false }
    }
}

/// Sends Raft RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    node: Node,
    shared: Arc<NetworkShared>,
    /// With a peer secret: the target answered a `Hello` challenge since the last failure. Raft data is sent
    /// only to a proven peer.
    proven: bool,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

/// The peer RPCs.
#[derive(Clone, Copy, Debug)]
pub enum Rpc {
    Hello,
    Vote,
    AppendEntries,
    InstallSnapshot,
    TimeoutNow,
}

impl Rpc {
    /// The name the MAC binds.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Hello => "hello",
            Rpc::Vote => "vote",
            Rpc::AppendEntries => "append_entries",
            Rpc::InstallSnapshot => "install_snapshot",
            Rpc::TimeoutNow => "timeout_now",
        }
    }
}

impl PeerClient {
    /// Sends one RPC carrying `entries` log entries, counting it in [`Traffic`].
    async fn call<Resp, E>(&mut self, rpc: Rpc, body: Vec<u8>, entries: u64, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let shared = self.shared.clone();
        shared.traffic.sent(self.target, rpc, entries);
        let mut in_flight = InFlight { traffic: &shared.traffic, peer: self.target, outcome: None };
        let res = self.send(rpc, body, option).await;
        in_flight.outcome = Some(match &res {
            Ok(_) | Err(RPCError::RemoteError(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        });
        res
    }

    async fn send<Resp, E>(&mut self, rpc: Rpc, body: Vec<u8>, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let to_rpc_error = |e: PeerCallError| match e {
            PeerCallError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m))),
            PeerCallError::Network(m) => RPCError::Network(NetworkError::new(&std::io::Error::other(m))),
        };
        let (shared, target, addr) = (self.shared.clone(), self.target, self.node.peer_addr.clone());
        if shared.peer_secret.is_some() && !self.proven {
            shared.hello(target, &addr, option.hard_ttl()).await.map_err(to_rpc_error)?;
            self.proven = true;
        }
        let reply = shared.call(target, &addr, rpc, body, option.hard_ttl()).await.map_err(|e| {
            self.proven = false;
            to_rpc_error(e)
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> = decode(&reply).map_err(|e| {
            RPCError::Network(NetworkError::new(&std::io::Error::other(format!("undecodable reply: {e}"))))
        })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

/// The postcard-encoded size of one entry, computed without encoding it.
fn encoded_size(e: &super::Entry) -> usize {
    postcard::serialize_with_flavor(e, postcard::ser_flavors::Size::default()).unwrap_or(usize::MAX / 2)
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        // Size before encoding: openraft resends at once with the hinted number of entries.
        let sizes: Vec<usize> = rpc.entries.iter().map(encoded_size).collect();
        let fit = entries_that_fit(sizes.iter().copied(), append_budget(option.hard_ttl()));
        if (fit as usize) < rpc.entries.len() {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit)));
        }
        let total: usize = sizes.iter().sum();
        if total > MAX_APPEND_BODY {
            // One entry too large for any message: no retry can help; say so instead of sending it.
            return Err(RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
                "an entry of {total} bytes exceeds the peer message limit of {MAX_PEER_MESSAGE} bytes"
            )))));
        }
        let body = encode(&rpc);
        let sent = super::read_lease::boottime();
        let res: RpcResult<AppendEntriesResponse<NodeId>, _> =
            self.call(Rpc::AppendEntries, body, rpc.entries.len() as u64, &option).await;
        if matches!(&res, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            // The follower accepted this vote (and will refuse other candidates for a while): renews the lease.
            self.shared.read_lease.acked(self.target, rpc.vote, sent);
        }
        res
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Rpc::InstallSnapshot, encode(&rpc), 0, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(Rpc::Vote, encode(&rpc), 0, &option).await
    }
}

#[cfg(test)]
mod append_size_tests {
    use super::*;

    #[test]
    fn hint_fits_the_budget_and_always_sends_one() {
        let mib = 1 << 20;
        assert_eq!(entries_that_fit([mib; 10], 4 * mib), 4);
        assert_eq!(entries_that_fit([9 * mib, mib], 4 * mib), 1, "one large entry still goes alone");
        assert_eq!(entries_that_fit([10; 3], 4 * mib), 3);
        assert_eq!(entries_that_fit([], 4 * mib), 1);
    }

    #[test]
    fn budget_scales_with_the_timeout_within_bounds() {
        assert_eq!(append_budget(Duration::from_millis(10)), 1 << 20);
        assert!(append_budget(Duration::from_millis(50)) < append_budget(Duration::from_millis(100)));
        assert_eq!(append_budget(Duration::from_secs(60)), MAX_APPEND_BYTES);
    }
}
