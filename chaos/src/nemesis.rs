//! Faults injected while the clients run, each on a schedule: kill -9 the leader or a follower, pause the leader
//! (SIGSTOP/SIGCONT), partition the leader from its peers, restart the whole cluster, and kill a node while also
//! throwing away the part of its WAL that was not yet fsynced (what a power cut does to the page cache): either
//! all of it, or — since the page cache is written back in no particular order — random pages of it (holes),
//! keeping the rest.

use std::{
    fs,
    path::Path,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use clap::ValueEnum;
use raftkv::local_cluster::LocalCluster;
use rand::{rngs::StdRng, Rng};

use crate::{record::Recorder, workload::Incarnations};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Nemesis {
    KillLeader,
    KillFollower,
    PauseLeader,
    PartitionLeader,
    RestartAll,
    LoseUnsyncedTail,
}

impl Nemesis {
    pub const ALL: [Nemesis; 6] = [
        Nemesis::KillLeader,
        Nemesis::KillFollower,
        Nemesis::PauseLeader,
        Nemesis::PartitionLeader,
        Nemesis::RestartAll,
        Nemesis::LoseUnsyncedTail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::KillLeader => "kill-leader",
            Nemesis::KillFollower => "kill-follower",
            Nemesis::PauseLeader => "pause-leader",
            Nemesis::PartitionLeader => "partition-leader",
            Nemesis::RestartAll => "restart-all",
            Nemesis::LoseUnsyncedTail => "lose-unsynced-tail",
        }
    }
}

/// The node most nodes currently name as leader.
pub async fn current_leader(cluster: &LocalCluster) -> Option<u64> {
    let Ok(client) = cluster.client(Duration::from_millis(500)) else { return None };
    let mut votes = std::collections::BTreeMap::<u64, usize>::new();
    for (_, s) in client.status_all().await {
        if let Ok(s) = s {
            if s.leader_id != 0 {
                *votes.entry(s.leader_id).or_default() += 1;
            }
        }
    }
    votes.into_iter().max_by_key(|(_, n)| *n).map(|(id, _)| id)
}

fn restart(cluster: &mut LocalCluster, inc: &Incarnations, id: u64) -> anyhow::Result<()> {
    inc[id as usize - 1].fetch_add(1, Ordering::SeqCst);
    cluster.spawn(id)?;
    Ok(())
}

/// Loses the tail of node `id`'s newest WAL segment that its last fsync did not cover: cuts it off, or (half the
/// time) zeroes random 4 KiB pages of it up to the end of the records and keeps the file's length, as an
/// out-of-order write-back would.
/// Returns the bytes lost.
fn drop_unsynced_tail(data_dir: &Path, rng: &mut StdRng) -> anyhow::Result<u64> {
    let marker = fs::read_to_string(data_dir.join("wal-synced-marker")).unwrap_or_default();
    let mut parts = marker.split_whitespace();
    let (Some(name), Some(offset)) = (parts.next(), parts.next().and_then(|o| o.parse::<u64>().ok())) else {
        return Ok(0);
    };
    let wal = data_dir.join("wal");
    let mut segments: Vec<_> = fs::read_dir(&wal)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let Some(last) = segments.last() else { return Ok(0) };
    // Only the segment the marker names, and only if nothing rolled after it (a roll syncs everything).
    if last.file_name().is_none_or(|n| n.to_string_lossy() != name) {
        return Ok(0);
    }
    // Up to the end of the records (about: their last non-zero byte): the WAL writes zeros ahead of them, and
    // losing zeros loses nothing.
    let bytes = fs::read(last)?;
    let len = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p as u64 + 1);
    if len <= offset {
        return Ok(0);
    }
    let file = fs::OpenOptions::new().write(true).open(last)?;
    if rng.random_bool(0.5) {
        file.set_len(offset)?;
        return Ok(len - offset);
    }
    // Holes: page-aligned pieces of [offset, len), each lost with probability 1/2 (at least one).
    const PAGE: u64 = 4096;
    let mut pages = Vec::new();
    let mut start = offset;
    while start < len {
        let end = ((start / PAGE + 1) * PAGE).min(len);
        pages.push((start, end));
        start = end;
    }
    let mut lost: Vec<(u64, u64)> = pages.iter().copied().filter(|_| rng.random_bool(0.5)).collect();
    if lost.is_empty() {
        lost.push(pages[rng.random_range(0..pages.len())]);
    }
    let mut dropped = 0;
    for (from, to) in lost {
        std::os::unix::fs::FileExt::write_all_at(&file, &vec![0; (to - from) as usize], from)?;
        dropped += to - from;
    }
    file.sync_all()?;
    Ok(dropped)
}

/// Sets node `id`'s partition, waiting (up to 20 s) for a node that was just restarted to open its HTTP port: on a
/// loaded machine it may not listen yet when the next fault comes.
async fn partition(cluster: &LocalCluster, id: u64, peers: &[u64]) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match cluster.partition(id, peers).await {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("nemesis: node {id} not reachable yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Applies one fault and heals it after `hold`.
pub async fn inject(
    nemesis: Nemesis,
    cluster: &mut LocalCluster,
    rec: &Arc<Recorder>,
    inc: &Incarnations,
    rng: &mut StdRng,
    hold: Duration,
) -> anyhow::Result<()> {
    let start = rec.now();
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let leader = current_leader(cluster).await;
    let pick_other = |rng: &mut StdRng, not: Option<u64>| {
        let others: Vec<u64> = ids.iter().copied().filter(|i| Some(*i) != not).collect();
        others[rng.random_range(0..others.len())]
    };
    match nemesis {
        Nemesis::KillLeader | Nemesis::KillFollower => {
            let target = match nemesis {
                Nemesis::KillLeader => leader.unwrap_or_else(|| pick_other(rng, None)),
                _ => pick_other(rng, leader),
            };
            cluster.kill(target);
            tokio::time::sleep(hold).await;
            restart(cluster, inc, target)?;
            rec.fault(nemesis.name(), vec![target], start, "kill -9, then restart".into());
        }
        Nemesis::PauseLeader => {
            let target = leader.unwrap_or_else(|| pick_other(rng, None));
            cluster.signal(target, libc::SIGSTOP);
            tokio::time::sleep(hold).await;
            cluster.signal(target, libc::SIGCONT);
            rec.fault(nemesis.name(), vec![target], start, "SIGSTOP, then SIGCONT".into());
        }
        Nemesis::PartitionLeader => {
            let target = leader.unwrap_or_else(|| pick_other(rng, None));
            let others: Vec<u64> = ids.iter().copied().filter(|i| *i != target).collect();
            partition(cluster, target, &others).await?;
            for o in &others {
                partition(cluster, *o, &[target]).await?;
            }
            tokio::time::sleep(hold).await;
            for id in &ids {
                partition(cluster, *id, &[]).await?;
            }
            rec.fault(nemesis.name(), vec![target], start, format!("cut off from {others:?}, then healed"));
        }
        Nemesis::RestartAll => {
            for id in &ids {
                cluster.kill(*id);
            }
            for id in &ids {
                restart(cluster, inc, *id)?;
            }
            rec.fault(nemesis.name(), ids.clone(), start, "kill -9 every node, restart all".into());
        }
        Nemesis::LoseUnsyncedTail => {
            let target = pick_other(rng, None);
            cluster.kill(target);
            let dropped = drop_unsynced_tail(&cluster.nodes[&target].data_dir, rng)?;
            tokio::time::sleep(hold / 2).await;
            restart(cluster, inc, target)?;
            rec.fault(
                nemesis.name(),
                vec![target],
                start,
                format!("kill -9, dropped {dropped} unsynced WAL bytes, restart"),
            );
        }
    }
    Ok(())
}
