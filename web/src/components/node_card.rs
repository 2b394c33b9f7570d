//! One node: its role, term, vote and log positions; on the leader, each follower's replication progress; and
//! the buttons that break or mend it.

use leptos::{prelude::*, task::spawn_local};
use raftkv_proto::dashboard::{NodeAction, ProcessState};

use crate::{
    api::{control, Node},
    model::{NodeView, RoleView},
    state::Dashboard,
};

#[component]
pub fn NodeCard(url: String) -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let u = url.clone();
    let view_of = Memo::new(move |_| dash.cluster.with(|c| c.nodes.iter().find(|n| n.url == u).cloned()));
    let get = move |f: fn(&NodeView) -> String| move || view_of.with(|v| v.as_ref().map(f).unwrap_or_default());
    let role = move || view_of.with(|v| v.as_ref().map_or(RoleView::Unknown, |v| v.role));
    let id = move || view_of.with(|v| v.as_ref().and_then(|v| v.id));
    let busy = RwSignal::new(false);

    let act = move |action: NodeAction| {
        move |_| {
            let Some(id) = id() else { return };
            busy.set(true);
            spawn_local(async move {
                if let Err(e) = control::act(id, action).await {
                    dash.notice.set(Some(format!("{} node {id}: {e}", action.as_str())));
                }
                busy.set(false);
            });
        }
    };
    // Membership changes go to a node that answers (it forwards to the leader).
    let membership = move |promote: bool| {
        move |_| {
            let Some(id) = id() else { return };
            let Some(target) = dash.target("") else { return };
            busy.set(true);
            spawn_local(async move {
                let node = Node::new(target);
                let res = if promote {
                    node.member_promote(id).await.map(|_| ())
                } else {
                    match node.member_remove(id).await {
                        Ok(_) if dash.control.get_untracked() => control::forget_node(id).await,
                        r => r.map(|_| ()),
                    }
                };
                let what = if promote { "promote" } else { "remove" };
                dash.notice.set(Some(match res {
                    Ok(()) => format!("{what} node {id}: done"),
                    Err(e) => format!("{what} node {id}: {e}"),
                }));
                busy.set(false);
            });
        }
    };
    let process = move || view_of.with(|v| v.as_ref().and_then(|v| v.process));
    let running = move || process() == Some(ProcessState::Running);
    let paused = move || process() == Some(ProcessState::Paused);
    let down = move || process() == Some(ProcessState::Down);
    let partitioned = move || view_of.with(|v| v.as_ref().is_some_and(|v| v.partitioned));
    let learner = move || view_of.with(|v| v.as_ref().is_some_and(|v| v.voter == Some(false)));

    view! {
        <div
            class=move || format!("card {}", role().class())
            class:stale=move || view_of.with(|v| v.as_ref().is_some_and(|v| v.stale))
            class:selected=move || id().is_some() && dash.selected.get() == id()
            data-testid="node-card"
            data-node-id=move || id().map(|i| i.to_string()).unwrap_or_default()
            data-role=move || role().class()
        >
            <div class="card-head">
                <span class="node-id">{move || id().map_or("node ?".to_string(), |i| format!("node {i}"))}</span>
                <span class="role">{move || role().label()}</span>
                <Show when=partitioned>
                    <span class="tag partition">"partitioned"</span>
                </Show>
            </div>
            <div class="url">{url.clone()}</div>
            <dl>
                <dt>"term"</dt>
                <dd>{get(|v| v.term.to_string())}</dd>
                <dt>"voted for"</dt>
                <dd>{get(|v| if v.voted_for == 0 { "—".into() } else { format!("node {}", v.voted_for) })}</dd>
                <dt>"leader"</dt>
                <dd>{get(|v| if v.leader_id == 0 { "unknown".into() } else { format!("node {}", v.leader_id) })}</dd>
                <dt>"last log"</dt>
                <dd>{get(|v| format!("{} (term {})", v.last_log_index, v.last_log_term))}</dd>
                <dt>"committed"</dt>
                <dd>{get(|v| v.commit_index.to_string())}</dd>
                <dt>"applied"</dt>
                <dd>{get(|v| v.applied_index.to_string())}</dd>
                <dt>"snapshot"</dt>
                <dd>{get(|v| v.snapshot_index.to_string())}</dd>
                <dt>"keys"</dt>
                <dd>{get(|v| v.keys.to_string())}</dd>
                <Show when=move || view_of.get().is_some_and(|v| v.leases.is_some())>
                    <dt>"leases"</dt>
                    <dd data-testid="node-leases">
                        {get(|v| match v.leases {
                            Some((0, _)) | None => "none".to_string(),
                            Some((n, Some(ms))) => format!("{n} live, soonest expires in {:.1} s", ms as f64 / 1000.0),
                            Some((n, None)) => format!("{n} live"),
                        })}
                    </dd>
                </Show>
            </dl>
            <div class="replication">
                {move || {
                    view_of
                        .get()
                        .filter(|v| v.role == RoleView::Leader)
                        .map(|v| {
                            let last = v.last_log_index.max(1);
                            v.replication
                                .into_iter()
                                .map(|r| {
                                    let matched = r.matched.unwrap_or(0);
                                    let pct = (matched as f64 / last as f64 * 100.0).min(100.0);
                                    let label = match r.matched {
                                        Some(m) => format!("node {}: match {m}, lag {}", r.node_id, r.lag),
                                        None => format!("node {}: not replicating yet", r.node_id),
                                    };
                                    let title = label.clone();
                                    view! {
                                        <div class="progress" title=title>
                                            <div class="bar" style=format!("width: {pct:.1}%")></div>
                                            <span>{label}</span>
                                        </div>
                                    }
                                })
                                .collect_view()
                        })
                }}
            </div>
            <div class="timer">
                {move || {
                    view_of.get().and_then(|v| {
                        if let Some(t) = v.election {
                            let pct = t.fraction() * 100.0;
                            Some(
                                view! {
                                    <div class="progress election" title=t.label()>
                                        <div class="bar" style=format!("width: {pct:.0}%")></div>
                                        <span>{t.label()}</span>
                                    </div>
                                }
                                    .into_any(),
                            )
                        } else {
                            v.quorum_ack_ms
                                .map(|ms| view! { <div class="lease">{format!("quorum acknowledged {ms} ms ago")}</div> }.into_any())
                        }
                    })
                }}
            </div>
            <ul class="traffic">
                {move || {
                    view_of
                        .get()
                        .map(|v| {
                            v.traffic
                                .into_iter()
                                .map(|t| {
                                    let title = if t.last_error.is_empty() {
                                        String::new()
                                    } else {
                                        format!("{} failed; last: {}", t.failures, t.last_error)
                                    };
                                    view! {
                                        <li class:failing=t.failing() title=title>{t.summary()}</li>
                                    }
                                })
                                .collect_view()
                        })
                }}
            </ul>
            <div class="note">{get(|v| v.note.clone())}</div>
            <Show when=move || dash.control.get()>
                <div class="controls">
                    <button data-testid="kill" on:click=act(NodeAction::Kill) disabled=move || busy.get() || down()>
                        "kill -9"
                    </button>
                    <button on:click=act(NodeAction::Stop) disabled=move || busy.get() || down()>"stop"</button>
                    <button data-testid="restart" on:click=act(NodeAction::Restart) disabled=move || busy.get()>
                        {move || if down() { "start" } else { "restart" }}
                    </button>
                    <button
                        on:click=act(NodeAction::Pause)
                        disabled=move || busy.get() || !running()
                    >
                        "pause"
                    </button>
                    <button on:click=act(NodeAction::Resume) disabled=move || busy.get() || !paused()>"resume"</button>
                    {move || {
                        if partitioned() {
                            view! {
                                <button data-testid="heal" on:click=act(NodeAction::Heal) disabled=move || busy.get()>
                                    "heal"
                                </button>
                            }
                                .into_any()
                        } else {
                            view! {
                                <button
                                    data-testid="partition"
                                    on:click=act(NodeAction::Partition)
                                    disabled=move || busy.get() || down()
                                >
                                    "partition"
                                </button>
                            }
                                .into_any()
                        }
                    }}
                </div>
            </Show>
            <div class="controls membership">
                <Show when=learner>
                    <button data-testid="promote" on:click=membership(true) disabled=move || busy.get()>
                        "promote to voter"
                    </button>
                </Show>
                <button on:click=membership(false) disabled=move || busy.get()>"remove from cluster"</button>
            </div>
        </div>
    }
}
