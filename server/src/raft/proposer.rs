//! Group proposals: many client writes, one Raft log entry — with a bounded queue.
//!
//! openraft 0.9 appends each proposal with its own WAL flush before it takes the next one, so one log entry per
//! client write caps a leader at one fsync per write. The proposer queues writes and, whenever a proposal slot is
//! free, proposes what is queued as one [`Command::Batch`] entry. Under load, batches grow by themselves
//! (writes pile up while the previous batch is being made durable); a lone writer still gets a one-command entry
//! with no added delay.
//!
//! Every command in a batch is applied in order and gets its own revision, exactly as if proposed alone; the
//! batch commits or fails as a whole.
//!
//! Bounds (issue 9, items 3 and 7):
//! - a batch is sized by the real postcard-encoded size of its commands ([`encoded_size`], a Txn included) and
//!   holds at most [`MAX_BATCH_BYTES`] unless it is a single command (which `--max-request-bytes` bounds), so an
//!   entry stays far below the WAL's 64 MiB record limit and the peer message limit, and each AppendEntries stays
//!   small enough to be sent within openraft's RPC timeout (see `raft::network`);
//! - the queue holds at most [`QueueLimits::max_commands`] writes and [`QueueLimits::max_bytes`] bytes; past that a
//!   write is refused at once with [`ProposeError::QueueFull`] (nothing was proposed: the client may retry);
//! - a queued write whose client gave up (its reply channel is closed) or whose deadline passed is dropped before
//!   it is proposed, and answered [`ProposeError::NotProposed`]. The waiting side and the batching task settle
//!   who owns the write with one compare-and-swap (`Ticket`), so "not proposed" is never said of a write that
//!   was put into a batch.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU8, AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use openraft::error::{ClientWriteError, RaftError};
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify, Semaphore};

use super::{Command, CommandResponse, Node, NodeId, Raft};

/// Batches in flight at once by default: one being made durable while the next fills up.
pub const DEFAULT_IN_FLIGHT: usize = 2;
/// Most commands in one batch.
const MAX_BATCH_COMMANDS: usize = 1024;
/// Most encoded bytes in one batch of several commands. Far below the WAL record limit (64 MiB) and the peer
/// message limit, and small enough that one AppendEntries carrying it is encoded, sent, decoded and fsynced within
/// openraft's AppendEntries timeout on a slow machine.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// How many writes, and how many bytes of them, may wait to be proposed.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_commands: usize,
    pub max_bytes: usize,
}

/// Why a proposal failed; the caller maps it to an API error.
#[derive(Debug, Clone)]
pub enum ProposeError {
    /// Leadership moved while the proposal was in flight: it may or may not commit.
    LeadershipLost,
    ChangeMembership(String),
    Stopped(String),
    /// The queue is full; the write was not queued (nothing was proposed).
    QueueFull(String),
    /// The write's deadline passed while it was queued; it was dropped without being proposed.
    NotProposed,
}

type Reply = oneshot::Sender<Result<CommandResponse, ProposeError>>;

const QUEUED: u8 = 0;
const PROPOSED: u8 = 1;
const ABANDONED: u8 = 2;

/// Who owns a queued write: the batching task (it proposed it) or the waiting caller (it gave up first).
#[derive(Clone, Default)]
struct Ticket(Arc<AtomicU8>);

impl Ticket {
    fn claim(&self, to: u8) -> bool {
        self.0.compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

struct Proposal {
    cmd: Command,
    bytes: usize,
    deadline: Instant,
    ticket: Ticket,
    reply: Reply,
}

struct Queue {
    items: Mutex<VecDeque<Proposal>>,
    bytes: AtomicUsize,
    wake: Notify,
    limits: QueueLimits,
}

/// Handle to the batching task of one node.
#[derive(Clone)]
pub struct Proposer {
    queue: Arc<Queue>,
}

/// A pending proposal, as [`Proposer::propose`] returns it.
pub struct Pending {
    ticket: Ticket,
    rx: oneshot::Receiver<Result<CommandResponse, ProposeError>>,
}

impl Pending {
    /// Waits for the outcome until `deadline`. `Err(None)` means the deadline passed after the write was put into a
    /// batch: its outcome is unknown. A write still queued at the deadline is withdrawn and reported
    /// [`ProposeError::NotProposed`].
    pub async fn wait(mut self, deadline: Instant) -> Result<CommandResponse, Option<ProposeError>> {
        match tokio::time::timeout_at(deadline.into(), &mut self.rx).await {
            Ok(Ok(r)) => r.map_err(Some),
            Ok(Err(_)) => Err(Some(ProposeError::Stopped("proposer stopped".into()))),
            Err(_) if self.ticket.claim(ABANDONED) => Err(Some(ProposeError::NotProposed)),
            Err(_) => Err(None),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A caller that stops waiting (its client went away) withdraws a write that is still queued.
        self.ticket.claim(ABANDONED);
    }
}

impl Proposer {
    /// Starts the batching task; at most `in_flight` batches are proposed and not yet applied at once.
    pub fn start(raft: Raft, in_flight: usize, limits: QueueLimits) -> Self {
        let queue = Arc::new(Queue {
            items: Mutex::new(VecDeque::new()),
            bytes: AtomicUsize::new(0),
            wake: Notify::new(),
            limits,
        });
        let q = queue.clone();
        tokio::spawn(async move {
            run(in_flight.max(1), q, move |cmd| {
                let raft = raft.clone();
                async move { raft.client_write(cmd).await.map(|r| r.data) }
            })
            .await
        });
        Self { queue }
    }

    /// Queues `cmd` to be proposed before `deadline`, or refuses it at once if the queue is full.
    pub fn propose(&self, cmd: Command, deadline: Instant) -> Result<Pending, ProposeError> {
        let bytes = encoded_size(&cmd);
        let q = &self.queue;
        let (reply, rx) = oneshot::channel();
        let ticket = Ticket::default();
        {
            let mut items = q.items.lock();
            let queued = q.bytes.load(Ordering::Relaxed);
            // One write is always accepted into an empty queue, so a single request at the request limit fits.
            if !items.is_empty() && (items.len() >= q.limits.max_commands || queued + bytes > q.limits.max_bytes) {
                return Err(ProposeError::QueueFull(format!(
                    "the leader's proposal queue is full ({} writes, {} bytes waiting; limits \
                     --max-pending-proposals {} and --max-pending-proposal-bytes {}); nothing was proposed, \
                     retry later",
                    items.len(),
                    queued,
                    q.limits.max_commands,
                    q.limits.max_bytes
                )));
            }
            q.bytes.fetch_add(bytes, Ordering::Relaxed);
            items.push_back(Proposal { cmd, bytes, deadline, ticket: ticket.clone(), reply });
        }
        q.wake.notify_one();
        Ok(Pending { ticket, rx })
    }

    /// Writes and bytes waiting to be proposed.
    pub fn queued(&self) -> (usize, usize) {
        (self.queue.items.lock().len(), self.queue.bytes.load(Ordering::Relaxed))
    }
}

/// The exact size of `cmd` postcard-encoded, as it will be in the log entry.
pub fn encoded_size(cmd: &Command) -> usize {
    postcard::serialize_with_flavor(cmd, postcard::ser_flavors::Size::default())
        .expect("sizing raftkv's own types cannot fail")
}

impl Queue {
    /// Takes the next batch: live proposals only, at most [`MAX_BATCH_COMMANDS`] and [`MAX_BATCH_BYTES`] (a single
    /// command may be larger). Dropped ones are answered here.
    fn take_batch(&self, now: Instant) -> Vec<Proposal> {
        let mut items = self.items.lock();
        let mut batch: Vec<Proposal> = Vec::new();
        let mut bytes = 0;
        while let Some(p) = items.front() {
            if !batch.is_empty() && (batch.len() >= MAX_BATCH_COMMANDS || bytes + p.bytes > MAX_BATCH_BYTES) {
                break;
            }
            let p = items.pop_front().expect("front exists");
            self.bytes.fetch_sub(p.bytes, Ordering::Relaxed);
            if p.reply.is_closed() || p.deadline <= now {
                // The client is gone or out of time: do not propose it. If the waiter already withdrew it, it
                // answered itself.
                if p.ticket.claim(ABANDONED) {
                    let _ = p.reply.send(Err(ProposeError::NotProposed));
                }
                continue;
            }
            if !p.ticket.claim(PROPOSED) {
                continue;
            }
            bytes += p.bytes;
            batch.push(p);
        }
        batch
    }
}

async fn run<F, Fut>(in_flight: usize, q: Arc<Queue>, write: F)
where
    F: Fn(Command) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = WriteResult> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    let write = Arc::new(write);
    loop {
        // Waiting for a slot is what lets the next batch fill up.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let batch = loop {
            let notified = q.wake.notified();
            let batch = q.take_batch(Instant::now());
            if !batch.is_empty() {
                break batch;
            }
            if q.items.lock().is_empty() {
                notified.await;
            } else {
                // Everything at the front was dropped; look again.
                tokio::task::yield_now().await;
            }
        };
        let write = write.clone();
        tokio::spawn(async move {
            let (mut cmds, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
            let entry = if cmds.len() == 1 { cmds.pop().expect("one command") } else { Command::Batch(cmds) };
            let result = write(entry).await;
            drop(slot);
            deliver(result, replies);
        });
    }
}

type WriteResult = Result<CommandResponse, RaftError<NodeId, ClientWriteError<NodeId, Node>>>;

fn deliver(result: WriteResult, replies: Vec<Reply>) {
    match result {
        Ok(CommandResponse::Batch(responses)) if responses.len() == replies.len() && replies.len() > 1 => {
            for (reply, resp) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok(resp));
            }
        }
        Ok(resp) if replies.len() == 1 => {
            let _ = replies.into_iter().next().expect("one reply").send(Ok(resp));
        }
        Ok(other) => {
            let err = ProposeError::Stopped(format!("state machine answered a batch with {other:?}"));
            replies.into_iter().for_each(|r| drop(r.send(Err(err.clone()))));
        }
        Err(e) => {
            let err = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ProposeError::LeadershipLost,
                RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                    ProposeError::ChangeMembership(e.to_string())
                }
                RaftError::Fatal(e) => ProposeError::Stopped(e.to_string()),
            };
            replies.into_iter().for_each(|r| drop(r.send(Err(err.clone()))));
        }
    }
}

/// Used by tests: a proposer whose "Raft" is `write`.
#[cfg(test)]
fn start_with<F, Fut>(in_flight: usize, limits: QueueLimits, write: F) -> Proposer
where
    F: Fn(Command) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = WriteResult> + Send + 'static,
{
    let queue =
        Arc::new(Queue { items: Mutex::new(VecDeque::new()), bytes: AtomicUsize::new(0), wake: Notify::new(), limits });
    tokio::spawn(run(in_flight, queue.clone(), write));
    Proposer { queue }
}

/// How long a test waits for something that must happen.
#[cfg(test)]
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn put(i: usize, len: usize) -> Command {
        Command::Put { key: format!("k{i}").into_bytes(), value: vec![7; len], prev_kv: false }
    }

    fn revision_of(cmd: &Command) -> CommandResponse {
        match cmd {
            Command::Batch(c) => CommandResponse::Batch(c.iter().map(revision_of).collect()),
            _ => CommandResponse::Put { revision: 1, prev_kv: None },
        }
    }

    /// A "Raft" that holds every write until `gate` is opened, and records what it was asked to propose.
    type FakeRaft = Box<dyn Fn(Command) -> futures::future::BoxFuture<'static, WriteResult> + Send + Sync>;

    fn gated() -> (Arc<Semaphore>, Arc<Mutex<Vec<Command>>>, FakeRaft) {
        let gate = Arc::new(Semaphore::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (g, s) = (gate.clone(), seen.clone());
        let write = move |cmd: Command| -> futures::future::BoxFuture<'static, WriteResult> {
            let (g, s) = (g.clone(), s.clone());
            Box::pin(async move {
                s.lock().push(cmd.clone());
                g.acquire().await.expect("gate").forget();
                Ok(revision_of(&cmd))
            })
        };
        (gate, seen, Box::new(write))
    }

    fn far() -> Instant {
        Instant::now() + PATIENCE
    }

    #[test]
    fn sizes_are_the_encoded_sizes_txns_included() {
        let txn = Command::Txn {
            compare: vec![],
            success: (0..20)
                .map(|i| crate::keyspace::TxnOp::Put {
                    key: vec![i],
                    value: vec![0; 100_000],
                    prev_kv: false,
                    ignore_value: false,
                    ignore_lease: false,
                    lease: 0,
                })
                .collect(),
            failure: vec![],
        };
        assert_eq!(encoded_size(&txn), super::super::encode(&txn).len());
        assert!(encoded_size(&txn) > 2_000_000, "a txn is not counted as 4 KiB any more");
        let p = put(1, 1000);
        assert_eq!(encoded_size(&p), super::super::encode(&p).len());
    }

    #[tokio::test]
    async fn full_queue_refuses_with_a_clear_error() {
        let (gate, _seen, write) = gated();
        let p = start_with(1, QueueLimits { max_commands: 3, max_bytes: 1 << 20 }, write);
        // The first write is taken into the (blocked) batch at once; wait for that, then fill the queue.
        let first = p.propose(put(0, 10), far()).unwrap();
        let started = Instant::now();
        while p.queued().0 != 0 {
            assert!(started.elapsed() < PATIENCE, "the first write was never taken");
            tokio::task::yield_now().await;
        }
        let queued: Vec<Pending> = (1..=3).map(|i| p.propose(put(i, 10), far()).unwrap()).collect();
        let err = p.propose(put(9, 10), far()).err().expect("a full queue refuses");
        match err {
            ProposeError::QueueFull(m) => {
                assert!(m.contains("--max-pending-proposals 3") && m.contains("nothing was proposed"), "{m}")
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        // By bytes too: one big write fits an empty queue, a second does not.
        let (gate2, _seen2, write2) = gated();
        let p2 = start_with(1, QueueLimits { max_commands: 100, max_bytes: 1000 }, write2);
        let _blocker = p2.propose(put(0, 10), far()).unwrap();
        let started = Instant::now();
        while p2.queued().0 != 0 {
            assert!(started.elapsed() < PATIENCE, "the first write was never taken");
            tokio::task::yield_now().await;
        }
        let _big = p2.propose(put(1, 900), far()).unwrap();
        assert!(matches!(p2.propose(put(2, 200), far()), Err(ProposeError::QueueFull(_))));
        // Once the blocked batch finishes, the queue drains and every accepted write is answered.
        gate.add_permits(10);
        first.wait(far()).await.unwrap();
        for w in queued {
            w.wait(far()).await.unwrap();
        }
        gate2.add_permits(10);
    }

    #[tokio::test]
    async fn expired_and_abandoned_writes_are_not_proposed() {
        let (gate, seen, write) = gated();
        let p = start_with(1, QueueLimits { max_commands: 100, max_bytes: 1 << 20 }, write);
        let first = p.propose(put(0, 10), far()).unwrap();
        let started = Instant::now();
        while seen.lock().is_empty() {
            assert!(started.elapsed() < PATIENCE, "the first write was never proposed");
            tokio::task::yield_now().await;
        }
        // Queued behind the blocked batch: one whose deadline has passed, one whose client gives up, one live.
        let expired = p.propose(put(1, 10), Instant::now()).unwrap();
        let abandoned = p.propose(put(2, 10), far()).unwrap();
        drop(abandoned);
        let live = p.propose(put(3, 10), far()).unwrap();
        gate.add_permits(10);
        first.wait(far()).await.unwrap();
        assert!(matches!(expired.wait(far()).await, Err(Some(ProposeError::NotProposed))));
        live.wait(far()).await.unwrap();
        let proposed: Vec<String> = seen.lock().iter().map(|c| c.to_string()).collect();
        assert_eq!(proposed, vec!["put k0 (10 bytes)".to_string(), "put k3 (10 bytes)".to_string()]);
    }

    #[tokio::test]
    async fn a_waiter_that_times_out_in_the_queue_learns_it_was_not_proposed() {
        let (gate, seen, write) = gated();
        let p = start_with(1, QueueLimits { max_commands: 100, max_bytes: 1 << 20 }, write);
        let _first = p.propose(put(0, 10), far()).unwrap();
        let started = Instant::now();
        while seen.lock().is_empty() {
            assert!(started.elapsed() < PATIENCE, "the first write was never proposed");
            tokio::task::yield_now().await;
        }
        let queued = p.propose(put(1, 10), far()).unwrap();
        // The waiter's own deadline passes while the write is still queued.
        assert!(matches!(queued.wait(Instant::now()).await, Err(Some(ProposeError::NotProposed))));
        gate.add_permits(10);
        let last = p.propose(put(2, 10), far()).unwrap();
        last.wait(far()).await.unwrap();
        let proposed: Vec<String> = seen.lock().iter().map(|c| c.to_string()).collect();
        assert!(!proposed.iter().any(|c| c.contains("k1")), "a withdrawn write was proposed: {proposed:?}");
    }

    #[tokio::test]
    async fn batches_are_capped_by_encoded_bytes() {
        let (gate, seen, write) = gated();
        let p = start_with(1, QueueLimits { max_commands: 100, max_bytes: 64 << 20 }, write);
        let blocker = p.propose(put(0, 10), far()).unwrap();
        let started = Instant::now();
        while seen.lock().is_empty() {
            assert!(started.elapsed() < PATIENCE, "the first write was never proposed");
            tokio::task::yield_now().await;
        }
        let writes: Vec<Pending> = (1..=6).map(|i| p.propose(put(i, 1536 * 1024), far()).unwrap()).collect();
        gate.add_permits(100);
        blocker.wait(far()).await.unwrap();
        for w in writes {
            w.wait(far()).await.unwrap();
        }
        for cmd in seen.lock().iter() {
            let size = encoded_size(cmd);
            let single = !matches!(cmd, Command::Batch(_));
            assert!(single || size <= MAX_BATCH_BYTES + 16, "a batch of {size} bytes");
        }
        assert!(seen.lock().len() >= 4, "six 1.5 MiB writes need at least three batches after the first");
    }
}
