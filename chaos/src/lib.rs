//! raftkv's chaos suite: a real cluster, faults injected while clients run, every operation recorded, and the
//! history checked.
//!
//! - [`workload`]: the clients and the watcher, and how each outcome is classified (ok / failed / unknown).
//! - [`etcd_client`]: the same operations through raftkv's etcd API, for a share of the clients.
//! - [`leases`]: lease clients (grant, keep alive, revoke or abandon) and their checks.
//! - [`nemesis`]: the faults.
//! - [`record`]: what is recorded, on one monotonic clock.
//! - [`checker`]: linearizability per key (Wing & Gong with Lowe's memoization).
//! - [`checks`]: lost writes, watch completeness and order, serializable read sanity.
//! - [`report`]: the history and a readable report when something is wrong.

pub mod checker;
pub mod checks;
pub mod etcd_client;
pub mod leases;
pub mod nemesis;
pub mod record;
pub mod report;
pub mod workload;
