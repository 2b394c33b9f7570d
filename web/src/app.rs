//! The page layout: a header with the cluster summary, then the panels.

use leptos::prelude::*;

use crate::{
    components::{
        event_log::EventLog, history::History, kv_console::KvConsole, raft_log::RaftLog, topology::Topology,
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
