//! The page's shared state (reactive signals) and the background loops that keep it live: discovery of the nodes,
//! a Status poll per node (10 a second: the graph's messages and election timers come from it), a log poll per
//! node, one event stream per node, and the samples of the cluster's past that the timeline replays. Each node is
//! polled on its own, so one dead or frozen node never stalls the others.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use leptos::{prelude::*, task::spawn_local};
use raftkv_proto::{self as pb, dashboard::NodeInfo};

use crate::{
    api::{self, control, Node},
    lab::{
        load::{wall_ms, Load},
        model::{leader_claim, messages_between, sample_of, LeaderClaim, Message, Sample},
    },
    model::{self, ClusterView, NodeSlot, OpRecord, Outcome, TrafficView},
};

/// Entries of each node's log shown in the grid.
pub const LOG_WIDTH: u32 = 24;
/// Events kept in the page (all nodes together).
const EVENT_CAP: usize = 600;
/// Operations kept in the history.
const HISTORY_CAP: usize = 1000;
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// How long the graph shows a message flying.
pub const MESSAGE_FLIGHT_MS: f64 = 450.0;
/// The past the timeline can replay.
pub const HISTORY_MS: f64 = 5.0 * 60_000.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Charts and the timeline redraw this often (the graph follows every Status answer).
const TICK_EVERY: Duration = Duration::from_millis(250);
const LOG_EVERY: Duration = Duration::from_millis(1000);
const DISCOVER_EVERY: Duration = Duration::from_millis(1000);
/// An event stream this quiet is reopened (it resumes after the last event seen).
const EVENTS_QUIET: Duration = Duration::from_secs(30);

/// A message the graph draws, from when it was seen.
#[derive(Clone, Debug, PartialEq)]
pub struct Flying {
    pub id: u64,
    pub at: f64,
    pub message: Message,
}

/// One event as the page keeps it: which node said it.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenEvent {
    pub node: String,
    pub node_id: Option<u64>,
    pub event: pb::NodeEvent,
}

impl SeenEvent {
    /// What the event says about leadership, if anything.
    pub fn leader_claim(&self) -> Option<LeaderClaim> {
        leader_claim(pb::EventKind::try_from(self.event.kind).unwrap_or_default(), &self.event.message)
    }
}

#[derive(Clone, Copy)]
pub struct Dashboard {
    /// The server that served the page controls the processes (`raftkv cluster`).
    pub control: RwSignal<bool>,
    pub slots: RwSignal<Vec<NodeSlot>>,
    /// Each node's recent log, by node id.
    pub logs: RwSignal<BTreeMap<u64, pb::LogEntriesResponse>>,
    pub events: RwSignal<Vec<SeenEvent>>,
    pub history: RwSignal<Vec<OpRecord>>,
    /// The result of the last action (kill, promote, ...), shown in the header until the next one.
    pub notice: RwSignal<Option<String>>,
    /// Set while the server that served the page does not answer.
    pub server_problem: RwSignal<Option<String>>,
    /// The current event follower of each node URL (a loop whose token is no longer here stops).
    followers: StoredValue<BTreeMap<String, u64>>,
    pub cluster: Memo<ClusterView>,
    /// The node clicked in the graph (or a log row): the panels that show one node show this one.
    pub selected: RwSignal<Option<u64>>,
    /// The moment the timeline's scrubber is at; None = now.
    pub scrub: RwSignal<Option<f64>>,
    /// Messages in flight in the graph.
    pub messages: RwSignal<Vec<Flying>>,
    next_message: StoredValue<u64>,
    /// Each node's previous per-peer counters and when they were read, by URL.
    last_traffic: StoredValue<BTreeMap<String, (f64, Vec<TrafficView>)>>,
    /// Nodes with a Status call in flight (one at a time per node).
    polling: StoredValue<BTreeSet<String>>,
    /// The cluster every 100 ms, for the last [`HISTORY_MS`].
    samples: StoredValue<Vec<Sample>>,
    /// Bumped 4 times a second: what charts and the timeline redraw on.
    pub tick: RwSignal<u64>,
    pub load: Load,
}

/// `?nodes=URL,URL` in the page address: talk to these nodes, with no controller.
fn nodes_from_query() -> Option<Vec<String>> {
    let search = web_sys::window()?.location().search().ok()?;
    let q = search.trim_start_matches('?');
    let value = q.split('&').find_map(|kv| kv.strip_prefix("nodes="))?;
    let decoded = js_sys::decode_uri_component(value).ok()?.as_string()?;
    let urls: Vec<String> = decoded
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| if s.contains("://") { s.to_string() } else { format!("http://{s}") })
        .collect();
    (!urls.is_empty()).then_some(urls)
}

impl Dashboard {
    pub fn new() -> Self {
        let slots = RwSignal::new(Vec::<NodeSlot>::new());
        Self {
            control: RwSignal::new(false),
            slots,
            logs: RwSignal::new(BTreeMap::new()),
            events: RwSignal::new(Vec::new()),
            history: RwSignal::new(Vec::new()),
            notice: RwSignal::new(None),
            server_problem: RwSignal::new(None),
            followers: StoredValue::new(BTreeMap::new()),
            cluster: Memo::new(move |_| slots.with(|s| model::cluster_view(s))),
            selected: RwSignal::new(None),
            scrub: RwSignal::new(None),
            messages: RwSignal::new(Vec::new()),
            next_message: StoredValue::new(0),
            last_traffic: StoredValue::new(BTreeMap::new()),
            polling: StoredValue::new(BTreeSet::new()),
            samples: StoredValue::new(Vec::new()),
            tick: RwSignal::new(0),
            load: Load::new(),
        }
    }

    /// Reads the recorded samples of the cluster's past (oldest first).
    pub fn with_samples<T>(&self, f: impl FnOnce(&[Sample]) -> T) -> T {
        self.samples.with_value(|s| f(s))
    }

    /// Starts the background loops; call once.
    pub fn start(self) {
        let fixed = nodes_from_query();
        spawn_local(async move {
            loop {
                self.discover(fixed.as_deref()).await;
                gloo_timers::future::sleep(DISCOVER_EVERY).await;
            }
        });
        spawn_local(async move {
            loop {
                self.poll_status();
                gloo_timers::future::sleep(STATUS_EVERY).await;
            }
        });
        spawn_local(async move {
            loop {
                let now = wall_ms();
                let last_term = self.samples.with_value(|s| s.last().map_or(0, |s| s.term));
                let sample = self.cluster.with_untracked(|c| sample_of(now, c, last_term));
                self.samples.update_value(|s| {
                    let old = s.partition_point(|x| x.at < now - HISTORY_MS);
                    s.drain(..old);
                    s.push(sample);
                });
                gloo_timers::future::sleep(SAMPLE_EVERY).await;
            }
        });
        spawn_local(async move {
            loop {
                gloo_timers::future::sleep(TICK_EVERY).await;
                let now = wall_ms();
                if self.messages.with_untracked(|m| m.iter().any(|f| now - f.at > MESSAGE_FLIGHT_MS)) {
                    self.messages.update(|m| m.retain(|f| now - f.at <= MESSAGE_FLIGHT_MS));
                }
                self.tick.update(|t| *t += 1);
            }
        });
        spawn_local(async move {
            loop {
                self.poll_logs().await;
                gloo_timers::future::sleep(LOG_EVERY).await;
            }
        });
    }

    fn urls(&self) -> Vec<String> {
        self.slots.with_untracked(|s| s.iter().map(|s| s.url.clone()).collect())
    }

    /// Learns which nodes exist (and their processes' state) from the page's server or the `?nodes=` list.
    async fn discover(self, fixed: Option<&[String]>) {
        let infos: Vec<(String, Option<NodeInfo>)> = match fixed {
            Some(urls) => urls.iter().map(|u| (u.clone(), None)).collect(),
            None => match control::cluster_info().await {
                Ok(info) => {
                    self.control.set(info.control);
                    self.server_problem.set(None);
                    info.nodes.into_iter().map(|n| (n.url.clone(), Some(n))).collect()
                }
                Err(e) => {
                    self.server_problem.set(Some(format!("cannot reach the dashboard server: {e}")));
                    return;
                }
            },
        };
        let before = self.urls();
        self.slots.update(|slots| {
            let mut old: BTreeMap<String, NodeSlot> = slots.drain(..).map(|s| (s.url.clone(), s)).collect();
            *slots = infos
                .into_iter()
                .map(|(url, info)| {
                    let mut s = old.remove(&url).unwrap_or_else(|| NodeSlot { url: url.clone(), ..Default::default() });
                    if info.is_some() {
                        s.info = info;
                    }
                    s
                })
                .collect();
        });
        let now = self.urls();
        self.followers.update_value(|f| f.retain(|url, _| now.contains(url)));
        for url in now {
            if !before.contains(&url) {
                self.follow_events(url);
            }
        }
    }

    /// Starts a Status call to every node that has none in flight: a node that does not answer holds up only its
    /// own polls.
    fn poll_status(self) {
        for url in self.urls() {
            if !self.polling.try_update_value(|p| p.insert(url.clone())).unwrap_or(false) {
                continue;
            }
            spawn_local(async move {
                let r = Node::new(url.clone()).status().await;
                if let Ok(st) = &r {
                    self.note_traffic(&url, st);
                }
                self.slots.update(|slots| {
                    if let Some(s) = slots.iter_mut().find(|s| s.url == url) {
                        match r {
                            Ok(st) => {
                                s.status = Some(st);
                                s.error = None;
                            }
                            Err(e) => s.error = Some(e.to_string()),
                        }
                    }
                });
                self.polling.update_value(|p| {
                    p.remove(&url);
                });
            });
        }
    }

    /// Turns the change in a node's per-peer counters since its last answer into messages for the graph.
    fn note_traffic(self, url: &str, st: &pb::StatusResponse) {
        let now = wall_ms();
        let traffic = model::traffic_views(st);
        let before =
            self.last_traffic.try_update_value(|t| t.insert(url.to_string(), (now, traffic.clone()))).flatten();
        let Some((then, before)) = before else { return };
        let fresh = messages_between(st.id, &before, &traffic, now - then);
        if fresh.is_empty() {
            return;
        }
        let first = self.next_message.get_value();
        self.next_message.set_value(first + fresh.len() as u64);
        self.messages.update(|m| {
            m.retain(|f| now - f.at <= MESSAGE_FLIGHT_MS);
            m.extend(fresh.into_iter().enumerate().map(|(i, message)| Flying {
                id: first + i as u64,
                at: now,
                message,
            }));
        });
    }

    async fn poll_logs(self) {
        let targets: Vec<(u64, String)> = self.cluster.with_untracked(|c| {
            c.nodes.iter().filter(|n| !n.stale).filter_map(|n| Some((n.id?, n.url.clone()))).collect()
        });
        let polls = targets.into_iter().map(|(id, url)| async move {
            if let Ok(l) = Node::new(url).log_entries(LOG_WIDTH).await {
                self.logs.update(|logs| {
                    logs.insert(id, l);
                });
            }
        });
        futures::future::join_all(polls).await;
        // Forget logs of nodes that are gone from the page.
        let ids: Vec<u64> = self.cluster.with_untracked(|c| c.nodes.iter().filter_map(|n| n.id).collect());
        self.logs.update(|logs| logs.retain(|id, _| ids.contains(id)));
    }

    /// Streams one node's events for as long as the node is on the page, reconnecting after failures.
    fn follow_events(self, url: String) {
        let token = self.followers.with_value(|f| f.values().max().copied().unwrap_or(0) + 1);
        self.followers.update_value(|f| {
            f.insert(url.clone(), token);
        });
        let current = move |url: &str| self.followers.with_value(|f| f.get(url) == Some(&token));
        spawn_local(async move {
            let (mut incarnation, mut after) = (0u64, 0u64);
            while current(&url) {
                if let Ok(mut stream) = Node::new(url.clone()).events(incarnation, after).await {
                    // A connection that died without an error (half-open) would be silent forever: after a quiet
                    // spell, reconnect; the server replays only what came after the last event seen.
                    while let Ok(Ok(Some(event))) =
                        api::within(EVENTS_QUIET, async { Ok(stream.message().await) }).await
                    {
                        if !current(&url) {
                            break;
                        }
                        (incarnation, after) = (event.incarnation, event.seq);
                        let node_id = self.slots.with_untracked(|s| {
                            s.iter()
                                .find(|s| s.url == url)
                                .and_then(|s| s.info.as_ref().and_then(|i| i.id).or(s.status.as_ref().map(|st| st.id)))
                        });
                        self.events.update(|evs| {
                            evs.push(SeenEvent { node: url.clone(), node_id, event });
                            if evs.len() > EVENT_CAP {
                                let extra = evs.len() - EVENT_CAP;
                                evs.drain(..extra);
                            }
                        });
                    }
                }
                gloo_timers::future::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Asks the page's server to act on node `id`'s process, and shows the node's new state at once (rather than at
    /// the next discovery).
    pub async fn act(&self, id: u64, action: pb::dashboard::NodeAction) -> api::Result<NodeInfo> {
        let info = control::act(id, action).await?;
        self.slots.update(|slots| {
            if let Some(s) = slots.iter_mut().find(|s| s.url == info.url) {
                s.info = Some(info.clone());
            }
        });
        Ok(info)
    }

    /// The URL to send a request to: the chosen node, or the leader, or the first node that answers.
    pub fn target(&self, choice: &str) -> Option<String> {
        if !choice.is_empty() {
            return Some(choice.to_string());
        }
        self.cluster.with_untracked(|c| {
            c.leader
                .and_then(|l| c.node(l).map(|n| n.url.clone()))
                .or_else(|| c.nodes.iter().find(|n| !n.stale).map(|n| n.url.clone()))
        })
    }

    /// Records an operation as pending; returns its sequence number for [`Dashboard::finish`].
    pub fn begin(&self, op: String, target: &str, is_write: bool) -> u64 {
        let seq = self.history.with_untracked(|h| h.last().map_or(1, |r| r.seq + 1));
        self.history.update(|h| {
            if h.len() >= HISTORY_CAP {
                h.remove(0);
            }
            h.push(OpRecord {
                seq,
                op,
                target: target.to_string(),
                is_write,
                outcome: Outcome::Pending,
                detail: String::new(),
                answered_by: None,
                revision: None,
                millis: None,
            })
        });
        seq
    }

    /// Completes operation `seq`, which took `millis`, with a result or error.
    pub fn finish(&self, seq: u64, millis: f64, result: Result<(&str, Option<&pb::ResponseHeader>), &api::Error>) {
        self.history.update(|h| {
            let Some(r) = h.iter_mut().find(|r| r.seq == seq) else { return };
            r.millis = Some(millis);
            match result {
                Ok((detail, header)) => {
                    r.outcome = Outcome::Ok;
                    r.detail = detail.to_string();
                    r.answered_by = header.map(|h| h.member_id);
                    r.revision = header.map(|h| h.revision);
                }
                Err(e) => {
                    r.outcome = model::failure_outcome(r.is_write, e.code());
                    r.detail = match r.outcome {
                        Outcome::Unknown => format!("{e} — the write may or may not have been applied"),
                        _ => e.to_string(),
                    };
                }
            }
        });
    }
}

impl Default for Dashboard {
    fn default() -> Self {
        Self::new()
    }
}
