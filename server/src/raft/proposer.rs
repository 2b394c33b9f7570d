//! Group proposals: many client writes, one Raft log entry.
//!
//! openraft 0.9 appends each proposal with its own WAL flush before it takes the next one, so one log entry per
//! client write caps a leader at one fsync per write. The proposer queues writes and, whenever a proposal slot is
//! free, proposes everything queued as one [`Command::Batch`] entry. Under load, batches grow by themselves
//! (writes pile up while the previous batch is being made durable); a lone writer still gets a one-command entry
//! with no added delay.
//!
//! Every command in a batch is applied in order and gets its own revision, exactly as if proposed alone; the
//! batch commits or fails as a whole.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{Command, CommandResponse, Node, NodeId, Raft};

/// Batches in flight at once by default: one being made durable while the next fills up.
pub const DEFAULT_IN_FLIGHT: usize = 2;
/// Upper bounds of one batch.
const MAX_BATCH_COMMANDS: usize = 1024;
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Why a proposal failed; the caller maps it to an API error.
#[derive(Debug, Clone)]
pub enum ProposeError {
    /// Leadership moved while the proposal was queued or in flight: it may or may not commit.
    LeadershipLost,
    ChangeMembership(String),
    Stopped(String),
}

type Reply = oneshot::Sender<Result<CommandResponse, ProposeError>>;

struct Proposal {
    cmd: Command,
    reply: Reply,
}

/// Handle to the batching task of one node.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Proposal>,
}

impl Proposer {
    /// Starts the batching task; at most `in_flight` batches are proposed and not yet applied at once.
    pub fn start(raft: Raft, in_flight: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx, in_flight.max(1)));
        Self { tx }
    }

    /// Queues `cmd`; resolves when its batch is applied (or fails).
    pub async fn propose(&self, cmd: Command) -> Result<CommandResponse, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Proposal { cmd, reply }).map_err(|_| ProposeError::Stopped("proposer stopped".into()))?;
        rx.await.map_err(|_| ProposeError::Stopped("proposer stopped".into()))?
    }
}

fn size_of(cmd: &Command) -> usize {
    match cmd {
        Command::Put { key, value, .. } => key.len() + value.len(),
        Command::Delete { key, range_end, .. } => key.len() + range_end.as_ref().map_or(0, Vec::len),
        Command::Txn { .. } | Command::Batch(_) => 4096,
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Proposal>, in_flight: usize) {
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the next batch fill up.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut bytes = size_of(&first.cmd);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += size_of(&p.cmd);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (mut cmds, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
            let entry = if cmds.len() == 1 { cmds.pop().expect("one command") } else { Command::Batch(cmds) };
            let result = raft.client_write(entry).await;
            drop(slot);
            deliver(result.map(|r| r.data), replies);
        });
    }
}

fn deliver(result: Result<CommandResponse, RaftError<NodeId, ClientWriteError<NodeId, Node>>>, replies: Vec<Reply>) {
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
