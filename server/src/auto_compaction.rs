//! Automatic compaction of the MVCC history (etcd's `--auto-compaction-mode` / `--auto-compaction-retention`).
//!
//! The history lives in memory, so unlike etcd (whose default is to keep everything) raftkv compacts by default:
//! `periodic` with a retention of 5 minutes keeps at least the last 5 minutes of versions (the window Kubernetes
//! compacts with). The leader proposes the compaction as a replicated `Compact` command, so every member drops the
//! same versions at the same log position; followers only apply it.
//!
//! - `periodic` (retention a duration, etcd's "1h", "30m", or a bare number of hours): every retention/10 (at
//!   most hourly) the leader samples the current revision, and compacts to the newest sample at least one
//!   retention old. What is compacted is always older than the retention.
//! - `revision` (retention a number N): every 5 seconds the leader compacts to `current - N` once that moved.
//!
//! A retention of 0 turns automatic compaction off.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{api::ApiContext, raft::Command};

/// `--auto-compaction-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Periodic,
    Revision,
}

/// The policy, parsed from etcd's two flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Off,
    Periodic(Duration),
    Revision(i64),
}

impl Default for Policy {
    fn default() -> Self {
        Policy::Periodic(Duration::from_secs(300))
    }
}

impl Policy {
    /// Parses `--auto-compaction-retention` for `mode`, as etcd does ("0" = off; periodic: a duration, or hours).
    pub fn parse(mode: Mode, retention: &str) -> Result<Self, String> {
        let retention = retention.trim();
        if retention == "0" {
            return Ok(Policy::Off);
        }
        match mode {
            Mode::Revision => retention.parse::<i64>().ok().filter(|n| *n > 0).map(Policy::Revision).ok_or_else(|| {
                format!("--auto-compaction-retention {retention:?}: with --auto-compaction-mode revision it is a number of revisions")
            }),
            Mode::Periodic => {
                let d = match retention.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours * 3600),
                    Err(_) => crate::config::parse_duration(retention).map_err(|e| {
                        format!("--auto-compaction-retention {retention:?}: a duration (1h, 30m) or hours ({e})")
                    })?,
                };
                if d < Duration::from_secs(1) {
                    return Err(format!("--auto-compaction-retention {retention:?}: at least one second"));
                }
                Ok(Policy::Periodic(d))
            }
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Off => f.write_str("off"),
            Policy::Periodic(d) => write!(f, "periodic, keeping {d:?}"),
            Policy::Revision(n) => write!(f, "revision, keeping {n} revisions"),
        }
    }
}

/// Runs the compactor until the node stops; it acts only while this node leads.
pub fn spawn(ctx: Arc<ApiContext>, policy: Policy) {
    let (every, keep) = match policy {
        Policy::Off => return,
        Policy::Periodic(d) => ((d / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600)), d),
        Policy::Revision(_) => (Duration::from_secs(5), Duration::ZERO),
    };
    tokio::spawn(async move {
        let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = ctx.shutting_down() => return,
            }
            if ctx.raft.metrics().borrow().current_leader != Some(ctx.id) {
                samples.clear(); // a new leader starts its own clock
                continue;
            }
            let (current, compacted) = ctx.state_machine.read(|ks| (ks.revision(), ks.compact_revision()));
            let target = match policy {
                Policy::Revision(n) => current - n,
                Policy::Periodic(_) => {
                    let now = Instant::now();
                    samples.push_back((now, current));
                    let mut target = 0;
                    while samples.front().is_some_and(|(t, _)| now.duration_since(*t) >= keep) {
                        target = samples.pop_front().expect("front exists").1;
                    }
                    target
                }
                Policy::Off => unreachable!("no compactor runs when off"),
            };
            if target <= compacted {
                continue;
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            match ctx.write(Command::Compact { revision: target }, deadline).await {
                Ok(_) => {
                    ctx.metrics.compactions.inc();
                    tracing::info!(revision = target, policy = %policy, "compacted the MVCC history");
                }
                Err(e) => tracing::warn!(revision = target, "automatic compaction failed: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcds_retention_forms() {
        assert_eq!(Policy::parse(Mode::Periodic, "0"), Ok(Policy::Off));
        assert_eq!(Policy::parse(Mode::Periodic, "1"), Ok(Policy::Periodic(Duration::from_secs(3600))));
        assert_eq!(Policy::parse(Mode::Periodic, "30m"), Ok(Policy::Periodic(Duration::from_secs(1800))));
        assert_eq!(Policy::parse(Mode::Revision, "1000"), Ok(Policy::Revision(1000)));
        assert!(Policy::parse(Mode::Revision, "1h").unwrap_err().contains("number of revisions"));
        assert!(Policy::parse(Mode::Periodic, "soon").is_err());
    }
}
