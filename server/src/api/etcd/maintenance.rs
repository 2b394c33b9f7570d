//! etcd's `Maintenance` service: Status (what `etcdctl endpoint status` shows), Alarm (the storage quota's
//! NOSPACE), Defragment (nothing to do: the key space lives in memory and snapshots are rewritten whole), HashKV
//! (a hash of the MVCC history up to a revision: equal on every member at the same revision, not equal to
//! etcd's own, which hashes its B-tree file's layout), Hash (the same, up to now), Snapshot (a backup in
//! raftkv's own format, [`crate::backup`]: `raftkv snapshot restore` reads it, etcd's tools do not), MoveLeader
//! (leadership transfer). Downgrade answers UNIMPLEMENTED.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use raftkv_proto::etcd::{self as pb, maintenance_server::Maintenance};
use tonic::{Request, Response, Status};

use super::{observed, ETCD_VERSION};
use crate::api::ApiContext;

pub struct EtcdMaintenanceService {
    ctx: Arc<ApiContext>,
}

impl EtcdMaintenanceService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }
}

impl ApiContext {
    /// Transfers leadership to voter `target` (etcd's MoveLeader; openraft 0.9 has no transfer of its own). This
    /// leader stops proposing and heartbeating; once the followers' leases on it have run out (they refuse votes
    /// until then), it tells the caught-up target to start an election now (`TimeoutNow`), which the target wins
    /// with its up-to-date log. Whatever happens, this node heartbeats and may campaign again afterwards.
    async fn move_leader(&self, target: u64, deadline: std::time::Instant) -> crate::error::Result<()> {
        use std::sync::atomic::Ordering;

        use crate::error::{Error, EtcdError};
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            return Err(Error::Etcd(EtcdError::NotLeader));
        }
        if target == self.id {
            return Ok(());
        }
        let member = self.members().into_iter().find(|n| n.id == target);
        let Some(member) = member.filter(|n| n.voter) else { return Err(Error::Etcd(EtcdError::BadLeaderTransferee)) };
        if self.transferring.swap(true, Ordering::AcqRel) {
            return Err(Error::FailedPrecondition("a leadership transfer is already under way".into()));
        }
        let term = m.current_term;
        let config = self.raft.config().clone();
        let result = async {
            self.raft.runtime_config().heartbeat(false);
            self.raft.runtime_config().elect(false);
            let lease = std::time::Duration::from_millis(config.election_timeout_max * 3 / 2);
            let caught_up = |m: &openraft::RaftMetrics<u64, crate::raft::Node>| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&target).copied().flatten());
                matched.map(|l| l.index) >= m.last_log_index
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            self.raft
                .wait(Some(left))
                .metrics(caught_up, "the transferee has every entry")
                .await
                .map_err(|_| Error::Etcd(EtcdError::Timeout))?;
            // Followers refuse to vote until their lease on this leader ran out.
            tokio::time::sleep(lease).await;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            self.network
                .timeout_now(target, &member.peer_addr, term, left.min(std::time::Duration::from_secs(2)))
                .await
                .map_err(|e| Error::Unavailable(format!("leadership transfer to {target}: {e}")))?;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            self.raft
                .wait(Some(left))
                .metrics(|m| m.current_leader == Some(target), "the transferee leads")
                .await
                .map_err(|_| Error::Etcd(EtcdError::Timeout))?;
            Ok(())
        }
        .await;
        self.raft.runtime_config().heartbeat(true);
        self.raft.runtime_config().elect(true);
        self.transferring.store(false, Ordering::Release);
        if result.is_ok() {
            tracing::info!(target, "moved leadership");
        }
        result
    }

    /// The active alarms as etcd lists them: one per alarm, on this member.
    fn etcd_alarms(&self) -> Vec<pb::AlarmMember> {
        self.state_machine
            .alarms()
            .iter()
            .filter(|a| a.as_str() == "NOSPACE")
            .map(|_| pb::AlarmMember { member_id: self.id, alarm: pb::AlarmType::Nospace as i32 })
            .collect()
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for EtcdMaintenanceService {
    async fn alarm(&self, req: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.Alarm", async {
            let msg = req.into_inner();
            if msg.action == pb::alarm_request::AlarmAction::Activate as i32 {
                return Err(crate::error::Error::InvalidArgument(
                    "raftkv raises its alarms itself (NOSPACE, from --quota-backend-bytes)".into(),
                ));
            }
            // DEACTIVATE: the NOSPACE alarm clears by itself once the key space is below the quota again.
            let revision = ctx.state_machine.applied().1;
            Ok(pb::AlarmResponse { header: Some(ctx.etcd_header(revision)), alarms: ctx.etcd_alarms() })
        })
        .await
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.Status", async {
            let s = ctx.status().await;
            let learner = !s.members.iter().any(|m| m.id == ctx.id && m.voter);
            let size = s.db_size as i64;
            Ok(pb::StatusResponse {
                header: Some(ctx.etcd_header(s.header.map_or(0, |h| h.revision))),
                version: ETCD_VERSION.into(),
                db_size: size,
                leader: s.leader_id,
                raft_index: s.commit_index,
                raft_term: s.term,
                raft_applied_index: s.applied_index,
                errors: ctx.etcd_alarms().iter().map(|a| format!("memberID:{} alarm:NOSPACE ", a.member_id)).collect(),
                db_size_in_use: size,
                is_learner: learner,
            })
        })
        .await
    }

    async fn defragment(&self, _: Request<pb::DefragmentRequest>) -> Result<Response<pb::DefragmentResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.Defragment", async {
            let revision = ctx.state_machine.applied().1;
            Ok(pb::DefragmentResponse { header: Some(ctx.etcd_header(revision)) })
        })
        .await
    }

    async fn hash(&self, _: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.Hash", async {
            // etcd hashes its whole database file; raftkv's whole state is the MVCC history up to now.
            let (hash, current) = ctx.state_machine.read(|ks| (ks.hash_kv(0), ks.revision()));
            let hash = hash.map_err(super::convert::revision_error)?;
            Ok(pb::HashResponse { header: Some(ctx.etcd_header(current)), hash })
        })
        .await
    }

    async fn hash_kv(&self, req: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.HashKV", async {
            let wanted = req.into_inner().revision;
            let (hash, compact_revision, current) =
                ctx.state_machine.read(|ks| (ks.hash_kv(wanted), ks.compact_revision(), ks.revision()));
            let hash = hash.map_err(super::convert::revision_error)?;
            Ok(pb::HashKvResponse {
                header: Some(ctx.etcd_header(current)),
                hash,
                compact_revision,
                hash_revision: if wanted == 0 { current } else { wanted },
            })
        })
        .await
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(&self, _: Request<pb::SnapshotRequest>) -> Result<Response<SnapshotStream>, Status> {
        let ctx = &self.ctx;
        let backup = observed(ctx, "etcd.Snapshot", async {
            let revision = ctx.state_machine.applied().1;
            let bytes = crate::backup::seal(&ctx.state_machine.backup_state().await?);
            Ok((revision, bytes))
        })
        .await?
        .into_inner();
        let (revision, bytes) = backup;
        let header = ctx.etcd_header(revision);
        // raftkv's own backup format (see `crate::backup`), in 1 MiB pieces; the first carries the header.
        const CHUNK: usize = 1 << 20;
        let total = bytes.len();
        let pieces: Vec<Result<pb::SnapshotResponse, Status>> = bytes
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, blob)| {
                Ok(pb::SnapshotResponse {
                    header: (i == 0).then_some(header),
                    remaining_bytes: (total - (i * CHUNK + blob.len())) as u64,
                    blob: blob.to_vec(),
                    version: ETCD_VERSION.into(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(pieces)) as SnapshotStream))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.MoveLeader", async {
            let deadline = ctx.deadline(&req);
            let target = req.into_inner().target_id;
            ctx.move_leader(target, deadline).await?;
            Ok(pb::MoveLeaderResponse { header: Some(ctx.etcd_header(ctx.state_machine.applied().1)) })
        })
        .await
    }

    async fn downgrade(&self, _: Request<pb::DowngradeRequest>) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("raftkv has no storage versions to downgrade"))
    }
}
