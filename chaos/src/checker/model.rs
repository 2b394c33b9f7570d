//! The register model, and compiling one key's ops into the entries the search runs on.
//!
//! Each key is an independent register whose state is `Option<Value>` (None = absent), starting
//! absent. Put sets it, Delete clears it, Get must return it, and Cas sets it to `new` exactly when
//! it equals `expect` and must report whether it did.
//!
//! Compiling turns a key's ops into [`Entry`]s that are cheap to step: values are interned into
//! small integer [`State`]s, and each op becomes a [`Step`] with the outcome folded in, so the model
//! never has to consult `Outcome` again:
//!
//! - `Fail` ops are dropped: they had no effect.
//! - Unknown reads are dropped: they carry no information.
//! - Unknown writes become optional entries (no deadline): they may take effect at any point after
//!   their invocation, or never. An unknown Cas keeps only its successful branch, because a Cas that
//!   fails has no effect, which is indistinguishable from not taking effect at all.
//! - Unknown writes whose written state nobody could have observed are dropped (see
//!   [`compile`]): linearizing them can only hurt, and each optional entry the search keeps can
//!   double the states it explores.

use std::collections::{HashMap, HashSet};

use super::history::{Op, OpKind, Outcome};

/// An interned register state: [`ABSENT`], or `i + 1` for the `i`-th interned value.
pub(crate) type State = u32;

/// The state of an absent key; every register starts here.
pub(crate) const ABSENT: State = 0;

/// Interns a key's values, borrowing them from its ops.
#[derive(Debug, Default)]
pub(crate) struct Values<'a> {
    ids: HashMap<&'a str, State>,
    names: Vec<&'a str>,
}

impl<'a> Values<'a> {
    fn intern(&mut self, value: Option<&'a String>) -> State {
        let Some(value) = value else { return ABSENT };
        let next = State::try_from(self.names.len() + 1).expect("more than u32::MAX distinct values");
        *self.ids.entry(value.as_str()).or_insert_with(|| {
            self.names.push(value.as_str());
            next
        })
    }

    /// The value a state stands for (None = absent).
    pub(crate) fn value(&self, state: State) -> Option<&'a str> {
        state.checked_sub(1).map(|i| self.names[i as usize])
    }

    /// Renders a state for explanations: `"v"` or `absent`.
    pub(crate) fn show(&self, state: State) -> String {
        match self.value(state) {
            Some(value) => format!("{value:?}"),
            None => "absent".to_string(),
        }
    }
}

/// One op's effect on the register, with its recorded result folded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A put (`Write(value)`) or delete (`Write(ABSENT)`): always applies.
    Write(State),
    /// A completed get that returned this state.
    Read(State),
    /// A completed Cas that reported success.
    CasSucceeded { expect: State, new: State },
    /// A completed Cas that reported failure: in effect a read that saw anything but `expect`.
    CasFailed { expect: State },
    /// A Cas with an unknown outcome, reduced to its successful branch.
    CasMaybe { expect: State, new: State },
}

impl Step {
    /// The state after this step takes effect in `state`, or None if it cannot take effect there
    /// with its recorded result.
    pub(crate) fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Write(new) => Some(new),
            Step::Read(seen) => (state == seen).then_some(state),
            Step::CasSucceeded { expect, new } | Step::CasMaybe { expect, new } => (state == expect).then_some(new),
            Step::CasFailed { expect } => (state != expect).then_some(state),
        }
    }

    /// Whether the step observes the state without changing it (a get, or a Cas that failed).
    pub(crate) fn is_read(self) -> bool {
        matches!(self, Step::Read(_) | Step::CasFailed { .. })
    }

    /// Whether this step could *need* a write of `written` right before it: fit after that write
    /// but not before it, for some state before it.
    pub(crate) fn could_need(self, written: State) -> bool {
        match self {
            Step::Read(seen) => seen == written,
            Step::CasSucceeded { expect, .. } | Step::CasMaybe { expect, .. } => expect == written,
            // It fits after the write iff `written != expect`; it can then fail to fit before the
            // write, when the state before is `expect`.
            Step::CasFailed { expect } => expect != written,
            Step::Write(_) => false,
        }
    }
}

/// An op the search may linearize.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// Index of the op in the slice it was compiled from.
    pub(crate) op: usize,
    pub(crate) step: Step,
    pub(crate) invoke: u64,
    /// The latest instant the op can take effect: its completion for `Ok` ops, which must be
    /// linearized; None for unknown ops, which may take effect arbitrarily late or never.
    pub(crate) deadline: Option<u64>,
}

/// Counts of ops that [`compile`] left out, for explanations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) failed: usize,
    pub(crate) unknown_reads: usize,
    pub(crate) unobserved_writes: usize,
}

/// One key's ops, ready for the search.
#[derive(Debug)]
pub(crate) struct KeyModel<'a> {
    /// Sorted by invocation (ties by op id, for determinism).
    pub(crate) entries: Vec<Entry>,
    pub(crate) values: Values<'a>,
    pub(crate) dropped: Dropped,
}

impl KeyModel<'_> {
    /// The first entry (by invocation) that saw a value no kept op ever writes: a completed get
    /// returning it, or a completed Cas that succeeded expecting it. No linearization can explain
    /// such an op, so the search can be skipped and the report can name the exact culprit.
    pub(crate) fn unwritten_observation(&self) -> Option<usize> {
        let mut written: HashSet<State> = HashSet::from([ABSENT]);
        for entry in &self.entries {
            if let Step::Write(new) | Step::CasSucceeded { new, .. } | Step::CasMaybe { new, .. } = entry.step {
                written.insert(new);
            }
        }
        self.entries.iter().position(|entry| match entry.step {
            Step::Read(seen) | Step::CasSucceeded { expect: seen, .. } => !written.contains(&seen),
            _ => false,
        })
    }
}

/// Compiles one key's ops (the caller has already partitioned by key).
///
/// An unknown write `w` of state `s` is dropped when nothing that could come after it in a
/// linearization observes `s`, i.e. when every completed get returning `s` and every Cas expecting
/// `s` completed before `w` was invoked (an unknown Cas never completes), and so did every completed
/// Cas that reported failure. That is sound: take any linearization that includes `w`, and remove
/// `w`. Only the ops between `w` and the next write see a different state, and they all come after
/// `w`, so none of them completed before `w` was invoked. None of them is a get (it would have
/// returned `s`), nor a Cas that succeeded (it would have expected `s`), nor a completed Cas that
/// failed. Unknown Cas ops there fail, so they had no effect and can be left out as well. What is
/// left is still a linearization. A completed failed Cas must block the drop because it observes
/// "anything but `expect`", which `w` may be the only way to satisfy.
pub(crate) fn compile(ops: &[Op]) -> KeyModel<'_> {
    // For each observed state, the latest completion of an op observing it (u64::MAX: never
    // completes), and the latest completion of a completed Cas that failed.
    let mut values = Values::default();
    let mut last_observed: HashMap<State, u64> = HashMap::new();
    let mut last_failed_cas = None;
    for op in ops {
        let complete = if op.outcome == Outcome::Unknown { u64::MAX } else { op.complete_ns };
        let seen = match (&op.kind, op.outcome) {
            (_, Outcome::Fail) => continue,
            (OpKind::Get { result }, Outcome::Ok) => result,
            (OpKind::Cas { expect, succeeded: false, .. }, Outcome::Ok) => {
                last_failed_cas = last_failed_cas.max(Some(complete));
                expect
            }
            (OpKind::Cas { expect, .. }, _) => expect,
            _ => continue,
        };
        let last = last_observed.entry(values.intern(seen.as_ref())).or_insert(0);
        *last = (*last).max(complete);
    }
    let observable_after = |state: State, invoke: u64| last_observed.get(&state).is_some_and(|&last| last >= invoke);

    let mut dropped = Dropped::default();
    let mut entries = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let known = match op.outcome {
            Outcome::Fail => {
                dropped.failed += 1;
                continue;
            }
            Outcome::Ok => true,
            Outcome::Unknown => false,
        };
        let step = match &op.kind {
            OpKind::Put { value } => Step::Write(values.intern(Some(value))),
            OpKind::Delete => Step::Write(ABSENT),
            OpKind::Get { result } if known => Step::Read(values.intern(result.as_ref())),
            OpKind::Get { .. } => {
                dropped.unknown_reads += 1;
                continue;
            }
            OpKind::Cas { expect, new, succeeded } => {
                let (expect, new) = (values.intern(expect.as_ref()), values.intern(Some(new)));
                match (known, succeeded) {
                    (true, true) => Step::CasSucceeded { expect, new },
                    (true, false) => Step::CasFailed { expect },
                    (false, _) => Step::CasMaybe { expect, new },
                }
            }
        };
        if !known && last_failed_cas.is_none_or(|last| last < op.invoke_ns) {
            let written = match step {
                Step::Write(new) | Step::CasMaybe { new, .. } => new,
                _ => unreachable!("unknown reads were dropped above"),
            };
            if !observable_after(written, op.invoke_ns) {
                dropped.unobserved_writes += 1;
                continue;
            }
        }
        entries.push(Entry { op: index, step, invoke: op.invoke_ns, deadline: known.then_some(op.complete_ns) });
    }
    entries.sort_by_key(|entry| (entry.invoke, ops[entry.op].id));
    KeyModel { entries, values, dropped }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, kind: OpKind, outcome: Outcome, invoke_ns: u64) -> Op {
        Op { id, process: 0, key: "k".into(), kind, invoke_ns, complete_ns: invoke_ns + 1, outcome }
    }
    fn put(value: &str) -> OpKind {
        OpKind::Put { value: value.into() }
    }
    fn get(result: Option<&str>) -> OpKind {
        OpKind::Get { result: result.map(Into::into) }
    }
    fn cas(expect: Option<&str>, new: &str, succeeded: bool) -> OpKind {
        OpKind::Cas { expect: expect.map(Into::into), new: new.into(), succeeded }
    }

    #[test]
    fn steps() {
        let (a, b) = (1, 2);
        assert_eq!(Step::Write(a).apply(b), Some(a));
        assert_eq!(Step::Write(ABSENT).apply(a), Some(ABSENT));
        assert_eq!(Step::Read(a).apply(a), Some(a));
        assert_eq!(Step::Read(a).apply(ABSENT), None);
        assert_eq!(Step::CasSucceeded { expect: a, new: b }.apply(a), Some(b));
        assert_eq!(Step::CasSucceeded { expect: a, new: b }.apply(b), None);
        assert_eq!(Step::CasFailed { expect: a }.apply(b), Some(b));
        assert_eq!(Step::CasFailed { expect: a }.apply(a), None);
        assert_eq!(Step::CasMaybe { expect: ABSENT, new: b }.apply(ABSENT), Some(b));
        assert_eq!(Step::CasMaybe { expect: ABSENT, new: b }.apply(a), None);
    }

    #[test]
    fn compile_folds_outcomes_and_sorts_by_invoke() {
        let ops = vec![
            op(1, put("a"), Outcome::Ok, 30),
            op(2, get(Some("a")), Outcome::Ok, 10),
            op(3, put("x"), Outcome::Fail, 0),
            op(4, get(Some("zz")), Outcome::Unknown, 0),
            op(5, cas(Some("a"), "b", true), Outcome::Unknown, 20),
            op(6, OpKind::Delete, Outcome::Ok, 20),
            op(7, get(Some("b")), Outcome::Ok, 40),
        ];
        let model = compile(&ops);
        let order: Vec<u64> = model.entries.iter().map(|e| ops[e.op].id).collect();
        assert_eq!(order, vec![2, 5, 6, 1, 7]);
        assert_eq!(model.dropped, Dropped { failed: 1, unknown_reads: 1, unobserved_writes: 0 });
        let a = model.entries[0].step;
        assert!(matches!(a, Step::Read(s) if model.values.value(s) == Some("a")));
        assert!(matches!(model.entries[1].step, Step::CasMaybe { .. }));
        assert_eq!(model.entries[1].deadline, None);
        assert_eq!(model.entries[2].step, Step::Write(ABSENT));
        assert_eq!(model.entries[2].deadline, Some(21));
        assert_eq!(model.values.show(ABSENT), "absent");
    }

    #[test]
    fn unobserved_unknown_writes_are_dropped_unless_a_cas_failed() {
        let mut ops = vec![
            op(1, put("a"), Outcome::Unknown, 0),
            op(2, put("never-read"), Outcome::Unknown, 0),
            op(3, OpKind::Delete, Outcome::Unknown, 0),
            op(4, cas(None, "c", true), Outcome::Unknown, 0),
            op(5, get(Some("a")), Outcome::Ok, 10),
            op(6, cas(Some("c"), "d", true), Outcome::Unknown, 0),
        ];
        let model = compile(&ops);
        // Kept: put "a" (read by #5), delete (#4 expects absent), cas absent -> "c" (#6 expects "c").
        // Dropped: put "never-read", and #6 itself (nobody expects or reads "d").
        let kept: Vec<u64> = model.entries.iter().map(|e| ops[e.op].id).collect();
        assert_eq!(kept, vec![1, 3, 4, 5]);
        assert_eq!(model.dropped.unobserved_writes, 2);

        // A completed Cas that failed after the writes were invoked might need any of them.
        let mut with_failed_cas = ops.clone();
        with_failed_cas.push(op(7, cas(Some("a"), "e", false), Outcome::Ok, 20));
        let model = compile(&with_failed_cas);
        assert_eq!(model.entries.len(), with_failed_cas.len());
        assert_eq!(model.dropped.unobserved_writes, 0);

        // Observers and failed Cas ops that completed before a write was invoked don't count.
        ops.push(op(7, cas(Some("a"), "e", false), Outcome::Ok, 20));
        ops.push(op(8, put("a"), Outcome::Unknown, 22));
        ops.push(op(9, put("a"), Outcome::Unknown, 21));
        let model = compile(&ops);
        let kept: Vec<u64> = model.entries.iter().map(|e| ops[e.op].id).collect();
        assert_eq!(kept, vec![1, 2, 3, 4, 6, 5, 7, 9], "#8 dropped, #9 kept (the failed Cas completes at 21)");
    }

    #[test]
    fn unwritten_observations() {
        let ops = vec![
            op(1, put("a"), Outcome::Ok, 0),
            op(2, get(None), Outcome::Ok, 1),
            op(3, cas(Some("zz"), "b", false), Outcome::Ok, 2),
            op(4, put("failed"), Outcome::Fail, 3),
            op(5, get(Some("a")), Outcome::Ok, 4),
        ];
        assert_eq!(compile(&ops).unwritten_observation(), None);
        for bad in [get(Some("zz")), get(Some("failed")), cas(Some("zz"), "c", true)] {
            let mut ops = ops.clone();
            ops.push(op(6, bad, Outcome::Ok, 5));
            ops.push(op(7, get(Some("yy")), Outcome::Ok, 6));
            let model = compile(&ops);
            let culprit = model.unwritten_observation().map(|e| ops[model.entries[e].op].id);
            assert_eq!(culprit, Some(6));
        }
    }
}
