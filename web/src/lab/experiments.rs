//! The guided experiments: each breaks the real cluster through the control API, observes it through the same
//! Status polls, event streams and writes as the rest of the page, and reports what it measured.
//!
//! Every experiment first waits for a whole cluster (every node running and answering, one leader) and mends what
//! an earlier one left broken, and leaves the cluster whole again when it ends, so they can run in any order.
//! A figure an experiment cannot measure is reported as such, never guessed; a check that fails fails the
//! experiment, with what was seen.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use leptos::prelude::*;
use raftkv_proto::dashboard::{NodeAction, ProcessState};

use crate::{
    api::{self, control, Node},
    lab::{
        load::{wall_ms, LoadConfig},
        model::{ack_times, leaders_by_term, outage, show_ms, LeaderClaim},
    },
    model::{failure_outcome, NodeView, Outcome, RoleView},
    state::Dashboard,
};

/// The experiments, in the order the page lists them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Experiment {
    KillLeader,
    PartitionLeader,
    SplitBrain,
    LoseQuorum,
    SnapshotCatchUp,
    Grow,
}

impl Experiment {
    pub const ALL: [Experiment; 6] = [
        Experiment::KillLeader,
        Experiment::PartitionLeader,
        Experiment::SplitBrain,
        Experiment::LoseQuorum,
        Experiment::SnapshotCatchUp,
        Experiment::Grow,
    ];

    /// The name in `data-testid="experiment-<name>"`.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::KillLeader => "kill-leader",
            Experiment::PartitionLeader => "partition-leader",
            Experiment::SplitBrain => "split-brain",
            Experiment::LoseQuorum => "lose-quorum",
            Experiment::SnapshotCatchUp => "snapshot-catch-up",
            Experiment::Grow => "grow",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Experiment::KillLeader => "Kill the leader",
            Experiment::PartitionLeader => "Partition the leader",
            Experiment::SplitBrain => "Split brain cannot happen",
            Experiment::LoseQuorum => "Lose the quorum",
            Experiment::SnapshotCatchUp => "Catch up by snapshot",
            Experiment::Grow => "Grow the cluster",
        }
    }

    /// What to expect, said before it runs.
    pub fn expect(self) -> &'static str {
        match self {
            Experiment::KillLeader => {
                "With writes running, the leader gets kill -9. Expect writes to stop for about an election timeout \
                 plus an election (well under two seconds here), a new leader, writes to resume, and every \
                 acknowledged write to be there when all of them are read back."
            }
            Experiment::PartitionLeader => {
                "The leader is cut off from its peers but keeps running and thinks it still leads. Writes sent to it \
                 are appended to its log but never acknowledged; the majority elects a new leader. On heal the old \
                 leader steps down and its uncommitted entries are replaced by the new leader's."
            }
            Experiment::SplitBrain => {
                "The seed's experiment: naive replication ends up with two primaries. Here the leader is killed \
                 and restarted three times; every node's events name who led each term. Expect exactly one leader \
                 per term, ever."
            }
            Experiment::LoseQuorum => {
                "Stop enough voters that no majority is left. Expect writes and linearizable reads to stop (they \
                 need a majority), serializable reads to still answer from the node's own copy (possibly stale), \
                 and service to return as soon as one voter comes back."
            }
            Experiment::SnapshotCatchUp => {
                "Stop a follower, write until the leader has compacted its log past what the follower has, restart \
                 it. The leader can no longer send it the entries it missed: it sends a snapshot instead, and the \
                 follower's log jumps."
            }
            Experiment::Grow => {
                "Add a node: it joins as a learner (it gets the log but does not vote), catches up, and is promoted \
                 to voter, which changes the size of a majority."
            }
        }
    }

    /// Why Raft behaves so, shown with the result.
    pub fn why(self) -> &'static str {
        match self {
            Experiment::KillLeader => {
                "Followers start an election only after hearing nothing for a randomized election timeout; the \
                 first candidate to collect a majority of votes leads. A write is acknowledged only once a majority \
                 stored it, and a candidate wins only with a log at least as up to date as that majority's, so no \
                 acknowledged write can be lost by losing one node."
            }
            Experiment::PartitionLeader => {
                "The old leader can append but never reach a majority, so nothing it appends commits. The majority \
                 side elects a leader in a higher term; when the partition heals, the higher term makes the old \
                 leader step down, and the new leader overwrites the entries that never committed."
            }
            Experiment::SplitBrain => {
                "A node votes at most once per term and a leader needs a majority of votes: two majorities of the \
                 same cluster always share a node, so two leaders in one term are impossible. Two leaders in \
                 different terms can briefly both believe they lead, but the older one cannot commit."
            }
            Experiment::LoseQuorum => {
                "Commits and linearizable reads both need a majority to confirm them. A serializable read is \
                 answered by one node from its own state machine: always available, never torn, maybe stale. A \
                 write that timed out without quorum may still commit when the majority returns: unknown means \
                 unknown."
            }
            Experiment::SnapshotCatchUp => {
                "Logs cannot grow forever: after a snapshot the entries it covers are purged (keeping a margin for \
                 slightly lagging followers). A follower that missed purged entries gets the snapshot, in chunks, \
                 and continues from the log after it."
            }
            Experiment::Grow => {
                "A new node joins as a learner so that it cannot slow commits or elections while it is behind. \
                 Promotion goes through joint consensus: for a moment both the old and the new majority must \
                 agree. More voters make a larger majority: 4 voters tolerate one failure, like 3."
            }
        }
    }
}

/// What an experiment measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub passed: bool,
    /// The measured figures, as sentences.
    pub figures: Vec<String>,
    /// The figures for tests, as `data-*` attributes of the result (name without `data-`, value).
    pub data: Vec<(&'static str, String)>,
    /// Log tails before and after (label, node, (index, term) cells), where the experiment shows a log.
    pub logs: Vec<(String, Vec<(u64, u64)>)>,
    /// Leaders seen per term.
    pub leaders: BTreeMap<u64, BTreeSet<u64>>,
}

impl Report {
    fn figure(&mut self, text: impl Into<String>) {
        self.figures.push(text.into());
    }
    fn data(&mut self, name: &'static str, value: impl ToString) {
        self.data.push((name, value.to_string()));
    }
}

/// A running experiment's progress lines and clock.
#[derive(Clone, Copy)]
pub struct Run {
    pub dash: Dashboard,
    pub steps: RwSignal<Vec<String>>,
    t0: f64,
}

/// An experiment's steps fail with what was seen, for people.
type Result<T> = std::result::Result<T, String>;

const POLL: Duration = Duration::from_millis(50);

impl Run {
    pub fn new(dash: Dashboard, steps: RwSignal<Vec<String>>) -> Self {
        steps.set(Vec::new());
        Self { dash, steps, t0: wall_ms() }
    }

    fn say(&self, text: impl Into<String>) {
        let at = (wall_ms() - self.t0) / 1000.0;
        let text = text.into();
        self.steps.update(|s| s.push(format!("{at:6.2} s  {text}")));
    }

    fn nodes(&self) -> Vec<NodeView> {
        self.dash.cluster.with_untracked(|c| c.nodes.clone())
    }

    fn node(&self, id: u64) -> Option<NodeView> {
        self.dash.cluster.with_untracked(|c| c.node(id).cloned())
    }

    fn leader(&self) -> Option<u64> {
        self.dash.cluster.with_untracked(|c| c.leader)
    }

    fn url(&self, id: u64) -> Result<String> {
        self.node(id).map(|n| n.url).ok_or_else(|| format!("node {id} is not on the page"))
    }

    /// Polls `f` until it gives a value, for at most `limit`.
    async fn until<T>(&self, what: &str, limit: Duration, f: impl Fn() -> Option<T>) -> Result<T> {
        let deadline = wall_ms() + limit.as_millis() as f64;
        loop {
            if let Some(v) = f() {
                return Ok(v);
            }
            if wall_ms() > deadline {
                return Err(format!("gave up waiting for {what} after {}", show_ms(limit.as_millis() as f64)));
            }
            gloo_timers::future::sleep(POLL).await;
        }
    }

    async fn act(&self, id: u64, action: NodeAction) -> Result<()> {
        self.dash.act(id, action).await.map(|_| ()).map_err(|e| format!("{} node {id}: {e}", action.as_str()))
    }

    /// Waits for a whole cluster: every node running, not partitioned, answering; one leader. Mends what an
    /// earlier experiment (or a person) left broken first.
    async fn whole(&self) -> Result<u64> {
        if !self.dash.control.get_untracked() {
            return Err("experiments need a cluster this page controls (raftkv cluster)".into());
        }
        for n in self.nodes() {
            let Some(id) = n.id else { continue };
            let process = match n.process {
                Some(ProcessState::Down) => Some(NodeAction::Restart),
                Some(ProcessState::Paused) => Some(NodeAction::Resume),
                _ => None,
            };
            // A partition is the controller's desired state: it outlives restarts, so it is healed as well.
            let partition = n.partitioned.then_some(NodeAction::Heal);
            for action in [process, partition].into_iter().flatten() {
                self.say(format!("first mending node {id}: {}", action.as_str()));
                self.act(id, action).await?;
            }
        }
        self.until("every node to answer with one leader", Duration::from_secs(30), || {
            let nodes = self.nodes();
            let settled = nodes.iter().all(|n| {
                !n.stale
                    && !n.partitioned
                    && matches!(n.role, RoleView::Leader | RoleView::Follower | RoleView::Learner)
            });
            let leader = self.leader()?;
            let follow = nodes.iter().all(|n| n.leader_id == leader);
            (settled && follow).then_some(leader)
        })
        .await
    }

    /// The moment node `id` said it became leader in a term above `above`, from its events.
    fn became_leader_at(&self, id: u64, above: u64) -> Option<f64> {
        self.dash.events.with_untracked(|evs| {
            evs.iter()
                .filter(|e| e.node_id == Some(id) && e.event.term > above)
                .find(|e| e.leader_claim() == Some(LeaderClaim::Itself))
                .map(|e| e.event.unix_millis as f64)
        })
    }

    /// Reads back every write of the load generator in [`from`, `to`) from `url`: (acknowledged, acknowledged and
    /// missing or wrong, unknown, unknown found applied).
    async fn read_back(&self, url: &str, from: u64, to: u64) -> Result<(usize, Vec<u64>, usize, usize)> {
        let load = self.dash.load;
        let r = Node::new(url)
            .range(&load.key(from), &load.key(to))
            .await
            .map_err(|e| format!("reading back the writes from {url}: {e}"))?;
        let found: BTreeMap<String, String> = r
            .kvs
            .iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned()))
            .collect();
        let (mut acked, mut lost, mut unknown, mut applied) = (0, Vec::new(), 0, 0);
        load.with_records(|records| {
            for r in records.iter().filter(|r| r.seq >= from && r.seq < to) {
                let there = found.get(&load.key(r.seq)).is_some_and(|v| *v == r.seq.to_string());
                match r.outcome {
                    Outcome::Ok => {
                        acked += 1;
                        if !there {
                            lost.push(r.seq);
                        }
                    }
                    Outcome::Unknown | Outcome::Pending => {
                        unknown += 1;
                        applied += usize::from(there);
                    }
                    Outcome::Failed => {}
                }
            }
        });
        Ok((acked, lost, unknown, applied))
    }

    /// Restarts node `id` and waits for it to follow a leader again.
    async fn bring_back(&self, id: u64, report: &mut Report) -> Result<()> {
        let t = wall_ms();
        self.say(format!("restarting node {id}"));
        self.act(id, NodeAction::Restart).await?;
        self.until(&format!("node {id} to rejoin"), Duration::from_secs(30), || {
            self.node(id).filter(|n| !n.stale && matches!(n.role, RoleView::Follower | RoleView::Leader))
        })
        .await?;
        report.figure(format!("node {id} restarted and rejoined in {}", show_ms(wall_ms() - t)));
        Ok(())
    }
}

/// The load generator taken over by an experiment: with `config` (or stopped, with None) until dropped, then
/// back to what it was doing, however the experiment ends.
struct LoadOverride {
    dash: Dashboard,
    saved: LoadConfig,
    was_running: bool,
}

impl LoadOverride {
    fn new(dash: Dashboard, config: Option<LoadConfig>) -> Self {
        let load = dash.load;
        let this = Self { dash, saved: load.config.get_untracked(), was_running: load.running.get_untracked() };
        load.stop();
        if let Some(c) = config {
            load.config.set(c);
            load.start(dash);
        }
        this
    }
}

impl Drop for LoadOverride {
    fn drop(&mut self) {
        let load = self.dash.load;
        load.stop();
        load.config.set(self.saved.clone());
        if self.was_running {
            load.start(self.dash);
        }
    }
}

/// Runs one experiment to its report.
pub async fn run(which: Experiment, run: Run) -> Result<Report> {
    match which {
        Experiment::KillLeader => kill_leader(run).await,
        Experiment::PartitionLeader => partition_leader(run).await,
        Experiment::SplitBrain => split_brain(run).await,
        Experiment::LoseQuorum => lose_quorum(run).await,
        Experiment::SnapshotCatchUp => snapshot_catch_up(run).await,
        Experiment::Grow => grow(run).await,
    }
}

async fn kill_leader(run: Run) -> Result<Report> {
    let mut report = Report::default();
    let old = run.whole().await?;
    let old_term = run.node(old).map_or(0, |n| n.term);
    let load = run.dash.load;
    let first_seq = load.next_seq();
    run.say("running the load generator: 4 writes in flight, to the leader");
    let own_load = LoadOverride::new(run.dash, Some(LoadConfig { rate: 0, in_flight: 4, target: String::new() }));
    let before = wall_ms();
    run.until("two seconds of acknowledged writes", Duration::from_secs(20), || {
        let acks = load.with_records(|r| ack_times(r, before, wall_ms()));
        (wall_ms() - before > 2000.0 && acks.len() >= 5).then_some(())
    })
    .await?;
    run.say(format!("kill -9 node {old}, the leader in term {old_term}"));
    run.act(old, NodeAction::Kill).await?;
    // The control API answers once the process is dead and reaped.
    let killed_at = wall_ms();
    let new = run.until("a new leader", Duration::from_secs(20), || run.leader().filter(|&l| l != old)).await?;
    let seen_at = wall_ms();
    // The new leader's own event says when it won; the polls only see it up to 100 ms later.
    let event_at = run.became_leader_at(new, old_term).filter(|&t| t >= killed_at);
    let elected_at = event_at.unwrap_or(seen_at);
    run.say(format!("node {new} leads"));
    let resumed = run
        .until("an acknowledged write sent after the kill", Duration::from_secs(20), || {
            load.with_records(|r| outage(r, killed_at).1)
        })
        .await?;
    run.say("writes resumed; two more seconds of them");
    gloo_timers::future::sleep(Duration::from_secs(2)).await;
    load.stop();
    let last_seq = load.next_seq();
    load.settled(last_seq, Duration::from_secs(5)).await;
    drop(own_load);
    // The gap around the kill: the last acknowledgement before it to the first of a write sent after it.
    let last_before = load.with_records(|r| outage(r, killed_at).0).unwrap_or(killed_at);
    let gap = resumed - last_before;
    let url = run.url(new)?;
    run.say(format!("reading back writes {first_seq}–{} from node {new}", last_seq.saturating_sub(1)));
    let (acked, lost, unknown, applied) = run.read_back(&url, first_seq, last_seq).await?;
    report.figure(format!(
        "new leader: node {new}, {} after the kill{}",
        show_ms(elected_at - killed_at),
        if event_at.is_some() { "" } else { " (as the page's polls saw it: its event had not arrived)" }
    ));
    report.figure(format!("first acknowledged write sent after the kill: {} after it", show_ms(resumed - killed_at)));
    report
        .figure(format!("writes stopped for {} (the last acknowledgement before the kill to that one)", show_ms(gap)));
    report.figure(format!(
        "{acked} acknowledged writes read back: {} lost · {unknown} with unknown outcome ({applied} of them applied)",
        lost.len()
    ));
    report.data("new-leader", new);
    report.data("leader-ms", (elected_at - killed_at).round());
    report.data("first-write-ms", (resumed - killed_at).round());
    report.data("gap-ms", gap.round());
    report.data("acked", acked);
    report.data("lost", lost.len());
    report.data("unknown", unknown);
    report.passed = lost.is_empty() && acked > 0;
    if !lost.is_empty() {
        report.figure(format!("LOST acknowledged writes: {:?}", &lost[..lost.len().min(20)]));
    }
    run.bring_back(old, &mut report).await?;
    Ok(report)
}

/// The node's commit index and the (index, term) of each entry in its recent log above `above`.
async fn log_tail(url: &str, above: u64) -> Result<(u64, Vec<(u64, u64)>)> {
    let log = Node::new(url).log_entries(64).await.map_err(|e| format!("reading the log at {url}: {e}"))?;
    Ok((log.commit_index, log.entries.iter().filter(|e| e.index > above).map(|e| (e.index, e.term)).collect()))
}

async fn partition_leader(run: Run) -> Result<Report> {
    let mut report = Report::default();
    let old = run.whole().await?;
    // No other writes: the old leader's log tail must show only the minority's entries.
    let _no_load = LoadOverride::new(run.dash, None);
    let old_term = run.node(old).map_or(0, |n| n.term);
    let old_url = run.url(old)?;
    run.say(format!("cutting node {old} (leader in term {old_term}) off from its peers"));
    run.act(old, NodeAction::Partition).await?;
    let tag = wall_ms() as u64;
    let minority_keys: Vec<String> = (0..5).map(|i| format!("lab/partition/{tag}/minority-{i}")).collect();
    run.say(format!("5 writes to node {old}, which still believes it leads"));
    let writes = minority_keys.iter().map(|k| {
        let node = Node::new(old_url.clone());
        async move { node.put_within(k, "from the minority", Duration::from_millis(2500)).await }
    });
    let minority = futures::future::join_all(writes);
    let new_leader = async {
        run.until("the majority to elect a new leader", Duration::from_secs(20), || {
            run.leader().filter(|&l| l != old).and_then(|l| Some((l, run.node(l)?.term)))
        })
        .await
    };
    let (results, new) = futures::join!(minority, new_leader);
    let (new, new_term) = new?;
    let acknowledged = results.iter().filter(|r| r.is_ok()).count();
    let unknown =
        results.iter().filter(|r| matches!(r, Err(e) if failure_outcome(true, e.code()) == Outcome::Unknown)).count();
    let failed = results.len() - acknowledged - unknown;
    run.say(format!("node {new} leads term {new_term}; the minority's writes: {acknowledged} acknowledged"));
    // What the old leader appended but never learnt committed.
    let (old_commit, uncommitted) = log_tail(&old_url, 0).await?;
    let uncommitted: Vec<(u64, u64)> = uncommitted.into_iter().filter(|&(i, _)| i > old_commit).collect();
    report
        .logs
        .push((format!("node {old}'s log before the heal, after its commit index {old_commit}"), uncommitted.clone()));
    let new_url = run.url(new)?;
    run.say(format!("7 writes to node {new}, the majority's leader"));
    for i in 0..7 {
        Node::new(new_url.clone())
            .put_within(&format!("lab/partition/{tag}/majority-{i}"), "from the majority", api::USER)
            .await
            .map_err(|e| format!("a write to the new leader failed: {e}"))?;
    }
    run.say(format!("healing node {old}"));
    let healed_at = wall_ms();
    run.act(old, NodeAction::Heal).await?;
    run.until(&format!("node {old} to step down"), Duration::from_secs(20), || {
        run.node(old).filter(|n| !n.stale && n.role == RoleView::Follower && n.term >= new_term)
    })
    .await?;
    let stepped_down = wall_ms() - healed_at;
    let replaced_idx: Vec<u64> = uncommitted.iter().map(|e| e.0).collect();
    // The new leader's log at those indexes: an entry of the old term there had reached the majority after all
    // (kept); any other is replaced once the old leader has caught up.
    let (_, majority_log) = log_tail(&new_url, old_commit).await?;
    let kept = |i: u64, t: u64| majority_log.contains(&(i, t));
    let mut after = Vec::new();
    for _ in 0..50 {
        after = log_tail(&old_url, old_commit).await?.1;
        let repaired =
            uncommitted.iter().all(|&(i, t)| kept(i, t) || after.iter().any(|&(j, u)| j == i && u > old_term));
        if repaired {
            break;
        }
        gloo_timers::future::sleep(Duration::from_millis(100)).await;
    }
    report.logs.push((
        format!("node {old}'s log after the heal, the same indexes"),
        after.iter().copied().filter(|e| replaced_idx.contains(&e.0)).collect(),
    ));
    let replaced = uncommitted.iter().filter(|&&(i, _)| after.iter().any(|&(j, t)| j == i && t > old_term)).count();
    let kept = uncommitted.iter().filter(|&&(i, t)| kept(i, t)).count();
    let mut present = 0;
    for k in &minority_keys {
        let r = Node::new(new_url.clone()).get(k, false).await.map_err(|e| format!("reading {k}: {e}"))?;
        present += usize::from(r.kv.is_some());
    }
    report.figure(format!(
        "the minority leader node {old} (term {old_term}): {} writes, {acknowledged} acknowledged, {unknown} unknown, {failed} failed",
        results.len()
    ));
    report.figure(format!("the majority elected node {new} in term {new_term}"));
    report.figure(format!("on heal node {old} stepped down in {}", show_ms(stepped_down)));
    report.figure(format!(
        "its {} uncommitted entries (indexes {}): {replaced} replaced by the new leader's, {kept} had reached the majority",
        uncommitted.len(),
        match (uncommitted.first(), uncommitted.last()) {
            (Some(a), Some(b)) => format!("{}–{}", a.0, b.0),
            _ => "none".into(),
        }
    ));
    report.figure(format!("the minority's writes readable from the new leader: {present} of {}", minority_keys.len()));
    report.data("minority-acked", acknowledged);
    report.data("minority-present", present);
    report.data("uncommitted", uncommitted.len());
    report.data("replaced", replaced);
    report.data("kept", kept);
    report.data("new-leader", new);
    report.passed =
        acknowledged == 0 && present == 0 && !uncommitted.is_empty() && replaced + kept == uncommitted.len();
    Ok(report)
}

async fn split_brain(run: Run) -> Result<Report> {
    let mut report = Report::default();
    // Under load, snapshot and purge events could push the leaders' claims out of the page's event buffer.
    let _no_load = LoadOverride::new(run.dash, None);
    let since = wall_ms();
    for round in 1..=3 {
        let leader = run.whole().await?;
        run.say(format!("round {round}: kill -9 node {leader}"));
        run.act(leader, NodeAction::Kill).await?;
        let new = run.until("a new leader", Duration::from_secs(20), || run.leader().filter(|&l| l != leader)).await?;
        run.say(format!("round {round}: node {new} leads"));
        run.bring_back(leader, &mut report).await?;
    }
    let leaders = run.dash.events.with_untracked(|evs| {
        leaders_by_term(evs.iter().filter_map(|e| Some((e.node_id?, e.event.term, e.leader_claim()?))))
    });
    let doubled: Vec<u64> = leaders.iter().filter(|(_, l)| l.len() > 1).map(|(t, _)| *t).collect();
    let elected_since = run.dash.events.with_untracked(|evs| {
        evs.iter()
            .filter(|e| e.event.unix_millis as f64 >= since)
            .filter(|e| e.leader_claim() == Some(LeaderClaim::Itself))
            .count()
    });
    report.figure(format!("3 leader kills; {elected_since} elections won since"));
    report.figure(format!(
        "{} terms with a known leader; terms with two leaders: {}",
        leaders.len(),
        if doubled.is_empty() { "none".to_string() } else { format!("{doubled:?}") }
    ));
    report.data("terms", leaders.len());
    report.data("double-leader-terms", doubled.len());
    report.passed = doubled.is_empty() && elected_since >= 3;
    report.leaders = leaders;
    Ok(report)
}

async fn lose_quorum(run: Run) -> Result<Report> {
    let mut report = Report::default();
    let _no_load = LoadOverride::new(run.dash, None);
    let leader = run.whole().await?;
    let url = run.url(leader)?;
    let key = format!("lab/quorum/{}", wall_ms() as u64);
    Node::new(url.clone())
        .put_within(&key, "written with a quorum", api::USER)
        .await
        .map_err(|e| format!("the first write failed: {e}"))?;
    let voters: Vec<u64> = run.dash.cluster.with_untracked(|c| c.members.iter().filter(|m| m.2).map(|m| m.0).collect());
    // Stop voters other than the leader until at most half are left.
    let to_stop: Vec<u64> =
        voters.iter().copied().filter(|&v| v != leader).take(voters.len() - voters.len() / 2).collect();
    let Some(&back) = to_stop.first() else {
        return Err("losing the quorum needs at least two voters".into());
    };
    for &id in &to_stop {
        run.say(format!("stopping node {id}"));
        run.act(id, NodeAction::Stop).await?;
    }
    run.until("the stopped nodes to be down", Duration::from_secs(15), || {
        to_stop.iter().all(|&id| run.node(id).is_some_and(|n| n.stale)).then_some(())
    })
    .await?;
    let node = Node::new(url.clone());
    run.say(format!("a write to node {leader} (2 s deadline)"));
    let write_key = format!("{key}/without-quorum");
    let write = node.put_within(&write_key, "written without a quorum", Duration::from_secs(2)).await;
    run.say("a linearizable read (2 s deadline)");
    let lin = node.get_within(&key, false, Duration::from_secs(2)).await;
    run.say("a serializable read");
    let ser = node.get_within(&key, true, Duration::from_secs(2)).await;
    let said = |e: Option<&api::Error>, is_write: bool| match e {
        None => "answered".to_string(),
        Some(e) => format!("{} ({e})", failure_outcome(is_write, e.code()).label()),
    };
    let write_said = said(write.as_ref().err(), true);
    let lin_said = said(lin.as_ref().err(), false);
    let ser_value =
        ser.as_ref().ok().and_then(|r| r.kv.as_ref()).map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    report.figure(format!("{} of {} voters stopped: no majority", to_stop.len(), voters.len()));
    report.figure(format!("write: {write_said}"));
    report.figure(format!("linearizable read: {lin_said}"));
    report.figure(match &ser_value {
        Some(v) => format!("serializable read on node {leader}: answered {v:?} (its own copy, may be stale)"),
        None => format!("serializable read: {}", said(ser.as_ref().err(), false)),
    });
    run.say(format!("restarting node {back}"));
    let restarted_at = wall_ms();
    run.act(back, NodeAction::Restart).await?;
    let mut i = 0;
    let returned = loop {
        i += 1;
        let r = Node::new(url.clone()).put_within(&format!("{key}/back-{i}"), "back", Duration::from_secs(1)).await;
        if r.is_ok() {
            break wall_ms();
        }
        if wall_ms() - restarted_at > 30_000.0 {
            return Err(format!("no write was acknowledged within 30 s of restarting node {back}"));
        }
        gloo_timers::future::sleep(Duration::from_millis(50)).await;
    };
    report
        .figure(format!("after restarting node {back}: first acknowledged write {}", show_ms(returned - restarted_at)));
    let late = Node::new(url.clone()).get(&write_key, false).await.map_err(|e| format!("reading {write_key}: {e}"))?;
    report.figure(if late.kv.is_none() {
        "the write made without a quorum was not applied".to_string()
    } else {
        "the write made without a quorum was applied after all, once a majority was back: unknown meant unknown"
            .to_string()
    });
    report.data("write-acked", write.is_ok());
    report.data("linearizable-answered", lin.is_ok());
    report.data("serializable-answered", ser_value.is_some());
    report.data("service-return-ms", (returned - restarted_at).round());
    report.passed = write.is_err() && lin.is_err() && ser_value.as_deref() == Some("written with a quorum");
    for &id in &to_stop[1..] {
        run.bring_back(id, &mut report).await?;
    }
    run.until(&format!("node {back} to follow"), Duration::from_secs(30), || {
        run.node(back).filter(|n| !n.stale && n.role == RoleView::Follower)
    })
    .await?;
    Ok(report)
}

async fn snapshot_catch_up(run: Run) -> Result<Report> {
    let mut report = Report::default();
    // Quiet while the follower stops, so its last answer shows all it had.
    let _quiet = LoadOverride::new(run.dash, None);
    run.whole().await?;
    let follower =
        run.nodes().iter().filter(|n| n.role == RoleView::Follower).find_map(|n| n.id).ok_or("no follower to stop")?;
    run.say(format!("stopping node {follower}"));
    run.act(follower, NodeAction::Stop).await?;
    let stopped =
        run.until("it to be down", Duration::from_secs(15), || run.node(follower).filter(|n| n.stale)).await?;
    // Its last answer before the stop: it may have had a little more, never less.
    let had = stopped.last_log_index;
    let leader_view = || run.leader().and_then(|l| run.node(l));
    run.say(format!("node {follower} has the log up to {had}; writing until the leader purges past it"));
    let purged = {
        let _writes = LoadOverride::new(run.dash, Some(LoadConfig { rate: 0, in_flight: 16, target: String::new() }));
        run.until("the leader to purge its log past the stopped follower", Duration::from_secs(180), || {
            leader_view().map(|l| l.purged_index).filter(|&p| p > had + 1)
        })
        .await?
    };
    let leader = leader_view().ok_or("no leader")?;
    let leader_id = leader.id.ok_or("the leader has no id")?;
    let chunks_sent = || {
        run.node(leader_id)
            .and_then(|l| l.traffic.iter().find(|t| t.node_id == follower).map(|t| t.snapshot_chunks))
            .unwrap_or(0)
    };
    let chunks_before = chunks_sent();
    run.say(format!("node {leader_id}'s log now starts after {purged}; restarting node {follower}"));
    let restarted_at = wall_ms();
    run.act(follower, NodeAction::Restart).await?;
    let caught = run
        .until("the follower to install a snapshot and catch up", Duration::from_secs(60), || {
            run.node(follower).filter(|n| !n.stale && n.snapshot_index > had && n.last_log_index >= leader.commit_index)
        })
        .await?;
    let took = wall_ms() - restarted_at;
    // The chunk counter reaches the page with the leader's next Status answer.
    let chunks = run
        .until("the leader's count of snapshot chunks sent", Duration::from_secs(2), || {
            Some(chunks_sent().saturating_sub(chunks_before)).filter(|&c| c > 0)
        })
        .await
        .unwrap_or(0);
    report.figure(format!("node {follower} stopped with its log up to index {had}"));
    report.figure(format!("the leader, node {leader_id}, snapshotted and purged its log up to index {purged}"));
    report.figure(format!(
        "on restart node {follower} received a snapshot ({chunks} chunk{}) up to index {}; its log jumped from {had} to {} in {}",
        if chunks == 1 { "" } else { "s" },
        caught.snapshot_index,
        caught.last_log_index,
        show_ms(took)
    ));
    report.data("snapshot-index", caught.snapshot_index);
    report.data("chunks", chunks);
    report.passed = caught.snapshot_index > had && chunks > 0;
    Ok(report)
}

async fn grow(run: Run) -> Result<Report> {
    let mut report = Report::default();
    let leader = run.whole().await?;
    let voters_before = run.dash.cluster.with_untracked(|c| c.voters);
    run.say("starting a new node");
    let info = control::add_node().await.map_err(|e| format!("adding a node: {e}"))?;
    let id = info.id.ok_or("the new node has no id")?;
    let started = wall_ms();
    let target = run.node(leader).map_or(0, |l| l.commit_index);
    run.say(format!("node {id} joins as a learner; the leader's log is at {target}"));
    let learner = run
        .until("the new node to catch up as a learner", Duration::from_secs(60), || {
            run.node(id).filter(|n| !n.stale && n.role == RoleView::Learner && n.last_log_index >= target)
        })
        .await?;
    let caught_up = wall_ms() - started;
    run.say(format!("node {id} caught up; promoting it"));
    let url = run.url(leader)?;
    Node::new(url).member_promote(id).await.map_err(|e| format!("promoting node {id}: {e}"))?;
    run.until("the new voter to follow", Duration::from_secs(30), || {
        run.node(id).filter(|n| !n.stale && n.role == RoleView::Follower && n.voter == Some(true))
    })
    .await?;
    let voters_after = run.dash.cluster.with_untracked(|c| c.voters);
    let majority = |v: usize| v / 2 + 1;
    report.figure(format!(
        "node {id} joined as a learner and caught up to index {} in {}",
        learner.last_log_index,
        show_ms(caught_up)
    ));
    report.figure(format!(
        "promoted: voters {voters_before} → {voters_after}, a majority is {} → {} (tolerates {} → {} failures)",
        majority(voters_before),
        majority(voters_after),
        voters_before.saturating_sub(majority(voters_before)),
        voters_after.saturating_sub(majority(voters_after))
    ));
    report.data("voters", voters_after);
    report.data("quorum", majority(voters_after));
    report.passed = voters_after == voters_before + 1;
    Ok(report)
}
