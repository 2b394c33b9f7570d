//! Fail-stop and honest health: a node that can no longer do its job stops, instead of limping on as a zombie.
//!
//! A node is *fatally* broken when openraft has stopped (its `running_state` is an error: a storage error such
//! as ENOSPC or EIO on the log or a snapshot, a failed install, ...; or its core task is gone), or when the WAL is
//! poisoned (a failed write or fsync: every later write would fail, and retrying could lie about durability).
//! Such a node must not keep answering: a dead leader still named in metrics turns every write routed to it
//! into UNKNOWN, and a dead follower serves frozen serializable reads forever. So:
//!
//! - [`FailStop::until_shutdown_or_fatal`] resolves on the normal shutdown signal *or* on the first fatal cause,
//!   which it logs; `node::run` then stops serving the same way as on shutdown and returns
//!   [`Error::Fatal`], so `raftkv serve` exits non-zero and a supervisor (systemd, Kubernetes, Compose) restarts
//!   it. The restart recovers from the WAL and catches up from the leader; nothing acknowledged is lost, since
//!   acknowledgements only follow fsyncs.
//! - `/healthz` answers 503 as soon as a fatal cause exists ([`fatal_reason`]), even in the short window before
//!   the process is gone.
//! - `/readyz` answers 503 whenever this node cannot serve what it claims ([`readiness`]): fatal, shutting down,
//!   no leader known, a leader that has lost its quorum, a follower cut off from its leader, or applied behind
//!   committed.
//!
//! Invariants: once a fatal cause is seen, it never clears in this process (the WAL's poison and openraft's
//! Fatal are both permanent); `node::run` never returns `Ok` after one.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::Notify;

use crate::{
    api::ApiContext,
    error::{Error, Result},
    raft::Raft,
    wal::{PoisonHook, Wal},
};

/// Wakes the watcher when the WAL is poisoned (openraft usually notices too, but not always at once: a
/// `save_committed` or a callback may be the first to see it).
#[derive(Default)]
pub struct FailStop {
    poisoned: Notify,
}

impl FailStop {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The hook to pass as `WalOptions::on_poison`.
    pub fn poison_hook(self: &Arc<Self>) -> PoisonHook {
        let me = Arc::clone(self);
        Arc::new(move |_reason: &str| me.poisoned.notify_one())
    }

    /// Waits for `shutdown`, or for a fatal cause (logged). Returns the cause, or None on a normal shutdown.
    pub async fn until_shutdown_or_fatal(
        &self,
        shutdown: impl Future<Output = ()>,
        raft: &Raft,
        wal: &Wal,
    ) -> Option<String> {
        let fatal = async {
            let mut metrics = raft.metrics();
            loop {
                if let Some(reason) = fatal_reason(raft, wal) {
                    return reason;
                }
                tokio::select! {
                    changed = metrics.changed() => {
                        if changed.is_err() {
                            return "raft core exited".to_string();
                        }
                    }
                    _ = self.poisoned.notified() => {}
                }
            }
        };
        tokio::select! {
            _ = shutdown => None,
            reason = fatal => {
                tracing::error!(
                    cause = %reason,
                    "FATAL: this node can no longer serve; stopping so a supervisor restarts it \
                     (it recovers from its WAL and catches up from the leader)"
                );
                Some(reason)
            }
        }
    }

    /// Ends `node::run`: an error after a fatal cause (so the process exits non-zero), else the final sync.
    pub fn finish(fatal: Option<String>, wal: &Wal) -> Result<()> {
        if let Some(reason) = fatal {
            return Err(Error::Fatal(reason));
        }
        wal.sync()?;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// Why this node is fatally broken, if it is.
pub fn fatal_reason(raft: &Raft, wal: &Wal) -> Option<String> {
    if let Err(e) = &raft.metrics().borrow().running_state {
        return Some(format!("raft stopped: {e}"));
    }
    wal.poisoned().map(|reason| format!("WAL poisoned: {reason}"))
}

/// Whether this node can serve what it claims right now; the error says why not.
pub fn readiness(ctx: &ApiContext, s: &raftkv_proto::StatusResponse) -> std::result::Result<(), String> {
    readiness_of(fatal_reason(&ctx.raft, ctx.log_store.wal()), *ctx.stopping.borrow(), s)
}

/// [`readiness`] from its inputs: the fatal cause if any, whether the node is shutting down, and its status.
pub fn readiness_of(
    fatal: Option<String>,
    stopping: bool,
    s: &raftkv_proto::StatusResponse,
) -> std::result::Result<(), String> {
    if let Some(reason) = fatal {
        return Err(format!("fatal: {reason}"));
    }
    if stopping {
        return Err("shutting down".into());
    }
    // Generous, so a loaded machine does not flap: several election timeouts without contact.
    let stale = Duration::from_millis(s.election_timeout_max_ms.max(1) * 4);
    if s.leader_id == 0 {
        return Err("no leader".into());
    }
    if s.leader_id == s.id {
        if s.role != raftkv_proto::Role::Leader as i32 {
            return Err("named leader but not leading".into());
        }
        let quorum_ack = Duration::from_millis(s.millis_since_quorum_ack);
        if s.millis_since_quorum_ack > 0 && quorum_ack > stale {
            return Err(format!("leader without a quorum for {quorum_ack:?}"));
        }
    } else if s.has_leader_contact && Duration::from_millis(s.millis_since_leader_contact) > stale {
        return Err(format!("no contact with leader {} for {}ms", s.leader_id, s.millis_since_leader_contact));
    }
    if s.applied_index < s.commit_index {
        return Err(format!("applying: applied {} < committed {}", s.applied_index, s.commit_index));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use raftkv_proto::{Role, StatusResponse};

    use super::*;

    fn follower() -> StatusResponse {
        StatusResponse {
            id: 2,
            role: Role::Follower as i32,
            leader_id: 1,
            commit_index: 10,
            applied_index: 10,
            has_leader_contact: true,
            millis_since_leader_contact: 50,
            election_timeout_max_ms: 500,
            ..Default::default()
        }
    }

    #[test]
    fn ready_only_when_it_can_serve_what_it_claims() {
        assert_eq!(readiness_of(None, false, &follower()), Ok(()));
        let why = |fatal: Option<&str>, stopping: bool, s: StatusResponse| {
            readiness_of(fatal.map(String::from), stopping, &s).unwrap_err()
        };
        assert!(why(Some("WAL poisoned: ENOSPC"), false, follower()).starts_with("fatal: WAL poisoned"));
        assert_eq!(why(None, true, follower()), "shutting down");
        assert_eq!(why(None, false, StatusResponse { leader_id: 0, ..follower() }), "no leader");
        assert!(why(None, false, StatusResponse { applied_index: 9, ..follower() }).starts_with("applying"));
        let cut_off = StatusResponse { millis_since_leader_contact: 2001, ..follower() };
        assert!(why(None, false, cut_off).starts_with("no contact with leader 1"));
        let leader = StatusResponse { id: 1, role: Role::Leader as i32, millis_since_quorum_ack: 30, ..follower() };
        assert_eq!(readiness_of(None, false, &leader), Ok(()));
        let lonely = StatusResponse { millis_since_quorum_ack: 2001, ..leader.clone() };
        assert!(why(None, false, lonely).starts_with("leader without a quorum"));
        let stale = StatusResponse { role: Role::Follower as i32, ..leader };
        assert_eq!(why(None, false, stale), "named leader but not leading");
    }
}
