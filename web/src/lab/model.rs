//! The lab's arithmetic, apart from the browser so it is tested natively: where nodes sit on the ring, which Raft
//! messages a node sent between two Status samples, per-second write figures and their gaps, who led each term,
//! and the cluster's past as compact samples for the timeline.
//!
//! Invariants:
//! - a message is drawn only when a counter moved: the graph never invents traffic, and draws at most one message
//!   of each kind per link per sample (a busy cluster stays readable; the counts are in the cards);
//! - a counter that went *down* means the sender restarted (counters start again at 0): no messages, not billions;
//! - a gap is measured between acknowledgements, so it is the time clients saw no write succeed, which is what a
//!   leader kill costs them; it includes detecting the failure, the election and the first commit.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ClusterView, Outcome, RoleView, TrafficView};

/// Node `i` of `n` on a ring of radius `r` around (`cx`, `cy`): the first at the top, then clockwise.
pub fn ring_position(i: usize, n: usize, cx: f64, cy: f64, r: f64) -> (f64, f64) {
    if n <= 1 {
        return (cx, cy);
    }
    let angle = -std::f64::consts::FRAC_PI_2 + std::f64::consts::TAU * i as f64 / n as f64;
    (cx + r * angle.cos(), cy + r * angle.sin())
}

/// The kinds of Raft message the graph draws.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MessageKind {
    /// AppendEntries carrying log entries.
    Append,
    /// AppendEntries with no entries: the leader's "I am still here".
    Heartbeat,
    VoteRequest,
    VoteAnswer,
    SnapshotChunk,
}

impl MessageKind {
    pub fn class(self) -> &'static str {
        match self {
            MessageKind::Append => "append",
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::VoteRequest => "vote",
            MessageKind::VoteAnswer => "vote-answer",
            MessageKind::SnapshotChunk => "snapshot",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            MessageKind::Append => "append entries (with entries)",
            MessageKind::Heartbeat => "heartbeat (empty append entries)",
            MessageKind::VoteRequest => "vote request",
            MessageKind::VoteAnswer => "vote answer",
            MessageKind::SnapshotChunk => "snapshot chunk",
        }
    }
}

/// One message to draw, flying from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: u64,
    pub to: u64,
    pub kind: MessageKind,
    /// The RPC failed (no answer): drawn as a message that never arrives.
    pub lost: bool,
}

/// The messages node `from` sent between two of its Status answers `dt_ms` apart, from its per-peer counters.
pub fn messages_between(from: u64, before: &[TrafficView], after: &[TrafficView], dt_ms: f64) -> Vec<Message> {
    let mut out = Vec::new();
    for a in after {
        let Some(b) = before.iter().find(|b| b.node_id == a.node_id) else { continue };
        let delta = |x: u64, y: u64| x.checked_sub(y);
        let (Some(appends), Some(entries), Some(votes), Some(chunks), Some(failures)) = (
            delta(a.append_entries, b.append_entries),
            delta(a.entries, b.entries),
            delta(a.votes, b.votes),
            delta(a.snapshot_chunks, b.snapshot_chunks),
            delta(a.failures, b.failures),
        ) else {
            continue; // the sender restarted: its counters began again
        };
        let lost = failures > 0;
        let mut push = |kind, from, to| out.push(Message { from, to, kind, lost });
        if entries > 0 {
            push(MessageKind::Append, from, a.node_id);
        } else if appends > 0 {
            push(MessageKind::Heartbeat, from, a.node_id);
        }
        if chunks > 0 {
            push(MessageKind::SnapshotChunk, from, a.node_id);
        }
        if votes > 0 {
            push(MessageKind::VoteRequest, from, a.node_id);
            // Answered since the last sample (and recently: after a missed poll the interval is long).
            if a.millis_since_answer.is_some_and(|ms| (ms as f64) < dt_ms.min(250.0)) && !lost {
                push(MessageKind::VoteAnswer, a.node_id, from);
            }
        }
    }
    out
}

/// One write the load generator made.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteRecord {
    /// The key's sequence number within its run.
    pub seq: u64,
    /// Wall-clock milliseconds (the nodes' event times are on the same clock on one machine).
    pub started: f64,
    pub ended: Option<f64>,
    pub outcome: Outcome,
}

impl WriteRecord {
    pub fn latency(&self) -> Option<f64> {
        self.ended.map(|e| e - self.started)
    }
}

/// The nearest-rank percentile `q` (0..=1) of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The writes that ended in one time bucket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bucket {
    pub start: f64,
    pub acked: u32,
    pub failed: u32,
    pub unknown: u32,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Buckets of `width` ms covering [`from`, `to`), by the time each write ended.
pub fn buckets(records: &[WriteRecord], from: f64, to: f64, width: f64) -> Vec<Bucket> {
    assert!(width > 0.0, "a bucket must have a width");
    let n = ((to - from) / width).ceil().max(0.0) as usize;
    let mut out: Vec<Bucket> = (0..n).map(|i| Bucket { start: from + i as f64 * width, ..Bucket::default() }).collect();
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); n];
    for r in records {
        let Some(end) = r.ended else { continue };
        if end < from || end >= to {
            continue;
        }
        let i = (((end - from) / width) as usize).min(n - 1);
        match r.outcome {
            Outcome::Ok => {
                out[i].acked += 1;
                latencies[i].push(end - r.started);
            }
            Outcome::Failed => out[i].failed += 1,
            Outcome::Unknown => out[i].unknown += 1,
            Outcome::Pending => {}
        }
    }
    for (b, mut l) in out.iter_mut().zip(latencies) {
        l.sort_by(f64::total_cmp);
        b.p50 = percentile(&l, 0.5);
        b.p99 = percentile(&l, 0.99);
    }
    out
}

/// The times acknowledged writes ended, in [`from`, `to`], sorted.
pub fn ack_times(records: &[WriteRecord], from: f64, to: f64) -> Vec<f64> {
    let mut t: Vec<f64> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .filter_map(|r| r.ended)
        .filter(|&e| e >= from && e <= to)
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

/// The spells longer than `min_ms` with no acknowledgement, between consecutive acknowledgements.
pub fn gaps(acks: &[f64], min_ms: f64) -> Vec<(f64, f64)> {
    acks.windows(2).filter(|w| w[1] - w[0] > min_ms).map(|w| (w[0], w[1])).collect()
}

/// The outage a fault at `at` caused the writers: the last acknowledgement before it, and the first
/// acknowledgement of a write *sent* after it (a write sent before can still be acknowledged just after `at`, by a
/// leader that was about to die; that says nothing about recovery).
pub fn outage(records: &[WriteRecord], at: f64) -> (Option<f64>, Option<f64>) {
    let acked = || records.iter().filter(|r| r.outcome == Outcome::Ok);
    let last_before = acked().filter_map(|r| r.ended).filter(|&e| e <= at).max_by(f64::total_cmp);
    let first_after = acked().filter(|r| r.started >= at).filter_map(|r| r.ended).min_by(f64::total_cmp);
    (last_before, first_after)
}

/// What one node said about leadership, from its event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderClaim {
    /// It became the leader in this term.
    Itself,
    /// It follows this node in this term.
    Follows(u64),
}

/// Reads a leadership claim out of an event (`ROLE_CHANGED "… → leader"`, `LEADER_CHANGED "leader is node N"`).
pub fn leader_claim(kind: raftkv_proto::EventKind, message: &str) -> Option<LeaderClaim> {
    use raftkv_proto::EventKind;
    match kind {
        EventKind::RoleChanged if message.ends_with("→ leader") => Some(LeaderClaim::Itself),
        EventKind::LeaderChanged => {
            let rest = message.strip_prefix("leader is node ")?;
            rest.trim().parse().ok().map(LeaderClaim::Follows)
        }
        _ => None,
    }
}

/// Every term's leaders, from (node, term, claim) triples: a node that became leader, and the leader each follower
/// names. Raft's election safety says no term ever has two.
pub fn leaders_by_term(claims: impl IntoIterator<Item = (u64, u64, LeaderClaim)>) -> BTreeMap<u64, BTreeSet<u64>> {
    let mut out: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (node, term, claim) in claims {
        let leader = match claim {
            LeaderClaim::Itself => node,
            LeaderClaim::Follows(l) => l,
        };
        out.entry(term).or_default().insert(leader);
    }
    out
}

/// One node at one moment, as the timeline keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeMark {
    pub id: u64,
    pub role: RoleView,
    pub term: u64,
    pub commit: u64,
    pub last_log: u64,
    pub partitioned: bool,
}

/// The cluster at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub at: f64,
    pub leader: Option<u64>,
    /// The term of the last leader seen (a cut-off candidate's higher term is not the cluster's).
    pub term: u64,
    pub nodes: Vec<NodeMark>,
}

/// The cluster at `at`; `last_term` is the previous sample's term, kept while there is no leader.
pub fn sample_of(at: f64, c: &ClusterView, last_term: u64) -> Sample {
    Sample {
        at,
        leader: c.leader,
        term: c.leader_term.unwrap_or(last_term),
        nodes: c
            .nodes
            .iter()
            .filter_map(|n| {
                Some(NodeMark {
                    id: n.id?,
                    role: n.role,
                    term: n.term,
                    commit: n.commit_index,
                    last_log: n.last_log_index,
                    partitioned: n.partitioned,
                })
            })
            .collect(),
    }
}

/// The last sample taken at or before `t`.
pub fn sample_at(samples: &[Sample], t: f64) -> Option<&Sample> {
    let i = samples.partition_point(|s| s.at <= t);
    i.checked_sub(1).map(|i| &samples[i])
}

/// A stretch of time with one value: a node's role (and term), or the cluster's term.
#[derive(Clone, Debug, PartialEq)]
pub struct Span<T> {
    pub from: f64,
    pub to: f64,
    pub value: T,
}

/// Merges consecutive samples with the same value into spans; the last span ends at `now`.
pub fn spans<T: PartialEq + Clone>(samples: &[Sample], now: f64, value: impl Fn(&Sample) -> Option<T>) -> Vec<Span<T>> {
    let mut out: Vec<Span<T>> = Vec::new();
    // Whether the last span is still running (a sample without a value ends it).
    let mut open = false;
    for s in samples {
        if open {
            if let Some(last) = out.last_mut() {
                last.to = s.at;
            }
        }
        match value(s) {
            Some(v) if open && out.last().is_some_and(|l| l.value == v) => {}
            Some(v) => {
                out.push(Span { from: s.at, to: s.at, value: v });
                open = true;
            }
            None => open = false,
        }
    }
    if open {
        if let Some(last) = out.last_mut() {
            last.to = last.to.max(now);
        }
    }
    out
}

/// The moments a leader of a higher term appeared: the elections that someone won.
pub fn term_changes(samples: &[Sample]) -> Vec<(f64, u64)> {
    samples.windows(2).filter(|w| w[1].term > w[0].term).map(|w| (w[1].at, w[1].term)).collect()
}

/// "0.84 s", "12 ms": a duration for people.
pub fn show_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(node_id: u64, append_entries: u64, entries: u64, votes: u64, chunks: u64, failures: u64) -> TrafficView {
        TrafficView {
            node_id,
            append_entries,
            entries,
            votes,
            snapshot_chunks: chunks,
            failures,
            in_flight: 0,
            millis_since_answer: Some(5),
            last_error: String::new(),
        }
    }

    #[test]
    fn the_ring_starts_at_the_top_and_goes_clockwise() {
        let (x, y) = ring_position(0, 4, 100.0, 100.0, 50.0);
        assert!((x - 100.0).abs() < 1e-9 && (y - 50.0).abs() < 1e-9, "first node at the top: {x},{y}");
        let (x, y) = ring_position(1, 4, 100.0, 100.0, 50.0);
        assert!((x - 150.0).abs() < 1e-9 && (y - 100.0).abs() < 1e-9, "second node on the right: {x},{y}");
    }

    #[test]
    fn messages_come_only_from_counters_that_moved() {
        let before = [traffic(2, 10, 100, 0, 0, 0), traffic(3, 10, 100, 0, 0, 0)];
        let after = [traffic(2, 12, 100, 0, 0, 0), traffic(3, 15, 140, 0, 0, 0)];
        let m = messages_between(1, &before, &after, 100.0);
        assert_eq!(
            m,
            vec![
                Message { from: 1, to: 2, kind: MessageKind::Heartbeat, lost: false },
                Message { from: 1, to: 3, kind: MessageKind::Append, lost: false },
            ]
        );
        assert!(messages_between(1, &after, &after, 100.0).is_empty(), "no change, no message");
    }

    #[test]
    fn a_vote_answered_in_time_is_drawn_coming_back_and_a_failed_one_as_lost() {
        let before = [traffic(2, 0, 0, 0, 0, 0), traffic(3, 0, 0, 0, 0, 0)];
        let after = [traffic(2, 0, 0, 1, 0, 0), traffic(3, 0, 0, 1, 0, 1)];
        let m = messages_between(1, &before, &after, 100.0);
        assert_eq!(
            m,
            vec![
                Message { from: 1, to: 2, kind: MessageKind::VoteRequest, lost: false },
                Message { from: 2, to: 1, kind: MessageKind::VoteAnswer, lost: false },
                Message { from: 1, to: 3, kind: MessageKind::VoteRequest, lost: true },
            ]
        );
    }

    #[test]
    fn a_restarted_sender_draws_nothing() {
        let before = [traffic(2, 1000, 5000, 3, 0, 0)];
        let after = [traffic(2, 2, 0, 0, 0, 0)];
        assert!(messages_between(1, &before, &after, 100.0).is_empty());
    }

    #[test]
    fn snapshot_chunks_are_their_own_messages() {
        let m = messages_between(1, &[traffic(2, 5, 0, 0, 0, 0)], &[traffic(2, 5, 0, 0, 2, 0)], 100.0);
        assert_eq!(m, vec![Message { from: 1, to: 2, kind: MessageKind::SnapshotChunk, lost: false }]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    fn rec(seq: u64, started: f64, ended: f64, outcome: Outcome) -> WriteRecord {
        WriteRecord { seq, started, ended: Some(ended), outcome }
    }

    #[test]
    fn buckets_count_by_end_time_and_take_latencies_of_acknowledged_writes_only() {
        let records = [
            rec(1, 0.0, 10.0, Outcome::Ok),
            rec(2, 5.0, 30.0, Outcome::Ok),
            rec(3, 900.0, 1100.0, Outcome::Unknown),
            rec(4, 950.0, 1200.0, Outcome::Failed),
            rec(5, 1000.0, 1990.0, Outcome::Ok),
            WriteRecord { seq: 6, started: 1500.0, ended: None, outcome: Outcome::Pending },
            rec(7, 1900.0, 2000.0, Outcome::Ok), // ends at `to`: outside
        ];
        let b = buckets(&records, 0.0, 2000.0, 1000.0);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].acked, b[0].failed, b[0].unknown), (2, 0, 0));
        assert_eq!((b[0].p50, b[0].p99), (Some(10.0), Some(25.0)));
        assert_eq!((b[1].acked, b[1].failed, b[1].unknown), (1, 1, 1));
        assert_eq!(b[1].p50, Some(990.0));
    }

    #[test]
    fn gaps_are_between_acknowledgements() {
        let records = [
            rec(1, 0.0, 100.0, Outcome::Ok),
            rec(2, 100.0, 200.0, Outcome::Ok),
            rec(3, 200.0, 900.0, Outcome::Unknown),
            rec(4, 300.0, 1400.0, Outcome::Ok),
            rec(5, 1400.0, 1450.0, Outcome::Ok),
        ];
        let acks = ack_times(&records, 0.0, 10_000.0);
        assert_eq!(acks, vec![100.0, 200.0, 1400.0, 1450.0]);
        assert_eq!(gaps(&acks, 500.0), vec![(200.0, 1400.0)]);
        assert_eq!(gaps(&acks, 100.0), vec![(200.0, 1400.0)], "100 ms apart is not longer than 100 ms");
        assert!(gaps(&acks[..1], 0.0).is_empty(), "one acknowledgement has no gap");
    }

    #[test]
    fn the_outage_ends_with_a_write_sent_after_the_fault() {
        let records = [
            rec(1, 0.0, 90.0, Outcome::Ok),
            rec(2, 80.0, 120.0, Outcome::Ok), // sent before the fault at 100, acknowledged just after it
            rec(3, 110.0, 150.0, Outcome::Failed),
            rec(4, 160.0, 1300.0, Outcome::Ok),
            rec(5, 900.0, 1100.0, Outcome::Ok),
        ];
        assert_eq!(outage(&records, 100.0), (Some(90.0), Some(1100.0)));
        assert_eq!(outage(&records[..1], 100.0), (Some(90.0), None), "not recovered yet");
    }

    #[test]
    fn leader_claims_are_read_from_the_node_events() {
        use raftkv_proto::EventKind;
        assert_eq!(leader_claim(EventKind::RoleChanged, "candidate → leader"), Some(LeaderClaim::Itself));
        assert_eq!(leader_claim(EventKind::RoleChanged, "leader → follower"), None);
        assert_eq!(leader_claim(EventKind::LeaderChanged, "leader is node 3"), Some(LeaderClaim::Follows(3)));
        assert_eq!(leader_claim(EventKind::LeaderChanged, "lost the leader (was node 3)"), None);
        assert_eq!(leader_claim(EventKind::TermChanged, "term 1 → 2"), None);
    }

    #[test]
    fn two_leaders_in_one_term_show_up_in_the_table() {
        let t = leaders_by_term([
            (1, 2, LeaderClaim::Itself),
            (2, 2, LeaderClaim::Follows(1)),
            (3, 3, LeaderClaim::Itself),
            (2, 3, LeaderClaim::Follows(1)), // a follower naming another leader in term 3
        ]);
        assert_eq!(t[&2], BTreeSet::from([1]));
        assert_eq!(t[&3], BTreeSet::from([1, 3]));
    }

    fn sample(at: f64, term: u64, roles: &[(u64, RoleView)]) -> Sample {
        Sample {
            at,
            leader: roles.iter().find(|r| r.1 == RoleView::Leader).map(|r| r.0),
            term,
            nodes: roles
                .iter()
                .map(|&(id, role)| NodeMark { id, role, term, commit: 0, last_log: 0, partitioned: false })
                .collect(),
        }
    }

    #[test]
    fn samples_merge_into_spans_and_term_changes() {
        use RoleView::*;
        let s = [
            sample(0.0, 1, &[(1, Leader), (2, Follower)]),
            sample(100.0, 1, &[(1, Leader), (2, Follower)]),
            sample(200.0, 2, &[(1, Down), (2, Candidate)]),
            sample(300.0, 2, &[(1, Down), (2, Leader)]),
        ];
        let node2 = spans(&s, 400.0, |s| s.nodes.iter().find(|n| n.id == 2).map(|n| n.role));
        assert_eq!(
            node2,
            vec![
                Span { from: 0.0, to: 200.0, value: Follower },
                Span { from: 200.0, to: 300.0, value: Candidate },
                Span { from: 300.0, to: 400.0, value: Leader },
            ]
        );
        assert_eq!(term_changes(&s), vec![(200.0, 2)]);
        // A node missing from a sample (not on the page then) breaks its lane.
        let mut gap = s.to_vec();
        gap[1].nodes.retain(|n| n.id != 2);
        let node2 = spans(&gap, 400.0, |s| s.nodes.iter().find(|n| n.id == 2).map(|n| n.role));
        assert_eq!(node2[0], Span { from: 0.0, to: 100.0, value: Follower });
        assert_eq!(node2[1], Span { from: 200.0, to: 300.0, value: Candidate });
        assert_eq!(sample_at(&s, 250.0).map(|s| s.at), Some(200.0));
        assert_eq!(sample_at(&s, -1.0), None);
    }
}
