//! Client-side recipes on leases, as etcd's `concurrency` package builds them: a [`Session`] (a lease kept
//! alive in the background), and [`campaign`] — a queue of contenders under a prefix, served in the order of
//! their keys' create revisions — which makes both a lock (`raftkv lock`) and an election (`raftkv elect`).
//!
//! Keys are laid out as etcd's (`<prefix>/<lease id in hex>`), so raftkv's and etcdctl's locks and elections on
//! the same name exclude each other.
//!
//! What a lease-based lock gives is liveness, not mutual exclusion under pauses: a holder that stalls longer than
//! its TTL (a GC pause, SIGSTOP, a partition) loses the lease while it still believes it holds the lock, and the
//! next contender acquires it. Whatever the lock protects must therefore check the *fencing revision* (the
//! holder key's create revision, printed on acquisition): accept a write only with a revision at least as high
//! as any seen before, or compare the lock key's create revision in the same transaction as the write.

use std::{sync::Arc, time::Duration};

use raftkv_proto as pb;
use tokio::sync::watch;
use tonic::Status;

use super::Client;

/// A lease held alive by a background task until the session is closed or the lease is lost.
pub struct Session {
    client: Arc<Client>,
    pub lease: i64,
    pub ttl: i64,
    lost: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Grants a lease of `ttl` seconds and starts renewing it every third of its TTL.
    pub async fn new(client: Arc<Client>, ttl: i64) -> Result<Self, Status> {
        let granted = client.lease_grant(ttl, 0).await?;
        let (lease, ttl) = (granted.id, granted.ttl);
        let (lost_tx, lost) = watch::channel(false);
        let keeper = {
            let client = client.clone();
            tokio::spawn(async move {
                let every = renew_every(ttl);
                loop {
                    tokio::time::sleep(every).await;
                    match client.lease_keep_alive_once(lease).await {
                        Ok(r) if r.ttl > 0 => {}
                        Ok(_) => {
                            tracing::warn!(lease = format!("{lease:x}"), "the session's lease expired");
                            let _ = lost_tx.send(true);
                            return;
                        }
                        // The client already retried within its timeout; the lease may still be alive: go on.
                        Err(e) => tracing::warn!(lease = format!("{lease:x}"), "keep-alive failed: {}", e.message()),
                    }
                }
            })
        };
        Ok(Self { client, lease, ttl, lost, keeper })
    }

    /// Resolves once the lease is known to be gone (expired or revoked).
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|l| *l).await;
    }

    /// Stops renewing and revokes the lease (deleting the session's keys).
    pub async fn close(self) -> Result<(), Status> {
        self.keeper.abort();
        match self.client.lease_revoke(self.lease).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()), // already gone
            Err(s) => Err(s),
        }
    }
}

/// How often a holder renews a lease of `ttl` seconds: a third of it (etcd's clients do the same).
pub fn renew_every(ttl: i64) -> Duration {
    Duration::from_millis((ttl.max(1) as u64 * 1000) / 3)
}

/// The key range the contenders of `prefix` queue in: `<prefix>/` and everything under it.
pub fn queue_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let key = format!("{}/", prefix.trim_end_matches('/')).into_bytes();
    let end = raftkv_proto::prefix_end(&key);
    (key, end)
}

/// The key a session queues under `prefix` with.
pub fn contender_key(prefix: &str, lease: i64) -> Vec<u8> {
    format!("{}/{lease:x}", prefix.trim_end_matches('/')).into_bytes()
}

/// Every contender under `prefix`, by create revision (the first one holds the lock / leads), and the revision
/// of the read.
pub async fn contenders(client: &Client, prefix: &str) -> Result<(Vec<pb::KeyValue>, i64), Status> {
    let (key, range_end) = queue_range(prefix);
    let r = client.range(pb::RangeRequest { key, range_end, ..Default::default() }).await?;
    let mut kvs = r.kvs;
    kvs.sort_by_key(|kv| kv.create_revision);
    Ok((kvs, r.header.map_or(0, |h| h.revision)))
}

/// Queues `session` under `prefix` with `value` and waits until it is first: every contender created before it
/// is gone. Returns its key and create revision (the fencing revision).
pub async fn campaign(
    client: &Client,
    session: &Session,
    prefix: &str,
    value: &[u8],
) -> Result<(Vec<u8>, i64), Status> {
    let me = contender_key(prefix, session.lease);
    client.put_with_lease(me.clone(), value.to_vec(), session.lease).await?;
    loop {
        let (kvs, revision) = contenders(client, prefix).await?;
        let Some(mine) = kvs.iter().find(|kv| kv.key == me) else {
            return Err(Status::aborted("the session's lease expired while waiting: its key is gone"));
        };
        let my_rev = mine.create_revision;
        // Wait for the contender just before us, not for the holder: one wake-up per hand-over (no herd).
        let Some(before) = kvs.iter().rev().find(|kv| kv.create_revision < my_rev) else {
            return Ok((me, my_rev));
        };
        wait_deleted(client, &before.key, revision + 1).await?;
    }
}

/// Waits until `key` is deleted at or after `from`.
async fn wait_deleted(client: &Client, key: &[u8], from: i64) -> Result<(), Status> {
    let req = pb::WatchRequest { key: key.to_vec(), range_end: vec![], start_revision: from, prev_kv: false };
    let (_, mut stream) = client.watch(req).await?;
    loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                if msg.events.iter().any(|e| e.r#type == pb::event::EventType::Delete as i32) {
                    return Ok(());
                }
            }
            // The watched node went away: the caller reads the queue again.
            Ok(None) | Err(_) => return Ok(()),
        }
    }
}
