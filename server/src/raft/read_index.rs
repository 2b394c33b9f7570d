//! Coalesced leadership confirmation for linearizable reads (the read index of the Raft thesis, §6.4).
//!
//! A linearizable read on the leader needs two things: the commit index at some moment after the read arrived
//! (the *read index*), and proof that this node was still the leader at that moment (a round of heartbeats answered
//! by a quorum). openraft 0.9 runs one such round per `ensure_linearizable` call, so 64 concurrent reads cost 64
//! rounds, 128 AppendEntries and as many wake-ups of every follower's Raft core. etcd instead lets one round serve
//! every read that arrived before it started; so does this batcher.
//!
//! Invariant: a read is answered only by a round that **started after the read was queued**. The batching task
//! takes the waiting reads off the queue and only then asks openraft for the read index, which openraft computes
//! when its core handles the request, and confirms leadership after that. So for every read in the batch the
//! read index is at least the commit index at the read's arrival, and leadership is confirmed after it: exactly
//! what a round of its own would give. A read that arrives while a round is in flight waits for the next one.
//!
//! Each reader then waits, on its own, for the state machine to apply up to the read index (or its deadline).

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::{LogId, Node, NodeId, Raft};

/// The outcome of one round: the read index, or why leadership could not be confirmed.
pub type RoundResult = Result<Option<LogId>, RaftError<NodeId, CheckIsLeaderError<NodeId, Node>>>;

/// Handle to one node's batching task. Dropping every handle stops the task.
#[derive(Clone)]
pub struct ReadIndex {
    waiting: mpsc::UnboundedSender<oneshot::Sender<RoundResult>>,
}

impl ReadIndex {
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<RoundResult>>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Everything queued so far arrived before this round starts.
                let mut batch = vec![first];
                while let Ok(w) = rx.try_recv() {
                    batch.push(w);
                }
                batch.retain(|w| !w.is_closed()); // readers that gave up need no round
                if batch.is_empty() {
                    continue;
                }
                let result = raft.get_read_log_id().await.map(|(read_index, _applied)| read_index);
                for w in batch {
                    let _ = w.send(result.clone());
                }
            }
        });
        Self { waiting: tx }
    }

    /// Waits for a leadership confirmation that started after this call, and returns its read index.
    /// `None` means the task is gone (the node is shutting down).
    pub async fn confirm(&self) -> Option<RoundResult> {
        let (tx, rx) = oneshot::channel();
        self.waiting.send(tx).ok()?;
        rx.await.ok()
    }
}
