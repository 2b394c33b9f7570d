//! What the chaos run records: every client operation (for the linearizability checker), serializable reads,
//! range reads, watch events, lease sessions and injected faults, all stamped with one monotonic clock.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

use serde::{Deserialize, Serialize};

use crate::checker::history::{Op, OpKind, Outcome};

/// A serializable (local, possibly stale) read on one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SerialRead {
    pub process: u64,
    pub node: u64,
    /// The node's restart count when the read was sent and answered (a read across a restart is not compared).
    pub incarnation: (u64, u64),
    pub key: String,
    pub value: Option<String>,
    pub revision: i64,
    pub invoke_ns: u64,
    pub at_ns: u64,
}

/// A range read over the workload prefix: every value must have been written by someone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RangeRead {
    pub process: u64,
    pub kvs: Vec<(String, String)>,
    pub at_ns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum WatchRecord {
    /// A change delivered by the watch.
    Event { revision: i64, key: String, value: Option<String>, node: u64 },
    /// The watch could not resume where it left off (the history it needed was compacted on every node) and
    /// restarted at `revision`: an explicit gap, reported by the server, not a silent one.
    Resync { revision: i64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fault {
    pub name: String,
    pub target: Vec<u64>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub detail: String,
}

/// Everything recorded during a run.
pub struct Recorder {
    epoch: Instant,
    next_id: AtomicU64,
    pub ops: Mutex<Vec<Op>>,
    pub serial_reads: Mutex<Vec<SerialRead>>,
    pub range_reads: Mutex<Vec<RangeRead>>,
    pub watch: Mutex<Vec<WatchRecord>>,
    pub faults: Mutex<Vec<Fault>>,
    pub leases: Mutex<Vec<crate::leases::LeaseRecord>>,
    pub lease_events: Mutex<Vec<crate::leases::LeaseEvent>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            ops: Mutex::default(),
            serial_reads: Mutex::default(),
            range_reads: Mutex::default(),
            watch: Mutex::default(),
            faults: Mutex::default(),
            leases: Mutex::default(),
            lease_events: Mutex::default(),
        }
    }
}

impl Recorder {
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn op(&self, process: u64, key: &str, kind: OpKind, invoke_ns: u64, outcome: Outcome) {
        let op = Op {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            process,
            key: key.to_string(),
            kind,
            invoke_ns,
            complete_ns: self.now(),
            outcome,
        };
        self.ops.lock().expect("recorder lock").push(op);
    }

    pub fn fault(&self, name: &str, target: Vec<u64>, start_ns: u64, detail: String) {
        let f = Fault { name: name.into(), target, start_ns, end_ns: self.now(), detail };
        self.faults.lock().expect("recorder lock").push(f);
    }
}

/// Everything a run recorded, as written to `history.json` (and read back by `--recheck`).
#[derive(Serialize, Deserialize)]
pub struct History {
    pub seed: u64,
    pub nodes: u64,
    pub faults_injected: usize,
    pub ops: Vec<Op>,
    pub serial_reads: Vec<SerialRead>,
    pub range_reads: Vec<RangeRead>,
    pub watch: Vec<WatchRecord>,
    pub faults: Vec<Fault>,
    /// Linearizable reads of every key after the cluster healed.
    pub finals: std::collections::BTreeMap<String, Option<String>>,
    /// The cluster's revision after healing.
    pub final_revision: i64,
    /// Nodes whose data differed from `finals` after catching up.
    pub divergence: Vec<String>,
    /// The lease clients' sessions, the lease watcher's events, and which lease keys existed after the run.
    #[serde(default)]
    pub leases: Vec<crate::leases::LeaseRecord>,
    #[serde(default)]
    pub lease_events: Vec<crate::leases::LeaseEvent>,
    #[serde(default)]
    pub lease_finals: std::collections::BTreeMap<String, bool>,
}
