//! The topology graph (RaftScope's picture of a real cluster): the nodes on a ring, each drawn by role — by shape,
//! glyph and label as well as colour — and filled with its term's colour; a follower's election timer as an arc
//! that drains and refills on every heartbeat; the links between nodes, cut when partitioned; and the Raft
//! messages flying along them, from the per-peer counters of each Status answer (10 a second).
//!
//! Scrubbing the timeline shows the recorded state of that moment instead (no messages: those are not kept).

use leptos::prelude::*;

use crate::{
    lab::model::{ring_position, sample_at, MessageKind},
    model::{term_color, RoleView},
    state::{Dashboard, MESSAGE_FLIGHT_MS},
};

const WIDTH: f64 = 620.0;
const HEIGHT: f64 = 420.0;
const RING: f64 = 150.0;
const NODE_R: f64 = 34.0;
const TIMER_R: f64 = 43.0;

/// One node as the graph draws it.
#[derive(Clone, Debug, PartialEq)]
struct Drawn {
    id: u64,
    role: RoleView,
    term: u64,
    partitioned: bool,
    /// What is left of the election timer, 0..=1 (followers and candidates).
    timer_left: Option<f64>,
    x: f64,
    y: f64,
}

/// A message on its way: a dot with a CSS animation from the sender's rim to the receiver's.
#[derive(Clone, Debug, PartialEq)]
struct Dot {
    id: u64,
    class: String,
    cx: f64,
    cy: f64,
    r: f64,
    style: String,
    title: &'static str,
}

fn glyph(role: RoleView) -> &'static str {
    match role {
        RoleView::Leader => "★",
        RoleView::StaleLeader => "☆",
        RoleView::Candidate => "?",
        RoleView::Learner => "◌",
        RoleView::Paused => "⏸",
        RoleView::Down => "✕",
        RoleView::Follower | RoleView::Unknown => "",
    }
}

#[component]
pub fn Graph() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let center = (WIDTH / 2.0, HEIGHT / 2.0 - 10.0);
    let drawn = Memo::new(move |_| {
        let place = |i: usize, n: usize| ring_position(i, n, center.0, center.1, RING);
        match dash.scrub.get() {
            Some(t) => {
                dash.tick.track();
                dash.with_samples(|s| {
                    sample_at(s, t).map_or(Vec::new(), |s| {
                        let n = s.nodes.len();
                        s.nodes
                            .iter()
                            .enumerate()
                            .map(|(i, m)| {
                                let (x, y) = place(i, n);
                                Drawn {
                                    id: m.id,
                                    role: m.role,
                                    term: m.term,
                                    partitioned: m.partitioned,
                                    timer_left: None,
                                    x,
                                    y,
                                }
                            })
                            .collect()
                    })
                })
            }
            None => dash.cluster.with(|c| {
                let nodes: Vec<_> = c.nodes.iter().filter(|n| n.id.is_some()).collect();
                let n = nodes.len();
                nodes
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let (x, y) = place(i, n);
                        Drawn {
                            id: v.id.unwrap_or_default(),
                            role: v.role,
                            term: v.term,
                            partitioned: v.partitioned,
                            timer_left: if v.stale { None } else { v.election.as_ref().map(|e| 1.0 - e.fraction()) },
                            x,
                            y,
                        }
                    })
                    .collect()
            }),
        }
    });
    // Where the nodes are and what the links look like: unlike `drawn`, unchanged by the election timers, so the
    // links and messages are not redrawn on every Status answer.
    let layout = Memo::new(move |_| {
        drawn.with(|d| d.iter().map(|n| Drawn { timer_left: None, term: 0, ..n.clone() }).collect::<Vec<_>>())
    });
    let position = move |id: u64| layout.with(|d| d.iter().find(|n| n.id == id).map(|n| (n.x, n.y)));
    let links = move || {
        let d = layout.get();
        let mut out = Vec::new();
        for (i, a) in d.iter().enumerate() {
            for b in &d[i + 1..] {
                let cut = a.partitioned || b.partitioned;
                let dead = matches!(a.role, RoleView::Down | RoleView::Paused)
                    || matches!(b.role, RoleView::Down | RoleView::Paused);
                let (mx, my) = ((a.x + b.x) / 2.0, (a.y + b.y) / 2.0);
                let class = if cut {
                    "link cut"
                } else if dead {
                    "link dead"
                } else {
                    "link"
                };
                out.push(if cut {
                    // Two halves with a gap and a mark in the middle.
                    let (ux, uy) = ((b.x - a.x) * 0.08, (b.y - a.y) * 0.08);
                    view! {
                        <g class=class>
                            <line x1=a.x y1=a.y x2=mx - ux y2=my - uy></line>
                            <line x1=mx + ux y1=my + uy x2=b.x y2=b.y></line>
                            <text x=mx y=my + 5.0 class="cut-mark">"✂"</text>
                        </g>
                    }
                    .into_any()
                } else {
                    view! { <g class=class><line x1=a.x y1=a.y x2=b.x y2=b.y></line></g> }.into_any()
                });
            }
        }
        out
    };
    let messages = move || {
        if dash.scrub.get().is_some() {
            return Vec::new();
        }
        dash.messages
            .get()
            .into_iter()
            .filter_map(|f| {
                let (fx, fy) = position(f.message.from)?;
                let (tx, ty) = position(f.message.to)?;
                // Start at the sender's rim and end at the receiver's.
                let (dx, dy) = (tx - fx, ty - fy);
                let len = (dx * dx + dy * dy).sqrt().max(1.0);
                let (sx, sy) = (fx + dx / len * NODE_R, fy + dy / len * NODE_R);
                let travel = (len - 2.0 * NODE_R).max(0.0) / len;
                let kind = f.message.kind;
                let r = match kind {
                    MessageKind::SnapshotChunk => 8.0,
                    MessageKind::Append => 6.0,
                    MessageKind::VoteRequest | MessageKind::VoteAnswer => 5.5,
                    MessageKind::Heartbeat => 4.0,
                };
                let class = format!("msg {}{}", kind.class(), if f.message.lost { " lost" } else { "" });
                let style = format!(
                    "--dx: {:.1}px; --dy: {:.1}px; animation-duration: {MESSAGE_FLIGHT_MS}ms",
                    dx * travel,
                    dy * travel
                );
                Some(Dot { id: f.id, class, cx: sx, cy: sy, r, style, title: kind.label() })
            })
            .collect::<Vec<_>>()
    };
    let caption = move || match dash.scrub.get() {
        Some(t) => format!("replaying {}", crate::components::event_log::clock(t as i64)),
        None => "live".to_string(),
    };
    view! {
        <section class="graph-panel">
            <h2>"Cluster" <span class="dim">{caption}</span></h2>
            <svg
                class="graph"
                data-testid="topology-graph"
                viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                role="group"
                aria-label="the nodes, their links and the Raft messages between them"
            >
                <g class="links">{links}</g>
                <g class="messages">
                    <For each=messages key=|d| d.id let:d>
                        <circle class=d.class cx=d.cx cy=d.cy r=d.r style=d.style>
                            <title>{d.title}</title>
                        </circle>
                    </For>
                </g>
                <g class="nodes">
                    <For each=move || drawn.with(|d| d.iter().map(|n| n.id).collect::<Vec<_>>()) key=|id| *id let:id>
                        <GraphNode id=id drawn=drawn/>
                    </For>
                </g>
            </svg>
            <ul class="graph-legend">
                <li><span class="key msg append"></span>"append entries"</li>
                <li><span class="key msg heartbeat"></span>"heartbeat"</li>
                <li><span class="key msg vote"></span>"vote request"</li>
                <li><span class="key msg vote-answer"></span>"vote answer"</li>
                <li><span class="key msg snapshot"></span>"snapshot chunk"</li>
                <li>"★ leader · ? candidate · ◌ learner · ⏸ paused · ✕ down · ✂ cut off; fill = term; arc = election timer left"</li>
            </ul>
        </section>
    }
}

/// One node of the graph. Created once per node id and updated in place, so keyboard focus survives the redraws.
#[component]
fn GraphNode(id: u64, drawn: Memo<Vec<Drawn>>) -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let me = Memo::new(move |_| drawn.with(|d| d.iter().find(|n| n.id == id).cloned()));
    let get = move |f: fn(&Drawn) -> String| move || me.with(|n| n.as_ref().map(f).unwrap_or_default());
    let role = move || me.with(|n| n.as_ref().map_or(RoleView::Unknown, |n| n.role));
    let partitioned = move || me.with(|n| n.as_ref().is_some_and(|n| n.partitioned));
    let select = move || dash.selected.update(|s| *s = if *s == Some(id) { None } else { Some(id) });
    let label = move || {
        me.with(|n| {
            n.as_ref().map_or(String::new(), |n| {
                format!(
                    "node {id}: {}{}, term {}",
                    n.role.label(),
                    if n.partitioned { ", partitioned" } else { "" },
                    n.term
                )
            })
        })
    };
    let circumference = std::f64::consts::TAU * TIMER_R;
    view! {
        <g
            class=move || format!("node {}", role().class())
            class:selected=move || dash.selected.get() == Some(id)
            class:partitioned=partitioned
            data-node-id=id.to_string()
            data-role=move || role().class()
            data-partitioned=move || partitioned().to_string()
            transform=get(|n| format!("translate({:.1},{:.1})", n.x, n.y))
            tabindex="0"
            role="button"
            aria-label=label
            on:click=move |_| select()
            on:keydown=super::on_activate(select)
        >
            <title>{label}</title>
            <circle class="select-ring" r=TIMER_R + 7.0></circle>
            {move || {
                me.with(|n| n.as_ref().and_then(|n| n.timer_left)).map(|left| {
                    let dash_len = format!("{:.1} {circumference:.1}", left * circumference);
                    view! { <circle class="timer-arc" r=TIMER_R stroke-dasharray=dash_len transform="rotate(-90)"></circle> }
                })
            }}
            <circle
                class="body"
                r=NODE_R
                fill=get(|n| {
                    if matches!(n.role, RoleView::Down | RoleView::Unknown) { "#3a414d".to_string() } else { term_color(n.term) }
                })
            ></circle>
            <text class="name" y="-4">{format!("node {id}")}</text>
            <text class="glyph" y="16">{move || glyph(role())}</text>
            <text class="role-label" y=NODE_R + 24.0>{get(|n| format!("{} · term {}", n.role.label(), n.term))}</text>
            <Show when=partitioned>
                <text class="partition-label" y=NODE_R + 40.0>"✂ partitioned"</text>
            </Show>
        </g>
    }
}
