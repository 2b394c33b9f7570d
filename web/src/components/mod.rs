//! The dashboard's panels, one file each.

pub mod charts;
pub mod event_log;
pub mod experiments;
pub mod graph;
pub mod history;
pub mod kv_console;
pub mod load;
pub mod node_card;
pub mod raft_log;
pub mod timeline;
pub mod topology;
pub mod watch_panel;

use leptos::prelude::*;

use crate::state::Dashboard;

/// A keyboard handler that does `act` on Enter or Space, as a button would (for SVG elements made focusable).
pub fn on_activate(act: impl Fn() + 'static) -> impl Fn(leptos::ev::KeyboardEvent) + 'static {
    move |ev| {
        if ev.key() == "Enter" || ev.key() == " " {
            ev.prevent_default();
            act();
        }
    }
}

/// A `<select>` of the nodes on the page, with a first "automatic" choice (value "").
#[component]
pub fn NodeSelect(#[prop(into)] auto_label: String, choice: RwSignal<String>) -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    // Only a change of the list (not every poll) redraws the options.
    let options = Memo::new(move |_| {
        dash.cluster.with(|c| {
            c.nodes
                .iter()
                .map(|n| {
                    // No role in the label: a redraw on every role change would close an open dropdown.
                    let label = n.id.map_or(n.url.clone(), |id| format!("node {id}"));
                    (n.url.clone(), label)
                })
                .collect::<Vec<_>>()
        })
    });
    view! {
        <select on:change=move |ev| choice.set(event_target_value(&ev))>
            <option value="" selected=move || choice.get().is_empty()>{auto_label}</option>
            {move || {
                options
                    .get()
                    .into_iter()
                    .map(|(url, label)| {
                        let u = url.clone();
                        view! { <option value=url selected=move || choice.get() == u>{label}</option> }
                    })
                    .collect_view()
            }}
        </select>
    }
}
