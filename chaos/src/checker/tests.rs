//! Tests of the checker as a whole: hand-written scenarios; histories generated from a real
//! sequential register (always linearizable) and mutations of them (never); comparisons with two
//! independent oracles (a brute-force enumeration of orders on small random histories, and a plain
//! memoized search without the checker's reductions on medium ones); and performance.
//!
//! Two ignored tests are tools rather than checks: `oracle_sweep` runs the oracle comparisons on
//! many more histories, and `perf_probe` prints timings for various workloads (run both with
//! `--release -- --ignored --nocapture`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::linearizability::check_key_with;
use super::*;

/// A cap, not an expectation: verdicts here come back in milliseconds; a loaded CI machine must not turn them into
/// timeouts.
const BUDGET: Duration = Duration::from_secs(120);

/// Builds single-key histories; times are in arbitrary units, ids are assigned in order.
#[derive(Default)]
struct History {
    ops: Vec<Op>,
}

impl History {
    fn op(&mut self, process: u64, kind: OpKind, invoke_ns: u64, complete_ns: u64) -> &mut Self {
        let id = self.ops.len() as u64 + 1;
        self.ops.push(Op { id, process, key: "k".into(), kind, invoke_ns, complete_ns, outcome: Outcome::Ok });
        self
    }
    fn put(&mut self, process: u64, value: &str, invoke: u64, complete: u64) -> &mut Self {
        self.op(process, OpKind::Put { value: value.into() }, invoke, complete)
    }
    fn get(&mut self, process: u64, result: Option<&str>, invoke: u64, complete: u64) -> &mut Self {
        self.op(process, OpKind::Get { result: result.map(Into::into) }, invoke, complete)
    }
    fn delete(&mut self, process: u64, invoke: u64, complete: u64) -> &mut Self {
        self.op(process, OpKind::Delete, invoke, complete)
    }
    fn cas(
        &mut self,
        process: u64,
        expect: Option<&str>,
        new: &str,
        succeeded: bool,
        invoke: u64,
        complete: u64,
    ) -> &mut Self {
        let kind = OpKind::Cas { expect: expect.map(Into::into), new: new.into(), succeeded };
        self.op(process, kind, invoke, complete)
    }
    /// Marks the last op as ended unknown.
    fn unknown(&mut self) -> &mut Self {
        self.ops.last_mut().unwrap().outcome = Outcome::Unknown;
        self
    }
    /// Marks the last op as failed.
    fn fail(&mut self) -> &mut Self {
        self.ops.last_mut().unwrap().outcome = Outcome::Fail;
        self
    }
}

#[track_caller]
fn assert_linearizable(ops: &[Op]) {
    match check_key(ops, BUDGET) {
        KeyVerdict::Linearizable => {}
        other => panic!("expected linearizable, got {other:#?}"),
    }
}

/// Asserts a violation and returns its explanation.
#[track_caller]
fn assert_violation(ops: &[Op]) -> String {
    match check_key(ops, BUDGET) {
        KeyVerdict::Violation { key, ops: reported, explanation } => {
            assert_eq!(key, ops[0].key);
            assert_eq!(reported.len(), ops.len(), "the report carries all of the key's ops");
            assert!(reported.windows(2).all(|w| w[0].invoke_ns <= w[1].invoke_ns), "sorted by invocation");
            explanation
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
    assert!(check_history(&[], BUDGET).is_empty());
}

#[test]
fn sequential_histories_are_linearizable() {
    let ops = History::default()
        .get(1, None, 0, 10)
        .put(1, "a", 20, 30)
        .get(2, Some("a"), 40, 50)
        .put(2, "b", 60, 70)
        .get(1, Some("b"), 80, 90)
        .cas(3, Some("b"), "c", true, 100, 110)
        .cas(1, Some("b"), "d", false, 120, 130)
        .get(2, Some("c"), 140, 150)
        .ops
        .clone();
    assert_linearizable(&ops);
}

#[test]
fn overlapping_put_and_get_may_go_either_way() {
    for seen in ["a", "b"] {
        let ops = History::default().put(1, "a", 0, 10).put(1, "b", 20, 40).get(2, Some(seen), 25, 35).ops.clone();
        assert_linearizable(&ops);
    }
    // Two concurrent writes, read in the order opposite to their invocation.
    let ops = History::default()
        .put(1, "a", 0, 100)
        .put(2, "b", 10, 90)
        .get(3, Some("b"), 20, 30)
        .get(3, Some("a"), 95, 110)
        .ops
        .clone();
    assert_linearizable(&ops);
    // Ops that touch at a single instant count as concurrent.
    let ops = History::default().put(1, "a", 0, 10).put(2, "b", 10, 20).get(3, Some("a"), 20, 30).ops.clone();
    assert_linearizable(&ops);
}

#[test]
fn stale_read_is_a_violation() {
    let ops = History::default().put(1, "a", 0, 10).put(1, "b", 20, 30).get(2, Some("a"), 40, 50).ops.clone();
    let explanation = assert_violation(&ops);
    assert!(explanation.starts_with("#3 p2 get -> \"a\" [40, 50] cannot be linearized"), "{explanation}");
    assert!(explanation.contains("the key is \"b\""), "{explanation}");
}

#[test]
fn lost_write_is_a_violation() {
    let ops = History::default()
        .put(1, "a", 0, 10)
        .put(2, "b", 20, 30)
        .get(1, Some("a"), 40, 50)
        .get(2, Some("a"), 60, 70)
        .ops
        .clone();
    let explanation = assert_violation(&ops);
    assert!(explanation.contains("places 2 of 4 completed ops"), "{explanation}");
}

#[test]
fn reading_a_value_never_written_is_a_violation() {
    let ops = History::default().put(1, "a", 0, 10).get(2, Some("zz"), 20, 30).put(1, "b", 40, 50).ops.clone();
    let explanation = assert_violation(&ops);
    assert_eq!(
        explanation,
        "#2 p2 get -> \"zz\" [20, 30] returned \"zz\", but no op in the history writes that value."
    );
    // The search reaches the same verdict on its own.
    assert!(check_key_with(&ops, BUDGET, false).is_violation());
    // Reading absent after a completed put is no better.
    let ops = History::default().put(1, "a", 0, 10).get(2, None, 20, 30).ops.clone();
    assert_violation(&ops);
}

#[test]
fn unknown_put_that_later_reads_show_took_effect() {
    let ops = History::default()
        .put(1, "a", 0, 10)
        .put(2, "b", 20, 30)
        .unknown()
        .get(1, Some("a"), 40, 50)
        .get(3, Some("b"), 60, 70)
        .ops
        .clone();
    assert_linearizable(&ops);
    // The effect may come long after the client gave up, even after other writes completed.
    let ops = History::default()
        .put(2, "b", 0, 5)
        .unknown()
        .put(1, "a", 10, 20)
        .get(1, Some("a"), 30, 40)
        .get(3, Some("b"), 50, 60)
        .ops
        .clone();
    assert_linearizable(&ops);
    // But it takes effect at most once, and not before it was invoked.
    let once = History::default()
        .put(1, "a", 0, 10)
        .put(2, "b", 20, 30)
        .unknown()
        .get(1, Some("b"), 40, 50)
        .put(1, "a", 60, 70)
        .get(3, Some("b"), 80, 90)
        .ops
        .clone();
    assert_violation(&once);
    let early = History::default().get(1, Some("b"), 0, 10).put(2, "b", 20, 30).unknown().ops.clone();
    assert_violation(&early);
}

#[test]
fn unknown_put_that_never_shows_up() {
    let ops = History::default()
        .put(1, "a", 0, 10)
        .put(2, "b", 20, 30)
        .unknown()
        .get(1, Some("a"), 40, 50)
        .get(3, Some("a"), 60, 70)
        .ops
        .clone();
    assert_linearizable(&ops);
    // Also when its value is read elsewhere, before it was invoked, so it is not simply dropped.
    let ops = History::default()
        .put(1, "b", 0, 10)
        .get(2, Some("b"), 20, 30)
        .put(1, "a", 40, 50)
        .put(2, "b", 60, 70)
        .unknown()
        .get(1, Some("a"), 80, 90)
        .ops
        .clone();
    assert_linearizable(&ops);
}

#[test]
fn unknown_reads_are_ignored() {
    let ops = History::default().put(1, "a", 0, 10).get(2, Some("zz"), 20, 30).unknown().ops.clone();
    assert_linearizable(&ops);
}

#[test]
fn concurrent_cas_from_the_same_value_cannot_both_succeed() {
    let both = History::default()
        .put(1, "a", 0, 10)
        .cas(1, Some("a"), "b", true, 20, 40)
        .cas(2, Some("a"), "c", true, 25, 35)
        .ops
        .clone();
    let explanation = assert_violation(&both);
    assert!(explanation.contains("not the expected \"a\""), "{explanation}");

    let one = History::default()
        .put(1, "a", 0, 10)
        .cas(1, Some("a"), "b", true, 20, 40)
        .cas(2, Some("a"), "c", false, 25, 35)
        .get(3, Some("b"), 50, 60)
        .ops
        .clone();
    assert_linearizable(&one);
}

#[test]
fn cas_reporting_failure_when_it_must_have_succeeded() {
    let ops = History::default().put(1, "a", 0, 10).cas(2, Some("a"), "b", false, 20, 30).ops.clone();
    let explanation = assert_violation(&ops);
    assert!(explanation.contains("so it would have succeeded"), "{explanation}");
    // Absent counts as a value to compare with.
    let ops = History::default().cas(2, None, "b", false, 20, 30).ops.clone();
    assert_violation(&ops);
    let ops = History::default().cas(2, None, "b", true, 20, 30).get(1, Some("b"), 40, 50).ops.clone();
    assert_linearizable(&ops);
}

#[test]
fn unknown_cas_may_or_may_not_have_succeeded() {
    let with_read = |seen: &str| {
        History::default()
            .put(1, "a", 0, 10)
            .cas(2, Some("a"), "b", false, 20, 30)
            .unknown()
            .get(1, Some(seen), 40, 50)
            .ops
            .clone()
    };
    assert_linearizable(&with_read("a"));
    assert_linearizable(&with_read("b"));
    // It can only succeed from its expected value.
    let ops = History::default()
        .put(1, "x", 0, 10)
        .cas(2, Some("a"), "b", true, 20, 30)
        .unknown()
        .get(1, Some("b"), 40, 50)
        .put(3, "a", 60, 70)
        .ops
        .clone();
    assert_violation(&ops);
}

#[test]
fn failed_ops_are_ignored() {
    let ops = History::default().put(1, "a", 0, 10).put(2, "b", 20, 30).fail().get(1, Some("a"), 40, 50).ops.clone();
    assert_linearizable(&ops);
    let ops = History::default()
        .put(1, "a", 0, 10)
        .put(2, "b", 20, 30)
        .fail()
        .get(1, Some("b"), 40, 50)
        .cas(1, Some("a"), "c", true, 60, 70)
        .fail()
        .ops
        .clone();
    let explanation = assert_violation(&ops);
    assert!(explanation.contains("except #2 p2 put \"b\" [20, 30] failed"), "{explanation}");
}

#[test]
fn deletes() {
    let ops = History::default()
        .put(1, "a", 0, 10)
        .delete(2, 20, 30)
        .get(1, None, 40, 50)
        .cas(3, None, "b", true, 60, 70)
        .get(1, Some("b"), 80, 90)
        .delete(2, 100, 110)
        .unknown()
        .get(1, None, 120, 130)
        .ops
        .clone();
    assert_linearizable(&ops);
    let ops = History::default().put(1, "a", 0, 10).delete(2, 20, 30).get(1, Some("a"), 40, 50).ops.clone();
    assert_violation(&ops);
    let ops = History::default().put(1, "a", 0, 10).delete(2, 20, 30).fail().get(1, None, 40, 50).ops.clone();
    assert_violation(&ops);
}

#[test]
fn check_history_partitions_by_key_and_picks_the_shortest_violation() {
    let mut ops = Vec::new();
    let mut add = |key: &str, history: &History| {
        for op in &history.ops {
            ops.push(Op { id: ops.len() as u64, key: key.into(), ..op.clone() });
        }
    };
    // Linearizable per key, but a stale read if "a" and "c" were one register.
    add("c", History::default().put(1, "y", 20, 30).get(2, Some("y"), 40, 50));
    add("a", History::default().put(1, "x", 0, 10).get(2, Some("x"), 40, 50));
    // Two violations of different sizes.
    add(
        "long",
        History::default().put(1, "x", 0, 10).put(2, "y", 20, 30).get(1, Some("x"), 40, 50).get(1, None, 60, 70),
    );
    add("short", History::default().put(1, "x", 0, 10).get(1, None, 40, 50));
    let verdicts = check_history(&ops, BUDGET);
    let keys: Vec<Option<&str>> = verdicts.iter().map(KeyVerdict::key).collect();
    assert_eq!(keys, vec![None, None, Some("long"), Some("short")]);
    match shortest_violation(&verdicts) {
        Some(KeyVerdict::Violation { key, ops, .. }) => {
            assert_eq!(key, "short");
            assert!(ops.iter().all(|op| op.key == "short"));
        }
        other => panic!("expected the violation of \"short\", got {other:?}"),
    }
    assert_eq!(shortest_violation(&verdicts[..2]), None);
}

#[test]
fn out_of_budget_is_a_timeout() {
    // Thirty concurrent puts read in an impossible order: the search must try every subset of them.
    let mut history = History::default();
    for i in 0..30 {
        history.put(i, &format!("v{i}"), 0, 100);
    }
    history.get(31, Some("v0"), 200, 210).get(31, Some("v1"), 220, 230);
    let started = Instant::now();
    let verdict = check_key(&history.ops, Duration::from_millis(50));
    assert_eq!(verdict, KeyVerdict::Timeout { key: "k".into() });
    assert!(started.elapsed() < Duration::from_secs(30), "the budget is honoured: {:?}", started.elapsed());
}

/// Generates a random history by executing ops one at a time against a real map: each op takes
/// effect at its own instant, strictly increasing, inside a random interval around it. Each process
/// runs one op at a time. Returns a history that is linearizable by construction.
/// Percentages of outcomes and op kinds for [`generate`].
#[derive(Clone, Copy, Debug)]
struct Mix {
    fail: u32,
    unknown: u32,
    /// Of the ops: puts, then gets, then deletes; the rest are Cas.
    put: u32,
    get: u32,
    delete: u32,
    /// Values written are fresh with this probability, else reused: any earlier one, or with
    /// `small_pool`, one of the first six.
    fresh: f64,
    small_pool: bool,
    /// If non-zero, overrides `fail` and `unknown`: per-mille of ops that end unknown (and none fail).
    unknown_permille: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix { fail: 5, unknown: 10, put: 30, get: 35, delete: 10, fresh: 0.8, small_pool: false, unknown_permille: 0 }
    }
}

fn generate(rng: &mut StdRng, len: usize, processes: u64, keys: &[&str]) -> Vec<Op> {
    generate_mix(rng, len, processes, keys, Mix::default())
}

fn generate_mix(rng: &mut StdRng, len: usize, processes: u64, keys: &[&str], mix: Mix) -> Vec<Op> {
    let mut store: HashMap<&str, Option<String>> = HashMap::new();
    let mut free_at = vec![0u64; processes as usize];
    let mut now = 0;
    let mut ops = Vec::with_capacity(len);
    let value = |rng: &mut StdRng, i: usize| {
        // Mostly fresh values, sometimes a reused one to make reads ambiguous.
        if rng.random_bool(mix.fresh) {
            format!("v{i}")
        } else {
            format!("v{}", rng.random_range(0..=if mix.small_pool { i.min(5) } else { i }))
        }
    };
    for i in 0..len {
        let process = rng.random_range(0..processes);
        let p = process as usize;
        // The instant this op takes effect.
        now = (now + rng.random_range(1..=10)).max(free_at[p] + 1);
        let invoke = now.saturating_sub(rng.random_range(0..=60)).max(free_at[p] + 1);
        let mut complete = now + rng.random_range(0..=60);
        let key = keys[rng.random_range(0..keys.len())];
        let current = store.entry(key).or_default();
        let roll = rng.random_range(0..100);
        let (outcome, applies) = if mix.unknown_permille > 0 {
            if rng.random_range(0..1000) < mix.unknown_permille {
                (Outcome::Unknown, rng.random_bool(0.5))
            } else {
                (Outcome::Ok, true)
            }
        } else if roll < mix.fail {
            (Outcome::Fail, false)
        } else if roll < mix.fail + mix.unknown {
            (Outcome::Unknown, rng.random_bool(0.5))
        } else {
            (Outcome::Ok, true)
        };
        if outcome == Outcome::Unknown {
            // The client may give up before the op takes effect.
            complete = rng.random_range(invoke..=complete);
        }
        let kind = match rng.random_range(0..100) {
            roll if roll < mix.put => {
                let value = value(rng, i);
                if applies {
                    *current = Some(value.clone());
                }
                OpKind::Put { value }
            }
            roll if roll < mix.put + mix.get => {
                let result = if outcome == Outcome::Ok { current.clone() } else { Some("garbage".into()) };
                OpKind::Get { result }
            }
            roll if roll < mix.put + mix.get + mix.delete => {
                if applies {
                    *current = None;
                }
                OpKind::Delete
            }
            _ => {
                let expect = match rng.random_range(0..4) {
                    0 | 1 => current.clone(),
                    2 => None,
                    _ => Some(value(rng, i)),
                };
                let new = format!("c{i}");
                let succeeded = *current == expect;
                if applies && succeeded {
                    *current = Some(new.clone());
                }
                // The client only knows the outcome of completed ops.
                let succeeded = if outcome == Outcome::Ok { succeeded } else { rng.random_bool(0.5) };
                OpKind::Cas { expect, new, succeeded }
            }
        };
        free_at[p] = complete;
        ops.push(Op {
            id: i as u64,
            process,
            key: key.into(),
            kind,
            invoke_ns: invoke,
            complete_ns: complete,
            outcome,
        });
    }
    ops
}

#[test]
fn generated_histories_are_linearizable_and_mutations_are_not() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut mutated = 0;
    for round in 0..150 {
        let keys: &[&str] = if round % 2 == 0 { &["x"] } else { &["x", "y", "z"] };
        let processes = rng.random_range(1..=8);
        let len = rng.random_range(1..=150);
        let ops = generate(&mut rng, len, processes, keys);
        validate(&ops).unwrap();
        for verdict in check_history(&ops, BUDGET) {
            assert_eq!(verdict, KeyVerdict::Linearizable, "round {round}:\n{}", to_json(&ops).unwrap());
        }

        // One completed read now returns a value nobody wrote.
        let reads: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].outcome == Outcome::Ok && matches!(ops[i].kind, OpKind::Get { .. }))
            .collect();
        if reads.is_empty() {
            continue;
        }
        let victim = reads[rng.random_range(0..reads.len())];
        let mut bad = ops.clone();
        bad[victim].kind = OpKind::Get { result: Some("never-written".into()) };
        let key_ops: Vec<Op> = bad.iter().filter(|op| op.key == bad[victim].key).cloned().collect();
        for shortcut in [true, false] {
            let verdict = check_key_with(&key_ops, BUDGET, shortcut);
            assert!(verdict.is_violation(), "round {round}, shortcut {shortcut}: {verdict:?}");
        }
        let verdicts = check_history(&bad, BUDGET);
        assert_eq!(verdicts.iter().filter(|v| v.is_violation()).count(), 1, "round {round}");
        mutated += 1;
    }
    assert!(mutated > 100, "most rounds have a read to mutate ({mutated})");
}

/// Decides linearizability by trying every subset of the unknown writes and every order consistent
/// with real time, straight from the semantics (none of the checker's reductions).
fn brute_force(ops: &[Op]) -> bool {
    let required: Vec<&Op> = ops.iter().filter(|op| op.outcome == Outcome::Ok).collect();
    let optional: Vec<&Op> = ops.iter().filter(|op| op.outcome == Outcome::Unknown && op.kind.is_write()).collect();
    (0..1u32 << optional.len()).any(|subset| {
        let mut chosen = required.clone();
        chosen.extend(optional.iter().enumerate().filter(|(i, _)| subset & (1 << i) != 0).map(|(_, op)| *op));
        let mut used = vec![false; chosen.len()];
        orders(&chosen, &mut used, None)
    })
}

fn orders(ops: &[&Op], used: &mut [bool], state: Option<String>) -> bool {
    if used.iter().all(|&u| u) {
        return true;
    }
    for i in 0..ops.len() {
        // `i` may go next unless an unused completed op returned before it was invoked.
        let blocked = (0..ops.len())
            .any(|j| !used[j] && j != i && ops[j].outcome == Outcome::Ok && ops[j].complete_ns < ops[i].invoke_ns);
        if used[i] || blocked {
            continue;
        }
        let ok = ops[i].outcome == Outcome::Ok;
        let next = match &ops[i].kind {
            OpKind::Put { value } => Some(Some(value.clone())),
            OpKind::Delete => Some(None),
            OpKind::Get { result } => (*result == state).then(|| state.clone()),
            OpKind::Cas { expect, new, succeeded } => {
                let matches = *expect == state;
                if ok && matches != *succeeded {
                    None
                } else if matches {
                    Some(Some(new.clone()))
                } else {
                    Some(state.clone())
                }
            }
        };
        if let Some(next) = next {
            used[i] = true;
            let found = orders(ops, used, next);
            used[i] = false;
            if found {
                return true;
            }
        }
    }
    false
}

/// Random small histories with random results, so about half are violations.
fn small_random_history(rng: &mut StdRng, max_len: usize, values: &[&'static str], unknown_pct: u32) -> Vec<Op> {
    let len = rng.random_range(1..=max_len);
    let mut history = History::default();
    let value = |rng: &mut StdRng| values[rng.random_range(0..values.len())];
    let maybe = |rng: &mut StdRng| if rng.random_bool(0.25) { None } else { Some(value(rng)) };
    for _ in 0..len {
        let process = rng.random_range(0..3);
        let invoke = rng.random_range(0..30);
        let complete = invoke + rng.random_range(0..15);
        match rng.random_range(0..10) {
            0..3 => history.put(process, value(rng), invoke, complete),
            3..6 => history.get(process, maybe(rng), invoke, complete),
            6 => history.delete(process, invoke, complete),
            _ => history.cas(process, maybe(rng), value(rng), rng.random_bool(0.5), invoke, complete),
        };
        let roll = rng.random_range(0..100);
        if roll < 5 {
            history.fail();
        } else if roll < 5 + unknown_pct {
            history.unknown();
        }
    }
    history.ops
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    // (rounds, max ops, values, % unknown): a general mix, and one heavy in unknown writes and
    // reused values, which exercises the reductions for unknown writes.
    let profiles: [(usize, usize, &[&str], u32); 2] = [(3000, 7, &["a", "b"], 20), (2000, 8, &["a", "b", "c"], 45)];
    let mut rng = StdRng::seed_from_u64(42);
    for (rounds, max_len, values, unknown_pct) in profiles {
        let (mut linearizable, mut violations) = (0, 0);
        for round in 0..rounds {
            let ops = small_random_history(&mut rng, max_len, values, unknown_pct);
            let expected = brute_force(&ops);
            for shortcut in [true, false] {
                let verdict = check_key_with(&ops, BUDGET, shortcut);
                assert_eq!(
                    verdict == KeyVerdict::Linearizable,
                    expected,
                    "round {round}, shortcut {shortcut}: brute force says {expected}, checker says {verdict:?}\n{}",
                    to_json(&ops).unwrap()
                );
                assert!(verdict == KeyVerdict::Linearizable || verdict.is_violation());
            }
            if expected {
                linearizable += 1;
            } else {
                violations += 1;
            }
        }
        let enough = rounds / 6;
        assert!(linearizable > enough && violations > enough, "{linearizable} linearizable, {violations} violations");
    }
}

/// A plain Wing & Gong search with Lowe's memoization, straight from the semantics and without
/// the checker's reductions: slower, but simple enough to trust on medium-sized histories.
fn plain_search(ops: &[Op]) -> bool {
    let ops: Vec<&Op> = ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok || (op.outcome == Outcome::Unknown && op.kind.is_write()))
        .collect();
    let mut seen = std::collections::HashSet::new();
    plain_dfs(&ops, &mut vec![false; ops.len()], None, &mut seen)
}

fn plain_dfs(
    ops: &[&Op],
    done: &mut Vec<bool>,
    state: Option<String>,
    seen: &mut std::collections::HashSet<(Vec<bool>, Option<String>)>,
) -> bool {
    let pending_ok = (0..ops.len()).filter(|&i| !done[i] && ops[i].outcome == Outcome::Ok);
    let Some(limit) = pending_ok.map(|i| ops[i].complete_ns).min() else { return true };
    if !seen.insert((done.clone(), state.clone())) {
        return false;
    }
    for i in 0..ops.len() {
        if done[i] || ops[i].invoke_ns > limit {
            continue;
        }
        let ok = ops[i].outcome == Outcome::Ok;
        let next = match &ops[i].kind {
            OpKind::Put { value } => Some(Some(value.clone())),
            OpKind::Delete => Some(None),
            OpKind::Get { result } => (*result == state).then(|| state.clone()),
            OpKind::Cas { expect, new, succeeded } => match (*expect == state, ok) {
                (true, true) if *succeeded => Some(Some(new.clone())),
                (false, true) if !*succeeded => Some(state.clone()),
                (true, false) => Some(Some(new.clone())),
                _ => None,
            },
        };
        if let Some(next) = next {
            done[i] = true;
            let found = plain_dfs(ops, done, next, seen);
            done[i] = false;
            if found {
                return true;
            }
        }
    }
    false
}

/// A generated history (single key, reused values, many unknown ops) with a few results
/// perturbed: some perturbations still have an explanation, most don't.
fn medium_history(rng: &mut StdRng) -> Vec<Op> {
    let mix = Mix { unknown: 25, fresh: 0.3, small_pool: true, ..Mix::default() };
    let (len, processes) = (rng.random_range(10..=30), rng.random_range(2..=5));
    let mut ops = generate_mix(rng, len, processes, &["k"], mix);
    for _ in 0..rng.random_range(0..=2) {
        let victim = rng.random_range(0..ops.len());
        match &mut ops[victim].kind {
            OpKind::Get { result } => *result = [None, Some("v0"), Some("v1")][rng.random_range(0..3)].map(Into::into),
            OpKind::Cas { succeeded, .. } => *succeeded = !*succeeded,
            _ => ops[victim].outcome = Outcome::Unknown,
        }
    }
    ops
}

#[test]
fn agrees_with_a_plain_search_on_medium_histories() {
    let mut rng = StdRng::seed_from_u64(99);
    let (mut linearizable, mut violations) = (0, 0);
    for round in 0..300 {
        let ops = medium_history(&mut rng);
        let expected = plain_search(&ops);
        let verdict = check_key_with(&ops, BUDGET, false);
        assert_eq!(
            verdict == KeyVerdict::Linearizable,
            expected,
            "round {round}: {verdict:?}\n{}",
            to_json(&ops).unwrap()
        );
        if expected {
            linearizable += 1;
        } else {
            violations += 1;
        }
    }
    assert!(linearizable > 50 && violations > 50, "{linearizable} linearizable, {violations} violations");
}

/// `ops` followed by a stale read after everything else: the search must exhaust every order of
/// `ops` to rule it out. The stale read is op #10003.
fn with_stale_read_at_end(ops: &[Op]) -> Vec<Op> {
    let end = ops.iter().map(|op| op.complete_ns).max().unwrap_or(0);
    let mut tail = History::default();
    tail.put(100, "end-a", end + 10, end + 20).put(100, "end-b", end + 30, end + 40).get(
        101,
        Some("end-a"),
        end + 50,
        end + 60,
    );
    let key = ops.first().map_or("k".to_string(), |op| op.key.clone());
    let tail = tail.ops.into_iter().map(|op| Op { id: op.id + 10_000, key: key.clone(), ..op });
    ops.iter().cloned().chain(tail).collect()
}

/// A single key with 2,000 ops from 10 clients, with unknown and failed ops, deletes and Cas:
/// checked in well under a second in release builds. Unoptimized test builds are about ten times
/// slower, so there the bounds only catch gross regressions.
#[test]
fn two_thousand_ops_on_one_key_is_fast() {
    let mut rng = StdRng::seed_from_u64(7);
    let ops = generate(&mut rng, 2000, 10, &["k"]);
    let started = Instant::now();
    assert_eq!(check_key(&ops, BUDGET), KeyVerdict::Linearizable);
    let linearizable = started.elapsed();

    let started = Instant::now();
    let explanation = match check_key(&with_stale_read_at_end(&ops), BUDGET) {
        KeyVerdict::Violation { explanation, .. } => explanation,
        other => panic!("expected a violation, got {other:?}"),
    };
    let violation = started.elapsed();
    assert!(explanation.starts_with("#10003 p101 get -> \"end-a\""), "{explanation}");
    assert!(explanation.contains("places 1687 of 1688 completed ops"), "{explanation}");
    // Timings are printed, not asserted: tests never depend on the machine's speed.
    eprintln!("2,000 ops: linearizable in {linearizable:?}, violation found in {violation:?}");
}

/// Timings of 2,000-op keys for various mixes and concurrencies (`MIX=<name>` picks one):
/// `cargo test --release perf_probe -- --ignored --nocapture`.
#[test]
#[ignore]
fn perf_probe() {
    let no_cas = Mix { put: 40, get: 45, delete: 15, ..Mix::default() };
    let mixes = [
        ("default", Mix::default()),
        ("no unknown", Mix { unknown: 0, ..Mix::default() }),
        ("no cas", no_cas),
        ("no delete", Mix { put: 35, get: 40, delete: 0, ..Mix::default() }),
        ("write heavy", Mix { put: 60, get: 20, delete: 10, ..Mix::default() }),
        ("unknown 3%", Mix { unknown: 3, ..Mix::default() }),
        ("small pool", Mix { fresh: 0.5, small_pool: true, ..Mix::default() }),
        ("small pool, no unknown", Mix { fresh: 0.5, small_pool: true, unknown: 0, ..Mix::default() }),
    ];
    let only = std::env::var("MIX").ok();
    for (name, mix) in mixes.into_iter().filter(|(name, _)| only.as_deref().is_none_or(|only| only == *name)) {
        for processes in [5, 10, 20] {
            let ops = generate_mix(&mut StdRng::seed_from_u64(7), 2000, processes, &["k"], mix);
            let started = Instant::now();
            let good = check_key(&ops, Duration::from_secs(30));
            let good_time = started.elapsed();
            let started = Instant::now();
            let bad = check_key(&with_stale_read_at_end(&ops), Duration::from_secs(30));
            let bad_time = started.elapsed();
            let verdict = |verdict: &KeyVerdict| match verdict {
                KeyVerdict::Linearizable => "linearizable",
                KeyVerdict::Violation { .. } => "violation",
                KeyVerdict::Timeout { .. } => "TIMEOUT",
            };
            eprintln!(
                "{name:>24}, {processes:>2} clients: {} in {good_time:>10.2?}, with a stale read: {} in {bad_time:>10.2?}",
                verdict(&good),
                verdict(&bad)
            );
        }
    }
}

/// Compares the checker with the brute-force and plain searches on many more random histories
/// than the regular tests: `ROUNDS=1000000 SEED=1 cargo test --release oracle_sweep -- --ignored`.
#[test]
#[ignore]
fn oracle_sweep() {
    let rounds: usize = std::env::var("ROUNDS").map_or(100_000, |rounds| rounds.parse().unwrap());
    let mut rng = StdRng::seed_from_u64(std::env::var("SEED").map_or(1, |seed| seed.parse().unwrap()));
    for round in 0..rounds {
        let (ops, expected) = match round % 4 {
            0 => (small_random_history(&mut rng, 7, &["a", "b"], 20), None),
            1 => (small_random_history(&mut rng, 8, &["a", "b", "c"], 45), None),
            2 => (small_random_history(&mut rng, 9, &["a", "b"], 60), None),
            _ => {
                let ops = medium_history(&mut rng);
                let expected = plain_search(&ops);
                (ops, Some(expected))
            }
        };
        let expected = expected.unwrap_or_else(|| brute_force(&ops));
        let verdict = check_key_with(&ops, BUDGET, false);
        assert_eq!(verdict == KeyVerdict::Linearizable, expected, "round {round}\n{}", to_json(&ops).unwrap());
    }
}

/// The mix of long chaos runs, scaled down: unique values, 0.2% unknown outcomes, no Cas (a
/// completed Cas that failed keeps every earlier unknown write alive, see the module docs of
/// `search`).
fn long_mix() -> Mix {
    Mix { unknown_permille: 2, fresh: 1.0, put: 40, get: 50, delete: 10, ..Mix::default() }
}

/// Checks a long linearizable history from 8 clients, then the same with one stale read near the
/// end, and returns both durations and the second verdict.
fn check_long(len: usize) -> (Duration, Duration, KeyVerdict) {
    let ops = generate_mix(&mut StdRng::seed_from_u64(11), len, 8, &["k"], long_mix());
    let unknown = ops.iter().filter(|op| op.outcome == Outcome::Unknown).count();
    assert!(unknown >= len / 1000, "{unknown} unknown ops");
    let started = Instant::now();
    assert_eq!(check_key(&ops, Duration::from_secs(300)), KeyVerdict::Linearizable);
    let linearizable = started.elapsed();

    // A read near the end returns the value before the last completed put that preceded it.
    let mut bad = ops.clone();
    let reader = (len - 200..len).find(|&i| ops[i].outcome == Outcome::Ok && matches!(ops[i].kind, OpKind::Get { .. }));
    let reader = reader.expect("a completed get near the end");
    let mut puts = (0..reader).rev().filter(|&i| {
        ops[i].outcome == Outcome::Ok
            && matches!(ops[i].kind, OpKind::Put { .. })
            && ops[i].complete_ns < ops[reader].invoke_ns
    });
    let last = puts.next().expect("a put before the read");
    let before = puts.find(|&i| ops[i].complete_ns < ops[last].invoke_ns).expect("a put before that one");
    let OpKind::Put { value } = &ops[before].kind else { unreachable!() };
    bad[reader].kind = OpKind::Get { result: Some(value.clone()) };
    let started = Instant::now();
    let verdict = check_key(&bad, Duration::from_secs(300));
    (linearizable, started.elapsed(), verdict)
}

/// A 30,000-op key from 8 clients checks in about a second even unoptimized: memo keys stay
/// small however long the history.
#[test]
fn thirty_thousand_ops_on_one_key() {
    let (linearizable, violation, verdict) = check_long(30_000);
    assert!(verdict.is_violation(), "{verdict:?}");
    let bound = if cfg!(debug_assertions) { Duration::from_secs(20) } else { Duration::from_secs(3) };
    assert!(linearizable < bound && violation < bound, "{linearizable:?}, {violation:?}");
}

/// The same with 200,000 ops: `cargo test --release two_hundred -- --ignored --nocapture`.
///
/// Known limit: refuting the stale read means exhausting every configuration back to the start,
/// and the memo outgrows its budget first, so that verdict may be a Timeout (never Linearizable).
#[test]
#[ignore]
fn two_hundred_thousand_ops_on_one_key() {
    let (linearizable, violation, verdict) = check_long(200_000);
    eprintln!("200,000 ops: linearizable in {linearizable:?}; stale read: {:?} in {violation:?}", verdict.key());
    assert!(verdict != KeyVerdict::Linearizable);
    assert!(linearizable < Duration::from_secs(60));
}
