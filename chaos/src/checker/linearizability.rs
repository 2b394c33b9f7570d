//! Linearizability checking of a key-value history, one register per key: the public API,
//! verdicts, and explanations of violations.
//!
//! A history is linearizable if every completed op can be given a single instant inside its
//! interval at which it took effect (and each unknown write an instant after its invocation, or
//! none), such that applying the ops in that order to the register model (see [`super::model`])
//! reproduces every recorded result.
//!
//! # Partitioning
//!
//! Keys are independent registers, and linearizability is compositional (Herlihy & Wing): a history
//! is linearizable iff each key's sub-history is. [`check_history`] therefore checks key by key,
//! which turns one search exponential in the whole history into many small ones.
//!
//! # Per key
//!
//! [`check_key`] compiles the key's ops ([`super::model::compile`]: failed ops and unknown reads
//! are dropped, values interned). A completed read of a value that no op writes is reported at
//! once, naming the culprit. Otherwise the search decides ([`super::search`]: Wing & Gong's
//! algorithm with Lowe's memoization, plus reductions for unknown writes). It is exact: a
//! violation means no linearization exists. It is also bounded: a key that needs more than its
//! time budget (or [`MAX_MEMO_BYTES`] of memo) gets [`KeyVerdict::Timeout`], never a guess.
//!
//! # Explanations
//!
//! On a violation the search returns the linearizable prefix that placed the most completed ops.
//! The explanation replays it and names the completed op with the earliest deadline after it: the
//! op that had to take effect next but could not, in any order the search tried. It lists what the
//! key held at that point and why each op that could have gone next does not fit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::history::{Op, OpKind, Outcome, ShowValue};
use super::model::{self, KeyModel, State, Step, ABSENT};
use super::search::{search, SearchResult};

/// The memo set may grow to about this many bytes per key before the check gives up (as a
/// timeout): a key that needs more is beyond what a test run should spend on it.
pub const MAX_MEMO_BYTES: usize = 512 << 20;

/// The most ops an explanation lists in one place; the report carries the full list anyway.
const EXPLAIN_LIMIT: usize = 10;

/// The result of checking one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyVerdict {
    Linearizable,
    Violation {
        key: String,
        /// All of the key's ops (including failed and unknown ones), sorted by invocation.
        ops: Vec<Op>,
        /// Why no linearization exists, for humans.
        explanation: String,
    },
    /// The budget ran out before the search could decide.
    Timeout {
        key: String,
    },
}

impl KeyVerdict {
    /// The key of a violation or timeout (a linearizable verdict does not carry it).
    pub fn key(&self) -> Option<&str> {
        match self {
            KeyVerdict::Linearizable => None,
            KeyVerdict::Violation { key, .. } | KeyVerdict::Timeout { key } => Some(key),
        }
    }

    pub fn is_violation(&self) -> bool {
        matches!(self, KeyVerdict::Violation { .. })
    }
}

/// Checks one key's ops (all for the same key; the key in reports is taken from the first) as a
/// single register that starts absent, giving the search at most `budget`.
pub fn check_key(ops: &[Op], budget: Duration) -> KeyVerdict {
    check_key_with(ops, budget, true)
}

/// [`check_key`], optionally without reporting reads of never-written values up front (so that
/// tests can exercise the search on them too).
pub(super) fn check_key_with(ops: &[Op], budget: Duration, shortcut_unwritten: bool) -> KeyVerdict {
    // A budget too large to represent as an instant means no limit.
    let deadline = Instant::now().checked_add(budget);
    let model = model::compile(ops);
    let key = || ops.first().map(|op| op.key.clone()).unwrap_or_default();
    let culprit = if shortcut_unwritten { model.unwritten_observation() } else { None };
    let explanation = if let Some(culprit) = culprit {
        explain_unwritten(ops, &model, culprit)
    } else {
        match search(&model.entries, deadline, MAX_MEMO_BYTES) {
            SearchResult::Linearizable => return KeyVerdict::Linearizable,
            SearchResult::Exhausted => return KeyVerdict::Timeout { key: key() },
            SearchResult::Violation { deepest } => explain_search(ops, &model, &deepest),
        }
    };
    let mut sorted = ops.to_vec();
    sorted.sort_by_key(|op| (op.invoke_ns, op.id));
    KeyVerdict::Violation { key: key(), ops: sorted, explanation }
}

/// Partitions `ops` by key and checks each key with [`check_key`]. Returns one verdict per key, in
/// key order.
pub fn check_history(ops: &[Op], budget_per_key: Duration) -> Vec<KeyVerdict> {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    by_key.values().map(|ops| check_key(ops, budget_per_key)).collect()
}

/// The violation with the fewest ops (ties: the smallest key): the easiest one to read in a report.
pub fn shortest_violation(verdicts: &[KeyVerdict]) -> Option<&KeyVerdict> {
    verdicts
        .iter()
        .filter_map(|verdict| match verdict {
            KeyVerdict::Violation { key, ops, .. } => Some((ops.len(), key, verdict)),
            _ => None,
        })
        .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
        .map(|(_, _, verdict)| verdict)
}

/// The explanation for an op that observed a value no kept op writes.
fn explain_unwritten(ops: &[Op], model: &KeyModel<'_>, culprit: usize) -> String {
    let op = &ops[model.entries[culprit].op];
    let (seen, verb) = match &op.kind {
        OpKind::Get { result } => (result.as_ref(), "returned"),
        OpKind::Cas { expect, .. } => (expect.as_ref(), "succeeded expecting"),
        _ => unreachable!("only reads and successful compare-and-swaps observe values"),
    };
    let mut out = format!("{op} {verb} {}, but no op in the history writes that value", ShowValue(seen));
    let writes_seen = |other: &Op| match &other.kind {
        OpKind::Put { value } | OpKind::Cas { new: value, .. } => Some(value) == seen,
        OpKind::Delete => seen.is_none(),
        OpKind::Get { .. } => false,
    };
    if let Some(failed) = ops.iter().find(|other| other.outcome == Outcome::Fail && writes_seen(other)) {
        let _ = write!(out, " (except {failed}, which failed and so had no effect)");
    }
    out.push('.');
    out
}

/// The explanation for a violation found by the search, from the deepest prefix it reached.
fn explain_search(ops: &[Op], model: &KeyModel<'_>, deepest: &[usize]) -> String {
    let entries = &model.entries;
    let op_of = |e: usize| &ops[entries[e].op];
    let show = |state: State| model.values.show(state);

    let mut placed = vec![false; entries.len()];
    let mut state = ABSENT;
    for &e in deepest {
        state = entries[e].step.apply(state).expect("the search only linearizes steps that apply");
        placed[e] = true;
    }
    let outstanding = || (0..entries.len()).filter(|&e| !placed[e]);
    let stuck = outstanding()
        .filter(|&e| entries[e].deadline.is_some())
        .min_by_key(|&e| (entries[e].deadline, e))
        .expect("a violation leaves a completed op outstanding");
    let limit = entries[stuck].deadline.expect("completed ops have deadlines");

    let result = match entries[stuck].step {
        Step::Read(seen) => format!("return {}", show(seen)),
        Step::CasSucceeded { .. } => "succeed".to_string(),
        Step::CasFailed { .. } => "fail".to_string(),
        Step::Write(_) | Step::CasMaybe { .. } => "take effect and the ops after it return what they did".to_string(),
    };
    let mut out = format!(
        "{} cannot be linearized: no order of the ops before and concurrent with it lets it {result}.\n",
        op_of(stuck)
    );

    let required_total = entries.iter().filter(|entry| entry.deadline.is_some()).count();
    let placed_required = deepest.iter().filter(|&&e| entries[e].deadline.is_some()).count();
    let _ =
        write!(out, "The longest linearizable prefix found places {placed_required} of {required_total} completed ops");
    let placed_unknown = deepest.len() - placed_required;
    if placed_unknown > 0 {
        let _ = write!(out, " (and {})", plural(placed_unknown, "unknown write"));
    }
    if deepest.is_empty() {
        out.push_str(".\n");
    } else {
        out.push_str(", ending:\n");
        if deepest.len() > EXPLAIN_LIMIT {
            let _ = writeln!(out, "  ... {}", plural(deepest.len() - EXPLAIN_LIMIT, "earlier op"));
        }
        for &e in &deepest[deepest.len().saturating_sub(EXPLAIN_LIMIT)..] {
            let _ = writeln!(out, "  {}", op_of(e));
        }
    }
    let _ = writeln!(
        out,
        "After it the key is {}. Completed ops that could take effect next (invoked by {limit}):",
        show(state)
    );

    let (completed, unknown): (Vec<usize>, Vec<usize>) =
        outstanding().filter(|&e| entries[e].invoke <= limit).partition(|&e| entries[e].deadline.is_some());
    for &e in completed.iter().take(EXPLAIN_LIMIT) {
        let why = match (entries[e].step, entries[e].step.apply(state)) {
            (Step::Read(_), None) => format!("the key is {}", show(state)),
            (Step::CasSucceeded { expect, .. }, None) => {
                format!("the key is {}, not the expected {}", show(state), show(expect))
            }
            (Step::CasFailed { .. }, None) => format!("the key is {}, so it would have succeeded", show(state)),
            (Step::Write(_) | Step::CasMaybe { .. }, None) => unreachable!("only completed ops are listed"),
            (_, Some(_)) => "fits here, but every order after it fails".to_string(),
        };
        let _ = writeln!(out, "  {}: {why}", op_of(e));
    }
    if completed.len() > EXPLAIN_LIMIT {
        let _ = writeln!(out, "  ... and {} more", completed.len() - EXPLAIN_LIMIT);
    }
    if !unknown.is_empty() {
        // Name the unknown writes that would have given the stuck op what it saw, if any.
        let seen = match entries[stuck].step {
            Step::Read(seen) | Step::CasSucceeded { expect: seen, .. } if seen != state => Some(seen),
            _ => None,
        };
        let writes_seen = |e: &usize| match entries[*e].step {
            Step::Write(new) | Step::CasMaybe { new, .. } => Some(new) == seen,
            _ => false,
        };
        let helpful: Vec<usize> = unknown.iter().copied().filter(writes_seen).collect();
        let _ = write!(out, "{} could also still take effect", plural(unknown.len(), "unknown write"));
        if helpful.is_empty() {
            out.push_str(", but none helps.\n");
        } else {
            out.push_str(", but none helps, including:\n");
            for &e in helpful.iter().take(EXPLAIN_LIMIT) {
                let _ = writeln!(out, "  {}", op_of(e));
            }
        }
    }

    let dropped = model.dropped;
    let ignored = [
        (dropped.failed, "failed op", "no effect"),
        (dropped.unknown_reads, "unknown read", "no information"),
        (dropped.unobserved_writes, "unknown write", "never observed"),
    ];
    let ignored: Vec<String> = ignored
        .iter()
        .filter(|(count, ..)| *count > 0)
        .map(|(count, what, why)| format!("{} ({why})", plural(*count, what)))
        .collect();
    if !ignored.is_empty() {
        let _ = writeln!(out, "Ignored: {}.", ignored.join(", "));
    }
    out.truncate(out.trim_end().len());
    out
}

/// `1 op`, `2 ops`.
fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
