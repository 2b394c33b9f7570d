//! Every node's Raft log side by side, aligned by index (RaftScope's view): each entry coloured by its term,
//! solid when the node knows it is committed, hollow when not yet; hover for the command. Below, the entries of
//! one chosen node in full.

use leptos::prelude::*;
use raftkv_proto::{self as pb};

use crate::{
    model::{log_grid, term_color},
    state::{Dashboard, LOG_WIDTH},
};

#[component]
pub fn RaftLog() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let grid = Memo::new(move |_| dash.logs.with(|l| log_grid(l, LOG_WIDTH as usize)));
    // The node clicked here or in the graph.
    let chosen = dash.selected;
    let shown = move || {
        chosen.get().or_else(|| dash.cluster.with(|c| c.leader)).or_else(|| grid.with(|g| g.rows.first().map(|r| r.0)))
    };
    // Redrawn only when that node's log changed, not on every poll.
    let shown_log =
        Memo::new(move |_| shown().and_then(|id| dash.logs.with(|l| l.get(&id).cloned().map(|log| (id, log)))));
    view! {
        <section class="raft-log">
            <h2>"Raft logs"</h2>
            <table class="log-grid">
                <thead>
                    <tr>
                        <th>"index"</th>
                        {move || grid.with(|g| g.indexes.iter().map(|i| view! { <th>{*i}</th> }).collect_view())}
                    </tr>
                </thead>
                <tbody>
                    {move || {
                        grid.get()
                            .rows
                            .into_iter()
                            .map(|(id, cells)| {
                                let row_class = move || if shown() == Some(id) { "chosen" } else { "" };
                                view! {
                                    <tr class=row_class on:click=move |_| chosen.set(Some(id))>
                                        <th>{format!("node {id}")}</th>
                                        {cells
                                            .into_iter()
                                            .map(|c| match c {
                                                None => view! { <td class="empty"></td> }.into_any(),
                                                Some(c) => {
                                                    let style = if c.committed {
                                                        format!("background: {}", term_color(c.term))
                                                    } else {
                                                        format!("border-color: {}", term_color(c.term))
                                                    };
                                                    let class = if c.committed { "entry committed" } else { "entry pending" };
                                                    view! {
                                                        <td class=class style=style title=c.summary.clone()>
                                                            {c.term}
                                                        </td>
                                                    }
                                                        .into_any()
                                                }
                                            })
                                            .collect_view()}
                                    </tr>
                                }
                            })
                            .collect_view()
                    }}
                </tbody>
            </table>
            <p class="legend">
                "Numbers are terms. Solid: committed (as that node knows). Hollow: not committed yet. Click a row for its entries."
            </p>
            <div class="entries">
                {move || {
                    let (id, log) = shown_log.get()?;
                    Some(view! {
                        <h3>
                            {format!(
                                "node {id}: entries {}..={} · committed {} · applied {}",
                                log.entries.first().map_or(0, |e| e.index),
                                log.last_index,
                                log.commit_index,
                                log.applied_index,
                            )}
                        </h3>
                        <ol class="entry-list">
                            {log
                                .entries
                                .into_iter()
                                .rev()
                                .map(|e| {
                                    let kind = match pb::LogEntryKind::try_from(e.kind) {
                                        Ok(pb::LogEntryKind::Blank) => "blank",
                                        Ok(pb::LogEntryKind::Membership) => "membership",
                                        _ => "command",
                                    };
                                    view! {
                                        <li class=if e.committed { "committed" } else { "pending" }>
                                            <span class="idx">{e.index}</span>
                                            <span class="term" style=format!("color: {}", term_color(e.term))>
                                                {format!("t{}", e.term)}
                                            </span>
                                            <span class=format!("kind {kind}")>{kind}</span>
                                            <span class="summary">{e.summary}</span>
                                        </li>
                                    }
                                })
                                .collect_view()}
                        </ol>
                    })
                }}
            </div>
        </section>
    }
}
