//! The chaos suite's linearizability checker.
//!
//! Chaos clients record every request they make as an [`Op`]: its key, what it did, when it was
//! invoked and completed, and whether it succeeded, failed, or ended unknown (see [`history`]).
//! After a run, [`check_history`] decides whether that history is linearizable: whether some
//! total order of the ops, consistent with real time, explains every result a client saw, given
//! the semantics of a key-value register. Keys are checked independently; each gets a
//! [`KeyVerdict`], and [`shortest_violation`] picks the violation the report should show.
//!
//! ```text
//! ops ─▶ partition by key ─▶ model::compile ─▶ search ─▶ KeyVerdict (+ explanation)
//!                            (drop no-effect ops,  (Wing & Gong + Lowe's memo,
//!                             intern values)        reductions for unknown writes)
//! ```
//!
//! - [`history`]: the op model, its invariants, and JSON (de)serialization.
//! - [`linearizability`]: the public API: partitioning, verdicts, explanations.
//! - `model`: the register model, and compiling a key's ops into search entries.
//! - `search`: the search for a linearization of one key.
//! - `memo`: the search's memo of explored configurations.
//!
//! The checker is exact: a `Violation` means no linearization exists, and `Linearizable` means one
//! does. When a key's search exceeds its budget the verdict is `Timeout`, never a guess.
//!
//! Cost: a 2,000-op key from 10 concurrent clients, with timeouts, failures, deletes and
//! compare-and-swaps, takes milliseconds when linearizable and well under a second to refute
//! when the violation is at the very end (release build). What makes keys expensive is unknown
//! writes (each may take effect at any later point or never) of values that are read again and
//! again: give every put a unique value, so that reads identify writes.

// The module docs walk through the private search machinery on purpose: they are for readers of this code.
#![allow(rustdoc::private_intra_doc_links)]

pub mod history;
pub mod linearizability;
mod memo;
mod model;
mod search;

#[cfg(test)]
mod tests;

pub use history::{from_json, to_json, validate, HistoryError, Op, OpKind, Outcome, Value};
pub use linearizability::{check_history, check_key, shortest_violation, KeyVerdict};
