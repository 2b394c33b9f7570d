//! Leader leases for linearizable reads: a leader that a quorum heard from recently serves reads without a round.
//!
//! A linearizable read needs proof that no other node can have become leader and committed a write this leader
//! does not have. The read index ([`super::read_index`]) gets that proof with a round of heartbeats per batch of
//! reads. A lease gets it from time instead, on these facts:
//!
//! 1. **Followers refuse to vote while they follow a live leader.** openraft 0.9 rejects every vote request for
//!    `leader_lease` (its `election_timeout_max`) after the follower last accepted a message of its leader (the
//!    follower's own monotonic clock).
//! 2. **So an acknowledged message renews the lease.** If follower F accepted an AppendEntries that this leader
//!    sent at time `s` (this node's clock), F accepted it after `s` and refuses votes until at least
//!    `s + leader_lease` by F's clock.
//! 3. **A new leader needs a majority of votes**, and every majority shares a member with {this leader, the
//!    followers that acknowledged within the lease}. If that shared member is a follower, it refuses (fact 1). If it
//!    is this leader, it can grant the vote only after saving it: openraft answers a vote request after the log
//!    store's `save_vote` returned, and the log store records the vote before returning. The lease is checked
//!    against **the vote in the log store**, not openraft's (later) metrics, so once this node may have voted for
//!    someone else, no read is served from the lease.
//! 4. **A restarted follower has forgotten when it last heard from the leader** (openraft keeps that in memory),
//!    so for `leader_lease` after it starts a node refuses every vote request ([`ReadLease::refusing_votes`]).
//!
//! Hence, while a majority (this leader included) acknowledged messages sent less than [`ReadLease::duration`]
//! ago, and no vote request of a higher term arrived, no other leader exists, and every write acknowledged to any
//! client has been applied here (a write is acknowledged after it is applied on the leader that committed it, and
//! only this node can have been leader since its term's first entry was applied): reading the local state
//! machine, after it has applied everything committed when the read arrived, is linearizable.
//!
//! **Clock assumption**, stated in the README: the clocks of the members advance at rates that differ by less
//! than a factor of two. The read lease is half of `leader_lease`, so a follower's clock may run up to twice as
//! fast as the leader's before the argument breaks. The leader measures with `CLOCK_BOOTTIME`, which keeps
//! counting while the machine is suspended (a suspended leader must not wake up believing its lease is fresh);
//! a paused process (SIGSTOP) is covered because the clock keeps running while it is stopped.
//!
//! During a membership change (a joint configuration) the lease is not used; reads take the read index.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use parking_lot::Mutex;

use super::{NodeId, Vote};

/// `CLOCK_BOOTTIME`: monotonic, and counting while the machine is suspended.
pub fn boottime() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What this node knows about who acknowledged its leadership, and when.
pub struct ReadLease {
    /// openraft's `leader_lease`: how long a follower refuses votes after hearing from its leader.
    leader_lease: Duration,
    /// When this process started (boottime).
    started: Duration,
    /// Per follower: the vote of the last AppendEntries it accepted, and when that message was sent.
    acks: Mutex<BTreeMap<NodeId, (Vote, Duration)>>,
}

impl ReadLease {
    pub fn new(leader_lease: Duration) -> Self {
        Self { leader_lease, started: boottime(), acks: Mutex::new(BTreeMap::new()) }
    }

    /// How long after sending an acknowledged message the lease lasts: half of `leader_lease` (the clock margin).
    pub fn duration(&self) -> Duration {
        self.leader_lease / 2
    }

    /// Follower `target` accepted an AppendEntries of `vote` that was sent at `sent` (boottime).
    pub fn acked(&self, target: NodeId, vote: Vote, sent: Duration) {
        let mut acks = self.acks.lock();
        let e = acks.entry(target).or_insert((vote, sent));
        if e.0 != vote || sent > e.1 {
            *e = (vote, sent);
        }
    }

    /// Whether this node must refuse to vote: it started less than `leader_lease` ago and may have forgotten that
    /// it follows a live leader.
    pub fn refusing_votes(&self) -> bool {
        boottime().saturating_sub(self.started) < self.leader_lease
    }

    /// Whether node `me`, whose log store holds `stored_vote`, holds the lease over `voters` now.
    pub fn held(&self, me: NodeId, stored_vote: Option<Vote>, voters: &BTreeSet<NodeId>) -> bool {
        let Some(vote) = stored_vote else { return false };
        let now = boottime();
        let acks = self.acks.lock();
        holds(me, &vote, voters, &acks, now, self.duration())
    }
}

/// The lease rule: `me` (leader with `vote`, a voter) plus the voters that accepted a message of `vote` sent less
/// than `lease` before `now` form a majority of `voters`.
fn holds(
    me: NodeId,
    vote: &Vote,
    voters: &BTreeSet<NodeId>,
    acks: &BTreeMap<NodeId, (Vote, Duration)>,
    now: Duration,
    lease: Duration,
) -> bool {
    if !vote.is_committed() || vote.leader_id().node_id != me || !voters.contains(&me) {
        return false;
    }
    let fresh = voters
        .iter()
        .filter(|id| **id != me)
        .filter(|id| acks.get(id).is_some_and(|(v, sent)| v == vote && *sent + lease > now))
        .count();
    (fresh + 1) * 2 > voters.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader_vote(term: u64, id: NodeId) -> Vote {
        Vote::new_committed(term, id)
    }

    #[test]
    fn a_majority_of_fresh_acknowledgements_holds_the_lease() {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let vote = leader_vote(5, 1);
        let lease = Duration::from_millis(250);
        let now = Duration::from_secs(100);
        let mut acks = BTreeMap::new();
        assert!(!holds(1, &vote, &voters, &acks, now, lease), "no acknowledgement: no lease");
        acks.insert(2, (vote, now - Duration::from_millis(100)));
        assert!(holds(1, &vote, &voters, &acks, now, lease), "leader + one follower of three");
        assert!(!holds(1, &vote, &voters, &acks, now + Duration::from_millis(150), lease), "the lease runs out");
        assert!(!holds(2, &vote, &voters, &acks, now, lease), "only the vote's leader holds it");
        let old = leader_vote(4, 1);
        acks.insert(2, (old, now));
        assert!(!holds(1, &vote, &voters, &acks, now, lease), "an acknowledgement of an older term does not count");
        let five: BTreeSet<NodeId> = [1, 2, 3, 4, 5].into();
        acks.insert(2, (vote, now));
        assert!(!holds(1, &vote, &five, &acks, now, lease), "two of five is no majority");
        acks.insert(4, (vote, now));
        assert!(holds(1, &vote, &five, &acks, now, lease));
        assert!(!holds(1, &Vote::new(5, 1), &voters, &acks, now, lease), "a candidate holds no lease");
    }

    #[test]
    fn a_changed_stored_vote_ends_the_lease_at_once() {
        let l = ReadLease::new(Duration::from_secs(60));
        let vote = leader_vote(3, 1);
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        l.acked(2, vote, boottime());
        assert!(l.held(1, Some(vote), &voters));
        assert!(!l.held(1, Some(Vote::new(4, 2)), &voters), "voted for a candidate: no lease");
        assert!(!l.held(1, Some(leader_vote(4, 2)), &voters), "follows another leader: no lease");
        assert!(!l.held(1, None, &voters));
        assert!(l.refusing_votes(), "a node that just started refuses to vote");
    }
}
