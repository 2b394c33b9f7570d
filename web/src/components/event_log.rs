//! Each node's event log (elections, term and leader changes, snapshots, membership, faults), streamed live
//! from every node; newest first, filterable by node.

use leptos::prelude::*;
use raftkv_proto::EventKind;

use crate::state::Dashboard;

fn kind_label(kind: i32) -> &'static str {
    match EventKind::try_from(kind).unwrap_or(EventKind::Unknown) {
        EventKind::Started => "started",
        EventKind::RoleChanged => "role",
        EventKind::TermChanged => "term",
        EventKind::LeaderChanged => "leader",
        EventKind::Voted => "vote",
        EventKind::SnapshotBuilt => "snapshot",
        EventKind::LogPurged => "purge",
        EventKind::MembershipChanged => "membership",
        EventKind::FaultInjected => "fault",
        EventKind::Error => "error",
        EventKind::Unknown => "event",
    }
}

pub fn clock(unix_millis: i64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(unix_millis as f64));
    format!("{:02}:{:02}:{:02}.{:03}", d.get_hours(), d.get_minutes(), d.get_seconds(), d.get_milliseconds())
}

#[component]
pub fn EventLog() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let only = RwSignal::new(String::new());
    let ids = Memo::new(move |_| dash.cluster.with(|c| c.nodes.iter().filter_map(|n| n.id).collect::<Vec<_>>()));
    view! {
        <section class="events">
            <h2>
                "Node events"
                <select on:change=move |ev| only.set(event_target_value(&ev))>
                    <option value="">"all nodes"</option>
                    {move || {
                        ids.get()
                            .into_iter()
                            .map(|i| view! { <option value=i.to_string()>{format!("node {i}")}</option> })
                            .collect_view()
                    }}
                </select>
            </h2>
            <ol class="event-list" data-testid="events">
                {move || {
                    let only = only.get().parse::<u64>().ok();
                    dash.events.with(|evs| {
                        evs.iter()
                            .rev()
                            .filter(|e| only.is_none() || e.node_id == only)
                            .take(200)
                            .map(|e| {
                                let kind = kind_label(e.event.kind);
                                let who = e.node_id.map_or(e.node.clone(), |i| format!("node {i}"));
                                view! {
                                    <li class=format!("ev-{kind}")>
                                        <span class="time">{clock(e.event.unix_millis)}</span>
                                        <span class="who">{who}</span>
                                        <span class="kind">{kind}</span>
                                        <span class="term">{format!("t{}", e.event.term)}</span>
                                        <span class="msg">{e.event.message.clone()}</span>
                                    </li>
                                }
                            })
                            .collect_view()
                    })
                }}
            </ol>
        </section>
    }
}
