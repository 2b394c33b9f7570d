//! The load generator: writes from the page, `in_flight` at a time, at `rate` writes per second (0 = as fast as
//! they are acknowledged), to the leader or to one chosen node (a follower forwards to the leader).
//!
//! Every write goes to its own key, `lab/load/<page>/<seq>` with the value `<seq>`, so the experiments can read
//! back every write the page made and say which acknowledged write, if any, was lost. Each write is recorded with
//! its start and end times and its outcome: acknowledged, failed (certainly not applied) or unknown (the answer was
//! lost; it may still be committed).

use std::time::Duration;

use leptos::{prelude::*, task::spawn_local};

use crate::{
    api::Node,
    lab::model::WriteRecord,
    model::{failure_outcome, Outcome},
    state::Dashboard,
};

/// Deadline of one generated write: long enough to ride out an election, short enough to show as unknown soon.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(3);
/// Records kept (oldest dropped first).
const RECORD_CAP: usize = 300_000;
/// Pause after a failed write, so a dead target is not hammered.
const BACKOFF: Duration = Duration::from_millis(50);

#[derive(Clone, Debug, PartialEq)]
pub struct LoadConfig {
    /// Writes per second over all workers; 0 = as fast as possible.
    pub rate: u32,
    /// Writes in flight at once.
    pub in_flight: u32,
    /// The node URL to write to; empty = the leader.
    pub target: String,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self { rate: 0, in_flight: 4, target: String::new() }
    }
}

/// Wall-clock milliseconds: the nodes' event times are on the same clock (on one machine).
pub fn wall_ms() -> f64 {
    js_sys::Date::now()
}

#[derive(Clone, Copy)]
pub struct Load {
    pub running: RwSignal<bool>,
    pub config: RwSignal<LoadConfig>,
    /// Every write made, in the order started (so by `seq`).
    records: StoredValue<Vec<WriteRecord>>,
    /// When the generator ran: (start, end; None while running).
    spans: StoredValue<Vec<(f64, Option<f64>)>>,
    /// Identifies this page's keys.
    page: StoredValue<u64>,
    next_seq: StoredValue<u64>,
    /// The next write slot when rate-limited.
    next_slot: StoredValue<f64>,
    /// Bumped on every start and stop: workers of an older generation stop.
    generation: StoredValue<u64>,
    /// Writes started and not finished.
    pub pending: RwSignal<u32>,
}

impl Load {
    pub fn new() -> Self {
        Self {
            running: RwSignal::new(false),
            config: RwSignal::new(LoadConfig::default()),
            records: StoredValue::new(Vec::new()),
            spans: StoredValue::new(Vec::new()),
            page: StoredValue::new(wall_ms() as u64),
            next_seq: StoredValue::new(1),
            next_slot: StoredValue::new(0.0),
            generation: StoredValue::new(0),
            pending: RwSignal::new(0),
        }
    }

    /// The key of write `seq`.
    pub fn key(&self, seq: u64) -> String {
        format!("lab/load/{}/{seq:012}", self.page.get_value())
    }

    /// The sequence number the next write will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.get_value()
    }

    pub fn with_records<T>(&self, f: impl FnOnce(&[WriteRecord]) -> T) -> T {
        self.records.with_value(|r| f(r))
    }

    /// Did the generator run throughout [`from`, `to`]?
    pub fn ran_throughout(&self, from: f64, to: f64) -> bool {
        self.spans.with_value(|s| s.iter().any(|&(a, b)| a <= from && b.is_none_or(|b| b >= to)))
    }

    /// The running spans that overlap [`from`, `to`], clipped to it.
    pub fn spans_within(&self, from: f64, to: f64) -> Vec<(f64, f64)> {
        self.spans.with_value(|s| {
            s.iter().map(|&(a, b)| (a.max(from), b.unwrap_or(to).min(to))).filter(|(a, b)| a < b).collect()
        })
    }

    pub fn start(self, dash: Dashboard) {
        if self.running.get_untracked() {
            return;
        }
        let generation = self.generation.get_value() + 1;
        self.generation.set_value(generation);
        self.spans.update_value(|s| s.push((wall_ms(), None)));
        self.next_slot.set_value(wall_ms());
        self.running.set(true);
        let workers = self.config.get_untracked().in_flight.clamp(1, 256);
        for _ in 0..workers {
            spawn_local(self.worker(generation, dash));
        }
    }

    pub fn stop(self) {
        if !self.running.get_untracked() {
            return;
        }
        self.generation.update_value(|g| *g += 1);
        self.spans.update_value(|s| {
            if let Some(last) = s.last_mut() {
                last.1.get_or_insert(wall_ms());
            }
        });
        self.running.set(false);
    }

    /// Waits until every write before `seq` has its outcome (or `limit` passed).
    pub async fn settled(self, seq: u64, limit: Duration) {
        let until = wall_ms() + limit.as_millis() as f64;
        let pending =
            || self.records.with_value(|r| r.iter().rev().any(|r| r.seq < seq && r.outcome == Outcome::Pending));
        while pending() && wall_ms() < until {
            gloo_timers::future::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn worker(self, generation: u64, dash: Dashboard) {
        while self.generation.get_value() == generation {
            let config = self.config.get_untracked();
            if config.rate > 0 {
                let now = wall_ms();
                let slot = self.next_slot.get_value().max(now);
                self.next_slot.set_value(slot + 1000.0 / f64::from(config.rate));
                if slot > now {
                    gloo_timers::future::sleep(Duration::from_millis((slot - now) as u64)).await;
                }
                if self.generation.get_value() != generation {
                    break;
                }
            }
            let Some(url) = dash.target(&config.target) else {
                gloo_timers::future::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let seq = self.next_seq.get_value();
            self.next_seq.set_value(seq + 1);
            let started = wall_ms();
            self.records.update_value(|r| {
                if r.len() >= RECORD_CAP {
                    r.drain(..RECORD_CAP / 10);
                }
                r.push(WriteRecord { seq, started, ended: None, outcome: Outcome::Pending });
            });
            self.pending.update(|p| *p += 1);
            let result = Node::new(url).put_within(&self.key(seq), &seq.to_string(), WRITE_DEADLINE).await;
            let ended = wall_ms();
            let outcome = match &result {
                Ok(_) => Outcome::Ok,
                Err(e) => failure_outcome(true, e.code()),
            };
            self.records.update_value(|r| {
                if let Ok(i) = r.binary_search_by_key(&seq, |r| r.seq) {
                    r[i].ended = Some(ended);
                    r[i].outcome = outcome.clone();
                }
            });
            self.pending.update(|p| *p -= 1);
            if outcome != Outcome::Ok {
                gloo_timers::future::sleep(BACKOFF).await;
            }
        }
    }
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}
