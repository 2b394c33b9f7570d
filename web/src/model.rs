//! The view model: turns what the nodes answer (`Status`, `LogEntries`, RPC errors) into what the page draws.
//! Pure Rust, no browser APIs, so it is tested with plain `cargo test`.
//!
//! Invariants the page relies on:
//! - a node that does not answer is *down* (or *paused* / *partitioned* when the controller says so), never an
//!   error page, and its last known state is kept, marked stale;
//! - "the leader" is the leader of the highest term any reachable node reports; a node still claiming leadership
//!   in an older term is shown as a stale leader, not as a second leader;
//! - a write whose fate is unknown (timeout, connection cut, `UNKNOWN`) is recorded as *unknown*, never as failed:
//!   it may still be committed.

use std::collections::BTreeMap;

use raftkv_proto::{
    self as pb,
    dashboard::{NodeInfo, ProcessState},
    Role,
};
use tonic::Code;

/// How a node is drawn.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RoleView {
    Leader,
    /// Claims leadership in a term older than the cluster's: it has not heard of the newer leader yet.
    StaleLeader,
    Follower,
    Candidate,
    Learner,
    /// Frozen with SIGSTOP (known from the controller).
    Paused,
    /// Not answering (killed, stopped, partitioned from us, or unreachable).
    Down,
    /// Not heard from yet.
    Unknown,
}

impl RoleView {
    pub fn label(self) -> &'static str {
        match self {
            RoleView::Leader => "leader",
            RoleView::StaleLeader => "stale leader",
            RoleView::Follower => "follower",
            RoleView::Candidate => "candidate",
            RoleView::Learner => "learner",
            RoleView::Paused => "paused",
            RoleView::Down => "down",
            RoleView::Unknown => "…",
        }
    }

    /// CSS class suffix.
    pub fn class(self) -> &'static str {
        match self {
            RoleView::Leader => "leader",
            RoleView::StaleLeader => "stale",
            RoleView::Follower => "follower",
            RoleView::Candidate => "candidate",
            RoleView::Learner => "learner",
            RoleView::Paused => "paused",
            RoleView::Down => "down",
            RoleView::Unknown => "unknown",
        }
    }
}

/// What the page knows about one node: the controller's view (if any) plus the last Status it answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSlot {
    pub info: Option<NodeInfo>,
    pub url: String,
    /// The last successful Status.
    pub status: Option<pb::StatusResponse>,
    /// Set when the last Status call failed; cleared by the next success.
    pub error: Option<String>,
}

/// The leader's view of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    pub node_id: u64,
    pub matched: Option<u64>,
    pub lag: u64,
}

/// The Raft RPCs a node sent to one peer (RaftScope's messages, as counts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficView {
    pub node_id: u64,
    pub append_entries: u64,
    pub entries: u64,
    pub votes: u64,
    pub snapshot_chunks: u64,
    pub failures: u64,
    pub in_flight: u32,
    pub millis_since_answer: Option<u64>,
    pub last_error: String,
}

impl TrafficView {
    /// One line for people: `→ node 2: 1,204 appends (3,000 entries) · 2 votes · 1 in flight · answered 12 ms ago`.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("{} appends ({} entries)", self.append_entries, self.entries)];
        if self.votes > 0 {
            parts.push(format!("{} votes", self.votes));
        }
        if self.snapshot_chunks > 0 {
            parts.push(format!("{} snapshot chunks", self.snapshot_chunks));
        }
        parts.push(format!("{} in flight", self.in_flight));
        parts.push(match self.millis_since_answer {
            Some(ms) => format!("answered {ms} ms ago"),
            None => "never answered".into(),
        });
        format!("→ node {}: {}", self.node_id, parts.join(" · "))
    }

    /// Is the peer failing to answer now (no answer for longer than a few heartbeats)?
    pub fn failing(&self) -> bool {
        self.failures > 0 && self.millis_since_answer.is_none_or(|ms| ms > 1000)
    }
}

/// A follower's election timer: time since a leader last reached it, against its election timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionTimer {
    /// None = no leader has reached it since it started.
    pub elapsed_ms: Option<u64>,
    pub timeout_min_ms: u64,
    pub timeout_max_ms: u64,
}

impl ElectionTimer {
    /// How full the timer is, 0..=1, against the shortest timeout (past it, an election may start any moment).
    pub fn fraction(&self) -> f64 {
        match self.elapsed_ms {
            Some(ms) if self.timeout_min_ms > 0 => (ms as f64 / self.timeout_min_ms as f64).min(1.0),
            _ => 1.0,
        }
    }

    pub fn label(&self) -> String {
        let (min, max) = (self.timeout_min_ms, self.timeout_max_ms);
        match self.elapsed_ms {
            Some(ms) => format!("election timer {ms} / {min}–{max} ms"),
            None => format!("no leader yet · timeout {min}–{max} ms"),
        }
    }
}

/// One node card.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub id: Option<u64>,
    pub url: String,
    pub role: RoleView,
    /// The numbers below are from the last answer; `stale` says they may be out of date.
    pub stale: bool,
    pub term: u64,
    pub voted_for: u64,
    pub leader_id: u64,
    pub last_log_index: u64,
    pub last_log_term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub keys: u64,
    /// On the leader: live leases, and milliseconds until the soonest expires.
    pub leases: Option<(u64, Option<i64>)>,
    pub voter: Option<bool>,
    pub replication: Vec<ReplicaView>,
    /// Followers and candidates: the election timer.
    pub election: Option<ElectionTimer>,
    /// Leader: milliseconds since a quorum last acknowledged it.
    pub quorum_ack_ms: Option<u64>,
    pub traffic: Vec<TrafficView>,
    pub process: Option<ProcessState>,
    pub partitioned: bool,
    /// Why it is down, how it exited, where its log is.
    pub note: String,
}

fn role_of(status: &pb::StatusResponse) -> RoleView {
    match Role::try_from(status.role).unwrap_or(Role::Unknown) {
        Role::Leader => RoleView::Leader,
        Role::Follower => RoleView::Follower,
        Role::Candidate => RoleView::Candidate,
        Role::Learner => RoleView::Learner,
        Role::Shutdown => RoleView::Down,
        Role::Unknown => RoleView::Unknown,
    }
}

/// The Raft RPCs a node reports having sent to each peer.
pub fn traffic_views(s: &pb::StatusResponse) -> Vec<TrafficView> {
    s.peers
        .iter()
        .map(|p| TrafficView {
            node_id: p.node_id,
            append_entries: p.append_entries,
            entries: p.entries,
            votes: p.votes,
            snapshot_chunks: p.snapshot_chunks,
            failures: p.failures,
            in_flight: p.in_flight,
            millis_since_answer: p.has_answer.then_some(p.millis_since_answer),
            last_error: p.last_error.clone(),
        })
        .collect()
}

/// One node's card from what we know about it.
pub fn node_view(slot: &NodeSlot) -> NodeView {
    let process = slot.info.as_ref().and_then(|i| i.process);
    let partitioned = slot.info.as_ref().is_some_and(|i| i.partitioned);
    let answered = slot.error.is_none() && slot.status.is_some();
    let role = match (process, answered, &slot.status) {
        (Some(ProcessState::Down), _, _) => RoleView::Down,
        (Some(ProcessState::Paused), _, _) => RoleView::Paused,
        (_, true, Some(s)) => role_of(s),
        (_, false, _) if slot.error.is_some() => RoleView::Down,
        _ => RoleView::Unknown,
    };
    let s = slot.status.clone().unwrap_or_default();
    let note = match (&slot.error, slot.info.as_ref()) {
        (Some(_), Some(i)) if !i.note.is_empty() && process == Some(ProcessState::Down) => i.note.clone(),
        (Some(e), _) => format!("not answering: {e}"),
        (None, Some(i)) => i.note.clone(),
        (None, None) => String::new(),
    };
    let id = slot.info.as_ref().and_then(|i| i.id).or(slot.status.as_ref().map(|s| s.id));
    let voter = id.and_then(|id| s.members.iter().find(|m| m.id == id).map(|m| m.voter));
    NodeView {
        id,
        url: slot.url.clone(),
        role,
        stale: !answered,
        term: s.term,
        voted_for: s.voted_for,
        leader_id: s.leader_id,
        last_log_index: s.last_log_index,
        last_log_term: s.last_log_term,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        snapshot_index: s.snapshot_index,
        purged_index: s.purged_index,
        keys: s.key_count,
        leases: (role == RoleView::Leader)
            .then_some((s.lease_count, (s.lease_soonest_expiry_ms >= 0).then_some(s.lease_soonest_expiry_ms))),
        voter,
        replication: s
            .replication
            .iter()
            .map(|r| ReplicaView { node_id: r.node_id, matched: r.has_match.then_some(r.matched_index), lag: r.lag })
            .collect(),
        election: matches!(role, RoleView::Follower | RoleView::Candidate).then(|| ElectionTimer {
            elapsed_ms: s.has_leader_contact.then_some(s.millis_since_leader_contact),
            timeout_min_ms: s.election_timeout_min_ms,
            timeout_max_ms: s.election_timeout_max_ms,
        }),
        quorum_ack_ms: (role == RoleView::Leader && s.millis_since_quorum_ack > 0).then_some(s.millis_since_quorum_ack),
        traffic: traffic_views(&s),
        process,
        partitioned,
        note,
    }
}

/// The whole cluster as the page draws it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    /// The answering node that leads the highest term among leaders.
    pub leader: Option<u64>,
    pub leader_term: Option<u64>,
    /// The highest term any answering node is in (a cut-off candidate's can be above the leader's).
    pub term: u64,
    /// Members of the newest membership config any answering node reports: (id, address, voter).
    pub members: Vec<(u64, String, bool)>,
    /// Answering voters / all voters.
    pub voters_up: usize,
    pub voters: usize,
}

impl ClusterView {
    pub fn has_quorum(&self) -> bool {
        self.voters > 0 && self.voters_up * 2 > self.voters
    }

    pub fn node(&self, id: u64) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.id == Some(id))
    }
}

pub fn cluster_view(slots: &[NodeSlot]) -> ClusterView {
    let mut nodes: Vec<NodeView> = slots.iter().map(node_view).collect();
    let live = |n: &&NodeView| !n.stale;
    let term = nodes.iter().filter(live).map(|n| n.term).max().unwrap_or(0);
    // The leader is the answering node that leads the highest term *among leaders*: a cut-off node can be in a
    // higher term without leading (openraft has no pre-vote, so an isolated node keeps calling elections), and
    // that must not hide the real leader. Ties (not possible in Raft) go to the one most nodes follow.
    let follows =
        |id: Option<u64>| nodes.iter().filter(live).filter(|n| id.is_some() && Some(n.leader_id) == id).count();
    let leader = nodes
        .iter()
        .filter(live)
        .filter(|n| n.role == RoleView::Leader)
        .max_by_key(|n| (n.term, follows(n.id)))
        .and_then(|n| Some((n.id?, n.term)));
    for n in &mut nodes {
        if n.role == RoleView::Leader && leader.is_some_and(|(id, _)| n.id != Some(id)) {
            n.role = RoleView::StaleLeader;
        }
    }
    let (leader, leader_term) = (leader.map(|l| l.0), leader.map(|l| l.1));
    // The newest membership: from the answering node with the highest (term, last log index).
    let newest = slots
        .iter()
        .filter(|s| s.error.is_none())
        .filter_map(|s| s.status.as_ref())
        .max_by_key(|s| (s.term, s.last_log_index));
    let members: Vec<(u64, String, bool)> =
        newest.map(|s| s.members.iter().map(|m| (m.id, m.addr.clone(), m.voter)).collect()).unwrap_or_default();
    let up: Vec<u64> = nodes.iter().filter(live).filter_map(|n| n.id).collect();
    let voters = members.iter().filter(|m| m.2).count();
    let voters_up = members.iter().filter(|m| m.2 && up.contains(&m.0)).count();
    nodes.sort_by_key(|n| (n.id.unwrap_or(u64::MAX), n.url.clone()));
    ClusterView { nodes, leader, leader_term, term, members, voters_up, voters }
}

/// One cell of the log grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCell {
    pub term: u64,
    pub committed: bool,
    pub kind: pb::LogEntryKind,
    pub summary: String,
}

/// The last `width` log indexes of every node, aligned by index (like RaftScope's log view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogGrid {
    pub indexes: Vec<u64>,
    /// (node id, cells aligned with `indexes`; None = the node does not have that entry, or it was compacted).
    pub rows: Vec<(u64, Vec<Option<LogCell>>)>,
}

pub fn log_grid(logs: &BTreeMap<u64, pb::LogEntriesResponse>, width: usize) -> LogGrid {
    let last = logs.values().map(|l| l.last_index).max().unwrap_or(0);
    let first = last.saturating_sub(width as u64 - 1).max(1);
    let indexes: Vec<u64> = if last == 0 { Vec::new() } else { (first..=last).collect() };
    let rows = logs
        .iter()
        .map(|(id, l)| {
            let by_index: BTreeMap<u64, &pb::LogEntry> = l.entries.iter().map(|e| (e.index, e)).collect();
            let cells = indexes
                .iter()
                .map(|i| {
                    by_index.get(i).map(|e| LogCell {
                        term: e.term,
                        committed: e.committed,
                        kind: pb::LogEntryKind::try_from(e.kind).unwrap_or(pb::LogEntryKind::Unknown),
                        summary: e.summary.clone(),
                    })
                })
                .collect();
            (*id, cells)
        })
        .collect();
    LogGrid { indexes, rows }
}

/// A stable, distinct colour per term (golden-angle hues), so entries of one term look alike on every node.
pub fn term_color(term: u64) -> String {
    let hue = (term.wrapping_mul(137) + 200) % 360;
    format!("hsl({hue}, 65%, 55%)")
}

/// What happened to an operation made from the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Ok,
    /// Certainly not applied (rejected, or never sent).
    Failed,
    /// May or may not have been applied: the answer was lost.
    Unknown,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Ok => "ok",
            Outcome::Failed => "error",
            Outcome::Unknown => "unknown",
        }
    }
}

/// The outcome of a failed call: reads always simply fail; a write fails for sure only when the server said it
/// rejected it. `code` is None when no gRPC status came back (client-side timeout, connection lost).
pub fn failure_outcome(is_write: bool, code: Option<Code>) -> Outcome {
    if !is_write {
        return Outcome::Failed;
    }
    match code {
        Some(
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::ResourceExhausted
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
            // raftkv answers UNAVAILABLE only for writes it did not propose (no leader, not the leader).
            | Code::Unavailable,
        ) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// One operation in the history panel.
#[derive(Clone, Debug, PartialEq)]
pub struct OpRecord {
    pub seq: u64,
    /// e.g. `PUT greeting = hello`.
    pub op: String,
    /// Which node it was sent to.
    pub target: String,
    pub is_write: bool,
    pub outcome: Outcome,
    /// Result or error, for people.
    pub detail: String,
    /// The node whose header answered (after forwarding, the leader).
    pub answered_by: Option<u64>,
    pub revision: Option<i64>,
    pub millis: Option<f64>,
}

/// Bytes as text when they are UTF-8, else as hex.
pub fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => format!("0x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u64, role: Role, term: u64, leader: u64, last: u64) -> pb::StatusResponse {
        pb::StatusResponse {
            id,
            role: role as i32,
            term,
            leader_id: leader,
            last_log_index: last,
            commit_index: last,
            members: (1..=3)
                .map(|i| pb::Member { id: i, addr: format!("127.0.0.1:700{i}"), voter: true, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn slot(id: u64, s: Option<pb::StatusResponse>, error: Option<&str>) -> NodeSlot {
        NodeSlot {
            info: Some(NodeInfo {
                id: Some(id),
                url: format!("http://127.0.0.1:700{id}"),
                http: None,
                process: Some(ProcessState::Running),
                partitioned: false,
                note: String::new(),
            }),
            url: format!("http://127.0.0.1:700{id}"),
            status: s,
            error: error.map(String::from),
        }
    }

    #[test]
    fn a_healthy_cluster_has_one_leader_and_quorum() {
        let v = cluster_view(&[
            slot(1, Some(status(1, Role::Follower, 3, 2, 10)), None),
            slot(2, Some(status(2, Role::Leader, 3, 2, 10)), None),
            slot(3, Some(status(3, Role::Follower, 3, 2, 10)), None),
        ]);
        assert_eq!(v.leader, Some(2));
        assert_eq!(v.term, 3);
        assert_eq!(v.nodes.iter().filter(|n| n.role == RoleView::Leader).count(), 1);
        assert!(v.has_quorum());
        assert_eq!(v.node(1).unwrap().voter, Some(true));
    }

    #[test]
    fn the_leader_shows_its_live_leases_and_followers_none() {
        let mut leader = status(2, Role::Leader, 3, 2, 10);
        leader.lease_count = 3;
        leader.lease_soonest_expiry_ms = 1500;
        assert_eq!(node_view(&slot(2, Some(leader.clone()), None)).leases, Some((3, Some(1500))));
        leader.lease_count = 0;
        leader.lease_soonest_expiry_ms = -1;
        assert_eq!(node_view(&slot(2, Some(leader), None)).leases, Some((0, None)));
        let follower = status(1, Role::Follower, 3, 2, 10);
        assert_eq!(node_view(&slot(1, Some(follower), None)).leases, None, "lease timers run on the leader only");
    }

    #[test]
    fn an_unreachable_node_is_down_with_its_last_state_kept() {
        let mut s = slot(2, Some(status(2, Role::Leader, 3, 2, 10)), Some("connection refused"));
        s.info.as_mut().unwrap().process = None;
        let v = node_view(&s);
        assert_eq!(v.role, RoleView::Down);
        assert!(v.stale);
        assert_eq!(v.last_log_index, 10, "last known numbers are kept");
        assert!(v.note.contains("connection refused"));
    }

    #[test]
    fn the_controller_knows_better_than_a_timeout() {
        let mut s = slot(1, Some(status(1, Role::Follower, 3, 2, 10)), Some("timed out"));
        s.info.as_mut().unwrap().process = Some(ProcessState::Paused);
        assert_eq!(node_view(&s).role, RoleView::Paused);
        s.info.as_mut().unwrap().process = Some(ProcessState::Down);
        s.info.as_mut().unwrap().note = "killed (SIGKILL)".into();
        let v = node_view(&s);
        assert_eq!(v.role, RoleView::Down);
        assert_eq!(v.note, "killed (SIGKILL)");
    }

    #[test]
    fn followers_show_an_election_timer_and_everyone_their_traffic() {
        let mut st = status(1, Role::Follower, 3, 2, 10);
        st.has_leader_contact = true;
        st.millis_since_leader_contact = 150;
        st.election_timeout_min_ms = 300;
        st.election_timeout_max_ms = 500;
        st.peers = vec![pb::PeerTraffic {
            node_id: 3,
            votes: 2,
            failures: 4,
            in_flight: 1,
            has_answer: false,
            last_error: "unreachable".into(),
            ..Default::default()
        }];
        let v = node_view(&slot(1, Some(st.clone()), None));
        let timer = v.election.unwrap();
        assert_eq!(timer.fraction(), 0.5);
        assert!(timer.label().contains("150 / 300–500 ms"), "{}", timer.label());
        assert!(v.traffic[0].failing());
        assert!(v.traffic[0].summary().contains("2 votes"), "{}", v.traffic[0].summary());
        assert!(v.traffic[0].summary().contains("never answered"));
        // A leader has no election timer but a quorum ack age.
        let mut leader = st;
        leader.role = Role::Leader as i32;
        leader.millis_since_quorum_ack = 40;
        let v = node_view(&slot(1, Some(leader), None));
        assert_eq!((v.election, v.quorum_ack_ms), (None, Some(40)));
    }

    #[test]
    fn an_old_leader_in_a_lower_term_is_stale_not_a_second_leader() {
        // Node 1 was partitioned as leader of term 3; nodes 2 and 3 moved on to term 4 with leader 3.
        let v = cluster_view(&[
            slot(1, Some(status(1, Role::Leader, 3, 1, 12)), None),
            slot(2, Some(status(2, Role::Follower, 4, 3, 13)), None),
            slot(3, Some(status(3, Role::Leader, 4, 3, 13)), None),
        ]);
        assert_eq!(v.leader, Some(3));
        assert_eq!(v.node(1).unwrap().role, RoleView::StaleLeader);
        assert_eq!(v.node(3).unwrap().role, RoleView::Leader);
    }

    #[test]
    fn a_partitioned_candidate_in_a_higher_term_does_not_hide_the_leader() {
        // Node 3 is cut off from its peers but still answers the page; it keeps calling elections.
        let v = cluster_view(&[
            slot(1, Some(status(1, Role::Leader, 3, 1, 12)), None),
            slot(2, Some(status(2, Role::Follower, 3, 1, 12)), None),
            slot(3, Some(status(3, Role::Candidate, 9, 0, 11)), None),
        ]);
        assert_eq!(v.leader, Some(1));
        assert_eq!(v.leader_term, Some(3));
        assert_eq!(v.term, 9);
        assert_eq!(v.node(1).unwrap().role, RoleView::Leader);
        assert_eq!(v.node(3).unwrap().role, RoleView::Candidate);
    }

    #[test]
    fn quorum_counts_answering_voters_only() {
        let v = cluster_view(&[
            slot(1, Some(status(1, Role::Candidate, 5, 0, 12)), None),
            slot(2, None, Some("connection refused")),
            slot(3, None, Some("connection refused")),
        ]);
        assert_eq!(v.leader, None);
        assert_eq!((v.voters_up, v.voters), (1, 3));
        assert!(!v.has_quorum());
    }

    #[test]
    fn log_grid_aligns_entries_by_index_and_marks_commitment() {
        let entry = |index, term, committed| pb::LogEntry {
            index,
            term,
            leader_id: 1,
            kind: pb::LogEntryKind::Command as i32,
            summary: format!("put k{index}"),
            committed,
        };
        let mut logs = BTreeMap::new();
        logs.insert(
            1,
            pb::LogEntriesResponse {
                entries: vec![entry(4, 2, true), entry(5, 2, true), entry(6, 3, false)],
                last_index: 6,
                ..Default::default()
            },
        );
        logs.insert(
            2,
            pb::LogEntriesResponse {
                entries: vec![entry(4, 2, true), entry(5, 2, true)],
                last_index: 5,
                ..Default::default()
            },
        );
        let g = log_grid(&logs, 3);
        assert_eq!(g.indexes, vec![4, 5, 6]);
        assert_eq!(g.rows[0].1[2].as_ref().map(|c| (c.term, c.committed)), Some((3, false)));
        assert_eq!(g.rows[1].1[2], None, "node 2 does not have index 6");
        assert!(log_grid(&BTreeMap::new(), 5).indexes.is_empty());
    }

    #[test]
    fn lost_write_answers_are_unknown_not_failed() {
        assert_eq!(failure_outcome(true, None), Outcome::Unknown, "client-side timeout");
        assert_eq!(failure_outcome(true, Some(Code::DeadlineExceeded)), Outcome::Unknown);
        assert_eq!(failure_outcome(true, Some(Code::Unknown)), Outcome::Unknown);
        assert_eq!(failure_outcome(true, Some(Code::InvalidArgument)), Outcome::Failed);
        assert_eq!(failure_outcome(true, Some(Code::Unavailable)), Outcome::Failed);
        assert_eq!(failure_outcome(false, None), Outcome::Failed, "a read that fails changed nothing");
    }

    #[test]
    fn term_colours_differ_between_neighbouring_terms() {
        assert_ne!(term_color(1), term_color(2));
        assert_eq!(term_color(7), term_color(7));
        assert_eq!(show_bytes(b"abc"), "abc");
        assert_eq!(show_bytes(&[0xff, 0x00]), "0xff00");
    }
}
