//! The lessor: when leases expire, decided by the leader alone on its monotonic clock.
//!
//! The replicated part of a lease (its TTL, keys and last checkpoint) lives in the state machine
//! ([`crate::lease`]); its deadline lives only here, on the leader, and only while it leads. An expiry becomes an
//! ordinary replicated `LeaseRevoke`, so followers never judge time.
//!
//! Rules, each against a way etcd lost or kept leases wrongly:
//! - **Timers start late.** They run only once this node leads and has applied an entry of its own term (so it
//!   has applied everything earlier leaders committed: every grant and revoke). At that moment every lease gets its
//!   remaining time — the last checkpoint, else its whole TTL — plus the election timeout: the time a client may
//!   have needed to find the new leader.
//! - **Renewals are not replicated** but answered only after a read barrier (the leader has applied what was
//!   committed when the renewal arrived), so a renewal never revives a lease whose revoke had committed, and a lease
//!   already past its deadline (its revoke on the way) is not renewed.
//! - **Checkpoints** (etcd's design, #9395, #17132): every `--lease-checkpoint-interval` the leader replicates the
//!   remaining time of each long lease that was not renewed within the interval, and a renewal of a checkpointed
//!   lease clears the checkpoint through Raft before it is answered (else a new leader would start it from a
//!   remaining time older than the renewal: an early expiry). So a leader change extends a lease by at most the
//!   election timeout plus one interval, not by a whole TTL each time.
//! - **A stuck or deposed leader revokes nothing** (etcd #12528, #15247): every tick checks that the lessor itself
//!   ran on time (a paused process, SIGSTOP, a starved runtime) and that the state machine kept up with the commit
//!   index (a stalled apply loop delays renewals, which wait for it). Time in which renewals could not have been
//!   answered is added to every deadline. Right before proposing revokes it proves leadership again (a read
//!   barrier), and a revoke proposed by a leader deposed meanwhile cannot commit in a term it no longer leads.
//!
//! The guarantee (README, "Leases"): a lease expires no earlier than its TTL after the last renewal the client
//! saw acknowledged, and no later than TTL + failover time after its owner stops renewing, as long as a majority
//! is up.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::{api::ApiContext, raft::Command};

/// How often the lessor looks at its deadlines.
pub const TICK: Duration = Duration::from_millis(100);

/// A tick later than this (beyond [`TICK`]) means this node could not have served renewals meanwhile.
const LATE: Duration = Duration::from_millis(150);

/// The default `--lease-checkpoint-interval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// At most this many leases per revoke round and per checkpoint entry (etcd revokes at most 1000 per second).
const MAX_PER_ROUND: usize = 1000;

#[derive(Debug, Clone, Copy)]
pub struct LessorConfig {
    /// The election timeout (its maximum): added to every lease when a leader takes over.
    pub election_timeout: Duration,
    pub checkpoint_interval: Duration,
}

/// What a renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    /// Renewed for this many seconds; `clear_checkpoint`: the lease has a checkpoint that must be cleared through
    /// Raft before the renewal is answered.
    Ttl { ttl: i64, clear_checkpoint: bool },
    /// No such lease, or it expired (its revoke is under way).
    NotFound,
    /// This node does not run lease timers (yet): not the leader, or it has not applied an entry of its term.
    NotReady,
}

#[derive(Default)]
struct State {
    /// The term whose timers are running: this node leads it and has applied an entry of it.
    term: Option<u64>,
    /// When each lease expires.
    deadlines: HashMap<i64, Instant>,
    /// Leases whose revoke was proposed on expiry, and when (proposed again if still there much later).
    revoking: HashMap<i64, Instant>,
    /// When the lessor last looked at the clock (pause detection).
    last_seen: Option<Instant>,
    /// The commit index at the previous tick (apply stall detection).
    committed_before: u64,
    last_checkpoint: Option<Instant>,
}

pub struct Lessor {
    config: LessorConfig,
    state: Mutex<State>,
}

impl Lessor {
    pub fn new(config: LessorConfig) -> Self {
        Self { config, state: Mutex::new(State::default()) }
    }

    /// The smallest TTL a lease is granted (etcd's: ⌈1.5 × election timeout⌉, in whole seconds).
    pub fn min_ttl(&self) -> i64 {
        let ms = self.config.election_timeout.as_millis() as i64 * 3 / 2;
        ((ms + 999) / 1000).max(1)
    }

    /// Runs timers for `term` (starting them if this is a new term), or stops them (`None`); returns whether they
    /// were started now. `leases`: every lease of the state machine as (id, TTL seconds, checkpoint ms).
    fn lead(&self, term: Option<u64>, leases: &[(i64, i64, Option<i64>)], now: Instant) -> bool {
        let mut s = self.state.lock();
        if s.term == term {
            return false;
        }
        s.term = term;
        s.deadlines.clear();
        s.revoking.clear();
        s.last_checkpoint = Some(now);
        if term.is_none() {
            return false;
        }
        for (id, ttl, remaining) in leases {
            let left = remaining.map_or(Duration::from_secs(*ttl as u64), |ms| Duration::from_millis(ms.max(0) as u64));
            s.deadlines.insert(*id, now + left + self.config.election_timeout);
        }
        true
    }

    /// Adds time in which renewals could not have been served to every deadline: the lessor ran late (a pause),
    /// or the state machine had not applied by now what was committed a tick ago (renewals wait for apply).
    /// Returns the time added.
    fn account_liveness(&self, now: Instant, applied: u64, committed: u64) -> Duration {
        let mut s = self.state.lock();
        let since = s.last_seen.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        s.last_seen = Some(now);
        let stalled_apply = applied < s.committed_before;
        s.committed_before = committed;
        let lost = if since > TICK + LATE {
            since - TICK
        } else if stalled_apply {
            since
        } else {
            Duration::ZERO
        };
        if !lost.is_zero() {
            for d in s.deadlines.values_mut() {
                *d += lost;
            }
        }
        lost
    }

    /// Brings the timers in line with the state machine: leases granted in this term start with their whole
    /// TTL now; revoked ones are forgotten.
    fn sync(&self, leases: &[(i64, i64, Option<i64>)], now: Instant) {
        let mut s = self.state.lock();
        if s.term.is_none() {
            return;
        }
        if leases.len() == s.deadlines.len() && leases.iter().all(|(id, ..)| s.deadlines.contains_key(id)) {
            return;
        }
        let known: std::collections::HashSet<i64> = leases.iter().map(|(id, ..)| *id).collect();
        s.deadlines.retain(|id, _| known.contains(id));
        s.revoking.retain(|id, _| known.contains(id));
        for (id, ttl, _) in leases {
            s.deadlines.entry(*id).or_insert(now + Duration::from_secs(*ttl as u64));
        }
    }

    /// Leases past their deadline whose revoke is not under way (or was proposed long ago and did not take).
    fn expired(&self, term: u64, now: Instant) -> Vec<i64> {
        let s = self.state.lock();
        if s.term != Some(term) {
            return Vec::new();
        }
        let retry = self.config.election_timeout * 4;
        let mut ids: Vec<i64> = s
            .deadlines
            .iter()
            .filter(|(id, d)| **d <= now && s.revoking.get(id).is_none_or(|t| now.duration_since(*t) > retry))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.truncate(MAX_PER_ROUND);
        ids
    }

    /// Marks `ids` as being revoked, keeping only those still expired in `term` at `now` (a renewal or a pause
    /// may have moved them since they were picked).
    fn start_revoking(&self, term: u64, ids: Vec<i64>, now: Instant) -> Vec<i64> {
        let mut s = self.state.lock();
        if s.term != Some(term) {
            return Vec::new();
        }
        let ids: Vec<i64> = ids.into_iter().filter(|id| s.deadlines.get(id).is_some_and(|d| *d <= now)).collect();
        for id in &ids {
            s.revoking.insert(*id, now);
        }
        ids
    }

    /// Remaining times worth replicating, if a checkpoint is due: leases with a TTL above the interval that
    /// were not renewed within it (whose checkpoint is not already that recent).
    fn checkpoints(&self, leases: &[(i64, i64, Option<i64>)], now: Instant) -> Vec<(i64, Option<i64>)> {
        let mut s = self.state.lock();
        let interval = self.config.checkpoint_interval;
        if s.term.is_none() || interval.is_zero() || s.last_checkpoint.is_some_and(|t| now.duration_since(t) < interval)
        {
            return Vec::new();
        }
        s.last_checkpoint = Some(now);
        let interval_ms = interval.as_millis() as i64;
        let mut out = Vec::new();
        for (id, ttl, stored) in leases {
            let ttl_ms = ttl.saturating_mul(1000);
            let Some(deadline) = s.deadlines.get(id) else { continue };
            if ttl_ms <= interval_ms || s.revoking.contains_key(id) {
                continue;
            }
            let left = deadline.saturating_duration_since(now).as_millis() as i64;
            let renewed_lately = left >= ttl_ms - interval_ms;
            let recent = stored.is_some_and(|c| c - left < interval_ms / 2);
            if !renewed_lately && !recent {
                out.push((*id, Some(left)));
                if out.len() >= MAX_PER_ROUND {
                    break;
                }
            }
        }
        out
    }

    /// Renews lease `id` (granted `ttl` seconds; `checkpointed`: the state machine holds a checkpoint of it) in
    /// `term`. The caller has passed a read barrier, so the state machine's view of the lease is current.
    pub fn renew(&self, term: u64, id: i64, lease: Option<(i64, bool)>) -> Renewed {
        self.renew_at(term, id, lease, Instant::now())
    }

    fn renew_at(&self, term: u64, id: i64, lease: Option<(i64, bool)>, now: Instant) -> Renewed {
        let mut s = self.state.lock();
        if s.term != Some(term) {
            return Renewed::NotReady;
        }
        let Some((ttl, checkpointed)) = lease else { return Renewed::NotFound };
        if s.revoking.contains_key(&id) || s.deadlines.get(&id).is_some_and(|d| *d <= now) {
            return Renewed::NotFound; // expired: its revoke is on the way, a renewal does not revive it
        }
        s.deadlines.insert(id, now + Duration::from_secs(ttl as u64));
        Renewed::Ttl { ttl, clear_checkpoint: checkpointed }
    }

    /// The time left of lease `id` in `term`: `None` if timers do not run here; `Some(None)` if unknown here.
    pub fn remaining(&self, term: u64, id: i64) -> Option<Option<Duration>> {
        let s = self.state.lock();
        if s.term != Some(term) {
            return None;
        }
        Some(s.deadlines.get(&id).map(|d| d.saturating_duration_since(Instant::now())))
    }

    /// The running timers, for the dashboard: how many, and the soonest deadline from now.
    pub fn summary(&self) -> Option<(usize, Option<Duration>)> {
        let s = self.state.lock();
        s.term?;
        let now = Instant::now();
        let soonest = s.deadlines.values().min().map(|d| d.saturating_duration_since(now));
        Some((s.deadlines.len(), soonest))
    }

    pub fn election_timeout(&self) -> Duration {
        self.config.election_timeout
    }

    /// The term whose timers run here, if any.
    pub fn term(&self) -> Option<u64> {
        self.state.lock().term
    }
}

/// Every lease of the state machine as (id, TTL, checkpoint).
fn leases_of(ctx: &ApiContext) -> Vec<(i64, i64, Option<i64>)> {
    ctx.state_machine.read(|ks| ks.leases().iter().map(|(id, l)| (id, l.ttl, l.remaining_ms)).collect())
}

/// Runs the lessor until the node stops.
pub fn spawn(ctx: Arc<ApiContext>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = ctx.shutting_down() => return,
            }
            round(&ctx).await;
        }
    });
}

async fn round(ctx: &Arc<ApiContext>) {
    let lessor = &ctx.lessor;
    let now = Instant::now();
    let applied = ctx.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
    let lost = lessor.account_liveness(now, applied, ctx.log_store.committed_index());
    if lost > LATE {
        tracing::warn!(?lost, "lease timers extended: this node could not have served renewals for a while");
    }
    let term = ctx.ready_leader_term();
    let leases = if term.is_some() { leases_of(ctx) } else { Vec::new() };
    if lessor.lead(term, &leases, now) {
        tracing::info!(leases = leases.len(), term, "lease timers started (remaining time + election timeout each)");
    }
    ctx.metrics.leases.set(lessor.summary().map_or(0, |(n, _)| n as i64));
    let Some(term) = term else { return };
    lessor.sync(&leases, now);

    let checkpoints = lessor.checkpoints(&leases, now);
    if !checkpoints.is_empty() {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + ctx.lessor.config.election_timeout * 4;
            if let Err(e) = ctx.write(Command::LeaseCheckpoint { checkpoints }, deadline).await {
                tracing::debug!("lease checkpoint not replicated: {e}");
            }
        });
    }

    let expired = lessor.expired(term, now);
    if expired.is_empty() {
        return;
    }
    // Prove leadership (and that apply is current) right before revoking, then look at the clock again: the
    // barrier may have found this node deposed, or it may have been paused while waiting.
    let deadline = Instant::now() + lessor.config.election_timeout;
    if let Err(e) = ctx.read_barrier(deadline).await {
        tracing::info!(leases = expired.len(), "not revoking expired leases: leadership not confirmed ({e})");
        return;
    }
    let now = Instant::now();
    let applied = ctx.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
    lessor.account_liveness(now, applied, ctx.log_store.committed_index());
    if ctx.ready_leader_term() != Some(term) {
        return;
    }
    for id in lessor.start_revoking(term, expired, now) {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + ctx.lessor.config.election_timeout * 4;
            match ctx.write(Command::LeaseRevoke { id }, deadline).await {
                Ok(crate::raft::CommandResponse::Lease { result: Ok(()), revision }) => {
                    ctx.metrics.leases_expired.inc();
                    tracing::info!(lease = format!("{id:x}"), revision, "lease expired and was revoked");
                }
                Ok(_) => {} // revoked by a client meanwhile
                Err(e) => tracing::info!(lease = format!("{id:x}"), "revoke of an expired lease failed: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lessor() -> Lessor {
        Lessor::new(LessorConfig {
            election_timeout: Duration::from_millis(500),
            checkpoint_interval: Duration::from_secs(5),
        })
    }

    #[test]
    fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(lessor().min_ttl(), 1);
        let l = Lessor::new(LessorConfig {
            election_timeout: Duration::from_millis(1000),
            checkpoint_interval: Duration::ZERO,
        });
        assert_eq!(l.min_ttl(), 2);
    }

    #[test]
    fn a_new_leader_gives_remaining_time_plus_the_election_timeout() {
        let l = lessor();
        let t0 = Instant::now();
        assert!(l.lead(Some(3), &[(1, 10, None), (2, 60, Some(2_000))], t0));
        let s = l.state.lock();
        assert_eq!(s.deadlines[&1], t0 + Duration::from_millis(10_500));
        assert_eq!(s.deadlines[&2], t0 + Duration::from_millis(2_500), "from the checkpoint, not the TTL");
    }

    #[test]
    fn expired_leases_are_revoked_once_and_never_renewed() {
        let l = lessor();
        let t0 = Instant::now();
        l.lead(Some(1), &[(7, 1, None)], t0);
        assert!(l.expired(1, t0).is_empty());
        let late = t0 + Duration::from_secs(2);
        assert_eq!(l.expired(1, late), vec![7]);
        assert_eq!(l.start_revoking(1, vec![7], late), vec![7]);
        assert!(l.expired(1, late).is_empty(), "a revoke under way is not proposed again at once");
        assert_eq!(l.renew_at(1, 7, Some((1, false)), late), Renewed::NotFound, "an expired lease is not revived");
        assert_eq!(l.renew_at(2, 7, Some((1, false)), late), Renewed::NotReady, "another term runs no timers here");
        assert_eq!(l.renew_at(1, 8, None, late), Renewed::NotFound, "unknown to the state machine");
    }

    #[test]
    fn a_pause_or_a_stalled_apply_extends_every_deadline() {
        let l = lessor();
        let t0 = Instant::now();
        l.lead(Some(1), &[(7, 10, None)], t0);
        let before = l.state.lock().deadlines[&7];
        assert_eq!(l.account_liveness(t0, 5, 5), Duration::ZERO);
        // Paused for 20 s (SIGSTOP): 20 s minus one tick were lost.
        let lost = l.account_liveness(t0 + Duration::from_secs(20), 5, 5);
        assert_eq!(lost, Duration::from_secs(20) - TICK);
        assert_eq!(l.state.lock().deadlines[&7], before + lost);
        // Apply did not reach what was committed a tick ago (index 9 committed, 5 applied): the tick is lost.
        let t1 = t0 + Duration::from_secs(20);
        l.account_liveness(t1 + TICK, 5, 9);
        assert_eq!(l.account_liveness(t1 + TICK * 2, 5, 9), TICK);
        assert_eq!(l.account_liveness(t1 + TICK * 3, 9, 9), Duration::ZERO, "caught up");
    }

    #[test]
    fn checkpoints_cover_long_leases_not_renewed_within_the_interval() {
        let l = lessor();
        let t0 = Instant::now();
        l.lead(Some(1), &[(1, 60, None), (2, 3, None), (3, 60, None)], t0);
        let leases = [(1, 60, None), (2, 3, None), (3, 60, None)];
        assert!(l.checkpoints(&leases, t0 + Duration::from_secs(1)).is_empty(), "not due yet");
        let t = t0 + Duration::from_secs(10);
        let renewed = l.renew_at(1, 3, Some((60, false)), t - Duration::from_secs(1));
        assert_eq!(renewed, Renewed::Ttl { ttl: 60, clear_checkpoint: false });
        let cps = l.checkpoints(&leases, t);
        // Lease 1 started at 60.5 s and 10 s passed; lease 2 is short; lease 3 was just renewed.
        assert_eq!(cps, vec![(1, Some(50_500))]);
    }
}
