//! The page layout: a header with the cluster summary; the lab (the graph, the load generator and its charts, the
//! experiments, the timeline); then the detailed view (node cards, logs, console, history, events).

use leptos::prelude::*;

use crate::{
    components::{
        charts::Charts, event_log::EventLog, experiments::Experiments, graph::Graph, history::History,
        kv_console::KvConsole, load::LoadPanel, raft_log::RaftLog, timeline::Timeline, topology::Topology,
        watch_panel::WatchPanel,
    },
    state::Dashboard,
};

#[component]
pub fn App() -> impl IntoView {
    let dash = Dashboard::new();
    provide_context(dash);
    dash.start();
    let cluster = dash.cluster;
    let summary = move || {
        cluster.with(|c| match c.leader {
            Some(l) => format!("leader: node {l} · term {}", c.leader_term.unwrap_or(c.term)),
            None if c.nodes.is_empty() => "looking for nodes…".to_string(),
            None => format!("no leader · term {}", c.term),
        })
    };
    let quorum = move || {
        cluster.with(|c| {
            let q = if c.has_quorum() { "quorum" } else { "NO QUORUM" };
            format!("{q}: {}/{} voters answering", c.voters_up, c.voters)
        })
    };
    view! {
        <header>
            <h1>"raftkv"</h1>
            <span class="summary" data-testid="summary">{summary}</span>
            <span class="quorum" class:bad=move || !cluster.with(|c| c.has_quorum())>{quorum}</span>
            <span class="mode">
                {move || if dash.control.get() { "local cluster: you can break it" } else { "read-only view" }}
            </span>
            <span class="notice bad">{move || dash.server_problem.get().unwrap_or_default()}</span>
            <span class="notice">{move || dash.notice.get().unwrap_or_default()}</span>
        </header>
        <main>
            <div class="lab-top">
                <Graph/>
                <div class="column">
                    <LoadPanel/>
                    <Charts/>
                </div>
            </div>
            <Experiments/>
            <Timeline/>
            <Topology/>
            <RaftLog/>
            <div class="columns">
                <div class="column">
                    <KvConsole/>
                    <WatchPanel/>
                </div>
                <div class="column">
                    <History/>
                    <EventLog/>
                </div>
            </div>
        </main>
    }
}
