//! The cluster at a glance: one card per node, and (in control mode) adding a node.

use leptos::{prelude::*, task::spawn_local};

use super::node_card::NodeCard;
use crate::{api::control, state::Dashboard};

#[component]
pub fn Topology() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let urls = Memo::new(move |_| dash.cluster.with(|c| c.nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>()));
    let adding = RwSignal::new(false);
    let add = move |_| {
        adding.set(true);
        spawn_local(async move {
            match control::add_node().await {
                Ok(n) => dash.notice.set(Some(format!(
                    "started node {} at {}; it joins as a learner — promote it to make it vote",
                    n.id.unwrap_or(0),
                    n.url
                ))),
                Err(e) => dash.notice.set(Some(format!("adding a node: {e}"))),
            }
            adding.set(false);
        });
    };
    view! {
        <section class="topology">
            <h2>
                "Nodes"
                <Show when=move || dash.control.get()>
                    <button class="add" data-testid="add-node" on:click=add disabled=move || adding.get()>
                        "+ add a node"
                    </button>
                </Show>
            </h2>
            <div class="cards">
                <For each=move || urls.get() key=|u| u.clone() let:url>
                    <NodeCard url=url/>
                </For>
            </div>
        </section>
    }
}
