//! The node's event log: what happened to this node's Raft state, in the order the node saw it — role and term
//! changes, votes, leader changes, snapshots, log purges, membership changes, injected faults, errors.
//!
//! Events come from diffing successive openraft metrics (a watch channel, so several changes that happen between
//! two wake-ups arrive as one diff; every *state* the node settles in is reported, not every transient step) plus
//! explicit [`EventLog::record`] calls (fault injection). They are kept in a bounded ring buffer and broadcast to
//! subscribers (`raftkv.v1.Cluster/Events`, the dashboard).
//!
//! Invariant: sequence numbers start at 1 for each process lifetime (*incarnation*, a random id) and increase by
//! one per event, so a subscriber that reconnects with its last `(incarnation, seq)` gets exactly the events it
//! missed — or, after a restart, everything the new process recorded.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use openraft::{RaftMetrics, ServerState};
use parking_lot::Mutex;
use raftkv_proto::{self as pb, EventKind};
use tokio::sync::broadcast;

use crate::raft::{Node, NodeId, Raft};

/// Events kept for subscribers that connect later.
pub const EVENT_BUFFER: usize = 1000;

/// The least time between two looks at the metrics.
const WATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

pub struct EventLog {
    incarnation: u64,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<pb::NodeEvent>,
}

struct Inner {
    seq: u64,
    buf: VecDeque<pb::NodeEvent>,
}

impl EventLog {
    pub fn new() -> Arc<Self> {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        Arc::new(Self {
            incarnation: rand::random::<u64>() | 1,
            inner: Mutex::new(Inner { seq: 0, buf: VecDeque::with_capacity(EVENT_BUFFER) }),
            tx,
        })
    }

    /// Appends an event and sends it to every subscriber.
    pub fn record(&self, kind: EventKind, term: u64, message: impl Into<String>) {
        let message = message.into();
        let mut inner = self.inner.lock();
        inner.seq += 1;
        let event = pb::NodeEvent {
            seq: inner.seq,
            incarnation: self.incarnation,
            unix_millis: now_millis(),
            kind: kind as i32,
            term,
            message,
        };
        if inner.buf.len() == EVENT_BUFFER {
            inner.buf.pop_front();
        }
        inner.buf.push_back(event.clone());
        // Sent under the lock so the order subscribers see is the sequence order; no receivers is fine.
        let _ = self.tx.send(event);
    }

    /// The buffered events after `after_seq` of `incarnation` (another incarnation: all of them) and a receiver
    /// for everything later, with no gap or overlap between the two (both are taken under the lock `record`
    /// holds while sending).
    pub fn subscribe(
        &self,
        incarnation: u64,
        after_seq: u64,
    ) -> (Vec<pb::NodeEvent>, broadcast::Receiver<pb::NodeEvent>) {
        let inner = self.inner.lock();
        let rx = self.tx.subscribe();
        let after = if incarnation == self.incarnation { after_seq } else { 0 };
        let past = inner.buf.iter().filter(|e| e.seq > after).cloned().collect();
        (past, rx)
    }

    /// The last sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().seq
    }
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn role_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shut down",
    }
}

type Metrics = RaftMetrics<NodeId, Node>;

fn describe_membership(m: &Metrics) -> String {
    let membership = m.membership_config.membership();
    let configs = membership.get_joint_config();
    let voters: BTreeSet<NodeId> = configs.iter().flatten().copied().collect();
    let learners: Vec<NodeId> = membership.nodes().map(|(id, _)| *id).filter(|id| !voters.contains(id)).collect();
    let fmt = |ids: &mut dyn Iterator<Item = NodeId>| ids.map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let mut s = if configs.len() > 1 {
        let parts: Vec<String> = configs.iter().map(|c| format!("{{{}}}", fmt(&mut c.iter().copied()))).collect();
        format!("joint voters {}", parts.join(" + "))
    } else {
        format!("voters {{{}}}", fmt(&mut voters.iter().copied()))
    };
    if !learners.is_empty() {
        s.push_str(&format!(", learners {{{}}}", fmt(&mut learners.iter().copied())));
    }
    s
}

/// The events that explain going from metrics `a` to metrics `b`.
fn diff(id: NodeId, a: &Metrics, b: &Metrics) -> Vec<(EventKind, String)> {
    let mut out = Vec::new();
    if a.current_term != b.current_term {
        out.push((EventKind::TermChanged, format!("term {} → {}", a.current_term, b.current_term)));
    }
    let (va, vb) = (a.vote.leader_id.voted_for(), b.vote.leader_id.voted_for());
    if vb.is_some() && (va != vb || a.vote.leader_id.term != b.vote.leader_id.term) {
        let who = vb.unwrap_or(0);
        let whom = if who == id { "itself".to_string() } else { format!("node {who}") };
        out.push((EventKind::Voted, format!("voted for {whom} in term {}", b.vote.leader_id.term)));
    }
    if a.state != b.state {
        out.push((EventKind::RoleChanged, format!("{} → {}", role_name(a.state), role_name(b.state))));
    }
    if a.current_leader != b.current_leader {
        let msg = match (a.current_leader, b.current_leader) {
            (_, Some(l)) if l == id => format!("this node (node {id}) is the leader"),
            (_, Some(l)) => format!("leader is node {l}"),
            (Some(l), None) => format!("lost the leader (was node {l})"),
            (None, None) => unreachable!("leaders differ"),
        };
        out.push((EventKind::LeaderChanged, msg));
    }
    if a.snapshot != b.snapshot {
        if let Some(s) = b.snapshot {
            out.push((
                EventKind::SnapshotBuilt,
                format!("snapshot now covers the log up to index {} (term {})", s.index, s.leader_id.term),
            ));
        }
    }
    if a.purged != b.purged {
        if let Some(p) = b.purged {
            out.push((EventKind::LogPurged, format!("log purged up to index {}", p.index)));
        }
    }
    if a.membership_config.log_id() != b.membership_config.log_id() {
        let at = b.membership_config.log_id().map_or("initial".to_string(), |l| format!("log index {}", l.index));
        out.push((EventKind::MembershipChanged, format!("membership at {at}: {}", describe_membership(b))));
    }
    if let (Ok(()), Err(e)) = (&a.running_state, &b.running_state) {
        out.push((EventKind::Error, format!("raft stopped: {e}")));
    }
    out
}

/// Records a `STARTED` event and then one event per change in `raft`'s metrics, until Raft shuts down.
pub fn spawn_metrics_watcher(id: NodeId, raft: &Raft, events: Arc<EventLog>) -> tokio::task::JoinHandle<()> {
    let mut rx = raft.metrics();
    tokio::spawn(async move {
        let mut prev = rx.borrow_and_update().clone();
        events.record(
            EventKind::Started,
            prev.current_term,
            format!(
                "node {id} started as {} in term {}; log up to index {}; {}",
                role_name(prev.state),
                prev.current_term,
                prev.last_log_index.unwrap_or(0),
                describe_membership(&prev)
            ),
        );
        while rx.changed().await.is_ok() {
            let next = rx.borrow_and_update().clone();
            for (kind, msg) in diff(id, &prev, &next) {
                events.record(kind, next.current_term, msg);
            }
            prev = next;
            // Metrics change on every append and commit: under load, look at most every few milliseconds (the
            // diff still reports every state reached; only states that came and went in between are merged).
            tokio::time::sleep(WATCH_PAUSE).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn past_incarnation(log: &EventLog) -> u64 {
        log.subscribe(0, 0).0[0].incarnation
    }

    #[test]
    fn sequence_numbers_are_dense_and_replay_has_no_gap() {
        let log = EventLog::new();
        log.record(EventKind::Started, 1, "a");
        log.record(EventKind::TermChanged, 2, "b");
        let me = past_incarnation(&log);
        let (past, mut rx) = log.subscribe(me, 1);
        assert_eq!(past.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
        log.record(EventKind::Voted, 2, "c");
        assert_eq!(rx.try_recv().unwrap().seq, 3);
        // A subscriber that followed an earlier process (another incarnation) gets everything, even if its seq
        // is below ours.
        let (past, _) = log.subscribe(me ^ 2, 1);
        assert_eq!(past.len(), 3);
        assert_eq!(log.last_seq(), 3);
    }

    #[test]
    fn the_buffer_is_bounded() {
        let log = EventLog::new();
        for i in 0..(EVENT_BUFFER as u64 + 10) {
            log.record(EventKind::TermChanged, i, "x");
        }
        let (past, _) = log.subscribe(0, 0);
        assert_eq!(past.len(), EVENT_BUFFER);
        assert_eq!(past[0].seq, 11, "the oldest events are dropped first");
    }
}
