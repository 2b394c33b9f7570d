//! The search for a linearization of one key: Wing & Gong's backtracking search with Lowe's
//! memoization, plus reductions that keep unknown (timed-out) writes from blowing it up.
//!
//! # Configurations and candidates
//!
//! The search builds a linearization front to back. A *configuration* is the set of entries
//! linearized so far and the register state they leave. From a configuration, an outstanding entry
//! `x` may go next iff no outstanding entry must precede it in real time, i.e. iff `x` is invoked no
//! later than the earliest deadline among the outstanding completed entries. (An op completed at
//! `t` precedes one invoked after `t`; equal instants count as concurrent. Unknown writes have no
//! deadline.) Those are the *candidates*. A candidate whose step rejects its recorded result in the
//! current state is skipped; when none is left, the search backtracks. It succeeds once every
//! completed entry is linearized: unknown writes still outstanding are taken never to have happened.
//!
//! Lowe's memoization: what can follow a configuration depends only on the configuration, not on
//! the order that reached it, so each one is explored at most once (see [`super::memo`]). Without
//! it, `k` concurrent writes would be explored in all `k!` orders.
//!
//! # Reductions
//!
//! Each of these prunes orders without changing the verdict: whenever some completion of a
//! configuration exists, one that the search tries exists too.
//!
//! 1. **Reads first.** A candidate read (a get, or a Cas that reported failure) that fits the
//!    current state is linearized next, and nothing else is tried in its place ("forced"). Moving
//!    it to the front of any completion keeps the completion valid: it does not change the state,
//!    and as a candidate, nothing outstanding must precede it.
//! 2. **Unknown writes only where needed.** Say an entry `y` *needs* an unknown write `w` if `y`
//!    fits right after `w` but not right before it. In any completion, an unknown write that is not
//!    immediately followed by an entry needing it can be removed (it changes nothing, or the next
//!    entry is a put or delete, or it is last) or swapped one place later (the next entry is a
//!    failed Cas that fits either way), without changing any result or breaking real-time order,
//!    since `w` has no deadline. Repeating this gives a completion in which every unknown write is
//!    immediately followed by an entry that needs it, so those are the only ones the search
//!    tries: after linearizing an unknown write, the configuration carries a *restriction* (the
//!    state before the write), and the next entry must not fit that state. An unknown write is
//!    only tried if some candidate wants the state it writes ([`Wanted`]), and only after the
//!    completed candidates, so that leaving it out is explored first.
//! 3. **Dead unknown writes.** An unknown write that no outstanding entry could need (see
//!    [`Step::could_need`]) will never be tried again. It leaves the outstanding list, and for the
//!    memo it counts as settled, like a linearized entry: configurations that differ only in
//!    whether it happened are the same.
//! 4. **Twins.** Two outstanding unknown writes with the same step, both already invoked, are
//!    interchangeable; only the first in invocation order is tried.
//! 5. **Dominance.** A configuration in which some unknown writes are linearized has no completion
//!    that the same configuration with those writes left outstanding lacks (they can simply never
//!    happen). So if the latter was explored without success, the former is skipped.
//!
//! # Invariants of the implementation
//!
//! - Outstanding entries sit in intrusive doubly linked lists: completed ones by invocation and by
//!   deadline, live unknown ones by invocation. Linearizing or killing an entry unlinks it, and
//!   backtracking relinks it; all of this is strictly LIFO, so an unlinked node's own links stay
//!   valid and relinking is O(1) ("dancing links"). The candidates are a prefix of each
//!   invocation list, up to the deadline at the head of the deadline list.
//! - The explicit stack holds the linearized entries in order, each with the state before it, so
//!   the search needs no recursion (keys have thousands of ops).
//! - `set_print` is always the Zobrist fingerprint of the settled set (linearized or dead).

use std::collections::HashMap;
use std::time::Instant;

use super::memo::{member_print, Memo};
use super::model::{Entry, State, Step, ABSENT};

/// How many search steps run between looks at the clock (reading it every step would dominate).
const STEPS_PER_CLOCK_CHECK: u64 = 1024;

/// "No restriction": any entry may go next.
const UNRESTRICTED: State = State::MAX;

/// Up to this many linearized live unknown writes, dominance tries every subset of them left
/// outstanding; beyond, each of the most recent ones alone, and the most recent ones together.
const DOMINANCE_ALL_SUBSETS_UP_TO: usize = 3;

/// The most memo lookups one dominance check makes.
const DOMINANCE_MAX_PROBES: usize = 32;

pub(crate) enum SearchResult {
    Linearizable,
    /// No linearization exists. `deepest` is the linearized prefix (entry indices, in order) that
    /// placed the most completed entries.
    Violation {
        deepest: Vec<usize>,
    },
    /// Out of time or memory.
    Exhausted,
}

/// Searches for a linearization of `entries` (sorted by invocation), giving up at `deadline` or
/// when the memo exceeds `max_memo_bytes`.
pub(crate) fn search(entries: &[Entry], deadline: Option<Instant>, max_memo_bytes: usize) -> SearchResult {
    Search::new(entries).run(deadline, max_memo_bytes)
}

/// A circular doubly linked list over node indices `0..len`, with node `len` as its head. Nodes
/// are unlinked and relinked in LIFO order, which keeps relinking O(1).
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    /// A list of `members`, in the order given, over nodes `0..len`.
    fn new(len: usize, members: impl IntoIterator<Item = usize>) -> Links {
        let head = len;
        let (mut next, mut prev) = (vec![head; len + 1], vec![head; len + 1]);
        let mut last = head;
        for node in members {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        next[last] = head;
        prev[head] = last;
        Links { next, prev }
    }

    fn head(&self) -> usize {
        self.next.len() - 1
    }

    fn first(&self) -> Option<usize> {
        self.after(self.head())
    }

    fn after(&self, node: usize) -> Option<usize> {
        let next = self.next[node];
        (next != self.head()).then_some(next)
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Undoes the most recent `unlink` still in effect, which must have been of `node`.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }
}

/// A set of entries.
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn get(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }
}

/// A linearized entry, the register state before it, and whether it was forced (reduction 1: if
/// it leads nowhere, neither does the configuration before it).
struct Frame {
    entry: usize,
    before: State,
    forced: bool,
    /// Where to resume the scan of the configuration before this entry, once it is undone.
    resume: Cursor,
}

/// Where the scan of a configuration's candidates is.
#[derive(Clone, Copy)]
enum Cursor {
    /// A configuration just entered: look for a read that fits first.
    Fresh,
    /// Scanning completed candidates, next at this one.
    Required(Option<usize>),
    /// Scanning the unknown writes of the wanted states: next at this index of the wanted states,
    /// and this index of their writers.
    Wanted(usize, usize),
    /// Scanning all live unknown candidates (any state is wanted), next at this one.
    AnyUnknown(Option<usize>),
    /// No candidate left: backtrack.
    Done,
}

/// The states that candidates at a configuration fit in but the current one is not: what an
/// unknown write must produce to be worth trying there (reduction 2).
#[derive(Default)]
struct Wanted {
    states: Vec<State>,
    /// A failed Cas expecting the current state is a candidate: any other state would do.
    any: bool,
}

struct Search<'m> {
    entries: &'m [Entry],
    /// Outstanding completed entries, by invocation.
    required: Links,
    /// Outstanding live unknown entries, by invocation.
    unknown: Links,
    /// Outstanding completed entries, by deadline.
    deadlines: Links,
    required_total: usize,
    required_left: usize,
    /// The linearized unknown entries, in order.
    unknown_stack: Vec<usize>,
    linearized: Bitset,
    /// Unknown entries that no outstanding entry could need (reduction 3).
    dead: Bitset,
    /// The entries dead from the start: settled in every configuration, so left out of memo keys.
    dead_at_start: Bitset,
    /// Per stack depth (and for a configuration being entered), one past the highest entry that
    /// is settled but not dead from the start (0 if none): where memo keys stop.
    settled_end: Vec<usize>,
    /// For each entry, the unknown entries it could need.
    needed_by: Vec<Vec<usize>>,
    /// For each unknown entry, how many outstanding entries could need it.
    live_needers: Vec<usize>,
    /// The unknown entries writing each state, in invocation order.
    writers: HashMap<State, Vec<usize>>,
    /// For each state, how many outstanding entries reference it (see [`referenced_by`]).
    references: Vec<usize>,
    /// The Zobrist fingerprint of the settled set (linearized or dead).
    set_print: u64,
    state: State,
    stack: Vec<Frame>,
    /// Per stack depth, what the candidates of the configuration there want of unknown writes;
    /// None until needed.
    wanted: Vec<Option<Wanted>>,
    memo: Memo,
    /// The prefix that placed the most completed entries so far, and how many it placed.
    deepest: Vec<usize>,
    deepest_placed: usize,
}

impl<'m> Search<'m> {
    fn new(entries: &'m [Entry]) -> Self {
        let n = entries.len();
        let is_required = |e: &usize| entries[*e].deadline.is_some();
        let mut by_deadline: Vec<usize> = (0..n).filter(is_required).collect();
        by_deadline.sort_by_key(|&e| (entries[e].deadline, e));

        // Which entries could need which unknown writes. An entry that must precede the write in
        // real time (it completed before the write was invoked) cannot come right after it.
        let mut needed_by = vec![Vec::new(); n];
        let mut live_needers = vec![0; n];
        let mut dead = Bitset::new(n);
        let mut set_print = 0;
        let mut writers: HashMap<State, Vec<usize>> = HashMap::new();
        for w in (0..n).filter(|e| !is_required(e)) {
            let written = written_by(entries[w].step);
            writers.entry(written).or_default().push(w);
            for (y, entry) in entries.iter().enumerate() {
                let may_follow = entry.deadline.is_none_or(|deadline| deadline >= entries[w].invoke);
                if y != w && may_follow && entry.step.could_need(written) {
                    needed_by[y].push(w);
                    live_needers[w] += 1;
                }
            }
            if live_needers[w] == 0 {
                dead.set(w);
                set_print ^= member_print(w);
            }
        }

        let states = entries.iter().map(|entry| max_state(entry.step)).max().map_or(1, |max| max as usize + 1);
        let mut references = vec![0; states];
        for entry in entries {
            if let Some(state) = referenced_by(entry.step) {
                references[state as usize] += 1;
            }
        }

        Search {
            entries,
            required: Links::new(n, (0..n).filter(is_required)),
            unknown: Links::new(n, (0..n).filter(|&e| !is_required(&e) && !dead.get(e))),
            deadlines: Links::new(n, by_deadline.iter().copied()),
            required_total: by_deadline.len(),
            required_left: by_deadline.len(),
            unknown_stack: Vec::new(),
            linearized: Bitset::new(n),
            dead_at_start: Bitset(dead.0.clone()),
            dead,
            settled_end: Vec::with_capacity(n + 1),
            needed_by,
            live_needers,
            writers,
            references,
            set_print,
            state: ABSENT,
            stack: Vec::with_capacity(n),
            wanted: (0..=n).map(|_| None).collect(),
            memo: Memo::default(),
            deepest: Vec::new(),
            deepest_placed: 0,
        }
    }

    fn run(mut self, deadline: Option<Instant>, max_memo_bytes: usize) -> SearchResult {
        let mut cursor = Cursor::Fresh;
        let mut until_clock_check = STEPS_PER_CLOCK_CHECK;
        while self.required_left > 0 {
            until_clock_check -= 1;
            if until_clock_check == 0 {
                until_clock_check = STEPS_PER_CLOCK_CHECK;
                if self.memo.bytes() > max_memo_bytes || deadline.is_some_and(|d| Instant::now() >= d) {
                    return SearchResult::Exhausted;
                }
            }
            let first_due = self.deadlines.first().expect("completed entries remain outstanding");
            let limit = self.entries[first_due].deadline.expect("only completed entries have deadlines");
            let is_candidate = |e: &usize| self.entries[*e].invoke <= limit;
            cursor = match cursor {
                Cursor::Fresh => match self.fitting_read(limit) {
                    Some(e) if self.linearize(e, true, Cursor::Done) => Cursor::Fresh,
                    // The configuration after the read was explored before, without success.
                    Some(_) => Cursor::Done,
                    None => Cursor::Required(self.required.first()),
                },
                Cursor::Required(Some(e)) if is_candidate(&e) => {
                    // After undoing `e`, the scan goes on after it; the list is as it is now by then.
                    let resume = Cursor::Required(self.required.after(e));
                    match self.linearize(e, false, resume) {
                        true => Cursor::Fresh,
                        false => resume,
                    }
                }
                Cursor::Required(_) => {
                    let wanted = self.wanted(limit);
                    match (wanted.any, wanted.states.is_empty()) {
                        (true, _) => Cursor::AnyUnknown(self.unknown.first()),
                        (false, true) => Cursor::Done,
                        (false, false) => Cursor::Wanted(0, 0),
                    }
                }
                Cursor::Wanted(state_index, writer_index) => self.scan_wanted(state_index, writer_index, limit),
                Cursor::AnyUnknown(Some(e)) if is_candidate(&e) => {
                    let resume = Cursor::AnyUnknown(self.unknown.after(e));
                    match self.linearize(e, false, resume) {
                        true => Cursor::Fresh,
                        false => resume,
                    }
                }
                Cursor::AnyUnknown(_) | Cursor::Done => match self.backtrack() {
                    Some(resume) => resume,
                    None => return SearchResult::Violation { deepest: self.deepest },
                },
            };
        }
        SearchResult::Linearizable
    }

    /// After an unknown write, the state before it: the next entry must need the write.
    fn restriction(&self) -> Option<State> {
        let top = self.stack.last()?;
        self.entries[top.entry].deadline.is_none().then_some(top.before)
    }

    /// A candidate read (a get, or a failed Cas) that fits the current state and the restriction.
    fn fitting_read(&self, limit: u64) -> Option<usize> {
        let restriction = self.restriction();
        let mut next = self.required.first();
        while let Some(e) = next.filter(|&e| self.entries[e].invoke <= limit) {
            let step = self.entries[e].step;
            if step.is_read()
                && step.apply(self.state).is_some()
                && restriction.is_none_or(|before| step.apply(before).is_none())
            {
                return Some(e);
            }
            next = self.required.after(e);
        }
        None
    }

    /// What the candidates of the current configuration want of unknown writes, computed once per
    /// configuration.
    fn wanted(&mut self, limit: u64) -> &Wanted {
        let depth = self.stack.len();
        if self.wanted[depth].is_none() {
            let mut wanted = Wanted::default();
            let state = self.state;
            let mut want = |seen: State| {
                if seen != state && !wanted.states.contains(&seen) {
                    wanted.states.push(seen);
                }
            };
            for list in [&self.required, &self.unknown] {
                let mut next = list.first();
                while let Some(y) = next.filter(|&y| self.entries[y].invoke <= limit) {
                    match self.entries[y].step {
                        Step::Read(seen) => want(seen),
                        Step::CasSucceeded { expect, .. } | Step::CasMaybe { expect, .. } => want(expect),
                        Step::CasFailed { expect } if expect == state => wanted.any = true,
                        Step::CasFailed { .. } | Step::Write(_) => {}
                    }
                    next = list.after(y);
                }
            }
            self.wanted[depth] = Some(wanted);
        }
        self.wanted[depth].as_ref().expect("computed above")
    }

    /// Tries the next unknown write of a wanted state, from the given position in the wanted
    /// states and their writers (in invocation order), and returns the cursor to go on with.
    fn scan_wanted(&mut self, mut state_index: usize, mut writer_index: usize, limit: u64) -> Cursor {
        let depth = self.stack.len();
        loop {
            let wanted = self.wanted[depth].as_ref().expect("computed before the scan");
            let Some(&state) = wanted.states.get(state_index) else { return Cursor::Done };
            let writers = self.writers.get(&state).map_or(&[][..], Vec::as_slice);
            match writers.get(writer_index) {
                // Writers are in invocation order: the rest are not candidates yet.
                Some(&w) if self.entries[w].invoke <= limit => {
                    let resume = Cursor::Wanted(state_index, writer_index + 1);
                    let outstanding = !self.linearized.get(w) && !self.dead.get(w);
                    if outstanding && self.linearize(w, false, resume) {
                        return Cursor::Fresh;
                    }
                    writer_index += 1;
                }
                _ => (state_index, writer_index) = (state_index + 1, 0),
            }
        }
    }

    /// Whether an outstanding unknown write before `e` is its twin (reduction 4). Both are
    /// candidates, since the unknown list is in invocation order.
    fn has_earlier_twin(&self, e: usize) -> bool {
        let step = self.entries[e].step;
        let mut next = self.unknown.first();
        while let Some(other) = next.filter(|&other| other != e) {
            if self.are_twins(step, self.entries[other].step) {
                return true;
            }
            next = self.unknown.after(other);
        }
        false
    }

    /// Whether two outstanding candidate unknown writes are interchangeable from the current
    /// configuration on: they are equal, or they apply in the same states (both puts or deletes,
    /// or both a Cas expecting the same state) and write states that no outstanding entry
    /// references (see [`referenced_by`]) and that differ from the current one. No outstanding
    /// entry can tell such states apart, so which of the two writes happens makes no difference.
    fn are_twins(&self, a: Step, b: Step) -> bool {
        let unreferenced = |written: State| written != self.state && self.references[written as usize] == 0;
        match (a, b) {
            _ if a == b => true,
            (Step::Write(x), Step::Write(y)) => unreferenced(x) && unreferenced(y),
            (Step::CasMaybe { expect: e, new: x }, Step::CasMaybe { expect: f, new: y }) => {
                e == f && unreferenced(x) && unreferenced(y)
            }
            _ => false,
        }
    }

    /// Tries to linearize candidate `e` next. Returns false, changing nothing, if it does not fit
    /// the current state or the restriction, or if it leads to a configuration explored before.
    fn linearize(&mut self, e: usize, forced: bool, resume: Cursor) -> bool {
        let entry = self.entries[e];
        let Some(after) = entry.step.apply(self.state) else { return false };
        if self.restriction().is_some_and(|before| entry.step.apply(before).is_some()) {
            return false;
        }
        let required = entry.deadline.is_some();
        if !required && (after == self.state || self.has_earlier_twin(e)) {
            return false;
        }

        self.linearized.set(e);
        self.set_print ^= member_print(e);
        let died_end = self.settle_needs(e);
        let end = self.settled_end.last().map_or(0, |&end| end).max(e + 1).max(died_end);
        self.settled_end.push(end);
        let restriction = if required { UNRESTRICTED } else { self.state };
        if self.explored(after, restriction) {
            self.settled_end.pop();
            self.unsettle_needs(e);
            self.set_print ^= member_print(e);
            self.linearized.clear(e);
            return false;
        }

        self.stack.push(Frame { entry: e, before: self.state, forced, resume });
        if let Some(state) = referenced_by(entry.step) {
            self.references[state as usize] -= 1;
        }
        self.wanted[self.stack.len()] = None;
        self.state = after;
        if required {
            self.required.unlink(e);
            self.deadlines.unlink(e);
            self.required_left -= 1;
            let placed = self.required_total - self.required_left;
            if placed > self.deepest_placed {
                self.deepest_placed = placed;
                self.deepest = self.stack.iter().map(|frame| frame.entry).collect();
            }
        } else {
            self.unknown.unlink(e);
            self.unknown_stack.push(e);
        }
        true
    }

    /// Undoes the last linearization and returns where to resume the scan of the configuration
    /// before it, or None if nothing is left to undo. A forced entry is undone together with the
    /// one before it.
    fn backtrack(&mut self) -> Option<Cursor> {
        loop {
            let Frame { entry: e, before, forced, resume } = self.stack.pop()?;
            if let Some(state) = referenced_by(self.entries[e].step) {
                self.references[state as usize] += 1;
            }
            if self.entries[e].deadline.is_some() {
                self.deadlines.relink(e);
                self.required.relink(e);
                self.required_left += 1;
            } else {
                self.unknown.relink(e);
                self.unknown_stack.pop();
            }
            self.unsettle_needs(e);
            self.settled_end.pop();
            self.set_print ^= member_print(e);
            self.linearized.clear(e);
            self.state = before;
            if !forced {
                return Some(resume);
            }
        }
    }

    /// Records that `e` is no longer outstanding, for the unknown writes it could need. Those that
    /// die leave the outstanding list (if still in it) and become settled. Returns one past the
    /// highest entry that died (0 if none).
    fn settle_needs(&mut self, e: usize) -> usize {
        let mut died_end = 0;
        for &w in &self.needed_by[e] {
            self.live_needers[w] -= 1;
            if self.live_needers[w] == 0 {
                died_end = died_end.max(w + 1);
                self.dead.set(w);
                if !self.linearized.get(w) {
                    self.unknown.unlink(w);
                    self.set_print ^= member_print(w);
                }
            }
        }
        died_end
    }

    /// Undoes [`Self::settle_needs`], in reverse order to keep relinking LIFO.
    fn unsettle_needs(&mut self, e: usize) {
        for &w in self.needed_by[e].iter().rev() {
            if self.live_needers[w] == 0 {
                self.dead.clear(w);
                if !self.linearized.get(w) {
                    self.unknown.relink(w);
                    self.set_print ^= member_print(w);
                }
            }
            self.live_needers[w] += 1;
        }
    }

    /// The memo key of the settled set (linearized or dead) with the live unknown writes in
    /// `removed` (linearized ones) taken out again.
    ///
    /// Entries dead from the start are settled in every configuration and left out. What is left is
    /// encoded relative to the *frontier* `f`, the first completed entry not linearized: every
    /// completed entry before it is linearized, so before it only the unsettled unknown writes
    /// (the *holes*) need listing, and from it on the settled entries cluster within the few that
    /// were concurrent with it. The key is `[f, number of holes, holes (two per word)..., the words of the settled
    /// bitset from the one holding f up to the last non-zero one]`. It is a function of the settled
    /// set (so equal sets give equal keys) and determines it (below `f`: everything but the dead
    /// from the start and the holes), so the memo stays exact, and its length is independent of the
    /// history's length for a narrow frontier.
    ///
    /// Called from [`Self::linearize`] between marking the new entry linearized and unlinking it.
    fn settled_key(&self, removed: &[usize]) -> Vec<u64> {
        let mut frontier = self.required.first();
        while let Some(f) = frontier.filter(|&f| self.linearized.get(f)) {
            frontier = self.required.after(f);
        }
        let frontier = frontier.unwrap_or(self.entries.len());
        let mut holes: Vec<usize> = removed.iter().copied().filter(|&w| w < frontier).collect();
        let mut next = self.unknown.first();
        while let Some(w) = next.filter(|&w| w < frontier) {
            if !self.linearized.get(w) {
                holes.push(w);
            }
            next = self.unknown.after(w);
        }
        holes.sort_unstable();
        let mut key = Vec::with_capacity(holes.len() / 2 + 8);
        key.extend([frontier as u64, holes.len() as u64]);
        // Two holes per word (entry indices fit in 32 bits in any history that fits in memory).
        key.extend(holes.chunks(2).map(|pair| pair.iter().fold(0, |word, &w| (word << 32) | w as u64)));
        let first_word = frontier / 64;
        let end_word = self.settled_end.last().map_or(0, |&end| end.div_ceil(64));
        let tail_start = key.len();
        for i in first_word..end_word.max(first_word) {
            let (done, dead, dead_at_start) = (self.linearized.0[i], self.dead.0[i], self.dead_at_start.0[i]);
            key.push(done | (dead & !dead_at_start));
        }
        for &w in removed.iter().filter(|&&w| w >= frontier) {
            key[tail_start + w / 64 - first_word] &= !(1 << (w % 64));
        }
        while key.len() > tail_start && key.last() == Some(&0) {
            key.pop();
        }
        key
    }

    /// Whether the current settled set with `state` and `restriction` was explored before, or is
    /// dominated by one that was (reduction 5). If neither, records it as explored.
    fn explored(&mut self, state: State, restriction: State) -> bool {
        if self.memo.contains(self.set_print, || self.settled_key(&[]), state, restriction)
            || (restriction == UNRESTRICTED && self.dominated(state))
        {
            return true;
        }
        self.memo.insert(self.set_print, self.settled_key(&[]), state, restriction);
        false
    }

    /// Whether the memo holds the current (unrestricted) configuration with some of its
    /// linearized, live unknown writes left outstanding instead.
    fn dominated(&self, state: State) -> bool {
        // Most recent first: the configurations that dominate this one usually differ from it in
        // the last few choices.
        let live_done: Vec<usize> = self.unknown_stack.iter().rev().copied().filter(|&w| !self.dead.get(w)).collect();
        let probe = |members: &[usize]| {
            let print = members.iter().fold(self.set_print, |print, &w| print ^ member_print(w));
            let set = || self.settled_key(members);
            self.memo.contains(print, set, state, UNRESTRICTED)
        };
        let len = live_done.len();
        if len <= DOMINANCE_ALL_SUBSETS_UP_TO {
            (1..1usize << len).any(|mask| {
                let subset: Vec<usize> = (0..len).filter(|i| mask & (1 << i) != 0).map(|i| live_done[i]).collect();
                probe(&subset)
            })
        } else {
            // Each one alone, and the most recent ones together.
            let probes = len.min(DOMINANCE_MAX_PROBES / 2);
            live_done[..probes].iter().any(|&w| probe(&[w]))
                || (2..=probes).any(|count| probe(&live_done[..count]))
                || (probes < len && probe(&live_done))
        }
    }
}

/// The state an unknown entry writes.
fn written_by(step: Step) -> State {
    match step {
        Step::Write(new) | Step::CasMaybe { new, .. } => new,
        step => unreachable!("unknown entries are writes (unknown reads are dropped), got {step:?}"),
    }
}

/// The state a step compares the register with, if any: a get's result, a Cas's expected value.
/// (A failed Cas references its expected value too: it tells that state apart from the others.)
fn referenced_by(step: Step) -> Option<State> {
    match step {
        Step::Read(seen) => Some(seen),
        Step::CasSucceeded { expect, .. } | Step::CasFailed { expect } | Step::CasMaybe { expect, .. } => Some(expect),
        Step::Write(_) => None,
    }
}

/// The largest state a step mentions.
fn max_state(step: Step) -> State {
    match step {
        Step::Write(state) | Step::Read(state) | Step::CasFailed { expect: state } => state,
        Step::CasSucceeded { expect, new } | Step::CasMaybe { expect, new } => expect.max(new),
    }
}
