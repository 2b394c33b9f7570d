//! Lease clients and their checks, on keys of their own (`l/`, apart from the linearizability workload's `k/`).
//!
//! Each lease client runs sessions: grant a lease, attach two keys to it, then keep it alive for a while —
//! reading its first key linearizably between renewals — and end it by revoking it, or by abandoning it (it stops
//! renewing and keeps reading until the key is gone). The run's watcher (`workload::run_watcher`) records every
//! change under `l/` as a [`LeaseEvent`].
//!
//! The checks ([`check`]):
//! - **never early**: a read that found a key of the lease gone and completed before `s + TTL`, for some renewal
//!   (or the grant) sent at `s` that answered the lease alive, is a violation: the lease expired earlier than
//!   TTL after a renewal, or a renewal answered alive after the lease's keys were deleted;
//! - **never kept**: a key of an abandoned lease still readable well after its last renewal + TTL + the bound
//!   (2 s, plus every fault overlapping that time and 5 s of failover for each) is a violation;
//! - **atomic revoke**: the two keys of a lease are deleted at one revision (both in the watch, and in the final
//!   read: never one without the other).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use raftkv::tls::ClientTls;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{
    record::{Fault, Recorder},
    workload::connect,
};

pub const PREFIX: &str = "l/";

/// The TTL lease clients ask for, in seconds (the cluster's minimum is 1).
pub const TTL: i64 = 2;

/// Beyond TTL, how long an abandoned lease may outlive its last renewal when no fault is injected meanwhile.
const BOUND: Duration = Duration::from_secs(2);

/// Added to the bound for every fault overlapping the lease's last moments: the fault itself, and a failover.
const PER_FAULT: Duration = Duration::from_secs(5);

/// One lease session, as its client saw it. Times are the recorder's nanoseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub process: u64,
    pub lease: i64,
    /// The keys whose put with the lease was acknowledged.
    pub keys: Vec<String>,
    /// Requests that answered the lease alive — the grant, then renewals with TTL > 0: (sent, answered).
    pub alive: Vec<(u64, u64)>,
    /// Linearizable reads of the first key after its put: (sent, answered, present).
    pub reads: Vec<(u64, u64, bool)>,
    /// Answered by an acknowledged revoke at this time.
    pub revoked_ns: Option<u64>,
    /// The client stopped renewing at this time and waited for the lease to expire.
    pub abandoned_ns: Option<u64>,
}

/// A key change under [`PREFIX`], as the lease watcher received it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseEvent {
    pub key: String,
    pub revision: i64,
    pub deleted: bool,
    pub received_ns: u64,
}

/// Runs lease sessions until `stop`.
pub async fn run_client(
    process: u64,
    endpoints: Vec<String>,
    seed: u64,
    tls: ClientTls,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let client = connect(endpoints, Duration::from_secs(2), &tls);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut session = 0u64;
    while !stop.load(Ordering::Relaxed) {
        session += 1;
        let sent = rec.now();
        let Ok(granted) = client.lease_grant(TTL, 0).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut r = LeaseRecord { process, lease: granted.id, alive: vec![(sent, rec.now())], ..Default::default() };
        for part in ["a", "b"] {
            let key = format!("{PREFIX}{process}-{session}/{part}");
            if client.put_with_lease(key.clone(), "v", r.lease).await.is_ok() {
                r.keys.push(key);
            }
        }
        let first = r.keys.first().cloned();
        let keep_for = Duration::from_millis(rng.random_range(1_000..8_000));
        let kept_since = std::time::Instant::now();
        let mut lost = false;
        while kept_since.elapsed() < keep_for && !stop.load(Ordering::Relaxed) {
            if let Some(key) = &first {
                read(&client, &rec, key, &mut r).await;
            }
            let sent = rec.now();
            match client.lease_keep_alive_once(r.lease).await {
                Ok(k) if k.ttl > 0 => r.alive.push((sent, rec.now())),
                Ok(_) => {
                    lost = true; // expired (renewals failed for a whole TTL during a fault): a new session
                    break;
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(TTL as u64 * 1000 / 4)).await;
        }
        if !lost && rng.random_bool(0.5) {
            if client.lease_revoke(r.lease).await.is_ok() {
                r.revoked_ns = Some(rec.now());
            }
        } else if !lost {
            r.abandoned_ns = Some(rec.now());
            // Read until the key is gone, for at most TTL + 30 s.
            let waited = std::time::Instant::now();
            while let Some(key) = &first {
                if read(&client, &rec, key, &mut r).await == Some(false)
                    || waited.elapsed() > Duration::from_secs(TTL as u64 + 30)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        rec.leases.lock().expect("recorder lock").push(r);
    }
}

async fn read(client: &raftkv::client::Client, rec: &Recorder, key: &str, r: &mut LeaseRecord) -> Option<bool> {
    let sent = rec.now();
    let present = client.get(key.as_bytes(), false).await.ok()?.kv.is_some();
    r.reads.push((sent, rec.now(), present));
    Some(present)
}

/// The lease checks over a run; `finals`: which lease keys existed after the run.
pub fn check(
    leases: &[LeaseRecord],
    events: &[LeaseEvent],
    faults: &[Fault],
    finals: &BTreeMap<String, bool>,
) -> Vec<String> {
    let mut out = Vec::new();
    let ttl = Duration::from_secs(TTL as u64).as_nanos() as u64;
    let deleted_at: HashMap<&str, (i64, u64)> =
        events.iter().filter(|e| e.deleted).map(|e| (e.key.as_str(), (e.revision, e.received_ns))).collect();
    for l in leases {
        let id = format!("lease {:x} of client {}", l.lease, l.process);
        // Never early.
        for &(_, read_done, present) in &l.reads {
            if present {
                continue;
            }
            if let Some(&(sent, _)) = l.alive.iter().find(|(sent, _)| read_done < sent + ttl) {
                out.push(format!(
                    "{id}: its key was gone in a read answered {:.3} s after a renewal sent at {:.3} s that found the \
                     lease alive — before its TTL of {TTL} s ran out",
                    (read_done as f64 - sent as f64) / 1e9,
                    sent as f64 / 1e9
                ));
                break;
            }
        }
        // A renewal answered alive after the watcher had already received the delete of one of its keys.
        for key in &l.keys {
            if let Some(&(_, received)) = deleted_at.get(key.as_str()) {
                if let Some(&(sent, _)) = l.alive.iter().find(|(sent, _)| *sent > received) {
                    if l.revoked_ns.is_none_or(|r| sent < r) {
                        out.push(format!(
                            "{id}: a renewal sent at {:.3} s found the lease alive after its key {key} was deleted",
                            sent as f64 / 1e9
                        ));
                    }
                }
            }
        }
        // Never kept.
        if let (Some(_), Some(&(_, last_alive))) = (l.abandoned_ns, l.alive.last()) {
            for &(read_sent, _, present) in &l.reads {
                if !present || read_sent <= last_alive {
                    continue;
                }
                let overlapping = faults.iter().filter(|f| f.end_ns >= last_alive && f.start_ns <= read_sent);
                let allowance: u64 =
                    overlapping.map(|f| f.end_ns.saturating_sub(f.start_ns) + PER_FAULT.as_nanos() as u64).sum();
                let limit = last_alive + ttl + BOUND.as_nanos() as u64 + allowance;
                if read_sent > limit {
                    out.push(format!(
                        "{id}: its key was still there {:.3} s after the last renewal, beyond TTL + bound ({:.3} s)",
                        (read_sent - last_alive) as f64 / 1e9,
                        (limit - last_alive) as f64 / 1e9
                    ));
                    break;
                }
            }
        }
        // Atomic revoke.
        if let [a, b] = l.keys.as_slice() {
            match (deleted_at.get(a.as_str()), deleted_at.get(b.as_str())) {
                (Some((ra, _)), Some((rb, _))) if ra != rb => {
                    out.push(format!("{id}: its keys were deleted at two revisions, {ra} and {rb}"))
                }
                _ => {}
            }
            if let (Some(fa), Some(fb)) = (finals.get(a), finals.get(b)) {
                if fa != fb {
                    out.push(format!("{id}: after the run {a} exists: {fa}, {b} exists: {fb}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn lease(alive: Vec<(u64, u64)>, reads: Vec<(u64, u64, bool)>) -> LeaseRecord {
        LeaseRecord { process: 1, lease: 7, keys: vec!["l/a".into(), "l/b".into()], alive, reads, ..Default::default() }
    }

    #[test]
    fn a_key_gone_before_ttl_after_a_renewal_is_a_violation() {
        let early = lease(vec![(0, S / 100), (S, S + S / 100)], vec![(2 * S, 2 * S + S / 10, false)]);
        assert_eq!(check(&[early], &[], &[], &BTreeMap::new()).len(), 1);
        let on_time = lease(vec![(0, S / 100)], vec![(2 * S, 2 * S + S / 10, false)]);
        assert!(check(&[on_time], &[], &[], &BTreeMap::new()).is_empty());
    }

    #[test]
    fn an_abandoned_lease_outliving_its_bound_is_a_violation_unless_faults_explain_it() {
        let mut kept = lease(vec![(0, S / 100)], vec![(10 * S, 10 * S + 1, true)]);
        kept.abandoned_ns = Some(S);
        assert_eq!(check(std::slice::from_ref(&kept), &[], &[], &BTreeMap::new()).len(), 1);
        let fault = Fault { name: "kill".into(), target: vec![1], start_ns: S, end_ns: 4 * S, detail: String::new() };
        assert!(check(&[kept], &[], &[fault], &BTreeMap::new()).is_empty());
    }

    #[test]
    fn keys_of_one_lease_deleted_apart_are_a_violation() {
        let l = lease(vec![(0, 1)], vec![]);
        let ev = |key: &str, revision| LeaseEvent { key: key.into(), revision, deleted: true, received_ns: 5 * S };
        assert_eq!(check(std::slice::from_ref(&l), &[ev("l/a", 9), ev("l/b", 10)], &[], &BTreeMap::new()).len(), 1);
        assert!(check(std::slice::from_ref(&l), &[ev("l/a", 9), ev("l/b", 9)], &[], &BTreeMap::new()).is_empty());
        let finals = BTreeMap::from([("l/a".to_string(), false), ("l/b".to_string(), true)]);
        assert_eq!(check(&[l], &[], &[], &finals).len(), 1);
    }
}
